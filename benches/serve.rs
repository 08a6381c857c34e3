//! `cargo bench --bench serve`: the gateway over keep-alive HTTP/1.1 on loopback. `POST
//! /v1/decide` against the trivial `GET /healthz` on the same server in the same run, at a fixed
//! 1 000 requests/s and at saturation, once with a durable audit log (fdatasync group commit,
//! the default) and once buffered, plus an in-process split of where a decision's time goes.
//!
//! The server runs in-process (tokio, 2 workers); the clients are blocking `std::net` sockets
//! on their own threads, so they share the machine's CPUs with the server. Fixed-rate latency
//! is measured from the scheduled send time (open loop), so a stall is charged to every request
//! queued behind it. Figures are printed as tables with the targets beside them; compare rows
//! of the same run, not runs on different machines (DESIGN §8). Nothing here asserts a
//! threshold, but a failed request aborts the run: a benchmark of errors measures nothing.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "a benchmark fails loudly"
)]

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::sync::Barrier;
use std::time::{Duration, Instant};

use portcullis::action::{Action, Decision, Outcome};
use portcullis::audit::{AuditLog, AuditStats, Durability, Entry};
use portcullis::config::Config;
use portcullis::gate::to_input;
use portcullis::input::parse_action;
use portcullis::server::App;
use serde::Serialize;
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

const KEY: &str = "bench-agent-key";
/// Requests per second of the fixed-rate phase.
const RATE: u32 = 1_000;
/// Fixed-rate requests per route (5 s at `RATE`).
const FIXED_PER_ROUTE: usize = 5_000;
/// Fixed-rate requests go in alternating blocks of this many per route, each block on its own
/// schedule, so a decide stall never queues into the trivial handler's figures.
const BLOCK: usize = 500;
/// Closed-loop requests per route before the fixed-rate phase.
const WARMUP: usize = 1_000;
const SATURATION: Duration = Duration::from_secs(3);
const CONNECTIONS: [usize; 2] = [1, 4];
/// In-process iterations per breakdown stage.
const STAGE_ITERATIONS: usize = 2_000;

const TARGET_ADDED_P50: f64 = 150.0;
const TARGET_ADDED_P99: f64 = 500.0;
const TARGET_RATIO: f64 = 0.5;

fn main() {
    // What `portcullis serve` installs by default (`--log warn`, to stderr).
    let _ = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::new("warn"))
        .with_writer(std::io::stderr)
        .try_init();
    let began = Instant::now();
    let runs: Vec<Run> = ["durable", "buffered"].into_iter().map(run).collect();
    report(&runs);
    println!();
    println!("total {:.1} s", began.elapsed().as_secs_f64());
}

// === one server, one durability mode ===

