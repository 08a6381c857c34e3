//! The kernel side of `portcullis run`: a program started in its own network namespace (inside
//! a user namespace when unprivileged) whose only way out is a relay to Unix sockets outside,
//! confined by Landlock to the read, write and execute roots of a profile, with no capabilities,
//! `no_new_privs`, a new session and (where Landlock cannot restrict Unix sockets by path) a
//! seccomp filter against creating Unix sockets. See docs/sandbox.md for what is and is not
//! guaranteed.
//!
//! Process model: `run` starts `<init_exe> __sandbox-init` in the new namespaces and hands it
//! the [`Spec`] over a pipe. The init (not confined by Landlock) brings `lo` up, starts the
//! relays, prepares the Landlock ruleset, then starts the agent confined, forwards SIGTERM,
//! SIGINT, SIGHUP and SIGQUIT to it and exits with its status. Set-up failures come back to
//! `run` over a second pipe as text; the agent is then never started.
//!
//! This is the only module of the crate allowed `unsafe` (DESIGN §6); it is confined to
//! [`sys`], one small block per system call, plus the `pre_exec` hooks.
#![allow(unsafe_code)]

mod init;
pub mod profile;
mod relay;
mod rules;
mod sys;

use std::ffi::OsString;
use std::io::{Read, Write};
use std::os::fd::AsRawFd;
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::path::{Path, PathBuf};
use std::process::Command;

use serde::{Deserialize, Serialize};

/// What to run, and how it is confined.
#[derive(Debug, Clone)]
pub struct Spec {
    /// The portcullis binary, re-executed as the sandbox's init (`<init_exe> __sandbox-init`).
    pub init_exe: PathBuf,
    /// Program and arguments of the agent. A program without `/` is looked up in the `PATH` of
    /// `env`.
    pub argv: Vec<OsString>,
    /// The agent's whole environment (nothing else is inherited).
    pub env: Vec<(OsString, OsString)>,
    /// The agent's working directory.
    pub cwd: PathBuf,
    pub fs: FsRules,
    pub landlock: Enforcement,
    pub network: Network,
}

/// Landlock file-system roots. Each path grants access to itself and everything beneath it; a
/// path naming a file (e.g. `/dev/null`) grants the file-level part of the access only.
#[derive(Debug, Clone, Default)]
pub struct FsRules {
    /// Read files and list directories. Missing paths are skipped with a warning.
    pub read: Vec<PathBuf>,
    /// Create, write, truncate, remove (and read). Never execute, never link or rename across
    /// directories (Landlock REFER is not granted). A missing path is an error.
    pub write: Vec<PathBuf>,
    /// Execute (and read). Missing paths are skipped with a warning.
    pub exec: Vec<PathBuf>,
}

/// What to do when the kernel's Landlock cannot enforce everything the spec asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Enforcement {
    /// Refuse to start.
    Required,
    /// Apply what the kernel offers; every gap is logged with `tracing::warn!` (and returned by
    /// [`preflight`]).
    BestEffort,
}

/// The agent's network.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Network {
    /// A new network namespace (inside a new user namespace when not root) with only loopback up;
    /// for each relay, a listener on 127.0.0.1:<port> inside it whose connections are carried to the
    /// Unix socket <path> outside. No other route exists: direct TCP, UDP and DNS have nowhere to go.
    Isolated { relays: Vec<(u16, PathBuf)> },
    /// Fallback where namespaces are unavailable: no new netns; Landlock TCP rules (ABI >= 4) allow
    /// connect() only to these TCP ports and bind() to none. UDP is not covered by Landlock.
    PortsOnly { ports: Vec<u16> },
}

/// What the kernel offers to this process.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Probe {
    /// The Landlock ABI version, `None` when Landlock is missing or disabled.
    pub landlock_abi: Option<u32>,
    /// A child of this process can create a user namespace.
    pub user_namespaces: bool,
    /// A child of this process can get a network namespace: directly as root, else inside a new
    /// user namespace (what [`Network::Isolated`] does).
    pub net_namespaces: bool,
}

