//! A worker process: its own tokio runtime serving the application on the shared listener.

mod activity;
mod balance;
mod connection;
mod linger;
mod listener;
mod reporter;
mod service;
mod stop;
mod tls;
mod tracked;

use std::io;
use std::os::unix::net::UnixStream as StdUnixStream;
use std::sync::Arc;
use std::time::Duration;

use hyper_util::rt::{TokioExecutor, TokioTimer};
use hyper_util::server::conn::auto;
use tokio::io::AsyncWriteExt;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpListener, UnixListener, UnixStream};
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::app::App;
use crate::config::ServerConfig;
use crate::control::ToParent;
use crate::listener::Listener;
use connection::{serve_connection, ConnectionContext};
use listener::WorkerListener;
use reporter::{report_to_parent, RequestQuota};
use service::WorkerService;
use stop::{wait_for_stop, StopRequest};
use tls::WorkerTls;

use crate::config::ListenerMode;
use crate::tls::PairWatch;

/// Pause after an accept error such as EMFILE, so that a worker out of descriptors retries
/// instead of spinning.
const ACCEPT_ERROR_PAUSE: Duration = Duration::from_millis(100);

/// What a new worker process starts with.
#[derive(Debug)]
pub(crate) struct WorkerStart {
    /// The shared listening socket (the same socket as the parent's, not a copy).
    pub(crate) listener: Listener,
    /// The worker's end of its channel to the supervisor.
    pub(crate) control: StdUnixStream,
}

/// The entry point run in each forked worker; returns the process exit status.
pub(crate) type WorkerBody<'a> = dyn FnMut(WorkerStart) -> i32 + 'a;

/// Runs a worker to completion and returns its exit status. Called right after the fork.
pub(crate) fn run(
    start: WorkerStart,
    config: &ServerConfig,
    make_app: &dyn Fn() -> App,
    inherited_tls: Option<crate::tls::InheritedTls>,
) -> i32 {
    let pid = std::process::id();
    tracing::info!("Started server process [{pid}]");
    let runtime = if config.worker_threads <= 1 {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
    } else {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(config.worker_threads)
            .enable_all()
            .build()
    };
    let runtime = match runtime {
        Ok(rt) => rt,
        Err(e) => {
            tracing::error!("cannot start the worker's runtime: {e}");
            return 1;
        }
    };
    let status = match runtime.block_on(serve(start, config, make_app, inherited_tls)) {
        Ok(()) => 0,
        Err(e) => {
            tracing::error!("worker failed: {e}");
            1
        }
    };
    // Blocking tasks the app may have left must not delay the exit.
    runtime.shutdown_background();
    tracing::info!("Finished server process [{pid}]");
    status
}

/// Registers the inherited listener with the runtime and serves on it.
async fn serve(
    start: WorkerStart,
    config: &ServerConfig,
    make_app: &dyn Fn() -> App,
    inherited_tls: Option<crate::tls::InheritedTls>,
) -> io::Result<()> {
    let tls = match (&config.tls, inherited_tls) {
        (Some(settings), Some(inherited)) => {
            let tls = WorkerTls::new(settings, inherited).map_err(io::Error::other)?;
            tokio::spawn(tls.clone().keep_current(PairWatch::new(settings.clone())));
            Some(tls)
        }
        _ => None,
    };
    match start.listener {
        Listener::Tcp(l) => {
            l.set_nonblocking(true)?;
            let listener = TcpListener::from_std(l)?;
            serve_on(listener, start.control, config, make_app, tls).await
        }
        Listener::Unix(l) => {
            l.set_nonblocking(true)?;
            let listener = UnixListener::from_std(l)?;
            serve_on(listener, start.control, config, make_app, tls).await
        }
    }
}

/// The worker's life: ready, serve until told to stop, drain, run the shutdown hooks.
async fn serve_on<L: WorkerListener>(
    listener: L,
    control: StdUnixStream,
    config: &ServerConfig,
    make_app: &dyn Fn() -> App,
    tls: Option<WorkerTls>,
) -> io::Result<()> {
    let app = make_app();
    control.set_nonblocking(true)?;
    let (control_read, mut control_write) = UnixStream::from_std(control)?.into_split();
    let context = Arc::new(ConnectionContext {
        builder: connection_builder(config),
        draining: CancellationToken::new(),
        abort: CancellationToken::new(),
        unready: CancellationToken::new(),
        idle_drain_grace: config.idle_drain_grace,
        keep_alive_timeout: config.keep_alive_timeout,
        header_read_timeout: config.header_read_timeout,
    });
    let connections = TaskTracker::new();
    let quota = config
        .max_requests
        .map(|max| Arc::new(RequestQuota::new(max, config.max_requests_jitter)));
    let accept = Acceptor {
        app: &app,
        context: &context,
        connections: &connections,
        access_log: config.access_log,
        quota: quota.clone(),
        readiness_path: config.readiness_path.as_deref().map(Arc::from),
        limit_concurrency: config.limit_concurrency,
        tls,
        // With one socket per worker another worker cannot take this one's connections:
        // holding back would only delay them.
        gate: listener
            .gate()
            .filter(|_| config.balance && config.listener_mode == ListenerMode::Shared),
        local: listener.local_address(),
    };

    control_write.write_all(&[ToParent::Ready.encode()]).await?;
    let reporter = tokio::spawn(report_to_parent(control_write, quota, app.liveness.clone()));
    let stop = wait_for_stop(
        control_read,
        config.graceful_timeout,
        context.unready.clone(),
    );
    let StopRequest::Graceful { within, reason } = accept.until_stopped(&listener, stop).await;
    let deadline = Instant::now() + within;
    tracing::info!("Shutting down");
    crate::draining::announce(reason);
    drain(accept, listener, reporter, deadline).await;
    run_shutdown_hooks(app, deadline).await;
    Ok(())
}

