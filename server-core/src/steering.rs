//! Steering new connections among per-worker sockets, so that a worker can be left out of
//! the selection before it is told to stop.
//!
//! With one shared socket, the parent cannot stop an external worker from accepting before
//! it signals it, and uvicorn loses connections it accepts around `Server.close()` (4-8
//! dropped per four rolling restarts, issue 25). Here every external worker has its own
//! socket, all in one `SO_REUSEPORT` group, and an `SK_REUSEPORT` program chooses the
//! socket of every new connection from a `REUSEPORT_SOCKARRAY` map that holds only the
//! sockets of ready workers that are not leaving: by the SYN's hash, modulo their number
//! (the order kept in an array map), so new connections spread evenly over them. The
//! supervisor takes a worker out of the map, waits until its own accept queue is empty,
//! and only then signals it: it has nothing left to accept, so nothing to lose.
//!
//! While the map is empty (at start, before any worker is ready) the program lets the
//! kernel choose by hash among every socket of the group, as without a program.
//!
//! Loaded for `BPF_SK_REUSEPORT_SELECT_OR_MIGRATE` (Linux 5.14) where the kernel has it,
//! the same program also chooses where the queue of a closing socket goes, whatever
//! `net.ipv4.tcp_migrate_req` says: the queue of a worker that died moves to the ready
//! workers at once instead of waiting for its replacement (a Python worker takes seconds
//! to start).

use std::collections::BTreeMap;
use std::io;
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};

/// `bpf(2)` commands.
const BPF_MAP_CREATE: libc::c_long = 0;
const BPF_MAP_UPDATE_ELEM: libc::c_long = 2;
const BPF_MAP_DELETE_ELEM: libc::c_long = 3;
const BPF_PROG_LOAD: libc::c_long = 5;
/// Map types.
const BPF_MAP_TYPE_ARRAY: u32 = 2;
const BPF_MAP_TYPE_REUSEPORT_SOCKARRAY: u32 = 20;
/// Program type and attach point, as for the refusal program.
const BPF_PROG_TYPE_SK_REUSEPORT: u32 = 21;
const BPF_SK_REUSEPORT_SELECT: u32 = 39;
/// The attach point that also runs the program for a closing socket's queue (5.14).
const BPF_SK_REUSEPORT_SELECT_OR_MIGRATE: u32 = 40;
/// `setsockopt` option that attaches a loaded program to the socket's reuseport group.
const SO_ATTACH_REUSEPORT_EBPF: libc::c_int = 52;
/// `src` register value of a 64-bit immediate load that names a map by descriptor.
const BPF_PSEUDO_MAP_FD: u8 = 1;
/// Helpers the program calls.
const HELPER_MAP_LOOKUP_ELEM: i32 = 1;
const HELPER_SK_SELECT_REUSEPORT: i32 = 82;
/// Offset of `hash` in `struct sk_reuseport_md` (two 8-byte pointers, four u32 fields).
const MD_HASH_OFFSET: i16 = 32;

/// Most sockets the map holds: far above any worker count (at most 1,024 workers).
pub(crate) const MOST_STEERED: u32 = 1024;

/// One eBPF instruction (`struct bpf_insn`).
#[repr(C)]
#[derive(Clone, Copy)]
struct Insn {
    code: u8,
    /// Destination register in the low nibble, source in the high one.
    regs: u8,
    off: i16,
    imm: i32,
}

const fn insn(code: u8, dst: u8, src: u8, off: i16, imm: i32) -> Insn {
    Insn {
        code,
        regs: dst | (src << 4),
        off,
        imm,
    }
}

/// The `BPF_MAP_CREATE` part of `union bpf_attr`, zero-padded for newer kernels.
#[repr(C)]
struct MapCreateAttr {
    map_type: u32,
    key_size: u32,
    value_size: u32,
    max_entries: u32,
    map_flags: u32,
    reserved: [u64; 16],
}

/// The `BPF_MAP_*_ELEM` part of `union bpf_attr`.
#[repr(C)]
struct MapElemAttr {
    map_fd: u32,
    pad: u32,
    key: u64,
    value: u64,
    flags: u64,
    reserved: [u64; 8],
}

/// The `BPF_PROG_LOAD` part of `union bpf_attr`, zero-padded for newer kernels.
#[repr(C)]
struct ProgLoadAttr {
    prog_type: u32,
    insn_cnt: u32,
    insns: u64,
    license: u64,
    log_level: u32,
    log_size: u32,
    log_buf: u64,
    kern_version: u32,
    prog_flags: u32,
    prog_name: [u8; 16],
    prog_ifindex: u32,
    expected_attach_type: u32,
    reserved: [u64; 12],
}

