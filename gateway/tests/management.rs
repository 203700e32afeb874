//! The management API as operators meet it today: the bootstrap admin of an empty store,
//! service tokens with roles, the role matrix on the audit endpoints, and revocation taking
//! effect at once.

mod support;

use serde_json::Value;
use support::*;

/// The bootstrap admin token a first start printed.
fn bootstrap_token(node: &Node) -> Option<String> {
    node.stdout
        .iter()
        .map(|l| l.trim())
        .find(|l| l.starts_with("pco_"))
        .map(str::to_owned)
}

async fn get(node: &Node, token: Option<&str>, path: &str) -> (u16, Value) {
    let mut request = reqwest::Client::new().get(format!("{}{path}", node.admin));
    if let Some(token) = token {
        request = request.bearer_auth(token);
    }
    let response = request.send().await.unwrap();
    let status = response.status().as_u16();
    (status, response.json().await.unwrap())
}

/// The records at `path` (an `/api/v1/audit/…` query), waiting up to 10 s until there are `n`
/// (the audit writer works in batches).
async fn changes(node: &Node, token: &str, path: &str, n: usize) -> Vec<Value> {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        let (status, body) = get(node, Some(token), path).await;
        assert_eq!(status, 200, "{body}");
        let records = body["records"].as_array().unwrap().clone();
        if records.len() >= n || std::time::Instant::now() > deadline {
            return records;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
}

/// Creates an operator through the CLI and returns its token.
fn operator(node: &Node, id: &str, role: &str) -> String {
    let out = node.cli(&["operator", "token", "--id", id, "--role", role]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .find(|l| l.starts_with("pco_"))
        .unwrap()
        .to_owned()
}

#[tokio::test]
async fn operators_act_under_their_roles() {
    let up = Upstream::start().await;
    let node = Node::with_config(&collection(
        "orders",
        "/orders",
        &up.url(),
        "      - { id: list, methods: [GET], path: / }\n",
    ));
    let admin = bootstrap_token(&node).expect("a first start prints the bootstrap admin token");
    let (status, me) = get(&node, Some(&admin), "/api/v1/whoami").await;
    assert_eq!(status, 200);
    assert_eq!(me["id"], "bootstrap-admin");
    assert_eq!(me["roles"], serde_json::json!(["admin"]));

    // Without a valid operator token: 401, whatever is presented.
    let (status, body) = get(&node, None, "/api/v1/whoami").await;
    assert_eq!(
        (status, code(&body.to_string())),
        (401, "unauthenticated".into())
    );
    let data_plane_token = node.token.clone().unwrap();
    for bad in ["pco_nonsense", "garbage", data_plane_token.as_str()] {
        let (status, body) = get(&node, Some(bad), "/api/v1/whoami").await;
        assert_eq!(
            (status, code(&body.to_string())),
            (401, "invalid_credential".into()),
            "{bad}"
        );
    }

    // Some traffic to read about.
    for _ in 0..3 {
        assert_eq!(node.get("/orders/").await.status(), 200);
    }
    assert_eq!(node.get("/nowhere").await.status(), 404);
    records(&node, 4);

    let auditor = operator(&node, "auditor-1", "auditor");
    let viewer = operator(&node, "viewer-1", "viewer");
    let editor = operator(&node, "editor-1", "editor");

    // The role matrix on the audit endpoints: admin and auditor read records; viewer and
    // editor are refused, and say which permission was missing.
    for (token, allowed) in [
        (&admin, true),
        (&auditor, true),
        (&viewer, false),
        (&editor, false),
    ] {
        let (status, body) = get(&node, Some(token), "/api/v1/audit/requests").await;
        if allowed {
            assert_eq!(status, 200, "{body}");
        } else {
            assert_eq!(
                (status, code(&body.to_string())),
                (403, "permission_denied".into())
            );
            assert!(
                body["error"]["message"]
                    .as_str()
                    .unwrap()
                    .contains("read_audit")
            );
        }
    }
    let (_, me) = get(&node, Some(&auditor), "/api/v1/whoami").await;
    assert_eq!(me["permissions"], serde_json::json!(["read_audit"]));

    // Pages with a cursor, filters as in `portcullis audit query`.
    let (_, first) = get(&node, Some(&auditor), "/api/v1/audit/requests?limit=2").await;
    assert_eq!(first["records"].as_array().unwrap().len(), 2);
    let cursor = first["next_cursor"].as_str().unwrap();
    let (_, second) = get(
        &node,
        Some(&auditor),
        &format!("/api/v1/audit/requests?limit=2&cursor={cursor}"),
    )
    .await;
    assert_eq!(second["records"].as_array().unwrap().len(), 2);
    assert_ne!(
        first["records"][0]["request_id"],
        second["records"][0]["request_id"]
    );
    // NDJSON export: the stored records line by line, the next cursor in a header.
    let export = reqwest::Client::new()
        .get(format!(
            "{}/api/v1/audit/requests?format=ndjson&limit=3",
            node.admin
        ))
        .bearer_auth(&auditor)
        .send()
        .await
        .unwrap();
    assert_eq!(export.headers()["content-type"], "application/x-ndjson");
    assert!(export.headers().contains_key("x-next-cursor"));
    let text = export.text().await.unwrap();
    let lines: Vec<Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 3);
    assert_eq!(lines[0]["request_id"], first["records"][0]["request_id"]);
    let (_, refused) = get(
        &node,
        Some(&auditor),
        "/api/v1/audit/requests?reason=route_not_found",
    )
    .await;
    let refused = refused["records"].as_array().unwrap();
    assert_eq!(refused.len(), 1);
    assert_eq!(refused[0]["status"], 404);
    let (status, verified) = get(&node, Some(&auditor), "/api/v1/audit/verify").await;
    assert_eq!(status, 200);
    assert_eq!(verified["intact"], true, "{verified}");
    assert!(verified["nodes"][0]["records"].as_u64().unwrap() >= 4);

    for bad in [
        "limit=0",
        "limit=5000",
        "since=yesterday",
        "cursor=zzz",
        "colour=red",
        "status=abc",
        "format=xml",
    ] {
        let (status, body) = get(
            &node,
            Some(&auditor),
            &format!("/api/v1/audit/requests?{bad}"),
        )
        .await;
        assert_eq!(
            (status, code(&body.to_string())),
            (400, "bad_request".into()),
            "{bad}"
        );
    }
    let r = reqwest::Client::new()
        .post(format!("{}/api/v1/audit/requests", node.admin))
        .bearer_auth(&auditor)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 405);
    let (status, _) = get(&node, Some(&admin), "/api/v1/nothing-here").await;
    assert_eq!(status, 404);

    // A revocation counts at once, on the next request.
    let out = node.cli(&["operator", "revoke", "--id", "auditor-1"]);
    assert!(out.status.success());
    let (status, _) = get(&node, Some(&auditor), "/api/v1/audit/requests").await;
    assert_eq!(status, 401);
    // Every refused attempt left a change record, in the same chain as the request records:
    // no token, three bad ones, viewer and editor refused, the revoked auditor.
    let changes = changes(&node, &admin, "/api/v1/audit/changes", 7).await;
    assert_eq!(changes.len(), 7, "{changes:#?}");
    let reasons: Vec<&str> = changes
        .iter()
        .map(|c| c["reason"].as_str().unwrap())
        .collect();
    assert_eq!(
        reasons,
        [
            "unauthenticated",
            "invalid_credential",
            "invalid_credential",
            "invalid_credential",
            "permission_denied",
            "permission_denied",
            "invalid_credential"
        ]
    );
    let viewer_refused = &changes[4];
    assert_eq!(viewer_refused["kind"], "change");
    assert_eq!(viewer_refused["channel"], "api");
    assert_eq!(viewer_refused["who"]["subject"], "viewer-1");
    assert_eq!(viewer_refused["who"]["kind"], "service");
    assert_eq!(
        viewer_refused["who"]["roles"],
        serde_json::json!(["viewer"])
    );
    assert_eq!(viewer_refused["who"]["source_ip"], "127.0.0.1");
    assert_eq!(viewer_refused["action"], "request_records.read");
    assert_eq!(
        (
            viewer_refused["outcome"].as_str(),
            viewer_refused["status"].as_u64()
        ),
        (Some("denied"), Some(403))
    );
    assert_eq!(changes[0]["who"]["kind"], "unknown");
    // No secret in any of them, and request records stay apart.
    let text = serde_json::to_string(&changes).unwrap();
    for token in [&admin, &auditor, &viewer, &editor, &data_plane_token] {
        assert!(!text.contains(token.as_str()));
    }
    let (_, requests) = get(&node, Some(&admin), "/api/v1/audit/requests?limit=1000").await;
    assert!(
        requests["records"]
            .as_array()
            .unwrap()
            .iter()
            .all(|r| r.get("kind").is_none())
    );
    let (_, verified) = get(&node, Some(&admin), "/api/v1/audit/verify").await;
    assert_eq!(verified["intact"], true, "{verified}");

    // Operators are listed without their tokens.
    let listed = String::from_utf8_lossy(&node.cli(&["operator", "list"]).stdout).into_owned();
    assert!(listed.contains("\"id\":\"auditor-1\"") && listed.contains("revoked_at"));
    for token in [&admin, &auditor, &viewer, &editor] {
        assert!(!listed.contains(token.as_str()));
    }
}

