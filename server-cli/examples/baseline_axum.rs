//! The baseline for benchmarks: a plain single-process axum server on a multi-thread
//! runtime serving the demo app's `GET /`, with no supervisor, no workers, no drain.
//!
//! `cargo run --release -p server-cli --example baseline_axum -- 127.0.0.1:8000`

use axum::routing::get;
use axum::{Json, Router};
use serde_json::json;

#[tokio::main]
async fn main() -> std::io::Result<()> {
    let addr = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "127.0.0.1:8000".into());
    let app = Router::new().route("/", get(|| async { Json(json!({"Hello": "World"})) }));
    let listener = tokio::net::TcpListener::bind(&addr).await?;
    eprintln!(
        "baseline axum listening on http://{}",
        listener.local_addr()?
    );
    axum::serve(listener, app).await
}
