//! The Prometheus text exposition of the whole server, from a snapshot of the shared
//! region: worker counters summed, per-worker values labelled `worker` (the slot number,
//! stable across restarts, so series do not multiply with every new pid).

use std::fmt::Write as _;
use std::sync::atomic::Ordering;

use super::region::{
    Region, SlotState, CONNECTION_KINDS, DURATION_BOUNDS, METHODS, STATUS_CLASSES,
};
use crate::restart_reason::RestartReason;

const METHOD_NAMES: [&str; METHODS] = [
    "GET", "HEAD", "POST", "PUT", "DELETE", "PATCH", "OPTIONS", "other",
];
const CONNECTION_NAMES: [&str; CONNECTION_KINDS] = ["http1", "http2", "upgraded"];

/// One worker slot's values at the scrape.
#[derive(Debug, Clone, Default, PartialEq)]
pub(crate) struct SlotSnapshot {
    /// Slot number (the `worker` label).
    pub(crate) index: usize,
    /// Its worker's pid, 0 when empty.
    pub(crate) pid: u64,
    /// Its worker's state.
    pub(crate) state: u64,
    /// Requests by method and status class.
    pub(crate) requests: [[u64; STATUS_CLASSES]; METHODS],
    /// Requests by duration bucket.
    pub(crate) duration_buckets: [u64; DURATION_BOUNDS.len() + 1],
    /// Sum of durations, microseconds.
    pub(crate) duration_sum_us: u64,
    /// Requests in flight.
    pub(crate) in_flight: u64,
    /// Open connections by kind.
    pub(crate) connections_open: [u64; CONNECTION_KINDS],
    /// Connections accepted.
    pub(crate) connections_total: u64,
    /// Resident memory, bytes.
    pub(crate) rss_bytes: u64,
    /// CPU time, microseconds.
    pub(crate) cpu_us: u64,
}

/// Everything a scrape shows.
#[derive(Debug, Clone, Default, PartialEq)]
pub(crate) struct Snapshot {
    /// Accept queue: last sample, maximum since the last scrape, capacity.
    pub(crate) accept_queue: u64,
    /// The longest queue since the previous scrape.
    pub(crate) accept_queue_max: u64,
    /// The backlog.
    pub(crate) accept_queue_capacity: u64,
    /// Restarts by reason.
    pub(crate) restarts: [u64; RestartReason::ALL.len()],
    /// Last drain, microseconds.
    pub(crate) last_drain_us: u64,
    /// Workers wanted.
    pub(crate) workers_desired: u64,
    /// Slots that ever had a worker.
    pub(crate) slots: Vec<SlotSnapshot>,
}

impl Snapshot {
    /// Reads the region; takes the queue maximum (the next scrape sees the maximum since
    /// this one).
    pub(crate) fn take(region: &Region) -> Self {
        let load = |a: &std::sync::atomic::AtomicU64| a.load(Ordering::Relaxed);
        let p = &region.parent;
        let current_queue = load(&p.accept_queue);
        let slots = region
            .slots
            .iter()
            .enumerate()
            .filter(|(_, s)| load(&s.pid) != 0 || load(&s.connections_total) != 0)
            .map(|(index, s)| SlotSnapshot {
                index,
                pid: load(&s.pid),
                state: load(&s.state),
                requests: std::array::from_fn(|m| std::array::from_fn(|c| load(&s.requests[m][c]))),
                duration_buckets: std::array::from_fn(|b| load(&s.duration_buckets[b])),
                duration_sum_us: load(&s.duration_sum_us),
                in_flight: load(&s.in_flight),
                connections_open: std::array::from_fn(|k| load(&s.connections_open[k])),
                connections_total: load(&s.connections_total),
                rss_bytes: load(&s.rss_bytes),
                cpu_us: load(&s.cpu_us),
            })
            .collect();
        Self {
            accept_queue: current_queue,
            accept_queue_max: p
                .accept_queue_max
                .swap(current_queue, Ordering::Relaxed)
                .max(current_queue),
            accept_queue_capacity: load(&p.accept_queue_capacity),
            restarts: std::array::from_fn(|r| load(&p.restarts[r])),
            last_drain_us: load(&p.last_drain_us),
            workers_desired: load(&p.workers_desired),
            slots,
        }
    }
}

