//! Why a worker was replaced or removed: decided by the supervisor's machine, counted in
//! the metrics (`server_worker_restarts_total{reason}`) and named in the logs.

/// Why a worker was replaced or removed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum RestartReason {
    /// It exited (or was killed) while it should have been serving.
    Crash,
    /// It sent no heartbeat for the health timeout.
    Hung,
    /// It served its request quota (`--limit-max-requests`).
    Quota,
    /// Its resident memory went above `--limit-max-memory`.
    Memory,
    /// A rolling restart (HUP) replaced it.
    Reload,
    /// One worker fewer (TTOU).
    ScaleDown,
    /// A binary upgrade (USR2) handed its work to a new generation.
    Upgrade,
}

impl RestartReason {
    /// Every reason, in the order of the metrics' counters.
    pub(crate) const ALL: [RestartReason; 7] = [
        RestartReason::Crash,
        RestartReason::Hung,
        RestartReason::Quota,
        RestartReason::Memory,
        RestartReason::Reload,
        RestartReason::ScaleDown,
        RestartReason::Upgrade,
    ];

    /// The `reason` label.
    pub(crate) fn label(self) -> &'static str {
        match self {
            RestartReason::Crash => "crash",
            RestartReason::Hung => "hung",
            RestartReason::Quota => "quota",
            RestartReason::Memory => "memory",
            RestartReason::Reload => "reload",
            RestartReason::ScaleDown => "scale-down",
            RestartReason::Upgrade => "upgrade",
        }
    }

    /// Its index in [`Self::ALL`].
    pub(crate) fn index(self) -> usize {
        self as usize
    }
}
