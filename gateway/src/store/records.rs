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
    /// Every kind (keep in step with the enum).
    pub const ALL: [Kind; 6] = [
        Kind::Collection,
        Kind::Operation,
        Kind::Client,
        Kind::Profile,
        Kind::Credential,
        Kind::IdentityProvider,
    ];

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
    assemble_owned(records.clone())
}

/// [`assemble`], consuming the records (no copy of each document: what a node loading a large
/// configuration wants).
pub fn assemble_owned(records: Records) -> Result<Config, StoreError> {
    let mut operations: HashMap<String, Vec<Operation>> = HashMap::new();
    let mut profiles: HashMap<String, Vec<Profile>> = HashMap::new();
    let mut credentials: HashMap<String, Vec<Credential>> = HashMap::new();
    let mut collections = Vec::new();
    let mut clients = Vec::new();
    let mut identity_providers = Vec::new();
    for (key, value) in records {
        match key.kind {
            Kind::Collection => collections.push(from_value::<Collection>(&key, value)?),
            Kind::Operation => {
                let op = from_value(&key, value)?;
                operations.entry(key.parent).or_default().push(op);
            }
            Kind::Client => clients.push(from_value::<Client>(&key, value)?),
            Kind::Profile => {
                let p = from_value(&key, value)?;
                profiles.entry(key.parent).or_default().push(p);
            }
            Kind::Credential => {
                let c = from_value(&key, value)?;
                credentials.entry(key.parent).or_default().push(c);
            }
            Kind::IdentityProvider => identity_providers.push(from_value(&key, value)?),
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
        .map(|p| (Kind::Operation, p))
        .chain(profiles.keys().map(|p| (Kind::Profile, p)))
        .chain(credentials.keys().map(|p| (Kind::Credential, p)))
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

/// One object written (its stored document) or deleted (`None`) since a version.
pub type Written = (RecordKey, Option<Value>);

/// Brings a configuration `assemble`d at one version to a later one, given the objects written
/// and deleted in between: the same configuration `assemble` would build from all records at
/// the later version, without reading them all. Deletions go first, children before parents;
/// then writes, parents before children. A written child whose owner does not exist means the
/// store was edited by hand, as in `assemble`.
pub fn patch(config: &mut Config, mut written: Vec<Written>) -> Result<(), StoreError> {
    written.sort_by(|(a, x), (b, y)| match (x, y) {
        (None, None) => b.cmp(a),
        (Some(_), Some(_)) => a.cmp(b),
        (None, Some(_)) => std::cmp::Ordering::Less,
        (Some(_), None) => std::cmp::Ordering::Greater,
    });
    for (key, value) in written {
        match value {
            None => remove(config, &key),
            Some(value) => upsert(config, &key, value)?,
        }
    }
    Ok(())
}

/// How many stored objects (records) a configuration is.
pub fn objects(config: &Config) -> usize {
    let collections: usize = config
        .collections
        .iter()
        .map(|c| 1 + c.operations.len())
        .sum();
    let clients: usize = config
        .clients
        .iter()
        .map(|c| {
            1 + c
                .profiles
                .iter()
                .map(|p| 1 + p.credentials.len())
                .sum::<usize>()
        })
        .sum();
    collections + clients + config.identity_providers.len()
}

/// Where an object of `key`'s kind sits in its owner's list: found at, or to insert at.
fn place<T>(list: &[T], id: &str, id_of: impl Fn(&T) -> &str) -> Result<usize, usize> {
    list.binary_search_by(|item| id_of(item).cmp(id))
}

fn remove(config: &mut Config, key: &RecordKey) {
    fn take<T>(list: &mut Vec<T>, id: &str, id_of: impl Fn(&T) -> &str) {
        if let Ok(at) = place(list, id, id_of) {
            list.remove(at);
        }
    }
    let id = key.id.as_str();
    match key.kind {
        Kind::Collection => take(&mut config.collections, id, |c| c.id.as_str()),
        Kind::Client => take(&mut config.clients, id, |c| c.id.as_str()),
        Kind::IdentityProvider => take(&mut config.identity_providers, id, |p| p.id.as_str()),
        Kind::Operation => {
            if let Some(c) = find(&mut config.collections, &key.parent, |c| c.id.as_str()) {
                take(&mut c.operations, id, |o| o.id.as_str());
            }
        }
        Kind::Profile => {
            if let Some(c) = find(&mut config.clients, &key.parent, |c| c.id.as_str()) {
                take(&mut c.profiles, id, |p| p.id.as_str());
            }
        }
        Kind::Credential => {
            if let Some(p) = profile_of(config, &key.parent) {
                take(&mut p.credentials, id, |c| c.id.as_str());
            }
        }
    }
}

fn upsert(config: &mut Config, key: &RecordKey, value: Value) -> Result<(), StoreError> {
    /// Puts `item` in its place in `list`; when it replaces an object, `keep` moves that
    /// object's children (stored as their own records) over to it.
    fn put<T>(
        list: &mut Vec<T>,
        mut item: T,
        id_of: impl Fn(&T) -> &str,
        keep: impl Fn(&mut T, &mut T),
    ) {
        match place(list, id_of(&item), &id_of) {
            Ok(at) => {
                keep(&mut item, &mut list[at]);
                list[at] = item;
            }
            Err(at) => list.insert(at, item),
        }
    }
    let orphan = || StoreError::Corrupt {
        kind: key.kind.as_str().to_owned(),
        id: format!("{}/{}", key.parent, key.id),
        reason: format!("its owner '{}' does not exist", key.parent),
    };
    match key.kind {
        Kind::Collection => put(
            &mut config.collections,
            from_value::<Collection>(key, value)?,
            |c| c.id.as_str(),
            |new, old| new.operations = std::mem::take(&mut old.operations),
        ),
        Kind::Client => put(
            &mut config.clients,
            from_value::<Client>(key, value)?,
            |c| c.id.as_str(),
            |new, old| new.profiles = std::mem::take(&mut old.profiles),
        ),
        Kind::IdentityProvider => put(
            &mut config.identity_providers,
            from_value(key, value)?,
            |p: &crate::model::IdentityProvider| p.id.as_str(),
            |_, _| {},
        ),
        Kind::Operation => {
            let c =
                find(&mut config.collections, &key.parent, |c| c.id.as_str()).ok_or_else(orphan)?;
            put(
                &mut c.operations,
                from_value::<Operation>(key, value)?,
                |o| o.id.as_str(),
                |_, _| {},
            );
        }
        Kind::Profile => {
            let c = find(&mut config.clients, &key.parent, |c| c.id.as_str()).ok_or_else(orphan)?;
            put(
                &mut c.profiles,
                from_value::<Profile>(key, value)?,
                |p| p.id.as_str(),
                |new, old| new.credentials = std::mem::take(&mut old.credentials),
            );
        }
        Kind::Credential => {
            let p = profile_of(config, &key.parent).ok_or_else(orphan)?;
            put(
                &mut p.credentials,
                from_value::<Credential>(key, value)?,
                |c| c.id.as_str(),
                |_, _| {},
            );
        }
    }
    Ok(())
}

fn find<'a, T>(list: &'a mut [T], id: &str, id_of: impl Fn(&T) -> &str) -> Option<&'a mut T> {
    let at = place(list, id, id_of).ok()?;
    Some(&mut list[at])
}

/// The profile a credential's `client/profile` owner names.
fn profile_of<'a>(config: &'a mut Config, owner: &str) -> Option<&'a mut Profile> {
    let (client, profile) = owner.split_once('/')?;
    let client = find(&mut config.clients, client, |c| c.id.as_str())?;
    find(&mut client.profiles, profile, |p| p.id.as_str())
}

