//! What each request of a client is (method, paths in turn, headers, body) and which
//! statuses count as answered, so real endpoints and non-idempotent traffic can be tested.

use bytes::Bytes;
use hyper::http::{HeaderMap, HeaderName, HeaderValue, Method};

/// The requests a client sends, one path after another.
#[derive(Debug, Clone)]
pub struct RequestShape {
    /// The method, e.g. `GET` or `POST`.
    pub method: Method,
    /// Paths (with query) used in turn; never empty.
    pub paths: Vec<String>,
    /// Extra headers (`--header`), sent with every request.
    pub headers: HeaderMap,
    /// Body, sent with `Content-Length` (empty: none, except for methods that expect one).
    pub body: Bytes,
    /// Which statuses count as answered.
    pub ok_status: OkStatus,
}

impl RequestShape {
    /// `GET path` with no body, 2xx answered: the scenarios' default.
    pub fn get(path: &str) -> Self {
        Self {
            method: Method::GET,
            paths: vec![path.into()],
            headers: HeaderMap::new(),
            body: Bytes::new(),
            ok_status: OkStatus::default(),
        }
    }

    /// The path of the `n`-th request.
    pub fn path(&self, n: usize) -> &str {
        self.paths
            .get(n % self.paths.len().max(1))
            .map_or("/", String::as_str)
    }

    /// Whether the request carries `Content-Length` (a body, or a method that expects one).
    pub fn sends_length(&self) -> bool {
        !self.body.is_empty() || matches!(self.method, Method::POST | Method::PUT | Method::PATCH)
    }
}

/// Why a request option was refused.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum RequestError {
    /// Not a method token.
    #[error("`{0}` is not an HTTP method")]
    Method(String),
    /// A path must start with `/`.
    #[error("the path `{0}` must start with /")]
    Path(String),
    /// Not `Name: value`, or not valid in a header.
    #[error("the header `{0}` is not `Name: value` with a valid name and value")]
    Header(String),
    /// Not a status list.
    #[error("`{0}` is not a list of statuses like 2xx,3xx,404")]
    Status(String),
}

/// Parses a method name (`--method`).
pub fn parse_method(text: &str) -> Result<Method, RequestError> {
    Method::from_bytes(text.as_bytes()).map_err(|_| RequestError::Method(text.into()))
}

/// Checks a path (`--path`).
pub fn parse_path(text: &str) -> Result<String, RequestError> {
    if text.starts_with('/') && !text.contains(char::is_whitespace) {
        Ok(text.into())
    } else {
        Err(RequestError::Path(text.into()))
    }
}

/// Parses `Name: value` (`--header`).
pub fn parse_header(text: &str) -> Result<(HeaderName, HeaderValue), RequestError> {
    let bad = || RequestError::Header(text.into());
    let (name, value) = text.split_once(':').ok_or_else(bad)?;
    let name = HeaderName::from_bytes(name.trim().as_bytes()).map_err(|_| bad())?;
    let value = HeaderValue::from_str(value.trim()).map_err(|_| bad())?;
    Ok((name, value))
}

/// Statuses that count as an answer (`--ok-status`): classes (`2xx`) and single codes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OkStatus {
    /// Inclusive ranges of accepted codes.
    ranges: Vec<(u16, u16)>,
}

impl Default for OkStatus {
    /// 2xx.
    fn default() -> Self {
        Self {
            ranges: vec![(200, 299)],
        }
    }
}

impl OkStatus {
    /// Any complete response: the server is up (readiness of a long-lived scenario).
    pub fn any() -> Self {
        Self {
            ranges: vec![(100, 599)],
        }
    }

    /// Parses `2xx,3xx,404`.
    pub fn parse(text: &str) -> Result<Self, RequestError> {
        let bad = || RequestError::Status(text.into());
        let mut ranges = Vec::new();
        for item in text.split(',').map(str::trim) {
            let range = match item.as_bytes() {
                [d @ b'1'..=b'5', b'x' | b'X', b'x' | b'X'] => {
                    let base = u16::from(d - b'0') * 100;
                    (base, base + 99)
                }
                _ => {
                    let code: u16 = item.parse().map_err(|_| bad())?;
                    if !(100..=599).contains(&code) {
                        return Err(bad());
                    }
                    (code, code)
                }
            };
            ranges.push(range);
        }
        Ok(Self { ranges })
    }

    /// Whether `status` counts as answered.
    pub fn accepts(&self, status: u16) -> bool {
        self.ranges
            .iter()
            .any(|&(lo, hi)| (lo..=hi).contains(&status))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_lists_take_classes_and_codes() {
        let ok = OkStatus::parse("2xx, 3xx,404").expect("valid");
        assert!(ok.accepts(204) && ok.accepts(301) && ok.accepts(404));
        assert!(!ok.accepts(500) && !ok.accepts(403));
        assert!(OkStatus::default().accepts(200) && !OkStatus::default().accepts(302));
        for bad in ["", "2xy", "600", "abc", "2xx,"] {
            assert!(OkStatus::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn headers_paths_and_methods_are_checked() {
        let (name, value) = parse_header("X-Token: abc def").expect("valid");
        assert_eq!(
            (name.as_str(), value.to_str().ok()),
            ("x-token", Some("abc def"))
        );
        assert!(parse_header("no colon").is_err());
        assert!(parse_header("bad name: x").is_err());
        assert!(parse_path("/echo?x=1").is_ok());
        assert!(parse_path("echo").is_err());
        assert_eq!(parse_method("POST"), Ok(Method::POST));
        assert!(parse_method("GE T").is_err());
        let mut shape = RequestShape::get("/a");
        shape.paths.push("/b".into());
        assert_eq!(
            [shape.path(0), shape.path(1), shape.path(2)],
            ["/a", "/b", "/a"]
        );
    }
}
