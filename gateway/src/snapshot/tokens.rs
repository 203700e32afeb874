//! The API-token table: token hash → the credential it belongs to. It is split into shards
//! shared between snapshots, so a change to a few credentials copies the shards they land in
//! and not the table: with a million tokens, issuing or revoking one costs what the change
//! touches, not what the catalogue holds.

use std::collections::HashMap;
use std::sync::Arc;

use super::TokenEntry;
use crate::auth::token;
use crate::model::{Config, Credential, CredentialKind};
use crate::store::{Kind, Written, contains, credential_at};

/// Shards of the table; a change copies one per token it adds or removes.
const SHARDS: usize = 256;

type Shard = HashMap<[u8; 32], TokenEntry>;

/// API token hash → the credential it belongs to. Revoked tokens are not indexed.
#[derive(Clone)]
pub struct TokenTable {
    shards: Box<[Arc<Shard>]>,
}

impl TokenTable {
    /// An empty table sized for `tokens` entries.
    pub fn with_capacity(tokens: usize) -> Self {
        Self {
            shards: (0..SHARDS)
                .map(|_| Arc::new(Shard::with_capacity(tokens / SHARDS)))
                .collect(),
        }
    }

    /// The stored hash equal to `hash`, and its entry.
    pub fn get_key_value(&self, hash: &[u8; 32]) -> Option<(&[u8; 32], &TokenEntry)> {
        self.shards[shard(hash)].get_key_value(hash)
    }

    pub fn insert(&mut self, hash: [u8; 32], entry: TokenEntry) {
        Arc::make_mut(&mut self.shards[shard(&hash)]).insert(hash, entry);
    }

    pub fn remove(&mut self, hash: &[u8; 32]) {
        let at = shard(hash);
        if self.shards[at].contains_key(hash) {
            Arc::make_mut(&mut self.shards[at]).remove(hash);
        }
    }

    pub fn len(&self) -> usize {
        self.shards.iter().map(|s| s.len()).sum()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Every entry, in no particular order.
    pub fn iter(&self) -> impl Iterator<Item = (&[u8; 32], &TokenEntry)> {
        self.shards.iter().flat_map(|s| s.iter())
    }
}

/// Stored hashes are keyed hashes, so any of their bytes spreads them; folding all of them
/// also spreads hashes made up by hand (benchmarks, imports with leading zeros).
fn shard(hash: &[u8; 32]) -> usize {
    usize::from(hash.iter().fold(0u8, |acc, b| acc ^ b)) % SHARDS
}

/// The hash under which a credential is indexed, if it is an API token in force.
pub(super) fn indexed_hash(credential: &Credential) -> Option<Result<[u8; 32], ()>> {
    match &credential.kind {
        CredentialKind::ApiToken { token_hash } if credential.revoked_at.is_none() => {
            Some(token::parse_hash(token_hash).ok_or(()))
        }
        CredentialKind::ApiToken { .. }
        | CredentialKind::Oidc { .. }
        | CredentialKind::SignedJwt { .. }
        | CredentialKind::Mtls { .. } => None,
    }
}

/// What a batch of written records does to the table: the tokens they replace, read from the
/// configuration before it is patched, and the credentials to index again after.
pub struct TokenChange {
    removed: Vec<[u8; 32]>,
    /// `(client/profile, credential id)`.
    touched: Vec<(String, String)>,
}

impl TokenChange {
    /// `None` when the records add or remove a client or a profile: entries hold the places
    /// of their client and profile, so the table is then rebuilt whole.
    pub fn before(config: &Config, written: &[Written]) -> Option<Self> {
        let mut change = Self {
            removed: Vec::new(),
            touched: Vec::new(),
        };
        for (key, value) in written {
            match key.kind {
                Kind::Client | Kind::Profile => {
                    if contains(config, key) != value.is_some() {
                        return None;
                    }
                }
                Kind::Credential => {
                    if let Some((_, _, old)) = credential_at(config, &key.parent, &key.id) {
                        // An unreadable stored hash was never indexed.
                        change
                            .removed
                            .extend(indexed_hash(old).and_then(Result::ok));
                    }
                    change.touched.push((key.parent.clone(), key.id.clone()));
                }
                Kind::Collection | Kind::Operation | Kind::IdentityProvider => {}
            }
        }
        Some(change)
    }

