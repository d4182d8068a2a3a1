//! Command-line options of the harness.

use std::path::PathBuf;
use std::time::Duration;

use crate::request::{parse_header, parse_method, parse_path};
use crate::UrlTarget;
use crate::{ClientLibrary, Disruption, HttpVersion, OkStatus, RequestShape};
use crate::{Plan, Scenario, Scheme, ServerCommand, Target, TrafficOverrides, Trust};
use anyhow::{bail, Context};
use bytes::Bytes;
use clap::Parser;
use nix::sys::signal::Signal;

/// Launch a server (or take any URL), drive traffic at it, disrupt it (a signal, or any
/// command such as `systemctl restart app`), and classify every request. Exits 0 only when
/// no request was dropped and the server behaved, 1 when it did not, 2 on bad usage.
#[derive(Debug, Parser)]
#[command(name = "shutdown-harness", version, about)]
pub struct Options {
    /// Test a server the harness did not start, at this http:// or https:// URL (its path
    /// is the default --path). Only requests are judged. Use with --disrupt.
    #[arg(long, value_name = "URL", value_parser = parse_url)]
    pub url: Option<UrlTarget>,
    /// With --url: run this shell command at --signal-after (and every --signal-every)
    /// instead of sending a signal, e.g. 'systemctl restart app'. Traffic goes on until
    /// --duration, or until the command has ended plus --settle, whichever is later. A
    /// command that fails fails the run, its output shown.
    #[arg(long, value_name = "COMMAND", requires = "url")]
    pub disrupt: Option<String>,
    /// Seconds of traffic after the last disruption command has ended.
    #[arg(long, value_name = "SECS", default_value_t = 2.0)]
    pub settle: f64,
    /// Longest run of a disruption command before it is killed (the run then fails).
    #[arg(long, value_name = "SECS", default_value_t = 300.0)]
    pub disrupt_timeout: f64,
    /// Request method.
    #[arg(long, value_name = "METHOD", default_value = "GET", value_parser = parse_method)]
    pub method: hyper::http::Method,
    /// Request path with query; repeat it to use several in turn (default: the URL's path,
    /// or `/`).
    #[arg(long = "path", value_name = "PATH", value_parser = parse_path)]
    pub paths: Vec<String>,
    /// A request header `Name: value`; repeatable.
    #[arg(long = "header", value_name = "NAME: VALUE", value_parser = parse_header)]
    pub headers: Vec<(hyper::http::HeaderName, hyper::http::HeaderValue)>,
    /// Request body.
    #[arg(long, value_name = "TEXT", conflicts_with = "body_file")]
    pub body: Option<String>,
    /// Request body, read from a file.
    #[arg(long, value_name = "FILE")]
    pub body_file: Option<PathBuf>,
    /// Statuses that count as answered, e.g. 2xx,3xx,404 (default 2xx).
    #[arg(long, value_name = "LIST", value_parser = OkStatus::parse)]
    pub ok_status: Option<OkStatus>,
    /// Client library: raw (exact outcome classes, no hidden retry) or reqwest (a pooled
    /// client with its own retry rules, as a Rust service calls another one).
    #[arg(long, value_enum, default_value_t = ClientLibrary::Raw)]
    pub client: ClientLibrary,
    /// Speak HTTP/2: prior knowledge on http://, ALPN on https://.
    #[arg(long)]
    pub http2: bool,
    /// Trust only the CA certificates in this PEM file (https:// URLs).
    #[arg(long, value_name = "FILE", conflicts_with = "insecure")]
    pub cacert: Option<PathBuf>,
    /// Accept any server certificate (https:// URLs): encrypted, not verified.
    #[arg(long)]
    pub insecure: bool,
    /// The launched server speaks HTTPS (trust it with --cacert or --insecure).
    #[arg(long, conflicts_with = "url")]
    pub https: bool,
    /// Traffic shape.
    #[arg(long, value_enum, default_value_t = Scenario::Seed)]
    pub scenario: Scenario,
    /// Signal sent to the launched process (not with --url): TERM, INT, HUP, TTIN, TTOU, QUIT, USR2,
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

fn parse_url(text: &str) -> Result<UrlTarget, String> {
    UrlTarget::parse(text).map_err(|e| e.to_string())
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
    /// Checks the options and turns them into a run plan. Without a server command or a
    /// URL, the plan's command is left empty for the caller to fill in (see
    /// `default_server`).
    pub fn plan(&self) -> anyhow::Result<Plan> {
        let target = self.target()?;
        let disruptions = self.disruptions()?;
        let duration = seconds("duration", self.duration)?;
        let signal_after = seconds("signal-after", self.signal_after)?;
        if signal_after >= duration {
            bail!(
                "--signal-after ({}) must be less than --duration ({})",
                self.signal_after,
                self.duration
            );
        }
        if self.scenario.is_long_lived() && (self.client != ClientLibrary::Raw || self.http2) {
            bail!("--client reqwest and --http2 are for request scenarios, not websocket or sse");
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
            request: Some(self.request_shape()?),
        };
        let server_log = self.server_log.clone().unwrap_or_else(|| {
            std::env::temp_dir().join(format!("shutdown-harness-{}.log", std::process::id()))
        });
        let mut plan = Plan::new(self.scenario, target, server_log);
        plan.set_disruptions(disruptions);
        plan.port = self.port;
        plan.launch_scheme = if self.https {
            Scheme::Https
        } else {
            Scheme::Http
        };
        plan.expect_workers = self.expect_workers;
        plan.signal_after = signal_after;
        plan.repeat_every = self
            .signal_every
            .map(|s| seconds("signal-every", s))
            .transpose()?;
        plan.duration = duration;
        plan.settle = seconds("settle", self.settle)?;
        plan.command_timeout = seconds("disrupt-timeout", self.disrupt_timeout)?;
        plan.clients = self.scenario.clients(overrides);
        plan.client_library = self.client;
        plan.http_version = if self.http2 {
            HttpVersion::Http2
        } else {
            HttpVersion::Http1
        };
        plan.trust = match (&self.cacert, self.insecure) {
            (Some(file), _) => Trust::CaFile(file.clone()),
            (None, true) => Trust::Anything,
            (None, false) => Trust::System,
        };
        plan.max_exit_after = seconds("max-exit-after", self.max_exit_after)?;
        plan.ready_timeout = seconds("ready-timeout", self.ready_timeout)?;
        Ok(plan)
    }

    /// The launched command, or the URL; never both.
    fn target(&self) -> anyhow::Result<Target> {
        match (&self.url, self.server.is_empty()) {
            (Some(_), false) => bail!(
                "--url tests a server the harness did not start: give --url or a server command, not both"
            ),
            (Some(url), true) => {
                if self.expect_workers.is_some() || self.port.is_some() {
                    bail!("--expect-workers and --port are for a server the harness launches, not with --url");
                }
                Ok(Target::Url(url.clone()))
            }
            (None, _) => Ok(Target::Launch(ServerCommand {
                argv: self.server.clone(),
            })),
        }
    }

    /// The command, the signals, or the scenario's default signal.
    fn disruptions(&self) -> anyhow::Result<Vec<Disruption>> {
        match (&self.disrupt, &self.signal, &self.url) {
            (Some(_), Some(_), _) => bail!("give --disrupt or --signal, not both"),
            (Some(command), None, _) => {
                if command.trim().is_empty() {
                    bail!("--disrupt needs a command");
                }
                Ok(vec![Disruption::Command(command.clone())])
            }
            (None, Some(_), Some(_)) => bail!(
                "--signal needs a server the harness launches; with --url, use --disrupt 'COMMAND'"
            ),
            (None, Some(names), None) => names.split(',').map(parse_disruption).collect(),
            (None, None, Some(_)) => Ok(vec![Disruption::Nothing]),
            (None, None, None) => Ok(vec![Disruption::default_for(self.scenario)]),
        }
    }

    /// What the clients send.
    fn request_shape(&self) -> anyhow::Result<RequestShape> {
        let paths = match (&self.paths[..], &self.url) {
            ([], Some(url)) => vec![url.path.clone()],
            ([], None) => vec![self.scenario.default_path().into()],
            (paths, _) => paths.to_vec(),
        };
        let body = match (&self.body, &self.body_file) {
            (Some(text), _) => Bytes::from(text.clone()),
            (None, Some(file)) => Bytes::from(
                std::fs::read(file)
                    .with_context(|| format!("cannot read --body-file {}", file.display()))?,
            ),
            (None, None) => Bytes::new(),
        };
        let mut shape = RequestShape::get("/");
        shape.method = self.method.clone();
        shape.paths = paths;
        shape.headers = self.headers.iter().cloned().collect();
        shape.body = body;
        shape.ok_status = self.ok_status.clone().unwrap_or_default();
        Ok(shape)
    }
}
