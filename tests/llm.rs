//! `/llm/{upstream}/…` end to end: the real `portcullis serve`, the official `openai` and
//! `anthropic` Python SDKs with only their base URL changed, and a mock provider replaying
//! streams in the providers' wire formats (`tests/llm-fixtures`).
//!
//! Every fixture with tool calls proposes `run_shell {"command": "ls -la"}` (allowed) and
//! `run_shell {"command": "rm -rf /"}` (denied by the pack's `exec.destructive`): the SDKs must
//! parse what portcullis emits, refusals included, and surface exactly the allowed call.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "tests fail loudly"
)]

use std::process::{Child, Command, Stdio};
use std::sync::mpsc;

use serde_json::{Value, json};

mod common;

use common::llm_mock::{self, Mock};
use common::{lines_of, python, wait_line};

const AGENT_KEY: &str = "agent-llm-key";
/// An agent with a token budget smaller than one response.
const THRIFTY_KEY: &str = "agent-thrifty-key";
const ADMIN_KEY: &str = "admin-llm-key";
const OPENAI_KEY: &str = "sk-provider-openai-0123456789";
const ANTHROPIC_KEY: &str = "sk-ant-provider-0123456789";

fn sha256(s: &str) -> String {
    use sha2::Digest;
    hex::encode(sha2::Sha256::digest(s.as_bytes()))
}

struct Gateway {
    child: Child,
    dir: tempfile::TempDir,
    url: String,
    admin: String,
    mock: Mock,
    log: mpsc::Receiver<String>,
}

impl Drop for Gateway {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Gateway {
    fn start(extra: &str) -> Gateway {
        Gateway::start_with(
            extra,
            llm_mock::start(),
            tempfile::tempdir().unwrap(),
            "http",
            "",
        )
    }

    /// `scheme` and `upstream_extra` (lines for the openai upstream) let the provider be TLS.
    fn start_with(
        extra: &str,
        mock: Mock,
        dir: tempfile::TempDir,
        scheme: &str,
        upstream_extra: &str,
    ) -> Gateway {
        let ws = dir.path().join("ws");
        std::fs::create_dir(&ws).unwrap();
        let config = format!(
            r#"
[server]
listen = "127.0.0.1:0"
admin_listen = "127.0.0.1:0"

[workspace]
roots = ["{ws}"]

[audit]
path = "audit.jsonl"

[[agents]]
id = "builder"
api_key_sha256 = ["{agent}"]

[[agents]]
id = "thrifty"
api_key_sha256 = ["{thrifty}"]

[[admins]]
id = "reviewer"
api_key_sha256 = ["{admin}"]

[[budgets]]
agent = "thrifty"
tokens = 100
per = "day"

[llm]
{extra}

[[llm.upstreams]]
name = "openai"
kind = "openai"
base_url = "{scheme}://{mock}/v1"
api_key_env = "MOCK_OPENAI_KEY"
{upstream_extra}

[[llm.upstreams]]
name = "anthropic"
kind = "anthropic"
base_url = "http://{mock}"
api_key_env = "MOCK_ANTHROPIC_KEY"

[[llm.map]]
tool = "run_shell"
arg = "command"
facet = "exec"

[[llm.map]]
tool = "read_file"
arg = "path"
facet = "file"
op = "read"
"#,
            ws = ws.display(),
            agent = sha256(AGENT_KEY),
            thrifty = sha256(THRIFTY_KEY),
            admin = sha256(ADMIN_KEY),
            mock = mock.addr,
        );
        std::fs::write(dir.path().join("portcullis.toml"), config).unwrap();
        let mut child = Command::new(env!("CARGO_BIN_EXE_portcullis"))
            .current_dir(dir.path())
            .args([
                "--log",
                "portcullis=info",
                "serve",
                "--config",
                "portcullis.toml",
            ])
            .env("MOCK_OPENAI_KEY", OPENAI_KEY)
            .env("MOCK_ANTHROPIC_KEY", ANTHROPIC_KEY)
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
            mock,
            log,
        }
    }

