# Commands (input.exec). The proxy parses the shell line: input.exec.commands lists every
# simple command the line would run, including those nested in `bash -c`, `sudo`, `xargs` and
# `find -exec`; input.exec.opaque is true when what runs cannot be known without running it.
# Redirections are not visible here (`> /dev/sda` cannot be judged); the sandbox covers them.
#
# Rule ids:
#   exec.destructive           deny  rm/find -delete outside the workspace or of the whole
#                                    workspace, mkfs/wipefs/dd of=/dev/…, shred, partitioning,
#                                    chmod/chown -R outside the workspace, shutdown/reboot
#   exec.pipe_to_interpreter   deny  a fetcher (curl, wget, …) with an interpreter that reads
#                                    its program from standard input (curl … | sh)
#   exec.secret_path           deny  an argument names a credential store (cat ~/.aws/credentials),
#                                    a secrets file / private key outside the workspace, or a
#                                    secrets file that an upload (curl -F f=@.env, scp) sends off
#   exec.protected_path        deny  a modifying command names the proxy's config, policies or log
#   exec.force_push            ask   git push --force / -f / --force-with-lease / +refspec / --mirror
#   exec.git_reset_hard        ask   git reset --hard (discards uncommitted work)
#   exec.git_clean             ask   git clean -f without -n (deletes untracked files)
#   exec.privilege             ask   sudo, su, doas, pkexec, run0
#   exec.opaque                ask   the line uses substitution/eval, or could not be parsed
# Labels: secret_read (a command that shows file contents names a secrets file or key inside
# the workspace).
#
# Cost: the RVM charges for every rule it enters and every reference, so each command is looked
# up once in pack.exec.families (name → family) and a family's rules run only when a command of
# that family is on the line; the per-argument secret checks run only when one needle match over
# all arguments at once (see joined) found a candidate.
package portcullis.exec

import rego.v1

pk := data.pack.exec

# === the commands ===

# The parsed simple commands; an execve without a shell line has only argv.
commands := input.exec.commands if {
	count(input.exec.commands) > 0
} else := [input.exec.argv] if {
	count(input.exec.argv) > 0
} else := []

# Each command with its name (the basename of argv[0], so /bin/rm is rm) and its family from
# pack.exec.families, looked up by the name and then by the part before the first "." (so
# mkfs.ext4 is mkfs and python3.12 is python3).
base_cmds := [{"name": n, "argv": argv, "family": object.get(fams, n, object.get(fams, split(n, ".")[0], ""))} |
	fams := data.pack.exec.families
	some argv in commands
	count(argv) > 0
	parts := split(argv[0], "/")
	n := parts[count(parts) - 1]
]

# Also look through wrappers the parser may not unwrap (`env X=1 sh`, `timeout 5 rm …`,
# `busybox sh`): every suffix of a wrapper's argv that starts at a plain word. Suffixes that
# start at an option value ("root" in `sudo -u root sh`) name no command and match no rule.
wrapped_cmds := [{"name": n, "argv": array.slice(c.argv, k, count(c.argv)), "family": object.get(fams, n, object.get(fams, split(n, ".")[0], ""))} |
	fams := data.pack.exec.families
	some c in base_cmds
	c.name in data.pack.exec.wrappers
	some k, a in c.argv
	k > 0
	not startswith(a, "-")
	not contains(a, "=")
	parts := split(a, "/")
	n := parts[count(parts) - 1]
]

cmds := array.concat(base_cmds, wrapped_cmds)

# The commands of each family on the line, so a family's rules cost nothing when it is absent.
by_family := {f: [c | some c in cmds; c.family == f] | some c0 in cmds; f := c0.family; f != ""}

families := {f | some f, _ in by_family}

# Families whose rules only ask, or that matter only together with another family.
non_deny_families := {"git", "privilege", "fetcher", "remote_copy"}

