package portcullis.tools_test

import rego.v1

cfg := {"workspace_roots": ["/work/ws"], "allow_hosts": ["docs.rs"], "allow_cidrs": [], "protected_paths": []}

ids(s) := {r.rule | some r in s}

# === tools.description_changed ===

test_changed_description_asks if {
	d := data.portcullis.decision with input as {"kind": "tool_call", "via": "mcp", "tool": {"server": "fs", "name": "write_file", "arguments": {"path": "a.txt"}, "description_digest": "sha256:bbbb", "pinned_digest": "sha256:aaaa"}} with data.config as cfg
	d.outcome == "ask"
	"tools.description_changed" in ids(d.reasons)
	some r in d.reasons
	contains(r.message, "sha256:aaaa")
	contains(r.message, "sha256:bbbb")
	contains(r.message, "fs/write_file")
}

test_changed_description_in_tool_list_is_shown_not_asked if {
	# Listing a changed tool is harmless; calling it asks (above).
	d := data.portcullis.decision with input as {"kind": "tool_list", "via": "mcp", "tool": {"server": "fs", "name": "write_file", "arguments": {}, "description_digest": "sha256:bbbb", "pinned_digest": "sha256:aaaa"}} with data.config as cfg
	d.outcome == "allow"
}

test_pinned_description_unchanged_does_not_ask if {
	d := data.portcullis.decision with input as {"kind": "tool_call", "via": "mcp", "tool": {"server": "fs", "name": "write_file", "arguments": {"path": "a.txt"}, "description_digest": "sha256:aaaa", "pinned_digest": "sha256:aaaa"}} with data.config as cfg
	d.outcome == "allow"
}

test_unpinned_tool_does_not_ask if {
	a := data.portcullis.tools.ask with input as {"kind": "tool_call", "via": "mcp", "tool": {"server": "fs", "name": "write_file", "arguments": {}, "description_digest": "sha256:bbbb"}} with data.config as cfg
	count(a) == 0
	b := data.portcullis.tools.ask with input as {"kind": "tool_call", "via": "mcp", "tool": {"server": "fs", "name": "write_file", "arguments": {}, "description_digest": "", "pinned_digest": "sha256:aaaa"}} with data.config as cfg
	count(b) == 0
}

# === secrets in tool results ===

test_secret_in_tool_result_labelled_and_redacted if {
	d := data.portcullis.decision with input as {"kind": "tool_result", "via": "mcp", "tool": {"server": "fs", "name": "read_file", "arguments": {"path": "config/prod.yaml"}}, "content": {"findings": [{"kind": "secret", "type": "aws_access_key", "where": "content.text", "start": 10, "end": 30}, {"kind": "secret", "type": "github_token", "where": "content.text", "start": 50, "end": 90}]}} with data.config as cfg
	d.outcome == "allow"
	"secret_read" in d.labels
	{"where": "content.text", "type": "aws_access_key"} in d.redact
	{"where": "content.text", "type": "github_token"} in d.redact
	count(d.redact) == 2
}

test_secret_in_tool_call_not_redacted_by_tools if {
	r := data.portcullis.tools.redact with input as {"kind": "tool_call", "via": "mcp", "tool": {"server": "fs", "name": "write_file", "arguments": {"content": "x"}}, "content": {"findings": [{"kind": "secret", "type": "aws_access_key", "where": "tool.arguments.content", "start": 0, "end": 20}]}} with data.config as cfg
	count(r) == 0
	l := data.portcullis.tools.labels with input as {"kind": "tool_call", "via": "mcp", "tool": {"server": "fs", "name": "write_file", "arguments": {"content": "x"}}, "content": {"findings": [{"kind": "secret", "type": "aws_access_key", "where": "tool.arguments.content", "start": 0, "end": 20}]}} with data.config as cfg
	count(l) == 0
}

test_invisible_unicode_in_tool_result_redacted if {
	r := data.portcullis.tools.redact with input as {"kind": "tool_result", "via": "mcp", "tool": {"server": "fs", "name": "read_file", "arguments": {}}, "content": {"findings": [{"kind": "invisible_unicode", "type": "tag_characters", "where": "result.content[0].text", "start": 0, "end": 4}]}} with data.config as cfg
	r == {{"where": "result.content[0].text", "type": "tag_characters"}}
}

test_instructions_are_labelled_not_redacted if {
	d := data.portcullis.decision with input as {"kind": "tool_result", "via": "mcp", "tool": {"server": "fs", "name": "read_file", "arguments": {}}, "content": {"findings": [{"kind": "instructions", "type": "ignore_previous", "where": "result.content[0].text", "start": 0, "end": 40}]}} with data.config as cfg
	count(d.redact) == 0
	"untrusted_content" in d.labels
}

test_findings_in_the_calls_own_arguments_do_not_count_for_the_result if {
	d := data.portcullis.decision with input as {"kind": "tool_result", "via": "mcp", "tool": {"server": "fs", "name": "write_file", "arguments": {"content": "AKIA…"}}, "content": {"findings": [{"kind": "secret", "type": "aws_access_key", "where": "tool.arguments.content", "start": 0, "end": 20}, {"kind": "instructions", "type": "ignore_previous", "where": "tool.arguments.content", "start": 0, "end": 20}]}} with data.config as cfg
	count(d.redact) == 0
	count(d.labels) == 0
}

# === tools.denied, tools.server_request_denied ===

deny_cfg := object.union(cfg, {"deny_tools": ["fs/move_*", "shell/*"]})

