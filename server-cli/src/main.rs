//! `server-cli`: the demo app, or any server command, on N zero-drop workers.

#![forbid(unsafe_code)]

mod cli;
mod demo_app;
mod demo_streams;
mod python_workers;

use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;
use clap::{CommandFactory, Parser};
use server_core::{Server, WorkerCommand};

fn main() -> ExitCode {
    let cli = cli::Cli::parse();
    if let Err(usage) = cli.check() {
        cli::Cli::command()
            .error(clap::error::ErrorKind::ArgumentConflict, usage)
            .exit();
    }
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
    let config = cli
        .server_config()
        .map_err(with_flag_hint)
        .context("cannot run the server")?;
    let server = Server::new(config);
    let outcome = if let Some(app) = &cli.app {
        let worker = python_workers::exec_worker(cli, app)?;
        server.serve_exec(&worker)
    } else if cli.command.is_empty() {
        let shutdown_delay = Duration::from_secs_f64(cli.demo_shutdown_delay);
        let panic_at_start = cli.demo_panic_at_start;
        let ws = cli.ws_options();
        server.serve(move || {
            if panic_at_start {
                panic!("demo: --demo-panic-at-start");
            }
            demo_app::demo_app(shutdown_delay, ws)
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
    .map_err(with_flag_hint)
    .context("cannot run the server")?;
    Ok(ExitCode::from(outcome.exit_code() as u8))
}

/// The library's error, with the option to change when one option is the likely fix (the
/// library names no flags).
fn with_flag_hint(error: server_core::Error) -> anyhow::Error {
    let hint = match &error {
        server_core::Error::AddressInUse { .. } => Some("--port"),
        server_core::Error::Ebpf(_) => Some("or use --listener-drain close"),
        server_core::Error::ReusePortNeedsTcp(_) => {
            Some("--reuse-port cannot be combined with --uds or --fd")
        }
        server_core::Error::Resolve { .. } => Some("check --host"),
        _ => None,
    };
    match hint {
        Some(hint) => anyhow::anyhow!("{:#} ({hint})", anyhow::Error::new(error)),
        None => anyhow::Error::new(error),
    }
}
