//! `/api/v1/campaigns`: announcements on a calendar. A campaign is validated whole
//! (cron rules with POSIX meaning, timezone, date window, audio, targets), refused when
//! an occurrence would air in quiet hours, committed before it is acknowledged, and airs
//! only once approved. The calendar runner ([`crate::calendar`]) does the airing.

use std::collections::BTreeSet;

use axum::extract::{Path, State};
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use axum::{Extension, Json};
use chrono::{DateTime, NaiveDate, TimeDelta, Utc};
use serde::{Deserialize, Serialize};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::AppState;
use super::access::{Principal, audit, require_targets};
use super::airing::{lookup_audio, resolve_clusters};
use super::areas::validation;
use super::broadcasts::{Targets, check_relay};
use super::problem::Query;
use super::problem::{ApiError, FieldError, JsonBody, Problem};
use crate::fleet::parse_name;
use crate::playout::{Interruption, Priority};
use crate::relay::RelaySpec;
use crate::schedule::{Cron, QuietHours, Schedule, parse_timezone};
use crate::store::{AudioRow, CampaignRow, StoreError, now_rfc3339};

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(create_campaign, list_campaigns))
        .routes(routes!(get_campaign, patch_campaign, delete_campaign))
        .routes(routes!(approve_campaign))
        .routes(routes!(campaign_occurrences))
}

/// Most audio items one campaign may chain.
const MAX_ITEMS: usize = 50;
const MAX_REPEAT: u32 = 100;
const MAX_RULES: usize = 32;
/// How far ahead quiet hours and conflicts are checked (bounded by `ends_on`).
const CHECK_HORIZON_DAYS: i64 = 366;
/// How far ahead conflicts with other campaigns are looked for.
const CONFLICT_HORIZON_DAYS: i64 = 31;
/// Offending times listed in a quiet-hours refusal.
const QUIET_EXAMPLES: usize = 5;
/// Occurrences shown with a campaign.
const NEXT_SHOWN: usize = 5;
/// Most occurrences one query returns.
const MAX_OCCURRENCES: usize = 1000;
/// Most occurrences examined by one quiet-hours or conflict check (a per-second rule has
/// 31 million a year): the checks cover the first ones, which is where clashes show.
const MAX_CHECKED: usize = 100_000;

pub(crate) mod approval {
    pub const PENDING: &str = "pending";
    pub const APPROVED: &str = "approved";
}

/// When a campaign airs, as it arrives and as it is shown.
#[derive(Debug, Clone, Deserialize, Serialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ScheduleSpec {
    /// POSIX cron rules: `min hour dom mon dow` (Sunday 0 or 7; day-of-month and
    /// day-of-week combine with OR when both are set), or 6 fields with seconds first.
    pub cron: Vec<String>,
    /// IANA timezone the rules are read in (default: the config's).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timezone: Option<String>,
    /// First day (inclusive), `YYYY-MM-DD`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub starts_on: Option<String>,
    /// Last day (inclusive), `YYYY-MM-DD`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ends_on: Option<String>,
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateCampaign {
    title: String,
    /// What it is about (e.g. `chuyen-doi-so`): airtime reports group by it.
    topic: String,
    /// Announcements aired back to back at each occurrence.
    #[serde(default)]
    audio_ids: Vec<String>,
    /// A live stream relayed for `duration_s` from each occurrence, in place of
    /// `audio_ids` (the window must stay clear of quiet hours).
    relay: Option<RelaySpec>,
    /// Areas (expanded to their clusters at each airing) and clusters.
    targets: Targets,
    schedule: ScheduleSpec,
    /// `scheduled` (default), `background`, `priority` or `live`.
    priority: Option<String>,
    /// Times the playlist airs at each occurrence (1-100, default 1).
    repeat: Option<u32>,
    #[schema(value_type = Option<String>)]
    on_interrupt: Option<Interruption>,
}

