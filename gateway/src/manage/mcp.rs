//! The Management MCP, `/api/v1/mcp` on the admin listener: one tool per management endpoint
//! ([`super::endpoints`]), run by the same [`super::execute`] as the REST endpoint, under the
//! caller's operator identity and roles. `tools/list` shows what the caller's roles allow;
//! mutating tools take `dry_run`. The transport (both protocol eras, sessions, headers) is the
//! Gateway MCP's ([`crate::mcp`]).

use std::sync::Arc;

use http::header::{ALLOW, HeaderValue, WWW_AUTHENTICATE};
use http::{Method, Response, StatusCode};
use schemars::SchemaGenerator;
use serde_json::{Map, Value, json};

use super::endpoints::{self, Effect, Endpoint};
use super::{Api, Call, Context, MAX_BODY, Operator, authenticate, permitted, refused_change};
use crate::body::{Body, json_response};
use crate::error::{ErrorCode, GatewayError};
use crate::mcp::Refused;
use crate::mcp::dispatch::{Method as McpMethod, accepted, discover, not_found, reply};
use crate::mcp::jsonrpc::{self, Incoming, RpcError};

/// The Management MCP's path.
pub(super) const PATH: &str = "/api/v1/mcp";
/// Its protected resource metadata (RFC 9728).
pub const METADATA_PATH: &str = "/.well-known/oauth-protected-resource/api/v1/mcp";

const INSTRUCTIONS: &str = "Each tool is one Portcullis management API endpoint, run under your operator identity and roles; every change and every refused call is recorded. Tools that change something take dry_run: true to show the change without making it.";

/// A session is bound to this principal: no client id can take this form.
fn principal(operator: &Operator) -> (&str, &str) {
    ("@operator", operator.id.as_str())
}

/// Serves one request to `/api/v1/mcp`.
pub(super) async fn handle(
    api: Arc<Api>,
    source: std::net::IpAddr,
    request_id: &str,
    parts: http::request::Parts,
    body: Body,
) -> Response<Body> {
    let context = Context {
        api: &api,
        request_id,
        source,
        headers: &parts.headers,
        channel: "mcp",
    };
    match serve(&api, &context, &parts, body).await {
        Ok(response) => response,
        Err(e) => e.into_response(request_id),
    }
}

async fn serve(
    api: &Api,
    context: &Context<'_>,
    parts: &http::request::Parts,
    body: Body,
) -> Result<Response<Body>, GatewayError> {
    if let Err(e) = check_origin(&api.allowed_origins, &parts.headers) {
        context.refused(None, connect_change(), e.code);
        return Err(e);
    }
    if parts.method != Method::POST {
        return Err(GatewayError::new(
            ErrorCode::MethodNotAllowed,
            format!("{} is not allowed here; allowed: POST", parts.method),
        )
        .with_header(ALLOW, HeaderValue::from_static("POST")));
    }
    let operator = match authenticate(api, &parts.headers).await {
        Ok(operator) => operator,
        Err(e) => {
            context.refused(None, connect_change(), e.code);
            return Err(challenge(&parts.headers, e));
        }
    };
    crate::mcp::check_media_types(&parts.headers)?;
    let mut request = http::Request::new(body);
    *request.headers_mut() = parts.headers.clone();
    let bytes = crate::mcp::read_message(request, MAX_BODY).await?;
    let message = match jsonrpc::parse(&bytes) {
        Ok(message) => message,
        Err((error, id)) => {
            return Ok(json_response(
                StatusCode::BAD_REQUEST,
                &jsonrpc::error(&id, &error),
            ));
        }
    };
    let era = match crate::mcp::era(
        &api.sessions,
        api.session_ttl,
        &parts.headers,
        &message,
        principal(&operator),
    ) {
        Ok(era) => era,
        Err(Refused::Http(e)) => return Err(e),
        Err(Refused::Rpc(status, id, error)) => {
            return Ok(json_response(status, &jsonrpc::error(&id, &error)));
        }
    };
    let (id, method, params) = match message {
        Incoming::Request { id, method, params } => (id, method, params),
        Incoming::Notification { .. } | Incoming::Response => return Ok(accepted()),
    };
    let outcome = match McpMethod::of(&method, &era) {
        Some(McpMethod::Initialize) => {
            return Ok(crate::mcp::dispatch::initialize(
                &api.sessions,
                &era,
                principal(&operator),
                INSTRUCTIONS,
                &id,
            ));
        }
        Some(McpMethod::Ping) => Ok(json!({})),
        Some(McpMethod::Discover) => Ok(discover(INSTRUCTIONS)),
        Some(McpMethod::ListTools) => Ok(list_tools(&operator)),
        Some(McpMethod::CallTool) => call_tool(api, context, &operator, &params).await,
        None => return Ok(not_found(&method, &era, &id)),
    };
    Ok(reply(&id, &era, outcome))
}

/// The tools the operator's roles allow, by name.
fn list_tools(operator: &Operator) -> Value {
    let mut tools: Vec<Value> = endpoints::all()
        .iter()
        .filter(|e| permitted(operator, e).is_ok())
        .map(definition)
        .collect();
    tools.sort_by(|a, b| a["name"].as_str().cmp(&b["name"].as_str()));
    json!({ "tools": tools, "ttlMs": 5_000, "cacheScope": "private" })
}

