//! `/api/v1/clusters`: the loudspeaker clusters, where their streams go, and the SDP a
//! receiver needs to play them.

use std::net::IpAddr;

use axum::extract::{Path, State};
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use axum::{Extension, Json};
use serde::{Deserialize, Serialize};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::AppState;
use super::access::{Principal, audit};
use super::areas::validation;
use super::problem::Query;
use super::problem::{ApiError, FieldError, JsonBody, Problem};
use crate::codec::{Codec, CodecSettings};
use crate::fleet::{Endpoint, EndpointSpec, parse_name};
use crate::rtp::sdp;
use crate::store::{ClusterRow, StoreError, now_rfc3339};
use sha2::Digest;

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(create_cluster, list_clusters))
        .routes(routes!(get_cluster, update_cluster, delete_cluster))
        .routes(routes!(cluster_sdp))
}

/// Packet durations a cluster may use: multiples of the pacer's tick.
const PTIMES: [u32; 3] = [20, 40, 60];

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateCluster {
    name: String,
    area_code: String,
    /// `pcmu`, `pcma`, `l16` (44.1 kHz, LAN only: 1764-byte packets), `g722` or `opus`.
    codec: String,
    /// 20, 40 or 60 (default: the configured ptime).
    ptime_ms: Option<u32>,
    endpoint: EndpointSpec,
    /// 0-100, default 100.
    volume: Option<u8>,
    /// Default true. A disabled cluster is skipped by broadcasts.
    enabled: Option<bool>,
    /// SRTP (AES_CM_128_HMAC_SHA1_80) with a key of this cluster's own, carried in its
    /// SDP (`a=crypto`), which only callers allowed to see the cluster can fetch.
    srtp: Option<bool>,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct Cluster {
    id: String,
    name: String,
    area_code: String,
    #[schema(value_type = String)]
    codec: Codec,
    ptime_ms: u32,
    endpoint: EndpointSpec,
    volume: u8,
    enabled: bool,
    /// Streamed with SRTP; the key is in the cluster's SDP.
    srtp: bool,
    created_at: String,
    /// Where to fetch the SDP of this cluster's stream.
    sdp_url: String,
    /// The latest RTCP receiver report from this cluster, if it sent any.
    #[serde(skip_serializing_if = "Option::is_none")]
    reception: Option<ReceptionView>,
    /// Datagrams to this cluster the network stack refused since the daemon started.
    send_errors: SendErrorsView,
    /// For a `registered` cluster: where its keepalives come from, if they are current.
    #[serde(skip_serializing_if = "Option::is_none")]
    registration: Option<RegistrationView>,
    /// For a `registered` cluster: the controller's RTP port its agent sends keepalives to.
    #[serde(skip_serializing_if = "Option::is_none")]
    keepalive_port: Option<u16>,
    /// The cluster's agent token, in the answer that created the cluster and never again
    /// (only its SHA-256 is kept). Its agent signs keepalives with it; the keepalive HMAC
    /// key is SHA-256(token).
    #[serde(skip_serializing_if = "Option::is_none")]
    agent_token: Option<String>,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct RegistrationView {
    /// The address (after NAT) the stream goes to.
    address: String,
    /// Milliseconds since the latest accepted keepalive.
    last_keepalive_ms: u64,
}

#[derive(Debug, Default, Serialize, utoipa::ToSchema)]
pub struct SendErrorsView {
    /// Dropped because the socket buffer was full.
    would_block: u64,
    /// Refused or unreachable destination.
    refused: u64,
    other: u64,
    /// Registered cluster with no current address: the packet had nowhere to go.
    not_registered: u64,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct ReceptionView {
    /// Loss since the receiver's previous report, percent.
    loss_pct: f64,
    cumulative_lost: u32,
    jitter_ms: f64,
    reports: u64,
    at: String,
}

impl Cluster {
    fn with_reception(mut self, state: &AppState) -> Self {
        let e = state.engine.send_errors(&self.id);
        self.send_errors = SendErrorsView {
            would_block: e.would_block,
            refused: e.refused,
            other: e.other,
            not_registered: e.not_registered,
        };
        if self.endpoint.mode == "registered" {
            self.keepalive_port = Some(state.engine.rtp_local_addr().port());
            self.registration = state
                .engine
                .registry()
                .registration(&self.id, std::time::Instant::now())
                .map(|r| RegistrationView {
                    address: r.address.to_string(),
                    last_keepalive_ms: r.age.as_millis() as u64,
                });
        }
        self.reception = state.engine.reception(&self.id).map(|r| ReceptionView {
            loss_pct: (r.loss_pct * 100.0).round() / 100.0,
            cumulative_lost: r.cumulative_lost,
            jitter_ms: (r.jitter_ms * 100.0).round() / 100.0,
            reports: r.reports,
            at: chrono::DateTime::<chrono::Utc>::from(r.at)
                .to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
        });
        self
    }
}

impl Cluster {
    pub(crate) fn from_row(r: ClusterRow) -> Result<Self, ApiError> {
        let spec: EndpointSpec = serde_json::from_str(&r.endpoint).map_err(ApiError::internal)?;
        Ok(Cluster {
            sdp_url: format!("/api/v1/clusters/{}/sdp", r.id),
            codec: r.codec.parse().map_err(ApiError::internal)?,
            ptime_ms: r.ptime_ms as u32,
            volume: r.volume.clamp(0, 100) as u8,
            id: r.id,
            name: r.name,
            area_code: r.area_code,
            endpoint: spec,
            enabled: r.enabled,
            srtp: r.srtp_key.is_some(),
            created_at: r.created_at,
            reception: None,
            send_errors: SendErrorsView::default(),
            registration: None,
            keepalive_port: None,
            agent_token: None,
        })
    }
}

/// Registers a cluster. The answer carries the cluster's `agent_token`, shown this once:
/// its agent signs keepalives with it (a `registered` cluster behind NAT is reached at
/// the address those come from).
#[utoipa::path(post, path = "/api/v1/clusters", tag = "clusters", security(("bearer" = [])),
    request_body = CreateCluster,
    responses((status = 201, body = Cluster), (status = 422, body = Problem)))]
async fn create_cluster(
    State(state): State<AppState>,
    Extension(principal): Extension<Principal>,
    JsonBody(body): JsonBody<CreateCluster>,
) -> Result<impl IntoResponse, ApiError> {
    principal.require_area(&body.area_code)?;
    let mut errors = Vec::new();
    let name = parse_name(&body.name, 200)
        .map_err(|e| errors.push(FieldError::new("name", e.0)))
        .ok();
    let codec = body
        .codec
        .parse::<Codec>()
        .map_err(|e| errors.push(FieldError::new("codec", e.to_string())))
        .ok();
    let ptime_ms = body.ptime_ms.unwrap_or(state.config.rtp.ptime_ms);
    check_ptime(&state, codec, ptime_ms, &mut errors);
    let endpoint = Endpoint::parse(&body.endpoint)
        .map_err(|(field, why)| errors.push(FieldError::new(field, why.0)))
        .ok();
    if body.volume.is_some_and(|v| v > 100) {
        errors.push(FieldError::new("volume", "must be between 0 and 100"));
    }
    match state.store.area(&body.area_code).await {
        Ok(_) => {}
        Err(StoreError::NotFound) => errors.push(FieldError::new(
            "area_code",
            format!("area `{}` does not exist", body.area_code),
        )),
        Err(e) => return Err(e.into()),
    }
    let (Some(name), Some(codec), Some(endpoint), true) =
        (name, codec, endpoint, errors.is_empty())
    else {
        return Err(validation(errors));
    };
    let agent_token = hex::encode(rand::random::<[u8; 32]>());
    let agent_key: [u8; 32] = sha2::Sha256::digest(agent_token.as_bytes()).into();
    let row = ClusterRow {
        id: uuid::Uuid::new_v4().to_string(),
        name,
        area_code: body.area_code,
        codec: codec.to_string(),
        ptime_ms: i64::from(ptime_ms),
        endpoint: serde_json::to_string(&endpoint.to_spec()).map_err(ApiError::internal)?,
        volume: i64::from(body.volume.unwrap_or(100)),
        enabled: body.enabled.unwrap_or(true),
        sdp_session_id: i64::from(rand::random::<u32>()),
        created_at: now_rfc3339(),
        agent_key: Some(hex::encode(agent_key)),
        srtp_key: body
            .srtp
            .unwrap_or(false)
            .then(|| crate::rtp::srtp::MasterKey::generate().to_inline()),
    };
    state.store.insert_cluster(&row).await?;
    state.monitor.track(&row.id);
    if endpoint == Endpoint::Registered {
        state.engine.registry().set_key(&row.id, agent_key.to_vec());
    }
    audit(
        &state,
        &principal,
        "cluster.create",
        Some(&row.id),
        Some(&row.endpoint),
    )
    .await?;
    let location = format!("/api/v1/clusters/{}", row.id);
    let mut cluster = Cluster::from_row(row)?.with_reception(&state);
    cluster.agent_token = Some(agent_token);
    Ok((
        StatusCode::CREATED,
        [(header::LOCATION, location)],
        Json(cluster),
    ))
}

fn check_ptime(
    state: &AppState,
    codec: Option<Codec>,
    ptime_ms: u32,
    errors: &mut Vec<FieldError>,
) {
    if !PTIMES.contains(&ptime_ms) || !ptime_ms.is_multiple_of(state.config.rtp.ptime_ms) {
        errors.push(FieldError::new(
            "ptime_ms",
            format!(
                "must be one of 20, 40, 60 and a multiple of the configured {} ms",
                state.config.rtp.ptime_ms
            ),
        ));
    } else if let Some(codec) = codec
        && !codec.supports_ptime(ptime_ms)
    {
        errors.push(FieldError::new(
            "ptime_ms",
            format!("{codec} cannot use {ptime_ms} ms packets"),
        ));
    }
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
struct ClusterFilter {
    /// Only clusters in this area's subtree.
    area: Option<String>,
}

/// Every cluster, optionally only those below an area.
#[utoipa::path(get, path = "/api/v1/clusters", tag = "clusters", security(("bearer" = [])),
    params(ClusterFilter),
    responses((status = 200, body = [Cluster])))]
