//! The parent process: a single-threaded loop that owns the listener and the workers.
//!
//! Signals, worker messages and child exits become [`machine::Event`]s; the pure
//! [`machine::Supervisor`] answers with [`machine::Action`]s; this loop carries them out.
//! There is no async runtime here: fork() is only sound from a single-threaded process.

pub(crate) mod machine;
pub(crate) mod spawn;

use std::collections::BTreeMap;
use std::io::{ErrorKind, Read, Write};
use std::net::TcpListener;
use std::os::fd::{AsFd, AsRawFd};
use std::os::unix::net::UnixStream;
use std::time::Instant;

use nix::poll::{PollFd, PollFlags, PollTimeout};
use nix::sys::signal::{kill, Signal};
use nix::sys::wait::{waitpid, WaitPidFlag, WaitStatus};
use nix::unistd::Pid;

use crate::accept_queue::queued_connections;
use crate::config::{ListenerDrain, ServerConfig};
use crate::control::{ToParent, ToWorker};
use crate::error::{Error, Result};
use crate::kernel_refusal::RefusalProgram;
use crate::listener::{self, ReusePort};
use crate::signals::SignalPipe;
use crate::ShutdownOutcome;
use machine::{Action, DrainMode, Event, Supervisor, WorkerExit};
use spawn::{spawn_worker, WorkerBody};

/// The parent's end of one worker's channel.
#[derive(Debug)]
struct WorkerChannel {
    stream: UnixStream,
    /// The worker closed its end (it is exiting); stop polling it.
    closed: bool,
}

/// Everything the loop owns.
struct Parent<'a> {
    listener: Option<TcpListener>,
    program: Option<RefusalProgram>,
    signals: SignalPipe,
    channels: BTreeMap<Pid, WorkerChannel>,
    body: &'a mut WorkerBody<'a>,
}

/// Binds the listener, starts the workers and supervises them until they are all stopped.
pub(crate) fn run<'a>(
    config: &ServerConfig,
    body: &'a mut WorkerBody<'a>,
) -> Result<ShutdownOutcome> {
    if config.workers == 0 {
        return Err(Error::Config("at least one worker is needed".into()));
    }
    let crate::config::Bind::Tcp(addr) = config.bind.clone();
    let (drain, program) = resolve_drain_mode(config.listener_drain)?;
    let reuse_port = match drain {
        DrainMode::Ebpf => ReusePort::Group,
        DrainMode::Close => ReusePort::Off,
    };
    let listener = listener::bind(addr, config.backlog, reuse_port)?;
    let signals = SignalPipe::install()?;
    tracing::info!("Started parent process [{}]", std::process::id());
    let local = listener
        .local_addr()
        .map_err(|e| Error::sys("cannot read the bound address", e))?;
    tracing::info!("Listening on http://{local} (Press CTRL+C to quit)");
    match drain {
        DrainMode::Ebpf => tracing::info!(
            "Listener drain: ebpf (at stop the kernel refuses new connections, the queue is emptied, then workers stop)"
        ),
        DrainMode::Close => tracing::info!(
            "Listener drain: close (at stop the parent closes its socket, workers accept until the queue is empty)"
        ),
    }
    let mut parent = Parent {
        listener: Some(listener),
        program,
        signals,
        channels: BTreeMap::new(),
        body,
    };
    let mut supervisor = Supervisor::new(config.workers, drain, config.graceful_timeout);
    let first = supervisor.start(Instant::now());
    if let Some(outcome) = parent.execute(first, &mut supervisor)? {
        return Ok(outcome);
    }
    loop {
        // Each event's actions are carried out before the next event is handled, so that
        // the supervisor always decides on the state the previous actions produced.
        for event in parent.wait_for_events(&supervisor)? {
            let actions = supervisor.handle(event, Instant::now());
            if let Some(outcome) = parent.execute(actions, &mut supervisor)? {
                tracing::info!("Stopping parent process [{}]", std::process::id());
                return Ok(outcome);
            }
        }
    }
}

/// Chooses the drain mode and loads the refusal program when the mode needs it.
fn resolve_drain_mode(asked: ListenerDrain) -> Result<(DrainMode, Option<RefusalProgram>)> {
    match asked {
        ListenerDrain::Close => Ok((DrainMode::Close, None)),
        ListenerDrain::Ebpf => {
            let program = RefusalProgram::load().map_err(Error::Ebpf)?;
            Ok((DrainMode::Ebpf, Some(program)))
        }
        ListenerDrain::Auto => match RefusalProgram::load() {
            Ok(program) => Ok((DrainMode::Ebpf, Some(program))),
            Err(e) => {
                tracing::warn!("eBPF listener drain unavailable ({e}); falling back to close");
                Ok((DrainMode::Close, None))
            }
        },
    }
}

