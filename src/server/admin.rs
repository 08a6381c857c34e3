//! The admin listener (loopback by default). Health, readiness and metrics are open; approvals,
//! the audit query and policy reload need an admin credential, whose id is recorded as the
//! approver.

use std::sync::Arc;

use hyper::body::Incoming;
use hyper::{Method, Request, Response, StatusCode};
use serde::Deserialize;
use serde_json::{Value, json};

use super::App;
use super::gateway::ApprovalView;
use super::http::{self, Body, HttpError};
use super::listener::Conn;
use crate::audit::{self, Filter};
use crate::gate::ResolveError;
use crate::gate::approvals::ApprovalError;

/// Most records one `/v1/audit` response carries.
const MAX_AUDIT_RECORDS: u64 = 10_000;

pub async fn handle(app: Arc<App>, req: Request<Incoming>, _conn: Arc<Conn>) -> Response<Body> {
    let path = req.uri().path().to_string();
    let result = match (req.method(), path.as_str()) {
        (&Method::GET, "/healthz") => Ok(http::text(StatusCode::OK, "text/plain", "ok\n".into())),
        (&Method::GET, "/readyz") => Ok(readyz(&app)),
        (&Method::GET, "/metrics") => Ok(http::text(
            StatusCode::OK,
            "text/plain; version=0.0.4",
            app.metrics.render(&app.gauges()),
        )),
        (&Method::GET, "/v1/approvals") => admin(&app, &req).map(|_| list(&app)),
        (&Method::GET, p) if p.starts_with("/v1/approvals/") => match admin(&app, &req) {
            Ok(_) => show(&app, &req, &p["/v1/approvals/".len()..]).await,
            Err(e) => Err(e),
        },
        (&Method::POST, p) if p.starts_with("/v1/approvals/") => {
            let rest = &p["/v1/approvals/".len()..];
            match rest.rsplit_once('/') {
                Some((id, "approve")) => resolve(&app, req, id.to_string(), true).await,
                Some((id, "deny")) => resolve(&app, req, id.to_string(), false).await,
                _ => Err(HttpError::not_found()),
            }
        }
        (&Method::GET, "/v1/audit") => match admin(&app, &req) {
            Ok(_) => audit_query(&app, &req).await,
            Err(e) => Err(e),
        },
        (&Method::POST, "/v1/policy/reload") => match admin(&app, &req) {
            Ok(who) => reload(&app, &who).await,
            Err(e) => Err(e),
        },
        _ => Err(HttpError::not_found()),
    };
    result.unwrap_or_else(HttpError::into_response)
}

/// The admin id behind the request's bearer key.
fn admin(app: &App, req: &Request<Incoming>) -> Result<String, HttpError> {
    if !app.identities.has_admins() {
        return Err(HttpError::new(
            StatusCode::FORBIDDEN,
            "no_admins",
            "no [[admins]] are configured, so admin routes are closed",
        ));
    }
    let key = http::bearer(req)?;
    app.identities
        .admin(key)
        .map_err(|e| HttpError::unauthorized(e.to_string()))
}

