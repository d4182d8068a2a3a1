//! Forking an in-process worker and preparing it to serve.

use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::net::UnixStream;

use nix::sys::socket::{socketpair, AddressFamily, SockFlag, SockType};
use nix::unistd::Pid;

use super::child::{self, fork_child, Forked, Lifetime};
use crate::error::{Error, Result};
use crate::listener::Listener;
use crate::worker::{WorkerBody, WorkerStart};

/// Forks one worker; its requests are counted in `metrics_slot` of the shared metrics.
///
/// `parent_only_fds` are descriptors the worker must not keep (signal pipe, the other
/// workers' channels, the eBPF program): a fork copies every descriptor, close-on-exec or
/// not, and a stray copy of another worker's channel would hide that worker's death.
/// Returns the worker's pid and the parent's end of its channel (non-blocking).
pub(crate) fn spawn_worker(
    listener: &Listener,
    parent_only_fds: &[RawFd],
    metrics_slot: Option<usize>,
    body: &mut WorkerBody<'_>,
) -> Result<(Pid, UnixStream)> {
    let (parent_end, worker_end) = socketpair(
        AddressFamily::Unix,
        SockType::Stream,
        None,
        SockFlag::SOCK_CLOEXEC,
    )
    .map_err(|e| Error::sys("cannot create a worker channel", e))?;
    match fork_child(Lifetime::DiesWithParent)? {
        Forked::Parent(child) => {
            drop(worker_end);
            let control = UnixStream::from(parent_end);
            control
                .set_nonblocking(true)
                .map_err(|e| Error::sys("cannot make a worker channel non-blocking", e))?;
            Ok((child, control))
        }
        Forked::Child => {
            for &fd in parent_only_fds {
                // SAFETY: these descriptors belong to the parent's objects, which the child
                // never uses or drops (it leaves through child::exit).
                drop(unsafe { OwnedFd::from_raw_fd(fd) });
            }
            drop(parent_end);
            if let Some(slot) = metrics_slot {
                crate::metrics::become_worker(slot);
            }
            // SAFETY: the child owns its copy of the listening descriptor from now on; the
            // parent's listener value is never dropped in this process.
            let listener = unsafe { listener.same_kind_from_raw(listener.as_raw_fd()) };
            let control = UnixStream::from(worker_end);
            child::exit(body(WorkerStart { listener, control }))
        }
    }
}
