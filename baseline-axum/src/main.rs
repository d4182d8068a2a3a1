//! The baseline for benchmarks and comparisons: a plain single-process axum server on a
//! multi-thread runtime serving the demo app's `GET /` and a WebSocket echo on `/ws`, with
//! no supervisor and no workers; SIGTERM or Ctrl-C stops it through axum's own
//! `with_graceful_shutdown` (which, as axum #3003 says, does not wait for upgraded
//! connections).
//!
//! `cargo run --release -p baseline-axum -- 127.0.0.1:8000`

use axum::extract::ws::{Message, WebSocket, WebSocketUpgrade};
use axum::response::Response;
use axum::routing::get;
use axum::{Json, Router};
use serde_json::json;
use tokio::signal::unix::{signal, SignalKind};

#[tokio::main]
async fn main() -> std::io::Result<()> {
    let addr = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "127.0.0.1:8000".into());
    let app = Router::new()
        .route("/", get(|| async { Json(json!({"Hello": "World"})) }))
        .route("/ws", get(websocket));
    let listener = tokio::net::TcpListener::bind(&addr).await?;
    eprintln!(
        "baseline axum listening on http://{}",
        listener.local_addr()?
    );
    let mut terminate = signal(SignalKind::terminate())?;
    axum::serve(listener, app)
        .with_graceful_shutdown(async move {
            tokio::select! {
                _ = terminate.recv() => {}
                _ = tokio::signal::ctrl_c() => {}
            }
        })
        .await
}

async fn websocket(upgrade: WebSocketUpgrade) -> Response {
    upgrade.on_upgrade(echo)
}

async fn echo(mut socket: WebSocket) {
    while let Some(Ok(message)) = socket.recv().await {
        if matches!(message, Message::Text(_) | Message::Binary(_))
            && socket.send(message).await.is_err()
        {
            return;
        }
    }
}
