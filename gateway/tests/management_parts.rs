//! A collection's operations and a client's profiles through the management API, one at a
//! time: read with their own ETag, created, replaced under If-Match and deleted without
//! touching their siblings, under the parent's rules (credentials stay the admin's), each
//! change live on the data plane and recorded once.

mod support;

use std::time::{Duration, Instant};

use reqwest::Method;
use serde_json::{Value, json};
use support::admin::*;
use support::*;

/// A management request with an optional `If-Match`: status, ETag and body.
async fn call(
    node: &Node,
    token: &str,
    method: Method,
    path: &str,
    body: Option<Value>,
    if_match: Option<&str>,
) -> (u16, Option<String>, Value) {
    let mut request = reqwest::Client::new()
        .request(method, format!("{}/api/v1{path}", node.admin))
        .bearer_auth(token);
    if let Some(tag) = if_match {
        request = request.header("if-match", tag);
    }
    if let Some(body) = body {
        request = request.json(&body);
    }
    let response = request.send().await.unwrap();
    let status = response.status().as_u16();
    let etag = response
        .headers()
        .get("etag")
        .map(|v| v.to_str().unwrap().to_owned());
    let text = response.text().await.unwrap();
    (
        status,
        etag,
        serde_json::from_str(&text).unwrap_or(Value::Null),
    )
}

