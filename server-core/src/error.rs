//! Errors the library reports to the program that embeds it.
//!
//! One variant per failure an embedding program may want to tell apart (a port in use is
//! worth a retry on another port; a missing worker command is not). Messages name what the
//! library was given, never a command-line flag: flags belong to the binary. The OS error
//! behind a variant is its `source()`, not repeated in its message: print the chain
//! (`{:#}` with anyhow) to see both.

use std::io;
use std::net::SocketAddr;
use std::os::fd::RawFd;
use std::path::PathBuf;

/// Why a server could not start or run.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The TLS certificate pair or client CAs cannot be used.
    #[error("cannot set up TLS")]
    Tls(#[from] crate::tls::TlsError),
    /// TLS is terminated by the in-process workers; an external worker terminates its own.
    #[error("TLS is served by the in-process workers: an external worker command terminates TLS itself (e.g. uvicorn --ssl-certfile)")]
    TlsWithWorkerCommand,
    /// Another socket already listens on the address.
    #[error("address {addr} is already in use: stop the other server or choose another port")]
    AddressInUse {
        /// The address asked for.
        addr: SocketAddr,
    },
    /// The address could not be bound for another reason (permission, no such interface).
    #[error("cannot listen on {addr}")]
    Bind {
        /// The address asked for.
        addr: SocketAddr,
        /// What the kernel said.
        source: io::Error,
    },
    /// A host name did not resolve to any address.
    #[error("cannot resolve host {host}: {reason}")]
    Resolve {
        /// The name asked for.
        host: String,
        /// What the resolver said.
        reason: String,
    },
    /// A unix socket path is in use by a server that answers on it.
    #[error("unix socket {} is in use by another server", path.display())]
    UnixSocketInUse {
        /// The socket's path.
        path: PathBuf,
    },
    /// A unix socket path could not be bound (directory missing, permission, a file that
    /// is not a socket).
    #[error("cannot listen on unix socket {}", path.display())]
    UnixSocket {
        /// The socket's path.
        path: PathBuf,
        /// What the kernel said.
        source: io::Error,
    },
    /// An inherited descriptor is not a listening TCP socket.
    #[error("inherited descriptor {fd} {why}")]
    NotAListener {
        /// The descriptor number.
        fd: RawFd,
        /// What it is instead.
        why: String,
    },
    /// `workers` is 0.
    #[error("at least one worker is needed")]
    NoWorkers,
    /// Per-worker sockets were asked for with a listener they cannot be made from.
    #[error("one socket per worker needs a TCP address to bind, not {0}")]
    ReusePortNeedsTcp(&'static str),
    /// The eBPF drain was asked for but the program cannot be loaded or attached.
    #[error("cannot use the eBPF listener drain: {0} (run as root or with CAP_BPF, or use the close drain)")]
    Ebpf(io::Error),
    /// The worker command has no program.
    #[error("the worker command is empty")]
    EmptyWorkerCommand,
    /// The worker command's program is not on `PATH` (or not executable).
    #[error("worker command `{}` not found (or not executable)", program.display())]
    WorkerCommandNotFound {
        /// The program as given.
        program: PathBuf,
    },
    /// An argument or environment entry of a program to exec contains a NUL byte.
    #[error("cannot pass `{text}` to a program: it contains a NUL byte")]
    NulInCommand {
        /// The text, NUL shown as the replacement character.
        text: String,
    },
    /// The pid file could not be written.
    #[error("cannot write the pid file {}", path.display())]
    PidFile {
        /// Its path.
        path: PathBuf,
        /// What the kernel said.
        source: io::Error,
    },
    /// [`crate::Server::serve`] was called from a process that already runs other threads.
    #[error(
        "the server must start before any other thread ({threads} threads found): fork() is \
         only sound from a single-threaded process (see Server::tolerate_other_threads)"
    )]
    OtherThreads {
        /// Threads of this process.
        threads: usize,
    },
    /// The metrics address cannot be served: in use, not an address of this machine, or
    /// the server's own.
    #[error("cannot serve metrics on {addr}: {reason}")]
    MetricsBind {
        /// The address asked for.
        addr: std::net::SocketAddr,
        /// Why, in words.
        reason: String,
    },
    /// A system call the supervisor relies on failed.
    #[error("{what}")]
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
