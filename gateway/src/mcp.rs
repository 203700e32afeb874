//! The Gateway MCP: agents reach the operations their profile may use as MCP tools, at `/mcp`
//! on the gateway listener, with the same credentials, limits and records as REST.
//!
//! Streamable HTTP in both protocol eras on one endpoint:
//! - 2025-06-18 and 2025-11-25: `initialize` opens a session whose id is signed and
//!   self-contained ([`session`]), so any node accepts it; later requests carry it.
//! - 2026-07-28: stateless; every request names its version in `_meta` and in headers that
//!   must agree with the body (`MCP-Protocol-Version`, `Mcp-Method`, `Mcp-Name`).
//!
//! Every request authenticates exactly as REST does; a session is only honoured for the
//! profile that opened it. `tools/call` builds the operation's HTTP request and runs the
//! pipeline's stages from authorization on ([`crate::pipeline::Call`]), so an agent and an app
//! on one profile share its limits and leave the same records.

pub mod jsonrpc;
pub mod session;
pub mod tools;

pub(crate) mod dispatch;

use std::time::Duration;

use bytes::Bytes;
use http::header::{ACCEPT, ALLOW, CONTENT_TYPE, HeaderName, HeaderValue, WWW_AUTHENTICATE};
use http::{Method, Request, Response, StatusCode};
use serde_json::{Value, json};

use crate::body::{Body, json_response};
use crate::error::{ErrorCode, GatewayError};
use crate::forward::Peer;
use crate::model::McpMode;
use crate::pipeline::Gateway;

use self::jsonrpc::RpcError;
use self::session::SessionKeys;

/// The MCP endpoint on the gateway listener.
pub const PATH: &str = "/mcp";
/// Base paths under `/mcp/` are reserved too, for later MCP endpoints.
pub const PATH_PREFIX_RESERVED: &str = "/mcp/";
/// RFC 9728 protected resource metadata: the root document and the one for [`PATH`].
pub const METADATA_ROOT: &str = "/.well-known/oauth-protected-resource";
pub const METADATA_PATH: &str = "/.well-known/oauth-protected-resource/mcp";

/// Protocol versions served with `initialize` and sessions, oldest first. 2025-03-26 is
/// accepted in the `MCP-Protocol-Version` header (the transport's default when a client sends
/// none) but never negotiated: its JSON-RPC batches are not supported.
pub const LEGACY_VERSIONS: [&str; 2] = ["2025-06-18", "2025-11-25"];
const ACCEPTED_LEGACY_HEADER: [&str; 3] = ["2025-03-26", "2025-06-18", "2025-11-25"];
/// Stateless protocol versions.
pub const MODERN_VERSIONS: [&str; 1] = ["2026-07-28"];

pub(crate) const MCP_SESSION_ID: HeaderName = HeaderName::from_static("mcp-session-id");
const MCP_PROTOCOL_VERSION: HeaderName = HeaderName::from_static("mcp-protocol-version");
const MCP_METHOD: HeaderName = HeaderName::from_static("mcp-method");
const MCP_NAME: HeaderName = HeaderName::from_static("mcp-name");

/// 2026-07-28: a required header is missing or disagrees with the body.
const HEADER_MISMATCH: i64 = -32020;
/// 2026-07-28: the requested protocol version is not supported.
const UNSUPPORTED_VERSION: i64 = -32022;

/// The Gateway MCP's settings.
#[derive(Clone, Debug)]
pub struct McpSettings {
    /// This gateway's MCP resource identifier (RFC 8707), e.g. `https://api.example.com/mcp`:
    /// OIDC tokens used over MCP must carry it as an audience.
    pub resource: String,
    /// `Origin`s allowed to call (exact `scheme://host[:port]`); requests without `Origin`
    /// (non-browser clients) are allowed.
    pub allowed_origins: Vec<String>,
    /// Tool mode of collections that do not set one.
    pub default_mode: McpMode,
    /// How long a session lasts after `initialize`.
    pub session_ttl: Duration,
    /// Largest JSON-RPC message accepted.
    pub max_message_bytes: usize,
}

/// The Gateway MCP's state: its settings and the key that signs session ids.
pub struct Mcp {
    pub settings: McpSettings,
    pub sessions: SessionKeys,
}

/// The protocol era of one request.
#[derive(Clone, Debug, PartialEq)]
pub(crate) enum Era {
    /// `initialize` and sessions; the negotiated version.
    Legacy(String),
    /// Stateless.
    Modern(String),
}

