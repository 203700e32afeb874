//! The built-in demo: a small upstream service on a loopback port and a demo collection that
//! routes to it, so `portcullis serve --demo` answers `curl` at once with nothing else running.

use std::convert::Infallible;
use std::net::SocketAddr;

use bytes::Bytes;
use http::header::{CONTENT_TYPE, HeaderValue};
use http::{Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use tokio::net::TcpListener;

use crate::config::{self, Format};
use crate::model::Config;

/// Starts the demo upstream on an ephemeral loopback port; it runs until the process exits.
pub async fn start_upstream() -> std::io::Result<SocketAddr> {
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    tokio::spawn(serve_upstream(listener));
    Ok(addr)
}

/// Serves the demo upstream on `listener` until the process exits (`portcullis
/// demo-upstream`, for clusters whose nodes share one demo upstream).
pub async fn serve_upstream(listener: TcpListener) {
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
            continue;
        };
        tokio::spawn(async move {
            let _ = auto::Builder::new(TokioExecutor::new())
                .serve_connection(TokioIo::new(stream), service_fn(answer))
                .await;
        });
    }
}

/// The demo upstream. Each environment has its own path prefix, and every answer says which
/// environment served it, so environment routing is visible.
async fn answer(req: Request<Incoming>) -> Result<Response<Full<Bytes>>, Infallible> {
    let path = req.uri().path().to_owned();
    let (environment, rest) = match path.strip_prefix("/sandbox") {
        Some(rest) => ("sandbox", rest.to_owned()),
        None => match path.strip_prefix("/production") {
            Some(rest) => ("production", rest.to_owned()),
            None => ("unknown", path.clone()),
        },
    };
    let segments: Vec<&str> = rest.split('/').filter(|s| !s.is_empty()).collect();
    // HEAD is answered like GET (hyper leaves the body out).
    let method = match req.method() {
        &Method::HEAD => Method::GET,
        m => m.clone(),
    };
    let (status, body) = match (&method, segments.as_slice()) {
        (&Method::GET, ["hello"]) => (
            StatusCode::OK,
            serde_json::json!({"message": "Hello from the Portcullis demo upstream", "environment": environment}),
        ),
        (&Method::GET, ["orders", id]) => (
            StatusCode::OK,
            serde_json::json!({"id": id, "status": "shipped", "items": 2, "environment": environment}),
        ),
        (&Method::POST, ["orders"]) => {
            let body = req
                .into_body()
                .collect()
                .await
                .map(|b| b.to_bytes())
                .unwrap_or_default();
            let order: serde_json::Value =
                serde_json::from_slice(&body).unwrap_or(serde_json::Value::Null);
            (
                StatusCode::CREATED,
                serde_json::json!({"id": "ord_1001", "order": order, "environment": environment}),
            )
        }
        _ => (
            StatusCode::NOT_FOUND,
            serde_json::json!({"upstream_error": "no such demo resource", "path": path}),
        ),
    };
    let mut response = Response::new(Full::new(Bytes::from(body.to_string())));
    *response.status_mut() = status;
    response
        .headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    Ok(response)
}

/// The demo configuration for an upstream at `addr`: a collection, and a client whose sandbox
/// profile holds one API token (stored as `token_hash`) and may read and create orders, but not
/// delete them.
pub fn config(addr: SocketAddr, credential_id: &str, token_hash: &str) -> Config {
    let text = format!(
        r#"
collections:
  - id: demo
    base_path: /demo
    description: Demo orders API served by the built-in demo upstream
    version: "1"
    mcp: {{ expose_all: true }}
    upstreams:
      sandbox: http://{addr}/sandbox
      production: http://{addr}/production
    operations:
      - id: hello
        methods: [GET]
        path: /hello
        summary: Say hello
      - id: get-order
        methods: [GET]
        path: /orders/{{id}}
        summary: Fetch an order
        scopes: [orders:read]
        parameters:
          - {{ name: id, in: path, type: string, required: true }}
      - id: create-order
        methods: [POST]
        path: /orders
        summary: Create an order
        scopes: [orders:write]
        request_schema:
          type: object
          properties:
            item: {{ type: string }}
      - id: delete-order
        methods: [DELETE]
        path: /orders/{{id}}
        summary: Delete an order
        scopes: [orders:admin]
clients:
  - id: demo-app
    name: Demo app
    partner: demo
    profiles:
      - id: demo-sandbox
        environment: sandbox
        collections: [demo]
        scopes: [orders:read, orders:write]
        quota_policy: demo
        credentials:
          - id: {credential_id}
            kind: api_token
            token_hash: {token_hash}
"#
    );
    config::parse(&text, Format::Yaml).expect("the demo configuration is valid")
}

