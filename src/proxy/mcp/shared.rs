//! One stdio server process for every `/mcp/{server}` session (`process = "shared"`).
//!
//! Each session keeps its own [`Relay`] (its own caller, decisions, pins and in-flight table);
//! the mux between those relays and the one process makes each relay see a server of its own:
//! * client request ids are rewritten to ids of the mux (`pc-N`), and back on the response, so
//!   two sessions may use the same id; progress tokens likewise (`pc-progress-N`);
//! * the server is initialized once: the first session's `initialize` is forwarded and its
//!   result answers every later session's `initialize` (the server never sees their
//!   `clientInfo`), and `notifications/initialized` is sent once per process;
//! * what the server sends unasked goes to whom it concerns: a response and `notifications/
//!   progress` to the session of the request, `notifications/resources/updated` to the
//!   sessions that subscribed to the URI, a request (sampling, elicitation, roots) to the one
//!   session with requests in flight (else it is refused: it cannot be attributed), `ping` is
//!   answered by the mux; any other notification goes to every session;
//! * the process is restarted with backoff when it exits; every session's requests in flight
//!   fail at once, and the cached handshake is replayed to the new process.
//!
//! The mux never waits on a session or on the server: a slow client cannot stall the others,
//! and a server that stops reading cannot deadlock its own output.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use tokio::io::BufReader;
use tokio::sync::{mpsc, watch};

use super::jsonrpc::{self, Line, Message};
use super::relay::Relay;
use super::stdio::{self, Read, Spawn, turned_on};

/// Lines queued for the server's stdin.
const TO_SERVER: usize = 256;
/// Lines queued for one session beyond its requests in flight (notifications are dropped past
/// this; responses never are).
const TO_SESSION: usize = 256;

/// A handle on the shared process of one server; the process runs until `stop` turns true.
pub struct SharedServer {
    attach: mpsc::UnboundedSender<Attach>,
    lines: mpsc::Sender<FromSession>,
    next_session: AtomicU64,
}

struct Attach {
    sid: u64,
    deliver: mpsc::Sender<Deliver>,
}

/// What a session's relay is told, in order, by its delivery task.
enum Deliver {
    Line(Vec<u8>),
    /// Request `id` of this session failed with `code`.
    Fail(Value, i64, String),
    Down(String),
    Up,
}

enum FromSession {
    Line(u64, Vec<u8>),
    Detach(u64),
}

impl SharedServer {
    pub fn start(
        name: String,
        spawn: Spawn,
        backoff: Duration,
        max_line_bytes: usize,
        stop: watch::Receiver<bool>,
    ) -> SharedServer {
        let (attach, attach_rx) = mpsc::unbounded_channel();
        let (lines, lines_rx) = mpsc::channel(TO_SERVER);
        let mux = Mux::new(name, max_line_bytes);
        tokio::spawn(mux.run(spawn, backoff, attach_rx, lines_rx, stop));
        SharedServer {
            attach,
            lines,
            next_session: AtomicU64::new(1),
        }
    }

    /// Serve `relay` (one MCP session) from the shared process until `quit` turns true or the
    /// relay is gone. `tried` turns true once the relay was told whether the server is up.
    pub fn attach(
        &self,
        relay: Arc<Relay>,
        mut to_server: mpsc::Receiver<(u64, Vec<u8>)>,
        mut quit: watch::Receiver<bool>,
        tried: watch::Sender<bool>,
    ) {
        let sid = self.next_session.fetch_add(1, Ordering::Relaxed);
        let (deliver, deliveries) = mpsc::channel(relay.max_pending() + TO_SESSION);
        let generation = Arc::new(AtomicU64::new(0));
        tokio::spawn(deliver_to(relay, deliveries, generation.clone(), tried));
        if self.attach.send(Attach { sid, deliver }).is_err() {
            return; // stopped: the relay stays down
        }
        let to_mux = self.lines.clone();
        tokio::spawn(async move {
            loop {
                tokio::select! {
                    msg = to_server.recv() => match msg {
                        Some((g, line)) if g == generation.load(Ordering::Acquire) => {
                            if to_mux.send(FromSession::Line(sid, line)).await.is_err() {
                                return;
                            }
                        }
                        Some(_) => {} // meant for an earlier process
                        None => break,
                    },
                    () = turned_on(&mut quit) => break,
                }
            }
            let _ = to_mux.send(FromSession::Detach(sid)).await;
        });
    }
}