/// Every field optional: what is given replaces what was there. Changing the audio, the
/// targets or the schedule of an approved campaign sends it back to `pending`.
#[derive(Debug, Default, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PatchCampaign {
    title: Option<String>,
    topic: Option<String>,
    /// Replaces the programme with announcements (drops a relay).
    audio_ids: Option<Vec<String>>,
    /// Replaces the programme with a relay (drops the announcements).
    relay: Option<RelaySpec>,
    targets: Option<Targets>,
    schedule: Option<ScheduleSpec>,
    priority: Option<String>,
    repeat: Option<u32>,
    #[schema(value_type = Option<String>)]
    on_interrupt: Option<Interruption>,
    /// Pause (true) or resume (false) airing without losing approval.
    paused: Option<bool>,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct Campaign {
    id: String,
    title: String,
    topic: String,
    audio_ids: Vec<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    relay: Option<RelaySpec>,
    targets: Targets,
    schedule: ScheduleSpec,
    priority: String,
    repeat: u32,
    on_interrupt: String,
    /// `pending` (waits for approval), `approved`, or `paused`.
    status: String,
    approval: String,
    approved_at: Option<String>,
    paused: bool,
    /// `api`, or `file` for campaigns loaded from `schedules/*.toml` (read-only here).
    source: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    source_path: Option<String>,
    created_at: String,
    updated_at: String,
    /// The next planned airings (UTC).
    next_occurrences: Vec<String>,
    /// On create and edit: other campaigns airing on the same clusters at overlapping
    /// times in the next month.
    #[serde(skip_serializing_if = "Option::is_none")]
    conflicts: Option<Vec<Conflict>>,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct Conflict {
    campaign_id: String,
    title: String,
    priority: String,
    /// Clusters both campaigns air on.
    shared_clusters: usize,
    /// The first instant both air at once.
    first_overlap: String,
    /// What happens then: `queues` (equal priority: after the other), `cuts_in` (this
    /// one is higher and interrupts the other) or `is_cut_in` (the other interrupts it).
    effect: String,
}

/// A campaign request checked whole: the parts the store keeps.
pub(crate) struct Validated {
    pub title: String,
    pub topic: String,
    pub audio: Vec<AudioRow>,
    pub audio_ids: Vec<String>,
    pub relay: Option<RelaySpec>,
    pub targets: Targets,
    pub schedule: Schedule,
    pub spec: ScheduleSpec,
    pub priority: Priority,
    pub repeat: u32,
    pub on_interrupt: Interruption,
}

fn parse_priority(raw: Option<&str>, errors: &mut Vec<FieldError>) -> Option<Priority> {
    match raw.unwrap_or("scheduled") {
        "scheduled" => Some(Priority::Scheduled),
        "background" => Some(Priority::Background),
        "priority" => Some(Priority::Priority),
        "live" => Some(Priority::Live),
        "emergency" => {
            errors.push(FieldError::new(
                "priority",
                "emergencies go through POST /api/v1/emergency",
            ));
            None
        }
        other => {
            errors.push(FieldError::new(
                "priority",
                format!("`{other}` is not one of: scheduled, background, priority, live"),
            ));
            None
        }
    }
}

/// Parses a schedule spec, pushing errors by field (`schedule.cron[1]`...).
pub(crate) fn parse_schedule(
    spec: &ScheduleSpec,
    default_tz: &str,
    errors: &mut Vec<FieldError>,
) -> Option<Schedule> {
    let before = errors.len();
    if spec.cron.is_empty() || spec.cron.len() > MAX_RULES {
        errors.push(FieldError::new(
            "schedule.cron",
            format!("must list 1 to {MAX_RULES} cron rules"),
        ));
    }
    let rules: Vec<Cron> = spec
        .cron
        .iter()
        .enumerate()
        .take(MAX_RULES)
        .filter_map(|(i, rule)| {
            Cron::parse(rule)
                .map_err(|e| {
                    errors.push(FieldError::new(
                        format!("schedule.cron[{i}]"),
                        e.to_string(),
                    ))
                })
                .ok()
        })
        .collect();
    let timezone = parse_timezone(spec.timezone.as_deref().unwrap_or(default_tz))
        .map_err(|e| errors.push(FieldError::new("schedule.timezone", e.to_string())))
        .ok();
    let date = |field: &str, raw: &Option<String>, errors: &mut Vec<FieldError>| {
        raw.as_deref().and_then(|d| {
            NaiveDate::parse_from_str(d, "%Y-%m-%d")
                .map_err(|_| {
                    errors.push(FieldError::new(
                        field,
                        format!("`{d}` is not a date (YYYY-MM-DD)"),
                    ))
                })
                .ok()
        })
    };
    let starts_on = date("schedule.starts_on", &spec.starts_on, errors);
    let ends_on = date("schedule.ends_on", &spec.ends_on, errors);
    if errors.len() > before {
        return None;
    }
    Schedule::new(rules, timezone?, starts_on, ends_on)
        .map_err(|e| errors.push(FieldError::new("schedule.ends_on", e.to_string())))
        .ok()
}

/// The length of one airing of a campaign: its relay's window, or its announcements.
pub(crate) fn airing_length(
    relay: Option<&RelaySpec>,
    audio: &[AudioRow],
    repeat: u32,
    gap_ms: u32,
) -> TimeDelta {
    match relay {
        Some(r) => TimeDelta::seconds(i64::from(r.duration_s)),
        None => programme_length(audio, repeat, gap_ms),
    }
}

/// A stored campaign's relay, if it relays a stream.
pub(crate) fn stored_relay(row: &CampaignRow) -> Option<RelaySpec> {
    row.relay
        .as_deref()
        .and_then(|json| serde_json::from_str(json).ok())
}

/// The length of one airing: every item, the gaps between them, `repeat` times.
pub(crate) fn programme_length(audio: &[AudioRow], repeat: u32, gap_ms: u32) -> TimeDelta {
    let items: i64 = audio.iter().map(|a| a.duration_ms.max(0)).sum();
    let gaps = (audio.len() as i64 * i64::from(repeat) - 1).max(0) * i64::from(gap_ms);
    TimeDelta::milliseconds(items * i64::from(repeat) + gaps)
}

/// Whether an airing from `start` lasting `length` touches quiet hours.
pub(crate) fn airs_in_quiet_hours(
    quiet: &QuietHours,
    tz: chrono_tz::Tz,
    start: DateTime<Utc>,
    length: TimeDelta,
) -> bool {
    // Sampled every minute and at the last instant: quiet hours are set in minutes.
    let end = start + length;
    let mut t = start;
    loop {
        if quiet.contains(t.with_timezone(&tz).time()) {
            return true;
        }
        if t >= end {
            return false;
        }
        t = (t + TimeDelta::minutes(1)).min(end);
    }
}

/// The first occurrences in quiet hours within the check horizon (and the first
/// [`MAX_CHECKED`] occurrences). CPU work: run off the reactor.
pub(crate) async fn quiet_clashes(
    state: &AppState,
    schedule: &Schedule,
    length: TimeDelta,
    now: DateTime<Utc>,
) -> Result<Vec<DateTime<Utc>>, ApiError> {
    let Some(quiet) = state.config.quiet_hours() else {
        return Ok(Vec::new());
    };
    // Quiet hours are the site's, in the config's timezone, whatever the campaign's.
    let tz = state.config.timezone();
    let schedule = schedule.clone();
    tokio::task::spawn_blocking(move || {
        schedule
            .occurrences_iter(now, now + TimeDelta::days(CHECK_HORIZON_DAYS))
            .take(MAX_CHECKED)
            .filter(|t| airs_in_quiet_hours(&quiet, tz, *t, length))
            .take(QUIET_EXAMPLES)
            .collect()
    })
    .await
    .map_err(ApiError::internal)
}

/// A campaign as requested, before validation.
struct Draft<'a> {
    title: &'a str,
    topic: &'a str,
    audio_ids: &'a [String],
    relay: Option<&'a RelaySpec>,
    targets: &'a Targets,
    spec: &'a ScheduleSpec,
    priority: Option<&'a str>,
    repeat: Option<u32>,
    on_interrupt: Option<Interruption>,
}

