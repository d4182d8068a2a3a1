//! Descendants a test program left running: found at its exit, killed, and reported.

use std::sync::Once;
use std::time::{Duration, Instant};

use nix::sys::signal::{kill, killpg, Signal};
use nix::unistd::{getpgid, Pid};

/// How long processes just killed by a test may take to die before they count as left.
const DYING_GRACE: Duration = Duration::from_secs(3);

/// Exit status of a test program that left processes running (cargo test's for a failure).
const LEFT_PROCESSES_STATUS: i32 = 101;

/// From the first call on (later calls do nothing): this process adopts its orphaned
/// descendants (`PR_SET_CHILD_SUBREAPER`: a server whose parent exited is reparented here,
/// not to init), and when it exits, any live child left is listed on stderr, killed with
/// its process group, and the exit status becomes 101, so that `cargo test` fails.
pub fn watch_for_leftovers() {
    static INSTALLED: Once = Once::new();
    INSTALLED.call_once(|| {
        if let Err(e) = nix::sys::prctl::set_child_subreaper(true) {
            eprintln!("warning: cannot adopt orphaned test processes: {e}");
        }
        // SAFETY: `check_at_exit` is an `extern "C" fn()` that never unwinds (it catches
        // panics), as atexit requires.
        if unsafe { libc::atexit(check_at_exit) } != 0 {
            eprintln!("warning: cannot check for leftover test processes at exit");
        }
    });
}

extern "C" fn check_at_exit() {
    let left = std::panic::catch_unwind(end_leftovers).unwrap_or_default();
    if !left.is_empty() {
        // SAFETY: _exit ends the process at once; nothing runs after it.
        unsafe { libc::_exit(LEFT_PROCESSES_STATUS) };
    }
}

/// Waits (bounded) for children that are still dying, then kills and reports the rest.
fn end_leftovers() -> Vec<u32> {
    let me = std::process::id();
    let give_up = Instant::now() + DYING_GRACE;
    let mut left = live_children(me);
    while !left.is_empty() && Instant::now() < give_up {
        std::thread::sleep(Duration::from_millis(20));
        left = live_children(me);
    }
    for &pid in &left {
        eprintln!(
            "error: this test program left process {pid} running: {}",
            command_line(pid)
        );
        let pid = Pid::from_raw(pid as i32);
        match getpgid(Some(pid)) {
            // Its own group (a server launched with its workers): end them all.
            Ok(group) if group != getpgid(None).unwrap_or(group) => {
                let _ = killpg(group, Signal::SIGKILL);
            }
            _ => {
                let _ = kill(pid, Signal::SIGKILL);
            }
        }
    }
    left
}

/// Live (not zombie) children of `parent`, from `/proc`.
pub fn live_children(parent: u32) -> Vec<u32> {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| {
            let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
                return false;
            };
            let fields: Vec<&str> = stat
                .rsplit_once(')')
                .map(|(_, rest)| rest.split_whitespace().collect())
                .unwrap_or_default();
            fields.len() > 1 && fields[0] != "Z" && fields[1] == parent.to_string()
        })
        .collect()
}

/// A process's command line, for the report.
fn command_line(pid: u32) -> String {
    std::fs::read(format!("/proc/{pid}/cmdline"))
        .map(|raw| {
            raw.split(|&b| b == 0)
                .filter(|a| !a.is_empty())
                .map(|a| String::from_utf8_lossy(a).into_owned())
                .collect::<Vec<_>>()
                .join(" ")
        })
        .unwrap_or_default()
}
