//! How requests reach the server: which client library, which HTTP version, TLS or not.
//! A [`Transport`] is built once per run and shared; each client has a [`Session`] (its
//! connection) and gets one [`Outcome`] per request.

pub(crate) mod connect;
mod http1;
mod http2;
pub(crate) use self::http2::io_outcome;
mod pooled;

use std::fmt::Display;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use clap::ValueEnum;
use rustls::pki_types::ServerName;
use serde::Serialize;
use tokio_rustls::TlsConnector;

use self::http1::Http1Session;
use self::http2::Http2Session;
use crate::outcome::Outcome;
use crate::request::RequestShape;
use crate::target::Scheme;
use crate::tls::{client_config, TlsError, Trust};

/// Which client library sends the requests (`--client`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, ValueEnum, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ClientLibrary {
    /// The harness's own client: exact outcome classes, never a hidden retry.
    #[default]
    Raw,
    /// reqwest with its connection pool and its retry rules: what a Rust service sees.
    Reqwest,
}

/// Which HTTP version (`--http2`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum HttpVersion {
    /// HTTP/1.1.
    #[default]
    Http1,
    /// HTTP/2: prior knowledge on http://, ALPN on https://.
    Http2,
}

/// Where to connect and how: resolved once per run.
#[derive(Debug, Clone)]
pub struct Endpoint {
    /// The server's address.
    pub addr: SocketAddr,
    /// `host:port`, for the `Host` header and URLs.
    pub authority: String,
    /// TLS, for https.
    pub tls: Option<TlsEndpoint>,
}

/// The TLS side of an endpoint.
#[derive(Clone)]
pub struct TlsEndpoint {
    /// The handshake, with the run's trust and ALPN.
    pub connector: TlsConnector,
    /// The name the certificate must carry (SNI).
    pub server_name: ServerName<'static>,
}

impl std::fmt::Debug for TlsEndpoint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "TlsEndpoint({:?})", self.server_name)
    }
}

impl Endpoint {
    /// `http` or `https`.
    pub fn scheme_name(&self) -> &'static str {
        if self.tls.is_some() {
            "https"
        } else {
            "http"
        }
    }
}

/// A failed request: its class, and the error behind it (for the first failures shown
/// when a server never gets ready).
#[derive(Debug, Clone)]
pub struct Failure {
    /// The class.
    pub outcome: Outcome,
    /// The error in words.
    pub detail: String,
}

impl Failure {
    /// A failure of class `outcome` because of `detail`.
    pub fn new(outcome: Outcome, detail: impl Display) -> Self {
        Self {
            outcome,
            detail: detail.to_string(),
        }
    }
}

/// The two limits of a request.
#[derive(Debug, Clone, Copy)]
pub struct Timeouts {
    /// The TCP handshake.
    pub connect: Duration,
    /// The TLS handshake, and the request from its first byte to its response's last.
    pub request: Duration,
}

