package portcullis.files_test

import rego.v1

cfg := {"workspace_roots": ["/work/ws"], "allow_hosts": [], "allow_cidrs": [], "protected_paths": ["/etc/portcullis/portcullis.toml", "/etc/portcullis/policies", "/var/log/portcullis/audit.jsonl"]}

home_cfg := {"workspace_roots": ["/home/dev"], "allow_hosts": [], "allow_cidrs": [], "protected_paths": []}

ids(s) := {r.rule | some r in s}

# === files.not_canonical ===

test_not_canonical_denied if {
	d := data.portcullis.decision with input as {"kind": "file", "via": "decide", "file": {"op": "read", "path": "notes.txt", "canonical": ""}} with data.config as cfg
	d.outcome == "deny"
	"files.not_canonical" in ids(d.reasons)
}

test_not_canonical_missing_field_denied if {
	d := data.portcullis.decision with input as {"kind": "file", "via": "decide", "file": {"op": "read", "path": "notes.txt"}} with data.config as cfg
	d.outcome == "deny"
	"files.not_canonical" in ids(d.reasons)
}

test_canonical_read_in_workspace_allowed if {
	d := data.portcullis.decision with input as {"kind": "file", "via": "decide", "file": {"op": "read", "path": "notes.txt", "canonical": "/work/ws/notes.txt"}} with data.config as cfg
	d.outcome == "allow"
	count(d.reasons) == 0
	count(d.labels) == 0
}

# === files.write_outside_workspace ===

test_write_outside_workspace_denied if {
	d := data.portcullis.decision with input as {"kind": "file", "via": "mcp", "file": {"op": "write", "path": "/etc/cron.d/job", "canonical": "/etc/cron.d/job"}} with data.config as cfg
	d.outcome == "deny"
	"files.write_outside_workspace" in ids(d.reasons)
}

test_delete_outside_workspace_denied if {
	d := data.portcullis.decision with input as {"kind": "file", "via": "mcp", "file": {"op": "delete", "path": "/home/dev/notes.txt", "canonical": "/home/dev/notes.txt"}} with data.config as cfg
	d.outcome == "deny"
	"files.write_outside_workspace" in ids(d.reasons)
}

test_write_sibling_with_root_as_prefix_denied if {
	d := data.portcullis.decision with input as {"kind": "file", "via": "mcp", "file": {"op": "write", "path": "/work/ws_evil/x.txt", "canonical": "/work/ws_evil/x.txt"}} with data.config as cfg
	d.outcome == "deny"
	"files.write_outside_workspace" in ids(d.reasons)
}

test_write_through_dotdot_decides_on_canonical if {
	# The raw path looks inside; the canonical one (what the proxy will open) is not.
	d := data.portcullis.decision with input as {"kind": "file", "via": "mcp", "file": {"op": "write", "path": "/work/ws/../etc/x", "canonical": "/work/etc/x"}} with data.config as cfg
	d.outcome == "deny"
	"files.write_outside_workspace" in ids(d.reasons)
}

test_write_symlink_out_decides_on_canonical if {
	d := data.portcullis.decision with input as {"kind": "file", "via": "mcp", "file": {"op": "write", "path": "/work/ws/link/x", "canonical": "/etc/x"}} with data.config as cfg
	"files.write_outside_workspace" in ids(d.reasons)
}

test_write_inside_workspace_allowed if {
	d := data.portcullis.decision with input as {"kind": "file", "via": "mcp", "file": {"op": "write", "path": "src/main.rs", "canonical": "/work/ws/src/main.rs"}} with data.config as cfg
	d.outcome == "allow"
}

test_write_workspace_root_itself_not_outside if {
	s := data.portcullis.files.deny with input as {"kind": "file", "via": "mcp", "file": {"op": "write", "path": "/work/ws", "canonical": "/work/ws"}} with data.config as cfg
	not "files.write_outside_workspace" in ids(s)
}

