//! Configuration objects through the management API: collections (with their operations),
//! clients (with their profiles and credentials) and identity providers, read, replaced and
//! deleted whole — the same semantics as `portcullis apply` of a file naming one object,
//! validated the same way and committed as one configuration version. `ETag`/`If-Match` make
//! concurrent edits safe. One operation or profile at a time: [`super::parts`].

use http::header::{ETAG, HeaderValue};
use http::{Response, StatusCode};
use serde_json::{Value, json};
use sha2::Digest as _;

use super::{Answer, Api, Call, Changed, bad_request, dry_run, store_error};
use crate::body::{Body, json_response};
use crate::error::{ErrorCode, GatewayError};
use crate::model::{Client, Collection, Config, IdentityProvider};
use crate::plan::{ApplyError, ApplyOptions};
use crate::store::Kind;

/// The kinds of object served, by their path segment.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ObjectKind {
    Collections,
    Clients,
    IdentityProviders,
}

impl ObjectKind {
    pub(super) fn segment(self) -> &'static str {
        match self {
            Self::Collections => "collections",
            Self::Clients => "clients",
            Self::IdentityProviders => "identity_providers",
        }
    }

    pub(super) fn singular(self) -> &'static str {
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

    pub(super) fn find(self, config: &Config, id: &str) -> Option<Value> {
        self.all(config)
            .into_iter()
            .find_map(|(i, v)| (i == id).then_some(v))
    }
}

/// The entity tag of an object as stored: its JSON, hashed.
pub(super) fn etag(object: &Value) -> String {
    let digest = sha2::Sha256::digest(object.to_string().as_bytes());
    let hex = hex::encode(&digest[..12]);
    format!("\"{hex}\"")
}

/// What a change record may show of an object: credential hashes and keys left out.
pub(super) fn redacted(mut object: Value) -> Value {
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
pub(super) async fn list(
    api: &Api,
    kind: ObjectKind,
    query: &[(String, String)],
) -> Result<Answer, GatewayError> {
    let (mut limit, mut after) = (100usize, None);
    let mut filters = Vec::new();
    for (key, value) in query.iter().cloned() {
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
            field if kind.filters().iter().any(|(name, _)| *name == field) => {
                filters.push((key, value));
            }
            other => return Err(bad_request(format!("unknown parameter '{other}'"))),
        }
    }
    let config = stored(api).await?;
    let mut all = kind.all(&config);
    // A filter compares the field as `GET` shows it, defaults included.
    all.retain(|(_, object)| {
        filters.iter().all(|(field, wanted)| {
            let value = match (&object[field.as_str()], field.as_str()) {
                (Value::Null, "status") => "published".to_owned(),
                (Value::Null, "active") => "true".to_owned(),
                (Value::String(s), _) => s.clone(),
                (Value::Null, _) => String::new(),
                (other, _) => other.to_string(),
            };
            value == *wanted
        })
    });
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

/// The `If-Match` check, made again against what is stored when the write commits.
fn precondition<'a>(
    kind: ObjectKind,
    id: &'a str,
    if_match: Option<&'a [String]>,
) -> impl Fn(&Config) -> Result<(), String> + 'a {
    if_matches(
        if_match,
        format!("{} '{id}'", kind.singular()),
        move |config| kind.find(config, id),
    )
}

/// `If-Match` against what `find` finds in a configuration (`what` names it in the refusal):
/// it holds when the found object's ETag is one of the tags, or a tag is `*` and there is one.
pub(super) fn if_matches<'a>(
    if_match: Option<&'a [String]>,
    what: String,
    find: impl Fn(&Config) -> Option<Value> + 'a,
) -> impl Fn(&Config) -> Result<(), String> + 'a {
    move |config: &Config| {
        let Some(expected) = if_match else {
            return Ok(());
        };
        let matches = find(config).is_some_and(|object| {
            let tag = etag(&object);
            expected.iter().any(|e| e == "*" || *e == tag)
        });
        if matches {
            Ok(())
        } else {
            Err(format!(
                "{what} has changed (or does not exist): read it again and retry with its new ETag"
            ))
        }
    }
}

/// Named as in the path, like the records of refused requests.
fn resource(kind: ObjectKind, id: &str) -> crate::audit::change::Resource {
    crate::audit::change::Resource {
        kind: kind.segment().into(),
        id: Some(id.to_owned()),
    }
}

/// `GET /api/v1/{kind}/{id}`.
pub(super) async fn get(api: &Api, kind: ObjectKind, id: &str) -> Result<Answer, GatewayError> {
    let object = kind
        .find(&stored(api).await?, id)
        .ok_or_else(|| not_found(kind, id))?;
    Ok((
        with_etag(
            json_response(StatusCode::OK, &redacted(object.clone())),
            &object,
        ),
        None,
    ))
}

/// `PUT /api/v1/{kind}/{id}`: creates or replaces the object.
pub(super) async fn put(
    api: &Api,
    kind: ObjectKind,
    id: &str,
    call: &Call,
    may_change_credentials: bool,
) -> Result<Answer, GatewayError> {
    let stored_config = stored(api).await?;
    let before = kind.find(&stored_config, id);
    let file = file_for_put(&stored_config, kind, id, &call.body, may_change_credentials)?;
    write(api, kind, id, before, file, call, None).await
}

