//! The ASGI HTTP scope of a request, built on the loop thread (GIL held) from what hyper
//! parsed.

use axum::http::request::Parts;
use axum::http::Version;
use percent_encoding::percent_decode;
use pyo3::intern;
use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyDict, PyList, PyTuple};

/// The ASGI version and the HTTP spec version this server implements.
const ASGI_VERSION: &str = "3.0";
const SPEC_VERSION: &str = "2.4";

/// `{"version": "3.0", "spec_version": "2.4"}`.
pub(crate) fn asgi_versions<'py>(py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
    let asgi = PyDict::new(py);
    asgi.set_item(intern!(py, "version"), intern!(py, ASGI_VERSION))?;
    asgi.set_item(intern!(py, "spec_version"), intern!(py, SPEC_VERSION))?;
    Ok(asgi)
}

/// `(host, port)`, as ASGI wants addresses (the port an int).
fn address<'py>(
    py: Python<'py>,
    addr: Option<std::net::SocketAddr>,
) -> PyResult<Bound<'py, PyAny>> {
    match addr {
        Some(a) => Ok(PyTuple::new(
            py,
            [
                a.ip().to_string().into_pyobject(py)?.into_any(),
                a.port().into_pyobject(py)?.into_any(),
            ],
        )?
        .into_any()),
        None => Ok(py.None().into_bound(py)),
    }
}

/// The scope of one HTTP request.
pub(crate) fn http_scope<'py>(
    py: Python<'py>,
    head: &Parts,
    root_path: &str,
    state: Option<&Bound<'py, PyDict>>,
) -> PyResult<Bound<'py, PyDict>> {
    let scope = PyDict::new(py);
    scope.set_item(intern!(py, "type"), intern!(py, "http"))?;
    scope.set_item(intern!(py, "asgi"), asgi_versions(py)?)?;
    let http_version = match head.version {
        Version::HTTP_10 => "1.0",
        Version::HTTP_2 => "2",
        _ => "1.1",
    };
    scope.set_item(intern!(py, "http_version"), http_version)?;
    scope.set_item(intern!(py, "method"), head.method.as_str())?;
    let connection = head.extensions.get::<server_core::ConnectionInfo>();
    let tls = connection.is_some_and(|c| c.tls);
    scope.set_item(intern!(py, "scheme"), if tls { "https" } else { "http" })?;
    let raw_path = head.uri.path();
    let path = percent_decode(raw_path.as_bytes()).decode_utf8_lossy();
    scope.set_item(intern!(py, "path"), &*path)?;
    scope.set_item(
        intern!(py, "raw_path"),
        PyBytes::new(py, raw_path.as_bytes()),
    )?;
    scope.set_item(
        intern!(py, "query_string"),
        PyBytes::new(py, head.uri.query().unwrap_or("").as_bytes()),
    )?;
    scope.set_item(intern!(py, "root_path"), root_path)?;
    let headers = PyList::empty(py);
    if head.headers.get("host").is_none() {
        // HTTP/2 carries the host as :authority; ASGI apps look for `host`.
        if let Some(authority) = head.uri.authority() {
            headers.append((
                PyBytes::new(py, b"host"),
                PyBytes::new(py, authority.as_str().as_bytes()),
            ))?;
        }
    }
    for (name, value) in &head.headers {
        headers.append((
            PyBytes::new(py, name.as_str().as_bytes()),
            PyBytes::new(py, value.as_bytes()),
        ))?;
    }
    scope.set_item(intern!(py, "headers"), headers)?;
    scope.set_item(
        intern!(py, "client"),
        address(py, connection.and_then(|c| c.client))?,
    )?;
    scope.set_item(
        intern!(py, "server"),
        address(py, connection.and_then(|c| c.server))?,
    )?;
    if let Some(state) = state {
        scope.set_item(intern!(py, "state"), state.copy()?)?;
    }
    if let Some(certificate) = head.extensions.get::<server_core::ClientCertificate>() {
        let tls_extension = PyDict::new(py);
        tls_extension.set_item("client_cert_name", &*certificate.subject)?;
        tls_extension.set_item("client_cert_chain", PyList::empty(py))?;
        let extensions = PyDict::new(py);
        extensions.set_item("tls", tls_extension)?;
        scope.set_item(intern!(py, "extensions"), extensions)?;
    }
    Ok(scope)
}
