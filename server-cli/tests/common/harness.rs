//! Running the shutdown harness against `server-cli` from the tests.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;
use std::time::Duration;

use shutdown_harness::{Plan, Report, Scenario, ServerCommand, TrafficOverrides};

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
    Plan {
        scenario,
        server: ServerCommand { argv },
        port: None,
        disruptions: vec![shutdown_harness::Disruption::default_for(scenario)],
        expect_workers: None,
        signal_after: Duration::from_secs_f64(signal_after),
        repeat_every: None,
        duration: Duration::from_secs_f64(duration),
        clients: scenario.clients(overrides),
        max_exit_after: Duration::from_secs(15),
        ready_timeout: Duration::from_secs(20),
        expectation: shutdown_harness::Disruption::default_for(scenario).expectation(),
        server_log: std::env::temp_dir().join(format!(
            "server-cli-test-{}-{}.log",
            std::process::id(),
            RUN_NUMBER.fetch_add(1, Ordering::Relaxed)
        )),
    }
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
