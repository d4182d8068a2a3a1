//! Workers that exec a program which then serves as a built-in worker: the Python ASGI
//! workers. The supervisor forks as for an in-process worker (readiness, heartbeats, the
//! drain messages all hold), and the child execs `program` with the listener at descriptor
//! 3, its channel to the supervisor at 4 and the shared metrics memory at 5, and the
//! server's configuration in [`CONFIG_VARIABLE`]. That program calls [`run_exec_worker`]
//! with its app (the Python extension module does), and serves exactly as a forked worker.
//!
//! Why exec and not fork alone: the interpreter of a Python app is the one of the user's
//! virtualenv, whatever version it is, with its own prefix and site-packages, and the
//! supervisor never loads or links it (it stays small and single-threaded).

use std::ffi::{CString, OsString};
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, RawFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::net::UnixStream;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use crate::app::App;
use crate::config::{Bind, ServerConfig};
use crate::error::Result;
use crate::listener::Listener;
use crate::worker::WorkerStart;

/// Where the exec'd worker finds its channel to the supervisor.
pub const CONTROL_FD: RawFd = 4;
/// Where it finds the shared metrics memory (when there is one).
pub const METRICS_FD: RawFd = 5;
/// The environment variable that carries the server's configuration (JSON).
pub const CONFIG_VARIABLE: &str = "SERVER_CORE_WORKER";

/// The program each worker execs, and what it gets besides the server's configuration.
#[derive(Debug, Clone)]
pub struct ExecWorker {
    /// Program to run (absolute, or with a slash).
    pub program: PathBuf,
    /// Arguments, `argv[0]` included.
    pub args: Vec<OsString>,
    /// Variables added to the environment.
    pub env: Vec<(OsString, OsString)>,
}

/// What the supervisor tells an exec'd worker.
#[derive(Debug, Serialize, Deserialize)]
struct Handover {
    config: ServerConfig,
    /// Its slot in the shared metrics memory.
    slot: Option<usize>,
    /// Whether it counts requests there (`--metrics-bind`).
    count_requests: bool,
}

/// An [`ExecWorker`] turned into what `execve` takes, built in the parent before any fork.
#[derive(Debug)]
pub(crate) struct PreparedExec {
    program: CString,
    args: Vec<CString>,
    /// The environment without the configuration, which is added per worker (its slot).
    env: Vec<CString>,
}

impl PreparedExec {
    /// Checks the program's name and arguments (no NUL bytes).
    pub(crate) fn new(worker: &ExecWorker) -> Result<Self> {
        let c = crate::supervisor::child::c_string;
        let mut env: Vec<CString> = std::env::vars_os()
            .filter(|(k, _)| k != CONFIG_VARIABLE && !k.as_bytes().starts_with(b"LISTEN_"))
            .chain(worker.env.iter().cloned())
            .map(|(k, v)| c(&[k.as_bytes(), b"=", v.as_bytes()].concat()))
            .collect::<Result<_>>()?;
        env.shrink_to_fit();
        Ok(Self {
            program: c(worker.program.as_os_str().as_bytes())?,
            args: worker
                .args
                .iter()
                .map(|a| c(a.as_bytes()))
                .collect::<Result<_>>()?,
            env,
        })
    }

