//! The metrics process: a child of the parent that serves `GET /metrics` on
//! `--metrics-bind` from the shared region. The parent stays a single-threaded loop with
//! no runtime; the request workers never spend a cycle on a scrape (and a scrape never
//! waits behind their load); external workers, which cannot serve it, get it too.
//! hyper parses the scrape's HTTP.

use std::convert::Infallible;
use std::net::TcpListener;
use std::os::fd::{FromRawFd, OwnedFd, RawFd};

use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::header::CONTENT_TYPE;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use nix::sys::signal::{signal, SigHandler, Signal};
use nix::unistd::Pid;

use super::region::Region;
use super::render::{render, Snapshot};
use crate::error::{Error, Result};
use crate::supervisor::child::{self, fork_child, Forked, Lifetime};

/// Forks the metrics process; returns its pid. `close_in_child` are the descriptors it
/// must not keep: above all the server's listening sockets, whose last copy must be the
/// workers' (a stray copy would keep a closed port accepting into a queue nobody reads).
pub(crate) fn spawn_metrics_process(
    listener: &TcpListener,
    close_in_child: &[RawFd],
) -> Result<Pid> {
    match fork_child(Lifetime::DiesWithParent)? {
        Forked::Parent(pid) => Ok(pid),
        Forked::Child => {
            for &fd in close_in_child {
                // SAFETY: the parent's descriptors; this process never uses them, and
                // leaves through child::exit without running the parent's destructors.
                drop(unsafe { OwnedFd::from_raw_fd(fd) });
            }
            // Named so that `ps` and `top` tell it from the workers.
            let _ = nix::sys::prctl::set_name(c"server-metrics");
            // The parent decides when this process ends (it dies with the parent):
            // a stop signal to the whole group must not end the scrape first.
            for sig in [
                Signal::SIGTERM,
                Signal::SIGINT,
                Signal::SIGHUP,
                Signal::SIGQUIT,
            ] {
                // SAFETY: SIG_IGN installs no code.
                let _ = unsafe { signal(sig, SigHandler::SigIgn) };
            }
            let status = match listener.try_clone() {
                Ok(listener) => serve(listener),
                Err(_) => 1,
            };
            child::exit(status)
        }
    }
}

/// Serves scrapes until the process is killed; returns an exit status if it cannot.
fn serve(listener: TcpListener) -> i32 {
    let Some(region) = Region::get() else {
        return 1;
    };
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_io()
        .build()
    {
        Ok(runtime) => runtime,
        Err(_) => return 1,
    };
    runtime.block_on(async move {
        if listener.set_nonblocking(true).is_err() {
            return 1;
        }
        let Ok(listener) = tokio::net::TcpListener::from_std(listener) else {
            return 1;
        };
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                continue;
            };
            tokio::spawn(async move {
                let service = hyper::service::service_fn(move |request| answer(region, request));
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
            });
        }
    })
}

async fn answer(
    region: &'static Region,
    request: Request<Incoming>,
) -> std::result::Result<Response<Full<Bytes>>, Infallible> {
    let response = if request.uri().path() != "/metrics" {
        Response::builder()
            .status(StatusCode::NOT_FOUND)
            .body(Full::new(Bytes::from_static(
                b"not found: the metrics are at /metrics\n",
            )))
    } else if !matches!(*request.method(), Method::GET | Method::HEAD) {
        Response::builder()
            .status(StatusCode::METHOD_NOT_ALLOWED)
            .body(Full::new(Bytes::new()))
    } else {
        Response::builder()
            .header(CONTENT_TYPE, "text/plain; version=0.0.4; charset=utf-8")
            .body(Full::new(Bytes::from(render(&Snapshot::take(region)))))
    };
    Ok(response.unwrap_or_default())
}

/// Binds the metrics address in the parent, so that a port in use, an address that is not
/// this machine's, or the server's own port fails at start in one line.
pub(crate) fn bind(addr: std::net::SocketAddr) -> Result<TcpListener> {
    let socket = socket2::Socket::new(
        socket2::Domain::for_address(addr),
        socket2::Type::STREAM,
        None,
    )
    .map_err(|e| Error::sys("cannot create the metrics socket", e))?;
    let _ = socket.set_reuse_address(true);
    let _ = socket.set_cloexec(true);
    let reason = |e: std::io::Error| Error::MetricsBind {
        addr,
        reason: match e.raw_os_error() {
            Some(libc::EADDRINUSE) => {
                "the address is in use (by another program, or by this server)".into()
            }
            Some(libc::EADDRNOTAVAIL) => "not an address of this machine".into(),
            _ => e.to_string(),
        },
    };
    socket.bind(&addr.into()).map_err(reason)?;
    socket.listen(128).map_err(reason)?;
    Ok(socket.into())
}
