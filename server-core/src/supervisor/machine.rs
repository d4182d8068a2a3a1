//! The supervisor's decisions, without any I/O: events in, actions out.
//!
//! Keeping the state machine pure means every transition (stop, kill, respawn, scale,
//! rolling restart, recycling, health) is one `match` that unit tests drive with synthetic
//! events and a fake clock, and the loop in [`super::run`] is the only place that touches
//! processes and sockets.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use nix::unistd::Pid;

use super::memory_limit::{self, MemoryLevel};
use crate::command::Command;
use crate::draining::DrainReason;
use crate::restart_reason::RestartReason;
use crate::ShutdownOutcome;

/// How long the accept queue must read empty before the workers are told to stop: a
/// handshake that was half-way when the refusal started still lands in the queue.
pub(crate) const QUEUE_SETTLE: Duration = Duration::from_millis(5);
/// How often the queue length is read while waiting for it to empty.
pub(crate) const QUEUE_POLL: Duration = Duration::from_millis(1);
/// Longest wait for the accept queue to empty (workers that do not accept at all).
pub(crate) const QUEUE_WAIT_LIMIT: Duration = Duration::from_secs(1);
/// Workers are told to abort what is left this long before the parent's deadline, so
/// that they exit by themselves and the SIGKILL at the deadline is only for the stuck.
pub(crate) const WORKER_ABORT_MARGIN: Duration = Duration::from_millis(100);
/// First delay before respawning a worker that died before it became ready.
const RESPAWN_BACKOFF_START: Duration = Duration::from_millis(100);
/// Longest delay between respawns of workers that keep dying at start.
const RESPAWN_BACKOFF_CAP: Duration = Duration::from_secs(10);

/// How the listener refuses new connections at stop, resolved at startup.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum DrainMode {
    /// Attach the refusal program, wait for an empty queue, then stop the workers.
    Ebpf,
    /// Close the parent's copy first; workers drain until EAGAIN and close theirs.
    Close,
}

/// The settings the supervisor decides with.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Settings {
    /// Workers to keep.
    pub(crate) workers: usize,
    /// How the listener refuses at stop.
    pub(crate) drain: DrainMode,
    /// Budget of every graceful worker stop, and of the whole shutdown.
    pub(crate) graceful_timeout: Duration,
    /// A worker silent for this long (no heartbeat, or not ready after its start) is hung.
    pub(crate) healthcheck_timeout: Duration,
    /// Replacement workers started at once during a rolling restart.
    pub(crate) max_surge: usize,
    /// Whether workers speak the supervisor's protocol (readiness, heartbeats).
    pub(crate) protocol: WorkerProtocol,
    /// Time between SIGTERM and the start of the stop, serving with readiness off.
    pub(crate) shutdown_delay: Duration,
    /// Workers dying before ready, in a row, after which the server gives up.
    pub(crate) max_startup_failures: u32,
    /// How a worker that leaves while the server serves is told to stop.
    pub(crate) leaving: Leaving,
}

/// How a worker that leaves while the server serves (rolling restart, scale-down, a quota
/// or the memory limit) is told to stop.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Leaving {
    /// At once: the socket it accepts from is shared and stays with the others (built-in
    /// workers stop accepting cleanly), or it is its own and its queue migrates.
    AtOnce,
    /// Once new connections are steered away from its own socket and that socket's queue
    /// is empty (external workers with the steering program): a worker that loses what it
    /// accepts while it stops has nothing left to accept.
    AfterItsQueueEmpties,
}

/// What the supervisor can know about its workers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum WorkerProtocol {
    /// In-process workers: they report readiness and send heartbeats.
    Native,
    /// External programs: readiness is observed from outside (the loop probes and reports
    /// [`Event::WorkerReady`]); there are no heartbeats, so no hang detection, and a worker
    /// whose readiness cannot be observed is taken as ready after the health timeout.
    External,
}

/// How often the loop looks for signs that an external worker is serving.
pub(crate) const READINESS_PROBE_INTERVAL: Duration = Duration::from_millis(20);

