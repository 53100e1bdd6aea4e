//! One airing, from request to engine, shared by play-now broadcasts and the campaign
//! calendar: targets resolved to clusters, frames prepared off the reactor (once per
//! codec and packet size), then handed to the engine for now or for a planned instant.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::SystemTime;

use bytes::Bytes;

use super::AppState;
use super::broadcasts::Targets;
use super::problem::{ApiError, FieldError};
use crate::codec::Codec;
use crate::fleet::{Endpoint, EndpointSpec};
use crate::library::ClipRef;
use crate::media::Loudness;
use crate::playout::{Destination, Interruption, Priority, Target};
use crate::store::{AudioRow, ClusterRow, StoreError, now_rfc3339, status};

/// What to air, where, and when.
pub(crate) struct Airing {
    pub priority: Priority,
    pub on_interrupt: Interruption,
    pub repeat: u32,
    pub audio: Vec<AudioRow>,
    pub clusters: Vec<ClusterRow>,
    /// The planned instant; `None`: at once.
    pub at: Option<SystemTime>,
}

/// The clusters `targets` names (areas expand to every cluster in their subtree, as they
/// are now), by id; unknown areas and clusters are pushed onto `errors` by field.
pub(crate) async fn resolve_clusters(
    state: &AppState,
    targets: &Targets,
    errors: &mut Vec<FieldError>,
) -> Result<BTreeMap<String, ClusterRow>, ApiError> {
    let mut clusters: BTreeMap<String, ClusterRow> = BTreeMap::new();
    for (i, code) in targets.areas.iter().enumerate() {
        let codes = state.store.area_subtree(std::slice::from_ref(code)).await?;
        if codes.is_empty() {
            errors.push(FieldError::new(
                format!("targets.areas[{i}]"),
                format!("area `{code}` does not exist"),
            ));
            continue;
        }
        for c in state.store.clusters_in_areas(&codes).await? {
            clusters.insert(c.id.clone(), c);
        }
    }
    for (i, id) in targets.clusters.iter().enumerate() {
        match state.store.cluster(id).await {
            Ok(c) => {
                clusters.insert(c.id.clone(), c);
            }
            Err(StoreError::NotFound) => errors.push(FieldError::new(
                format!("targets.clusters[{i}]"),
                format!("cluster `{id}` does not exist"),
            )),
            Err(e) => return Err(e.into()),
        }
    }
    Ok(clusters)
}

/// Builds the frames of each (codec, ptime) once, then hands the broadcast to the engine.
pub(crate) async fn prepare_and_play(state: AppState, id: String, airing: Airing) {
    let Airing {
        priority,
        on_interrupt,
        repeat,
        audio,
        clusters,
        at,
    } = airing;
    match build_targets(&state, repeat, &audio, &clusters).await {
        Ok(targets) => {
            // It may have been cancelled while the audio was being prepared.
            match state.store.broadcast(&id).await {
                Ok(b) if b.status == status::QUEUED => {
                    let handed = match at {
                        Some(at) => state
                            .engine
                            .play_at(&id, priority, on_interrupt, targets, at),
                        None => state.engine.play(&id, priority, on_interrupt, targets),
                    };
                    if !handed {
                        fail(&state, &id, "the playout engine has stopped").await;
                    }
                }
                Ok(_) => {}
                Err(e) => tracing::error!(broadcast = %id, error = %e, "cannot read broadcast"),
            }
        }
        Err(why) => fail(&state, &id, &why).await,
    }
}

pub(crate) async fn fail(state: &AppState, id: &str, why: &str) {
    tracing::error!(broadcast = %id, reason = why, "broadcast failed");
    let now = now_rfc3339();
    if let Ok(runs) = state.store.broadcast_clusters(id).await {
        for run in runs {
            let _ = state
                .store
                .set_broadcast_cluster_status(id, &run.cluster_id, status::FAILED, None, &now)
                .await;
        }
    }
    let _ = state
        .store
        .set_broadcast_status(id, status::FAILED, Some(why))
        .await;
}

pub(crate) async fn build_targets(
    state: &AppState,
    repeat: u32,
    audio: &[AudioRow],
    clusters: &[ClusterRow],
) -> Result<Vec<Target>, String> {
    let clips: Vec<ClipRef> = audio
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
    // One programme per (codec, ptime), shared by every cluster that uses it.
    let mut programmes: BTreeMap<(Codec, u32), Arc<[Bytes]>> = BTreeMap::new();
    let mut targets = Vec::with_capacity(clusters.len());
    for c in clusters {
        let codec: Codec = c
            .codec
            .parse()
            .map_err(|e: crate::codec::UnknownCodec| e.to_string())?;
        let ptime_ms = c.ptime_ms as u32;
        let spec: EndpointSpec = serde_json::from_str(&c.endpoint).map_err(|e| e.to_string())?;
        let endpoint = Endpoint::parse(&spec).map_err(|(f, e)| format!("{f}: {}", e.0))?;
        let frames = match programmes.get(&(codec, ptime_ms)) {
            Some(f) => f.clone(),
            None => {
                let frames = state
                    .library
                    .programme(&clips, repeat, codec, ptime_ms)
                    .await
                    .map_err(|e| e.to_string())?;
                programmes.insert((codec, ptime_ms), frames.clone());
                frames
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
            frames,
        });
    }
    Ok(targets)
}