fn readyz(app: &App) -> Response<Body> {
    let audit_error = app.gate.audit().and_then(|a| {
        a.failure().or_else(|| {
            a.stats()
                .failed
                .then(|| "the last audit write failed".to_string())
        })
    });
    let reload = app.reload_status();
    let ready = audit_error.is_none();
    let body = json!({
        "ready": ready,
        "policy_digest": app.gate.policy().digest(),
        "audit_writable": audit_error.is_none(),
        "audit_error": audit_error,
        "last_reload": reload,
    });
    let code = if ready {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    http::json(code, &body)
}

fn list(app: &App) -> Response<Body> {
    let pending = app
        .gate
        .state()
        .map(|s| s.approvals().pending())
        .unwrap_or_default();
    http::json(StatusCode::OK, &json!({ "approvals": pending }))
}

async fn show(app: &App, req: &Request<Incoming>, id: &str) -> Result<Response<Body>, HttpError> {
    let wait = http::wait_param(req, app.approval_timeout)?;
    let (ticket, rx) = app
        .gate
        .state()
        .and_then(|s| s.approvals().get(id))
        .ok_or_else(|| {
            HttpError::new(
                StatusCode::NOT_FOUND,
                "not_found",
                format!("no approval {id:?}"),
            )
        })?;
    let status = if wait.is_zero() {
        rx.borrow().clone()
    } else {
        crate::gate::approvals::wait(rx, wait).await
    };
    let view = ApprovalView::new(&ticket, &status);
    Ok(http::json(
        StatusCode::OK,
        &json!({ "approval": view, "action": ticket.action, "decision": ticket.decision }),
    ))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ResolveBody {
    /// The digest of the action the approver reviewed; the resolution fails if it differs.
    digest: Option<String>,
}

async fn resolve(
    app: &Arc<App>,
    req: Request<Incoming>,
    id: String,
    approve: bool,
) -> Result<Response<Body>, HttpError> {
    let who = admin(app, &req)?;
    let body = http::read_body(req, 4096, app.config.server.body_timeout).await?;
    let digest = if body.iter().all(u8::is_ascii_whitespace) {
        None
    } else {
        let v =
            crate::input::parse_value(&body).map_err(|e| HttpError::bad_request(e.to_string()))?;
        let b: ResolveBody = serde_json::from_value(v)
            .map_err(|e| HttpError::bad_request(format!("resolution body: {e}")))?;
        b.digest
    };
    match app
        .gate
        .resolve(&id, &who, approve, digest.as_deref())
        .await
    {
        Ok(ticket) => {
            let status = app
                .gate
                .state()
                .and_then(|s| s.approvals().get(&id))
                .map(|(_, rx)| rx.borrow().clone());
            let status = status.unwrap_or(crate::gate::approvals::Status::Pending);
            Ok(http::json(
                StatusCode::OK,
                &json!({ "approval": ApprovalView::new(&ticket, &status) }),
            ))
        }
        Err(e) => Err(match &e {
            ResolveError::Approval(ApprovalError::NotFound(_)) => {
                HttpError::new(StatusCode::NOT_FOUND, "not_found", e.to_string())
            }
            ResolveError::Approval(_) | ResolveError::DigestMismatch(_) => {
                HttpError::new(StatusCode::CONFLICT, "conflict", e.to_string())
            }
            ResolveError::Audit(_) => HttpError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "audit_unavailable",
                e.to_string(),
            ),
            ResolveError::NoState => {
                HttpError::new(StatusCode::NOT_FOUND, "not_found", e.to_string())
            }
        }),
    }
}

async fn audit_query(app: &App, req: &Request<Incoming>) -> Result<Response<Body>, HttpError> {
    let mut filter = Filter::default();
    if let Some(q) = req.uri().query() {
        for pair in q.split('&').filter(|p| !p.is_empty()) {
            let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
            let v = percent_decode(v)
                .ok_or_else(|| HttpError::bad_request(format!("{k}: bad percent-encoding")))?;
            let time = |v: &str| {
                chrono::DateTime::parse_from_rfc3339(v)
                    .map(|t| t.with_timezone(&chrono::Utc))
                    .map_err(|e| {
                        HttpError::bad_request(format!("{k}={v:?}: not an RFC 3339 time: {e}"))
                    })
            };
            match k {
                "agent" => filter.agent = Some(v),
                "session" => filter.session = Some(v),
                "kind" => filter.kind = Some(v),
                "outcome" => filter.outcome = Some(v),
                "rule" => filter.rule = Some(v),
                "since" => filter.since = Some(time(&v)?),
                "until" => filter.until = Some(time(&v)?),
                "limit" => {
                    filter.limit = Some(v.parse().map_err(|_| {
                        HttpError::bad_request(format!("limit={v:?} is not a number"))
                    })?)
                }
                _ => {
                    return Err(HttpError::bad_request(format!(
                        "unknown query parameter {k:?}"
                    )));
                }
            }
        }
    }
    filter.limit = Some(
        filter
            .limit
            .unwrap_or(MAX_AUDIT_RECORDS)
            .min(MAX_AUDIT_RECORDS),
    );
    // Reading the log is file I/O that can take a while: keep it off the request workers.
    let path = app.config.audit.path.clone();
    let read = tokio::task::spawn_blocking(move || {
        let mut records: Vec<Value> = Vec::new();
        audit::query(&path, &filter, &mut |r| {
            records.push(r.clone());
            Ok(())
        })
        .map(|_| records)
        .map_err(|e| e.to_string())
    })
    .await
    .map_err(|e| e.to_string())
    .and_then(|r| r);
    let records =
        read.map_err(|e| HttpError::new(StatusCode::INTERNAL_SERVER_ERROR, "audit_error", e))?;
    Ok(http::json(StatusCode::OK, &json!({ "records": records })))
}

async fn reload(app: &Arc<App>, who: &str) -> Result<Response<Body>, HttpError> {
    match app.reload(&format!("admin {who}")).await {
        Ok(digest) => Ok(http::json(
            StatusCode::OK,
            &json!({ "policy_digest": digest }),
        )),
        Err(e) => Err(HttpError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "reload_failed",
            format!("{e}; the previous policy stays in force"),
        )),
    }
}

fn percent_decode(s: &str) -> Option<String> {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'%' => {
                let hex = s.get(i + 1..i + 3)?;
                out.push(u8::from_str_radix(hex, 16).ok()?);
                i += 3;
            }
            b'+' => {
                out.push(b' ');
                i += 1;
            }
            b => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8(out).ok()
}
