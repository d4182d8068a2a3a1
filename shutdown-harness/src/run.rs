//! One harness run, its I/O only: launch, wait until ready, drive traffic, disrupt, watch
//! the exit, and record it all as an [`Observation`].

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use tokio::process::Child;
use tokio::task::JoinSet;

use crate::client::{send, Connection, RequestSpec};
use crate::error::HarnessError;
use crate::launcher::{children_of, free_port, kill_group, launch, live_group_members};
use crate::observation::{Observation, RequestRecord, ServerExit};
use crate::outcome::Outcome;
use crate::plan::{Disruption, Expectation, Plan};
use crate::report::Report;
use crate::scenario::{ClientGroup, Role};

/// Most requests one client may send in a run (every loop is bounded in count as well as
/// in time).
const MAX_REQUESTS_PER_CLIENT: usize = 2_000_000;
/// Most disruptions in one run.
const MAX_DISRUPTIONS: usize = 10_000;
/// Pause of a client after a refused connection.
const REFUSED_RETRY_PAUSE: Duration = Duration::from_millis(10);
/// How long processes of the server's group may outlive it before they count as orphans.
const ORPHAN_GRACE: Duration = Duration::from_secs(1);
/// Port of a server command without `{port}` when `--port` is not given (uvicorn's default).
const DEFAULT_PORT: u16 = 8000;

/// Runs the plan and returns the report: [`observe`] then [`Report::new`].
pub async fn run(plan: &Plan) -> Result<Report, HarnessError> {
    let observation = observe(plan).await?;
    Ok(Report::new(plan, observation))
}

/// Launches the server, drives the traffic, disrupts, and records what happened. No
/// judgement here: that is [`crate::judge`]'s.
pub async fn observe(plan: &Plan) -> Result<Observation, HarnessError> {
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
    let clients = start_clients(plan, addr, started, traffic_end);
    let (exit, disruptions) = disrupt_and_watch(&mut child, plan, pid, started, traffic_end).await;
    let records = collect(clients).await;
    let workers_at_end = match (&exit, plan.expect_workers) {
        (ServerExit::KeptServing, Some(n)) => Some(wait_for_workers(pid, n).await),
        _ => None,
    };
    let (orphans, final_stop_failed) = end_server(&mut child, plan, pid, &exit).await;
    Ok(Observation {
        server_command: argv,
        records,
        disruptions,
        exit,
        orphans,
        workers_at_end,
        final_stop_failed,
    })
}

/// Starts every client of the plan.
fn start_clients(
    plan: &Plan,
    addr: SocketAddr,
    started: Instant,
    traffic_end: Instant,
) -> JoinSet<Vec<RequestRecord>> {
    let mut clients = JoinSet::new();
    let groups = plan
        .clients
        .iter()
        .flat_map(|group| std::iter::repeat_n(group, group.count));
    for (id, group) in (0u32..).zip(groups) {
        clients.spawn(client_loop(id, group.clone(), addr, started, traffic_end));
    }
    clients
}

/// Every client's records, once traffic has ended.
async fn collect(mut clients: JoinSet<Vec<RequestRecord>>) -> Vec<RequestRecord> {
    let mut records = Vec::new();
    while let Some(done) = clients.join_next().await {
        if let Ok(mut r) = done {
            records.append(&mut r);
        }
    }
    records
}

/// Waits for the first disruption's time, carries out the disruptions, and watches how
/// the server ends; returns that and when each disruption happened.
async fn disrupt_and_watch(
    child: &mut Child,
    plan: &Plan,
    pid: u32,
    started: Instant,
    traffic_end: Instant,
) -> (ServerExit, Vec<f64>) {
    let first_at = started + plan.signal_after;
    let early_exit = tokio::select! {
        status = child.wait() => Some(status),
        () = tokio::time::sleep_until(first_at.into()) => None,
    };
    if let Some(status) = early_exit {
        let exit = ServerExit::ExitedBeforeSignal {
            status: describe(status),
        };
        return (exit, Vec::new());
    }
    let sent_at = Instant::now();
    let mut disruptions = vec![disrupt(plan.disruption_at(0), pid, started)];
    let (mut repeats, exited_early) =
        repeat_disruption(child, plan, pid, started, traffic_end).await;
    disruptions.append(&mut repeats);
    let exit = watch_exit(child, plan, sent_at, traffic_end, exited_early).await;
    (exit, disruptions)
}

