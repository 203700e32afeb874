//! The management API, `/api/v1` on the admin listener: operators act under their own identity
//! and role: operator identity (service tokens, and the bootstrap admin token of an empty store),
//! the role matrix, configuration objects ([`objects`]), credentials ([`credentials`]),
//! operators, and the audit endpoints. Every change and every refused request is a change
//! record in the node's hash chain.
//!
//! Every request authenticates: `Authorization: Bearer pco_…`, looked up by its keyed hash in
//! the store on each request (so a revocation counts on every node at once), then checked
//! against [`Role::allows`].

mod credentials;
mod objects;

use std::sync::Arc;

use http::header::{HeaderValue, WWW_AUTHENTICATE};
use http::{Method, Request, Response, StatusCode};
use serde_json::{Value, json};

use crate::auth::token::{self, TokenSecret};
use crate::body::{Body, json_response};
use crate::error::{ErrorCode, GatewayError};
use crate::store::{AuditFilter, OperatorRow, Store};

/// What the management API needs.
pub struct Api {
    pub store: Store,
    pub secret: TokenSecret,
    /// Where change records go: the node's audit trail.
    pub audit: crate::audit::Audit,
}

/// An operator role. The permission matrix is [`Role::allows`]; docs/management.md prints it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, clap::ValueEnum)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    /// Reads configuration.
    Viewer,
    /// Reads and changes configuration.
    Editor,
    /// Everything, operators and credentials included.
    Admin,
    /// Reads request and change records; nothing else.
    Auditor,
}

/// What an endpoint requires.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Permission {
    ReadConfig,
    WriteConfig,
    ManageOperators,
    ReadAudit,
}

impl Permission {
    pub const ALL: [Permission; 4] = [
        Permission::ReadConfig,
        Permission::WriteConfig,
        Permission::ManageOperators,
        Permission::ReadAudit,
    ];
}

impl Role {
    pub const ALL: [Role; 4] = [Role::Viewer, Role::Editor, Role::Admin, Role::Auditor];

    pub fn as_str(self) -> &'static str {
        match self {
            Role::Viewer => "viewer",
            Role::Editor => "editor",
            Role::Admin => "admin",
            Role::Auditor => "auditor",
        }
    }

    pub fn parse(text: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|r| r.as_str() == text)
    }

    /// The permission matrix: the only place access is decided.
    pub fn allows(self, permission: Permission) -> bool {
        use Permission::*;
        match self {
            Role::Admin => true,
            Role::Editor => matches!(permission, ReadConfig | WriteConfig),
            Role::Viewer => permission == ReadConfig,
            Role::Auditor => permission == ReadAudit,
        }
    }
}

/// An authenticated operator.
#[derive(Debug)]
pub struct Operator {
    pub id: String,
    pub roles: Vec<Role>,
}

impl Operator {
    fn may(&self, permission: Permission) -> bool {
        self.roles.iter().any(|r| r.allows(permission))
    }
}

/// Answers a request under `/api/v1` from `source`. The body is already bounded.
pub async fn handle(api: Arc<Api>, source: std::net::IpAddr, req: Request<Body>) -> Response<Body> {
    let request_id = uuid::Uuid::new_v4().to_string();
    let (parts, body) = req.into_parts();
    // A change that could not be recorded is not made (`--audit-mode refuse`).
    if !matches!(parts.method, Method::GET | Method::HEAD) && !api.audit.accepting() {
        return GatewayError::new(
            ErrorCode::AuditUnavailable,
            "changes cannot be recorded right now; try again later",
        )
        .into_response(&request_id);
    }
    let mut operator = None;
    let context = Context {
        api: &api,
        request_id: &request_id,
        source,
        parts: &parts,
    };
    match route(&api, &parts, body, &mut operator).await {
        Ok((response, change)) => {
            if let Some(change) = change {
                let status = response.status().as_u16();
                api.audit.record_change(context.record(
                    operator.as_ref(),
                    change,
                    crate::audit::record::Outcome::Allowed,
                    None,
                    status,
                ));
            }
            response
        }
        Err(e) => {
            // Every refused attempt is a change record, whoever made it.
            if matches!(
                e.code,
                ErrorCode::Unauthenticated
                    | ErrorCode::InvalidCredential
                    | ErrorCode::PermissionDenied
            ) {
                let (action, resource) = action(&parts.method, parts.uri.path());
                let change = Changed {
                    action,
                    resource,
                    before: None,
                    after: None,
                };
                api.audit.record_change(context.record(
                    operator.as_ref(),
                    change,
                    crate::audit::record::Outcome::Denied,
                    Some(e.code),
                    e.code.status().as_u16(),
                ));
            }
            e.into_response(&request_id)
        }
    }
}

