//! The parent process: a single-threaded loop that owns the listener and the workers.
//!
//! Signals, handle commands, worker messages and child exits become [`machine::Event`]s;
//! the pure [`machine::Supervisor`] answers with [`machine::Action`]s; this loop carries
//! them out, and what comes of them (a worker forked, a fork that failed, an upgrade that
//! could not start) goes back into the machine as events too. There is no async runtime
//! here: fork() is only sound from a single-threaded process.

pub(crate) mod child;
pub(crate) mod external;
mod listeners;
pub(crate) mod machine;
mod memory_limit;
mod observer;
mod process_usage;
mod readiness;
pub(crate) mod spawn;
mod upgrade;

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::fs::File;
use std::io::{ErrorKind, Read, Write};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd};
use std::os::unix::net::UnixStream;
use std::time::Instant;

use nix::poll::{PollFd, PollFlags, PollTimeout};
use nix::sys::signal::{kill, Signal};
use nix::sys::wait::{waitpid, WaitPidFlag, WaitStatus};
use nix::unistd::Pid;

use crate::config::ServerConfig;
use crate::control::{ToParent, ToWorker};
use crate::draining::DrainReason;
use crate::error::{Error, Result};
use crate::handle::CommandPipe;
use crate::kernel_refusal::RefusalProgram;
use crate::notify::SystemdNotifier;
use crate::signals::{meaning_of, SignalMeaning, SignalPipe};
use crate::worker::WorkerBody;
use crate::ShutdownOutcome;
use external::{spawn_command, PreparedCommand};
use listeners::Listeners;
use machine::WorkerProtocol;
use machine::{Action, DrainMode, Event, Leaving, Settings, Status, Supervisor, WorkerExit};
use observer::Observer;
use spawn::spawn_worker;
use upgrade::{NewParent, Relaunch};

/// The parent's end of one worker's channel.
#[derive(Debug)]
struct WorkerChannel {
    stream: UnixStream,
    /// The worker closed its end (it is exiting); stop polling it.
    closed: bool,
}

/// What the workers are.
pub(crate) enum Workers<'a> {
    /// Forked copies of this process running the embedded app.
    InProcess(&'a mut WorkerBody<'a>),
    /// An external program, exec'd in each worker.
    Command(PreparedCommand),
}

/// Everything the loop owns.
struct Parent<'a> {
    listeners: Listeners,
    program: Option<RefusalProgram>,
    signals: SignalPipe,
    /// Commands from [`crate::ServerHandle`]s, when the embedding program asked for one.
    commands: Option<CommandPipe>,
    channels: BTreeMap<Pid, WorkerChannel>,
    /// Pids of the external workers (they have no channel).
    external_pids: BTreeSet<Pid>,
    /// How to exec this program again (SIGUSR2).
    relaunch: Option<Relaunch>,
    /// The new parent of an upgrade under way.
    new_parent: Option<NewParent>,
    /// Set when this parent was started by an upgrade: tells the old parent we are ready.
    upgrade_notifier: Option<File>,
    /// Set when a service manager listens (`NOTIFY_SOCKET`).
    systemd: Option<SystemdNotifier>,
    /// systemd's watchdog: the interval, and when the next `WATCHDOG=1` is due. Sent from
    /// the supervisor's loop, so it proves that the loop itself is alive.
    watchdog: Option<(std::time::Duration, Instant)>,
    workers: Workers<'a>,
    /// Metrics and the memory limit: what the parent samples and publishes.
    observer: Observer,
    /// The process serving `/metrics`, when `--metrics-bind` is on.
    metrics: Option<MetricsProcess>,
}

/// The metrics process and its socket (kept by the parent to start it again if it dies).
struct MetricsProcess {
    listener: std::net::TcpListener,
    pid: Option<Pid>,
    /// No new start before this (a process that keeps dying is not forked in a loop).
    restart_not_before: Instant,
}

