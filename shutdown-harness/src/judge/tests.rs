use std::time::Duration;

use nix::sys::signal::Signal;

use super::*;
use crate::launcher::ServerCommand;
use crate::outcome::Outcome;
use crate::target::Target;

fn plan(disruptions: Vec<Disruption>) -> Plan {
    let target = Target::Launch(ServerCommand {
        argv: vec!["server".into()],
    });
    let mut plan = Plan::new(Scenario::Seed, target, "/dev/null".into());
    plan.set_disruptions(disruptions);
    plan.signal_after = Duration::from_secs(1);
    plan.duration = Duration::from_secs(3);
    plan.clients = Vec::new();
    plan.max_exit_after = Duration::from_secs(10);
    plan
}

fn request(start: f64, end: f64, outcome: Outcome) -> RequestRecord {
    RequestRecord {
        client: 0,
        role: Role::Fast,
        start,
        end,
        outcome,
    }
}

fn observed(records: Vec<RequestRecord>, exit: ServerExit) -> Observation {
    Observation {
        server_command: vec!["server".into()],
        records,
        disruptions: vec![1.0],
        commands: Vec::new(),
        exit,
        orphans: Vec::new(),
        workers_at_end: None,
        max_workers: None,
        final_stop_failed: false,
    }
}

fn exited(after_signal: f64) -> ServerExit {
    ServerExit::Exited {
        after_signal,
        status: "exit status: 0".into(),
    }
}

const TERM: Disruption = Disruption::Signal(Signal::SIGTERM);
const HUP: Disruption = Disruption::Signal(Signal::SIGHUP);

#[test]
fn answered_and_refused_requests_around_a_timely_exit_pass() {
    let records = vec![
        request(0.5, 0.51, Outcome::Ok(200)),
        request(1.2, 1.2, Outcome::Refused),
    ];
    let summary = judge(&plan(vec![TERM]), &observed(records, exited(0.01)));
    assert_eq!(summary.failures, Vec::<String>::new());
    assert_eq!((summary.ok, summary.refused, summary.dropped), (1, 1, 0));
    assert_eq!(summary.rows.len(), 2);
}

#[test]
fn any_failure_other_than_a_refusal_is_a_drop_and_fails_the_run() {
    let records = vec![
        request(0.5, 0.51, Outcome::Ok(200)),
        request(1.1, 2.1, Outcome::RequestTimeout),
        request(1.2, 1.3, Outcome::Reset),
    ];
    let summary = judge(&plan(vec![TERM]), &observed(records, exited(0.5)));
    assert_eq!(summary.dropped, 2);
    assert_eq!(summary.failures, vec!["2 requests dropped".to_string()]);
    assert_eq!(summary.first_drop_after_signal, Some(0.30000000000000004));
}

#[test]
fn a_refusal_fails_a_run_where_the_server_must_keep_serving() {
    let records = vec![
        request(0.5, 0.51, Outcome::Ok(200)),
        request(1.5, 1.5, Outcome::Refused),
    ];
    let summary = judge(
        &plan(vec![HUP]),
        &observed(records, ServerExit::KeptServing),
    );
    assert_eq!(
        summary.failures,
        vec!["1 connections refused while the server should have kept serving".to_string()]
    );
}

#[test]
fn requests_on_a_killed_worker_are_reported_apart_within_the_window_only() {
    let records = vec![
        request(0.5, 0.51, Outcome::Ok(200)),
        request(0.9, 1.1, Outcome::Reset),
        request(1.5, 1.6, Outcome::Reset),
    ];
    let plan = plan(vec![Disruption::KillWorker]);
    let summary = judge(&plan, &observed(records, ServerExit::KeptServing));
    assert_eq!((summary.killed_in_flight, summary.dropped), (1, 1));
}

#[test]
fn the_exit_must_match_the_expectation_and_come_in_time() {
    let ok = || vec![request(0.5, 0.51, Outcome::Ok(200))];
    let late = judge(&plan(vec![TERM]), &observed(ok(), exited(12.0)));
    assert_eq!(
        late.failures,
        vec!["the server took 12.000 s to exit".to_string()]
    );
    let gone = judge(&plan(vec![HUP]), &observed(ok(), exited(0.2)));
    assert_eq!(
        gone.failures,
        vec!["the server exited 0.200 s after SIGHUP instead of serving on".to_string()]
    );
    let stuck = judge(&plan(vec![TERM]), &observed(ok(), ServerExit::DidNotExit));
    assert_eq!(
        stuck.failures,
        vec!["the server did not exit within 10.0 s of the signal".to_string()]
    );
}

