//! The verdict of a run, without any I/O: [`judge`] counts what was observed and says
//! what went wrong, from the plan and the observation alone, so every rule is unit-tested.

use std::collections::BTreeMap;

use serde::Serialize;

use crate::observation::{CommandRun, Observation, RequestRecord, ServerExit};
use crate::outcome::Outcome;
use crate::plan::{Disruption, Expectation, Plan};
use crate::scenario::{Role, Scenario};

mod phases;
mod reconnects;
pub use phases::{drops_by_step, StepDrops};
pub use reconnects::{reconnects, Reconnects, PROMPT_RECONNECT};

/// Least share of clean closes that must reconnect within [`PROMPT_RECONNECT`] when the
/// server keeps serving.
pub const MIN_PROMPT_RECONNECT_SHARE: f64 = 0.999;

/// How soon after a worker's SIGKILL a failed request counts as in flight on that worker.
pub const KILLED_IN_FLIGHT_WINDOW: f64 = 0.25;

/// Counts of one outcome before and after the signal.
#[derive(Debug, Clone, Serialize)]
pub struct Row {
    /// The outcome (2xx folded into one row).
    pub outcome: Outcome,
    /// Its label.
    pub label: String,
    /// Requests started before the signal.
    pub before_signal: usize,
    /// Requests started at or after the signal.
    pub after_signal: usize,
}

/// The verdict and the numbers behind it.
#[derive(Debug, Clone, Serialize)]
pub struct Summary {
    /// Traffic shape.
    pub scenario: Scenario,
    /// The server command as run.
    pub server_command: Vec<String>,
    /// Signal sent.
    pub signal: String,
    /// Seconds after traffic start when the signal was sent (the first one, if repeated).
    pub signal_at: f64,
    /// Every time the disruption was carried out, in seconds since traffic start.
    pub disruptions: Vec<f64>,
    /// What the server was expected to do.
    pub expectation: Expectation,
    /// Requests of ordinary clients.
    pub total: usize,
    /// Answered with 2xx (long-lived scenarios: messages echoed, events received).
    pub ok: usize,
    /// Refused (clean): connections refused, and HTTP/2 streams refused unprocessed.
    pub refused: usize,
    /// Lost: anything but ok and refused.
    pub dropped: usize,
    /// Requests that were in flight on a worker the harness SIGKILLed (they fail by
    /// construction; reported apart from drops): failed with a reset, EOF or partial
    /// response within [`KILLED_IN_FLIGHT_WINDOW`] after the kill. A request may have
    /// started just after `kill()` returned: the dying worker accepts until the kernel
    /// actually stops it.
    pub killed_in_flight: usize,
    /// Slow requests (stuck on purpose) that did not complete: cut by the server's deadline.
    pub slow_not_completed: usize,
    /// Slow requests that completed.
    pub slow_completed: usize,
    /// Seconds from the signal to the first drop.
    pub first_drop_after_signal: Option<f64>,
    /// Seconds from the signal to the last drop.
    pub last_drop_after_signal: Option<f64>,
    /// Requests answered with 2xx per second before the signal (the harness's throughput).
    pub ok_per_sec_before_signal: f64,
    /// How the server ended.
    pub server_exit: ServerExit,
    /// Workers the server had at the end (when `--expect-workers` asked).
    pub workers_at_end: Option<usize>,
    /// Most worker processes (children of the launched process) seen at once during the
    /// run, sampled every 50 ms.
    pub max_workers: Option<usize>,
    /// Long-lived scenarios: clean closes and how fast clients came back.
    pub reconnects: Option<Reconnects>,
    /// Processes of the server's group still running after it exited.
    pub orphans: Vec<u32>,
    /// One row per outcome.
    pub rows: Vec<Row>,
    /// The disruption commands that ran (`--disrupt`).
    pub commands: Vec<CommandRun>,
    /// The drops counted against the command step each followed (empty without steps).
    pub drops_by_step: Vec<StepDrops>,
    /// Why the run failed; empty when it passed.
    pub failures: Vec<String>,
}

