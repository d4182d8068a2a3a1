//! Making the kernel refuse new connections on a listener without closing it.
//!
//! At shutdown the supervisor must stop new connections from entering the accept queue
//! while the workers can still accept the ones already there. Closing the socket does the
//! first but resets the queued connections; keeping it open lets the kernel keep completing
//! handshakes nobody will accept (clients hang). An `SK_REUSEPORT` program does exactly what
//! is needed: the kernel runs it for every SYN that reaches the listener's reuseport group
//! and, when it returns `SK_DROP`, answers the SYN with RST ("connection refused", which
//! clients and load balancers retry) — while connections already queued stay acceptable.

use std::io;
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd};

/// `BPF_PROG_LOAD` command of the `bpf(2)` system call.
const BPF_PROG_LOAD: libc::c_long = 5;
/// Program type run by the reuseport group at socket selection.
const BPF_PROG_TYPE_SK_REUSEPORT: u32 = 21;
/// Attach point of that program type: selection of a socket for a new connection.
const BPF_SK_REUSEPORT_SELECT: u32 = 39;

/// One eBPF instruction, as the kernel reads it (`struct bpf_insn`).
#[repr(C)]
#[derive(Clone, Copy)]
struct BpfInsn {
    code: u8,
    /// Destination register in the low nibble, source in the high one.
    regs: u8,
    off: i16,
    imm: i32,
}

/// The `BPF_PROG_LOAD` part of `union bpf_attr`, followed by zeroed space for fields newer
/// kernels read (the kernel rejects the call if bytes it does not know are non-zero).
#[repr(C)]
struct BpfProgLoadAttr {
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

/// The whole program: `r0 = SK_DROP (0); exit`.
const DROP_EVERY_NEW_CONNECTION: [BpfInsn; 2] = [
    // BPF_ALU64 | BPF_MOV | BPF_K: r0 = 0
    BpfInsn {
        code: 0xb7,
        regs: 0,
        off: 0,
        imm: 0,
    },
    // BPF_JMP | BPF_EXIT
    BpfInsn {
        code: 0x95,
        regs: 0,
        off: 0,
        imm: 0,
    },
];

/// A loaded program that refuses every new connection of the group it is attached to.
///
/// It is loaded at startup, so that the startup log can say which drain mode is in force
/// and a stop never fails half-way for lack of privileges; it is attached only at stop.
#[derive(Debug)]
pub(crate) struct RefusalProgram {
    fd: OwnedFd,
}

impl RefusalProgram {
    /// Loads the program (needs CAP_BPF, or root).
    pub(crate) fn load() -> io::Result<Self> {
        let license = c"GPL";
        let mut attr: BpfProgLoadAttr = BpfProgLoadAttr {
            prog_type: BPF_PROG_TYPE_SK_REUSEPORT,
            insn_cnt: DROP_EVERY_NEW_CONNECTION.len() as u32,
            insns: DROP_EVERY_NEW_CONNECTION.as_ptr() as u64,
            license: license.as_ptr() as u64,
            log_level: 0,
            log_size: 0,
            log_buf: 0,
            kern_version: 0,
            prog_flags: 0,
            prog_name: *b"refuse_new_conn\0",
            prog_ifindex: 0,
            expected_attach_type: BPF_SK_REUSEPORT_SELECT,
            reserved: [0; 12],
        };
        // SAFETY: `attr` is a valid bpf_attr prefix of the size passed; the pointers in it
        // refer to statics that outlive the call. The kernel returns a new descriptor,
        // created close-on-exec.
        let fd = unsafe {
            libc::syscall(
                libc::SYS_bpf,
                BPF_PROG_LOAD,
                &mut attr as *mut BpfProgLoadAttr,
                std::mem::size_of::<BpfProgLoadAttr>(),
            )
        };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: the kernel just handed us this descriptor and nobody else owns it.
        let fd = unsafe { OwnedFd::from_raw_fd(fd as i32) };
        Ok(Self { fd })
    }

    /// Attaches the program to the reuseport group of `listener`: from this call on, every
    /// new SYN to it, in every process that shares the socket, is refused.
    pub(crate) fn attach(&self, listener: BorrowedFd<'_>) -> io::Result<()> {
        crate::steering::attach_program(&self.fd, listener)
    }

    /// The program's descriptor, which workers close after the fork.
    pub(crate) fn as_raw_fd(&self) -> i32 {
        self.fd.as_raw_fd()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::listener::{bind, ReusePort};
    use std::net::TcpStream;
    use std::os::fd::AsFd;

    #[test]
    fn attached_program_refuses_new_connections_and_keeps_queued_ones() {
        let program = match RefusalProgram::load() {
            Ok(p) => p,
            Err(e) if e.raw_os_error() == Some(libc::EPERM) => {
                eprintln!("skipped: not privileged to load eBPF programs");
                return;
            }
            Err(e) => panic!("cannot load: {e}"),
        };
        let listener = bind("127.0.0.1:0".parse().unwrap(), 16, ReusePort::Group).unwrap();
        let addr = listener.local_addr().unwrap();
        let queued = TcpStream::connect(addr).unwrap();
        program.attach(listener.as_fd()).unwrap();
        let refused = TcpStream::connect(addr).unwrap_err();
        assert_eq!(refused.kind(), io::ErrorKind::ConnectionRefused);
        listener.set_nonblocking(false).unwrap();
        let (accepted, _) = listener.accept().unwrap();
        assert_eq!(accepted.peer_addr().unwrap(), queued.local_addr().unwrap());
    }
}
