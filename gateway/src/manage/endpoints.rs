//! The management API's endpoints, in one table. The router matches requests against it, the
//! Management MCP offers one tool per entry, and the OpenAPI document is generated from it: the
//! three cannot disagree about what exists, what it takes and who may call it.

use std::sync::LazyLock;

use http::Method;
use schemars::{JsonSchema, Schema, SchemaGenerator, json_schema};
use serde_json::{Value, json};

use super::Permission;
use super::objects::ObjectKind;
use super::parts::PartKind;
use crate::model::{Client, Collection, IdentityProvider, Operation, Profile};
use portcullis_limiter::policy::{Override, Policy};

/// What an endpoint does; [`super::execute`] runs it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Action {
    Whoami,
    List(ObjectKind),
    Get(ObjectKind),
    Put(ObjectKind),
    Delete(ObjectKind),
    /// One operation of a collection, or one profile of a client.
    GetPart(PartKind),
    PutPart(PartKind),
    DeletePart(PartKind),
    /// A collection's lifecycle: `draft` (not routed) or `published`.
    SetStatus(crate::model::Status),
    IssueCredential,
    RotateCredential,
    RevokeCredential,
    ListOperators,
    CreateOperator,
    UpdateOperator,
    RotateOperator,
    RevokeOperator,
    RequestRecords,
    ChangeRecords,
    VerifyAudit,
    MetricsSummary,
    /// Quota state, which the limiter owns.
    Quota(QuotaAction),
}

/// What a quota endpoint does, through the limiter's quota service.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum QuotaAction {
    ListPolicies,
    GetPolicy,
    PutPolicy,
    DeletePolicy,
    ListOverrides,
    SetOverride,
    ClearOverride,
    Usage,
    ResetUsage,
}

/// What calling an endpoint does to the platform (MCP tool annotations follow it).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Effect {
    Read,
    Write,
    /// Removes or revokes something.
    Destructive,
}

/// One query parameter an endpoint takes.
pub struct QueryParam {
    pub name: &'static str,
    pub description: &'static str,
    pub schema: fn() -> Value,
}

type SchemaFn = fn(&mut SchemaGenerator) -> Schema;

/// One management endpoint.
pub struct Endpoint {
    pub action: Action,
    pub method: Method,
    /// The path, with `{name}` for each parameter.
    pub path: String,
    /// The OpenAPI `operationId` and the MCP tool name.
    pub name: String,
    pub summary: String,
    /// The permission it requires (none: any operator).
    pub permission: Option<Permission>,
    pub effect: Effect,
    /// What a change record names the request, allowed or refused: e.g. `collections.update`.
    pub change: String,
    pub query: Vec<QueryParam>,
    /// The JSON body it takes, if any.
    pub body: Option<SchemaFn>,
    /// Whether the body may be left out.
    pub body_optional: bool,
    /// Its answer when it succeeds: the status and the body (none for 204).
    pub success: (u16, Option<SchemaFn>),
    /// Takes `If-Match`.
    pub conditional: bool,
}

impl Endpoint {
    /// The names of the path's parameters, in order.
    pub fn path_params(&self) -> impl Iterator<Item = &str> {
        self.path
            .split('/')
            .filter_map(|s| s.strip_prefix('{').and_then(|s| s.strip_suffix('}')))
    }

    /// Whether it changes anything (and so takes `dry_run`).
    pub fn mutates(&self) -> bool {
        self.effect != Effect::Read
    }

    /// The path's values when `path` is this endpoint's, percent-decoded.
    fn matches(&self, path: &str) -> Option<Vec<String>> {
        let mut values = Vec::new();
        let mut template = self.path.split('/');
        let mut given = path.split('/');
        loop {
            match (template.next(), given.next()) {
                (None, None) => return Some(values),
                (Some(t), Some(g)) if t.starts_with('{') => {
                    let value = percent_encoding::percent_decode_str(g)
                        .decode_utf8()
                        .ok()?
                        .into_owned();
                    if value.is_empty() {
                        return None;
                    }
                    values.push(value);
                }
                (Some(t), Some(g)) if t == g => {}
                (Some(_), Some(_)) | (Some(_), None) | (None, Some(_)) => return None,
            }
        }
    }
}

