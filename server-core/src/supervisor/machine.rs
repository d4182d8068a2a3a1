//! The supervisor's decisions, without any I/O: events in, actions out.
//!
//! Keeping the state machine pure means every transition (stop, kill, respawn, scale) is
//! one `match` that unit tests drive with synthetic events and a fake clock, and the loop in
//! [`super::run`] is the only place that touches processes and sockets.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use nix::sys::signal::Signal;
use nix::unistd::Pid;

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

/// Something the loop observed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Event {
    /// A signal recorded by the handler.
    Signal(Signal),
    /// A worker reported that it accepts connections.
    WorkerReady(Pid),
    /// A worker was reaped.
    WorkerExited {
        /// Which one.
        pid: Pid,
        /// Whether it exited with status 0.
        exit: WorkerExit,
    },
    /// The accept queue length, read while [`Supervisor::wants_queue_length`] is true.
    QueueLength(u32),
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
    /// Tell a worker to stop gracefully within the time given.
    StopWorker {
        /// Which one.
        pid: Pid,
        /// Time left before the shared deadline.
        within: Duration,
    },
    /// SIGKILL a worker.
    Kill(Pid),
    /// Exit the supervisor: every worker is gone.
    Exit(ShutdownOutcome),
}

/// Where a worker is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum WorkerState {
    /// Forked, not yet accepting.
    Starting,
    /// Accepting connections.
    Ready,
    /// Told to stop; draining.
    Stopping,
}

/// Where the supervisor is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    /// Keeping the desired number of workers.
    Serving,
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
    Stopping {
        /// When to SIGKILL what is left.
        deadline: Instant,
    },
    /// Every worker was SIGKILLed; waiting to reap them.
    Killing,
}

/// The supervisor's state: the desired worker count, each worker's state, and the phase.
#[derive(Debug)]
pub(crate) struct Supervisor {
    desired: usize,
    workers: BTreeMap<Pid, WorkerState>,
    phase: Phase,
    drain: DrainMode,
    graceful_timeout: Duration,
    /// Workers that died before becoming ready, in a row.
    failed_starts: u32,
    /// Spawn actions handed out that the loop has not reported back through
    /// [`Supervisor::spawned`] yet; counted as workers so that none is started twice.
    spawns_pending: usize,
    /// No respawn before this instant (crash-loop backoff).
    respawn_not_before: Option<Instant>,
    /// A worker had to be killed at the deadline, or failed while stopping.
    unclean_stop: bool,
}

impl Supervisor {
    /// A supervisor that wants `desired` workers.
    pub(crate) fn new(desired: usize, drain: DrainMode, graceful_timeout: Duration) -> Self {
        Self {
            desired,
            workers: BTreeMap::new(),
            phase: Phase::Serving,
            drain,
            graceful_timeout,
            failed_starts: 0,
            spawns_pending: 0,
            respawn_not_before: None,
            unclean_stop: false,
        }
    }

    /// Actions that bring the worker count up to the desired one at startup.
    pub(crate) fn start(&mut self, now: Instant) -> Vec<Action> {
        self.restore_worker_count(now)
    }

    /// Records a worker the loop has just forked.
    pub(crate) fn spawned(&mut self, pid: Pid) {
        self.spawns_pending = self.spawns_pending.saturating_sub(1);
        self.workers.insert(pid, WorkerState::Starting);
    }

    /// Whether the loop must read the accept queue length and report it.
    pub(crate) fn wants_queue_length(&self) -> bool {
        matches!(self.phase, Phase::EmptyingQueue { .. })
    }

    /// The latest time the loop may sleep until before sending [`Event::Tick`].
    pub(crate) fn next_wakeup(&self, now: Instant) -> Option<Instant> {
        match self.phase {
            Phase::Serving => self
                .respawn_not_before
                .filter(|_| self.missing_workers() > 0),
            Phase::EmptyingQueue { .. } => Some(now + QUEUE_POLL),
            Phase::Stopping { deadline } => Some(deadline),
            Phase::Killing => None,
        }
    }

    /// Handles one event and says what to do.
    pub(crate) fn handle(&mut self, event: Event, now: Instant) -> Vec<Action> {
        match event {
            Event::Signal(signal) => self.on_signal(signal, now),
            Event::WorkerReady(pid) => {
                if let Some(state @ WorkerState::Starting) = self.workers.get_mut(&pid) {
                    *state = WorkerState::Ready;
                    self.failed_starts = 0;
                    self.respawn_not_before = None;
                }
                Vec::new()
            }
            Event::WorkerExited { pid, exit } => self.on_worker_exit(pid, exit, now),
            Event::QueueLength(len) => self.on_queue_length(len, now),
            Event::Tick => self.on_tick(now),
        }
    }

    fn on_signal(&mut self, signal: Signal, now: Instant) -> Vec<Action> {
        match (signal, self.phase) {
            (Signal::SIGQUIT, _) => self.stop_at_once(),
            (Signal::SIGTERM | Signal::SIGINT, Phase::Serving) => self.begin_graceful_stop(now),
            (Signal::SIGTERM | Signal::SIGINT, _) => self.stop_at_once(),
            (Signal::SIGTTIN, Phase::Serving) => {
                self.desired += 1;
                tracing::info!("SIGTTIN: one worker more ({} in all)", self.desired);
                self.restore_worker_count(now)
            }
            (Signal::SIGTTOU, Phase::Serving) => self.remove_one_worker(),
            (Signal::SIGHUP, Phase::Serving) => {
                tracing::warn!("SIGHUP received: rolling restart is not implemented yet; ignored");
                Vec::new()
            }
            _ => Vec::new(),
        }
    }

