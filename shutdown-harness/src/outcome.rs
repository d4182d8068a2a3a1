//! How one request ended, classified so that a drop can never pass for a clean refusal.

use serde::Serialize;

/// How one request ended.
///
/// Only [`Outcome::Ok`] and [`Outcome::Refused`] are acceptable during a stop: the first is
/// an answer, the second is the kernel saying "nobody here" at once, which every client and
/// load balancer retries elsewhere. Everything else is a drop: the client waited in vain,
/// or its request may or may not have been processed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case", tag = "kind", content = "status")]
pub enum Outcome {
    /// A 2xx response, read in full.
    Ok(u16),
    /// A complete response with another status (5xx and 4xx count as drops).
    HttpError(u16),
    /// The connection was refused (RST to the SYN): clean and retriable.
    Refused,
    /// The handshake did not complete in time (SYN dropped, e.g. a full accept queue).
    ConnectTimeout,
    /// Connected and sent, but no complete response in time (e.g. stuck in a queue nobody
    /// accepts from).
    RequestTimeout,
    /// The connection was reset before any byte of the response arrived.
    Reset,
    /// The server closed the connection before any byte of the response.
    EofBeforeResponse,
    /// Some of the response arrived, then the connection ended.
    PartialResponse,
    /// Another error while connecting (e.g. no local port left).
    ConnectError,
}

impl Outcome {
    /// Whether this outcome loses a request.
    pub fn is_drop(self) -> bool {
        !matches!(self, Outcome::Ok(_) | Outcome::Refused)
    }

    /// A short label for tables and the timeline.
    pub fn label(self) -> String {
        match self {
            Outcome::Ok(_) => "ok (2xx)".into(),
            Outcome::HttpError(status) => format!("http {status}"),
            Outcome::Refused => "refused".into(),
            Outcome::ConnectTimeout => "connect timeout".into(),
            Outcome::RequestTimeout => "request timeout".into(),
            Outcome::Reset => "reset".into(),
            Outcome::EofBeforeResponse => "eof before response".into(),
            Outcome::PartialResponse => "partial response".into(),
            Outcome::ConnectError => "connect error".into(),
        }
    }

    /// The outcome with the status folded for counting (all 2xx are one row).
    pub fn row(self) -> Outcome {
        match self {
            Outcome::Ok(_) => Outcome::Ok(200),
            other => other,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_answers_and_refusals_are_not_drops() {
        assert!(!Outcome::Ok(204).is_drop());
        assert!(!Outcome::Refused.is_drop());
        for drop in [
            Outcome::HttpError(502),
            Outcome::ConnectTimeout,
            Outcome::RequestTimeout,
            Outcome::Reset,
            Outcome::EofBeforeResponse,
            Outcome::PartialResponse,
            Outcome::ConnectError,
        ] {
            assert!(drop.is_drop(), "{drop:?}");
        }
    }
}
