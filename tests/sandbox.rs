//! `portcullis::sandbox` against the real kernel: every escape an agent would try from inside
//! `portcullis run` must fail, and what the sandbox grants must work. Each case runs a real
//! `/bin/sh`, bash or Python under the real init (`portcullis __sandbox-init`), with Landlock,
//! a network namespace and the relay. The agent's output goes to a file in its workspace.
//! Needs Landlock (ABI >= 4), network namespaces and, for the unprivileged case, root to become
//! `nobody` (then user namespaces).

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "tests fail loudly"
)]

use std::ffi::OsString;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpListener;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::UnixListener;
use std::path::{Path, PathBuf};
use std::process::Command;

use portcullis::sandbox::{self, Enforcement, FsRules, Network, SandboxError, Spec};
use tempfile::TempDir;

const PYTHON: &str = "/usr/bin/python3";
/// What programs need to start, without /home, /root, /tmp or /proc.
const SYSTEM_READ: &[&str] = &["/usr", "/lib", "/lib64", "/bin", "/sbin", "/etc"];
const SYSTEM_EXEC: &[&str] = &["/usr", "/lib", "/lib64", "/bin", "/sbin"];
const SECRET: &str = "-----BEGIN OPENSSH PRIVATE KEY----- not really\n";

/// Set by `unprivileged_isolation` for its re-run as `nobody`: where it can reach the binary.
const INIT_EXE_VAR: &str = "PORTCULLIS_SANDBOX_TEST_INIT_EXE";

fn init_exe() -> PathBuf {
    std::env::var_os(INIT_EXE_VAR)
        .map(PathBuf::from)
        .unwrap_or_else(|| env!("CARGO_BIN_EXE_portcullis").into())
}

/// A workspace (the write root) and, outside every root, a `~/.ssh`-like directory.
struct Setup {
    ws: TempDir,
    home: TempDir,
}

impl Setup {
    fn new() -> Self {
        let home = tempfile::tempdir().unwrap();
        std::fs::create_dir(home.path().join(".ssh")).unwrap();
        std::fs::write(home.path().join(".ssh/id_rsa"), SECRET).unwrap();
        Setup {
            ws: tempfile::tempdir().unwrap(),
            home,
        }
    }

    fn ws(&self) -> &Path {
        self.ws.path()
    }

    fn secret(&self) -> PathBuf {
        self.home.path().join(".ssh/id_rsa")
    }

    fn ssh_dir(&self) -> PathBuf {
        self.home.path().join(".ssh")
    }

    /// `argv` confined to the system roots plus the workspace (read/write), isolated network.
    fn spec(&self, argv: &[&str]) -> Spec {
        let paths = |v: &[&str]| v.iter().map(PathBuf::from).collect::<Vec<_>>();
        Spec {
            init_exe: init_exe(),
            argv: argv.iter().map(OsString::from).collect(),
            env: vec![
                ("PATH".into(), "/usr/bin:/bin".into()),
                ("HOME".into(), self.ws().into()),
                ("LANG".into(), "C.UTF-8".into()),
            ],
            cwd: self.ws().to_path_buf(),
            fs: FsRules {
                read: paths(SYSTEM_READ),
                write: vec![self.ws().to_path_buf(), "/dev/null".into()],
                exec: paths(SYSTEM_EXEC),
            },
            landlock: Enforcement::Required,
            network: Network::Isolated { relays: Vec::new() },
        }
    }

    /// `sh -c SCRIPT` with stdout and stderr to `out` in the workspace.
    fn sh(&self, script: &str) -> Spec {
        self.shell("/bin/sh", script)
    }

    /// `python3 -c CODE` with stdout and stderr to `out` in the workspace.
    fn python(&self, code: &str) -> Spec {
        self.spec(&[
            "/bin/sh",
            "-c",
            "exec >out 2>&1; exec \"$0\" -c \"$1\"",
            PYTHON,
            code,
        ])
    }

    fn bash(&self, script: &str) -> Spec {
        self.shell("/bin/bash", script)
    }

    fn shell(&self, shell: &str, script: &str) -> Spec {
        self.spec(&[shell, "-c", &format!("exec >out 2>&1\n{script}")])
    }

    /// Runs `spec`, which must start; its exit code and the workspace's `out`.
    fn run(&self, spec: &Spec) -> (i32, String) {
        let code = sandbox::run(spec).unwrap_or_else(|e| panic!("{e}"));
        let out = std::fs::read_to_string(self.ws().join("out")).unwrap_or_default();
        (code, out)
    }

