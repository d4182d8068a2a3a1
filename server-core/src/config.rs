//! What a server is asked to do: where to listen, how many workers, how long to wait.

use std::net::SocketAddr;
use std::time::Duration;

/// How the listening socket is made to stop taking connections at shutdown.
///
/// The kernel keeps completing handshakes into the accept queue for as long as any process
/// holds the socket, so "stop accepting" alone makes clients hang. Each mode is a way to get
/// the clean outcome instead: a refused connection, which a client or load balancer retries.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum ListenerDrain {
    /// Use [`ListenerDrain::Ebpf`] when the kernel lets us load the program, else
    /// [`ListenerDrain::Close`].
    Auto,
    /// Attach an `SK_REUSEPORT` program that answers every new SYN with RST, wait for the
    /// accept queue to empty, then stop the workers. No connection is lost.
    Ebpf,
    /// Close the parent's copy of the socket, then each worker accepts until the queue is
    /// empty and closes its copy. A connection that lands in the queue between the last
    /// worker's final accept and its close is reset (rare, but not impossible).
    Close,
}

/// Whether workers share one listening socket or each has its own.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
pub enum ListenerMode {
    /// One socket, one accept queue, shared by every worker (the default): a worker that
    /// leaves loses nothing, and a busy worker simply accepts less.
    #[default]
    Shared,
    /// One `SO_REUSEPORT` socket per worker: the kernel spreads connections by hash, with
    /// no contention on one queue, but a slow worker keeps its share. Where eBPF may be
    /// loaded, a leaving worker is first steered out and stops once its queue is empty;
    /// without it, its queue survives only with `net.ipv4.tcp_migrate_req=1`.
    ReusePort,
}

/// The settings of a [`crate::Server`]. Build one with [`ServerConfig::new`] and adjust fields
/// (non-exhaustive: settings added later do not break a program that embeds the server).
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
#[non_exhaustive]
pub struct ServerConfig {
    /// Where to listen. The parent binds it once and every worker shares the socket.
    pub bind: Bind,
    /// How many worker processes serve requests.
    pub workers: usize,
    /// One deadline for the whole graceful stop: refusal, queue drain, in-flight requests
    /// and application shutdown hooks. When it passes, what is left is aborted.
    pub graceful_timeout: Duration,
    /// How long a connection is kept open with no request in flight after its first
    /// request (an idle keep-alive connection, or a client slow to send its next head).
    /// The first head falls under `header_read_timeout`.
    pub keep_alive_timeout: Duration,
    /// During a drain, how long an idle keep-alive connection is kept open in case its client
    /// is sending a request right now. Closing it at once races with that request (the
    /// client would see EOF); within the window it gets an answer with `Connection: close`.
    pub idle_drain_grace: Duration,
    /// Length of the kernel's accept queue (`listen(2)` backlog).
    pub backlog: i32,
    /// How the listener refuses new connections at shutdown.
    pub listener_drain: ListenerDrain,
    /// One shared listening socket, or one per worker.
    pub listener_mode: ListenerMode,
    /// Threads of each worker's tokio runtime; 1 means a current-thread runtime, which is
    /// what one process per core wants.
    pub worker_threads: usize,
    /// Whether each worker logs one line per request.
    pub access_log: bool,
    /// A worker whose runtime sends no heartbeat for this long is hung and is replaced
    /// (gracefully first). Long enough not to kill a worker that is merely busy: heartbeats
    /// come from the worker's runtime, which slow async requests do not block.
    pub healthcheck_timeout: Duration,
    /// During a rolling restart (SIGHUP), how many replacement workers start at once.
    pub max_surge: usize,
    /// A worker that has served this many requests is replaced (its replacement ready first).
    pub max_requests: Option<u64>,
    /// Route that answers 503 once the server is about to stop (`shutdown_delay`) or
    /// draining; otherwise the app answers it. `None` leaves the route to the app alone.
    pub readiness_path: Option<String>,
    /// On SIGTERM/SIGINT, keep serving this long with the readiness route answering 503,
    /// so that load balancers (a Kubernetes readiness probe) take the server out of rotation
    /// before it refuses anything; then the normal stop begins (its deadline starts then).
    pub shutdown_delay: Duration,
    /// Beyond this many open connections a worker answers new ones with 503 and closes
    /// them (as uvicorn's `--limit-concurrency`), so an overload never blocks its accept loop.
    pub limit_concurrency: Option<usize>,
    /// Largest request head (request line and headers) a worker reads; beyond it the
    /// client gets 431. At least 8 KiB.
    pub limit_header_size: usize,
    /// How long a new connection may take to send its first complete request head
    /// (slow-loris clients are closed after it). Later requests on a keep-alive
    /// connection fall under `keep_alive_timeout`.
    pub header_read_timeout: Duration,
    /// After this many workers in a row die before they are ready, the server gives up
    /// and exits with an error instead of restarting them forever.
    pub max_startup_failures: u32,
    /// Where the parent writes its pid (removed at exit).
    pub pid_file: Option<std::path::PathBuf>,
    /// Up to this many requests are added at random to each worker's quota, so that workers
    /// started together are not all replaced together.
    pub max_requests_jitter: u64,
    /// Serve HTTPS with this certificate pair (in-process workers only).
    pub tls: Option<crate::tls::TlsSettings>,
    /// Spread connections evenly over the in-process workers: a worker with more open
    /// connections than another ready worker lets that one accept first (the accept gate).
    /// On by default.
    pub balance: bool,
    /// Where to serve Prometheus metrics of the whole server (`GET /metrics`); off when
    /// `None`. Served by a small child of the parent from memory the workers share.
    pub metrics_bind: Option<std::net::SocketAddr>,
    /// Resident memory (bytes) above which a worker is replaced like a request quota
    /// (replacement first, then the old one drains); sampled every 250 ms by the parent.
    pub limit_max_memory: Option<u64>,
}

