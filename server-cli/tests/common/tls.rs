//! Test certificates made at test time (no private key is committed): a CA, server pairs
//! signed by it, client certificates for mTLS; and a blocking TLS client that reports
//! which certificate the server presented.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use rcgen::{
    date_time_ymd, BasicConstraints, CertificateParams, CertifiedIssuer, DnType, IsCa, KeyPair,
};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};

/// A test CA and a directory for the files made with it; removed when dropped.
pub struct TestPki {
    pub dir: PathBuf,
    issuer: CertifiedIssuer<'static, KeyPair>,
}

/// One pair written to disk.
pub struct Pair {
    pub cert: PathBuf,
    pub key: PathBuf,
    /// The leaf certificate, to recognise it on the wire.
    pub der: CertificateDer<'static>,
}

impl TestPki {
    pub fn new(name: &str) -> Self {
        let dir = std::env::temp_dir().join(format!("tls-{name}-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params
            .distinguished_name
            .push(DnType::CommonName, "server-cli test CA");
        let issuer = CertifiedIssuer::self_signed(params, KeyPair::generate().unwrap()).unwrap();
        std::fs::write(dir.join("ca.pem"), issuer.pem()).unwrap();
        Self { dir, issuer }
    }

    /// The CA certificate (PEM file), for clients and `--ssl-ca-certs`.
    pub fn ca_file(&self) -> PathBuf {
        self.dir.join("ca.pem")
    }

    /// A server pair for 127.0.0.1 and localhost, written as `NAME.crt` / `NAME.key`.
    pub fn server_pair(&self, name: &str) -> Pair {
        self.server_pair_valid_until(name, None)
    }

    /// The same, expiring at the start of `year` (in the past for an expired pair).
    pub fn server_pair_valid_until(&self, name: &str, year: Option<i32>) -> Pair {
        let names = vec!["127.0.0.1".to_string(), "localhost".to_string()];
        let mut params = CertificateParams::new(names).unwrap();
        params.distinguished_name.push(DnType::CommonName, name);
        if let Some(year) = year {
            params.not_before = date_time_ymd(year - 2, 1, 1);
            params.not_after = date_time_ymd(year, 1, 1);
        }
        self.write_signed(name, params)
    }

    /// A client certificate with this common name.
    pub fn client_pair(&self, common_name: &str) -> Pair {
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params
            .distinguished_name
            .push(DnType::CommonName, common_name);
        self.write_signed(common_name, params)
    }

    fn write_signed(&self, name: &str, params: CertificateParams) -> Pair {
        let key = KeyPair::generate().unwrap();
        let cert = params.signed_by(&key, &self.issuer).unwrap();
        let (cert_file, key_file) = (
            self.dir.join(format!("{name}.crt")),
            self.dir.join(format!("{name}.key")),
        );
        std::fs::write(&cert_file, cert.pem()).unwrap();
        std::fs::write(&key_file, key.serialize_pem()).unwrap();
        Pair {
            cert: cert_file,
            key: key_file,
            der: cert.der().clone(),
        }
    }
}

impl Drop for TestPki {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Replaces `target` with a copy of `source` atomically (write aside, rename), as a
/// certificate manager does.
pub fn install(source: &Path, target: &Path) {
    let aside = target.with_extension("new");
    std::fs::copy(source, &aside).unwrap();
    std::fs::rename(&aside, target).unwrap();
}

/// A client configuration trusting the test CA, offering `alpn`, with an optional client
/// certificate, never resuming a session.
pub fn client_config(
    pki: &TestPki,
    alpn: &[&[u8]],
    client: Option<&Pair>,
) -> Arc<rustls::ClientConfig> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut roots = rustls::RootCertStore::empty();
    roots
        .add(CertificateDer::from_pem_file(pki.ca_file()).unwrap())
        .unwrap();
    let builder = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots);
    let mut config = match client {
        None => builder.with_no_client_auth(),
        Some(pair) => builder
            .with_client_auth_cert(
                vec![CertificateDer::from_pem_file(&pair.cert).unwrap()],
                PrivateKeyDer::from_pem_file(&pair.key).unwrap(),
            )
            .unwrap(),
    };
    config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    // Full handshakes only: a resumed session shows the certificate of the session it
    // resumes, not the one the server serves now.
    config.resumption = rustls::client::Resumption::disabled();
    Arc::new(config)
}

/// What a blocking HTTPS `GET path` got: the server's leaf certificate and the response
/// (status line to end), or the error.
pub struct Fetched {
    pub server_certificate: Option<CertificateDer<'static>>,
    pub response: Result<String, String>,
}

/// One HTTPS request on a new connection (HTTP/1.1, `Connection: close`).
pub fn https_get(addr: SocketAddr, path: &str, config: Arc<rustls::ClientConfig>) -> Fetched {
    let mut tcp = match TcpStream::connect_timeout(&addr, Duration::from_secs(2)) {
        Ok(tcp) => tcp,
        Err(e) => {
            return Fetched {
                server_certificate: None,
                response: Err(e.to_string()),
            }
        }
    };
    tcp.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let name = ServerName::try_from("127.0.0.1").unwrap();
    let mut connection = rustls::ClientConnection::new(config, name).unwrap();
    let mut tls = rustls::Stream::new(&mut connection, &mut tcp);
    let request = format!("GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n");
    let mut response = String::new();
    let result = tls
        .write_all(request.as_bytes())
        .and_then(|()| tls.read_to_string(&mut response))
        .map(|_| response)
        .map_err(|e| e.to_string());
    Fetched {
        server_certificate: connection
            .peer_certificates()
            .and_then(|c| c.first())
            .map(|c| c.clone().into_owned()),
        response: result,
    }
}
