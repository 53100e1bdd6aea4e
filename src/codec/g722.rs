//! ITU-T G.722 (11/88) sub-band ADPCM at 64 kbit/s (mode 1): 16 kHz linear PCM in, one
//! byte per pair of samples out. Pure arithmetic over owned state: no I/O.
//!
//! Written from the block descriptions of Rec. G.722 §3 (encoder) and §4 (decoder): the
//! transmit and receive QMF, and blocks 1L–4L (lower band, 6-bit) and 1H–4H (higher band,
//! 2-bit). The arithmetic is the standard's fixed-point arithmetic, so the bit stream is the
//! one every other G.722 implementation decodes. Only mode 1 is implemented: RFC 3551 §4.5.2
//! carries G.722 at 64 kbit/s only.

/// Transmit/receive QMF coefficients h(2i), i = 0..11, scaled by 2^13 (G.722 table 11).
/// The filter is symmetric, so h(2i+1) = h(22-2i) = `QMF[11 - i]`.
const QMF: [i32; 12] = [3, -11, 12, 32, -210, 951, 3876, -805, 362, -156, 53, -11];

/// Lower-band quantizer decision levels (G.722 table 12), in units of the scale factor / 2^12.
/// `Q6[m]` is the upper edge of interval `m`; interval 30 is open-ended.
const Q6: [i32; 30] = [
    0, 35, 72, 110, 150, 190, 233, 276, 323, 370, 422, 473, 530, 587, 650, 714, 786, 858, 940,
    1023, 1121, 1219, 1339, 1458, 1612, 1765, 1980, 2195, 2557, 2919,
];
/// Code sent for a negative difference in interval `m` (G.722 table 12, ILN).
const ILN: [u8; 31] = [
    0, 63, 62, 31, 30, 29, 28, 27, 26, 25, 24, 23, 22, 21, 20, 19, 18, 17, 16, 15, 14, 13, 12, 11,
    10, 9, 8, 7, 6, 5, 4,
];
/// Code sent for a positive difference in interval `m` (G.722 table 12, ILP).
const ILP: [u8; 31] = [
    0, 61, 60, 59, 58, 57, 56, 55, 54, 53, 52, 51, 50, 49, 48, 47, 46, 45, 44, 43, 42, 41, 40, 39,
    38, 37, 36, 35, 34, 33, 32,
];
/// 6-bit inverse quantizer output level for interval `m` (G.722 table 14, QQ6), scaled by 2^15
/// relative to the scale factor.
const QQ6_LEVEL: [i32; 31] = [
    0, 136, 432, 728, 1040, 1360, 1688, 2032, 2400, 2776, 3168, 3576, 4008, 4464, 4944, 5456, 6000,
    6576, 7192, 7856, 8576, 9360, 10232, 11192, 12280, 13512, 14984, 16704, 19008, 21904, 24808,
];
/// 4-bit inverse quantizer (G.722 table 14, QQ4), indexed by the code's top four bits: the
/// predictor is driven by the 4-bit core so that 48/56 kbit/s decoders stay in step.
const QQ4: [i32; 16] = [
    0, -20456, -12896, -8968, -6288, -4240, -2584, -1200, 20456, 12896, 8968, 6288, 4240, 2584,
    1200, 0,
];
/// Lower-band log scale factor multipliers (G.722 table 15, WL), indexed via `RIL4`.
const WL: [i32; 8] = [-60, -30, 58, 172, 334, 538, 1198, 3042];
/// Maps the 4-bit code to its magnitude class for `WL` (G.722 table 15, RIL4).
const RIL4: [usize; 16] = [0, 7, 6, 5, 4, 3, 2, 1, 7, 6, 5, 4, 3, 2, 1, 0];
/// Inverse log2 table for scale factor computation (G.722 table 16, ILB).
const ILB: [i32; 32] = [
    2048, 2093, 2139, 2186, 2233, 2282, 2332, 2383, 2435, 2489, 2543, 2599, 2656, 2714, 2774, 2834,
    2896, 2960, 3025, 3091, 3158, 3228, 3298, 3371, 3444, 3520, 3597, 3676, 3756, 3838, 3922, 4008,
];
/// Higher-band 2-bit inverse quantizer (G.722 table 17, QQ2), indexed by the code.
const QQ2: [i32; 4] = [-7408, -1616, 7408, 1616];
/// Higher-band log scale factor multipliers (G.722 table 18, WH), indexed via `RIH2`.
const WH: [i32; 3] = [0, -214, 798];
const RIH2: [usize; 4] = [2, 1, 2, 1];
/// Higher-band decision level (G.722 §3.6.2): 564 / 2^12 of the scale factor.
const QH_LEVEL: i32 = 564;