/// Binds (or adopts) the listener, starts the workers and supervises them until they are
/// all stopped.
pub(crate) fn run(
    config: &ServerConfig,
    workers: Workers<'_>,
    commands: Option<CommandPipe>,
) -> Result<ShutdownOutcome> {
    if config.workers == 0 {
        return Err(Error::NoWorkers);
    }
    let protocol = match workers {
        Workers::InProcess(_) => WorkerProtocol::Native,
        Workers::Command(_) => WorkerProtocol::External,
    };
    let (listeners, drain, program) = Listeners::open(config, protocol)?;
    let leaving = match listeners.steers() {
        true => Leaving::AfterItsQueueEmpties,
        false => Leaving::AtOnce,
    };
    let signals = SignalPipe::install()?;
    let _pid_file = config
        .pid_file
        .as_deref()
        .map(crate::pid_file::PidFile::create)
        .transpose()?;
    let _unix_socket_file = match &config.bind {
        crate::config::Bind::Unix(path) => Some(UnixSocketFile(path.clone())),
        _ => None,
    };
    log_start(&listeners, drain, config.tls.is_some());
    if let Some(raised) = crate::open_files::raise_to_hard_limit() {
        tracing::info!(
            "open-files limit raised from {} to {} (the hard limit)",
            raised.from,
            raised.to
        );
    }
    let metrics = match config.metrics_bind {
        Some(addr) => {
            let listener = crate::metrics::serve::bind(addr)?;
            crate::metrics::Region::install()?;
            crate::metrics::count_requests();
            let bound = listener.local_addr().unwrap_or(addr);
            tracing::info!("Metrics on http://{bound}/metrics");
            Some(MetricsProcess {
                listener,
                pid: None,
                restart_not_before: Instant::now(),
            })
        }
        None => None,
    };
    // In-process workers share the region even without metrics: their accept gate
    // compares each worker's open connections with the others' (see worker/balance.rs).
    if protocol == WorkerProtocol::Native && config.balance {
        crate::metrics::Region::install()?;
    }
    let observer = Observer::new(
        crate::metrics::Region::get(),
        metrics.is_some(),
        config.limit_max_memory,
    );
    observer.set_queue_capacity(config.backlog);
    let mut parent = Parent {
        listeners,
        program,
        signals,
        commands,
        channels: BTreeMap::new(),
        external_pids: BTreeSet::new(),
        relaunch: Relaunch::current(),
        new_parent: None,
        upgrade_notifier: upgrade::take_ready_notifier(),
        systemd: SystemdNotifier::from_env(),
        watchdog: crate::notify::watchdog_interval().map(|every| (every, Instant::now())),
        workers,
        observer,
        metrics,
    };
    parent.start_metrics_process();
    let mut supervisor = Supervisor::new(Settings {
        workers: config.workers,
        drain,
        graceful_timeout: config.graceful_timeout,
        healthcheck_timeout: config.healthcheck_timeout,
        max_surge: config.max_surge.max(1),
        protocol,
        shutdown_delay: config.shutdown_delay,
        max_startup_failures: config.max_startup_failures.max(1),
        leaving,
    });
    let first = supervisor.start(Instant::now());
    let mut events = parent.execute(first);
    loop {
        // Each event's actions are carried out before the next event is handled, so that
        // the supervisor always decides on the state the previous actions produced; what
        // the actions lead to (a fork done or failed) is handled right after them.
        while let Some(event) = events.pop_front() {
            parent.observer.note(&event);
            let actions = supervisor.handle(event, Instant::now());
            parent.observer.publish(&supervisor);
            if let Some(outcome) = exit_outcome(&actions) {
                parent.execute(actions);
                tracing::info!("Stopping parent process [{}]", std::process::id());
                return Ok(outcome);
            }
            let follow_ups = parent.execute(actions);
            for follow_up in follow_ups.into_iter().rev() {
                events.push_front(follow_up);
            }
        }
        events.extend(parent.wait_for_events(&supervisor)?);
    }
}

/// The outcome, when the actions say to exit.
fn exit_outcome(actions: &[Action]) -> Option<ShutdownOutcome> {
    actions.iter().find_map(|a| match a {
        Action::Exit(outcome) => Some(*outcome),
        _ => None,
    })
}

/// The start-up lines: the parent, where it listens, which drain mode is in force.
fn log_start(listeners: &Listeners, drain: DrainMode, https: bool) {
    tracing::info!("Started parent process [{}]", std::process::id());
    if let Some(listener) = listeners.any() {
        let url = listener.url();
        let url = match https {
            true => url.replacen("http://", "https://", 1),
            false => url,
        };
        tracing::info!("Listening on {url} (Press CTRL+C to quit)");
    }
    match drain {
        DrainMode::Ebpf => tracing::info!(
            "Listener drain: ebpf (at stop the kernel refuses new connections, the queue is emptied, then workers stop)"
        ),
        DrainMode::Close => tracing::info!(
            "Listener drain: close (at stop the parent closes its socket, workers accept until the queue is empty)"
        ),
    }
}

/// The path of a unix socket this server bound; removed when the parent exits.
struct UnixSocketFile(std::path::PathBuf);

