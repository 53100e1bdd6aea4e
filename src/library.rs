//! The announcement library on disk: uploaded files under `data_dir/audio`, and the
//! payload frames of each (clip, codec, ptime), built once and shared by every cluster
//! that airs them. The CPU work runs on the blocking pool, never on the reactor.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use bytes::Bytes;

use crate::codec::Codec;
use crate::media::{self, DecodeError, DecodeLimits, DecodedAudio, Loudness};

/// Why the library could not do what was asked.
#[derive(Debug, thiserror::Error)]
pub enum LibraryError {
    /// The upload is not decodable audio.
    #[error(transparent)]
    Decode(#[from] DecodeError),
    /// Resampling failed (a rate the resampler refuses).
    #[error("cannot resample: {0}")]
    Resample(String),
    /// The file system failed.
    #[error("audio file {path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    /// A blocking task died.
    #[error("worker failed: {0}")]
    Worker(String),
}

/// What an accepted upload turned out to be.
#[derive(Debug, Clone)]
pub struct Ingested {
    pub file_name: String,
    pub format: String,
    pub codec: String,
    pub sample_rate: u32,
    pub channels: u16,
    pub duration_ms: u64,
    pub loudness: Option<Loudness>,
}

/// Loudness normalisation settings.
#[derive(Debug, Clone, Copy)]
pub struct Levels {
    pub target_lufs: f64,
    pub true_peak_ceiling_dbtp: f64,
}

type FrameKey = (String, Codec, u32);

pub struct Library {
    dir: PathBuf,
    limits: DecodeLimits,
    levels: Levels,
    frames: Mutex<HashMap<FrameKey, Arc<[Bytes]>>>,
}

impl Library {
    /// Opens (creating) `data_dir/audio`.
    pub fn open(
        data_dir: &Path,
        limits: DecodeLimits,
        levels: Levels,
    ) -> Result<Self, LibraryError> {
        let dir = data_dir.join("audio");
        std::fs::create_dir_all(&dir).map_err(|source| LibraryError::Io {
            path: dir.clone(),
            source,
        })?;
        Ok(Self {
            dir,
            limits,
            levels,
            frames: Mutex::new(HashMap::new()),
        })
    }

    /// Decodes and measures `data`; if it is good audio, stores it as `id` and returns
    /// what it is. Nothing is written for a file that is refused.
    pub async fn ingest(
        &self,
        id: &str,
        data: Bytes,
        extension: Option<String>,
    ) -> Result<Ingested, LibraryError> {
        let limits = self.limits;
        let ext_hint = extension.clone();
        let (decoded, loudness) = tokio::task::spawn_blocking(move || {
            let decoded = media::decode(&data, ext_hint.as_deref(), limits)?;
            let loudness = media::measure(&decoded.mono, decoded.sample_rate);
            Ok::<_, DecodeError>((decoded, loudness, data))
        })
        .await
        .map_err(|e| LibraryError::Worker(e.to_string()))?
        .map(|(d, l, data)| ((d, data), l))?;
        let (decoded, data) = decoded;
        let ext =
            sanitize_extension(extension.as_deref()).unwrap_or_else(|| decoded.format.clone());
        let file_name = format!("{id}.{ext}");
        let path = self.dir.join(&file_name);
        let tmp = self.dir.join(format!(".{file_name}.part"));
        // Write then rename, so a crash never leaves a half file under the real name.
        let write = async {
            tokio::fs::write(&tmp, &data).await?;
            tokio::fs::rename(&tmp, &path).await
        };
        if let Err(source) = write.await {
            let _ = tokio::fs::remove_file(&tmp).await;
            return Err(LibraryError::Io { path, source });
        }
        Ok(Ingested {
            file_name,
            format: decoded.format.clone(),
            codec: decoded.codec.clone(),
            sample_rate: decoded.sample_rate,
            channels: decoded.channels,
            duration_ms: decoded.duration_ms(),
            loudness,
        })
    }