/// Checks a whole campaign request; every problem is reported at once, by field.
async fn validate(state: &AppState, draft: Draft<'_>) -> Result<Validated, ApiError> {
    let Draft {
        title,
        topic,
        audio_ids,
        relay,
        targets,
        spec,
        priority,
        repeat,
        on_interrupt,
    } = draft;
    let mut errors = Vec::new();
    let title = parse_name(title, 200)
        .map_err(|e| errors.push(FieldError::new("title", e.0)))
        .ok();
    let topic = parse_name(topic, 100)
        .map_err(|e| errors.push(FieldError::new("topic", e.0)))
        .ok();
    let priority = parse_priority(priority, &mut errors);
    let repeat = repeat.unwrap_or(1);
    if !(1..=MAX_REPEAT).contains(&repeat) {
        errors.push(FieldError::new(
            "repeat",
            format!("must be between 1 and {MAX_REPEAT}"),
        ));
    }
    if let Some(relay) = relay {
        let repeat = Some(repeat).filter(|r| *r != 1);
        check_relay(state, relay, audio_ids, repeat, &mut errors).await?;
    } else if audio_ids.is_empty() || audio_ids.len() > MAX_ITEMS {
        errors.push(FieldError::new(
            "audio_ids",
            format!("must list 1 to {MAX_ITEMS} audio ids (or give a relay)"),
        ));
    }
    let audio = lookup_audio(state, audio_ids, MAX_ITEMS, &mut errors).await?;
    if targets.areas.is_empty() && targets.clusters.is_empty() {
        errors.push(FieldError::new(
            "targets",
            "name at least one area or cluster",
        ));
    }
    resolve_clusters(state, targets, &mut errors).await?;
    let schedule = parse_schedule(spec, &state.config.schedule.timezone, &mut errors);
    if let Some(schedule) = &schedule
        && errors.is_empty()
    {
        let length = airing_length(relay, &audio, repeat, state.config.audio.gap_ms);
        let clashes = quiet_clashes(state, schedule, length, Utc::now()).await?;
        if !clashes.is_empty() {
            let local: Vec<String> = clashes
                .iter()
                .map(|t| {
                    t.with_timezone(&schedule.timezone)
                        .format("%Y-%m-%d %H:%M:%S %:z")
                        .to_string()
                })
                .collect();
            errors.push(FieldError::new(
                "schedule.cron",
                format!(
                    "airs in quiet hours ({}), where only emergencies air; first at: {}",
                    state.config.schedule.quiet_hours,
                    local.join(", ")
                ),
            ));
        }
    }
    match (title, topic, priority, schedule, errors.is_empty()) {
        (Some(title), Some(topic), Some(priority), Some(schedule), true) => Ok(Validated {
            title,
            topic,
            audio,
            audio_ids: audio_ids.to_vec(),
            relay: relay.cloned(),
            targets: targets.clone(),
            schedule,
            spec: spec.clone(),
            priority,
            repeat,
            on_interrupt: on_interrupt.unwrap_or_default(),
        }),
        _ => Err(validation(errors)),
    }
}

fn stamp(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}

fn parse_priority_str(s: &str) -> Priority {
    match s {
        "background" => Priority::Background,
        "priority" => Priority::Priority,
        "live" => Priority::Live,
        "emergency" => Priority::Emergency,
        _ => Priority::Scheduled,
    }
}