/// A change a management request made (or was refused).
struct Changed {
    action: String,
    resource: crate::audit::change::Resource,
    before: Option<Value>,
    after: Option<Value>,
}

/// What a change record says about the request that made it.
struct Context<'a> {
    api: &'a Api,
    request_id: &'a str,
    source: std::net::IpAddr,
    parts: &'a http::request::Parts,
}

impl Context<'_> {
    fn record(
        &self,
        operator: Option<&Operator>,
        change: Changed,
        outcome: crate::audit::record::Outcome,
        reason: Option<ErrorCode>,
        status: u16,
    ) -> crate::audit::change::ChangeRecord {
        use crate::audit::change::{Actor, ChangeRecord, SCHEMA_VERSION};
        ChangeRecord {
            schema: SCHEMA_VERSION,
            kind: "change".into(),
            request_id: self.request_id.to_owned(),
            timestamp: crate::audit::timestamp(time::OffsetDateTime::now_utc()),
            node: self.api.audit.node().to_owned(),
            channel: "api".into(),
            who: Actor {
                subject: operator.map(|o| o.id.clone()),
                kind: if operator.is_some() {
                    "service"
                } else {
                    "unknown"
                }
                .into(),
                roles: operator
                    .map(|o| o.roles.iter().map(|r| r.as_str().to_owned()).collect())
                    .unwrap_or_default(),
                source_ip: self.source.to_string(),
                user_agent: self
                    .parts
                    .headers
                    .get(http::header::USER_AGENT)
                    .and_then(|v| v.to_str().ok())
                    .map(|v| v.chars().take(256).collect()),
            },
            action: change.action,
            resource: change.resource,
            before: change.before,
            after: change.after,
            outcome,
            reason: reason.map(|c| c.as_str().to_owned()),
            status,
        }
    }
}

/// What a request to the management API asks to do, as a change record names it.
fn action(method: &Method, path: &str) -> (String, crate::audit::change::Resource) {
    use crate::audit::change::Resource;
    let verb = match *method {
        Method::GET | Method::HEAD => "read",
        Method::POST => "create",
        Method::PUT | Method::PATCH => "update",
        Method::DELETE => "delete",
        _ => "other",
    };
    // Bounded: an unauthenticated caller chooses the path.
    let clip = |s: &str| s.chars().take(128).collect::<String>();
    if let Some(target) = credentials::Target::parse(path) {
        let verb = if target.rotate { "rotate" } else { verb };
        let id = format!(
            "{}/{}/{}",
            target.client,
            target.profile,
            target.credential.unwrap_or("")
        );
        return (
            format!("credentials.{verb}"),
            Resource {
                kind: "credentials".into(),
                id: Some(clip(id.trim_end_matches('/'))),
            },
        );
    }
    let rest = path.strip_prefix("/api/v1/").unwrap_or("");
    let mut parts = rest.splitn(3, '/');
    let kind = clip(parts.next().unwrap_or(""));
    let id = parts.next().filter(|p| !p.is_empty()).map(clip);
    let resource = match (kind.as_str(), id.as_deref()) {
        ("audit", Some("requests")) => Resource {
            kind: "request_records".into(),
            id: None,
        },
        ("audit", Some("changes")) => Resource {
            kind: "change_records".into(),
            id: None,
        },
        ("audit", Some("verify")) => Resource {
            kind: "audit_chains".into(),
            id: None,
        },
        _ => Resource { kind, id },
    };
    (format!("{}.{verb}", resource.kind), resource)
}

/// The answer, and the change it made (recorded by the caller).
type Answer = (Response<Body>, Option<Changed>);

