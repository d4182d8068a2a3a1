//! Seeing from outside whether an external worker serves on the listener.
//!
//! External programs do not report readiness, and a rolling restart must not stop an old
//! worker before its replacement accepts. A worker accepts once its event loop watches the
//! listening socket (the socket's inode among the targets of one of its epoll instances,
//! in `/proc/PID/fdinfo`), or once a thread is blocked in `accept()` on it (`wchan`).

use std::fs;
use std::os::unix::fs::MetadataExt;

use nix::unistd::Pid;

/// Inode of a socket descriptor, as `/proc/PID/fd/N` links show it (`socket:[INODE]`).
pub(crate) fn socket_inode(fd: std::os::fd::BorrowedFd<'_>) -> Option<u64> {
    use std::os::fd::AsRawFd;
    fs::metadata(format!("/proc/self/fd/{}", fd.as_raw_fd()))
        .ok()
        .map(|m| m.ino())
}

/// Whether process `pid` waits for connections on the socket with inode `inode`.
pub(crate) fn accepts_on(pid: Pid, inode: u64) -> bool {
    let socket_link = format!("socket:[{inode}]");
    let Ok(fds) = fs::read_dir(format!("/proc/{pid}/fd")) else {
        return false;
    };
    let mut listener_fds = Vec::new();
    let mut epoll_fds = Vec::new();
    for entry in fds.flatten() {
        let Ok(target) = fs::read_link(entry.path()) else {
            continue;
        };
        let name = entry.file_name().to_string_lossy().into_owned();
        match target.to_string_lossy().as_ref() {
            t if t == socket_link => listener_fds.push(name),
            "anon_inode:[eventpoll]" => epoll_fds.push(name),
            _ => {}
        }
    }
    if listener_fds.is_empty() {
        return false;
    }
    let watched = epoll_fds.iter().any(|epoll| {
        fs::read_to_string(format!("/proc/{pid}/fdinfo/{epoll}")).is_ok_and(|info| {
            info.lines().any(|line| {
                line.strip_prefix("tfd:")
                    .and_then(|rest| rest.split_whitespace().next())
                    .is_some_and(|fd| listener_fds.iter().any(|l| l == fd))
            })
        })
    });
    watched || blocked_in_accept(pid)
}

/// Whether a thread of `pid` sleeps in the kernel's accept path.
fn blocked_in_accept(pid: Pid) -> bool {
    let Ok(tasks) = fs::read_dir(format!("/proc/{pid}/task")) else {
        return false;
    };
    tasks.flatten().any(|task| {
        fs::read_to_string(task.path().join("wchan")).is_ok_and(|w| w.contains("accept"))
    })
}
