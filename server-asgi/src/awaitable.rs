//! An awaitable whose result is already there: `receive()` with a body chunk waiting and
//! `send()` with room in the channel complete without a round trip through the loop.

use pyo3::exceptions::PyStopIteration;
use pyo3::prelude::*;
use pyo3::sync::PyOnceLock;

/// Completes at its first step with `value` (`await` returns it).
#[pyclass]
pub(crate) struct Ready {
    value: Option<Py<PyAny>>,
}

impl Ready {
    /// An awaitable of `value`.
    pub(crate) fn new(value: Py<PyAny>) -> Self {
        Self { value: Some(value) }
    }
}

/// The result as the argument of the `StopIteration` that ends the awaitable: the value
/// itself, never a 1-tuple, so that the interpreter takes it as the result without
/// creating the exception object (it must normalize a tuple argument). No value here is a
/// tuple: results are message dicts or `None`.
fn finished(value: Py<PyAny>) -> PyErr {
    PyStopIteration::new_err(value)
}

#[pymethods]
impl Ready {
    fn __await__(slf: PyRef<'_, Self>) -> PyRef<'_, Self> {
        slf
    }

    fn __iter__(slf: PyRef<'_, Self>) -> PyRef<'_, Self> {
        slf
    }

    fn __next__(&mut self, py: Python<'_>) -> PyResult<Py<PyAny>> {
        let value = self.value.take().unwrap_or_else(|| py.None());
        Err(finished(value))
    }
}

/// `value`, ready, as the object `receive()`/`send()` return.
pub(crate) fn ready(py: Python<'_>, value: Py<PyAny>) -> PyResult<Py<PyAny>> {
    Ok(Py::new(py, Ready::new(value))?.into_any())
}

/// `None`, ready: what `send()` returns when the message went on at once. One object
/// serves every call (no allocation per call): a `Ready` without a value has no state to
/// take, and completes with `None` each time it is awaited.
pub(crate) fn ready_none(py: Python<'_>) -> PyResult<Py<PyAny>> {
    static SHARED: PyOnceLock<Py<PyAny>> = PyOnceLock::new();
    let shared =
        SHARED.get_or_try_init(py, || Py::new(py, Ready { value: None }).map(Py::into_any))?;
    Ok(shared.clone_ref(py))
}
