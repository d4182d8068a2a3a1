//! How one request ended, classified so that a drop can never pass for a clean refusal.

use serde::Serialize;

/// How one request ended.
///
/// Only [`Outcome::Ok`], [`Outcome::Refused`] and [`Outcome::StreamRefused`] are acceptable
/// during a stop: the first is an answer, the others are the server saying "not here" at
/// once, before it processed anything, which every client and load balancer retries
/// elsewhere. Everything else is a drop: the client waited in vain, or its request may or
/// may not have been processed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case", tag = "kind", content = "status")]
pub enum Outcome {
    /// A response with an accepted status (2xx unless `--ok-status` says more), read in full.
    Ok(u16),
    /// A complete response with another status (e.g. a 502 from a proxy).
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
    /// HTTP/2: the server refused the stream (REFUSED_STREAM, or it was above a GOAWAY's
    /// last stream), or the client library never sent it (the connection had just got
    /// GOAWAY): never processed, retriable, like a refused connection.
    StreamRefused,
    /// HTTP/2: the server reset the stream for another reason.
    StreamReset,
    /// The TLS handshake failed (certificate, protocol), not because the connection ended.
    TlsHandshakeFailed,
    /// Any other client error (reported as is by a client library).
    OtherError,
    /// A long-lived connection was opened: WebSocket upgrade (101) or SSE stream (200)
    /// answered. Not a request of its own; reconnect times are measured to it.
    Opened,
    /// A WebSocket message echoed back, or an SSE event received: an answer.
    Message,
    /// The server closed a WebSocket with a close frame and a code that says "come back"
    /// (1000 normal, 1001 going away, 1012 service restart): clean, the client reconnects.
    ClosedCleanly(u16),
    /// An SSE stream ended at an event boundary with a clean end of the body: clean.
    StreamEnded,
    /// The server closed a WebSocket with another code (1011 internal error, 1009 too big...).
    ClosedWithCode(u16),
    /// The WebSocket's TCP connection ended without a close frame (code 1006).
    ClosedWithoutFrame,
    /// An SSE stream ended in the middle of an event.
    CutMidEvent,
    /// An SSE stream ended between events but without the body's clean end (the connection
    /// was cut, or closed without the last chunk).
    StreamCut,
    /// An SSE stream resumed with `Last-Event-ID` skipped event ids.
    EventsMissing,
}

impl Outcome {
    /// Whether this outcome loses a request.
    pub fn is_drop(self) -> bool {
        !matches!(
            self,
            Outcome::Ok(_)
                | Outcome::Refused
                | Outcome::StreamRefused
                | Outcome::Opened
                | Outcome::Message
                | Outcome::ClosedCleanly(_)
                | Outcome::StreamEnded
        )
    }

    /// Whether this outcome is an answer (counted as ok).
    pub fn is_answer(self) -> bool {
        matches!(self, Outcome::Ok(_) | Outcome::Message)
    }

    /// Whether this outcome is a clean end of a long-lived connection.
    pub fn is_clean_close(self) -> bool {
        matches!(self, Outcome::ClosedCleanly(_) | Outcome::StreamEnded)
    }

    /// A complete response with `status`: answered if `ok` accepts it.
    pub fn of_status(status: u16, ok: &crate::request::OkStatus) -> Outcome {
        if ok.accepts(status) {
            Outcome::Ok(status)
        } else {
            Outcome::HttpError(status)
        }
    }

    /// A short label for tables and the timeline.
    pub fn label(self) -> String {
        match self {
            Outcome::Ok(_) => "ok".into(),
            Outcome::HttpError(status) => format!("http {status}"),
            Outcome::Refused => "refused".into(),
            Outcome::ConnectTimeout => "connect timeout".into(),
            Outcome::RequestTimeout => "request timeout".into(),
            Outcome::Reset => "reset".into(),
            Outcome::EofBeforeResponse => "eof before response".into(),
            Outcome::PartialResponse => "partial response".into(),
            Outcome::ConnectError => "connect error".into(),
            Outcome::StreamRefused => "stream refused".into(),
            Outcome::StreamReset => "stream reset".into(),
            Outcome::TlsHandshakeFailed => "tls handshake failed".into(),
            Outcome::OtherError => "other error".into(),
            Outcome::Opened => "opened".into(),
            Outcome::Message => "message".into(),
            Outcome::ClosedCleanly(code) => format!("close {code}"),
            Outcome::StreamEnded => "stream ended".into(),
            Outcome::ClosedWithCode(code) => format!("close {code}"),
            Outcome::ClosedWithoutFrame => "closed, no frame (1006)".into(),
            Outcome::CutMidEvent => "cut mid-event".into(),
            Outcome::StreamCut => "stream cut".into(),
            Outcome::EventsMissing => "events missing".into(),
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
        assert!(!Outcome::StreamRefused.is_drop());
        assert!(!Outcome::ClosedCleanly(1012).is_drop());
        assert!(!Outcome::StreamEnded.is_drop());
        assert!(!Outcome::Message.is_drop());
        for drop in [
            Outcome::HttpError(502),
            Outcome::ConnectTimeout,
            Outcome::RequestTimeout,
            Outcome::Reset,
            Outcome::EofBeforeResponse,
            Outcome::PartialResponse,
            Outcome::ConnectError,
            Outcome::StreamReset,
            Outcome::TlsHandshakeFailed,
            Outcome::OtherError,
            Outcome::ClosedWithCode(1011),
            Outcome::ClosedWithoutFrame,
            Outcome::CutMidEvent,
            Outcome::StreamCut,
            Outcome::EventsMissing,
        ] {
            assert!(drop.is_drop(), "{drop:?}");
        }
    }
}
