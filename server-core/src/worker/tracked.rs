//! An accepted connection that counts as in flight for as long as it exists, including
//! after an upgrade hands it to the app (a WebSocket): the worker's drain waits for it, so
//! a worker never exits under an open WebSocket before the graceful deadline (what
//! axum's own graceful shutdown misses, axum #3003).

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio_util::task::task_tracker::TaskTrackerToken;

pin_project_lite::pin_project! {
    /// A stream and the drain's count of it.
    pub(crate) struct Tracked<I> {
        #[pin]
        inner: I,
        token: TaskTrackerToken,
    }
}

impl<I> Tracked<I> {
    /// Counts `inner` in `token`'s tracker until it is dropped.
    pub(crate) fn new(inner: I, token: TaskTrackerToken) -> Self {
        Self { inner, token }
    }
}

impl<I: AsyncRead> AsyncRead for Tracked<I> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        self.project().inner.poll_read(cx, buf)
    }
}

impl<I: AsyncWrite> AsyncWrite for Tracked<I> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        self.project().inner.poll_write(cx, buf)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        self.project().inner.poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.project().inner.poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.project().inner.poll_shutdown(cx)
    }
}
