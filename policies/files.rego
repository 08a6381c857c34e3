# File operations (input.file: op read | write | delete | list | exec).
#
# Every rule decides on input.file.canonical — absolute, lexically normalized and
# symlink-resolved by the proxy — never on input.file.path, which the agent wrote.
#
# Rule ids:
#   files.not_canonical            deny  the proxy gave no absolute canonical path (fail closed)
#   files.write_outside_workspace  deny  write/delete outside every workspace root
#   files.secret_read              deny  read of a credential store, or of a secrets file /
#                                        private key outside the workspace
#   files.secret_write             deny  write/delete of a credential store or secrets file
#   files.vcs_hooks                deny  write of a git hook or git config (core.hooksPath,
#                                        core.fsmonitor, … run code outside the sandbox)
#   files.protected_path           deny  write/delete of the proxy's own config, policies, audit
#                                        log, or of a directory holding one
#   files.exec_outside_workspace   ask   running a file from outside the workspace and the
#                                        system binary directories
# Labels: secret_read (a secrets file or key inside the workspace was read).
#
# Cost: the RVM charges for every rule it enters and every rule, input or data reference, so
# everything the rules need about the path is computed once, in `facts`, with one builtin call
# per list (strings.replace_n for "does any needle occur": see has_needle). A path that matches
# no needle — most reads and writes — is decided from facts alone.
#
# Used by other packages: roots, has_needle, needle_description.
package portcullis.files

import rego.v1

# Does any needle of a needle object ({"/.ssh/": "SSH keys and configuration", …}) occur in s?
# A needle starts and/or ends with "/", so in a string whose components all end in "/" it
# matches whole components only ("/.ssh/" is not in "/.ssh-notes/"). replace_n replaces every
# needle by its description in one builtin call; descriptions hold no "/", so each replacement
# removes slashes and the result differs from s exactly when some needle occurred.
has_needle(needles, s) if strings.replace_n(needles, s) != s

# What the first needle found in s describes (only computed for messages). Most needles are one
# component ("/.ssh/"), so each component of s is looked up first — a handful of lookups where
# a scan costs a builtin call per needle; a needle of several components ("/.kube/config/")
# falls back to the scan. So a one-component needle wins, the first in s; else the first needle.
needle_description(needles, s) := d if {
	ds := [needles[concat("", ["/", c, "/"])] | some c in split(s, "/")]
	count(ds) > 0
	d := ds[0]
} else := [d | some n, d in needles; contains(s, n)][0]

# Always defined, so that messages never go undefined (which would drop a deny).
roots := data.config.workspace_roots if {
	is_array(data.config.workspace_roots)
} else := []

protected := data.config.protected_paths if {
	is_array(data.config.protected_paths)
} else := []

# === facts about the path, computed once ===
#
# slashed: the path with a trailing "/", so that every component, the last one too, ends in "/".
# in_ws:   inside a workspace root, component-wise ("/ws" holds "/ws" and "/ws/a", not
#          "/ws_evil"; "/" holds everything; an empty root holds nothing).
# flagged: the path might be a secret: it contains one of pack.files.flag_triggers (every
#          credential and secrets-file needle contains one; a test checks it) or a key needle.
#          Only then are the secret rules, with their longer needle lists, evaluated.
facts := {
	"op": object.get(f, "op", ""),
	"canonical": c,
	"slashed": s,
	"absolute": startswith(c, "/"),
	"in_ws": strings.any_prefix_match(s, [concat("", [trim_right(r, "/"), "/"]) | some r in roots; r != ""]),
	"flagged": {strings.replace_n(data.pack.files.flag_triggers, s) != s, strings.replace_n(data.pack.files.key_needles, s) != s} != {false},
} if {
	input.file
	f := input.file
	c := object.get(f, "canonical", "")
	s := concat("", [c, "/"])
}

# === secret classes (only when flagged) ===

pk := data.pack.files

base := b if {
	parts := split(facts.canonical, "/")
	b := parts[count(parts) - 1]
}

# Credential stores: denied to read anywhere, even inside a workspace root.
credential if has_needle(pk.credential_needles, facts.slashed)

credential if {
	# /proc/<pid>/environ holds the environment of a process (API keys of the proxy itself).
	startswith(facts.canonical, "/proc/")
	base in pk.proc_secret_names
}

credential_kind := needle_description(pk.credential_needles, facts.slashed) if {
	has_needle(pk.credential_needles, facts.slashed)
} else := "the environment of a process"

# Project-level secrets files: ordinary inside a workspace (labelled), denied outside it.
project_secret if has_needle(pk.secret_file_needles, facts.slashed)

project_secret if {
	# .env.local, .env.production — not the templates .env.example, .env.sample, …
	startswith(base, ".env.")
	not strings.any_suffix_match(base, pk.env_template_suffixes)
}

project_secret if {
	# prod.env
	endswith(facts.canonical, ".env")
	not endswith(facts.canonical, "/.env")
}

# Key and keystore files. Outside the workspace they are denied only under a home directory
# (system CA bundles such as /etc/ssl/certs/*.pem are public), and not inside package trees
# (certifi's cacert.pem in a user site-packages).
key_file if has_needle(pk.key_needles, facts.slashed)

