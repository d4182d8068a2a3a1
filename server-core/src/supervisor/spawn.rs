//! Forking a worker process and preparing it to serve.

use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::net::UnixStream;

use nix::sys::signal::Signal;
use nix::sys::socket::{socketpair, AddressFamily, SockFlag, SockType};
use nix::unistd::{fork, getppid, ForkResult, Pid};

use crate::error::{Error, Result};
use crate::listener::Listener;
use crate::signals;

/// What a new worker process starts with.
#[derive(Debug)]
pub(crate) struct WorkerStart {
    /// The shared listening socket (the same socket as the parent's, not a copy).
    pub(crate) listener: Listener,
    /// The worker's end of its channel to the supervisor.
    pub(crate) control: UnixStream,
}

/// The entry point run in each forked worker; returns the process exit status.
pub(crate) type WorkerBody<'a> = dyn FnMut(WorkerStart) -> i32 + 'a;

/// Forks one worker.
///
/// `parent_only_fds` are descriptors the worker must not keep (signal pipe, the other
/// workers' channels, the eBPF program): a fork copies every descriptor, close-on-exec or
/// not, and a stray copy of another worker's channel would hide that worker's death.
/// Returns the worker's pid and the parent's end of its channel (non-blocking).
pub(crate) fn spawn_worker(
    listener: &Listener,
    parent_only_fds: &[RawFd],
    body: &mut WorkerBody<'_>,
) -> Result<(Pid, UnixStream)> {
    let (parent_end, worker_end) = socketpair(
        AddressFamily::Unix,
        SockType::Stream,
        None,
        SockFlag::SOCK_CLOEXEC,
    )
    .map_err(|e| Error::sys("cannot create a worker channel", e))?;
    let parent_pid = nix::unistd::getpid();
    // SAFETY: the supervisor is single-threaded (checked in Server::serve), so the child
    // inherits no lock held by another thread.
    match unsafe { fork() }.map_err(|e| Error::sys("cannot fork a worker", e))? {
        ForkResult::Parent { child } => {
            drop(worker_end);
            let control = UnixStream::from(parent_end);
            control
                .set_nonblocking(true)
                .map_err(|e| Error::sys("cannot make a worker channel non-blocking", e))?;
            Ok((child, control))
        }
        ForkResult::Child => {
            // Die with the parent: a worker left alone would keep the port open forever.
            // The parent may have died before prctl ran, hence the pid check after it.
            if nix::sys::prctl::set_pdeathsig(Signal::SIGKILL).is_err() || getppid() != parent_pid {
                std::process::exit(1);
            }
            signals::reset_in_worker();
            for &fd in parent_only_fds {
                // SAFETY: these descriptors belong to the parent's objects, which the child
                // never uses or drops (it leaves through process::exit).
                drop(unsafe { OwnedFd::from_raw_fd(fd) });
            }
            drop(parent_end);
            // SAFETY: the child owns its copy of the listening descriptor from now on; the
            // parent's listener value is never dropped in this process.
            let listener = unsafe { listener.same_kind_from_raw(listener.as_raw_fd()) };
            let control = UnixStream::from(worker_end);
            let status = body(WorkerStart { listener, control });
            std::process::exit(status);
        }
    }
}
