//! The per-request wrapper around the application: `Connection: close` while draining,
//! the readiness route, the request quota, the connection's activity, the access log line.

use std::convert::Infallible;
use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{ready, Context, Poll};

use axum::body::Body;
use axum::routing::future::RouteFuture;
use axum::Router;
use hyper::body::Incoming;
use hyper::header::{HeaderValue, CONNECTION};
use hyper::{Method, Request, Response, StatusCode, Uri, Version};
use tokio_util::sync::CancellationToken;
use tower_service::Service;

use super::activity::Activity;
use super::reporter::RequestQuota;
use crate::metrics::record;
use crate::tls::ClientCertificate;

/// Serves one connection's requests with the application.
#[derive(Clone)]
pub(crate) struct WorkerService {
    /// The application (cheap to clone: an `Arc` inside).
    pub(crate) router: Router,
    /// Cancelled when the worker starts draining.
    pub(crate) draining: CancellationToken,
    /// The client, for the access log.
    pub(crate) peer: super::listener::Peer,
    /// Whether to write an access log line per request.
    pub(crate) access_log: bool,
    /// The worker's request quota, when it has one.
    pub(crate) quota: Option<Arc<RequestQuota>>,
    /// The readiness route, and the token that turns it to 503 before a stop.
    pub(crate) readiness: Option<(Arc<str>, CancellationToken)>,
    /// Requests in flight and last activity of this connection (its idle timer reads it).
    pub(crate) activity: Arc<Activity>,
    /// The client's certificate on an mTLS connection, given to every request.
    pub(crate) client_certificate: Option<ClientCertificate>,
    /// Who is at each end, for apps that report it (the ASGI scope's `client`, `server`).
    pub(crate) connection: crate::ConnectionInfo,
}

impl WorkerService {
    /// The same, with the client certificate of the connection's TLS handshake.
    pub(crate) fn with_client_certificate(mut self, client: Option<ClientCertificate>) -> Self {
        self.client_certificate = client;
        self
    }
}

pin_project_lite::pin_project! {
    /// The response of one request, finished by [`WorkerService`]'s bookkeeping. A plain
    /// pinned struct rather than a boxed future: nothing is allocated per request here.
    /// If it is dropped before it is ready (the connection went away), the request no
    /// longer counts as in flight.
    pub(crate) struct ResponseFuture {
        #[pin]
        inner: Answer,
        version: Version,
        draining: CancellationToken,
        activity: Arc<Activity>,
        access: Option<(super::listener::Peer, Method, Uri)>,
        // For the metrics: the method's counter and when the request arrived.
        method: u8,
        started: Option<std::time::Instant>,
        // Set when the response (and with it the in-flight count) went to the body.
        answered: bool,
    }

    impl PinnedDrop for ResponseFuture {
        fn drop(this: Pin<&mut Self>) {
            if !this.answered {
                this.activity.request_finished();
            }
        }
    }
}

pin_project_lite::pin_project! {
    /// Who answers: the application, or the readiness route turned off.
    #[project = AnswerProjection]
    enum Answer {
        App { #[pin] future: RouteFuture<Infallible> },
        NotReady,
    }
}

/// A response body that tells the connection's [`Activity`] when it is done (dropped by
/// hyper once written, or with the connection). Until then the request counts as in
/// flight, so a slow download is never taken for an idle connection.
pub(crate) struct TrackedBody {
    inner: Body,
    activity: Arc<Activity>,
}

impl Drop for TrackedBody {
    fn drop(&mut self) {
        self.activity.request_finished();
    }
}

impl hyper::body::Body for TrackedBody {
    type Data = bytes::Bytes;
    type Error = axum::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<hyper::body::Frame<Self::Data>, Self::Error>>> {
        Pin::new(&mut self.inner).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> hyper::body::SizeHint {
        self.inner.size_hint()
    }
}

impl hyper::service::Service<Request<Incoming>> for WorkerService {
    type Response = Response<TrackedBody>;
    type Error = Infallible;
    type Future = ResponseFuture;

    fn call(&self, mut request: Request<Incoming>) -> Self::Future {
        if let Some(client) = &self.client_certificate {
            request.extensions_mut().insert(client.clone());
        }
        request.extensions_mut().insert(self.connection);
        let version = request.version();
        let started = record::request_clock();
        let method = record::method_index(request.method());
        self.activity.request_started(version == Version::HTTP_2);
        if let Some(quota) = &self.quota {
            quota.count();
        }
        let access = self
            .access_log
            .then(|| (self.peer, request.method().clone(), request.uri().clone()));
        let not_ready = match &self.readiness {
            Some((path, unready)) if request.uri().path() == &**path => {
                unready.is_cancelled() || self.draining.is_cancelled()
            }
            _ => false,
        };
        let inner = if not_ready {
            Answer::NotReady
        } else {
            Answer::App {
                future: self.router.clone().call(request.map(Body::new)),
            }
        };
        ResponseFuture {
            inner,
            version,
            draining: self.draining.clone(),
            activity: Arc::clone(&self.activity),
            access,
            method,
            started,
            answered: false,
        }
    }
}

impl Future for ResponseFuture {
    type Output = Result<Response<TrackedBody>, Infallible>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        let mut response = match this.inner.project() {
            AnswerProjection::App { future } => {
                // A panicking handler costs its request a 500, not the connection or the
                // worker. The future is not polled again after this.
                match std::panic::catch_unwind(AssertUnwindSafe(|| future.poll(cx))) {
                    Ok(poll) => match ready!(poll) {
                        Ok(response) => response,
                    },
                    Err(_) => {
                        tracing::error!("a request handler panicked; answering 500");
                        Response::builder()
                            .status(StatusCode::INTERNAL_SERVER_ERROR)
                            .body(Body::from("internal server error"))
                            .unwrap_or_default()
                    }
                }
            }
            // Load balancers take the worker out of rotation; traffic still flows.
            AnswerProjection::NotReady => Response::builder()
                .status(StatusCode::SERVICE_UNAVAILABLE)
                .body(Body::from("shutting down"))
                .unwrap_or_default(),
        };
        // Decided when the response is ready, not when the request arrived: any response
        // written during a drain tells the client to go elsewhere for its next request,
        // so the connection closes after it and no request races with the close. Not a
        // 101: its `Connection: upgrade` is the upgrade (the app then ends the upgraded
        // connection itself, e.g. with a WebSocket close frame, seeing the drain).
        if this.draining.is_cancelled()
            && *this.version < Version::HTTP_2
            && response.status() != StatusCode::SWITCHING_PROTOCOLS
        {
            response
                .headers_mut()
                .insert(CONNECTION, HeaderValue::from_static("close"));
        }
        record::request_answered(*this.method, response.status().as_u16(), *this.started);
        if response.status() == StatusCode::SWITCHING_PROTOCOLS {
            this.activity.upgraded();
        }
        if let Some((peer, method, uri)) = this.access.take() {
            let status = response.status();
            tracing::info!(
                "{peer} - \"{method} {uri} {:?}\" {} {}",
                this.version,
                status.as_u16(),
                status.canonical_reason().unwrap_or("")
            );
        }
        let activity = Arc::clone(this.activity);
        *this.answered = true;
        Poll::Ready(Ok(response.map(|inner| TrackedBody { inner, activity })))
    }
}
