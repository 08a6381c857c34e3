//! The Streamable HTTP transport to an upstream MCP server: every line the relay sends is one
//! POST; JSON and SSE answers are fed back to the relay as they arrive (an SSE stream is relayed
//! event by event, never buffered whole). After `initialize`, the upstream session id and
//! protocol version go on every request, and a GET stream carries what the server sends unasked.
//!
//! Only the configured headers reach the upstream: the agent's credential never does.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::header::{self, HeaderName, HeaderValue};
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use serde_json::Value;
use tokio::net::TcpStream;
use tokio::sync::{mpsc, watch};

use super::jsonrpc;
use super::relay::Relay;
use super::stdio::turned_on;
use crate::sync::lock;

pub const SESSION_HEADER: &str = "mcp-session-id";
pub const VERSION_HEADER: &str = "mcp-protocol-version";
const LAST_EVENT_ID: &str = "last-event-id";
/// Reconnects of one answer stream the server closed early.
const MAX_RESUMES: usize = 5;
/// Longest reconnect delay honoured.
const MAX_RETRY: Duration = Duration::from_secs(5);

/// Where the upstream is and what to send it.
#[derive(Debug, Clone)]
pub struct Upstream {
    /// `host:port` to connect to.
    pub authority: String,
    /// Path and query of the endpoint.
    pub path: String,
    pub headers: Vec<(HeaderName, HeaderValue)>,
    /// Largest JSON body or SSE event accepted from the upstream.
    pub max_message_bytes: usize,
}

impl Upstream {
    /// From a validated `http://` URL and the configured headers.
    pub fn new(
        url: &str,
        headers: &BTreeMap<String, String>,
        max_message_bytes: usize,
    ) -> Result<Upstream, String> {
        let u = url::Url::parse(url).map_err(|e| format!("{url}: {e}"))?;
        let host = u.host_str().ok_or_else(|| format!("{url}: no host"))?;
        let port = u.port_or_known_default().unwrap_or(80);
        let mut path = u.path().to_string();
        if let Some(q) = u.query() {
            path.push('?');
            path.push_str(q);
        }
        let headers = headers
            .iter()
            .map(|(k, v)| {
                Ok((
                    HeaderName::try_from(k.as_str()).map_err(|e| format!("header {k}: {e}"))?,
                    HeaderValue::try_from(v.as_str()).map_err(|e| format!("header {k}: {e}"))?,
                ))
            })
            .collect::<Result<_, String>>()?;
        Ok(Upstream {
            authority: format!("{host}:{port}"),
            path,
            headers,
            max_message_bytes,
        })
    }
}

/// The upstream session, learned from the `initialize` exchange.
#[derive(Default)]
struct Learned {
    session: Option<HeaderValue>,
    version: Option<HeaderValue>,
}

struct Shared {
    up: Upstream,
    relay: Arc<Relay>,
    learned: Mutex<Learned>,
    /// Idle HTTP/1.1 connections, reused for the next POST.
    pool: Mutex<Vec<hyper::client::conn::http1::SendRequest<Full<Bytes>>>>,
}

/// Carry the relay's lines to the upstream until `quit`; then end the upstream session.
/// Relaying starts at once (the upstream is reached per request).
pub fn run(
    relay: Arc<Relay>,
    up: Upstream,
    to_server: mpsc::Receiver<(u64, Vec<u8>)>,
    quit: watch::Receiver<bool>,
) -> impl std::future::Future<Output = ()> + Send + 'static {
    let (generation, _) = relay.server_up();
    relay.resume();
    relay_to(relay, up, generation, to_server, quit)
}

async fn relay_to(
    relay: Arc<Relay>,
    up: Upstream,
    generation: u64,
    mut to_server: mpsc::Receiver<(u64, Vec<u8>)>,
    mut quit: watch::Receiver<bool>,
) {
    let shared = Arc::new(Shared {
        up,
        relay,
        learned: Mutex::new(Learned::default()),
        pool: Mutex::new(Vec::new()),
    });
    let mut tasks = tokio::task::JoinSet::new();
    loop {
        tokio::select! {
            msg = to_server.recv() => match msg {
                Some((g, line)) if g == generation => {
                    let s = shared.clone();
                    tasks.spawn(async move { s.post(line).await });
                }
                Some(_) => {}
                None => break,
            },
            Some(_) = tasks.join_next(), if !tasks.is_empty() => {}
            () = turned_on(&mut quit) => break,
        }
    }
    tasks.abort_all();
    shared.relay.server_down("stopped").await;
    // Tell the upstream its session is over (best effort, bounded).
    let session = lock(&shared.learned).session.clone();
    if let Some(id) = session {
        let req = shared.request(Method::DELETE, Bytes::new(), Some(id));
        let _ = tokio::time::timeout(Duration::from_secs(2), shared.send(req)).await;
    }
}

