//! Loudness normalisation for air: bring a clip to the target integrated loudness (EBU
//! R128) and keep its true peak under the ceiling with a look-ahead peak limiter, so a
//! quiet recording with sharp peaks reaches the target instead of stopping short of it.
//! Pure: samples in, samples out.

use std::collections::VecDeque;

use super::loudness::{Loudness, measure};

/// What every clip is brought to.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct LoudnessTarget {
    pub integrated_lufs: f64,
    pub true_peak_dbtp: f64,
}

/// Look-ahead of the limiter: gain starts falling this long before a peak, so the peak is
/// never clipped and the gain change is a ramp, not a step.
const LOOKAHEAD_S: f64 = 0.005;
/// Time constant of the gain's return to unity after a peak: slow enough not to pump on
/// speech syllables.
const RELEASE_S: f64 = 0.080;
/// Rounds of gain + limiting: limiting lowers loudness a little, so a second round adds
/// make-up gain; true-peak overshoot of the sample-peak limiter is corrected the same way.
const MAX_ROUNDS: usize = 4;
/// Close enough to the target to stop (LU / dB).
const TOLERANCE: f64 = 0.2;

/// Normalises `samples` (mono, at `rate`) in place and returns the loudness it now has,
/// or `None` for silence (left untouched).
pub fn normalise(samples: &mut [f32], rate: u32, target: LoudnessTarget) -> Option<Loudness> {
    let now = measure(samples, rate)?;
    normalise_measured(samples, rate, target, now)
}

/// [`normalise`] for samples whose loudness is already known (measured at upload), which
/// saves a full EBU R128 pass.
pub fn normalise_measured(
    samples: &mut [f32],
    rate: u32,
    target: LoudnessTarget,
    mut now: Loudness,
) -> Option<Loudness> {
    // The limiter's threshold starts at the ceiling and is lowered by any true-peak
    // overshoot it leaves (inter-sample peaks above the sample peaks it sees).
    let mut threshold_db = target.true_peak_dbtp;
    for _ in 0..MAX_ROUNDS {
        let gain_db = target.integrated_lufs - now.integrated_lufs;
        let gain = db_to_linear(gain_db);
        for s in samples.iter_mut() {
            *s *= gain;
        }
        // A plain gain moves loudness and true peak by exactly `gain_db`: when that keeps
        // the peak under the ceiling, the result is known without measuring again
        // (measuring true peak is the costly part of the whole pipeline).
        let predicted_peak = now.true_peak_dbtp + gain_db;
        if predicted_peak <= target.true_peak_dbtp {
            return Some(Loudness {
                integrated_lufs: target.integrated_lufs,
                true_peak_dbtp: predicted_peak,
            });
        }
        limit(samples, rate, db_to_linear(threshold_db));
        now = measure(samples, rate)?;
        let loud_enough = (now.integrated_lufs - target.integrated_lufs).abs() <= TOLERANCE;
        let under_ceiling = now.true_peak_dbtp <= target.true_peak_dbtp + 0.05;
        if loud_enough && under_ceiling {
            break;
        }
        if !under_ceiling {
            threshold_db -= now.true_peak_dbtp - target.true_peak_dbtp + 0.1;
        }
    }
    Some(now)
}

fn db_to_linear(db: f64) -> f32 {
    10f64.powf(db / 20.0) as f32
}