test_write_with_root_slash_allowed if {
	s := data.portcullis.files.deny with input as {"kind": "file", "via": "mcp", "file": {"op": "write", "path": "/opt/app/x", "canonical": "/opt/app/x"}} with data.config as {"workspace_roots": ["/"], "allow_hosts": [], "allow_cidrs": [], "protected_paths": []}
	not "files.write_outside_workspace" in ids(s)
}

test_root_with_trailing_slash_is_component_wise if {
	inside := data.portcullis.files.deny with input as {"kind": "file", "via": "mcp", "file": {"op": "write", "path": "/work/ws/a", "canonical": "/work/ws/a"}} with data.config as {"workspace_roots": ["/work/ws/"], "allow_hosts": [], "allow_cidrs": [], "protected_paths": []}
	not "files.write_outside_workspace" in ids(inside)
	evil := data.portcullis.files.deny with input as {"kind": "file", "via": "mcp", "file": {"op": "write", "path": "/work/ws_evil", "canonical": "/work/ws_evil"}} with data.config as {"workspace_roots": ["/work/ws/"], "allow_hosts": [], "allow_cidrs": [], "protected_paths": []}
	"files.write_outside_workspace" in ids(evil)
}

test_write_in_second_root_allowed if {
	d := data.portcullis.decision with input as {"kind": "file", "via": "mcp", "file": {"op": "write", "path": "/srv/data/out.csv", "canonical": "/srv/data/out.csv"}} with data.config as {"workspace_roots": ["/work/ws", "/srv/data"], "allow_hosts": [], "allow_cidrs": [], "protected_paths": []}
	d.outcome == "allow"
}

test_empty_root_contains_nothing if {
	s := data.portcullis.files.deny with input as {"kind": "file", "via": "mcp", "file": {"op": "write", "path": "/etc/x", "canonical": "/etc/x"}} with data.config as {"workspace_roots": [""], "allow_hosts": [], "allow_cidrs": [], "protected_paths": []}
	"files.write_outside_workspace" in ids(s)
}

test_write_without_config_fails_closed if {
	s := data.portcullis.files.deny with input as {"kind": "file", "via": "mcp", "file": {"op": "write", "path": "/work/ws/a", "canonical": "/work/ws/a"}} with data.config as {}
	"files.write_outside_workspace" in ids(s)
}

test_write_dev_null_allowed if {
	d := data.portcullis.decision with input as {"kind": "file", "via": "sandbox", "file": {"op": "write", "path": "/dev/null", "canonical": "/dev/null"}} with data.config as cfg
	d.outcome == "allow"
}

test_read_outside_workspace_is_not_a_write if {
	d := data.portcullis.decision with input as {"kind": "file", "via": "mcp", "file": {"op": "read", "path": "/usr/share/dict/words", "canonical": "/usr/share/dict/words"}} with data.config as cfg
	d.outcome == "allow"
}

# === files.secret_read ===

test_read_ssh_key_denied if {
	d := data.portcullis.decision with input as {"kind": "file", "via": "mcp", "file": {"op": "read", "path": "~/.ssh/id_ed25519", "canonical": "/home/dev/.ssh/id_ed25519"}} with data.config as cfg
	d.outcome == "deny"
	"files.secret_read" in ids(d.reasons)
}

test_read_ssh_dir_denied_even_inside_workspace if {
	d := data.portcullis.decision with input as {"kind": "file", "via": "mcp", "file": {"op": "read", "path": ".ssh/config", "canonical": "/home/dev/.ssh/config"}} with data.config as home_cfg
	d.outcome == "deny"
	"files.secret_read" in ids(d.reasons)
}

test_read_private_key_name_anywhere_denied if {
	s := data.portcullis.files.deny with input as {"kind": "file", "via": "mcp", "file": {"op": "read", "path": "/tmp/id_rsa", "canonical": "/tmp/id_rsa"}} with data.config as cfg
	"files.secret_read" in ids(s)
}

