//! The worker's listener, TCP or unix, behind one interface (as axum's `serve::Listener`):
//! the accept loop and the drain are written once, for either kind.

use std::future::Future;
use std::io;
use std::task::{Context, Poll, Waker};

use std::os::fd::AsFd;
use tokio::io::{AsyncRead, AsyncWrite};

use tokio::net::{TcpListener, TcpStream, UnixListener, UnixStream};

use super::balance::AcceptGate;

/// How unix-socket clients appear in the access log (they have no address).
const UNIX_PEER: &str = "unix:";

/// A listening socket a worker accepts from.
pub(super) trait WorkerListener {
    /// An accepted connection.
    type Io: AsyncRead + AsyncWrite + super::linger::Linger + AsFd + Unpin + Send + 'static;

    /// Waits for the next connection; returns it with the peer's name for the access log.
    /// Cancel-safe: when the future is dropped, no connection has been taken.
    fn accept(&self) -> impl Future<Output = io::Result<(Self::Io, String)>>;

    /// The next connection already queued, without waiting: `WouldBlock` when the queue
    /// is empty (the drain accepts until then, then closes the socket).
    fn accept_queued(&self) -> io::Result<(Self::Io, String)>;

    /// The accept gate that spreads connections over the workers, when this kind of
    /// listener has one (TCP).
    fn gate(&self) -> Option<AcceptGate>;

    /// The address it listens on (TCP).
    fn local_address(&self) -> Option<std::net::SocketAddr>;

    /// Waits for the next connection through `gate`. Cancel-safe, as [`Self::accept`].
    fn accept_gated(
        &self,
        gate: &AcceptGate,
    ) -> impl Future<Output = io::Result<(Self::Io, String)>>;
}

/// Turns a `Pending` accept into `WouldBlock`: tokio's `poll_accept` tries the accept
/// once and reports `Pending` when the kernel says `EAGAIN`.
fn without_waiting<T>(poll: impl FnOnce(&mut Context<'_>) -> Poll<io::Result<T>>) -> io::Result<T> {
    match poll(&mut Context::from_waker(Waker::noop())) {
        Poll::Ready(result) => result,
        Poll::Pending => Err(io::ErrorKind::WouldBlock.into()),
    }
}

impl WorkerListener for TcpListener {
    type Io = TcpStream;

    async fn accept(&self) -> io::Result<(TcpStream, String)> {
        let (stream, peer) = TcpListener::accept(self).await?;
        let _ = stream.set_nodelay(true);
        Ok((stream, peer.to_string()))
    }

    fn accept_queued(&self) -> io::Result<(TcpStream, String)> {
        let (stream, peer) = without_waiting(|cx| self.poll_accept(cx))?;
        let _ = stream.set_nodelay(true);
        Ok((stream, peer.to_string()))
    }

    fn gate(&self) -> Option<AcceptGate> {
        AcceptGate::new(self.as_fd())
    }

    fn local_address(&self) -> Option<std::net::SocketAddr> {
        self.local_addr().ok()
    }

    async fn accept_gated(&self, gate: &AcceptGate) -> io::Result<(TcpStream, String)> {
        gate.accept().await
    }
}

impl WorkerListener for UnixListener {
    type Io = UnixStream;

    async fn accept(&self) -> io::Result<(UnixStream, String)> {
        let (stream, _) = UnixListener::accept(self).await?;
        Ok((stream, UNIX_PEER.to_string()))
    }

    fn accept_queued(&self) -> io::Result<(UnixStream, String)> {
        let (stream, _) = without_waiting(|cx| self.poll_accept(cx))?;
        Ok((stream, UNIX_PEER.to_string()))
    }

    fn gate(&self) -> Option<AcceptGate> {
        None
    }

    fn local_address(&self) -> Option<std::net::SocketAddr> {
        None
    }

    async fn accept_gated(&self, _gate: &AcceptGate) -> io::Result<(UnixStream, String)> {
        WorkerListener::accept(self).await
    }
}
