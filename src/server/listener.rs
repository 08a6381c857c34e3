//! One accept loop per listener: a cap on connections, the TLS handshake with a deadline,
//! HTTP/1.1 with bounded heads, a write deadline, and a graceful drain on shutdown.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper::{Request, Response};
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::{TcpListener, TcpStream, UnixListener, UnixStream};
use tokio::sync::{Semaphore, watch};
use tokio::task::JoinSet;
use tokio_rustls::TlsAcceptor;

use super::deadline::WriteDeadline;
use crate::config::ServerConfig;
use crate::gate::identity::CertIdentity;
use crate::metrics::Metrics;

/// What a handler knows about the connection a request came on.
#[derive(Debug, Clone)]
pub struct Conn {
    pub peer: SocketAddr,
    /// The verified client certificate, on a mutual-TLS connection.
    pub cert: Option<CertIdentity>,
}

/// A bound listening socket: TCP, or a Unix socket (the sandbox's way out of its namespace).
pub enum Bound {
    Tcp(TcpListener),
    Unix(UnixListener),
}

enum Accepted {
    Tcp(TcpStream),
    Unix(UnixStream),
}

impl Bound {
    async fn accept(&self) -> std::io::Result<(Accepted, SocketAddr)> {
        match self {
            Bound::Tcp(l) => l.accept().await.map(|(s, a)| (Accepted::Tcp(s), a)),
            // A Unix peer has no address; the unspecified one stands in for it.
            Bound::Unix(l) => l.accept().await.map(|(s, _)| {
                (
                    Accepted::Unix(s),
                    SocketAddr::from((std::net::Ipv4Addr::UNSPECIFIED, 0)),
                )
            }),
        }
    }
}

impl From<TcpListener> for Bound {
    fn from(l: TcpListener) -> Bound {
        Bound::Tcp(l)
    }
}

