//! Declarative apply: compare a configuration file with the store, show the difference as a
//! plan, and commit it as one new configuration version. Applying the same file twice changes
//! nothing the second time.

use std::collections::HashSet;
use std::fmt::Write as _;

use similar::{ChangeTag, TextDiff};

use crate::config::{self, ConfigError, FieldError};
use crate::model::Config;
use crate::store::{Change, Kind, RecordKey, Records, Scope, Store, StoreError, assemble, flatten};

/// How the file's objects combine with those already stored.
#[derive(Clone, Copy, Debug, Default)]
pub struct ApplyOptions {
    /// Delete top-level objects (collections, clients) that the file does not mention. Without
    /// it, unmentioned objects are kept. Either way, a mentioned object is replaced whole,
    /// children included.
    pub prune: bool,
    /// Compute and return the plan without committing it.
    pub dry_run: bool,
}

/// What an apply did (or, for a dry run, would do).
#[derive(Debug)]
pub struct Applied {
    pub changes: Vec<Change>,
    /// The version after the apply: unchanged when nothing changed or on a dry run.
    pub version: u64,
    pub committed: bool,
}

/// Why an apply was refused.
#[derive(Debug, thiserror::Error)]
pub enum ApplyError {
    /// The file itself is invalid (paths refer to the file).
    #[error(transparent)]
    File(ConfigError),
    /// The file is valid, but the configuration it would produce with what is stored is not
    /// (paths refer to the merged configuration, objects ordered by id).
    #[error(
        "the result of merging the file with the stored configuration is invalid:\n{}",
        .0.iter().map(|e| format!("  - {e}")).collect::<Vec<_>>().join("\n")
    )]
    Invalid(Vec<FieldError>),
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The caller's precondition on what is stored does not hold (e.g. an `If-Match`).
    #[error("{0}")]
    Precondition(String),
}

/// A check of the stored configuration, made just before committing (and again after a
/// concurrent commit): the write goes ahead only while it holds.
pub type Check<'a> = &'a (dyn Fn(&Config) -> Result<(), String> + Sync);

/// Applies a configuration to the store. The file may refer to objects that only the store
/// holds (a clients-only file granting stored collections): what must be valid is the result.
pub async fn apply(
    store: &Store,
    file: &Config,
    options: ApplyOptions,
) -> Result<Applied, ApplyError> {
    apply_checked(store, file, options, &|_| Ok(())).await
}

/// [`apply`], committed only while `check` accepts the stored configuration it replaces.
pub async fn apply_checked(
    store: &Store,
    file: &Config,
    options: ApplyOptions,
    check: Check<'_>,
) -> Result<Applied, ApplyError> {
    let desired = flatten(file);
    write(
        store,
        Scope::All,
        check,
        options.dry_run,
        |current, stored| {
            // The file first, so that problems are reported with its own field paths; its
            // references may resolve to stored objects.
            config::validate_in(file, stored)
                .map_err(|problems| ApplyError::File(ConfigError::Invalid(problems)))?;
            Ok(merge(current, &desired, options.prune))
        },
    )
    .await
}

/// Deletes a collection or client (`root`) with everything under it, committed only while
/// `check` accepts the stored configuration and the result is still valid (nothing else
/// refers to it). The changes made (or, for a dry run, that would be); none when it did not
/// exist.
pub async fn remove_checked(
    store: &Store,
    root: (Kind, &str),
    dry_run: bool,
    check: Check<'_>,
) -> Result<Applied, ApplyError> {
    write(store, Scope::All, check, dry_run, |current, _| {
        Ok(current
            .iter()
            .filter(|(k, _)| k.root() != root)
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect())
    })
    .await
}

/// Replaces one client's credentials with `client`'s (its profiles and its other fields as
/// stored): [`apply`] reading and checking only that client's credentials besides the rest of
/// the configuration, so that issuing a token costs the same among a million others' as among
/// ten. A new credential's id is checked against every client's.
pub async fn apply_credentials(
    store: &Store,
    client: &crate::model::Client,
    dry_run: bool,
) -> Result<Applied, ApplyError> {
    let file = Config {
        clients: vec![client.clone()],
        ..Config::default()
    };
    let desired = flatten(&file);
    let applied = write(
        store,
        Scope::Client(client.id.as_str()),
        &|_| Ok(()),
        dry_run,
        |current, stored| {
            config::validate_in(&file, stored)
                .map_err(|problems| ApplyError::File(ConfigError::Invalid(problems)))?;
            Ok(merge(current, &desired, false))
        },
    )
    .await?;
    Ok(applied)
}

