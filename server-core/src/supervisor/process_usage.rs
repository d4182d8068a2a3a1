//! A worker's resident memory and CPU time, read from `/proc/PID/stat` by the parent (for
//! the metrics and `--limit-max-memory`); works the same for external workers.

use std::sync::OnceLock;

/// What a process uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct ProcessUsage {
    /// Resident memory, in bytes.
    pub(crate) rss_bytes: u64,
    /// User plus system CPU time, in microseconds.
    pub(crate) cpu_us: u64,
}

/// Reads `pid`'s usage; `None` if it is gone.
pub(crate) fn read(pid: i32) -> Option<ProcessUsage> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let (page_size, ticks) = *UNITS.get_or_init(|| {
        let sysconf = |name| {
            nix::unistd::sysconf(name)
                .ok()
                .flatten()
                .filter(|&v| v > 0)
                .map(|v| v as u64)
        };
        (
            sysconf(nix::unistd::SysconfVar::PAGE_SIZE).unwrap_or(4096),
            sysconf(nix::unistd::SysconfVar::CLK_TCK).unwrap_or(100),
        )
    });
    parse(&stat, page_size, ticks)
}

/// Page size and clock ticks per second, asked once.
static UNITS: OnceLock<(u64, u64)> = OnceLock::new();

/// Parses a `stat` line: utime and stime (fields 14, 15, in clock ticks) and rss (field
/// 24, in pages). The command name (field 2) may hold spaces and parentheses: fields are
/// counted after its last `)`.
pub(crate) fn parse(stat: &str, page_size: u64, ticks_per_sec: u64) -> Option<ProcessUsage> {
    let after_name = &stat[stat.rfind(')')? + 1..];
    let fields: Vec<&str> = after_name.split_whitespace().collect();
    // `fields[0]` is field 3 (state).
    let field = |n: usize| fields.get(n - 3).and_then(|v| v.parse::<u64>().ok());
    let ticks = field(14)? + field(15)?;
    Some(ProcessUsage {
        rss_bytes: field(24)? * page_size,
        cpu_us: ticks * 1_000_000 / ticks_per_sec.max(1),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fields_are_counted_after_the_command_name() {
        let stat = "4242 (a (weird) name) S 1 4242 4242 0 -1 4194560 1234 0 0 0 250 50 0 0 20 0 \
                    3 0 99 123456789 2560 18446744073709551615 1 1 0 0 0 0 0 0 0 0 0 0 17 1";
        let usage = parse(stat, 4096, 100).unwrap_or(ProcessUsage {
            rss_bytes: 0,
            cpu_us: 0,
        });
        assert_eq!(usage.rss_bytes, 2560 * 4096);
        assert_eq!(usage.cpu_us, 3_000_000);
        assert_eq!(parse("garbage", 4096, 100), None);
    }
}
