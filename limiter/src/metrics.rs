//! The limiter node's Prometheus metrics (`/metrics` on `--metrics-listen`): checks by result,
//! check latency, whether the store is reachable, and the catalogue version in force.

use std::sync::LazyLock;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct CheckLabels {
    /// `allowed`, `refused`, `invalid` (bad input or unknown policy) or `unavailable`.
    result: &'static str,
}

/// This process's limiter metrics.
pub struct Metrics {
    registry: Registry,
    checks: Family<CheckLabels, Counter>,
    duration: Histogram,
    pub store_up: Gauge,
    pub catalogue_version: Gauge,
}

/// The process-wide metrics (one limiter per process).
pub static METRICS: LazyLock<Metrics> = LazyLock::new(Metrics::new);

impl Metrics {
    fn new() -> Self {
        let mut registry = Registry::default();
        let checks = Family::<CheckLabels, Counter>::default();
        registry.register(
            "portcullis_limiter_checks",
            "Checks answered, by result",
            checks.clone(),
        );
        // 20 µs to about 0.3 s.
        let duration = Histogram::new(exponential_buckets(0.000_02, 2.0, 15));
        registry.register(
            "portcullis_limiter_check_duration_seconds",
            "Time to answer a check, counters included",
            duration.clone(),
        );
        let store_up = Gauge::default();
        registry.register(
            "portcullis_limiter_store_up",
            "1 while the counters and definitions store answers",
            store_up.clone(),
        );
        let catalogue_version = Gauge::default();
        registry.register(
            "portcullis_limiter_catalogue_version",
            "The version of the policies and overrides in force on this node",
            catalogue_version.clone(),
        );
        store_up.set(1);
        Self {
            registry,
            checks,
            duration,
            store_up,
            catalogue_version,
        }
    }

    /// Counts one answered check.
    pub fn check(&self, result: &'static str, seconds: f64) {
        self.checks.get_or_create(&CheckLabels { result }).inc();
        self.duration.observe(seconds);
    }

    /// The OpenMetrics text exposition.
    pub fn render(&self) -> String {
        let mut out = String::new();
        if let Err(e) = prometheus_client::encoding::text::encode(&mut out, &self.registry) {
            tracing::error!(error = %e, "cannot encode the metrics");
        }
        out
    }
}

/// Serves `/metrics` over plain HTTP on `listener` until the task is dropped.
pub async fn serve(listener: tokio::net::TcpListener) {
    use http_body_util::Full;
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            continue;
        };
        tokio::spawn(async move {
            let service = hyper::service::service_fn(
                |req: hyper::Request<hyper::body::Incoming>| async move {
                    let response = if req.uri().path() == "/metrics" {
                        hyper::Response::builder()
                            .header(
                                "content-type",
                                "application/openmetrics-text; version=1.0.0; charset=utf-8",
                            )
                            .body(Full::new(bytes::Bytes::from(METRICS.render())))
                    } else {
                        hyper::Response::builder()
                            .status(404)
                            .body(Full::new(bytes::Bytes::from_static(b"not found\n")))
                    };
                    Ok::<_, std::convert::Infallible>(response.expect("a static response is valid"))
                },
            );
            let _ = hyper::server::conn::http1::Builder::new()
                .serve_connection(hyper_util::rt::TokioIo::new(stream), service)
                .await;
        });
    }
}