/// Something the loop observed: the only input of the machine.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Event {
    /// A command, from a signal or a [`crate::ServerHandle`].
    Command(Command),
    /// The loop carried out an [`Action::Spawn`]: a worker was forked.
    Spawned(Pid),
    /// The loop could not carry out an [`Action::Spawn`] (fork failed with EAGAIN under a
    /// pids limit or ENOMEM, or a per-worker socket could not be bound): retried with
    /// the start-up backoff, and never the end of the server.
    SpawnFailed,
    /// A worker reported that it accepts connections.
    WorkerReady(Pid),
    /// A worker's runtime is alive (sent every second).
    WorkerHeartbeat(Pid),
    /// A worker has served its request quota and asks to be replaced.
    WorkerQuotaReached(Pid),
    /// A worker's resident memory is above `--limit-max-memory` (sampled every 250 ms).
    WorkerOverMemory {
        /// Which one.
        pid: Pid,
        /// Its resident memory, in bytes.
        rss_bytes: u64,
        /// How far above the limit that is.
        level: MemoryLevel,
    },
    /// A worker was reaped.
    WorkerExited {
        /// Which one.
        pid: Pid,
        /// Whether it exited with status 0.
        exit: WorkerExit,
    },
    /// The accept queue length, read while [`Supervisor::wants_queue_length`] is true.
    QueueLength(u32),
    /// The queue of a leaving worker's own socket, read for each of
    /// [`Supervisor::leaving_workers`].
    WorkerQueueLength {
        /// Which worker.
        pid: Pid,
        /// Connections waiting in its socket's queue.
        len: u32,
    },
    /// The new generation started by a binary upgrade is serving.
    UpgradeReady,
    /// The new generation of a binary upgrade could not be started, or died before it
    /// was ready.
    UpgradeFailed,
    /// Time passed (the loop woke up for a deadline).
    Tick,
}

/// How a worker process ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum WorkerExit {
    /// Exit status 0.
    Clean,
    /// Non-zero status or killed by a signal.
    Failed,
    /// Exit status [`crate::EXIT_APP_CANNOT_START`]: the app cannot start, and would not at
    /// the next try either.
    AppCannotStart,
}

/// A state change operators (systemd, an upgrading parent) are told about.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Status {
    /// Every worker is ready (first start, or end of a rolling restart).
    Ready,
    /// A rolling restart began.
    Reloading,
    /// The server is stopping.
    Stopping,
}

/// Something the loop must do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Action {
    /// Fork one more worker.
    Spawn,
    /// Attach the refusal program to the listener.
    RefuseNewConnections,
    /// Close the parent's copy of the listener.
    CloseListener,
    /// Tell every worker to answer the readiness route with 503 (and keep serving).
    MarkUnready,
    /// Tell a worker to stop gracefully within the time given.
    StopWorker {
        /// Which one.
        pid: Pid,
        /// Time it has.
        within: Duration,
        /// Why (its app tells long-lived connections).
        reason: DrainReason,
    },
    /// SIGKILL a worker.
    Kill(Pid),
    /// Send new connections to this worker's socket too (it is ready).
    SteerTo(Pid),
    /// Send no new connection to this worker's socket (it is about to leave).
    SteerAway(Pid),
    /// Send every new connection to the socket handed to the new generation (USR2).
    SteerToNewGeneration,
    /// Start a new parent from the executable on disk, handing it the listener.
    StartUpgrade,
    /// Tell the outside world about a state change.
    Notify(Status),
    /// Exit the supervisor: every worker is gone.
    Exit(ShutdownOutcome),
}

/// Why a worker start failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum StartFailure {
    /// The fork itself failed: the system is short of processes or memory for now.
    ForkFailed,
    /// The worker died, or was killed as hung, before it was ready: the app cannot start.
    DiedUnready,
}

/// Where a worker is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum WorkerState {
    /// Forked, not yet accepting.
    Starting {
        /// When it was forked.
        since: Instant,
    },
    /// Accepting connections.
    Ready {
        /// When it last proved its runtime alive.
        heard: Instant,
    },
    /// Still serving, to be stopped once a replacement is ready (rolling restart, quota).
    Retiring {
        /// When it last proved its runtime alive.
        heard: Instant,
        /// Why it is replaced: a restart (HUP) or a recycle (its quota).
        reason: DrainReason,
    },
    /// Out of the steering, still serving, told to stop once its own queue is empty.
    Leaving {
        /// When it gets SIGKILL if still alive (its drain's deadline, set when it left).
        kill_at: Instant,
        /// Why it leaves.
        reason: DrainReason,
        /// When it is told to stop even if its queue is not empty yet.
        give_up_at: Instant,
        /// Since when its queue has been seen empty.
        empty_since: Option<Instant>,
    },
    /// Told to stop; draining.
    Stopping {
        /// When it gets SIGKILL if still alive.
        kill_at: Instant,
    },
    /// SIGKILL sent; waiting to reap it.
    Killed,
}

impl WorkerState {
    /// Whether the worker counts towards the desired number (it is, or will be, serving
    /// for good).
    fn is_current(self) -> bool {
        matches!(
            self,
            WorkerState::Starting { .. } | WorkerState::Ready { .. }
        )
    }
}

/// Where the supervisor is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    /// Keeping the desired number of workers.
    Serving,
    /// SIGTERM received with a shutdown delay: serving on with readiness off until then.
    Delaying {
        /// When the stop proper begins.
        until: Instant,
    },
    /// New connections are refused; waiting for the accept queue to empty.
    EmptyingQueue {
        /// End of the whole graceful stop.
        deadline: Instant,
        /// When to stop waiting for the queue even if it is not empty.
        give_up_at: Instant,
        /// Since when the queue has read empty.
        empty_since: Option<Instant>,
    },
    /// Workers were told to stop; waiting for them to exit.
    Stopping,
    /// Every worker was SIGKILLed; waiting to reap them.
    Killing,
}

