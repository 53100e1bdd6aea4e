//! `/api/v1/emergency`: a district or province pushes one message to every cluster
//! below its areas, and it cuts in everywhere on the next tick, quiet hours included.
//! From JSON (an announcement in the library) or from a CAP 1.2 alert
//! (`Content-Type: application/cap+xml`). Every emergency, cancel and CAP alert is
//! recorded in the audit log with its source.

use std::collections::BTreeMap;

use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, Path, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::IntoResponse;
use axum::{Extension, Json};
use chrono::Utc;
use serde::{Deserialize, Serialize};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::AppState;
use super::access::{Principal, require_broadcast};
use super::airing::resolve_clusters;
use super::areas::validation;
use super::audio::{Upload, ingest_upload};
use super::broadcasts::{Broadcast, Targets, view as broadcast_view};
use super::problem::{ApiError, FieldError, Problem, parse_json};
use crate::cap::{self, Alert, MsgType, Status};
use crate::codec::Codec;
use crate::library::ClipRef;
use crate::media::Loudness;
use crate::playout::{Destination, Frames, Interruption, Priority, Target};
use crate::store::{
    AudioRow, AuditEntry, BroadcastClusterRow, BroadcastRow, CapAlertRow, ClusterRow, EmergencyRow,
    StoreError, now_rfc3339, status,
};

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(create_emergency, list_emergencies))
        .routes(routes!(get_emergency))
        .routes(routes!(cancel_emergency))
        // A CAP alert may embed its audio.
        .layer(DefaultBodyLimit::max(MAX_BODY))
}

/// Largest body: a CAP alert with a few minutes of embedded audio in base64.
const MAX_BODY: usize = 16 * 1024 * 1024;
/// Largest audio fetched from a CAP `<uri>`.
const MAX_FETCH: usize = 12 * 1024 * 1024;
const MAX_REPEAT: u32 = 10;
const MAX_INTERVAL_S: u32 = 600;
/// Who acts, until users and roles exist (the security work): the admin token.

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateEmergency {
    /// The announcement to air (after the attention tone, if configured).
    audio_id: String,
    /// Areas: every enabled cluster in their subtrees.
    targets: Targets,
    /// Times the message airs (1-10, default 1).
    repeat: Option<u32>,
    /// Seconds of silence between repeats (0-600, default 5).
    interval_s: Option<u32>,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct EmergencyAccepted {
    id: String,
    /// `queued` (it airs), `not_aired` (a CAP test, exercise or draft), `cancelled` (a
    /// CAP Cancel acted on what it references).
    status: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    detail: Option<String>,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct Emergency {
    /// `user` or `cap`.
    source: String,
    /// The user, or the CAP sender.
    actor: String,
    interval_s: i64,
    #[serde(skip_serializing_if = "Option::is_none")]
    event: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    cap_identifier: Option<String>,
    /// The broadcast: status overall and per cluster (`playing`, `done`, ... or
    /// `unreachable` for a cluster behind NAT with no current address).
    #[serde(flatten)]
    broadcast: Broadcast,
}

/// What airs, where, how often.
struct Plan {
    audio: Vec<AudioRow>,
    clusters: Vec<ClusterRow>,
    repeat: u32,
    interval_s: u32,
    targets: Targets,
}

fn is_cap(headers: &HeaderMap) -> bool {
    headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .is_some_and(|m| m.trim().eq_ignore_ascii_case("application/cap+xml"))
}

fn is_json(headers: &HeaderMap) -> bool {
    headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .is_some_and(|m| {
            let m = m.trim();
            m == "application/json" || m.ends_with("+json")
        })
}

/// Every enabled cluster below `areas`, naming unknown areas by `field`.
async fn clusters_below(
    state: &AppState,
    areas: &[String],
    field: &str,
    errors: &mut Vec<FieldError>,
) -> Result<Vec<ClusterRow>, ApiError> {
    if areas.is_empty() {
        errors.push(FieldError::new(field, "name at least one area"));
        return Ok(Vec::new());
    }
    let targets = Targets {
        areas: areas.to_vec(),
        clusters: Vec::new(),
    };
    let mut found = Vec::new();
    let clusters = resolve_clusters(state, &targets, &mut found).await?;
    for e in found {
        // `targets.areas[i]` from the resolver, under the caller's name.
        errors.push(FieldError::new(
            e.field.replacen("targets.areas", field, 1),
            e.message,
        ));
    }
    Ok(clusters.into_values().filter(|c| c.enabled).collect())
}

/// Pushes an emergency: JSON `{audio_id, targets: {areas}, repeat?, interval_s?}`, or a
/// CAP 1.2 alert with `Content-Type: application/cap+xml`. It cuts in on every targeted
/// cluster at the next tick, in quiet hours too.
#[utoipa::path(post, path = "/api/v1/emergency", tag = "emergency", security(("bearer" = [])),
    request_body(content = CreateEmergency, description = "JSON, or a CAP 1.2 alert as application/cap+xml"),
    responses((status = 202, body = EmergencyAccepted), (status = 415, body = Problem),
              (status = 422, body = Problem)))]