/// Tell one relay what the mux routed to it, in order.
async fn deliver_to(
    relay: Arc<Relay>,
    mut rx: mpsc::Receiver<Deliver>,
    generation: Arc<AtomicU64>,
    tried: watch::Sender<bool>,
) {
    while let Some(d) = rx.recv().await {
        match d {
            Deliver::Line(line) => relay.from_server(line).await,
            Deliver::Fail(id, code, why) => relay.fail_request(&id, code, &why).await,
            Deliver::Down(why) => {
                relay.server_down(&why).await;
                let _ = tried.send(true);
            }
            Deliver::Up => {
                let (g, replay) = relay.server_up();
                generation.store(g, Ordering::Release);
                // The relay would replay its handshake to a process of its own; the mux
                // replays the shared one, so the relay's replayed `initialize` is answered here.
                for line in replay {
                    if let Ok(v) = serde_json::from_slice::<Value>(&line)
                        && v.get("method").is_some()
                        && let Some(id) = v.get("id")
                    {
                        relay.from_server(jsonrpc::result(id, json!({}))).await;
                    }
                }
                relay.resume();
                let _ = tried.send(true);
            }
        }
    }
}

/// A client request in flight at the server, by the mux's id.
struct Req {
    sid: u64,
    /// The session's own id for it.
    id: Value,
    /// The mux's progress token for it, if the request asked for progress.
    progress: Option<String>,
    kind: ReqKind,
}

#[derive(PartialEq, Eq)]
enum ReqKind {
    Client,
    /// The first session's `initialize`: its result answers every session's.
    Init,
    /// The handshake replayed to a restarted process.
    Replay,
}

enum Init {
    None,
    /// Forwarded; these sessions wait for its result.
    Asked {
        request: Value,
        waiting: Vec<(u64, Value)>,
    },
    Known {
        request: Value,
        result: Value,
        initialized: Option<Vec<u8>>,
    },
}

struct Mux {
    name: String,
    max_line_bytes: usize,
    sessions: HashMap<u64, mpsc::Sender<Deliver>>,
    requests: HashMap<String, Req>,
    /// The mux's progress token → (session, the session's token).
    progress: HashMap<String, (u64, Value)>,
    /// Server requests forwarded to a session, by the server's id.
    served: HashMap<String, u64>,
    /// Resource URI → sessions subscribed to it.
    subscriptions: HashMap<String, HashSet<u64>>,
    init: Init,
    /// The current process got `notifications/initialized`.
    initialized_sent: bool,
    next: u64,
    /// The current process's stdin (its writer task), while it runs.
    stdin: Option<mpsc::Sender<Vec<u8>>>,
}

/// The running process: the child, and what its reader task read.
struct Process {
    server: stdio::Server,
    out: mpsc::Receiver<Read>,
    started: Instant,
}

impl Mux {
    fn new(name: String, max_line_bytes: usize) -> Mux {
        Mux {
            name,
            max_line_bytes,
            sessions: HashMap::new(),
            requests: HashMap::new(),
            progress: HashMap::new(),
            served: HashMap::new(),
            subscriptions: HashMap::new(),
            init: Init::None,
            initialized_sent: false,
            next: 0,
            stdin: None,
        }
    }

