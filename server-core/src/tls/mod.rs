//! HTTPS in the in-process workers: the settings (uvicorn's `--ssl-*` names), the
//! certificate pair loaded and checked, rotated without a restart, and the client
//! certificate handed to the app (mTLS).
//!
//! rustls with the `ring` provider: no OpenSSL, and ring builds in a fraction of
//! aws-lc-rs's time on a fresh CI machine.

mod certificate;
mod resolver;
mod watch;

use std::path::PathBuf;
use std::sync::Arc;

pub(crate) use certificate::{load_pair, ServedPair};
pub(crate) use resolver::RotatingCertificate;
pub(crate) use watch::{PairChange, PairWatch};

/// Whether clients must present a certificate (uvicorn's `--ssl-cert-reqs`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum ClientAuth {
    /// No client certificate asked for (0).
    #[default]
    None,
    /// Asked for, verified when given, not required (1).
    Optional,
    /// Required and verified: mTLS (2).
    Required,
}

/// Where the certificate pair and the client CAs are, and what to offer.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[non_exhaustive]
pub struct TlsSettings {
    /// The certificate chain, PEM (leaf first).
    pub cert_file: PathBuf,
    /// Its private key, PEM (PKCS#8, PKCS#1 or SEC1), unencrypted.
    pub key_file: PathBuf,
    /// CA certificates that client certificates must chain to (PEM).
    pub client_ca_file: Option<PathBuf>,
    /// Whether clients must present a certificate.
    pub client_auth: ClientAuth,
    /// ALPN protocols offered, in order of preference (default `h2`, `http/1.1`).
    pub alpn: Vec<Vec<u8>>,
}

impl TlsSettings {
    /// HTTPS with this pair, no client certificates, HTTP/2 and HTTP/1.1 offered.
    pub fn new(cert_file: impl Into<PathBuf>, key_file: impl Into<PathBuf>) -> Self {
        Self {
            cert_file: cert_file.into(),
            key_file: key_file.into(),
            client_ca_file: None,
            client_auth: ClientAuth::None,
            alpn: vec![b"h2".to_vec(), b"http/1.1".to_vec()],
        }
    }

    /// Asks for client certificates chaining to the CAs in `ca_file`.
    #[must_use]
    pub fn with_client_auth(mut self, ca_file: impl Into<PathBuf>, auth: ClientAuth) -> Self {
        self.client_ca_file = Some(ca_file.into());
        self.client_auth = auth;
        self
    }

    /// Offers these ALPN protocols instead.
    #[must_use]
    pub fn with_alpn(mut self, alpn: Vec<Vec<u8>>) -> Self {
        self.alpn = alpn;
        self
    }
}

/// The client certificate of an mTLS connection, as a request extension: handlers take it
/// with `Option<Extension<ClientCertificate>>` (absent on plain and anonymous connections).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientCertificate {
    /// The subject's distinguished name, e.g. `CN=billing, O=example`.
    pub subject: Arc<str>,
}

/// Why a certificate pair or a CA file cannot be used.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TlsError {
    /// A file could not be read.
    #[error("cannot read {0}")]
    Read(PathBuf, #[source] std::io::Error),
    /// A file holds no usable PEM item of the kind wanted.
    #[error("{0}: {1}")]
    Pem(PathBuf, String),
    /// The key is not the certificate's.
    #[error("the key in {key} does not match the certificate in {cert}")]
    KeyMismatch {
        /// The certificate file.
        cert: PathBuf,
        /// The key file.
        key: PathBuf,
    },
    /// The certificate is outside its validity period.
    #[error("the certificate in {0} is not valid now ({1})")]
    NotValidNow(PathBuf, String),
    /// rustls refused the settings.
    #[error("cannot set up TLS: {0}")]
    Rustls(#[from] rustls::Error),
    /// The client CA settings were refused.
    #[error("cannot use the client CAs in {0}: {1}")]
    ClientCa(PathBuf, String),
}

/// What the parent prepares before it forks, for every worker to inherit: the checked pair
/// and the session-ticket keys. One set of ticket keys for all workers, so that a client
/// resumes its session (a short handshake) whichever worker it lands on.
#[derive(Clone)]
pub(crate) struct InheritedTls {
    /// The pair loaded at start.
    pub(crate) pair: Arc<ServedPair>,
    /// Encrypts and decrypts session tickets (keys rotated every 6 hours).
    pub(crate) ticketer: Arc<dyn rustls::server::ProducesTickets>,
}

impl InheritedTls {
    /// Loads and checks the pair of `settings`, and makes the ticket keys.
    pub(crate) fn prepare(settings: &TlsSettings) -> Result<Self, TlsError> {
        Ok(Self {
            pair: load_pair(settings)?,
            ticketer: rustls::crypto::ring::Ticketer::new()?,
        })
    }
}

/// Builds the rustls server configuration of a worker: certificates from `certificate`
/// (rotated in place), client certificates verified as `settings` say, resumption with
/// the inherited ticket keys.
pub(crate) fn server_config(
    settings: &TlsSettings,
    certificate: Arc<RotatingCertificate>,
    ticketer: Arc<dyn rustls::server::ProducesTickets>,
) -> Result<Arc<rustls::ServerConfig>, TlsError> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = rustls::ServerConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()?;
    let builder = match (&settings.client_ca_file, settings.client_auth) {
        (Some(ca_file), auth @ (ClientAuth::Optional | ClientAuth::Required)) => {
            let roots = Arc::new(certificate::roots_from(ca_file)?);
            let verifier =
                rustls::server::WebPkiClientVerifier::builder_with_provider(roots, provider);
            let verifier = match auth {
                ClientAuth::Optional => verifier.allow_unauthenticated(),
                _ => verifier,
            }
            .build()
            .map_err(|e| TlsError::ClientCa(ca_file.clone(), e.to_string()))?;
            builder.with_client_cert_verifier(verifier)
        }
        _ => builder.with_no_client_auth(),
    };
    let mut config = builder.with_cert_resolver(certificate);
    config.alpn_protocols = settings.alpn.clone();
    config.ticketer = ticketer;
    Ok(Arc::new(config))
}

/// The subject of the first certificate the client presented, if any.
pub(crate) fn client_certificate(
    connection: &rustls::ServerConnection,
) -> Option<ClientCertificate> {
    let leaf = connection.peer_certificates()?.first()?;
    let (_, parsed) = x509_parser::parse_x509_certificate(leaf.as_ref()).ok()?;
    Some(ClientCertificate {
        subject: Arc::from(parsed.subject().to_string()),
    })
}
