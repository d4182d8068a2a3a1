//! The accept gate: connections spread evenly over the workers that share one listener.
//!
//! Every worker waits on the same socket and the kernel wakes them all for each new
//! connection; whichever calls `accept` first takes it, and that is usually the same
//! worker (the one whose thread is already running), so one worker can end up with every
//! keep-alive connection while the others idle (uvicorn-worker #34, puma #2078). Here a
//! woken worker first compares its open connections with those of the other ready workers
//! (read from the shared metrics region, where each worker counts its own): while another
//! has fewer, or as many and at least two accepted connections fewer in all, it yields its
//! core, up to [`HOLD`], so that one accepts first; if nobody did (that worker is busy),
//! it accepts after all. While holds keep ending that way, the worker skips the holds that
//! would move a single connection ([`HoldBackoff`]): with a new connection per request
//! (every worker busy, the counts moving all the time) 83 % of holds timed out, and their
//! waits cost a fifth of the throughput. A larger difference is always held for, so
//! keep-alive connections still end at most two apart. Nothing is ever refused or left in the queue: the gate only
//! orders who accepts. It waits for the socket on a second registration of its own
//! (`AsyncFd` on a duplicate descriptor) so that it can look before it takes.
//!
//! The shared socket and its queue stay as they are, so a worker that leaves (restart,
//! scale-down, recycling, a crash) still loses nothing: this is the reason not to use one
//! `SO_REUSEPORT` socket per worker, whose queue leaves with its worker.

use std::io;
use std::os::fd::BorrowedFd;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use tokio::io::unix::AsyncFd;
use tokio::net::TcpStream;

use crate::metrics::region::{this_worker_with_index, Region, SlotState, WorkerSlot};

/// Longest time a worker with more connections than another lets that one accept first.
/// Measured on 2 cores with 16 keep-alive clients arriving at once on 4 workers (6 runs
/// each): at 100 us one run placed connections wrong (a worker not scheduled in time), at
/// 150 and 200 us none. Under a new connection per request every hold delays an accept:
/// next to no gate, 200 us measured 19-20 % lower in three batches, 100 and 150 us 11-26 %
/// (no difference this VM's noise can show); 150 us is the shortest that kept bursts even.
pub(crate) const HOLD: Duration = Duration::from_micros(150);

/// A second registration of the listening socket, for readiness without accepting.
pub(crate) struct AcceptGate {
    listener: AsyncFd<socket2::Socket>,
}

impl AcceptGate {
    /// A gate on `listener` (a TCP listening socket), when this worker has a slot in the
    /// shared region and so can compare itself with the others.
    pub(crate) fn new(listener: BorrowedFd<'_>) -> Option<Self> {
        this_worker_with_index()?;
        let socket = socket2::Socket::from(listener.try_clone_to_owned().ok()?);
        socket.set_nonblocking(true).ok()?;
        // SAFETY: the socket owns its descriptor (a fresh dup) and is moved into the
        // AsyncFd, which keeps it open and unchanged until it is dropped.
        let listener =
            unsafe { AsyncFd::register_with_interest(socket, tokio::io::Interest::READABLE) }
                .ok()?;
        Some(Self { listener })
    }

    /// The next connection, once this worker's turn has come. Cancel-safe: nothing is
    /// taken from the queue until the `accept` that returns it.
    pub(crate) async fn accept(&self) -> io::Result<(TcpStream, String)> {
        loop {
            let mut ready = self.listener.readable().await?;
            if let Some(difference) = less_loaded_worker() {
                if difference > SKIPPABLE_DIFFERENCE || !BACKOFF.skip_this_one() {
                    BACKOFF.record(hold_while_busier());
                }
            }
            let attempt = ready.try_io(|listener| listener.get_ref().accept());
            match attempt {
                Ok(Ok((socket, peer))) => {
                    socket.set_nonblocking(true)?;
                    let stream = TcpStream::from_std(std::net::TcpStream::from(socket))?;
                    let _ = stream.set_nodelay(true);
                    let peer = peer
                        .as_socket()
                        .map_or_else(String::new, |addr| addr.to_string());
                    return Ok((stream, peer));
                }
                Ok(Err(e)) => return Err(e),
                // Another worker took it: wait for the next one.
                Err(_would_block) => {}
            }
        }
    }
}