    fn base(&self, upstream: &str) -> String {
        format!("{}/llm/{upstream}", self.url)
    }

    /// Run the official SDK against portcullis; the one JSON line it prints.
    fn sdk(&self, api: &str, model: &str, stream: bool, key: &str) -> Value {
        self.sdk_runs(&[(api, model, stream, key)]).pop().unwrap()
    }

    /// Several SDK runs, in order, in one Python process (the SDKs take seconds to import).
    fn sdk_runs(&self, runs: &[(&str, &str, bool, &str)]) -> Vec<Value> {
        let jobs: Vec<Job> = runs
            .iter()
            .map(|&(api, model, stream, key)| {
                let upstream = if api == "messages" || api == "count_tokens" {
                    "anthropic"
                } else {
                    "openai"
                };
                (
                    self.base(upstream),
                    api.to_string(),
                    model.to_string(),
                    stream,
                    key.to_string(),
                )
            })
            .collect();
        sdk_batch(&jobs)
    }

    fn audit(&self) -> Vec<Value> {
        std::fs::read_to_string(self.dir.path().join("audit.jsonl"))
            .unwrap_or_default()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect()
    }

    /// Decision records of one kind.
    fn decisions(&self, kind: &str) -> Vec<Value> {
        self.audit()
            .into_iter()
            .filter(|r| r["action"]["kind"] == kind)
            .collect()
    }
}

/// (base URL, api, model, stream, key)
type Job = (String, String, String, bool, String);

fn sdk_batch(jobs: &[Job]) -> Vec<Value> {
    use std::io::Write;
    let script = common::root().join("tests/llm-fixtures/sdk_client.py");
    let mut child = Command::new(python())
        .arg(script)
        .arg("--batch")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    for (base, api, model, stream, key) in jobs {
        let mut argv = vec![
            "--api",
            api,
            "--base-url",
            base,
            "--api-key",
            key,
            "--model",
            model,
        ];
        if *stream {
            argv.push("--stream");
        }
        writeln!(stdin, "{}", serde_json::to_string(&argv).unwrap()).unwrap();
    }
    drop(stdin);
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "sdk_client failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stdout = String::from_utf8(out.stdout).unwrap();
    let lines: Vec<Value> = stdout
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
        .collect();
    assert_eq!(lines.len(), jobs.len(), "one line per run: {stdout}");
    lines
}

const APIS: [&str; 3] = ["chat", "responses", "messages"];

fn names(v: &Value) -> Vec<(String, Value)> {
    v["tool_calls"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| {
            (
                c["name"].as_str().unwrap().to_string(),
                c["arguments"].clone(),
            )
        })
        .collect()
}