/// Whether a binary upgrade is under way.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Upgrade {
    /// None.
    Idle,
    /// The new parent was started and is not ready yet.
    Starting,
}

/// The supervisor's state: the desired worker count, each worker's state, and the phase.
#[derive(Debug)]
pub(crate) struct Supervisor {
    settings: Settings,
    workers: BTreeMap<Pid, WorkerState>,
    phase: Phase,
    upgrade: Upgrade,
    /// Forks that failed in a row (reset by a fork that works).
    fork_failures: u32,
    /// Workers that died before becoming ready, in a row (reset by a worker that gets
    /// ready): the server gives up at `max_startup_failures`. Fork failures do not count
    /// towards that: they say nothing of the app, only of the system for now.
    died_unready: u32,
    /// Spawn actions handed out that the loop has not reported back yet (as
    /// [`Event::Spawned`] or [`Event::SpawnFailed`]); counted as workers so that none is
    /// started twice.
    spawns_pending: usize,
    /// No respawn before this instant (crash-loop backoff).
    respawn_not_before: Option<Instant>,
    /// `Ready` has been announced for the current set of workers.
    announced_ready: bool,
    /// A worker had to be killed at the deadline, or failed while stopping.
    unclean_stop: bool,
    /// Workers kept dying before they were ready: the server gave up.
    gave_up: bool,
    /// Workers replaced or removed so far, by [`RestartReason::index`] (for the metrics).
    restarts: [u64; RestartReason::ALL.len()],
}

impl Supervisor {
    /// A supervisor that wants `settings.workers` workers.
    pub(crate) fn new(settings: Settings) -> Self {
        Self {
            settings,
            workers: BTreeMap::new(),
            phase: Phase::Serving,
            upgrade: Upgrade::Idle,
            fork_failures: 0,
            died_unready: 0,
            spawns_pending: 0,
            respawn_not_before: None,
            announced_ready: false,
            unclean_stop: false,
            gave_up: false,
            restarts: [0; RestartReason::ALL.len()],
        }
    }

    /// Workers replaced or removed so far, by [`RestartReason::index`].
    pub(crate) fn restarts(&self) -> [u64; RestartReason::ALL.len()] {
        self.restarts
    }

    /// Workers the server keeps.
    pub(crate) fn desired_workers(&self) -> usize {
        self.settings.workers
    }

    fn count_restart(&mut self, reason: RestartReason) {
        self.restarts[reason.index()] += 1;
    }

    /// Actions that bring the worker count up to the desired one at startup.
    pub(crate) fn start(&mut self, now: Instant) -> Vec<Action> {
        self.reconcile(now)
    }

    /// Workers not ready yet, which the loop probes when they are external programs.
    pub(crate) fn starting_workers(&self) -> Vec<Pid> {
        self.workers
            .iter()
            .filter(|(_, s)| matches!(s, WorkerState::Starting { .. }))
            .map(|(&pid, _)| pid)
            .collect()
    }

    /// Whether the loop must read the accept queue length and report it.
    pub(crate) fn wants_queue_length(&self) -> bool {
        matches!(self.phase, Phase::EmptyingQueue { .. })
    }

    /// Workers whose own socket's queue the loop must read and report (they are leaving).
    pub(crate) fn leaving_workers(&self) -> Vec<Pid> {
        self.workers
            .iter()
            .filter(|(_, s)| matches!(s, WorkerState::Leaving { .. }))
            .map(|(&pid, _)| pid)
            .collect()
    }

    /// The latest time the loop may sleep until before sending [`Event::Tick`].
    pub(crate) fn next_wakeup(&self, now: Instant) -> Option<Instant> {
        if self.wants_queue_length() || !self.leaving_workers().is_empty() {
            return Some(now + QUEUE_POLL);
        }
        let delay_end = match self.phase {
            Phase::Delaying { until } => Some(until),
            _ => None,
        };
        let health = self.settings.healthcheck_timeout;
        let native = self.settings.protocol == WorkerProtocol::Native;
        let worker_deadlines = self.workers.values().filter_map(|state| match *state {
            WorkerState::Starting { since } if native => Some(since + health),
            WorkerState::Starting { since } => {
                Some((now + READINESS_PROBE_INTERVAL).min(since + health))
            }
            WorkerState::Ready { heard } | WorkerState::Retiring { heard, .. } if native => {
                Some(heard + health)
            }
            WorkerState::Ready { .. } | WorkerState::Retiring { .. } => None,
            WorkerState::Leaving { give_up_at, .. } => Some(give_up_at),
            WorkerState::Stopping { kill_at } => Some(kill_at),
            WorkerState::Killed => None,
        });
        let respawn = self
            .respawn_not_before
            .filter(|_| self.phase == Phase::Serving && self.missing_workers() > 0);
        worker_deadlines.chain(respawn).chain(delay_end).min()
    }

