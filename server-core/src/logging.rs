//! Log lines in uvicorn's style (`INFO:     Started server process [42]`), so operators
//! moving from uvicorn keep their log parsing.

use std::fmt;

use tracing::{Event, Level, Subscriber};
use tracing_subscriber::fmt::format::Writer;
use tracing_subscriber::fmt::{FmtContext, FormatEvent, FormatFields};
use tracing_subscriber::registry::LookupSpan;

/// Formats an event as uvicorn does: the level, a colon, padding to ten columns, the message.
#[derive(Debug, Clone, Copy, Default)]
pub struct UvicornStyle;

impl<S, N> FormatEvent<S, N> for UvicornStyle
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
{
    fn format_event(
        &self,
        ctx: &FmtContext<'_, S, N>,
        mut writer: Writer<'_>,
        event: &Event<'_>,
    ) -> fmt::Result {
        let label = match *event.metadata().level() {
            Level::ERROR => "ERROR:    ",
            Level::WARN => "WARNING:  ",
            Level::INFO => "INFO:     ",
            Level::DEBUG => "DEBUG:    ",
            Level::TRACE => "TRACE:    ",
        };
        writer.write_str(label)?;
        ctx.field_format().format_fields(writer.by_ref(), event)?;
        writeln!(writer)
    }
}

/// Installs a stderr subscriber with [`UvicornStyle`] lines at `level` and above.
///
/// Call it once, in `main`, before [`crate::Server::serve`]: workers inherit it at fork.
pub fn init(level: Level) {
    tracing_subscriber::fmt()
        .with_max_level(level)
        .with_writer(std::io::stderr)
        .event_format(UvicornStyle)
        .init();
}