async fn create_emergency(
    State(state): State<AppState>,
    Extension(principal): Extension<Principal>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<impl IntoResponse, ApiError> {
    let accepted = if is_cap(&headers) {
        from_cap(&state, &principal, &body).await?
    } else if is_json(&headers) {
        from_json(&state, &principal, parse_json(&body)?).await?
    } else {
        return Err(ApiError::WrongContentType(
            "send JSON (application/json) or a CAP 1.2 alert (application/cap+xml)".into(),
        ));
    };
    let location = format!("/api/v1/emergency/{}", accepted.id);
    Ok((
        StatusCode::ACCEPTED,
        [(header::LOCATION, location)],
        Json(accepted),
    ))
}

async fn from_json(
    state: &AppState,
    principal: &Principal,
    body: CreateEmergency,
) -> Result<EmergencyAccepted, ApiError> {
    principal.require_areas(body.targets.areas.iter().map(String::as_str))?;
    let mut errors = Vec::new();
    let repeat = body.repeat.unwrap_or(1);
    if !(1..=MAX_REPEAT).contains(&repeat) {
        errors.push(FieldError::new(
            "repeat",
            format!("must be between 1 and {MAX_REPEAT}"),
        ));
    }
    let interval_s = body.interval_s.unwrap_or(5);
    if interval_s > MAX_INTERVAL_S {
        errors.push(FieldError::new(
            "interval_s",
            format!("must be at most {MAX_INTERVAL_S}"),
        ));
    }
    let audio = match state.store.audio(&body.audio_id).await {
        Ok(a) => Some(a),
        Err(StoreError::NotFound) => {
            errors.push(FieldError::new(
                "audio_id",
                format!("audio `{}` does not exist", body.audio_id),
            ));
            None
        }
        Err(e) => return Err(e.into()),
    };
    if !body.targets.clusters.is_empty() {
        errors.push(FieldError::new(
            "targets.clusters",
            "emergencies target areas: every cluster below them",
        ));
    }
    let clusters = clusters_below(state, &body.targets.areas, "targets.areas", &mut errors).await?;
    if errors.is_empty() && clusters.is_empty() {
        errors.push(FieldError::new(
            "targets.areas",
            "no enabled cluster below these areas",
        ));
    }
    let (Some(audio), true) = (audio, errors.is_empty()) else {
        return Err(validation(errors));
    };
    let plan = Plan {
        audio: vec![audio],
        clusters,
        repeat,
        interval_s,
        targets: body.targets,
    };
    let id = start(state, plan, Source::User(principal)).await?;
    Ok(EmergencyAccepted {
        id,
        status: status::QUEUED.into(),
        detail: None,
    })
}

/// Who pushed an emergency.
enum Source<'a> {
    User(&'a Principal),
    Cap(&'a Alert, &'a Principal),
}

fn cap_status(s: Status) -> &'static str {
    match s {
        Status::Actual => "Actual",
        Status::Exercise => "Exercise",
        Status::System => "System",
        Status::Test => "Test",
        Status::Draft => "Draft",
    }
}

fn cap_msg_type(m: MsgType) -> &'static str {
    match m {
        MsgType::Alert => "Alert",
        MsgType::Update => "Update",
        MsgType::Cancel => "Cancel",
        MsgType::Ack => "Ack",
        MsgType::Error => "Error",
    }
}

fn cap_problem(e: cap::CapError) -> ApiError {
    ApiError::Validation {
        detail: format!("not an acceptable CAP 1.2 alert: {e}"),
        errors: vec![FieldError::new(e.element, e.message)],
    }
}

