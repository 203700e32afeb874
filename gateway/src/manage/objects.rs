//! Configuration objects through the management API: collections (with their operations),
//! clients (with their profiles and credentials) and identity providers, read, replaced and
//! deleted whole — the same
//! semantics as `portcullis apply` of a file naming one object, validated the same way and
//! committed as one configuration version. `ETag`/`If-Match` make concurrent edits safe.

use http::header::{ETAG, HeaderValue, IF_MATCH};
use http::{Method, Response, StatusCode};
use serde_json::{Value, json};
use sha2::Digest as _;

use super::{Answer, Api, Changed, bad_request, store_error};
use crate::body::{Body, json_response};
use crate::error::{ErrorCode, GatewayError};
use crate::model::{Client, Collection, Config, IdentityProvider};
use crate::plan::{ApplyError, ApplyOptions};
use crate::store::Kind;

/// The kinds of object served, by their path segment.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum ObjectKind {
    Collections,
    Clients,
    IdentityProviders,
}

impl ObjectKind {
    pub(super) fn from_segment(segment: &str) -> Option<Self> {
        match segment {
            "collections" => Some(Self::Collections),
            "clients" => Some(Self::Clients),
            "identity_providers" => Some(Self::IdentityProviders),
            _ => None,
        }
    }

    fn segment(self) -> &'static str {
        match self {
            Self::Collections => "collections",
            Self::Clients => "clients",
            Self::IdentityProviders => "identity_providers",
        }
    }

    fn singular(self) -> &'static str {
        match self {
            Self::Collections => "collection",
            Self::Clients => "client",
            Self::IdentityProviders => "identity provider",
        }
    }

    fn store_kind(self) -> Kind {
        match self {
            Self::Collections => Kind::Collection,
            Self::Clients => Kind::Client,
            Self::IdentityProviders => Kind::IdentityProvider,
        }
    }

    /// Every object of this kind in `config`, as JSON, by id.
    fn all(self, config: &Config) -> Vec<(String, Value)> {
        match self {
            Self::Collections => config
                .collections
                .iter()
                .map(|c| (c.id.to_string(), json!(c)))
                .collect(),
            Self::Clients => config
                .clients
                .iter()
                .map(|c| (c.id.to_string(), json!(c)))
                .collect(),
            Self::IdentityProviders => config
                .identity_providers
                .iter()
                .map(|p| (p.id.to_string(), json!(p)))
                .collect(),
        }
    }

    fn find(self, config: &Config, id: &str) -> Option<Value> {
        self.all(config)
            .into_iter()
            .find_map(|(i, v)| (i == id).then_some(v))
    }
}

/// The entity tag of an object as stored: its JSON, hashed.
fn etag(object: &Value) -> String {
    let digest = sha2::Sha256::digest(object.to_string().as_bytes());
    let hex: String = digest.iter().take(12).map(|b| format!("{b:02x}")).collect();
    format!("\"{hex}\"")
}

/// What a change record may show of an object: credential hashes and keys left out.
fn redacted(mut object: Value) -> Value {
    fn walk(v: &mut Value) {
        match v {
            Value::Object(map) => {
                for key in [
                    "token_hash",
                    "public_key_pem",
                    "ca_pem",
                    "fingerprint_sha256",
                ] {
                    if let Some(field) = map.get_mut(key) {
                        *field = Value::String("[redacted]".into());
                    }
                }
                map.values_mut().for_each(walk);
            }
            Value::Array(items) => items.iter_mut().for_each(walk),
            Value::Null | Value::Bool(_) | Value::Number(_) | Value::String(_) => {}
        }
    }
    walk(&mut object);
    object
}

