//! OIDC/JWT access tokens through the real binary, against a real identity provider on a
//! loopback port (discovery document and JWKS), including key rotation mid-test, an outage, and
//! hostile tokens.

mod support;

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use bytes::Bytes;
use http_body_util::Full;
use hyper::service::service_fn;
use hyper::{Request, Response};
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use jsonwebtoken::jwk::Jwk;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::{Value, json};
use support::{Node, Upstream};
use tokio::net::TcpListener;

const AUDIENCE: &str = "portcullis-api";
const RSA_PRIVATE: &str = include_str!("fixtures/rsa-test-key.pem");
const RSA_PUBLIC: &str = include_str!("fixtures/rsa-test-key.pub.pem");

/// A signing key with its published JWK.
struct Key {
    kid: String,
    encoding: EncodingKey,
    jwk: Value,
    public_pem: String,
}

impl Key {
    fn new(kid: &str) -> Self {
        let pair = rcgen::KeyPair::generate().unwrap(); // ECDSA P-256
        let encoding = EncodingKey::from_ec_pem(pair.serialize_pem().as_bytes()).unwrap();
        let mut jwk: Value =
            serde_json::to_value(Jwk::from_encoding_key(&encoding, Algorithm::ES256).unwrap())
                .unwrap();
        jwk["kid"] = kid.into();
        Self {
            kid: kid.to_owned(),
            encoding,
            jwk,
            public_pem: pair.public_key_pem(),
        }
    }

    fn sign(&self, claims: &Value) -> String {
        let mut header = Header::new(Algorithm::ES256);
        header.kid = Some(self.kid.clone());
        jsonwebtoken::encode(&header, claims, &self.encoding).unwrap()
    }
}

/// A real identity provider: discovery at `/.well-known/openid-configuration`, keys at `/jwks`.
#[derive(Clone)]
struct Provider {
    addr: SocketAddr,
    keys: Arc<Mutex<Vec<Value>>>,
    fetches: Arc<AtomicUsize>,
    down: Arc<AtomicBool>,
}

impl Provider {
    async fn start() -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let p = Self {
            addr,
            keys: Arc::default(),
            fetches: Arc::default(),
            down: Arc::default(),
        };
        let state = p.clone();
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let state = state.clone();
                tokio::spawn(async move {
                    let svc = service_fn(move |req: Request<hyper::body::Incoming>| {
                        let state = state.clone();
                        async move { Ok::<_, Infallible>(state.answer(req.uri().path())) }
                    });
                    let _ = auto::Builder::new(TokioExecutor::new())
                        .serve_connection(TokioIo::new(stream), svc)
                        .await;
                });
            }
        });
        p
    }

    fn issuer(&self) -> String {
        format!("http://{}", self.addr)
    }

    fn publish(&self, key: &Key) {
        self.keys.lock().unwrap().push(key.jwk.clone());
    }

    fn answer(&self, path: &str) -> Response<Full<Bytes>> {
        if self.down.load(Ordering::SeqCst) {
            return Response::builder()
                .status(503)
                .body(Full::default())
                .unwrap();
        }
        let body = match path {
            "/.well-known/openid-configuration" => {
                json!({"issuer": self.issuer(), "jwks_uri": format!("{}/jwks", self.issuer())})
            }
            "/jwks" => {
                self.fetches.fetch_add(1, Ordering::SeqCst);
                json!({"keys": *self.keys.lock().unwrap()})
            }
            _ => {
                return Response::builder()
                    .status(404)
                    .body(Full::default())
                    .unwrap();
            }
        };
        Response::new(Full::new(Bytes::from(body.to_string())))
    }
}

/// A server that counts requests: stands in for an attacker's `jku`/`x5u` URL.
async fn counting_server() -> (SocketAddr, Arc<AtomicUsize>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let hits = Arc::new(AtomicUsize::new(0));
    let counter = hits.clone();
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            counter.fetch_add(1, Ordering::SeqCst);
            drop(stream);
        }
    });
    (addr, hits)
}

fn config(up: &str, issuer: &str) -> String {
    format!(
        r#"
identity_providers:
  - id: corp
    issuer: "{issuer}"
    audiences: [{AUDIENCE}]
    clock_skew: 5s
collections:
  - id: orders
    base_path: /orders
    upstreams: {{ sandbox: "{up}/sbx" }}
    operations:
      - {{ id: list, methods: [GET], path: /, scopes: [orders:read] }}
      - {{ id: purge, methods: [DELETE], path: /, scopes: [orders:admin] }}
clients:
  - id: agent-x
    partner: acme
    profiles:
      - id: agent-x-sbx
        environment: sandbox
        collections: [orders]
        scopes: [orders:read, orders:admin]
        credentials:
          - {{ id: agent-x-oidc, kind: oidc, provider: corp, claims: {{ azp: agent-x }} }}
"#
    )
}

