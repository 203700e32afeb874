//! Credential lifecycle on the store: issue an API token (shown once), rotate it with an
//! overlap, revoke it, and describe a profile's effective access. Each change is one
//! configuration version, made through the same apply path as a file.

use std::fmt::Write as _;
use std::time::Duration;

use rand::RngExt;
use time::OffsetDateTime;

use crate::auth::token::{self, TokenSecret};
use crate::model::{
    Client, ClientId, Config, Credential, CredentialId, CredentialKind, ProfileId, Status,
};
use crate::plan::{self, ApplyError};
use crate::store::{Scope, Store, StoreError, assemble};

/// Why a credential command failed.
#[derive(Debug, thiserror::Error)]
pub enum CredentialError {
    #[error("no profile '{profile}' for client '{client}'")]
    NoProfile {
        client: ClientId,
        profile: ProfileId,
    },
    #[error("no credential '{0}' in that profile")]
    NoCredential(CredentialId),
    #[error("credential '{0}' is not an API token")]
    NotAToken(CredentialId),
    #[error("credential '{0}' already exists")]
    Exists(CredentialId),
    #[error("{0} is too long: it would end after the year 9999")]
    TooLong(&'static str),
    #[error(transparent)]
    Apply(#[from] ApplyError),
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// A newly issued token: the secret (to show once) and where it lives.
#[derive(Debug)]
pub struct Issued {
    pub credential: CredentialId,
    pub token: String,
    pub expires_at: Option<OffsetDateTime>,
    pub version: u64,
}

/// Where to issue a token.
#[derive(Clone, Debug)]
pub struct TokenRequest {
    pub client: ClientId,
    pub profile: ProfileId,
    /// Defaults to `<profile>-<8 random characters>`.
    pub id: Option<CredentialId>,
    pub expires_in: Option<Duration>,
    /// Check everything and answer what would be issued, storing nothing.
    pub dry_run: bool,
}

/// Issues a new API token for a profile.
pub async fn issue(
    store: &Store,
    secret: &TokenSecret,
    req: &TokenRequest,
) -> Result<Issued, CredentialError> {
    add_token(store, secret, req, None).await
}

/// Issues a replacement token and lets the old one live for `overlap` more (never longer than
/// it already would), so callers can switch without an outage.
pub async fn rotate(
    store: &Store,
    secret: &TokenSecret,
    req: &TokenRequest,
    old: &CredentialId,
    overlap: Duration,
) -> Result<Issued, CredentialError> {
    add_token(store, secret, req, Some((old, overlap))).await
}

/// Adds a new token to the profile and, when rotating, sets the old one to expire after the
/// overlap — both in one configuration version.
async fn add_token(
    store: &Store,
    secret: &TokenSecret,
    req: &TokenRequest,
    retire: Option<(&CredentialId, Duration)>,
) -> Result<Issued, CredentialError> {
    let now = OffsetDateTime::now_utc();
    let (credential, token) = new_token(secret, req)?;
    let id = credential.id.clone();
    let expires_at = credential.expires_at;
    let (version, _) = change(store, &req.client, &req.profile, req.dry_run, |creds| {
        if creds.iter().any(|c| c.id == id) {
            return Err(CredentialError::Exists(id.clone()));
        }
        if let Some((old, overlap)) = retire {
            let current = creds
                .iter_mut()
                .find(|c| &c.id == old)
                .ok_or_else(|| CredentialError::NoCredential(old.clone()))?;
            if !matches!(current.kind, CredentialKind::ApiToken { .. }) {
                return Err(CredentialError::NotAToken(old.clone()));
            }
            let end = now
                .checked_add(
                    time::Duration::try_from(overlap)
                        .map_err(|_| CredentialError::TooLong("the overlap"))?,
                )
                .ok_or(CredentialError::TooLong("the overlap"))?;
            current.expires_at = Some(current.expires_at.map_or(end, |t| t.min(end)));
        }
        creds.push(credential);
        Ok(())
    })
    .await?;
    Ok(Issued {
        credential: id,
        token,
        expires_at,
        version,
    })
}

/// A new token and the credential that stores its hash.
fn new_token(
    secret: &TokenSecret,
    req: &TokenRequest,
) -> Result<(Credential, String), CredentialError> {
    let token = token::generate();
    let id = req.id.clone().unwrap_or_else(|| {
        let suffix: String = rand::rng()
            .sample_iter(rand::distr::Alphanumeric)
            .take(8)
            .map(|b| char::from(b).to_ascii_lowercase())
            .collect();
        CredentialId(format!("{}-{suffix}", req.profile))
    });
    let credential = Credential {
        id,
        kind: CredentialKind::ApiToken {
            token_hash: secret.hash_hex(&token),
        },
        expires_at: req
            .expires_in
            .map(|d| {
                time::Duration::try_from(d)
                    .ok()
                    .and_then(|d| OffsetDateTime::now_utc().checked_add(d))
                    .ok_or(CredentialError::TooLong("the lifetime"))
            })
            .transpose()?,
        revoked_at: None,
    };
    Ok((credential, token))
}

/// Revokes a credential at once; returns the new configuration version.
/// With `dry_run`, checks that it exists and changes nothing. The version, and whether this
/// call revoked it (false when it already was).
pub async fn revoke(
    store: &Store,
    client: &ClientId,
    profile: &ProfileId,
    id: &CredentialId,
    dry_run: bool,
) -> Result<(u64, bool), CredentialError> {
    let now = OffsetDateTime::now_utc();
    change(store, client, profile, dry_run, |creds| {
        let c = creds
            .iter_mut()
            .find(|c| &c.id == id)
            .ok_or_else(|| CredentialError::NoCredential(id.clone()))?;
        c.revoked_at.get_or_insert(now);
        Ok(())
    })
    .await
}

/// Applies an edit to one profile's credentials as a new configuration version.
async fn change(
    store: &Store,
    client_id: &ClientId,
    profile_id: &ProfileId,
    dry_run: bool,
    edit: impl FnOnce(&mut Vec<Credential>) -> Result<(), CredentialError>,
) -> Result<(u64, bool), CredentialError> {
    let (_, records) = store.load_scope(Scope::Client(client_id.as_str())).await?;
    let mut client = find_client(&assemble(&records)?, client_id, profile_id)?;
    let profile = client
        .profiles
        .iter_mut()
        .find(|p| &p.id == profile_id)
        .expect("find_client checked the profile");
    edit(&mut profile.credentials)?;
    let applied = plan::apply_credentials(store, &client, dry_run).await?;
    Ok((applied.version, applied.committed))
}

fn find_client(
    config: &Config,
    client: &ClientId,
    profile: &ProfileId,
) -> Result<Client, CredentialError> {
    config
        .clients
        .iter()
        .find(|c| &c.id == client && c.profiles.iter().any(|p| &p.id == profile))
        .cloned()
        .ok_or_else(|| CredentialError::NoProfile {
            client: client.clone(),
            profile: profile.clone(),
        })
}

/// A readable account of what a profile may do right now: its state, its credentials, and
/// every published operation of its granted collections with whether its scopes suffice.
pub async fn describe_access(
    store: &Store,
    client_id: &ClientId,
    profile_id: &ProfileId,
) -> Result<String, CredentialError> {
    let (version, records) = store.load().await?;
    let config = assemble(&records)?;
    let client = find_client(&config, client_id, profile_id)?;
    let p = client
        .profiles
        .iter()
        .find(|p| &p.id == profile_id)
        .expect("find_client checked the profile");
    let now = OffsetDateTime::now_utc();
    let mut out = String::new();
    let state = |active: bool| if active { "active" } else { "DEACTIVATED" };
    let _ = writeln!(
        out,
        "client   {} ({}){}",
        client.id,
        state(client.active),
        partner(&client.partner)
    );
    let expiry = match p.expires_at {
        Some(t) if t <= now => format!(", EXPIRED at {}", rfc3339(t)),
        Some(t) => format!(", expires {}", rfc3339(t)),
        None => String::new(),
    };
    let _ = writeln!(
        out,
        "profile  {} in {} ({}{expiry})",
        p.id,
        p.environment,
        state(p.active)
    );
    let _ = writeln!(out, "scopes   {}", list(&p.scopes));
    let _ = writeln!(
        out,
        "sources  {}",
        if p.ip_allowlist.is_empty() {
            "any address".to_owned()
        } else {
            p.ip_allowlist.join(", ")
        }
    );
    if let Some(policy) = &p.quota_policy {
        let _ = writeln!(out, "quota    {policy}");
    }
    let _ = writeln!(out, "credentials:");
    if p.credentials.is_empty() {
        let _ = writeln!(out, "  (none)");
    }
    for c in &p.credentials {
        let kind = match c.kind {
            CredentialKind::ApiToken { .. } => "api_token",
            CredentialKind::Oidc { .. } => "oidc",
            CredentialKind::Mtls { .. } => "mtls",
            CredentialKind::SignedJwt { .. } => "signed_jwt",
        };
        let status = match (c.revoked_at, c.expires_at) {
            (Some(t), _) => format!("revoked {}", rfc3339(t)),
            (None, Some(t)) if t <= now => format!("expired {}", rfc3339(t)),
            (None, Some(t)) => format!("valid until {}", rfc3339(t)),
            (None, None) => "valid".to_owned(),
        };
        let _ = writeln!(out, "  {} {kind}: {status}", c.id);
    }
    let _ = writeln!(out, "operations (configuration version {version}):");
    for granted in &p.collections {
        let Some(c) = config.collections.iter().find(|c| &c.id == granted) else {
            continue;
        };
        if c.status != Status::Published || !c.upstreams.contains_key(&p.environment) {
            let _ = writeln!(out, "  {} — not offered in {}", c.id, p.environment);
            continue;
        }
        for op in c
            .operations
            .iter()
            .filter(|o| o.status == Status::Published)
        {
            let missing: Vec<&str> = op
                .scopes
                .iter()
                .filter(|s| !p.scopes.contains(s))
                .map(String::as_str)
                .collect();
            let verdict = if missing.is_empty() {
                "allowed".to_owned()
            } else {
                format!("DENIED: missing scopes {}", missing.join(" "))
            };
            let _ = writeln!(
                out,
                "  {:<7} {}{}  {}.{}  {verdict}",
                op.methods.join(","),
                c.base_path.trim_end_matches('/'),
                op.path,
                c.id,
                op.id
            );
        }
    }
    Ok(out)
}

fn partner(p: &str) -> String {
    if p.is_empty() {
        String::new()
    } else {
        format!(", partner {p}")
    }
}

fn list(items: &[String]) -> String {
    if items.is_empty() {
        "(none)".to_owned()
    } else {
        items.join(" ")
    }
}

/// A timestamp as the CLI prints it.
pub fn rfc3339(t: OffsetDateTime) -> String {
    t.format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_else(|_| t.to_string())
}
