//! OIDC/JWT access tokens from external identity providers: key sets fetched by discovery and
//! cached, refreshed when a token names an unknown key (at most once per cooldown), and tokens
//! verified with the algorithm the key pins — never the one the token asks for. `jku`, `x5u`
//! and embedded `jwk` headers are ignored: keys come only from the configured provider.

use std::collections::HashMap;
use std::str::FromStr;
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use http_body_util::{BodyExt, Limited};
use jsonwebtoken::jwk::{AlgorithmParameters, EllipticCurve, JwkSet};
use jsonwebtoken::{Algorithm, DecodingKey, Header, Validation};
use serde_json::{Map, Value};

use crate::forward::{ControlClient, control_client};
use crate::snapshot::CompiledProvider;

/// Tokens longer than this are refused unparsed.
pub const MAX_TOKEN_BYTES: usize = 8 * 1024;
const MAX_DOCUMENT_BYTES: usize = 1024 * 1024;

/// Why a JWT was not accepted.
#[derive(Debug, PartialEq, Eq)]
pub enum JwtError {
    /// Not a valid token from a configured provider.
    Invalid,
    /// The provider's keys could not be fetched and none are cached.
    Unavailable,
}

/// How long a verified token is remembered (never past its `exp`). Signature checks are the
/// costly part of a request; agents and apps reuse one token for many calls.
const VERIFIED_TTL: Duration = Duration::from_secs(60);
/// Most verified tokens remembered at once.
const VERIFIED_MAX: usize = 10_000;

struct Remembered {
    claims: Arc<Map<String, Value>>,
    until: Instant,
}

/// Key sets per issuer, shared by every request of a node.
pub struct KeySets {
    client: ControlClient,
    /// By [`set_key`].
    sets: RwLock<HashMap<String, Arc<KeySet>>>,
    /// Tokens already verified, by a hash of the token and the provider settings it was
    /// checked against.
    verified: RwLock<HashMap<[u8; 32], Remembered>>,
    /// One refresh at a time; waiting requests then find the fresh set.
    refresh: tokio::sync::Mutex<()>,
    ttl: Duration,
    cooldown: Duration,
    fetch_timeout: Duration,
}

struct KeySet {
    keys: HashMap<String, (DecodingKey, Algorithm)>,
    /// When the keys were last fetched successfully (never: `None`).
    fetched: Option<Instant>,
    /// When a fetch was last attempted, successful or not.
    attempted: Instant,
}

impl KeySet {
    fn is_fresh(&self, ttl: Duration) -> bool {
        self.fetched.is_some_and(|t| t.elapsed() < ttl)
    }

    /// The key for `kid` from this set: unknown keys are the token's fault, unless the
    /// provider's keys could never be fetched at all.
    fn answer(&self, kid: &str) -> Result<(DecodingKey, Algorithm), JwtError> {
        match (self.keys.get(kid), self.fetched) {
            (Some(found), _) => Ok(found.clone()),
            (None, None) => Err(JwtError::Unavailable),
            (None, Some(_)) => Err(JwtError::Invalid),
        }
    }
}

impl KeySets {
    /// `ttl`: how long a fetched set is used before it is fetched again; `cooldown`: the least
    /// time between two fetches for one issuer, whatever tokens arrive.
    pub fn new(
        tls: rustls::ClientConfig,
        ttl: Duration,
        cooldown: Duration,
        fetch_timeout: Duration,
    ) -> Self {
        Self {
            client: control_client(tls, fetch_timeout),
            sets: RwLock::new(HashMap::new()),
            verified: RwLock::new(HashMap::new()),
            refresh: tokio::sync::Mutex::new(()),
            ttl,
            cooldown,
            fetch_timeout,
        }
    }

    /// Verifies `token` against the snapshot's providers.
    /// Verifies `token`, whose (unverified) `iss` named `provider`, with that provider's keys
    /// only. The caller has already parsed `header` and checked the token's size.
    pub async fn verify(
        &self,
        provider: &CompiledProvider,
        header: &Header,
        token: &str,
    ) -> Result<Arc<Map<String, Value>>, JwtError> {
        let kid = header.kid.as_deref().ok_or(JwtError::Invalid)?;
        let memo = memo_key(token, provider);
        if let Some(claims) = self.remembered(&memo) {
            return Ok(claims);
        }
        let (key, algorithm) = self.key(provider, kid).await?;
        if header.alg != algorithm {
            return Err(JwtError::Invalid);
        }
        let mut validation = Validation::new(algorithm);
        validation.set_issuer(&[&provider.issuer]);
        validation.set_audience(&provider.audiences);
        validation.leeway = provider.clock_skew.as_secs();
        validation.validate_nbf = true;
        validation.set_required_spec_claims(&["exp", "iss", "aud"]);
        let data = jsonwebtoken::decode::<Map<String, Value>>(token, &key, &validation)
            .map_err(|_| JwtError::Invalid)?;
        let claims = Arc::new(data.claims);
        self.remember(memo, &claims);
        Ok(claims)
    }