fn now() -> i64 {
    time::OffsetDateTime::now_utc().unix_timestamp()
}

fn claims(issuer: &str) -> Value {
    json!({
        "iss": issuer,
        "aud": AUDIENCE,
        "sub": "agent-x@corp",
        "azp": "agent-x",
        "scope": "orders:read profile",
        "iat": now(),
        "exp": now() + 300,
    })
}

struct Fixture {
    node: Node,
    up: Upstream,
    idp: Provider,
    key: Key,
}

async fn fixture() -> Fixture {
    let up = Upstream::start().await;
    let idp = Provider::start().await;
    let key = Key::new("k1");
    idp.publish(&key);
    let rsa = EncodingKey::from_rsa_pem(RSA_PRIVATE.as_bytes()).unwrap();
    let mut rsa_jwk =
        serde_json::to_value(Jwk::from_encoding_key(&rsa, Algorithm::RS256).unwrap()).unwrap();
    rsa_jwk["kid"] = "rsa1".into();
    idp.keys.lock().unwrap().push(rsa_jwk);
    let node = Node::builder()
        .config(&config(&up.url(), &idp.issuer()))
        .without_tester()
        .arg("--jwks-refresh-cooldown")
        .arg("300ms")
        .start();
    Fixture { node, up, idp, key }
}

async fn call(node: &Node, method: &str, token: &str) -> (u16, String) {
    let r = reqwest::Client::new()
        .request(
            reqwest::Method::from_bytes(method.as_bytes()).unwrap(),
            format!("{}/orders", node.gateway),
        )
        .header("authorization", format!("Bearer {token}"))
        .send()
        .await
        .unwrap();
    let status = r.status().as_u16();
    let body = r.text().await.unwrap();
    (status, support::code_or_empty(&body))
}

#[tokio::test]
async fn a_provider_token_identifies_the_bound_profile_with_narrowed_scopes() {
    let f = fixture().await;
    let token = f.key.sign(&claims(&f.idp.issuer()));
    assert_eq!(call(&f.node, "GET", &token).await, (200, String::new()));
    let seen = f.up.last();
    assert_eq!(seen.header("x-portcullis-client"), Some("agent-x"));
    assert_eq!(seen.header("x-portcullis-profile"), Some("agent-x-sbx"));
    assert_eq!(seen.header("x-portcullis-credential"), Some("agent-x-oidc"));
    assert_eq!(seen.header("x-portcullis-subject"), Some("agent-x@corp"));
    // The token's scopes narrow the profile's: orders:admin is the profile's, not the token's.
    assert_eq!(seen.header("x-portcullis-scopes"), Some("orders:read"));
    assert!(seen.header("authorization").is_none());
    assert_eq!(
        call(&f.node, "DELETE", &token).await,
        (403, "insufficient_scope".into())
    );
    // With the scope in the token, allowed.
    let mut c = claims(&f.idp.issuer());
    c["scope"] = "orders:read orders:admin".into();
    assert_eq!(call(&f.node, "DELETE", &f.key.sign(&c)).await.0, 200);
    // A token for a subject bound to no profile is refused like any bad credential.
    let mut other = claims(&f.idp.issuer());
    other["azp"] = "someone-else".into();
    assert_eq!(
        call(&f.node, "GET", &f.key.sign(&other)).await,
        (401, "invalid_credential".into())
    );
    // Keys were fetched once, not per request.
    assert_eq!(f.idp.fetches.load(Ordering::SeqCst), 1);
}

