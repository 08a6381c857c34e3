# Information flow across a session (input.session.labels, left by earlier decisions).
#
# Rule ids:
#   flow.exfiltration                deny  after secret_read or untrusted_content, a request to a
#                                          host that is not allowlisted (any action with an http
#                                          facet)
#   flow.secret_egress               deny  a tool call or http request that carries a secret to a
#                                          host that is not allowlisted, whatever the session
#   flow.side_effect_after_untrusted ask   after untrusted_content, a tool call with side effects
#                                          (runs a command, writes or deletes a file, sends a
#                                          request, or is a known side-effecting tool)
#
# Only untrusted_content makes side effects ask: content written by a third party may be
# steering the agent. After a secret_read the risk is the secret leaving, which
# flow.exfiltration covers; asking for every edit after the agent read .env would stop ordinary
# work. Which kinds count as side-effecting is data (pack.flow.side_effect_kinds, default
# tool_call): add "exec" and "file" to also ask for sandboxed commands and file writes.
package portcullis.flow

import rego.v1

pk := data.pack.flow

tainted contains l if {
	some l in input.session.labels
	l in pk.taint_labels
}

deny contains r if {
	count(tainted) > 0
	input.http
	not data.portcullis.network.allowlisted
	r := {
		"rule": "flow.exfiltration",
		"message": sprintf("the request to %s is denied: this session has %s and %s is not allowlisted (network.allow_hosts, network.allow_cidrs)", [data.portcullis.network.host, concat(" and ", [l | some l in tainted]), data.portcullis.network.host]),
	}
}

deny contains r if {
	some f in input.content.findings
	f.kind == "secret"
	input.kind in {"tool_call", "http_request"}
	input.http
	not data.portcullis.network.allowlisted
	r := {
		"rule": "flow.secret_egress",
		"message": sprintf("sending a secret (%s at %s) to %s is denied: the host is not allowlisted", [f.type, f["where"], data.portcullis.network.host]),
	}
}

ask contains r if {
	"untrusted_content" in input.session.labels
	input.kind in pk.side_effect_kinds
	count(side_effects) > 0
	r := {
		"rule": "flow.side_effect_after_untrusted",
		"message": sprintf("%s (%s) after this session read untrusted content needs approval", [subject, concat("; ", [w | some w in side_effects])]),
	}
}

subject := sprintf("tool call %s/%s", [object.get(input.tool, "server", ""), input.tool.name]) if {
	input.tool.name
} else := sprintf("%s action", [object.get(input, "kind", "")])

side_effects contains "runs a command" if input.exec

side_effects contains sprintf("%ss %s", [input.file.op, object.get(input.file, "canonical", "")]) if {
	input.file.op in {"write", "delete"}
}

side_effects contains sprintf("sends a request to %s", [data.portcullis.network.host]) if input.http

side_effects contains "a side-effecting tool" if input.tool.name in pk.side_effect_tools

# === sets this package declares empty ===
# So every package has deny, ask, labels and redact. To add rules to one of them, replace its
# line with `… contains …` rules (keeping both is a load error, never a silent skip).

# No labels rules: flow rules only read session labels.
labels := set()

# No redact rules: nothing here is masked.
redact := set()