fn cap_row(
    alert: &Alert,
    received_by: &Principal,
    outcome: &str,
    broadcast_id: Option<String>,
) -> CapAlertRow {
    CapAlertRow {
        received_by: received_by.id.clone(),
        id: broadcast_id
            .clone()
            .unwrap_or_else(|| uuid::Uuid::new_v4().to_string()),
        sender: alert.sender.clone(),
        identifier: alert.identifier.clone(),
        sent: alert.sent.to_rfc3339(),
        status: cap_status(alert.status).into(),
        msg_type: cap_msg_type(alert.msg_type).into(),
        received_at: now_rfc3339(),
        outcome: outcome.into(),
        broadcast_id,
    }
}

async fn from_cap(
    state: &AppState,
    principal: &Principal,
    body: &[u8],
) -> Result<EmergencyAccepted, ApiError> {
    let text = std::str::from_utf8(body).map_err(|_| {
        cap_problem(cap::CapError {
            element: "alert".into(),
            message: "not UTF-8".into(),
        })
    })?;
    let alert =
        cap::parse(text, &state.config.emergency.cap_geocode_value_name).map_err(cap_problem)?;
    // The same alert twice (a retry, a second feed): the same answer, no second airing.
    if let Some(seen) = state
        .store
        .cap_alert(&principal.id, &alert.sender, &alert.identifier)
        .await?
    {
        return Ok(EmergencyAccepted {
            id: seen.id,
            status: seen.outcome,
            detail: Some("this alert was already received".into()),
        });
    }
    let actor = format!("cap:{}", alert.sender);
    if let Some(expires) = alert.expires()
        && expires < Utc::now()
    {
        return Err(ApiError::field(
            "alert/info/expires",
            format!("the alert expired at {}", expires.to_rfc3339()),
        ));
    }
    if alert.status != Status::Actual {
        let row = cap_row(&alert, principal, "not_aired", None);
        let detail = format!(
            "{} alert: accepted and logged, not aired",
            cap_status(alert.status)
        );
        state
            .store
            .insert_cap_alert(
                &row,
                AuditEntry {
                    actor: &actor,
                    action: "cap.receive",
                    target: Some(&alert.identifier),
                    detail: Some(&detail),
                    result: "not_aired",
                },
            )
            .await?;
        tracing::info!(sender = %alert.sender, identifier = %alert.identifier, status = cap_status(alert.status), "CAP alert logged, not aired");
        return Ok(EmergencyAccepted {
            id: row.id,
            status: "not_aired".into(),
            detail: Some(detail),
        });
    }
    match alert.msg_type {
        MsgType::Ack | MsgType::Error => {
            let row = cap_row(&alert, principal, "not_aired", None);
            state
                .store
                .insert_cap_alert(
                    &row,
                    AuditEntry {
                        actor: &actor,
                        action: "cap.receive",
                        target: Some(&alert.identifier),
                        detail: Some(cap_msg_type(alert.msg_type)),
                        result: "not_aired",
                    },
                )
                .await?;
            return Ok(EmergencyAccepted {
                id: row.id,
                status: "not_aired".into(),
                detail: Some(format!(
                    "{} messages do not air",
                    cap_msg_type(alert.msg_type)
                )),
            });
        }
        MsgType::Cancel => {
            let cancelled = cancel_references(state, principal, &alert, &actor).await?;
            let row = cap_row(&alert, principal, "cancelled", None);
            state
                .store
                .insert_cap_alert(
                    &row,
                    AuditEntry {
                        actor: &actor,
                        action: "cap.cancel",
                        target: Some(&alert.identifier),
                        detail: Some(&cancelled.join(",")),
                        result: "ok",
                    },
                )
                .await?;
            return Ok(EmergencyAccepted {
                id: row.id,
                status: "cancelled".into(),
                detail: Some(format!("cancelled {} emergency(ies)", cancelled.len())),
            });
        }
        // An Update cancels what it references only once its own airing is ready: a
        // replacement that cannot air must not silence the alert it replaces.
        MsgType::Update | MsgType::Alert => {}
    }
    // Where: the alert's areas that are ours. Unknown codes are reported, not fatal, as
    // long as one area is ours: a warning must reach those it can.
    let codes = alert.area_codes();
    if codes.is_empty() {
        return Err(ApiError::field(
            "alert/info/area/geocode",
            format!(
                "no <geocode> with valueName `{}` names one of our areas",
                state.config.emergency.cap_geocode_value_name
            ),
        ));
    }
    let mut areas = Vec::new();
    let mut notes = Vec::new();
    for code in codes {
        match state.store.area(&code).await {
            Ok(_) => areas.push(code),
            Err(StoreError::NotFound) => notes.push(format!("unknown area `{code}` skipped")),
            Err(e) => return Err(e.into()),
        }
    }
    if areas.is_empty() {
        return Err(ApiError::field(
            "alert/info/area/geocode",
            format!("none of its areas is ours ({})", notes.join("; ")),
        ));
    }
    // Before anything acts: no audio fetched, nothing cancelled, outside the scope.
    principal.require_areas(areas.iter().map(String::as_str))?;
    let mut errors = Vec::new();
    let clusters = clusters_below(state, &areas, "alert/info/area/geocode", &mut errors).await?;
    if errors.is_empty() && clusters.is_empty() {
        errors.push(FieldError::new(
            "alert/info/area/geocode",
            "no enabled cluster below these areas",
        ));
    }
    if !errors.is_empty() {
        return Err(validation(errors));
    }
    // What: its audio; if that cannot be had, the fallback (or the tone alone) still airs.
    let audio = match cap_audio(state, &alert).await {
        Ok(audio) => audio,
        Err(e) => {
            tracing::error!(identifier = %alert.identifier, error = %e, "CAP audio unusable; airing the fallback");
            notes.push(format!("audio unusable ({e}); the fallback aired"));
            fallback_audio(state).await
        }
    };
    if alert.msg_type == MsgType::Update {
        cancel_references(state, principal, &alert, &actor).await?;
    }
    let plan = Plan {
        audio,
        clusters,
        repeat: 1,
        interval_s: 0,
        targets: Targets {
            areas,
            clusters: Vec::new(),
        },
    };
    let id = start(state, plan, Source::Cap(&alert, principal)).await?;
    let event = alert.infos.first().map(|i| i.event.clone());
    Ok(EmergencyAccepted {
        id,
        status: status::QUEUED.into(),
        detail: Some(
            event
                .into_iter()
                .chain(notes)
                .collect::<Vec<_>>()
                .join("; "),
        )
        .filter(|d| !d.is_empty()),
    })
}