test_read_credential_stores_denied if {
	every p in ["/home/dev/.aws/credentials", "/home/dev/.aws/config", "/home/dev/.config/gcloud/application_default_credentials.json", "/home/dev/.azure/accessTokens.json", "/home/dev/.kube/config", "/home/dev/.docker/config.json", "/root/.netrc", "/home/dev/.git-credentials", "/etc/shadow", "/etc/sudoers", "/etc/sudoers.d/90-cloud", "/proc/self/environ", "/proc/1/environ", "/etc/ssh/ssh_host_ed25519_key"] {
		"files.secret_read" in ids(data.portcullis.files.deny) with input as {"kind": "file", "via": "mcp", "file": {"op": "read", "path": p, "canonical": p}} with data.config as cfg
	}
}

test_read_near_miss_names_allowed if {
	every p in ["/work/ws/docs/ssh.md", "/work/ws/.kube/config.example", "/etc/shadowsocks.json", "/home/dev/.docker/daemon.json", "/proc/self/status", "/work/ws/src/id_rsa.rs", "/home/dev/.ssh.bak.txt", "/etc/ssh/ssh_host_ed25519_key.pub"] {
		not "files.secret_read" in ids(data.portcullis.files.deny) with input as {"kind": "file", "via": "mcp", "file": {"op": "read", "path": p, "canonical": p}} with data.config as cfg
	}
}

test_list_ssh_dir_not_a_read if {
	s := data.portcullis.files.deny with input as {"kind": "file", "via": "mcp", "file": {"op": "list", "path": "/home/dev/.ssh", "canonical": "/home/dev/.ssh"}} with data.config as cfg
	not "files.secret_read" in ids(s)
}

test_read_env_outside_workspace_denied if {
	d := data.portcullis.decision with input as {"kind": "file", "via": "mcp", "file": {"op": "read", "path": "/home/dev/other/.env", "canonical": "/home/dev/other/.env"}} with data.config as cfg
	d.outcome == "deny"
	"files.secret_read" in ids(d.reasons)
}

test_read_user_npmrc_denied if {
	d := data.portcullis.decision with input as {"kind": "file", "via": "mcp", "file": {"op": "read", "path": "~/.npmrc", "canonical": "/home/dev/.npmrc"}} with data.config as cfg
	"files.secret_read" in ids(d.reasons)
}

test_read_key_in_home_denied if {
	d := data.portcullis.decision with input as {"kind": "file", "via": "mcp", "file": {"op": "read", "path": "/home/dev/certs/server.key", "canonical": "/home/dev/certs/server.key"}} with data.config as cfg
	d.outcome == "deny"
	"files.secret_read" in ids(d.reasons)
}

test_read_system_ca_bundle_allowed if {
	every p in ["/etc/ssl/certs/ISRG_Root_X1.pem", "/home/dev/.local/lib/python3.12/site-packages/certifi/cacert.pem", "/usr/lib/ssl/cert.pem"] {
		not "files.secret_read" in ids(data.portcullis.files.deny) with input as {"kind": "file", "via": "mcp", "file": {"op": "read", "path": p, "canonical": p}} with data.config as cfg
	}
}

# === label secret_read ===

test_read_env_in_workspace_allowed_and_labelled if {
	d := data.portcullis.decision with input as {"kind": "file", "via": "mcp", "file": {"op": "read", "path": ".env", "canonical": "/work/ws/.env"}} with data.config as cfg
	d.outcome == "allow"
	"secret_read" in d.labels
}

test_read_env_variant_in_workspace_labelled if {
	l := data.portcullis.files.labels with input as {"kind": "file", "via": "mcp", "file": {"op": "read", "path": "app/.env.production", "canonical": "/work/ws/app/.env.production"}} with data.config as cfg
	"secret_read" in l
}

test_read_key_in_workspace_labelled if {
	d := data.portcullis.decision with input as {"kind": "file", "via": "mcp", "file": {"op": "read", "path": "certs/dev.key", "canonical": "/work/ws/certs/dev.key"}} with data.config as cfg
	d.outcome == "allow"
	"secret_read" in d.labels
}

