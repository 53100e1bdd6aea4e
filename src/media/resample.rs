//! Band-limited sample-rate conversion of mono audio (rubato's windowed-sinc resampler),
//! time-aligned with its input: [`resample`] for a clip held in memory, [`StreamResampler`]
//! for a live stream that arrives in pieces. Must not do I/O or read the clock.

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

    let mut resampler = sinc_resampler(from, to, CHUNK_FRAMES)?;
    let Alignment {
        lead,
        skip: mut to_skip,
    } = Alignment::new(from, to);

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

/// Input handed to rubato per call by [`StreamResampler`]: 10 ms, so no more than 10 ms of
/// audio ever waits for a chunk to fill.
const STREAM_CHUNK_MS: u32 = 10;

/// Resamples a live mono stream from `from` Hz to `to` Hz as its samples arrive, in pieces of
/// any size, with the same filter as [`resample`].
///
/// The output is time-aligned with the input exactly as [`resample`]'s is: output sample `k`
/// is input time `k / to`, and feeding a whole clip then calling [`flush`](Self::flush) gives
/// `round(len * to / from)` samples, the same as [`resample`] to within float rounding. How the
/// input is cut into pieces never changes the output.
///
/// Aligned output has a price in latency: an output sample can only be computed once the
/// input half a filter (128 input samples) past it has arrived, and rubato is handed whole
/// 10 ms chunks. So the output lags the input by between half the filter and
/// [`delay_out_samples`](Self::delay_out_samples) output samples, which is (128 + chunk + 1)
/// input samples: 2.9 to 12.9 ms for 44.1 kHz → 8 kHz (104 samples at most), 2.7 to 12.7 ms
/// from 48 kHz, 8 to 18 ms for 16 kHz → 48 kHz, 16 to 26 ms from 8 kHz. The lag is a
/// latency, not a shift: nothing needs compensating downstream. Equal rates pass samples
/// straight through, with no lag.
pub struct StreamResampler {
    /// `None` when the rates are equal.
    sinc: Option<Box<SincStream>>,
    from: u32,
    to: u32,
}

/// State of a stream that really is resampled.
struct SincStream {
    resampler: Async<f32>,
    /// Input waiting for a whole chunk, `chunk_frames` long; `filled` of it is real.
    pending: Vec<f32>,
    filled: usize,
    /// rubato's output for one chunk.
    produced: Vec<f32>,
    /// Output samples still to drop to remove the filter delay.
    to_skip: usize,
    /// Input samples received (the alignment lead excluded) and output samples emitted since
    /// the stream began, for `flush` to know where the stream ends.
    samples_in: u64,
    samples_out: u64,
}

impl StreamResampler {
    /// A resampler for a stream from `from` Hz to `to` Hz. Either rate zero is an error.
    pub fn new(from: u32, to: u32) -> Result<Self, ResampleError> {
        if from == 0 || to == 0 {
            return Err(ResampleError::InvalidRate { from, to });
        }
        let sinc = if from == to {
            None
        } else {
            Some(Box::new(SincStream::new(from, to)?))
        };
        Ok(StreamResampler { sinc, from, to })
    }

    /// Input rate in Hz.
    pub fn from_rate(&self) -> u32 {
        self.from
    }

    /// Output rate in Hz.
    pub fn to_rate(&self) -> u32 {
        self.to
    }

    /// Resamples the next `input` samples of the stream and appends whatever output they
    /// complete to `out`. Output that needs input not yet seen stays inside until it arrives.
    pub fn process(&mut self, input: &[f32], out: &mut Vec<f32>) -> Result<(), ResampleError> {
        match &mut self.sinc {
            None => {
                out.extend_from_slice(input);
                Ok(())
            }
            Some(sinc) => {
                sinc.samples_in += input.len() as u64;
                sinc.push(input, out)
            }
        }
    }

    /// Ends the stream: appends the output still held inside, so that the whole stream gave
    /// `round(samples_in * to / from)` samples, as [`resample`] would for the same audio. The
    /// resampler then starts afresh, ready for a new stream.
    pub fn flush(&mut self, out: &mut Vec<f32>) -> Result<(), ResampleError> {
        let Some(sinc) = &mut self.sinc else {
            return Ok(());
        };
        let total = output_len_u64(sinc.samples_in, self.from, self.to);
        let wanted = total.saturating_sub(sinc.samples_out);
        let mut tail = Vec::new();
        // The held output needs at most half a filter plus a chunk more input; silence past
        // the end of the stream supplies it. The bound turns a resampler that stops
        // producing into an error instead of a hang.
        let chunk = sinc.pending.len();
        let max_calls = (SINC_TAPS + 2 * chunk) / chunk.max(1) + 4;
        let silence = vec![0.0; chunk];
        for _ in 0..max_calls {
            if tail.len() as u64 >= wanted {
                break;
            }
            sinc.push(&silence, &mut tail)?;
        }
        if (tail.len() as u64) < wanted {
            return Err(ResampleError::Resampler(
                "resampler stopped producing output".into(),
            ));
        }
        tail.truncate(usize::try_from(wanted).unwrap_or(usize::MAX));
        out.extend_from_slice(&tail);
        **sinc = SincStream::new(self.from, self.to)?;
        Ok(())
    }

