//! Identity through the real binary: every authentication and authorization denial with its
//! exact status, body and headers; the API token lifecycle; environment isolation; and what the
//! upstream is (and is not) told about the caller.

mod support;

use std::time::{Duration, Instant};

use support::{Node, Upstream, code};

fn config(up: &str) -> String {
    format!(
        r#"
collections:
  - id: orders
    base_path: /orders
    upstreams: {{ sandbox: "{up}/orders-sbx", production: "{up}/orders-prod" }}
    operations:
      - {{ id: list, methods: [GET], path: /, scopes: [orders:read] }}
      - {{ id: purge, methods: [DELETE], path: /, scopes: [orders:read, orders:admin] }}
  - id: billing
    base_path: /billing
    upstreams: {{ sandbox: "{up}/billing-sbx" }}
    operations:
      - {{ id: invoices, methods: [GET], path: /invoices }}
  - id: ledger
    base_path: /ledger
    upstreams: {{ production: "{up}/ledger-prod" }}
    operations:
      - {{ id: entries, methods: [GET], path: /entries }}
clients:
  - id: acme
    partner: acme-corp
    profiles:
      - {{ id: acme-sbx, environment: sandbox, collections: [orders, billing], scopes: [orders:read] }}
      - {{ id: acme-prod, environment: production, collections: [orders, ledger], scopes: [orders:read, orders:admin] }}
      - {{ id: acme-off, environment: sandbox, collections: [orders], scopes: [orders:read], active: false }}
      - {{ id: acme-old, environment: sandbox, collections: [orders], scopes: [orders:read], expires_at: "2020-01-01T00:00:00Z" }}
      - {{ id: acme-lan, environment: sandbox, collections: [orders], scopes: [orders:read], ip_allowlist: [10.0.0.0/8, "192.0.2.7"] }}
  - id: dormant
    active: false
    profiles:
      - {{ id: dormant-sbx, environment: sandbox, collections: [orders], scopes: [orders:read] }}
"#
    )
}

struct Fixture {
    node: Node,
    up: Upstream,
}

async fn fixture() -> Fixture {
    let up = Upstream::start().await;
    let node = Node::builder()
        .config(&config(&up.url()))
        .without_tester()
        .start();
    Fixture { node, up }
}

async fn call(
    node: &Node,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
) -> reqwest::Response {
    let mut req = reqwest::Client::new().request(
        reqwest::Method::from_bytes(method.as_bytes()).unwrap(),
        format!("{}{path}", node.gateway),
    );
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    req.send().await.unwrap()
}

/// Status, error code, message and `WWW-Authenticate` of a refusal.
async fn refusal(r: reqwest::Response) -> (u16, String, String, Option<String>) {
    let status = r.status().as_u16();
    let challenge = r
        .headers()
        .get("www-authenticate")
        .map(|v| v.to_str().unwrap().to_owned());
    assert!(r.headers().contains_key("x-request-id"));
    let body: serde_json::Value = r.json().await.unwrap();
    let code = body["error"]["code"]
        .as_str()
        .unwrap_or_else(|| panic!("not a refusal: {status} {body}"));
    (
        status,
        code.to_owned(),
        body["error"]["message"].as_str().unwrap().to_owned(),
        challenge,
    )
}

