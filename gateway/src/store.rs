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

pub use self::audit::{AuditFilter, AuditRow};
pub use self::records::{Change, Kind, RecordKey, Records, assemble, flatten};

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
        loop {
            let before = self.version().await?;
            let rows = on_pool!(self, pool => {
                sqlx::query("SELECT kind, parent, id, body FROM config_objects")
                    .fetch_all(pool)
                    .await?
                    .into_iter()
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
            for change in changes {
                match change {
                    Change::Create { key, new } | Change::Update { key, new, .. } => {
                        sqlx::query(
                            "INSERT INTO config_objects (kind, parent, id, body, revision) \
                             VALUES ($1, $2, $3, $4, $5) \
                             ON CONFLICT (kind, parent, id) DO UPDATE \
                             SET body = excluded.body, revision = excluded.revision",
                        )
                        .bind(key.kind.as_str())
                        .bind(&key.parent)
                        .bind(&key.id)
                        .bind(new.to_string())
                        .bind(next)
                        .execute(&mut *tx)
                        .await?;
                    }
                    Change::Delete { key, .. } => {
                        sqlx::query(
                            "DELETE FROM config_objects WHERE kind = $1 AND parent = $2 AND id = $3",
                        )
                        .bind(key.kind.as_str())
                        .bind(&key.parent)
                        .bind(&key.id)
                        .execute(&mut *tx)
                        .await?;
                    }
                }
            }
            tx.commit().await?;
            Ok(next as u64)
        })
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
