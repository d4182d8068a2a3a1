//! Finding the app: `module:attribute` imported from `--app-dir`, as uvicorn does.

use pyo3::prelude::*;
use pyo3::types::PyList;

/// Exit status of a worker whose app cannot start (it does not import, is not callable,
/// its lifespan startup failed): the supervisor gives up at once instead of respawning.
pub(crate) const EXIT_APP_CANNOT_START: i32 = server_core::EXIT_APP_CANNOT_START;

/// What the command line says about the app.
#[derive(Debug, Clone)]
pub(crate) struct Options {
    /// `module:attribute`.
    pub(crate) spec: String,
    /// Put first on `sys.path`.
    pub(crate) app_dir: String,
    /// The attribute is a factory to call for the app.
    pub(crate) factory: bool,
    /// Whether to run the lifespan protocol.
    pub(crate) lifespan: crate::lifespan::Mode,
    /// The scope's `root_path`.
    pub(crate) root_path: String,
    /// `auto`, `asyncio` or `uvloop`.
    pub(crate) loop_kind: String,
}

/// The app, imported.
pub(crate) struct Loaded {
    pub(crate) app: Py<PyAny>,
    pub(crate) options: Options,
}

/// Imports the app; the error is the one line to log.
pub(crate) fn load(py: Python<'_>, options: &Options) -> Result<Loaded, String> {
    let sys = py.import("sys").map_err(|e| e.to_string())?;
    log_interpreter(&sys);
    let (module_name, attribute) = options.spec.split_once(':').ok_or_else(|| {
        format!(
            "Error loading ASGI app. Import string \"{}\" must be in format \"<module>:<attribute>\".",
            options.spec
        )
    })?;
    let path = sys.getattr("path").map_err(|e| e.to_string())?;
    let path = path.cast::<PyList>().map_err(|e| e.to_string())?;
    path.insert(0, &options.app_dir)
        .map_err(|e| e.to_string())?;
    let module = py.import(module_name).map_err(|e| {
        let not_found = e.is_instance_of::<pyo3::exceptions::PyModuleNotFoundError>(py)
            && e.value(py)
                .getattr("name")
                .and_then(|n| n.extract::<String>())
                .is_ok_and(|n| n == module_name);
        if not_found {
            format!("Error loading ASGI app. Could not import module \"{module_name}\".")
        } else {
            format!(
                "Error loading ASGI app: importing \"{module_name}\" raised {}",
                one_line(py, &e)
            )
        }
    })?;
    let mut app = module.into_any();
    for part in attribute.split('.') {
        app = app.getattr(part).map_err(|_| {
            format!(
                "Error loading ASGI app. Attribute \"{attribute}\" not found in module \"{module_name}\"."
            )
        })?;
    }
    if options.factory {
        app = app.call0().map_err(|e| {
            format!(
                "Error loading ASGI app factory \"{}\": {}",
                options.spec,
                one_line(py, &e)
            )
        })?;
    }
    if !app.is_callable() {
        return Err(format!(
            "Error loading ASGI app. \"{}\" is not callable.",
            options.spec
        ));
    }
    Ok(Loaded {
        app: app.unbind(),
        options: options.clone(),
    })
}

/// `TypeName: message`, for a one-line error.
pub(crate) fn one_line(py: Python<'_>, error: &PyErr) -> String {
    let name = error
        .get_type(py)
        .name()
        .map(|n| n.to_string())
        .unwrap_or_else(|_| "Exception".into());
    format!("{name}: {}", error.value(py))
}

/// The interpreter's version and path, logged once per worker.
fn log_interpreter(sys: &Bound<'_, PyModule>) {
    let version = sys
        .getattr("version")
        .and_then(|v| v.extract::<String>())
        .unwrap_or_default();
    let version = version.split_whitespace().next().unwrap_or("").to_string();
    let executable = sys
        .getattr("executable")
        .and_then(|v| v.extract::<String>())
        .unwrap_or_default();
    let prefix = sys
        .getattr("prefix")
        .and_then(|v| v.extract::<String>())
        .unwrap_or_default();
    tracing::info!("Python {version} at {executable} (prefix {prefix})");
}
