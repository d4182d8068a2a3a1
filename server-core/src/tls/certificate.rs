//! Loading a certificate pair from PEM files and checking it before it serves anything:
//! it parses, the key is the certificate's, and the certificate is valid now.

use std::path::Path;
use std::sync::Arc;

use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::sign::CertifiedKey;
use rustls::RootCertStore;

use super::{TlsError, TlsSettings};

/// A checked pair, and the DNS names its certificate carries (for SNI).
#[derive(Debug)]
pub(crate) struct ServedPair {
    /// The chain and its key.
    pub(crate) key: Arc<CertifiedKey>,
    /// The certificate's DNS names (subject alternative names), lower case.
    pub(crate) dns_names: Vec<String>,
}

/// Loads and checks the pair named by `settings`.
pub(crate) fn load_pair(settings: &TlsSettings) -> Result<Arc<ServedPair>, TlsError> {
    let (cert_file, key_file) = (&settings.cert_file, &settings.key_file);
    let chain = certificates_from(cert_file)?;
    let key_pem = read(key_file)?;
    let key = PrivateKeyDer::from_pem_slice(&key_pem).map_err(|e| {
        let why = match e {
            rustls::pki_types::pem::Error::NoItemsFound => {
                "no unencrypted private key (PKCS#8, PKCS#1 or SEC1) in the file; encrypted keys are not supported".to_string()
            }
            other => other.to_string(),
        };
        TlsError::Pem(key_file.clone(), why)
    })?;
    let provider = CryptoProvider::get_default()
        .cloned()
        .unwrap_or_else(|| Arc::new(rustls::crypto::ring::default_provider()));
    let signing_key = provider
        .key_provider
        .load_private_key(key)
        .map_err(|e| TlsError::Pem(key_file.clone(), e.to_string()))?;
    let pair = CertifiedKey::new(chain, signing_key);
    match pair.keys_match() {
        Ok(()) => {}
        Err(rustls::Error::InconsistentKeys(_)) => {
            return Err(TlsError::KeyMismatch {
                cert: cert_file.clone(),
                key: key_file.clone(),
            })
        }
        // A key type whose public half rustls cannot derive: nothing to compare.
        Err(rustls::Error::General(_)) => {}
        Err(e) => return Err(e.into()),
    }
    let dns_names = check_and_name(cert_file, &pair.cert[0])?;
    Ok(Arc::new(ServedPair {
        key: Arc::new(pair),
        dns_names,
    }))
}

/// The CA certificates of a PEM file, as roots for verifying clients.
pub(crate) fn roots_from(path: &Path) -> Result<RootCertStore, TlsError> {
    let mut roots = RootCertStore::empty();
    for cert in certificates_from(path)? {
        roots
            .add(cert)
            .map_err(|e| TlsError::Pem(path.to_path_buf(), e.to_string()))?;
    }
    Ok(roots)
}

fn read(path: &Path) -> Result<Vec<u8>, TlsError> {
    std::fs::read(path).map_err(|e| TlsError::Read(path.to_path_buf(), e))
}

fn certificates_from(path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let pem = read(path)?;
    let certs = CertificateDer::pem_slice_iter(&pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| TlsError::Pem(path.to_path_buf(), e.to_string()))?;
    if certs.is_empty() {
        return Err(TlsError::Pem(
            path.to_path_buf(),
            "no certificate in the file".into(),
        ));
    }
    Ok(certs)
}

/// Refuses an expired (or not yet valid) certificate, which would fail every client;
/// returns the DNS names it carries.
fn check_and_name(path: &Path, leaf: &CertificateDer<'_>) -> Result<Vec<String>, TlsError> {
    let (_, parsed) = x509_parser::parse_x509_certificate(leaf.as_ref())
        .map_err(|e| TlsError::Pem(path.to_path_buf(), format!("not an X.509 certificate: {e}")))?;
    let validity = parsed.validity();
    if validity.is_valid() {
        let names = parsed
            .subject_alternative_name()
            .ok()
            .flatten()
            .map(|san| {
                san.value
                    .general_names
                    .iter()
                    .filter_map(|name| match name {
                        x509_parser::extensions::GeneralName::DNSName(dns) => {
                            Some(dns.to_ascii_lowercase())
                        }
                        _ => None,
                    })
                    .collect()
            })
            .unwrap_or_default();
        Ok(names)
    } else {
        Err(TlsError::NotValidNow(
            path.to_path_buf(),
            format!(
                "valid from {} to {}",
                validity.not_before, validity.not_after
            ),
        ))
    }
}