impl Shared {
    fn request(
        &self,
        method: Method,
        body: Bytes,
        session: Option<HeaderValue>,
    ) -> Request<Full<Bytes>> {
        let mut req = Request::new(Full::new(body));
        *req.method_mut() = method.clone();
        *req.uri_mut() = self.up.path.parse().unwrap_or_default();
        let h = req.headers_mut();
        if let Ok(v) = HeaderValue::try_from(self.up.authority.as_str()) {
            h.insert(header::HOST, v);
        }
        let accept = if method == Method::GET {
            "text/event-stream"
        } else {
            "application/json, text/event-stream"
        };
        h.insert(header::ACCEPT, HeaderValue::from_static(accept));
        if method == Method::POST {
            h.insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/json"),
            );
        }
        for (k, v) in &self.up.headers {
            h.insert(k.clone(), v.clone());
        }
        let learned = lock(&self.learned);
        if let Some(s) = session.or_else(|| learned.session.clone()) {
            h.insert(SESSION_HEADER, s);
        }
        if let Some(v) = &learned.version {
            h.insert(VERSION_HEADER, v.clone());
        }
        req
    }

    async fn connection(
        &self,
    ) -> std::io::Result<hyper::client::conn::http1::SendRequest<Full<Bytes>>> {
        loop {
            let Some(mut s) = lock(&self.pool).pop() else {
                break;
            };
            if !s.is_closed() && s.ready().await.is_ok() {
                return Ok(s);
            }
        }
        let tcp = TcpStream::connect(&self.up.authority).await?;
        let _ = tcp.set_nodelay(true);
        let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tcp))
            .await
            .map_err(std::io::Error::other)?;
        tokio::spawn(async move {
            let _ = conn.await;
        });
        Ok(sender)
    }

    async fn send(
        &self,
        req: Request<Full<Bytes>>,
    ) -> Result<
        (
            Response<Incoming>,
            hyper::client::conn::http1::SendRequest<Full<Bytes>>,
        ),
        String,
    > {
        let mut conn = self.connection().await.map_err(|e| e.to_string())?;
        let resp = conn.send_request(req).await.map_err(|e| e.to_string())?;
        Ok((resp, conn))
    }

    async fn post(self: Arc<Self>, line: Vec<u8>) {
        let msg: Value = serde_json::from_slice(&line).unwrap_or(Value::Null);
        let is_init = msg.get("method").and_then(Value::as_str) == Some("initialize");
        let id = msg.get("method").and(msg.get("id")).cloned();
        let req = self.request(Method::POST, Bytes::from(line), None);
        let (resp, conn) = match self.send(req).await {
            Ok(r) => r,
            Err(e) => {
                return self
                    .fail(id, &format!("cannot reach the upstream: {e}"))
                    .await;
            }
        };
        let status = resp.status();
        if !status.is_success() {
            let body = self.read_all(resp).await.unwrap_or_default();
            let text = String::from_utf8_lossy(&body[..body.len().min(200)]).into_owned();
            let why = if status == StatusCode::NOT_FOUND && lock(&self.learned).session.is_some() {
                "the upstream session expired".to_string()
            } else {
                format!("the upstream answered {status}: {text}")
            };
            return self.fail(id, &why).await;
        }
        if is_init && let Some(s) = resp.headers().get(SESSION_HEADER) {
            lock(&self.learned).session = Some(s.clone());
        }
        let sse = is_sse(&resp);
        if status == StatusCode::ACCEPTED || (!sse && is_empty(&resp)) {
            self.recycle(conn);
            return;
        }
        if sse {
            let mut resume = self.events(resp, is_init).await;
            // A server may end the stream early and expect a reconnect with Last-Event-ID
            // (SSE polling); the answer is then replayed on a GET.
            let mut tries = 0;
            while let (Some(id), Some((last, retry))) = (&id, resume.take()) {
                if !self.relay.in_flight(id) || tries == MAX_RESUMES {
                    break;
                }
                tries += 1;
                tokio::time::sleep(retry).await;
                let mut req = self.request(Method::GET, Bytes::new(), None);
                req.headers_mut().insert(LAST_EVENT_ID, last);
                match self.send(req).await {
                    Ok((resp, _)) if resp.status().is_success() && is_sse(&resp) => {
                        resume = self.events(resp, false).await;
                    }
                    _ => break,
                }
            }
        } else {
            match self.read_all(resp).await {
                Ok(body) => self.deliver(body.to_vec(), is_init).await,
                Err(e) => return self.fail(id, &e).await,
            }
        }
        // Answered by now, or never: the request must not hang (no-op when answered).
        if let Some(id) = &id {
            let why = "the upstream ended its answer without a response to this request";
            self.relay
                .fail_request(id, jsonrpc::SERVER_UNAVAILABLE, why)
                .await;
        }
        self.recycle(conn);
        if is_init {
            let s = self.clone();
            tokio::spawn(async move { s.listen().await });
        }
    }

    /// The standing GET stream for what the server sends unasked; an upstream without one
    /// (405) is fine.
    async fn listen(self: Arc<Self>) {
        let req = self.request(Method::GET, Bytes::new(), None);
        let Ok((resp, _conn)) = self.send(req).await else {
            return;
        };
        if resp.status().is_success() && is_sse(&resp) {
            let _ = self.events(resp, false).await;
        }
    }

    async fn deliver(&self, line: Vec<u8>, is_init: bool) {
        if is_init
            && let Ok(v) = serde_json::from_slice::<Value>(&line)
            && let Some(ver) = v.pointer("/result/protocolVersion").and_then(Value::as_str)
            && let Ok(h) = HeaderValue::try_from(ver)
        {
            lock(&self.learned).version = Some(h);
        }
        self.relay.from_server(line).await;
    }

    /// Relay each SSE event's data as one message, as it arrives. Returns the last event id
    /// and the reconnect delay the server asked for, if it gave an id.
    async fn events(
        &self,
        resp: Response<Incoming>,
        is_init: bool,
    ) -> Option<(HeaderValue, Duration)> {
        let mut last_id: Option<HeaderValue> = None;
        let mut retry = Duration::from_secs(1);
        let max = self.up.max_message_bytes;
        let mut body = resp.into_body();
        let mut buf: Vec<u8> = Vec::new();
        let mut data: Vec<u8> = Vec::new();
        let mut over = false;
        while let Some(frame) = body.frame().await {
            let Ok(frame) = frame else { break };
            let Ok(chunk) = frame.into_data() else {
                continue;
            };
            buf.extend_from_slice(&chunk);
            while let Some(nl) = buf.iter().position(|&b| b == b'\n') {
                let mut line: Vec<u8> = buf.drain(..=nl).collect();
                line.pop();
                if line.last() == Some(&b'\r') {
                    line.pop();
                }
                if line.is_empty() {
                    if over {
                        self.relay.oversize_from_server(data.len(), b"", b"").await;
                    } else if !data.is_empty() {
                        self.deliver(std::mem::take(&mut data), is_init).await;
                    }
                    data.clear();
                    over = false;
                } else if let Some(rest) = line.strip_prefix(b"id:") {
                    let rest = rest.strip_prefix(b" ").unwrap_or(rest);
                    last_id = HeaderValue::from_bytes(rest).ok().filter(|v| !v.is_empty());
                } else if let Some(rest) = line.strip_prefix(b"retry:") {
                    let ms = std::str::from_utf8(rest)
                        .ok()
                        .and_then(|t| t.trim().parse().ok());
                    if let Some(ms) = ms {
                        retry = Duration::from_millis(ms).min(MAX_RETRY);
                    }
                } else if let Some(rest) = line.strip_prefix(b"data:") {
                    let rest = rest.strip_prefix(b" ").unwrap_or(rest);
                    if !data.is_empty() {
                        data.push(b'\n');
                    }
                    data.extend_from_slice(rest);
                    if data.len() > max {
                        over = true;
                        data.clear();
                    }
                }
                // `event:`, `id:`, `retry:` and comments carry nothing the relay needs.
            }
            if buf.len() > max {
                self.relay.oversize_from_server(buf.len(), b"", b"").await;
                buf.clear();
                over = true;
            }
        }
        if !over && !data.is_empty() {
            self.deliver(data, is_init).await;
        }
        last_id.map(|id| (id, retry))
    }

    async fn read_all(&self, resp: Response<Incoming>) -> Result<Bytes, String> {
        let limited = http_body_util::Limited::new(resp.into_body(), self.up.max_message_bytes);
        limited
            .collect()
            .await
            .map(|c| c.to_bytes())
            .map_err(|e| format!("reading the upstream answer: {e}"))
    }

    fn recycle(&self, conn: hyper::client::conn::http1::SendRequest<Full<Bytes>>) {
        if !conn.is_closed() {
            let mut pool = lock(&self.pool);
            if pool.len() < 16 {
                pool.push(conn);
            }
        }
    }

    async fn fail(&self, id: Option<Value>, why: &str) {
        tracing::warn!(error = %why, "upstream MCP request failed");
        if let Some(id) = id {
            self.relay
                .fail_request(&id, jsonrpc::SERVER_UNAVAILABLE, why)
                .await;
        }
    }
}

fn is_sse(resp: &Response<Incoming>) -> bool {
    resp.headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("text/event-stream"))
}

fn is_empty(resp: &Response<Incoming>) -> bool {
    resp.headers()
        .get(header::CONTENT_LENGTH)
        .is_some_and(|v| v.as_bytes() == b"0")
}
