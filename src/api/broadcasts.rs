//! `/api/v1/broadcasts`: play now, follow, cancel, and the as-run log. A broadcast is
//! stored (queued) before it is acknowledged; its audio is prepared off the reactor and
//! handed to the engine, whose events move it to playing and done.

use axum::extract::{Path, State};
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use axum::{Extension, Json};
use serde::{Deserialize, Serialize};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::AppState;
use super::access::{Principal, Role, audit, require_broadcast, require_targets};
use super::airing::{Airing, RelayAiring, lookup_audio, prepare_and_play, resolve_clusters};
use super::areas::validation;
use super::problem::Query;
use super::problem::{ApiError, FieldError, JsonBody, Problem};
use crate::playout::{Interruption, Priority};
use crate::relay::{RelaySpec, RelayStatus};
use crate::store::RelayEventRow;
use crate::store::{
    BroadcastClusterRow, BroadcastRow, ClusterRow, StoreError, now_rfc3339, status,
};

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(create_broadcast, list_broadcasts))
        .routes(routes!(get_broadcast))
        .routes(routes!(cancel_broadcast))
}

/// Most audio items one broadcast may chain.
const MAX_ITEMS: usize = 50;
/// Most times a broadcast may repeat.
const MAX_REPEAT: u32 = 100;

