//! Prometheus metrics at the admin listener's `/metrics`: requests by what, who and outcome;
//! latency by phase; limiter decisions; audit health; client labels bounded.

mod support;

use support::*;

#[tokio::test]
async fn metrics_count_requests_by_label_with_bounded_clients() {
    let up = Upstream::start().await;
    let seed = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(
        seed.path(),
        "policies:\n  - name: roomy\n    limits:\n      - {name: daily, scope: client, count: 1000, window: day}\n",
    )
    .unwrap();
    let config = format!(
        "collections:\n  - id: orders\n    base_path: /orders\n    quota_policy: roomy\n    upstreams: {{ sandbox: \"{}/sbx\" }}\n    operations:\n      - {{ id: get, methods: [GET], path: \"/{{id}}\" }}\nclients:\n  - id: second\n    partner: p\n    profiles:\n      - {{ id: second-sbx, environment: sandbox, collections: [orders] }}\n",
        up.url()
    );
    let node = Node::builder()
        .config(&config)
        .arg("--quota-seed")
        .arg(seed.path().to_str().unwrap())
        .arg("--metrics-max-clients")
        .arg("1")
        .start();
    for _ in 0..3 {
        assert_eq!(node.get("/orders/1").await.status(), 200);
    }
    let second = node.issue_token("second", "second-sbx", &[]).await;
    let r = reqwest::Client::new()
        .get(format!("{}/orders/2", node.gateway))
        .bearer_auth(&second)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(node.get("/nowhere").await.status(), 404);

    // Records (and so metrics) are emitted as responses end: give the last a moment.
    tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    let response = reqwest::get(format!("{}/metrics", node.admin))
        .await
        .unwrap();
    assert!(
        response.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("application/openmetrics-text")
    );
    let text = response.text().await.unwrap();
    let line = |needle: &[&str]| {
        text.lines()
            .filter(|l| !l.starts_with('#'))
            .find(|l| needle.iter().all(|n| l.contains(n)))
            .unwrap_or_else(|| panic!("no line with {needle:?} in\n{text}"))
            .to_owned()
    };
    let tester = line(&[
        "portcullis_requests_total{",
        "client=\"tester\"",
        "outcome=\"allowed\"",
    ]);
    assert!(tester.ends_with(" 3"), "{tester}");
    assert!(tester.contains("collection=\"orders\"") && tester.contains("operation=\"get\""));
    // Only one client gets its own labels; the next is `_other`.
    let other = line(&["portcullis_requests_total{", "client=\"_other\""]);
    assert!(
        other.contains("profile=\"_other\"") && other.ends_with(" 1"),
        "{other}"
    );
    assert!(!text.contains("client=\"second\""));
    let missing = line(&["portcullis_requests_total{", "reason=\"route_not_found\""]);
    assert!(missing.contains("outcome=\"denied\""), "{missing}");
    line(&[
        "portcullis_request_duration_seconds_bucket{",
        "phase=\"upstream\"",
    ]);
    line(&[
        "portcullis_request_duration_seconds_count{",
        "phase=\"limiter\"",
    ]);
    let allowed = line(&[
        "portcullis_limit_decisions_total{",
        "policy=\"roomy\"",
        "result=\"allowed\"",
    ]);
    assert!(allowed.ends_with(" 4"), "{allowed}");
    assert!(line(&["portcullis_audit_dropped_records "]).ends_with(" 0"));
    assert!(line(&["portcullis_audit_sink_up "]).ends_with(" 1"));
}
