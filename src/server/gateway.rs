//! The gateway listener: `POST /v1/decide`, `GET /v1/approvals/{id}` for the agent that asked,
//! and `GET /healthz`.

use std::sync::Arc;

use hyper::body::Incoming;
use hyper::{Method, Request, Response, StatusCode, header};
use serde::Serialize;

use super::App;
use super::http::{self, Body, HttpError};
use super::listener::Conn;
use crate::action::{Decision, Outcome, reason};
use crate::gate::approvals::{self, Status, Ticket};
use crate::gate::identity::Caller;
use crate::gate::{GateError, resolved_decision};
use crate::input;

/// The header that names a session.
pub const SESSION_HEADER: &str = "x-portcullis-session";

/// What `/v1/decide` answers.
#[derive(Serialize)]
struct DecideResponse<'a> {
    /// The action id (generated when the caller gave none); also in the audit record.
    id: &'a str,
    #[serde(flatten)]
    decision: &'a Decision,
    #[serde(skip_serializing_if = "Option::is_none")]
    approval: Option<ApprovalView<'a>>,
}

#[derive(Serialize)]
pub(super) struct ApprovalView<'a> {
    pub id: &'a str,
    #[serde(flatten)]
    pub status: &'a Status,
    pub action_id: &'a str,
    pub action_digest: &'a str,
    #[serde(serialize_with = "super::rfc3339")]
    pub expires: std::time::SystemTime,
}

impl<'a> ApprovalView<'a> {
    pub(super) fn new(t: &'a Ticket, status: &'a Status) -> ApprovalView<'a> {
        ApprovalView {
            id: &t.id,
            status,
            action_id: &t.action.id,
            action_digest: &t.action_digest,
            expires: t.expires,
        }
    }
}

pub async fn handle(app: Arc<App>, req: Request<Incoming>, conn: Arc<Conn>) -> Response<Body> {
    let path = req.uri().path().to_string();
    let result = match (req.method(), path.as_str()) {
        (&Method::GET, "/healthz") => Ok(http::text(StatusCode::OK, "text/plain", "ok\n".into())),
        (&Method::POST, "/v1/decide") => decide(&app, req, &conn).await,
        (_, p) if p.starts_with("/mcp/") && !p["/mcp/".len()..].contains('/') => {
            let server = p["/mcp/".len()..].to_string();
            super::mcp::handle(&app, req, &conn, &server).await
        }
        (_, p) if p.starts_with("/llm/") => {
            let after = &p["/llm/".len()..];
            let (upstream, rest) = after.split_at(after.find('/').unwrap_or(after.len()));
            let (upstream, rest) = (upstream.to_string(), rest.to_string());
            return super::llm::handle(&app, req, &conn, &upstream, &rest).await;
        }
        (&Method::GET, p) if p.starts_with("/v1/approvals/") => {
            approval(&app, req, &conn, &p["/v1/approvals/".len()..]).await
        }
        (_, "/v1/decide") => Err(method_not_allowed("POST")),
        _ => Err(HttpError::not_found()),
    };
    result.unwrap_or_else(HttpError::into_response)
}

fn method_not_allowed(allowed: &str) -> HttpError {
    HttpError::new(
        StatusCode::METHOD_NOT_ALLOWED,
        "method_not_allowed",
        format!("use {allowed}"),
    )
}

pub(super) fn caller(app: &App, req: &Request<Incoming>, conn: &Conn) -> Result<Caller, HttpError> {
    let key = http::bearer(req)?;
    app.identities
        .agent(key, conn.cert.as_ref())
        .map_err(|e| HttpError::unauthorized(e.to_string()))
}

/// The session id from the header, or the credential's default. Ids are kept to a plain
/// alphabet: they reach logs, metrics and policy.
pub(super) fn session_id(req: &Request<Incoming>, caller: &Caller) -> Result<String, HttpError> {
    let Some(v) = req.headers().get(SESSION_HEADER) else {
        return Ok(caller.default_session.clone());
    };
    let ok = v.len() <= 128
        && !v.is_empty()
        && v.as_bytes()
            .iter()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b':'));
    if !ok {
        return Err(HttpError::bad_request(
            "X-Portcullis-Session must be 1 to 128 characters of letters, digits and `-_.:`",
        ));
    }
    Ok(String::from_utf8_lossy(v.as_bytes()).into_owned())
}