async fn list_clusters(
    State(state): State<AppState>,
    Extension(principal): Extension<Principal>,
    Query(filter): Query<ClusterFilter>,
) -> Result<Json<Vec<Cluster>>, ApiError> {
    let rows = match principal.list_area(filter.area.as_deref())? {
        Some(area) => {
            let codes = state
                .store
                .area_subtree(std::slice::from_ref(&area))
                .await?;
            if codes.is_empty() {
                return Err(ApiError::field(
                    "area",
                    format!("area `{area}` does not exist"),
                ));
            }
            state.store.clusters_in_areas(&codes).await?
        }
        None => state.store.clusters().await?,
    };
    rows.into_iter()
        .map(|r| Cluster::from_row(r).map(|c| c.with_reception(&state)))
        .collect::<Result<_, _>>()
        .map(Json)
}

/// The cluster `id`, or a 404 naming it.
pub(crate) async fn find(state: &AppState, id: &str) -> Result<ClusterRow, ApiError> {
    state.store.cluster(id).await.map_err(|e| match e {
        StoreError::NotFound => ApiError::not_found("cluster", id),
        other => other.into(),
    })
}

/// One cluster.
#[utoipa::path(get, path = "/api/v1/clusters/{id}", tag = "clusters", security(("bearer" = [])),
    params(("id" = String, Path)),
    responses((status = 200, body = Cluster), (status = 404, body = Problem)))]