/// Cancels the emergencies that the alerts named in `references` aired as.
async fn cancel_references(
    state: &AppState,
    principal: &Principal,
    alert: &Alert,
    actor: &str,
) -> Result<Vec<String>, ApiError> {
    let mut cancelled = Vec::new();
    for r in &alert.references {
        // A sender acts on its own alerts only.
        if r.sender != alert.sender {
            continue;
        }
        let Some(seen) = state
            .store
            .cap_alert(&principal.id, &r.sender, &r.identifier)
            .await?
        else {
            continue;
        };
        if let Some(broadcast) = seen.broadcast_id
            && require_broadcast(state, principal, &broadcast)
                .await
                .is_ok()
            && stop(state, &broadcast, actor, "cancelled by a CAP alert").await?
        {
            cancelled.push(broadcast);
        }
    }
    Ok(cancelled)
}

/// The audio of a CAP alert: embedded, fetched from an allowed host, or the configured
/// fallback (or nothing: the tone alone).
async fn cap_audio(state: &AppState, alert: &Alert) -> Result<Vec<AudioRow>, ApiError> {
    let Some(resource) = alert.audio() else {
        return Ok(fallback_audio(state).await);
    };
    let bytes = match (&resource.content, &resource.uri) {
        (Some(content), _) => content.clone(),
        (None, Some(uri)) => fetch(state, uri).await?,
        (None, None) => {
            return Err(ApiError::field(
                "alert/info/resource",
                "an audio resource needs <derefUri> or <uri>",
            ));
        }
    };
    let id = uuid::Uuid::new_v4().to_string();
    let path = state.library.upload_path(&id);
    tokio::fs::write(&path, &bytes)
        .await
        .map_err(ApiError::internal)?;
    let extension = match resource.mime_type.as_str() {
        "audio/mpeg" | "audio/mp3" => Some("mp3"),
        "audio/wav" | "audio/x-wav" | "audio/wave" => Some("wav"),
        "audio/ogg" => Some("ogg"),
        "audio/flac" => Some("flac"),
        "audio/aac" | "audio/mp4" => Some("m4a"),
        _ => None,
    };
    let row = ingest_upload(
        state,
        Upload {
            id,
            path,
            extension: extension.map(Into::into),
            title: alert
                .infos
                .first()
                .map(|i| i.event.chars().take(200).collect())
                .unwrap_or_else(|| "CAP alert".into()),
            topic: Some("emergency".into()),
            original_name: None,
            size_bytes: bytes.len() as i64,
        },
    )
    .await
    .map_err(|e| match e {
        ApiError::UnsupportedMedia { detail, .. } | ApiError::WrongContentType(detail) => {
            ApiError::field("alert/info/resource", detail)
        }
        other => other,
    })?;
    Ok(vec![row])
}

