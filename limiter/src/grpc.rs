//! The limiter's gRPC services: `CheckService` (gateways) and `QuotaService` (operators), with
//! gRPC health. Every call is authenticated with a service token; bad input is
//! `INVALID_ARGUMENT` (or `NOT_FOUND` for an unknown policy) and changes nothing.

use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use portcullis_proto::limiter::v1 as pb;
use tonic::{Request, Response, Status};

use crate::auth::{Actor, Role, ServiceTokens};
use crate::definitions::ChangeRecord;
use crate::engine::{CheckError, Decision, Engine, LimitStatus, Subject};
use crate::manage::{ManageError, Quotas, Write};
use crate::policy::{
    FailureMode, Limit, LimitKind, MAX_COUNT, Override, Policy, QuotaWindow, RatePeriod, Scope,
};

/// Both services behind token authentication, and gRPC health (`health`, unauthenticated, as
/// load balancers and orchestrators expect).
pub fn routes<H>(
    quotas: Arc<Quotas>,
    tokens: Arc<ServiceTokens>,
    health: H,
) -> tonic::service::Routes
where
    H: tonic::server::NamedService
        + tower_service::Service<
            http::Request<tonic::body::Body>,
            Response = http::Response<tonic::body::Body>,
            Error = std::convert::Infallible,
        > + Clone
        + Send
        + Sync
        + 'static,
    H::Future: Send + 'static,
{
    let check = CheckService {
        engine: quotas.engine.clone(),
    };
    let manage = QuotaService { quotas };
    tonic::service::Routes::new(health)
        .add_service(
            pb::check_service_server::CheckServiceServer::with_interceptor(
                check,
                authenticator(tokens.clone(), Role::Check),
            ),
        )
        .add_service(
            pb::quota_service_server::QuotaServiceServer::with_interceptor(
                manage,
                authenticator(tokens, Role::Manage),
            ),
        )
}

/// Refuses calls without a token of at least `role`, and hands the actor to the service.
fn authenticator(
    tokens: Arc<ServiceTokens>,
    role: Role,
) -> impl FnMut(Request<()>) -> Result<Request<()>, Status> + Clone {
    move |mut request: Request<()>| {
        let token = request
            .metadata()
            .get("authorization")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .ok_or_else(|| Status::unauthenticated("a service token is required"))?;
        let actor = tokens
            .authenticate(token.trim())
            .ok_or_else(|| Status::unauthenticated("unknown service token"))?
            .clone();
        if actor.role < role {
            tracing::warn!(actor = %actor.name, "a check token was used for quota management");
            return Err(Status::permission_denied(
                "this token may only check; quota management needs a manage token",
            ));
        }
        request.extensions_mut().insert(actor);
        Ok(request)
    }
}

/// Answers checks from gateways.
pub struct CheckService {
    pub engine: Arc<Engine>,
}

/// Checks in one `CheckBatch` call, at most.
pub const MAX_BATCH: usize = 1_000;

#[tonic::async_trait]
impl pb::check_service_server::CheckService for CheckService {
    async fn check(
        &self,
        request: Request<pb::CheckRequest>,
    ) -> Result<Response<pb::CheckResponse>, Status> {
        // The gateway's trace continues here (sent as metadata, or in the check).
        let parent = crate::telemetry::extract(&request.metadata().clone().into_headers());
        self.one(request.into_inner(), parent)
            .await
            .map(Response::new)
    }

    async fn check_batch(
        &self,
        request: Request<pb::CheckBatchRequest>,
    ) -> Result<Response<pb::CheckBatchResponse>, Status> {
        let checks = request.into_inner().checks;
        if checks.is_empty() || checks.len() > MAX_BATCH {
            return Err(Status::invalid_argument(format!(
                "a batch holds 1 to {MAX_BATCH} checks"
            )));
        }
        // Decided together: with Redis, their scripts share the connections' round trips.
        let answers = futures_util::future::join_all(
            checks
                .into_iter()
                .map(|check| self.one(check, opentelemetry::Context::new())),
        )
        .await;
        let results = answers
            .into_iter()
            .map(|answer| pb::CheckResult {
                result: Some(match answer {
                    Ok(decision) => pb::check_result::Result::Decision(decision),
                    Err(status) => pb::check_result::Result::Error(pb::CheckError {
                        code: status.code() as i32,
                        message: status.message().to_owned(),
                    }),
                }),
            })
            .collect();
        Ok(Response::new(pb::CheckBatchResponse { results }))
    }