/// Stops taking connections and finishes the ones taken, by `deadline`.
async fn drain<L: WorkerListener>(
    accept: Acceptor<'_>,
    listener: L,
    reporter: JoinHandle<()>,
    deadline: Instant,
) {
    // From here every response carries `Connection: close`. Heartbeats stop: the
    // supervisor now waits for this worker's exit, under its own deadline.
    reporter.abort();
    accept.context.draining.cancel();
    let mut accept = accept;
    accept.drain_queue(listener);
    accept.connections.close();
    if tokio::time::timeout_at(deadline, accept.connections.wait())
        .await
        .is_err()
    {
        tracing::warn!(
            "graceful shutdown deadline reached: aborting {} connections",
            accept.connections.len()
        );
        accept.context.abort.cancel();
        // Connections end at once when aborted; an upgraded one the app still holds (a
        // WebSocket that ignores the drain) does not wait for its app: the worker exits.
        let _ = tokio::time::timeout(ABORT_GRACE, accept.connections.wait()).await;
    }
}

/// After the deadline's abort, how long the worker waits for its connections to end.
const ABORT_GRACE: Duration = Duration::from_millis(100);

/// Runs the app's shutdown hooks, in order, after the listener is closed and the
/// connections are drained; cut short at `deadline`.
async fn run_shutdown_hooks(app: App, deadline: Instant) {
    if app.shutdown_hooks.is_empty() {
        return;
    }
    tracing::info!("Waiting for application shutdown.");
    let hooks = async {
        for hook in app.shutdown_hooks {
            hook.await;
        }
    };
    match tokio::time::timeout_at(deadline, hooks).await {
        Ok(()) => tracing::info!("Application shutdown complete."),
        Err(_) => tracing::warn!("application shutdown hooks cut short by the deadline"),
    }
}

fn connection_builder(config: &ServerConfig) -> auto::Builder<TokioExecutor> {
    let mut builder = auto::Builder::new(TokioExecutor::new());
    // No hyper header-read timer: it is armed (and allocated) per request. Each connection
    // keeps one idle timer instead (see `activity::Activity`), which bounds both idle
    // keep-alive connections and clients that send their head too slowly.
    builder
        .http1()
        .timer(TokioTimer::new())
        .keep_alive(true)
        // A head larger than this is answered with 431 (hyper needs at least 8 KiB).
        .max_buf_size(config.limit_header_size.max(8192))
        .header_read_timeout(None::<Duration>);
    builder.http2().timer(TokioTimer::new());
    builder
}

/// Accepts connections and hands each to its own task.
struct Acceptor<'a> {
    app: &'a App,
    context: &'a Arc<ConnectionContext>,
    connections: &'a TaskTracker,
    access_log: bool,
    quota: Option<Arc<RequestQuota>>,
    readiness_path: Option<Arc<str>>,
    limit_concurrency: Option<usize>,
    tls: Option<WorkerTls>,
    /// The accept gate that spreads connections over the workers (TCP, with a slot).
    gate: Option<balance::AcceptGate>,
    /// The listener's address (TCP), for [`crate::ConnectionInfo`].
    local: Option<std::net::SocketAddr>,
}

