//! Seeing from outside whether an external worker serves on the listener.
//!
//! External programs do not report readiness, and a rolling restart must not stop an old
//! worker before its replacement accepts. A worker accepts once its event loop watches the
//! listening socket (the socket's inode among the targets of one of its epoll instances,
//! in `/proc/PID/fdinfo`), once a thread is blocked in `poll()`/`select()` with the
//! listener among the descriptors it waits to read (the syscall and its arguments in
//! `/proc/PID/task/TID/syscall`, the `pollfd` array or `fd_set` read from the worker's
//! memory in `/proc/PID/mem`, which a parent may read for its own child), or once a thread
//! is blocked in `accept()` on it (`wchan`).
//!
//! The poll/select case is the standard library's `socketserver` (`PollSelector`),
//! gunicorn's sync worker and wsgiref (`select`): without it such workers were taken as
//! ready only after the health timeout, at every start (issue 25).

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
    watched || waits_to_read(pid, &listener_fds) || blocked_in_accept(pid)
}

/// The descriptor numbers in `names` (as `/proc/PID/fd` lists them).
fn descriptor_numbers(names: &[String]) -> Vec<i32> {
    names.iter().filter_map(|n| n.parse().ok()).collect()
}

/// Most `pollfd` entries (or `fd_set` bits) read from a worker: far above what a server
/// that polls its listener uses, and a bound on what one probe reads.
const MOST_WAITED_DESCRIPTORS: usize = 4096;

/// A thread of a worker waiting in the kernel, as `/proc/PID/task/TID/syscall` shows it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Wait {
    /// `poll`/`ppoll`: the address of the `pollfd` array and its length.
    Poll { fds: u64, count: u64 },
    /// `select`/`pselect6`: the highest descriptor plus one and the address of the read set.
    Select { count: u64, read_set: u64 },
}

/// Which wait the `/proc/.../syscall` line describes, if it is a poll or a select.
fn parse_wait(line: &str) -> Option<Wait> {
    let mut fields = line.split_whitespace();
    let number: i64 = fields.next()?.parse().ok()?;
    let hex = |field: Option<&str>| -> Option<u64> {
        u64::from_str_radix(field?.strip_prefix("0x")?, 16).ok()
    };
    let (first, second) = (hex(fields.next())?, hex(fields.next())?);
    match number {
        n if is_poll(n) => Some(Wait::Poll {
            fds: first,
            count: second,
        }),
        n if is_select(n) => Some(Wait::Select {
            count: first,
            read_set: second,
        }),
        _ => None,
    }
}

fn is_poll(number: i64) -> bool {
    #[cfg(target_arch = "x86_64")]
    if number == libc::SYS_poll {
        return true;
    }
    number == libc::SYS_ppoll
}

fn is_select(number: i64) -> bool {
    #[cfg(target_arch = "x86_64")]
    if number == libc::SYS_select {
        return true;
    }
    number == libc::SYS_pselect6
}

/// Whether the wait `wait`, whose memory `read` gives, is for one of `listeners` to be
/// readable. Decides only: the reading is the caller's.
fn waits_for_listener(
    wait: Wait,
    listeners: &[i32],
    read: impl Fn(u64, usize) -> Option<Vec<u8>>,
) -> bool {
    match wait {
        Wait::Poll { fds, count } => {
            let count = (count as usize).min(MOST_WAITED_DESCRIPTORS);
            let Some(bytes) = read(fds, count * POLLFD_SIZE) else {
                return false;
            };
            bytes.chunks_exact(POLLFD_SIZE).any(|entry| {
                let fd = i32::from_ne_bytes([entry[0], entry[1], entry[2], entry[3]]);
                let events = i16::from_ne_bytes([entry[4], entry[5]]);
                listeners.contains(&fd) && events & libc::POLLIN != 0
            })
        }
        Wait::Select { count, read_set } => {
            let count = (count as usize).min(MOST_WAITED_DESCRIPTORS);
            if read_set == 0 {
                return false;
            }
            // An fd_set is an array of longs, bit N of the set for descriptor N.
            let words = count.div_ceil(WORD_BITS);
            let Some(bytes) = read(read_set, words * WORD_BITS / 8) else {
                return false;
            };
            listeners.iter().any(|&fd| {
                let fd = fd as usize;
                fd < count && {
                    let word = fd / WORD_BITS;
                    let start = word * (WORD_BITS / 8);
                    let mut raw = [0u8; WORD_BITS / 8];
                    raw.copy_from_slice(&bytes[start..start + WORD_BITS / 8]);
                    usize::from_ne_bytes(raw) & (1 << (fd % WORD_BITS)) != 0
                }
            })
        }
    }
}

