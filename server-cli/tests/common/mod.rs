//! Starting the real `server-cli` binary and watching it, for the integration tests.

#![allow(dead_code, clippy::unwrap_used)]

pub mod harness;
pub mod tls;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc::{channel, Receiver};
use std::time::{Duration, Instant};

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;

/// Longest wait for any readiness condition in these tests.
pub const READY_TIMEOUT: Duration = Duration::from_secs(20);

/// Path of the binary under test. Every test that starts anything asks for it, so this is
/// where the test program starts watching for processes it would leave running.
pub fn server_cli() -> &'static str {
    test_support::watch_for_leftovers();
    env!("CARGO_BIN_EXE_server-cli")
}

/// A running `server-cli` whose log lines are collected.
pub struct RunningServer {
    pub child: Child,
    pub addr: SocketAddr,
    lines: Receiver<String>,
    pub log: Vec<String>,
}

impl RunningServer {
    /// Starts `server-cli --port 0 ARGS`, waits for its "Listening on" line and for every
    /// worker to be started, and for `GET /` to answer.
    pub fn start(args: &[&str]) -> Self {
        let mut command = Command::new(server_cli());
        command.args(["--port", "0"]).args(args);
        Self::start_command(command)
    }

    /// Starts a prepared command (environment, inherited descriptors) the same way, in a
    /// process group of its own that ends with this value.
    pub fn start_command(mut command: Command) -> Self {
        use std::os::unix::process::CommandExt;
        test_support::watch_for_leftovers();
        let mut child = command
            .process_group(0)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let stderr = child.stderr.take().unwrap();
        let (tx, lines) = channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines() {
                let Ok(line) = line else { break };
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let mut server = Self {
            child,
            addr: "127.0.0.1:1".parse().unwrap(),
            lines,
            log: Vec::new(),
        };
        let listening = server.wait_for_line("Listening on http");
        let addr = listening
            .split("://")
            .nth(1)
            .and_then(|rest| rest.split_whitespace().next())
            .unwrap();
        server.addr = addr.parse().unwrap();
        if listening.contains("https://") {
            // Over TLS the plain GET below cannot ask; the supervisor's word is enough.
            server.wait_for_line("all workers are ready");
            return server;
        }
        let deadline = Instant::now() + READY_TIMEOUT;
        while http_get(server.addr, "/").map(|r| r.status) != Some(200) {
            assert!(Instant::now() < deadline, "server never answered GET /");
            std::thread::sleep(Duration::from_millis(10));
        }
        server
    }

    pub fn pid(&self) -> Pid {
        Pid::from_raw(self.child.id() as i32)
    }

    pub fn signal(&self, signal: Signal) {
        kill(self.pid(), signal).unwrap();
    }

    /// Waits (bounded) for a log line containing `needle`, and returns it.
    pub fn wait_for_line(&mut self, needle: &str) -> String {
        self.wait_for_lines(needle, 1)
    }

    /// Waits (bounded) until `count` log lines contain `needle`; returns the last of them.
    pub fn wait_for_lines(&mut self, needle: &str, count: usize) -> String {
        let deadline = Instant::now() + READY_TIMEOUT;
        loop {
            let matching: Vec<&String> = self.log.iter().filter(|l| l.contains(needle)).collect();
            if matching.len() >= count {
                return matching[count - 1].clone();
            }
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(line) => self.log.push(line),
                Err(_) => panic!(
                    "fewer than {count} log lines with {needle:?}; log so far:\n{}",
                    self.log.join("\n")
                ),
            }
        }
    }

    /// Waits (bounded) for the process to exit; returns its status and when it exited.
    pub fn wait_exit(&mut self, limit: Duration) -> (std::process::ExitStatus, Instant) {
        let deadline = Instant::now() + limit;
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return (status, Instant::now());
            }
            assert!(
                Instant::now() < deadline,
                "server still running after {limit:?}"
            );
            std::thread::sleep(Duration::from_millis(2));
        }
    }

    /// Pids of the live (non-zombie) children of the server process.
    pub fn workers(&self) -> Vec<u32> {
        children_of(self.child.id())
    }

    /// Waits (bounded) until the server has `n` live workers.
    pub fn wait_for_workers(&self, n: usize) -> Vec<u32> {
        let deadline = Instant::now() + READY_TIMEOUT;
        loop {
            let workers = self.workers();
            if workers.len() == n {
                return workers;
            }
            assert!(
                Instant::now() < deadline,
                "expected {n} workers, have {workers:?}"
            );
            std::thread::sleep(Duration::from_millis(10));
        }
    }
}

