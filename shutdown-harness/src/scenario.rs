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
    /// WebSocket clients on `/ws` (default), an echo message every 100 ms each (32
    /// clients by default); each reconnects after a clean close frame.
    Websocket,
    /// Server-Sent Events clients on `/sse?every=100` (default, 32 clients); each
    /// reconnects with `Last-Event-ID` when its stream ends, and checks no id is missing.
    Sse,
}

/// What a client does on its connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ClientKind {
    /// Requests and responses.
    Requests,
    /// A WebSocket: echo messages until the server closes it, then reconnect.
    WebSocket,
    /// An SSE stream: read events until it ends, then reconnect with `Last-Event-ID`.
    Sse,
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
    /// Requests, a WebSocket, or an SSE stream.
    pub kind: ClientKind,
    /// How many clients.
    pub count: usize,
    /// Whether they keep their connection between requests.
    pub keep_alive: bool,
    /// Pause after each request (WebSocket: between messages).
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
    /// The path its clients use unless told otherwise: the demo app's `/ws` and `/sse`.
    pub fn default_path(self) -> &'static str {
        match self {
            Scenario::Websocket => "/ws",
            Scenario::Sse => "/sse?every=100",
            _ => "/",
        }
    }

    /// Whether its clients hold long-lived connections (WebSocket, SSE).
    pub fn is_long_lived(self) -> bool {
        matches!(self, Scenario::Websocket | Scenario::Sse)
    }

    /// The clients of this scenario.
    pub fn clients(self, overrides: TrafficOverrides) -> Vec<ClientGroup> {
        let ms = Duration::from_millis;
        let (count, keep_alive, interval, connect, request) = match self {
            Scenario::Seed | Scenario::Slow => (4, false, ms(50), ms(100), ms(1000)),
            Scenario::Load | Scenario::Reload => (32, false, ms(0), ms(1000), ms(1000)),
            Scenario::Keepalive => (16, true, ms(10), ms(1000), ms(1000)),
            Scenario::Websocket | Scenario::Sse => (32, true, ms(100), ms(1000), ms(2000)),
        };
        let kind = match self {
            Scenario::Websocket => ClientKind::WebSocket,
            Scenario::Sse => ClientKind::Sse,
            _ => ClientKind::Requests,
        };
        let connect = overrides.connect_timeout.unwrap_or(connect);
        let request = overrides.request_timeout.unwrap_or(request);
        let mut groups = vec![ClientGroup {
            role: Role::Fast,
            kind,
            count: overrides.clients.unwrap_or(count),
            keep_alive,
            interval: overrides.interval.unwrap_or(interval),
            request: overrides
                .request
                .unwrap_or_else(|| RequestShape::get(self.default_path())),
            timeouts: Timeouts { connect, request },
        }];
        if self == Scenario::Slow {
            groups.push(ClientGroup {
                role: Role::Slow,
                kind: ClientKind::Requests,
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
