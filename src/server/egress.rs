//! The egress listener: proxy clients authenticate with `Proxy-Authorization` (Basic with the
//! agent key as the password and an optional session id as the user name, as
//! `HTTP_PROXY=http://SESSION:KEY@host:port` gives it; or Bearer), then the egress front end
//! decides and carries the request.

use std::sync::Arc;

use base64::Engine;
use hyper::body::Incoming;
use hyper::header::{self, HeaderValue};
use hyper::{Request, Response, StatusCode};

use super::App;
use super::listener::Conn;
use crate::gate::identity::Caller;
use crate::proxy::egress::{Client, ProxyBody, Refusal};

pub async fn handle(app: Arc<App>, req: Request<Incoming>, conn: Arc<Conn>) -> Response<ProxyBody> {
    let Some(egress) = app.egress.clone() else {
        return Refusal::plain(StatusCode::NOT_FOUND, "no_egress", "no egress listener").response();
    };
    let who = match client(&app, &req, &conn) {
        Ok(w) => w,
        Err(m) => {
            let mut r =
                Refusal::plain(StatusCode::PROXY_AUTHENTICATION_REQUIRED, "unauthorized", m)
                    .response();
            r.headers_mut().insert(
                header::PROXY_AUTHENTICATE,
                HeaderValue::from_static("Basic realm=\"portcullis\""),
            );
            return r;
        }
    };
    egress.handle(who, req).await
}

/// The agent and session from `Proxy-Authorization`; without one, the anonymous agent if the
/// configuration has one.
fn client(app: &App, req: &Request<Incoming>, conn: &Conn) -> Result<Client, String> {
    let (user, key) = match req.headers().get(header::PROXY_AUTHORIZATION) {
        None => (None, None),
        Some(v) => {
            let v = v
                .to_str()
                .map_err(|_| "the Proxy-Authorization header is not ASCII".to_string())?;
            credentials(v)?
        }
    };
    let caller: Caller = app
        .identities
        .agent(key.as_deref(), conn.cert.as_ref())
        .map_err(|e| e.to_string())?;
    let session = match user.filter(|u| !u.is_empty()) {
        None => caller.default_session.clone(),
        Some(u) => {
            let plain = u.len() <= 128
                && u.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b':'));
            if !plain {
                return Err(
                    "the proxy user name is the session id: 1 to 128 letters, digits or `-_.:`"
                        .into(),
                );
            }
            u
        }
    };
    Ok(Client { caller, session })
}

/// `Basic base64(user:key)` or `Bearer key`.
fn credentials(v: &str) -> Result<(Option<String>, Option<String>), String> {
    let (scheme, rest) = v.trim().split_once(' ').unwrap_or((v.trim(), ""));
    let rest = rest.trim();
    if scheme.eq_ignore_ascii_case("bearer") && !rest.is_empty() {
        return Ok((None, Some(rest.to_string())));
    }
    if !scheme.eq_ignore_ascii_case("basic") {
        return Err("Proxy-Authorization must be Basic (session:key) or Bearer (key)".into());
    }
    let raw = base64::engine::general_purpose::STANDARD
        .decode(rest)
        .map_err(|_| "the Proxy-Authorization Basic credentials are not base64".to_string())?;
    let text = String::from_utf8(raw)
        .map_err(|_| "the Proxy-Authorization Basic credentials are not UTF-8".to_string())?;
    let (user, key) = text
        .split_once(':')
        .ok_or_else(|| "the Proxy-Authorization Basic credentials need user:key".to_string())?;
    let key = Some(key.to_string()).filter(|k| !k.is_empty());
    Ok((Some(user.to_string()), key))
}

/// The egress proxy of sandboxed MCP servers: one Unix socket per MCP session, reachable only
/// through that session's sandbox relay, so every connection on it is the session's (no
/// credentials are asked or read: the socket is the credential).
pub struct SessionEgress {
    pub egress: Arc<crate::proxy::egress::Egress>,
    pub limits: crate::config::ServerConfig,
    pub metrics: Arc<crate::metrics::Metrics>,
}

impl crate::proxy::mcp::SessionEgress for SessionEgress {
    fn serve(
        &self,
        path: &std::path::Path,
        caller: &Caller,
        session: &str,
    ) -> std::io::Result<Box<dyn Send>> {
        let listener = tokio::net::UnixListener::bind(path)?;
        let (stop, stopped) = tokio::sync::watch::channel(false);
        let egress = self.egress.clone();
        let who = Client {
            caller: caller.clone(),
            session: session.to_string(),
        };
        tokio::spawn(super::listener::run(
            "egress-mcp",
            super::listener::Bound::Unix(listener),
            None,
            self.limits.clone(),
            self.metrics.clone(),
            move |req, _conn| {
                let (egress, who) = (egress.clone(), who.clone());
                async move { egress.handle(who, req).await }
            },
            stopped,
        ));
        // Dropping the sender stops the listener.
        Ok(Box::new(stop))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn basic_and_bearer_credentials() {
        let b64 = |s: &str| base64::engine::general_purpose::STANDARD.encode(s);
        assert_eq!(
            credentials(&format!("Basic {}", b64("run-1:sk-1"))).unwrap(),
            (Some("run-1".into()), Some("sk-1".into()))
        );
        assert_eq!(
            credentials(&format!("basic {}", b64(":sk-1"))).unwrap(),
            (Some(String::new()), Some("sk-1".into()))
        );
        assert_eq!(
            credentials("Bearer sk-2").unwrap(),
            (None, Some("sk-2".into()))
        );
        assert!(credentials("Basic !!!").is_err());
        assert!(credentials(&format!("Basic {}", b64("nocolon"))).is_err());
        assert!(credentials("Digest x").is_err());
    }
}
