//! `cargo bench --bench llm`: the LLM gateway (`POST /llm/openai/chat/completions`) against the
//! same request made directly to the same mock provider, in the same run: non-streaming
//! latency (a text answer, and an answer with two tool calls that portcullis decides: `ls -la`
//! allowed, `rm -rf /` denied and replaced), streaming time to first byte, per-chunk relay
//! latency of a paced stream, and memory per open stream with 1 000 streams held open at once.
//!
//! The provider is a mock inside this process (a hyper server on a thread of its own, like
//! `tests/common/llm_mock.rs`; that one paces by a request header, which portcullis rightly does
//! not forward, so this one takes its knobs from the model name). It answers `chat_text` and
//! `chat_tools` with the bytes of `tests/llm-fixtures/{model}.json`; a streamed
//! `bench-stream-{n}x{µs}` with the role chunk of `chat_text.sse` at once, then `n` content
//! chunks of the fixture's exact shape `µs` apart (paced by a thread sleeping to absolute
//! deadlines), then the fixture's finish chunk, usage chunk and `data: [DONE]`; and a streamed
//! `bench-hold` with the role chunk, then nothing until the bench releases every held stream.
//!
//! The client is this process: one blocking keep-alive HTTP/1.1 `std::net` connection per peer,
//! decoding Content-Length and chunked bodies and cutting SSE events as the bytes come in; each
//! piece of body is stamped with the moment the `read` that brought it returned.
//! * Non-streaming: from just before the request is written to the end of the response body.
//! * Time to first byte: from just before the request is written to the first body byte (the
//!   role chunk, which the mock sends as soon as it has the request).
//! * Between chunks: every content chunk carries the instant the mock handed it to its server
//!   (in its text, as nanoseconds since an epoch this process shares), so each chunk's one-way
//!   relay latency (mock → client, same clock) is measured directly, through and direct; the
//!   added latency per chunk is p50(through) − p50(direct) over all chunks of all paced streams.
//!   That is what a client sees as the delay portcullis puts between a token leaving the provider
//!   and reaching it; inter-arrival gaps are reported beside it (they equal the pacing on both
//!   paths unless portcullis batches or stalls chunks).
//!
//! portcullis is the real release binary (`CARGO_BIN_EXE_portcullis`, built for the bench
//! profile) as a child process, once with a durable audit log (fdatasync before every answer)
//! and once buffered. Direct and through peers take turns in blocks (the starting peer rotating
//! every round) so machine noise hits them alike; all talk to the one mock. Memory is measured on
//! a third, fresh gateway (buffered): VmRSS from `/proc/PID/status` idle after a warm-up, then with
//! every stream open and its first event received, the difference divided by the streams.
//! Figures are printed as tables with the target beside them; compare rows of the same run, not
//! runs on different machines (DESIGN §8). Nothing here asserts a threshold, but a failed or
//! wrong answer aborts the run, and the audit logs are counted afterwards (one `model_request`
//! and one `model_response` per request, two `tool_call`s per tool answer, one of them denied).

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "a benchmark fails loudly"
)]

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex, OnceLock, mpsc};
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use sha2::{Digest, Sha256};

const KEY: &str = "bench-llm-key";
const PROVIDER_KEY: &str = "sk-bench-provider-0123456789";
const MODES: [&str; 2] = ["durable", "buffered"];
/// Non-streaming: calls per peer before the measured ones, measured calls, calls per turn.
const WARMUP: usize = 200;
const CALLS: usize = 2_000;
const BLOCK: usize = 250;
/// Time to first byte: short unpaced streams.
const TTFB_WARMUP: usize = 100;
const TTFB_CALLS: usize = 1_000;
const TTFB_BLOCK: usize = 100;
const TTFB_CHUNKS: usize = 4;
/// Between chunks: paced streams, one per turn.
const GAP_WARMUP: usize = 1;
const GAP_STREAMS: usize = 12;
const GAP_CHUNKS: usize = 200;
const GAP_INTERVAL_US: u64 = 1_000;
/// Memory: streams held open at once.
const OPEN_STREAMS: usize = 1_000;
/// A read that waits longer than this is a stall: the run is aborted.
const STALL: Duration = Duration::from_secs(30);

const TARGET_ADDED_P50: f64 = 150.0;
const TARGET_ADDED_P99: f64 = 500.0;
const TARGET_TTFB: f64 = 300.0;
const TARGET_CHUNK: f64 = 50.0;
const TARGET_IDLE_MIB: f64 = 20.0;
const TARGET_STREAM_KIB: f64 = 48.0;

fn main() {
    let began = Instant::now();
    let exe = portcullis_exe();
    let mock = mock::start();
    let tick = tick_us();

    let envs: Vec<Env> = MODES.iter().map(|m| Env::new(m, mock.addr)).collect();
    let mut gateways: Vec<Gateway> = MODES
        .iter()
        .zip(&envs)
        .map(|(m, e)| Gateway::start(&exe, &format!("portcullis serve ({m})"), e))
        .collect();
    let direct = || Peer::new("direct", mock.addr, "/v1/chat/completions", PROVIDER_KEY);
    let mut peers: Vec<Peer> = std::iter::once(direct())
        .chain(MODES.iter().zip(&gateways).map(|(m, g)| {
            Peer::new(
                &format!("through ({m})"),
                g.addr,
                "/llm/openai/chat/completions",
                KEY,
            )
        }))
        .collect();
    let pids: Vec<u32> = gateways.iter().map(|g| g.proc.child.id()).collect();
    let mut phases = Vec::new();

    eprintln!("non-streaming chat_text: direct, through durable, through buffered");
    let text_body = request_body("chat_text", false, false);
    let (text, cpu) = cpu_over(&pids, tick, || {
        interleave(&mut peers, WARMUP, CALLS, BLOCK, |p| {
            p.whole(&text_body, check_text)
        })
    });
    phases.push(("non-streaming text", WARMUP + CALLS, cpu));

    eprintln!("non-streaming chat_tools: direct, through durable, through buffered");
    let tools_body = request_body("chat_tools", false, true);
    let (tools, cpu) = cpu_over(&pids, tick, || {
        interleave(&mut peers, WARMUP, CALLS, BLOCK, |p| {
            let direct = p.name == "direct";
            p.whole(&tools_body, |v| check_tools(v, direct))
        })
    });
    phases.push(("non-streaming tools", WARMUP + CALLS, cpu));

    eprintln!("streaming, time to first byte: {TTFB_CHUNKS} unpaced chunks");
    let ttfb_body = request_body(&format!("bench-stream-{TTFB_CHUNKS}x0"), true, false);
    let (ttfb, cpu) = cpu_over(&pids, tick, || {
        interleave(&mut peers, TTFB_WARMUP, TTFB_CALLS, TTFB_BLOCK, |p| {
            p.stream(&ttfb_body, TTFB_CHUNKS)
        })
    });
    phases.push(("streaming, first byte", TTFB_WARMUP + TTFB_CALLS, cpu));

    eprintln!("streaming, between chunks: {GAP_CHUNKS} chunks {GAP_INTERVAL_US} µs apart");
    let gap_body = request_body(
        &format!("bench-stream-{GAP_CHUNKS}x{GAP_INTERVAL_US}"),
        true,
        false,
    );
    let (gaps, cpu) = cpu_over(&pids, tick, || {
        interleave(&mut peers, GAP_WARMUP, GAP_STREAMS, 1, |p| {
            p.stream(&gap_body, GAP_CHUNKS)
        })
    });
    phases.push(("streaming, paced", GAP_WARMUP + GAP_STREAMS, cpu));
    let rss_after: Vec<(String, Option<Status>)> = MODES
        .iter()
        .zip(&pids)
        .map(|(m, pid)| (format!("portcullis serve ({m})"), Status::read(*pid)))
        .collect();
    let reconnects: Vec<(String, usize)> = peers
        .iter()
        .map(|p| (p.name.clone(), p.reconnects))
        .collect();
    drop(peers);

    eprintln!("memory: {OPEN_STREAMS} streams held open");
    let mem_env = Env::new("buffered", mock.addr);
    let mut mem_gw = Gateway::start(&exe, "portcullis serve (memory, buffered)", &mem_env);
    let memory = bench_memory(&mem_gw, &mock);

    let mut problems = Vec::new();
    let mut stderr = Vec::new();
    for (mode, g) in MODES.iter().zip(gateways.iter_mut()) {
        problems.extend(g.proc.terminate(Duration::from_secs(10)));
        stderr.push((format!("serve ({mode})"), g.proc.stderr.snapshot()));
    }
    problems.extend(mem_gw.proc.terminate(Duration::from_secs(10)));
    stderr.push(("serve (memory)".to_string(), mem_gw.proc.stderr.snapshot()));
    drop(gateways);
    drop(mem_gw);

    let requests = 2 * (WARMUP + CALLS) + TTFB_WARMUP + TTFB_CALLS + GAP_WARMUP + GAP_STREAMS;
    let mut audits: Vec<(String, Audit, Expected)> = MODES
        .iter()
        .zip(&envs)
        .map(|(m, e)| {
            (
                (*m).to_string(),
                e.audit(),
                Expected {
                    requests,
                    tool_calls: 2 * (WARMUP + CALLS),
                    denied: WARMUP + CALLS,
                },
            )
        })
        .collect();
    audits.push((
        "memory".to_string(),
        mem_env.audit(),
        Expected {
            requests: memory.requests,
            tool_calls: 2 * memory.warm,
            denied: memory.warm,
        },
    ));

    let fsync = fsync_probe();
    let mock_requests = mock.requests.load(Ordering::Relaxed);
    problems.extend(report(&Report {
        text: &text,
        tools: &tools,
        ttfb: &ttfb,
        gaps: &gaps,
        memory: &memory,
        audits: &audits,
        phases: &phases,
        rss_after: &rss_after,
        reconnects: &reconnects,
        stderr: &stderr,
        fsync: &fsync,
        mock_requests,
        expected_mock_requests: 3 * requests + memory.requests,
    }));
    println!();
    println!("total {:.1} s", began.elapsed().as_secs_f64());
    if !problems.is_empty() {
        panic!("{}", problems.join("\n"));
    }
}

