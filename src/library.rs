//! The announcement library on disk: uploaded files under `data_dir/audio`, and the
//! payload frames of each (clip, codec, ptime), built once — at first use — kept under
//! `data_dir/frames` so they survive a restart, and shared by every cluster that airs
//! them. The CPU work runs on the blocking pool, never on the reactor.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use bytes::{Buf, BufMut, Bytes, BytesMut};
use sha2::{Digest, Sha256};
use tokio::sync::OnceCell;

use crate::codec::{Codec, CodecSettings};
use crate::media::{self, DecodeError, DecodeLimits, Loudness, LoudnessTarget};

/// Why the library could not do what was asked.
#[derive(Debug, thiserror::Error)]
pub enum LibraryError {
    /// The upload is not decodable audio.
    #[error(transparent)]
    Decode(#[from] DecodeError),
    /// Resampling failed (a rate the resampler refuses).
    #[error("cannot resample: {0}")]
    Resample(String),
    /// The encoder refused the audio or its settings.
    #[error("cannot encode: {0}")]
    Encode(String),
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

/// How clips are prepared for air.
#[derive(Debug, Clone, Copy)]
pub struct AirSettings {
    /// Integrated loudness every clip is brought to (EBU R128).
    pub target_lufs: f64,
    /// True-peak ceiling the gain may not push a clip past.
    pub true_peak_ceiling_dbtp: f64,
    /// Silence between playlist items.
    pub gap_ms: u32,
    /// An attention chime before each programme.
    pub chime: bool,
    pub codec: CodecSettings,
}

impl AirSettings {
    pub fn target(&self) -> LoudnessTarget {
        LoudnessTarget {
            integrated_lufs: self.target_lufs,
            true_peak_dbtp: self.true_peak_ceiling_dbtp,
        }
    }
}

/// One clip of a playlist, as the store knows it.
#[derive(Debug, Clone)]
pub struct ClipRef {
    pub id: String,
    pub file_name: String,
    /// As measured at upload, so preparing it for air need not measure it again.
    pub loudness: Option<Loudness>,
}

type FrameKey = (String, Codec, u32);
pub type Frames = Arc<[Bytes]>;

/// Bumped when the frame file layout or the way clips are prepared changes, so stale
/// cache files are never read.
const FRAME_FORMAT: &str = "loaxa-frames-1";
const FRAME_MAGIC: &[u8; 8] = b"LXFRAME1";
/// Key of the generated attention chime in the frame cache.
const CHIME_ID: &str = "_chime";
/// Key of the generated emergency attention tone in the frame cache.
const ATTENTION_ID: &str = "_attention";

pub struct Library {
    audio_dir: PathBuf,
    frames_dir: PathBuf,
    limits: DecodeLimits,
    settings: AirSettings,
    /// Hash of everything that shapes the frames, part of every cache file name.
    settings_tag: String,
    frames: Mutex<HashMap<FrameKey, Arc<OnceCell<Frames>>>>,
    encodes: AtomicU64,
}

impl Library {
    /// Opens (creating) `data_dir/audio` and `data_dir/frames`.
    pub fn open(
        data_dir: &Path,
        limits: DecodeLimits,
        settings: AirSettings,
    ) -> Result<Self, LibraryError> {
        let audio_dir = data_dir.join("audio");
        let frames_dir = data_dir.join("frames");
        for dir in [&audio_dir, &frames_dir] {
            std::fs::create_dir_all(dir).map_err(|source| LibraryError::Io {
                path: dir.clone(),
                source,
            })?;
        }
        let settings_tag = {
            let key = format!(
                "{FRAME_FORMAT}|{}|{}|{}",
                settings.target_lufs,
                settings.true_peak_ceiling_dbtp,
                settings.codec.opus_bitrate_bps
            );
            hex::encode(&Sha256::digest(key.as_bytes())[..6])
        };
        Ok(Self {
            audio_dir,
            frames_dir,
            limits,
            settings,
            settings_tag,
            frames: Mutex::new(HashMap::new()),
            encodes: AtomicU64::new(0),
        })
    }

    /// Where an upload in progress is written (inside the library, so the final rename
    /// stays on one file system).
    pub fn upload_path(&self, id: &str) -> PathBuf {
        self.audio_dir.join(format!(".{id}.upload"))
    }

    /// Decodes and measures the upload at `upload` (from [`Library::upload_path`]); if it
    /// is good audio it becomes clip `id`, otherwise the file is removed. Nothing is left
    /// behind for a refused file.
    pub async fn ingest(
        &self,
        id: &str,
        upload: PathBuf,
        extension: Option<String>,
    ) -> Result<Ingested, LibraryError> {
        let limits = self.limits;
        let hint = extension.clone();
        let path = upload.clone();
        let decoded = tokio::task::spawn_blocking(move || {
            let decoded = media::decode_file(&path, hint.as_deref(), limits)?;
            let loudness = media::measure(&decoded.mono, decoded.sample_rate);
            Ok::<_, DecodeError>((decoded, loudness))
        })
        .await
        .map_err(|e| LibraryError::Worker(e.to_string()))
        .and_then(|r| r.map_err(LibraryError::from));
        let (decoded, loudness) = match decoded {
            Ok(d) => d,
            Err(e) => {
                let _ = tokio::fs::remove_file(&upload).await;
                return Err(e);
            }
        };
        let ext =
            sanitize_extension(extension.as_deref()).unwrap_or_else(|| decoded.format.clone());
        let file_name = format!("{id}.{ext}");
        let path = self.audio_dir.join(&file_name);
        if let Err(source) = tokio::fs::rename(&upload, &path).await {
            let _ = tokio::fs::remove_file(&upload).await;
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

    /// Deletes a stored clip, its cached frames in memory and on disk.
    pub async fn remove(&self, id: &str, file_name: &str) {
        let _ = tokio::fs::remove_file(self.audio_dir.join(file_name)).await;
        if let Ok(mut frames) = self.frames.lock() {
            frames.retain(|(audio, _, _), _| audio != id);
        }
        if let Ok(mut entries) = tokio::fs::read_dir(&self.frames_dir).await {
            let prefix = format!("{id}.");
            while let Ok(Some(entry)) = entries.next_entry().await {
                if entry.file_name().to_string_lossy().starts_with(&prefix) {
                    let _ = tokio::fs::remove_file(entry.path()).await;
                }
            }
        }
    }

    /// How clips (and relays) are prepared for air.
    pub fn settings(&self) -> &AirSettings {
        &self.settings
    }

    /// How many times a clip was actually decoded and encoded (not served from cache).
    pub fn encode_count(&self) -> u64 {
        self.encodes.load(Ordering::Relaxed)
    }

    /// The whole programme for one (codec, ptime): the chime if configured, then each
    /// clip with the configured gap between them, `repeat` times.
    pub async fn programme(
        &self,
        clips: &[ClipRef],
        repeat: u32,
        codec: Codec,
        ptime_ms: u32,
    ) -> Result<Frames, LibraryError> {
        let mut items = Vec::with_capacity(clips.len());
        for clip in clips {
            items.push(self.frames(clip, codec, ptime_ms).await?);
        }
        let gap_frames = (self.settings.gap_ms / ptime_ms.max(1)) as usize;
        let gap = if gap_frames > 0 {
            codec
                .silence(ptime_ms, gap_frames, &self.settings.codec)
                .map_err(|e| LibraryError::Encode(e.to_string()))?
        } else {
            Vec::new()
        };
        let mut all = Vec::new();
        if self.settings.chime {
            all.extend(self.chime(codec, ptime_ms).await?.iter().cloned());
            all.extend(gap.iter().cloned());
        }
        for round in 0..repeat {
            for (i, item) in items.iter().enumerate() {
                if round > 0 || i > 0 {
                    all.extend(gap.iter().cloned());
                }
                all.extend(item.iter().cloned());
            }
        }
        Ok(all.into())
    }

    /// An emergency programme for one (codec, ptime): `repeat` times the attention tone
    /// (if `tone`) then the clips back to back, with `interval_ms` of silence between
    /// rounds. No chime: the attention tone is the emergency's own signal.
    pub async fn emergency_programme(
        &self,
        clips: &[ClipRef],
        repeat: u32,
        interval_ms: u32,
        tone: bool,
        codec: Codec,
        ptime_ms: u32,
    ) -> Result<Frames, LibraryError> {
        let mut items = Vec::with_capacity(clips.len());
        for clip in clips {
            items.push(self.frames(clip, codec, ptime_ms).await?);
        }
        let silence = |ms: u32| {
            let n = (ms / ptime_ms.max(1)) as usize;
            if n == 0 {
                return Ok(Vec::new());
            }
            codec
                .silence(ptime_ms, n, &self.settings.codec)
                .map_err(|e| LibraryError::Encode(e.to_string()))
        };
        let gap = silence(self.settings.gap_ms)?;
        let interval = silence(interval_ms)?;
        let attention = if tone {
            Some(self.attention(codec, ptime_ms).await?)
        } else {
            None
        };
        let mut all = Vec::new();
        for round in 0..repeat.max(1) {
            if round > 0 {
                all.extend(interval.iter().cloned());
            }
            if let Some(attention) = &attention {
                all.extend(attention.iter().cloned());
                all.extend(gap.iter().cloned());
            }
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    all.extend(gap.iter().cloned());
                }
                all.extend(item.iter().cloned());
            }
        }
        Ok(all.into())
    }

    /// Prepares (encodes and caches) `clip` for every (codec, ptime) in `formats`, so an
    /// emergency that uses it later starts at once.
    pub async fn prepare(&self, clip: &ClipRef, formats: &[(Codec, u32)]) {
        for &(codec, ptime_ms) in formats {
            if let Err(e) = self.frames(clip, codec, ptime_ms).await {
                tracing::warn!(clip = %clip.id, %codec, error = %e, "could not prepare a clip");
            }
            if let Err(e) = self.attention(codec, ptime_ms).await {
                tracing::warn!(%codec, error = %e, "could not prepare the attention tone");
            }
        }
    }

    /// The payload frames of one clip for `codec` at `ptime_ms`: normalised, resampled
    /// (band-limited) and encoded once, then served from memory or the disk cache.
    pub async fn frames(
        &self,
        clip: &ClipRef,
        codec: Codec,
        ptime_ms: u32,
    ) -> Result<Frames, LibraryError> {
        let cell = self.cell(&clip.id, codec, ptime_ms);
        let source = self.audio_dir.join(&clip.file_name);
        let target = self.settings.target();
        let limits = self.limits;
        let settings = self.settings.codec;
        let measured = clip.loudness;
        cell.get_or_try_init(|| {
            self.load_or_build(&clip.id, codec, ptime_ms, move || {
                let ext = source.extension().and_then(|e| e.to_str());
                let mut decoded = media::decode_file(&source, ext, limits)?;
                // Normalised at the clip's own rate, before the band is narrowed, so the
                // limiter sees the real peaks.
                match measured {
                    Some(now) => media::normalise_measured(
                        &mut decoded.mono,
                        decoded.sample_rate,
                        target,
                        now,
                    ),
                    None => media::normalise(&mut decoded.mono, decoded.sample_rate, target),
                };
                let samples =
                    media::resample(&decoded.mono, decoded.sample_rate, codec.sample_rate())
                        .map_err(|e| LibraryError::Resample(e.to_string()))?;
                codec
                    .encode(&samples, ptime_ms, &settings)
                    .map_err(|e| LibraryError::Encode(e.to_string()))
            })
        })
        .await
        .cloned()
    }

    async fn chime(&self, codec: Codec, ptime_ms: u32) -> Result<Frames, LibraryError> {
        let cell = self.cell(CHIME_ID, codec, ptime_ms);
        let settings = self.settings;
        cell.get_or_try_init(|| {
            self.load_or_build(CHIME_ID, codec, ptime_ms, move || {
                let rate = codec.sample_rate();
                let mut samples = chime_samples(rate);
                media::normalise(&mut samples, rate, settings.target());
                codec
                    .encode(&samples, ptime_ms, &settings.codec)
                    .map_err(|e| LibraryError::Encode(e.to_string()))
            })
        })
        .await
        .cloned()
    }

    async fn attention(&self, codec: Codec, ptime_ms: u32) -> Result<Frames, LibraryError> {
        let cell = self.cell(ATTENTION_ID, codec, ptime_ms);
        let settings = self.settings;
        cell.get_or_try_init(|| {
            self.load_or_build(ATTENTION_ID, codec, ptime_ms, move || {
                let rate = codec.sample_rate();
                let mut samples = attention_samples(rate);
                media::normalise(&mut samples, rate, settings.target());
                codec
                    .encode(&samples, ptime_ms, &settings.codec)
                    .map_err(|e| LibraryError::Encode(e.to_string()))
            })
        })
        .await
        .cloned()
    }

    fn cell(&self, id: &str, codec: Codec, ptime_ms: u32) -> Arc<OnceCell<Frames>> {
        let mut map = match self.frames.lock() {
            Ok(m) => m,
            Err(poisoned) => poisoned.into_inner(),
        };
        map.entry((id.to_string(), codec, ptime_ms))
            .or_default()
            .clone()
    }

    /// Reads the cache file of (id, codec, ptime) or builds the frames with `build` on the
    /// blocking pool and writes the file (atomically: a crash never leaves half a file).
    async fn load_or_build(
        &self,
        id: &str,
        codec: Codec,
        ptime_ms: u32,
        build: impl FnOnce() -> Result<Vec<Bytes>, LibraryError> + Send + 'static,
    ) -> Result<Frames, LibraryError> {
        let path = self.frames_dir.join(format!(
            "{id}.{codec}.{ptime_ms}.{}.frames",
            self.settings_tag
        ));
        if let Ok(data) = tokio::fs::read(&path).await {
            match parse_frames(Bytes::from(data)) {
                Some(frames) => return Ok(frames.into()),
                None => tracing::warn!(path = %path.display(), "corrupt frame cache; rebuilding"),
            }
        }
        let frames = tokio::task::spawn_blocking(build)
            .await
            .map_err(|e| LibraryError::Worker(e.to_string()))??;
        self.encodes.fetch_add(1, Ordering::Relaxed);
        let tmp = path.with_extension("part");
        let data = serialize_frames(&frames);
        let write = async {
            tokio::fs::write(&tmp, &data).await?;
            tokio::fs::rename(&tmp, &path).await
        };
        if let Err(e) = write.await {
            // The frames are still good; only the restart shortcut is lost.
            tracing::warn!(path = %path.display(), error = %e, "cannot write frame cache");
            let _ = tokio::fs::remove_file(&tmp).await;
        }
        Ok(frames.into())
    }
}

fn serialize_frames(frames: &[Bytes]) -> Bytes {
    let size: usize = frames.iter().map(|f| 2 + f.len()).sum();
    let mut out = BytesMut::with_capacity(FRAME_MAGIC.len() + 4 + size);
    out.put_slice(FRAME_MAGIC);
    out.put_u32(frames.len() as u32);
    for f in frames {
        out.put_u16(f.len() as u16);
        out.put_slice(f);
    }
    out.freeze()
}

/// Parses a frame cache file; `None` if it is not exactly what [`serialize_frames`] wrote.
fn parse_frames(mut data: Bytes) -> Option<Vec<Bytes>> {
    if data.len() < FRAME_MAGIC.len() + 4 || &data[..FRAME_MAGIC.len()] != FRAME_MAGIC {
        return None;
    }
    data.advance(FRAME_MAGIC.len());
    let count = data.get_u32() as usize;
    // Each frame takes at least its 2-byte length: a count beyond that is corrupt.
    if count > data.len() / 2 {
        return None;
    }
    let mut frames = Vec::with_capacity(count);
    for _ in 0..count {
        if data.len() < 2 {
            return None;
        }
        let len = data.get_u16() as usize;
        if data.len() < len {
            return None;
        }
        frames.push(data.split_to(len));
    }
    data.is_empty().then_some(frames)
}

/// A two-note attention chime ("ding-dong"), 1.2 s, as mono samples at `rate`.
fn chime_samples(rate: u32) -> Vec<f32> {
    let note = |freq: f32, start: f32, t: f32| {
        let t = t - start;
        if t < 0.0 {
            return 0.0;
        }
        // A bell-like tone: fundamental plus a softer octave, decaying exponentially.
        let envelope = (-3.0 * t).exp() * (t * 200.0).min(1.0);
        envelope
            * (0.7 * (std::f32::consts::TAU * freq * t).sin()
                + 0.3 * (std::f32::consts::TAU * 2.0 * freq * t).sin())
    };
    let n = (rate as f32 * 1.2) as usize;
    (0..n)
        .map(|i| {
            let t = i as f32 / rate as f32;
            0.5 * (note(880.0, 0.0, t) + note(659.26, 0.45, t))
        })
        .collect()
}

/// The emergency attention tone, 2 s: the 853 Hz + 960 Hz pair of broadcast warning
/// systems (the EAS attention signal), in four 0.4 s bursts so it cannot be mistaken for
/// a programme's chime, as mono samples at `rate`. Rates below 2 kHz Nyquist (8 kHz
/// G.711) still carry both tones.
fn attention_samples(rate: u32) -> Vec<f32> {
    let n = (rate as f32 * 2.0) as usize;
    (0..n)
        .map(|i| {
            let t = i as f32 / rate as f32;
            let in_burst = (t % 0.5) < 0.4;
            // 5 ms ramps at each burst edge: no clicks.
            let edge = (t % 0.5).min(0.4 - (t % 0.5)).max(0.0);
            let ramp = (edge / 0.005).min(1.0);
            if !in_burst {
                return 0.0;
            }
            0.45 * ramp
                * ((std::f32::consts::TAU * 853.0 * t).sin()
                    + (std::f32::consts::TAU * 960.0 * t).sin())
        })
        .collect()
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

    fn settings() -> AirSettings {
        AirSettings {
            target_lufs: -16.0,
            true_peak_ceiling_dbtp: -1.0,
            gap_ms: 100,
            chime: false,
            codec: CodecSettings::default(),
        }
    }

    #[test]
    fn only_plain_extensions_are_kept() {
        assert_eq!(sanitize_extension(Some("MP3")), Some("mp3".into()));
        assert_eq!(sanitize_extension(Some("../x")), None);
        assert_eq!(sanitize_extension(Some("")), None);
    }

    #[test]
    fn frame_files_round_trip_and_corrupt_ones_are_refused() {
        let frames = vec![
            Bytes::from_static(b"abc"),
            Bytes::new(),
            Bytes::from(vec![7; 300]),
        ];
        let data = serialize_frames(&frames);
        assert_eq!(parse_frames(data.clone()).unwrap(), frames);
        assert!(parse_frames(data.slice(..data.len() - 1)).is_none());
        let mut extra = data.to_vec();
        extra.push(0);
        assert!(parse_frames(Bytes::from(extra)).is_none());
        let mut huge = data.to_vec();
        huge[8..12].copy_from_slice(&u32::MAX.to_be_bytes());
        assert!(parse_frames(Bytes::from(huge)).is_none());
        assert!(parse_frames(Bytes::from_static(b"not a frame file")).is_none());
    }

    #[test]
    fn the_attention_tone_is_two_seconds_of_bursts_under_full_scale() {
        let s = attention_samples(8000);
        assert_eq!(s.len(), 16_000);
        let peak = s.iter().fold(0.0f32, |m, x| m.max(x.abs()));
        assert!(peak > 0.5 && peak <= 0.9, "{peak}");
        // Silent between bursts (0.4 s on, 0.1 s off).
        assert!(s[3300..3900].iter().all(|x| x.abs() < 1e-6));
        assert!(s[800..1200].iter().any(|x| x.abs() > 0.3));
    }

    #[test]
    fn the_chime_is_audible_and_fits_in_a_second_and_a_half() {
        let s = chime_samples(8000);
        assert_eq!(s.len(), 9600);
        let peak = s.iter().fold(0f32, |m, x| m.max(x.abs()));
        assert!(peak > 0.2 && peak <= 1.0, "peak {peak}");
    }

    async fn library_with_clip(dir: &Path, settings: AirSettings) -> (Library, ClipRef) {
        let lib = Library::open(dir, DecodeLimits::default(), settings).unwrap();
        let src = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("tests/fixtures/announce-vi-48k-24bit-stereo.wav");
        let upload = lib.upload_path("clip");
        std::fs::copy(&src, &upload).unwrap();
        let ingested = lib
            .ingest("clip", upload, Some("wav".into()))
            .await
            .unwrap();
        let clip = ClipRef {
            id: "clip".into(),
            file_name: ingested.file_name,
            loudness: ingested.loudness,
        };
        (lib, clip)
    }

    #[tokio::test]
    async fn frames_are_encoded_once_even_when_asked_for_concurrently() {
        let dir = tempfile::tempdir().unwrap();
        let (lib, clip) = library_with_clip(dir.path(), settings()).await;
        let (a, b, c) = tokio::join!(
            lib.frames(&clip, Codec::Pcmu, 20),
            lib.frames(&clip, Codec::Pcmu, 20),
            lib.frames(&clip, Codec::Pcmu, 20),
        );
        let (a, b, c) = (a.unwrap(), b.unwrap(), c.unwrap());
        assert_eq!(a.len(), 100);
        assert!(
            Arc::ptr_eq(&a, &b) && Arc::ptr_eq(&b, &c),
            "one shared copy"
        );
        assert_eq!(lib.encode_count(), 1);
        lib.frames(&clip, Codec::Pcma, 20).await.unwrap();
        lib.frames(&clip, Codec::Pcmu, 40).await.unwrap();
        assert_eq!(lib.encode_count(), 3, "one encode per (codec, ptime)");
    }

    #[tokio::test]
    async fn cached_frames_survive_a_restart_without_encoding_again() {
        let dir = tempfile::tempdir().unwrap();
        let (lib, clip) = library_with_clip(dir.path(), settings()).await;
        let first = lib.frames(&clip, Codec::Pcma, 20).await.unwrap();
        drop(lib);
        let again = Library::open(dir.path(), DecodeLimits::default(), settings()).unwrap();
        let second = again.frames(&clip, Codec::Pcma, 20).await.unwrap();
        assert_eq!(again.encode_count(), 0, "read from the disk cache");
        assert_eq!(first[..], second[..]);
        // Other loudness settings shape other frames: the old cache is not used.
        let louder = AirSettings {
            target_lufs: -12.0,
            ..settings()
        };
        let other = Library::open(dir.path(), DecodeLimits::default(), louder).unwrap();
        other.frames(&clip, Codec::Pcma, 20).await.unwrap();
        assert_eq!(other.encode_count(), 1);
        // Removing the clip removes its cache files.
        other.remove(&clip.id, &clip.file_name).await;
        let left: Vec<_> = std::fs::read_dir(dir.path().join("frames"))
            .unwrap()
            .collect();
        assert!(left.is_empty(), "{left:?}");
    }

    #[tokio::test]
    async fn a_playlist_airs_its_clips_in_order_with_the_gap_between_and_the_chime_first() {
        let dir = tempfile::tempdir().unwrap();
        let with_chime = AirSettings {
            chime: true,
            ..settings()
        };
        let (lib, clip) = library_with_clip(dir.path(), with_chime).await;
        let one = lib.frames(&clip, Codec::Pcmu, 20).await.unwrap();
        let programme = lib
            .programme(&[clip.clone(), clip.clone()], 2, Codec::Pcmu, 20)
            .await
            .unwrap();
        let chime = 60; // 1.2 s
        let gap = 5; // 100 ms
        assert_eq!(programme.len(), chime + gap + 4 * one.len() + 3 * gap);
        assert_eq!(programme[chime + gap..chime + gap + one.len()], one[..]);
        let silence = Codec::Pcmu
            .silence(20, 1, &CodecSettings::default())
            .unwrap();
        let after_first = chime + gap + one.len();
        assert!(
            programme[after_first..after_first + gap]
                .iter()
                .all(|f| *f == silence[0])
        );
    }

    #[tokio::test]
    async fn a_refused_upload_leaves_no_file() {
        let dir = tempfile::tempdir().unwrap();
        let lib = Library::open(dir.path(), DecodeLimits::default(), settings()).unwrap();
        let upload = lib.upload_path("bad");
        std::fs::write(&upload, b"this is not audio at all").unwrap();
        assert!(lib.ingest("bad", upload, Some("mp3".into())).await.is_err());
        let left: Vec<_> = std::fs::read_dir(dir.path().join("audio"))
            .unwrap()
            .collect();
        assert!(left.is_empty(), "{left:?}");
    }
}
