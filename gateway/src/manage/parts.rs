//! One part of an object at a time: a collection's operations and a client's profiles, read,
//! replaced and deleted on their own. A part is written as its parent is — the parent with
//! the part changed goes through the parent's own `PUT` rules, validation and one
//! configuration version — but has its own `ETag`, its own `If-Match` and its own change
//! record (`operations.update`, `profiles.delete`, …, naming `parent/part`).

use http::{Response, StatusCode};
use serde_json::Value;

use super::objects::{self, ObjectKind};
use super::{Answer, Api, Call, Changed, dry_run};
use crate::body::json_response;
use crate::error::{ErrorCode, GatewayError};
use crate::model::Config;
use crate::plan::ApplyOptions;

/// The parts served, by their path segment under their parent.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PartKind {
    /// `/collections/{id}/operations/{operation}`.
    Operations,
    /// `/clients/{id}/profiles/{profile}`.
    Profiles,
}

impl PartKind {
    pub(super) fn parent(self) -> ObjectKind {
        match self {
            Self::Operations => ObjectKind::Collections,
            Self::Profiles => ObjectKind::Clients,
        }
    }

    pub(super) fn segment(self) -> &'static str {
        match self {
            Self::Operations => "operations",
            Self::Profiles => "profiles",
        }
    }

    pub(super) fn singular(self) -> &'static str {
        match self {
            Self::Operations => "operation",
            Self::Profiles => "profile",
        }
    }

    /// The part `id` of `parent` (the parent as JSON).
    fn find(self, parent: &Value, id: &str) -> Option<Value> {
        parent[self.segment()]
            .as_array()?
            .iter()
            .find(|part| part["id"] == id)
            .cloned()
    }

    /// The part as stored in `config`.
    fn stored_in(self, config: &Config, parent: &str, id: &str) -> Option<Value> {
        self.find(&self.parent().find(config, parent)?, id)
    }
}

/// `GET /api/v1/{parent}/{id}/{part}/{part_id}`.
pub(super) async fn get(
    api: &Api,
    kind: PartKind,
    parent: &str,
    id: &str,
) -> Result<Answer, GatewayError> {
    let config = objects::stored(api).await?;
    let part = found(kind, &config, parent, id)?;
    Ok((
        objects::with_etag(
            json_response(StatusCode::OK, &objects::redacted(part.clone())),
            &part,
        ),
        None,
    ))
}