impl Drop for UnixSocketFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

/// Delay before the metrics process is started again after it died or could not start.
const METRICS_RESTART_DELAY: std::time::Duration = std::time::Duration::from_secs(1);

/// What woke the loop.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Source {
    Signals,
    Commands,
    Worker(Pid),
    NewParent,
}

impl Parent<'_> {
    /// Sleeps until a signal, a command, a worker message, the new parent's word or the
    /// supervisor's next deadline, and returns what happened.
    fn wait_for_events(&mut self, supervisor: &Supervisor) -> Result<Vec<Event>> {
        let readable = self.poll(supervisor)?;
        self.pet_watchdog();
        let mut events = Vec::new();
        for source in readable {
            match source {
                Source::Signals => events.extend(self.read_signals()),
                Source::Commands => events.extend(
                    self.commands
                        .iter()
                        .flat_map(CommandPipe::drain)
                        .map(Event::Command),
                ),
                Source::Worker(pid) => events.extend(self.read_channel(pid)),
                Source::NewParent => events.extend(self.read_new_parent()),
            }
        }
        events.extend(self.reap());
        self.start_metrics_process();
        let workers: Vec<Pid> = self
            .channels
            .keys()
            .chain(self.external_pids.iter())
            .copied()
            .collect();
        events.extend(self.observer.sample(&self.listeners, &workers));
        events.extend(self.probe_external_readiness(supervisor));
        events.extend(supervisor.leaving_workers().into_iter().map(|pid| {
            Event::WorkerQueueLength {
                pid,
                len: self.listeners.queued_on(pid),
            }
        }));
        if supervisor.wants_queue_length() {
            events.push(Event::QueueLength(self.listeners.queued()));
        }
        events.push(Event::Tick);
        Ok(events)
    }

    /// Polls every source until one is readable or the next deadline (the supervisor's or
    /// the watchdog's) is due; returns the readable ones.
    fn poll(&self, supervisor: &Supervisor) -> Result<Vec<Source>> {
        let now = Instant::now();
        let watchdog_due = self.watchdog.map(|(_, due)| due);
        let metrics_restart = self
            .metrics
            .as_ref()
            .filter(|m| m.pid.is_none())
            .map(|m| m.restart_not_before);
        let wakeup = [
            supervisor.next_wakeup(now),
            watchdog_due,
            self.observer.next_wakeup(),
            metrics_restart,
        ]
        .into_iter()
        .flatten()
        .min();
        let timeout = match wakeup {
            None => PollTimeout::NONE,
            Some(at) => {
                // Round up so that the loop never wakes a hair before the deadline and spins.
                let ms = at.saturating_duration_since(now).as_micros().div_ceil(1000);
                PollTimeout::try_from(ms.min(60_000) as u32).unwrap_or(PollTimeout::MAX)
            }
        };
        let mut sources = vec![Source::Signals];
        if self.commands.is_some() {
            sources.push(Source::Commands);
        }
        sources.extend(
            self.channels
                .iter()
                .filter(|(_, c)| !c.closed)
                .map(|(&pid, _)| Source::Worker(pid)),
        );
        if self.new_parent.is_some() {
            sources.push(Source::NewParent);
        }
        let mut fds: Vec<PollFd<'_>> = sources
            .iter()
            .map(|&source| PollFd::new(self.fd_of(source), PollFlags::POLLIN))
            .collect();
        match nix::poll::poll(&mut fds, timeout) {
            Ok(_) | Err(nix::errno::Errno::EINTR) => {}
            Err(e) => return Err(Error::sys("poll failed in the supervisor", e)),
        }
        Ok(sources
            .iter()
            .zip(&fds)
            .filter(|(_, fd)| fd.revents().is_some_and(|r| !r.is_empty()))
            .map(|(&source, _)| source)
            .collect())
    }

    /// Turns the signals recorded since the last wake-up into commands (see
    /// [`meaning_of`], the one table of what each signal means).
    fn read_signals(&self) -> Vec<Event> {
        let mut events = Vec::new();
        for signal in self.signals.drain() {
            match meaning_of(signal) {
                SignalMeaning::Command(command) => {
                    tracing::info!("{signal}: {}", command.describe());
                    events.push(Event::Command(command));
                }
                SignalMeaning::ChildExited => {}
                SignalMeaning::Ignored(why) => tracing::info!("{signal} ignored: {why}"),
            }
        }
        events
    }

    /// Reaps the children that exited; those that were workers become events (the new
    /// parent of an upgrade is reported by its pipe instead).
    fn reap(&mut self) -> Vec<Event> {
        let stop_signal = match &self.workers {
            Workers::Command(command) => Some(command.stop_signal),
            Workers::InProcess(_) => None,
        };
        let mut events = Vec::new();
        for (pid, exit) in reap_children(stop_signal) {
            if let Some(metrics) = self.metrics.as_mut().filter(|m| m.pid == Some(pid)) {
                tracing::warn!("the metrics process {pid} exited; starting another");
                metrics.pid = None;
                metrics.restart_not_before = Instant::now() + METRICS_RESTART_DELAY;
                continue;
            }
            let was_worker =
                self.channels.remove(&pid).is_some() || self.external_pids.remove(&pid);
            self.listeners.worker_leaving(pid, true);
            if !was_worker {
                continue;
            }
            self.observer.reaped(pid);
            if exit != WorkerExit::Clean {
                tracing::warn!("worker {pid} failed");
            }
            events.push(Event::WorkerExited { pid, exit });
        }
        events
    }

    /// External workers send no readiness message: look for signs that a starting one
    /// serves (it polls or accepts on the listener).
    fn probe_external_readiness(&self, supervisor: &Supervisor) -> Vec<Event> {
        if !matches!(self.workers, Workers::Command(_)) {
            return Vec::new();
        }
        supervisor
            .starting_workers()
            .into_iter()
            .filter(|&pid| {
                self.listeners
                    .of_worker(pid)
                    .and_then(|l| readiness::socket_inode(l.as_fd()))
                    .is_some_and(|inode| readiness::accepts_on(pid, inode))
            })
            .map(Event::WorkerReady)
            .collect()
    }

    /// Sends `WATCHDOG=1` when it is due.
    fn pet_watchdog(&mut self) {
        let (Some((every, due)), Some(systemd)) = (self.watchdog, &self.systemd) else {
            return;
        };
        let now = Instant::now();
        if now >= due {
            systemd.send("WATCHDOG=1");
            self.watchdog = Some((every, now + every));
        }
    }

    fn fd_of(&self, source: Source) -> BorrowedFd<'_> {
        match source {
            Source::Signals => self.signals.fd(),
            Source::Commands => self
                .commands
                .as_ref()
                .map_or_else(|| self.signals.fd(), CommandPipe::fd),
            Source::Worker(pid) => self.channels[&pid].stream.as_fd(),
            Source::NewParent => self
                .new_parent
                .as_ref()
                .map(|p| p.ready.as_fd())
                .unwrap_or_else(|| self.signals.fd()),
        }
    }

    /// Reads the messages a worker sent; notes when it closed its end.
    fn read_channel(&mut self, pid: Pid) -> Vec<Event> {
        let Some(channel) = self.channels.get_mut(&pid) else {
            return Vec::new();
        };
        let mut events = Vec::new();
        let mut buf = [0u8; 64];
        loop {
            match channel.stream.read(&mut buf) {
                Ok(0) => {
                    channel.closed = true;
                    break;
                }
                Ok(n) => events.extend(buf[..n].iter().filter_map(|&b| {
                    ToParent::decode(b).map(|msg| match msg {
                        ToParent::Ready => Event::WorkerReady(pid),
                        ToParent::Heartbeat => Event::WorkerHeartbeat(pid),
                        ToParent::QuotaReached => Event::WorkerQuotaReached(pid),
                    })
                })),
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(e) if e.kind() == ErrorKind::WouldBlock => break,
                Err(_) => {
                    channel.closed = true;
                    break;
                }
            }
        }
        events
    }

    /// Reads the new parent's readiness pipe: one byte when ready, EOF if it died first.
    fn read_new_parent(&mut self) -> Option<Event> {
        let new_parent = self.new_parent.as_mut()?;
        let mut byte = [0u8; 1];
        let event = match new_parent.ready.read(&mut byte) {
            Ok(1) => Event::UpgradeReady,
            Ok(_) => Event::UpgradeFailed,
            Err(e) if e.kind() == ErrorKind::WouldBlock || e.kind() == ErrorKind::Interrupted => {
                return None
            }
            Err(_) => Event::UpgradeFailed,
        };
        if event == Event::UpgradeReady {
            tracing::info!("new parent [{}] is ready", new_parent.pid);
        }
        self.new_parent = None;
        Some(event)
    }

    /// Carries out the supervisor's actions; returns what came of them that the
    /// supervisor must hear about (a worker forked, a fork or an upgrade that failed).
    fn execute(&mut self, actions: Vec<Action>) -> VecDeque<Event> {
        let mut follow_ups = VecDeque::new();
        for action in actions {
            match action {
                Action::Spawn => follow_ups.push_back(self.spawn()),
                Action::RefuseNewConnections => self.refuse_new_connections(),
                Action::CloseListener => self.listeners.close(),
                Action::StopWorker {
                    pid,
                    within,
                    reason,
                } => self.stop_worker(pid, within, reason),
                Action::MarkUnready => {
                    for channel in self.channels.values_mut() {
                        let _ = channel.stream.write_all(&ToWorker::Unready.encode());
                    }
                }
                Action::Kill(pid) => {
                    let _ = kill(pid, Signal::SIGKILL);
                }
                Action::SteerTo(pid) => self.listeners.steer_to(pid),
                Action::SteerAway(pid) => self.listeners.steer_away(pid),
                Action::SteerToNewGeneration => self.listeners.steer_to_handed_over(),
                Action::StartUpgrade => {
                    if let Err(e) = self.start_upgrade() {
                        tracing::error!("binary upgrade failed: {e}");
                        follow_ups.push_back(Event::UpgradeFailed);
                    }
                }
                Action::Notify(status) => self.notify(status),
                Action::Exit(_) => {}
            }
        }
        follow_ups
    }

    /// Asks one worker to stop: a message on its channel, or the stop signal for an
    /// external program (whose own timeout applies; the supervisor's deadline still ends
    /// with SIGKILL). A worker that is already gone is reaped by the loop.
    fn stop_worker(&mut self, pid: Pid, within: std::time::Duration, reason: DrainReason) {
        self.listeners.worker_leaving(pid, false);
        self.observer.stopping(pid);
        if let Some(channel) = self.channels.get_mut(&pid) {
            // Five bytes into an idle socket buffer never block.
            let _ = channel
                .stream
                .write_all(&ToWorker::Stop { within, reason }.encode());
        } else if let (Workers::Command(command), true) =
            (&self.workers, self.external_pids.contains(&pid))
        {
            let _ = kill(pid, command.stop_signal);
        }
    }

    /// Descriptors a forked in-process worker must close: everything of the parent's but
    /// the listener it serves on (and the command pipe's write end, which an app may use).
    fn parent_only_fds(&self) -> Vec<i32> {
        let mut fds: Vec<i32> = self.signals.raw_fds().to_vec();
        fds.extend(self.commands.as_ref().map(|c| c.fd().as_raw_fd()));
        fds.extend(self.program.as_ref().map(RefusalProgram::as_raw_fd));
        fds.extend(self.channels.values().map(|c| c.stream.as_raw_fd()));
        fds.extend(self.new_parent.as_ref().map(|p| p.ready.as_raw_fd()));
        fds.extend(self.upgrade_notifier.as_ref().map(AsRawFd::as_raw_fd));
        fds.extend(self.systemd.as_ref().map(SystemdNotifier::as_raw_fd));
        fds.extend(self.metrics.as_ref().map(|m| m.listener.as_raw_fd()));
        if let Listeners::PerWorker { by_worker, .. } = &self.listeners {
            // The other workers' sockets: each worker keeps only its own.
            fds.extend(by_worker.values().map(AsRawFd::as_raw_fd));
        }
        fds
    }

    /// Forks one worker; says whether it worked. A failure is logged and reported to the
    /// machine, which retries with backoff: the server serves on with the workers it has.
    fn spawn(&mut self) -> Event {
        let parent_only = self.parent_only_fds();
        let slot = self.observer.next_slot();
        let workers = &mut self.workers;
        let spawned = self.listeners.spawn_with(|listener| match workers {
            Workers::Command(command) => Ok((spawn_command(listener, command)?, None)),
            Workers::InProcess(body) => {
                let (pid, stream) = spawn_worker(listener, &parent_only, slot, &mut **body)?;
                Ok((pid, Some(stream)))
            }
        });
        match spawned {
            Ok(Some((pid, Some(stream)))) => {
                let channel = WorkerChannel {
                    stream,
                    closed: false,
                };
                self.channels.insert(pid, channel);
                self.observer.spawned(pid, slot);
                Event::Spawned(pid)
            }
            Ok(Some((pid, None))) => {
                self.external_pids.insert(pid);
                self.observer.spawned(pid, slot);
                Event::Spawned(pid)
            }
            Ok(None) => Event::SpawnFailed,
            Err(e) => {
                tracing::error!("cannot start a worker: {}", error_chain(&e));
                Event::SpawnFailed
            }
        }
    }

    /// Starts the metrics process if it is not running (and not restarted too soon).
    fn start_metrics_process(&mut self) {
        let Some(metrics) = &self.metrics else { return };
        if metrics.pid.is_some() || Instant::now() < metrics.restart_not_before {
            return;
        }
        let own = metrics.listener.as_raw_fd();
        let mut close: Vec<i32> = self
            .parent_only_fds()
            .into_iter()
            .filter(|&fd| fd != own)
            .collect();
        close.extend(self.listeners.raw_fds());
        let spawned = crate::metrics::serve::spawn_metrics_process(&metrics.listener, &close);
        let Some(metrics) = self.metrics.as_mut() else {
            return;
        };
        match spawned {
            Ok(pid) => metrics.pid = Some(pid),
            Err(e) => {
                tracing::error!("cannot start the metrics process: {}", error_chain(&e));
                metrics.restart_not_before = Instant::now() + METRICS_RESTART_DELAY;
            }
        }
    }

    fn start_upgrade(&mut self) -> std::result::Result<(), String> {
        let (Some(listener), Some(relaunch)) =
            (self.listeners.for_new_generation()?, &self.relaunch)
        else {
            return Err("no listener or executable to upgrade with".into());
        };
        let extra_env: Vec<_> = self
            .systemd
            .iter()
            .map(SystemdNotifier::env_entry)
            .collect();
        let new_parent = upgrade::start_new_parent(listener, relaunch, &extra_env)
            .map_err(|e| error_chain(&e))?;
        tracing::info!(
            "started new parent [{}]; waiting until it is ready",
            new_parent.pid
        );
        self.new_parent = Some(new_parent);
        Ok(())
    }

    fn notify(&mut self, status: Status) {
        let message = match status {
            Status::Ready => {
                tracing::info!("all workers are ready");
                if let Some(notifier) = self.upgrade_notifier.take() {
                    upgrade::report_ready(notifier);
                }
                format!("READY=1\nSTATUS=serving\nMAINPID={}", std::process::id())
            }
            Status::Reloading => "RELOADING=1\nSTATUS=rolling restart".to_string(),
            Status::Stopping => "STOPPING=1\nSTATUS=stopping".to_string(),
        };
        if let Some(systemd) = &self.systemd {
            systemd.send(&message);
        }
    }

    fn refuse_new_connections(&mut self) {
        let (Some(program), Some(listener)) = (&self.program, self.listeners.any()) else {
            return;
        };
        if let Err(e) = program.attach(listener.as_fd()) {
            // Still safe: closing the parent's copies is the fallback protocol.
            tracing::error!(
                "cannot attach the refusal program ({e}); closing the listener instead"
            );
            self.listeners.close();
        }
    }
}

