//! MCP sessions of the Streamable HTTP front end (`/mcp/{server}`): each is bound to the agent
//! that opened it, has its own relay (and, for a command, its own server process unless the
//! server is shared), and routes what the relay emits to the HTTP exchange waiting for it:
//! * a response goes to the POST that carried its request, and so does its progress;
//! * what the server sends unasked goes to the session's GET stream, else to an open POST
//!   stream, else waits in a bounded backlog for the next one.
//!
//! A command with `process = "shared"` runs once for all sessions ([`SharedServer`]).

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use serde_json::Value;
use tokio::sync::{mpsc, watch};

use super::relay::{Relay, RelayConfig};
use super::shared::SharedServer;
use super::{SessionEgress, jsonrpc, pins::Pins, stdio, upstream};
use crate::config::{Config, McpConfig, McpServer, Process};
use crate::gate::Gate;
use crate::gate::identity::Caller;
use crate::sync::lock;

/// Messages the server sent unasked while no stream was open, kept for the next one.
const MAX_BACKLOG: usize = 256;
/// Messages a slow HTTP client may have queued on one stream.
const STREAM_CAPACITY: usize = 64;

/// Why a session could not be opened.
#[derive(Debug, thiserror::Error)]
pub enum OpenError {
    #[error("{0} MCP sessions are open (mcp.max_sessions)")]
    Full(usize),
    #[error("server {0:?} cannot be reached: {1}")]
    Upstream(String, String),
}

/// Every open HTTP MCP session.
pub struct Sessions {
    gate: Arc<Gate>,
    cfg: McpConfig,
    max_body_bytes: usize,
    pins: Arc<Pins>,
    /// How each stdio server is started, by name.
    spawns: HashMap<String, stdio::Spawn>,
    /// The network of sandboxed per-session servers; none: they have no network.
    egress: Option<Arc<dyn SessionEgress>>,
    map: Mutex<HashMap<String, Arc<Session>>>,
    /// The process of each `process = "shared"` server, started with its first session.
    shared: Mutex<HashMap<String, Arc<SharedServer>>>,
    /// Stops the shared processes.
    stop: watch::Sender<bool>,
}

/// One MCP session.
pub struct Session {
    pub id: String,
    pub agent: String,
    pub server: String,
    relay: Arc<Relay>,
    route: Arc<Route>,
    quit: watch::Sender<bool>,
    /// True once the server's first start was tried: requests wait for it, not fail.
    ready: watch::Receiver<bool>,
    last_used: Mutex<Instant>,
}

/// One message for an HTTP exchange, with what the router learnt of it.
pub struct Out {
    pub line: Vec<u8>,
    /// A response (to a request of this client), not something the server sent unasked.
    pub response: bool,
}

#[derive(Default)]
struct Route {
    /// POST streams waiting for the response to a request id.
    waiters: Mutex<HashMap<String, mpsc::Sender<Out>>>,
    /// Progress token → (request id, the stream of that request), while it waits.
    progress: Mutex<HashMap<String, (String, mpsc::Sender<Out>)>>,
    stream: Mutex<Option<mpsc::Sender<Out>>>,
    backlog: Mutex<VecDeque<Out>>,
}

impl Sessions {
    /// The sessions of `config`'s servers. The error says why one of them cannot be started
    /// as configured (a sandbox that cannot be had here).
    pub fn new(
        gate: Arc<Gate>,
        config: &Config,
        pins: Arc<Pins>,
        egress: Option<Arc<dyn SessionEgress>>,
    ) -> Result<Sessions, String> {
        let mut spawns = HashMap::new();
        for s in config.mcp.servers.iter().filter(|s| s.url.is_none()) {
            spawns.insert(s.name.clone(), stdio::Spawn::new(config, s)?);
        }
        Ok(Sessions {
            gate,
            cfg: config.mcp.clone(),
            max_body_bytes: config.server.max_body_bytes,
            pins,
            spawns,
            egress,
            map: Mutex::new(HashMap::new()),
            shared: Mutex::new(HashMap::new()),
            stop: watch::channel(false).0,
        })
    }

    pub fn config(&self) -> &McpConfig {
        &self.cfg
    }

