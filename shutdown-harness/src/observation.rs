//! What happened in a run, as the harness saw it: every request, every disruption, and
//! how the server ended. Gathered by the run (I/O), judged by [`crate::judge`].

use serde::Serialize;

use crate::outcome::Outcome;
use crate::scenario::Role;

/// One request as the harness saw it. Times are seconds since traffic started.
#[derive(Debug, Clone, Copy, Serialize)]
pub struct RequestRecord {
    /// Which client sent it.
    pub client: u32,
    /// Whether its failure counts as a drop.
    pub role: Role,
    /// When it started.
    pub start: f64,
    /// When its outcome was known.
    pub end: f64,
    /// How it ended.
    pub outcome: Outcome,
}

/// How the server process ended.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "snake_case", tag = "kind")]
pub enum ServerExit {
    /// It exited by itself after the signal.
    Exited {
        /// Seconds after the signal.
        after_signal: f64,
        /// Exit status, or the signal that killed it.
        status: String,
    },
    /// It exited before the signal was sent.
    ExitedBeforeSignal {
        /// Exit status.
        status: String,
    },
    /// It was still running when the harness gave up waiting, and was killed.
    DidNotExit,
    /// It kept running through the disruption (reload, scaling, a killed worker), and was
    /// then stopped.
    KeptServing,
    /// Binary upgrade: the launched parent exited after handing the socket to a new
    /// generation, which kept serving (and was then stopped).
    HandedOver {
        /// Seconds from the signal to the old parent's exit.
        after_signal: f64,
    },
    /// The harness did not launch the server (`--url`): nothing to say about its processes.
    NotLaunched,
}

/// One run of a disruption command (`--disrupt`).
#[derive(Debug, Clone, Serialize)]
pub struct CommandRun {
    /// The shell command.
    pub command: String,
    /// When it started, in seconds since traffic started.
    pub started: f64,
    /// When it ended (or was killed).
    pub ended: f64,
    /// Its exit status in words, or why it did not run to the end.
    pub status: String,
    /// Whether it exited with status 0.
    pub success: bool,
    /// Its output, stdout and stderr interleaved (the end of it, if long).
    pub output: String,
    /// Each line it printed with when it arrived (the first [`MAX_STEPS`]): the phases of
    /// a deploy, so that a drop is tied to the step that caused it.
    pub steps: Vec<CommandStep>,
}

/// Most output lines of one disruption command kept as steps.
pub const MAX_STEPS: usize = 1000;

/// One line a disruption command printed, timed when it reached the harness.
#[derive(Debug, Clone, Serialize)]
pub struct CommandStep {
    /// Seconds since traffic started.
    pub at: f64,
    /// The line, without its line break.
    pub line: String,
}

/// Everything a run observed.
#[derive(Debug, Clone)]
pub struct Observation {
    /// The server command as run (`{port}` replaced).
    pub server_command: Vec<String>,
    /// Every request, in the order clients finished.
    pub records: Vec<RequestRecord>,
    /// When each disruption was carried out, in seconds since traffic started.
    pub disruptions: Vec<f64>,
    /// The disruption commands that ran, if any.
    pub commands: Vec<CommandRun>,
    /// How the server ended.
    pub exit: ServerExit,
    /// Processes of the server's group still running after it exited.
    pub orphans: Vec<u32>,
    /// Workers the server had at the end (counted when the plan expects a number).
    pub workers_at_end: Option<usize>,
    /// Most worker processes seen at once during the run (launched servers).
    pub max_workers: Option<usize>,
    /// The final SIGTERM of a server that kept serving did not stop it in time.
    pub final_stop_failed: bool,
}
