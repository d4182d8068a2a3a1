//! The memory every process of the server shares for its metrics: a memfd mapped once by
//! the parent before any fork (`MAP_SHARED`), so each forked worker inherits the same
//! physical pages, and a worker that execs a program (the Python workers) maps the same
//! memfd again from the descriptor it is given. Each worker adds to its own slot with relaxed atomic increments (no
//! lock, no system call, no allocation on the request path); the parent writes what only
//! it knows (restarts, the accept queue, workers' RSS and CPU); whichever process serves
//! a scrape reads everything.
//!
//! Counters in a slot are never reset: a worker that takes over a slot adds to what its
//! predecessors counted, so the sums a scrape shows only grow (as Prometheus counters
//! must), across restarts and crashes. Gauges (in flight, open connections) belong to the
//! live worker; the parent zeroes them when it reaps one.

use std::num::NonZeroUsize;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::OnceLock;

use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd, RawFd};

use nix::sys::mman::{mmap, MapFlags, ProtFlags};

use crate::error::{Error, Result};
use crate::restart_reason::RestartReason;

/// Slots for workers; a server with more workers counts the extra ones in no slot.
pub(crate) const MAX_SLOTS: usize = 1024;
/// Request methods counted apart: GET, HEAD, POST, PUT, DELETE, PATCH, OPTIONS, other.
pub(crate) const METHODS: usize = 8;
/// Status classes 1xx to 5xx.
pub(crate) const STATUS_CLASSES: usize = 5;
/// Upper bounds (seconds) of the request duration histogram's buckets; one more bucket
/// holds the rest (+Inf).
pub(crate) const DURATION_BOUNDS: [f64; 12] = [
    0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];
/// Kinds of open connections: HTTP/1, HTTP/2, upgraded (WebSocket).
pub(crate) const CONNECTION_KINDS: usize = 3;

/// One worker's counters and gauges.
#[derive(Debug)]
#[repr(C)]
pub(crate) struct WorkerSlot {
    /// Requests answered, by method and status class.
    pub(crate) requests: [[AtomicU64; STATUS_CLASSES]; METHODS],
    /// Requests by duration bucket (not cumulative; the renderer sums them).
    pub(crate) duration_buckets: [AtomicU64; DURATION_BOUNDS.len() + 1],
    /// Sum of the durations, in microseconds.
    pub(crate) duration_sum_us: AtomicU64,
    /// Requests handed to the app and not answered yet (a gauge).
    pub(crate) in_flight: AtomicU64,
    /// Open connections by kind (gauges).
    pub(crate) connections_open: [AtomicU64; CONNECTION_KINDS],
    /// Connections accepted.
    pub(crate) connections_total: AtomicU64,
    /// Written by the parent: the worker's pid (0: no worker), state, RSS, CPU.
    pub(crate) pid: AtomicU64,
    /// [`SlotState`] as a number.
    pub(crate) state: AtomicU64,
    /// Resident memory, bytes.
    pub(crate) rss_bytes: AtomicU64,
    /// User plus system CPU time, microseconds.
    pub(crate) cpu_us: AtomicU64,
}

/// Where the worker of a slot is, as the parent sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u64)]
pub(crate) enum SlotState {
    /// No worker.
    Empty = 0,
    /// Forked, not ready.
    Starting = 1,
    /// Serving.
    Ready = 2,
    /// Told to stop.
    Draining = 3,
}

/// What only the parent knows.
#[derive(Debug)]
#[repr(C)]
pub(crate) struct ParentBlock {
    /// Connections waiting in the kernel's accept queue (TCP_INFO), last sample.
    pub(crate) accept_queue: AtomicU64,
    /// The longest accept queue sampled since the last scrape (a scrape takes it).
    pub(crate) accept_queue_max: AtomicU64,
    /// The accept queue's capacity (the backlog).
    pub(crate) accept_queue_capacity: AtomicU64,
    /// Workers replaced or removed, by [`RestartReason`].
    pub(crate) restarts: [AtomicU64; RestartReason::ALL.len()],
    /// How long the last worker drain took (stop sent to exit), microseconds.
    pub(crate) last_drain_us: AtomicU64,
    /// Workers the server wants.
    pub(crate) workers_desired: AtomicU64,
    /// One more than the highest slot a live worker has: how far workers look when they
    /// compare their load with the others' (the accept gate).
    pub(crate) slot_bound: AtomicU64,
}

/// The whole shared mapping.
#[derive(Debug)]
#[repr(C)]
pub(crate) struct Region {
    /// The parent's values.
    pub(crate) parent: ParentBlock,
    /// One slot per worker.
    pub(crate) slots: [WorkerSlot; MAX_SLOTS],
}

