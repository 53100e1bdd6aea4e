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
use crate::playout::{Destination, Frames, Interruption, Priority, Target};
use crate::relay::RelaySpec;
use crate::store::{AudioRow, ClusterRow, StoreError, now_rfc3339, status};

/// What to air, where, and when.
pub(crate) struct Airing {
    pub priority: Priority,
    pub on_interrupt: Interruption,
    pub repeat: u32,
    pub audio: Vec<AudioRow>,
    /// A live relay instead of `audio`.
    pub relay: Option<RelayAiring>,
    pub clusters: Vec<ClusterRow>,
    /// The planned instant; `None`: at once.
    pub at: Option<SystemTime>,
}

/// A relay to air, and where its window starts (its planned instant, even when it airs
/// late; `None`: now).
pub(crate) struct RelayAiring {
    pub spec: RelaySpec,
    pub window_start: Option<SystemTime>,
}

/// The library rows of the first `max` of `ids`, in order; each unknown id is pushed onto
/// `errors` as `audio_ids[i]`.
pub(crate) async fn lookup_audio(
    state: &AppState,
    ids: &[String],
    max: usize,
    errors: &mut Vec<FieldError>,
) -> Result<Vec<AudioRow>, ApiError> {
    let mut audio = Vec::with_capacity(ids.len().min(max));
    for (i, id) in ids.iter().enumerate().take(max) {
        match state.store.audio(id).await {
            Ok(row) => audio.push(row),
            Err(StoreError::NotFound) => errors.push(FieldError::new(
                format!("audio_ids[{i}]"),
                format!("audio `{id}` does not exist"),
            )),
            Err(e) => return Err(e.into()),
        }
    }
    Ok(audio)
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

/// Builds the frames of each (codec, ptime) once (or, for a relay, starts the relay
/// and its live feeds), then hands the broadcast to the engine.
pub(crate) async fn prepare_and_play(state: AppState, id: String, airing: Airing) {
    let Airing {
        priority,
        on_interrupt,
        repeat,
        audio,
        relay,
        clusters,
        at,
    } = airing;
    let prepared = match &relay {
        Some(relay) => relay_targets(&state, &id, relay, &clusters)
            .await
            .map(|(targets, job)| (targets, Some(job))),
        None => build_targets(&state, repeat, &audio, &clusters)
            .await
            .map(|targets| (targets, None)),
    };
    let (targets, job) = match prepared {
        Ok(prepared) => prepared,
        Err(why) => return fail(&state, &id, &why).await,
    };
    // It may have been cancelled while the audio was being prepared.
    match state.store.broadcast(&id).await {
        Ok(b) if b.status == status::QUEUED => {
            if let Some(job) = job {
                // The relay connects now, so that its cushion is full when the first
                // packet is due.
                tokio::spawn(crate::relay::run(state.clone(), job));
            }
            let handed = match at {
                Some(at) => state
                    .engine
                    .play_at(&id, priority, on_interrupt, targets, at),
                None => state.engine.play(&id, priority, on_interrupt, targets),
            };
            if !handed {
                state.relays.stop(&id);
                fail(&state, &id, "the playout engine has stopped").await;
            }
        }
        Ok(_) => {}
        Err(e) => tracing::error!(broadcast = %id, error = %e, "cannot read broadcast"),
    }
}

/// A relay's live feeds (one per codec and packet size), its clusters' targets reading
/// them, and the job that fills them.
async fn relay_targets(
    state: &AppState,
    id: &str,
    relay: &RelayAiring,
    clusters: &[ClusterRow],
) -> Result<(Vec<Target>, crate::relay::Job), String> {
    let spec = &relay.spec;
    let url = reqwest::Url::parse(&spec.url).map_err(|e| format!("relay url: {e}"))?;
    let mut outputs: Vec<crate::relay::pipeline::Output> = Vec::new();
    let mut targets = Vec::with_capacity(clusters.len());
    for c in clusters {
        let (codec, ptime_ms) = cluster_format(c)?;
        let feed = match outputs
            .iter()
            .find(|o| o.codec == codec && o.ptime_ms == ptime_ms)
        {
            Some(o) => o.feed.clone(),
            None => {
                let feed = crate::relay::feed_for(&state.config.relay, ptime_ms);
                outputs.push(crate::relay::pipeline::Output {
                    codec,
                    ptime_ms,
                    feed: feed.clone(),
                });
                feed
            }
        };
        targets.push(target(c, codec, ptime_ms, Frames::Live(feed))?);
    }
    let fallback_id = spec
        .fallback_audio_id
        .clone()
        .unwrap_or_else(|| state.config.relay.fallback_audio_id.clone());
    let fallback = if fallback_id.is_empty() {
        None
    } else {
        let row = state
            .store
            .audio(&fallback_id)
            .await
            .map_err(|e| format!("relay fallback audio `{fallback_id}`: {e}"))?;
        let clip = clip_ref(&row);
        let mut frames = Vec::with_capacity(outputs.len());
        for o in &outputs {
            frames.push(
                state
                    .library
                    .frames(&clip, o.codec, o.ptime_ms)
                    .await
                    .map_err(|e| e.to_string())?,
            );
        }
        Some(crate::relay::Fallback {
            audio_id: fallback_id,
            frames,
        })
    };
    let start = relay.window_start.unwrap_or_else(SystemTime::now);
    let job = crate::relay::Job {
        broadcast: id.to_string(),
        url,
        ends_at: SystemTime::from(crate::relay::window_end(
            start.into(),
            spec.duration_s,
            state.config.quiet_hours().as_ref(),
            state.config.timezone(),
        )),
        outputs,
        fallback,
    };
    Ok((targets, job))
}

fn clip_ref(a: &AudioRow) -> ClipRef {
    ClipRef {
        id: a.id.clone(),
        file_name: a.file_name.clone(),
        loudness: a
            .loudness_lufs
            .zip(a.true_peak_dbtp)
            .map(|(integrated_lufs, true_peak_dbtp)| Loudness {
                integrated_lufs,
                true_peak_dbtp,
            }),
    }
}

fn cluster_format(c: &ClusterRow) -> Result<(Codec, u32), String> {
    let codec: Codec = c
        .codec
        .parse()
        .map_err(|e: crate::codec::UnknownCodec| e.to_string())?;
    Ok((codec, c.ptime_ms as u32))
}

/// Where and how a cluster's programme goes, with its frames.
fn target(c: &ClusterRow, codec: Codec, ptime_ms: u32, frames: Frames) -> Result<Target, String> {
    let spec: EndpointSpec = serde_json::from_str(&c.endpoint).map_err(|e| e.to_string())?;
    let endpoint = Endpoint::parse(&spec).map_err(|(f, e)| format!("{f}: {}", e.0))?;
    Ok(Target {
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
    })
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
    let clips: Vec<ClipRef> = audio.iter().map(clip_ref).collect();
    // One programme per (codec, ptime), shared by every cluster that uses it.
    let mut programmes: BTreeMap<(Codec, u32), Arc<[Bytes]>> = BTreeMap::new();
    let mut targets = Vec::with_capacity(clusters.len());
    for c in clusters {
        let (codec, ptime_ms) = cluster_format(c)?;
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
        targets.push(target(c, codec, ptime_ms, Frames::Clip(frames))?);
    }
    Ok(targets)
}