/// Everything measured against one server.
struct Run {
    mode: &'static str,
    /// Each action of the mix and what the server decided for it.
    mix: Vec<String>,
    fixed: Fixed,
    saturation: Vec<Saturation>,
    stages: Vec<(&'static str, Vec<f64>)>,
    audit_records: usize,
    decisions: usize,
}

struct Fixed {
    health: Vec<f64>,
    decide: Vec<f64>,
    /// Requests sent late because the previous response had not arrived by their slot.
    late: [usize; 2],
    /// Audit records per write batch (per fdatasync, when durable) over the decide blocks.
    per_batch: f64,
}

struct Saturation {
    conns: usize,
    health: Load,
    decide: Load,
    per_batch: f64,
}

struct Load {
    rps: f64,
    latencies: Vec<f64>,
}

fn run(mode: &'static str) -> Run {
    // Not tempfile's default `.tmpXXXX`: a dot directory looks like a hidden config dir to the
    // pack's secret checks and would send every workspace path down the slow path.
    let ws = tempfile::Builder::new()
        .prefix("bench-ws")
        .tempdir()
        .unwrap();
    let root = ws.path().canonicalize().unwrap();
    std::fs::create_dir_all(root.join("src")).unwrap();
    std::fs::write(root.join("src/main.rs"), "fn main() {}\n").unwrap();
    std::fs::write(root.join("README.md"), "# bench\n").unwrap();
    let state = tempfile::Builder::new()
        .prefix("bench-audit")
        .tempdir()
        .unwrap();
    let dir = state.path().canonicalize().unwrap();
    let audit_path = dir.join("audit.jsonl");
    let config = Config::parse(
        &config_text(&root, &audit_path, mode),
        &dir.join("portcullis.toml"),
    )
    .unwrap();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let running = rt.block_on(portcullis::server::start(config)).unwrap();
    let addr = running.gateway;
    let app = running.app.clone();
    let audit = app.gate.audit().cloned().unwrap();
    let reqs = Requests::new();
    let mut decisions = 0;

    let mix = probe(addr, &reqs);
    decisions += reqs.decide.len();

    eprintln!("[{mode}] fixed rate: {RATE} req/s, {FIXED_PER_ROUTE} requests per route");
    let fixed = fixed_rate(addr, &reqs, &audit);
    decisions += WARMUP + FIXED_PER_ROUTE;

    let mut saturation = Vec::new();
    for conns in CONNECTIONS {
        eprintln!("[{mode}] saturation: {conns} connection(s), {SATURATION:?} per route");
        let health = saturate(addr, &reqs, Route::Health, conns);
        let before = audit.stats();
        let decide = saturate(addr, &reqs, Route::Decide, conns);
        let after = audit.stats();
        decisions += decide.latencies.len() + conns * CONN_WARMUP;
        saturation.push(Saturation {
            conns,
            health,
            decide,
            per_batch: per_batch(before, after),
        });
    }

    eprintln!("[{mode}] in-process stages");
    let stages = stages(&rt, &app, &reqs, &dir);
    // The handler loop, the service-input pass and the enqueue loop each leave records.
    decisions += 2 * STAGE_ITERATIONS + reqs.decide.len();

    drop(app);
    rt.block_on(running.shutdown()).unwrap();
    let audit_records = std::fs::read_to_string(&audit_path)
        .unwrap()
        .lines()
        .filter(|l| l.contains("\"type\":\"decision\""))
        .count();
    assert_eq!(
        audit_records, decisions,
        "{mode}: every answered decision must have its audit record"
    );
    Run {
        mode,
        mix,
        fixed,
        saturation,
        stages,
        audit_records,
        decisions,
    }
}

fn config_text(root: &Path, audit: &Path, durability: &str) -> String {
    let key = hex::encode(Sha256::digest(KEY.as_bytes()));
    format!(
        r#"
[server]
listen = "127.0.0.1:0"
admin_listen = "127.0.0.1:0"
shutdown_grace_ms = 2000
reload_poll_ms = 0

[workspace]
roots = ["{}"]

[network]
allow_hosts = ["api.github.com"]

[audit]
path = "{}"
durability = "{durability}"

[[agents]]
id = "bench-bot"
api_key_sha256 = ["{key}"]
"#,
        root.display(),
        audit.display()
    )
}

// === what is sent ===

#[derive(Clone, Copy, PartialEq, Eq)]
enum Route {
    Health,
    Decide,
}

impl Route {
    fn name(self) -> &'static str {
        match self {
            Route::Health => "GET /healthz",
            Route::Decide => "POST /v1/decide",
        }
    }
}

/// Pre-built request bytes.
struct Requests {
    health: Vec<u8>,
    /// (name, JSON body, whole request), rotated on every decide request.
    decide: Vec<(&'static str, Vec<u8>, Vec<u8>)>,
}

impl Requests {
    fn new() -> Requests {
        let decide = actions()
            .into_iter()
            .map(|(name, action)| {
                let body = serde_json::to_vec(&action).unwrap();
                let mut req = format!(
                    "POST /v1/decide HTTP/1.1\r\nhost: 127.0.0.1\r\nauthorization: Bearer {KEY}\r\n\
                     content-type: application/json\r\ncontent-length: {}\r\n\r\n",
                    body.len()
                )
                .into_bytes();
                req.extend_from_slice(&body);
                (name, body, req)
            })
            .collect();
        Requests {
            health: b"GET /healthz HTTP/1.1\r\nhost: 127.0.0.1\r\n\r\n".to_vec(),
            decide,
        }
    }

