//! The zero-drop stop, end to end: the real binary, real sockets on 127.0.0.1, real
//! signals, traffic and classification by the shutdown harness. Smaller and shorter than
//! the runs of docs/measurements.md, same assertions.

#![allow(clippy::unwrap_used)]

mod common;

use std::time::{Duration, Instant};

use common::harness::{plan, plan_with, run};
use common::{is_alive, server_cli, RunningServer};
use nix::sys::signal::Signal;
use shutdown_harness::{ClientLibrary, HttpVersion, Report, Scenario, TrafficOverrides};
use shutdown_harness::{Disruption, Outcome, ServerCommand, ServerExit, Target};

fn exit_after(report: &Report) -> f64 {
    match &report.summary.server_exit {
        ServerExit::Exited {
            after_signal,
            status,
        } => {
            assert_eq!(status, "exit status: 0");
            *after_signal
        }
        other => panic!("server did not exit by itself: {other:?}"),
    }
}

fn assert_zero_drop(report: &Report) {
    let s = &report.summary;
    assert_eq!(s.dropped, 0, "{}", report.text());
    assert!(s.ok > 0 && s.refused > 0, "{}", report.text());
    assert!(s.orphans.is_empty(), "{}", report.text());
    assert!(report.passed(), "{}", report.text());
}

#[test]
fn seed_experiment_drops_nothing_and_runs_hooks_in_parallel() {
    let plan = plan(
        Scenario::Seed,
        &[
            "--workers",
            "2",
            "--demo-shutdown-delay",
            "2",
            "--listener-drain",
            "ebpf",
        ],
        1.5,
        4.5,
    );
    let report = run(&plan);
    assert_zero_drop(&report);
    // Two workers each sleep 2 s in their hook, at the same time: about 2 s, not 4 s.
    let exit = exit_after(&report);
    assert!(
        (2.0..2.6).contains(&exit),
        "exited {exit:.3} s after SIGTERM"
    );
}

/// The `load` scenario against two workers with this drain, `clients` back to back.
fn load_run(drain: &str, clients: usize) -> Report {
    let overrides = TrafficOverrides {
        clients: Some(clients),
        ..TrafficOverrides::default()
    };
    let args = [
        "--workers",
        "2",
        "--listener-drain",
        drain,
        "--no-access-log",
    ];
    run(&plan_with(Scenario::Load, &args, 1.5, 3.0, overrides))
}

#[test]
fn load_with_new_connections_drops_nothing_with_the_ebpf_drain() {
    let report = load_run("ebpf", 16);
    assert_zero_drop(&report);
    assert!(exit_after(&report) < 1.0);
}

/// Runs of the close fallback per test.
const CLOSE_FALLBACK_RUNS: usize = 3;

#[test]
fn load_with_the_close_fallback_refuses_and_loses_only_connections_queued_at_the_close() {
    for run in 1..=CLOSE_FALLBACK_RUNS {
        // The full-size load scenario (32 clients), as docs/measurements.md's repeated runs.
        let report = load_run("close", 32);
        // The fallback has a residual race the kernel leaves no way around without the
        // eBPF drain: a connection that lands in the queue between the last worker's final
        // accept and its close is reset. Usually none or one; more when that worker is
        // preempted in between (8 in one CI run, 14 in session 2 under a CPU hog:
        // docs/reliability.md), so the count is not asserted here; the regression that
        // made it large on every run, a copy of the socket kept open past the drain, is
        // caught by the next test. What the fallback must never do is leave a client
        // hanging: every loss is a reset seen before the server has exited, and the rest
        // is answered or refused.
        let s = &report.summary;
        let exit = exit_after(&report);
        let hung: Vec<_> = report
            .requests
            .iter()
            .filter(|r| r.outcome.is_drop() && r.outcome != Outcome::Reset)
            .collect();
        assert!(hung.is_empty(), "run {run}: {hung:?}\n{}", report.text());
        // The last worker's close resets what is still queued, and the parent exits right
        // after: a client task may take the reset a few milliseconds after the harness saw
        // the exit (found by CI: resets at +5..8 ms, exit at +6 ms).
        if let Some(last) = s.last_drop_after_signal {
            assert!(
                last <= exit + 0.1,
                "run {run}: a reset after the exit\n{}",
                report.text()
            );
        }
        assert!(
            s.ok > 0 && s.refused > 0 && s.orphans.is_empty(),
            "run {run}: {}",
            report.text()
        );
        assert!(exit < 1.0);
    }
}

