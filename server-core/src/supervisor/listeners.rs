//! The parent's listening sockets: one shared by every worker, or one per worker in a
//! `SO_REUSEPORT` group (asked with `--reuse-port`, or chosen for external workers when
//! eBPF is available), with new connections steered to the ready workers where eBPF is
//! available: see [`crate::steering`].

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::os::fd::AsFd;

use nix::unistd::Pid;

use super::machine::{DrainMode, WorkerProtocol};
use crate::accept_queue::queued_connections;
use crate::config::{Bind, ListenerDrain, ListenerMode, ServerConfig};
use crate::error::{Error, Result};
use crate::kernel_refusal::RefusalProgram;
use crate::listener::{self, Listener, ReusePort};
use crate::steering::SteeringProgram;

/// The parent's copies of the listening sockets.
#[derive(Debug)]
pub(crate) enum Listeners {
    /// One socket, shared by every worker: its accept queue belongs to none of them, so a
    /// worker that leaves loses nothing.
    Shared(Option<Listener>),
    /// One socket per worker, all in one reuseport group: the kernel spreads connections
    /// by hash. The parent keeps a copy of each (to refuse and to watch the queues) and
    /// (without steering) drops it when the worker leaves, so that the worker's own close
    /// is the last one: with `net.ipv4.tcp_migrate_req=1` the kernel then moves its queue
    /// to the others.
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
        /// For external workers and `--reuse-port`: the program that sends new
        /// connections to `members` only. The parent then keeps each worker's socket
        /// until the worker is reaped (to watch its queue), and the socket of a worker
        /// that died with connections queued goes to its replacement with them.
        steering: Option<Steering>,
    },
}

/// The steering program and who it sends new connections to.
#[derive(Debug)]
pub(crate) struct Steering {
    program: SteeringProgram,
    /// Ready workers that are not leaving, in the order they got ready.
    members: Vec<Pid>,
    /// Sockets of workers that died with connections in their queue, for the next workers.
    held: Vec<Listener>,
    /// The socket handed to a new generation (USR2), once there is one.
    handed_over: Option<Listener>,
    /// The new generation is ready: new connections go to `handed_over` only.
    new_generation_serves: bool,
}