impl Parent<'_> {
    /// Sleeps until a signal, a worker message or the supervisor's next deadline, and
    /// returns what happened.
    fn wait_for_events(&mut self, supervisor: &Supervisor) -> Result<Vec<Event>> {
        let now = Instant::now();
        let timeout = match supervisor.next_wakeup(now) {
            None => PollTimeout::NONE,
            Some(at) => {
                // Round up so that the loop never wakes a hair before the deadline and spins.
                let ms = at.saturating_duration_since(now).as_micros().div_ceil(1000);
                PollTimeout::try_from(ms.min(60_000) as u32).unwrap_or(PollTimeout::MAX)
            }
        };
        let open: Vec<Pid> = self
            .channels
            .iter()
            .filter(|(_, c)| !c.closed)
            .map(|(&pid, _)| pid)
            .collect();
        let mut ready_pids = Vec::new();
        let signal_ready;
        {
            let mut fds = vec![PollFd::new(self.signals.fd(), PollFlags::POLLIN)];
            for pid in &open {
                fds.push(PollFd::new(
                    self.channels[pid].stream.as_fd(),
                    PollFlags::POLLIN,
                ));
            }
            match nix::poll::poll(&mut fds, timeout) {
                Ok(_) | Err(nix::errno::Errno::EINTR) => {}
                Err(e) => return Err(Error::sys("poll failed in the supervisor", e)),
            }
            let readable = |fd: &PollFd<'_>| fd.revents().is_some_and(|r| !r.is_empty());
            signal_ready = readable(&fds[0]);
            for (pid, fd) in open.iter().zip(&fds[1..]) {
                if readable(fd) {
                    ready_pids.push(*pid);
                }
            }
        }
        let mut events = Vec::new();
        if signal_ready {
            for signal in self.signals.drain() {
                if signal != Signal::SIGCHLD {
                    events.push(Event::Signal(signal));
                }
            }
        }
        for pid in ready_pids {
            events.extend(self.read_channel(pid));
        }
        for exited in reap_exited_workers() {
            if let Event::WorkerExited { pid, .. } = exited {
                self.channels.remove(&pid);
            }
            events.push(exited);
        }
        if supervisor.wants_queue_length() {
            let len = match &self.listener {
                Some(listener) => queued_connections(listener.as_fd()).unwrap_or(0),
                None => 0,
            };
            events.push(Event::QueueLength(len));
        }
        events.push(Event::Tick);
        Ok(events)
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

    /// Carries out the supervisor's actions; returns the outcome once it says to exit.
    fn execute(
        &mut self,
        actions: Vec<Action>,
        supervisor: &mut Supervisor,
    ) -> Result<Option<ShutdownOutcome>> {
        let mut outcome = None;
        for action in actions {
            match action {
                Action::Spawn => self.spawn(supervisor)?,
                Action::RefuseNewConnections => self.refuse_new_connections(),
                Action::CloseListener => drop(self.listener.take()),
                Action::StopWorker { pid, within } => {
                    if let Some(channel) = self.channels.get_mut(&pid) {
                        // Five bytes into an idle socket buffer never block. A worker that
                        // is already gone is reaped by the loop.
                        let _ = channel
                            .stream
                            .write_all(&ToWorker::Stop { within }.encode());
                    }
                }
                Action::Kill(pid) => {
                    let _ = kill(pid, Signal::SIGKILL);
                }
                Action::Exit(result) => outcome = Some(result),
            }
        }
        Ok(outcome)
    }

    fn spawn(&mut self, supervisor: &mut Supervisor) -> Result<()> {
        let Some(listener) = &self.listener else {
            return Ok(());
        };
        let mut parent_only: Vec<i32> = self.signals.raw_fds().to_vec();
        parent_only.extend(self.program.as_ref().map(RefusalProgram::as_raw_fd));
        parent_only.extend(self.channels.values().map(|c| c.stream.as_raw_fd()));
        let (pid, stream) = spawn_worker(listener, &parent_only, self.body)?;
        self.channels.insert(
            pid,
            WorkerChannel {
                stream,
                closed: false,
            },
        );
        supervisor.spawned(pid);
        Ok(())
    }

    fn refuse_new_connections(&mut self) {
        let (Some(program), Some(listener)) = (&self.program, &self.listener) else {
            return;
        };
        if let Err(e) = program.attach(listener.as_fd()) {
            // Still safe: closing the parent's copy is the fallback protocol.
            tracing::error!(
                "cannot attach the refusal program ({e}); closing the listener instead"
            );
            self.listener = None;
        }
    }
}

/// Reaps every worker that has exited, without blocking.
fn reap_exited_workers() -> Vec<Event> {
    let mut events = Vec::new();
    loop {
        match waitpid(None, Some(WaitPidFlag::WNOHANG)) {
            Ok(WaitStatus::Exited(pid, code)) => {
                if code != 0 {
                    tracing::warn!("worker {pid} exited with status {code}");
                }
                let exit = if code == 0 {
                    WorkerExit::Clean
                } else {
                    WorkerExit::Failed
                };
                events.push(Event::WorkerExited { pid, exit });
            }
            Ok(WaitStatus::Signaled(pid, signal, _)) => {
                tracing::warn!("worker {pid} was killed by {signal}");
                events.push(Event::WorkerExited {
                    pid,
                    exit: WorkerExit::Failed,
                });
            }
            Ok(WaitStatus::StillAlive) | Err(_) => break,
            Ok(_) => {}
        }
    }
    events
}
