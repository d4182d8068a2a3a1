//! The traffic shapes the harness drives, with the seed report's numbers as defaults.

use std::time::Duration;

use clap::ValueEnum;
use serde::Serialize;

use crate::request::RequestShape;
use crate::transport::Timeouts;

/// A traffic shape.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Scenario {
    /// The seed's curl loop, denser: 4 clients, a new connection per request, 50 ms apart,
    /// connect timeout 100 ms, request timeout 1 s.
    Seed,
    /// Closed-loop clients back to back, a new connection per request (32 by default).
    Load,
    /// Clients on persistent connections, 10 ms between requests (16 by default).
    Keepalive,
    /// Seed-like fast clients plus 2 clients stuck on `/sleep` (requests in flight at stop).
    Slow,
    /// Load while the server reloads (SIGHUP by default; any signal after which it must
    /// keep serving): it must refuse nothing and not exit.
    Reload,
}

/// Whether a client's failures count as drops.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    /// Ordinary traffic: every failure is a drop.
    Fast,
    /// Requests that outlast the graceful deadline on purpose; reported apart.
    Slow,
}

/// A set of identical clients.
#[derive(Debug, Clone)]
pub struct ClientGroup {
    /// Whether their failures count as drops.
    pub role: Role,
    /// How many clients.
    pub count: usize,
    /// Whether they keep their connection between requests.
    pub keep_alive: bool,
    /// Pause after each request.
    pub interval: Duration,
    /// What each request is.
    pub request: RequestShape,
    /// Its limits.
    pub timeouts: Timeouts,
}

/// Overrides of a scenario's defaults, from the command line.
#[derive(Debug, Clone, Default)]
pub struct TrafficOverrides {
    /// Number of (fast) clients.
    pub clients: Option<usize>,
    /// Pause between a client's requests.
    pub interval: Option<Duration>,
    /// Connect timeout.
    pub connect_timeout: Option<Duration>,
    /// Request timeout.
    pub request_timeout: Option<Duration>,
    /// What the (fast) clients send, instead of `GET /`.
    pub request: Option<RequestShape>,
}

impl Scenario {
    /// The clients of this scenario.
    pub fn clients(self, overrides: TrafficOverrides) -> Vec<ClientGroup> {
        let ms = Duration::from_millis;
        let (count, keep_alive, interval, connect, request) = match self {
            Scenario::Seed | Scenario::Slow => (4, false, ms(50), ms(100), ms(1000)),
            Scenario::Load | Scenario::Reload => (32, false, ms(0), ms(1000), ms(1000)),
            Scenario::Keepalive => (16, true, ms(10), ms(1000), ms(1000)),
        };
        let connect = overrides.connect_timeout.unwrap_or(connect);
        let request = overrides.request_timeout.unwrap_or(request);
        let mut groups = vec![ClientGroup {
            role: Role::Fast,
            count: overrides.clients.unwrap_or(count),
            keep_alive,
            interval: overrides.interval.unwrap_or(interval),
            request: overrides.request.unwrap_or_else(|| RequestShape::get("/")),
            timeouts: Timeouts { connect, request },
        }];
        if self == Scenario::Slow {
            groups.push(ClientGroup {
                role: Role::Slow,
                count: 2,
                keep_alive: false,
                interval: ms(50),
                request: RequestShape::get("/sleep?secs=60"),
                timeouts: Timeouts {
                    connect,
                    request: Duration::from_secs(120),
                },
            });
        }
        groups
    }
}
