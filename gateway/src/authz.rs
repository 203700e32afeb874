//! Authorization: whether an authenticated caller may call the routed operation. Checked in a
//! fixed order — client, profile, source address, product grant, scopes — so each denial names
//! the first condition that failed.

use std::net::IpAddr;

use http::header::{HeaderValue, WWW_AUTHENTICATE};
use time::OffsetDateTime;

use crate::auth::Caller;
use crate::error::{ErrorCode, GatewayError};
use crate::snapshot::{CompiledCollection, CompiledOperation};

/// Checks that `caller` may call `operation` of `collection` from `source`.
pub fn authorize(
    caller: &Caller<'_>,
    collection: &CompiledCollection,
    operation: &CompiledOperation,
    source: IpAddr,
    now: OffsetDateTime,
) -> Result<(), GatewayError> {
    admit(caller, source, now)?;
    grant(caller, collection, operation)
}

/// The caller's own standing, whatever it calls: client and profile active, profile not
/// expired, source address allowed. The Gateway MCP checks this for every request.
pub fn admit(caller: &Caller<'_>, source: IpAddr, now: OffsetDateTime) -> Result<(), GatewayError> {
    if !caller.client.active {
        return Err(GatewayError::new(
            ErrorCode::ClientInactive,
            "this client is deactivated",
        ));
    }
    let profile = caller.profile;
    if !profile.active {
        return Err(GatewayError::new(
            ErrorCode::ProfileInactive,
            "this profile is deactivated",
        ));
    }
    if profile.expires_at.is_some_and(|t| t <= now) {
        return Err(GatewayError::new(
            ErrorCode::ProfileInactive,
            "this profile has expired",
        ));
    }
    let source = source.to_canonical();
    if !profile.ip_allowlist.is_empty() && !profile.ip_allowlist.iter().any(|n| n.contains(&source))
    {
        return Err(GatewayError::new(
            ErrorCode::IpNotAllowed,
            format!("requests from {source} are not allowed for this profile"),
        ));
    }
    Ok(())
}

/// Whether the caller's profile may use this operation: the collection is granted to it and
/// offered in its environment, and the caller holds the operation's scopes. The Gateway MCP
/// lists exactly the tools that pass this.
pub fn grant(
    caller: &Caller<'_>,
    collection: &CompiledCollection,
    operation: &CompiledOperation,
) -> Result<(), GatewayError> {
    let profile = caller.profile;
    let offered_here = collection.upstreams.contains_key(&profile.environment);
    if !profile.collections.contains(&collection.id) || !offered_here {
        return Err(GatewayError::new(
            ErrorCode::ProductNotGranted,
            format!(
                "this profile is not granted the '{}' API in {}",
                collection.id, profile.environment
            ),
        ));
    }
    let missing: Vec<&str> = operation
        .scopes
        .iter()
        .filter(|s| caller.scopes.binary_search(s).is_err())
        .map(String::as_str)
        .collect();
    if !missing.is_empty() {
        let required = operation.scopes.join(" ");
        let challenge =
            format!(r#"Bearer realm="portcullis", error="insufficient_scope", scope="{required}""#);
        let error = GatewayError::new(
            ErrorCode::InsufficientScope,
            format!("this operation requires the scopes: {}", missing.join(" ")),
        );
        return Err(match HeaderValue::from_str(&challenge) {
            Ok(v) => error.with_header(WWW_AUTHENTICATE, v),
            Err(_) => error,
        });
    }
    Ok(())
}
