//! The Gateway MCP: an MCP client nobody here wrote (rmcp) listing and calling tools; the
//! protocol of both eras on the wire; and the promises that matter — the same credentials,
//! buckets and records as REST, tools/list never showing what tools/call refuses, sessions
//! bound to their profile and valid on every node.

mod support;

use std::collections::HashMap;

use serde_json::{Value, json};
use support::*;

const MODERN: &str = "2026-07-28";

/// Collection `pets` (sandbox and production upstreams) with: two tools, one hidden operation,
/// one operation needing a scope the agent lacks; collection `admin` granted to nobody but
/// `ops`. Client `agent` has a sandbox and a production profile; `other` is granted nothing.
fn config(up: &str, policy: &str) -> String {
    format!(
        r#"
collections:
  - id: pets
    base_path: /pets
    upstreams: {{ sandbox: "{up}/sbx", production: "{up}/prod" }}
    operations:
      - id: get-pet
        methods: [GET]
        path: /{{id}}
        summary: Find a pet by id
        parameters:
          - {{ name: id, in: path, type: integer }}
          - {{ name: fields, in: query, schema: {{ type: array, items: {{ type: string }} }} }}
        response_schema: {{ type: object }}
        capture_body: {{ redact: [target] }}
        mcp: {{}}
      - id: add-pet
        methods: [POST]
        path: /
        request_schema: {{ type: object, required: [name], properties: {{ name: {{ type: string }} }} }}
        mcp: {{ tool_name: create_pet }}
      - id: file
        methods: [GET]
        path: /files/{{name}}
        mcp: {{}}
      - id: broken
        methods: [GET]
        path: /status/{{code}}
        mcp: {{}}
      - id: hidden
        methods: [GET]
        path: /hidden
      - id: purge
        methods: [DELETE]
        path: /all
        scopes: [pets:admin]
        mcp: {{}}
  - id: admin
    base_path: /admin
    upstreams: {{ sandbox: "{up}/admin" }}
    operations:
      - {{ id: wipe, methods: [DELETE], path: /, mcp: {{}} }}
clients:
  - id: agent
    partner: acme
    profiles:
      - {{ id: agent-sbx, environment: sandbox, collections: [pets], scopes: [pets:read], {policy} }}
      - {{ id: agent-prod, environment: production, collections: [pets] }}
  - id: other
    profiles:
      - {{ id: other-sbx, environment: sandbox }}
"#
    )
}

async fn node(up: &Upstream) -> (Node, String) {
    let node = Node::builder()
        .config(&config(&up.url(), ""))
        .without_tester()
        .start();
    let token = node.issue_token("agent", "agent-sbx", &[]).await;
    (node, token)
}

/// A raw MCP POST; returns the status, headers and JSON body (Null when empty).
async fn post(
    node: &Node,
    token: Option<&str>,
    headers: &[(&str, &str)],
    body: &Value,
) -> (u16, reqwest::header::HeaderMap, Value) {
    let mut request = reqwest::Client::new()
        .post(format!("{}/mcp", node.gateway))
        .header("content-type", "application/json")
        .header("accept", "application/json, text/event-stream")
        .body(body.to_string());
    if let Some(token) = token {
        request = request.bearer_auth(token);
    }
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    let response = request.send().await.unwrap();
    let status = response.status().as_u16();
    let headers = response.headers().clone();
    let text = response.text().await.unwrap();
    let body = if text.is_empty() {
        Value::Null
    } else {
        serde_json::from_str(&text).unwrap_or_else(|_| panic!("not JSON: {text}"))
    };
    (status, headers, body)
}

/// `params._meta` of the stateless era.
fn meta() -> Value {
    json!({
        "io.modelcontextprotocol/protocolVersion": MODERN,
        "io.modelcontextprotocol/clientCapabilities": {},
    })
}

/// A stateless request with correct headers.
async fn modern(
    node: &Node,
    token: &str,
    id: u64,
    method: &str,
    mut params: Value,
) -> (u16, Value) {
    params["_meta"] = meta();
    let name = params["name"].as_str().map(str::to_owned);
    let mut headers = vec![("mcp-protocol-version", MODERN), ("mcp-method", method)];
    if let Some(name) = &name {
        headers.push(("mcp-name", name.as_str()));
    }
    let body = json!({"jsonrpc": "2.0", "id": id, "method": method, "params": params});
    let (status, _, body) = post(node, Some(token), &headers, &body).await;
    (status, body)
}

