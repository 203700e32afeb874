//! Credentials through the management API: issue, rotate and revoke a profile's API tokens,
//! with the same lifecycle as `portcullis credential` ([`crate::credentials`]). A token appears
//! in the issuing answer only.

use std::time::Duration;

use http::{Method, StatusCode};
use serde_json::{Value, json};

use super::{Answer, Api, Changed, store_error};
use crate::body::{Body, json_response};
use crate::credentials::{CredentialError, TokenRequest};
use crate::error::{ErrorCode, GatewayError};
use crate::model::{ClientId, CredentialId, ProfileId};

/// `…/clients/{client}/profiles/{profile}/credentials[/{id}[/rotate]]`, split.
pub(super) struct Target<'p> {
    pub client: &'p str,
    pub profile: &'p str,
    pub credential: Option<&'p str>,
    pub rotate: bool,
}

impl<'p> Target<'p> {
    /// The credential route `path` names, if it is one.
    pub(super) fn parse(path: &'p str) -> Option<Self> {
        let rest = path.strip_prefix("/api/v1/clients/")?;
        let parts: Vec<&str> = rest.split('/').collect();
        let ok = |s: &&str| !s.is_empty();
        match parts.as_slice() {
            [client, "profiles", profile, "credentials"] if ok(client) && ok(profile) => {
                Some(Self {
                    client,
                    profile,
                    credential: None,
                    rotate: false,
                })
            }
            [client, "profiles", profile, "credentials", id]
                if ok(client) && ok(profile) && ok(id) =>
            {
                Some(Self {
                    client,
                    profile,
                    credential: Some(id),
                    rotate: false,
                })
            }
            [client, "profiles", profile, "credentials", id, "rotate"]
                if ok(client) && ok(profile) && ok(id) =>
            {
                Some(Self {
                    client,
                    profile,
                    credential: Some(id),
                    rotate: true,
                })
            }
            _ => None,
        }
    }

    /// The methods this route takes.
    pub(super) fn methods(&self) -> &'static [Method] {
        match (self.credential, self.rotate) {
            (None, _) => &[Method::POST],
            (Some(_), false) => &[Method::DELETE],
            (Some(_), true) => &[Method::POST],
        }
    }
}

#[derive(serde::Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct Options {
    /// The new credential's id (default: `<profile>-<random>`).
    #[serde(default)]
    id: Option<String>,
    /// The new token's lifetime, e.g. `90d`.
    #[serde(default, with = "crate::model::humantime_serde_opt")]
    expires_in: Option<Duration>,
    /// Rotation: how long the old token keeps working (default 24 h).
    #[serde(default, with = "crate::model::humantime_serde_opt")]
    overlap: Option<Duration>,
}

pub(super) async fn handle(
    api: &Api,
    target: Target<'_>,
    body: Body,
) -> Result<Answer, GatewayError> {
    let client = ClientId(target.client.to_owned());
    let profile = ProfileId(target.profile.to_owned());
    let resource = |id: &str| crate::audit::change::Resource {
        kind: "credentials".into(),
        id: Some(format!("{}/{}/{id}", target.client, target.profile)),
    };
    let request = |options: &Options| TokenRequest {
        client: client.clone(),
        profile: profile.clone(),
        id: options.id.clone().map(CredentialId),
        expires_in: options.expires_in,
    };
    let Some(id) = target.credential else {
        let request = request(&options(body).await?);
        let issued = crate::credentials::issue(&api.store, &api.secret, &request)
            .await
            .map_err(credential_error)?;
        return Ok(shown(issued, "credentials.create", resource));
    };
    let id = CredentialId(id.to_owned());
    if target.rotate {
        let options = options(body).await?;
        let request = request(&options);
        let overlap = options.overlap.unwrap_or(Duration::from_secs(24 * 3600));
        let issued = crate::credentials::rotate(&api.store, &api.secret, &request, &id, overlap)
            .await
            .map_err(credential_error)?;
        let mut answer = shown(issued, "credentials.rotate", resource);
        if let Some(Changed {
            after: Some(after), ..
        }) = &mut answer.1
        {
            after["replaces"] = json!(id);
            after["overlap_seconds"] = overlap.as_secs().into();
        }
        return Ok(answer);
    }
    let before = api.store.version().await.map_err(store_error)?;
    let version = crate::credentials::revoke(&api.store, &client, &profile, &id)
        .await
        .map_err(credential_error)?;
    // Revoking a revoked credential changes nothing, and records nothing.
    let changed = version != before;
    Ok((
        json_response(
            StatusCode::OK,
            &json!({"credential": id, "revoked": true, "config_version": version}),
        ),
        changed.then(|| Changed {
            action: "credentials.delete".into(),
            resource: resource(id.as_str()),
            before: None,
            after: Some(json!({"credential": id, "revoked": true})),
        }),
    ))
}

/// The issuing answer, the only place the token appears; the change record never has it.
fn shown(
    issued: crate::credentials::Issued,
    action: &str,
    resource: impl Fn(&str) -> crate::audit::change::Resource,
) -> Answer {
    let expires_at = issued.expires_at.map(crate::credentials::rfc3339);
    let after = json!({
        "credential": issued.credential,
        "kind": "api_token",
        "expires_at": expires_at,
    });
    let mut shown = after.clone();
    shown["token"] = Value::String(issued.token);
    shown["config_version"] = issued.version.into();
    (
        json_response(StatusCode::CREATED, &shown),
        Some(Changed {
            action: action.to_owned(),
            resource: resource(issued.credential.as_str()),
            before: None,
            after: Some(after),
        }),
    )
}

async fn options(body: Body) -> Result<Options, GatewayError> {
    let bytes = crate::body::collect_limited(body, 64 * 1024)
        .await
        .map_err(|e| super::bad_request(format!("the body cannot be read: {e}")))?;
    if bytes.iter().all(u8::is_ascii_whitespace) {
        return Ok(Options::default());
    }
    serde_json::from_slice(&bytes).map_err(|e| {
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