static REGION: OnceLock<&'static Region> = OnceLock::new();
/// The memfd the parent mapped the region from.
static MEMORY: OnceLock<OwnedFd> = OnceLock::new();
static THIS_WORKER: OnceLock<(usize, &'static WorkerSlot)> = OnceLock::new();
/// Whether workers count requests (`--metrics-bind`); connections are counted whenever a
/// worker has a slot (the accept gate compares them). Set by the parent before any fork.
static COUNT_REQUESTS: AtomicBool = AtomicBool::new(false);

/// Turns request counting on (the parent, before the first fork, with `--metrics-bind`).
pub(crate) fn count_requests() {
    COUNT_REQUESTS.store(true, Ordering::Relaxed);
}

impl Region {
    /// Maps the region (zeroed by the kernel) and makes it this process's; every process
    /// forked afterwards shares it. Called once, by the parent, before the first fork.
    pub(crate) fn install() -> Result<&'static Region> {
        if let Some(region) = REGION.get() {
            return Ok(region);
        }
        let memory = nix::sys::memfd::memfd_create(
            c"server-metrics",
            nix::sys::memfd::MFdFlags::MFD_CLOEXEC,
        )
        .map_err(|e| Error::sys("cannot create the shared metrics memory", e))?;
        nix::unistd::ftruncate(&memory, std::mem::size_of::<Region>() as i64)
            .map_err(|e| Error::sys("cannot size the shared metrics memory", e))?;
        let region = map(memory.as_fd())?;
        let _ = MEMORY.set(memory);
        Ok(REGION.get_or_init(|| region))
    }

    /// Maps the region a parent created, from its memfd at `fd` (an exec'd worker).
    pub(crate) fn adopt(fd: BorrowedFd<'_>) -> Result<&'static Region> {
        let region = map(fd)?;
        Ok(REGION.get_or_init(|| region))
    }

    /// The memfd behind the region, for a worker that execs (it maps it again).
    pub(crate) fn memory_fd() -> Option<RawFd> {
        MEMORY.get().map(AsRawFd::as_raw_fd)
    }

    /// The region, when metrics are on.
    pub(crate) fn get() -> Option<&'static Region> {
        REGION.get().copied()
    }

    /// Slot `index`, if there is one.
    pub(crate) fn slot(&self, index: usize) -> Option<&WorkerSlot> {
        self.slots.get(index)
    }
}

/// Maps `memory` (a memfd as long as [`Region`], zero-filled by the kernel at creation).
fn map(memory: BorrowedFd<'_>) -> Result<&'static Region> {
    let length = NonZeroUsize::new(std::mem::size_of::<Region>()).ok_or_else(|| {
        Error::sys(
            "the metrics region has no size",
            std::io::Error::from(std::io::ErrorKind::InvalidInput),
        )
    })?;
    // SAFETY: a shared mapping of a memfd of this length, never unmapped.
    let pointer = unsafe {
        mmap(
            None,
            length,
            ProtFlags::PROT_READ | ProtFlags::PROT_WRITE,
            MapFlags::MAP_SHARED,
            memory,
            0,
        )
    }
    .map_err(|e| Error::sys("cannot map the shared metrics memory", e))?;
    // SAFETY: the mapping is page-aligned and as long as `Region`, whose fields are all
    // atomics, for which any bytes (zero at creation) are a valid value; it is never
    // unmapped, so the reference lives as long as the process.
    Ok(unsafe { pointer.cast::<Region>().as_ref() })
}

/// Whether this worker counts requests (set in an exec'd worker from the parent's word).
pub(crate) fn set_count_requests(on: bool) {
    COUNT_REQUESTS.store(on, Ordering::Relaxed);
}

/// Whether requests are counted, to tell an exec'd worker.
pub(crate) fn counts_requests() -> bool {
    COUNT_REQUESTS.load(Ordering::Relaxed)
}

/// Called in a forked worker: its requests go to slot `index` from now on.
pub(crate) fn become_worker(index: usize) {
    if let Some(slot) = Region::get().and_then(|r| r.slots.get(index)) {
        let _ = THIS_WORKER.set((index, slot));
    }
}

/// This worker's slot, when it has one.
#[inline]
pub(crate) fn this_worker() -> Option<&'static WorkerSlot> {
    THIS_WORKER.get().map(|&(_, slot)| slot)
}

/// This worker's slot and its number.
pub(crate) fn this_worker_with_index() -> Option<(usize, &'static WorkerSlot)> {
    THIS_WORKER.get().copied()
}

/// This worker's slot, when it counts requests (`--metrics-bind`).
#[inline]
pub(crate) fn this_worker_counting_requests() -> Option<&'static WorkerSlot> {
    if COUNT_REQUESTS.load(Ordering::Relaxed) {
        this_worker()
    } else {
        None
    }
}

impl WorkerSlot {
    /// Zeroes the gauges of a worker that is gone (it may have died holding some).
    pub(crate) fn clear_gauges(&self) {
        self.in_flight.store(0, Ordering::Relaxed);
        for open in &self.connections_open {
            open.store(0, Ordering::Relaxed);
        }
        self.rss_bytes.store(0, Ordering::Relaxed);
        self.state.store(SlotState::Empty as u64, Ordering::Relaxed);
        self.pid.store(0, Ordering::Relaxed);
    }
}