test_read_env_template_not_labelled if {
	every p in ["/work/ws/.env.example", "/work/ws/.env.sample", "/work/ws/.env.template", "/work/ws/src/env.ts", "/work/ws/.environment.md"] {
		count(data.portcullis.files.labels) == 0 with input as {"kind": "file", "via": "mcp", "file": {"op": "read", "path": p, "canonical": p}} with data.config as cfg
	}
}

test_write_env_not_labelled if {
	l := data.portcullis.files.labels with input as {"kind": "file", "via": "mcp", "file": {"op": "write", "path": ".env", "canonical": "/work/ws/.env"}} with data.config as cfg
	count(l) == 0
}

# === files.secret_write ===

test_write_env_in_workspace_denied if {
	d := data.portcullis.decision with input as {"kind": "file", "via": "mcp", "file": {"op": "write", "path": ".env", "canonical": "/work/ws/.env"}} with data.config as cfg
	d.outcome == "deny"
	"files.secret_write" in ids(d.reasons)
}

test_write_authorized_keys_denied_even_inside_workspace if {
	d := data.portcullis.decision with input as {"kind": "file", "via": "mcp", "file": {"op": "write", "path": ".ssh/authorized_keys", "canonical": "/home/dev/.ssh/authorized_keys"}} with data.config as home_cfg
	d.outcome == "deny"
	"files.secret_write" in ids(d.reasons)
}

test_write_aws_config_denied if {
	s := data.portcullis.files.deny with input as {"kind": "file", "via": "mcp", "file": {"op": "write", "path": ".aws/config", "canonical": "/home/dev/.aws/config"}} with data.config as home_cfg
	"files.secret_write" in ids(s)
}

test_write_env_example_allowed if {
	d := data.portcullis.decision with input as {"kind": "file", "via": "mcp", "file": {"op": "write", "path": ".env.example", "canonical": "/work/ws/.env.example"}} with data.config as cfg
	d.outcome == "allow"
}

test_write_key_in_workspace_not_a_secret_write if {
	s := data.portcullis.files.deny with input as {"kind": "file", "via": "mcp", "file": {"op": "write", "path": "certs/dev.pem", "canonical": "/work/ws/certs/dev.pem"}} with data.config as cfg
	count(s) == 0
}

# === files.vcs_hooks ===

test_write_git_hook_denied if {
	d := data.portcullis.decision with input as {"kind": "file", "via": "mcp", "file": {"op": "write", "path": ".git/hooks/pre-commit", "canonical": "/work/ws/.git/hooks/pre-commit"}} with data.config as cfg
	d.outcome == "deny"
	"files.vcs_hooks" in ids(d.reasons)
}

test_write_git_config_denied if {
	d := data.portcullis.decision with input as {"kind": "file", "via": "mcp", "file": {"op": "write", "path": ".git/config", "canonical": "/work/ws/.git/config"}} with data.config as cfg
	d.outcome == "deny"
	"files.vcs_hooks" in ids(d.reasons)
}

test_write_other_git_exec_paths_denied if {
	every p in ["/work/ws/vendor/lib/.git/hooks/post-checkout", "/work/ws/.git/modules/sub/hooks/pre-push", "/work/ws/.git/modules/sub/config", "/work/ws/mirror.git/hooks/post-receive", "/work/ws/mirror.git/config", "/work/ws/.git/worktrees/wt/config.worktree", "/work/ws/.git/hooks"] {
		"files.vcs_hooks" in ids(data.portcullis.files.deny) with input as {"kind": "file", "via": "mcp", "file": {"op": "write", "path": p, "canonical": p}} with data.config as cfg
	}
}

test_write_global_gitconfig_denied if {
	s := data.portcullis.files.deny with input as {"kind": "file", "via": "mcp", "file": {"op": "write", "path": ".gitconfig", "canonical": "/home/dev/.gitconfig"}} with data.config as home_cfg
	"files.vcs_hooks" in ids(s)
}

