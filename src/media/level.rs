//! Live levelling of a relayed programme: a slow automatic gain toward the loudness target
//! (EBU R128 short-term loudness), a look-ahead peak limiter under the ceiling, and a dead-air
//! detector. Streaming and pure: samples in, samples out, in pieces of any size, with the
//! result independent of how the stream is cut. Must not do I/O or read the clock; time is
//! counted in samples.
//!
//! Where [`normalise`](super::normalise) sees a whole clip and sets one gain, a live
//! programme's loudness is only known up to now and changes (a quiet studio, then loud
//! music), so the gain follows it slowly and never chases silence.

use std::collections::VecDeque;

use super::normalise::LoudnessTarget;

/// Loudness is measured in 100 ms blocks, as EBU R128 does; the gain's aim moves once a block.
const BLOCK_S: f64 = 0.1;
/// Short-term loudness, what the gain follows, is over the last 3 s (EBU Tech 3341): long
/// enough to ride over syllables and words, short enough to follow a change of programme.
const SHORT_TERM_BLOCKS: usize = 30;
/// Blocks before the first aim: 400 ms, one momentary window, so the first second of a relay
/// is not judged on a single syllable.
const FIRST_AIM_BLOCKS: usize = 4;
/// Fastest rise of the gain. Slow, so that a quiet passage is not pumped up before it is
/// over, yet a programme 14 dB under target (a quiet stream at −30 LUFS) reaches it in about
/// 10 s.
const RISE_DB_PER_S: f64 = 1.5;
/// Fastest fall: a programme that turns loud is brought down within a second or two, the
/// limiter holding the peaks meanwhile.
const FALL_DB_PER_S: f64 = 10.0;
/// Range of the gain: a stream more than 20 dB off target is broken, not quiet, and boosting
/// it further would only air its noise.
const MAX_GAIN_DB: f64 = 20.0;
const MIN_GAIN_DB: f64 = -20.0;
/// Below this loudness (EBU R128's absolute gate) there is no programme to level: the gain is
/// held, never raised, so silence and hiss are not boosted into noise.
const ABSOLUTE_GATE_LUFS: f64 = -50.0;
/// A block this far under the short-term loudness is a pause inside the programme (a breath,
/// a gap between items): the gain is held through it instead of rising to fill it.
const RELATIVE_GATE_LU: f64 = 20.0;
/// Look-ahead of the limiter, and so the leveller's delay: gain starts falling this long
/// before a peak, so the peak is never clipped and the gain change is a ramp, not a step.
const LOOKAHEAD_S: f64 = 0.005;
/// Time constant of the limiter's return to unity after a peak: slow enough not to pump on
/// speech syllables (the same as `normalise`'s limiter).
const RELEASE_S: f64 = 0.080;
/// Rates below this are treated as this when designing the K-weighting filter, whose 1.7 kHz
/// shelf must stay under Nyquist; no stream we relay is that slow.
const MIN_FILTER_RATE: u32 = 8_000;

/// Automatic gain toward a loudness target, then a peak limiter, for a live mono stream.
///
/// The gain follows the short-term (3 s) loudness of the input, measured with the EBU R128
/// K-weighting, toward `target.integrated_lufs`: it rises by at most 1.5 dB/s and falls by at
/// most 10 dB/s, stays within ±20 dB, starts at 0 dB, and is held — never raised — while the
/// input is under −50 LUFS or a 100 ms block is 20 LU under the short-term loudness, so
/// silence, pauses and hiss are never boosted. The limiter then keeps every output sample's
/// magnitude at or under `target.true_peak_dbtp` (as a sample peak; inter-sample peaks can
/// exceed it by a fraction of a dB, as with any sample-peak limiter).
///
/// The limiter looks 5 ms ahead, so the output is the input delayed by
/// [`delay_samples`](Self::delay_samples): sample `i` of the output is input sample
/// `i - delay_samples()`, levelled; the first `delay_samples()` output samples are silence.
/// Non-finite input samples are treated as silence.
pub struct Leveller {
    target: LoudnessTarget,
    meter: ShortTermMeter,
    /// Current gain and where it is heading, in dB.
    gain_db: f64,
    aim_db: f64,
    /// `gain_db` as a factor, kept in step with it.
    gain: f64,
    rise_per_sample_db: f64,
    fall_per_sample_db: f64,
    limiter: Limiter,
}

