//! Quota policies, overrides and usage through the management API. The limiter owns quota
//! state: every call here is a call of its gRPC quota service (in-process or a limiter node),
//! made with the gateway's `manage` service token, so operators have one API and one RBAC and
//! the limiter keeps its own change records beside the gateway's.

use http::StatusCode;
use portcullis_limiter::grpc::{override_from_pb, override_to_pb, policy_from_pb, policy_to_pb};
use portcullis_limiter::policy::{Override, Policy};
use portcullis_proto::limiter::v1 as pb;
use serde_json::{Value, json};

use super::endpoints::QuotaAction as Action;
use super::{Answer, Api, Call, Changed, bad_request, dry_run};
use crate::body::json_response;
use crate::error::{ErrorCode, GatewayError};

/// `GET /api/v1/quota/policies`.
#[derive(serde::Serialize, schemars::JsonSchema)]
pub(crate) struct PolicyList {
    policies: Vec<Policy>,
    /// The limiter's catalogue version.
    version: u64,
}

/// `GET /api/v1/quota/overrides`.
#[derive(serde::Serialize, schemars::JsonSchema)]
pub(crate) struct OverrideList {
    overrides: Vec<Override>,
}

/// The body of `PUT /api/v1/quota/policies/{policy}/overrides/{client}`.
#[derive(serde::Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct OverrideBody {
    /// Only this profile of the client; absent for all of them.
    #[serde(default)]
    profile: Option<String>,
    /// 0.01 to 1000: every principal-bound count of the policy is multiplied by this.
    multiplier: f64,
    /// When it lapses (RFC 3339); absent for never.
    #[serde(default)]
    expires_at: Option<String>,
    #[serde(default)]
    note: String,
}

/// A subject's standing under a policy, per limit.
#[derive(serde::Serialize, schemars::JsonSchema)]
pub(crate) struct Usage {
    limits: Vec<LimitUsage>,
}

#[derive(serde::Serialize, schemars::JsonSchema)]
pub(crate) struct LimitUsage {
    limit: String,
    /// Hits still available.
    remaining: u64,
    /// The count in force (after any override).
    count: u64,
    /// Milliseconds until the limit is fully restored (rate) or its window ends (quota).
    reset_ms: u64,
    /// A calendar quota (or a rate).
    quota: bool,
}

/// The body of `POST /api/v1/quota/policies/{policy}/usage/reset`.
#[derive(serde::Deserialize, Default, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct Subject {
    #[serde(default)]
    client: String,
    #[serde(default)]
    profile: String,
    #[serde(default)]
    collection: String,
    #[serde(default)]
    operation: String,
    #[serde(default)]
    source_ip: String,
    /// Only this limit of the policy (all when absent).
    #[serde(default)]
    limit: String,
}

/// The answer of a usage reset.
#[derive(serde::Serialize, schemars::JsonSchema)]
pub(crate) struct ResetDone {
    reset: bool,
    /// The limiter's catalogue version after the change.
    version: u64,
}

