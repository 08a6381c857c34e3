//! "External hosts" for the egress tests: two network namespaces joined by a veth pair, with
//! real servers on the far side (`tests/egress-fixtures/hosts.py`). Needs root.
//!
//! * `px` is where the proxy under test and its clients run (`Net::px`). Its `/etc/resolv.conf`
//!   points at the test DNS server (203.0.113.53) and its `/etc/hosts` knows only `localhost`,
//!   so names resolve exactly as the fixture table says (see `ip netns exec`'s `/etc/netns`).
//! * `ext` is the internet: HTTP on 203.0.113.10:80 and :8080, 203.0.113.20:80,
//!   198.51.100.10:80, [2001:db8::10]:80, 10.99.0.10:80 (private) and 100.64.0.10:80 (CGNAT);
//!   HTTPS on 203.0.113.10:443 (`ext.test`, `www.ext.test`, 203.0.113.10; CA at
//!   `Net::ca_pem_path`); an SSH-like banner server on 203.0.113.10:22 (banner, then echo); DNS
//!   on 203.0.113.53:53 (UDP).
//!
//! All addresses are on-link subnets of the one veth pair; there is no default route, so a
//! connection to any other address fails at once (network unreachable) instead of hanging.
//!
//! Every accepted TCP connection and every DNS query is one JSON line in a log the servers
//! flush before serving; `hits` and `dns_queries` count them.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "a test harness fails loudly"
)]

use std::ffi::OsStr;
use std::fs;
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use serde_json::Value;

/// The HTTP/HTTPS/banner/DNS host of the `ext` side.
pub const EXT_IP: &str = "203.0.113.10";
/// A second public HTTP host.
pub const EXT2_IP: &str = "203.0.113.20";
/// A host in another public range.
pub const EXT3_IP: &str = "198.51.100.10";
/// The IPv6 HTTP host.
pub const EXT6_IP: &str = "2001:db8::10";
/// The DNS server (UDP 53).
pub const DNS_IP: &str = "203.0.113.53";
/// A reachable private (RFC 1918) HTTP host.
pub const PRIVATE_IP: &str = "10.99.0.10";
/// A reachable CGNAT (RFC 6598) HTTP host.
pub const CGNAT_IP: &str = "100.64.0.10";

/// Addresses of the `px` end of the veth pair.
const PX_ADDRS: [&str; 5] = [
    "203.0.113.1/24",
    "198.51.100.1/24",
    "10.99.0.1/24",
    "100.64.0.1/24",
    "2001:db8::1/64",
];
/// Addresses of the `ext` end.
const EXT_ADDRS: [&str; 7] = [
    "203.0.113.10/24",
    "203.0.113.20/24",
    "203.0.113.53/24",
    "198.51.100.10/24",
    "10.99.0.10/24",
    "100.64.0.10/24",
    "2001:db8::10/64",
];
const EXT_HTTP: [&str; 7] = [
    "203.0.113.10:80",
    "203.0.113.10:8080",
    "203.0.113.20:80",
    "198.51.100.10:80",
    "[2001:db8::10]:80",
    "10.99.0.10:80",
    "100.64.0.10:80",
];
const EXT_HTTPS: &str = "203.0.113.10:443";
const EXT_BANNER: &str = "203.0.113.10:22";
const EXT_DNS: &str = "203.0.113.53:53";

/// Prefix of every namespace this harness makes: `pcl<pid>-<n>-px` / `pcl<pid>-<n>-ext`.
const PREFIX: &str = "pcl";

static NEXT: AtomicUsize = AtomicUsize::new(0);
static PRUNED: std::sync::Once = std::sync::Once::new();

/// One topology: the two namespaces, the fixture servers, the CA. Dropping it kills the
/// servers and deletes the namespaces.
pub struct Net {
    px: String,
    ext: String,
    dir: tempfile::TempDir,
    /// Fixture processes, and their stdin (closing it also ends them).
    children: Mutex<Vec<(Child, Option<ChildStdin>)>>,
    /// Log files the fixture processes append to.
    logs: Mutex<Vec<PathBuf>>,
}

