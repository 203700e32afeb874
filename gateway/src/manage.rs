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
pub mod endpoints;
mod mcp;
pub mod objects;
pub mod parts;
mod quotas;

pub use self::mcp::METADATA_PATH as MCP_METADATA_PATH;

use std::sync::Arc;

use http::header::{HeaderValue, WWW_AUTHENTICATE};
use http::{Method, Request, Response, StatusCode};
use serde_json::{Value, json};

use self::endpoints::Endpoint;
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
    /// The limiter's quota service, with a `manage` token (quota endpoints answer 503
    /// without it).
    pub quotas: Option<crate::quota_cli::Client>,
    /// Signs Management MCP session ids.
    pub sessions: crate::mcp::session::SessionKeys,
    pub session_ttl: std::time::Duration,
    /// Operators identified by the organisation's identity provider, when configured.
    pub oidc: Option<OperatorOidc>,
    /// Browser origins allowed to call the Management MCP (exact `scheme://host[:port]`);
    /// requests without `Origin` are not affected.
    pub allowed_origins: Vec<String>,
}

/// Operators identified by OIDC access tokens of the organisation's identity provider: the
/// token's subject is the operator, a claim (e.g. `roles` or `groups`) gives the roles.
pub struct OperatorOidc {
    pub provider: crate::snapshot::CompiledProvider,
    pub keys: crate::auth::jwt::KeySets,
    /// The claim listing the operator's roles or groups: an array of strings, or a string of
    /// space-separated values.
    pub roles_claim: String,
    /// Claim value → role. Without entries, a value naming a role is that role.
    pub role_map: Vec<(String, Role)>,
}

impl OperatorOidc {
    /// The roles a token's claims give.
    fn roles(&self, claims: &serde_json::Map<String, Value>) -> Vec<Role> {
        let values: Vec<&str> = match claims.get(&self.roles_claim) {
            Some(Value::Array(items)) => items.iter().filter_map(Value::as_str).collect(),
            Some(Value::String(text)) => text.split_whitespace().collect(),
            Some(_) | None => Vec::new(),
        };
        let mut roles: Vec<Role> = values
            .into_iter()
            .flat_map(|v| {
                if self.role_map.is_empty() {
                    Role::parse(v).into_iter().collect::<Vec<_>>()
                } else {
                    self.role_map
                        .iter()
                        .filter(|(value, _)| value == v)
                        .map(|(_, role)| *role)
                        .collect()
                }
            })
            .collect();
        roles.sort_by_key(|r| r.as_str());
        roles.dedup();
        roles
    }
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
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, schemars::JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum Permission {
    ReadConfig,
    WriteConfig,
    ManageOperators,
    ReadAudit,
}

impl Permission {
    pub fn as_str(self) -> &'static str {
        match self {
            Permission::ReadConfig => "read_config",
            Permission::WriteConfig => "write_config",
            Permission::ManageOperators => "manage_operators",
            Permission::ReadAudit => "read_audit",
        }
    }

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
    /// `service` (an operator token) or `user` (an OIDC token).
    pub kind: &'static str,
    pub roles: Vec<Role>,
}

impl Operator {
    pub(crate) fn may(&self, permission: Permission) -> bool {
        self.roles.iter().any(|r| r.allows(permission))
    }
}

