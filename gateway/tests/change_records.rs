//! One change record per control-plane action: every mutating endpoint of the management API,
//! called once over REST and once as a Management MCP tool, leaves exactly one record of who did
//! what through which channel; a viewer's call of every mutating tool is refused and recorded.
//!
//! The scenario lists every mutating operation once; the test fails when the served OpenAPI
//! document has one the scenario does not call, so a new endpoint cannot go untested.

mod support;

use std::collections::BTreeSet;
use std::time::Duration;

use serde_json::{Value, json};
use support::admin::*;
use support::*;

/// One call of the scenario: the operation (the OpenAPI `operationId`, also the MCP tool's
/// name), the kind of resource its record names, and its arguments as the MCP tool takes them
/// (path parameters by name, the body under `body`).
struct Step {
    operation: &'static str,
    kind: &'static str,
    arguments: Value,
}

/// Every mutating operation, once, in an order in which each succeeds. `s` keeps the objects of
/// one run apart from another's on the same node.
fn scenario(s: &str, upstream: &str) -> Vec<Step> {
    let step = |operation, kind, arguments| Step {
        operation,
        kind,
        arguments,
    };
    let collection = format!("ledger{s}");
    let client = format!("acme{s}");
    let profile = format!("acme{s}-sandbox");
    let provider = format!("corp{s}");
    let operator = format!("deployer{s}");
    let policy = format!("gold{s}");
    vec![
        step(
            "put_collection",
            "collections",
            json!({"id": collection, "body": {
                "id": collection, "base_path": format!("/{collection}"),
                "upstreams": {"sandbox": upstream},
                "operations": [{"id": "list", "methods": ["GET"], "path": "/"}],
            }}),
        ),
        step(
            "put_operation",
            "operations",
            json!({"id": collection, "operation": "create", "body": {
                "id": "create", "methods": ["POST"], "path": "/",
            }}),
        ),
        step(
            "delete_operation",
            "operations",
            json!({"id": collection, "operation": "create"}),
        ),
        step(
            "unpublish_collection",
            "collections",
            json!({"id": collection}),
        ),
        step(
            "publish_collection",
            "collections",
            json!({"id": collection}),
        ),
        step(
            "put_identity_provider",
            "identity_providers",
            json!({"id": provider, "body": {
                "id": provider, "issuer": format!("https://{provider}.example.test"),
                "audiences": ["portcullis"],
            }}),
        ),
        step(
            "put_client",
            "clients",
            json!({"id": client, "body": {
                "id": client, "partner": "acme",
                "profiles": [{"id": profile, "environment": "sandbox", "collections": [collection]}],
            }}),
        ),
        step(
            "put_profile",
            "profiles",
            json!({"id": client, "profile": format!("{client}-spare"), "body": {
                "id": format!("{client}-spare"), "environment": "sandbox",
                "collections": [collection],
            }}),
        ),
        step(
            "delete_profile",
            "profiles",
            json!({"id": client, "profile": format!("{client}-spare")}),
        ),
        step(
            "issue_credential",
            "credentials",
            json!({"client": client, "profile": profile, "body": {"id": "first"}}),
        ),
        step(
            "rotate_credential",
            "credentials",
            json!({"client": client, "profile": profile, "credential": "first",
                   "body": {"id": "second", "overlap": "1h"}}),
        ),
        step(
            "revoke_credential",
            "credentials",
            json!({"client": client, "profile": profile, "credential": "second"}),
        ),
        step(
            "create_operator",
            "operators",
            json!({"body": {"id": operator, "roles": ["editor"]}}),
        ),
        step(
            "update_operator",
            "operators",
            json!({"id": operator, "body": {"roles": ["viewer"]}}),
        ),
        step("rotate_operator", "operators", json!({"id": operator})),
        step("revoke_operator", "operators", json!({"id": operator})),
        step(
            "put_quota_policy",
            "quota_policies",
            json!({"policy": policy, "body": {"name": policy, "limits": [
                {"name": "daily", "scope": "client", "count": 1000, "window": "day"},
            ]}}),
        ),
        step(
            "set_quota_override",
            "quota_overrides",
            json!({"policy": policy, "client": client, "body": {"multiplier": 2.0}}),
        ),
        step(
            "reset_quota_usage",
            "quota_usage",
            json!({"policy": policy, "body": {"client": client, "profile": profile}}),
        ),
        step(
            "clear_quota_override",
            "quota_overrides",
            json!({"policy": policy, "client": client}),
        ),
        step(
            "delete_quota_policy",
            "quota_policies",
            json!({"policy": policy}),
        ),
        step("delete_client", "clients", json!({"id": client})),
        step(
            "delete_collection",
            "collections",
            json!({"id": collection}),
        ),
        step(
            "delete_identity_provider",
            "identity_providers",
            json!({"id": provider}),
        ),
    ]
}

