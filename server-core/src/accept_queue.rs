//! Reading how many connections wait in a listener's accept queue.

use std::io;
use std::os::fd::{AsRawFd, BorrowedFd};

/// Number of connections that completed the handshake and wait for `accept()`.
///
/// For a socket in LISTEN state, Linux reports the accept queue length in
/// `tcp_info.tcpi_unacked` (and the backlog in `tcpi_sacked`). The supervisor polls it after
/// the listener refuses new connections, and stops the workers only once it is zero, so
/// closing the socket cannot reset a queued connection.
pub(crate) fn queued_connections(listener: BorrowedFd<'_>) -> io::Result<u32> {
    // SAFETY: tcp_info is plain old data; all-zero is a valid value.
    let mut info: libc::tcp_info = unsafe { std::mem::zeroed() };
    let mut len = std::mem::size_of::<libc::tcp_info>() as libc::socklen_t;
    // SAFETY: the pointer and length describe `info`, which outlives the call.
    let rc = unsafe {
        libc::getsockopt(
            listener.as_raw_fd(),
            libc::IPPROTO_TCP,
            libc::TCP_INFO,
            (&mut info as *mut libc::tcp_info).cast(),
            &mut len,
        )
    };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(info.tcpi_unacked)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::{TcpListener, TcpStream};
    use std::os::fd::AsFd;

    #[test]
    fn counts_connections_waiting_for_accept() {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        assert_eq!(queued_connections(listener.as_fd()).unwrap(), 0);
        let _a = TcpStream::connect(addr).unwrap();
        let _b = TcpStream::connect(addr).unwrap();
        // On loopback the handshake completes inside connect(), so both are queued now.
        assert_eq!(queued_connections(listener.as_fd()).unwrap(), 2);
        drop(listener.accept().unwrap());
        assert_eq!(queued_connections(listener.as_fd()).unwrap(), 1);
    }
}
