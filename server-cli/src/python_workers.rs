//! Python ASGI apps: which interpreter each worker execs, and how it finds the worker module.

use std::ffi::OsString;
use std::path::{Path, PathBuf};

use anyhow::Context;
use server_core::exec_worker::ExecWorker;

use crate::cli::{Cli, LifespanArg, LoopArg};

/// The extension module the interpreter imports, as cargo names its build output.
const MODULE_FILE: &str = "libzerodrop_worker.so";
/// Set to a built module's path to use it instead of the installed `zerodrop_worker`.
const MODULE_VARIABLE: &str = "ZERODROP_WORKER_MODULE";

/// What each worker runs: `python -c BOOTSTRAP app app_dir factory lifespan root_path loop`.
/// A Python it cannot use, or a module it cannot load, is one line and exit status 3 (the
/// supervisor then gives up instead of starting the worker again).
const BOOTSTRAP: &str = r#"
import os, sys
if sys.version_info < (3, 9):
    sys.stderr.write("error: the Python workers need Python 3.9 or newer; %s is %s\n"
                     % (sys.executable, sys.version.split()[0]))
    sys.exit(3)
path = os.environ.pop("ZERODROP_WORKER_MODULE", "")
try:
    if path:
        import importlib.util
        spec = importlib.util.spec_from_file_location("zerodrop_worker", path)
        worker = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(worker)
    else:
        import zerodrop_worker as worker
except Exception as e:
    sys.stderr.write("error: cannot load the Python workers' module into %s: %s\n"
                     % (sys.executable, e))
    sys.exit(3)
app, app_dir, factory, lifespan, root_path, loop = sys.argv[1:7]
sys.exit(worker.serve(app, app_dir, factory == "1", lifespan, root_path, loop))
"#;

/// Where the interpreter comes from, in the order a user expects.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum InterpreterSource {
    /// The activated virtualenv (`VIRTUAL_ENV`).
    ActiveVirtualenv(PathBuf),
    /// The virtualenv this binary is installed into (`<venv>/bin/server-cli`).
    InstalledInto(PathBuf),
    /// `python3` on `PATH`.
    Path(PathBuf),
}

impl InterpreterSource {
    /// The interpreter's path.
    pub fn python(&self) -> &Path {
        match self {
            InterpreterSource::ActiveVirtualenv(p)
            | InterpreterSource::InstalledInto(p)
            | InterpreterSource::Path(p) => p,
        }
    }
}

/// Chooses the interpreter: `VIRTUAL_ENV/bin/python`, else a `python` beside this binary
/// (a virtualenv's `bin`), else `python3` on `PATH`.
pub fn find_interpreter(
    virtual_env: Option<&Path>,
    own_dir: Option<&Path>,
    path: Option<&std::ffi::OsStr>,
) -> Option<InterpreterSource> {
    let runnable = |p: &Path| p.is_file();
    if let Some(venv) = virtual_env {
        let python = venv.join("bin").join("python");
        if runnable(&python) {
            return Some(InterpreterSource::ActiveVirtualenv(python));
        }
    }
    if let Some(dir) = own_dir {
        let python = dir.join("python");
        if runnable(&python)
            && dir
                .parent()
                .is_some_and(|venv| venv.join("pyvenv.cfg").is_file())
        {
            return Some(InterpreterSource::InstalledInto(python));
        }
    }
    std::env::split_paths(path?)
        .map(|dir| dir.join("python3"))
        .find(|p| runnable(p))
        .map(InterpreterSource::Path)
}

/// The worker program for `cli.app`.
pub fn exec_worker(cli: &Cli, app: &str) -> anyhow::Result<ExecWorker> {
    let own_dir = std::env::current_exe()
        .ok()
        .and_then(|exe| exe.parent().map(Path::to_path_buf));
    let source = find_interpreter(
        std::env::var_os("VIRTUAL_ENV").as_deref().map(Path::new),
        own_dir.as_deref(),
        std::env::var_os("PATH").as_deref(),
    )
    .context("no Python interpreter: activate a virtualenv, or put python3 on PATH")?;
    tracing::info!("Python workers: {}", source.python().display());
    let mut env = Vec::new();
    let built_module = own_dir
        .map(|dir| dir.join(MODULE_FILE))
        .filter(|m| m.is_file());
    if std::env::var_os(MODULE_VARIABLE).is_none() {
        if let Some(module) = built_module {
            env.push((OsString::from(MODULE_VARIABLE), module.into_os_string()));
        }
    }
    let app_dir = std::path::absolute(&cli.app_dir)
        .with_context(|| format!("bad --app-dir {}", cli.app_dir.display()))?;
    let lifespan = match cli.lifespan {
        LifespanArg::Auto => "auto",
        LifespanArg::On => "on",
        LifespanArg::Off => "off",
    };
    let event_loop = match cli.event_loop {
        LoopArg::Auto => "auto",
        LoopArg::Asyncio => "asyncio",
        LoopArg::Uvloop => "uvloop",
    };
    let python = source.python().as_os_str().to_os_string();
    let args = [
        python.clone(),
        "-c".into(),
        BOOTSTRAP.into(),
        app.into(),
        app_dir.into_os_string(),
        if cli.factory { "1" } else { "0" }.into(),
        lifespan.into(),
        cli.root_path.clone().into(),
        event_loop.into(),
    ];
    Ok(ExecWorker {
        program: PathBuf::from(python),
        args: args.into_iter().collect(),
        env,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A directory `name` under the temp dir with an executable-looking `bin/python`.
    fn venv(root: &Path, name: &str) -> PathBuf {
        let dir = root.join(name);
        std::fs::create_dir_all(dir.join("bin")).unwrap();
        std::fs::write(dir.join("bin").join("python"), "").unwrap();
        std::fs::write(dir.join("bin").join("python3"), "").unwrap();
        std::fs::write(dir.join("pyvenv.cfg"), "").unwrap();
        dir
    }

    #[test]
    fn the_active_virtualenv_wins_then_the_one_installed_into_then_path() {
        let root = std::env::temp_dir().join(format!("find-python-{}", std::process::id()));
        let (active, installed, on_path) = (
            venv(&root, "active"),
            venv(&root, "installed"),
            venv(&root, "path"),
        );
        let path = std::env::join_paths([on_path.join("bin")]).unwrap();
        let own = installed.join("bin");
        assert_eq!(
            find_interpreter(Some(&active), Some(&own), Some(&path)),
            Some(InterpreterSource::ActiveVirtualenv(
                active.join("bin/python")
            ))
        );
        assert_eq!(
            find_interpreter(None, Some(&own), Some(&path)),
            Some(InterpreterSource::InstalledInto(
                installed.join("bin/python")
            ))
        );
        // A binary outside a virtualenv (cargo's target directory): PATH.
        assert_eq!(
            find_interpreter(None, Some(&root), Some(&path)),
            Some(InterpreterSource::Path(on_path.join("bin/python3")))
        );
        // A VIRTUAL_ENV that has no interpreter is passed over.
        assert_eq!(
            find_interpreter(Some(&root.join("gone")), None, Some(&path)),
            Some(InterpreterSource::Path(on_path.join("bin/python3")))
        );
        assert_eq!(find_interpreter(None, None, None), None);
        let _ = std::fs::remove_dir_all(&root);
    }
}
