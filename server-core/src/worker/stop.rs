//! How a worker learns that it must stop, and how long it has.

use std::time::Duration;

use tokio::io::AsyncReadExt;
use tokio::net::unix::OwnedReadHalf;
use tokio::signal::unix::{signal, SignalKind};

use crate::control::{ToWorker, TO_WORKER_LEN};

/// Why the worker stops.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum StopRequest {
    /// Drain, then exit; abort what is left after this long.
    Graceful(Duration),
}

/// Waits for the first stop request: a message from the supervisor, the supervisor's end of
/// the channel closing (it died; PR_SET_PDEATHSIG normally kills us first), or a SIGTERM sent
/// to this worker alone (an operator removing one worker by hand).
pub(crate) async fn wait_for_stop(
    mut control: OwnedReadHalf,
    own_timeout: Duration,
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
    let mut buf = [0u8; TO_WORKER_LEN];
    tokio::select! {
        read = control.read_exact(&mut buf) => match read.ok().and_then(|_| ToWorker::decode(buf)) {
            Some(ToWorker::Stop { within }) => StopRequest::Graceful(within),
            None => {
                tracing::warn!("lost the supervisor's channel; stopping");
                StopRequest::Graceful(own_timeout)
            }
        },
        () = sigterm_received => StopRequest::Graceful(own_timeout),
    }
}
