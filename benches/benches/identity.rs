//! The per-request identity decision — authenticate, then authorize the routed operation — for
//! an API token (10 and 100,000 issued) and for an OIDC JWT (ES256, key set cached), against a
//! baseline of the HMAC alone (the unavoidable cost of checking an API token).

use std::hint::black_box;
use std::net::{IpAddr, Ipv4Addr};
use std::time::Duration;

use criterion::{BenchmarkId, Criterion, criterion_group, criterion_main};
use futures_util::FutureExt;
use http::HeaderMap;
use portcullis::auth::{self, Verifiers, jwt, token};
use portcullis::authz;
use portcullis::config::{Format, parse};
use portcullis::model::{Credential, CredentialId, CredentialKind};
use portcullis::snapshot::Snapshot;
use time::OffsetDateTime;

const CONFIG: &str = r#"
collections:
  - id: orders
    base_path: /orders
    upstreams: { sandbox: "http://127.0.0.1:9" }
    operations:
      - { id: get, methods: [GET], path: "/{id}", scopes: [orders:read] }
clients:
  - id: acme
    partner: acme
    profiles:
      - { id: acme-sbx, environment: sandbox, collections: [orders], scopes: [orders:read, orders:write], ip_allowlist: [127.0.0.0/8] }
"#;

/// A snapshot with `tokens` issued tokens; returns it and one valid token.
fn snapshot(secret: &token::TokenSecret, tokens: usize) -> (Snapshot, String) {
    let mut config = parse(CONFIG, Format::Yaml).unwrap();
    let profile = &mut config.clients[0].profiles[0];
    let mut last = String::new();
    for i in 0..tokens {
        last = token::generate();
        profile.credentials.push(Credential {
            id: CredentialId(format!("t{i}")),
            kind: CredentialKind::ApiToken {
                token_hash: secret.hash_hex(&last),
            },
            expires_at: None,
            revoked_at: None,
        });
    }
    (Snapshot::compile(1, &config).unwrap(), last)
}

fn identity_decision(c: &mut Criterion) {
    let secret = token::TokenSecret::new(vec![7u8; 32]).unwrap();
    let verifiers = Verifiers {
        secret: secret.clone(),
        key_sets: jwt::KeySets::new(
            portcullis::forward::client_tls(&[]),
            Duration::from_secs(600),
            Duration::from_secs(30),
            Duration::from_secs(5),
        ),
        assertion_audience: "portcullis".to_owned(),
    };
    let source = IpAddr::V4(Ipv4Addr::LOCALHOST);
    let mut group = c.benchmark_group("identity");
    let (_, sample) = snapshot(&secret, 1);
    group.bench_function("hmac_only", |b| b.iter(|| secret.hash(black_box(&sample))));
    for n in [10, 100_000] {
        let (snap, token) = snapshot(&secret, n);
        let mut headers = HeaderMap::new();
        headers.insert("authorization", format!("Bearer {token}").parse().unwrap());
        let collection = &snap.collections[0];
        let operation = &collection.operations[0];
        group.bench_with_input(BenchmarkId::new("api_token", n), &headers, |b, headers| {
            b.iter(|| {
                let now = OffsetDateTime::now_utc();
                // An API token needs no I/O: the future is ready at once.
                let caller =
                    auth::authenticate(&snap, &verifiers, presented(black_box(headers)), now)
                        .now_or_never()
                        .expect("API tokens authenticate without waiting")
                        .unwrap();
                authz::authorize(&caller, collection, operation, source, now).unwrap();
            })
        });
    }
    group.finish();
}

/// Serves a JWKS holding `jwk` on a loopback port (on the given runtime); returns the issuer.
fn key_server(rt: &tokio::runtime::Runtime, jwk: serde_json::Value) -> String {
    use hyper_util::rt::{TokioExecutor, TokioIo};
    let listener = rt
        .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
        .unwrap();
    let issuer = format!("http://{}", listener.local_addr().unwrap());
    let body = serde_json::json!({ "keys": [jwk] }).to_string();
    rt.spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            let body = body.clone();
            let svc = hyper::service::service_fn(move |_req| {
                let body = body.clone();
                async move {
                    Ok::<_, std::convert::Infallible>(hyper::Response::new(
                        http_body_util::Full::new(bytes::Bytes::from(body)),
                    ))
                }
            });
            tokio::spawn(
                hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                    .serve_connection(TokioIo::new(stream), svc)
                    .into_owned(),
            );
        }
    });
    issuer
}

fn jwt_decision(c: &mut Criterion) {
    use jsonwebtoken::{Algorithm, EncodingKey, Header, jwk::Jwk};
    let rt = tokio::runtime::Runtime::new().unwrap();
    let pair = rcgen::KeyPair::generate().unwrap();
    let key = EncodingKey::from_ec_pem(pair.serialize_pem().as_bytes()).unwrap();
    let mut jwk =
        serde_json::to_value(Jwk::from_encoding_key(&key, Algorithm::ES256).unwrap()).unwrap();
    jwk["kid"] = "k1".into();
    let issuer = key_server(&rt, jwk);
    let yaml = format!(
        "identity_providers:\n  - {{ id: idp, issuer: \"{issuer}\", audiences: [api], jwks_uri: \"{issuer}/jwks\" }}\n{}",
        CONFIG.replace(
            "ip_allowlist: [127.0.0.0/8] }",
            "ip_allowlist: [127.0.0.0/8], credentials: [{ id: jwt, kind: oidc, provider: idp, claims: { azp: acme } }] }"
        )
    );
    let snap = Snapshot::compile(1, &parse(&yaml, Format::Yaml).unwrap()).unwrap();
    let now_s = OffsetDateTime::now_utc().unix_timestamp();
    let claims = serde_json::json!({
        "iss": issuer, "aud": "api", "azp": "acme", "sub": "agent", "scope": "orders:read",
        "exp": now_s + 3600, "iat": now_s,
    });
    let mut header = Header::new(Algorithm::ES256);
    header.kid = Some("k1".into());
    let token = jsonwebtoken::encode(&header, &claims, &key).unwrap();
    let mut headers = HeaderMap::new();
    headers.insert("authorization", format!("Bearer {token}").parse().unwrap());
    let verifiers = Verifiers {
        secret: token::TokenSecret::new(vec![7u8; 32]).unwrap(),
        key_sets: jwt::KeySets::new(
            portcullis::forward::client_tls(&[]),
            Duration::from_secs(3600),
            Duration::from_secs(30),
            Duration::from_secs(5),
        ),
        assertion_audience: "portcullis".to_owned(),
    };
    // Warm the key cache once; every measured call then verifies without I/O.
    rt.block_on(auth::authenticate(
        &snap,
        &verifiers,
        presented(&headers),
        OffsetDateTime::now_utc(),
    ))
    .unwrap();
    let collection = &snap.collections[0];
    let operation = &collection.operations[0];
    let source = IpAddr::V4(Ipv4Addr::LOCALHOST);
    c.bench_function("identity/oidc_jwt_es256", |b| {
        b.iter(|| {
            let now = OffsetDateTime::now_utc();
            let caller = auth::authenticate(&snap, &verifiers, presented(black_box(&headers)), now)
                .now_or_never()
                .expect("a cached key needs no I/O")
                .unwrap();
            authz::authorize(&caller, collection, operation, source, now).unwrap();
        })
    });
}

fn presented(headers: &HeaderMap) -> auth::Presented<'_> {
    auth::Presented {
        headers,
        client_cert: None,
    }
}

criterion_group!(benches, identity_decision, jwt_decision);
criterion_main!(benches);
