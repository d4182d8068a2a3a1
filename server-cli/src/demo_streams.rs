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

/// The WebSocket options (uvicorn's names and defaults).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct WsOptions {
    /// Largest message, in bytes; a larger one closes the connection with 1009.
    pub max_size: usize,
    /// Send a ping this often (`None`: never).
    pub ping_interval: Option<Duration>,
    /// Close with 1011 when a ping gets no pong within this.
    pub ping_timeout: Duration,
}

impl Default for WsOptions {
    fn default() -> Self {
        Self {
            max_size: 16 * 1024 * 1024,
            ping_interval: Some(Duration::from_secs(20)),
            ping_timeout: Duration::from_secs(20),
        }
    }
}

/// How long a closing WebSocket waits for the client's close frame.
const WS_CLOSE_TIMEOUT: Duration = Duration::from_secs(2);
/// What a client waits before reconnecting after the stream ends (the `retry:` hint).
const SSE_RETRY: Duration = Duration::from_millis(500);

/// Bytes read from a WebSocket at a time. tungstenite's default (128 KiB) is zero-filled
/// up front, so every open WebSocket held 135 KiB of resident memory, 4x uvicorn's; a
/// message larger than this is simply read in several pieces.
const WS_READ_BUFFER: usize = 4 * 1024;

/// `GET /ws`: echoes every text and binary message.
pub async fn websocket(upgrade: WebSocketUpgrade, options: WsOptions) -> Response {
    upgrade
        .read_buffer_size(WS_READ_BUFFER)
        .max_message_size(options.max_size)
        .max_frame_size(options.max_size)
        .on_upgrade(move |socket| echo_until_drained(socket, options))
}

async fn echo_until_drained(mut socket: WebSocket, options: WsOptions) {
    let mut draining = Draining::of_this_worker();
    let period = options.ping_interval.unwrap_or(Duration::from_secs(86_400));
    let mut pings = tokio::time::interval_at(tokio::time::Instant::now() + period, period);
    // When the ping in flight was sent (cleared by its pong).
    let mut awaiting_pong: Option<tokio::time::Instant> = None;
    loop {
        let pong_due = awaiting_pong.map(|sent| sent + options.ping_timeout);
        tokio::select! {
            message = socket.recv() => match message {
                Some(Ok(message @ (Message::Text(_) | Message::Binary(_)))) => {
                    if socket.send(message).await.is_err() {
                        return;
                    }
                }
                Some(Ok(Message::Pong(_))) => awaiting_pong = None,
                Some(Err(e)) if is_too_large(&e) => {
                    let frame = CloseFrame { code: 1009, reason: "message too large".into() };
                    if socket.send(Message::Close(Some(frame))).await.is_ok() {
                        // Read on (the rest of the message, then the client's close), so
                        // that the connection ends with a FIN: closing a socket that has
                        // unread bytes sends a reset, which can destroy the close frame
                        // before the client reads it.
                        wait_for_client_close(&mut socket).await;
                    }
                    return;
                }
                Some(Ok(Message::Close(_))) | Some(Err(_)) | None => return,
                Some(Ok(_)) => {}
            },
            _ = pings.tick(), if options.ping_interval.is_some() && awaiting_pong.is_none() => {
                if socket.send(Message::Ping(Default::default())).await.is_err() {
                    return;
                }
                awaiting_pong = Some(tokio::time::Instant::now());
            }
            () = sleep_until_or_never(pong_due) => {
                let frame = CloseFrame { code: 1011, reason: "keepalive ping timeout".into() };
                let _ = socket.send(Message::Close(Some(frame))).await;
                return;
            }
            reason = draining.started() => return close(socket, reason).await,
        }
    }
}

/// Whether a receive failed on a message or frame above `--ws-max-size`.
fn is_too_large(error: &axum::Error) -> bool {
    let cause = std::error::Error::source(error);
    matches!(
        cause.and_then(|c| c.downcast_ref::<tungstenite::Error>()),
        Some(tungstenite::Error::Capacity(_))
    )
}

async fn sleep_until_or_never(at: Option<tokio::time::Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
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
    wait_for_client_close(&mut socket).await;
}

/// After our close frame: reads (and drops) what the client still sends until its close
/// frame or the end of the connection, at most [`WS_CLOSE_TIMEOUT`].
async fn wait_for_client_close(socket: &mut WebSocket) {
    let closed = async {
        // Bounded in count too: a read error that repeats cannot spin for long.
        for _ in 0..10_000 {
            match socket.recv().await {
                Some(Ok(Message::Close(_))) | None => break,
                Some(Err(e)) if !is_too_large(&e) => break,
                Some(_) => {}
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
