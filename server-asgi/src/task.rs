//! Runs an app's coroutine as a task of the worker's event loop.
//!
//! `loop.create_task(coroutine)` is what asyncio servers call, and under uvloop on Python
//! 3.11 it cost 8.1k instructions per request (callgrind, plain ASGI app, keep-alive: of
//! 57k): uvloop's own wrapper, then `asyncio.Task`, which formats a new name
//! (`Task-N`) for every task. Built here as `asyncio.Task(coroutine, loop=loop,
//! name=...)` with one shared name, the task is the same asyncio task (anyio, Starlette and
//! `asyncio.current_task()` see no difference) for less. A task factory the app set on
//! the loop (`loop.set_task_factory`, in its lifespan startup for example) is honoured:
//! then `create_task` as before.

use pyo3::intern;
use pyo3::prelude::*;
use pyo3::sync::PyOnceLock;
use pyo3::types::PyDict;

/// `asyncio.Task`, imported once.
static TASK_CLASS: PyOnceLock<Py<PyAny>> = PyOnceLock::new();

/// Starts `coroutine` as a task of `event_loop` named `name` (every request's task has its
/// kind's name: a per-task name would be formatted per request, which is what this saves).
pub(crate) fn spawn<'py>(
    event_loop: &Bound<'py, PyAny>,
    coroutine: Bound<'py, PyAny>,
    name: &Bound<'py, PyAny>,
) -> PyResult<Bound<'py, PyAny>> {
    let py = event_loop.py();
    if !event_loop
        .call_method0(intern!(py, "get_task_factory"))?
        .is_none()
    {
        return event_loop.call_method1(intern!(py, "create_task"), (coroutine,));
    }
    let task_class = TASK_CLASS.get_or_try_init(py, || {
        py.import("asyncio")?.getattr("Task").map(Bound::unbind)
    })?;
    let options = PyDict::new(py);
    options.set_item(intern!(py, "loop"), event_loop)?;
    options.set_item(intern!(py, "name"), name)?;
    task_class.bind(py).call((coroutine,), Some(&options))
}
