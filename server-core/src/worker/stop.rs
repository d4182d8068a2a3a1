//! How a worker learns that it must stop, and how long it has.

use std::time::Duration;

use tokio::io::AsyncReadExt;
use tokio::net::unix::OwnedReadHalf;
use tokio::signal::unix::{signal, SignalKind};

use tokio_util::sync::CancellationToken;

use crate::control::{ToWorker, TO_WORKER_LEN};
use crate::draining::DrainReason;

/// How the worker stops.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum StopRequest {
    /// Drain, then exit; abort what is left after `within`.
    Graceful {
        /// Time left before the deadline.
        within: Duration,
        /// Why, for the app's long-lived connections.
        reason: DrainReason,
    },
}

/// Waits for the first stop request: a message from the supervisor, the supervisor's end of
/// the channel closing (it died; PR_SET_PDEATHSIG normally kills us first), or a SIGTERM sent
/// to this worker alone (an operator removing one worker by hand).
///
/// An `Unready` message on the way cancels `unready` (the readiness route turns 503) and
/// the wait goes on.
pub(crate) async fn wait_for_stop(
    mut control: OwnedReadHalf,
    own_timeout: Duration,
    unready: CancellationToken,
) -> StopRequest {
    let mut sigterm = signal(SignalKind::terminate()).ok();
    let sigterm_received = async {
        match sigterm.as_mut() {
            Some(s) => {
                s.recv().await;
            }
            None => std::future::pending().await,
        }
    };
    let from_parent = async {
        let mut buf = [0u8; TO_WORKER_LEN];
        loop {
            let read = control.read_exact(&mut buf).await;
            match read.ok().and_then(|_| ToWorker::decode(buf)) {
                Some(ToWorker::Stop { within, reason }) => {
                    return StopRequest::Graceful { within, reason }
                }
                Some(ToWorker::Unready) => {
                    tracing::info!("readiness route answers 503 from now on");
                    unready.cancel();
                }
                None => {
                    tracing::warn!("lost the supervisor's channel; stopping");
                    return StopRequest::Graceful {
                        within: own_timeout,
                        reason: DrainReason::Stop,
                    };
                }
            }
        }
    };
    tokio::select! {
        request = from_parent => request,
        // A SIGTERM to this worker alone: the supervisor replaces it.
        () = sigterm_received => StopRequest::Graceful {
            within: own_timeout,
            reason: DrainReason::Recycle,
        },
    }
}
