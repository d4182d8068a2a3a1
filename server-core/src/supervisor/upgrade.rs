//! Binary upgrade (SIGUSR2): start the executable on disk as a new parent that inherits
//! the listener, and hand over once its workers are ready.
//!
//! The old parent forks; the child puts the listener at descriptor 3, sets `LISTEN_FDS=1`
//! and `LISTEN_PID` to its own pid (systemd's convention, so the new parent adopts the
//! socket instead of binding) plus the descriptor of a pipe, and execs the executable path
//! recorded at startup with the same arguments. The new parent writes one byte to the pipe
//! when all its workers are ready; the old parent then stops its own workers, without any
//! refusal: the socket stays open in the new workers, and with it the accept queue. The
//! port never refuses a connection.

use std::ffi::OsString;
use std::fs::File;
use std::io::Write;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::ffi::OsStrExt;
use std::path::PathBuf;

use nix::fcntl::OFlag;
use nix::unistd::Pid;

use super::child::{c_string, environment_without, exec_with_listener, fork_child, ExecSpec};
use super::child::{Forked, Lifetime};
use crate::error::{Error, Result};

/// Environment variable naming the pipe descriptor the new parent reports readiness on.
const READY_FD_ENV: &str = "SERVER_CORE_UPGRADE_READY_FD";
/// Descriptors at or above this are safe from the `dup2` onto descriptor 3.
const HIGH_FD: RawFd = 10;

/// How to start this program again: recorded at startup, before the file on disk can be
/// replaced by a new build.
#[derive(Debug, Clone)]
pub(crate) struct Relaunch {
    exe: PathBuf,
    args: Vec<OsString>,
}

impl Relaunch {
    /// The running executable's path and arguments.
    pub(crate) fn current() -> Option<Self> {
        Some(Self {
            exe: std::env::current_exe().ok()?,
            args: std::env::args_os().collect(),
        })
    }
}

/// The new parent being started, seen from the old one.
#[derive(Debug)]
pub(crate) struct NewParent {
    /// Its pid (our child until we exit).
    pub(crate) pid: Pid,
    /// Read end of its readiness pipe (non-blocking).
    pub(crate) ready: File,
}

/// Forks and execs the new parent with the listener at descriptor 3.
///
/// `extra_env` entries (`NAME=value`) are added to the new parent's environment.
pub(crate) fn start_new_parent(
    listener: &crate::listener::Listener,
    relaunch: &Relaunch,
    extra_env: &[OsString],
) -> Result<NewParent> {
    let (read, write) = nix::unistd::pipe2(OFlag::O_NONBLOCK | OFlag::O_CLOEXEC)
        .map_err(|e| Error::sys("cannot create the upgrade pipe", e))?;
    let write = move_high(write)?;
    let mut env = environment_without(&[READY_FD_ENV])?;
    for entry in extra_env {
        env.push(c_string(entry.as_bytes())?);
    }
    env.push(c_string(
        format!("{READY_FD_ENV}={}", write.as_raw_fd()).as_bytes(),
    )?);
    let spec = ExecSpec {
        program: c_string(relaunch.exe.as_os_str().as_bytes())?,
        args: relaunch
            .args
            .iter()
            .map(|a| c_string(a.as_bytes()))
            .collect::<Result<Vec<_>>>()?,
        env,
    };
    match fork_child(Lifetime::Outlives)? {
        Forked::Parent(child) => {
            drop(write);
            Ok(NewParent {
                pid: child,
                ready: File::from(read),
            })
        }
        Forked::Child => exec_with_listener(listener, &spec, &[write.as_raw_fd()]),
    }
}

/// Moves a descriptor to a number at or above [`HIGH_FD`] (close-on-exec).
fn move_high(fd: OwnedFd) -> Result<OwnedFd> {
    // SAFETY: F_DUPFD_CLOEXEC returns a new descriptor we own.
    let high = unsafe { libc::fcntl(fd.as_raw_fd(), libc::F_DUPFD_CLOEXEC, HIGH_FD) };
    if high < 0 {
        return Err(Error::sys(
            "cannot move the upgrade pipe",
            std::io::Error::last_os_error(),
        ));
    }
    // SAFETY: `high` is a fresh descriptor nobody else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(high) })
}

/// In a parent started by an upgrade: the pipe to report readiness on (taken from the
/// environment, which is cleaned so that workers do not inherit it).
pub(crate) fn take_ready_notifier() -> Option<File> {
    let fd: RawFd = std::env::var(READY_FD_ENV).ok()?.parse().ok()?;
    std::env::remove_var(READY_FD_ENV);
    // SAFETY: F_GETFD only checks that the descriptor is open.
    if unsafe { libc::fcntl(fd, libc::F_GETFD) } < 0 {
        return None;
    }
    // SAFETY: the old parent passed this descriptor to us alone.
    let file = unsafe { File::from_raw_fd(fd) };
    // SAFETY: make sure workers and exec'd programs do not keep it.
    unsafe { libc::fcntl(fd, libc::F_SETFD, libc::FD_CLOEXEC) };
    Some(file)
}

/// Tells the old parent that the new generation is ready.
pub(crate) fn report_ready(mut notifier: File) {
    let _ = notifier.write_all(b"R");
}