#[derive(Debug, Clone, Default, Deserialize, Serialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Targets {
    /// Area codes: every enabled cluster in each area's subtree.
    #[serde(default)]
    pub areas: Vec<String>,
    /// Cluster ids.
    #[serde(default)]
    pub clusters: Vec<String>,
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateBroadcast {
    /// Announcements aired back to back, in this order.
    #[serde(default)]
    audio_ids: Vec<String>,
    /// A live stream relayed for `duration_s`, in place of `audio_ids`.
    relay: Option<RelaySpec>,
    targets: Targets,
    /// `scheduled` (default), `background`, `priority` or `live`. Emergencies have their
    /// own route.
    priority: Option<String>,
    /// Times the whole playlist airs (1-100, default 1).
    repeat: Option<u32>,
    /// When a higher priority cuts in: `restart` (default) airs it again from the start
    /// afterwards, `resume` carries on where it stopped, `drop` gives up on that cluster.
    #[schema(value_type = Option<String>)]
    on_interrupt: Option<Interruption>,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct Accepted {
    id: String,
    status: String,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct ClusterRun {
    pub(crate) id: String,
    name: String,
    area_code: String,
    pub(crate) status: String,
    packets_sent: u64,
    started_at: Option<String>,
    ended_at: Option<String>,
    /// Each time a higher priority cut in on this cluster.
    interruptions: Vec<InterruptionView>,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct InterruptionView {
    at: String,
    /// The broadcast that cut in.
    by: String,
    /// restart, resume or drop.
    policy: String,
    /// How far into the programme it was, in ms.
    at_ms: u64,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct Broadcast {
    id: String,
    /// queued, playing, done, interrupted, cancelled or failed; for planned airings also
    /// late (aired after its instant) or missed.
    status: String,
    priority: String,
    repeat: u32,
    on_interrupt: String,
    audio_ids: Vec<String>,
    targets: Targets,
    /// Why it failed or was interrupted.
    detail: Option<String>,
    created_at: String,
    /// The campaign this airing belongs to (absent for play-now broadcasts).
    #[serde(skip_serializing_if = "Option::is_none")]
    campaign_id: Option<String>,
    /// The instant the calendar planned it for.
    #[serde(skip_serializing_if = "Option::is_none")]
    planned_at: Option<String>,
    topic: Option<String>,
    started_at: Option<String>,
    ended_at: Option<String>,
    pub(crate) clusters: Vec<ClusterRun>,
    /// For a relayed stream: what was asked, what it is doing now and what happened.
    #[serde(skip_serializing_if = "Option::is_none")]
    relay: Option<RelayView>,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct RelayView {
    #[serde(flatten)]
    spec: RelaySpec,
    /// While it runs.
    #[serde(skip_serializing_if = "Option::is_none")]
    status: Option<RelayStatus>,
    /// Connected, faults, fallback, recovery and end, oldest first.
    events: Vec<RelayEventRow>,
}

/// Checks a relay request: its URL and window, its fallback clip, and that it comes
/// alone (a relay is the whole programme).
pub(crate) async fn check_relay(
    state: &AppState,
    relay: &RelaySpec,
    audio_ids: &[String],
    repeat: Option<u32>,
    errors: &mut Vec<FieldError>,
) -> Result<(), ApiError> {
    if !audio_ids.is_empty() {
        errors.push(FieldError::new(
            "audio_ids",
            "give either audio_ids or a relay, not both",
        ));
    }
    if repeat.is_some_and(|r| r != 1) {
        errors.push(FieldError::new(
            "repeat",
            "a relay airs once, for duration_s",
        ));
    }
    for (field, message) in relay.problems(&state.config.relay) {
        errors.push(FieldError::new(format!("relay.{field}"), message));
    }
    if let Some(id) = &relay.fallback_audio_id {
        match state.store.audio(id).await {
            Ok(_) => {}
            Err(StoreError::NotFound) => errors.push(FieldError::new(
                "relay.fallback_audio_id",
                format!("audio `{id}` does not exist"),
            )),
            Err(e) => return Err(e.into()),
        }
    }
    Ok(())
}

/// Plays announcements now on the target clusters.
#[utoipa::path(post, path = "/api/v1/broadcasts", tag = "broadcasts", security(("bearer" = [])),
    request_body = CreateBroadcast,
    responses((status = 202, body = Accepted), (status = 422, body = Problem),
              (status = 409, body = Problem, description = "quiet hours: only emergencies air")))]
async fn create_broadcast(
    State(state): State<AppState>,
    Extension(principal): Extension<Principal>,
    JsonBody(body): JsonBody<CreateBroadcast>,
) -> Result<impl IntoResponse, ApiError> {
    require_targets(&state, &principal, &body.targets).await?;
    let mut errors = Vec::new();

    let priority = match body.priority.as_deref().unwrap_or("scheduled") {
        "scheduled" => Some(Priority::Scheduled),
        "background" => Some(Priority::Background),
        "priority" => Some(Priority::Priority),
        "live" => Some(Priority::Live),
        "emergency" => {
            errors.push(FieldError::new(
                "priority".to_string(),
                "emergencies go through POST /api/v1/emergency".to_string(),
            ));
            None
        }
        other => {
            errors.push(FieldError::new(
                "priority".to_string(),
                format!("`{other}` is not one of: scheduled, background, priority, live"),
            ));
            None
        }
    };
    let on_interrupt = body.on_interrupt.unwrap_or_default();
    let repeat = body.repeat.unwrap_or(1);
    if !(1..=MAX_REPEAT).contains(&repeat) {
        errors.push(FieldError::new(
            "repeat",
            format!("must be between 1 and {MAX_REPEAT}"),
        ));
    }
    if let Some(relay) = &body.relay {
        check_relay(&state, relay, &body.audio_ids, body.repeat, &mut errors).await?;
    } else if body.audio_ids.is_empty() || body.audio_ids.len() > MAX_ITEMS {
        errors.push(FieldError::new(
            "audio_ids".to_string(),
            format!("must list 1 to {MAX_ITEMS} audio ids (or give a relay)"),
        ));
    }
    let audio = lookup_audio(&state, &body.audio_ids, MAX_ITEMS, &mut errors).await?;
    if body.targets.areas.is_empty() && body.targets.clusters.is_empty() {
        errors.push(FieldError::new(
            "targets".to_string(),
            "name at least one area or cluster".to_string(),
        ));
    }
    let mut clusters = resolve_clusters(&state, &body.targets, &mut errors).await?;
    clusters.retain(|_, c| c.enabled);
    if errors.is_empty() && clusters.is_empty() {
        errors.push(FieldError::new(
            "targets".to_string(),
            "no enabled cluster in the targets".to_string(),
        ));
    }
    let Some(priority) = priority.filter(|_| errors.is_empty()) else {
        return Err(validation(errors));
    };
    if let Some(quiet) = state.config.quiet_hours() {
        let local = chrono::Utc::now().with_timezone(&state.config.timezone());
        if quiet.contains(local.time()) {
            return Err(ApiError::Conflict(format!(
                "it is quiet hours ({quiet}, {}): only emergencies air now",
                state.config.schedule.timezone
            )));
        }
    }

    let id = uuid::Uuid::new_v4().to_string();
    let row = BroadcastRow {
        id: id.clone(),
        status: status::QUEUED.to_string(),
        priority: priority.as_str().to_string(),
        repeat: i64::from(repeat),
        audio_ids: serde_json::to_string(&body.audio_ids).map_err(ApiError::internal)?,
        targets: serde_json::to_string(&body.targets).map_err(ApiError::internal)?,
        detail: None,
        created_at: now_rfc3339(),
        started_at: None,
        ended_at: None,
        on_interrupt: on_interrupt.as_str().into(),
        campaign_id: None,
        planned_at: None,
        topic: audio
            .first()
            .and_then(|a| a.topic.clone())
            .or_else(|| body.relay.as_ref().map(|_| "relay".to_string())),
        late: false,
        relay: body
            .relay
            .as_ref()
            .map(serde_json::to_string)
            .transpose()
            .map_err(ApiError::internal)?,
    };
    let runs: Vec<BroadcastClusterRow> = clusters
        .values()
        .map(|c| BroadcastClusterRow {
            broadcast_id: id.clone(),
            cluster_id: c.id.clone(),
            cluster_name: c.name.clone(),
            area_code: c.area_code.clone(),
            status: status::QUEUED.to_string(),
            packets_sent: 0,
            started_at: None,
            ended_at: None,
            ptime_ms: c.ptime_ms,
        })
        .collect();
    state.store.insert_broadcast(&row, &runs).await?;
    tracing::info!(broadcast = %id, clusters = runs.len(), "broadcast queued");

    let clusters: Vec<ClusterRow> = clusters.into_values().collect();
    let detail = serde_json::to_string(&body.targets).map_err(ApiError::internal)?;
    audit(
        &state,
        &principal,
        "broadcast.start",
        Some(&id),
        Some(&detail),
    )
    .await?;
    tokio::spawn(prepare_and_play(
        state,
        id.clone(),
        Airing {
            priority,
            on_interrupt,
            repeat,
            audio,
            relay: body.relay.map(|spec| RelayAiring {
                spec,
                window_start: None,
            }),
            clusters,
            at: None,
        },
    ));

    Ok((
        StatusCode::ACCEPTED,
        [(header::LOCATION, format!("/api/v1/broadcasts/{id}"))],
        Json(Accepted {
            id,
            status: status::QUEUED.to_string(),
        }),
    ))
}

pub(crate) async fn view(state: &AppState, row: BroadcastRow) -> Result<Broadcast, ApiError> {
    let runs = state.store.broadcast_clusters(&row.id).await?;
    let interruptions = state.store.interruptions(&row.id).await?;
    let clusters = runs
        .into_iter()
        .map(|r| ClusterRun {
            packets_sent: if r.status == status::PLAYING {
                state
                    .engine
                    .packets_sent(&row.id, &r.cluster_id)
                    .unwrap_or(r.packets_sent as u64)
            } else {
                r.packets_sent as u64
            },
            interruptions: interruptions
                .iter()
                .filter(|i| i.cluster_id == r.cluster_id)
                .map(|i| InterruptionView {
                    at: i.at.clone(),
                    by: i.by_broadcast.clone(),
                    policy: i.policy.clone(),
                    at_ms: i.at_ms.max(0) as u64,
                })
                .collect(),
            id: r.cluster_id,
            name: r.cluster_name,
            area_code: r.area_code,
            status: r.status,
            started_at: r.started_at,
            ended_at: r.ended_at,
        })
        .collect();
    let relay = match row.relay.as_deref() {
        Some(json) => Some(RelayView {
            spec: serde_json::from_str(json).map_err(ApiError::internal)?,
            status: state.relays.status(&row.id),
            events: state.store.relay_events(&row.id).await?,
        }),
        None => None,
    };
    Ok(Broadcast {
        relay,
        audio_ids: serde_json::from_str(&row.audio_ids).map_err(ApiError::internal)?,
        targets: serde_json::from_str(&row.targets).map_err(ApiError::internal)?,
        id: row.id,
        status: row.status,
        priority: row.priority,
        repeat: row.repeat as u32,
        on_interrupt: row.on_interrupt,
        detail: row.detail,
        created_at: row.created_at,
        campaign_id: row.campaign_id,
        planned_at: row.planned_at,
        topic: row.topic,
        started_at: row.started_at,
        ended_at: row.ended_at,
        clusters,
    })
}

async fn find(state: &AppState, id: &str) -> Result<BroadcastRow, ApiError> {
    state.store.broadcast(id).await.map_err(|e| match e {
        StoreError::NotFound => ApiError::not_found("broadcast", id),
        other => other.into(),
    })
}

/// A broadcast and how it went on each cluster.
#[utoipa::path(get, path = "/api/v1/broadcasts/{id}", tag = "broadcasts", security(("bearer" = [])),
    params(("id" = String, Path)),
    responses((status = 200, body = Broadcast), (status = 404, body = Problem)))]
async fn get_broadcast(
    State(state): State<AppState>,
    Extension(principal): Extension<Principal>,
    Path(id): Path<String>,
) -> Result<Json<Broadcast>, ApiError> {
    let row = find(&state, &id).await?;
    require_broadcast(&state, &principal, &id).await?;
    view(&state, row).await.map(Json)
}

/// Stops a broadcast on every cluster at the next tick.
#[utoipa::path(post, path = "/api/v1/broadcasts/{id}/cancel", tag = "broadcasts", security(("bearer" = [])),
    params(("id" = String, Path)),
    responses((status = 200, body = Broadcast), (status = 404, body = Problem),
              (status = 409, body = Problem, description = "already over")))]
