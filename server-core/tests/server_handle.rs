//! `ServerHandle` from another thread of the embedding program: a rolling restart, one
//! worker more, one fewer, and a graceful stop, all sent from code while clients on new
//! connections keep coming, with no request dropped and none refused before the stop.
//!
//! Its own `main` (no libtest threads): the server must start from a process whose only
//! other thread is the one that holds the handle. The traffic comes from a child process
//! forked before the server starts; it tells the handle's thread what to send through a
//! pipe and checks the workers from /proc.

#![allow(clippy::unwrap_used)]

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::os::unix::net::UnixStream;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::{routing::get, Router};
use nix::sys::wait::{waitpid, WaitStatus};
use nix::unistd::{fork, ForkResult, Pid};
use server_core::{Bind, Server, ServerConfig, ShutdownOutcome};

/// Longest wait for any condition.
const LIMIT: Duration = Duration::from_secs(20);
/// Clients of the driver.
const CLIENTS: usize = 8;

fn main() {
    let port = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    let (mut to_handle, from_driver) = UnixStream::pair().unwrap();
    // SAFETY: single-threaded here (no thread started yet). The child is the embedding
    // program; this process is the driver (not the server's child, which it would reap).
    let server = match unsafe { fork() }.unwrap() {
        ForkResult::Child => {
            drop(to_handle);
            let status = embedding_program(addr, from_driver);
            // SAFETY: leave the forked test process without running anything else.
            unsafe { libc::_exit(status) }
        }
        ForkResult::Parent { child } => child,
    };
    drop(from_driver);
    let passed = drive(addr, server, &mut to_handle);
    let server_status = waitpid(server, None).unwrap();
    assert!(passed, "the driver saw a failure (see above)");
    assert_eq!(
        server_status,
        WaitStatus::Exited(server, 0),
        "the server did not stop gracefully"
    );
    println!("server_handle: stop, reload, scale up and down from another thread: 0 dropped");
}

/// A program that embeds the server and keeps one thread to drive its handle. Returns
/// the exit status: 0 after a graceful stop.
fn embedding_program(addr: SocketAddr, from_driver: UnixStream) -> i32 {
    let mut config = ServerConfig::new(Bind::Tcp(addr));
    config.workers = 2;
    config.access_log = false;
    config.graceful_timeout = Duration::from_secs(10);
    let mut server = Server::new(config).tolerate_other_threads();
    let handle = server.handle().unwrap();
    // The other thread: relays the driver's words to the handle. It only blocks in
    // read(2) and writes one byte per command: it holds no lock when a worker is forked.
    std::thread::spawn(move || {
        let mut from_driver = from_driver;
        let mut byte = [0u8; 1];
        while from_driver.read_exact(&mut byte).is_ok() {
            let _ = match byte[0] {
                b'r' => handle.reload(),
                b'+' => handle.add_worker(),
                b'-' => handle.remove_worker(),
                b's' => handle.stop(),
                _ => Ok(()),
            };
        }
    });
    match server.serve(|| Router::new().route("/", get(|| async { "ok" }))) {
        Ok(ShutdownOutcome::Graceful) => 0,
        Ok(other) => {
            eprintln!("server: {other:?}");
            1
        }
        Err(e) => {
            eprintln!("server: {e}");
            1
        }
    }
}

/// Counts of the driver's clients.
#[derive(Default)]
struct Counts {
    ok: AtomicU64,
    refused: AtomicU64,
    dropped: AtomicU64,
}

/// In the forked driver: traffic, then each command in turn, checked from /proc.
fn drive(addr: SocketAddr, server: Pid, to_handle: &mut UnixStream) -> bool {
    let deadline = Instant::now() + LIMIT;
    while request(addr) != Outcome::Ok {
        if Instant::now() > deadline {
            eprintln!("driver: the server never answered");
            return false;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    let counts = Arc::new(Counts::default());
    let running = Arc::new(AtomicBool::new(true));
    let clients: Vec<_> = (0..CLIENTS)
        .map(|_| {
            let (counts, running) = (Arc::clone(&counts), Arc::clone(&running));
            std::thread::spawn(move || {
                // Bounded in count as well as in time.
                for _ in 0..1_000_000 {
                    if !running.load(Ordering::Relaxed) {
                        break;
                    }
                    let counter = match request(addr) {
                        Outcome::Ok => &counts.ok,
                        Outcome::Refused => &counts.refused,
                        Outcome::Dropped => &counts.dropped,
                    };
                    counter.fetch_add(1, Ordering::Relaxed);
                }
            })
        })
        .collect();
    let mut passed = wait_until("2 workers at start", || workers_of(server).len() == 2);
    let before = workers_of(server);
    send(to_handle, b'r');
    passed &= wait_until("2 new workers after the reload", || {
        let now = workers_of(server);
        now.len() == 2 && now.iter().all(|w| !before.contains(w))
    });
    send(to_handle, b'+');
    passed &= wait_until("3 workers after one more", || workers_of(server).len() == 3);
    send(to_handle, b'-');
    passed &= wait_until("2 workers after one fewer", || {
        workers_of(server).len() == 2
    });
    // A little more traffic while the removed worker finishes its drain.
    std::thread::sleep(Duration::from_millis(300));
    running.store(false, Ordering::Relaxed);
    for client in clients {
        let _ = client.join();
    }
    let (ok, refused, dropped) = (
        counts.ok.load(Ordering::Relaxed),
        counts.refused.load(Ordering::Relaxed),
        counts.dropped.load(Ordering::Relaxed),
    );
    eprintln!("driver: ok={ok} refused={refused} dropped={dropped} workers_ok={passed}");
    send(to_handle, b's');
    passed && ok > 0 && refused == 0 && dropped == 0
}

fn send(to_handle: &mut UnixStream, command: u8) {
    to_handle.write_all(&[command]).unwrap();
}

/// Polls `condition` every 10 ms, at most [`LIMIT`]; says which one failed.
fn wait_until(what: &str, mut condition: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + LIMIT;
    while !condition() {
        if Instant::now() > deadline {
            eprintln!("driver: no {what} within {LIMIT:?}");
            return false;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    true
}

/// Live children of `parent`.
fn workers_of(parent: Pid) -> Vec<u32> {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| {
            let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
            let fields: Vec<&str> = stat
                .rsplit_once(')')
                .map(|(_, rest)| rest.split_whitespace().collect())
                .unwrap_or_default();
            fields.len() > 1 && fields[0] != "Z" && fields[1] == parent.as_raw().to_string()
        })
        .collect()
}

#[derive(Debug, PartialEq, Eq)]
enum Outcome {
    Ok,
    Refused,
    Dropped,
}

/// One request on a new connection.
fn request(addr: SocketAddr) -> Outcome {
    let mut stream = match TcpStream::connect_timeout(&addr, Duration::from_secs(1)) {
        Ok(s) => s,
        Err(e) if e.kind() == std::io::ErrorKind::ConnectionRefused => return Outcome::Refused,
        Err(_) => return Outcome::Dropped,
    };
    let _ = stream.set_read_timeout(Some(Duration::from_secs(2)));
    if stream
        .write_all(b"GET / HTTP/1.1\r\nhost: test\r\nconnection: close\r\n\r\n")
        .is_err()
    {
        return Outcome::Dropped;
    }
    let mut response = Vec::new();
    match stream.read_to_end(&mut response) {
        Ok(_) if response.starts_with(b"HTTP/1.1 200") => Outcome::Ok,
        _ => Outcome::Dropped,
    }
}
