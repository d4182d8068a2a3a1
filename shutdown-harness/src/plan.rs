//! What a run is to do and what the server is expected to do: built from the command line
//! or by a test, read by the run (I/O) and by the judge (pure).

use std::path::PathBuf;
use std::time::Duration;

use nix::sys::signal::Signal;
use serde::Serialize;

use crate::scenario::{ClientGroup, Scenario, TrafficOverrides};
use crate::target::{Scheme, Target};
use crate::tls::Trust;
use crate::transport::{ClientLibrary, HttpVersion};

/// Everything a run needs.
#[derive(Debug, Clone)]
pub struct Plan {
    /// The traffic shape (for the report).
    pub scenario: Scenario,
    /// The server under test: launched by the harness, or a URL.
    pub target: Target,
    /// Port to use when the launch command has no `{port}`.
    pub port: Option<u16>,
    /// Whether the launched server speaks HTTPS (`--https`).
    pub launch_scheme: Scheme,
    /// What to do to the server; with repeats, the sequence is cycled (e.g. TTOU, TTIN).
    pub disruptions: Vec<Disruption>,
    /// When to do it first, after traffic starts.
    pub signal_after: Duration,
    /// Do it again this often until traffic ends (e.g. HUP every 2 s).
    pub repeat_every: Option<Duration>,
    /// How long traffic runs at least.
    pub duration: Duration,
    /// With disruption commands, traffic goes on this long after the last one ended.
    pub settle: Duration,
    /// The longest a disruption command may run before it is killed and the run fails.
    pub command_timeout: Duration,
    /// The clients.
    pub clients: Vec<ClientGroup>,
    /// Which client library sends the requests.
    pub client_library: ClientLibrary,
    /// HTTP/1.1 or HTTP/2.
    pub http_version: HttpVersion,
    /// Whom to trust on https:// URLs.
    pub trust: Trust,
    /// Workers (children of the launched process) the server must have at the end, when it
    /// is expected to keep serving.
    pub expect_workers: Option<usize>,
    /// Longest acceptable time from the signal to the server's exit.
    pub max_exit_after: Duration,
    /// Longest wait for the server to answer its first request.
    pub ready_timeout: Duration,
    /// What the server should do after the disruption.
    pub expectation: Expectation,
    /// Where the launched server's output goes.
    pub server_log: PathBuf,
}

impl Plan {
    /// A plan with the command line's defaults: the scenario's clients and disruption
    /// (nothing for a URL, until a command is set), 5 s of traffic before it, 20 s in all.
    pub fn new(scenario: Scenario, target: Target, server_log: PathBuf) -> Self {
        let disruption = match target {
            Target::Launch(_) => Disruption::default_for(scenario),
            Target::Url(_) => Disruption::Nothing,
        };
        let mut plan = Self {
            scenario,
            target,
            port: None,
            launch_scheme: Scheme::Http,
            disruptions: Vec::new(),
            signal_after: Duration::from_secs(5),
            repeat_every: None,
            duration: Duration::from_secs(20),
            settle: Duration::from_secs(2),
            command_timeout: Duration::from_secs(300),
            clients: scenario.clients(TrafficOverrides::default()),
            client_library: ClientLibrary::Raw,
            http_version: HttpVersion::Http1,
            trust: Trust::System,
            expect_workers: None,
            max_exit_after: Duration::from_secs(40),
            ready_timeout: Duration::from_secs(30),
            expectation: Expectation::Exits,
            server_log,
        };
        plan.set_disruptions(vec![disruption]);
        plan
    }

    /// Sets what is done to the server, and what is then expected of it.
    pub fn set_disruptions(&mut self, disruptions: Vec<Disruption>) {
        self.expectation = match self.target {
            Target::Url(_) => Expectation::RequestsOnly,
            Target::Launch(_) => Disruption::expectation_of(&disruptions),
        };
        self.disruptions = disruptions;
    }

    /// The `index`-th disruption of the cycled sequence.
    pub fn disruption_at(&self, index: usize) -> &Disruption {
        const NOTHING: &Disruption = &Disruption::Nothing;
        if self.disruptions.is_empty() {
            return NOTHING;
        }
        &self.disruptions[index % self.disruptions.len()]
    }

    /// The sequence's name in reports.
    pub fn disruption_label(&self) -> String {
        let labels: Vec<String> = self.disruptions.iter().map(Disruption::label).collect();
        labels.join(",")
    }
}

/// What the harness does to the server.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Disruption {
    /// Send this signal to the launched process.
    Signal(Signal),
    /// SIGKILL one worker (a child of the launched process).
    KillWorker,
    /// Nothing: traffic only (e.g. to watch request-quota recycling).
    Nothing,
    /// Run this shell command (`--disrupt`), e.g. `systemctl restart app`; only for a
    /// server the harness did not launch.
    Command(String),
}

impl Disruption {
    /// What a scenario does to the server unless told otherwise: HUP for `reload`, TERM
    /// for the others.
    pub fn default_for(scenario: Scenario) -> Self {
        match scenario {
            Scenario::Reload => Disruption::Signal(Signal::SIGHUP),
            _ => Disruption::Signal(Signal::SIGTERM),
        }
    }

    /// What a well-behaved server does after it: TERM, INT and QUIT stop it; HUP, TTIN,
    /// TTOU and a killed worker leave it serving; USR2 hands over to a new parent.
    pub fn expectation(&self) -> Expectation {
        match self {
            Disruption::Signal(Signal::SIGTERM | Signal::SIGINT | Signal::SIGQUIT) => {
                Expectation::Exits
            }
            Disruption::Signal(Signal::SIGUSR2) => Expectation::HandsOver,
            Disruption::Signal(_) | Disruption::KillWorker | Disruption::Nothing => {
                Expectation::KeepsServing
            }
            Disruption::Command(_) => Expectation::RequestsOnly,
        }
    }

    /// The strongest expectation of a sequence: any stop means the server must exit.
    pub fn expectation_of(sequence: &[Disruption]) -> Expectation {
        let all: Vec<Expectation> = sequence.iter().map(Disruption::expectation).collect();
        if all.contains(&Expectation::RequestsOnly) {
            Expectation::RequestsOnly
        } else if all.contains(&Expectation::Exits) {
            Expectation::Exits
        } else if all.contains(&Expectation::HandsOver) {
            Expectation::HandsOver
        } else {
            Expectation::KeepsServing
        }
    }

    /// Its name in reports.
    pub fn label(&self) -> String {
        match self {
            Disruption::Signal(signal) => signal.to_string(),
            Disruption::KillWorker => "SIGKILL to one worker".into(),
            Disruption::Nothing => "nothing".into(),
            Disruption::Command(command) => format!("`{command}`"),
        }
    }
}

/// What the server should do after the disruption.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Expectation {
    /// Exit by itself, in time.
    Exits,
    /// Keep serving, refusing nothing.
    KeepsServing,
    /// The launched parent exits; its successor serves on, refusing nothing.
    HandsOver,
    /// A server the harness did not launch: only its requests are judged (refusals are
    /// clean; its processes are not the harness's to check).
    RequestsOnly,
}
