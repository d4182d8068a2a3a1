//! The parent's listening sockets: one shared by every worker, or one per worker in a
//! `SO_REUSEPORT` group.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::os::fd::AsFd;

use nix::unistd::Pid;

use super::machine::DrainMode;
use crate::accept_queue::queued_connections;
use crate::config::{Bind, ListenerDrain, ListenerMode, ServerConfig};
use crate::error::{Error, Result};
use crate::kernel_refusal::RefusalProgram;
use crate::listener::{self, Listener, ReusePort};

/// The parent's copies of the listening sockets.
#[derive(Debug)]
pub(crate) enum Listeners {
    /// One socket, shared by every worker: its accept queue belongs to none of them, so a
    /// worker that leaves loses nothing.
    Shared(Option<Listener>),
    /// One socket per worker, all in one reuseport group: the kernel spreads connections
    /// by hash. The parent keeps a copy of each (to refuse and to watch the queues) and
    /// drops it when the worker leaves, so that the worker's own close is the last one:
    /// with `net.ipv4.tcp_migrate_req=1` the kernel then moves its queue to the others.
    PerWorker {
        /// Where every socket of the group is bound.
        addr: SocketAddr,
        /// `listen(2)` backlog of each socket.
        backlog: i32,
        /// The first socket, bound at startup (so that a port in use fails at once), for
        /// the first worker.
        spare: Option<Listener>,
        /// Each worker's socket.
        by_worker: BTreeMap<Pid, Listener>,
        /// The server is stopping: no new socket joins the group.
        closed: bool,
    },
}

impl Listeners {
    /// Binds or adopts the listener(s) and chooses the drain mode, loading the refusal
    /// program when the mode needs it.
    pub(crate) fn open(config: &ServerConfig) -> Result<(Self, DrainMode, Option<RefusalProgram>)> {
        match (&config.bind, config.listener_mode) {
            (Bind::Tcp(addr), mode) => {
                let (drain, program) = resolve_drain_mode(config.listener_drain, ReusePort::Group)?;
                let reuse_port = match (drain, mode) {
                    (_, ListenerMode::ReusePort) | (DrainMode::Ebpf, _) => ReusePort::Group,
                    (DrainMode::Close, ListenerMode::Shared) => ReusePort::Off,
                };
                let first = listener::bind(*addr, config.backlog, reuse_port)?;
                let listeners = match mode {
                    ListenerMode::Shared => Listeners::Shared(Some(Listener::Tcp(first))),
                    ListenerMode::ReusePort => {
                        warn_without_migration();
                        Listeners::PerWorker {
                            // With port 0, the others must join the port the first one got.
                            addr: first
                                .local_addr()
                                .map_err(|e| Error::sys("cannot read the bound address", e))?,
                            backlog: config.backlog,
                            spare: Some(Listener::Tcp(first)),
                            by_worker: BTreeMap::new(),
                            closed: false,
                        }
                    }
                };
                Ok((listeners, drain, program))
            }
            (Bind::Unix(_), ListenerMode::ReusePort) => {
                Err(Error::ReusePortNeedsTcp("a unix socket"))
            }
            (Bind::Unix(path), ListenerMode::Shared) => {
                let (drain, program) = match config.listener_drain {
                    ListenerDrain::Ebpf => {
                        return Err(Error::Ebpf(std::io::Error::other(
                            "the eBPF drain needs a TCP socket, not a unix socket",
                        )))
                    }
                    ListenerDrain::Auto | ListenerDrain::Close => (DrainMode::Close, None),
                };
                let listener = Listener::Unix(listener::bind_unix(path, config.backlog)?);
                Ok((Listeners::Shared(Some(listener)), drain, program))
            }
            (Bind::Inherited(_), ListenerMode::ReusePort) => {
                Err(Error::ReusePortNeedsTcp("an inherited socket"))
            }
            (Bind::Inherited(fd), ListenerMode::Shared) => {
                let (listener, reuse_port) = listener::adopt(*fd)?;
                let (drain, program) = resolve_drain_mode(config.listener_drain, reuse_port)?;
                Ok((
                    Listeners::Shared(Some(Listener::Tcp(listener))),
                    drain,
                    program,
                ))
            }
        }
    }

    /// Runs `spawn` with the socket the next worker serves on; records the worker's own
    /// socket in per-worker mode. `None` once the listeners are closed.
    pub(crate) fn spawn_with<T>(
        &mut self,
        spawn: impl FnOnce(&Listener) -> Result<(Pid, T)>,
    ) -> Result<Option<(Pid, T)>> {
        match self {
            Listeners::Shared(None) => Ok(None),
            Listeners::Shared(Some(listener)) => spawn(listener).map(Some),
            Listeners::PerWorker { closed: true, .. } => Ok(None),
            Listeners::PerWorker {
                addr,
                backlog,
                spare,
                by_worker,
                ..
            } => {
                let socket = match spare.take() {
                    Some(socket) => socket,
                    None => Listener::Tcp(listener::bind_into_group(*addr, *backlog)?),
                };
                let (pid, extra) = spawn(&socket)?;
                by_worker.insert(pid, socket);
                Ok(Some((pid, extra)))
            }
        }
    }