/// Why the sandbox did not start. Nothing was run unconfined.
#[derive(Debug, thiserror::Error)]
pub enum SandboxError {
    #[error(
        "refusing to start: {purpose} needs Landlock ABI {needed}, but the kernel offers {}; \
         nothing was run (a profile may choose best effort explicitly)",
        abi_text(*available)
    )]
    AbiTooLow {
        needed: u32,
        available: Option<u32>,
        purpose: &'static str,
    },
    #[error(
        "refusing to start: the network could not be isolated: {step} failed: {source}{hint}; \
         nothing was run"
    )]
    Namespace {
        step: String,
        hint: &'static str,
        #[source]
        source: std::io::Error,
    },
    #[error("refusing to start: write root {} does not exist", .0.display())]
    MissingWriteRoot(PathBuf),
    #[error("invalid sandbox spec: {0}")]
    InvalidSpec(String),
    #[error("could not start the sandbox init {}: {source}", exe.display())]
    Spawn {
        exe: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("sandbox set-up failed, the agent was not started: {0}")]
    Init(String),
    /// [`run_when`]'s caller withdrew before the agent was started.
    #[error("the agent was not started: the sandbox was called off before it ran anything")]
    CalledOff,
    #[error("sandbox: {what}: {source}")]
    Io {
        what: &'static str,
        #[source]
        source: std::io::Error,
    },
}

fn abi_text(abi: Option<u32>) -> String {
    match abi {
        Some(v) => format!("ABI {v}"),
        None => "no Landlock at all".into(),
    }
}

/// What the kernel offers to this process. Namespace support is tried in short-lived forked
/// children; this process itself is left unchanged.
pub fn probe() -> Probe {
    let user_namespaces = sys::can_unshare(libc::CLONE_NEWUSER);
    let net_namespaces = if sys::geteuid() == 0 {
        sys::can_unshare(libc::CLONE_NEWNET)
    } else {
        user_namespaces && sys::can_unshare(libc::CLONE_NEWUSER | libc::CLONE_NEWNET)
    };
    Probe {
        landlock_abi: sys::landlock_abi(),
        user_namespaces,
        net_namespaces,
    }
}

/// Landlock filesystem rules without truncate control (ABI < 3) would let `truncate(2)` empty
/// any file outside the write roots, so the filesystem guarantee needs ABI 3.
const ABI_FS: u32 = 3;
/// TCP bind/connect rules.
const ABI_NET: u32 = 4;
/// Scoping of signals and abstract Unix sockets to the sandbox.
const ABI_SCOPE: u32 = 6;
/// Rules for connecting to Unix sockets by path (`LANDLOCK_ACCESS_FS_RESOLVE_UNIX`). Below it
/// the agent gets a seccomp filter that refuses to create Unix sockets at all.
const ABI_UNIX: u32 = 9;

/// The Landlock ABI each part of `spec` needs, with what it protects.
fn needs(spec: &Spec) -> Vec<(u32, &'static str)> {
    let mut v = vec![(
        ABI_FS,
        "confining the filesystem to the read, write and execute roots (with truncation)",
    )];
    if matches!(spec.network, Network::PortsOnly { .. }) {
        v.push((ABI_NET, "the TCP port allow-list of the ports-only network"));
    }
    v
}

/// Checks `spec` against the kernel without starting anything. Returns what will not be
/// enforced (empty when everything is); under [`Enforcement::Required`] a missing Landlock
/// feature the spec needs is an error instead. `run` does the same and logs each gap with
/// `tracing::warn!`; the CLI can call this first to say so at start.
pub fn preflight(spec: &Spec) -> Result<Vec<String>, SandboxError> {
    preflight_with(spec, sys::landlock_abi())
}

