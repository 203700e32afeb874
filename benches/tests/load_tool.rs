//! `portcullis-load` as a user runs it: against an HTTPS service with a private CA, two
//! principals, a mix of calls, and the JSON summary — whose statuses and error codes are
//! counted per principal, so a user sees who was limited.

use std::convert::Infallible;
use std::sync::Arc;

use bytes::Bytes;
use http_body_util::Full;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use serde_json::Value;

/// An HTTPS server with a certificate for 127.0.0.1 from a fresh CA: it answers `limited`'s
/// requests 429 `rate_limited` and everyone else's 200. Returns its port and the CA's PEM.
async fn server(limited: &'static str) -> (u16, String) {
    let ca_key = rcgen::KeyPair::generate().unwrap();
    let mut ca = rcgen::CertificateParams::new(vec!["load-test-ca".to_owned()]).unwrap();
    ca.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    let ca = rcgen::CertifiedIssuer::self_signed(ca, ca_key).unwrap();
    let key = rcgen::KeyPair::generate().unwrap();
    let leaf = rcgen::CertificateParams::new(vec!["127.0.0.1".to_owned()])
        .unwrap()
        .signed_by(&key, &ca)
        .unwrap();
    let config = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_no_client_auth()
    .with_single_cert(
        vec![leaf.der().clone()],
        rustls::pki_types::PrivateKeyDer::Pkcs8(key.serialize_der().into()),
    )
    .unwrap();
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                continue;
            };
            let acceptor = acceptor.clone();
            tokio::spawn(async move {
                let Ok(tls) = acceptor.accept(stream).await else {
                    return;
                };
                let service = service_fn(move |req: hyper::Request<hyper::body::Incoming>| {
                    let who = req
                        .headers()
                        .get("authorization")
                        .and_then(|v| v.to_str().ok())
                        .unwrap_or("")
                        .to_owned();
                    async move {
                        let (status, body) = if who == format!("Bearer {limited}") {
                            (
                                429,
                                r#"{"error":{"code":"rate_limited","message":"slow down"}}"#,
                            )
                        } else {
                            (200, r#"{"ok":true}"#)
                        };
                        Ok::<_, Infallible>(
                            hyper::Response::builder()
                                .status(status)
                                .header("content-type", "application/json")
                                .body(Full::new(Bytes::from(body)))
                                .unwrap(),
                        )
                    }
                });
                let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                    .serve_connection(TokioIo::new(tls), service)
                    .await;
            });
        }
    });
    (port, ca.pem())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_load_tool_reports_each_principals_answers_over_https() {
    let (port, ca) = server("limited-token").await;
    let dir = tempfile::tempdir().unwrap();
    let ca_file = dir.path().join("ca.pem");
    std::fs::write(&ca_file, ca).unwrap();
    let url = format!("https://127.0.0.1:{port}");
    let run = move |extra: &[&str]| {
        std::process::Command::new(env!("CARGO_BIN_EXE_portcullis-load"))
            .args([
                "--url",
                &url,
                "--token",
                "good-token",
                "--token",
                "limited-token",
            ])
            .args(["--call", "GET /a", "--call", "2*GET /b"])
            .args(["--concurrency", "4", "--duration", "1s"])
            .args(extra)
            .output()
            .unwrap()
    };
    let out = tokio::task::spawn_blocking(move || {
        let with_ca = run(&["--ca-file", ca_file.to_str().unwrap(), "--json"]);
        let without = run(&["--json"]);
        (with_ca, without)
    })
    .await
    .unwrap();
    let (with_ca, without) = out;
    assert!(
        with_ca.status.success(),
        "{}",
        String::from_utf8_lossy(&with_ca.stderr)
    );
    let report: Value = serde_json::from_slice(&with_ca.stdout).unwrap();
    assert_eq!(report["failed"], 0, "{report}");
    let answered = report["requests"].as_u64().unwrap();
    assert!(answered > 10, "{report}");
    let good = &report["by_principal"]["token-1"];
    let limited = &report["by_principal"]["token-2"];
    assert!(
        good["200"].as_u64().unwrap() > 0 && good.get("429").is_none(),
        "{report}"
    );
    assert!(
        limited["429"].as_u64().unwrap() > 0 && limited.get("200").is_none(),
        "{report}"
    );
    assert_eq!(
        report["codes_by_principal"]["token-2"]["rate_limited"], limited["429"],
        "{report}"
    );
    assert!(
        report["codes_by_principal"].get("token-1").is_none(),
        "{report}"
    );
    assert_eq!(
        report["statuses"]["200"].as_u64().unwrap() + report["statuses"]["429"].as_u64().unwrap(),
        answered
    );

    // Without the private CA the server is not trusted: nothing is answered, and it says so.
    let report: Value = serde_json::from_slice(&without.stdout).unwrap();
    assert_eq!(report["requests"], 0, "{report}");
    assert!(report["failed"].as_u64().unwrap() > 0, "{report}");
}
