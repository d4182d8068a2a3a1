//! Why a harness run could not be carried out (as opposed to finding drops).

use std::path::PathBuf;

/// Why a run could not be carried out.
#[derive(Debug, thiserror::Error)]
pub enum HarnessError {
    /// No server command was given.
    #[error("the server command is empty")]
    EmptyCommand,
    /// The server command could not be started.
    #[error("cannot start `{0}`: {1}")]
    Launch(String, #[source] std::io::Error),
    /// The server log file could not be created.
    #[error("cannot write the server log {0}: {1}")]
    Log(PathBuf, #[source] std::io::Error),
    /// The server never answered `GET /`.
    #[error("the server did not answer GET / on {addr} within {secs} s (its output is in {log})")]
    NotReady {
        /// Where it was asked.
        addr: std::net::SocketAddr,
        /// How long the harness waited.
        secs: f64,
        /// Its output.
        log: PathBuf,
    },
    /// The server exited before it was ready.
    #[error("the server exited before it was ready ({status}); its output is in {log}")]
    ExitedEarly {
        /// Its exit status.
        status: String,
        /// Its output.
        log: PathBuf,
    },
    /// An OS error in the harness itself.
    #[error("{0}: {1}")]
    Io(&'static str, #[source] std::io::Error),
}