/// The MCP tool of an endpoint: its path and query parameters, its body as `body`,
/// `if_match` and `dry_run` where they apply.
pub(super) fn definition(endpoint: &Endpoint) -> Value {
    let mut generator = SchemaGenerator::new(schemars::generate::SchemaSettings::draft2020_12());
    let mut properties = Map::new();
    let mut required = Vec::new();
    for name in endpoint.path_params() {
        properties.insert(name.into(), json!({"type": "string", "minLength": 1}));
        required.push(Value::from(name));
    }
    for q in &endpoint.query {
        let mut schema = (q.schema)();
        schema["description"] = q.description.into();
        properties.insert(q.name.into(), schema);
    }
    if let Some(body) = endpoint.body {
        let mut schema = body(&mut generator).to_value();
        schema["description"] = "The request body.".into();
        properties.insert("body".into(), schema);
        if !endpoint.body_optional {
            required.push("body".into());
        }
    }
    if endpoint.conditional {
        properties.insert(
            "if_match".into(),
            json!({"type": "string", "description": "Only if the object's ETag (from a read) is still this."}),
        );
    }
    if endpoint.mutates() {
        properties.insert(
            "dry_run".into(),
            json!({"type": "boolean", "description": "true: answer the change this call would make, without making it."}),
        );
    }
    let mut input = json!({
        "type": "object",
        "properties": properties,
        "required": required,
        "additionalProperties": false,
    });
    let defs = generator.take_definitions(true);
    if !defs.is_empty() {
        input["$defs"] = Value::Object(defs);
    }
    let idempotent = matches!(endpoint.method, Method::GET | Method::PUT | Method::DELETE);
    json!({
        "name": endpoint.name,
        "title": endpoint.summary,
        "description": format!("{} ({} {}).", endpoint.summary, endpoint.method, endpoint.path),
        "inputSchema": input,
        "annotations": {
            "readOnlyHint": endpoint.effect == Effect::Read,
            "destructiveHint": endpoint.effect == Effect::Destructive,
            "idempotentHint": idempotent,
            "openWorldHint": false,
        },
    })
}

/// `tools/call`: the endpoint's handler, as REST runs it, under the same permission check.
async fn call_tool(
    api: &Api,
    context: &Context<'_>,
    operator: &Operator,
    params: &Map<String, Value>,
) -> Result<Value, RpcError> {
    let name = params.get("name").and_then(Value::as_str).unwrap_or("");
    let unknown = || RpcError::new(jsonrpc::INVALID_PARAMS, format!("Unknown tool: {name}"));
    let endpoint = endpoints::by_name(name).ok_or_else(unknown)?;
    let empty = Map::new();
    let arguments = match params.get("arguments") {
        None | Some(Value::Null) => &empty,
        Some(Value::Object(arguments)) => arguments,
        Some(_) => {
            return Err(RpcError::new(
                jsonrpc::INVALID_PARAMS,
                "arguments must be an object",
            ));
        }
    };
    // Refused like the REST endpoint, and recorded the same way, whatever the arguments.
    if let Err(e) = permitted(operator, endpoint) {
        let named: Vec<String> = endpoint
            .path_params()
            .filter_map(|p| arguments.get(p).and_then(Value::as_str).map(str::to_owned))
            .collect();
        context.refused(Some(operator), refused_change(endpoint, &named), e.code);
        return Ok(refusal(&e, context.request_id));
    }
    let call = match call_of(endpoint, arguments) {
        Ok(call) => call,
        Err(message) => {
            return Ok(tool_error(
                json!({"code": "invalid_arguments", "message": message}),
            ));
        }
    };
    if endpoint.mutates() && !api.audit.accepting() {
        let e = GatewayError::new(
            ErrorCode::AuditUnavailable,
            "changes cannot be recorded right now; try again later",
        );
        return Ok(refusal(&e, context.request_id));
    }
    let params = call.params.clone();
    let (response, change) = match super::execute(api, operator, endpoint, call).await {
        Ok(answer) => answer,
        Err(e) => {
            if super::refusal(e.code) {
                context.refused(Some(operator), refused_change(endpoint, &params), e.code);
            }
            return Ok(refusal(&e, context.request_id));
        }
    };
    let status = response.status();
    if let Some(change) = change {
        context.allowed(operator, change, status.as_u16());
    }
    let bytes = crate::body::collect_limited(response.into_body(), usize::MAX)
        .await
        .unwrap_or_default();
    let text = String::from_utf8_lossy(&bytes).into_owned();
    let mut result = json!({
        "content": [{"type": "text", "text": if text.is_empty() { format!("{status}") } else { text }}],
        "isError": false,
    });
    if let Ok(Value::Object(structured)) = serde_json::from_slice::<Value>(&bytes) {
        result["structuredContent"] = Value::Object(structured);
    }
    Ok(result)
}

