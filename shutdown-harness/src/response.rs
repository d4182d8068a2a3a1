//! Parsing an HTTP/1.1 response as it arrives, to tell "complete" from "partial".

/// How the response body is delimited.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BodyFraming {
    /// `Content-Length: n`.
    Length(usize),
    /// `Transfer-Encoding: chunked`.
    Chunked,
    /// No length: the body ends when the server closes the connection.
    UntilClose,
}

/// The parsed status line and headers that matter to a client.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ResponseHead {
    /// Status code.
    pub status: u16,
    /// Whether the connection may carry another request after this response.
    pub keep_alive: bool,
    /// How the body ends.
    pub framing: BodyFraming,
    /// Length of the head, including the blank line.
    pub head_len: usize,
}

/// What the bytes received so far amount to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Progress {
    /// More bytes are needed.
    Incomplete,
    /// A whole response: its head, and the bytes it took.
    Complete(ResponseHead),
    /// Not an HTTP/1.x response.
    Invalid,
}

/// Longest head accepted, so that a broken server cannot make the client buffer forever.
const MAX_HEAD: usize = 64 * 1024;

/// Parses `buf` (every byte received on this request so far). With `eof`, the server has
/// closed the connection, which completes an [`BodyFraming::UntilClose`] body.
pub fn parse(buf: &[u8], eof: bool) -> Progress {
    let Some(head_len) = find(buf, b"\r\n\r\n").map(|i| i + 4) else {
        return if buf.len() > MAX_HEAD {
            Progress::Invalid
        } else {
            Progress::Incomplete
        };
    };
    let Some(head) = parse_head(&buf[..head_len]) else {
        return Progress::Invalid;
    };
    let body = &buf[head_len..];
    let complete = match head.framing {
        BodyFraming::Length(n) => body.len() >= n,
        BodyFraming::Chunked => match chunked_end(body) {
            Some(Ok(_)) => true,
            Some(Err(())) => return Progress::Invalid,
            None => false,
        },
        BodyFraming::UntilClose => eof,
    };
    if complete {
        Progress::Complete(head)
    } else {
        Progress::Incomplete
    }
}

fn parse_head(head: &[u8]) -> Option<ResponseHead> {
    let text = std::str::from_utf8(head).ok()?;
    let mut lines = text.split("\r\n");
    let status_line = lines.next()?;
    let mut parts = status_line.splitn(3, ' ');
    let version = parts.next()?;
    let http11 = match version {
        "HTTP/1.1" => true,
        "HTTP/1.0" => false,
        _ => return None,
    };
    let status: u16 = parts.next()?.parse().ok()?;
    if !(100..1000).contains(&status) {
        return None;
    }
    let mut keep_alive = http11;
    let mut framing = BodyFraming::UntilClose;
    for line in lines.filter(|l| !l.is_empty()) {
        let (name, value) = line.split_once(':')?;
        let value = value.trim();
        if name.eq_ignore_ascii_case("content-length") {
            if framing != BodyFraming::Chunked {
                framing = BodyFraming::Length(value.parse().ok()?);
            }
        } else if name.eq_ignore_ascii_case("transfer-encoding") {
            if value.to_ascii_lowercase().ends_with("chunked") {
                framing = BodyFraming::Chunked;
            }
        } else if name.eq_ignore_ascii_case("connection") {
            for token in value.split(',').map(str::trim) {
                if token.eq_ignore_ascii_case("close") {
                    keep_alive = false;
                } else if token.eq_ignore_ascii_case("keep-alive") {
                    keep_alive = true;
                }
            }
        }
    }
    if framing == BodyFraming::UntilClose {
        keep_alive = false;
    }
    // 1xx, 204 and 304 responses have no body.
    if status < 200 || status == 204 || status == 304 {
        framing = BodyFraming::Length(0);
    }
    Some(ResponseHead {
        status,
        keep_alive,
        framing,
        head_len: head.len(),
    })
}

/// Where a chunked body ends: `Some(Ok(len))` when complete, `None` when more is needed.
fn chunked_end(body: &[u8]) -> Option<Result<usize, ()>> {
    let mut pos = 0;
    loop {
        let line_end = find(&body[pos..], b"\r\n")? + pos;
        let size_text = std::str::from_utf8(&body[pos..line_end])
            .map_err(|_| ())
            .ok()?;
        let size_text = size_text.split(';').next().unwrap_or("").trim();
        let Ok(size) = usize::from_str_radix(size_text, 16) else {
            return Some(Err(()));
        };
        pos = line_end + 2;
        if size == 0 {
            // Trailers end with an empty line.
            let end = find(&body[pos..], b"\r\n")?;
            if end == 0 {
                return Some(Ok(pos + 2));
            }
            pos += end + 2;
            loop {
                let next = find(&body[pos..], b"\r\n")?;
                pos += next + 2;
                if next == 0 {
                    return Some(Ok(pos));
                }
            }
        }
        let Some(chunk_end) = pos.checked_add(size).and_then(|p| p.checked_add(2)) else {
            return Some(Err(()));
        };
        if body.len() < chunk_end {
            return None;
        }
        pos = chunk_end;
    }
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_response_is_complete_only_with_its_whole_body() {
        let full = b"HTTP/1.1 200 OK\r\ncontent-length: 5\r\n\r\nhello";
        assert_eq!(parse(&full[..20], false), Progress::Incomplete);
        assert_eq!(parse(&full[..full.len() - 1], false), Progress::Incomplete);
        let Progress::Complete(head) = parse(full, false) else {
            panic!("not complete");
        };
        assert_eq!(head.status, 200);
        assert!(head.keep_alive);
    }

    #[test]
    fn connection_close_and_chunked_bodies_are_understood() {
        let resp = b"HTTP/1.1 503 Service Unavailable\r\nConnection: close\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n";
        let Progress::Complete(head) = parse(resp, false) else {
            panic!("not complete");
        };
        assert_eq!((head.status, head.keep_alive), (503, false));
        assert_eq!(parse(&resp[..resp.len() - 2], false), Progress::Incomplete);
    }

    #[test]
    fn a_body_without_length_ends_at_eof() {
        let resp = b"HTTP/1.0 200 OK\r\n\r\npartial";
        assert_eq!(parse(resp, false), Progress::Incomplete);
        assert!(matches!(parse(resp, true), Progress::Complete(_)));
        assert_eq!(parse(b"SSH-2.0-OpenSSH\r\n\r\n", false), Progress::Invalid);
    }
}
