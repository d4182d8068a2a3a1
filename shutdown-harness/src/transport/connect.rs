//! Opening a connection to the endpoint, TLS included, with every failure classified.

use std::io;
use std::time::Duration;

use tokio::net::TcpStream;
use tokio::time::timeout;
use tokio_rustls::client::TlsStream;
use tokio_util::either::Either;

use super::{Endpoint, Failure};
use crate::outcome::Outcome;

/// A connection, plain or TLS.
pub type Stream = Either<TcpStream, Box<TlsStream<TcpStream>>>;

/// Connects within `connect_limit` and completes the TLS handshake (if any) within
/// `handshake_limit`.
pub async fn open(
    endpoint: &Endpoint,
    connect_limit: Duration,
    handshake_limit: Duration,
) -> Result<Stream, Failure> {
    let tcp = match timeout(connect_limit, TcpStream::connect(endpoint.addr)).await {
        Err(_) => return Err(Failure::new(Outcome::ConnectTimeout, "connect timed out")),
        Ok(Err(e)) => {
            let outcome = match e.kind() {
                io::ErrorKind::ConnectionRefused => Outcome::Refused,
                io::ErrorKind::ConnectionReset => Outcome::Reset,
                _ => Outcome::ConnectError,
            };
            return Err(Failure::new(outcome, e));
        }
        Ok(Ok(tcp)) => tcp,
    };
    let _ = tcp.set_nodelay(true);
    let Some(tls) = &endpoint.tls else {
        return Ok(Either::Left(tcp));
    };
    let handshake = tls.connector.connect(tls.server_name.clone(), tcp);
    match timeout(handshake_limit, handshake).await {
        Err(_) => Err(Failure::new(
            Outcome::RequestTimeout,
            "the TLS handshake timed out",
        )),
        Ok(Err(e)) => Err(Failure::new(handshake_outcome(&e), e)),
        Ok(Ok(stream)) => Ok(Either::Right(Box::new(stream))),
    }
}

/// A failed handshake: a reset or an early close is what a stopping server causes; a
/// TLS error (certificate, protocol) is its own class.
fn handshake_outcome(e: &io::Error) -> Outcome {
    let tls_error = e.get_ref().is_some_and(|inner| inner.is::<rustls::Error>());
    match e.kind() {
        _ if tls_error => Outcome::TlsHandshakeFailed,
        io::ErrorKind::ConnectionReset | io::ErrorKind::BrokenPipe => Outcome::Reset,
        io::ErrorKind::UnexpectedEof => Outcome::EofBeforeResponse,
        _ => Outcome::TlsHandshakeFailed,
    }
}
