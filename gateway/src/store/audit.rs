//! Request records in the store: batched inserts (idempotent, so a replayed journal does not
//! duplicate), the chain head per node, filtered queries with a cursor, and reading a chain for
//! verification.

use sqlx::Row;

use super::{Store, StoreError};

/// One stored request record: the indexed columns and the exact body that was hashed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AuditRow {
    pub node: String,
    pub seq: u64,
    /// `request` or `change`.
    pub kind: String,
    pub recorded_at: String,
    pub channel: String,
    pub outcome: String,
    pub reason: Option<String>,
    pub status: u16,
    pub client: Option<String>,
    pub profile: Option<String>,
    pub partner: Option<String>,
    pub collection: Option<String>,
    pub operation: Option<String>,
    pub body: String,
    pub prev_hash: String,
    pub hash: String,
}

/// What `audit query` filters on; every field is optional.
#[derive(Clone, Debug, Default)]
pub struct AuditFilter {
    /// `request` or `change` records only.
    pub kind: Option<String>,
    pub client: Option<String>,
    pub profile: Option<String>,
    pub partner: Option<String>,
    pub collection: Option<String>,
    pub operation: Option<String>,
    pub channel: Option<String>,
    pub outcome: Option<String>,
    pub reason: Option<String>,
    pub status: Option<u16>,
    /// RFC 3339, inclusive.
    pub since: Option<String>,
    /// RFC 3339, exclusive.
    pub until: Option<String>,
    /// Continue after this position (from a previous page).
    pub after: Option<(String, String, u64)>,
    pub limit: u32,
}

impl Store {
    /// Writes a batch in one transaction; rows already stored are left as they are.
    pub async fn insert_audit(&self, rows: &[AuditRow]) -> Result<(), StoreError> {
        // Many rows per statement: a statement is a round trip (to the database, or to
        // SQLite's worker thread), and a busy node writes thousands of records a second.
        // 16 parameters a row stays within SQLite's and PostgreSQL's limits.
        on_pool!(self, pool => {
            let mut tx = pool.begin().await?;
            for chunk in rows.chunks(super::ROWS_PER_STATEMENT) {
                let mut insert = sqlx::QueryBuilder::new(
                    "INSERT INTO audit_records (node, seq, recorded_at, channel, outcome, reason, \
                     status, client, profile, partner, collection, operation, body, prev_hash, hash, kind) ",
                );
                insert.push_values(chunk, |mut row, r| {
                    row.push_bind(&r.node)
                        .push_bind(r.seq as i64)
                        .push_bind(&r.recorded_at)
                        .push_bind(&r.channel)
                        .push_bind(&r.outcome)
                        .push_bind(&r.reason)
                        .push_bind(i32::from(r.status))
                        .push_bind(&r.client)
                        .push_bind(&r.profile)
                        .push_bind(&r.partner)
                        .push_bind(&r.collection)
                        .push_bind(&r.operation)
                        .push_bind(&r.body)
                        .push_bind(&r.prev_hash)
                        .push_bind(&r.hash)
                        .push_bind(&r.kind);
                });
                insert.push(" ON CONFLICT (node, seq) DO NOTHING");
                insert.build().execute(&mut *tx).await?;
            }
            tx.commit().await?;
            Ok(())
        })
    }

    /// The last stored record of `node`: its sequence number and hash.
    pub async fn audit_head(&self, node: &str) -> Result<Option<(u64, String)>, StoreError> {
        let row = on_pool!(self, pool => {
            sqlx::query(
                "SELECT seq, hash FROM audit_records WHERE node = $1 ORDER BY seq DESC LIMIT 1",
            )
            .bind(node)
            .fetch_optional(pool)
            .await?
            .map(|r| (r.get::<i64, _>(0) as u64, r.get::<String, _>(1)))
        });
        Ok(row)
    }

    /// The nodes that have records.
    pub async fn audit_nodes(&self) -> Result<Vec<String>, StoreError> {
        Ok(on_pool!(self, pool => {
            sqlx::query_scalar("SELECT DISTINCT node FROM audit_records ORDER BY node")
                .fetch_all(pool)
                .await?
        }))
    }

