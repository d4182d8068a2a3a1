//! One harness run: launch, wait until ready, drive traffic, signal, watch the exit.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use serde::Serialize;
use tokio::process::Child;
use tokio::task::JoinSet;

use crate::client::{send, Connection, RequestSpec};
use crate::error::HarnessError;
use crate::launcher::{free_port, kill_group, launch, live_group_members, ServerCommand};
use crate::outcome::Outcome;
use crate::report::Report;
use crate::scenario::{ClientGroup, Role, Scenario};

/// Most requests one client may send in a run (every loop is bounded in count as well as
/// in time).
const MAX_REQUESTS_PER_CLIENT: usize = 2_000_000;
/// Pause of a client after a refused connection.
const REFUSED_RETRY_PAUSE: Duration = Duration::from_millis(10);
/// How long processes of the server's group may outlive it before they count as orphans.
const ORPHAN_GRACE: Duration = Duration::from_secs(1);
/// Port of a server command without `{port}` when `--port` is not given (uvicorn's default).
const DEFAULT_PORT: u16 = 8000;

/// Everything a run needs.
#[derive(Debug, Clone)]
pub struct Plan {
    /// The traffic shape (for the report).
    pub scenario: Scenario,
    /// The server under test.
    pub server: ServerCommand,
    /// Port to use when the command has no `{port}`.
    pub port: Option<u16>,
    /// Signal to send to the launched process.
    pub signal: Signal,
    /// When to send it, after traffic starts.
    pub signal_after: Duration,
    /// How long traffic runs in all.
    pub duration: Duration,
    /// The clients.
    pub clients: Vec<ClientGroup>,
    /// Longest acceptable time from the signal to the server's exit.
    pub max_exit_after: Duration,
    /// Longest wait for the server to answer its first request.
    pub ready_timeout: Duration,
    /// Whether the signal should make the server exit (false for reload).
    pub expect_exit: bool,
    /// Where the server's output goes.
    pub server_log: PathBuf,
}

/// One request as the harness saw it. Times are seconds since traffic started.
#[derive(Debug, Clone, Copy, Serialize)]
pub struct RequestRecord {
    /// Which client sent it.
    pub client: u32,
    /// Whether its failure counts as a drop.
    pub role: Role,
    /// When it started.
    pub start: f64,
    /// When its outcome was known.
    pub end: f64,
    /// How it ended.
    pub outcome: Outcome,
}

/// How the server process ended.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "snake_case", tag = "kind")]
pub enum ServerExit {
    /// It exited by itself after the signal.
    Exited {
        /// Seconds after the signal.
        after_signal: f64,
        /// Exit status, or the signal that killed it.
        status: String,
    },
    /// It exited before the signal was sent.
    ExitedBeforeSignal {
        /// Exit status.
        status: String,
    },
    /// It was still running when the harness gave up waiting, and was killed.
    DidNotExit,
    /// Reload scenario: it kept running through the signal, and was then stopped.
    KeptServing,
}

/// Runs the plan and returns the report.
pub async fn run(plan: &Plan) -> Result<Report, HarnessError> {
    let port = match plan.port {
        Some(port) => port,
        None if plan.server.has_port_placeholder() => {
            free_port().map_err(|e| HarnessError::Io("cannot find a free port", e))?
        }
        None => DEFAULT_PORT,
    };
    let argv = plan.server.resolved(port);
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    let mut child = launch(&argv, &plan.server_log)?;
    let pid = child.id().unwrap_or(0);
    if let Err(e) = wait_until_ready(addr, &mut child, plan).await {
        kill_group(pid);
        let _ = child.wait().await;
        return Err(e);
    }

    let started = Instant::now();
    let traffic_end = started + plan.duration;
    let mut clients = JoinSet::new();
    let mut next_id = 0u32;
    for group in &plan.clients {
        for _ in 0..group.count {
            clients.spawn(client_loop(
                next_id,
                group.clone(),
                addr,
                started,
                traffic_end,
            ));
            next_id += 1;
        }
    }

    let signal_at = started + plan.signal_after;
    let mut signal_time = plan.signal_after.as_secs_f64();
    let early_exit = tokio::select! {
        status = child.wait() => Some(status),
        () = tokio::time::sleep_until(signal_at.into()) => None,
    };
    let exit = match early_exit {
        Some(status) => ServerExit::ExitedBeforeSignal {
            status: describe(status),
        },
        None => {
            let sent_at = Instant::now();
            signal_time = sent_at.duration_since(started).as_secs_f64();
            let _ = kill(Pid::from_raw(pid as i32), plan.signal);
            watch_exit(&mut child, plan, sent_at, traffic_end).await
        }
    };

    let mut records = Vec::new();
    while let Some(done) = clients.join_next().await {
        if let Ok(mut r) = done {
            records.append(&mut r);
        }
    }
    let exit = match exit {
        ServerExit::KeptServing => stop_after_reload(&mut child, plan).await,
        other => other,
    };
    let orphans = lingering_group_members(pid).await;
    if !orphans.is_empty() {
        kill_group(pid);
    }
    if matches!(exit, ServerExit::DidNotExit) {
        kill_group(pid);
        let _ = child.wait().await;
    }
    Ok(Report::new(plan, argv, records, signal_time, exit, orphans))
}

