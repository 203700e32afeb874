//! One trace across gateway, limiter and upstream, and the audit event as an OTLP log record:
//! a real OTLP receiver (the collector's gRPC trace and logs services) in the test, a gateway
//! and a limiter process exporting to it, and an upstream that shows what trace context it got.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use opentelemetry_proto::tonic::collector::logs::v1::logs_service_server::{
    LogsService, LogsServiceServer,
};
use opentelemetry_proto::tonic::collector::logs::v1::{
    ExportLogsServiceRequest, ExportLogsServiceResponse,
};
use opentelemetry_proto::tonic::collector::trace::v1::trace_service_server::{
    TraceService, TraceServiceServer,
};
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use opentelemetry_proto::tonic::common::v1::any_value::Value;
use portcullis_cluster_tests::*;

/// What the receiver got: (service name, span) and log records.
#[derive(Clone, Default)]
struct Received {
    spans: Arc<Mutex<Vec<(String, opentelemetry_proto::tonic::trace::v1::Span)>>>,
    logs: Arc<Mutex<Vec<opentelemetry_proto::tonic::logs::v1::LogRecord>>>,
}

fn service_name(resource: Option<&opentelemetry_proto::tonic::resource::v1::Resource>) -> String {
    resource
        .into_iter()
        .flat_map(|r| &r.attributes)
        .find(|a| a.key == "service.name")
        .and_then(|a| a.value.as_ref()?.value.as_ref())
        .map(text)
        .unwrap_or_default()
}

#[tonic::async_trait]
impl TraceService for Received {
    async fn export(
        &self,
        request: tonic::Request<ExportTraceServiceRequest>,
    ) -> Result<tonic::Response<ExportTraceServiceResponse>, tonic::Status> {
        let mut spans = self.spans.lock().unwrap();
        for rs in request.into_inner().resource_spans {
            let service = service_name(rs.resource.as_ref());
            for ss in rs.scope_spans {
                for span in ss.spans {
                    spans.push((service.clone(), span));
                }
            }
        }
        Ok(tonic::Response::new(ExportTraceServiceResponse::default()))
    }
}

#[tonic::async_trait]
impl LogsService for Received {
    async fn export(
        &self,
        request: tonic::Request<ExportLogsServiceRequest>,
    ) -> Result<tonic::Response<ExportLogsServiceResponse>, tonic::Status> {
        let mut logs = self.logs.lock().unwrap();
        for rl in request.into_inner().resource_logs {
            for sl in rl.scope_logs {
                logs.extend(sl.log_records);
            }
        }
        Ok(tonic::Response::new(ExportLogsServiceResponse::default()))
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn attribute(
    record: &opentelemetry_proto::tonic::logs::v1::LogRecord,
    key: &str,
) -> Option<String> {
    record
        .attributes
        .iter()
        .find(|a| a.key == key)
        .and_then(|a| a.value.as_ref()?.value.as_ref())
        .map(text)
}

/// An attribute value as text.
fn text(value: &Value) -> String {
    match value {
        Value::StringValue(s) => s.clone(),
        Value::IntValue(i) => i.to_string(),
        Value::BoolValue(b) => b.to_string(),
        Value::DoubleValue(d) => d.to_string(),
        Value::ArrayValue(_)
        | Value::KvlistValue(_)
        | Value::BytesValue(_)
        | Value::StringValueStrindex(_) => format!("{value:?}"),
    }
}

#[tokio::test]
async fn one_trace_crosses_gateway_limiter_and_upstream() {
    let (Some(redis), Some(pg)) = (
        service("PORTCULLIS_TEST_REDIS_URL"),
        service("PORTCULLIS_TEST_POSTGRES_URL"),
    ) else {
        return;
    };
    let received = Received::default();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let otlp = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(TraceServiceServer::new(received.clone()))
            .add_service(LogsServiceServer::new(received.clone()))
            .serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(listener)),
    );