#[tokio::test]
async fn hostile_tokens_are_refused() {
    let f = fixture().await;
    let issuer = f.idp.issuer();
    let good = claims(&issuer);
    let (attacker_addr, attacker_hits) = counting_server().await;
    let attacker = Key::new("k1");

    let part = |v: &Value| B64.encode(v.to_string());
    let payload = part(&good);
    let valid = f.key.sign(&good);
    let (head, rest) = valid.split_once('.').unwrap();
    let (_, signature) = rest.split_once('.').unwrap();

    let mut cases: Vec<(&str, String)> = Vec::new();
    cases.push((
        "alg none",
        format!("{}.{payload}.", part(&json!({"alg": "none", "kid": "k1"}))),
    ));
    cases.push((
        "alg none, signature kept",
        format!(
            "{}.{payload}.{signature}",
            part(&json!({"alg": "none", "kid": "k1"}))
        ),
    ));
    // HMAC "signed" with the provider's public key: the key pins ES256.
    let mut hs = Header::new(Algorithm::HS256);
    hs.kid = Some("k1".into());
    let confused = jsonwebtoken::encode(
        &hs,
        &good,
        &EncodingKey::from_secret(f.key.public_pem.as_bytes()),
    )
    .unwrap();
    cases.push(("HS256 with the public key", confused));
    let confused_jwk = jsonwebtoken::encode(
        &hs,
        &good,
        &EncodingKey::from_secret(f.key.jwk.to_string().as_bytes()),
    )
    .unwrap();
    cases.push(("HS256 with the JWK text", confused_jwk));
    // Keys offered by the token itself are never used or fetched.
    let mut with_jku = Header::new(Algorithm::ES256);
    with_jku.kid = Some("attacker".into());
    with_jku.jku = Some(format!("http://{attacker_addr}/jwks"));
    with_jku.x5u = Some(format!("http://{attacker_addr}/cert.pem"));
    with_jku.jwk = Some(serde_json::from_value(attacker.jwk.clone()).unwrap());
    cases.push((
        "jku/x5u/jwk headers",
        jsonwebtoken::encode(&with_jku, &good, &attacker.encoding).unwrap(),
    ));
    // Right kid, wrong key.
    cases.push((
        "signed by another key with the same kid",
        attacker.sign(&good),
    ));
    cases.push(("unknown kid", Key::new("k-unknown").sign(&good)));
    let mut c = good.clone();
    c["exp"] = (now() - 60).into();
    cases.push(("expired beyond the skew", f.key.sign(&c)));
    let mut c = good.clone();
    c["nbf"] = (now() + 120).into();
    cases.push(("not yet valid", f.key.sign(&c)));
    let mut c = good.clone();
    c["iss"] = "http://127.0.0.1:1/other".into();
    cases.push(("unknown issuer", f.key.sign(&c)));
    let mut c = good.clone();
    c["aud"] = "someone-else".into();
    cases.push(("wrong audience", f.key.sign(&c)));
    let mut c = good.clone();
    c.as_object_mut().unwrap().remove("exp");
    cases.push(("no expiry", f.key.sign(&c)));
    let mut tampered = good.clone();
    tampered["azp"] = "agent-x".into();
    tampered["scope"] = "orders:admin".into();
    cases.push((
        "tampered payload",
        format!("{head}.{}.{signature}", part(&tampered)),
    ));
    let mut sig = signature.to_owned();
    sig.replace_range(..2, if sig.starts_with("AA") { "BB" } else { "AA" });
    cases.push(("tampered signature", format!("{head}.{payload}.{sig}")));
    let mut big = good.clone();
    big["padding"] = "x".repeat(9000).into();
    cases.push(("oversized", f.key.sign(&big)));
    // The classic confusion: RS256 key, HS256 token "signed" with the RSA public key.
    let mut rs_hs = Header::new(Algorithm::HS256);
    rs_hs.kid = Some("rsa1".into());
    cases.push((
        "RS256 to HS256 with the RSA public key",
        jsonwebtoken::encode(
            &rs_hs,
            &good,
            &EncodingKey::from_secret(RSA_PUBLIC.as_bytes()),
        )
        .unwrap(),
    ));
    cases.push(("garbage", "a.b.c".to_owned()));
    cases.push(("not a JWT", "hello".to_owned()));

    for (name, token) in &cases {
        assert_eq!(
            call(&f.node, "GET", token).await,
            (401, "invalid_credential".into()),
            "{name}"
        );
    }
    assert_eq!(
        attacker_hits.load(Ordering::SeqCst),
        0,
        "a token made the gateway fetch its URL"
    );
    assert!(
        f.up.seen().is_empty(),
        "a hostile token reached the upstream"
    );
    // Within the skew, a just-expired token still passes; the valid one passes.
    let mut c = good.clone();
    c["exp"] = (now() - 2).into();
    assert_eq!(call(&f.node, "GET", &f.key.sign(&c)).await.0, 200);
    assert_eq!(call(&f.node, "GET", &valid).await.0, 200);
    // And the RSA key itself verifies RS256 tokens.
    let mut rs = Header::new(Algorithm::RS256);
    rs.kid = Some("rsa1".into());
    let rsa = EncodingKey::from_rsa_pem(RSA_PRIVATE.as_bytes()).unwrap();
    assert_eq!(
        call(
            &f.node,
            "GET",
            &jsonwebtoken::encode(&rs, &good, &rsa).unwrap()
        )
        .await
        .0,
        200
    );
}