# The command line for messages, cut short; always defined so a message never goes undefined.
shown := substring(input.exec.command, 0, 200) if {
	input.exec.command != ""
} else := substring(concat(" ", input.exec.argv), 0, 200) if {
	count(input.exec.argv) > 0
} else := ""

# === entry points ===

deny contains r if {
	count(families - non_deny_families) > 0
	some r in family_denials
}

deny contains r if {
	candidates
	some r in secret_denials
}

deny contains r if {
	protected_candidate
	some r in protected_denials
}

ask contains r if {
	by_family.git
	some r in git_asks
}

ask contains r if {
	some c in by_family.privilege
	r := {
		"rule": "exec.privilege",
		"message": sprintf("%s runs a command with other privileges and needs approval: %s", [c.name, shown]),
	}
}

ask contains r if {
	input.exec.opaque == true
	r := {
		"rule": "exec.opaque",
		"message": sprintf("what this command line runs cannot be known before running it (substitution, eval or similar) and needs approval: %s", [shown]),
	}
}

ask contains r if {
	# A line the proxy could not break into commands is treated like an opaque one.
	input.exec
	count(commands) == 0
	shown != ""
	r := {
		"rule": "exec.opaque",
		"message": sprintf("this command line could not be parsed into commands and needs approval: %s", [shown]),
	}
}

labels contains "secret_read" if {
	candidates
	"secret_read" in secret_labels
}

# === where an argument points ===
# Arguments are raw words: relative ones are taken relative to the working directory, which is
# the workspace. Anything that cannot be placed inside it is treated as outside.

root_prefixes := [concat("", [trim_right(r, "/"), "/"]) | some r in data.portcullis.files.roots; r != ""]

in_workspace_arg(a) if strings.any_prefix_match(concat("", [a, "/"]), root_prefixes)

outside_arg(a) if startswith(a, "~")

outside_arg(a) if startswith(a, "$")

outside_arg(a) if {
	some c in split(a, "/")
	c == ".."
}

outside_arg(a) if {
	startswith(a, "/")
	not in_workspace_arg(a)
}

# The filesystem root, a top-level system directory or a home directory, with any trailing
# "/" or "/*": never a target of a recursive operation, whatever the workspace roots are.
system_dir(a) if {
	startswith(a, "/")
	trim_right(a, "/*") == ""
}

system_dir(a) if trim_right(a, "/*") in pk.system_dirs

system_dir(a) if {
	t := trim_right(a, "/*")
	startswith(t, "/home/")
	count(split(t, "/")) == 3
}

# The working directory or a workspace root as a whole: ".", "./", "*", "./*", "/ws", "/ws/*".
wipes_workspace(a) if {
	not startswith(a, "/")
	not startswith(a, "~")
	not startswith(a, "$")
	trim(a, "./*") == ""
}

wipes_workspace(a) if {
	startswith(a, "/")
	some root in data.portcullis.files.roots
	r := trim_right(root, "/")
	startswith(a, r)
	trim(substring(a, count(r), -1), "./*") == ""
}

short_cluster(a) if {
	startswith(a, "-")
	not startswith(a, "--")
	count(a) > 1
}

has_short(argv, letter) if {
	some i, a in argv
	i > 0
	short_cluster(a)
	contains(a, letter)
}

# Arguments that are not options; everything after "--" is an operand.
operands(argv) := [a | some i, a in argv; i > 0; operand_at(argv, i)]

operand_at(argv, i) if not startswith(argv[i], "-")

operand_at(argv, i) if {
	startswith(argv[i], "-")
	some j, a in argv
	a == "--"
	j > 0
	j < i
}

recursive(argv) if has_short(argv, "r")

recursive(argv) if has_short(argv, "R")

recursive(argv) if "--recursive" in argv

outside_or_system(t) if outside_arg(t)

outside_or_system(t) if system_dir(t)

destructive(what, why) := {"rule": "exec.destructive", "message": sprintf("%s is denied: %s", [what, why])}

