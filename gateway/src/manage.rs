//! The management API, `/api/v1` on the admin listener: operators act under their own identity
//! and role. This release has operator identity (service tokens, and the bootstrap admin token
//! of an empty store), the role matrix, and the audit endpoints; the configuration objects
//! follow.
//!
//! Every request authenticates: `Authorization: Bearer pco_…`, looked up by its keyed hash in
//! the store on each request (so a revocation counts on every node at once), then checked
//! against [`Role::allows`].

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

/// Answers a request under `/api/v1` from `source`.
pub async fn handle<B>(api: Arc<Api>, source: std::net::IpAddr, req: Request<B>) -> Response<Body> {
    let request_id = uuid::Uuid::new_v4().to_string();
    let mut operator = None;
    match route(&api, &req, &mut operator).await {
        Ok(response) => response,
        Err(e) => {
            // Every refused attempt is a change record, whoever made it.
            if matches!(
                e.code,
                ErrorCode::Unauthenticated
                    | ErrorCode::InvalidCredential
                    | ErrorCode::PermissionDenied
            ) {
                api.audit.record_change(refusal_record(
                    &api.audit,
                    &request_id,
                    source,
                    &req,
                    operator.as_ref(),
                    &e,
                ));
            }
            e.into_response(&request_id)
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
    let rest = path.trim_start_matches("/api/v1/");
    let mut parts = rest.splitn(3, '/');
    let kind = parts.next().unwrap_or("").to_owned();
    let id = parts.next().filter(|p| !p.is_empty()).map(str::to_owned);
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

fn refusal_record<B>(
    audit: &crate::audit::Audit,
    request_id: &str,
    source: std::net::IpAddr,
    req: &Request<B>,
    operator: Option<&Operator>,
    e: &GatewayError,
) -> crate::audit::change::ChangeRecord {
    use crate::audit::change::{Actor, ChangeRecord, SCHEMA_VERSION};
    let (action, resource) = action(req.method(), req.uri().path());
    ChangeRecord {
        schema: SCHEMA_VERSION,
        kind: "change".into(),
        request_id: request_id.to_owned(),
        timestamp: crate::audit::timestamp(time::OffsetDateTime::now_utc()),
        node: audit.node().to_owned(),
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
            source_ip: source.to_string(),
            user_agent: req
                .headers()
                .get(http::header::USER_AGENT)
                .and_then(|v| v.to_str().ok())
                .map(|v| v.chars().take(256).collect()),
        },
        action,
        resource,
        before: None,
        after: None,
        outcome: crate::audit::record::Outcome::Denied,
        reason: Some(e.code.as_str().to_owned()),
        status: e.code.status().as_u16(),
    }
}

async fn route<B>(
    api: &Api,
    req: &Request<B>,
    who: &mut Option<Operator>,
) -> Result<Response<Body>, GatewayError> {
    let operator = who.insert(authenticate(api, req.headers()).await?);
    let path = req.uri().path();
    let (permission, get_only) = match path {
        "/api/v1/whoami" => (None, true),
        "/api/v1/audit/requests" | "/api/v1/audit/changes" | "/api/v1/audit/verify" => {
            (Some(Permission::ReadAudit), true)
        }
        _ => {
            return Err(GatewayError::new(
                ErrorCode::RouteNotFound,
                "no such management endpoint",
            ));
        }
    };
    if get_only && req.method() != Method::GET {
        return Err(GatewayError::new(ErrorCode::MethodNotAllowed, "use GET")
            .with_header(http::header::ALLOW, HeaderValue::from_static("GET")));
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
    let query = req.uri().query().unwrap_or("");
    match path {
        "/api/v1/whoami" => {
            let permissions: Vec<Permission> = Permission::ALL
                .into_iter()
                .filter(|p| operator.may(*p))
                .collect();
            Ok(json_response(
                StatusCode::OK,
                &json!({
                    "id": operator.id,
                    "kind": "service",
                    "roles": operator.roles.iter().map(|r| r.as_str()).collect::<Vec<_>>(),
                    "permissions": permissions,
                }),
            ))
        }
        "/api/v1/audit/requests" => audit_records(api, "request", query).await,
        "/api/v1/audit/changes" => audit_records(api, "change", query).await,
        _ => audit_verify(api, query).await,
    }
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