#[tokio::test]
async fn key_rotation_is_picked_up_and_unknown_kids_are_rate_limited() {
    let f = fixture().await;
    let issuer = f.idp.issuer();
    assert_eq!(
        call(&f.node, "GET", &f.key.sign(&claims(&issuer))).await.0,
        200
    );
    assert_eq!(f.idp.fetches.load(Ordering::SeqCst), 1);

    // A flood of unknown kids costs at most one fetch per cooldown.
    let stranger = Key::new("k-stranger");
    for _ in 0..20 {
        assert_eq!(
            call(&f.node, "GET", &stranger.sign(&claims(&issuer)))
                .await
                .0,
            401
        );
    }
    let after_flood = f.idp.fetches.load(Ordering::SeqCst);
    assert!(after_flood <= 2, "{after_flood} fetches for one burst");

    // The provider rotates: a token signed with the new key works once it is published.
    let k2 = Key::new("k2");
    f.idp.publish(&k2);
    tokio::time::sleep(Duration::from_millis(400)).await;
    assert_eq!(
        call(&f.node, "GET", &k2.sign(&claims(&issuer))).await.0,
        200
    );
    assert_eq!(
        call(&f.node, "GET", &f.key.sign(&claims(&issuer))).await.0,
        200
    );
}

#[tokio::test]
async fn an_unreachable_provider_is_a_platform_error_not_the_callers() {
    let up = Upstream::start().await;
    let idp = Provider::start().await;
    let key = Key::new("k1");
    idp.publish(&key);
    idp.down.store(true, Ordering::SeqCst);
    let node = Node::builder()
        .config(&config(&up.url(), &idp.issuer()))
        .without_tester()
        .arg("--jwks-refresh-cooldown")
        .arg("100ms")
        .start();
    let token = key.sign(&claims(&idp.issuer()));
    assert_eq!(
        call(&node, "GET", &token).await,
        (503, "identity_unavailable".into())
    );
    // When it recovers, the same token works without a restart.
    idp.down.store(false, Ordering::SeqCst);
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(call(&node, "GET", &token).await.0, 200);
    // Once keys are cached, an outage does not break callers.
    idp.down.store(true, Ordering::SeqCst);
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(call(&node, "GET", &token).await.0, 200);
}