    /// Handles one event and says what to do.
    pub(crate) fn handle(&mut self, event: Event, now: Instant) -> Vec<Action> {
        let mut actions = match event {
            Event::Command(command) => self.on_command(command, now),
            Event::Spawned(pid) => {
                self.spawns_pending = self.spawns_pending.saturating_sub(1);
                self.fork_failures = 0;
                self.workers
                    .insert(pid, WorkerState::Starting { since: now });
                Vec::new()
            }
            Event::SpawnFailed => {
                self.spawns_pending = self.spawns_pending.saturating_sub(1);
                if self.phase == Phase::Serving {
                    self.note_failed_start(StartFailure::ForkFailed, now);
                }
                Vec::new()
            }
            Event::WorkerReady(pid) => {
                let mut steer_to_new_worker = None;
                if let Some(state @ WorkerState::Starting { .. }) = self.workers.get_mut(&pid) {
                    if let WorkerState::Starting { since } = *state {
                        let ms = now.saturating_duration_since(since).as_secs_f64() * 1000.0;
                        tracing::info!("worker {pid} ready {ms:.1} ms after fork");
                    }
                    *state = WorkerState::Ready { heard: now };
                    self.start_succeeded();
                    if self.settings.leaving == Leaving::AfterItsQueueEmpties {
                        steer_to_new_worker = Some(Action::SteerTo(pid));
                    }
                }
                steer_to_new_worker.into_iter().collect()
            }
            Event::WorkerHeartbeat(pid) => {
                if let Some(WorkerState::Ready { heard } | WorkerState::Retiring { heard, .. }) =
                    self.workers.get_mut(&pid)
                {
                    *heard = now;
                }
                Vec::new()
            }
            Event::WorkerQuotaReached(pid) => {
                if let Some(state) = self.workers.get_mut(&pid) {
                    if let WorkerState::Ready { heard } = *state {
                        tracing::info!("worker {pid} served its request quota; replacing it");
                        *state = WorkerState::Retiring {
                            heard,
                            reason: DrainReason::Recycle,
                        };
                        self.count_restart(RestartReason::Quota);
                    }
                }
                Vec::new()
            }
            Event::WorkerOverMemory {
                pid,
                rss_bytes,
                level,
            } => self.on_over_memory(pid, rss_bytes, level, now),
            Event::WorkerExited { pid, exit } => self.on_worker_exit(pid, exit, now),
            Event::QueueLength(len) => self.on_queue_length(len, now),
            Event::WorkerQueueLength { pid, len } => self.on_leaving_queue(pid, Some(len), now),
            Event::UpgradeReady => self.on_upgrade_ready(now),
            Event::UpgradeFailed => {
                if self.upgrade == Upgrade::Starting {
                    tracing::error!(
                        "binary upgrade failed: the new generation did not get ready; serving on"
                    );
                    self.upgrade = Upgrade::Idle;
                }
                Vec::new()
            }
            Event::Tick => self.on_tick(now),
        };
        actions.extend(self.reconcile(now));
        actions.extend(self.exit_if_done());
        actions
    }

    fn on_command(&mut self, command: Command, now: Instant) -> Vec<Action> {
        match (command, self.phase) {
            (Command::StopNow, _) => self.stop_at_once(),
            (Command::Stop, Phase::Serving) if !self.settings.shutdown_delay.is_zero() => {
                let delay = self.settings.shutdown_delay;
                tracing::info!("Shutting down in {delay:?}: readiness off, still serving");
                self.phase = Phase::Delaying { until: now + delay };
                vec![Action::Notify(Status::Stopping), Action::MarkUnready]
            }
            (Command::Stop, Phase::Serving) => {
                let mut actions = vec![Action::Notify(Status::Stopping)];
                actions.extend(self.begin_graceful_stop(now));
                actions
            }
            (Command::Stop, _) => self.stop_at_once(),
            (Command::AddWorker, Phase::Serving) => {
                self.settings.workers += 1;
                tracing::info!("one worker more ({} in all)", self.settings.workers);
                Vec::new()
            }
            (Command::RemoveWorker, Phase::Serving) => self.remove_one_worker(now),
            (Command::Reload, Phase::Serving) => self.begin_rolling_restart(),
            (Command::Upgrade, Phase::Serving) => match self.upgrade {
                Upgrade::Idle => {
                    tracing::info!(
                        "binary upgrade: starting a new parent from the executable on disk"
                    );
                    self.upgrade = Upgrade::Starting;
                    vec![Action::StartUpgrade]
                }
                Upgrade::Starting => {
                    tracing::warn!("binary upgrade ignored: one is already under way");
                    Vec::new()
                }
            },
            (command, _) => {
                tracing::warn!("{} ignored: the server is stopping", command.describe());
                Vec::new()
            }
        }
    }