/// Answers a request under `/api/v1` from `source`. The body is already bounded.
pub async fn handle(api: Arc<Api>, source: std::net::IpAddr, req: Request<Body>) -> Response<Body> {
    let request_id = uuid::Uuid::new_v4().to_string();
    let (parts, body) = req.into_parts();
    let path = parts.uri.path();
    if path == "/api/v1/openapi.json" {
        if !matches!(parts.method, Method::GET | Method::HEAD) {
            return GatewayError::new(
                ErrorCode::MethodNotAllowed,
                format!("{} is not allowed here; allowed: GET, HEAD", parts.method),
            )
            .with_header(http::header::ALLOW, HeaderValue::from_static("GET, HEAD"))
            .into_response(&request_id);
        }
        // What the API offers is no secret; what a caller may do is decided per call.
        static DOCUMENT: std::sync::LazyLock<bytes::Bytes> = std::sync::LazyLock::new(|| {
            serde_json::to_vec(&endpoints::openapi())
                .expect("the document serialises")
                .into()
        });
        let mut response = Response::new(crate::body::full(DOCUMENT.clone()));
        response.headers_mut().insert(
            http::header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        );
        return response;
    }
    if path == mcp::METADATA_PATH {
        return mcp::metadata(&api, &parts.headers);
    }
    if path == mcp::PATH {
        return mcp::handle(api, source, &request_id, parts, body).await;
    }
    let found = endpoints::find(&parts.method, path);
    let context = Context {
        api: &api,
        request_id: &request_id,
        source,
        headers: &parts.headers,
        channel: channel(&parts.headers),
    };
    // A change that could not be recorded is not made (`--audit-mode refuse`).
    if !matches!(parts.method, Method::GET | Method::HEAD) && !api.audit.accepting() {
        return GatewayError::new(
            ErrorCode::AuditUnavailable,
            "changes cannot be recorded right now; try again later",
        )
        .into_response(&request_id);
    }
    let operator = match authenticate(&api, &parts.headers).await {
        Ok(operator) => operator,
        Err(e) => {
            context.refused(None, target(&found, path), e.code);
            return e.into_response(&request_id);
        }
    };
    let (endpoint, params) = match found {
        endpoints::Found::Endpoint(endpoint, params) => (endpoint, params),
        endpoints::Found::OtherMethods(mut allowed) => {
            if allowed.contains(&Method::GET) {
                allowed.push(Method::HEAD);
            }
            let list = allowed
                .iter()
                .map(Method::as_str)
                .collect::<Vec<_>>()
                .join(", ");
            return GatewayError::new(
                ErrorCode::MethodNotAllowed,
                format!("{} is not allowed here; allowed: {list}", parts.method),
            )
            .with_header(
                http::header::ALLOW,
                HeaderValue::from_str(&list).expect("method names are header-safe"),
            )
            .into_response(&request_id);
        }
        endpoints::Found::NotFound => {
            return GatewayError::new(ErrorCode::RouteNotFound, "no such management endpoint")
                .into_response(&request_id);
        }
    };
    if let Err(e) = permitted(&operator, endpoint) {
        context.refused(Some(&operator), refused_change(endpoint, &params), e.code);
        return e.into_response(&request_id);
    }
    let mut query = params_of(parts.uri.query().unwrap_or(""));
    let dry_run = match take_dry_run(&mut query, endpoint) {
        Ok(dry_run) => dry_run,
        Err(e) => return e.into_response(&request_id),
    };
    let body = match crate::body::collect_limited(body, MAX_BODY).await {
        Ok(bytes) => bytes,
        Err(e) => {
            return GatewayError::new(
                ErrorCode::PayloadTooLarge,
                format!("the body cannot be read: {e}"),
            )
            .into_response(&request_id);
        }
    };
    let call = Call {
        params: params.clone(),
        query,
        if_match: if_match(&parts.headers),
        body,
        dry_run,
    };
    match execute(&api, &operator, endpoint, call).await {
        Ok((response, change)) => {
            if let Some(change) = change {
                let status = response.status().as_u16();
                context.allowed(&operator, change, status);
            }
            response
        }
        Err(e) => {
            // A refusal the handler found (an editor's credentials in a client) is recorded
            // like the router's.
            if refusal(e.code) {
                context.refused(Some(&operator), refused_change(endpoint, &params), e.code);
            }
            e.into_response(&request_id)
        }
    }
}

/// Whether an error is a refusal of the caller, which is always recorded.
pub(crate) fn refusal(code: ErrorCode) -> bool {
    matches!(
        code,
        ErrorCode::Unauthenticated
            | ErrorCode::InvalidCredential
            | ErrorCode::PermissionDenied
            | ErrorCode::OriginNotAllowed
    )
}

/// The largest request body the management API reads.
pub(crate) const MAX_BODY: usize = 1024 * 1024;

/// One call of an endpoint, from REST or MCP.
pub(crate) struct Call {
    /// The path's parameters, in the endpoint's order.
    pub params: Vec<String>,
    pub query: Vec<(String, String)>,
    /// `If-Match`'s tags.
    pub if_match: Option<Vec<String>>,
    pub body: bytes::Bytes,
    /// Validate and answer the change, without making it.
    pub dry_run: bool,
}

/// The channel a REST call says it came through: `cli` and `console` name themselves with
/// `X-Portcullis-Channel`; anything else is `api`.
fn channel(headers: &http::HeaderMap) -> &'static str {
    match headers
        .get("x-portcullis-channel")
        .and_then(|v| v.to_str().ok())
    {
        Some("cli") => "cli",
        Some("console") => "console",
        Some(_) | None => "api",
    }
}

