//! ASGI WebSockets: the handshake answered as the app says (`websocket.accept` with its
//! subprotocol and headers, or `websocket.close` before it: 403), text and bytes both ways,
//! the app's close codes, `websocket.disconnect` when the client goes. At a drain the
//! client gets a close frame (1001 when the server stops, 1012 when a new generation takes
//! over) and the app gets `websocket.disconnect` with that code, as the demo app does.

use std::cell::RefCell;
use std::collections::HashMap;
use std::time::Duration;

use axum::body::Body;
use axum::extract::ws::{CloseFrame, Message, WebSocket, WebSocketUpgrade};
use axum::extract::FromRequestParts;
use axum::http::{HeaderMap, HeaderName, HeaderValue, Request, Response, StatusCode};
use axum::response::IntoResponse;
use pyo3::exceptions::PyRuntimeError;
use pyo3::intern;
use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyDict};
use server_core::Draining;
use tokio::sync::{mpsc, oneshot};

use crate::awaitable::{ready, ready_none};
use crate::bridge::{event_loop, LoopQueue};
use crate::http::{new_future, set_result, ToLoop};

/// Messages from the client read ahead of the app.
const INCOMING: usize = 16;
/// How long a closing WebSocket waits for the client's close frame.
const CLOSE_TIMEOUT: Duration = Duration::from_secs(2);

/// A new WebSocket, as the loop thread gets it.
pub(crate) struct NewWebSocket {
    id: u64,
    head: axum::http::request::Parts,
    accept: oneshot::Sender<Handshake>,
    outgoing: mpsc::UnboundedSender<Outgoing>,
    incoming: mpsc::Receiver<Incoming>,
}

/// The app's answer to the handshake.
enum Handshake {
    Accept {
        subprotocol: Option<String>,
        headers: HeaderMap,
    },
    Deny,
}

/// From the app to the client.
enum Outgoing {
    Text(String),
    Binary(Vec<u8>),
    Close { code: u16, reason: String },
}

/// From the client (or the drain) to the app.
enum Incoming {
    Text(String),
    Binary(Vec<u8>),
    Disconnect(u16),
}

/// Whether the request asks for a WebSocket.
pub(crate) fn is_upgrade(request: &Request<Body>) -> bool {
    request
        .headers()
        .get(axum::http::header::UPGRADE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.eq_ignore_ascii_case("websocket"))
}

/// The tokio side: hands the handshake to the app and answers as it says.
pub(crate) async fn handle(id: u64, request: Request<Body>) -> Response<Body> {
    let (mut parts, _body) = request.into_parts();
    let upgrade = match WebSocketUpgrade::from_request_parts(&mut parts, &()).await {
        Ok(upgrade) => upgrade,
        Err(rejection) => return rejection.into_response(),
    };
    let (accept, answer) = oneshot::channel();
    let (outgoing, outgoing_rx) = mpsc::unbounded_channel();
    let (incoming_tx, incoming) = mpsc::channel(INCOMING);
    LoopQueue::get().push(ToLoop::WebSocket(Box::new(NewWebSocket {
        id,
        head: parts,
        accept,
        outgoing,
        incoming,
    })));
    match answer.await {
        Ok(Handshake::Accept {
            subprotocol,
            headers,
        }) => {
            let upgrade = match subprotocol {
                Some(protocol) => upgrade.protocols([protocol]),
                None => upgrade,
            };
            let mut response = upgrade
                .on_upgrade(move |socket| pump(id, socket, outgoing_rx, incoming_tx))
                .into_response();
            for (name, value) in &headers {
                response.headers_mut().append(name, value.clone());
            }
            response
        }
        Ok(Handshake::Deny) | Err(_) => {
            let mut response = Response::new(Body::from("Forbidden"));
            *response.status_mut() = StatusCode::FORBIDDEN;
            response
        }
    }
}

/// Moves messages between the socket and the app until either ends it or the worker drains.
async fn pump(
    id: u64,
    mut socket: WebSocket,
    mut outgoing: mpsc::UnboundedReceiver<Outgoing>,
    incoming: mpsc::Sender<Incoming>,
) {
    let tell = |message: Incoming| {
        let incoming = incoming.clone();
        async move {
            if incoming.send(message).await.is_ok() {
                LoopQueue::get().push(ToLoop::WebSocketIncoming(id));
            }
        }
    };
    let mut draining = Draining::of_this_worker();
    loop {
        tokio::select! {
            message = socket.recv() => match message {
                Some(Ok(Message::Text(text))) => tell(Incoming::Text(text.to_string())).await,
                Some(Ok(Message::Binary(bytes))) => tell(Incoming::Binary(bytes.to_vec())).await,
                Some(Ok(Message::Close(frame))) => {
                    let code = frame.map_or(1005, |f| f.code);
                    tell(Incoming::Disconnect(code)).await;
                    return;
                }
                Some(Ok(_)) => {}
                Some(Err(_)) | None => {
                    tell(Incoming::Disconnect(1006)).await;
                    return;
                }
            },
            message = outgoing.recv() => match message {
                Some(Outgoing::Text(text)) => {
                    if socket.send(Message::Text(text.into())).await.is_err() {
                        tell(Incoming::Disconnect(1006)).await;
                        return;
                    }
                }
                Some(Outgoing::Binary(bytes)) => {
                    if socket.send(Message::Binary(bytes.into())).await.is_err() {
                        tell(Incoming::Disconnect(1006)).await;
                        return;
                    }
                }
                Some(Outgoing::Close { code, reason }) => {
                    close(&mut socket, code, reason).await;
                    tell(Incoming::Disconnect(code)).await;
                    return;
                }
                // The app is done with it without closing: a normal close.
                None => {
                    close(&mut socket, 1000, String::new()).await;
                    return;
                }
            },
            reason = draining.started() => {
                let code = reason.websocket_close_code();
                tell(Incoming::Disconnect(code)).await;
                close(&mut socket, code, String::new()).await;
                return;
            }
        }
    }
}

