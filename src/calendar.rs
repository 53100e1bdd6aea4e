//! The calendar runner (shell): turns approved campaigns into airings. It sleeps until
//! the next planned instant of any campaign comes within [`PREPARE_AHEAD`] (or until a
//! campaign changes), records the airing together with the campaign's cursor in one
//! transaction, prepares the audio and hands it to the engine for the exact instant. No
//! polling: the wake-up is computed from the pure calendar ([`crate::schedule`]).
//!
//! After a restart, an airing that was recorded but had not started airs at its instant
//! (or late, within the grace window); instants that passed while the daemon was down
//! air late if the most recent is within the grace window and are logged `missed`
//! otherwise.

use std::time::{Duration, SystemTime};

use chrono::{DateTime, TimeDelta, Utc};

use crate::api::AppState;
use crate::api::airing::RelayAiring;
use crate::api::airing::{Airing, build_targets, prepare_and_play, resolve_clusters};
use crate::api::broadcasts::Targets;
use crate::api::campaigns::{
    airing_length, airs_in_quiet_hours, approval, stored_relay, stored_schedule,
};
use crate::playout::{Interruption, Priority};
use crate::store::{AudioRow, BroadcastClusterRow, BroadcastRow, CampaignRow, StoreError, status};

/// Airings are recorded and their audio prepared this long before their instant, so the
/// first packet leaves on time even for a long clip not yet encoded.
pub const PREPARE_AHEAD: Duration = Duration::from_secs(10);
/// Handled more than this after its instant, an airing counts as late.
const LATE_AFTER: TimeDelta = TimeDelta::seconds(1);
/// Most instants dealt with per campaign per wake-up (a catch-up after a long outage of
/// a per-minute campaign logs its missed airings in batches).
const MAX_DUE: usize = 1000;

fn stamp(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}

fn parse_stamp(s: &str) -> Option<DateTime<Utc>> {
    DateTime::parse_from_rfc3339(s)
        .ok()
        .map(|t| t.with_timezone(&Utc))
}

fn priority_of(s: &str) -> Priority {
    match s {
        "background" => Priority::Background,
        "priority" => Priority::Priority,
        "live" => Priority::Live,
        _ => Priority::Scheduled,
    }
}

fn interruption_of(s: &str) -> Interruption {
    serde_json::from_value(serde_json::Value::String(s.to_string())).unwrap_or_default()
}

/// Runs until the task is aborted (at shutdown; every step is a committed transaction or
/// nothing, so aborting loses nothing).
pub async fn run(state: AppState) {
    if let Err(e) = resume_recorded(&state).await {
        tracing::error!(error = %e, "cannot resume recorded airings");
    }
    loop {
        let wake = match tick(&state).await {
            Ok(wake) => wake,
            Err(e) => {
                tracing::error!(error = %e, "calendar pass failed; retrying");
                Some(Utc::now() + TimeDelta::seconds(5))
            }
        };
        let sleep = wake
            .map(|w| (w - Utc::now()).to_std().unwrap_or_default())
            .unwrap_or(Duration::from_secs(24 * 3600));
        tokio::select! {
            () = tokio::time::sleep(sleep) => {}
            () = state.calendar.notified() => {}
        }
    }
}