// === what runs ===

fn portcullis_exe() -> PathBuf {
    let p = PathBuf::from(env!("CARGO_BIN_EXE_portcullis"));
    assert!(
        p.exists(),
        "{} is missing: build it with `cargo build --release` (cargo bench builds it)",
        p.display()
    );
    p
}

fn fixtures() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/llm-fixtures")
}

/// The instant content chunks are stamped against (nanoseconds since it).
fn epoch() -> Instant {
    static EPOCH: OnceLock<Instant> = OnceLock::new();
    *EPOCH.get_or_init(Instant::now)
}

/// A child process: killed and waited for when dropped (also while a panic unwinds), its stderr
/// kept line by line.
struct Proc {
    name: String,
    child: Child,
    stderr: Lines,
}

impl Proc {
    fn spawn(name: &str, mut cmd: Command) -> Proc {
        let mut child = cmd
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("{name}: cannot start {cmd:?}: {e}"));
        let stderr = Lines::drain(child.stderr.take().unwrap());
        Proc {
            name: name.to_string(),
            child,
            stderr,
        }
    }

    /// SIGTERM (portcullis serve's graceful shutdown), then wait, killing it after `grace`.
    /// What happened, when it was not a clean exit.
    fn terminate(&mut self, grace: Duration) -> Option<String> {
        if let Ok(None) = self.child.try_wait() {
            let _ = Command::new("kill")
                .arg("-TERM")
                .arg(self.child.id().to_string())
                .status();
        }
        let deadline = Instant::now() + grace;
        loop {
            match self.child.try_wait() {
                Ok(Some(status)) if status.success() => return None,
                Ok(Some(status)) => return Some(format!("{} exited with {status}", self.name)),
                Ok(None) if Instant::now() < deadline => {
                    std::thread::sleep(Duration::from_millis(10));
                }
                Ok(None) => {
                    let _ = self.child.kill();
                    let _ = self.child.wait();
                    return Some(format!(
                        "{} did not exit within {grace:?}: killed",
                        self.name
                    ));
                }
                Err(e) => return Some(format!("{}: wait: {e}", self.name)),
            }
        }
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
        }
        let _ = self.child.wait();
    }
}

/// The lines of a child's pipe, read on their own thread: all of them kept, and each sent on.
struct Lines {
    rx: mpsc::Receiver<String>,
    all: Arc<Mutex<Vec<String>>>,
}

impl Lines {
    fn drain(r: impl Read + Send + 'static) -> Lines {
        let (tx, rx) = mpsc::channel();
        let all = Arc::new(Mutex::new(Vec::new()));
        let kept = all.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(r).lines() {
                let Ok(line) = line else { return };
                kept.lock().unwrap().push(line.clone());
                let _ = tx.send(line);
            }
        });
        Lines { rx, all }
    }

    fn wait_for(&self, what: &str, needle: &str) -> String {
        let deadline = Instant::now() + STALL;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.rx.recv_timeout(left) {
                Ok(line) if line.contains(needle) => return line,
                Ok(_) => {}
                Err(e) => panic!(
                    "{what}: no line with {needle:?} ({e}); its output so far:\n{}",
                    self.all.lock().unwrap().join("\n")
                ),
            }
        }
    }

    fn snapshot(&self) -> Vec<String> {
        self.all.lock().unwrap().clone()
    }
}

/// A workspace, a config and the audit log of one portcullis.
struct Env {
    _dir: tempfile::TempDir,
    path: PathBuf,
}

impl Env {
    fn new(mode: &str, mock: SocketAddr) -> Env {
        // Not tempfile's default `.tmpXXXX`: a dot directory looks like a hidden config dir.
        let dir = tempfile::Builder::new()
            .prefix("bench-llm")
            .tempdir()
            .unwrap();
        let path = dir.path().canonicalize().unwrap();
        std::fs::create_dir_all(path.join("ws")).unwrap();
        let config = format!(
            r#"
[server]
listen = "127.0.0.1:0"
admin_listen = "127.0.0.1:0"
max_connections = {max}

[workspace]
roots = ["{ws}"]

[audit]
path = "{audit}"
durability = "{mode}"

[[agents]]
id = "bench"
api_key_sha256 = ["{key}"]

[[llm.upstreams]]
name = "openai"
kind = "openai"
base_url = "http://{mock}/v1"
api_key_env = "MOCK_OPENAI_KEY"

[[llm.map]]
tool = "run_shell"
arg = "command"
facet = "exec"
"#,
            max = 2 * OPEN_STREAMS + 64,
            ws = path.join("ws").display(),
            audit = path.join("audit.jsonl").display(),
            key = hex::encode(Sha256::digest(KEY.as_bytes())),
        );
        std::fs::write(path.join("portcullis.toml"), config).unwrap();
        Env { _dir: dir, path }
    }