/// A worker's pid from a log line of it (`INFO:     [PID] ...`).
fn pid_of_line(line: &str) -> u32 {
    let start = line.find('[').unwrap() + 1;
    let end = line[start..].find(']').unwrap() + start;
    line[start..end].parse().unwrap()
}

/// Whether a connection to `addr` is refused (nothing listens), waiting at most 1 s for
/// an answer to the handshake.
fn is_refused(addr: std::net::SocketAddr) -> bool {
    match std::net::TcpStream::connect_timeout(&addr, Duration::from_secs(1)) {
        Ok(_) => false,
        Err(e) => e.kind() == std::io::ErrorKind::ConnectionRefused,
    }
}

/// The close fallback's regression of issue 25, caught without depending on timing: a
/// worker that keeps a copy of the listener after its drain has begun (the accept gate's
/// duplicate, once kept until the worker's connections were drained) keeps the port
/// listening with nobody accepting, and whatever the kernel queues there is reset when the
/// copy finally goes (17-31 resets per run under load). With a 3 s request in flight in
/// each worker, the port must refuse long before either is answered.
#[test]
fn with_the_close_fallback_the_port_refuses_while_every_worker_is_still_draining() {
    use std::collections::BTreeSet;
    use std::io::Write;
    let mut server = RunningServer::start(&["--workers", "2", "--listener-drain", "close"]);
    server.wait_for_line("Listener drain: close");
    // One slow request in each worker: the accept gate sends a new connection to the
    // worker with fewer open, but a worker not scheduled in time may take two, so up to 8.
    let mut busy = Vec::new();
    let mut serving = BTreeSet::new();
    while serving.len() < 2 {
        assert!(busy.len() < 8, "every slow request went to {serving:?}");
        let mut stream = std::net::TcpStream::connect(server.addr).unwrap();
        stream
            .write_all(b"GET /sleep?secs=3 HTTP/1.1\r\nHost: x\r\n\r\n")
            .unwrap();
        busy.push(stream);
        let line = server.wait_for_lines("demo: /sleep waiting", busy.len());
        serving.insert(pid_of_line(&line));
    }
    let signalled = Instant::now();
    server.signal(Signal::SIGTERM);
    let refused_after = loop {
        if is_refused(server.addr) {
            break signalled.elapsed();
        }
        assert!(
            signalled.elapsed() < Duration::from_secs(2),
            "the port still took connections 2 s into the drain"
        );
        std::thread::sleep(Duration::from_millis(5));
    };
    assert!(refused_after < Duration::from_secs(2), "{refused_after:?}");
    // The workers were still serving their requests then, and answer them in full.
    for stream in &mut busy {
        read_closing_response(stream);
    }
    assert!(signalled.elapsed() >= Duration::from_secs(2));
    let (status, _) = server.wait_exit(Duration::from_secs(10));
    assert!(status.success());
}

#[test]
fn keep_alive_clients_are_closed_cleanly_not_dropped() {
    let args = ["--workers", "2", "--no-access-log"];
    let report = run(&plan(Scenario::Keepalive, &args, 1.5, 3.0));
    assert_zero_drop(&report);
}

#[test]
fn http2_streams_under_load_at_sigterm_complete_or_are_refused_never_fail() {
    let overrides = TrafficOverrides {
        clients: Some(16),
        interval: Some(Duration::ZERO),
        ..TrafficOverrides::default()
    };
    let args = ["--workers", "2", "--no-access-log"];
    let mut plan = plan_with(Scenario::Keepalive, &args, 1.5, 3.0, overrides);
    plan.http_version = HttpVersion::Http2;
    let report = run(&plan);
    assert_zero_drop(&report);
}

