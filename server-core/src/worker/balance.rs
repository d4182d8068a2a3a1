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
//! it accepts after all. Connections that come and go faster than holds can place them
//! are not held for ([`Turnover`]): with a new connection per request every worker is
//! busy and the counts move all the time, so 83 % of holds ran out waiting for a worker
//! that could not accept, and the gate cost a fifth of the throughput; there the churn
//! spreads the load by itself. Nothing is ever refused or left in the queue: the gate only
//! orders who accepts. It waits for the socket on a second registration of its own
//! (`AsyncFd` on a duplicate descriptor) so that it can look before it takes.
//!
//! The shared socket and its queue stay as they are, so a worker that leaves (restart,
//! scale-down, recycling, a crash) still loses nothing: this is the reason not to use one
//! `SO_REUSEPORT` socket per worker, whose queue leaves with its worker.

use std::io;
use std::os::fd::BorrowedFd;
use std::sync::atomic::Ordering;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use tokio::io::unix::AsyncFd;
use tokio::net::TcpStream;

use crate::metrics::region::{this_worker_with_index, Region, SlotState, WorkerSlot};

/// Longest time a worker with more connections than another lets that one accept first.
/// Measured on 2 cores with 16 keep-alive clients arriving at once on 4 workers (6 runs
/// each): at 100 us one run placed connections wrong (a worker not scheduled in time), at
/// 150 and 200 us none; 150 us is the shortest that kept bursts even. A hold delays an
/// accept, which a new connection per request would pay on most requests (11-26 % fewer
/// requests per second before the churn rule): a worker whose connections are short-lived
/// and churn does not hold at all ([`SHORT_LIVED`], [`CHURN_RATE`]).
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
    pub(crate) async fn accept(&self) -> io::Result<(TcpStream, super::listener::Peer)> {
        loop {
            let mut ready = self.listener.readable().await?;
            if !connections_are_short_lived() {
                hold_while_busier();
            }
            // Non-blocking from the start, as tokio's own accept does (no fcntl calls).
            let flags = libc::SOCK_NONBLOCK | libc::SOCK_CLOEXEC;
            let attempt = ready.try_io(|listener| listener.get_ref().accept4(flags));
            match attempt {
                Ok(Ok((socket, peer))) => {
                    let stream = TcpStream::from_std(std::net::TcpStream::from(socket))?;
                    let _ = stream.set_nodelay(true);
                    return Ok((stream, super::listener::Peer(peer.as_socket())));
                }
                Ok(Err(e)) => return Err(e),
                // Another worker took it: wait for the next one.
                Err(_would_block) => {}
            }
        }
    }
}

/// Connections that live shorter than this on average are short-lived: a hold would
/// place a connection that is gone a moment later. Keep-alive clients' connections live
/// seconds; a new connection per request lives a few milliseconds (32 open, 6,500 closed
/// per second in one worker under `wrk -c64 -H 'Connection: close'`: 5 ms).
const SHORT_LIVED: Duration = Duration::from_millis(50);

/// Closes per second below which holds are kept even for short-lived connections: at that
/// rate a hold costs a worker at most 15 % of a core (1,000 x 150 us), and a few clients
/// opening a connection now and then are still spread evenly (4 clients each opening one
/// every 50 ms went 33/28/20/19 % over 4 workers without holds, 25 % each with them).
const CHURN_RATE: f64 = 1000.0;

/// How long the close rate is measured over before it is taken again.
const RATE_WINDOW: Duration = Duration::from_millis(100);

/// This worker's connection turnover: how long its connections live on average, from its
/// open connections and the rate at which they close (Little's law), measured over
/// [`RATE_WINDOW`] as accepts come.
#[derive(Debug, Default)]
struct Turnover {
    /// When the window started, and how many connections had closed by then.
    window: Option<(Instant, u64)>,
    /// The last window's verdict.
    short_lived: bool,
}

