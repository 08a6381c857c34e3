//! A mock model provider: replays `tests/llm-fixtures/{model}.sse` (when the request says
//! `"stream": true`) or `{model}.json`, in the providers' own wire formats, and records what
//! it was sent. Nothing real can run here (no provider is reachable), so this is the one mock
//! of the suite; the fixtures are byte-exact provider streams.
//!
//! Request knobs, by header:
//! * `x-mock-chunk: N` — cut the stream into N-byte writes (re-chunking at arbitrary points);
//!   otherwise one write per event.
//! * `x-mock-interval-us: N` — wait N µs between writes (a model producing tokens).
//!
//! A token count (`…/count_tokens`) answers `count_tokens.json`. And by model name: `status-NNN` answers that status with an OpenAI-shaped error body;
//! `stall` never answers; `NAME@stallN` streams the first N pieces of `NAME` and then goes
//! silent (the connection stays open).

#![allow(dead_code, reason = "each test binary uses a part")]

use std::convert::Infallible;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Full};
use hyper::body::{Frame, Incoming};
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use serde_json::Value;
use tokio::net::TcpListener;

/// One request the mock received.
#[derive(Debug, Clone)]
pub struct Seen {
    pub path: String,
    pub headers: Vec<(String, String)>,
    pub body: Value,
}

impl Seen {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }
}

pub struct Mock {
    pub addr: SocketAddr,
    pub seen: Arc<Mutex<Vec<Seen>>>,
    _rt: std::thread::JoinHandle<()>,
}

pub fn fixtures() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/llm-fixtures")
}

/// Start the mock on a loopback port, on a thread of its own.
pub fn start() -> Mock {
    start_with(None)
}

/// The mock over TLS, with this certificate chain and key (PEM files).
pub fn start_tls(cert: &std::path::Path, key: &std::path::Path) -> Mock {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(cert)
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap();
    let key = PrivateKeyDer::from_pem_file(key).unwrap();
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .unwrap();
    start_with(Some(tokio_rustls::TlsAcceptor::from(Arc::new(config))))
}

fn start_with(tls: Option<tokio_rustls::TlsAcceptor>) -> Mock {
    let (tx, rx) = std::sync::mpsc::channel();
    let seen = Arc::new(Mutex::new(Vec::new()));
    let s = seen.clone();
    let rt = std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async move {
            let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
            tx.send(l.local_addr().unwrap()).unwrap();
            loop {
                let Ok((tcp, _)) = l.accept().await else {
                    continue;
                };
                let _ = tcp.set_nodelay(true);
                let s = s.clone();
                let tls = tls.clone();
                tokio::spawn(async move {
                    let svc = hyper::service::service_fn(move |req| serve(req, s.clone()));
                    let http = hyper::server::conn::http1::Builder::new();
                    match tls {
                        None => {
                            let _ = http.serve_connection(TokioIo::new(tcp), svc).await;
                        }
                        Some(acceptor) => {
                            if let Ok(stream) = acceptor.accept(tcp).await {
                                let _ = http.serve_connection(TokioIo::new(stream), svc).await;
                            }
                        }
                    }
                });
            }
        });
    });
    Mock {
        addr: rx.recv().unwrap(),
        seen,
        _rt: rt,
    }
}

type Body = BoxBody<Bytes, Infallible>;

async fn serve(
    req: Request<Incoming>,
    seen: Arc<Mutex<Vec<Seen>>>,
) -> Result<Response<Body>, Infallible> {
    let path = req.uri().path().to_string();
    let headers: Vec<(String, String)> = req
        .headers()
        .iter()
        .map(|(k, v)| {
            (
                k.as_str().to_string(),
                String::from_utf8_lossy(v.as_bytes()).into_owned(),
            )
        })
        .collect();
    let num = |name: &str| {
        headers
            .iter()
            .find(|(k, _)| k == name)
            .and_then(|(_, v)| v.parse::<usize>().ok())
    };
    let chunk = num("x-mock-chunk");
    let interval = num("x-mock-interval-us").map(|n| Duration::from_micros(n as u64));
    let bytes = req
        .into_body()
        .collect()
        .await
        .map(|c| c.to_bytes())
        .unwrap_or_default();
    let body: Value = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
    let model = match path.ends_with("/count_tokens") {
        true => "count_tokens".to_string(),
        false => body["model"].as_str().unwrap_or("").to_string(),
    };
    let stream = body["stream"].as_bool().unwrap_or(false);
    seen.lock().unwrap().push(Seen {
        path,
        headers,
        body,
    });
    if let Some(code) = model.strip_prefix("status-") {
        let status =
            StatusCode::from_bytes(code.as_bytes()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        let err = format!(
            r#"{{"error":{{"message":"mock says {code}","type":"server_error","param":null,"code":null}}}}"#
        );
        return Ok(whole(status, "application/json", Bytes::from(err)));
    }
    if model == "stall" {
        std::future::pending::<()>().await;
    }
    let (model, stall_after) = match model.split_once("@stall") {
        Some((m, n)) => (m.to_string(), n.parse::<usize>().ok()),
        None => (model, None),
    };
    let file = fixtures().join(format!("{model}.{}", if stream { "sse" } else { "json" }));
    let Ok(data) = std::fs::read(&file) else {
        let err = format!(
            r#"{{"error":{{"message":"no fixture {}","type":"invalid_request_error","param":null,"code":null}}}}"#,
            file.display()
        );
        return Ok(whole(
            StatusCode::NOT_FOUND,
            "application/json",
            Bytes::from(err),
        ));
    };
    if !stream {
        return Ok(whole(StatusCode::OK, "application/json", Bytes::from(data)));
    }
    let pieces: Vec<Bytes> = match chunk {
        Some(n) if n > 0 => data.chunks(n).map(Bytes::copy_from_slice).collect(),
        _ => events(&data),
    };
    let (tx, rx) = tokio::sync::mpsc::channel::<Bytes>(4);
    tokio::spawn(async move {
        for (n, p) in pieces.into_iter().enumerate() {
            if stall_after == Some(n) {
                // Silent, with the connection open, until the client goes away.
                tx.closed().await;
                return;
            }
            if let Some(d) = interval {
                tokio::time::sleep(d).await;
            }
            if tx.send(p).await.is_err() {
                return;
            }
        }
    });
    let body = ChannelBody(rx).boxed();
    let mut r = Response::new(body);
    r.headers_mut().insert(
        "content-type",
        "text/event-stream; charset=utf-8".parse().unwrap(),
    );
    Ok(r)
}

fn whole(status: StatusCode, ty: &'static str, b: Bytes) -> Response<Body> {
    let mut r = Response::new(Full::new(b).boxed());
    *r.status_mut() = status;
    r.headers_mut().insert("content-type", ty.parse().unwrap());
    r
}

/// The events of an SSE file, each with its blank line.
pub fn events(data: &[u8]) -> Vec<Bytes> {
    let mut out = Vec::new();
    let mut start = 0;
    let mut i = 0;
    while i + 1 < data.len() {
        if data[i] == b'\n' && data[i + 1] == b'\n' {
            out.push(Bytes::copy_from_slice(&data[start..i + 2]));
            start = i + 2;
            i += 2;
        } else {
            i += 1;
        }
    }
    if start < data.len() {
        out.push(Bytes::copy_from_slice(&data[start..]));
    }
    out
}

/// A body whose chunks arrive on a channel.
struct ChannelBody(tokio::sync::mpsc::Receiver<Bytes>);

impl hyper::body::Body for ChannelBody {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        self.0.poll_recv(cx).map(|c| c.map(|b| Ok(Frame::data(b))))
    }
}