/// One write: `target` computes the records wanted from those stored (those of `scope`); the
/// result must be a valid configuration, and is committed as one version unless it changes
/// nothing (or `dry_run`). Another writer may commit between our read and our write; the
/// commit then fails with a conflict and everything is computed again against what is now
/// stored.
async fn write(
    store: &Store,
    scope: Scope<'_>,
    check: Check<'_>,
    dry_run: bool,
    target: impl Fn(&Records, &Config) -> Result<Records, ApplyError>,
) -> Result<Applied, ApplyError> {
    let mut attempts = 0;
    loop {
        let (version, current) = store.load_scope(scope).await?;
        let stored = assemble(&current)?;
        check(&stored).map_err(ApplyError::Precondition)?;
        let wanted = target(&current, &stored)?;
        config::validate(&assemble(&wanted)?).map_err(ApplyError::Invalid)?;
        let changes = diff(&current, &wanted);
        if let Scope::Client(client) = scope {
            unique_elsewhere(store, client, &changes).await?;
        }
        if dry_run || changes.is_empty() {
            return Ok(Applied {
                changes,
                version,
                committed: false,
            });
        }
        match store.commit(version, &changes).await {
            Ok(version) => {
                return Ok(Applied {
                    changes,
                    version,
                    committed: true,
                });
            }
            Err(StoreError::Conflict { .. }) if attempts < 5 => attempts += 1,
            Err(e) => return Err(e.into()),
        }
    }
}

/// Credential ids are unique across clients: a write that read only `client`'s credentials
/// checks the ones it creates against every other client's.
async fn unique_elsewhere(
    store: &Store,
    client: &str,
    changes: &[Change],
) -> Result<(), ApplyError> {
    let prefix = format!("{client}/");
    for change in changes {
        let Change::Create { key, .. } = change else {
            continue;
        };
        if key.kind != Kind::Credential {
            continue;
        }
        let owners = store.credential_owners(&key.id).await?;
        if let Some(owner) = owners.iter().find(|o| !o.starts_with(&prefix)) {
            return Err(ApplyError::Invalid(vec![FieldError {
                path: format!("credentials.{}.id", key.id),
                message: format!(
                    "duplicate credential id '{}' (profile {owner} has it)",
                    key.id
                ),
            }]));
        }
    }
    Ok(())
}

/// The records that should be stored after applying `desired` on top of `current`.
///
/// Credentials are issued, rotated and revoked by the credential commands, so a file that
/// mentions a client keeps the stored credentials it does not list (unless pruning), and no
/// file can lift a revocation or push an expiry later.
fn merge(current: &Records, desired: &Records, prune: bool) -> Records {
    let mentioned: HashSet<(Kind, &str)> = desired.keys().map(|k| k.root()).collect();
    let kept = current
        .iter()
        .filter(|(k, _)| !prune && !mentioned.contains(&k.root()));
    let mut target: Records = kept
        .chain(desired.iter())
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    let stored_credentials = current.iter().filter(|(k, _)| k.kind == Kind::Credential);
    for (key, stored) in stored_credentials {
        if let Some(wanted) = target.get_mut(key) {
            // A stored credential's kind and material (hash, key, certificate) never change
            // through apply — rotate instead; only its revocation or expiry may come earlier.
            keep_earliest(wanted, stored);
            let times = ["revoked_at", "expires_at"].map(|f| (f, wanted.get(f).cloned()));
            *wanted = stored.clone();
            if let Some(map) = wanted.as_object_mut() {
                for (field, value) in times {
                    match value {
                        Some(v) => map.insert(field.to_owned(), v),
                        None => map.remove(field),
                    };
                }
            }
        } else if !prune && owner_exists(&target, key) {
            target.insert(key.clone(), stored.clone());
        }
    }
    target
}

/// Whether the profile a credential belongs to is in `records`.
fn owner_exists(records: &Records, credential: &RecordKey) -> bool {
    let Some((client, profile)) = credential.parent.split_once('/') else {
        return false;
    };
    records.contains_key(&RecordKey {
        kind: Kind::Profile,
        parent: client.to_owned(),
        id: profile.to_owned(),
    })
}