pub(super) async fn handle(api: &Api, action: Action, call: &Call) -> Result<Answer, GatewayError> {
    let Some(client) = &api.quotas else {
        return Err(GatewayError::new(
            ErrorCode::PlatformDegraded,
            "this gateway has no access to the limiter's quota service (give --limiter-manage-token-file)",
        ));
    };
    let mut client = client.clone();
    let p = |i: usize| call.params.get(i).cloned().unwrap_or_default();
    match action {
        Action::ListPolicies => {
            let list = client
                .list_policies(pb::ListPoliciesRequest {})
                .await
                .map_err(grpc_error)?
                .into_inner();
            let policies = list
                .policies
                .into_iter()
                .map(policy_from_pb)
                .collect::<Result<_, _>>()
                .map_err(grpc_error)?;
            Ok((
                json_response(
                    StatusCode::OK,
                    &PolicyList {
                        policies,
                        version: list.version,
                    },
                ),
                None,
            ))
        }
        Action::GetPolicy => {
            let policy = get_policy(&mut client, &p(0))
                .await?
                .ok_or_else(|| no_policy(&p(0)))?;
            Ok((json_response(StatusCode::OK, &policy), None))
        }
        Action::PutPolicy => {
            let name = p(0);
            let policy: Policy = serde_path_to_error::deserialize(
                &mut serde_json::Deserializer::from_slice(&call.body),
            )
            .map_err(|e| {
                let path = e.path().to_string();
                GatewayError::new(
                    ErrorCode::InvalidBody,
                    format!("{path}: {}", e.into_inner()),
                )
            })?;
            if policy.name != name {
                return Err(GatewayError::new(
                    ErrorCode::InvalidBody,
                    format!("name: must be '{name}', as in the path"),
                ));
            }
            policy
                .validate()
                .map_err(|e| GatewayError::new(ErrorCode::InvalidBody, e.to_string()))?;
            let before = get_policy(&mut client, &name).await?;
            let verb = if before.is_some() { "update" } else { "create" };
            let preview = Changed {
                action: format!("quota_policies.{verb}"),
                resource: resource("quota_policies", &name),
                before: before.as_ref().map(|b| json!(b)),
                after: Some(json!(policy)),
            };
            if call.dry_run {
                return Ok(dry_run(preview));
            }
            // The same policy again changes nothing, and records nothing.
            if before.as_ref() == Some(&policy) {
                return Ok((json_response(StatusCode::OK, &policy), None));
            }
            let request = pb::PolicyRequest {
                policy: Some(policy_to_pb(&policy)),
            };
            let change = if before.is_some() {
                client.update_policy(request).await
            } else {
                client.create_policy(request).await
            }
            .map_err(grpc_error)?
            .into_inner();
            let status = if before.is_some() {
                StatusCode::OK
            } else {
                StatusCode::CREATED
            };
            Ok((
                json_response(status, &policy),
                Some(recorded(preview, change)),
            ))
        }
        Action::DeletePolicy => {
            let name = p(0);
            let before = get_policy(&mut client, &name)
                .await?
                .ok_or_else(|| no_policy(&name))?;
            let preview = Changed {
                action: "quota_policies.delete".into(),
                resource: resource("quota_policies", &name),
                before: Some(json!(before)),
                after: None,
            };
            if call.dry_run {
                return Ok(dry_run(preview));
            }
            let change = client
                .delete_policy(pb::PolicyName { name })
                .await
                .map_err(grpc_error)?
                .into_inner();
            Ok((no_content(), Some(recorded(preview, change))))
        }
        Action::ListOverrides => {
            let mut policy = String::new();
            for (key, value) in &call.query {
                match key.as_str() {
                    "policy" => policy = value.clone(),
                    other => return Err(bad_request(format!("unknown parameter '{other}'"))),
                }
            }
            let overrides = overrides(&mut client, &policy).await?;
            Ok((
                json_response(StatusCode::OK, &OverrideList { overrides }),
                None,
            ))
        }
        Action::SetOverride => {
            let (policy, client_id) = (p(0), p(1));
            let body: OverrideBody = serde_json::from_slice(&call.body).map_err(|e| {
                GatewayError::new(
                    ErrorCode::InvalidBody,
                    format!("the body is not valid: {e}"),
                )
            })?;
            let wanted = override_from_pb(pb::Override {
                policy: policy.clone(),
                client: client_id.clone(),
                profile: body.profile.unwrap_or_default(),
                multiplier: body.multiplier,
                expires_at: body.expires_at.unwrap_or_default(),
                note: body.note,
            })
            .map_err(grpc_error)?;
            get_policy(&mut client, &policy)
                .await?
                .ok_or_else(|| no_policy(&policy))?;
            let before = overrides(&mut client, &policy)
                .await?
                .into_iter()
                .find(|o| o.same_target(&wanted));
            let unchanged = before.as_ref() == Some(&wanted);
            let preview = Changed {
                action: "quota_overrides.update".into(),
                resource: resource("quota_overrides", &override_id(&wanted)),
                before: before.map(|b| json!(b)),
                after: Some(json!(wanted)),
            };
            if call.dry_run {
                return Ok(dry_run(preview));
            }
            // The same override again changes nothing, and records nothing.
            if unchanged {
                return Ok((json_response(StatusCode::OK, &wanted), None));
            }
            let change = client
                .set_override(override_to_pb(&wanted))
                .await
                .map_err(grpc_error)?
                .into_inner();
            Ok((
                json_response(StatusCode::OK, &wanted),
                Some(recorded(preview, change)),
            ))
        }
        Action::ClearOverride => {
            let (policy, client_id) = (p(0), p(1));
            let mut profile = String::new();
            for (key, value) in &call.query {
                match key.as_str() {
                    "profile" => profile = value.clone(),
                    other => return Err(bad_request(format!("unknown parameter '{other}'"))),
                }
            }
            let profile = (!profile.is_empty()).then_some(profile);
            let before = overrides(&mut client, &policy)
                .await?
                .into_iter()
                .find(|o| o.client == client_id && o.profile == profile)
                .ok_or_else(|| {
                    GatewayError::new(
                        ErrorCode::RouteNotFound,
                        format!("no override of '{policy}' for that client and profile"),
                    )
                })?;
            let preview = Changed {
                action: "quota_overrides.delete".into(),
                resource: resource("quota_overrides", &override_id(&before)),
                before: Some(json!(before)),
                after: None,
            };
            if call.dry_run {
                return Ok(dry_run(preview));
            }
            let change = client
                .clear_override(pb::ClearOverrideRequest {
                    policy,
                    client: client_id,
                    profile: profile.unwrap_or_default(),
                })
                .await
                .map_err(grpc_error)?
                .into_inner();
            Ok((no_content(), Some(recorded(preview, change))))
        }
        Action::Usage => {
            let mut subject = Subject::default();
            for (key, value) in call.query.iter().cloned() {
                match key.as_str() {
                    "client" => subject.client = value,
                    "profile" => subject.profile = value,
                    "collection" => subject.collection = value,
                    "operation" => subject.operation = value,
                    "source_ip" => subject.source_ip = value,
                    other => return Err(bad_request(format!("unknown parameter '{other}'"))),
                }
            }
            let usage = client
                .get_usage(usage_request(&p(0), subject))
                .await
                .map_err(grpc_error)?
                .into_inner();
            let limits = usage
                .limits
                .into_iter()
                .map(|l| LimitUsage {
                    limit: l.limit,
                    remaining: l.remaining,
                    count: l.limit_count,
                    reset_ms: l.reset_ms,
                    quota: l.quota,
                })
                .collect();
            Ok((json_response(StatusCode::OK, &Usage { limits }), None))
        }
        Action::ResetUsage => {
            let policy = p(0);
            let subject: Subject = if call.body.iter().all(u8::is_ascii_whitespace) {
                Subject::default()
            } else {
                serde_json::from_slice(&call.body).map_err(|e| {
                    GatewayError::new(
                        ErrorCode::InvalidBody,
                        format!("the body is not valid: {e}"),
                    )
                })?
            };
            let id = format!("{policy}/{}", subject.client);
            let described = json!({
                "client": subject.client, "profile": subject.profile,
                "collection": subject.collection, "operation": subject.operation,
                "source_ip": subject.source_ip, "limit": subject.limit,
            });
            let request = usage_request(&policy, subject);
            // The usage read checks the policy and the subject, charging nothing.
            client
                .get_usage(request.clone())
                .await
                .map_err(grpc_error)?;
            let preview = Changed {
                action: "quota_usage.reset".into(),
                resource: resource("quota_usage", &id),
                before: None,
                after: Some(described),
            };
            if call.dry_run {
                return Ok(dry_run(preview));
            }
            let change = client
                .reset_usage(request)
                .await
                .map_err(grpc_error)?
                .into_inner();
            let version = change.change.as_ref().map_or(0, |c| c.version);
            Ok((
                json_response(
                    StatusCode::OK,
                    &ResetDone {
                        reset: true,
                        version,
                    },
                ),
                Some(recorded(preview, change)),
            ))
        }
    }
}

