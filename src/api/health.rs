//! Fleet health: each cluster's status and its history, the agents' heartbeats (with
//! the commands they carry back: volume, test tones), and the technician's test tone.

use axum::extract::rejection::BytesRejection;
use axum::{Extension, Json};
use std::net::SocketAddr;

use axum::extract::{ConnectInfo, Path, State};
use axum::http::{HeaderMap, StatusCode};
use serde::{Deserialize, Serialize};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::AppState;
use super::access::{Principal, Role, expired, note_failure};
use super::auth::{hash_token, presented_token, same};
use super::broadcasts::parse_time;
use super::clusters::find;
use super::problem::{ApiError, Problem, Query, parse_json};
use crate::codec::Codec;
use crate::fleet::EndpointSpec;
use crate::fleet::health::{ClusterHealth, Status};
use crate::monitor::{AgentReport, ToneCommand};
use crate::store::{ClusterRow, HealthTransitionRow, StoreError};

/// Routes behind the operators' bearer tokens.
pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(fleet_health))
        .routes(routes!(fleet_transitions))
        .routes(routes!(cluster_health))
        .routes(routes!(cluster_transitions))
        .routes(routes!(test_tone))
}

/// Routes an agent calls with its own cluster's token.
pub fn agent_router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(heartbeat))
}

/// A body read in full, or the problem answer for one that could not be (too large).
fn read_body(
    body: Result<axum::body::Bytes, BytesRejection>,
) -> Result<axum::body::Bytes, ApiError> {
    body.map_err(|e| {
        if e.status() == StatusCode::PAYLOAD_TOO_LARGE {
            ApiError::TooLarge { limit_mb: 1 }
        } else {
            ApiError::BadRequest(format!("could not read the body: {e}"))
        }
    })
}

fn rfc3339(t: chrono::DateTime<chrono::Utc>) -> String {
    t.to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}

/// One cluster's health.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct HealthView {
    cluster_id: String,
    name: String,
    area_code: String,
    status: Status,
    /// When the current status began.
    since: Option<String>,
    /// Why the cluster is in this status.
    cause: String,
    /// The latest heartbeat, keepalive or receiver report.
    last_seen: Option<String>,
    last_heartbeat: Option<String>,
    /// From the latest receiver report (RTCP).
    loss_pct: Option<f64>,
    jitter_ms: Option<f64>,
    /// Datagrams to this cluster refused by the network stack since the daemon started.
    send_errors: u64,
    /// The volume configured for the cluster (its agent applies it), 0-100.
    volume: u8,
    /// What the cluster's agent said in its latest heartbeat.
    agent: Option<AgentReport>,
}

fn view(state: &AppState, row: ClusterRow) -> HealthView {
    let health = state.monitor.health(&row.id);
    let agent = state.monitor.agent(&row.id).map(|a| a.report);
    let round = |v: f64| (v * 100.0).round() / 100.0;
    let volume = row.volume.clamp(0, 100) as u8;
    match health {
        Some(h) => {
            let ClusterHealth {
                status,
                since,
                cause,
                last_seen,
                last_heartbeat,
                loss_pct,
                jitter_ms,
                send_errors,
                ..
            } = h;
            HealthView {
                cluster_id: row.id,
                name: row.name,
                area_code: row.area_code,
                status,
                since: Some(rfc3339(since)),
                cause,
                last_seen: last_seen.map(rfc3339),
                last_heartbeat: last_heartbeat.map(rfc3339),
                loss_pct: loss_pct.map(round),
                jitter_ms: jitter_ms.map(round),
                send_errors,
                volume,
                agent,
            }
        }
        None => HealthView {
            cluster_id: row.id,
            name: row.name,
            area_code: row.area_code,
            status: Status::Unknown,
            since: None,
            cause: "not heard from".into(),
            last_seen: None,
            last_heartbeat: None,
            loss_pct: None,
            jitter_ms: None,
            send_errors: 0,
            volume,
            agent,
        },
    }
}

