//! The raw HTTP/1.1 client: one request at a time on tokio's sockets (TLS or not), each
//! failure classified from the raw I/O error.
//!
//! reqwest (hyper's client) folds "server closed before answering" and "connection reset"
//! into one error kind and retries some failures on its own, which would hide the very
//! drops the harness counts; this client does neither.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll, Waker};

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt, ReadBuf};
use tokio::time::timeout;

use super::connect::{open, Stream};
use super::{Endpoint, Failure, Timeouts};
use crate::outcome::Outcome;
use crate::request::RequestShape;
use crate::response::{parse, Progress};

/// One client's connection, kept between requests when both sides allow it.
#[derive(Debug, Default)]
pub struct Http1Session {
    connection: Option<Stream>,
    /// The encoded requests, one per path (built on first use).
    encoded: Vec<Vec<u8>>,
}

impl Http1Session {
    /// Sends the `n`-th request of `shape`. With `keep_alive`, the connection is reused if
    /// the server has not closed it meanwhile (as every pooling client checks), else a new
    /// one is made.
    pub async fn send(
        &mut self,
        endpoint: &Endpoint,
        shape: &RequestShape,
        n: usize,
        keep_alive: bool,
        timeouts: Timeouts,
    ) -> Result<Outcome, Failure> {
        if self.encoded.is_empty() {
            self.encoded = (0..shape.paths.len())
                .map(|i| encode(endpoint, shape, i, keep_alive))
                .collect();
        }
        let reusable = self
            .connection
            .take()
            .filter(|_| keep_alive)
            .and_then(|mut stream| still_open(&mut stream).then_some(stream));
        let mut stream = match reusable {
            Some(stream) => stream,
            None => open(endpoint, timeouts.connect, timeouts.request).await?,
        };
        let request = &self.encoded[n % self.encoded.len()];
        let exchanged = timeout(timeouts.request, exchange(&mut stream, request, shape)).await;
        let (outcome, may_reuse) = match exchanged {
            Err(_) => return Err(Failure::new(Outcome::RequestTimeout, "no response in time")),
            Ok(result) => result?,
        };
        if keep_alive && may_reuse {
            self.connection = Some(stream);
        }
        Ok(outcome)
    }
}

/// Whether the server has not closed an idle connection: nothing to read, no EOF, no
/// reset (for TLS, rustls handles session tickets itself and reports only data or EOF).
fn still_open(stream: &mut Stream) -> bool {
    let mut cx = Context::from_waker(Waker::noop());
    let mut byte = [0u8; 1];
    let mut buf = ReadBuf::new(&mut byte);
    matches!(Pin::new(stream).poll_read(&mut cx, &mut buf), Poll::Pending)
}

fn encode(endpoint: &Endpoint, shape: &RequestShape, n: usize, keep_alive: bool) -> Vec<u8> {
    let connection = if keep_alive { "keep-alive" } else { "close" };
    let mut request = format!(
        "{} {} HTTP/1.1\r\nHost: {}\r\nUser-Agent: shutdown-harness\r\nConnection: {connection}\r\n",
        shape.method,
        shape.path(n),
        endpoint.authority
    )
    .into_bytes();
    for (name, value) in &shape.headers {
        request.extend_from_slice(name.as_str().as_bytes());
        request.extend_from_slice(b": ");
        request.extend_from_slice(value.as_bytes());
        request.extend_from_slice(b"\r\n");
    }
    if shape.sends_length() {
        request.extend_from_slice(format!("Content-Length: {}\r\n", shape.body.len()).as_bytes());
    }
    request.extend_from_slice(b"\r\n");
    request.extend_from_slice(&shape.body);
    request
}

/// Writes the request and reads the response; says whether the connection may be reused.
async fn exchange(
    stream: &mut Stream,
    request: &[u8],
    shape: &RequestShape,
) -> Result<(Outcome, bool), Failure> {
    if let Err(e) = stream.write_all(request).await {
        let outcome = match e.kind() {
            io::ErrorKind::ConnectionReset | io::ErrorKind::BrokenPipe => Outcome::Reset,
            _ => Outcome::EofBeforeResponse,
        };
        return Err(Failure::new(outcome, e));
    }
    let mut buf = Vec::with_capacity(512);
    let mut chunk = [0u8; 4096];
    loop {
        let read = stream.read(&mut chunk).await;
        let eof = matches!(read, Ok(0));
        match read {
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
            Err(e) => {
                let outcome = match (e.kind(), buf.is_empty()) {
                    (_, false) => Outcome::PartialResponse,
                    (io::ErrorKind::ConnectionReset, true) => Outcome::Reset,
                    _ => Outcome::EofBeforeResponse,
                };
                return Err(Failure::new(outcome, e));
            }
        }
        match parse(&buf, eof) {
            Progress::Complete(head) => {
                let outcome = Outcome::of_status(head.status, &shape.ok_status);
                return Ok((outcome, head.keep_alive && !eof));
            }
            Progress::Invalid => {
                return Err(Failure::new(
                    Outcome::PartialResponse,
                    "not an HTTP/1 response",
                ))
            }
            Progress::Incomplete if eof => {
                let outcome = if buf.is_empty() {
                    Outcome::EofBeforeResponse
                } else {
                    Outcome::PartialResponse
                };
                return Err(Failure::new(outcome, "the server closed the connection"));
            }
            Progress::Incomplete => {}
        }
    }
}
