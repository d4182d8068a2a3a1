//! The ASGI lifespan protocol: startup before the worker reports ready, shutdown after its
//! listener is closed and its connections are drained (so a slow shutdown hook, the
//! seed's 10 s, never holds the socket), and the `state` each request's scope gets a copy
//! of.

use std::cell::RefCell;

use pyo3::exceptions::PyRuntimeError;
use pyo3::prelude::*;
use pyo3::types::PyDict;
use tokio::sync::oneshot;

use crate::awaitable::{ready, ready_none};
use crate::bridge::{event_loop, LoopQueue};
use crate::http::{new_future, set_result, ToLoop as HttpToLoop};

/// `--lifespan`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Mode {
    /// Run it; an app that raises at once does not support it (logged, serving goes on).
    Auto,
    /// Run it; any failure stops the worker.
    On,
    /// Do not run it.
    Off,
}

/// Lifespan events from the tokio side.
pub(crate) enum ToLoop {
    /// Start the lifespan task; reply once startup is complete or failed.
    Startup {
        mode: Mode,
        reply: std::sync::mpsc::Sender<Result<(), String>>,
    },
    /// Send `lifespan.shutdown`; reply once it is complete or failed.
    Shutdown { reply: oneshot::Sender<()> },
}

/// The lifespan's progress, on the loop thread.
struct Lifespan {
    mode: Mode,
    state: Py<PyDict>,
    /// The future of a `receive()` waiting for the shutdown.
    waiting: Option<Py<PyAny>>,
    startup_reply: Option<std::sync::mpsc::Sender<Result<(), String>>>,
    shutdown_asked: bool,
    shutdown_reply: Option<oneshot::Sender<()>>,
    started: bool,
}

thread_local! {
    static LIFESPAN: RefCell<Option<Lifespan>> = const { RefCell::new(None) };
}