# === exec.destructive ===

family_denials contains r if {
	some c in by_family.remove
	some t in operands(c.argv)
	r := remove_denial(c, t)
}

# A recursive removal of the whole workspace, a system or a home directory; else any removal
# outside every workspace root.
remove_denial(c, t) := destructive(sprintf("recursive %s of %s", [c.name, t]), "it deletes the whole workspace, a system directory or a home directory") if {
	wipe_target(t)
	recursive(c.argv)
} else := destructive(sprintf("%s of %s", [c.name, t]), "it deletes outside every workspace root") if {
	outside_arg(t)
}

wipe_target(t) if wipes_workspace(t)

wipe_target(t) if system_dir(t)

family_denials contains r if {
	some c in by_family.remove
	"--no-preserve-root" in c.argv
	r := destructive("rm --no-preserve-root", "it exists only to let rm delete /")
}

family_denials contains r if {
	some c in by_family.find
	find_deletes(c.argv)
	some s in find_start_points(c.argv)
	outside_or_system(s)
	r := destructive(sprintf("find deleting under %s", [s]), "it reaches outside every workspace root")
}

find_deletes(argv) if "-delete" in argv

find_deletes(argv) if {
	some i, a in argv
	a in {"-exec", "-execdir", "-ok", "-okdir"}
	parts := split(argv[i + 1], "/")
	parts[count(parts) - 1] in pk.find_deleters
}

# Start points: the words before the first expression ("-name", "(", "!"), after the leading
# options -H, -L, -P, -O<n> and -D <debugopts>.
find_expr_start(argv) := [i | some i, a in argv; i > 0; find_expr_word(argv, i)][0] if {
	count([i | some i, a in argv; i > 0; find_expr_word(argv, i)]) > 0
} else := count(argv)

find_expr_word(argv, i) if {
	a := argv[i]
	startswith(a, "-")
	not a in {"-H", "-L", "-P", "-D"}
	not startswith(a, "-O")
}

find_expr_word(argv, i) if argv[i] in {"(", "!", "\\(", ","}

find_start_points(argv) := [a |
	some i, a in argv
	i > 0
	i < find_expr_start(argv)
	not startswith(a, "-")
	argv[i - 1] != "-D"
]

family_denials contains r if {
	some c in by_family.disk
	r := destructive(c.name, "it creates a file system or erases a block device")
}

family_denials contains r if {
	some c in by_family.dd
	some a in c.argv
	startswith(a, "of=/dev/")
	not substring(a, 3, -1) in pk.safe_devices
	r := destructive(sprintf("dd %s", [a]), "it writes straight to a device")
}

family_denials contains r if {
	some c in by_family.shred
	some t in operands(c.argv)
	shred_target(t)
	r := destructive(sprintf("shred of %s", [t]), "it destroys a device or data outside the workspace")
}

shred_target(t) if outside_or_system(t)

shred_target(t) if startswith(t, "/dev/")

family_denials contains r if {
	some c in by_family.partition
	some a in c.argv
	startswith(a, "/dev/")
	not partition_query(c.argv)
	r := destructive(sprintf("%s on %s", [c.name, a]), "it rewrites a partition table")
}

partition_query(argv) if {
	some a in argv
	a in pk.partition_read_only_flags
}

family_denials contains r if {
	some c in by_family.owner
	owner_recursive(c.argv)
	some t in operands(c.argv)
	outside_or_system(t)
	r := destructive(sprintf("recursive %s of %s", [c.name, t]), "it changes files outside every workspace root")
}

owner_recursive(argv) if has_short(argv, "R")

owner_recursive(argv) if "--recursive" in argv

family_denials contains r if {
	some c in by_family.power
	r := destructive(c.name, "it stops the machine")
}

family_denials contains r if {
	some c in by_family.systemctl
	some a in c.argv
	a in pk.power_verbs
	r := destructive(sprintf("systemctl %s", [a]), "it stops the machine")
}

