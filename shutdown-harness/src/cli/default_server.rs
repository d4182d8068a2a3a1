//! The server the harness runs when none is given: this workspace's `server-cli` with the
//! seed report's settings, built on the spot when the harness runs under cargo.
//!
//! `cargo run -p shutdown-harness` on a fresh clone builds only the harness; a new user must
//! still get the seed's experiment from that one command. Under cargo (`CARGO` is set) the
//! harness asks cargo to build `server-cli` with its own profile, which is a no-op when it is
//! up to date and otherwise makes sure the server measured is the code checked out.

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{bail, Context};

/// The seed's experiment: two workers, the app's 10 s shutdown hook, a free port.
pub fn command() -> anyhow::Result<Vec<String>> {
    let cli = locate()?;
    Ok(vec![
        cli.display().to_string(),
        "--workers".into(),
        "2".into(),
        "--demo-shutdown-delay".into(),
        "10".into(),
        "--port".into(),
        "{port}".into(),
    ])
}

/// Finds `server-cli`: built by cargo beside the harness when it runs under cargo, else
/// beside the harness's executable, else on `PATH`.
fn locate() -> anyhow::Result<PathBuf> {
    let exe = std::env::current_exe().context("cannot find the harness's own executable")?;
    let dir = exe
        .parent()
        .context("the harness's executable has no directory")?;
    let beside = dir.join("server-cli");
    if let Some(cargo) = std::env::var_os("CARGO") {
        if let Some(manifest) = workspace_manifest() {
            build_with_cargo(Path::new(&cargo), &manifest, dir)?;
        }
    }
    if beside.is_file() {
        return Ok(beside);
    }
    std::env::split_paths(&std::env::var_os("PATH").unwrap_or_default())
        .map(|d| d.join("server-cli"))
        .find(|p| p.is_file())
        .context(
            "no server command given and no server-cli found (beside the harness or on PATH); \
             run `cargo run -p shutdown-harness` from the workspace, or pass `-- COMMAND`",
        )
}

/// This workspace's `Cargo.toml`, when the source tree the harness was built from is here.
fn workspace_manifest() -> Option<PathBuf> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).parent()?;
    let manifest = root.join("Cargo.toml");
    (manifest.is_file() && root.join("server-cli/Cargo.toml").is_file()).then_some(manifest)
}

/// `cargo build -p server-cli` with the profile of the directory the harness runs from
/// (`target/debug` or `target/release`), its progress shown on stderr.
fn build_with_cargo(cargo: &Path, manifest: &Path, exe_dir: &Path) -> anyhow::Result<()> {
    let mut build = Command::new(cargo);
    build
        .args(["build", "-p", "server-cli", "--manifest-path"])
        .arg(manifest);
    if let Some(target_dir) = exe_dir.parent() {
        build.arg("--target-dir").arg(target_dir);
    }
    match exe_dir.file_name().and_then(|n| n.to_str()) {
        Some("debug") => {}
        Some("release") => {
            build.arg("--release");
        }
        // Another profile, or a layout cargo did not make: use what is there.
        _ => return Ok(()),
    }
    eprintln!("building server-cli (cargo build -p server-cli), the default server under test ...");
    let status = build
        .status()
        .with_context(|| format!("cannot run {}", cargo.display()))?;
    if !status.success() {
        bail!("cargo could not build server-cli ({status}); see its output above");
    }
    Ok(())
}