impl Acceptor<'_> {
    /// Accepts until `stop` resolves. `accept()` is cancel-safe: when the stop wins the
    /// select, no connection has been taken from the queue and lost.
    async fn until_stopped<L: WorkerListener>(
        &self,
        listener: &L,
        stop: impl std::future::Future<Output = StopRequest>,
    ) -> StopRequest {
        tokio::pin!(stop);
        loop {
            tokio::select! {
                biased;
                request = &mut stop => return request,
                accepted = self.accept_next(listener) => match accepted {
                    Ok((stream, peer)) => self.serve(stream, peer),
                    Err(e) if is_per_connection_error(&e) => {}
                    Err(e) => {
                        tracing::error!("accept failed: {e}; retrying in {ACCEPT_ERROR_PAUSE:?}");
                        tokio::select! {
                            request = &mut stop => return request,
                            () = tokio::time::sleep(ACCEPT_ERROR_PAUSE) => {}
                        }
                    }
                },
            }
        }
    }

    /// The next connection: through the accept gate when there is one.
    async fn accept_next<L: WorkerListener>(
        &self,
        listener: &L,
    ) -> io::Result<(L::Io, listener::Peer)> {
        match &self.gate {
            Some(gate) => listener.accept_gated(gate).await,
            None => listener.accept().await,
        }
    }

    /// Accepts every connection still queued, then closes this worker's copies of the
    /// listener (it and the accept gate's duplicate are dropped here). Nothing waits
    /// between the last accept and the close. The gate's copy must go with the listener:
    /// kept until the connections are drained, it would hold the socket open after the
    /// other workers closed theirs, and whatever the kernel queued meanwhile would be
    /// reset when it is finally dropped (the close fallback's drops under load, issue 25).
    fn drain_queue<L: WorkerListener>(&mut self, listener: L) {
        loop {
            match listener.accept_queued() {
                Ok((stream, peer)) => self.serve(stream, peer),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) if is_per_connection_error(&e) => {}
                Err(e) => {
                    tracing::error!("accept failed while draining: {e}");
                    break;
                }
            }
        }
        drop(self.gate.take());
        drop(listener);
    }

    fn serve<I>(&self, stream: I, peer: listener::Peer)
    where
        I: AsyncRead + AsyncWrite + linger::Linger + std::os::fd::AsFd + Unpin + Send + 'static,
    {
        let over_limit = self
            .limit_concurrency
            .is_some_and(|limit| self.connections.len() >= limit);
        let context = Arc::clone(self.context);
        match (&self.tls, over_limit) {
            // Over the limit on TLS: a plain-text 503 would be garbage to the client; the
            // connection is closed before the handshake (the client may retry).
            (Some(_), true) => drop(stream),
            (None, true) => {
                tokio::spawn(refuse_over_limit(stream));
            }
            // The tracker counts the connection itself, not its task: after an upgrade
            // the app holds it, and the drain still waits for it.
            (None, false) => {
                let activity = Arc::new(activity::Activity::opened());
                let server = self.server_address(&stream);
                let stream =
                    tracked::Tracked::new(stream, self.connections.token(), activity.clone());
                let service = self.service(peer, server, activity);
                // Boxed: the task then moves a pointer, not the connection's future (a few
                // KB, copied three times on the way into the task: 2k instructions of a
                // Python worker's 76k per new connection, callgrind).
                tokio::spawn(Box::pin(serve_connection(stream, service, context)));
            }
            (Some(tls), false) => {
                let activity = Arc::new(activity::Activity::opened());
                let server = self.server_address(&stream);
                let stream =
                    tracked::Tracked::new(stream, self.connections.token(), activity.clone());
                let tls = tls.clone();
                let service = self.service(peer, server, activity);
                tokio::spawn(async move {
                    if let Some((stream, client)) = tls.handshake(stream, &context).await {
                        let service = service.with_client_certificate(client);
                        serve_connection(stream, service, context).await;
                    }
                });
            }
        }
    }

    /// The address a client connected to, as ASGI's `server` and the connection info
    /// report it: the listener's, or for a wildcard bind (`0.0.0.0`, `::`) the connection's
    /// own local address (one `getsockname`), which is where the client really went.
    fn server_address(&self, stream: &impl std::os::fd::AsFd) -> Option<std::net::SocketAddr> {
        match self.local {
            Some(local) if local.ip().is_unspecified() => socket2::SockRef::from(stream)
                .local_addr()
                .ok()
                .and_then(|address| address.as_socket())
                .or(Some(local)),
            listening => listening,
        }
    }

    /// The request wrapper of a new connection from `peer` to `server`.
    fn service(
        &self,
        peer: listener::Peer,
        server: Option<std::net::SocketAddr>,
        activity: Arc<activity::Activity>,
    ) -> WorkerService {
        WorkerService {
            router: self.app.router.clone(),
            draining: self.context.draining.clone(),
            peer,
            access_log: self.access_log,
            activity,
            quota: self.quota.clone(),
            readiness: self
                .readiness_path
                .clone()
                .map(|path| (path, self.context.unready.clone())),
            client_certificate: None,
            connection: crate::ConnectionInfo {
                client: peer.0,
                server,
                tls: self.tls.is_some(),
            },
        }
    }
}

/// Answers a connection beyond `--limit-concurrency` with 503 and closes it, without
/// reading its request (a client that never reads is cut after one second).
async fn refuse_over_limit<I>(mut stream: I)
where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    const OVER_LIMIT: &[u8] = b"HTTP/1.1 503 Service Unavailable\r\ncontent-type: text/plain\r\n\
        content-length: 21\r\nconnection: close\r\n\r\nservice unavailable\r\n";
    let write = async {
        stream.write_all(OVER_LIMIT).await?;
        stream.shutdown().await
    };
    let _ = tokio::time::timeout(Duration::from_secs(1), write).await;
}

/// Errors that concern one connection only (the client gave up during the handshake).
fn is_per_connection_error(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::ConnectionAborted
            | io::ErrorKind::ConnectionReset
            | io::ErrorKind::Interrupted
    )
}
