//! What the parent watches for the metrics and for `--limit-max-memory`, without an async
//! runtime: which slot of the shared region each worker has, the accept queue (every
//! 100 ms), each worker's RSS and CPU (every 250 ms, from `/proc`; every 50 ms while one is
//! above the memory limit), how long each drain took, and how far above the memory limit
//! each worker is (reported as events to the machine, which decides).

use std::collections::BTreeMap;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use nix::unistd::Pid;

use super::listeners::Listeners;
use super::machine::{Event, Supervisor};
use super::memory_limit::MemoryLevel;
use super::process_usage;
use crate::metrics::region::{Region, SlotState, MAX_SLOTS};

/// How often the accept queue is sampled for the metrics.
const QUEUE_SAMPLE: Duration = Duration::from_millis(100);
/// How often workers' memory and CPU are read: often enough that a worker leaking
/// 100 MiB/s is caught within 25 MiB of the limit.
const USAGE_SAMPLE: Duration = Duration::from_millis(250);
/// How often they are read while a worker is above the memory limit: it is then closer to
/// being drained at once or killed (see [`super::memory_limit`]), and a worker leaking
/// 100 MiB/s passes a threshold by at most 5 MiB before it is seen.
const USAGE_SAMPLE_OVER_LIMIT: Duration = Duration::from_millis(50);

/// The parent's view of its workers for the metrics and the memory limit.
#[derive(Debug)]
pub(crate) struct Observer {
    /// The shared region (with `--metrics-bind`, or for the accept gate).
    region: Option<&'static Region>,
    /// `--metrics-bind` is on: the queue and the workers' usage are sampled for it.
    metrics: bool,
    /// `--limit-max-memory`, in bytes.
    memory_limit: Option<u64>,
    /// Each live worker's slot.
    slots: BTreeMap<Pid, usize>,
    /// CPU time of the workers a slot had before its current one (keeps the counter
    /// monotonic), by slot.
    cpu_of_past_workers: Vec<u64>,
    /// Each live worker's last CPU reading.
    last_cpu: BTreeMap<Pid, u64>,
    /// When each draining worker was told to stop.
    draining_since: BTreeMap<Pid, Instant>,
    next_queue_sample: Instant,
    next_usage_sample: Instant,
}

impl Observer {
    /// Keeps the slots of `region` (if any), samples for the metrics (if `metrics`) and
    /// for the memory limit (if any).
    pub(crate) fn new(
        region: Option<&'static Region>,
        metrics: bool,
        memory_limit: Option<u64>,
    ) -> Self {
        let now = Instant::now();
        Self {
            region,
            metrics,
            memory_limit,
            slots: BTreeMap::new(),
            cpu_of_past_workers: vec![0; if region.is_some() { MAX_SLOTS } else { 0 }],
            last_cpu: BTreeMap::new(),
            draining_since: BTreeMap::new(),
            next_queue_sample: now,
            next_usage_sample: now + USAGE_SAMPLE,
        }
    }

    /// Whether anything is sampled.
    fn active(&self) -> bool {
        self.metrics || self.memory_limit.is_some()
    }

