//! The HTTP/2 client (h2c by prior knowledge, or ALPN over TLS): one connection per client
//! carrying one stream at a time, on hyper's connection-level client, so that every failed
//! stream is seen and classified, none retried behind the harness's back.

use std::error::Error as _;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::client::conn::http2::{handshake, SendRequest};
use hyper::http::{header, Request};
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::time::timeout;

use super::connect::open;
use super::{Endpoint, Failure, Timeouts};
use crate::outcome::Outcome;
use crate::request::RequestShape;

/// One client's HTTP/2 connection.
#[derive(Debug, Default)]
pub struct Http2Session {
    sender: Option<SendRequest<Full<Bytes>>>,
}

impl Http2Session {
    /// Sends the `n`-th request of `shape` as one stream. A connection the server has
    /// closed or sent GOAWAY on is replaced before the stream is opened, as any HTTP/2
    /// client does.
    pub async fn send(
        &mut self,
        endpoint: &Endpoint,
        shape: &RequestShape,
        n: usize,
        timeouts: Timeouts,
    ) -> Result<Outcome, Failure> {
        let mut sender = match self.sender.take() {
            Some(mut sender) => match usable(&mut sender, timeouts).await {
                true => sender,
                false => connect(endpoint, timeouts).await?,
            },
            None => connect(endpoint, timeouts).await?,
        };
        let request = build(endpoint, shape, n)?;
        let exchange = async {
            let response = sender
                .send_request(request)
                .await
                .map_err(|e| Failure::new(stream_outcome(&e), e))?;
            let status = response.status().as_u16();
            let body = response.into_body().collect().await;
            body.map_err(|e| Failure::new(Outcome::PartialResponse, e))?;
            Ok::<u16, Failure>(status)
        };
        let outcome = match timeout(timeouts.request, exchange).await {
            Err(_) => return Err(Failure::new(Outcome::RequestTimeout, "no response in time")),
            Ok(result) => Outcome::of_status(result?, &shape.ok_status),
        };
        self.sender = Some(sender);
        Ok(outcome)
    }
}

/// Whether the connection can take a new stream (no GOAWAY, not closed).
async fn usable(sender: &mut SendRequest<Full<Bytes>>, timeouts: Timeouts) -> bool {
    matches!(timeout(timeouts.request, sender.ready()).await, Ok(Ok(())))
}

async fn connect(
    endpoint: &Endpoint,
    timeouts: Timeouts,
) -> Result<SendRequest<Full<Bytes>>, Failure> {
    let stream = open(endpoint, timeouts.connect, timeouts.request).await?;
    let handshaking = handshake(TokioExecutor::new(), TokioIo::new(stream));
    let (sender, connection) = match timeout(timeouts.request, handshaking).await {
        Err(_) => {
            return Err(Failure::new(
                Outcome::RequestTimeout,
                "HTTP/2 handshake timed out",
            ))
        }
        Ok(Err(e)) => return Err(Failure::new(stream_outcome(&e), e)),
        Ok(Ok(pair)) => pair,
    };
    tokio::spawn(connection);
    Ok(sender)
}

fn build(
    endpoint: &Endpoint,
    shape: &RequestShape,
    n: usize,
) -> Result<Request<Full<Bytes>>, Failure> {
    let uri = format!(
        "{}://{}{}",
        endpoint.scheme_name(),
        endpoint.authority,
        shape.path(n)
    );
    let mut builder = Request::builder()
        .method(shape.method.clone())
        .uri(uri)
        .header(header::USER_AGENT, "shutdown-harness");
    for (name, value) in &shape.headers {
        builder = builder.header(name, value);
    }
    builder
        .body(Full::new(shape.body.clone()))
        .map_err(|e| Failure::new(Outcome::OtherError, e))
}

/// A failed stream. REFUSED_STREAM, or a GOAWAY that the stream was not covered by, means
/// the server never processed it (RFC 9113, 8.7): retriable like a refused connection. So
/// does a request hyper canceled before handing it to the connection ("connection was not
/// ready", "connection closed": GOAWAY arrived between the readiness check and the send),
/// which never left the client. Anything else lost the request.
fn stream_outcome(e: &hyper::Error) -> Outcome {
    if e.is_canceled() {
        return Outcome::StreamRefused;
    }
    let mut source = e.source();
    while let Some(cause) = source {
        if let Some(h2) = cause.downcast_ref::<h2::Error>() {
            let unprocessed = h2.reason() == Some(h2::Reason::REFUSED_STREAM)
                || (h2.is_go_away() && h2.is_remote() && h2.reason() == Some(h2::Reason::NO_ERROR));
            return if unprocessed {
                Outcome::StreamRefused
            } else if h2.is_io() {
                io_outcome(h2.get_io().map(std::io::Error::kind))
            } else {
                Outcome::StreamReset
            };
        }
        if let Some(io) = cause.downcast_ref::<std::io::Error>() {
            return io_outcome(Some(io.kind()));
        }
        source = cause.source();
    }
    if e.is_incomplete_message() || e.is_closed() {
        Outcome::EofBeforeResponse
    } else {
        Outcome::OtherError
    }
}

/// A failure of the connection's I/O: a reset, or the connection ended.
pub(crate) fn io_outcome(kind: Option<std::io::ErrorKind>) -> Outcome {
    match kind {
        Some(std::io::ErrorKind::ConnectionReset | std::io::ErrorKind::BrokenPipe) => {
            Outcome::Reset
        }
        _ => Outcome::EofBeforeResponse,
    }
}