/// The 6-bit inverse quantizer indexed by code (QQ6 with sign), derived from the per-interval
/// levels and the code tables so the two cannot disagree. Codes 0..=3 are never sent by an
/// encoder; G.722 table 14 decodes them like code 63.
const QQ6: [i32; 64] = {
    let mut t = [-136; 64];
    let mut m = 1;
    while m <= 30 {
        t[ILP[m] as usize] = QQ6_LEVEL[m];
        t[ILN[m] as usize] = -QQ6_LEVEL[m];
        m += 1;
    }
    t
};

fn sat16(x: i32) -> i32 {
    x.clamp(i32::from(i16::MIN), i32::from(i16::MAX))
}

/// Adaptive predictor and scale factor of one sub-band (blocks 3 and 4 of either band).
#[derive(Debug, Clone)]
struct Band {
    /// Signal estimate sL/sH for the next sample.
    s: i32,
    /// Pole-section output (FILTEP) and zero-section output (FILTEZ).
    sp: i32,
    sz: i32,
    /// Reconstructed signal r and partial reconstruction p, current and two past.
    r: [i32; 3],
    p: [i32; 3],
    /// Pole coefficients a1, a2 (index 0 unused).
    a: [i32; 3],
    /// Zero coefficients b1..b6 (index 0 unused).
    b: [i32; 7],
    /// Quantized difference signal, current and six past.
    d: [i32; 7],
    /// Log scale factor (nabla) and scale factor (delta).
    nb: i32,
    det: i32,
}

impl Band {
    fn new(det: i32) -> Self {
        Band {
            s: 0,
            sp: 0,
            sz: 0,
            r: [0; 3],
            p: [0; 3],
            a: [0; 3],
            b: [0; 7],
            d: [0; 7],
            nb: 0,
            det,
        }
    }

    /// LOGSCL/LOGSCH then SCALEL/SCALEH: adapts the scale factor. `w` is the log multiplier
    /// for the code just sent, `max_nb` the band's limit and `shift_base` 8 (lower) or 10
    /// (higher band).
    fn adapt_scale(&mut self, w: i32, max_nb: i32, shift_base: i32) {
        self.nb = (((self.nb * 32512) >> 15) + w).clamp(0, max_nb);
        let mantissa = ILB[((self.nb >> 6) & 31) as usize];
        let shift = shift_base - (self.nb >> 11);
        let det = if shift < 0 {
            mantissa << -shift
        } else {
            mantissa >> shift
        };
        self.det = det << 2;
    }

    /// Block 4: reconstruction, pole and zero predictor adaptation and the next estimate,
    /// from the quantized difference `d`.
    fn update(&mut self, d: i32) {
        // RECONS, PARREC
        self.d[0] = d;
        self.r[0] = sat16(self.s + d);
        self.p[0] = sat16(self.sz + d);

        // UPPOL2
        let neg = |x: i32| x < 0;
        let sg = [neg(self.p[0]), neg(self.p[1]), neg(self.p[2])];
        let wd1 = sat16(self.a[1] << 2);
        let wd2 = if sg[0] == sg[1] { -wd1 } else { wd1 }.min(32767);
        let a2 = (wd2 >> 7) + if sg[0] == sg[2] { 128 } else { -128 } + ((self.a[2] * 32512) >> 15);
        let a2 = a2.clamp(-12288, 12288);

        // UPPOL1
        let a1 = sat16(if sg[0] == sg[1] { 192 } else { -192 } + ((self.a[1] * 32640) >> 15));
        let limit = sat16(15360 - a2);
        let a1 = a1.clamp(-limit, limit);

        // UPZERO
        let step = if d == 0 { 0 } else { 128 };
        let mut b = [0; 7];
        for (i, bi) in b.iter_mut().enumerate().skip(1) {
            let same = neg(self.d[i]) == neg(d);
            *bi = sat16(if same { step } else { -step } + ((self.b[i] * 32640) >> 15));
        }

        // DELAYA
        self.d.copy_within(0..6, 1);
        self.b = b;
        self.r.copy_within(0..2, 1);
        self.p.copy_within(0..2, 1);
        self.a = [0, a1, a2];

        // FILTEP
        let wd1 = (self.a[1] * sat16(self.r[1] + self.r[1])) >> 15;
        let wd2 = (self.a[2] * sat16(self.r[2] + self.r[2])) >> 15;
        self.sp = sat16(wd1 + wd2);

        // FILTEZ
        let mut sz = 0;
        for i in 1..7 {
            sz += (self.b[i] * sat16(self.d[i] + self.d[i])) >> 15;
        }
        self.sz = sat16(sz);

        // PREDIC
        self.s = sat16(self.sp + self.sz);
    }