async fn route(
    api: &Api,
    parts: &http::request::Parts,
    body: Body,
    who: &mut Option<Operator>,
) -> Result<Answer, GatewayError> {
    let operator = who.insert(authenticate(api, &parts.headers).await?);
    let path = parts.uri.path();
    let method = &parts.method;
    let operator_id = path
        .strip_prefix("/api/v1/operators/")
        .filter(|id| !id.is_empty() && !id.contains('/'));
    let credential = credentials::Target::parse(path);
    // `/api/v1/collections[/{id}]` and `/api/v1/clients[/{id}]`.
    let object = path.strip_prefix("/api/v1/").and_then(|rest| {
        let (segment, id) = match rest.split_once('/') {
            Some((segment, id)) => (segment, Some(id)),
            None => (rest, None),
        };
        let kind = objects::ObjectKind::from_segment(segment)?;
        match id {
            Some(id) if id.is_empty() || id.contains('/') => None,
            id => Some((kind, id)),
        }
    });
    let (permission, allowed): (Option<Permission>, &[Method]) = match path {
        "/api/v1/whoami" => (None, &[Method::GET]),
        "/api/v1/audit/requests" | "/api/v1/audit/changes" | "/api/v1/audit/verify" => {
            (Some(Permission::ReadAudit), &[Method::GET])
        }
        "/api/v1/operators" => (
            Some(Permission::ManageOperators),
            &[Method::GET, Method::POST],
        ),
        _ if operator_id.is_some() => (Some(Permission::ManageOperators), &[Method::DELETE]),
        _ if credential.is_some() => (
            Some(Permission::ManageOperators),
            credential.as_ref().map_or(&[], |c| c.methods()),
        ),
        _ => match (object, method) {
            (Some((_, None)), _) => (Some(Permission::ReadConfig), &[Method::GET]),
            (Some((_, Some(_))), &Method::GET) => (
                Some(Permission::ReadConfig),
                &[Method::GET, Method::PUT, Method::DELETE],
            ),
            (Some((_, Some(_))), _) => (
                Some(Permission::WriteConfig),
                &[Method::GET, Method::PUT, Method::DELETE],
            ),
            (None, _) => {
                return Err(GatewayError::new(
                    ErrorCode::RouteNotFound,
                    "no such management endpoint",
                ));
            }
        },
    };
    if !allowed.contains(method) {
        let list = allowed
            .iter()
            .map(Method::as_str)
            .collect::<Vec<_>>()
            .join(", ");
        return Err(GatewayError::new(
            ErrorCode::MethodNotAllowed,
            format!("{method} is not allowed here; allowed: {list}"),
        )
        .with_header(
            http::header::ALLOW,
            HeaderValue::from_str(&list).expect("method names are header-safe"),
        ));
    }
    if let Some(permission) = permission
        && !operator.may(permission)
    {
        tracing::warn!(operator = %operator.id, ?permission, path, "management request refused");
        return Err(GatewayError::new(
            ErrorCode::PermissionDenied,
            format!(
                "operator '{}' has no role that allows this ({})",
                operator.id,
                serde_json::to_value(permission)
                    .ok()
                    .and_then(|v| v.as_str().map(str::to_owned))
                    .unwrap_or_default()
            ),
        ));
    }
    let query = parts.uri.query().unwrap_or("");
    let read = |response| Ok((response, None));
    match (path, operator_id) {
        ("/api/v1/whoami", _) => {
            let permissions: Vec<Permission> = Permission::ALL
                .into_iter()
                .filter(|p| operator.may(*p))
                .collect();
            read(json_response(
                StatusCode::OK,
                &json!({
                    "id": operator.id,
                    "kind": "service",
                    "roles": operator.roles.iter().map(|r| r.as_str()).collect::<Vec<_>>(),
                    "permissions": permissions,
                }),
            ))
        }
        ("/api/v1/audit/requests", _) => read(audit_records(api, "request", query).await?),
        ("/api/v1/audit/changes", _) => read(audit_records(api, "change", query).await?),
        ("/api/v1/audit/verify", _) => read(audit_verify(api, query).await?),
        ("/api/v1/operators", _) if method == Method::GET => {
            let list = api.store.operators().await.map_err(store_error)?;
            read(json_response(StatusCode::OK, &json!({ "operators": list })))
        }
        ("/api/v1/operators", _) => create_operator(api, body).await,
        (_, Some(id)) => revoke_operator(api, id).await,
        _ if credential.is_some() => {
            let target = credential.expect("matched");
            credentials::handle(api, target, body).await
        }
        _ => match object {
            Some((kind, None)) => objects::list(api, kind, query).await,
            Some((kind, Some(id))) => {
                let credentials = operator.may(Permission::ManageOperators);
                objects::one(api, kind, id, method, &parts.headers, body, credentials).await
            }
            None => unreachable!("every path was matched above"),
        },
    }
}

