//! Options, bad input and the demo routes, on the real binary.

#![allow(clippy::unwrap_used)]

mod common;

use std::net::TcpListener;
use std::time::{Duration, Instant};

use assert_cmd::Command;
use common::{http_get, raw_request, RunningServer};
use nix::sys::signal::Signal;

fn cli() -> Command {
    Command::cargo_bin("server-cli").unwrap()
}

#[test]
fn invalid_options_exit_2_with_a_message() {
    cli()
        .args(["--workers", "0"])
        .assert()
        .code(2)
        .stderr(predicates::str::contains("--workers"));
    cli().args(["--no-such-option"]).assert().code(2);
    cli()
        .args(["--timeout-graceful-shutdown=-1"])
        .assert()
        .code(2)
        .stderr(predicates::str::contains("seconds"));
    cli().args(["--host", "not-an-ip"]).assert().code(2);
}

#[test]
fn a_port_in_use_exits_1_at_once_naming_the_address() {
    let taken = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = taken.local_addr().unwrap().port();
    let started = Instant::now();
    cli()
        .args(["--port", &port.to_string(), "--workers", "2"])
        .timeout(Duration::from_secs(10))
        .assert()
        .code(1)
        .stderr(predicates::str::contains(format!(
            "127.0.0.1:{port} is already in use"
        )));
    assert!(
        started.elapsed() < Duration::from_secs(1),
        "{:?}",
        started.elapsed()
    );
}