    /// Lower band, blocks 2L–3L after quantization: drives the predictor from the 4-bit core
    /// of code `il` and adapts the scale factor.
    fn update_lower(&mut self, il: u8) {
        let il4 = usize::from(il >> 2);
        let d = (self.det * QQ4[il4]) >> 15;
        self.adapt_scale(WL[RIL4[il4]], 18432, 8);
        self.update(d);
    }

    /// Higher band, blocks 2H–3H after quantization.
    fn update_higher(&mut self, ih: u8) {
        let ih = usize::from(ih & 3);
        let d = (self.det * QQ2[ih]) >> 15;
        self.adapt_scale(WH[RIH2[ih]], 22528, 10);
        self.update(d);
    }
}

/// The G.722 encoder state. Feed it consecutive audio of one stream: the ADPCM state carries
/// over between calls.
#[derive(Debug, Clone)]
pub struct Encoder {
    /// Transmit QMF history; index 23 is the newest sample.
    x: [i32; 24],
    low: Band,
    high: Band,
    /// A sample left over from an odd-length call, waiting for its pair.
    pending: Option<i16>,
}

impl Default for Encoder {
    fn default() -> Self {
        Self::new()
    }
}

impl Encoder {
    pub fn new() -> Self {
        Encoder {
            x: [0; 24],
            // Initial scale factors of G.722 §3.4 (reset): DETL = 32, DETH = 8.
            low: Band::new(32),
            high: Band::new(8),
            pending: None,
        }
    }

    /// Encodes 16 kHz samples, appending one byte per pair to `out`. An odd trailing sample
    /// is kept for the next call.
    pub fn encode(&mut self, samples: &[i16], out: &mut Vec<u8>) {
        out.reserve(samples.len() / 2 + 1);
        let mut rest = samples;
        if let Some(first) = self.pending.take() {
            match rest.split_first() {
                Some((&second, tail)) => {
                    out.push(self.encode_pair(first, second));
                    rest = tail;
                }
                None => {
                    self.pending = Some(first);
                    return;
                }
            }
        }
        let mut pairs = rest.chunks_exact(2);
        for pair in &mut pairs {
            out.push(self.encode_pair(pair[0], pair[1]));
        }
        self.pending = pairs.remainder().first().copied();
    }

    fn encode_pair(&mut self, first: i16, second: i16) -> u8 {
        // Transmit QMF (G.722 §3.1): xA from the odd taps of the history (newest sample
        // included), xB from the even ones; the outputs are 15-bit sub-band signals.
        self.x.copy_within(2.., 0);
        self.x[22] = i32::from(first);
        self.x[23] = i32::from(second);
        let (mut xa, mut xb) = (0, 0);
        for i in 0..12 {
            xa += self.x[2 * i + 1] * QMF[11 - i];
            xb += self.x[2 * i] * QMF[i];
        }
        let xl = (xa + xb) >> 14;
        let xh = (xa - xb) >> 14;

        // Lower band: SUBTRA, QUANTL (magnitude in one's complement, as the standard does).
        let el = sat16(xl - self.low.s);
        let magnitude = if el >= 0 { el } else { -(el + 1) };
        let interval = (1..30)
            .find(|&m| magnitude < (Q6[m] * self.low.det) >> 12)
            .unwrap_or(30);
        let il = if el < 0 { ILN[interval] } else { ILP[interval] };
        self.low.update_lower(il);

        // Higher band: SUBTRA, QUANTH.
        let eh = sat16(xh - self.high.s);
        let magnitude = if eh >= 0 { eh } else { -(eh + 1) };
        let big = magnitude >= (QH_LEVEL * self.high.det) >> 12;
        let ih: u8 = match (eh < 0, big) {
            (false, false) => 3,
            (false, true) => 2,
            (true, false) => 1,
            (true, true) => 0,
        };
        self.high.update_higher(ih);

        (ih << 6) | il
    }
}

