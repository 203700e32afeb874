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
    /// When the action was recorded, as it completed (RFC 3339, UTC).
    pub timestamp: String,
    pub node: String,
    /// `api`, `mcp`, `cli` or `console`.
    pub channel: String,
    pub who: Actor,
    /// What was asked, e.g. `request_records.read` or `collections.update`.
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
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct Resource {
    /// As in the path: `request_records`, `collections`, `operators`, …
    pub kind: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_match_the_published_schema() {
        let schema: serde_json::Value =
            serde_json::from_str(include_str!("../../../docs/schemas/change-record.v1.json"))
                .unwrap();
        let validator = jsonschema::options()
            .with_draft(jsonschema::Draft::Draft202012)
            .build(&schema)
            .unwrap();
        let full = ChangeRecord {
            schema: SCHEMA_VERSION,
            kind: "change".into(),
            request_id: "r".into(),
            timestamp: "2026-11-23T02:20:11.104512Z".into(),
            node: "gw-1".into(),
            channel: "api".into(),
            who: Actor {
                subject: Some("ci".into()),
                kind: "service".into(),
                roles: vec!["editor".into()],
                source_ip: "10.0.0.1".into(),
                user_agent: Some("curl".into()),
            },
            action: "collections.update".into(),
            resource: Resource {
                kind: "collections".into(),
                id: Some("orders".into()),
            },
            before: Some(serde_json::json!({"id": "orders"})),
            after: Some(serde_json::json!({"id": "orders"})),
            outcome: Outcome::Allowed,
            reason: None,
            status: 200,
        };
        let minimal = ChangeRecord {
            who: Actor {
                kind: "unknown".into(),
                source_ip: "10.0.0.1".into(),
                ..Default::default()
            },
            outcome: Outcome::Denied,
            reason: Some("unauthenticated".into()),
            status: 401,
            before: None,
            after: None,
            ..full.clone()
        };
        for record in [full, minimal] {
            let value = serde_json::to_value(&record).unwrap();
            let errors: Vec<String> = validator
                .iter_errors(&value)
                .map(|e| e.to_string())
                .collect();
            assert!(errors.is_empty(), "{errors:?}");
        }
        // The schema is not a rubber stamp.
        let mut bad = serde_json::to_value(ChangeRecord::default()).unwrap();
        bad["extra"] = 1.into();
        assert!(!validator.is_valid(&bad));
    }
}
