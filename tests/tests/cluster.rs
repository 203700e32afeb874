//! The cluster's promises, on loopback: three gateway processes on one fresh PostgreSQL
//! database. A change made through any node's management API reaches every node through the
//! change feed within a second; a node cut off from the database keeps serving its last good
//! snapshot, says it is not ready, and catches up; an MCP session opened on one node works on
//! the others; a killed node loses no request record it acknowledged.

use std::sync::Arc;
use std::time::Duration;

use portcullis_cluster_tests::*;
use serde_json::{Value, json};

const SECRET: &str = "cluster-test-token-secret-0123456789abcdef";

fn config(upstream: std::net::SocketAddr) -> String {
    format!(
        "collections:
  - id: orders
    base_path: /orders
    upstreams: {{ sandbox: \"http://{upstream}\" }}
    mcp: {{ expose_all: true }}
    operations:
      - {{ id: list-orders, methods: [GET], path: / }}
clients:
  - id: acme
    partner: acme
    profiles:
      - {{ id: acme-sbx, environment: sandbox, collections: [orders] }}
"
    )
}

/// A fresh database with the configuration, a token for acme, and an admin operator token.
async fn cluster_store(pg: &str) -> (Database, String, String) {
    let db = Database::create(pg).await;
    let (up, _) = upstream().await;
    let token = configure(&db.url, SECRET, &config(up), "acme", "acme-sbx");
    let admin = operator(&db.url, SECRET, "ops", "admin");
    (db, token, admin)
}

#[tokio::test]
async fn changes_through_any_node_reach_every_node_within_a_second() {
    let Some(pg) = service("PORTCULLIS_TEST_POSTGRES_URL") else {
        return;
    };
    let (db, token, admin) = cluster_store(&pg).await;
    // The poll is slow on purpose: what arrives within a second came through the feed.
    let slow = ["--config-poll-interval", "60s"];
    let nodes: Vec<Gateway> = (0..3)
        .map(|_| Gateway::start(&db.url, SECRET, &slow))
        .collect();
    for node in &nodes {
        assert_eq!(status(node, "/orders/", &token).await, 200);
    }

    // Revoke the token through node 0: every node refuses it within a second.
    let (_, client) = nodes[0]
        .admin_get("/api/v1/clients/acme", Some(&admin))
        .await;
    let credential = client["profiles"][0]["credentials"][0]["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let started = std::time::Instant::now();
    let revoked = reqwest::Client::new()
        .delete(format!(
            "{}/api/v1/clients/acme/profiles/acme-sbx/credentials/{credential}",
            nodes[0].admin
        ))
        .bearer_auth(&admin)
        .send()
        .await
        .unwrap();
    assert_eq!(revoked.status(), 200);
    let mut slowest = Duration::ZERO;
    for (i, node) in nodes.iter().enumerate() {
        let took = within(Duration::from_secs(5), || async {
            status(node, "/orders/", &token).await == 401
        })
        .await
        .unwrap_or_else(|| panic!("node {i} still accepts the revoked token after 5 s"));
        slowest = slowest.max(started.elapsed().max(took));
    }
    eprintln!("a revocation through node 0 reached all 3 nodes in {slowest:?}");
    assert!(slowest < Duration::from_secs(1), "{slowest:?}");

    // A new collection through node 1 is served by node 2 as soon as its version is active.
    let started = std::time::Instant::now();
    let put = reqwest::Client::new()
        .put(format!("{}/api/v1/collections/returns", nodes[1].admin))
        .bearer_auth(&admin)
        .json(&json!({
            "id": "returns", "base_path": "/returns",
            "upstreams": {"sandbox": "http://127.0.0.1:9"},
            "operations": [{"id": "list", "methods": ["GET"], "path": "/"}],
        }))
        .send()
        .await
        .unwrap();
    assert_eq!(put.status(), 201);
    let (_, ready) = nodes[1].admin_get("/readyz", None).await;
    let version = ready["config_version"].as_u64().unwrap();
    let took = within(Duration::from_secs(5), || async {
        nodes[2].admin_get("/readyz", None).await.1["config_version"].as_u64() >= Some(version)
    })
    .await
    .expect("node 2 loads the new version");
    eprintln!(
        "a collection created through node 1 was active on node 2 after {:?}",
        started.elapsed().max(took)
    );
    assert!(started.elapsed() < Duration::from_secs(2));

    // Deleted through node 2, it is gone from node 0 too: nodes that follow changes learn of
    // deletions, not only of writes. (Routed, an anonymous call is 401; unrouted, 404.)
    let anonymous = || async {
        reqwest::get(format!("{}/returns/", nodes[0].url))
            .await
            .unwrap()
            .status()
            .as_u16()
    };
    assert_eq!(anonymous().await, 401);
    let delete = reqwest::Client::new()
        .delete(format!("{}/api/v1/collections/returns", nodes[2].admin))
        .bearer_auth(&admin)
        .send()
        .await
        .unwrap();
    assert_eq!(delete.status(), 204);
    within(Duration::from_secs(5), || async {
        anonymous().await == 404
    })
    .await
    .expect("node 0 stops routing the deleted collection");
    drop(nodes);
    db.drop_db().await;
}

// The proxy runs on the test's runtime while node starts block a thread.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_cut_off_from_the_database_serves_its_last_snapshot_and_catches_up() {
    let Some(pg) = service("PORTCULLIS_TEST_POSTGRES_URL") else {
        return;
    };
    let (db, token, admin) = cluster_store(&pg).await;
    let pg_addr: std::net::SocketAddr = "127.0.0.1:5432".parse().unwrap();
    assert!(
        db.url.contains("127.0.0.1:5432"),
        "the test proxies {}",
        db.url
    );
    let proxy = Cuttable::start(pg_addr).await;
    let through_proxy = db.url.replace("127.0.0.1:5432", &proxy.addr.to_string());
    let direct = Gateway::start(&db.url, SECRET, &[]);
    let cut_off = Gateway::start(&through_proxy, SECRET, &[]);
    assert_eq!(status(&cut_off, "/orders/", &token).await, 200);

    proxy.cut();
    // Not ready, but still serving what it had.
    within(Duration::from_secs(5), || async {
        cut_off.admin_get("/readyz", None).await.0 == 503
    })
    .await
    .expect("a node without its database reports not-ready");
    assert_eq!(status(&cut_off, "/orders/", &token).await, 200);

    // Meanwhile a change through the other node.
    let put = reqwest::Client::new()
        .post(format!(
            "{}/api/v1/collections/orders/unpublish",
            direct.admin
        ))
        .bearer_auth(&admin)
        .send()
        .await
        .unwrap();
    assert_eq!(put.status(), 200);
    let (_, ready) = direct.admin_get("/readyz", None).await;
    let version = ready["config_version"].as_u64().unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(
        status(&cut_off, "/orders/", &token).await,
        200,
        "the last good snapshot still routes it"
    );

    proxy.restore();
    within(Duration::from_secs(10), || async {
        let (code, ready) = cut_off.admin_get("/readyz", None).await;
        code == 200 && ready["config_version"].as_u64() >= Some(version)
    })
    .await
    .expect("the node catches up when the database returns");
    assert_eq!(status(&cut_off, "/orders/", &token).await, 404);
    drop((direct, cut_off));
    db.drop_db().await;
}

#[tokio::test]
async fn an_mcp_session_works_whichever_node_receives_each_message() {
    let Some(pg) = service("PORTCULLIS_TEST_POSTGRES_URL") else {
        return;
    };
    let (db, token, _) = cluster_store(&pg).await;
    let nodes: Vec<Gateway> = (0..3)
        .map(|_| Gateway::start(&db.url, SECRET, &[]))
        .collect();
    let http = reqwest::Client::new();
    let post = |node: &Gateway, session: Option<&str>, body: Value| {
        let mut request = http
            .post(format!("{}/mcp", node.url))
            .bearer_auth(&token)
            .header("content-type", "application/json")
            .header("accept", "application/json, text/event-stream")
            .json(&body);
        if let Some(session) = session {
            request = request
                .header("mcp-session-id", session)
                .header("mcp-protocol-version", "2025-11-25");
        }
        request.send()
    };
    let opened = post(
        &nodes[0],
        None,
        json!({"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {
            "protocolVersion": "2025-11-25", "capabilities": {},
            "clientInfo": {"name": "cluster-test", "version": "1"}}}),
    )
    .await
    .unwrap();
    assert_eq!(opened.status(), 200);
    let session = opened.headers()["mcp-session-id"]
        .to_str()
        .unwrap()
        .to_owned();
    for (i, node) in nodes.iter().enumerate() {
        let called = post(
            node,
            Some(&session),
            json!({"jsonrpc": "2.0", "id": 2, "method": "tools/call",
                   "params": {"name": "list-orders", "arguments": {}}}),
        )
        .await
        .unwrap();
        assert_eq!(called.status(), 200, "node {i}");
        let answer: Value = called.json().await.unwrap();
        assert_eq!(answer["result"]["isError"], false, "node {i}: {answer}");
    }
    drop(nodes);
    db.drop_db().await;
}

#[tokio::test]
async fn a_killed_node_loses_no_record_it_acknowledged() {
    let Some(pg) = service("PORTCULLIS_TEST_POSTGRES_URL") else {
        return;
    };
    let (db, token, admin) = cluster_store(&pg).await;
    let dir = Arc::new(tempfile::tempdir().unwrap());
    let mut node = Gateway::start_in(dir.clone(), &db.url, SECRET, &[]);
    let answers = burst(&[&node], "/orders/", &token, 300).await;
    assert!(answers.iter().all(|(s, _)| *s == 200));
    // Every answer was read whole; the node dies at once.
    node.process.kill();
    let node = Gateway::start_in(dir, &db.url, SECRET, &[]);
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    let count = loop {
        let (_, page) = node
            .admin_get(
                "/api/v1/audit/requests?client=acme&limit=1000",
                Some(&admin),
            )
            .await;
        let count = page["records"].as_array().map_or(0, Vec::len);
        if count >= 300 || std::time::Instant::now() > deadline {
            break count;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(count, 300, "every acknowledged request has its record");
    drop(node);
    db.drop_db().await;
}

#[tokio::test]
async fn a_node_that_cannot_reach_its_database_at_start_refuses_to_serve() {
    let dir = tempfile::tempdir().unwrap();
    // Nothing listens on port 1.
    let out = tokio::task::spawn_blocking(move || {
        std::process::Command::new(bin("portcullis"))
            .arg("--data-dir")
            .arg(dir.path())
            .args(["--store", "postgres://portcullis@127.0.0.1:1/portcullis"])
            .args(["--token-secret", SECRET])
            .args([
                "serve",
                "--listen",
                "127.0.0.1:0",
                "--admin-listen",
                "127.0.0.1:0",
            ])
            .args(["--quota-listen", "127.0.0.1:0"])
            .output()
            .unwrap()
    })
    .await
    .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "it must not serve");
    assert!(
        stderr.contains("cannot open the configuration store"),
        "a clear reason: {stderr}"
    );
    assert!(
        !String::from_utf8_lossy(&out.stdout).contains("gateway: http"),
        "it never listened"
    );
}
