//! `portcullis serve` end to end: the real binary on 127.0.0.1:0, real curl as the client, raw
//! sockets for what curl will not send (slow heads, half-closed connections).

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "tests fail loudly"
)]

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{Shutdown, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStderr, Command, Stdio};
use std::time::Duration;

use serde_json::{Value, json};
use sha2::{Digest, Sha256};

const AGENT_KEY: &str = "agent-key-1";
const OTHER_KEY: &str = "agent-key-2";
const ADMIN_KEY: &str = "admin-key-1";

fn bin() -> Command {
    Command::new(env!("CARGO_BIN_EXE_portcullis"))
}

fn sha(s: &str) -> String {
    hex::encode(Sha256::digest(s.as_bytes()))
}

/// A running `portcullis serve` in its own directory.
struct Server {
    child: Child,
    dir: tempfile::TempDir,
    gateway: String,
    admin: String,
    /// Log lines, drained by a thread so the server never blocks on a full pipe.
    log: std::sync::mpsc::Receiver<String>,
}

/// The base configuration; `extra` is appended, `server` lines replace those of the
/// `[server]` table with the same key.
fn config(server: &str, extra: &str) -> String {
    let base = [
        "listen = \"127.0.0.1:0\"",
        "admin_listen = \"127.0.0.1:0\"",
        "header_timeout_ms = 500",
        "body_timeout_ms = 500",
        "shutdown_grace_ms = 5000",
        "reload_poll_ms = 0",
    ];
    let key = |l: &str| l.split('=').next().unwrap_or("").trim().to_string();
    let overridden: Vec<String> = server.lines().map(key).collect();
    let mut table: Vec<&str> = base
        .into_iter()
        .filter(|l| !overridden.contains(&key(l)))
        .collect();
    table.extend(server.lines());
    let server = table.join("\n");
    format!(
        r#"
[server]
{server}

[workspace]
roots = ["ws"]

[audit]
path = "audit/audit.jsonl"

[[agents]]
id = "builder-bot"
labels = {{ team = "platform" }}
api_key_sha256 = ["{}"]

[[agents]]
id = "other-bot"
api_key_sha256 = ["{}"]

[[admins]]
id = "alice"
api_key_sha256 = ["{}"]
{extra}
"#,
        sha(AGENT_KEY),
        sha(OTHER_KEY),
        sha(ADMIN_KEY)
    )
}

impl Server {
    fn start(extra: &str) -> Server {
        Server::start_in(tempfile::tempdir().unwrap(), "", extra)
    }

    fn start_in(dir: tempfile::TempDir, server: &str, extra: &str) -> Server {
        Server::start_with(dir, server, extra, &[])
    }

    fn start_with(dir: tempfile::TempDir, server: &str, extra: &str, flags: &[&str]) -> Server {
        std::fs::create_dir_all(dir.path().join("ws")).unwrap();
        std::fs::create_dir_all(dir.path().join("audit")).unwrap();
        std::fs::write(dir.path().join("portcullis.toml"), config(server, extra)).unwrap();
        let mut child = bin()
            .current_dir(dir.path())
            .args([
                "serve",
                "--config",
                "portcullis.toml",
                "--log",
                "portcullis=info",
            ])
            .args(flags)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let mut out = BufReader::new(child.stdout.take().unwrap());
        let mut addr = |prefix: &str| {
            let mut line = String::new();
            out.read_line(&mut line).unwrap();
            assert!(
                line.starts_with(prefix),
                "unexpected start-up line {line:?}"
            );
            line.trim().rsplit(' ').next().unwrap().to_string()
        };
        let gateway = addr("gateway listening on ");
        let admin = addr("admin listening on ");
        let stderr = BufReader::new(child.stderr.take().unwrap());
        let (tx, log) = std::sync::mpsc::channel();
        std::thread::spawn(move || drain(stderr, &tx));
        Server {
            child,
            dir,
            gateway,
            admin,
            log,
        }
    }

    fn path(&self, p: &str) -> PathBuf {
        self.dir.path().join(p)
    }

    fn audit(&self) -> Vec<Value> {
        std::fs::read_to_string(self.path("audit/audit.jsonl"))
            .unwrap_or_default()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect()
    }

    /// Block until the server logs a line containing `needle` (the log is the signal; no sleeps).
    fn wait_log(&mut self, needle: &str) -> String {
        loop {
            let line = self
                .log
                .recv_timeout(Duration::from_secs(60))
                .unwrap_or_else(|e| panic!("no log line with {needle:?}: {e}"));
            if line.contains(needle) {
                return line;
            }
        }
    }

    fn decide(&self, key: Option<&str>, session: Option<&str>, body: &Value) -> (u16, Value) {
        let mut args = vec![
            "-X".to_string(),
            "POST".into(),
            "-H".into(),
            "content-type: application/json".into(),
        ];
        if let Some(k) = key {
            args.extend(["-H".into(), format!("authorization: Bearer {k}")]);
        }
        if let Some(s) = session {
            args.extend(["-H".into(), format!("x-portcullis-session: {s}")]);
        }
        args.extend(["--data-binary".into(), body.to_string()]);
        curl(&format!("{}/v1/decide", self.gateway), &args)
    }

    fn admin_get(&self, path: &str) -> (u16, Value) {
        curl(
            &format!("{}{path}", self.admin),
            &["-H".into(), format!("authorization: Bearer {ADMIN_KEY}")],
        )
    }

    fn admin_post(&self, path: &str, body: &str) -> (u16, Value) {
        curl(
            &format!("{}{path}", self.admin),
            &[
                "-X".into(),
                "POST".into(),
                "-H".into(),
                format!("authorization: Bearer {ADMIN_KEY}"),
                "--data-binary".into(),
                body.into(),
            ],
        )
    }