    fn get(&self, route: Route, i: usize) -> &[u8] {
        match route {
            Route::Health => &self.health,
            Route::Decide => &self.decide[i % self.decide.len()].2,
        }
    }
}

/// The mix: ordinary agent work plus one deny. None of them asks (an ask parks an approval),
/// and only allows label a session, and none of these allows does, so the session stays clean.
fn actions() -> Vec<(&'static str, Value)> {
    vec![
        (
            "file read in workspace",
            json!({"kind": "file", "via": "decide", "file": {"op": "read", "path": "src/main.rs"}}),
        ),
        (
            "exec cargo test",
            json!({"kind": "exec", "via": "decide", "exec": {"command": "cargo test"}}),
        ),
        (
            "https GET allowlisted host",
            json!({"kind": "http_request", "via": "decide", "http": {"url": "https://api.github.com/repos/example/app/pulls", "method": "GET"}}),
        ),
        (
            "tool call fs/read_file",
            json!({"kind": "tool_call", "via": "mcp", "tool": {"server": "fs", "name": "read_file", "arguments": {"path": "README.md"}}}),
        ),
        (
            "model request",
            json!({"kind": "model_request", "via": "llm", "model": {"provider": "openai", "name": "gpt-5.5"}, "content": {"text": "Summarise the failing test output and suggest a fix."}}),
        ),
        (
            "exec rm -rf ~/",
            json!({"kind": "exec", "via": "decide", "exec": {"command": "rm -rf ~/"}}),
        ),
    ]
}

// === the client ===

/// A blocking keep-alive HTTP/1.1 connection.
struct Client {
    stream: TcpStream,
    buf: Vec<u8>,
    len: usize,
    /// Bytes of `buf` that belong to the last response, dropped before the next request.
    used: usize,
}

impl Client {
    fn connect(addr: SocketAddr) -> Client {
        let stream = TcpStream::connect(addr).unwrap();
        stream.set_nodelay(true).unwrap();
        stream
            .set_read_timeout(Some(Duration::from_secs(30)))
            .unwrap();
        Client {
            stream,
            buf: vec![0; 64 * 1024],
            len: 0,
            used: 0,
        }
    }

    /// One request, one response: the status and exactly Content-Length body bytes. An error
    /// means the connection is unusable.
    fn call(&mut self, req: &[u8]) -> Result<(u16, &[u8]), String> {
        if self.used > 0 {
            self.buf.copy_within(self.used..self.len, 0);
            self.len -= self.used;
            self.used = 0;
        }
        self.stream
            .write_all(req)
            .map_err(|e| format!("write: {e}"))?;
        let head_end = loop {
            if let Some(i) = find(&self.buf[..self.len], b"\r\n\r\n") {
                break i + 4;
            }
            self.fill()?;
        };
        let head = std::str::from_utf8(&self.buf[..head_end])
            .map_err(|_| "the response head is not UTF-8".to_string())?;
        let status = head
            .strip_prefix("HTTP/1.1 ")
            .and_then(|r| r.get(..3))
            .and_then(|c| c.parse::<u16>().ok())
            .ok_or_else(|| format!("bad status line in {head:?}"))?;
        let mut length = None;
        for line in head.split("\r\n").skip(1) {
            let Some((name, value)) = line.split_once(':') else {
                continue;
            };
            if name.eq_ignore_ascii_case("content-length") {
                length = value.trim().parse::<usize>().ok();
            } else if name.eq_ignore_ascii_case("connection")
                && value.trim().eq_ignore_ascii_case("close")
            {
                return Err(format!("the server closes the connection: {head:?}"));
            }
        }
        let length = length.ok_or_else(|| format!("no content-length in {head:?}"))?;
        let end = head_end + length;
        while self.len < end {
            self.fill()?;
        }
        self.used = end;
        Ok((status, &self.buf[head_end..end]))
    }

