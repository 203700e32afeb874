//! Service tokens: who may call the limiter. Each token has a name (the actor in change
//! records) and a role: `check` for gateways, `manage` for operators and automation (which may
//! also check). Only the SHA-256 of a token is configured; the secret is shown once, when it is
//! made (`portcullis-limiter token`).

use std::collections::HashMap;
use std::path::Path;

use base64::Engine as _;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

/// What a token may do.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    Check,
    Manage,
}

/// One configured token.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TokenEntry {
    pub name: String,
    pub role: Role,
    /// Hex SHA-256 of the token.
    pub sha256: String,
}

#[derive(Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
struct TokenFile {
    tokens: Vec<TokenEntry>,
}

/// An authenticated caller.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Actor {
    pub name: String,
    pub role: Role,
}

/// The tokens this limiter accepts.
#[derive(Clone, Debug, Default)]
pub struct ServiceTokens {
    by_hash: HashMap<[u8; 32], Actor>,
}

impl ServiceTokens {
    /// Reads a token file (YAML: `tokens: [{name, role, sha256}]`).
    pub fn load(path: &Path) -> Result<Self, String> {
        Self::new(read_entries(path)?).map_err(|e| format!("{}: {e}", path.display()))
    }

    pub fn new(entries: Vec<TokenEntry>) -> Result<Self, String> {
        let mut by_hash = HashMap::new();
        for entry in entries {
            let hash = decode_hex(&entry.sha256)
                .ok_or_else(|| format!("token '{}': sha256 must be 64 hex digits", entry.name))?;
            if entry.name.is_empty() {
                return Err("a token needs a name".into());
            }
            let actor = Actor {
                name: entry.name,
                role: entry.role,
            };
            if by_hash.insert(hash, actor).is_some() {
                return Err("the same token is configured twice".into());
            }
        }
        Ok(Self { by_hash })
    }

    /// The actor a bearer token belongs to.
    pub fn authenticate(&self, token: &str) -> Option<&Actor> {
        self.by_hash.get(&hash(token))
    }
}

/// A new random token and its configuration entry.
pub fn issue(name: &str, role: Role) -> (String, TokenEntry) {
    let bytes: [u8; 32] = rand::random();
    let secret = format!(
        "pcl_{}",
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
    );
    let entry = TokenEntry {
        name: name.to_owned(),
        role,
        sha256: hex::encode(hash(&secret)),
    };
    (secret, entry)
}

/// The entries of a token file.
pub fn read_entries(path: &Path) -> Result<Vec<TokenEntry>, String> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    let file: TokenFile =
        serde_saphyr::from_str(&text).map_err(|e| format!("{}: {e}", path.display()))?;
    Ok(file.tokens)
}

/// Writes a token file holding `entries`.
pub fn write_file(path: &Path, entries: Vec<TokenEntry>) -> std::io::Result<()> {
    let text =
        serde_saphyr::to_string(&TokenFile { tokens: entries }).map_err(std::io::Error::other)?;
    std::fs::write(path, text)
}

fn hash(token: &str) -> [u8; 32] {
    Sha256::digest(token.as_bytes()).into()
}

fn decode_hex(text: &str) -> Option<[u8; 32]> {
    let mut out = [0u8; 32];
    hex::decode_to_slice(text.trim(), &mut out).ok()?;
    Some(out)
}
