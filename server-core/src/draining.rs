//! The drain signal for apps: a handler of a long-lived connection (a WebSocket, an SSE
//! stream) learns that its worker has started to drain, and why, so that it can end the
//! connection cleanly (a close frame, a last event) instead of being cut at the deadline.
//!
//! One per worker process, kept in a process-wide cell: workers are processes, so
//! "process-wide" is "this worker's", and no request pays for it.

use std::sync::OnceLock;

use tokio::sync::watch;

/// Why a worker drains.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum DrainReason {
    /// The server stops (SIGTERM, SIGINT): clients should go elsewhere (WebSocket close
    /// code 1001, Going Away).
    Stop,
    /// A new generation takes over (HUP rolling restart, USR2 upgrade): clients should
    /// reconnect at once (WebSocket close code 1012, Service Restart).
    Restart,
    /// One worker fewer (TTOU): the server serves on.
    ScaleDown,
    /// This worker is replaced (its request quota, a missed health check, a SIGTERM to the
    /// worker alone): the server serves on.
    Recycle,
}

impl DrainReason {
    /// The WebSocket close code that tells a client what to do (RFC 6455, IANA registry):
    /// 1001 Going Away when the server stops, 1012 Service Restart otherwise (the service
    /// is there, reconnect).
    pub fn websocket_close_code(self) -> u16 {
        match self {
            DrainReason::Stop => 1001,
            DrainReason::Restart | DrainReason::ScaleDown | DrainReason::Recycle => 1012,
        }
    }

    /// One byte on the parent-worker channel.
    pub(crate) fn encode(self) -> u8 {
        match self {
            DrainReason::Stop => b'S',
            DrainReason::Restart => b'R',
            DrainReason::ScaleDown => b'D',
            DrainReason::Recycle => b'Q',
        }
    }

    /// The reason a byte stands for.
    pub(crate) fn decode(byte: u8) -> Option<Self> {
        match byte {
            b'S' => Some(DrainReason::Stop),
            b'R' => Some(DrainReason::Restart),
            b'D' => Some(DrainReason::ScaleDown),
            b'Q' => Some(DrainReason::Recycle),
            _ => None,
        }
    }
}

fn cell() -> &'static watch::Sender<Option<DrainReason>> {
    static CELL: OnceLock<watch::Sender<Option<DrainReason>>> = OnceLock::new();
    CELL.get_or_init(|| watch::channel(None).0)
}

/// This worker's drain signal, for handlers: `Draining::of_this_worker().started().await`.
#[derive(Debug, Clone)]
pub struct Draining {
    receiver: watch::Receiver<Option<DrainReason>>,
}

impl Draining {
    /// The signal of the worker this code runs in.
    pub fn of_this_worker() -> Self {
        Self {
            receiver: cell().subscribe(),
        }
    }

    /// Resolves when this worker starts to drain (at once if it already has), with why.
    /// Outside a worker it never resolves.
    pub async fn started(&mut self) -> DrainReason {
        loop {
            if let Some(reason) = *self.receiver.borrow_and_update() {
                return reason;
            }
            if self.receiver.changed().await.is_err() {
                std::future::pending::<()>().await;
            }
        }
    }

    /// Why this worker drains, if it has started to.
    pub fn reason(&self) -> Option<DrainReason> {
        *self.receiver.borrow()
    }
}

/// Tells this worker's handlers that it drains (called once, when the drain starts).
pub(crate) fn announce(reason: DrainReason) {
    cell().send_replace(Some(reason));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reasons_round_trip_and_map_to_close_codes() {
        for reason in [
            DrainReason::Stop,
            DrainReason::Restart,
            DrainReason::ScaleDown,
            DrainReason::Recycle,
        ] {
            assert_eq!(DrainReason::decode(reason.encode()), Some(reason));
        }
        assert_eq!(DrainReason::decode(b'x'), None);
        assert_eq!(DrainReason::Stop.websocket_close_code(), 1001);
        assert_eq!(DrainReason::Restart.websocket_close_code(), 1012);
    }
}
