//! Quota management: creating, changing and deleting policies and overrides, and resetting
//! usage. Every applied change is a compare-and-set on the stored catalogue that leaves one
//! change record (actor, action, before, after), and is put in force on this node at once;
//! other nodes pick it up from the store ([`Quotas::refresh`]).

use std::sync::Arc;

use serde::Serialize;
use time::OffsetDateTime;

use crate::counters::Unavailable;
use crate::definitions::{ChangeRecord, Definitions, StoreError};
use crate::engine::{CheckError, Engine, Subject};
use crate::policy::{Catalog, Override, Policy, PolicyError};

/// Why a management call was refused.
#[derive(Debug, thiserror::Error)]
pub enum ManageError {
    #[error("{0} not found")]
    NotFound(String),
    #[error("{0} already exists")]
    AlreadyExists(String),
    #[error(transparent)]
    Invalid(#[from] PolicyError),
    #[error("the catalogue kept changing; try again")]
    Contention,
    #[error(transparent)]
    Unavailable(#[from] Unavailable),
}

impl From<CheckError> for ManageError {
    fn from(e: CheckError) -> Self {
        match e {
            CheckError::UnknownPolicy(name) => ManageError::NotFound(format!("policy '{name}'")),
            CheckError::UnknownLimit { policy, limit } => {
                ManageError::NotFound(format!("limit '{limit}' of policy '{policy}'"))
            }
            CheckError::Unavailable(u) => ManageError::Unavailable(u),
        }
    }
}

/// How a policy write treats an existing policy of the same name.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Write {
    /// Refused if it exists.
    Create,
    /// Refused if it does not exist.
    Update,
}

/// The management side of a limiter node.
pub struct Quotas {
    pub engine: Arc<Engine>,
    definitions: Definitions,
}

impl Quotas {
    /// Loads the stored catalogue into a new engine over `counters`.
    pub async fn open(
        definitions: Definitions,
        counters: crate::counters::Counters,
    ) -> Result<Self, Unavailable> {
        let catalog = definitions.load().await?;
        Ok(Self {
            engine: Arc::new(Engine::new(catalog, counters)),
            definitions,
        })
    }

    /// Puts the stored catalogue in force if another node changed it. Returns whether it did.
    ///
    /// If the store has lost the catalogue altogether (Redis restarted without persistence),
    /// this node writes back the one it holds, so policies are not silently gone; the change
    /// records from before the loss are.
    pub async fn refresh(&self) -> Result<bool, Unavailable> {
        let stored = self.definitions.version().await?;
        let current = self.engine.catalog();
        if stored == current.version {
            return Ok(false);
        }
        if stored == 0 {
            self.restore_lost(&current).await?;
            return Ok(false);
        }
        // (Read again: a change this node made meanwhile is not a store going back.)
        if stored < current.version && self.definitions.version().await? < current.version {
            tracing::error!(
                stored,
                in_force = current.version,
                "the store holds an older quota catalogue than this node; keeping the newer one"
            );
            return Ok(false);
        }
        self.engine.install(self.definitions.load().await?);
        Ok(true)
    }

    /// Writes `in_force` back to a store that holds no catalogue at all (Redis restarted
    /// without persistence). Returns whether it did.
    async fn restore_lost(&self, in_force: &Catalog) -> Result<bool, Unavailable> {
        let restored = self.definitions.restore(in_force).await?;
        if restored {
            tracing::error!(
                version = in_force.version,
                "the store had lost the quota definitions; restored them from this node (earlier change records are lost: give Redis persistence)"
            );
        }
        Ok(restored)
    }

    /// Creates each policy that does not exist yet (existing ones are left as they are).
    /// Returns the names created.
    pub async fn seed(&self, policies: Vec<Policy>) -> Result<Vec<String>, ManageError> {
        let mut created = Vec::new();
        for policy in policies {
            let name = policy.name.clone();
            match self.put_policy("seed", policy, Write::Create).await {
                Ok(_) => created.push(name),
                Err(ManageError::AlreadyExists(_)) => {}
                Err(e) => return Err(e),
            }
        }
        Ok(created)
    }

    pub async fn put_policy(
        &self,
        actor: &str,
        policy: Policy,
        write: Write,
    ) -> Result<ChangeRecord, ManageError> {
        policy.validate()?;
        let name = policy.name.clone();
        let action = match write {
            Write::Create => "policy.create",
            Write::Update => "policy.update",
        };
        self.change(actor, action, &format!("policy/{name}"), |catalog| {
            let before = catalog.policies.get(&name).cloned();
            match (write, &before) {
                (Write::Create, Some(_)) => {
                    return Err(ManageError::AlreadyExists(format!("policy '{name}'")));
                }
                (Write::Update, None) => {
                    return Err(ManageError::NotFound(format!("policy '{name}'")));
                }
                (Write::Create, None) | (Write::Update, Some(_)) => {}
            }
            catalog.policies.insert(name.clone(), policy.clone());
            Ok((json(before.as_ref()), json(Some(&policy))))
        })
        .await
    }

    /// Deletes a policy and its overrides.
    pub async fn delete_policy(
        &self,
        actor: &str,
        name: &str,
    ) -> Result<ChangeRecord, ManageError> {
        self.change(
            actor,
            "policy.delete",
            &format!("policy/{name}"),
            |catalog| {
                let before = catalog
                    .policies
                    .remove(name)
                    .ok_or_else(|| ManageError::NotFound(format!("policy '{name}'")))?;
                catalog.overrides.retain(|o| o.policy != name);
                Ok((json(Some(&before)), None))
            },
        )
        .await
    }

