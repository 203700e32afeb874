//! Client-signed assertions: a caller proves it is a profile by presenting a short-lived JWT it
//! signed itself, with `kid` naming its `signed_jwt` credential, `iss` its client id, and `aud`
//! this gateway. The key (or shared secret) and the algorithm come from the credential, never
//! from the token.

use std::collections::HashMap;

use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde_json::{Map, Value};

use crate::model::CredentialId;
use crate::snapshot::TokenEntry;

/// Longest accepted lifetime (`exp - iat`) of an assertion.
pub const MAX_LIFETIME_SECS: i64 = 300;
/// Tolerance for `exp`/`nbf`/`iat` against this gateway's clock.
const SKEW_SECS: u64 = 30;

/// A verification key of one `signed_jwt` credential.
pub struct AssertionKey {
    pub key: DecodingKey,
    pub algorithm: Algorithm,
    pub entry: TokenEntry,
    /// The client id the assertion must name as `iss`.
    pub issuer: String,
}

/// `signed_jwt` credentials by id.
pub type AssertionKeys = HashMap<CredentialId, AssertionKey>;

/// The algorithm a credential accepts: its declared one, or the default for its key kind.
pub fn algorithm(declared: Option<&str>, with_secret: bool) -> Result<Algorithm, String> {
    let alg = match (declared, with_secret) {
        (None, true) => Algorithm::HS256,
        (None, false) => Algorithm::ES256,
        (Some(name), _) => name
            .parse::<Algorithm>()
            .map_err(|_| format!("unknown algorithm '{name}'"))?,
    };
    let symmetric = matches!(alg, Algorithm::HS256 | Algorithm::HS384 | Algorithm::HS512);
    match (symmetric, with_secret) {
        (true, true) | (false, false) => Ok(alg),
        (true, false) => Err(format!("{alg:?} needs secret_env, not a public key")),
        (false, true) => Err(format!("{alg:?} needs public_key_pem, not a secret")),
    }
}

/// Builds the key for a credential: a PEM public key or the secret's bytes.
#[allow(clippy::wildcard_enum_match_arm)]
pub fn decoding_key(
    public_key_pem: Option<&str>,
    secret: Option<&[u8]>,
    algorithm: Algorithm,
) -> Result<DecodingKey, String> {
    match (public_key_pem, secret) {
        (_, Some(secret)) => Ok(DecodingKey::from_secret(secret)),
        (Some(pem), None) => {
            let pem = pem.as_bytes();
            match algorithm {
                Algorithm::ES256 | Algorithm::ES384 => DecodingKey::from_ec_pem(pem),
                Algorithm::EdDSA => DecodingKey::from_ed_pem(pem),
                Algorithm::RS256
                | Algorithm::RS384
                | Algorithm::RS512
                | Algorithm::PS256
                | Algorithm::PS384
                | Algorithm::PS512 => DecodingKey::from_rsa_pem(pem),
                // `Algorithm` is non-exhaustive: symmetric and future algorithms need more
                // than a public key.
                _ => return Err(format!("{algorithm:?} is not a public-key algorithm")),
            }
            .map_err(|e| format!("cannot read the public key: {e}"))
        }
        (None, None) => Err("no key".to_owned()),
    }
}

/// Verifies an assertion whose header names `kid`; returns the credential it proves.
pub fn verify<'s>(
    keys: &'s AssertionKeys,
    kid: &str,
    token: &str,
    audience: &str,
) -> Option<&'s TokenEntry> {
    let credential = keys.get(&CredentialId(kid.to_owned()))?;
    let mut validation = Validation::new(credential.algorithm);
    validation.set_audience(&[audience]);
    validation.set_issuer(&[&credential.issuer]);
    validation.leeway = SKEW_SECS;
    validation.validate_nbf = true;
    validation.set_required_spec_claims(&["exp", "iat", "iss", "aud"]);
    let claims = jsonwebtoken::decode::<Map<String, Value>>(token, &credential.key, &validation)
        .ok()?
        .claims;
    let (iat, exp) = (claims.get("iat")?.as_i64()?, claims.get("exp")?.as_i64()?);
    // Short-lived by construction: a long-lived "assertion" is a static secret in disguise.
    // Issued within the last lifetime (plus skew), not in the future, and living no longer.
    let now = time::OffsetDateTime::now_utc().unix_timestamp();
    let skew = SKEW_SECS as i64;
    let recent = (now - MAX_LIFETIME_SECS - skew..=now + skew).contains(&iat);
    let short = exp
        .checked_sub(iat)
        .is_some_and(|life| life <= MAX_LIFETIME_SECS);
    (recent && short).then_some(&credential.entry)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn algorithms_follow_the_key_kind() {
        assert_eq!(algorithm(None, true), Ok(Algorithm::HS256));
        assert_eq!(algorithm(None, false), Ok(Algorithm::ES256));
        assert_eq!(algorithm(Some("EdDSA"), false), Ok(Algorithm::EdDSA));
        assert!(algorithm(Some("HS256"), false).is_err());
        assert!(algorithm(Some("RS256"), true).is_err());
        assert!(algorithm(Some("none"), false).is_err());
    }
}
