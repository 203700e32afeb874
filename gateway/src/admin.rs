//! The admin listener (loopback by default): liveness at `/healthz` and readiness at `/readyz`.
//! Readiness means a configuration snapshot is loaded, the store answered the last poll, and
//! the node is not shutting down — what a load balancer needs to decide whether to send
//! traffic here.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use bytes::Bytes;
use http::header::{CONTENT_TYPE, HeaderValue};
use http::{Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};

use crate::body::Body;
use crate::error::{ErrorCode, GatewayError};
use crate::pipeline::Gateway;

/// Node conditions that readiness reports.
#[derive(Debug)]
pub struct Health {
    store_reachable: AtomicBool,
    shutting_down: AtomicBool,
}

impl Default for Health {
    fn default() -> Self {
        Self {
            store_reachable: AtomicBool::new(true),
            shutting_down: AtomicBool::new(false),
        }
    }
}

impl Health {
    pub fn set_store_reachable(&self, ok: bool) {
        self.store_reachable.store(ok, Ordering::Relaxed);
    }

    pub fn set_shutting_down(&self) {
        self.shutting_down.store(true, Ordering::Relaxed);
    }
}

/// Answers one admin request.
pub async fn handle<B>(gw: Arc<Gateway>, health: Arc<Health>, req: Request<B>) -> Response<Body> {
    let get = req.method() == Method::GET || req.method() == Method::HEAD;
    match (req.uri().path(), get) {
        ("/healthz", true) => json(StatusCode::OK, serde_json::json!({"status": "ok"})),
        ("/readyz", true) => {
            let version = gw.snapshot.current().version;
            let reason = if health.shutting_down.load(Ordering::Relaxed) {
                Some("shutting down")
            } else if !health.store_reachable.load(Ordering::Relaxed) {
                Some("the configuration store is unreachable; serving the last good snapshot")
            } else {
                None
            };
            match reason {
                None => json(
                    StatusCode::OK,
                    serde_json::json!({"status": "ready", "config_version": version}),
                ),
                Some(reason) => json(
                    StatusCode::SERVICE_UNAVAILABLE,
                    serde_json::json!({"status": "not_ready", "reason": reason, "config_version": version}),
                ),
            }
        }
        ("/healthz" | "/readyz", false) => {
            let mut e = GatewayError::new(ErrorCode::MethodNotAllowed, "use GET");
            e.allow = Some(HeaderValue::from_static("GET, HEAD"));
            e.into_response("")
        }
        _ => {
            GatewayError::new(ErrorCode::RouteNotFound, "no such admin endpoint").into_response("")
        }
    }
}

fn json(status: StatusCode, value: serde_json::Value) -> Response<Body> {
    let mut response = Response::new(
        Full::new(Bytes::from(value.to_string()))
            .map_err(|never| match never {})
            .boxed(),
    );
    *response.status_mut() = status;
    response
        .headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    response
}
