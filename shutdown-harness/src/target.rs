//! Where the traffic goes: a server the harness launches on 127.0.0.1, or any URL of a
//! server it did not start (`--url`), e.g. behind nginx or in a Kubernetes cluster.

use std::net::SocketAddr;
use std::time::Duration;

use crate::launcher::ServerCommand;

/// The server under test.
#[derive(Debug, Clone)]
pub enum Target {
    /// The harness starts this command, signals it, and checks how it exits.
    Launch(ServerCommand),
    /// A server already running; only its requests are judged.
    Url(UrlTarget),
}

/// `http` or `https`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scheme {
    /// Plain HTTP (HTTP/2 by prior knowledge with `--http2`).
    Http,
    /// HTTP over TLS (HTTP/2 by ALPN with `--http2`).
    Https,
}

/// A parsed `--url`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UrlTarget {
    /// `http` or `https`.
    pub scheme: Scheme,
    /// Host name or address, as written (IPv6 without brackets).
    pub host: String,
    /// Port (the scheme's default when the URL has none).
    pub port: u16,
    /// Path and query, e.g. `/echo?x=1` (`/` when the URL has none).
    pub path: String,
}

/// Why a URL cannot be used.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum UrlError {
    /// Not a URL at all.
    #[error("`{0}` is not a URL: {1}")]
    Parse(String, String),
    /// Another scheme than http or https.
    #[error("`{0}`: only http:// and https:// URLs can be tested")]
    Scheme(String),
    /// No host part.
    #[error("`{0}` has no host")]
    NoHost(String),
}

impl UrlTarget {
    /// Parses an `http://` or `https://` URL.
    pub fn parse(text: &str) -> Result<Self, UrlError> {
        let url =
            reqwest::Url::parse(text).map_err(|e| UrlError::Parse(text.into(), e.to_string()))?;
        let scheme = match url.scheme() {
            "http" => Scheme::Http,
            "https" => Scheme::Https,
            _ => return Err(UrlError::Scheme(text.into())),
        };
        let host = match url.host_str() {
            Some(host) if !host.is_empty() => host.trim_start_matches('[').trim_end_matches(']'),
            _ => return Err(UrlError::NoHost(text.into())),
        }
        .to_string();
        let port = url.port_or_known_default().unwrap_or(match scheme {
            Scheme::Http => 80,
            Scheme::Https => 443,
        });
        let path = match url.query() {
            Some(query) => format!("{}?{query}", url.path()),
            None => url.path().to_string(),
        };
        Ok(Self {
            scheme,
            host,
            port,
            path,
        })
    }

    /// `host:port` for the `Host` header and the URL of pooled clients (IPv6 in brackets).
    pub fn authority(&self) -> String {
        if self.host.contains(':') {
            format!("[{}]:{}", self.host, self.port)
        } else {
            format!("{}:{}", self.host, self.port)
        }
    }

    /// The first address the host resolves to, within `limit`.
    pub async fn resolve(&self, limit: Duration) -> Result<SocketAddr, String> {
        let lookup = tokio::net::lookup_host((self.host.as_str(), self.port));
        match tokio::time::timeout(limit, lookup).await {
            Err(_) => Err(format!("resolving {} took over {limit:?}", self.host)),
            Ok(Err(e)) => Err(format!("cannot resolve {}: {e}", self.host)),
            Ok(Ok(mut addrs)) => addrs
                .next()
                .ok_or_else(|| format!("{} has no address", self.host)),
        }
    }
}

impl std::fmt::Display for UrlTarget {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let scheme = match self.scheme {
            Scheme::Http => "http",
            Scheme::Https => "https",
        };
        write!(f, "{scheme}://{}{}", self.authority(), self.path)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_give_scheme_host_port_and_path() {
        let u = UrlTarget::parse("https://example.com/echo?x=1").expect("valid");
        assert_eq!(
            (u.scheme, u.host.as_str(), u.port, u.path.as_str()),
            (Scheme::Https, "example.com", 443, "/echo?x=1")
        );
        assert_eq!(u.authority(), "example.com:443");
        let v6 = UrlTarget::parse("http://[::1]:8080").expect("valid");
        assert_eq!((v6.host.as_str(), v6.path.as_str()), ("::1", "/"));
        assert_eq!(v6.authority(), "[::1]:8080");
    }

    #[test]
    fn other_schemes_and_garbage_are_refused() {
        assert!(matches!(
            UrlTarget::parse("ftp://x/"),
            Err(UrlError::Scheme(_))
        ));
        assert!(matches!(
            UrlTarget::parse("not a url"),
            Err(UrlError::Parse(..))
        ));
        assert!(UrlTarget::parse("http://").is_err());
    }
}
