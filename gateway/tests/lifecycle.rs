//! The node's life as an operator sees it: the demo a new user starts first, readiness, and
//! graceful shutdown.

mod support;

use std::process::Command;
use std::time::{Duration, Instant};

use support::{Node, Upstream};

#[tokio::test]
async fn the_demo_answers_the_curl_lines_it_prints() {
    let node = Node::builder().arg("--demo").start();
    let banner = node.stdout.join("\n");
    assert!(banner.contains("gateway: http://127.0.0.1:"), "{banner}");
    // The management API's line (with the bootstrap admin token) and the data plane's.
    let (management, curls): (Vec<&str>, Vec<&str>) = node
        .stdout
        .iter()
        .map(|l| l.trim())
        .filter(|l| l.starts_with("curl "))
        .partition(|l| l.contains("/api/v1/"));
    assert!(curls.len() >= 5, "{banner}");
    // Run each line exactly as printed (comments included), as a user pasting it would.
    let run = |line: &str| {
        let out = Command::new("sh")
            .args(["-c", line])
            .output()
            .expect("sh and curl are available");
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    let listed: serde_json::Value = serde_json::from_str(&run(management[0])).unwrap();
    assert_eq!(listed["collections"][0]["id"], "demo", "{listed}");
    let mut outcomes = Vec::new();
    for line in &curls {
        let text = run(line);
        // `curl -i` prints the status line first; `curl -s` only the body.
        let outcome = match text.strip_prefix("HTTP/1.1 ") {
            Some(rest) => rest[..3].to_owned(),
            None => text,
        };
        outcomes.push(outcome);
    }
    assert_eq!(
        outcomes[..6],
        ["200", "201", "401", "403", "404", "405"],
        "{curls:#?}"
    );
    let ready: serde_json::Value = serde_json::from_str(&outcomes[6]).unwrap();
    assert_eq!(
        (&ready["status"], &ready["config_version"]),
        (&"ready".into(), &1.into())
    );
    assert_eq!(ready["audit"]["dropped"], 0);
    // The MCP line calls the same operation as a tool.
    let tool: serde_json::Value = serde_json::from_str(&outcomes[7]).unwrap();
    assert_eq!(tool["result"]["isError"], false, "{tool}");
    assert_eq!(
        tool["result"]["structuredContent"]["environment"],
        "sandbox"
    );
    // The client configuration printed is JSON naming the endpoint and the token.
    let snippet = node
        .stdout
        .iter()
        .map(|l| l.trim())
        .find(|l| l.starts_with("{\"mcpServers\""))
        .expect("a client configuration is printed");
    let snippet: serde_json::Value = serde_json::from_str(snippet).unwrap();
    let server = &snippet["mcpServers"]["portcullis-demo"];
    assert_eq!(server["url"], format!("{}/mcp", node.gateway));
    assert_eq!(
        server["headers"]["Authorization"],
        format!("Bearer {}", demo_token(&node.stdout))
    );

    // The demo answers with data from the demo upstream's sandbox environment, for the token
    // it printed.
    let hello: serde_json::Value = reqwest::Client::new()
        .get(format!("{}/demo/hello", node.gateway))
        .bearer_auth(demo_token(&node.stdout))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(hello["environment"], "sandbox");
}

/// The token a demo banner printed.
fn demo_token(lines: &[String]) -> String {
    lines
        .iter()
        .map(|l| l.trim())
        .find(|l| l.starts_with("pcl_"))
        .expect("the demo prints its token")
        .to_owned()
}

#[tokio::test]
async fn restarting_the_demo_reuses_its_data_directory() {
    let dir = tempfile::tempdir().unwrap();
    let first = Node::builder().data_dir(dir.path()).arg("--demo").start();
    let v1 = first.ready().await["config_version"].as_u64().unwrap();
    let first_banner = first.stdout.clone();
    drop(first);
    // A new demo upstream port means one new configuration version, nothing else.
    let second = Node::builder().data_dir(dir.path()).arg("--demo").start();
    let v2 = second.ready().await["config_version"].as_u64().unwrap();
    assert_eq!(v2, v1 + 1);
    let r = reqwest::Client::new()
        .get(format!("{}/demo/orders/7", second.gateway))
        .bearer_auth(demo_token(&second.stdout))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    // The first run's token was replaced.
    let r = reqwest::Client::new()
        .get(format!("{}/demo/orders/7", second.gateway))
        .bearer_auth(demo_token(&first_banner))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
}

#[tokio::test]
async fn health_and_readiness() {
    let node = Node::builder().start();
    let r = reqwest::get(format!("{}/healthz", node.admin))
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let ready = node.ready().await;
    assert_eq!(ready["status"], "ready");
    assert_eq!(ready["config_version"], 0);
    // An empty gateway answers every request with route_not_found.
    let r = reqwest::get(format!("{}/anything", node.gateway))
        .await
        .unwrap();
    assert_eq!(r.status(), 404);
    let r = reqwest::get(format!("{}/nope", node.admin)).await.unwrap();
    assert_eq!(r.status(), 404);
}

#[tokio::test]
async fn shutdown_finishes_in_flight_requests_and_refuses_new_ones() {
    let up = Upstream::start().await;
    let yaml = support::collection(
        "slow",
        "/slow",
        &up.url(),
        "      - { id: wait, methods: [GET], path: \"/slow/{ms}\" }\n",
    );
    let mut node = Node::builder()
        .config(&yaml)
        .arg("--shutdown-grace")
        .arg("10s")
        .start();
    let url = format!("{}/slow/slow/1500", node.gateway);
    let http = node.http();
    let in_flight = tokio::spawn(async move {
        let r = http.get(url).send().await.unwrap();
        (r.status().as_u16(), r.text().await.unwrap())
    });
    // Let the request reach the upstream, then ask the node to stop.
    let deadline = Instant::now() + Duration::from_secs(5);
    while up.seen().is_empty() {
        assert!(
            Instant::now() < deadline,
            "the request never reached the upstream"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let gateway = node.gateway.clone();
    let stopping = std::thread::spawn(move || node.terminate());
    tokio::time::sleep(Duration::from_millis(300)).await;
    // New connections are refused while the old request is still running.
    let refused = reqwest::Client::new()
        .get(format!("{gateway}/slow/slow/1"))
        .timeout(Duration::from_secs(2))
        .send()
        .await;
    assert!(
        refused.is_err(),
        "a new request was accepted during shutdown: {refused:?}"
    );
    let (status, body) = in_flight.await.unwrap();
    assert_eq!(status, 200, "{body}");
    assert!(stopping.join().unwrap(), "the node did not exit cleanly");
}