fn preflight_with(spec: &Spec, available: Option<u32>) -> Result<Vec<String>, SandboxError> {
    validate(spec)?;
    let have = available.unwrap_or(0);
    let mut gaps = Vec::new();
    for (needed, purpose) in needs(spec) {
        if have >= needed {
            continue;
        }
        if spec.landlock == Enforcement::Required {
            return Err(SandboxError::AbiTooLow {
                needed,
                available,
                purpose,
            });
        }
        gaps.push(format!(
            "NOT ENFORCED: {purpose} needs Landlock ABI {needed}, the kernel offers {}",
            abi_text(available)
        ));
    }
    if have == 0 {
        gaps.push(
            "NOT ENFORCED: no Landlock: the agent can read, write and execute anything its \
             user can"
                .into(),
        );
    }
    if let Network::PortsOnly { .. } = spec.network {
        gaps.push(
            "NOT ENFORCED: ports-only network (no network namespace): UDP and DNS are not \
             contained, and the allowed TCP ports are open to every address"
                .into(),
        );
    }
    if have < ABI_SCOPE {
        gaps.push(format!(
            "NOT ENFORCED: Landlock ABI {have} does not scope signals: the agent can signal \
             other processes of its user (outside a user namespace: its uid; inside one: the \
             user the namespace maps to)"
        ));
    }
    if have < ABI_UNIX && sys::unix_socket_filter().is_none() {
        gaps.push(format!(
            "NOT ENFORCED: Landlock ABI {have} cannot restrict connecting to Unix sockets by path \
             (e.g. /run/docker.sock) or, without a network namespace, abstract ones, and this \
             architecture has no seccomp filter for it"
        ));
    }
    for p in spec.fs.read.iter().chain(&spec.fs.exec) {
        if !p.exists() {
            gaps.push(format!("skipped: {} does not exist", p.display()));
        }
    }
    for p in &spec.fs.write {
        if !p.exists() {
            return Err(SandboxError::MissingWriteRoot(p.clone()));
        }
    }
    Ok(gaps)
}

fn validate(spec: &Spec) -> Result<(), SandboxError> {
    let bad = |m: String| Err(SandboxError::InvalidSpec(m));
    if spec.argv.is_empty() {
        return bad("no program to run".into());
    }
    let nul = |b: &[u8]| b.contains(&0);
    if spec.argv.iter().any(|a| nul(a.as_bytes())) {
        return bad("an argument contains NUL".into());
    }
    for (k, v) in &spec.env {
        if k.is_empty() || nul(k.as_bytes()) || k.as_bytes().contains(&b'=') || nul(v.as_bytes()) {
            return bad(format!("bad environment variable name {k:?}"));
        }
    }
    let paths = [&spec.fs.read, &spec.fs.write, &spec.fs.exec];
    for p in paths
        .into_iter()
        .flatten()
        .chain([&spec.cwd, &spec.init_exe])
    {
        if nul(p.as_os_str().as_bytes()) || !p.is_absolute() {
            return bad(format!("{} is not an absolute path", p.display()));
        }
    }
    if let Network::Isolated { relays } = &spec.network {
        let mut ports: Vec<u16> = relays.iter().map(|(p, _)| *p).collect();
        ports.sort_unstable();
        ports.dedup();
        if ports.len() != relays.len() || ports.contains(&0) {
            return bad("relay ports must be distinct and non-zero".into());
        }
        if let Some((_, p)) = relays.iter().find(|(_, p)| nul(p.as_os_str().as_bytes())) {
            return bad(format!("relay socket path {} contains NUL", p.display()));
        }
    }
    Ok(())
}

/// Runs the agent in the sandbox and waits for it. Returns its exit code, 128 + the signal
/// number when it was killed by one. Never runs the agent with less confinement than
/// [`preflight`] reported.
pub fn run(spec: &Spec) -> Result<i32, SandboxError> {
    run_inner(spec, None, || true)
}

/// As [`run`], but the init is started first (namespaces created, the init binary loaded) and
/// `go` is asked before it is told what to run, so a caller can prepare something else in the
/// meantime. When `go` says false, the init gets no spec and exits, nothing of the agent runs,
/// and the result is [`SandboxError::CalledOff`].
///
/// Call it on a thread that outlives the agent (as [`run`]): the init's parent-death signal is
/// tied to the thread that started it.
pub fn run_when(spec: &Spec, go: impl FnOnce() -> bool) -> Result<i32, SandboxError> {
    run_inner(spec, None, go)
}

