//! Command-line options, named as uvicorn names them.

use std::time::Duration;

use clap::{Parser, ValueEnum};
use server_core::{Bind, ClientAuth, ListenerDrain, ListenerMode, ServerConfig, TlsSettings};

/// Run an HTTP app on N worker processes; stop, restart and scale them without dropping a
/// request.
#[derive(Debug, Parser)]
#[command(name = "server-cli", version, about)]
pub struct Cli {
    /// Address or host name to bind (a name binds its first IPv4 address).
    #[arg(long, default_value = "127.0.0.1", value_parser = parse_host, help_heading = "Listening and workers")]
    pub host: String,
    /// Port to bind (0 picks a free one).
    #[arg(long, default_value_t = 8000, help_heading = "Listening and workers")]
    pub port: u16,
    /// Number of worker processes (1..=1024), or `auto`: the CPUs this process may use
    /// (its affinity mask, capped by a cgroup CPU quota), logged at start.
    #[arg(long, value_name = "N|auto", default_value = "1", value_parser = parse_workers, help_heading = "Listening and workers")]
    pub workers: WorkersArg,
    /// Seconds a graceful stop may take in all: queue drain, in-flight requests and
    /// shutdown hooks. Then what is left is aborted.
    #[arg(long, value_name = "SECS", default_value_t = 30.0, value_parser = parse_seconds, help_heading = "Stopping and restarting")]
    pub timeout_graceful_shutdown: f64,
    /// Seconds an idle keep-alive connection stays open.
    #[arg(long, value_name = "SECS", default_value_t = 5.0, value_parser = parse_seconds, help_heading = "Connections and limits")]
    pub timeout_keep_alive: f64,
    /// Length of the kernel's accept queue.
    #[arg(long, default_value_t = 2048, value_parser = clap::value_parser!(i32).range(1..), help_heading = "Listening and workers")]
    pub backlog: i32,
    /// How the listener refuses new connections at stop: `ebpf` (kernel refuses while the
    /// queue empties; needs CAP_BPF), `close` (parent closes first, workers drain), `auto`.
    #[arg(long, value_enum, default_value_t = DrainArg::Auto, help_heading = "Listening and workers")]
    pub listener_drain: DrainArg,
    /// One listening socket per worker (SO_REUSEPORT) instead of one shared socket: the
    /// kernel spreads connections by hash. Set net.ipv4.tcp_migrate_req=1 with it, or the
    /// queue of a worker that leaves is reset.
    #[arg(long, help_heading = "Listening and workers")]
    pub reuse_port: bool,
    /// Log level.
    #[arg(long, value_enum, default_value_t = LogLevel::Info, help_heading = "Logs and metrics")]
    pub log_level: LogLevel,
    /// Log line format: uvicorn-style text, or one JSON object per line.
    #[arg(long, value_enum, default_value_t = LogFormatArg::Text, help_heading = "Logs and metrics")]
    pub log_format: LogFormatArg,
    /// Write the parent's pid to this file (atomically; removed at exit).
    #[arg(long, value_name = "FILE", help_heading = "Logs and metrics")]
    pub pid: Option<std::path::PathBuf>,
    /// On SIGTERM, keep serving this long with /healthz answering 503 (so that a load
    /// balancer or Kubernetes readiness probe takes the server out of rotation), then stop.
    #[arg(long, value_name = "SECS", default_value_t = 0.0, value_parser = parse_seconds, help_heading = "Stopping and restarting")]
    pub shutdown_delay: f64,
    /// Write one access log line per request (the default).
    #[arg(
        long,
        overrides_with = "no_access_log",
        help_heading = "Logs and metrics"
    )]
    pub access_log: bool,
    /// Do not write access log lines.
    #[arg(long, help_heading = "Logs and metrics")]
    pub no_access_log: bool,
    /// Seconds without a heartbeat from a worker's runtime before it is replaced as hung.
    #[arg(long, value_name = "SECS", default_value_t = 10.0, value_parser = parse_seconds, help_heading = "Stopping and restarting")]
    pub timeout_worker_healthcheck: f64,
    /// Replace a worker after it has served this many requests (its replacement is ready
    /// first).
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u64).range(1..), help_heading = "Stopping and restarting")]
    pub limit_max_requests: Option<u64>,
    /// Replace a worker whose resident memory goes above this many MiB (sampled every
    /// 250 ms; its replacement is ready first); above 1.2x it drains at once while another
    /// worker serves, above 1.4x it is killed. Works for external workers too.
    #[arg(long, value_name = "MIB", value_parser = clap::value_parser!(u64).range(1..=1 << 30), help_heading = "Stopping and restarting")]
    pub limit_max_memory: Option<u64>,
    /// Let whichever worker wakes first accept each connection, instead of spreading
    /// connections evenly over the workers (the accept gate; for comparisons).
    #[arg(long, help_heading = "Listening and workers")]
    pub no_accept_gate: bool,
    /// Serve Prometheus metrics of the whole server at http://ADDR:PORT/metrics (off by
    /// default), e.g. 127.0.0.1:9100.
    #[arg(long, value_name = "ADDR:PORT", help_heading = "Logs and metrics")]
    pub metrics_bind: Option<std::net::SocketAddr>,
    /// Add up to this many requests at random to each worker's quota.
    #[arg(
        long,
        value_name = "N",
        default_value_t = 0,
        help_heading = "Stopping and restarting"
    )]
    pub limit_max_requests_jitter: u64,
    /// Beyond this many open connections per worker, answer new ones with 503.
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..), help_heading = "Connections and limits")]
    pub limit_concurrency: Option<u32>,
    /// Largest request head in bytes (request line and headers); larger gets 431.
    #[arg(long, value_name = "BYTES", default_value_t = 16384, value_parser = clap::value_parser!(u32).range(8192..=1048576), help_heading = "Connections and limits")]
    pub limit_header_size: u32,
    /// Seconds a new connection may take to send its first complete request head.
    #[arg(long, value_name = "SECS", default_value_t = 10.0, value_parser = parse_seconds, help_heading = "Connections and limits")]
    pub timeout_header_read: f64,
    /// Give up (exit 1) after this many workers in a row die before they are ready.
    #[arg(long, value_name = "N", default_value_t = 10, value_parser = clap::value_parser!(u32).range(1..), help_heading = "Stopping and restarting")]
    pub max_startup_failures: u32,
    /// Replacement workers started at once during a rolling restart (SIGHUP).
    #[arg(long, value_name = "N", default_value_t = 1, value_parser = clap::value_parser!(u16).range(1..), help_heading = "Stopping and restarting")]
    pub max_surge: u16,
    /// Serve on this inherited listening socket instead of binding (--host/--port ignored).
    /// A socket passed by systemd (LISTEN_FDS) is used the same way.
    #[arg(long, value_name = "N", help_heading = "Listening and workers")]
    pub fd: Option<i32>,
    /// Serve on a Unix domain socket at this path instead of TCP (removed at exit).
    #[arg(
        long,
        value_name = "PATH",
        conflicts_with = "fd",
        help_heading = "Listening and workers"
    )]
    pub uds: Option<std::path::PathBuf>,
    /// HTTPS: the certificate chain, PEM (leaf first). Replaced files are served to new
    /// connections within a second, without a restart; a pair that does not load is logged
    /// and the previous one serves on.
    #[arg(
        long,
        value_name = "FILE",
        requires = "ssl_keyfile",
        help_heading = "HTTPS"
    )]
    pub ssl_certfile: Option<std::path::PathBuf>,
    /// HTTPS: the certificate's private key, PEM, unencrypted.
    #[arg(
        long,
        value_name = "FILE",
        requires = "ssl_certfile",
        help_heading = "HTTPS"
    )]
    pub ssl_keyfile: Option<std::path::PathBuf>,
    /// Not supported: rustls reads unencrypted keys only (refused, not ignored).
    #[arg(long, value_name = "PASSWORD", value_parser = refuse_key_password, help_heading = "HTTPS")]
    pub ssl_keyfile_password: Option<String>,
    /// CA certificates (PEM) that client certificates must chain to (with --ssl-cert-reqs).
    #[arg(long, value_name = "FILE", help_heading = "HTTPS")]
    pub ssl_ca_certs: Option<std::path::PathBuf>,
    /// Client certificates: 0 not asked for, 1 optional (verified when given), 2 required
    /// (mTLS).
    #[arg(long, value_name = "0|1|2", default_value_t = 0, value_parser = clap::value_parser!(u8).range(0..=2), help_heading = "HTTPS")]
    pub ssl_cert_reqs: u8,
    /// ALPN protocols offered, in order.
    #[arg(long, value_name = "LIST", default_value = "h2,http/1.1", value_parser = parse_alpn, help_heading = "HTTPS")]
    pub ssl_alpn: Alpn,
    /// Only uvicorn's default `TLSv1` is accepted: rustls picks its own safe cipher suites
    /// (OpenSSL cipher strings are refused, not ignored).
    #[arg(long, value_name = "CIPHERS", value_parser = refuse_ciphers, help_heading = "HTTPS")]
    pub ssl_ciphers: Option<String>,
    /// Largest WebSocket message of the demo app, in bytes; larger closes with 1009.
    #[arg(long, value_name = "BYTES", default_value_t = 16 * 1024 * 1024, value_parser = clap::value_parser!(u32).range(1..), help_heading = "Connections and limits")]
    pub ws_max_size: u32,
    /// Seconds between the demo app's WebSocket pings (0: none).
    #[arg(long, value_name = "SECS", default_value_t = 20.0, value_parser = parse_seconds, help_heading = "Connections and limits")]
    pub ws_ping_interval: f64,
    /// Seconds a ping may wait for its pong before the WebSocket is closed with 1011.
    #[arg(long, value_name = "SECS", default_value_t = 20.0, value_parser = parse_seconds, help_heading = "Connections and limits")]
    pub ws_ping_timeout: f64,
    /// Seconds the demo app's shutdown hook sleeps, as the seed report's app does.
    #[arg(long, value_name = "SECS", default_value_t = 0.0, value_parser = parse_seconds, help_heading = "Stopping and restarting")]
    pub demo_shutdown_delay: f64,
    /// Make the demo app panic while it starts in each worker (to see the supervisor's
    /// backoff and --max-startup-failures at work).
    #[arg(long, hide = true, help_heading = "Stopping and restarting")]
    pub demo_panic_at_start: bool,
    /// Signal that asks an external worker to stop gracefully.
    #[arg(long, value_enum, default_value_t = StopSignalArg::Term, help_heading = "Listening and workers")]
    pub worker_stop_signal: StopSignalArg,
    /// The Python ASGI app to serve, `MODULE:ATTRIBUTE` (uvicorn's form, e.g.
    /// `seed_app:app`), in Python workers of the active virtualenv. Without it, the demo app.
    #[arg(value_name = "APP")]
    pub app: Option<String>,
    /// Look for the app's module in this directory first (put first on `sys.path`).
    #[arg(
        long,
        value_name = "DIR",
        default_value = ".",
        help_heading = "Python apps"
    )]
    pub app_dir: std::path::PathBuf,
    /// The attribute is a factory: call it (with no arguments) for the app.
    #[arg(long, help_heading = "Python apps")]
    pub factory: bool,
    /// The ASGI lifespan protocol: `auto` (run it; an app without it is fine), `on` (a
    /// failure stops the server), `off`.
    #[arg(long, value_enum, default_value_t = LifespanArg::Auto, help_heading = "Python apps")]
    pub lifespan: LifespanArg,
    /// The ASGI scope's `root_path` (the app is mounted below this path by a proxy).
    #[arg(
        long,
        value_name = "PATH",
        default_value = "",
        help_heading = "Python apps"
    )]
    pub root_path: String,
    /// The event loop: `uvloop` when installed (`auto`), or `asyncio`, or `uvloop`.
    #[arg(long = "loop", value_enum, default_value_t = LoopArg::Auto, help_heading = "Python apps")]
    pub event_loop: LoopArg,
    /// Run this program as each worker instead of the demo app, with the listener at
    /// descriptor 3 (LISTEN_FDS=1, LISTEN_PID as systemd sets them; `{fd}` in an argument
    /// becomes 3). Example: `-- uvicorn app:app --fd 3`.
    #[arg(last = true, value_name = "COMMAND")]
    pub command: Vec<std::ffi::OsString>,
}

