//! The egress front end: a forward proxy that decides every outbound request.
//!
//! * **Absolute-form** (`GET http://host/path`): one `http_request` Action per request, with
//!   method, path and the body scanned for secrets; forwarded over a fresh connection to the
//!   checked address.
//! * **CONNECT**: one Action for the tunnel (host and port). The proxy then reads what the
//!   client sends first: a TLS ClientHello is passed through when its server name matches the
//!   target; plain HTTP is served request by request, each one decided again with its `Host`
//!   held to the CONNECT target; anything else is refused.
//!
//! Names are resolved here, once: the whole answer is decided (the policy sees every address
//! and the most sensitive class), and the connection goes to exactly those addresses, so a
//! resolver that changes its answer (DNS rebinding) changes nothing. A request that would come
//! back to this process's own listeners is refused before anything is decided.
//!
//! Every refusal, the front end's own included, is a decided action with its one audit record.

pub mod intercept;
mod io;
pub mod sniff;

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use bytes::{Bytes, BytesMut};
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use hyper::header::{self, HeaderMap, HeaderName, HeaderValue};
use hyper::{Method, Request, Response, StatusCode, Uri};
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::action::{Action, HttpFacet, Kind, Outcome, VERSION, Via};
use crate::config::EgressConfig;
use crate::gate::identity::Caller;
use crate::gate::{Gate, Pending};
use crate::normalize::net::{self, Target};
use crate::server::deadline::WriteDeadline;
use io::{Activity, Pass, Tunneled};
use sniff::Sniff;

/// The error of a proxied body: the upstream's, passed on so the client connection is cut
/// rather than a short body looking complete.
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;
/// Every egress response body.
pub type ProxyBody = BoxBody<Bytes, BoxError>;

/// Rule ids of the refusals this front end makes on its own authority.
pub mod rule {
    pub const INVALID_TARGET: &str = "egress.invalid_target";
    pub const SELF_CONNECTION: &str = "egress.self_connection";
    pub const HOST_MISMATCH: &str = "egress.host_mismatch";
    pub const SNI_MISMATCH: &str = "egress.sni_mismatch";
    pub const TUNNEL_PROTOCOL: &str = "egress.tunnel_protocol";
    pub const RESOLVE_FAILED: &str = "egress.resolve_failed";
    pub const USE_CONNECT: &str = "egress.use_connect";
    pub const BODY_TOO_LARGE: &str = "egress.body_too_large";
    pub const UPGRADE: &str = "egress.upgrade";
    pub const UPSTREAM_CERTIFICATE: &str = "egress.upstream_certificate";
}

/// Who is asking: the agent from the proxy credentials, and its session.
#[derive(Clone)]
pub struct Client {
    pub caller: Caller,
    pub session: String,
}

/// A request that ends here: what the client is told.
#[derive(Debug)]
pub struct Refusal {
    pub status: StatusCode,
    pub code: String,
    pub message: String,
    pub action_id: Option<String>,
}

impl Refusal {
    /// A refusal that is not an action (a malformed proxy request, missing credentials).
    pub fn plain(status: StatusCode, code: &str, message: impl Into<String>) -> Refusal {
        Refusal::new(status, code, message)
    }

    fn new(status: StatusCode, code: &str, message: impl Into<String>) -> Refusal {
        Refusal {
            status,
            code: code.to_string(),
            message: message.into(),
            action_id: None,
        }
    }

    /// The response: the gateway's JSON error shape, and the deciding rule in a header so a
    /// client that only shows headers (a failed CONNECT) still says why.
    pub fn response(&self) -> Response<ProxyBody> {
        let body = serde_json::json!({
            "error": {"code": self.code, "message": self.message, "action_id": self.action_id}
        });
        let mut r = Response::new(full(format!("{body}\n")));
        *r.status_mut() = self.status;
        let h = r.headers_mut();
        h.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        );
        if let Ok(v) = HeaderValue::from_str(&self.code) {
            h.insert("x-portcullis-rule", v);
        }
        if let Some(v) = self
            .action_id
            .as_deref()
            .and_then(|id| HeaderValue::from_str(id).ok())
        {
            h.insert("x-portcullis-action", v);
        }
        r
    }
}

pub fn full(b: impl Into<Bytes>) -> ProxyBody {
    Full::new(b.into()).map_err(|never| match never {}).boxed()
}

/// The forward proxy around one Gate.
pub struct Egress {
    gate: Arc<Gate>,
    cfg: EgressConfig,
    /// Ports this process listens on: a request to one of them on a local address would
    /// loop back into portcullis.
    own_ports: Vec<u16>,
    /// TLS interception, when `[egress] intercept` names hosts.
    interceptor: Option<intercept::Interceptor>,
    /// Open tunnels (`server.max_connections` of them at most).
    tunnels: Arc<tokio::sync::Semaphore>,
}

/// Where a request may go, once decided: the target and the addresses that were checked.
struct Checked {
    ips: Vec<IpAddr>,
}