    fn secret_intact(&self) {
        assert_eq!(std::fs::read_to_string(self.secret()).unwrap(), SECRET);
        let names: Vec<_> = std::fs::read_dir(self.ssh_dir())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(
            names,
            ["id_rsa"],
            "nothing was added to the secret directory"
        );
    }
}

fn lines(out: &str) -> Vec<&str> {
    out.lines().collect()
}

#[test]
fn probe_reports_what_this_kernel_offers() {
    let p = sandbox::probe();
    let abi = p.landlock_abi.expect("Landlock is available");
    assert!(abi >= 4, "Landlock ABI {abi}; these tests need 4");
    assert!(p.net_namespaces, "{p:?}");
    assert!(p.user_namespaces, "{p:?}");
}

#[test]
fn writes_inside_the_workspace_work_and_outside_are_denied() {
    let s = Setup::new();
    let secret = s.secret();
    let ssh = s.ssh_dir();
    let (code, out) = s.run(&s.sh(&format!(
        "echo made > inside.txt && cat inside.txt
         mkdir sub && echo nested > sub/f && rm sub/f && rmdir sub && echo dirs-ok
         echo x 2>/dev/null > {ssh}/new && echo WROTE-NEW || echo create-denied
         echo x 2>/dev/null >> {secret} && echo APPENDED || echo append-denied
         truncate -s 0 {secret} 2>/dev/null && echo TRUNCATED || echo truncate-denied
         rm -f {secret} 2>/dev/null && echo REMOVED || echo remove-denied
         mv inside.txt {ssh}/ 2>/dev/null && echo MOVED || echo move-denied
         mkdir {ssh}/d 2>/dev/null && echo MKDIR || echo mkdir-denied
         ln -s /etc/passwd {ssh}/l 2>/dev/null && echo SYMLINKED || echo symlink-denied
         echo x 2>/dev/null > /etc/portcullis-escape && echo ETC || echo etc-denied",
        ssh = ssh.display(),
        secret = secret.display(),
    )));
    assert_eq!(code, 0, "{out}");
    assert_eq!(
        lines(&out),
        [
            "made",
            "dirs-ok",
            "create-denied",
            "append-denied",
            "truncate-denied",
            "remove-denied",
            "move-denied",
            "mkdir-denied",
            "symlink-denied",
            "etc-denied"
        ]
    );
    assert_eq!(
        std::fs::read_to_string(s.ws().join("inside.txt")).unwrap(),
        "made\n"
    );
    assert!(!Path::new("/etc/portcullis-escape").exists());
    s.secret_intact();
}

#[test]
fn the_secret_directory_cannot_be_read_directly_through_symlinks_or_proc() {
    let s = Setup::new();
    // Planted from outside: a workspace path swapped for a symlink to the secret.
    std::os::unix::fs::symlink(s.secret(), s.ws().join("notes.txt")).unwrap();
    let secret = s.secret().display().to_string();
    let (code, out) = s.run(&s.sh(&format!(
        "cat {secret} 2>/dev/null || echo read-denied
         ls {ssh} >/dev/null 2>&1 || echo list-denied
         cat notes.txt 2>/dev/null || echo planted-symlink-denied
         ln -s {secret} mine && cat mine 2>/dev/null || echo own-symlink-denied
         cat /proc/self/root{secret} 2>/dev/null || echo proc-root-denied
         cat $HOME/../../../..{secret} 2>/dev/null || echo dotdot-denied
         test -r /etc/passwd && echo system-readable",
        ssh = s.ssh_dir().display(),
    )));
    assert_eq!(code, 0, "{out}");
    assert!(!out.contains("BEGIN OPENSSH"), "{out}");
    assert_eq!(
        lines(&out),
        [
            "read-denied",
            "list-denied",
            "planted-symlink-denied",
            "own-symlink-denied",
            "proc-root-denied",
            "dotdot-denied",
            "system-readable"
        ]
    );
}

