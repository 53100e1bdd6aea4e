//! ITU-T G.711 companding (µ-law and A-law) of 16-bit linear PCM.
//! Pure arithmetic over samples: no buffers, no I/O.
//!
//! Written from the segment tables of Rec. G.711 (11/88), tables 1a/1b and 2a/2b;
//! the tests pin the standard's decision and reconstruction values.

/// Bias added before µ-law segment search (G.711 table 2a works on 14-bit magnitudes + 33).
const ULAW_BIAS: i32 = 0x84;
/// Largest magnitude µ-law can represent once the bias is added (14-bit + bias, clipped).
const ULAW_CLIP: i32 = 32635;

/// Encodes one linear sample to µ-law (PCMU). Bits are inverted on the wire, as G.711 requires.
pub fn ulaw_encode(sample: i16) -> u8 {
    let mut magnitude = i32::from(sample);
    let sign = if magnitude < 0 {
        magnitude = -magnitude;
        0x80
    } else {
        0x00
    };
    let magnitude = magnitude.min(ULAW_CLIP) + ULAW_BIAS;
    // Segment = position of the highest set bit above bit 7 (0..=7).
    let exponent = (31 - (magnitude as u32).leading_zeros())
        .saturating_sub(7)
        .min(7) as i32;
    let mantissa = (magnitude >> (exponent + 3)) & 0x0F;
    !(sign | (exponent << 4) as u8 | mantissa as u8)
}

/// Decodes one µ-law byte to a linear sample.
pub fn ulaw_decode(byte: u8) -> i16 {
    let byte = !byte;
    let sign = byte & 0x80;
    let exponent = i32::from((byte >> 4) & 0x07);
    let mantissa = i32::from(byte & 0x0F);
    let magnitude = (((mantissa << 3) + ULAW_BIAS) << exponent) - ULAW_BIAS;
    (if sign != 0 { -magnitude } else { magnitude }) as i16
}

/// Encodes one linear sample to A-law (PCMA). Even bits are inverted (XOR 0x55), as G.711 requires.
pub fn alaw_encode(sample: i16) -> u8 {
    // A-law works on 13-bit magnitudes.
    let linear = i32::from(sample) >> 3;
    let (sign, magnitude) = if linear >= 0 {
        (0x80u8, linear)
    } else {
        (0x00u8, -linear - 1)
    };
    let magnitude = magnitude.min(0x0FFF);
    let code = if magnitude < 32 {
        (magnitude >> 1) as u8
    } else {
        let exponent = (31 - (magnitude as u32).leading_zeros()) as i32 - 4; // 1..=7
        let mantissa = (magnitude >> exponent) & 0x0F;
        ((exponent << 4) as u8) | mantissa as u8
    };
    (sign | code) ^ 0x55
}

/// Decodes one A-law byte to a linear sample.
pub fn alaw_decode(byte: u8) -> i16 {
    let byte = byte ^ 0x55;
    let exponent = i32::from((byte >> 4) & 0x07);
    let mantissa = i32::from(byte & 0x0F);
    let magnitude = if exponent == 0 {
        (mantissa << 4) + 8
    } else {
        ((mantissa << 4) + 0x108) << (exponent - 1)
    };
    (if byte & 0x80 != 0 {
        magnitude
    } else {
        -magnitude
    }) as i16
}

#[cfg(test)]
mod tests {
    use super::*;

    // Reference points of ITU-T G.711 (tables 1a/2a): linear input, code on the wire and
    // reconstruction value, in the 16-bit domain (G.711's 13/14-bit values shifted left by
    // 3 and 2). The values agree with the G.191 software tools' g711 reference codec.
    #[test]
    fn ulaw_matches_the_g711_table() {
        // Positive zero is 0xFF on the wire, negative zero 0x7F.
        assert_eq!(ulaw_encode(0), 0xFF);
        assert_eq!(ulaw_decode(0xFF), 0);
        assert_eq!(ulaw_decode(0x7F), 0);
        // Largest magnitude: code 0x80 (positive) and 0x00 (negative), value ±32124.
        assert_eq!(ulaw_encode(i16::MAX), 0x80);
        assert_eq!(ulaw_encode(i16::MIN), 0x00);
        assert_eq!(ulaw_decode(0x80), 32124);
        assert_eq!(ulaw_decode(0x00), -32124);
        assert_eq!(ulaw_encode(100), 0xF2);
        assert_eq!(ulaw_encode(-100), 0x72);
        assert_eq!(ulaw_encode(5000), 0xAB);
        assert_eq!(ulaw_encode(1000), 0xCE);
        assert_eq!(ulaw_decode(0xCE), 988);
        assert_eq!(ulaw_encode(-1000), 0x4E);
        assert_eq!(ulaw_decode(0x4E), -988);
    }

    #[test]
    fn alaw_matches_the_g711_table() {
        // Smallest positive and negative outputs: code 0xD5 and 0x55, value ±8.
        assert_eq!(alaw_encode(0), 0xD5);
        assert_eq!(alaw_decode(0xD5), 8);
        assert_eq!(alaw_decode(0x55), -8);
        // Largest magnitude: 0xAA positive, 0x2A negative, value ±32256.
        assert_eq!(alaw_encode(i16::MAX), 0xAA);
        assert_eq!(alaw_encode(i16::MIN), 0x2A);
        assert_eq!(alaw_decode(0xAA), 32256);
        assert_eq!(alaw_decode(0x2A), -32256);
        assert_eq!(alaw_encode(100), 0xD3);
        assert_eq!(alaw_encode(-100), 0x53);
        assert_eq!(alaw_encode(5000), 0x86);
        assert_eq!(alaw_encode(1000), 0xFA);
        assert_eq!(alaw_decode(0xFA), 1008);
        assert_eq!(alaw_encode(-1000), 0x7A);
        assert_eq!(alaw_decode(0x7A), -1008);
    }

    #[test]
    fn every_code_round_trips_through_its_reconstruction_value() {
        for code in 0..=255u8 {
            // µ-law has two zeros (0x7F, 0xFF); both decode to 0, which encodes as 0xFF.
            let back = ulaw_encode(ulaw_decode(code));
            assert!(
                back == code || (code == 0x7F && back == 0xFF),
                "ulaw {code:#04x}"
            );
            assert_eq!(alaw_encode(alaw_decode(code)), code, "alaw {code:#04x}");
        }
    }

    #[test]
    fn quantisation_error_stays_within_half_a_step() {
        for s in (i16::MIN..=i16::MAX).step_by(7) {
            let u = i32::from(ulaw_decode(ulaw_encode(s)));
            let a = i32::from(alaw_decode(alaw_encode(s)));
            let s = i32::from(s);
            // Step size at the top segment is 1024 (µ) / 1024 (A) in the 16-bit domain.
            let bound = (s.abs() / 16).max(8) + 8;
            if s.abs() < 32000 {
                assert!((u - s).abs() <= bound, "ulaw {s} -> {u}");
                assert!((a - s).abs() <= bound, "alaw {s} -> {a}");
            }
        }
    }
}
