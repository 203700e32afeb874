//! Routing through the real binary: base-path prefixes, templates, wildcards, method
//! mismatches, drafts, and configuration changes taking effect without a restart.

mod support;

use support::{Node, Upstream, code};

async fn get(node: &Node, url: String) -> (u16, String) {
    let r = node.http().get(url).send().await.unwrap();
    (r.status().as_u16(), r.text().await.unwrap())
}

fn target(body: &str) -> String {
    let v: serde_json::Value = serde_json::from_str(body).unwrap();
    v["target"].as_str().unwrap().to_owned()
}

fn catalogue(up: &str) -> String {
    format!(
        r#"
collections:
  - id: pay
    base_path: /pay
    upstreams: {{ sandbox: "{up}/pay-v1" }}
    operations:
      - {{ id: list, methods: [GET], path: /charges }}
      - {{ id: get, methods: [GET, DELETE], path: "/charges/{{id}}" }}
      - {{ id: create, methods: [POST], path: /charges }}
      - {{ id: special, methods: [GET], path: /charges/export }}
      - {{ id: refund, methods: [POST], path: "/charges/{{id}}/refunds", target_path: "/refunds/{{id}}" }}
  - id: pay-v2
    base_path: /pay/v2
    upstreams: {{ sandbox: "{up}/pay-v2" }}
    operations:
      - {{ id: any, methods: [GET, PUT], path: "/files/*", target_path: "/blobs/*" }}
  - id: hidden
    base_path: /hidden
    status: draft
    upstreams: {{ sandbox: "{up}/hidden" }}
    operations:
      - {{ id: x, methods: [GET], path: /x }}
  - id: partly
    base_path: /partly
    upstreams: {{ sandbox: "{up}/partly" }}
    operations:
      - {{ id: live, methods: [GET], path: /live }}
      - {{ id: soon, methods: [GET], path: /soon, status: draft }}
"#
    )
}

#[tokio::test]
async fn prefixes_templates_and_wildcards() {
    let up = Upstream::start().await;
    let node = Node::with_config(&catalogue(&up.url()));
    let gw = &node.gateway;

    let (s, b) = get(&node, format!("{gw}/pay/charges")).await;
    assert_eq!((s, target(&b).as_str()), (200, "/pay-v1/charges"));
    let (s, b) = get(&node, format!("{gw}/pay/charges/ch_1")).await;
    assert_eq!((s, target(&b).as_str()), (200, "/pay-v1/charges/ch_1"));
    // A literal segment beats a parameter.
    let (s, b) = get(&node, format!("{gw}/pay/charges/export")).await;
    assert_eq!((s, target(&b).as_str()), (200, "/pay-v1/charges/export"));
    // Target rewrite with the parameter substituted.
    let r = node
        .http()
        .post(format!("{gw}/pay/charges/ch_9/refunds"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(target(&r.text().await.unwrap()), "/pay-v1/refunds/ch_9");
    // The longest base path wins; the wildcard carries the rest of the path.
    let (s, b) = get(&node, format!("{gw}/pay/v2/files/a/b/c.txt")).await;
    assert_eq!((s, target(&b).as_str()), (200, "/pay-v2/blobs/a/b/c.txt"));
    let (s, b) = get(&node, format!("{gw}/pay/v2/files")).await;
    assert_eq!((s, target(&b).as_str()), (200, "/pay-v2/blobs"));
    // Base paths match whole segments only.
    let (s, b) = get(&node, format!("{gw}/payments/charges")).await;
    assert_eq!((s, code(&b).as_str()), (404, "route_not_found"));
    // Under /pay/v2 there is no /charges: no fallback to the shorter /pay.
    let (s, b) = get(&node, format!("{gw}/pay/v2/charges")).await;
    assert_eq!((s, code(&b).as_str()), (404, "route_not_found"));
    // Trailing slashes are significant for operations.
    let (s, _) = get(&node, format!("{gw}/pay/charges/")).await;
    assert_eq!(s, 404);
    let (s, b) = get(&node, format!("{gw}/nothing/here")).await;
    assert_eq!((s, code(&b).as_str()), (404, "route_not_found"));
}

#[tokio::test]
async fn method_mismatch_is_405_with_allow() {
    let up = Upstream::start().await;
    let node = Node::with_config(&catalogue(&up.url()));
    let client = node.http();
    let r = client
        .put(format!("{}/pay/charges/ch_1", node.gateway))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 405);
    assert_eq!(r.headers()["allow"], "DELETE, GET, HEAD");
    assert_eq!(code(&r.text().await.unwrap()), "method_not_allowed");
    let r = client
        .patch(format!("{}/pay/charges", node.gateway))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 405);
    assert_eq!(r.headers()["allow"], "GET, HEAD, POST");
    // HEAD uses the GET operation.
    let r = client
        .head(format!("{}/pay/charges", node.gateway))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(up.last().method, "HEAD");
    // Two operations on one template with different methods each get their own.
    let r = client
        .delete(format!("{}/pay/charges/ch_2", node.gateway))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(up.last().method, "DELETE");
}

#[tokio::test]
async fn drafts_are_not_routed() {
    let up = Upstream::start().await;
    let node = Node::with_config(&catalogue(&up.url()));
    let (s, b) = get(&node, format!("{}/hidden/x", node.gateway)).await;
    assert_eq!((s, code(&b).as_str()), (404, "route_not_found"));
    let (s, _) = get(&node, format!("{}/partly/live", node.gateway)).await;
    assert_eq!(s, 200);
    let (s, b) = get(&node, format!("{}/partly/soon", node.gateway)).await;
    assert_eq!((s, code(&b).as_str()), (404, "route_not_found"));
    assert!(
        up.seen()
            .iter()
            .all(|r| !r.target.contains("hidden") && !r.target.contains("soon"))
    );
}

#[tokio::test]
async fn a_configuration_change_takes_effect_on_the_next_request() {
    let up = Upstream::start().await;
    let node = Node::with_config(&catalogue(&up.url()));
    let (s, _) = get(&node, format!("{}/hidden/x", node.gateway)).await;
    assert_eq!(s, 404);

    // Publish the draft collection and retarget /pay, through the CLI, while serving.
    let changed = catalogue(&up.url())
        .replace("    status: draft\n", "")
        .replace("/pay-v1", "/pay-v1-moved");
    node.apply(&changed).await;

    let (s, b) = get(&node, format!("{}/hidden/x", node.gateway)).await;
    assert_eq!((s, target(&b).as_str()), (200, "/hidden/x"));
    let (s, b) = get(&node, format!("{}/pay/charges", node.gateway)).await;
    assert_eq!((s, target(&b).as_str()), (200, "/pay-v1-moved/charges"));

    // Removing an operation removes its route.
    let removed = changed.replace(
        "      - { id: special, methods: [GET], path: /charges/export }\n",
        "",
    );
    node.apply(&removed).await;
    let (s, b) = get(&node, format!("{}/pay/charges/export", node.gateway)).await;
    // Now the parameter route answers instead of the removed literal one.
    assert_eq!(
        (s, target(&b).as_str()),
        (200, "/pay-v1-moved/charges/export")
    );
    assert_eq!(up.last().target, "/pay-v1-moved/charges/export");
}
