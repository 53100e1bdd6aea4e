//! Emergencies, CAP alerts and the audit log in the store. The audit log is append-only
//! and hash-chained: every append seals its row onto the one before it, in the same
//! transaction (see [`crate::audit_chain`] for the hash and its verification).

use sqlx::{FromRow, SqliteConnection};

use super::{BroadcastClusterRow, BroadcastRow, Store, StoreError, now_rfc3339};
use crate::audit_chain::{AuditRowFull, GENESIS, entry_hash};

/// Audit rows read per query when scanning or sealing: a few MB at most, whatever the
/// length of the log.
const AUDIT_PAGE: i64 = 10_000;

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
    /// Who pushed it: a user id, or `admin`.
    pub received_by: String,
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

    /// A CAP alert `received_by` already pushed from `sender` with `identifier`.
    pub async fn cap_alert(
        &self,
        received_by: &str,
        sender: &str,
        identifier: &str,
    ) -> Result<Option<CapAlertRow>, StoreError> {
        Ok(sqlx::query_as(
            "SELECT * FROM cap_alerts WHERE received_by = ? AND sender = ? AND identifier = ?",
        )
        .bind(received_by)
        .bind(sender)
        .bind(identifier)
        .fetch_optional(&self.pool)
        .await?)
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

    /// Seals every audit row that has no hash yet (rows from before the chain existed),
    /// oldest first, each onto the row before it. Returns how many it sealed; 0 once done.
    /// Appends seal on their own, so this only matters for a log nothing has been appended
    /// to since the upgrade.
    pub async fn seal_audit(&self) -> Result<u64, StoreError> {
        // IMMEDIATE takes the write lock before the first read, so the rows read are the
        // latest and no append can interleave.
        let mut tx = self.pool.begin_with("BEGIN IMMEDIATE").await?;
        let sealed = seal_unsealed(&mut tx).await?;
        tx.commit().await?;
        Ok(sealed)
    }

    /// Hands every audit row, chain columns included, to `visit` in seq order, reading
    /// [`AUDIT_PAGE`] rows at a time within one snapshot. Returns the highest seq ever
    /// handed out (SQLite's AUTOINCREMENT counter), `None` if no row was ever appended.
    pub async fn scan_audit_chain(
        &self,
        mut visit: impl FnMut(AuditRowFull),
    ) -> Result<Option<i64>, StoreError> {
        // A read transaction: the pages and the counter come from the same snapshot, so
        // an append during the scan cannot look like a row deleted from the end.
        let mut tx = self.pool.begin().await?;
        let mut after = i64::MIN;
        loop {
            let page: Vec<AuditRowFull> = sqlx::query_as(
                "SELECT seq, at, actor, action, target, detail, result, prev_hash, hash
                 FROM audit WHERE seq > ? ORDER BY seq LIMIT ?",
            )
            .bind(after)
            .bind(AUDIT_PAGE)
            .fetch_all(&mut *tx)
            .await?;
            let full = page.len() as i64 == AUDIT_PAGE;
            for row in page {
                after = row.seq;
                visit(row);
            }
            if !full {
                break;
            }
        }
        let highest: Option<i64> =
            sqlx::query_scalar("SELECT seq FROM sqlite_sequence WHERE name = 'audit'")
                .fetch_optional(&mut *tx)
                .await?;
        tx.rollback().await?;
        Ok(highest)
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
        "INSERT INTO cap_alerts (id, received_by, sender, identifier, sent, status, msg_type,
                                 received_at, outcome, broadcast_id)
         VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
    )
    .bind(&cap.id)
    .bind(&cap.received_by)
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

/// Appends `e` and seals it onto the row before it, within `tx`.
async fn insert_audit(
    tx: &mut sqlx::Transaction<'static, sqlx::Sqlite>,
    e: AuditEntry<'_>,
) -> Result<(), StoreError> {
    // The INSERT comes first because it takes the write lock: from then on no other append
    // can commit until this transaction does, so the previous row read while sealing is
    // the last one and the chain cannot fork. (Reading first, a deferred transaction would
    // hold a snapshot another writer may move past, and fail with SQLITE_BUSY_SNAPSHOT.)
    // If `tx` rolls back, so does AUTOINCREMENT's counter: no gap is left.
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
    seal_unsealed(tx).await?;
    Ok(())
}

