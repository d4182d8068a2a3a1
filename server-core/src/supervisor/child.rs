//! Starting a child of the supervisor: one fork path for in-process workers, external
//! workers and the new parent of a binary upgrade, and one exec path for a program that
//! inherits the listener at descriptor 3 (systemd's convention).
//!
//! Every fork here relies on the supervisor being single-threaded (checked by
//! [`crate::Server`] before the supervisor starts): the child inherits no lock held by
//! another thread, and does only descriptor and signal set-up before it execs or runs the
//! worker.

use std::ffi::CString;
use std::io::Write;
use std::os::fd::{AsRawFd, RawFd};
use std::os::unix::ffi::OsStrExt;

use nix::sys::signal::Signal;
use nix::unistd::{fork, getppid, Pid};

use crate::error::{Error, Result};
use crate::listener::Listener;
use crate::signals;
use crate::socket_activation::LISTEN_FDS_START;

/// How long a child lives relative to the supervisor.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Lifetime {
    /// A worker: killed when the supervisor dies (`PR_SET_PDEATHSIG`), or it would keep the
    /// listening socket open forever.
    DiesWithParent,
    /// The new parent of a binary upgrade, which takes over from this one.
    Outlives,
}

/// Which side of the fork this process is on.
pub(crate) enum Forked {
    /// The supervisor, with the child's pid.
    Parent(Pid),
    /// The child, already set up for its [`Lifetime`].
    Child,
}

/// Forks once. In the child, before anything else: die with the parent (then check that the
/// parent did not die before that took effect) and give signals back their worker meaning
/// (see [`signals::reset_in_worker`]). A failed fork (EAGAIN under a pids limit, ENOMEM) is
/// returned, never fatal: the supervisor retries later.
pub(crate) fn fork_child(lifetime: Lifetime) -> Result<Forked> {
    let parent_pid = nix::unistd::getpid();
    // SAFETY: the supervisor is single-threaded (checked in `Server`), so the child inherits
    // no lock held by another thread; it only sets up descriptors and signals, then execs
    // or builds its own runtime.
    match unsafe { fork() }.map_err(|e| Error::sys("cannot fork", e))? {
        nix::unistd::ForkResult::Parent { child } => Ok(Forked::Parent(child)),
        nix::unistd::ForkResult::Child => {
            if lifetime == Lifetime::DiesWithParent {
                // The parent may have died before prctl took effect: check its pid after.
                if nix::sys::prctl::set_pdeathsig(Signal::SIGKILL).is_err()
                    || getppid() != parent_pid
                {
                    exit(1);
                }
                signals::reset_in_worker();
            }
            Ok(Forked::Child)
        }
    }
}

/// Leaves a child process: flushes standard output, then `_exit`, so that none of the
/// supervisor's exit handlers or destructors run in the child.
pub(crate) fn exit(status: i32) -> ! {
    let _ = std::io::stdout().flush();
    // SAFETY: _exit ends the process at once; nothing is used after it.
    unsafe { libc::_exit(status) }
}

/// A program to exec with the listener at descriptor 3.
#[derive(Debug, Clone)]
pub(crate) struct ExecSpec {
    /// Absolute path (or a path with a slash) of the program.
    pub(crate) program: CString,
    /// `argv`, including `argv[0]`.
    pub(crate) args: Vec<CString>,
    /// The environment, without any `LISTEN_*` variable (see [`environment_without`]).
    pub(crate) env: Vec<CString>,
}

/// The current environment as exec wants it, minus `LISTEN_*` (the child gets its own) and
/// the variables named in `drop`.
pub(crate) fn environment_without(drop: &[&str]) -> Result<Vec<CString>> {
    std::env::vars_os()
        .filter(|(k, _)| {
            !k.as_bytes().starts_with(b"LISTEN_")
                && !drop.iter().any(|d| k.as_bytes() == d.as_bytes())
        })
        .map(|(k, v)| {
            let mut kv = k.as_bytes().to_vec();
            kv.push(b'=');
            kv.extend_from_slice(v.as_bytes());
            c_string(&kv)
        })
        .collect()
}

/// A C string for exec, or an error naming the NUL byte.
pub(crate) fn c_string(bytes: &[u8]) -> Result<CString> {
    CString::new(bytes).map_err(|_| Error::NulInCommand {
        text: String::from_utf8_lossy(bytes).into_owned(),
    })
}

/// In a child: puts `listener` at descriptor 3 (not close-on-exec, as are the descriptors
/// in `keep`), announces it with `LISTEN_FDS=1`, `LISTEN_PID` and `LISTEN_FDNAMES=http`, and
/// execs. Never returns: when exec fails, the reason goes to stderr and the child exits
/// with 127, as a shell does.
pub(crate) fn exec_with_listener(listener: &Listener, spec: &ExecSpec, keep: &[RawFd]) -> ! {
    // SAFETY: plain descriptor calls in the child; every other descriptor is close-on-exec.
    unsafe {
        if listener.as_raw_fd() != LISTEN_FDS_START {
            libc::dup2(listener.as_raw_fd(), LISTEN_FDS_START);
        }
        libc::fcntl(LISTEN_FDS_START, libc::F_SETFD, 0);
        for &fd in keep {
            libc::fcntl(fd, libc::F_SETFD, 0);
        }
    }
    let mut env = spec.env.clone();
    for var in [
        format!("LISTEN_PID={}", std::process::id()),
        "LISTEN_FDS=1".into(),
        "LISTEN_FDNAMES=http".into(),
    ] {
        if let Ok(var) = CString::new(var) {
            env.push(var);
        }
    }
    let error = nix::unistd::execve(&spec.program, &spec.args, &env);
    eprintln!("error: cannot run {:?}: {error:?}", spec.program);
    exit(127)
}
