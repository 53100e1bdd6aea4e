//! Campaigns in the store, the calendar's bookkeeping (which planned instant was dealt
//! with last, written with the airing it produced), and the airtime report query.

use sqlx::FromRow;

use super::{BroadcastClusterRow, BroadcastRow, Store, StoreError, conflict_or_db};

#[derive(Debug, Clone, FromRow, PartialEq)]
pub struct CampaignRow {
    pub id: String,
    pub title: String,
    pub topic: String,
    /// JSON array of audio ids.
    pub audio_ids: String,
    /// JSON `{areas, clusters}`.
    pub targets: String,
    /// JSON `{cron, timezone, starts_on, ends_on}`.
    pub schedule: String,
    pub priority: String,
    pub repeat: i64,
    pub on_interrupt: String,
    /// `pending` or `approved`.
    pub approval: String,
    pub approved_at: Option<String>,
    pub paused: bool,
    /// `api` or `file`.
    pub source: String,
    pub source_path: Option<String>,
    pub created_at: String,
    pub updated_at: String,
    /// The latest planned instant the calendar dealt with.
    pub last_planned_at: String,
    /// JSON `{url, duration_s, fallback_audio_id?}` when the campaign relays a stream.
    pub relay: Option<String>,
}

/// Airtime of one group in a report.
#[derive(Debug, Clone, FromRow, PartialEq)]
pub struct AirtimeRow {
    pub group_key: String,
    /// A readable name for the group (a campaign's title); the key otherwise.
    pub group_label: String,
    /// Milliseconds of audio sent, summed over clusters.
    pub aired_ms: i64,
    /// Distinct broadcasts.
    pub airings: i64,
    /// Distinct clusters.
    pub clusters: i64,
}