impl Listeners {
    /// Binds or adopts the listener(s) and chooses the drain mode, loading the refusal
    /// program when the mode needs it.
    pub(crate) fn open(
        config: &ServerConfig,
        protocol: WorkerProtocol,
    ) -> Result<(Self, DrainMode, Option<RefusalProgram>)> {
        match (&config.bind, config.listener_mode) {
            (Bind::Tcp(addr), mode) => {
                let (drain, program) = resolve_drain_mode(config.listener_drain, ReusePort::Group)?;
                // Steering for external workers (which cannot stop accepting cleanly), and
                // for built-in workers on sockets of their own: the kernel may reset a
                // connection whose handshake completes as its listener closes (the child
                // is queued on a socket no longer listening; 2-3 runs in 80 of a HUP
                // test under a CPU hog), so a leaving worker is first left out of the
                // selection and closes its socket only once its queue has stayed empty.
                let steering = match (protocol, mode, drain) {
                    (WorkerProtocol::External, ListenerMode::Shared, DrainMode::Ebpf)
                    | (_, ListenerMode::ReusePort, DrainMode::Ebpf) => load_steering(mode),
                    _ => None,
                };
                let per_worker = mode == ListenerMode::ReusePort || steering.is_some();
                let reuse_port = match (drain, per_worker) {
                    (_, true) | (DrainMode::Ebpf, _) => ReusePort::Group,
                    (DrainMode::Close, false) => ReusePort::Off,
                };
                let first = listener::bind(*addr, config.backlog, reuse_port)?;
                if let Some(steering) = &steering {
                    steering
                        .program
                        .attach(first.as_fd())
                        .map_err(|e| Error::sys("cannot attach the steering program", e))?;
                }
                let listeners = match per_worker {
                    false => Listeners::Shared(Some(Listener::Tcp(first))),
                    true => {
                        if steering.is_none() {
                            warn_without_migration();
                        }
                        Listeners::PerWorker {
                            // With port 0, the others must join the port the first one got.
                            addr: first
                                .local_addr()
                                .map_err(|e| Error::sys("cannot read the bound address", e))?,
                            backlog: config.backlog,
                            spare: Some(Listener::Tcp(first)),
                            by_worker: BTreeMap::new(),
                            closed: false,
                            steering,
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
                steering,
                ..
            } => {
                let held = steering.as_mut().and_then(|s| s.held.pop());
                let socket = match held.or_else(|| spare.take()) {
                    Some(socket) => socket,
                    None => Listener::Tcp(listener::bind_into_group(*addr, *backlog)?),
                };
                let (pid, extra) = spawn(&socket)?;
                by_worker.insert(pid, socket);
                Ok(Some((pid, extra)))
            }
        }
    }

    /// The socket a new generation (USR2) serves on: the shared one, or with steering a new
    /// socket of the group (which gets new connections once the new generation is ready).
    /// Per-worker sockets without steering cannot be handed over as one.
    pub(crate) fn for_new_generation(&mut self) -> std::result::Result<Option<&Listener>, String> {
        match self {
            Listeners::Shared(listener) => Ok(listener.as_ref()),
            Listeners::PerWorker {
                steering: None, ..
            } => Err(
                "a binary upgrade hands over one shared socket: not available with one socket per worker"
                    .into(),
            ),
            Listeners::PerWorker {
                addr,
                backlog,
                steering: Some(steering),
                ..
            } => {
                if steering.handed_over.is_none() {
                    let socket = listener::bind_into_group(*addr, *backlog)
                        .map_err(|e| format!("cannot open a socket for the new generation: {e}"))?;
                    steering.handed_over = Some(Listener::Tcp(socket));
                }
                Ok(steering.handed_over.as_ref())
            }
        }
    }

    /// Sends every new connection to the socket handed to the new generation.
    pub(crate) fn steer_to_handed_over(&mut self) {
        let Listeners::PerWorker {
            steering: Some(steering),
            ..
        } = self
        else {
            return;
        };
        steering.members.clear();
        steering.new_generation_serves = true;
        let Some(socket) = &steering.handed_over else {
            return;
        };
        if let Err(e) = steering.program.set_members(&[socket.as_fd()]) {
            tracing::error!("cannot steer new connections to the new generation: {e}");
        }
    }

    /// Whether new connections are steered to ready workers (external workers with eBPF).
    pub(crate) fn steers(&self) -> bool {
        matches!(
            self,
            Listeners::PerWorker {
                steering: Some(_),
                ..
            }
        )
    }

    /// A worker is ready: new connections may go to it.
    pub(crate) fn steer_to(&mut self, pid: Pid) {
        self.change_members(|members| {
            if !members.contains(&pid) {
                members.push(pid);
            }
        });
    }

    /// A worker is about to leave: no new connection goes to it from now on.
    pub(crate) fn steer_away(&mut self, pid: Pid) {
        self.change_members(|members| members.retain(|&m| m != pid));
    }

    fn change_members(&mut self, change: impl FnOnce(&mut Vec<Pid>)) {
        let Listeners::PerWorker {
            by_worker,
            steering: Some(steering),
            ..
        } = self
        else {
            return;
        };
        change(&mut steering.members);
        // Once a new generation serves (USR2), every new connection goes to its socket,
        // whatever this generation's workers do (an empty map would let the kernel choose
        // among every socket of the group, the leaving workers' too).
        let sockets: Vec<_> = match (&steering.handed_over, steering.new_generation_serves) {
            (Some(socket), true) => vec![socket.as_fd()],
            _ => steering
                .members
                .iter()
                .filter_map(|pid| by_worker.get(pid).map(AsFd::as_fd))
                .collect(),
        };
        if let Err(e) = steering.program.set_members(&sockets) {
            tracing::error!("cannot steer new connections to the ready workers: {e}");
        }
    }

    /// Connections waiting in the accept queue of a worker's own socket (per-worker mode).
    pub(crate) fn queued_on(&self, pid: Pid) -> u32 {
        match self {
            Listeners::PerWorker { by_worker, .. } => by_worker.get(&pid).map_or(0, queued_on),
            Listeners::Shared(_) => 0,
        }
    }

    /// A worker is leaving (told to stop, or gone): drop the parent's copy of its own
    /// socket, so that the worker's close is the last. With steering, the copy is kept
    /// while the worker lives (the worker is out of the selection, so nothing new reaches
    /// it), and when it is gone a socket with connections still queued is kept for the next
    /// worker, which serves them.
    pub(crate) fn worker_leaving(&mut self, pid: Pid, gone: bool) {
        let Listeners::PerWorker {
            by_worker,
            steering,
            ..
        } = self
        else {
            return;
        };
        match steering {
            None => {
                by_worker.remove(&pid);
            }
            Some(_) if !gone => {}
            Some(_) => {
                self.steer_away(pid);
                let Listeners::PerWorker {
                    by_worker,
                    steering: Some(steering),
                    closed: false,
                    ..
                } = self
                else {
                    return;
                };
                if let Some(socket) = by_worker.remove(&pid) {
                    // With a migrating program (or tcp_migrate_req) the kernel moves its
                    // queue to the ready workers when it closes, the program choosing;
                    // otherwise, or with no ready worker to take it, the queue waits for
                    // the replacement, which gets this socket.
                    let migrates = (steering.program.migrates() || queues_migrate())
                        && !steering.members.is_empty();
                    if queued_on(&socket) > 0 && !migrates {
                        steering.held.push(socket);
                    }
                }
            }
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
                spare,
                by_worker,
                steering,
                ..
            } => spare
                .iter()
                .chain(by_worker.values())
                .chain(steering.iter().flat_map(|s| s.held.iter()))
                .map(AsRawFd::as_raw_fd)
                .chain(steering.iter().flat_map(|s| s.program.raw_fds()))
                .collect(),
        }
    }

    /// Connections waiting in every accept queue the parent can see.
    pub(crate) fn queued(&self) -> u32 {
        match self {
            Listeners::Shared(listener) => listener.as_ref().map_or(0, queued_on),
            Listeners::PerWorker {
                by_worker,
                steering,
                ..
            } => by_worker
                .values()
                .chain(steering.iter().flat_map(|s| s.held.iter()))
                .map(queued_on)
                .sum(),
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
                steering,
                ..
            } => {
                *spare = None;
                by_worker.clear();
                if let Some(steering) = steering {
                    steering.held.clear();
                }
                *closed = true;
            }
        }
    }
}

/// Connections waiting in one socket's accept queue (unix sockets: 0, the `close` protocol
/// reads no queue).
fn queued_on(listener: &Listener) -> u32 {
    match listener {
        Listener::Tcp(l) => queued_connections(l.as_fd()).unwrap_or(0),
        Listener::Unix(_) => 0,
    }
}

/// Loads the steering program (external workers, or `--reuse-port`: `mode` says which);
/// without it (no CAP_BPF) external workers share one socket and `--reuse-port` sockets
/// are chosen by the kernel's hash alone, and the reason is logged once.
fn load_steering(mode: ListenerMode) -> Option<Steering> {
    match SteeringProgram::load() {
        Ok(program) => {
            tracing::info!(
                "one socket per worker, new connections steered by eBPF to ready workers \
                 (a leaving worker's queue empties before it is told to stop)"
            );
            Some(Steering {
                program,
                members: Vec::new(),
                held: Vec::new(),
                handed_over: None,
                new_generation_serves: false,
            })
        }
        Err(e) => {
            tracing::warn!(
                "eBPF steering unavailable ({e}): {}",
                match mode {
                    ListenerMode::Shared =>
                        "external workers share one socket; a worker signalled \
                        at a rolling restart may lose connections it accepts while it stops",
                    ListenerMode::ReusePort =>
                        "a connection whose handshake completes as a \
                        leaving worker's socket closes may be reset",
                }
            );
            None
        }
    }
}

/// Whether the kernel moves a closing listener's queue to the others of its group
/// (`net.ipv4.tcp_migrate_req=1`).
fn queues_migrate() -> bool {
    std::fs::read_to_string("/proc/sys/net/ipv4/tcp_migrate_req").is_ok_and(|v| v.trim() == "1")
}

/// Warns when a draining worker's queue in per-worker mode would be reset, not migrated.
fn warn_without_migration() {
    if !queues_migrate() {
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
