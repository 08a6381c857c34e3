//! A write deadline for an accepted connection.
//!
//! A client that stops reading (a slow or stalled reader, or one that does it on purpose) would
//! otherwise keep its connection, its response and whatever feeds it (an upstream stream, a
//! session) for as long as it likes: the kernel buffers fill and every write waits. Wrapped in
//! [`WriteDeadline`], a write, flush or shutdown that makes no progress for the limit fails with
//! `TimedOut`, and hyper closes the connection. Any progress restarts the clock, so a slow
//! reader that keeps draining is never cut off; reads are not affected (the head and body
//! timeouts cover them), so an idle connection or a quiet stream is not either.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::time::{Instant, Sleep};

pub struct WriteDeadline<S> {
    io: S,
    limit: Duration,
    /// Allocated on the first write that has to wait; reset, not reallocated, after that.
    timer: Option<Pin<Box<Sleep>>>,
    /// Whether `timer` runs for the current wait (cleared by any write that completes).
    armed: bool,
}

impl<S> WriteDeadline<S> {
    pub fn new(io: S, limit: Duration) -> Self {
        WriteDeadline {
            io,
            limit,
            timer: None,
            armed: false,
        }
    }

    pub fn into_inner(self) -> S {
        self.io
    }

    fn guard<T>(&mut self, cx: &mut Context<'_>, r: Poll<io::Result<T>>) -> Poll<io::Result<T>> {
        if r.is_ready() {
            self.armed = false;
            return r;
        }
        let timer = match &mut self.timer {
            Some(t) => {
                if !self.armed {
                    t.as_mut().reset(Instant::now() + self.limit);
                }
                t
            }
            None => self.timer.insert(Box::pin(tokio::time::sleep(self.limit))),
        };
        self.armed = true;
        match timer.as_mut().poll(cx) {
            Poll::Ready(()) => Poll::Ready(Err(io::Error::new(
                io::ErrorKind::TimedOut,
                format!(
                    "the client read nothing for {} ms; closing",
                    self.limit.as_millis()
                ),
            ))),
            Poll::Pending => Poll::Pending,
        }
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for WriteDeadline<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_read(cx, buf)
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for WriteDeadline<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let r = Pin::new(&mut self.io).poll_write(cx, buf);
        self.guard(cx, r)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let r = Pin::new(&mut self.io).poll_write_vectored(cx, bufs);
        self.guard(cx, r)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let r = Pin::new(&mut self.io).poll_flush(cx);
        self.guard(cx, r)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let r = Pin::new(&mut self.io).poll_shutdown(cx);
        self.guard(cx, r)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    const LIMIT: Duration = Duration::from_secs(30);

    // Paused time: the runtime jumps the clock to the next timer once every task is idle, so
    // these run instantly and without real waiting.

    #[tokio::test(start_paused = true)]
    async fn a_reader_that_stops_is_cut_off_at_the_limit() {
        let (ours, mut theirs) = tokio::io::duplex(64);
        let mut w = WriteDeadline::new(ours, LIMIT);
        let began = Instant::now();
        let writes = async {
            loop {
                if let Err(e) = w.write_all(&[7; 1024]).await {
                    return e;
                }
            }
        };
        let err = tokio::time::timeout(2 * LIMIT, writes)
            .await
            .expect("the deadline fires before twice the limit");
        assert_eq!(err.kind(), io::ErrorKind::TimedOut, "{err}");
        assert_eq!(began.elapsed(), LIMIT);
        // What was written before the stall is still there for the reader.
        let mut got = [0; 64];
        theirs.read_exact(&mut got).await.expect("buffered bytes");
        assert_eq!(got, [7; 64]);
    }

    #[tokio::test(start_paused = true)]
    async fn a_slow_reader_that_keeps_draining_is_not() {
        let (ours, mut theirs) = tokio::io::duplex(64);
        let reader = tokio::spawn(async move {
            let mut total = 0;
            let mut buf = [0; 64];
            loop {
                // Each read comes just before the limit would pass: five waits per write below.
                tokio::time::sleep(LIMIT - Duration::from_secs(1)).await;
                match theirs.read(&mut buf).await {
                    Ok(0) | Err(_) => return total,
                    Ok(n) => total += n,
                }
            }
        });
        let mut w = WriteDeadline::new(ours, LIMIT);
        for _ in 0..4 {
            w.write_all(&[1; 320])
                .await
                .expect("progress restarts the clock");
        }
        w.shutdown().await.expect("shutdown");
        drop(w);
        assert_eq!(reader.await.expect("reader"), 4 * 320);
    }
}