impl Leveller {
    /// A leveller for a stream at `rate` Hz.
    pub fn new(rate: u32, target: LoudnessTarget) -> Self {
        let rate_f = f64::from(rate.max(1));
        Leveller {
            target,
            meter: ShortTermMeter::new(rate),
            gain_db: 0.0,
            aim_db: 0.0,
            gain: 1.0,
            rise_per_sample_db: RISE_DB_PER_S / rate_f,
            fall_per_sample_db: FALL_DB_PER_S / rate_f,
            limiter: Limiter::new(rate, db_to_linear(target.true_peak_dbtp)),
        }
    }

    /// Levels the next `samples` of the stream in place. What comes out is the stream
    /// [`delay_samples`](Self::delay_samples) earlier, levelled.
    pub fn process(&mut self, samples: &mut [f32]) {
        for sample in samples {
            let x = if sample.is_finite() { *sample } else { 0.0 };
            if let Some(block) = self.meter.push(x) {
                self.aim(block);
            }
            self.slew();
            *sample = self.limiter.push(f64::from(x) * self.gain);
        }
    }

    /// The automatic gain now, in dB (the limiter's reductions aside): for status displays.
    pub fn gain_db(&self) -> f64 {
        self.gain_db
    }

    /// How far the limiter is pulling the sample now leaving down, in dB (0 or negative).
    pub fn limiter_gain_db(&self) -> f64 {
        20.0 * f64::from(self.limiter.gain).log10()
    }

    /// Samples by which the output lags the input: the limiter's look-ahead, 5 ms.
    pub fn delay_samples(&self) -> usize {
        self.limiter.delay
    }

    /// Sets where the gain heads after each 100 ms block, or holds it there.
    fn aim(&mut self, block: Block) {
        let Some(short_term) = block.short_term_lufs else {
            return;
        };
        let gated = short_term < ABSOLUTE_GATE_LUFS
            || block.lufs < ABSOLUTE_GATE_LUFS
            || block.lufs < short_term - RELATIVE_GATE_LU;
        self.aim_db = if gated {
            self.gain_db
        } else {
            (self.target.integrated_lufs - short_term).clamp(MIN_GAIN_DB, MAX_GAIN_DB)
        };
    }

    /// Moves the gain one sample's worth toward its aim.
    fn slew(&mut self) {
        if self.gain_db == self.aim_db {
            return;
        }
        let step =
            (self.aim_db - self.gain_db).clamp(-self.fall_per_sample_db, self.rise_per_sample_db);
        self.gain_db += step;
        self.gain = 10f64.powf(self.gain_db / 20.0);
    }
}

// By hand: the derived form would print the buffers.
impl std::fmt::Debug for Leveller {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Leveller")
            .field("target", &self.target)
            .field("gain_db", &self.gain_db)
            .field("aim_db", &self.aim_db)
            .field("delay_samples", &self.delay_samples())
            .finish_non_exhaustive()
    }
}

fn db_to_linear(db: f64) -> f64 {
    10f64.powf(db / 20.0)
}

/// Loudness in LUFS of a mean square of K-weighted samples (ITU-R BS.1770's −0.691 offset).
fn lufs(mean_square: f64) -> f64 {
    -0.691 + 10.0 * mean_square.log10()
}

/// One 100 ms block just completed.
#[derive(Debug, Clone, Copy)]
struct Block {
    /// Loudness of the block alone.
    lufs: f64,
    /// Loudness of the last 3 s (or of everything so far, once 400 ms are in); `None` before.
    short_term_lufs: Option<f64>,
}

/// EBU R128 short-term loudness of a mono stream, updated every 100 ms block.
struct ShortTermMeter {
    filter: KWeighting,
    block_len: usize,
    /// Samples and sum of squares of the block being filled.
    in_block: usize,
    sum: f64,
    /// Mean squares of the last `SHORT_TERM_BLOCKS` blocks, newest at the back.
    blocks: VecDeque<f64>,
}