    async fn run(
        mut self,
        spawn: Spawn,
        backoff: Duration,
        mut attach: mpsc::UnboundedReceiver<Attach>,
        mut lines: mpsc::Receiver<FromSession>,
        mut stop: watch::Receiver<bool>,
    ) {
        if *stop.borrow() {
            return; // opened during shutdown: nothing is started
        }
        let mut delay = backoff;
        let mut restart_at = None;
        let mut process = match self.start(&spawn).await {
            Ok(p) => Some(p),
            Err(e) => {
                tracing::error!(mcp.server = %self.name, command = ?spawn.argv, error = %e, "cannot start the shared tool server");
                restart_at = Some(tokio::time::Instant::now() + delay);
                delay = (delay * 2).min(stdio::MAX_BACKOFF);
                None
            }
        };
        loop {
            let room = self.stdin.as_ref().is_none_or(|s| s.capacity() > 0);
            tokio::select! {
                Some(a) = attach.recv() => {
                    let now = if process.is_some() {
                        Deliver::Up
                    } else {
                        Deliver::Down("is not running (restarting)".into())
                    };
                    send(&a.deliver, now);
                    self.sessions.insert(a.sid, a.deliver);
                }
                Some(msg) = lines.recv(), if room => match msg {
                    FromSession::Line(sid, line) => self.session_line(sid, line),
                    FromSession::Detach(sid) => self.detach(sid),
                },
                event = next_event(&mut process) => match event {
                    Event::Read(Read::Line(l)) if l.iter().all(u8::is_ascii_whitespace) => {}
                    Event::Read(Read::Line(l)) => self.server_line(l),
                    Event::Read(Read::TooLong { len, head, tail }) => self.oversize(len, &head, &tail),
                    // Stdout closed: the process is ending; its exit says how.
                    Event::Read(Read::Eof) => {}
                    Event::Exit(status) => {
                        let Some(mut p) = process.take() else { continue };
                        // Its last lines are relayed before its requests fail.
                        let drain = tokio::time::sleep(stdio::DRAIN);
                        tokio::pin!(drain);
                        loop {
                            tokio::select! {
                                r = p.out.recv() => match r {
                                    Some(Read::Line(l)) => self.server_line(l),
                                    Some(Read::TooLong { len, head, tail }) => self.oversize(len, &head, &tail),
                                    Some(Read::Eof) | None => break,
                                },
                                () = &mut drain => break,
                            }
                        }
                        let why = match &status {
                            Ok(s) => format!("exited ({s}) while handling this request"),
                            Err(e) => format!("failed: {e}"),
                        };
                        tracing::warn!(mcp.server = %self.name, why = %why, "shared tool server exited; restarting");
                        self.down(&why);
                        if p.started.elapsed() >= stdio::STABLE {
                            delay = backoff;
                        }
                        restart_at = Some(tokio::time::Instant::now() + delay);
                        delay = (delay * 2).min(stdio::MAX_BACKOFF);
                    }
                },
                () = sleep_until(restart_at) => {
                    restart_at = None;
                    match self.start(&spawn).await {
                        Ok(p) => process = Some(p),
                        Err(e) => {
                            tracing::error!(mcp.server = %self.name, command = ?spawn.argv, error = %e, "cannot start the shared tool server");
                            self.down(&format!("cannot be started: {e}"));
                            restart_at = Some(tokio::time::Instant::now() + delay);
                            delay = (delay * 2).min(stdio::MAX_BACKOFF);
                        }
                    }
                }
                () = turned_on(&mut stop) => break,
            }
        }
        // Stopped: close stdin, give it a moment, stop it.
        self.stdin = None;
        if let Some(mut p) = process {
            p.server.stop().await;
        }
        self.down("stopped");
    }

    async fn start(&mut self, spawn: &Spawn) -> std::io::Result<Process> {
        let mut server = stdio::start(spawn).await?;
        let child = &mut server.child;
        let (Some(stdin), Some(stdout)) = (child.stdin.take(), child.stdout.take()) else {
            return Err(std::io::Error::other("tool server pipes missing"));
        };
        let (tx, rx) = mpsc::channel(TO_SERVER);
        tokio::spawn(stdio::write_lines(stdin, rx));
        self.stdin = Some(tx);
        let (out_tx, out) = mpsc::channel(TO_SERVER);
        let max = self.max_line_bytes;
        tokio::spawn(async move {
            let mut r = BufReader::new(stdout);
            loop {
                let read = stdio::read_line(&mut r, max).await;
                let end = !matches!(read, Ok(Read::Line(_) | Read::TooLong { .. }));
                if out_tx.send(read.unwrap_or(Read::Eof)).await.is_err() || end {
                    break;
                }
            }
        });
        self.initialized_sent = false;
        // A restarted process gets the handshake the first one got.
        if let Init::Known {
            request,
            initialized,
            ..
        } = &self.init
        {
            let mut request = request.clone();
            let initialized = initialized.clone();
            let id = self.issue(0, Value::Null, None, ReqKind::Replay);
            request["id"] = id;
            self.write(jsonrpc::to_line(&request));
            if let Some(n) = initialized {
                self.write(n);
                self.initialized_sent = true;
            }
        }
        for tx in self.sessions.values() {
            let _ = tx.try_send(Deliver::Up);
        }
        tracing::info!(mcp.server = %self.name, pid = child.id(), sessions = self.sessions.len(), "shared tool server started");
        Ok(Process {
            server,
            out,
            started: Instant::now(),
        })
    }

    /// The process is gone: every session's requests in flight fail, nothing is routed.
    fn down(&mut self, why: &str) {
        self.stdin = None;
        self.requests.clear();
        self.progress.clear();
        self.served.clear();
        if let Init::Asked { .. } = self.init {
            self.init = Init::None;
        }
        for tx in self.sessions.values() {
            send(tx, Deliver::Down(why.to_string()));
        }
    }