/// Waits until the data plane answers `path` with `status`.
async fn answers(node: &Node, path: &str, status: u16) {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let got = node.get(path).await.status().as_u16();
        if got == status {
            return;
        }
        assert!(Instant::now() < deadline, "{path}: {got}, want {status}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn operations_and_profiles_are_edited_one_at_a_time() {
    let up = Upstream::start().await;
    let node = orders_node(&up);
    let editor = operator(&node, "parts-editor", "editor");
    let viewer = operator(&node, "parts-viewer", "viewer");
    let admin = operator(&node, "parts-admin", "admin");
    let one = "/collections/orders/operations/get-one";

    // One operation, read on its own with its own ETag.
    let (status, tag, list) = call(
        &node,
        &viewer,
        Method::GET,
        "/collections/orders/operations/list",
        None,
        None,
    )
    .await;
    assert_eq!((status, list["path"].as_str()), (200, Some("/")), "{list}");
    assert!(tag.is_some());
    let (status, _, missing) = call(&node, &viewer, Method::GET, one, None, None).await;
    assert_eq!(status, 404, "{missing}");
    assert!(
        missing["error"]["message"]
            .as_str()
            .unwrap()
            .contains("no operation 'get-one'"),
        "{missing}"
    );

    // A viewer may not add one; an editor may, and its sibling stays.
    let new = json!({"id": "get-one", "methods": ["GET"], "path": "/{id}"});
    let (status, _, _) = call(&node, &viewer, Method::PUT, one, Some(new.clone()), None).await;
    assert_eq!(status, 403);
    let (status, tag, created) =
        call(&node, &editor, Method::PUT, one, Some(new.clone()), None).await;
    assert_eq!(status, 201, "{created}");
    assert_eq!(created["path"], "/{id}");
    let tag = tag.unwrap();
    answers(&node, "/orders/42", 200).await;
    assert_eq!(up.last().target, "/sbx/42");
    let (_, _, whole) = call(
        &node,
        &viewer,
        Method::GET,
        "/collections/orders",
        None,
        None,
    )
    .await;
    let mut ids: Vec<&str> = whole["operations"]
        .as_array()
        .unwrap()
        .iter()
        .map(|o| o["id"].as_str().unwrap())
        .collect();
    ids.sort();
    assert_eq!(ids, ["get-one", "list"]);

    // Replaced only while it is as read; bad bodies are refused with the field named.
    let changed = json!({"id": "get-one", "methods": ["GET", "DELETE"], "path": "/{id}"});
    let (status, _, stale) = call(
        &node,
        &editor,
        Method::PUT,
        one,
        Some(changed.clone()),
        Some("\"not-its-tag\""),
    )
    .await;
    assert_eq!(status, 412, "{stale}");
    let (status, _, replaced) = call(
        &node,
        &editor,
        Method::PUT,
        one,
        Some(changed.clone()),
        Some(&tag),
    )
    .await;
    assert_eq!(status, 200, "{replaced}");
    assert_eq!(replaced["methods"], json!(["GET", "DELETE"]));
    let (status, _, mismatch) = call(
        &node,
        &editor,
        Method::PUT,
        one,
        Some(json!({"id": "other", "methods": ["GET"], "path": "/"})),
        None,
    )
    .await;
    assert_eq!(status, 422, "{mismatch}");
    let (status, _, invalid) = call(
        &node,
        &editor,
        Method::PUT,
        one,
        Some(json!({"id": "get-one", "methods": ["GET"], "path": "/{"})),
        None,
    )
    .await;
    assert_eq!(status, 422, "{invalid}");
    // Named within the collection, as a PUT of the whole collection would name it.
    let message = invalid["error"]["message"].as_str().unwrap();
    assert!(
        message.starts_with("operations[") && message.contains("].path: '/{'"),
        "{invalid}"
    );
    let (status, _, _) = call(
        &node,
        &editor,
        Method::PUT,
        "/collections/nowhere/operations/get-one",
        Some(new.clone()),
        None,
    )
    .await;
    assert_eq!(status, 404);

    // Deleted: the route is gone, its sibling still answers.
    let (status, _, _) = call(&node, &editor, Method::DELETE, one, None, None).await;
    assert_eq!(status, 204);
    answers(&node, "/orders/42", 404).await;
    answers(&node, "/orders/", 200).await;

    // Profiles: an editor adds one beside the tester's, whose token keeps working; credentials
    // stay the admin's.
    let spare = "/clients/tester/profiles/tester-production";
    let profile =
        json!({"id": "tester-production", "environment": "production", "collections": ["orders"]});
    let (status, _, added) = call(
        &node,
        &editor,
        Method::PUT,
        spare,
        Some(profile.clone()),
        None,
    )
    .await;
    assert_eq!(status, 201, "{added}");
    let (_, _, client) = call(&node, &viewer, Method::GET, "/clients/tester", None, None).await;
    assert_eq!(client["profiles"].as_array().unwrap().len(), 2, "{client}");
    answers(&node, "/orders/", 200).await;
    let mut with_credential = profile.clone();
    with_credential["credentials"] =
        json!([{"id": "kiosk", "kind": "mtls", "fingerprint_sha256": "ab".repeat(32)}]);
    let (status, _, refused) = call(
        &node,
        &editor,
        Method::PUT,
        spare,
        Some(with_credential),
        None,
    )
    .await;
    assert_eq!(status, 403, "{refused}");
    let (status, _, _) = call(&node, &editor, Method::DELETE, spare, None, None).await;
    assert_eq!(status, 204);
    let (_, _, client) = call(&node, &viewer, Method::GET, "/clients/tester", None, None).await;
    assert_eq!(client["profiles"].as_array().unwrap().len(), 1, "{client}");

    // One record per change, naming the part as `parent/part`.
    let records = changes(&node, &admin, "/api/v1/audit/changes?outcome=allowed", 5).await;
    let summary: Vec<(&str, &str)> = records
        .iter()
        .map(|r| {
            (
                r["action"].as_str().unwrap(),
                r["resource"]["id"].as_str().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        summary,
        [
            ("operations.create", "orders/get-one"),
            ("operations.update", "orders/get-one"),
            ("operations.delete", "orders/get-one"),
            ("profiles.create", "tester/tester-production"),
            ("profiles.delete", "tester/tester-production"),
        ]
    );
    assert_eq!(records[1]["before"]["methods"], json!(["GET"]));
    assert_eq!(records[1]["after"]["methods"], json!(["GET", "DELETE"]));
}
