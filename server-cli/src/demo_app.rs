//! The built-in demo application: the seed report's FastAPI app, in axum.

use std::time::Duration;

use axum::body::Bytes;
use axum::extract::Query;
use axum::routing::{get, post};
use axum::{Extension, Json, Router};
use serde::Deserialize;
use serde_json::{json, Value};
use server_core::{App, ClientCertificate};

use crate::demo_streams::WsOptions;

/// `/sleep` waits this long unless `?secs=` says otherwise (the seed's value).
const DEFAULT_SLEEP: Duration = Duration::from_secs(60);

/// Builds the demo app for one worker. `shutdown_delay` is how long its shutdown hook
/// sleeps, like the seed's `@app.on_event("shutdown")` handler; `ws` rules its WebSockets.
pub fn demo_app(shutdown_delay: Duration, ws: WsOptions) -> App {
    let router = Router::new()
        .route("/", get(|| async { Json(json!({"Hello": "World"})) }))
        .route("/sleep", get(sleep))
        .route("/block", get(block))
        .route("/panic", get(panic))
        .route("/big", get(big))
        .route("/grow", get(grow))
        .route("/burn", get(burn))
        .route("/echo", post(echo))
        .route("/healthz", get(|| async { "ok" }))
        .route("/whoami", get(whoami))
        .route(
            "/ws",
            get(move |upgrade| crate::demo_streams::websocket(upgrade, ws)),
        )
        .route("/sse", get(crate::demo_streams::events));
    let app = App::new(router);
    if shutdown_delay.is_zero() {
        return app;
    }
    app.on_shutdown(async move {
        tracing::info!("Shutdown event");
        tokio::time::sleep(shutdown_delay).await;
        tracing::info!("Shutdown event done");
    })
}

/// The client certificate's subject on an mTLS connection (`null` without one).
async fn whoami(client: Option<Extension<ClientCertificate>>) -> Json<Value> {
    let subject = client.map(|Extension(c)| c.subject.to_string());
    Json(json!({ "client_certificate_subject": subject }))
}

/// Query of `/sleep`.
#[derive(Debug, Deserialize)]
struct SleepQuery {
    /// Seconds to wait before answering.
    secs: Option<f64>,
}

/// Answers after a while: a request that is in flight when the server stops.
async fn sleep(Query(query): Query<SleepQuery>) -> Json<Value> {
    let wait = query
        .secs
        .filter(|s| s.is_finite() && *s >= 0.0)
        .map_or(DEFAULT_SLEEP, |s| Duration::from_secs_f64(s.min(86_400.0)));
    tracing::info!("demo: /sleep waiting {:.3} s", wait.as_secs_f64());
    tokio::time::sleep(wait).await;
    Json(json!({"slept": wait.as_secs_f64()}))
}

/// Blocks the worker's runtime thread (a handler stuck in a CPU loop or a blocking call):
/// the supervisor's health check must notice and replace the worker.
async fn block(Query(query): Query<SleepQuery>) -> Json<Value> {
    let wait = query
        .secs
        .filter(|s| s.is_finite() && *s >= 0.0)
        .map_or(DEFAULT_SLEEP, |s| Duration::from_secs_f64(s.min(86_400.0)));
    tracing::info!(
        "demo: /block blocking the runtime for {:.3} s",
        wait.as_secs_f64()
    );
    std::thread::sleep(wait);
    Json(json!({"blocked": wait.as_secs_f64()}))
}

/// Query of `/big`.
#[derive(Debug, Deserialize)]
struct BigQuery {
    /// Size of the body in bytes (at most 1 GiB).
    bytes: Option<usize>,
}

/// A large body, for a client too slow to read it (or that never does).
async fn big(Query(query): Query<BigQuery>) -> Vec<u8> {
    vec![b'x'; query.bytes.unwrap_or(1 << 20).min(1 << 30)]
}

/// Query of `/burn`.
#[derive(Debug, Deserialize)]
struct BurnQuery {
    /// Milliseconds of CPU to burn (at most 1000).
    ms: Option<f64>,
}

/// Burns CPU on the worker's thread (a CPU-heavy handler): how much a worker's share of
/// connections matters.
async fn burn(Query(query): Query<BurnQuery>) -> Json<Value> {
    let ms = query
        .ms
        .filter(|m| m.is_finite() && *m >= 0.0)
        .unwrap_or(1.0)
        .min(1000.0);
    let until = std::time::Instant::now() + Duration::from_secs_f64(ms / 1000.0);
    let mut spins: u64 = 0;
    while std::time::Instant::now() < until {
        spins = std::hint::black_box(spins.wrapping_add(1));
    }
    Json(json!({"burned_ms": ms, "spins": spins}))
}

/// Query of `/grow`.
#[derive(Debug, Deserialize)]
struct GrowQuery {
    /// MiB to leak (at most 1024 per request).
    mib: Option<usize>,
}

/// Leaks memory on purpose (touched, so it is resident): a worker that grows until
/// `--limit-max-memory` replaces it.
async fn grow(Query(query): Query<GrowQuery>) -> Json<Value> {
    let mib = query.mib.unwrap_or(10).min(1024);
    let leaked: &'static mut [u8] = Box::leak(vec![1u8; mib * 1024 * 1024].into_boxed_slice());
    Json(json!({"leaked_mib": mib, "first_byte": leaked.first().copied()}))
}

/// A handler bug: the request gets 500 and the worker serves on.
async fn panic() -> &'static str {
    panic!("demo: /panic was asked to panic")
}

/// A non-idempotent request, which no proxy may retry: it reports the body length.
async fn echo(body: Bytes) -> Json<Value> {
    Json(json!({"len": body.len()}))
}
