//! The gateway's own credentials toward upstreams — never the caller's: OAuth2 client
//! credentials with a token cache, and a short-lived identity assertion (a JWT signed by the
//! gateway) that lets an upstream verify who called. Static basic and bearer credentials are
//! resolved into headers when the snapshot is compiled.

use std::collections::HashMap;
use std::path::Path;
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use base64::Engine;
use bytes::Bytes;
use http::header::{AUTHORIZATION, CONTENT_TYPE, HeaderValue};
use http_body_util::{BodyExt, Full, Limited};
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::{Value, json};

use crate::auth::Caller;
use crate::forward::{ControlClient, control_client};

/// An OAuth2 client-credentials grant, compiled from a collection's `upstream_auth`.
#[derive(Debug, PartialEq, Eq, Hash, Clone)]
pub struct ClientCredentials {
    pub token_url: String,
    pub client_id: String,
    /// Resolved from the environment when compiled.
    pub client_secret: String,
    pub scopes: Vec<String>,
}

/// Upstream access tokens, shared by every request of a node.
pub struct TokenCache {
    client: ControlClient,
    tokens: RwLock<HashMap<ClientCredentials, (HeaderValue, Instant)>>,
    /// One fetch at a time: a burst of requests costs one token request.
    fetch: tokio::sync::Mutex<()>,
}

impl TokenCache {
    pub fn new(tls: rustls::ClientConfig) -> Self {
        Self {
            client: control_client(tls, Duration::from_secs(5)),
            tokens: RwLock::new(HashMap::new()),
            fetch: tokio::sync::Mutex::new(()),
        }
    }

    /// The `Authorization` value for `grant`, fetched or from the cache.
    pub async fn authorization(&self, grant: &ClientCredentials) -> Result<HeaderValue, String> {
        if let Some(v) = self.cached(grant) {
            return Ok(v);
        }
        let _one_at_a_time = self.fetch.lock().await;
        if let Some(v) = self.cached(grant) {
            return Ok(v);
        }
        let (token, lifetime) = tokio::time::timeout(Duration::from_secs(10), self.request(grant))
            .await
            .map_err(|_| "the token endpoint timed out".to_owned())??;
        let mut value = HeaderValue::from_str(&format!("Bearer {token}"))
            .map_err(|_| "the token endpoint returned an unusable token".to_owned())?;
        value.set_sensitive(true);
        // Renew a minute early (or at half-life for short tokens) so no request carries a
        // token that expires on the way.
        let margin = (lifetime / 2).min(Duration::from_secs(60));
        let renew_at = Instant::now() + (lifetime - margin);
        self.tokens
            .write()
            .expect("token cache lock is never poisoned")
            .insert(grant.clone(), (value.clone(), renew_at));
        Ok(value)
    }

    fn cached(&self, grant: &ClientCredentials) -> Option<HeaderValue> {
        self.tokens
            .read()
            .expect("token cache lock is never poisoned")
            .get(grant)
            .filter(|(_, renew_at)| Instant::now() < *renew_at)
            .map(|(v, _)| v.clone())
    }

    async fn request(&self, grant: &ClientCredentials) -> Result<(String, Duration), String> {
        let mut form = String::from("grant_type=client_credentials");
        if !grant.scopes.is_empty() {
            form.push_str("&scope=");
            form.extend(percent_encoding::utf8_percent_encode(
                &grant.scopes.join(" "),
                FORM,
            ));
        }
        let basic = base64::engine::general_purpose::STANDARD.encode(format!(
            "{}:{}",
            form_encode(&grant.client_id),
            form_encode(&grant.client_secret)
        ));
        let request = http::Request::post(&grant.token_url)
            .header(CONTENT_TYPE, "application/x-www-form-urlencoded")
            .header(AUTHORIZATION, format!("Basic {basic}"))
            .body(Full::new(Bytes::from(form)))
            .map_err(|e| format!("bad token URL: {e}"))?;
        let response = self
            .client
            .request(request)
            .await
            .map_err(|e| format!("cannot reach the token endpoint: {e}"))?;
        let status = response.status();
        let body = Limited::new(response.into_body(), 64 * 1024)
            .collect()
            .await
            .map_err(|e| format!("cannot read the token response: {e}"))?
            .to_bytes();
        if !status.is_success() {
            return Err(format!("the token endpoint answered {status}"));
        }
        let doc: Value = serde_json::from_slice(&body)
            .map_err(|_| "the token response is not JSON".to_owned())?;
        let token = doc["access_token"]
            .as_str()
            .ok_or("the token response has no access_token")?
            .to_owned();
        // Absurd lifetimes are capped: a token is renewed at least daily.
        let lifetime =
            Duration::from_secs(doc["expires_in"].as_u64().unwrap_or(300).clamp(1, 86_400));
        Ok((token, lifetime))
    }
}

