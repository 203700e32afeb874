//! The admin listener (loopback by default): liveness at `/healthz` and readiness at `/readyz`.
//! Readiness means a configuration snapshot is loaded, the store answered the last poll, and
//! the node is not shutting down — what a load balancer needs to decide whether to send
//! traffic here.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use http::header::HeaderValue;
use http::{Method, Request, Response, StatusCode};

use crate::body::{Body, json_response};
use crate::error::{ErrorCode, GatewayError};
use crate::pipeline::Gateway;

/// Node conditions that readiness reports.
#[derive(Debug)]
pub struct Health {
    store_reachable: AtomicBool,
    shutting_down: AtomicBool,
    /// The last stored configuration version that could not be compiled (0: none).
    rejected_version: AtomicU64,
}

impl Default for Health {
    fn default() -> Self {
        Self {
            store_reachable: AtomicBool::new(true),
            shutting_down: AtomicBool::new(false),
            rejected_version: AtomicU64::new(0),
        }
    }
}

impl Health {
    pub fn set_store_reachable(&self, ok: bool) {
        self.store_reachable.store(ok, Ordering::Relaxed);
    }

    pub fn set_rejected_version(&self, version: u64) {
        self.rejected_version.store(version, Ordering::Relaxed);
    }

    pub fn set_shutting_down(&self) {
        self.shutting_down.store(true, Ordering::Relaxed);
    }
}

/// Answers one admin request.
pub async fn handle(
    gw: Arc<Gateway>,
    health: Arc<Health>,
    api: Arc<crate::manage::Api>,
    peer: std::net::SocketAddr,
    req: Request<hyper::body::Incoming>,
) -> Response<Body> {
    if req.uri().path().starts_with("/api/v1/")
        || req.uri().path() == crate::manage::MCP_METADATA_PATH
    {
        let req = req.map(|b| crate::body::limit_inbound(b, 1024 * 1024));
        return crate::manage::handle(api, peer.ip(), req).await;
    }
    let get = req.method() == Method::GET || req.method() == Method::HEAD;
    match (req.uri().path(), get) {
        ("/healthz", true) => json_response(StatusCode::OK, &serde_json::json!({"status": "ok"})),
        // The public keys upstreams verify identity assertions with.
        ("/.well-known/jwks.json", true) => json_response(StatusCode::OK, &gw.signer.jwks),
        ("/metrics", true) => {
            let fallbacks = gw.limits.fallbacks.load(Ordering::Relaxed);
            let text = gw.audit.metrics().render(gw.audit.stats(), fallbacks);
            let mut response = Response::new(crate::body::full(text));
            response.headers_mut().insert(
                http::header::CONTENT_TYPE,
                http::HeaderValue::from_static(
                    "application/openmetrics-text; version=1.0.0; charset=utf-8",
                ),
            );
            response
        }
        ("/readyz", true) => {
            let version = gw.snapshot.current().version;
            let rejected = match health.rejected_version.load(Ordering::Relaxed) {
                0 => None,
                v => Some(v),
            };
            let reason = if health.shutting_down.load(Ordering::Relaxed) {
                Some("shutting down")
            } else if !health.store_reachable.load(Ordering::Relaxed) {
                Some("the configuration store is unreachable; serving the last good snapshot")
            } else {
                None
            };
            let audit = gw.audit.stats();
            let mut body = serde_json::json!({
                "status": "ready",
                "config_version": version,
                "audit": {
                    "node": gw.audit.node(),
                    "sink_ok": audit.sink_ok.load(Ordering::Relaxed),
                    "journal_ok": audit.journal_ok.load(Ordering::Relaxed),
                    "queued": audit.queued.load(Ordering::Relaxed),
                    "spooled": audit.spooled.load(Ordering::Relaxed),
                    "written": audit.written.load(Ordering::Relaxed),
                    "dropped": audit.dropped.load(Ordering::Relaxed),
                },
            });
            if let Some(v) = rejected {
                body["rejected_config_version"] = v.into();
            }
            match reason {
                None => json_response(StatusCode::OK, &body),
                Some(reason) => {
                    body["status"] = "not_ready".into();
                    body["reason"] = reason.into();
                    json_response(StatusCode::SERVICE_UNAVAILABLE, &body)
                }
            }
        }
        ("/healthz" | "/readyz", false) => {
            GatewayError::new(ErrorCode::MethodNotAllowed, "use GET")
                .with_header(http::header::ALLOW, HeaderValue::from_static("GET, HEAD"))
                .into_response("")
        }
        _ => {
            GatewayError::new(ErrorCode::RouteNotFound, "no such admin endpoint").into_response("")
        }
    }
}