    /// The decision records portcullis wrote here.
    fn audit(&self) -> Audit {
        let mut a = Audit::default();
        let Ok(text) = std::fs::read_to_string(self.path.join("audit.jsonl")) else {
            return a;
        };
        for line in text.lines() {
            let Ok(v) = serde_json::from_str::<Value>(line) else {
                a.unparsable += 1;
                continue;
            };
            if v["type"] != "decision" {
                continue;
            }
            let latency = v["latency_us"].as_f64().unwrap_or(f64::NAN);
            let deny = v["decision"]["outcome"] != "allow";
            match v["action"]["kind"].as_str() {
                Some("model_request") => {
                    a.requests.push(latency);
                    a.unexpected_denies += usize::from(deny);
                }
                Some("model_response") => {
                    a.responses.push(latency);
                    a.unexpected_denies += usize::from(deny);
                }
                Some("tool_call") => {
                    a.tool_calls.push(latency);
                    a.denied += usize::from(deny);
                }
                _ => a.other += 1,
            }
        }
        a
    }
}

/// The decision records of one audit log, with their `latency_us` (the gate's decision, before
/// the audit write).
#[derive(Default)]
struct Audit {
    requests: Vec<f64>,
    responses: Vec<f64>,
    tool_calls: Vec<f64>,
    denied: usize,
    unexpected_denies: usize,
    other: usize,
    unparsable: usize,
}

struct Expected {
    requests: usize,
    tool_calls: usize,
    denied: usize,
}

struct Gateway {
    proc: Proc,
    _stdout: Lines,
    addr: SocketAddr,
}

impl Gateway {
    fn start(exe: &Path, name: &str, env: &Env) -> Gateway {
        let mut cmd = Command::new(exe);
        cmd.args(["--log", "warn", "serve", "--config"])
            .arg(env.path.join("portcullis.toml"))
            .current_dir(&env.path)
            .env("MOCK_OPENAI_KEY", PROVIDER_KEY)
            .stdin(Stdio::null())
            .stdout(Stdio::piped());
        let mut proc = Proc::spawn(name, cmd);
        let stdout = Lines::drain(proc.child.stdout.take().unwrap());
        let line = stdout.wait_for(name, "gateway listening on http://");
        let addr = line
            .rsplit("http://")
            .next()
            .and_then(|a| a.trim().trim_end_matches('/').parse().ok())
            .unwrap_or_else(|| panic!("{name}: no address in {line:?}"));
        Gateway {
            proc,
            _stdout: stdout,
            addr,
        }
    }
}

// === the mock provider ===

mod mock {
    use std::convert::Infallible;
    use std::net::SocketAddr;
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::time::{Duration, Instant};

    use bytes::Bytes;
    use http_body_util::combinators::BoxBody;
    use http_body_util::{BodyExt, Full};
    use hyper::body::{Frame, Incoming};
    use hyper::{Request, Response, StatusCode};
    use hyper_util::rt::TokioIo;
    use serde_json::Value;
    use tokio::net::TcpListener;
    use tokio::sync::mpsc::{UnboundedSender, unbounded_channel};

    pub struct Mock {
        pub addr: SocketAddr,
        /// Requests answered.
        pub requests: Arc<AtomicUsize>,
        /// `bench-hold` streams that sent their first event and wait.
        pub held: Arc<AtomicUsize>,
        release: tokio::sync::watch::Sender<bool>,
    }

    impl Mock {
        /// Let every held stream finish.
        pub fn release(&self) {
            self.release.send_replace(true);
        }
    }

    /// The wire pieces, from the fixtures.
    struct Fixtures {
        text_json: Bytes,
        tools_json: Bytes,
        /// The role chunk, with its blank line.
        role: String,
        /// A content chunk whose text is `"Hello"`.
        content: String,
        finish: String,
        usage: String,
    }

    impl Fixtures {
        fn load() -> Fixtures {
            let dir = super::fixtures();
            let read = |f: &str| std::fs::read(dir.join(f)).unwrap();
            let sse = String::from_utf8(read("chat_text.sse")).unwrap();
            let ev: Vec<String> = sse.split_inclusive("\n\n").map(str::to_string).collect();
            assert!(
                ev.len() == 8 && ev[7] == "data: [DONE]\n\n" && ev[1].contains(HELLO),
                "chat_text.sse is not the 8 events this bench expects"
            );
            Fixtures {
                text_json: Bytes::from(read("chat_text.json")),
                tools_json: Bytes::from(read("chat_tools.json")),
                role: ev[0].clone(),
                content: ev[1].clone(),
                finish: ev[5].clone(),
                usage: ev[6].clone(),
            }
        }

        /// Content chunk `k`, stamped with now.
        fn chunk(&self, k: usize) -> Bytes {
            let ns = super::epoch().elapsed().as_nanos();
            Bytes::from(
                self.content
                    .replace(HELLO, &format!("\"content\":\"{k}@{ns} \"")),
            )
        }

        fn tail(&self, tx: &UnboundedSender<Bytes>) {
            let _ = tx.send(Bytes::from(self.finish.clone()));
            let _ = tx.send(Bytes::from(self.usage.clone()));
            let _ = tx.send(Bytes::from_static(b"data: [DONE]\n\n"));
        }
    }

    const HELLO: &str = "\"content\":\"Hello\"";