    /// Open a session of `caller` on `server`: its relay, router and server transport.
    pub fn open(&self, caller: &Caller, server: &McpServer) -> Result<Arc<Session>, OpenError> {
        self.sweep();
        {
            let map = lock(&self.map);
            if map.len() >= self.cfg.max_sessions {
                return Err(OpenError::Full(map.len()));
            }
        }
        // 160 random bits: a session id is a bearer of the session (with the agent's key).
        let id = format!("{}{}", ulid::Ulid::new(), ulid::Ulid::new());
        let mut map_cfg = server
            .preset
            .as_deref()
            .and_then(crate::config::preset)
            .unwrap_or_default();
        map_cfg.extend(server.map.iter().cloned());
        let (client_tx, client_rx) = mpsc::channel(256);
        let (server_tx, server_rx) = mpsc::channel(256);
        let relay = Arc::new(Relay::new(
            self.gate.clone(),
            caller.clone(),
            id.clone(),
            RelayConfig {
                server: server.name.clone(),
                map: map_cfg,
                detect_preset: server.preset.is_none(),
                max_line_bytes: self.max_body_bytes,
                max_pending: self.cfg.max_pending,
            },
            self.pins.clone(),
            client_tx,
            server_tx,
        ));
        let (quit, quit_rx) = watch::channel(false);
        let (tried, ready) = watch::channel(false);
        match &server.url {
            Some(url) => {
                let up = upstream::Upstream::new(url, &server.headers, self.max_body_bytes)
                    .map_err(|e| OpenError::Upstream(server.name.clone(), e))?;
                tokio::spawn(upstream::run(relay.clone(), up, server_rx, quit_rx));
                drop(tried);
            }
            None if server.process == Process::Shared => {
                let spawn = self.spawn(server)?;
                let shared = lock(&self.shared)
                    .entry(server.name.clone())
                    .or_insert_with(|| {
                        Arc::new(SharedServer::start(
                            server.name.clone(),
                            spawn,
                            self.cfg.restart_backoff,
                            self.max_body_bytes,
                            self.stop.subscribe(),
                        ))
                    })
                    .clone();
                shared.attach(relay.clone(), server_rx, quit_rx, tried);
            }
            None => {
                let mut spawn = self.spawn(server)?;
                let network = match &self.egress {
                    Some(egress) => {
                        stdio::session_network(&mut spawn, egress.as_ref(), caller, &id)
                            .map_err(|e| OpenError::Upstream(server.name.clone(), e.to_string()))?
                    }
                    None => None,
                };
                let r = relay.clone();
                let backoff = self.cfg.restart_backoff;
                tokio::spawn(async move {
                    let _network = network;
                    if let Err(e) =
                        stdio::supervise(r, spawn, backoff, server_rx, quit_rx, tried).await
                    {
                        tracing::error!(error = %e, "MCP server process failed");
                    }
                });
            }
        }
        let route = Arc::new(Route::default());
        tokio::spawn(route_lines(route.clone(), client_rx));
        let session = Arc::new(Session {
            id: id.clone(),
            agent: caller.agent.id.clone(),
            server: server.name.clone(),
            relay,
            route,
            quit,
            ready,
            last_used: Mutex::new(Instant::now()),
        });
        lock(&self.map).insert(id, session.clone());
        tracing::info!(mcp.server = %server.name, agent = %caller.agent.id, mcp.session = %session.id, "MCP session opened");
        Ok(session)
    }

    /// How the command `server` is started.
    fn spawn(&self, server: &McpServer) -> Result<stdio::Spawn, OpenError> {
        self.spawns.get(&server.name).cloned().ok_or_else(|| {
            OpenError::Upstream(
                server.name.clone(),
                "no server command is configured".into(),
            )
        })
    }

    /// The session `id` of `agent` on `server`; another agent's session does not exist for it.
    pub fn get(&self, id: &str, agent: &str, server: &str) -> Option<Arc<Session>> {
        let s = lock(&self.map).get(id).cloned()?;
        if s.agent != agent || s.server != server {
            return None;
        }
        *lock(&s.last_used) = Instant::now();
        Some(s)
    }

    /// End a session (DELETE, idle, shutdown): its server is stopped.
    pub fn close(&self, id: &str) -> bool {
        let Some(s) = lock(&self.map).remove(id) else {
            return false;
        };
        let _ = s.quit.send(true);
        tracing::info!(mcp.session = %id, "MCP session closed");
        true
    }

    pub fn close_all(&self) {
        let ids: Vec<String> = lock(&self.map).keys().cloned().collect();
        for id in ids {
            self.close(&id);
        }
        self.stop.send_replace(true);
        lock(&self.shared).clear();
    }

    pub fn len(&self) -> usize {
        lock(&self.map).len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Close sessions unused for `mcp.session_idle_s`.
    pub fn sweep(&self) {
        let idle = self.cfg.session_idle;
        let stale: Vec<String> = lock(&self.map)
            .values()
            .filter(|s| lock(&s.last_used).elapsed() >= idle)
            .map(|s| s.id.clone())
            .collect();
        for id in stale {
            self.close(&id);
        }
    }
}

impl Session {
    /// Hand one POST body to the relay. Responses to `request_ids` arrive on the returned
    /// receiver (with anything the server sends meanwhile).
    /// A request id already in flight (or twice in one batch) is refused as a whole: `Err`
    /// carries the error to answer with.
    pub async fn post(
        &self,
        body: Vec<u8>,
        request_ids: &[Value],
        progress: &[(Value, Value)],
    ) -> Result<mpsc::Receiver<Out>, Vec<u8>> {
        stdio::turned_on(&mut self.ready.clone()).await;
        let (tx, rx) = mpsc::channel(STREAM_CAPACITY);
        {
            let mut waiters = lock(&self.route.waiters);
            let keys: Vec<String> = request_ids.iter().map(jsonrpc::id_key).collect();
            let unique: std::collections::HashSet<&String> = keys.iter().collect();
            if let Some(dup) = request_ids
                .iter()
                .zip(&keys)
                .find(|(_, k)| waiters.contains_key(*k))
                .map(|(id, _)| id)
                .or((unique.len() < keys.len()).then(|| &request_ids[0]))
            {
                let msg = format!("request id {dup} is already in flight");
                return Err(jsonrpc::error(dup, jsonrpc::INVALID_REQUEST, &msg, None));
            }
            for k in keys {
                waiters.insert(k, tx.clone());
            }
        }
        let mut tokens = lock(&self.route.progress);
        for (id, token) in progress {
            tokens.insert(jsonrpc::id_key(token), (jsonrpc::id_key(id), tx.clone()));
        }
        drop(tokens);
        // An earlier unasked message goes out on the first stream that opens.
        flush_backlog(&self.route, &tx);
        drop(tx);
        // In a task of its own: the caller must read `rx` meanwhile (a large batch fills it),
        // and a client that disconnects must not cancel the relay half-way.
        let relay = self.relay.clone();
        tokio::spawn(async move { relay.from_client(body).await });
        Ok(rx)
    }