fn usage_request(policy: &str, s: Subject) -> pb::UsageRequest {
    pb::UsageRequest {
        policy: policy.to_owned(),
        principal: Some(pb::Principal {
            client: s.client,
            profile: s.profile,
            ..Default::default()
        }),
        product: Some(pb::Product {
            collection: s.collection,
            operation: s.operation,
        }),
        source_ip: s.source_ip,
        limit: s.limit,
    }
}

async fn get_policy(
    client: &mut crate::quota_cli::Client,
    name: &str,
) -> Result<Option<Policy>, GatewayError> {
    match client
        .get_policy(pb::PolicyName {
            name: name.to_owned(),
        })
        .await
    {
        Ok(policy) => Ok(Some(
            policy_from_pb(policy.into_inner()).map_err(grpc_error)?,
        )),
        Err(status) if status.code() == tonic::Code::NotFound => Ok(None),
        Err(status) => Err(grpc_error(status)),
    }
}

async fn overrides(
    client: &mut crate::quota_cli::Client,
    policy: &str,
) -> Result<Vec<Override>, GatewayError> {
    client
        .list_overrides(pb::ListOverridesRequest {
            policy: policy.to_owned(),
        })
        .await
        .map_err(grpc_error)?
        .into_inner()
        .overrides
        .into_iter()
        .map(|o| override_from_pb(o).map_err(grpc_error))
        .collect()
}

