//! A small HTTP/1.1 client on tokio's `TcpStream` that reports exactly how a request ended.
//!
//! reqwest (hyper's client) folds "server closed before answering" and "connection reset"
//! into one error kind and retries some failures on its own, which would hide the very
//! drops the harness counts. This client sends one request at a time and classifies every
//! failure from the raw I/O error.

use std::io;
use std::net::SocketAddr;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::timeout;

use crate::outcome::Outcome;
use crate::response::{parse, Progress};

/// What to send.
#[derive(Debug, Clone)]
pub struct RequestSpec {
    /// Method and path, e.g. `GET /`.
    pub method: &'static str,
    /// Path and query.
    pub path: String,
    /// Request body (sent with `Content-Length`).
    pub body: Vec<u8>,
    /// Longest wait for the handshake.
    pub connect_timeout: Duration,
    /// Longest wait from the first byte sent to the last byte of the response.
    pub request_timeout: Duration,
}

/// A connection kept open between requests (keep-alive clients).
#[derive(Debug)]
pub struct Connection {
    stream: TcpStream,
}

/// Sends one request. With `reuse`, the request goes on that connection if the server
/// has not closed it meanwhile (as every pooling client checks before reuse); else a new
/// connection is made. Returns the outcome, and the connection when it may be reused.
pub async fn send(
    addr: SocketAddr,
    spec: &RequestSpec,
    keep_alive: bool,
    reuse: Option<Connection>,
) -> (Outcome, Option<Connection>) {
    let reusable = reuse.filter(|c| still_open(&c.stream));
    let mut stream = match reusable {
        Some(c) => c.stream,
        None => match connect(addr, spec.connect_timeout).await {
            Ok(s) => s,
            Err(outcome) => return (outcome, None),
        },
    };
    let request = encode(spec, keep_alive);
    match timeout(spec.request_timeout, exchange(&mut stream, &request)).await {
        Err(_) => (Outcome::RequestTimeout, None),
        Ok(Err(outcome)) => (outcome, None),
        Ok(Ok((outcome, may_reuse))) => {
            let next = (keep_alive && may_reuse).then_some(Connection { stream });
            (outcome, next)
        }
    }
}

async fn connect(addr: SocketAddr, limit: Duration) -> Result<TcpStream, Outcome> {
    match timeout(limit, TcpStream::connect(addr)).await {
        Err(_) => Err(Outcome::ConnectTimeout),
        Ok(Err(e)) => Err(match e.kind() {
            io::ErrorKind::ConnectionRefused => Outcome::Refused,
            io::ErrorKind::ConnectionReset => Outcome::Reset,
            _ => Outcome::ConnectError,
        }),
        Ok(Ok(stream)) => {
            let _ = stream.set_nodelay(true);
            Ok(stream)
        }
    }
}

/// Whether the server has not closed an idle connection (no EOF or reset pending).
fn still_open(stream: &TcpStream) -> bool {
    let mut byte = [0u8; 1];
    matches!(stream.try_read(&mut byte), Err(e) if e.kind() == io::ErrorKind::WouldBlock)
}

fn encode(spec: &RequestSpec, keep_alive: bool) -> Vec<u8> {
    let connection = if keep_alive { "keep-alive" } else { "close" };
    let mut request = format!(
        "{} {} HTTP/1.1\r\nHost: 127.0.0.1\r\nUser-Agent: shutdown-harness\r\nConnection: {connection}\r\n",
        spec.method, spec.path
    )
    .into_bytes();
    if !spec.body.is_empty() || spec.method == "POST" {
        request.extend_from_slice(format!("Content-Length: {}\r\n", spec.body.len()).as_bytes());
    }
    request.extend_from_slice(b"\r\n");
    request.extend_from_slice(&spec.body);
    request
}

/// Writes the request and reads the response; says whether the connection may be reused.
async fn exchange(stream: &mut TcpStream, request: &[u8]) -> Result<(Outcome, bool), Outcome> {
    if let Err(e) = stream.write_all(request).await {
        return Err(match e.kind() {
            io::ErrorKind::ConnectionReset | io::ErrorKind::BrokenPipe => Outcome::Reset,
            _ => Outcome::EofBeforeResponse,
        });
    }
    let mut buf = Vec::with_capacity(512);
    let mut chunk = [0u8; 4096];
    loop {
        let read = stream.read(&mut chunk).await;
        let eof = matches!(read, Ok(0));
        match read {
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
            Err(e) => {
                return Err(match (e.kind(), buf.is_empty()) {
                    (_, false) => Outcome::PartialResponse,
                    (io::ErrorKind::ConnectionReset, true) => Outcome::Reset,
                    _ => Outcome::EofBeforeResponse,
                })
            }
        }
        match parse(&buf, eof) {
            Progress::Complete(head) => {
                let outcome = if (200..300).contains(&head.status) {
                    Outcome::Ok(head.status)
                } else {
                    Outcome::HttpError(head.status)
                };
                return Ok((outcome, head.keep_alive && !eof));
            }
            Progress::Invalid => return Err(Outcome::PartialResponse),
            Progress::Incomplete if eof => {
                return Err(if buf.is_empty() {
                    Outcome::EofBeforeResponse
                } else {
                    Outcome::PartialResponse
                })
            }
            Progress::Incomplete => {}
        }
    }
}
