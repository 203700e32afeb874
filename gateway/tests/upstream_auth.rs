//! The gateway's own credentials toward upstreams: OAuth2 client credentials (with a real
//! token endpoint and caching), static basic auth, and the gateway-signed identity assertion
//! verified against the key set the admin listener publishes.

mod support;

use std::convert::Infallible;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

use base64::Engine;
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::service::service_fn;
use hyper::{Request, Response};
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use support::{Node, Upstream, code};
use tokio::net::TcpListener;

/// A token endpoint that insists on client_secret_basic and the client credentials grant.
async fn token_endpoint(fail: Arc<AtomicBool>) -> (String, Arc<AtomicUsize>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/oauth2/token", listener.local_addr().unwrap());
    let issued = Arc::new(AtomicUsize::new(0));
    let counter = issued.clone();
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            let (counter, fail) = (counter.clone(), fail.clone());
            let svc = service_fn(move |req: Request<hyper::body::Incoming>| {
                let (counter, fail) = (counter.clone(), fail.clone());
                async move {
                    let expected = format!(
                        "Basic {}",
                        base64::engine::general_purpose::STANDARD.encode("gateway:s3cret")
                    );
                    let authorized = req.headers().get("authorization").map(|v| v.as_bytes())
                        == Some(expected.as_bytes());
                    let body = req.into_body().collect().await.unwrap().to_bytes();
                    let form = String::from_utf8_lossy(&body).into_owned();
                    let ok = authorized
                        && form.contains("grant_type=client_credentials")
                        && form.contains("scope=payments%3Awrite")
                        && !fail.load(Ordering::SeqCst);
                    let response = if ok {
                        let n = counter.fetch_add(1, Ordering::SeqCst) + 1;
                        let doc = serde_json::json!({"access_token": format!("up-tok-{n}"), "token_type": "Bearer", "expires_in": 3600});
                        Response::new(Full::new(Bytes::from(doc.to_string())))
                    } else {
                        Response::builder()
                            .status(401)
                            .body(Full::new(Bytes::from_static(b"{}")))
                            .unwrap()
                    };
                    Ok::<_, Infallible>(response)
                }
            });
            tokio::spawn(
                auto::Builder::new(TokioExecutor::new())
                    .serve_connection(TokioIo::new(stream), svc)
                    .into_owned(),
            );
        }
    });
    (url, issued)
}

fn config(up: &str, token_url: &str) -> String {
    format!(
        r#"
collections:
  - id: payments
    base_path: /payments
    upstreams: {{ sandbox: "{up}/payments" }}
    upstream_auth:
      kind: oauth2_client_credentials
      token_url: "{token_url}"
      client_id: gateway
      client_secret_env: UPSTREAM_TEST_CLIENT_SECRET
      scopes: [payments:write]
    operations: [{{ id: pay, methods: [GET], path: / }}]
  - id: legacy
    base_path: /legacy
    upstreams: {{ sandbox: "{up}/legacy" }}
    upstream_auth: {{ kind: basic, username: svc-gw, password_env: UPSTREAM_TEST_BASIC_PASSWORD }}
    operations: [{{ id: get, methods: [GET], path: / }}]
  - id: ledger
    base_path: /ledger
    upstreams: {{ sandbox: "{up}/ledger" }}
    identity_assertion: true
    operations: [{{ id: get, methods: [GET], path: / }}]
"#
    )
}