    /// `table`, indexing `config` (the configuration after the change); `None` when a written
    /// hash cannot be read, which a whole compile then reports.
    pub fn apply(self, table: &TokenTable, config: &Config) -> Option<TokenTable> {
        let mut table = table.clone();
        for hash in &self.removed {
            table.remove(hash);
        }
        for (owner, id) in &self.touched {
            // Deleted: nothing to index.
            let Some((client, profile, credential)) = credential_at(config, owner, id) else {
                continue;
            };
            if let Some(hash) = indexed_hash(credential) {
                table.insert(hash.ok()?, TokenEntry::of(client, profile, credential));
            }
        }
        Some(table)
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::snapshot::Snapshot;
    use crate::store::{flatten, patch, written};

    type Row = ([u8; 32], usize, usize, String, Option<time::OffsetDateTime>);

    fn config(value: serde_json::Value) -> Config {
        serde_json::from_value(value).expect("a valid configuration")
    }

    fn token(id: &str, n: u32) -> serde_json::Value {
        json!({"id": id, "kind": "api_token", "token_hash": format!("{n:08x}").repeat(8)})
    }

    fn rows(table: &TokenTable) -> Vec<Row> {
        let mut all: Vec<Row> = table
            .iter()
            .map(|(h, e)| {
                (
                    *h,
                    e.client,
                    e.profile,
                    e.credential.0.clone(),
                    e.expires_at,
                )
            })
            .collect();
        all.sort_by_key(|row| row.0);
        all
    }

    /// The table a node following the change from `before` to `after` ends with, if the
    /// change can be followed without a whole compile.
    fn followed(before: &Config, after: &Config) -> Option<Vec<Row>> {
        let snapshot = Snapshot::compile(1, before).unwrap();
        let written = written(&flatten(before), &flatten(after));
        let change = TokenChange::before(before, &written)?;
        let mut patched = before.clone();
        patch(&mut patched, written).unwrap();
        assert_eq!(&patched, after);
        Some(rows(&change.apply(&snapshot.tokens, &patched)?))
    }

    fn catalogue(acme: Vec<serde_json::Value>, globex_profiles: serde_json::Value) -> Config {
        // Enough of globex's tokens to fill every shard.
        let many: Vec<_> = (0..1_000)
            .map(|i| token(&format!("g{i:04}"), 1_000 + i))
            .collect();
        config(json!({
            "collections": [{"id": "orders", "base_path": "/orders",
                             "upstreams": {"sandbox": "http://127.0.0.1:1"},
                             "operations": [{"id": "get", "methods": ["GET"], "path": "/{id}"}]}],
            "clients": [
                {"id": "acme", "profiles": [
                    {"id": "acme-prd", "environment": "production", "collections": ["orders"]},
                    {"id": "acme-sbx", "environment": "sandbox", "collections": ["orders"],
                     "credentials": acme}]},
                {"id": "globex", "profiles": globex_profiles.as_array().unwrap().iter().cloned()
                    .map(|mut p| { p["credentials"] = json!(many); p }).collect::<Vec<_>>()},
            ],
        }))
    }

    #[test]
    fn credentials_issued_revoked_and_deleted_give_the_table_a_whole_compile_gives() {
        let profiles = json!([{"id": "globex-sbx", "environment": "sandbox", "collections": []}]);
        let before = catalogue(
            vec![token("a1", 1), token("a2", 2), token("a3", 3)],
            profiles.clone(),
        );
        let mut revoked = token("a1", 1);
        revoked["revoked_at"] = json!("2026-01-01T00:00:00Z");
        let mut expiring = token("a3", 3);
        expiring["expires_at"] = json!("2030-01-01T00:00:00Z");
        // a1 revoked, a2 deleted, a3 given an expiry, a4 issued, a5 rotated in with a2's
        // hash (its old credential deleted in the same change).
        let after = catalogue(
            vec![revoked, expiring, token("a4", 4), token("a5", 2)],
            profiles,
        );
        let whole = rows(&Snapshot::compile(2, &after).unwrap().tokens);
        assert_eq!(whole.len(), 1_003);
        assert_eq!(followed(&before, &after).as_ref(), Some(&whole));
        // And back: revoking is undone by the next write.
        let whole = rows(&Snapshot::compile(3, &before).unwrap().tokens);
        assert_eq!(followed(&after, &before).as_ref(), Some(&whole));
    }

    #[test]
    fn the_snapshot_before_a_change_keeps_its_table() {
        let profiles = json!([{"id": "globex-sbx", "environment": "sandbox", "collections": []}]);
        let before = catalogue(vec![token("a1", 1)], profiles.clone());
        let after = catalogue(vec![], profiles);
        let snapshot = Snapshot::compile(1, &before).unwrap();
        let hash = indexed_hash(&before.clients[0].profiles[1].credentials[0])
            .unwrap()
            .unwrap();
        let written = written(&flatten(&before), &flatten(&after));
        let change = TokenChange::before(&before, &written).unwrap();
        let mut patched = before.clone();
        patch(&mut patched, written).unwrap();
        let table = change.apply(&snapshot.tokens, &patched).unwrap();
        assert!(table.get_key_value(&hash).is_none());
        // Requests still holding the old snapshot see the old table.
        assert!(snapshot.tokens.get_key_value(&hash).is_some());
        assert_eq!(snapshot.tokens.len(), table.len() + 1);
    }

    #[test]
    fn a_client_or_profile_added_or_removed_rebuilds_the_table_whole() {
        let one = json!([{"id": "globex-sbx", "environment": "sandbox", "collections": []}]);
        let two = json!([{"id": "globex-a", "environment": "production", "collections": []},
                         {"id": "globex-sbx", "environment": "sandbox", "collections": []}]);
        let before = catalogue(vec![token("a1", 1)], one.clone());
        // A profile before globex-sbx moves its place, and so its tokens' entries.
        assert!(followed(&before, &catalogue(vec![token("a1", 1)], two)).is_none());
        let mut fewer = before.clone();
        fewer.clients.remove(0);
        assert!(followed(&before, &fewer).is_none());
        // A profile changed in place keeps the table.
        let mut renamed = before.clone();
        renamed.clients[0].profiles[0].scopes = vec!["orders:read".into()];
        assert!(followed(&before, &renamed).is_some());
    }
}
