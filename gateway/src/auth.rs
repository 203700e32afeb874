//! Authentication: establishes which client and profile is calling, from the credential the
//! request presents. Every way of failing that is not "no credential at all" gives the same
//! `invalid_credential`, so a caller learns nothing about which clients or profiles exist.

pub mod assertion;
pub mod jwt;
pub mod mtls;
pub mod token;

use std::borrow::Cow;

use http::HeaderMap;
use http::header::{AUTHORIZATION, HeaderName, HeaderValue, WWW_AUTHENTICATE};
use serde_json::Value;
use time::OffsetDateTime;

use crate::error::{ErrorCode, GatewayError};
use crate::model::CredentialId;
use crate::snapshot::{CompiledClient, CompiledProfile, Snapshot, TokenEntry};

use self::token::TokenSecret;

/// `X-Client-ID`: optional; when present it must name the credential's client.
pub static X_CLIENT_ID: HeaderName = HeaderName::from_static("x-client-id");
/// `X-Profile-ID`: optional; when present it must name the credential's profile.
pub static X_PROFILE_ID: HeaderName = HeaderName::from_static("x-profile-id");

/// An authenticated caller, borrowed from the snapshot the request holds.
pub struct Caller<'s> {
    pub client: &'s CompiledClient,
    pub profile: &'s CompiledProfile,
    pub credential: &'s CredentialId,
    /// The scopes this request may use: the profile's, narrowed to the token's own for an
    /// OIDC token. Sorted.
    pub scopes: Cow<'s, [String]>,
    /// The token's subject (`sub`), for OIDC tokens.
    pub subject: Option<String>,
    /// The token's audiences (`aud`), for OIDC access tokens: the Gateway MCP requires its own
    /// resource among them (RFC 8707).
    pub audiences: Option<Vec<String>>,
}

/// What authentication needs besides the snapshot.
pub struct Verifiers {
    pub secret: TokenSecret,
    pub key_sets: jwt::KeySets,
    /// The `aud` client-signed assertions must name.
    pub assertion_audience: String,
}

/// What a request presents to prove who it is.
#[derive(Clone, Copy)]
pub struct Presented<'r> {
    pub headers: &'r HeaderMap,
    /// The certificate from the TLS handshake, if the caller sent one.
    pub client_cert: Option<&'r mtls::ClientCert>,
}

/// Finds the caller for a request. A bearer token decides when there is one; otherwise a
/// client certificate.
pub async fn authenticate<'s>(
    snapshot: &'s Snapshot,
    verifiers: &Verifiers,
    presented: Presented<'_>,
    now: OffsetDateTime,
) -> Result<Caller<'s>, GatewayError> {
    let headers = presented.headers;
    let established = match (headers.get(AUTHORIZATION), presented.client_cert) {
        (Some(value), _) => {
            let token = bearer(value).ok_or_else(invalid)?;
            if token.starts_with(token::PREFIX) {
                api_token(snapshot, &verifiers.secret, token)?
            } else {
                jwt(snapshot, verifiers, token).await?
            }
        }
        (None, Some(cert)) => certificate(snapshot, cert)?,
        (None, None) => return Err(unauthenticated()),
    };
    let Established {
        entry,
        scopes,
        subject,
        audiences,
    } = established;
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
        scopes: match scopes {
            None => Cow::Borrowed(&profile.scopes),
            Some(granted) => Cow::Owned(
                profile
                    .scopes
                    .iter()
                    .filter(|s| granted.contains(s))
                    .cloned()
                    .collect(),
            ),
        },
        subject,
        audiences,
    })
}

fn unauthenticated() -> GatewayError {
    GatewayError::new(
        ErrorCode::Unauthenticated,
        "this API requires a credential: send Authorization: Bearer <token> or a client certificate",
    )
    .with_header(
        WWW_AUTHENTICATE,
        HeaderValue::from_static(r#"Bearer realm="portcullis""#),
    )
}

/// A client certificate: a pinned fingerprint first, then a chain to a profile's CA.
fn certificate<'s>(
    snapshot: &'s Snapshot,
    cert: &mtls::ClientCert,
) -> Result<Established<'s>, GatewayError> {
    let entry = snapshot
        .mtls_pins
        .get(&cert.fingerprint)
        .or_else(|| {
            snapshot
                .mtls_cas
                .iter()
                .find(|(verifier, _)| cert.chains_to(verifier.as_ref()))
                .map(|(_, entry)| entry)
        })
        .ok_or_else(invalid)?;
    Ok(Established::only(entry))
}

