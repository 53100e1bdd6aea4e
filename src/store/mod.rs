//! The store: one SQLite file (WAL) under the data directory, schema migrations embedded
//! in the binary. Every change that matters is written here before it is acknowledged.
//! Plain data in, plain rows out: no HTTP types, no engine state.

use std::str::FromStr;
use std::time::Duration;

use serde::Serialize;
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous};
use sqlx::{FromRow, SqlitePool};

mod asrun;
mod campaigns;
mod emergency;
mod health;
mod relay;
mod users;
pub use asrun::Played;
pub use campaigns::{AirtimeGroup, AirtimeRow, CampaignRow};
pub use emergency::{AuditEntry, AuditRow, CapAlertRow, EmergencyRow};
pub use health::{HealthTransitionRow, NewTransition};
pub use relay::RelayEventRow;
pub use users::UserRow;

/// Errors from the store.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The database could not be opened or migrated.
    #[error("cannot open the store: {0}")]
    Open(String),
    /// A row the caller named does not exist.
    #[error("not found")]
    NotFound,
    /// A uniqueness or reference rule refused the write.
    #[error("conflict: {0}")]
    Conflict(String),
    /// Anything else the database reported.
    #[error("database error: {0}")]
    Database(#[from] sqlx::Error),
}

/// Current time as stored: RFC 3339, UTC, milliseconds.
pub fn now_rfc3339() -> String {
    chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}

#[derive(Clone)]
pub struct Store {
    pool: SqlitePool,
}

#[derive(Debug, Clone, FromRow, Serialize)]
pub struct AreaRow {
    pub code: String,
    pub name: String,
    pub kind: String,
    pub parent_code: Option<String>,
    pub created_at: String,
}

#[derive(Debug, Clone, FromRow)]
pub struct ClusterRow {
    pub id: String,
    pub name: String,
    pub area_code: String,
    pub codec: String,
    pub ptime_ms: i64,
    pub endpoint: String,
    pub volume: i64,
    pub enabled: bool,
    pub sdp_session_id: i64,
    pub created_at: String,
    /// SHA-256 (hex) of the cluster's agent token, if it has one.
    pub agent_key: Option<String>,
    /// SRTP master key and salt (SDES inline base64), for a cluster streamed with SRTP.
    pub srtp_key: Option<String>,
}

#[derive(Debug, Clone, FromRow)]
pub struct AudioRow {
    pub id: String,
    pub title: String,
    pub topic: Option<String>,
    pub original_name: Option<String>,
    pub file_name: String,
    pub format: String,
    pub codec: String,
    pub sample_rate: i64,
    pub channels: i64,
    pub duration_ms: i64,
    pub loudness_lufs: Option<f64>,
    pub true_peak_dbtp: Option<f64>,
    pub size_bytes: i64,
    pub created_at: String,
}

#[derive(Debug, Clone, FromRow)]
pub struct BroadcastRow {
    pub id: String,
    pub status: String,
    pub priority: String,
    pub repeat: i64,
    pub audio_ids: String,
    pub targets: String,
    pub detail: Option<String>,
    pub created_at: String,
    pub started_at: Option<String>,
    pub ended_at: Option<String>,
    pub on_interrupt: String,
    /// The campaign this airing belongs to; `None` for a play-now broadcast.
    pub campaign_id: Option<String>,
    /// The instant the calendar planned it for.
    pub planned_at: Option<String>,
    pub topic: Option<String>,
    /// Aired after its planned instant (caught up after a restart).
    pub late: bool,
    /// JSON `{url, duration_s, fallback_audio_id?}` of a relayed stream; `None` for
    /// announcements.
    pub relay: Option<String>,
}

/// A higher priority cut into a broadcast on one cluster.
#[derive(Debug, Clone, FromRow)]
pub struct InterruptionRow {
    pub broadcast_id: String,
    pub cluster_id: String,
    pub at: String,
    pub by_broadcast: String,
    pub policy: String,
    pub at_ms: i64,
}