/// Serves `/mcp` and the protected resource metadata. The outcome is recorded by the caller
/// ([`crate::pipeline::handle`]): a refusal as its code, a tool call's own refusal in
/// `draft.refusal`.
pub(crate) async fn serve(
    gw: &Gateway,
    peer: Peer,
    request_id: &HeaderValue,
    req: Request<Body>,
    draft: &mut crate::audit::Draft,
) -> Result<Response<Body>, GatewayError> {
    let path = req.uri().path();
    if path == METADATA_ROOT || path == METADATA_PATH {
        return metadata(gw, req.method());
    }
    check_origin(&gw.mcp.settings, req.headers())?;
    crate::pipeline::check_head_size(&req, gw.settings.max_header_bytes)?;
    if req.method() != Method::POST {
        // No server-initiated stream (GET), and sessions end by expiring: a signed session
        // cannot be withdrawn from every node (DELETE).
        return Err(GatewayError::new(
            ErrorCode::MethodNotAllowed,
            format!("{} is not allowed here; allowed: POST", req.method()),
        )
        .with_header(ALLOW, HeaderValue::from_static("POST")));
    }
    draft.record.what.mcp_method = req
        .headers()
        .get(&MCP_METHOD)
        .and_then(|v| v.to_str().ok())
        .map(|m| m.chars().take(64).collect());

    // The caller first: nothing is read or parsed for a request without a valid credential.
    let snapshot = gw.snapshot.current();
    let source = gw.forwarder.source_address(req.headers(), &peer);
    draft.record.who.source_ip = source.to_string();
    let caller = crate::pipeline::authenticate(gw, &snapshot, &peer, req.headers(), draft)
        .await
        .map_err(|e| challenge(gw, e))?;
    crate::authz::admit(&caller, source, time::OffsetDateTime::now_utc())?;
    if let Some(audiences) = &caller.audiences
        && !audiences.contains(&gw.mcp.settings.resource)
    {
        // RFC 8707: a token meant for another resource is not accepted here.
        return Err(challenge(
            gw,
            GatewayError::new(
                ErrorCode::InvalidCredential,
                "the token's audience does not include this MCP server",
            ),
        ));
    }

    let headers = req.headers().clone();
    check_media_types(&headers)?;
    let body = read_message(req, gw.mcp.settings.max_message_bytes).await?;
    let message = match jsonrpc::parse(&body) {
        Ok(message) => message,
        Err((error, id)) => {
            return Ok(rpc_failure(draft, StatusCode::BAD_REQUEST, &id, &error));
        }
    };
    let principal = (caller.client.id.as_str(), caller.profile.id.as_str());
    let ttl = gw.mcp.settings.session_ttl;
    let era = match era(&gw.mcp.sessions, ttl, &headers, &message, principal) {
        Ok(era) => era,
        Err(Refused::Http(e)) => return Err(e),
        Err(Refused::Rpc(status, id, error)) => return Ok(rpc_failure(draft, status, &id, &error)),
    };
    let context = dispatch::Context {
        gw,
        peer,
        source,
        request_id,
        caller: &caller,
        snapshot: &snapshot,
        era,
        headers: &headers,
    };
    Ok(context.answer(message, draft).await)
}

/// Why a request did not reach its method.
pub(crate) enum Refused {
    /// An HTTP-level refusal with the catalogue's body (an unknown session).
    Http(GatewayError),
    /// A JSON-RPC error with this HTTP status.
    Rpc(StatusCode, Value, RpcError),
}