/// Sets `revoked_at` and `expires_at` of `wanted` to the earlier of its own and `stored`'s.
fn keep_earliest(wanted: &mut serde_json::Value, stored: &serde_json::Value) {
    use time::OffsetDateTime;
    use time::format_description::well_known::Rfc3339;
    let at = |v: &serde_json::Value, field: &str| {
        v.get(field)
            .and_then(|t| t.as_str())
            .and_then(|t| OffsetDateTime::parse(t, &Rfc3339).ok())
    };
    for field in ["revoked_at", "expires_at"] {
        let earlier = match (at(stored, field), at(wanted, field)) {
            (Some(s), Some(w)) => s < w,
            (Some(_), None) => true,
            (None, _) => false,
        };
        if let (true, Some(map)) = (earlier, wanted.as_object_mut()) {
            map.insert(field.to_owned(), stored[field].clone());
        }
    }
}

/// The changes that turn `current` into `target`, in key order.
fn diff(current: &Records, target: &Records) -> Vec<Change> {
    let mut changes = Vec::new();
    for (key, new) in target {
        match current.get(key) {
            None => changes.push(Change::Create {
                key: key.clone(),
                new: new.clone(),
            }),
            Some(old) if old != new => changes.push(Change::Update {
                key: key.clone(),
                old: old.clone(),
                new: new.clone(),
            }),
            Some(_) => {}
        }
    }
    for (key, old) in current {
        if !target.contains_key(key) {
            changes.push(Change::Delete {
                key: key.clone(),
                old: old.clone(),
            });
        }
    }
    changes.sort_by(|a, b| a.key().cmp(b.key()));
    changes
}

/// Renders changes as a readable diff: `+` created, `-` deleted, `~` updated with the changed
/// lines of the object's YAML.
pub fn render(changes: &[Change]) -> String {
    let mut out = String::new();
    let (mut created, mut updated, mut deleted) = (0, 0, 0);
    for change in changes {
        match change {
            Change::Create { key, new } => {
                created += 1;
                let _ = writeln!(out, "+ {key}");
                for line in yaml(new).lines() {
                    let _ = writeln!(out, "    + {line}");
                }
            }
            Change::Update { key, old, new } => {
                updated += 1;
                let _ = writeln!(out, "~ {key}");
                let (old, new) = (yaml(old), yaml(new));
                for line in TextDiff::from_lines(&old, &new).iter_all_changes() {
                    let sign = match line.tag() {
                        ChangeTag::Delete => '-',
                        ChangeTag::Insert => '+',
                        ChangeTag::Equal => ' ',
                    };
                    let _ = write!(out, "    {sign} {}", line.value());
                    if line.missing_newline() {
                        out.push('\n');
                    }
                }
            }
            Change::Delete { key, .. } => {
                deleted += 1;
                let _ = writeln!(out, "- {key}");
            }
        }
    }
    let _ = writeln!(
        out,
        "Plan: {created} to create, {updated} to update, {deleted} to delete."
    );
    out
}

fn yaml(value: &serde_json::Value) -> String {
    serde_saphyr::to_string(value).unwrap_or_else(|_| value.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn key(kind: Kind, parent: &str, id: &str) -> RecordKey {
        RecordKey {
            kind,
            parent: parent.into(),
            id: id.into(),
        }
    }

    #[test]
    fn merge_replaces_mentioned_roots_whole_and_keeps_others_unless_pruning() {
        let current: Records = [
            (key(Kind::Collection, "", "a"), json!({"v": 1})),
            (key(Kind::Operation, "a", "old-op"), json!({})),
            (key(Kind::Collection, "", "b"), json!({"v": 1})),
        ]
        .into();
        let desired: Records = [
            (key(Kind::Collection, "", "a"), json!({"v": 2})),
            (key(Kind::Operation, "a", "new-op"), json!({})),
        ]
        .into();
        let changes = diff(&current, &merge(&current, &desired, false));
        let summary: Vec<String> = changes.iter().map(|c| c.key().to_string()).collect();
        assert_eq!(
            summary,
            ["collection a", "operation a/new-op", "operation a/old-op"]
        );
        assert!(matches!(changes[2], Change::Delete { .. }));
        let pruned = diff(&current, &merge(&current, &desired, true));
        assert!(
            pruned
                .iter()
                .any(|c| matches!(c, Change::Delete { key, .. } if key.id == "b"))
        );
        assert!(diff(&current, &current).is_empty());
    }
}