#[tokio::test]
async fn the_bootstrap_admin_is_made_once_or_taken_from_the_environment() {
    let dir = tempfile::tempdir().unwrap();
    let first = Node::builder().data_dir(dir.path()).start();
    let token = bootstrap_token(&first).unwrap();
    drop(first);
    // A second start of the same store prints no new token; the first still works.
    let second = Node::builder().data_dir(dir.path()).start();
    assert_eq!(bootstrap_token(&second), None);
    assert_eq!(get(&second, Some(&token), "/api/v1/whoami").await.0, 200);

    // From the environment: nothing printed, and that token is the admin's.
    let chosen = portcullis::auth::token::generate_with(portcullis::auth::token::OPERATOR_PREFIX);
    let third = Node::builder()
        .env("PORTCULLIS_BOOTSTRAP_ADMIN_TOKEN", &chosen)
        .start();
    assert_eq!(bootstrap_token(&third), None);
    let (status, me) = get(&third, Some(&chosen), "/api/v1/whoami").await;
    assert_eq!((status, me["roles"][0].as_str()), (200, Some("admin")));
}

async fn send(
    node: &Node,
    token: &str,
    method: reqwest::Method,
    path: &str,
    body: Option<Value>,
) -> (u16, Value) {
    let mut request = reqwest::Client::new()
        .request(method, format!("{}{path}", node.admin))
        .bearer_auth(token);
    if let Some(body) = body {
        request = request.json(&body);
    }
    let response = request.send().await.unwrap();
    let status = response.status().as_u16();
    let text = response.text().await.unwrap();
    (status, serde_json::from_str(&text).unwrap_or(Value::Null))
}

