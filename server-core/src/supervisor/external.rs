//! External programs as workers: fork + exec with the listener at descriptor 3, the way
//! systemd passes sockets, so that any server that can serve on an inherited socket
//! (`uvicorn app:app --fd 3`, gunicorn, Node, Go) gets the zero-drop stop.

use std::ffi::{CString, OsString};
use std::os::fd::AsRawFd;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use nix::sys::signal::{SigSet, SigmaskHow, Signal};
use nix::unistd::{fork, getppid, ForkResult, Pid};

use crate::error::{Error, Result};
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
    program: CString,
    args: Vec<CString>,
    /// The environment minus any `LISTEN_*` variables; the child adds its own.
    env: Vec<CString>,
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
            .ok_or_else(|| Error::Config("the worker command is empty".into()))?;
        let resolved = resolve_program(Path::new(program)).ok_or_else(|| {
            Error::Config(format!(
                "worker command `{}` not found (or not executable)",
                Path::new(program).display()
            ))
        })?;
        let cstring = |bytes: &[u8]| {
            CString::new(bytes)
                .map_err(|_| Error::Config("the worker command contains a NUL byte".into()))
        };
        let fd = LISTEN_FDS_START.to_string();
        let args = command
            .argv
            .iter()
            .map(|a| match a.to_str() {
                Some(text) => cstring(text.replace("{fd}", &fd).as_bytes()),
                None => cstring(a.as_bytes()),
            })
            .collect::<Result<Vec<_>>>()?;
        let env = std::env::vars_os()
            .filter(|(k, _)| !k.as_bytes().starts_with(b"LISTEN_"))
            .map(|(k, v)| {
                let mut kv = k.as_bytes().to_vec();
                kv.push(b'=');
                kv.extend_from_slice(v.as_bytes());
                cstring(&kv)
            })
            .collect::<Result<Vec<_>>>()?;
        Ok(Self {
            program: cstring(resolved.as_os_str().as_bytes())?,
            args,
            env,
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
pub(crate) fn spawn_command(
    listener: &crate::listener::Listener,
    command: &PreparedCommand,
) -> Result<Pid> {
    let parent_pid = nix::unistd::getpid();
    // SAFETY: the supervisor is single-threaded; the child only prepares descriptors and
    // signals, then execs (or exits).
    match unsafe { fork() }.map_err(|e| Error::sys("cannot fork a worker", e))? {
        ForkResult::Parent { child } => Ok(child),
        ForkResult::Child => {
            if nix::sys::prctl::set_pdeathsig(Signal::SIGKILL).is_err() || getppid() != parent_pid {
                // SAFETY: leave at once without running the parent's destructors.
                unsafe { libc::_exit(1) }
            }
            signals::reset_in_worker();
            for sig in signals::SUPERVISED {
                // SAFETY: resetting to SIG_DFL installs no code.
                let _ =
                    unsafe { nix::sys::signal::signal(sig, nix::sys::signal::SigHandler::SigDfl) };
            }
            // The parent-only signals are blocked, not ignored, in external workers: a
            // blocked mask survives exec, an ignored disposition can be overridden by the
            // program. Ctrl-C must reach the supervisor only, which then runs the protocol.
            let mut blocked = SigSet::empty();
            signals::PARENT_ONLY.iter().for_each(|&s| blocked.add(s));
            let _ = nix::sys::signal::sigprocmask(SigmaskHow::SIG_SETMASK, Some(&blocked), None);
            // SAFETY: plain descriptor calls; every other descriptor is close-on-exec.
            unsafe {
                if listener.as_raw_fd() != LISTEN_FDS_START {
                    libc::dup2(listener.as_raw_fd(), LISTEN_FDS_START);
                }
                libc::fcntl(LISTEN_FDS_START, libc::F_SETFD, 0);
            }
            let mut env = command.env.clone();
            for var in [
                format!("LISTEN_PID={}", std::process::id()),
                "LISTEN_FDS=1".into(),
                "LISTEN_FDNAMES=http".into(),
            ] {
                if let Ok(var) = CString::new(var) {
                    env.push(var);
                }
            }
            let error = nix::unistd::execve(&command.program, &command.args, &env);
            eprintln!(
                "error: cannot run worker command {:?}: {error:?}",
                command.program
            );
            // SAFETY: exec failed; leave without running the parent's destructors.
            unsafe { libc::_exit(127) }
        }
    }
}