/// The configured fallback announcement, or nothing (the attention tone alone).
async fn fallback_audio(state: &AppState) -> Vec<AudioRow> {
    let fallback = &state.config.emergency.fallback_audio_id;
    if fallback.is_empty() {
        return Vec::new();
    }
    match state.store.audio(fallback).await {
        Ok(a) => vec![a],
        Err(e) => {
            tracing::error!(error = %e, fallback, "the configured fallback audio is missing");
            Vec::new()
        }
    }
}

/// Fetches a CAP resource from a host in `relay.allowed_hosts` (plain HTTP).
async fn fetch(state: &AppState, uri: &str) -> Result<Vec<u8>, ApiError> {
    let field = "alert/info/resource/uri";
    let url =
        reqwest::Url::parse(uri).map_err(|e| ApiError::field(field, format!("`{uri}`: {e}")))?;
    let host = url.host_str().unwrap_or_default();
    if !state.config.relay.allowed_hosts.iter().any(|h| h == host) {
        return Err(ApiError::field(
            field,
            format!("host `{host}` is not in relay.allowed_hosts"),
        ));
    }
    if url.scheme() != "http" {
        return Err(ApiError::field(
            field,
            "only http:// resources can be fetched",
        ));
    }
    let client = reqwest::Client::builder()
        .timeout(std::time::Duration::from_secs(10))
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .map_err(ApiError::internal)?;
    let mut response = client
        .get(url)
        .send()
        .await
        .map_err(|e| ApiError::field(field, format!("cannot fetch: {e}")))?;
    if !response.status().is_success() {
        return Err(ApiError::field(
            field,
            format!("the host answered {}", response.status()),
        ));
    }
    let mut bytes = Vec::new();
    while let Some(chunk) = response
        .chunk()
        .await
        .map_err(|e| ApiError::field(field, format!("cannot fetch: {e}")))?
    {
        if bytes.len() + chunk.len() > MAX_FETCH {
            return Err(ApiError::field(
                field,
                format!("larger than {} MB", MAX_FETCH / (1024 * 1024)),
            ));
        }
        bytes.extend_from_slice(&chunk);
    }
    Ok(bytes)
}