impl Net {
    /// Builds the namespaces and starts the `ext` fixture servers; returns once all listen.
    pub fn new() -> Net {
        PRUNED.call_once(prune_stale);
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let base = format!("{PREFIX}{}-{n}", std::process::id());
        let dir = tempfile::Builder::new()
            .prefix("portcullis-netns-")
            .tempdir()
            .expect("tempdir");
        let net = Net {
            px: format!("{base}-px"),
            ext: format!("{base}-ext"),
            dir,
            children: Mutex::new(Vec::new()),
            logs: Mutex::new(Vec::new()),
        };
        net.build();
        net.write_certs();
        let d = net.dir.path();
        let mut args: Vec<String> = Vec::new();
        for a in EXT_HTTP {
            args.extend(["--http".into(), a.into()]);
        }
        args.extend(["--https".into(), EXT_HTTPS.into()]);
        args.extend(["--cert".into(), path_str(&d.join("leaf.pem"))]);
        args.extend(["--key".into(), path_str(&d.join("leaf.key"))]);
        args.extend(["--banner".into(), EXT_BANNER.into()]);
        args.extend(["--dns".into(), EXT_DNS.into()]);
        net.start_fixture(false, "ext", &args);
        net
    }

    /// The `px` namespace's name.
    pub fn px_name(&self) -> &str {
        &self.px
    }

    /// The `ext` namespace's name.
    pub fn ext_name(&self) -> &str {
        &self.ext
    }

    /// A temporary directory that lives as long as this `Net` (certificates, logs).
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// `ip netns exec <px> <program>`; the caller adds arguments. Proxy variables
    /// (`http_proxy`, `HTTPS_PROXY`, `no_proxy`, …) are removed from its environment.
    pub fn px(&self, program: impl AsRef<OsStr>) -> Command {
        exec_in(&self.px, program.as_ref())
    }

    /// `ip netns exec <ext> <program>`, likewise.
    pub fn ext(&self, program: impl AsRef<OsStr>) -> Command {
        exec_in(&self.ext, program.as_ref())
    }

    /// The test CA's certificate (PEM), which signed the HTTPS server's certificate.
    pub fn ca_pem_path(&self) -> PathBuf {
        self.dir.path().join("ca.pem")
    }

    /// The HTTPS server's certificate (PEM).
    pub fn leaf_pem_path(&self) -> PathBuf {
        self.dir.path().join("leaf.pem")
    }

    /// The HTTPS server's private key (PEM, PKCS#8).
    pub fn leaf_key_path(&self) -> PathBuf {
        self.dir.path().join("leaf.key")
    }

    /// Starts the HTTP fixture on 127.0.0.1:`port` inside `px` (an internal service; port 0
    /// picks a free one) and returns the address it listens on. Its connections count in `hits`.
    pub fn px_http_server(&self, port: u16) -> SocketAddr {
        let bound = self.start_fixture(
            true,
            "px-http",
            &["--http".into(), format!("127.0.0.1:{port}")],
        );
        let addr = bound["http"][0].as_str().expect("bound http address");
        addr.parse().unwrap_or_else(|e| panic!("{addr}: {e}"))
    }

    /// How many TCP connections a fixture server accepted on `addr` (`"203.0.113.10:80"`,
    /// `"[2001:db8::10]:80"`, `"127.0.0.1:9000"` for a `px_http_server`).
    pub fn hits(&self, addr: &str) -> usize {
        let want: SocketAddr = addr.parse().unwrap_or_else(|e| panic!("{addr}: {e}"));
        self.records()
            .iter()
            .filter(|r| r["kind"] != "dns")
            .filter(|r| {
                r["local"]
                    .as_str()
                    .and_then(|l| l.parse::<SocketAddr>().ok())
                    == Some(want)
            })
            .count()
    }

    /// How many DNS queries (of any type) the test DNS server got for `name`.
    pub fn dns_queries(&self, name: &str) -> usize {
        self.dns_records(name).len()
    }

    /// How many DNS queries of `qtype` (`"A"`, `"AAAA"`, …) the test DNS server got for `name`.
    pub fn dns_queries_of(&self, name: &str, qtype: &str) -> usize {
        self.dns_records(name)
            .iter()
            .filter(|r| r["type"] == qtype)
            .count()
    }