/// A metric's `# HELP` and `# TYPE` lines.
fn header(out: &mut String, name: &str, kind: &str, help: &str) {
    let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
}

/// The exposition text (format 0.0.4).
pub(crate) fn render(s: &Snapshot) -> String {
    let mut out = String::with_capacity(4096);
    header(
        &mut out,
        "server_build_info",
        "gauge",
        "Version of server-core.",
    );
    let _ = writeln!(
        out,
        "server_build_info{{version=\"{}\"}} 1",
        env!("CARGO_PKG_VERSION")
    );

    header(
        &mut out,
        "server_http_requests_total",
        "counter",
        "Requests answered, by method and status class, all workers.",
    );
    for (m, name) in METHOD_NAMES.iter().enumerate() {
        for c in 0..STATUS_CLASSES {
            let n: u64 = s.slots.iter().map(|w| w.requests[m][c]).sum();
            if n > 0 {
                let _ = writeln!(
                    out,
                    "server_http_requests_total{{method=\"{name}\",status=\"{}xx\"}} {n}",
                    c + 1
                );
            }
        }
    }
    header(
        &mut out,
        "server_worker_http_requests_total",
        "counter",
        "Requests answered by each worker slot.",
    );
    for w in &s.slots {
        let n: u64 = w.requests.iter().flatten().sum();
        let _ = writeln!(
            out,
            "server_worker_http_requests_total{{worker=\"{}\"}} {n}",
            w.index
        );
    }

    header(
        &mut out,
        "server_http_request_duration_seconds",
        "histogram",
        "Time from a request's head to its response's head.",
    );
    let mut cumulative = 0;
    for (b, bound) in DURATION_BOUNDS.iter().enumerate() {
        cumulative += s.slots.iter().map(|w| w.duration_buckets[b]).sum::<u64>();
        let _ = writeln!(
            out,
            "server_http_request_duration_seconds_bucket{{le=\"{bound}\"}} {cumulative}"
        );
    }
    cumulative += s
        .slots
        .iter()
        .map(|w| w.duration_buckets[DURATION_BOUNDS.len()])
        .sum::<u64>();
    let _ = writeln!(
        out,
        "server_http_request_duration_seconds_bucket{{le=\"+Inf\"}} {cumulative}"
    );
    let sum_us: u64 = s.slots.iter().map(|w| w.duration_sum_us).sum();
    let _ = writeln!(
        out,
        "server_http_request_duration_seconds_sum {}",
        sum_us as f64 / 1e6
    );
    let _ = writeln!(
        out,
        "server_http_request_duration_seconds_count {cumulative}"
    );

    header(
        &mut out,
        "server_http_requests_in_flight",
        "gauge",
        "Requests handed to the app and not answered yet.",
    );
    let _ = writeln!(
        out,
        "server_http_requests_in_flight {}",
        s.slots.iter().map(|w| w.in_flight).sum::<u64>()
    );

    header(
        &mut out,
        "server_connections_open",
        "gauge",
        "Open connections by protocol (upgraded: WebSockets).",
    );
    for (k, name) in CONNECTION_NAMES.iter().enumerate() {
        let n: u64 = s.slots.iter().map(|w| w.connections_open[k]).sum();
        let _ = writeln!(out, "server_connections_open{{protocol=\"{name}\"}} {n}");
    }
    header(
        &mut out,
        "server_connections_accepted_total",
        "counter",
        "Connections accepted by the workers.",
    );
    let _ = writeln!(
        out,
        "server_connections_accepted_total {}",
        s.slots.iter().map(|w| w.connections_total).sum::<u64>()
    );

    header(
        &mut out,
        "server_accept_queue_length",
        "gauge",
        "Connections waiting in the kernel's accept queue (TCP_INFO), sampled every 100 ms.",
    );
    let _ = writeln!(out, "server_accept_queue_length {}", s.accept_queue);
    header(
        &mut out,
        "server_accept_queue_length_max",
        "gauge",
        "Longest accept queue sampled since the previous scrape.",
    );
    let _ = writeln!(out, "server_accept_queue_length_max {}", s.accept_queue_max);
    header(
        &mut out,
        "server_accept_queue_capacity",
        "gauge",
        "The accept queue's capacity (backlog).",
    );
    let _ = writeln!(
        out,
        "server_accept_queue_capacity {}",
        s.accept_queue_capacity
    );

    header(
        &mut out,
        "server_workers",
        "gauge",
        "Worker processes by state.",
    );
    for (state, name) in [
        (SlotState::Starting, "starting"),
        (SlotState::Ready, "ready"),
        (SlotState::Draining, "draining"),
    ] {
        let n = s.slots.iter().filter(|w| w.state == state as u64).count();
        let _ = writeln!(out, "server_workers{{state=\"{name}\"}} {n}");
    }
    header(
        &mut out,
        "server_workers_desired",
        "gauge",
        "Workers the server keeps.",
    );
    let _ = writeln!(out, "server_workers_desired {}", s.workers_desired);
    header(
        &mut out,
        "server_worker_restarts_total",
        "counter",
        "Workers replaced or removed, by reason.",
    );
    for reason in RestartReason::ALL {
        let _ = writeln!(
            out,
            "server_worker_restarts_total{{reason=\"{}\"}} {}",
            reason.label(),
            s.restarts[reason.index()]
        );
    }

    header(
        &mut out,
        "server_worker_resident_memory_bytes",
        "gauge",
        "Resident memory of each live worker.",
    );
    for w in s.slots.iter().filter(|w| w.pid != 0) {
        let _ = writeln!(
            out,
            "server_worker_resident_memory_bytes{{worker=\"{}\",pid=\"{}\"}} {}",
            w.index, w.pid, w.rss_bytes
        );
    }
    header(
        &mut out,
        "server_worker_cpu_seconds_total",
        "counter",
        "CPU time (user + system) of the workers of each slot.",
    );
    for w in &s.slots {
        let _ = writeln!(
            out,
            "server_worker_cpu_seconds_total{{worker=\"{}\"}} {}",
            w.index,
            w.cpu_us as f64 / 1e6
        );
    }
    header(
        &mut out,
        "server_last_drain_duration_seconds",
        "gauge",
        "How long the last worker drain took, from its stop to its exit.",
    );
    let _ = writeln!(
        out,
        "server_last_drain_duration_seconds {}",
        s.last_drain_us as f64 / 1e6
    );
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn workers_are_summed_and_the_histogram_is_cumulative() {
        let mut a = SlotSnapshot {
            index: 0,
            pid: 10,
            state: SlotState::Ready as u64,
            ..SlotSnapshot::default()
        };
        a.requests[0][1] = 5; // GET 2xx
        a.duration_buckets[0] = 4;
        a.duration_buckets[DURATION_BOUNDS.len()] = 1;
        a.connections_open[2] = 3;
        let mut b = SlotSnapshot {
            index: 1,
            pid: 11,
            state: SlotState::Draining as u64,
            ..SlotSnapshot::default()
        };
        b.requests[0][1] = 7;
        b.requests[2][4] = 1; // POST 5xx
        b.duration_buckets[1] = 8;
        let mut snapshot = Snapshot {
            slots: vec![a, b],
            ..Snapshot::default()
        };
        snapshot.restarts[RestartReason::Memory.index()] = 2;
        let text = render(&snapshot);
        for line in [
            "server_http_requests_total{method=\"GET\",status=\"2xx\"} 12",
            "server_http_requests_total{method=\"POST\",status=\"5xx\"} 1",
            "server_worker_http_requests_total{worker=\"1\"} 8",
            "server_http_request_duration_seconds_bucket{le=\"0.001\"} 4",
            "server_http_request_duration_seconds_bucket{le=\"0.005\"} 12",
            "server_http_request_duration_seconds_bucket{le=\"+Inf\"} 13",
            "server_http_request_duration_seconds_count 13",
            "server_connections_open{protocol=\"upgraded\"} 3",
            "server_workers{state=\"ready\"} 1",
            "server_workers{state=\"draining\"} 1",
            "server_worker_restarts_total{reason=\"memory\"} 2",
        ] {
            assert!(text.lines().any(|l| l == line), "missing {line}:\n{text}");
        }
    }
}