#[test]
fn text_passes_through_byte_for_byte_and_usage_is_recorded() {
    let gw = Gateway::start("");
    let models: Vec<String> = APIS.iter().map(|a| format!("{a}_text")).collect();
    let runs: Vec<(&str, &str, bool, &str)> = APIS
        .iter()
        .zip(&models)
        .flat_map(|(a, m)| {
            [
                (*a, m.as_str(), false, AGENT_KEY),
                (*a, m.as_str(), true, AGENT_KEY),
            ]
        })
        .collect();
    let results = gw.sdk_runs(&runs);
    for (&(api, _, stream, _), v) in runs.iter().zip(&results) {
        {
            assert_eq!(v["error"], Value::Null, "{api} stream={stream}: {v}");
            assert_eq!(
                v["text"], "Hello from the mock.",
                "{api} stream={stream}: {v}"
            );
            assert!(v["tool_calls"].as_array().unwrap().is_empty(), "{v}");
            if stream {
                assert_eq!(v["streamed_text"], "Hello from the mock.", "{v}");
            }
        }
    }
    // The provider got the provider key, never the agent's.
    let seen = gw.mock.seen.lock().unwrap().clone();
    assert_eq!(seen.len(), 6);
    for s in &seen {
        let agent_key_seen = s.headers.iter().any(|(_, v)| v.contains(AGENT_KEY));
        assert!(
            !agent_key_seen,
            "the agent's key reached the provider: {s:?}"
        );
        if s.path.ends_with("/v1/messages") {
            assert_eq!(s.header("x-api-key"), Some(ANTHROPIC_KEY));
            assert_eq!(s.header("authorization"), None);
        } else {
            assert_eq!(
                s.header("authorization"),
                Some(format!("Bearer {OPENAI_KEY}").as_str())
            );
        }
    }
    let paths: Vec<&str> = seen.iter().map(|s| s.path.as_str()).collect();
    assert!(
        paths.contains(&"/v1/chat/completions")
            && paths.contains(&"/v1/responses")
            && paths.contains(&"/v1/messages"),
        "{paths:?}"
    );
    // One model_request and one model_response per exchange, each with its usage.
    assert_eq!(gw.decisions("model_request").len(), 6);
    let responses = gw.decisions("model_response");
    assert_eq!(responses.len(), 6);
    for r in &responses {
        let u = &r["action"]["model"]["usage"];
        assert!(
            u["input_tokens"].as_u64().unwrap() > 0 && u["output_tokens"].as_u64().unwrap() > 0,
            "{r}"
        );
    }
}

#[test]
fn denied_tool_calls_are_replaced_and_allowed_ones_released() {
    let gw = Gateway::start("");
    let mut runs = Vec::new();
    for api in APIS {
        for stream in [false, true] {
            runs.push((api, stream, format!("{api}_tools")));
        }
    }
    runs.push(("chat", true, "chat_tools_index0".into()));
    let jobs: Vec<(&str, &str, bool, &str)> = runs
        .iter()
        .map(|(a, s, m)| (*a, m.as_str(), *s, AGENT_KEY))
        .collect();
    let results = gw.sdk_runs(&jobs);
    for ((api, stream, model), v) in runs.iter().zip(results) {
        let what = format!("{model} stream={stream}: {v}");
        assert_eq!(v["error"], Value::Null, "{what}");
        assert_eq!(
            names(&v),
            vec![("run_shell".to_string(), json!({"command": "ls -la"}))],
            "exactly the allowed call: {what}"
        );
        let text = v["text"].as_str().unwrap();
        assert!(text.starts_with("Let me check."), "{what}");
        assert!(
            text.contains("portcullis denied the tool call \"run_shell\"")
                && text.contains("exec.destructive"),
            "{what}"
        );
        let stop = v["stop"].as_str().unwrap();
        let expected = match *api {
            "chat" => "tool_calls",
            "responses" => "completed",
            _ => "tool_use",
        };
        assert_eq!(stop, expected, "a call remains: {what}");
        if *stream {
            assert!(
                v["streamed_text"]
                    .as_str()
                    .unwrap()
                    .starts_with("Let me check."),
                "{what}"
            );
        }
    }
    // Every proposed call has exactly one decision record: 2 per run.
    let calls = gw.decisions("tool_call");
    assert_eq!(calls.len(), 2 * runs.len());
    let denied: Vec<&Value> = calls
        .iter()
        .filter(|r| r["decision"]["outcome"] == "deny")
        .collect();
    assert_eq!(denied.len(), runs.len());
    for r in denied {
        assert_eq!(r["action"]["via"], "llm");
        assert_eq!(
            r["action"]["exec"]["argv"],
            json!(["rm", "-rf", "/"]),
            "{r}"
        );
    }
}

