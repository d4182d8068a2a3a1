//! The non-blocking pipes the supervisor's loop polls: one byte per message, written
//! from a signal handler (signals) or from any thread (a `ServerHandle`'s commands).

use std::os::fd::{BorrowedFd, OwnedFd};

use nix::fcntl::OFlag;

use crate::error::{Error, Result};

/// A pipe whose ends never block and are closed on exec; `what` names it in the error.
pub(crate) fn open(what: &'static str) -> Result<(OwnedFd, OwnedFd)> {
    nix::unistd::pipe2(OFlag::O_NONBLOCK | OFlag::O_CLOEXEC).map_err(|e| Error::sys(what, e))
}

/// Every byte written since the last call, oldest first (stops at `EAGAIN`).
pub(crate) fn read_available(read: BorrowedFd<'_>) -> Vec<u8> {
    let mut bytes = Vec::new();
    let mut buf = [0u8; 64];
    while let Ok(n @ 1..) = nix::unistd::read(read, &mut buf) {
        bytes.extend_from_slice(&buf[..n]);
    }
    bytes
}
