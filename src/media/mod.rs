//! Media preparation: turns uploaded audio into mono samples, resamples them and measures their
//! loudness. It takes bytes, slices or (for `decode_file`) the path of a stored upload, and
//! returns data; it must not touch the network, the clock or an async runtime, nor any file but
//! the one it is handed (callers run it on a blocking thread).

pub mod decode;
#[cfg(test)]
mod fuzz;
pub mod level;
pub mod loudness;
pub mod normalise;
pub mod resample;

pub use decode::{DecodeError, DecodeLimits, decode, decode_file};
pub use level::{Leveller, SilenceDetector};
pub use loudness::{Loudness, measure};
pub use normalise::{LoudnessTarget, normalise, normalise_measured};
pub use resample::{ResampleError, StreamResampler, resample};

/// Audio decoded from an upload, mixed down to mono, still at its original rate.
#[derive(Debug, Clone)]
pub struct DecodedAudio {
    /// Container short name, lowercase: "wav", "mp3", "flac", "ogg", "mp4" (m4a), ...
    pub format: String,
    /// Codec short name, lowercase: "pcm_s16le", "mp3", "flac", "vorbis", "aac", ...
    pub codec: String,
    /// Original sample rate in Hz.
    pub sample_rate: u32,
    /// Original channel count.
    pub channels: u16,
    /// Samples in [-1, 1], channels averaged (sum / n).
    pub mono: Vec<f32>,
}

impl DecodedAudio {
    /// Duration of `mono` at `sample_rate`, rounded to the nearest millisecond.
    pub fn duration_ms(&self) -> u64 {
        frames_to_ms(self.mono.len() as u64, self.sample_rate)
    }
}

/// Converts a frame count to milliseconds, rounding to nearest. A zero rate yields 0 rather than
/// a division by zero, since a rate of 0 can only come from a value nobody validated.
pub(crate) fn frames_to_ms(frames: u64, rate: u32) -> u64 {
    if rate == 0 {
        return 0;
    }
    // u128 so that frames * 1000 cannot overflow, however long the declared length.
    let rate = u128::from(rate);
    let ms = (u128::from(frames) * 1000 + rate / 2) / rate;
    u64::try_from(ms).unwrap_or(u64::MAX)
}

/// Inputs generated inside tests, shared by the submodules' tests.
#[cfg(test)]
pub(crate) mod test_support {
    /// A 16-bit PCM WAV holding `samples` (interleaved). `declared_data_bytes` overrides the
    /// data size in the header, to build files that lie about their length; `u32::MAX` is the
    /// placeholder streaming writers leave.
    pub(crate) fn wav(
        rate: u32,
        channels: u16,
        samples: &[i16],
        declared_data_bytes: Option<u32>,
    ) -> Vec<u8> {
        let data_bytes = declared_data_bytes.unwrap_or((samples.len() * 2) as u32);
        let mut out = Vec::new();
        out.extend_from_slice(b"RIFF");
        out.extend_from_slice(&data_bytes.saturating_add(36).to_le_bytes());
        out.extend_from_slice(b"WAVEfmt ");
        out.extend_from_slice(&16u32.to_le_bytes());
        out.extend_from_slice(&1u16.to_le_bytes()); // integer PCM
        out.extend_from_slice(&channels.to_le_bytes());
        out.extend_from_slice(&rate.to_le_bytes());
        out.extend_from_slice(&(rate * u32::from(channels) * 2).to_le_bytes());
        out.extend_from_slice(&(channels * 2).to_le_bytes());
        out.extend_from_slice(&16u16.to_le_bytes());
        out.extend_from_slice(b"data");
        out.extend_from_slice(&data_bytes.to_le_bytes());
        for s in samples {
            out.extend_from_slice(&s.to_le_bytes());
        }
        out
    }

    /// `seconds` of a sine at `freq` Hz with the given peak (1.0 = full scale).
    pub(crate) fn sine(freq: f64, peak: f64, rate: u32, seconds: f64) -> Vec<f32> {
        let len = (f64::from(rate) * seconds).round() as usize;
        (0..len)
            .map(|i| {
                let t = i as f64 / f64::from(rate);
                (peak * (2.0 * std::f64::consts::PI * freq * t).sin()) as f32
            })
            .collect()
    }

    /// A sine as 16-bit PCM samples, ready for `wav`.
    pub(crate) fn sine_i16(freq: f64, peak: f64, rate: u32, seconds: f64) -> Vec<i16> {
        sine(freq, peak, rate, seconds)
            .iter()
            .map(|&s| (s * 32767.0).round() as i16)
            .collect()
    }

    /// Amplitude of the `freq` component of `x`, by correlation with a sine and a cosine.
    /// Exact for a pure tone when `x` spans a whole number of its periods.
    pub(crate) fn amplitude_at(x: &[f32], freq: f64, rate: u32) -> f64 {
        let w = 2.0 * std::f64::consts::PI * freq / f64::from(rate);
        let (mut re, mut im) = (0.0, 0.0);
        for (i, &s) in x.iter().enumerate() {
            re += f64::from(s) * (w * i as f64).cos();
            im += f64::from(s) * (w * i as f64).sin();
        }
        2.0 * (re * re + im * im).sqrt() / x.len() as f64
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn audio(len: usize, rate: u32) -> DecodedAudio {
        DecodedAudio {
            format: "wav".into(),
            codec: "pcm_s16le".into(),
            sample_rate: rate,
            channels: 1,
            mono: vec![0.0; len],
        }
    }

    #[test]
    fn duration_is_rounded_to_the_nearest_millisecond() {
        // 163066 frames at 16 kHz are 10191.625 ms.
        assert_eq!(audio(163_066, 16_000).duration_ms(), 10_192);
        // 449451 frames at 44.1 kHz are 10191.63 ms.
        assert_eq!(audio(449_451, 44_100).duration_ms(), 10_192);
        assert_eq!(audio(7, 16_000).duration_ms(), 0);
        assert_eq!(audio(8, 16_000).duration_ms(), 1);
    }

    #[test]
    fn a_zero_rate_gives_a_zero_duration_instead_of_panicking() {
        assert_eq!(audio(100, 0).duration_ms(), 0);
    }
}
