//! What a worker adds to its slot on the request path: a few relaxed atomic increments.
//! Connections are counted whenever the worker has a slot (the accept gate compares them);
//! requests only with `--metrics-bind` (one relaxed load when off).

use std::sync::atomic::Ordering;
use std::time::Instant;

use hyper::Method;

use super::region::{this_worker, this_worker_counting_requests, DURATION_BOUNDS};

/// The kind of an open connection, as counted in `server_connections_open{protocol}`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub(crate) enum ConnectionKind {
    /// HTTP/1 (also a connection that has not sent a request yet).
    Http1 = 0,
    /// HTTP/2.
    Http2 = 1,
    /// Upgraded (a WebSocket): the app holds it.
    Upgraded = 2,
}

impl ConnectionKind {
    /// The kind from its number.
    pub(crate) fn from_u8(n: u8) -> Self {
        match n {
            1 => ConnectionKind::Http2,
            2 => ConnectionKind::Upgraded,
            _ => ConnectionKind::Http1,
        }
    }
}

/// The method's counter index.
pub(crate) fn method_index(method: &Method) -> u8 {
    match *method {
        Method::GET => 0,
        Method::HEAD => 1,
        Method::POST => 2,
        Method::PUT => 3,
        Method::DELETE => 4,
        Method::PATCH => 5,
        Method::OPTIONS => 6,
        _ => 7,
    }
}

/// When a request started, if metrics are on (no clock read otherwise).
#[inline]
pub(crate) fn request_clock() -> Option<Instant> {
    this_worker_counting_requests().map(|_| Instant::now())
}

/// A request was answered with `status` (its head is ready).
#[inline]
pub(crate) fn request_answered(method: u8, status: u16, started: Option<Instant>) {
    let (Some(slot), Some(started)) = (this_worker_counting_requests(), started) else {
        return;
    };
    let class = usize::from(status / 100).clamp(1, 5) - 1;
    slot.requests[usize::from(method).min(7)][class].fetch_add(1, Ordering::Relaxed);
    let seconds = started.elapsed().as_secs_f64();
    let bucket = DURATION_BOUNDS
        .iter()
        .position(|&bound| seconds <= bound)
        .unwrap_or(DURATION_BOUNDS.len());
    slot.duration_buckets[bucket].fetch_add(1, Ordering::Relaxed);
    slot.duration_sum_us
        .fetch_add((seconds * 1e6) as u64, Ordering::Relaxed);
}

/// A request entered (`true`) or left (`false`) the app.
#[inline]
pub(crate) fn in_flight(entered: bool) {
    if let Some(slot) = this_worker_counting_requests() {
        if entered {
            slot.in_flight.fetch_add(1, Ordering::Relaxed);
        } else {
            slot.in_flight.fetch_sub(1, Ordering::Relaxed);
        }
    }
}

/// A connection was accepted (it counts as HTTP/1 until its first request says more).
#[inline]
pub(crate) fn connection_opened() {
    if let Some(slot) = this_worker() {
        slot.connections_total.fetch_add(1, Ordering::Relaxed);
        slot.connections_open[ConnectionKind::Http1 as usize].fetch_add(1, Ordering::Relaxed);
    }
}

/// A connection turned out to be of another kind.
#[inline]
pub(crate) fn connection_became(from: ConnectionKind, to: ConnectionKind) {
    if let Some(slot) = this_worker() {
        slot.connections_open[from as usize].fetch_sub(1, Ordering::Relaxed);
        slot.connections_open[to as usize].fetch_add(1, Ordering::Relaxed);
    }
}

/// A connection ended.
#[inline]
pub(crate) fn connection_closed(kind: ConnectionKind) {
    if let Some(slot) = this_worker() {
        slot.connections_open[kind as usize].fetch_sub(1, Ordering::Relaxed);
    }
}