#[test]
fn the_demo_app_answers_its_routes() {
    let server = RunningServer::start(&["--workers", "1"]);
    let root = http_get(server.addr, "/").unwrap();
    assert_eq!(
        (root.status, root.body.as_str()),
        (200, r#"{"Hello":"World"}"#)
    );
    assert_eq!(http_get(server.addr, "/healthz").unwrap().status, 200);
    let slept = http_get(server.addr, "/sleep?secs=0.01").unwrap();
    assert_eq!(slept.status, 200);
    let echo = raw_request(
        server.addr,
        b"POST /echo HTTP/1.1\r\nHost: x\r\nConnection: close\r\nContent-Length: 5\r\n\r\nhello",
    )
    .unwrap();
    assert_eq!((echo.status, echo.body.as_str()), (200, r#"{"len":5}"#));
    assert_eq!(http_get(server.addr, "/missing").unwrap().status, 404);
}

#[test]
fn malformed_http_gets_400_and_the_worker_keeps_serving() {
    let server = RunningServer::start(&["--workers", "1"]);
    let bad = raw_request(server.addr, b"THIS IS NOT HTTP\r\n\r\n").unwrap();
    assert_eq!(bad.status, 400);
    let worker = server.wait_for_workers(1);
    assert_eq!(http_get(server.addr, "/").unwrap().status, 200);
    assert_eq!(
        server.wait_for_workers(1),
        worker,
        "the worker was replaced"
    );
}

#[test]
fn logs_in_uvicorn_style_and_an_access_line_per_request() {
    let mut server = RunningServer::start(&["--workers", "2"]);
    server.wait_for_line("Started parent process [");
    server.wait_for_line("Listener drain: ");
    http_get(server.addr, "/healthz").unwrap();
    let access = server.wait_for_line(r#""GET /healthz HTTP/1.1" 200 OK"#);
    // The client as uvicorn writes it: `127.0.0.1:PORT - "GET ...`.
    let client = access
        .split("] ")
        .nth(1)
        .and_then(|rest| rest.split(" - ").next())
        .and_then(|client| client.strip_prefix("127.0.0.1:"));
    assert!(
        client.is_some_and(|port| port.parse::<u16>().is_ok()),
        "no client address in {access:?}"
    );
    server.signal(Signal::SIGTERM);
    server.wait_for_line("Finished server process [");
    server.wait_for_line("Stopping parent process [");
    let (status, _) = server.wait_exit(Duration::from_secs(10));
    assert!(status.success());
    assert!(server
        .log
        .iter()
        .all(|l| l.starts_with("INFO:     ") || l.starts_with("WARNING:  ")));
}

#[test]
fn no_access_log_turns_the_access_lines_off() {
    let mut server = RunningServer::start(&["--no-access-log"]);
    http_get(server.addr, "/healthz").unwrap();
    server.signal(Signal::SIGTERM);
    server.wait_exit(Duration::from_secs(10));
    server.wait_for_line("Stopping parent process");
    assert!(
        !server.log.iter().any(|l| l.contains("GET /healthz")),
        "{:?}",
        server.log
    );
}

#[test]
fn idle_keep_alive_connections_and_unfinished_request_heads_are_closed_after_the_timeout() {
    use std::io::{Read, Write};
    let server = RunningServer::start(&[
        "--workers",
        "1",
        "--timeout-keep-alive",
        "0.5",
        "--timeout-header-read",
        "0.5",
    ]);
    let mut idle = std::net::TcpStream::connect(server.addr).unwrap();
    idle.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        .unwrap();
    let mut slow = std::net::TcpStream::connect(server.addr).unwrap();
    slow.write_all(b"GET / HTT").unwrap();
    let started = Instant::now();
    for stream in [&mut idle, &mut slow] {
        stream
            .set_read_timeout(Some(Duration::from_secs(5)))
            .unwrap();
        let mut everything = Vec::new();
        // Ends with EOF when the server closes the connection (an error if it never does).
        stream.read_to_end(&mut everything).unwrap();
    }
    let took = started.elapsed();
    assert!(
        took >= Duration::from_millis(450) && took < Duration::from_secs(2),
        "{took:?}"
    );
    // The worker serves on.
    assert_eq!(http_get(server.addr, "/").unwrap().status, 200);
}

#[test]
fn a_panicking_handler_gets_500_and_the_worker_lives() {
    let server = RunningServer::start(&["--workers", "1"]);
    let worker = server.wait_for_workers(1);
    assert_eq!(http_get(server.addr, "/panic").unwrap().status, 500);
    assert_eq!(http_get(server.addr, "/").unwrap().status, 200);
    assert_eq!(
        server.wait_for_workers(1),
        worker,
        "the worker was replaced"
    );
}

#[test]
fn beyond_the_concurrency_limit_new_connections_get_503() {
    use std::io::{Read, Write};
    let server = RunningServer::start(&["--workers", "1", "--limit-concurrency", "2"]);
    let mut held = Vec::new();
    for _ in 0..2 {
        let mut stream = std::net::TcpStream::connect(server.addr).unwrap();
        stream
            .write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
            .unwrap();
        let mut buf = [0u8; 512];
        let n = stream.read(&mut buf).unwrap();
        assert!(buf[..n].starts_with(b"HTTP/1.1 200"));
        held.push(stream);
    }
    assert_eq!(http_get(server.addr, "/").unwrap().status, 503);
    drop(held);
    // Once the held connections are gone, new ones are served again (bounded wait).
    let deadline = Instant::now() + Duration::from_secs(5);
    while http_get(server.addr, "/").unwrap().status != 200 {
        assert!(
            Instant::now() < deadline,
            "still refusing after the connections closed"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
}

#[test]
fn a_request_head_over_the_limit_gets_431() {
    let server = RunningServer::start(&["--limit-header-size", "8192"]);
    let big = "x".repeat(9000);
    let request = format!("GET / HTTP/1.1\r\nHost: x\r\nX-Big: {big}\r\nConnection: close\r\n\r\n");
    assert_eq!(
        raw_request(server.addr, request.as_bytes()).unwrap().status,
        431
    );
    assert_eq!(http_get(server.addr, "/").unwrap().status, 200);
}

#[test]
fn workers_that_never_start_make_the_server_give_up_with_status_1() {
    let started = Instant::now();
    cli()
        .args(["--port", "0", "--max-startup-failures", "3", "--", "false"])
        .timeout(Duration::from_secs(20))
        .assert()
        .code(1)
        .stderr(predicates::str::contains(
            "died before they were ready; giving up",
        ));
    // Backoff 100 ms then 200 ms: a few hundred milliseconds, no busy loop.
    assert!(started.elapsed() < Duration::from_secs(5));
}

/// Targets of a process's descriptors (`socket:[N]`, `pipe:[N]`, `anon_inode:...`).
fn descriptor_targets(pid: u32) -> Vec<String> {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .unwrap()
        .filter_map(|e| std::fs::read_link(e.ok()?.path()).ok())
        .map(|t| t.to_string_lossy().into_owned())
        .collect()
}

#[test]
fn workers_hold_only_their_own_descriptors() {
    let mut server = RunningServer::start(&["--workers", "3"]);
    server.wait_for_line("all workers are ready");
    let workers = server.wait_for_workers(3);
    let parent = descriptor_targets(server.child.id());
    let listener: Vec<&String> = parent.iter().filter(|t| t.starts_with("socket:")).collect();
    let per_worker: Vec<Vec<String>> = workers.iter().map(|&w| descriptor_targets(w)).collect();
    for (worker, targets) in workers.iter().zip(&per_worker) {
        assert!(
            !targets.iter().any(|t| t.contains("bpf")),
            "{worker}: {targets:?}"
        );
        // The parent's own pipes (its signal self-pipe) stay in the parent.
        for target in targets.iter().filter(|t| t.starts_with("pipe:")) {
            let inherited_by_parent_too = parent.contains(target);
            let from_the_test = descriptor_targets(std::process::id()).contains(target);
            assert!(
                !inherited_by_parent_too || from_the_test,
                "{worker} holds {target}"
            );
        }
    }
    // Exactly one socket is common to all workers: the listener (the parent holds it too;
    // a worker holds it twice, once for the accept gate); none holds another worker's
    // channel.
    let shared: std::collections::BTreeSet<&String> = per_worker[0]
        .iter()
        .filter(|t| t.starts_with("socket:"))
        .filter(|t| per_worker[1..].iter().all(|other| other.contains(t)))
        .collect();
    assert_eq!(shared.len(), 1, "{per_worker:?}");
    assert!(shared.iter().all(|s| listener.contains(s)));
    for (i, targets) in per_worker.iter().enumerate() {
        for (j, other) in per_worker.iter().enumerate() {
            if i != j {
                let common = targets
                    .iter()
                    .filter(|t| t.starts_with("socket:") && other.contains(t))
                    .collect::<std::collections::BTreeSet<_>>()
                    .len();
                assert_eq!(
                    common, 1,
                    "workers {i} and {j} share more than the listener"
                );
            }
        }
    }
}

#[test]
fn a_port_that_needs_privileges_fails_at_once_with_the_cause() {
    let unprivileged_start =
        std::fs::read_to_string("/proc/sys/net/ipv4/ip_unprivileged_port_start")
            .ok()
            .and_then(|v| v.trim().parse::<u16>().ok())
            .unwrap_or(1024);
    assert!(
        unprivileged_start > 1,
        "port 1 needs no privilege on this machine"
    );
    let started = Instant::now();
    let output = std::process::Command::new("setpriv")
        .args([
            "--bounding-set",
            "-net_bind_service",
            "--inh-caps",
            "-net_bind_service",
            "--",
        ])
        .arg(common::server_cli())
        .args(["--port", "1", "--workers", "2"])
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("cannot listen on 127.0.0.1:1") && stderr.contains("ermission denied"),
        "{stderr}"
    );
    assert!(
        !stderr.contains("Started server process"),
        "a worker was started: {stderr}"
    );
    assert!(started.elapsed() < Duration::from_secs(1));
}

#[test]
fn out_of_descriptors_a_worker_pauses_accepting_and_recovers() {
    let mut server = start_with_open_files_limit(40, 40);
    // Idle connections that each take a descriptor in the worker, more than it has.
    let held: Vec<_> = (0..60)
        .map(|_| std::net::TcpStream::connect(server.addr).unwrap())
        .collect();
    server.wait_for_line("accept failed: Too many open files");
    drop(held);
    // The queued connections are not lost, and new ones are served once descriptors free up.
    let deadline = Instant::now() + Duration::from_secs(20);
    while http_get(server.addr, "/").map(|r| r.status) != Some(200) {
        assert!(Instant::now() < deadline, "the worker did not recover");
        std::thread::sleep(Duration::from_millis(50));
    }
    let errors = server
        .log
        .iter()
        .filter(|l| l.contains("accept failed"))
        .count();
    assert!(errors < 200, "accept errors spin: {errors} lines");
}

/// Starts server-cli with the open-files limit set to `soft` / `hard`.
fn start_with_open_files_limit(soft: u64, hard: u64) -> RunningServer {
    use std::os::unix::process::CommandExt;
    let mut command = std::process::Command::new(common::server_cli());
    command.args(["--port", "0", "--workers", "1", "--no-access-log"]);
    // SAFETY: setrlimit is async-signal-safe.
    unsafe {
        command.pre_exec(move || {
            let limit = libc::rlimit {
                rlim_cur: soft,
                rlim_max: hard,
            };
            if libc::setrlimit(libc::RLIMIT_NOFILE, &limit) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    RunningServer::start_command(command)
}

/// The soft and hard open-files limits of a process, from `/proc/PID/limits`.
fn open_files_limits(pid: u32) -> (String, String) {
    let limits = std::fs::read_to_string(format!("/proc/{pid}/limits")).unwrap();
    let line = limits
        .lines()
        .find(|l| l.starts_with("Max open files"))
        .unwrap();
    let fields: Vec<&str> = line.split_whitespace().collect();
    (fields[3].to_string(), fields[4].to_string())
}

#[test]
fn the_open_files_limit_is_raised_to_the_hard_limit_for_every_worker() {
    let mut server = start_with_open_files_limit(256, 4096);
    server.wait_for_line("open-files limit raised from 256 to 4096 (the hard limit)");
    let workers = server.wait_for_workers(1);
    assert_eq!(
        open_files_limits(workers[0]),
        ("4096".to_string(), "4096".to_string())
    );
    // 300 connections at once (more than the soft limit it was started with) are served.
    let held: Vec<_> = (0..300)
        .map(|_| std::net::TcpStream::connect(server.addr).unwrap())
        .collect();
    assert_eq!(http_get(server.addr, "/").map(|r| r.status), Some(200));
    drop(held);
    assert!(!server.log.iter().any(|l| l.contains("accept failed")));
}

#[test]
fn workers_auto_follows_the_affinity_mask() {
    use std::os::unix::process::CommandExt;
    let mut command = std::process::Command::new(common::server_cli());
    command.args(["--port", "0", "--workers", "auto", "--no-access-log"]);
    // SAFETY: sched_setaffinity is async-signal-safe.
    unsafe {
        command.pre_exec(|| {
            let mut one_cpu = nix::sched::CpuSet::new();
            one_cpu.set(0).map_err(std::io::Error::other)?;
            nix::sched::sched_setaffinity(nix::unistd::Pid::from_raw(0), &one_cpu)
                .map_err(std::io::Error::other)
        });
    }
    let mut server = RunningServer::start_command(command);
    server.wait_for_line("--workers auto: 1 worker (1 CPU in the affinity mask");
    assert_eq!(server.wait_for_workers(1).len(), 1);
}

#[test]
fn a_bad_inherited_descriptor_or_unix_socket_path_fails_at_once_with_the_cause() {
    let started = Instant::now();
    cli()
        .args(["--fd", "97"])
        .timeout(Duration::from_secs(10))
        .assert()
        .code(1)
        .stderr(predicates::str::contains(
            "inherited descriptor 97 is not open",
        ));
    cli()
        .args(["--uds", "/proc/no-such-dir/server.sock"])
        .timeout(Duration::from_secs(10))
        .assert()
        .code(1)
        .stderr(predicates::str::contains(
            "cannot listen on unix socket /proc/no-such-dir/server.sock",
        ));
    assert!(started.elapsed() < Duration::from_secs(2));
}

#[test]
fn an_app_that_panics_at_start_is_retried_with_backoff_then_given_up() {
    let started = Instant::now();
    let assert = cli()
        .args([
            "--port",
            "0",
            "--demo-panic-at-start",
            "--max-startup-failures",
            "3",
        ])
        .timeout(Duration::from_secs(20))
        .assert()
        .code(1);
    let stderr = String::from_utf8_lossy(&assert.get_output().stderr).into_owned();
    assert!(stderr.contains("demo: --demo-panic-at-start"), "{stderr}");
    assert_eq!(
        stderr.matches("died before it was ready").count(),
        3,
        "{stderr}"
    );
    assert!(stderr.contains("giving up"), "{stderr}");
    // 100 ms, then 200 ms of backoff: no busy loop, and no endless retry.
    let took = started.elapsed();
    assert!(
        took >= Duration::from_millis(300) && took < Duration::from_secs(5),
        "{took:?}"
    );
}

#[test]
fn an_address_not_on_this_machine_fails_at_once_with_the_cause() {
    let started = Instant::now();
    cli()
        .args(["--host", "192.0.2.1", "--port", "8000"])
        .timeout(Duration::from_secs(10))
        .assert()
        .code(1)
        .stderr(predicates::str::contains("cannot listen on 192.0.2.1:8000"));
    assert!(started.elapsed() < Duration::from_secs(1));
}

#[test]
fn a_bad_metrics_address_or_memory_limit_is_refused_at_once() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let taken_port = taken.local_addr().unwrap().port().to_string();
    for (args, message) in [
        (
            vec![
                "--port",
                "0",
                "--metrics-bind",
                &format!("127.0.0.1:{taken_port}"),
            ],
            "the address is in use",
        ),
        (
            vec!["--port", "0", "--metrics-bind", "192.0.2.1:9100"],
            "not an address of this machine",
        ),
        (
            vec![
                "--port",
                &taken_port,
                "--metrics-bind",
                &format!("127.0.0.1:{taken_port}"),
            ],
            "already in use",
        ),
    ] {
        let started = Instant::now();
        cli()
            .args(&args)
            .timeout(Duration::from_secs(10))
            .assert()
            .code(1)
            .stderr(predicates::str::contains(message));
        assert!(started.elapsed() < Duration::from_secs(2), "{args:?}");
    }
    drop(taken);
    // The server's own port, free until the server binds it.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
        .to_string();
    cli()
        .args([
            "--port",
            &port,
            "--metrics-bind",
            &format!("127.0.0.1:{port}"),
        ])
        .timeout(Duration::from_secs(10))
        .assert()
        .code(1)
        .stderr(predicates::str::contains("cannot serve metrics on"));
    cli()
        .args(["--limit-max-memory", "0"])
        .timeout(Duration::from_secs(10))
        .assert()
        .code(2)
        .stderr(predicates::str::contains("--limit-max-memory"));
}