#[test]
fn hard_links_and_renames_across_directories_are_refused() {
    let s = Setup::new();
    let (code, out) = s.run(&s.sh(&format!(
        "ln {secret} stolen 2>/dev/null && echo LINKED || echo link-denied
         echo a > a && mkdir d && ln a d/b 2>/dev/null && echo LINKED-IN-WS || echo cross-dir-link-denied
         ln a same-dir-link && echo same-dir-link-ok",
        secret = s.secret().display(),
    )));
    assert_eq!(code, 0, "{out}");
    assert_eq!(
        lines(&out),
        ["link-denied", "cross-dir-link-denied", "same-dir-link-ok"]
    );
    assert!(!s.ws().join("stolen").exists());
    s.secret_intact();
}

#[test]
fn no_route_out_of_the_isolated_network() {
    let s = Setup::new();
    let py = r#"
import socket, errno
def tcp(addr):
    try:
        socket.create_connection(addr, timeout=5)
        return "CONNECTED"
    except OSError as e:
        return errno.errorcode.get(e.errno, str(e))
def udp(addr):
    try:
        u = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        u.sendto(b"\x12\x34\x01\x00\x00\x01\x00\x00\x00\x00\x00\x00\x07example\x03com\x00\x00\x01\x00\x01", addr)
        return "SENT"
    except OSError as e:
        return errno.errorcode.get(e.errno, str(e))
# Only loopback exists, else stop before anything could leave the machine.
if socket.if_nameindex() != [(1, "lo")]:
    raise SystemExit("not isolated: %r" % (socket.if_nameindex(),))
print("tcp-doc", tcp(("203.0.113.1", 80)))
print("tcp-metadata", tcp(("169.254.169.254", 80)))
print("tcp-v6", tcp(("2001:db8::1", 443)))
print("tcp-loopback-unrelayed", tcp(("127.0.0.1", 8080)))
print("udp-dns", udp(("8.8.8.8", 53)))
print("interfaces", sorted(n for _, n in socket.if_nameindex()))
"#;
    let (code, out) = s.run(&s.python(py));
    assert_eq!(code, 0, "{out}");
    assert_eq!(
        lines(&out),
        [
            "tcp-doc ENETUNREACH",
            "tcp-metadata ENETUNREACH",
            "tcp-v6 ENETUNREACH",
            "tcp-loopback-unrelayed ECONNREFUSED",
            "udp-dns ENETUNREACH",
            "interfaces ['lo']"
        ]
    );

    let (code, out) = s.run(&s.bash(
        "(exec 3<>/dev/tcp/203.0.113.1/80) 2>/dev/null && echo TCP-OUT || echo dev-tcp-out-failed
         (exec 3<>/dev/tcp/127.0.0.1/9) 2>/dev/null && echo TCP-LOCAL || echo dev-tcp-local-refused
         getent hosts example.com >/dev/null 2>&1; echo getent-exit=$?",
    ));
    assert_eq!(code, 0, "{out}");
    assert_eq!(
        lines(&out),
        [
            "dev-tcp-out-failed",
            "dev-tcp-local-refused",
            "getent-exit=2"
        ]
    );
}

#[test]
fn unix_sockets_outside_cannot_be_reached() {
    // A host service listening on a path (think /run/docker.sock), outside every root.
    let s = Setup::new();
    let host_dir = tempfile::tempdir().unwrap();
    let host_sock = host_dir.path().join("host.sock");
    let host = UnixListener::bind(&host_sock).unwrap();
    let py = format!(
        r#"
import ctypes, errno, socket
def run(f):
    try:
        f()
        return "ok"
    except OSError as e:
        return errno.errorcode.get(e.errno, str(e))
def connect():
    socket.socket(socket.AF_UNIX, socket.SOCK_STREAM).connect({path:?})
def abstract():
    socket.socket(socket.AF_UNIX, socket.SOCK_STREAM).connect("\0portcullis-test")
print("path", run(connect))
print("abstract", run(abstract))
a, b = socket.socketpair()
a.sendall(b"x")
print("socketpair", b.recv(1).decode())
libc = ctypes.CDLL(None, use_errno=True)
params = ctypes.create_string_buffer(120)
r = libc.syscall(425, 1, params)
print("io_uring_setup", r, errno.errorcode.get(ctypes.get_errno()))
"#,
        path = host_sock.to_str().unwrap(),
    );
    let (code, out) = s.run(&s.python(&py));
    assert_eq!(code, 0, "{out}");
    let abi = sandbox::probe().landlock_abi.unwrap();
    if abi < 9 {
        // The seccomp filter: no Unix socket can be created.
        assert_eq!(
            lines(&out),
            [
                "path EACCES",
                "abstract EACCES",
                "socketpair x",
                "io_uring_setup -1 EACCES"
            ]
        );
    } else {
        assert!(out.starts_with("path EACCES\n"), "{out}");
    }
    host.set_nonblocking(true).unwrap();
    assert!(host.accept().is_err(), "nothing reached the host socket");
}

