//! Lays out the release binary so that the supervisor (the parent process) maps few pages.
//!
//! The parent runs a few hundred functions (argument parsing, logging, fork, the event loop),
//! but the kernel maps file pages 64 KiB around each page a process runs ("fault-around"), so
//! functions scattered over a 3.6 MiB text section put half of it in the parent's RSS. Two
//! link options fix that on Linux with glibc and rust-lld (the default linker there since
//! Rust 1.90):
//!
//! - `--symbol-ordering-file=parent-code.order` puts the functions the parent runs next to
//!   one another at the start of the text section (as browsers' order files do for startup);
//!   a symbol the file names but the binary lacks is skipped, so a stale file costs memory,
//!   never a build. `scripts/order-parent-code.sh` writes the file again.
//! - `-z pack-relative-relocs` (DT_RELR, glibc 2.36+) shrinks the relocation table the
//!   loader reads at every start from 190 KiB to a few KiB.
//!
//! Both are tried on a probe program first (linked with the same flags and run), so any other
//! linker, libc or target builds the plain layout. `SERVER_CLI_PLAIN_LAYOUT=1` asks for it.

#[path = "build/wheel_module.rs"]
mod wheel_module;

use std::path::{Path, PathBuf};
use std::process::Command;

/// The order file, next to this script.
const ORDER_FILE: &str = "parent-code.order";
/// What linkers say when they refuse an option or cannot read the order file.
const LINKER_REFUSALS: [&str; 5] = [
    "unrecognized option",
    "unknown option",
    "unknown -z",
    "cannot open",
    "cannot find",
];
/// Opts out of the layout (to measure it, or to rule it out).
const OPT_OUT: &str = "SERVER_CLI_PLAIN_LAYOUT";

fn main() {
    println!("cargo:rerun-if-changed=build.rs");
    println!("cargo:rerun-if-changed={ORDER_FILE}");
    println!("cargo:rerun-if-env-changed={OPT_OUT}");
    wheel_module::link_for_the_wheel();
    if !wants_ordered_layout() {
        return;
    }
    let order = Path::new(&env("CARGO_MANIFEST_DIR")).join(ORDER_FILE);
    let link_args = layout_link_args(&order);
    match probe(&link_args) {
        Ok(()) => {
            for arg in &link_args {
                println!("cargo:rustc-link-arg-bins={arg}");
            }
        }
        Err(why) => {
            println!("cargo:warning=server-cli: plain layout (the linker probe failed: {why})");
        }
    }
}

/// Whether this build gets the ordered layout: release builds for the machine that builds
/// them (the probe has to run there) on Linux with glibc, unless asked not to.
fn wants_ordered_layout() -> bool {
    let opted_out = std::env::var_os(OPT_OUT).is_some_and(|v| !v.is_empty() && v != "0");
    !opted_out
        && env("PROFILE") == "release"
        && env("TARGET") == env("HOST")
        && env("CARGO_CFG_TARGET_OS") == "linux"
        && env("CARGO_CFG_TARGET_ENV") == "gnu"
}

/// The linker options of the ordered layout.
fn layout_link_args(order: &Path) -> Vec<String> {
    vec![
        "-Wl,-z,pack-relative-relocs".to_string(),
        format!("-Wl,--symbol-ordering-file={}", order.display()),
        "-Wl,--no-warn-symbol-ordering".to_string(),
    ]
}

/// Links a small program with `link_args` (and the flags the build itself uses, so the same
/// linker) and runs it: proof that the linker takes the options and the loader the result.
fn probe(link_args: &[String]) -> Result<(), String> {
    let out_dir = PathBuf::from(env("OUT_DIR"));
    let source = out_dir.join("layout_probe.rs");
    let binary = out_dir.join("layout_probe");
    std::fs::write(&source, "fn main() {}\n")
        .map_err(|e| format!("cannot write {}: {e}", source.display()))?;
    let mut rustc = Command::new(env("RUSTC"));
    rustc.args(["--edition", "2021", "--crate-type", "bin", "-o"]);
    rustc.arg(&binary).arg(&source);
    let build_flags = std::env::var("CARGO_ENCODED_RUSTFLAGS").unwrap_or_default();
    rustc.args(build_flags.split('\u{1f}').filter(|f| !f.is_empty()));
    for arg in link_args {
        rustc.arg("-C").arg(format!("link-arg={arg}"));
    }
    let linked = rustc
        .output()
        .map_err(|e| format!("cannot run rustc: {e}"))?;
    if !linked.status.success() {
        return Err(format!("link failed: {}", linker_complaint(&linked.stderr)));
    }
    let ran = Command::new(&binary)
        .output()
        .map_err(|e| format!("cannot run the probe: {e}"))?;
    if !ran.status.success() {
        let stderr = String::from_utf8_lossy(&ran.stderr);
        return Err(format!("the probe did not run: {}", stderr.trim()));
    }
    Ok(())
}

/// The line of rustc's report that says what the linker refused (rustc's own first line
/// only says that linking failed).
fn linker_complaint(stderr: &[u8]) -> String {
    let stderr = String::from_utf8_lossy(stderr);
    let lines = || {
        stderr
            .lines()
            .map(|l| l.trim().trim_start_matches("= note:").trim())
    };
    lines()
        .find(|l| LINKER_REFUSALS.iter().any(|w| l.contains(w)))
        .or_else(|| lines().find(|l| !l.is_empty()))
        .unwrap_or("no output")
        .to_string()
}

/// A variable cargo always sets for build scripts.
fn env(name: &str) -> String {
    std::env::var(name).unwrap_or_default()
}