/// The served OpenAPI document's operations: operationId → (method, path template, read-only).
fn operations(document: &Value) -> Vec<(String, reqwest::Method, String, bool)> {
    let mut all = Vec::new();
    for (template, item) in document["paths"].as_object().unwrap() {
        for (method, operation) in item.as_object().unwrap() {
            let method = reqwest::Method::from_bytes(method.to_uppercase().as_bytes()).unwrap();
            let read = method == reqwest::Method::GET;
            let id = operation["operationId"].as_str().unwrap().to_owned();
            all.push((id, method, template.clone(), read));
        }
    }
    all
}

/// Calls `step` over REST: its path parameters go into the template, its body is the body.
async fn over_rest(
    node: &Node,
    token: &str,
    document: &[(String, reqwest::Method, String, bool)],
    step: &Step,
) -> (u16, Value) {
    let (_, method, template, _) = document
        .iter()
        .find(|(id, ..)| id == step.operation)
        .unwrap_or_else(|| panic!("{} is not in the OpenAPI document", step.operation));
    let path = template
        .split('/')
        .map(|segment| match segment.strip_prefix('{') {
            Some(name) => step.arguments[name.trim_end_matches('}')]
                .as_str()
                .unwrap()
                .to_owned(),
            None => segment.to_owned(),
        })
        .collect::<Vec<_>>()
        .join("/");
    send(
        node,
        token,
        method.clone(),
        &path,
        step.arguments.get("body").cloned(),
    )
    .await
}

/// What a record says of itself: (action's resource kind, outcome, channel, subject).
fn summary(record: &Value) -> (String, String, String, String) {
    let action = record["action"].as_str().unwrap();
    let kind = action.split_once('.').map_or(action, |(kind, _)| kind);
    (
        kind.to_owned(),
        record["outcome"].as_str().unwrap().to_owned(),
        record["channel"].as_str().unwrap().to_owned(),
        record["who"]["subject"].as_str().unwrap_or("").to_owned(),
    )
}

/// The change records, once `n` are there and no more arrive for a moment (the audit writer
/// works in batches, so "exactly n" needs a second look).
async fn settled(node: &Node, admin: &str, n: usize) -> Vec<Value> {
    let path = "/api/v1/audit/changes?limit=1000";
    let records = changes(node, admin, path, n).await;
    tokio::time::sleep(Duration::from_millis(400)).await;
    let later = changes(node, admin, path, n).await;
    assert_eq!(records.len(), later.len(), "records kept arriving");
    later
}