#[derive(Debug, Clone, FromRow)]
pub struct BroadcastClusterRow {
    pub broadcast_id: String,
    pub cluster_id: String,
    pub cluster_name: String,
    pub area_code: String,
    pub status: String,
    pub packets_sent: i64,
    pub started_at: Option<String>,
    pub ended_at: Option<String>,
    /// The cluster's packet duration when it aired: packets_sent × ptime_ms is airtime.
    pub ptime_ms: i64,
}

/// Statuses a broadcast (and each of its clusters) moves through.
pub mod status {
    pub const QUEUED: &str = "queued";
    pub const PLAYING: &str = "playing";
    pub const DONE: &str = "done";
    pub const INTERRUPTED: &str = "interrupted";
    pub const CANCELLED: &str = "cancelled";
    pub const FAILED: &str = "failed";
    /// A planned airing that aired after its instant (caught up after a restart).
    pub const LATE: &str = "late";
    /// A planned airing that did not air (the daemon was down past the grace window, or
    /// it fell in quiet hours).
    pub const MISSED: &str = "missed";

    /// A status nothing will change any more.
    pub fn is_final(s: &str) -> bool {
        matches!(s, DONE | INTERRUPTED | CANCELLED | FAILED | LATE | MISSED)
    }
}

fn conflict_or_db(e: sqlx::Error) -> StoreError {
    if let sqlx::Error::Database(db) = &e
        && (db.is_unique_violation() || db.is_foreign_key_violation())
    {
        return StoreError::Conflict(db.message().to_string());
    }
    StoreError::Database(e)
}

impl Store {
    /// Opens (creating if needed) the database at `url`, in WAL mode with foreign keys on,
    /// and applies the embedded migrations.
    pub async fn open(url: &str) -> Result<Self, StoreError> {
        let options = SqliteConnectOptions::from_str(url)
            .map_err(|e| StoreError::Open(format!("{url}: {e}")))?
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            // WAL + NORMAL is durable against process crashes; FULL adds power-loss safety
            // for a cost the broadcast path should not pay on every status update.
            .synchronous(SqliteSynchronous::Normal)
            .foreign_keys(true)
            .busy_timeout(Duration::from_secs(5));
        let pool = SqlitePoolOptions::new()
            .max_connections(4)
            .connect_with(options)
            .await
            .map_err(|e| StoreError::Open(format!("{url}: {e}")))?;
        sqlx::migrate!("src/store/migrations")
            .run(&pool)
            .await
            .map_err(|e| StoreError::Open(format!("migrations: {e}")))?;
        let store = Self { pool };
        // Rows written before the audit log was chained get their hashes now.
        store.seal_audit().await?;
        Ok(store)
    }

    pub async fn close(&self) {
        self.pool.close().await;
    }

    pub async fn ping(&self) -> Result<(), StoreError> {
        sqlx::query("SELECT 1").execute(&self.pool).await?;
        Ok(())
    }

    pub async fn journal_mode(&self) -> Result<String, StoreError> {
        Ok(sqlx::query_scalar("PRAGMA journal_mode")
            .fetch_one(&self.pool)
            .await?)
    }

    // --- settings ---

    pub async fn setting(&self, key: &str) -> Result<Option<String>, StoreError> {
        Ok(
            sqlx::query_scalar("SELECT value FROM settings WHERE key = ?")
                .bind(key)
                .fetch_optional(&self.pool)
                .await?,
        )
    }

