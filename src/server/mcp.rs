//! `/mcp/{server}` on the gateway listener: the MCP Streamable HTTP transport (2025-11-25) in
//! front of a configured server, with the agent's credential checked on every request.
//!
//! * POST: one JSON-RPC message (or a batch). Requests are answered on a `text/event-stream`
//!   response that carries their responses, and whatever the server sends meanwhile, as they
//!   arrive (or on `application/json` when the client accepts only that); notifications and
//!   responses get 202.
//! * GET: the session's standing SSE stream. DELETE: ends the session.
//! * `Mcp-Session-Id` is issued at `initialize` and bound to the agent: another agent's (or an
//!   unknown) id is 404, as for an expired session. A missing id after initialize is 400.
//! * DNS rebinding (a web page reaching a local tool server through a name that resolves to
//!   127.0.0.1): on a loopback listener, `Host` must be a loopback name; `Origin`, when sent,
//!   must be the gateway's own loopback origin or one of `mcp.allowed_origins`. Else 403.

use std::sync::Arc;

use bytes::Bytes;
use hyper::body::Incoming;
use hyper::header::{self, HeaderValue};
use hyper::{Method, Request, Response, StatusCode};
use serde_json::Value;
use tokio::sync::mpsc;

use super::App;
use super::http::{self, Body, HttpError};
use super::listener::Conn;
use crate::proxy::mcp::http::{OpenError, Out, Session};
use crate::proxy::mcp::jsonrpc;
use crate::proxy::mcp::upstream::SESSION_HEADER;

pub async fn handle(
    app: &Arc<App>,
    req: Request<Incoming>,
    conn: &Conn,
    server: &str,
) -> Result<Response<Body>, HttpError> {
    let Some(cfg) = app.config.mcp.servers.iter().find(|s| s.name == server) else {
        return Err(HttpError::new(
            StatusCode::NOT_FOUND,
            "not_found",
            format!("no MCP server {server:?} is configured"),
        ));
    };
    check_origin(app, &req)?;
    let caller = super::gateway::caller(app, &req, conn)?;
    let session_id = req
        .headers()
        .get(SESSION_HEADER)
        .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned());
    let existing = match &session_id {
        Some(id) => Some(
            app.mcp
                .get(id, &caller.agent.id, server)
                .ok_or_else(unknown_session)?,
        ),
        None => None,
    };
    match *req.method() {
        Method::POST => post(app, req, &caller, cfg, existing).await,
        Method::GET => {
            let session = existing.ok_or_else(missing_session)?;
            if !accepts(&req, "text/event-stream") {
                return Err(HttpError::new(
                    StatusCode::NOT_ACCEPTABLE,
                    "not_acceptable",
                    "GET needs Accept: text/event-stream",
                ));
            }
            Ok(sse(session.listen(), None, None))
        }
        Method::DELETE => {
            let session = existing.ok_or_else(missing_session)?;
            app.mcp.close(&session.id);
            let mut r = http::text(StatusCode::OK, "text/plain", String::new());
            *r.body_mut() = http::full(Bytes::new());
            Ok(r)
        }
        _ => {
            let mut r = HttpError::new(
                StatusCode::METHOD_NOT_ALLOWED,
                "method_not_allowed",
                "use POST, GET or DELETE",
            )
            .into_response();
            r.headers_mut()
                .insert(header::ALLOW, HeaderValue::from_static("GET, POST, DELETE"));
            Ok(r)
        }
    }
}