/// Records the emergency, then prepares its frames and hands it to the engine.
async fn start(state: &AppState, plan: Plan, source: Source<'_>) -> Result<String, ApiError> {
    let id = uuid::Uuid::new_v4().to_string();
    let now = now_rfc3339();
    let audio_ids: Vec<String> = plan.audio.iter().map(|a| a.id.clone()).collect();
    let row = BroadcastRow {
        id: id.clone(),
        status: status::QUEUED.into(),
        priority: Priority::Emergency.as_str().into(),
        repeat: i64::from(plan.repeat),
        audio_ids: serde_json::to_string(&audio_ids).map_err(ApiError::internal)?,
        targets: serde_json::to_string(&plan.targets).map_err(ApiError::internal)?,
        detail: None,
        created_at: now.clone(),
        started_at: None,
        ended_at: None,
        on_interrupt: Interruption::Restart.as_str().into(),
        campaign_id: None,
        planned_at: None,
        topic: Some("emergency".into()),
        late: false,
        relay: None,
    };
    let runs: Vec<BroadcastClusterRow> = plan
        .clusters
        .iter()
        .map(|c| BroadcastClusterRow {
            broadcast_id: id.clone(),
            cluster_id: c.id.clone(),
            cluster_name: c.name.clone(),
            area_code: c.area_code.clone(),
            status: status::QUEUED.into(),
            packets_sent: 0,
            started_at: None,
            ended_at: None,
            ptime_ms: c.ptime_ms,
        })
        .collect();
    let (actor, source_name, cap) = match &source {
        Source::User(principal) => (principal.actor(), "user", None),
        Source::Cap(alert, principal) => (
            format!("cap:{}", alert.sender),
            "cap",
            Some(cap_row(alert, principal, "aired", Some(id.clone()))),
        ),
    };
    let event = match &source {
        Source::Cap(alert, _) => alert.infos.first().map(|i| i.event.clone()),
        Source::User(_) => None,
    };
    let emergency = EmergencyRow {
        broadcast_id: id.clone(),
        source: source_name.into(),
        actor: actor.clone(),
        interval_s: i64::from(plan.interval_s),
        event,
        cap_sender: cap.as_ref().map(|c| c.sender.clone()),
        cap_identifier: cap.as_ref().map(|c| c.identifier.clone()),
    };
    let detail = format!(
        "areas {}; {} clusters; audio {}; repeat {}",
        plan.targets.areas.join(","),
        runs.len(),
        if audio_ids.is_empty() {
            "(tone only)".into()
        } else {
            audio_ids.join(",")
        },
        plan.repeat
    );
    state
        .store
        .insert_emergency(
            &row,
            &runs,
            &emergency,
            cap.as_ref(),
            AuditEntry {
                actor: &actor,
                action: "emergency.start",
                target: Some(&id),
                detail: Some(&detail),
                result: "queued",
            },
        )
        .await
        .map_err(|e| match e {
            // Two deliveries of one CAP alert racing: the second loses the insert.
            StoreError::Conflict(m) => {
                ApiError::Conflict(format!("this alert is being handled already ({m})"))
            }
            other => other.into(),
        })?;
    tracing::warn!(emergency = %id, %actor, clusters = runs.len(), "EMERGENCY queued");
    let state = state.clone();
    let broadcast = id.clone();
    tokio::spawn(async move {
        match emergency_targets(&state, &plan).await {
            Ok(targets) => {
                if !state.engine.play(
                    &broadcast,
                    Priority::Emergency,
                    Interruption::Restart,
                    targets,
                ) {
                    super::airing::fail(&state, &broadcast, "the playout engine has stopped").await;
                }
            }
            Err(why) => super::airing::fail(&state, &broadcast, &why).await,
        }
    });
    Ok(id)
}

/// The emergency programme of each (codec, ptime), built once and shared.
async fn emergency_targets(state: &AppState, plan: &Plan) -> Result<Vec<Target>, String> {
    let clips: Vec<ClipRef> = plan
        .audio
        .iter()
        .map(|a| ClipRef {
            id: a.id.clone(),
            file_name: a.file_name.clone(),
            loudness: a.loudness_lufs.zip(a.true_peak_dbtp).map(
                |(integrated_lufs, true_peak_dbtp)| Loudness {
                    integrated_lufs,
                    true_peak_dbtp,
                },
            ),
        })
        .collect();
    let mut programmes: BTreeMap<(Codec, u32), crate::library::Frames> = BTreeMap::new();
    let mut targets = Vec::with_capacity(plan.clusters.len());
    for c in &plan.clusters {
        let codec: Codec = c
            .codec
            .parse()
            .map_err(|e: crate::codec::UnknownCodec| e.to_string())?;
        let ptime_ms = c.ptime_ms as u32;
        let spec: crate::fleet::EndpointSpec =
            serde_json::from_str(&c.endpoint).map_err(|e| e.to_string())?;
        let endpoint =
            crate::fleet::Endpoint::parse(&spec).map_err(|(f, e)| format!("{f}: {}", e.0))?;
        let frames = match programmes.get(&(codec, ptime_ms)) {
            Some(f) => f.clone(),
            None => {
                let f = state
                    .library
                    .emergency_programme(
                        &clips,
                        plan.repeat,
                        plan.interval_s * 1000,
                        state.config.emergency.attention_tone || clips.is_empty(),
                        codec,
                        ptime_ms,
                    )
                    .await
                    .map_err(|e| e.to_string())?;
                programmes.insert((codec, ptime_ms), f.clone());
                f
            }
        };
        targets.push(Target {
            cluster_id: c.id.clone(),
            destination: endpoint
                .rtp_destination()
                .map_or(Destination::Registered, Destination::Fixed),
            codec,
            ptime_ms,
            multicast_ttl: endpoint.multicast_ttl(),
            srtp: c
                .srtp_key
                .as_deref()
                .and_then(crate::rtp::srtp::MasterKey::from_inline),
            frames: Frames::Clip(frames),
        });
    }
    Ok(targets)
}

