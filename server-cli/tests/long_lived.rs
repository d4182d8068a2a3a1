//! Long-lived connections at a stop or a restart: the demo app's WebSocket echo (`/ws`)
//! and SSE stream (`/sse`) end cleanly when their worker drains, and an upgraded
//! connection counts as in flight until it ends, within the graceful deadline.

#![allow(clippy::unwrap_used)]

mod common;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use common::RunningServer;
use futures_util::{SinkExt, StreamExt};
use nix::sys::signal::Signal;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::Message;

type Socket =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

async fn connect(addr: SocketAddr) -> Socket {
    let (socket, response) = tokio_tungstenite::connect_async(format!("ws://{addr}/ws"))
        .await
        .unwrap();
    assert_eq!(response.status(), 101);
    socket
}

async fn echo(socket: &mut Socket, text: &str) {
    socket.send(Message::text(text)).await.unwrap();
    // Pings are answered by the library; they are shown to the reader too.
    let answer = loop {
        let next = tokio::time::timeout(Duration::from_secs(5), socket.next())
            .await
            .unwrap()
            .unwrap()
            .unwrap();
        if !matches!(next, Message::Ping(_) | Message::Pong(_)) {
            break next;
        }
    };
    assert_eq!(answer, Message::text(text));
}

/// Reads until the server's close frame; returns its code, after answering it (the
/// library answers a close frame by itself) and seeing the connection end.
async fn close_code(socket: &mut Socket) -> CloseCode {
    let limit = Duration::from_secs(10);
    let frame = loop {
        match tokio::time::timeout(limit, socket.next()).await.unwrap() {
            Some(Ok(Message::Close(frame))) => break frame.unwrap(),
            Some(Ok(_)) => continue,
            other => panic!("no close frame: {other:?}"),
        }
    };
    // The end after the close handshake: no error, no reset.
    match tokio::time::timeout(limit, socket.next()).await.unwrap() {
        None => {}
        other => panic!("after the close frame: {other:?}"),
    }
    frame.code
}

#[test]
fn a_websocket_gets_1001_at_sigterm_and_the_server_exits_once_it_is_closed() {
    let mut server = RunningServer::start(&[
        "--workers",
        "1",
        "--no-access-log",
        "--timeout-graceful-shutdown",
        "10",
    ]);
    let addr = server.addr;
    let rt = runtime();
    let mut socket = rt.block_on(connect(addr));
    rt.block_on(echo(&mut socket, "hello"));
    let signalled = Instant::now();
    server.signal(Signal::SIGTERM);
    assert_eq!(rt.block_on(close_code(&mut socket)), CloseCode::Away);
    let (status, exited) = server.wait_exit(Duration::from_secs(15));
    assert!(status.success());
    let took = exited - signalled;
    assert!(took < Duration::from_secs(2), "exit {took:?} after SIGTERM");
}

#[test]
fn a_rolling_restart_closes_websockets_with_1012_and_they_reconnect_to_the_new_generation() {
    let mut server = RunningServer::start(&["--workers", "2", "--no-access-log"]);
    let addr = server.addr;
    let rt = runtime();
    let mut sockets: Vec<Socket> = (0..8).map(|_| rt.block_on(connect(addr))).collect();
    for socket in &mut sockets {
        rt.block_on(echo(socket, "before"));
    }
    server.signal(Signal::SIGHUP);
    for socket in &mut sockets {
        assert_eq!(rt.block_on(close_code(socket)), CloseCode::Restart);
        // Served again within 2 s. With one replacement at a time, a reconnect may land on
        // an old worker not yet replaced, which then sends 1012 in turn: reconnect again.
        let started = Instant::now();
        rt.block_on(async {
            loop {
                let mut again = connect(addr).await;
                again.send(Message::text("after")).await.unwrap();
                match tokio::time::timeout(Duration::from_secs(2), again.next()).await {
                    Ok(Some(Ok(answer))) if answer == Message::text("after") => break,
                    Ok(Some(Ok(Message::Close(Some(frame))))) => {
                        assert_eq!(frame.code, CloseCode::Restart);
                    }
                    other => panic!("after a reconnect: {other:?}"),
                }
                assert!(
                    started.elapsed() < Duration::from_secs(2),
                    "not served again in 2 s"
                );
            }
        });
    }
    // Both old workers have finished: the close frames did not hold them.
    server.wait_for_lines("Finished server process", 2);
    server.signal(Signal::SIGTERM);
    assert!(server.wait_exit(Duration::from_secs(15)).0.success());
}