impl Egress {
    pub fn new(
        gate: Arc<Gate>,
        cfg: EgressConfig,
        own: &[SocketAddr],
        max_tunnels: usize,
    ) -> Result<Egress, String> {
        let mut own_ports: Vec<u16> = own.iter().map(SocketAddr::port).collect();
        own_ports.sort_unstable();
        own_ports.dedup();
        let interceptor = cfg
            .intercept
            .as_ref()
            .map(intercept::Interceptor::new)
            .transpose()?;
        Ok(Egress {
            gate,
            cfg,
            own_ports,
            interceptor,
            tunnels: Arc::new(tokio::sync::Semaphore::new(max_tunnels)),
        })
    }

    /// One proxy request: CONNECT, or an absolute-form request.
    pub async fn handle(
        self: &Arc<Self>,
        who: Client,
        req: Request<Incoming>,
    ) -> Response<ProxyBody> {
        let r = if req.method() == Method::CONNECT {
            self.connect(who, req).await
        } else {
            self.forward(who, req).await
        };
        r.unwrap_or_else(|refusal| refusal.response())
    }

    // === CONNECT ===

    async fn connect(
        self: &Arc<Self>,
        who: Client,
        req: Request<Incoming>,
    ) -> Result<Response<ProxyBody>, Refusal> {
        let Some(auth) = req.uri().authority().cloned() else {
            return Err(Refusal::new(
                StatusCode::BAD_REQUEST,
                "bad_request",
                "CONNECT needs host:port as its target",
            ));
        };
        // Userinfo has no place in a CONNECT target, and the parser would drop it silently.
        if auth.as_str().contains('@') {
            let facet = HttpFacet {
                method: "CONNECT".into(),
                // Only the host: the user information may be a password.
                host: auth.host().to_string(),
                port: auth.port_u16().unwrap_or(0),
                ..HttpFacet::default()
            };
            return Err(self
                .refuse(
                    &who,
                    facet,
                    StatusCode::BAD_REQUEST,
                    rule::INVALID_TARGET,
                    "a CONNECT target is host:port, without user information".into(),
                )
                .await);
        }
        let raw_host = auth.host().trim_start_matches('[').trim_end_matches(']');
        let Some(port) = auth.port_u16() else {
            return Err(Refusal::new(
                StatusCode::BAD_REQUEST,
                "bad_request",
                format!("CONNECT {auth}: the target needs a port"),
            ));
        };
        let facet = HttpFacet {
            method: "CONNECT".into(),
            host: raw_host.to_string(),
            port,
            ..HttpFacet::default()
        };
        let target = match net::parse_authority(raw_host, port) {
            Ok(t) => t,
            Err(e) => {
                return Err(self
                    .refuse(
                        &who,
                        facet,
                        StatusCode::BAD_REQUEST,
                        rule::INVALID_TARGET,
                        e.to_string(),
                    )
                    .await);
            }
        };
        let checked = self.check(&who, facet, &target).await?;
        // Tunnels outlive their CONNECT request (and the listener's connection slot).
        let Ok(permit) = self.tunnels.clone().try_acquire_owned() else {
            return Err(Refusal::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "too_many_tunnels",
                "every tunnel slot is in use; retry later",
            ));
        };
        let upstream = self.dial(&checked.ips, target.port).await?;
        let egress = self.clone();
        tokio::spawn(async move {
            let _permit = permit;
            match hyper::upgrade::on(req).await {
                Ok(up) => egress.tunnel(who, target, up, upstream).await,
                Err(e) => tracing::debug!(error = %e, "CONNECT upgrade failed"),
            }
        });
        Ok(Response::new(full(Bytes::new())))
    }

    /// Serve an established tunnel: look at the client's first bytes, then pass TLS through or
    /// decide plain HTTP request by request.
    async fn tunnel(
        self: Arc<Self>,
        who: Client,
        target: Target,
        up: hyper::upgrade::Upgraded,
        upstream: TcpStream,
    ) {
        // On a plain listener the tunnel is the accepted socket itself: copy between sockets.
        // The listener's write deadline is unwrapped with it; a tunnel has its own limit instead
        // (egress idle_timeout_ms: nothing moved either way).
        match up.downcast::<TokioIo<WriteDeadline<TcpStream>>>() {
            Ok(parts) => {
                let client = parts.io.into_inner().into_inner();
                self.tunnel_io(who, target, client, parts.read_buf, upstream)
                    .await;
            }
            Err(up) => match up.downcast::<TokioIo<WriteDeadline<tokio::net::UnixStream>>>() {
                Ok(parts) => {
                    let client = parts.io.into_inner().into_inner();
                    self.tunnel_io(who, target, client, parts.read_buf, upstream)
                        .await;
                }
                Err(up) => {
                    self.tunnel_io(who, target, TokioIo::new(up), Bytes::new(), upstream)
                        .await;
                }
            },
        }
    }

    async fn tunnel_io<C>(
        self: Arc<Self>,
        who: Client,
        target: Target,
        mut client: C,
        read: Bytes,
        mut upstream: TcpStream,
    ) where
        C: Pass,
    {
        let mut buf = BytesMut::from(&read[..]);
        let verdict = tokio::time::timeout(self.cfg.sniff_timeout, async {
            loop {
                match sniff::classify(&buf) {
                    Sniff::NeedMore if buf.len() < sniff::MAX_HELLO => {}
                    Sniff::NeedMore => return Some(Sniff::Other("the first message is too long")),
                    s => return Some(s),
                }
                buf.reserve(4096);
                match client.read_buf(&mut buf).await {
                    Ok(0) | Err(_) => return None,
                    Ok(_) => {}
                }
            }
        })
        .await;
        let verdict = match verdict {
            Ok(Some(v)) => v,
            // The client left, or sent nothing: nothing was attempted.
            Ok(None) | Err(_) => return,
        };
        let facet = || HttpFacet {
            method: "CONNECT".into(),
            host: target.host.clone(),
            port: target.port,
            ..HttpFacet::default()
        };
        match verdict {
            Sniff::Tls { sni } => {
                // What was decided is the target: a hello for another name is another
                // destination (for an address target, any name: the name was never decided).
                if let Some(sni) = sni.filter(|s| *s != target.host) {
                    let _ = self
                        .refuse(
                            &who,
                            facet(),
                            StatusCode::FORBIDDEN,
                            rule::SNI_MISMATCH,
                            format!(
                                "the TLS server name {sni:?} is not the CONNECT target {:?}",
                                target.host
                            ),
                        )
                        .await;
                    return;
                }
                let intercepted = target.ip.is_none()
                    && self
                        .interceptor
                        .as_ref()
                        .is_some_and(|i| i.matches(&target.host));
                if intercepted {
                    let client = Tunneled::new(client, buf.freeze(), None);
                    self.intercept(who, target, client, upstream).await;
                    return;
                }
                if upstream.write_all(&buf).await.is_err() {
                    return;
                }
                let activity = Activity::new();
                tokio::select! {
                    _ = client.pass(upstream, activity.clone()) => {}
                    _ = activity.idle(self.cfg.idle_timeout) => {
                        tracing::debug!(host = %target.host, "tunnel idle; closed");
                    }
                }
            }
            Sniff::Http => {
                let io = TokioIo::new(Tunneled::new(client, buf.freeze(), None));
                let Ok(peer) = upstream.peer_addr() else {
                    return;
                };
                self.serve_tunnel_http(who, target, io, upstream, peer.ip(), "http")
                    .await;
            }
            Sniff::Other(why) => {
                let _ = self
                    .refuse(
                        &who,
                        facet(),
                        StatusCode::FORBIDDEN,
                        rule::TUNNEL_PROTOCOL,
                        format!(
                            "the tunnel to {}:{} carries {why}",
                            target.host, target.port
                        ),
                    )
                    .await;
            }
            Sniff::NeedMore => {}
        }
    }

    /// An intercepted tunnel: TLS to the upstream (verified), TLS to the client with a minted
    /// certificate for the target, then HTTP request by request as for plain HTTP.
    async fn intercept<C>(
        self: Arc<Self>,
        who: Client,
        target: Target,
        client: Tunneled<C>,
        upstream: TcpStream,
    ) where
        C: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    {
        let facet = HttpFacet {
            method: "CONNECT".into(),
            host: target.host.clone(),
            port: target.port,
            ..HttpFacet::default()
        };
        let Some(i) = self.interceptor.as_ref() else {
            return;
        };
        let (Ok(server), Ok(name), Ok(peer)) = (
            i.server_config(&target.host),
            intercept::Interceptor::server_name(&target.host),
            upstream.peer_addr(),
        ) else {
            tracing::warn!(host = %target.host, "cannot intercept: no certificate or server name");
            return;
        };
        let handshake = tokio::time::timeout(
            self.cfg.connect_timeout,
            i.connector().connect(name, upstream),
        );
        let upstream = match handshake.await.unwrap_or_else(|_| {
            Err(std::io::Error::new(
                std::io::ErrorKind::TimedOut,
                "the TLS handshake timed out",
            ))
        }) {
            Ok(u) => u,
            Err(e) => {
                let _ = self
                    .refuse(
                        &who,
                        facet,
                        StatusCode::BAD_GATEWAY,
                        rule::UPSTREAM_CERTIFICATE,
                        format!("TLS to {}:{} failed: {e}", target.host, target.port),
                    )
                    .await;
                return;
            }
        };
        let accept = tokio::time::timeout(
            self.cfg.sniff_timeout,
            tokio_rustls::TlsAcceptor::from(server).accept(client),
        );
        let client = match accept.await.unwrap_or_else(|_| {
            Err(std::io::Error::new(
                std::io::ErrorKind::TimedOut,
                "the TLS handshake timed out",
            ))
        }) {
            Ok(c) => c,
            Err(e) => {
                tracing::debug!(host = %target.host, error = %e, "the client refused the interception certificate");
                return;
            }
        };
        self.serve_tunnel_http(
            who,
            target,
            TokioIo::new(client),
            upstream,
            peer.ip(),
            "https",
        )
        .await;
    }

    /// Plain HTTP inside a tunnel: each request is decided with its method and path, its
    /// `Host` must be the CONNECT target, and it goes over the one connection already made to
    /// the checked address.
    async fn serve_tunnel_http<I, U>(
        self: Arc<Self>,
        who: Client,
        target: Target,
        io: TokioIo<I>,
        upstream: U,
        ip: IpAddr,
        scheme: &'static str,
    ) where
        I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
        U: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    {
        let Ok((send, conn)) =
            hyper::client::conn::http1::handshake::<_, Full<Bytes>>(TokioIo::new(upstream)).await
        else {
            return;
        };
        tokio::spawn(async move {
            let _ = conn.await;
        });
        let send = Arc::new(tokio::sync::Mutex::new(send));
        let egress = self.clone();
        let svc = hyper::service::service_fn(move |req: Request<Incoming>| {
            let egress = egress.clone();
            let who = who.clone();
            let target = target.clone();
            let send = send.clone();
            async move {
                let r = egress
                    .tunnel_request(&who, &target, scheme, ip, req, &send)
                    .await;
                Ok::<_, std::convert::Infallible>(r.unwrap_or_else(|e| e.response()))
            }
        });
        let mut http = hyper::server::conn::http1::Builder::new();
        http.timer(hyper_util::rt::TokioTimer::new())
            .header_read_timeout(self.cfg.sniff_timeout)
            .max_headers(100)
            .max_buf_size(64 << 10);
        let _ = http.serve_connection(io, svc).await;
    }

    async fn tunnel_request(
        &self,
        who: &Client,
        target: &Target,
        scheme: &str,
        ip: IpAddr,
        req: Request<Incoming>,
        send: &tokio::sync::Mutex<hyper::client::conn::http1::SendRequest<Full<Bytes>>>,
    ) -> Result<Response<ProxyBody>, Refusal> {
        let path = req
            .uri()
            .path_and_query()
            .map(|p| p.as_str().to_string())
            .unwrap_or_default();
        let default = if scheme == "https" { 443 } else { 80 };
        let shown = format!(
            "{scheme}://{}{path}",
            authority(&target.host, target.port, default)
        );
        let mut facet = HttpFacet {
            url: shown.clone(),
            method: req.method().as_str().to_string(),
            ..HttpFacet::default()
        };
        if req.uri().authority().is_some() || !path.starts_with('/') {
            return Err(self
                .refuse(
                    who,
                    facet,
                    StatusCode::BAD_REQUEST,
                    rule::INVALID_TARGET,
                    // Not the URI itself: it may carry a password.
                    "inside a tunnel a request names only its path (origin form)".into(),
                )
                .await);
        }
        let url_target = match net::parse_url(&shown) {
            Ok(t) => t,
            Err(e) => {
                return Err(self
                    .refuse(
                        who,
                        facet,
                        StatusCode::BAD_REQUEST,
                        rule::INVALID_TARGET,
                        e.to_string(),
                    )
                    .await);
            }
        };
        if let Err(m) = host_matches(req.headers(), target, default) {
            return Err(self
                .refuse(who, facet, StatusCode::FORBIDDEN, rule::HOST_MISMATCH, m)
                .await);
        }
        if req.headers().contains_key(header::UPGRADE) {
            // Not carried (yet): refused rather than stripped, so the client knows.
            return Err(self
                .refuse(
                    who,
                    facet,
                    StatusCode::BAD_REQUEST,
                    rule::UPGRADE,
                    "protocol upgrades inside a decided tunnel are not carried".into(),
                )
                .await);
        }
        let (parts, body) = req.into_parts();
        facet.headers = Some(visible_headers(&parts.headers));
        let body = match self.read_body(body).await {
            Ok(b) => b,
            Err(m) => {
                return Err(self
                    .refuse(
                        who,
                        facet,
                        StatusCode::PAYLOAD_TOO_LARGE,
                        rule::BODY_TOO_LARGE,
                        m,
                    )
                    .await);
            }
        };
        facet.body = Some(body.clone());
        // The connection is already made: the address it goes to is the one decided.
        self.decide(who, facet, &url_target, vec![ip]).await?;
        let out = outbound(&parts.method, &url_target, &parts.headers, body, default)?;
        let mut send = send.lock().await;
        send.ready().await.map_err(|e| upstream_failed(&e))?;
        let resp = self.response_head(send.send_request(out)).await?;
        Ok(inbound(resp))
    }

    // === absolute-form ===

    async fn forward(
        &self,
        who: Client,
        req: Request<Incoming>,
    ) -> Result<Response<ProxyBody>, Refusal> {
        if req.uri().scheme().is_none() || req.uri().authority().is_none() {
            return Err(Refusal::new(
                StatusCode::BAD_REQUEST,
                "bad_request",
                format!(
                    "{} {}: a proxy request names an absolute URL (http://host/path), or use CONNECT",
                    req.method(),
                    req.uri()
                ),
            ));
        }
        if let Some(auth) = req.uri().authority().filter(|a| a.as_str().contains('@')) {
            // The user information may be a password: it is neither recorded nor forwarded.
            let facet = HttpFacet {
                method: req.method().as_str().to_string(),
                host: auth.host().to_string(),
                port: auth.port_u16().unwrap_or(80),
                ..HttpFacet::default()
            };
            return Err(self
                .refuse(
                    &who,
                    facet,
                    StatusCode::BAD_REQUEST,
                    rule::INVALID_TARGET,
                    "a proxied URL must not carry user information; send credentials in headers"
                        .into(),
                )
                .await);
        }
        let url = req.uri().to_string();
        let mut facet = HttpFacet {
            url: url.clone(),
            method: req.method().as_str().to_string(),
            ..HttpFacet::default()
        };
        let target = match net::parse_url(&url) {
            Ok(t) => t,
            Err(e) => {
                return Err(self
                    .refuse(
                        &who,
                        facet,
                        StatusCode::BAD_REQUEST,
                        rule::INVALID_TARGET,
                        e.to_string(),
                    )
                    .await);
            }
        };
        if matches!(target.scheme.as_str(), "https" | "wss" | "ws") {
            return Err(self
                .refuse(
                    &who,
                    facet,
                    StatusCode::BAD_REQUEST,
                    rule::USE_CONNECT,
                    format!(
                        "{} requests go through a CONNECT tunnel, not as {url}",
                        target.scheme
                    ),
                )
                .await);
        }
        if req.headers().contains_key(header::UPGRADE) {
            return Err(self
                .refuse(
                    &who,
                    facet,
                    StatusCode::BAD_REQUEST,
                    rule::UPGRADE,
                    "protocol upgrades go through a CONNECT tunnel".into(),
                )
                .await);
        }
        if target.scheme == "http"
            && let Err(m) = host_matches(req.headers(), &target, 80)
        {
            return Err(self
                .refuse(&who, facet, StatusCode::FORBIDDEN, rule::HOST_MISMATCH, m)
                .await);
        }
        let (parts, body) = req.into_parts();
        facet.headers = Some(visible_headers(&parts.headers));
        let body = match self.read_body(body).await {
            Ok(b) => b,
            Err(m) => {
                return Err(self
                    .refuse(
                        &who,
                        facet,
                        StatusCode::PAYLOAD_TOO_LARGE,
                        rule::BODY_TOO_LARGE,
                        m,
                    )
                    .await);
            }
        };
        facet.body = Some(body.clone());
        // A scheme the proxy does not speak (ftp) is still decided: the policy denies it.
        let checked = self.check(&who, facet, &target).await?;
        if target.scheme != "http" {
            return Err(Refusal::new(
                StatusCode::NOT_IMPLEMENTED,
                "unsupported_scheme",
                format!("the proxy does not speak {}", target.scheme),
            ));
        }
        let stream = self.dial(&checked.ips, target.port).await?;
        let (mut send, conn) =
            hyper::client::conn::http1::handshake::<_, Full<Bytes>>(TokioIo::new(stream))
                .await
                .map_err(|e| upstream_failed(&e))?;
        tokio::spawn(async move {
            let _ = conn.await;
        });
        let out = outbound(&parts.method, &target, &parts.headers, body, 80)?;
        let resp = self.response_head(send.send_request(out)).await?;
        Ok(inbound(resp))
    }

    /// The upstream's response head, within the idle timeout.
    async fn response_head(
        &self,
        sent: impl std::future::Future<Output = Result<Response<Incoming>, hyper::Error>>,
    ) -> Result<Response<Incoming>, Refusal> {
        match tokio::time::timeout(self.cfg.idle_timeout, sent).await {
            Ok(r) => r.map_err(|e| upstream_failed(&e)),
            Err(_) => Err(Refusal::new(
                StatusCode::GATEWAY_TIMEOUT,
                "upstream_timeout",
                format!(
                    "no response head within {} ms",
                    self.cfg.idle_timeout.as_millis()
                ),
            )),
        }
    }

    async fn read_body(&self, body: Incoming) -> Result<Bytes, String> {
        let max = self.cfg.max_body_bytes;
        match tokio::time::timeout(self.cfg.idle_timeout, Limited::new(body, max).collect()).await {
            Ok(Ok(b)) => Ok(b.to_bytes()),
            Ok(Err(e)) if e.is::<http_body_util::LengthLimitError>() => Err(format!(
                "the request body is over egress.max_body_bytes ({max})"
            )),
            Ok(Err(e)) => Err(format!("the request body could not be read: {e}")),
            Err(_) => Err("the request body did not arrive in time".into()),
        }
    }

    // === the one decision path ===

    /// Resolve the target, refuse a loop back into this process, and decide. Returns the
    /// addresses that were checked: the only ones to connect to.
    async fn check(
        &self,
        who: &Client,
        facet: HttpFacet,
        target: &Target,
    ) -> Result<Checked, Refusal> {
        let ips = match target.ip {
            Some(ip) => vec![ip],
            None => match self.resolve(&target.host, target.port).await {
                Ok(ips) => ips,
                Err(m) => {
                    // Decided on the name alone, so a denied name says why it is denied; an
                    // allowed one still goes nowhere.
                    self.decide(who, facet, target, Vec::new()).await?;
                    return Err(Refusal::new(
                        StatusCode::BAD_GATEWAY,
                        rule::RESOLVE_FAILED,
                        m,
                    ));
                }
            },
        };
        self.decide(who, facet, target, ips.clone()).await?;
        Ok(Checked { ips })
    }

    async fn decide(
        &self,
        who: &Client,
        mut facet: HttpFacet,
        target: &Target,
        ips: Vec<IpAddr>,
    ) -> Result<(), Refusal> {
        if let Some(ip) = ips.iter().find(|ip| self.is_self(**ip, target.port)) {
            return Err(self
                .refuse(
                    who,
                    facet,
                    StatusCode::FORBIDDEN,
                    rule::SELF_CONNECTION,
                    format!(
                        "{}:{} ({ip}) is this proxy itself",
                        target.host, target.port
                    ),
                )
                .await);
        }
        facet.resolved = Some(ips);
        let action = action(facet);
        let pending = match self
            .gate
            .decide_for(&who.caller, &who.session, action.clone())
        {
            Ok(p) => p,
            Err(e) => {
                let mut http = action.http.unwrap_or_default();
                http.resolved = None;
                return Err(self
                    .refuse(
                        who,
                        http,
                        StatusCode::BAD_REQUEST,
                        rule::INVALID_TARGET,
                        e.to_string(),
                    )
                    .await);
            }
        };
        let concluded = self.gate.conclude(pending).await;
        let d = concluded.decision;
        if d.outcome == Outcome::Allow {
            return Ok(());
        }
        let (code, message) = d
            .reasons
            .first()
            .map(|r| (r.rule.clone(), r.message.clone()))
            .unwrap_or_else(|| ("denied".into(), "denied by policy".into()));
        let status = match code.as_str() {
            crate::action::reason::RATE_LIMITED => StatusCode::TOO_MANY_REQUESTS,
            crate::action::reason::AUDIT_UNAVAILABLE => StatusCode::SERVICE_UNAVAILABLE,
            _ => StatusCode::FORBIDDEN,
        };
        Err(Refusal {
            status,
            code,
            message,
            action_id: Some(concluded.action_id),
        })
    }

    /// Record a refusal made here (no policy runs) and say it to the client.
    async fn refuse(
        &self,
        who: &Client,
        facet: HttpFacet,
        status: StatusCode,
        code: &str,
        message: String,
    ) -> Refusal {
        let pending: Pending = self.gate.refuse_for(
            &who.caller,
            &who.session,
            action(facet),
            code,
            message.clone(),
        );
        let concluded = self.gate.conclude(pending).await;
        // An audit failure is still a refusal; say which.
        let (code, message) = match concluded.decision.reasons.first() {
            Some(r) if r.rule == crate::action::reason::AUDIT_UNAVAILABLE => {
                (r.rule.clone(), r.message.clone())
            }
            _ => (code.to_string(), message),
        };
        Refusal {
            status,
            code,
            message,
            action_id: Some(concluded.action_id),
        }
    }

    // === the network ===

    /// The static override, else the system resolver (once; the answer is what gets checked).
    async fn resolve(&self, host: &str, port: u16) -> Result<Vec<IpAddr>, String> {
        if let Some(ips) = self.cfg.hosts.get(host) {
            return Ok(ips.clone());
        }
        let lookup = tokio::net::lookup_host((host, port));
        let addrs = match tokio::time::timeout(self.cfg.resolve_timeout, lookup).await {
            Ok(Ok(a)) => a,
            Ok(Err(e)) => return Err(format!("cannot resolve {host}: {e}")),
            Err(_) => {
                return Err(format!(
                    "resolving {host} took over {} ms",
                    self.cfg.resolve_timeout.as_millis()
                ));
            }
        };
        let mut ips: Vec<IpAddr> = Vec::new();
        for a in addrs {
            if !ips.contains(&a.ip()) {
                ips.push(a.ip());
            }
        }
        if ips.is_empty() {
            return Err(format!("{host} has no addresses"));
        }
        Ok(ips)
    }

    /// Whether `ip:port` is one of this process's listeners.
    fn is_self(&self, ip: IpAddr, port: u16) -> bool {
        if self.own_ports.binary_search(&port).is_err() {
            return false;
        }
        let mut candidates = vec![ip];
        if let IpAddr::V6(v6) = ip {
            candidates.extend(net::embedded_ipv4(v6).into_iter().map(IpAddr::V4));
        }
        candidates.into_iter().any(is_local)
    }

    /// Connect to the checked addresses in order, within one deadline.
    async fn dial(&self, ips: &[IpAddr], port: u16) -> Result<TcpStream, Refusal> {
        let attempt = async {
            let mut last = String::from("no address");
            for ip in ips {
                match TcpStream::connect((*ip, port)).await {
                    Ok(s) => {
                        let _ = s.set_nodelay(true);
                        return Ok(s);
                    }
                    Err(e) => last = format!("{ip}:{port}: {e}"),
                }
            }
            Err(last)
        };
        match tokio::time::timeout(self.cfg.connect_timeout, attempt).await {
            Ok(Ok(s)) => Ok(s),
            Ok(Err(e)) => Err(Refusal::new(
                StatusCode::BAD_GATEWAY,
                "upstream_unreachable",
                format!("cannot connect to {e}"),
            )),
            Err(_) => Err(Refusal::new(
                StatusCode::GATEWAY_TIMEOUT,
                "upstream_timeout",
                format!(
                    "no connection within {} ms",
                    self.cfg.connect_timeout.as_millis()
                ),
            )),
        }
    }
}

