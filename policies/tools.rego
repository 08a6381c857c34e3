# Tool servers (input.tool; input.kind tool_call | tool_result | tool_list).
#
# Rule ids:
#   tools.description_changed  ask  the tool's description digest differs from the pinned one
#                                   (a rug pull: a tool that changes what it tells the model)
# Labels:
#   secret_read        a tool result carries a secret (it is also redacted)
#   untrusted_content  a tool result or tool list carries invisible Unicode or instruction-like
#                      text, or a tool result comes from a server/tool that returns content
#                      written by third parties (web fetch, browser, search, issues, mail), or
#                      from a host that is not allowlisted
# Redact: every secret finding of a tool result, by where and type.
package portcullis.tools

import rego.v1

pk := data.pack.tools

tool_label := sprintf("%s/%s", [object.get(input.tool, "server", ""), object.get(input.tool, "name", "")])

ask contains r if {
	is_string(input.tool.description_digest)
	is_string(input.tool.pinned_digest)
	d := input.tool.description_digest
	p := input.tool.pinned_digest
	d != ""
	p != ""
	d != p
	r := {
		"rule": "tools.description_changed",
		"message": sprintf("the description of tool %s changed since it was pinned (pinned %s, now %s) and needs approval", [tool_label, p, d]),
	}
}

result_secret contains f if {
	input.kind == "tool_result"
	some f in input.content.findings
	f.kind == "secret"
}

labels contains "secret_read" if count(result_secret) > 0

redact contains {"where": f["where"], "type": f.type} if some f in result_secret

labels contains "untrusted_content" if {
	input.kind in {"tool_result", "tool_list"}
	some f in input.content.findings
	f.kind in pk.untrusted_finding_kinds
}

labels contains "untrusted_content" if {
	input.kind == "tool_result"
	lower(input.tool.server) in pk.untrusted_servers
}

labels contains "untrusted_content" if {
	input.kind == "tool_result"
	lower(input.tool.name) in pk.untrusted_tools
}

labels contains "untrusted_content" if {
	input.kind == "tool_result"
	input.http
	not data.portcullis.network.allowlisted
}

# === sets this package declares empty ===
# So every package has deny, ask, labels and redact. To add rules to one of them, replace its
# line with `… contains …` rules (keeping both is a load error, never a silent skip).

# No deny rules: tool calls are judged by the file, exec, network and flow rules of their facets.
deny := set()