/// Sends a close frame and waits (bounded) for the client's, so the connection ends with
/// a FIN after the client has read the frame.
async fn close(socket: &mut WebSocket, code: u16, reason: String) {
    let frame = CloseFrame {
        code,
        reason: reason.into(),
    };
    if socket.send(Message::Close(Some(frame))).await.is_err() {
        return;
    }
    let _ = tokio::time::timeout(CLOSE_TIMEOUT, async {
        while let Some(Ok(message)) = socket.recv().await {
            if matches!(message, Message::Close(_)) {
                break;
            }
        }
    })
    .await;
}

thread_local! {
    static SOCKETS: RefCell<HashMap<u64, Py<WebSocketCycle>>> = RefCell::new(HashMap::new());
}

/// Builds the scope and runs the app on a new WebSocket (the loop thread).
pub(crate) fn start(py: Python<'_>, socket: NewWebSocket) -> PyResult<()> {
    let Some(app) = crate::http::app(py) else {
        return Ok(());
    };
    let state = crate::lifespan::state(py);
    let scope =
        crate::scope::http_scope(py, &socket.head, &crate::http::root_path(), state.as_ref())?;
    scope.set_item(intern!(py, "type"), intern!(py, "websocket"))?;
    let tls = scope
        .get_item(intern!(py, "scheme"))?
        .is_some_and(|s| s.extract::<String>().is_ok_and(|s| s == "https"));
    scope.set_item(intern!(py, "scheme"), if tls { "wss" } else { "ws" })?;
    let subprotocols: Vec<String> = socket
        .head
        .headers
        .get_all("sec-websocket-protocol")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(',').map(|p| p.trim().to_string()))
        .filter(|p| !p.is_empty())
        .collect();
    scope.set_item(intern!(py, "subprotocols"), subprotocols)?;
    let id = socket.id;
    let cycle = Py::new(
        py,
        WebSocketCycle {
            id,
            connect_delivered: false,
            accept: Some(socket.accept),
            outgoing: Some(socket.outgoing),
            incoming: socket.incoming,
            waiting: None,
            closed: false,
        },
    )?;
    let receive = cycle.getattr(py, "receive")?;
    let send = cycle.getattr(py, "send")?;
    SOCKETS.with(|s| s.borrow_mut().insert(id, cycle.clone_ref(py)));
    let event_loop = event_loop(py).ok_or_else(|| PyRuntimeError::new_err("no event loop"))?;
    let task = app.call1((scope, receive, send)).and_then(|coroutine| {
        crate::task::spawn(
            &event_loop,
            coroutine,
            intern!(py, "zerodrop-websocket").as_any(),
        )
    });
    match task {
        Ok(task) => {
            task.call_method1("add_done_callback", (WebSocketDone { id },))?;
        }
        Err(e) => finish(py, id, Some(e)),
    }
    Ok(())
}

/// A message from the client is waiting for WebSocket `id`.
pub(crate) fn on_incoming(py: Python<'_>, id: u64) -> PyResult<()> {
    let Some(cycle) = SOCKETS.with(|s| s.borrow().get(&id).map(|c| c.clone_ref(py))) else {
        return Ok(());
    };
    let mut cycle = cycle.borrow_mut(py);
    if cycle.waiting.is_some() {
        if let Some(message) = cycle.next_message(py)? {
            if let Some(future) = cycle.waiting.take() {
                set_result(py, &future, message)?;
            }
        }
    }
    Ok(())
}

/// Called when a WebSocket's app task is done.
#[pyclass]
struct WebSocketDone {
    id: u64,
}

#[pymethods]
impl WebSocketDone {
    fn __call__(&self, py: Python<'_>, task: Bound<'_, PyAny>) {
        let error = match task.call_method0("exception") {
            Ok(e) if !e.is_none() => Some(PyErr::from_value(e)),
            Ok(_) => None,
            Err(e) => Some(e),
        };
        finish(py, self.id, error);
    }
}