/// A cluster's health: `online`, `degraded` (loss, jitter or send errors over the
/// configured thresholds), `offline` (nothing heard within `health.offline_after_s`) or
/// `unknown` (never heard from).
#[utoipa::path(get, path = "/api/v1/clusters/{id}/health", tag = "health", security(("bearer" = [])),
    params(("id" = String, Path)),
    responses((status = 200, body = HealthView), (status = 404, body = Problem)))]
async fn cluster_health(
    State(state): State<AppState>,
    Extension(principal): Extension<Principal>,
    Path(id): Path<String>,
) -> Result<Json<HealthView>, ApiError> {
    let row = find(&state, &id).await?;
    principal.require_area(&row.area_code)?;
    Ok(Json(view(&state, row)))
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
struct FleetFilter {
    /// Only clusters in this area's subtree.
    area: Option<String>,
    /// Only clusters in this status.
    status: Option<String>,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct FleetHealth {
    /// How many of the listed clusters are in each status.
    counts: StatusCounts,
    clusters: Vec<HealthView>,
}

#[derive(Debug, Default, Serialize, utoipa::ToSchema)]
pub struct StatusCounts {
    online: u64,
    degraded: u64,
    offline: u64,
    unknown: u64,
}

async fn clusters_below(state: &AppState, area: Option<&str>) -> Result<Vec<ClusterRow>, ApiError> {
    match area {
        Some(area) => {
            let codes = subtree(state, area).await?;
            Ok(state.store.clusters_in_areas(&codes).await?)
        }
        None => Ok(state.store.clusters().await?),
    }
}

async fn subtree(state: &AppState, area: &str) -> Result<Vec<String>, ApiError> {
    let codes = state.store.area_subtree(&[area.to_string()]).await?;
    if codes.is_empty() {
        return Err(ApiError::field(
            "area",
            format!("area `{area}` does not exist"),
        ));
    }
    Ok(codes)
}

/// Every cluster's health, worst first (offline, degraded, unknown, online), filtered by
/// area subtree and status.
#[utoipa::path(get, path = "/api/v1/health", tag = "health", security(("bearer" = [])),
    params(FleetFilter),
    responses((status = 200, body = FleetHealth), (status = 422, body = Problem)))]
async fn fleet_health(
    State(state): State<AppState>,
    Extension(principal): Extension<Principal>,
    Query(filter): Query<FleetFilter>,
) -> Result<Json<FleetHealth>, ApiError> {
    let area = principal.list_area(filter.area.as_deref())?;
    let wanted = filter
        .status
        .as_deref()
        .map(|s| {
            s.parse::<Status>()
                .map_err(|e| ApiError::field("status", e))
        })
        .transpose()?;
    let rows = clusters_below(&state, area.as_deref()).await?;
    let mut counts = StatusCounts::default();
    let mut clusters: Vec<HealthView> = rows
        .into_iter()
        .map(|r| view(&state, r))
        .inspect(|v| {
            *match v.status {
                Status::Online => &mut counts.online,
                Status::Degraded => &mut counts.degraded,
                Status::Offline => &mut counts.offline,
                Status::Unknown => &mut counts.unknown,
            } += 1;
        })
        .filter(|v| wanted.is_none_or(|w| v.status == w))
        .collect();
    let rank = |s: Status| match s {
        Status::Offline => 0,
        Status::Degraded => 1,
        Status::Unknown => 2,
        Status::Online => 3,
    };
    clusters.sort_by(|a, b| {
        rank(a.status)
            .cmp(&rank(b.status))
            .then_with(|| a.area_code.cmp(&b.area_code))
            .then_with(|| a.name.cmp(&b.name))
    });
    Ok(Json(FleetHealth { counts, clusters }))
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
struct TransitionFilter {
    /// RFC 3339; transitions at or after.
    from: Option<String>,
    /// RFC 3339; transitions before.
    to: Option<String>,
    /// Only clusters in this area's subtree (fleet route only).
    area: Option<String>,
    /// At most this many (default and maximum 1000): the first from `from`, else the newest.
    limit: Option<u32>,
}

/// A change of a cluster's status.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct TransitionView {
    seq: i64,
    cluster_id: String,
    area_code: String,
    at: String,
    from: String,
    to: String,
    cause: String,
}

