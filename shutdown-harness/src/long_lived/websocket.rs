//! The `websocket` scenario's client: opens a WebSocket, sends a text message every
//! interval and waits for its echo, and reconnects when the server closes the connection.
//!
//! How a connection ends decides whether anything was lost: a close frame with 1000, 1001
//! or 1012 is clean (the client knows to come back, nothing was half-done); TCP ending
//! without a close frame (1006), a reset, another close code, or a message that got neither
//! its echo nor a close frame in time is a drop.

use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_util::{SinkExt, StreamExt};
use tokio::time::{sleep_until, timeout};
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::error::ProtocolError;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::{Error as WsError, Message};
use tokio_tungstenite::WebSocketStream;

use super::{pause_after, until_stopped, Log, MAX_CONNECTIONS_PER_CLIENT};
use crate::observation::RequestRecord;
use crate::outcome::Outcome;
use crate::traffic::Client;
use crate::transport::connect::{open, Stream};
use crate::transport::{io_outcome, Endpoint, Failure};

/// Close codes that mean "the server ended this on purpose; reconnect": normal closure,
/// going away (the server stops), service restart (a new generation takes over).
pub const CLEAN_CLOSE_CODES: [u16; 3] = [1000, 1001, 1012];
/// How long the client waits for the end of TCP after the close handshake.
const CLOSE_WAIT: Duration = Duration::from_secs(2);

type Socket = WebSocketStream<Stream>;

/// Runs one client until the harness stops it; returns its records.
pub async fn run(client: Client, endpoint: Arc<Endpoint>) -> Vec<RequestRecord> {
    let mut log = Log::new(&client);
    let mut stopped = client.stopped.clone();
    for connection in 0..MAX_CONNECTIONS_PER_CLIENT {
        if *stopped.borrow() || log.full() {
            break;
        }
        let start = Instant::now();
        let ended = match connect(&endpoint, &client, connection).await {
            Ok(mut socket) => {
                log.push(start, Outcome::Opened);
                match converse(&mut socket, &client, &mut log).await {
                    Some(outcome) => outcome,
                    None => {
                        close_politely(socket).await;
                        break;
                    }
                }
            }
            Err(failure) => {
                log.push(start, failure.outcome);
                failure.outcome
            }
        };
        let pause = pause_after(ended, None, client.group.interval);
        tokio::select! {
            () = tokio::time::sleep(pause) => {}
            () = until_stopped(&mut stopped) => break,
        }
    }
    log.records
}

/// Opens the TCP (and TLS) connection and does the upgrade, within the client's limits.
async fn connect(endpoint: &Endpoint, client: &Client, n: usize) -> Result<Socket, Failure> {
    let timeouts = client.group.timeouts;
    let stream = open(endpoint, timeouts.connect, timeouts.request).await?;
    let scheme = if endpoint.tls.is_some() { "wss" } else { "ws" };
    let shape = &client.group.request;
    let url = format!("{scheme}://{}{}", endpoint.authority, shape.path(n));
    let mut request = url
        .into_client_request()
        .map_err(|e| Failure::new(Outcome::OtherError, e))?;
    for (name, value) in &shape.headers {
        request.headers_mut().insert(name, value.clone());
    }
    match timeout(
        timeouts.request,
        tokio_tungstenite::client_async(request, stream),
    )
    .await
    {
        Err(_) => Err(Failure::new(
            Outcome::RequestTimeout,
            "the upgrade was not answered in time",
        )),
        Ok(Ok((socket, _response))) => Ok(socket),
        Ok(Err(e)) => Err(Failure::new(upgrade_outcome(&e), e)),
    }
}

/// Messages until the connection ends (its outcome, recorded) or the harness stops the
/// client (`None`).
async fn converse(socket: &mut Socket, client: &Client, log: &mut Log<'_>) -> Option<Outcome> {
    let mut stopped = client.stopped.clone();
    let group = &client.group;
    for n in 0..usize::MAX {
        if log.full() {
            return None;
        }
        // Idle until the next message, watching for the server's close.
        let wake = Instant::now() + group.interval;
        loop {
            tokio::select! {
                incoming = socket.next() => {
                    if let Incoming::Ended(ended) = read(socket, incoming).await {
                        log.push(Instant::now(), ended);
                        return Some(ended);
                    }
                }
                () = sleep_until(wake.into()) => break,
                () = until_stopped(&mut stopped) => return None,
            }
        }
        let payload = format!("client {} message {n}", client.id);
        let start = Instant::now();
        if let Err(e) = socket.send(Message::text(payload.clone())).await {
            let ended = read_outcome(&e);
            log.push(start, ended);
            return Some(ended);
        }
        let deadline = start + group.timeouts.request;
        loop {
            tokio::select! {
                incoming = socket.next() => match read(socket, incoming).await {
                    Incoming::Text(text) if text == payload => {
                        log.push(start, Outcome::Message);
                        break;
                    }
                    Incoming::Text(_) | Incoming::Other => {}
                    Incoming::Ended(ended) => {
                        // A close frame instead of the echo is clean: the client knows
                        // the message was not taken, and sends it again after reconnecting.
                        log.push(start, ended);
                        return Some(ended);
                    }
                },
                () = sleep_until(deadline.into()) => {
                    // Neither the echo nor a close frame: the message was lost.
                    log.push(start, Outcome::RequestTimeout);
                    return Some(Outcome::RequestTimeout);
                }
            }
        }
    }
    None
}