    fn begin_rolling_restart(&mut self) -> Vec<Action> {
        let mut retiring: u64 = 0;
        for state in self.workers.values_mut() {
            if let WorkerState::Ready { heard } = *state {
                *state = WorkerState::Retiring {
                    heard,
                    reason: DrainReason::Restart,
                };
                retiring += 1;
            }
        }
        self.restarts[RestartReason::Reload.index()] += retiring;
        tracing::info!(
            "rolling restart of {retiring} workers, {} at a time",
            self.settings.max_surge
        );
        self.announced_ready = false;
        vec![Action::Notify(Status::Reloading)]
    }

    fn begin_graceful_stop(&mut self, now: Instant) -> Vec<Action> {
        tracing::info!("Shutting down");
        let deadline = now + self.settings.graceful_timeout;
        let mut actions = Vec::new();
        match self.settings.drain {
            DrainMode::Ebpf => {
                self.phase = Phase::EmptyingQueue {
                    deadline,
                    give_up_at: now + QUEUE_WAIT_LIMIT.min(self.settings.graceful_timeout),
                    empty_since: None,
                };
                actions.push(Action::RefuseNewConnections);
            }
            DrainMode::Close => {
                actions.push(Action::CloseListener);
                actions.extend(self.stop_all_workers(deadline, now, DrainReason::Stop));
            }
        }
        actions
    }

    /// Tells every worker not already stopping to stop by `deadline`.
    fn stop_all_workers(
        &mut self,
        deadline: Instant,
        now: Instant,
        reason: DrainReason,
    ) -> Vec<Action> {
        self.phase = Phase::Stopping;
        let pids: Vec<Pid> = self
            .workers
            .iter()
            .filter(|(_, s)| !matches!(s, WorkerState::Stopping { .. } | WorkerState::Killed))
            .map(|(&pid, _)| pid)
            .collect();
        pids.into_iter()
            .map(|pid| self.stop_worker(pid, deadline, now, reason))
            .collect()
    }

    /// Moves one worker to `Stopping` with its own kill deadline.
    /// A worker above `--limit-max-memory`: replaced once a replacement is ready, drained
    /// at once far over the limit if another worker serves, killed at the ceiling (see
    /// [`super::memory_limit`]).
    fn on_over_memory(
        &mut self,
        pid: Pid,
        rss_bytes: u64,
        level: MemoryLevel,
        now: Instant,
    ) -> Vec<Action> {
        let mib = rss_bytes / (1024 * 1024);
        if let Some(&WorkerState::Ready { heard }) = self.workers.get(&pid) {
            tracing::warn!(
                "worker {pid} uses {mib} MiB, above --limit-max-memory; replacing it (reason: memory)"
            );
            self.workers.insert(
                pid,
                WorkerState::Retiring {
                    heard,
                    reason: DrainReason::Recycle,
                },
            );
            self.count_restart(RestartReason::Memory);
        }
        let Some(&state) = self.workers.get(&pid) else {
            return Vec::new();
        };
        match (level, state) {
            (MemoryLevel::AtCeiling, WorkerState::Killed) => Vec::new(),
            (MemoryLevel::AtCeiling, _) => {
                tracing::error!(
                    "worker {pid} uses {mib} MiB, above {} --limit-max-memory; killing it",
                    memory_limit::KILL_AT
                );
                self.workers.insert(pid, WorkerState::Killed);
                vec![Action::Kill(pid)]
            }
            (MemoryLevel::FarOver, WorkerState::Retiring { reason, .. })
                if self.serving_besides(pid) > 0 =>
            {
                tracing::warn!(
                    "worker {pid} uses {mib} MiB, above {} --limit-max-memory; draining it now",
                    memory_limit::DRAIN_AT_ONCE
                );
                vec![self.release_worker(pid, now, reason)]
            }
            _ => Vec::new(),
        }
    }

    /// Lets a worker go while the server serves: at once, or first out of the steering,
    /// to be told once its own queue is empty (see [`Leaving`]).
    fn release_worker(&mut self, pid: Pid, now: Instant, reason: DrainReason) -> Action {
        let kill_at = now + self.settings.graceful_timeout;
        match self.settings.leaving {
            Leaving::AtOnce => self.stop_worker(pid, kill_at, now, reason),
            Leaving::AfterItsQueueEmpties => {
                self.workers.insert(
                    pid,
                    WorkerState::Leaving {
                        kill_at,
                        reason,
                        give_up_at: now + QUEUE_WAIT_LIMIT,
                        empty_since: None,
                    },
                );
                Action::SteerAway(pid)
            }
        }
    }

