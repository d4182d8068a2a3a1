//! The harness's `--url` + `--disrupt` mode against a server-cli it did not start: the
//! test starts the server, and the disruption command restarts it the way an operator's
//! script does (`kill -TERM`, wait for the exit, start again on the same port). The gap
//! between the two must be refusals only, never a drop.

#![allow(clippy::unwrap_used)]

mod common;

use std::path::Path;
use std::time::{Duration, Instant};

use common::harness::{plan, run};
use common::{is_alive, server_cli, RunningServer};
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use shutdown_harness::{Disruption, Outcome, Scenario, Target, UrlTarget};

/// Reads a pid file, waiting for it to appear (bounded).
fn read_pid(file: &Path) -> u32 {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        if let Some(pid) = std::fs::read_to_string(file)
            .ok()
            .and_then(|text| text.trim().parse().ok())
        {
            return pid;
        }
        assert!(Instant::now() < deadline, "no pid in {}", file.display());
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn a_restart_by_command_refuses_in_the_gap_and_drops_nothing() {
    let dir = std::env::temp_dir().join(format!("url-restart-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let (old_pid_file, new_pid_file) = (dir.join("old.pid"), dir.join("new.pid"));
    // The old server takes 1 s to run its shutdown hooks: a gap with nobody listening.
    let old = RunningServer::start(&[
        "--workers",
        "2",
        "--demo-shutdown-delay",
        "1",
        "--no-access-log",
        "--pid",
        old_pid_file.to_str().unwrap(),
    ]);
    let port = old.addr.port();
    let restart = format!(
        "kill -TERM {pid}; i=0; while [ -e {old} ] && [ $i -lt 1000 ]; do sleep 0.01; i=$((i+1)); done; \
         {server} --port {port} --workers 2 --no-access-log --pid {new} > {log} 2>&1 < /dev/null &",
        pid = old.child.id(),
        old = old_pid_file.display(),
        server = server_cli(),
        new = new_pid_file.display(),
        log = dir.join("new.log").display(),
    );
    let mut plan = plan(Scenario::Seed, &[], 1.0, 3.0);
    plan.target = Target::Url(UrlTarget::parse(&format!("http://127.0.0.1:{port}/")).unwrap());
    plan.set_disruptions(vec![Disruption::Command(restart)]);
    plan.settle = Duration::from_secs(1);
    let report = run(&plan);

    let new_pid = read_pid(&new_pid_file);
    let _ = kill(Pid::from_raw(new_pid as i32), Signal::SIGTERM);
    let deadline = Instant::now() + Duration::from_secs(20);
    while is_alive(new_pid) && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    let s = &report.summary;
    assert_eq!(s.dropped, 0, "{}", report.text());
    assert!(s.refused > 0, "no gap seen\n{}", report.text());
    let command = &s.commands[0];
    assert!(command.success, "{}", report.text());
    // Answered again after the restart: the new server took over the port.
    let answered_after = report
        .requests
        .iter()
        .filter(|r| matches!(r.outcome, Outcome::Ok(_)) && r.start > command.ended)
        .count();
    assert!(answered_after > 0, "{}", report.text());
    assert!(report.passed(), "{}", report.text());
    let _ = std::fs::remove_dir_all(&dir);
}