impl ShortTermMeter {
    fn new(rate: u32) -> Self {
        ShortTermMeter {
            filter: KWeighting::new(rate.max(MIN_FILTER_RATE)),
            // libebur128's rounding, so that the blocks line up with its meter.
            block_len: ((f64::from(rate) * BLOCK_S).round() as usize).max(1),
            in_block: 0,
            sum: 0.0,
            blocks: VecDeque::with_capacity(SHORT_TERM_BLOCKS),
        }
    }

    /// Takes one sample; at the end of a block, says what it measured.
    fn push(&mut self, x: f32) -> Option<Block> {
        let y = self.filter.process(f64::from(x));
        self.sum += y * y;
        self.in_block += 1;
        if self.in_block < self.block_len {
            return None;
        }
        let mean_square = self.sum / self.block_len as f64;
        (self.in_block, self.sum) = (0, 0.0);
        if self.blocks.len() == SHORT_TERM_BLOCKS {
            self.blocks.pop_front();
        }
        self.blocks.push_back(mean_square);
        // Summed afresh each block rather than kept as a running total, so rounding cannot
        // accumulate over hours of programme; 30 additions per 100 ms cost nothing.
        let short_term = (self.blocks.len() >= FIRST_AIM_BLOCKS)
            .then(|| lufs(self.blocks.iter().sum::<f64>() / self.blocks.len() as f64));
        Some(Block {
            lufs: lufs(mean_square),
            short_term_lufs: short_term,
        })
    }
}

/// The K-weighting of ITU-R BS.1770: a high shelf (+4 dB above ~1.7 kHz, the head's effect)
/// then a high-pass (~38 Hz), as two biquads with libebur128's coefficients for any rate.
struct KWeighting {
    stages: [Biquad; 2],
}

impl KWeighting {
    fn new(rate: u32) -> Self {
        let rate = f64::from(rate);
        let pi = std::f64::consts::PI;

        let (f0, gain_db, q) = (1681.974450955533, 3.999843853973347, 0.7071752369554196);
        let k = (pi * f0 / rate).tan();
        let vh = 10f64.powf(gain_db / 20.0);
        let vb = vh.powf(0.4996667741545416);
        let a0 = 1.0 + k / q + k * k;
        let shelf = Biquad::new(
            [
                (vh + vb * k / q + k * k) / a0,
                2.0 * (k * k - vh) / a0,
                (vh - vb * k / q + k * k) / a0,
            ],
            [2.0 * (k * k - 1.0) / a0, (1.0 - k / q + k * k) / a0],
        );

        let (f0, q) = (38.13547087602444, 0.5003270373238773);
        let k = (pi * f0 / rate).tan();
        let a0 = 1.0 + k / q + k * k;
        let high_pass = Biquad::new(
            [1.0, -2.0, 1.0],
            [2.0 * (k * k - 1.0) / a0, (1.0 - k / q + k * k) / a0],
        );
        KWeighting {
            stages: [shelf, high_pass],
        }
    }

    fn process(&mut self, x: f64) -> f64 {
        self.stages.iter_mut().fold(x, |x, stage| stage.process(x))
    }
}

/// A second-order IIR section, transposed direct form II, in f64 so that hours of audio
/// do not drift its state.
struct Biquad {
    b: [f64; 3],
    a: [f64; 2],
    s: [f64; 2],
}

impl Biquad {
    fn new(b: [f64; 3], a: [f64; 2]) -> Self {
        Biquad { b, a, s: [0.0; 2] }
    }

    fn process(&mut self, x: f64) -> f64 {
        let y = self.b[0] * x + self.s[0];
        self.s[0] = self.b[1] * x - self.a[0] * y + self.s[1];
        self.s[1] = self.b[2] * x - self.a[1] * y;
        y
    }
}