    /// Request records from `since` until (before) `until`, counted by outcome, reason,
    /// collection and channel.
    pub async fn audit_summary(
        &self,
        since: &str,
        until: &str,
    ) -> Result<Vec<SummaryGroup>, StoreError> {
        let sql = "SELECT outcome, reason, collection, channel, COUNT(*) FROM audit_records \
                   WHERE kind = 'request' AND recorded_at >= $1 AND recorded_at < $2 \
                   GROUP BY outcome, reason, collection, channel";
        Ok(on_pool!(self, pool => {
            sqlx::query(sql)
                .bind(since)
                .bind(until)
                .fetch_all(pool)
                .await?
                .into_iter()
                .map(|r| SummaryGroup {
                    outcome: r.get(0),
                    reason: r.get(1),
                    collection: r.get(2),
                    channel: r.get(3),
                    count: r.get::<i64, _>(4) as u64,
                })
                .collect()
        }))
    }

    /// Records matching `filter`, oldest first.
    pub async fn audit_query(&self, filter: &AuditFilter) -> Result<Vec<AuditRow>, StoreError> {
        let mut sql = String::from(
            "SELECT node, seq, recorded_at, channel, outcome, reason, status, client, profile, \
             partner, collection, operation, body, prev_hash, hash, kind FROM audit_records WHERE 1 = 1",
        );
        let mut binds: Vec<String> = Vec::new();
        let mut add = |sql: &mut String, column: &str, op: &str, value: &Option<String>| {
            if let Some(v) = value {
                binds.push(v.clone());
                sql.push_str(&format!(" AND {column} {op} ${}", binds.len()));
            }
        };
        add(&mut sql, "kind", "=", &filter.kind);
        add(&mut sql, "client", "=", &filter.client);
        add(&mut sql, "profile", "=", &filter.profile);
        add(&mut sql, "partner", "=", &filter.partner);
        add(&mut sql, "collection", "=", &filter.collection);
        add(&mut sql, "operation", "=", &filter.operation);
        add(&mut sql, "channel", "=", &filter.channel);
        add(&mut sql, "outcome", "=", &filter.outcome);
        add(&mut sql, "reason", "=", &filter.reason);
        add(&mut sql, "recorded_at", ">=", &filter.since);
        add(&mut sql, "recorded_at", "<", &filter.until);
        if let Some(status) = filter.status {
            sql.push_str(&format!(" AND status = {status}"));
        }
        if let Some((at, node, seq)) = &filter.after {
            binds.push(at.clone());
            let a = binds.len();
            binds.push(node.clone());
            let n = binds.len();
            sql.push_str(&format!(
                " AND (recorded_at > ${a} OR (recorded_at = ${a} AND (node > ${n} OR (node = ${n} AND seq > {seq}))))"
            ));
        }
        sql.push_str(&format!(
            " ORDER BY recorded_at, node, seq LIMIT {}",
            filter.limit.clamp(1, 10_000)
        ));
        let rows = on_pool!(self, pool => {
            let mut q = sqlx::query(sqlx::AssertSqlSafe(sql.clone()));
            for b in &binds {
                q = q.bind(b);
            }
            q.fetch_all(pool).await?.into_iter().map(|r| AuditRow {
                node: r.get(0),
                seq: r.get::<i64, _>(1) as u64,
                recorded_at: r.get(2),
                channel: r.get(3),
                outcome: r.get(4),
                reason: r.get(5),
                status: r.get::<i32, _>(6) as u16,
                client: r.get(7),
                profile: r.get(8),
                partner: r.get(9),
                collection: r.get(10),
                operation: r.get(11),
                body: r.get(12),
                prev_hash: r.get(13),
                hash: r.get(14),
                kind: r.get(15),
            }).collect::<Vec<_>>()
        });
        Ok(rows)
    }

    /// `node`'s records with `from <= seq <= to`, in sequence order: (seq, body, prev, hash).
    pub async fn audit_chain(
        &self,
        node: &str,
        from: u64,
        to: u64,
    ) -> Result<Vec<(u64, String, String, String)>, StoreError> {
        Ok(on_pool!(self, pool => {
            sqlx::query(
                "SELECT seq, body, prev_hash, hash FROM audit_records \
                 WHERE node = $1 AND seq >= $2 AND seq <= $3 ORDER BY seq LIMIT 10000",
            )
            .bind(node)
            .bind(from as i64)
            .bind(to.min(i64::MAX as u64) as i64)
            .fetch_all(pool)
            .await?
            .into_iter()
            .map(|r| (r.get::<i64, _>(0) as u64, r.get(1), r.get(2), r.get(3)))
            .collect()
        }))
    }
}

/// One group of [`Store::audit_summary`].
#[derive(Debug)]
pub struct SummaryGroup {
    pub outcome: String,
    pub reason: Option<String>,
    pub collection: Option<String>,
    pub channel: String,
    pub count: u64,
}