/// A stored campaign's schedule (it was validated on the way in).
pub(crate) fn stored_schedule(row: &CampaignRow, default_tz: &str) -> Result<Schedule, String> {
    let spec: ScheduleSpec = serde_json::from_str(&row.schedule).map_err(|e| e.to_string())?;
    let mut errors = Vec::new();
    parse_schedule(&spec, default_tz, &mut errors).ok_or_else(|| {
        errors
            .iter()
            .map(|e| format!("{}: {}", e.field, e.message))
            .collect::<Vec<_>>()
            .join("; ")
    })
}

fn view(
    state: &AppState,
    row: CampaignRow,
    conflicts: Option<Vec<Conflict>>,
) -> Result<Campaign, ApiError> {
    let spec: ScheduleSpec = serde_json::from_str(&row.schedule).map_err(ApiError::internal)?;
    let next = stored_schedule(&row, &state.config.schedule.timezone)
        .map(|s| {
            let now = Utc::now();
            s.occurrences(now, now + TimeDelta::days(CHECK_HORIZON_DAYS), NEXT_SHOWN)
                .into_iter()
                .map(stamp)
                .collect()
        })
        .unwrap_or_default();
    Ok(Campaign {
        relay: stored_relay(&row),
        audio_ids: serde_json::from_str(&row.audio_ids).map_err(ApiError::internal)?,
        targets: serde_json::from_str(&row.targets).map_err(ApiError::internal)?,
        schedule: spec,
        status: if row.paused {
            "paused".into()
        } else {
            row.approval.clone()
        },
        id: row.id,
        title: row.title,
        topic: row.topic,
        priority: row.priority,
        repeat: row.repeat.clamp(1, i64::from(MAX_REPEAT)) as u32,
        on_interrupt: row.on_interrupt,
        approval: row.approval,
        approved_at: row.approved_at,
        paused: row.paused,
        source: row.source,
        source_path: row.source_path,
        created_at: row.created_at,
        updated_at: row.updated_at,
        next_occurrences: next,
        conflicts,
    })
}

/// The clusters a campaign's targets reach now.
async fn cluster_set(state: &AppState, targets: &Targets) -> Result<BTreeSet<String>, ApiError> {
    let mut ignored = Vec::new();
    Ok(resolve_clusters(state, targets, &mut ignored)
        .await?
        .into_values()
        .filter(|c| c.enabled)
        .map(|c| c.id)
        .collect())
}

/// The first instant two calendars air at once, over the conflict horizon.
fn first_overlap(
    a: &Schedule,
    a_len: TimeDelta,
    b: &Schedule,
    b_len: TimeDelta,
    now: DateTime<Utc>,
) -> Option<DateTime<Utc>> {
    let to = now + TimeDelta::days(CONFLICT_HORIZON_DAYS);
    let mut xs = a.occurrences_iter(now - a_len.max(b_len), to).peekable();
    let mut ys = b.occurrences_iter(now - a_len.max(b_len), to).peekable();
    // A zero-length programme still occupies its tick.
    let (a_len, b_len) = (
        a_len.max(TimeDelta::milliseconds(20)),
        b_len.max(TimeDelta::milliseconds(20)),
    );
    let mut steps = 0;
    while let (Some(&x), Some(&y)) = (xs.peek(), ys.peek()) {
        steps += 1;
        if steps > MAX_CHECKED {
            return None;
        }
        if x < y + b_len && y < x + a_len {
            return Some(x.max(y));
        }
        if x + a_len <= y + b_len {
            xs.next();
        } else {
            ys.next();
        }
    }
    None
}

/// Other campaigns that air on some of the same clusters at overlapping times.
async fn conflicts(state: &AppState, id: &str, v: &Validated) -> Result<Vec<Conflict>, ApiError> {
    let mine = cluster_set(state, &v.targets).await?;
    let my_len = airing_length(
        v.relay.as_ref(),
        &v.audio,
        v.repeat,
        state.config.audio.gap_ms,
    );
    let now = Utc::now();
    let mut out = Vec::new();
    for other in state.store.campaigns().await? {
        if other.id == id || other.paused {
            continue;
        }
        let Ok(schedule) = stored_schedule(&other, &state.config.schedule.timezone) else {
            continue;
        };
        let targets: Targets = serde_json::from_str(&other.targets).map_err(ApiError::internal)?;
        let shared = cluster_set(state, &targets)
            .await?
            .intersection(&mine)
            .count();
        if shared == 0 {
            continue;
        }
        let ids: Vec<String> =
            serde_json::from_str(&other.audio_ids).map_err(ApiError::internal)?;
        let mut audio = Vec::new();
        for a in &ids {
            if let Ok(row) = state.store.audio(a).await {
                audio.push(row);
            }
        }
        let len = airing_length(
            stored_relay(&other).as_ref(),
            &audio,
            other.repeat.max(1) as u32,
            state.config.audio.gap_ms,
        );
        if let Some(at) = first_overlap(&v.schedule, my_len, &schedule, len, now) {
            let theirs = parse_priority_str(&other.priority);
            out.push(Conflict {
                campaign_id: other.id,
                title: other.title,
                priority: other.priority,
                shared_clusters: shared,
                first_overlap: stamp(at),
                effect: match v.priority.cmp(&theirs) {
                    std::cmp::Ordering::Equal => "queues",
                    std::cmp::Ordering::Greater => "cuts_in",
                    std::cmp::Ordering::Less => "is_cut_in",
                }
                .into(),
            });
        }
    }
    Ok(out)
}