family_denials contains r if {
	some c in by_family.init
	some a in c.argv
	a in {"0", "6"}
	r := destructive(sprintf("%s %s", [c.name, a]), "it stops the machine")
}

# === exec.pipe_to_interpreter ===

family_denials contains r if {
	by_family.fetcher
	some c in by_family.interpreter
	interpreter(c.name)
	spec := interpreter(c.name)
	reads_stdin(c.argv, spec)
	some f in by_family.fetcher
	r := {
		"rule": "exec.pipe_to_interpreter",
		"message": sprintf("%s reading its program from standard input, in a command line that also runs %s, is denied: it would run downloaded code unseen", [c.name, f.name]),
	}
}

interpreter(n) := pk.interpreters[n]

interpreter(n) := pk.interpreters[split(n, ".")[0]] if {
	not pk.interpreters[n]
	pk.interpreters[split(n, ".")[0]]
}

interpreter(n) := pk.interpreters.python if {
	not pk.interpreters[n]
	not pk.interpreters[split(n, ".")[0]]
	startswith(n, "python")
}

# Options end at the first operand: the script (or the code string of -c / -e, which has_code
# sees first). Everything after belongs to the program, not to the interpreter.
opts_end(argv, spec) := [j | some j, _ in argv; j > 0; interp_operand(argv, j, spec)][0] if {
	count([j | some j, _ in argv; j > 0; interp_operand(argv, j, spec)]) > 0
} else := count(argv)

interp_operand(argv, j, spec) if {
	a := argv[j]
	not interp_option(a)
	not value_of_prev(argv, j, spec)
}

interp_option(a) if {
	startswith(a, "-")
	a != "-"
}

interp_option(a) if startswith(a, "+")

value_of_prev(argv, j, spec) if argv[j - 1] in spec.value_flags

value_of_prev(argv, j, spec) if {
	prev := argv[j - 1]
	short_cluster(prev)
	substring(prev, count(prev) - 1, 1) in spec.value_letters
}

has_code(argv, spec) if {
	e := opts_end(argv, spec)
	some i, a in argv
	i > 0
	i < e
	code_arg(a, spec)
}

code_arg(a, spec) if a in spec.code_flags

code_arg(a, spec) if {
	startswith(a, "--")
	split(a, "=")[0] in spec.code_flags
}

code_arg(a, spec) if {
	short_cluster(a)
	chars := split(substring(a, 1, -1), "")
	some i, ch in chars
	ch in spec.code_letters
	not value_letter_before(chars, i, spec)
}

# In "-Ie" the I takes "e" as its value; only letters before any value letter count.
value_letter_before(chars, i, spec) if {
	some j, c in chars
	j < i
	c in spec.value_letters
}

stdin_flag(argv, spec) if {
	e := opts_end(argv, spec)
	some i, a in argv
	i > 0
	i < e
	short_cluster(a)
	some l in spec.stdin_letters
	contains(a, l)
}

reads_stdin(argv, spec) if {
	not has_code(argv, spec)
	opts_end(argv, spec) == count(argv)
}

reads_stdin(argv, spec) if {
	not has_code(argv, spec)
	argv[opts_end(argv, spec)] in pk.stdin_paths
}

reads_stdin(argv, spec) if {
	not has_code(argv, spec)
	stdin_flag(argv, spec)
}

# === exec.secret_path and the secret_read label ===

# All arguments of all commands in one string, each between slashes: "/a1/\n/a2/" ("\n" keeps
# a needle from spanning two arguments), so one has_needle (files.rego) call checks every needle
# against every argument, component-wise.
joined := concat("", ["/", concat("/\n/", [concat("/\n/", array.slice(argv, 1, count(argv))) | some argv in commands]), "/"])

# An argument is worth a closer look when it contains a flag trigger (every credential and
# secrets-file needle contains one) or a key needle: two short needle lists for the whole line.
candidates if strings.replace_n(data.pack.files.flag_triggers, joined) != joined