/// The demo's quota policy: a burst of 20 requests per second per client and 1,000 per UTC
/// day per profile. Created on first start; change it with `portcullis quota`.
pub fn policy() -> portcullis_limiter::policy::Policy {
    serde_saphyr::from_str(
        "name: demo\n\
         limits:\n\
         \x20 - {name: burst, scope: client, count: 20, per: second}\n\
         \x20 - {name: daily, scope: profile, count: 1000, window: day}\n",
    )
    .expect("the demo policy is valid")
}

/// The demo configuration for this start: a new token credential, and every earlier demo
/// token in `stored` revoked — a restarted demo leaves exactly one valid demo token.
pub fn config_replacing(addr: SocketAddr, token_hash: &str, stored: &Config) -> Config {
    let suffix = &token_hash[..8];
    let mut config = config(addr, &format!("demo-token-{suffix}"), token_hash);
    let earlier = stored
        .clients
        .iter()
        .filter(|c| c.id.as_str() == "demo-app")
        .flat_map(|c| &c.profiles)
        .filter(|p| p.id.as_str() == "demo-sandbox")
        .flat_map(|p| p.credentials.iter().cloned());
    let now = time::OffsetDateTime::now_utc();
    let profile = &mut config.clients[0].profiles[0];
    for mut old in earlier {
        old.revoked_at.get_or_insert(now);
        profile.credentials.push(old);
    }
    config
}

/// The lines printed on start: the demo's token (shown once) and what to try.
pub fn banner(gateway: &str, admin: &str, quotas: Option<&str>, token: &str) -> String {
    let auth = format!("-H 'Authorization: Bearer {token}'");
    let quota = match quotas {
        Some("http://127.0.0.1:8082") => "portcullis quota".to_owned(),
        Some(url) => format!("portcullis quota --limiter {url}"),
        None => "portcullis quota --limiter <a limiter node>".to_owned(),
    };
    format!(
        "Demo client demo-app, profile demo-sandbox, API token (shown once):\n\
         \x20 {token}\n\
         Try the demo:\n\
         \x20 curl -i {auth} {gateway}/demo/orders/42\n\
         \x20 curl -i {auth} -X POST {gateway}/demo/orders -H 'content-type: application/json' -d '{{\"item\":\"book\"}}'\n\
         \x20 curl -i {gateway}/demo/orders/42    # 401 unauthenticated: no token\n\
         \x20 curl -i {auth} -X DELETE {gateway}/demo/orders/42    # 403 insufficient_scope\n\
         \x20 curl -i {auth} {gateway}/demo/nowhere    # 404 route_not_found\n\
         \x20 curl -i {auth} -X PUT {gateway}/demo/hello    # 405 method_not_allowed\n\
         \x20 {quota} usage --policy demo --client demo-app --profile demo-sandbox\n\
         \x20 curl -s {admin}/readyz\n\
         Agents use the same token through MCP at {gateway}/mcp; the demo's operations are its tools:\n\
         \x20 curl -s {auth} -H 'content-type: application/json' -H 'accept: application/json, text/event-stream' -H 'mcp-protocol-version: 2026-07-28' -H 'mcp-method: tools/call' -H 'mcp-name: get-order' {gateway}/mcp -d '{{\"jsonrpc\":\"2.0\",\"id\":1,\"method\":\"tools/call\",\"params\":{{\"name\":\"get-order\",\"arguments\":{{\"id\":\"42\"}},\"_meta\":{{\"io.modelcontextprotocol/protocolVersion\":\"2026-07-28\",\"io.modelcontextprotocol/clientCapabilities\":{{}}}}}}}}'\n\
         MCP client configuration (Claude, Cursor, VS Code and other clients that take an HTTP server with headers):\n\
         \x20 {{\"mcpServers\": {{\"portcullis-demo\": {{\"type\": \"http\", \"url\": \"{gateway}/mcp\", \"headers\": {{\"Authorization\": \"Bearer {token}\"}}}}}}}}\n"
    )
}
