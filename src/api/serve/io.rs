//! The socket of one HTTP connection as the server sees it: it records when bytes
//! last moved (for the idle timeout) and carries the connection's
//! [`ConnectionPermit`], so the connection is counted until the socket is dropped —
//! also after a WebSocket upgrade has taken the socket out of the HTTP server.

use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::time::Instant;

use super::limits::ConnectionPermit;

/// When bytes last moved on a connection, shared between the socket and the task
/// that enforces the idle timeout.
#[derive(Debug, Clone)]
pub struct Activity {
    /// When the connection was accepted.
    origin: Instant,
    /// Milliseconds after `origin` of the last read or write.
    last_ms: Arc<AtomicU64>,
}

impl Default for Activity {
    fn default() -> Self {
        Activity::new()
    }
}

impl Activity {
    /// Activity starting now.
    pub fn new() -> Activity {
        Activity {
            origin: Instant::now(),
            last_ms: Arc::new(AtomicU64::new(0)),
        }
    }

    /// Records that bytes moved now.
    pub fn touch(&self) {
        let ms = u64::try_from(self.origin.elapsed().as_millis()).unwrap_or(u64::MAX);
        self.last_ms.store(ms, Ordering::Relaxed);
    }

    /// When bytes last moved (the accept time if never).
    pub fn last(&self) -> Instant {
        self.origin + Duration::from_millis(self.last_ms.load(Ordering::Relaxed))
    }
}

/// A socket that reports its activity and holds its connection permit.
#[derive(Debug)]
pub struct Watched<T> {
    /// The socket (TCP or TLS).
    inner: T,
    /// Updated on every read or write that moves bytes.
    activity: Activity,
    /// Counts this connection against the listener's caps until dropped.
    _permit: ConnectionPermit,
}

impl<T> Watched<T> {
    /// Wraps `inner`.
    pub fn new(inner: T, activity: Activity, permit: ConnectionPermit) -> Watched<T> {
        Watched {
            inner,
            activity,
            _permit: permit,
        }
    }
}

impl<T: AsyncRead + Unpin> AsyncRead for Watched<T> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let this = &mut *self;
        let poll = Pin::new(&mut this.inner).poll_read(cx, buf);
        if matches!(poll, Poll::Ready(Ok(()))) && buf.filled().len() > before {
            this.activity.touch();
        }
        poll
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for Watched<T> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = &mut *self;
        let poll = Pin::new(&mut this.inner).poll_write(cx, data);
        if matches!(poll, Poll::Ready(Ok(n)) if n > 0) {
            this.activity.touch();
        }
        poll
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = &mut *self;
        let poll = Pin::new(&mut this.inner).poll_write_vectored(cx, bufs);
        if matches!(poll, Poll::Ready(Ok(n)) if n > 0) {
            this.activity.touch();
        }
        poll
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn activity_moves_with_bytes_only() {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let limits = super::super::limits::ConnectionLimits::new(1, 1);
        let permit = limits.try_open([127, 0, 0, 1].into()).expect("permit");
        let (client, server) = tokio::io::duplex(64);
        let activity = Activity::new();
        let start = activity.last();
        let mut watched = Watched::new(server, activity.clone(), permit);
        tokio::time::advance(Duration::from_secs(5)).await;
        assert_eq!(activity.last(), start, "no bytes yet");
        let mut client = client;
        client.write_all(b"x").await.expect("write");
        let mut buf = [0u8; 1];
        watched.read_exact(&mut buf).await.expect("read");
        assert_eq!(activity.last(), start + Duration::from_secs(5));
        assert_eq!(limits.open(), 1, "the socket holds the permit");
        drop(watched);
        assert_eq!(limits.open(), 0, "dropping the socket frees it");
    }
}
