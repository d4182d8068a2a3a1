//! Binding the shared listening socket in the parent.

use std::io;
use std::net::{SocketAddr, TcpListener};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, IntoRawFd, RawFd};
use std::os::unix::net::UnixListener;
use std::path::Path;

use socket2::{Domain, Protocol, Socket, Type};

use crate::error::{Error, Result};

/// Whether the listener joins a reuseport group, which is what lets a program be attached
/// to it at shutdown (see [`crate::kernel_refusal`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ReusePort {
    /// `SO_REUSEPORT` is set (a group of one socket, shared by every worker).
    Group,
    /// Plain listener.
    Off,
}

/// A listening socket as the parent holds it: TCP, or a Unix domain socket (`--uds`).
#[derive(Debug)]
pub(crate) enum Listener {
    /// TCP (IPv4 or IPv6).
    Tcp(TcpListener),
    /// Unix domain stream socket.
    Unix(UnixListener),
}

impl Listener {
    /// Where clients connect, for the log (`http://127.0.0.1:8000`, `unix:/run/app.sock`).
    pub(crate) fn url(&self) -> String {
        match self {
            Listener::Tcp(l) => l
                .local_addr()
                .map_or_else(|_| "http://?".into(), |a| format!("http://{a}")),
            Listener::Unix(l) => l
                .local_addr()
                .ok()
                .and_then(|a| a.as_pathname().map(|p| format!("unix:{}", p.display())))
                .unwrap_or_else(|| "unix:?".into()),
        }
    }

    /// The same socket, as an object owning descriptor `fd` (a worker's inherited copy).
    ///
    /// # Safety
    /// `fd` must be an open descriptor of this socket that nothing else owns.
    pub(crate) unsafe fn same_kind_from_raw(&self, fd: RawFd) -> Listener {
        // SAFETY: forwarded to the caller.
        unsafe {
            match self {
                Listener::Tcp(_) => Listener::Tcp(TcpListener::from_raw_fd(fd)),
                Listener::Unix(_) => Listener::Unix(UnixListener::from_raw_fd(fd)),
            }
        }
    }
}

impl AsFd for Listener {
    fn as_fd(&self) -> BorrowedFd<'_> {
        match self {
            Listener::Tcp(l) => l.as_fd(),
            Listener::Unix(l) => l.as_fd(),
        }
    }
}

impl AsRawFd for Listener {
    fn as_raw_fd(&self) -> RawFd {
        self.as_fd().as_raw_fd()
    }
}

/// Binds and listens on the Unix domain socket `path`. A socket file left by a server
/// that is gone (connecting to it is refused) is replaced; one that answers is in use.
pub(crate) fn bind_unix(path: &Path, backlog: i32) -> Result<UnixListener> {
    let unix_error = |source: io::Error| Error::UnixSocket {
        path: path.to_path_buf(),
        source,
    };
    if path.exists() {
        match std::os::unix::net::UnixStream::connect(path) {
            Ok(_) => {
                return Err(Error::UnixSocketInUse {
                    path: path.to_path_buf(),
                })
            }
            // A socket file left by a server that is gone: replace it.
            Err(e) if e.kind() == io::ErrorKind::ConnectionRefused => {
                std::fs::remove_file(path).map_err(unix_error)?;
            }
            Err(e) => return Err(unix_error(e)),
        }
    }
    let socket = Socket::new(Domain::UNIX, Type::STREAM, None).map_err(unix_error)?;
    let address = socket2::SockAddr::unix(path).map_err(unix_error)?;
    socket.bind(&address).map_err(unix_error)?;
    socket.listen(backlog).map_err(unix_error)?;
    socket.set_nonblocking(true).map_err(unix_error)?;
    Ok(UnixListener::from(std::os::fd::OwnedFd::from(socket)))
}

