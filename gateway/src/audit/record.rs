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