    async fn get_policies(
        &self,
        _: Request<pb::GetPoliciesRequest>,
    ) -> Result<Response<pb::GetPoliciesResponse>, Status> {
        let (policies, version) = policies(&self.engine);
        Ok(Response::new(pb::GetPoliciesResponse { policies, version }))
    }
}

impl CheckService {
    /// Decides one check in its own span, which continues the trace in the check's
    /// `trace_context` (or else `parent`), and counts it in the metrics.
    async fn one(
        &self,
        check: pb::CheckRequest,
        parent: opentelemetry::Context,
    ) -> Result<pb::CheckResponse, Status> {
        use tracing::Instrument as _;
        use tracing_opentelemetry::OpenTelemetrySpanExt as _;
        let span = tracing::info_span!("limiter.check", otel.kind = "server");
        let parent = if check.trace_context.is_empty() {
            parent
        } else {
            crate::telemetry::extract_map(&check.trace_context)
        };
        let _ = span.set_parent(parent);
        let started = std::time::Instant::now();
        let answer = self.decide(check).instrument(span).await;
        let result = match &answer {
            Ok(r) if r.allowed => "allowed",
            Ok(_) => "refused",
            Err(s) if s.code() == tonic::Code::Unavailable => "unavailable",
            Err(_) => "invalid",
        };
        crate::metrics::METRICS.check(result, started.elapsed().as_secs_f64());
        answer
    }

    async fn decide(&self, req: pb::CheckRequest) -> Result<pb::CheckResponse, Status> {
        if req.hits == 0 || req.hits > MAX_COUNT {
            return Err(Status::invalid_argument(format!(
                "hits must be between 1 and {MAX_COUNT}"
            )));
        }
        let principal = req
            .principal
            .ok_or_else(|| Status::invalid_argument("principal is required"))?;
        let product = req
            .product
            .ok_or_else(|| Status::invalid_argument("product is required"))?;
        if principal.client.is_empty() || product.collection.is_empty() {
            return Err(Status::invalid_argument(
                "principal.client and product.collection are required",
            ));
        }
        let source_ip = source_ip(&req.source_ip)?;
        let subject = subject(&principal, &product, source_ip)?;
        let names: Vec<&str> = req.policies.iter().map(String::as_str).collect();
        let decision = self
            .engine
            .check(&names, &subject, req.hits, time::OffsetDateTime::now_utc())
            .await
            .map_err(check_status)?;
        Ok(decision_to_pb(decision))
    }
}

/// Quota management for operators.
pub struct QuotaService {
    pub quotas: Arc<Quotas>,
}

type Reply<T> = Result<Response<T>, Status>;

#[tonic::async_trait]
impl pb::quota_service_server::QuotaService for QuotaService {
    async fn create_policy(
        &self,
        request: Request<pb::PolicyRequest>,
    ) -> Reply<pb::ChangeResponse> {
        self.write_policy(request, Write::Create).await
    }

    async fn update_policy(
        &self,
        request: Request<pb::PolicyRequest>,
    ) -> Reply<pb::ChangeResponse> {
        self.write_policy(request, Write::Update).await
    }

    async fn delete_policy(&self, request: Request<pb::PolicyName>) -> Reply<pb::ChangeResponse> {
        let actor = actor(&request)?;
        let change = self
            .quotas
            .delete_policy(&actor.name, &request.get_ref().name)
            .await
            .map_err(manage_status)?;
        Ok(change_response(change))
    }

    async fn get_policy(&self, request: Request<pb::PolicyName>) -> Reply<pb::Policy> {
        let name = &request.get_ref().name;
        self.quotas
            .engine
            .catalog()
            .policies
            .get(name)
            .map(|p| Response::new(policy_to_pb(p)))
            .ok_or_else(|| Status::not_found(format!("policy '{name}' not found")))
    }

    async fn list_policies(
        &self,
        _: Request<pb::ListPoliciesRequest>,
    ) -> Reply<pb::ListPoliciesResponse> {
        let (policies, version) = policies(&self.quotas.engine);
        Ok(Response::new(pb::ListPoliciesResponse {
            policies,
            version,
        }))
    }

    async fn set_override(&self, request: Request<pb::Override>) -> Reply<pb::ChangeResponse> {
        let actor = actor(&request)?;
        let o = override_from_pb(request.into_inner())?;
        let change = self
            .quotas
            .set_override(&actor.name, o)
            .await
            .map_err(manage_status)?;
        Ok(change_response(change))
    }

    async fn clear_override(
        &self,
        request: Request<pb::ClearOverrideRequest>,
    ) -> Reply<pb::ChangeResponse> {
        let actor = actor(&request)?;
        let r = request.get_ref();
        let profile = (!r.profile.is_empty()).then_some(r.profile.as_str());
        let change = self
            .quotas
            .clear_override(&actor.name, &r.policy, &r.client, profile)
            .await
            .map_err(manage_status)?;
        Ok(change_response(change))
    }