fn if_match(headers: &http::HeaderMap) -> Option<Vec<String>> {
    headers.get(http::header::IF_MATCH).map(|v| {
        v.to_str()
            .unwrap_or("")
            .split(',')
            .map(|t| t.trim().to_owned())
            .collect()
    })
}

/// `dry_run=true|false`, taken out of the query; only mutating endpoints take it.
fn take_dry_run(
    query: &mut Vec<(String, String)>,
    endpoint: &Endpoint,
) -> Result<bool, GatewayError> {
    let Some(at) = query.iter().position(|(k, _)| k == "dry_run") else {
        return Ok(false);
    };
    let (_, value) = query.remove(at);
    if !endpoint.mutates() {
        return Err(bad_request("dry_run is for calls that change something"));
    }
    match value.as_str() {
        "true" | "" => Ok(true),
        "false" => Ok(false),
        _ => Err(bad_request("dry_run is true or false")),
    }
}

/// Whether `operator` may call `endpoint`: 403 `permission_denied` if not.
pub(crate) fn permitted(operator: &Operator, endpoint: &Endpoint) -> Result<(), GatewayError> {
    match endpoint.permission {
        Some(permission) if !operator.may(permission) => {
            tracing::warn!(operator = %operator.id, ?permission, endpoint = %endpoint.name, "management request refused");
            Err(GatewayError::new(
                ErrorCode::PermissionDenied,
                format!(
                    "operator '{}' has no role that allows this ({})",
                    operator.id,
                    permission.as_str()
                ),
            ))
        }
        Some(_) | None => Ok(()),
    }
}

/// What a refused call of `endpoint` is recorded as.
pub(crate) fn refused_change(endpoint: &Endpoint, params: &[String]) -> Changed {
    let kind = endpoint
        .change
        .split_once('.')
        .map_or("", |(kind, _)| kind)
        .to_owned();
    let id = (!params.is_empty()).then(|| clip(&params.join("/")));
    Changed {
        action: endpoint.change.clone(),
        resource: crate::audit::change::Resource { kind, id },
        before: None,
        after: None,
    }
}

/// What an unauthenticated request is recorded as: its endpoint's change, or the path.
fn target(found: &endpoints::Found, path: &str) -> Changed {
    match found {
        endpoints::Found::Endpoint(endpoint, params) => refused_change(endpoint, params),
        endpoints::Found::OtherMethods(_) | endpoints::Found::NotFound => Changed {
            action: "unknown".into(),
            resource: crate::audit::change::Resource {
                kind: "unknown".into(),
                id: Some(clip(path)),
            },
            before: None,
            after: None,
        },
    }
}

/// Bounded: an unauthenticated caller chooses the path.
fn clip(s: &str) -> String {
    s.chars().take(128).collect()
}

