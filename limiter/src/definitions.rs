//! Where the catalogue (policies and overrides) and its change records are kept: a file in the
//! data directory (one machine) or Redis (shared by limiter nodes). A change is a
//! compare-and-set on the catalogue's version, so two operators editing at once cannot lose
//! each other's change, and each applied change leaves one change record beside it.

use std::io::Write;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

use crate::counters::Unavailable;
use crate::policy::Catalog;
use crate::redis_pool::{Connector, RedisSettings, pool, unavailable as redis_err};

/// One applied change: who did what to which object, with the object before and after.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ChangeRecord {
    /// The catalogue version this change produced.
    pub version: u64,
    #[serde(with = "time::serde::rfc3339")]
    pub at: OffsetDateTime,
    /// The service token's name (or `seed` for definitions loaded from a seed file).
    pub actor: String,
    /// `policy.create`, `policy.update`, `policy.delete`, `override.set`, `override.clear`,
    /// `usage.reset`.
    pub action: String,
    /// `policy/<name>`, `override/<policy>/<client>[/<profile>]` or `usage/<policy>/<client>`.
    pub resource: String,
    pub before: Option<serde_json::Value>,
    pub after: Option<serde_json::Value>,
}

/// Why a change could not be stored.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// Someone else changed the catalogue first: re-read and re-apply.
    #[error("the catalogue changed meanwhile")]
    Conflict,
    #[error(transparent)]
    Unavailable(#[from] Unavailable),
}

/// The definitions store.
pub struct Definitions {
    store: Store,
}

enum Store {
    /// `catalog.json` and `changes.jsonl` in a directory; one writer at a time.
    File {
        dir: PathBuf,
        lock: tokio::sync::Mutex<()>,
    },
    Redis {
        pool: bb8::Pool<Connector>,
        prefix: String,
    },
}

impl Definitions {
    /// Definitions kept in `dir` (created if missing).
    pub fn file(dir: impl Into<PathBuf>) -> Result<Self, Unavailable> {
        let dir = dir.into();
        std::fs::create_dir_all(&dir)
            .map_err(|e| Unavailable(format!("cannot create {}: {e}", dir.display())))?;
        Ok(Definitions {
            store: Store::File {
                dir,
                lock: tokio::sync::Mutex::new(()),
            },
        })
    }

    /// Definitions kept in Redis beside the counters.
    pub fn redis(settings: &RedisSettings) -> Result<Self, Unavailable> {
        Ok(Definitions {
            store: Store::Redis {
                pool: pool(settings)?,
                prefix: settings.prefix.clone(),
            },
        })
    }

    /// The stored catalogue (empty, version 0, when none is stored yet).
    pub async fn load(&self) -> Result<Catalog, Unavailable> {
        let text: Option<String> = match &self.store {
            Store::File { dir, .. } => match tokio::fs::read_to_string(dir.join(CATALOG)).await {
                Ok(text) => Some(text),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
                Err(e) => return Err(Unavailable(format!("cannot read the catalogue: {e}"))),
            },
            Store::Redis { pool, prefix } => {
                let mut conn = pool.get().await.map_err(redis_err)?;
                redis::cmd("GET")
                    .arg(format!("{prefix}:{{defs}}:catalog"))
                    .query_async(&mut *conn)
                    .await
                    .map_err(redis_err)?
            }
        };
        match text {
            None => Ok(Catalog::default()),
            Some(text) => serde_json::from_str(&text)
                .map_err(|e| Unavailable(format!("the stored catalogue is unreadable: {e}"))),
        }
    }

    /// The stored catalogue's version: cheap, for noticing other nodes' changes.
    pub async fn version(&self) -> Result<u64, Unavailable> {
        match &self.store {
            Store::File { .. } => Ok(self.load().await?.version),
            Store::Redis { pool, prefix } => {
                let mut conn = pool.get().await.map_err(redis_err)?;
                let v: Option<u64> = redis::cmd("GET")
                    .arg(format!("{prefix}:{{defs}}:version"))
                    .query_async(&mut *conn)
                    .await
                    .map_err(redis_err)?;
                Ok(v.unwrap_or(0))
            }
        }
    }

    /// Stores `catalog` (whose version must be one more than the stored one) with its change
    /// record, or fails with [`StoreError::Conflict`] when the stored version moved.
    pub async fn commit(&self, catalog: &Catalog, change: &ChangeRecord) -> Result<(), StoreError> {
        let json = serde_json::to_string(catalog).expect("a catalogue serializes");
        let record = serde_json::to_string(change).expect("a change record serializes");
        match &self.store {
            Store::File { dir, lock } => {
                let _writer = lock.lock().await;
                let dir = dir.clone();
                let expected = catalog.version - 1;
                let stored = self.load().await?.version;
                if stored != expected {
                    return Err(StoreError::Conflict);
                }
                tokio::task::spawn_blocking(move || write_file(&dir, &json, &record))
                    .await
                    .map_err(|e| Unavailable(e.to_string()))?
                    .map_err(|e| Unavailable(format!("cannot write the catalogue: {e}")))?;
                Ok(())
            }
            Store::Redis { pool, prefix } => {
                let script = redis::Script::new(COMMIT);
                let mut conn = pool.get().await.map_err(redis_err)?;
                let applied: i64 = script
                    .key(format!("{prefix}:{{defs}}:version"))
                    .key(format!("{prefix}:{{defs}}:catalog"))
                    .key(format!("{prefix}:{{defs}}:changes"))
                    .arg(catalog.version - 1)
                    .arg(json)
                    .arg(record)
                    .invoke_async(&mut *conn)
                    .await
                    .map_err(redis_err)?;
                if applied == 1 {
                    Ok(())
                } else {
                    Err(StoreError::Conflict)
                }
            }
        }
    }