#[test]
fn an_upgraded_connection_holds_the_worker_until_it_ends_bounded_by_the_close_timeout() {
    let mut server = RunningServer::start(&[
        "--workers",
        "1",
        "--no-access-log",
        "--timeout-graceful-shutdown",
        "10",
    ]);
    // A WebSocket client that never reads: it will not answer the close frame.
    let _stream = raw_websocket(server.addr);
    let signalled = Instant::now();
    server.signal(Signal::SIGTERM);
    let (status, exited) = server.wait_exit(Duration::from_secs(15));
    assert!(status.success());
    // Not at once (the upgraded connection counts as in flight), not at the deadline
    // (10 s): after the demo's 2 s wait for a close frame.
    let took = exited - signalled;
    assert!(
        (Duration::from_millis(1800)..Duration::from_millis(4000)).contains(&took),
        "exit {took:?} after SIGTERM"
    );
}

/// The events of an SSE response as (id, data) until the body ends; and whether it ended
/// with a `retry:` hint and a clean end of the chunked body.
fn read_events(reader: &mut BufReader<TcpStream>) -> (Vec<u64>, bool) {
    let mut ids = Vec::new();
    let mut saw_retry = false;
    let mut line = String::new();
    loop {
        line.clear();
        if reader.read_line(&mut line).unwrap() == 0 {
            panic!("the connection ended before the chunked body did");
        }
        let text = line.trim_end();
        if let Some(id) = text.strip_prefix("id: ") {
            ids.push(id.parse().unwrap());
        } else if text.starts_with("retry: ") {
            saw_retry = true;
        } else if text == "0" {
            // The last chunk: the body is complete.
            return (ids, saw_retry);
        }
    }
}

fn open_stream(addr: SocketAddr, last_event_id: Option<u64>) -> BufReader<TcpStream> {
    let mut stream = TcpStream::connect(addr).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let resume = last_event_id
        .map(|id| format!("Last-Event-ID: {id}\r\n"))
        .unwrap_or_default();
    write!(
        stream,
        "GET /sse?every=20 HTTP/1.1\r\nHost: x\r\n{resume}\r\n"
    )
    .unwrap();
    BufReader::new(stream)
}

#[test]
fn an_sse_stream_ends_at_an_event_boundary_at_a_restart_and_resumes_from_its_last_id() {
    let mut server = RunningServer::start(&["--workers", "1", "--no-access-log"]);
    let mut reader = open_stream(server.addr, None);
    let mut line = String::new();
    // Some events first.
    while !line.starts_with("id: 5") {
        line.clear();
        reader.read_line(&mut line).unwrap();
    }
    server.signal(Signal::SIGHUP);
    let (ids, saw_retry) = read_events(&mut reader);
    assert!(saw_retry, "no retry hint");
    let last = ids.last().copied().unwrap_or(5);
    // The new generation goes on from the next id.
    let mut resumed = open_stream(server.addr, Some(last));
    let mut line = String::new();
    while !line.starts_with("id: ") {
        line.clear();
        resumed.read_line(&mut line).unwrap();
    }
    assert_eq!(line.trim_end(), format!("id: {}", last + 1));
    server.signal(Signal::SIGTERM);
    assert!(server.wait_exit(Duration::from_secs(15)).0.success());
}

/// A WebSocket upgrade request for `/ws`, written by hand.
const UPGRADE_REQUEST: &[u8] = b"GET /ws HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\n\
    Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\
    Sec-WebSocket-Version: 13\r\n\r\n";

/// Opens a WebSocket by hand and returns the raw stream (a client that never answers).
fn raw_websocket(addr: SocketAddr) -> TcpStream {
    let mut stream = TcpStream::connect(addr).unwrap();
    stream.write_all(UPGRADE_REQUEST).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        stream.read_exact(&mut byte).unwrap();
        head.push(byte[0]);
    }
    assert!(head.starts_with(b"HTTP/1.1 101"));
    stream
}

#[test]
fn an_oversized_message_closes_with_1009_and_a_silent_client_is_pinged_out_with_1011() {
    let server = RunningServer::start(&[
        "--workers",
        "1",
        "--no-access-log",
        "--ws-max-size",
        "1024",
        "--ws-ping-interval",
        "0.2",
        "--ws-ping-timeout",
        "0.3",
    ]);
    let rt = runtime();
    let mut socket = rt.block_on(connect(server.addr));
    rt.block_on(socket.send(Message::binary(vec![7u8; 4096])))
        .unwrap();
    assert_eq!(rt.block_on(close_code(&mut socket)), CloseCode::Size);
    // The worker serves on; a client that answers pings (the library does) stays open
    // across many ping intervals.
    let mut answering = rt.block_on(connect(server.addr));
    for round in 0..5 {
        rt.block_on(echo(&mut answering, &format!("round {round}")));
        std::thread::sleep(Duration::from_millis(250));
    }
    // One that never answers is closed with 1011 after the interval plus the timeout.
    let mut silent = raw_websocket(server.addr);
    let started = Instant::now();
    let mut received = Vec::new();
    let _ = silent.read_to_end(&mut received);
    let took = started.elapsed();
    let close_1011 = [0x88, 0x03, 0xF3];
    assert!(
        received
            .windows(4)
            .any(|w| w[0] == close_1011[0] && w[2..] == close_1011[1..]),
        "{received:?}"
    );
    assert!(took < Duration::from_secs(3), "closed after {took:?}");
}