/// What a request path names.
pub enum Found {
    /// The endpoint and its path parameters.
    Endpoint(&'static Endpoint, Vec<String>),
    /// The path exists, not for this method: these are allowed.
    OtherMethods(Vec<Method>),
    NotFound,
}

/// The endpoint `method` and `path` name.
pub fn find(method: &Method, path: &str) -> Found {
    let mut allowed = Vec::new();
    for endpoint in all() {
        if let Some(params) = endpoint.matches(path) {
            if endpoint.method == *method
                || (*method == Method::HEAD && endpoint.method == Method::GET)
            {
                return Found::Endpoint(endpoint, params);
            }
            allowed.push(endpoint.method.clone());
        }
    }
    if allowed.is_empty() {
        Found::NotFound
    } else {
        Found::OtherMethods(allowed)
    }
}

/// The endpoint whose name (tool name) is `name`.
pub fn by_name(name: &str) -> Option<&'static Endpoint> {
    all().iter().find(|e| e.name == name)
}

/// Every endpoint.
pub fn all() -> &'static [Endpoint] {
    static ALL: LazyLock<Vec<Endpoint>> = LazyLock::new(table);
    &ALL
}

fn string() -> Value {
    json!({"type": "string"})
}

fn limit() -> Value {
    json!({"type": "integer", "minimum": 1, "maximum": 1000, "default": 100})
}

fn time() -> Value {
    json!({"type": "string", "format": "date-time"})
}

fn q(name: &'static str, description: &'static str, schema: fn() -> Value) -> QueryParam {
    QueryParam {
        name,
        description,
        schema,
    }
}

fn paging() -> Vec<QueryParam> {
    vec![
        q("limit", "Page size: 1 to 1000 (default 100).", limit),
        q(
            "cursor",
            "Where the page starts: the previous page's `next_cursor`.",
            string,
        ),
    ]
}

fn record_filters() -> Vec<QueryParam> {
    let mut params = vec![
        q("client", "Only this client's records.", string),
        q("profile", "Only this profile's records.", string),
        q("partner", "Only this partner's records.", string),
        q("collection", "Only records for this collection.", string),
        q("operation", "Only records for this operation.", string),
        q(
            "channel",
            "Only this channel: rest, mcp, api, cli, console.",
            string,
        ),
        q(
            "outcome",
            "Only `allowed`, `denied` or `error` records.",
            || json!({"type": "string", "enum": ["allowed", "denied", "error"]}),
        ),
        q("reason", "Only records with this error code.", string),
        q(
            "status",
            "Only records with this HTTP status.",
            || json!({"type": "integer", "minimum": 100, "maximum": 599}),
        ),
        q("since", "Records at or after this time (RFC 3339).", time),
        q("until", "Records before this time (RFC 3339).", time),
        q(
            "format",
            "`json` (default) or `ndjson`: each record as stored, one per line, the next page's cursor in `X-Next-Cursor`.",
            || json!({"type": "string", "enum": ["json", "ndjson"]}),
        ),
    ];
    params.extend(paging());
    params
}

/// A page of objects of one kind, under the kind's name.
fn page_of(kind: ObjectKind, generator: &mut SchemaGenerator) -> Schema {
    let item = object_schema(kind, generator);
    let mut properties = serde_json::Map::new();
    properties.insert(
        kind.segment().into(),
        json!({"type": "array", "items": item}),
    );
    properties.insert("next_cursor".into(), json!({"type": "string"}));
    json_schema!({
        "type": "object",
        "properties": properties,
        "required": [kind.segment()],
    })
}

fn object_schema(kind: ObjectKind, generator: &mut SchemaGenerator) -> Schema {
    match kind {
        ObjectKind::Collections => generator.subschema_for::<Collection>(),
        ObjectKind::Clients => generator.subschema_for::<Client>(),
        ObjectKind::IdentityProviders => generator.subschema_for::<IdentityProvider>(),
    }
}

/// The answer of a `dry_run`: the change the call would make.
#[derive(serde::Serialize, JsonSchema)]
pub struct DryRun {
    /// Always `true`.
    pub dry_run: bool,
    pub change: ChangePreview,
}

/// A change as its change record would show it.
#[derive(serde::Serialize, JsonSchema)]
pub struct ChangePreview {
    pub action: String,
    pub resource: crate::audit::change::Resource,
    pub before: Option<Value>,
    pub after: Option<Value>,
}

/// The error body every endpoint answers with, as the data plane does.
#[derive(serde::Serialize, JsonSchema)]
pub struct ErrorBody {
    pub error: ErrorDetail,
}