#[test]
fn workers_at_the_end_orphans_and_a_failed_final_stop_are_failures() {
    let mut plan = plan(vec![HUP]);
    plan.expect_workers = Some(2);
    let mut observation = observed(
        vec![request(0.5, 0.51, Outcome::Ok(200))],
        ServerExit::KeptServing,
    );
    observation.workers_at_end = Some(3);
    observation.orphans = vec![42];
    observation.final_stop_failed = true;
    let summary = judge(&plan, &observation);
    assert_eq!(
        summary.failures,
        vec![
            "1 processes left behind".to_string(),
            "3 workers at the end, expected 2".to_string(),
            "the server did not exit within 10.0 s of the final SIGTERM".to_string(),
        ]
    );
}

#[test]
fn a_run_where_nothing_was_answered_fails() {
    let records = vec![request(1.5, 1.5, Outcome::Refused)];
    let summary = judge(&plan(vec![TERM]), &observed(records, exited(0.01)));
    assert_eq!(
        summary.failures,
        vec!["no request was answered".to_string()]
    );
}

fn url_plan() -> Plan {
    let url = crate::target::UrlTarget::parse("http://127.0.0.1:9/").expect("valid");
    let mut plan = Plan::new(Scenario::Seed, Target::Url(url), "/dev/null".into());
    plan.set_disruptions(vec![Disruption::Command("restart".into())]);
    plan
}

fn command(success: bool, output: &str) -> crate::observation::CommandRun {
    crate::observation::CommandRun {
        command: "restart".into(),
        started: 1.0,
        ended: 2.0,
        status: if success {
            "exit status: 0"
        } else {
            "exit status: 3"
        }
        .into(),
        success,
        output: output.into(),
        steps: Vec::new(),
    }
}

fn step(at: f64, line: &str) -> crate::observation::CommandStep {
    crate::observation::CommandStep {
        at,
        line: line.into(),
    }
}

#[test]
fn each_drop_is_counted_against_the_last_step_printed_before_it_failed() {
    let mut deploy = command(true, "");
    deploy.steps = vec![
        step(2.0, "app1: SIGTERM"),
        step(3.0, "app1: in rotation again"),
        step(5.0, "app2: SIGKILL"),
    ];
    let drops = crate::judge::drops_by_step(&[deploy], &[1.0, 2.5, 5.0, 5.1, 9.0]);
    let counted: Vec<(Option<f64>, &str, usize)> = drops
        .iter()
        .map(|d| (d.at, d.step.as_str(), d.dropped))
        .collect();
    assert_eq!(
        counted,
        vec![
            (None, "before the first step", 1),
            (Some(2.0), "app1: SIGTERM", 1),
            (Some(5.0), "app2: SIGKILL", 3),
        ]
    );
    assert!(crate::judge::drops_by_step(&[command(true, "")], &[1.0]).is_empty());
}

#[test]
fn a_drop_in_a_judged_run_is_tied_to_the_command_step_before_it() {
    let plan = url_plan();
    let records = vec![
        request(0.5, 0.6, Outcome::Ok(200)),
        request(1.5, 1.7, Outcome::EofBeforeResponse),
    ];
    let mut observation = observed(records, ServerExit::NotLaunched);
    let mut deploy = command(true, "");
    deploy.steps = vec![step(1.2, "app2: SIGTERM"), step(1.9, "app2: exited")];
    observation.commands = vec![deploy];
    let summary = judge(&plan, &observation);
    assert_eq!(summary.dropped, 1);
    assert_eq!(summary.drops_by_step.len(), 1);
    assert_eq!(summary.drops_by_step[0].step, "app2: SIGTERM");
}

#[test]
fn a_server_not_launched_is_judged_on_its_requests_and_the_commands_only() {
    let plan = url_plan();
    assert_eq!(plan.expectation, Expectation::RequestsOnly);
    let records = vec![
        request(0.5, 0.6, Outcome::Ok(200)),
        request(1.5, 1.5, Outcome::Refused),
        request(1.6, 1.6, Outcome::StreamRefused),
    ];
    let mut observation = observed(records.clone(), ServerExit::NotLaunched);
    observation.commands = vec![command(true, "")];
    let summary = judge(&plan, &observation);
    assert!(summary.failures.is_empty(), "{:?}", summary.failures);
    assert_eq!((summary.ok, summary.refused, summary.dropped), (1, 2, 0));

    let mut failed = observed(records, ServerExit::NotLaunched);
    failed.commands = vec![command(false, "starting\nunit app.service not found\n\n")];
    let failures = judge(&plan, &failed).failures;
    assert_eq!(
        failures,
        ["the disruption command `restart` failed (exit status: 3): unit app.service not found"]
    );
}