    fn detach(&mut self, sid: u64) {
        self.sessions.remove(&sid);
        // The server stops work nobody waits for, and gets an answer to what it asked.
        let gone: Vec<String> = self
            .requests
            .iter()
            .filter(|(_, r)| r.sid == sid && r.kind == ReqKind::Client)
            .map(|(k, _)| k.clone())
            .collect();
        for key in gone {
            if self.take(&key).is_some() {
                let id: Value = serde_json::from_str(&key).unwrap_or(Value::Null);
                self.write(jsonrpc::to_line(&json!({
                    "jsonrpc": "2.0",
                    "method": "notifications/cancelled",
                    "params": {"requestId": id, "reason": "the MCP session was closed"},
                })));
            }
        }
        let asked: Vec<String> = self
            .served
            .iter()
            .filter(|(_, s)| **s == sid)
            .map(|(k, _)| k.clone())
            .collect();
        for key in asked {
            self.served.remove(&key);
            let id: Value = serde_json::from_str(&key).unwrap_or(Value::Null);
            let msg = "the MCP session this request went to was closed";
            self.write(jsonrpc::error(&id, jsonrpc::SERVER_UNAVAILABLE, msg, None));
        }
        for subs in self.subscriptions.values_mut() {
            subs.remove(&sid);
        }
        self.subscriptions.retain(|_, s| !s.is_empty());
        if let Init::Asked { waiting, .. } = &mut self.init {
            waiting.retain(|(s, _)| *s != sid);
        }
    }

    // === session → server ===

    fn session_line(&mut self, sid: u64, line: Vec<u8>) {
        // The relay sends only what it parsed strictly (or serialized itself).
        let Ok(mut v) = serde_json::from_slice::<Value>(&line) else {
            return;
        };
        let (id, method) = match jsonrpc::classify(&v) {
            Ok(Message::Request { id, method, .. }) => (id.clone(), method.to_string()),
            Ok(Message::Notification { method }) => {
                let method = method.to_string();
                return self.session_notification(sid, v, line, &method);
            }
            Ok(Message::Response { id }) => {
                let key = jsonrpc::id_key(id);
                if self.served.get(&key) == Some(&sid) {
                    self.served.remove(&key);
                    self.write(line);
                } else {
                    tracing::warn!(mcp.server = %self.name, id = %id, "dropped a session's response to no server request sent to it");
                }
                return;
            }
            Err(_) => return,
        };
        if self.stdin.is_none() {
            let why = "is not running (restarting)".to_string();
            return send_to(
                &self.sessions,
                sid,
                Deliver::Fail(id, jsonrpc::SERVER_UNAVAILABLE, why),
            );
        }
        if method == "initialize" {
            return self.initialize(sid, id, v);
        }
        let token = v.pointer("/params/_meta/progressToken").cloned();
        let progress = token.map(|t| {
            self.next += 1;
            let mine = Value::from(format!("pc-progress-{}", self.next));
            let key = jsonrpc::id_key(&mine);
            self.progress.insert(key.clone(), (sid, t));
            v["params"]["_meta"]["progressToken"] = mine;
            key
        });
        match (
            method.as_str(),
            v.pointer("/params/uri").and_then(Value::as_str),
        ) {
            ("resources/subscribe", Some(uri)) => {
                self.subscriptions
                    .entry(uri.to_string())
                    .or_default()
                    .insert(sid);
            }
            ("resources/unsubscribe", Some(uri)) => {
                if let Some(s) = self.subscriptions.get_mut(uri) {
                    s.remove(&sid);
                }
            }
            _ => {}
        }
        v["id"] = self.issue(sid, id, progress, ReqKind::Client);
        self.write(jsonrpc::to_line(&v));
    }

    fn initialize(&mut self, sid: u64, id: Value, mut v: Value) {
        match &mut self.init {
            Init::Known { result, .. } => {
                let line = jsonrpc::result(&id, result.clone());
                send_to(&self.sessions, sid, Deliver::Line(line));
            }
            Init::Asked { waiting, .. } => waiting.push((sid, id)),
            Init::None => {
                let request = v.clone();
                v["id"] = self.issue(sid, id.clone(), None, ReqKind::Init);
                self.init = Init::Asked {
                    request,
                    waiting: vec![(sid, id)],
                };
                self.write(jsonrpc::to_line(&v));
            }
        }
    }