/// `--lifespan`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LifespanArg {
    /// Run it; an app that does not support it serves on.
    Auto,
    /// Run it; a failure stops the server.
    On,
    /// Do not run it.
    Off,
}

/// `--loop`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LoopArg {
    /// uvloop when it is installed, else asyncio.
    Auto,
    /// The standard library's loop.
    Asyncio,
    /// uvloop (an error if it is not installed).
    Uvloop,
}

/// `--workers`: a count, or as many as the CPUs this process may use.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WorkersArg {
    /// This many.
    Count(u16),
    /// One per CPU this process may use.
    Auto,
}

fn parse_workers(text: &str) -> Result<WorkersArg, String> {
    if text == "auto" {
        return Ok(WorkersArg::Auto);
    }
    match text.parse::<u16>() {
        Ok(n @ 1..=1024) => Ok(WorkersArg::Count(n)),
        _ => Err(format!(
            "`{text}` is not a number of workers from 1 to 1024, or `auto`"
        )),
    }
}

/// `--ssl-alpn`: protocol names in order of preference.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Alpn(pub Vec<Vec<u8>>);

fn parse_alpn(text: &str) -> Result<Alpn, String> {
    let protocols: Vec<Vec<u8>> = text
        .split(',')
        .map(|p| p.trim().as_bytes().to_vec())
        .collect();
    for p in &protocols {
        if !matches!(p.as_slice(), b"h2" | b"http/1.1") {
            return Err(format!(
                "`{}` is not a protocol this server speaks (h2, http/1.1)",
                String::from_utf8_lossy(p)
            ));
        }
    }
    Ok(Alpn(protocols))
}