    /// Every log record so far, in order per server process: `{"kind": "http" | "https" |
    /// "banner", "local", "peer"}` per accepted connection, `{"kind": "dns", "local", "name",
    /// "type", "rcode", "answers"}` per DNS query.
    pub fn records(&self) -> Vec<Value> {
        let logs = self.logs.lock().expect("logs").clone();
        let mut out = Vec::new();
        for log in logs {
            let text = fs::read_to_string(&log).unwrap_or_default();
            // A line is written with one write() and flushed; a partial last line (being
            // written right now) is not yet a record.
            for line in text.split_inclusive('\n').filter(|l| l.ends_with('\n')) {
                let v: Value = serde_json::from_str(line)
                    .unwrap_or_else(|e| panic!("bad log line {line:?} in {}: {e}", log.display()));
                out.push(v);
            }
        }
        out
    }

    fn dns_records(&self, name: &str) -> Vec<Value> {
        let name = name.trim_end_matches('.').to_ascii_lowercase();
        self.records()
            .into_iter()
            .filter(|r| r["kind"] == "dns" && r["name"] == name.as_str())
            .collect()
    }

    fn build(&self) {
        let (px, ext) = (self.px.as_str(), self.ext.as_str());
        ip(&["netns", "add", px]);
        ip(&["netns", "add", ext]);
        let etc = etc_netns(px);
        fs::create_dir_all(&etc).unwrap_or_else(|e| panic!("{}: {e}", etc.display()));
        fs::write(etc.join("resolv.conf"), format!("nameserver {DNS_IP}\n")).expect("resolv.conf");
        fs::write(etc.join("hosts"), "127.0.0.1 localhost\n::1 localhost\n").expect("hosts");
        // Host names come from files then DNS, whatever the machine's nsswitch says (a
        // systemd-resolved or mdns entry would bypass the test DNS server).
        if let Ok(nss) = fs::read_to_string("/etc/nsswitch.conf") {
            let mut out: String = nss
                .lines()
                .filter(|l| !l.trim_start().starts_with("hosts:"))
                .map(|l| format!("{l}\n"))
                .collect();
            out.push_str("hosts: files dns\n");
            fs::write(etc.join("nsswitch.conf"), out).expect("nsswitch.conf");
        }
        for ns in [px, ext] {
            ip(&["-n", ns, "link", "set", "lo", "up"]);
        }
        ip(&[
            "-n", px, "link", "add", "veth-px", "type", "veth", "peer", "name", "veth-ext",
            "netns", ext,
        ]);
        for (ns, dev, addrs) in [
            (px, "veth-px", &PX_ADDRS[..]),
            (ext, "veth-ext", &EXT_ADDRS[..]),
        ] {
            for a in addrs {
                if a.contains(':') {
                    ip(&["-n", ns, "-6", "addr", "add", a, "dev", dev, "nodad"]);
                } else {
                    ip(&["-n", ns, "addr", "add", a, "dev", dev]);
                }
            }
            ip(&["-n", ns, "link", "set", dev, "up"]);
        }
    }

    fn write_certs(&self) {
        use rcgen::{
            BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer,
            KeyPair, KeyUsagePurpose, SanType,
        };
        let mut ca = CertificateParams::new(Vec::<String>::new()).expect("ca params");
        ca.distinguished_name
            .push(DnType::CommonName, "portcullis egress test CA");
        ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        ca.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        let ca_key = KeyPair::generate().expect("ca key");
        let ca_cert = ca.self_signed(&ca_key).expect("ca cert");
        let issuer = Issuer::new(ca, ca_key);

        let mut leaf =
            CertificateParams::new(vec!["ext.test".to_string(), "www.ext.test".to_string()])
                .expect("leaf params");
        leaf.distinguished_name.push(DnType::CommonName, "ext.test");
        leaf.subject_alt_names
            .push(SanType::IpAddress(EXT_IP.parse::<IpAddr>().expect("ip")));
        leaf.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        leaf.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        let leaf_key = KeyPair::generate().expect("leaf key");
        let leaf_cert = leaf.signed_by(&leaf_key, &issuer).expect("leaf cert");

        fs::write(self.ca_pem_path(), ca_cert.pem()).expect("ca.pem");
        fs::write(self.leaf_pem_path(), leaf_cert.pem()).expect("leaf.pem");
        fs::write(self.leaf_key_path(), leaf_key.serialize_pem()).expect("leaf.key");
    }