#[derive(serde::Serialize, JsonSchema)]
pub struct ErrorDetail {
    /// A stable code from docs/errors.md.
    pub code: String,
    pub message: String,
    pub request_id: String,
}

fn records(_: &mut SchemaGenerator) -> Schema {
    json_schema!({
        "type": "object",
        "properties": {
            "records": {"type": "array", "items": {"type": "object"}},
            "next_cursor": {"type": "string"},
        },
        "required": ["records"],
    })
}

fn table() -> Vec<Endpoint> {
    use Action::*;
    use Effect::*;
    use Permission::*;
    let endpoint = |action, method, path: &str, name: &str, summary: &str| Endpoint {
        action,
        method,
        path: format!("/api/v1{path}"),
        name: name.to_owned(),
        summary: summary.to_owned(),
        permission: Some(ReadConfig),
        effect: Read,
        change: String::new(),
        query: Vec::new(),
        body: None,
        body_optional: false,
        success: (200, None),
        conditional: false,
    };
    let mut all = vec![Endpoint {
        permission: None,
        change: "whoami.read".into(),
        success: (200, Some(|g| g.subschema_for::<super::Whoami>())),
        ..endpoint(
            Whoami,
            Method::GET,
            "/whoami",
            "whoami",
            "Who the caller is: operator id, roles and permissions",
        )
    }];
    for kind in [
        ObjectKind::Collections,
        ObjectKind::Clients,
        ObjectKind::IdentityProviders,
    ] {
        let segment = kind.segment();
        let singular = kind.singular().replace(' ', "_");
        let one = format!("/{segment}/{{id}}");
        let schema_of: SchemaFn = match kind {
            ObjectKind::Collections => |g| g.subschema_for::<Collection>(),
            ObjectKind::Clients => |g| g.subschema_for::<Client>(),
            ObjectKind::IdentityProviders => |g| g.subschema_for::<IdentityProvider>(),
        };
        let page: SchemaFn = match kind {
            ObjectKind::Collections => |g| page_of(ObjectKind::Collections, g),
            ObjectKind::Clients => |g| page_of(ObjectKind::Clients, g),
            ObjectKind::IdentityProviders => |g| page_of(ObjectKind::IdentityProviders, g),
        };
        // Identity providers decide who OIDC credentials are: changing them is the admin's,
        // as credentials are.
        let write = if kind == ObjectKind::IdentityProviders {
            ManageOperators
        } else {
            WriteConfig
        };
        let mut query = paging();
        query.extend(kind.filters().iter().map(|(name, description)| QueryParam {
            name,
            description,
            schema: string,
        }));
        all.push(Endpoint {
            change: format!("{segment}.read"),
            query,
            success: (200, Some(page)),
            ..endpoint(
                List(kind),
                Method::GET,
                &format!("/{segment}"),
                &format!("list_{segment}"),
                &format!("List {}s by id, a page at a time", kind.singular()),
            )
        });
        all.push(Endpoint {
            change: format!("{segment}.read"),
            success: (200, Some(schema_of)),
            ..endpoint(
                Get(kind),
                Method::GET,
                &one,
                &format!("get_{singular}"),
                &format!("Read one {} (with its ETag)", kind.singular()),
            )
        });
        all.push(Endpoint {
            permission: Some(write),
            effect: Write,
            change: format!("{segment}.update"),
            body: Some(schema_of),
            success: (200, Some(schema_of)),
            conditional: true,
            ..endpoint(
                Put(kind),
                Method::PUT,
                &one,
                &format!("put_{singular}"),
                &format!(
                    "Create or replace one {} (201 when created); If-Match makes it conditional",
                    kind.singular()
                ),
            )
        });
        all.push(Endpoint {
            permission: Some(write),
            effect: Destructive,
            change: format!("{segment}.delete"),
            success: (204, None),
            conditional: true,
            ..endpoint(
                Delete(kind),
                Method::DELETE,
                &one,
                &format!("delete_{singular}"),
                &format!("Delete one {}", kind.singular()),
            )
        });
    }
    for kind in [PartKind::Operations, PartKind::Profiles] {
        let parent = kind.parent();
        let singular = kind.singular();
        let one = format!(
            "/{}/{{id}}/{}/{{{singular}}}",
            parent.segment(),
            kind.segment()
        );
        let schema_of: SchemaFn = match kind {
            PartKind::Operations => |g| g.subschema_for::<Operation>(),
            PartKind::Profiles => |g| g.subschema_for::<Profile>(),
        };
        all.push(Endpoint {
            change: format!("{}.read", kind.segment()),
            success: (200, Some(schema_of)),
            ..endpoint(
                GetPart(kind),
                Method::GET,
                &one,
                &format!("get_{singular}"),
                &format!(
                    "Read one {singular} of a {} (with its ETag)",
                    parent.singular()
                ),
            )
        });
        all.push(Endpoint {
            permission: Some(WriteConfig),
            effect: Write,
            change: format!("{}.update", kind.segment()),
            body: Some(schema_of),
            success: (200, Some(schema_of)),
            conditional: true,
            ..endpoint(
                PutPart(kind),
                Method::PUT,
                &one,
                &format!("put_{singular}"),
                &format!(
                    "Create or replace one {singular} of a {}, leaving its others as they are (201 when created); If-Match makes it conditional",
                    parent.singular()
                ),
            )
        });
        all.push(Endpoint {
            permission: Some(WriteConfig),
            effect: Destructive,
            change: format!("{}.delete", kind.segment()),
            success: (204, None),
            conditional: true,
            ..endpoint(
                DeletePart(kind),
                Method::DELETE,
                &one,
                &format!("delete_{singular}"),
                &format!("Delete one {singular} of a {}", parent.singular()),
            )
        });
    }
    for (status, verb) in [
        (crate::model::Status::Published, "publish"),
        (crate::model::Status::Draft, "unpublish"),
    ] {
        all.push(Endpoint {
            permission: Some(WriteConfig),
            effect: Write,
            change: format!("collections.{verb}"),
            success: (200, Some(|g| g.subschema_for::<Collection>())),
            conditional: true,
            ..endpoint(
                SetStatus(status),
                Method::POST,
                &format!("/collections/{{id}}/{verb}"),
                &format!("{verb}_collection"),
                if verb == "publish" {
                    "Publish a draft collection: its operations are routed from the next configuration version"
                } else {
                    "Return a collection to draft: it is no longer routed"
                },
            )
        });
    }
    let credentials = "/clients/{client}/profiles/{profile}/credentials";
    all.extend([
        Endpoint {
            permission: Some(ManageOperators),
            effect: Write,
            change: "credentials.create".into(),
            body: Some(|g| g.subschema_for::<super::credentials::Options>()),
            body_optional: true,
            success: (201, Some(|g| g.subschema_for::<super::credentials::Issued>())),
            ..endpoint(
                IssueCredential,
                Method::POST,
                credentials,
                "issue_credential",
                "Issue an API token for a profile; the token is in this answer only",
            )
        },
        Endpoint {
            permission: Some(ManageOperators),
            effect: Write,
            change: "credentials.rotate".into(),
            body: Some(|g| g.subschema_for::<super::credentials::Options>()),
            body_optional: true,
            success: (201, Some(|g| g.subschema_for::<super::credentials::Issued>())),
            ..endpoint(
                RotateCredential,
                Method::POST,
                &format!("{credentials}/{{credential}}/rotate"),
                "rotate_credential",
                "Replace an API token: a new token now, the old one until the overlap ends",
            )
        },
        Endpoint {
            permission: Some(ManageOperators),
            effect: Destructive,
            change: "credentials.delete".into(),
            success: (200, Some(|g| g.subschema_for::<super::credentials::Revoked>())),
            ..endpoint(
                RevokeCredential,
                Method::DELETE,
                &format!("{credentials}/{{credential}}"),
                "revoke_credential",
                "Revoke a credential, on every node",
            )
        },
        Endpoint {
            permission: Some(ManageOperators),
            change: "operators.read".into(),
            success: (200, Some(|g| g.subschema_for::<super::OperatorList>())),
            ..endpoint(
                ListOperators,
                Method::GET,
                "/operators",
                "list_operators",
                "List the operators (never their tokens)",
            )
        },
        Endpoint {
            permission: Some(ManageOperators),
            effect: Write,
            change: "operators.create".into(),
            body: Some(|g| g.subschema_for::<super::NewOperator>()),
            success: (201, Some(|g| g.subschema_for::<super::CreatedOperator>())),
            ..endpoint(
                CreateOperator,
                Method::POST,
                "/operators",
                "create_operator",
                "Create a service operator with roles; its token is in this answer only",
            )
        },
        Endpoint {
            permission: Some(ManageOperators),
            effect: Write,
            change: "operators.update".into(),
            body: Some(|g| g.subschema_for::<super::OperatorChange>()),
            success: (200, Some(|g| g.subschema_for::<crate::store::OperatorRow>())),
            ..endpoint(
                UpdateOperator,
                Method::PUT,
                "/operators/{id}",
                "update_operator",
                "Change an operator's roles, description or expiry (its token stays)",
            )
        },
        Endpoint {
            permission: Some(ManageOperators),
            effect: Write,
            change: "operators.rotate".into(),
            success: (201, Some(|g| g.subschema_for::<super::CreatedOperator>())),
            ..endpoint(
                RotateOperator,
                Method::POST,
                "/operators/{id}/rotate",
                "rotate_operator",
                "Replace an operator's token: the new one is in this answer only, the old one stops at once",
            )
        },
        Endpoint {
            permission: Some(ManageOperators),
            effect: Destructive,
            change: "operators.delete".into(),
            success: (200, Some(|g| g.subschema_for::<crate::store::OperatorRow>())),
            ..endpoint(
                RevokeOperator,
                Method::DELETE,
                "/operators/{id}",
                "revoke_operator",
                "Revoke an operator's token, on every node at once",
            )
        },
        Endpoint {
            permission: Some(ReadAudit),
            change: "request_records.read".into(),
            query: record_filters(),
            success: (200, Some(records)),
            ..endpoint(
                RequestRecords,
                Method::GET,
                "/audit/requests",
                "list_request_records",
                "Request records, oldest first, filtered",
            )
        },
        Endpoint {
            permission: Some(ReadAudit),
            change: "change_records.read".into(),
            query: record_filters(),
            success: (200, Some(records)),
            ..endpoint(
                ChangeRecords,
                Method::GET,
                "/audit/changes",
                "list_change_records",
                "Change records, oldest first, filtered",
            )
        },
        Endpoint {
            permission: Some(ReadAudit),
            change: "audit_chains.read".into(),
            query: vec![
                q("node", "Only this node's chain.", string),
                q("from", "First sequence number to check.", || {
                    json!({"type": "integer", "minimum": 0})
                }),
                q("to", "Last sequence number to check.", || {
                    json!({"type": "integer", "minimum": 0})
                }),
            ],
            success: (200, Some(|g| g.subschema_for::<super::Verified>())),
            ..endpoint(
                VerifyAudit,
                Method::GET,
                "/audit/verify",
                "verify_audit",
                "Check every node's hash chain of records",
            )
        },
        Endpoint {
            permission: Some(ReadAudit),
            change: "metrics.read".into(),
            query: vec![
                q("since", "From this time (RFC 3339; default: an hour ago).", time),
                q("until", "Until this time (RFC 3339; default: now).", time),
            ],
            success: (200, Some(|g| g.subschema_for::<super::Summary>())),
            ..endpoint(
                MetricsSummary,
                Method::GET,
                "/metrics/summary",
                "metrics_summary",
                "Requests in a time window, cluster-wide: allowed, denied, by reason and by collection",
            )
        },
    ]);
    let policy = "/quota/policies/{policy}";
    let override_path = "/quota/policies/{policy}/overrides/{client}";
    all.extend([
        Endpoint {
            change: "quota_policies.read".into(),
            success: (
                200,
                Some(|g| g.subschema_for::<super::quotas::PolicyList>()),
            ),
            ..endpoint(
                Quota(QuotaAction::ListPolicies),
                Method::GET,
                "/quota/policies",
                "list_quota_policies",
                "List the limiter's quota policies",
            )
        },
        Endpoint {
            change: "quota_policies.read".into(),
            success: (200, Some(|g| g.subschema_for::<Policy>())),
            ..endpoint(
                Quota(QuotaAction::GetPolicy),
                Method::GET,
                policy,
                "get_quota_policy",
                "Read one quota policy",
            )
        },
        Endpoint {
            permission: Some(WriteConfig),
            effect: Write,
            change: "quota_policies.update".into(),
            body: Some(|g| g.subschema_for::<Policy>()),
            success: (200, Some(|g| g.subschema_for::<Policy>())),
            ..endpoint(
                Quota(QuotaAction::PutPolicy),
                Method::PUT,
                policy,
                "put_quota_policy",
                "Create or replace a quota policy in the limiter (201 when created)",
            )
        },
        Endpoint {
            permission: Some(WriteConfig),
            effect: Destructive,
            change: "quota_policies.delete".into(),
            success: (204, None),
            ..endpoint(
                Quota(QuotaAction::DeletePolicy),
                Method::DELETE,
                policy,
                "delete_quota_policy",
                "Delete a quota policy and its overrides",
            )
        },
        Endpoint {
            change: "quota_overrides.read".into(),
            query: vec![q("policy", "Only this policy's overrides.", string)],
            success: (
                200,
                Some(|g| g.subschema_for::<super::quotas::OverrideList>()),
            ),
            ..endpoint(
                Quota(QuotaAction::ListOverrides),
                Method::GET,
                "/quota/overrides",
                "list_quota_overrides",
                "List per-principal quota overrides",
            )
        },
        Endpoint {
            permission: Some(WriteConfig),
            effect: Write,
            change: "quota_overrides.update".into(),
            body: Some(|g| g.subschema_for::<super::quotas::OverrideBody>()),
            success: (200, Some(|g| g.subschema_for::<Override>())),
            ..endpoint(
                Quota(QuotaAction::SetOverride),
                Method::PUT,
                override_path,
                "set_quota_override",
                "Multiply a client's (or one profile's) limits under a policy",
            )
        },
        Endpoint {
            permission: Some(WriteConfig),
            effect: Destructive,
            change: "quota_overrides.delete".into(),
            query: vec![q(
                "profile",
                "The profile's override (the client-wide one when absent).",
                string,
            )],
            success: (204, None),
            ..endpoint(
                Quota(QuotaAction::ClearOverride),
                Method::DELETE,
                override_path,
                "clear_quota_override",
                "Remove an override",
            )
        },
        Endpoint {
            change: "quota_usage.read".into(),
            query: vec![
                q("client", "The client.", string),
                q("profile", "The profile.", string),
                q("collection", "The collection (for product limits).", string),
                q("operation", "The operation (for operation limits).", string),
                q(
                    "source_ip",
                    "The source address (for source-IP limits).",
                    string,
                ),
            ],
            success: (200, Some(|g| g.subschema_for::<super::quotas::Usage>())),
            ..endpoint(
                Quota(QuotaAction::Usage),
                Method::GET,
                "/quota/policies/{policy}/usage",
                "get_quota_usage",
                "A subject's standing under a policy, per limit (charges nothing)",
            )
        },
        Endpoint {
            permission: Some(WriteConfig),
            effect: Destructive,
            change: "quota_usage.reset".into(),
            body: Some(|g| g.subschema_for::<super::quotas::Subject>()),
            body_optional: true,
            success: (200, Some(|g| g.subschema_for::<super::quotas::ResetDone>())),
            ..endpoint(
                Quota(QuotaAction::ResetUsage),
                Method::POST,
                "/quota/policies/{policy}/usage/reset",
                "reset_quota_usage",
                "Forget a subject's counters under a policy (or one of its limits)",
            )
        },
    ]);
    all
}

