# The entrypoint: data.portcullis.decision.
#
# Each rule package below contributes four sets:
#   deny, ask   — {"rule": "<stable id>", "message": "<for humans>"}
#   labels      — strings added to the session after this action
#   redact      — {"where": "<dotted path>", "type": "<finding type>"}
# deny beats ask beats allow; the reasons returned are those of the winning outcome.
#
# A package is consulted only for actions it can apply to, so that a decision runs only the
# rules that matter (the RVM charges for every rule it enters):
#   files    — actions with a file facet          exec   — actions with an exec facet
#   network  — actions with an http facet         tools  — actions with a tool facet
#   model    — actions with content (findings)    flow   — an http facet, or any session label
# Every package must define all four sets (an empty one as `name := set()`):
# a part with an undefined set would be dropped, so decision_test checks that all 24 exist.
#
# reasons, labels and redact are sets here; they reach callers as JSON arrays (sorted), the
# shape DESIGN.md §3 gives.
package portcullis

import rego.v1

parts contains {
	"deny": data.portcullis.files.deny,
	"ask": data.portcullis.files.ask,
	"labels": data.portcullis.files.labels,
	"redact": data.portcullis.files.redact,
} if input.file

parts contains {
	"deny": data.portcullis.exec.deny,
	"ask": data.portcullis.exec.ask,
	"labels": data.portcullis.exec.labels,
	"redact": data.portcullis.exec.redact,
} if input.exec

parts contains {
	"deny": data.portcullis.network.deny | data.portcullis.flow.deny,
	"ask": data.portcullis.network.ask | data.portcullis.flow.ask,
	"labels": data.portcullis.network.labels | data.portcullis.flow.labels,
	"redact": data.portcullis.network.redact | data.portcullis.flow.redact,
} if input.http

parts contains {
	"deny": data.portcullis.tools.deny,
	"ask": data.portcullis.tools.ask,
	"labels": data.portcullis.tools.labels,
	"redact": data.portcullis.tools.redact,
} if input.tool

parts contains {
	"deny": data.portcullis.model.deny,
	"ask": data.portcullis.model.ask,
	"labels": data.portcullis.model.labels,
	"redact": data.portcullis.model.redact,
} if model_or_content

model_or_content if input.content

model_or_content if input.model

parts contains {
	"deny": data.portcullis.flow.deny,
	"ask": data.portcullis.flow.ask,
	"labels": data.portcullis.flow.labels,
	"redact": data.portcullis.flow.redact,
} if count(input.session.labels) > 0

# Most actions carry one facet: then the verdict is that package's own sets.
decision := d if {
	ps := parts
	count(ps) == 1
	some m in ps
	d := verdict(m)
} else := {"outcome": "allow", "reasons": set(), "labels": set(), "redact": set()} if {
	count(parts) == 0
} else := verdict({
	"deny": {r | some p in parts; some r in p.deny},
	"ask": {r | some p in parts; some r in p.ask},
	"labels": {l | some p in parts; some l in p.labels},
	"redact": {x | some p in parts; some x in p.redact},
})

# deny beats ask beats allow; the common allow is tested first.
verdict(m) := {"outcome": "allow", "reasons": set(), "labels": m.labels, "redact": m.redact} if {
	count(m.deny) == 0
	count(m.ask) == 0
} else := {"outcome": "deny", "reasons": m.deny, "labels": m.labels, "redact": m.redact} if {
	count(m.deny) > 0
} else := {"outcome": "ask", "reasons": m.ask, "labels": m.labels, "redact": m.redact}

# For `policy eval --explain`: everything that fired, not only the winning outcome's reasons.
# Not on the decision path (the entrypoint never reads it).
fired := {
	"deny": {r | some p in parts; some r in p.deny},
	"ask": {r | some p in parts; some r in p.ask},
	"labels": {l | some p in parts; some l in p.labels},
	"redact": {x | some p in parts; some x in p.redact},
}