async fn get_cluster(
    State(state): State<AppState>,
    Extension(principal): Extension<Principal>,
    Path(id): Path<String>,
) -> Result<Json<Cluster>, ApiError> {
    let row = find(&state, &id).await?;
    principal.require_area(&row.area_code)?;
    Cluster::from_row(row).map(|c| Json(c.with_reception(&state)))
}

/// What PATCH may change; every field optional.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct UpdateCluster {
    name: Option<String>,
    codec: Option<String>,
    ptime_ms: Option<u32>,
    endpoint: Option<EndpointSpec>,
    /// 0-100: the cluster's agent applies it from its next heartbeat.
    volume: Option<u8>,
    enabled: Option<bool>,
    /// Turn SRTP on (a new key) or off; from the cluster's next programme.
    srtp: Option<bool>,
}

/// Changes a cluster. Volume reaches the agent with its next heartbeat answer; a new
/// codec, packet time or endpoint applies from the next programme the cluster airs (a
/// new codec or packet time is a new RTP stream, the old one ending with BYE).
#[utoipa::path(patch, path = "/api/v1/clusters/{id}", tag = "clusters", security(("bearer" = [])),
    params(("id" = String, Path)),
    request_body = UpdateCluster,
    responses((status = 200, body = Cluster), (status = 404, body = Problem), (status = 422, body = Problem)))]
