//! FastAPI apps, unchanged, in the Python workers: the seed's experiment with the seed's
//! app, a rolling restart under load, Starlette's and FastAPI's documented features.

#![allow(clippy::unwrap_used)]

mod common;

use std::time::{Duration, Instant};

use common::harness::{plan, run};
use common::{http_get, server_cli, RunningServer};
use nix::sys::signal::Signal;
use shutdown_harness::{Disruption, Scenario, ServerExit};

/// The seed's app, as the issue's peers run it.
fn seed_dir() -> String {
    format!("{}/../scripts/peers", env!("CARGO_MANIFEST_DIR"))
}

fn fixtures() -> String {
    format!("{}/tests/fixtures/asgi", env!("CARGO_MANIFEST_DIR"))
}

/// A harness plan for `server-cli APP --app-dir DIR ARGS` in the FastAPI virtualenv.
fn asgi_plan(
    app: &str,
    dir: &str,
    args: &[&str],
    signal_after: f64,
    duration: f64,
) -> shutdown_harness::Plan {
    common::asgi_module();
    let venv = common::fastapi_venv();
    // The harness launches `env VIRTUAL_ENV=... server-cli ...`.
    let mut argv = vec!["VIRTUAL_ENV=".to_string() + venv.to_str().unwrap()];
    argv.push(server_cli().to_string());
    argv.extend([app.to_string(), "--app-dir".into(), dir.to_string()]);
    argv.extend(args.iter().map(|a| a.to_string()));
    let strings: Vec<&str> = argv.iter().map(String::as_str).collect();
    let mut plan = plan(Scenario::Seed, &[], signal_after, duration);
    let mut command = vec!["env".to_string()];
    command.extend(strings.iter().map(|s| s.to_string()));
    command.extend(["--port".into(), "{port}".into()]);
    plan.target =
        shutdown_harness::Target::Launch(shutdown_harness::ServerCommand { argv: command });
    plan
}

#[test]
fn the_seed_experiment_with_the_seed_app_drops_nothing_and_runs_the_hooks_in_parallel() {
    let plan = asgi_plan("seed_app:app", &seed_dir(), &["--workers", "2"], 2.0, 5.0);
    let report = run(&plan);
    let s = &report.summary;
    assert_eq!(s.dropped, 0, "{}", report.text());
    assert!(s.ok > 0 && s.refused > 0, "{}", report.text());
    assert!(report.passed(), "{}", report.text());
    // Each worker's 10 s shutdown hook, both at once, after the socket was closed.
    match &s.server_exit {
        ServerExit::Exited {
            after_signal,
            status,
        } => {
            assert_eq!(status, "exit status: 0");
            assert!(
                (10.0..12.0).contains(after_signal),
                "out {after_signal:.2} s after SIGTERM"
            );
        }
        other => panic!("{other:?}\n{}", report.text()),
    }
}

#[test]
fn rolling_restarts_of_a_fastapi_app_under_load_drop_and_refuse_nothing() {
    let mut plan = asgi_plan(
        "fastapi_app:app",
        &fixtures(),
        &["--workers", "2", "--no-access-log"],
        1.0,
        5.0,
    );
    plan.clients = Scenario::Load.clients(shutdown_harness::TrafficOverrides {
        clients: Some(16),
        ..Default::default()
    });
    plan.disruptions = vec![Disruption::Signal(Signal::SIGHUP)];
    plan.expectation = Disruption::expectation_of(&plan.disruptions);
    plan.repeat_every = Some(Duration::from_secs(1));
    plan.expect_workers = Some(2);
    let report = run(&plan);
    let s = &report.summary;
    assert_eq!((s.dropped, s.refused), (0, 0), "{}", report.text());
    assert_eq!(s.workers_at_end, Some(2), "{}", report.text());
    assert!(report.passed(), "{}", report.text());
    let log = std::fs::read_to_string(&plan.server_log).unwrap();
    assert!(log.matches("SIGHUP: rolling restart").count() >= 3, "{log}");
}

#[test]
fn starlette_and_fastapi_features_run_unchanged() {
    common::asgi_module();
    let venv = common::fastapi_venv();
    let mut command = std::process::Command::new(server_cli());
    command
        .args([
            "fastapi_app:app",
            "--app-dir",
            &fixtures(),
            "--port",
            "0",
            "--workers",
            "1",
        ])
        .env("VIRTUAL_ENV", &venv);
    let mut server = RunningServer::start_command(command);
    server.wait_for_line(&format!("at {}", venv.join("bin").join("python").display()));
    let echo = common::raw_request(
        server.addr,
        b"POST /echo HTTP/1.1\r\nHost: x\r\nConnection: close\r\nContent-Length: 5\r\n\r\nhello",
    )
    .unwrap();
    assert_eq!(echo.body, r#"{"len":5}"#);
    let stream = http_get(server.addr, "/stream").unwrap();
    assert!(
        stream.body.contains("part 0") && stream.body.contains("part 2"),
        "{}",
        stream.body
    );
    let file = http_get(server.addr, "/file").unwrap();
    assert_eq!(file.body.matches("file contents").count(), 1000);
    assert_eq!(http_get(server.addr, "/background").unwrap().status, 200);
    let deadline = Instant::now() + Duration::from_secs(10);
    while !http_get(server.addr, "/background-count")
        .unwrap()
        .body
        .contains(r#""done":1"#)
    {
        assert!(Instant::now() < deadline, "the background task never ran");
        std::thread::sleep(Duration::from_millis(20));
    }
}
