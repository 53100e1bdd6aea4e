//! `POST /api/v1/schedule/preview`: what a schedule would plan, before anything is saved.
//! The dashboard's campaign builder turns days and times into cron and shows the next
//! occurrences from here, so the server's own calendar (timezone, daylight saving, date
//! window, quiet hours) is the one authority; the page never computes an instant itself.
//! It stores nothing and changes nothing, so it is not audited.

use axum::Json;
use axum::extract::State;
use chrono::{DateTime, TimeDelta, Utc};
use serde::{Deserialize, Serialize};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::AppState;
use super::airing::lookup_audio;
use super::areas::validation;
use super::campaigns::{ScheduleSpec, parse_schedule, programme_length, quiet_clashes};
use super::problem::{ApiError, FieldError, JsonBody, Problem};

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(preview_schedule))
}

/// Occurrences listed when the request does not say.
const DEFAULT_COUNT: u32 = 10;
/// Most occurrences one preview lists.
const MAX_COUNT: u32 = 100;
/// How far ahead occurrences are looked for: the horizon a campaign is checked over.
const CLASH_HORIZON_DAYS: i64 = 366;
/// Most audio ids whose length counts in the clash check (as for a campaign).
const MAX_AUDIO: usize = 50;

/// A schedule as a campaign would carry it, and how much of it to show.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PreviewRequest {
    /// POSIX cron rules, as in a campaign's `schedule.cron`.
    cron: Vec<String>,
    /// IANA timezone (default: the config's).
    timezone: Option<String>,
    /// First day (inclusive), `YYYY-MM-DD`.
    starts_on: Option<String>,
    /// Last day (inclusive), `YYYY-MM-DD`.
    ends_on: Option<String>,
    /// Occurrences to list (1-100, default 10).
    count: Option<u32>,
    /// List from this instant on (RFC 3339, default now).
    from: Option<String>,
    /// The announcements it would air: their length counts when checking quiet hours
    /// (a programme that starts at 21:58 and lasts five minutes runs into 22:00).
    audio_ids: Option<Vec<String>>,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct Preview {
    /// The rules, as read.
    cron: Vec<String>,
    /// The timezone they are read in.
    timezone: String,
    /// The next planned instants, RFC 3339 in `timezone`'s offset.
    next: Vec<String>,
    /// The site's quiet hours (`HH:MM-HH:MM`), absent when there are none.
    #[serde(skip_serializing_if = "Option::is_none")]
    quiet_hours: Option<String>,
    /// The first airings (up to 5, over the next year) that would run into quiet hours;
    /// a campaign with any is refused.
    quiet_hours_clash: Vec<String>,
}

/// Lists the next occurrences of a schedule and its clashes with quiet hours, without
/// saving anything.
#[utoipa::path(post, path = "/api/v1/schedule/preview", tag = "campaigns", security(("bearer" = [])),
    request_body = PreviewRequest,
    responses((status = 200, body = Preview), (status = 422, body = Problem)))]
async fn preview_schedule(
    State(state): State<AppState>,
    JsonBody(body): JsonBody<PreviewRequest>,
) -> Result<Json<Preview>, ApiError> {
    let mut errors = Vec::new();
    let spec = ScheduleSpec {
        cron: body.cron,
        timezone: body.timezone,
        starts_on: body.starts_on,
        ends_on: body.ends_on,
    };
    let schedule = parse_schedule(&spec, &state.config.schedule.timezone, &mut errors);
    // The campaign parser names fields under `schedule.`; here they are top-level.
    for e in &mut errors {
        if let Some(rest) = e.field.strip_prefix("schedule.") {
            e.field = rest.to_string();
        }
    }
    let count = body.count.unwrap_or(DEFAULT_COUNT);
    if !(1..=MAX_COUNT).contains(&count) {
        errors.push(FieldError::new(
            "count",
            format!("must be between 1 and {MAX_COUNT}"),
        ));
    }
    let from = match body.from.as_deref() {
        None => Some(Utc::now()),
        Some(raw) => DateTime::parse_from_rfc3339(raw)
            .map(|t| t.with_timezone(&Utc))
            .map_err(|e| {
                errors.push(FieldError::new(
                    "from",
                    format!("`{raw}` is not an RFC 3339 time ({e})"),
                ))
            })
            .ok(),
    };
    let ids = body.audio_ids.unwrap_or_default();
    if ids.len() > MAX_AUDIO {
        errors.push(FieldError::new(
            "audio_ids",
            format!("must list at most {MAX_AUDIO} audio ids"),
        ));
    }
    let audio = lookup_audio(&state, &ids, MAX_AUDIO, &mut errors).await?;
    let (Some(schedule), Some(from), true) = (schedule, from, errors.is_empty()) else {
        return Err(validation(errors));
    };
    let length = programme_length(&audio, 1, state.config.audio.gap_ms);
    // Walking a dense rule is CPU work: off the reactor.
    let next = {
        let schedule = schedule.clone();
        tokio::task::spawn_blocking(move || {
            schedule.occurrences(
                from,
                from + TimeDelta::days(CLASH_HORIZON_DAYS),
                count as usize,
            )
        })
        .await
        .map_err(ApiError::internal)?
    };
    // The same check that refuses a campaign, so the page warns of exactly that.
    let clashes = quiet_clashes(&state, &schedule, length, from).await?;
    let local = |t: &DateTime<Utc>| {
        t.with_timezone(&schedule.timezone)
            .to_rfc3339_opts(chrono::SecondsFormat::Secs, false)
    };
    Ok(Json(Preview {
        cron: schedule
            .cron
            .iter()
            .map(|c| c.as_str().to_string())
            .collect(),
        timezone: schedule.timezone.name().to_string(),
        next: next.iter().map(local).collect(),
        quiet_hours: state.config.quiet_hours().map(|q| q.to_string()),
        quiet_hours_clash: clashes.iter().map(local).collect(),
    }))
}
