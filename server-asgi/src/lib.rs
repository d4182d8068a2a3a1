//! Python ASGI apps in server-core's workers.
//!
//! `server-cli MODULE:ATTRIBUTE` forks each worker and execs the user's Python interpreter,
//! which imports this extension module and calls [`serve`]: the app is imported, an asyncio
//! loop starts on a thread of its own, and the worker serves exactly as a built-in worker
//! (the drain, TLS, HTTP/2, metrics, the accept gate) with the app behind its router.
//!
//! The bridge ([`bridge`]): the tokio thread never takes the GIL. It hands each request to
//! the loop thread through a queue and an eventfd the loop watches; the loop thread, which
//! holds the GIL whenever it runs Python, builds the scope, runs the app, and sends the
//! response back through tokio channels (which need no GIL to wake the tokio side).

mod allocator;
mod app_loader;
mod awaitable;
mod bridge;
mod http;
mod lifespan;
mod response;
mod scope;
mod task;
mod websocket;

use pyo3::prelude::*;

/// Serves as a worker: imports `app_spec` (`module:attribute`) from `app_dir`, calling it
/// first if `factory`, then runs the worker the supervisor exec'd this interpreter for.
/// Returns the worker's exit status.
#[pyfunction]
#[pyo3(signature = (app_spec, app_dir, factory, lifespan, root_path, loop_kind))]
fn serve(
    py: Python<'_>,
    app_spec: &str,
    app_dir: &str,
    factory: bool,
    lifespan: &str,
    root_path: &str,
    loop_kind: &str,
) -> i32 {
    server_core::logging::init(tracing::Level::INFO, server_core::logging::LogFormat::Text);
    let options = app_loader::Options {
        spec: app_spec.to_string(),
        app_dir: app_dir.to_string(),
        factory,
        lifespan: match lifespan {
            "on" => lifespan::Mode::On,
            "off" => lifespan::Mode::Off,
            _ => lifespan::Mode::Auto,
        },
        root_path: root_path.to_string(),
        loop_kind: loop_kind.to_string(),
    };
    let loaded = match app_loader::load(py, &options) {
        Ok(loaded) => loaded,
        Err(message) => {
            tracing::error!("{message}");
            return app_loader::EXIT_APP_CANNOT_START;
        }
    };
    py.detach(|| http::run_worker(loaded))
}

/// The module each Python worker imports.
#[pymodule]
fn zerodrop_worker(module: &Bound<'_, PyModule>) -> PyResult<()> {
    module.add_function(wrap_pyfunction!(serve, module)?)?;
    Ok(())
}