impl Store {
    pub async fn insert_campaign(&self, c: &CampaignRow) -> Result<(), StoreError> {
        sqlx::query(
            "INSERT INTO campaigns (id, title, topic, audio_ids, targets, schedule, priority,
                 repeat, on_interrupt, approval, approved_at, paused, source, source_path,
                 created_at, updated_at, last_planned_at, relay)
             VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        )
        .bind(&c.id)
        .bind(&c.title)
        .bind(&c.topic)
        .bind(&c.audio_ids)
        .bind(&c.targets)
        .bind(&c.schedule)
        .bind(&c.priority)
        .bind(c.repeat)
        .bind(&c.on_interrupt)
        .bind(&c.approval)
        .bind(&c.approved_at)
        .bind(c.paused)
        .bind(&c.source)
        .bind(&c.source_path)
        .bind(&c.created_at)
        .bind(&c.updated_at)
        .bind(&c.last_planned_at)
        .bind(&c.relay)
        .execute(&self.pool)
        .await
        .map_err(conflict_or_db)?;
        Ok(())
    }

    /// Rewrites everything a user may change (the calendar's cursor is left alone).
    pub async fn update_campaign(&self, c: &CampaignRow) -> Result<(), StoreError> {
        let done = sqlx::query(
            "UPDATE campaigns SET title = ?2, topic = ?3, audio_ids = ?4, targets = ?5,
                 schedule = ?6, priority = ?7, repeat = ?8, on_interrupt = ?9, approval = ?10,
                 approved_at = ?11, paused = ?12, source_path = ?13, updated_at = ?14,
                 relay = ?15
             WHERE id = ?1",
        )
        .bind(&c.id)
        .bind(&c.title)
        .bind(&c.topic)
        .bind(&c.audio_ids)
        .bind(&c.targets)
        .bind(&c.schedule)
        .bind(&c.priority)
        .bind(c.repeat)
        .bind(&c.on_interrupt)
        .bind(&c.approval)
        .bind(&c.approved_at)
        .bind(c.paused)
        .bind(&c.source_path)
        .bind(&c.updated_at)
        .bind(&c.relay)
        .execute(&self.pool)
        .await?;
        if done.rows_affected() == 0 {
            return Err(StoreError::NotFound);
        }
        Ok(())
    }

    pub async fn campaign(&self, id: &str) -> Result<CampaignRow, StoreError> {
        sqlx::query_as("SELECT * FROM campaigns WHERE id = ?")
            .bind(id)
            .fetch_optional(&self.pool)
            .await?
            .ok_or(StoreError::NotFound)
    }

    pub async fn campaigns(&self) -> Result<Vec<CampaignRow>, StoreError> {
        Ok(
            sqlx::query_as("SELECT * FROM campaigns ORDER BY created_at, id")
                .fetch_all(&self.pool)
                .await?,
        )
    }

    pub async fn delete_campaign(&self, id: &str) -> Result<(), StoreError> {
        let done = sqlx::query("DELETE FROM campaigns WHERE id = ?")
            .bind(id)
            .execute(&self.pool)
            .await?;
        if done.rows_affected() == 0 {
            return Err(StoreError::NotFound);
        }
        Ok(())
    }

    /// Moves the calendar's cursor of `campaign` up to `now`: a campaign approved or
    /// resumed owes nothing for the time it was pending or paused.
    pub async fn advance_cursor(&self, campaign: &str, now: &str) -> Result<(), StoreError> {
        sqlx::query(
            "UPDATE campaigns SET last_planned_at = MAX(last_planned_at, ?2) WHERE id = ?1",
        )
        .bind(campaign)
        .bind(now)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// Records one planned airing of `campaign` (a broadcast, queued to air or already
    /// `missed`) and moves the campaign's cursor to its instant, in one transaction.
    /// Returns false, writing nothing, when the cursor is already at or past that
    /// instant: the airing was dealt with before (no duplicate after a restart).
    pub async fn record_planned_airing(
        &self,
        campaign: &str,
        b: &BroadcastRow,
        clusters: &[BroadcastClusterRow],
    ) -> Result<bool, StoreError> {
        let planned = b
            .planned_at
            .as_deref()
            .ok_or_else(|| StoreError::Conflict("a planned airing needs planned_at".into()))?;
        let mut tx = self.insert_broadcast_tx(b, clusters).await?;
        let moved = sqlx::query(
            "UPDATE campaigns SET last_planned_at = ?2 WHERE id = ?1 AND last_planned_at < ?2",
        )
        .bind(campaign)
        .bind(planned)
        .execute(&mut *tx)
        .await?;
        if moved.rows_affected() == 0 {
            tx.rollback().await?;
            return Ok(false);
        }
        tx.commit().await?;
        Ok(true)
    }

    /// Planned airings recorded but not started (the daemon stopped before their
    /// instant): the calendar resumes them at start-up.
    pub async fn queued_planned_airings(&self) -> Result<Vec<BroadcastRow>, StoreError> {
        Ok(sqlx::query_as(
            "SELECT * FROM broadcasts WHERE status = 'queued' AND campaign_id IS NOT NULL
             ORDER BY planned_at",
        )
        .fetch_all(&self.pool)
        .await?)
    }

    /// Marks a planned airing as aired after its instant.
    pub async fn mark_late(&self, id: &str) -> Result<(), StoreError> {
        sqlx::query("UPDATE broadcasts SET late = 1 WHERE id = ?")
            .bind(id)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    /// Closes an airing that never started (and its clusters) with a final `status`.
    pub async fn close_unstarted(
        &self,
        id: &str,
        status: &str,
        detail: &str,
    ) -> Result<(), StoreError> {
        let now = super::now_rfc3339();
        let mut tx = self.pool.begin().await?;
        sqlx::query(
            "UPDATE broadcast_clusters SET status = ?2, ended_at = ?3
             WHERE broadcast_id = ?1 AND status = 'queued'",
        )
        .bind(id)
        .bind(status)
        .bind(&now)
        .execute(&mut *tx)
        .await?;
        sqlx::query(
            "UPDATE broadcasts SET status = ?2, ended_at = ?3, detail = ?4
             WHERE id = ?1 AND status = 'queued'",
        )
        .bind(id)
        .bind(status)
        .bind(&now)
        .bind(detail)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(())
    }

    /// Minutes aired between `from` and `to` (cluster start times, RFC 3339), in the
    /// given areas, grouped by `topic`, `area` or `campaign`.
    pub async fn airtime(
        &self,
        from: &str,
        to: &str,
        areas: Option<&[String]>,
        group_by: AirtimeGroup,
    ) -> Result<Vec<AirtimeRow>, StoreError> {
        let (key, label) = match group_by {
            AirtimeGroup::Topic => ("COALESCE(b.topic, '')", "COALESCE(b.topic, '')"),
            AirtimeGroup::Area => ("bc.area_code", "bc.area_code"),
            AirtimeGroup::Campaign => (
                "COALESCE(b.campaign_id, '')",
                "COALESCE(c.title, b.campaign_id, '')",
            ),
        };
        let areas_json = areas.map(|a| serde_json::to_string(a).unwrap_or_default());
        let sql = format!(
            "SELECT {key} AS group_key, MAX({label}) AS group_label,
                    CAST(SUM(bc.packets_sent * bc.ptime_ms) AS INTEGER) AS aired_ms,
                    COUNT(DISTINCT b.id) AS airings,
                    COUNT(DISTINCT bc.cluster_id) AS clusters
             FROM broadcast_clusters bc
             JOIN broadcasts b ON b.id = bc.broadcast_id
             LEFT JOIN campaigns c ON c.id = b.campaign_id
             WHERE bc.started_at IS NOT NULL AND bc.started_at >= ?1 AND bc.started_at < ?2
               AND bc.packets_sent > 0
               AND (?3 IS NULL OR bc.area_code IN (SELECT value FROM json_each(?3)))
             GROUP BY group_key
             ORDER BY aired_ms DESC, group_key"
        );
        // `key` and `label` come from the match above, never from input.
        Ok(sqlx::query_as(sqlx::AssertSqlSafe(sql))
            .bind(from)
            .bind(to)
            .bind(areas_json)
            .fetch_all(&self.pool)
            .await?)
    }
}

/// What an airtime report is grouped by.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AirtimeGroup {
    Topic,
    Area,
    Campaign,
}