    /// Start the mock on a loopback port, on a thread of its own.
    pub fn start() -> Mock {
        let (tx, rx) = std::sync::mpsc::channel();
        let requests = Arc::new(AtomicUsize::new(0));
        let held = Arc::new(AtomicUsize::new(0));
        let (release, _) = tokio::sync::watch::channel(false);
        let fx = Arc::new(Fixtures::load());
        let (r, h, rel) = (requests.clone(), held.clone(), release.clone());
        std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(async move {
                let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
                tx.send(l.local_addr().unwrap()).unwrap();
                loop {
                    let Ok((tcp, _)) = l.accept().await else {
                        continue;
                    };
                    let _ = tcp.set_nodelay(true);
                    let (r, h, fx, rel) = (r.clone(), h.clone(), fx.clone(), rel.clone());
                    tokio::spawn(async move {
                        let svc = hyper::service::service_fn(move |req| {
                            serve(req, r.clone(), h.clone(), fx.clone(), rel.subscribe())
                        });
                        let _ = hyper::server::conn::http1::Builder::new()
                            .serve_connection(TokioIo::new(tcp), svc)
                            .await;
                    });
                }
            });
        });
        Mock {
            addr: rx.recv().unwrap(),
            requests,
            held,
            release,
        }
    }

    type Body = BoxBody<Bytes, Infallible>;

    async fn serve(
        req: Request<Incoming>,
        requests: Arc<AtomicUsize>,
        held: Arc<AtomicUsize>,
        fx: Arc<Fixtures>,
        mut release: tokio::sync::watch::Receiver<bool>,
    ) -> Result<Response<Body>, Infallible> {
        let bytes = req
            .into_body()
            .collect()
            .await
            .map(|c| c.to_bytes())
            .unwrap_or_default();
        let body: Value = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
        let model = body["model"].as_str().unwrap_or("").to_string();
        let stream = body["stream"].as_bool().unwrap_or(false);
        requests.fetch_add(1, Ordering::Relaxed);
        match (model.as_str(), stream) {
            ("chat_text", false) => return Ok(whole(StatusCode::OK, fx.text_json.clone())),
            ("chat_tools", false) => return Ok(whole(StatusCode::OK, fx.tools_json.clone())),
            _ => {}
        }
        let (tx, rx) = unbounded_channel::<Bytes>();
        let _ = tx.send(Bytes::from(fx.role.clone()));
        if model == "bench-hold" && stream {
            tokio::spawn(async move {
                held.fetch_add(1, Ordering::Relaxed);
                let _ = release.wait_for(|r| *r).await;
                let _ = tx.send(fx.chunk(1));
                fx.tail(&tx);
            });
        } else if let Some((n, us)) = model
            .strip_prefix("bench-stream-")
            .and_then(|s| s.split_once('x'))
            .and_then(|(n, us)| Some((n.parse::<usize>().ok()?, us.parse::<u64>().ok()?)))
            && stream
        {
            if us == 0 {
                for k in 1..=n {
                    let _ = tx.send(fx.chunk(k));
                }
                fx.tail(&tx);
            } else {
                // A thread sleeping to absolute deadlines: a tokio timer has 1 ms granularity.
                std::thread::spawn(move || {
                    let start = Instant::now();
                    for k in 1..=n {
                        let due = start + Duration::from_micros(us * k as u64);
                        let now = Instant::now();
                        if due > now {
                            std::thread::sleep(due - now);
                        }
                        if tx.send(fx.chunk(k)).is_err() {
                            return;
                        }
                    }
                    fx.tail(&tx);
                });
            }
        } else {
            let err = format!(
                r#"{{"error":{{"message":"the bench mock has no model {model:?} (stream {stream})","type":"invalid_request_error","param":null,"code":null}}}}"#
            );
            return Ok(whole(StatusCode::NOT_FOUND, Bytes::from(err)));
        }
        let mut r = Response::new(ChannelBody(rx).boxed());
        r.headers_mut().insert(
            "content-type",
            "text/event-stream; charset=utf-8".parse().unwrap(),
        );
        Ok(r)
    }

    fn whole(status: StatusCode, b: Bytes) -> Response<Body> {
        let mut r = Response::new(Full::new(b).boxed());
        *r.status_mut() = status;
        r.headers_mut()
            .insert("content-type", "application/json".parse().unwrap());
        r
    }

    /// A body whose chunks arrive on a channel.
    struct ChannelBody(tokio::sync::mpsc::UnboundedReceiver<Bytes>);

    impl hyper::body::Body for ChannelBody {
        type Data = Bytes;
        type Error = Infallible;

        fn poll_frame(
            mut self: std::pin::Pin<&mut Self>,
            cx: &mut std::task::Context<'_>,
        ) -> std::task::Poll<Option<Result<Frame<Bytes>, Infallible>>> {
            self.0.poll_recv(cx).map(|c| c.map(|b| Ok(Frame::data(b))))
        }
    }
}

// === the client ===

fn request_body(model: &str, stream: bool, tools: bool) -> Vec<u8> {
    let mut v = json!({
        "model": model,
        "messages": [
            {"role": "system", "content": "You are a helpful assistant."},
            {"role": "user", "content": "List the files here."},
        ],
    });
    if stream {
        v["stream"] = json!(true);
        v["stream_options"] = json!({"include_usage": true});
    }
    if tools {
        v["tools"] = json!([{
            "type": "function",
            "function": {
                "name": "run_shell",
                "description": "Run a shell command.",
                "parameters": {
                    "type": "object",
                    "properties": {"command": {"type": "string"}},
                    "required": ["command"],
                },
            },
        }]);
    }
    serde_json::to_vec(&v).unwrap()
}

fn check_text(v: &Value) -> Result<(), String> {
    if v["choices"][0]["message"]["content"] == "Hello from the mock." {
        Ok(())
    } else {
        Err(format!("not the text answer: {v}"))
    }
}

/// Direct: both calls. Through: exactly `ls -la`, and the refusal of the other in the text.
fn check_tools(v: &Value, direct: bool) -> Result<(), String> {
    let msg = &v["choices"][0]["message"];
    let calls: Vec<String> = msg["tool_calls"]
        .as_array()
        .map(|a| {
            a.iter()
                .map(|c| {
                    c["function"]["arguments"]
                        .as_str()
                        .unwrap_or("")
                        .to_string()
                })
                .collect()
        })
        .unwrap_or_default();
    let args = |s: &str| serde_json::from_str::<Value>(s).unwrap_or(Value::Null)["command"].clone();
    let commands: Vec<Value> = calls.iter().map(|c| args(c)).collect();
    let ok = if direct {
        commands == [json!("ls -la"), json!("rm -rf /")]
    } else {
        commands == [json!("ls -la")]
            && msg["content"]
                .as_str()
                .is_some_and(|t| t.contains("portcullis denied"))
    };
    if ok {
        Ok(())
    } else {
        Err(format!("not the tool answer expected: {v}"))
    }
}

/// One client, direct or through portcullis, on a keep-alive connection.
struct Peer {
    name: String,
    addr: SocketAddr,
    path: String,
    auth: String,
    conn: Option<Conn>,
    /// Connections the server had closed and were opened again (between calls, untimed).
    reconnects: usize,
}

/// One non-streaming call: µs to the end of the response.
type Whole = f64;

/// One stream.
struct Streamed {
    /// µs from writing the request to the first body byte, and to the end of the body.
    ttfb: f64,
    end: f64,
    /// Per content chunk: µs from the mock handing it over to this client reading it.
    relay: Vec<f64>,
    /// µs between the arrivals of consecutive content chunks.
    gaps: Vec<f64>,
}

impl Peer {
    fn new(name: &str, addr: SocketAddr, path: &str, key: &str) -> Peer {
        Peer {
            name: name.to_string(),
            addr,
            path: path.to_string(),
            auth: key.to_string(),
            conn: None,
            reconnects: 0,
        }
    }

    /// A usable connection: the one we have unless the server closed it while idle.
    fn conn(&mut self) -> Result<&mut Conn, String> {
        let alive = match &self.conn {
            Some(c) => c.alive()?,
            None => false,
        };
        if !alive {
            if self.conn.is_some() {
                self.reconnects += 1;
            }
            self.conn = Some(Conn::connect(self.addr)?);
        }
        Ok(self.conn.as_mut().unwrap())
    }

    fn whole(
        &mut self,
        body: &[u8],
        check: impl FnOnce(&Value) -> Result<(), String>,
    ) -> Result<Whole, String> {
        let req = http_request(&self.path, self.addr, &self.auth, body);
        let conn = self.conn()?;
        let t = Instant::now();
        conn.write(&req)?;
        let head = conn.read_head()?;
        let mut out = Vec::new();
        let r = conn.read_body(&head, |d, _| {
            out.extend_from_slice(d);
            Ok(())
        });
        let end = t.elapsed().as_secs_f64() * 1e6;
        if r.is_err() || head.close {
            self.conn = None;
        }
        r?;
        if head.status != 200 {
            return Err(format!(
                "status {}: {}",
                head.status,
                String::from_utf8_lossy(&out)
            ));
        }
        let v: Value = serde_json::from_slice(&out)
            .map_err(|e| format!("JSON body ({e}): {}", String::from_utf8_lossy(&out)))?;
        check(&v)?;
        Ok(end)
    }