/// `POST /api/v1/operators`: a new operator; its token is in this answer only.
async fn create_operator(api: &Api, body: Body) -> Result<Answer, GatewayError> {
    #[derive(serde::Deserialize)]
    #[serde(deny_unknown_fields)]
    struct NewOperator {
        id: String,
        roles: Vec<String>,
        #[serde(default)]
        description: String,
        #[serde(default, with = "time::serde::rfc3339::option")]
        expires_at: Option<time::OffsetDateTime>,
    }
    let bytes = crate::body::collect_limited(body, 64 * 1024)
        .await
        .map_err(|e| bad_request(format!("the body cannot be read: {e}")))?;
    let new: NewOperator = serde_json::from_slice(&bytes).map_err(|e| {
        GatewayError::new(
            ErrorCode::InvalidBody,
            format!("the body is not a new operator: {e}"),
        )
    })?;
    let mut problems = Vec::new();
    let id_ok = (1..=128).contains(&new.id.len())
        && new.id.starts_with(|c: char| c.is_ascii_alphanumeric())
        && new
            .id
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'));
    if !id_ok {
        problems.push(
            "id: use 1-128 letters, digits, '.', '_' or '-', starting with a letter or digit"
                .to_owned(),
        );
    }
    if new.roles.is_empty() {
        problems.push("roles: at least one of viewer, editor, admin, auditor".to_owned());
    }
    let mut roles = Vec::new();
    for (i, r) in new.roles.iter().enumerate() {
        match Role::parse(r) {
            Some(role) => roles.push(role),
            None => problems.push(format!(
                "roles[{i}]: '{r}' is not viewer, editor, admin or auditor"
            )),
        }
    }
    if new
        .expires_at
        .is_some_and(|t| t <= time::OffsetDateTime::now_utc())
    {
        problems.push("expires_at: must be in the future".to_owned());
    }
    if !problems.is_empty() {
        return Err(GatewayError::new(
            ErrorCode::InvalidBody,
            problems.join("; "),
        ));
    }
    let existing = api.store.operators().await.map_err(store_error)?;
    if existing.iter().any(|o| o.id == new.id) {
        return Err(GatewayError::new(
            ErrorCode::Conflict,
            format!("operator '{}' exists", new.id),
        ));
    }
    let (row, token) = issue(
        &api.secret,
        &new.id,
        &roles,
        &new.description,
        new.expires_at,
    );
    if let Err(e) = api.store.insert_operator(&row).await {
        // Two creations of one id at once: the other won.
        let exists = api.store.operators().await.map_err(store_error)?;
        return Err(if exists.iter().any(|o| o.id == row.id) {
            GatewayError::new(ErrorCode::Conflict, format!("operator '{}' exists", row.id))
        } else {
            store_error(e)
        });
    }
    let after = serde_json::to_value(&row).unwrap_or(Value::Null);
    let mut shown = after.clone();
    shown["token"] = token.into();
    Ok((
        json_response(StatusCode::CREATED, &shown),
        Some(Changed {
            action: "operators.create".into(),
            resource: crate::audit::change::Resource {
                kind: "operators".into(),
                id: Some(row.id.clone()),
            },
            before: None,
            after: Some(after),
        }),
    ))
}

