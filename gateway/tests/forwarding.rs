//! Forwarding through the real binary to a real upstream: headers, query, target rewrite,
//! streaming in both directions, limits, upstream failures, HTTP/2 and TLS.

mod support;

use std::time::Duration;

use bytes::Bytes;
use support::{Node, Upstream, closed_port, closing_upstream, code};

fn config(up: &str, extra: &str) -> String {
    format!(
        r#"
collections:
  - id: echo
    base_path: /echo
    upstreams: {{ sandbox: "{up}/sbx", production: "{up}/prod" }}
    headers:
      x-gateway-tag: portcullis
      x-upstream-key: "Key ${{UPSTREAM_TEST_UPSTREAM_KEY}}"
    operations:
      - {{ id: items, methods: [GET, POST, PUT], path: "/items/{{id}}", target_path: "/v2/things/{{id}}" }}
      - {{ id: search, methods: [GET], path: /search }}
      - {{ id: files, methods: [GET, PUT], path: "/files/*" }}
{extra}"#
    )
}

fn start(up: &Upstream, args: &[&str]) -> Node {
    let mut b = Node::builder()
        .config(&config(&up.url(), ""))
        .env("UPSTREAM_TEST_UPSTREAM_KEY", "k-123");
    for a in args {
        b = b.arg(a);
    }
    b.start()
}

#[tokio::test]
async fn headers_query_and_target_rewrite() {
    let up = Upstream::start().await;
    let node = start(&up, &[]);
    let client = node.http();
    let r = client
        .get(format!("{}/echo/items/a%20b?x=1&y=%2F&x=2", node.gateway))
        .header("connection", "keep-alive, x-hop-secret")
        .header("x-hop-secret", "dropped")
        .header("keep-alive", "timeout=5")
        .header("te", "trailers")
        .header("proxy-authorization", "Basic c2VjcmV0")
        .header("x-forwarded-for", "203.0.113.7")
        .header("x-forwarded-host", "spoofed.example")
        .header("forwarded", "for=198.51.100.1")
        .header("x-real-ip", "198.51.100.2")
        .header("x-original-url", "/admin")
        .header("x-custom", "kept")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let request_id = r.headers()["x-request-id"].to_str().unwrap().to_owned();
    assert_eq!(request_id.len(), 36, "a generated UUID: {request_id}");
    // Hop-by-hop headers from the upstream's response do not reach the caller.
    assert!(r.headers().get("x-upstream-hop").is_none());
    assert!(r.headers().get("keep-alive").is_none());

    let seen = up.last();
    assert_eq!(seen.target, "/sbx/v2/things/a%20b?x=1&y=%2F&x=2");
    let gone = [
        "x-hop-secret",
        "keep-alive",
        "te",
        "proxy-authorization",
        "connection",
        // An untrusted caller's claims about addresses and paths are dropped.
        "forwarded",
        "x-real-ip",
        "x-original-url",
    ];
    for name in gone {
        assert!(seen.header(name).is_none(), "{name} was forwarded");
    }
    assert_eq!(seen.header("x-custom"), Some("kept"));
    assert_eq!(seen.header("x-forwarded-for"), Some("127.0.0.1"));
    let gw_authority = node.gateway.trim_start_matches("http://");
    assert_eq!(seen.header("x-forwarded-host"), Some(gw_authority));
    assert_eq!(seen.header("x-forwarded-proto"), Some("http"));
    assert_eq!(seen.header("host"), Some(up.addr.to_string().as_str()));
    assert_eq!(seen.header("x-request-id"), Some(request_id.as_str()));
    assert_eq!(seen.header("x-gateway-tag"), Some("portcullis"));
    assert_eq!(seen.header("x-upstream-key"), Some("Key k-123"));
}

#[tokio::test]
async fn a_trusted_proxy_keeps_its_forwarding_headers() {
    let up = Upstream::start().await;
    let node = start(&up, &["--trusted-proxies", "10.0.0.0/8,127.0.0.1"]);
    let r = node
        .http()
        .get(format!("{}/echo/search", node.gateway))
        .header("x-forwarded-for", "203.0.113.7")
        .header("x-forwarded-proto", "https")
        .header("x-forwarded-host", "api.example.com")
        .header("forwarded", "for=203.0.113.7;proto=https")
        .header("x-original-url", "/admin")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let seen = up.last();
    assert_eq!(
        seen.header("x-forwarded-for"),
        Some("203.0.113.7, 127.0.0.1")
    );
    assert_eq!(seen.header("x-forwarded-proto"), Some("https"));
    assert_eq!(seen.header("x-forwarded-host"), Some("api.example.com"));
    assert_eq!(
        seen.header("forwarded"),
        Some("for=203.0.113.7;proto=https")
    );
    // Path overrides are never trusted.
    assert!(seen.header("x-original-url").is_none());
}

