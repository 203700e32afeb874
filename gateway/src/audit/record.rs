//! The request record: what one data-plane request was, whoever made it and however it ended.
//! A refused request has the same shape as an admitted one. Version 1 of the schema in
//! `docs/schemas/request-record.v1.json`.

use serde::{Deserialize, Serialize};

use crate::error::ErrorCode;

/// The schema version written in every record.
pub const SCHEMA_VERSION: u32 = 1;

/// One request, as recorded.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct RequestRecord {
    pub schema: u32,
    pub request_id: String,
    /// W3C trace id, when the request carried or started a trace.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub trace_id: Option<String>,
    /// When the request arrived (RFC 3339, UTC).
    pub timestamp: String,
    pub node: String,
    /// `rest` or `mcp`.
    pub channel: String,
    pub who: Who,
    pub what: What,
    /// `allowed`, `denied` (the caller's request was refused) or `error` (the platform or the
    /// upstream failed it).
    pub outcome: Outcome,
    /// The error catalogue's code, when the gateway refused or failed the request.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// The status sent to the caller.
    pub status: u16,
    /// The upstream's status, when the request reached it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub upstream_status: Option<u16>,
    pub latency_us: Latency,
    pub bytes_in: u64,
    pub bytes_out: u64,
    /// Whether the response body was delivered to the end.
    pub completed: bool,
    /// Every limit consulted, with what remained after this request.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub limits: Vec<LimitUse>,
    /// The request body, when the operation captures bodies (capped, redacted).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub request_body: Option<String>,
    /// The response body, likewise.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub response_body: Option<String>,
}

/// Who called. Never a secret: the credential's id, not the credential.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Who {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub profile: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub environment: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub partner: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub credential: Option<String>,
    /// The token's subject (`sub`) for OIDC and client-signed tokens.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub subject: Option<String>,
    pub source_ip: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user_agent: Option<String>,
}

/// What was called.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct What {
    pub method: String,
    /// The path as received (without the query, which may carry secrets).
    pub path: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub collection: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub collection_version: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub operation: Option<String>,
    /// The operation's path template under the collection's base path.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path_template: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mcp_method: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tool: Option<String>,
    /// The JSON-RPC id of a Gateway MCP request, as JSON text (`7`, `"abc"`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rpc_id: Option<String>,
}

/// How the request ended.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    #[default]
    Allowed,
    Denied,
    Error,
}

impl Outcome {
    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Allowed => "allowed",
            Outcome::Denied => "denied",
            Outcome::Error => "error",
        }
    }

    /// The outcome of a request the gateway answered with `code`.
    pub fn of(code: ErrorCode) -> Self {
        if code.status().is_client_error() {
            Outcome::Denied
        } else {
            Outcome::Error
        }
    }
}

/// Where the time went, in microseconds.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Latency {
    /// From the request's arrival to the end of the response.
    pub total: u64,
    /// The gateway's own share: total minus limiter and upstream.
    pub gateway: u64,
    pub limiter: u64,
    /// From sending the request upstream to the end of the response.
    pub upstream: u64,
}

/// One limit consulted for the request.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct LimitUse {
    pub policy: String,
    pub limit: String,
    pub allowed: bool,
    pub remaining: u64,
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every key of `value` is a property the schema declares at that place, and every
    /// property the schema requires is present.
    fn conforms(value: &serde_json::Value, schema: &serde_json::Value, at: &str) {
        match value {
            serde_json::Value::Object(map) => {
                let properties = schema["properties"]
                    .as_object()
                    .unwrap_or_else(|| panic!("the schema has no properties at {at}"));
                for (key, v) in map {
                    let sub = properties
                        .get(key)
                        .unwrap_or_else(|| panic!("{at}.{key} is not in the schema"));
                    conforms(v, sub, &format!("{at}.{key}"));
                }
                for required in schema["required"].as_array().into_iter().flatten() {
                    let key = required.as_str().unwrap();
                    assert!(
                        map.contains_key(key),
                        "{at}.{key} is required by the schema"
                    );
                }
            }
            serde_json::Value::Array(items) => {
                for (i, item) in items.iter().enumerate() {
                    conforms(item, &schema["items"], &format!("{at}[{i}]"));
                }
            }
            serde_json::Value::Null
            | serde_json::Value::Bool(_)
            | serde_json::Value::Number(_)
            | serde_json::Value::String(_) => {}
        }
    }

    #[test]
    fn a_full_record_matches_the_published_schema() {
        let schema: serde_json::Value =
            serde_json::from_str(include_str!("../../../docs/schemas/request-record.v1.json"))
                .unwrap();
        let some = |s: &str| Some(s.to_owned());
        let record = RequestRecord {
            schema: SCHEMA_VERSION,
            request_id: "r".into(),
            trace_id: some("4bf92f3577b34da6a3ce929d0e0e4736"),
            timestamp: "2026-11-22T23:00:00.000000Z".into(),
            node: "node-1".into(),
            channel: "rest".into(),
            who: Who {
                client: some("c"),
                profile: some("p"),
                environment: some("sandbox"),
                partner: some("acme"),
                credential: some("cred"),
                subject: some("sub"),
                source_ip: "192.0.2.1".into(),
                user_agent: some("ua"),
            },
            what: What {
                method: "GET".into(),
                path: "/x".into(),
                collection: some("x"),
                collection_version: some("1"),
                operation: some("get"),
                path_template: some("/x"),
                mcp_method: some("tools/call"),
                tool: some("get_x"),
                rpc_id: some("7"),
            },
            outcome: Outcome::Denied,
            reason: some("rate_limited"),
            status: 429,
            upstream_status: Some(200),
            latency_us: Latency::default(),
            bytes_in: 1,
            bytes_out: 2,
            completed: true,
            limits: vec![LimitUse {
                policy: "p".into(),
                limit: "l".into(),
                allowed: false,
                remaining: 0,
            }],
            request_body: some("{}"),
            response_body: some("{}"),
        };
        conforms(&serde_json::to_value(&record).unwrap(), &schema, "record");
        assert_eq!(schema["properties"]["schema"]["const"], SCHEMA_VERSION);
    }
}
