//! What the supervisor can be asked to do, whoever asks: a signal (see
//! [`crate::signals::meaning_of`]) or a [`crate::ServerHandle`] in the embedding program.

/// A request to the supervisor. Signals and [`crate::ServerHandle`] both come down to one of
/// these, so the supervisor's decisions never depend on where a request came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Command {
    /// Graceful stop (SIGTERM, SIGINT): refuse new connections, empty the accept queue,
    /// drain every worker under one deadline. Asked again during a stop, it stops at once.
    Stop,
    /// Stop at once (SIGQUIT): kill the workers.
    StopNow,
    /// Rolling restart (SIGHUP): replace every worker, each old one drained only once its
    /// replacement is ready.
    Reload,
    /// Binary upgrade (SIGUSR2): start the executable on disk as a new parent that inherits
    /// the listener, then drain this generation.
    Upgrade,
    /// One worker more (SIGTTIN).
    AddWorker,
    /// One worker fewer (SIGTTOU); the removed worker drains like at a stop.
    RemoveWorker,
}

impl Command {
    /// Every command, in the order of their wire bytes.
    pub(crate) const ALL: [Command; 6] = [
        Command::Stop,
        Command::StopNow,
        Command::Reload,
        Command::Upgrade,
        Command::AddWorker,
        Command::RemoveWorker,
    ];

    /// What it does, for the log (`SIGHUP: rolling restart`).
    pub(crate) fn describe(self) -> &'static str {
        match self {
            Command::Stop => "graceful stop",
            Command::StopNow => "stop at once",
            Command::Reload => "rolling restart",
            Command::Upgrade => "binary upgrade",
            Command::AddWorker => "one worker more",
            Command::RemoveWorker => "one worker fewer",
        }
    }

    /// One byte on the command pipe of a [`crate::ServerHandle`].
    pub(crate) fn encode(self) -> u8 {
        match self {
            Command::Stop => b's',
            Command::StopNow => b'k',
            Command::Reload => b'r',
            Command::Upgrade => b'u',
            Command::AddWorker => b'+',
            Command::RemoveWorker => b'-',
        }
    }

    /// The command written by [`Command::encode`].
    pub(crate) fn decode(byte: u8) -> Option<Self> {
        Self::ALL.into_iter().find(|c| c.encode() == byte)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_command_round_trips_through_one_distinct_byte() {
        let bytes: std::collections::BTreeSet<u8> =
            Command::ALL.iter().map(|c| c.encode()).collect();
        assert_eq!(bytes.len(), Command::ALL.len());
        for command in Command::ALL {
            assert_eq!(Command::decode(command.encode()), Some(command));
        }
        assert_eq!(Command::decode(b'?'), None);
    }
}
