//! `portcullis __sandbox-init SPEC_FD STATUS_FD`: the first process inside the sandbox's
//! namespaces. Reads the spec, brings `lo` up, starts the relays, prepares the Landlock
//! ruleset, starts the agent confined, says `ok` (or `err <why>`) on the status pipe, then
//! forwards signals to the agent and exits with its status.

use std::fs::File;
use std::io::{Read, Write};
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::Command;

use super::{Wire, os, relay, rules, sys};

pub(crate) const SUBCOMMAND: &str = "__sandbox-init";

/// Exit code of an init that could not set the sandbox up (the agent never ran).
const SETUP_FAILED: i32 = 125;
/// Bound on the spec the parent sends.
const SPEC_MAX: u64 = 16 * 1024 * 1024;
/// Signals passed on to the agent's process group.
const FORWARDED: [libc::c_int; 4] = [libc::SIGTERM, libc::SIGINT, libc::SIGHUP, libc::SIGQUIT];

pub(crate) fn main() -> i32 {
    let args: Vec<_> = std::env::args_os().skip(2).collect();
    let fd = |i: usize| {
        args.get(i)
            .and_then(|a| a.to_str())
            .and_then(|s| s.parse::<i32>().ok())
    };
    let (Some(spec_fd), Some(status_fd), 2) = (fd(0), fd(1), args.len()) else {
        eprintln!("portcullis: {SUBCOMMAND} is internal to `portcullis run`");
        return SETUP_FAILED;
    };
    let (spec, status) = match (
        sys::take_inherited_fd(spec_fd),
        sys::take_inherited_fd(status_fd),
    ) {
        (Ok(a), Ok(b)) => (File::from(a), File::from(b)),
        _ => {
            eprintln!(
                "portcullis: {SUBCOMMAND}: the descriptors from `portcullis run` are missing"
            );
            return SETUP_FAILED;
        }
    };
    let mut status = Status(status);
    match setup(spec) {
        Ok((agent, signals)) => {
            status.line("ok");
            drop(status);
            supervise(agent, &signals)
        }
        Err(msg) => {
            status.line(&format!("err {}", msg.replace('\n', " ")));
            SETUP_FAILED
        }
    }
}

struct Status(File);

impl Status {
    fn line(&mut self, s: &str) {
        let _ = self.0.write_all(format!("{s}\n").as_bytes());
    }
}