#[test]
fn an_upgrade_answered_by_a_draining_worker_is_a_real_upgrade_then_a_close_frame() {
    let mut server = RunningServer::start(&["--workers", "1", "--no-access-log"]);
    // A keep-alive connection that has been served: at the stop it gets the drain grace.
    let mut stream = TcpStream::connect(server.addr).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    stream
        .write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        .unwrap();
    let mut first = [0u8; 256];
    let n = stream.read(&mut first).unwrap();
    assert!(first[..n].starts_with(b"HTTP/1.1 200"));
    server.signal(Signal::SIGTERM);
    // The parent's line, then the worker's: the worker drains.
    server.wait_for_lines("Shutting down", 2);
    // The upgrade request arrives while the worker drains.
    stream.write_all(UPGRADE_REQUEST).unwrap();
    let mut received = Vec::new();
    let _ = stream.read_to_end(&mut received);
    let text = String::from_utf8_lossy(&received).to_ascii_lowercase();
    assert!(text.starts_with("http/1.1 101"), "{text}");
    assert!(text.contains("connection: upgrade"), "{text}");
    assert!(!text.contains("connection: close"), "{text}");
    // Then the server's close frame with 1001 (0x03E9).
    assert!(
        received
            .windows(4)
            .any(|w| w[0] == 0x88 && w[2..] == [0x03, 0xE9]),
        "{received:?}"
    );
}

#[test]
fn a_failed_upgrade_gets_400_and_the_worker_serves_on() {
    let server = RunningServer::start(&["--workers", "1", "--no-access-log"]);
    let head = "GET /ws HTTP/1.1\r\nHost: x\r\nConnection: close\r\n";
    for bad in [
        // No Upgrade header at all.
        format!("{head}\r\n"),
        // No key.
        format!("{head}Upgrade: websocket\r\nSec-WebSocket-Version: 13\r\n\r\n"),
        // A version this server does not speak.
        format!(
            "{head}Upgrade: websocket\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\
             Sec-WebSocket-Version: 8\r\n\r\n"
        ),
    ] {
        let response = common::raw_request(server.addr, bad.as_bytes()).unwrap();
        assert_eq!(response.status, 400, "{bad:?}: {}", response.head);
    }
    assert_eq!(common::http_get(server.addr, "/").unwrap().status, 200);
}

/// A client frame carrying `len` bytes (masked with a zero key, so the payload is as is).
fn masked_binary_frame(len: usize) -> Vec<u8> {
    let mut frame = vec![0x82, 0x80 | 127];
    frame.extend_from_slice(&(len as u64).to_be_bytes());
    frame.extend_from_slice(&[0, 0, 0, 0]);
    frame.resize(frame.len() + len, 7);
    frame
}

#[test]
fn a_client_that_stops_reading_is_cut_at_the_graceful_deadline() {
    let mut server = RunningServer::start(&[
        "--workers",
        "1",
        "--no-access-log",
        "--timeout-graceful-shutdown",
        "3",
    ]);
    let mut stream = raw_websocket(server.addr);
    // Messages the client never reads the echoes of: the server's writes block once both
    // directions' buffers are full, so it can send neither echo nor close frame.
    stream
        .set_write_timeout(Some(Duration::from_millis(300)))
        .unwrap();
    let frame = masked_binary_frame(64 * 1024);
    let blocked = (0..1024).any(|_| stream.write_all(&frame).is_err());
    assert!(blocked, "64 MiB written and the server still reads");
    server.signal(Signal::SIGTERM);
    let signalled = Instant::now();
    let (status, exited) = server.wait_exit(Duration::from_secs(15));
    let took = exited - signalled;
    // Held until the deadline (the connection counts as in flight), cut then. (Whether the
    // worker's own abort or the parent's SIGKILL at the same instant ends it decides the
    // exit status, 0 or 1: the timing is the guarantee.)
    assert!(matches!(status.code(), Some(0 | 1)), "{status}");
    assert!(
        took > Duration::from_millis(2500) && took < Duration::from_millis(4500),
        "exited {took:?} after SIGTERM"
    );
}