    /// The standing stream for what the server sends unasked (GET).
    pub fn listen(&self) -> mpsc::Receiver<Out> {
        let (tx, rx) = mpsc::channel(STREAM_CAPACITY);
        flush_backlog(&self.route, &tx);
        *lock(&self.route.stream) = Some(tx);
        rx
    }

    /// Stop waiting for these ids (the client went away).
    pub fn forget(&self, request_ids: &[Value]) {
        let keys: std::collections::HashSet<String> =
            request_ids.iter().map(jsonrpc::id_key).collect();
        let mut waiters = lock(&self.route.waiters);
        for k in &keys {
            waiters.remove(k);
        }
        drop(waiters);
        lock(&self.route.progress).retain(|_, (k, _)| !keys.contains(k));
    }
}

fn flush_backlog(route: &Route, tx: &mpsc::Sender<Out>) {
    let mut backlog = lock(&route.backlog);
    while let Some(line) = backlog.pop_front() {
        if let Err(e) = tx.try_send(line) {
            let line = match e {
                mpsc::error::TrySendError::Full(l) | mpsc::error::TrySendError::Closed(l) => l,
            };
            backlog.push_front(line);
            break;
        }
    }
}

/// What routing needs of a message: whether it has a method, and its id. Everything else is
/// skipped without being built.
#[derive(serde::Deserialize)]
struct Probe {
    method: Option<String>,
    id: Option<Value>,
    params: Option<ProbeParams>,
}

#[derive(serde::Deserialize)]
struct ProbeParams {
    #[serde(rename = "progressToken")]
    progress_token: Option<Value>,
}

async fn route_lines(route: Arc<Route>, mut rx: mpsc::Receiver<Vec<u8>>) {
    while let Some(line) = rx.recv().await {
        let probe: Option<Probe> = serde_json::from_slice(&line).ok();
        let is_response = probe.as_ref().is_some_and(|p| p.method.is_none());
        if is_response {
            let key = probe
                .and_then(|p| p.id)
                .map(|id| jsonrpc::id_key(&id))
                .unwrap_or_default();
            let waiter = lock(&route.waiters).remove(&key);
            lock(&route.progress).retain(|_, (k, _)| *k != key);
            match waiter {
                Some(tx) => {
                    let _ = tx
                        .send(Out {
                            line,
                            response: true,
                        })
                        .await;
                }
                None => {
                    tracing::debug!(id = %key, "MCP response with nobody waiting (client gone)")
                }
            }
            continue;
        }
        let mut line = Out {
            line,
            response: false,
        };
        // Progress: on the stream of its request, so it arrives before the response.
        let token = probe
            .filter(|p| p.method.as_deref() == Some("notifications/progress"))
            .and_then(|p| p.params?.progress_token);
        if let Some(token) = token {
            let tx = lock(&route.progress)
                .get(&jsonrpc::id_key(&token))
                .map(|(_, tx)| tx.clone());
            if let Some(tx) = tx {
                match tx.send(line).await {
                    Ok(()) => continue,
                    Err(e) => line = e.0,
                }
            }
        }
        // Unasked: the standing stream, else any open POST stream, else the backlog.
        let stream = lock(&route.stream).clone();
        let line = match stream {
            Some(tx) => match tx.send(line).await {
                Ok(()) => continue,
                Err(e) => {
                    *lock(&route.stream) = None;
                    e.0
                }
            },
            None => line,
        };
        let post = lock(&route.waiters)
            .values()
            .find(|t| !t.is_closed())
            .cloned();
        let line = match post {
            Some(tx) => match tx.send(line).await {
                Ok(()) => continue,
                Err(e) => e.0,
            },
            None => line,
        };
        let mut backlog = lock(&route.backlog);
        if backlog.len() >= MAX_BACKLOG {
            backlog.pop_front();
            tracing::warn!("MCP backlog full: dropped the oldest unasked server message");
        }
        backlog.push_back(line);
    }
}