#[tokio::test]
async fn every_mutating_endpoint_and_tool_leaves_exactly_one_change_record() {
    let up = Upstream::start().await;
    let node = orders_node(&up);
    let admin = operator(&node, "change-admin", "admin");
    let viewer = operator(&node, "change-viewer", "viewer");
    let document = openapi(&node).await;
    let document = operations(&document);

    // The scenario calls every mutating operation the API serves, each once.
    let rest = scenario("", &up.url());
    let mutating: BTreeSet<&str> = document
        .iter()
        .filter(|(.., read)| !read)
        .map(|(id, ..)| id.as_str())
        .collect();
    let called: BTreeSet<&str> = rest.iter().map(|s| s.operation).collect();
    assert_eq!(called.len(), rest.len(), "each operation once");
    assert_eq!(
        mutating, called,
        "the scenario covers every mutating operation"
    );

    // Over REST, as an admin: each call succeeds and leaves one record, channel api.
    for step in &rest {
        let (status, answer) = over_rest(&node, &admin, &document, step).await;
        assert!(
            (200..300).contains(&status),
            "{}: {status} {answer}",
            step.operation
        );
    }
    let records = settled(&node, &admin, rest.len()).await;
    let expected: Vec<_> = rest
        .iter()
        .map(|s| {
            (
                s.kind.to_owned(),
                "allowed".into(),
                "api".into(),
                "change-admin".into(),
            )
        })
        .collect();
    assert_eq!(records.iter().map(summary).collect::<Vec<_>>(), expected);
    assert!(
        records.iter().all(|r| r["request_id"].as_str().is_some()
            && r["who"]["source_ip"].as_str().is_some()
            && r["timestamp"].as_str().is_some()),
        "every record says when, from where and for which request"
    );

    // The same operations as Management MCP tools: one record each, channel mcp.
    let tools = scenario("-mcp", &up.url());
    for step in &tools {
        let result = tool(&node, &admin, step.operation, step.arguments.clone()).await;
        assert_eq!(result["isError"], false, "{}: {result}", step.operation);
    }
    let records = settled(&node, &admin, rest.len() + tools.len()).await;
    let expected: Vec<_> = tools
        .iter()
        .map(|s| {
            (
                s.kind.to_owned(),
                "allowed".into(),
                "mcp".into(),
                "change-admin".into(),
            )
        })
        .collect();
    assert_eq!(
        records[rest.len()..]
            .iter()
            .map(summary)
            .collect::<Vec<_>>(),
        expected
    );

    // A viewer is offered none of them, and each call of one is refused and recorded once.
    let (status, _, listed) = mcp(&node, Some(&viewer), "tools/list", json!({}), None).await;
    assert_eq!(status, 200);
    let offered: BTreeSet<&str> = listed["result"]["tools"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["name"].as_str().unwrap())
        .collect();
    assert!(
        offered.is_disjoint(&mutating),
        "a viewer is offered {:?}",
        offered.intersection(&mutating).collect::<Vec<_>>()
    );
    let before = node.ready().await["config_version"].as_u64().unwrap();
    let refusals = scenario("-viewer", &up.url());
    for step in &refusals {
        let result = tool(&node, &viewer, step.operation, step.arguments.clone()).await;
        assert_eq!(result["isError"], true, "{}: {result}", step.operation);
        assert_eq!(
            result["structuredContent"]["error"]["code"], "permission_denied",
            "{}: {result}",
            step.operation
        );
    }
    let total = rest.len() + tools.len() + refusals.len();
    let records = settled(&node, &admin, total).await;
    let expected: Vec<_> = refusals
        .iter()
        .map(|s| {
            (
                s.kind.to_owned(),
                "denied".into(),
                "mcp".into(),
                "change-viewer".into(),
            )
        })
        .collect();
    assert_eq!(
        records[rest.len() + tools.len()..]
            .iter()
            .map(summary)
            .collect::<Vec<_>>(),
        expected
    );
    assert!(
        records[rest.len() + tools.len()..]
            .iter()
            .all(|r| r["reason"] == "permission_denied")
    );
    assert_eq!(
        node.ready().await["config_version"].as_u64().unwrap(),
        before,
        "the refused calls changed nothing"
    );
    let (status, verified) = get(&node, Some(&admin), "/api/v1/audit/verify").await;
    assert_eq!(status, 200, "{verified}");
}