    fn session_notification(&mut self, sid: u64, mut v: Value, line: Vec<u8>, method: &str) {
        match method {
            // Once per process: the handshake is the server's, not each session's.
            "notifications/initialized" => {
                if !self.initialized_sent && self.stdin.is_some() {
                    self.initialized_sent = true;
                    if let Init::Known { initialized, .. } = &mut self.init {
                        *initialized = Some(line.clone());
                    }
                    self.write(line);
                }
            }
            "notifications/cancelled" => {
                let Some(theirs) = v.pointer("/params/requestId").cloned() else {
                    return;
                };
                let key = self
                    .requests
                    .iter()
                    .find(|(_, r)| r.sid == sid && r.kind == ReqKind::Client && r.id == theirs)
                    .map(|(k, _)| k.clone());
                let Some(key) = key else { return };
                self.take(&key);
                v["params"]["requestId"] = serde_json::from_str(&key).unwrap_or(Value::Null);
                self.write(jsonrpc::to_line(&v));
            }
            _ => self.write(line),
        }
    }

    /// A fresh id of the mux for a request.
    fn issue(&mut self, sid: u64, id: Value, progress: Option<String>, kind: ReqKind) -> Value {
        self.next += 1;
        let mine = Value::from(format!("pc-{}", self.next));
        self.requests.insert(
            jsonrpc::id_key(&mine),
            Req {
                sid,
                id,
                progress,
                kind,
            },
        );
        mine
    }

    /// Request `key` is no longer in flight (nor its progress token).
    fn take(&mut self, key: &str) -> Option<Req> {
        let r = self.requests.remove(key)?;
        if let Some(t) = &r.progress {
            self.progress.remove(t);
        }
        Some(r)
    }

    fn write(&self, line: Vec<u8>) {
        // Never full: session lines are taken only while there is room, and the mux's own
        // lines are a handful per session.
        if let Some(tx) = &self.stdin
            && tx.try_send(line).is_err()
        {
            tracing::warn!(mcp.server = %self.name, "the shared tool server is not reading: a line was dropped");
        }
    }

    // === server → sessions ===

    fn server_line(&mut self, line: Vec<u8>) {
        match jsonrpc::parse_line(&line, self.max_line_bytes) {
            Ok(Line::One(v)) => self.server_message(v, line),
            Ok(Line::Batch(items)) => {
                for v in items {
                    let raw = jsonrpc::to_line(&v);
                    self.server_message(v, raw);
                }
            }
            Err(e) => {
                tracing::warn!(mcp.server = %self.name, error = %e, bytes = line.len(), "dropped a shared server message that is not strict JSON");
                let mut ids = jsonrpc::salvage_ids(&line);
                if ids.is_empty() {
                    let n = line.len().min(256);
                    ids.extend(jsonrpc::sniff_id(&line[..n], &line[line.len() - n..]));
                }
                for id in ids {
                    self.fail(&id, format!("sent an invalid response: {e}"));
                }
            }
        }
    }

    fn oversize(&mut self, len: usize, head: &[u8], tail: &[u8]) {
        tracing::warn!(mcp.server = %self.name, bytes = len, limit = self.max_line_bytes, "dropped an oversize line of the shared server");
        if let Some(id) = jsonrpc::sniff_id(head, tail) {
            let why = format!(
                "answered with {len} bytes, over the limit of {} (mcp.max_line_bytes)",
                self.max_line_bytes
            );
            self.fail(&id, why);
        }
    }

    /// The request the mux sent as `id` fails in its session.
    fn fail(&mut self, id: &Value, why: String) {
        let Some(r) = self.take(&jsonrpc::id_key(id)) else {
            return;
        };
        if r.kind == ReqKind::Init
            && let Init::Asked { waiting, .. } = std::mem::replace(&mut self.init, Init::None)
        {
            for (sid, id) in waiting {
                send_to(
                    &self.sessions,
                    sid,
                    Deliver::Fail(id, jsonrpc::DENIED, why.clone()),
                );
            }
            return;
        }
        send_to(
            &self.sessions,
            r.sid,
            Deliver::Fail(r.id, jsonrpc::DENIED, why),
        );
    }

