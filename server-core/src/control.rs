//! The private channel between the supervisor and each worker (one socketpair per worker).
//!
//! A pipe rather than signals: messages carry data (how long the worker has left), arrive
//! in order, are never merged, and the end of the stream tells each side that the other is
//! gone.

use std::time::Duration;

use crate::draining::DrainReason;

/// What the supervisor tells a worker.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ToWorker {
    /// Keep serving, but answer the readiness route with 503 from now on (the server is
    /// about to stop: load balancers should take it out of rotation first).
    Unready,
    /// Stop accepting, drain, finish in-flight requests, run the shutdown hooks, and exit;
    /// abort whatever is left after `within`.
    Stop {
        /// Time left before the shared deadline.
        within: Duration,
        /// Why (told to the app's long-lived connections).
        reason: DrainReason,
    },
}

/// Length of an encoded [`ToWorker`] message.
pub(crate) const TO_WORKER_LEN: usize = 5;

impl ToWorker {
    /// Encodes as one tag byte (a stop's tag is its reason) and a big-endian millisecond
    /// count.
    pub(crate) fn encode(self) -> [u8; TO_WORKER_LEN] {
        match self {
            ToWorker::Unready => [b'U', 0, 0, 0, 0],
            ToWorker::Stop { within, reason } => {
                let ms = u32::try_from(within.as_millis()).unwrap_or(u32::MAX);
                let [a, b, c, d] = ms.to_be_bytes();
                [reason.encode(), a, b, c, d]
            }
        }
    }

    /// Decodes a message written by [`ToWorker::encode`].
    pub(crate) fn decode(bytes: [u8; TO_WORKER_LEN]) -> Option<Self> {
        match bytes {
            [b'U', 0, 0, 0, 0] => Some(ToWorker::Unready),
            [tag, a, b, c, d] => Some(ToWorker::Stop {
                within: Duration::from_millis(u64::from(u32::from_be_bytes([a, b, c, d]))),
                reason: DrainReason::decode(tag)?,
            }),
        }
    }
}

/// What a worker tells the supervisor; each message is one byte.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ToParent {
    /// The worker is accepting connections.
    Ready,
    /// The worker's runtime is alive (sent every [`HEARTBEAT_INTERVAL`]).
    Heartbeat,
    /// The worker has served its request quota and asks to be replaced.
    QuotaReached,
}

/// How often a worker proves its runtime alive.
pub(crate) const HEARTBEAT_INTERVAL: Duration = Duration::from_secs(1);

impl ToParent {
    /// The message's byte on the wire.
    pub(crate) fn encode(self) -> u8 {
        match self {
            ToParent::Ready => b'R',
            ToParent::Heartbeat => b'H',
            ToParent::QuotaReached => b'Q',
        }
    }

    /// Decodes one byte written by [`ToParent::encode`].
    pub(crate) fn decode(byte: u8) -> Option<Self> {
        match byte {
            b'R' => Some(ToParent::Ready),
            b'H' => Some(ToParent::Heartbeat),
            b'Q' => Some(ToParent::QuotaReached),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stop_round_trips_with_millisecond_precision_and_its_reason() {
        for reason in [
            DrainReason::Stop,
            DrainReason::Restart,
            DrainReason::Recycle,
        ] {
            let msg = ToWorker::Stop {
                within: Duration::from_millis(29_997),
                reason,
            };
            assert_eq!(ToWorker::decode(msg.encode()), Some(msg));
        }
        let unready = ToWorker::Unready;
        assert_eq!(ToWorker::decode(unready.encode()), Some(unready));
        assert_eq!(ToWorker::decode(*b"XXXXX"), None);
        assert_eq!(
            ToParent::decode(ToParent::Ready.encode()),
            Some(ToParent::Ready)
        );
    }
}