/// As [`run`], with the Landlock ABI treated as at most `max_abi` (it can only lower what the
/// kernel offers, never raise it). For tests of the refusal and best-effort paths.
#[doc(hidden)]
pub fn run_with_abi_for_test(spec: &Spec, max_abi: u32) -> Result<i32, SandboxError> {
    run_inner(spec, Some(max_abi), || true)
}

/// Serialized form of [`Spec`] for the init: paths and strings as raw bytes, losslessly.
#[derive(Serialize, Deserialize)]
struct Wire {
    argv: Vec<Vec<u8>>,
    env: Vec<(Vec<u8>, Vec<u8>)>,
    cwd: Vec<u8>,
    read: Vec<Vec<u8>>,
    write: Vec<Vec<u8>>,
    exec: Vec<Vec<u8>>,
    /// The lowest ABI the init must find, else refuse (0 under best effort).
    min_abi: u32,
    /// Use at most this ABI.
    max_abi: Option<u32>,
    relays: Vec<(u16, Vec<u8>)>,
    /// `Some` for the ports-only network.
    ports: Option<Vec<u16>>,
}

fn bytes(p: &Path) -> Vec<u8> {
    p.as_os_str().as_bytes().to_vec()
}

fn paths(v: &[PathBuf]) -> Vec<Vec<u8>> {
    v.iter().map(|p| bytes(p)).collect()
}

impl Wire {
    fn new(spec: &Spec, max_abi: Option<u32>) -> Self {
        let min_abi = match spec.landlock {
            Enforcement::Required => needs(spec).iter().map(|(a, _)| *a).max().unwrap_or(0),
            Enforcement::BestEffort => 0,
        };
        let (relays, ports) = match &spec.network {
            Network::Isolated { relays } => (
                relays.iter().map(|(port, p)| (*port, bytes(p))).collect(),
                None,
            ),
            Network::PortsOnly { ports } => (Vec::new(), Some(ports.clone())),
        };
        Wire {
            argv: spec.argv.iter().map(|a| a.as_bytes().to_vec()).collect(),
            env: spec
                .env
                .iter()
                .map(|(k, v)| (k.as_bytes().to_vec(), v.as_bytes().to_vec()))
                .collect(),
            cwd: bytes(&spec.cwd),
            read: paths(&spec.fs.read),
            write: paths(&spec.fs.write),
            exec: paths(&spec.fs.exec),
            min_abi,
            max_abi,
            relays,
            ports,
        }
    }
}

pub(crate) fn os(b: &[u8]) -> OsString {
    OsString::from_vec(b.to_vec())
}

/// The namespaces the init's `pre_exec` creates, with everything it writes prepared beforehand.
enum Namespaces {
    None,
    /// Root: a network namespace only.
    Net,
    /// Unprivileged: user + network namespaces, uid and gid `0` inside mapped to ours.
    UserNet {
        uid_map: Vec<u8>,
        gid_map: Vec<u8>,
    },
}

/// Bound on the status text the init sends back.
const STATUS_MAX: u64 = 64 * 1024;

/// An init ready to start, with its pipes.
struct Prepared {
    cmd: Command,
    payload: Vec<u8>,
    spec_w: std::io::PipeWriter,
    status_r: std::io::PipeReader,
    /// The init's ends of the pipes, closed here once it is started.
    init_ends: (std::io::PipeReader, std::io::PipeWriter),
}