/// What a credential established: whose it is, and for tokens that carry them, the token's
/// own scopes, subject and audiences.
struct Established<'s> {
    entry: &'s TokenEntry,
    scopes: Option<Vec<String>>,
    subject: Option<String>,
    audiences: Option<Vec<String>>,
}

impl<'s> Established<'s> {
    /// A credential that says nothing beyond whose it is.
    fn only(entry: &'s TokenEntry) -> Self {
        Self {
            entry,
            scopes: None,
            subject: None,
            audiences: None,
        }
    }
}

fn api_token<'s>(
    snapshot: &'s Snapshot,
    secret: &TokenSecret,
    token: &str,
) -> Result<Established<'s>, GatewayError> {
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
    Ok(Established::only(entry))
}

/// A JWT: an access token from a configured identity provider (chosen by its `iss`), or else
/// an assertion signed by the client itself (chosen by its `kid`).
async fn jwt<'s>(
    snapshot: &'s Snapshot,
    verifiers: &Verifiers,
    token: &str,
) -> Result<Established<'s>, GatewayError> {
    if token.len() > jwt::MAX_TOKEN_BYTES {
        return Err(invalid());
    }
    let header = jsonwebtoken::decode_header(token).map_err(|_| invalid())?;
    // The issuer picks the path and the key set; nothing else from the unverified token is
    // trusted, and its signature is then checked with that issuer's keys only.
    let unverified: serde_json::Map<String, Value> =
        jsonwebtoken::dangerous::insecure_decode_claims(token).map_err(|_| invalid())?;
    let iss = unverified
        .get("iss")
        .and_then(Value::as_str)
        .ok_or_else(invalid)?;
    if let Some(provider) = snapshot.providers.iter().position(|p| p.issuer == iss) {
        return oidc_token(snapshot, &verifiers.key_sets, provider, &header, token).await;
    }
    let kid = header.kid.as_deref().ok_or_else(invalid)?;
    let entry = assertion::verify(
        &snapshot.assertions,
        kid,
        token,
        &verifiers.assertion_audience,
    )
    .ok_or_else(invalid)?;
    Ok(Established::only(entry))
}

async fn oidc_token<'s>(
    snapshot: &'s Snapshot,
    key_sets: &jwt::KeySets,
    provider: usize,
    header: &jsonwebtoken::Header,
    token: &str,
) -> Result<Established<'s>, GatewayError> {
    let claims = key_sets
        .verify(&snapshot.providers[provider], header, token)
        .await
        .map_err(|e| match e {
            jwt::JwtError::Invalid => invalid(),
            jwt::JwtError::Unavailable => GatewayError::new(
                ErrorCode::IdentityUnavailable,
                "the identity provider cannot be reached to verify this token; retry later",
            ),
        })?;
    let claim = |name: &str| match claims.get(name) {
        Some(Value::String(s)) => Some(s.clone()),
        Some(v @ (Value::Number(_) | Value::Bool(_))) => Some(v.to_string()),
        Some(Value::Null | Value::Array(_) | Value::Object(_)) | None => None,
    };
    let binding = snapshot
        .oidc_bindings
        .iter()
        .find(|b| {
            b.provider == provider && b.claims.iter().all(|(k, v)| claim(k).as_deref() == Some(v))
        })
        .ok_or_else(invalid)?;
    // `scope` (RFC 8693/9068: space-separated) or `scp` (a list, as some providers send).
    let scopes: Vec<String> = match (claims.get("scope"), claims.get("scp")) {
        (Some(Value::String(s)), _) | (None, Some(Value::String(s))) => {
            s.split_whitespace().map(str::to_owned).collect()
        }
        (None, Some(Value::Array(items))) => items
            .iter()
            .filter_map(Value::as_str)
            .map(str::to_owned)
            .collect(),
        _ => Vec::new(),
    };
    let audiences = match claims.get("aud") {
        Some(Value::String(a)) => vec![a.clone()],
        Some(Value::Array(items)) => items
            .iter()
            .filter_map(Value::as_str)
            .map(str::to_owned)
            .collect(),
        _ => Vec::new(),
    };
    Ok(Established {
        entry: &binding.entry,
        scopes: Some(scopes),
        subject: claim("sub"),
        audiences: Some(audiences),
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