/// `normalise`'s look-ahead limiter, one sample at a time: the gain at each sample is the
/// mean, over the look-ahead, of the minimum gain needed in the look-ahead that follows —
/// never above what any sample needs — then released slowly. Seeing `delay` samples ahead
/// means answering `delay` samples late.
struct Limiter {
    threshold: f64,
    delay: usize,
    release: f32,
    /// Samples waiting to leave, oldest first; always `delay` long between calls.
    line: VecDeque<f32>,
    /// Sliding minimum of the gain each of the last `delay + 1` samples needs on its own:
    /// (sample number, gain), gains increasing from the front.
    minima: VecDeque<(u64, f32)>,
    /// The last `delay + 1` sliding minima, a ring at `next`, and their sum.
    history: Vec<f32>,
    next: usize,
    sum: f64,
    /// Samples seen.
    count: u64,
    /// Gain applied to the sample that left last.
    gain: f32,
}

impl Limiter {
    fn new(rate: u32, threshold: f64) -> Self {
        let delay = (f64::from(rate) * LOOKAHEAD_S).floor() as usize;
        let window = delay + 1;
        Limiter {
            threshold,
            delay,
            release: 1.0 - (-1.0 / (f64::from(rate.max(1)) * RELEASE_S)).exp() as f32,
            line: std::iter::repeat_n(0.0, delay).collect(),
            minima: VecDeque::with_capacity(window),
            history: vec![1.0; window],
            next: 0,
            sum: window as f64,
            count: 0,
            gain: 1.0,
        }
    }

    /// Takes sample `n` and returns sample `n - delay`, limited.
    fn push(&mut self, x: f64) -> f32 {
        let window = self.history.len() as u64;
        let a = x.abs();
        let needed = if a > self.threshold {
            (self.threshold / a) as f32
        } else {
            1.0
        };
        while self.minima.back().is_some_and(|&(_, g)| g >= needed) {
            self.minima.pop_back();
        }
        self.minima.push_back((self.count, needed));
        while self
            .minima
            .front()
            .is_some_and(|&(k, _)| k + window <= self.count)
        {
            self.minima.pop_front();
        }
        self.count += 1;
        // The least gain any sample from n - delay to n needs: it covers sample n - delay.
        let least = self.minima.front().map_or(1.0, |&(_, g)| g);

        self.sum += f64::from(least) - f64::from(self.history[self.next]);
        self.history[self.next] = least;
        self.next += 1;
        if self.next == self.history.len() {
            self.next = 0;
            // Re-summed once a window so that rounding cannot pile up over hours.
            self.sum = self.history.iter().map(|&g| f64::from(g)).sum();
        }
        // Every term of the mean covers sample n - delay, so the mean never lets it through
        // over the threshold; the release only ever lowers the gain further.
        let mean = (self.sum / window as f64) as f32;
        self.gain = (self.gain + (1.0 - self.gain) * self.release).min(mean);

        self.line.push_back(x as f32);
        let out = self.line.pop_front().unwrap_or(0.0) * self.gain;
        // The mean of gains at or under what the sample needs can land a rounding error
        // above it; that error must not reach the air.
        let ceiling = self.threshold as f32;
        out.clamp(-ceiling, ceiling)
    }
}

/// Tells dead air from programme: how long the stream has been silent, or not, in whole
/// 50 ms blocks, by the RMS of each block against a threshold in dBFS (20·log10 of the RMS,
/// so a full-scale sine is −3 dBFS). Non-finite samples count as silence, as they go on air.
pub struct SilenceDetector {
    rate: u32,
    block_len: usize,
    /// Mean square a block must reach to be heard.
    threshold: f64,
    in_block: usize,
    sum: f64,
    silent_samples: u64,
    heard_samples: u64,
}

/// Length of the detector's blocks: short enough to notice a return of sound at once, long
/// enough that a single quiet syllable or zero crossing is not dead air.
const SILENCE_BLOCK_S: f64 = 0.050;

impl SilenceDetector {
    /// A detector for a stream at `rate` Hz; blocks whose RMS is under `threshold_dbfs` are
    /// silence.
    pub fn new(rate: u32, threshold_dbfs: f64) -> Self {
        SilenceDetector {
            rate,
            block_len: ((f64::from(rate) * SILENCE_BLOCK_S).round() as usize).max(1),
            threshold: 10f64.powf(threshold_dbfs / 10.0),
            in_block: 0,
            sum: 0.0,
            silent_samples: 0,
            heard_samples: 0,
        }
    }