    async fn list_overrides(
        &self,
        request: Request<pb::ListOverridesRequest>,
    ) -> Reply<pb::ListOverridesResponse> {
        let policy = &request.get_ref().policy;
        let catalog = self.quotas.engine.catalog();
        Ok(Response::new(pb::ListOverridesResponse {
            overrides: catalog
                .overrides
                .iter()
                .filter(|o| policy.is_empty() || &o.policy == policy)
                .map(override_to_pb)
                .collect(),
        }))
    }

    async fn get_usage(&self, request: Request<pb::UsageRequest>) -> Reply<pb::UsageResponse> {
        let r = request.into_inner();
        let (principal, product) = usage_subject(&r)?;
        let ip = source_ip(&r.source_ip)?;
        let subject = subject(&principal, &product, ip)?;
        let decision = self
            .quotas
            .engine
            .check(&[&r.policy], &subject, 0, time::OffsetDateTime::now_utc())
            .await
            .map_err(check_status)?;
        Ok(Response::new(pb::UsageResponse {
            limits: decision.limits.into_iter().map(status_to_pb).collect(),
        }))
    }

    async fn reset_usage(&self, request: Request<pb::UsageRequest>) -> Reply<pb::ChangeResponse> {
        let actor = actor(&request)?;
        let r = request.into_inner();
        let (principal, product) = usage_subject(&r)?;
        let ip = source_ip(&r.source_ip)?;
        let subject = subject(&principal, &product, ip)?;
        let limit = (!r.limit.is_empty()).then_some(r.limit.as_str());
        let change = self
            .quotas
            .reset_usage(&actor.name, &r.policy, limit, &subject)
            .await
            .map_err(manage_status)?;
        Ok(change_response(change))
    }

    async fn list_changes(
        &self,
        request: Request<pb::ListChangesRequest>,
    ) -> Reply<pb::ListChangesResponse> {
        let r = request.get_ref();
        let limit = match r.limit {
            0 => 100,
            n => n.min(1000) as usize,
        };
        let changes = self
            .quotas
            .changes(r.after_version, limit)
            .await
            .map_err(|e| Status::unavailable(e.to_string()))?;
        Ok(Response::new(pb::ListChangesResponse {
            changes: changes.into_iter().map(change_to_pb).collect(),
        }))
    }
}

impl QuotaService {
    async fn write_policy(
        &self,
        request: Request<pb::PolicyRequest>,
        write: Write,
    ) -> Reply<pb::ChangeResponse> {
        let actor = actor(&request)?;
        let policy = request
            .into_inner()
            .policy
            .ok_or_else(|| Status::invalid_argument("policy is required"))
            .and_then(policy_from_pb)?;
        let change = self
            .quotas
            .put_policy(&actor.name, policy, write)
            .await
            .map_err(manage_status)?;
        Ok(change_response(change))
    }
}

/// Every policy in force, sorted by name, and the catalogue version.
fn policies(engine: &Engine) -> (Vec<pb::Policy>, u64) {
    let catalog = engine.catalog();
    let policies = catalog.policies.values().map(policy_to_pb).collect();
    (policies, catalog.version)
}

fn actor<T>(request: &Request<T>) -> Result<Actor, Status> {
    request
        .extensions()
        .get::<Actor>()
        .cloned()
        .ok_or_else(|| Status::unauthenticated("a service token is required"))
}

fn usage_subject(r: &pb::UsageRequest) -> Result<(pb::Principal, pb::Product), Status> {
    let principal = r.principal.clone().unwrap_or_default();
    if principal.client.is_empty() && r.source_ip.is_empty() && r.product.is_none() {
        return Err(Status::invalid_argument(
            "name whose usage: a principal, a product or a source_ip",
        ));
    }
    Ok((principal, r.product.clone().unwrap_or_default()))
}

fn source_ip(text: &str) -> Result<Option<IpAddr>, Status> {
    match text {
        "" => Ok(None),
        text => text
            .parse()
            .map(Some)
            .map_err(|_| Status::invalid_argument(format!("source_ip '{text}' is not an address"))),
    }
}