/// An error and its causes on one line (`cannot fork: Resource temporarily unavailable`).
fn error_chain(error: &(dyn std::error::Error + 'static)) -> String {
    let mut line = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        line.push_str(": ");
        line.push_str(&cause.to_string());
        source = cause.source();
    }
    line
}

/// Reaps every child that has exited, without blocking. A child killed by `stop_signal`
/// (the signal external workers are asked to stop with) ended cleanly: many servers, such
/// as uvicorn, re-raise the signal after their graceful shutdown.
fn reap_children(stop_signal: Option<Signal>) -> Vec<(Pid, WorkerExit)> {
    let mut reaped = Vec::new();
    loop {
        match waitpid(None, Some(WaitPidFlag::WNOHANG)) {
            Ok(WaitStatus::Exited(pid, code)) => {
                if code != 0 {
                    tracing::warn!("process {pid} exited with status {code}");
                }
                let exit = match code {
                    0 => WorkerExit::Clean,
                    crate::EXIT_APP_CANNOT_START => WorkerExit::AppCannotStart,
                    _ => WorkerExit::Failed,
                };
                reaped.push((pid, exit));
            }
            Ok(WaitStatus::Signaled(pid, signal, _)) if Some(signal) == stop_signal => {
                reaped.push((pid, WorkerExit::Clean));
            }
            Ok(WaitStatus::Signaled(pid, signal, _)) => {
                tracing::warn!("process {pid} was killed by {signal}");
                reaped.push((pid, WorkerExit::Failed));
            }
            Ok(WaitStatus::StillAlive) | Err(_) => break,
            Ok(_) => {}
        }
    }
    reaped
}
