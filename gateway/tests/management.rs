//! The management API as operators meet it today: the bootstrap admin of an empty store,
//! service tokens with roles, the role matrix on the audit endpoints, and revocation taking
//! effect at once.

mod support;

use serde_json::Value;
use support::admin::*;
use support::*;

#[tokio::test]
async fn operators_act_under_their_roles() {
    let up = Upstream::start().await;
    let node = orders_node(&up);
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
    // The creation was a change like any other: one record, made by the system.
    let (status, listed) = get(&second, Some(&token), "/api/v1/audit/changes").await;
    assert_eq!(status, 200, "{listed}");
    let made: Vec<&Value> = listed["records"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|r| r["who"]["kind"] == "system")
        .collect();
    assert_eq!(made.len(), 1, "{listed}");
    assert_eq!(made[0]["action"], "operators.create");
    assert_eq!(made[0]["resource"]["id"], "bootstrap-admin");
    assert_eq!(made[0]["after"]["roles"], serde_json::json!(["admin"]));
    assert!(!listed.to_string().contains(&token), "no token in a record");

    // From the environment: nothing printed, and that token is the admin's.
    let chosen = portcullis::auth::token::generate_with(portcullis::auth::token::OPERATOR_PREFIX);
    let third = Node::builder()
        .env("PORTCULLIS_BOOTSTRAP_ADMIN_TOKEN", &chosen)
        .start();
    assert_eq!(bootstrap_token(&third), None);
    let (status, me) = get(&third, Some(&chosen), "/api/v1/whoami").await;
    assert_eq!((status, me["roles"][0].as_str()), (200, Some("admin")));
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

    // A new role binding keeps the token; a rotation replaces it at once.
    let (status, updated) = send(
        &node,
        &admin,
        Method::PUT,
        "/api/v1/operators/deployer",
        Some(serde_json::json!({"roles": ["viewer", "auditor"]})),
    )
    .await;
    assert_eq!(status, 200, "{updated}");
    let (_, me) = get(&node, Some(&token), "/api/v1/whoami").await;
    assert_eq!(me["roles"], serde_json::json!(["viewer", "auditor"]));
    // An expiry stays unless the change names one (or `null`); the same binding again
    // changes nothing and records nothing.
    let roles = serde_json::json!(["viewer", "auditor"]);
    let (_, dated) = send(
        &node,
        &admin,
        Method::PUT,
        "/api/v1/operators/deployer",
        Some(serde_json::json!({"roles": roles, "expires_at": "2099-01-01T00:00:00Z"})),
    )
    .await;
    assert!(
        dated["expires_at"]
            .as_str()
            .unwrap()
            .starts_with("2099-01-01")
    );
    let (_, kept) = send(
        &node,
        &admin,
        Method::PUT,
        "/api/v1/operators/deployer",
        Some(serde_json::json!({"roles": roles})),
    )
    .await;
    assert_eq!(kept["expires_at"], dated["expires_at"]);
    let (status, rotated) = send(
        &node,
        &admin,
        Method::POST,
        "/api/v1/operators/deployer/rotate",
        None,
    )
    .await;
    assert_eq!(status, 201, "{rotated}");
    assert_eq!(get(&node, Some(&token), "/api/v1/whoami").await.0, 401);
    let token = rotated["token"].as_str().unwrap().to_owned();
    assert_eq!(get(&node, Some(&token), "/api/v1/whoami").await.0, 200);

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

    // The change records: the refusals, the creation, the new roles, the rotation and the
    // revocation, with before and after, and never a token or its hash.
    let changes = changes(&node, &admin, "/api/v1/audit/changes", 9).await;
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
            ("operators.update", "allowed"),
            ("operators.update", "allowed"),
            ("operators.rotate", "allowed"),
            ("whoami.read", "denied"),
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
    let delete = &changes[7];
    assert!(delete["before"]["revoked_at"].is_null());
    assert!(delete["after"]["revoked_at"].is_string());
    let text = serde_json::to_string(&changes).unwrap();
    assert!(!text.contains(&token) && !text.contains("token_hash"));
}