/// Seals, oldest first, every row with neither `prev_hash` nor `hash` (normally just the
/// row being appended; after the upgrade, the older rows too). The caller holds the write
/// lock. A row with only one of the two set was tampered with: the schema would refuse to
/// seal it, so it is left for verification to report, and the rows after it chain onto the
/// nearest earlier row that has a hash.
async fn seal_unsealed(conn: &mut SqliteConnection) -> Result<u64, StoreError> {
    let mut sealed = 0;
    // The row sealed last, whose hash the next one links to if it directly follows.
    let mut last: Option<(i64, String)> = None;
    loop {
        let page: Vec<AuditRowFull> = sqlx::query_as(
            "SELECT seq, at, actor, action, target, detail, result, prev_hash, hash
             FROM audit WHERE hash IS NULL AND prev_hash IS NULL ORDER BY seq LIMIT ?",
        )
        .bind(AUDIT_PAGE)
        .fetch_all(&mut *conn)
        .await?;
        if page.is_empty() {
            return Ok(sealed);
        }
        for row in page {
            let prev = match last.take() {
                Some((seq, hash)) if seq == row.seq - 1 => hash,
                _ => sqlx::query_scalar::<_, String>(
                    "SELECT hash FROM audit WHERE seq < ? AND hash IS NOT NULL
                     ORDER BY seq DESC LIMIT 1",
                )
                .bind(row.seq)
                .fetch_optional(&mut *conn)
                .await?
                .unwrap_or_else(|| GENESIS.to_string()),
            };
            let hash = entry_hash(&prev, &row.view());
            sqlx::query("UPDATE audit SET prev_hash = ?, hash = ? WHERE seq = ?")
                .bind(&prev)
                .bind(&hash)
                .bind(row.seq)
                .execute(&mut *conn)
                .await?;
            sealed += 1;
            last = Some((row.seq, hash));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::audit_chain::verify_store;

    async fn store() -> (tempfile::TempDir, Store) {
        let dir = tempfile::tempdir().expect("temp dir");
        let url = format!("sqlite://{}", dir.path().join("loaxa.db").display());
        let store = Store::open(&url).await.expect("open");
        (dir, store)
    }

    fn entry(detail: &str) -> AuditEntry<'_> {
        AuditEntry {
            actor: "admin",
            action: "cluster.update",
            target: Some("c-1"),
            detail: Some(detail),
            result: "ok",
        }
    }

    /// A row as written before the chain existed: no hashes.
    async fn insert_legacy(store: &Store, detail: &str) {
        sqlx::query(
            "INSERT INTO audit (at, actor, action, target, detail, result)
             VALUES ('2024-01-01T00:00:00.000Z', 'admin', 'legacy', NULL, ?, 'ok')",
        )
        .bind(detail)
        .execute(&store.pool)
        .await
        .unwrap();
    }

    async fn rows(store: &Store) -> Vec<AuditRowFull> {
        let mut rows = Vec::new();
        store.scan_audit_chain(|r| rows.push(r)).await.unwrap();
        rows
    }

    #[tokio::test]
    async fn appends_are_chained_from_the_genesis_value() {
        let (_dir, store) = store().await;
        for d in ["a", "b", "c"] {
            store.audit(entry(d)).await.unwrap();
        }
        let rows = rows(&store).await;
        assert_eq!(rows.len(), 3);
        assert_eq!(rows[0].prev_hash.as_deref(), Some(GENESIS));
        assert_eq!(rows[1].prev_hash, rows[0].hash);
        assert_eq!(rows[2].prev_hash, rows[1].hash);
        let report = verify_store(&store).await.unwrap();
        assert!(report.is_clean(), "{:?}", report.findings);
        assert_eq!((report.rows, report.head_seq), (3, Some(3)));
        assert_eq!(report.head_hash, rows[2].hash);
    }

    #[tokio::test]
    async fn rows_from_before_the_chain_are_sealed_oldest_first_and_once() {
        let (_dir, store) = store().await;
        for d in ["1", "2", "3"] {
            insert_legacy(&store, d).await;
        }
        let unsealed = verify_store(&store).await.unwrap();
        assert_eq!(unsealed.findings.len(), 3, "{:?}", unsealed.findings);
        assert!(unsealed.findings[0].problem.contains("has no hash"));

        assert_eq!(store.seal_audit().await.unwrap(), 3);
        assert_eq!(store.seal_audit().await.unwrap(), 0);
        store.audit(entry("after")).await.unwrap();
        let report = verify_store(&store).await.unwrap();
        assert!(report.is_clean(), "{:?}", report.findings);
        assert_eq!(report.rows, 4);
    }

    #[tokio::test]
    async fn a_log_written_before_the_chain_existed_is_upgraded_and_sealed() {
        let dir = tempfile::tempdir().expect("temp dir");
        let url = format!(
            "sqlite://{}?mode=rwc",
            dir.path().join("loaxa.db").display()
        );
        {
            // The schema as the previous release left it, with its rows.
            let old = sqlx::SqlitePool::connect(&url).await.unwrap();
            sqlx::migrate!("src/store/migrations")
                .run_to(6, &old)
                .await
                .unwrap();
            let old = Store { pool: old };
            for d in ["1", "2", "3"] {
                insert_legacy(&old, d).await;
            }
            old.close().await;
        }
        // Opening seals the rows the previous release left unchained.
        let store = Store::open(&url).await.expect("open and migrate");
        assert_eq!(store.seal_audit().await.unwrap(), 0);
        store.audit(entry("4")).await.unwrap();
        let report = verify_store(&store).await.unwrap();
        assert!(report.is_clean(), "{:?}", report.findings);
        assert_eq!(report.rows, 4);
    }

    #[tokio::test]
    async fn an_append_seals_the_unsealed_rows_before_it() {
        let (_dir, store) = store().await;
        insert_legacy(&store, "1").await;
        insert_legacy(&store, "2").await;
        store.audit(entry("3")).await.unwrap();
        let report = verify_store(&store).await.unwrap();
        assert!(report.is_clean(), "{:?}", report.findings);
        assert_eq!(report.rows, 3);
    }

    #[tokio::test]
    async fn an_entry_rolled_back_with_its_transaction_leaves_no_gap() {
        let (_dir, store) = store().await;
        store.audit(entry("kept")).await.unwrap();
        let mut tx = store.pool.begin().await.unwrap();
        insert_audit(&mut tx, entry("rolled back")).await.unwrap();
        tx.rollback().await.unwrap();
        store.audit(entry("kept too")).await.unwrap();
        let report = verify_store(&store).await.unwrap();
        assert!(report.is_clean(), "{:?}", report.findings);
        assert_eq!(report.head_seq, Some(2));
    }

    #[tokio::test]
    async fn sealing_may_not_change_content_and_a_taken_seq_may_not_be_replaced() {
        let (_dir, store) = store().await;
        insert_legacy(&store, "1").await;
        let sneaky =
            sqlx::query("UPDATE audit SET prev_hash = 'p', hash = 'h', detail = 'x' WHERE seq = 1")
                .execute(&store.pool)
                .await;
        assert!(sneaky.unwrap_err().to_string().contains("append-only"));
        store.seal_audit().await.unwrap();
        let resealed = sqlx::query("UPDATE audit SET hash = 'h' WHERE seq = 1")
            .execute(&store.pool)
            .await;
        assert!(resealed.unwrap_err().to_string().contains("append-only"));
        let replaced = sqlx::query(
            "INSERT OR REPLACE INTO audit (seq, at, actor, action, result)
             VALUES (1, 'now', 'mallory', 'x', 'ok')",
        )
        .execute(&store.pool)
        .await;
        let err = replaced.unwrap_err().to_string();
        assert!(err.contains("append-only"), "{err}");
        assert!(verify_store(&store).await.unwrap().is_clean());
    }
}
