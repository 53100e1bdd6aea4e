//! Band-limited sample-rate conversion of a mono clip held in memory (rubato's windowed-sinc
//! resampler), time-aligned with its input. Must not do I/O or read the clock.

use rubato::audioadapter_buffers::direct::InterleavedSlice;
use rubato::{
    Async, FixedAsync, Resampler, SincInterpolationParameters, SincInterpolationType,
    WindowFunction,
};

/// Frames handed to rubato per call. Only affects speed, not the result; 1024 keeps the working
/// set in cache.
const CHUNK_FRAMES: usize = 1024;

/// Sinc filter length in taps (a multiple of 8, as rubato requires). 256 with a
/// Blackman-Harris² window keeps an 8 kHz output flat to 3 kHz (-0.8 dB at 3.4 kHz, the top of
/// the telephone band) while putting aliases more than 100 dB down, far below what G.711 can
/// reproduce.
const SINC_TAPS: usize = 256;

/// Why a clip could not be resampled.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ResampleError {
    /// One of the rates is zero, which has no meaning.
    #[error("cannot resample from {from} Hz to {to} Hz")]
    InvalidRate {
        /// Input rate in Hz.
        from: u32,
        /// Output rate in Hz.
        to: u32,
    },
    /// rubato rejected the configuration or failed while processing.
    #[error("resampler failed: {0}")]
    Resampler(String),
}

/// Resamples `mono` from `from` Hz to `to` Hz.
///
/// The output has exactly `round(len * to / from)` samples and sample `k` corresponds to input
/// time `k / to` seconds (to within 1/128 of an input sample, rubato's sinc table step): the
/// filter's delay is removed exactly and the tail is cut at the rounded length. `from == to`
/// returns a copy.
pub fn resample(mono: &[f32], from: u32, to: u32) -> Result<Vec<f32>, ResampleError> {
    if from == 0 || to == 0 {
        return Err(ResampleError::InvalidRate { from, to });
    }
    if from == to {
        return Ok(mono.to_vec());
    }
    let out_len = output_len(mono.len(), from, to);
    if mono.is_empty() {
        return Ok(Vec::new());
    }

    // Cubic interpolation between the points of rubato's oversampled sinc table keeps the
    // interpolation error far below 16-bit noise at any ratio.
    let params = SincInterpolationParameters::new(SINC_TAPS, WindowFunction::BlackmanHarris2)
        .interpolation(SincInterpolationType::Cubic);
    let ratio = f64::from(to) / f64::from(from);
    // 1.0: the ratio never changes during a clip.
    let mut resampler =
        Async::<f32>::new_sinc(ratio, 1.0, &params, CHUNK_FRAMES, 1, FixedAsync::Input)
            .map_err(rubato_error)?;

    // rubato's output lags its input by half the filter (SINC_TAPS / 2 input samples) less one
    // output sample; measured on rubato 5.0, whose own `output_delay()` rounds that down and
    // misses the one sample, and pinned by `the_output_is_time_aligned_with_the_input`. The lag
    // is a whole number of output samples only when the input samples before the filter centre
    // are a multiple of `from / gcd`, so lead the clip with enough silence to make it one, then
    // skip exactly that many output samples.
    let step = (from / gcd(from, to)) as usize;
    let half_taps = SINC_TAPS / 2;
    let lead = (step - half_taps % step) % step;
    let mut to_skip = mul_div(half_taps + lead, to, from).saturating_sub(1);

    let mut out = Vec::with_capacity(out_len + resampler.output_frames_max());
    let mut chunk_in = vec![0.0; resampler.input_frames_max()];
    let mut chunk_out = vec![0.0; resampler.output_frames_max()];
    let mut pos = 0;
    // Each call consumes a full chunk, so the input needed for the skipped and wanted output
    // plus the filter bounds the number of calls; the bound turns a resampler that stops
    // producing into an error instead of a hang.
    let needed_input = mul_div(to_skip + out_len, from, to) + lead + SINC_TAPS;
    let max_calls = needed_input / CHUNK_FRAMES * 2 + 16;
    for _ in 0..max_calls {
        if out.len() >= out_len {
            break;
        }
        let need = resampler.input_frames_next().min(chunk_in.len());
        // Past the end of the clip the chunk is silence, which flushes the filter's tail.
        fill_chunk(&mut chunk_in[..need], mono, lead, pos);
        pos += need;
        let source = InterleavedSlice::new(&chunk_in[..need], 1, need).map_err(rubato_error)?;
        let capacity = chunk_out.len();
        let mut sink = InterleavedSlice::new_mut(chunk_out.as_mut_slice(), 1, capacity)
            .map_err(rubato_error)?;
        let (_, produced) = resampler
            .process_into_buffer(&source, &mut sink, None)
            .map_err(rubato_error)?;
        let produced = chunk_out.get(..produced).unwrap_or(&chunk_out);
        let skipped = to_skip.min(produced.len());
        to_skip -= skipped;
        out.extend_from_slice(&produced[skipped..]);
    }
    if out.len() < out_len {
        return Err(ResampleError::Resampler(
            "resampler stopped producing output".into(),
        ));
    }
    out.truncate(out_len);
    Ok(out)
}

