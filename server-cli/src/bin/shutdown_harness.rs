//! `shutdown-harness` as the Python package ships it, beside `server-cli` in the
//! virtualenv's `bin`: the harness crate's command line, unchanged.

#![forbid(unsafe_code)]

use std::process::ExitCode;

fn main() -> ExitCode {
    shutdown_harness::cli::main()
}