    fn begin_graceful_stop(&mut self, now: Instant) -> Vec<Action> {
        tracing::info!("Shutting down");
        let deadline = now + self.graceful_timeout;
        match self.drain {
            DrainMode::Ebpf => {
                self.phase = Phase::EmptyingQueue {
                    deadline,
                    give_up_at: now + QUEUE_WAIT_LIMIT.min(self.graceful_timeout),
                    empty_since: None,
                };
                vec![Action::RefuseNewConnections]
            }
            DrainMode::Close => {
                let mut actions = vec![Action::CloseListener];
                actions.extend(self.stop_all_workers(deadline, now));
                actions
            }
        }
    }

    fn stop_all_workers(&mut self, deadline: Instant, now: Instant) -> Vec<Action> {
        self.phase = Phase::Stopping { deadline };
        let within = deadline
            .saturating_duration_since(now)
            .saturating_sub(WORKER_ABORT_MARGIN);
        let mut actions = Vec::new();
        for (&pid, state) in &mut self.workers {
            if *state != WorkerState::Stopping {
                *state = WorkerState::Stopping;
                actions.push(Action::StopWorker { pid, within });
            }
        }
        actions.extend(self.exit_if_done());
        actions
    }

    fn stop_at_once(&mut self) -> Vec<Action> {
        if self.phase == Phase::Killing {
            return Vec::new();
        }
        tracing::warn!("Stopping at once: killing {} workers", self.workers.len());
        self.phase = Phase::Killing;
        let mut actions: Vec<Action> = self.workers.keys().map(|&pid| Action::Kill(pid)).collect();
        actions.push(Action::CloseListener);
        actions.extend(self.exit_if_done());
        actions
    }

    fn remove_one_worker(&mut self) -> Vec<Action> {
        if self.desired <= 1 {
            tracing::warn!("SIGTTOU ignored: one worker is the minimum");
            return Vec::new();
        }
        self.desired -= 1;
        tracing::info!("SIGTTOU: one worker fewer ({} in all)", self.desired);
        // Prefer a worker that is not serving yet, else the newest.
        let victim = self
            .workers
            .iter()
            .filter(|(_, s)| **s != WorkerState::Stopping)
            .max_by_key(|(pid, s)| (**s == WorkerState::Starting, pid.as_raw()))
            .map(|(&pid, _)| pid);
        let Some(pid) = victim else {
            return Vec::new();
        };
        self.workers.insert(pid, WorkerState::Stopping);
        // A worker leaving a shared listener loses nothing: the socket and its queue stay
        // with the others. It only drains its own connections.
        vec![Action::StopWorker {
            pid,
            within: self.graceful_timeout.saturating_sub(WORKER_ABORT_MARGIN),
        }]
    }

    fn on_worker_exit(&mut self, pid: Pid, exit: WorkerExit, now: Instant) -> Vec<Action> {
        let Some(state) = self.workers.remove(&pid) else {
            return Vec::new();
        };
        match self.phase {
            Phase::Serving => {
                if state == WorkerState::Stopping {
                    return self.restore_worker_count(now);
                }
                tracing::error!("worker {pid} exited unexpectedly ({exit:?}); replacing it");
                if state == WorkerState::Starting {
                    self.failed_starts += 1;
                    let backoff = RESPAWN_BACKOFF_START
                        .saturating_mul(1 << self.failed_starts.min(16).saturating_sub(1))
                        .min(RESPAWN_BACKOFF_CAP);
                    tracing::warn!(
                        "worker {pid} died before it was ready ({} in a row); next start in {backoff:?}",
                        self.failed_starts
                    );
                    self.respawn_not_before = Some(now + backoff);
                }
                self.restore_worker_count(now)
            }
            Phase::EmptyingQueue { .. } | Phase::Stopping { .. } => {
                if exit == WorkerExit::Failed {
                    self.unclean_stop = true;
                }
                self.exit_if_done()
            }
            Phase::Killing => self.exit_if_done(),
        }
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
            let mut actions = self.stop_all_workers(deadline, now);
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

    fn on_tick(&mut self, now: Instant) -> Vec<Action> {
        match self.phase {
            Phase::Serving => self.restore_worker_count(now),
            Phase::Stopping { deadline } if now >= deadline => {
                tracing::warn!(
                    "graceful shutdown timed out: killing {} workers",
                    self.workers.len()
                );
                self.unclean_stop = true;
                self.phase = Phase::Killing;
                let mut actions: Vec<Action> =
                    self.workers.keys().map(|&pid| Action::Kill(pid)).collect();
                actions.extend(self.exit_if_done());
                actions
            }
            _ => Vec::new(),
        }
    }

    fn missing_workers(&self) -> usize {
        let serving = self
            .workers
            .values()
            .filter(|s| **s != WorkerState::Stopping)
            .count();
        self.desired.saturating_sub(serving + self.spawns_pending)
    }

    fn restore_worker_count(&mut self, now: Instant) -> Vec<Action> {
        if self.phase != Phase::Serving {
            return Vec::new();
        }
        if self.respawn_not_before.is_some_and(|t| now < t) {
            return Vec::new();
        }
        let mut missing = self.missing_workers();
        if self.failed_starts > 0 {
            // Crash loop: one at a time, each after its backoff.
            missing = missing.min(1);
        }
        self.spawns_pending += missing;
        vec![Action::Spawn; missing]
    }

    fn exit_if_done(&self) -> Vec<Action> {
        let stopping = matches!(
            self.phase,
            Phase::EmptyingQueue { .. } | Phase::Stopping { .. } | Phase::Killing
        );
        if stopping && self.workers.is_empty() {
            let outcome = if self.unclean_stop {
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