    /// The most output samples the resampler ever holds back: after `n` input samples it has
    /// given at least `n * to / from - delay_out_samples()` and at most `n * to / from`. Zero
    /// when the rates are equal.
    pub fn delay_out_samples(&self) -> usize {
        match &self.sinc {
            None => 0,
            // Half the filter, a chunk that has not filled yet, and the one input sample past
            // the filter that rubato's interpolation between table points reads.
            Some(sinc) => mul_div_ceil(SINC_TAPS / 2 + sinc.pending.len() + 1, self.to, self.from),
        }
    }
}

// By hand: the derived form would print the buffers.
impl std::fmt::Debug for StreamResampler {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StreamResampler")
            .field("from", &self.from)
            .field("to", &self.to)
            .field("delay_out_samples", &self.delay_out_samples())
            .finish_non_exhaustive()
    }
}

impl SincStream {
    fn new(from: u32, to: u32) -> Result<Self, ResampleError> {
        let chunk_frames = (from / (1000 / STREAM_CHUNK_MS)).max(1) as usize;
        let resampler = sinc_resampler(from, to, chunk_frames)?;
        let Alignment { lead, skip } = Alignment::new(from, to);
        let mut stream = SincStream {
            pending: vec![0.0; chunk_frames],
            filled: 0,
            produced: vec![0.0; resampler.output_frames_max()],
            resampler,
            to_skip: skip,
            samples_in: 0,
            samples_out: 0,
        };
        // The lead is silence before the stream; whatever it completes is skipped output.
        let mut discarded = Vec::new();
        stream.push(&vec![0.0; lead], &mut discarded)?;
        Ok(stream)
    }

    /// Queues `input`, runs rubato on every chunk it completes, and appends the output past
    /// the filter delay to `out`.
    fn push(&mut self, mut input: &[f32], out: &mut Vec<f32>) -> Result<(), ResampleError> {
        while !input.is_empty() {
            let room = self.pending.len() - self.filled;
            let n = room.min(input.len());
            self.pending[self.filled..self.filled + n].copy_from_slice(&input[..n]);
            self.filled += n;
            input = &input[n..];
            if self.filled == self.pending.len() {
                self.run_chunk(out)?;
                self.filled = 0;
            }
        }
        Ok(())
    }