    /// The queue of a leaving worker's socket (`None`: not read, its wait is over): it is
    /// told to stop once the queue has stayed empty for [`QUEUE_SETTLE`] (handshakes that
    /// chose it before it left complete meanwhile), or at its give-up time.
    fn on_leaving_queue(&mut self, pid: Pid, len: Option<u32>, now: Instant) -> Vec<Action> {
        let Some(&WorkerState::Leaving {
            kill_at,
            reason,
            give_up_at,
            empty_since,
        }) = self.workers.get(&pid)
        else {
            return Vec::new();
        };
        let empty_since = match len {
            Some(0) => Some(empty_since.unwrap_or(now)),
            _ => None,
        };
        let settled = empty_since.is_some_and(|since| now.duration_since(since) >= QUEUE_SETTLE);
        if settled || now >= give_up_at {
            if !settled {
                tracing::warn!(
                    "worker {pid}: its queue still holds {} connections; stopping it anyway",
                    len.unwrap_or(0)
                );
            }
            return vec![self.stop_worker(pid, kill_at, now, reason)];
        }
        self.workers.insert(
            pid,
            WorkerState::Leaving {
                kill_at,
                reason,
                give_up_at,
                empty_since,
            },
        );
        Vec::new()
    }

    /// Workers other than `pid` that accept connections (ready, or retiring but serving).
    fn serving_besides(&self, pid: Pid) -> usize {
        self.workers
            .iter()
            .filter(|&(&other, state)| {
                other != pid
                    && matches!(
                        state,
                        WorkerState::Ready { .. } | WorkerState::Retiring { .. }
                    )
            })
            .count()
    }

    fn stop_worker(
        &mut self,
        pid: Pid,
        kill_at: Instant,
        now: Instant,
        reason: DrainReason,
    ) -> Action {
        self.workers.insert(pid, WorkerState::Stopping { kill_at });
        Action::StopWorker {
            pid,
            within: kill_at
                .saturating_duration_since(now)
                .saturating_sub(WORKER_ABORT_MARGIN),
            reason,
        }
    }

    fn stop_at_once(&mut self) -> Vec<Action> {
        if self.phase == Phase::Killing {
            return Vec::new();
        }
        tracing::warn!("Stopping at once: killing {} workers", self.workers.len());
        self.phase = Phase::Killing;
        let mut actions = vec![Action::Notify(Status::Stopping)];
        for (&pid, state) in &mut self.workers {
            *state = WorkerState::Killed;
            actions.push(Action::Kill(pid));
        }
        actions.push(Action::CloseListener);
        actions
    }

    fn remove_one_worker(&mut self, now: Instant) -> Vec<Action> {
        if self.settings.workers <= 1 {
            tracing::warn!("one worker fewer ignored: one worker is the minimum");
            return Vec::new();
        }
        self.settings.workers -= 1;
        tracing::info!("one worker fewer ({} in all)", self.settings.workers);
        // Prefer a worker not serving yet (no capacity lost; during a rolling restart the
        // old worker it was to replace then leaves too, as the surplus), then one on its
        // way out, else the newest.
        let rank = |state: &WorkerState| match state {
            WorkerState::Starting { .. } => 2,
            WorkerState::Retiring { .. } => 1,
            _ => 0,
        };
        let victim = self
            .workers
            .iter()
            .filter(|(_, s)| {
                !matches!(
                    s,
                    WorkerState::Leaving { .. }
                        | WorkerState::Stopping { .. }
                        | WorkerState::Killed
                )
            })
            .max_by_key(|(pid, s)| (rank(s), pid.as_raw()))
            .map(|(&pid, _)| pid);
        // A worker leaving a shared listener loses nothing: the socket and its queue stay
        // with the others. It only drains its own connections.
        if victim.is_some() {
            self.count_restart(RestartReason::ScaleDown);
        }
        victim
            .map(|pid| vec![self.release_worker(pid, now, DrainReason::ScaleDown)])
            .unwrap_or_default()
    }

    fn on_worker_exit(&mut self, pid: Pid, exit: WorkerExit, now: Instant) -> Vec<Action> {
        let Some(state) = self.workers.remove(&pid) else {
            return Vec::new();
        };
        if self.phase != Phase::Serving {
            if exit != WorkerExit::Clean && state != WorkerState::Killed {
                self.unclean_stop = true;
            }
            return Vec::new();
        }
        match state {
            WorkerState::Leaving { .. } | WorkerState::Stopping { .. } | WorkerState::Killed => {}
            WorkerState::Starting { .. } if exit == WorkerExit::AppCannotStart => {
                // Another start would fail the same way: no crash loop.
                tracing::error!(
                    "worker {pid}: the app cannot start (its error is above); giving up"
                );
                self.died_unready = self.settings.max_startup_failures.saturating_sub(1);
                self.note_failed_start(StartFailure::DiedUnready, now);
            }
            WorkerState::Starting { .. } => {
                tracing::error!("worker {pid} died before it was ready ({exit:?})");
                self.note_failed_start(StartFailure::DiedUnready, now);
            }
            WorkerState::Ready { .. } | WorkerState::Retiring { .. } => {
                tracing::error!("worker {pid} exited unexpectedly ({exit:?}); replacing it");
                self.count_restart(RestartReason::Crash);
            }
        }
        Vec::new()
    }

