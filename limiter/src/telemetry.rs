//! Telemetry shared by both binaries (`portcullis` and `portcullis-limiter`): structured logs on
//! standard error, and — when an OTLP endpoint is configured — traces and log records
//! (audit and change events) exported over OTLP (gRPC or HTTP), with W3C trace context
//! taken from callers and passed on to upstreams and the limiter.

use std::time::Duration;

use opentelemetry::Context;
use opentelemetry::logs::AnyValue;
use opentelemetry::propagation::{Extractor, Injector, TextMapPropagator};
use opentelemetry::trace::TracerProvider as _;
use opentelemetry_otlp::WithExportConfig;
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::logs::SdkLoggerProvider;
use opentelemetry_sdk::propagation::TraceContextPropagator;
use opentelemetry_sdk::trace::{Sampler, SdkTracerProvider};
use tracing_subscriber::Layer as _;
use tracing_subscriber::layer::SubscriberExt as _;
use tracing_subscriber::util::SubscriberInitExt as _;

/// How to export telemetry (flags of `serve` on both binaries).
#[derive(Clone, Debug, clap::Args)]
pub struct TelemetrySettings {
    /// OTLP endpoint for traces and audit events, e.g. `http://collector:4317` (gRPC) or
    /// `http://collector:4318` (HTTP). Without it nothing is exported.
    #[arg(long, env = "OTEL_EXPORTER_OTLP_ENDPOINT")]
    pub otlp_endpoint: Option<String>,
    /// `grpc` or `http/protobuf`.
    #[arg(long, env = "OTEL_EXPORTER_OTLP_PROTOCOL", default_value = "grpc")]
    pub otlp_protocol: OtlpProtocol,
    /// The share of traces started here that are sampled (0.0 to 1.0); a caller's sampling
    /// decision in `traceparent` is followed.
    #[arg(long, env = "PORTCULLIS_TRACE_SAMPLE_RATIO", default_value_t = 1.0)]
    pub trace_sample_ratio: f64,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum OtlpProtocol {
    Grpc,
    #[value(name = "http/protobuf")]
    HttpProtobuf,
}

/// Running exporters; [`Telemetry::shutdown`] flushes them.
pub struct Telemetry {
    tracer: Option<SdkTracerProvider>,
    logger: Option<SdkLoggerProvider>,
}

/// Sets up logging (text or JSON on standard error, filtered by `PORTCULLIS_LOG` or
/// `default_filter`) and, with an endpoint, the OTLP exporters. Call within a Tokio runtime.
pub fn init(
    service: &'static str,
    json: bool,
    default_filter: &str,
    settings: Option<&TelemetrySettings>,
) -> anyhow::Result<Telemetry> {
    opentelemetry::global::set_text_map_propagator(TraceContextPropagator::new());
    let filter = tracing_subscriber::EnvFilter::try_from_env("PORTCULLIS_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default_filter));
    let fmt = tracing_subscriber::fmt::layer().with_writer(std::io::stderr);
    let fmt = if json {
        fmt.json().flatten_event(true).boxed()
    } else {
        fmt.boxed()
    };
    let mut telemetry = Telemetry {
        tracer: None,
        logger: None,
    };
    let otel = match settings.and_then(|s| s.otlp_endpoint.as_deref().map(|e| (s, e))) {
        Some((s, endpoint)) => {
            let resource = Resource::builder().with_service_name(service).build();
            let ratio = s.trace_sample_ratio.clamp(0.0, 1.0);
            let tracer = SdkTracerProvider::builder()
                .with_batch_exporter(span_exporter(endpoint, s.otlp_protocol)?)
                .with_sampler(Sampler::ParentBased(Box::new(Sampler::TraceIdRatioBased(
                    ratio,
                ))))
                .with_resource(resource.clone())
                .build();
            let logger = SdkLoggerProvider::builder()
                .with_batch_exporter(log_exporter(endpoint, s.otlp_protocol)?)
                .with_resource(resource)
                .build();
            opentelemetry::global::set_tracer_provider(tracer.clone());
            let layer = tracing_opentelemetry::layer().with_tracer(tracer.tracer(service));
            telemetry.tracer = Some(tracer);
            EVENTS.set(logger.clone()).ok();
            telemetry.logger = Some(logger);
            Some(layer)
        }
        None => None,
    };
    // One filter for both: per-layer filters lose spans in this combination.
    tracing_subscriber::registry()
        .with(filter)
        .with(otel)
        .with(fmt)
        .try_init()
        .map_err(|e| anyhow::anyhow!("cannot set up logging: {e}"))?;
    Ok(telemetry)
}

impl Telemetry {
    /// Exports what is still buffered.
    pub fn shutdown(self) {
        if let Some(tracer) = self.tracer {
            let _ = tracer.force_flush();
            let _ = tracer.shutdown_with_timeout(Duration::from_secs(5));
        }
        if let Some(logger) = self.logger {
            let _ = logger.force_flush();
            let _ = logger.shutdown_with_timeout(Duration::from_secs(5));
        }
    }
}

fn span_exporter(
    endpoint: &str,
    protocol: OtlpProtocol,
) -> anyhow::Result<opentelemetry_otlp::SpanExporter> {
    let builder = opentelemetry_otlp::SpanExporter::builder();
    Ok(match protocol {
        OtlpProtocol::Grpc => builder.with_tonic().with_endpoint(endpoint).build()?,
        OtlpProtocol::HttpProtobuf => builder
            .with_http()
            .with_endpoint(format!("{}/v1/traces", endpoint.trim_end_matches('/')))
            .build()?,
    })
}

fn log_exporter(
    endpoint: &str,
    protocol: OtlpProtocol,
) -> anyhow::Result<opentelemetry_otlp::LogExporter> {
    let builder = opentelemetry_otlp::LogExporter::builder();
    Ok(match protocol {
        OtlpProtocol::Grpc => builder.with_tonic().with_endpoint(endpoint).build()?,
        OtlpProtocol::HttpProtobuf => builder
            .with_http()
            .with_endpoint(format!("{}/v1/logs", endpoint.trim_end_matches('/')))
            .build()?,
    })
}

/// The provider audit and change events are exported through, once configured.
static EVENTS: std::sync::OnceLock<SdkLoggerProvider> = std::sync::OnceLock::new();

/// Whether events are exported (an OTLP endpoint is configured).
pub fn exporting() -> bool {
    EVENTS.get().is_some()
}

/// Exports one event (an audit or change record) as an OTLP log record: `body` is the record
/// as JSON, `attributes` its fields.
pub fn export_event(
    scope: &'static str,
    name: &'static str,
    body: &str,
    attributes: Vec<(String, AnyValue)>,
) {
    use opentelemetry::logs::{LogRecord as _, Logger as _, LoggerProvider as _};
    let Some(provider) = EVENTS.get() else { return };
    let logger = provider.logger(scope);
    let mut record = logger.create_log_record();
    record.set_event_name(name);
    record.set_severity_number(opentelemetry::logs::Severity::Info);
    record.set_body(body.to_owned().into());
    record.add_attributes(attributes);
    logger.emit(record);
}

/// The fields of a JSON object as log attributes, nested names joined with dots
/// (`who.client`); arrays as JSON text.
pub fn attributes(value: &serde_json::Value) -> Vec<(String, AnyValue)> {
    fn walk(prefix: &str, value: &serde_json::Value, out: &mut Vec<(String, AnyValue)>) {
        match value {
            serde_json::Value::Object(map) => {
                for (k, v) in map {
                    let key = if prefix.is_empty() {
                        k.clone()
                    } else {
                        format!("{prefix}.{k}")
                    };
                    walk(&key, v, out);
                }
            }
            serde_json::Value::String(s) => out.push((prefix.to_owned(), s.clone().into())),
            serde_json::Value::Bool(b) => out.push((prefix.to_owned(), (*b).into())),
            serde_json::Value::Number(n) => match n.as_i64() {
                Some(i) => out.push((prefix.to_owned(), i.into())),
                None => out.push((prefix.to_owned(), n.as_f64().unwrap_or(0.0).into())),
            },
            serde_json::Value::Array(_) => {
                out.push((prefix.to_owned(), value.to_string().into()));
            }
            serde_json::Value::Null => {}
        }
    }
    let mut out = Vec::new();
    walk("", value, &mut out);
    out
}

/// The trace context carried by `headers` (W3C `traceparent`/`tracestate`).
pub fn extract(headers: &http::HeaderMap) -> Context {
    struct Headers<'a>(&'a http::HeaderMap);
    impl Extractor for Headers<'_> {
        fn get(&self, key: &str) -> Option<&str> {
            self.0.get(key).and_then(|v| v.to_str().ok())
        }
        fn keys(&self) -> Vec<&str> {
            self.0.keys().map(|k| k.as_str()).collect()
        }
    }
    TraceContextPropagator::new().extract(&Headers(headers))
}

