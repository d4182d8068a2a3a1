//! Response heads from the loop thread to the tokio side, delivered in batches.
//!
//! A oneshot sent from the loop thread wakes the tokio thread at once: one eventfd write
//! and, on a busy machine, one preemption of the loop thread per response (measured with
//! the seed's FastAPI app, wrk -c64: the tokio thread slept and woke 0.82 times per
//! request, the loop thread was preempted 0.91 times). Instead the loop thread collects the
//! heads its tasks produce while it runs and hands them over together at its next
//! iteration: one wake-up of the tokio thread per loop iteration, where a dispatcher task
//! completes the oneshots (local wake-ups, no system call).
//!
//! A head waits at most for the rest of the iteration that produced it: a task step that
//! blocks the loop delays the heads finished before it in that iteration (as it delays
//! every other request on the loop), and a head that has waited [`MAX_HOLD`] goes out
//! with the next one produced, without waiting for the iteration to end.

use std::cell::RefCell;
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use axum::http::HeaderMap;
use bytes::Bytes;
use pyo3::intern;
use pyo3::prelude::*;
use pyo3::sync::PyOnceLock;
use tokio::sync::{mpsc, oneshot};

use crate::bridge::event_loop;

/// A response body item: data, or the app failed after it started (the connection is cut).
pub(crate) enum Frame {
    Data(Bytes),
    Abort,
}

/// The response's status and headers, with its body.
pub(crate) struct ResponseHead {
    pub(crate) status: u16,
    pub(crate) headers: HeaderMap,
    pub(crate) body: HeadBody,
}

/// A response body as the tokio side gets it with the head.
pub(crate) enum HeadBody {
    /// The app sent it at once (`more_body` false in its first body message).
    Whole(Bytes),
    /// The app streams it: the chunks come through this channel, made only for streamed
    /// responses (most responses are whole, and need none).
    Stream(mpsc::Receiver<Frame>),
}

/// The longest a head waits for others before the next one produced takes it along.
const MAX_HOLD: Duration = Duration::from_millis(1);

/// A head on its way, with the oneshot its request's handler waits on.
type Delivery = (oneshot::Sender<ResponseHead>, ResponseHead);

/// The dispatcher's channel (set by [`start_dispatcher`], in the worker's runtime).
static DISPATCHER: OnceLock<mpsc::UnboundedSender<Vec<Delivery>>> = OnceLock::new();

thread_local! {
    /// Heads produced during the loop's current iteration (the loop thread).
    static PENDING: RefCell<Vec<Delivery>> = const { RefCell::new(Vec::new()) };
    /// When the oldest of them was produced.
    static OLDEST: std::cell::Cell<Option<Instant>> = const { std::cell::Cell::new(None) };
}

/// Starts the task that completes the heads' oneshots on the tokio thread. Called once,
/// inside the worker's runtime, before the first request.
pub(crate) fn start_dispatcher() {
    let (batches, mut received) = mpsc::unbounded_channel::<Vec<Delivery>>();
    if DISPATCHER.set(batches).is_err() {
        return;
    }
    tokio::spawn(async move {
        while let Some(batch) = received.recv().await {
            for (handler, head) in batch {
                // The handler is gone when its client is: nothing to answer.
                let _ = handler.send(head);
            }
        }
    });
}

/// Sends `head` to the request's handler with the loop iteration's other heads (the loop
/// thread, GIL held). Without a dispatcher or a loop, at once.
pub(crate) fn deliver(py: Python<'_>, handler: oneshot::Sender<ResponseHead>, head: ResponseHead) {
    if DISPATCHER.get().is_none() {
        let _ = handler.send(head);
        return;
    }
    let first = PENDING.with(|pending| {
        let mut pending = pending.borrow_mut();
        pending.push((handler, head));
        pending.len() == 1
    });
    if first {
        OLDEST.with(|oldest| oldest.set(Some(Instant::now())));
        if schedule_flush(py).is_err() {
            flush_now();
        }
    } else if OLDEST
        .with(|oldest| oldest.get())
        .is_some_and(|t| t.elapsed() >= MAX_HOLD)
    {
        flush_now();
    }
}

/// Asks the loop to run [`Flush`] at its next iteration, after the task steps already due.
fn schedule_flush(py: Python<'_>) -> PyResult<()> {
    static SHARED: PyOnceLock<Py<Flush>> = PyOnceLock::new();
    let flush = SHARED.get_or_try_init(py, || Py::new(py, Flush))?;
    let event_loop =
        event_loop(py).ok_or_else(|| pyo3::exceptions::PyRuntimeError::new_err("no event loop"))?;
    event_loop.call_method1(intern!(py, "call_soon"), (flush.clone_ref(py),))?;
    Ok(())
}

/// Hands every pending head to the dispatcher: one wake-up of the tokio thread.
fn flush_now() {
    let batch = PENDING.with(|pending| std::mem::take(&mut *pending.borrow_mut()));
    OLDEST.with(|oldest| oldest.set(None));
    if batch.is_empty() {
        return;
    }
    let undelivered = match DISPATCHER.get() {
        Some(dispatcher) => match dispatcher.send(batch) {
            Ok(()) => return,
            // The runtime is gone (the worker is ending).
            Err(mpsc::error::SendError(batch)) => batch,
        },
        None => batch,
    };
    for (handler, head) in undelivered {
        let _ = handler.send(head);
    }
}

/// The loop's callback that hands the iteration's heads over.
#[pyclass]
struct Flush;

#[pymethods]
impl Flush {
    fn __call__(&self) {
        flush_now();
    }
}