test_write_git_near_misses_allowed if {
	every p in ["/work/ws/.github/workflows/ci.yml", "/work/ws/src/hooks/useAuth.ts", "/work/ws/.gitignore", "/work/ws/.git/COMMIT_EDITMSG", "/work/ws/config/git.toml", "/work/ws/.githooks.md"] {
		count(data.portcullis.files.deny) == 0 with input as {"kind": "file", "via": "mcp", "file": {"op": "write", "path": p, "canonical": p}} with data.config as cfg
	}
}

test_read_git_config_allowed if {
	d := data.portcullis.decision with input as {"kind": "file", "via": "mcp", "file": {"op": "read", "path": ".git/config", "canonical": "/work/ws/.git/config"}} with data.config as cfg
	d.outcome == "allow"
}

# === files.protected_path ===

test_write_policy_file_denied if {
	d := data.portcullis.decision with input as {"kind": "file", "via": "mcp", "file": {"op": "write", "path": "/etc/portcullis/policies/files.rego", "canonical": "/etc/portcullis/policies/files.rego"}} with data.config as cfg
	d.outcome == "deny"
	"files.protected_path" in ids(d.reasons)
}

test_delete_audit_log_denied if {
	d := data.portcullis.decision with input as {"kind": "file", "via": "mcp", "file": {"op": "delete", "path": "/var/log/portcullis/audit.jsonl", "canonical": "/var/log/portcullis/audit.jsonl"}} with data.config as cfg
	"files.protected_path" in ids(d.reasons)
}

test_delete_dir_holding_protected_path_denied if {
	s := data.portcullis.files.deny with input as {"kind": "file", "via": "mcp", "file": {"op": "delete", "path": "/etc/portcullis", "canonical": "/etc/portcullis"}} with data.config as cfg
	"files.protected_path" in ids(s)
}

test_protected_config_inside_workspace_denied if {
	d := data.portcullis.decision with input as {"kind": "file", "via": "mcp", "file": {"op": "write", "path": "portcullis.toml", "canonical": "/work/ws/portcullis.toml"}} with data.config as {"workspace_roots": ["/work/ws"], "allow_hosts": [], "allow_cidrs": [], "protected_paths": ["/work/ws/portcullis.toml", "/work/ws/portcullis-audit.jsonl"]}
	d.outcome == "deny"
	"files.protected_path" in ids(d.reasons)
}

test_protected_near_misses_allowed if {
	every p in ["/work/ws/portcullis.toml.bak", "/work/ws/portcullis-audit.jsonl.d/x", "/work/ws/src/main.rs"] {
		not "files.protected_path" in ids(data.portcullis.files.deny) with input as {"kind": "file", "via": "mcp", "file": {"op": "write", "path": p, "canonical": p}} with data.config as {"workspace_roots": ["/work/ws"], "allow_hosts": [], "allow_cidrs": [], "protected_paths": ["/work/ws/portcullis.toml", "/work/ws/portcullis-audit.jsonl"]}
	}
}

test_read_protected_path_allowed if {
	s := data.portcullis.files.deny with input as {"kind": "file", "via": "mcp", "file": {"op": "read", "path": "/etc/portcullis/policies/files.rego", "canonical": "/etc/portcullis/policies/files.rego"}} with data.config as cfg
	not "files.protected_path" in ids(s)
}

test_protected_sibling_dir_not_protected if {
	s := data.portcullis.files.deny with input as {"kind": "file", "via": "mcp", "file": {"op": "write", "path": "/etc/portcullis/policies_old/x", "canonical": "/etc/portcullis/policies_old/x"}} with data.config as cfg
	not "files.protected_path" in ids(s)
}

# === files.exec_outside_workspace ===

test_exec_binary_from_tmp_asks if {
	d := data.portcullis.decision with input as {"kind": "file", "via": "sandbox", "file": {"op": "exec", "path": "/tmp/payload", "canonical": "/tmp/payload"}} with data.config as cfg
	d.outcome == "ask"
	"files.exec_outside_workspace" in ids(d.reasons)
}