/// `application/x-www-form-urlencoded` escaping: everything but letters, digits and `-._*`.
const FORM: &percent_encoding::AsciiSet = &percent_encoding::NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'.')
    .remove(b'_')
    .remove(b'*');

/// RFC 6749 §2.3.1: client id and secret are form-encoded before Basic encoding.
fn form_encode(s: &str) -> String {
    percent_encoding::utf8_percent_encode(s, FORM).to_string()
}

/// Signs identity assertions for upstreams.
pub struct IdentitySigner {
    key: EncodingKey,
    kid: String,
    issuer: String,
    /// The public key set, served at the admin listener's `/.well-known/jwks.json`.
    pub jwks: Value,
}

/// Lifetime of an identity assertion.
const ASSERTION_LIFETIME_SECS: i64 = 60;

impl IdentitySigner {
    /// Loads the ES256 signing key (PKCS#8 PEM) from `path`, or from `DATA_DIR/identity-key.pem`,
    /// creating the latter (mode 0600) on first use. Every node of a cluster should share one key.
    pub fn load(path: Option<&Path>, data_dir: &Path, issuer: String) -> Result<Self, String> {
        let default = data_dir.join("identity-key.pem");
        let path = path.unwrap_or(&default);
        if !path.exists() && path == default {
            let rng = ring::rand::SystemRandom::new();
            let pkcs8 = ring::signature::EcdsaKeyPair::generate_pkcs8(
                &ring::signature::ECDSA_P256_SHA256_FIXED_SIGNING,
                &rng,
            )
            .map_err(|_| "cannot generate a signing key".to_owned())?;
            let b64 = base64::engine::general_purpose::STANDARD.encode(pkcs8.as_ref());
            let lines: Vec<&str> = b64
                .as_bytes()
                .chunks(64)
                .map(|c| std::str::from_utf8(c).expect("base64 is ASCII"))
                .collect();
            let pem = format!(
                "-----BEGIN PRIVATE KEY-----\n{}\n-----END PRIVATE KEY-----\n",
                lines.join("\n")
            );
            std::fs::create_dir_all(data_dir).map_err(|e| e.to_string())?;
            crate::auth::token::write_private(path, &pem)
                .map_err(|e| format!("cannot write {}: {e}", path.display()))?;
        }
        let pem =
            std::fs::read(path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
        let key = EncodingKey::from_ec_pem(&pem)
            .map_err(|e| format!("{}: not an EC private key: {e}", path.display()))?;
        let mut jwk = serde_json::to_value(
            jsonwebtoken::jwk::Jwk::from_encoding_key(&key, Algorithm::ES256)
                .map_err(|e| e.to_string())?,
        )
        .map_err(|e| e.to_string())?;
        // The key id is derived from the public key, so every node sharing the key agrees.
        let digest = ring::digest::digest(&ring::digest::SHA256, jwk.to_string().as_bytes());
        let kid = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(&digest.as_ref()[..12]);
        jwk["kid"] = kid.clone().into();
        jwk["use"] = "sig".into();
        jwk["alg"] = "ES256".into();
        Ok(Self {
            key,
            kid,
            issuer,
            jwks: json!({ "keys": [jwk] }),
        })
    }

    /// An assertion for one request to `audience` (`<collection>/<environment>`, so an
    /// assertion sent to a sandbox upstream is no good to a production one).
    pub fn sign(
        &self,
        caller: &Caller<'_>,
        audience: &str,
        request_id: &str,
    ) -> Result<HeaderValue, String> {
        let now = time::OffsetDateTime::now_utc().unix_timestamp();
        let claims = json!({
            "iss": self.issuer,
            "aud": audience,
            "sub": caller.client.id,
            "profile": caller.profile.id,
            "environment": caller.profile.environment,
            "partner": caller.client.partner,
            "credential": caller.credential,
            "scope": caller.scopes.join(" "),
            "caller_sub": caller.subject,
            "iat": now,
            "exp": now + ASSERTION_LIFETIME_SECS,
            // A fresh id: the request id can be chosen by the caller, so it cannot serve
            // upstreams as a replay guard.
            "jti": uuid::Uuid::new_v4().to_string(),
            "request_id": request_id,
        });
        let mut header = Header::new(Algorithm::ES256);
        header.kid = Some(self.kid.clone());
        let token = jsonwebtoken::encode(&header, &claims, &self.key).map_err(|e| e.to_string())?;
        HeaderValue::from_str(&token).map_err(|e| e.to_string())
    }
}

/// Shared so the admin listener can publish the key set.
pub type SharedSigner = Arc<IdentitySigner>;
