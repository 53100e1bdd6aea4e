//! The as-run side of live relays: what happened to a relay while it aired.

use serde::Serialize;
use sqlx::FromRow;

use super::{Store, StoreError, now_rfc3339};

/// One step of a relay: `connected`, `fault`, `fallback`, `recovered`, `stopped`, `ended`.
#[derive(Debug, Clone, FromRow, Serialize, utoipa::ToSchema)]
pub struct RelayEventRow {
    pub at: String,
    pub kind: String,
    pub detail: String,
}

/// Most events kept per broadcast in a view (a day-long relay over a flaky link).
const MAX_EVENTS_SHOWN: i64 = 200;

impl Store {
    pub async fn insert_relay_event(
        &self,
        broadcast: &str,
        kind: &str,
        detail: &str,
    ) -> Result<(), StoreError> {
        sqlx::query(
            "INSERT INTO relay_events (broadcast_id, at, kind, detail) VALUES (?, ?, ?, ?)",
        )
        .bind(broadcast)
        .bind(now_rfc3339())
        .bind(kind)
        .bind(detail)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// The latest events of a broadcast's relay, oldest first.
    pub async fn relay_events(&self, broadcast: &str) -> Result<Vec<RelayEventRow>, StoreError> {
        let mut rows: Vec<RelayEventRow> = sqlx::query_as(
            "SELECT at, kind, detail FROM relay_events WHERE broadcast_id = ?
             ORDER BY id DESC LIMIT ?",
        )
        .bind(broadcast)
        .bind(MAX_EVENTS_SHOWN)
        .fetch_all(&self.pool)
        .await?;
        rows.reverse();
        Ok(rows)
    }

    /// Notes why a broadcast went as it did (kept when it ends).
    pub async fn set_broadcast_detail(&self, id: &str, detail: &str) -> Result<(), StoreError> {
        sqlx::query("UPDATE broadcasts SET detail = ? WHERE id = ?")
            .bind(detail)
            .bind(id)
            .execute(&self.pool)
            .await?;
        Ok(())
    }
}
