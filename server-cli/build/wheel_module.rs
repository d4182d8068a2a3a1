//! Puts the ASGI workers' extension module where the Python package's build finds it.
//!
//! maturin packages a crate's binaries; the extension module is server-asgi's cdylib, which
//! cargo builds in the same build because the `python-package` feature depends on that crate
//! (cargo builds every crate type of a dependency's library). maturin takes files from this
//! crate's `OUT_DIR` (`pyproject.toml`, `from = "out-dir"`), so a link there names the
//! cdylib by the file name CPython imports (`zerodrop_worker.abi3.so`) and maturin reads the
//! file once the build is done.

use std::path::{Path, PathBuf};

/// The name the wheel gives the module: abi3, so every CPython from 3.9 on imports it.
const WHEEL_NAME: &str = "zerodrop_worker.abi3.so";
/// The name cargo gives server-asgi's cdylib among the profile's dependencies.
const CARGO_NAME: &str = "libzerodrop_worker.so";

/// Links `OUT_DIR/zerodrop_worker.abi3.so` to the cdylib when the Python package is built.
pub fn link_for_the_wheel() {
    if std::env::var_os("CARGO_FEATURE_PYTHON_PACKAGE").is_none() {
        return;
    }
    let out_dir = PathBuf::from(std::env::var("OUT_DIR").unwrap_or_default());
    // OUT_DIR is <profile dir>/build/server-cli-<hash>/out; dependencies are in <profile dir>/deps.
    let Some(profile_dir) = out_dir.ancestors().nth(3) else {
        println!(
            "cargo:warning=server-cli: unexpected OUT_DIR {}",
            out_dir.display()
        );
        return;
    };
    let cdylib = profile_dir.join("deps").join(CARGO_NAME);
    let link = out_dir.join(WHEEL_NAME);
    if let Err(e) = replace_link(&cdylib, &link) {
        println!(
            "cargo:warning=server-cli: cannot link {}: {e}",
            link.display()
        );
    }
}

/// Makes `link` a symbolic link to `target`, replacing an earlier one.
fn replace_link(target: &Path, link: &Path) -> std::io::Result<()> {
    match std::fs::remove_file(link) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(e),
        _ => {}
    }
    std::os::unix::fs::symlink(target, link)
}