/// Size of `struct pollfd`: int fd, short events, short revents.
const POLLFD_SIZE: usize = 8;
/// Bits in one word of an `fd_set`.
const WORD_BITS: usize = usize::BITS as usize;

/// Whether a thread of `pid` is blocked in `poll()` or `select()` waiting for one of the
/// listener descriptors `listener_fds` to be readable.
fn waits_to_read(pid: Pid, listener_fds: &[String]) -> bool {
    use std::os::unix::fs::FileExt;
    let listeners = descriptor_numbers(listener_fds);
    let Ok(tasks) = fs::read_dir(format!("/proc/{pid}/task")) else {
        return false;
    };
    let memory = std::cell::OnceCell::new();
    let read = |address: u64, len: usize| -> Option<Vec<u8>> {
        let file = memory
            .get_or_init(|| fs::File::open(format!("/proc/{pid}/mem")).ok())
            .as_ref()?;
        let mut bytes = vec![0; len];
        file.read_exact_at(&mut bytes, address).ok()?;
        Some(bytes)
    };
    tasks.flatten().any(|task| {
        fs::read_to_string(task.path().join("syscall"))
            .ok()
            .and_then(|line| parse_wait(&line))
            .is_some_and(|wait| waits_for_listener(wait, &listeners, read))
    })
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

#[cfg(test)]
mod tests {
    use super::*;

    fn pollfds(entries: &[(i32, i16)]) -> Vec<u8> {
        entries
            .iter()
            .flat_map(|&(fd, events)| {
                let mut e = fd.to_ne_bytes().to_vec();
                e.extend(events.to_ne_bytes());
                e.extend(0i16.to_ne_bytes());
                e
            })
            .collect()
    }

    #[test]
    fn a_poll_on_the_listener_for_reading_is_a_wait_for_connections() {
        let line = format!(
            "{} 0x7ffd1000 0x2 0x1f4 0x0 0x0 0x0 0x7ffd0f00 0x7f00",
            libc::SYS_ppoll
        );
        let wait = parse_wait(&line).unwrap();
        assert_eq!(
            wait,
            Wait::Poll {
                fds: 0x7ffd_1000,
                count: 2
            }
        );
        let memory = pollfds(&[(5, libc::POLLIN), (3, libc::POLLIN)]);
        let read = |addr: u64, len: usize| (addr == 0x7ffd_1000).then(|| memory[..len].to_vec());
        assert!(waits_for_listener(wait, &[3], read));
        // The listener polled for writing only, or not at all, is not a wait to accept.
        let memory = pollfds(&[(3, libc::POLLOUT), (4, libc::POLLIN)]);
        let read = |_: u64, len: usize| Some(memory[..len].to_vec());
        assert!(!waits_for_listener(wait, &[3], read));
    }

    #[test]
    fn a_select_with_the_listener_in_its_read_set_is_a_wait_for_connections() {
        let line = format!(
            "{} 0x8 0x55aa00 0x0 0x0 0x7ffd2000 0x0 0x7ffd0f00 0x7f00",
            libc::SYS_pselect6
        );
        let wait = parse_wait(&line).unwrap();
        assert_eq!(
            wait,
            Wait::Select {
                count: 8,
                read_set: 0x55_aa00
            }
        );
        let with_fd3 = (1usize << 3).to_ne_bytes().to_vec();
        assert!(waits_for_listener(wait, &[3], |_, len| Some(
            with_fd3[..len].to_vec()
        )));
        let without = (1usize << 5).to_ne_bytes().to_vec();
        assert!(!waits_for_listener(wait, &[3], |_, len| Some(
            without[..len].to_vec()
        )));
        // A listener beyond the select's range is not waited for.
        assert!(!waits_for_listener(wait, &[9], |_, len| Some(vec![
            0xff;
            len
        ])));
    }

    #[test]
    fn other_syscalls_and_running_threads_are_no_wait() {
        assert_eq!(parse_wait("running"), None);
        assert_eq!(parse_wait("-1 0x7ffd0f00 0x7f00"), None);
        let read = format!(
            "{} 0x3 0x7ffd1000 0x1000 0x0 0x0 0x0 0x1 0x2",
            libc::SYS_read
        );
        assert_eq!(parse_wait(&read), None);
    }
}
