//! The MCP methods: `initialize` and `ping` (sessions), `server/discover` (stateless),
//! `tools/list` and `tools/call` (both), and the catalogue mode's discovery tools.

use std::net::IpAddr;

use bytes::Bytes;
use http::header::{CACHE_CONTROL, CONTENT_TYPE, HeaderValue};
use http::{Request, Response, StatusCode};
use serde_json::{Map, Value, json};

use super::jsonrpc::{self, Incoming, RpcError};
use super::tools::{DISCOVERY_TOOLS, Tool};
use super::{Era, LEGACY_VERSIONS, MCP_SESSION_ID, MODERN_VERSIONS};
use crate::auth::Caller;
use crate::body::{Body, full, json_response};
use crate::error::{ErrorCode, GatewayError};
use crate::forward::Peer;
use crate::model::McpMode;
use crate::pipeline::{Call, Gateway};
use crate::snapshot::Snapshot;

/// Tools per `tools/list` page.
const PAGE_SIZE: usize = 100;
/// Results per page of `list_endpoints` and `search_endpoints`.
const CATALOGUE_PAGE: usize = 50;

/// One authenticated MCP request.
pub(super) struct Context<'a, 's> {
    pub gw: &'a Gateway,
    pub peer: Peer,
    pub source: IpAddr,
    pub request_id: &'a HeaderValue,
    pub caller: &'a Caller<'s>,
    pub snapshot: &'s Snapshot,
    pub era: Era,
    pub headers: &'a http::HeaderMap,
}

/// A tool the caller may call: its operation's place in the snapshot.
#[derive(Clone, Copy)]
struct Offered<'s> {
    collection: usize,
    operation: usize,
    tool: &'s Tool,
}