#[test]
fn pooled_reqwest_clients_see_no_error_at_sigterm() {
    let args = ["--workers", "2", "--no-access-log"];
    let mut plan = plan(Scenario::Keepalive, &args, 1.5, 3.0);
    plan.client_library = ClientLibrary::Reqwest;
    let report = run(&plan);
    assert_zero_drop(&report);
}

#[test]
fn slow_requests_are_cut_at_the_deadline_and_fast_clients_lose_nothing() {
    let args = ["--workers", "2", "--timeout-graceful-shutdown", "2"];
    let report = run(&plan(Scenario::Slow, &args, 1.0, 4.0));
    assert_zero_drop(&report);
    assert_eq!(report.summary.slow_not_completed, 2, "{}", report.text());
    let exit = exit_after(&report);
    assert!(
        (1.7..2.3).contains(&exit),
        "exited {exit:.3} s after SIGTERM"
    );
}

#[test]
fn sigint_stops_gracefully_like_sigterm() {
    let mut plan = plan(Scenario::Seed, &["--workers", "2"], 1.0, 2.5);
    plan.disruptions = vec![Disruption::Signal(Signal::SIGINT)];
    assert_zero_drop(&run(&plan));
}

#[test]
fn a_second_sigterm_stops_at_once() {
    let mut server = RunningServer::start(&["--workers", "2"]);
    let addr = server.addr;
    let in_flight = std::thread::spawn(move || common::http_get(addr, "/sleep?secs=30"));
    server.wait_for_line("demo: /sleep waiting");
    server.signal(Signal::SIGTERM);
    server.wait_for_line("Shutting down");
    let second = Instant::now();
    server.signal(Signal::SIGTERM);
    let (_, exited) = server.wait_exit(Duration::from_secs(5));
    assert!(exited - second < Duration::from_secs(1));
    assert!(
        in_flight.join().unwrap().is_none(),
        "the request was not cut"
    );
}

#[test]
fn sigquit_stops_at_once() {
    let mut server = RunningServer::start(&["--workers", "2", "--demo-shutdown-delay", "30"]);
    let sent = Instant::now();
    server.signal(Signal::SIGQUIT);
    let (_, exited) = server.wait_exit(Duration::from_secs(5));
    assert!(exited - sent < Duration::from_secs(1));
}

#[test]
fn no_worker_survives_a_killed_parent_and_the_port_is_freed() {
    let server = RunningServer::start(&["--workers", "2"]);
    let workers = server.wait_for_workers(2);
    server.signal(Signal::SIGKILL);
    let deadline = Instant::now() + Duration::from_secs(1);
    while workers.iter().any(|&w| is_alive(w)) {
        assert!(
            Instant::now() < deadline,
            "workers outlived the parent by 1 s"
        );
        std::thread::sleep(Duration::from_millis(5));
    }
    let refused = std::net::TcpStream::connect_timeout(&server.addr, Duration::from_millis(500));
    assert_eq!(
        refused.unwrap_err().kind(),
        std::io::ErrorKind::ConnectionRefused
    );
}

#[test]
fn ttin_and_ttou_add_and_remove_a_worker_while_serving() {
    let server = RunningServer::start(&["--workers", "2"]);
    server.wait_for_workers(2);
    server.signal(Signal::SIGTTIN);
    server.wait_for_workers(3);
    server.signal(Signal::SIGTTOU);
    server.wait_for_workers(2);
    assert_eq!(common::http_get(server.addr, "/").unwrap().status, 200);
}