    fn server_message(&mut self, mut v: Value, raw: Vec<u8>) {
        match jsonrpc::classify(&v) {
            Err(why) => {
                tracing::warn!(mcp.server = %self.name, why, "dropped an invalid message of the shared server");
            }
            Ok(Message::Response { id }) => {
                let Some(r) = self.take(&jsonrpc::id_key(id)) else {
                    tracing::warn!(mcp.server = %self.name, id = %id, "dropped a shared server response to no request in flight");
                    return;
                };
                match r.kind {
                    ReqKind::Client => {
                        v["id"] = r.id;
                        send_to(&self.sessions, r.sid, Deliver::Line(jsonrpc::to_line(&v)));
                    }
                    ReqKind::Init => self.initialized(v),
                    ReqKind::Replay => {
                        if let Some(e) = v.get("error") {
                            tracing::warn!(mcp.server = %self.name, error = %e, "the restarted shared server refused the replayed initialize");
                        }
                    }
                }
            }
            Ok(Message::Request { id, method, .. }) => {
                let id = id.clone();
                if method == "ping" {
                    self.write(jsonrpc::result(&id, json!({})));
                    return;
                }
                let Some(sid) = self.attributed() else {
                    let msg = format!(
                        "{method}: portcullis shares this server among {} MCP sessions and cannot tell which one this request is for",
                        self.sessions.len()
                    );
                    tracing::warn!(mcp.server = %self.name, method, "refused a shared server request that no one session can be said to own");
                    self.write(jsonrpc::error(&id, jsonrpc::DENIED, &msg, None));
                    return;
                };
                self.served.insert(jsonrpc::id_key(&id), sid);
                send_to(&self.sessions, sid, Deliver::Line(raw));
            }
            Ok(Message::Notification { method }) => match method {
                "notifications/progress" => {
                    let key = v
                        .pointer("/params/progressToken")
                        .map(jsonrpc::id_key)
                        .unwrap_or_default();
                    if let Some((sid, theirs)) = self.progress.get(&key).cloned() {
                        v["params"]["progressToken"] = theirs;
                        send_to(&self.sessions, sid, Deliver::Line(jsonrpc::to_line(&v)));
                    }
                }
                "notifications/cancelled" => {
                    let key = v
                        .pointer("/params/requestId")
                        .map(jsonrpc::id_key)
                        .unwrap_or_default();
                    if let Some(sid) = self.served.remove(&key) {
                        send_to(&self.sessions, sid, Deliver::Line(raw));
                    }
                }
                "notifications/resources/updated" => {
                    let uri = v.pointer("/params/uri").and_then(Value::as_str);
                    let subs = uri.and_then(|u| self.subscriptions.get(u));
                    for sid in subs.into_iter().flatten() {
                        send_to(&self.sessions, *sid, Deliver::Line(raw.clone()));
                    }
                }
                _ => {
                    for tx in self.sessions.values() {
                        send(tx, Deliver::Line(raw.clone()));
                    }
                }
            },
        }
    }

    /// The first `initialize` was answered: it answers every session that waits for it.
    fn initialized(&mut self, v: Value) {
        let Init::Asked { request, waiting } = std::mem::replace(&mut self.init, Init::None) else {
            return;
        };
        let result = v.get("result").cloned();
        for (sid, id) in &waiting {
            let mut answer = v.clone();
            answer["id"] = id.clone();
            send_to(
                &self.sessions,
                *sid,
                Deliver::Line(jsonrpc::to_line(&answer)),
            );
        }
        // A refused initialize is not cached: the next session asks again.
        if let Some(result) = result {
            self.init = Init::Known {
                request,
                result,
                initialized: None,
            };
        }
    }

    /// The one session a server request can be for: the only one with requests in flight, or
    /// the only one there is.
    fn attributed(&self) -> Option<u64> {
        let busy: HashSet<u64> = self
            .requests
            .values()
            .filter(|r| r.kind == ReqKind::Client)
            .map(|r| r.sid)
            .collect();
        match (busy.len(), self.sessions.len()) {
            (1, _) => busy.into_iter().next(),
            (0, 1) => self.sessions.keys().next().copied(),
            _ => None,
        }
    }
}

/// Queue `d` for a session without waiting: a notification that does not fit is dropped; a
/// response or a failure (one per request in flight, which the queue has room for) is sent
/// from a task of its own if the queue is momentarily full.
fn send(tx: &mpsc::Sender<Deliver>, d: Deliver) {
    let d = match tx.try_send(d) {
        Ok(()) => return,
        Err(mpsc::error::TrySendError::Closed(_)) => return,
        Err(mpsc::error::TrySendError::Full(d)) => d,
    };
    if let Deliver::Line(line) = &d
        && !is_response(line)
    {
        tracing::warn!(
            "an MCP session is not keeping up: a notification of the shared server was dropped"
        );
        return;
    }
    let tx = tx.clone();
    tokio::spawn(async move {
        let _ = tx.send(d).await;
    });
}

fn send_to(sessions: &HashMap<u64, mpsc::Sender<Deliver>>, sid: u64, d: Deliver) {
    if let Some(tx) = sessions.get(&sid) {
        send(tx, d);
    }
}

fn is_response(line: &[u8]) -> bool {
    #[derive(serde::Deserialize)]
    struct Probe {
        method: Option<serde::de::IgnoredAny>,
    }
    serde_json::from_slice::<Probe>(line).is_ok_and(|p| p.method.is_none())
}