/// Creates a campaign. It waits for approval (`pending`) unless the config turns
/// approval off; the answer lists overlapping campaigns.
#[utoipa::path(post, path = "/api/v1/campaigns", tag = "campaigns", security(("bearer" = [])),
    request_body = CreateCampaign,
    responses((status = 201, body = Campaign), (status = 422, body = Problem)))]
async fn create_campaign(
    State(state): State<AppState>,
    Extension(principal): Extension<Principal>,
    JsonBody(body): JsonBody<CreateCampaign>,
) -> Result<impl IntoResponse, ApiError> {
    require_targets(&state, &principal, &body.targets).await?;
    let v = validate(
        &state,
        Draft {
            title: &body.title,
            topic: &body.topic,
            audio_ids: &body.audio_ids,
            relay: body.relay.as_ref(),
            targets: &body.targets,
            spec: &body.schedule,
            priority: body.priority.as_deref(),
            repeat: body.repeat,
            on_interrupt: body.on_interrupt,
        },
    )
    .await?;
    let now = now_rfc3339();
    let approved = !state.config.schedule.approval_required;
    let row = CampaignRow {
        id: uuid::Uuid::new_v4().to_string(),
        title: v.title.clone(),
        topic: v.topic.clone(),
        audio_ids: serde_json::to_string(&v.audio_ids).map_err(ApiError::internal)?,
        targets: serde_json::to_string(&v.targets).map_err(ApiError::internal)?,
        schedule: serde_json::to_string(&v.spec).map_err(ApiError::internal)?,
        priority: v.priority.as_str().into(),
        repeat: i64::from(v.repeat),
        on_interrupt: v.on_interrupt.as_str().into(),
        approval: if approved {
            approval::APPROVED
        } else {
            approval::PENDING
        }
        .into(),
        approved_at: approved.then(|| now.clone()),
        paused: false,
        source: "api".into(),
        source_path: None,
        created_at: now.clone(),
        updated_at: now.clone(),
        // Nothing before its creation is owed.
        last_planned_at: now,
        relay: v
            .relay
            .as_ref()
            .map(serde_json::to_string)
            .transpose()
            .map_err(ApiError::internal)?,
    };
    let conflicts = conflicts(&state, &row.id, &v).await?;
    state.store.insert_campaign(&row).await?;
    tracing::info!(campaign = %row.id, approval = %row.approval, "campaign created");
    state.calendar.notify_one();
    if approved {
        crate::calendar::warm_up(state.clone(), row.clone());
    }
    audit(
        &state,
        &principal,
        "campaign.create",
        Some(&row.id),
        Some(&row.title),
    )
    .await?;
    let location = format!("/api/v1/campaigns/{}", row.id);
    Ok((
        StatusCode::CREATED,
        [(header::LOCATION, location)],
        Json(view(&state, row, Some(conflicts))?),
    ))
}

/// Every campaign.
#[utoipa::path(get, path = "/api/v1/campaigns", tag = "campaigns", security(("bearer" = [])),
    responses((status = 200, body = [Campaign])))]
async fn list_campaigns(
    State(state): State<AppState>,
    Extension(principal): Extension<Principal>,
) -> Result<Json<Vec<Campaign>>, ApiError> {
    let mut out = Vec::new();
    for row in state.store.campaigns().await? {
        // Only the campaigns wholly in the caller's scope.
        if require_campaign(&state, &principal, &row).await.is_ok() {
            out.push(view(&state, row, None)?);
        }
    }
    Ok(Json(out))
}

async fn find(state: &AppState, id: &str) -> Result<CampaignRow, ApiError> {
    state.store.campaign(id).await.map_err(|e| match e {
        StoreError::NotFound => ApiError::not_found("campaign", id),
        other => other.into(),
    })
}

/// Pauses or resumes a campaign: a paused one's recorded airings are withdrawn; a resumed
/// one owes nothing for the time it was paused.
async fn set_paused(state: &AppState, row: &mut CampaignRow, paused: bool) -> Result<(), ApiError> {
    if row.paused == paused {
        return Ok(());
    }
    row.paused = paused;
    row.updated_at = now_rfc3339();
    state.store.update_campaign(row).await?;
    if paused {
        crate::calendar::withdraw(state, &row.id, "the campaign was paused").await?;
    } else {
        state.store.advance_cursor(&row.id, &now_rfc3339()).await?;
    }
    tracing::info!(campaign = %row.id, paused, "campaign paused or resumed");
    state.calendar.notify_one();
    Ok(())
}

fn writable(row: &CampaignRow) -> Result<(), ApiError> {
    if row.source == "file" {
        return Err(ApiError::Conflict(format!(
            "campaign `{}` comes from {}; edit that file and send SIGHUP",
            row.id,
            row.source_path.as_deref().unwrap_or("a schedule file")
        )));
    }
    Ok(())
}

