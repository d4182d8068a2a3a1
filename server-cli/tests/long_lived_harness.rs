//! The harness's `websocket` and `sse` scenarios against server-cli's demo app: every
//! stop, restart, scale-down, hand-over and recycle ends each long-lived connection
//! cleanly (1001 at a stop, 1012 otherwise; SSE at an event boundary), clients come back
//! at once when the server serves on, and nothing is dropped. And the harness sees the
//! drops of a server that does cut them (plain axum).

#![allow(clippy::unwrap_used)]

mod common;

use std::time::Duration;

use common::harness::{plan_with, run};
use nix::sys::signal::Signal;
use shutdown_harness::judge::Summary;
use shutdown_harness::{
    Disruption, Expectation, Outcome, Plan, Scenario, ServerCommand, Target, TrafficOverrides,
};

/// How many records had `outcome` (before and after the signal).
fn count(summary: &Summary, outcome: Outcome) -> usize {
    summary
        .rows
        .iter()
        .filter(|row| row.outcome == outcome)
        .map(|row| row.before_signal + row.after_signal)
        .sum()
}

/// Every record that ended a connection (not a refusal, a message or a response).
fn closes(summary: &Summary) -> Vec<(String, usize)> {
    summary
        .rows
        .iter()
        .filter(|row| {
            !matches!(
                row.outcome,
                Outcome::Opened | Outcome::Message | Outcome::Refused | Outcome::Ok(_)
            )
        })
        .map(|row| (row.label.clone(), row.before_signal + row.after_signal))
        .collect()
}

fn clients(n: usize) -> TrafficOverrides {
    TrafficOverrides {
        clients: Some(n),
        ..TrafficOverrides::default()
    }
}

fn long_lived_plan(scenario: Scenario, server_args: &[&str], duration: f64) -> Plan {
    let mut args = vec!["--no-access-log"];
    args.extend_from_slice(server_args);
    plan_with(scenario, &args, 2.0, duration, clients(64))
}

#[test]
fn at_sigterm_every_websocket_gets_1001_and_the_server_exits_at_once() {
    let report = run(&long_lived_plan(
        Scenario::Websocket,
        &["--workers", "2"],
        4.0,
    ));
    let s = &report.summary;
    assert!(report.passed(), "{:?}", s.failures);
    assert_eq!(count(s, Outcome::Opened), 64);
    assert_eq!(closes(s), vec![("close 1001".to_string(), 64)]);
    assert!(s.ok > 64, "messages echoed: {}", s.ok);
    match s.server_exit {
        shutdown_harness::ServerExit::Exited { after_signal, .. } => {
            assert!(after_signal < 2.0, "exited {after_signal} s after SIGTERM")
        }
        ref other => panic!("{other:?}"),
    }
}

#[test]
fn at_sigterm_every_sse_stream_ends_at_an_event_boundary() {
    let report = run(&long_lived_plan(Scenario::Sse, &["--workers", "2"], 4.0));
    let s = &report.summary;
    assert!(report.passed(), "{:?}", s.failures);
    assert_eq!(count(s, Outcome::Opened), 64);
    assert_eq!(closes(s), vec![("stream ended".to_string(), 64)]);
}

#[test]
fn a_rolling_restart_closes_websockets_with_1012_and_every_client_is_back_within_2_s() {
    let mut plan = long_lived_plan(Scenario::Websocket, &["--workers", "2"], 6.0);
    plan.set_disruptions(vec![Disruption::Signal(Signal::SIGHUP)]);
    let report = run(&plan);
    let s = &report.summary;
    assert!(report.passed(), "{:?}", s.failures);
    let closed = count(s, Outcome::ClosedCleanly(1012));
    assert!(closed >= 64, "{:?}", closes(s));
    assert_eq!(closes(s), vec![("close 1012".to_string(), closed)]);
    let r = s.reconnects.as_ref().unwrap();
    assert_eq!(r.reconnected_promptly, closed, "{r:?}");
}

#[test]
fn a_rolling_restart_resumes_every_sse_stream_with_no_event_missing() {
    let mut plan = long_lived_plan(Scenario::Sse, &["--workers", "2"], 6.0);
    plan.set_disruptions(vec![Disruption::Signal(Signal::SIGHUP)]);
    let report = run(&plan);
    let s = &report.summary;
    // An id gap would be an `events missing` drop.
    assert!(report.passed(), "{:?}", s.failures);
    let ended = count(s, Outcome::StreamEnded);
    assert!(ended >= 64, "{:?}", closes(s));
    assert_eq!(closes(s), vec![("stream ended".to_string(), ended)]);
    let r = s.reconnects.as_ref().unwrap();
    assert_eq!(r.reconnected_promptly, ended, "{r:?}");
}

#[test]
fn scale_down_hand_over_and_request_quotas_drop_no_websocket() {
    // TTOU: one of three workers drains.
    let mut plan = long_lived_plan(Scenario::Websocket, &["--workers", "3"], 5.0);
    plan.set_disruptions(vec![Disruption::Signal(Signal::SIGTTOU)]);
    plan.expect_workers = Some(2);
    // USR2: a new generation takes over the socket; the old one drains.
    let mut upgrade = long_lived_plan(Scenario::Websocket, &["--workers", "2"], 5.0);
    upgrade.set_disruptions(vec![Disruption::Signal(Signal::SIGUSR2)]);
    assert_eq!(upgrade.expectation, Expectation::HandsOver);
    // A quota of 150 requests, reached by plain requests beside the WebSockets (about
    // 200 per second): each worker is recycled every 1.5 s or so.
    let mut quota = long_lived_plan(
        Scenario::Websocket,
        &["--workers", "2", "--limit-max-requests", "150"],
        5.0,
    );
    quota.set_disruptions(vec![Disruption::Nothing]);
    let mut requests = Scenario::Keepalive.clients(TrafficOverrides::default())[0].clone();
    requests.count = 2;
    quota.clients.push(requests);
    for plan in [plan, upgrade, quota] {
        let report = run(&plan);
        let s = &report.summary;
        assert!(report.passed(), "{}: {:?}", s.signal, s.failures);
        let restarts = count(s, Outcome::ClosedCleanly(1012));
        // The worker TTOU retires may hold none of the WebSockets (connections are not
        // spread evenly over the workers): then nothing is closed at all.
        assert!(
            restarts > 0 || s.signal == "SIGTTOU",
            "{}: {:?}",
            s.signal,
            closes(s)
        );
        let expected = match restarts {
            0 => vec![],
            n => vec![("close 1012".to_string(), n)],
        };
        assert_eq!(closes(s), expected, "{}", s.signal);
    }
}

#[test]
fn the_harness_counts_websockets_cut_without_a_close_frame_as_drops() {
    // Plain axum with `with_graceful_shutdown`: upgraded connections are not part of it.
    let baseline = common::baseline_axum();
    let argv = vec![
        baseline.display().to_string(),
        "127.0.0.1:{port}".to_string(),
    ];
    let mut plan = long_lived_plan(Scenario::Websocket, &[], 4.0);
    plan.target = Target::Launch(ServerCommand { argv });
    plan.max_exit_after = Duration::from_secs(10);
    let report = run(&plan);
    let s = &report.summary;
    assert!(!report.passed());
    assert_eq!(s.dropped, 64, "{:?}", closes(s));
    assert_eq!(
        count(s, Outcome::ClosedWithoutFrame) + count(s, Outcome::Reset),
        64
    );
}
