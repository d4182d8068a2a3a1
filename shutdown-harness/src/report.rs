//! A judged run: the summary, every request, and the text printed at the end.

use std::fmt::Write as _;

use serde::Serialize;

use crate::judge::{judge, Summary};
use crate::observation::{Observation, RequestRecord, ServerExit};
use crate::plan::Plan;

/// The whole result: summary plus every request.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    /// The verdict and counts.
    pub summary: Summary,
    /// Every request, in the order clients finished.
    pub requests: Vec<RequestRecord>,
    /// Seconds of traffic in all (for the timeline): the plan's, or longer if traffic
    /// went on until a disruption command had ended.
    pub duration: f64,
}

impl Report {
    /// Judges an observation against its plan.
    pub fn new(plan: &Plan, observation: Observation) -> Self {
        let summary = judge(plan, &observation);
        // Traffic may outlast the plan's duration (a disruption command that ran long).
        let last_end = observation
            .records
            .iter()
            .map(|r| r.end)
            .fold(0.0, f64::max);
        Self {
            summary,
            requests: observation.records,
            duration: plan.duration.as_secs_f64().max(last_end),
        }
    }

    /// Whether the server lost nothing and stopped as it should.
    pub fn passed(&self) -> bool {
        self.summary.failures.is_empty()
    }

    /// The human-readable report; its last line starts with `dropped=`.
    pub fn text(&self) -> String {
        let s = &self.summary;
        let mut out = String::new();
        let _ = writeln!(
            out,
            "scenario: {:?}   server: {}",
            s.scenario,
            s.server_command.join(" ")
        );
        let times: Vec<String> = s.disruptions.iter().map(|t| format!("{t:.2}")).collect();
        let _ = writeln!(out, "signal: {} at {} s", s.signal, times.join(", "));
        write_commands(&mut out, s);
        write_table(&mut out, s);
        write_notes(&mut out, s);
        let _ = writeln!(out, "server: {}", describe_exit(&s.server_exit));
        if let Some(n) = s.workers_at_end {
            let _ = writeln!(out, "workers at the end: {n}");
        }
        if let Some(n) = s.max_workers {
            let _ = writeln!(out, "most worker processes at once: {n}");
        }
        if let Some(r) = &s.reconnects {
            write_reconnects(&mut out, r);
        }
        if !s.orphans.is_empty() {
            let _ = writeln!(out, "orphans left behind (killed): {:?}", s.orphans);
        }
        for failure in &s.failures {
            let _ = writeln!(out, "FAIL: {failure}");
        }
        out.push_str(&self.last_line());
        out
    }

    /// The line scripts read: `dropped=N ok=N ... verdict=PASS`.
    pub fn last_line(&self) -> String {
        let s = &self.summary;
        let exit_after = match &s.server_exit {
            ServerExit::Exited { after_signal, .. } | ServerExit::HandedOver { after_signal } => {
                format!("{after_signal:.3}s")
            }
            _ => "-".into(),
        };
        format!(
            "dropped={} ok={} refused={} total={} ok_rps_before_signal={:.0} exit_after={exit_after} verdict={}",
            s.dropped,
            s.ok,
            s.refused,
            s.total,
            s.ok_per_sec_before_signal,
            if self.passed() { "PASS" } else { "FAIL" }
        )
    }
}

/// Most steps of one command listed in the text report (all are in the JSON).
const STEPS_SHOWN: usize = 40;

/// Each disruption command: when it ran and how it ended, its timed steps with the drops
/// that followed each, and the output of a failed one.
fn write_commands(out: &mut String, s: &Summary) {
    let before_any = s.drops_by_step.iter().find(|d| d.at.is_none());
    if let Some(d) = before_any {
        let _ = writeln!(out, "{} dropped before the first command step", d.dropped);
    }
    for c in &s.commands {
        let _ = writeln!(
            out,
            "command `{}`: {:.2} s to {:.2} s, {}",
            c.command, c.started, c.ended, c.status
        );
        for step in c.steps.iter().take(STEPS_SHOWN) {
            let dropped = s
                .drops_by_step
                .iter()
                .find(|d| d.at == Some(step.at) && d.step == step.line)
                .map(|d| format!("  <- {} dropped after it", d.dropped))
                .unwrap_or_default();
            let _ = writeln!(out, "  {:8.3} s  {}{dropped}", step.at, step.line);
        }
        if c.steps.len() > STEPS_SHOWN {
            let _ = writeln!(out, "  ... {} more steps", c.steps.len() - STEPS_SHOWN);
        }
        // The end of a failed command's output, unless its steps above already list it.
        let listed = !c.steps.is_empty() && c.steps.len() <= STEPS_SHOWN;
        if !c.success && !listed && !c.output.trim().is_empty() {
            for line in c
                .output
                .lines()
                .rev()
                .take(20)
                .collect::<Vec<_>>()
                .into_iter()
                .rev()
            {
                let _ = writeln!(out, "  | {line}");
            }
        }
    }
}

/// One row per outcome, before and after the signal; drops are marked.
fn write_table(out: &mut String, s: &Summary) {
    let _ = writeln!(
        out,
        "{:<22} {:>14} {:>14}",
        "outcome", "before signal", "after signal"
    );
    for row in &s.rows {
        let mark = if row.outcome.is_drop() {
            "  <- drop"
        } else {
            ""
        };
        let _ = writeln!(
            out,
            "{:<22} {:>14} {:>14}{mark}",
            row.label, row.before_signal, row.after_signal
        );
    }
}

/// When the drops happened, and the requests reported apart from drops.
fn write_notes(out: &mut String, s: &Summary) {
    if let (Some(first), Some(last)) = (s.first_drop_after_signal, s.last_drop_after_signal) {
        let _ = writeln!(
            out,
            "drops from {first:+.3} s to {last:+.3} s after the signal"
        );
    }
    if s.killed_in_flight > 0 {
        let _ = writeln!(
            out,
            "in flight on the killed worker (failed by construction, not counted as drops): {}",
            s.killed_in_flight
        );
    }
    if s.slow_completed + s.slow_not_completed > 0 {
        let _ = writeln!(
            out,
            "slow requests: {} completed, {} cut short (by the server's graceful deadline)",
            s.slow_completed, s.slow_not_completed
        );
    }
}

/// Long-lived connections: clean closes and how fast clients came back.
fn write_reconnects(out: &mut String, r: &crate::judge::Reconnects) {
    let ms = |secs: Option<f64>| secs.map_or("-".into(), |s| format!("{:.0} ms", s * 1000.0));
    let _ = writeln!(
        out,
        "connections opened: {}, clean closes: {}, reconnected: {} ({} within {} s; p99 {}, slowest {})",
        r.opened,
        r.clean_closes,
        r.reconnected,
        r.reconnected_promptly,
        crate::judge::PROMPT_RECONNECT,
        ms(r.p99),
        ms(r.slowest)
    );
}

/// How the server ended, in words.
fn describe_exit(exit: &ServerExit) -> String {
    match exit {
        ServerExit::Exited {
            after_signal,
            status,
        } => format!("exited {after_signal:.3} s after the signal ({status})"),
        ServerExit::ExitedBeforeSignal { status } => {
            format!("exited before the signal ({status})")
        }
        ServerExit::DidNotExit => "did not exit in time; killed".into(),
        ServerExit::KeptServing => "kept serving through the signal".into(),
        ServerExit::NotLaunched => "not launched by the harness (only requests are judged)".into(),
        ServerExit::HandedOver { after_signal } => format!(
            "handed over: the old parent exited {after_signal:.3} s after the signal, the new generation served on"
        ),
    }
}