/// Fills `chunk` with frames `pos..` of the clip as rubato should see it: `lead` zeros, then
/// `mono`, then silence for ever. Avoids copying the whole clip just to prepend a few zeros.
fn fill_chunk(chunk: &mut [f32], mono: &[f32], lead: usize, pos: usize) {
    chunk.fill(0.0);
    let zeros = lead.saturating_sub(pos).min(chunk.len());
    let start = pos.saturating_sub(lead).min(mono.len());
    let n = (chunk.len() - zeros).min(mono.len() - start);
    chunk[zeros..zeros + n].copy_from_slice(&mono[start..start + n]);
}

fn rubato_error(e: impl std::fmt::Display) -> ResampleError {
    ResampleError::Resampler(e.to_string())
}

/// `round(len * to / from)` in integers, so long clips do not lose precision.
fn output_len(len: usize, from: u32, to: u32) -> usize {
    let from = u128::from(from);
    let exact = (len as u128 * u128::from(to) + from / 2) / from;
    usize::try_from(exact).unwrap_or(usize::MAX)
}

/// `value * to / from`, rounded down, without intermediate overflow.
fn mul_div(value: usize, to: u32, from: u32) -> usize {
    let exact = value as u128 * u128::from(to) / u128::from(from.max(1));
    usize::try_from(exact).unwrap_or(usize::MAX)
}

fn gcd(mut a: u32, mut b: u32) -> u32 {
    while b != 0 {
        (a, b) = (b, a % b);
    }
    a
}

#[cfg(test)]
mod tests {
    use super::super::test_support::{amplitude_at, sine, sine_i16, wav};
    use super::*;
    use crate::media::decode;

    fn db(ratio: f64) -> f64 {
        20.0 * ratio.log10()
    }

    /// The middle second of a 2 s clip at `rate`, away from the filter's edge effects, and a
    /// whole number of 1 kHz and 2 kHz periods long.
    fn middle(x: &[f32], rate: u32) -> &[f32] {
        let start = (rate / 2) as usize;
        &x[start..start + rate as usize]
    }

    #[test]
    fn a_1_khz_tone_decoded_at_48_khz_keeps_its_level_at_8_khz() {
        let file = wav(48_000, 1, &sine_i16(1000.0, 0.5, 48_000, 2.0), None);
        let audio = decode(&file, Some("wav"), Default::default()).unwrap();
        let out = resample(&audio.mono, 48_000, 8_000).unwrap();
        let before = amplitude_at(middle(&audio.mono, 48_000), 1000.0, 48_000);
        let after = amplitude_at(middle(&out, 8_000), 1000.0, 8_000);
        let change = db(after / before);
        assert!(change.abs() < 0.5, "1 kHz changed by {change:.2} dB");
    }

