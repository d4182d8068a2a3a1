//! One harness run, its I/O only: launch, wait until ready, drive traffic, disrupt, watch
//! the exit, and record it all as an [`Observation`]. A server the harness did not launch
//! (`--url`) is observed by [`crate::remote`].

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use tokio::process::Child;

use crate::error::HarnessError;
use crate::launcher::ServerCommand;
use crate::launcher::ServerGroup;
use crate::launcher::{children_of, free_port, kill_group, launch, live_group_members};
use crate::observation::{Observation, ServerExit};
use crate::plan::{Disruption, Expectation, Plan};
use crate::report::Report;
use crate::target::{Scheme, Target};
use crate::traffic::{readiness_probe, wait_until_answered, Traffic};
use crate::transport::Transport;

/// Most disruptions in one run.
pub const MAX_DISRUPTIONS: usize = 10_000;
/// How long processes of the server's group may outlive it before they count as orphans.
const ORPHAN_GRACE: Duration = Duration::from_secs(1);
/// Port of a server command without `{port}` when `--port` is not given (uvicorn's default).
const DEFAULT_PORT: u16 = 8000;

/// Runs the plan and returns the report: [`observe`] then [`Report::new`].
pub async fn run(plan: &Plan) -> Result<Report, HarnessError> {
    let observation = observe(plan).await?;
    Ok(Report::new(plan, observation))
}

/// Drives the traffic, disrupts, and records what happened. No judgement here: that is
/// [`crate::judge`]'s.
pub async fn observe(plan: &Plan) -> Result<Observation, HarnessError> {
    match &plan.target {
        Target::Launch(command) => observe_launched(plan, command).await,
        Target::Url(url) => crate::remote::observe(plan, url).await,
    }
}

/// The transport of a plan's clients to `addr`, named `host`.
pub fn transport_for(
    plan: &Plan,
    addr: SocketAddr,
    host: &str,
    scheme: Scheme,
) -> Result<Transport, HarnessError> {
    let connect_timeout = plan
        .clients
        .first()
        .map_or(Duration::from_secs(1), |g| g.timeouts.connect);
    Transport::new(
        addr,
        host,
        scheme,
        plan.client_library,
        plan.http_version,
        &plan.trust,
        connect_timeout,
    )
    .map_err(HarnessError::Transport)
}

/// Launches the server, waits until it answers, then traffic, disruptions and the exit.
async fn observe_launched(
    plan: &Plan,
    command: &ServerCommand,
) -> Result<Observation, HarnessError> {
    if let Some(d) = plan
        .disruptions
        .iter()
        .find(|d| matches!(d, Disruption::Command(_)))
    {
        return Err(HarnessError::Usage(format!(
            "{} is a disruption command: only for a server the harness did not launch (--url)",
            d.label()
        )));
    }
    let port = match plan.port {
        Some(port) => port,
        None if command.has_port_placeholder() => {
            free_port().map_err(|e| HarnessError::Io("cannot find a free port", e))?
        }
        None => DEFAULT_PORT,
    };
    let argv = command.resolved(port);
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    let transport = transport_for(plan, addr, "127.0.0.1", plan.launch_scheme)?;
    let mut child = launch(&argv, &plan.server_log)?;
    let pid = child.id().unwrap_or(0);
    let _group = ServerGroup::new(pid);
    if let Err(e) = wait_until_ready(&transport, &mut child, plan).await {
        kill_group(pid);
        let _ = child.wait().await;
        return Err(e);
    }

    let started = Instant::now();
    let traffic_end = started + plan.duration;
    let traffic = Traffic::start(plan, &transport, started);
    let workers = tokio::spawn(count_workers(pid, traffic_end));
    let (exit, disruptions) = disrupt_and_watch(&mut child, plan, pid, started, traffic_end).await;
    let records = traffic.finish_at(traffic_end).await;
    let max_workers = workers.await.ok();
    let workers_at_end = match (&exit, plan.expect_workers) {
        (ServerExit::KeptServing, Some(n)) => Some(wait_for_workers(pid, n).await),
        _ => None,
    };
    let (orphans, final_stop_failed) = end_server(&mut child, plan, pid, &exit).await;
    Ok(Observation {
        server_command: argv,
        records,
        disruptions,
        commands: Vec::new(),
        exit,
        orphans,
        workers_at_end,
        max_workers,
        final_stop_failed,
    })
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
        ServerExit::NotLaunched => {}
    }
    if !orphans.is_empty() {
        kill_group(pid);
    }
    (orphans, final_stop_failed)
}

/// Carries out the disruption once; returns when, in seconds since traffic started.
fn disrupt(disruption: &Disruption, pid: u32, started: Instant) -> f64 {
    let at = started.elapsed().as_secs_f64();
    match disruption {
        Disruption::Signal(signal) => {
            let _ = kill(Pid::from_raw(pid as i32), *signal);
        }
        // Refused by `observe_launched` before the server starts.
        Disruption::Nothing | Disruption::Command(_) => {}
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

/// The most workers (children of `pid`) seen at once until `end`, sampled every 50 ms:
/// how many old workers a restart leaves draining beside the new ones.
async fn count_workers(pid: u32, end: Instant) -> usize {
    let mut most = 0;
    while Instant::now() < end {
        most = most.max(children_of(pid).len());
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    most
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

/// Waits until the launched server answers the clients' request (bounded by the plan's
/// ready timeout), or fails at once if it exits.
async fn wait_until_ready(
    transport: &Transport,
    child: &mut Child,
    plan: &Plan,
) -> Result<(), HarnessError> {
    let probe = readiness_probe(plan);
    let mut exited = || match child.try_wait() {
        Ok(Some(status)) => Some(status.to_string()),
        _ => None,
    };
    let mut exit_status = None;
    let result = wait_until_answered(transport, &probe, plan.ready_timeout, || {
        exit_status = exited();
        exit_status.clone()
    })
    .await;
    match (result, exit_status) {
        (Ok(()), _) => Ok(()),
        (Err(_), Some(status)) => Err(HarnessError::ExitedEarly {
            status,
            log: plan.server_log.clone(),
        }),
        (Err(failure), None) => Err(HarnessError::NotReady {
            target: transport.describe(),
            secs: plan.ready_timeout.as_secs_f64(),
            last: failure.detail,
            log: Some(plan.server_log.clone()),
        }),
    }
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
        Expectation::KeepsServing | Expectation::RequestsOnly => tokio::select! {
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
