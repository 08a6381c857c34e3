# Tool servers (input.tool; input.kind tool_call | tool_result | tool_list).
#
# Rule ids:
#   tools.description_changed    ask   a call to a tool whose definition digest differs from the
#                                      pinned one (a rug pull: a tool that changes what it tells
#                                      the model); listing it is not asked, calling it is
#   tools.denied                 deny  a tool matched by mcp.deny_tools or llm.deny_tools
#                                      (`server/tool` globs; a model upstream is the server of
#                                      the calls its models propose):
#                                      hidden from tools/list and refused when called
#   tools.server_request_denied  deny  a request a tool server sends the client that is refused
#                                      (mcp.deny_server_requests, default
#                                      pack.tools.denied_server_requests: sampling, so a server
#                                      cannot spend the agent's model on its own prompts)
# Labels:
#   secret_read        a tool result carries a secret (it is also redacted)
#   untrusted_content  a tool result or tool list carries invisible Unicode or instruction-like
#                      text, or a tool result comes from a server/tool that returns content
#                      written by third parties (web fetch, browser, search, issues, mail), or
#                      from a host that is not allowlisted
# Redact: every secret and invisible-Unicode finding of a tool result (its `result.` part), by
# where and type.
package portcullis.tools

import rego.v1

pk := data.pack.tools

tool_label := sprintf("%s/%s", [object.get(input.tool, "server", ""), object.get(input.tool, "name", "")])

ask contains r if {
	input.kind == "tool_call"
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

deny contains r if {
	input.kind in {"tool_call", "tool_list"}
	some p in object.get(data.config, "deny_tools", [])
	glob.match(p, ["/"], tool_label)
	r := {
		"rule": "tools.denied",
		"message": sprintf("tool %s is denied by the configuration (deny_tools %q)", [tool_label, p]),
	}
}

deny contains r if {
	input.kind == "tool_call"
	input.via == "mcp"
	input.tool.name in object.get(data.config, "deny_server_requests", pk.denied_server_requests)
	r := {
		"rule": "tools.server_request_denied",
		"message": sprintf("tool server %s may not send the client %s", [object.get(input.tool, "server", ""), input.tool.name]),
	}
}

# Findings in what the server returned, not in the call's own arguments (the agent wrote those).
result_finding contains f if {
	input.kind in {"tool_result", "tool_list"}
	some f in input.content.findings
	not startswith(f["where"], "tool.arguments")
}

result_secret contains f if {
	input.kind == "tool_result"
	some f in result_finding
	f.kind == "secret"
}

labels contains "secret_read" if count(result_secret) > 0

redact contains {"where": f["where"], "type": f.type} if {
	input.kind == "tool_result"
	some f in result_finding
	f.kind in {"secret", "invisible_unicode"}
}

labels contains "untrusted_content" if {
	some f in result_finding
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


