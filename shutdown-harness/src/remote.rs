//! A run against a server the harness did not launch (`--url`): traffic, the disruption
//! commands on schedule, and traffic on until the last command has ended and the service
//! has had time to settle. Only requests are observed; the server's processes are not the
//! harness's to check.

use std::time::{Duration, Instant};

use crate::disrupt_command::run_command;
use crate::error::HarnessError;
use crate::observation::{CommandRun, Observation, ServerExit};
use crate::plan::{Disruption, Plan};
use crate::run::{transport_for, MAX_DISRUPTIONS};
use crate::target::UrlTarget;
use crate::traffic::{readiness_probe, wait_until_answered, Traffic};

/// The longest wait for the host name to resolve.
const RESOLVE_LIMIT: Duration = Duration::from_secs(10);

/// Checks the URL answers, then drives the traffic and runs the disruption commands.
pub async fn observe(plan: &Plan, url: &UrlTarget) -> Result<Observation, HarnessError> {
    if let Some(d) = plan
        .disruptions
        .iter()
        .find(|d| matches!(d, Disruption::Signal(_) | Disruption::KillWorker))
    {
        return Err(HarnessError::Usage(format!(
            "{} needs a server the harness launches; with --url, use --disrupt 'COMMAND'",
            d.label()
        )));
    }
    let addr = url
        .resolve(RESOLVE_LIMIT)
        .await
        .map_err(HarnessError::Resolve)?;
    let transport = transport_for(plan, addr, &url.host, url.scheme)?;
    let probe = readiness_probe(plan);
    if let Err(failure) = wait_until_answered(&transport, &probe, plan.ready_timeout, || None).await
    {
        return Err(HarnessError::NotReady {
            target: transport.describe(),
            secs: plan.ready_timeout.as_secs_f64(),
            last: failure.detail,
            log: None,
        });
    }

    let started = Instant::now();
    let traffic = Traffic::start(plan, &transport, started);
    let (disruptions, commands) = disrupt(plan, started).await;
    let after_commands = commands
        .iter()
        .map(|c| started + Duration::from_secs_f64(c.ended) + plan.settle)
        .max();
    let end = after_commands.map_or(started + plan.duration, |t| t.max(started + plan.duration));
    let records = traffic.finish_at(end).await;
    Ok(Observation {
        server_command: vec![url.to_string()],
        records,
        disruptions,
        commands,
        exit: ServerExit::NotLaunched,
        orphans: Vec::new(),
        workers_at_end: None,
        max_workers: None,
        final_stop_failed: false,
    })
}

/// Carries out the disruptions at `signal_after` and then every `repeat_every` (each
/// command after the previous one has ended) until `duration`; stops after a command that
/// failed. Returns when each started, and the commands' runs.
async fn disrupt(plan: &Plan, started: Instant) -> (Vec<f64>, Vec<CommandRun>) {
    let mut times = Vec::new();
    let mut commands = Vec::new();
    let end = started + plan.duration;
    let mut next = started + plan.signal_after;
    for index in 0..MAX_DISRUPTIONS {
        tokio::time::sleep_until(next.into()).await;
        match plan.disruption_at(index) {
            Disruption::Command(command) => {
                let run = run_command(command, started, plan.command_timeout).await;
                times.push(run.started);
                let failed = !run.success;
                commands.push(run);
                if failed {
                    break;
                }
            }
            _ => times.push(started.elapsed().as_secs_f64()),
        }
        let Some(every) = plan.repeat_every.filter(|d| !d.is_zero()) else {
            break;
        };
        next += every;
        if next >= end {
            break;
        }
    }
    (times, commands)
}