    fn stream(&mut self, body: &[u8], chunks: usize) -> Result<Streamed, String> {
        let req = http_request(&self.path, self.addr, &self.auth, body);
        let conn = self.conn()?;
        let t = Instant::now();
        conn.write(&req)?;
        let head = conn.read_head()?;
        let mut sse = Sse::default();
        let r = conn.read_body(&head, |d, at| {
            sse.push(d, at);
            Ok(())
        });
        let end = t.elapsed().as_secs_f64() * 1e6;
        if r.is_err() || head.close {
            self.conn = None;
        }
        r?;
        if head.status != 200 || !head.content_type.starts_with("text/event-stream") {
            return Err(format!(
                "status {} ({}): {}",
                head.status,
                head.content_type,
                String::from_utf8_lossy(&sse.body)
            ));
        }
        let first = sse.first.ok_or("an empty stream")?;
        let mut s = Streamed {
            ttfb: (first - t).as_secs_f64() * 1e6,
            end,
            relay: Vec::with_capacity(chunks),
            gaps: Vec::with_capacity(chunks),
        };
        let arrivals = check_stream(&sse, chunks)?;
        let mut last: Option<Instant> = None;
        for (sent, at) in arrivals {
            s.relay
                .push(at.saturating_duration_since(sent).as_secs_f64() * 1e6);
            if let Some(l) = last {
                s.gaps.push((at - l).as_secs_f64() * 1e6);
            }
            last = Some(at);
        }
        Ok(s)
    }
}

/// The stream must be the role chunk, content chunks 1..=n, finish, usage and `[DONE]`; the
/// content chunks' send and arrival instants.
fn check_stream(sse: &Sse, n: usize) -> Result<Vec<(Instant, Instant)>, String> {
    let bad = |why: &str| {
        format!(
            "{why}: {}",
            String::from_utf8_lossy(&sse.body[..sse.body.len().min(2000)])
        )
    };
    if sse.events.len() != n + 4 {
        return Err(bad(&format!("{} events, not {}", sse.events.len(), n + 4)));
    }
    if sse.events[n + 3].0 != b"data: [DONE]" {
        return Err(bad("no [DONE] at the end"));
    }
    let json = |i: usize| -> Result<Value, String> {
        let e = &sse.events[i].0;
        let d = e
            .strip_prefix(b"data: ")
            .ok_or_else(|| bad("not a data event"))?;
        serde_json::from_slice(d).map_err(|e| bad(&format!("event {i} is not JSON ({e})")))
    };
    if json(0)?["choices"][0]["delta"]["role"] != "assistant" {
        return Err(bad("no role chunk first"));
    }
    if json(n + 1)?["choices"][0]["finish_reason"] != "stop" {
        return Err(bad("no finish chunk"));
    }
    if json(n + 2)?["usage"]["total_tokens"] != 24 {
        return Err(bad("no usage chunk"));
    }
    let mut out = Vec::with_capacity(n);
    for k in 1..=n {
        let v = json(k)?;
        let text = v["choices"][0]["delta"]["content"].as_str().unwrap_or("");
        let stamp = text
            .trim_end()
            .split_once('@')
            .filter(|(i, _)| i.parse::<usize>().ok() == Some(k))
            .and_then(|(_, ns)| ns.parse::<u64>().ok())
            .ok_or_else(|| bad(&format!("chunk {k} is {text:?}")))?;
        out.push((epoch() + Duration::from_nanos(stamp), sse.events[k].1));
    }
    Ok(out)
}

fn http_request(path: &str, addr: SocketAddr, key: &str, body: &[u8]) -> Vec<u8> {
    let mut req = format!(
        "POST {path} HTTP/1.1\r\nhost: {addr}\r\ncontent-type: application/json\r\n\
         accept: application/json\r\nauthorization: Bearer {key}\r\ncontent-length: {}\r\n\r\n",
        body.len()
    )
    .into_bytes();
    req.extend_from_slice(body);
    req
}

/// Server-sent events cut as the body grows, each with the instant its last byte was read.
#[derive(Default)]
struct Sse {
    body: Vec<u8>,
    /// Start of the first event not yet cut.
    cursor: usize,
    events: Vec<(Vec<u8>, Instant)>,
    first: Option<Instant>,
}

impl Sse {
    fn push(&mut self, d: &[u8], at: Instant) {
        if self.first.is_none() && !d.is_empty() {
            self.first = Some(at);
        }
        let from = self.body.len().saturating_sub(1).max(self.cursor);
        self.body.extend_from_slice(d);
        let mut scan = from;
        while let Some(i) = find(&self.body[scan..], b"\n\n") {
            let end = scan + i;
            self.events.push((self.body[self.cursor..end].to_vec(), at));
            self.cursor = end + 2;
            scan = self.cursor;
        }
    }
}

/// A response head.
struct Head {
    status: u16,
    content_type: String,
    length: Option<usize>,
    chunked: bool,
    close: bool,
}

/// A blocking HTTP/1.1 connection that decodes Content-Length and chunked bodies.
struct Conn {
    stream: TcpStream,
    buf: Vec<u8>,
    /// Unread bytes are `buf[pos..len]`.
    pos: usize,
    len: usize,
    /// When the last read returned.
    at: Instant,
}

impl Conn {
    fn connect(addr: SocketAddr) -> Result<Conn, String> {
        let stream = TcpStream::connect(addr).map_err(|e| format!("connect {addr}: {e}"))?;
        stream.set_nodelay(true).map_err(|e| e.to_string())?;
        stream
            .set_read_timeout(Some(STALL))
            .map_err(|e| e.to_string())?;
        Ok(Conn {
            stream,
            buf: vec![0; 16 * 1024],
            pos: 0,
            len: 0,
            at: Instant::now(),
        })
    }

    /// Still open: nothing to read and no EOF waiting.
    fn alive(&self) -> Result<bool, String> {
        if self.pos < self.len {
            return Err(format!(
                "stray bytes after a response: {:?}",
                String::from_utf8_lossy(&self.buf[self.pos..self.len])
            ));
        }
        self.stream
            .set_nonblocking(true)
            .map_err(|e| e.to_string())?;
        let r = self.stream.peek(&mut [0u8; 1]);
        self.stream
            .set_nonblocking(false)
            .map_err(|e| e.to_string())?;
        match r {
            Ok(0) => Ok(false),
            Ok(_) => Err("stray bytes on an idle connection".into()),
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => Ok(true),
            Err(_) => Ok(false),
        }
    }

    fn write(&mut self, req: &[u8]) -> Result<(), String> {
        self.stream
            .write_all(req)
            .map_err(|e| format!("write: {e}"))
    }

    fn fill(&mut self) -> Result<(), String> {
        if self.pos == self.len {
            self.pos = 0;
            self.len = 0;
        } else if self.len == self.buf.len() {
            if self.pos > 0 {
                self.buf.copy_within(self.pos..self.len, 0);
                self.len -= self.pos;
                self.pos = 0;
            } else {
                self.buf.resize(self.buf.len() * 2, 0);
            }
        }
        match self.stream.read(&mut self.buf[self.len..]) {
            Ok(0) => Err("the server closed the connection".into()),
            Ok(n) => {
                self.at = Instant::now();
                self.len += n;
                Ok(())
            }
            Err(e) => Err(format!("read: {e}")),
        }
    }

    /// The index past the next CRLF in the unread bytes, reading more as needed.
    fn line_end(&mut self) -> Result<usize, String> {
        loop {
            if let Some(i) = find(&self.buf[self.pos..self.len], b"\r\n") {
                return Ok(self.pos + i + 2);
            }
            self.fill()?;
        }
    }