/// The address a server listens on.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum Bind {
    /// Bind a new TCP socket at this address.
    Tcp(SocketAddr),
    /// Bind a Unix domain socket at this path (removed again at exit). The eBPF drain needs
    /// TCP, so the `close` drain is used.
    Unix(std::path::PathBuf),
    /// Use a listening TCP socket this process inherited at this descriptor (systemd socket
    /// activation, `--fd`, or a binary upgrade). Nothing is bound.
    Inherited(std::os::fd::RawFd),
}

impl Bind {
    /// A TCP address from a host name or address and a port, as uvicorn and gunicorn
    /// accept them (`localhost`, `::1`, `0.0.0.0`). A name is resolved now, and the first
    /// IPv4 address it has is bound (uvicorn binds IPv4 by default), else its first
    /// address; the log says what the name resolved to and which address was chosen.
    pub fn tcp_host(host: &str, port: u16) -> crate::Result<Self> {
        if let Ok(ip) = host.parse::<std::net::IpAddr>() {
            return Ok(Bind::Tcp(SocketAddr::new(ip, port)));
        }
        let resolve_error = |reason: String| crate::Error::Resolve {
            host: host.to_string(),
            reason,
        };
        let addrs: Vec<SocketAddr> = std::net::ToSocketAddrs::to_socket_addrs(&(host, port))
            .map_err(|e| resolve_error(e.to_string()))?
            .collect();
        let chosen = addrs
            .iter()
            .find(|a| a.is_ipv4())
            .or(addrs.first())
            .copied()
            .ok_or_else(|| resolve_error("no address".into()))?;
        let all: Vec<String> = addrs.iter().map(|a| a.ip().to_string()).collect();
        tracing::info!(
            "host {host} resolves to {}; binding {}",
            all.join(", "),
            chosen.ip()
        );
        Ok(Bind::Tcp(chosen))
    }
}

impl ServerConfig {
    /// Defaults chosen to match uvicorn's where uvicorn has the option.
    pub fn new(bind: Bind) -> Self {
        Self {
            bind,
            workers: 1,
            graceful_timeout: Duration::from_secs(30),
            keep_alive_timeout: Duration::from_secs(5),
            idle_drain_grace: Duration::from_millis(1000),
            backlog: 2048,
            listener_drain: ListenerDrain::Auto,
            listener_mode: ListenerMode::Shared,
            worker_threads: 1,
            access_log: true,
            healthcheck_timeout: Duration::from_secs(10),
            max_surge: 1,
            max_requests: None,
            max_requests_jitter: 0,
            tls: None,
            balance: true,
            metrics_bind: None,
            limit_max_memory: None,
            readiness_path: Some("/healthz".into()),
            shutdown_delay: Duration::ZERO,
            pid_file: None,
            limit_concurrency: None,
            limit_header_size: 16 * 1024,
            header_read_timeout: Duration::from_secs(10),
            max_startup_failures: 10,
        }
    }
}