/// Runs `endpoint` for `operator` (already permitted). The one implementation behind the
/// REST endpoint and the MCP tool.
pub(crate) async fn execute(
    api: &Api,
    operator: &Operator,
    endpoint: &Endpoint,
    call: Call,
) -> Result<Answer, GatewayError> {
    use endpoints::Action::*;
    let p = |i: usize| call.params.get(i).map(String::as_str).unwrap_or("");
    if !endpoint.mutates() && !call.body.iter().all(u8::is_ascii_whitespace) {
        return Err(bad_request("this endpoint takes no body"));
    }
    if endpoint.query.is_empty()
        && let Some((key, _)) = call.query.first()
    {
        return Err(bad_request(format!("unknown parameter '{key}'")));
    }
    match endpoint.action {
        Whoami => {
            let permissions: Vec<Permission> = Permission::ALL
                .into_iter()
                .filter(|p| operator.may(*p))
                .collect();
            Ok((
                json_response(
                    StatusCode::OK,
                    &self::Whoami {
                        id: operator.id.clone(),
                        kind: operator.kind.to_owned(),
                        roles: operator
                            .roles
                            .iter()
                            .map(|r| r.as_str().to_owned())
                            .collect(),
                        permissions,
                    },
                ),
                None,
            ))
        }
        List(kind) => objects::list(api, kind, &call.query).await,
        Get(kind) => objects::get(api, kind, p(0)).await,
        Put(kind) => {
            let credentials = operator.may(Permission::ManageOperators);
            objects::put(api, kind, p(0), &call, credentials).await
        }
        Delete(kind) => objects::delete(api, kind, p(0), &call).await,
        GetPart(kind) => parts::get(api, kind, p(0), p(1)).await,
        PutPart(kind) => {
            let credentials = operator.may(Permission::ManageOperators);
            parts::put(api, kind, p(0), p(1), &call, credentials).await
        }
        DeletePart(kind) => parts::delete(api, kind, p(0), p(1), &call).await,
        SetStatus(status) => objects::set_status(api, p(0), status, &call).await,
        IssueCredential | RotateCredential | RevokeCredential => {
            credentials::handle(api, endpoint.action, &call).await
        }
        ListOperators => {
            let operators = api.store.operators().await.map_err(store_error)?;
            Ok((
                json_response(StatusCode::OK, &OperatorList { operators }),
                None,
            ))
        }
        CreateOperator => create_operator(api, &call).await,
        UpdateOperator => update_operator(api, p(0), &call).await,
        RotateOperator => rotate_operator(api, p(0), call.dry_run).await,
        RevokeOperator => revoke_operator(api, p(0), call.dry_run).await,
        RequestRecords => Ok((audit_records(api, "request", &call.query).await?, None)),
        ChangeRecords => Ok((audit_records(api, "change", &call.query).await?, None)),
        VerifyAudit => Ok((audit_verify(api, &call.query).await?, None)),
        MetricsSummary => Ok((summary(api, &call.query).await?, None)),
        Quota(action) => quotas::handle(api, action, &call).await,
    }
}

/// The answer to a dry run: the change, not made, and nothing to record.
pub(crate) fn dry_run(change: Changed) -> Answer {
    (
        json_response(
            StatusCode::OK,
            &endpoints::DryRun {
                dry_run: true,
                change: endpoints::ChangePreview {
                    action: change.action,
                    resource: change.resource,
                    before: change.before,
                    after: change.after,
                },
            },
        ),
        None,
    )
}

/// `GET /api/v1/whoami`.
#[derive(serde::Serialize, schemars::JsonSchema)]
pub(crate) struct Whoami {
    id: String,
    /// `service` (an operator token) or `user` (an OIDC token).
    kind: String,
    roles: Vec<String>,
    permissions: Vec<Permission>,
}

/// `GET /api/v1/operators`.
#[derive(serde::Serialize, schemars::JsonSchema)]
pub(crate) struct OperatorList {
    operators: Vec<OperatorRow>,
}

/// The body of `POST /api/v1/operators`.
#[derive(serde::Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct NewOperator {
    /// 1-128 letters, digits, `.`, `_` or `-`, starting with a letter or digit.
    id: String,
    /// At least one of `viewer`, `editor`, `admin`, `auditor`.
    roles: Vec<String>,
    #[serde(default)]
    description: String,
    /// When its token stops working (RFC 3339, in the future).
    #[serde(default, with = "time::serde::rfc3339::option")]
    #[schemars(with = "Option<crate::model::Rfc3339>")]
    expires_at: Option<time::OffsetDateTime>,
}

/// The answer of `POST /api/v1/operators`: the operator and its token, shown this once.
#[derive(serde::Serialize, schemars::JsonSchema)]
pub(crate) struct CreatedOperator {
    #[serde(flatten)]
    operator: OperatorRow,
    token: String,
}

/// A change a management request made (or was refused).
pub(crate) struct Changed {
    pub action: String,
    pub resource: crate::audit::change::Resource,
    pub before: Option<Value>,
    pub after: Option<Value>,
}

/// What a change record says about the request that made it.
pub(crate) struct Context<'a> {
    pub api: &'a Api,
    pub request_id: &'a str,
    pub source: std::net::IpAddr,
    pub headers: &'a http::HeaderMap,
    /// `api`, `mcp`, `cli` or `console`.
    pub channel: &'static str,
}

