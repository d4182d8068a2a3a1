//! The entry point for programs that embed the server.

use crate::app::App;
use crate::config::ServerConfig;
use crate::error::{Error, Result};
use crate::handle::{CommandPipe, ServerHandle};
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
    /// Created by the first [`Server::handle`]; polled by the supervisor.
    commands: Option<CommandPipe>,
    /// What to do when other threads run at [`Server::serve`].
    other_threads: OtherThreads,
}

/// What [`Server::serve`] does when the process already runs other threads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum OtherThreads {
    /// Refuse to start (the default): fork() is only sound from a single-threaded process.
    Refuse,
    /// Start anyway: the caller vouches that its threads hold no lock a worker needs.
    Tolerate,
}

impl Server {
    /// A server with this configuration; nothing is bound until [`Server::serve`].
    pub fn new(config: ServerConfig) -> Self {
        Self {
            config,
            commands: None,
            other_threads: OtherThreads::Refuse,
        }
    }

    /// A handle that stops, reloads or scales this server from code (another thread, a
    /// signal handler, or an app in a worker), as the signals do. Call it before
    /// [`Server::serve`]; every call returns a handle to the same server.
    pub fn handle(&mut self) -> Result<ServerHandle> {
        let pipe = match self.commands.take() {
            Some(pipe) => pipe,
            None => CommandPipe::new()?,
        };
        let handle = pipe.handle();
        self.commands = Some(pipe);
        Ok(handle)
    }

    /// Lets [`Server::serve`] start although this process runs other threads, for a
    /// program that keeps a thread to drive a [`ServerHandle`].
    ///
    /// The supervisor forks workers for as long as it runs, and a forked child gets only
    /// the forking thread: a lock another thread held at that instant stays locked in the
    /// child for good. A thread that only sleeps, waits on a channel or a socket, and calls
    /// the handle (one `write(2)`) holds no such lock. One that runs an async runtime, logs,
    /// or prints may: a worker that deadlocks on it never gets ready and is replaced after
    /// the health timeout. Without this call, other threads make `serve` fail.
    pub fn tolerate_other_threads(mut self) -> Self {
        self.other_threads = OtherThreads::Tolerate;
        self
    }

    /// Binds the listener, forks the workers and supervises them until SIGTERM/SIGINT (a
    /// graceful, zero-drop stop) or SIGQUIT (at once). Returns in the parent only.
    ///
    /// `make_app` runs inside each worker, after the fork and inside the worker's runtime.
    /// It must be called before any thread is started (no tokio runtime in the caller):
    /// fork() is only sound from a single-threaded process.
    pub fn serve<A: Into<App>>(self, make_app: impl Fn() -> A) -> Result<ShutdownOutcome> {
        self.check_threads()?;
        let make_app = move || make_app().into();
        let config = &self.config;
        // A bad pair stops the start here, in one line; workers inherit the good one.
        let tls = config
            .tls
            .as_ref()
            .map(crate::tls::InheritedTls::prepare)
            .transpose()?;
        let mut body = |start| worker::run(start, config, &make_app, tls.clone());
        supervisor::run(
            config,
            supervisor::Workers::InProcess(&mut body),
            self.commands,
        )
    }

    /// Like [`Server::serve`], but each worker runs an external program that serves on the
    /// listener it inherits at descriptor 3 (`LISTEN_FDS=1`, `LISTEN_PID`, as systemd
    /// passes sockets), e.g. `uvicorn app:app --fd 3`. The stop protocol is the same up to
    /// the workers: the kernel refuses new connections and the accept queue is emptied
    /// before any worker is asked to stop, so even workers that know nothing of draining
    /// lose nothing that was queued.
    pub fn serve_command(self, command: &WorkerCommand) -> Result<ShutdownOutcome> {
        self.check_threads()?;
        if self.config.tls.is_some() {
            return Err(Error::TlsWithWorkerCommand);
        }
        let prepared = PreparedCommand::new(command)?;
        supervisor::run(
            &self.config,
            supervisor::Workers::Command(prepared),
            self.commands,
        )
    }

    /// Like [`Server::serve`], but each worker execs `worker`'s program, which serves as a
    /// built-in worker through [`crate::exec_worker::run_exec_worker`] (readiness,
    /// heartbeats, the drain: every guarantee of [`Server::serve`]). For apps that need a
    /// process of their own kind, such as a Python interpreter of the user's virtualenv.
    pub fn serve_exec(self, worker: &crate::exec_worker::ExecWorker) -> Result<ShutdownOutcome> {
        self.check_threads()?;
        let prepared = crate::exec_worker::PreparedExec::new(worker)?;
        // Checked here, in one line, before any worker starts; each worker loads it again.
        if let Some(settings) = &self.config.tls {
            crate::tls::InheritedTls::prepare(settings)?;
        }
        let config = &self.config;
        let mut body = |start| prepared.exec(start, config);
        supervisor::run(
            config,
            supervisor::Workers::InProcess(&mut body),
            self.commands,
        )
    }

    /// Refuses to fork from a process that already runs other threads, unless told to
    /// tolerate them.
    fn check_threads(&self) -> Result<()> {
        match (self.other_threads, threads_of_this_process()?) {
            (_, 1) => Ok(()),
            (OtherThreads::Refuse, threads) => Err(Error::OtherThreads { threads }),
            (OtherThreads::Tolerate, threads) => {
                tracing::warn!(
                    "{} other threads run beside the supervisor: they must hold no lock at fork time",
                    threads - 1
                );
                Ok(())
            }
        }
    }
}

/// How many threads this process runs (from `/proc/self/status`).
fn threads_of_this_process() -> Result<usize> {
    let status = std::fs::read_to_string("/proc/self/status")
        .map_err(|e| Error::sys("cannot read /proc/self/status", e))?;
    Ok(status
        .lines()
        .find_map(|l| l.strip_prefix("Threads:"))
        .and_then(|n| n.trim().parse::<usize>().ok())
        .unwrap_or(1))
}
