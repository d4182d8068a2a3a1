//! The certificate a worker serves, replaceable while it runs: new handshakes take the
//! current pair, connections already open keep the one they were made with.

use std::fmt;
use std::sync::{Arc, RwLock};

use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;

use super::certificate::ServedPair;

/// The current certificate pair.
pub(crate) struct RotatingCertificate {
    current: RwLock<Arc<ServedPair>>,
}

impl RotatingCertificate {
    /// Starts with `pair`.
    pub(crate) fn new(pair: Arc<ServedPair>) -> Self {
        Self {
            current: RwLock::new(pair),
        }
    }

    /// Serves `pair` from the next handshake on.
    pub(crate) fn replace(&self, pair: Arc<ServedPair>) {
        if let Ok(mut current) = self.current.write() {
            *current = pair;
        }
    }

    /// The pair served now.
    pub(crate) fn current(&self) -> Arc<ServedPair> {
        match self.current.read() {
            Ok(current) => Arc::clone(&current),
            Err(poisoned) => Arc::clone(&poisoned.into_inner()),
        }
    }
}

impl fmt::Debug for RotatingCertificate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("RotatingCertificate")
    }
}

impl ResolvesServerCert for RotatingCertificate {
    /// The current pair; none (the handshake fails with an alert) when the client names a
    /// server (SNI) that the certificate does not carry. Without SNI, or for a certificate
    /// without DNS names (addresses only), the pair is served.
    fn resolve(&self, hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        let pair = self.current();
        match hello.server_name() {
            Some(name) if !pair.dns_names.is_empty() && !covers(&pair.dns_names, name) => {
                tracing::debug!("TLS: no certificate for the name {name:?}");
                None
            }
            _ => Some(Arc::clone(&pair.key)),
        }
    }
}

/// Whether one of `names` (possibly `*.example.com`) covers `name`.
fn covers(names: &[String], name: &str) -> bool {
    let name = name.to_ascii_lowercase();
    names
        .iter()
        .any(|pattern| match pattern.strip_prefix("*.") {
            Some(suffix) => name
                .split_once('.')
                .is_some_and(|(label, rest)| !label.is_empty() && rest == suffix),
            None => *pattern == name,
        })
}

#[cfg(test)]
mod tests {
    use super::covers;

    #[test]
    fn names_and_wildcards_cover_one_label() {
        let names = ["api.example.com".to_string(), "*.internal".to_string()];
        assert!(covers(&names, "API.example.com"));
        assert!(covers(&names, "billing.internal"));
        assert!(!covers(&names, "a.b.internal"));
        assert!(!covers(&names, "internal"));
        assert!(!covers(&names, "unknown.example"));
    }
}
