//! `server-cli`: the demo app (or, later, any server command) on N zero-drop workers.

mod cli;
mod demo_app;

use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;
use clap::Parser;
use server_core::Server;

fn main() -> ExitCode {
    let cli = cli::Cli::parse();
    server_core::logging::init(cli.log_level.as_tracing());
    match run(&cli) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn run(cli: &cli::Cli) -> anyhow::Result<ExitCode> {
    let shutdown_delay = Duration::from_secs_f64(cli.demo_shutdown_delay);
    let outcome = Server::new(cli.server_config())
        .serve(|| demo_app::demo_app(shutdown_delay))
        .context("cannot run the server")?;
    Ok(ExitCode::from(outcome.exit_code() as u8))
}