/// The subject of a check, its identifiers checked (they become parts of counter keys).
fn subject<'a>(
    principal: &'a pb::Principal,
    product: &'a pb::Product,
    source_ip: Option<IpAddr>,
) -> Result<Subject<'a>, Status> {
    for (field, value) in [
        ("principal.client", &principal.client),
        ("principal.profile", &principal.profile),
        ("product.collection", &product.collection),
        ("product.operation", &product.operation),
    ] {
        let ok = value.len() <= 128
            && value
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'));
        if !ok {
            return Err(Status::invalid_argument(format!(
                "{field}: use up to 128 letters, digits, '.', '_' or '-'"
            )));
        }
    }
    Ok(Subject {
        client: &principal.client,
        profile: &principal.profile,
        collection: &product.collection,
        operation: &product.operation,
        source_ip,
    })
}

fn check_status(e: CheckError) -> Status {
    match e {
        CheckError::UnknownPolicy(_) | CheckError::UnknownLimit { .. } => {
            Status::not_found(e.to_string())
        }
        CheckError::Unavailable(u) => Status::unavailable(u.to_string()),
    }
}

fn manage_status(e: ManageError) -> Status {
    match &e {
        ManageError::NotFound(_) => Status::not_found(e.to_string()),
        ManageError::AlreadyExists(_) => Status::already_exists(e.to_string()),
        ManageError::Invalid(_) => Status::invalid_argument(e.to_string()),
        ManageError::Contention => Status::aborted(e.to_string()),
        ManageError::Unavailable(_) => Status::unavailable(e.to_string()),
    }
}

fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

/// A decision as the protocol carries it.
pub fn decision_to_pb(decision: Decision) -> pb::CheckResponse {
    pb::CheckResponse {
        allowed: decision.allowed,
        limits: decision.limits.into_iter().map(status_to_pb).collect(),
    }
}

fn status_to_pb(l: LimitStatus) -> pb::LimitStatus {
    pb::LimitStatus {
        policy: l.policy,
        limit: l.limit,
        allowed: l.allowed,
        remaining: l.remaining,
        reset_ms: millis(l.reset),
        retry_after_ms: l.retry_after.map_or(0, millis),
        quota: l.is_quota,
        limit_count: l.quota,
        window_seconds: l.window.as_secs(),
    }
}

/// A limit status from the protocol.
pub fn status_from_pb(l: pb::LimitStatus) -> LimitStatus {
    LimitStatus {
        policy: l.policy,
        limit: l.limit,
        allowed: l.allowed,
        quota: l.limit_count,
        window: Duration::from_secs(l.window_seconds),
        remaining: l.remaining,
        reset: Duration::from_millis(l.reset_ms),
        retry_after: (!l.allowed).then(|| Duration::from_millis(l.retry_after_ms)),
        is_quota: l.quota,
    }
}

fn change_response(change: ChangeRecord) -> Response<pb::ChangeResponse> {
    Response::new(pb::ChangeResponse {
        change: Some(change_to_pb(change)),
    })
}

fn change_to_pb(c: ChangeRecord) -> pb::ChangeRecord {
    let json = |v: Option<serde_json::Value>| v.map(|v| v.to_string()).unwrap_or_default();
    pb::ChangeRecord {
        version: c.version,
        at: c
            .at
            .format(&time::format_description::well_known::Rfc3339)
            .unwrap_or_default(),
        actor: c.actor,
        action: c.action,
        resource: c.resource,
        before: json(c.before),
        after: json(c.after),
    }
}

/// A policy as the protocol carries it.
pub fn policy_to_pb(p: &Policy) -> pb::Policy {
    pb::Policy {
        name: p.name.clone(),
        limits: p
            .limits
            .iter()
            .map(|l| pb::Limit {
                name: l.name.clone(),
                scope: scope_to_pb(l.scope) as i32,
                kind: Some(match l.kind {
                    LimitKind::Rate { count, per } => pb::limit::Kind::Rate(pb::Rate {
                        count,
                        per: match per {
                            RatePeriod::Second => pb::RatePeriod::Second,
                            RatePeriod::Minute => pb::RatePeriod::Minute,
                            RatePeriod::Hour => pb::RatePeriod::Hour,
                        } as i32,
                    }),
                    LimitKind::Quota { count, window } => pb::limit::Kind::Quota(pb::Quota {
                        count,
                        window: match window {
                            QuotaWindow::Day => pb::QuotaWindow::Day,
                            QuotaWindow::Week => pb::QuotaWindow::Week,
                            QuotaWindow::Month => pb::QuotaWindow::Month,
                        } as i32,
                    }),
                }),
            })
            .collect(),
        on_unavailable: match p.on_unavailable {
            FailureMode::FailClosed => pb::FailureMode::FailClosed,
            FailureMode::LocalLimit => pb::FailureMode::LocalLimit,
        } as i32,
    }
}