#[tokio::test]
async fn request_ids_are_kept_when_well_formed() {
    let up = Upstream::start().await;
    let node = start(&up, &[]);
    let client = node.http();
    let r = client
        .get(format!("{}/echo/search", node.gateway))
        .header("x-request-id", "trace-42.abc")
        .send()
        .await
        .unwrap();
    assert_eq!(r.headers()["x-request-id"], "trace-42.abc");
    assert_eq!(up.last().header("x-request-id"), Some("trace-42.abc"));
    // Not well-formed (a space, or far too long): replaced.
    for bad in ["has space", &"x".repeat(200)] {
        let r = client
            .get(format!("{}/echo/search", node.gateway))
            .header("x-request-id", bad)
            .send()
            .await
            .unwrap();
        let id = r.headers()["x-request-id"].to_str().unwrap().to_owned();
        assert_ne!(id, bad);
        assert_eq!(up.last().header("x-request-id"), Some(id.as_str()));
    }
    // Errors carry the same id in the header and the body.
    let r = client
        .get(format!("{}/nowhere", node.gateway))
        .header("x-request-id", "req-404")
        .send()
        .await
        .unwrap();
    assert_eq!(r.headers()["x-request-id"], "req-404");
    let body: serde_json::Value = r.json().await.unwrap();
    assert_eq!(body["error"]["request_id"], "req-404");
}

#[tokio::test]
async fn large_bodies_stream_both_ways() {
    let up = Upstream::start().await;
    let node = start(&up, &["--max-body-bytes", "67108864"]);
    let client = node.http();
    // 48 MiB up, sent in chunks without a Content-Length.
    let chunk = Bytes::from(vec![b'z'; 1024 * 1024]);
    let chunks = (0..48).map(move |_| Ok::<_, std::io::Error>(chunk.clone()));
    let body = reqwest::Body::wrap_stream(futures_util::stream::iter(chunks));
    let r = client
        .put(format!("{}/echo/files/upload.bin", node.gateway))
        .body(body)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let v: serde_json::Value = r.json().await.unwrap();
    assert_eq!(v["body_len"], 48 * 1024 * 1024);
    // 64 MiB down.
    let r = client
        .get(format!(
            "{}/echo/files/download/{}",
            node.gateway,
            64 * 1024 * 1024
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let mut total = 0;
    let mut stream = r.bytes_stream();
    use futures_util::StreamExt;
    while let Some(chunk) = stream.next().await {
        total += chunk.unwrap().len();
    }
    assert_eq!(total, 64 * 1024 * 1024);
}

#[tokio::test]
async fn oversized_requests_are_refused() {
    let up = Upstream::start().await;
    let node = start(
        &up,
        &["--max-body-bytes", "1024", "--max-header-bytes", "4096"],
    );
    let client = node.http();
    // Declared length over the limit: refused before anything is sent upstream.
    let r = client
        .post(format!("{}/echo/items/1", node.gateway))
        .body(vec![b'a'; 2048])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 413);
    assert_eq!(code(&r.text().await.unwrap()), "payload_too_large");
    assert!(up.seen().is_empty());
    // Undeclared (chunked) length: cut off as it streams.
    let chunks = (0..8).map(|_| Ok::<_, std::io::Error>(Bytes::from(vec![b'b'; 512])));
    let r = client
        .post(format!("{}/echo/items/1", node.gateway))
        .body(reqwest::Body::wrap_stream(futures_util::stream::iter(
            chunks,
        )))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 413);
    assert_eq!(code(&r.text().await.unwrap()), "payload_too_large");
    // Within the limit: fine.
    let r = client
        .post(format!("{}/echo/items/1", node.gateway))
        .body(vec![b'a'; 1000])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    // Headers over the limit.
    let r = client
        .get(format!("{}/echo/search", node.gateway))
        .header("x-big", "h".repeat(5000))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 431);
    assert_eq!(code(&r.text().await.unwrap()), "headers_too_large");
}

