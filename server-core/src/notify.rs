//! Telling the service manager about state changes (`sd_notify`), without libsystemd.

use std::os::unix::net::UnixDatagram;
use std::path::PathBuf;

/// A connection to systemd's notification socket (`NOTIFY_SOCKET`).
#[derive(Debug)]
pub(crate) struct SystemdNotifier {
    socket: UnixDatagram,
    path: NotifyPath,
    /// The variable as it was, for a new parent started by a binary upgrade.
    variable: std::ffi::OsString,
}

/// Where the notification socket lives.
#[derive(Debug)]
enum NotifyPath {
    /// A path on the file system.
    File(PathBuf),
    /// An abstract socket name (`@name` in the variable).
    Abstract(Vec<u8>),
}

impl SystemdNotifier {
    /// Reads `NOTIFY_SOCKET` (and removes it, so that workers and the programs they run do
    /// not notify on the parent's behalf).
    pub(crate) fn from_env() -> Option<Self> {
        let value = std::env::var_os("NOTIFY_SOCKET")?;
        std::env::remove_var("NOTIFY_SOCKET");
        let bytes = std::os::unix::ffi::OsStrExt::as_bytes(value.as_os_str()).to_vec();
        let path = match bytes.strip_prefix(b"@") {
            Some(name) => NotifyPath::Abstract(name.to_vec()),
            None => NotifyPath::File(PathBuf::from(&value)),
        };
        let socket = UnixDatagram::unbound().ok()?;
        Some(Self {
            socket,
            path,
            variable: value,
        })
    }

    /// `NOTIFY_SOCKET=...`, to hand to the new parent of a binary upgrade (which then
    /// reports `READY=1` with its own `MAINPID`; the unit needs `NotifyAccess=all`).
    pub(crate) fn env_entry(&self) -> std::ffi::OsString {
        let mut entry = std::ffi::OsString::from("NOTIFY_SOCKET=");
        entry.push(&self.variable);
        entry
    }

    /// Sends one notification, e.g. `READY=1\nSTATUS=serving`. Failures are logged, never
    /// fatal: the server works without a service manager.
    pub(crate) fn send(&self, message: &str) {
        let sent = match &self.path {
            NotifyPath::File(path) => self.socket.send_to(message.as_bytes(), path),
            NotifyPath::Abstract(name) => {
                use std::os::linux::net::SocketAddrExt;
                std::os::unix::net::SocketAddr::from_abstract_name(name)
                    .and_then(|addr| self.socket.send_to_addr(message.as_bytes(), &addr))
            }
        };
        if let Err(e) = sent {
            tracing::warn!("cannot notify systemd: {e}");
        }
    }

    /// The socket's descriptor, which workers close after the fork.
    pub(crate) fn as_raw_fd(&self) -> i32 {
        std::os::fd::AsRawFd::as_raw_fd(&self.socket)
    }
}

/// The interval at which systemd wants `WATCHDOG=1` (`WATCHDOG_USEC`, when `WATCHDOG_PID`
/// is unset or this process), halved as `sd_watchdog_enabled(3)` recommends. The variables
/// are removed so that workers do not inherit them.
pub(crate) fn watchdog_interval() -> Option<std::time::Duration> {
    let usec = std::env::var("WATCHDOG_USEC").ok()?.parse::<u64>().ok()?;
    let for_us = std::env::var("WATCHDOG_PID")
        .ok()
        .and_then(|p| p.parse::<u32>().ok())
        .is_none_or(|pid| pid == std::process::id());
    std::env::remove_var("WATCHDOG_USEC");
    std::env::remove_var("WATCHDOG_PID");
    (for_us && usec > 0).then(|| std::time::Duration::from_micros(usec / 2))
}