fn prepare(spec: &Spec, max_abi: Option<u32>) -> Result<Prepared, SandboxError> {
    let kernel = sys::landlock_abi();
    let available = match max_abi {
        Some(cap) => kernel.map(|k| k.min(cap)).filter(|v| *v > 0),
        None => kernel,
    };
    for gap in preflight_with(spec, available)? {
        tracing::warn!(target: "portcullis::sandbox", "{gap}");
    }
    let io = |what| move |source| SandboxError::Io { what, source };
    let (spec_r, spec_w) = std::io::pipe().map_err(io("creating the spec pipe"))?;
    let (status_r, status_w) = std::io::pipe().map_err(io("creating the status pipe"))?;
    let payload = serde_json::to_vec(&Wire::new(spec, max_abi))
        .map_err(|e| SandboxError::InvalidSpec(e.to_string()))?;

    let namespaces = match spec.network {
        Network::PortsOnly { .. } => Namespaces::None,
        Network::Isolated { .. } if sys::geteuid() == 0 => Namespaces::Net,
        Network::Isolated { .. } => Namespaces::UserNet {
            uid_map: format!("0 {} 1\n", sys::geteuid()).into_bytes(),
            gid_map: format!("0 {} 1\n", sys::getegid()).into_bytes(),
        },
    };
    let (spec_fd, status_fd) = (spec_r.as_raw_fd(), status_w.as_raw_fd());
    let parent = sys::getpid();
    let mut cmd = Command::new(&spec.init_exe);
    cmd.arg(init::SUBCOMMAND)
        .arg(spec_fd.to_string())
        .arg(status_fd.to_string())
        .env_clear();
    let hook = move || -> std::io::Result<()> {
        let fail = |what: &[u8], e: std::io::Error| {
            sys::write_raw(status_fd, what);
            e
        };
        sys::clear_cloexec(spec_fd)?;
        sys::clear_cloexec(status_fd)?;
        sys::set_parent_death_signal(libc::SIGTERM, parent)?;
        match &namespaces {
            Namespaces::None => {}
            Namespaces::Net => sys::unshare(libc::CLONE_NEWNET)
                .map_err(|e| fail(b"pre unshare(CLONE_NEWNET)\n", e))?,
            Namespaces::UserNet { uid_map, gid_map } => {
                sys::unshare(libc::CLONE_NEWUSER | libc::CLONE_NEWNET)
                    .map_err(|e| fail(b"pre unshare(CLONE_NEWUSER|CLONE_NEWNET)\n", e))?;
                sys::write_proc_file(c"/proc/self/setgroups", b"deny")
                    .map_err(|e| fail(b"pre writing /proc/self/setgroups\n", e))?;
                sys::write_proc_file(c"/proc/self/uid_map", uid_map)
                    .map_err(|e| fail(b"pre writing /proc/self/uid_map\n", e))?;
                sys::write_proc_file(c"/proc/self/gid_map", gid_map)
                    .map_err(|e| fail(b"pre writing /proc/self/gid_map\n", e))?;
            }
        }
        Ok(())
    };
    // SAFETY: the hook only issues raw system calls (fcntl, prctl, getppid, unshare, open,
    // write, close) on data prepared before the fork; it allocates nothing and takes no lock.
    unsafe { cmd.pre_exec(hook) };
    Ok(Prepared {
        cmd,
        payload,
        spec_w,
        status_r,
        init_ends: (spec_r, status_w),
    })
}

/// Why the init could not be started, from what its `pre_exec` hook said.
fn spawn_failed(
    spec: &Spec,
    status_r: &mut std::io::PipeReader,
    source: std::io::Error,
) -> SandboxError {
    let mut text = String::new();
    let _ = status_r.take(STATUS_MAX).read_to_string(&mut text);
    match text.lines().find_map(|l| l.strip_prefix("pre ")) {
        Some(step) => SandboxError::Namespace {
            step: step.to_string(),
            hint: if sys::geteuid() == 0 {
                ""
            } else {
                " (unprivileged user namespaces may be disabled: \
                 kernel.unprivileged_userns_clone, user.max_user_namespaces, or an LSM)"
            },
            source,
        },
        None => SandboxError::Spawn {
            exe: spec.init_exe.clone(),
            source,
        },
    }
}

/// Sends the spec and reads the init's report to its end (it closes the pipe once the
/// program runs, or on failure). Blocking.
fn exchange(
    mut spec_w: std::io::PipeWriter,
    payload: &[u8],
    status_r: std::io::PipeReader,
) -> Result<String, SandboxError> {
    // The init may have failed before reading; its report says why.
    let _ = spec_w.write_all(payload);
    drop(spec_w);
    let mut text = String::new();
    status_r
        .take(STATUS_MAX)
        .read_to_string(&mut text)
        .map_err(|source| SandboxError::Io {
            what: "reading the sandbox init's status",
            source,
        })?;
    Ok(text)
}