candidates if strings.replace_n(data.pack.files.key_needles, joined) != joined

# Per argument, only when a candidate was seen.

arg_base(a) := b if {
	parts := split(a, "/")
	b := parts[count(parts) - 1]
}

credential_arg(a) if {
	w := concat("", ["/", a, "/"])
	data.portcullis.files.has_needle(data.pack.files.flag_triggers, w)
	data.portcullis.files.has_needle(data.pack.files.credential_needles, w)
}

credential_arg(a) if {
	startswith(a, "/proc/")
	arg_base(a) in data.pack.files.proc_secret_names
}

secret_file_arg(a) if data.portcullis.files.has_needle(data.pack.files.secret_file_needles, concat("", ["/", a, "/"]))

secret_file_arg(a) if {
	b := arg_base(a)
	startswith(b, ".env.")
	not strings.any_suffix_match(b, data.pack.files.env_template_suffixes)
}

secret_file_arg(a) if {
	b := arg_base(a)
	endswith(b, ".env")
	b != ".env"
}

key_arg(a) if data.portcullis.files.has_needle(data.pack.files.key_needles, concat("", [a, "/"]))

workspace_secret_arg(a) if secret_file_arg(a)

workspace_secret_arg(a) if key_arg(a)

home_key(a) if strings.any_prefix_match(a, ["~", "$HOME", "${HOME}"])

home_key(a) if {
	startswith(a, "/")
	strings.any_prefix_match(a, data.pack.files.home_prefixes)
	not in_workspace_arg(a)
}

in_package_dir_arg(a) if {
	some d in data.pack.files.package_dirs
	contains(a, d)
}

secret_denials contains r if {
	some c in cmds
	not c.name in pk.printing_commands
	some i, a in c.argv
	i > 0
	credential_arg(a)
	not key_use(c, i)
	r := secret_path(a, "names a credential store")
}

secret_denials contains r if {
	some c in cmds
	some i, a in c.argv
	i > 0
	secret_file_arg(a)
	outside_arg(a)
	r := secret_path(a, "names a secrets file outside every workspace root")
}

secret_denials contains r if {
	some c in cmds
	some i, a in c.argv
	i > 0
	key_arg(a)
	home_key(a)
	not in_package_dir_arg(a)
	not key_use(c, i)
	r := secret_path(a, "names key material in a home directory outside every workspace root")
}

secret_denials contains r if {
	# curl -F f=@.env, curl -T server.key, scp .env host: — the file leaves in this very action.
	some c in cmds
	some i, _ in c.argv
	i > 0
	uploaded_file(c, i)
	f := uploaded_file(c, i)
	workspace_secret_arg(f)
	r := secret_path(c.argv[i], sprintf("sends the secrets file or key %s off the machine with %s", [f, c.name]))
}

# curl/wget: what follows "@" (-F f=@x, -d @x, --data-binary @x) or the value of -T/--upload-file.
uploaded_file(c, i) := f if {
	c.family == "fetcher"
	contains(c.argv[i], "@")
	parts := split(c.argv[i], "@")
	f := parts[count(parts) - 1]
}

uploaded_file(c, i) := c.argv[i] if {
	c.family == "fetcher"
	c.argv[i - 1] in {"-T", "--upload-file"}
	not contains(c.argv[i], "@")
}

# scp, rsync, …: every local operand (remote ones are host:path or URLs).
uploaded_file(c, i) := c.argv[i] if {
	c.family == "remote_copy"
	not startswith(c.argv[i], "-")
	not contains(c.argv[i], ":")
}

# ssh -i KEY / scp -F CONFIG and the key managers use a key without showing it to the agent.
key_use(c, i) if {
	i > 1
	c.argv[i - 1] in pk.key_options
	some w in c.argv
	arg_base(w) in pk.key_option_commands
}