/// Whether `config` holds the object `key` names.
pub fn contains(config: &Config, key: &RecordKey) -> bool {
    let id = key.id.as_str();
    let client = |id: &str| {
        place(&config.clients, id, |c| c.id.as_str())
            .ok()
            .map(|at| &config.clients[at])
    };
    match key.kind {
        Kind::Collection => place(&config.collections, id, |c| c.id.as_str()).is_ok(),
        Kind::Client => client(id).is_some(),
        Kind::IdentityProvider => place(&config.identity_providers, id, |p| p.id.as_str()).is_ok(),
        Kind::Operation => {
            place(&config.collections, &key.parent, |c| c.id.as_str()).is_ok_and(|at| {
                place(&config.collections[at].operations, id, |o| o.id.as_str()).is_ok()
            })
        }
        Kind::Profile => {
            client(&key.parent).is_some_and(|c| place(&c.profiles, id, |p| p.id.as_str()).is_ok())
        }
        Kind::Credential => credential_at(config, &key.parent, id).is_some(),
    }
}

/// A credential found by its owner (`client/profile`) and id, with the places of its client
/// in `config.clients` and of its profile in that client's profiles.
pub fn credential_at<'a>(
    config: &'a Config,
    owner: &str,
    id: &str,
) -> Option<(usize, usize, &'a Credential)> {
    let (client, profile) = owner.split_once('/')?;
    let ci = place(&config.clients, client, |c| c.id.as_str()).ok()?;
    let profiles = &config.clients[ci].profiles;
    let pi = place(profiles, profile, |p| p.id.as_str()).ok()?;
    let credentials = &profiles[pi].credentials;
    let at = place(credentials, id, |c| c.id.as_str()).ok()?;
    Some((ci, pi, &credentials[at]))
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

fn from_value<T: serde::de::DeserializeOwned>(key: &RecordKey, v: Value) -> Result<T, StoreError> {
    serde_json::from_value(v).map_err(|e| StoreError::Corrupt {
        kind: key.kind.as_str().to_owned(),
        id: key.id.clone(),
        reason: e.to_string(),
    })
}

/// What changed from `a` to `b`, as the store reports it to a node following changes.
#[cfg(test)]
pub fn written(a: &Records, b: &Records) -> Vec<Written> {
    let mut out: Vec<Written> = b
        .iter()
        .filter(|(k, v)| a.get(k) != Some(v))
        .map(|(k, v)| (k.clone(), Some(v.clone())))
        .collect();
    out.extend(
        a.keys()
            .filter(|k| !b.contains_key(k))
            .map(|k| (k.clone(), None)),
    );
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(value: serde_json::Value) -> Config {
        serde_json::from_value(value).expect("a valid configuration")
    }

    #[test]
    fn patching_gives_what_assembling_everything_gives() {
        let token = |id: &str, n: u8| serde_json::json!({"id": id, "kind": "api_token", "token_hash": format!("{n:02x}").repeat(32)});
        let before = config(serde_json::json!({
            "collections": [
                {"id": "orders", "base_path": "/orders", "upstreams": {"sandbox": "http://127.0.0.1:1"},
                 "operations": [{"id": "list", "methods": ["GET"], "path": "/"},
                                {"id": "get", "methods": ["GET"], "path": "/{id}"}]},
                {"id": "stock", "base_path": "/stock", "upstreams": {"sandbox": "http://127.0.0.1:1"},
                 "operations": [{"id": "list", "methods": ["GET"], "path": "/"}]},
            ],
            "clients": [
                {"id": "acme", "profiles": [
                    {"id": "acme-sbx", "environment": "sandbox", "collections": ["orders"],
                     "credentials": [token("a1", 1), token("a2", 2)]}]},
                {"id": "globex", "profiles": [
                    {"id": "globex-sbx", "environment": "sandbox", "collections": ["stock"],
                     "credentials": [token("g1", 3)]}]},
            ],
        }));
        // Every kind written, created and deleted; a parent replaced keeps its children; a
        // client deleted with everything it owns; a new one with its children at once.
        let after = config(serde_json::json!({
            "collections": [
                {"id": "billing", "base_path": "/billing", "upstreams": {"sandbox": "http://127.0.0.1:2"},
                 "operations": [{"id": "pay", "methods": ["POST"], "path": "/"}]},
                {"id": "orders", "base_path": "/v2/orders", "upstreams": {"sandbox": "http://127.0.0.1:1"},
                 "operations": [{"id": "get", "methods": ["GET", "HEAD"], "path": "/{id}"},
                                {"id": "create", "methods": ["POST"], "path": "/"}]},
            ],
            "clients": [
                {"id": "acme", "partner": "acme-corp", "profiles": [
                    {"id": "acme-sbx", "environment": "sandbox", "collections": ["orders", "billing"],
                     "credentials": [token("a0", 4), token("a2", 2)]}]},
                {"id": "initech", "profiles": [
                    {"id": "initech-sbx", "environment": "sandbox", "collections": ["billing"],
                     "credentials": [token("i1", 5)]}]},
            ],
        }));
        let (a, b) = (flatten(&before), flatten(&after));
        assert_eq!((objects(&before), objects(&after)), (a.len(), b.len()));
        let mut patched = assemble(&a).unwrap();
        patch(&mut patched, written(&a, &b)).unwrap();
        assert_eq!(patched, assemble(&b).unwrap());
        // And back.
        patch(&mut patched, written(&b, &a)).unwrap();
        assert_eq!(patched, assemble(&a).unwrap());
    }

    #[test]
    fn a_written_child_without_its_owner_is_reported() {
        let mut c = Config::default();
        let key = RecordKey::new(Kind::Credential, "ghost/ghost-sbx", "t1");
        let value =
            serde_json::json!({"id": "t1", "kind": "api_token", "token_hash": "00".repeat(32)});
        let e = patch(&mut c, vec![(key, Some(value))]).unwrap_err();
        assert!(e.to_string().contains("ghost/ghost-sbx"), "{e}");
    }
}