/// The init's report: `Ok(true)` when it confirmed the program runs confined, `Ok(false)` when
/// it said nothing, its error when it failed.
fn confirmed(report: &str) -> Result<bool, SandboxError> {
    let mut ok = false;
    for line in report.lines() {
        if let Some(msg) = line.strip_prefix("err ") {
            return Err(SandboxError::Init(msg.to_string()));
        }
        ok |= line == "ok";
    }
    Ok(ok)
}

fn exit_code(status: std::process::ExitStatus) -> i32 {
    status
        .code()
        .or_else(|| status.signal().map(|s| 128 + s))
        .unwrap_or(128)
}

fn run_inner(
    spec: &Spec,
    max_abi: Option<u32>,
    go: impl FnOnce() -> bool,
) -> Result<i32, SandboxError> {
    let Prepared {
        mut cmd,
        payload,
        spec_w,
        mut status_r,
        init_ends,
    } = prepare(spec, max_abi)?;
    let spawned = cmd.spawn();
    drop(init_ends);
    let mut child = spawned.map_err(|e| spawn_failed(spec, &mut status_r, e))?;
    let wait = |child: &mut std::process::Child| loop {
        match child.wait() {
            Ok(s) => break Ok(s),
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(source) => {
                break Err(SandboxError::Io {
                    what: "waiting for the sandbox init",
                    source,
                });
            }
        }
    };
    if !go() {
        // No spec: the init's read ends empty and it exits before starting anything.
        drop(spec_w);
        wait(&mut child)?;
        return Err(SandboxError::CalledOff);
    }
    let report = exchange(spec_w, &payload, status_r);
    let code = exit_code(wait(&mut child)?);
    if !confirmed(&report?)? {
        return Err(SandboxError::Init(format!(
            "the init exited (code {code}) before confirming the sandbox"
        )));
    }
    Ok(code)
}

/// Starts the program of `spec` in the sandbox with its stdin and stdout piped to this process
/// (its stderr is ours): for a program spoken to over them, such as an MCP server. Returns
/// once the program runs confined. The child is the sandbox's init: it exits with the
/// program's status (128 + signal), kills what the program left behind, and passes on
/// SIGTERM ([`terminate`]); killing it (or dropping the child) kills the program.
///
/// Call it on a runtime worker thread, not a blocking-pool one: the init's parent-death signal
/// is tied to the calling thread, and a worker lives as long as its runtime.
pub async fn spawn_piped(spec: &Spec) -> Result<tokio::process::Child, SandboxError> {
    let Prepared {
        cmd,
        payload,
        spec_w,
        mut status_r,
        init_ends,
    } = prepare(spec, None)?;
    let mut cmd = tokio::process::Command::from(cmd);
    cmd.stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .kill_on_drop(true);
    let spawned = cmd.spawn();
    drop(init_ends);
    let mut child = spawned.map_err(|e| spawn_failed(spec, &mut status_r, e))?;
    let report = tokio::task::spawn_blocking(move || exchange(spec_w, &payload, status_r))
        .await
        .unwrap_or_else(|e| {
            Err(SandboxError::Io {
                what: "reading the sandbox init's status",
                source: std::io::Error::other(e.to_string()),
            })
        });
    match report.and_then(|r| confirmed(&r)) {
        Ok(true) => Ok(child),
        Ok(false) => {
            let code = child.wait().await.map_or(128, exit_code);
            Err(SandboxError::Init(format!(
                "the init exited (code {code}) before confirming the sandbox"
            )))
        }
        Err(e) => {
            let _ = child.start_kill();
            let _ = child.wait().await;
            Err(e)
        }
    }
}

/// Asks the program in the sandbox of `init` (from [`spawn_piped`]) to end: SIGTERM to its
/// init, which passes it to the program's process group and, once the program is gone, kills
/// whatever is left of it. Nothing happens when the init was already reaped.
pub fn terminate(init: &tokio::process::Child) {
    if let Some(pid) = init.id().and_then(|p| libc::pid_t::try_from(p).ok()) {
        sys::kill(pid, libc::SIGTERM);
    }
}

/// The body of the hidden `__sandbox-init` subcommand. Not for direct use.
pub fn init_main() -> i32 {
    init::main()
}