/// The lifespan's `state`, when it ran.
pub(crate) fn state(py: Python<'_>) -> Option<Bound<'_, PyDict>> {
    LIFESPAN.with(|l| l.borrow().as_ref().map(|l| l.state.bind(py).clone()))
}

/// Runs the startup (blocking: the worker is not ready before it ends).
pub(crate) fn startup(mode: Mode) -> Result<(), String> {
    if mode == Mode::Off {
        return Ok(());
    }
    tracing::info!("Waiting for application startup.");
    let (reply, answer) = std::sync::mpsc::channel();
    LoopQueue::get().push(HttpToLoop::Lifespan(ToLoop::Startup { mode, reply }));
    let outcome = answer
        .recv()
        .unwrap_or_else(|_| Err("the event loop stopped during startup".into()));
    if outcome.is_ok() {
        tracing::info!("Application startup complete.");
    }
    outcome
}

/// The shutdown, as a hook the worker runs after its drain.
pub(crate) async fn shutdown(mode: Mode) {
    if mode == Mode::Off {
        return;
    }
    let (reply, done) = oneshot::channel();
    LoopQueue::get().push(HttpToLoop::Lifespan(ToLoop::Shutdown { reply }));
    let _ = done.await;
}

/// A lifespan event on the loop thread.
pub(crate) fn on_event(py: Python<'_>, event: ToLoop) -> PyResult<()> {
    match event {
        ToLoop::Startup { mode, reply } => begin(py, mode, reply),
        ToLoop::Shutdown { reply } => {
            let resolve = LIFESPAN.with(|l| {
                let mut l = l.borrow_mut();
                match l.as_mut() {
                    Some(lifespan) if lifespan.started => {
                        lifespan.shutdown_asked = true;
                        lifespan.shutdown_reply = Some(reply);
                        lifespan.waiting.take()
                    }
                    _ => {
                        let _ = reply.send(());
                        None
                    }
                }
            });
            if let Some(future) = resolve {
                set_result(py, &future, message(py, "lifespan.shutdown")?)?;
            }
            Ok(())
        }
    }
}

fn begin(
    py: Python<'_>,
    mode: Mode,
    reply: std::sync::mpsc::Sender<Result<(), String>>,
) -> PyResult<()> {
    let state = PyDict::new(py).unbind();
    let scope = PyDict::new(py);
    scope.set_item("type", "lifespan")?;
    scope.set_item("asgi", crate::scope::asgi_versions(py)?)?;
    scope.set_item("state", state.bind(py))?;
    LIFESPAN.with(|l| {
        *l.borrow_mut() = Some(Lifespan {
            mode,
            state,
            waiting: None,
            startup_reply: Some(reply),
            shutdown_asked: false,
            shutdown_reply: None,
            started: false,
        })
    });
    let cycle = Py::new(
        py,
        LifespanCycle {
            delivered_startup: false,
        },
    )?;
    let receive = cycle.getattr(py, "receive")?;
    let send = cycle.getattr(py, "send")?;
    let event_loop = event_loop(py).ok_or_else(|| PyRuntimeError::new_err("no event loop"))?;
    let app = crate::http::app(py).ok_or_else(|| PyRuntimeError::new_err("no app"))?;
    let task = app
        .call1((scope, receive, send))
        .and_then(|coroutine| event_loop.call_method1("create_task", (coroutine,)));
    match task {
        Ok(task) => {
            task.call_method1("add_done_callback", (LifespanDone,))?;
        }
        Err(e) => ended(py, Some(e)),
    }
    Ok(())
}

/// Called when the lifespan task ends.
#[pyclass]
struct LifespanDone;

#[pymethods]
impl LifespanDone {
    fn __call__(&self, py: Python<'_>, task: Bound<'_, PyAny>) {
        let error = match task.call_method0("exception") {
            Ok(e) if !e.is_none() => Some(PyErr::from_value(e)),
            Ok(_) => None,
            Err(e) => Some(e),
        };
        ended(py, error);
    }
}

/// The lifespan task ended, with `error` if it raised.
fn ended(py: Python<'_>, error: Option<PyErr>) {
    LIFESPAN.with(|l| {
        let mut l = l.borrow_mut();
        let Some(lifespan) = l.as_mut() else { return };
        if let Some(reply) = lifespan.startup_reply.take() {
            // Ended before startup completed.
            let outcome = match (&error, lifespan.mode) {
                (Some(_), Mode::Auto) => {
                    tracing::info!("ASGI 'lifespan' protocol appears unsupported.");
                    Ok(())
                }
                (Some(e), _) => Err(format!(
                    "Exception in 'lifespan' protocol\n{}",
                    crate::app_loader::one_line(py, e)
                )),
                // Returned at once (`if scope["type"] != "http": return`): no lifespan.
                (None, Mode::Auto) => Ok(()),
                (None, _) => Err("the lifespan ended before startup completed".into()),
            };
            let _ = reply.send(outcome);
        } else if let Some(e) = &error {
            tracing::error!(
                "Exception in 'lifespan' protocol: {}",
                crate::app_loader::one_line(py, e)
            );
        }
        if let Some(reply) = lifespan.shutdown_reply.take() {
            let _ = reply.send(());
        }
        lifespan.started = false;
    });
}

/// The lifespan's `receive` and `send`.
#[pyclass(unsendable)]
struct LifespanCycle {
    delivered_startup: bool,
}

#[pymethods]
impl LifespanCycle {
    fn receive(&mut self, py: Python<'_>) -> PyResult<Py<PyAny>> {
        if !self.delivered_startup {
            self.delivered_startup = true;
            return ready(py, message(py, "lifespan.startup")?);
        }
        let asked = LIFESPAN.with(|l| l.borrow().as_ref().is_some_and(|l| l.shutdown_asked));
        if asked {
            return ready(py, message(py, "lifespan.shutdown")?);
        }
        let future = new_future(py)?;
        LIFESPAN.with(|l| {
            if let Some(l) = l.borrow_mut().as_mut() {
                l.waiting = Some(future.clone_ref(py));
            }
        });
        Ok(future)
    }

    fn send(&mut self, py: Python<'_>, message: Bound<'_, PyDict>) -> PyResult<Py<PyAny>> {
        let kind: String = message
            .get_item("type")?
            .ok_or_else(|| PyRuntimeError::new_err("ASGI message without a type"))?
            .extract()?;
        let text = |m: &Bound<'_, PyDict>| -> String {
            m.get_item("message")
                .ok()
                .flatten()
                .and_then(|v| v.extract::<String>().ok())
                .unwrap_or_default()
        };
        LIFESPAN.with(|l| {
            let mut l = l.borrow_mut();
            let Some(lifespan) = l.as_mut() else { return };
            match kind.as_str() {
                "lifespan.startup.complete" => {
                    lifespan.started = true;
                    if let Some(reply) = lifespan.startup_reply.take() {
                        let _ = reply.send(Ok(()));
                    }
                }
                "lifespan.startup.failed" => {
                    if let Some(reply) = lifespan.startup_reply.take() {
                        let _ = reply.send(Err(format!(
                            "Application startup failed: {}",
                            text(&message)
                        )));
                    }
                }
                "lifespan.shutdown.complete" | "lifespan.shutdown.failed" => {
                    // The worker logs the completion itself, after its shutdown hooks.
                    if kind.ends_with("failed") {
                        tracing::error!("Application shutdown failed: {}", text(&message));
                    }
                    if let Some(reply) = lifespan.shutdown_reply.take() {
                        let _ = reply.send(());
                    }
                }
                _ => {}
            }
        });
        ready_none(py)
    }
}

fn message(py: Python<'_>, kind: &str) -> PyResult<Py<PyAny>> {
    let message = PyDict::new(py);
    message.set_item("type", kind)?;
    Ok(message.into_any().unbind())
}