/// Opens a session (2025-11-25) and returns its id.
async fn initialize(node: &Node, token: &str) -> String {
    let body = json!({"jsonrpc": "2.0", "id": 0, "method": "initialize", "params": {
        "protocolVersion": "2025-11-25", "capabilities": {}, "clientInfo": {"name": "t", "version": "1"}}});
    let (status, headers, body) = post(node, Some(token), &[], &body).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["result"]["protocolVersion"], "2025-11-25");
    headers["mcp-session-id"].to_str().unwrap().to_owned()
}

async fn in_session(
    node: &Node,
    token: &str,
    session: &str,
    id: u64,
    method: &str,
    params: Value,
) -> (u16, Value) {
    let body = json!({"jsonrpc": "2.0", "id": id, "method": method, "params": params});
    let headers = [
        ("mcp-session-id", session),
        ("mcp-protocol-version", "2025-11-25"),
    ];
    let (status, _, body) = post(node, Some(token), &headers, &body).await;
    (status, body)
}

fn tool_names(list: &Value) -> Vec<String> {
    list["tools"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["name"].as_str().unwrap().to_owned())
        .collect()
}

#[tokio::test]
async fn an_mcp_client_lists_and_calls_the_profiles_operations() {
    use rmcp::ServiceExt as _;
    use rmcp::model::{CallToolRequestParams, ClientCapabilities, ClientConfig, Implementation};
    use rmcp::transport::StreamableHttpClientTransport;
    use rmcp::transport::streamable_http_client::StreamableHttpClientTransportConfig;

    let up = Upstream::start().await;
    let (node, token) = node(&up).await;
    let config = StreamableHttpClientTransportConfig::with_uri(format!("{}/mcp", node.gateway))
        .auth_header(token.clone());
    let transport = StreamableHttpClientTransport::from_config(config);
    let client = ClientConfig::new(
        ClientCapabilities::default(),
        Implementation::new("rmcp-test", "1"),
    )
    .serve(transport)
    .await
    .expect("the rmcp client connects");

    let tools = client.list_tools(Default::default()).await.unwrap();
    let mut names: Vec<String> = tools.tools.iter().map(|t| t.name.to_string()).collect();
    names.sort();
    // Not `hidden` (not exposed), not `purge` (a scope the profile lacks), not `wipe` (not
    // granted).
    assert_eq!(names, ["broken", "create_pet", "file", "get-pet"]);
    let get = tools.tools.iter().find(|t| t.name == "get-pet").unwrap();
    assert_eq!(get.title.as_deref(), Some("Find a pet by id"));
    assert_eq!(get.input_schema["required"], json!(["id"]));
    assert_eq!(get.annotations.as_ref().unwrap().read_only_hint, Some(true));

    let args = json!({"id": 42, "fields": ["name", "tag"]});
    let result = client
        .call_tool(
            CallToolRequestParams::new("get-pet").with_arguments(args.as_object().unwrap().clone()),
        )
        .await
        .unwrap();
    assert_ne!(result.is_error, Some(true), "{result:?}");
    let structured = result.structured_content.clone().unwrap();
    assert_eq!(structured["target"], "/sbx/42?fields=name&fields=tag");
    let seen = up.last();
    assert_eq!(seen.header("x-portcullis-client"), Some("agent"));
    assert_eq!(seen.header("x-portcullis-profile"), Some("agent-sbx"));
    assert_eq!(
        seen.header("authorization"),
        None,
        "the agent's token stays at the gateway"
    );
    assert_eq!(seen.header("mcp-session-id"), None);

    // A body argument becomes the JSON body.
    let args = json!({"body": {"name": "Rex"}});
    let result = client
        .call_tool(
            CallToolRequestParams::new("create_pet")
                .with_arguments(args.as_object().unwrap().clone()),
        )
        .await
        .unwrap();
    assert_ne!(result.is_error, Some(true), "{result:?}");
    assert_eq!(up.last().method, "POST");
    assert_eq!(up.last().body_len, br#"{"name":"Rex"}"#.len());

    // The upstream's failure is the tool's error, with the status.
    let args = json!({"code": "404"});
    let result = client
        .call_tool(
            CallToolRequestParams::new("broken").with_arguments(args.as_object().unwrap().clone()),
        )
        .await
        .unwrap();
    assert_eq!(result.is_error, Some(true));
    let text = serde_json::to_value(&result.content[0]).unwrap()["text"]
        .as_str()
        .unwrap()
        .to_owned();
    assert_eq!(serde_json::from_str::<Value>(&text).unwrap()["status"], 404);

    // A hidden or foreign tool is unknown, whichever it is.
    for name in ["hidden", "wipe", "purge", "no-such-tool"] {
        let err = client
            .call_tool(CallToolRequestParams::new(name.to_owned()))
            .await
            .unwrap_err();
        assert!(
            err.to_string().contains(&format!("Unknown tool: {name}")),
            "{name}: {err}"
        );
    }
    client.cancel().await.unwrap();

    // One record per MCP request, channel mcp, with the tool and the JSON-RPC id.
    let all = records(&node, 9);
    let call = all
        .iter()
        .find(|r| r["what"]["tool"] == "get-pet")
        .expect("a record of the get-pet call");
    assert_eq!(call["channel"], "mcp");
    assert_eq!(call["what"]["mcp_method"], "tools/call");
    assert_eq!(call["what"]["operation"], "get-pet");
    assert_eq!(call["what"]["path"], "/pets/42");
    assert_eq!(call["what"]["path_template"], "/pets/{id}");
    assert_eq!(call["who"]["client"], "agent");
    assert_eq!(call["upstream_status"], 200);
    assert_eq!(call["outcome"], "allowed");
    assert!(call["what"]["rpc_id"].is_string());
    // The captured response is the operation's body (redacted), not the JSON-RPC envelope
    // that carries it to the agent as text.
    let kept: Value = serde_json::from_str(call["response_body"].as_str().unwrap()).unwrap();
    assert_eq!(kept["target"], "[redacted]");
    assert_eq!(kept["method"], "GET");
    let broken = all.iter().find(|r| r["what"]["tool"] == "broken").unwrap();
    assert_eq!(
        (
            broken["status"].as_u64(),
            broken["upstream_status"].as_u64()
        ),
        (Some(404), Some(404))
    );
    let denied: HashMap<&str, &str> = all
        .iter()
        .filter_map(|r| Some((r["what"]["tool"].as_str()?, r["reason"].as_str()?)))
        .collect();
    assert_eq!(denied["hidden"], "route_not_found");
    assert_eq!(denied["wipe"], "product_not_granted");
    assert_eq!(denied["purge"], "insufficient_scope");
    assert!(all.iter().any(|r| r["what"]["mcp_method"] == "initialize"));
}

#[tokio::test]
async fn the_stateless_era_checks_headers_against_the_body() {
    let up = Upstream::start().await;
    let (node, token) = node(&up).await;

    let (status, body) = modern(&node, &token, 1, "server/discover", json!({})).await;
    assert_eq!(status, 200, "{body}");
    let result = &body["result"];
    assert_eq!(result["resultType"], "complete");
    assert_eq!(result["supportedVersions"][0], MODERN);
    assert!(result["capabilities"]["tools"].is_object());
    assert_eq!(result["cacheScope"], "private");
    assert_eq!(
        result["_meta"]["io.modelcontextprotocol/serverInfo"]["name"],
        "portcullis"
    );

    let (_, body) = modern(&node, &token, 2, "tools/list", json!({})).await;
    assert_eq!(
        tool_names(&body["result"]),
        ["broken", "create_pet", "file", "get-pet"]
    );
    assert_eq!(body["result"]["cacheScope"], "private");
    assert!(body["result"]["ttlMs"].is_u64());

    let (status, body) = modern(
        &node,
        &token,
        3,
        "tools/call",
        json!({"name": "get-pet", "arguments": {"id": 7}}),
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(body["result"]["structuredContent"]["target"], "/sbx/7");
    assert_eq!(body["result"]["resultType"], "complete");

    // Headers that disagree with the body, or are missing.
    let call = |name: &str| json!({"jsonrpc": "2.0", "id": 9, "method": "tools/call", "params": {"name": name, "arguments": {"id": 1}, "_meta": meta()}});
    let cases: [(&[(&str, &str)], Value); 5] = [
        (
            &[
                ("mcp-protocol-version", MODERN),
                ("mcp-method", "tools/list"),
                ("mcp-name", "get-pet"),
            ],
            call("get-pet"),
        ),
        (
            &[
                ("mcp-protocol-version", MODERN),
                ("mcp-method", "tools/call"),
                ("mcp-name", "create_pet"),
            ],
            call("get-pet"),
        ),
        (
            &[
                ("mcp-protocol-version", MODERN),
                ("mcp-method", "tools/call"),
            ],
            call("get-pet"),
        ),
        (
            &[("mcp-method", "tools/call"), ("mcp-name", "get-pet")],
            call("get-pet"),
        ),
        (
            &[
                ("mcp-protocol-version", "2025-11-25"),
                ("mcp-method", "tools/call"),
                ("mcp-name", "get-pet"),
            ],
            call("get-pet"),
        ),
    ];
    let before = up.seen().len();
    for (headers, body) in cases {
        let (status, _, answer) = post(&node, Some(&token), headers, &body).await;
        assert_eq!(
            (status, answer["error"]["code"].as_i64()),
            (400, Some(-32020)),
            "{headers:?}: {answer}"
        );
        assert_eq!(answer["id"], 9);
    }
    assert_eq!(up.seen().len(), before, "nothing reached the upstream");

    // Base64-encoded Mcp-Name is decoded before comparing.
    let (status, _, answer) = post(
        &node,
        Some(&token),
        &[
            ("mcp-protocol-version", MODERN),
            ("mcp-method", "tools/call"),
            ("mcp-name", "=?base64?Z2V0LXBldA==?="),
        ],
        &call("get-pet"),
    )
    .await;
    assert_eq!(status, 200, "{answer}");

    // An unsupported version names the supported ones; an unknown method is a 404.
    let mut body =
        json!({"jsonrpc": "2.0", "id": 4, "method": "tools/list", "params": {"_meta": meta()}});
    body["params"]["_meta"]["io.modelcontextprotocol/protocolVersion"] = "2099-01-01".into();
    let (status, _, answer) = post(
        &node,
        Some(&token),
        &[
            ("mcp-protocol-version", "2099-01-01"),
            ("mcp-method", "tools/list"),
        ],
        &body,
    )
    .await;
    assert_eq!(
        (status, answer["error"]["code"].as_i64()),
        (400, Some(-32022))
    );
    assert_eq!(answer["error"]["data"]["requested"], "2099-01-01");
    assert!(
        answer["error"]["data"]["supported"]
            .as_array()
            .unwrap()
            .contains(&json!(MODERN))
    );
    for method in ["ping", "initialize", "resources/list"] {
        let (status, answer) = modern(&node, &token, 5, method, json!({})).await;
        assert_eq!(
            (status, answer["error"]["code"].as_i64()),
            (404, Some(-32601)),
            "{method}"
        );
    }
    // Missing required _meta fields.
    let body = json!({"jsonrpc": "2.0", "id": 6, "method": "tools/list", "params": {"_meta": {"io.modelcontextprotocol/protocolVersion": MODERN}}});
    let (status, _, answer) = post(
        &node,
        Some(&token),
        &[
            ("mcp-protocol-version", MODERN),
            ("mcp-method", "tools/list"),
        ],
        &body,
    )
    .await;
    assert_eq!(
        (status, answer["error"]["code"].as_i64()),
        (400, Some(-32602))
    );

    // No GET stream and no DELETE.
    let http = reqwest::Client::new();
    for method in [reqwest::Method::GET, reqwest::Method::DELETE] {
        let r = http
            .request(method.clone(), format!("{}/mcp", node.gateway))
            .bearer_auth(&token)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 405, "{method}");
        assert_eq!(r.headers()["allow"], "POST");
    }
}

#[tokio::test]
async fn malformed_and_hostile_requests_get_clear_errors() {
    let up = Upstream::start().await;
    let (node, token) = node(&up).await;
    let http = reqwest::Client::new();
    let url = format!("{}/mcp", node.gateway);
    let raw = |body: &'static str| {
        http.post(&url)
            .bearer_auth(&token)
            .header("content-type", "application/json")
            .header("accept", "application/json, text/event-stream")
            .body(body)
    };
    for (body, code) in [
        ("{", -32700),
        ("\u{0}\u{1}", -32700),
        ("[]", -32600),
        (r#"[{"jsonrpc":"2.0","id":1,"method":"ping"}]"#, -32600),
        (r#"{"jsonrpc":"1.0","id":1,"method":"ping"}"#, -32600),
        (r#"{"jsonrpc":"2.0","id":{},"method":"ping"}"#, -32600),
        (
            r#"{"jsonrpc":"2.0","id":1,"method":"tools/list","params":[]}"#,
            -32602,
        ),
    ] {
        let r = raw(body).send().await.unwrap();
        assert_eq!(r.status(), 400, "{body}");
        let answer: Value = r.json().await.unwrap();
        assert_eq!(answer["error"]["code"], code, "{body}");
    }
    // Not JSON, not accepting JSON, too large.
    let r = http
        .post(&url)
        .bearer_auth(&token)
        .header("content-type", "text/plain")
        .body("{}")
        .send()
        .await
        .unwrap();
    assert_eq!(
        (r.status().as_u16(), code(&r.text().await.unwrap())),
        (415, "unsupported_media_type".into())
    );
    let r = http
        .post(&url)
        .bearer_auth(&token)
        .header("content-type", "application/json")
        .header("accept", "text/html")
        .body("{}")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 406);
    // A declared length over the limit is refused before any of the body is read.
    {
        use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
        let addr = node.gateway.trim_start_matches("http://");
        let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
        let head = format!(
            "POST /mcp HTTP/1.1\r\nhost: {addr}\r\nauthorization: Bearer {token}\r\ncontent-type: application/json\r\naccept: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n",
            11 * 1024 * 1024
        );
        stream.write_all(head.as_bytes()).await.unwrap();
        let mut answer = String::new();
        let _ = stream.read_to_string(&mut answer).await;
        assert!(answer.starts_with("HTTP/1.1 413"), "{answer}");
        assert!(answer.contains("payload_too_large"));
    }

    // A browser page from elsewhere is refused (DNS rebinding); the gateway's own origin is not.
    let r = raw("{}")
        .header("origin", "http://evil.example")
        .send()
        .await
        .unwrap();
    assert_eq!(
        (r.status().as_u16(), code(&r.text().await.unwrap())),
        (403, "origin_not_allowed".into())
    );
    let own = node.gateway.clone();
    let r = raw(r#"{"jsonrpc":"2.0","id":1,"method":"initialize","params":{"protocolVersion":"2025-11-25","capabilities":{},"clientInfo":{"name":"t","version":"1"}}}"#)
        .header("origin", own)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);

    // Arguments that would change the path never leave the gateway.
    let session = initialize(&node, &token).await;
    let before = up.seen().len();
    for hostile in ["../hidden", "a/b", "..", "%2e%2e"] {
        let (status, body) = in_session(
            &node,
            &token,
            &session,
            3,
            "tools/call",
            json!({"name": "file", "arguments": {"name": hostile}}),
        )
        .await;
        assert_eq!(status, 200);
        let result = &body["result"];
        if hostile == "%2e%2e" {
            // Not a dot segment: sent as one encoded segment.
            assert_eq!(
                result["structuredContent"]["target"],
                "/sbx/files/%252e%252e"
            );
            continue;
        }
        assert_eq!(result["isError"], true, "{hostile}: {body}");
        let detail: Value =
            serde_json::from_str(result["content"][0]["text"].as_str().unwrap()).unwrap();
        assert_eq!(detail["code"], "bad_request");
    }
    assert_eq!(
        up.seen().len(),
        before + 1,
        "only the harmless value was sent"
    );
    // Arguments that do not match the schema: a tool error the agent can correct.
    let (_, body) = in_session(
        &node,
        &token,
        &session,
        4,
        "tools/call",
        json!({"name": "get-pet", "arguments": {"id": "seven"}}),
    )
    .await;
    assert_eq!(body["result"]["isError"], true);
    assert!(
        body["result"]["content"][0]["text"]
            .as_str()
            .unwrap()
            .contains("/id")
    );
    let (_, body) = in_session(
        &node,
        &token,
        &session,
        5,
        "tools/call",
        json!({"name": "get-pet", "arguments": 7}),
    )
    .await;
    assert_eq!(body["error"]["code"], -32602);
}

#[tokio::test]
async fn sessions_are_not_credentials() {
    let up = Upstream::start().await;
    let (node, token) = node(&up).await;
    let other = node.issue_token("other", "other-sbx", &[]).await;
    let prod = node.issue_token("agent", "agent-prod", &[]).await;

    // Without a credential: 401 pointing at the protected resource metadata.
    let body = json!({"jsonrpc": "2.0", "id": 1, "method": "tools/list"});
    let (status, headers, _) = post(&node, None, &[], &body).await;
    assert_eq!(status, 401);
    let challenge = headers["www-authenticate"].to_str().unwrap();
    let metadata_url = format!("{}/.well-known/oauth-protected-resource/mcp", node.gateway);
    assert!(
        challenge.contains(&format!(r#"resource_metadata="{metadata_url}""#)),
        "{challenge}"
    );
    let metadata: Value = reqwest::get(&metadata_url)
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(metadata["resource"], format!("{}/mcp", node.gateway));
    assert_eq!(metadata["bearer_methods_supported"], json!(["header"]));
    assert_eq!(metadata["scopes_supported"], json!(["pets:admin"]));
    let (status, headers, _) = post(&node, Some("pcl_not_a_real_token"), &[], &body).await;
    assert_eq!(status, 401);
    assert!(
        headers["www-authenticate"]
            .to_str()
            .unwrap()
            .contains("invalid_token")
    );

    let session = initialize(&node, &token).await;
    assert!(session.bytes().all(|b| (0x21..=0x7e).contains(&b)));
    let (status, body) = in_session(&node, &token, &session, 2, "tools/list", json!({})).await;
    assert_eq!(status, 200);
    assert_eq!(tool_names(&body["result"]).len(), 4);
    // The session id alone is nothing: the request still needs the credential.
    let (status, _, _) = post(&node, None, &[("mcp-session-id", &session)], &body).await;
    assert_eq!(status, 401);
    // Another profile's credential with this session: as if the session did not exist.
    for stranger in [&other, &prod] {
        let (status, answer) =
            in_session(&node, stranger, &session, 3, "tools/list", json!({})).await;
        assert_eq!(status, 404, "{answer}");
        assert_eq!(answer["error"]["code"], "session_not_found");
    }
    // A forged or missing session.
    let forged = session.replacen('.', "x.", 1);
    let (status, _) = in_session(&node, &token, &forged, 4, "tools/list", json!({})).await;
    assert_eq!(status, 404);
    let (status, _, answer) = post(&node, Some(&token), &[], &body).await;
    assert_eq!(
        (status, answer["error"]["code"].as_i64()),
        (400, Some(-32600))
    );
    // Notifications are accepted without an answer.
    let note = json!({"jsonrpc": "2.0", "method": "notifications/initialized"});
    let (status, _, answer) =
        post(&node, Some(&token), &[("mcp-session-id", &session)], &note).await;
    assert_eq!((status, answer), (202, Value::Null));
    let (_, ping) = in_session(&node, &token, &session, 5, "ping", json!({})).await;
    assert_eq!(ping["result"], json!({}));

    // The production profile's tools reach the production upstream, the sandbox's the sandbox.
    let (_, body) = modern(
        &node,
        &prod,
        6,
        "tools/call",
        json!({"name": "get-pet", "arguments": {"id": 1}}),
    )
    .await;
    assert_eq!(body["result"]["structuredContent"]["target"], "/prod/1");
    let (_, body) = modern(
        &node,
        &token,
        7,
        "tools/call",
        json!({"name": "get-pet", "arguments": {"id": 1}}),
    )
    .await;
    assert_eq!(body["result"]["structuredContent"]["target"], "/sbx/1");
    // `other` is granted nothing: no tools, and calling one is an unknown tool.
    let (_, body) = modern(&node, &other, 8, "tools/list", json!({})).await;
    assert_eq!(tool_names(&body["result"]), Vec::<String>::new());
    let (_, body) = modern(
        &node,
        &other,
        9,
        "tools/call",
        json!({"name": "get-pet", "arguments": {"id": 1}}),
    )
    .await;
    assert_eq!(body["error"]["message"], "Unknown tool: get-pet");
}

#[tokio::test]
async fn a_session_opened_on_one_node_works_on_another() {
    let up = Upstream::start().await;
    let store_dir = tempfile::tempdir().unwrap();
    let store = format!("sqlite://{}", store_dir.path().join("store.db").display());
    let a = Node::builder()
        .store(&store)
        .config(&config(&up.url(), ""))
        .without_tester()
        .start();
    // Nodes of a cluster share the server secret, and nothing else: no session store.
    let b_dir = tempfile::tempdir().unwrap();
    std::fs::copy(
        a.data_dir.join("token-secret"),
        b_dir.path().join("token-secret"),
    )
    .unwrap();
    let b = Node::builder().store(&store).data_dir(b_dir.path()).start();
    let token = a.issue_token("agent", "agent-sbx", &[]).await;
    b.wait_for_version(a.ready().await["config_version"].as_u64().unwrap())
        .await;
    let session = initialize(&a, &token).await;
    let (status, body) = in_session(
        &b,
        &token,
        &session,
        1,
        "tools/call",
        json!({"name": "get-pet", "arguments": {"id": 3}}),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["result"]["structuredContent"]["target"], "/sbx/3");
}

#[tokio::test]
async fn an_agent_and_an_app_share_one_bucket_and_leave_the_same_records() {
    let up = Upstream::start().await;
    let seed = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(
        seed.path(),
        "policies:\n  - name: small\n    limits:\n      - {name: per-minute, scope: profile, count: 3, per: minute}\n",
    )
    .unwrap();
    let node = Node::builder()
        .config(&config(&up.url(), "quota_policy: small"))
        .without_tester()
        .arg("--quota-seed")
        .arg(seed.path().to_str().unwrap())
        .start();
    let token = node.issue_token("agent", "agent-sbx", &[]).await;
    let rest = |path: &str| {
        reqwest::Client::new()
            .get(format!("{}{path}", node.gateway))
            .bearer_auth(&token)
            .send()
    };
    // Two by REST, one by MCP: the bucket of 3 is spent, whichever channel comes next.
    assert_eq!(rest("/pets/1").await.unwrap().status(), 200);
    assert_eq!(rest("/pets/2").await.unwrap().status(), 200);
    let (_, body) = modern(
        &node,
        &token,
        1,
        "tools/call",
        json!({"name": "get-pet", "arguments": {"id": 3}}),
    )
    .await;
    assert_eq!(body["result"]["isError"], false, "{body}");
    let (_, body) = modern(
        &node,
        &token,
        2,
        "tools/call",
        json!({"name": "get-pet", "arguments": {"id": 4}}),
    )
    .await;
    assert_eq!(body["result"]["isError"], true);
    let detail: Value =
        serde_json::from_str(body["result"]["content"][0]["text"].as_str().unwrap()).unwrap();
    assert_eq!(detail["code"], "rate_limited");
    assert_eq!(detail["status"], 429);
    assert!(detail["retry_after"].as_u64().unwrap() >= 1, "{detail}");
    let refused = rest("/pets/5").await.unwrap();
    assert_eq!(refused.status(), 429);

    // The refused tool call and the refused REST request have the same record, but for the
    // channel and what only MCP has.
    let all = records(&node, 5);
    let denied: Vec<&Value> = all
        .iter()
        .filter(|r| r["reason"] == "rate_limited")
        .collect();
    assert_eq!(denied.len(), 2, "{all:#?}");
    let (mcp, rest) = if denied[0]["channel"] == "mcp" {
        (denied[0], denied[1])
    } else {
        (denied[1], denied[0])
    };
    assert_eq!(mcp["channel"], "mcp");
    assert_eq!(rest["channel"], "rest");
    for field in ["outcome", "reason", "status", "who", "limits"] {
        let (mut a, mut b) = (mcp[field].clone(), rest[field].clone());
        if field == "who" {
            // Only the user agents differ.
            a.as_object_mut().unwrap().remove("user_agent");
            b.as_object_mut().unwrap().remove("user_agent");
        }
        assert_eq!(a, b, "{field}");
    }
    for field in ["collection", "operation", "path_template", "method"] {
        assert_eq!(mcp["what"][field], rest["what"][field], "{field}");
    }
    assert_eq!(mcp["what"]["tool"], "get-pet");
}

#[tokio::test]
async fn tools_list_pages_and_the_catalogue_mode() {
    let up = Upstream::start().await;
    let ops: String = (0..130)
        .map(|i| format!("      - {{ id: op-{i:03}, methods: [GET], path: /o{i}, summary: \"Operation number {i}\" }}\n"))
        .collect();
    let yaml = format!(
        r#"
collections:
  - id: big
    base_path: /big
    mcp: {{ expose_all: true }}
    upstreams: {{ sandbox: "{up}" }}
    operations:
{ops}
  - id: huge
    base_path: /huge
    mcp: {{ expose_all: true, mode: catalogue }}
    upstreams: {{ sandbox: "{up}" }}
    operations:
      - {{ id: find-order, methods: [GET], path: "/orders/{{id}}", summary: Find an order, description: Looks an order up by its id. }}
      - {{ id: cancel-order, methods: [DELETE], path: "/orders/{{id}}", summary: Cancel an order }}
"#,
        up = up.url()
    );
    let node = Node::with_config(&yaml);
    let token = node.token.clone().unwrap();
    let mut names = Vec::new();
    let mut cursor: Option<String> = None;
    let mut pages = 0;
    loop {
        let params = match &cursor {
            Some(c) => json!({"cursor": c}),
            None => json!({}),
        };
        let (_, body) = modern(&node, &token, 1, "tools/list", params).await;
        names.extend(tool_names(&body["result"]));
        pages += 1;
        match body["result"]["nextCursor"].as_str() {
            Some(c) => cursor = Some(c.to_owned()),
            None => break,
        }
    }
    assert_eq!(pages, 2);
    // 130 operations and the 5 discovery tools (for `huge`), in name order, each once.
    assert_eq!(names.len(), 135);
    let mut sorted = names.clone();
    sorted.sort();
    sorted.dedup();
    assert_eq!(names, sorted);
    assert!(names.contains(&"execute_endpoint".to_owned()));
    assert!(
        !names.contains(&"find-order".to_owned()),
        "catalogue operations are not tools"
    );
    let (_, body) = modern(
        &node,
        &token,
        2,
        "tools/list",
        json!({"cursor": "not a cursor!"}),
    )
    .await;
    assert_eq!(body["error"]["code"], -32602);

    let call = |name: &'static str, arguments: Value| {
        let node = &node;
        let token = token.clone();
        async move {
            let (_, body) = modern(
                node,
                &token,
                3,
                "tools/call",
                json!({"name": name, "arguments": arguments}),
            )
            .await;
            body["result"].clone()
        }
    };
    let collections = call("list_collections", json!({})).await;
    assert_eq!(
        collections["structuredContent"]["collections"][0]["id"],
        "huge"
    );
    assert_eq!(
        collections["structuredContent"]["collections"][0]["endpoints"],
        2
    );
    let found = call("search_endpoints", json!({"query": "order looks"})).await;
    let endpoints = found["structuredContent"]["endpoints"].as_array().unwrap();
    assert_eq!(endpoints.len(), 1);
    assert_eq!(endpoints[0]["name"], "find-order");
    let details = call("endpoint_details", json!({"name": "cancel-order"})).await;
    assert_eq!(
        details["structuredContent"]["annotations"]["destructiveHint"],
        true
    );
    assert_eq!(
        details["structuredContent"]["inputSchema"]["required"],
        json!(["id"])
    );
    let executed = call(
        "execute_endpoint",
        json!({"name": "find-order", "arguments": {"id": "o-9"}}),
    )
    .await;
    assert_eq!(executed["structuredContent"]["target"], "/orders/o-9");
    // Two pages, the refused cursor and four discovery calls: seven records.
    let all = records(&node, 7);
    assert!(
        all.iter()
            .any(|r| r["what"]["tool"] == "find-order" && r["what"]["operation"] == "find-order")
    );
}

#[tokio::test]
async fn openapi_import_makes_tools() {
    let up = Upstream::start().await;
    let node = Node::with_config(&collection(
        "other",
        "/other",
        &up.url(),
        "      - { id: x, methods: [GET], path: / }\n",
    ));
    let spec = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/fixtures/openapi/petstore-expanded.yaml"
    );
    let out = node.cli(&[
        "import",
        "openapi",
        spec,
        "--collection",
        "petstore",
        "--base-path",
        "/petstore",
        "--upstream",
        &format!("sandbox={}/api", up.url()),
        "--expose-mcp",
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let version = printed_version(&out);
    node.wait_for_version(version).await;
    // Importing the same document again changes nothing.
    let again = node.cli(&["import", "openapi", spec, "--collection", "petstore"]);
    assert!(
        String::from_utf8_lossy(&again.stdout).contains("No changes"),
        "{}",
        String::from_utf8_lossy(&again.stdout)
    );
    // The tester is not granted the new collection yet; grant it and call a tool.
    let granted = with_tester(
        &collection(
            "other",
            "/other",
            &up.url(),
            "      - { id: x, methods: [GET], path: / }\n",
        ),
        "sandbox",
    )
    .replace("- other", "- other\n    - petstore");
    let file = node.data_dir.join("grant.yaml");
    std::fs::write(&file, granted).unwrap();
    let out = node.cli(&["apply", "-f", file.to_str().unwrap()]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    node.wait_for_version(printed_version(&out)).await;
    let token = node.token.clone().unwrap();
    let (_, body) = modern(&node, &token, 1, "tools/list", json!({})).await;
    let names = tool_names(&body["result"]);
    assert_eq!(names, ["addPet", "deletePet", "findPets", "find_pet_by_id"]);
    let find = body["result"]["tools"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["name"] == "findPets")
        .unwrap();
    assert_eq!(find["inputSchema"]["properties"]["tags"]["type"], "array");
    assert_eq!(
        find["outputSchema"]["properties"]["result"]["type"],
        "array"
    );
    assert_eq!(
        find["outputSchema"]["properties"]["result"]["items"]["$ref"],
        "#/$defs/Pet"
    );
    assert!(find["outputSchema"]["$defs"]["Pet"].is_object());
    let add = body["result"]["tools"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["name"] == "addPet")
        .unwrap();
    assert_eq!(
        add["inputSchema"]["properties"]["body"]["$ref"],
        "#/$defs/NewPet"
    );
    assert!(add["inputSchema"]["$defs"]["NewPet"].is_object());
    let (_, body) = modern(
        &node,
        &token,
        2,
        "tools/call",
        json!({"name": "findPets", "arguments": {"tags": ["cat", "dog"], "limit": 2}}),
    )
    .await;
    assert_eq!(body["result"]["isError"], false, "{body}");
    assert_eq!(up.last().target, "/api/pets?tags=cat&tags=dog&limit=2");
}
