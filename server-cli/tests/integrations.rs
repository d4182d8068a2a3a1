//! Fitting the tools operators use: socket activation, sd_notify, a shutdown delay for
//! load balancers, pid files, JSON logs.

#![allow(clippy::unwrap_used)]

mod common;

use std::os::fd::AsRawFd;
use std::os::unix::net::UnixDatagram;
use std::os::unix::process::CommandExt;
use std::process::Command;
use std::time::{Duration, Instant};

use common::{http_get, server_cli, RunningServer};
use nix::sys::signal::Signal;

fn temp_path(name: &str) -> std::path::PathBuf {
    std::env::temp_dir().join(format!("server-cli-{}-{name}", std::process::id()))
}

#[test]
fn a_socket_passed_as_systemd_does_is_used_and_nothing_is_bound() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    // --port names a port that is taken: binding it would fail, so serving proves that the
    // passed socket was used.
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let taken_port = taken.local_addr().unwrap().port().to_string();
    let fd = listener.as_raw_fd();
    let mut command = Command::new("sh");
    command.args([
        "-c",
        r#"LISTEN_PID=$$ LISTEN_FDS=1 LISTEN_FDNAMES=http exec "$0" "$@""#,
        server_cli(),
        "--port",
        &taken_port,
        "--workers",
        "2",
    ]);
    // SAFETY: dup2 and fcntl are async-signal-safe.
    unsafe {
        command.pre_exec(move || {
            if libc::dup2(fd, 3) < 0 || libc::fcntl(3, libc::F_SETFD, 0) < 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let mut server = RunningServer::start_command(command);
    assert_eq!(server.addr, addr);
    // Inherited without SO_REUSEPORT: the fallback drain is chosen and said so.
    server.wait_for_line("Listener drain: close");
    assert_eq!(http_get(addr, "/").unwrap().status, 200);
    server.signal(Signal::SIGTERM);
    assert!(server.wait_exit(Duration::from_secs(10)).0.success());
}

/// A datagram socket standing in for systemd's `NOTIFY_SOCKET` (reads time out at 10 s).
fn notify_socket(name: &str) -> (std::path::PathBuf, UnixDatagram) {
    let path = temp_path(name);
    let _ = std::fs::remove_file(&path);
    let notify = UnixDatagram::bind(&path).unwrap();
    notify
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    (path, notify)
}

#[test]
fn systemd_is_told_ready_reloading_ready_and_stopping_in_order() {
    let (path, notify) = notify_socket("notify.sock");
    let mut command = Command::new(server_cli());
    command
        .args(["--port", "0", "--workers", "2"])
        .env("NOTIFY_SOCKET", &path);
    let mut server = RunningServer::start_command(command);
    let next = || {
        let mut buf = [0u8; 512];
        let n = notify.recv(&mut buf).unwrap();
        String::from_utf8_lossy(&buf[..n]).into_owned()
    };
    let ready = next();
    assert!(ready.starts_with("READY=1"), "{ready}");
    assert!(
        ready.contains(&format!("MAINPID={}", server.child.id())),
        "{ready}"
    );
    server.signal(Signal::SIGHUP);
    assert!(next().starts_with("RELOADING=1"));
    assert!(next().starts_with("READY=1"));
    server.signal(Signal::SIGTERM);
    assert!(next().starts_with("STOPPING=1"));
    assert!(server.wait_exit(Duration::from_secs(10)).0.success());
    std::fs::remove_file(&path).unwrap();
}

#[test]
fn a_shutdown_delay_turns_readiness_off_while_traffic_still_flows() {
    let mut server = RunningServer::start(&["--workers", "2", "--shutdown-delay", "1.5"]);
    assert_eq!(http_get(server.addr, "/healthz").unwrap().status, 200);
    let signalled = Instant::now();
    server.signal(Signal::SIGTERM);
    server.wait_for_lines("readiness route answers 503", 2);
    assert_eq!(http_get(server.addr, "/healthz").unwrap().status, 503);
    assert_eq!(http_get(server.addr, "/").unwrap().status, 200);
    let (status, exited) = server.wait_exit(Duration::from_secs(10));
    assert!(status.success());
    let took = exited - signalled;
    assert!(
        took >= Duration::from_millis(1500) && took < Duration::from_millis(2500),
        "{took:?}"
    );
}

#[test]
fn the_pid_file_holds_the_parent_pid_and_is_removed_at_exit() {
    let path = temp_path("server.pid");
    let mut server = RunningServer::start(&["--pid", path.to_str().unwrap()]);
    let written = std::fs::read_to_string(&path).unwrap();
    assert_eq!(written.trim(), server.child.id().to_string());
    server.signal(Signal::SIGTERM);
    assert!(server.wait_exit(Duration::from_secs(10)).0.success());
    assert!(!path.exists());
}

#[test]
fn json_logs_are_one_object_per_line_with_the_pid() {
    let mut server = RunningServer::start(&["--workers", "2", "--log-format", "json"]);
    http_get(server.addr, "/").unwrap();
    server.signal(Signal::SIGTERM);
    server.wait_exit(Duration::from_secs(10));
    server.wait_for_line("Stopping parent process");
    let mut pids = std::collections::BTreeSet::new();
    for line in &server.log {
        let value: serde_json::Value = serde_json::from_str(line).unwrap();
        assert!(value["message"].is_string(), "{line}");
        pids.insert(value["pid"].as_u64().unwrap());
    }
    assert_eq!(pids.len(), 3, "parent and two workers: {pids:?}");
}

#[test]
fn systemd_watchdog_is_petted_from_the_supervisor_loop() {
    let (path, notify) = notify_socket("watchdog.sock");
    let mut command = Command::new(server_cli());
    command
        .args(["--port", "0"])
        .env("NOTIFY_SOCKET", &path)
        .env("WATCHDOG_USEC", "200000");
    let mut server = RunningServer::start_command(command);
    let mut pets = 0;
    let started = Instant::now();
    while pets < 3 {
        let mut buf = [0u8; 512];
        let n = notify.recv(&mut buf).unwrap();
        if &buf[..n] == b"WATCHDOG=1" {
            pets += 1;
        }
    }
    // Every 100 ms (half of WATCHDOG_USEC): three within well under a second.
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "{:?}",
        started.elapsed()
    );
    server.signal(Signal::SIGTERM);
    assert!(server.wait_exit(Duration::from_secs(10)).0.success());
    std::fs::remove_file(&path).unwrap();
}

#[test]
fn a_unix_socket_is_served_drained_and_removed_at_exit() {
    use std::io::{Read, Write};
    let path = temp_path("http.sock");
    let _ = std::fs::remove_file(&path);
    /// Kills the server if the test fails half-way.
    struct KillOnDrop(std::process::Child);
    impl Drop for KillOnDrop {
        fn drop(&mut self) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
    let mut child = KillOnDrop(
        Command::new(server_cli())
            .args(["--workers", "2", "--uds", path.to_str().unwrap()])
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap(),
    );
    let deadline = Instant::now() + common::READY_TIMEOUT;
    let get = || -> Option<String> {
        let mut stream = std::os::unix::net::UnixStream::connect(&path).ok()?;
        stream
            .write_all(b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            .ok()?;
        let mut response = String::new();
        stream.read_to_string(&mut response).ok()?;
        Some(response)
    };
    let response = loop {
        if let Some(response) = get() {
            break response;
        }
        assert!(Instant::now() < deadline, "no answer on {}", path.display());
        std::thread::sleep(Duration::from_millis(10));
    };
    assert!(response.starts_with("HTTP/1.1 200"), "{response}");
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(child.0.id() as i32),
        Signal::SIGTERM,
    )
    .unwrap();
    assert!(child.0.wait().unwrap().success());
    assert!(!path.exists(), "the socket file was left behind");
}
