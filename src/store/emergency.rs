//! Emergencies, CAP alerts and the audit log in the store.

use sqlx::FromRow;

use super::{BroadcastClusterRow, BroadcastRow, Store, StoreError, now_rfc3339};

#[derive(Debug, Clone, FromRow, PartialEq)]
pub struct EmergencyRow {
    pub broadcast_id: String,
    /// `user` or `cap`.
    pub source: String,
    pub actor: String,
    pub interval_s: i64,
    pub event: Option<String>,
    pub cap_sender: Option<String>,
    pub cap_identifier: Option<String>,
}

#[derive(Debug, Clone, FromRow, PartialEq)]
pub struct CapAlertRow {
    pub id: String,
    pub sender: String,
    pub identifier: String,
    pub sent: String,
    pub status: String,
    pub msg_type: String,
    pub received_at: String,
    pub outcome: String,
    pub broadcast_id: Option<String>,
}

#[derive(Debug, Clone, FromRow, PartialEq)]
pub struct AuditRow {
    pub seq: i64,
    pub at: String,
    pub actor: String,
    pub action: String,
    pub target: Option<String>,
    pub detail: Option<String>,
    pub result: String,
}

/// One audit entry to append.
#[derive(Debug, Clone, Copy)]
pub struct AuditEntry<'a> {
    pub actor: &'a str,
    pub action: &'a str,
    pub target: Option<&'a str>,
    pub detail: Option<&'a str>,
    pub result: &'a str,
}

impl Store {
    /// Records an emergency (its broadcast, clusters, source, the CAP alert it came from
    /// if any, and the audit entry) in one transaction.
    pub async fn insert_emergency(
        &self,
        b: &BroadcastRow,
        clusters: &[BroadcastClusterRow],
        e: &EmergencyRow,
        cap: Option<&CapAlertRow>,
        audit: AuditEntry<'_>,
    ) -> Result<(), StoreError> {
        let mut tx = self.insert_broadcast_tx(b, clusters).await?;
        sqlx::query(
            "INSERT INTO emergencies (broadcast_id, source, actor, interval_s, event, cap_sender,
                                      cap_identifier)
             VALUES (?, ?, ?, ?, ?, ?, ?)",
        )
        .bind(&e.broadcast_id)
        .bind(&e.source)
        .bind(&e.actor)
        .bind(e.interval_s)
        .bind(&e.event)
        .bind(&e.cap_sender)
        .bind(&e.cap_identifier)
        .execute(&mut *tx)
        .await?;
        if let Some(cap) = cap {
            insert_cap(&mut tx, cap).await?;
        }
        insert_audit(&mut tx, audit).await?;
        tx.commit().await?;
        Ok(())
    }

    pub async fn emergency(&self, broadcast_id: &str) -> Result<EmergencyRow, StoreError> {
        sqlx::query_as("SELECT * FROM emergencies WHERE broadcast_id = ?")
            .bind(broadcast_id)
            .fetch_optional(&self.pool)
            .await?
            .ok_or(StoreError::NotFound)
    }

    /// The most recent emergencies first (at most 200).
    pub async fn emergencies(&self) -> Result<Vec<EmergencyRow>, StoreError> {
        Ok(sqlx::query_as(
            "SELECT e.* FROM emergencies e JOIN broadcasts b ON b.id = e.broadcast_id
             ORDER BY b.created_at DESC LIMIT 200",
        )
        .fetch_all(&self.pool)
        .await?)
    }

    /// A CAP alert already received from `sender` with `identifier`.
    pub async fn cap_alert(
        &self,
        sender: &str,
        identifier: &str,
    ) -> Result<Option<CapAlertRow>, StoreError> {
        Ok(
            sqlx::query_as("SELECT * FROM cap_alerts WHERE sender = ? AND identifier = ?")
                .bind(sender)
                .bind(identifier)
                .fetch_optional(&self.pool)
                .await?,
        )
    }

    /// Records a CAP alert that does not air (a test, a cancel...) with its audit entry.
    /// A duplicate (same sender and identifier) is a conflict.
    pub async fn insert_cap_alert(
        &self,
        cap: &CapAlertRow,
        audit: AuditEntry<'_>,
    ) -> Result<(), StoreError> {
        let mut tx = self.pool.begin().await?;
        insert_cap(&mut tx, cap).await?;
        insert_audit(&mut tx, audit).await?;
        tx.commit().await?;
        Ok(())
    }

    /// Appends one entry to the audit log.
    pub async fn audit(&self, entry: AuditEntry<'_>) -> Result<(), StoreError> {
        let mut tx = self.pool.begin().await?;
        insert_audit(&mut tx, entry).await?;
        tx.commit().await?;
        Ok(())
    }

    /// Audit entries in [from, to), oldest first (at most 1000).
    pub async fn audit_log(
        &self,
        from: Option<&str>,
        to: Option<&str>,
        actor: Option<&str>,
    ) -> Result<Vec<AuditRow>, StoreError> {
        Ok(sqlx::query_as(
            "SELECT * FROM audit
             WHERE (?1 IS NULL OR at >= ?1) AND (?2 IS NULL OR at < ?2)
               AND (?3 IS NULL OR actor = ?3)
             ORDER BY seq LIMIT 1000",
        )
        .bind(from)
        .bind(to)
        .bind(actor)
        .fetch_all(&self.pool)
        .await?)
    }
}

async fn insert_cap(
    tx: &mut sqlx::Transaction<'static, sqlx::Sqlite>,
    cap: &CapAlertRow,
) -> Result<(), StoreError> {
    sqlx::query(
        "INSERT INTO cap_alerts (id, sender, identifier, sent, status, msg_type, received_at,
                                 outcome, broadcast_id)
         VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
    )
    .bind(&cap.id)
    .bind(&cap.sender)
    .bind(&cap.identifier)
    .bind(&cap.sent)
    .bind(&cap.status)
    .bind(&cap.msg_type)
    .bind(&cap.received_at)
    .bind(&cap.outcome)
    .bind(&cap.broadcast_id)
    .execute(&mut **tx)
    .await
    .map_err(super::conflict_or_db)?;
    Ok(())
}

async fn insert_audit(
    tx: &mut sqlx::Transaction<'static, sqlx::Sqlite>,
    e: AuditEntry<'_>,
) -> Result<(), StoreError> {
    sqlx::query(
        "INSERT INTO audit (at, actor, action, target, detail, result) VALUES (?, ?, ?, ?, ?, ?)",
    )
    .bind(now_rfc3339())
    .bind(e.actor)
    .bind(e.action)
    .bind(e.target)
    .bind(e.detail)
    .bind(e.result)
    .execute(&mut **tx)
    .await?;
    Ok(())
}
