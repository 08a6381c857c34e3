//! The egress tests' network (`common::netns`): two namespaces, real servers on the far side,
//! a test DNS server. These first tests use no proxy: real `curl`, `getent` and Python inside
//! the `px` namespace prove that the harness gives the later proxy tests what they rely on.
//! Needs root (`ip netns`).

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "tests fail loudly"
)]

use std::process::{Command, Output};

use serde_json::Value;

mod common;

use common::netns::Net;
use common::python;

fn run(mut cmd: Command) -> Output {
    cmd.output().unwrap_or_else(|e| panic!("{cmd:?}: {e}"))
}

fn ok(cmd: Command) -> String {
    let dbg = format!("{cmd:?}");
    let out = run(cmd);
    assert!(
        out.status.success(),
        "{dbg}: {}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).expect("utf-8 output")
}

/// `curl -sS --max-time 20 ARGS` inside `px`, which must succeed; its stdout.
fn curl(net: &Net, args: &[&str]) -> String {
    let mut c = net.px("curl");
    c.args(["-sS", "--max-time", "20"]).args(args);
    ok(c)
}

fn curl_json(net: &Net, args: &[&str]) -> Value {
    let body = curl(net, args);
    serde_json::from_str(&body).unwrap_or_else(|e| panic!("{args:?} answered {body:?}: {e}"))
}

/// The IPv4 addresses `getent ahostsv4 NAME` gives inside `px`, in order, deduplicated.
fn getent4(net: &Net, name: &str) -> Vec<String> {
    let mut c = net.px("getent");
    c.args(["ahostsv4", name]);
    let mut ips: Vec<String> = Vec::new();
    for line in ok(c).lines() {
        let ip = line.split_whitespace().next().expect("address").to_string();
        if !ips.contains(&ip) {
            ips.push(ip);
        }
    }
    ips
}

#[test]
fn every_http_host_answers_with_what_it_was_sent() {
    let net = Net::new();
    for (url, server) in [
        ("http://203.0.113.10/", "203.0.113.10:80"),
        ("http://203.0.113.10:8080/", "203.0.113.10:8080"),
        ("http://203.0.113.20/", "203.0.113.20:80"),
        ("http://198.51.100.10/", "198.51.100.10:80"),
        ("http://[2001:db8::10]/", "[2001:db8::10]:80"),
        ("http://10.99.0.10/", "10.99.0.10:80"),
        ("http://100.64.0.10/", "100.64.0.10:80"),
    ] {
        let doc = curl_json(
            &net,
            &["-H", "X-Probe: one", &format!("{url}some/path?q=1")],
        );
        assert_eq!(doc["server"], server, "{doc}");
        assert_eq!(doc["method"], "GET");
        assert_eq!(doc["path"], "/some/path?q=1");
        let authority = url.trim_start_matches("http://").trim_end_matches('/');
        assert_eq!(doc["host"], authority, "{doc}");
        assert_eq!(doc["headers"]["x-probe"], "one");
        assert_eq!(doc["headers"]["host"], authority);
        assert_eq!(doc["body_len"], 0);
        assert_eq!(net.hits(server), 1, "{server}");
    }
}

#[test]
fn names_resolve_through_the_test_dns_only() {
    let net = Net::new();
    assert_eq!(getent4(&net, "ext.test"), ["203.0.113.10"]);
    assert_eq!(getent4(&net, "www.ext.test"), ["203.0.113.10"]);
    assert_eq!(getent4(&net, "private.test"), ["10.99.0.10"]);
    assert_eq!(getent4(&net, "meta.test"), ["169.254.169.254"]);
    assert_eq!(getent4(&net, "mixed.test"), ["203.0.113.10", "10.99.0.10"]);
    assert_eq!(net.dns_queries_of("ext.test", "A"), 1);
    assert_eq!(net.dns_queries_of("mixed.test", "A"), 1);

    // IPv6: only v6.test has an AAAA record.
    let mut c = net.px("getent");
    c.args(["ahostsv6", "v6.test"]);
    let v6 = ok(c);
    assert!(v6.starts_with("2001:db8::10 "), "{v6}");
    assert_eq!(net.dns_queries_of("v6.test", "AAAA"), 1);

    // Unknown names are NXDOMAIN, and the machine's /etc/hosts is not consulted: its own
    // host name does not resolve inside px.
    let mut c = net.px("getent");
    c.args(["ahostsv4", "nowhere.test"]);
    let out = run(c);
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    assert!(net.dns_queries("nowhere.test") >= 1);
    let hostname = std::fs::read_to_string("/proc/sys/kernel/hostname").expect("host name");
    let mut c = net.px("getent");
    c.args(["hosts", "localhost"]);
    assert!(ok(c).contains("localhost"));
    let hostname = hostname.trim();
    if hostname != "localhost" {
        let mut c = net.px("getent");
        c.args(["ahostsv4", hostname]);
        assert!(!run(c).status.success(), "{hostname} resolved inside px");
    }

    // Python's resolver (what the later proxy tests' clients use) sees the same table.
    let mut c = net.px(python());
    c.args([
        "-c",
        "import socket; print(sorted({a[4][0] for a in socket.getaddrinfo('ext.test', 80)}))",
    ]);
    assert_eq!(ok(c).trim(), "['203.0.113.10']");
}

#[test]
fn rebind_test_alternates_between_public_and_loopback() {
    let net = Net::new();
    assert_eq!(getent4(&net, "rebind.test"), ["203.0.113.10"]);
    assert_eq!(getent4(&net, "rebind.test"), ["127.0.0.1"]);
    assert_eq!(getent4(&net, "rebind.test"), ["203.0.113.10"]);
    assert_eq!(net.dns_queries_of("rebind.test", "A"), 3);
    // AAAA queries (which have no answer) do not advance it. (Not `getent ahostsv6`: its
    // AI_V4MAPPED asks for A records too.)
    let mut c = net.px(python());
    c.args([
        "-c",
        "import socket\n\
         try:\n    print(socket.getaddrinfo('rebind.test', 80, socket.AF_INET6))\n\
         except socket.gaierror as e:\n    print('no address', e.errno == socket.EAI_NODATA)\n",
    ]);
    assert_eq!(ok(c), "no address True\n");
    assert_eq!(net.dns_queries_of("rebind.test", "AAAA"), 1);
    assert_eq!(net.dns_queries_of("rebind.test", "A"), 3);
    assert_eq!(net.dns_queries("rebind.test"), 4);
    assert_eq!(getent4(&net, "rebind.test"), ["127.0.0.1"]);
}

#[test]
fn https_verifies_against_the_test_ca_by_name_and_ip() {
    let net = Net::new();
    let ca = net.ca_pem_path();
    let ca = ca.to_str().expect("path");
    for (url, sni) in [
        ("https://ext.test/", Value::from("ext.test")),
        ("https://www.ext.test/x?y=z", Value::from("www.ext.test")),
        // No SNI for an IP address (RFC 6066); the IP SAN verifies.
        ("https://203.0.113.10/", Value::Null),
    ] {
        let doc = curl_json(&net, &["--cacert", ca, url]);
        assert_eq!(doc["server"], "203.0.113.10:443", "{doc}");
        assert_eq!(doc["sni"], sni, "{url}: {doc}");
    }
    assert_eq!(net.hits("203.0.113.10:443"), 3);
    assert!(net.dns_queries_of("ext.test", "A") >= 1);

    // Without the CA the certificate is refused (curl: 60, peer certificate not verified).
    let mut c = net.px("curl");
    c.args(["-sS", "--max-time", "20", "https://ext.test/"]);
    assert_eq!(run(c).status.code(), Some(60));
}

#[test]
fn hits_count_connections_not_requests_and_px_servers_count_too() {
    let net = Net::new();
    // Two requests on one keep-alive connection.
    let body = curl(&net, &["http://ext.test/one", "http://ext.test/two"]);
    assert_eq!(
        body.matches("\"server\": \"203.0.113.10:80\"").count(),
        2,
        "{body}"
    );
    assert_eq!(net.hits("203.0.113.10:80"), 1);
    assert_eq!(net.hits("203.0.113.10:8080"), 0);

    let internal = net.px_http_server(0);
    assert_eq!(internal.ip().to_string(), "127.0.0.1");
    assert_eq!(net.hits(&internal.to_string()), 0);
    let doc = curl_json(&net, &[&format!("http://{internal}/admin")]);
    assert_eq!(doc["server"], internal.to_string());
    assert_eq!(doc["path"], "/admin");
    assert_eq!(net.hits(&internal.to_string()), 1);

    // A fixed port works too, and it is in px only: ext has nothing on it.
    let fixed = net.px_http_server(9009);
    assert_eq!(fixed.port(), 9009);
    let doc = curl_json(&net, &["http://127.0.0.1:9009/"]);
    assert_eq!(doc["server"], "127.0.0.1:9009");
    let mut c = net.ext("curl");
    c.args(["-sS", "--max-time", "20", "http://127.0.0.1:9009/"]);
    assert_eq!(run(c).status.code(), Some(7), "connection refused in ext");
    assert_eq!(net.hits("127.0.0.1:9009"), 1);
}

#[test]
fn redirects_bytes_and_bodies() {
    let net = Net::new();
    let mut c = net.px("curl");
    c.args([
        "-sS",
        "--max-time",
        "20",
        "-o",
        "/dev/null",
        "-w",
        "%{http_code} %{redirect_url}",
        "http://ext.test/redirect?to=http%3A%2F%2F10.99.0.10%2Fin%3Fa%3Db",
    ]);
    assert_eq!(ok(c), "302 http://10.99.0.10/in?a=b");
    assert_eq!(net.hits("10.99.0.10:80"), 0, "not followed");

    let body = curl(&net, &["http://ext.test/bytes?n=100000"]);
    assert_eq!(body.len(), 100_000);

    let doc = curl_json(
        &net,
        &["--data-binary", "0123456789", "http://ext.test/post"],
    );
    assert_eq!(doc["method"], "POST");
    assert_eq!(doc["body_len"], 10);
    let doc = curl_json(
        &net,
        &[
            "-H",
            "Transfer-Encoding: chunked",
            "--data-binary",
            "abcdef",
            "http://ext.test/chunked",
        ],
    );
    assert_eq!(doc["body_len"], 6, "{doc}");
    assert_eq!(doc["headers"]["transfer-encoding"], "chunked");
}

#[test]
fn the_banner_server_greets_then_echoes() {
    let net = Net::new();
    let mut c = net.px(python());
    c.args([
        "-c",
        "import socket\n\
         s = socket.create_connection(('203.0.113.10', 22), timeout=20)\n\
         f = s.makefile('rb')\n\
         print(repr(f.readline()))\n\
         s.sendall(b'ping\\n')\n\
         print(repr(f.readline()))\n",
    ]);
    assert_eq!(ok(c), "b'SSH-2.0-fixture\\r\\n'\nb'ping\\n'\n");
    assert_eq!(net.hits("203.0.113.10:22"), 1);
}

#[test]
fn nets_are_independent_and_clean_up() {
    let (a, b) = (Net::new(), Net::new());
    assert_ne!(a.px_name(), b.px_name());
    curl(&a, &["http://203.0.113.10/"]);
    assert_eq!(a.hits("203.0.113.10:80"), 1);
    assert_eq!(b.hits("203.0.113.10:80"), 0);
    let (px, ext) = (a.px_name().to_string(), a.ext_name().to_string());
    drop(a);
    let list = ok({
        let mut c = Command::new("ip");
        c.args(["netns", "list"]);
        c
    });
    let names: Vec<&str> = list
        .lines()
        .filter_map(|l| l.split_whitespace().next())
        .collect();
    assert!(
        !names.contains(&px.as_str()) && !names.contains(&ext.as_str()),
        "{list}"
    );
    assert!(!std::path::Path::new("/etc/netns").join(&px).exists());
    assert!(names.contains(&b.px_name()));
}