/// Whether every credential `body` lists is stored, as it is (compared as `GET` shows them).
fn credentials_unchanged(body: Option<&Value>, stored: Option<&Value>) -> bool {
    let credentials = |client: Option<&Value>| -> Vec<(String, String, Value)> {
        client
            .and_then(|c| c["profiles"].as_array())
            .into_iter()
            .flatten()
            .flat_map(|p| {
                let profile = p["id"].as_str().unwrap_or("").to_owned();
                p["credentials"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .map(move |c| {
                        let id = c["id"].as_str().unwrap_or("").to_owned();
                        (profile.clone(), id, redacted(c.clone()))
                    })
            })
            .collect()
    };
    let stored = credentials(stored);
    credentials(body).iter().all(|c| stored.contains(c))
}

/// `GET /api/v1/{kind}`: by id, a page at a time (`limit`, default 100, at most 1000;
/// `cursor` from the previous page's `next_cursor`).
pub(super) async fn list(api: &Api, kind: ObjectKind, query: &str) -> Result<Answer, GatewayError> {
    let (mut limit, mut after) = (100usize, None);
    for (key, value) in super::params(query) {
        match key.as_str() {
            "limit" => {
                limit = value
                    .parse()
                    .ok()
                    .filter(|n| (1..=1000).contains(n))
                    .ok_or_else(|| bad_request("limit is a number from 1 to 1000"))?;
            }
            "cursor" => {
                use base64::Engine as _;
                let id = base64::engine::general_purpose::URL_SAFE_NO_PAD
                    .decode(&value)
                    .ok()
                    .and_then(|b| String::from_utf8(b).ok())
                    .ok_or_else(|| bad_request("cursor is not one this API returned"))?;
                after = Some(id);
            }
            other => return Err(bad_request(format!("unknown parameter '{other}'"))),
        }
    }
    let config = stored(api).await?;
    let mut all = kind.all(&config);
    all.sort_by(|a, b| a.0.cmp(&b.0));
    let start = after.map_or(0, |a| all.partition_point(|(id, _)| *id <= a));
    let page = &all[start.min(all.len())..(start + limit).min(all.len())];
    let mut body = serde_json::Map::new();
    body.insert(
        kind.segment().into(),
        Value::Array(page.iter().map(|(_, v)| redacted(v.clone())).collect()),
    );
    if start + page.len() < all.len()
        && let Some((last, _)) = page.last()
    {
        use base64::Engine as _;
        body.insert(
            "next_cursor".into(),
            base64::engine::general_purpose::URL_SAFE_NO_PAD
                .encode(last)
                .into(),
        );
    }
    Ok((json_response(StatusCode::OK, &Value::Object(body)), None))
}

/// `GET`, `PUT` or `DELETE /api/v1/{kind}/{id}`.
pub(super) async fn one(
    api: &Api,
    kind: ObjectKind,
    id: &str,
    method: &Method,
    headers: &http::HeaderMap,
    body: Body,
    may_change_credentials: bool,
) -> Result<Answer, GatewayError> {
    // `If-Match` may list several tags.
    let if_match: Option<Vec<String>> = headers.get(IF_MATCH).map(|v| {
        v.to_str()
            .unwrap_or("")
            .split(',')
            .map(|t| t.trim().to_owned())
            .collect()
    });
    let stored_config = stored(api).await?;
    let before = kind.find(&stored_config, id);
    // Checked again against what is stored when the write commits.
    let check = |config: &Config| -> Result<(), String> {
        let Some(expected) = &if_match else {
            return Ok(());
        };
        let current = kind.find(config, id);
        let matches = match &current {
            Some(object) => {
                let tag = etag(object);
                expected.iter().any(|e| e == "*" || *e == tag)
            }
            None => false,
        };
        if matches {
            Ok(())
        } else {
            Err(format!(
                "{} '{id}' has changed (or does not exist): read it again and retry with its new ETag",
                kind.singular()
            ))
        }
    };
    // Named as in the path, like the records of refused requests.
    let resource = crate::audit::change::Resource {
        kind: kind.segment().into(),
        id: Some(id.to_owned()),
    };
    match *method {
        Method::GET => {
            let object = before.ok_or_else(|| not_found(kind, id))?;
            Ok((
                with_etag(
                    json_response(StatusCode::OK, &redacted(object.clone())),
                    &object,
                ),
                None,
            ))
        }
        Method::PUT => {
            let bytes = crate::body::collect_limited(body, 1024 * 1024)
                .await
                .map_err(|e| bad_request(format!("the body cannot be read: {e}")))?;
            let mut file = parse(kind, id, &bytes)?;
            // A stored credential's material is shown `[redacted]` and never changes here
            // (rotate instead): the stored material stands in for whatever the body says.
            if let (Some(new), Some(old)) = (
                file.clients.first_mut(),
                stored_config.clients.iter().find(|c| c.id.as_str() == id),
            ) {
                for profile in &mut new.profiles {
                    let Some(stored_profile) = old.profiles.iter().find(|p| p.id == profile.id)
                    else {
                        continue;
                    };
                    for credential in &mut profile.credentials {
                        if let Some(kept) = stored_profile
                            .credentials
                            .iter()
                            .find(|c| c.id == credential.id)
                        {
                            credential.kind = kept.kind.clone();
                        }
                    }
                }
            }
            // Credentials are the admin's: an editor's client may list the stored ones as they
            // are (as `GET` shows them), nothing else.
            if kind == ObjectKind::Clients
                && !may_change_credentials
                && !credentials_unchanged(kind.find(&file, id).as_ref(), before.as_ref())
            {
                return Err(GatewayError::new(
                    ErrorCode::PermissionDenied,
                    "adding or changing credentials needs the manage_operators permission (use …/credentials)",
                ));
            }
            let applied =
                crate::plan::apply_checked(&api.store, &file, ApplyOptions::default(), &check)
                    .await
                    .map_err(|e| apply_error(kind, e))?;
            let after = kind
                .find(&stored(api).await?, id)
                .ok_or_else(|| not_found(kind, id))?;
            let status = if before.is_some() {
                StatusCode::OK
            } else {
                StatusCode::CREATED
            };
            let change = applied.committed.then(|| Changed {
                action: format!(
                    "{}.{}",
                    kind.segment(),
                    if before.is_some() { "update" } else { "create" }
                ),
                resource,
                before: before.map(redacted),
                after: Some(redacted(after.clone())),
            });
            Ok((
                with_etag(json_response(status, &redacted(after.clone())), &after),
                change,
            ))
        }
        Method::DELETE => {
            if before.is_none() {
                return Err(not_found(kind, id));
            }
            let applied = crate::plan::remove_checked(&api.store, (kind.store_kind(), id), &check)
                .await
                .map_err(|e| match e {
                    // Deleting leaves something that refers to it.
                    ApplyError::Invalid(problems) => GatewayError::new(
                        ErrorCode::Conflict,
                        format!(
                            "{} '{id}' is still referred to: {}",
                            kind.singular(),
                            problems
                                .iter()
                                .map(ToString::to_string)
                                .collect::<Vec<_>>()
                                .join("; ")
                        ),
                    ),
                    other @ (ApplyError::File(_)
                    | ApplyError::Store(_)
                    | ApplyError::Precondition(_)) => apply_error(kind, other),
                })?;
            let change = applied.committed.then(|| Changed {
                action: format!("{}.delete", kind.segment()),
                resource,
                before: before.map(redacted),
                after: None,
            });
            let mut response = Response::new(crate::body::full(bytes::Bytes::new()));
            *response.status_mut() = StatusCode::NO_CONTENT;
            Ok((response, change))
        }
        _ => unreachable!("the router allows GET, PUT and DELETE only"),
    }
}

fn with_etag(mut response: Response<Body>, object: &Value) -> Response<Body> {
    if let Ok(value) = HeaderValue::from_str(&etag(object)) {
        response.headers_mut().insert(ETAG, value);
    }
    response
}

async fn stored(api: &Api) -> Result<Config, GatewayError> {
    let (_, records) = api.store.load().await.map_err(store_error)?;
    crate::store::assemble(&records).map_err(store_error)
}

fn not_found(kind: ObjectKind, id: &str) -> GatewayError {
    GatewayError::new(
        ErrorCode::RouteNotFound,
        format!("no {} '{id}'", kind.singular()),
    )
}

/// The body as a configuration naming just this object. Its `id` must be the path's.
fn parse(kind: ObjectKind, id: &str, bytes: &[u8]) -> Result<Config, GatewayError> {
    let invalid = |message: String| GatewayError::new(ErrorCode::InvalidBody, message);
    let value: Value =
        serde_json::from_slice(bytes).map_err(|e| invalid(format!("the body is not JSON: {e}")))?;
    if value.get("id").and_then(Value::as_str) != Some(id) {
        return Err(invalid(format!("id: must be '{id}', as in the path")));
    }
    let mut config = Config::default();
    let shape = |e: serde_path_to_error::Error<serde_json::Error>| {
        let path = e.path().to_string();
        invalid(format!("{path}: {}", e.into_inner()))
    };
    match kind {
        ObjectKind::Collections => config
            .collections
            .push(serde_path_to_error::deserialize::<_, Collection>(value).map_err(shape)?),
        ObjectKind::Clients => config
            .clients
            .push(serde_path_to_error::deserialize::<_, Client>(value).map_err(shape)?),
        ObjectKind::IdentityProviders => config
            .identity_providers
            .push(serde_path_to_error::deserialize::<_, IdentityProvider>(value).map_err(shape)?),
    }
    Ok(config)
}

/// Why a write was refused, as the API answers it. Field paths are the body's.
fn apply_error(kind: ObjectKind, e: ApplyError) -> GatewayError {
    let prefix = match kind {
        ObjectKind::Collections => "collections[0].",
        ObjectKind::Clients => "clients[0].",
        ObjectKind::IdentityProviders => "identity_providers[0].",
    };
    match e {
        ApplyError::Precondition(message) => {
            GatewayError::new(ErrorCode::PreconditionFailed, message)
        }
        ApplyError::File(crate::config::ConfigError::Invalid(problems)) => GatewayError::new(
            ErrorCode::InvalidBody,
            problems
                .iter()
                .map(|p| {
                    let path = p.path.strip_prefix(prefix).unwrap_or(&p.path);
                    format!("{path}: {}", p.message)
                })
                .collect::<Vec<_>>()
                .join("; "),
        ),
        ApplyError::File(other) => GatewayError::new(ErrorCode::InvalidBody, other.to_string()),
        // Valid alone, not with what is stored (a base path taken by another collection…).
        ApplyError::Invalid(problems) => GatewayError::new(
            ErrorCode::Conflict,
            problems
                .iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>()
                .join("; "),
        ),
        ApplyError::Store(e) => store_error(e),
    }
}