/// Decides the request's protocol era: a stateless request names its version in `_meta`
/// (and a header); anything else belongs to a session opened by `initialize`, which is
/// honoured for the `principal` that opened it only.
pub(crate) fn era(
    sessions: &SessionKeys,
    session_ttl: Duration,
    headers: &http::HeaderMap,
    message: &jsonrpc::Incoming,
    principal: (&str, &str),
) -> Result<Era, Refused> {
    use jsonrpc::Incoming;
    let header = |name: &HeaderName| headers.get(name).and_then(|v| v.to_str().ok());
    let (id, method, params) = match message {
        Incoming::Request { id, method, params } => {
            (id.clone(), Some(method.as_str()), Some(params))
        }
        Incoming::Notification { method, params } => {
            (Value::Null, Some(method.as_str()), Some(params))
        }
        Incoming::Response => (Value::Null, None, None),
    };
    let meta_version = params
        .and_then(|p| p.get("_meta"))
        .and_then(|m| m.get("io.modelcontextprotocol/protocolVersion"));
    let header_version = header(&MCP_PROTOCOL_VERSION);
    let modern = meta_version.is_some()
        || header_version.is_some_and(|v| !ACCEPTED_LEGACY_HEADER.contains(&v) && v > "2025-11-25");
    if modern {
        let mismatch = |what: String| {
            Refused::Rpc(
                StatusCode::BAD_REQUEST,
                id.clone(),
                RpcError::new(HEADER_MISMATCH, format!("Header mismatch: {what}")),
            )
        };
        let Some(method) = method else {
            return Err(Refused::Rpc(
                StatusCode::BAD_REQUEST,
                Value::Null,
                RpcError::new(
                    jsonrpc::INVALID_REQUEST,
                    "clients of this protocol version send no responses",
                ),
            ));
        };
        let Some(version) = header_version else {
            return Err(mismatch(
                "the MCP-Protocol-Version header is required".into(),
            ));
        };
        if meta_version
            .and_then(Value::as_str)
            .is_some_and(|m| m != version)
        {
            return Err(mismatch(format!(
                "MCP-Protocol-Version header value '{version}' does not match body value '{}'",
                meta_version.and_then(Value::as_str).unwrap_or_default()
            )));
        }
        let is_request = matches!(message, Incoming::Request { .. });
        if is_request {
            match header(&MCP_METHOD) {
                None => return Err(mismatch("the Mcp-Method header is required".into())),
                Some(h) if h != method => {
                    return Err(mismatch(format!(
                        "Mcp-Method header value '{h}' does not match body value '{method}'"
                    )));
                }
                Some(_) => {}
            }
            if matches!(method, "tools/call" | "prompts/get" | "resources/read") {
                let field = if method == "resources/read" {
                    "uri"
                } else {
                    "name"
                };
                let body_name = params.and_then(|p| p.get(field)).and_then(Value::as_str);
                let header_name = headers.get(&MCP_NAME).map(decode_header_value);
                match (header_name, body_name) {
                    (None, _) => return Err(mismatch("the Mcp-Name header is required".into())),
                    (Some(None), _) => {
                        return Err(mismatch("the Mcp-Name header value is malformed".into()));
                    }
                    (Some(Some(h)), Some(b)) if h == b => {}
                    (Some(Some(h)), b) => {
                        return Err(mismatch(format!(
                            "Mcp-Name header value '{h}' does not match body value '{}'",
                            b.unwrap_or_default()
                        )));
                    }
                }
            }
        }
        if !MODERN_VERSIONS.contains(&version) {
            let mut supported: Vec<&str> = MODERN_VERSIONS.to_vec();
            supported.extend(LEGACY_VERSIONS.iter().rev());
            return Err(Refused::Rpc(
                StatusCode::BAD_REQUEST,
                id,
                RpcError::new(UNSUPPORTED_VERSION, "Unsupported protocol version")
                    .with_data(json!({"supported": supported, "requested": version})),
            ));
        }
        if is_request {
            let meta = params.and_then(|p| p.get("_meta"));
            for field in [
                "io.modelcontextprotocol/protocolVersion",
                "io.modelcontextprotocol/clientCapabilities",
            ] {
                if meta.and_then(|m| m.get(field)).is_none() {
                    return Err(Refused::Rpc(
                        StatusCode::BAD_REQUEST,
                        id,
                        RpcError::new(
                            jsonrpc::INVALID_PARAMS,
                            format!("params._meta[\"{field}\"] is required"),
                        ),
                    ));
                }
            }
        }
        return Ok(Era::Modern(version.to_owned()));
    }

    // A session's request: `initialize` opens one; everything else must name one.
    if method == Some("initialize") {
        let requested = params
            .and_then(|p| p.get("protocolVersion"))
            .and_then(Value::as_str)
            .unwrap_or_default();
        let version = if LEGACY_VERSIONS.contains(&requested) {
            requested
        } else {
            LEGACY_VERSIONS[LEGACY_VERSIONS.len() - 1]
        };
        return Ok(Era::Legacy(version.to_owned()));
    }
    let Some(id_header) = header(&MCP_SESSION_ID) else {
        return Err(Refused::Rpc(
            StatusCode::BAD_REQUEST,
            id,
            RpcError::new(
                jsonrpc::INVALID_REQUEST,
                "send initialize first, then the MCP-Session-Id it returns with every request (or use protocol version 2026-07-28, which needs no session)",
            ),
        ));
    };
    let now = time::OffsetDateTime::now_utc().unix_timestamp();
    let ttl = i64::try_from(session_ttl.as_secs()).unwrap_or(i64::MAX);
    let session = sessions
        .open(id_header, now, ttl)
        // A session is not a credential: it is honoured only for the profile that opened it,
        // and one of another profile is indistinguishable from an unknown one.
        .filter(|s| s.client == principal.0 && s.profile == principal.1)
        .ok_or_else(|| {
            Refused::Http(GatewayError::new(
                ErrorCode::SessionNotFound,
                "this MCP session does not exist or has expired; send initialize again",
            ))
        })?;
    if let Some(version) = header_version
        && !ACCEPTED_LEGACY_HEADER.contains(&version)
    {
        return Err(Refused::Rpc(
            StatusCode::BAD_REQUEST,
            id,
            RpcError::new(
                jsonrpc::INVALID_REQUEST,
                format!("unsupported MCP-Protocol-Version '{version}'"),
            )
            .with_data(json!({"supported": LEGACY_VERSIONS, "requested": version})),
        ));
    }
    Ok(Era::Legacy(session.version))
}

