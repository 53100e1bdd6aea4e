//! Fleet health in the store: the transitions of each cluster's status, and cluster edits.

use sqlx::FromRow;

use super::{ClusterRow, Store, StoreError};

#[derive(Debug, Clone, FromRow, PartialEq)]
pub struct HealthTransitionRow {
    pub seq: i64,
    pub cluster_id: String,
    pub area_code: String,
    pub at: String,
    pub from_status: String,
    pub to_status: String,
    pub cause: String,
}

/// A transition to append (its `seq` is given by the store).
#[derive(Debug, Clone, Copy)]
pub struct NewTransition<'a> {
    pub cluster_id: &'a str,
    pub area_code: &'a str,
    pub at: &'a str,
    pub from_status: &'a str,
    pub to_status: &'a str,
    pub cause: &'a str,
}

impl Store {
    /// Appends transitions in one transaction; returns their sequence numbers in order.
    pub async fn insert_transitions(
        &self,
        transitions: &[NewTransition<'_>],
    ) -> Result<Vec<i64>, StoreError> {
        let mut tx = self.pool.begin().await?;
        let mut seqs = Vec::with_capacity(transitions.len());
        for t in transitions {
            let seq: i64 = sqlx::query_scalar(
                "INSERT INTO health_transitions
                     (cluster_id, area_code, at, from_status, to_status, cause)
                 VALUES (?, ?, ?, ?, ?, ?) RETURNING seq",
            )
            .bind(t.cluster_id)
            .bind(t.area_code)
            .bind(t.at)
            .bind(t.from_status)
            .bind(t.to_status)
            .bind(t.cause)
            .fetch_one(&mut *tx)
            .await?;
            seqs.push(seq);
        }
        tx.commit().await?;
        Ok(seqs)
    }

    /// Transitions in [from, to), oldest first, of one cluster or of clusters in `areas`
    /// (all when both are `None`), at most `limit`: the first ones from `from`, or the
    /// newest ones when there is no `from`.
    pub async fn transitions(
        &self,
        cluster: Option<&str>,
        areas: Option<&[String]>,
        from: Option<&str>,
        to: Option<&str>,
        limit: u32,
    ) -> Result<Vec<HealthTransitionRow>, StoreError> {
        let areas_json = areas.map(|a| serde_json::Value::from(a.to_vec()).to_string());
        // Two fixed statements, only the order differs.
        const FIRST: &str = "SELECT * FROM (
                 SELECT * FROM health_transitions
                 WHERE (?1 IS NULL OR cluster_id = ?1)
                   AND (?2 IS NULL OR area_code IN (SELECT value FROM json_each(?2)))
                   AND (?3 IS NULL OR at >= ?3) AND (?4 IS NULL OR at < ?4)
                 ORDER BY seq ASC LIMIT ?5)
             ORDER BY seq";
        let newest = FIRST.replace("seq ASC", "seq DESC");
        let sql = if from.is_some() {
            sqlx::AssertSqlSafe(FIRST.to_string())
        } else {
            sqlx::AssertSqlSafe(newest)
        };
        Ok(sqlx::query_as(sql)
            .bind(cluster)
            .bind(areas_json)
            .bind(from)
            .bind(to)
            .bind(i64::from(limit))
            .fetch_all(&self.pool)
            .await?)
    }

    /// The latest transition of every cluster that still exists: the status each had
    /// when the daemon last stopped.
    pub async fn latest_transitions(&self) -> Result<Vec<HealthTransitionRow>, StoreError> {
        Ok(sqlx::query_as(
            "SELECT t.* FROM health_transitions t
             JOIN (SELECT cluster_id, MAX(seq) AS seq FROM health_transitions GROUP BY cluster_id) m
               ON m.seq = t.seq
             JOIN clusters c ON c.id = t.cluster_id",
        )
        .fetch_all(&self.pool)
        .await?)
    }

    /// Replaces a cluster's editable fields (name, codec, ptime, endpoint, volume,
    /// enabled, agent key) with `c`'s.
    pub async fn update_cluster(&self, c: &ClusterRow) -> Result<(), StoreError> {
        let done = sqlx::query(
            "UPDATE clusters SET name = ?, codec = ?, ptime_ms = ?, endpoint = ?, volume = ?,
                                 enabled = ?, agent_key = ?, srtp_key = ?
             WHERE id = ?",
        )
        .bind(&c.name)
        .bind(&c.codec)
        .bind(c.ptime_ms)
        .bind(&c.endpoint)
        .bind(c.volume)
        .bind(c.enabled)
        .bind(&c.agent_key)
        .bind(&c.srtp_key)
        .bind(&c.id)
        .execute(&self.pool)
        .await?;
        if done.rows_affected() == 0 {
            return Err(StoreError::NotFound);
        }
        Ok(())
    }
}
