//! Starting the server under test in its own process group, and finding what it leaves.

use std::fs::File;
use std::net::{SocketAddr, TcpListener};
use std::path::Path;
use std::process::Stdio;

use nix::sys::signal::{killpg, Signal};
use nix::unistd::Pid;
use tokio::process::{Child, Command};

use crate::error::HarnessError;

/// The command line of the server under test; `{port}` in any argument is replaced.
#[derive(Debug, Clone)]
pub struct ServerCommand {
    /// Program and arguments.
    pub argv: Vec<String>,
}

impl ServerCommand {
    /// The command with `{port}` replaced.
    pub fn resolved(&self, port: u16) -> Vec<String> {
        self.argv
            .iter()
            .map(|a| a.replace("{port}", &port.to_string()))
            .collect()
    }

    /// Whether the command takes its port from `{port}`.
    pub fn has_port_placeholder(&self) -> bool {
        self.argv.iter().any(|a| a.contains("{port}"))
    }
}

/// A free TCP port on 127.0.0.1 (bound, read and released).
pub fn free_port() -> std::io::Result<u16> {
    let listener = TcpListener::bind(SocketAddr::from(([127, 0, 0, 1], 0)))?;
    Ok(listener.local_addr()?.port())
}

/// Starts the server in a new process group, its output appended to `log`.
pub fn launch(argv: &[String], log: &Path) -> Result<Child, HarnessError> {
    let (program, args) = argv.split_first().ok_or(HarnessError::EmptyCommand)?;
    let out = File::create(log).map_err(|e| HarnessError::Log(log.to_path_buf(), e))?;
    let err = out
        .try_clone()
        .map_err(|e| HarnessError::Log(log.to_path_buf(), e))?;
    Command::new(program)
        .args(args)
        .process_group(0)
        .kill_on_drop(true)
        .stdin(Stdio::null())
        .stdout(out)
        .stderr(err)
        .spawn()
        .map_err(|e| HarnessError::Launch(program.clone(), e))
}

/// Running (non-zombie) processes whose field `index` of `/proc/PID/stat` (counted after
/// the command name: 0 state, 1 ppid, 2 pgrp) is `value`.
fn processes_where(index: usize, value: u32) -> Vec<u32> {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| {
            let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
                return false;
            };
            // Fields after the command name (which may contain spaces): state ppid pgrp ...
            let Some(rest) = stat.rsplit_once(')').map(|(_, r)| r) else {
                return false;
            };
            let fields: Vec<&str> = rest.split_whitespace().collect();
            fields.len() > index && fields[0] != "Z" && fields[index] == value.to_string()
        })
        .collect()
}

/// Processes of the group `pgid` that are still running (not zombies).
pub fn live_group_members(pgid: u32) -> Vec<u32> {
    processes_where(2, pgid)
}

/// Running children of `parent` (the workers of a supervisor).
pub fn children_of(parent: u32) -> Vec<u32> {
    processes_where(1, parent)
}

/// SIGKILLs every process of the group.
pub fn kill_group(pgid: u32) {
    let _ = killpg(Pid::from_raw(pgid as i32), Signal::SIGKILL);
}

/// The launched server's process group, killed when this is dropped: a run that fails,
/// panics or is cancelled half-way still ends the server and all its workers (a server
/// left running keeps its port and skews every later measurement).
#[derive(Debug)]
pub struct ServerGroup {
    pgid: u32,
}

impl ServerGroup {
    /// Guards the group led by the launched server `pgid`.
    pub fn new(pgid: u32) -> Self {
        Self { pgid }
    }
}

impl Drop for ServerGroup {
    fn drop(&mut self) {
        if self.pgid != 0 && !live_group_members(self.pgid).is_empty() {
            kill_group(self.pgid);
        }
    }
}