impl From<HealthTransitionRow> for TransitionView {
    fn from(r: HealthTransitionRow) -> Self {
        Self {
            seq: r.seq,
            cluster_id: r.cluster_id,
            area_code: r.area_code,
            at: r.at,
            from: r.from_status,
            to: r.to_status,
            cause: r.cause,
        }
    }
}

async fn transitions(
    state: &AppState,
    cluster: Option<&str>,
    filter: TransitionFilter,
) -> Result<Json<Vec<TransitionView>>, ApiError> {
    let from = parse_time("from", filter.from.as_deref())?;
    let to = parse_time("to", filter.to.as_deref())?;
    let limit = filter.limit.unwrap_or(1000).clamp(1, 1000);
    let areas = match filter.area.as_deref() {
        Some(area) => Some(subtree(state, area).await?),
        None => None,
    };
    let rows = state
        .store
        .transitions(
            cluster,
            areas.as_deref(),
            from.as_deref(),
            to.as_deref(),
            limit,
        )
        .await?;
    Ok(Json(rows.into_iter().map(TransitionView::from).collect()))
}

/// The health transitions of the whole fleet (or an area's subtree), oldest first.
#[utoipa::path(get, path = "/api/v1/health/transitions", tag = "health", security(("bearer" = [])),
    params(TransitionFilter),
    responses((status = 200, body = [TransitionView]), (status = 422, body = Problem)))]
async fn fleet_transitions(
    State(state): State<AppState>,
    Extension(principal): Extension<Principal>,
    Query(mut filter): Query<TransitionFilter>,
) -> Result<Json<Vec<TransitionView>>, ApiError> {
    filter.area = principal.list_area(filter.area.as_deref())?;
    transitions(&state, None, filter).await
}

/// One cluster's health transitions, oldest first: when it went online, degraded or
/// offline, and why.
#[utoipa::path(get, path = "/api/v1/clusters/{id}/health/history", tag = "health", security(("bearer" = [])),
    params(("id" = String, Path), TransitionFilter),
    responses((status = 200, body = [TransitionView]), (status = 404, body = Problem), (status = 422, body = Problem)))]
async fn cluster_transitions(
    State(state): State<AppState>,
    Extension(principal): Extension<Principal>,
    Path(id): Path<String>,
    Query(filter): Query<TransitionFilter>,
) -> Result<Json<Vec<TransitionView>>, ApiError> {
    if filter.area.is_some() {
        return Err(ApiError::field(
            "area",
            "not a filter of one cluster's history",
        ));
    }
    principal.require_area(&find(&state, &id).await?.area_code)?;
    transitions(&state, Some(&id), filter).await
}

#[derive(Debug, Default, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct TestToneRequest {
    /// 100-4000 Hz, default 1000.
    frequency_hz: Option<u32>,
    /// 200-10000 ms, default 2000.
    duration_ms: Option<u32>,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct TestToneQueued {
    #[serde(flatten)]
    command: ToneCommand,
    /// `queued`: the cluster's agent gets it in its next heartbeat answer.
    status: &'static str,
    /// Seconds between heartbeats: the tone plays within about this long.
    heartbeat_interval_s: u64,
}

/// Plays a short sine tone on the cluster's speakers: its agent gets the command in the
/// answer to its next heartbeat and confirms it in the one after. Body optional.
#[utoipa::path(post, path = "/api/v1/clusters/{id}/test-tone", tag = "health", security(("bearer" = [])),
    params(("id" = String, Path)),
    request_body(content = Option<TestToneRequest>),
    responses((status = 202, body = TestToneQueued), (status = 404, body = Problem),
              (status = 409, body = Problem, description = "the cluster has no agent, or 8 tones are waiting"),
              (status = 422, body = Problem)))]
