//! One HTTP request through the bridge: the tokio side (an axum fallback handler) and the
//! loop side (an `HttpCycle` whose `receive` and `send` the app awaits).

use std::cell::RefCell;
use std::collections::HashMap;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::task::{Context, Poll};

use axum::body::Body;
use axum::http::{HeaderMap, HeaderName, HeaderValue, Request, Response, StatusCode};
use bytes::Bytes;
use http_body_util::BodyExt;
use pyo3::exceptions::PyRuntimeError;
use pyo3::intern;
use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyDict};
use tokio::sync::{mpsc, oneshot};

use crate::app_loader::{Loaded, EXIT_APP_CANNOT_START};
use crate::awaitable::{ready, ready_none};
use crate::bridge::{event_loop, loop_alive, start_loop_thread, LoopQueue};
use crate::lifespan;
use crate::response::{deliver, start_dispatcher, Frame, HeadBody, ResponseHead};

/// Response body chunks buffered between the app and the connection.
const RESPONSE_FRAMES: usize = 8;
/// Request body chunks read ahead of the app.
const REQUEST_CHUNKS: usize = 2;

/// A message from the tokio side to the loop thread.
pub(crate) enum ToLoop {
    /// A new request.
    Request(Box<NewRequest>),
    /// A chunk of request `0`'s body is waiting (or its end).
    Body(u64),
    /// The client of request `0` is gone, or its response has been sent.
    Disconnected(u64),
    /// There is room again for request `id`'s pending response chunk.
    SendReady {
        id: u64,
        permit: mpsc::OwnedPermit<Frame>,
    },
    /// A lifespan event.
    Lifespan(lifespan::ToLoop),
    /// A new WebSocket.
    WebSocket(Box<crate::websocket::NewWebSocket>),
    /// A client message (or the disconnect) is waiting for WebSocket `0`.
    WebSocketIncoming(u64),
}

/// A request, as the loop thread gets it.
pub(crate) struct NewRequest {
    id: u64,
    head: axum::http::request::Parts,
    /// The body's chunks, `None` when it has none.
    body: Option<mpsc::Receiver<Chunk>>,
    response: oneshot::Sender<ResponseHead>,
}

/// A chunk of a request body.
pub(crate) struct Chunk {
    data: Bytes,
    more: bool,
}

/// What every request needs: the app and its options (set once, in `run_worker`).
struct Shared {
    app: Py<PyAny>,
    root_path: String,
    runtime: tokio::runtime::Handle,
}

static SHARED: OnceLock<Shared> = OnceLock::new();

/// The scope's `root_path`.
pub(crate) fn root_path() -> String {
    APP.get().map(|(_, root)| root.clone()).unwrap_or_default()
}