    /// Takes the next `samples` of the stream.
    pub fn push(&mut self, samples: &[f32]) {
        for &x in samples {
            let x = if x.is_finite() { f64::from(x) } else { 0.0 };
            self.sum += x * x;
            self.in_block += 1;
            if self.in_block == self.block_len {
                let len = self.block_len as u64;
                if self.sum / len as f64 >= self.threshold {
                    self.heard_samples += len;
                    self.silent_samples = 0;
                } else {
                    self.silent_samples += len;
                    self.heard_samples = 0;
                }
                (self.in_block, self.sum) = (0, 0.0);
            }
        }
    }

    /// Length of the current run of silent blocks, in ms; 0 once a block is heard.
    pub fn silent_ms(&self) -> u64 {
        super::frames_to_ms(self.silent_samples, self.rate)
    }

    /// Length of the current run of blocks with sound, in ms; 0 once a block is silent.
    pub fn heard_ms(&self) -> u64 {
        super::frames_to_ms(self.heard_samples, self.rate)
    }
}

impl std::fmt::Debug for SilenceDetector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SilenceDetector")
            .field("silent_ms", &self.silent_ms())
            .field("heard_ms", &self.heard_ms())
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use super::super::loudness::measure;
    use super::super::test_support::sine;
    use super::*;

    const TARGET: LoudnessTarget = LoudnessTarget {
        integrated_lufs: -16.0,
        true_peak_dbtp: -1.0,
    };
    const RATE: u32 = 48_000;

    /// Uniform noise in [-1, 1) from a fixed seed.
    fn noise(seed: u32) -> impl FnMut() -> f32 {
        let mut state = seed.max(1);
        move || {
            state ^= state << 13;
            state ^= state >> 17;
            state ^= state << 5;
            state as f32 / 2_147_483_648.0 - 1.0
        }
    }

    /// Speech-like programme: noise and a 220 Hz voice under a 4 Hz syllable envelope,
    /// scaled to `lufs` integrated.
    fn speech_like(rate: u32, seconds: f64, lufs: f64, seed: u32) -> Vec<f32> {
        let mut noise = noise(seed);
        let raw: Vec<f32> = (0..(f64::from(rate) * seconds) as usize)
            .map(|i| {
                let t = i as f32 / rate as f32;
                let syllables = (0.5 + 0.5 * (t * 4.0 * std::f32::consts::TAU).sin()).powi(2);
                let voice = (t * 220.0 * std::f32::consts::TAU).sin();
                syllables * (0.3 * noise() + 0.3 * voice)
            })
            .collect();
        let now = measure(&raw, rate).unwrap().integrated_lufs;
        let gain = 10f64.powf((lufs - now) / 20.0) as f32;
        raw.iter().map(|s| s * gain).collect()
    }

    /// Runs `input` through a fresh leveller in `piece`-sized pieces, recording the gain
    /// after each piece.
    fn level(input: &[f32], piece: usize) -> (Vec<f32>, Vec<f64>, Leveller) {
        let mut leveller = Leveller::new(RATE, TARGET);
        let mut out = input.to_vec();
        let gains = out
            .chunks_mut(piece)
            .map(|chunk| {
                leveller.process(chunk);
                leveller.gain_db()
            })
            .collect();
        (out, gains, leveller)
    }

    /// Integrated loudness of the output from `from_s` to `to_s` seconds of input time.
    fn output_lufs(out: &[f32], delay: usize, from_s: f64, to_s: f64) -> f64 {
        let at = |s: f64| (s * f64::from(RATE)) as usize + delay;
        measure(&out[at(from_s)..at(to_s).min(out.len())], RATE)
            .unwrap()
            .integrated_lufs
    }

    fn ceiling() -> f32 {
        db_to_linear(TARGET.true_peak_dbtp) as f32
    }

    #[test]
    fn a_quiet_programme_reaches_the_target_within_ten_seconds() {
        let input = speech_like(RATE, 20.0, -30.0, 1);
        let (out, gains, leveller) = level(&input, 960);
        // 100 pieces of 20 ms a second: the gain 10 s in.
        assert!(gains[499] > 12.5, "gain after 10 s: {:.2} dB", gains[499]);
        let reached = output_lufs(&out, leveller.delay_samples(), 10.0, 20.0);
        assert!(
            (reached + 16.0).abs() <= 1.0,
            "{reached:.2} LUFS from 10 s on"
        );
    }

    #[test]
    fn a_loud_programme_is_brought_down_to_the_target() {
        let input = speech_like(RATE, 20.0, -6.0, 2);
        let (out, gains, leveller) = level(&input, 960);
        assert!(gains[299] < -9.0, "gain after 6 s: {:.2} dB", gains[299]);
        let reached = output_lufs(&out, leveller.delay_samples(), 5.0, 20.0);
        assert!(
            (reached + 16.0).abs() <= 1.0,
            "{reached:.2} LUFS from 5 s on"
        );
    }

    #[test]
    fn the_gain_rises_and_falls_no_faster_than_its_slew_limits() {
        let mut input = speech_like(RATE, 15.0, -30.0, 3);
        input.extend(speech_like(RATE, 5.0, -3.0, 4));
        // 100 ms pieces: at most 0.15 dB up and 1 dB down between them.
        let (_, gains, _) = level(&input, 4_800);
        for pair in gains.windows(2) {
            let step = pair[1] - pair[0];
            assert!((-1.0 - 1e-9..=0.15 + 1e-9).contains(&step), "{step:.4} dB");
        }
        assert!(gains.iter().any(|&g| g > 12.0) && gains.last() < Some(&-8.0));
    }

    #[test]
    fn the_gain_stays_within_20_db_either_way() {
        // −45 LUFS is programme (over the −50 gate) that wants +29 dB; +12 LUFS wants −28.
        for (lufs, limit) in [(-45.0, MAX_GAIN_DB), (12.0, MIN_GAIN_DB)] {
            let input = speech_like(RATE, 30.0, lufs, 5);
            let (_, gains, _) = level(&input, 4_800);
            assert!(gains.iter().all(|g| g.abs() <= 20.0), "{lufs} LUFS");
            assert_eq!(gains.last(), Some(&limit), "{lufs} LUFS");
        }
    }

    #[test]
    fn no_output_sample_ever_exceeds_the_ceiling_even_on_a_sudden_burst() {
        // Quiet long enough for the gain to climb, then a full-scale burst of noise and
        // clicks over 0 dBFS while the gain is still high, then quiet again.
        let mut input = speech_like(RATE, 12.0, -30.0, 6);
        let mut burst = noise(7);
        input.extend((0..RATE as usize * 3).map(|i| if i % 4_000 < 3 { 4.0 } else { burst() }));
        input.extend(speech_like(RATE, 5.0, -30.0, 8));
        let (out, gains, _) = level(&input, 777);
        assert!(gains[(12 * RATE / 777) as usize] > 10.0);
        let loudest = out.iter().fold(0.0f32, |m, s| m.max(s.abs()));
        assert!(loudest <= ceiling(), "{loudest} over {}", ceiling());
        // And the limiter really worked: the burst reaches the ceiling.
        assert!(loudest > 0.99 * ceiling(), "{loudest}");
    }

    #[test]
    fn silence_and_faint_hiss_are_never_boosted_beyond_the_gain_held_before() {
        let mut input = speech_like(RATE, 6.0, -30.0, 9);
        let speech_end = input.len();
        input.extend(std::iter::repeat_n(0.0, RATE as usize * 10));
        // −70 dBFS RMS hiss.
        let hiss = 10f32.powf(-70.0 / 20.0) * 3f32.sqrt();
        let mut n = noise(10);
        input.extend((0..RATE as usize * 10).map(|_| hiss * n()));
        let piece = 480;
        let (out, gains, leveller) = level(&input, piece);
        let held = gains[speech_end / piece - 1];
        assert!(held > 5.0, "the gain had risen to {held:.2} dB");
        // One 100 ms block of silence at most is needed to see it, at 1.5 dB/s.
        let after = gains[speech_end / piece..]
            .iter()
            .fold(f64::MIN, |m, &g| m.max(g));
        assert!(
            after <= held + 0.15 + 1e-9,
            "{after:.3} dB after {held:.3} dB"
        );
        // Digital silence stays digital silence.
        let delay = leveller.delay_samples();
        let silent = &out[speech_end + delay + RATE as usize / 10..speech_end + RATE as usize * 10];
        assert!(silent.iter().all(|&s| s == 0.0));

        // A relay that starts on hiss leaves it alone.
        let hiss_only: Vec<f32> = (0..RATE as usize * 10).map(|_| hiss * n()).collect();
        let (_, gains, _) = level(&hiss_only, piece);
        assert!(gains.iter().all(|&g| g == 0.0));
    }

    #[test]
    fn pauses_inside_a_programme_hold_the_gain() {
        // Words at −30 LUFS with 1 s pauses of −65 dBFS room noise: the gain only rises
        // while there are words.
        let words = speech_like(RATE, 1.0, -30.0, 11);
        let room = 10f32.powf(-65.0 / 20.0) * 3f32.sqrt();
        let mut n = noise(12);
        let mut input = Vec::new();
        for _ in 0..6 {
            input.extend(&words);
            input.extend((0..RATE as usize).map(|_| room * n()));
        }
        let (_, gains, _) = level(&input, 4_800);
        // Each pause is 10 pieces; after its first block the gain does not move.
        for pause in 1..6 {
            let start = pause * 20 - 10;
            let during = &gains[start + 1..start + 10];
            assert!(
                during.windows(2).all(|w| w[0] == w[1]),
                "pause {pause}: {during:?}"
            );
        }
        assert!(gains.last() > Some(&3.0));
    }

    #[test]
    fn how_the_stream_is_cut_does_not_change_the_result() {
        let mut input = speech_like(RATE, 8.0, -28.0, 13);
        input.extend(speech_like(RATE, 2.0, -4.0, 14));
        let (whole, _, one) = level(&input, input.len());
        for piece in [1, 7, 480, 4_801, 100_000] {
            let (out, _, other) = level(&input, piece);
            assert!(out == whole, "pieces of {piece}");
            assert_eq!(other.gain_db(), one.gain_db());
        }
    }

    #[test]
    fn the_output_is_the_input_delayed_by_the_look_ahead() {
        for (rate, delay) in [(48_000, 240), (44_100, 220), (16_000, 80), (8_000, 40)] {
            let input = sine(440.0, 0.3, rate, 0.3);
            let mut leveller = Leveller::new(rate, TARGET);
            assert_eq!(leveller.delay_samples(), delay);
            let mut out = input.clone();
            leveller.process(&mut out);
            // Under the ceiling and before the first aim (400 ms), the gain is exactly 1.
            assert!(out[..delay].iter().all(|&s| s == 0.0));
            assert!(out[delay..] == input[..input.len() - delay], "{rate}");
        }
    }

    #[test]
    fn the_limiter_ramps_down_ahead_of_a_peak_and_releases_after_it() {
        let mut input = vec![0.1f32; 8_000];
        input[4_000] = 1.0;
        let mut limiter = Limiter::new(8_000, 0.5);
        let out: Vec<f32> = input.iter().map(|&x| limiter.push(f64::from(x))).collect();
        let d = limiter.delay;
        assert_eq!(out[4_000 + d], 0.5);
        assert!(
            out[3_990 + d] < 0.1 && out[3_990 + d] > 0.05,
            "{}",
            out[3_990 + d]
        );
        assert!(out[7_999] > 0.099, "recovered: {}", out[7_999]);
    }

    #[test]
    fn non_finite_samples_are_silence() {
        let mut leveller = Leveller::new(RATE, TARGET);
        let mut samples = vec![f32::NAN, f32::INFINITY, f32::NEG_INFINITY, 0.5];
        samples.extend(std::iter::repeat_n(0.0, 1_000));
        leveller.process(&mut samples);
        assert!(samples.iter().all(|s| s.is_finite()));
        let delay = leveller.delay_samples();
        assert_eq!(&samples[delay..delay + 4], &[0.0, 0.0, 0.0, 0.5]);
        assert_eq!(leveller.gain_db(), 0.0);
    }

    #[test]
    fn the_short_term_loudness_agrees_with_ebur128() {
        for rate in [8_000, 16_000, 44_100, 48_000] {
            for signal in [
                sine(1000.0, 0.5, rate, 3.0),
                sine(60.0, 0.5, rate, 3.0),
                speech_like(rate, 3.0, -23.0, 15),
            ] {
                let mut ours = ShortTermMeter::new(rate);
                let last = signal.iter().filter_map(|&x| ours.push(x)).last().unwrap();
                let mut theirs = ebur128::EbuR128::new(1, rate, ebur128::Mode::S).unwrap();
                theirs.add_frames_f32(&signal).unwrap();
                let expected = theirs.loudness_shortterm().unwrap();
                let got = last.short_term_lufs.unwrap();
                assert!(
                    (got - expected).abs() < 0.001,
                    "{rate}: {got:.3} vs {expected:.3}"
                );
            }
        }
    }

    #[test]
    fn the_leveller_can_move_to_another_thread() {
        fn is_send<T: Send>(_: &T) {}
        is_send(&Leveller::new(RATE, TARGET));
        is_send(&SilenceDetector::new(RATE, -50.0));
    }

    /// `seconds` of noise with the given RMS in dBFS.
    fn noise_at(dbfs: f64, seconds: f64, seed: u32) -> Vec<f32> {
        let peak = 10f32.powf(dbfs as f32 / 20.0) * 3f32.sqrt();
        let mut n = noise(seed);
        (0..(f64::from(RATE) * seconds) as usize)
            .map(|_| peak * n())
            .collect()
    }

    #[test]
    fn faint_noise_is_silence_from_its_first_block() {
        let mut detector = SilenceDetector::new(RATE, -50.0);
        for piece in noise_at(-60.0, 1.5, 16).chunks(1_000) {
            detector.push(piece);
        }
        assert!(detector.silent_ms() >= 1_450, "{} ms", detector.silent_ms());
        assert_eq!(detector.heard_ms(), 0);
    }

    #[test]
    fn a_tone_ends_the_silence_within_one_block() {
        let mut detector = SilenceDetector::new(RATE, -50.0);
        detector.push(&vec![0.0; RATE as usize * 2]);
        assert_eq!(detector.silent_ms(), 2_000);
        let tone = sine(1000.0, 0.1, RATE, 0.05);
        // Sample by sample: the silence lasts until the tone fills a block, not a moment
        // longer.
        for (i, s) in tone.iter().enumerate() {
            detector.push(&[*s]);
            if i + 1 < tone.len() {
                assert_eq!(detector.silent_ms(), 2_000);
            }
        }
        assert_eq!((detector.silent_ms(), detector.heard_ms()), (0, 50));
        detector.push(&[0.0; 2_400]);
        assert_eq!((detector.silent_ms(), detector.heard_ms()), (50, 0));
    }

    #[test]
    fn the_silence_threshold_is_respected() {
        for (dbfs, silent) in [(-49.0, false), (-51.0, true), (-20.0, false), (-90.0, true)] {
            let mut detector = SilenceDetector::new(RATE, -50.0);
            // A square wave's RMS is its amplitude.
            let level = 10f32.powf(dbfs as f32 / 20.0);
            let square: Vec<f32> = (0..RATE as usize)
                .map(|i| if i / 24 % 2 == 0 { level } else { -level })
                .collect();
            detector.push(&square);
            let expected = if silent { (1_000, 0) } else { (0, 1_000) };
            assert_eq!(
                (detector.silent_ms(), detector.heard_ms()),
                expected,
                "{dbfs}"
            );
        }
        // NaN and infinities are what goes on air: silence.
        let mut detector = SilenceDetector::new(RATE, -50.0);
        detector.push(&[f32::NAN; 2_400]);
        detector.push(&[f32::INFINITY; 2_400]);
        assert_eq!(detector.silent_ms(), 100);
    }
}
