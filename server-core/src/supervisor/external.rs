//! External programs as workers: fork + exec with the listener at descriptor 3, the way
//! systemd passes sockets, so that any server that can serve on an inherited socket
//! (`uvicorn app:app --fd 3`, gunicorn, Node, Go) gets the zero-drop stop.

use std::ffi::OsString;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use nix::sys::signal::{SigHandler, SigSet, SigmaskHow, Signal};
use nix::unistd::Pid;

use super::child::{c_string, environment_without, exec_with_listener, fork_child, ExecSpec};
use super::child::{Forked, Lifetime};
use crate::error::{Error, Result};
use crate::listener::Listener;
use crate::signals;
use crate::socket_activation::LISTEN_FDS_START;

/// The program each worker runs.
#[derive(Debug, Clone)]
pub struct WorkerCommand {
    /// Program and arguments; `{fd}` in an argument is replaced by the listener's
    /// descriptor number (3).
    pub argv: Vec<OsString>,
    /// Signal that asks a worker to stop gracefully (most servers drain on SIGTERM).
    pub stop_signal: Signal,
}

/// A [`WorkerCommand`] checked and ready to exec.
#[derive(Debug)]
pub(crate) struct PreparedCommand {
    exec: ExecSpec,
    /// Signal that asks a worker to stop gracefully.
    pub(crate) stop_signal: Signal,
}

impl PreparedCommand {
    /// Resolves the program on `PATH` (a missing command is an error at startup, not a
    /// crash loop) and builds the exec arguments.
    pub(crate) fn new(command: &WorkerCommand) -> Result<Self> {
        let (program, _) = command
            .argv
            .split_first()
            .ok_or(Error::EmptyWorkerCommand)?;
        let resolved =
            resolve_program(Path::new(program)).ok_or_else(|| Error::WorkerCommandNotFound {
                program: PathBuf::from(program),
            })?;
        let fd = LISTEN_FDS_START.to_string();
        let args = command
            .argv
            .iter()
            .map(|a| match a.to_str() {
                Some(text) => c_string(text.replace("{fd}", &fd).as_bytes()),
                None => c_string(a.as_bytes()),
            })
            .collect::<Result<Vec<_>>>()?;
        Ok(Self {
            exec: ExecSpec {
                program: c_string(resolved.as_os_str().as_bytes())?,
                args,
                env: environment_without(&[])?,
            },
            stop_signal: command.stop_signal,
        })
    }
}

/// Finds `program` as `execvp` would: a path with a slash as is, else on `PATH`.
fn resolve_program(program: &Path) -> Option<PathBuf> {
    let executable =
        |p: &Path| nix::unistd::access(p, nix::unistd::AccessFlags::X_OK).is_ok() && p.is_file();
    if program.as_os_str().as_bytes().contains(&b'/') {
        return executable(program).then(|| program.to_path_buf());
    }
    std::env::split_paths(&std::env::var_os("PATH")?)
        .map(|dir| dir.join(program))
        .find(|p| executable(p))
}

/// Forks and execs one external worker; returns its pid.
pub(crate) fn spawn_command(listener: &Listener, command: &PreparedCommand) -> Result<Pid> {
    match fork_child(Lifetime::DiesWithParent)? {
        Forked::Parent(child) => Ok(child),
        Forked::Child => {
            for sig in signals::SUPERVISED {
                // SAFETY: resetting to SIG_DFL installs no code.
                let _ = unsafe { nix::sys::signal::signal(sig, SigHandler::SigDfl) };
            }
            // The parent-only signals are blocked, not ignored, in external workers: a
            // blocked mask survives exec, an ignored disposition can be overridden by the
            // program. Ctrl-C must reach the supervisor only, which then runs the protocol.
            let mut blocked = SigSet::empty();
            signals::PARENT_ONLY.iter().for_each(|&s| blocked.add(s));
            let _ = nix::sys::signal::sigprocmask(SigmaskHow::SIG_SETMASK, Some(&blocked), None);
            exec_with_listener(listener, &command.exec, &[])
        }
    }
}