/// The G.722 decoder state (64 kbit/s). Feed it consecutive payloads of one stream.
#[derive(Debug, Clone)]
pub struct Decoder {
    /// Receive QMF history of (xd, xs) pairs; indices 22/23 hold the newest pair.
    y: [i32; 24],
    low: Band,
    high: Band,
}

impl Default for Decoder {
    fn default() -> Self {
        Self::new()
    }
}

impl Decoder {
    pub fn new() -> Self {
        Decoder {
            y: [0; 24],
            low: Band::new(32),
            high: Band::new(8),
        }
    }

    /// Decodes G.722 bytes, appending two 16 kHz samples per byte to `out`.
    pub fn decode(&mut self, bytes: &[u8], out: &mut Vec<i16>) {
        out.reserve(bytes.len() * 2);
        for &code in bytes {
            let il = code & 0x3F;
            let ih = code >> 6;

            // Lower band: INVQBL with the full 6 bits for output, LIMIT (§4.2).
            let dl = (self.low.det * QQ6[usize::from(il)]) >> 15;
            let rl = (self.low.s + dl).clamp(-16384, 16383);
            self.low.update_lower(il);

            // Higher band: INVQAH, LIMIT.
            let dh = (self.high.det * QQ2[usize::from(ih)]) >> 15;
            let rh = (self.high.s + dh).clamp(-16384, 16383);
            self.high.update_higher(ih);

            // Receive QMF (§4.4).
            self.y.copy_within(2.., 0);
            self.y[22] = rl - rh;
            self.y[23] = rl + rh;
            let (mut first, mut second) = (0, 0);
            for i in 0..12 {
                first += self.y[2 * i] * QMF[11 - i];
                second += self.y[2 * i + 1] * QMF[i];
            }
            out.push(sat16(first >> 11) as i16);
            out.push(sat16(second >> 11) as i16);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sine(freq: f64, rate: f64, amplitude: f64, n: usize) -> Vec<i16> {
        (0..n)
            .map(|i| {
                (amplitude * (2.0 * std::f64::consts::PI * freq * i as f64 / rate).sin()) as i16
            })
            .collect()
    }

    #[test]
    fn the_inverse_quantizer_table_matches_g722_table_14() {
        assert_eq!(
            &QQ6[..8],
            &[-136, -136, -136, -136, -24808, -21904, -19008, -16704]
        );
        assert_eq!(
            &QQ6[28..36],
            &[-1688, -1360, -1040, -728, 24808, 21904, 19008, 16704]
        );
        assert_eq!(&QQ6[58..], &[1040, 728, 432, 136, -432, -136]);
    }

    #[test]
    fn the_qmf_pair_alone_reconstructs_its_input() {
        // Analysis then synthesis without ADPCM in between: the QMF bank is near-perfect
        // reconstruction with a 22-sample delay, which pins the tap order of both halves.
        let input = sine(1000.0, 16000.0, 8000.0, 1600);
        let mut enc = Encoder::new();
        let mut dec = Decoder::new();
        let mut out = Vec::new();
        for pair in input.chunks_exact(2) {
            enc.x.copy_within(2.., 0);
            enc.x[22] = i32::from(pair[0]);
            enc.x[23] = i32::from(pair[1]);
            let (mut xa, mut xb) = (0, 0);
            for i in 0..12 {
                xa += enc.x[2 * i + 1] * QMF[11 - i];
                xb += enc.x[2 * i] * QMF[i];
            }
            let (xl, xh) = ((xa + xb) >> 14, (xa - xb) >> 14);
            dec.y.copy_within(2.., 0);
            dec.y[22] = xl - xh;
            dec.y[23] = xl + xh;
            let (mut first, mut second) = (0, 0);
            for i in 0..12 {
                first += dec.y[2 * i] * QMF[11 - i];
                second += dec.y[2 * i + 1] * QMF[i];
            }
            out.push((first >> 11) as i16);
            out.push((second >> 11) as i16);
        }
        let worst = input[..1500]
            .iter()
            .zip(&out[22..])
            .map(|(&a, &b)| (i32::from(a) - i32::from(b)).abs())
            .max()
            .unwrap_or(i32::MAX);
        assert!(worst < 80, "worst error {worst}");
    }

    #[test]
    fn odd_length_calls_give_the_same_stream_as_one_call() {
        let input = sine(440.0, 16000.0, 12000.0, 321);
        let mut whole = Vec::new();
        Encoder::new().encode(&input, &mut whole);
        let mut split = Vec::new();
        let mut enc = Encoder::new();
        enc.encode(&input[..7], &mut split);
        enc.encode(&input[7..8], &mut split);
        enc.encode(&input[8..], &mut split);
        assert_eq!(whole, split);
        assert_eq!(whole.len(), 160);
    }

    #[test]
    fn full_scale_square_waves_do_not_overflow() {
        let input: Vec<i16> = (0..4000)
            .map(|i| if (i / 3) % 2 == 0 { i16::MAX } else { i16::MIN })
            .collect();
        let mut bytes = Vec::new();
        Encoder::new().encode(&input, &mut bytes);
        let mut out = Vec::new();
        Decoder::new().decode(&bytes, &mut out);
        assert_eq!(out.len(), 4000);
        let mut out = Vec::new();
        let noise: Vec<u8> = (0..4000u32)
            .map(|i| (i.wrapping_mul(2654435761) >> 13) as u8)
            .collect();
        Decoder::new().decode(&noise, &mut out);
        assert_eq!(out.len(), 8000);
    }

    fn fnv1a(bytes: impl IntoIterator<Item = u8>) -> u64 {
        bytes.into_iter().fold(0xcbf2_9ce4_8422_2325, |h, b| {
            (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
        })
    }

    /// 3 s at 16 kHz of integer-only test signal (so every platform makes the same one): a
    /// triangle sweeping 100 Hz to 7 kHz, white noise, and a last half second driven into
    /// clipping.
    fn sweep_with_noise() -> Vec<i16> {
        let (mut seed, mut phase) = (1u32, 0u32);
        (0..48_000u32)
            .map(|i| {
                seed = seed.wrapping_mul(1_664_525).wrapping_add(1_013_904_223);
                let noise = ((seed >> 16) as i32 - 32768) / 16;
                phase = phase.wrapping_add(26_843_545 + i * 38_000);
                let triangle = ((phase >> 16) as i32 - 32768).abs() * 2 - 32768;
                let v = triangle * 3 / 8 + noise;
                let v = if i >= 40_000 { v * 3 } else { v };
                v.clamp(-32768, 32767) as i16
            })
            .collect()
    }

    #[test]
    fn the_bit_stream_is_the_one_other_g722_implementations_produce_and_decode() {
        // The hashes are of FFmpeg's own G.722 encoder output for this input and of FFmpeg's
        // decoding of it; ours matched byte for byte and sample for sample when written.
        let mut bytes = Vec::new();
        Encoder::new().encode(&sweep_with_noise(), &mut bytes);
        assert_eq!(bytes.len(), 24_000);
        assert_eq!(&bytes[..8], &[146, 32, 132, 33, 134, 32, 160, 167]);
        assert_eq!(fnv1a(bytes.iter().copied()), 0x32de_2442_dff9_9d52);
        let mut pcm = Vec::new();
        Decoder::new().decode(&bytes, &mut pcm);
        assert_eq!(
            fnv1a(pcm.iter().flat_map(|s| s.to_le_bytes())),
            0x6439_a622_ad95_6a2c
        );
    }
}
