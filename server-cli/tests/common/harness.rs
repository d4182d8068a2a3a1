//! Running the shutdown harness against `server-cli` from the tests.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;
use std::time::Duration;

use shutdown_harness::{Plan, Report, Scenario, ServerCommand, Target, TrafficOverrides};

use super::server_cli;

/// Numbers each run's server log.
static RUN_NUMBER: AtomicUsize = AtomicUsize::new(0);

/// Load tests share two cores: run them one at a time so they measure the server, not
/// each other.
static ONE_AT_A_TIME: Mutex<()> = Mutex::new(());

pub fn plan(scenario: Scenario, server_args: &[&str], signal_after: f64, duration: f64) -> Plan {
    plan_with(
        scenario,
        server_args,
        signal_after,
        duration,
        TrafficOverrides::default(),
    )
}

pub fn plan_with(
    scenario: Scenario,
    server_args: &[&str],
    signal_after: f64,
    duration: f64,
    overrides: TrafficOverrides,
) -> Plan {
    let mut argv = vec![server_cli().to_string(), "--port".into(), "{port}".into()];
    argv.extend(server_args.iter().map(|a| a.to_string()));
    let log = std::env::temp_dir().join(format!(
        "server-cli-test-{}-{}.log",
        std::process::id(),
        RUN_NUMBER.fetch_add(1, Ordering::Relaxed)
    ));
    let mut plan = Plan::new(scenario, Target::Launch(ServerCommand { argv }), log);
    plan.signal_after = Duration::from_secs_f64(signal_after);
    plan.duration = Duration::from_secs_f64(duration);
    plan.clients = scenario.clients(overrides);
    plan.max_exit_after = Duration::from_secs(15);
    plan.ready_timeout = Duration::from_secs(20);
    plan
}

pub fn run(plan: &Plan) -> Report {
    let _turn = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    let report = runtime.block_on(shutdown_harness::run(plan)).unwrap();
    println!("{}", report.text());
    report
}
