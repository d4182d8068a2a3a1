//! An accepted connection that counts as in flight for as long as it exists, including
//! after an upgrade hands it to the app (a WebSocket): the worker's drain waits for it, so
//! a worker never exits under an open WebSocket before the graceful deadline (what
//! axum's own graceful shutdown misses, axum #3003). When it is dropped with unread input,
//! it closes with a lingering close ([`super::linger`]) instead of a reset.

use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio_util::task::task_tracker::TaskTrackerToken;

use super::activity::Activity;
use super::linger::Linger;

/// A stream and the drain's count of it.
pub(crate) struct Tracked<I: Linger> {
    /// `None` only once dropped.
    inner: Option<I>,
    token: TaskTrackerToken,
    /// The connection's activity, kept as long as the stream (its metrics count the
    /// connection open until then).
    _activity: Arc<Activity>,
}

impl<I: Linger> Tracked<I> {
    /// Counts `inner` in `token`'s tracker (and its `activity` in the metrics) until it
    /// is dropped.
    pub(crate) fn new(inner: I, token: TaskTrackerToken, activity: Arc<Activity>) -> Self {
        Self {
            inner: Some(inner),
            token,
            _activity: activity,
        }
    }

    fn stream(&mut self) -> io::Result<&mut I> {
        self.inner
            .as_mut()
            .ok_or_else(|| io::Error::from(io::ErrorKind::NotConnected))
    }
}

impl<I: Linger> Drop for Tracked<I> {
    fn drop(&mut self) {
        if let Some(inner) = self.inner.take() {
            inner.close(self.token.clone());
        }
    }
}

impl<I: AsyncRead + Linger + Unpin> AsyncRead for Tracked<I> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match self.get_mut().stream() {
            Ok(stream) => Pin::new(stream).poll_read(cx, buf),
            Err(e) => Poll::Ready(Err(e)),
        }
    }
}

impl<I: AsyncWrite + Linger + Unpin> AsyncWrite for Tracked<I> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut().stream() {
            Ok(stream) => Pin::new(stream).poll_write(cx, buf),
            Err(e) => Poll::Ready(Err(e)),
        }
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut().stream() {
            Ok(stream) => Pin::new(stream).poll_write_vectored(cx, bufs),
            Err(e) => Poll::Ready(Err(e)),
        }
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.as_ref().is_some_and(I::is_write_vectored)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut().stream() {
            Ok(stream) => Pin::new(stream).poll_flush(cx),
            Err(e) => Poll::Ready(Err(e)),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut().stream() {
            Ok(stream) => Pin::new(stream).poll_shutdown(cx),
            Err(e) => Poll::Ready(Err(e)),
        }
    }
}
