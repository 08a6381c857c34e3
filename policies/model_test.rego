package portcullis.model_test

import rego.v1

cfg := {"workspace_roots": ["/work/ws"], "allow_hosts": ["api.openai.com"], "allow_cidrs": [], "protected_paths": []}

test_secret_in_prompt_redacted_and_allowed if {
	d := data.portcullis.decision with input as {"kind": "model_request", "via": "llm", "model": {"provider": "openai", "name": "gpt-5.5", "tools": [], "usage": {"input_tokens": 0, "output_tokens": 0}}, "content": {"findings": [{"kind": "secret", "type": "aws_access_key", "where": "content.text", "start": 120, "end": 140}]}} with data.config as cfg
	d.outcome == "allow"
	count(d.reasons) == 0
	{x | some x in d.redact} == {{"where": "content.text", "type": "aws_access_key"}}
	"secret_in_prompt" in d.labels
	not "secret_read" in d.labels
}

test_prompt_without_findings_untouched if {
	d := data.portcullis.decision with input as {"kind": "model_request", "via": "llm", "model": {"provider": "openai", "name": "gpt-5.5", "tools": [], "usage": {"input_tokens": 0, "output_tokens": 0}}, "content": {"findings": []}} with data.config as cfg
	d.outcome == "allow"
	count(d.redact) == 0
	count(d.labels) == 0
}

test_prompt_with_other_findings_not_redacted if {
	r := data.portcullis.model.redact with input as {"kind": "model_request", "via": "llm", "content": {"findings": [{"kind": "invisible_unicode", "type": "tag_characters", "where": "content.text", "start": 0, "end": 4}]}} with data.config as cfg
	count(r) == 0
}

test_secret_in_response_redacted_and_taints if {
	d := data.portcullis.decision with input as {"kind": "model_response", "via": "llm", "model": {"provider": "anthropic", "name": "claude", "tools": [], "usage": {"input_tokens": 10, "output_tokens": 20}}, "content": {"findings": [{"kind": "secret", "type": "github_token", "where": "content.text", "start": 5, "end": 45}]}} with data.config as cfg
	d.outcome == "allow"
	{"where": "content.text", "type": "github_token"} in d.redact
	"secret_read" in d.labels
}

test_secret_outside_model_kinds_not_handled_here if {
	r := data.portcullis.model.redact with input as {"kind": "http_request", "via": "egress", "content": {"findings": [{"kind": "secret", "type": "aws_access_key", "where": "http.body", "start": 0, "end": 20}]}} with data.config as cfg
	count(r) == 0
}

test_denied_tools_are_not_offered if {
	c := object.union(cfg, {"deny_tools": ["openai/run_*", "other/read_file"]})
	d := data.portcullis.decision with input as {"kind": "model_request", "via": "llm", "model": {"provider": "openai", "upstream": "openai", "name": "gpt-5.5", "tools": ["read_file", "run_shell", "run_python"], "usage": {"input_tokens": 0, "output_tokens": 0}}} with data.config as c
	d.outcome == "allow"
	{x | some x in d.redact} == {{"where": "model.tools[1]", "type": "tool_denied"}, {"where": "model.tools[2]", "type": "tool_denied"}}
}

test_denied_tool_call_from_a_model_is_refused if {
	c := object.union(cfg, {"deny_tools": ["openai/run_shell"]})
	d := data.portcullis.decision with input as {"kind": "tool_call", "via": "llm", "tool": {"server": "openai", "name": "run_shell", "arguments": {"command": "ls"}}} with data.config as c
	d.outcome == "deny"
	"tools.denied" in {r.rule | some r in d.reasons}
}
