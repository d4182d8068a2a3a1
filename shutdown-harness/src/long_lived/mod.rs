//! Clients of long-lived connections: a WebSocket that echoes messages and an SSE stream
//! that resumes with `Last-Event-ID`. Each records one [`Outcome::Opened`] per connection,
//! one [`Outcome::Message`] per echo or event, and how the connection ended, so the judge
//! can tell a clean close (a close frame, a clean end of the stream) from a drop, and
//! measure how long each client took to reconnect.

pub mod sse;
mod sse_parser;
pub mod websocket;

use std::time::{Duration, Instant};

use crate::observation::RequestRecord;
use crate::outcome::Outcome;
use crate::traffic::Client;

/// Most connections one client opens in a run (every loop is bounded in count).
const MAX_CONNECTIONS_PER_CLIENT: usize = 100_000;
/// Pause of a client after a refused or failed connection (a real client backs off).
const RETRY_PAUSE: Duration = Duration::from_millis(100);

/// A client's records, with the times of each relative to the run's start.
struct Log<'a> {
    client: &'a Client,
    records: Vec<RequestRecord>,
}

impl<'a> Log<'a> {
    fn new(client: &'a Client) -> Self {
        Self {
            client,
            records: Vec::new(),
        }
    }

    /// Records `outcome` for something that started at `start` and ended now.
    fn push(&mut self, start: Instant, outcome: Outcome) {
        self.records.push(self.client.record(start, outcome));
    }

    fn full(&self) -> bool {
        self.records.len() >= crate::traffic::MAX_REQUESTS_PER_CLIENT
    }
}

/// How long a client waits before it reconnects after a connection ended this way.
fn pause_after(outcome: Outcome, hint: Option<Duration>, interval: Duration) -> Duration {
    match outcome {
        // A clean close asks the client to come back at once (SSE: after the server's hint,
        // capped so that a server cannot park the run).
        Outcome::ClosedCleanly(_) => Duration::ZERO,
        Outcome::StreamEnded => hint.unwrap_or(Duration::ZERO).min(Duration::from_secs(5)),
        Outcome::Refused | Outcome::StreamRefused => RETRY_PAUSE,
        _ => interval.max(RETRY_PAUSE),
    }
}

/// Resolves when traffic ends (holds no lock across the wait, so a select's other branch
/// may await freely).
async fn until_stopped(stopped: &mut tokio::sync::watch::Receiver<bool>) {
    let _ = stopped.wait_for(|stop| *stop).await;
}