fn bpf<T>(command: libc::c_long, attr: &mut T) -> io::Result<libc::c_long> {
    // SAFETY: `attr` is a valid, zero-padded `bpf_attr` prefix for `command`, of the size
    // passed; any pointer in it refers to memory that outlives the call.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_bpf,
            command,
            attr as *mut T,
            std::mem::size_of::<T>(),
        )
    };
    if rc < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(rc)
    }
}

fn owned(fd: libc::c_long) -> OwnedFd {
    // SAFETY: the kernel just returned this new descriptor (close-on-exec); nobody else
    // owns it.
    unsafe { OwnedFd::from_raw_fd(fd as i32) }
}

fn create_map(map_type: u32, value_size: u32, max_entries: u32) -> io::Result<OwnedFd> {
    let mut attr = MapCreateAttr {
        map_type,
        key_size: 4,
        value_size,
        max_entries,
        map_flags: 0,
        reserved: [0; 16],
    };
    bpf(BPF_MAP_CREATE, &mut attr).map(owned)
}

/// The loaded program and its two maps.
#[derive(Debug)]
pub(crate) struct SteeringProgram {
    program: OwnedFd,
    /// Slot -> socket: every member's socket, at a slot of its own while it is a member.
    sockets: OwnedFd,
    /// Entry 0: how many members; entries 1..=n: their slots in `sockets`, in order.
    order: OwnedFd,
    /// Each member socket's slot, by descriptor.
    slots: BTreeMap<RawFd, u32>,
    /// Whether the program also migrates a closing socket's queue (loaded for
    /// `BPF_SK_REUSEPORT_SELECT_OR_MIGRATE`).
    migrates: bool,
}

impl SteeringProgram {
    /// Creates the maps and loads the program (needs CAP_BPF, or root).
    pub(crate) fn load() -> io::Result<Self> {
        let sockets = create_map(BPF_MAP_TYPE_REUSEPORT_SOCKARRAY, 8, MOST_STEERED)?;
        let order = create_map(BPF_MAP_TYPE_ARRAY, 4, MOST_STEERED + 1)?;
        // A kernel older than 5.14 refuses the migrating attach point with EINVAL.
        let (program, migrates) = match load_program(
            order.as_raw_fd(),
            sockets.as_raw_fd(),
            BPF_SK_REUSEPORT_SELECT_OR_MIGRATE,
        ) {
            Ok(program) => (program, true),
            Err(e) if e.raw_os_error() == Some(libc::EINVAL) => (
                load_program(
                    order.as_raw_fd(),
                    sockets.as_raw_fd(),
                    BPF_SK_REUSEPORT_SELECT,
                )?,
                false,
            ),
            Err(e) => return Err(e),
        };
        Ok(Self {
            program,
            sockets,
            order,
            slots: BTreeMap::new(),
            migrates,
        })
    }

    /// Whether closing a socket of the group moves its queue to the members (chosen by
    /// the program) rather than resetting it.
    pub(crate) fn migrates(&self) -> bool {
        self.migrates
    }

    /// Attaches the program to the reuseport group of `listener` (any socket of it).
    pub(crate) fn attach(&self, listener: BorrowedFd<'_>) -> io::Result<()> {
        attach_program(&self.program, listener)
    }

