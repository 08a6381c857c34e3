//! The HTTP/1.1 client to one model provider: `http://` or `https://` (rustls, the configured CA
//! bundle or the system's), idle connections kept for the next request, and a deadline on every
//! step a provider could stall (connect, the response head, each silence in the body).

use std::sync::Mutex;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::client::conn::http1::SendRequest;
use hyper::header::{self, HeaderMap, HeaderValue};
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use rustls::pki_types::ServerName;
use tokio::net::TcpStream;

use crate::config::{LlmConfig, LlmUpstream};
use crate::sync::lock;

/// Idle connections kept per upstream.
const POOL: usize = 64;

/// Why the provider could not be reached or read.
#[derive(Debug, thiserror::Error)]
pub enum UpstreamError {
    #[error("cannot connect to the model provider: {0}")]
    Connect(String),
    #[error("the model provider did not {0} within {1} ms")]
    Timeout(&'static str, u128),
    #[error("the model provider's answer broke off: {0}")]
    Protocol(String),
    #[error("the model provider's answer is over llm.max_response_bytes ({0})")]
    TooLarge(usize),
}

impl UpstreamError {
    pub fn status(&self) -> StatusCode {
        match self {
            UpstreamError::Timeout(..) => StatusCode::GATEWAY_TIMEOUT,
            _ => StatusCode::BAD_GATEWAY,
        }
    }

    pub fn code(&self) -> &'static str {
        match self {
            UpstreamError::Connect(_) => "upstream_unreachable",
            UpstreamError::Timeout(..) => "upstream_timeout",
            UpstreamError::Protocol(_) => "upstream_error",
            UpstreamError::TooLarge(_) => "upstream_too_large",
        }
    }
}

pub struct Client {
    /// `host:port` to connect to.
    addr: String,
    /// The `Host` header.
    host: HeaderValue,
    /// The base URL's path, without a trailing `/`.
    base_path: String,
    tls: Option<(tokio_rustls::TlsConnector, ServerName<'static>)>,
    pool: Mutex<Vec<SendRequest<Full<Bytes>>>>,
    connect_timeout: Duration,
    first_byte_timeout: Duration,
}

impl Client {
    pub fn new(up: &LlmUpstream, cfg: &LlmConfig) -> Result<Client, String> {
        let url = url::Url::parse(&up.base_url).map_err(|e| e.to_string())?;
        let host = url.host_str().ok_or("no host")?.to_string();
        let port = url.port_or_known_default().ok_or("no port")?;
        let default_port = url.port().is_none();
        let host_header = if default_port {
            host.clone()
        } else {
            format!("{host}:{port}")
        };
        let tls = if url.scheme() == "https" {
            let ca = up
                .ca_file
                .clone()
                .unwrap_or_else(|| crate::ca::SYSTEM_CA.into());
            let config = crate::ca::client_config(crate::ca::roots(&ca)?)?;
            let name = ServerName::try_from(host.trim_matches(['[', ']']).to_string())
                .map_err(|e| format!("{host}: {e}"))?;
            Some((tokio_rustls::TlsConnector::from(config), name))
        } else {
            None
        };
        Ok(Client {
            addr: format!("{host}:{port}"),
            host: HeaderValue::try_from(host_header).map_err(|e| e.to_string())?,
            base_path: url.path().trim_end_matches('/').to_string(),
            tls,
            pool: Mutex::new(Vec::new()),
            connect_timeout: cfg.connect_timeout,
            first_byte_timeout: cfg.first_byte_timeout,
        })
    }

    /// POST `body` to the base URL's path + `rest`, and wait for the response head.
    pub async fn post(
        &self,
        rest: &str,
        mut headers: HeaderMap,
        body: Bytes,
    ) -> Result<Response<Incoming>, UpstreamError> {
        headers.insert(header::HOST, self.host.clone());
        headers.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        );
        headers.insert(header::CONTENT_LENGTH, HeaderValue::from(body.len()));
        let mut req = Request::new(Full::new(body));
        *req.method_mut() = Method::POST;
        *req.uri_mut() = format!("{}{rest}", self.base_path)
            .parse()
            .map_err(|e| UpstreamError::Connect(format!("{rest}: {e}")))?;
        *req.headers_mut() = headers;
        let mut sender = self.connection().await?;
        let sent = tokio::time::timeout(self.first_byte_timeout, sender.send_request(req)).await;
        let resp = match sent {
            Err(_) => {
                return Err(UpstreamError::Timeout(
                    "answer",
                    self.first_byte_timeout.as_millis(),
                ));
            }
            Ok(Err(e)) => return Err(UpstreamError::Protocol(e.to_string())),
            Ok(Ok(r)) => r,
        };
        // Ready again once this response's body is read; taken then by a later request.
        let mut pool = lock(&self.pool);
        if pool.len() >= POOL {
            pool.remove(0);
        }
        pool.push(sender);
        Ok(resp)
    }

    async fn connection(&self) -> Result<SendRequest<Full<Bytes>>, UpstreamError> {
        {
            let mut pool = lock(&self.pool);
            pool.retain(|s| !s.is_closed());
            if let Some(i) = pool.iter().rposition(SendRequest::is_ready) {
                return Ok(pool.swap_remove(i));
            }
        }
        let timeout =
            |_| UpstreamError::Timeout("accept a connection", self.connect_timeout.as_millis());
        let tcp = tokio::time::timeout(self.connect_timeout, TcpStream::connect(&self.addr))
            .await
            .map_err(timeout)?
            .map_err(|e| UpstreamError::Connect(format!("{}: {e}", self.addr)))?;
        let _ = tcp.set_nodelay(true);
        let sender = match &self.tls {
            None => handshake(TokioIo::new(tcp)).await?,
            Some((connector, name)) => {
                let tls = tokio::time::timeout(
                    self.connect_timeout,
                    connector.connect(name.clone(), tcp),
                )
                .await
                .map_err(timeout)?
                .map_err(|e| UpstreamError::Connect(format!("TLS with {}: {e}", self.addr)))?;
                handshake(TokioIo::new(tls)).await?
            }
        };
        Ok(sender)
    }
}

async fn handshake<T>(io: TokioIo<T>) -> Result<SendRequest<Full<Bytes>>, UpstreamError>
where
    T: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let (sender, conn) = hyper::client::conn::http1::handshake(io)
        .await
        .map_err(|e| UpstreamError::Connect(e.to_string()))?;
    tokio::spawn(async move {
        if let Err(e) = conn.await {
            tracing::debug!(error = %e, "model provider connection closed");
        }
    });
    Ok(sender)
}

/// Read a whole body, at most `max` bytes, with at most `idle` between pieces.
pub async fn read_all(
    mut body: Incoming,
    max: usize,
    idle: Duration,
) -> Result<Bytes, UpstreamError> {
    let mut out = bytes::BytesMut::new();
    loop {
        match tokio::time::timeout(idle, body.frame()).await {
            Err(_) => return Err(UpstreamError::Timeout("send its answer", idle.as_millis())),
            Ok(None) => return Ok(out.freeze()),
            Ok(Some(Err(e))) => return Err(UpstreamError::Protocol(e.to_string())),
            Ok(Some(Ok(f))) => {
                if let Ok(d) = f.into_data() {
                    if out.len() + d.len() > max {
                        return Err(UpstreamError::TooLarge(max));
                    }
                    out.extend_from_slice(&d);
                }
            }
        }
    }
}
