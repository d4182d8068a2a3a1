//! Drops tied to the step of a disruption command they followed: a deploy driver prints
//! "app2: SIGTERM", "app2: in rotation again", and each drop is counted against the last
//! step printed before the request failed.

use serde::Serialize;

use crate::observation::CommandRun;

/// The drops that followed one step of a disruption command.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct StepDrops {
    /// When the step was printed, in seconds since traffic started (`None`: drops before
    /// any step).
    pub at: Option<f64>,
    /// The step's line.
    pub step: String,
    /// Requests that failed after this step and before the next one.
    pub dropped: usize,
}

/// Counts each drop (its end time, seconds since traffic started) against the last step
/// printed at or before it; steps with no drop are left out. Steps of every command are
/// taken together, in time order.
pub fn drops_by_step(commands: &[CommandRun], drop_ends: &[f64]) -> Vec<StepDrops> {
    let mut steps: Vec<(f64, &str)> = commands
        .iter()
        .flat_map(|c| c.steps.iter().map(|s| (s.at, s.line.as_str())))
        .collect();
    if steps.is_empty() {
        return Vec::new();
    }
    steps.sort_by(|a, b| a.0.total_cmp(&b.0));
    let mut counts = vec![0usize; steps.len()];
    let mut before_any = 0;
    for &end in drop_ends {
        match steps.partition_point(|&(at, _)| at <= end) {
            0 => before_any += 1,
            n => counts[n - 1] += 1,
        }
    }
    let mut result = Vec::new();
    if before_any > 0 {
        result.push(StepDrops {
            at: None,
            step: "before the first step".into(),
            dropped: before_any,
        });
    }
    result.extend(steps.iter().zip(counts).filter(|(_, n)| *n > 0).map(
        |(&(at, line), dropped)| StepDrops {
            at: Some(at),
            step: line.to_string(),
            dropped,
        },
    ));
    result
}