test_exec_system_binary_allowed if {
	d := data.portcullis.decision with input as {"kind": "file", "via": "sandbox", "file": {"op": "exec", "path": "/usr/bin/git", "canonical": "/usr/bin/git"}} with data.config as cfg
	d.outcome == "allow"
}

test_exec_workspace_binary_allowed if {
	d := data.portcullis.decision with input as {"kind": "file", "via": "sandbox", "file": {"op": "exec", "path": "target/debug/app", "canonical": "/work/ws/target/debug/app"}} with data.config as cfg
	d.outcome == "allow"
}

test_exec_lookalike_system_dir_asks if {
	s := data.portcullis.files.ask with input as {"kind": "file", "via": "sandbox", "file": {"op": "exec", "path": "/usr/binx/tool", "canonical": "/usr/binx/tool"}} with data.config as cfg
	"files.exec_outside_workspace" in ids(s)
}

# === shape ===

test_no_file_facet_no_file_rules if {
	s := data.portcullis.files.deny with input as {"kind": "exec", "via": "sandbox"} with data.config as cfg
	count(s) == 0
}

test_messages_name_the_path if {
	s := data.portcullis.files.deny with input as {"kind": "file", "via": "mcp", "file": {"op": "write", "path": "/etc/cron.d/job", "canonical": "/etc/cron.d/job"}} with data.config as cfg
	some r in s
	r.rule == "files.write_outside_workspace"
	contains(r.message, "/etc/cron.d/job")
}

test_credential_message_names_the_component_needle if {
	# /.ssh/ and /id_ed25519/ both occur; the first component in the path wins.
	s := data.portcullis.files.deny with input as {"kind": "file", "via": "mcp", "file": {"op": "read", "path": "/root/.ssh/id_ed25519", "canonical": "/root/.ssh/id_ed25519"}} with data.config as cfg
	some r in s
	r.rule == "files.secret_read"
	endswith(r.message, "it holds SSH keys and configuration")
}

test_credential_message_names_a_multi_component_needle if {
	# No single component is a needle: the scan finds /.kube/config/.
	s := data.portcullis.files.deny with input as {"kind": "file", "via": "mcp", "file": {"op": "read", "path": "/root/.kube/config", "canonical": "/root/.kube/config"}} with data.config as cfg
	some r in s
	r.rule == "files.secret_read"
	endswith(r.message, "it holds Kubernetes credentials")
}

test_needle_description_lookup_and_scan if {
	needles := {"/a/": "one", "/b/c/": "two", "/c/": "three"}
	data.portcullis.files.needle_description(needles, "/x/c/a/") == "three"
	data.portcullis.files.needle_description({"/a/": "one", "/b/c/": "two"}, "/x/b/c/") == "two"
	not data.portcullis.files.needle_description(needles, "/x/y/")
}

# === the pack data stays consistent (operators edit it) ===

test_every_needle_contains_a_flag_trigger if {
	# facts.flagged only looks for the triggers; a needle without one would never be checked.
	every needle, _ in object.union(data.pack.files.credential_needles, data.pack.files.secret_file_needles) {
		some trigger, _ in data.pack.files.flag_triggers
		contains(needle, trigger)
	}
}

test_needle_descriptions_hold_no_slash if {
	# has_needle relies on it: a replacement must remove slashes.
	every _, d in object.union_n([data.pack.files.credential_needles, data.pack.files.secret_file_needles, data.pack.files.key_needles, data.pack.files.flag_triggers]) {
		not contains(d, "/")
	}
}

test_needles_are_component_shaped if {
	every n, _ in object.union(data.pack.files.credential_needles, data.pack.files.secret_file_needles) {
		startswith(n, "/")
		endswith(n, "/")
	}
	every n, _ in data.pack.files.key_needles {
		startswith(n, ".")
		endswith(n, "/")
	}
}