/// Accept until `shutdown` turns true, then drain open connections for up to `grace` and
/// close the rest.
pub async fn run<H, F, B>(
    name: &'static str,
    listener: impl Into<Bound>,
    tls: Option<TlsAcceptor>,
    limits: ServerConfig,
    metrics: Arc<Metrics>,
    handler: H,
    mut shutdown: watch::Receiver<bool>,
) where
    H: Fn(Request<Incoming>, Arc<Conn>) -> F + Clone + Send + Sync + 'static,
    F: Future<Output = Response<B>> + Send + 'static,
    B: hyper::body::Body<Data = bytes::Bytes> + Send + 'static,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let listener = listener.into();
    let slots = Arc::new(Semaphore::new(limits.max_connections));
    let mut conns = JoinSet::new();
    let mut http = hyper::server::conn::http1::Builder::new();
    http.timer(TokioTimer::new())
        .header_read_timeout(limits.header_timeout)
        .max_headers(limits.max_headers)
        .max_header_size(limits.max_header_bytes)
        .half_close(false);
    let http = Arc::new(http);
    loop {
        let accepted = tokio::select! {
            biased;
            _ = shutdown.changed() => break,
            a = listener.accept() => a,
            // Reap finished connection tasks so the set does not grow.
            Some(_) = conns.join_next(), if !conns.is_empty() => continue,
        };
        let (stream, peer) = match accepted {
            Ok(a) => a,
            Err(e) => {
                // EMFILE and friends: back off briefly instead of spinning.
                tracing::warn!(listener = name, error = %e, "accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let Ok(permit) = slots.clone().try_acquire_owned() else {
            metrics.connections_rejected.fetch_add(1, Ordering::Relaxed);
            tracing::warn!(listener = name, %peer, "connection cap reached; closing");
            drop(stream);
            continue;
        };
        let stream = match stream {
            Accepted::Tcp(s) => {
                let _ = s.set_nodelay(true);
                s
            }
            Accepted::Unix(s) => {
                // TLS is for the network; a Unix socket is served plain.
                let handler = handler.clone();
                let http = http.clone();
                let metrics = metrics.clone();
                let mut stop = shutdown.clone();
                let write_timeout = limits.write_timeout;
                conns.spawn(async move {
                    let _permit = permit;
                    metrics.connections_active.fetch_add(1, Ordering::Relaxed);
                    let conn = Arc::new(Conn { peer, cert: None });
                    serve(
                        &http,
                        TokioIo::new(WriteDeadline::new(s, write_timeout)),
                        conn,
                        handler,
                        &metrics,
                        name,
                        &mut stop,
                    )
                    .await;
                    metrics.connections_active.fetch_sub(1, Ordering::Relaxed);
                });
                continue;
            }
        };
        let tls = tls.clone();
        let http = http.clone();
        let handler = handler.clone();
        let metrics = metrics.clone();
        let mut stop = shutdown.clone();
        let handshake = limits.handshake_timeout;
        let write_timeout = limits.write_timeout;
        conns.spawn(async move {
            let _permit = permit;
            metrics.connections_active.fetch_add(1, Ordering::Relaxed);
            let served = async {
                match tls {
                    None => {
                        let conn = Arc::new(Conn { peer, cert: None });
                        let io = TokioIo::new(WriteDeadline::new(stream, write_timeout));
                        serve(&http, io, conn, handler, &metrics, name, &mut stop).await;
                    }
                    Some(acceptor) => {
                        let stream = match tokio::time::timeout(handshake, acceptor.accept(stream)).await {
                            Ok(Ok(s)) => s,
                            Ok(Err(e)) => {
                                tracing::debug!(listener = name, %peer, error = %e, "TLS handshake failed");
                                return;
                            }
                            Err(_) => {
                                tracing::debug!(listener = name, %peer, "TLS handshake timed out");
                                return;
                            }
                        };
                        let cert = super::tls::peer_cert(stream.get_ref().1).map(|c| CertIdentity {
                            fingerprint: c.fingerprint,
                            names: c.dns_names.into_iter().chain(c.common_name).collect(),
                        });
                        let conn = Arc::new(Conn { peer, cert });
                        let io = TokioIo::new(WriteDeadline::new(stream, write_timeout));
                        serve(&http, io, conn, handler, &metrics, name, &mut stop).await;
                    }
                }
            };
            served.await;
            metrics.connections_active.fetch_sub(1, Ordering::Relaxed);
        });
    }
    drop(listener);
    let deadline = tokio::time::sleep(limits.shutdown_grace);
    tokio::pin!(deadline);
    loop {
        tokio::select! {
            _ = &mut deadline => {
                tracing::warn!(listener = name, open = conns.len(), "drain deadline passed; closing connections");
                conns.abort_all();
                while conns.join_next().await.is_some() {}
                break;
            }
            next = conns.join_next() => if next.is_none() { break },
        }
    }
}

async fn serve<I, H, F, B>(
    http: &hyper::server::conn::http1::Builder,
    io: I,
    conn: Arc<Conn>,
    handler: H,
    metrics: &Arc<Metrics>,
    name: &'static str,
    stop: &mut watch::Receiver<bool>,
) where
    I: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
    H: Fn(Request<Incoming>, Arc<Conn>) -> F + Clone + Send + Sync + 'static,
    F: Future<Output = Response<B>> + Send + 'static,
    B: hyper::body::Body<Data = bytes::Bytes> + Send + 'static,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let metrics = metrics.clone();
    let svc = service_fn(move |req| {
        let conn = conn.clone();
        let handler = handler.clone();
        let metrics = metrics.clone();
        async move {
            let start = Instant::now();
            // Boxed: hyper keeps room for this future for the connection's whole life, and the
            // handlers' futures are large (~10 KB measured with heaptrack, LLM route). Boxed,
            // that room is a few words and the handler's state is freed when the response
            // head is ready, not when a long stream ends.
            let resp = Box::pin(handler(req, conn)).await;
            let us = u64::try_from(start.elapsed().as_micros()).unwrap_or(u64::MAX);
            metrics.http(name, resp.status().as_u16(), us);
            Ok::<_, std::convert::Infallible>(resp)
        }
    });
    // Upgrades are only ever taken by the egress listener's CONNECT.
    let connection = http.serve_connection(io, svc).with_upgrades();
    tokio::pin!(connection);
    tokio::select! {
        r = connection.as_mut() => {
            if let Err(e) = r {
                tracing::debug!(listener = name, error = %e, "connection ended with an error");
            }
        }
        _ = stop.changed() => {
            // Finish the request in flight, then close.
            connection.as_mut().graceful_shutdown();
            if let Err(e) = connection.await {
                tracing::debug!(listener = name, error = %e, "connection ended with an error during drain");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;
    use hyper::body::Frame;
    use std::path::Path;
    use std::pin::Pin;
    use std::task::{Context, Poll};
    use tokio::io::AsyncWriteExt;

    /// An endless response body that reports, by being dropped, that the server let it go.
    struct Endless {
        _dropped: Option<tokio::sync::oneshot::Sender<()>>,
    }

    impl hyper::body::Body for Endless {
        type Data = Bytes;
        type Error = std::convert::Infallible;
        fn poll_frame(
            self: Pin<&mut Self>,
            _: &mut Context<'_>,
        ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
            Poll::Ready(Some(Ok(Frame::data(Bytes::from_static(&[b'x'; 16384])))))
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_client_that_stops_reading_loses_its_connection() {
        let config = crate::config::Config::parse(
            "[server]\nwrite_timeout_ms = 5000\n",
            Path::new("/t.toml"),
        )
        .expect("config");
        let limits = config.server.clone();
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let metrics = Arc::new(Metrics::new());
        let (dropped_tx, dropped_rx) = tokio::sync::oneshot::channel();
        let body = Arc::new(std::sync::Mutex::new(Some(dropped_tx)));
        let handler = move |_req: Request<Incoming>, _conn: Arc<Conn>| {
            let tx = body.lock().ok().and_then(|mut b| b.take());
            async move { Response::new(Endless { _dropped: tx }) }
        };
        let (_stop_tx, stop) = watch::channel(false);
        tokio::spawn(run(
            "test",
            listener,
            None,
            limits,
            metrics.clone(),
            handler,
            stop,
        ));

        let mut client = TcpStream::connect(addr).await.expect("connect");
        client
            .write_all(b"GET / HTTP/1.1\r\nhost: t\r\n\r\n")
            .await
            .expect("request");
        // The client never reads. Once the socket buffers are full the server's writes wait;
        // the deadline then closes the connection and drops the body.
        let closed = tokio::time::timeout(Duration::from_secs(60), dropped_rx).await;
        assert!(
            closed.is_ok(),
            "the stalled connection was still open after 60 s"
        );
        drop(client);
    }
}