async fn test_tone(
    State(state): State<AppState>,
    Extension(principal): Extension<Principal>,
    Path(id): Path<String>,
    body: Result<axum::body::Bytes, BytesRejection>,
) -> Result<(StatusCode, Json<TestToneQueued>), ApiError> {
    let body = read_body(body)?;
    let request: TestToneRequest = if body.iter().all(u8::is_ascii_whitespace) {
        TestToneRequest::default()
    } else {
        parse_json(&body)?
    };
    let frequency_hz = request.frequency_hz.unwrap_or(1000);
    let duration_ms = request.duration_ms.unwrap_or(2000);
    if !(100..=4000).contains(&frequency_hz) {
        return Err(ApiError::field(
            "frequency_hz",
            "must be between 100 and 4000",
        ));
    }
    if !(200..=10_000).contains(&duration_ms) {
        return Err(ApiError::field(
            "duration_ms",
            "must be between 200 and 10000",
        ));
    }
    let row = find(&state, &id).await?;
    principal.require_area(&row.area_code)?;
    if row.agent_key.is_none() {
        return Err(ApiError::Conflict(
            "this cluster has no agent token, so no agent to play the tone".into(),
        ));
    }
    let command = state
        .monitor
        .queue_tone(&id, frequency_hz, duration_ms)
        .ok_or_else(|| {
            ApiError::Conflict(format!(
                "{} test tones are already waiting for this cluster's agent",
                crate::monitor::MAX_TONES
            ))
        })?;
    let detail = format!("{frequency_hz} Hz, {duration_ms} ms");
    state
        .store
        .audit(crate::store::AuditEntry {
            actor: &principal.actor(),
            action: "cluster.test_tone",
            target: Some(&id),
            detail: Some(&detail),
            result: "queued",
        })
        .await?;
    Ok((
        StatusCode::ACCEPTED,
        Json(TestToneQueued {
            command,
            status: "queued",
            heartbeat_interval_s: state.config.health.heartbeat_interval_s,
        }),
    ))
}

/// What the controller answers a heartbeat with: how to receive the stream and what to
/// do.
/// No `Debug`: it carries the SRTP key, which is never to reach a log line.
#[derive(Clone, Serialize, Deserialize, utoipa::ToSchema)]
pub struct HeartbeatAnswer {
    pub cluster_id: String,
    pub name: String,
    /// `pcmu`, `pcma`, `l16`, `g722` or `opus`.
    pub codec: String,
    pub payload_type: u8,
    pub clock_rate: u32,
    pub ptime_ms: u32,
    pub endpoint: EndpointSpec,
    /// The controller's RTP port: where a registered cluster sends keepalives (and its
    /// RTCP, multiplexed).
    pub rtp_port: u16,
    /// Where a unicast or multicast cluster sends its RTCP receiver reports.
    pub rtcp_port: u16,
    /// The volume to apply, 0-100.
    pub volume: u8,
    pub enabled: bool,
    /// Send the next heartbeat after this many seconds.
    pub heartbeat_interval_s: u64,
    /// The cluster's health as the controller sees it now.
    pub status: Status,
    /// Test tones to play (each once: ids already played are to be skipped).
    pub test_tones: Vec<ToneCommand>,
    /// The cluster's SRTP master key (SDES inline base64) when its stream is SRTP; the
    /// agent authenticated with its own token, so it may know it.
    #[serde(default)]
    pub srtp_key: Option<String>,
}

