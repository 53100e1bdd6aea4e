//! Campaigns from `schedules/*.toml`, kept in step with the store at start-up and on
//! SIGHUP: valid files become (or update) campaigns with `source: file`, approved (the
//! host's owner wrote them) and read-only in the API; their audio files join the library
//! once (by content hash); campaigns whose file is gone are removed. A file with errors
//! is not loaded: its errors are logged, and what was loaded from it before stays.

use std::collections::BTreeSet;
use std::path::Path;

use chrono::Utc;
use sha2::{Digest, Sha256};

use crate::api::AppState;
use crate::api::audio::{Upload, ingest_upload};
use crate::api::broadcasts::Targets;
use crate::api::campaigns::{ScheduleSpec, approval};
use crate::schedules_dir::{self, LoadedFile};
use crate::store::{CampaignRow, StoreError, now_rfc3339};

/// Reads `dir` and brings the file campaigns in the store in line with it.
pub async fn sync(state: &AppState, dir: &Path) -> anyhow::Result<()> {
    let config = state.config.clone();
    let read_from = dir.to_path_buf();
    let report = tokio::task::spawn_blocking(move || {
        schedules_dir::read_dir(&read_from, &config, Utc::now())
    })
    .await?;
    let mut report = match report {
        Ok(r) => r,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            tracing::debug!(dir = %dir.display(), "no schedules directory");
            return Ok(());
        }
        Err(e) => return Err(anyhow::anyhow!("cannot read {}: {e}", dir.display())),
    };
    schedules_dir::check_targets(&mut report, &state.store).await?;
    let mut present = BTreeSet::new();
    for file in &report.files {
        present.insert(file.id.clone());
        for e in &file.errors {
            tracing::error!("{}:{}: {}", file.path.display(), e.line, e.reason);
        }
    }
    let mut loaded = 0;
    for file in report.campaigns() {
        match upsert(state, file).await {
            Ok(()) => loaded += 1,
            Err(e) => tracing::error!(file = %file.path.display(), error = %e, "cannot load"),
        }
    }
    for row in state.store.campaigns().await? {
        if row.source == "file" && !present.contains(&row.id) {
            state.store.delete_campaign(&row.id).await?;
            tracing::info!(campaign = %row.id, "file removed: campaign removed");
        }
    }
    tracing::info!(dir = %dir.display(), loaded, errors = report.error_count(), "schedules loaded");
    state.calendar.notify_one();
    Ok(())
}

/// The library id of an audio file: from its content, so a reload imports nothing twice.
fn audio_id(bytes: &[u8]) -> String {
    format!("file-{}", &hex::encode(Sha256::digest(bytes))[..32])
}

async fn import_audio(state: &AppState, path: &Path) -> anyhow::Result<String> {
    let bytes = tokio::fs::read(path).await?;
    let id = audio_id(&bytes);
    match state.store.audio(&id).await {
        Ok(_) => return Ok(id),
        Err(StoreError::NotFound) => {}
        Err(e) => return Err(e.into()),
    }
    let upload = state.library.upload_path(&id);
    tokio::fs::write(&upload, &bytes).await?;
    let name = path.file_name().and_then(|n| n.to_str()).map(String::from);
    let title = path
        .file_stem()
        .and_then(|s| s.to_str())
        .unwrap_or("schedule audio")
        .chars()
        .take(200)
        .collect();
    ingest_upload(
        state,
        Upload {
            id: id.clone(),
            path: upload,
            extension: path
                .extension()
                .and_then(|e| e.to_str())
                .map(|e| e.to_ascii_lowercase()),
            title,
            topic: None,
            original_name: name,
            size_bytes: bytes.len() as i64,
        },
    )
    .await
    .map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?;
    Ok(id)
}

async fn upsert(state: &AppState, loaded: &LoadedFile) -> anyhow::Result<()> {
    let mut audio_ids = Vec::new();
    for a in &loaded.audio {
        audio_ids.push(import_audio(state, &a.path).await?);
    }
    let file = &loaded.file;
    let spec = ScheduleSpec {
        cron: file.cron_text.clone(),
        timezone: file.timezone_text.clone(),
        starts_on: file.starts_on_text.clone(),
        ends_on: file.ends_on_text.clone(),
    };
    let targets = Targets {
        areas: file.targets.areas.clone(),
        clusters: file.targets.clusters.clone(),
    };
    let now = now_rfc3339();
    let row = CampaignRow {
        id: loaded.id.clone(),
        title: file.title.clone(),
        topic: loaded.topic().to_string(),
        audio_ids: serde_json::to_string(&audio_ids)?,
        targets: serde_json::to_string(&targets)?,
        schedule: serde_json::to_string(&spec)?,
        priority: file.priority.clone(),
        repeat: i64::from(file.repeat),
        on_interrupt: file
            .on_interrupt
            .clone()
            .unwrap_or_else(|| "restart".into()),
        approval: approval::APPROVED.into(),
        approved_at: Some(now.clone()),
        paused: false,
        source: "file".into(),
        source_path: Some(loaded.path.display().to_string()),
        created_at: now.clone(),
        updated_at: now.clone(),
        last_planned_at: now,
        relay: file
            .relay
            .as_ref()
            .map(|r| {
                serde_json::to_string(&crate::relay::RelaySpec {
                    url: r.url.clone(),
                    duration_s: r.duration_s,
                    fallback_audio_id: None,
                })
            })
            .transpose()?,
    };
    match state.store.campaign(&row.id).await {
        Ok(old) => {
            let same = old.title == row.title
                && old.topic == row.topic
                && old.audio_ids == row.audio_ids
                && old.relay == row.relay
                && old.targets == row.targets
                && old.schedule == row.schedule
                && old.priority == row.priority
                && old.repeat == row.repeat
                && old.on_interrupt == row.on_interrupt
                && old.source_path == row.source_path;
            if !same {
                state
                    .store
                    .update_campaign(&CampaignRow {
                        created_at: old.created_at,
                        approved_at: old.approved_at.or(row.approved_at.clone()),
                        ..row
                    })
                    .await?;
                tracing::info!(campaign = %loaded.id, "file campaign updated");
            }
        }
        Err(StoreError::NotFound) => {
            state.store.insert_campaign(&row).await?;
            tracing::info!(campaign = %loaded.id, "file campaign loaded");
        }
        Err(e) => return Err(e.into()),
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_same_bytes_give_the_same_audio_id() {
        assert_eq!(audio_id(b"ID3abc"), audio_id(b"ID3abc"));
        assert_ne!(audio_id(b"ID3abc"), audio_id(b"ID3abd"));
        assert!(audio_id(b"x").starts_with("file-"));
    }
}