    /// Runs `hosts.py` with `args` in `px` (`in_px`) or `ext`, waits for its `ready` line and
    /// returns what it says it bound.
    fn start_fixture(&self, in_px: bool, tag: &str, args: &[String]) -> Value {
        let n = self.logs.lock().expect("logs").len();
        let log = self.dir.path().join(format!("{tag}-{n}.log"));
        let err_path = self.dir.path().join(format!("{tag}-{n}.stderr"));
        fs::write(&log, "").expect("log file");
        let stderr = fs::File::create(&err_path).expect("stderr file");
        let script = super::root().join("tests/egress-fixtures/hosts.py");
        let mut cmd = if in_px {
            self.px(super::python())
        } else {
            self.ext(super::python())
        };
        cmd.arg(script)
            .arg("--log")
            .arg(&log)
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(stderr);
        let mut child = cmd
            .spawn()
            .unwrap_or_else(|e| panic!("spawn fixture {tag}: {e}"));
        let stdin = child.stdin.take();
        let stdout = child.stdout.take().expect("stdout");
        self.logs.lock().expect("logs").push(log);
        self.children.lock().expect("children").push((child, stdin));
        let lines = super::lines_of(stdout);
        let line = match lines.recv_timeout(Duration::from_secs(60)) {
            Ok(line) => line,
            Err(e) => panic!(
                "fixture {tag} did not get ready ({e}): {}",
                fs::read_to_string(&err_path).unwrap_or_default()
            ),
        };
        let Some(bound) = line.strip_prefix("ready ") else {
            panic!("fixture {tag} said {line:?}, not ready");
        };
        serde_json::from_str(bound).unwrap_or_else(|e| panic!("ready line {line:?}: {e}"))
    }
}

impl Drop for Net {
    fn drop(&mut self) {
        if let Ok(children) = self.children.get_mut() {
            for (child, stdin) in children.iter_mut() {
                drop(stdin.take());
                let _ = child.kill();
                let _ = child.wait();
            }
        }
        for ns in [&self.px, &self.ext] {
            let _ = Command::new("ip")
                .args(["netns", "del", ns])
                .stderr(Stdio::null())
                .status();
        }
        let _ = fs::remove_dir_all(etc_netns(&self.px));
    }
}

fn exec_in(ns: &str, program: &OsStr) -> Command {
    let mut c = Command::new("ip");
    c.args(["netns", "exec", ns]).arg(program);
    for v in [
        "http_proxy",
        "https_proxy",
        "all_proxy",
        "no_proxy",
        "ftp_proxy",
    ] {
        c.env_remove(v).env_remove(v.to_ascii_uppercase());
    }
    c
}

fn etc_netns(ns: &str) -> PathBuf {
    Path::new("/etc/netns").join(ns)
}

fn path_str(p: &Path) -> String {
    p.to_str().expect("utf-8 path").to_string()
}

fn ip(args: &[&str]) {
    let out = Command::new("ip")
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("`ip` not runnable ({e}): run scripts/test-deps.sh"));
    assert!(
        out.status.success(),
        "ip {}: {} (the egress tests need root and iproute2)",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr).trim()
    );
}

/// Deletes namespaces (and their /etc/netns dirs) left by test processes that no longer run,
/// e.g. ones killed before `Drop`.
fn prune_stale() {
    let Ok(out) = Command::new("ip").args(["netns", "list"]).output() else {
        return;
    };
    for line in String::from_utf8_lossy(&out.stdout).lines() {
        let Some(name) = line.split_whitespace().next() else {
            continue;
        };
        let Some(rest) = name.strip_prefix(PREFIX) else {
            continue;
        };
        let Some(pid) = rest.split('-').next().and_then(|p| p.parse::<u32>().ok()) else {
            continue;
        };
        if pid == std::process::id() || Path::new(&format!("/proc/{pid}")).exists() {
            continue;
        }
        let _ = Command::new("ip")
            .args(["netns", "del", name])
            .stderr(Stdio::null())
            .status();
        let _ = fs::remove_dir_all(etc_netns(name));
    }
}