/// A header value of the 2026-07-28 transport: plain visible ASCII, or `=?base64?…?=`
/// around UTF-8. `None` when it is neither.
fn decode_header_value(value: &HeaderValue) -> Option<String> {
    use base64::Engine as _;
    let text = value.to_str().ok()?;
    match text
        .strip_prefix("=?base64?")
        .and_then(|t| t.strip_suffix("?="))
    {
        Some(encoded) => {
            let bytes = base64::engine::general_purpose::STANDARD
                .decode(encoded)
                .ok()?;
            String::from_utf8(bytes).ok()
        }
        None => Some(text.to_owned()),
    }
}

/// Browsers send `Origin`; one that is not allowed is refused (DNS-rebinding protection).
fn check_origin(settings: &McpSettings, headers: &http::HeaderMap) -> Result<(), GatewayError> {
    let Some(origin) = headers.get(http::header::ORIGIN) else {
        return Ok(());
    };
    let allowed = origin.to_str().is_ok_and(|o| {
        settings
            .allowed_origins
            .iter()
            .any(|a| a.eq_ignore_ascii_case(o))
    });
    if allowed {
        Ok(())
    } else {
        Err(GatewayError::new(
            ErrorCode::OriginNotAllowed,
            "this Origin may not call the MCP endpoint",
        ))
    }
}