async fn decide(
    app: &Arc<App>,
    req: Request<Incoming>,
    conn: &Conn,
) -> Result<Response<Body>, HttpError> {
    let caller = caller(app, &req, conn)?;
    let session = session_id(&req, &caller)?;
    let wait = http::wait_param(&req, app.approval_timeout)?;
    let body = http::read_body(
        req,
        app.config.server.max_body_bytes,
        app.config.server.body_timeout,
    )
    .await?;
    let action = input::parse_action(&body).map_err(|e| HttpError::bad_request(e.to_string()))?;
    let pending = app
        .gate
        .decide_for(&caller, &session, action)
        .map_err(|e: GateError| HttpError::bad_request(e.to_string()))?;
    let action_id = pending.action.id.clone();
    // Settled at once when the record's fate is known (buffered audit); otherwise the wait is
    // spawned, so that the record, the session labels and the metrics are settled even if the
    // client disconnects while the record is on its way to disk.
    let verdict = match pending.try_release() {
        Ok(verdict) => verdict,
        Err(pending) => tokio::spawn((*pending).release()).await.map_err(|e| {
            HttpError::new(
                StatusCode::INTERNAL_SERVER_ERROR,
                "internal",
                format!("decision task failed: {e}"),
            )
        })?,
    };
    let mut decision = verdict.decision;
    let mut status = Status::Pending;
    if let Some(t) = &verdict.approval
        && !wait.is_zero()
        && let Some((_, rx)) = app.gate.state().and_then(|s| s.approvals().get(&t.id))
    {
        status = approvals::wait(rx, wait).await;
        if let Some(d) = resolved_decision(&decision, &status) {
            decision = d;
        }
    }
    let code = status_code(&decision);
    let body = DecideResponse {
        id: &action_id,
        decision: &decision,
        approval: verdict
            .approval
            .as_ref()
            .map(|t| ApprovalView::new(t, &status)),
    };
    let mut resp = http::json(code, &body);
    if code == StatusCode::TOO_MANY_REQUESTS {
        resp.headers_mut()
            .insert(header::RETRY_AFTER, header::HeaderValue::from_static("1"));
    }
    Ok(resp)
}

/// Decisions are the payload, so allow, deny and ask are all 200; a rate limit is 429 and an
/// audit outage 503 so that generic HTTP clients back off.
fn status_code(d: &Decision) -> StatusCode {
    if d.outcome != Outcome::Deny {
        return StatusCode::OK;
    }
    match d.reasons.first().map(|r| r.rule.as_str()) {
        Some(reason::RATE_LIMITED) => StatusCode::TOO_MANY_REQUESTS,
        Some(reason::AUDIT_UNAVAILABLE) => StatusCode::SERVICE_UNAVAILABLE,
        _ => StatusCode::OK,
    }
}

async fn approval(
    app: &Arc<App>,
    req: Request<Incoming>,
    conn: &Conn,
    id: &str,
) -> Result<Response<Body>, HttpError> {
    let caller = caller(app, &req, conn)?;
    let wait = http::wait_param(&req, app.approval_timeout)?;
    let not_found = || {
        HttpError::new(
            StatusCode::NOT_FOUND,
            "not_found",
            format!("no approval {id:?}"),
        )
    };
    let (ticket, rx) = app
        .gate
        .state()
        .and_then(|s| s.approvals().get(id))
        .ok_or_else(not_found)?;
    // Another agent's approvals do not exist as far as this caller can tell.
    if ticket.agent != caller.agent.id {
        return Err(not_found());
    }
    let status = if wait.is_zero() {
        rx.borrow().clone()
    } else {
        approvals::wait(rx, wait).await
    };
    let decision =
        resolved_decision(&ticket.decision, &status).unwrap_or_else(|| ticket.decision.clone());
    let body = DecideResponse {
        id: &ticket.action.id,
        decision: &decision,
        approval: Some(ApprovalView::new(&ticket, &status)),
    };
    Ok(http::json(StatusCode::OK, &body))
}
