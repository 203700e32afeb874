//! The change record: one control-plane action, allowed or denied, whoever or whatever made it.
//! Change records share the request records' hash chain, store and verification, and their
//! field names for who, when and outcome (`timestamp`, `who.source_ip`, `who.user_agent`,
//! `outcome`, `reason`, `status`).

use serde::{Deserialize, Serialize};

use super::record::Outcome;

/// The schema version written in every change record.
pub const SCHEMA_VERSION: u32 = 1;

/// One control-plane action.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct ChangeRecord {
    pub schema: u32,
    /// Always `change` (request records have no `kind`).
    pub kind: String,
    pub request_id: String,
    /// When the action was asked for (RFC 3339, UTC).
    pub timestamp: String,
    pub node: String,
    /// `api`, `mcp`, `cli` or `console`.
    pub channel: String,
    pub who: Actor,
    /// What was asked, e.g. `audit.read` or `collection.update`.
    pub action: String,
    pub resource: Resource,
    /// The object before and after the change (secrets redacted); absent when nothing changed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub before: Option<serde_json::Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub after: Option<serde_json::Value>,
    pub outcome: Outcome,
    /// The error catalogue's code when the action was refused or failed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// The HTTP status answered.
    pub status: u16,
}

/// Who acted. Never a secret.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Actor {
    /// The operator's id; absent when the caller could not be identified.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub subject: Option<String>,
    /// `service`, `user` or `system`; `unknown` when unidentified.
    pub kind: String,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub roles: Vec<String>,
    pub source_ip: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user_agent: Option<String>,
}

/// What the action was about.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Resource {
    /// `request_records`, `collection`, `operator`, …
    pub kind: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
}