    /// A worker got ready: the app can start, so the start-up backoff starts over, unless
    /// forks are still failing.
    fn start_succeeded(&mut self) {
        self.died_unready = 0;
        if self.fork_failures == 0 {
            self.respawn_not_before = None;
        }
    }

    /// Starts that failed in a row, of either kind.
    fn failed_starts(&self) -> u32 {
        self.fork_failures + self.died_unready
    }

    /// Counts a start that failed and delays the next one (exponential backoff), so that an
    /// app that cannot start, or a fork refused by a pids limit, does not make the parent
    /// fork in a loop. Only workers that died unready can make the server give up.
    fn note_failed_start(&mut self, failure: StartFailure, now: Instant) {
        match failure {
            StartFailure::ForkFailed => self.fork_failures += 1,
            StartFailure::DiedUnready => self.died_unready += 1,
        }
        if self.died_unready >= self.settings.max_startup_failures && self.phase == Phase::Serving {
            tracing::error!(
                "{} workers in a row died before they were ready; giving up (see the errors above)",
                self.died_unready
            );
            self.gave_up = true;
            self.phase = Phase::Stopping;
            return;
        }
        let backoff = RESPAWN_BACKOFF_START
            .saturating_mul(1 << self.failed_starts().min(16).saturating_sub(1))
            .min(RESPAWN_BACKOFF_CAP);
        tracing::warn!(
            "{} failed worker starts in a row; next start in {backoff:?}",
            self.failed_starts()
        );
        self.respawn_not_before = Some(now + backoff);
    }

    fn on_queue_length(&mut self, len: u32, now: Instant) -> Vec<Action> {
        let Phase::EmptyingQueue {
            deadline,
            give_up_at,
            empty_since,
        } = self.phase
        else {
            return Vec::new();
        };
        let empty_since = if len == 0 {
            Some(empty_since.unwrap_or(now))
        } else {
            None
        };
        let settled = empty_since.is_some_and(|since| now.duration_since(since) >= QUEUE_SETTLE);
        if settled || now >= give_up_at || self.workers.is_empty() {
            if !settled {
                tracing::warn!(
                    "accept queue still holds {len} connections; stopping workers anyway"
                );
            }
            let mut actions = self.stop_all_workers(deadline, now, DrainReason::Stop);
            actions.push(Action::CloseListener);
            return actions;
        }
        self.phase = Phase::EmptyingQueue {
            deadline,
            give_up_at,
            empty_since,
        };
        Vec::new()
    }

    /// The new generation serves from the same socket: stop ours without any refusal
    /// (the socket stays open in the new workers, its queue with them).
    fn on_upgrade_ready(&mut self, now: Instant) -> Vec<Action> {
        if self.upgrade != Upgrade::Starting || self.phase != Phase::Serving {
            return Vec::new();
        }
        tracing::info!("binary upgrade: the new generation is ready; stopping this one");
        self.upgrade = Upgrade::Idle;
        let deadline = now + self.settings.graceful_timeout;
        let leaving = self
            .workers
            .values()
            .filter(|s| !matches!(s, WorkerState::Stopping { .. } | WorkerState::Killed))
            .count() as u64;
        self.restarts[RestartReason::Upgrade.index()] += leaving;
        match self.settings.leaving {
            Leaving::AtOnce => {
                let mut actions = self.stop_all_workers(deadline, now, DrainReason::Restart);
                actions.push(Action::CloseListener);
                actions
            }
            // New connections go to the socket the new generation serves on; each old
            // worker is signalled once its own queue is empty (the parent keeps its copies
            // of their sockets to watch the queues).
            Leaving::AfterItsQueueEmpties => {
                self.phase = Phase::Stopping;
                let pids: Vec<Pid> = self
                    .workers
                    .iter()
                    .filter(|(_, s)| {
                        !matches!(s, WorkerState::Stopping { .. } | WorkerState::Killed)
                    })
                    .map(|(&pid, _)| pid)
                    .collect();
                for pid in pids {
                    self.workers.insert(
                        pid,
                        WorkerState::Leaving {
                            kill_at: deadline,
                            reason: DrainReason::Restart,
                            give_up_at: now + QUEUE_WAIT_LIMIT,
                            empty_since: None,
                        },
                    );
                }
                vec![Action::SteerToNewGeneration]
            }
        }
    }

