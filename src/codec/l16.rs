//! L16: uncompressed 16-bit linear PCM, network byte order (RFC 3551 §4.5.11).
//! Pure byte shuffling: no I/O.

/// Appends `samples` to `out` as big-endian signed 16-bit words.
pub fn encode(samples: &[i16], out: &mut Vec<u8>) {
    out.reserve(samples.len() * 2);
    for s in samples {
        out.extend_from_slice(&s.to_be_bytes());
    }
}

/// Reads big-endian signed 16-bit words. `None` when the payload is not a whole number of
/// samples, which no L16 sender produces.
pub fn decode(payload: &[u8]) -> Option<Vec<i16>> {
    if !payload.len().is_multiple_of(2) {
        return None;
    }
    Some(
        payload
            .chunks_exact(2)
            .map(|w| i16::from_be_bytes([w[0], w[1]]))
            .collect(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn samples_go_on_the_wire_most_significant_byte_first() {
        let mut out = Vec::new();
        encode(&[0x1234, -2, i16::MIN], &mut out);
        assert_eq!(out, [0x12, 0x34, 0xFF, 0xFE, 0x80, 0x00]);
        assert_eq!(decode(&out), Some(vec![0x1234, -2, i16::MIN]));
    }

    #[test]
    fn a_payload_with_half_a_sample_is_rejected() {
        assert_eq!(decode(&[1, 2, 3]), None);
        assert_eq!(decode(&[]), Some(vec![]));
    }
}
