//! Authentication: establishes which client and profile is calling, from the credential the
//! request presents. Every way of failing that is not "no credential at all" gives the same
//! `invalid_credential`, so a caller learns nothing about which clients or profiles exist.

pub mod token;

use http::HeaderMap;
use http::header::{AUTHORIZATION, HeaderName, HeaderValue, WWW_AUTHENTICATE};
use time::OffsetDateTime;

use crate::error::{ErrorCode, GatewayError};
use crate::model::CredentialId;
use crate::snapshot::{CompiledClient, CompiledProfile, Snapshot};

use self::token::TokenSecret;

/// `X-Client-ID`: optional; when present it must name the credential's client.
pub static X_CLIENT_ID: HeaderName = HeaderName::from_static("x-client-id");
/// `X-Profile-ID`: optional; when present it must name the credential's profile.
pub static X_PROFILE_ID: HeaderName = HeaderName::from_static("x-profile-id");

/// An authenticated caller, borrowed from the snapshot the request holds.
#[derive(Clone, Copy)]
pub struct Caller<'s> {
    pub client: &'s CompiledClient,
    pub profile: &'s CompiledProfile,
    pub credential: &'s CredentialId,
}

/// Finds the caller for a request's headers.
pub fn authenticate<'s>(
    snapshot: &'s Snapshot,
    secret: &TokenSecret,
    headers: &HeaderMap,
    now: OffsetDateTime,
) -> Result<Caller<'s>, GatewayError> {
    let Some(value) = headers.get(AUTHORIZATION) else {
        return Err(GatewayError::new(
            ErrorCode::Unauthenticated,
            "this API requires a credential: send Authorization: Bearer <token>",
        )
        .with_header(
            WWW_AUTHENTICATE,
            HeaderValue::from_static(r#"Bearer realm="portcullis""#),
        ));
    };
    let token = bearer(value).ok_or_else(invalid)?;
    if !token::is_well_formed(token) {
        return Err(invalid());
    }
    let hash = secret.hash(token);
    // The index is keyed by the hash itself; the explicit constant-time comparison keeps the
    // final check independent of how the map compares keys.
    let entry = snapshot
        .tokens
        .get_key_value(&hash)
        .filter(|(stored, _)| token::hashes_equal(stored, &hash))
        .map(|(_, entry)| entry)
        .ok_or_else(invalid)?;
    if entry.expires_at.is_some_and(|t| t <= now) {
        return Err(invalid());
    }
    let client = &snapshot.clients[entry.client];
    let profile = &client.profiles[entry.profile];
    // Headers that name the caller must agree with the credential.
    let claims_agree = [
        (&X_CLIENT_ID, client.id.as_str()),
        (&X_PROFILE_ID, profile.id.as_str()),
    ]
    .iter()
    .all(|(name, actual)| {
        headers
            .get(*name)
            .is_none_or(|claimed| claimed.as_bytes() == actual.as_bytes())
    });
    if !claims_agree {
        return Err(invalid());
    }
    Ok(Caller {
        client,
        profile,
        credential: &entry.credential,
    })
}

/// The token in `Bearer <token>` (scheme case-insensitive, RFC 9110 §11.1).
fn bearer(value: &HeaderValue) -> Option<&str> {
    let text = value.to_str().ok()?;
    let (scheme, token) = text.split_once(' ')?;
    scheme
        .eq_ignore_ascii_case("bearer")
        .then(|| token.trim())
        .filter(|t| !t.is_empty())
}

fn invalid() -> GatewayError {
    GatewayError::new(
        ErrorCode::InvalidCredential,
        "the credential is not valid for this request",
    )
    .with_header(
        WWW_AUTHENTICATE,
        HeaderValue::from_static(r#"Bearer realm="portcullis", error="invalid_token""#),
    )
}