    fn read_head(&mut self) -> Result<Head, String> {
        let head_end = loop {
            if let Some(i) = find(&self.buf[self.pos..self.len], b"\r\n\r\n") {
                break self.pos + i + 4;
            }
            self.fill()?;
        };
        let head = std::str::from_utf8(&self.buf[self.pos..head_end])
            .map_err(|_| "the response head is not UTF-8".to_string())?
            .to_string();
        self.pos = head_end;
        let status = head
            .strip_prefix("HTTP/1.1 ")
            .and_then(|r| r.get(..3))
            .and_then(|c| c.parse::<u16>().ok())
            .ok_or_else(|| format!("bad status line in {head:?}"))?;
        let mut h = Head {
            status,
            content_type: String::new(),
            length: None,
            chunked: false,
            close: false,
        };
        for line in head.split("\r\n").skip(1) {
            let Some((name, value)) = line.split_once(':') else {
                continue;
            };
            let value = value.trim();
            match name.to_ascii_lowercase().as_str() {
                "content-length" => h.length = value.parse::<usize>().ok(),
                "transfer-encoding" => h.chunked = value.eq_ignore_ascii_case("chunked"),
                "connection" => h.close = value.eq_ignore_ascii_case("close"),
                "content-type" => h.content_type = value.to_ascii_lowercase(),
                _ => {}
            }
        }
        if !h.chunked && h.length.is_none() {
            return Err(format!("neither content-length nor chunked: {head:?}"));
        }
        Ok(h)
    }

    /// Read the body, handing each piece to `on` with the instant the read that brought it
    /// returned.
    fn read_body(
        &mut self,
        head: &Head,
        mut on: impl FnMut(&[u8], Instant) -> Result<(), String>,
    ) -> Result<(), String> {
        if !head.chunked {
            let mut left = head.length.unwrap_or(0);
            while left > 0 {
                if self.pos == self.len {
                    self.fill()?;
                }
                let take = left.min(self.len - self.pos);
                on(&self.buf[self.pos..self.pos + take], self.at)?;
                self.pos += take;
                left -= take;
            }
            return Ok(());
        }
        loop {
            let end = self.line_end()?;
            let size_line = String::from_utf8_lossy(&self.buf[self.pos..end - 2]).into_owned();
            self.pos = end;
            let size = usize::from_str_radix(size_line.split(';').next().unwrap_or("").trim(), 16)
                .map_err(|_| format!("bad chunk size {size_line:?}"))?;
            if size == 0 {
                // Trailers, up to the empty line.
                loop {
                    let start = self.pos;
                    self.pos = self.line_end()?;
                    if self.pos == start + 2 {
                        return Ok(());
                    }
                }
            }
            let mut left = size;
            while left > 0 {
                if self.pos == self.len {
                    self.fill()?;
                }
                let take = left.min(self.len - self.pos);
                on(&self.buf[self.pos..self.pos + take], self.at)?;
                self.pos += take;
                left -= take;
            }
            while self.len - self.pos < 2 {
                self.fill()?;
            }
            if &self.buf[self.pos..self.pos + 2] != b"\r\n" {
                return Err("a chunk does not end in CRLF".into());
            }
            self.pos += 2;
        }
    }
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

// === the runs ===

/// `warm` then `calls` requests on every peer, taking turns in blocks of `block` (warm-up in
/// blocks a fifth as long); the measured samples per peer.
fn interleave<T>(
    peers: &mut [Peer],
    warm: usize,
    calls: usize,
    block: usize,
    mut f: impl FnMut(&mut Peer) -> Result<T, String>,
) -> Vec<Vec<T>> {
    let n = peers.len();
    let mut out: Vec<Vec<T>> = (0..n).map(|_| Vec::with_capacity(calls)).collect();
    let warm_block = (block / 5).max(1);
    let phases = [
        (warm.div_ceil(warm_block), warm_block, false),
        (calls / block, block, true),
    ];
    for (rounds, block, keep) in phases {
        for round in 0..rounds {
            for j in 0..n {
                let k = (round + j) % n;
                let peer = &mut peers[k];
                if let Err(e) = peer.conn() {
                    panic!("{}: {e}", peer.name);
                }
                for i in 0..block {
                    match f(peer) {
                        Ok(s) if keep => out[k].push(s),
                        Ok(_) => {}
                        Err(e) => panic!("{}: request {i} of a block failed: {e}", peer.name),
                    }
                }
            }
        }
    }
    out
}

/// What the memory run found.
struct Memory {
    streams: usize,
    fd_limit: Option<u64>,
    idle: Option<Status>,
    open: Option<Status>,
    after: Option<Status>,
    /// Seconds to open every stream and read its first event.
    open_s: f64,
    /// Requests the memory gateway served (warm-up included), and its warm-up rounds (each a
    /// text call, a tool call and a short stream).
    requests: usize,
    warm: usize,
}

/// Open `OPEN_STREAMS` streams through a fresh gateway to `bench-hold`, each to its first event;
/// RSS idle, with all open, and after they finished.
fn bench_memory(gw: &Gateway, mock: &mock::Mock) -> Memory {
    let pid = gw.proc.child.id();
    // This process holds a client and a mock socket per stream, portcullis two per stream.
    let fd_limit = [open_files_limit("self"), open_files_limit(&pid.to_string())]
        .into_iter()
        .flatten()
        .min();
    let streams = match fd_limit {
        Some(l) => OPEN_STREAMS.min((l.saturating_sub(200) / 2) as usize),
        None => OPEN_STREAMS,
    };
    let mut peer = Peer::new(
        "memory warm-up",
        gw.addr,
        "/llm/openai/chat/completions",
        KEY,
    );
    let text = request_body("chat_text", false, false);
    let tools = request_body("chat_tools", false, true);
    let short = request_body("bench-stream-16x0", true, false);
    let warm = 200;
    for _ in 0..warm {
        peer.whole(&text, check_text).unwrap();
        peer.whole(&tools, |v| check_tools(v, false)).unwrap();
        peer.stream(&short, 16).unwrap();
    }
    drop(peer);
    std::thread::sleep(Duration::from_millis(500));
    let idle = Status::read(pid);

    let began = Instant::now();
    let hold = request_body("bench-hold", true, false);
    let path = "/llm/openai/chat/completions";
    let held_before = mock.held.load(Ordering::Relaxed);
    let mut conns: Vec<(Conn, Head, Sse)> = Vec::with_capacity(streams);
    let mut pending = Vec::with_capacity(streams);
    for _ in 0..streams {
        let mut c = Conn::connect(gw.addr).unwrap();
        c.write(&http_request(path, gw.addr, KEY, &hold)).unwrap();
        pending.push(c);
    }
    for mut c in pending {
        let head = c.read_head().unwrap();
        assert!(
            head.status == 200 && head.chunked,
            "a held stream answered {} ({})",
            head.status,
            head.content_type
        );
        let mut sse = Sse::default();
        // The first event: read chunks until one is complete.
        while sse.events.is_empty() {
            let end = c.line_end().unwrap();
            let size_line = String::from_utf8_lossy(&c.buf[c.pos..end - 2]).into_owned();
            c.pos = end;
            let size = usize::from_str_radix(size_line.trim(), 16).unwrap();
            assert!(size > 0, "a held stream ended before its first event");
            while c.len - c.pos < size + 2 {
                c.fill().unwrap();
            }
            sse.push(&c.buf[c.pos..c.pos + size], c.at);
            c.pos += size + 2;
        }
        conns.push((c, head, sse));
    }
    let open_s = began.elapsed().as_secs_f64();
    let held = mock.held.load(Ordering::Relaxed) - held_before;
    assert_eq!(
        held, streams,
        "the mock holds {held} streams, not {streams}"
    );
    std::thread::sleep(Duration::from_millis(500));
    let open = Status::read(pid);

    mock.release();
    for (mut c, head, mut sse) in conns {
        c.read_body(&head, |d, at| {
            sse.push(d, at);
            Ok(())
        })
        .unwrap();
        check_stream(&sse, 1).unwrap();
    }
    std::thread::sleep(Duration::from_millis(500));
    let after = Status::read(pid);
    Memory {
        streams,
        fd_limit,
        idle,
        open,
        after,
        open_s,
        requests: 3 * warm + streams,
        warm,
    }
}

/// The soft `Max open files` of a process (`self` or a pid).
fn open_files_limit(who: &str) -> Option<u64> {
    let limits = std::fs::read_to_string(format!("/proc/{who}/limits")).ok()?;
    let line = limits.lines().find(|l| l.starts_with("Max open files"))?;
    line.split_whitespace().nth(3)?.parse().ok()
}

/// What `/proc/PID/status` says of a process's memory and threads.
#[derive(Clone, Copy)]
struct Status {
    rss_kib: f64,
    hwm_kib: f64,
    threads: u64,
}

impl Status {
    fn read(pid: u32) -> Option<Status> {
        let s = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
        let field = |name: &str| -> Option<f64> {
            s.lines()
                .find(|l| l.starts_with(name))?
                .split_whitespace()
                .nth(1)?
                .parse()
                .ok()
        };
        Some(Status {
            rss_kib: field("VmRSS:")?,
            hwm_kib: field("VmHWM:")?,
            threads: field("Threads:")? as u64,
        })
    }
}

/// CPU time (user + system, all threads) a process has used so far, in µs; NaN once it is gone.
fn cpu_us(pid: u32, tick_us: f64) -> f64 {
    let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
        return f64::NAN;
    };
    // `pid (comm) state ppid …`: utime and stime are fields 14 and 15, counted from 1.
    let fields: Vec<&str> = stat
        .rsplit_once(')')
        .map_or("", |(_, rest)| rest)
        .split_whitespace()
        .collect();
    let ticks = |i: usize| fields.get(i).and_then(|f| f.parse::<f64>().ok());
    match (ticks(11), ticks(12)) {
        (Some(u), Some(s)) => (u + s) * tick_us,
        _ => f64::NAN,
    }
}

