# Model API calls (input.kind model_request | model_response).
#
# No deny or ask rules: a prompt is never blocked for what it contains.
# Redact: every secret finding of a model request or response, by where and type, so the
#   provider never receives it and the agent never gets one back; and every offered tool that
#   deny_tools names (`model.tools[i]`, type `tool_denied`), so the model is never offered a
#   tool it could not call.
# Labels:
#   secret_in_prompt  a prompt carried a secret. Informational (dashboards, review): the secret
#                     is redacted before the model sees it, so the model cannot steer it anywhere
#                     and the session is not tainted.
#   secret_read       a model response carried a secret: the model knows one (it was not
#                     redacted somewhere upstream), so later egress is treated as after a
#                     secret read.
package portcullis.model

import rego.v1

secrets contains f if {
	input.kind in {"model_request", "model_response"}
	some f in input.content.findings
	f.kind == "secret"
}

redact contains {"where": f["where"], "type": f.type} if some f in secrets

redact contains {"where": sprintf("model.tools[%d]", [i]), "type": "tool_denied"} if {
	input.kind == "model_request"
	some i, name in input.model.tools
	some p in object.get(data.config, "deny_tools", [])
	glob.match(p, ["/"], sprintf("%s/%s", [object.get(input.model, "upstream", ""), name]))
}

labels contains "secret_in_prompt" if {
	input.kind == "model_request"
	count(secrets) > 0
}

labels contains "secret_read" if {
	input.kind == "model_response"
	count(secrets) > 0
}

# === sets this package declares empty ===
# So every package has deny, ask, labels and redact. To add rules to one of them, replace its
# line with `… contains …` rules (keeping both is a load error, never a silent skip).

# No deny rules: a prompt is never blocked for what it contains.
deny := set()

# No ask rules: a prompt is never parked for what it contains.
ask := set()