/// One campaign with its next occurrences.
#[utoipa::path(get, path = "/api/v1/campaigns/{id}", tag = "campaigns", security(("bearer" = [])),
    params(("id" = String, Path)),
    responses((status = 200, body = Campaign), (status = 404, body = Problem)))]
async fn get_campaign(
    State(state): State<AppState>,
    Extension(principal): Extension<Principal>,
    Path(id): Path<String>,
) -> Result<Json<Campaign>, ApiError> {
    let row = find(&state, &id).await?;
    require_campaign(&state, &principal, &row).await?;
    view(&state, row, None).map(Json)
}

/// 403 unless everything the campaign targets lies in the caller's scope.
async fn require_campaign(
    state: &AppState,
    principal: &Principal,
    row: &CampaignRow,
) -> Result<(), ApiError> {
    let targets: Targets = serde_json::from_str(&row.targets).map_err(ApiError::internal)?;
    require_targets(state, principal, &targets).await
}

/// Edits, pauses or resumes a campaign.
#[utoipa::path(patch, path = "/api/v1/campaigns/{id}", tag = "campaigns", security(("bearer" = [])),
    params(("id" = String, Path)), request_body = PatchCampaign,
    responses((status = 200, body = Campaign), (status = 404, body = Problem),
              (status = 409, body = Problem), (status = 422, body = Problem)))]
async fn patch_campaign(
    State(state): State<AppState>,
    Extension(principal): Extension<Principal>,
    Path(id): Path<String>,
    JsonBody(patch): JsonBody<PatchCampaign>,
) -> Result<Json<Campaign>, ApiError> {
    let mut row = find(&state, &id).await?;
    require_campaign(&state, &principal, &row).await?;
    if let Some(targets) = &patch.targets {
        require_targets(&state, &principal, targets).await?;
    }
    writable(&row)?;
    let only_pausing = patch.title.is_none()
        && patch.topic.is_none()
        && patch.audio_ids.is_none()
        && patch.relay.is_none()
        && patch.targets.is_none()
        && patch.schedule.is_none()
        && patch.priority.is_none()
        && patch.repeat.is_none()
        && patch.on_interrupt.is_none();
    if only_pausing {
        // Pausing or resuming changes nothing that was approved: no re-validation (an
        // announcement deleted meanwhile must not stop anyone from pausing).
        if let Some(paused) = patch.paused {
            set_paused(&state, &mut row, paused).await?;
        }
        return view(&state, row, None).map(Json);
    }
    let was_paused = row.paused;
    // A new programme replaces the old one whole: announcements or a relay.
    let (audio_ids, relay): (Vec<String>, Option<RelaySpec>) = match (patch.audio_ids, patch.relay)
    {
        (Some(ids), relay) => (ids, relay),
        (None, Some(relay)) => (Vec::new(), Some(relay)),
        (None, None) => (
            serde_json::from_str(&row.audio_ids).map_err(ApiError::internal)?,
            stored_relay(&row),
        ),
    };
    let targets: Targets = match patch.targets {
        Some(t) => t,
        None => serde_json::from_str(&row.targets).map_err(ApiError::internal)?,
    };
    let spec: ScheduleSpec = match patch.schedule {
        Some(s) => s,
        None => serde_json::from_str(&row.schedule).map_err(ApiError::internal)?,
    };
    let on_interrupt = match patch.on_interrupt {
        Some(p) => p,
        None => serde_json::from_value(serde_json::Value::String(row.on_interrupt.clone()))
            .map_err(ApiError::internal)?,
    };
    let v = validate(
        &state,
        Draft {
            title: patch.title.as_deref().unwrap_or(&row.title),
            topic: patch.topic.as_deref().unwrap_or(&row.topic),
            audio_ids: &audio_ids,
            relay: relay.as_ref(),
            targets: &targets,
            spec: &spec,
            priority: Some(patch.priority.as_deref().unwrap_or(&row.priority)),
            repeat: Some(patch.repeat.unwrap_or(row.repeat.max(1) as u32)),
            on_interrupt: Some(on_interrupt),
        },
    )
    .await?;
    let new_audio = serde_json::to_string(&v.audio_ids).map_err(ApiError::internal)?;
    let new_targets = serde_json::to_string(&v.targets).map_err(ApiError::internal)?;
    let new_schedule = serde_json::to_string(&v.spec).map_err(ApiError::internal)?;
    let new_relay = v
        .relay
        .as_ref()
        .map(serde_json::to_string)
        .transpose()
        .map_err(ApiError::internal)?;
    // What airs, where, when, how often and over what was approved; a change to any of
    // them needs approval again.
    let airing_changed = new_audio != row.audio_ids
        || new_relay != row.relay
        || new_targets != row.targets
        || new_schedule != row.schedule
        || v.priority.as_str() != row.priority
        || i64::from(v.repeat) != row.repeat
        || v.on_interrupt.as_str() != row.on_interrupt;
    let reapprove = state.config.schedule.approval_required && airing_changed;
    if reapprove && row.approval == approval::APPROVED {
        row.approval = approval::PENDING.into();
        row.approved_at = None;
    }
    row.title = v.title.clone();
    row.topic = v.topic.clone();
    row.audio_ids = new_audio;
    row.relay = new_relay;
    row.targets = new_targets;
    row.schedule = new_schedule;
    row.priority = v.priority.as_str().into();
    row.repeat = i64::from(v.repeat);
    row.on_interrupt = v.on_interrupt.as_str().into();
    if let Some(paused) = patch.paused {
        row.paused = paused;
    }
    row.updated_at = now_rfc3339();
    let conflicts = conflicts(&state, &row.id, &v).await?;
    state.store.update_campaign(&row).await?;
    tracing::info!(campaign = %row.id, approval = %row.approval, paused = row.paused, "campaign edited");
    if airing_changed || row.paused || row.approval != approval::APPROVED {
        // Airings recorded ahead were for the old version.
        crate::calendar::withdraw(&state, &row.id, "the campaign was changed").await?;
    }
    if was_paused && !row.paused {
        state.store.advance_cursor(&row.id, &now_rfc3339()).await?;
    }
    state.calendar.notify_one();
    audit(
        &state,
        &principal,
        "campaign.update",
        Some(&row.id),
        Some(&row.approval),
    )
    .await?;
    view(&state, row, Some(conflicts)).map(Json)
}

