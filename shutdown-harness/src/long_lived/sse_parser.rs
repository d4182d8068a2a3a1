//! The Server-Sent Events wire format (WHATWG HTML, "event stream interpretation"), as far
//! as the harness needs it: which events arrived with which id, the `retry:` hint, and
//! whether the stream stopped in the middle of an event.

use std::time::Duration;

/// Something the stream said.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Item {
    /// An event was dispatched (it had data); its `id:` if it carried one.
    Event {
        /// The event's id field.
        id: Option<String>,
    },
    /// The server's reconnection time (`retry:`).
    Retry(Duration),
}

/// Reads the stream as it arrives, in chunks cut anywhere.
#[derive(Debug, Default)]
pub struct Parser {
    /// The end of the input that is not a whole line yet.
    line: Vec<u8>,
    /// The last byte was `\r` (a `\n` right after it ends nothing more).
    after_cr: bool,
    /// Fields of the event being read: data seen, and its id.
    has_data: bool,
    id: Option<String>,
    /// A field line (not a comment) was read since the last blank line.
    in_event: bool,
}

impl Parser {
    /// Feeds the next chunk; returns what it completed.
    pub fn feed(&mut self, chunk: &[u8]) -> Vec<Item> {
        let mut items = Vec::new();
        for &byte in chunk {
            match byte {
                b'\n' if self.after_cr => self.after_cr = false,
                b'\n' | b'\r' => {
                    self.after_cr = byte == b'\r';
                    let line = std::mem::take(&mut self.line);
                    self.line_ended(&line, &mut items);
                }
                _ => {
                    self.after_cr = false;
                    self.line.push(byte);
                }
            }
        }
        items
    }

    /// Whether the input stopped inside an event: a partial line, or fields with no blank
    /// line after them yet.
    pub fn mid_event(&self) -> bool {
        !self.line.is_empty() || self.in_event
    }

    fn line_ended(&mut self, line: &[u8], items: &mut Vec<Item>) {
        if line.is_empty() {
            if self.has_data {
                items.push(Item::Event { id: self.id.take() });
            }
            self.has_data = false;
            self.id = None;
            self.in_event = false;
            return;
        }
        if line[0] == b':' {
            return;
        }
        self.in_event = true;
        let text = String::from_utf8_lossy(line);
        let (field, value) = match text.split_once(':') {
            Some((field, value)) => (field, value.strip_prefix(' ').unwrap_or(value)),
            None => (&*text, ""),
        };
        match field {
            "data" => self.has_data = true,
            "id" if !value.contains('\0') => self.id = Some(value.to_string()),
            "retry" => {
                if let Ok(ms) = value.parse::<u64>() {
                    items.push(Item::Retry(Duration::from_millis(ms)));
                }
            }
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(id: &str) -> Item {
        Item::Event {
            id: Some(id.into()),
        }
    }

    #[test]
    fn events_are_dispatched_at_blank_lines_whatever_the_chunking() {
        let stream = b"id: 7\ndata: event 7\n\n: comment\r\nid:8\r\ndata: x\r\n\r\nretry: 500\n\n";
        for cut in 1..stream.len() {
            let mut parser = Parser::default();
            let mut items = parser.feed(&stream[..cut]);
            items.extend(parser.feed(&stream[cut..]));
            assert_eq!(
                items,
                vec![
                    event("7"),
                    event("8"),
                    Item::Retry(Duration::from_millis(500))
                ],
                "cut at {cut}"
            );
            assert!(!parser.mid_event());
        }
    }

    #[test]
    fn a_stream_that_stops_inside_an_event_is_mid_event() {
        let mut parser = Parser::default();
        assert!(parser.feed(b"id: 1\ndata: a\n").is_empty());
        assert!(parser.mid_event());
        let mut parser = Parser::default();
        parser.feed(b"id: 1\ndata: a\n\nda");
        assert!(parser.mid_event());
        let mut parser = Parser::default();
        parser.feed(b": only a comment\n");
        assert!(!parser.mid_event());
    }

    #[test]
    fn an_event_without_data_is_not_dispatched() {
        let mut parser = Parser::default();
        assert!(parser.feed(b"id: 3\n\n").is_empty());
    }
}