#[tokio::test]
async fn configuration_objects_are_edited_safely_through_the_api() {
    use reqwest::Method;
    let up = Upstream::start().await;
    let node = orders_node(&up);
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
    let node = orders_node(&up);
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

    // Credential ids are unique across clients, though issuing reads only its own client's.
    let (status, created) = send(
        &node,
        &admin,
        Method::PUT,
        "/api/v1/clients/other",
        Some(serde_json::json!({"id": "other", "profiles": [
            {"id": "other-sandbox", "environment": "sandbox", "collections": ["orders"]}]})),
    )
    .await;
    assert_eq!(status, 201, "{created}");
    let (status, refused) = send(
        &node,
        &admin,
        Method::POST,
        "/api/v1/clients/other/profiles/other-sandbox/credentials",
        Some(serde_json::json!({"id": "api-1"})),
    )
    .await;
    assert_eq!(status, 422, "{refused}");
    assert!(
        refused
            .to_string()
            .contains("duplicate credential id 'api-1'"),
        "{refused}"
    );

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

    let changes = changes(&node, &admin, "/api/v1/audit/changes?outcome=allowed", 4).await;
    let actions: Vec<&str> = changes
        .iter()
        .map(|c| c["action"].as_str().unwrap())
        .collect();
    assert_eq!(
        actions,
        [
            "credentials.create",
            "clients.create",
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
    let node = orders_node(&up);
    let roles = ["viewer", "editor", "admin", "auditor"];
    let tokens: Vec<String> = roles
        .iter()
        .map(|r| operator(&node, &format!("{r}-op"), r))
        .collect();
    // Every endpoint the served OpenAPI document lists, with the permission it declares:
    // read_config, write_config, manage_operators, read_audit, or none (any operator).
    let document = openapi(&node).await;
    let mut endpoints: Vec<(Method, String, Option<String>)> = Vec::new();
    for (template, item) in document["paths"].as_object().unwrap() {
        // Path parameters that name nothing stored: nothing can change.
        let path = template
            .split('/')
            .map(|s| if s.starts_with('{') { "nothing" } else { s })
            .collect::<Vec<_>>()
            .join("/");
        for (method, operation) in item.as_object().unwrap() {
            let method = Method::from_bytes(method.to_uppercase().as_bytes()).unwrap();
            let permission = operation["x-permission"].as_str().map(str::to_owned);
            endpoints.push((method, path.clone(), permission));
        }
    }
    assert!(endpoints.len() >= 34, "{} endpoints", endpoints.len());
    // The matrix, as docs/management.md prints it.
    let grants = |role: &str, permission: &str| match role {
        "admin" => true,
        "editor" => matches!(permission, "read_config" | "write_config"),
        "viewer" => permission == "read_config",
        "auditor" => permission == "read_audit",
        _ => false,
    };
    let before = node.ready().await["config_version"].as_u64().unwrap();
    let mut refused = 0;
    for (method, path, permission) in &endpoints {
        for (role, token) in roles.iter().zip(&tokens) {
            // Bodies that would be refused anyway (an `id` other than the path's): the role
            // check comes first, and nothing is written either way.
            let body = serde_json::json!({"id": "mismatch"});
            let (status, answer) = send(&node, token, method.clone(), path, Some(body)).await;
            let allowed = permission.as_deref().is_none_or(|p| grants(role, p));
            assert!(status < 500, "{role} {method} {path}: {status} {answer}");
            if allowed {
                assert_ne!(status, 403, "{role} {method} {path}: {answer}");
            } else {
                refused += 1;
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
    // Each refusal left exactly one change record, and nothing else did.
    let admin = &tokens[2];
    let path = "/api/v1/audit/changes?limit=1000";
    let records = changes(&node, admin, path, refused).await;
    tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    let records_later = changes(&node, admin, path, refused).await;
    assert_eq!(records.len(), refused);
    assert_eq!(records_later.len(), refused);
    assert!(records.iter().all(|r| r["outcome"] == "denied"
        && r["reason"] == "permission_denied"
        && r["channel"] == "api"));
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

    // Identity providers decide who OIDC credentials are: the admin's, as credentials are.
    let provider = serde_json::json!({"id": "corp", "issuer": "https://idp.example.test", "audiences": ["portcullis"]});
    let (status, _) = send(
        &node,
        &editor,
        Method::PUT,
        "/api/v1/identity_providers/corp",
        Some(provider.clone()),
    )
    .await;
    assert_eq!(status, 403);
    let admin = operator(&node, "admin-1", "admin");
    let (status, created) = send(
        &node,
        &admin,
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
        &admin,
        Method::PUT,
        "/api/v1/identity_providers/corp",
        Some(serde_json::json!({"id": "corp", "issuer": "x"})),
    )
    .await;
    assert_eq!(status, 422, "{answer}");
    let (status, _) = send(
        &node,
        &admin,
        Method::DELETE,
        "/api/v1/identity_providers/corp",
        None,
    )
    .await;
    assert_eq!(status, 204);
}

#[tokio::test]
async fn the_management_mcp_offers_what_the_roles_allow_through_the_same_handlers() {
    let up = Upstream::start().await;
    let node = orders_node(&up);
    let admin = operator(&node, "mcp-admin", "admin");
    let viewer = operator(&node, "mcp-viewer", "viewer");

    // A viewer sees read-only tools only; an admin sees every endpoint as a tool, destructive
    // ones annotated as such.
    let (status, _, listed) = mcp(
        &node,
        Some(&viewer),
        "tools/list",
        serde_json::json!({}),
        None,
    )
    .await;
    assert_eq!(status, 200, "{listed}");
    let viewer_tools = listed["result"]["tools"].as_array().unwrap();
    assert!(viewer_tools.iter().any(|t| t["name"] == "list_collections"));
    assert!(
        viewer_tools
            .iter()
            .all(|t| t["annotations"]["readOnlyHint"] == true),
        "a viewer is offered no mutating tool"
    );
    assert!(!viewer_tools.iter().any(|t| t["name"] == "list_operators"));
    let (_, _, listed) = mcp(
        &node,
        Some(&admin),
        "tools/list",
        serde_json::json!({}),
        None,
    )
    .await;
    let admin_tools = listed["result"]["tools"].as_array().unwrap();
    // The protocol around the tools is the Gateway MCP's: an unknown method (`ping` has no
    // place in the stateless era) is a JSON-RPC error with 404.
    for method in ["resources/list", "ping"] {
        let (status, _, answer) =
            mcp(&node, Some(&admin), method, serde_json::json!({}), None).await;
        assert_eq!(
            (status, &answer["error"]["code"]),
            (404, &serde_json::json!(-32601)),
            "{method}: {answer}"
        );
    }
    let document = openapi(&node).await;
    let operations: usize = document["paths"]
        .as_object()
        .unwrap()
        .values()
        .map(|item| item.as_object().unwrap().len())
        .sum();
    assert_eq!(admin_tools.len(), operations, "one tool per endpoint");
    let delete = admin_tools
        .iter()
        .find(|t| t["name"] == "delete_collection")
        .unwrap();
    assert_eq!(delete["annotations"]["destructiveHint"], true);
    assert!(delete["inputSchema"]["properties"]["dry_run"].is_object());

    // A viewer's call of a mutating tool is refused, and recorded with channel mcp.
    let new = serde_json::json!({
        "id": "returns", "base_path": "/returns",
        "upstreams": {"sandbox": up.url()},
        "operations": [{"id": "list", "methods": ["GET"], "path": "/"}],
    });
    let refused = tool(
        &node,
        &viewer,
        "put_collection",
        serde_json::json!({"id": "returns", "body": new}),
    )
    .await;
    assert_eq!(refused["isError"], true);
    assert_eq!(
        refused["structuredContent"]["error"]["code"],
        "permission_denied"
    );

    // dry_run answers the change and makes none.
    let version = node.ready().await["config_version"].as_u64().unwrap();
    let dry = tool(
        &node,
        &admin,
        "put_collection",
        serde_json::json!({"id": "returns", "body": new, "dry_run": true}),
    )
    .await;
    assert_eq!(dry["isError"], false, "{dry}");
    let preview = &dry["structuredContent"];
    assert_eq!(preview["dry_run"], true);
    assert_eq!(preview["change"]["action"], "collections.create");
    assert_eq!(preview["change"]["after"]["id"], "returns");
    assert_eq!(
        get(&node, Some(&admin), "/api/v1/collections/returns")
            .await
            .0,
        404
    );
    let dry_delete = tool(
        &node,
        &admin,
        "delete_client",
        serde_json::json!({"id": "tester", "dry_run": true}),
    )
    .await;
    assert_eq!(
        dry_delete["structuredContent"]["change"]["before"]["id"], "tester",
        "{dry_delete}"
    );
    assert_eq!(
        node.ready().await["config_version"].as_u64().unwrap(),
        version,
        "a dry run changes nothing"
    );

    // The real call: the same handler as PUT /api/v1/collections/returns.
    let created = tool(
        &node,
        &admin,
        "put_collection",
        serde_json::json!({"id": "returns", "body": new}),
    )
    .await;
    assert_eq!(created["isError"], false, "{created}");
    assert_eq!(created["structuredContent"]["base_path"], "/returns");
    let (status, stored) = get(&node, Some(&admin), "/api/v1/collections/returns").await;
    assert_eq!(
        (status, &stored["base_path"]),
        (200, &Value::from("/returns"))
    );
    // Tool arguments are checked: an unknown argument is the agent's to correct.
    let wrong = tool(
        &node,
        &admin,
        "get_collection",
        serde_json::json!({"id": "orders", "x": 1}),
    )
    .await;
    assert_eq!(wrong["isError"], true);

    // Sessions (2025-11-25) work too, and are the opener's only.
    let (status, headers, init) = mcp(
        &node,
        Some(&admin),
        "initialize",
        serde_json::json!({"protocolVersion": "2025-11-25", "capabilities": {}, "clientInfo": {"name": "t", "version": "1"}}),
        None,
    )
    .await;
    assert_eq!(status, 200, "{init}");
    let session = headers["mcp-session-id"].to_str().unwrap().to_owned();
    let (status, _, listed) = mcp(
        &node,
        Some(&admin),
        "tools/list",
        serde_json::json!({}),
        Some(&session),
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(
        listed["result"]["tools"].as_array().unwrap().len(),
        operations
    );
    let (status, _, _) = mcp(
        &node,
        Some(&viewer),
        "tools/list",
        serde_json::json!({}),
        Some(&session),
    )
    .await;
    assert_eq!(status, 404, "another operator's session is unknown");

    // No credential: 401 pointing to the protected resource metadata, and a record.
    let (status, headers, _) = mcp(&node, None, "tools/list", serde_json::json!({}), None).await;
    assert_eq!(status, 401);
    let challenge = headers["www-authenticate"].to_str().unwrap();
    assert!(
        challenge.contains("/.well-known/oauth-protected-resource/api/v1/mcp"),
        "{challenge}"
    );
    let metadata: Value = reqwest::get(format!(
        "{}/.well-known/oauth-protected-resource/api/v1/mcp",
        node.admin
    ))
    .await
    .unwrap()
    .json()
    .await
    .unwrap();
    assert!(
        metadata["resource"]
            .as_str()
            .unwrap()
            .ends_with("/api/v1/mcp")
    );

    // The change records: the viewer's refusal, the creation (channel mcp), the unauthenticated
    // attempt; dry runs and reads left none.
    let records = changes(&node, &admin, "/api/v1/audit/changes", 3).await;
    let summary: Vec<(&str, &str, &str)> = records
        .iter()
        .map(|c| {
            (
                c["action"].as_str().unwrap(),
                c["outcome"].as_str().unwrap(),
                c["channel"].as_str().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        summary,
        [
            ("collections.update", "denied", "mcp"),
            ("collections.create", "allowed", "mcp"),
            ("mcp.connect", "denied", "mcp"),
        ]
    );
    assert_eq!(records[1]["who"]["subject"], "mcp-admin");
}

#[tokio::test]
async fn rest_dry_runs_change_nothing_and_record_nothing() {
    let up = Upstream::start().await;
    let node = orders_node(&up);
    let admin = operator(&node, "dry-admin", "admin");
    let version = node.ready().await["config_version"].as_u64().unwrap();
    let cred = "/api/v1/clients/tester/profiles/tester-sandbox/credentials";
    let calls: Vec<(reqwest::Method, String, Option<Value>, &str)> = vec![
        (
            reqwest::Method::POST,
            format!("{cred}?dry_run=true"),
            None,
            "credentials.create",
        ),
        (
            reqwest::Method::POST,
            "/api/v1/collections/orders/unpublish?dry_run=true".into(),
            None,
            "collections.unpublish",
        ),
        (
            reqwest::Method::DELETE,
            "/api/v1/clients/tester?dry_run=true".into(),
            None,
            "clients.delete",
        ),
        (
            reqwest::Method::POST,
            "/api/v1/operators?dry_run=true".into(),
            Some(serde_json::json!({"id": "ci", "roles": ["editor"]})),
            "operators.create",
        ),
    ];
    for (method, path, body, action) in calls {
        let (status, answer) = send(&node, &admin, method, &path, body).await;
        assert_eq!(status, 200, "{path}: {answer}");
        assert_eq!(answer["dry_run"], true);
        assert_eq!(answer["change"]["action"], action, "{answer}");
        assert!(answer.get("token").is_none() && !answer.to_string().contains("pcl_"));
    }
    assert_eq!(
        node.ready().await["config_version"].as_u64().unwrap(),
        version
    );
    assert_eq!(
        get(&node, Some(&admin), "/api/v1/operators").await.1["operators"]
            .as_array()
            .unwrap()
            .len(),
        2
    );
    // Published still: the data plane routes it.
    assert_eq!(node.get("/orders/").await.status(), 200);
    // Then for real: unpublish takes the collection off the data plane, publish brings it back.
    let (status, answer) = send(
        &node,
        &admin,
        reqwest::Method::POST,
        "/api/v1/collections/orders/unpublish",
        None,
    )
    .await;
    assert_eq!(
        (status, &answer["status"]),
        (200, &Value::from("draft")),
        "{answer}"
    );
    let (_, drafts) = get(&node, Some(&admin), "/api/v1/collections?status=draft").await;
    assert_eq!(drafts["collections"].as_array().unwrap().len(), 1);
    let (_, published) = get(&node, Some(&admin), "/api/v1/collections?status=published").await;
    assert_eq!(published["collections"].as_array().unwrap().len(), 0);
    node.wait_for_version(version + 1).await;
    assert_eq!(node.get("/orders/").await.status(), 404);
    let (status, _) = send(
        &node,
        &admin,
        reqwest::Method::POST,
        "/api/v1/collections/orders/publish",
        None,
    )
    .await;
    assert_eq!(status, 200);
    let records = changes(&node, &admin, "/api/v1/audit/changes", 2).await;
    let actions: Vec<&str> = records
        .iter()
        .map(|r| r["action"].as_str().unwrap())
        .collect();
    assert_eq!(actions, ["collections.unpublish", "collections.publish"]);
}

/// `portcullis --server … <args>` under `token`, from a directory with no store.
fn remote_cli(node: &Node, token: &str, args: &[&str]) -> std::process::Output {
    let elsewhere = tempfile::tempdir().unwrap();
    std::process::Command::new(BIN)
        .arg("--data-dir")
        .arg(elsewhere.path())
        .arg("--server")
        .arg(&node.admin)
        .args(args)
        .env("PORTCULLIS_OPERATOR_TOKEN", token)
        .output()
        .unwrap()
}

#[tokio::test]
async fn the_cli_works_through_the_api_under_an_operator_token() {
    let up = Upstream::start().await;
    let node = orders_node(&up);
    let editor = operator(&node, "ci-editor", "editor");
    let admin = operator(&node, "ci-admin", "admin");
    let file = node.data_dir.join("returns.yaml");
    std::fs::write(
        &file,
        collection(
            "returns",
            "/returns",
            &up.url(),
            "      - { id: list, methods: [GET], path: / }\n",
        ),
    )
    .unwrap();
    let file = file.to_str().unwrap();
    let version = node.ready().await["config_version"].as_u64().unwrap();

    let out = remote_cli(&node, &editor, &["apply", "-f", file, "--dry-run"]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        text.contains("collections/returns: would be created"),
        "{text}"
    );
    assert_eq!(
        node.ready().await["config_version"].as_u64().unwrap(),
        version
    );

    let out = remote_cli(&node, &editor, &["apply", "-f", file]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("collections/returns: created"));
    let out = remote_cli(&node, &editor, &["export"]);
    let exported = String::from_utf8_lossy(&out.stdout);
    assert!(
        exported.contains("id: returns") && exported.contains("id: orders"),
        "{exported}"
    );

    // The editor may not issue credentials; the admin may, and the token works.
    let issue = [
        "credential",
        "issue",
        "--client",
        "tester",
        "--profile",
        "tester-sandbox",
    ];
    let out = remote_cli(&node, &editor, &issue);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("permission_denied"));
    let out = remote_cli(&node, &admin, &issue);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let token = String::from_utf8_lossy(&out.stdout)
        .lines()
        .find(|l| l.starts_with("pcl_"))
        .unwrap()
        .to_owned();
    node.wait_for_version(version + 2).await;
    let answer = reqwest::Client::new()
        .get(format!("{}/orders/", node.gateway))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    assert_eq!(answer.status(), 200);

    let records = changes(&node, &admin, "/api/v1/audit/changes?channel=cli", 3).await;
    let summary: Vec<(&str, &str, &str)> = records
        .iter()
        .map(|c| {
            (
                c["action"].as_str().unwrap(),
                c["outcome"].as_str().unwrap(),
                c["who"]["subject"].as_str().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        summary,
        [
            ("collections.create", "allowed", "ci-editor"),
            ("credentials.create", "denied", "ci-editor"),
            ("credentials.create", "allowed", "ci-admin"),
        ]
    );
    assert!(!records.iter().any(|r| r.to_string().contains(&token)));
}

#[tokio::test]
async fn quotas_are_managed_through_the_api_by_the_limiter() {
    let up = Upstream::start().await;
    let node = orders_node(&up);
    let editor = operator(&node, "quota-editor", "editor");
    let viewer = operator(&node, "quota-viewer", "viewer");
    let policy = serde_json::json!({
        "name": "gold",
        "limits": [{"name": "daily", "scope": "client", "count": 1000, "window": "day"}],
    });
    use reqwest::Method;
    let (status, _) = send(
        &node,
        &viewer,
        Method::PUT,
        "/api/v1/quota/policies/gold",
        Some(policy.clone()),
    )
    .await;
    assert_eq!(status, 403);
    let (status, created) = send(
        &node,
        &editor,
        Method::PUT,
        "/api/v1/quota/policies/gold",
        Some(policy.clone()),
    )
    .await;
    assert_eq!(status, 201, "{created}");
    let (status, listed) = get(&node, Some(&viewer), "/api/v1/quota/policies").await;
    assert_eq!(status, 200);
    assert!(
        listed["policies"]
            .as_array()
            .unwrap()
            .iter()
            .any(|p| p["name"] == "gold")
    );
    // Invalid policies are the limiter's to refuse, with its reason.
    let (status, refused) = send(
        &node,
        &editor,
        Method::PUT,
        "/api/v1/quota/policies/gold",
        Some(serde_json::json!({"name": "gold", "limits": [{"name": "x", "scope": "client", "count": 5}]})),
    )
    .await;
    assert_eq!(status, 422, "{refused}");

    let (status, set) = send(
        &node,
        &editor,
        Method::PUT,
        "/api/v1/quota/policies/gold/overrides/tester",
        Some(serde_json::json!({"multiplier": 2.0, "note": "launch week"})),
    )
    .await;
    assert_eq!(status, 200, "{set}");
    let (_, usage) = get(
        &node,
        Some(&viewer),
        "/api/v1/quota/policies/gold/usage?client=tester&profile=tester-sandbox",
    )
    .await;
    assert_eq!(usage["limits"][0]["count"], 2000, "{usage}");
    let (status, _) = send(
        &node,
        &editor,
        Method::POST,
        "/api/v1/quota/policies/gold/usage/reset",
        Some(serde_json::json!({"client": "tester", "profile": "tester-sandbox"})),
    )
    .await;
    assert_eq!(status, 200);
    let (status, _) = send(
        &node,
        &editor,
        Method::DELETE,
        "/api/v1/quota/policies/gold/overrides/tester",
        None,
    )
    .await;
    assert_eq!(status, 204);
    let (status, _) = send(
        &node,
        &editor,
        Method::DELETE,
        "/api/v1/quota/policies/gold",
        None,
    )
    .await;
    assert_eq!(status, 204);
    assert_eq!(
        get(&node, Some(&viewer), "/api/v1/quota/policies/gold")
            .await
            .0,
        404
    );

    let admin = operator(&node, "quota-admin", "admin");
    let records = changes(&node, &admin, "/api/v1/audit/changes", 6).await;
    let actions: Vec<(&str, &str)> = records
        .iter()
        .map(|c| {
            (
                c["action"].as_str().unwrap(),
                c["outcome"].as_str().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        actions,
        [
            ("quota_policies.update", "denied"),
            ("quota_policies.create", "allowed"),
            ("quota_overrides.update", "allowed"),
            ("quota_usage.reset", "allowed"),
            ("quota_overrides.delete", "allowed"),
            ("quota_policies.delete", "allowed"),
        ]
    );
    assert_eq!(records[1]["after"]["name"], "gold");
}

/// A service token past its `expires_at` is refused like a revoked one, and the attempt is
/// recorded.
#[tokio::test]
async fn an_expired_operator_token_is_refused_and_recorded() {
    let node = Node::builder().start();
    let admin = bootstrap_token(&node).unwrap();
    let expires = time::OffsetDateTime::now_utc() + time::Duration::seconds(2);
    let expires = expires
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap();
    let (status, created) = send(
        &node,
        &admin,
        reqwest::Method::POST,
        "/api/v1/operators",
        Some(serde_json::json!({"id": "short-lived", "roles": ["viewer"], "expires_at": expires})),
    )
    .await;
    assert_eq!(status, 201, "{created}");
    let token = created["token"].as_str().unwrap().to_owned();
    assert_eq!(get(&node, Some(&token), "/api/v1/whoami").await.0, 200);
    tokio::time::sleep(std::time::Duration::from_millis(2500)).await;
    let (status, refused) = get(&node, Some(&token), "/api/v1/collections").await;
    assert_eq!(status, 401, "{refused}");
    assert_eq!(refused["error"]["code"], "invalid_credential", "{refused}");
    let records = changes(&node, &admin, "/api/v1/audit/changes?outcome=denied", 1).await;
    assert_eq!(records.len(), 1, "{records:?}");
    assert_eq!(records[0]["action"], "collections.read");
    assert_eq!(records[0]["status"], 401);
}
