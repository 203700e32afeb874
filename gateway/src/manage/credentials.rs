//! Credentials through the management API: issue, rotate and revoke a profile's API tokens,
//! with the same lifecycle as `portcullis credential` ([`crate::credentials`]). A token appears
//! in the issuing answer only.

use std::time::Duration;

use http::StatusCode;
use serde_json::json;

use super::endpoints::Action;
use super::{Answer, Api, Call, Changed, dry_run, store_error};
use crate::body::json_response;
use crate::credentials::{CredentialError, TokenRequest};
use crate::error::{ErrorCode, GatewayError};
use crate::model::{ClientId, CredentialId, ProfileId};

/// The body of an issue or a rotation (all optional).
#[derive(serde::Deserialize, Default, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct Options {
    /// The new credential's id (default: `<profile>-<random>`).
    #[serde(default)]
    id: Option<String>,
    /// The new token's lifetime, e.g. `90d`.
    #[serde(default, with = "crate::model::humantime_serde_opt")]
    #[schemars(with = "Option<crate::model::HumanDuration>")]
    expires_in: Option<Duration>,
    /// Rotation: how long the old token keeps working (default 24 h).
    #[serde(default, with = "crate::model::humantime_serde_opt")]
    #[schemars(with = "Option<crate::model::HumanDuration>")]
    overlap: Option<Duration>,
}

/// An issued token: shown in this answer only.
#[derive(serde::Serialize, schemars::JsonSchema)]
pub(crate) struct Issued {
    credential: CredentialId,
    /// `api_token`.
    kind: String,
    expires_at: Option<String>,
    /// The token itself: keep it, it is not shown again.
    token: String,
    /// The configuration version that holds it.
    config_version: u64,
}

/// A revoked credential.
#[derive(serde::Serialize, schemars::JsonSchema)]
pub(crate) struct Revoked {
    credential: CredentialId,
    revoked: bool,
    config_version: u64,
}

/// Issues (`…/credentials`), rotates (`…/{credential}/rotate`) or revokes (`…/{credential}`).
pub(super) async fn handle(api: &Api, action: Action, call: &Call) -> Result<Answer, GatewayError> {
    let [client, profile, rest @ ..] = call.params.as_slice() else {
        unreachable!("credential paths name a client and a profile");
    };
    let credential = rest.first();
    let client_id = ClientId(client.clone());
    let profile_id = ProfileId(profile.clone());
    let resource = |id: &str| crate::audit::change::Resource {
        kind: "credentials".into(),
        id: Some(format!("{client}/{profile}/{id}")),
    };
    let request = |options: &Options| TokenRequest {
        client: client_id.clone(),
        profile: profile_id.clone(),
        id: options.id.clone().map(CredentialId),
        expires_in: options.expires_in,
        dry_run: call.dry_run,
    };
    match (action, credential) {
        (Action::IssueCredential, None) => {
            let options = options(call)?;
            let issued = crate::credentials::issue(&api.store, &api.secret, &request(&options))
                .await
                .map_err(credential_error)?;
            Ok(shown(
                issued,
                "credentials.create",
                resource,
                None,
                call.dry_run,
            ))
        }
        (Action::RotateCredential, Some(id)) => {
            let options = options(call)?;
            let id = CredentialId(id.clone());
            let overlap = options.overlap.unwrap_or(Duration::from_secs(24 * 3600));
            let rotation = json!({"replaces": id, "overlap_seconds": overlap.as_secs()});
            let issued = crate::credentials::rotate(
                &api.store,
                &api.secret,
                &request(&options),
                &id,
                overlap,
            )
            .await
            .map_err(credential_error)?;
            Ok(shown(
                issued,
                "credentials.rotate",
                resource,
                Some(rotation),
                call.dry_run,
            ))
        }
        (Action::RevokeCredential, Some(id)) => {
            let id = CredentialId(id.clone());
            let change = Changed {
                action: "credentials.delete".into(),
                resource: resource(id.as_str()),
                before: None,
                after: Some(json!({"credential": id, "revoked": true})),
            };
            let (version, changed) =
                crate::credentials::revoke(&api.store, &client_id, &profile_id, &id, call.dry_run)
                    .await
                    .map_err(credential_error)?;
            if call.dry_run {
                return Ok(dry_run(change));
            }
            // Revoking a revoked credential changes nothing, and records nothing.
            Ok((
                json_response(
                    StatusCode::OK,
                    &Revoked {
                        credential: id,
                        revoked: true,
                        config_version: version,
                    },
                ),
                changed.then_some(change),
            ))
        }
        (other, _) => unreachable!("{other:?} is not a credential endpoint"),
    }
}

/// The issuing answer, the only place the token appears; the change record never has it.
fn shown(
    issued: crate::credentials::Issued,
    action: &str,
    resource: impl Fn(&str) -> crate::audit::change::Resource,
    rotation: Option<serde_json::Value>,
    dry: bool,
) -> Answer {
    let expires_at = issued.expires_at.map(crate::credentials::rfc3339);
    let mut after = json!({
        "credential": issued.credential,
        "kind": "api_token",
        "expires_at": expires_at,
    });
    if let Some(serde_json::Value::Object(rotation)) = rotation {
        after.as_object_mut().expect("an object").extend(rotation);
    }
    let change = Changed {
        action: action.to_owned(),
        resource: resource(issued.credential.as_str()),
        before: None,
        after: Some(after),
    };
    if dry {
        // The token was made to check the request, and is forgotten: nothing was stored.
        return dry_run(change);
    }
    (
        json_response(
            StatusCode::CREATED,
            &Issued {
                credential: issued.credential,
                kind: "api_token".into(),
                expires_at,
                token: issued.token,
                config_version: issued.version,
            },
        ),
        Some(change),
    )
}

fn options(call: &Call) -> Result<Options, GatewayError> {
    if call.body.iter().all(u8::is_ascii_whitespace) {
        return Ok(Options::default());
    }
    serde_json::from_slice(&call.body).map_err(|e| {
        GatewayError::new(
            ErrorCode::InvalidBody,
            format!("the body is not valid: {e}"),
        )
    })
}

fn credential_error(e: CredentialError) -> GatewayError {
    match e {
        CredentialError::NoProfile { .. } | CredentialError::NoCredential(_) => {
            GatewayError::new(ErrorCode::RouteNotFound, e.to_string())
        }
        CredentialError::NotAToken(_) | CredentialError::Exists(_) => {
            GatewayError::new(ErrorCode::Conflict, e.to_string())
        }
        CredentialError::TooLong(_) => GatewayError::new(ErrorCode::InvalidBody, e.to_string()),
        CredentialError::Apply(crate::plan::ApplyError::Store(e)) | CredentialError::Store(e) => {
            store_error(e)
        }
        CredentialError::Apply(other) => {
            GatewayError::new(ErrorCode::InvalidBody, other.to_string())
        }
    }
}