    pub async fn set_setting(&self, key: &str, value: &str) -> Result<(), StoreError> {
        sqlx::query(
            "INSERT INTO settings (key, value) VALUES (?, ?)
             ON CONFLICT(key) DO UPDATE SET value = excluded.value",
        )
        .bind(key)
        .bind(value)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    // --- areas ---

    pub async fn insert_area(&self, area: &AreaRow) -> Result<(), StoreError> {
        sqlx::query(
            "INSERT INTO areas (code, name, kind, parent_code, created_at) VALUES (?, ?, ?, ?, ?)",
        )
        .bind(&area.code)
        .bind(&area.name)
        .bind(&area.kind)
        .bind(&area.parent_code)
        .bind(&area.created_at)
        .execute(&self.pool)
        .await
        .map_err(conflict_or_db)?;
        Ok(())
    }

    pub async fn area(&self, code: &str) -> Result<AreaRow, StoreError> {
        sqlx::query_as("SELECT * FROM areas WHERE code = ?")
            .bind(code)
            .fetch_optional(&self.pool)
            .await?
            .ok_or(StoreError::NotFound)
    }

    pub async fn areas(&self) -> Result<Vec<AreaRow>, StoreError> {
        Ok(sqlx::query_as("SELECT * FROM areas ORDER BY code")
            .fetch_all(&self.pool)
            .await?)
    }

    /// The codes of `roots` and every area below them.
    pub async fn area_subtree(&self, roots: &[String]) -> Result<Vec<String>, StoreError> {
        let mut all = Vec::new();
        for root in roots {
            let codes: Vec<String> = sqlx::query_scalar(
                "WITH RECURSIVE sub(code) AS (
                    SELECT code FROM areas WHERE code = ?
                    UNION SELECT a.code FROM areas a JOIN sub ON a.parent_code = sub.code)
                 SELECT code FROM sub",
            )
            .bind(root)
            .fetch_all(&self.pool)
            .await?;
            all.extend(codes);
        }
        all.sort();
        all.dedup();
        Ok(all)
    }

    // --- clusters ---