impl ObjectKind {
    /// The filters its list takes: field name and description.
    pub(super) fn filters(self) -> &'static [(&'static str, &'static str)] {
        match self {
            ObjectKind::Collections => &[("status", "Only `draft` or `published` collections.")],
            ObjectKind::Clients => &[
                ("partner", "Only this partner's clients."),
                (
                    "active",
                    "Only active (`true`) or inactive (`false`) clients.",
                ),
            ],
            ObjectKind::IdentityProviders => &[],
        }
    }
}

/// The OpenAPI 3.1 document of the management API, generated from [`all`].
pub fn openapi() -> Value {
    let mut generator = SchemaGenerator::new(
        schemars::generate::SchemaSettings::draft2020_12()
            .with(|s| s.definitions_path = "#/components/schemas/".into()),
    );
    let error = generator.subschema_for::<ErrorBody>().to_value();
    let dry_run = generator.subschema_for::<DryRun>().to_value();
    let mut paths = serde_json::Map::new();
    for endpoint in all() {
        let mut parameters: Vec<Value> = endpoint
            .path_params()
            .map(|name| {
                json!({"name": name, "in": "path", "required": true, "schema": {"type": "string", "minLength": 1}})
            })
            .collect();
        parameters.extend(endpoint.query.iter().map(|p| {
            json!({"name": p.name, "in": "query", "required": false,
                   "description": p.description, "schema": (p.schema)()})
        }));
        if endpoint.mutates() {
            parameters.push(json!({"name": "dry_run", "in": "query", "required": false,
                "description": "`true`: validate and answer the change this call would make, without making it.",
                "schema": {"type": "boolean"}}));
        }
        if endpoint.conditional {
            parameters.push(
                json!({"name": "If-Match", "in": "header", "required": false,
                "description": "Only if the object's ETag is one of these (or `*`): else 412.",
                "schema": {"type": "string"}}),
            );
        }
        let mut responses = serde_json::Map::new();
        let json_content = |schema: Value| json!({"application/json": {"schema": schema}});
        let (status, body) = endpoint.success;
        let mut success = json!({"description": "Done."});
        if let Some(schema) = body {
            success["content"] = json_content(schema(&mut generator).to_value());
            if matches!(
                endpoint.action,
                Action::RequestRecords | Action::ChangeRecords
            ) {
                success["content"]["application/x-ndjson"] = json!({"schema": {"type": "string"}});
            }
        }
        if matches!(
            endpoint.action,
            Action::Get(_)
                | Action::Put(_)
                | Action::GetPart(_)
                | Action::PutPart(_)
                | Action::SetStatus(_)
        ) {
            success["headers"] = json!({"ETag": {"schema": {"type": "string"}}});
        }
        responses.insert(status.to_string(), success);
        if matches!(
            endpoint.action,
            Action::Put(_) | Action::PutPart(_) | Action::Quota(QuotaAction::PutPolicy)
        ) {
            let created = responses["200"].clone();
            responses.insert("201".into(), created);
        }
        if endpoint.mutates() && status != 200 {
            responses.insert(
                "200".into(),
                json!({"description": "A dry run: the change it would make.",
                       "content": json_content(dry_run.clone())}),
            );
        } else if endpoint.mutates() {
            // 200 is also the dry run's status: either body.
            let done = responses["200"]["content"]["application/json"]["schema"].take();
            responses["200"]["content"] = json_content(json!({"anyOf": [done, dry_run.clone()]}));
        }
        let mut errors = vec![400, 401, 404, 413, 422, 503];
        if endpoint.permission.is_some() {
            errors.push(403);
        }
        if endpoint.mutates() {
            errors.push(409);
        }
        if endpoint.conditional {
            errors.push(412);
        }
        for code in errors {
            responses.insert(
                code.to_string(),
                json!({"description": describe(code),
                       "content": json_content(error.clone())}),
            );
        }
        let mut operation = json!({
            "operationId": endpoint.name,
            "summary": endpoint.summary,
            "parameters": parameters,
            "responses": responses,
            "x-permission": endpoint.permission,
        });
        if let Some(schema) = endpoint.body {
            operation["requestBody"] = json!({
                "required": !endpoint.body_optional,
                "content": json_content(schema(&mut generator).to_value()),
            });
        }
        let item = paths
            .entry(endpoint.path.clone())
            .or_insert_with(|| json!({}));
        item[endpoint.method.as_str().to_ascii_lowercase()] = operation;
    }
    let schemas: serde_json::Map<String, Value> = generator.take_definitions(true);
    json!({
        "openapi": "3.1.0",
        "info": {
            "title": "Portcullis management API",
            "version": env!("CARGO_PKG_VERSION"),
            "description": "Operators act under their own identity and role; every change and every refused request leaves a change record. See docs/management.md.",
        },
        "paths": paths,
        "components": {
            "schemas": schemas,
            "securitySchemes": {
                "operator": {"type": "http", "scheme": "bearer", "description": "An operator token (`pco_…`) or an OIDC access token from the operators' identity provider."},
            },
        },
        "security": [{"operator": []}],
    })
}

fn describe(status: u16) -> &'static str {
    match status {
        400 => "The request is malformed (an unknown parameter, a bad value).",
        401 => "No valid operator token.",
        403 => "The operator's roles do not allow this.",
        404 => "No such object.",
        409 => "It conflicts with what is stored.",
        412 => "The object changed since it was read (If-Match).",
        413 => "The body is too large.",
        422 => "The body is not valid; the message names the fields.",
        503 => "The store, the limiter or the audit trail cannot be reached.",
        _ => "An error.",
    }
}