/// The most connections a worker may have over another when it skips a hold: only the
/// holds that would move one connection are skipped.
const SKIPPABLE_DIFFERENCE: u64 = 1;

/// How a hold ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum HoldOutcome {
    /// Another worker had fewer and accepted (or its count came down) within [`HOLD`].
    Released,
    /// [`HOLD`] passed with another worker still less loaded: it was busy.
    TimedOut,
}

/// Lets a less loaded worker take the pending connection: while another ready worker has
/// fewer open connections (checked again after each yield, since it changes as that
/// worker accepts), for at most [`HOLD`]. The thread yields its core meanwhile (which on
/// a busy machine is often what the other worker needs to run); a less loaded worker
/// that is busy computing costs this one at most [`HOLD`] before it accepts after all.
fn hold_while_busier() -> HoldOutcome {
    let started = Instant::now();
    while less_loaded_worker().is_some() {
        if started.elapsed() >= HOLD {
            return HoldOutcome::TimedOut;
        }
        std::thread::yield_now();
    }
    HoldOutcome::Released
}

/// Holds skipped after holds that timed out: each timeout doubles the number of skippable
/// holds that are skipped (up to [`HoldBackoff::MOST_SKIPPED`]), each hold that worked
/// halves it.
struct HoldBackoff {
    /// Skippable holds to skip after a timeout.
    skip: AtomicU32,
    /// Skippable holds still to skip.
    left: AtomicU32,
}

impl HoldBackoff {
    const MOST_SKIPPED: u32 = 64;

    /// Whether this skippable hold is skipped (counting it down).
    fn skip_this_one(&self) -> bool {
        let left = self.left.load(Ordering::Relaxed);
        if left == 0 {
            return false;
        }
        self.left.store(left - 1, Ordering::Relaxed);
        true
    }

    /// Learns from how a hold ended.
    fn record(&self, outcome: HoldOutcome) {
        let skip = self.skip.load(Ordering::Relaxed);
        let skip = match outcome {
            HoldOutcome::TimedOut => (skip * 2).clamp(1, Self::MOST_SKIPPED),
            HoldOutcome::Released => skip / 2,
        };
        self.skip.store(skip, Ordering::Relaxed);
        if outcome == HoldOutcome::TimedOut {
            self.left.store(skip, Ordering::Relaxed);
        }
    }
}

/// This worker's backoff (one listener per worker process goes through the gate).
static BACKOFF: HoldBackoff = HoldBackoff {
    skip: AtomicU32::new(0),
    left: AtomicU32::new(0),
};

/// Open connections of a slot, every kind.
fn open(slot: &WorkerSlot) -> u64 {
    slot.connections_open
        .iter()
        .map(|n| n.load(Ordering::Relaxed))
        .sum()
}

/// Another ready worker that should accept first, if any: it has fewer open connections,
/// or as many and at least two accepted connections fewer in all. Returns how many open
/// connections this worker has over the least loaded such worker (0 for a tie on open
/// connections).
fn less_loaded_worker() -> Option<u64> {
    let (Some(region), Some((me, mine))) = (Region::get(), this_worker_with_index()) else {
        return None;
    };
    let my_open = open(mine);
    let my_total = mine.connections_total.load(Ordering::Relaxed);
    let bound = (region.parent.slot_bound.load(Ordering::Relaxed) as usize).min(region.slots.len());
    region.slots[..bound]
        .iter()
        .enumerate()
        .filter(|&(index, slot)| {
            index != me && slot.state.load(Ordering::Relaxed) == SlotState::Ready as u64
        })
        .filter_map(|(_, other)| {
            let open = open(other);
            let less_loaded = open < my_open
                || (open == my_open
                    && other.connections_total.load(Ordering::Relaxed) + 1 < my_total);
            less_loaded.then(|| my_open - open)
        })
        .max()
}
