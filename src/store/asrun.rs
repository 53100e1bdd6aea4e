//! The as-run log as the engine reports it: a batch of playout events written in one
//! transaction, each broadcast's overall status derived from its clusters' with one
//! aggregate query (not by re-reading every cluster's row per event: a broadcast to
//! 10,000 clusters ends 10,000 times).

use std::collections::BTreeMap;

use super::{Store, StoreError, status};

/// One thing that happened in playout.
#[derive(Debug, Clone, Copy)]
pub enum Played<'a> {
    Started {
        broadcast: &'a str,
        cluster: &'a str,
        at: &'a str,
    },
    Preempted {
        broadcast: &'a str,
        cluster: &'a str,
        by: &'a str,
        policy: &'a str,
        at_ms: u64,
        at: &'a str,
    },
    /// `outcome` is `done`, `cancelled` or `interrupted`; a `done` of a planned airing
    /// that was caught up late is recorded `late`.
    Finished {
        broadcast: &'a str,
        cluster: &'a str,
        outcome: &'a str,
        packets_sent: u64,
        at: &'a str,
    },
}

impl Store {
    /// Writes a batch of playout events in one transaction.
    pub async fn record_played(&self, events: &[Played<'_>]) -> Result<(), StoreError> {
        let mut tx = self.pool.begin().await?;
        let mut started: BTreeMap<&str, &str> = BTreeMap::new();
        let mut finished: BTreeMap<&str, &str> = BTreeMap::new();
        let mut late: BTreeMap<&str, bool> = BTreeMap::new();
        for event in events {
            match *event {
                Played::Started {
                    broadcast,
                    cluster,
                    at,
                } => {
                    sqlx::query(
                        "UPDATE broadcast_clusters SET status = 'playing',
                             started_at = COALESCE(started_at, ?3)
                         WHERE broadcast_id = ?1 AND cluster_id = ?2 AND status NOT IN ('done', 'interrupted', 'cancelled', 'failed', 'late', 'missed')",
                    )
                    .bind(broadcast)
                    .bind(cluster)
                    .bind(at)
                    .execute(&mut *tx)
                    .await?;
                    started.entry(broadcast).or_insert(at);
                }
                Played::Preempted {
                    broadcast,
                    cluster,
                    by,
                    policy,
                    at_ms,
                    at,
                } => {
                    sqlx::query(
                        "INSERT INTO broadcast_interruptions
                             (broadcast_id, cluster_id, at, by_broadcast, policy, at_ms)
                         VALUES (?, ?, ?, ?, ?, ?)",
                    )
                    .bind(broadcast)
                    .bind(cluster)
                    .bind(at)
                    .bind(by)
                    .bind(policy)
                    .bind(at_ms as i64)
                    .execute(&mut *tx)
                    .await?;
                }
                Played::Finished {
                    broadcast,
                    cluster,
                    outcome,
                    packets_sent,
                    at,
                } => {
                    let is_late = match late.get(broadcast) {
                        Some(l) => *l,
                        None => {
                            let l: Option<bool> =
                                sqlx::query_scalar("SELECT late FROM broadcasts WHERE id = ?")
                                    .bind(broadcast)
                                    .fetch_optional(&mut *tx)
                                    .await?;
                            let l = l.unwrap_or(false);
                            late.insert(broadcast, l);
                            l
                        }
                    };
                    let outcome = if outcome == status::DONE && is_late {
                        status::LATE
                    } else {
                        outcome
                    };
                    sqlx::query(
                        "UPDATE broadcast_clusters SET
                             status = CASE WHEN status IN ('done', 'interrupted', 'cancelled', 'failed', 'late', 'missed') THEN status ELSE ?3 END,
                             packets_sent = ?4,
                             ended_at = COALESCE(ended_at, ?5)
                         WHERE broadcast_id = ?1 AND cluster_id = ?2",
                    )
                    .bind(broadcast)
                    .bind(cluster)
                    .bind(outcome)
                    .bind(packets_sent as i64)
                    .bind(at)
                    .execute(&mut *tx)
                    .await?;
                    finished.insert(broadcast, at);
                }
            }
        }
        for (broadcast, at) in started {
            sqlx::query(
                "UPDATE broadcasts SET status = 'playing', started_at = COALESCE(started_at, ?2)
                 WHERE id = ?1 AND status NOT IN ('done', 'interrupted', 'cancelled', 'failed', 'late', 'missed')",
            )
            .bind(broadcast)
            .bind(at)
            .execute(&mut *tx)
            .await?;
        }
        for (broadcast, at) in finished {
            let (total, ended, done, late, cancelled, interrupted): (i64, i64, i64, i64, i64, i64) =
                sqlx::query_as(
                    "SELECT COUNT(*),
                            COALESCE(SUM(status IN ('done', 'interrupted', 'cancelled', 'failed', 'late', 'missed')), 0),
                            COALESCE(SUM(status = 'done'), 0),
                            COALESCE(SUM(status = 'late'), 0),
                            COALESCE(SUM(status = 'cancelled'), 0),
                            COALESCE(SUM(status = 'interrupted'), 0)
                     FROM broadcast_clusters WHERE broadcast_id = ?",
                )
                .bind(broadcast)
                .fetch_one(&mut *tx)
                .await?;
            if ended < total {
                continue;
            }
            let overall = if done == total {
                status::DONE
            } else if done + late == total {
                status::LATE
            } else if cancelled > 0 {
                status::CANCELLED
            } else if interrupted > 0 {
                status::INTERRUPTED
            } else {
                status::FAILED
            };
            let detail = (overall == status::INTERRUPTED).then_some("interrupted before the end");
            sqlx::query(
                "UPDATE broadcasts SET status = ?2, detail = COALESCE(?3, detail),
                     ended_at = COALESCE(ended_at, ?4)
                 WHERE id = ?1 AND status NOT IN ('done', 'interrupted', 'cancelled', 'failed', 'late', 'missed')",
            )
            .bind(broadcast)
            .bind(overall)
            .bind(detail)
            .bind(at)
            .execute(&mut *tx)
            .await?;
        }
        tx.commit().await?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::{BroadcastClusterRow, BroadcastRow, now_rfc3339};

    async fn store_with_broadcast(late: bool) -> (tempfile::TempDir, Store) {
        let dir = tempfile::tempdir().unwrap();
        let url = format!("sqlite://{}", dir.path().join("t.db").display());
        let store = Store::open(&url).await.unwrap();
        let b = BroadcastRow {
            id: "b".into(),
            status: status::QUEUED.into(),
            priority: "scheduled".into(),
            repeat: 1,
            audio_ids: "[]".into(),
            targets: "{}".into(),
            detail: None,
            created_at: now_rfc3339(),
            started_at: None,
            ended_at: None,
            on_interrupt: "restart".into(),
            campaign_id: None,
            planned_at: None,
            topic: None,
            late,
            relay: None,
        };
        let runs: Vec<BroadcastClusterRow> = ["c1", "c2"]
            .iter()
            .map(|c| BroadcastClusterRow {
                broadcast_id: "b".into(),
                cluster_id: (*c).into(),
                cluster_name: (*c).into(),
                area_code: "a".into(),
                status: status::QUEUED.into(),
                packets_sent: 0,
                started_at: None,
                ended_at: None,
                ptime_ms: 20,
            })
            .collect();
        store.insert_broadcast(&b, &runs).await.unwrap();
        (dir, store)
    }

    fn finished<'a>(cluster: &'a str, outcome: &'a str) -> Played<'a> {
        Played::Finished {
            broadcast: "b",
            cluster,
            outcome,
            packets_sent: 50,
            at: "2026-11-22T09:00:00.000Z",
        }
    }

    #[tokio::test]
    async fn a_broadcast_ends_when_its_last_cluster_does_and_takes_their_worst_outcome() {
        let (_dir, store) = store_with_broadcast(false).await;
        let start = |c| Played::Started {
            broadcast: "b",
            cluster: c,
            at: "2026-11-22T08:59:59.000Z",
        };
        store
            .record_played(&[start("c1"), start("c2")])
            .await
            .unwrap();
        assert_eq!(store.broadcast("b").await.unwrap().status, "playing");
        store
            .record_played(&[finished("c1", "done")])
            .await
            .unwrap();
        assert_eq!(store.broadcast("b").await.unwrap().status, "playing");
        store
            .record_played(&[finished("c2", "interrupted")])
            .await
            .unwrap();
        let b = store.broadcast("b").await.unwrap();
        assert_eq!(b.status, "interrupted");
        assert_eq!(b.ended_at.as_deref(), Some("2026-11-22T09:00:00.000Z"));
        // A final status is never overwritten by a late event.
        store
            .record_played(&[finished("c2", "done")])
            .await
            .unwrap();
        let runs = store.broadcast_clusters("b").await.unwrap();
        assert_eq!(runs[1].status, "interrupted");
        assert_eq!(runs[0].packets_sent, 50);
    }

    #[tokio::test]
    async fn a_caught_up_airing_that_ends_in_full_is_late_not_done() {
        let (_dir, store) = store_with_broadcast(true).await;
        store
            .record_played(&[finished("c1", "done"), finished("c2", "done")])
            .await
            .unwrap();
        assert_eq!(store.broadcast("b").await.unwrap().status, "late");
    }
}
