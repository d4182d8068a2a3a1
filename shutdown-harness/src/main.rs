//! `shutdown-harness`: drive traffic at a server, signal it, count every dropped request.
//!
//! Exit status: 0 when nothing was dropped and the server stopped as it should, 1 when it
//! dropped requests or misbehaved, 2 on bad usage.

#![forbid(unsafe_code)]

use std::process::ExitCode;

fn main() -> ExitCode {
    shutdown_harness::cli::main()
}