fn refuse_key_password(_: &str) -> Result<String, String> {
    Err("encrypted private keys are not supported (rustls reads unencrypted PEM keys): decrypt it, e.g. `openssl pkey -in key.pem -out plain-key.pem`, and protect the file's permissions instead".into())
}

fn refuse_ciphers(text: &str) -> Result<String, String> {
    if text == "TLSv1" {
        Ok(text.into())
    } else {
        Err("OpenSSL cipher strings are not supported: rustls offers its own safe cipher suites (TLS 1.3 and TLS 1.2 with forward secrecy)".into())
    }
}

/// `--worker-stop-signal` values.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum StopSignalArg {
    /// SIGTERM.
    Term,
    /// SIGINT.
    Int,
    /// SIGQUIT.
    Quit,
}

impl StopSignalArg {
    /// The signal this names.
    pub fn signal(self) -> server_core::Signal {
        match self {
            StopSignalArg::Term => server_core::Signal::SIGTERM,
            StopSignalArg::Int => server_core::Signal::SIGINT,
            StopSignalArg::Quit => server_core::Signal::SIGQUIT,
        }
    }
}

/// `--listener-drain` values.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum DrainArg {
    /// eBPF where it can be loaded, else close.
    Auto,
    /// Kernel-level refusal; fails at start if it cannot be loaded.
    Ebpf,
    /// Parent closes its socket first.
    Close,
}