async fn post(
    app: &Arc<App>,
    req: Request<Incoming>,
    caller: &crate::gate::identity::Caller,
    cfg: &crate::config::McpServer,
    existing: Option<Arc<Session>>,
) -> Result<Response<Body>, HttpError> {
    let json_ok = accepts(&req, "application/json");
    let sse_ok = accepts(&req, "text/event-stream");
    if !json_ok && !sse_ok {
        return Err(HttpError::new(
            StatusCode::NOT_ACCEPTABLE,
            "not_acceptable",
            "POST needs Accept: application/json, text/event-stream",
        ));
    }
    let body = http::read_body(
        req,
        app.config.server.max_body_bytes,
        app.config.server.body_timeout,
    )
    .await?;
    // Routing only; the relay parses strictly and refuses what is ambiguous.
    let parsed: Value = match serde_json::from_slice(&body) {
        Ok(v) => v,
        Err(e) => {
            let line = jsonrpc::error(
                &Value::Null,
                jsonrpc::PARSE_ERROR,
                &format!("invalid JSON: {e}"),
                None,
            );
            return Ok(json_line(StatusCode::BAD_REQUEST, line));
        }
    };
    let messages: Vec<&Value> = match &parsed {
        Value::Array(items) => items.iter().collect(),
        v => vec![v],
    };
    let ids: Vec<Value> = messages
        .iter()
        .filter(|m| m.get("method").is_some())
        .filter_map(|m| m.get("id").cloned())
        .collect();
    // An answer to an id JSON-RPC does not allow could never be matched to this exchange.
    if let Some(bad) = ids.iter().find(|id| !jsonrpc::valid_id(id)) {
        let msg = format!("id {bad} is not a string or an integer within ±(2^53 - 1)");
        let line = jsonrpc::error(&Value::Null, jsonrpc::INVALID_REQUEST, &msg, None);
        return Ok(json_line(StatusCode::BAD_REQUEST, line));
    }
    let is_init = messages
        .iter()
        .any(|m| m.get("method").and_then(Value::as_str) == Some("initialize"));
    let (session, new_id) = match (existing, is_init) {
        (Some(s), _) => (s, None),
        (None, true) => {
            let s = app.mcp.open(caller, cfg).map_err(|e| match e {
                OpenError::Full(_) => HttpError::new(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "too_many_sessions",
                    e.to_string(),
                ),
                OpenError::Upstream(..) => {
                    HttpError::new(StatusCode::BAD_GATEWAY, "upstream", e.to_string())
                }
            })?;
            let id = s.id.clone();
            (s, Some(id))
        }
        (None, false) => return Err(missing_session()),
    };
    // Progress of a request goes out on the stream of the request, before its response.
    let progress: Vec<(Value, Value)> = messages
        .iter()
        .filter(|m| m.get("method").is_some())
        .filter_map(|m| {
            let token = m.pointer("/params/_meta/progressToken")?;
            Some((m.get("id")?.clone(), token.clone()))
        })
        .collect();
    let rx = match session.post(body.to_vec(), &ids, &progress).await {
        Ok(rx) => rx,
        Err(line) => return Ok(json_line(StatusCode::OK, line)),
    };
    if ids.is_empty() {
        let mut r = http::text(StatusCode::ACCEPTED, "text/plain", String::new());
        *r.body_mut() = http::full(Bytes::new());
        return Ok(r);
    }
    if sse_ok {
        return Ok(sse(rx, Some((session, ids)), new_id));
    }
    // JSON only: wait for every response; what the server sends meanwhile waits for a stream.
    let mut rx = rx;
    let mut responses = Vec::new();
    while responses.len() < ids.len() {
        let Some(out) = rx.recv().await else { break };
        if out.response {
            responses.push(serde_json::from_slice(&out.line).unwrap_or(Value::Null));
        }
    }
    let body = if parsed.is_array() {
        jsonrpc::to_line(&Value::Array(responses))
    } else {
        jsonrpc::to_line(&responses.pop().unwrap_or(Value::Null))
    };
    let mut r = json_line(StatusCode::OK, body);
    if let Some(id) = new_id
        && let Ok(v) = HeaderValue::try_from(id)
    {
        r.headers_mut().insert(SESSION_HEADER, v);
    }
    Ok(r)
}

