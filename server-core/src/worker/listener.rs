//! The worker's listener, TCP or unix, behind one interface (as axum's `serve::Listener`):
//! the accept loop and the drain are written once, for either kind.

use std::future::Future;
use std::io;
use std::task::{Context, Poll, Waker};

use std::os::fd::AsFd;
use tokio::io::{AsyncRead, AsyncWrite};

use tokio::net::{TcpListener, TcpStream, UnixListener, UnixStream};

use super::balance::AcceptGate;

/// The client of an accepted connection: its address on TCP, none on a unix socket.
/// Kept as the address and formatted only when an access-log line is written (formatting
/// it for every connection cost 1.7k instructions of the 87k a new connection costs a
/// Python worker, measured with callgrind).
#[derive(Debug, Clone, Copy)]
pub(crate) struct Peer(pub(crate) Option<std::net::SocketAddr>);

impl std::fmt::Display for Peer {
    /// As the access log shows it: `host:port`, or `unix:` for a unix-socket client.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.0 {
            Some(address) => address.fmt(f),
            None => f.write_str("unix:"),
        }
    }
}

/// A listening socket a worker accepts from.
pub(super) trait WorkerListener {
    /// An accepted connection.
    type Io: AsyncRead + AsyncWrite + super::linger::Linger + AsFd + Unpin + Send + 'static;

    /// Waits for the next connection; returns it with its client.
    /// Cancel-safe: when the future is dropped, no connection has been taken.
    fn accept(&self) -> impl Future<Output = io::Result<(Self::Io, Peer)>>;

    /// The next connection already queued, without waiting: `WouldBlock` when the queue
    /// is empty (the drain accepts until then, then closes the socket).
    fn accept_queued(&self) -> io::Result<(Self::Io, Peer)>;

    /// The accept gate that spreads connections over the workers, when this kind of
    /// listener has one (TCP).
    fn gate(&self) -> Option<AcceptGate>;

    /// The address it listens on (TCP).
    fn local_address(&self) -> Option<std::net::SocketAddr>;

    /// Waits for the next connection through `gate`. Cancel-safe, as [`Self::accept`].
    fn accept_gated(&self, gate: &AcceptGate)
        -> impl Future<Output = io::Result<(Self::Io, Peer)>>;
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

    async fn accept(&self) -> io::Result<(TcpStream, Peer)> {
        let (stream, peer) = TcpListener::accept(self).await?;
        let _ = stream.set_nodelay(true);
        Ok((stream, Peer(Some(peer))))
    }

    fn accept_queued(&self) -> io::Result<(TcpStream, Peer)> {
        let (stream, peer) = without_waiting(|cx| self.poll_accept(cx))?;
        let _ = stream.set_nodelay(true);
        Ok((stream, Peer(Some(peer))))
    }

    fn gate(&self) -> Option<AcceptGate> {
        AcceptGate::new(self.as_fd())
    }

    fn local_address(&self) -> Option<std::net::SocketAddr> {
        self.local_addr().ok()
    }

    async fn accept_gated(&self, gate: &AcceptGate) -> io::Result<(TcpStream, Peer)> {
        gate.accept().await
    }
}

impl WorkerListener for UnixListener {
    type Io = UnixStream;

    async fn accept(&self) -> io::Result<(UnixStream, Peer)> {
        let (stream, _) = UnixListener::accept(self).await?;
        Ok((stream, Peer(None)))
    }

    fn accept_queued(&self) -> io::Result<(UnixStream, Peer)> {
        let (stream, _) = without_waiting(|cx| self.poll_accept(cx))?;
        Ok((stream, Peer(None)))
    }

    fn gate(&self) -> Option<AcceptGate> {
        None
    }

    fn local_address(&self) -> Option<std::net::SocketAddr> {
        None
    }

    async fn accept_gated(&self, _gate: &AcceptGate) -> io::Result<(UnixStream, Peer)> {
        WorkerListener::accept(self).await
    }
}