impl Context<'_> {
    /// Records a change `operator` made.
    pub(crate) fn allowed(&self, operator: &Operator, change: Changed, status: u16) {
        let record = self.record(
            Some(operator),
            change,
            crate::audit::record::Outcome::Allowed,
            None,
            status,
        );
        self.api.audit.record_change(record);
    }

    /// Records a refused attempt: every one is recorded, whoever made it.
    pub(crate) fn refused(&self, operator: Option<&Operator>, change: Changed, code: ErrorCode) {
        let record = self.record(
            operator,
            change,
            crate::audit::record::Outcome::Denied,
            Some(code),
            code.status().as_u16(),
        );
        self.api.audit.record_change(record);
    }

    fn record(
        &self,
        operator: Option<&Operator>,
        change: Changed,
        outcome: crate::audit::record::Outcome,
        reason: Option<ErrorCode>,
        status: u16,
    ) -> crate::audit::change::ChangeRecord {
        let who = crate::audit::change::Actor {
            subject: operator.map(|o| o.id.clone()),
            kind: operator.map_or("unknown", |o| o.kind).into(),
            roles: operator
                .map(|o| o.roles.iter().map(|r| r.as_str().to_owned()).collect())
                .unwrap_or_default(),
            source_ip: self.source.to_string(),
            user_agent: self
                .headers
                .get(http::header::USER_AGENT)
                .and_then(|v| v.to_str().ok())
                .map(|v| v.chars().take(256).collect()),
        };
        change_record(
            self.api.audit.node(),
            self.request_id.to_owned(),
            self.channel,
            who,
            change,
            outcome,
            reason,
            status,
        )
    }
}

/// A change record, completed now.
#[allow(clippy::too_many_arguments)]
fn change_record(
    node: &str,
    request_id: String,
    channel: &str,
    who: crate::audit::change::Actor,
    change: Changed,
    outcome: crate::audit::record::Outcome,
    reason: Option<ErrorCode>,
    status: u16,
) -> crate::audit::change::ChangeRecord {
    crate::audit::change::ChangeRecord {
        schema: crate::audit::change::SCHEMA_VERSION,
        kind: "change".into(),
        request_id,
        timestamp: crate::audit::timestamp(time::OffsetDateTime::now_utc()),
        node: node.to_owned(),
        channel: channel.into(),
        who,
        action: change.action,
        resource: change.resource,
        before: change.before,
        after: change.after,
        outcome,
        reason: reason.map(|c| c.as_str().to_owned()),
        status,
    }
}

/// The answer, and the change it made (recorded by the caller).
pub(crate) type Answer = (Response<Body>, Option<Changed>);

