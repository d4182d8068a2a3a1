//! External programs as workers: a tiny Python server on fd 3 that knows nothing of
//! draining loses nothing under the supervisor's protocol.

#![allow(clippy::unwrap_used)]

mod common;

use std::time::{Duration, Instant};

use assert_cmd::Command;
use common::harness::{plan, run};
use common::{server_cli, RunningServer};
use nix::sys::signal::Signal;
use shutdown_harness::Disruption;
use shutdown_harness::Scenario;

fn fixture() -> String {
    format!(
        "{}/tests/fixtures/fd3_server.py",
        env!("CARGO_MANIFEST_DIR")
    )
}

fn stdlib_fixture() -> String {
    format!(
        "{}/tests/fixtures/fd3_stdlib_server.py",
        env!("CARGO_MANIFEST_DIR")
    )
}

/// Starts two standard-library workers waiting in `loop_kind` (poll or select), with a
/// health timeout longer than the test's wait: readiness must be observed, not assumed.
fn stdlib_workers(loop_kind: &str) -> RunningServer {
    let fixture = stdlib_fixture();
    let mut command = std::process::Command::new(server_cli());
    command
        .args(["--port", "0", "--workers", "2", "--no-access-log"])
        .args([
            "--timeout-worker-healthcheck",
            "60",
            "--",
            "python3",
            &fixture,
        ])
        .env("LOOP", loop_kind);
    RunningServer::start_command(command)
}

fn assert_readiness_seen(server: &mut RunningServer, ready_lines: usize) {
    server.wait_for_lines("all workers are ready", ready_lines);
    let log = server.log.join("\n");
    assert!(!log.contains("taking it as ready"), "{log}");
}

#[test]
fn workers_that_wait_in_poll_are_seen_ready_at_start_and_at_a_restart() {
    let mut server = stdlib_workers("poll");
    assert_readiness_seen(&mut server, 1);
    server.signal(Signal::SIGHUP);
    server.wait_for_line("SIGHUP: rolling restart");
    assert_readiness_seen(&mut server, 2);
}

#[test]
fn workers_that_wait_in_select_are_seen_ready_at_start_and_at_a_restart() {
    let mut server = stdlib_workers("select");
    assert_readiness_seen(&mut server, 1);
    server.signal(Signal::SIGHUP);
    server.wait_for_line("SIGHUP: rolling restart");
    assert_readiness_seen(&mut server, 2);
}

fn asyncio_fixture() -> String {
    format!(
        "{}/tests/fixtures/fd3_asyncio_server.py",
        env!("CARGO_MANIFEST_DIR")
    )
}

/// 32 clients, a new connection per request, against two asyncio workers that stop as
/// uvicorn does, disrupted by `disruption` (every `every` seconds if given): nothing
/// dropped, nothing refused, two workers at the end, new connections steered.
fn steered_asyncio_workers_through(disruption: Disruption, every: Option<f64>, extra: &[&str]) {
    let fixture = asyncio_fixture();
    let mut args = vec!["--workers", "2", "--no-access-log"];
    args.extend_from_slice(extra);
    args.extend(["--", "python3", &fixture]);
    let overrides = shutdown_harness::TrafficOverrides {
        clients: Some(32),
        ..shutdown_harness::TrafficOverrides::default()
    };
    let mut plan = common::harness::plan_with(Scenario::Load, &args, 1.0, 5.0, overrides);
    plan.disruptions = vec![disruption];
    plan.expectation = Disruption::expectation_of(&plan.disruptions);
    plan.repeat_every = every.map(Duration::from_secs_f64);
    plan.expect_workers = Some(2);
    let report = run(&plan);
    let s = &report.summary;
    assert_eq!((s.dropped, s.refused), (0, 0), "{}", report.text());
    assert_eq!(s.workers_at_end, Some(2), "{}", report.text());
    assert!(report.passed(), "{}", report.text());
    let log = std::fs::read_to_string(&plan.server_log).unwrap();
    assert!(
        log.contains("new connections steered by eBPF to ready workers"),
        "{log}"
    );
}

#[test]
fn asyncio_workers_restarted_every_half_second_drop_nothing_when_steered() {
    // With one shared socket the same run dropped 18-29 (connections accepted around
    // asyncio's `Server.close()`), 3 runs of 3.
    steered_asyncio_workers_through(Disruption::Signal(Signal::SIGHUP), Some(0.5), &[]);
}

#[test]
fn a_killed_asyncio_worker_loses_only_its_in_flight_requests_when_steered() {
    // What was queued on its socket moves to the other worker when the parent closes it
    // (the steering program migrates it); with 12 timeouts under a CPU hog, 1 run of 30,
    // when the queue waited for the replacement's Python to start.
    steered_asyncio_workers_through(Disruption::KillWorker, Some(1.5), &[]);
}

