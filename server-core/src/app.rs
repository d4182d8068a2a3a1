//! What each worker serves: an axum router plus the hooks to run when the worker stops.

use std::future::Future;
use std::pin::Pin;

use axum::Router;

/// A shutdown hook: a future the worker awaits once, after its listener is closed and its
/// connections are drained.
pub type ShutdownHook = Pin<Box<dyn Future<Output = ()> + Send + 'static>>;

/// The application one worker serves.
///
/// Built inside the worker process (by the closure given to [`crate::Server::serve`]), so it
/// may hold per-process resources such as connection pools.
pub struct App {
    pub(crate) router: Router,
    pub(crate) shutdown_hooks: Vec<ShutdownHook>,
    pub(crate) liveness: Option<Liveness>,
}

/// Whether an app that runs beside the worker's runtime (a Python event loop on its own
/// thread) is alive: asked before every heartbeat.
pub type Liveness = std::sync::Arc<dyn Fn() -> bool + Send + Sync>;

impl App {
    /// An application that serves `router` and has no shutdown hooks.
    pub fn new(router: Router) -> Self {
        Self {
            router,
            shutdown_hooks: Vec::new(),
            liveness: None,
        }
    }

    /// Adds a hook that runs when the worker stops, after its listener is closed and its
    /// in-flight requests are finished, within the graceful-shutdown deadline. Hooks run
    /// one after the other, in the order they were added (like an ASGI lifespan shutdown).
    pub fn on_shutdown(mut self, hook: impl Future<Output = ()> + Send + 'static) -> Self {
        self.shutdown_hooks.push(Box::pin(hook));
        self
    }
}

impl App {
    /// Heartbeats go to the supervisor only while `alive` says so: an app whose work runs
    /// outside the worker's runtime (a Python event loop blocked by a handler) is then seen
    /// as hung after `--timeout-worker-healthcheck` and replaced, as a blocked runtime is.
    pub fn with_liveness(mut self, alive: Liveness) -> Self {
        self.liveness = Some(alive);
        self
    }
}

impl From<Router> for App {
    fn from(router: Router) -> Self {
        Self::new(router)
    }
}

impl std::fmt::Debug for App {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("App")
            .field("shutdown_hooks", &self.shutdown_hooks.len())
            .finish_non_exhaustive()
    }
}

/// The two ends of the connection a request came on, as a request extension (for apps
/// that report them, as the ASGI scope's `client` and `server` do).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConnectionInfo {
    /// The client's address (none on a unix socket).
    pub client: Option<std::net::SocketAddr>,
    /// The listener's address (none on a unix socket).
    pub server: Option<std::net::SocketAddr>,
    /// Whether the connection is TLS.
    pub tls: bool,
}

/// Exit status of a worker whose app cannot start (a module that does not import, a
/// lifespan startup that failed): the supervisor gives up at once (exit 1) instead of
/// starting it again and again. An app's own code may exit with it too.
pub const EXIT_APP_CANNOT_START: i32 = 3;