/// An SSE response carrying each line as one `message` event. With `until`, the stream ends
/// once every one of those requests has its response.
fn sse(
    mut rx: mpsc::Receiver<Out>,
    until: Option<(Arc<Session>, Vec<Value>)>,
    new_session: Option<String>,
) -> Response<Body> {
    let (tx, body_rx) = mpsc::channel::<Bytes>(16);
    tokio::spawn(async move {
        let mut left = until.as_ref().map(|(_, ids)| ids.len());
        while left != Some(0) {
            let Some(Out { line, response }) = rx.recv().await else {
                break;
            };
            if let Some(n) = &mut left
                && response
            {
                *n -= 1;
            }
            let mut event = Vec::with_capacity(line.len() + 24);
            event.extend_from_slice(b"event: message\ndata: ");
            event.extend_from_slice(&line);
            event.extend_from_slice(b"\n\n");
            if tx.send(Bytes::from(event)).await.is_err() {
                break;
            }
        }
        if let Some((session, ids)) = until {
            session.forget(&ids);
        }
    });
    let mut r = Response::new(http::stream(body_rx));
    let h = r.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/event-stream"),
    );
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    if let Some(id) = new_session
        && let Ok(v) = HeaderValue::try_from(id)
    {
        h.insert(SESSION_HEADER, v);
    }
    r
}

fn json_line(status: StatusCode, mut line: Vec<u8>) -> Response<Body> {
    line.push(b'\n');
    let mut r = Response::new(http::full(line));
    *r.status_mut() = status;
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    r
}

/// DNS rebinding and cross-site requests (also for `/llm/…`): see the module doc.
pub(super) fn check_origin(app: &App, req: &Request<Incoming>) -> Result<(), HttpError> {
    let forbidden = |m: String| HttpError::new(StatusCode::FORBIDDEN, "forbidden_origin", m);
    let loopback = app.config.server.listen.ip().is_loopback();
    let host = req
        .headers()
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .unwrap_or("");
    if loopback && !is_loopback_name(host_name(host)) {
        return Err(forbidden(format!(
            "Host {host:?} is not a loopback name; this gateway listens on loopback"
        )));
    }
    let Some(origin) = req.headers().get(header::ORIGIN) else {
        return Ok(());
    };
    let origin = origin.to_str().unwrap_or("");
    if app.config.mcp.allowed_origins.iter().any(|a| a == origin) {
        return Ok(());
    }
    // The gateway's own origin, on loopback: a same-origin request.
    let own = url::Url::parse(origin).ok().is_some_and(|u| {
        let authority = match u.port() {
            Some(p) => format!("{}:{p}", u.host_str().unwrap_or("")),
            None => u.host_str().unwrap_or("").to_string(),
        };
        loopback && u.scheme() == "http" && authority.eq_ignore_ascii_case(host)
    });
    if own {
        return Ok(());
    }
    Err(forbidden(format!(
        "Origin {origin:?} is not in mcp.allowed_origins"
    )))
}

/// The name part of a `Host` value (`[::1]:8080` → `[::1]`).
fn host_name(host: &str) -> &str {
    if host.starts_with('[') {
        return host.split_inclusive(']').next().unwrap_or(host);
    }
    host.rsplit_once(':').map_or(host, |(h, _)| h)
}

fn is_loopback_name(name: &str) -> bool {
    let name = name.trim_end_matches('.').to_ascii_lowercase();
    if name == "localhost" || name.ends_with(".localhost") {
        return true;
    }
    name.trim_start_matches('[')
        .trim_end_matches(']')
        .parse::<std::net::IpAddr>()
        .is_ok_and(|ip| ip.is_loopback())
}

fn accepts(req: &Request<Incoming>, what: &str) -> bool {
    req.headers()
        .get_all(header::ACCEPT)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(|t| t.split(';').next().unwrap_or("").trim())
        .any(|t| t == what || t == "*/*")
}

fn unknown_session() -> HttpError {
    HttpError::new(
        StatusCode::NOT_FOUND,
        "unknown_session",
        "no such MCP session (it expired, was closed, or belongs to another agent): initialize again",
    )
}

fn missing_session() -> HttpError {
    HttpError::bad_request("Mcp-Session-Id is required after initialize")
}
