//! The `sse` scenario's client: opens an event stream, checks every event id follows the
//! one before, and when the stream ends reconnects (after the server's `retry:` hint) with
//! `Last-Event-ID`, so a server that resumes on another worker is seen to lose nothing.
//!
//! A stream that ends at an event boundary with the clean end of its body is a clean close;
//! one cut mid-event, cut without the body's end, or resumed with ids missing is a drop.

use std::error::Error as _;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use hyper::body::Incoming;
use hyper::client::conn::http1::handshake;
use hyper::http::{header, Request};
use hyper_util::rt::TokioIo;
use tokio::time::timeout;

use super::sse_parser::{Item, Parser};
use super::{pause_after, until_stopped, Log, MAX_CONNECTIONS_PER_CLIENT};
use crate::observation::RequestRecord;
use crate::outcome::Outcome;
use crate::traffic::Client;
use crate::transport::connect::open;
use crate::transport::{io_outcome, Endpoint, Failure};

/// Where a client is in the stream of events, across reconnections.
#[derive(Debug, Default)]
struct Position {
    /// The last event id received (sent back as `Last-Event-ID`).
    last_id: Option<String>,
    /// The server's reconnection time.
    retry: Option<Duration>,
}

/// Runs one client until the harness stops it; returns its records.
pub async fn run(client: Client, endpoint: Arc<Endpoint>) -> Vec<RequestRecord> {
    let mut log = Log::new(&client);
    let mut stopped = client.stopped.clone();
    let mut position = Position::default();
    for connection in 0..MAX_CONNECTIONS_PER_CLIENT {
        if *stopped.borrow() || log.full() {
            break;
        }
        let start = Instant::now();
        let ended = match open_stream(&endpoint, &client, connection, &position).await {
            Ok(body) => {
                log.push(start, Outcome::Opened);
                match read_events(body, &client, &mut position, &mut log).await {
                    Some(outcome) => outcome,
                    None => break,
                }
            }
            Err(failure) => {
                log.push(start, failure.outcome);
                failure.outcome
            }
        };
        let pause = pause_after(ended, position.retry, client.group.interval);
        tokio::select! {
            () = tokio::time::sleep(pause) => {}
            () = until_stopped(&mut stopped) => break,
        }
    }
    log.records
}

/// Connects and sends `GET` with `Last-Event-ID` when resuming; returns the body once
/// the server answered 200.
async fn open_stream(
    endpoint: &Endpoint,
    client: &Client,
    n: usize,
    position: &Position,
) -> Result<Incoming, Failure> {
    let timeouts = client.group.timeouts;
    let stream = open(endpoint, timeouts.connect, timeouts.request).await?;
    let (mut sender, connection) = handshake(TokioIo::new(stream))
        .await
        .map_err(|e| Failure::new(hyper_outcome(&e), e))?;
    tokio::spawn(connection);
    let shape = &client.group.request;
    let mut request = Request::get(shape.path(n))
        .header(header::HOST, &endpoint.authority)
        .header(header::ACCEPT, "text/event-stream")
        .header(header::USER_AGENT, "shutdown-harness");
    for (name, value) in &shape.headers {
        request = request.header(name, value);
    }
    if let Some(id) = &position.last_id {
        request = request.header("last-event-id", id);
    }
    let request = request
        .body(Empty::<Bytes>::new())
        .map_err(|e| Failure::new(Outcome::OtherError, e))?;
    let response = match timeout(timeouts.request, sender.send_request(request)).await {
        Err(_) => return Err(Failure::new(Outcome::RequestTimeout, "no response in time")),
        Ok(Err(e)) => return Err(Failure::new(hyper_outcome(&e), e)),
        Ok(Ok(response)) => response,
    };
    let status = response.status().as_u16();
    if status != 200 {
        return Err(Failure::new(
            Outcome::HttpError(status),
            format!("answered {status}"),
        ));
    }
    Ok(response.into_body())
}

/// Reads events until the stream ends (its outcome, recorded) or the harness stops the
/// client (`None`). Each event is a [`Outcome::Message`]; ids that skip ahead of the last
/// one are [`Outcome::EventsMissing`].
async fn read_events(
    mut body: Incoming,
    client: &Client,
    position: &mut Position,
    log: &mut Log<'_>,
) -> Option<Outcome> {
    let mut stopped = client.stopped.clone();
    let mut parser = Parser::default();
    let limit = client.group.timeouts.request;
    let mut waiting_since = Instant::now();
    loop {
        if log.full() {
            return None;
        }
        let frame = tokio::select! {
            frame = timeout(limit, body.frame()) => frame,
            () = until_stopped(&mut stopped) => return None,
        };
        let ended = match frame {
            Err(_) => Outcome::RequestTimeout,
            Ok(None) if parser.mid_event() => Outcome::CutMidEvent,
            Ok(None) => Outcome::StreamEnded,
            Ok(Some(Err(_))) if parser.mid_event() => Outcome::CutMidEvent,
            Ok(Some(Err(_))) => Outcome::StreamCut,
            Ok(Some(Ok(frame))) => {
                let Ok(data) = frame.into_data() else {
                    continue;
                };
                for item in parser.feed(&data) {
                    match item {
                        Item::Retry(hint) => position.retry = Some(hint),
                        Item::Event { id } => {
                            if skips_ahead(position.last_id.as_deref(), id.as_deref()) {
                                log.push(waiting_since, Outcome::EventsMissing);
                            }
                            log.push(waiting_since, Outcome::Message);
                            waiting_since = Instant::now();
                            if id.is_some() {
                                position.last_id = id;
                            }
                        }
                    }
                }
                continue;
            }
        };
        log.push(Instant::now(), ended);
        return Some(ended);
    }
}

/// Whether numeric ids skipped at least one: `next` is above `last + 1`. Ids that are not
/// numbers carry no order, so nothing can be said about them.
fn skips_ahead(last: Option<&str>, next: Option<&str>) -> bool {
    match (
        last.and_then(|l| l.parse::<u64>().ok()),
        next.and_then(|n| n.parse::<u64>().ok()),
    ) {
        (Some(last), Some(next)) => next > last.saturating_add(1),
        _ => false,
    }
}

/// A request that failed before its response: a reset, or the connection ended.
fn hyper_outcome(e: &hyper::Error) -> Outcome {
    let mut source = e.source();
    while let Some(cause) = source {
        if let Some(io) = cause.downcast_ref::<std::io::Error>() {
            return io_outcome(Some(io.kind()));
        }
        source = cause.source();
    }
    if e.is_incomplete_message() || e.is_closed() || e.is_canceled() {
        Outcome::EofBeforeResponse
    } else {
        Outcome::OtherError
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_numeric_ids_that_jump_are_missing_events() {
        assert!(!skips_ahead(None, Some("0")));
        assert!(!skips_ahead(Some("4"), Some("5")));
        assert!(!skips_ahead(Some("4"), Some("4")));
        assert!(skips_ahead(Some("4"), Some("6")));
        assert!(!skips_ahead(Some("a"), Some("c")));
        assert!(!skips_ahead(Some("4"), None));
    }
}
