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
//! * `Origin`, when sent, must be one of `mcp.allowed_origins` (403 otherwise): a web page must
//!   not reach a local tool server through a rebinding DNS name.

use std::sync::Arc;

use bytes::Bytes;
use hyper::body::Incoming;
use hyper::header::{self, HeaderValue};
use hyper::{Method, Request, Response, StatusCode};
use serde_json::{Value, json};
use tokio::sync::mpsc;

use super::App;
use super::http::{self, Body, HttpError};
use super::listener::Conn;
use crate::proxy::mcp::http::{OpenError, Session};
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
    if let Some(origin) = req.headers().get(header::ORIGIN) {
        let allowed = origin
            .to_str()
            .is_ok_and(|o| app.config.mcp.allowed_origins.iter().any(|a| a == o));
        if !allowed {
            return Err(HttpError::new(
                StatusCode::FORBIDDEN,
                "forbidden_origin",
                format!(
                    "Origin {:?} is not in mcp.allowed_origins",
                    String::from_utf8_lossy(origin.as_bytes())
                ),
            ));
        }
    }
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
    let rx = match session.post(body.to_vec(), &ids).await {
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
        let Some(line) = rx.recv().await else { break };
        let v: Value = serde_json::from_slice(&line).unwrap_or(Value::Null);
        if v.get("method").is_none() {
            responses.push(v);
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
    mut rx: mpsc::Receiver<Vec<u8>>,
    until: Option<(Arc<Session>, Vec<Value>)>,
    new_session: Option<String>,
) -> Response<Body> {
    let (tx, body_rx) = mpsc::channel::<Bytes>(16);
    tokio::spawn(async move {
        let mut left = until.as_ref().map(|(_, ids)| ids.len());
        while left != Some(0) {
            let Some(line) = rx.recv().await else { break };
            if let Some(n) = &mut left {
                let v: Value = serde_json::from_slice(&line).unwrap_or(json!({}));
                if v.get("method").is_none() {
                    *n -= 1;
                }
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
