//! Errors the library reports to the program that embeds it.

use std::io;
use std::net::SocketAddr;

/// Why a server could not start or run.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Another socket already listens on the address.
    #[error("address {addr} is already in use: stop the other server or choose another --port")]
    AddressInUse {
        /// The address asked for.
        addr: SocketAddr,
    },
    /// The address could not be bound for another reason (permission, no such interface).
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        /// The address asked for.
        addr: SocketAddr,
        /// What the kernel said.
        source: io::Error,
    },
    /// The configuration is not one a server can run with.
    #[error("invalid configuration: {0}")]
    Config(String),
    /// `--listener-drain ebpf` was asked for but the program cannot be loaded or attached.
    #[error("cannot use the eBPF listener drain: {0} (run as root or with CAP_BPF, or use --listener-drain close)")]
    Ebpf(io::Error),
    /// A system call the supervisor relies on failed.
    #[error("{what}: {source}")]
    Sys {
        /// What the supervisor was doing.
        what: &'static str,
        /// What the kernel said.
        source: io::Error,
    },
}

impl Error {
    /// Wraps an OS error with what the supervisor was doing when it happened.
    pub(crate) fn sys(what: &'static str, source: impl Into<io::Error>) -> Self {
        Self::Sys {
            what,
            source: source.into(),
        }
    }
}

/// Result type of this crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;