/// Deals with every instant due by now + [`PREPARE_AHEAD`]; returns when to wake next.
async fn tick(state: &AppState) -> Result<Option<DateTime<Utc>>, StoreError> {
    let now = Utc::now();
    let ahead = TimeDelta::from_std(PREPARE_AHEAD).unwrap_or_default();
    let mut wake: Option<DateTime<Utc>> = None;
    for campaign in state.store.campaigns().await? {
        if campaign.approval != approval::APPROVED || campaign.paused {
            continue;
        }
        let schedule = match stored_schedule(&campaign, &state.config.schedule.timezone) {
            Ok(s) => s,
            Err(e) => {
                tracing::error!(campaign = %campaign.id, error = %e, "unreadable schedule");
                continue;
            }
        };
        let Some(cursor) = parse_stamp(&campaign.last_planned_at) else {
            tracing::error!(campaign = %campaign.id, "unreadable last_planned_at");
            continue;
        };
        let from = cursor + TimeDelta::milliseconds(1);
        let mut due = schedule.occurrences(from, now + ahead, MAX_DUE + 1);
        // More than a batch behind: later instants supersede every overdue one here.
        let more_follow = due.len() > MAX_DUE;
        due.truncate(MAX_DUE);
        if !due.is_empty() {
            handle_due(state, &campaign, &due, now, more_follow).await?;
        }
        let after = due.last().copied().unwrap_or(cursor).max(now + ahead);
        let next = if more_follow {
            Some(now)
        } else {
            schedule.next_after(after).map(|t| t - ahead)
        };
        if let Some(next) = next {
            wake = Some(wake.map_or(next, |w| w.min(next)));
        }
    }
    Ok(wake)
}