/// `--log-format` values.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogFormatArg {
    /// `INFO:     [pid] message`.
    Text,
    /// One JSON object per line.
    Json,
}

impl LogFormatArg {
    /// The library's format.
    pub fn format(self) -> server_core::logging::LogFormat {
        match self {
            LogFormatArg::Text => server_core::logging::LogFormat::Text,
            LogFormatArg::Json => server_core::logging::LogFormat::Json,
        }
    }
}

/// `--log-level` values, as uvicorn spells them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogLevel {
    /// Errors only (uvicorn's `critical`).
    Critical,
    /// Errors.
    Error,
    /// Warnings and errors.
    Warning,
    /// Lifecycle events and access lines.
    Info,
    /// Diagnostics.
    Debug,
    /// Everything.
    Trace,
}

impl LogLevel {
    /// The tracing level this maps to.
    pub fn as_tracing(self) -> tracing::Level {
        match self {
            LogLevel::Critical | LogLevel::Error => tracing::Level::ERROR,
            LogLevel::Warning => tracing::Level::WARN,
            LogLevel::Info => tracing::Level::INFO,
            LogLevel::Debug => tracing::Level::DEBUG,
            LogLevel::Trace => tracing::Level::TRACE,
        }
    }
}

impl Cli {
    /// The server configuration these options describe (resolving `--host`).
    pub fn server_config(&self) -> server_core::Result<ServerConfig> {
        let bind = match (
            self.fd,
            server_core::socket_activation::inherited_listener(),
        ) {
            (Some(fd), _) | (None, Some(fd)) => Bind::Inherited(fd),
            (None, None) => match &self.uds {
                Some(path) => Bind::Unix(path.clone()),
                None => Bind::tcp_host(&self.host, self.port)?,
            },
        };
        let mut config = ServerConfig::new(bind);
        config.workers = match self.workers {
            WorkersArg::Count(n) => usize::from(n),
            WorkersArg::Auto => {
                let budget = server_core::cpus::CpuBudget::of_this_process();
                tracing::info!("--workers auto: {}", budget.describe());
                budget.workers().min(1024)
            }
        };
        config.graceful_timeout = Duration::from_secs_f64(self.timeout_graceful_shutdown);
        config.keep_alive_timeout = Duration::from_secs_f64(self.timeout_keep_alive);
        config.backlog = self.backlog;
        config.listener_drain = match self.listener_drain {
            DrainArg::Auto => ListenerDrain::Auto,
            DrainArg::Ebpf => ListenerDrain::Ebpf,
            DrainArg::Close => ListenerDrain::Close,
        };
        config.access_log = !self.no_access_log;
        config.healthcheck_timeout = Duration::from_secs_f64(self.timeout_worker_healthcheck);
        config.max_requests = self.limit_max_requests;
        config.max_requests_jitter = self.limit_max_requests_jitter;
        config.limit_max_memory = self.limit_max_memory.map(|mib| mib * 1024 * 1024);
        config.metrics_bind = self.metrics_bind;
        config.balance = !self.no_accept_gate;
        config.max_surge = usize::from(self.max_surge);
        config.pid_file = self.pid.clone();
        config.listener_mode = if self.reuse_port {
            ListenerMode::ReusePort
        } else {
            ListenerMode::Shared
        };
        config.shutdown_delay = Duration::from_secs_f64(self.shutdown_delay);
        config.limit_concurrency = self.limit_concurrency.map(|n| n as usize);
        config.limit_header_size = self.limit_header_size as usize;
        config.header_read_timeout = Duration::from_secs_f64(self.timeout_header_read);
        config.max_startup_failures = self.max_startup_failures;
        config.tls = self.tls_settings();
        Ok(config)
    }