/// The app (the loop thread, once the worker runs).
pub(crate) fn app(py: Python<'_>) -> Option<Bound<'_, PyAny>> {
    APP.get().map(|(app, _)| app.bind(py).clone())
}
static APP: OnceLock<(Py<PyAny>, String)> = OnceLock::new();
static NEXT_ID: AtomicU64 = AtomicU64::new(1);

/// Starts the loop thread and serves as the worker the supervisor exec'd. Returns the
/// exit status.
pub(crate) fn run_worker(loaded: Loaded) -> i32 {
    let started = Python::attach(|py| start_loop_thread(py, &loaded.options.loop_kind));
    if let Err(e) = started {
        let message = Python::attach(|py| crate::app_loader::one_line(py, &e));
        tracing::error!("cannot start the event loop: {message}");
        return EXIT_APP_CANNOT_START;
    }
    let _ = APP.set((loaded.app, loaded.options.root_path.clone()));
    let mode = loaded.options.lifespan;
    let status = server_core::exec_worker::run_exec_worker(&move || make_app(mode));
    crate::bridge::stop_loop_thread();
    status
}

/// The worker's app, built in its runtime: the lifespan startup first (the worker reports
/// ready only after it), then every request to the ASGI app.
fn make_app(mode: lifespan::Mode) -> server_core::App {
    if let Some((app, root_path)) = APP.get() {
        let app = Python::attach(|py| app.clone_ref(py));
        let _ = SHARED.set(Shared {
            app,
            root_path: root_path.clone(),
            runtime: tokio::runtime::Handle::current(),
        });
    }
    start_dispatcher();
    if let Err(message) = lifespan::startup(mode) {
        tracing::error!("{message}");
        tracing::error!("Application startup failed. Exiting.");
        std::process::exit(EXIT_APP_CANNOT_START);
    }
    let router = axum::Router::new().fallback(handle);
    server_core::App::new(router)
        .on_shutdown(lifespan::shutdown(mode))
        .with_liveness(Arc::new(loop_alive))
}

/// Tells the loop thread, on drop, that the request's client is gone (then `receive()`
/// answers `http.disconnect`), unless the response ended as the loop thread knows it did
/// (sent whole, or its body finished): then there is nothing to tell, and no wake-up of
/// the loop thread per request.
struct DisconnectGuard {
    id: u64,
    armed: bool,
}

impl DisconnectGuard {
    fn new(id: u64) -> Self {
        Self { id, armed: true }
    }

    /// The loop thread ended the response itself: nothing to tell it.
    fn disarm(mut self) {
        self.armed = false;
    }

    /// Tells the loop thread now (a drain ends an event stream while the app still
    /// streams), once: the drop has nothing left to tell.
    fn tell_now(&mut self) {
        if std::mem::replace(&mut self.armed, false) {
            LoopQueue::get().push(ToLoop::Disconnected(self.id));
        }
    }
}

impl Drop for DisconnectGuard {
    fn drop(&mut self) {
        if self.armed {
            LoopQueue::get().push(ToLoop::Disconnected(self.id));
        }
    }
}

/// The tokio side of a request: hands it to the loop thread and waits for the response.
async fn handle(request: Request<Body>) -> Response<Body> {
    let id = NEXT_ID.fetch_add(1, Ordering::Relaxed);
    if crate::websocket::is_upgrade(&request) {
        return crate::websocket::handle(id, request).await;
    }
    let queue = LoopQueue::get();
    let (head, body) = request.into_parts();
    let body = if http_body::Body::is_end_stream(&body) {
        None
    } else {
        let (chunks, receiver) = mpsc::channel(REQUEST_CHUNKS);
        tokio::spawn(read_body(id, body, chunks));
        Some(receiver)
    };
    let (response, head_rx) = oneshot::channel();
    let guard = DisconnectGuard::new(id);
    queue.push(ToLoop::Request(Box::new(NewRequest {
        id,
        head,
        body,
        response,
    })));
    let Ok(head) = head_rx.await else {
        return internal_error();
    };
    let event_stream = head
        .headers
        .get(axum::http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("text/event-stream"));
    let mut builder = Response::builder().status(head.status);
    if let Some(headers) = builder.headers_mut() {
        *headers = head.headers;
    }
    let body = match head.body {
        HeadBody::Whole(whole) => {
            // Sent whole by the loop thread, which marked the response complete.
            guard.disarm();
            Body::from(whole)
        }
        HeadBody::Stream(frames) => Body::new(ResponseStream {
            frames,
            drain: event_stream.then(|| {
                let mut draining = server_core::Draining::of_this_worker();
                Box::pin(async move {
                    draining.started().await;
                }) as Pin<Box<dyn std::future::Future<Output = ()> + Send>>
            }),
            ending: false,
            guard,
        }),
    };
    builder.body(body).unwrap_or_else(|_| internal_error())
}

fn internal_error() -> Response<Body> {
    let mut response = Response::new(Body::from("Internal Server Error"));
    *response.status_mut() = StatusCode::INTERNAL_SERVER_ERROR;
    response.headers_mut().insert(
        axum::http::header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    response
}

/// Reads the request body as the app takes it (at most [`REQUEST_CHUNKS`] ahead).
async fn read_body(id: u64, mut body: Body, chunks: mpsc::Sender<Chunk>) {
    let queue = LoopQueue::get();
    loop {
        match body.frame().await {
            Some(Ok(frame)) => {
                let Ok(data) = frame.into_data() else {
                    continue;
                };
                let more = !http_body::Body::is_end_stream(&body);
                if chunks.send(Chunk { data, more }).await.is_err() {
                    return;
                }
                queue.push(ToLoop::Body(id));
                if !more {
                    return;
                }
            }
            None => {
                let last = Chunk {
                    data: Bytes::new(),
                    more: false,
                };
                if chunks.send(last).await.is_ok() {
                    queue.push(ToLoop::Body(id));
                }
                return;
            }
            Some(Err(_)) => {
                queue.push(ToLoop::Disconnected(id));
                return;
            }
        }
    }
}

/// The streamed response body: the app's chunks, cut if the app fails. An event stream
/// (`text/event-stream`) ends cleanly when the worker drains: the app gets
/// `http.disconnect` at once (so that it stops), the chunks it already sent go out, and the
/// body ends after the last of them, so the client reconnects (with `Last-Event-ID`) to a
/// worker that stays, instead of being cut at the deadline.
struct ResponseStream {
    frames: mpsc::Receiver<Frame>,
    /// For an event stream: resolves when the worker starts to drain.
    drain: Option<Pin<Box<dyn std::future::Future<Output = ()> + Send>>>,
    /// The drain started: what is queued goes out, then the body ends.
    ending: bool,
    guard: DisconnectGuard,
}

impl http_body::Body for ResponseStream {
    type Data = Bytes;
    type Error = std::io::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<Bytes>, std::io::Error>>> {
        if !self.ending {
            if let Some(drain) = self.drain.as_mut() {
                if drain.as_mut().poll(cx).is_ready() {
                    self.ending = true;
                    self.drain = None;
                    self.guard.tell_now();
                }
            }
        }
        if self.ending {
            return match self.frames.try_recv() {
                Ok(Frame::Data(data)) => Poll::Ready(Some(Ok(http_body::Frame::data(data)))),
                Ok(Frame::Abort) | Err(_) => Poll::Ready(None),
            };
        }
        match self.frames.poll_recv(cx) {
            Poll::Ready(Some(Frame::Data(data))) => {
                Poll::Ready(Some(Ok(http_body::Frame::data(data))))
            }
            Poll::Ready(Some(Frame::Abort)) => Poll::Ready(Some(Err(std::io::Error::other(
                "the app failed after the response started",
            )))),
            Poll::Ready(None) => {
                // The loop thread closed the body (complete, or the client gone): it knows.
                self.guard.armed = false;
                Poll::Ready(None)
            }
            Poll::Pending => Poll::Pending,
        }
    }
}

thread_local! {
    /// The requests the loop thread is running, by id.
    static CYCLES: RefCell<HashMap<u64, Py<HttpCycle>>> = RefCell::new(HashMap::new());
}

/// Handles what the tokio side sent (the loop thread, GIL held).
pub(crate) fn handle_batch(py: Python<'_>, batch: Vec<ToLoop>) {
    for message in batch {
        let result = match message {
            ToLoop::Request(request) => start_request(py, *request),
            ToLoop::Body(id) => with_cycle(py, id, |c, py| c.on_body(py)),
            ToLoop::Disconnected(id) => with_cycle(py, id, |c, py| c.on_disconnect(py)),
            ToLoop::SendReady { id, permit } => {
                with_cycle(py, id, move |c, py| c.on_send_ready(py, permit))
            }
            ToLoop::Lifespan(event) => lifespan::on_event(py, event),
            ToLoop::WebSocket(socket) => crate::websocket::start(py, *socket),
            ToLoop::WebSocketIncoming(id) => crate::websocket::on_incoming(py, id),
        };
        if let Err(e) = result {
            e.print(py);
        }
    }
}

fn with_cycle(
    py: Python<'_>,
    id: u64,
    f: impl FnOnce(&mut HttpCycle, Python<'_>) -> PyResult<()>,
) -> PyResult<()> {
    let Some(cycle) = CYCLES.with(|c| c.borrow().get(&id).map(|c| c.clone_ref(py))) else {
        return Ok(());
    };
    let mut cycle = cycle.borrow_mut(py);
    f(&mut cycle, py)
}

/// Builds the scope and runs the app on it as a task of the loop.
fn start_request(py: Python<'_>, request: NewRequest) -> PyResult<()> {
    let Some(shared) = SHARED.get() else {
        return Ok(());
    };
    let state = lifespan::state(py);
    let scope = crate::scope::http_scope(py, &request.head, &shared.root_path, state.as_ref())?;
    let id = request.id;
    let cycle = Py::new(
        py,
        HttpCycle {
            id,
            body: request.body,
            request_delivered: false,
            disconnected: false,
            waiting: None,
            response: Some(request.response),
            head: None,
            frames: None,
            pending_send: None,
            complete: false,
        },
    )?;
    let receive = cycle.getattr(py, intern!(py, "receive"))?;
    let send = cycle.getattr(py, intern!(py, "send"))?;
    CYCLES.with(|c| c.borrow_mut().insert(id, cycle.clone_ref(py)));
    let Some(event_loop) = event_loop(py) else {
        return Ok(());
    };
    let started = shared
        .app
        .call1(py, (scope, receive, send))
        .and_then(|coroutine| {
            crate::task::spawn(
                &event_loop,
                coroutine.into_bound(py),
                intern!(py, "zerodrop-http").as_any(),
            )
            .map(Bound::unbind)
        });
    match started {
        Ok(task) => {
            task.call_method1(py, intern!(py, "add_done_callback"), (Done { id },))?;
        }
        Err(e) => finish(py, id, Some(e)),
    }
    Ok(())
}

/// Called by the loop when a request's app task is done.
#[pyclass]
struct Done {
    id: u64,
}

#[pymethods]
impl Done {
    fn __call__(&self, py: Python<'_>, task: Bound<'_, PyAny>) {
        // One call: `exception()` raises CancelledError for a cancelled task.
        let error = match task.call_method0(intern!(py, "exception")) {
            Ok(e) if e.is_none() => None,
            Ok(e) => Some(PyErr::from_value(e)),
            Err(e) if e.is_instance_of::<pyo3::exceptions::asyncio::CancelledError>(py) => {
                Some(PyRuntimeError::new_err("the request's task was cancelled"))
            }
            Err(e) => Some(e),
        };
        finish(py, self.id, error);
    }
}

/// The app is done with request `id` (with `error` if it raised).
fn finish(py: Python<'_>, id: u64, error: Option<PyErr>) {
    let Some(cycle) = CYCLES.with(|c| c.borrow_mut().remove(&id)) else {
        return;
    };
    let mut cycle = cycle.borrow_mut(py);
    if let Some(error) = &error {
        tracing::error!("Exception in ASGI application\n{}", traceback(py, error));
    }
    if let Some(response) = cycle.response.take() {
        if error.is_none() {
            tracing::error!("ASGI callable returned without starting response.");
        }
        let mut headers = HeaderMap::new();
        headers.insert(
            axum::http::header::CONTENT_TYPE,
            HeaderValue::from_static("text/plain; charset=utf-8"),
        );
        deliver(
            py,
            response,
            ResponseHead {
                status: 500,
                headers,
                body: HeadBody::Whole(Bytes::from_static(b"Internal Server Error")),
            },
        );
    } else if !cycle.complete {
        if error.is_none() {
            tracing::error!("ASGI callable returned without completing response.");
        }
        if let Some(frames) = cycle.frames.take() {
            let _ = frames.try_send(Frame::Abort);
        }
    }
}

/// A Python exception with its traceback, as Python prints it.
fn traceback(py: Python<'_>, error: &PyErr) -> String {
    let formatted = py.import("traceback").and_then(|tb| {
        tb.call_method1(
            "format_exception",
            (error.get_type(py), error.value(py), error.traceback(py)),
        )
    });
    match formatted.and_then(|lines| lines.extract::<Vec<String>>()) {
        Ok(lines) => lines.concat().trim_end().to_string(),
        Err(_) => crate::app_loader::one_line(py, error),
    }
}

/// One request on the loop thread: what `receive()` and `send()` work on.
#[pyclass(unsendable)]
pub(crate) struct HttpCycle {
    id: u64,
    body: Option<mpsc::Receiver<Chunk>>,
    /// The body's last chunk (or the empty body) went to the app.
    request_delivered: bool,
    disconnected: bool,
    /// The future of a `receive()` waiting for a chunk or the disconnect.
    waiting: Option<Py<PyAny>>,
    /// Unused until the response starts.
    response: Option<oneshot::Sender<ResponseHead>>,
    /// `http.response.start` received, not yet sent on (it goes with the first body).
    head: Option<(u16, HeaderMap)>,
    /// The streamed body's chunks: made when a streamed response starts, dropped once it
    /// is complete or the client is gone.
    frames: Option<mpsc::Sender<Frame>>,
    /// A chunk that found no room, its `send()` future, and whether more follows.
    pending_send: Option<(Py<PyAny>, Frame, bool)>,
    complete: bool,
}

impl HttpCycle {
    /// The message `receive()` can return now, if any.
    fn next_message(&mut self, py: Python<'_>) -> PyResult<Option<Py<PyAny>>> {
        // After the whole response was sent, `receive()` answers `http.disconnect` (the
        // ASGI spec; as uvicorn does).
        if self.disconnected || self.complete {
            return disconnect_message(py).map(Some);
        }
        if self.request_delivered {
            return Ok(None);
        }
        let Some(body) = &mut self.body else {
            self.request_delivered = true;
            return request_message(py, &[], false).map(Some);
        };
        match body.try_recv() {
            Ok(chunk) => {
                if !chunk.more {
                    self.request_delivered = true;
                }
                request_message(py, &chunk.data, chunk.more).map(Some)
            }
            Err(mpsc::error::TryRecvError::Empty) => Ok(None),
            Err(mpsc::error::TryRecvError::Disconnected) => {
                self.request_delivered = true;
                request_message(py, &[], false).map(Some)
            }
        }
    }

    fn resolve_waiting(&mut self, py: Python<'_>) -> PyResult<()> {
        if self.waiting.is_none() {
            return Ok(());
        }
        if let Some(message) = self.next_message(py)? {
            if let Some(future) = self.waiting.take() {
                set_result(py, &future, message)?;
            }
        }
        Ok(())
    }

    fn on_body(&mut self, py: Python<'_>) -> PyResult<()> {
        self.resolve_waiting(py)
    }

    fn on_disconnect(&mut self, py: Python<'_>) -> PyResult<()> {
        self.disconnected = true;
        self.frames = None;
        if let Some((future, _, _)) = self.pending_send.take() {
            set_result(py, &future, py.None())?;
        }
        self.resolve_waiting(py)
    }

    /// The whole response went to the tokio side: a `receive()` waiting (for the
    /// disconnect, as Starlette's streaming responses do) gets `http.disconnect` now.
    fn mark_complete(&mut self, py: Python<'_>) -> PyResult<()> {
        self.complete = true;
        self.frames = None;
        self.resolve_waiting(py)
    }

    fn on_send_ready(&mut self, py: Python<'_>, permit: mpsc::OwnedPermit<Frame>) -> PyResult<()> {
        if let Some((future, frame, more)) = self.pending_send.take() {
            permit.send(frame);
            if !more {
                self.mark_complete(py)?;
            }
            set_result(py, &future, py.None())?;
        }
        Ok(())
    }

    /// Sends a body chunk on; returns the awaitable `send()` gives the app.
    fn send_frame(&mut self, py: Python<'_>, data: Bytes, more: bool) -> PyResult<Py<PyAny>> {
        let Some(frames) = &self.frames else {
            return ready_none(py);
        };
        if data.is_empty() && more {
            return ready_none(py);
        }
        match frames.try_send(Frame::Data(data)) {
            Ok(()) => {
                if !more {
                    self.mark_complete(py)?;
                }
                ready_none(py)
            }
            Err(mpsc::error::TrySendError::Full(frame)) => {
                let future = new_future(py)?;
                self.pending_send = Some((future.clone_ref(py), frame, more));
                let (id, frames) = (self.id, frames.clone());
                if let Some(shared) = SHARED.get() {
                    shared.runtime.spawn(async move {
                        if let Ok(permit) = frames.reserve_owned().await {
                            LoopQueue::get().push(ToLoop::SendReady { id, permit });
                        }
                    });
                }
                Ok(future)
            }
            Err(mpsc::error::TrySendError::Closed(_)) => {
                self.frames = None;
                ready_none(py)
            }
        }
    }
}

#[pymethods]
impl HttpCycle {
    fn receive(&mut self, py: Python<'_>) -> PyResult<Py<PyAny>> {
        if let Some(message) = self.next_message(py)? {
            return ready(py, message);
        }
        let future = new_future(py)?;
        self.waiting = Some(future.clone_ref(py));
        Ok(future)
    }

    fn send(&mut self, py: Python<'_>, message: Bound<'_, PyDict>) -> PyResult<Py<PyAny>> {
        let kind = message
            .get_item(intern!(py, "type"))?
            .ok_or_else(|| PyRuntimeError::new_err("ASGI message without a type"))?;
        let kind: std::borrow::Cow<'_, str> = kind.extract()?;
        match &*kind {
            "http.response.start" => {
                if self.response.is_none() || self.head.is_some() {
                    return Err(PyRuntimeError::new_err(
                        "Unexpected ASGI message 'http.response.start' sent, after response already started.",
                    ));
                }
                let status: u16 = message
                    .get_item(intern!(py, "status"))?
                    .ok_or_else(|| PyRuntimeError::new_err("http.response.start without a status"))?
                    .extract()?;
                let mut headers = HeaderMap::new();
                if let Some(list) = message.get_item(intern!(py, "headers"))? {
                    for pair in list.try_iter()? {
                        let pair = pair?;
                        let name = bytes_of(&pair.get_item(0)?, |name| {
                            HeaderName::from_bytes(name).map_err(|e| {
                                PyRuntimeError::new_err(format!("bad header name: {e}"))
                            })
                        })?;
                        let value = bytes_of(&pair.get_item(1)?, |value| {
                            HeaderValue::from_bytes(value).map_err(|e| {
                                PyRuntimeError::new_err(format!("bad header value: {e}"))
                            })
                        })?;
                        headers.append(name, value);
                    }
                }
                self.head = Some((status, headers));
                ready_none(py)
            }
            "http.response.body" => {
                let body: Bytes = match message.get_item(intern!(py, "body"))? {
                    Some(b) => bytes_of(&b, |bytes| Ok(Bytes::copy_from_slice(bytes)))?,
                    None => Bytes::new(),
                };
                let more: bool = match message.get_item(intern!(py, "more_body"))? {
                    Some(m) => m.extract()?,
                    None => false,
                };
                if let Some((status, headers)) = self.head.take() {
                    let Some(response) = self.response.take() else {
                        return ready_none(py);
                    };
                    if !more {
                        deliver(
                            py,
                            response,
                            ResponseHead {
                                status,
                                headers,
                                body: HeadBody::Whole(body),
                            },
                        );
                        self.mark_complete(py)?;
                        return ready_none(py);
                    }
                    let (frames, receiver) = mpsc::channel(RESPONSE_FRAMES);
                    deliver(
                        py,
                        response,
                        ResponseHead {
                            status,
                            headers,
                            body: HeadBody::Stream(receiver),
                        },
                    );
                    self.frames = Some(frames);
                    return self.send_frame(py, body, more);
                }
                if self.response.is_some() {
                    return Err(PyRuntimeError::new_err(
                        "Expected ASGI message 'http.response.start', but got 'http.response.body'.",
                    ));
                }
                if self.complete {
                    return ready_none(py);
                }
                self.send_frame(py, body, more)
            }
            other => Err(PyRuntimeError::new_err(format!(
                "Unexpected ASGI message '{other}' sent."
            ))),
        }
    }
}

fn request_message(py: Python<'_>, body: &[u8], more: bool) -> PyResult<Py<PyAny>> {
    let message = PyDict::new(py);
    message.set_item(intern!(py, "type"), intern!(py, "http.request"))?;
    message.set_item(intern!(py, "body"), PyBytes::new(py, body))?;
    message.set_item(intern!(py, "more_body"), more)?;
    Ok(message.into_any().unbind())
}

fn disconnect_message(py: Python<'_>) -> PyResult<Py<PyAny>> {
    let message = PyDict::new(py);
    message.set_item(intern!(py, "type"), intern!(py, "http.disconnect"))?;
    Ok(message.into_any().unbind())
}

/// Runs `f` on the bytes of a `bytes`-like object without copying them one by one
/// (pyo3's `Vec<u8>` extraction walks a sequence item by item).
fn bytes_of<T>(object: &Bound<'_, PyAny>, f: impl FnOnce(&[u8]) -> PyResult<T>) -> PyResult<T> {
    if let Ok(bytes) = object.cast::<PyBytes>() {
        return f(bytes.as_bytes());
    }
    let builtins = object.py().import("builtins")?;
    let converted = builtins.getattr("bytes")?.call1((object,))?;
    let bytes = converted
        .cast::<PyBytes>()
        .map_err(|_| PyRuntimeError::new_err("expected bytes"))?;
    f(bytes.as_bytes())
}

/// A new future of the loop (the loop thread).
pub(crate) fn new_future(py: Python<'_>) -> PyResult<Py<PyAny>> {
    let event_loop = event_loop(py).ok_or_else(|| PyRuntimeError::new_err("no event loop"))?;
    Ok(event_loop
        .call_method0(intern!(py, "create_future"))?
        .unbind())
}

/// Completes `future` with `value` unless it was cancelled meanwhile.
pub(crate) fn set_result(py: Python<'_>, future: &Py<PyAny>, value: Py<PyAny>) -> PyResult<()> {
    let done: bool = future.call_method0(py, intern!(py, "done"))?.extract(py)?;
    if !done {
        future.call_method1(py, intern!(py, "set_result"), (value,))?;
    }
    Ok(())
}