async fn cancel_broadcast(
    State(state): State<AppState>,
    Extension(principal): Extension<Principal>,
    Path(id): Path<String>,
) -> Result<Json<Broadcast>, ApiError> {
    let row = find(&state, &id).await?;
    require_broadcast(&state, &principal, &id).await?;
    if row.priority == "emergency" {
        principal.require_role(&[Role::Admin, Role::Operator], "cancel an emergency")?;
    }
    if status::is_final(&row.status) {
        return Err(ApiError::Conflict(format!(
            "broadcast `{id}` is already {}",
            row.status
        )));
    }
    // Recorded first, so a cancel is never lost even if the engine is slow to act on it.
    state
        .store
        .set_broadcast_status(&id, status::CANCELLED, Some("cancelled by request"))
        .await?;
    state.engine.cancel(&id);
    state.relays.stop(&id);
    audit(&state, &principal, "broadcast.cancel", Some(&id), None).await?;
    let now = now_rfc3339();
    for run in state.store.broadcast_clusters(&id).await? {
        if !status::is_final(&run.status) {
            let sent = state.engine.packets_sent(&id, &run.cluster_id);
            state
                .store
                .set_broadcast_cluster_status(&id, &run.cluster_id, status::CANCELLED, sent, &now)
                .await?;
        }
    }
    tracing::info!(broadcast = %id, "broadcast cancelled");
    let row = find(&state, &id).await?;
    view(&state, row).await.map(Json)
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
struct AsRunFilter {
    /// RFC 3339; broadcasts created at or after.
    from: Option<String>,
    /// RFC 3339; broadcasts created before.
    to: Option<String>,
    /// Only broadcasts that reached a cluster in this area's subtree.
    area: Option<String>,
}

pub(crate) fn parse_time(field: &str, value: Option<&str>) -> Result<Option<String>, ApiError> {
    value
        .map(|v| {
            chrono::DateTime::parse_from_rfc3339(v)
                .map(|t| {
                    t.with_timezone(&chrono::Utc)
                        .to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
                })
                .map_err(|e| ApiError::field(field, format!("`{v}` is not an RFC 3339 time ({e})")))
        })
        .transpose()
}

/// The as-run log, newest first (at most 1000).
#[utoipa::path(get, path = "/api/v1/broadcasts", tag = "broadcasts", security(("bearer" = [])),
    params(AsRunFilter),
    responses((status = 200, body = [Broadcast]), (status = 422, body = Problem)))]
async fn list_broadcasts(
    State(state): State<AppState>,
    Extension(principal): Extension<Principal>,
    Query(filter): Query<AsRunFilter>,
) -> Result<Json<Vec<Broadcast>>, ApiError> {
    let from = parse_time("from", filter.from.as_deref())?;
    let to = parse_time("to", filter.to.as_deref())?;
    let area = principal.list_area(filter.area.as_deref())?;
    let areas = match &area {
        Some(area) => {
            let codes = state.store.area_subtree(std::slice::from_ref(area)).await?;
            if codes.is_empty() {
                return Err(ApiError::field(
                    "area",
                    format!("area `{area}` does not exist"),
                ));
            }
            Some(codes)
        }
        None => None,
    };
    let rows = state
        .store
        .broadcasts(from.as_deref(), to.as_deref(), areas.as_deref())
        .await?;
    let mut out = Vec::with_capacity(rows.len());
    for row in rows {
        // A scoped caller sees only broadcasts wholly in its scope (as GET of one).
        if require_broadcast(&state, &principal, &row.id)
            .await
            .is_err()
        {
            continue;
        }
        out.push(view(&state, row).await?);
    }
    Ok(Json(out))
}