/// `POST /api/v1/operators`: a new operator; its token is in this answer only.
async fn create_operator(api: &Api, call: &Call) -> Result<Answer, GatewayError> {
    let new: NewOperator = serde_json::from_slice(&call.body).map_err(|e| {
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
    let roles = match parse_roles(&new.roles) {
        Ok(roles) => roles,
        Err(more) => {
            problems.extend(more);
            Vec::new()
        }
    };
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
    let change = Changed {
        action: "operators.create".into(),
        resource: crate::audit::change::Resource {
            kind: "operators".into(),
            id: Some(row.id.clone()),
        },
        before: None,
        after: Some(serde_json::to_value(&row).unwrap_or(Value::Null)),
    };
    if call.dry_run {
        return Ok(dry_run(change));
    }
    if let Err(e) = api.store.insert_operator(&row).await {
        // Two creations of one id at once: the other won.
        let exists = api.store.operators().await.map_err(store_error)?;
        return Err(if exists.iter().any(|o| o.id == row.id) {
            GatewayError::new(ErrorCode::Conflict, format!("operator '{}' exists", row.id))
        } else {
            store_error(e)
        });
    }
    Ok((
        json_response(
            StatusCode::CREATED,
            &CreatedOperator {
                operator: row,
                token,
            },
        ),
        Some(change),
    ))
}

/// The body of `PUT /api/v1/operators/{id}`: the operator's new role binding.
#[derive(serde::Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct OperatorChange {
    /// At least one of `viewer`, `editor`, `admin`, `auditor`.
    roles: Vec<String>,
    /// Kept when absent.
    #[serde(default)]
    description: Option<String>,
    /// When its token stops working (RFC 3339, in the future): kept when absent, removed
    /// when `null`.
    #[serde(default, deserialize_with = "present")]
    #[schemars(with = "Option<crate::model::Rfc3339>")]
    expires_at: Option<Option<String>>,
}

/// A field that may be absent (`None`), `null` (`Some(None)`) or a value.
fn present<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<Option<String>>, D::Error> {
    serde::Deserialize::deserialize(d).map(Some)
}

/// The roles `names` give, or the problems with them (field paths under `roles`).
fn parse_roles(names: &[String]) -> Result<Vec<Role>, Vec<String>> {
    let mut problems = Vec::new();
    if names.is_empty() {
        problems.push("roles: at least one of viewer, editor, admin, auditor".to_owned());
    }
    let mut roles = Vec::new();
    for (i, r) in names.iter().enumerate() {
        match Role::parse(r) {
            Some(role) => roles.push(role),
            None => problems.push(format!(
                "roles[{i}]: '{r}' is not viewer, editor, admin or auditor"
            )),
        }
    }
    if problems.is_empty() {
        Ok(roles)
    } else {
        Err(problems)
    }
}

/// The operator `id`, not revoked: 404 when unknown, 409 when revoked.
async fn live_operator(api: &Api, id: &str) -> Result<OperatorRow, GatewayError> {
    let operators = api.store.operators().await.map_err(store_error)?;
    let row = operators.into_iter().find(|o| o.id == id).ok_or_else(|| {
        GatewayError::new(ErrorCode::RouteNotFound, format!("no operator '{id}'"))
    })?;
    if row.revoked_at.is_some() {
        return Err(GatewayError::new(
            ErrorCode::Conflict,
            format!("operator '{id}' is revoked; create a new one"),
        ));
    }
    Ok(row)
}

/// `PUT /api/v1/operators/{id}`: a new role binding for an existing operator.
async fn update_operator(api: &Api, id: &str, call: &Call) -> Result<Answer, GatewayError> {
    let change: OperatorChange = serde_json::from_slice(&call.body).map_err(|e| {
        GatewayError::new(
            ErrorCode::InvalidBody,
            format!("the body is not an operator change: {e}"),
        )
    })?;
    let mut problems = parse_roles(&change.roles).err().unwrap_or_default();
    let expires_at = match &change.expires_at {
        Some(Some(text)) => {
            match time::OffsetDateTime::parse(text, &time::format_description::well_known::Rfc3339)
            {
                Ok(t) if t > time::OffsetDateTime::now_utc() => Some(Some(t)),
                Ok(_) => {
                    problems.push("expires_at: must be in the future".to_owned());
                    None
                }
                Err(_) => {
                    problems.push(format!("expires_at: '{text}' is not an RFC 3339 time"));
                    None
                }
            }
        }
        Some(None) => Some(None),
        None => None,
    };
    if !problems.is_empty() {
        return Err(GatewayError::new(
            ErrorCode::InvalidBody,
            problems.join("; "),
        ));
    }
    let before = live_operator(api, id).await?;
    let mut after = before.clone();
    after.roles = change.roles.clone();
    if let Some(description) = change.description {
        after.description = description;
    }
    if let Some(expiry) = expires_at {
        after.expires_at = expiry.map(crate::audit::timestamp);
    }
    let record = Changed {
        action: "operators.update".into(),
        resource: crate::audit::change::Resource {
            kind: "operators".into(),
            id: Some(id.to_owned()),
        },
        before: Some(json!(before)),
        after: Some(json!(after)),
    };
    if call.dry_run {
        return Ok(dry_run(record));
    }
    if !api
        .store
        .set_operator_binding(&after)
        .await
        .map_err(store_error)?
    {
        return Err(GatewayError::new(
            ErrorCode::Conflict,
            format!("operator '{id}' was revoked meanwhile"),
        ));
    }
    let changed = before != after;
    Ok((
        json_response(StatusCode::OK, &after),
        changed.then_some(record),
    ))
}

/// `POST /api/v1/operators/{id}/rotate`: a new token; the old one stops working at once.
async fn rotate_operator(api: &Api, id: &str, dry: bool) -> Result<Answer, GatewayError> {
    let before = live_operator(api, id).await?;
    let token = token::generate_with(token::OPERATOR_PREFIX);
    let mut after = before.clone();
    after.token_hash = api.secret.hash_hex(&token);
    let record = Changed {
        action: "operators.rotate".into(),
        resource: crate::audit::change::Resource {
            kind: "operators".into(),
            id: Some(id.to_owned()),
        },
        before: None,
        after: Some(json!({"id": id, "token_rotated": true})),
    };
    if dry {
        return Ok(dry_run(record));
    }
    if !api
        .store
        .rotate_operator_token(id, &before.token_hash, &after.token_hash)
        .await
        .map_err(store_error)?
    {
        return Err(GatewayError::new(
            ErrorCode::Conflict,
            format!("operator '{id}' was rotated or revoked meanwhile; read it again"),
        ));
    }
    Ok((
        json_response(
            StatusCode::CREATED,
            &CreatedOperator {
                operator: after,
                token,
            },
        ),
        Some(record),
    ))
}

/// `DELETE /api/v1/operators/{id}`: revokes the operator's token, on every node at once.
async fn revoke_operator(api: &Api, id: &str, dry: bool) -> Result<Answer, GatewayError> {
    let operators = api.store.operators().await.map_err(store_error)?;
    let Some(before) = operators.into_iter().find(|o| o.id == id) else {
        return Err(GatewayError::new(
            ErrorCode::RouteNotFound,
            format!("no operator '{id}'"),
        ));
    };
    let now = crate::audit::timestamp(time::OffsetDateTime::now_utc());
    let mut after = before.clone();
    after.revoked_at.get_or_insert(now.clone());
    let change = Changed {
        action: "operators.delete".into(),
        resource: crate::audit::change::Resource {
            kind: "operators".into(),
            id: Some(id.to_owned()),
        },
        before: Some(json!(before)),
        after: Some(json!(after)),
    };
    if dry {
        return Ok(dry_run(change));
    }
    api.store
        .revoke_operator(id, &now)
        .await
        .map_err(store_error)?;
    // Revoking a revoked operator changes nothing, and records nothing.
    let changed = before.revoked_at.is_none();
    Ok((
        json_response(StatusCode::OK, &after),
        changed.then_some(change),
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
    if let Some(oidc) = &api.oidc
        && !token.starts_with(token::OPERATOR_PREFIX)
    {
        return oidc_operator(oidc, token).await.map_err(|e| match e {
            crate::auth::jwt::JwtError::Invalid => invalid(),
            crate::auth::jwt::JwtError::Unavailable => GatewayError::new(
                ErrorCode::IdentityUnavailable,
                "the operators' identity provider cannot be reached to check the token; retry later",
            ),
        });
    }
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
        kind: "service",
        roles: row.roles.iter().filter_map(|r| Role::parse(r)).collect(),
        id: row.id,
    })
}

/// The operator an OIDC access token identifies: its `sub`, with the roles its claim gives.
async fn oidc_operator(
    oidc: &OperatorOidc,
    token: &str,
) -> Result<Operator, crate::auth::jwt::JwtError> {
    use crate::auth::jwt::{JwtError, MAX_TOKEN_BYTES};
    if token.len() > MAX_TOKEN_BYTES {
        return Err(JwtError::Invalid);
    }
    let header = jsonwebtoken::decode_header(token).map_err(|_| JwtError::Invalid)?;
    let claims = oidc.keys.verify(&oidc.provider, &header, token).await?;
    let subject = claims
        .get("sub")
        .and_then(Value::as_str)
        .filter(|s| !s.is_empty())
        .ok_or(JwtError::Invalid)?;
    Ok(Operator {
        // Apart from service operators' ids, whatever the provider's subjects look like.
        id: format!("oidc:{}", clip(subject)),
        kind: "user",
        roles: oidc.roles(&claims),
    })
}

/// Query parameters as pairs (percent-decoded).
fn params_of(query: &str) -> Vec<(String, String)> {
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
async fn audit_records(
    api: &Api,
    kind: &str,
    query: &[(String, String)],
) -> Result<Response<Body>, GatewayError> {
    let mut filter = AuditFilter {
        kind: Some(kind.to_owned()),
        limit: 100,
        ..Default::default()
    };
    let mut ndjson = false;
    for (key, value) in query.iter().cloned() {
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
async fn audit_verify(
    api: &Api,
    query: &[(String, String)],
) -> Result<Response<Body>, GatewayError> {
    let (mut node, mut from, mut to) = (None, 1, u64::MAX);
    for (key, value) in query.iter().cloned() {
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
        &Verified {
            intact,
            nodes: results,
        },
    ))
}

/// `GET /api/v1/audit/verify`.
#[derive(serde::Serialize, schemars::JsonSchema)]
pub(crate) struct Verified {
    /// Every chain checked is intact.
    intact: bool,
    /// Per node: `intact`, and `first`, `last`, `records` or where it is `broken`.
    nodes: Vec<Value>,
}

/// `GET /api/v1/metrics/summary`: the cluster's requests in a window, from the request records.
#[derive(serde::Serialize, schemars::JsonSchema)]
pub(crate) struct Summary {
    since: String,
    until: String,
    requests: u64,
    allowed: u64,
    denied: u64,
    /// Denied requests by error code.
    by_reason: std::collections::BTreeMap<String, u64>,
    /// Requests by collection (`-` for none: unrouted requests).
    by_collection: std::collections::BTreeMap<String, u64>,
    /// Requests by channel: `rest` or `mcp`.
    by_channel: std::collections::BTreeMap<String, u64>,
}

async fn summary(api: &Api, query: &[(String, String)]) -> Result<Response<Body>, GatewayError> {
    let now = time::OffsetDateTime::now_utc();
    let (mut since, mut until) = (now - time::Duration::hours(1), now);
    for (key, value) in query {
        let at = time::OffsetDateTime::parse(value, &time::format_description::well_known::Rfc3339)
            .map_err(|_| bad_request(format!("{key} '{value}' is not an RFC 3339 time")))?;
        match key.as_str() {
            "since" => since = at,
            "until" => until = at,
            other => return Err(bad_request(format!("unknown parameter '{other}'"))),
        }
    }
    let (since, until) = (
        crate::audit::timestamp(since),
        crate::audit::timestamp(until),
    );
    let groups = api
        .store
        .audit_summary(&since, &until)
        .await
        .map_err(store_error)?;
    let mut summary = Summary {
        since,
        until,
        requests: 0,
        allowed: 0,
        denied: 0,
        by_reason: Default::default(),
        by_collection: Default::default(),
        by_channel: Default::default(),
    };
    for g in groups {
        summary.requests += g.count;
        if g.outcome == "allowed" {
            summary.allowed += g.count;
        } else {
            summary.denied += g.count;
            *summary
                .by_reason
                .entry(g.reason.unwrap_or_default())
                .or_default() += g.count;
        }
        *summary
            .by_collection
            .entry(g.collection.unwrap_or_else(|| "-".into()))
            .or_default() += g.count;
        *summary.by_channel.entry(g.channel).or_default() += g.count;
    }
    Ok(json_response(StatusCode::OK, &summary))
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

/// What [`bootstrap`] did.
pub enum Bootstrap {
    /// The store had operators already (or another node made the first one meanwhile).
    Existing,
    /// This node created `bootstrap-admin`; the token to print once, unless it came from the
    /// environment.
    Created(Option<String>),
}

/// On the first start of a store without operators: an admin operator `bootstrap-admin`
/// whose token is `PORTCULLIS_BOOTSTRAP_ADMIN_TOKEN` when set (a `pco_` token), else a new one
/// returned to be printed once. Nothing when operators exist. The creation leaves a change
/// record made by the system (`who.kind: system`), as every change does.
pub async fn bootstrap(
    store: &Store,
    secret: &TokenSecret,
    from_env: Option<&str>,
    audit: &crate::audit::Audit,
) -> anyhow::Result<Bootstrap> {
    if !store.operators().await?.is_empty() {
        return Ok(Bootstrap::Existing);
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
            return Ok(Bootstrap::Existing);
        }
        return Err(e.into());
    }
    // Kept before the token is shown and anything is served: a node killed right after its
    // first start still has the record of its first operator.
    audit.record_change(bootstrap_record(audit.node(), &row));
    audit.flush(std::time::Duration::from_secs(5)).await;
    Ok(Bootstrap::Created(shown))
}

/// The change record of the bootstrap admin's creation: the system acting, at `serve`'s start.
fn bootstrap_record(node: &str, row: &OperatorRow) -> crate::audit::change::ChangeRecord {
    let who = crate::audit::change::Actor {
        subject: Some("portcullis serve".into()),
        kind: "system".into(),
        roles: Vec::new(),
        source_ip: "local".into(),
        user_agent: None,
    };
    let change = Changed {
        action: "operators.create".into(),
        resource: crate::audit::change::Resource {
            kind: "operators".into(),
            id: Some(row.id.clone()),
        },
        before: None,
        after: Some(serde_json::json!({
            "id": row.id,
            "roles": row.roles,
            "description": row.description,
        })),
    };
    change_record(
        node,
        uuid::Uuid::new_v4().to_string(),
        "cli",
        who,
        change,
        crate::audit::record::Outcome::Allowed,
        None,
        201,
    )
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
