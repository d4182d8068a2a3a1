//! The `shutdown-harness` command line, in the library so that every binary that ships the
//! harness (this crate's, and the Python package's built from `server-cli`) runs the same one.
//!
//! Exit status: 0 when nothing was dropped and the server stopped as it should, 1 when it
//! dropped requests or misbehaved, 2 on bad usage.

mod default_server;
mod options;

use std::process::ExitCode;

use clap::Parser;

use crate::{svg, HarnessError, Target};

/// Parses the command line, runs the plan and prints the report: the whole `shutdown-harness`
/// command, returning its exit status.
pub fn main() -> ExitCode {
    let options = options::Options::parse();
    raise_open_files_limit();
    let mut plan = match options.plan() {
        Ok(plan) => plan,
        Err(e) => {
            eprintln!("error: {e:#}");
            return ExitCode::from(2);
        }
    };
    if let Target::Launch(command) = &mut plan.target {
        if command.argv.is_empty() {
            match default_server::command() {
                Ok(argv) => command.argv = argv,
                Err(e) => {
                    eprintln!("error: {e:#}");
                    return ExitCode::FAILURE;
                }
            }
        }
    }
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the runtime: {e}");
            return ExitCode::from(2);
        }
    };
    let report = match runtime.block_on(crate::run(&plan)) {
        Ok(report) => report,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::from(match e {
                HarnessError::EmptyCommand
                | HarnessError::Launch(..)
                | HarnessError::Usage(_)
                | HarnessError::Transport(_) => 2,
                _ => 1,
            });
        }
    };
    if let Some(path) = &options.json {
        let written = serde_json::to_vec_pretty(&report)
            .map_err(std::io::Error::other)
            .and_then(|json| std::fs::write(path, json));
        if let Err(e) = written {
            eprintln!("error: cannot write {}: {e}", path.display());
        }
    }
    if let Some(path) = &options.svg {
        if let Err(e) = std::fs::write(path, svg::render(&report)) {
            eprintln!("error: cannot write {}: {e}", path.display());
        }
    }
    if matches!(plan.target, Target::Launch(_)) {
        println!("server log: {}", plan.server_log.display());
    }
    println!("{}", report.text());
    if report.passed() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}

/// Each client holds a socket: thousands of WebSocket clients need more than the usual soft
/// limit of 1,024 open files, so the soft limit goes up to the hard one.
fn raise_open_files_limit() {
    use nix::sys::resource::{getrlimit, setrlimit, Resource};
    if let Ok((soft, hard)) = getrlimit(Resource::RLIMIT_NOFILE) {
        if soft < hard {
            let _ = setrlimit(Resource::RLIMIT_NOFILE, hard, hard);
        }
    }
}