/// `DELETE /api/v1/operators/{id}`: revokes the operator's token, on every node at once.
async fn revoke_operator(api: &Api, id: &str) -> Result<Answer, GatewayError> {
    let operators = api.store.operators().await.map_err(store_error)?;
    let Some(before) = operators.into_iter().find(|o| o.id == id) else {
        return Err(GatewayError::new(
            ErrorCode::RouteNotFound,
            format!("no operator '{id}'"),
        ));
    };
    let now = crate::audit::timestamp(time::OffsetDateTime::now_utc());
    api.store
        .revoke_operator(id, &now)
        .await
        .map_err(store_error)?;
    let mut after = before.clone();
    after.revoked_at.get_or_insert(now);
    // Revoking a revoked operator changes nothing, and records nothing.
    let changed = before.revoked_at.is_none();
    Ok((
        json_response(StatusCode::OK, &json!(after)),
        changed.then(|| Changed {
            action: "operators.delete".into(),
            resource: crate::audit::change::Resource {
                kind: "operators".into(),
                id: Some(id.to_owned()),
            },
            before: Some(json!(before)),
            after: Some(json!(after)),
        }),
    ))
}

/// The operator a bearer token identifies: known, not revoked, not expired.
async fn authenticate(api: &Api, headers: &http::HeaderMap) -> Result<Operator, GatewayError> {
    let Some(value) = headers.get(http::header::AUTHORIZATION) else {
        return Err(GatewayError::new(
            ErrorCode::Unauthenticated,
            "the management API requires an operator token: send Authorization: Bearer pco_…",
        )
        .with_header(
            WWW_AUTHENTICATE,
            HeaderValue::from_static(r#"Bearer realm="portcullis-management""#),
        ));
    };
    let invalid = || {
        GatewayError::new(
            ErrorCode::InvalidCredential,
            "the operator token is not valid",
        )
        .with_header(
            WWW_AUTHENTICATE,
            HeaderValue::from_static(
                r#"Bearer realm="portcullis-management", error="invalid_token""#,
            ),
        )
    };
    let token = value
        .to_str()
        .ok()
        .and_then(|v| v.split_once(' '))
        .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("bearer"))
        .map(|(_, t)| t.trim())
        .ok_or_else(invalid)?;
    if !token::is_well_formed_with(token, token::OPERATOR_PREFIX) {
        return Err(invalid());
    }
    let row = api
        .store
        .operator_by_token(&api.secret.hash_hex(token))
        .await
        .map_err(|e| {
            tracing::error!(error = %e, "cannot read operators");
            GatewayError::new(
                ErrorCode::PlatformDegraded,
                "the store cannot be reached to check the operator; retry later",
            )
        })?
        .ok_or_else(invalid)?;
    let now = crate::audit::timestamp(time::OffsetDateTime::now_utc());
    if row.revoked_at.is_some() || row.expires_at.as_deref().is_some_and(|t| t <= now.as_str()) {
        return Err(invalid());
    }
    Ok(Operator {
        roles: row.roles.iter().filter_map(|r| Role::parse(r)).collect(),
        id: row.id,
    })
}

/// Query parameters as pairs (percent-decoded).
fn params(query: &str) -> Vec<(String, String)> {
    query
        .split('&')
        .filter(|p| !p.is_empty())
        .map(|pair| {
            let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
            let decode = |s: &str| {
                percent_encoding::percent_decode_str(&s.replace('+', " "))
                    .decode_utf8_lossy()
                    .into_owned()
            };
            (decode(k), decode(v))
        })
        .collect()
}

fn bad_request(message: impl Into<std::borrow::Cow<'static, str>>) -> GatewayError {
    GatewayError::new(ErrorCode::BadRequest, message)
}