#[test]
fn an_unexpected_worker_death_is_replaced() {
    let server = RunningServer::start(&["--workers", "2"]);
    let before = server.wait_for_workers(2);
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(before[0] as i32),
        Signal::SIGKILL,
    )
    .unwrap();
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let now = server.workers();
        if now.len() == 2 && !now.contains(&before[0]) {
            break;
        }
        assert!(Instant::now() < deadline, "worker not replaced: {now:?}");
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// Runs `server-cli` without CAP_BPF (and CAP_SYS_ADMIN), as an unprivileged deployment would.
fn without_bpf_privileges(args: &[&str]) -> Vec<String> {
    let mut argv: Vec<String> = [
        "setpriv",
        "--bounding-set",
        "-bpf,-sys_admin",
        "--",
        server_cli(),
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    argv.extend(args.iter().map(|s| s.to_string()));
    argv
}

#[test]
fn without_cap_bpf_auto_falls_back_to_close_and_still_drops_nothing() {
    let mut plan = plan(Scenario::Seed, &[], 1.0, 2.5);
    plan.target = Target::Launch(ServerCommand {
        argv: without_bpf_privileges(&["--workers", "2", "--port", "{port}"]),
    });
    let report = run(&plan);
    assert_zero_drop(&report);
    let log = std::fs::read_to_string(&plan.server_log).unwrap();
    assert!(log.contains("eBPF listener drain unavailable"), "{log}");
    assert!(log.contains("Listener drain: close"), "{log}");
}

#[test]
fn without_cap_bpf_an_explicit_ebpf_drain_refuses_to_start() {
    let output = std::process::Command::new("setpriv")
        .args(without_bpf_privileges(&["--port", "0", "--listener-drain", "ebpf"])[1..].iter())
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("cannot use the eBPF listener drain"),
        "{stderr}"
    );
}

/// Reads until the server closes (a reset fails: the close must be a clean FIN after the
/// whole response) and checks that the response is a 200 with `Connection: close`.
fn read_closing_response(stream: &mut std::net::TcpStream) -> String {
    use std::io::Read;
    stream
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).unwrap();
    assert!(response.starts_with("HTTP/1.1 200"), "{response}");
    assert!(response.contains("connection: close"), "{response}");
    response
}

#[test]
fn responses_written_during_the_drain_carry_connection_close() {
    use std::io::{Read, Write};
    let mut server = RunningServer::start(&["--workers", "1"]);
    // An in-flight request on a keep-alive connection when the stop begins.
    let mut busy = std::net::TcpStream::connect(server.addr).unwrap();
    busy.write_all(b"GET /sleep?secs=0.5 HTTP/1.1\r\nHost: x\r\n\r\n")
        .unwrap();
    server.wait_for_line("demo: /sleep waiting");
    // An idle keep-alive connection that sends its next request during the drain.
    let mut idle = std::net::TcpStream::connect(server.addr).unwrap();
    idle.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        .unwrap();
    let mut first = [0u8; 1024];
    let n = idle.read(&mut first).unwrap();
    assert!(!String::from_utf8_lossy(&first[..n]).contains("connection: close"));

    server.signal(Signal::SIGTERM);
    // The parent logs "Shutting down" first, then the worker when it starts draining.
    server.wait_for_lines("Shutting down", 2);
    idle.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        .unwrap();
    for stream in [&mut busy, &mut idle] {
        read_closing_response(stream);
    }
    let (status, _) = server.wait_exit(Duration::from_secs(5));
    assert!(status.success());
}

#[test]
fn pipelined_requests_get_their_response_with_connection_close_and_a_clean_close() {
    use std::io::Write;
    let mut server = RunningServer::start(&["--workers", "1"]);
    let mut stream = std::net::TcpStream::connect(server.addr).unwrap();
    // Two requests in one write; the first is in flight when the stop begins.
    stream
        .write_all(
            b"GET /sleep?secs=0.3 HTTP/1.1\r\nHost: x\r\n\r\nGET / HTTP/1.1\r\nHost: x\r\n\r\n",
        )
        .unwrap();
    server.wait_for_line("demo: /sleep waiting");
    server.signal(Signal::SIGTERM);
    let response = read_closing_response(&mut stream);
    // The pipelined request after it was not processed; the client knows to resend it.
    assert_eq!(response.matches("HTTP/1.1").count(), 1, "{response}");
    assert!(server.wait_exit(Duration::from_secs(5)).0.success());
}