enum Event {
    Read(Read),
    Exit(std::io::Result<std::process::ExitStatus>),
}

/// The next line of the running process, or its exit.
async fn next_event(process: &mut Option<Process>) -> Event {
    let Some(p) = process else {
        return std::future::pending().await;
    };
    tokio::select! {
        Some(r) = p.out.recv() => Event::Read(r),
        status = p.server.child.wait() => Event::Exit(status),
    }
}

async fn sleep_until(at: Option<tokio::time::Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A mux with a running process's stdin (`server`) and sessions 1 and 2.
    fn mux() -> (Mux, mpsc::Receiver<Vec<u8>>, [mpsc::Receiver<Deliver>; 2]) {
        let (stdin, server) = mpsc::channel(64);
        let mut mux = Mux::new("t".into(), 1 << 20);
        mux.stdin = Some(stdin);
        let (one, one_rx) = mpsc::channel(64);
        let (two, two_rx) = mpsc::channel(64);
        mux.sessions.insert(1, one);
        mux.sessions.insert(2, two);
        (mux, server, [one_rx, two_rx])
    }

    fn line(v: Value) -> Vec<u8> {
        jsonrpc::to_line(&v)
    }

    fn written(rx: &mut mpsc::Receiver<Vec<u8>>) -> Vec<Value> {
        std::iter::from_fn(|| rx.try_recv().ok())
            .map(|l| serde_json::from_slice(&l).unwrap())
            .collect()
    }

    fn lines(rx: &mut mpsc::Receiver<Deliver>) -> Vec<Value> {
        std::iter::from_fn(|| rx.try_recv().ok())
            .map(|d| match d {
                Deliver::Line(l) => serde_json::from_slice(&l).unwrap(),
                Deliver::Fail(id, code, why) => json!({"fail": id, "code": code, "why": why}),
                Deliver::Down(why) => json!({"down": why}),
                Deliver::Up => json!("up"),
            })
            .collect()
    }

    fn call(id: i64, token: Option<i64>) -> Vec<u8> {
        let mut v =
            json!({"jsonrpc": "2.0", "id": id, "method": "tools/call", "params": {"name": "echo"}});
        if let Some(t) = token {
            v["params"]["_meta"] = json!({"progressToken": t});
        }
        line(v)
    }

    #[test]
    fn the_same_id_from_two_sessions_is_two_requests_and_each_answer_goes_home() {
        let (mut mux, mut server, [mut one, mut two]) = mux();
        mux.session_line(1, call(7, Some(7)));
        mux.session_line(2, call(7, Some(7)));
        let sent = written(&mut server);
        assert_eq!(sent.len(), 2);
        assert_ne!(sent[0]["id"], sent[1]["id"]);
        assert_ne!(
            sent[0]["params"]["_meta"]["progressToken"],
            sent[1]["params"]["_meta"]["progressToken"]
        );
        // Progress and the answer of the second session's request reach only the second.
        let token = sent[1]["params"]["_meta"]["progressToken"].clone();
        mux.server_line(line(json!({"jsonrpc": "2.0", "method": "notifications/progress", "params": {"progressToken": token, "progress": 1}})));
        mux.server_line(line(
            json!({"jsonrpc": "2.0", "id": sent[1]["id"], "result": {"n": 2}}),
        ));
        assert!(lines(&mut one).is_empty());
        let got = lines(&mut two);
        assert_eq!(got[0]["params"]["progressToken"], 7);
        assert_eq!(
            got[1],
            json!({"jsonrpc": "2.0", "id": 7, "result": {"n": 2}})
        );
        // An answer it already had is no longer routed; a progress token past its answer neither.
        mux.server_line(line(
            json!({"jsonrpc": "2.0", "id": sent[1]["id"], "result": {}}),
        ));
        mux.server_line(line(json!({"jsonrpc": "2.0", "method": "notifications/progress", "params": {"progressToken": token, "progress": 2}})));
        assert!(lines(&mut two).is_empty());
        mux.server_line(line(
            json!({"jsonrpc": "2.0", "id": sent[0]["id"], "result": {"n": 1}}),
        ));
        assert_eq!(lines(&mut one)[0]["result"]["n"], 1);
    }

    #[test]
    fn a_server_request_goes_to_the_one_busy_session_or_is_refused() {
        let (mut mux, mut server, [mut one, mut two]) = mux();
        let sample = |id: &str| {
            line(
                json!({"jsonrpc": "2.0", "id": id, "method": "sampling/createMessage", "params": {}}),
            )
        };
        mux.session_line(1, call(1, None));
        written(&mut server);
        mux.server_line(sample("s1"));
        assert_eq!(lines(&mut one)[0]["id"], "s1");
        // Only the session it went to may answer it.
        let answer = line(json!({"jsonrpc": "2.0", "id": "s1", "result": {}}));
        mux.session_line(2, answer.clone());
        assert!(written(&mut server).is_empty());
        mux.session_line(1, answer);
        assert_eq!(written(&mut server)[0]["id"], "s1");
        // Both busy: whose it is cannot be told, so it is refused and reaches nobody.
        mux.session_line(2, call(1, None));
        written(&mut server);
        mux.server_line(sample("s2"));
        let refused = written(&mut server);
        assert_eq!(refused[0]["id"], "s2");
        assert_eq!(refused[0]["error"]["code"], jsonrpc::DENIED);
        assert!(lines(&mut one).is_empty() && lines(&mut two).is_empty());
        // `ping` is answered by the mux.
        mux.server_line(line(json!({"jsonrpc": "2.0", "id": "p", "method": "ping"})));
        assert_eq!(
            written(&mut server),
            [json!({"jsonrpc": "2.0", "id": "p", "result": {}})]
        );
    }

    #[test]
    fn the_server_is_initialized_once_and_later_sessions_get_the_cached_answer() {
        let (mut mux, mut server, [mut one, mut two]) = mux();
        let init = |id: i64| {
            line(
                json!({"jsonrpc": "2.0", "id": id, "method": "initialize", "params": {"clientInfo": {"name": id.to_string()}}}),
            )
        };
        let initialized = line(json!({"jsonrpc": "2.0", "method": "notifications/initialized"}));
        mux.session_line(1, init(0));
        mux.session_line(2, init(5)); // waits for the first one's answer
        let sent = written(&mut server);
        assert_eq!(sent.len(), 1);
        mux.server_line(line(
            json!({"jsonrpc": "2.0", "id": sent[0]["id"], "result": {"serverInfo": {"name": "s"}}}),
        ));
        assert_eq!(lines(&mut one)[0]["id"], 0);
        assert_eq!(lines(&mut two)[0]["id"], 5);
        mux.session_line(1, initialized.clone());
        mux.session_line(2, initialized);
        let sent = written(&mut server);
        assert_eq!(
            sent,
            [json!({"jsonrpc": "2.0", "method": "notifications/initialized"})]
        );
        mux.session_line(2, init(9));
        assert!(written(&mut server).is_empty());
        assert_eq!(lines(&mut two)[0]["result"]["serverInfo"]["name"], "s");
    }

    #[test]
    fn a_closed_session_cancels_its_requests_and_updates_go_to_subscribers() {
        let (mut mux, mut server, [mut one, mut two]) = mux();
        let sub = line(
            json!({"jsonrpc": "2.0", "id": 3, "method": "resources/subscribe", "params": {"uri": "demo://a"}}),
        );
        mux.session_line(1, sub);
        mux.session_line(1, call(4, Some(4)));
        let sent = written(&mut server);
        mux.server_line(line(
            json!({"jsonrpc": "2.0", "id": sent[0]["id"], "result": {}}),
        ));
        lines(&mut one);
        let updated = line(
            json!({"jsonrpc": "2.0", "method": "notifications/resources/updated", "params": {"uri": "demo://a"}}),
        );
        mux.server_line(updated.clone());
        assert_eq!(lines(&mut one).len(), 1);
        assert!(lines(&mut two).is_empty());
        mux.detach(1);
        let cancelled = written(&mut server);
        assert_eq!(cancelled[0]["method"], "notifications/cancelled");
        assert_eq!(cancelled[0]["params"]["requestId"], sent[1]["id"]);
        // Nothing of it is routed any more; other notifications go to everyone left.
        mux.server_line(updated);
        mux.server_line(line(
            json!({"jsonrpc": "2.0", "method": "notifications/tools/list_changed"}),
        ));
        assert_eq!(lines(&mut two).len(), 1);
    }

    #[test]
    fn a_crash_fails_everything_in_flight_and_a_line_meanwhile_fails_at_once() {
        let (mut mux, mut server, [mut one, _two]) = mux();
        mux.session_line(1, call(1, None));
        written(&mut server);
        mux.down("exited (code 3) while handling this request");
        assert!(mux.requests.is_empty());
        assert_eq!(
            lines(&mut one)[0]["down"],
            "exited (code 3) while handling this request"
        );
        mux.session_line(1, call(2, None));
        let got = lines(&mut one);
        assert_eq!(got[0]["fail"], 2);
        assert_eq!(got[0]["code"], jsonrpc::SERVER_UNAVAILABLE);
    }
}