/// One clock tick of `/proc/<pid>/stat`, in µs.
fn tick_us() -> f64 {
    let hz = Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|o| {
            String::from_utf8_lossy(&o.stdout)
                .trim()
                .parse::<f64>()
                .ok()
        })
        .unwrap_or(100.0);
    1e6 / hz
}

/// CPU µs used by each process (and by this one, the client and the mock) over `f`.
fn cpu_over<T>(pids: &[u32], tick: f64, f: impl FnOnce() -> T) -> (T, Vec<f64>) {
    let me = std::process::id();
    let all: Vec<u32> = pids.iter().copied().chain([me]).collect();
    let before: Vec<f64> = all.iter().map(|p| cpu_us(*p, tick)).collect();
    let out = f();
    let cpu = all
        .iter()
        .zip(before)
        .map(|(p, b)| cpu_us(*p, tick) - b)
        .collect();
    (out, cpu)
}

/// What one fdatasync of a small append costs in the directory the audit logs are in.
fn fsync_probe() -> Vec<f64> {
    let dir = tempfile::Builder::new()
        .prefix("bench-llm-fsync")
        .tempdir()
        .unwrap();
    let mut f = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(dir.path().join("probe.jsonl"))
        .unwrap();
    let line = [b'x'; 1000];
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
    if samples.is_empty() {
        return f64::NAN;
    }
    let mut s = samples.to_vec();
    s.sort_by(f64::total_cmp);
    let i = ((p / 100.0) * (s.len() - 1) as f64).round() as usize;
    s[i]
}

fn verdict(met: bool) -> &'static str {
    if met { "met" } else { "MISSED" }
}

struct Report<'a> {
    text: &'a [Vec<Whole>],
    tools: &'a [Vec<Whole>],
    ttfb: &'a [Vec<Streamed>],
    gaps: &'a [Vec<Streamed>],
    memory: &'a Memory,
    audits: &'a [(String, Audit, Expected)],
    /// (phase, requests per peer, CPU µs per gateway and then of this process).
    phases: &'a [(&'static str, usize, Vec<f64>)],
    rss_after: &'a [(String, Option<Status>)],
    reconnects: &'a [(String, usize)],
    stderr: &'a [(String, Vec<String>)],
    fsync: &'a [f64],
    mock_requests: usize,
    expected_mock_requests: usize,
}

fn latency_row(case: &str, mode: &str, d: &[f64], t: &[f64], target: f64, extra: &str) {
    let added50 = pct(t, 50.0) - pct(d, 50.0);
    let added99 = pct(t, 99.0) - pct(d, 99.0);
    println!(
        "{:<20} {:<9} {:>8.0} {:>8.0}   {:>8.0} {:>8.0}   {:>9.0} {:>9.0}   ≤ {target:.0} µs added p50: {}{extra}",
        case,
        mode,
        pct(d, 50.0),
        pct(d, 99.0),
        pct(t, 50.0),
        pct(t, 99.0),
        added50,
        added99,
        verdict(added50 <= target),
    );
}

fn latency_header(first: &str) {
    println!(
        "{:<20} {:<9} {:>8} {:>8}   {:>8} {:>8}   {:>9} {:>9}   target",
        first, "audit", "dir p50", "dir p99", "thr p50", "thr p99", "added p50", "added p99"
    );
}