#[test]
fn a_binary_upgrade_with_steered_asyncio_workers_hands_over_without_a_drop() {
    let fixture = asyncio_fixture();
    let args = [
        "--workers",
        "2",
        "--no-access-log",
        "--",
        "python3",
        &fixture,
    ];
    let overrides = shutdown_harness::TrafficOverrides {
        clients: Some(32),
        ..shutdown_harness::TrafficOverrides::default()
    };
    let mut plan = common::harness::plan_with(Scenario::Load, &args, 1.5, 4.0, overrides);
    plan.disruptions = vec![Disruption::Signal(Signal::SIGUSR2)];
    plan.expectation = shutdown_harness::Expectation::HandsOver;
    let report = run(&plan);
    let s = &report.summary;
    // Every new connection goes to the new generation's socket until the old parent is
    // gone (an empty steering map once let the kernel queue 16 on the leaving workers'
    // sockets, reset when the old parent exited).
    assert_eq!((s.dropped, s.refused), (0, 0), "{}", report.text());
    assert!(
        matches!(
            s.server_exit,
            shutdown_harness::ServerExit::HandedOver { .. }
        ),
        "{}",
        report.text()
    );
    assert!(report.passed(), "{}", report.text());
}

#[test]
fn asyncio_workers_scaled_down_and_up_drop_nothing_when_steered() {
    let fixture = asyncio_fixture();
    let args = [
        "--workers",
        "3",
        "--no-access-log",
        "--",
        "python3",
        &fixture,
    ];
    let overrides = shutdown_harness::TrafficOverrides {
        clients: Some(32),
        ..shutdown_harness::TrafficOverrides::default()
    };
    let mut plan = common::harness::plan_with(Scenario::Load, &args, 1.0, 5.0, overrides);
    plan.disruptions = vec![
        Disruption::Signal(Signal::SIGTTOU),
        Disruption::Signal(Signal::SIGTTIN),
    ];
    plan.expectation = Disruption::expectation_of(&plan.disruptions);
    plan.repeat_every = Some(Duration::from_secs_f64(0.5));
    plan.expect_workers = Some(3);
    let report = run(&plan);
    let s = &report.summary;
    assert_eq!((s.dropped, s.refused), (0, 0), "{}", report.text());
    assert_eq!(s.workers_at_end, Some(3), "{}", report.text());
}

#[test]
fn a_naive_external_worker_loses_nothing_at_sigterm() {
    let fixture = fixture();
    let args = ["--workers", "2", "--", "python3", &fixture];
    let plan = plan(Scenario::Seed, &args, 1.0, 3.0);
    let report = run(&plan);
    let s = &report.summary;
    assert_eq!(s.dropped, 0, "{}", report.text());
    assert!(s.ok > 0 && s.refused > 0, "{}", report.text());
    assert!(report.passed(), "{}", report.text());
    let log = std::fs::read_to_string(&plan.server_log).unwrap();
    assert!(log.contains("all workers are ready"), "{log}");
    assert!(
        !log.contains("taking it as ready"),
        "readiness was not observed: {log}"
    );
}

#[test]
fn external_workers_are_restarted_one_by_one_on_hup_without_a_refusal() {
    let fixture = fixture();
    let args = [
        "--workers",
        "2",
        "--no-access-log",
        "--",
        "python3",
        &fixture,
    ];
    let mut plan = plan(Scenario::Load, &args, 1.0, 3.5);
    plan.disruptions = vec![Disruption::Signal(Signal::SIGHUP)];
    plan.expectation = Disruption::expectation_of(&plan.disruptions);
    plan.expect_workers = Some(2);
    let report = run(&plan);
    let s = &report.summary;
    assert_eq!((s.dropped, s.refused), (0, 0), "{}", report.text());
    assert!(report.passed(), "{}", report.text());
}

#[test]
fn a_missing_worker_command_is_refused_at_once() {
    let started = Instant::now();
    Command::cargo_bin("server-cli")
        .unwrap()
        .args(["--port", "0", "--", "/no/such/program", "--fd", "{fd}"])
        .timeout(Duration::from_secs(10))
        .assert()
        .code(1)
        .stderr(predicates::str::contains(
            "worker command `/no/such/program` not found",
        ));
    assert!(started.elapsed() < Duration::from_secs(1));
}

#[test]
fn external_workers_get_the_socket_the_way_systemd_passes_it() {
    // The fixture asserts LISTEN_FDS=1 and LISTEN_PID=its pid, and serves on fd 3.
    let fixture = fixture();
    let mut server = common::RunningServer::start(&["--workers", "1", "--", "python3", &fixture]);
    assert_eq!(common::http_get(server.addr, "/").unwrap().status, 200);
    server.signal(Signal::SIGTERM);
    let (status, _) = server.wait_exit(Duration::from_secs(10));
    assert!(status.success());
}