/// The body must be JSON, and the client must accept a JSON answer.
pub(crate) fn check_media_types(headers: &http::HeaderMap) -> Result<(), GatewayError> {
    let content_type = headers
        .get(CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .map(|v| v.trim().to_ascii_lowercase());
    if content_type.as_deref() != Some("application/json") {
        return Err(GatewayError::new(
            ErrorCode::UnsupportedMediaType,
            "MCP messages are sent as Content-Type: application/json",
        ));
    }
    let accepts = headers.get_all(ACCEPT).iter().any(|v| {
        v.to_str().is_ok_and(|v| {
            v.split(',').any(|m| {
                let m = m.split(';').next().unwrap_or("").trim();
                m.eq_ignore_ascii_case("application/json")
                    || m == "*/*"
                    || m.eq_ignore_ascii_case("application/*")
            })
        })
    });
    if !accepts {
        return Err(GatewayError::new(
            ErrorCode::NotAcceptable,
            "send Accept: application/json, text/event-stream",
        ));
    }
    Ok(())
}

/// The message body, refused whole when it is larger than allowed.
pub(crate) async fn read_message(req: Request<Body>, limit: usize) -> Result<Bytes, GatewayError> {
    let too_large = || {
        GatewayError::new(
            ErrorCode::PayloadTooLarge,
            format!("an MCP message may not exceed {limit} bytes"),
        )
    };
    let declared = req
        .headers()
        .get(http::header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > limit as u64) {
        return Err(too_large());
    }
    match crate::body::collect_limited(req.into_body(), limit).await {
        Ok(bytes) => Ok(bytes),
        Err(crate::body::CollectError::TooLarge { .. }) => Err(too_large()),
        Err(crate::body::CollectError::Read(_)) => Err(GatewayError::new(
            ErrorCode::BadRequest,
            "the request body could not be read",
        )),
    }
}

/// A JSON-RPC error answered with an HTTP error status; recorded as a malformed request.
fn rpc_failure(
    draft: &mut crate::audit::Draft,
    status: StatusCode,
    id: &Value,
    error: &RpcError,
) -> Response<Body> {
    draft.refusal = Some(ErrorCode::BadRequest);
    json_response(status, &jsonrpc::error(id, error))
}

/// A 401 that tells an MCP client where to find the authorization servers (RFC 9728).
fn challenge(gw: &Gateway, mut e: GatewayError) -> GatewayError {
    if matches!(
        e.code,
        ErrorCode::Unauthenticated | ErrorCode::InvalidCredential
    ) {
        let metadata = metadata_url(&gw.mcp.settings.resource);
        let error = if e.code == ErrorCode::InvalidCredential {
            r#", error="invalid_token""#
        } else {
            ""
        };
        if let Ok(value) = HeaderValue::from_str(&format!(
            r#"Bearer realm="portcullis", resource_metadata="{metadata}"{error}"#
        )) {
            e.headers.retain(|(name, _)| name != WWW_AUTHENTICATE);
            e.headers.push((WWW_AUTHENTICATE, value));
        }
    }
    e
}

/// Where the metadata for `resource` (`…/mcp`) is published: the well-known path inserted
/// before the resource's path.
fn metadata_url(resource: &str) -> String {
    match resource.strip_suffix(PATH) {
        Some(origin) => format!("{origin}{METADATA_PATH}"),
        None => format!("{}{METADATA_ROOT}", resource.trim_end_matches('/')),
    }
}

/// RFC 9728 protected resource metadata: this MCP resource, the identity providers whose
/// tokens it accepts, and the scopes its operations use.
fn metadata(gw: &Gateway, method: &Method) -> Result<Response<Body>, GatewayError> {
    if method != Method::GET && method != Method::HEAD {
        return Err(GatewayError::new(
            ErrorCode::MethodNotAllowed,
            format!("{method} is not allowed here; allowed: GET, HEAD"),
        )
        .with_header(ALLOW, HeaderValue::from_static("GET, HEAD")));
    }
    let snapshot = gw.snapshot.current();
    let servers: Vec<&str> = snapshot
        .providers
        .iter()
        .map(|p| p.issuer.as_str())
        .collect();
    let mut scopes: Vec<&str> = snapshot
        .collections
        .iter()
        .flat_map(|c| c.operations.iter())
        .filter(|o| o.tool.is_some())
        .flat_map(|o| o.scopes.iter().map(String::as_str))
        .collect();
    scopes.sort_unstable();
    scopes.dedup();
    let document = json!({
        "resource": gw.mcp.settings.resource,
        "authorization_servers": servers,
        "scopes_supported": scopes,
        "bearer_methods_supported": ["header"],
        "resource_name": "Portcullis Gateway MCP",
    });
    let mut response = json_response(StatusCode::OK, &document);
    response.headers_mut().insert(
        http::header::CACHE_CONTROL,
        HeaderValue::from_static("public, max-age=60"),
    );
    Ok(response)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn metadata_sits_beside_the_resource() {
        assert_eq!(
            metadata_url("https://api.example.com/mcp"),
            "https://api.example.com/.well-known/oauth-protected-resource/mcp"
        );
        assert_eq!(
            metadata_url("https://api.example.com/"),
            "https://api.example.com/.well-known/oauth-protected-resource"
        );
    }

    #[test]
    fn header_values_may_be_base64_encoded() {
        let plain = HeaderValue::from_static("get_pet");
        assert_eq!(decode_header_value(&plain).as_deref(), Some("get_pet"));
        let encoded = HeaderValue::from_static("=?base64?w6nDqQ==?=");
        assert_eq!(decode_header_value(&encoded).as_deref(), Some("éé"));
        let broken = HeaderValue::from_static("=?base64?***?=");
        assert_eq!(decode_header_value(&broken), None);
    }

    #[test]
    fn origins_are_checked_when_present() {
        let settings = McpSettings {
            resource: "http://127.0.0.1:8080/mcp".into(),
            allowed_origins: vec!["http://127.0.0.1:8080".into()],
            default_mode: McpMode::Tools,
            session_ttl: Duration::from_secs(60),
            max_message_bytes: 1024,
        };
        let mut headers = http::HeaderMap::new();
        assert!(check_origin(&settings, &headers).is_ok());
        headers.insert(
            http::header::ORIGIN,
            HeaderValue::from_static("http://127.0.0.1:8080"),
        );
        assert!(check_origin(&settings, &headers).is_ok());
        headers.insert(
            http::header::ORIGIN,
            HeaderValue::from_static("http://evil.example"),
        );
        assert_eq!(
            check_origin(&settings, &headers).unwrap_err().code,
            ErrorCode::OriginNotAllowed
        );
    }
}