async fn update_cluster(
    State(state): State<AppState>,
    Extension(principal): Extension<Principal>,
    Path(id): Path<String>,
    JsonBody(body): JsonBody<UpdateCluster>,
) -> Result<Json<Cluster>, ApiError> {
    let mut row = find(&state, &id).await?;
    principal.require_area(&row.area_code)?;
    let mut errors = Vec::new();
    if let Some(name) = &body.name {
        match parse_name(name, 200) {
            Ok(name) => row.name = name,
            Err(e) => errors.push(FieldError::new("name", e.0)),
        }
    }
    let mut codec: Option<Codec> = row.codec.parse().ok();
    if let Some(c) = &body.codec {
        codec = c
            .parse::<Codec>()
            .map_err(|e| errors.push(FieldError::new("codec", e.to_string())))
            .ok();
    }
    let ptime_ms = body.ptime_ms.unwrap_or(row.ptime_ms as u32);
    check_ptime(&state, codec, ptime_ms, &mut errors);
    let mut endpoint = None;
    if let Some(spec) = &body.endpoint {
        endpoint = Endpoint::parse(spec)
            .map_err(|(field, why)| errors.push(FieldError::new(field, why.0)))
            .ok();
    }
    if body.volume.is_some_and(|v| v > 100) {
        errors.push(FieldError::new("volume", "must be between 0 and 100"));
    }
    if endpoint == Some(Endpoint::Registered) && row.agent_key.is_none() {
        errors.push(FieldError::new(
            "endpoint.mode",
            "this cluster has no agent token to sign keepalives: re-create it to register it",
        ));
    }
    if !errors.is_empty() {
        return Err(validation(errors));
    }
    if let Some(codec) = codec {
        row.codec = codec.to_string();
    }
    row.ptime_ms = i64::from(ptime_ms);
    if let Some(endpoint) = endpoint {
        row.endpoint = serde_json::to_string(&endpoint.to_spec()).map_err(ApiError::internal)?;
    }
    if let Some(volume) = body.volume {
        row.volume = i64::from(volume);
    }
    if let Some(enabled) = body.enabled {
        row.enabled = enabled;
    }
    match (body.srtp, row.srtp_key.is_some()) {
        (Some(true), false) => {
            row.srtp_key = Some(crate::rtp::srtp::MasterKey::generate().to_inline());
        }
        (Some(false), true) => row.srtp_key = None,
        _ => {}
    }
    state
        .store
        .update_cluster(&row)
        .await
        .map_err(|e| match e {
            StoreError::NotFound => ApiError::not_found("cluster", &id),
            other => other.into(),
        })?;
    // Where a cluster's stream goes is what a hijacker would change: every edit is audited.
    let detail = serde_json::json!({
        "name": body.name, "codec": body.codec, "ptime_ms": body.ptime_ms,
        "endpoint": body.endpoint, "volume": body.volume, "enabled": body.enabled,
        "srtp": body.srtp,
    })
    .to_string();
    state
        .store
        .audit(crate::store::AuditEntry {
            actor: &principal.actor(),
            action: "cluster.update",
            target: Some(&id),
            detail: Some(&detail),
            result: "ok",
        })
        .await?;
    if let Some(endpoint) = endpoint {
        let key = row.agent_key.as_deref().and_then(|k| hex::decode(k).ok());
        match (endpoint, key) {
            (Endpoint::Registered, Some(key)) => state.engine.registry().set_key(&id, key),
            _ => state.engine.registry().remove(&id),
        }
    }
    Cluster::from_row(row).map(|c| Json(c.with_reception(&state)))
}

