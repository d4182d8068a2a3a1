//! What a worker tells its supervisor while it serves: heartbeats and a spent quota.

use std::collections::hash_map::RandomState;
use std::hash::BuildHasher;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use tokio::io::AsyncWriteExt;
use tokio::net::unix::OwnedWriteHalf;
use tokio::sync::Notify;

use crate::control::{ToParent, HEARTBEAT_INTERVAL};

/// Counts requests against the worker's quota (`--limit-max-requests`).
#[derive(Debug)]
pub(crate) struct RequestQuota {
    served: AtomicU64,
    limit: u64,
    reached: Notify,
}

impl RequestQuota {
    /// A quota of `max` requests plus a random share of `jitter`, so that workers started
    /// together are not all replaced together.
    pub(crate) fn new(max: u64, jitter: u64) -> Self {
        let random = RandomState::new().hash_one(std::process::id());
        let extra = if jitter == 0 {
            0
        } else {
            random % (jitter + 1)
        };
        Self {
            served: AtomicU64::new(0),
            limit: max.saturating_add(extra).max(1),
            reached: Notify::new(),
        }
    }

    /// Counts one request; the one that reaches the limit wakes the reporter.
    pub(crate) fn count(&self) {
        if self.served.fetch_add(1, Ordering::Relaxed) + 1 == self.limit {
            self.reached.notify_one();
        }
    }
}

/// Sends a heartbeat every [`HEARTBEAT_INTERVAL`] from the worker's runtime (so a runtime
/// blocked by a handler stops beating, and a runtime merely busy with slow requests does
/// not), and a one-time "quota reached" message. Ends when the supervisor's end closes.
pub(crate) async fn report_to_parent(
    mut control: OwnedWriteHalf,
    quota: Option<Arc<RequestQuota>>,
    liveness: Option<crate::app::Liveness>,
) {
    let mut ticks = tokio::time::interval(HEARTBEAT_INTERVAL);
    let mut quota_pending = quota.is_some();
    loop {
        let message = tokio::select! {
            _ = ticks.tick() => {
                if liveness.as_ref().is_some_and(|alive| !alive()) {
                    continue;
                }
                ToParent::Heartbeat
            }
            () = async {
                match &quota {
                    Some(q) => q.reached.notified().await,
                    None => std::future::pending().await,
                }
            }, if quota_pending => {
                quota_pending = false;
                ToParent::QuotaReached
            }
        };
        if control.write_all(&[message.encode()]).await.is_err() {
            return;
        }
    }
}