    fn remembered(&self, memo: &[u8; 32]) -> Option<Arc<Map<String, Value>>> {
        self.verified
            .read()
            .expect("verified-token lock is never poisoned")
            .get(memo)
            .filter(|r| Instant::now() < r.until)
            .map(|r| r.claims.clone())
    }

    fn remember(&self, memo: [u8; 32], claims: &Arc<Map<String, Value>>) {
        let now_unix = time::OffsetDateTime::now_utc().unix_timestamp();
        let left = claims
            .get("exp")
            .and_then(Value::as_i64)
            .map_or(0, |exp| u64::try_from(exp - now_unix).unwrap_or(0));
        let keep = VERIFIED_TTL.min(Duration::from_secs(left));
        if keep.is_zero() {
            return;
        }
        let mut map = self
            .verified
            .write()
            .expect("verified-token lock is never poisoned");
        if map.len() >= VERIFIED_MAX {
            let now = Instant::now();
            map.retain(|_, r| now < r.until);
            if map.len() >= VERIFIED_MAX {
                map.clear();
            }
        }
        map.insert(
            memo,
            Remembered {
                claims: claims.clone(),
                until: Instant::now() + keep,
            },
        );
    }

    async fn key(
        &self,
        provider: &CompiledProvider,
        kid: &str,
    ) -> Result<(DecodingKey, Algorithm), JwtError> {
        // Fast path: a fresh set that has the key.
        if let Some(set) = self.cached(&set_key(provider))
            && set.is_fresh(self.ttl)
            && let Some(found) = set.keys.get(kid)
        {
            return Ok(found.clone());
        }
        let _gate = self.refresh.lock().await;
        // Another request may have refreshed while this one waited; and within the cooldown
        // nothing is fetched again, whatever the token says.
        let cached = self.cached(&set_key(provider));
        if let Some(set) = &cached {
            let found = set.keys.get(kid);
            if set.attempted.elapsed() < self.cooldown
                || (found.is_some() && set.is_fresh(self.ttl))
            {
                return set.answer(kid);
            }
        }
        let fetched = tokio::time::timeout(self.fetch_timeout * 2, self.fetch(provider))
            .await
            .unwrap_or_else(|_| Err("timed out".to_owned()));
        let now = Instant::now();
        let set = match fetched {
            Ok(keys) => KeySet {
                keys,
                fetched: Some(now),
                attempted: now,
            },
            Err(reason) => {
                tracing::warn!(issuer = %provider.issuer, %reason, "cannot fetch the identity provider's keys");
                // Keep using what we had (even past its time); try again after the cooldown.
                KeySet {
                    keys: cached.as_ref().map(|c| c.keys.clone()).unwrap_or_default(),
                    fetched: cached.as_ref().and_then(|c| c.fetched),
                    attempted: now,
                }
            }
        };
        let answer = set.answer(kid);
        self.sets
            .write()
            .expect("key set lock is never poisoned")
            .insert(set_key(provider), Arc::new(set));
        answer
    }

    fn cached(&self, issuer: &str) -> Option<Arc<KeySet>> {
        self.sets
            .read()
            .expect("key set lock is never poisoned")
            .get(issuer)
            .cloned()
    }