/// An address of this host: loopback, unspecified (which reaches the host), or one the kernel
/// would use as its own source address for it (an interface address).
fn is_local(ip: IpAddr) -> bool {
    if ip.is_loopback() || ip.is_unspecified() {
        return true;
    }
    let bind: SocketAddr = match ip {
        IpAddr::V4(_) => (std::net::Ipv4Addr::UNSPECIFIED, 0).into(),
        IpAddr::V6(_) => (std::net::Ipv6Addr::UNSPECIFIED, 0).into(),
    };
    // A UDP connect sends nothing; it only asks the routing table for the source address.
    std::net::UdpSocket::bind(bind)
        .and_then(|s| {
            s.connect((ip, 9))?;
            s.local_addr()
        })
        .map(|local| local.ip() == ip)
        // Unknown is treated as local: refusing a request beats looping into the proxy.
        .unwrap_or(true)
}

fn action(http: HttpFacet) -> Action {
    Action {
        version: VERSION.to_string(),
        id: String::new(),
        kind: Kind::HttpRequest,
        via: Via::Egress,
        agent: None,
        session: None,
        tool: None,
        file: None,
        exec: None,
        http: Some(http),
        content: None,
        model: None,
    }
}

/// `host` or `host:port` (IPv6 bracketed), leaving out the scheme's default port.
fn authority(host: &str, port: u16, default: u16) -> String {
    let h = if host.contains(':') {
        format!("[{host}]")
    } else {
        host.to_string()
    };
    if port == default {
        h
    } else {
        format!("{h}:{port}")
    }
}

