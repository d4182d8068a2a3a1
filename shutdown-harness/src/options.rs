//! Command-line options of the harness.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{bail, Context};
use clap::Parser;
use nix::sys::signal::Signal;
use shutdown_harness::Disruption;
use shutdown_harness::{Plan, Scenario, ServerCommand, TrafficOverrides};

/// Launch a server, drive traffic at it, send it a signal, and classify every request.
/// Exits 0 only when no request was dropped and the server stopped in time.
#[derive(Debug, Parser)]
#[command(name = "shutdown-harness", version, about)]
pub struct Options {
    /// Traffic shape.
    #[arg(long, value_enum, default_value_t = Scenario::Seed)]
    pub scenario: Scenario,
    /// Signal sent to the launched process: TERM, INT, HUP, TTIN, TTOU, QUIT, USR2,
    /// KILL-WORKER (SIGKILL to one of its children) or NONE; a comma-separated list is
    /// cycled with --signal-every (e.g. TTOU,TTIN). Default: HUP for the reload scenario,
    /// TERM otherwise. TERM, INT and QUIT must make the server exit; USR2 must hand over to
    /// a new parent; the others must leave it serving, refusing nothing.
    #[arg(long)]
    pub signal: Option<String>,
    /// Send the signal again every SECS until traffic ends (e.g. HUP every 2 s).
    #[arg(long, value_name = "SECS")]
    pub signal_every: Option<f64>,
    /// When the server keeps serving: how many workers (children of the launched
    /// process) it must have at the end.
    #[arg(long, value_name = "N")]
    pub expect_workers: Option<usize>,
    /// Seconds of traffic before the signal.
    #[arg(long, value_name = "SECS", default_value_t = 5.0)]
    pub signal_after: f64,
    /// Seconds of traffic in all.
    #[arg(long, value_name = "SECS", default_value_t = 20.0)]
    pub duration: f64,
    /// Number of clients (the scenario's default otherwise).
    #[arg(long)]
    pub clients: Option<usize>,
    /// Seconds each client waits between requests.
    #[arg(long, value_name = "SECS")]
    pub interval: Option<f64>,
    /// Connect timeout in seconds.
    #[arg(long, value_name = "SECS")]
    pub connect_timeout: Option<f64>,
    /// Request timeout in seconds.
    #[arg(long, value_name = "SECS")]
    pub request_timeout: Option<f64>,
    /// Port, when the server command has no `{port}` (default 8000).
    #[arg(long)]
    pub port: Option<u16>,
    /// Longest acceptable time from the signal to the server's exit, in seconds.
    #[arg(long, value_name = "SECS", default_value_t = 40.0)]
    pub max_exit_after: f64,
    /// Longest wait for the server to answer `GET /`, in seconds.
    #[arg(long, value_name = "SECS", default_value_t = 30.0)]
    pub ready_timeout: f64,
    /// Write every request and the summary as JSON.
    #[arg(long, value_name = "FILE")]
    pub json: Option<PathBuf>,
    /// Draw the timeline as SVG.
    #[arg(long, value_name = "FILE")]
    pub svg: Option<PathBuf>,
    /// Where the server's output goes (default: a file in the temp directory).
    #[arg(long, value_name = "FILE")]
    pub server_log: Option<PathBuf>,
    /// The server command; `{port}` is replaced by a free port. Default: this workspace's
    /// `server-cli --workers 2 --demo-shutdown-delay 10` (the seed's experiment).
    #[arg(last = true, value_name = "SERVER_CMD")]
    pub server: Vec<String>,
}

fn seconds(name: &str, value: f64) -> anyhow::Result<Duration> {
    if !(0.0..=86_400.0).contains(&value) {
        bail!("--{name} must be between 0 and 86400 seconds, got {value}");
    }
    Ok(Duration::from_secs_f64(value))
}

fn parse_disruption(name: &str) -> anyhow::Result<Disruption> {
    let upper = name.trim().to_ascii_uppercase();
    match upper.as_str() {
        "KILL-WORKER" => return Ok(Disruption::KillWorker),
        "NONE" => return Ok(Disruption::Nothing),
        _ => {}
    }
    let full = if upper.starts_with("SIG") {
        upper
    } else {
        format!("SIG{upper}")
    };
    let signal: Signal = full
        .parse()
        .with_context(|| format!("`{name}` is not a signal name"))?;
    const ALLOWED: [Signal; 7] = [
        Signal::SIGTERM,
        Signal::SIGINT,
        Signal::SIGHUP,
        Signal::SIGTTIN,
        Signal::SIGTTOU,
        Signal::SIGQUIT,
        Signal::SIGUSR2,
    ];
    if !ALLOWED.contains(&signal) {
        bail!("--signal must be one of TERM, INT, HUP, TTIN, TTOU, QUIT, USR2, KILL-WORKER, NONE");
    }
    Ok(Disruption::Signal(signal))
}

impl Options {
    /// Checks the options and turns them into a run plan. Without a server command, the
    /// plan's command is left empty for the caller to fill in (see `default_server`).
    pub fn plan(&self) -> anyhow::Result<Plan> {
        let disruptions = match &self.signal {
            Some(names) => names
                .split(',')
                .map(parse_disruption)
                .collect::<anyhow::Result<Vec<_>>>()?,
            None => vec![Disruption::default_for(self.scenario)],
        };
        let duration = seconds("duration", self.duration)?;
        let signal_after = seconds("signal-after", self.signal_after)?;
        if signal_after >= duration {
            bail!(
                "--signal-after ({}) must be less than --duration ({})",
                self.signal_after,
                self.duration
            );
        }
        if self.clients == Some(0) {
            bail!("--clients must be at least 1");
        }
        let overrides = TrafficOverrides {
            clients: self.clients,
            interval: self.interval.map(|s| seconds("interval", s)).transpose()?,
            connect_timeout: self
                .connect_timeout
                .map(|s| seconds("connect-timeout", s))
                .transpose()?,
            request_timeout: self
                .request_timeout
                .map(|s| seconds("request-timeout", s))
                .transpose()?,
        };
        let argv = self.server.clone();
        let server_log = self.server_log.clone().unwrap_or_else(|| {
            std::env::temp_dir().join(format!("shutdown-harness-{}.log", std::process::id()))
        });
        Ok(Plan {
            scenario: self.scenario,
            server: ServerCommand { argv },
            port: self.port,
            expectation: Disruption::expectation_of(&disruptions),
            disruptions,
            expect_workers: self.expect_workers,
            signal_after,
            repeat_every: self
                .signal_every
                .map(|s| seconds("signal-every", s))
                .transpose()?,
            duration,
            clients: self.scenario.clients(overrides),
            max_exit_after: seconds("max-exit-after", self.max_exit_after)?,
            ready_timeout: seconds("ready-timeout", self.ready_timeout)?,
            server_log,
        })
    }
}