    /// In the forked child: moves the listener, the channel and the metrics memory to
    /// their descriptors and execs. Returns only if the exec failed (the exit status).
    pub(crate) fn exec(&self, start: WorkerStart, config: &ServerConfig) -> i32 {
        let handover = Handover {
            config: config.clone(),
            slot: crate::metrics::region::this_worker_with_index().map(|(index, _)| index),
            count_requests: crate::metrics::region::counts_requests(),
        };
        let Ok(json) = serde_json::to_string(&handover) else {
            return 1;
        };
        let Ok(variable) = CString::new(format!("{CONFIG_VARIABLE}={json}")) else {
            return 1;
        };
        let mut env = self.env.clone();
        env.push(variable);
        let moves = [
            (
                start.listener.as_raw_fd(),
                crate::socket_activation::LISTEN_FDS_START,
            ),
            (start.control.as_raw_fd(), CONTROL_FD),
        ];
        // SAFETY: descriptor calls in the single-threaded child, before exec; each target
        // is made inheritable, everything else stays close-on-exec.
        unsafe {
            // First out of the way of the targets, then onto them.
            let high: Vec<RawFd> = moves
                .iter()
                .map(|&(fd, _)| libc::fcntl(fd, libc::F_DUPFD_CLOEXEC, 100))
                .collect();
            for (&fd, &(_, target)) in high.iter().zip(&moves) {
                libc::dup2(fd, target);
            }
            if let Some(memory) = crate::metrics::region::Region::memory_fd() {
                let high = libc::fcntl(memory, libc::F_DUPFD_CLOEXEC, 100);
                libc::dup2(high, METRICS_FD);
            }
        }
        let Err(error) = nix::unistd::execve(&self.program, &self.args, &env);
        tracing::error!("cannot run {:?}: {error}", self.program);
        127
    }
}

/// Serves as a worker in a process the supervisor exec'd (see the module doc): takes the
/// listener, the channel and the metrics memory from their descriptors and the
/// configuration from [`CONFIG_VARIABLE`], then runs exactly as a forked worker, with the
/// app `make_app` builds. Returns the exit status.
pub fn run_exec_worker(make_app: &dyn Fn() -> App) -> i32 {
    match take_handover() {
        Ok((start, config)) => {
            let tls = match config.tls.as_ref().map(crate::tls::InheritedTls::prepare) {
                Some(Err(e)) => {
                    tracing::error!("cannot use the certificate pair: {e}");
                    return 1;
                }
                Some(Ok(tls)) => Some(tls),
                None => None,
            };
            crate::worker::run(start, &config, make_app, tls)
        }
        Err(e) => {
            tracing::error!("{e}");
            1
        }
    }
}

/// Whether this process was exec'd as a worker by a supervisor.
pub fn is_exec_worker() -> bool {
    std::env::var_os(CONFIG_VARIABLE).is_some()
}

fn take_handover() -> std::result::Result<(WorkerStart, ServerConfig), String> {
    let json = std::env::var(CONFIG_VARIABLE)
        .map_err(|_| format!("not started by a supervisor: {CONFIG_VARIABLE} is not set"))?;
    // Not passed on to anything the app starts.
    std::env::remove_var(CONFIG_VARIABLE);
    let handover: Handover =
        serde_json::from_str(&json).map_err(|e| format!("bad {CONFIG_VARIABLE}: {e}"))?;
    // SAFETY: the supervisor put these descriptors here for this process alone; each is
    // taken once.
    let listener = unsafe {
        let fd = crate::socket_activation::LISTEN_FDS_START;
        libc::fcntl(fd, libc::F_SETFD, libc::FD_CLOEXEC);
        match handover.config.bind {
            Bind::Unix(_) => Listener::Unix(std::os::unix::net::UnixListener::from_raw_fd(fd)),
            _ => Listener::Tcp(std::net::TcpListener::from_raw_fd(fd)),
        }
    };
    // SAFETY: as above.
    let control = unsafe {
        libc::fcntl(CONTROL_FD, libc::F_SETFD, libc::FD_CLOEXEC);
        UnixStream::from_raw_fd(CONTROL_FD)
    };
    if let Some(slot) = handover.slot {
        // SAFETY: the metrics memfd, put at METRICS_FD by the supervisor, kept open.
        let memory = unsafe { BorrowedFd::borrow_raw(METRICS_FD) };
        // SAFETY: as above.
        unsafe { libc::fcntl(METRICS_FD, libc::F_SETFD, libc::FD_CLOEXEC) };
        if crate::metrics::region::Region::adopt(memory).is_ok() {
            crate::metrics::region::set_count_requests(handover.count_requests);
            crate::metrics::become_worker(slot);
        }
    }
    Ok((WorkerStart { listener, control }, handover.config))
}