/// The `Host` header, when present, must name the target (an absent one is filled in).
fn host_matches(headers: &HeaderMap, target: &Target, default: u16) -> Result<(), String> {
    let mut values = headers.get_all(header::HOST).iter();
    let Some(v) = values.next() else {
        return Ok(());
    };
    if values.next().is_some() {
        return Err("the request has more than one Host header".into());
    }
    let s = v
        .to_str()
        .map_err(|_| "the Host header is not ASCII".to_string())?;
    let (h, p) =
        split_host_port(s).ok_or_else(|| format!("the Host header {s:?} is not host[:port]"))?;
    let named = net::parse_authority(h, p.unwrap_or(default))
        .map_err(|e| format!("the Host header {s:?}: {e}"))?;
    if named.host != target.host || named.port != target.port {
        return Err(format!(
            "the Host header names {}:{} but the request goes to {}:{}",
            named.host, named.port, target.host, target.port
        ));
    }
    Ok(())
}

fn split_host_port(s: &str) -> Option<(&str, Option<u16>)> {
    if let Some(rest) = s.strip_prefix('[') {
        let (h, tail) = rest.split_once(']')?;
        return match tail {
            "" => Some((h, None)),
            t => Some((h, Some(t.strip_prefix(':')?.parse().ok()?))),
        };
    }
    match s.rsplit_once(':') {
        Some((h, p)) if !h.contains(':') => Some((h, Some(p.parse().ok()?))),
        Some(_) => None,
        None => Some((s, None)),
    }
}