    /// The demo app's WebSocket options.
    pub fn ws_options(&self) -> crate::demo_streams::WsOptions {
        crate::demo_streams::WsOptions {
            max_size: self.ws_max_size as usize,
            ping_interval: (self.ws_ping_interval > 0.0)
                .then(|| Duration::from_secs_f64(self.ws_ping_interval)),
            ping_timeout: Duration::from_secs_f64(self.ws_ping_timeout),
        }
    }

    /// The HTTPS settings, when `--ssl-certfile` is given.
    pub fn tls_settings(&self) -> Option<TlsSettings> {
        let (cert, key) = (self.ssl_certfile.as_ref()?, self.ssl_keyfile.as_ref()?);
        let mut settings = TlsSettings::new(cert, key).with_alpn(self.ssl_alpn.0.clone());
        if let Some(ca) = &self.ssl_ca_certs {
            let auth = match self.ssl_cert_reqs {
                0 => ClientAuth::None,
                1 => ClientAuth::Optional,
                _ => ClientAuth::Required,
            };
            settings = settings.with_client_auth(ca, auth);
        }
        Some(settings)
    }

    /// Combinations of options that make no sense, as clap's usage errors (exit 2).
    pub fn check(&self) -> Result<(), String> {
        if self.ssl_cert_reqs > 0 && self.ssl_ca_certs.is_none() {
            return Err("--ssl-cert-reqs 1 or 2 needs --ssl-ca-certs (the CAs client certificates must chain to)".into());
        }
        if self.app.is_some() && !self.command.is_empty() {
            return Err(
                "give either an app (MODULE:ATTRIBUTE) or a worker command after --, not both"
                    .into(),
            );
        }
        if let Some(app) = &self.app {
            if !app.contains(':') {
                return Err(format!(
                    "the app `{app}` must be MODULE:ATTRIBUTE, e.g. main:app"
                ));
            }
        }
        if self.ssl_certfile.is_some() && !self.command.is_empty() {
            return Err("--ssl-certfile is for the in-process workers: an external worker terminates TLS itself (e.g. uvicorn --ssl-certfile)".into());
        }
        Ok(())
    }
}

/// Accepts an IP address, or a host name that resolves now (a name that does not is a bad
/// option, exit 2, not a failed start).
fn parse_host(text: &str) -> Result<String, String> {
    server_core::Bind::tcp_host(text, 0)
        .map(|_| text.to_string())
        .map_err(|e| e.to_string())
}

/// Parses a non-negative number of seconds (fractions allowed), at most a day.
fn parse_seconds(text: &str) -> Result<f64, String> {
    let secs: f64 = text
        .parse()
        .map_err(|_| format!("`{text}` is not a number of seconds"))?;
    if !(0.0..=86_400.0).contains(&secs) {
        return Err(format!("`{text}` must be between 0 and 86400 seconds"));
    }
    Ok(secs)
}