impl<'s> Context<'_, 's> {
    /// Answers one message.
    pub(super) async fn answer(
        &self,
        message: Incoming,
        draft: &mut crate::audit::Draft,
    ) -> Response<Body> {
        let (id, method, params) = match message {
            Incoming::Request { id, method, params } => (id, method, params),
            Incoming::Notification { method, .. } => {
                draft.record.what.mcp_method = Some(method);
                return accepted();
            }
            // This server sends no requests; a response to one is acknowledged and dropped.
            Incoming::Response => return accepted(),
        };
        draft.record.what.mcp_method = Some(method.clone());
        draft.record.what.rpc_id = Some(id.to_string());
        let outcome = match Method::of(&method, &self.era) {
            Some(Method::Initialize) => return self.initialize(&id),
            Some(Method::Ping) => Ok(json!({})),
            Some(Method::Discover) => Ok(discover(INSTRUCTIONS)),
            Some(Method::ListTools) => self.list_tools(&params),
            Some(Method::CallTool) => self.call_tool(&params, draft).await,
            None => {
                draft.refusal = Some(ErrorCode::BadRequest);
                return not_found(&method, &self.era, &id);
            }
        };
        if outcome.is_err() {
            // Recorded as the refusal REST would give: an unknown tool keeps its own reason;
            // malformed parameters are a bad request.
            let reason = *draft.refusal.get_or_insert(ErrorCode::BadRequest);
            draft.status.get_or_insert(reason.status().as_u16());
        }
        reply(&id, &self.era, outcome)
    }

    /// Opens a session: the negotiated version and a signed id naming the caller's profile.
    fn initialize(&self, id: &Value) -> Response<Body> {
        let principal = (
            self.caller.client.id.as_str(),
            self.caller.profile.id.as_str(),
        );
        initialize(
            &self.gw.mcp.sessions,
            &self.era,
            principal,
            INSTRUCTIONS,
            id,
        )
    }

    /// What the caller may call: tools of the collections granted to its profile in its
    /// environment whose operations it may use (the same check `tools/call` makes), and the
    /// catalogue-mode operations behind the discovery tools.
    fn offered(&self) -> (Vec<Offered<'s>>, Vec<Offered<'s>>) {
        let mut tools = Vec::new();
        let mut catalogue = Vec::new();
        for (ci, collection) in self.snapshot.collections.iter().enumerate() {
            if !self.caller.profile.collections.contains(&collection.id) {
                continue;
            }
            let mode = collection
                .mcp_mode
                .unwrap_or(self.gw.mcp.settings.default_mode);
            for (oi, operation) in collection.operations.iter().enumerate() {
                let Some(tool) = &operation.tool else {
                    continue;
                };
                if crate::authz::grant(self.caller, collection, operation).is_err() {
                    continue;
                }
                let offered = Offered {
                    collection: ci,
                    operation: oi,
                    tool,
                };
                match mode {
                    McpMode::Tools => tools.push(offered),
                    McpMode::Catalogue => catalogue.push(offered),
                }
            }
        }
        tools.sort_by(|a, b| a.tool.name.cmp(&b.tool.name));
        catalogue.sort_by(|a, b| a.tool.name.cmp(&b.tool.name));
        (tools, catalogue)
    }

    fn list_tools(&self, params: &Map<String, Value>) -> Result<Value, RpcError> {
        let (tools, catalogue) = self.offered();
        // Names first; only the page's definitions are built (schemas can be large).
        let discovery = if catalogue.is_empty() {
            Vec::new()
        } else {
            discovery_tools()
        };
        let mut listed: Vec<(&str, Listed<'_>)> = tools
            .iter()
            .map(|t| (t.tool.name.as_str(), Listed::Operation(t.tool)))
            .chain(
                discovery
                    .iter()
                    .map(|(n, d)| (n.as_str(), Listed::Discovery(d))),
            )
            .collect();
        listed.sort_by(|a, b| a.0.cmp(b.0));
        // The cursor is the last name of the previous page: stable while tools come and go.
        let start = match params.get("cursor") {
            None | Some(Value::Null) => 0,
            Some(Value::String(cursor)) => {
                let after = decode_cursor(cursor)
                    .ok_or_else(|| RpcError::new(jsonrpc::INVALID_PARAMS, "Invalid cursor"))?;
                listed.partition_point(|(name, _)| *name <= after.as_str())
            }
            Some(_) => return Err(RpcError::new(jsonrpc::INVALID_PARAMS, "Invalid cursor")),
        };
        let page = &listed[start.min(listed.len())..(start + PAGE_SIZE).min(listed.len())];
        let definitions: Vec<Value> = page
            .iter()
            .map(|(_, item)| match item {
                Listed::Operation(tool) => tool.definition(),
                Listed::Discovery(definition) => (*definition).clone(),
            })
            .collect();
        let mut result = json!({ "tools": definitions });
        if start + page.len() < listed.len()
            && let Some((last, _)) = page.last()
        {
            result["nextCursor"] = encode_cursor(last).into();
        }
        if matches!(self.era, Era::Modern(_)) {
            // Short: grants change, and an agent should see it soon.
            result["ttlMs"] = 5_000.into();
            result["cacheScope"] = "private".into();
        }
        Ok(result)
    }

    async fn call_tool(
        &self,
        params: &Map<String, Value>,
        draft: &mut crate::audit::Draft,
    ) -> Result<Value, RpcError> {
        let Some(name) = params.get("name").and_then(Value::as_str) else {
            draft.refusal = Some(ErrorCode::BadRequest);
            return Err(RpcError::new(
                jsonrpc::INVALID_PARAMS,
                "params.name must be a string",
            ));
        };
        let arguments = match params.get("arguments") {
            None | Some(Value::Null) => Value::Object(Map::new()),
            Some(a @ Value::Object(_)) => a.clone(),
            Some(_) => {
                draft.refusal = Some(ErrorCode::BadRequest);
                return Err(RpcError::new(
                    jsonrpc::INVALID_PARAMS,
                    "params.arguments must be an object",
                ));
            }
        };
        draft.record.what.tool = Some(name.chars().take(128).collect());
        let (tools, catalogue) = self.offered();
        if DISCOVERY_TOOLS.contains(&name) && !catalogue.is_empty() {
            return self.discovery(name, &arguments, &catalogue, draft).await;
        }
        let found = tools.iter().find(|t| t.tool.name == name).copied();
        match found {
            Some(offered) => Ok(self.execute(offered, &arguments, draft).await),
            None => Err(self.unknown_tool(name, draft)),
        }
    }

    /// One answer for a tool that does not exist and one the caller may not use, so that
    /// existence is not revealed; the record keeps the real reason.
    fn unknown_tool(&self, name: &str, draft: &mut crate::audit::Draft) -> RpcError {
        let reason = match self.snapshot.tools.get(name) {
            Some(&(ci, oi)) => {
                let collection = &self.snapshot.collections[ci];
                let operation = &collection.operations[oi];
                crate::pipeline::describe(
                    draft,
                    collection,
                    operation,
                    &operation_method(operation),
                );
                match crate::authz::grant(self.caller, collection, operation) {
                    Err(e) => e.code,
                    // Granted, but offered through the catalogue's execute_endpoint.
                    Ok(()) => ErrorCode::RouteNotFound,
                }
            }
            None => ErrorCode::RouteNotFound,
        };
        draft.refusal = Some(reason);
        draft.status = Some(reason.status().as_u16());
        RpcError::new(jsonrpc::INVALID_PARAMS, format!("Unknown tool: {name}"))
    }

    /// Calls the operation behind a tool through the pipeline, and turns its answer into a
    /// tool result.
    async fn execute(
        &self,
        offered: Offered<'s>,
        arguments: &Value,
        draft: &mut crate::audit::Draft,
    ) -> Value {
        let collection = &self.snapshot.collections[offered.collection];
        let operation = &collection.operations[offered.operation];
        let tool = offered.tool;
        crate::pipeline::describe(draft, collection, operation, &tool.method);
        let built = match tool.request(arguments) {
            Ok(built) => built,
            Err(e) => {
                // The agent can correct its arguments: a tool error, not a protocol error.
                draft.refusal = Some(ErrorCode::BadRequest);
                draft.status = Some(ErrorCode::BadRequest.status().as_u16());
                return tool_error(json!({
                    "status": 400,
                    "code": ErrorCode::BadRequest.as_str(),
                    "message": e.0,
                }));
            }
        };
        let param = |name: &str| built.path_params.get(name).map(String::as_str);
        let target_path = operation.target.expand(param, &built.rest);
        let gateway_path = format!(
            "{}{}",
            collection.base_path.trim_end_matches('/'),
            operation.template.expand(param, &built.rest)
        );
        // The record names the operation's own request, as REST would have received it.
        draft.record.what.method = tool.method.to_string();
        draft.record.what.path = gateway_path.clone();
        let uri = match &built.query {
            Some(q) => format!("{gateway_path}?{q}"),
            None => gateway_path,
        };
        let mut request = Request::builder().method(tool.method.clone()).uri(uri);
        if let Some(headers) = request.headers_mut() {
            headers.insert(
                http::header::ACCEPT,
                HeaderValue::from_static("application/json"),
            );
            if let Some(agent) = self.headers.get(http::header::USER_AGENT) {
                headers.insert(http::header::USER_AGENT, agent.clone());
            }
            // Header arguments replace what the gateway would send by default.
            for (name, value) in &built.headers {
                headers.insert(name.clone(), value.clone());
            }
        }
        let body = match built.body {
            Some(body) => {
                request = request
                    .header(CONTENT_TYPE, "application/json")
                    .header(http::header::CONTENT_LENGTH, body.len());
                full(body)
            }
            None => full(Bytes::new()),
        };
        let request = match request.body(body) {
            Ok(request) => request,
            Err(e) => {
                draft.refusal = Some(ErrorCode::BadRequest);
                draft.status = Some(400);
                return tool_error(
                    json!({"status": 400, "code": "bad_request", "message": format!("the arguments do not make a valid request: {e}")}),
                );
            }
        };
        let call = Call {
            peer: self.peer.clone(),
            source: self.source,
            request_id: self.request_id,
            caller: self.caller,
            collection,
            operation,
            target_path,
        };
        let (parts, body) = request.into_parts();
        match call.run(self.gw, parts, body, draft).await {
            Ok(response) => {
                draft.status = Some(response.status().as_u16());
                self.tool_result(tool, response, draft).await
            }
            Err(e) => {
                draft.refusal = Some(e.code);
                draft.status = Some(e.code.status().as_u16());
                refusal_result(&e)
            }
        }
    }

    /// The upstream's answer as a tool result: JSON as text plus structured content, a
    /// failure status as `isError`.
    async fn tool_result(
        &self,
        tool: &Tool,
        response: Response<Body>,
        draft: &mut crate::audit::Draft,
    ) -> Value {
        let status = response.status();
        let limit = self.gw.settings.max_body_bytes;
        let content_type = response
            .headers()
            .get(CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_owned();
        let body = match crate::body::collect_limited(response.into_body(), limit).await {
            Ok(bytes) => bytes,
            Err(e) => {
                let code = ErrorCode::UpstreamError;
                let message = match e {
                    crate::body::CollectError::TooLarge { .. } => {
                        format!("the upstream's response exceeds {limit} bytes")
                    }
                    crate::body::CollectError::Read(_) => {
                        "the upstream broke off its response".to_owned()
                    }
                };
                draft.refusal = Some(code);
                return tool_error(
                    json!({"status": code.status().as_u16(), "code": code.as_str(), "message": message}),
                );
            }
        };
        // A captured body is the operation's, not the JSON-RPC envelope around it.
        draft.capture_response(body.clone());
        let parsed: Option<Value> = serde_json::from_slice(&body).ok();
        if !status.is_success() {
            let detail = parsed
                .unwrap_or_else(|| Value::String(String::from_utf8_lossy(&body).into_owned()));
            return tool_error(json!({
                "status": status.as_u16(),
                "message": format!("the API answered {status}"),
                "body": detail,
            }));
        }
        let media = content_type
            .split(';')
            .next()
            .unwrap_or("")
            .trim()
            .to_ascii_lowercase();
        match parsed {
            _ if media.starts_with("image/") || media.starts_with("audio/") => {
                use base64::Engine as _;
                let kind = if media.starts_with("image/") {
                    "image"
                } else {
                    "audio"
                };
                json!({
                    "content": [{
                        "type": kind,
                        "data": base64::engine::general_purpose::STANDARD.encode(&body),
                        "mimeType": media,
                    }],
                    "isError": false,
                })
            }
            Some(value) => {
                let structured = tool.structured(value);
                json!({
                    "content": [{ "type": "text", "text": String::from_utf8_lossy(&body) }],
                    "structuredContent": structured,
                    "isError": false,
                })
            }
            None => match std::str::from_utf8(&body) {
                Ok(text)
                    if media.is_empty()
                        || media.starts_with("text/")
                        || media.ends_with("json")
                        || media.ends_with("xml") =>
                {
                    json!({
                        "content": [{ "type": "text", "text": text }],
                        "isError": false,
                    })
                }
                _ => {
                    use base64::Engine as _;
                    json!({
                        "content": [{
                            "type": "resource",
                            "resource": {
                                "uri": format!("portcullis://response/{}", self.request_id.to_str().unwrap_or_default()),
                                "mimeType": if content_type.is_empty() { "application/octet-stream" } else { content_type.as_str() },
                                "blob": base64::engine::general_purpose::STANDARD.encode(&body),
                            }
                        }],
                        "isError": false,
                    })
                }
            },
        }
    }

    /// The catalogue mode's discovery tools, over the catalogue-mode operations the caller
    /// may use.
    async fn discovery(
        &self,
        name: &str,
        arguments: &Value,
        catalogue: &[Offered<'s>],
        draft: &mut crate::audit::Draft,
    ) -> Result<Value, RpcError> {
        let text = |field: &str| arguments.get(field).and_then(Value::as_str);
        let summary = |o: &Offered<'_>| {
            let collection = &self.snapshot.collections[o.collection];
            let operation = &collection.operations[o.operation];
            json!({
                "name": o.tool.name,
                "collection": collection.id,
                "method": o.tool.method.as_str(),
                "path": format!("{}{}", collection.base_path.trim_end_matches('/'), operation.template),
                "title": o.tool.title,
                "description": o.tool.description,
            })
        };
        let page = |items: Vec<&Offered<'_>>| -> Result<Value, RpcError> {
            let start = match arguments.get("cursor") {
                None | Some(Value::Null) => 0,
                Some(Value::String(c)) => {
                    let after = decode_cursor(c)
                        .ok_or_else(|| RpcError::new(jsonrpc::INVALID_PARAMS, "Invalid cursor"))?;
                    items.partition_point(|o| o.tool.name.as_str() <= after.as_str())
                }
                Some(_) => return Err(RpcError::new(jsonrpc::INVALID_PARAMS, "Invalid cursor")),
            };
            let chunk: Vec<&&Offered<'_>> = items.iter().skip(start).take(CATALOGUE_PAGE).collect();
            let mut out =
                json!({ "endpoints": chunk.iter().map(|o| summary(o)).collect::<Vec<_>>() });
            if start + chunk.len() < items.len()
                && let Some(last) = chunk.last()
            {
                out["nextCursor"] = encode_cursor(&last.tool.name).into();
            }
            Ok(out)
        };
        let structured = match name {
            "list_collections" => {
                let mut seen: Vec<usize> = catalogue.iter().map(|o| o.collection).collect();
                seen.dedup();
                seen.sort_unstable();
                seen.dedup();
                json!({ "collections": seen.iter().map(|&ci| {
                    let c = &self.snapshot.collections[ci];
                    json!({
                        "id": c.id,
                        "description": c.description,
                        "version": c.version,
                        "endpoints": catalogue.iter().filter(|o| o.collection == ci).count(),
                    })
                }).collect::<Vec<_>>() })
            }
            "list_endpoints" => {
                let wanted = text("collection");
                page(
                    catalogue
                        .iter()
                        .filter(|o| {
                            wanted.is_none_or(|w| {
                                self.snapshot.collections[o.collection].id.as_str() == w
                            })
                        })
                        .collect(),
                )?
            }
            "search_endpoints" => {
                let Some(query) = text("query") else {
                    return Ok(argument_error("'query' is required"));
                };
                let words: Vec<String> = query.split_whitespace().map(str::to_lowercase).collect();
                let matches = |o: &&Offered<'_>| {
                    let s = summary(o).to_string().to_lowercase();
                    words.iter().all(|w| s.contains(w))
                };
                page(catalogue.iter().filter(matches).collect())?
            }
            "endpoint_details" => {
                let Some(wanted) = text("name") else {
                    return Ok(argument_error("'name' is required"));
                };
                match catalogue.iter().find(|o| o.tool.name == wanted) {
                    Some(o) => {
                        let mut details = summary(o);
                        details["inputSchema"] = o.tool.input_schema.clone();
                        if let Some(output) = &o.tool.output_schema {
                            details["outputSchema"] = output.clone();
                        }
                        details["annotations"] = Value::Object(o.tool.annotations.clone());
                        details
                    }
                    None => return Err(self.unknown_tool(wanted, draft)),
                }
            }
            "execute_endpoint" => {
                let Some(wanted) = text("name") else {
                    return Ok(argument_error("'name' is required"));
                };
                let inner = arguments.get("arguments").cloned().unwrap_or(json!({}));
                draft.record.what.tool = Some(wanted.chars().take(128).collect());
                return match catalogue.iter().find(|o| o.tool.name == wanted) {
                    Some(&o) => Ok(self.execute(o, &inner, draft).await),
                    None => Err(self.unknown_tool(wanted, draft)),
                };
            }
            _ => unreachable!("only discovery tools are dispatched here"),
        };
        Ok(json!({
            "content": [{ "type": "text", "text": structured.to_string() }],
            "structuredContent": structured,
            "isError": false,
        }))
    }
}

