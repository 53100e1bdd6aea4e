//! EBU R128 measurement of a mono clip: integrated loudness and true peak, the two numbers the
//! normaliser needs. Pure computation over samples; must not do I/O or read the clock.

use ebur128::{EbuR128, Mode};

/// Loudness of a clip per EBU R128 / ITU-R BS.1770.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Loudness {
    /// Gated integrated loudness in LUFS.
    pub integrated_lufs: f64,
    /// Highest inter-sample peak (4x oversampled below 96 kHz) in dBTP.
    pub true_peak_dbtp: f64,
}

/// Measures a mono clip. Returns `None` when integrated loudness is undefined: silence, a clip
/// shorter than one 400 ms gating block, a zero rate, or samples that are not finite.
pub fn measure(mono: &[f32], sample_rate: u32) -> Option<Loudness> {
    if mono.is_empty() || sample_rate == 0 {
        return None;
    }
    let mut meter = EbuR128::new(1, sample_rate, Mode::I | Mode::TRUE_PEAK).ok()?;
    meter.add_frames_f32(mono).ok()?;
    let integrated_lufs = meter.loudness_global().ok()?;
    // Silence and too-short clips come back as -inf; NaN input comes back as NaN. Neither is a
    // loudness one could normalise to.
    if !integrated_lufs.is_finite() {
        return None;
    }
    let peak = meter.true_peak(0).ok()?;
    Some(Loudness {
        integrated_lufs,
        true_peak_dbtp: 20.0 * peak.log10(),
    })
}

#[cfg(test)]
mod tests {
    use super::super::test_support::sine;
    use super::*;
    use crate::media::decode;

    #[test]
    fn a_1_khz_sine_at_minus_6_dbfs_measures_minus_9_lufs() {
        // ffmpeg -i tone-1k-{8k,48k}.wav -af ebur128=peak=true -f null - reports I: -9.0 LUFS
        // for the shared fixtures, which are 2 s of this tone at 8 and 48 kHz.
        for rate in [8_000, 48_000] {
            let loudness = measure(&sine(1000.0, 0.5, rate, 2.0), rate).unwrap();
            assert!(
                (loudness.integrated_lufs - -9.0).abs() < 0.5,
                "{rate} Hz: {loudness:?}"
            );
            assert!(
                (loudness.true_peak_dbtp - -6.0).abs() < 0.5,
                "{rate} Hz: {loudness:?}"
            );
        }
    }

    #[test]
    fn the_flac_announcement_measures_as_ffmpeg_does() {
        // ffmpeg's ebur128 filter: I: -21.7 LUFS for announce-vi.flac (and announce-vi.wav).
        let data = std::fs::read(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/tests/fixtures/announce-vi.flac"
        ))
        .unwrap();
        let audio = decode(&data, Some("flac"), Default::default()).unwrap();
        let loudness = measure(&audio.mono, audio.sample_rate).unwrap();
        assert!(
            (loudness.integrated_lufs - -21.7).abs() < 0.5,
            "{loudness:?}"
        );

        // announce-vi-quiet.wav is the same speech at -34.7 LUFS (13 dB down).
        let gain = 10f32.powf(-13.0 / 20.0);
        let quiet: Vec<f32> = audio.mono.iter().map(|s| s * gain).collect();
        let loudness = measure(&quiet, audio.sample_rate).unwrap();
        assert!(
            (loudness.integrated_lufs - -34.7).abs() < 0.5,
            "{loudness:?}"
        );
    }

    #[test]
    fn silence_has_no_loudness() {
        assert_eq!(measure(&[0.0; 48_000], 48_000), None);
    }

    #[test]
    fn a_clip_shorter_than_one_gating_block_has_no_loudness() {
        assert_eq!(measure(&sine(1000.0, 0.5, 48_000, 0.3), 48_000), None);
    }

    #[test]
    fn empty_clips_zero_rates_and_nan_have_no_loudness() {
        assert_eq!(measure(&[], 48_000), None);
        assert_eq!(measure(&[0.5; 48_000], 0), None);
        assert_eq!(measure(&[f32::NAN; 48_000], 48_000), None);
    }
}