/// `GET /api/v1/audit/requests` and `…/changes`: request or change records, oldest first,
/// filtered like `portcullis audit query`, a page at a time.
async fn audit_records(api: &Api, kind: &str, query: &str) -> Result<Response<Body>, GatewayError> {
    let mut filter = AuditFilter {
        kind: Some(kind.to_owned()),
        limit: 100,
        ..Default::default()
    };
    let mut ndjson = false;
    for (key, value) in params(query) {
        let time = |v: &str| -> Result<String, GatewayError> {
            time::OffsetDateTime::parse(v, &time::format_description::well_known::Rfc3339)
                .map(crate::audit::timestamp)
                .map_err(|_| bad_request(format!("{key} '{v}' is not an RFC 3339 time")))
        };
        match key.as_str() {
            "client" => filter.client = Some(value),
            "profile" => filter.profile = Some(value),
            "partner" => filter.partner = Some(value),
            "collection" => filter.collection = Some(value),
            "operation" => filter.operation = Some(value),
            "channel" => filter.channel = Some(value),
            "outcome" => filter.outcome = Some(value),
            "reason" => filter.reason = Some(value),
            "status" => {
                filter.status = Some(
                    value
                        .parse()
                        .map_err(|_| bad_request(format!("status '{value}' is not a number")))?,
                );
            }
            "since" => filter.since = Some(time(&value)?),
            "until" => filter.until = Some(time(&value)?),
            "limit" => {
                filter.limit = value
                    .parse()
                    .ok()
                    .filter(|n| (1..=1000).contains(n))
                    .ok_or_else(|| bad_request("limit is a number from 1 to 1000"))?;
            }
            "cursor" => {
                filter.after = Some(
                    decode_cursor(&value)
                        .ok_or_else(|| bad_request("cursor is not one this API returned"))?,
                );
            }
            "format" => match value.as_str() {
                "json" => ndjson = false,
                "ndjson" => ndjson = true,
                _ => return Err(bad_request("format is json or ndjson")),
            },
            other => return Err(bad_request(format!("unknown parameter '{other}'"))),
        }
    }
    let rows = api.store.audit_query(&filter).await.map_err(store_error)?;
    let next = (rows.len() == filter.limit as usize)
        .then(|| rows.last())
        .flatten()
        .map(|last| encode_cursor(&last.recorded_at, &last.node, last.seq));
    if ndjson {
        // For export: each record exactly as stored (and hashed), one per line; the next
        // page's cursor in a header.
        let mut text = String::new();
        for row in &rows {
            text.push_str(&row.body);
            text.push('\n');
        }
        let mut response = Response::new(crate::body::full(text));
        response.headers_mut().insert(
            http::header::CONTENT_TYPE,
            HeaderValue::from_static("application/x-ndjson"),
        );
        if let Some(cursor) = next.and_then(|c| HeaderValue::from_str(&c).ok()) {
            response.headers_mut().insert("x-next-cursor", cursor);
        }
        return Ok(response);
    }
    let records: Vec<Value> = rows
        .iter()
        .map(|r| serde_json::from_str(&r.body).unwrap_or(Value::Null))
        .collect();
    let mut body = json!({ "records": records });
    if let Some(cursor) = next {
        body["next_cursor"] = cursor.into();
    }
    Ok(json_response(StatusCode::OK, &body))
}

/// `GET /api/v1/audit/verify`: each node's hash chain (or one node's, in a range), checked.
async fn audit_verify(api: &Api, query: &str) -> Result<Response<Body>, GatewayError> {
    let (mut node, mut from, mut to) = (None, 1, u64::MAX);
    for (key, value) in params(query) {
        let number = |v: &str| {
            v.parse::<u64>()
                .map_err(|_| bad_request(format!("{key} '{v}' is not a number")))
        };
        match key.as_str() {
            "node" => node = Some(value),
            "from" => from = number(&value)?,
            "to" => to = number(&value)?,
            other => return Err(bad_request(format!("unknown parameter '{other}'"))),
        }
    }
    let known = api.store.audit_nodes().await.map_err(store_error)?;
    let nodes = match node {
        Some(n) if !known.contains(&n) => {
            return Err(GatewayError::new(
                ErrorCode::RouteNotFound,
                format!("node '{n}' has no records"),
            ));
        }
        Some(n) => vec![n],
        None => known,
    };
    let mut results = Vec::new();
    let mut intact = true;
    for node in nodes {
        let checked = crate::audit_cli::verify(&api.store, &node, from, to)
            .await
            .map_err(|e| {
                tracing::error!(error = %e, "cannot read the audit chain");
                GatewayError::new(ErrorCode::PlatformDegraded, "the store cannot be read")
            })?;
        results.push(match checked {
            Ok((first, last, count)) => {
                json!({"node": node, "intact": true, "first": first, "last": last, "records": count})
            }
            Err(broken) => {
                intact = false;
                json!({"node": node, "intact": false, "broken": broken})
            }
        });
    }
    Ok(json_response(
        StatusCode::OK,
        &json!({"intact": intact, "nodes": results}),
    ))
}

