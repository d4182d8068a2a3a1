//! The clients of a run: started together, each sending its requests until told to stop,
//! every request recorded; and the readiness probe that runs before them.

use std::time::{Duration, Instant};

use tokio::sync::watch;
use tokio::task::JoinSet;

use crate::long_lived;
use crate::observation::RequestRecord;
use crate::outcome::Outcome;
use crate::plan::Plan;
use crate::request::RequestShape;
use crate::scenario::{ClientGroup, ClientKind, Role};
use crate::transport::{Failure, Timeouts, Transport};

/// Most requests one client may send in a run (every loop is bounded in count as well as
/// in time).
pub(crate) const MAX_REQUESTS_PER_CLIENT: usize = 2_000_000;
/// Pause of a client after a refused connection or stream.
const REFUSED_RETRY_PAUSE: Duration = Duration::from_millis(10);

/// The clients, running.
#[derive(Debug)]
pub struct Traffic {
    clients: JoinSet<Vec<RequestRecord>>,
    stop: watch::Sender<bool>,
}

impl Traffic {
    /// Starts every client of the plan; `started` is time zero of the records.
    pub fn start(plan: &Plan, transport: &Transport, started: Instant) -> Self {
        let (stop, stopped) = watch::channel(false);
        let mut clients = JoinSet::new();
        let groups = plan
            .clients
            .iter()
            .flat_map(|group| std::iter::repeat_n(group, group.count));
        for (id, group) in (0u32..).zip(groups) {
            let client = Client {
                id,
                group: group.clone(),
                started,
                stopped: stopped.clone(),
            };
            match group.kind {
                ClientKind::Requests => clients.spawn(client.run(transport.clone())),
                ClientKind::WebSocket => {
                    clients.spawn(long_lived::websocket::run(client, transport.endpoint()))
                }
                ClientKind::Sse => {
                    clients.spawn(long_lived::sse::run(client, transport.endpoint()))
                }
            };
        }
        Self { clients, stop }
    }

    /// Stops every client at `end` (a request in flight then is finished and recorded,
    /// except a slow one, which is cut short); returns every record.
    pub async fn finish_at(mut self, end: Instant) -> Vec<RequestRecord> {
        tokio::time::sleep_until(end.into()).await;
        let _ = self.stop.send(true);
        let mut records = Vec::new();
        while let Some(done) = self.clients.join_next().await {
            if let Ok(mut r) = done {
                records.append(&mut r);
            }
        }
        records
    }
}

/// One client.
pub(crate) struct Client {
    /// Its number in the run.
    pub(crate) id: u32,
    /// What it does.
    pub(crate) group: ClientGroup,
    /// Time zero of the records.
    pub(crate) started: Instant,
    /// Becomes true when traffic ends.
    pub(crate) stopped: watch::Receiver<bool>,
}

impl Client {
    /// A record of this client: something that started at `start` and ended now.
    pub(crate) fn record(&self, start: Instant, outcome: Outcome) -> RequestRecord {
        RequestRecord {
            client: self.id,
            role: self.group.role,
            start: start.duration_since(self.started).as_secs_f64(),
            end: self.started.elapsed().as_secs_f64(),
            outcome,
        }
    }

    /// Requests until stopped, each followed by the group's interval.
    async fn run(mut self, transport: Transport) -> Vec<RequestRecord> {
        let mut records = Vec::new();
        let mut session = transport.session();
        let group = &self.group.clone();
        while records.len() < MAX_REQUESTS_PER_CLIENT && !*self.stopped.borrow() {
            let start = Instant::now();
            let sent = session.send(
                &group.request,
                records.len(),
                group.keep_alive,
                group.timeouts,
            );
            let outcome = tokio::select! {
                result = sent => result.unwrap_or_else(|failure| failure.outcome),
                // A slow request still waiting when traffic ends is cut short and not
                // counted (the report says how many completed).
                _ = self.stopped.wait_for(|stop| *stop), if group.role == Role::Slow => break,
            };
            records.push(self.record(start, outcome));
            // A refused client retries after a short pause, as a real one does; hammering
            // a closed port in a tight loop would only flood the records.
            let pause = match outcome {
                Outcome::Refused | Outcome::StreamRefused => {
                    group.interval.max(REFUSED_RETRY_PAUSE)
                }
                _ => group.interval,
            };
            if !pause.is_zero() {
                tokio::select! {
                    () = tokio::time::sleep(pause) => {}
                    _ = self.stopped.wait_for(|stop| *stop) => break,
                }
            }
        }
        records
    }
}

/// What the run sends to see that the server is up: the clients' request, or for
/// long-lived clients (whose requests never end) `GET /`, any status counting.
pub fn readiness_probe(plan: &Plan) -> RequestShape {
    match plan.clients.first() {
        Some(group) if group.kind == ClientKind::Requests => group.request.clone(),
        Some(group) => {
            let mut probe = RequestShape::get("/");
            probe.headers = group.request.headers.clone();
            probe.ok_status = crate::request::OkStatus::any();
            probe
        }
        None => RequestShape::get("/"),
    }
}

/// Sends `request` until it is answered, until `limit`, or until `give_up` says the
/// server is gone; returns the last failure otherwise.
pub async fn wait_until_answered(
    transport: &Transport,
    request: &RequestShape,
    limit: Duration,
    mut give_up: impl FnMut() -> Option<String>,
) -> Result<(), Failure> {
    let deadline = Instant::now() + limit;
    let timeouts = Timeouts {
        connect: Duration::from_millis(500),
        request: Duration::from_secs(2),
    };
    let mut last = Failure::new(Outcome::ConnectTimeout, "no attempt");
    while Instant::now() < deadline {
        if let Some(why) = give_up() {
            return Err(Failure::new(Outcome::ConnectError, why));
        }
        let mut session = transport.session();
        match session.send(request, 0, false, timeouts).await {
            Ok(Outcome::Ok(_)) => return Ok(()),
            Ok(outcome) => last = Failure::new(outcome, format!("answered {}", outcome.label())),
            Err(failure) => last = failure,
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    Err(last)
}