impl Drop for RunningServer {
    /// Kills the whole group (the server, its workers, anything they started), passed or
    /// failed, then reaps the server.
    fn drop(&mut self) {
        let _ = nix::sys::signal::killpg(self.pid(), Signal::SIGKILL);
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Live (non-zombie) processes whose parent is `parent`.
pub fn children_of(parent: u32) -> Vec<u32> {
    std::fs::read_dir("/proc")
        .unwrap()
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| {
            let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
                return false;
            };
            let fields: Vec<String> = stat
                .rsplit_once(')')
                .map(|(_, r)| r.split_whitespace().map(String::from).collect())
                .unwrap_or_default();
            fields.len() > 1 && fields[0] != "Z" && fields[1] == parent.to_string()
        })
        .collect()
}

/// Whether a process exists and is not a zombie.
pub fn is_alive(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|s| {
            s.rsplit_once(')')
                .map(|(_, r)| r.trim_start().starts_with('Z'))
        })
        == Some(false)
}

/// The path of the axum baseline (package `baseline-axum`), built (same profile and target
/// directory) if it is not up to date: `cargo test -p server-cli` does not build another
/// package's binary by itself.
pub fn baseline_axum() -> std::path::PathBuf {
    let profile_dir = Path::new(server_cli())
        .parent()
        .expect("server-cli is in a profile directory");
    let target_dir = profile_dir.parent().expect("a target directory");
    let mut build = Command::new(env!("CARGO"));
    build
        .args(["build", "--quiet", "-p", "baseline-axum"])
        .arg("--target-dir")
        .arg(target_dir);
    if profile_dir.ends_with("release") {
        build.arg("--release");
    }
    let status = build.status().expect("cargo runs");
    assert!(status.success(), "cargo build -p baseline-axum failed");
    profile_dir.join("baseline_axum")
}

/// Builds the Python workers' extension module (`cargo test` builds no cdylib of another
/// package by itself), once per test program, into the target directory, where
/// `server-cli` finds it next to itself.
pub fn asgi_module() {
    static BUILT: std::sync::Once = std::sync::Once::new();
    BUILT.call_once(|| {
        let profile_dir = Path::new(server_cli())
            .parent()
            .expect("a profile directory");
        let target_dir = profile_dir.parent().expect("a target directory");
        let mut build = Command::new(env!("CARGO"));
        build
            .args(["build", "--quiet", "-p", "server-asgi"])
            .arg("--target-dir")
            .arg(target_dir);
        if profile_dir.ends_with("release") {
            build.arg("--release");
        }
        assert!(
            build.status().expect("cargo runs").success(),
            "cargo build -p server-asgi failed"
        );
    });
}

/// A virtualenv with FastAPI for the tests of FastAPI apps (`target/asgi-venv`, made once,
/// under a lock: test programs run at the same time); its path.
pub fn fastapi_venv() -> std::path::PathBuf {
    let profile_dir = Path::new(server_cli())
        .parent()
        .expect("a profile directory");
    let venv = profile_dir
        .parent()
        .expect("a target directory")
        .join("asgi-venv");
    let lock = std::fs::File::create(venv.with_extension("lock")).unwrap();
    let _held = nix::fcntl::Flock::lock(lock, nix::fcntl::FlockArg::LockExclusive).unwrap();
    let ready = venv.join(".fastapi-installed");
    if !ready.exists() {
        let made = Command::new("python3")
            .arg("-m")
            .arg("venv")
            .arg(&venv)
            .status()
            .unwrap();
        assert!(made.success(), "python3 -m venv failed");
        let installed = Command::new(venv.join("bin").join("pip"))
            .args(["install", "--quiet", "fastapi"])
            .status()
            .unwrap();
        assert!(installed.success(), "pip install fastapi failed");
        std::fs::write(&ready, "").unwrap();
    }
    venv
}

/// A parsed HTTP response.
#[derive(Debug)]
pub struct Response {
    pub status: u16,
    pub head: String,
    pub body: String,
}

/// One request on a new connection with `Connection: close`; `None` on any I/O failure.
pub fn http_get(addr: SocketAddr, path: &str) -> Option<Response> {
    raw_request(
        addr,
        format!("GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").as_bytes(),
    )
}

/// Sends raw bytes and reads until the server closes; `None` on any I/O failure.
pub fn raw_request(addr: SocketAddr, bytes: &[u8]) -> Option<Response> {
    let mut stream = TcpStream::connect_timeout(&addr, Duration::from_secs(1)).ok()?;
    stream.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    stream.write_all(bytes).ok()?;
    let mut text = String::new();
    stream.read_to_string(&mut text).ok()?;
    let (head, body) = text.split_once("\r\n\r\n")?;
    let status = head.split_whitespace().nth(1)?.parse().ok()?;
    Some(Response {
        status,
        head: head.to_string(),
        body: body.to_string(),
    })
}