    /// Makes `members` the sockets new connections go to. A socket joins the socket map
    /// before the order names it, and leaves it only after the order no longer does, so
    /// that a socket left out is never chosen once this returns, and every socket chosen
    /// meanwhile is an old or a new member. (A socket can be in one slot only: the kernel
    /// refuses to move it, hence the order map.)
    pub(crate) fn set_members(&mut self, members: &[BorrowedFd<'_>]) -> io::Result<()> {
        let wanted: Vec<RawFd> = members
            .iter()
            .take(MOST_STEERED as usize)
            .map(AsRawFd::as_raw_fd)
            .collect();
        for &fd in &wanted {
            if self.slots.contains_key(&fd) {
                continue;
            }
            let slot = (0..MOST_STEERED)
                .find(|s| !self.slots.values().any(|used| used == s))
                .ok_or_else(|| io::Error::other("no free slot in the socket map"))?;
            update(&self.sockets, slot, &(fd as u64).to_ne_bytes())?;
            self.slots.insert(fd, slot);
        }
        for (index, fd) in wanted.iter().enumerate() {
            update(&self.order, index as u32 + 1, &self.slots[fd].to_ne_bytes())?;
        }
        update(&self.order, 0, &(wanted.len() as u32).to_ne_bytes())?;
        let leaving: Vec<(RawFd, u32)> = self
            .slots
            .iter()
            .filter(|(fd, _)| !wanted.contains(fd))
            .map(|(&fd, &slot)| (fd, slot))
            .collect();
        for (fd, slot) in leaving {
            delete(&self.sockets, slot)?;
            self.slots.remove(&fd);
        }
        Ok(())
    }

    /// The program's and maps' descriptors, which workers close after the fork.
    pub(crate) fn raw_fds(&self) -> [RawFd; 3] {
        [
            self.program.as_raw_fd(),
            self.sockets.as_raw_fd(),
            self.order.as_raw_fd(),
        ]
    }
}

fn update(map: &OwnedFd, key: u32, value: &[u8]) -> io::Result<()> {
    let mut attr = MapElemAttr {
        map_fd: map.as_raw_fd() as u32,
        pad: 0,
        key: &key as *const u32 as u64,
        value: value.as_ptr() as u64,
        flags: 0,
        reserved: [0; 8],
    };
    bpf(BPF_MAP_UPDATE_ELEM, &mut attr).map(drop)
}

/// Clears a slot; one the kernel already cleared (its socket was closed) is fine.
fn delete(map: &OwnedFd, key: u32) -> io::Result<()> {
    let mut attr = MapElemAttr {
        map_fd: map.as_raw_fd() as u32,
        pad: 0,
        key: &key as *const u32 as u64,
        value: 0,
        flags: 0,
        reserved: [0; 8],
    };
    match bpf(BPF_MAP_DELETE_ELEM, &mut attr) {
        Err(e) if e.raw_os_error() == Some(libc::ENOENT) => Ok(()),
        other => other.map(drop),
    }
}

/// Attaches `program` to the reuseport group of `listener`, replacing any program there.
pub(crate) fn attach_program(program: &OwnedFd, listener: BorrowedFd<'_>) -> io::Result<()> {
    let prog_fd: libc::c_int = program.as_raw_fd();
    // SAFETY: the option value is a c_int that lives across the call.
    let rc = unsafe {
        libc::setsockopt(
            listener.as_raw_fd(),
            libc::SOL_SOCKET,
            SO_ATTACH_REUSEPORT_EBPF,
            (&prog_fd as *const libc::c_int).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// The program: `n = order[0]; if n == 0 pass; slot = order[1 + hash % n];
/// select(sockets[slot]); pass` (on any failure the kernel chooses, as without a program).
fn instructions(order_map: i32, sockets_map: i32) -> [Insn; 31] {
    const PASS: i16 = 29;
    [
        // 0: r6 = r1 (the context)
        insn(0xbf, 6, 1, 0, 0),
        // 1: *(u32 *)(r10 - 4) = 0
        insn(0x62, 10, 0, -4, 0),
        // 2-3: r1 = the order map
        insn(0x18, 1, BPF_PSEUDO_MAP_FD, 0, order_map),
        insn(0, 0, 0, 0, 0),
        // 4-5: r2 = r10 - 4
        insn(0xbf, 2, 10, 0, 0),
        insn(0x07, 2, 0, 0, -4),
        // 6: r0 = &order[0]
        insn(0x85, 0, 0, 0, HELPER_MAP_LOOKUP_ELEM),
        // 7: if r0 == 0 goto pass
        insn(0x15, 0, 0, PASS - 8, 0),
        // 8: r7 = order[0] (members)
        insn(0x61, 7, 0, 0, 0),
        // 9: if r7 == 0 goto pass
        insn(0x15, 7, 0, PASS - 10, 0),
        // 10: r2 = ctx->hash
        insn(0x61, 2, 6, MD_HASH_OFFSET, 0),
        // 11: w2 %= w7
        insn(0x9c, 2, 7, 0, 0),
        // 12: w2 += 1
        insn(0x04, 2, 0, 0, 1),
        // 13: *(u32 *)(r10 - 8) = r2
        insn(0x63, 10, 2, -8, 0),
        // 14-15: r1 = the order map
        insn(0x18, 1, BPF_PSEUDO_MAP_FD, 0, order_map),
        insn(0, 0, 0, 0, 0),
        // 16-17: r2 = r10 - 8
        insn(0xbf, 2, 10, 0, 0),
        insn(0x07, 2, 0, 0, -8),
        // 18: r0 = &order[1 + hash % n]
        insn(0x85, 0, 0, 0, HELPER_MAP_LOOKUP_ELEM),
        // 19: if r0 == 0 goto pass
        insn(0x15, 0, 0, PASS - 20, 0),
        // 20: r2 = the slot; 21: *(u32 *)(r10 - 12) = r2
        insn(0x61, 2, 0, 0, 0),
        insn(0x63, 10, 2, -12, 0),
        // 22-23: r2 = the sockets map
        insn(0x18, 2, BPF_PSEUDO_MAP_FD, 0, sockets_map),
        insn(0, 0, 0, 0, 0),
        // 24: r1 = ctx
        insn(0xbf, 1, 6, 0, 0),
        // 25-26: r3 = r10 - 12
        insn(0xbf, 3, 10, 0, 0),
        insn(0x07, 3, 0, 0, -12),
        // 27: r4 = 0 (flags)
        insn(0xb7, 4, 0, 0, 0),
        // 28: sk_select_reuseport(ctx, sockets, &slot, 0)
        insn(0x85, 0, 0, 0, HELPER_SK_SELECT_REUSEPORT),
        // 29 (pass): r0 = SK_PASS
        insn(0xb7, 0, 0, 0, 1),
        // 30: exit
        insn(0x95, 0, 0, 0, 0),
    ]
}

fn load_program(order_map: i32, sockets_map: i32, attach_type: u32) -> io::Result<OwnedFd> {
    let program = instructions(order_map, sockets_map);
    let license = c"GPL";
    let mut attr = ProgLoadAttr {
        prog_type: BPF_PROG_TYPE_SK_REUSEPORT,
        insn_cnt: program.len() as u32,
        insns: program.as_ptr() as u64,
        license: license.as_ptr() as u64,
        log_level: 0,
        log_size: 0,
        log_buf: 0,
        kern_version: 0,
        prog_flags: 0,
        prog_name: *b"steer_to_ready\0\0",
        prog_ifindex: 0,
        expected_attach_type: attach_type,
        reserved: [0; 12],
    };
    bpf(BPF_PROG_LOAD, &mut attr).map(owned)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::listener::{bind, bind_into_group, ReusePort};
    use std::net::{TcpListener, TcpStream};
    use std::os::fd::AsFd;

    fn accepted(listener: &TcpListener) -> usize {
        let mut n = 0;
        while listener.accept().is_ok() {
            n += 1;
        }
        n
    }

    /// The program, or `None` (with a note) where this process may not load eBPF.
    fn loaded() -> Option<SteeringProgram> {
        match SteeringProgram::load() {
            Ok(p) => Some(p),
            Err(e) if e.raw_os_error() == Some(libc::EPERM) => {
                eprintln!("skipped: not privileged to load eBPF programs");
                None
            }
            Err(e) => panic!("cannot load: {e}"),
        }
    }

    #[test]
    fn the_queue_of_a_closed_socket_moves_to_the_members() {
        let Some(mut program) = loaded() else {
            return;
        };
        if !program.migrates() {
            eprintln!("skipped: this kernel has no BPF_SK_REUSEPORT_SELECT_OR_MIGRATE");
            return;
        }
        let dying = bind("127.0.0.1:0".parse().unwrap(), 256, ReusePort::Group).unwrap();
        let addr = dying.local_addr().unwrap();
        let ready = bind_into_group(addr, 256).unwrap();
        ready.set_nonblocking(true).unwrap();
        program.attach(dying.as_fd()).unwrap();
        program.set_members(&[dying.as_fd()]).unwrap();
        let clients: Vec<_> = (0..30).map(|_| TcpStream::connect(addr).unwrap()).collect();
        assert_eq!(accepted(&ready), 0);
        // Its owner died: out of the selection, then closed with 30 connections queued.
        program.set_members(&[ready.as_fd()]).unwrap();
        drop(dying);
        assert_eq!(accepted(&ready), 30);
        drop(clients);
    }

    #[test]
    fn new_connections_go_only_to_the_members_and_spread_over_them() {
        let Some(mut program) = loaded() else {
            return;
        };
        let first = bind("127.0.0.1:0".parse().unwrap(), 256, ReusePort::Group).unwrap();
        let addr = first.local_addr().unwrap();
        let second = bind_into_group(addr, 256).unwrap();
        let third = bind_into_group(addr, 256).unwrap();
        for l in [&first, &second, &third] {
            l.set_nonblocking(true).unwrap();
        }
        program.attach(first.as_fd()).unwrap();
        program
            .set_members(&[first.as_fd(), third.as_fd()])
            .unwrap();
        let clients: Vec<_> = (0..60).map(|_| TcpStream::connect(addr).unwrap()).collect();
        let (a, b, c) = (accepted(&first), accepted(&second), accepted(&third));
        assert_eq!((a + c, b), (60, 0), "{a} {b} {c}");
        assert!(a >= 10 && c >= 10, "spread {a}/{c}");
        // The third left out: nothing more reaches it.
        program.set_members(&[first.as_fd()]).unwrap();
        let more: Vec<_> = (0..20).map(|_| TcpStream::connect(addr).unwrap()).collect();
        assert_eq!(
            (accepted(&first), accepted(&second), accepted(&third)),
            (20, 0, 0)
        );
        drop((clients, more));
    }
}
