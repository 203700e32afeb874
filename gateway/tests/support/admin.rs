//! The management API's side of the harness: operators made through the CLI, requests and
//! MCP calls under their tokens, and change records read back through the API.

use serde_json::Value;

use super::{Node, Upstream, collection};

/// A node serving one collection, `orders` at `/orders` with a `list` operation on `/`, in
/// front of `up`; the tester may call it.
pub fn orders_node(up: &Upstream) -> Node {
    Node::with_config(&collection(
        "orders",
        "/orders",
        &up.url(),
        "      - { id: list, methods: [GET], path: / }\n",
    ))
}

/// The management API's OpenAPI document, as the node serves it.
pub async fn openapi(node: &Node) -> Value {
    reqwest::get(format!("{}/api/v1/openapi.json", node.admin))
        .await
        .unwrap()
        .json()
        .await
        .unwrap()
}

/// The bootstrap admin token a first start printed.
pub fn bootstrap_token(node: &Node) -> Option<String> {
    node.stdout
        .iter()
        .map(|l| l.trim())
        .find(|l| l.starts_with("pco_"))
        .map(str::to_owned)
}

pub async fn get(node: &Node, token: Option<&str>, path: &str) -> (u16, Value) {
    let mut request = reqwest::Client::new().get(format!("{}{path}", node.admin));
    if let Some(token) = token {
        request = request.bearer_auth(token);
    }
    let response = request.send().await.unwrap();
    let status = response.status().as_u16();
    (status, response.json().await.unwrap())
}

/// The records at `path` (an `/api/v1/audit/…` query) that operators caused, waiting up to
/// 10 s until there are `n` (the audit writer works in batches).
pub async fn changes(node: &Node, token: &str, path: &str, n: usize) -> Vec<Value> {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        let (status, body) = get(node, Some(token), path).await;
        assert_eq!(status, 200, "{body}");
        // The operators' changes: not the system's own (the bootstrap admin's creation).
        let records: Vec<Value> = body["records"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|r| r["who"]["kind"] != "system")
            .cloned()
            .collect();
        if records.len() >= n || std::time::Instant::now() > deadline {
            return records;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
}

/// Creates an operator through the CLI and returns its token.
pub fn operator(node: &Node, id: &str, role: &str) -> String {
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

pub async fn send(
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

/// One Management MCP message; the stateless protocol (2026-07-28) unless `session` is given.
pub async fn mcp(
    node: &Node,
    token: Option<&str>,
    method: &str,
    params: Value,
    session: Option<&str>,
) -> (u16, reqwest::header::HeaderMap, Value) {
    let mut params = params;
    let mut request = reqwest::Client::new()
        .post(format!("{}/api/v1/mcp", node.admin))
        .header("content-type", "application/json")
        .header("accept", "application/json, text/event-stream");
    match session {
        Some(session) => {
            request = request
                .header("mcp-session-id", session)
                .header("mcp-protocol-version", "2025-11-25");
        }
        None if method == "initialize" => {}
        None => {
            params["_meta"] = serde_json::json!({
                "io.modelcontextprotocol/protocolVersion": "2026-07-28",
                "io.modelcontextprotocol/clientCapabilities": {},
            });
            request = request
                .header("mcp-protocol-version", "2026-07-28")
                .header("mcp-method", method);
            if let Some(name) = params["name"].as_str() {
                request = request.header("mcp-name", name);
            }
        }
    }
    if let Some(token) = token {
        request = request.bearer_auth(token);
    }
    let body = serde_json::json!({"jsonrpc": "2.0", "id": 1, "method": method, "params": params});
    let response = request.json(&body).send().await.unwrap();
    let status = response.status().as_u16();
    let headers = response.headers().clone();
    let text = response.text().await.unwrap();
    (
        status,
        headers,
        serde_json::from_str(&text).unwrap_or(Value::Null),
    )
}

pub async fn tool(node: &Node, token: &str, name: &str, arguments: Value) -> Value {
    let (status, _, answer) = mcp(
        node,
        Some(token),
        "tools/call",
        serde_json::json!({"name": name, "arguments": arguments}),
        None,
    )
    .await;
    assert_eq!(status, 200, "{answer}");
    answer["result"].clone()
}
