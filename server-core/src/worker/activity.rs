//! What one connection is doing: requests in flight and when the last one finished.

use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, AtomicU8, Ordering};
use std::time::Duration;

use tokio::time::Instant;

use crate::metrics::record::{self, ConnectionKind};

/// Requests in flight on one connection and when the last one finished, written by the
/// service on every request and read by the connection's idle timer only when it fires.
///
/// Cheaper than hyper's header-read timer, which allocates and arms a timer per request:
/// here a request costs two atomic updates and one clock read, and the connection keeps
/// one timer for its whole life.
#[derive(Debug)]
pub(crate) struct Activity {
    started: Instant,
    in_flight: AtomicU32,
    /// Milliseconds from `started` to the end of the last request.
    last_finished_ms: AtomicU64,
    /// A request was handed to the application at least once.
    served: AtomicBool,
    /// The connection speaks HTTP/2 (seen on its first request).
    http2: AtomicBool,
    /// What it counts as in the metrics' open connections ([`ConnectionKind`]).
    kind: AtomicU8,
}

impl Activity {
    /// A connection that has just been accepted.
    pub(crate) fn new() -> Self {
        Self {
            started: Instant::now(),
            in_flight: AtomicU32::new(0),
            last_finished_ms: AtomicU64::new(0),
            served: AtomicBool::new(false),
            http2: AtomicBool::new(false),
            kind: AtomicU8::new(ConnectionKind::Http1 as u8),
        }
    }

    /// A connection that has just been accepted, counted in the metrics until it is
    /// dropped (with the stream, after an upgrade too).
    pub(crate) fn opened() -> Self {
        record::connection_opened();
        Self::new()
    }

    /// The connection was upgraded (a 101 was sent): the app holds it now.
    pub(crate) fn upgraded(&self) {
        self.become_kind(ConnectionKind::Upgraded);
    }

    fn become_kind(&self, to: ConnectionKind) {
        let from = ConnectionKind::from_u8(self.kind.swap(to as u8, Ordering::Relaxed));
        if from != to {
            record::connection_became(from, to);
        }
    }

    /// A request head was read and handed to the application.
    pub(crate) fn request_started(&self, http2: bool) {
        self.in_flight.fetch_add(1, Ordering::Relaxed);
        record::in_flight(true);
        self.served.store(true, Ordering::Relaxed);
        if http2 && !self.http2.swap(true, Ordering::Relaxed) {
            self.become_kind(ConnectionKind::Http2);
        }
    }

    /// The application answered a request.
    pub(crate) fn request_finished(&self) {
        let now = self.started.elapsed().as_millis() as u64;
        self.last_finished_ms.store(now, Ordering::Relaxed);
        self.in_flight.fetch_sub(1, Ordering::Relaxed);
        record::in_flight(false);
    }

    /// Whether the connection has not completed a request yet.
    pub(super) fn is_fresh(&self) -> bool {
        self.in_flight.load(Ordering::Relaxed) == 0
            && self.last_finished_ms.load(Ordering::Relaxed) == 0
            && !self.served.load(Ordering::Relaxed)
    }

    /// Whether the connection speaks HTTP/2 (seen on a request).
    pub(super) fn is_http2(&self) -> bool {
        self.http2.load(Ordering::Relaxed)
    }

    /// How long the connection has had no request in flight (`None` while one is).
    pub(super) fn idle_for(&self) -> Option<Duration> {
        if self.in_flight.load(Ordering::Relaxed) > 0 {
            return None;
        }
        let last = Duration::from_millis(self.last_finished_ms.load(Ordering::Relaxed));
        Some(self.started.elapsed().saturating_sub(last))
    }
}

impl Drop for Activity {
    fn drop(&mut self) {
        record::connection_closed(ConnectionKind::from_u8(self.kind.load(Ordering::Relaxed)));
    }
}
