//! `cargo bench --bench mcp`: a `tools/call` round trip through portcullis against the same call
//! made directly to the same server, in the same run, over both MCP transports: stdio (`portcullis
//! mcp -- node … stdio`) and Streamable HTTP (`portcullis serve` relaying `/mcp/every` to an
//! upstream `streamableHttp` server), each once with a durable audit log (fdatasync before every
//! answer) and once buffered.
//!
//! The server is the official `@modelcontextprotocol/server-everything` (installed by `bash
//! scripts/test-deps.sh`) and the call is its `echo` tool with `{"message": "hello"}`; every
//! answer must be `Echo: hello`. The client is this process: blocking pipes for stdio
//! (newline-delimited JSON-RPC) and one blocking keep-alive HTTP/1.1 `std::net` connection per
//! peer for HTTP, sending `Accept: application/json, text/event-stream` as the SDK clients do and
//! reading whichever framing comes back (chunked SSE, or JSON). A call is timed from just before
//! its request is written to the moment its response message is complete (for SSE: the event that
//! carries it; the rest of the stream is read before the next call, untimed, and reported apart).
//! Calls are sequential: one in flight per peer.
//!
//! portcullis is the real release binary (`CARGO_BIN_EXE_portcullis`, built for the bench
//! profile) as a child process, so the figures include its process boundary as a deployment has
//! it. Per call it decides a `tool_call` and a `tool_result`, so durable mode pays two audit
//! acknowledgements. Direct and through peers run side by side and take turns in blocks of
//! `BLOCK` calls (the starting peer rotating every round), so machine noise hits all of them
//! alike; for HTTP the direct client and both gateways talk to one upstream process. Figures are
//! printed as tables with the target beside them; compare rows of the same run, not runs on
//! different machines (DESIGN §8). Nothing here asserts a threshold, but a failed or wrong answer
//! aborts the run, and the audit logs are counted afterwards (one `tool_call` and one
//! `tool_result` record per echo call).

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "a benchmark fails loudly"
)]

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, ChildStdout, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, mpsc};
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use sha2::{Digest, Sha256};

const PROTOCOL: &str = "2025-11-25";
const MESSAGE: &str = "hello";
const KEY: &str = "bench-mcp-key";
/// Calls per peer before the measured ones, interleaved like them.
const WARMUP: usize = 200;
/// Measured calls per peer.
const CALLS: usize = 2_000;
/// Calls per turn of one peer.
const BLOCK: usize = 250;
const MODES: [&str; 2] = ["durable", "buffered"];
/// A call (or a start-up) that takes longer than this is a stall: the run is aborted.
const STALL: Duration = Duration::from_secs(30);

const TARGET_ADDED_P50: f64 = 150.0;

fn main() {
    let began = Instant::now();
    let index = server_everything();
    let exe = portcullis_exe();
    let watchdog = Watchdog::start(began);
    eprintln!("stdio: direct, through durable, through buffered");
    let stdio = bench_stdio(&exe, &index, &watchdog);
    eprintln!("HTTP: direct, through durable, through buffered");
    let http = bench_http(&exe, &index, &watchdog);
    let fsync = fsync_probe();
    let problems = report(&[stdio, http], &fsync);
    println!();
    println!("total {:.1} s", began.elapsed().as_secs_f64());
    if !problems.is_empty() {
        panic!("{}", problems.join("\n"));
    }
}

// === what runs ===

fn server_everything() -> PathBuf {
    let p = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(
        "tests/mcp-fixtures/node_modules/@modelcontextprotocol/server-everything/dist/index.js",
    );
    assert!(
        p.exists(),
        "{} is missing: run `bash scripts/test-deps.sh`",
        p.display()
    );
    p
}

fn portcullis_exe() -> PathBuf {
    let p = PathBuf::from(env!("CARGO_BIN_EXE_portcullis"));
    assert!(
        p.exists(),
        "{} is missing: build it with `cargo build --release` (cargo bench builds it)",
        p.display()
    );
    p
}

/// A child process: killed and waited for when dropped (also while a panic unwinds), its stderr
/// kept line by line.
struct Proc {
    name: String,
    child: Child,
    stderr: Lines,
}