/// Counts what was observed and judges it against the plan. The only place that decides
/// whether a run failed.
pub fn judge(plan: &Plan, observation: &Observation) -> Summary {
    let records = &observation.records;
    let disruptions = &observation.disruptions;
    let signal_at = disruptions
        .first()
        .copied()
        .unwrap_or(plan.signal_after.as_secs_f64());
    let killed_in_flight = |r: &RequestRecord| {
        plan.disruptions.contains(&Disruption::KillWorker)
            && matches!(
                r.outcome,
                Outcome::Reset | Outcome::EofBeforeResponse | Outcome::PartialResponse
            )
            && disruptions
                .iter()
                .any(|&k| (k..k + KILLED_IN_FLIGHT_WINDOW).contains(&r.end))
    };
    let fast = || records.iter().filter(|r| r.role == Role::Fast);
    let mut rows: BTreeMap<Outcome, (usize, usize)> = BTreeMap::new();
    for r in fast() {
        let row = rows.entry(r.outcome.row()).or_default();
        if r.start < signal_at {
            row.0 += 1;
        } else {
            row.1 += 1;
        }
    }
    let drop_ends: Vec<f64> = fast()
        .filter(|r| r.outcome.is_drop() && !killed_in_flight(r))
        .map(|r| r.end)
        .collect();
    let drops: Vec<f64> = drop_ends.iter().map(|end| end - signal_at).collect();
    let slow: Vec<&RequestRecord> = records.iter().filter(|r| r.role == Role::Slow).collect();
    let total = fast().count();
    let mut summary = Summary {
        scenario: plan.scenario,
        server_command: observation.server_command.clone(),
        signal: plan.disruption_label(),
        signal_at,
        disruptions: disruptions.clone(),
        expectation: plan.expectation,
        killed_in_flight: fast().filter(|r| killed_in_flight(r)).count(),
        total,
        ok: fast().filter(|r| r.outcome.is_answer()).count(),
        refused: fast()
            .filter(|r| matches!(r.outcome, Outcome::Refused | Outcome::StreamRefused))
            .count(),
        dropped: drops.len(),
        slow_not_completed: slow.iter().filter(|r| r.outcome.is_drop()).count(),
        slow_completed: slow
            .iter()
            .filter(|r| matches!(r.outcome, Outcome::Ok(_)))
            .count(),
        first_drop_after_signal: drops.iter().copied().reduce(f64::min),
        last_drop_after_signal: drops.iter().copied().reduce(f64::max),
        ok_per_sec_before_signal: fast()
            .filter(|r| r.start < signal_at && r.outcome.is_answer())
            .count() as f64
            / signal_at.max(0.001),
        server_exit: observation.exit.clone(),
        workers_at_end: observation.workers_at_end,
        max_workers: observation.max_workers,
        reconnects: plan.scenario.is_long_lived().then(|| {
            let last_end = records.iter().map(|r| r.end).fold(0.0, f64::max);
            reconnects(records, last_end.max(plan.duration.as_secs_f64()))
        }),
        orphans: observation.orphans.clone(),
        rows: rows
            .into_iter()
            .map(|(outcome, (before, after))| Row {
                outcome,
                label: outcome.label(),
                before_signal: before,
                after_signal: after,
            })
            .collect(),
        commands: observation.commands.clone(),
        drops_by_step: drops_by_step(&observation.commands, &drop_ends),
        failures: Vec::new(),
    };
    summary.failures = failures(&summary, plan, observation);
    summary
}

/// Why the run failed, from the counts and the plan; empty when it passed.
fn failures(s: &Summary, plan: &Plan, observation: &Observation) -> Vec<String> {
    let mut failures = Vec::new();
    if s.dropped > 0 {
        failures.push(format!("{} requests dropped", s.dropped));
    }
    if s.ok == 0 {
        failures.push("no request was answered".into());
    }
    if !s.orphans.is_empty() {
        failures.push(format!("{} processes left behind", s.orphans.len()));
    }
    let max_exit = plan.max_exit_after.as_secs_f64();
    match (&s.server_exit, plan.expectation) {
        (ServerExit::ExitedBeforeSignal { status }, _) => {
            failures.push(format!("the server exited before the signal ({status})"));
        }
        (ServerExit::DidNotExit, _) => failures.push(format!(
            "the server did not exit within {max_exit:.1} s of the signal"
        )),
        (ServerExit::Exited { after_signal, .. }, Expectation::Exits) => {
            if *after_signal > max_exit {
                failures.push(format!("the server took {after_signal:.3} s to exit"));
            }
        }
        (ServerExit::Exited { after_signal, .. }, _) => failures.push(format!(
            "the server exited {after_signal:.3} s after {} instead of serving on",
            s.signal
        )),
        (ServerExit::KeptServing, Expectation::KeepsServing)
        | (ServerExit::HandedOver { .. }, Expectation::HandsOver)
        | (ServerExit::NotLaunched, Expectation::RequestsOnly) => {}
        (other, expected) => failures.push(format!("expected {expected:?}, got {other:?}")),
    }
    let refusals_expected = matches!(
        plan.expectation,
        Expectation::Exits | Expectation::RequestsOnly
    );
    if !refusals_expected && s.refused > 0 {
        failures.push(format!(
            "{} connections refused while the server should have kept serving",
            s.refused
        ));
    }
    if let Some(r) = &s.reconnects {
        let serving = matches!(
            plan.expectation,
            Expectation::KeepsServing | Expectation::HandsOver
        );
        if serving && r.prompt_share() < MIN_PROMPT_RECONNECT_SHARE {
            failures.push(format!(
                "{} of {} clean closes reconnected within {PROMPT_RECONNECT} s (at least {:.1} % must)",
                r.reconnected_promptly,
                r.closes_with_time_to_reconnect,
                MIN_PROMPT_RECONNECT_SHARE * 100.0
            ));
        }
    }
    if let (Some(expected), Some(found)) = (plan.expect_workers, s.workers_at_end) {
        if found != expected {
            failures.push(format!("{found} workers at the end, expected {expected}"));
        }
    }
    for command in s.commands.iter().filter(|c| !c.success) {
        let last_line = command.output.lines().rev().find(|l| !l.trim().is_empty());
        failures.push(format!(
            "the disruption command `{}` failed ({}){}",
            command.command,
            command.status,
            last_line
                .map(|l| format!(": {}", l.trim()))
                .unwrap_or_default()
        ));
    }
    if observation.final_stop_failed {
        failures.push(format!(
            "the server did not exit within {:.1} s of the final SIGTERM",
            plan.max_exit_after.as_secs_f64()
        ));
    }
    failures
}

#[cfg(test)]
mod tests;