fn store_error(e: crate::store::StoreError) -> GatewayError {
    tracing::error!(error = %e, "management request failed in the store");
    GatewayError::new(
        ErrorCode::PlatformDegraded,
        "the store cannot be read; retry later",
    )
}

fn encode_cursor(at: &str, node: &str, seq: u64) -> String {
    use base64::Engine as _;
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(format!("{at},{node},{seq}"))
}

fn decode_cursor(cursor: &str) -> Option<(String, String, u64)> {
    use base64::Engine as _;
    let text = String::from_utf8(
        base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(cursor)
            .ok()?,
    )
    .ok()?;
    // A timestamp has no comma; a node id may.
    let (at, rest) = text.split_once(',')?;
    let (node, seq) = rest.rsplit_once(',')?;
    Some((at.to_owned(), node.to_owned(), seq.parse().ok()?))
}

/// Issues an operator token: the row to store and the token, shown once.
pub fn issue(
    secret: &TokenSecret,
    id: &str,
    roles: &[Role],
    description: &str,
    expires_at: Option<time::OffsetDateTime>,
) -> (OperatorRow, String) {
    let token = token::generate_with(token::OPERATOR_PREFIX);
    let row = OperatorRow {
        id: id.to_owned(),
        roles: roles.iter().map(|r| r.as_str().to_owned()).collect(),
        token_hash: secret.hash_hex(&token),
        description: description.to_owned(),
        created_at: crate::audit::timestamp(time::OffsetDateTime::now_utc()),
        expires_at: expires_at.map(crate::audit::timestamp),
        revoked_at: None,
    };
    (row, token)
}

/// On the first start of a store without operators: an admin operator `bootstrap-admin`
/// whose token is `PORTCULLIS_BOOTSTRAP_ADMIN_TOKEN` when set (a `pco_` token), else a new one
/// returned to be printed once. Nothing when operators exist.
pub async fn bootstrap(
    store: &Store,
    secret: &TokenSecret,
    from_env: Option<&str>,
) -> anyhow::Result<Option<String>> {
    if !store.operators().await?.is_empty() {
        return Ok(None);
    }
    let (mut row, generated) = issue(
        secret,
        "bootstrap-admin",
        &[Role::Admin],
        "created on the first start of an empty store",
        None,
    );
    let shown = match from_env {
        Some(token) => {
            anyhow::ensure!(
                token::is_well_formed_with(token, token::OPERATOR_PREFIX),
                "PORTCULLIS_BOOTSTRAP_ADMIN_TOKEN is not an operator token (make one with `portcullis operator token`)"
            );
            row.token_hash = secret.hash_hex(token);
            None
        }
        None => Some(generated),
    };
    if let Err(e) = store.insert_operator(&row).await {
        // Nodes of a cluster starting together on an empty store: one of them wins.
        if !store.operators().await?.is_empty() {
            return Ok(None);
        }
        return Err(e.into());
    }
    Ok(shown)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_role_matrix() {
        use Permission::*;
        let expected = [
            (Role::Viewer, vec![ReadConfig]),
            (Role::Editor, vec![ReadConfig, WriteConfig]),
            (Role::Admin, Permission::ALL.to_vec()),
            (Role::Auditor, vec![ReadAudit]),
        ];
        for (role, allowed) in expected {
            for p in Permission::ALL {
                assert_eq!(role.allows(p), allowed.contains(&p), "{role:?} {p:?}");
            }
        }
    }

    #[test]
    fn cursors_round_trip_and_junk_is_refused() {
        let c = encode_cursor("2026-11-23T01:00:00.000000Z", "node,a", 42);
        assert_eq!(
            decode_cursor(&c),
            Some(("2026-11-23T01:00:00.000000Z".into(), "node,a".into(), 42))
        );
        assert_eq!(decode_cursor("!!"), None);
        use base64::Engine as _;
        let junk = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode("no commas");
        assert_eq!(decode_cursor(&junk), None);
    }
}