    fn fill(&mut self) -> Result<(), String> {
        if self.len == self.buf.len() {
            self.buf.resize(self.buf.len() * 2, 0);
        }
        match self.stream.read(&mut self.buf[self.len..]) {
            Ok(0) => Err("the server closed the connection".into()),
            Ok(n) => {
                self.len += n;
                Ok(())
            }
            Err(e) => Err(format!("read: {e}")),
        }
    }

    /// Send and check one request; false when the connection is gone.
    fn send(&mut self, route: Route, req: &[u8], tally: &mut Tally) -> bool {
        match self.call(req) {
            Ok((status, body)) => {
                if let Err(e) = check(route, status, body) {
                    tally.note(e);
                }
                true
            }
            Err(e) => {
                tally.note(e);
                false
            }
        }
    }
}

/// Every answer must be the real thing: a 200 with `ok` or with a decision that did not ask.
fn check(route: Route, status: u16, body: &[u8]) -> Result<(), String> {
    let ok = status == 200
        && match route {
            Route::Health => body == b"ok\n",
            Route::Decide => {
                find(body, b"\"outcome\"").is_some() && find(body, b"\"outcome\":\"ask\"").is_none()
            }
        };
    if ok {
        Ok(())
    } else {
        Err(format!(
            "{} answered {status}: {}",
            route.name(),
            String::from_utf8_lossy(body)
        ))
    }
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

#[derive(Default)]
struct Tally {
    failed: usize,
    first: Option<String>,
}

impl Tally {
    fn note(&mut self, e: String) {
        self.failed += 1;
        self.first.get_or_insert(e);
    }

    fn check(&self, phase: &str, sent: usize) {
        if self.failed > 0 {
            panic!(
                "{phase}: {} of {sent} requests failed; the first: {}",
                self.failed,
                self.first.as_deref().unwrap_or("")
            );
        }
    }
}

// === phases ===

/// Send each action of the mix once and say what was decided; an ask aborts the run.
fn probe(addr: SocketAddr, reqs: &Requests) -> Vec<String> {
    let mut c = Client::connect(addr);
    reqs.decide
        .iter()
        .map(|(name, _, req)| {
            let (status, body) = c.call(req).unwrap();
            let v: Value = serde_json::from_slice(body).unwrap();
            assert_eq!(status, 200, "{name}: {v}");
            let outcome = v["outcome"].as_str().unwrap_or("?").to_string();
            assert!(
                outcome == "allow" || outcome == "deny",
                "{name}: {outcome} ({v}); the mix must not park approvals"
            );
            let rules: Vec<&str> = v["reasons"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(|r| r["rule"].as_str())
                .collect();
            if rules.is_empty() {
                format!("{name} ({outcome})")
            } else {
                format!("{name} ({outcome}: {})", rules.join(", "))
            }
        })
        .collect()
}

/// One connection, open loop at `RATE`. A request is timed from its scheduled slot when it went
/// out late (the previous response had not arrived: server time) and from the moment it was
/// written otherwise (so the client's own oversleep is not charged to the server).
fn fixed_rate(addr: SocketAddr, reqs: &Requests, audit: &AuditLog) -> Fixed {
    let mut c = Client::connect(addr);
    let mut tally = Tally::default();
    for i in 0..WARMUP {
        for route in [Route::Decide, Route::Health] {
            if !c.send(route, reqs.get(route, i), &mut tally) {
                break;
            }
        }
    }
    tally.check("fixed-rate warm-up", 2 * WARMUP);
    let interval = Duration::from_secs(1) / RATE;
    let mut health = Vec::with_capacity(FIXED_PER_ROUTE);
    let mut decide = Vec::with_capacity(FIXED_PER_ROUTE);
    let mut late = [0; 2];
    let mut records = 0;
    let mut batches = 0;
    let mut sent = 0;
    'blocks: for block in 0..2 * FIXED_PER_ROUTE / BLOCK {
        let route = if block % 2 == 0 {
            Route::Health
        } else {
            Route::Decide
        };
        let before = audit.stats();
        let t0 = Instant::now() + Duration::from_millis(2);
        for k in 0..BLOCK {
            let due = t0 + interval * k as u32;
            let now = Instant::now();
            let start = if now >= due {
                late[route as usize] += 1;
                due
            } else {
                std::thread::sleep(due - now);
                Instant::now()
            };
            sent += 1;
            if !c.send(route, reqs.get(route, block * BLOCK + k), &mut tally) {
                break 'blocks;
            }
            let us = start.elapsed().as_secs_f64() * 1e6;
            match route {
                Route::Health => health.push(us),
                Route::Decide => decide.push(us),
            }
        }
        if route == Route::Decide {
            let after = audit.stats();
            records += after.records_written - before.records_written;
            batches += after.batches - before.batches;
        }
    }
    tally.check("fixed rate", sent);
    Fixed {
        health,
        decide,
        late,
        per_batch: records as f64 / batches.max(1) as f64,
    }
}

/// Closed-loop requests per connection before its measured run.
const CONN_WARMUP: usize = 50;

/// `conns` connections, each on its own thread, closed loop for `SATURATION`.
fn saturate(addr: SocketAddr, reqs: &Requests, route: Route, conns: usize) -> Load {
    let barrier = Barrier::new(conns);
    let results: Vec<(Vec<f64>, Duration, Tally)> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..conns)
            .map(|k| {
                let barrier = &barrier;
                s.spawn(move || {
                    let mut c = Client::connect(addr);
                    let mut tally = Tally::default();
                    for i in 0..CONN_WARMUP {
                        c.send(route, reqs.get(route, k + i), &mut tally);
                    }
                    barrier.wait();
                    let start = Instant::now();
                    let deadline = start + SATURATION;
                    let mut lat = Vec::with_capacity(100_000);
                    let mut i = k;
                    loop {
                        let t = Instant::now();
                        if t >= deadline {
                            break;
                        }
                        if !c.send(route, reqs.get(route, i), &mut tally) {
                            break;
                        }
                        lat.push(t.elapsed().as_secs_f64() * 1e6);
                        i += 1;
                    }
                    (lat, start.elapsed(), tally)
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    let mut latencies = Vec::new();
    let mut secs = 0.0;
    for (lat, elapsed, tally) in results {
        tally.check(
            &format!("saturation {} x{conns}", route.name()),
            lat.len() + CONN_WARMUP,
        );
        latencies.extend(lat);
        secs += elapsed.as_secs_f64() / conns as f64;
    }
    Load {
        rps: latencies.len() as f64 / secs,
        latencies,
    }
}

fn per_batch(before: AuditStats, after: AuditStats) -> f64 {
    let records = after.records_written - before.records_written;
    let batches = after.batches - before.batches;
    records as f64 / batches.max(1) as f64
}

/// The decide handler's work in-process, without HTTP, on the same server's gate.
fn stages(
    rt: &tokio::runtime::Runtime,
    app: &App,
    reqs: &Requests,
    dir: &Path,
) -> Vec<(&'static str, Vec<f64>)> {
    let bodies: Vec<&[u8]> = reqs.decide.iter().map(|(_, b, _)| b.as_slice()).collect();
    let n = bodies.len();
    let mut i = 0;
    let parse = time(STAGE_ITERATIONS, || {
        i += 1;
        std::hint::black_box(parse_action(bodies[i % n]).unwrap());
    });
    let parsed: Vec<_> = bodies.iter().map(|b| parse_action(b).unwrap()).collect();
    let policy = app.gate.policy();
    let policy_row = time(STAGE_ITERATIONS, || {
        i += 1;
        let mut a = parsed[i % n].clone();
        app.gate.normalize(&mut a).unwrap();
        std::hint::black_box(policy.decide(to_input(&a).unwrap()));
    });
    let caller = app.identities.agent(Some(KEY), None).unwrap();
    let audit = app.gate.audit().cloned().unwrap();
    let durable = app.config.audit.durability == Durability::Durable;
    // What decide_for hands the policy and the audit log: the action with agent and session.
    let service: Vec<(Action, Decision)> = rt.block_on(async {
        let mut out = Vec::new();
        for body in &bodies {
            let pending = app
                .gate
                .decide_for(&caller, "bench-inproc", parse_action(body).unwrap())
                .unwrap();
            let action = pending.action.clone();
            out.push((action, pending.release().await.decision));
        }
        out
    });
    let service_policy = time(STAGE_ITERATIONS, || {
        i += 1;
        let (a, _) = &service[i % n];
        std::hint::black_box(policy.decide(to_input(a).unwrap()));
    });
    let entry = time(STAGE_ITERATIONS, || {
        i += 1;
        let (action, decision) = &service[i % n];
        let record = Record {
            record_type: "decision",
            action,
            decision,
            policy_digest: &decision.policy_digest,
            latency_us: 100,
        };
        std::hint::black_box(Entry::from_serialize(&record).unwrap());
    });
    let store = app.gate.state().cloned().unwrap();
    let state_row = time(STAGE_ITERATIONS, || {
        i += 1;
        let (a, _) = &service[i % n];
        std::hint::black_box(store.session("bench-bot", "bench-state"));
        std::hint::black_box(store.check_limits("bench-bot", a).is_ok());
        store.count("bench-bot", "bench-state", a.kind);
    });
    // Enqueue only (the receipt is waited for outside the timed region): the channel send and
    // the writer thread's wake-up.
    let mut enqueue = Vec::with_capacity(STAGE_ITERATIONS);
    for k in 0..STAGE_ITERATIONS {
        let (action, decision) = &service[k % n];
        let entry = Entry::from_serialize(&Record {
            record_type: "decision",
            action,
            decision,
            policy_digest: &decision.policy_digest,
            latency_us: 100,
        })
        .unwrap();
        let t = Instant::now();
        let receipt = audit.submit(entry).unwrap();
        enqueue.push(t.elapsed().as_secs_f64() * 1e6);
        receipt.wait().unwrap();
    }
    // One decision at a time, so every batch holds one record and `last_fsync_us` read after
    // its receipt resolved is that record's own fdatasync.
    let (submit, ack, fsync, handler) = rt.block_on(async {
        let mut rows: [Vec<f64>; 4] = Default::default();
        for i in 0..STAGE_ITERATIONS {
            let t = Instant::now();
            let action = parse_action(bodies[i % n]).unwrap();
            let pending = app
                .gate
                .decide_for(&caller, "bench-inproc", action)
                .unwrap();
            let submitted = Instant::now();
            let verdict = pending.release().await;
            let done = Instant::now();
            assert_ne!(verdict.decision.outcome, Outcome::Ask);
            rows[0].push((submitted - t).as_secs_f64() * 1e6);
            rows[1].push((done - submitted).as_secs_f64() * 1e6);
            rows[2].push(audit.stats().last_fsync_us as f64);
            rows[3].push((done - t).as_secs_f64() * 1e6);
        }
        let [a, b, c, d] = rows;
        (a, b, c, d)
    });
    let mut out = vec![
        ("parse body into an Action", parse),
        ("normalize + policy (rvm)", policy_row),
        (
            "policy on the service input (agent, session)",
            service_policy,
        ),
        ("session state: snapshot + limits + count", state_row),
        ("audit entry: serialize action + decision", entry),
        ("audit submit (enqueue, wake the writer)", enqueue),
        ("parse + decide_for (to audit submit)", submit),
        ("audit ack wait (release)", ack),
    ];
    if durable {
        out.push(("  of which the writer's fdatasync", fsync));
    }
    out.push(("parse + decide_for + audit ack", handler));
    out.push(("bare fdatasync, 600 B append, same dir", fsync_probe(dir)));
    out
}

/// The shape of the gate's audit record, to time its serialization.
#[derive(Serialize)]
struct Record<'a> {
    #[serde(rename = "type")]
    record_type: &'static str,
    action: &'a Action,
    decision: &'a Decision,
    policy_digest: &'a str,
    latency_us: u64,
}

fn time(n: usize, mut f: impl FnMut()) -> Vec<f64> {
    for _ in 0..n / 10 {
        f();
    }
    let mut out = Vec::with_capacity(n);
    for _ in 0..n {
        let t = Instant::now();
        f();
        out.push(t.elapsed().as_secs_f64() * 1e6);
    }
    out
}

/// What one fdatasync of a small append costs next to the audit log, with no server around it.
fn fsync_probe(dir: &Path) -> Vec<f64> {
    let mut f = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(dir.join("fsync-probe.jsonl"))
        .unwrap();
    let line = [b'x'; 600];
    (0..300)
        .map(|_| {
            f.write_all(&line).unwrap();
            f.write_all(b"\n").unwrap();
            let t = Instant::now();
            f.sync_data().unwrap();
            t.elapsed().as_secs_f64() * 1e6
        })
        .collect()
}

// === the report ===

fn pct(samples: &[f64], p: f64) -> f64 {
    let mut s = samples.to_vec();
    s.sort_by(f64::total_cmp);
    let i = ((p / 100.0) * (s.len() - 1) as f64).round() as usize;
    s[i]
}

fn verdict(met: bool) -> &'static str {
    if met { "met" } else { "MISSED" }
}

fn report(runs: &[Run]) {
    let cpus = std::thread::available_parallelism().map_or(0, usize::from);
    println!(
        "portcullis gateway: keep-alive HTTP/1.1 on 127.0.0.1; server in-process (tokio, 2 workers),"
    );
    println!("blocking std::net clients on their own threads; {cpus} CPUs reported by the OS.");
    println!("/v1/decide mix, rotated on every request:");
    for m in &runs[0].mix {
        println!("  {m}");
    }

    println!();
    println!(
        "fixed rate: 1 connection, {RATE} req/s open loop, {FIXED_PER_ROUTE} requests per route in alternating blocks of {BLOCK};"
    );
    println!(
        "latency (µs) from the scheduled slot when a request went out late, from its send otherwise"
    );
    println!(
        "{:<10} {:<26} {:>9} {:>9} {:>9} {:>9} {:>6} {:>10}",
        "audit", "route", "p50", "p90", "p99", "max", "late", "recs/batch"
    );
    for r in runs {
        let f = &r.fixed;
        for (route, s, late, batch) in [
            (Route::Health, &f.health, f.late[0], String::new()),
            (
                Route::Decide,
                &f.decide,
                f.late[1],
                format!("{:.2}", f.per_batch),
            ),
        ] {
            println!(
                "{:<10} {:<26} {:>9.0} {:>9.0} {:>9.0} {:>9.0} {:>6} {:>10}",
                r.mode,
                route.name(),
                pct(s, 50.0),
                pct(s, 90.0),
                pct(s, 99.0),
                pct(s, 100.0),
                late,
                batch
            );
        }
        let (a50, a99) = added(f);
        println!(
            "{:<10} {:<26} {:>9.0} {:>9} {:>9.0}   target p50 ≤ {TARGET_ADDED_P50:.0}: {}, p99 ≤ {TARGET_ADDED_P99:.0}: {}",
            r.mode,
            "added (decide − healthz)",
            a50,
            "",
            a99,
            verdict(a50 <= TARGET_ADDED_P50),
            verdict(a99 <= TARGET_ADDED_P99)
        );
    }

    for r in runs {
        let late = r.fixed.late[1] as f64 / r.fixed.decide.len().max(1) as f64;
        let capacity = r
            .saturation
            .iter()
            .find(|s| s.conns == 1)
            .map_or(f64::NAN, |s| s.decide.rps);
        if late > 0.5 {
            println!(
                "note ({}): {:.0}% of decide slots went out late; one connection serves {capacity:.0} decide/s \
                 closed loop, so at {RATE}/s a queue builds and these figures are mostly waiting in it",
                r.mode,
                late * 100.0
            );
        }
    }

    println!();
    println!(
        "saturation: closed loop, {} s per route; latency (µs) per request",
        SATURATION.as_secs()
    );
    println!(
        "{:<10} {:>5} {:<26} {:>10} {:>9} {:>9} {:>10}",
        "audit", "conns", "route", "req/s", "p50", "p99", "recs/batch"
    );
    for r in runs {
        for s in &r.saturation {
            for (route, l, batch) in [
                (Route::Health, &s.health, String::new()),
                (Route::Decide, &s.decide, format!("{:.2}", s.per_batch)),
            ] {
                println!(
                    "{:<10} {:>5} {:<26} {:>10.0} {:>9.0} {:>9.0} {:>10}",
                    r.mode,
                    s.conns,
                    route.name(),
                    l.rps,
                    pct(&l.latencies, 50.0),
                    pct(&l.latencies, 99.0),
                    batch
                );
            }
            let ratio = s.decide.rps / s.health.rps;
            println!(
                "{:<10} {:>5} {:<26} {:>10.2}   target ≥ {TARGET_RATIO:.1}: {}",
                r.mode,
                s.conns,
                "ratio decide / healthz",
                ratio,
                verdict(ratio >= TARGET_RATIO)
            );
        }
    }

    println!();
    println!(
        "where /v1/decide's time goes (µs): the handler's work in-process (no HTTP, {STAGE_ITERATIONS} each),"
    );
    println!("against the 1-connection closed-loop round trips above");
    println!("{:<10} {:<46} {:>9} {:>9}", "audit", "stage", "p50", "p99");
    for r in runs {
        for (name, s) in &r.stages {
            println!(
                "{:<10} {:<46} {:>9.1} {:>9.1}",
                r.mode,
                name,
                pct(s, 50.0),
                pct(s, 99.0)
            );
        }
        if let Some(s) = r.saturation.iter().find(|s| s.conns == 1) {
            for (route, l) in [(Route::Health, &s.health), (Route::Decide, &s.decide)] {
                println!(
                    "{:<10} {:<46} {:>9.1} {:>9.1}",
                    r.mode,
                    format!("HTTP round trip, {}", route.name()),
                    pct(&l.latencies, 50.0),
                    pct(&l.latencies, 99.0)
                );
            }
        }
    }

    println!();
    println!(
        "summary                              {:>12} {:>12}   target",
        runs[0].mode, runs[1].mode
    );
    let row = |label: &str, f: &dyn Fn(&Run) -> f64, target: &str| {
        println!(
            "{label:<36} {:>12.2} {:>12.2}   {target}",
            f(&runs[0]),
            f(&runs[1])
        );
    };
    row(
        "added p50 at 1 000 req/s (µs)",
        &|r| added(&r.fixed).0,
        "≤ 150",
    );
    row(
        "added p99 at 1 000 req/s (µs)",
        &|r| added(&r.fixed).1,
        "≤ 500",
    );
    for conns in CONNECTIONS {
        let sat = |r: &Run| {
            r.saturation
                .iter()
                .find(|s| s.conns == conns)
                .map_or(f64::NAN, |s| s.decide.rps / s.health.rps)
        };
        row(
            &format!("saturation decide/healthz, {conns} conn"),
            &sat,
            "≥ 0.5",
        );
    }
    for r in runs {
        println!(
            "audit ({}): {} decision records for {} decisions made (HTTP and in-process)",
            r.mode, r.audit_records, r.decisions
        );
    }
}

/// Added p50 and p99: decide's percentile minus the trivial handler's, same run.
fn added(f: &Fixed) -> (f64, f64) {
    (
        pct(&f.decide, 50.0) - pct(&f.health, 50.0),
        pct(&f.decide, 99.0) - pct(&f.health, 99.0),
    )
}