/// Hop-by-hop headers (RFC 9110 §7.6.1) and the proxy's own credentials never go upstream.
fn strip_hop_by_hop(headers: &mut HeaderMap) {
    let listed: Vec<HeaderName> = headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|n| HeaderName::from_bytes(n.trim().as_bytes()).ok())
        .collect();
    for n in listed {
        headers.remove(n);
    }
    for n in [
        header::CONNECTION,
        header::PROXY_AUTHORIZATION,
        header::PROXY_AUTHENTICATE,
        header::TE,
        header::TRAILER,
        header::TRANSFER_ENCODING,
        header::UPGRADE,
        HeaderName::from_static("keep-alive"),
        HeaderName::from_static("proxy-connection"),
    ] {
        headers.remove(n);
    }
}

/// The headers that will go upstream, for the secret scan.
fn visible_headers(headers: &HeaderMap) -> Vec<(String, String)> {
    let mut h = headers.clone();
    strip_hop_by_hop(&mut h);
    h.iter()
        .map(|(n, v)| {
            (
                n.as_str().to_string(),
                String::from_utf8_lossy(v.as_bytes()).into_owned(),
            )
        })
        .collect()
}

/// The request as it goes upstream: the decided path, the target's `Host`, the held body.
fn outbound(
    method: &Method,
    target: &Target,
    headers: &HeaderMap,
    body: Bytes,
    default_port: u16,
) -> Result<Request<Full<Bytes>>, Refusal> {
    let path = if target.path.is_empty() {
        "/"
    } else {
        &target.path
    };
    let uri: Uri = path.parse().map_err(|_| {
        Refusal::new(
            StatusCode::BAD_REQUEST,
            "bad_request",
            format!("the path {path:?} cannot be sent"),
        )
    })?;
    let mut out = Request::new(Full::new(body));
    *out.method_mut() = method.clone();
    *out.uri_mut() = uri;
    let mut h = headers.clone();
    strip_hop_by_hop(&mut h);
    let host = HeaderValue::from_str(&authority(&target.host, target.port, default_port)).map_err(
        |_| {
            Refusal::new(
                StatusCode::BAD_REQUEST,
                "bad_request",
                "the host cannot be sent",
            )
        },
    )?;
    h.insert(header::HOST, host);
    *out.headers_mut() = h;
    Ok(out)
}

