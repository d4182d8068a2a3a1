//! Turning process signals into bytes the supervisor's loop reads (the self-pipe trick).
//!
//! The handler does the only async-signal-safe thing worth doing: it writes the signal
//! number to a non-blocking pipe. The loop polls the pipe with the workers' channels and
//! turns each signal into a [`Command`] with [`meaning_of`], the one table of what each
//! signal means, so no decision is ever taken inside a handler.

use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::sync::atomic::{AtomicI32, Ordering};

use nix::sys::signal::{self, SaFlags, SigAction, SigHandler, SigSet, Signal};

use crate::byte_pipe;
use crate::command::Command;
use crate::error::{Error, Result};

/// Write end of the pipe, read by the handler.
static PIPE_WRITE_FD: AtomicI32 = AtomicI32::new(-1);

/// What a signal asks of the supervisor.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum SignalMeaning {
    /// A command, the same one a [`crate::ServerHandle`] can send.
    Command(Command),
    /// A child changed state: the loop reaps children on every wake-up anyway.
    ChildExited,
    /// Caught so that it cannot kill the parent, but asks for nothing (the reason is logged).
    Ignored(&'static str),
}

/// The one table of what each signal means to the supervisor.
pub(crate) fn meaning_of(signal: Signal) -> SignalMeaning {
    match signal {
        Signal::SIGTERM | Signal::SIGINT => SignalMeaning::Command(Command::Stop),
        Signal::SIGQUIT => SignalMeaning::Command(Command::StopNow),
        Signal::SIGHUP => SignalMeaning::Command(Command::Reload),
        Signal::SIGUSR2 => SignalMeaning::Command(Command::Upgrade),
        Signal::SIGTTIN => SignalMeaning::Command(Command::AddWorker),
        Signal::SIGTTOU => SignalMeaning::Command(Command::RemoveWorker),
        Signal::SIGCHLD => SignalMeaning::ChildExited,
        // gunicorn and nginx reopen their log files on USR1; logs here go to stderr, which
        // the service manager owns, so there is nothing to reopen.
        Signal::SIGUSR1 => {
            SignalMeaning::Ignored("logs go to stderr: there is no log file to reopen")
        }
        _ => SignalMeaning::Ignored("not a signal the supervisor acts on"),
    }
}

/// Signals the supervisor catches (every one [`meaning_of`] knows).
pub(crate) const SUPERVISED: [Signal; 9] = [
    Signal::SIGTERM,
    Signal::SIGINT,
    Signal::SIGQUIT,
    Signal::SIGHUP,
    Signal::SIGCHLD,
    Signal::SIGTTIN,
    Signal::SIGTTOU,
    Signal::SIGUSR1,
    Signal::SIGUSR2,
];

extern "C" fn record_signal(signum: libc::c_int) {
    let fd = PIPE_WRITE_FD.load(Ordering::Relaxed);
    if fd >= 0 {
        let byte = signum as u8;
        // SAFETY: write(2) is async-signal-safe; a full pipe just loses a duplicate signal,
        // which the kernel would have merged anyway. errno is saved and restored.
        unsafe {
            let saved = *libc::__errno_location();
            libc::write(fd, (&byte as *const u8).cast(), 1);
            *libc::__errno_location() = saved;
        }
    }
}

/// The read end of the signal pipe; the supervisor polls it.
#[derive(Debug)]
pub(crate) struct SignalPipe {
    /// Read by the loop.
    read: OwnedFd,
    /// Written by the handler.
    write: OwnedFd,
}

impl SignalPipe {
    /// Creates the pipe and installs the recording handler for [`SUPERVISED`] signals.
    pub(crate) fn install() -> Result<Self> {
        let (read, write) = byte_pipe::open("cannot create the signal pipe")?;
        PIPE_WRITE_FD.store(write.as_raw_fd(), Ordering::Relaxed);
        let action = SigAction::new(
            SigHandler::Handler(record_signal),
            SaFlags::SA_RESTART | SaFlags::SA_NOCLDSTOP,
            SigSet::empty(),
        );
        for sig in SUPERVISED {
            // SAFETY: the handler only calls async-signal-safe functions.
            unsafe { signal::sigaction(sig, &action) }
                .map_err(|e| Error::sys("cannot install a signal handler", e))?;
        }
        Ok(Self { read, write })
    }

    /// Reads every signal recorded since the last call, oldest first.
    pub(crate) fn drain(&self) -> Vec<Signal> {
        byte_pipe::read_available(self.read.as_fd())
            .into_iter()
            .filter_map(|b| Signal::try_from(i32::from(b)).ok())
            .collect()
    }

    /// Descriptor to poll for readability.
    pub(crate) fn fd(&self) -> BorrowedFd<'_> {
        self.read.as_fd()
    }

    /// Both ends, which a worker closes right after the fork.
    pub(crate) fn raw_fds(&self) -> [i32; 2] {
        [self.read.as_raw_fd(), self.write.as_raw_fd()]
    }
}

/// Signals a terminal sends to the whole process group (Ctrl-C, Ctrl-\, hangup, job
/// control) and the supervisor's own commands: workers must not act on them, only the
/// parent decides when workers stop.
pub(crate) const PARENT_ONLY: [Signal; 7] = [
    Signal::SIGINT,
    Signal::SIGQUIT,
    Signal::SIGHUP,
    Signal::SIGTTIN,
    Signal::SIGTTOU,
    Signal::SIGUSR1,
    Signal::SIGUSR2,
];

/// In a freshly forked worker: give every supervised signal back its default meaning,
/// except the [`PARENT_ONLY`] ones, which the worker ignores.
pub(crate) fn reset_in_worker() {
    PIPE_WRITE_FD.store(-1, Ordering::Relaxed);
    for sig in SUPERVISED {
        let handler = if PARENT_ONLY.contains(&sig) {
            SigHandler::SigIgn
        } else {
            SigHandler::SigDfl
        };
        // SAFETY: resetting to SIG_DFL/SIG_IGN installs no code.
        let _ = unsafe { signal::signal(sig, handler) };
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_caught_signal_has_a_meaning_and_the_commands_are_the_documented_ones() {
        let commands: Vec<(Signal, Command)> = SUPERVISED
            .iter()
            .filter_map(|&s| match meaning_of(s) {
                SignalMeaning::Command(c) => Some((s, c)),
                _ => None,
            })
            .collect();
        assert_eq!(
            commands,
            vec![
                (Signal::SIGTERM, Command::Stop),
                (Signal::SIGINT, Command::Stop),
                (Signal::SIGQUIT, Command::StopNow),
                (Signal::SIGHUP, Command::Reload),
                (Signal::SIGTTIN, Command::AddWorker),
                (Signal::SIGTTOU, Command::RemoveWorker),
                (Signal::SIGUSR2, Command::Upgrade),
            ]
        );
        assert!(matches!(
            meaning_of(Signal::SIGUSR1),
            SignalMeaning::Ignored(_)
        ));
    }
}
