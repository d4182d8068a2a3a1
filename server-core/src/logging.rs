//! Log lines on stderr: uvicorn's text style with the process id, or one JSON object per
//! line for log pipelines. Every line names the process (parent or worker) that wrote it.

use std::fmt;
use std::time::{SystemTime, UNIX_EPOCH};

use tracing::field::{Field, Visit};
use tracing::{Event, Level, Subscriber};
use tracing_subscriber::fmt::format::Writer;
use tracing_subscriber::fmt::{FmtContext, FormatEvent, FormatFields};
use tracing_subscriber::registry::LookupSpan;

/// How log lines are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum LogFormat {
    /// `INFO:     [42] Started server process [42]` (uvicorn's style, plus the pid).
    #[default]
    Text,
    /// `{"time":1764222222.123,"level":"INFO","pid":42,"message":"..."}`.
    Json,
}

/// Formats events as [`LogFormat`] says. The pid is read per line: workers are forked
/// from the parent with the subscriber already installed.
#[derive(Debug, Clone, Copy, Default)]
pub struct LineFormat {
    format: LogFormat,
}

/// Collects an event's message and fields.
#[derive(Default)]
struct Fields {
    message: String,
    others: serde_json_like::Map,
}

impl Visit for Fields {
    fn record_str(&mut self, field: &Field, value: &str) {
        if field.name() == "message" {
            self.message = value.to_string();
        } else {
            self.others.push(field.name(), value.to_string());
        }
    }

    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        if field.name() == "message" {
            self.message = format!("{value:?}");
        } else {
            self.others.push(field.name(), format!("{value:?}"));
        }
    }
}

/// Just enough JSON writing for log lines (strings only), without a serde dependency.
mod serde_json_like {
    use std::fmt::Write;

    /// Field names and string values, in order.
    #[derive(Default)]
    pub(super) struct Map(Vec<(&'static str, String)>);

    impl Map {
        pub(super) fn push(&mut self, name: &'static str, value: String) {
            self.0.push((name, value));
        }

        pub(super) fn iter(&self) -> impl Iterator<Item = &(&'static str, String)> {
            self.0.iter()
        }
    }

    /// Writes `text` as a JSON string literal.
    pub(super) fn quote(out: &mut String, text: &str) {
        out.push('"');
        for c in text.chars() {
            match c {
                '"' => out.push_str("\\\""),
                '\\' => out.push_str("\\\\"),
                '\n' => out.push_str("\\n"),
                '\r' => out.push_str("\\r"),
                '\t' => out.push_str("\\t"),
                c if (c as u32) < 0x20 => {
                    let _ = write!(out, "\\u{:04x}", c as u32);
                }
                c => out.push(c),
            }
        }
        out.push('"');
    }
}

fn level_label(level: Level) -> &'static str {
    match level {
        Level::ERROR => "ERROR",
        Level::WARN => "WARNING",
        Level::INFO => "INFO",
        Level::DEBUG => "DEBUG",
        Level::TRACE => "TRACE",
    }
}

impl<S, N> FormatEvent<S, N> for LineFormat
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
{
    fn format_event(
        &self,
        _ctx: &FmtContext<'_, S, N>,
        mut writer: Writer<'_>,
        event: &Event<'_>,
    ) -> fmt::Result {
        let mut fields = Fields::default();
        event.record(&mut fields);
        let level = level_label(*event.metadata().level());
        let pid = std::process::id();
        match self.format {
            LogFormat::Text => {
                let label = format!("{level}:");
                write!(writer, "{label:<10}[{pid}] {}", fields.message)?;
                for (name, value) in fields.others.iter() {
                    write!(writer, " {name}={value}")?;
                }
                writeln!(writer)
            }
            LogFormat::Json => {
                let time = SystemTime::now()
                    .duration_since(UNIX_EPOCH)
                    .map(|d| d.as_secs_f64())
                    .unwrap_or_default();
                let mut line = format!(
                    "{{\"time\":{time:.3},\"level\":\"{level}\",\"pid\":{pid},\"message\":"
                );
                serde_json_like::quote(&mut line, &fields.message);
                for (name, value) in fields.others.iter() {
                    line.push(',');
                    serde_json_like::quote(&mut line, name);
                    line.push(':');
                    serde_json_like::quote(&mut line, value);
                }
                line.push('}');
                writeln!(writer, "{line}")
            }
        }
    }
}

/// Installs a stderr subscriber writing `format` lines at `level` and above.
///
/// Call it once, in `main`, before [`crate::Server::serve`]: workers inherit it at fork.
pub fn init(level: Level, format: LogFormat) {
    tracing_subscriber::fmt()
        .with_max_level(level)
        .with_writer(std::io::stderr)
        .event_format(LineFormat { format })
        .init();
}

#[cfg(test)]
mod tests {
    use super::serde_json_like::quote;

    #[test]
    fn json_strings_are_escaped() {
        let mut out = String::new();
        quote(&mut out, "a \"quoted\"\n\\ \u{1}");
        assert_eq!(out, r#""a \"quoted\"\n\\ \u0001""#);
    }
}