#[test]
fn http2_connections_drain_with_goaway_and_finish_their_streams() {
    use http_body_util::{BodyExt, Empty};
    use hyper_util::rt::{TokioExecutor, TokioIo};

    let mut server = RunningServer::start(&["--workers", "1"]);
    let addr = server.addr;
    let started = Instant::now();
    // Multi-thread: the spawned connection and request make progress while the test
    // thread waits for log lines.
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    let (mut sender, connection) = runtime.block_on(async {
        let stream = tokio::net::TcpStream::connect(addr).await.unwrap();
        hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(stream))
            .await
            .unwrap()
    });
    let connection = runtime.spawn(connection);
    let request = |path: &str| {
        hyper::Request::get(format!("http://{addr}{path}"))
            .body(Empty::<bytes::Bytes>::new())
            .unwrap()
    };
    // h2c with prior knowledge works at all.
    let first = runtime.block_on(sender.send_request(request("/"))).unwrap();
    assert_eq!(first.version(), hyper::Version::HTTP_2);
    // A stream in flight when the stop begins.
    let slow = runtime.spawn(sender.send_request(request("/sleep?secs=0.5")));
    server.wait_for_line("demo: /sleep waiting");
    server.signal(Signal::SIGTERM);
    let response = runtime.block_on(slow).unwrap().unwrap();
    assert_eq!(response.status(), 200);
    let body = runtime
        .block_on(response.into_body().collect())
        .unwrap()
        .to_bytes();
    assert_eq!(&body[..], br#"{"slept":0.5}"#);
    // GOAWAY, then a clean end of the connection (no protocol error, no reset).
    runtime
        .block_on(connection)
        .unwrap()
        .expect("the HTTP/2 connection ended with an error");
    assert!(server.wait_exit(Duration::from_secs(5)).0.success());
    // No keep-alive grace for HTTP/2: the stop took about the in-flight request's time.
    assert!(
        started.elapsed() < Duration::from_millis(900),
        "{:?}",
        started.elapsed()
    );
}

#[test]
fn a_client_that_never_finishes_its_request_does_not_hold_the_stop() {
    use std::io::Write;
    // Timeouts far longer than the stop may take: only the drain can close it.
    let mut server = RunningServer::start(&[
        "--workers",
        "1",
        "--timeout-header-read",
        "60",
        "--timeout-keep-alive",
        "60",
    ]);
    let mut slow = std::net::TcpStream::connect(server.addr).unwrap();
    slow.write_all(b"GET / HTTP/1.1\r\nHost: x\r\nX-Slow: a")
        .unwrap();
    let signalled = Instant::now();
    server.signal(Signal::SIGTERM);
    let (status, exited) = server.wait_exit(Duration::from_secs(10));
    assert!(status.success());
    // The idle grace (1 s) and a check, not the 60 s timeouts nor the 30 s deadline.
    assert!(
        exited - signalled < Duration::from_secs(2),
        "{:?}",
        exited - signalled
    );
}

#[test]
fn a_client_that_never_reads_its_response_is_cut_at_the_deadline() {
    use std::io::Write;
    let mut server = RunningServer::start(&["--workers", "1", "--timeout-graceful-shutdown", "1"]);
    // 64 MiB cannot fit in the socket buffers: the response stays in flight as long as the
    // client does not read, which it never does.
    let mut stuck = std::net::TcpStream::connect(server.addr).unwrap();
    stuck
        .write_all(b"GET /big?bytes=67108864 HTTP/1.1\r\nHost: x\r\n\r\n")
        .unwrap();
    // Other clients are served meanwhile.
    assert_eq!(common::http_get(server.addr, "/").unwrap().status, 200);
    let signalled = Instant::now();
    server.signal(Signal::SIGTERM);
    let (status, exited) = server.wait_exit(Duration::from_secs(10));
    assert!(status.success(), "the worker aborted the response itself");
    let took = exited - signalled;
    assert!(
        took >= Duration::from_millis(800) && took < Duration::from_millis(1500),
        "{took:?}"
    );
    drop(stuck);
}
