//! The byte streams of a tunnel: bytes already read put back in front (what the sniffing read),
//! and reads that count as activity for the idle timeout; and passing a tunnel through, by
//! `splice(2)` where both ends are sockets.

use std::future::Future;
use std::os::fd::AsFd;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use hyper::upgrade::Upgraded;
use hyper_util::rt::TokioIo;
use rustix::pipe::{PipeFlags, SpliceFlags};
use tokio::io::{AsyncRead, AsyncWrite, Interest, ReadBuf};
use tokio::net::{TcpStream, UnixStream};
use tokio::time::Instant;

/// Each direction of a copied tunnel copies through a buffer this large: fewer system calls
/// per byte on bulk transfers.
const TUNNEL_BUFFER: usize = 256 << 10;

/// Each direction of a spliced tunnel moves up to this much per `splice` pair (the pipe is
/// asked for this size; the kernel's default of 64 KiB is kept if it refuses).
const PIPE_BYTES: usize = 1 << 20;

/// When either direction of a tunnel last moved bytes.
#[derive(Clone)]
pub struct Activity {
    start: Instant,
    last_ms: Arc<AtomicU64>,
}

impl Activity {
    pub fn new() -> Activity {
        Activity {
            start: Instant::now(),
            last_ms: Arc::new(AtomicU64::new(0)),
        }
    }

    fn touch(&self) {
        let ms = u64::try_from(self.start.elapsed().as_millis()).unwrap_or(u64::MAX);
        self.last_ms.store(ms, Ordering::Relaxed);
    }

    /// Resolves once nothing has moved for `idle`.
    pub async fn idle(&self, idle: Duration) {
        loop {
            let last = self.last_ms.load(Ordering::Relaxed);
            let deadline = self.start + Duration::from_millis(last) + idle;
            if Instant::now() >= deadline {
                return;
            }
            tokio::time::sleep_until(deadline).await;
        }
    }
}

/// A stream of a tunnel: `head` is read first, then the stream; reads touch `activity`.
pub struct Tunneled<I> {
    head: Bytes,
    io: I,
    activity: Option<Activity>,
}

impl<I> Tunneled<I> {
    pub fn new(io: I, head: Bytes, activity: Option<Activity>) -> Tunneled<I> {
        Tunneled { head, io, activity }
    }
}

impl<I: AsyncRead + Unpin> AsyncRead for Tunneled<I> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        if !self.head.is_empty() {
            let n = self.head.len().min(buf.remaining());
            let chunk = self.head.split_to(n);
            buf.put_slice(&chunk);
            return Poll::Ready(Ok(()));
        }
        let before = buf.filled().len();
        let r = Pin::new(&mut self.io).poll_read(cx, buf);
        if buf.filled().len() > before
            && let Some(a) = &self.activity
        {
            a.touch();
        }
        r
    }
}

impl<I: AsyncWrite + Unpin> AsyncWrite for Tunneled<I> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.io).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.io).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.io).poll_shutdown(cx)
    }
}

/// The client end of a tunnel that is passed through once decided.
pub trait Pass: AsyncRead + AsyncWrite + Unpin + Send + Sized + 'static {
    /// Move bytes both ways between `self` and `upstream` until both directions have ended
    /// (each end-of-stream passed on as a write shutdown) or either fails. Every chunk read
    /// touches `activity`. By default the bytes are copied through user space.
    fn pass(self, upstream: TcpStream, activity: Activity) -> impl Future<Output = ()> + Send {
        copy(self, upstream, activity)
    }
}

/// A TLS-terminated or otherwise wrapped client: copied.
impl Pass for TokioIo<Upgraded> {}

/// A plain TCP client: spliced, the bytes never leave the kernel.
impl Pass for TcpStream {
    fn pass(self, upstream: TcpStream, activity: Activity) -> impl Future<Output = ()> + Send {
        spliced(self, upstream, activity)
    }
}

/// A client on the Unix listener (a sandbox's relay): spliced.
impl Pass for UnixStream {
    fn pass(self, upstream: TcpStream, activity: Activity) -> impl Future<Output = ()> + Send {
        spliced(self, upstream, activity)
    }
}

async fn copy<C: Pass>(client: C, upstream: TcpStream, activity: Activity) {
    let mut client = Tunneled::new(client, Bytes::new(), Some(activity.clone()));
    let mut upstream = Tunneled::new(upstream, Bytes::new(), Some(activity));
    let copied = tokio::io::copy_bidirectional_with_sizes(
        &mut client,
        &mut upstream,
        TUNNEL_BUFFER,
        TUNNEL_BUFFER,
    )
    .await;
    if let Err(e) = copied {
        tracing::debug!(error = %e, "tunnel ended");
    }
}

/// A socket whose readiness tokio tracks, so that a raw `splice` can wait on it.
trait Socket: AsFd + Sync {
    fn io<R>(
        &self,
        interest: Interest,
        f: impl FnMut() -> std::io::Result<R> + Send,
    ) -> impl Future<Output = std::io::Result<R>> + Send;
}

/// tokio's sockets have `async_io` as an inherent method, each its own: one impl per type.
macro_rules! socket {
    ($($t:ty),*) => {$(
        impl Socket for $t {
            fn io<R>(
                &self,
                interest: Interest,
                f: impl FnMut() -> std::io::Result<R> + Send,
            ) -> impl Future<Output = std::io::Result<R>> + Send {
                self.async_io(interest, f)
            }
        }
    )*};
}

socket!(TcpStream, UnixStream);

