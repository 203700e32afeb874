//! Operators in the store: named service identities with roles, found by the keyed hash of
//! their token. Read per management request, so a revocation counts on every node at once.

use sqlx::Row;

use super::{Store, StoreError};

/// One operator as stored (never its token).
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, schemars::JsonSchema)]
pub struct OperatorRow {
    pub id: String,
    /// Role names, in the order stored.
    pub roles: Vec<String>,
    #[serde(skip)]
    pub token_hash: String,
    pub description: String,
    pub created_at: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub expires_at: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub revoked_at: Option<String>,
}

fn row<R: Row>(r: &R) -> Result<OperatorRow, sqlx::Error>
where
    for<'c> &'c str: sqlx::ColumnIndex<R>,
    for<'q> String: sqlx::Decode<'q, R::Database> + sqlx::Type<R::Database>,
    for<'q> Option<String>: sqlx::Decode<'q, R::Database> + sqlx::Type<R::Database>,
{
    let roles: String = r.try_get("roles")?;
    Ok(OperatorRow {
        id: r.try_get("id")?,
        roles: roles.split_whitespace().map(str::to_owned).collect(),
        token_hash: r.try_get("token_hash")?,
        description: r.try_get("description")?,
        created_at: r.try_get("created_at")?,
        expires_at: r.try_get("expires_at")?,
        revoked_at: r.try_get("revoked_at")?,
    })
}

impl Store {
    /// Adds an operator. Fails with [`StoreError::Conflict`]-free database errors when the id
    /// exists (the caller reports it).
    pub async fn insert_operator(&self, op: &OperatorRow) -> Result<(), StoreError> {
        on_pool!(self, pool => {
            sqlx::query(
                "INSERT INTO operators (id, roles, token_hash, description, created_at, expires_at, revoked_at) \
                 VALUES ($1, $2, $3, $4, $5, $6, $7)",
            )
            .bind(&op.id)
            .bind(op.roles.join(" "))
            .bind(&op.token_hash)
            .bind(&op.description)
            .bind(&op.created_at)
            .bind(&op.expires_at)
            .bind(&op.revoked_at)
            .execute(pool)
            .await?;
        });
        Ok(())
    }

    /// The operator whose token has this hash (revoked and expired ones included: the caller
    /// decides).
    pub async fn operator_by_token(&self, hash: &str) -> Result<Option<OperatorRow>, StoreError> {
        Ok(on_pool!(self, pool => {
            let sql = "SELECT id, roles, token_hash, description, created_at, expires_at, revoked_at \
                       FROM operators WHERE token_hash = $1";
            match sqlx::query(sql).bind(hash).fetch_optional(pool).await? {
                Some(r) => Some(row(&r)?),
                None => None,
            }
        }))
    }

    /// Every operator, by id.
    pub async fn operators(&self) -> Result<Vec<OperatorRow>, StoreError> {
        Ok(on_pool!(self, pool => {
            let sql = "SELECT id, roles, token_hash, description, created_at, expires_at, revoked_at \
                       FROM operators ORDER BY id";
            let rows = sqlx::query(sql).fetch_all(pool).await?;
            rows.iter().map(row).collect::<Result<Vec<_>, _>>()?
        }))
    }

    /// Sets a live operator's roles, description and expiry (not its token). Whether it was
    /// live.
    pub async fn set_operator_binding(&self, op: &OperatorRow) -> Result<bool, StoreError> {
        let done = on_pool!(self, pool => {
            sqlx::query(
                "UPDATE operators SET roles = $2, description = $3, expires_at = $4 \
                 WHERE id = $1 AND revoked_at IS NULL",
            )
            .bind(&op.id)
            .bind(op.roles.join(" "))
            .bind(&op.description)
            .bind(&op.expires_at)
            .execute(pool)
            .await?
            .rows_affected()
        });
        Ok(done > 0)
    }

    /// Replaces a live operator's token hash, if it is still `old`. Whether it was replaced
    /// (false: revoked, or rotated meanwhile).
    pub async fn rotate_operator_token(
        &self,
        id: &str,
        old: &str,
        new: &str,
    ) -> Result<bool, StoreError> {
        let done = on_pool!(self, pool => {
            sqlx::query(
                "UPDATE operators SET token_hash = $3 \
                 WHERE id = $1 AND token_hash = $2 AND revoked_at IS NULL",
            )
            .bind(id)
            .bind(old)
            .bind(new)
            .execute(pool)
            .await?
            .rows_affected()
        });
        Ok(done > 0)
    }

    /// Marks an operator revoked (keeping the earlier time if it already was). Whether it
    /// exists.
    pub async fn revoke_operator(&self, id: &str, at: &str) -> Result<bool, StoreError> {
        let done = on_pool!(self, pool => {
            sqlx::query("UPDATE operators SET revoked_at = COALESCE(revoked_at, $2) WHERE id = $1")
                .bind(id)
                .bind(at)
                .execute(pool)
                .await?
                .rows_affected()
        });
        Ok(done > 0)
    }
}