/// The cluster `id` if `token` is its agent token, or the token of a current user with
/// role `agent` bound to it. The same 401 for an unknown cluster and a wrong token: no
/// probing for ids.
async fn agent_of(state: &AppState, id: &str, token: Option<&str>) -> Result<ClusterRow, ApiError> {
    let token = token.ok_or(ApiError::Unauthorized)?;
    let row = match state.store.cluster(id).await {
        Ok(row) => row,
        Err(StoreError::NotFound) => return Err(ApiError::Unauthorized),
        Err(e) => return Err(e.into()),
    };
    let hash = hash_token(token);
    let key = row
        .agent_key
        .as_deref()
        .and_then(|k| <[u8; 32]>::try_from(hex::decode(k).ok()?).ok());
    if key.is_some_and(|k| same(&hash, &k)) {
        return Ok(row);
    }
    match state.store.user_by_token(&hex::encode(hash)).await {
        Ok(u)
            if u.role == Role::Agent.as_str()
                && u.cluster_id.as_deref() == Some(id)
                && u.revoked_at.is_none()
                && !expired(u.expires_at.as_deref()) =>
        {
            Ok(row)
        }
        Ok(_) | Err(StoreError::NotFound) => Err(ApiError::Unauthorized),
        Err(e) => Err(e.into()),
    }
}

/// An agent's heartbeat, with its own cluster's token: its state in, the stream settings
/// and the commands for it out. The first heartbeat is the agent's registration.
#[utoipa::path(post, path = "/api/v1/clusters/{id}/heartbeat", tag = "health", security(("bearer" = [])),
    params(("id" = String, Path)),
    request_body = AgentReport,
    responses((status = 200, body = HeartbeatAnswer), (status = 401, body = Problem),
              (status = 422, body = Problem)))]
async fn heartbeat(
    State(state): State<AppState>,
    Path(id): Path<String>,
    connect: Option<Extension<ConnectInfo<SocketAddr>>>,
    headers: HeaderMap,
    body: Result<axum::body::Bytes, BytesRejection>,
) -> Result<Json<HeartbeatAnswer>, ApiError> {
    let ip = connect.map(|c| c.0.0.ip());
    // A valid token always passes; failures count towards the address's limit.
    let row = match agent_of(&state, &id, presented_token(&headers)).await {
        Ok(row) => row,
        Err(ApiError::Unauthorized) => return Err(note_failure(&state, ip)),
        Err(e) => return Err(e),
    };
    // Authenticated first, so nobody learns anything from the body's answer.
    let json = headers
        .get(axum::http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| {
            v.split(';')
                .next()
                .is_some_and(|m| m.trim() == "application/json")
        });
    if !json {
        return Err(ApiError::WrongContentType(
            "the body must be JSON (Content-Type: application/json)".into(),
        ));
    }
    let report: AgentReport = parse_json(&read_body(body)?)?;
    if report.volume.is_some_and(|v| v > 100) {
        return Err(ApiError::field("volume", "must be between 0 and 100"));
    }
    if report.jitter_ms.is_some_and(|j| !j.is_finite() || j < 0.0) {
        return Err(ApiError::field(
            "jitter_ms",
            "must be a non-negative number",
        ));
    }
    state.monitor.heartbeat(&id, report);
    let codec: Codec = row.codec.parse().map_err(ApiError::internal)?;
    let endpoint: EndpointSpec = serde_json::from_str(&row.endpoint).map_err(ApiError::internal)?;
    let rtp_port = state.engine.rtp_local_addr().port();
    let rtcp_port = state.engine.rtcp_local_addr().port();
    Ok(Json(HeartbeatAnswer {
        status: state
            .monitor
            .health(&id)
            .map_or(Status::Unknown, |h| h.status),
        test_tones: state.monitor.tones_for(&id),
        cluster_id: row.id,
        name: row.name,
        payload_type: codec.payload_type(),
        clock_rate: codec.clock_rate(),
        codec: row.codec,
        ptime_ms: row.ptime_ms as u32,
        endpoint,
        rtp_port,
        rtcp_port,
        volume: row.volume.clamp(0, 100) as u8,
        enabled: row.enabled,
        heartbeat_interval_s: state.config.health.heartbeat_interval_s,
        srtp_key: row.srtp_key,
    }))
}