/// Removes a campaign; airings already in the as-run log stay.
#[utoipa::path(delete, path = "/api/v1/campaigns/{id}", tag = "campaigns", security(("bearer" = [])),
    params(("id" = String, Path)),
    responses((status = 204), (status = 404, body = Problem), (status = 409, body = Problem)))]
async fn delete_campaign(
    State(state): State<AppState>,
    Extension(principal): Extension<Principal>,
    Path(id): Path<String>,
) -> Result<StatusCode, ApiError> {
    let row = find(&state, &id).await?;
    require_campaign(&state, &principal, &row).await?;
    writable(&row)?;
    state.store.delete_campaign(&id).await?;
    audit(
        &state,
        &principal,
        "campaign.delete",
        Some(&id),
        Some(&row.title),
    )
    .await?;
    crate::calendar::withdraw(&state, &id, "the campaign was removed").await?;
    state.calendar.notify_one();
    Ok(StatusCode::NO_CONTENT)
}

/// Approves a campaign so that it airs. Approving an approved campaign changes nothing.
#[utoipa::path(post, path = "/api/v1/campaigns/{id}/approve", tag = "campaigns", security(("bearer" = [])),
    params(("id" = String, Path)),
    responses((status = 200, body = Campaign), (status = 404, body = Problem)))]
