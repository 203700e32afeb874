//! The configuration store: one async interface over two backends, SQLite (the embedded
//! default) and PostgreSQL (a cluster), with the same schema and the same behaviour. Objects are
//! kept one row each as JSON; a single version number increases with every committed change so
//! nodes can tell they are behind.

mod records;

use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::time::Duration;

use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous};
use sqlx::{PgPool, Row, SqlitePool};

pub use self::audit::{AuditFilter, AuditRow, SummaryGroup};
#[cfg(test)]
pub use self::records::written;
pub use self::records::{
    Change, Kind, RecordKey, Records, Written, assemble, assemble_owned, contains, credential_at,
    flatten, objects, patch,
};

/// Where the configuration lives.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum StoreLocation {
    Sqlite(PathBuf),
    Postgres(String),
}

impl StoreLocation {
    /// `postgres://…`/`postgresql://…` selects PostgreSQL, `sqlite://PATH` a SQLite file; with
    /// no URL, SQLite at `DATA_DIR/portcullis.db`.
    pub fn resolve(url: Option<&str>, data_dir: &Path) -> Result<Self, StoreError> {
        match url {
            None => Ok(Self::Sqlite(data_dir.join("portcullis.db"))),
            Some(u) if u.starts_with("postgres://") || u.starts_with("postgresql://") => {
                Ok(Self::Postgres(u.to_owned()))
            }
            Some(u) => match u.strip_prefix("sqlite://") {
                Some(path) if !path.is_empty() => Ok(Self::Sqlite(PathBuf::from(path))),
                Some(_) | None => Err(StoreError::BadUrl(redact(u))),
            },
        }
    }

    /// A description safe to print: passwords removed.
    pub fn display(&self) -> String {
        match self {
            Self::Sqlite(path) => format!("sqlite://{}", path.display()),
            Self::Postgres(url) => redact(url),
        }
    }
}

/// Removes the password from a URL's userinfo, and the query (which may carry `password=`).
fn redact(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return "<unparseable URL>".to_owned();
    };
    let (rest, query) = match rest.split_once('?') {
        Some((rest, _)) => (rest, "?…"),
        None => (rest, ""),
    };
    match rest.rsplit_once('@') {
        Some((auth, host)) => {
            let user = auth.split_once(':').map_or(auth, |(u, _)| u);
            format!("{scheme}://{user}:***@{host}{query}")
        }
        None => format!("{scheme}://{rest}{query}"),
    }
}

/// Store failures.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("unsupported store URL '{0}' (use postgres://… or sqlite://PATH)")]
    BadUrl(String),
    #[error("cannot create the data directory {path}")]
    DataDir {
        path: String,
        source: std::io::Error,
    },
    #[error(
        "the configuration changed meanwhile (now at version {current}, expected {expected}); retry"
    )]
    Conflict { expected: u64, current: u64 },
    #[error("stored object {kind}/{id} is unreadable: {reason}")]
    Corrupt {
        kind: String,
        id: String,
        reason: String,
    },
    #[error("database error: {0}")]
    Database(#[from] sqlx::Error),
    #[error("migration failed: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
}

/// An open store.
#[derive(Clone, Debug)]
pub enum Store {
    Sqlite(SqlitePool),
    Postgres(PgPool),
}

/// The PostgreSQL channel on which commits announce their configuration version.
pub const CHANGE_CHANNEL: &str = "portcullis_config";

/// This process's commits.
static COMMITTED: tokio::sync::Notify = tokio::sync::Notify::const_new();

/// Which stored objects a read covers.
#[derive(Clone, Copy, Debug)]
pub enum Scope<'a> {
    /// Everything.
    All,
    /// Everything but the credentials of other clients: what a change confined to one client's
    /// credentials needs, so that its cost does not grow with everyone else's credentials.
    Client(&'a str),
}

/// What changed in the configuration since a version: see [`Store::changes_since`].
pub struct Changes {
    pub version: u64,
    pub written: Vec<Written>,
    /// Objects stored at `version`.
    pub objects: usize,
}

/// Rows per multi-row statement (SQLite takes up to 32,766 bound values in one, PostgreSQL
/// 65,535; audit rows bind 16 each, configuration rows 5).
const ROWS_PER_STATEMENT: usize = 500;

/// Runs the same code against either pool; the SQL is written once, in the dialect both share.
macro_rules! on_pool {
    ($store:expr, $pool:ident => $body:expr) => {
        match $store {
            Store::Sqlite($pool) => $body,
            Store::Postgres($pool) => $body,
        }
    };
}

// After the macro, which they use.
mod audit;
mod operators;

pub use self::operators::OperatorRow;

