//! A fork that fails (EAGAIN under a process limit) costs nothing: the server logs it,
//! serves on with the workers it has, retries with backoff, and reaches the full count once
//! forks work again; a stop in the middle is still clean.
//!
//! The limit is `RLIMIT_NPROC` of an unprivileged user (root is exempt from it): the server
//! runs as `nobody` with a limit of 3 processes of that user while a placeholder process of
//! `nobody` holds one of them, so the parent and one worker fit and the second fork fails
//! with EAGAIN. Ending the placeholder frees the place, as another process of a container
//! exiting would.

#![allow(clippy::unwrap_used)]

mod common;

use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;
use std::process::{Child, Command};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;
use std::time::Duration;

use common::{http_get, server_cli, RunningServer};
use nix::sys::signal::Signal;

/// The `nobody` user and group.
const NOBODY: u32 = 65534;
/// Processes `nobody` may have: the placeholder, the parent, one worker.
const NPROC_LIMIT: u64 = 3;

/// The tests count processes of the same user: one at a time.
static ONE_AT_A_TIME: Mutex<()> = Mutex::new(());
/// Numbers the copies of the binary.
static COPIES: AtomicUsize = AtomicUsize::new(0);

/// A copy of server-cli that `nobody` can execute (the build directory may not be
/// reachable for other users), in a directory of its own that is removed when dropped: the
/// copy is the size of the debug binary, and a run must not leave it behind.
struct BinaryForNobody {
    dir: std::path::PathBuf,
}

impl BinaryForNobody {
    fn copy() -> Self {
        let dir = std::env::temp_dir().join(format!(
            "fork-failure-{}-{}",
            std::process::id(),
            COPIES.fetch_add(1, Ordering::Relaxed)
        ));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755)).unwrap();
        let copy = Self { dir };
        std::fs::copy(server_cli(), copy.path()).unwrap();
        std::fs::set_permissions(copy.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
        copy
    }

    fn path(&self) -> std::path::PathBuf {
        self.dir.join("server-cli")
    }
}

impl Drop for BinaryForNobody {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Sets `RLIMIT_NPROC` (soft and hard) of the calling process.
fn set_process_limit(limit: u64) -> std::io::Result<()> {
    let value = libc::rlimit {
        rlim_cur: limit,
        rlim_max: limit,
    };
    // SAFETY: setrlimit only reads `value`.
    if unsafe { libc::setrlimit(libc::RLIMIT_NPROC, &value) } == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}

/// A process of `nobody` that holds one of its places until dropped.
struct Placeholder(Child);

impl Placeholder {
    fn start() -> Self {
        let child = Command::new("sleep")
            .arg("120")
            .uid(NOBODY)
            .gid(NOBODY)
            .spawn()
            .unwrap();
        Self(child)
    }
}

impl Drop for Placeholder {
    fn drop(&mut self) {
        // Killed and reaped: a zombie would still count against the limit.
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Starts `server-cli --workers 2` as `nobody` next to a placeholder: one worker forks,
/// the second fork fails with EAGAIN. `None` when the test cannot change users here.
fn start_limited() -> Option<(RunningServer, Placeholder, BinaryForNobody)> {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        eprintln!("skipped: needs root to run the server as another user");
        return None;
    }
    let binary = BinaryForNobody::copy();
    let mut command = Command::new(binary.path());
    command
        .args([
            "--port",
            "0",
            "--workers",
            "2",
            "--timeout-graceful-shutdown",
            "5",
        ])
        .uid(NOBODY)
        .gid(NOBODY);
    // SAFETY: setrlimit is async-signal-safe; nothing else runs in the pre-exec child.
    unsafe {
        command.pre_exec(|| set_process_limit(NPROC_LIMIT));
    }
    let placeholder = Placeholder::start();
    Some((RunningServer::start_command(command), placeholder, binary))
}

#[test]
fn a_failed_fork_is_retried_until_the_worker_count_is_reached() {
    let _turn = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let Some((mut server, placeholder, _binary)) = start_limited() else {
        return;
    };
    server.wait_for_line("cannot start a worker: cannot fork: Resource temporarily unavailable");
    // The parent serves on with the one worker it has, and keeps retrying with backoff.
    server.wait_for_lines("cannot start a worker", 3);
    assert_eq!(server.workers().len(), 1);
    for _ in 0..20 {
        assert_eq!(http_get(server.addr, "/").map(|r| r.status), Some(200));
    }
    assert!(!server
        .log
        .iter()
        .any(|l| l.contains("all workers are ready")));
    // Forks work again: the second worker starts at the next retry.
    drop(placeholder);
    server.wait_for_line("all workers are ready");
    server.wait_for_workers(2);
    server.signal(Signal::SIGTERM);
    let (status, _) = server.wait_exit(Duration::from_secs(10));
    assert_eq!(status.code(), Some(0), "{}", server.log.join("\n"));
}

#[test]
fn a_stop_while_forks_fail_is_clean() {
    let _turn = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let Some((mut server, _placeholder, _binary)) = start_limited() else {
        return;
    };
    server.wait_for_lines("cannot start a worker", 2);
    server.signal(Signal::SIGTERM);
    let (status, _) = server.wait_exit(Duration::from_secs(10));
    assert_eq!(status.code(), Some(0), "{}", server.log.join("\n"));
    server.wait_for_line("Stopping parent process");
    assert!(server.workers().is_empty());
}