/// The configuration a `PUT` of `body` as `kind`/`id` writes, under the rules for what a
/// body may change: stored credential material stays as it is, and only an operator who may
/// manage credentials adds or changes them.
pub(super) fn file_for_put(
    stored_config: &Config,
    kind: ObjectKind,
    id: &str,
    body: &[u8],
    may_change_credentials: bool,
) -> Result<Config, GatewayError> {
    let before = kind.find(stored_config, id);
    let mut file = parse(kind, id, body)?;
    // A stored credential's material is shown `[redacted]` and never changes here (rotate
    // instead): the stored material stands in for whatever the body says.
    if let (Some(new), Some(old)) = (
        file.clients.first_mut(),
        stored_config.clients.iter().find(|c| c.id.as_str() == id),
    ) {
        for profile in &mut new.profiles {
            let Some(stored_profile) = old.profiles.iter().find(|p| p.id == profile.id) else {
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
    // Credentials are the admin's: an editor's client may list the stored ones as they are
    // (as `GET` shows them), nothing else.
    if kind == ObjectKind::Clients
        && !may_change_credentials
        && !credentials_unchanged(kind.find(&file, id).as_ref(), before.as_ref())
    {
        return Err(GatewayError::new(
            ErrorCode::PermissionDenied,
            "adding or changing credentials needs the manage_operators permission (use …/credentials)",
        ));
    }
    Ok(file)
}

/// `POST /api/v1/collections/{id}/publish` and `…/unpublish`.
pub(super) async fn set_status(
    api: &Api,
    id: &str,
    status: crate::model::Status,
    call: &Call,
) -> Result<Answer, GatewayError> {
    if !call.body.iter().all(u8::is_ascii_whitespace) {
        return Err(bad_request("this endpoint takes no body"));
    }
    let kind = ObjectKind::Collections;
    let stored_config = stored(api).await?;
    let before = kind.find(&stored_config, id);
    let Some(mut collection) = stored_config
        .collections
        .into_iter()
        .find(|c| c.id.as_str() == id)
    else {
        return Err(not_found(kind, id));
    };
    collection.status = status;
    let file = Config {
        collections: vec![collection],
        ..Config::default()
    };
    let action = match status {
        crate::model::Status::Published => "collections.publish",
        crate::model::Status::Draft => "collections.unpublish",
    };
    write(api, kind, id, before, file, call, Some(action)).await
}

/// Writes `file` (naming the one object `kind`/`id`) as one configuration version: the same
/// path as `apply`, checked against `If-Match` at commit. The change is recorded as `action`
/// (default: `<kind>.create` or `<kind>.update`).
async fn write(
    api: &Api,
    kind: ObjectKind,
    id: &str,
    before: Option<Value>,
    file: Config,
    call: &Call,
    action: Option<&str>,
) -> Result<Answer, GatewayError> {
    let check = precondition(kind, id, call.if_match.as_deref());
    let options = ApplyOptions {
        dry_run: call.dry_run,
        ..ApplyOptions::default()
    };
    let applied = crate::plan::apply_checked(&api.store, &file, options, &check)
        .await
        .map_err(|e| apply_error(kind, e))?;
    let action = action.map_or_else(
        || {
            format!(
                "{}.{}",
                kind.segment(),
                if before.is_some() { "update" } else { "create" }
            )
        },
        str::to_owned,
    );
    if call.dry_run {
        let after = kind.find(&file, id);
        return Ok(dry_run(Changed {
            action,
            resource: resource(kind, id),
            before: before.map(redacted),
            after: after.map(redacted),
        }));
    }
    // What is stored now; if that cannot be read, what was written: the change is made
    // (and recorded) either way.
    let after = match stored(api).await {
        Ok(config) => kind.find(&config, id),
        Err(_) => None,
    }
    .or_else(|| kind.find(&file, id))
    .unwrap_or(Value::Null);
    let status = if before.is_some() {
        StatusCode::OK
    } else {
        StatusCode::CREATED
    };
    let change = applied.committed.then(|| Changed {
        action,
        resource: resource(kind, id),
        before: before.map(redacted),
        after: Some(redacted(after.clone())),
    });
    Ok((
        with_etag(json_response(status, &redacted(after.clone())), &after),
        change,
    ))
}

/// `DELETE /api/v1/{kind}/{id}`.
pub(super) async fn delete(
    api: &Api,
    kind: ObjectKind,
    id: &str,
    call: &Call,
) -> Result<Answer, GatewayError> {
    let before = kind
        .find(&stored(api).await?, id)
        .ok_or_else(|| not_found(kind, id))?;
    let check = precondition(kind, id, call.if_match.as_deref());
    let applied =
        crate::plan::remove_checked(&api.store, (kind.store_kind(), id), call.dry_run, &check)
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
    let change = Changed {
        action: format!("{}.delete", kind.segment()),
        resource: resource(kind, id),
        before: Some(redacted(before)),
        after: None,
    };
    if call.dry_run {
        return Ok(dry_run(change));
    }
    let mut response = Response::new(crate::body::full(bytes::Bytes::new()));
    *response.status_mut() = StatusCode::NO_CONTENT;
    Ok((response, applied.committed.then_some(change)))
}

pub(super) fn with_etag(mut response: Response<Body>, object: &Value) -> Response<Body> {
    if let Ok(value) = HeaderValue::from_str(&etag(object)) {
        response.headers_mut().insert(ETAG, value);
    }
    response
}

pub(super) async fn stored(api: &Api) -> Result<Config, GatewayError> {
    let (_, records) = api.store.load().await.map_err(store_error)?;
    crate::store::assemble(&records).map_err(store_error)
}

pub(super) fn not_found(kind: ObjectKind, id: &str) -> GatewayError {
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
pub(super) fn apply_error(kind: ObjectKind, e: ApplyError) -> GatewayError {
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