    fn run_chunk(&mut self, out: &mut Vec<f32>) -> Result<(), ResampleError> {
        let frames = self.pending.len();
        let source = InterleavedSlice::new(&self.pending[..], 1, frames).map_err(rubato_error)?;
        let capacity = self.produced.len();
        let mut sink = InterleavedSlice::new_mut(self.produced.as_mut_slice(), 1, capacity)
            .map_err(rubato_error)?;
        let (_, produced) = self
            .resampler
            .process_into_buffer(&source, &mut sink, None)
            .map_err(rubato_error)?;
        let produced = self.produced.get(..produced).unwrap_or(&self.produced);
        let skipped = self.to_skip.min(produced.len());
        self.to_skip -= skipped;
        let kept = &produced[skipped..];
        out.extend_from_slice(kept);
        self.samples_out += kept.len() as u64;
        Ok(())
    }
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

/// rubato's windowed-sinc resampler from `from` to `to` Hz taking `chunk` input frames a call.
fn sinc_resampler(from: u32, to: u32, chunk: usize) -> Result<Async<f32>, ResampleError> {
    // Cubic interpolation between the points of rubato's oversampled sinc table keeps the
    // interpolation error far below 16-bit noise at any ratio.
    let params = SincInterpolationParameters::new(SINC_TAPS, WindowFunction::BlackmanHarris2)
        .interpolation(SincInterpolationType::Cubic);
    let ratio = f64::from(to) / f64::from(from);
    // 1.0: the ratio never changes during a clip or a stream.
    Async::<f32>::new_sinc(ratio, 1.0, &params, chunk, 1, FixedAsync::Input).map_err(rubato_error)
}

/// How to remove rubato's filter delay exactly: feed `lead` zeros before the audio, then drop
/// the first `skip` output samples.
struct Alignment {
    lead: usize,
    skip: usize,
}

impl Alignment {
    fn new(from: u32, to: u32) -> Self {
        // rubato's output lags its input by half the filter (SINC_TAPS / 2 input samples) less
        // one output sample; measured on rubato 5.0, whose own `output_delay()` rounds that
        // down and misses the one sample, and pinned by
        // `the_output_is_time_aligned_with_the_input`. The lag is a whole number of output
        // samples only when the input samples before the filter centre are a multiple of
        // `from / gcd`, so lead with enough silence to make it one, then skip exactly that
        // many output samples.
        let step = (from / gcd(from, to).max(1)).max(1) as usize;
        let half_taps = SINC_TAPS / 2;
        let lead = (step - half_taps % step) % step;
        let skip = mul_div(half_taps + lead, to, from).saturating_sub(1);
        Alignment { lead, skip }
    }
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

/// `round(len * to / from)` for a stream's running count.
fn output_len_u64(len: u64, from: u32, to: u32) -> u64 {
    let from = u128::from(from.max(1));
    let exact = (u128::from(len) * u128::from(to) + from / 2) / from;
    u64::try_from(exact).unwrap_or(u64::MAX)
}

/// `value * to / from`, rounded up, without intermediate overflow.
fn mul_div_ceil(value: usize, to: u32, from: u32) -> usize {
    let from = u128::from(from.max(1));
    let exact = (value as u128 * u128::from(to)).div_ceil(from);
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

    /// Sizes from 1 to `max`, mostly small, some huge, from a fixed seed.
    fn random_pieces(seed: u32, max: usize) -> impl FnMut() -> usize {
        let mut state = seed.max(1);
        move || {
            state ^= state << 13;
            state ^= state >> 17;
            state ^= state << 5;
            let limit = match state % 4 {
                0 => 8,
                1 => 500,
                2 => 5_000,
                _ => max,
            };
            (state as usize / 4) % limit + 1
        }
    }

    fn stream_in_pieces(
        input: &[f32],
        from: u32,
        to: u32,
        mut piece: impl FnMut() -> usize,
    ) -> Vec<f32> {
        let mut stream = StreamResampler::new(from, to).unwrap();
        let mut out = Vec::new();
        let mut rest = input;
        while !rest.is_empty() {
            let n = piece().min(rest.len());
            stream.process(&rest[..n], &mut out).unwrap();
            rest = &rest[n..];
        }
        stream.flush(&mut out).unwrap();
        out
    }

    #[test]
    fn a_stream_cut_into_random_pieces_resamples_exactly_as_in_one_piece() {
        for (from, to) in [
            (44_100, 8_000),
            (48_000, 16_000),
            (8_000, 48_000),
            (22_050, 8_000),
        ] {
            let input = sine(997.0, 0.5, from, 3.0);
            let whole = stream_in_pieces(&input, from, to, || usize::MAX);
            for seed in [1, 7, 1234] {
                let pieces = stream_in_pieces(&input, from, to, random_pieces(seed, 100_000));
                assert!(pieces == whole, "{from} -> {to}, seed {seed}");
            }
            let one_by_one = stream_in_pieces(&input, from, to, || 1);
            assert!(one_by_one == whole, "{from} -> {to}, one sample at a time");
        }
    }

    #[test]
    fn a_flushed_stream_matches_the_whole_clip_resampler() {
        // Same filter and alignment; only rubato's chunking differs, which moves its
        // fractional read position by float rounding and nothing more.
        for (from, to) in [
            (44_100, 8_000),
            (48_000, 8_000),
            (16_000, 48_000),
            (44_100, 16_000),
        ] {
            let input = sine(1000.0, 0.5, from, 2.0);
            let clip = resample(&input, from, to).unwrap();
            let streamed = stream_in_pieces(&input, from, to, random_pieces(3, 20_000));
            assert_eq!(streamed.len(), clip.len(), "{from} -> {to}");
            let worst = clip
                .iter()
                .zip(&streamed)
                .map(|(a, b)| (a - b).abs())
                .fold(0.0f32, f32::max);
            assert!(worst < 1e-6, "{from} -> {to}: differs by {worst:e}");
        }
    }

    #[test]
    fn the_output_count_never_drifts_from_the_rate_ratio_over_a_minute() {
        for (from, to, seconds) in [
            (44_100, 8_000, 60.0),
            (48_000, 16_000, 10.0),
            (22_050, 48_000, 10.0),
            (8_000, 44_100, 10.0),
        ] {
            let input = sine(440.0, 0.3, from, seconds);
            let mut stream = StreamResampler::new(from, to).unwrap();
            let delay = stream.delay_out_samples() as f64;
            let mut out = Vec::new();
            let (mut fed, mut emitted) = (0usize, 0usize);
            let mut piece = random_pieces(11, 30_000);
            while fed < input.len() {
                let n = piece().min(input.len() - fed);
                stream.process(&input[fed..fed + n], &mut out).unwrap();
                fed += n;
                emitted += out.len();
                out.clear();
                let due = fed as f64 * f64::from(to) / f64::from(from);
                let held = due - emitted as f64;
                assert!(
                    (0.0..=delay).contains(&held),
                    "{from} -> {to} after {fed} samples: {emitted} out, {due:.1} due"
                );
            }
            stream.flush(&mut out).unwrap();
            assert_eq!(
                emitted + out.len(),
                output_len(input.len(), from, to),
                "{from} -> {to}"
            );
        }
    }

    #[test]
    fn the_stated_delay_is_the_most_output_the_stream_ever_holds_back() {
        // One sample at a time visits every fill level of the pending chunk.
        for (from, to) in [
            (44_100, 8_000),
            (48_000, 8_000),
            (44_100, 16_000),
            (48_000, 48_000),
            (16_000, 48_000),
            (22_050, 48_000),
            (8_000, 44_100),
        ] {
            let mut stream = StreamResampler::new(from, to).unwrap();
            let delay = stream.delay_out_samples() as f64;
            let mut out = Vec::new();
            let mut most_held = 0.0f64;
            for fed in 1..=from as usize {
                stream.process(&[0.1], &mut out).unwrap();
                let held = fed as f64 * f64::from(to) / f64::from(from) - out.len() as f64;
                assert!(
                    held <= delay,
                    "{from} -> {to}: {held:.2} held, {delay} stated"
                );
                most_held = most_held.max(held);
            }
            assert!(
                most_held > delay - 1.0 || from == to,
                "{from} -> {to}: at most {most_held:.2} held, {delay} stated"
            );
        }
    }

    #[test]
    fn a_streamed_1_khz_tone_keeps_its_level_from_44_1_to_8_khz() {
        let input = sine(1000.0, 0.5, 44_100, 2.0);
        let out = stream_in_pieces(&input, 44_100, 8_000, random_pieces(5, 4_096));
        let before = amplitude_at(middle(&input, 44_100), 1000.0, 44_100);
        let after = amplitude_at(middle(&out, 8_000), 1000.0, 8_000);
        let change = db(after / before);
        assert!(change.abs() < 0.5, "1 kHz changed by {change:.2} dB");
    }

    #[test]
    fn a_6_khz_tone_does_not_alias_into_a_streamed_8_khz_output() {
        for from in [44_100, 48_000] {
            let input = sine(6000.0, 0.5, from, 2.0);
            let out = stream_in_pieces(&input, from, 8_000, random_pieces(9, 4_096));
            let left = middle(&out, 8_000);
            let rms = (left.iter().map(|&s| f64::from(s).powi(2)).sum::<f64>() / left.len() as f64)
                .sqrt();
            let attenuation = db(rms / (0.5 / 2f64.sqrt()));
            assert!(
                attenuation < -40.0,
                "{from}: 6 kHz only down {attenuation:.1} dB"
            );
        }
    }

    #[test]
    fn a_stream_at_equal_rates_passes_straight_through() {
        let input = sine(440.0, 0.3, 16_000, 0.5);
        let mut stream = StreamResampler::new(16_000, 16_000).unwrap();
        assert_eq!(stream.delay_out_samples(), 0);
        let mut out = Vec::new();
        stream.process(&input[..7], &mut out).unwrap();
        assert_eq!(out, input[..7]);
        stream.process(&input[7..], &mut out).unwrap();
        stream.flush(&mut out).unwrap();
        assert_eq!(out, input);
    }

    #[test]
    fn after_a_flush_the_stream_resampler_starts_afresh() {
        let input = sine(1000.0, 0.5, 48_000, 0.5);
        let mut stream = StreamResampler::new(48_000, 8_000).unwrap();
        let (mut first, mut second) = (Vec::new(), Vec::new());
        stream.process(&input, &mut first).unwrap();
        stream.flush(&mut first).unwrap();
        stream.process(&input, &mut second).unwrap();
        stream.flush(&mut second).unwrap();
        assert_eq!(first.len(), 4_000);
        assert!(first == second);
        // Flushing an empty stream gives nothing.
        let mut nothing = Vec::new();
        stream.flush(&mut nothing).unwrap();
        assert!(nothing.is_empty());
    }

    #[test]
    fn a_stream_resampler_can_move_to_another_thread() {
        fn is_send<T: Send>(_: &T) {}
        is_send(&StreamResampler::new(44_100, 8_000).unwrap());
    }

    #[test]
    fn a_stream_with_a_zero_rate_is_refused() {
        assert_eq!(
            StreamResampler::new(0, 8_000).err(),
            Some(ResampleError::InvalidRate { from: 0, to: 8_000 })
        );
        assert!(StreamResampler::new(44_100, 0).is_err());
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
