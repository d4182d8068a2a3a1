//! Running a disruption command (`--disrupt 'systemctl restart app'`): through `sh -c`, in
//! its own process group, its output captured, its run bounded.
//!
//! A command may leave a process behind on purpose (a restart that starts the new server
//! in the background): the harness waits for the shell, not for the end of its output,
//! so such a process holding the output pipe cannot hold the run.
//!
//! Each line of its output is timed as it arrives: a deploy driver that prints its steps
//! ("app2: SIGTERM", "app2: in rotation again") gets them on the report's timeline.

use std::os::fd::OwnedFd;
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use nix::sys::signal::{killpg, Signal};
use nix::unistd::Pid;
use tokio::io::AsyncReadExt;
use tokio::net::unix::pipe;
use tokio::process::Command;

use crate::observation::{CommandRun, CommandStep, MAX_STEPS};

/// How much of a command's output is kept (its end).
const MAX_OUTPUT: usize = 64 * 1024;
/// How long the output may still arrive after the shell has exited.
const OUTPUT_GRACE: Duration = Duration::from_millis(200);

/// Runs `command`, for at most `limit`; times are seconds since `started`.
pub async fn run_command(command: &str, started: Instant, limit: Duration) -> CommandRun {
    let start = started.elapsed().as_secs_f64();
    let (status, success, output) = match execute(command, started, limit).await {
        Ok(done) => done,
        Err(why) => (why, false, Output::default()),
    };
    CommandRun {
        command: command.into(),
        started: start,
        ended: started.elapsed().as_secs_f64(),
        status,
        success,
        output: String::from_utf8_lossy(&output.tail).into_owned(),
        steps: output.steps,
    }
}

/// What was read of a command's output.
#[derive(Debug, Default)]
struct Output {
    /// The last [`MAX_OUTPUT`] bytes.
    tail: Vec<u8>,
    /// Complete lines, timed (the first [`MAX_STEPS`]).
    steps: Vec<CommandStep>,
    /// The start of a line not yet ended.
    partial: Vec<u8>,
}

impl Output {
    /// Takes in a chunk read at `at` seconds since traffic started.
    fn take(&mut self, chunk: &[u8], at: f64) {
        self.tail.extend_from_slice(chunk);
        let excess = self.tail.len().saturating_sub(MAX_OUTPUT);
        self.tail.drain(..excess);
        for &byte in chunk {
            if byte == b'\n' {
                self.end_line(at);
            } else if self.partial.len() < MAX_OUTPUT {
                self.partial.push(byte);
            }
        }
    }

    /// Ends the line read so far (a line break arrived, or the output ended).
    fn end_line(&mut self, at: f64) {
        let line = String::from_utf8_lossy(&self.partial)
            .trim_end()
            .to_string();
        self.partial.clear();
        if self.steps.len() < MAX_STEPS && !line.is_empty() {
            self.steps.push(CommandStep { at, line });
        }
    }
}

async fn execute(
    command: &str,
    started: Instant,
    limit: Duration,
) -> Result<(String, bool, Output), String> {
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
    let output = Arc::new(Mutex::new(Output::default()));
    let collector = tokio::spawn(collect(reader, started, output.clone()));
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
    let output = output
        .lock()
        .map(|mut o| std::mem::take(&mut *o))
        .unwrap_or_default();
    Ok((result.0, result.1, output))
}

/// Reads the command's output until EOF, timing each line as it arrives.
async fn collect(reader: OwnedFd, started: Instant, output: Arc<Mutex<Output>>) {
    let Ok(mut reader) = pipe::Receiver::from_owned_fd(reader) else {
        return;
    };
    let mut chunk = [0u8; 4096];
    while let Ok(n) = reader.read(&mut chunk).await {
        if n == 0 {
            break;
        }
        if let Ok(mut kept) = output.lock() {
            kept.take(&chunk[..n], started.elapsed().as_secs_f64());
        }
    }
    if let Ok(mut kept) = output.lock() {
        kept.end_line(started.elapsed().as_secs_f64());
    }
}

#[cfg(test)]
mod tests {
    use super::Output;

    #[test]
    fn lines_are_timed_when_they_end_and_split_reads_join() {
        let mut output = Output::default();
        output.take(b"app1: SIG", 1.0);
        output.take(b"TERM\n\napp1: exi", 1.5);
        output.take(b"ted\r\n", 2.0);
        let steps: Vec<(f64, &str)> = output
            .steps
            .iter()
            .map(|s| (s.at, s.line.as_str()))
            .collect();
        assert_eq!(steps, vec![(1.5, "app1: SIGTERM"), (2.0, "app1: exited")]);
        assert_eq!(output.tail, b"app1: SIGTERM\n\napp1: exited\r\n");
        output.take(b"no line break", 3.0);
        output.end_line(3.5);
        assert_eq!(output.steps.last().map(|s| s.at), Some(3.5));
    }
}