    fn sigterm(&mut self) -> std::process::ExitStatus {
        let pid = self.child.id().to_string();
        assert!(
            Command::new("kill")
                .args(["-TERM", &pid])
                .status()
                .unwrap()
                .success()
        );
        self.child.wait().unwrap()
    }

    fn verify_audit(&self) {
        let out = bin()
            .args(["audit", "verify"])
            .arg(self.path("audit/audit.jsonl"))
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "audit verify: {}",
            String::from_utf8_lossy(&out.stdout)
        );
    }
}

fn drain(mut stderr: BufReader<ChildStderr>, tx: &std::sync::mpsc::Sender<String>) {
    let mut line = String::new();
    while stderr.read_line(&mut line).is_ok_and(|n| n > 0) {
        // Keep draining after the test stopped listening.
        let _ = tx.send(std::mem::take(&mut line));
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Real curl; returns the status and the body as JSON (or a JSON string when it is not JSON).
fn curl(url: &str, args: &[String]) -> (u16, Value) {
    let out = Command::new("curl")
        .args(["-sS", "--max-time", "30", "-o", "-", "-w", "\n%{http_code}"])
        .args(args)
        .arg(url)
        .output()
        .unwrap();
    let text = String::from_utf8(out.stdout).unwrap();
    let (body, code) = text.rsplit_once('\n').unwrap();
    let code: u16 = code.parse().unwrap_or(0);
    let body = serde_json::from_str(body).unwrap_or_else(|_| Value::String(body.to_string()));
    (code, body)
}

fn read_file(path: &str) -> Value {
    json!({"kind": "file", "via": "decide", "file": {"op": "read", "path": path}})
}

fn exec(cmd: &str) -> Value {
    json!({"kind": "exec", "via": "decide", "exec": {"command": cmd}})
}

fn rule(v: &Value) -> &str {
    v["reasons"][0]["rule"].as_str().unwrap_or("")
}

fn host(addr: &str) -> &str {
    addr.trim_start_matches("http://")
        .trim_start_matches("https://")
}

#[test]
fn decide_allows_denies_and_records_each_decision_once() {
    let mut s = Server::start("");
    let (code, v) = s.decide(Some(AGENT_KEY), None, &read_file("src/main.rs"));
    assert_eq!(code, 200, "{v}");
    assert_eq!(v["outcome"], "allow", "{v}");
    assert!(v["policy_digest"].as_str().unwrap().starts_with("sha256:"));
    let (code, v) = s.decide(Some(AGENT_KEY), None, &exec("rm -rf /"));
    assert_eq!((code, v["outcome"].as_str()), (200, Some("deny")), "{v}");
    assert!(rule(&v).starts_with("exec."), "{v}");

    let records = s.audit();
    assert_eq!(records.len(), 2);
    let agent = &records[0]["action"]["agent"];
    assert_eq!(agent["id"], "builder-bot");
    assert_eq!(agent["labels"]["team"], "platform");
    assert_eq!(agent["authenticated"], true);
    assert!(
        records[0]["action"]["session"]["id"]
            .as_str()
            .unwrap()
            .starts_with("key-")
    );
    assert_eq!(records[1]["decision"]["outcome"], "deny");
    assert_eq!(records[1]["action"]["id"], v["id"]);
    // The admin audit query filters the same records.
    let (code, q) = s.admin_get("/v1/audit?outcome=deny&agent=builder-bot");
    assert_eq!(code, 200, "{q}");
    assert_eq!(q["records"].as_array().unwrap().len(), 1, "{q}");
    assert_eq!(q["records"][0]["action"]["id"], v["id"]);
    assert_eq!(s.admin_get("/v1/audit?since=yesterday").0, 400);
    assert_eq!(curl(&format!("{}/v1/audit", s.admin), &[]).0, 401);
    assert_eq!(s.sigterm().code(), Some(0));
    s.verify_audit();
}

#[test]
fn credentials_are_required_and_never_taken_from_the_body() {
    let s = Server::start("");
    let body = read_file("a");
    let (code, v) = s.decide(None, None, &body);
    assert_eq!(code, 401, "{v}");
    assert_eq!(v["error"]["code"], "unauthorized");
    assert_eq!(s.decide(Some("wrong"), None, &body).0, 401);
    // An admin key is not an agent key.
    assert_eq!(s.decide(Some(ADMIN_KEY), None, &body).0, 401);
    let (code, _) = curl(
        &format!("{}/v1/decide", s.gateway),
        &[
            "-H".into(),
            "authorization: Basic eA==".into(),
            "--data-binary".into(),
            body.to_string(),
        ],
    );
    assert_eq!(code, 401);
    let mut forged = read_file("a");
    forged["agent"] = json!({"id": "root", "authenticated": true});
    let (code, v) = s.decide(Some(AGENT_KEY), None, &forged);
    assert_eq!(code, 400, "{v}");
    assert!(
        v["error"]["message"].as_str().unwrap().contains("agent"),
        "{v}"
    );
    let mut forged = read_file("a");
    forged["session"] = json!({"id": "x", "labels": []});
    assert_eq!(s.decide(Some(AGENT_KEY), None, &forged).0, 400);
    let mut bad_id = read_file("a");
    bad_id["id"] = json!("line\nbreak");
    let (code, v) = s.decide(Some(AGENT_KEY), None, &bad_id);
    assert_eq!(code, 400, "{v}");
    assert!(
        v["error"]["message"].as_str().unwrap().starts_with("id:"),
        "{v}"
    );
    let (code, v) = s.decide(Some(AGENT_KEY), Some("bad session!"), &body);
    assert_eq!(code, 400, "{v}");
    // Nothing refused above was recorded.
    assert!(s.audit().is_empty());
}

#[test]
fn anonymous_agent_only_when_configured() {
    let s = Server::start("[anonymous]\nid = \"anon\"\n");
    let (code, v) = s.decide(None, None, &read_file("a"));
    assert_eq!((code, v["outcome"].as_str()), (200, Some("allow")), "{v}");
    assert_eq!(s.audit()[0]["action"]["agent"]["authenticated"], false);
    // A wrong key is still refused: it is not the same as no key.
    assert_eq!(s.decide(Some("wrong"), None, &read_file("a")).0, 401);
}

#[test]
fn sessions_carry_labels_between_decisions_per_agent() {
    let s = Server::start("");
    let paste = json!({"kind": "http_request", "via": "decide", "http": {"url": "https://paste.example.net/new", "method": "POST"}});
    let (_, v) = s.decide(Some(AGENT_KEY), Some("s1"), &read_file(".env"));
    assert_eq!(v["outcome"], "allow", "{v}");
    assert_eq!(v["labels"], json!(["secret_read"]));
    let (_, v) = s.decide(Some(AGENT_KEY), Some("s1"), &paste);
    assert_eq!(
        (v["outcome"].as_str(), rule(&v)),
        (Some("deny"), "flow.exfiltration"),
        "{v}"
    );
    // Another session of the same agent, and the same session id of another agent, are clean.
    let (_, v) = s.decide(Some(AGENT_KEY), Some("s2"), &paste);
    assert_eq!(v["outcome"], "allow", "{v}");
    let (_, v) = s.decide(Some(OTHER_KEY), Some("s1"), &paste);
    assert_eq!(v["outcome"], "allow", "{v}");
    let records = s.audit();
    let session = &records[1]["action"]["session"];
    assert_eq!(session["id"], "s1");
    assert_eq!(session["labels"], json!(["secret_read"]));
    assert_eq!(session["counts"]["file"], 1);
}

#[test]
fn ask_is_parked_then_approved_through_the_cli() {
    let s = Server::start("");
    let (code, v) = s.decide(Some(AGENT_KEY), None, &exec("eval \"$CMD\""));
    assert_eq!(code, 200);
    assert_eq!(v["outcome"], "ask", "{v}");
    assert_eq!(v["approval"]["status"], "pending", "{v}");
    let id = v["approval"]["id"].as_str().unwrap().to_string();
    let digest = v["approval"]["action_digest"].as_str().unwrap().to_string();

    let cli = |args: &[&str]| {
        bin()
            .current_dir(s.dir.path())
            .arg("approvals")
            .args(args)
            .args(["--config", "portcullis.toml", "--admin", host(&s.admin)])
            .env("PORTCULLIS_ADMIN_KEY", ADMIN_KEY)
            .output()
            .unwrap()
    };
    let out = cli(&["list"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let listed = String::from_utf8(out.stdout).unwrap();
    assert!(
        listed.contains(&id) && listed.contains("exec.opaque"),
        "{listed}"
    );
    // Another agent cannot see it; the owner can.
    let other = curl(
        &format!("{}/v1/approvals/{id}", s.gateway),
        &["-H".into(), format!("authorization: Bearer {OTHER_KEY}")],
    );
    assert_eq!(other.0, 404);
    // A digest that is not the reviewed action is refused, and the approval stays pending.
    let out = cli(&["approve", &id, "--digest", "sha256:00"]);
    assert_eq!(
        out.status.code(),
        Some(1),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = cli(&["approve", &id, "--digest", &digest]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let (code, v) = curl(
        &format!("{}/v1/approvals/{id}?wait=5", s.gateway),
        &["-H".into(), format!("authorization: Bearer {AGENT_KEY}")],
    );
    assert_eq!(code, 200);
    assert_eq!(v["outcome"], "allow", "{v}");
    assert_eq!(v["approval"]["status"], "approved");
    assert_eq!(v["approval"]["by"], "alice");
    // Resolved once only.
    assert_eq!(cli(&["deny", &id]).status.code(), Some(1));

    let records = s.audit();
    assert_eq!(records.len(), 2, "{records:?}");
    assert_eq!(records[0]["decision"]["outcome"], "ask");
    assert_eq!(records[0]["approval_id"], id.as_str());
    assert_eq!(records[1]["type"], "approval");
    assert_eq!(records[1]["resolution"], "approved");
    assert_eq!(records[1]["approver"], "alice");
    assert_eq!(records[1]["action_digest"], digest.as_str());
}

#[test]
fn ask_denied_by_admin_and_waiting_caller_sees_it() {
    let s = Server::start("");
    let secret = "AKIAIOSFODNN7EXAMPLE";
    let (_, v) = s.decide(
        Some(AGENT_KEY),
        None,
        &exec(&format!("eval \"$X\" {secret}")),
    );
    let id = v["approval"]["id"].as_str().unwrap().to_string();
    let (code, list) = s.admin_get("/v1/approvals");
    assert_eq!(code, 200);
    assert_eq!(list["approvals"][0]["id"], id.as_str());
    // Approvers see secrets masked, as the audit log stores them.
    assert!(!list.to_string().contains(secret), "{list}");
    assert!(
        !s.admin_get(&format!("/v1/approvals/{id}"))
            .1
            .to_string()
            .contains(secret)
    );
    // Admin routes need the admin key.
    let (code, _) = curl(&format!("{}/v1/approvals", s.admin), &[]);
    assert_eq!(code, 401);
    let (code, _) = curl(
        &format!("{}/v1/approvals/{id}/approve", s.admin),
        &[
            "-X".into(),
            "POST".into(),
            "-H".into(),
            format!("authorization: Bearer {AGENT_KEY}"),
        ],
    );
    assert_eq!(code, 401);
    let (code, v) = s.admin_post(&format!("/v1/approvals/{id}/deny"), "");
    assert_eq!(code, 200, "{v}");
    let (_, v) = curl(
        &format!("{}/v1/approvals/{id}", s.gateway),
        &["-H".into(), format!("authorization: Bearer {AGENT_KEY}")],
    );
    assert_eq!(
        (v["outcome"].as_str(), v["approval"]["status"].as_str()),
        (Some("deny"), Some("denied")),
        "{v}"
    );
    assert_eq!(v["reasons"][1]["rule"], "approval_denied");
}

#[test]
fn unanswered_ask_times_out_as_deny() {
    let mut s = Server::start("[approvals]\ntimeout_s = 1\n");
    let (code, v) = curl(
        &format!("{}/v1/decide?wait=20", s.gateway),
        &[
            "-H".into(),
            format!("authorization: Bearer {AGENT_KEY}"),
            "--data-binary".into(),
            exec("eval \"$X\"").to_string(),
        ],
    );
    assert_eq!(code, 200);
    assert_eq!(v["outcome"], "deny", "{v}");
    assert_eq!(v["approval"]["status"], "expired", "{v}");
    assert_eq!(
        v["reasons"].as_array().unwrap().last().unwrap()["rule"],
        "approval_timeout"
    );
    let records = s.audit();
    assert_eq!(records[1]["resolution"], "expired");
    assert_eq!(s.sigterm().code(), Some(0));
    s.verify_audit();
}

#[test]
fn rate_limits_deny_with_429() {
    let s = Server::start(
        "[[limits]]\nname = \"exec-burst\"\nkind = \"exec\"\nrate = 2\nper = \"hour\"\n",
    );
    for _ in 0..2 {
        assert_eq!(
            s.decide(Some(AGENT_KEY), None, &exec("ls")).1["outcome"],
            "allow"
        );
    }
    let (code, v) = s.decide(Some(AGENT_KEY), None, &exec("ls"));
    assert_eq!(code, 429, "{v}");
    assert_eq!(rule(&v), "rate_limited");
    assert!(
        v["reasons"][0]["message"]
            .as_str()
            .unwrap()
            .contains("exec-burst")
    );
    // Other kinds and other agents are not affected.
    assert_eq!(s.decide(Some(AGENT_KEY), None, &read_file("a")).0, 200);
    assert_eq!(s.decide(Some(OTHER_KEY), None, &exec("ls")).0, 200);
    // The limited decision is recorded like any other.
    assert_eq!(s.audit().len(), 5);
    let (_, metrics) = curl(&format!("{}/metrics", s.admin), &[]);
    let metrics = metrics.as_str().unwrap().to_string();
    assert!(
        metrics.contains("portcullis_rate_limited_total{rule=\"exec-burst\"} 1"),
        "{metrics}"
    );
    assert!(
        metrics.contains(
            "portcullis_decisions_total{outcome=\"deny\",kind=\"exec\",rule=\"rate_limited\"} 1"
        ),
        "{metrics}"
    );
}

/// A small policy set with its own test: the reload tests run its tests on every reload, and
/// the full pack's take seconds in a debug build.
fn small_pack(to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    std::fs::write(
        to.join("decision.rego"),
        r#"package portcullis
import rego.v1
default decision := {"outcome": "allow"}
decision := {"outcome": "deny", "reasons": [{"rule": "t.rm", "message": "no rm"}]} if input.exec.argv[0] == "rm"
"#,
    )
    .unwrap();
    std::fs::write(
        to.join("decision_test.rego"),
        r#"package portcullis_test
import rego.v1
test_rm_denied if data.portcullis.decision.outcome == "deny" with input as {"exec": {"argv": ["rm"]}}
"#,
    )
    .unwrap();
}

#[test]
fn a_broken_policy_reload_keeps_the_old_policy_deciding() {
    let dir = tempfile::tempdir().unwrap();
    small_pack(&dir.path().join("pol"));
    let s = Server::start_in(dir, "", "[policy]\ndir = \"pol\"\n");
    let (_, v) = s.decide(Some(AGENT_KEY), None, &exec("ls"));
    let old = v["policy_digest"].as_str().unwrap().to_string();

    // A syntax error: refused at compile time.
    std::fs::write(
        s.path("pol/broken.rego"),
        "package portcullis.broken\nthis is not rego\n",
    )
    .unwrap();
    let (code, v) = s.admin_post("/v1/policy/reload", "");
    assert_eq!(code, 422, "{v}");
    assert!(
        v["error"]["message"]
            .as_str()
            .unwrap()
            .contains("broken.rego"),
        "{v}"
    );
    let (_, v) = s.decide(Some(AGENT_KEY), None, &exec("ls"));
    assert_eq!(
        (v["outcome"].as_str(), v["policy_digest"].as_str()),
        (Some("allow"), Some(old.as_str()))
    );
    let (code, ready) = curl(&format!("{}/readyz", s.admin), &[]);
    assert_eq!(code, 200, "the old policy still serves: {ready}");
    assert_eq!(ready["last_reload"]["ok"], false, "{ready}");
    assert!(
        ready["last_reload"]["error"]
            .as_str()
            .unwrap()
            .contains("broken.rego")
    );
    let (_, metrics) = curl(&format!("{}/metrics", s.admin), &[]);
    let metrics = metrics.as_str().unwrap().to_string();
    assert!(
        metrics.contains("portcullis_policy_reloads_total{result=\"failed\"} 1"),
        "{metrics}"
    );
    assert!(
        metrics.contains("portcullis_policy_reload_healthy 0"),
        "{metrics}"
    );

    // Valid Rego whose own test fails: refused too.
    std::fs::remove_file(s.path("pol/broken.rego")).unwrap();
    std::fs::write(
        s.path("pol/broken_test.rego"),
        "package portcullis.broken_test\nimport rego.v1\ntest_x if { data.portcullis.decision.outcome == \"deny\" }\n",
    )
    .unwrap();
    let (code, v) = s.admin_post("/v1/policy/reload", "");
    assert_eq!(code, 422, "{v}");
    assert!(
        v["error"]["message"].as_str().unwrap().contains("test_x"),
        "{v}"
    );

    // A good change is taken, and the next decision says so.
    std::fs::remove_file(s.path("pol/broken_test.rego")).unwrap();
    std::fs::write(s.path("pol/extra.json"), "{\"extra\": 1}").unwrap();
    let (code, v) = s.admin_post("/v1/policy/reload", "");
    assert_eq!(code, 200, "{v}");
    let new = v["policy_digest"].as_str().unwrap().to_string();
    assert_ne!(new, old);
    let (_, v) = s.decide(Some(AGENT_KEY), None, &exec("ls"));
    assert_eq!(v["policy_digest"], new.as_str());
    // Reload needs the admin key.
    let (code, _) = curl(
        &format!("{}/v1/policy/reload", s.admin),
        &["-X".into(), "POST".into()],
    );
    assert_eq!(code, 401);
}

#[test]
fn a_policy_file_change_is_picked_up_by_the_watcher() {
    let dir = tempfile::tempdir().unwrap();
    small_pack(&dir.path().join("pol"));
    let mut s = Server::start_in(dir, "reload_poll_ms = 20", "[policy]\ndir = \"pol\"\n");
    std::fs::write(s.path("pol/broken.rego"), "package x\nnot rego at all\n").unwrap();
    let line = s.wait_log("policy reload failed");
    assert!(line.contains("file change"), "{line}");
    std::fs::remove_file(s.path("pol/broken.rego")).unwrap();
    s.wait_log("policy reloaded");
    let (_, v) = s.decide(Some(AGENT_KEY), None, &exec("rm -rf /"));
    assert_eq!(v["outcome"], "deny");
}

/// Raw HTTP/1.1 over a socket; returns what the server sent before closing or `timeout`.
fn raw(addr: &str, request: &[u8]) -> String {
    let mut stream = TcpStream::connect(host(addr)).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    stream.write_all(request).unwrap();
    let mut out = Vec::new();
    let _ = stream.read_to_end(&mut out);
    String::from_utf8_lossy(&out).into_owned()
}

fn post(body: &str) -> Vec<u8> {
    format!(
        "POST /v1/decide HTTP/1.1\r\nhost: x\r\nauthorization: Bearer {AGENT_KEY}\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
        body.len()
    )
    .into_bytes()
}

#[test]
fn bad_input_is_refused_and_the_service_stays_healthy() {
    let s = Server::start("");
    let status = |resp: &str| resp.split(' ').nth(1).unwrap_or("").to_string();
    let malformed = raw(&s.gateway, &post("{\"kind\": "));
    assert_eq!(status(&malformed), "400", "{malformed}");
    assert!(malformed.contains("invalid JSON"), "{malformed}");
    let dup = raw(
        &s.gateway,
        &post(r#"{"kind":"exec","via":"decide","exec":{"command":"ls","command":"rm -rf /"}}"#),
    );
    assert_eq!(status(&dup), "400", "{dup}");
    assert!(dup.contains("duplicate"), "{dup}");
    let unknown = raw(
        &s.gateway,
        &post(r#"{"kind":"exec","via":"decide","exec":{"command":"ls"},"approved":true}"#),
    );
    assert_eq!(status(&unknown), "400", "{unknown}");
    let big = s.path("big.json");
    std::fs::write(&big, exec(&"a".repeat(2 << 20)).to_string()).unwrap();
    let (code, v) = curl(
        &format!("{}/v1/decide", s.gateway),
        &[
            "-H".into(),
            format!("authorization: Bearer {AGENT_KEY}"),
            "--data-binary".into(),
            format!("@{}", big.display()),
        ],
    );
    assert_eq!(code, 413, "{v}");
    // A body announced as larger than it is: cut off at body_timeout_ms.
    let slow_body = raw(
        &s.gateway,
        format!("POST /v1/decide HTTP/1.1\r\nhost: x\r\nauthorization: Bearer {AGENT_KEY}\r\ncontent-length: 100\r\n\r\n{{").as_bytes(),
    );
    assert_eq!(status(&slow_body), "408", "{slow_body}");
    // A head that never ends: closed at header_timeout_ms without a response body.
    let slow_head = raw(&s.gateway, b"POST /v1/decide HTTP/1.1\r\nhost: x\r\n");
    assert!(!slow_head.contains("200"), "{slow_head}");
    // Too many headers, and a header that is too large.
    let many: String = (0..200).map(|i| format!("x-h{i}: v\r\n")).collect();
    let resp = raw(
        &s.gateway,
        format!("GET /healthz HTTP/1.1\r\nhost: x\r\n{many}\r\n").as_bytes(),
    );
    assert_eq!(status(&resp), "431", "{resp}");
    let huge = format!(
        "GET /healthz HTTP/1.1\r\nhost: x\r\nx-big: {}\r\n\r\n",
        "a".repeat(64 << 10)
    );
    let resp = raw(&s.gateway, huge.as_bytes());
    assert_eq!(status(&resp), "431", "{resp}");
    // Half-closed: the client stops writing mid-head; the server closes its side.
    let mut half = TcpStream::connect(host(&s.gateway)).unwrap();
    half.set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    half.write_all(b"GET /healthz HTTP/1.1\r\nhost").unwrap();
    half.shutdown(Shutdown::Write).unwrap();
    let mut buf = Vec::new();
    half.read_to_end(&mut buf).unwrap();
    assert!(!String::from_utf8_lossy(&buf).contains(" 200 "));
    // Wrong method and unknown route.
    assert_eq!(curl(&format!("{}/v1/decide", s.gateway), &[]).0, 405);
    assert_eq!(curl(&format!("{}/nope", s.gateway), &[]).0, 404);
    // Still healthy, still deciding, nothing refused was recorded.
    assert_eq!(curl(&format!("{}/healthz", s.gateway), &[]).0, 200);
    assert_eq!(
        s.decide(Some(AGENT_KEY), None, &exec("ls")).1["outcome"],
        "allow"
    );
    assert_eq!(s.audit().len(), 1);
}

#[test]
fn connections_over_the_cap_are_closed_at_accept() {
    let s = Server::start_in(
        tempfile::tempdir().unwrap(),
        "max_connections = 2\nheader_timeout_ms = 10000",
        "",
    );
    let mut held: Vec<TcpStream> = Vec::new();
    for _ in 0..2 {
        let mut c = TcpStream::connect(host(&s.gateway)).unwrap();
        c.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        // A full request/response proves the server has taken this connection.
        c.write_all(b"GET /healthz HTTP/1.1\r\nhost: x\r\n\r\n")
            .unwrap();
        let mut buf = [0u8; 256];
        let n = c.read(&mut buf).unwrap();
        assert!(String::from_utf8_lossy(&buf[..n]).contains(" 200 "));
        held.push(c);
    }
    let resp = raw(&s.gateway, b"GET /healthz HTTP/1.1\r\nhost: x\r\n\r\n");
    assert_eq!(
        resp, "",
        "a third connection must be closed without an answer"
    );
    // The admin listener has its own cap, and the held connections still work.
    assert_eq!(curl(&format!("{}/healthz", s.admin), &[]).0, 200);
    held[0]
        .write_all(b"GET /healthz HTTP/1.1\r\nhost: x\r\n\r\n")
        .unwrap();
    let mut buf = [0u8; 256];
    let n = held[0].read(&mut buf).unwrap();
    assert!(String::from_utf8_lossy(&buf[..n]).contains(" 200 "));
    let (_, metrics) = curl(&format!("{}/metrics", s.admin), &[]);
    assert!(
        metrics
            .as_str()
            .unwrap()
            .contains("portcullis_connections_rejected_total 1")
    );
}

#[test]
fn sigterm_cancels_pending_approvals_and_drains() {
    let mut s = Server::start("");
    let url = format!("{}/v1/decide?wait=60", s.gateway);
    let key = format!("authorization: Bearer {AGENT_KEY}");
    let body = exec("eval \"$X\"").to_string();
    let waiter =
        std::thread::spawn(move || curl(&url, &["-H".into(), key, "--data-binary".into(), body]));
    // The ask is parked once its decision is logged.
    s.wait_log("decision action.id");
    assert_eq!(s.sigterm().code(), Some(0));
    let (code, v) = waiter.join().unwrap();
    assert_eq!(code, 200);
    assert_eq!(
        (v["outcome"].as_str(), v["approval"]["status"].as_str()),
        (Some("deny"), Some("cancelled")),
        "{v}"
    );
    let records = s.audit();
    assert_eq!(records.len(), 2);
    assert_eq!(records[1]["resolution"], "cancelled");
    s.verify_audit();
}

#[test]
fn audit_unwritable_denies_everything_and_recovers() {
    // A tiny tmpfs makes the disk really full (ENOSPC) for the audit writer.
    let dir = tempfile::tempdir().unwrap();
    let mnt = dir.path().join("audit");
    std::fs::create_dir_all(&mnt).unwrap();
    let ok = Command::new("mount")
        .args(["-t", "tmpfs", "-o", "size=256k", "tmpfs"])
        .arg(&mnt)
        .status()
        .unwrap();
    assert!(ok.success(), "mount tmpfs (the tests run as root)");
    struct Unmount(PathBuf);
    impl Drop for Unmount {
        fn drop(&mut self) {
            let _ = Command::new("umount").arg("-l").arg(&self.0).status();
        }
    }
    let _unmount = Unmount(mnt.clone());
    let s = Server::start_in(dir, "", "");
    assert_eq!(
        s.decide(Some(AGENT_KEY), None, &exec("ls")).1["outcome"],
        "allow"
    );
    // Fill the file system.
    let filler = mnt.join("filler");
    let mut f = std::fs::File::create(&filler).unwrap();
    let chunk = vec![0u8; 4096];
    while f.write_all(&chunk).is_ok() {}
    let _ = f.sync_all();
    drop(f);
    // The audit file's last page may still have room for a few records; after that, every
    // decision is a deny.
    let mut released = 0;
    let v = loop {
        let (code, v) = s.decide(Some(AGENT_KEY), None, &exec("ls"));
        if code == 503 {
            break v;
        }
        assert_eq!(v["outcome"], "allow", "{v}");
        released += 1;
        assert!(
            released < 8,
            "the audit log kept accepting records on a full disk"
        );
    };
    assert_eq!(
        (v["outcome"].as_str(), rule(&v)),
        (Some("deny"), "audit_unavailable")
    );
    let (code, v) = s.decide(Some(AGENT_KEY), None, &read_file("a"));
    assert_eq!((code, rule(&v)), (503, "audit_unavailable"), "{v}");
    let (code, ready) = curl(&format!("{}/readyz", s.admin), &[]);
    assert_eq!(code, 503, "{ready}");
    assert_eq!(ready["audit_writable"], false);
    assert_eq!(curl(&format!("{}/healthz", s.gateway), &[]).0, 200);
    // Room again: the next decision is recorded and released.
    std::fs::remove_file(&filler).unwrap();
    let (code, v) = s.decide(Some(AGENT_KEY), None, &exec("ls"));
    assert_eq!((code, v["outcome"].as_str()), (200, Some("allow")), "{v}");
    assert_eq!(curl(&format!("{}/readyz", s.admin), &[]).0, 200);
    s.verify_audit();
    let records = s.audit();
    assert_eq!(
        records.len(),
        2 + released,
        "the denied decisions could not be recorded; the others are"
    );
}

fn certs_init(dir: &Path, clients: &[&str]) {
    let mut cmd = bin();
    cmd.args(["certs", "init", "--dir"]).arg(dir);
    for c in clients {
        cmd.args(["--client", c]);
    }
    let out = cmd.output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

fn tls_curl(s: &Server, certs: &Path, client: Option<&str>, key: Option<&str>) -> (u16, Value) {
    let mut args = vec![
        "--cacert".to_string(),
        certs.join("ca.crt").display().to_string(),
        "--data-binary".into(),
        exec("ls").to_string(),
    ];
    if let Some(c) = client {
        args.extend([
            "--cert".into(),
            certs.join(format!("client-{c}.crt")).display().to_string(),
            "--key".into(),
            certs.join(format!("client-{c}.key")).display().to_string(),
        ]);
    }
    if let Some(k) = key {
        args.extend(["-H".into(), format!("authorization: Bearer {k}")]);
    }
    let url = format!(
        "https://localhost:{}/v1/decide",
        s.gateway.rsplit(':').next().unwrap()
    );
    curl(&url, &args)
}

#[test]
fn tls_and_mutual_tls_identify_agents() {
    let dir = tempfile::tempdir().unwrap();
    let certs = dir.path().join("certs");
    certs_init(&certs, &["builder-bot", "stranger"]);
    let tls = "[tls]\ncert = \"certs/server.crt\"\nkey = \"certs/server.key\"\nclient_ca = \"certs/ca.crt\"\n";
    let extra = format!("{tls}\n[[agents]]\nid = \"cert-bot\"\nclient_cert = \"builder-bot\"\n");
    let s = Server::start_in(dir, "", &extra);
    assert!(s.gateway.starts_with("https://"), "{}", s.gateway);
    // Server-only TLS with an API key.
    let (code, v) = tls_curl(&s, &certs, None, Some(AGENT_KEY));
    assert_eq!((code, v["outcome"].as_str()), (200, Some("allow")), "{v}");
    // The client certificate alone identifies its agent.
    let (code, v) = tls_curl(&s, &certs, Some("builder-bot"), None);
    assert_eq!((code, v["outcome"].as_str()), (200, Some("allow")), "{v}");
    // A CA-signed certificate that no agent claims, and no key: 401.
    assert_eq!(tls_curl(&s, &certs, Some("stranger"), None).0, 401);
    // A key and a certificate of different agents: 401.
    assert_eq!(
        tls_curl(&s, &certs, Some("builder-bot"), Some(AGENT_KEY)).0,
        401
    );
    // Plain HTTP to the TLS listener gets no decision.
    let (code, _) = curl(&format!("http://{}/v1/decide", host(&s.gateway)), &[]);
    assert_ne!(code, 200);
    let ids: Vec<String> = s
        .audit()
        .iter()
        .map(|r| r["action"]["agent"]["id"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(ids, ["builder-bot", "cert-bot"]);
}

#[test]
fn required_client_certificates_are_enforced_in_the_handshake() {
    let dir = tempfile::tempdir().unwrap();
    let certs = dir.path().join("certs");
    certs_init(&certs, &["builder-bot"]);
    let other = tempfile::tempdir().unwrap();
    certs_init(other.path(), &["builder-bot"]);
    let extra = "[tls]\ncert = \"certs/server.crt\"\nkey = \"certs/server.key\"\nclient_ca = \"certs/ca.crt\"\nrequire_client_cert = true\n\n[[agents]]\nid = \"cert-bot\"\nclient_cert = \"builder-bot\"\n";
    let s = Server::start_in(dir, "", extra);
    assert_eq!(
        tls_curl(&s, &certs, None, Some(AGENT_KEY)).0,
        0,
        "no client certificate: no handshake"
    );
    assert_eq!(tls_curl(&s, &certs, Some("builder-bot"), None).0, 200);
    // The same name from another CA is not accepted.
    let mut args = vec![
        "--cacert".to_string(),
        certs.join("ca.crt").display().to_string(),
        "--cert".into(),
        other
            .path()
            .join("client-builder-bot.crt")
            .display()
            .to_string(),
        "--key".into(),
        other
            .path()
            .join("client-builder-bot.key")
            .display()
            .to_string(),
    ];
    args.extend(["--data-binary".into(), exec("ls").to_string()]);
    let url = format!(
        "https://localhost:{}/v1/decide",
        s.gateway.rsplit(':').next().unwrap()
    );
    assert_eq!(curl(&url, &args).0, 0);
    // The admin listener uses the server certificate but authenticates by admin key.
    let url = format!(
        "https://localhost:{}/healthz",
        s.admin.rsplit(':').next().unwrap()
    );
    let (code, _) = curl(
        &url,
        &[
            "--cacert".into(),
            certs.join("ca.crt").display().to_string(),
        ],
    );
    assert_eq!(code, 200);
}

#[test]
fn decisions_during_reloads_never_fail() {
    let dir = tempfile::tempdir().unwrap();
    small_pack(&dir.path().join("pol"));
    let s = Server::start_in(dir, "", "[policy]\ndir = \"pol\"\n");
    let gateway = s.gateway.clone();
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let flag = stop.clone();
    let load = std::thread::spawn(move || {
        // One keep-alive connection, so requests are in flight while the set is swapped.
        let mut c = TcpStream::connect(host(&gateway)).unwrap();
        c.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        let body = exec("rm -rf /").to_string();
        let req = format!(
            "POST /v1/decide HTTP/1.1\r\nhost: x\r\nauthorization: Bearer {AGENT_KEY}\r\ncontent-length: {}\r\n\r\n{body}",
            body.len()
        );
        let mut reader = BufReader::new(c.try_clone().unwrap());
        let mut n = 0;
        while !flag.load(std::sync::atomic::Ordering::Relaxed) || n == 0 {
            c.write_all(req.as_bytes()).unwrap();
            let mut status = String::new();
            reader.read_line(&mut status).unwrap();
            assert!(status.starts_with("HTTP/1.1 200"), "{status}");
            let mut len = 0;
            loop {
                let mut h = String::new();
                reader.read_line(&mut h).unwrap();
                if h == "\r\n" {
                    break;
                }
                if let Some(v) = h.to_ascii_lowercase().strip_prefix("content-length: ") {
                    len = v.trim().parse().unwrap();
                }
            }
            let mut b = vec![0; len];
            reader.read_exact(&mut b).unwrap();
            let v: Value = serde_json::from_slice(&b).unwrap();
            assert_eq!(v["outcome"], "deny", "{v}");
            n += 1;
        }
        n
    });
    for i in 0..5 {
        std::fs::write(s.path("pol/extra.json"), format!("{{\"round\": {i}}}")).unwrap();
        let (code, v) = s.admin_post("/v1/policy/reload", "");
        assert_eq!(code, 200, "{v}");
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    assert!(load.join().unwrap() > 0);
}

#[test]
fn json_logs_carry_one_event_per_decision_and_no_secrets() {
    let mut s = Server::start_with(tempfile::tempdir().unwrap(), "", "", &["--log-json"]);
    let secret = "AKIAIOSFODNN7EXAMPLE";
    let body = json!({"kind": "exec", "via": "decide", "exec": {"command": format!("aws configure set aws_access_key_id {secret}")}});
    let (code, _) = curl(
        &format!("{}/v1/decide", s.gateway),
        &[
            "-H".into(),
            format!("authorization: Bearer {AGENT_KEY}"),
            "--data-binary".into(),
            body.to_string(),
        ],
    );
    assert_eq!(code, 200);
    assert_eq!(s.sigterm().code(), Some(0));
    // The server has exited, so its log ends; the drain thread has sent every line.
    let logs: String = std::iter::from_fn(|| s.log.recv().ok()).collect();
    let events: Vec<Value> = logs
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let decisions: Vec<&Value> = events
        .iter()
        .filter(|e| e["fields"]["message"] == "decision")
        .collect();
    assert_eq!(decisions.len(), 1, "{logs}");
    assert_eq!(decisions[0]["fields"]["agent"], "builder-bot");
    assert!(!logs.contains(secret), "a secret reached the log: {logs}");
    let audit = std::fs::read_to_string(s.path("audit/audit.jsonl")).unwrap();
    assert!(!audit.contains(secret), "a secret reached the audit log");
}

#[test]
fn shutdown_closes_connections_that_outlive_the_grace_period() {
    let mut s = Server::start_in(
        tempfile::tempdir().unwrap(),
        "shutdown_grace_ms = 200\nbody_timeout_ms = 120000",
        "",
    );
    let mut c = TcpStream::connect(host(&s.gateway)).unwrap();
    c.set_read_timeout(Some(Duration::from_secs(60))).unwrap();
    // A request whose body never finishes: without the forced close it would get a 408 only
    // after body_timeout_ms.
    c.write_all(format!("POST /v1/decide HTTP/1.1\r\nhost: x\r\nauthorization: Bearer {AGENT_KEY}\r\ncontent-length: 100\r\n\r\n{{").as_bytes()).unwrap();
    // A full request on a second connection shows the first one has been taken by the server.
    assert_eq!(curl(&format!("{}/healthz", s.gateway), &[]).0, 200);
    assert_eq!(s.sigterm().code(), Some(0));
    let mut buf = Vec::new();
    c.read_to_end(&mut buf).unwrap();
    assert!(buf.is_empty(), "{}", String::from_utf8_lossy(&buf));
}

#[test]
fn a_remote_admin_listener_without_tls_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(dir.path().join("audit")).unwrap();
    std::fs::create_dir_all(dir.path().join("ws")).unwrap();
    std::fs::write(
        dir.path().join("portcullis.toml"),
        config("admin_listen = \"0.0.0.0:0\"", ""),
    )
    .unwrap();
    let out = bin()
        .current_dir(dir.path())
        .args(["serve", "--config", "portcullis.toml"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("server.admin_listen") && err.contains("clear text"),
        "{err}"
    );
}