/// `PUT /api/v1/{parent}/{id}/{part}/{part_id}`: creates or replaces the part; the parent's
/// other parts stay as they are.
pub(super) async fn put(
    api: &Api,
    kind: PartKind,
    parent: &str,
    id: &str,
    call: &Call,
    may_change_credentials: bool,
) -> Result<Answer, GatewayError> {
    let config = objects::stored(api).await?;
    let mut whole = parent_of(kind, &config, parent)?;
    let before = kind.find(&whole, id);
    let body: Value = serde_json::from_slice(&call.body).map_err(|e| {
        GatewayError::new(ErrorCode::InvalidBody, format!("the body is not JSON: {e}"))
    })?;
    if body.get("id").and_then(Value::as_str) != Some(id) {
        return Err(GatewayError::new(
            ErrorCode::InvalidBody,
            format!("id: must be '{id}', as in the path"),
        ));
    }
    let parts = parts_of(kind, &mut whole);
    match parts.iter_mut().find(|p| p["id"] == id) {
        Some(stored) => *stored = body,
        None => parts.push(body),
    }
    let created = before.is_none();
    let action = if created { "create" } else { "update" };
    let file = file_for(kind, &config, parent, &whole, may_change_credentials)?;
    let (after, committed) = write(api, kind, parent, id, &file, call).await?;
    let change = Changed {
        action: format!("{}.{action}", kind.segment()),
        resource: resource(kind, parent, id),
        before: before.map(objects::redacted),
        after: after.clone().map(objects::redacted),
    };
    if call.dry_run {
        return Ok(dry_run(change));
    }
    let after = after.unwrap_or(Value::Null);
    let status = if created {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    Ok((
        objects::with_etag(
            json_response(status, &objects::redacted(after.clone())),
            &after,
        ),
        committed.then_some(change),
    ))
}

/// `DELETE /api/v1/{parent}/{id}/{part}/{part_id}`.
pub(super) async fn delete(
    api: &Api,
    kind: PartKind,
    parent: &str,
    id: &str,
    call: &Call,
) -> Result<Answer, GatewayError> {
    let config = objects::stored(api).await?;
    let before = found(kind, &config, parent, id)?;
    let mut whole = parent_of(kind, &config, parent)?;
    parts_of(kind, &mut whole).retain(|p| p["id"] != id);
    // Taking a part away adds no credential: no permission beyond the endpoint's is needed.
    let file = file_for(kind, &config, parent, &whole, true)?;
    let (_, committed) = write(api, kind, parent, id, &file, call).await?;
    let change = Changed {
        action: format!("{}.delete", kind.segment()),
        resource: resource(kind, parent, id),
        before: Some(objects::redacted(before)),
        after: None,
    };
    if call.dry_run {
        return Ok(dry_run(change));
    }
    let mut response = Response::new(crate::body::full(bytes::Bytes::new()));
    *response.status_mut() = StatusCode::NO_CONTENT;
    Ok((response, committed.then_some(change)))
}

fn found(kind: PartKind, config: &Config, parent: &str, id: &str) -> Result<Value, GatewayError> {
    let whole = parent_of(kind, config, parent)?;
    kind.find(&whole, id).ok_or_else(|| {
        GatewayError::new(
            ErrorCode::RouteNotFound,
            format!(
                "{} '{parent}' has no {} '{id}'",
                kind.parent().singular(),
                kind.singular()
            ),
        )
    })
}

fn parent_of(kind: PartKind, config: &Config, parent: &str) -> Result<Value, GatewayError> {
    kind.parent()
        .find(config, parent)
        .ok_or_else(|| objects::not_found(kind.parent(), parent))
}

/// The parent's list of parts, made if it had none.
fn parts_of(kind: PartKind, whole: &mut Value) -> &mut Vec<Value> {
    let list = &mut whole[kind.segment()];
    if !list.is_array() {
        *list = Value::Array(Vec::new());
    }
    list.as_array_mut()
        .expect("an array, made above if need be")
}

/// The parent, as changed, under the parent's own `PUT` rules.
fn file_for(
    kind: PartKind,
    config: &Config,
    parent: &str,
    whole: &Value,
    may_change_credentials: bool,
) -> Result<Config, GatewayError> {
    let bytes = whole.to_string().into_bytes();
    objects::file_for_put(
        config,
        kind.parent(),
        parent,
        &bytes,
        may_change_credentials,
    )
}

/// Writes the parent in `file` as one configuration version, checked at commit against the
/// part's `If-Match`; answers the part as stored afterwards and whether anything changed.
async fn write(
    api: &Api,
    kind: PartKind,
    parent: &str,
    id: &str,
    file: &Config,
    call: &Call,
) -> Result<(Option<Value>, bool), GatewayError> {
    let check = objects::if_matches(
        call.if_match.as_deref(),
        format!("{} '{parent}/{id}'", kind.singular()),
        |config| kind.stored_in(config, parent, id),
    );
    let options = ApplyOptions {
        dry_run: call.dry_run,
        ..ApplyOptions::default()
    };
    let applied = crate::plan::apply_checked(&api.store, file, options, &check)
        .await
        .map_err(|e| objects::apply_error(kind.parent(), e))?;
    // What is stored now (if that can be read), else what was, or would be, written.
    let stored = match call.dry_run {
        true => None,
        false => objects::stored(api).await.ok(),
    };
    let after = kind.stored_in(stored.as_ref().unwrap_or(file), parent, id);
    Ok((after, applied.committed))
}

/// Named `parent/part`, as in the path.
fn resource(kind: PartKind, parent: &str, id: &str) -> crate::audit::change::Resource {
    crate::audit::change::Resource {
        kind: kind.segment().into(),
        id: Some(format!("{parent}/{id}")),
    }
}
