//! Users and their tokens in the store.

use sqlx::FromRow;

use super::{Store, StoreError, conflict_or_db};

#[derive(Debug, Clone, FromRow, PartialEq)]
pub struct UserRow {
    pub id: String,
    pub name: String,
    pub role: String,
    pub area_code: Option<String>,
    pub cluster_id: Option<String>,
    pub can_approve: bool,
    /// SHA-256 (hex) of the token.
    pub token_hash: String,
    pub created_at: String,
    pub expires_at: Option<String>,
    pub revoked_at: Option<String>,
}

impl Store {
    pub async fn insert_user(&self, u: &UserRow) -> Result<(), StoreError> {
        sqlx::query(
            "INSERT INTO users (id, name, role, area_code, cluster_id, can_approve, token_hash,
                                created_at, expires_at, revoked_at)
             VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        )
        .bind(&u.id)
        .bind(&u.name)
        .bind(&u.role)
        .bind(&u.area_code)
        .bind(&u.cluster_id)
        .bind(u.can_approve)
        .bind(&u.token_hash)
        .bind(&u.created_at)
        .bind(&u.expires_at)
        .bind(&u.revoked_at)
        .execute(&self.pool)
        .await
        .map_err(conflict_or_db)?;
        Ok(())
    }

    /// The user holding the token whose SHA-256 is `token_hash`, revoked or not.
    pub async fn user_by_token(&self, token_hash: &str) -> Result<UserRow, StoreError> {
        sqlx::query_as("SELECT * FROM users WHERE token_hash = ?")
            .bind(token_hash)
            .fetch_optional(&self.pool)
            .await?
            .ok_or(StoreError::NotFound)
    }

    pub async fn user(&self, id: &str) -> Result<UserRow, StoreError> {
        sqlx::query_as("SELECT * FROM users WHERE id = ?")
            .bind(id)
            .fetch_optional(&self.pool)
            .await?
            .ok_or(StoreError::NotFound)
    }

    pub async fn users(&self) -> Result<Vec<UserRow>, StoreError> {
        Ok(
            sqlx::query_as("SELECT * FROM users ORDER BY created_at, id")
                .fetch_all(&self.pool)
                .await?,
        )
    }

    /// Revokes a user's token at `at`; false if it was already revoked.
    pub async fn revoke_user(&self, id: &str, at: &str) -> Result<bool, StoreError> {
        self.user(id).await?;
        let done =
            sqlx::query("UPDATE users SET revoked_at = ? WHERE id = ? AND revoked_at IS NULL")
                .bind(at)
                .bind(id)
                .execute(&self.pool)
                .await?;
        Ok(done.rows_affected() == 1)
    }
}