impl Store {
    /// Connects and brings the schema up to date.
    pub async fn open(location: &StoreLocation) -> Result<Self, StoreError> {
        match location {
            StoreLocation::Sqlite(path) => {
                if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
                    std::fs::create_dir_all(dir).map_err(|source| StoreError::DataDir {
                        path: dir.display().to_string(),
                        source,
                    })?;
                }
                let options = SqliteConnectOptions::new()
                    .filename(path)
                    .create_if_missing(true)
                    .journal_mode(SqliteJournalMode::Wal)
                    // An accepted write survives a power cut.
                    .synchronous(SqliteSynchronous::Full)
                    .busy_timeout(Duration::from_secs(10))
                    .foreign_keys(true);
                let pool = SqlitePoolOptions::new()
                    .max_connections(4)
                    .connect_with(options)
                    .await?;
                sqlx::migrate!("migrations/sqlite").run(&pool).await?;
                Ok(Self::Sqlite(pool))
            }
            StoreLocation::Postgres(url) => {
                let options = PgConnectOptions::from_str(url)?;
                let pool = PgPoolOptions::new()
                    .max_connections(8)
                    .acquire_timeout(Duration::from_secs(5))
                    .connect_with(options)
                    .await?;
                sqlx::migrate!("migrations/postgres").run(&pool).await?;
                Ok(Self::Postgres(pool))
            }
        }
    }

    /// The current configuration version (0 for an empty store).
    pub async fn version(&self) -> Result<u64, StoreError> {
        let v: i64 = on_pool!(self, pool => {
            sqlx::query_scalar("SELECT version FROM config_version WHERE singleton = 1")
                .fetch_one(pool)
                .await?
        });
        Ok(v as u64)
    }

    /// Every stored object at one version.
    pub async fn load(&self) -> Result<(u64, Records), StoreError> {
        self.load_scope(Scope::All).await
    }

    /// The stored objects of `scope` at one version.
    pub async fn load_scope(&self, scope: Scope<'_>) -> Result<(u64, Records), StoreError> {
        loop {
            let before = self.version().await?;
            let rows = on_pool!(self, pool => {
                let mut rows = Vec::new();
                match scope {
                    Scope::All => {
                        rows = sqlx::query("SELECT kind, parent, id, body FROM config_objects")
                            .fetch_all(pool)
                            .await?;
                    }
                    // Every kind but credentials, then this client's credentials by their
                    // exact parents (`client/profile`): index lookups in any collation, never a
                    // scan of everyone's credentials.
                    Scope::Client(client) => {
                        let mut others = sqlx::QueryBuilder::new(
                            "SELECT kind, parent, id, body FROM config_objects WHERE kind IN (",
                        );
                        let mut kinds = others.separated(", ");
                        for kind in Kind::ALL.iter().filter(|k| **k != Kind::Credential) {
                            kinds.push_bind(kind.as_str());
                        }
                        others.push(")");
                        rows.extend(others.build().fetch_all(pool).await?);
                        let owners: Vec<String> = rows
                            .iter()
                            .filter(|r| {
                                r.get::<String, _>(0) == Kind::Profile.as_str()
                                    && r.get::<String, _>(1) == client
                            })
                            .map(|r| format!("{client}/{}", r.get::<String, _>(2)))
                            .collect();
                        if !owners.is_empty() {
                            let mut credentials = sqlx::QueryBuilder::new(
                                "SELECT kind, parent, id, body FROM config_objects \
                                 WHERE kind = 'credential' AND parent IN (",
                            );
                            let mut parents = credentials.separated(", ");
                            for owner in &owners {
                                parents.push_bind(owner);
                            }
                            credentials.push(")");
                            rows.extend(credentials.build().fetch_all(pool).await?);
                        }
                    }
                }
                rows.into_iter()
                    .map(|r| (r.get::<String, _>(0), r.get::<String, _>(1), r.get::<String, _>(2), r.get::<String, _>(3)))
                    .collect::<Vec<_>>()
            });
            // A commit between the two reads could mix versions: read again.
            if self.version().await? != before {
                continue;
            }
            let mut records = Records::new();
            for (kind, parent, id, body) in rows {
                let corrupt = |reason: String| StoreError::Corrupt {
                    kind: kind.clone(),
                    id: id.clone(),
                    reason,
                };
                let k = Kind::from_str(&kind).map_err(corrupt)?;
                let value = serde_json::from_str(&body).map_err(|e| corrupt(e.to_string()))?;
                records.insert(
                    RecordKey {
                        kind: k,
                        parent,
                        id,
                    },
                    value,
                );
            }
            return Ok((before, records));
        }
    }

    /// What changed after version `since`: the version now, each object written since (its
    /// document) or deleted since (`None`), and how many objects there are now — for
    /// [`patch`], so that a node follows changes without reading every object again, and can
    /// tell when its copy has drifted (a deletion it was not told of).
    pub async fn changes_since(&self, since: u64) -> Result<Changes, StoreError> {
        let since = i64::try_from(since).unwrap_or(i64::MAX);
        loop {
            let before = self.version().await?;
            let (rows, deleted, objects) = on_pool!(self, pool => {
                let rows = sqlx::query(
                    "SELECT kind, parent, id, body FROM config_objects WHERE revision > $1",
                )
                .bind(since)
                .fetch_all(pool)
                .await?;
                // An object deleted and created again since is simply written: it has a row.
                let deleted = sqlx::query(
                    "SELECT d.kind, d.parent, d.id FROM config_deletions d WHERE d.revision > $1 \
                     AND NOT EXISTS (SELECT 1 FROM config_objects o \
                     WHERE o.kind = d.kind AND o.parent = d.parent AND o.id = d.id)",
                )
                .bind(since)
                .fetch_all(pool)
                .await?;
                let objects: i64 = sqlx::query_scalar("SELECT count(*) FROM config_objects")
                    .fetch_one(pool)
                    .await?;
                (
                    rows.into_iter()
                        .map(|r| (r.get::<String, _>(0), r.get::<String, _>(1), r.get::<String, _>(2), Some(r.get::<String, _>(3))))
                        .collect::<Vec<_>>(),
                    deleted
                        .into_iter()
                        .map(|r| (r.get::<String, _>(0), r.get::<String, _>(1), r.get::<String, _>(2), None))
                        .collect::<Vec<_>>(),
                    objects,
                )
            });
            // A commit between the reads could mix versions: read again.
            if self.version().await? != before {
                continue;
            }
            let mut written = Vec::with_capacity(rows.len() + deleted.len());
            for (kind, parent, id, body) in rows.into_iter().chain(deleted) {
                let corrupt = |reason: String| StoreError::Corrupt {
                    kind: kind.clone(),
                    id: id.clone(),
                    reason,
                };
                let kind = Kind::from_str(&kind).map_err(corrupt)?;
                let value = match body {
                    Some(body) => {
                        Some(serde_json::from_str(&body).map_err(|e| corrupt(e.to_string()))?)
                    }
                    None => None,
                };
                written.push((RecordKey { kind, parent, id }, value));
            }
            return Ok(Changes {
                version: before,
                written,
                objects: usize::try_from(objects).unwrap_or(0),
            });
        }
    }

    /// The owners (`client/profile`) of the credentials named `id`, among every client's.
    pub async fn credential_owners(&self, id: &str) -> Result<Vec<String>, StoreError> {
        Ok(on_pool!(self, pool => {
            sqlx::query_scalar("SELECT parent FROM config_objects WHERE kind = 'credential' AND id = $1")
                .bind(id)
                .fetch_all(pool)
                .await?
        }))
    }

    /// Writes `changes` atomically as version `base + 1`, or fails with
    /// [`StoreError::Conflict`] if another commit moved the version since `base`.
    pub async fn commit(&self, base: u64, changes: &[Change]) -> Result<u64, StoreError> {
        on_pool!(self, pool => {
            let mut tx = pool.begin().await?;
            // Writing the version row first takes the write lock before anything is read, so
            // concurrent commits serialize here (row lock in PostgreSQL, the database lock in
            // SQLite).
            let next: i64 = sqlx::query_scalar(
                "UPDATE config_version SET version = version + 1 WHERE singleton = 1 RETURNING version",
            )
            .fetch_one(&mut *tx)
            .await?;
            let current = (next - 1) as u64;
            if current != base {
                tx.rollback().await?;
                return Err(StoreError::Conflict { expected: base, current });
            }
            // Other nodes hear of the new version at once (delivered when this commits).
            if matches!(self, Store::Postgres(_)) {
                sqlx::query("SELECT pg_notify($1, $2)")
                    .bind(CHANGE_CHANNEL)
                    .bind(next.to_string())
                    .execute(&mut *tx)
                    .await?;
            }
            // Many rows per statement: applying a large catalogue is a few hundred statements,
            // not one per object. (`changes` names each object once, as PostgreSQL needs of
            // one `INSERT … ON CONFLICT DO UPDATE`.)
            let mut written = Vec::new();
            let mut deleted = Vec::new();
            for change in changes {
                match change {
                    Change::Create { key, new } | Change::Update { key, new, .. } => {
                        written.push((key, new.to_string()));
                    }
                    Change::Delete { key, .. } => deleted.push(key),
                }
            }
            for chunk in written.chunks(ROWS_PER_STATEMENT) {
                let mut insert = sqlx::QueryBuilder::new(
                    "INSERT INTO config_objects (kind, parent, id, body, revision) ",
                );
                insert.push_values(chunk, |mut row, (key, body)| {
                    row.push_bind(key.kind.as_str())
                        .push_bind(&key.parent)
                        .push_bind(&key.id)
                        .push_bind(body)
                        .push_bind(next);
                });
                insert.push(
                    " ON CONFLICT (kind, parent, id) DO UPDATE \
                     SET body = excluded.body, revision = excluded.revision",
                );
                insert.build().execute(&mut *tx).await?;
            }
            for chunk in deleted.chunks(ROWS_PER_STATEMENT) {
                let mut delete = sqlx::QueryBuilder::new(
                    "DELETE FROM config_objects WHERE (kind, parent, id) IN ",
                );
                delete.push_tuples(chunk, |mut row, key| {
                    row.push_bind(key.kind.as_str())
                        .push_bind(&key.parent)
                        .push_bind(&key.id);
                });
                delete.build().execute(&mut *tx).await?;
                // So that nodes following changes learn of it.
                let mut tombstone = sqlx::QueryBuilder::new(
                    "INSERT INTO config_deletions (kind, parent, id, revision) ",
                );
                tombstone.push_values(chunk, |mut row, key| {
                    row.push_bind(key.kind.as_str())
                        .push_bind(&key.parent)
                        .push_bind(&key.id)
                        .push_bind(next);
                });
                tombstone.push(
                    " ON CONFLICT (kind, parent, id) DO UPDATE SET revision = excluded.revision",
                );
                tombstone.build().execute(&mut *tx).await?;
            }
            tx.commit().await?;
            COMMITTED.notify_waiters();
            Ok(next as u64)
        })
    }

    /// Wakes `wake` each time a configuration version may have been committed: at once for
    /// this process's commits; for other processes' through PostgreSQL `LISTEN` (SQLite has no
    /// such feed: the caller's version poll finds them). Also wakes after the feed reconnects,
    /// since notifications sent meanwhile are lost. Runs until dropped.
    pub async fn watch_commits(&self, wake: std::sync::Arc<tokio::sync::Notify>) {
        let Store::Postgres(pool) = self else {
            loop {
                COMMITTED.notified().await;
                wake.notify_one();
            }
        };
        let local = async {
            loop {
                COMMITTED.notified().await;
                wake.notify_one();
            }
        };
        let remote = async {
            loop {
                let mut listener = match sqlx::postgres::PgListener::connect_with(pool).await {
                    Ok(listener) => listener,
                    Err(e) => {
                        tracing::warn!(error = %e, "cannot listen for configuration changes; polling meanwhile");
                        tokio::time::sleep(Duration::from_secs(1)).await;
                        continue;
                    }
                };
                if let Err(e) = listener.listen(CHANGE_CHANNEL).await {
                    tracing::warn!(error = %e, "cannot listen for configuration changes; polling meanwhile");
                    tokio::time::sleep(Duration::from_secs(1)).await;
                    continue;
                }
                // Anything committed before the feed was up.
                wake.notify_one();
                loop {
                    match listener.try_recv().await {
                        Ok(Some(_)) => wake.notify_one(),
                        // The connection dropped; the next call reconnects. Catch up.
                        Ok(None) => wake.notify_one(),
                        Err(e) => {
                            tracing::warn!(error = %e, "the configuration change feed failed; reconnecting");
                            tokio::time::sleep(Duration::from_secs(1)).await;
                            break;
                        }
                    }
                }
            }
        };
        tokio::join!(local, remote);
    }

    /// Closes the pool, waiting for connections to finish.
    pub async fn close(&self) {
        on_pool!(self, pool => pool.close().await)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn locations() {
        let dir = Path::new("/var/lib/portcullis");
        assert_eq!(
            StoreLocation::resolve(None, dir).unwrap(),
            StoreLocation::Sqlite(dir.join("portcullis.db"))
        );
        assert_eq!(
            StoreLocation::resolve(Some("sqlite://x.db"), dir).unwrap(),
            StoreLocation::Sqlite("x.db".into())
        );
        let pg = StoreLocation::resolve(Some("postgres://app:hunter2@db:5432/gw"), dir).unwrap();
        assert_eq!(pg.display(), "postgres://app:***@db:5432/gw");
        let err = StoreLocation::resolve(Some("mysql://root:hunter2@db/x"), dir).unwrap_err();
        assert!(!err.to_string().contains("hunter2"), "{err}");
        let query =
            StoreLocation::resolve(Some("postgres://app@db/gw?password=hunter2"), dir).unwrap();
        assert_eq!(query.display(), "postgres://app:***@db/gw?…");
    }
}