/// Why the clients cannot be set up.
#[derive(Debug, thiserror::Error)]
pub enum TransportError {
    /// TLS settings.
    #[error(transparent)]
    Tls(#[from] TlsError),
    /// reqwest refused its settings.
    #[error("cannot set up reqwest: {0}")]
    Reqwest(#[source] reqwest::Error),
    /// The host is not a name a certificate can carry.
    #[error("`{0}` is not a valid TLS server name")]
    ServerName(String),
}

/// What the clients of a run share.
#[derive(Debug, Clone)]
pub struct Transport {
    endpoint: Arc<Endpoint>,
    version: HttpVersion,
    library: Library,
}

#[derive(Debug, Clone)]
enum Library {
    Raw,
    /// One pooled client for keep-alive traffic, one that never reuses a connection.
    Reqwest {
        pooled: reqwest::Client,
        fresh: reqwest::Client,
    },
}

impl Transport {
    /// Sets up the clients for `addr` (`host` names the server for `Host` and TLS).
    pub fn new(
        addr: SocketAddr,
        host: &str,
        scheme: Scheme,
        library: ClientLibrary,
        version: HttpVersion,
        trust: &Trust,
        connect_timeout: Duration,
    ) -> Result<Self, TransportError> {
        let authority = match (scheme, addr.port()) {
            (Scheme::Http, 80) | (Scheme::Https, 443) => bracketed(host),
            (_, port) => format!("{}:{port}", bracketed(host)),
        };
        let alpn: &[&[u8]] = match version {
            HttpVersion::Http1 => &[b"http/1.1"],
            HttpVersion::Http2 => &[b"h2"],
        };
        // reqwest needs a TLS configuration even for http:// (it will not pick a crypto
        // provider by itself), so there is always one.
        let tls_config = client_config(trust, alpn)?;
        let tls = match scheme {
            Scheme::Http => None,
            Scheme::Https => Some(TlsEndpoint {
                connector: TlsConnector::from(tls_config.clone()),
                server_name: ServerName::try_from(host.to_string())
                    .map_err(|_| TransportError::ServerName(host.into()))?,
            }),
        };
        let library = match library {
            ClientLibrary::Raw => Library::Raw,
            ClientLibrary::Reqwest => Library::Reqwest {
                pooled: reqwest_client(version, &tls_config, true, connect_timeout)?,
                fresh: reqwest_client(version, &tls_config, false, connect_timeout)?,
            },
        };
        Ok(Self {
            endpoint: Arc::new(Endpoint {
                addr,
                authority,
                tls,
            }),
            version,
            library,
        })
    }

    /// `scheme://authority (addr)`, for messages.
    pub fn describe(&self) -> String {
        let e = &self.endpoint;
        format!("{}://{} ({})", e.scheme_name(), e.authority, e.addr)
    }

    /// Where the clients connect, for clients that open their own connections (WebSocket,
    /// SSE).
    pub(crate) fn endpoint(&self) -> Arc<Endpoint> {
        self.endpoint.clone()
    }

    /// A new client's session (no connection yet).
    pub fn session(&self) -> Session {
        let connection = match (&self.library, self.version) {
            (Library::Reqwest { pooled, fresh }, _) => Connection::Pooled {
                pooled: pooled.clone(),
                fresh: fresh.clone(),
                base: format!(
                    "{}://{}",
                    self.endpoint.scheme_name(),
                    self.endpoint.authority
                ),
            },
            (Library::Raw, HttpVersion::Http1) => Connection::Http1(Http1Session::default()),
            (Library::Raw, HttpVersion::Http2) => Connection::Http2(Http2Session::default()),
        };
        Session {
            endpoint: self.endpoint.clone(),
            connection,
        }
    }
}

fn bracketed(host: &str) -> String {
    if host.contains(':') {
        format!("[{host}]")
    } else {
        host.to_string()
    }
}

fn reqwest_client(
    version: HttpVersion,
    tls: &rustls::ClientConfig,
    keep_alive: bool,
    connect_timeout: Duration,
) -> Result<reqwest::Client, TransportError> {
    let mut builder = reqwest::Client::builder()
        .user_agent("shutdown-harness")
        .connect_timeout(connect_timeout)
        .no_proxy();
    if !keep_alive {
        builder = builder.pool_max_idle_per_host(0);
    }
    if version == HttpVersion::Http2 {
        builder = builder.http2_prior_knowledge();
    } else {
        builder = builder.http1_only();
    }
    builder
        .tls_backend_preconfigured(tls.clone())
        .build()
        .map_err(TransportError::Reqwest)
}

/// One client's connection state.
#[derive(Debug)]
pub struct Session {
    endpoint: Arc<Endpoint>,
    connection: Connection,
}

#[derive(Debug)]
enum Connection {
    Http1(Http1Session),
    Http2(Http2Session),
    /// reqwest's pool is shared by every client; `base` is `scheme://authority`.
    Pooled {
        pooled: reqwest::Client,
        fresh: reqwest::Client,
        base: String,
    },
}

impl Session {
    /// Sends the `n`-th request of `shape`; `keep_alive` asks to reuse connections (HTTP/2
    /// always does).
    pub async fn send(
        &mut self,
        shape: &RequestShape,
        n: usize,
        keep_alive: bool,
        timeouts: Timeouts,
    ) -> Result<Outcome, Failure> {
        let endpoint = &self.endpoint;
        match &mut self.connection {
            Connection::Http1(session) => {
                session.send(endpoint, shape, n, keep_alive, timeouts).await
            }
            Connection::Http2(session) => session.send(endpoint, shape, n, timeouts).await,
            Connection::Pooled {
                pooled,
                fresh,
                base,
            } => {
                let client = if keep_alive { pooled } else { fresh };
                pooled::send(client, base, shape, n, timeouts).await
            }
        }
    }
}