/// Writes `cx` into `headers` as W3C `traceparent`/`tracestate`.
pub fn inject(cx: &Context, headers: &mut http::HeaderMap) {
    struct Headers<'a>(&'a mut http::HeaderMap);
    impl Injector for Headers<'_> {
        fn set(&mut self, key: &str, value: String) {
            if value.is_empty() {
                return;
            }
            if let (Ok(name), Ok(value)) = (
                http::HeaderName::from_bytes(key.as_bytes()),
                http::HeaderValue::from_str(&value),
            ) {
                self.0.insert(name, value);
            }
        }
    }
    TraceContextPropagator::new().inject_context(cx, &mut Headers(headers));
}

/// The trace context carried in a message's map (a check's `trace_context`).
pub fn extract_map(map: &std::collections::HashMap<String, String>) -> Context {
    TraceContextPropagator::new().extract(map)
}

/// Writes `cx` into a message's map (a check's `trace_context`); nothing when there is no
/// trace.
pub fn inject_map(cx: &Context, map: &mut std::collections::HashMap<String, String>) {
    TraceContextPropagator::new().inject_context(cx, map);
    map.retain(|_, v| !v.is_empty());
}

#[cfg(test)]
mod tests {
    use opentelemetry::trace::TraceContextExt as _;

    #[test]
    fn trace_context_round_trips() {
        let mut headers = http::HeaderMap::new();
        headers.insert(
            "traceparent",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
                .parse()
                .unwrap(),
        );
        let cx = super::extract(&headers);
        let span = cx.span();
        let sc = span.span_context();
        assert!(sc.is_valid() && sc.is_remote());
        assert_eq!(
            sc.trace_id().to_string(),
            "4bf92f3577b34da6a3ce929d0e0e4736"
        );
        let mut out = http::HeaderMap::new();
        super::inject(&cx, &mut out);
        assert_eq!(out["traceparent"], headers["traceparent"]);
    }
}
