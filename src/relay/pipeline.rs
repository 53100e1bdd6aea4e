//! From decoded samples to frames on the air: levelled once, watched for dead air, then
//! resampled once per output rate and encoded once per (codec, ptime), each encoder
//! writing the [`LiveFeed`] every cluster of that format reads. Pure and synchronous: it
//! runs on the decoding thread, so per-cluster work stays O(header) in the pacer.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering};

use bytes::Bytes;

use crate::codec::{Codec, CodecSettings, StreamEncoder};
use crate::media::level::{Leveller, SilenceDetector};
use crate::media::resample::StreamResampler;
use crate::media::{LoudnessTarget, frames_to_ms};
use crate::playout::LiveFeed;

/// One format the relay is aired in.
#[derive(Debug, Clone)]
pub struct Output {
    pub codec: Codec,
    pub ptime_ms: u32,
    pub feed: Arc<LiveFeed>,
}

/// What the pipeline has seen, read by the relay's watchdog on another thread.
#[derive(Debug, Default)]
pub struct Meter {
    /// Audio decoded since the relay began, in ms.
    pub decoded_ms: AtomicU64,
    /// The current run of silence (below the dead-air threshold), in ms.
    pub silent_ms: AtomicU64,
    /// The current run of sound, in ms.
    pub heard_ms: AtomicU64,
    /// The leveller's gain, in hundredths of a dB.
    pub gain_centi_db: AtomicI64,
    /// While set, decoded audio is measured but not aired (a fallback clip is on).
    pub muted: AtomicBool,
}

struct Branch {
    rate: u32,
    resampler: Option<StreamResampler>,
    encoders: Vec<(StreamEncoder, Arc<LiveFeed>)>,
    resampled: Vec<f32>,
}

/// The processing chain of one relay.
pub struct Pipeline {
    target: LoudnessTarget,
    silence_threshold_dbfs: f64,
    /// The stream's current rate (it may change at a reconnect); 0 before any audio.
    rate: u32,
    leveller: Option<Leveller>,
    silence: Option<SilenceDetector>,
    branches: Vec<Branch>,
    meter: Arc<Meter>,
    levelled: Vec<f32>,
    frames: Vec<Bytes>,
}

impl Pipeline {
    pub fn new(
        outputs: &[Output],
        settings: &CodecSettings,
        target: LoudnessTarget,
        silence_threshold_dbfs: f64,
        meter: Arc<Meter>,
    ) -> Result<Self, String> {
        let mut branches: Vec<Branch> = Vec::new();
        for out in outputs {
            let encoder = out
                .codec
                .stream_encoder(out.ptime_ms, settings)
                .map_err(|e| e.to_string())?;
            let rate = out.codec.sample_rate();
            match branches.iter_mut().find(|b| b.rate == rate) {
                Some(b) => b.encoders.push((encoder, out.feed.clone())),
                None => branches.push(Branch {
                    rate,
                    resampler: None,
                    encoders: vec![(encoder, out.feed.clone())],
                    resampled: Vec::new(),
                }),
            }
        }
        Ok(Self {
            target,
            silence_threshold_dbfs,
            rate: 0,
            leveller: None,
            silence: None,
            branches,
            meter,
            levelled: Vec::new(),
            frames: Vec::new(),
        })
    }

    /// A new connection: the stream may come back at another rate, and the resamplers'
    /// history belongs to the old one. The leveller's gain is kept (same programme).
    pub fn reset_stream(&mut self) {
        for b in &mut self.branches {
            b.resampler = None;
        }
        self.silence = None;
    }

    /// Takes the next decoded samples (mono, at `rate`).
    pub fn push(&mut self, mono: &[f32], rate: u32) -> Result<(), String> {
        if rate != self.rate {
            self.rate = rate;
            self.leveller = Some(Leveller::new(rate, self.target));
            self.silence = None;
            for b in &mut self.branches {
                b.resampler = None;
            }
        }
        let silence = self
            .silence
            .get_or_insert_with(|| SilenceDetector::new(rate, self.silence_threshold_dbfs));
        silence.push(mono);
        let meter = &self.meter;
        meter
            .decoded_ms
            .fetch_add(frames_to_ms(mono.len() as u64, rate), Ordering::Relaxed);
        meter
            .silent_ms
            .store(silence.silent_ms(), Ordering::Relaxed);
        meter.heard_ms.store(silence.heard_ms(), Ordering::Relaxed);

        self.levelled.clear();
        self.levelled.extend_from_slice(mono);
        if let Some(leveller) = &mut self.leveller {
            leveller.process(&mut self.levelled);
            meter.gain_centi_db.store(
                (leveller.gain_db() * 100.0).round() as i64,
                Ordering::Relaxed,
            );
        }
        if meter.muted.load(Ordering::Relaxed) {
            return Ok(());
        }
        for b in &mut self.branches {
            let input: &[f32] = if b.rate == rate {
                &self.levelled
            } else {
                let resampler = match &mut b.resampler {
                    Some(r) => r,
                    None => b
                        .resampler
                        .insert(StreamResampler::new(rate, b.rate).map_err(|e| e.to_string())?),
                };
                b.resampled.clear();
                resampler
                    .process(&self.levelled, &mut b.resampled)
                    .map_err(|e| e.to_string())?;
                &b.resampled
            };
            for (encoder, feed) in &mut b.encoders {
                self.frames.clear();
                encoder
                    .push(input, &mut self.frames)
                    .map_err(|e| e.to_string())?;
                feed.extend(self.frames.drain(..));
            }
        }
        Ok(())
    }
}