    /// Change records, oldest first, after catalogue version `after`, at most `limit`.
    pub async fn changes(
        &self,
        after: u64,
        limit: usize,
    ) -> Result<Vec<ChangeRecord>, Unavailable> {
        let lines: Vec<String> = match &self.store {
            Store::File { dir, .. } => match tokio::fs::read_to_string(dir.join(CHANGES)).await {
                Ok(text) => text.lines().map(str::to_owned).collect(),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => Vec::new(),
                Err(e) => return Err(Unavailable(format!("cannot read the changes: {e}"))),
            },
            Store::Redis { pool, prefix } => {
                let mut conn = pool.get().await.map_err(redis_err)?;
                // Records are scored by the version they produced.
                redis::cmd("ZRANGEBYSCORE")
                    .arg(format!("{prefix}:{{defs}}:changes"))
                    .arg(format!("({after}"))
                    .arg("+inf")
                    .arg("LIMIT")
                    .arg(0)
                    .arg(limit)
                    .query_async(&mut *conn)
                    .await
                    .map_err(redis_err)?
            }
        };
        // A crash between a file store's record and its catalogue leaves a record for a
        // version that was then produced again: the later record is the one that took effect.
        let mut records = std::collections::BTreeMap::new();
        for line in lines.iter().filter(|l| !l.trim().is_empty()) {
            let record: ChangeRecord = serde_json::from_str(line)
                .map_err(|e| Unavailable(format!("a stored change record is unreadable: {e}")))?;
            if record.version > after {
                records.insert(record.version, record);
            }
        }
        Ok(records.into_values().take(limit).collect())
    }

    /// Stores `catalog` again if the store holds no catalogue at all (Redis restarted without
    /// persistence). Returns whether it did. Change records from before the loss are gone.
    pub async fn restore(&self, catalog: &Catalog) -> Result<bool, Unavailable> {
        let json = serde_json::to_string(catalog).expect("a catalogue serializes");
        match &self.store {
            Store::File { dir, lock } => {
                let _writer = lock.lock().await;
                if tokio::fs::try_exists(dir.join(CATALOG))
                    .await
                    .unwrap_or(true)
                {
                    return Ok(false);
                }
                let dir = dir.clone();
                tokio::task::spawn_blocking(move || {
                    let tmp = dir.join(format!("{CATALOG}.tmp"));
                    let mut file = std::fs::File::create(&tmp)?;
                    file.write_all(json.as_bytes())?;
                    file.sync_all()?;
                    std::fs::rename(&tmp, dir.join(CATALOG))
                })
                .await
                .map_err(|e| Unavailable(e.to_string()))?
                .map_err(|e| Unavailable(format!("cannot write the catalogue: {e}")))?;
                Ok(true)
            }
            Store::Redis { pool, prefix } => {
                let mut conn = pool.get().await.map_err(redis_err)?;
                let restored: i64 = redis::Script::new(RESTORE)
                    .key(format!("{prefix}:{{defs}}:version"))
                    .key(format!("{prefix}:{{defs}}:catalog"))
                    .arg(catalog.version)
                    .arg(json)
                    .invoke_async(&mut *conn)
                    .await
                    .map_err(redis_err)?;
                Ok(restored == 1)
            }
        }
    }
}

const CATALOG: &str = "catalog.json";
const CHANGES: &str = "changes.jsonl";

/// Compare-and-set of the catalogue in Redis, with its change record, atomically.
const COMMIT: &str = r"
local stored = tonumber(redis.call('GET', KEYS[1]) or '0')
if stored ~= tonumber(ARGV[1]) then return 0 end
redis.call('SET', KEYS[2], ARGV[2])
redis.call('SET', KEYS[1], stored + 1)
redis.call('ZADD', KEYS[3], stored + 1, ARGV[3])
return 1
";

/// Puts a catalogue back into a Redis that lost it (nothing is stored under the version key).
const RESTORE: &str = r"
if redis.call('EXISTS', KEYS[1]) == 1 then return 0 end
redis.call('SET', KEYS[2], ARGV[2])
redis.call('SET', KEYS[1], ARGV[1])
return 1
";

/// Appends the change record, then replaces the catalogue atomically (write, sync, rename,
/// sync the directory), so a crash leaves the old or the new catalogue, never half of one.
fn write_file(dir: &std::path::Path, catalog: &str, record: &str) -> std::io::Result<()> {
    let mut changes = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(dir.join(CHANGES))?;
    changes.write_all(format!("{record}\n").as_bytes())?;
    changes.sync_all()?;
    let tmp = dir.join(format!("{CATALOG}.tmp"));
    let mut file = std::fs::File::create(&tmp)?;
    file.write_all(catalog.as_bytes())?;
    file.sync_all()?;
    std::fs::rename(&tmp, dir.join(CATALOG))?;
    std::fs::File::open(dir)?.sync_all()
}