#[tokio::test]
async fn over_mcp_an_access_token_must_be_meant_for_the_mcp_resource() {
    let up = Upstream::start().await;
    let idp = Provider::start().await;
    let key = Key::new("k1");
    idp.publish(&key);
    // The MCP resource is <public-url>/mcp; the provider accepts tokens for it too.
    let resource = "https://gw.example.test/mcp";
    let yaml = config(&up.url(), &idp.issuer())
        .replace(
            &format!("audiences: [{AUDIENCE}]"),
            &format!("audiences: [{AUDIENCE}, \"{resource}\"]"),
        )
        .replace(
            "scopes: [orders:read] }",
            "scopes: [orders:read], mcp: {} }",
        );
    let node = Node::builder()
        .config(&yaml)
        .without_tester()
        .arg("--public-url")
        .arg("https://gw.example.test")
        .start();
    let list = |token: String| {
        let url = format!("{}/mcp", node.gateway);
        async move {
            let meta = json!({"io.modelcontextprotocol/protocolVersion": "2026-07-28", "io.modelcontextprotocol/clientCapabilities": {}});
            let r = reqwest::Client::new()
                .post(url)
                .bearer_auth(token)
                .header("content-type", "application/json")
                .header("accept", "application/json, text/event-stream")
                .header("mcp-protocol-version", "2026-07-28")
                .header("mcp-method", "tools/list")
                .body(json!({"jsonrpc": "2.0", "id": 1, "method": "tools/list", "params": {"_meta": meta}}).to_string())
                .send()
                .await
                .unwrap();
            let status = r.status().as_u16();
            let challenge = r
                .headers()
                .get("www-authenticate")
                .map(|v| v.to_str().unwrap().to_owned());
            (status, challenge, r.text().await.unwrap())
        }
    };
    // A token for the API, not for the MCP resource: fine for REST, refused over MCP.
    let api_token = key.sign(&claims(&idp.issuer()));
    assert_eq!(call(&node, "GET", &api_token).await.0, 200);
    let (status, challenge, _) = list(api_token).await;
    assert_eq!(status, 401);
    let challenge = challenge.unwrap();
    assert!(challenge.contains("invalid_token"), "{challenge}");
    assert!(
        challenge.contains(r#"resource_metadata="https://gw.example.test/.well-known/oauth-protected-resource/mcp""#),
        "{challenge}"
    );
    // A token whose audience is the MCP resource: the profile's tools.
    let mut c = claims(&idp.issuer());
    c["aud"] = json!([resource]);
    let (status, _, body) = list(key.sign(&c)).await;
    assert_eq!(status, 200, "{body}");
    let body: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(body["result"]["tools"][0]["name"], "list");
    // The metadata names the provider as the authorization server.
    let metadata: Value = reqwest::get(format!(
        "{}/.well-known/oauth-protected-resource/mcp",
        node.gateway
    ))
    .await
    .unwrap()
    .json()
    .await
    .unwrap();
    assert_eq!(metadata["resource"], resource);
    assert_eq!(metadata["authorization_servers"], json!([idp.issuer()]));
    assert_eq!(metadata["scopes_supported"], json!(["orders:read"]));
}

/// `GET /api/v1/{path}` on the management API with `token`.
async fn manage(node: &Node, token: &str, path: &str) -> (u16, Value) {
    let r = reqwest::Client::new()
        .get(format!("{}/api/v1/{path}", node.admin))
        .bearer_auth(token)
        .send()
        .await
        .unwrap();
    let status = r.status().as_u16();
    (status, r.json().await.unwrap_or(Value::Null))
}

#[tokio::test]
async fn operators_sign_in_with_the_organisations_identity_provider() {
    let idp = Provider::start().await;
    let key = Key::new("ops1");
    idp.publish(&key);
    let node = Node::builder()
        .without_tester()
        .arg("--operator-oidc-issuer")
        .arg(&idp.issuer())
        .arg("--operator-oidc-audience")
        .arg("portcullis-management")
        .arg("--operator-roles-claim")
        .arg("groups")
        .arg("--operator-role-map")
        .arg("platform-admins=admin,sre=editor,auditors=auditor")
        .start();
    let token = |groups: Value, audience: &str| {
        key.sign(&json!({
            "iss": idp.issuer(), "aud": audience, "sub": "alice@corp",
            "groups": groups, "iat": now(), "exp": now() + 300,
        }))
    };

    // The claim's values map to roles; the subject is the operator.
    let sre = token(json!(["sre", "everyone"]), "portcullis-management");
    let (status, me) = manage(&node, &sre, "whoami").await;
    assert_eq!(status, 200, "{me}");
    assert_eq!(
        (&me["id"], &me["kind"], &me["roles"]),
        (
            &json!("oidc:alice@corp"),
            &json!("user"),
            &json!(["editor"])
        )
    );
    assert_eq!(manage(&node, &sre, "collections").await.0, 200);
    assert_eq!(manage(&node, &sre, "operators").await.0, 403);

    // No mapped group: authenticated, allowed nothing. Another audience: not an operator.
    let nobody = token(json!(["everyone"]), "portcullis-management");
    assert_eq!(manage(&node, &nobody, "whoami").await.1["roles"], json!([]));
    assert_eq!(manage(&node, &nobody, "collections").await.0, 403);
    let elsewhere = token(json!(["platform-admins"]), "another-api");
    assert_eq!(manage(&node, &elsewhere, "whoami").await.0, 401);
    let admin = token(json!(["platform-admins"]), "portcullis-management");
    assert_eq!(manage(&node, &admin, "operators").await.0, 200);
    // Refusals name the OIDC subject in the change records.
    // (The audit writer works in batches: wait for them.)
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        let (status, records) = manage(&node, &admin, "audit/changes?outcome=denied").await;
        assert_eq!(status, 200);
        let by_alice = records["records"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|r| r["who"]["subject"] == "oidc:alice@corp" && r["who"]["kind"] == "user")
            .count();
        if by_alice == 2 {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "{records}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    // The Management MCP's metadata names the operators' identity provider.
    let metadata: Value = reqwest::get(format!(
        "{}/.well-known/oauth-protected-resource/api/v1/mcp",
        node.admin
    ))
    .await
    .unwrap()
    .json()
    .await
    .unwrap();
    assert_eq!(metadata["authorization_servers"], json!([idp.issuer()]));
}