/// The endpoint's call from tool arguments.
fn call_of(endpoint: &Endpoint, arguments: &Map<String, Value>) -> Result<Call, String> {
    let mut call = Call {
        params: Vec::new(),
        query: Vec::new(),
        if_match: None,
        body: bytes::Bytes::new(),
        dry_run: false,
    };
    let path_params: Vec<&str> = endpoint.path_params().collect();
    for name in &path_params {
        match arguments.get(*name) {
            Some(Value::String(value)) if !value.is_empty() => call.params.push(value.clone()),
            Some(_) | None => return Err(format!("{name}: a non-empty string is required")),
        }
    }
    for (key, value) in arguments {
        match key.as_str() {
            key if path_params.contains(&key) => {}
            "body" if endpoint.body.is_some() => {
                call.body = serde_json::to_vec(value).unwrap_or_default().into();
            }
            "if_match" if endpoint.conditional => match value {
                Value::String(tag) => call.if_match = Some(vec![tag.clone()]),
                Value::Null
                | Value::Bool(_)
                | Value::Number(_)
                | Value::Array(_)
                | Value::Object(_) => return Err("if_match: a string is required".into()),
            },
            "dry_run" if endpoint.mutates() => match value {
                Value::Bool(dry) => call.dry_run = *dry,
                Value::Null
                | Value::Number(_)
                | Value::String(_)
                | Value::Array(_)
                | Value::Object(_) => return Err("dry_run: true or false".into()),
            },
            key if endpoint.query.iter().any(|q| q.name == key) => {
                let text = match value {
                    Value::String(s) => s.clone(),
                    Value::Number(n) => n.to_string(),
                    Value::Bool(b) => b.to_string(),
                    Value::Null | Value::Array(_) | Value::Object(_) => {
                        return Err(format!("{key}: a string, number or boolean is required"));
                    }
                };
                call.query.push((key.to_owned(), text));
            }
            other => return Err(format!("{other}: not an argument of this tool")),
        }
    }
    if endpoint.body.is_some() && !endpoint.body_optional && call.body.is_empty() {
        return Err("body: required".into());
    }
    Ok(call)
}

/// A refused or failed call, as a tool result the agent can read: the API's error body and
/// status.
fn refusal(e: &GatewayError, request_id: &str) -> Value {
    tool_error(json!({
        "code": e.code.as_str(),
        "status": e.code.status().as_u16(),
        "message": e.message,
        "request_id": request_id,
    }))
}

fn tool_error(detail: Value) -> Value {
    json!({
        "content": [{"type": "text", "text": detail.to_string()}],
        "structuredContent": {"error": detail},
        "isError": true,
    })
}

/// What an unauthenticated MCP request is recorded as.
fn connect_change() -> super::Changed {
    super::Changed {
        action: "mcp.connect".into(),
        resource: crate::audit::change::Resource {
            kind: "mcp".into(),
            id: None,
        },
        before: None,
        after: None,
    }
}

/// The origin this admin listener is reached at, from the request.
fn own_origin(headers: &http::HeaderMap) -> Option<String> {
    let host = headers.get(http::header::HOST)?.to_str().ok()?;
    Some(format!("http://{host}"))
}

/// A browser may call only from an allowed origin (`--admin-allowed-origins`; none by
/// default): DNS-rebinding protection, which the request's own `Host` cannot give.
fn check_origin(allowed: &[String], headers: &http::HeaderMap) -> Result<(), GatewayError> {
    let Some(origin) = headers.get(http::header::ORIGIN) else {
        return Ok(());
    };
    let origin = origin.to_str().unwrap_or("");
    if allowed.iter().any(|a| a.eq_ignore_ascii_case(origin)) {
        Ok(())
    } else {
        Err(GatewayError::new(
            ErrorCode::OriginNotAllowed,
            "this Origin may not call the Management MCP (see --admin-allowed-origins)",
        ))
    }
}

/// A 401 pointing MCP clients to the protected resource metadata.
fn challenge(headers: &http::HeaderMap, mut e: GatewayError) -> GatewayError {
    if let Some(origin) = own_origin(headers)
        && let Ok(value) = HeaderValue::from_str(&format!(
            r#"Bearer realm="portcullis-management", resource_metadata="{origin}{METADATA_PATH}""#
        ))
    {
        e.headers.retain(|(name, _)| name != WWW_AUTHENTICATE);
        e.headers.push((WWW_AUTHENTICATE, value));
    }
    e
}

/// RFC 9728 metadata: this resource, and the operators' identity provider when there is one.
pub(super) fn metadata(api: &Api, headers: &http::HeaderMap) -> Response<Body> {
    let origin = own_origin(headers).unwrap_or_default();
    let servers: Vec<&str> = api
        .oidc
        .as_ref()
        .map(|o| o.provider.issuer.as_str())
        .into_iter()
        .collect();
    let mut response = json_response(
        StatusCode::OK,
        &json!({
            "resource": format!("{origin}{PATH}"),
            "authorization_servers": servers,
            "bearer_methods_supported": ["header"],
            "resource_name": "Portcullis Management MCP",
        }),
    );
    response.headers_mut().insert(
        http::header::CACHE_CONTROL,
        HeaderValue::from_static("public, max-age=60"),
    );
    response
}
