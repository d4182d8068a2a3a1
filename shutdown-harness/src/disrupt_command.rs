//! Running a disruption command (`--disrupt 'systemctl restart app'`): through `sh -c`, in
//! its own process group, its output captured, its run bounded.
//!
//! A command may leave a process behind on purpose (a restart that starts the new server
//! in the background): the harness waits for the shell, not for the end of its output,
//! so such a process holding the output pipe cannot hold the run.

use std::os::fd::OwnedFd;
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use nix::sys::signal::{killpg, Signal};
use nix::unistd::Pid;
use tokio::io::AsyncReadExt;
use tokio::net::unix::pipe;
use tokio::process::Command;

use crate::observation::CommandRun;

/// How much of a command's output is kept (its end).
const MAX_OUTPUT: usize = 64 * 1024;
/// How long the output may still arrive after the shell has exited.
const OUTPUT_GRACE: Duration = Duration::from_millis(200);

/// Runs `command`, for at most `limit`; times are seconds since `started`.
pub async fn run_command(command: &str, started: Instant, limit: Duration) -> CommandRun {
    let start = started.elapsed().as_secs_f64();
    let (status, success, output) = match execute(command, limit).await {
        Ok(done) => done,
        Err(why) => (why, false, String::new()),
    };
    CommandRun {
        command: command.into(),
        started: start,
        ended: started.elapsed().as_secs_f64(),
        status,
        success,
        output,
    }
}

async fn execute(command: &str, limit: Duration) -> Result<(String, bool, String), String> {
    let (reader, writer) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC)
        .map_err(|e| format!("cannot make a pipe: {e}"))?;
    let mut child = {
        let stderr = writer
            .try_clone()
            .map_err(|e| format!("cannot make a pipe: {e}"))?;
        Command::new("sh")
            .arg("-c")
            .arg(command)
            .stdin(Stdio::null())
            .stdout(Stdio::from(writer))
            .stderr(Stdio::from(stderr))
            .process_group(0)
            .spawn()
            .map_err(|e| format!("cannot run sh: {e}"))?
    };
    let output = Arc::new(Mutex::new(Vec::new()));
    let collector = tokio::spawn(collect(reader, output.clone()));
    let pgid = child.id().map(|id| Pid::from_raw(id as i32));
    let result = match tokio::time::timeout(limit, child.wait()).await {
        Ok(Ok(status)) => (status.to_string(), status.success()),
        Ok(Err(e)) => (format!("cannot wait for it: {e}"), false),
        Err(_) => {
            if let Some(pgid) = pgid {
                let _ = killpg(pgid, Signal::SIGKILL);
            }
            let _ = child.wait().await;
            (
                format!("still running after {} s; killed", limit.as_secs_f64()),
                false,
            )
        }
    };
    let _ = tokio::time::timeout(OUTPUT_GRACE, collector).await;
    let bytes = output.lock().map(|b| b.clone()).unwrap_or_default();
    Ok((
        result.0,
        result.1,
        String::from_utf8_lossy(&bytes).into_owned(),
    ))
}

/// Reads the command's output until EOF, keeping its last [`MAX_OUTPUT`] bytes.
async fn collect(reader: OwnedFd, output: Arc<Mutex<Vec<u8>>>) {
    let Ok(mut reader) = pipe::Receiver::from_owned_fd(reader) else {
        return;
    };
    let mut chunk = [0u8; 4096];
    while let Ok(n) = reader.read(&mut chunk).await {
        if n == 0 {
            break;
        }
        if let Ok(mut kept) = output.lock() {
            kept.extend_from_slice(&chunk[..n]);
            let excess = kept.len().saturating_sub(MAX_OUTPUT);
            kept.drain(..excess);
        }
    }
}