    #[test]
    fn a_6_khz_tone_does_not_alias_into_an_8_khz_output() {
        // 6 kHz is above the 4 kHz Nyquist limit of the output; without a proper low-pass it
        // would fold back to 2 kHz. Measure everything that is left, not just 2 kHz.
        let input = sine(6000.0, 0.5, 48_000, 2.0);
        let out = resample(&input, 48_000, 8_000).unwrap();
        let left = middle(&out, 8_000);
        let rms =
            (left.iter().map(|&s| f64::from(s).powi(2)).sum::<f64>() / left.len() as f64).sqrt();
        let input_rms = 0.5 / 2f64.sqrt();
        let attenuation = db(rms / input_rms);
        assert!(attenuation < -40.0, "6 kHz only down {attenuation:.1} dB");
        assert!(amplitude_at(left, 2000.0, 8_000) < 0.5 * 0.01);
    }

    #[test]
    fn the_output_length_is_the_rounded_rate_ratio() {
        let cases = [
            (1001, 44_100, 8_000, 182), // 181.59
            (48_000, 48_000, 8_000, 8_000),
            (22_050, 22_050, 48_000, 48_000),
            (7, 8_000, 48_000, 42),
            (449_451, 44_100, 8_000, 81_533), // 81533.06
        ];
        for (len, from, to, expected) in cases {
            let out = resample(&vec![0.0; len], from, to).unwrap();
            assert_eq!(out.len(), expected, "{len} samples {from} -> {to}");
        }
    }

    /// Phase of the `freq` component of `x[start..start + len]`, in radians.
    fn phase_at(x: &[f32], freq: f64, rate: u32, start: usize, len: usize) -> f64 {
        let w = 2.0 * std::f64::consts::PI * freq / f64::from(rate);
        let (mut re, mut im) = (0.0, 0.0);
        for (i, &s) in x.iter().enumerate().skip(start).take(len) {
            re += f64::from(s) * (w * i as f64).cos();
            im += f64::from(s) * (w * i as f64).sin();
        }
        im.atan2(re)
    }

    #[test]
    fn the_output_is_time_aligned_with_the_input() {
        // A 50 Hz tone's phase over the middle second gives the delay to a small fraction of a
        // sample; a misaligned trim shows up as whole or half samples.
        let pairs = [
            (48_000, 8_000),
            (44_100, 8_000),
            (22_050, 8_000),
            (16_000, 8_000),
            (8_000, 48_000),
            (44_100, 16_000),
        ];
        for (from, to) in pairs {
            let input = sine(50.0, 0.5, from, 2.0);
            let out = resample(&input, from, to).unwrap();
            let shift = phase_at(&out, 50.0, to, (to / 2) as usize, to as usize)
                - phase_at(&input, 50.0, from, (from / 2) as usize, from as usize);
            let delay_samples = shift / (2.0 * std::f64::consts::PI * 50.0) * f64::from(to);
            assert!(
                delay_samples.abs() < 0.1,
                "{from} -> {to}: off by {delay_samples:.3} output samples"
            );
        }
        // And impulses land on the matching output sample, including one at the very end,
        // which only survives if the filter's tail is flushed.
        for (at, expected) in [(4_800, 800), (47_994, 7_999)] {
            let mut impulse = vec![0.0; 48_000];
            impulse[at] = 1.0;
            let out = resample(&impulse, 48_000, 8_000).unwrap();
            let peak = (0..out.len()).max_by(|&a, &b| out[a].total_cmp(&out[b]));
            assert_eq!(peak, Some(expected), "impulse at {at}");
            assert!(out[expected] > 0.1, "impulse at {at}: {}", out[expected]);
        }
    }

    #[test]
    fn equal_rates_return_a_copy() {
        let input = sine(440.0, 0.3, 16_000, 0.1);
        assert_eq!(resample(&input, 16_000, 16_000).unwrap(), input);
    }

    #[test]
    fn an_empty_clip_stays_empty() {
        assert_eq!(resample(&[], 44_100, 8_000).unwrap(), Vec::<f32>::new());
    }

    #[test]
    fn a_zero_rate_is_an_error() {
        assert_eq!(
            resample(&[0.0; 10], 0, 8_000),
            Err(ResampleError::InvalidRate { from: 0, to: 8_000 })
        );
        assert!(resample(&[0.0; 10], 8_000, 0).is_err());
    }
}