async fn approve_campaign(
    State(state): State<AppState>,
    Extension(principal): Extension<Principal>,
    Path(id): Path<String>,
) -> Result<Json<Campaign>, ApiError> {
    let mut row = find(&state, &id).await?;
    require_campaign(&state, &principal, &row).await?;
    if !principal.can_approve {
        return Err(ApiError::Forbidden(
            "you do not have the approve right".into(),
        ));
    }
    if row.approval != approval::APPROVED {
        row.approval = approval::APPROVED.into();
        row.approved_at = Some(now_rfc3339());
        row.updated_at = now_rfc3339();
        state.store.update_campaign(&row).await?;
        // Owes nothing for the time it waited for approval.
        state.store.advance_cursor(&row.id, &now_rfc3339()).await?;
        tracing::info!(campaign = %row.id, "campaign approved");
        audit(
            &state,
            &principal,
            "campaign.approve",
            Some(&row.id),
            Some(&row.title),
        )
        .await?;
        state.calendar.notify_one();
        crate::calendar::warm_up(state.clone(), row.clone());
    }
    view(&state, row, None).map(Json)
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
struct Window {
    /// RFC 3339 (default: now).
    from: Option<String>,
    /// RFC 3339 (default: 7 days after `from`).
    to: Option<String>,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct Occurrence {
    /// UTC.
    at: String,
    /// The same instant in the campaign's timezone.
    local: String,
    /// Falls in the configured quiet hours (it will not air).
    in_quiet_hours: bool,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct Occurrences {
    campaign_id: String,
    timezone: String,
    from: String,
    to: String,
    /// At most 1000.
    occurrences: Vec<Occurrence>,
}

fn parse_instant(field: &str, raw: &str) -> Result<DateTime<Utc>, ApiError> {
    DateTime::parse_from_rfc3339(raw)
        .map(|t| t.with_timezone(&Utc))
        .map_err(|e| ApiError::field(field, format!("`{raw}` is not an RFC 3339 time ({e})")))
}

/// The planned airings of a campaign in a window.
#[utoipa::path(get, path = "/api/v1/campaigns/{id}/occurrences", tag = "campaigns", security(("bearer" = [])),
    params(("id" = String, Path), Window),
    responses((status = 200, body = Occurrences), (status = 404, body = Problem),
              (status = 422, body = Problem)))]
async fn campaign_occurrences(
    State(state): State<AppState>,
    Extension(principal): Extension<Principal>,
    Path(id): Path<String>,
    Query(window): Query<Window>,
) -> Result<Json<Occurrences>, ApiError> {
    let row = find(&state, &id).await?;
    require_campaign(&state, &principal, &row).await?;
    let from = match &window.from {
        Some(raw) => parse_instant("from", raw)?,
        None => Utc::now(),
    };
    let to = match &window.to {
        Some(raw) => parse_instant("to", raw)?,
        None => from + TimeDelta::days(7),
    };
    if to <= from {
        return Err(ApiError::field("to", "must be after `from`"));
    }
    let schedule =
        stored_schedule(&row, &state.config.schedule.timezone).map_err(ApiError::internal)?;
    let quiet = state.config.quiet_hours();
    let site_tz = state.config.timezone();
    let occurrences = schedule
        .occurrences(from, to, MAX_OCCURRENCES)
        .into_iter()
        .map(|t| {
            let local = t.with_timezone(&schedule.timezone);
            Occurrence {
                at: stamp(t),
                local: local.to_rfc3339_opts(chrono::SecondsFormat::Secs, false),
                in_quiet_hours: quiet
                    .as_ref()
                    .is_some_and(|q| q.contains(t.with_timezone(&site_tz).time())),
            }
        })
        .collect();
    Ok(Json(Occurrences {
        campaign_id: row.id,
        timezone: schedule.timezone.name().to_string(),
        from: stamp(from),
        to: stamp(to),
        occurrences,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    fn schedule(rule: &str) -> Schedule {
        Schedule::new(
            vec![Cron::parse(rule).unwrap()],
            chrono_tz::Asia::Ho_Chi_Minh,
            None,
            None,
        )
        .unwrap()
    }

    fn at(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
    }

    #[test]
    fn a_programme_that_runs_into_quiet_hours_is_caught_not_only_its_start() {
        let quiet = QuietHours::parse("22:00-05:00").unwrap().unwrap();
        let tz = chrono_tz::Asia::Ho_Chi_Minh;
        // 21:55 local (+07:00) for ten minutes crosses 22:00.
        let start = at("2026-12-01T14:55:00Z");
        assert!(airs_in_quiet_hours(
            &quiet,
            tz,
            start,
            TimeDelta::minutes(10)
        ));
        assert!(!airs_in_quiet_hours(
            &quiet,
            tz,
            start,
            TimeDelta::minutes(4)
        ));
        // 05:00 sharp is already outside.
        assert!(!airs_in_quiet_hours(
            &quiet,
            tz,
            at("2026-12-01T22:00:00Z"),
            TimeDelta::minutes(1)
        ));
    }

    #[test]
    fn overlapping_airings_are_found_and_back_to_back_ones_are_not() {
        let now = at("2026-12-01T00:00:00Z");
        let six = schedule("0 6 * * *");
        let six_oh_two = schedule("2 6 * * *");
        let first = first_overlap(
            &six,
            TimeDelta::minutes(3),
            &six_oh_two,
            TimeDelta::minutes(1),
            now,
        );
        // 06:02 local on 1 December is 23:02 UTC on 1 December.
        assert_eq!(first, Some(at("2026-12-01T23:02:00Z")));
        assert_eq!(
            first_overlap(
                &six,
                TimeDelta::minutes(2),
                &six_oh_two,
                TimeDelta::minutes(1),
                now
            ),
            None
        );
    }

    #[test]
    fn a_programme_lasts_its_items_and_gaps_repeat_times() {
        let row = |ms| AudioRow {
            id: "a".into(),
            title: "t".into(),
            topic: None,
            original_name: None,
            file_name: "f".into(),
            format: "wav".into(),
            codec: "pcm".into(),
            sample_rate: 8000,
            channels: 1,
            duration_ms: ms,
            loudness_lufs: None,
            true_peak_dbtp: None,
            size_bytes: 1,
            created_at: String::new(),
        };
        let audio = [row(10_000), row(5_000)];
        assert_eq!(
            programme_length(&audio, 2, 500),
            TimeDelta::milliseconds(31_500)
        );
    }

    #[test]
    fn priorities_and_emergencies_are_told_apart() {
        let mut errors = Vec::new();
        assert_eq!(parse_priority(None, &mut errors), Some(Priority::Scheduled));
        assert_eq!(parse_priority(Some("emergency"), &mut errors), None);
        assert_eq!(errors[0].field, "priority");
    }

    #[test]
    fn every_bad_part_of_a_schedule_is_named() {
        let mut errors = Vec::new();
        let spec = ScheduleSpec {
            cron: vec!["0 6 * * 1-5".into(), "61 * * * *".into()],
            timezone: Some("Mars/Olympus".into()),
            starts_on: Some("2026-13-01".into()),
            ends_on: None,
        };
        assert!(parse_schedule(&spec, "Asia/Ho_Chi_Minh", &mut errors).is_none());
        let fields: BTreeMap<_, _> = errors.iter().map(|e| (e.field.as_str(), ())).collect();
        assert!(fields.contains_key("schedule.cron[1]"), "{errors:?}");
        assert!(fields.contains_key("schedule.timezone"));
        assert!(fields.contains_key("schedule.starts_on"));
    }
}
