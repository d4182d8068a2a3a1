//! Asking a running server to stop, reload or scale from code, not only with kill(2).
//!
//! A [`ServerHandle`] writes one byte per [`Command`] into a pipe the supervisor's loop polls
//! next to its signal pipe, so a command from code and the same signal from an operator
//! take exactly the same path into the state machine. Writing is one `write(2)`: it never
//! blocks, takes no lock, and is safe from another thread, from a signal handler, or from a
//! worker (the write end survives the fork, so an app can ask for its own rolling restart).

use std::io;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::sync::Arc;

use crate::byte_pipe;
use crate::command::Command;
use crate::error::Result;

/// Sends commands to a running [`crate::Server`]: the same commands its signals stand for.
///
/// Get one with [`crate::Server::handle`] before calling [`crate::Server::serve`]; clone it
/// freely. Every method returns at once: the command is carried out by the supervisor's
/// loop, as a signal would be.
///
/// ```no_run
/// use std::time::Duration;
/// use axum::{routing::get, Router};
/// use server_core::{Bind, Server, ServerConfig};
///
/// let config = ServerConfig::new(Bind::Tcp("127.0.0.1:8000".parse().unwrap()));
/// let mut server = Server::new(config).tolerate_other_threads();
/// let handle = server.handle().expect("a command pipe");
/// // A thread that only waits and then sends a command holds no lock a forked worker
/// // could need (see `Server::tolerate_other_threads`).
/// std::thread::spawn(move || {
///     std::thread::sleep(Duration::from_secs(60));
///     let _ = handle.stop();
/// });
/// let outcome = server
///     .serve(|| Router::new().route("/", get(|| async { "hello" })))
///     .expect("server failed");
/// std::process::exit(outcome.exit_code());
/// ```
#[derive(Debug, Clone)]
pub struct ServerHandle {
    write: Arc<OwnedFd>,
}

impl ServerHandle {
    /// Graceful stop, as SIGTERM: refuse, empty the queue, drain under one deadline. A
    /// second stop during the drain stops at once.
    pub fn stop(&self) -> io::Result<()> {
        self.send(Command::Stop)
    }

    /// Stop at once, as SIGQUIT: the workers are killed.
    pub fn stop_now(&self) -> io::Result<()> {
        self.send(Command::StopNow)
    }

    /// Rolling restart, as SIGHUP.
    pub fn reload(&self) -> io::Result<()> {
        self.send(Command::Reload)
    }

    /// One worker more, as SIGTTIN.
    pub fn add_worker(&self) -> io::Result<()> {
        self.send(Command::AddWorker)
    }

    /// One worker fewer, as SIGTTOU (never below one).
    pub fn remove_worker(&self) -> io::Result<()> {
        self.send(Command::RemoveWorker)
    }

    /// Sends any command. Fails only if the pipe is full (more than 64 KiB of commands the
    /// supervisor has not read yet) or the server has exited.
    pub fn send(&self, command: Command) -> io::Result<()> {
        let written = nix::unistd::write(self.write.as_fd(), &[command.encode()])?;
        if written == 1 {
            Ok(())
        } else {
            Err(io::Error::new(
                io::ErrorKind::WriteZero,
                "the command was not written",
            ))
        }
    }
}

/// The supervisor's side of the command pipe.
#[derive(Debug)]
pub(crate) struct CommandPipe {
    read: OwnedFd,
    write: Arc<OwnedFd>,
}

impl CommandPipe {
    /// A non-blocking, close-on-exec pipe.
    pub(crate) fn new() -> Result<Self> {
        let (read, write) = byte_pipe::open("cannot create the command pipe")?;
        Ok(Self {
            read,
            write: Arc::new(write),
        })
    }

    /// A handle that writes into this pipe.
    pub(crate) fn handle(&self) -> ServerHandle {
        ServerHandle {
            write: Arc::clone(&self.write),
        }
    }

    /// Descriptor to poll for readability; workers close it after the fork.
    pub(crate) fn fd(&self) -> BorrowedFd<'_> {
        self.read.as_fd()
    }

    /// Every command written since the last call, oldest first.
    pub(crate) fn drain(&self) -> Vec<Command> {
        byte_pipe::read_available(self.read.as_fd())
            .into_iter()
            .filter_map(Command::decode)
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn commands_sent_by_clones_of_a_handle_arrive_in_order() {
        let pipe = CommandPipe::new().unwrap();
        let handle = pipe.handle();
        let other = handle.clone();
        handle.reload().unwrap();
        other.add_worker().unwrap();
        handle.stop().unwrap();
        assert_eq!(
            pipe.drain(),
            vec![Command::Reload, Command::AddWorker, Command::Stop]
        );
        assert!(pipe.drain().is_empty());
    }
}