/// Binds and listens on `addr`.
///
/// The order matters: `bind` happens before `SO_REUSEPORT` is set, so an address that any
/// other socket already listens on is reported as in use (with `SO_REUSEPORT` set first, a
/// second server of the same user would silently join and share the port). `listen` then
/// creates the reuseport group. Close-on-exec and non-blocking are set for the workers.
pub(crate) fn bind(addr: SocketAddr, backlog: i32, reuse_port: ReusePort) -> Result<TcpListener> {
    let bind_error = |source: io::Error| match source.kind() {
        io::ErrorKind::AddrInUse => Error::AddressInUse { addr },
        _ => Error::Bind { addr, source },
    };
    // socket2 creates sockets with SOCK_CLOEXEC.
    let socket = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))
        .map_err(|e| Error::sys("cannot create the listening socket", e))?;
    socket
        .set_reuse_address(true)
        .map_err(|e| Error::sys("cannot set SO_REUSEADDR", e))?;
    if addr.is_ipv6() {
        socket
            .set_only_v6(true)
            .map_err(|e| Error::sys("cannot set IPV6_V6ONLY", e))?;
    }
    socket.bind(&addr.into()).map_err(bind_error)?;
    if reuse_port == ReusePort::Group {
        socket
            .set_reuse_port(true)
            .map_err(|e| Error::sys("cannot set SO_REUSEPORT", e))?;
    }
    socket.listen(backlog).map_err(bind_error)?;
    socket
        .set_nonblocking(true)
        .map_err(|e| Error::sys("cannot make the listener non-blocking", e))?;
    Ok(socket.into())
}

/// Binds one more socket into the reuseport group already listening on `addr`
/// (`SO_REUSEPORT` before `bind`, which is what lets it join).
pub(crate) fn bind_into_group(addr: SocketAddr, backlog: i32) -> Result<TcpListener> {
    let socket = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))
        .map_err(|e| Error::sys("cannot create a listening socket", e))?;
    let setup = || -> io::Result<()> {
        socket.set_reuse_address(true)?;
        socket.set_reuse_port(true)?;
        if addr.is_ipv6() {
            socket.set_only_v6(true)?;
        }
        socket.bind(&addr.into())?;
        socket.listen(backlog)?;
        socket.set_nonblocking(true)
    };
    setup().map_err(|source| Error::Bind { addr, source })?;
    Ok(socket.into())
}

/// Takes over a listening socket this process inherited (socket activation, `--fd`, a
/// binary upgrade). Checks that it is a listening TCP socket, makes it close-on-exec (the
/// workers it is forked to keep it; programs they exec do not) and non-blocking, and reports
/// whether it belongs to a reuseport group (only then can the refusal program attach).
pub(crate) fn adopt(fd: RawFd) -> Result<(TcpListener, ReusePort)> {
    let invalid = |why: String| Error::NotAListener { fd, why };
    // SAFETY: F_GETFD only reads the descriptor table.
    if unsafe { libc::fcntl(fd, libc::F_GETFD) } < 0 {
        return Err(invalid("is not open".into()));
    }
    // SAFETY: the descriptor is open and was handed to this process to own.
    let socket = unsafe { Socket::from_raw_fd(fd) };
    let check = |socket: &Socket| -> io::Result<Option<String>> {
        if socket.r#type()? != Type::STREAM {
            return Ok(Some("is not a stream socket".into()));
        }
        let domain = socket.domain()?;
        if domain != Domain::IPV4 && domain != Domain::IPV6 {
            return Ok(Some("is not a TCP socket".into()));
        }
        if !socket.is_listener()? {
            return Ok(Some("is not listening".into()));
        }
        Ok(None)
    };
    match check(&socket) {
        Ok(None) => {}
        Ok(Some(why)) => {
            // Not ours to close: leave it to whoever passed it.
            let _ = socket.into_raw_fd();
            return Err(invalid(why));
        }
        Err(e) => {
            let _ = socket.into_raw_fd();
            return Err(invalid(format!("is not a socket ({e})")));
        }
    }
    socket
        .set_cloexec(true)
        .map_err(|e| Error::sys("cannot make the inherited listener close-on-exec", e))?;
    socket
        .set_nonblocking(true)
        .map_err(|e| Error::sys("cannot make the inherited listener non-blocking", e))?;
    let reuse_port = match socket.reuse_port() {
        Ok(true) => ReusePort::Group,
        _ => ReusePort::Off,
    };
    Ok((socket.into(), reuse_port))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_port_in_use_is_reported_as_such_even_with_reuse_port() {
        let first = bind("127.0.0.1:0".parse().unwrap(), 16, ReusePort::Group).unwrap();
        let addr = first.local_addr().unwrap();
        let second = bind(addr, 16, ReusePort::Group).unwrap_err();
        assert!(
            matches!(second, Error::AddressInUse { addr: a } if a == addr),
            "{second}"
        );
    }
}