    /// A worker is leaving (told to stop, or gone): drop the parent's copy of its own
    /// socket, so that the worker's close is the last.
    pub(crate) fn worker_leaving(&mut self, pid: Pid) {
        if let Listeners::PerWorker { by_worker, .. } = self {
            by_worker.remove(&pid);
        }
    }

    /// One socket of the group (any: a program attached to one acts on the whole group),
    /// or the shared socket.
    pub(crate) fn any(&self) -> Option<&Listener> {
        match self {
            Listeners::Shared(listener) => listener.as_ref(),
            Listeners::PerWorker {
                spare, by_worker, ..
            } => by_worker.values().next().or(spare.as_ref()),
        }
    }

    /// The socket a worker serves on.
    pub(crate) fn of_worker(&self, pid: Pid) -> Option<&Listener> {
        match self {
            Listeners::Shared(listener) => listener.as_ref(),
            Listeners::PerWorker { by_worker, .. } => by_worker.get(&pid),
        }
    }

    /// Every listening descriptor the parent holds (a process that must not keep the port
    /// open closes them).
    pub(crate) fn raw_fds(&self) -> Vec<std::os::fd::RawFd> {
        use std::os::fd::AsRawFd;
        match self {
            Listeners::Shared(listener) => listener.iter().map(AsRawFd::as_raw_fd).collect(),
            Listeners::PerWorker {
                spare, by_worker, ..
            } => spare
                .iter()
                .chain(by_worker.values())
                .map(AsRawFd::as_raw_fd)
                .collect(),
        }
    }

    /// Connections waiting in every accept queue the parent can see.
    pub(crate) fn queued(&self) -> u32 {
        let count = |l: &Listener| match l {
            Listener::Tcp(l) => queued_connections(l.as_fd()).unwrap_or(0),
            // Unix sockets are drained by the `close` protocol, which reads no queue.
            Listener::Unix(_) => 0,
        };
        match self {
            Listeners::Shared(listener) => listener.as_ref().map_or(0, count),
            Listeners::PerWorker { by_worker, .. } => by_worker.values().map(count).sum(),
        }
    }

    /// Closes the parent's copies for good.
    pub(crate) fn close(&mut self) {
        match self {
            Listeners::Shared(listener) => *listener = None,
            Listeners::PerWorker {
                spare,
                by_worker,
                closed,
                ..
            } => {
                *spare = None;
                by_worker.clear();
                *closed = true;
            }
        }
    }
}

/// Warns when a draining worker's queue in per-worker mode would be reset, not migrated.
fn warn_without_migration() {
    let migrates = std::fs::read_to_string("/proc/sys/net/ipv4/tcp_migrate_req")
        .is_ok_and(|v| v.trim() == "1");
    if !migrates {
        tracing::warn!(
            "one socket per worker without net.ipv4.tcp_migrate_req=1: connections queued on a worker that \
             leaves (rolling restart, scale-down, recycling) are reset instead of moved to the others"
        );
    }
}

/// Chooses the drain mode and loads the refusal program when the mode needs it.
fn resolve_drain_mode(
    asked: ListenerDrain,
    reuse_port: ReusePort,
) -> Result<(DrainMode, Option<RefusalProgram>)> {
    let no_group = || std::io::Error::other("the inherited socket was not bound with SO_REUSEPORT");
    match (asked, reuse_port) {
        (ListenerDrain::Close, _) => Ok((DrainMode::Close, None)),
        (ListenerDrain::Ebpf, ReusePort::Off) => Err(Error::Ebpf(no_group())),
        (ListenerDrain::Ebpf, ReusePort::Group) => {
            let program = RefusalProgram::load().map_err(Error::Ebpf)?;
            Ok((DrainMode::Ebpf, Some(program)))
        }
        (ListenerDrain::Auto, ReusePort::Off) => {
            tracing::warn!(
                "eBPF listener drain unavailable ({}); falling back to close",
                no_group()
            );
            Ok((DrainMode::Close, None))
        }
        (ListenerDrain::Auto, ReusePort::Group) => match RefusalProgram::load() {
            Ok(program) => Ok((DrainMode::Ebpf, Some(program))),
            Err(e) => {
                tracing::warn!("eBPF listener drain unavailable ({e}); falling back to close");
                Ok((DrainMode::Close, None))
            }
        },
    }
}