/// Removes a cluster; what it was airing stops and its stream ends with BYE.
#[utoipa::path(delete, path = "/api/v1/clusters/{id}", tag = "clusters", security(("bearer" = [])),
    params(("id" = String, Path)),
    responses((status = 204), (status = 404, body = Problem)))]
async fn delete_cluster(
    State(state): State<AppState>,
    Extension(principal): Extension<Principal>,
    Path(id): Path<String>,
) -> Result<StatusCode, ApiError> {
    let row = find(&state, &id).await?;
    principal.require_area(&row.area_code)?;
    state.store.delete_cluster(&id).await.map_err(|e| match e {
        StoreError::NotFound => ApiError::not_found("cluster", &id),
        other => other.into(),
    })?;
    state.engine.remove_cluster(&id);
    state.engine.registry().remove(&id);
    state.engine.reports().forget(&id);
    state.monitor.forget(&id);
    audit(
        &state,
        &principal,
        "cluster.delete",
        Some(&id),
        Some(&row.name),
    )
    .await?;
    Ok(StatusCode::NO_CONTENT)
}

/// The SDP of the stream this cluster receives: give it to ffplay, ffmpeg, GStreamer or
/// VLC to play the cluster's audio.
#[utoipa::path(get, path = "/api/v1/clusters/{id}/sdp", tag = "clusters", security(("bearer" = [])),
    params(("id" = String, Path)),
    responses((status = 200, content_type = "application/sdp", body = String),
              (status = 404, body = Problem),
              (status = 409, body = Problem, description = "a registered cluster with no current address")))]
async fn cluster_sdp(
    State(state): State<AppState>,
    Extension(principal): Extension<Principal>,
    Path(id): Path<String>,
) -> Result<impl IntoResponse, ApiError> {
    let row = find(&state, &id).await?;
    principal.require_area(&row.area_code)?;
    let cluster = Cluster::from_row(row.clone())?;
    let endpoint = Endpoint::parse(&cluster.endpoint).map_err(|(f, e)| {
        ApiError::internal(format!("stored endpoint of {id} is invalid: {f}: {}", e.0))
    })?;
    let destination = match endpoint.rtp_destination() {
        Some(to) => to,
        None => {
            state
                .engine
                .registry()
                .registration(&id, std::time::Instant::now())
                .ok_or_else(|| {
                    ApiError::Conflict(
                        "this registered cluster has no current address: its agent has sent no \
                         valid keepalive lately"
                            .into(),
                    )
                })?
                .address
        }
    };
    let srtp = row
        .srtp_key
        .as_deref()
        .and_then(crate::rtp::srtp::MasterKey::from_inline);
    let local = state.engine.rtp_local_addr().ip();
    let origin = if local.is_unspecified() {
        let listen = state.config.server.listen.ip();
        if listen.is_unspecified() {
            IpAddr::from([127, 0, 0, 1])
        } else {
            listen
        }
    } else {
        local
    };
    let text = sdp::render_with_settings(
        &sdp::StreamDescription {
            session_id: row.sdp_session_id as u64,
            session_version: 1,
            origin,
            name: &cluster.name,
            destination,
            codec: cluster.codec,
            ptime_ms: cluster.ptime_ms,
            multicast_ttl: endpoint.multicast_ttl(),
            rtcp_mux: endpoint == Endpoint::Registered,
            srtp: srtp.as_ref(),
        },
        &CodecSettings {
            opus_bitrate_bps: state.config.rtp.opus_bitrate_kbps * 1000,
        },
    );
    Ok(([(header::CONTENT_TYPE, "application/sdp")], text))
}