under_home if strings.any_prefix_match(facts.canonical, pk.home_prefixes)

in_package_dir if {
	some d in pk.package_dirs
	contains(facts.canonical, d)
}

secret_target if credential

secret_target if project_secret

workspace_secret if project_secret

workspace_secret if key_file

# === rules ===

deny contains r if {
	x := facts
	x.absolute == false
	r := {
		"rule": "files.not_canonical",
		"message": sprintf("file path %q has no absolute canonical form; the proxy decides only on canonical paths", [object.get(input.file, "path", "")]),
	}
}

deny contains r if {
	x := facts
	x.op in {"write", "delete"}
	some r in write_denials
}

deny contains r if {
	x := facts
	x.op == "read"
	x.flagged
	some r in read_denials
}

read_denials contains r if {
	credential
	r := {
		"rule": "files.secret_read",
		"message": sprintf("reading %s is denied: it holds %s", [facts.canonical, credential_kind]),
	}
}

read_denials contains r if {
	project_secret
	facts.in_ws == false
	r := {
		"rule": "files.secret_read",
		"message": sprintf("reading %s is denied: it is a secrets file outside every workspace root", [facts.canonical]),
	}
}

read_denials contains r if {
	key_file
	facts.in_ws == false
	under_home
	not in_package_dir
	r := {
		"rule": "files.secret_read",
		"message": sprintf("reading %s is denied: it is key material in a home directory outside every workspace root", [facts.canonical]),
	}
}

write_denials contains r if {
	x := facts
	x.in_ws == false
	not strings.any_prefix_match(x.slashed, pk.writable_outside_workspace)
	r := {
		"rule": "files.write_outside_workspace",
		"message": sprintf("%s of %s is denied: it is outside every workspace root (%s)", [x.op, x.canonical, concat(", ", roots)]),
	}
}

write_denials contains r if {
	x := facts
	x.flagged
	secret_target
	r := {
		"rule": "files.secret_write",
		"message": sprintf("%s of %s is denied: it is a credential or secrets file", [x.op, x.canonical]),
	}
}

write_denials contains r if {
	x := facts
	x.op == "write"
	contains(x.slashed, ".git")
	vcs_exec_path
	r := {
		"rule": "files.vcs_hooks",
		"message": sprintf("writing %s is denied: git runs hooks and config-named programs (core.hooksPath, core.fsmonitor, core.sshCommand) outside the sandbox", [x.canonical]),
	}
}

# .git/hooks/… of any repository (also bare "x.git/hooks", submodules ".git/modules/m/hooks").
vcs_exec_path if {
	i := indexof(facts.slashed, ".git/")
	i >= 0
	contains(substring(facts.slashed, i, -1), "/hooks/")
}

vcs_exec_path if strings.any_suffix_match(facts.canonical, pk.vcs_config_suffixes)

vcs_exec_path if {
	contains(facts.canonical, ".git/modules/")
	base == "config"
}

vcs_exec_path if {
	contains(facts.canonical, ".git/worktrees/")
	base == "config.worktree"
}

vcs_exec_path if {
	under_home
	strings.any_suffix_match(facts.canonical, pk.vcs_global_config_suffixes)
}

write_denials contains r if {
	x := facts
	some pp in protected
	startswith(x.slashed, concat("", [trim_right(pp, "/"), "/"]))
	r := {
		"rule": "files.protected_path",
		"message": sprintf("%s of %s is denied: it is part of the proxy's own configuration, policies or audit log (%s)", [x.op, x.canonical, pp]),
	}
}

write_denials contains r if {
	# Deleting or replacing a directory that holds a protected path.
	x := facts
	some pp in protected
	pp != x.canonical
	startswith(concat("", [pp, "/"]), x.slashed)
	r := {
		"rule": "files.protected_path",
		"message": sprintf("%s of %s is denied: it contains %s, part of the proxy's own configuration, policies or audit log", [x.op, x.canonical, pp]),
	}
}

# Running a program from outside the workspace is ordinary for system binaries (/usr/bin/git),
# but a binary dropped into /tmp, /dev/shm or a download directory and then run is a classic
# staging step, so it is asked rather than denied: a human can tell a legitimate tool from a
# payload, and a deny would break agents that use tools installed in unusual places.
ask contains r if {
	x := facts
	x.op == "exec"
	x.absolute
	x.in_ws == false
	not strings.any_prefix_match(x.slashed, [concat("", [d, "/"]) | some d in pk.system_exec_dirs])
	r := {
		"rule": "files.exec_outside_workspace",
		"message": sprintf("running %s needs approval: it is outside every workspace root and the system binary directories", [x.canonical]),
	}
}

labels contains "secret_read" if {
	x := facts
	x.op == "read"
	x.flagged
	x.in_ws
	workspace_secret
}

# === sets this package declares empty ===
# So every package has deny, ask, labels and redact. To add rules to one of them, replace its
# line with `… contains …` rules (keeping both is a load error, never a silent skip).

# No redact rules: nothing here is masked.
redact := set()