/// Cancels an emergency at once everywhere; returns false if it was already over.
async fn stop(state: &AppState, id: &str, actor: &str, why: &str) -> Result<bool, ApiError> {
    let row = state.store.broadcast(id).await.map_err(|e| match e {
        StoreError::NotFound => ApiError::not_found("emergency", id),
        other => other.into(),
    })?;
    if status::is_final(&row.status) {
        return Ok(false);
    }
    state
        .store
        .set_broadcast_status(id, status::CANCELLED, Some(why))
        .await?;
    state.engine.cancel(id);
    let now = now_rfc3339();
    for run in state.store.broadcast_clusters(id).await? {
        if !status::is_final(&run.status) {
            let sent = state.engine.packets_sent(id, &run.cluster_id);
            state
                .store
                .set_broadcast_cluster_status(id, &run.cluster_id, status::CANCELLED, sent, &now)
                .await?;
        }
    }
    state
        .store
        .audit(AuditEntry {
            actor,
            action: "emergency.cancel",
            target: Some(id),
            detail: Some(why),
            result: "ok",
        })
        .await?;
    tracing::warn!(emergency = %id, %actor, "EMERGENCY cancelled");
    Ok(true)
}

async fn emergency_view(state: &AppState, id: &str) -> Result<Emergency, ApiError> {
    let e = state.store.emergency(id).await.map_err(|e| match e {
        StoreError::NotFound => ApiError::not_found("emergency", id),
        other => other.into(),
    })?;
    let row = state.store.broadcast(id).await?;
    let mut broadcast = broadcast_view(state, row).await?;
    // A cluster behind NAT with no current address cannot hear it.
    let now = std::time::Instant::now();
    for run in broadcast.clusters.iter_mut() {
        if !status::is_final(&run.status)
            && let Ok(c) = state.store.cluster(&run.id).await
            && c.endpoint.contains("\"registered\"")
            && state.engine.registry().registration(&c.id, now).is_none()
        {
            run.status = "unreachable".into();
        }
    }
    Ok(Emergency {
        source: e.source,
        actor: e.actor,
        interval_s: e.interval_s,
        event: e.event,
        cap_identifier: e.cap_identifier,
        broadcast,
    })
}

/// An emergency and its status on every cluster.
#[utoipa::path(get, path = "/api/v1/emergency/{id}", tag = "emergency", security(("bearer" = [])),
    params(("id" = String, Path)),
    responses((status = 200, body = Emergency), (status = 404, body = Problem)))]
async fn get_emergency(
    State(state): State<AppState>,
    Extension(principal): Extension<Principal>,
    Path(id): Path<String>,
) -> Result<Json<Emergency>, ApiError> {
    require_broadcast(&state, &principal, &id).await?;
    emergency_view(&state, &id).await.map(Json)
}

/// Recent emergencies, newest first.
#[utoipa::path(get, path = "/api/v1/emergency", tag = "emergency", security(("bearer" = [])),
    responses((status = 200, body = [Emergency])))]
async fn list_emergencies(
    State(state): State<AppState>,
    Extension(principal): Extension<Principal>,
) -> Result<Json<Vec<Emergency>>, ApiError> {
    let mut out = Vec::new();
    for e in state.store.emergencies().await? {
        if require_broadcast(&state, &principal, &e.broadcast_id)
            .await
            .is_err()
        {
            continue;
        }
        out.push(emergency_view(&state, &e.broadcast_id).await?);
    }
    Ok(Json(out))
}

/// Ends an emergency at once on every cluster.
#[utoipa::path(post, path = "/api/v1/emergency/{id}/cancel", tag = "emergency", security(("bearer" = [])),
    params(("id" = String, Path)),
    responses((status = 200, body = Emergency), (status = 404, body = Problem),
              (status = 409, body = Problem, description = "already over")))]
async fn cancel_emergency(
    State(state): State<AppState>,
    Extension(principal): Extension<Principal>,
    Path(id): Path<String>,
) -> Result<Json<Emergency>, ApiError> {
    state.store.emergency(&id).await.map_err(|e| match e {
        StoreError::NotFound => ApiError::not_found("emergency", &id),
        other => other.into(),
    })?;
    require_broadcast(&state, &principal, &id).await?;
    if !stop(&state, &id, &principal.actor(), "cancelled by request").await? {
        return Err(ApiError::Conflict(format!(
            "emergency `{id}` is already over"
        )));
    }
    emergency_view(&state, &id).await.map(Json)
}
