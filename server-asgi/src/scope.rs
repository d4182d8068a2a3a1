//! The ASGI HTTP scope of a request, built on the loop thread (GIL held) from what hyper
//! parsed.

use std::cell::RefCell;
use std::collections::HashMap;
use std::net::IpAddr;

use axum::http::request::Parts;
use axum::http::Version;
use percent_encoding::percent_decode;
use pyo3::intern;
use pyo3::prelude::*;
use pyo3::sync::PyOnceLock;
use pyo3::types::{PyBytes, PyDict, PyList, PyString, PyTuple};

/// The ASGI version and the HTTP spec version this server implements.
const ASGI_VERSION: &str = "3.0";
const SPEC_VERSION: &str = "2.4";

/// `{"version": "3.0", "spec_version": "2.4"}`: a copy for each scope (an app may change
/// its own), made from one built once.
pub(crate) fn asgi_versions<'py>(py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
    static ASGI: PyOnceLock<Py<PyDict>> = PyOnceLock::new();
    ASGI.get_or_try_init(py, || {
        let asgi = PyDict::new(py);
        asgi.set_item(intern!(py, "version"), intern!(py, ASGI_VERSION))?;
        asgi.set_item(intern!(py, "spec_version"), intern!(py, SPEC_VERSION))?;
        Ok::<_, PyErr>(asgi.unbind())
    })?
    .bind(py)
    .copy()
}

/// How many hosts [`HOSTS`] keeps before it starts again: far more than the clients a
/// worker behind a load balancer sees, and a bound for one that faces the internet.
const HOSTS_KEPT: usize = 1024;

thread_local! {
    /// The `host` strings of the addresses scopes were built with (the loop thread's own):
    /// formatting an IP address cost 1.3k instructions, twice per request (client and
    /// server), of the 69k a keep-alive request costs (callgrind), and the same few
    /// addresses come back request after request.
    static HOSTS: RefCell<HashMap<IpAddr, Py<PyString>>> = RefCell::new(HashMap::new());
}

/// The host of `ip` as a Python string, formatted once.
fn host<'py>(py: Python<'py>, ip: IpAddr) -> Bound<'py, PyString> {
    HOSTS.with(|hosts| {
        let mut hosts = hosts.borrow_mut();
        if let Some(host) = hosts.get(&ip) {
            return host.bind(py).clone();
        }
        if hosts.len() >= HOSTS_KEPT {
            hosts.clear();
        }
        let host = PyString::new(py, &ip.to_string());
        hosts.insert(ip, host.clone().unbind());
        host
    })
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
                host(py, a.ip()).into_any(),
                a.port().into_pyobject(py)?.into_any(),
            ],
        )?
        .into_any()),
        None => Ok(py.None().into_bound(py)),
    }
}

/// The keys every HTTP scope has, in their order, with the values that do not change
/// from one request to the next; a request's scope starts as a copy of it. Copying a dict
/// of the final size cost a fraction of inserting 12 keys into an empty one, which grows
/// its table twice on the way (callgrind: building the scope was 8k of the 59k
/// instructions a keep-alive request costs the plain app).
static HTTP_SCOPE: PyOnceLock<Py<PyDict>> = PyOnceLock::new();

/// The template of [`HTTP_SCOPE`]: the per-request keys hold `None` until set.
fn http_scope_template(py: Python<'_>) -> PyResult<Bound<'_, PyDict>> {
    let scope = PyDict::new(py);
    scope.set_item(intern!(py, "type"), intern!(py, "http"))?;
    for key in [
        intern!(py, "asgi"),
        intern!(py, "http_version"),
        intern!(py, "method"),
        intern!(py, "scheme"),
        intern!(py, "path"),
        intern!(py, "raw_path"),
        intern!(py, "query_string"),
        intern!(py, "root_path"),
        intern!(py, "headers"),
        intern!(py, "client"),
        intern!(py, "server"),
    ] {
        scope.set_item(key, py.None())?;
    }
    Ok(scope)
}

/// A new scope with every key of an HTTP scope, from the template.
fn new_http_scope(py: Python<'_>) -> PyResult<Bound<'_, PyDict>> {
    HTTP_SCOPE
        .get_or_try_init(py, || http_scope_template(py).map(Bound::unbind))?
        .bind(py)
        .copy()
}

/// The scope of one HTTP request.
pub(crate) fn http_scope<'py>(
    py: Python<'py>,
    head: &Parts,
    root_path: &str,
    state: Option<&Bound<'py, PyDict>>,
) -> PyResult<Bound<'py, PyDict>> {
    let scope = new_http_scope(py)?;
    scope.set_item(intern!(py, "asgi"), asgi_versions(py)?)?;
    let http_version = match head.version {
        Version::HTTP_10 => intern!(py, "1.0"),
        Version::HTTP_2 => intern!(py, "2"),
        _ => intern!(py, "1.1"),
    };
    scope.set_item(intern!(py, "http_version"), http_version)?;
    scope.set_item(intern!(py, "method"), head.method.as_str())?;
    let connection = head.extensions.get::<server_core::ConnectionInfo>();
    let tls = connection.is_some_and(|c| c.tls);
    let scheme = if tls {
        intern!(py, "https")
    } else {
        intern!(py, "http")
    };
    scope.set_item(intern!(py, "scheme"), scheme)?;
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