#[test]
fn a_stream_cut_inside_a_tool_call_releases_none_of_it_and_ends_with_an_error() {
    let gw = Gateway::start("");
    let models: Vec<String> = APIS.iter().map(|a| format!("{a}_truncated")).collect();
    let runs: Vec<(&str, &str, bool, &str)> = APIS
        .iter()
        .zip(&models)
        .map(|(a, m)| (*a, m.as_str(), true, AGENT_KEY))
        .collect();
    for (api, v) in APIS.iter().zip(gw.sdk_runs(&runs)) {
        let what = format!("{api}: {v}");
        assert_ne!(v["error"], Value::Null, "the SDK raised: {what}");
        assert!(
            v["error"]["message"]
                .as_str()
                .unwrap()
                .contains("before a tool call was complete"),
            "{what}"
        );
    }
    let refused: Vec<Value> = gw
        .decisions("tool_call")
        .into_iter()
        .filter(|r| r["decision"]["reasons"][0]["rule"] == "llm_incomplete_tool_call")
        .collect();
    assert_eq!(refused.len(), 3, "each cut call is recorded as refused");
}

#[test]
fn a_secret_in_the_prompt_is_redacted_before_the_provider_sees_it() {
    let gw = Gateway::start("");
    let secret = "AKIAIOSFODNN7EXAMPLE";
    let body = json!({
        "model": "chat_text",
        "messages": [{"role": "user", "content": format!("my key is {secret}")}],
    });
    let out = curl(
        &gw,
        "/llm/openai/chat/completions",
        &format!("Bearer {AGENT_KEY}"),
        &body.to_string(),
    );
    assert_eq!(out.0, 200, "{out:?}");
    let fixture = std::fs::read_to_string(llm_mock::fixtures().join("chat_text.json")).unwrap();
    assert_eq!(
        out.1, fixture,
        "a response with nothing to change goes out byte for byte"
    );
    let seen = gw.mock.seen.lock().unwrap().clone();
    let sent = seen.last().unwrap().body["messages"][0]["content"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(!sent.contains(secret), "{sent}");
    assert!(sent.contains("[REDACTED:aws_access_key]"), "{sent}");
    let r = gw.decisions("model_request").pop().unwrap();
    assert!(
        r["decision"]["labels"]
            .as_array()
            .unwrap()
            .contains(&json!("secret_in_prompt")),
        "{r}"
    );
    assert!(
        !r.to_string().contains(secret),
        "the audit record holds the finding, not the secret"
    );
}

#[test]
fn denied_tools_are_not_offered_and_never_released() {
    let gw = Gateway::start("deny_tools = [\"*/read_file\"]");
    let v = gw.sdk("chat", "chat_text", false, AGENT_KEY);
    assert_eq!(v["error"], Value::Null, "{v}");
    let seen = gw.mock.seen.lock().unwrap().clone();
    let tools: Vec<&str> = seen[0].body["tools"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["function"]["name"].as_str().unwrap())
        .collect();
    assert_eq!(tools, vec!["run_shell"], "read_file was not offered");
}

#[test]
fn a_spent_budget_is_refused_in_the_providers_shape() {
    let gw = Gateway::start("");
    // The first answer spends more than the budget (usage is charged whatever it costs)…
    let v = gw.sdk_runs(&[
        ("chat", "chat_tools", true, THRIFTY_KEY),
        ("chat", "chat_text", false, THRIFTY_KEY),
        ("responses", "responses_text", true, THRIFTY_KEY),
        ("messages", "messages_text", false, THRIFTY_KEY),
    ]);
    assert_eq!(v[0]["error"], Value::Null, "{}", v[0]);
    // …so the next requests are refused before reaching the provider.
    for v in &v[1..] {
        assert_eq!(v["error"]["status"], 429, "{v}");
        assert_eq!(v["error"]["class"], "RateLimitError", "{v}");
    }
    assert_eq!(gw.mock.seen.lock().unwrap().len(), 1);
}

#[test]
fn unknown_credentials_routes_and_upstream_errors_are_refused_in_the_providers_shape() {
    let gw = Gateway::start("first_byte_timeout_ms = 300");
    let v = sdk_batch(&[
        (
            gw.base("openai"),
            "chat".into(),
            "chat_text".into(),
            false,
            "not-a-key".into(),
        ),
        (
            gw.base("anthropic"),
            "messages".into(),
            "messages_text".into(),
            true,
            "not-a-key".into(),
        ),
    ]);
    for v in v {
        assert_eq!(v["error"]["status"], 401, "{v}");
        assert_eq!(v["error"]["class"], "AuthenticationError", "{v}");
    }
    // Endpoints that could run a model without these checks are not proxied.
    for path in [
        "/llm/openai/batches",
        "/llm/openai/v1/messages",
        "/llm/nowhere/chat/completions",
    ] {
        let out = curl(&gw, path, &format!("Bearer {AGENT_KEY}"), "{}");
        assert_eq!(out.0, 404, "{path}: {out:?}");
    }
    // A web page cannot use the endpoint: not cross-site, not through a rebinding name.
    for header in ["Origin: http://evil.example", "Host: evil.example"] {
        let (status, body) = curl_with(&gw, "/llm/openai/chat/completions", &[header], "{}");
        assert_eq!(status, 403, "{header}: {body}");
    }
    // Ambiguous JSON is refused, not guessed at.
    let out = curl(
        &gw,
        "/llm/openai/chat/completions",
        &format!("Bearer {AGENT_KEY}"),
        r#"{"model":"a","model":"b","messages":[]}"#,
    );
    assert_eq!(out.0, 400, "{out:?}");
    assert!(out.1.contains("duplicate"), "{out:?}");
    // The provider's own error passes on; a stalled provider times out.
    let v = gw.sdk_runs(&[
        ("chat", "status-503", false, AGENT_KEY),
        ("responses", "stall", true, AGENT_KEY),
    ]);
    assert_eq!(v[0]["error"]["status"], 503, "{}", v[0]);
    assert!(
        v[0]["error"]["message"]
            .as_str()
            .unwrap()
            .contains("mock says 503"),
        "{}",
        v[0]
    );
    assert_eq!(v[1]["error"]["status"], 504, "{}", v[1]);
    assert_eq!(gw.decisions("tool_call").len(), 0);
}

/// The id of the next approval the gateway parks (from its decision log line).
fn next_approval(gw: &Gateway) -> String {
    let line = wait_line(&gw.log, "outcome=ask");
    line.split("approval.id=")
        .nth(1)
        .unwrap()
        .split([' ', '"'])
        .find(|s| !s.is_empty())
        .unwrap()
        .to_string()
}

fn resolve(gw: &Gateway, id: &str, verb: &str) {
    let out = Command::new("curl")
        .args([
            "-sS",
            "-X",
            "POST",
            "-H",
            &format!("Authorization: Bearer {ADMIN_KEY}"),
        ])
        .arg(format!("{}/v1/approvals/{id}/{verb}", gw.admin))
        .output()
        .unwrap();
    let body = String::from_utf8_lossy(&out.stdout);
    assert!(
        body.contains(if verb == "approve" {
            "approved"
        } else {
            "denied"
        }),
        "{body}"
    );
}

#[test]
fn an_ask_holds_the_response_until_a_human_answers() {
    let gw = Gateway::start("");
    let base = gw.base("openai");
    // Streaming: the text before the call has gone out; the `sudo ls` call waits for approval.
    let waiting = std::thread::spawn(move || {
        sdk_batch(&[(
            base,
            "chat".into(),
            "chat_ask".into(),
            true,
            AGENT_KEY.into(),
        )])
    });
    let id = next_approval(&gw);
    assert!(
        !waiting.is_finished(),
        "the response is held while the approval is pending"
    );
    resolve(&gw, &id, "approve");
    let v = waiting.join().unwrap().pop().unwrap();
    assert_eq!(v["error"], Value::Null, "{v}");
    assert_eq!(
        names(&v),
        vec![
            ("run_shell".to_string(), json!({"command": "ls -la"})),
            ("run_shell".to_string(), json!({"command": "sudo ls"})),
        ],
        "approved: both calls released: {v}"
    );
    // Not streaming, denied by the human: the call is replaced and the turn ends.
    let base = gw.base("anthropic");
    let waiting = std::thread::spawn(move || {
        sdk_batch(&[(
            base,
            "messages".into(),
            "messages_ask".into(),
            false,
            AGENT_KEY.into(),
        )])
    });
    let id = next_approval(&gw);
    resolve(&gw, &id, "deny");
    let v = waiting.join().unwrap().pop().unwrap();
    assert_eq!(v["error"], Value::Null, "{v}");
    assert_eq!(
        names(&v),
        vec![("run_shell".to_string(), json!({"command": "ls -la"}))],
        "{v}"
    );
    assert!(
        v["text"].as_str().unwrap().contains("approval_denied"),
        "{v}"
    );
    assert_eq!(v["stop"], "tool_use", "the allowed call remains: {v}");
}

/// A mock provider over TLS, with certificates `portcullis certs init` made in `dir/certs`.
fn tls_mock(dir: &tempfile::TempDir) -> (std::path::PathBuf, Mock) {
    let certs = dir.path().join("certs");
    let out = Command::new(env!("CARGO_BIN_EXE_portcullis"))
        .args(["certs", "init", "--dir"])
        .arg(&certs)
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    let mock = llm_mock::start_tls(&certs.join("server.crt"), &certs.join("server.key"));
    (certs, mock)
}

#[test]
fn an_https_provider_is_verified_against_the_configured_ca() {
    let dir = tempfile::tempdir().unwrap();
    let (certs, mock) = tls_mock(&dir);
    let ca = format!("ca_file = \"{}\"", certs.join("ca.crt").display());
    let gw = Gateway::start_with("", mock, dir, "https", &ca);
    let v = gw.sdk_runs(&[
        ("chat", "chat_tools", false, AGENT_KEY),
        ("chat", "chat_tools", true, AGENT_KEY),
    ]);
    for v in v {
        assert_eq!(v["error"], Value::Null, "{v}");
        assert_eq!(
            names(&v),
            vec![("run_shell".to_string(), json!({"command": "ls -la"}))],
            "{v}"
        );
    }
    assert_eq!(gw.mock.seen.lock().unwrap().len(), 2);

    // Without the CA (the system bundle does not know it) the provider is not trusted.
    let dir = tempfile::tempdir().unwrap();
    let (_, mock) = tls_mock(&dir);
    let gw = Gateway::start_with("", mock, dir, "https", "");
    let v = gw.sdk("chat", "chat_text", false, AGENT_KEY);
    assert_eq!(v["error"]["status"], 502, "{v}");
    assert!(
        v["error"]["message"].as_str().unwrap().contains("TLS"),
        "{v}"
    );
    assert_eq!(gw.mock.seen.lock().unwrap().len(), 0);
}

#[test]
fn a_provider_that_goes_silent_or_away_fails_closed() {
    let gw = Gateway::start("idle_timeout_ms = 300");
    // Silent in the middle of the second call (after its first argument fragment).
    let events =
        llm_mock::events(&std::fs::read(llm_mock::fixtures().join("chat_tools.sse")).unwrap());
    let cut = events
        .iter()
        .rposition(|e| String::from_utf8_lossy(e).contains("call_nJ5"))
        .unwrap()
        + 2;
    let model = format!("chat_tools@stall{cut}");
    let v = gw.sdk("chat", &model, true, AGENT_KEY);
    assert!(
        v["error"]["message"]
            .as_str()
            .unwrap()
            .contains("sent nothing for 300 ms"),
        "{v}"
    );
    let rules: Vec<String> = gw
        .decisions("tool_call")
        .iter()
        .map(|r| {
            format!(
                "{}:{}",
                r["decision"]["outcome"],
                r["decision"]["reasons"][0]["rule"].as_str().unwrap_or("")
            )
        })
        .collect();
    assert_eq!(
        rules,
        vec![
            "\"allow\":".to_string(),
            "\"deny\":llm_incomplete_tool_call".to_string()
        ],
        "the complete call was decided, the cut one refused"
    );

    // A provider that is not there at all.
    let closed = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let gone = format!(
        "[[llm.upstreams]]\nname = \"gone\"\nkind = \"openai\"\nbase_url = \"http://{closed}/v1\"\n"
    );
    let gw = Gateway::start(&gone);
    let v = sdk_batch(&[(
        gw.base("gone"),
        "chat".into(),
        "chat_text".into(),
        true,
        AGENT_KEY.into(),
    )])
    .pop()
    .unwrap();
    assert_eq!(v["error"]["status"], 502, "{v}");
    assert!(
        v["error"]["message"]
            .as_str()
            .unwrap()
            .contains("cannot connect"),
        "{v}"
    );
}

#[test]
fn a_token_count_is_decided_as_a_request_and_not_charged() {
    let gw = Gateway::start("");
    let v = gw.sdk("count_tokens", "claude-x", false, THRIFTY_KEY);
    assert_eq!(v["error"], Value::Null, "{v}");
    assert_eq!(v["usage"]["input_tokens"], 412, "{v}");
    let seen = gw.mock.seen.lock().unwrap().clone();
    assert_eq!(seen[0].path, "/v1/messages/count_tokens");
    assert_eq!(seen[0].header("x-api-key"), Some(ANTHROPIC_KEY));
    assert_eq!(gw.decisions("model_request").len(), 1);
    assert_eq!(
        gw.decisions("model_response").len(),
        0,
        "nothing was generated"
    );
}

#[test]
fn a_shell_call_the_agent_would_run_is_decided_as_the_exec_it_is() {
    let gw = Gateway::start("");
    let body = json!({"model": "responses_shell", "input": "clean up", "tools": [{"type": "local_shell"}]});
    let (status, out) = curl(
        &gw,
        "/llm/openai/responses",
        &format!("Bearer {AGENT_KEY}"),
        &body.to_string(),
    );
    assert_eq!(status, 200, "{out}");
    let v: Value = serde_json::from_str(&out).unwrap();
    let types: Vec<&str> = v["output"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["type"].as_str().unwrap())
        .collect();
    assert_eq!(
        types,
        vec!["message", "function_call", "message"],
        "the shell call is replaced: {v}"
    );
    assert!(
        v["output"][2]["content"][0]["text"]
            .as_str()
            .unwrap()
            .contains("exec.destructive"),
        "{v}"
    );
    let shell = gw
        .decisions("tool_call")
        .into_iter()
        .find(|r| r["action"]["tool"]["name"] == "local_shell")
        .unwrap();
    assert_eq!(
        shell["action"]["exec"]["argv"],
        json!(["rm", "-rf", "/"]),
        "{shell}"
    );
    assert_eq!(shell["decision"]["outcome"], "deny");
    let offered = gw.decisions("model_request").pop().unwrap();
    assert_eq!(
        offered["action"]["model"]["tools"],
        json!(["local_shell"]),
        "a built-in tool is named by its type"
    );
}

/// (status, body) of a POST with curl.
fn curl(gw: &Gateway, path: &str, auth: &str, body: &str) -> (u16, String) {
    curl_with(gw, path, &[&format!("Authorization: {auth}")], body)
}

/// (status, body) of a POST with curl and these headers.
fn curl_with(gw: &Gateway, path: &str, headers: &[&str], body: &str) -> (u16, String) {
    let mut cmd = Command::new("curl");
    cmd.args(["-sS", "--max-time", "30", "-w", "\n%{http_code}"]);
    for h in headers {
        cmd.args(["-H", h]);
    }
    let out = cmd
        .args([
            "-H",
            "Content-Type: application/json",
            "--data-binary",
            body,
        ])
        .arg(format!("{}{path}", gw.url))
        .output()
        .unwrap();
    let text = String::from_utf8(out.stdout).unwrap();
    let (body, code) = text.rsplit_once('\n').unwrap();
    (code.parse().unwrap(), body.to_string())
}