#[tokio::test]
async fn operators_are_managed_through_the_api_and_every_change_is_recorded() {
    use reqwest::Method;
    let node = Node::builder().start();
    let admin = bootstrap_token(&node).unwrap();
    let editor = operator(&node, "editor-1", "editor");

    // Only admins manage operators.
    let (status, _) = send(&node, &editor, Method::GET, "/api/v1/operators", None).await;
    assert_eq!(status, 403);
    let new = serde_json::json!({"id": "deployer", "roles": ["editor"], "description": "CI"});
    let (status, _) = send(
        &node,
        &editor,
        Method::POST,
        "/api/v1/operators",
        Some(new.clone()),
    )
    .await;
    assert_eq!(status, 403);

    let (status, created) = send(
        &node,
        &admin,
        Method::POST,
        "/api/v1/operators",
        Some(new.clone()),
    )
    .await;
    assert_eq!(status, 201, "{created}");
    let token = created["token"].as_str().unwrap().to_owned();
    assert!(token.starts_with("pco_"));
    assert!(created.get("token_hash").is_none());
    let (status, me) = get(&node, Some(&token), "/api/v1/whoami").await;
    assert_eq!((status, me["id"].as_str()), (200, Some("deployer")));

    // Bad bodies change nothing and name the fields; an existing id conflicts.
    for (body, needle) in [
        (
            serde_json::json!({"id": "x y", "roles": ["owner"]}),
            "roles[0]: 'owner'",
        ),
        (
            serde_json::json!({"id": "ok", "roles": []}),
            "roles: at least one",
        ),
        (
            serde_json::json!({"id": "ok", "roles": ["viewer"], "colour": "red"}),
            "unknown field `colour`",
        ),
        (
            serde_json::json!({"id": "ok", "roles": ["viewer"], "expires_at": "2001-01-01T00:00:00Z"}),
            "expires_at: must be in the future",
        ),
    ] {
        let (status, answer) =
            send(&node, &admin, Method::POST, "/api/v1/operators", Some(body)).await;
        assert_eq!(
            (status, code(&answer.to_string())),
            (422, "invalid_body".into())
        );
        assert!(
            answer["error"]["message"]
                .as_str()
                .unwrap()
                .contains(needle),
            "{answer}"
        );
    }
    let (status, answer) = send(&node, &admin, Method::POST, "/api/v1/operators", Some(new)).await;
    assert_eq!(
        (status, code(&answer.to_string())),
        (409, "conflict".into())
    );
    let (_, list) = send(&node, &admin, Method::GET, "/api/v1/operators", None).await;
    let ids: Vec<&str> = list["operators"]
        .as_array()
        .unwrap()
        .iter()
        .map(|o| o["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, ["bootstrap-admin", "deployer", "editor-1"]);

    // Revocation through the API counts at once.
    let (status, revoked) = send(
        &node,
        &admin,
        Method::DELETE,
        "/api/v1/operators/deployer",
        None,
    )
    .await;
    assert_eq!(status, 200);
    assert!(revoked["revoked_at"].is_string());
    assert_eq!(get(&node, Some(&token), "/api/v1/whoami").await.0, 401);
    let (status, _) = send(
        &node,
        &admin,
        Method::DELETE,
        "/api/v1/operators/nobody",
        None,
    )
    .await;
    assert_eq!(status, 404);

    // The change records: the two refusals, the creation and the revocation, with before
    // and after, and never a token or its hash.
    let changes = changes(&node, &admin, "/api/v1/audit/changes", 5).await;
    let summary: Vec<(&str, &str)> = changes
        .iter()
        .map(|c| {
            (
                c["action"].as_str().unwrap(),
                c["outcome"].as_str().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        summary,
        [
            ("operators.read", "denied"),
            ("operators.create", "denied"),
            ("operators.create", "allowed"),
            ("operators.delete", "allowed"),
            ("whoami.read", "denied"),
        ]
    );
    let create = &changes[2];
    assert_eq!(create["who"]["subject"], "bootstrap-admin");
    assert_eq!(
        create["resource"],
        serde_json::json!({"kind": "operators", "id": "deployer"})
    );
    assert_eq!(create["after"]["roles"], serde_json::json!(["editor"]));
    assert_eq!(create["status"], 201);
    let delete = &changes[3];
    assert!(delete["before"]["revoked_at"].is_null());
    assert!(delete["after"]["revoked_at"].is_string());
    let text = serde_json::to_string(&changes).unwrap();
    assert!(!text.contains(&token) && !text.contains("token_hash"));
}

#[tokio::test]
async fn configuration_objects_are_edited_safely_through_the_api() {
    use reqwest::Method;
    let up = Upstream::start().await;
    let node = Node::with_config(&collection(
        "orders",
        "/orders",
        &up.url(),
        "      - { id: list, methods: [GET], path: / }\n",
    ));
    let admin = bootstrap_token(&node).unwrap();
    let viewer = operator(&node, "viewer-1", "viewer");
    let editor = operator(&node, "editor-1", "editor");

    // Viewers read, with an ETag; they cannot write.
    let (status, list) = send(&node, &viewer, Method::GET, "/api/v1/collections", None).await;
    assert_eq!(status, 200);
    assert_eq!(list["collections"][0]["id"], "orders");
    let r = reqwest::Client::new()
        .get(format!("{}/api/v1/collections/orders", node.admin))
        .bearer_auth(&viewer)
        .send()
        .await
        .unwrap();
    let etag = r.headers()["etag"].to_str().unwrap().to_owned();
    let mut orders: Value = r.json().await.unwrap();
    let (status, _) = send(
        &node,
        &viewer,
        Method::PUT,
        "/api/v1/collections/orders",
        Some(orders.clone()),
    )
    .await;
    assert_eq!(status, 403);

    // An editor creates a collection: validated like a file, live after the next poll.
    let billing = serde_json::json!({
        "id": "billing", "base_path": "/billing",
        "upstreams": {"sandbox": format!("{}/billing", up.url())},
        "operations": [{"id": "get", "methods": ["GET"], "path": "/"}]
    });
    let (status, created) = send(
        &node,
        &editor,
        Method::PUT,
        "/api/v1/collections/billing",
        Some(billing.clone()),
    )
    .await;
    assert_eq!(status, 201, "{created}");
    // Broken bodies: field paths relative to the body; nothing stored.
    let mut broken = billing.clone();
    broken["operations"][0]["path"] = "no-slash".into();
    let (status, answer) = send(
        &node,
        &editor,
        Method::PUT,
        "/api/v1/collections/billing",
        Some(broken),
    )
    .await;
    assert_eq!(
        (status, code(&answer.to_string())),
        (422, "invalid_body".into())
    );
    assert!(
        answer["error"]["message"]
            .as_str()
            .unwrap()
            .starts_with("operations[0].path:"),
        "{answer}"
    );
    let (status, answer) = send(
        &node,
        &editor,
        Method::PUT,
        "/api/v1/collections/billing",
        Some(serde_json::json!({"id": "billing", "colour": 1})),
    )
    .await;
    assert_eq!(status, 422, "{answer}");
    let (status, answer) = send(
        &node,
        &editor,
        Method::PUT,
        "/api/v1/collections/other",
        Some(billing.clone()),
    )
    .await;
    assert_eq!(
        (status, answer["error"]["message"].as_str()),
        (422, Some("id: must be 'other', as in the path"))
    );
    // Valid alone, not with what is stored.
    let mut clash = billing.clone();
    clash["id"] = "clash".into();
    clash["base_path"] = "/orders".into();
    let (status, answer) = send(
        &node,
        &editor,
        Method::PUT,
        "/api/v1/collections/clash",
        Some(clash),
    )
    .await;
    assert_eq!(
        (status, code(&answer.to_string())),
        (409, "conflict".into()),
        "{answer}"
    );

    // Concurrent edits: an If-Match that no longer holds is refused with 412.
    orders["description"] = "first edit".into();
    let put = |token: &str, body: &Value, if_match: &str| {
        reqwest::Client::new()
            .put(format!("{}/api/v1/collections/orders", node.admin))
            .bearer_auth(token)
            .header("if-match", if_match)
            .json(body)
            .send()
    };
    let first = put(&editor, &orders, &etag).await.unwrap();
    assert_eq!(first.status(), 200);
    let new_etag = first.headers()["etag"].to_str().unwrap().to_owned();
    assert_ne!(new_etag, etag);
    orders["description"] = "second edit, from the stale copy".into();
    let stale = put(&editor, &orders, &etag).await.unwrap();
    assert_eq!(stale.status(), 412);
    assert_eq!(code(&stale.text().await.unwrap()), "precondition_failed");
    assert_eq!(
        put(&editor, &orders, &new_etag).await.unwrap().status(),
        200
    );

    // Deleting what profiles are granted conflicts; deleting the rest works.
    let (status, answer) = send(
        &node,
        &editor,
        Method::DELETE,
        "/api/v1/collections/orders",
        None,
    )
    .await;
    assert_eq!(
        (status, code(&answer.to_string())),
        (409, "conflict".into())
    );
    let (status, _) = send(
        &node,
        &editor,
        Method::DELETE,
        "/api/v1/collections/billing",
        None,
    )
    .await;
    assert_eq!(status, 204);
    let (status, _) = send(
        &node,
        &viewer,
        Method::GET,
        "/api/v1/collections/billing",
        None,
    )
    .await;
    assert_eq!(status, 404);

    // A client through the API: credential hashes are never shown, nor recorded.
    let (_, tester) = send(&node, &viewer, Method::GET, "/api/v1/clients/tester", None).await;
    assert_eq!(
        tester["profiles"][0]["credentials"][0]["token_hash"],
        "[redacted]"
    );
    let exported =
        String::from_utf8_lossy(&node.cli(&["export", "--format", "json"]).stdout).into_owned();
    let exported: Value = serde_json::from_str(&exported).unwrap();
    let hash = exported["clients"][0]["profiles"][0]["credentials"][0]["token_hash"]
        .as_str()
        .unwrap()
        .to_owned();
    // Credentials are the admin's: an editor cannot slip one into a client.
    let mut smuggled = tester.clone();
    smuggled["profiles"][0]["credentials"]
        .as_array_mut()
        .unwrap()
        .push(serde_json::json!({"id": "mine", "kind": "mtls", "fingerprint_sha256": "ab".repeat(32)}));
    let (status, answer) = send(
        &node,
        &editor,
        Method::PUT,
        "/api/v1/clients/tester",
        Some(smuggled),
    )
    .await;
    assert_eq!(
        (status, code(&answer.to_string())),
        (403, "permission_denied".into())
    );
    // Nor can an admin's PUT change a stored credential's material: rotate for that.
    let mut swapped = exported["clients"][0].clone();
    swapped["profiles"][0]["credentials"][0]["token_hash"] = "00".repeat(32).into();
    let (status, _) = send(
        &node,
        &admin,
        Method::PUT,
        "/api/v1/clients/tester",
        Some(swapped),
    )
    .await;
    assert_eq!(status, 200);
    let after: Value = serde_json::from_str(&String::from_utf8_lossy(
        &node.cli(&["export", "--format", "json"]).stdout,
    ))
    .unwrap();
    assert_eq!(
        after["clients"][0]["profiles"][0]["credentials"][0]["token_hash"],
        hash.as_str()
    );
    let mut edited = tester.clone();
    edited["name"] = "Tester".into();
    let (status, _) = send(
        &node,
        &editor,
        Method::PUT,
        "/api/v1/clients/tester",
        Some(edited),
    )
    .await;
    assert_eq!(status, 200);
    // The data plane still takes the tester's token: the credential was kept.
    node.wait_for_version(node.ready().await["config_version"].as_u64().unwrap())
        .await;
    assert_eq!(node.get("/orders/").await.status(), 200);

    let changes = changes(&node, &admin, "/api/v1/audit/changes?outcome=allowed", 5).await;
    let actions: Vec<&str> = changes
        .iter()
        .map(|c| c["action"].as_str().unwrap())
        .collect();
    assert_eq!(
        actions,
        [
            "collections.create",
            "collections.update",
            "collections.update",
            "collections.delete",
            "clients.update"
        ]
    );
    assert_eq!(changes[1]["before"]["description"], Value::Null);
    assert_eq!(changes[1]["after"]["description"], "first edit");
    assert_eq!(changes[3]["before"]["id"], "billing");
    let text = serde_json::to_string(&changes).unwrap();
    assert!(
        !text.contains(&hash),
        "a credential hash in a change record"
    );
    assert!(text.contains("[redacted]"));
}

#[tokio::test]
async fn credentials_are_issued_rotated_and_revoked_through_the_api() {
    use reqwest::Method;
    let up = Upstream::start().await;
    let node = Node::with_config(&collection(
        "orders",
        "/orders",
        &up.url(),
        "      - { id: list, methods: [GET], path: / }\n",
    ));
    let admin = bootstrap_token(&node).unwrap();
    let editor = operator(&node, "editor-1", "editor");
    let base = "/api/v1/clients/tester/profiles/tester-sandbox/credentials";
    let call = |token: String| {
        let url = format!("{}/orders/", node.gateway);
        async move {
            reqwest::Client::new()
                .get(url)
                .bearer_auth(token)
                .send()
                .await
                .unwrap()
                .status()
                .as_u16()
        }
    };

    let (status, _) = send(&node, &editor, Method::POST, base, None).await;
    assert_eq!(status, 403, "credentials are the admin's");
    let (status, issued) = send(
        &node,
        &admin,
        Method::POST,
        base,
        Some(serde_json::json!({"id": "api-1", "expires_in": "30d"})),
    )
    .await;
    assert_eq!(status, 201, "{issued}");
    let first = issued["token"].as_str().unwrap().to_owned();
    assert!(issued["expires_at"].is_string());
    node.wait_for_version(issued["config_version"].as_u64().unwrap())
        .await;
    assert_eq!(call(first.clone()).await, 200);

    // Rotation: a new token; the old one keeps working for the overlap.
    let (status, rotated) = send(
        &node,
        &admin,
        Method::POST,
        &format!("{base}/api-1/rotate"),
        Some(serde_json::json!({"id": "api-2", "overlap": "1h"})),
    )
    .await;
    assert_eq!(status, 201, "{rotated}");
    let second = rotated["token"].as_str().unwrap().to_owned();
    node.wait_for_version(rotated["config_version"].as_u64().unwrap())
        .await;
    assert_eq!(
        (call(first.clone()).await, call(second.clone()).await),
        (200, 200)
    );

    // Revocation: at once.
    let (status, revoked) = send(
        &node,
        &admin,
        Method::DELETE,
        &format!("{base}/api-1"),
        None,
    )
    .await;
    assert_eq!(status, 200);
    node.wait_for_version(revoked["config_version"].as_u64().unwrap())
        .await;
    assert_eq!(
        (call(first.clone()).await, call(second.clone()).await),
        (401, 200)
    );

    // Revoking it again changes nothing (and is not recorded: see the actions below).
    let (status, again) = send(
        &node,
        &admin,
        Method::DELETE,
        &format!("{base}/api-1"),
        None,
    )
    .await;
    assert_eq!(
        (status, &again["config_version"]),
        (200, &revoked["config_version"])
    );

    // Unknown profile or credential; an id that exists.
    let (status, _) = send(
        &node,
        &admin,
        Method::POST,
        "/api/v1/clients/tester/profiles/nope/credentials",
        None,
    )
    .await;
    assert_eq!(status, 404);
    let (status, _) = send(&node, &admin, Method::DELETE, &format!("{base}/nope"), None).await;
    assert_eq!(status, 404);
    let (status, _) = send(
        &node,
        &admin,
        Method::POST,
        base,
        Some(serde_json::json!({"id": "api-2"})),
    )
    .await;
    assert_eq!(status, 409);
    let (status, _) = send(
        &node,
        &admin,
        Method::POST,
        base,
        Some(serde_json::json!({"expires_in": "soon"})),
    )
    .await;
    assert_eq!(status, 422);

    let changes = changes(&node, &admin, "/api/v1/audit/changes?outcome=allowed", 3).await;
    let actions: Vec<&str> = changes
        .iter()
        .map(|c| c["action"].as_str().unwrap())
        .collect();
    assert_eq!(
        actions,
        [
            "credentials.create",
            "credentials.rotate",
            "credentials.delete"
        ]
    );
    assert_eq!(changes[0]["resource"]["id"], "tester/tester-sandbox/api-1");
    let text = serde_json::to_string(&changes).unwrap();
    assert!(
        !text.contains(&first) && !text.contains(&second),
        "a token in a change record"
    );
}

/// Every endpoint and method, with the permission it needs; checked for every role against
/// the matrix in docs/management.md. A request the role may make is never `403`; one it may not
/// is always `403 permission_denied`, and changes nothing.
#[tokio::test]
async fn every_endpoint_checks_the_role_matrix() {
    use reqwest::Method;
    let up = Upstream::start().await;
    let node = Node::with_config(&collection(
        "orders",
        "/orders",
        &up.url(),
        "      - { id: list, methods: [GET], path: / }\n",
    ));
    let roles = ["viewer", "editor", "admin", "auditor"];
    let tokens: Vec<String> = roles
        .iter()
        .map(|r| operator(&node, &format!("{r}-op"), r))
        .collect();
    // (method, path, permission): read_config, write_config, manage_operators, read_audit, or
    // none (any operator).
    let cred = "/api/v1/clients/tester/profiles/tester-sandbox/credentials";
    let endpoints: Vec<(Method, String, Option<&str>)> = vec![
        (Method::GET, "/api/v1/whoami".into(), None),
        (
            Method::GET,
            "/api/v1/collections".into(),
            Some("read_config"),
        ),
        (
            Method::GET,
            "/api/v1/collections/orders".into(),
            Some("read_config"),
        ),
        (
            Method::PUT,
            "/api/v1/collections/nothing".into(),
            Some("write_config"),
        ),
        (
            Method::DELETE,
            "/api/v1/collections/nothing".into(),
            Some("write_config"),
        ),
        (Method::GET, "/api/v1/clients".into(), Some("read_config")),
        (
            Method::GET,
            "/api/v1/clients/tester".into(),
            Some("read_config"),
        ),
        (
            Method::PUT,
            "/api/v1/clients/nothing".into(),
            Some("write_config"),
        ),
        (
            Method::DELETE,
            "/api/v1/clients/nothing".into(),
            Some("write_config"),
        ),
        (
            Method::POST,
            cred.replace("tester-sandbox", "nothing"),
            Some("manage_operators"),
        ),
        (
            Method::POST,
            format!("{cred}/nothing/rotate"),
            Some("manage_operators"),
        ),
        (
            Method::DELETE,
            format!("{cred}/nothing"),
            Some("manage_operators"),
        ),
        (
            Method::GET,
            "/api/v1/operators".into(),
            Some("manage_operators"),
        ),
        (
            Method::POST,
            "/api/v1/operators".into(),
            Some("manage_operators"),
        ),
        (
            Method::DELETE,
            "/api/v1/operators/nothing".into(),
            Some("manage_operators"),
        ),
        (
            Method::GET,
            "/api/v1/audit/requests".into(),
            Some("read_audit"),
        ),
        (
            Method::GET,
            "/api/v1/audit/changes".into(),
            Some("read_audit"),
        ),
        (
            Method::GET,
            "/api/v1/audit/verify".into(),
            Some("read_audit"),
        ),
    ];
    // The matrix, as docs/management.md prints it.
    let grants = |role: &str, permission: &str| match role {
        "admin" => true,
        "editor" => matches!(permission, "read_config" | "write_config"),
        "viewer" => permission == "read_config",
        "auditor" => permission == "read_audit",
        _ => false,
    };
    let before = node.ready().await["config_version"].as_u64().unwrap();
    for (method, path, permission) in &endpoints {
        for (role, token) in roles.iter().zip(&tokens) {
            // Bodies that would be refused anyway (an `id` other than the path's): the role
            // check comes first, and nothing is written either way.
            let body = serde_json::json!({"id": "mismatch"});
            let (status, answer) = send(&node, token, method.clone(), path, Some(body)).await;
            let allowed = permission.is_none_or(|p| grants(role, p));
            if allowed {
                assert_ne!(status, 403, "{role} {method} {path}: {answer}");
            } else {
                assert_eq!(
                    (status, code(&answer.to_string())),
                    (403, "permission_denied".into()),
                    "{role} {method} {path}"
                );
            }
        }
    }
    assert_eq!(
        node.ready().await["config_version"].as_u64().unwrap(),
        before,
        "nothing changed"
    );
}

#[tokio::test]
async fn object_lists_page_and_identity_providers_are_objects_too() {
    use reqwest::Method;
    let up = Upstream::start().await;
    let ops = "      - { id: list, methods: [GET], path: / }\n";
    let yaml = format!(
        "{}\n{}",
        collection("a", "/a", &up.url(), ops),
        collection("b", "/b", &up.url(), ops).replace("collections:\n", "")
    );
    let node = Node::with_config(&yaml);
    let editor = operator(&node, "editor-1", "editor");

    let (_, first) = send(
        &node,
        &editor,
        Method::GET,
        "/api/v1/collections?limit=1",
        None,
    )
    .await;
    assert_eq!(first["collections"][0]["id"], "a");
    let cursor = first["next_cursor"].as_str().unwrap();
    let (_, second) = send(
        &node,
        &editor,
        Method::GET,
        &format!("/api/v1/collections?limit=1&cursor={cursor}"),
        None,
    )
    .await;
    assert_eq!(second["collections"][0]["id"], "b");
    assert!(second.get("next_cursor").is_none());
    for bad in ["limit=0", "cursor=%%%", "sort=name"] {
        let (status, _) = send(
            &node,
            &editor,
            Method::GET,
            &format!("/api/v1/collections?{bad}"),
            None,
        )
        .await;
        assert_eq!(status, 400, "{bad}");
    }

    let provider = serde_json::json!({"id": "corp", "issuer": "https://idp.example.test", "audiences": ["portcullis"]});
    let (status, created) = send(
        &node,
        &editor,
        Method::PUT,
        "/api/v1/identity_providers/corp",
        Some(provider),
    )
    .await;
    assert_eq!(status, 201, "{created}");
    assert_eq!(created["clock_skew"], "1m");
    let (_, list) = send(
        &node,
        &editor,
        Method::GET,
        "/api/v1/identity_providers",
        None,
    )
    .await;
    assert_eq!(
        list["identity_providers"][0]["issuer"],
        "https://idp.example.test"
    );
    let (status, answer) = send(
        &node,
        &editor,
        Method::PUT,
        "/api/v1/identity_providers/corp",
        Some(serde_json::json!({"id": "corp", "issuer": "x"})),
    )
    .await;
    assert_eq!(status, 422, "{answer}");
    let (status, _) = send(
        &node,
        &editor,
        Method::DELETE,
        "/api/v1/identity_providers/corp",
        None,
    )
    .await;
    assert_eq!(status, 204);
}