    /// Discovers (unless configured) and fetches the provider's signing keys.
    async fn fetch(
        &self,
        provider: &CompiledProvider,
    ) -> Result<HashMap<String, (DecodingKey, Algorithm)>, String> {
        let jwks_uri = match &provider.jwks_uri {
            Some(uri) => uri.clone(),
            None => {
                let url = format!(
                    "{}/.well-known/openid-configuration",
                    provider.issuer.trim_end_matches('/')
                );
                let doc: Value = self.get_json(&url).await?;
                if doc.get("issuer").and_then(Value::as_str) != Some(provider.issuer.as_str()) {
                    return Err(format!("{url} names another issuer"));
                }
                doc.get("jwks_uri")
                    .and_then(Value::as_str)
                    .ok_or_else(|| format!("{url} has no jwks_uri"))?
                    .to_owned()
            }
        };
        let set: JwkSet = serde_json::from_value(self.get_json(&jwks_uri).await?)
            .map_err(|e| format!("{jwks_uri}: not a JWK set: {e}"))?;
        let mut keys = HashMap::new();
        for jwk in &set.keys {
            let (Some(kid), Some(algorithm)) = (&jwk.common.key_id, signing_algorithm(jwk)) else {
                continue;
            };
            if let Ok(key) = DecodingKey::from_jwk(jwk) {
                keys.insert(kid.clone(), (key, algorithm));
            }
        }
        Ok(keys)
    }

    async fn get_json(&self, url: &str) -> Result<Value, String> {
        let uri: http::Uri = url.parse().map_err(|e| format!("{url}: {e}"))?;
        let response = tokio::time::timeout(self.fetch_timeout, self.client.get(uri))
            .await
            .map_err(|_| format!("{url}: timed out"))?
            .map_err(|e| format!("{url}: {e}"))?;
        if !response.status().is_success() {
            return Err(format!("{url}: status {}", response.status()));
        }
        let body = Limited::new(response.into_body(), MAX_DOCUMENT_BYTES)
            .collect()
            .await
            .map_err(|e| format!("{url}: {e}"))?
            .to_bytes();
        serde_json::from_slice(&body).map_err(|e| format!("{url}: not JSON: {e}"))
    }
}

#[allow(clippy::wildcard_enum_match_arm)]
fn jwk_curve(jwk: &jsonwebtoken::jwk::Jwk) -> Option<EllipticCurve> {
    match &jwk.algorithm {
        AlgorithmParameters::EllipticCurve(p) => Some(p.curve.clone()),
        AlgorithmParameters::OctetKeyPair(p) => Some(p.curve.clone()),
        _ => None,
    }
}

/// Key sets are cached per issuer and key location: pointing a provider at a new `jwks_uri`
/// never reuses keys fetched from the old one.
fn set_key(provider: &CompiledProvider) -> String {
    format!(
        "{}\n{}",
        provider.issuer,
        provider.jwks_uri.as_deref().unwrap_or_default()
    )
}

/// Identifies a token together with the provider settings it is checked against, so a change
/// of audiences or skew is never answered from memory.
fn memo_key(token: &str, provider: &CompiledProvider) -> [u8; 32] {
    use sha2::Digest;
    let mut h = sha2::Sha256::new();
    h.update(token.as_bytes());
    h.update([0]);
    h.update(provider.issuer.as_bytes());
    for aud in &provider.audiences {
        h.update([0]);
        h.update(aud.as_bytes());
    }
    h.update(provider.clock_skew.as_secs().to_le_bytes());
    h.finalize().into()
}

/// The one algorithm a published key may verify: its declared `alg`, or the one its type and
/// curve imply. Symmetric (`oct`) keys are never accepted from a key set.
// The key types are `#[non_exhaustive]`: anything not listed is refused.
#[allow(
    clippy::wildcard_enum_match_arm,
    clippy::match_wildcard_for_single_variants
)]
fn signing_algorithm(jwk: &jsonwebtoken::jwk::Jwk) -> Option<Algorithm> {
    let implied = match (&jwk.algorithm, jwk_curve(jwk)) {
        (AlgorithmParameters::RSA(_), _) => Algorithm::RS256,
        (AlgorithmParameters::EllipticCurve(_), Some(EllipticCurve::P256)) => Algorithm::ES256,
        (AlgorithmParameters::EllipticCurve(_), Some(EllipticCurve::P384)) => Algorithm::ES384,
        (AlgorithmParameters::OctetKeyPair(_), Some(EllipticCurve::Ed25519)) => Algorithm::EdDSA,
        _ => return None,
    };
    let declared = match jwk.common.key_algorithm {
        Some(a) => Algorithm::from_str(&a.to_string()).ok()?,
        None => implied,
    };
    let same_family = declared.family() == implied.family();
    (same_family
        && !matches!(
            declared,
            Algorithm::HS256 | Algorithm::HS384 | Algorithm::HS512
        ))
    .then_some(declared)
}
