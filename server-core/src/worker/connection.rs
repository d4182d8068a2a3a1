//! Serving one accepted connection, and draining it when the worker stops.

use std::sync::Arc;
use std::time::Duration;

use hyper_util::rt::TokioIo;
use hyper_util::server::conn::auto;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio_util::sync::CancellationToken;

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
}

/// Serves `stream` until the client leaves, the drain closes it, or the deadline aborts it.
///
/// On drain: a request in flight finishes and its response carries `Connection: close`
/// (see [`WorkerService`]); an idle connection gets `idle_drain_grace` for a request its
/// client may be sending right now, then hyper's graceful shutdown closes it (HTTP/2: GOAWAY
/// and the open streams finish).
pub(crate) async fn serve_connection<I>(
    stream: I,
    service: WorkerService,
    context: Arc<ConnectionContext>,
) where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let connection = context
        .builder
        .serve_connection_with_upgrades(TokioIo::new(stream), service);
    tokio::pin!(connection);
    tokio::select! {
        result = connection.as_mut() => return log_connection_end(result),
        () = context.draining.cancelled() => {}
        () = context.abort.cancelled() => return,
    }
    tokio::select! {
        result = connection.as_mut() => return log_connection_end(result),
        () = tokio::time::sleep(context.idle_drain_grace) => connection.as_mut().graceful_shutdown(),
        () = context.abort.cancelled() => return,
    }
    tokio::select! {
        result = connection.as_mut() => log_connection_end(result),
        () = context.abort.cancelled() => {}
    }
}

fn log_connection_end(result: Result<(), Box<dyn std::error::Error + Send + Sync>>) {
    if let Err(e) = result {
        tracing::debug!("connection ended with an error: {e}");
    }
}
