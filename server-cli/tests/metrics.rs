//! `--metrics-bind`: one scrape shows the whole server (every worker's requests, the accept
//! queue, restarts by reason), served by a process of its own while the server restarts
//! and stops; `--limit-max-memory` replaces a leaking worker, built-in or external, without
//! a drop.

#![allow(clippy::unwrap_used)]

mod common;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use common::harness::run;
use common::{http_get, RunningServer};
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use shutdown_harness::{Plan, RequestShape, Scenario, Target, TrafficOverrides, UrlTarget};

/// The metrics address from the server's log line.
fn metrics_addr(server: &mut RunningServer) -> SocketAddr {
    let line = server.wait_for_line("Metrics on http://");
    let rest = line.split("http://").nth(1).unwrap();
    rest.split('/').next().unwrap().parse().unwrap()
}

fn scrape(addr: SocketAddr) -> String {
    let response = http_get(addr, "/metrics").expect("the scrape is answered");
    assert_eq!(response.status, 200, "{}", response.head);
    response.body
}

/// The sum of every sample whose name and labels start with `prefix`.
fn value(text: &str, prefix: &str) -> f64 {
    text.lines()
        .filter(|l| !l.starts_with('#') && l.starts_with(prefix))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

/// Scrapes until `check` holds (bounded); returns the last scrape.
fn scrape_until(addr: SocketAddr, what: &str, check: impl Fn(&str) -> bool) -> String {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let text = scrape(addr);
        if check(&text) {
            return text;
        }
        assert!(Instant::now() < deadline, "never {what}:\n{text}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// A harness plan against a server the test started.
fn url_plan(scenario: Scenario, addr: SocketAddr, path: &str, secs: f64, clients: usize) -> Plan {
    let url = UrlTarget::parse(&format!("http://{addr}{path}")).unwrap();
    let log = std::env::temp_dir().join(format!("metrics-test-{}.log", std::process::id()));
    let mut plan = Plan::new(scenario, Target::Url(url), log);
    plan.duration = Duration::from_secs_f64(secs);
    plan.signal_after = Duration::from_secs_f64(secs / 2.0);
    plan.clients = scenario.clients(TrafficOverrides {
        clients: Some(clients),
        request: Some(RequestShape::get(path)),
        ..TrafficOverrides::default()
    });
    plan
}

#[test]
fn one_scrape_counts_the_requests_of_all_four_workers() {
    let mut server = RunningServer::start(&[
        "--workers",
        "4",
        "--no-access-log",
        "--metrics-bind",
        "127.0.0.1:0",
    ]);
    let metrics = metrics_addr(&mut server);
    let before = value(&scrape(metrics), "server_http_requests_total{");
    let report = run(&url_plan(Scenario::Keepalive, server.addr, "/", 5.0, 16));
    assert!(report.passed(), "{}", report.text());
    let text = scrape(metrics);
    let counted = value(&text, "server_http_requests_total{") - before;
    let answered = report.summary.ok as f64;
    // The harness's readiness probe sends a request or two of its own.
    assert!(
        (counted - answered).abs() <= (answered * 0.001).max(3.0),
        "scrape {counted}, harness {answered}"
    );
    let per_worker = value(&text, "server_worker_http_requests_total{");
    assert_eq!(per_worker, value(&text, "server_http_requests_total{"));
    assert_eq!(value(&text, "server_workers{state=\"ready\"}"), 4.0);
    assert!(value(&text, "server_http_request_duration_seconds_count") >= counted);
    assert!(value(&text, "server_worker_resident_memory_bytes{") > 0.0);
}

#[test]
fn the_accept_queue_gauge_rises_when_the_workers_cannot_accept_and_returns_to_0() {
    let mut server = RunningServer::start(&[
        "--workers",
        "1",
        "--no-access-log",
        "--metrics-bind",
        "127.0.0.1:0",
    ]);
    let metrics = metrics_addr(&mut server);
    scrape(metrics); // resets the maximum
    let addr = server.addr;
    let blocker = std::thread::spawn(move || http_get(addr, "/block?secs=1.5"));
    std::thread::sleep(Duration::from_millis(200));
    // The only worker's runtime is blocked: these wait in the kernel's queue.
    let waiting: Vec<_> = (0..20)
        .map(|_| std::net::TcpStream::connect(addr).unwrap())
        .collect();
    let text = scrape_until(metrics, "a queue", |t| {
        value(t, "server_accept_queue_length_max") >= 20.0
    });
    assert!(
        value(&text, "server_accept_queue_length ") >= 1.0
            || value(&text, "server_accept_queue_length_max") >= 20.0
    );
    assert_eq!(blocker.join().unwrap().unwrap().status, 200);
    drop(waiting);
    scrape_until(metrics, "an empty queue again", |t| {
        value(t, "server_accept_queue_length ") == 0.0
            && value(t, "server_accept_queue_length_max") == 0.0
    });
}

#[test]
fn restart_counters_follow_hup_ttou_a_killed_worker_and_a_quota() {
    let mut server = RunningServer::start(&[
        "--workers",
        "2",
        "--no-access-log",
        "--limit-max-requests",
        "40",
        "--metrics-bind",
        "127.0.0.1:0",
    ]);
    let metrics = metrics_addr(&mut server);
    let restarts = |t: &str, reason: &str| {
        value(
            t,
            &format!("server_worker_restarts_total{{reason=\"{reason}\"}}"),
        )
    };
    // A HUP restarts the workers that are ready (a starting one runs the new code anyway).
    scrape_until(metrics, "2 ready", |t| {
        value(t, "server_workers{state=\"ready\"}") == 2.0
    });
    server.signal(Signal::SIGHUP);
    scrape_until(metrics, "reload 2", |t| {
        restarts(t, "reload") == 2.0 && value(t, "server_workers{state=\"ready\"}") == 2.0
    });
    server.signal(Signal::SIGTTOU);
    scrape_until(metrics, "scale-down 1, the retired worker gone", |t| {
        restarts(t, "scale-down") == 1.0
            && value(t, "server_workers_desired") == 1.0
            && value(t, "server_workers{state=\"draining\"}") == 0.0
            && t.matches("server_worker_resident_memory_bytes{").count() == 1
    });
    // The worker's pid from the scrape (the metrics process is a child of the server
    // too, so the children alone do not say which one is the worker).
    let text = scrape(metrics);
    let worker: i32 = text
        .lines()
        .find(|l| l.starts_with("server_worker_resident_memory_bytes{"))
        .and_then(|l| l.split("pid=\"").nth(1)?.split('"').next()?.parse().ok())
        .unwrap();
    kill(Pid::from_raw(worker), Signal::SIGKILL).unwrap();
    scrape_until(metrics, "crash 1", |t| {
        restarts(t, "crash") == 1.0 && value(t, "server_workers{state=\"ready\"}") == 1.0
    });
    for _ in 0..60 {
        let _ = http_get(server.addr, "/");
    }
    let text = scrape_until(metrics, "quota 1", |t| restarts(t, "quota") >= 1.0);
    assert_eq!(restarts(&text, "memory"), 0.0);
    assert!(value(&text, "server_last_drain_duration_seconds") > 0.0);
}

#[test]
fn scrapes_are_answered_through_a_rolling_restart_and_until_the_server_exits() {
    let mut server = RunningServer::start(&[
        "--workers",
        "2",
        "--no-access-log",
        "--demo-shutdown-delay",
        "1",
        "--metrics-bind",
        "127.0.0.1:0",
    ]);
    let metrics = metrics_addr(&mut server);
    server.signal(Signal::SIGHUP);
    let until = Instant::now() + Duration::from_millis(1500);
    while Instant::now() < until {
        scrape(metrics);
    }
    server.signal(Signal::SIGTERM);
    // Every scrape until the exit is answered (the workers drain for 1 s meanwhile).
    let mut during_stop = 0;
    while server.child.try_wait().unwrap().is_none() {
        if let Some(response) = http_get(metrics, "/metrics") {
            assert_eq!(response.status, 200);
            during_stop += 1;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(
        during_stop > 10,
        "{during_stop} scrapes answered during the stop"
    );
}

/// Runs one leaking client (10 MiB a request, 10 requests/s) for `secs`, scraping every
/// 100 ms; returns the harness report, the most RSS any worker had, and the last scrape.
fn leak_under_limit(
    server: &mut RunningServer,
    path: &str,
    secs: f64,
) -> (bool, String, f64, String) {
    let metrics = metrics_addr(server);
    let addr = server.addr;
    let path = path.to_string();
    let harness = std::thread::spawn(move || {
        let mut plan = url_plan(Scenario::Keepalive, addr, &path, secs, 1);
        plan.clients[0].interval = Duration::from_millis(100);
        let report = run(&plan);
        (report.passed(), report.text())
    });
    let mut most_rss: f64 = 0.0;
    let mut text = String::new();
    while !harness.is_finished() {
        text = scrape(metrics);
        for line in text
            .lines()
            .filter(|l| l.starts_with("server_worker_resident_memory_bytes{"))
        {
            most_rss = most_rss.max(line.rsplit(' ').next().unwrap().parse().unwrap());
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let (passed, report) = harness.join().unwrap();
    (passed, report, most_rss, text)
}

#[test]
fn a_leaking_worker_is_replaced_before_it_grows_far_past_the_memory_limit() {
    let mut server = RunningServer::start(&[
        "--workers",
        "2",
        "--no-access-log",
        "--limit-max-memory",
        "100",
        "--metrics-bind",
        "127.0.0.1:0",
    ]);
    let (passed, report, most_rss, text) = leak_under_limit(&mut server, "/grow?mib=10", 6.0);
    assert!(passed, "{report}");
    let mib = most_rss / (1024.0 * 1024.0);
    assert!(mib < 150.0, "a worker reached {mib:.0} MiB");
    assert!(
        value(&text, "server_worker_restarts_total{reason=\"memory\"}") >= 2.0,
        "{text}"
    );
    server.wait_for_line("above --limit-max-memory; replacing it (reason: memory)");
}

#[test]
fn a_leaking_external_worker_is_replaced_too() {
    let fixture = format!(
        "{}/tests/fixtures/fd3_server.py",
        env!("CARGO_MANIFEST_DIR")
    );
    let mut command = std::process::Command::new(common::server_cli());
    command
        .args(["--port", "0", "--workers", "2", "--limit-max-memory", "100"])
        .args(["--metrics-bind", "127.0.0.1:0", "--", "python3", &fixture])
        .env("LEAK_MIB", "10");
    let mut server = RunningServer::start_command(command);
    let (passed, report, most_rss, text) = leak_under_limit(&mut server, "/", 6.0);
    assert!(passed, "{report}");
    assert!(most_rss / (1024.0 * 1024.0) < 150.0, "{most_rss}");
    assert!(
        value(&text, "server_worker_restarts_total{reason=\"memory\"}") >= 2.0,
        "{text}"
    );
}

/// `workers` standard-library workers (poll loop) leaking 10 MiB a request under a 100 MiB
/// limit, each waiting `start_secs` before it serves; returns the run's outcome as
/// [`leak_under_limit`] does.
fn leaking_stdlib_workers(workers: &str, start_secs: &str) -> (bool, String, f64, String) {
    let fixture = format!(
        "{}/tests/fixtures/fd3_stdlib_server.py",
        env!("CARGO_MANIFEST_DIR")
    );
    let mut command = std::process::Command::new(common::server_cli());
    command
        .args([
            "--port",
            "0",
            "--workers",
            workers,
            "--limit-max-memory",
            "100",
        ])
        .args(["--no-access-log", "--metrics-bind", "127.0.0.1:0"])
        .args(["--", "python3", &fixture])
        .env("LEAK_MIB", "10")
        .env("START_SECS", start_secs);
    let mut server = RunningServer::start_command(command);
    leak_under_limit(&mut server, "/", 6.0)
}

#[test]
fn leaking_poll_loop_workers_stay_under_one_and_a_half_times_the_limit_with_two_workers() {
    let (passed, report, most_rss, text) = leaking_stdlib_workers("2", "0");
    assert!(passed, "{report}");
    let mib = most_rss / (1024.0 * 1024.0);
    assert!(mib < 150.0, "a worker reached {mib:.0} MiB");
    assert!(
        value(&text, "server_worker_restarts_total{reason=\"memory\"}") >= 2.0,
        "{text}"
    );
}

#[test]
fn leaking_poll_loop_workers_stay_under_one_and_a_half_times_the_limit_with_four_workers() {
    let (passed, report, most_rss, _) = leaking_stdlib_workers("4", "0");
    assert!(passed, "{report}");
    let mib = most_rss / (1024.0 * 1024.0);
    assert!(mib < 150.0, "a worker reached {mib:.0} MiB");
}

#[test]
fn leaking_workers_slow_to_start_are_drained_or_killed_before_one_and_a_half_times_the_limit() {
    // Replacements take 2 s to serve: waiting for them alone let workers grow 6x.
    let (_, report, most_rss, text) = leaking_stdlib_workers("2", "2");
    let mib = most_rss / (1024.0 * 1024.0);
    assert!(mib < 150.0, "a worker reached {mib:.0} MiB\n{report}");
    assert!(
        value(&text, "server_worker_restarts_total{reason=\"memory\"}") >= 2.0,
        "{text}"
    );
}

/// Requests answered by each worker slot, by slot number.
fn per_worker_requests(text: &str) -> std::collections::BTreeMap<String, f64> {
    text.lines()
        .filter_map(|l| l.strip_prefix("server_worker_http_requests_total{worker=\""))
        .filter_map(|rest| {
            let (worker, value) = rest.split_once("\"} ")?;
            Some((worker.to_string(), value.parse().ok()?))
        })
        .collect()
}

/// One keep-alive request on `stream`, read to the end of the demo's JSON body.
fn keep_alive_get(stream: &mut std::net::TcpStream) {
    use std::io::{Read, Write};
    stream
        .write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        .unwrap();
    let mut response = Vec::new();
    let mut buf = [0u8; 1024];
    while !response.ends_with(b"}") {
        let n = stream.read(&mut buf).unwrap();
        assert!(n > 0, "closed before the response");
        response.extend_from_slice(&buf[..n]);
    }
}

#[test]
fn keep_alive_connections_opened_one_by_one_are_spread_over_both_workers() {
    // Without the accept gate the worker that is already running takes nearly every
    // connection (measured: 8,357 requests to 1); with it, each new connection goes to
    // the worker with fewer open.
    let mut server = RunningServer::start(&[
        "--workers",
        "2",
        "--no-access-log",
        "--metrics-bind",
        "127.0.0.1:0",
    ]);
    let metrics = metrics_addr(&mut server);
    let before = per_worker_requests(&scrape_until(metrics, "two ready workers", |t| {
        value(t, "server_workers{state=\"ready\"}") == 2.0
    }));
    let mut connections: Vec<_> = (0..16)
        .map(|_| {
            let mut stream = std::net::TcpStream::connect(server.addr).unwrap();
            stream
                .set_read_timeout(Some(Duration::from_secs(10)))
                .unwrap();
            keep_alive_get(&mut stream);
            stream
        })
        .collect();
    for _ in 0..10 {
        for stream in &mut connections {
            keep_alive_get(stream);
        }
    }
    let after = per_worker_requests(&scrape(metrics));
    let answered: Vec<f64> = after
        .iter()
        .map(|(worker, n)| n - before.get(worker).copied().unwrap_or(0.0))
        .filter(|&n| n > 0.0)
        .collect();
    assert_eq!(answered.iter().sum::<f64>(), 176.0, "{answered:?}");
    // 11 requests per connection: each worker holds at least 7 of the 16 connections (8
    // and 8 when both can run; 9 and 7 seen once in 20 runs with both cores busy). Without
    // the gate, 10 runs of 12 ended further apart, as far as 16 and 0.
    assert!(
        answered.len() == 2 && answered.iter().all(|&n| n >= 77.0),
        "requests per worker: {answered:?}"
    );
}