/// One entry of `tools/list`.
enum Listed<'a> {
    Operation(&'a Tool),
    Discovery(&'a Value),
}

/// The method a tool of `operation` calls with.
fn operation_method(operation: &crate::snapshot::CompiledOperation) -> http::Method {
    operation
        .tool
        .as_ref()
        .map(|t| t.method.clone())
        .unwrap_or(http::Method::GET)
}

/// The gateway's refusal as a tool error an agent can act on: the code, the status and, for
/// limits, the seconds to wait.
fn refusal_result(e: &GatewayError) -> Value {
    let mut detail = json!({
        "status": e.code.status().as_u16(),
        "code": e.code.as_str(),
        "message": e.message,
    });
    let retry_after = e
        .headers
        .iter()
        .find(|(name, _)| name == http::header::RETRY_AFTER)
        .and_then(|(_, v)| v.to_str().ok()?.parse::<u64>().ok());
    if let Some(seconds) = retry_after {
        detail["retry_after"] = seconds.into();
    }
    tool_error(detail)
}

fn tool_error(detail: Value) -> Value {
    json!({
        "content": [{ "type": "text", "text": detail.to_string() }],
        "isError": true,
    })
}

fn argument_error(message: &str) -> Value {
    tool_error(json!({"status": 400, "code": "bad_request", "message": message}))
}

/// The discovery tools' definitions.
fn discovery_tools() -> Vec<(String, Value)> {
    let cursor = json!({"type": "string", "description": "nextCursor from the previous page"});
    let read_only = json!({"readOnlyHint": true, "idempotentHint": true, "openWorldHint": false});
    [
        ("list_collections", "List the APIs (collections) whose endpoints you can call through execute_endpoint.", json!({"type": "object", "additionalProperties": false}), read_only.clone()),
        ("list_endpoints", "List the endpoints you can call, optionally of one collection, a page at a time.", json!({"type": "object", "properties": {"collection": {"type": "string"}, "cursor": cursor}, "additionalProperties": false}), read_only.clone()),
        ("search_endpoints", "Find endpoints whose name, path or description contain every word of the query.", json!({"type": "object", "properties": {"query": {"type": "string"}, "cursor": cursor}, "required": ["query"], "additionalProperties": false}), read_only.clone()),
        ("endpoint_details", "Describe one endpoint: its method, path, input schema (the arguments execute_endpoint takes) and output schema.", json!({"type": "object", "properties": {"name": {"type": "string"}}, "required": ["name"], "additionalProperties": false}), read_only),
        ("execute_endpoint", "Call an endpoint by name with arguments matching its input schema (see endpoint_details).", json!({"type": "object", "properties": {"name": {"type": "string"}, "arguments": {"type": "object"}}, "required": ["name"], "additionalProperties": false}), json!({"readOnlyHint": false, "destructiveHint": true, "idempotentHint": false})),
    ]
    .into_iter()
    .map(|(name, description, input, annotations)| {
        (
            name.to_owned(),
            json!({"name": name, "description": description, "inputSchema": input, "annotations": annotations}),
        )
    })
    .collect()
}

const INSTRUCTIONS: &str = "Each tool calls one API operation your credential may use, under its limits; a tool result with isError carries the API's status or the gateway's code (rate_limited and quota_exhausted include retry_after seconds).";

/// The methods both MCP servers (the Gateway's and the Management's) answer.
pub(crate) enum Method {
    /// `initialize`, in the session era.
    Initialize,
    /// `ping`, in the session era.
    Ping,
    /// `server/discover`, in the stateless era.
    Discover,
    /// `tools/list`.
    ListTools,
    /// `tools/call`.
    CallTool,
}

impl Method {
    /// The method `name` is in `era`, if it is one.
    pub(crate) fn of(name: &str, era: &Era) -> Option<Self> {
        match (name, matches!(era, Era::Modern(_))) {
            ("initialize", false) => Some(Self::Initialize),
            ("ping", false) => Some(Self::Ping),
            ("server/discover", true) => Some(Self::Discover),
            ("tools/list", _) => Some(Self::ListTools),
            ("tools/call", _) => Some(Self::CallTool),
            _ => None,
        }
    }
}

/// The answer to a method this server does not have (the stateless era's status is 404).
pub(crate) fn not_found(name: &str, era: &Era, id: &Value) -> Response<Body> {
    let error = RpcError::new(
        jsonrpc::METHOD_NOT_FOUND,
        format!("Method not found: {name}"),
    );
    let status = match era {
        Era::Modern(_) => StatusCode::NOT_FOUND,
        Era::Legacy(_) => StatusCode::OK,
    };
    rpc_response(status, &jsonrpc::error(id, &error))
}

/// The answer to a method that ran: its result in the era's envelope, or its error.
pub(crate) fn reply(id: &Value, era: &Era, outcome: Result<Value, RpcError>) -> Response<Body> {
    match outcome {
        Ok(result) => rpc_response(StatusCode::OK, &jsonrpc::result(id, envelope(era, result))),
        Err(error) => rpc_response(StatusCode::OK, &jsonrpc::error(id, &error)),
    }
}

/// The answer to `initialize`: the negotiated version, and a session id signed with
/// `sessions` that only `principal` may use.
pub(crate) fn initialize(
    sessions: &super::session::SessionKeys,
    era: &Era,
    principal: (&str, &str),
    instructions: &str,
    id: &Value,
) -> Response<Body> {
    let Era::Legacy(version) = era else {
        unreachable!("initialize is answered only in the session era")
    };
    let result = json!({
        "protocolVersion": version,
        "capabilities": { "tools": { "listChanged": false } },
        "serverInfo": server_info(),
        "instructions": instructions,
    });
    let mut response = rpc_response(StatusCode::OK, &jsonrpc::result(id, result));
    let now = time::OffsetDateTime::now_utc().unix_timestamp();
    let session = sessions.issue(principal.0, principal.1, version, now);
    response.headers_mut().insert(
        MCP_SESSION_ID,
        HeaderValue::from_str(&session).expect("a session id is visible ASCII"),
    );
    response
}

/// Fields every stateless result carries.
pub(crate) fn envelope(era: &Era, mut result: Value) -> Value {
    if let (Era::Modern(_), Value::Object(o)) = (era, &mut result) {
        o.entry("resultType").or_insert_with(|| "complete".into());
        let meta = o.entry("_meta").or_insert_with(|| json!({}));
        if let Value::Object(meta) = meta {
            meta.insert("io.modelcontextprotocol/serverInfo".into(), server_info());
        }
    }
    result
}

/// The answer of `server/discover`.
pub(crate) fn discover(instructions: &str) -> Value {
    let mut supported: Vec<&str> = MODERN_VERSIONS.to_vec();
    supported.extend(LEGACY_VERSIONS.iter().rev());
    json!({
        "supportedVersions": supported,
        "capabilities": { "tools": {} },
        "instructions": instructions,
        "ttlMs": 60_000,
        // What a caller sees depends on its credential.
        "cacheScope": "private",
    })
}

pub(crate) fn server_info() -> Value {
    json!({ "name": "portcullis", "title": "Portcullis Gateway MCP", "version": env!("CARGO_PKG_VERSION") })
}

fn encode_cursor(name: &str) -> String {
    use base64::Engine as _;
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(name)
}

fn decode_cursor(cursor: &str) -> Option<String> {
    use base64::Engine as _;
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(cursor)
        .ok()?;
    String::from_utf8(bytes).ok()
}

pub(crate) fn accepted() -> Response<Body> {
    let mut response = Response::new(full(Bytes::new()));
    *response.status_mut() = StatusCode::ACCEPTED;
    response
}

pub(crate) fn rpc_response(status: StatusCode, message: &Value) -> Response<Body> {
    let mut response = json_response(status, message);
    // Answers depend on the caller's credential.
    response
        .headers_mut()
        .insert(CACHE_CONTROL, HeaderValue::from_static("private, no-store"));
    response
}
