//! Listening sockets handed over the way systemd does it (`LISTEN_FDS`, `LISTEN_PID`).

use std::os::fd::RawFd;

/// First descriptor of the passed sockets (`SD_LISTEN_FDS_START`).
pub const LISTEN_FDS_START: RawFd = 3;

/// The listening socket passed to this process by systemd socket activation (or by a
/// parent doing a binary upgrade), if any.
///
/// Follows `sd_listen_fds(unset_environment = 1)`: the sockets are for this process only
/// when `LISTEN_PID` is its pid, and the variables are removed so that programs started
/// later (external workers) do not take them for their own. Only the first socket is used.
pub fn inherited_listener() -> Option<RawFd> {
    let pid_matches = std::env::var("LISTEN_PID")
        .ok()
        .and_then(|p| p.parse::<u32>().ok())
        == Some(std::process::id());
    let count = std::env::var("LISTEN_FDS")
        .ok()
        .and_then(|n| n.parse::<u32>().ok())
        .unwrap_or(0);
    for name in ["LISTEN_PID", "LISTEN_FDS", "LISTEN_FDNAMES"] {
        std::env::remove_var(name);
    }
    (pid_matches && count >= 1).then_some(LISTEN_FDS_START)
}