fn override_id(o: &Override) -> String {
    match &o.profile {
        Some(profile) => format!("{}/{}/{profile}", o.policy, o.client),
        None => format!("{}/{}", o.policy, o.client),
    }
}

fn resource(kind: &str, id: &str) -> crate::audit::change::Resource {
    crate::audit::change::Resource {
        kind: kind.into(),
        id: Some(id.to_owned()),
    }
}

/// The change as the limiter recorded it (its before and after are authoritative).
fn recorded(mut preview: Changed, response: pb::ChangeResponse) -> Changed {
    if let Some(change) = response.change {
        let parse = |text: &str| {
            (!text.is_empty())
                .then(|| serde_json::from_str(text).ok())
                .flatten()
        };
        preview.before = parse(&change.before);
        preview.after = parse(&change.after).or(preview.after);
        if let Some(Value::Object(after)) = &mut preview.after {
            after.insert("limiter_version".into(), change.version.into());
        }
    }
    preview
}

fn no_content() -> http::Response<crate::body::Body> {
    let mut response = http::Response::new(crate::body::full(bytes::Bytes::new()));
    *response.status_mut() = StatusCode::NO_CONTENT;
    response
}

fn no_policy(name: &str) -> GatewayError {
    GatewayError::new(
        ErrorCode::RouteNotFound,
        format!("no quota policy '{name}'"),
    )
}

/// The limiter's answer, as the management API answers it.
fn grpc_error(status: tonic::Status) -> GatewayError {
    use tonic::Code;
    let message = status.message().to_owned();
    match status.code() {
        Code::InvalidArgument | Code::OutOfRange => {
            GatewayError::new(ErrorCode::InvalidBody, message)
        }
        Code::NotFound => GatewayError::new(ErrorCode::RouteNotFound, message),
        Code::AlreadyExists | Code::Aborted | Code::FailedPrecondition => {
            GatewayError::new(ErrorCode::Conflict, message)
        }
        Code::Unauthenticated | Code::PermissionDenied => {
            tracing::error!(%message, "the limiter refused the gateway's quota token");
            GatewayError::new(
                ErrorCode::PlatformDegraded,
                "the limiter does not accept this gateway's quota token",
            )
        }
        Code::Ok
        | Code::Cancelled
        | Code::Unknown
        | Code::DeadlineExceeded
        | Code::ResourceExhausted
        | Code::Unimplemented
        | Code::Internal
        | Code::Unavailable
        | Code::DataLoss => {
            tracing::error!(code = ?status.code(), %message, "the quota service failed");
            GatewayError::new(
                ErrorCode::PlatformDegraded,
                "the limiter's quota service cannot be reached; retry later",
            )
        }
    }
}
