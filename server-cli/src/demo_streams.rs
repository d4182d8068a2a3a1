//! The demo app's long-lived connections: a WebSocket echo (`/ws`) and a Server-Sent
//! Events stream (`/sse?every=MS`). Both end cleanly when their worker drains: the
//! WebSocket with a close frame (1001 when the server stops, 1012 when a new generation
//! takes over), the stream at an event boundary with a `retry:` hint.

use std::convert::Infallible;
use std::time::Duration;

use axum::extract::ws::{CloseFrame, Message, WebSocket, WebSocketUpgrade};
use axum::extract::Query;
use axum::http::HeaderMap;
use axum::response::sse::{Event, Sse};
use axum::response::Response;
use futures_util::stream::{self, Stream};
use serde::Deserialize;
use server_core::{DrainReason, Draining};

/// Largest WebSocket message (uvicorn's `--ws-max-size` default, 16 MiB).
const WS_MAX_SIZE: usize = 16 * 1024 * 1024;
/// How long a closing WebSocket waits for the client's close frame.
const WS_CLOSE_TIMEOUT: Duration = Duration::from_secs(2);
/// What a client waits before reconnecting after the stream ends (the `retry:` hint).
const SSE_RETRY: Duration = Duration::from_millis(500);

/// `GET /ws`: echoes every text and binary message.
pub async fn websocket(upgrade: WebSocketUpgrade) -> Response {
    upgrade
        .max_message_size(WS_MAX_SIZE)
        .on_upgrade(echo_until_drained)
}

async fn echo_until_drained(mut socket: WebSocket) {
    let mut draining = Draining::of_this_worker();
    loop {
        tokio::select! {
            message = socket.recv() => match message {
                Some(Ok(message @ (Message::Text(_) | Message::Binary(_)))) => {
                    if socket.send(message).await.is_err() {
                        return;
                    }
                }
                Some(Ok(Message::Close(_))) | Some(Err(_)) | None => return,
                Some(Ok(_)) => {}
            },
            reason = draining.started() => return close(socket, reason).await,
        }
    }
}

/// Sends the close frame for `reason`, then waits (bounded) for the client's: the client
/// then knows nothing was lost, and TCP ends with a FIN.
async fn close(mut socket: WebSocket, reason: DrainReason) {
    let text = match reason {
        DrainReason::Stop => "server stopping",
        _ => "server restarting: reconnect",
    };
    let frame = CloseFrame {
        code: reason.websocket_close_code(),
        reason: text.into(),
    };
    if socket.send(Message::Close(Some(frame))).await.is_err() {
        return;
    }
    let closed = async {
        while let Some(Ok(message)) = socket.recv().await {
            if matches!(message, Message::Close(_)) {
                break;
            }
        }
    };
    let _ = tokio::time::timeout(WS_CLOSE_TIMEOUT, closed).await;
}

/// Query of `/sse`.
#[derive(Debug, Deserialize)]
pub struct SseQuery {
    /// Milliseconds between events (default 1000).
    every: Option<u64>,
}

/// `GET /sse?every=MS`: an event with an `id:` every MS milliseconds; a client that
/// reconnects with `Last-Event-ID: N` goes on from N + 1.
pub async fn events(
    Query(query): Query<SseQuery>,
    headers: HeaderMap,
) -> Sse<impl Stream<Item = Result<Event, Infallible>>> {
    let every = Duration::from_millis(query.every.unwrap_or(1000).clamp(1, 60_000));
    let first = headers
        .get("last-event-id")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok())
        .map_or(0, |last| last + 1);
    let state = (first, Draining::of_this_worker(), false);
    Sse::new(stream::unfold(
        state,
        move |(id, mut draining, ended)| async move {
            if ended {
                return None;
            }
            tokio::select! {
                () = tokio::time::sleep(every) => {
                    let event = Event::default().id(id.to_string()).data(format!("event {id}"));
                    Some((Ok(event), (id + 1, draining, false)))
                }
                // The last event only says when to come back; the body then ends cleanly.
                _ = draining.started() => Some((Ok(Event::default().retry(SSE_RETRY).comment("draining")), (id, draining, true))),
            }
        },
    ))
}