test_configured_tools_are_denied_listed_or_called if {
	l := data.portcullis.decision with input as {"kind": "tool_list", "via": "mcp", "tool": {"server": "fs", "name": "move_file", "arguments": {}}} with data.config as deny_cfg
	l.outcome == "deny"
	"tools.denied" in ids(l.reasons)
	c := data.portcullis.decision with input as {"kind": "tool_call", "via": "mcp", "tool": {"server": "shell", "name": "run", "arguments": {}}} with data.config as deny_cfg
	c.outcome == "deny"
	some r in c.reasons
	contains(r.message, "shell/*")
}

test_other_tools_are_not_denied_by_the_list if {
	d := data.portcullis.decision with input as {"kind": "tool_list", "via": "mcp", "tool": {"server": "fs", "name": "read_file", "arguments": {}}} with data.config as deny_cfg
	d.outcome == "allow"
	# A glob does not cross the `/`: `fs/move_*` is not `fsx/…`.
	e := data.portcullis.decision with input as {"kind": "tool_call", "via": "mcp", "tool": {"server": "fsx", "name": "move_file", "arguments": {}}} with data.config as deny_cfg
	e.outcome == "allow"
	f := data.portcullis.decision with input as {"kind": "tool_call", "via": "mcp", "tool": {"server": "fs", "name": "move_file", "arguments": {}}} with data.config as cfg
	f.outcome == "allow"
}

test_sampling_requests_from_servers_are_denied if {
	d := data.portcullis.decision with input as {"kind": "tool_call", "via": "mcp", "tool": {"server": "everything", "name": "sampling/createMessage", "arguments": {"messages": []}}} with data.config as cfg
	d.outcome == "deny"
	"tools.server_request_denied" in ids(d.reasons)
	e := data.portcullis.decision with input as {"kind": "tool_call", "via": "mcp", "tool": {"server": "everything", "name": "roots/list", "arguments": {}}} with data.config as cfg
	e.outcome == "allow"
}

test_configured_server_requests_replace_the_default if {
	c := object.union(cfg, {"deny_server_requests": ["elicitation/create"]})
	s := data.portcullis.decision with input as {"kind": "tool_call", "via": "mcp", "tool": {"server": "x", "name": "sampling/createMessage", "arguments": {}}} with data.config as c
	s.outcome == "allow"
	e := data.portcullis.decision with input as {"kind": "tool_call", "via": "mcp", "tool": {"server": "x", "name": "elicitation/create", "arguments": {}}} with data.config as c
	e.outcome == "deny"
}

# === untrusted_content ===

test_hidden_instructions_label_untrusted if {
	d := data.portcullis.decision with input as {"kind": "tool_result", "via": "mcp", "tool": {"server": "fs", "name": "read_file", "arguments": {"path": "README.md"}}, "content": {"findings": [{"kind": "instructions", "type": "ignore_previous", "where": "content.text", "start": 100, "end": 160}]}} with data.config as cfg
	d.outcome == "allow"
	"untrusted_content" in d.labels
}

test_invisible_unicode_in_tool_list_labels_untrusted if {
	l := data.portcullis.tools.labels with input as {"kind": "tool_list", "via": "mcp", "tool": {"server": "notes", "name": "add_note", "arguments": {}}, "content": {"findings": [{"kind": "invisible_unicode", "type": "tag_characters", "where": "tool.description", "start": 0, "end": 40}]}} with data.config as cfg
	"untrusted_content" in l
}

test_untrusted_server_result_labelled if {
	l := data.portcullis.tools.labels with input as {"kind": "tool_result", "via": "mcp", "tool": {"server": "fetch", "name": "fetch", "arguments": {"url": "https://blog.example.com/post"}}} with data.config as cfg
	"untrusted_content" in l
	m := data.portcullis.tools.labels with input as {"kind": "tool_result", "via": "mcp", "tool": {"server": "GitHub", "name": "get_file_contents", "arguments": {}}} with data.config as cfg
	"untrusted_content" in m
}

test_untrusted_tool_name_result_labelled if {
	l := data.portcullis.tools.labels with input as {"kind": "tool_result", "via": "llm", "tool": {"server": "", "name": "web_search", "arguments": {"q": "rust regorus"}}} with data.config as cfg
	"untrusted_content" in l
}

test_result_from_non_allowlisted_host_labelled if {
	l := data.portcullis.tools.labels with input as {"kind": "tool_result", "via": "mcp", "tool": {"server": "http", "name": "get", "arguments": {}}, "http": {"url": "https://pastebin.example/raw/x", "method": "GET", "scheme": "https", "host": "pastebin.example", "port": 443, "path": "/raw/x", "ips": ["93.184.216.34"], "ip_class": "public", "ip_literal": false}} with data.config as cfg
	"untrusted_content" in l
}

test_trusted_results_not_labelled if {
	l := data.portcullis.tools.labels with input as {"kind": "tool_result", "via": "mcp", "tool": {"server": "fs", "name": "read_file", "arguments": {"path": "src/lib.rs"}}} with data.config as cfg
	count(l) == 0
	m := data.portcullis.tools.labels with input as {"kind": "tool_result", "via": "mcp", "tool": {"server": "http", "name": "get", "arguments": {}}, "http": {"url": "https://docs.rs/regorus", "method": "GET", "scheme": "https", "host": "docs.rs", "port": 443, "path": "/regorus", "ips": ["151.101.0.1"], "ip_class": "public", "ip_literal": false}} with data.config as cfg
	count(m) == 0
}

test_untrusted_server_call_not_labelled if {
	# The call itself carries nothing from the outside; only its result does.
	l := data.portcullis.tools.labels with input as {"kind": "tool_call", "via": "mcp", "tool": {"server": "fetch", "name": "fetch", "arguments": {"url": "https://docs.rs/"}}} with data.config as cfg
	count(l) == 0
}
