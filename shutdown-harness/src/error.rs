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
    /// The server never answered the clients' request.
    #[error("{target} did not answer within {secs} s (last: {last}){}", log.as_ref().map(|l| format!("; the server's output is in {}", l.display())).unwrap_or_default())]
    NotReady {
        /// Where it was asked.
        target: String,
        /// How long the harness waited.
        secs: f64,
        /// The last failure.
        last: String,
        /// The launched server's output.
        log: Option<PathBuf>,
    },
    /// The plan cannot be carried out as given.
    #[error("{0}")]
    Usage(String),
    /// The clients cannot be set up (TLS, reqwest).
    #[error(transparent)]
    Transport(#[from] crate::transport::TransportError),
    /// The `--url` host has no address.
    #[error("{0}")]
    Resolve(String),
    /// The server exited before it was ready.
    #[error("the server exited before it was ready ({status}); its output is in {}", log.display())]
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
