//! How long clients of long-lived connections took to come back after a clean close:
//! from the close frame (or the stream's clean end) to the next connection opened.

use serde::Serialize;

use crate::observation::RequestRecord;
use crate::outcome::Outcome;

/// A reconnection counts as prompt within this many seconds.
pub const PROMPT_RECONNECT: f64 = 2.0;

/// Clean closes and the reconnections after them.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Reconnects {
    /// Connections opened (WebSocket upgrades, SSE streams).
    pub opened: usize,
    /// Clean closes (close frame with 1000/1001/1012, SSE clean end).
    pub clean_closes: usize,
    /// Clean closes followed by a new connection of the same client.
    pub reconnected: usize,
    /// Of those, within [`PROMPT_RECONNECT`] seconds.
    pub reconnected_promptly: usize,
    /// Clean closes early enough in the run (at least [`PROMPT_RECONNECT`] before traffic
    /// ended) that a prompt reconnection was possible.
    pub closes_with_time_to_reconnect: usize,
    /// Slowest reconnection, in seconds.
    pub slowest: Option<f64>,
    /// 99th percentile of the reconnection times, in seconds.
    pub p99: Option<f64>,
}

/// Counts them; `records` are in each client's order (the run appends them so), and
/// `traffic_end` is when traffic stopped, in seconds.
pub fn reconnects(records: &[RequestRecord], traffic_end: f64) -> Reconnects {
    let mut result = Reconnects::default();
    let mut times = Vec::new();
    // The clean close each client has not come back from yet.
    let mut pending: std::collections::HashMap<u32, f64> = std::collections::HashMap::new();
    for r in records {
        match r.outcome {
            Outcome::Opened => {
                result.opened += 1;
                if let Some(closed) = pending.remove(&r.client) {
                    let took = (r.end - closed).max(0.0);
                    if closed + PROMPT_RECONNECT <= traffic_end || took <= PROMPT_RECONNECT {
                        result.closes_with_time_to_reconnect += 1;
                    }
                    result.reconnected += 1;
                    if took <= PROMPT_RECONNECT {
                        result.reconnected_promptly += 1;
                    }
                    times.push(took);
                }
            }
            outcome if outcome.is_clean_close() => {
                result.clean_closes += 1;
                pending.insert(r.client, r.end);
            }
            _ => {}
        }
    }
    result.closes_with_time_to_reconnect += pending
        .values()
        .filter(|&&closed| closed + PROMPT_RECONNECT <= traffic_end)
        .count();
    times.sort_by(f64::total_cmp);
    result.slowest = times.last().copied();
    result.p99 = (!times.is_empty()).then(|| times[(times.len() * 99 / 100).min(times.len() - 1)]);
    result
}

impl Reconnects {
    /// The share of clean closes, among those with time to reconnect, that reconnected
    /// promptly (1 when there were none).
    pub fn prompt_share(&self) -> f64 {
        if self.closes_with_time_to_reconnect == 0 {
            1.0
        } else {
            self.reconnected_promptly as f64 / self.closes_with_time_to_reconnect as f64
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::scenario::Role;

    fn record(client: u32, end: f64, outcome: Outcome) -> RequestRecord {
        RequestRecord {
            client,
            role: Role::Fast,
            start: end,
            end,
            outcome,
        }
    }

    #[test]
    fn a_reconnection_is_timed_from_the_clean_close_to_the_next_open() {
        let records = [
            record(1, 1.0, Outcome::Opened),
            record(1, 5.0, Outcome::ClosedCleanly(1012)),
            record(1, 5.01, Outcome::Refused),
            record(1, 5.3, Outcome::Opened),
            record(2, 1.0, Outcome::Opened),
            record(2, 5.0, Outcome::StreamEnded),
            record(2, 8.0, Outcome::Opened),
            // Closed too late in the run to be expected back.
            record(3, 19.5, Outcome::ClosedCleanly(1001)),
        ];
        let r = reconnects(&records, 20.0);
        assert_eq!(r.opened, 4);
        assert_eq!(r.clean_closes, 3);
        assert_eq!(r.reconnected, 2);
        assert_eq!(r.reconnected_promptly, 1);
        assert_eq!(r.closes_with_time_to_reconnect, 2);
        assert!((r.slowest.unwrap_or_default() - 3.0).abs() < 1e-9);
        assert!((r.prompt_share() - 0.5).abs() < 1e-9);
    }

    #[test]
    fn a_close_never_followed_by_a_connection_counts_against_the_share() {
        let records = [record(1, 2.0, Outcome::ClosedCleanly(1012))];
        assert_eq!(reconnects(&records, 20.0).prompt_share(), 0.0);
    }
}