    pub async fn insert_cluster(&self, c: &ClusterRow) -> Result<(), StoreError> {
        sqlx::query(
            "INSERT INTO clusters (id, name, area_code, codec, ptime_ms, endpoint, volume, enabled,
                                   sdp_session_id, created_at, agent_key, srtp_key)
             VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        )
        .bind(&c.id)
        .bind(&c.name)
        .bind(&c.area_code)
        .bind(&c.codec)
        .bind(c.ptime_ms)
        .bind(&c.endpoint)
        .bind(c.volume)
        .bind(c.enabled)
        .bind(c.sdp_session_id)
        .bind(&c.created_at)
        .bind(&c.agent_key)
        .bind(&c.srtp_key)
        .execute(&self.pool)
        .await
        .map_err(conflict_or_db)?;
        Ok(())
    }

    pub async fn cluster(&self, id: &str) -> Result<ClusterRow, StoreError> {
        sqlx::query_as("SELECT * FROM clusters WHERE id = ?")
            .bind(id)
            .fetch_optional(&self.pool)
            .await?
            .ok_or(StoreError::NotFound)
    }

    pub async fn clusters(&self) -> Result<Vec<ClusterRow>, StoreError> {
        Ok(
            sqlx::query_as("SELECT * FROM clusters ORDER BY created_at, id")
                .fetch_all(&self.pool)
                .await?,
        )
    }

    pub async fn clusters_in_areas(&self, areas: &[String]) -> Result<Vec<ClusterRow>, StoreError> {
        let mut out = Vec::new();
        for area in areas {
            let rows: Vec<ClusterRow> =
                sqlx::query_as("SELECT * FROM clusters WHERE area_code = ? ORDER BY id")
                    .bind(area)
                    .fetch_all(&self.pool)
                    .await?;
            out.extend(rows);
        }
        Ok(out)
    }

    pub async fn delete_cluster(&self, id: &str) -> Result<(), StoreError> {
        let done = sqlx::query("DELETE FROM clusters WHERE id = ?")
            .bind(id)
            .execute(&self.pool)
            .await?;
        if done.rows_affected() == 0 {
            return Err(StoreError::NotFound);
        }
        Ok(())
    }

    // --- audio ---

    pub async fn insert_audio(&self, a: &AudioRow) -> Result<(), StoreError> {
        sqlx::query(
            "INSERT INTO audio (id, title, topic, original_name, file_name, format, codec,
                                sample_rate, channels, duration_ms, loudness_lufs,
                                true_peak_dbtp, size_bytes, created_at)
             VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        )
        .bind(&a.id)
        .bind(&a.title)
        .bind(&a.topic)
        .bind(&a.original_name)
        .bind(&a.file_name)
        .bind(&a.format)
        .bind(&a.codec)
        .bind(a.sample_rate)
        .bind(a.channels)
        .bind(a.duration_ms)
        .bind(a.loudness_lufs)
        .bind(a.true_peak_dbtp)
        .bind(a.size_bytes)
        .bind(&a.created_at)
        .execute(&self.pool)
        .await
        .map_err(conflict_or_db)?;
        Ok(())
    }

    pub async fn audio(&self, id: &str) -> Result<AudioRow, StoreError> {
        sqlx::query_as("SELECT * FROM audio WHERE id = ?")
            .bind(id)
            .fetch_optional(&self.pool)
            .await?
            .ok_or(StoreError::NotFound)
    }

    pub async fn audio_list(&self) -> Result<Vec<AudioRow>, StoreError> {
        Ok(
            sqlx::query_as("SELECT * FROM audio ORDER BY created_at, id")
                .fetch_all(&self.pool)
                .await?,
        )
    }

    pub async fn delete_audio(&self, id: &str) -> Result<AudioRow, StoreError> {
        let row = self.audio(id).await?;
        sqlx::query("DELETE FROM audio WHERE id = ?")
            .bind(id)
            .execute(&self.pool)
            .await?;
        Ok(row)
    }

    /// Whether a queued or airing broadcast names this audio.
    /// Broadcasts queued or on air, counted by priority.
    pub async fn active_broadcasts_by_priority(&self) -> Result<Vec<(String, i64)>, StoreError> {
        Ok(sqlx::query_as(
            "SELECT priority, COUNT(*) FROM broadcasts WHERE status IN ('queued', 'playing')
             GROUP BY priority ORDER BY priority",
        )
        .fetch_all(&self.pool)
        .await?)
    }

    pub async fn audio_in_use(&self, id: &str) -> Result<bool, StoreError> {
        let n: i64 = sqlx::query_scalar(
            "SELECT (SELECT COUNT(*) FROM broadcasts, json_each(broadcasts.audio_ids)
                     WHERE broadcasts.status IN ('queued', 'playing') AND json_each.value = ?1)
                  + (SELECT COUNT(*) FROM campaigns, json_each(campaigns.audio_ids)
                     WHERE json_each.value = ?1)",
        )
        .bind(id)
        .fetch_one(&self.pool)
        .await?;
        Ok(n > 0)
    }

    // --- broadcasts ---

    /// Writes a broadcast and its per-cluster rows in one transaction.
    pub async fn insert_broadcast(
        &self,
        b: &BroadcastRow,
        clusters: &[BroadcastClusterRow],
    ) -> Result<(), StoreError> {
        self.insert_broadcast_tx(b, clusters)
            .await?
            .commit()
            .await?;
        Ok(())
    }

    /// [`Store::insert_broadcast`], leaving the transaction open for the caller to add to.
    pub(crate) async fn insert_broadcast_tx(
        &self,
        b: &BroadcastRow,
        clusters: &[BroadcastClusterRow],
    ) -> Result<sqlx::Transaction<'static, sqlx::Sqlite>, StoreError> {
        let mut tx = self.pool.begin().await?;
        sqlx::query(
            "INSERT INTO broadcasts (id, status, priority, repeat, audio_ids, targets, detail,
                                     created_at, started_at, ended_at, on_interrupt,
                                     campaign_id, planned_at, topic, late, relay)
             VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        )
        .bind(&b.id)
        .bind(&b.status)
        .bind(&b.priority)
        .bind(b.repeat)
        .bind(&b.audio_ids)
        .bind(&b.targets)
        .bind(&b.detail)
        .bind(&b.created_at)
        .bind(&b.started_at)
        .bind(&b.ended_at)
        .bind(&b.on_interrupt)
        .bind(&b.campaign_id)
        .bind(&b.planned_at)
        .bind(&b.topic)
        .bind(b.late)
        .bind(&b.relay)
        .execute(&mut *tx)
        .await?;
        for c in clusters {
            sqlx::query(
                "INSERT INTO broadcast_clusters (broadcast_id, cluster_id, cluster_name, area_code,
                                                 status, packets_sent, started_at, ended_at,
                                                 ptime_ms)
                 VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
            )
            .bind(&c.broadcast_id)
            .bind(&c.cluster_id)
            .bind(&c.cluster_name)
            .bind(&c.area_code)
            .bind(&c.status)
            .bind(c.packets_sent)
            .bind(&c.started_at)
            .bind(&c.ended_at)
            .bind(c.ptime_ms)
            .execute(&mut *tx)
            .await?;
        }
        Ok(tx)
    }

    pub async fn broadcast(&self, id: &str) -> Result<BroadcastRow, StoreError> {
        sqlx::query_as("SELECT * FROM broadcasts WHERE id = ?")
            .bind(id)
            .fetch_optional(&self.pool)
            .await?
            .ok_or(StoreError::NotFound)
    }

    pub async fn broadcast_clusters(
        &self,
        broadcast_id: &str,
    ) -> Result<Vec<BroadcastClusterRow>, StoreError> {
        Ok(sqlx::query_as(
            "SELECT * FROM broadcast_clusters WHERE broadcast_id = ? ORDER BY cluster_id",
        )
        .bind(broadcast_id)
        .fetch_all(&self.pool)
        .await?)
    }

    /// The as-run log: broadcasts created in [from, to), optionally only those that
    /// reached a cluster in one of `areas`.
    pub async fn broadcasts(
        &self,
        from: Option<&str>,
        to: Option<&str>,
        areas: Option<&[String]>,
    ) -> Result<Vec<BroadcastRow>, StoreError> {
        let rows: Vec<BroadcastRow> = sqlx::query_as(
            "SELECT * FROM broadcasts
             WHERE (?1 IS NULL OR COALESCE(planned_at, created_at) >= ?1)
               AND (?2 IS NULL OR COALESCE(planned_at, created_at) < ?2)
             ORDER BY COALESCE(planned_at, created_at) DESC, id LIMIT 1000",
        )
        .bind(from)
        .bind(to)
        .fetch_all(&self.pool)
        .await?;
        let Some(areas) = areas else {
            return Ok(rows);
        };
        let mut out = Vec::new();
        for row in rows {
            let clusters = self.broadcast_clusters(&row.id).await?;
            if clusters.iter().any(|c| areas.contains(&c.area_code)) {
                out.push(row);
            }
        }
        Ok(out)
    }

    pub async fn insert_interruption(
        &self,
        broadcast_id: &str,
        cluster_id: &str,
        at: &str,
        by: &str,
        policy: &str,
        at_ms: u64,
    ) -> Result<(), StoreError> {
        sqlx::query(
            "INSERT INTO broadcast_interruptions
                 (broadcast_id, cluster_id, at, by_broadcast, policy, at_ms)
             VALUES (?, ?, ?, ?, ?, ?)",
        )
        .bind(broadcast_id)
        .bind(cluster_id)
        .bind(at)
        .bind(by)
        .bind(policy)
        .bind(at_ms as i64)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    pub async fn interruptions(
        &self,
        broadcast_id: &str,
    ) -> Result<Vec<InterruptionRow>, StoreError> {
        Ok(sqlx::query_as(
            "SELECT * FROM broadcast_interruptions WHERE broadcast_id = ? ORDER BY at, cluster_id",
        )
        .bind(broadcast_id)
        .fetch_all(&self.pool)
        .await?)
    }

    /// Moves a broadcast to `status` unless it is already final; returns whether it moved.
    pub async fn set_broadcast_status(
        &self,
        id: &str,
        status: &str,
        detail: Option<&str>,
    ) -> Result<bool, StoreError> {
        let now = now_rfc3339();
        let started = (status == status::PLAYING).then_some(now.as_str());
        let ended = status::is_final(status).then_some(now.as_str());
        let done = sqlx::query(
            "UPDATE broadcasts SET status = ?2,
                 detail = COALESCE(?3, detail),
                 started_at = COALESCE(started_at, ?4),
                 ended_at = COALESCE(ended_at, ?5)
             WHERE id = ?1 AND status NOT IN ('done', 'interrupted', 'cancelled', 'failed',
                                              'late', 'missed')",
        )
        .bind(id)
        .bind(status)
        .bind(detail)
        .bind(started)
        .bind(ended)
        .execute(&self.pool)
        .await?;
        Ok(done.rows_affected() > 0)
    }

    /// Records a cluster's progress; a final status is never overwritten.
    pub async fn set_broadcast_cluster_status(
        &self,
        broadcast_id: &str,
        cluster_id: &str,
        status: &str,
        packets_sent: Option<u64>,
        at: &str,
    ) -> Result<(), StoreError> {
        let started = (status == status::PLAYING).then_some(at);
        let ended = status::is_final(status).then_some(at);
        sqlx::query(
            "UPDATE broadcast_clusters SET
                 status = CASE WHEN status IN ('done', 'interrupted', 'cancelled', 'failed',
                                               'late', 'missed')
                               THEN status ELSE ?3 END,
                 packets_sent = COALESCE(?4, packets_sent),
                 started_at = COALESCE(started_at, ?5),
                 ended_at = COALESCE(ended_at, ?6)
             WHERE broadcast_id = ?1 AND cluster_id = ?2",
        )
        .bind(broadcast_id)
        .bind(cluster_id)
        .bind(status)
        .bind(packets_sent.map(|p| p as i64))
        .bind(started)
        .bind(ended)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// Broadcasts left queued or playing by a process that stopped without closing them
    /// (a crash): they are interrupted, never vanished. Planned airings that had not
    /// started are left queued for the calendar to resume.
    pub async fn interrupt_unfinished(&self, detail: &str) -> Result<u64, StoreError> {
        let now = now_rfc3339();
        let mut tx = self.pool.begin().await?;
        sqlx::query(
            "UPDATE broadcast_clusters SET status = 'interrupted', ended_at = ?1
             WHERE status = 'playing' OR (status = 'queued' AND broadcast_id NOT IN
                 (SELECT id FROM broadcasts WHERE status = 'queued' AND campaign_id IS NOT NULL))",
        )
        .bind(&now)
        .execute(&mut *tx)
        .await?;
        let done = sqlx::query(
            "UPDATE broadcasts SET status = 'interrupted', ended_at = ?1, detail = ?2
             WHERE status = 'playing' OR (status = 'queued' AND campaign_id IS NULL)",
        )
        .bind(&now)
        .bind(detail)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(done.rows_affected())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn the_store_opens_in_wal_mode_with_its_schema() {
        let dir = tempfile::tempdir().unwrap();
        let url = format!("sqlite://{}", dir.path().join("t.db").display());
        let store = Store::open(&url).await.unwrap();
        assert_eq!(store.journal_mode().await.unwrap(), "wal");
        assert!(store.areas().await.unwrap().is_empty());
        store.close().await;
        // Opening again applies no migration twice.
        let again = Store::open(&url).await.unwrap();
        assert!(again.clusters().await.unwrap().is_empty());
    }

    #[tokio::test]
    async fn a_cluster_in_an_unknown_area_is_refused_by_the_schema_too() {
        let dir = tempfile::tempdir().unwrap();
        let url = format!("sqlite://{}", dir.path().join("t.db").display());
        let store = Store::open(&url).await.unwrap();
        let row = ClusterRow {
            id: "c".into(),
            name: "c".into(),
            area_code: "nowhere".into(),
            codec: "pcmu".into(),
            ptime_ms: 20,
            endpoint: "{}".into(),
            volume: 100,
            enabled: true,
            sdp_session_id: 1,
            created_at: now_rfc3339(),
            agent_key: None,
            srtp_key: None,
        };
        assert!(matches!(
            store.insert_cluster(&row).await,
            Err(StoreError::Conflict(_))
        ));
    }
}
