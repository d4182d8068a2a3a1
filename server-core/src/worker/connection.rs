//! Serving one accepted connection: its idle timeout, and its drain when the worker stops.

use std::sync::Arc;
use std::time::Duration;

use hyper_util::rt::TokioIo;
use hyper_util::server::conn::auto;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::activity::Activity;
use super::service::WorkerService;

/// What every connection of a worker shares.
pub(crate) struct ConnectionContext {
    /// HTTP/1 and HTTP/2 connection settings.
    pub(crate) builder: auto::Builder<hyper_util::rt::TokioExecutor>,
    /// Cancelled when the worker starts draining.
    pub(crate) draining: CancellationToken,
    /// Cancelled when the graceful deadline has passed: drop the connection.
    pub(crate) abort: CancellationToken,
    /// Cancelled when the readiness route must answer 503 (`--shutdown-delay`).
    pub(crate) unready: CancellationToken,
    /// How long an idle connection is kept open once draining starts.
    pub(crate) idle_drain_grace: Duration,
    /// How long a connection may sit with no request in flight after its first request
    /// (keep-alive idle, or a client slow to send its next head).
    pub(crate) keep_alive_timeout: Duration,
    /// How long a new connection may take to complete its first request head.
    pub(crate) header_read_timeout: Duration,
}

/// Why a connection stops serving normally.
enum Ending {
    /// Nothing in flight for the keep-alive timeout.
    IdledOut,
    /// The worker drains.
    Drain,
}

/// Serves `stream` until the client leaves, the connection idles out, the drain closes it,
/// or the deadline aborts it.
///
/// On drain: a request in flight finishes and its response carries `Connection: close`
/// (see [`WorkerService`]); an idle HTTP/1 connection gets `idle_drain_grace` for a request
/// its client may be sending right now, then hyper's graceful shutdown closes it. HTTP/2
/// gets GOAWAY at once and its open streams finish. A request head only partly received is
/// dropped, so a stop never waits for a client that has not sent a complete request.
pub(crate) async fn serve_connection<I>(
    stream: I,
    service: WorkerService,
    context: Arc<ConnectionContext>,
) where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let activity = Arc::clone(&service.activity);
    let connection = context
        .builder
        .serve_connection_with_upgrades(TokioIo::new(stream), service);
    tokio::pin!(connection);
    let limit = |activity: &Activity| {
        if activity.is_fresh() {
            context.header_read_timeout
        } else {
            context.keep_alive_timeout
        }
    };
    let idle_timer = tokio::time::sleep(limit(&activity));
    tokio::pin!(idle_timer);
    let ending = loop {
        tokio::select! {
            biased;
            result = connection.as_mut() => return log_connection_end(result),
            () = &mut idle_timer => {
                let limit = limit(&activity);
                match activity.idle_for() {
                    Some(idle) if idle >= limit => break Ending::IdledOut,
                    Some(idle) => idle_timer.as_mut().reset(Instant::now() + (limit - idle)),
                    None => idle_timer.as_mut().reset(Instant::now() + limit),
                }
            }
            () = context.draining.cancelled() => break Ending::Drain,
            () = context.abort.cancelled() => return,
        }
    };
    // HTTP/2 has no race to wait out: GOAWAY tells the client which streams were taken.
    if let (Ending::Drain, false) = (ending, activity.is_http2()) {
        tokio::select! {
            biased;
            result = connection.as_mut() => return log_connection_end(result),
            () = tokio::time::sleep(context.idle_drain_grace) => {}
            () = context.abort.cancelled() => return,
        }
    }
    connection.as_mut().graceful_shutdown();
    loop {
        tokio::select! {
            biased;
            result = connection.as_mut() => return log_connection_end(result),
            () = context.abort.cancelled() => return,
            () = tokio::time::sleep(UNFINISHED_HEAD_CHECK) => {
                // hyper closes an idle keep-alive connection at once, but waits for a
                // request head it has only partly received (or not at all, on a fresh
                // connection). With nothing in flight, nothing is owed: close it.
                if activity.idle_for().is_some() {
                    return;
                }
            }
        }
    }
}

/// After asking hyper to close, how often to check whether the connection only waits for
/// a request head that its client is not sending.
const UNFINISHED_HEAD_CHECK: Duration = Duration::from_millis(100);

fn log_connection_end(result: Result<(), Box<dyn std::error::Error + Send + Sync>>) {
    if let Err(e) = result {
        tracing::debug!("connection ended with an error: {e}");
    }
}