impl Proc {
    fn spawn(name: &str, mut cmd: Command, watchdog: &Watchdog) -> Proc {
        let mut child = cmd
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("{name}: cannot start {cmd:?}: {e}"));
        watchdog.watch(child.id());
        let stderr = Lines::drain(child.stderr.take().unwrap());
        Proc {
            name: name.to_string(),
            child,
            stderr,
        }
    }

    /// Wait for it to exit by itself (after its stdin closed, or a SIGTERM), killing it after
    /// `grace`. What happened, when it was not a clean exit.
    fn finish(&mut self, grace: Duration) -> Option<String> {
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

    /// SIGTERM (portcullis serve's graceful shutdown), then `finish`.
    fn terminate(&mut self, grace: Duration) -> Option<String> {
        if let Ok(None) = self.child.try_wait() {
            let _ = Command::new("kill")
                .arg("-TERM")
                .arg(self.child.id().to_string())
                .status();
        }
        self.finish(grace)
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

/// Kills every child it watches when the run makes no progress for `STALL` (a blocking pipe read
/// has no timeout), so a stall aborts the run instead of hanging it.
struct Watchdog {
    began: Instant,
    last_ms: Arc<AtomicU64>,
    pids: Arc<Mutex<Vec<u32>>>,
    fired: Arc<AtomicBool>,
}

impl Watchdog {
    fn start(began: Instant) -> Watchdog {
        let w = Watchdog {
            began,
            last_ms: Arc::new(AtomicU64::new(0)),
            pids: Arc::new(Mutex::new(Vec::new())),
            fired: Arc::new(AtomicBool::new(false)),
        };
        let (last, pids, fired) = (w.last_ms.clone(), w.pids.clone(), w.fired.clone());
        std::thread::spawn(move || {
            loop {
                std::thread::sleep(Duration::from_secs(1));
                let now = began.elapsed().as_millis() as u64;
                if now.saturating_sub(last.load(Ordering::Relaxed)) > STALL.as_millis() as u64 {
                    fired.store(true, Ordering::Relaxed);
                    eprintln!("no progress for {STALL:?}: killing the children");
                    for pid in pids.lock().unwrap().iter() {
                        let _ = Command::new("kill")
                            .arg("-KILL")
                            .arg(pid.to_string())
                            .status();
                    }
                    return;
                }
            }
        });
        w.tick();
        w
    }

    fn tick(&self) {
        self.last_ms
            .store(self.began.elapsed().as_millis() as u64, Ordering::Relaxed);
    }

    fn watch(&self, pid: u32) {
        self.tick();
        self.pids.lock().unwrap().push(pid);
    }

    fn stalled(&self) -> bool {
        self.fired.load(Ordering::Relaxed)
    }
}

/// A workspace, a config and the audit log of one portcullis.
struct Env {
    _dir: tempfile::TempDir,
    path: PathBuf,
}

impl Env {
    /// `extra` is appended to the config (server, agents, upstreams).
    fn new(mode: &str, extra: &str) -> Env {
        // Not tempfile's default `.tmpXXXX`: a dot directory looks like a hidden config dir.
        let dir = tempfile::Builder::new()
            .prefix("bench-mcp")
            .tempdir()
            .unwrap();
        let path = dir.path().canonicalize().unwrap();
        std::fs::create_dir_all(path.join("ws")).unwrap();
        std::fs::write(path.join("ws/README.md"), "# bench\n").unwrap();
        let config = format!(
            r#"{extra}
[workspace]
roots = ["{ws}"]

[audit]
path = "{audit}"
durability = "{mode}"

[mcp]
pins = "{pins}"
"#,
            ws = path.join("ws").display(),
            audit = path.join("audit.jsonl").display(),
            pins = path.join("pins.json").display(),
        );
        std::fs::write(path.join("portcullis.toml"), config).unwrap();
        Env { _dir: dir, path }
    }

    fn config(&self) -> PathBuf {
        self.path.join("portcullis.toml")
    }

    /// The echo decisions in every audit log portcullis wrote here (`serve` writes
    /// `audit.jsonl`, the stdio wrapper `audit.mcp-<server>.jsonl`).
    fn echo_records(&self) -> Audit {
        let mut a = Audit::default();
        for entry in std::fs::read_dir(&self.path).unwrap() {
            let p = entry.unwrap().path();
            let name = p.file_name().unwrap().to_string_lossy().into_owned();
            if !(name.starts_with("audit") && name.ends_with(".jsonl")) {
                continue;
            }
            for line in std::fs::read_to_string(&p).unwrap().lines() {
                let Ok(v) = serde_json::from_str::<Value>(line) else {
                    a.unparsable += 1;
                    continue;
                };
                if v["type"] != "decision" || v["action"]["tool"]["name"] != "echo" {
                    continue;
                }
                let latency = v["latency_us"].as_f64().unwrap_or(f64::NAN);
                let allowed = v["decision"]["outcome"] == "allow";
                match v["action"]["kind"].as_str() {
                    Some("tool_call") => {
                        a.calls.push(latency);
                        a.not_allowed += usize::from(!allowed);
                    }
                    Some("tool_result") => {
                        a.results.push(latency);
                        a.not_allowed += usize::from(!allowed);
                    }
                    _ => {}
                }
            }
        }
        a
    }
}

/// The echo decision records of one audit log, with their `latency_us` (the gate's decision,
/// before the audit write).
#[derive(Default)]
struct Audit {
    calls: Vec<f64>,
    results: Vec<f64>,
    not_allowed: usize,
    unparsable: usize,
}

// === the peers ===

/// One MCP client session, direct or through portcullis.
trait Peer {
    /// Called before each block of calls, untimed.
    fn prepare(&mut self) -> Result<(), String> {
        Ok(())
    }

    /// One `tools/call` of echo: its latency and the time to the end of its HTTP response (µs).
    fn echo(&mut self, id: u64) -> Result<(f64, f64), String>;
}

fn echo_request(id: u64) -> Vec<u8> {
    serde_json::to_vec(&json!({
        "jsonrpc": "2.0",
        "id": id,
        "method": "tools/call",
        "params": {"name": "echo", "arguments": {"message": MESSAGE}},
    }))
    .unwrap()
}

fn initialize_request() -> Vec<u8> {
    serde_json::to_vec(&json!({
        "jsonrpc": "2.0",
        "id": 0,
        "method": "initialize",
        "params": {
            "protocolVersion": PROTOCOL,
            "capabilities": {},
            "clientInfo": {"name": "portcullis-bench", "version": "0"},
        },
    }))
    .unwrap()
}

const INITIALIZED: &[u8] = br#"{"jsonrpc":"2.0","method":"notifications/initialized"}"#;

/// The response must be the echo of `MESSAGE`.
fn check_echo(v: &Value) -> Result<(), String> {
    let want = format!("Echo: {MESSAGE}");
    if v["result"]["content"][0]["text"].as_str() == Some(want.as_str()) {
        Ok(())
    } else {
        Err(format!("not the echo: {v}"))
    }
}

/// Newline-delimited JSON-RPC over a child's stdin and stdout.
struct StdioPeer {
    stdin: Option<ChildStdin>,
    stdout: BufReader<ChildStdout>,
    line: String,
    proc: Proc,
}

impl StdioPeer {
    fn start(name: &str, mut cmd: Command, watchdog: &Watchdog) -> StdioPeer {
        cmd.stdin(Stdio::piped()).stdout(Stdio::piped());
        let mut proc = Proc::spawn(name, cmd, watchdog);
        let stdin = proc.child.stdin.take();
        let stdout = BufReader::new(proc.child.stdout.take().unwrap());
        let mut p = StdioPeer {
            stdin,
            stdout,
            line: String::new(),
            proc,
        };
        let init = p
            .request(&initialize_request(), 0)
            .and_then(|(v, _)| {
                v.get("result")
                    .map(|_| ())
                    .ok_or_else(|| format!("initialize failed: {v}"))
            })
            .and_then(|()| p.send(INITIALIZED));
        if let Err(e) = init {
            panic!(
                "{name}: {e}; stderr:\n{}",
                p.proc.stderr.snapshot().join("\n")
            );
        }
        p
    }

    fn send(&mut self, msg: &[u8]) -> Result<(), String> {
        let stdin = self.stdin.as_mut().ok_or("stdin is closed")?;
        // One write per message, as a client's line writer does.
        let mut line = Vec::with_capacity(msg.len() + 1);
        line.extend_from_slice(msg);
        line.push(b'\n');
        stdin
            .write_all(&line)
            .and_then(|()| stdin.flush())
            .map_err(|e| format!("write: {e}"))
    }

    /// Send a request, read until its response (notifications are skipped); the response and
    /// when its line was read.
    fn request(&mut self, msg: &[u8], id: u64) -> Result<(Value, Instant), String> {
        self.send(msg)?;
        loop {
            self.line.clear();
            let n = self
                .stdout
                .read_line(&mut self.line)
                .map_err(|e| format!("read: {e}"))?;
            let at = Instant::now();
            if n == 0 {
                return Err("the server closed its stdout".into());
            }
            let v: Value = serde_json::from_str(&self.line)
                .map_err(|e| format!("not JSON ({e}): {:?}", self.line))?;
            if v.get("method").is_some() {
                if v.get("id").is_some() {
                    return Err(format!("unexpected server request: {v}"));
                }
                continue;
            }
            if v["id"].as_u64() == Some(id) {
                return Ok((v, at));
            }
            return Err(format!("a response to another request: {v}"));
        }
    }

    /// Close stdin and wait for the process to exit by itself.
    fn finish(&mut self) -> Option<String> {
        self.stdin = None;
        self.proc.finish(Duration::from_secs(10))
    }
}

impl Peer for StdioPeer {
    fn echo(&mut self, id: u64) -> Result<(f64, f64), String> {
        let req = echo_request(id);
        let t = Instant::now();
        let (v, at) = self.request(&req, id)?;
        let us = (at - t).as_secs_f64() * 1e6;
        check_echo(&v)?;
        Ok((us, us))
    }
}

/// One Streamable HTTP session on one blocking keep-alive HTTP/1.1 connection.
struct HttpPeer {
    addr: SocketAddr,
    path: String,
    auth: Option<String>,
    session: Option<String>,
    conn: Option<Conn>,
    /// Connections the server had closed and were opened again (between calls, untimed).
    reconnects: usize,
}

/// What came back for one POST.
struct Reply {
    status: u16,
    content_type: String,
    session: Option<String>,
    /// The response to the request, and when it was complete.
    message: Option<(Value, Instant)>,
    body: Vec<u8>,
}

impl HttpPeer {
    fn start(name: &str, addr: SocketAddr, path: &str, auth: Option<&str>) -> HttpPeer {
        let mut p = HttpPeer {
            addr,
            path: path.to_string(),
            auth: auth.map(|k| format!("authorization: Bearer {k}\r\n")),
            session: None,
            conn: None,
            reconnects: 0,
        };
        if let Err(e) = p.handshake() {
            panic!("{name}: {e}");
        }
        p
    }

    fn handshake(&mut self) -> Result<(), String> {
        let r = self.post(&initialize_request(), Some(0))?;
        let ok = r.status == 200
            && r.message
                .as_ref()
                .is_some_and(|(v, _)| v["result"].is_object());
        if !ok {
            return Err(format!(
                "initialize answered {} ({}): {}",
                r.status,
                r.content_type,
                String::from_utf8_lossy(&r.body)
            ));
        }
        self.session = Some(r.session.ok_or("initialize answered no mcp-session-id")?);
        let r = self.post(INITIALIZED, None)?;
        if r.status != 202 {
            return Err(format!(
                "notifications/initialized answered {}: {}",
                r.status,
                String::from_utf8_lossy(&r.body)
            ));
        }
        Ok(())
    }

    fn request_bytes(&self, body: &[u8]) -> Vec<u8> {
        let mut head = format!(
            "POST {} HTTP/1.1\r\nhost: {}\r\ncontent-type: application/json\r\n\
             accept: application/json, text/event-stream\r\n",
            self.path, self.addr
        );
        if let Some(a) = &self.auth {
            head.push_str(a);
        }
        if let Some(s) = &self.session {
            head.push_str(&format!(
                "mcp-session-id: {s}\r\nmcp-protocol-version: {PROTOCOL}\r\n"
            ));
        }
        head.push_str(&format!("content-length: {}\r\n\r\n", body.len()));
        let mut req = head.into_bytes();
        req.extend_from_slice(body);
        req
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

    fn post(&mut self, body: &[u8], want: Option<u64>) -> Result<Reply, String> {
        let req = self.request_bytes(body);
        let conn = self.conn()?;
        let r = conn.exchange(&req, want);
        if r.as_ref().map_or(true, |(_, close)| *close) {
            self.conn = None;
        }
        r.map(|(reply, _)| reply)
    }
}

impl Peer for HttpPeer {
    fn prepare(&mut self) -> Result<(), String> {
        self.conn().map(|_| ())
    }

    fn echo(&mut self, id: u64) -> Result<(f64, f64), String> {
        let req = self.request_bytes(&echo_request(id));
        let conn = self.conn()?;
        let t = Instant::now();
        let r = conn.exchange(&req, Some(id));
        let end = t.elapsed().as_secs_f64() * 1e6;
        if r.as_ref().map_or(true, |(_, close)| *close) {
            self.conn = None;
        }
        let (reply, _) = r?;
        let Some((v, at)) = &reply.message else {
            return Err(format!(
                "no response to {id}: {} ({}) {}",
                reply.status,
                reply.content_type,
                String::from_utf8_lossy(&reply.body)
            ));
        };
        if reply.status != 200 {
            return Err(format!("status {}: {v}", reply.status));
        }
        check_echo(v)?;
        Ok(((*at - t).as_secs_f64() * 1e6, end))
    }
}

/// A blocking HTTP/1.1 connection that decodes Content-Length and chunked bodies.
struct Conn {
    stream: TcpStream,
    buf: Vec<u8>,
    /// Unread bytes are `buf[pos..len]`.
    pos: usize,
    len: usize,
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
            buf: vec![0; 64 * 1024],
            pos: 0,
            len: 0,
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

    /// Write one request and read its whole response; whether the server closes after it.
    fn exchange(&mut self, req: &[u8], want: Option<u64>) -> Result<(Reply, bool), String> {
        self.stream
            .write_all(req)
            .map_err(|e| format!("write: {e}"))?;
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
        let (mut length, mut chunked, mut close) = (None, false, false);
        let (mut content_type, mut session) = (String::new(), None);
        for line in head.split("\r\n").skip(1) {
            let Some((name, value)) = line.split_once(':') else {
                continue;
            };
            let value = value.trim();
            let name = name.to_ascii_lowercase();
            match name.as_str() {
                "content-length" => length = value.parse::<usize>().ok(),
                "transfer-encoding" => chunked = value.eq_ignore_ascii_case("chunked"),
                "connection" => close = value.eq_ignore_ascii_case("close"),
                "content-type" => content_type = value.to_ascii_lowercase(),
                "mcp-session-id" => session = Some(value.to_string()),
                _ => {}
            }
        }
        let sse = content_type.starts_with("text/event-stream");
        let mut events = Sse::default();
        let mut body = Vec::new();
        if chunked {
            loop {
                let end = self.line_end()?;
                let size_line = String::from_utf8_lossy(&self.buf[self.pos..end - 2]).into_owned();
                self.pos = end;
                let size =
                    usize::from_str_radix(size_line.split(';').next().unwrap_or("").trim(), 16)
                        .map_err(|_| format!("bad chunk size {size_line:?}"))?;
                if size == 0 {
                    // Trailers, up to the empty line.
                    loop {
                        let start = self.pos;
                        self.pos = self.line_end()?;
                        if self.pos == start + 2 {
                            break;
                        }
                    }
                    break;
                }
                let mut left = size;
                while left > 0 {
                    if self.pos == self.len {
                        self.fill()?;
                    }
                    let take = left.min(self.len - self.pos);
                    body.extend_from_slice(&self.buf[self.pos..self.pos + take]);
                    self.pos += take;
                    left -= take;
                    if sse {
                        events.scan(&body, want)?;
                    }
                }
                while self.len - self.pos < 2 {
                    self.fill()?;
                }
                if &self.buf[self.pos..self.pos + 2] != b"\r\n" {
                    return Err("a chunk does not end in CRLF".into());
                }
                self.pos += 2;
            }
        } else {
            let n = match (length, status) {
                (Some(n), _) => n,
                (None, 204 | 304) => 0,
                (None, _) => return Err(format!("neither content-length nor chunked: {head:?}")),
            };
            while body.len() < n {
                if self.pos == self.len {
                    self.fill()?;
                }
                let take = (n - body.len()).min(self.len - self.pos);
                body.extend_from_slice(&self.buf[self.pos..self.pos + take]);
                self.pos += take;
                if sse {
                    events.scan(&body, want)?;
                }
            }
        }
        let message = match (sse, want) {
            (true, _) => events.found,
            (false, Some(id)) if content_type.starts_with("application/json") => {
                let at = Instant::now();
                let v: Value = serde_json::from_slice(&body)
                    .map_err(|e| format!("JSON body ({e}): {}", String::from_utf8_lossy(&body)))?;
                (v["id"].as_u64() == Some(id)).then_some((v, at))
            }
            _ => None,
        };
        Ok((
            Reply {
                status,
                content_type,
                session,
                message,
                body,
            },
            close,
        ))
    }
}

/// Server-sent events read as the body grows: the message that answers `want`, and when.
#[derive(Default)]
struct Sse {
    /// Start of the first line not yet read.
    cursor: usize,
    data: Vec<u8>,
    found: Option<(Value, Instant)>,
}

impl Sse {
    fn scan(&mut self, body: &[u8], want: Option<u64>) -> Result<(), String> {
        while let Some(i) = body[self.cursor..].iter().position(|&b| b == b'\n') {
            let mut line = &body[self.cursor..self.cursor + i];
            self.cursor += i + 1;
            if line.last() == Some(&b'\r') {
                line = &line[..line.len() - 1];
            }
            if line.is_empty() {
                // The end of an event; one with no data (a priming event) carries nothing.
                if !self.data.is_empty() {
                    let v: Value = serde_json::from_slice(&self.data).map_err(|e| {
                        format!("SSE data ({e}): {}", String::from_utf8_lossy(&self.data))
                    })?;
                    self.data.clear();
                    if v.get("method").is_some() {
                        if v.get("id").is_some() {
                            return Err(format!("unexpected server request: {v}"));
                        }
                    } else if want.is_some() && v["id"].as_u64() == want {
                        if self.found.is_some() {
                            return Err(format!("a second response: {v}"));
                        }
                        self.found = Some((v, Instant::now()));
                    } else {
                        return Err(format!("a response to another request: {v}"));
                    }
                }
            } else if let Some(d) = line.strip_prefix(b"data:") {
                if !self.data.is_empty() {
                    self.data.push(b'\n');
                }
                self.data
                    .extend_from_slice(d.strip_prefix(b" ").unwrap_or(d));
            }
        }
        Ok(())
    }
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

// === the runs ===

/// What one peer measured.
struct Samples {
    latency: Vec<f64>,
    /// HTTP: to the end of the response body (the stream's last chunk).
    end: Vec<f64>,
}

/// `WARMUP` then `CALLS` echo calls on every peer, taking turns in blocks.
fn interleave(peers: &mut [(&str, &mut dyn Peer)], watchdog: &Watchdog) -> Vec<Samples> {
    let n = peers.len();
    let mut out: Vec<Samples> = (0..n)
        .map(|_| Samples {
            latency: Vec::with_capacity(CALLS),
            end: Vec::with_capacity(CALLS),
        })
        .collect();
    let mut id = 1;
    let warm_block = BLOCK / 5;
    let phases = [
        (WARMUP / warm_block, warm_block, false),
        (CALLS / BLOCK, BLOCK, true),
    ];
    for (rounds, block, keep) in phases {
        for round in 0..rounds {
            for j in 0..n {
                let k = (round + j) % n;
                let (name, peer) = &mut peers[k];
                if let Err(e) = peer.prepare() {
                    fail(name, id, &e, watchdog);
                }
                for _ in 0..block {
                    id += 1;
                    match peer.echo(id) {
                        Ok((us, end)) if keep => {
                            out[k].latency.push(us);
                            out[k].end.push(end);
                        }
                        Ok(_) => {}
                        Err(e) => fail(name, id, &e, watchdog),
                    }
                    watchdog.tick();
                }
            }
        }
    }
    out
}

fn fail(name: &str, id: u64, e: &str, watchdog: &Watchdog) -> ! {
    if watchdog.stalled() {
        panic!("{name}: call {id} stalled (no answer for {STALL:?}): {e}");
    }
    panic!("{name}: call {id} failed: {e}");
}

/// One transport's figures.
struct Bench {
    transport: &'static str,
    direct: Samples,
    /// Per mode: the through samples.
    through: Vec<(&'static str, Samples)>,
    /// Per mode: the echo records in its audit log.
    audit: Vec<(&'static str, Audit)>,
    /// Calls made per peer (handshake excluded).
    calls: usize,
    /// What portcullis printed on stderr (at `--log warn`), per mode; and shutdown trouble.
    stderr: Vec<(&'static str, Vec<String>)>,
    problems: Vec<String>,
    reconnects: Vec<(String, usize)>,
    /// HTTP: what the upstream server saw.
    upstream_requests: Option<String>,
    /// CPU time of each server-side process over the calls: (process, µs, calls it served).
    cpu: Vec<(String, f64, usize)>,
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

/// The processes a process started (the server behind a stdio wrapper).
fn children(pid: u32) -> Vec<u32> {
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return Vec::new();
    };
    tasks
        .flatten()
        .filter_map(|t| std::fs::read_to_string(t.path().join("children")).ok())
        .flat_map(|c| {
            c.split_whitespace()
                .filter_map(|p| p.parse().ok())
                .collect::<Vec<u32>>()
        })
        .collect()
}

/// CPU per process over `f`: (name, pid, calls it serves) in, (name, µs, calls) out.
fn cpu_over<T>(
    procs: &[(String, u32, usize)],
    f: impl FnOnce() -> T,
) -> (T, Vec<(String, f64, usize)>) {
    let tick = tick_us();
    let before: Vec<f64> = procs.iter().map(|(_, pid, _)| cpu_us(*pid, tick)).collect();
    let out = f();
    let cpu = procs
        .iter()
        .zip(before)
        .map(|((name, pid, calls), b)| (name.clone(), cpu_us(*pid, tick) - b, *calls))
        .collect();
    (out, cpu)
}

fn bench_stdio(exe: &Path, index: &Path, watchdog: &Watchdog) -> Bench {
    let server = |cmd: &mut Command| {
        cmd.arg(index).arg("stdio");
    };
    let mut direct_cmd = Command::new("node");
    server(&mut direct_cmd);
    let mut direct = StdioPeer::start("stdio direct", direct_cmd, watchdog);
    let envs: Vec<Env> = MODES.iter().map(|m| Env::new(m, "")).collect();
    let mut through: Vec<StdioPeer> = MODES
        .iter()
        .zip(&envs)
        .map(|(mode, env)| {
            let mut cmd = Command::new(exe);
            cmd.args(["--log", "warn", "mcp", "--config"])
                .arg(env.config())
                .args(["--", "node"]);
            server(&mut cmd);
            StdioPeer::start(&format!("stdio through portcullis ({mode})"), cmd, watchdog)
        })
        .collect();
    let calls = WARMUP + CALLS;
    let mut procs = vec![("node (direct)".to_string(), direct.proc.child.id(), calls)];
    for (mode, p) in MODES.iter().zip(&through) {
        let pid = p.proc.child.id();
        procs.push((format!("portcullis mcp ({mode})"), pid, calls));
        for child in children(pid) {
            procs.push((format!("  node behind it ({mode})"), child, calls));
        }
    }
    let (samples, cpu) = cpu_over(&procs, || {
        let mut peers: Vec<(&str, &mut dyn Peer)> = vec![("stdio direct", &mut direct)];
        for (mode, p) in MODES.iter().zip(through.iter_mut()) {
            peers.push((mode, p));
        }
        interleave(&mut peers, watchdog)
    });
    let mut problems: Vec<String> = direct.finish().into_iter().collect();
    let mut stderr = Vec::new();
    for (mode, p) in MODES.iter().zip(through.iter_mut()) {
        problems.extend(p.finish());
        stderr.push((*mode, p.proc.stderr.snapshot()));
    }
    let audit = MODES
        .iter()
        .zip(&envs)
        .map(|(m, e)| (*m, e.echo_records()))
        .collect();
    let mut samples = samples.into_iter();
    Bench {
        transport: "stdio",
        direct: samples.next().unwrap(),
        through: MODES.iter().copied().zip(samples).collect(),
        audit,
        calls: WARMUP + CALLS,
        stderr,
        problems,
        reconnects: Vec::new(),
        upstream_requests: None,
        cpu,
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn bench_http(exe: &Path, index: &Path, watchdog: &Watchdog) -> Bench {
    let port = free_port();
    let mut cmd = Command::new("node");
    cmd.arg(index)
        .arg("streamableHttp")
        .env("PORT", port.to_string())
        .stdin(Stdio::null())
        .stdout(Stdio::piped());
    let mut upstream = Proc::spawn("HTTP upstream (server-everything)", cmd, watchdog);
    // It logs a line per request it handles.
    let upstream_log = Lines::drain(upstream.child.stdout.take().unwrap());
    upstream
        .stderr
        .wait_for("server-everything streamableHttp", "listening on port");
    let upstream_addr: SocketAddr = ([127, 0, 0, 1], port).into();
    let key = hex::encode(Sha256::digest(KEY.as_bytes()));
    let extra = format!(
        r#"
[server]
listen = "127.0.0.1:0"
admin_listen = "127.0.0.1:0"

[[agents]]
id = "bench"
api_key_sha256 = ["{key}"]

[[mcp.servers]]
name = "every"
url = "http://127.0.0.1:{port}/mcp"
"#
    );
    let envs: Vec<Env> = MODES.iter().map(|m| Env::new(m, &extra)).collect();
    let mut gateways: Vec<(Proc, Lines, SocketAddr)> = MODES
        .iter()
        .zip(&envs)
        .map(|(mode, env)| {
            let mut cmd = Command::new(exe);
            cmd.args(["--log", "warn", "serve", "--config"])
                .arg(env.config())
                .current_dir(&env.path)
                .stdin(Stdio::null())
                .stdout(Stdio::piped());
            let name = format!("portcullis serve ({mode})");
            let mut proc = Proc::spawn(&name, cmd, watchdog);
            let stdout = Lines::drain(proc.child.stdout.take().unwrap());
            let line = stdout.wait_for(&name, "gateway listening on http://");
            let addr = line
                .rsplit("http://")
                .next()
                .and_then(|a| a.trim().trim_end_matches('/').parse().ok())
                .unwrap_or_else(|| panic!("{name}: no address in {line:?}"));
            (proc, stdout, addr)
        })
        .collect();
    let mut direct = HttpPeer::start("HTTP direct", upstream_addr, "/mcp", None);
    let mut through: Vec<HttpPeer> = MODES
        .iter()
        .zip(&gateways)
        .map(|(mode, (_, _, addr))| {
            HttpPeer::start(
                &format!("HTTP through portcullis ({mode})"),
                *addr,
                "/mcp/every",
                Some(KEY),
            )
        })
        .collect();
    let calls = WARMUP + CALLS;
    let mut procs = vec![(
        "node upstream (all three peers)".to_string(),
        upstream.child.id(),
        (1 + MODES.len()) * calls,
    )];
    for (mode, (proc, _, _)) in MODES.iter().zip(&gateways) {
        procs.push((format!("portcullis serve ({mode})"), proc.child.id(), calls));
    }
    let (samples, cpu) = cpu_over(&procs, || {
        let mut peers: Vec<(&str, &mut dyn Peer)> = vec![("HTTP direct", &mut direct)];
        for (mode, p) in MODES.iter().zip(through.iter_mut()) {
            peers.push((mode, p));
        }
        interleave(&mut peers, watchdog)
    });
    let mut reconnects = vec![("HTTP direct".to_string(), direct.reconnects)];
    for (mode, p) in MODES.iter().zip(&through) {
        reconnects.push((format!("HTTP through ({mode})"), p.reconnects));
    }
    drop(through);
    let mut problems = Vec::new();
    let mut stderr = Vec::new();
    for (mode, (proc, _, _)) in MODES.iter().zip(gateways.iter_mut()) {
        problems.extend(proc.terminate(Duration::from_secs(10)));
        stderr.push((*mode, proc.stderr.snapshot()));
    }
    drop(gateways);
    drop(upstream);
    let log = upstream_log.snapshot();
    let count = |needle: &str| log.iter().filter(|l| l.contains(needle)).count();
    let sessions = 1 + MODES.len();
    let upstream_requests = format!(
        "the upstream logged {} POST (expected {} = {sessions} sessions × (initialize + initialized + {calls} calls)), \
         {} GET, {} session initialized, {} errors",
        count("Received MCP POST request"),
        sessions * (2 + calls),
        count("Received MCP GET request"),
        count("Session initialized"),
        count("Error"),
    );
    let audit = MODES
        .iter()
        .zip(&envs)
        .map(|(m, e)| (*m, e.echo_records()))
        .collect();
    let mut samples = samples.into_iter();
    Bench {
        transport: "HTTP",
        direct: samples.next().unwrap(),
        through: MODES.iter().copied().zip(samples).collect(),
        audit,
        calls: WARMUP + CALLS,
        stderr,
        problems,
        reconnects,
        upstream_requests: Some(upstream_requests),
        cpu,
    }
}

/// What one fdatasync of a small append costs in the directory the audit logs are in.
fn fsync_probe() -> Vec<f64> {
    let dir = tempfile::Builder::new()
        .prefix("bench-mcp-fsync")
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

/// Print the tables; the problems found (audit counts, shutdowns), for the caller to abort on.
fn report(benches: &[Bench], fsync: &[f64]) -> Vec<String> {
    let cpus = std::thread::available_parallelism().map_or(0, usize::from);
    println!(
        "MCP tools/call round trip (server-everything `echo`), direct vs through portcullis, same run;"
    );
    println!(
        "{CALLS} measured sequential calls per peer after {WARMUP} warm-up, in alternating blocks of {BLOCK};"
    );
    println!(
        "latency in µs from writing the request to reading its response; {cpus} CPUs reported by the OS."
    );
    println!();
    println!(
        "{:<9} {:<9} {:>8} {:>8} {:>8}   {:>8} {:>8} {:>8}   {:>9} {:>9}   target",
        "transport",
        "audit",
        "dir p50",
        "dir p90",
        "dir p99",
        "thr p50",
        "thr p90",
        "thr p99",
        "added p50",
        "added p99"
    );
    for b in benches {
        let d = &b.direct.latency;
        for (mode, t) in &b.through {
            let t = &t.latency;
            let added50 = pct(t, 50.0) - pct(d, 50.0);
            let added99 = pct(t, 99.0) - pct(d, 99.0);
            println!(
                "{:<9} {:<9} {:>8.0} {:>8.0} {:>8.0}   {:>8.0} {:>8.0} {:>8.0}   {:>9.0} {:>9.0}   ≤ {TARGET_ADDED_P50:.0} µs added p50: {}",
                b.transport,
                mode,
                pct(d, 50.0),
                pct(d, 90.0),
                pct(d, 99.0),
                pct(t, 50.0),
                pct(t, 90.0),
                pct(t, 99.0),
                added50,
                added99,
                verdict(added50 <= TARGET_ADDED_P50)
            );
        }
    }

    println!();
    println!("HTTP: to the end of the response (its last chunk), not only its message (µs)");
    println!(
        "{:<28} {:>8} {:>8} {:>8} {:>8}",
        "peer", "p50", "p99", "max", "msg→end p50"
    );
    for b in benches.iter().filter(|b| b.transport == "HTTP") {
        let rows =
            std::iter::once(("direct", &b.direct)).chain(b.through.iter().map(|(m, s)| (*m, s)));
        for (name, s) in rows {
            let gap: Vec<f64> = s.end.iter().zip(&s.latency).map(|(e, l)| e - l).collect();
            println!(
                "{:<28} {:>8.0} {:>8.0} {:>8.0} {:>8.0}",
                format!("{} {name}", b.transport),
                pct(&s.end, 50.0),
                pct(&s.end, 99.0),
                pct(&s.end, 100.0),
                pct(&gap, 50.0)
            );
        }
    }

    println!();
    println!(
        "portcullis's own decision time (audit records' latency_us: the gate before the audit write), µs"
    );
    println!(
        "{:<9} {:<9} {:>13} {:>13} {:>13} {:>13}",
        "transport", "audit", "tool_call p50", "tool_call p99", "result p50", "result p99"
    );
    let mut problems = Vec::new();
    for b in benches {
        for (mode, a) in &b.audit {
            println!(
                "{:<9} {:<9} {:>13.0} {:>13.0} {:>13.0} {:>13.0}",
                b.transport,
                mode,
                pct(&a.calls, 50.0),
                pct(&a.calls, 99.0),
                pct(&a.results, 50.0),
                pct(&a.results, 99.0)
            );
        }
    }
    println!();
    println!(
        "CPU time per call of the server-side processes (user + sys, all threads, /proc; warm-up and measured calls)"
    );
    println!(
        "{:<9} {:<34} {:>8} {:>12}",
        "transport", "process", "calls", "µs per call"
    );
    for b in benches {
        for (name, us, calls) in &b.cpu {
            println!(
                "{:<9} {:<34} {:>8} {:>12.0}",
                b.transport,
                name,
                calls,
                us / *calls as f64
            );
        }
    }
    println!(
        "bare fdatasync of a 1 kB append next to the audit logs: p50 {:.0} µs, p99 {:.0} µs",
        pct(fsync, 50.0),
        pct(fsync, 99.0)
    );

    println!();
    for b in benches {
        for (mode, a) in &b.audit {
            let ok = a.calls.len() == b.calls
                && a.results.len() == b.calls
                && a.not_allowed == 0
                && a.unparsable == 0;
            println!(
                "audit ({} {mode}): {} tool_call + {} tool_result echo records for {} calls{}",
                b.transport,
                a.calls.len(),
                a.results.len(),
                b.calls,
                if ok { "" } else { "  MISMATCH" }
            );
            if !ok {
                problems.push(format!(
                    "{} {mode}: {} tool_call and {} tool_result records ({} not allowed, {} unparsable lines) for {} echo calls",
                    b.transport,
                    a.calls.len(),
                    a.results.len(),
                    a.not_allowed,
                    a.unparsable,
                    b.calls
                ));
            }
        }
        if let Some(u) = &b.upstream_requests {
            println!("{}: {u}", b.transport);
        }
        for (peer, n) in &b.reconnects {
            if *n > 0 {
                println!(
                    "{peer}: the server closed an idle connection {n} time(s); reopened untimed"
                );
            }
        }
        for (mode, lines) in &b.stderr {
            if !lines.is_empty() {
                println!(
                    "stderr of portcullis ({} {mode}, --log warn; and of a server it runs): {} line(s); the first:",
                    b.transport,
                    lines.len()
                );
                for l in lines.iter().take(5) {
                    println!("  {l}");
                }
            }
        }
        for p in &b.problems {
            println!("shutdown ({}): {p}", b.transport);
        }
        problems.extend(b.problems.iter().map(|p| format!("{}: {p}", b.transport)));
    }
    problems
}