    let db = Database::create(&pg).await;
    let dir = tempfile::tempdir().unwrap();
    let tokens = Tokens::new(dir.path());
    let seed = dir.path().join("seed.yaml");
    std::fs::write(
        &seed,
        "policies:\n  - name: cap\n    limits:\n      - {name: daily, scope: client, count: 1000, window: day}\n",
    )
    .unwrap();
    let limiter = Limiter::start(
        &tokens,
        &redis,
        &prefix(),
        &seed,
        &["--otlp-endpoint", &otlp],
    );
    let (up, heads) = upstream().await;
    let secret = "telemetry-test-token-secret-0123456789abcdef";
    let token = configure(
        &db.url,
        secret,
        &format!(
            "collections:\n  - id: traced\n    base_path: /traced\n    quota_policy: cap\n    upstreams: {{ sandbox: \"http://{up}\" }}\n    operations:\n      - {{ id: get, methods: [GET], path: \"/items/{{id}}\" }}\nclients:\n  - id: acme\n    partner: acme\n    profiles:\n      - {{ id: acme-sbx, environment: sandbox, collections: [traced] }}\n"
        ),
        "acme",
        "acme-sbx",
    );
    let gateway = Gateway::start(
        &db.url,
        secret,
        &[
            "--limiter",
            &limiter.url,
            "--limiter-token-file",
            tokens.check_file.to_str().unwrap(),
            "--limiter-timeout",
            "5s",
            "--otlp-endpoint",
            &otlp,
        ],
    );

    // The caller starts the trace.
    let trace = "4bf92f3577b34da6a3ce929d0e0e4736";
    let response = reqwest::Client::new()
        .get(format!("{}/traced/items/7", gateway.url))
        .bearer_auth(&token)
        .header("traceparent", format!("00-{trace}-00f067aa0ba902b7-01"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let request_id = response.headers()["x-request-id"]
        .to_str()
        .unwrap()
        .to_owned();

    // The upstream got the same trace, with the gateway's upstream span as parent.
    let head = heads.lock().unwrap().last().cloned().unwrap();
    let traceparent = head
        .lines()
        .find_map(|l| l.strip_prefix("traceparent: "))
        .expect("the upstream got a traceparent")
        .to_owned();
    assert!(
        traceparent.starts_with(&format!("00-{trace}-")),
        "{traceparent}"
    );
    assert!(
        !traceparent.contains("00f067aa0ba902b7"),
        "the gateway's own span is the parent"
    );
    let upstream_parent = traceparent.split('-').nth(2).unwrap().to_owned();

    let mut found = None;
    for _ in 0..100 {
        {
            let spans = received.spans.lock().unwrap();
            let ours: Vec<_> = spans
                .iter()
                .filter(|(_, s)| hex(&s.trace_id) == trace)
                .collect();
            let named = |service: &str, name: &str| {
                ours.iter()
                    .find(|(svc, s)| svc == service && s.name == name)
                    .map(|(_, s)| s.clone())
            };
            let logs = received.logs.lock().unwrap();
            let audit = logs
                .iter()
                .find(|r| attribute(r, "request_id").as_deref() == Some(&request_id))
                .cloned();
            if let (Some(root), Some(auth), Some(check), Some(up), Some(remote), Some(audit)) = (
                named("portcullis", "GET /traced/items/{id}"),
                named("portcullis", "authenticate"),
                named("portcullis", "limiter.check"),
                named("portcullis", "upstream"),
                named("portcullis-limiter", "limiter.check"),
                audit,
            ) {
                found = Some((root, auth, check, up, remote, audit));
            }
        }
        if found.is_some() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let (root, auth, check, up, remote, audit) = found.unwrap_or_else(|| {
        let spans = received.spans.lock().unwrap();
        panic!(
            "incomplete trace; spans: {:?}",
            spans
                .iter()
                .map(|(svc, s)| (svc.clone(), s.name.clone(), hex(&s.trace_id)))
                .collect::<Vec<_>>()
        )
    });
    assert_eq!(
        hex(&root.parent_span_id),
        "00f067aa0ba902b7",
        "the caller's span is the root's parent"
    );
    for child in [&auth, &check, &up] {
        assert_eq!(
            child.parent_span_id, root.span_id,
            "{} is a child of the request",
            child.name
        );
    }
    assert_eq!(
        remote.parent_span_id, check.span_id,
        "the limiter continues the gateway's check"
    );
    assert_eq!(hex(&up.span_id), upstream_parent);

    // The audit event carries the stored record's fields.
    assert_eq!(attribute(&audit, "who.client").as_deref(), Some("acme"));
    assert_eq!(attribute(&audit, "what.operation").as_deref(), Some("get"));
    assert_eq!(attribute(&audit, "outcome").as_deref(), Some("allowed"));
    assert_eq!(attribute(&audit, "trace_id").as_deref(), Some(trace));
    assert_eq!(attribute(&audit, "status").as_deref(), Some("200"));
    assert!(attribute(&audit, "hash").is_some_and(|h| h.len() == 64));
    drop(gateway);
    drop(limiter);
    db.drop_db().await;
}