    /// The region, when the metrics are on.
    fn metrics_region(&self) -> Option<&'static Region> {
        self.region.filter(|_| self.metrics)
    }

    /// The slot the next worker gets: the lowest one free.
    pub(crate) fn next_slot(&self) -> Option<usize> {
        self.region?;
        (0..MAX_SLOTS).find(|i| !self.slots.values().any(|s| s == i))
    }

    /// A worker was forked into `slot`.
    pub(crate) fn spawned(&mut self, pid: Pid, slot: Option<usize>) {
        let Some(slot) = slot else { return };
        self.slots.insert(pid, slot);
        self.set_state(pid, SlotState::Starting);
        if let Some(region) = self.region {
            if let Some(s) = region.slot(slot) {
                s.pid.store(pid.as_raw() as u64, Ordering::Relaxed);
            }
            region
                .parent
                .slot_bound
                .fetch_max(slot as u64 + 1, Ordering::Relaxed);
        }
    }

    /// Something the machine is about to hear, seen first (readiness).
    pub(crate) fn note(&mut self, event: &Event) {
        if let Event::WorkerReady(pid) = *event {
            self.set_state(pid, SlotState::Ready);
        }
    }

    /// A worker was told to stop.
    pub(crate) fn stopping(&mut self, pid: Pid) {
        self.draining_since.entry(pid).or_insert_with(Instant::now);
        self.set_state(pid, SlotState::Draining);
    }

    /// A worker was reaped: its drain time is recorded, its gauges are zeroed.
    pub(crate) fn reaped(&mut self, pid: Pid) {
        let region = self.region;
        if let (Some(since), Some(region)) = (self.draining_since.remove(&pid), region) {
            let took = since.elapsed().as_micros() as u64;
            region.parent.last_drain_us.store(took, Ordering::Relaxed);
        }
        let last_cpu = self.last_cpu.remove(&pid).unwrap_or(0);
        if let Some(slot) = self.slots.remove(&pid) {
            self.cpu_of_past_workers[slot] += last_cpu;
            if let Some(s) = region.and_then(|r| r.slot(slot)) {
                s.clear_gauges();
                s.cpu_us
                    .store(self.cpu_of_past_workers[slot], Ordering::Relaxed);
            }
        }
    }

    /// Copies what the machine knows (restarts, the desired count) into the region.
    pub(crate) fn publish(&self, supervisor: &Supervisor) {
        let Some(region) = self.region else { return };
        for (counter, value) in region.parent.restarts.iter().zip(supervisor.restarts()) {
            counter.store(value, Ordering::Relaxed);
        }
        region
            .parent
            .workers_desired
            .store(supervisor.desired_workers() as u64, Ordering::Relaxed);
    }

    /// When the loop must wake up next for a sample.
    pub(crate) fn next_wakeup(&self) -> Option<Instant> {
        if !self.active() {
            return None;
        }
        let queue = self.metrics_region().map(|_| self.next_queue_sample);
        Some(queue.map_or(self.next_usage_sample, |q| q.min(self.next_usage_sample)))
    }

    /// Takes the samples that are due; returns the workers above the memory limit.
    pub(crate) fn sample(&mut self, listeners: &Listeners, workers: &[Pid]) -> Vec<Event> {
        let now = Instant::now();
        if let Some(region) = self
            .metrics_region()
            .filter(|_| now >= self.next_queue_sample)
        {
            let queued = u64::from(listeners.queued());
            region.parent.accept_queue.store(queued, Ordering::Relaxed);
            region
                .parent
                .accept_queue_max
                .fetch_max(queued, Ordering::Relaxed);
            self.next_queue_sample = now + QUEUE_SAMPLE;
        }
        if !self.active() || now < self.next_usage_sample {
            return Vec::new();
        }
        let mut over = Vec::new();
        for &pid in workers {
            let Some(usage) = process_usage::read(pid.as_raw()) else {
                continue;
            };
            self.last_cpu.insert(pid, usage.cpu_us);
            if let Some(slot) = self.slots.get(&pid) {
                if let Some(s) = self.region.and_then(|r| r.slot(*slot)) {
                    s.rss_bytes.store(usage.rss_bytes, Ordering::Relaxed);
                    s.cpu_us.store(
                        self.cpu_of_past_workers[*slot] + usage.cpu_us,
                        Ordering::Relaxed,
                    );
                }
            }
            let level = self.memory_limit.map_or(MemoryLevel::Within, |limit| {
                MemoryLevel::of(usage.rss_bytes, limit)
            });
            if level != MemoryLevel::Within {
                over.push(Event::WorkerOverMemory {
                    pid,
                    rss_bytes: usage.rss_bytes,
                    level,
                });
            }
        }
        let every = if over.is_empty() {
            USAGE_SAMPLE
        } else {
            USAGE_SAMPLE_OVER_LIMIT
        };
        self.next_usage_sample = now + every;
        over
    }

    fn set_state(&self, pid: Pid, state: SlotState) {
        if let (Some(region), Some(slot)) = (self.region, self.slots.get(&pid)) {
            if let Some(s) = region.slot(*slot) {
                s.state.store(state as u64, Ordering::Relaxed);
            }
        }
    }

    /// Records the accept queue's capacity.
    pub(crate) fn set_queue_capacity(&self, backlog: i32) {
        if let Some(region) = self.region {
            region
                .parent
                .accept_queue_capacity
                .store(backlog.max(0) as u64, Ordering::Relaxed);
        }
    }
}
