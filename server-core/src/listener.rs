//! Binding the shared listening socket in the parent.

use std::io;
use std::net::{SocketAddr, TcpListener};

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
