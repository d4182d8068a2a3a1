//! The TLS side of a worker: the handshake of each accepted connection, bounded so that
//! neither a slow client nor a stop waits on it, and the certificate pair kept current
//! while the worker runs.

use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite};
use tokio_rustls::server::TlsStream;
use tokio_rustls::TlsAcceptor;

use super::connection::ConnectionContext;
use crate::tls::{
    client_certificate, server_config, ClientCertificate, InheritedTls, PairChange, PairWatch,
    RotatingCertificate, ServedPair, TlsError, TlsSettings,
};

/// How often a worker looks at the certificate files: a replaced pair serves new
/// handshakes within this (plus the time to load it).
pub(crate) const ROTATION_CHECK: Duration = Duration::from_millis(250);

/// Whether two pairs carry the same certificate chain.
fn same_chain(a: &ServedPair, b: &ServedPair) -> bool {
    a.key.cert == b.key.cert
}

/// A worker's TLS: its handshake configuration and the pair it serves.
#[derive(Clone)]
pub(crate) struct WorkerTls {
    acceptor: TlsAcceptor,
    certificate: Arc<RotatingCertificate>,
}

impl WorkerTls {
    /// Sets up TLS for a new worker from the pair the parent loaded (`inherited`); the
    /// files are read again at the first check, so a worker started after a rotation
    /// serves the new pair.
    pub(crate) fn new(settings: &TlsSettings, inherited: InheritedTls) -> Result<Self, TlsError> {
        let certificate = Arc::new(RotatingCertificate::new(inherited.pair));
        let config = server_config(settings, Arc::clone(&certificate), inherited.ticketer)?;
        Ok(Self {
            acceptor: TlsAcceptor::from(config),
            certificate,
        })
    }

    /// Keeps the pair current for the worker's life: every [`ROTATION_CHECK`], a changed
    /// pair is loaded and served to new handshakes; one that does not load is logged with
    /// its reason and the old pair serves on.
    pub(crate) async fn keep_current(self, mut watch: PairWatch) {
        let mut ticks = tokio::time::interval(ROTATION_CHECK);
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        // The first check reads the files as they are when the worker starts: news only
        // if they changed after the parent loaded them.
        let mut first = true;
        loop {
            ticks.tick().await;
            match watch.check() {
                PairChange::Unchanged => {}
                PairChange::Loaded(pair) => {
                    // A freshly loaded pair is never the same allocation: compare chains.
                    let changed = !same_chain(&pair, &self.certificate.current());
                    self.certificate.replace(pair);
                    if changed || !first {
                        tracing::info!("TLS certificate loaded; new connections use it");
                    }
                }
                PairChange::Refused(e) => {
                    tracing::warn!("TLS certificate not loaded, the previous one serves on: {e}");
                }
            }
            first = false;
        }
    }

    /// Completes the handshake of an accepted connection, within the header-read timeout
    /// (a client that does not finish it holds nothing), and within the drain grace once
    /// the worker drains. `None` when it failed or was cut; the client got the alert rustls
    /// sends, or a closed connection.
    pub(crate) async fn handshake<I>(
        &self,
        stream: I,
        context: &ConnectionContext,
    ) -> Option<(TlsStream<I>, Option<ClientCertificate>)>
    where
        I: AsyncRead + AsyncWrite + Unpin,
    {
        let handshake =
            tokio::time::timeout(context.header_read_timeout, self.acceptor.accept(stream));
        tokio::pin!(handshake);
        let finished = tokio::select! {
            biased;
            result = &mut handshake => result,
            () = context.draining.cancelled() => {
                match tokio::time::timeout(context.idle_drain_grace, &mut handshake).await {
                    Ok(result) => result,
                    Err(_) => return None,
                }
            }
            () = context.abort.cancelled() => return None,
        };
        match finished {
            Ok(Ok(stream)) => {
                let client = client_certificate(stream.get_ref().1);
                Some((stream, client))
            }
            Ok(Err(e)) => {
                tracing::debug!("TLS handshake failed: {e}");
                None
            }
            Err(_) => {
                tracing::debug!("TLS handshake not finished in time; closed");
                None
            }
        }
    }
}