/// What one read from the socket brought.
enum Incoming {
    /// A text message.
    Text(String),
    /// Anything else that leaves the connection open (binary, ping, pong).
    Other,
    /// The connection ended this way (the close handshake finished, if there was one).
    Ended(Outcome),
}

/// Classifies an incoming frame; on a close frame, finishes the close handshake first.
async fn read(socket: &mut Socket, incoming: Option<Result<Message, WsError>>) -> Incoming {
    match incoming {
        Some(Ok(Message::Text(text))) => Incoming::Text(text.to_string()),
        Some(Ok(Message::Close(frame))) => {
            finish_close(socket).await;
            Incoming::Ended(close_outcome(frame.as_ref()))
        }
        Some(Ok(_)) => Incoming::Other,
        Some(Err(e)) => Incoming::Ended(read_outcome(&e)),
        None => Incoming::Ended(Outcome::ClosedWithoutFrame),
    }
}

/// A close frame's class: clean codes, or another code (1005 when it had none).
fn close_outcome(frame: Option<&CloseFrame>) -> Outcome {
    let code = frame.map_or(1005, |f| u16::from(f.code));
    if CLEAN_CLOSE_CODES.contains(&code) {
        Outcome::ClosedCleanly(code)
    } else {
        Outcome::ClosedWithCode(code)
    }
}

/// After the server's close frame: the library has queued our answer; reading on sends it
/// and sees the server end TCP (bounded).
async fn finish_close(socket: &mut Socket) {
    let _ = timeout(CLOSE_WAIT, async {
        while let Some(Ok(_)) = socket.next().await {}
    })
    .await;
}

/// The client leaves at the end of traffic: a close frame (1000), and the server's answer.
async fn close_politely(mut socket: Socket) {
    let _ = timeout(CLOSE_WAIT, async {
        let _ = socket.close(None).await;
        while let Some(Ok(_)) = socket.next().await {}
    })
    .await;
}

/// A read or write failed: TCP ended without a close frame (1006), or was reset.
fn read_outcome(e: &WsError) -> Outcome {
    match e {
        WsError::Protocol(ProtocolError::ResetWithoutClosingHandshake)
        | WsError::ConnectionClosed
        | WsError::AlreadyClosed => Outcome::ClosedWithoutFrame,
        WsError::Io(io) => match io_outcome(Some(io.kind())) {
            Outcome::Reset => Outcome::Reset,
            _ => Outcome::ClosedWithoutFrame,
        },
        _ => Outcome::OtherError,
    }
}

/// The upgrade failed: an HTTP answer other than 101, or the connection ended first.
fn upgrade_outcome(e: &WsError) -> Outcome {
    match e {
        WsError::Http(response) => Outcome::HttpError(response.status().as_u16()),
        WsError::Io(io) => io_outcome(Some(io.kind())),
        WsError::Protocol(ProtocolError::HandshakeIncomplete) => Outcome::EofBeforeResponse,
        _ => Outcome::OtherError,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;

    #[test]
    fn only_normal_going_away_and_restart_are_clean_closes() {
        let frame = |code: u16| CloseFrame {
            code: CloseCode::from(code),
            reason: "".into(),
        };
        assert_eq!(
            close_outcome(Some(&frame(1001))),
            Outcome::ClosedCleanly(1001)
        );
        assert_eq!(
            close_outcome(Some(&frame(1012))),
            Outcome::ClosedCleanly(1012)
        );
        assert_eq!(
            close_outcome(Some(&frame(1000))),
            Outcome::ClosedCleanly(1000)
        );
        assert_eq!(
            close_outcome(Some(&frame(1011))),
            Outcome::ClosedWithCode(1011)
        );
        assert_eq!(close_outcome(None), Outcome::ClosedWithCode(1005));
    }
}
