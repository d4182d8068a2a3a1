//! A multiprocess HTTP server whose supervisor never drops a request when it stops.
//!
//! The parent process binds the listener, forks the workers and turns signals into
//! commands; each worker runs its own tokio runtime and serves an axum [`axum::Router`] on
//! the shared socket. On SIGTERM the kernel is first made to refuse new connections (an
//! `SK_REUSEPORT` eBPF program), the accept queue is emptied, and only then are the workers
//! drained, all in parallel, under one deadline. See `docs/shutdown-protocol.md`.
//!
//! # How one setting travels: the graceful deadline
//!
//! Configuration flows one way, from the outside in, and nothing flows back:
//!
//! 1. `server-cli --timeout-graceful-shutdown SECS` is parsed into
//!    [`ServerConfig::graceful_timeout`] (the CLI only builds the config).
//! 2. [`Server::serve`] hands the config to the supervisor, which copies the deadline into
//!    its state machine's settings (`supervisor::machine::Settings::graceful_timeout`).
//! 3. On [`Command::Stop`] the machine fixes one instant, `now + graceful_timeout`, and
//!    gives each worker the time left before it minus a 100 ms margin, in the
//!    `StopWorker` action; the loop writes it on the worker's channel (`control::ToWorker`).
//! 4. The worker turns that duration into its own deadline: it drains, runs its shutdown
//!    hooks, and aborts what is left when it passes. The machine SIGKILLs any worker still
//!    alive at the instant of step 3.
//!
//! Every other decision follows the same shape: inputs become `supervisor::machine::Event`s
//! (signals through one table, [`ServerHandle`] commands, worker messages, child exits,
//! forks done or failed), and the pure machine answers with actions the loop carries out.

// The protocol rests on Linux only: SO_REUSEPORT groups with eBPF programs, TCP_INFO on a
// listener, /proc. A build elsewhere (the sdist on macOS) stops here with one line instead
// of pages of missing-symbol errors.
#[cfg(not(target_os = "linux"))]
compile_error!("server-core runs on Linux only (SO_REUSEPORT eBPF, TCP_INFO, /proc)");

mod accept_queue;
mod app;
mod byte_pipe;
mod command;
mod config;
mod control;
pub mod cpus;
mod draining;
mod error;
pub mod exec_worker;
mod handle;
mod kernel_refusal;
mod listener;
pub mod logging;
mod metrics;
mod notify;
mod open_files;
mod pid_file;
mod restart_reason;
mod server;
mod signals;
pub mod socket_activation;
mod steering;
mod supervisor;
pub mod tls;
mod worker;

pub use app::{App, ConnectionInfo, Liveness, ShutdownHook, EXIT_APP_CANNOT_START};
pub use command::Command;
pub use config::{Bind, ListenerDrain, ListenerMode, ServerConfig};
pub use draining::{DrainReason, Draining};
pub use error::{Error, Result};
pub use handle::ServerHandle;
pub use nix::sys::signal::Signal;
pub use server::{Server, ShutdownOutcome};
pub use supervisor::external::WorkerCommand;
pub use tls::{ClientAuth, ClientCertificate, TlsSettings};

/// The README's Rust examples, compiled as doctests so that they cannot rot.
#[doc = include_str!("../../README.md")]
#[cfg(doctest)]
pub struct ReadmeDoctests;

/// The Rust examples of `docs/embedding.md`, compiled as doctests.
#[doc = include_str!("../../docs/embedding.md")]
#[cfg(doctest)]
pub struct EmbeddingDocDoctests;

/// The Rust example of `docs/long-lived.md` (a draining WebSocket handler), compiled as a
/// doctest.
#[doc = include_str!("../../docs/long-lived.md")]
#[cfg(doctest)]
pub struct LongLivedDocDoctests;