    /// Deletes a stored file and its cached frames.
    pub async fn remove(&self, id: &str, file_name: &str) {
        let _ = tokio::fs::remove_file(self.dir.join(file_name)).await;
        if let Ok(mut frames) = self.frames.lock() {
            frames.retain(|(audio, _, _), _| audio != id);
        }
    }

    /// The payload frames of clip `id` for `codec` at `ptime_ms`: normalised to the
    /// configured loudness, resampled (band-limited) and encoded, once.
    pub async fn frames(
        &self,
        id: &str,
        file_name: &str,
        loudness: Option<Loudness>,
        codec: Codec,
        ptime_ms: u32,
    ) -> Result<Arc<[Bytes]>, LibraryError> {
        let key = (id.to_string(), codec, ptime_ms);
        if let Some(hit) = self.frames.lock().ok().and_then(|f| f.get(&key).cloned()) {
            return Ok(hit);
        }
        let path = self.dir.join(file_name);
        let data = tokio::fs::read(&path)
            .await
            .map_err(|source| LibraryError::Io { path, source })?;
        let limits = self.limits;
        let gain = gain_for(loudness, self.levels);
        let ext = Path::new(file_name)
            .extension()
            .and_then(|e| e.to_str())
            .map(str::to_string);
        let frames: Arc<[Bytes]> = tokio::task::spawn_blocking(move || {
            let decoded: DecodedAudio = media::decode(&data, ext.as_deref(), limits)?;
            let mut samples =
                media::resample(&decoded.mono, decoded.sample_rate, codec.sample_rate())
                    .map_err(|e| LibraryError::Resample(e.to_string()))?;
            if gain != 1.0 {
                for s in &mut samples {
                    *s *= gain;
                }
            }
            Ok::<_, LibraryError>(codec.encode_frames(&samples, ptime_ms).into())
        })
        .await
        .map_err(|e| LibraryError::Worker(e.to_string()))??;
        if let Ok(mut cache) = self.frames.lock() {
            cache.insert(key, frames.clone());
        }
        Ok(frames)
    }
}

/// Linear gain that brings a clip to the target loudness without its true peak passing
/// the ceiling. Unknown loudness (silence) is left alone.
fn gain_for(loudness: Option<Loudness>, levels: Levels) -> f32 {
    let Some(l) = loudness else {
        return 1.0;
    };
    let wanted = levels.target_lufs - l.integrated_lufs;
    let allowed = levels.true_peak_ceiling_dbtp - l.true_peak_dbtp;
    let db = wanted.min(allowed);
    10f64.powf(db / 20.0) as f32
}

/// Keeps a short alphanumeric extension of the uploaded name, for the decoder's hint.
pub fn sanitize_extension(ext: Option<&str>) -> Option<String> {
    let ext = ext?.to_ascii_lowercase();
    (!ext.is_empty() && ext.len() <= 5 && ext.chars().all(|c| c.is_ascii_alphanumeric()))
        .then_some(ext)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gain_brings_a_quiet_clip_up_but_not_past_the_peak_ceiling() {
        let levels = Levels {
            target_lufs: -16.0,
            true_peak_ceiling_dbtp: -1.0,
        };
        let quiet = Loudness {
            integrated_lufs: -26.0,
            true_peak_dbtp: -20.0,
        };
        assert!((gain_for(Some(quiet), levels) - 10f32.powf(0.5)).abs() < 1e-4);
        let peaky = Loudness {
            integrated_lufs: -26.0,
            true_peak_dbtp: -3.0,
        };
        assert!((gain_for(Some(peaky), levels) - 10f32.powf(0.1)).abs() < 1e-4);
        assert_eq!(gain_for(None, levels), 1.0);
    }

    #[test]
    fn only_plain_extensions_are_kept() {
        assert_eq!(sanitize_extension(Some("MP3")), Some("mp3".into()));
        assert_eq!(sanitize_extension(Some("../x")), None);
        assert_eq!(sanitize_extension(Some("")), None);
    }
}
