//! `/llm/{upstream}/…` on the gateway listener: the agent's model endpoint. The agent's own
//! credential (an `Authorization: Bearer` key as the OpenAI SDKs send it, or `x-api-key` as the
//! Anthropic SDKs do) identifies it; the provider key is added by the LLM front end.

use std::sync::Arc;

use hyper::body::Incoming;
use hyper::header::{self, HeaderValue};
use hyper::{Method, Request, Response, StatusCode};

use super::App;
use super::http::{self, Body, HttpError};
use super::listener::Conn;
use crate::config::ProviderKind;
use crate::proxy::llm;

pub async fn handle(
    app: &Arc<App>,
    req: Request<Incoming>,
    conn: &Conn,
    upstream: &str,
    rest: &str,
) -> Response<Body> {
    let kind = app.config.llm.upstream(upstream).map(|u| u.kind);
    let fail = |status: StatusCode, ty: &str, code: &str, message: &str| {
        llm::error(kind, status, ty, code, message)
    };
    if req.method() != Method::POST {
        let mut r = fail(
            StatusCode::METHOD_NOT_ALLOWED,
            "invalid_request_error",
            "method_not_allowed",
            "use POST",
        );
        r.headers_mut()
            .insert(header::ALLOW, HeaderValue::from_static("POST"));
        return r;
    }
    // A web page must not reach the model endpoint through a rebinding name or cross-site.
    if let Err(e) = super::mcp::check_origin(app, &req) {
        return fail(e.status, "permission_error", e.code, &e.message);
    }
    let caller = match caller(app, &req, conn, kind) {
        Ok(c) => c,
        Err(e) => return fail(e.status, "authentication_error", e.code, &e.message),
    };
    let session = match super::gateway::session_id(&req, &caller) {
        Ok(s) => s,
        Err(e) => return fail(e.status, "invalid_request_error", e.code, &e.message),
    };
    let headers = req.headers().clone();
    let body = match http::read_body(
        req,
        app.config.server.max_body_bytes,
        app.config.server.body_timeout,
    )
    .await
    {
        Ok(b) => b,
        Err(e) => return fail(e.status, "invalid_request_error", e.code, &e.message),
    };
    app.llm
        .handle(llm::Incoming {
            caller,
            session,
            upstream,
            rest,
            headers: &headers,
            body,
        })
        .await
}

/// The agent's key from `Authorization: Bearer` or, for Anthropic SDKs, `x-api-key`.
fn caller(
    app: &App,
    req: &Request<Incoming>,
    conn: &Conn,
    kind: Option<ProviderKind>,
) -> Result<crate::gate::identity::Caller, HttpError> {
    let mut key = http::bearer(req)?;
    if key.is_none()
        && kind != Some(ProviderKind::Openai)
        && let Some(v) = req.headers().get("x-api-key")
    {
        let v = v
            .to_str()
            .map_err(|_| HttpError::unauthorized("the x-api-key header is not ASCII"))?;
        key = Some(v.trim()).filter(|k| !k.is_empty());
    }
    app.identities
        .agent(key, conn.cert.as_ref())
        .map_err(|e| HttpError::unauthorized(e.to_string()))
}
