//! The configuration as flat records — one JSON document per object, keyed by kind, parent and
//! id — which is how the store keeps it and how plans compare it. `flatten` and `assemble`
//! convert between records and the nested [`Config`].

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::str::FromStr;

use serde_json::Value;

use super::StoreError;
use crate::model::{Client, Collection, Config, Credential, Operation, Profile};

/// The kinds of stored object, in dependency order.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Kind {
    Collection,
    Operation,
    Client,
    Profile,
    Credential,
    IdentityProvider,
}

impl Kind {
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Collection => "collection",
            Kind::Operation => "operation",
            Kind::Client => "client",
            Kind::Profile => "profile",
            Kind::Credential => "credential",
            Kind::IdentityProvider => "identity_provider",
        }
    }
}

impl FromStr for Kind {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "collection" => Ok(Kind::Collection),
            "operation" => Ok(Kind::Operation),
            "client" => Ok(Kind::Client),
            "profile" => Ok(Kind::Profile),
            "credential" => Ok(Kind::Credential),
            "identity_provider" => Ok(Kind::IdentityProvider),
            other => Err(format!("unknown kind '{other}'")),
        }
    }
}

/// Identifies one stored object.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct RecordKey {
    pub kind: Kind,
    /// The owner's id: '' for collections and clients, the collection for operations, the
    /// client for profiles, `client/profile` for credentials.
    pub parent: String,
    pub id: String,
}

impl RecordKey {
    fn new(kind: Kind, parent: impl Into<String>, id: impl Into<String>) -> Self {
        Self {
            kind,
            parent: parent.into(),
            id: id.into(),
        }
    }

    /// The top-level object (collection or client) this record belongs to.
    pub fn root(&self) -> (Kind, &str) {
        match self.kind {
            Kind::Collection | Kind::Client | Kind::IdentityProvider => (self.kind, &self.id),
            Kind::Operation => (Kind::Collection, &self.parent),
            Kind::Profile => (Kind::Client, &self.parent),
            Kind::Credential => (
                Kind::Client,
                self.parent.split_once('/').map_or(&self.parent, |(c, _)| c),
            ),
        }
    }
}

impl fmt::Display for RecordKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.parent.is_empty() {
            write!(f, "{} {}", self.kind.as_str(), self.id)
        } else {
            write!(f, "{} {}/{}", self.kind.as_str(), self.parent, self.id)
        }
    }
}

/// A whole configuration as records.
pub type Records = BTreeMap<RecordKey, Value>;

/// One difference between two sets of records.
#[derive(Clone, Debug, PartialEq)]
pub enum Change {
    Create {
        key: RecordKey,
        new: Value,
    },
    Update {
        key: RecordKey,
        old: Value,
        new: Value,
    },
    Delete {
        key: RecordKey,
        old: Value,
    },
}

impl Change {
    pub fn key(&self) -> &RecordKey {
        match self {
            Change::Create { key, .. }
            | Change::Update { key, .. }
            | Change::Delete { key, .. } => key,
        }
    }
}

/// Splits a configuration into one record per object; children are removed from their
/// parent's document and stored on their own.
pub fn flatten(config: &Config) -> Records {
    let mut out = Records::new();
    for c in &config.collections {
        for op in &c.operations {
            out.insert(
                RecordKey::new(Kind::Operation, c.id.as_str(), op.id.as_str()),
                to_value(op),
            );
        }
        out.insert(
            RecordKey::new(Kind::Collection, "", c.id.as_str()),
            without(to_value(c), "operations"),
        );
    }
    for p in &config.identity_providers {
        out.insert(
            RecordKey::new(Kind::IdentityProvider, "", p.id.as_str()),
            to_value(p),
        );
    }
    for client in &config.clients {
        for p in &client.profiles {
            let owner = format!("{}/{}", client.id, p.id);
            for cred in &p.credentials {
                out.insert(
                    RecordKey::new(Kind::Credential, owner.as_str(), cred.id.as_str()),
                    to_value(cred),
                );
            }
            out.insert(
                RecordKey::new(Kind::Profile, client.id.as_str(), p.id.as_str()),
                without(to_value(p), "credentials"),
            );
        }
        out.insert(
            RecordKey::new(Kind::Client, "", client.id.as_str()),
            without(to_value(client), "profiles"),
        );
    }
    out
}

/// Rebuilds the nested configuration from records, objects ordered by id. A child whose
/// parent is missing means the store was edited by hand: it is reported, not dropped.
pub fn assemble(records: &Records) -> Result<Config, StoreError> {
    let mut operations: HashMap<&str, Vec<Operation>> = HashMap::new();
    let mut profiles: HashMap<&str, Vec<Profile>> = HashMap::new();
    let mut credentials: HashMap<&str, Vec<Credential>> = HashMap::new();
    let mut collections = Vec::new();
    let mut clients = Vec::new();
    let mut identity_providers = Vec::new();
    for (key, value) in records {
        match key.kind {
            Kind::Collection => collections.push(from_value::<Collection>(key, value)?),
            Kind::Operation => operations
                .entry(&key.parent)
                .or_default()
                .push(from_value(key, value)?),
            Kind::Client => clients.push(from_value::<Client>(key, value)?),
            Kind::Profile => profiles
                .entry(&key.parent)
                .or_default()
                .push(from_value(key, value)?),
            Kind::Credential => credentials
                .entry(&key.parent)
                .or_default()
                .push(from_value(key, value)?),
            Kind::IdentityProvider => identity_providers.push(from_value(key, value)?),
        }
    }
    for c in &mut collections {
        c.operations = operations.remove(c.id.as_str()).unwrap_or_default();
    }
    for client in &mut clients {
        client.profiles = profiles.remove(client.id.as_str()).unwrap_or_default();
        for p in &mut client.profiles {
            let owner = format!("{}/{}", client.id, p.id);
            p.credentials = credentials.remove(owner.as_str()).unwrap_or_default();
        }
    }
    let orphan = operations
        .keys()
        .map(|p| (Kind::Operation, *p))
        .chain(profiles.keys().map(|p| (Kind::Profile, *p)))
        .chain(credentials.keys().map(|p| (Kind::Credential, *p)))
        .next();
    if let Some((kind, parent)) = orphan {
        return Err(StoreError::Corrupt {
            kind: kind.as_str().to_owned(),
            id: format!("{parent}/…"),
            reason: format!("its owner '{parent}' does not exist"),
        });
    }
    Ok(Config {
        collections,
        clients,
        identity_providers,
    })
}

fn to_value<T: serde::Serialize>(v: &T) -> Value {
    serde_json::to_value(v).expect("the model always serializes")
}

fn without(mut v: Value, field: &str) -> Value {
    if let Some(map) = v.as_object_mut() {
        map.remove(field);
    }
    v
}

fn from_value<T: serde::de::DeserializeOwned>(key: &RecordKey, v: &Value) -> Result<T, StoreError> {
    serde_json::from_value(v.clone()).map_err(|e| StoreError::Corrupt {
        kind: key.kind.as_str().to_owned(),
        id: key.id.clone(),
        reason: e.to_string(),
    })
}