key_use(c, _) if {
	some w in c.argv
	arg_base(w) in pk.key_manager_commands
}

secret_path(a, why) := {
	"rule": "exec.secret_path",
	"message": sprintf("the argument %s is denied: it %s", [a, why]),
}

# Commands that do not show file contents (echo .env >> .gitignore, ls, cp .env .env.bak) leave
# no label: the agent has not seen the secret.
secret_labels contains "secret_read" if {
	some c in cmds
	not c.name in pk.non_reading_commands
	some i, a in c.argv
	i > 0
	workspace_secret_arg(a)
	not outside_arg(a)
}

# === exec.protected_path ===

protected := data.config.protected_paths if {
	is_array(data.config.protected_paths)
} else := []

# Only absolute arguments can name a protected path.
protected_candidate if {
	count(protected) > 0
	some argv in commands
	some a in array.slice(argv, 1, count(argv))
	startswith(a, "/")
}

protected_denials contains r if {
	some c in cmds
	c.name in pk.modifying_commands
	some a in c.argv
	startswith(a, "/")
	some pp in protected
	protected_hit(a, pp)
	r := {
		"rule": "exec.protected_path",
		"message": sprintf("%s on %s is denied: it touches the proxy's own configuration, policies or audit log (%s)", [c.name, a, pp]),
	}
}

protected_hit(a, pp) if startswith(concat("", [a, "/"]), concat("", [trim_right(pp, "/"), "/"]))

protected_hit(a, pp) if startswith(concat("", [pp, "/"]), concat("", [trim_right(a, "/*"), "/"]))

# === git and privilege (ask) ===

# Each git command once: its subcommand (the first word that is neither an option nor the value
# of -C, -c, --git-dir, …) and the words after it.
gits := [{"sub": c.argv[i], "args": array.slice(c.argv, i + 1, count(c.argv)), "argv": c.argv} |
	some c in by_family.git
	idx := [j | some j, a in c.argv; j > 0; not startswith(a, "-"); not c.argv[j - 1] in pk.git_value_options]
	count(idx) > 0
	i := idx[0]
]

git_asks contains r if {
	some g in gits
	g.sub == "push"
	flags := [a | some a in g.args; force_push_arg(a)]
	count(flags) > 0
	r := {
		"rule": "exec.force_push",
		"message": sprintf("git push %s overwrites history on the remote and needs approval", [concat(" ", flags)]),
	}
}

force_push_arg(a) if a in pk.force_push_flags

force_push_arg(a) if startswith(a, "--force-with-lease=")

force_push_arg(a) if {
	short_cluster(a)
	contains(a, "f")
}

force_push_arg(a) if {
	startswith(a, "+")
	count(a) > 1
}

git_asks contains r if {
	some g in gits
	g.sub == "reset"
	"--hard" in g.args
	r := {
		"rule": "exec.git_reset_hard",
		"message": "git reset --hard discards uncommitted changes in the working tree and needs approval",
	}
}

git_asks contains r if {
	some g in gits
	g.sub == "clean"
	clean_forced(g)
	not clean_dry_run(g)
	r := {
		"rule": "exec.git_clean",
		"message": sprintf("git clean %s deletes untracked files and needs approval", [concat(" ", g.args)]),
	}
}

clean_forced(g) if "--force" in g.args

clean_forced(g) if {
	some a in g.args
	short_cluster(a)
	contains(a, "f")
}

clean_forced(g) if {
	# git -c clean.requireForce=false clean … needs no -f.
	some a in g.argv
	lower(a) == "clean.requireforce=false"
}

clean_dry_run(g) if "--dry-run" in g.args

clean_dry_run(g) if {
	some a in g.args
	short_cluster(a)
	contains(a, "n")
}

# === sets this package declares empty ===
# So every package has deny, ask, labels and redact. To add rules to one of them, replace its
# line with `… contains …` rules (keeping both is a load error, never a silent skip).

# No redact rules: nothing here is masked.
redact := set()