/// Print the tables; the problems found (audit counts, shutdowns), for the caller to abort on.
fn report(r: &Report) -> Vec<String> {
    let cpus = std::thread::available_parallelism().map_or(0, usize::from);
    println!(
        "LLM gateway (POST /llm/openai/chat/completions) vs the same request direct to the same mock provider, same run;"
    );
    println!("{cpus} CPUs reported by the OS; all figures µs unless marked.");
    println!();
    println!(
        "non-streaming: {CALLS} measured sequential calls per peer after {WARMUP} warm-up, blocks of {BLOCK}; request written → response body read"
    );
    latency_header("case");
    for (case, s) in [("chat_text", r.text), ("chat_tools (2 calls)", r.tools)] {
        for (i, mode) in MODES.iter().enumerate() {
            let extra = format!(
                "; added p99 ≤ {TARGET_ADDED_P99:.0}: {}",
                verdict(pct(&s[i + 1], 99.0) - pct(&s[0], 99.0) <= TARGET_ADDED_P99)
            );
            latency_row(case, mode, &s[0], &s[i + 1], TARGET_ADDED_P50, &extra);
        }
    }

    println!();
    println!(
        "streaming, time to first byte: {TTFB_CALLS} streams per peer ({TTFB_CHUNKS} unpaced chunks) after {TTFB_WARMUP} warm-up; request written → first body byte"
    );
    latency_header("measure");
    let ttfb = |i: usize| -> Vec<f64> { r.ttfb[i].iter().map(|s| s.ttfb).collect() };
    let whole = |i: usize| -> Vec<f64> { r.ttfb[i].iter().map(|s| s.end).collect() };
    for (i, mode) in MODES.iter().enumerate() {
        latency_row("first byte", mode, &ttfb(0), &ttfb(i + 1), TARGET_TTFB, "");
    }
    for (i, mode) in MODES.iter().enumerate() {
        println!(
            "{:<20} {:<9} {:>8.0} {:>8.0}   {:>8.0} {:>8.0}   {:>9.0} {:>9.0}   (no target)",
            "whole stream",
            mode,
            pct(&whole(0), 50.0),
            pct(&whole(0), 99.0),
            pct(&whole(i + 1), 50.0),
            pct(&whole(i + 1), 99.0),
            pct(&whole(i + 1), 50.0) - pct(&whole(0), 50.0),
            pct(&whole(i + 1), 99.0) - pct(&whole(0), 99.0),
        );
    }

    println!();
    println!(
        "streaming, between chunks: {GAP_STREAMS} streams per peer of {GAP_CHUNKS} chunks {GAP_INTERVAL_US} µs apart ({} chunks per peer);",
        GAP_STREAMS * GAP_CHUNKS
    );
    println!(
        "relay = mock hands a chunk to its server → client reads it (one clock); gap = between consecutive chunks' arrivals"
    );
    latency_header("measure");
    let relay = |i: usize| -> Vec<f64> { r.gaps[i].iter().flat_map(|s| s.relay.clone()).collect() };
    let gap = |i: usize| -> Vec<f64> { r.gaps[i].iter().flat_map(|s| s.gaps.clone()).collect() };
    for (i, mode) in MODES.iter().enumerate() {
        latency_row(
            "per-chunk relay",
            mode,
            &relay(0),
            &relay(i + 1),
            TARGET_CHUNK,
            "",
        );
    }
    for (i, mode) in MODES.iter().enumerate() {
        latency_row(
            "inter-arrival gap",
            mode,
            &gap(0),
            &gap(i + 1),
            TARGET_CHUNK,
            "",
        );
    }
    let ttfb_paced = |i: usize| -> Vec<f64> { r.gaps[i].iter().map(|s| s.ttfb).collect() };
    for (i, mode) in MODES.iter().enumerate() {
        println!(
            "{:<20} {:<9} {:>8.0} {:>8}   {:>8.0} {:>8}   {:>9.0} {:>9}   (paced streams' first byte, few samples)",
            "first byte (paced)",
            mode,
            pct(&ttfb_paced(0), 50.0),
            "",
            pct(&ttfb_paced(i + 1), 50.0),
            "",
            pct(&ttfb_paced(i + 1), 50.0) - pct(&ttfb_paced(0), 50.0),
            "",
        );
    }

    println!();
    let m = r.memory;
    println!(
        "memory: a fresh `portcullis serve` (buffered), {} streams held open at once (bench-hold), each past its first event",
        m.streams
    );
    if m.streams < OPEN_STREAMS {
        println!(
            "  (fewer than {OPEN_STREAMS}: the open-files limit is {:?})",
            m.fd_limit
        );
    }
    let show = |s: &Option<Status>| {
        s.map_or("gone".to_string(), |s| {
            format!(
                "VmRSS {:>8.0} KiB ({:.1} MiB), VmHWM {:>8.0} KiB, {} threads",
                s.rss_kib,
                s.rss_kib / 1024.0,
                s.hwm_kib,
                s.threads
            )
        })
    };
    println!("  idle after warm-up      {}", show(&m.idle));
    println!(
        "  {} streams open        {}   (opened and first events read in {:.2} s)",
        m.streams,
        show(&m.open),
        m.open_s
    );
    println!("  after they all ended    {}", show(&m.after));
    if let (Some(i), Some(o)) = (m.idle, m.open) {
        let idle_mib = i.rss_kib / 1024.0;
        let per = (o.rss_kib - i.rss_kib) / m.streams as f64;
        println!(
            "  idle RSS {idle_mib:.1} MiB   target ≤ {TARGET_IDLE_MIB:.0} MiB: {}",
            verdict(idle_mib <= TARGET_IDLE_MIB)
        );
        println!(
            "  per open stream (open − idle) / {}: {per:.1} KiB   target ≤ {TARGET_STREAM_KIB:.0} KiB: {}",
            m.streams,
            verdict(per <= TARGET_STREAM_KIB)
        );
    }
    for (name, s) in r.rss_after {
        println!("  {name} after all latency runs: {}", show(s));
    }

    println!();
    println!(
        "portcullis's own decision time (audit records' latency_us: the gate before the audit write)"
    );
    println!(
        "{:<9} {:>14} {:>14} {:>14} {:>14} {:>14} {:>14}",
        "audit",
        "request p50",
        "request p99",
        "response p50",
        "response p99",
        "tool_call p50",
        "tool_call p99"
    );
    for (mode, a, _) in r.audits {
        println!(
            "{:<9} {:>14.0} {:>14.0} {:>14.0} {:>14.0} {:>14.0} {:>14.0}",
            mode,
            pct(&a.requests, 50.0),
            pct(&a.requests, 99.0),
            pct(&a.responses, 50.0),
            pct(&a.responses, 99.0),
            pct(&a.tool_calls, 50.0),
            pct(&a.tool_calls, 99.0)
        );
    }

    println!();
    println!(
        "CPU time per request (user + sys, all threads, /proc; warm-up included). `bench` is this process: client of all three peers + the mock"
    );
    println!(
        "{:<22} {:>9} {:>16} {:>16} {:>16}",
        "phase", "requests", "serve durable", "serve buffered", "bench (3 peers)"
    );
    for (phase, n, cpu) in r.phases {
        let per = |i: usize| cpu.get(i).copied().unwrap_or(f64::NAN) / *n as f64;
        println!(
            "{:<22} {:>9} {:>16.0} {:>16.0} {:>16.0}",
            phase,
            n,
            per(0),
            per(1),
            per(2)
        );
    }
    println!(
        "bare fdatasync of a 1 kB append next to the audit logs: p50 {:.0} µs, p99 {:.0} µs",
        pct(r.fsync, 50.0),
        pct(r.fsync, 99.0)
    );

    println!();
    let mut problems = Vec::new();
    for (mode, a, e) in r.audits {
        let ok = a.requests.len() == e.requests
            && a.responses.len() == e.requests
            && a.tool_calls.len() == e.tool_calls
            && a.denied == e.denied
            && a.unexpected_denies == 0
            && a.unparsable == 0;
        println!(
            "audit ({mode}): {} model_request + {} model_response for {} requests, {} tool_call ({} denied) for {} ({}){}",
            a.requests.len(),
            a.responses.len(),
            e.requests,
            a.tool_calls.len(),
            a.denied,
            e.tool_calls,
            e.denied,
            if ok { "" } else { "  MISMATCH" }
        );
        if !ok {
            problems.push(format!(
                "audit {mode}: {} model_request, {} model_response, {} tool_call ({} denied), {} other denies, {} other records, {} unparsable; expected {} / {} / {} ({})",
                a.requests.len(),
                a.responses.len(),
                a.tool_calls.len(),
                a.denied,
                a.unexpected_denies,
                a.other,
                a.unparsable,
                e.requests,
                e.requests,
                e.tool_calls,
                e.denied
            ));
        }
    }
    println!(
        "the mock answered {} requests (expected {})",
        r.mock_requests, r.expected_mock_requests
    );
    if r.mock_requests != r.expected_mock_requests {
        problems.push(format!(
            "the mock answered {} requests, not {}",
            r.mock_requests, r.expected_mock_requests
        ));
    }
    for (peer, n) in r.reconnects {
        if *n > 0 {
            println!("{peer}: the server closed an idle connection {n} time(s); reopened untimed");
        }
    }
    for (name, lines) in r.stderr {
        if !lines.is_empty() {
            println!(
                "stderr of portcullis {name} (--log warn): {} line(s); the first:",
                lines.len()
            );
            for l in lines.iter().take(5) {
                println!("  {l}");
            }
        }
    }
    problems
}
