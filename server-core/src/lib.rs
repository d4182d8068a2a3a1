//! A multiprocess HTTP server whose supervisor never drops a request when it stops.
//!
//! The parent process binds the listener, forks the workers and turns signals into
//! commands; each worker runs its own tokio runtime and serves an axum [`axum::Router`] on
//! the shared socket. On SIGTERM the kernel is first made to refuse new connections (an
//! `SK_REUSEPORT` eBPF program), the accept queue is emptied, and only then are the workers
//! drained, all in parallel, under one deadline. See the README for the protocol.

mod accept_queue;
mod app;
mod command;
mod config;
mod control;
mod error;
mod handle;
mod kernel_refusal;
mod listener;
pub mod logging;
mod notify;
mod pid_file;
mod server;
mod signals;
pub mod socket_activation;
mod supervisor;
mod worker;

pub use app::{App, ShutdownHook};
pub use command::Command;
pub use config::{Bind, ListenerDrain, ListenerMode, ServerConfig};
pub use error::{Error, Result};
pub use handle::ServerHandle;
pub use nix::sys::signal::Signal;
pub use server::{Server, ShutdownOutcome};
pub use supervisor::external::WorkerCommand;