/// The upstream's response as the client gets it.
fn inbound(resp: Response<Incoming>) -> Response<ProxyBody> {
    let (mut parts, body) = resp.into_parts();
    strip_hop_by_hop(&mut parts.headers);
    Response::from_parts(parts, body.map_err(|e| Box::new(e) as BoxError).boxed())
}

fn upstream_failed(e: &hyper::Error) -> Refusal {
    Refusal::new(
        StatusCode::BAD_GATEWAY,
        "upstream_error",
        format!("the upstream connection failed: {e}"),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_header_must_name_the_target() {
        let t = net::parse_authority("example.com", 80).unwrap();
        let mut h = HeaderMap::new();
        assert!(host_matches(&h, &t, 80).is_ok());
        for ok in ["example.com", "EXAMPLE.com.", "example.com:80"] {
            h.insert(header::HOST, HeaderValue::from_static(ok));
            assert!(host_matches(&h, &t, 80).is_ok(), "{ok}");
        }
        for bad in [
            "evil.com",
            "example.com:8080",
            "example.com:x",
            "[::1]",
            "a:b:c",
        ] {
            h.insert(header::HOST, HeaderValue::from_static(bad));
            assert!(host_matches(&h, &t, 80).is_err(), "{bad}");
        }
        h.insert(header::HOST, HeaderValue::from_static("example.com"));
        h.append(header::HOST, HeaderValue::from_static("example.com"));
        assert!(host_matches(&h, &t, 80).is_err());
        let v6 = net::parse_authority("2001:db8::1", 8080).unwrap();
        let mut h = HeaderMap::new();
        h.insert(header::HOST, HeaderValue::from_static("[2001:DB8::1]:8080"));
        assert!(host_matches(&h, &v6, 80).is_ok());
    }

    #[test]
    fn hop_by_hop_headers_and_proxy_credentials_are_not_forwarded() {
        let mut h = HeaderMap::new();
        h.insert(
            header::CONNECTION,
            HeaderValue::from_static("keep-alive, x-secret"),
        );
        h.insert("x-secret", HeaderValue::from_static("1"));
        h.insert(
            header::PROXY_AUTHORIZATION,
            HeaderValue::from_static("Basic abc"),
        );
        h.insert("proxy-connection", HeaderValue::from_static("keep-alive"));
        h.insert(header::ACCEPT, HeaderValue::from_static("*/*"));
        strip_hop_by_hop(&mut h);
        assert_eq!(h.len(), 1);
        assert!(h.contains_key(header::ACCEPT));
    }

    #[test]
    fn loopback_unspecified_and_own_addresses_are_local() {
        assert!(is_local("127.0.0.1".parse().unwrap()));
        assert!(is_local("0.0.0.0".parse().unwrap()));
        assert!(is_local("::".parse().unwrap()));
        assert!(!is_local("203.0.113.77".parse().unwrap()));
    }
}