/// Both directions by `splice(2)` through a pipe each; copied instead if no pipe can be had
/// (out of descriptors), before any byte has moved.
async fn spliced<C: Socket + Pass>(client: C, upstream: TcpStream, activity: Activity) {
    let (up, down) = match (Pipe::new(), Pipe::new()) {
        (Ok(up), Ok(down)) => (up, down),
        (Err(e), _) | (_, Err(e)) => {
            tracing::debug!(error = %e, "no pipe for splice; copying the tunnel");
            return copy(client, upstream, activity).await;
        }
    };
    let moved = tokio::try_join!(
        pump(&client, &upstream, up, &activity),
        pump(&upstream, &client, down, &activity),
    );
    if let Err(e) = moved {
        tracing::debug!(error = %e, "tunnel ended");
    }
}

/// A non-blocking pipe, as large as the kernel allows up to [`PIPE_BYTES`].
struct Pipe {
    read: std::os::fd::OwnedFd,
    write: std::os::fd::OwnedFd,
    size: usize,
}

impl Pipe {
    fn new() -> std::io::Result<Pipe> {
        let (read, write) = rustix::pipe::pipe_with(PipeFlags::CLOEXEC | PipeFlags::NONBLOCK)?;
        let size = rustix::pipe::fcntl_setpipe_size(&write, PIPE_BYTES)
            .or_else(|_| rustix::pipe::fcntl_getpipe_size(&write))?;
        Ok(Pipe { read, write, size })
    }
}

/// `from` → pipe → `to` until `from` ends, then shut `to`'s writing side. The pipe is emptied
/// before it is filled again, so a `splice` that would block is always waiting on a socket.
async fn pump(
    from: &impl Socket,
    to: &impl Socket,
    pipe: Pipe,
    activity: &Activity,
) -> std::io::Result<()> {
    let flags = SpliceFlags::MOVE | SpliceFlags::NONBLOCK;
    loop {
        let n = from
            .io(Interest::READABLE, || {
                Ok(rustix::pipe::splice(
                    from.as_fd(),
                    None,
                    &pipe.write,
                    None,
                    pipe.size,
                    flags,
                )?)
            })
            .await?;
        if n == 0 {
            break;
        }
        activity.touch();
        let mut left = n;
        while left > 0 {
            left -= to
                .io(Interest::WRITABLE, || {
                    Ok(rustix::pipe::splice(
                        &pipe.read,
                        None,
                        to.as_fd(),
                        None,
                        left,
                        flags,
                    )?)
                })
                .await?;
        }
    }
    rustix::net::shutdown(to.as_fd(), rustix::net::Shutdown::Write)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::AsyncReadExt;

    /// A connected pair of loopback TCP sockets.
    async fn pair() -> (TcpStream, TcpStream) {
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = l.local_addr().unwrap();
        let (a, b) = tokio::join!(TcpStream::connect(addr), l.accept());
        (a.unwrap(), b.unwrap().0)
    }

    /// Through `client.pass(upstream)`: more than a pipe holds each way, in a pattern that
    /// shows reordering or loss, each end-of-stream passed on, and the tunnel then finishes.
    async fn passes_everything<A, C>(agent: A, client: C)
    where
        A: AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
        C: Pass,
    {
        use tokio::io::AsyncWriteExt;
        // agent <-> (client | proxy | upstream) <-> server
        let (upstream, server) = pair().await;
        let tunnel = tokio::spawn(client.pass(upstream, Activity::new()));
        let up: Vec<u8> = (0..3_000_007u32).map(|i| (i % 251) as u8).collect();
        let down: Vec<u8> = (0..1_500_001u32).map(|i| (i % 241) as u8).collect();
        async fn talk<S: AsyncRead + tokio::io::AsyncWrite + Unpin>(s: S, out: Vec<u8>) -> Vec<u8> {
            let (mut r, mut w) = tokio::io::split(s);
            let send = async {
                w.write_all(&out).await.unwrap();
                w.shutdown().await.unwrap();
            };
            let mut got = Vec::new();
            let (_, n) = tokio::join!(send, r.read_to_end(&mut got));
            n.unwrap();
            got
        }
        let agent_side = tokio::spawn(talk(agent, up.clone()));
        let server_side = tokio::spawn(talk(server, down.clone()));
        let (to_agent, to_server) = (agent_side.await.unwrap(), server_side.await.unwrap());
        assert!(
            to_server == up,
            "upstream bytes differ ({} of {})",
            to_server.len(),
            up.len()
        );
        assert!(
            to_agent == down,
            "downstream bytes differ ({} of {})",
            to_agent.len(),
            down.len()
        );
        tunnel.await.unwrap();
    }

    #[tokio::test]
    async fn a_spliced_tunnel_from_a_tcp_client_moves_every_byte_both_ways() {
        let (agent, client) = pair().await;
        passes_everything(agent, client).await;
        // And the pipes it spliced through can be had here (else it would have copied).
        assert!(Pipe::new().unwrap().size >= 64 << 10);
    }

    #[tokio::test]
    async fn a_spliced_tunnel_from_a_unix_client_moves_every_byte_both_ways() {
        let (agent, client) = UnixStream::pair().unwrap();
        passes_everything(agent, client).await;
    }

    #[tokio::test]
    async fn the_head_comes_first_then_the_stream() {
        let (a, mut b) = tokio::io::duplex(64);
        let mut t = Tunneled::new(a, Bytes::from_static(b"GET "), Some(Activity::new()));
        tokio::io::AsyncWriteExt::write_all(&mut b, b"/ HTTP/1.1")
            .await
            .unwrap();
        drop(b);
        let mut out = String::new();
        t.read_to_string(&mut out).await.unwrap();
        assert_eq!(out, "GET / HTTP/1.1");
    }
}
