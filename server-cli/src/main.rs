//! `server-cli`: the demo app, or any server command, on N zero-drop workers.

mod cli;
mod demo_app;

use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;
use clap::Parser;
use server_core::{Server, WorkerCommand};

fn main() -> ExitCode {
    let cli = cli::Cli::parse();
    server_core::logging::init(cli.log_level.as_tracing(), cli.log_format.format());
    match run(&cli) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn run(cli: &cli::Cli) -> anyhow::Result<ExitCode> {
    let server = Server::new(cli.server_config());
    let outcome = if cli.command.is_empty() {
        let shutdown_delay = Duration::from_secs_f64(cli.demo_shutdown_delay);
        let panic_at_start = cli.demo_panic_at_start;
        server.serve(move || {
            if panic_at_start {
                panic!("demo: --demo-panic-at-start");
            }
            demo_app::demo_app(shutdown_delay)
        })
    } else {
        if cli.limit_max_requests.is_some() {
            anyhow::bail!(
                "--limit-max-requests needs the built-in app: external workers do not report their requests"
            );
        }
        server.serve_command(&WorkerCommand {
            argv: cli.command.clone(),
            stop_signal: cli.worker_stop_signal.signal(),
        })
    }
    .context("cannot run the server")?;
    Ok(ExitCode::from(outcome.exit_code() as u8))
}