    /// Sets (or replaces) the override for one principal under one policy.
    pub async fn set_override(
        &self,
        actor: &str,
        o: Override,
    ) -> Result<ChangeRecord, ManageError> {
        o.validate()?;
        let resource = override_resource(&o.policy, &o.client, o.profile.as_deref());
        self.change(actor, "override.set", &resource, |catalog| {
            if !catalog.policies.contains_key(&o.policy) {
                return Err(ManageError::NotFound(format!("policy '{}'", o.policy)));
            }
            let before = catalog
                .overrides
                .iter()
                .position(|x| x.same_target(&o))
                .map(|i| catalog.overrides.remove(i));
            catalog.overrides.push(o.clone());
            Ok((json(before.as_ref()), json(Some(&o))))
        })
        .await
    }

    pub async fn clear_override(
        &self,
        actor: &str,
        policy: &str,
        client: &str,
        profile: Option<&str>,
    ) -> Result<ChangeRecord, ManageError> {
        let resource = override_resource(policy, client, profile);
        self.change(actor, "override.clear", &resource.clone(), |catalog| {
            let i = catalog
                .overrides
                .iter()
                .position(|o| {
                    o.policy == policy && o.client == client && o.profile.as_deref() == profile
                })
                .ok_or_else(|| ManageError::NotFound(resource.clone()))?;
            let before = catalog.overrides.remove(i);
            Ok((json(Some(&before)), None))
        })
        .await
    }

    /// Forgets a subject's counters under one policy (or one of its limits), and records who
    /// did it.
    pub async fn reset_usage(
        &self,
        actor: &str,
        policy: &str,
        limit: Option<&str>,
        subject: &Subject<'_>,
    ) -> Result<ChangeRecord, ManageError> {
        let limits = self
            .engine
            .reset(policy, limit, subject, OffsetDateTime::now_utc())
            .await?;
        // The counters are gone; if the record cannot be stored, the log keeps who did it.
        tracing::info!(
            target: "portcullis::change",
            actor, action = "usage.reset", policy, client = subject.client, ?limits,
            "usage reset"
        );
        let resource = format!("usage/{policy}/{}", subject.client);
        let after = serde_json::json!({
            "limits": limits,
            "client": subject.client,
            "profile": subject.profile,
            "collection": subject.collection,
            "operation": subject.operation,
            "source_ip": subject.source_ip.map(|ip| ip.to_string()),
        });
        self.change(actor, "usage.reset", &resource, |_| {
            Ok((None, Some(after.clone())))
        })
        .await
    }

    /// Change records after catalogue version `after`, oldest first.
    pub async fn changes(
        &self,
        after: u64,
        limit: usize,
    ) -> Result<Vec<ChangeRecord>, Unavailable> {
        self.definitions.changes(after, limit).await
    }

    /// Applies `edit` to the stored catalogue and stores the result with its change record,
    /// retrying when another writer got there first.
    async fn change<F>(
        &self,
        actor: &str,
        action: &str,
        resource: &str,
        mut edit: F,
    ) -> Result<ChangeRecord, ManageError>
    where
        F: FnMut(
            &mut Catalog,
        )
            -> Result<(Option<serde_json::Value>, Option<serde_json::Value>), ManageError>,
    {
        for _ in 0..8 {
            let mut catalog = self.definitions.load().await?;
            let in_force = self.engine.catalog();
            if catalog.version < in_force.version {
                // The store went back (Redis lost its data): never build a change on that.
                if catalog.version == 0 && self.restore_lost(&in_force).await? {
                    continue;
                }
                return Err(ManageError::Unavailable(Unavailable(format!(
                    "the store holds catalogue version {} but this node has {}: restore the store before changing quotas",
                    catalog.version, in_force.version
                ))));
            }
            let (before, after) = edit(&mut catalog)?;
            catalog.version += 1;
            let record = ChangeRecord {
                version: catalog.version,
                at: OffsetDateTime::now_utc(),
                actor: actor.to_owned(),
                action: action.to_owned(),
                resource: resource.to_owned(),
                before,
                after,
            };
            match self.definitions.commit(&catalog, &record).await {
                Ok(()) => {
                    tracing::info!(
                        target: "portcullis::change",
                        actor, action, resource, version = catalog.version,
                        "quota catalogue changed"
                    );
                    self.engine.install(catalog);
                    if let Ok(value) = serde_json::to_value(&record) {
                        crate::telemetry::export_event(
                            "portcullis.change",
                            "portcullis.change",
                            &value.to_string(),
                            crate::telemetry::attributes(&value),
                        );
                    }
                    return Ok(record);
                }
                Err(StoreError::Conflict) => continue,
                Err(StoreError::Unavailable(u)) => return Err(u.into()),
            }
        }
        Err(ManageError::Contention)
    }
}

fn override_resource(policy: &str, client: &str, profile: Option<&str>) -> String {
    match profile {
        Some(p) => format!("override/{policy}/{client}/{p}"),
        None => format!("override/{policy}/{client}"),
    }
}

fn json<T: Serialize>(value: Option<&T>) -> Option<serde_json::Value> {
    value.map(|v| serde_json::to_value(v).expect("definitions serialize"))
}