async fn wait_until_ready(
    addr: SocketAddr,
    child: &mut Child,
    plan: &Plan,
) -> Result<(), HarnessError> {
    let deadline = Instant::now() + plan.ready_timeout;
    let probe = RequestSpec {
        method: "GET",
        path: "/".into(),
        body: Vec::new(),
        connect_timeout: Duration::from_millis(200),
        request_timeout: Duration::from_secs(2),
    };
    while Instant::now() < deadline {
        if let Ok(Some(status)) = child.try_wait() {
            return Err(HarnessError::ExitedEarly {
                status: status.to_string(),
                log: plan.server_log.clone(),
            });
        }
        if let (Outcome::Ok(_), _) = send(addr, &probe, false, None).await {
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    Err(HarnessError::NotReady {
        addr,
        secs: plan.ready_timeout.as_secs_f64(),
        log: plan.server_log.clone(),
    })
}

/// After the signal: waits for the exit (bounded by `max_exit_after`), or, for a reload,
/// checks that the server is still running when traffic ends.
async fn watch_exit(
    child: &mut Child,
    plan: &Plan,
    sent_at: Instant,
    traffic_end: Instant,
) -> ServerExit {
    if !plan.expect_exit {
        return tokio::select! {
            status = child.wait() => ServerExit::Exited {
                after_signal: sent_at.elapsed().as_secs_f64(),
                status: describe(status),
            },
            () = tokio::time::sleep_until(traffic_end.into()) => ServerExit::KeptServing,
        };
    }
    match tokio::time::timeout(plan.max_exit_after, child.wait()).await {
        Ok(status) => ServerExit::Exited {
            after_signal: sent_at.elapsed().as_secs_f64(),
            status: describe(status),
        },
        Err(_) => ServerExit::DidNotExit,
    }
}

/// Stops a server that went through a reload, with SIGTERM and a bounded wait.
async fn stop_after_reload(child: &mut Child, plan: &Plan) -> ServerExit {
    let pid = child.id().unwrap_or(0);
    let _ = kill(Pid::from_raw(pid as i32), Signal::SIGTERM);
    match tokio::time::timeout(plan.max_exit_after, child.wait()).await {
        Ok(_) => ServerExit::KeptServing,
        Err(_) => ServerExit::DidNotExit,
    }
}

/// Members of the server's process group still running once it has exited. A helper that
/// is already on its way out (it noticed its parent's exit) gets a short grace.
async fn lingering_group_members(pgid: u32) -> Vec<u32> {
    let give_up = Instant::now() + ORPHAN_GRACE;
    loop {
        let members = live_group_members(pgid);
        if members.is_empty() || Instant::now() >= give_up {
            return members;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn describe(status: std::io::Result<std::process::ExitStatus>) -> String {
    match status {
        Ok(s) => s.to_string(),
        Err(e) => format!("unknown ({e})"),
    }
}

/// One client: requests until `end`, each followed by the group's interval.
async fn client_loop(
    id: u32,
    group: ClientGroup,
    addr: SocketAddr,
    started: Instant,
    end: Instant,
) -> Vec<RequestRecord> {
    let mut records = Vec::new();
    let mut connection: Option<Connection> = None;
    while records.len() < MAX_REQUESTS_PER_CLIENT {
        let start = Instant::now();
        if start >= end {
            break;
        }
        let (outcome, kept) = tokio::select! {
            result = send(addr, &group.request, group.keep_alive, connection.take()) => result,
            // A request still waiting when traffic ends is cut short and not counted:
            // only slow requests can be, and the report says how many.
            () = tokio::time::sleep_until(end.into()), if group.role == Role::Slow => break,
        };
        connection = kept;
        records.push(RequestRecord {
            client: id,
            role: group.role,
            start: start.duration_since(started).as_secs_f64(),
            end: started.elapsed().as_secs_f64(),
            outcome,
        });
        // A refused client retries after a short pause, as a real one does; hammering a
        // closed port in a tight loop would only flood the records.
        let pause = if outcome == Outcome::Refused {
            group.interval.max(REFUSED_RETRY_PAUSE)
        } else {
            group.interval
        };
        if !pause.is_zero() {
            tokio::time::sleep(pause).await;
        }
    }
    records
}
