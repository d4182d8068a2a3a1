//! The hand-over between the worker's tokio thread and the Python loop thread.
//!
//! The tokio side pushes [`ToLoop`] messages onto a queue and, when the queue was empty,
//! writes to an eventfd that the asyncio loop watches (`loop.add_reader`): no GIL on the
//! tokio side, one wake-up per batch. The loop side, called back with the GIL held, takes
//! the whole batch and handles it ([`crate::http::handle_batch`]).

use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, OnceLock};
use std::time::Instant;

use nix::sys::eventfd::{EfdFlags, EventFd};
use pyo3::prelude::*;

use crate::http::ToLoop;

/// The queue from the tokio thread to the loop thread.
pub(crate) struct LoopQueue {
    pending: Mutex<Vec<ToLoop>>,
    /// Readable while `pending` has messages the loop has not taken.
    wake: EventFd,
}

static QUEUE: OnceLock<LoopQueue> = OnceLock::new();
/// When the loop last ran its tick, in milliseconds since [`EPOCH`].
static LAST_TICK_MS: AtomicU64 = AtomicU64::new(0);
static EPOCH: OnceLock<Instant> = OnceLock::new();

/// How often the loop proves it is not blocked.
const TICK_SECS: f64 = 0.25;
/// Longest silence of the loop before the worker stops sending heartbeats.
const LOOP_SILENCE_MS: u64 = 1500;

impl LoopQueue {
    /// The queue (created by [`start_loop_thread`]).
    pub(crate) fn get() -> &'static LoopQueue {
        QUEUE.get_or_init(|| {
            // Only a process out of descriptors fails here, before any request is taken.
            let wake = EventFd::from_flags(EfdFlags::EFD_CLOEXEC | EfdFlags::EFD_NONBLOCK)
                .expect("cannot create the loop's eventfd");
            LoopQueue {
                pending: Mutex::new(Vec::new()),
                wake,
            }
        })
    }

    /// Hands a message to the loop thread.
    pub(crate) fn push(&self, message: ToLoop) {
        let was_empty = {
            let mut pending = self.pending.lock().unwrap_or_else(|e| e.into_inner());
            pending.push(message);
            pending.len() == 1
        };
        if was_empty {
            // Fails only when the counter would overflow, which one write per batch never
            // reaches: the eventfd is readable either way.
            let _ = self.wake.write(1);
        }
    }

    /// Everything pushed since the last call (the loop thread, woken by the eventfd).
    fn take(&self) -> Vec<ToLoop> {
        // EAGAIN when a previous call already took this wake-up's messages: nothing to do.
        let _ = self.wake.read();
        std::mem::take(&mut *self.pending.lock().unwrap_or_else(|e| e.into_inner()))
    }
}

/// The loop's reader callback on the eventfd.
#[pyclass]
struct Wake;

#[pymethods]
impl Wake {
    fn __call__(&self, py: Python<'_>) {
        crate::http::handle_batch(py, LoopQueue::get().take());
    }
}

/// The loop's periodic proof of life.
#[pyclass]
struct Tick {
    event_loop: Py<PyAny>,
}

#[pymethods]
impl Tick {
    fn __call__(slf: Bound<'_, Self>) -> PyResult<()> {
        note_tick();
        let event_loop = slf.borrow().event_loop.clone_ref(slf.py());
        event_loop.call_method1(slf.py(), "call_later", (TICK_SECS, slf))?;
        Ok(())
    }
}

fn note_tick() {
    let epoch = EPOCH.get_or_init(Instant::now);
    LAST_TICK_MS.store(epoch.elapsed().as_millis() as u64, Ordering::Relaxed);
}

/// Whether the loop ran its tick lately: a handler that blocks the loop stops the
/// worker's heartbeats, so the supervisor replaces the worker as hung.
pub(crate) fn loop_alive() -> bool {
    let epoch = EPOCH.get_or_init(Instant::now);
    let now = epoch.elapsed().as_millis() as u64;
    now.saturating_sub(LAST_TICK_MS.load(Ordering::Relaxed)) < LOOP_SILENCE_MS
}

/// The running loop, for the loop thread's own calls.
static EVENT_LOOP: OnceLock<Py<PyAny>> = OnceLock::new();

/// The loop (set once it runs).
pub(crate) fn event_loop(py: Python<'_>) -> Option<Bound<'_, PyAny>> {
    EVENT_LOOP.get().map(|l| l.bind(py).clone())
}

/// Creates the event loop (uvloop when `kind` is `uvloop`, or `auto` and it is installed)
/// and runs it on a new thread; returns once it runs. Called with the GIL held.
pub(crate) fn start_loop_thread(py: Python<'_>, kind: &str) -> PyResult<()> {
    let uvloop = match kind {
        "asyncio" => None,
        "uvloop" => Some(py.import("uvloop")?),
        _ => py.import("uvloop").ok(),
    };
    let event_loop = match &uvloop {
        Some(uvloop) => uvloop.call_method0("new_event_loop")?,
        None => py.import("asyncio")?.call_method0("new_event_loop")?,
    };
    let name = match uvloop {
        Some(_) => "uvloop",
        None => "asyncio",
    };
    tracing::info!("event loop: {name}");
    let queue = LoopQueue::get();
    event_loop.call_method1("add_reader", (queue.wake.as_raw_fd(), Wake))?;
    let tick = Bound::new(
        py,
        Tick {
            event_loop: event_loop.clone().unbind(),
        },
    )?;
    event_loop.call_method1("call_soon", (tick,))?;
    note_tick();
    let _ = EVENT_LOOP.set(event_loop.clone().unbind());
    let runner = event_loop.unbind();
    let thread = std::thread::Builder::new()
        .name("asgi-loop".into())
        .spawn(move || {
            Python::attach(|py| {
                let asyncio = py.import("asyncio");
                let result = asyncio
                    .and_then(|a| a.call_method1("set_event_loop", (runner.bind(py),)))
                    .and_then(|_| runner.call_method0(py, "run_forever"));
                if let Err(e) = result {
                    e.print(py);
                }
            });
        })
        .map_err(|e| pyo3::exceptions::PyOSError::new_err(e.to_string()))?;
    *LOOP_THREAD.lock().unwrap_or_else(|e| e.into_inner()) = Some(thread);
    Ok(())
}

/// The loop thread, joined when the worker ends.
static LOOP_THREAD: Mutex<Option<std::thread::JoinHandle<()>>> = Mutex::new(None);

/// Stops the loop and waits for its thread (called without the GIL), so that the
/// interpreter finalizes with no other thread inside it.
pub(crate) fn stop_loop_thread() {
    Python::attach(|py| {
        if let Some(event_loop) = event_loop(py) {
            if let Ok(stop) = event_loop.getattr("stop") {
                let _ = event_loop.call_method1("call_soon_threadsafe", (stop,));
            }
        }
    });
    let thread = LOOP_THREAD.lock().unwrap_or_else(|e| e.into_inner()).take();
    if let Some(thread) = thread {
        let _ = thread.join();
    }
}