#[tokio::test]
async fn authentication_failures_look_alike() {
    let f = fixture().await;
    let node = &f.node;
    let token = node.issue_token("acme", "acme-sbx", &[]).await;
    let bearer = format!("Bearer {token}");

    let (status, code, _, challenge) = refusal(call(node, "GET", "/orders", &[]).await).await;
    assert_eq!((status, code.as_str()), (401, "unauthenticated"));
    assert_eq!(challenge.as_deref(), Some(r#"Bearer realm="portcullis""#));

    // Wrong credential, unknown client, mismatched profile, garbage: one identical answer.
    let unknown = portcullis::auth::token::generate();
    let bad_bearer = format!("Bearer {unknown}");
    // Change the last character to one it is not (a fixed 'x' would equal it one time in 62).
    let last = if token.ends_with('x') { 'y' } else { 'x' };
    let tampered = format!("Bearer {}{last}", &token[..token.len() - 1]);
    let huge = "x".repeat(6000);
    let cases: Vec<Vec<(&str, &str)>> = vec![
        vec![("authorization", &bad_bearer)],
        vec![("authorization", &tampered)],
        vec![("authorization", "Bearer not-a-token")],
        vec![("authorization", "Basic YWNtZTpzZWNyZXQ=")],
        vec![("authorization", "Bearer")],
        vec![
            ("authorization", &bad_bearer),
            ("x-client-id", "acme"),
            ("x-profile-id", "acme-sbx"),
        ],
        vec![
            ("authorization", &bearer),
            ("x-client-id", "no-such-client"),
        ],
        vec![("authorization", &bearer), ("x-client-id", "dormant")],
        vec![("authorization", &bearer), ("x-profile-id", "acme-prod")],
        vec![("authorization", &huge)],
    ];
    let mut answers = Vec::new();
    for headers in &cases {
        answers.push(refusal(call(node, "GET", "/orders", headers).await).await);
    }
    let first = answers[0].clone();
    assert_eq!((first.0, first.1.as_str()), (401, "invalid_credential"));
    assert_eq!(
        first.3.as_deref(),
        Some(r#"Bearer realm="portcullis", error="invalid_token""#)
    );
    for (headers, answer) in cases.iter().zip(&answers) {
        assert_eq!(answer, &first, "{headers:?}");
    }
    assert!(
        f.up.seen().is_empty(),
        "a refused request reached the upstream"
    );

    // The right token, with or without agreeing headers, passes.
    for headers in [
        vec![("authorization", bearer.as_str())],
        vec![
            ("authorization", bearer.as_str()),
            ("x-client-id", "acme"),
            ("x-profile-id", "acme-sbx"),
        ],
        vec![("authorization", &format!("bearer {token}"))],
    ] {
        assert_eq!(
            call(node, "GET", "/orders", &headers).await.status(),
            200,
            "{headers:?}"
        );
    }
}

#[tokio::test]
async fn every_authorization_denial_has_its_code() {
    let f = fixture().await;
    let node = &f.node;
    let mut tokens = std::collections::HashMap::new();
    for (client, profile) in [
        ("acme", "acme-sbx"),
        ("dormant", "dormant-sbx"),
        ("acme", "acme-off"),
        ("acme", "acme-old"),
        ("acme", "acme-lan"),
    ] {
        let t = node.issue_token(client, profile, &[]).await;
        tokens.insert(profile, format!("Bearer {t}"));
    }
    let token = |_client: &str, profile: &str| tokens[profile].clone();
    let sbx = token("acme", "acme-sbx");
    let cases = [
        (
            token("dormant", "dormant-sbx"),
            "GET",
            "/orders",
            "client_inactive",
            "this client is deactivated",
        ),
        (
            token("acme", "acme-off"),
            "GET",
            "/orders",
            "profile_inactive",
            "this profile is deactivated",
        ),
        (
            token("acme", "acme-old"),
            "GET",
            "/orders",
            "profile_inactive",
            "this profile has expired",
        ),
        (
            token("acme", "acme-lan"),
            "GET",
            "/orders",
            "ip_not_allowed",
            "requests from 127.0.0.1 are not allowed for this profile",
        ),
        (
            sbx.clone(),
            "GET",
            "/ledger/entries",
            "product_not_granted",
            "this profile is not granted the 'ledger' API in sandbox",
        ),
        (
            sbx.clone(),
            "DELETE",
            "/orders",
            "insufficient_scope",
            "this operation requires the scopes: orders:admin",
        ),
    ];
    for (bearer, method, path, want_code, want_message) in cases {
        let (status, code, message, challenge) =
            refusal(call(node, method, path, &[("authorization", &bearer)]).await).await;
        assert_eq!(
            (status, code.as_str(), message.as_str()),
            (403, want_code, want_message),
            "{path}"
        );
        if want_code == "insufficient_scope" {
            assert_eq!(
                challenge.as_deref(),
                Some(
                    r#"Bearer realm="portcullis", error="insufficient_scope", scope="orders:read orders:admin""#
                )
            );
        } else {
            assert_eq!(challenge, None);
        }
    }
    assert!(
        f.up.seen().is_empty(),
        "a refused request reached the upstream"
    );
    // Granted and in scope: allowed.
    assert_eq!(
        call(node, "GET", "/billing/invoices", &[("authorization", &sbx)])
            .await
            .status(),
        200
    );
}

#[tokio::test]
async fn environments_are_isolated() {
    let f = fixture().await;
    let node = &f.node;
    let sbx = format!("Bearer {}", node.issue_token("acme", "acme-sbx", &[]).await);
    let prod = format!(
        "Bearer {}",
        node.issue_token("acme", "acme-prod", &[]).await
    );
    assert_eq!(
        call(node, "GET", "/orders", &[("authorization", &sbx)])
            .await
            .status(),
        200
    );
    assert_eq!(f.up.last().target, "/orders-sbx/");
    assert_eq!(
        call(node, "GET", "/orders", &[("authorization", &prod)])
            .await
            .status(),
        200
    );
    assert_eq!(f.up.last().target, "/orders-prod/");
    // The production profile may purge; the sandbox one may not, and never reaches production.
    assert_eq!(
        call(node, "DELETE", "/orders", &[("authorization", &prod)])
            .await
            .status(),
        200
    );
    assert_eq!(f.up.last().target, "/orders-prod/");
    // billing exists only in sandbox: a production caller is not granted it there.
    let (status, code, ..) = refusal(
        call(
            node,
            "GET",
            "/billing/invoices",
            &[("authorization", &prod)],
        )
        .await,
    )
    .await;
    assert_eq!((status, code.as_str()), (403, "product_not_granted"));
    let seen: Vec<String> = f.up.seen().into_iter().map(|s| s.target).collect();
    assert!(
        seen.iter().filter(|t| t.contains("prod")).count() == 2,
        "{seen:?}"
    );
}

#[tokio::test]
async fn the_upstream_learns_who_called_but_never_the_credential() {
    let f = fixture().await;
    let node = &f.node;
    let token = node
        .issue_token("acme", "acme-sbx", &["--id", "acme-sbx-main"])
        .await;
    let r = call(
        node,
        "GET",
        "/orders",
        &[
            ("authorization", &format!("Bearer {token}")),
            ("x-portcullis-client", "someone-else"),
            ("x_portcullis_subject", "admin@victim"),
            ("x_forwarded_for", "10.0.0.1"),
            ("x-portcullis-scopes", "orders:admin"),
            ("cookie", "session=abc"),
        ],
    )
    .await;
    assert_eq!(r.status(), 200);
    let seen = f.up.last();
    assert!(seen.header("authorization").is_none());
    // Underscore spellings that CGI-style servers read as the same header are dropped too.
    assert!(seen.header("x_portcullis_subject").is_none());
    assert!(seen.header("x_forwarded_for").is_none());
    assert_eq!(seen.header("x-portcullis-client"), Some("acme"));
    assert_eq!(seen.header("x-portcullis-profile"), Some("acme-sbx"));
    assert_eq!(seen.header("x-portcullis-environment"), Some("sandbox"));
    assert_eq!(seen.header("x-portcullis-partner"), Some("acme-corp"));
    assert_eq!(
        seen.header("x-portcullis-credential"),
        Some("acme-sbx-main")
    );
    assert_eq!(seen.header("x-portcullis-scopes"), Some("orders:read"));
    let all = format!("{:?}", seen.headers);
    assert!(
        !all.contains(&token[4..]),
        "the token reached the upstream: {all}"
    );
}

async fn status_with(node: &Node, token: &str) -> u16 {
    call(
        node,
        "GET",
        "/orders",
        &[("authorization", &format!("Bearer {token}"))],
    )
    .await
    .status()
    .as_u16()
}

/// Waits until the node serves at least the configuration version the CLI just printed.
async fn settle(node: &Node, out: &std::process::Output) {
    node.wait_for_version(support::printed_version(out)).await;
}

#[tokio::test]
async fn token_lifecycle_issue_rotate_revoke_expire() {
    let f = fixture().await;
    let node = &f.node;
    let first = node
        .issue_token("acme", "acme-sbx", &["--id", "first"])
        .await;
    assert_eq!(status_with(node, &first).await, 200);

    // Rotate with a short overlap: both work at first, then only the new one.
    let out = node.cli(&[
        "credential",
        "rotate",
        "--client",
        "acme",
        "--profile",
        "acme-sbx",
        "--old",
        "first",
        "--id",
        "second",
        "--overlap",
        "2s",
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let second = support::token_in(&out);
    settle(node, &out).await;
    let rotated_at = Instant::now();
    assert_eq!(status_with(node, &first).await, 200);
    assert_eq!(status_with(node, &second).await, 200);
    tokio::time::sleep(
        Duration::from_secs(2).saturating_sub(rotated_at.elapsed()) + Duration::from_millis(300),
    )
    .await;
    assert_eq!(
        status_with(node, &first).await,
        401,
        "the old token outlived its overlap"
    );
    assert_eq!(status_with(node, &second).await, 200);

    // Revoke: refused once the node has the new version.
    let out = node.cli(&[
        "credential",
        "revoke",
        "--client",
        "acme",
        "--profile",
        "acme-sbx",
        "--id",
        "second",
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    settle(node, &out).await;
    assert_eq!(status_with(node, &second).await, 401);

    // Expiry.
    let out = node.cli(&[
        "credential",
        "issue",
        "--client",
        "acme",
        "--profile",
        "acme-sbx",
        "--id",
        "brief",
        "--expires-in",
        "1s",
    ]);
    let brief = support::token_in(&out);
    settle(node, &out).await;
    assert_eq!(status_with(node, &brief).await, 200);
    tokio::time::sleep(Duration::from_millis(1300)).await;
    assert_eq!(status_with(node, &brief).await, 401);

    // The access report shows all of it; the export shows hashes, never tokens.
    let access = String::from_utf8_lossy(
        &node
            .cli(&["access", "--client", "acme", "--profile", "acme-sbx"])
            .stdout,
    )
    .into_owned();
    assert!(access.contains("first api_token: expired"), "{access}");
    assert!(access.contains("second api_token: revoked"), "{access}");
    assert!(
        access.contains("GET     /orders/  orders.list  allowed"),
        "{access}"
    );
    assert!(
        access.contains("DENIED: missing scopes orders:admin"),
        "{access}"
    );
    let export = String::from_utf8_lossy(&node.cli(&["export"]).stdout).into_owned();
    for t in [&first, &second, &brief] {
        assert!(!export.contains(&t[4..]), "a token is in the export");
    }
    // Unknown targets are clear errors.
    let out = node.cli(&[
        "credential",
        "revoke",
        "--client",
        "acme",
        "--profile",
        "nope",
        "--id",
        "x",
    ]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("no profile 'nope' for client 'acme'"));
}

#[tokio::test]
async fn tokens_from_another_secret_are_refused() {
    let f = fixture().await;
    let node = &f.node;
    // Issued by a CLI holding a different server secret: stored, but never matches here.
    let other = node.cli(&[
        "--token-secret",
        &"y".repeat(40),
        "credential",
        "issue",
        "--client",
        "acme",
        "--profile",
        "acme-sbx",
    ]);
    assert!(other.status.success());
    let token = support::token_in(&other);
    settle(node, &other).await;
    assert_eq!(status_with(node, &token).await, 401);
    assert_eq!(
        code(
            &call(
                node,
                "GET",
                "/orders",
                &[("authorization", &format!("Bearer {token}"))]
            )
            .await
            .text()
            .await
            .unwrap()
        ),
        "invalid_credential"
    );
}

/// Regression: re-applying the original file (which lists no credentials) once deleted every
/// issued token and would have lifted revocations.
#[tokio::test]
async fn reapplying_a_file_keeps_issued_credentials_and_revocations() {
    let f = fixture().await;
    let node = &f.node;
    let kept = node
        .issue_token("acme", "acme-sbx", &["--id", "kept"])
        .await;
    let revoked = node
        .issue_token("acme", "acme-sbx", &["--id", "revoked"])
        .await;
    let out = node.cli(&[
        "credential",
        "revoke",
        "--client",
        "acme",
        "--profile",
        "acme-sbx",
        "--id",
        "revoked",
    ]);
    settle(node, &out).await;

    // The original file again: no credentials listed.
    node.apply(&config(&f.up.url())).await;
    assert_eq!(status_with(node, &kept).await, 200);
    assert_eq!(status_with(node, &revoked).await, 401);

    // An export lists both; editing the revocation out of it does not lift it.
    let export = String::from_utf8_lossy(&node.cli(&["export"]).stdout).into_owned();
    assert!(
        export.contains("id: kept") && export.contains("revoked_at:"),
        "{export}"
    );
    let unrevoked: String = export
        .lines()
        .filter(|l| !l.trim_start().starts_with("revoked_at:"))
        .map(|l| format!("{l}\n"))
        .collect();
    let file = node.data_dir.join("unrevoked.yaml");
    std::fs::write(&file, unrevoked).unwrap();
    let out = node.cli(&["apply", "-f", file.to_str().unwrap()]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("No changes"),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    assert_eq!(status_with(node, &revoked).await, 401);

    // Deleting a profile's credentials takes --prune (or deleting the profile).
    let out = node.cli(&[
        "apply",
        "-f",
        node.data_dir.join("initial.yaml").to_str().unwrap(),
        "--prune",
        "--dry-run",
    ]);
    assert!(String::from_utf8_lossy(&out.stdout).contains("- credential acme/acme-sbx/kept"));
}