/// Stops what is left of the server after the traffic; returns the processes it left
/// behind and whether a final SIGTERM failed to stop a server that kept serving.
async fn end_server(
    child: &mut Child,
    plan: &Plan,
    pid: u32,
    exit: &ServerExit,
) -> (Vec<u32>, bool) {
    let mut orphans = Vec::new();
    let mut final_stop_failed = false;
    match exit {
        ServerExit::KeptServing => {
            // The run ends with a clean stop, which must work after all that happened.
            let _ = kill(Pid::from_raw(pid as i32), Signal::SIGTERM);
            if tokio::time::timeout(plan.max_exit_after, child.wait())
                .await
                .is_err()
            {
                kill_group(pid);
                let _ = child.wait().await;
                final_stop_failed = true;
            }
            orphans = lingering_group_members(pid).await;
        }
        ServerExit::HandedOver { .. } => stop_new_generation(pid, plan).await,
        ServerExit::DidNotExit => {
            kill_group(pid);
            let _ = child.wait().await;
        }
        ServerExit::Exited { .. } | ServerExit::ExitedBeforeSignal { .. } => {
            orphans = lingering_group_members(pid).await;
        }
    }
    if !orphans.is_empty() {
        kill_group(pid);
    }
    (orphans, final_stop_failed)
}

/// Carries out the disruption once; returns when, in seconds since traffic started.
fn disrupt(disruption: Disruption, pid: u32, started: Instant) -> f64 {
    let at = started.elapsed().as_secs_f64();
    match disruption {
        Disruption::Signal(signal) => {
            let _ = kill(Pid::from_raw(pid as i32), signal);
        }
        Disruption::Nothing => {}
        Disruption::KillWorker => match children_of(pid).first() {
            Some(&worker) => {
                let _ = kill(Pid::from_raw(worker as i32), Signal::SIGKILL);
            }
            None => eprintln!("warning: the server has no worker process to kill"),
        },
    }
    at
}

/// Repeats the disruption every `plan.repeat_every` until traffic ends (if asked to);
/// returns the times. Stops early if the server exits.
async fn repeat_disruption(
    child: &mut Child,
    plan: &Plan,
    pid: u32,
    started: Instant,
    traffic_end: Instant,
) -> (Vec<f64>, Option<std::io::Result<std::process::ExitStatus>>) {
    let mut times = Vec::new();
    let Some(every) = plan.repeat_every.filter(|d| !d.is_zero()) else {
        return (times, None);
    };
    let mut next = started + plan.signal_after + every;
    let mut index = 1;
    while next < traffic_end && index < MAX_DISRUPTIONS {
        tokio::select! {
            status = child.wait() => return (times, Some(status)),
            () = tokio::time::sleep_until(next.into()) => {
                times.push(disrupt(plan.disruption_at(index), pid, started));
            }
        }
        next += every;
        index += 1;
    }
    (times, None)
}

/// Waits (up to 10 s, for respawns and scaling to settle) until the server has `n` workers;
/// returns how many it has.
async fn wait_for_workers(pid: u32, n: usize) -> usize {
    let give_up = Instant::now() + Duration::from_secs(10);
    loop {
        let count = children_of(pid).len();
        if count == n || Instant::now() >= give_up {
            return count;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Stops what a binary upgrade left running (the new generation, same process group):
/// SIGTERM to the group, a bounded wait, then SIGKILL.
async fn stop_new_generation(pgid: u32, plan: &Plan) {
    let _ = nix::sys::signal::killpg(Pid::from_raw(pgid as i32), Signal::SIGTERM);
    let give_up = Instant::now() + plan.max_exit_after;
    while !live_group_members(pgid).is_empty() && Instant::now() < give_up {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    kill_group(pgid);
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

/// After the first disruption: runs the repeats, and waits for the outcome the plan
/// expects — the exit (bounded by `max_exit_after`), the server still running when traffic
/// ends, or the launched parent leaving after a hand-over.
async fn watch_exit(
    child: &mut Child,
    plan: &Plan,
    sent_at: Instant,
    traffic_end: Instant,
    exited_during_repeats: Option<std::io::Result<std::process::ExitStatus>>,
) -> ServerExit {
    let exited = |status| ServerExit::Exited {
        after_signal: sent_at.elapsed().as_secs_f64(),
        status: describe(status),
    };
    if let Some(status) = exited_during_repeats {
        return exited(status);
    }
    match plan.expectation {
        Expectation::KeepsServing => tokio::select! {
            status = child.wait() => exited(status),
            () = tokio::time::sleep_until(traffic_end.into()) => ServerExit::KeptServing,
        },
        Expectation::Exits => match tokio::time::timeout(plan.max_exit_after, child.wait()).await {
            Ok(status) => exited(status),
            Err(_) => ServerExit::DidNotExit,
        },
        Expectation::HandsOver => {
            match tokio::time::timeout(plan.max_exit_after, child.wait()).await {
                Ok(_) => ServerExit::HandedOver {
                    after_signal: sent_at.elapsed().as_secs_f64(),
                },
                Err(_) => ServerExit::DidNotExit,
            }
        }
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
