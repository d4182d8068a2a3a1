//! Every event that replaces or removes a worker drops nothing: rolling restart, binary
//! upgrade, scaling, request quotas, a killed worker, a hung worker. Real binary, real
//! signals, traffic classified by the shutdown harness.

#![allow(clippy::unwrap_used)]

mod common;

use std::time::{Duration, Instant};

use common::harness::{plan, run};
use common::{server_cli, RunningServer};
use nix::sys::signal::Signal;
use shutdown_harness::{Disruption, Expectation, ServerExit};
use shutdown_harness::{Report, Scenario};

fn assert_served_through(report: &Report, workers: usize) {
    let s = &report.summary;
    assert_eq!(s.dropped, 0, "{}", report.text());
    assert_eq!(s.refused, 0, "{}", report.text());
    assert!(s.ok > 0, "{}", report.text());
    assert_eq!(s.workers_at_end, Some(workers), "{}", report.text());
    assert!(report.passed(), "{}", report.text());
}

/// A plan whose disruption (cycled every `every` seconds) must leave the server serving
/// with `workers` workers.
fn serving_plan(
    scenario: Scenario,
    args: &[&str],
    disruptions: Vec<Disruption>,
    every: Option<f64>,
    duration: f64,
    workers: usize,
) -> shutdown_harness::Plan {
    let mut plan = plan(scenario, args, 1.0, duration);
    plan.expectation = Disruption::expectation_of(&disruptions);
    plan.disruptions = disruptions;
    plan.repeat_every = every.map(Duration::from_secs_f64);
    plan.expect_workers = Some(workers);
    plan
}

#[test]
fn rolling_restarts_every_second_under_load_drop_and_refuse_nothing() {
    let plan = serving_plan(
        Scenario::Load,
        &["--workers", "2", "--no-access-log"],
        vec![Disruption::Signal(Signal::SIGHUP)],
        Some(1.0),
        4.5,
        2,
    );
    let report = run(&plan);
    assert_served_through(&report, 2);
    let log = std::fs::read_to_string(&plan.server_log).unwrap();
    assert!(log.matches("SIGHUP: rolling restart").count() >= 3, "{log}");
}

#[test]
fn a_binary_upgrade_under_keep_alive_load_hands_over_without_a_refusal() {
    let mut plan = plan(
        Scenario::Keepalive,
        &["--workers", "2", "--no-access-log"],
        1.0,
        3.5,
    );
    plan.disruptions = vec![Disruption::Signal(Signal::SIGUSR2)];
    plan.expectation = Expectation::HandsOver;
    let report = run(&plan);
    let s = &report.summary;
    assert_eq!((s.dropped, s.refused), (0, 0), "{}", report.text());
    assert!(
        matches!(s.server_exit, ServerExit::HandedOver { .. }),
        "{}",
        report.text()
    );
    assert!(report.passed(), "{}", report.text());
    let log = std::fs::read_to_string(&plan.server_log).unwrap();
    assert_eq!(log.matches("Started parent process").count(), 2, "{log}");
    assert!(
        log.contains("binary upgrade: the new generation is ready"),
        "{log}"
    );
}

#[test]
fn scaling_down_then_up_under_keep_alive_load_drops_nothing() {
    let plan = serving_plan(
        Scenario::Keepalive,
        &["--workers", "2", "--no-access-log"],
        vec![
            Disruption::Signal(Signal::SIGTTOU),
            Disruption::Signal(Signal::SIGTTIN),
        ],
        Some(1.0),
        // Disruptions at 1 s (TTOU) and 2 s (TTIN) only.
        2.8,
        2,
    );
    assert_served_through(&run(&plan), 2);
}

#[test]
fn workers_recycled_by_request_quota_under_load_drop_nothing() {
    let plan = serving_plan(
        Scenario::Keepalive,
        &[
            "--workers",
            "2",
            "--no-access-log",
            "--limit-max-requests",
            "200",
            "--limit-max-requests-jitter",
            "20",
        ],
        vec![Disruption::Nothing],
        None,
        3.0,
        2,
    );
    let report = run(&plan);
    assert_served_through(&report, 2);
    let log = std::fs::read_to_string(&plan.server_log).unwrap();
    assert!(
        log.matches("served its request quota").count() >= 5,
        "{log}"
    );
}

#[test]
fn a_killed_worker_loses_only_its_own_requests_and_is_replaced() {
    let plan = serving_plan(
        Scenario::Load,
        &["--workers", "2", "--no-access-log"],
        vec![Disruption::KillWorker],
        None,
        3.0,
        2,
    );
    let report = run(&plan);
    assert_served_through(&report, 2);
}

