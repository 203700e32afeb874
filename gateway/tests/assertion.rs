//! Client-signed assertions through the real binary: a partner service signs a short-lived JWT
//! with its own key (or a shared secret) and is identified by it; anything else is refused.

mod support;

use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::{Value, json};
use support::{Node, Upstream};

const SECRET: &str = "a-shared-secret-of-at-least-32-bytes!!";

fn config(up: &str, public_pem: &str) -> String {
    let pem: String = public_pem
        .lines()
        .map(|l| format!("              {l}\n"))
        .collect();
    format!(
        r#"
collections:
  - id: orders
    base_path: /orders
    upstreams: {{ sandbox: "{up}/sbx" }}
    operations:
      - {{ id: list, methods: [GET], path: / }}
clients:
  - id: partner-svc
    profiles:
      - id: partner-sbx
        environment: sandbox
        collections: [orders]
        credentials:
          - id: svc-key
            kind: signed_jwt
            public_key_pem: |
{pem}          - {{ id: svc-secret, kind: signed_jwt, secret_env: UPSTREAM_TEST_ASSERTION_SECRET }}
          - {{ id: svc-unset, kind: signed_jwt, secret_env: UPSTREAM_TEST_NEVER_SET }}
  - id: other-svc
    profiles:
      - {{ id: other-sbx, environment: sandbox, collections: [orders] }}
"#
    )
}

fn now() -> i64 {
    time::OffsetDateTime::now_utc().unix_timestamp()
}

fn claims() -> Value {
    json!({"iss": "partner-svc", "sub": "partner-svc", "aud": "portcullis", "iat": now(), "exp": now() + 60})
}

fn sign(alg: Algorithm, kid: &str, claims: &Value, key: &EncodingKey) -> String {
    let mut header = Header::new(alg);
    header.kid = Some(kid.to_owned());
    jsonwebtoken::encode(&header, claims, key).unwrap()
}

async fn status(node: &Node, token: &str) -> u16 {
    reqwest::Client::new()
        .get(format!("{}/orders", node.gateway))
        .bearer_auth(token)
        .send()
        .await
        .unwrap()
        .status()
        .as_u16()
}

#[tokio::test]
async fn client_signed_assertions() {
    let up = Upstream::start().await;
    let pair = rcgen::KeyPair::generate().unwrap();
    let key = EncodingKey::from_ec_pem(pair.serialize_pem().as_bytes()).unwrap();
    let secret = EncodingKey::from_secret(SECRET.as_bytes());
    let node = Node::builder()
        .config(&config(&up.url(), &pair.public_key_pem()))
        .without_tester()
        .env("UPSTREAM_TEST_ASSERTION_SECRET", SECRET)
        .start();

    assert_eq!(
        status(&node, &sign(Algorithm::ES256, "svc-key", &claims(), &key)).await,
        200
    );
    assert_eq!(up.last().header("x-portcullis-credential"), Some("svc-key"));
    assert_eq!(up.last().header("x-portcullis-client"), Some("partner-svc"));
    assert_eq!(
        status(
            &node,
            &sign(Algorithm::HS256, "svc-secret", &claims(), &secret)
        )
        .await,
        200
    );
    assert_eq!(
        up.last().header("x-portcullis-credential"),
        Some("svc-secret")
    );
    let seen_before = up.seen().len();

    let with = |f: &dyn Fn(&mut Value)| {
        let mut c = claims();
        f(&mut c);
        c
    };
    let refused = [
        (
            "lives too long",
            sign(
                Algorithm::ES256,
                "svc-key",
                &with(&|c| c["exp"] = (now() + 3600).into()),
                &key,
            ),
        ),
        (
            "expired",
            sign(
                Algorithm::ES256,
                "svc-key",
                &with(&|c| {
                    c["iat"] = (now() - 200).into();
                    c["exp"] = (now() - 100).into();
                }),
                &key,
            ),
        ),
        (
            "issued in the future",
            sign(
                Algorithm::ES256,
                "svc-key",
                &with(&|c| {
                    c["iat"] = (now() + 600).into();
                    c["exp"] = (now() + 700).into();
                }),
                &key,
            ),
        ),
        (
            "no iat",
            sign(
                Algorithm::ES256,
                "svc-key",
                &with(&|c| {
                    c.as_object_mut().unwrap().remove("iat");
                }),
                &key,
            ),
        ),
        (
            "wrong audience",
            sign(
                Algorithm::ES256,
                "svc-key",
                &with(&|c| c["aud"] = "elsewhere".into()),
                &key,
            ),
        ),
        (
            "another client's name",
            sign(
                Algorithm::ES256,
                "svc-key",
                &with(&|c| c["iss"] = "other-svc".into()),
                &key,
            ),
        ),
        (
            "HS256 with the public key as secret",
            sign(
                Algorithm::HS256,
                "svc-key",
                &claims(),
                &EncodingKey::from_secret(pair.public_key_pem().as_bytes()),
            ),
        ),
        (
            "the secret credential signed with the key",
            sign(Algorithm::ES256, "svc-secret", &claims(), &key),
        ),
        (
            "a wrong secret",
            sign(
                Algorithm::HS256,
                "svc-secret",
                &claims(),
                &EncodingKey::from_secret(b"not-the-shared-secret-not-the-shared"),
            ),
        ),
        (
            "a secret the node does not have",
            sign(Algorithm::HS256, "svc-unset", &claims(), &secret),
        ),
        (
            "unknown kid",
            sign(Algorithm::ES256, "nobody", &claims(), &key),
        ),
    ];
    for (name, token) in refused {
        assert_eq!(status(&node, &token).await, 401, "{name}");
    }
    assert_eq!(
        up.seen().len(),
        seen_before,
        "a refused assertion reached the upstream"
    );
}
