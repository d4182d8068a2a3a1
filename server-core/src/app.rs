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
}

impl App {
    /// An application that serves `router` and has no shutdown hooks.
    pub fn new(router: Router) -> Self {
        Self {
            router,
            shutdown_hooks: Vec::new(),
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