fn setup(mut spec_file: File) -> Result<(libc::pid_t, sys::SigSet), String> {
    // Nothing the caller of `run` leaked reaches the agent: only 0, 1 and 2 stay inheritable.
    sys::cloexec_from_3().map_err(|e| format!("marking descriptors close-on-exec: {e}"))?;
    // Block the forwarded signals (and SIGCHLD) before any thread exists, so every thread
    // inherits the mask and only `supervise` receives them.
    let mut waited = FORWARDED.to_vec();
    waited.push(libc::SIGCHLD);
    let signals = sys::SigSet::of(&waited).map_err(|e| format!("signal set: {e}"))?;
    // What the agent leaves behind (a daemon that called setsid) is reparented here, and killed
    // when the agent ends: nothing of the sandbox outlives `run`.
    sys::become_subreaper().map_err(|e| format!("becoming the child subreaper: {e}"))?;
    signals
        .block()
        .map_err(|e| format!("blocking signals: {e}"))?;

    let mut raw = Vec::new();
    (&mut spec_file)
        .take(SPEC_MAX)
        .read_to_end(&mut raw)
        .map_err(|e| format!("reading the spec: {e}"))?;
    drop(spec_file);
    let wire: Wire = serde_json::from_slice(&raw).map_err(|e| format!("bad spec: {e}"))?;

    if wire.ports.is_none() {
        sys::loopback_up().map_err(|e| format!("bringing lo up in the new namespace: {e}"))?;
        let relays: Vec<(u16, PathBuf)> = wire
            .relays
            .iter()
            .map(|(port, p)| (*port, PathBuf::from(os(p))))
            .collect();
        relay::start(&relays)?;
    }

    let kernel = sys::landlock_abi().unwrap_or(0);
    let abi = wire.max_abi.map_or(kernel, |cap| cap.min(kernel));
    if abi < wire.min_abi {
        return Err(format!(
            "Landlock ABI {} is required, the kernel offers {abi}",
            wire.min_abi
        ));
    }
    let to_paths = |v: &[Vec<u8>]| v.iter().map(|b| PathBuf::from(os(b))).collect::<Vec<_>>();
    let (read, write, exec) = (
        to_paths(&wire.read),
        to_paths(&wire.write),
        to_paths(&wire.exec),
    );
    let roots = rules::Roots {
        read: &read,
        write: &write,
        exec: &exec,
    };
    let ruleset: Option<OwnedFd> = rules::build(abi, &roots, wire.ports.as_deref())?;
    if ruleset.is_none() && wire.min_abi > 0 {
        return Err("Landlock is required but unavailable".into());
    }

    // Where Landlock cannot restrict connecting to Unix sockets by path (ABI < 9), no Unix
    // socket can be created at all: a path like /run/docker.sock would be a way out.
    let filter = if abi < super::ABI_UNIX {
        sys::unix_socket_filter()
    } else {
        None
    };

    let last_cap = sys::cap_last_cap().map_err(|e| format!("reading cap_last_cap: {e}"))?;
    let bounding = sys::has_setpcap().map_err(|e| format!("capget: {e}"))?;
    let init_pid = sys::getpid();
    let ruleset_fd = ruleset.as_ref().map(|fd| fd.as_raw_fd());

    let Some((program, args)) = wire.argv.split_first() else {
        return Err("no program to run".into());
    };
    let mut cmd = Command::new(os(program));
    cmd.args(args.iter().map(|a| os(a)))
        .env_clear()
        .envs(wire.env.iter().map(|(k, v)| (os(k), os(v))))
        .current_dir(os(&wire.cwd));
    let hook = move || -> std::io::Result<()> {
        sys::setsid()?;
        sys::unblock_all_signals()?;
        sys::set_parent_death_signal(libc::SIGKILL, init_pid)?;
        sys::drop_capabilities(last_cap, bounding)?;
        sys::set_no_new_privs()?;
        if let Some(f) = &filter {
            sys::install_seccomp(f)?;
        }
        if let Some(fd) = ruleset_fd {
            sys::landlock_restrict_self(fd)?;
        }
        Ok(())
    };
    // SAFETY: the hook only issues raw system calls (setsid, sigprocmask, prctl, getppid,
    // capset, seccomp, landlock_restrict_self) on values computed before the fork; it
    // allocates nothing and takes no lock, so it is sound in the child of this multi-threaded
    // process. Any error aborts the spawn before exec: the agent never runs unconfined.
    unsafe { cmd.pre_exec(hook) };
    let child = cmd.spawn().map_err(|e| {
        format!(
            "could not start the agent {:?} in the sandbox: {e}",
            os(program)
        )
    })?;
    drop(ruleset);
    let pid = libc::pid_t::try_from(child.id()).map_err(|e| format!("agent pid: {e}"))?;
    // The agent is waited for with waitid below, not through `child`.
    drop(child);
    Ok((pid, signals))
}

/// Forwards signals to the agent's process group until the agent terminates, then kills what
/// is left of its group and returns its exit code (128 + signal when killed).
fn supervise(agent: libc::pid_t, signals: &sys::SigSet) -> i32 {
    loop {
        let sig = match signals.wait() {
            Ok(s) => s,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(_) => libc::SIGCHLD,
        };
        if sig != libc::SIGCHLD {
            sys::kill_group(agent, sig);
            continue;
        }
        match sys::exited(agent) {
            Ok(None) => sys::reap_others(agent),
            Ok(Some(code)) => {
                // The agent is a zombie, so its group id cannot have been reused yet.
                sys::kill_group(agent, libc::SIGKILL);
                sys::reap(agent);
                sys::kill_descendants();
                return code;
            }
            Err(_) => return SETUP_FAILED,
        }
    }
}