/// What becomes of one planned instant.
#[derive(Debug, Clone, PartialEq)]
enum Fate {
    /// Airs at its instant.
    OnTime,
    /// Airs now, after its instant.
    Late,
    /// Does not air, for this reason.
    Missed(&'static str),
}

/// The fate of each due instant (sorted), given `now`: past ones beyond the grace window
/// are missed; of the past ones within it only the most recent airs (late), so an outage
/// never unleashes a burst of stale airings; quiet hours are never aired. `more_follow`:
/// later overdue instants exist beyond `due`, so none of these is the most recent.
fn fates(
    due: &[DateTime<Utc>],
    now: DateTime<Utc>,
    grace: TimeDelta,
    more_follow: bool,
    in_quiet: impl Fn(DateTime<Utc>) -> bool,
) -> Vec<Fate> {
    let last_overdue = if more_follow {
        None
    } else {
        due.iter().rposition(|t| *t < now - LATE_AFTER)
    };
    due.iter()
        .enumerate()
        .map(|(i, &t)| {
            if t >= now - LATE_AFTER {
                if in_quiet(t) {
                    Fate::Missed("planned in quiet hours")
                } else {
                    Fate::OnTime
                }
            } else if now - t > grace {
                Fate::Missed("the daemon was not running at its planned time")
            } else if Some(i) != last_overdue {
                Fate::Missed("superseded by a later instant that was also missed")
            } else if in_quiet(now) {
                Fate::Missed("its catch-up would fall in quiet hours")
            } else {
                Fate::Late
            }
        })
        .collect()
}

async fn handle_due(
    state: &AppState,
    campaign: &CampaignRow,
    due: &[DateTime<Utc>],
    now: DateTime<Utc>,
    more_follow: bool,
) -> Result<(), StoreError> {
    let audio = campaign_audio(state, campaign).await?;
    let repeat = campaign.repeat.clamp(1, 100) as u32;
    let length = airing_length(
        stored_relay(campaign).as_ref(),
        &audio,
        repeat,
        state.config.audio.gap_ms,
    );
    // Quiet hours are the site's: read in the config's timezone, whatever the campaign's.
    let quiet = state.config.quiet_hours();
    let tz = state.config.timezone();
    let in_quiet = |t: DateTime<Utc>| {
        quiet
            .as_ref()
            .is_some_and(|q| airs_in_quiet_hours(q, tz, t, length))
    };
    let grace = TimeDelta::seconds(state.config.schedule.missed_run_grace_s as i64);
    for (&planned, fate) in due
        .iter()
        .zip(fates(due, now, grace, more_follow, in_quiet))
    {
        record(state, campaign, &audio, planned, fate).await?;
    }
    Ok(())
}

async fn campaign_audio(
    state: &AppState,
    campaign: &CampaignRow,
) -> Result<Vec<AudioRow>, StoreError> {
    let ids: Vec<String> = serde_json::from_str(&campaign.audio_ids).unwrap_or_default();
    let mut audio = Vec::with_capacity(ids.len());
    for id in &ids {
        match state.store.audio(id).await {
            Ok(row) => audio.push(row),
            Err(StoreError::NotFound) => {}
            Err(e) => return Err(e),
        }
    }
    Ok(audio)
}

/// Records one planned airing with its fate and, if it airs, sends it on its way.
async fn record(
    state: &AppState,
    campaign: &CampaignRow,
    audio: &[AudioRow],
    planned: DateTime<Utc>,
    fate: Fate,
) -> Result<(), StoreError> {
    let targets: Targets = serde_json::from_str(&campaign.targets).unwrap_or_default();
    let mut unknown = Vec::new();
    let clusters: Vec<_> = match resolve_clusters(state, &targets, &mut unknown).await {
        Ok(c) => c.into_values().filter(|c| c.enabled).collect(),
        Err(e) => {
            tracing::error!(campaign = %campaign.id, error = %e, "cannot resolve targets");
            Vec::new()
        }
    };
    let audio_ids: Vec<String> = serde_json::from_str(&campaign.audio_ids).unwrap_or_default();
    let (row_status, detail) = match &fate {
        Fate::Missed(why) => (status::MISSED, Some(why.to_string())),
        _ if audio.len() != audio_ids.len() => (
            status::FAILED,
            Some("an announcement of the campaign was deleted".to_string()),
        ),
        _ if clusters.is_empty() => (
            status::FAILED,
            Some("no enabled cluster in the targets".to_string()),
        ),
        _ => (status::QUEUED, None),
    };
    let now = crate::store::now_rfc3339();
    let ended = status::is_final(row_status).then(|| now.clone());
    let id = uuid::Uuid::new_v4().to_string();
    let row = BroadcastRow {
        id: id.clone(),
        status: row_status.into(),
        priority: campaign.priority.clone(),
        repeat: campaign.repeat,
        audio_ids: campaign.audio_ids.clone(),
        targets: campaign.targets.clone(),
        detail,
        created_at: now.clone(),
        started_at: None,
        ended_at: ended.clone(),
        on_interrupt: campaign.on_interrupt.clone(),
        campaign_id: Some(campaign.id.clone()),
        planned_at: Some(stamp(planned)),
        topic: Some(campaign.topic.clone()),
        late: fate == Fate::Late,
        relay: campaign.relay.clone(),
    };
    let runs: Vec<BroadcastClusterRow> = clusters
        .iter()
        .map(|c| BroadcastClusterRow {
            broadcast_id: id.clone(),
            cluster_id: c.id.clone(),
            cluster_name: c.name.clone(),
            area_code: c.area_code.clone(),
            status: row_status.into(),
            packets_sent: 0,
            started_at: None,
            ended_at: ended.clone(),
            ptime_ms: c.ptime_ms,
        })
        .collect();
    if !state
        .store
        .record_planned_airing(&campaign.id, &row, &runs)
        .await?
    {
        // Dealt with already (another pass got there first).
        return Ok(());
    }
    tracing::info!(campaign = %campaign.id, broadcast = %id, planned = %stamp(planned),
                   status = row_status, ?fate, "planned airing recorded");
    if row_status == status::QUEUED {
        let at = (fate == Fate::OnTime).then(|| SystemTime::from(planned));
        tokio::spawn(prepare_and_play(
            state.clone(),
            id,
            Airing {
                priority: priority_of(&campaign.priority),
                on_interrupt: interruption_of(&campaign.on_interrupt),
                repeat: campaign.repeat.clamp(1, 100) as u32,
                audio: audio.to_vec(),
                relay: stored_relay(campaign).map(|spec| RelayAiring {
                    spec,
                    window_start: Some(SystemTime::from(planned)),
                }),
                clusters,
                at,
            },
        ));
    }
    Ok(())
}

/// Airings recorded before a restart that had not started: each campaign's are judged
/// as a fresh catch-up would be ([`fates`]): those still ahead air at their instant, the
/// most recent past one within the grace window airs late, the others are missed.
async fn resume_recorded(state: &AppState) -> Result<(), StoreError> {
    let now = Utc::now();
    let grace = TimeDelta::seconds(state.config.schedule.missed_run_grace_s as i64);
    let quiet = state.config.quiet_hours();
    let tz = state.config.timezone();
    let mut by_campaign: std::collections::BTreeMap<String, Vec<(DateTime<Utc>, BroadcastRow)>> =
        Default::default();
    for row in state.store.queued_planned_airings().await? {
        if let (Some(campaign), Some(planned)) = (
            row.campaign_id.clone(),
            row.planned_at.as_deref().and_then(parse_stamp),
        ) {
            by_campaign
                .entry(campaign)
                .or_default()
                .push((planned, row));
        }
    }
    for (campaign_id, mut rows) in by_campaign {
        rows.sort_by_key(|(planned, _)| *planned);
        let mut due: Vec<DateTime<Utc>> = rows.iter().map(|(t, _)| *t).collect();
        // A campaign removed, paused or sent back for approval meanwhile airs nothing.
        let live = match state.store.campaign(&campaign_id).await {
            Ok(c) => c.approval == approval::APPROVED && !c.paused,
            Err(StoreError::NotFound) => false,
            Err(e) => return Err(e),
        };
        if !live {
            for (_, row) in rows {
                state
                    .store
                    .close_unstarted(&row.id, status::CANCELLED, "its campaign no longer airs")
                    .await?;
            }
            continue;
        }
        // Instants that passed while the daemon was down and were never recorded come
        // after every recorded one: the calendar's next pass deals with them, and they
        // supersede the recorded ones here.
        if let Ok(campaign) = state.store.campaign(&campaign_id).await
            && let (Ok(schedule), Some(cursor)) = (
                stored_schedule(&campaign, &state.config.schedule.timezone),
                parse_stamp(&campaign.last_planned_at),
            )
        {
            due.extend(schedule.occurrences(
                cursor + TimeDelta::milliseconds(1),
                now - LATE_AFTER,
                1,
            ));
        }
        let in_quiet = |t: DateTime<Utc>| {
            quiet
                .as_ref()
                .is_some_and(|q| q.contains(t.with_timezone(&tz).time()))
        };
        for ((planned, row), fate) in rows
            .into_iter()
            .zip(fates(&due, now, grace, false, in_quiet))
        {
            match fate {
                Fate::Missed(why) => {
                    state
                        .store
                        .close_unstarted(&row.id, status::MISSED, why)
                        .await?;
                    continue;
                }
                Fate::Late => state.store.mark_late(&row.id).await?,
                Fate::OnTime => {}
            }
            let mut audio = Vec::new();
            for id in serde_json::from_str::<Vec<String>>(&row.audio_ids).unwrap_or_default() {
                if let Ok(a) = state.store.audio(&id).await {
                    audio.push(a);
                }
            }
            let mut clusters = Vec::new();
            for run in state.store.broadcast_clusters(&row.id).await? {
                if let Ok(c) = state.store.cluster(&run.cluster_id).await {
                    clusters.push(c);
                }
            }
            tracing::info!(broadcast = %row.id, planned = %stamp(planned), ?fate,
                           "resuming a recorded airing");
            tokio::spawn(prepare_and_play(
                state.clone(),
                row.id.clone(),
                Airing {
                    priority: priority_of(&row.priority),
                    on_interrupt: interruption_of(&row.on_interrupt),
                    repeat: row.repeat.clamp(1, 100) as u32,
                    audio,
                    relay: row
                        .relay
                        .as_deref()
                        .and_then(|json| serde_json::from_str(json).ok())
                        .map(|spec| RelayAiring {
                            spec,
                            window_start: Some(SystemTime::from(planned)),
                        }),
                    clusters,
                    at: (fate == Fate::OnTime).then(|| SystemTime::from(planned)),
                },
            ));
        }
    }
    Ok(())
}

/// Withdraws the airings of `campaign` recorded but not started (paused, sent back for
/// approval, edited or removed): they are cancelled, in the store and in the engine.
pub(crate) async fn withdraw(
    state: &AppState,
    campaign: &str,
    why: &str,
) -> Result<(), StoreError> {
    for row in state.store.queued_planned_airings().await? {
        if row.campaign_id.as_deref() == Some(campaign) {
            state.engine.cancel(&row.id);
            state
                .store
                .close_unstarted(&row.id, status::CANCELLED, why)
                .await?;
            tracing::info!(campaign, broadcast = %row.id, why, "planned airing withdrawn");
        }
    }
    Ok(())
}

/// Encodes a newly approved campaign's audio for its clusters' codecs now, so that its
/// first airing does not wait for it.
pub fn warm_up(state: AppState, campaign: CampaignRow) {
    tokio::spawn(async move {
        let Ok(audio) = campaign_audio(&state, &campaign).await else {
            return;
        };
        let targets: Targets = serde_json::from_str(&campaign.targets).unwrap_or_default();
        let mut ignored = Vec::new();
        let Ok(clusters) = resolve_clusters(&state, &targets, &mut ignored).await else {
            return;
        };
        let clusters: Vec<_> = clusters.into_values().collect();
        let repeat = campaign.repeat.clamp(1, 100) as u32;
        if let Err(e) = build_targets(&state, repeat, &audio, &clusters).await {
            tracing::warn!(campaign = %campaign.id, error = %e, "could not prepare the audio ahead");
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
    }

    const GRACE: TimeDelta = TimeDelta::minutes(10);

    #[test]
    fn instants_still_ahead_air_on_time_and_quiet_ones_are_missed() {
        let now = t("2026-12-01T05:59:55Z");
        let due = [t("2026-12-01T06:00:00Z"), t("2026-12-01T06:00:03Z")];
        let quiet_second = |x: DateTime<Utc>| x == due[1];
        assert_eq!(
            fates(&due, now, GRACE, false, quiet_second),
            vec![Fate::OnTime, Fate::Missed("planned in quiet hours")]
        );
    }

    #[test]
    fn after_an_outage_only_the_latest_instant_within_grace_airs_late() {
        let now = t("2026-12-01T06:30:00Z");
        let due = [
            t("2026-12-01T06:00:00Z"), // 30 min ago: beyond the grace window
            t("2026-12-01T06:22:00Z"), // within it, but a later one exists
            t("2026-12-01T06:25:00Z"), // the latest overdue: airs late
            t("2026-12-01T06:30:05Z"), // still ahead
        ];
        let fates = fates(&due, now, GRACE, false, |_| false);
        assert_eq!(
            fates[0],
            Fate::Missed("the daemon was not running at its planned time")
        );
        assert!(matches!(fates[1], Fate::Missed(_)));
        assert_eq!(fates[2], Fate::Late);
        assert_eq!(fates[3], Fate::OnTime);
    }

    #[test]
    fn a_catch_up_that_would_land_in_quiet_hours_does_not_air() {
        let now = t("2026-12-01T15:05:00Z");
        let due = [t("2026-12-01T15:00:00Z")];
        let fates = fates(&due, now, GRACE, false, |x| x == now);
        assert!(matches!(fates[0], Fate::Missed(_)));
    }

    #[test]
    fn when_more_overdue_instants_follow_none_of_this_batch_airs_late() {
        let now = t("2026-12-01T06:30:00Z");
        let due = [t("2026-12-01T06:25:00Z"), t("2026-12-01T06:26:00Z")];
        let fates = fates(&due, now, GRACE, true, |_| false);
        assert!(
            fates.iter().all(|f| matches!(f, Fate::Missed(_))),
            "{fates:?}"
        );
    }

    #[test]
    fn an_instant_a_moment_ago_still_counts_as_on_time() {
        let now = t("2026-12-01T06:00:00.500Z");
        assert_eq!(
            fates(&[t("2026-12-01T06:00:00Z")], now, GRACE, false, |_| false),
            vec![Fate::OnTime]
        );
    }
}