#[tokio::test]
async fn upstream_failures_map_to_catalogue_codes() {
    let up = Upstream::start().await;
    let dead = closed_port();
    let closing = closing_upstream().await;
    let extra = format!(
        r#"  - id: dead
    base_path: /dead
    upstreams: {{ sandbox: "http://{dead}" }}
    operations: [{{ id: x, methods: [GET], path: /x }}]
  - id: closing
    base_path: /closing
    upstreams: {{ sandbox: "http://{closing}" }}
    operations: [{{ id: x, methods: [GET], path: /x }}]
  - id: slow
    base_path: /slow
    upstream_timeout: 300ms
    upstreams: {{ sandbox: "{up}" }}
    operations: [{{ id: x, methods: [GET], path: "/slow/{{ms}}" }}]
  - id: prod-only
    base_path: /prod-only
    upstreams: {{ production: "{up}" }}
    operations: [{{ id: x, methods: [GET], path: /x }}]
  - id: misconfigured
    base_path: /misconfigured
    headers: {{ authorization: "Bearer ${{UPSTREAM_TEST_UNSET_VARIABLE}}" }}
    upstreams: {{ sandbox: "{up}" }}
    operations: [{{ id: x, methods: [GET], path: /x }}]
"#,
        up = up.url()
    );
    let node = Node::builder()
        .config(&config(&up.url(), &extra))
        .env("UPSTREAM_TEST_UPSTREAM_KEY", "k")
        .start();
    let gw = &node.gateway;
    let cases = [
        ("/dead/x", 502, "upstream_unreachable"),
        ("/closing/x", 502, "upstream_error"),
        ("/slow/slow/2000", 504, "upstream_timeout"),
        // Not offered in the tester's (sandbox) environment.
        ("/prod-only/x", 403, "product_not_granted"),
        ("/misconfigured/x", 502, "upstream_misconfigured"),
    ];
    for (path, status, want) in cases {
        let r = node.http().get(format!("{gw}{path}")).send().await.unwrap();
        assert_eq!(r.status().as_u16(), status, "{path}");
        let body = r.text().await.unwrap();
        assert_eq!(code(&body), want, "{path}");
        assert!(!body.contains("UPSTREAM_TEST_UNSET_VARIABLE"), "{body}");
    }
    // Under the timeout, the slow upstream answers.
    let r = node
        .http()
        .get(format!("{gw}/slow/slow/50"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
}

#[tokio::test]
async fn the_profile_environment_chooses_the_upstream() {
    let up = Upstream::start().await;
    let node = Node::builder()
        .config(&config(&up.url(), ""))
        .env("UPSTREAM_TEST_UPSTREAM_KEY", "k")
        .tester_in("production")
        .start();
    let r = node
        .http()
        .get(format!("{}/echo/search", node.gateway))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(up.last().target, "/prod/search");
}

#[tokio::test]
async fn http2_cleartext_and_tls_with_alpn() {
    let up = Upstream::start().await;
    // h2c with prior knowledge on the plain listener.
    let node = start(&up, &[]);
    let h2c = reqwest::Client::builder()
        .http2_prior_knowledge()
        .build()
        .unwrap();
    let r = h2c
        .get(format!("{}/echo/search?q=1", node.gateway))
        .bearer_auth(node.token.as_ref().unwrap())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.version(), reqwest::Version::HTTP_2);
    assert_eq!(up.last().target, "/sbx/search?q=1");
    drop(node);

    // TLS: a self-signed certificate for localhost; HTTP/2 chosen by ALPN, HTTP/1.1 still works.
    let dir = tempfile::tempdir().unwrap();
    let cert = rcgen::generate_simple_self_signed(vec!["localhost".to_owned()]).unwrap();
    let cert_path = dir.path().join("cert.pem");
    let key_path = dir.path().join("key.pem");
    std::fs::write(&cert_path, cert.cert.pem()).unwrap();
    std::fs::write(&key_path, cert.signing_key.serialize_pem()).unwrap();
    let node = start(
        &up,
        &[
            "--tls-cert",
            cert_path.to_str().unwrap(),
            "--tls-key",
            key_path.to_str().unwrap(),
        ],
    );
    assert!(node.gateway.starts_with("https://"), "{}", node.gateway);
    let url = node.gateway.replace("127.0.0.1", "localhost");
    let root = reqwest::Certificate::from_pem(cert.cert.pem().as_bytes()).unwrap();
    let tls = reqwest::Client::builder()
        .add_root_certificate(root.clone())
        .timeout(Duration::from_secs(10))
        .build()
        .unwrap();
    let token = node.token.clone().unwrap();
    let r = tls
        .get(format!("{url}/echo/search"))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.version(), reqwest::Version::HTTP_2);
    assert_eq!(up.last().header("x-forwarded-proto"), Some("https"));
    let h1 = reqwest::Client::builder()
        .add_root_certificate(root)
        .http1_only()
        .build()
        .unwrap();
    let r = h1
        .get(format!("{url}/echo/search"))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.version(), reqwest::Version::HTTP_11);
}