/// A policy from the protocol, validated.
pub fn policy_from_pb(p: pb::Policy) -> Result<Policy, Status> {
    let bad = |what: String| Status::invalid_argument(what);
    let mut limits = Vec::with_capacity(p.limits.len());
    for l in p.limits {
        let scope = match pb::Scope::try_from(l.scope) {
            Ok(pb::Scope::Client) => Scope::Client,
            Ok(pb::Scope::Profile) => Scope::Profile,
            Ok(pb::Scope::ClientCollection) => Scope::ClientCollection,
            Ok(pb::Scope::ClientOperation) => Scope::ClientOperation,
            Ok(pb::Scope::Collection) => Scope::Collection,
            Ok(pb::Scope::Operation) => Scope::Operation,
            Ok(pb::Scope::SourceIp) => Scope::SourceIp,
            Ok(pb::Scope::Unspecified) | Err(_) => {
                return Err(bad(format!("limit '{}': a scope is required", l.name)));
            }
        };
        let kind = match l.kind {
            Some(pb::limit::Kind::Rate(r)) => LimitKind::Rate {
                count: r.count,
                per: match pb::RatePeriod::try_from(r.per) {
                    Ok(pb::RatePeriod::Second) => RatePeriod::Second,
                    Ok(pb::RatePeriod::Minute) => RatePeriod::Minute,
                    Ok(pb::RatePeriod::Hour) => RatePeriod::Hour,
                    Ok(pb::RatePeriod::Unspecified) | Err(_) => {
                        return Err(bad(format!(
                            "limit '{}': a rate period is required",
                            l.name
                        )));
                    }
                },
            },
            Some(pb::limit::Kind::Quota(q)) => LimitKind::Quota {
                count: q.count,
                window: match pb::QuotaWindow::try_from(q.window) {
                    Ok(pb::QuotaWindow::Day) => QuotaWindow::Day,
                    Ok(pb::QuotaWindow::Week) => QuotaWindow::Week,
                    Ok(pb::QuotaWindow::Month) => QuotaWindow::Month,
                    Ok(pb::QuotaWindow::Unspecified) | Err(_) => {
                        return Err(bad(format!(
                            "limit '{}': a quota window is required",
                            l.name
                        )));
                    }
                },
            },
            None => {
                return Err(bad(format!(
                    "limit '{}': a rate or a quota is required",
                    l.name
                )));
            }
        };
        limits.push(Limit {
            name: l.name,
            scope,
            kind,
        });
    }
    let on_unavailable = match pb::FailureMode::try_from(p.on_unavailable) {
        Ok(pb::FailureMode::Unspecified | pb::FailureMode::FailClosed) => FailureMode::FailClosed,
        Ok(pb::FailureMode::LocalLimit) => FailureMode::LocalLimit,
        Err(_) => return Err(bad("on_unavailable: unknown failure mode".into())),
    };
    let policy = Policy {
        name: p.name,
        limits,
        on_unavailable,
    };
    policy
        .validate()
        .map_err(|e| Status::invalid_argument(e.to_string()))?;
    Ok(policy)
}

fn scope_to_pb(scope: Scope) -> pb::Scope {
    match scope {
        Scope::Client => pb::Scope::Client,
        Scope::Profile => pb::Scope::Profile,
        Scope::ClientCollection => pb::Scope::ClientCollection,
        Scope::ClientOperation => pb::Scope::ClientOperation,
        Scope::Collection => pb::Scope::Collection,
        Scope::Operation => pb::Scope::Operation,
        Scope::SourceIp => pb::Scope::SourceIp,
    }
}

pub fn override_to_pb(o: &Override) -> pb::Override {
    pb::Override {
        policy: o.policy.clone(),
        client: o.client.clone(),
        profile: o.profile.clone().unwrap_or_default(),
        multiplier: o.multiplier,
        expires_at: o
            .expires_at
            .and_then(|t| {
                t.format(&time::format_description::well_known::Rfc3339)
                    .ok()
            })
            .unwrap_or_default(),
        note: o.note.clone(),
    }
}

pub fn override_from_pb(o: pb::Override) -> Result<Override, Status> {
    let expires_at = match o.expires_at.as_str() {
        "" => None,
        text => Some(
            time::OffsetDateTime::parse(text, &time::format_description::well_known::Rfc3339)
                .map_err(|_| {
                    Status::invalid_argument(format!("expires_at '{text}' is not RFC 3339"))
                })?,
        ),
    };
    let o = Override {
        policy: o.policy,
        client: o.client,
        profile: (!o.profile.is_empty()).then_some(o.profile),
        multiplier: o.multiplier,
        expires_at,
        note: o.note,
    };
    o.validate()
        .map_err(|e| Status::invalid_argument(e.to_string()))?;
    Ok(o)
}
