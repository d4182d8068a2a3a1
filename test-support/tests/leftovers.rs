//! The leftover check fails a program that leaves a process running, names it, and ends it.

#![allow(clippy::unwrap_used)]

use std::process::Command;
use std::time::{Duration, Instant};

fn sleeps_with_parent_gone() -> bool {
    // `sleep 30` processes whose command line we started; bounded wait for them to die.
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let alive = std::fs::read_dir("/proc")
            .unwrap()
            .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok())
            .any(|pid| {
                let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
                let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
                cmdline == b"sleep\x0030\x00" && !stat.contains(") Z")
            });
        if !alive || Instant::now() >= deadline {
            return alive;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn run(how: &str) {
    let output = Command::new(env!("CARGO_BIN_EXE_leave_a_process"))
        .arg(how)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(101), "{stderr}");
    assert!(
        stderr.contains("left process") && stderr.contains("sleep 30"),
        "{stderr}"
    );
    assert!(!sleeps_with_parent_gone(), "the sleep was left running");
}

/// One test, the two cases in turn: each looks for any `sleep 30`, so they must not overlap.
#[test]
fn a_child_or_an_orphaned_grandchild_left_running_fails_the_program_and_is_killed() {
    run("child");
    // The shell's sleep is reparented to the program (its subreaper), not to init.
    run("orphan");
}