#[test]
fn a_hung_worker_is_replaced_and_a_busy_one_is_not() {
    let mut server =
        RunningServer::start(&["--workers", "2", "--timeout-worker-healthcheck", "1.5"]);
    let before = server.wait_for_workers(2);
    let addr = server.addr;
    // Several slow requests keep one or both workers busy but alive: nobody is replaced.
    let busy: Vec<_> = (0..4)
        .map(|_| std::thread::spawn(move || common::http_get(addr, "/sleep?secs=3")))
        .collect();
    server.wait_for_lines("demo: /sleep waiting", 4);
    // One request blocks a worker's runtime for longer than the health timeout.
    std::thread::spawn(move || common::http_get(addr, "/block?secs=6"));
    let blocked_line = server.wait_for_line("demo: /block blocking");
    let hung = server.wait_for_line("sent no heartbeat");
    let replaced_at = Instant::now();
    for request in busy {
        let response = request.join().unwrap();
        // Slow requests on the healthy worker complete; those on the hung one are its loss.
        if let Some(r) = response {
            assert_eq!(r.status, 200);
        }
    }
    assert!(!blocked_line.is_empty());
    let after = server.wait_for_workers(2);
    let replaced: Vec<_> = before.iter().filter(|p| !after.contains(p)).collect();
    assert_eq!(
        replaced.len(),
        1,
        "{hung}; before {before:?}, after {after:?}"
    );
    assert!(hung.contains(&replaced[0].to_string()), "{hung}");
    assert!(replaced_at.elapsed() < Duration::from_secs(10));
    assert!(
        !server
            .log
            .iter()
            .any(|l| l.contains("sent no heartbeat") && !l.contains(&replaced[0].to_string())),
        "a busy worker was taken for hung: {:?}",
        server.log
    );
    assert_eq!(common::http_get(addr, "/").unwrap().status, 200);
    let _ = server_cli();
}

/// Runs `body` on a thread inside a new network namespace (loopback up, `sysctls` set),
/// so that a test can change network settings without touching the machine's. Threads
/// and processes started from there inherit the namespace.
fn in_network_namespace<T: Send + 'static>(
    sysctls: &'static [(&'static str, &'static str)],
    body: impl FnOnce() -> T + Send + 'static,
) -> T {
    std::thread::spawn(move || {
        nix::sched::unshare(nix::sched::CloneFlags::CLONE_NEWNET).expect("unshare (needs root)");
        let up = std::process::Command::new("ip")
            .args(["link", "set", "lo", "up"])
            .status()
            .unwrap();
        assert!(up.success());
        for (path, value) in sysctls {
            std::fs::write(path, value).unwrap();
        }
        body()
    })
    .join()
    .unwrap()
}

#[test]
fn per_worker_sockets_migrate_a_leaving_workers_queue_and_drop_nothing() {
    let report = in_network_namespace(&[("/proc/sys/net/ipv4/tcp_migrate_req", "1")], || {
        let plan = serving_plan(
            Scenario::Load,
            &["--workers", "2", "--no-access-log", "--reuse-port"],
            vec![Disruption::Signal(Signal::SIGHUP)],
            Some(1.0),
            3.5,
            2,
        );
        let report = run(&plan);
        let log = std::fs::read_to_string(&plan.server_log).unwrap();
        assert!(!log.contains("tcp_migrate_req"), "{log}");
        report
    });
    assert_served_through(&report, 2);
}

#[test]
fn per_worker_sockets_are_distinct_sockets_of_one_group() {
    let mut server = RunningServer::start(&["--workers", "2", "--reuse-port"]);
    // Ready workers have closed what is not theirs (right after the fork they still hold
    // copies of everything the parent had).
    server.wait_for_line("all workers are ready");
    let workers = server.wait_for_workers(2);
    let sockets = |pid: u32| -> std::collections::BTreeSet<String> {
        std::fs::read_dir(format!("/proc/{pid}/fd"))
            .unwrap()
            .filter_map(|e| std::fs::read_link(e.ok()?.path()).ok())
            .map(|t| t.to_string_lossy().into_owned())
            .filter(|t| t.starts_with("socket:"))
            .collect()
    };
    let (a, b) = (sockets(workers[0]), sockets(workers[1]));
    // Each worker holds its own listener (plus its channel to the parent), none shared.
    assert!(a.is_disjoint(&b), "{a:?} {b:?}");
    for _ in 0..20 {
        assert_eq!(common::http_get(server.addr, "/").unwrap().status, 200);
    }
}