#[tokio::test]
async fn the_gateway_presents_its_own_credentials() {
    let up = Upstream::start().await;
    let fail = Arc::new(AtomicBool::new(false));
    let (token_url, issued) = token_endpoint(fail.clone()).await;
    let node = Node::builder()
        .config(&config(&up.url(), &token_url))
        .env("UPSTREAM_TEST_CLIENT_SECRET", "s3cret")
        .env("UPSTREAM_TEST_BASIC_PASSWORD", "pa55")
        .start();
    let caller_token = node.token.clone().unwrap();

    // OAuth2: fetched once, then cached; the caller's own token never goes upstream.
    for _ in 0..3 {
        assert_eq!(node.get("/payments").await.status(), 200);
        assert_eq!(up.last().header("authorization"), Some("Bearer up-tok-1"));
    }
    assert_eq!(issued.load(Ordering::SeqCst), 1);
    assert!(
        up.seen()
            .iter()
            .all(|s| !format!("{:?}", s.headers).contains(&caller_token[4..]))
    );

    // Basic.
    assert_eq!(node.get("/legacy").await.status(), 200);
    let basic = base64::engine::general_purpose::STANDARD.encode("svc-gw:pa55");
    assert_eq!(
        up.last().header("authorization"),
        Some(format!("Basic {basic}").as_str())
    );

    // Identity assertion, verified with the key set the admin listener publishes.
    assert_eq!(node.get("/ledger").await.status(), 200);
    let assertion = up
        .last()
        .header("x-portcullis-identity")
        .expect("an assertion")
        .to_owned();
    let jwks: jsonwebtoken::jwk::JwkSet =
        reqwest::get(format!("{}/.well-known/jwks.json", node.admin))
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
    let kid = jsonwebtoken::decode_header(&assertion)
        .unwrap()
        .kid
        .unwrap();
    let key = jsonwebtoken::DecodingKey::from_jwk(jwks.find(&kid).unwrap()).unwrap();
    let mut validation = jsonwebtoken::Validation::new(jsonwebtoken::Algorithm::ES256);
    validation.set_audience(&["ledger/sandbox"]);
    validation.set_issuer(&["portcullis"]);
    let claims = jsonwebtoken::decode::<serde_json::Value>(&assertion, &key, &validation)
        .unwrap()
        .claims;
    assert_eq!(claims["sub"], "tester");
    assert_eq!(claims["profile"], "tester-sandbox");
    assert_eq!(claims["environment"], "sandbox");
    let lifetime = claims["exp"].as_i64().unwrap() - claims["iat"].as_i64().unwrap();
    assert!(lifetime <= 60, "{lifetime}");
    // A caller cannot forge one: an inbound X-Portcullis-Identity is replaced.
    let r = node
        .http()
        .get(format!("{}/ledger", node.gateway))
        .header("x-portcullis-identity", "forged")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_ne!(up.last().header("x-portcullis-identity"), Some("forged"));
    assert_eq!(
        up.last()
            .header("x-portcullis-identity")
            .map(|v| v.split('.').count()),
        Some(3)
    );
}

#[tokio::test]
async fn a_failing_token_endpoint_is_a_gateway_error() {
    let up = Upstream::start().await;
    let fail = Arc::new(AtomicBool::new(true));
    let (token_url, _) = token_endpoint(fail.clone()).await;
    let node = Node::builder()
        .config(&config(&up.url(), &token_url))
        .env("UPSTREAM_TEST_CLIENT_SECRET", "s3cret")
        .env("UPSTREAM_TEST_BASIC_PASSWORD", "pa55")
        .start();
    let r = node.get("/payments").await;
    assert_eq!(r.status(), 502);
    let body = r.text().await.unwrap();
    assert_eq!(code(&body), "upstream_credential_unavailable");
    assert!(!body.contains("s3cret"));
    assert!(up.seen().is_empty());
    // Recovers without a restart.
    fail.store(false, Ordering::SeqCst);
    assert_eq!(node.get("/payments").await.status(), 200);
    // A secret missing from the node's environment: that collection only is misconfigured.
    let other = Node::builder()
        .config(&config(&up.url(), &token_url))
        .env("UPSTREAM_TEST_CLIENT_SECRET", "s3cret")
        .start();
    let r = other.get("/legacy").await;
    assert_eq!(
        (r.status().as_u16(), code(&r.text().await.unwrap()).as_str()),
        (502, "upstream_misconfigured")
    );
    assert_eq!(other.get("/payments").await.status(), 200);
}