impl Turnover {
    /// Takes a sample of this worker's counters at `now`: `closed` connections in all,
    /// `open` now. Returns whether its connections are short-lived.
    fn sample(&mut self, now: Instant, closed: u64, open: u64) -> bool {
        match self.window {
            None => self.window = Some((now, closed)),
            Some((start, closed_then)) => {
                let elapsed = now.duration_since(start);
                if elapsed >= RATE_WINDOW {
                    let rate = closed.saturating_sub(closed_then) as f64 / elapsed.as_secs_f64();
                    self.short_lived =
                        rate > CHURN_RATE && (open as f64) < rate * SHORT_LIVED.as_secs_f64();
                    self.window = Some((now, closed));
                }
            }
        }
        self.short_lived
    }
}

static TURNOVER: Mutex<Turnover> = Mutex::new(Turnover {
    window: None,
    short_lived: false,
});

/// Whether this worker's connections are short-lived ([`SHORT_LIVED`]) and come faster than
/// [`CHURN_RATE`]: then no hold.
fn connections_are_short_lived() -> bool {
    let Some((_, mine)) = this_worker_with_index() else {
        return false;
    };
    let open = open(mine);
    let closed = mine
        .connections_total
        .load(Ordering::Relaxed)
        .saturating_sub(open);
    let mut turnover = TURNOVER.lock().unwrap_or_else(|e| e.into_inner());
    turnover.sample(Instant::now(), closed, open)
}

/// Lets a less loaded worker take the pending connection: while another ready worker has
/// fewer open connections (checked again after each yield, since it changes as that
/// worker accepts), for at most [`HOLD`]. The thread yields its core meanwhile (which on
/// a busy machine is often what the other worker needs to run); a less loaded worker
/// that is busy computing costs this one at most [`HOLD`] before it accepts after all.
fn hold_while_busier() {
    let started = Instant::now();
    while should_hold() && started.elapsed() < HOLD {
        std::thread::yield_now();
    }
}

/// Open connections of a slot, every kind.
fn open(slot: &WorkerSlot) -> u64 {
    slot.connections_open
        .iter()
        .map(|n| n.load(Ordering::Relaxed))
        .sum()
}

/// Whether another ready worker should accept first: it has fewer open connections, or as
/// many and at least two accepted connections fewer in all.
fn should_hold() -> bool {
    let (Some(region), Some((me, mine))) = (Region::get(), this_worker_with_index()) else {
        return false;
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
        .any(|(_, other)| {
            let open = open(other);
            open < my_open
                || (open == my_open
                    && other.connections_total.load(Ordering::Relaxed) + 1 < my_total)
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn connections_that_close_faster_than_they_stay_are_short_lived() {
        let start = Instant::now();
        let mut turnover = Turnover::default();
        assert!(!turnover.sample(start, 0, 32), "no rate yet");
        // 650 closed in 100 ms with 32 open: 6,500/s, they live 5 ms.
        assert!(turnover.sample(start + RATE_WINDOW, 650, 32));
        // Within the window the verdict stands.
        assert!(turnover.sample(start + RATE_WINDOW + Duration::from_millis(10), 650, 32));
    }

    #[test]
    fn keep_alive_connections_that_stay_are_not_short_lived() {
        let start = Instant::now();
        let mut turnover = Turnover::default();
        turnover.sample(start, 0, 0);
        // 16 opened, none closed.
        assert!(!turnover.sample(start + RATE_WINDOW, 0, 16));
        // A few closing among many that stay: 2 in 100 ms with 200 open live 10 s.
        assert!(!turnover.sample(start + 2 * RATE_WINDOW, 2, 200));
        // A few clients opening a connection now and then (20 per second) are held for.
        assert!(!turnover.sample(start + 3 * RATE_WINDOW, 4, 0));
        // Churn that stops: after a short-lived window, a quiet one turns it back.
        assert!(turnover.sample(start + 4 * RATE_WINDOW, 1004, 10));
        assert!(!turnover.sample(start + 5 * RATE_WINDOW, 1004, 10));
    }
}