/// Keeps every sample's magnitude at or under `threshold` with a smooth gain: the gain at
/// each sample is the mean, over the look-ahead, of the minimum gain needed in the
/// look-ahead that follows — never above what any sample needs — then released slowly.
fn limit(samples: &mut [f32], rate: u32, threshold: f32) {
    let n = samples.len();
    let lookahead = ((f64::from(rate) * LOOKAHEAD_S).round() as usize).max(1);
    let release = 1.0 - (-1.0 / (f64::from(rate) * RELEASE_S)).exp() as f32;
    // Gain each sample needs on its own.
    let needed: Vec<f32> = samples
        .iter()
        .map(|s| {
            let a = s.abs();
            if a > threshold { threshold / a } else { 1.0 }
        })
        .collect();
    if needed.iter().all(|&g| g >= 1.0) {
        return;
    }
    // h[k] = min(needed[k .. k + lookahead]) with a monotonic deque, O(n).
    let mut h = vec![1.0f32; n];
    let mut window: VecDeque<usize> = VecDeque::new();
    for i in (0..n).rev() {
        while window.back().is_some_and(|&j| needed[j] >= needed[i]) {
            window.pop_back();
        }
        window.push_back(i);
        while window.front().is_some_and(|&j| j >= i + lookahead) {
            window.pop_front();
        }
        h[i] = window.front().map_or(1.0, |&j| needed[j]);
    }
    // g[n] = mean(h[n - lookahead + 1 ..= n]) <= needed[n], because every h[k] in that
    // range covers sample n. Then the release: rise towards 1 no faster than `release`,
    // and never above g.
    let mut sum = 0.0f64;
    let mut gain = 1.0f32;
    for i in 0..n {
        sum += f64::from(h[i]);
        if i >= lookahead {
            sum -= f64::from(h[i - lookahead]);
        }
        // Before the first full window, missing terms count as unity gain.
        let terms = (i + 1).min(lookahead);
        let mean = ((sum + (lookahead - terms) as f64) / lookahead as f64) as f32;
        gain = (gain + (1.0 - gain) * release).min(mean);
        samples[i] *= gain;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn speechlike(rate: u32, seconds: f32, level: f32) -> Vec<f32> {
        // A tone with a syllable-rate envelope and short sharp clicks: the shape that
        // makes plain gain stop short of the target under a peak ceiling.
        let n = (rate as f32 * seconds) as usize;
        (0..n)
            .map(|i| {
                let t = i as f32 / rate as f32;
                let env = (0.5 + 0.5 * (t * 4.0 * std::f32::consts::TAU).sin()).powi(2);
                let click = if i % (rate as usize / 3) < 3 {
                    8.0
                } else {
                    1.0
                };
                level * env * click * (t * 300.0 * std::f32::consts::TAU).sin()
            })
            .map(|s| s.clamp(-1.0, 1.0))
            .collect()
    }

    const TARGET: LoudnessTarget = LoudnessTarget {
        integrated_lufs: -16.0,
        true_peak_dbtp: -1.0,
    };

    #[test]
    fn a_quiet_clip_with_sharp_peaks_reaches_the_target_under_the_ceiling() {
        let mut s = speechlike(16000, 6.0, 0.02);
        let before = measure(&s, 16000).unwrap();
        // Plain gain to -16 LUFS would put these peaks far over -1 dBTP.
        assert!(before.true_peak_dbtp - before.integrated_lufs > 15.0 + 1.0);
        let after = normalise(&mut s, 16000, TARGET).unwrap();
        assert!((after.integrated_lufs + 16.0).abs() <= 0.3, "{after:?}");
        assert!(after.true_peak_dbtp <= -0.95, "{after:?}");
    }

    #[test]
    fn a_loud_clip_is_brought_down_without_limiting() {
        let mut s: Vec<f32> = (0..48000)
            .map(|i| 0.9 * (i as f32 * 1000.0 / 48000.0 * std::f32::consts::TAU).sin())
            .collect();
        let after = normalise(&mut s, 48000, TARGET).unwrap();
        assert!((after.integrated_lufs + 16.0).abs() <= 0.3, "{after:?}");
        // A pure tone brought down stays a pure tone: its peak is exactly scaled.
        let peak = s.iter().fold(0f32, |m, x| m.max(x.abs()));
        let expected = 0.9 * db_to_linear(-16.0 - measure_tone_lufs());
        assert!(
            (peak - expected).abs() < 0.01,
            "peak {peak} expected {expected}"
        );
    }

    fn measure_tone_lufs() -> f64 {
        let s: Vec<f32> = (0..48000)
            .map(|i| 0.9 * (i as f32 * 1000.0 / 48000.0 * std::f32::consts::TAU).sin())
            .collect();
        measure(&s, 48000).unwrap().integrated_lufs
    }

    #[test]
    fn silence_is_left_alone() {
        let mut s = vec![0.0f32; 16000];
        assert!(normalise(&mut s, 16000, TARGET).is_none());
        assert!(s.iter().all(|&x| x == 0.0));
    }

    #[test]
    fn the_limiter_never_lets_a_sample_over_the_threshold_and_ramps_smoothly() {
        let mut s: Vec<f32> = (0..8000)
            .map(|i| if i == 4000 { 1.0 } else { 0.1 })
            .collect();
        limit(&mut s, 8000, 0.5);
        assert!(s.iter().all(|x| x.abs() <= 0.5 + 1e-6));
        // The gain ramps down before the peak (look-ahead) and recovers after it.
        assert!(s[3990] < 0.1 && s[3990] > 0.05, "{}", s[3990]);
        assert!(s[7999] > 0.099, "recovered: {}", s[7999]);
    }
}