fn finish(py: Python<'_>, id: u64, error: Option<PyErr>) {
    let Some(cycle) = SOCKETS.with(|s| s.borrow_mut().remove(&id)) else {
        return;
    };
    let mut cycle = cycle.borrow_mut(py);
    if let Some(error) = &error {
        tracing::error!(
            "Exception in ASGI application\n{}",
            crate::app_loader::one_line(py, error)
        );
    }
    if let Some(accept) = cycle.accept.take() {
        let _ = accept.send(Handshake::Deny);
    } else if let (Some(outgoing), Some(_)) = (cycle.outgoing.take(), &error) {
        let _ = outgoing.send(Outgoing::Close {
            code: 1011,
            reason: String::new(),
        });
    }
}

/// One WebSocket on the loop thread.
#[pyclass(unsendable)]
struct WebSocketCycle {
    id: u64,
    connect_delivered: bool,
    /// Until the app accepts or closes.
    accept: Option<oneshot::Sender<Handshake>>,
    outgoing: Option<mpsc::UnboundedSender<Outgoing>>,
    incoming: mpsc::Receiver<Incoming>,
    waiting: Option<Py<PyAny>>,
    /// The disconnect went to the app.
    closed: bool,
}

impl WebSocketCycle {
    fn next_message(&mut self, py: Python<'_>) -> PyResult<Option<Py<PyAny>>> {
        let message = PyDict::new(py);
        if !self.connect_delivered {
            self.connect_delivered = true;
            message.set_item(intern!(py, "type"), intern!(py, "websocket.connect"))?;
            return Ok(Some(message.into_any().unbind()));
        }
        let incoming = match self.incoming.try_recv() {
            Ok(incoming) => incoming,
            Err(mpsc::error::TryRecvError::Empty) => return Ok(None),
            Err(mpsc::error::TryRecvError::Disconnected) => Incoming::Disconnect(1006),
        };
        match incoming {
            Incoming::Text(text) => {
                message.set_item(intern!(py, "type"), intern!(py, "websocket.receive"))?;
                message.set_item(intern!(py, "text"), text)?;
            }
            Incoming::Binary(bytes) => {
                message.set_item(intern!(py, "type"), intern!(py, "websocket.receive"))?;
                message.set_item(intern!(py, "bytes"), PyBytes::new(py, &bytes))?;
            }
            Incoming::Disconnect(code) => {
                self.closed = true;
                self.outgoing = None;
                message.set_item(intern!(py, "type"), intern!(py, "websocket.disconnect"))?;
                message.set_item(intern!(py, "code"), code)?;
            }
        }
        Ok(Some(message.into_any().unbind()))
    }
}

#[pymethods]
impl WebSocketCycle {
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
            "websocket.accept" => {
                let accept = self.accept.take().ok_or_else(|| {
                    PyRuntimeError::new_err("websocket.accept after the handshake was answered")
                })?;
                let subprotocol: Option<String> =
                    match message.get_item(intern!(py, "subprotocol"))? {
                        Some(s) if !s.is_none() => Some(s.extract()?),
                        _ => None,
                    };
                let mut headers = HeaderMap::new();
                if let Some(list) = message.get_item(intern!(py, "headers"))? {
                    for pair in list.try_iter()? {
                        let (name, value): (Vec<u8>, Vec<u8>) = pair?.extract()?;
                        if let (Ok(name), Ok(value)) = (
                            HeaderName::from_bytes(&name),
                            HeaderValue::from_bytes(&value),
                        ) {
                            headers.append(name, value);
                        }
                    }
                }
                let _ = accept.send(Handshake::Accept {
                    subprotocol,
                    headers,
                });
            }
            "websocket.send" => {
                if self.accept.is_some() {
                    return Err(PyRuntimeError::new_err(
                        "websocket.send before websocket.accept",
                    ));
                }
                let outgoing = match (
                    message.get_item(intern!(py, "text"))?,
                    message.get_item(intern!(py, "bytes"))?,
                ) {
                    (Some(text), _) if !text.is_none() => Outgoing::Text(text.extract()?),
                    (_, Some(bytes)) if !bytes.is_none() => Outgoing::Binary(
                        bytes
                            .cast::<PyBytes>()
                            .map(|b| b.as_bytes().to_vec())
                            .map_err(|_| {
                                PyRuntimeError::new_err("websocket.send bytes must be bytes")
                            })?,
                    ),
                    _ => {
                        return Err(PyRuntimeError::new_err(
                            "websocket.send without text or bytes",
                        ))
                    }
                };
                if let Some(sender) = &self.outgoing {
                    let _ = sender.send(outgoing);
                }
            }
            "websocket.close" => {
                let code: u16 = match message.get_item(intern!(py, "code"))? {
                    Some(c) if !c.is_none() => c.extract()?,
                    _ => 1000,
                };
                let reason: String = match message.get_item(intern!(py, "reason"))? {
                    Some(r) if !r.is_none() => r.extract()?,
                    _ => String::new(),
                };
                if let Some(accept) = self.accept.take() {
                    let _ = accept.send(Handshake::Deny);
                } else if let Some(sender) = self.outgoing.take() {
                    let _ = sender.send(Outgoing::Close { code, reason });
                }
            }
            other => {
                return Err(PyRuntimeError::new_err(format!(
                    "Unexpected ASGI message '{other}' sent, for websocket {}.",
                    self.id
                )))
            }
        }
        ready_none(py)
    }
}
