//! The entry point for programs that embed the server.

use crate::app::App;
use crate::config::ServerConfig;
use crate::error::{Error, Result};
use crate::supervisor::external::{PreparedCommand, WorkerCommand};
use crate::{supervisor, worker};

/// How the server ended, for the embedding program's exit status.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ShutdownOutcome {
    /// Every worker finished within the graceful deadline (or was stopped at once on request).
    Graceful,
    /// The deadline passed and workers had to be killed, or a worker failed while stopping.
    Forced,
    /// Workers kept dying before they were ready (`max_startup_failures` in a row): the
    /// app cannot start, and restarting it forever would only hide that.
    WorkersKeptFailing,
}

impl ShutdownOutcome {
    /// The conventional exit status: 0 for [`ShutdownOutcome::Graceful`], 1 otherwise.
    pub fn exit_code(self) -> i32 {
        match self {
            Self::Graceful => 0,
            Self::Forced | Self::WorkersKeptFailing => 1,
        }
    }
}

/// A multiprocess HTTP server: one supervisor process and `config.workers` worker processes.
///
/// ```no_run
/// use axum::{routing::get, Router};
/// use server_core::{Bind, Server, ServerConfig};
///
/// let mut config = ServerConfig::new(Bind::Tcp("127.0.0.1:8000".parse().unwrap()));
/// config.workers = 4;
/// let outcome = Server::new(config)
///     .serve(|| Router::new().route("/", get(|| async { "hello" })))
///     .expect("server failed");
/// std::process::exit(outcome.exit_code());
/// ```
#[derive(Debug)]
pub struct Server {
    config: ServerConfig,
}

impl Server {
    /// A server with this configuration; nothing is bound until [`Server::serve`].
    pub fn new(config: ServerConfig) -> Self {
        Self { config }
    }

    /// Binds the listener, forks the workers and supervises them until SIGTERM/SIGINT (a
    /// graceful, zero-drop stop) or SIGQUIT (at once). Returns in the parent only.
    ///
    /// `make_app` runs inside each worker, after the fork and inside the worker's runtime.
    /// It must be called before any thread is started (no tokio runtime in the caller):
    /// fork() is only sound from a single-threaded process.
    pub fn serve<A: Into<App>>(self, make_app: impl Fn() -> A) -> Result<ShutdownOutcome> {
        ensure_single_threaded()?;
        let make_app = move || make_app().into();
        let config = &self.config;
        let mut body = |start| worker::run(start, config, &make_app);
        supervisor::run(config, supervisor::Workers::InProcess(&mut body))
    }

    /// Like [`Server::serve`], but each worker runs an external program that serves on the
    /// listener it inherits at descriptor 3 (`LISTEN_FDS=1`, `LISTEN_PID`, as systemd
    /// passes sockets), e.g. `uvicorn app:app --fd 3`. The stop protocol is the same up to
    /// the workers: the kernel refuses new connections and the accept queue is emptied
    /// before any worker is asked to stop, so even workers that know nothing of draining
    /// lose nothing that was queued.
    pub fn serve_command(self, command: &WorkerCommand) -> Result<ShutdownOutcome> {
        let prepared = PreparedCommand::new(command)?;
        supervisor::run(&self.config, supervisor::Workers::Command(prepared))
    }
}

/// Refuses to fork from a process that already runs other threads.
fn ensure_single_threaded() -> Result<()> {
    let status = std::fs::read_to_string("/proc/self/status")
        .map_err(|e| Error::sys("cannot read /proc/self/status", e))?;
    let threads = status
        .lines()
        .find_map(|l| l.strip_prefix("Threads:"))
        .and_then(|n| n.trim().parse::<usize>().ok())
        .unwrap_or(1);
    if threads > 1 {
        return Err(Error::Config(format!(
            "Server::serve must run before any other thread is started ({threads} threads found): \
             fork() is only sound from a single-threaded process"
        )));
    }
    Ok(())
}
