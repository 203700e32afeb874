//! The per-request identity decision — authenticate an API token, then authorize the routed
//! operation — with 10 and 100,000 issued tokens, against a baseline of the HMAC alone (the
//! unavoidable cost of checking a token).

use std::hint::black_box;
use std::net::{IpAddr, Ipv4Addr};

use criterion::{BenchmarkId, Criterion, criterion_group, criterion_main};
use http::HeaderMap;
use portcullis::auth::{self, token};
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
                let caller = auth::authenticate(&snap, &secret, black_box(headers), now).unwrap();
                authz::authorize(caller, collection, operation, source, now).unwrap();
            })
        });
    }
    group.finish();
}

criterion_group!(benches, identity_decision);
criterion_main!(benches);
