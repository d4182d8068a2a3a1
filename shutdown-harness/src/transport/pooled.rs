//! reqwest, as a typical Rust service calls another one: a shared connection pool, and
//! reqwest's own rules for retrying (it retries requests the server refused at the protocol
//! level, e.g. an HTTP/2 REFUSED_STREAM or GOAWAY, and hyper's pool never sends a request
//! on a connection it has seen closed). What users of a pooled client see during a restart.
//!
//! Its errors map onto the harness's classes as far as reqwest lets them be told apart:
//! a refused or timed-out connect, a timeout, a reset (the io error in the chain), a body
//! cut short. "Closed before any byte of the response" and "closed in the middle of the
//! head" are one error in hyper (an incomplete message): both count as
//! [`Outcome::EofBeforeResponse`].

use std::error::Error as _;
use std::io;

use reqwest::Client;

use super::{Failure, Timeouts};
use crate::outcome::Outcome;
use crate::request::RequestShape;

/// Sends the `n`-th request of `shape` through `client` to `base` (`scheme://authority`).
pub async fn send(
    client: &Client,
    base: &str,
    shape: &RequestShape,
    n: usize,
    timeouts: Timeouts,
) -> Result<Outcome, Failure> {
    let mut request = client
        .request(shape.method.clone(), format!("{base}{}", shape.path(n)))
        .headers(shape.headers.clone())
        .timeout(timeouts.request);
    if shape.sends_length() {
        request = request.body(shape.body.clone());
    }
    let response = request
        .send()
        .await
        .map_err(|e| Failure::new(classify(&e), e))?;
    let status = response.status().as_u16();
    match response.bytes().await {
        Ok(_) => Ok(Outcome::of_status(status, &shape.ok_status)),
        Err(e) if e.is_timeout() => Err(Failure::new(Outcome::RequestTimeout, e)),
        Err(e) => Err(Failure::new(Outcome::PartialResponse, e)),
    }
}

/// The closest class of a reqwest error.
fn classify(e: &reqwest::Error) -> Outcome {
    let io_kind = io_kind_in(e);
    if e.is_connect() {
        return match io_kind {
            Some(io::ErrorKind::ConnectionRefused) => Outcome::Refused,
            Some(io::ErrorKind::ConnectionReset) => Outcome::Reset,
            _ if e.is_timeout() => Outcome::ConnectTimeout,
            _ if tls_error_in(e) => Outcome::TlsHandshakeFailed,
            _ => Outcome::ConnectError,
        };
    }
    if e.is_timeout() {
        return Outcome::RequestTimeout;
    }
    if let Some(h2) = source_of::<h2::Error>(e) {
        return if h2.reason() == Some(h2::Reason::REFUSED_STREAM) {
            Outcome::StreamRefused
        } else {
            Outcome::StreamReset
        };
    }
    match io_kind {
        Some(io::ErrorKind::ConnectionReset | io::ErrorKind::BrokenPipe) => Outcome::Reset,
        Some(_) => Outcome::EofBeforeResponse,
        None if source_of::<hyper::Error>(e).is_some_and(hyper::Error::is_incomplete_message) => {
            Outcome::EofBeforeResponse
        }
        None => Outcome::OtherError,
    }
}

fn source_of<T: std::error::Error + 'static>(e: &reqwest::Error) -> Option<&T> {
    let mut source = e.source();
    while let Some(cause) = source {
        if let Some(found) = cause.downcast_ref::<T>() {
            return Some(found);
        }
        source = cause.source();
    }
    None
}

fn io_kind_in(e: &reqwest::Error) -> Option<io::ErrorKind> {
    source_of::<io::Error>(e).map(io::Error::kind)
}

fn tls_error_in(e: &reqwest::Error) -> bool {
    source_of::<rustls::Error>(e).is_some()
}
