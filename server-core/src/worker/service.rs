//! The per-request wrapper around the application: `Connection: close` while draining,
//! and the access log line.

use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;

use axum::body::Body;
use axum::Router;
use hyper::body::Incoming;
use hyper::header::{HeaderValue, CONNECTION};
use hyper::{Request, Response, StatusCode, Version};
use tokio_util::sync::CancellationToken;
use tower_service::Service;

use super::reporter::RequestQuota;
use std::sync::Arc;

/// Serves one connection's requests with the application.
#[derive(Clone)]
pub(crate) struct WorkerService {
    /// The application (cheap to clone: an `Arc` inside).
    pub(crate) router: Router,
    /// Cancelled when the worker starts draining.
    pub(crate) draining: CancellationToken,
    /// The client, for the access log.
    pub(crate) peer: String,
    /// Whether to write an access log line per request.
    pub(crate) access_log: bool,
    /// The worker's request quota, when it has one.
    pub(crate) quota: Option<Arc<RequestQuota>>,
    /// The readiness route, and the token that turns it to 503 before a stop.
    pub(crate) readiness: Option<(Arc<str>, CancellationToken)>,
}

impl hyper::service::Service<Request<Incoming>> for WorkerService {
    type Response = Response<Body>;
    type Error = Infallible;
    type Future = Pin<Box<dyn Future<Output = Result<Response<Body>, Infallible>> + Send>>;

    fn call(&self, request: Request<Incoming>) -> Self::Future {
        if let Some(quota) = &self.quota {
            quota.count();
        }
        let version = request.version();
        let access = self
            .access_log
            .then(|| (request.method().clone(), request.uri().clone()));
        let draining = self.draining.clone();
        let peer = self.access_log.then(|| self.peer.clone());
        let not_ready = match &self.readiness {
            Some((path, unready)) if request.uri().path() == &**path => {
                unready.is_cancelled() || draining.is_cancelled()
            }
            _ => false,
        };
        let response = (!not_ready).then(|| self.router.clone().call(request.map(Body::new)));
        Box::pin(async move {
            let mut response = match response {
                Some(response) => match response.await {
                    Ok(response) => response,
                },
                // Load balancers take the worker out of rotation; traffic still flows.
                None => Response::builder()
                    .status(StatusCode::SERVICE_UNAVAILABLE)
                    .body(Body::from("shutting down"))
                    .unwrap_or_default(),
            };
            // Decided when the response is ready, not when the request arrived: any response
            // written during a drain tells the client to go elsewhere for its next request,
            // so the connection closes after it and no request races with the close.
            if draining.is_cancelled() && version < Version::HTTP_2 {
                response
                    .headers_mut()
                    .insert(CONNECTION, HeaderValue::from_static("close"));
            }
            if let (Some((method, uri)), Some(peer)) = (access, peer) {
                let status = response.status();
                tracing::info!(
                    "{peer} - \"{method} {uri} {version:?}\" {} {}",
                    status.as_u16(),
                    status.canonical_reason().unwrap_or("")
                );
            }
            Ok(response)
        })
    }
}