    fn on_tick(&mut self, now: Instant) -> Vec<Action> {
        let health = self.settings.healthcheck_timeout;
        let mut actions = Vec::new();
        if let Phase::Delaying { until } = self.phase {
            if now >= until {
                actions.extend(self.begin_graceful_stop(now));
            }
        }
        let pids: Vec<(Pid, WorkerState)> = self.workers.iter().map(|(&p, &s)| (p, s)).collect();
        for (pid, state) in pids {
            match state {
                WorkerState::Leaving { give_up_at, .. } if now >= give_up_at => {
                    actions.extend(self.on_leaving_queue(pid, None, now));
                }
                WorkerState::Stopping { kill_at } if now >= kill_at => {
                    tracing::warn!("worker {pid} still running at its deadline: killing it");
                    if self.phase != Phase::Serving {
                        self.unclean_stop = true;
                    }
                    self.workers.insert(pid, WorkerState::Killed);
                    actions.push(Action::Kill(pid));
                }
                WorkerState::Starting { since }
                    if now >= since + health
                        && self.settings.protocol == WorkerProtocol::External =>
                {
                    tracing::warn!(
                        "worker {pid}: no sign of serving {health:?} after its start; taking it as ready"
                    );
                    self.workers.insert(pid, WorkerState::Ready { heard: now });
                    self.start_succeeded();
                }
                WorkerState::Starting { since } if now >= since + health => {
                    tracing::error!(
                        "worker {pid} not ready {health:?} after its start: killing it"
                    );
                    self.workers.insert(pid, WorkerState::Killed);
                    self.note_failed_start(StartFailure::DiedUnready, now);
                    actions.push(Action::Kill(pid));
                }
                WorkerState::Ready { heard } | WorkerState::Retiring { heard, .. }
                    if now >= heard + health
                        && self.phase == Phase::Serving
                        && self.settings.protocol == WorkerProtocol::Native =>
                {
                    tracing::error!(
                        "worker {pid} sent no heartbeat for {health:?} (hung); replacing it"
                    );
                    self.count_restart(RestartReason::Hung);
                    let kill_at = now + self.settings.graceful_timeout;
                    actions.push(self.stop_worker(pid, kill_at, now, DrainReason::Recycle));
                }
                _ => {}
            }
        }
        actions
    }

    /// Workers still to start to reach the desired count.
    fn missing_workers(&self) -> usize {
        let current = self.workers.values().filter(|s| s.is_current()).count();
        self.settings
            .workers
            .saturating_sub(current + self.spawns_pending)
    }

    /// Brings the workers towards the desired set: retires old workers whose replacement
    /// is ready, and starts the missing ones (a few at a time during a rolling restart,
    /// one at a time in a crash loop).
    fn reconcile(&mut self, now: Instant) -> Vec<Action> {
        if self.phase != Phase::Serving {
            return Vec::new();
        }
        let mut actions = Vec::new();
        let ready = |s: &&WorkerState| matches!(s, WorkerState::Ready { .. });
        let ready_count = self.workers.values().filter(ready).count();
        let retiring: Vec<(Pid, DrainReason)> = self
            .workers
            .iter()
            .filter_map(|(&pid, s)| match s {
                WorkerState::Retiring { reason, .. } => Some((pid, *reason)),
                _ => None,
            })
            .collect();
        // Never fewer serving workers than desired: an old one leaves only when a new one
        // is ready to take its place.
        let mut serving = ready_count + retiring.len();
        for (pid, reason) in retiring {
            if serving <= self.settings.workers {
                break;
            }
            actions.push(self.release_worker(pid, now, reason));
            serving -= 1;
        }

        let mut missing = self.missing_workers();
        let has_retiring = self
            .workers
            .values()
            .any(|s| matches!(s, WorkerState::Retiring { .. }));
        if has_retiring {
            let starting = self
                .workers
                .values()
                .filter(|s| matches!(s, WorkerState::Starting { .. }))
                .count()
                + self.spawns_pending;
            missing = missing.min(self.settings.max_surge.saturating_sub(starting));
        }
        if self.failed_starts() > 0 {
            if self.respawn_not_before.is_some_and(|t| now < t) || self.spawns_pending > 0 {
                missing = 0;
            }
            missing = missing.min(1);
        }
        self.spawns_pending += missing;
        actions.extend(std::iter::repeat_n(Action::Spawn, missing));

        let all_ready = !has_retiring
            && self.missing_workers() == 0
            && self.spawns_pending == 0
            && self.workers.values().filter(ready).count() >= self.settings.workers;
        if all_ready && !self.announced_ready {
            self.announced_ready = true;
            actions.push(Action::Notify(Status::Ready));
        }
        actions
    }

    fn exit_if_done(&self) -> Vec<Action> {
        if self.phase != Phase::Serving && self.workers.is_empty() {
            let outcome = if self.gave_up {
                ShutdownOutcome::WorkersKeptFailing
            } else if self.unclean_stop {
                ShutdownOutcome::Forced
            } else {
                ShutdownOutcome::Graceful
            };
            vec![Action::Exit(outcome)]
        } else {
            Vec::new()
        }
    }
}

#[cfg(test)]
mod tests;