/// An echo server on a Unix socket: each connection gets back what it sent, then EOF after the
/// peer's EOF (so a half-close must travel both ways through the relay).
fn echo_server(path: &Path) -> std::thread::JoinHandle<usize> {
    let listener = UnixListener::bind(path).unwrap();
    std::thread::spawn(move || {
        let mut served = 0;
        // Two connections per test: the bash line echo and the Python half-close.
        for conn in listener.incoming().take(2) {
            let mut conn = conn.unwrap();
            let mut buf = [0u8; 4096];
            loop {
                let n = conn.read(&mut buf).unwrap();
                if n == 0 {
                    break;
                }
                conn.write_all(&buf[..n]).unwrap();
            }
            conn.shutdown(std::net::Shutdown::Write).unwrap();
            served += 1;
        }
        served
    })
}

#[test]
fn the_relay_carries_loopback_connections_to_the_unix_socket_outside() {
    let s = Setup::new();
    let sock_dir = tempfile::tempdir().unwrap();
    let sock = sock_dir.path().join("egress.sock");
    let server = echo_server(&sock);
    let mut spec = s.bash(
        "exec 3<>/dev/tcp/127.0.0.1/3128; echo hi >&3; read -r l <&3; echo $l; exec 3>&-
         exec python3 -c '
import socket
c = socket.create_connection((\"127.0.0.1\", 3128))
c.sendall(b\"half-closed \" * 1000)
c.shutdown(socket.SHUT_WR)
got = b\"\"
while True:
    b = c.recv(65536)
    if not b: break
    got += b
print(len(got), got[:12].decode())
'",
    );
    spec.network = Network::Isolated {
        relays: vec![(3128, sock.clone())],
    };
    let (code, out) = s.run(&spec);
    assert_eq!(code, 0, "{out}");
    assert_eq!(lines(&out), ["hi", "12000 half-closed "]);
    assert_eq!(server.join().unwrap(), 2);
}

#[test]
fn the_agent_has_no_privileges_and_proc_does_not_open_the_secret() {
    let s = Setup::new();
    let mut spec = s.sh(&format!(
        "grep -E '^(NoNewPrivs|CapInh|CapPrm|CapEff|CapBnd|CapAmb):' /proc/self/status
         cat /proc/self/root{secret} 2>/dev/null || echo proc-root-denied
         cat /proc/$PPID/root{secret} 2>/dev/null || echo init-root-denied
         tr '\\0' '\\n' 2>/dev/null < /proc/$PPID/environ >/dev/null || echo init-environ-denied
         cat /proc/1/root{secret} 2>/dev/null || echo pid1-root-denied
         kill -0 $PPID 2>/dev/null && echo SIGNALLED-INIT || echo signal-init-denied
         unshare -Um --propagation private true 2>&1 || echo nested-mount-denied",
        secret = s.secret().display(),
    ));
    spec.fs.read.push("/proc".into());
    let (code, out) = s.run(&spec);
    assert_eq!(code, 0, "{out}");
    assert!(!out.contains("BEGIN OPENSSH"), "{out}");
    let zero = "0000000000000000";
    assert_eq!(
        lines(&out),
        [
            "CapInh:\t".to_string() + zero,
            "CapPrm:\t".to_string() + zero,
            "CapEff:\t".to_string() + zero,
            "CapBnd:\t".to_string() + zero,
            "CapAmb:\t".to_string() + zero,
            "NoNewPrivs:\t1".to_string(),
            "proc-root-denied".to_string(),
            "init-root-denied".to_string(),
            "init-environ-denied".to_string(),
            "pid1-root-denied".to_string(),
            "signal-init-denied".to_string(),
            // A new user + mount namespace is allowed, but mount(2) in it is not.
            "unshare: cannot change root filesystem propagation: Operation not permitted"
                .to_string(),
            "nested-mount-denied".to_string(),
        ]
    );
    // The same outside the sandbox works: the denial is the sandbox's.
    assert!(
        Command::new("unshare")
            .args(["-Um", "--propagation", "private", "true"])
            .status()
            .unwrap()
            .success()
    );
}

/// Field 6 of /proc/self/stat: the session id.
fn own_sid() -> i64 {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap();
    let after_comm = &stat[stat.rfind(')').unwrap() + 2..];
    after_comm.split(' ').nth(3).unwrap().parse().unwrap()
}

#[test]
fn the_agent_runs_in_a_new_session_with_exactly_its_environment() {
    let s = Setup::new();
    let mut spec = s.spec(&[
        PYTHON,
        "-c",
        "import os, json\n\
         open('out', 'w').write(json.dumps([os.getsid(0), os.getpid(), os.getpgid(0), \
         os.getcwd(), dict(os.environ)]))",
    ]);
    spec.env.push(("ONLY_THIS".into(), "yes".into()));
    let (code, out) = s.run(&spec);
    assert_eq!(code, 0, "{out}");
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    let (sid, pid, pgid) = (
        v[0].as_i64().unwrap(),
        v[1].as_i64().unwrap(),
        v[2].as_i64(),
    );
    assert_eq!(sid, pid, "the agent leads its own session");
    assert_eq!(pgid, Some(pid));
    assert_ne!(sid, own_sid());
    assert_eq!(v[3], s.ws().to_str().unwrap());
    let ws = s.ws().to_str().unwrap();
    assert_eq!(
        v[4],
        serde_json::json!({"PATH": "/usr/bin:/bin", "HOME": ws, "LANG": "C.UTF-8", "ONLY_THIS": "yes"})
    );
}

#[test]
fn exit_codes_and_signals_propagate() {
    let s = Setup::new();
    assert_eq!(s.run(&s.sh("exit 7")).0, 7);
    assert_eq!(s.run(&s.sh("kill -KILL $$")).0, 128 + 9);
    assert_eq!(s.run(&s.sh("kill -TERM $$")).0, 128 + 15);
    assert_eq!(s.run(&s.spec(&["/bin/true"])).0, 0);
}

#[test]
fn sigterm_to_the_init_is_forwarded_to_the_agent() {
    let s = Setup::new();
    let fifo = s.ws().join("ready");
    assert!(
        Command::new("mkfifo")
            .arg(&fifo)
            .status()
            .unwrap()
            .success()
    );
    let spec = s.sh("echo $PPID > ready; exec sleep 60");
    let runner = std::thread::spawn(move || sandbox::run(&spec));
    // Opening the FIFO blocks until the agent opens it: the agent is running.
    let mut init_pid = String::new();
    BufReader::new(std::fs::File::open(&fifo).unwrap())
        .read_line(&mut init_pid)
        .unwrap();
    assert!(
        Command::new("kill")
            .args(["-TERM", init_pid.trim()])
            .status()
            .unwrap()
            .success()
    );
    assert_eq!(runner.join().unwrap().unwrap(), 128 + 15);
}

#[test]
fn programs_written_into_the_workspace_cannot_be_executed() {
    let s = Setup::new();
    std::fs::copy("/bin/true", s.ws().join("mytrue")).unwrap();
    let err = sandbox::run(&s.spec(&[s.ws().join("mytrue").to_str().unwrap()])).unwrap_err();
    assert!(
        matches!(&err, SandboxError::Init(m) if m.contains("Permission denied")),
        "{err}"
    );
    let (code, out) = s.run(&s.sh("./mytrue; echo exit=$?"));
    assert_eq!(
        (code, out.trim_end().rsplit('\n').next()),
        (0, Some("exit=126"))
    );
}

#[test]
fn required_landlock_refuses_below_the_needed_abi_and_best_effort_starts() {
    let s = Setup::new();
    let probe_ws = |spec: &Spec| std::fs::write(spec.cwd.join("out"), "").unwrap();

    // The filesystem rules need ABI 3 (truncate control).
    let spec = s.sh("echo started");
    probe_ws(&spec);
    let err = sandbox::run_with_abi_for_test(&spec, 2).unwrap_err();
    assert!(
        matches!(
            err,
            SandboxError::AbiTooLow {
                needed: 3,
                available: Some(2),
                ..
            }
        ),
        "{err}"
    );
    assert!(err.to_string().contains("refusing to start"), "{err}");
    assert_eq!(std::fs::read_to_string(s.ws().join("out")).unwrap(), "");

    // The ports-only network needs ABI 4.
    let mut spec = s.sh("echo started");
    spec.network = Network::PortsOnly { ports: vec![3128] };
    let err = sandbox::run_with_abi_for_test(&spec, 3).unwrap_err();
    assert!(
        matches!(
            err,
            SandboxError::AbiTooLow {
                needed: 4,
                available: Some(3),
                ..
            }
        ),
        "{err}"
    );
    assert_eq!(std::fs::read_to_string(s.ws().join("out")).unwrap(), "");

    // Best effort starts with what the (capped) kernel offers: ABI 3 still confines files.
    spec.landlock = Enforcement::BestEffort;
    let gaps = sandbox::preflight(&spec).unwrap();
    assert!(
        gaps.iter().any(|g| g.contains("UDP")),
        "ports-only is announced as weaker: {gaps:?}"
    );
    spec.argv[2] = format!(
        "exec >out 2>&1; echo started; cat {} 2>/dev/null || echo read-denied",
        s.secret().display()
    )
    .into();
    assert_eq!(sandbox::run_with_abi_for_test(&spec, 3).unwrap(), 0);
    assert_eq!(
        lines(&std::fs::read_to_string(s.ws().join("out")).unwrap()),
        ["started", "read-denied"]
    );
}

#[test]
fn ports_only_allows_connect_to_the_listed_ports_and_no_bind() {
    let s = Setup::new();
    let allowed = TcpListener::bind("127.0.0.1:0").unwrap();
    let other = TcpListener::bind("127.0.0.1:0").unwrap();
    let (a, o) = (
        allowed.local_addr().unwrap().port(),
        other.local_addr().unwrap().port(),
    );
    let py = format!(
        r#"
import socket, errno
def run(f):
    try:
        f()
        return "ok"
    except OSError as e:
        return errno.errorcode.get(e.errno, str(e))
print("allowed", run(lambda: socket.create_connection(("127.0.0.1", {a}), timeout=5).close()))
print("other", run(lambda: socket.create_connection(("127.0.0.1", {o}), timeout=5).close()))
print("bind", run(lambda: socket.socket().bind(("127.0.0.1", 0))))
"#
    );
    let mut spec = s.python(&py);
    spec.network = Network::PortsOnly { ports: vec![a] };
    let (code, out) = s.run(&spec);
    assert_eq!(code, 0, "{out}");
    assert_eq!(lines(&out), ["allowed ok", "other EACCES", "bind EACCES"]);
    allowed.set_nonblocking(true).unwrap();
    assert!(allowed.accept().is_ok(), "the allowed connection arrived");
    other.set_nonblocking(true).unwrap();
    assert!(other.accept().is_err(), "nothing reached the other port");
}

#[test]
fn a_missing_write_root_refuses_and_a_missing_read_root_is_skipped() {
    let s = Setup::new();
    let mut spec = s.sh("echo ran");
    spec.fs.write.push(s.ws().join("does-not-exist"));
    let err = sandbox::run(&spec).unwrap_err();
    assert!(matches!(err, SandboxError::MissingWriteRoot(_)), "{err}");

    let mut spec = s.sh("echo ran");
    spec.fs.read.push("/nonexistent-portcullis-root".into());
    let gaps = sandbox::preflight(&spec).unwrap();
    assert!(
        gaps.iter()
            .any(|g| g.contains("/nonexistent-portcullis-root")),
        "{gaps:?}"
    );
    assert_eq!(s.run(&spec), (0, "ran\n".to_string()));
}

#[test]
fn a_program_that_cannot_start_is_an_error_not_an_exit_code() {
    let s = Setup::new();
    let err = sandbox::run(&s.spec(&["/nonexistent/agent"])).unwrap_err();
    assert!(
        matches!(&err, SandboxError::Init(m) if m.contains("/nonexistent/agent")),
        "{err}"
    );
}

/// The isolation checks of an unprivileged user: run by `unprivileged_isolation` as `nobody`
/// (this same test binary, re-executed under `setpriv`), or directly when not root.
fn isolation_scenario() -> String {
    let s = Setup::new();
    let sock_dir = tempfile::tempdir().unwrap();
    let sock = sock_dir.path().join("egress.sock");
    let server = echo_server(&sock);
    let mut spec = s.bash(&format!(
        "python3 -c 'import socket; assert socket.if_nameindex() == [(1, \"lo\")]' || exit 99
         exec 3<>/dev/tcp/127.0.0.1/3128; echo relayed >&3; read -r l <&3; echo $l; exec 3>&-
         (exec 3<>/dev/tcp/127.0.0.1/3128; exec 3>&-)
         (exec 3<>/dev/tcp/203.0.113.1/80) 2>/dev/null && echo TCP-OUT || echo tcp-out-failed
         cat {secret} 2>/dev/null || echo read-denied
         echo x 2>/dev/null > {ssh}/new && echo WROTE || echo write-denied
         grep -E '^(CapEff|CapBnd|NoNewPrivs):' /proc/self/status
         cat /proc/self/root{secret} 2>/dev/null || echo proc-root-denied",
        secret = s.secret().display(),
        ssh = s.ssh_dir().display(),
    ));
    spec.fs.read.push("/proc".into());
    spec.network = Network::Isolated {
        relays: vec![(3128, sock)],
    };
    let (code, out) = s.run(&spec);
    assert_eq!(code, 0, "{out}");
    assert_eq!(
        lines(&out),
        [
            "relayed",
            "tcp-out-failed",
            "read-denied",
            "write-denied",
            "CapEff:\t0000000000000000",
            "CapBnd:\t0000000000000000",
            "NoNewPrivs:\t1",
            "proc-root-denied"
        ]
    );
    assert_eq!(server.join().unwrap(), 2);
    s.secret_intact();
    out
}

#[test]
fn unprivileged_isolation() {
    const AS_NOBODY: &str = "PORTCULLIS_SANDBOX_TEST_AS_NOBODY";
    let uid = {
        use std::os::unix::fs::MetadataExt;
        std::fs::metadata("/proc/self").unwrap().uid()
    };
    if std::env::var_os(AS_NOBODY).is_some() || uid != 0 {
        assert_ne!(uid, 0, "the unprivileged path runs without root");
        let p = sandbox::probe();
        assert!(p.user_namespaces && p.net_namespaces, "{p:?}");
        isolation_scenario();
        println!("UNPRIVILEGED-SANDBOX-OK");
        return;
    }
    // Root: re-run this test as nobody, with binaries nobody can reach (the target directory
    // may sit below a directory only root can enter).
    let bin_dir = tempfile::tempdir().unwrap();
    std::fs::set_permissions(bin_dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let exe = reachable_by_nobody(&std::env::current_exe().unwrap(), bin_dir.path());
    let init = reachable_by_nobody(Path::new(env!("CARGO_BIN_EXE_portcullis")), bin_dir.path());
    let out = Command::new("setpriv")
        .args(["--reuid=65534", "--regid=65534", "--clear-groups", "--"])
        .arg(&exe)
        .args([
            "unprivileged_isolation",
            "--exact",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(AS_NOBODY, "1")
        .env(INIT_EXE_VAR, &init)
        .env("TMPDIR", "/tmp")
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && stdout.contains("UNPRIVILEGED-SANDBOX-OK"),
        "as nobody: {}\n{stdout}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
}

/// `path` if every directory above it is searchable by others and it is executable by them,
/// else a hard link (or copy) of it in `dir`.
fn reachable_by_nobody(path: &Path, dir: &Path) -> PathBuf {
    let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode();
    let searchable = path.ancestors().skip(1).all(|d| mode(d) & 0o001 != 0);
    if searchable && mode(path) & 0o005 == 0o005 {
        return path.to_path_buf();
    }
    let dst = dir.join(path.file_name().unwrap());
    if mode(path) & 0o005 != 0o005 || std::fs::hard_link(path, &dst).is_err() {
        std::fs::copy(path, &dst).unwrap();
        std::fs::set_permissions(&dst, std::fs::Permissions::from_mode(0o755)).unwrap();
    }
    dst
}

#[test]
fn a_sandbox_called_off_before_it_runs_starts_nothing() {
    let s = Setup::new();
    let marker = s.ws().join("ran");
    let spec = s.spec(&["/bin/sh", "-c", &format!("touch {}", marker.display())]);
    let err = sandbox::run_when(&spec, || false).unwrap_err();
    assert!(matches!(err, SandboxError::CalledOff), "{err}");
    assert!(
        !marker.exists(),
        "the program ran although the sandbox was called off"
    );
    // The same spec, told to go, does run: the marker is the program's and nothing else's.
    assert_eq!(sandbox::run_when(&spec, || true).unwrap(), 0);
    assert!(marker.exists());
}
