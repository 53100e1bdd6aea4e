//! Codecs a cluster can receive: turn a mono clip at the codec's rate into RTP payload
//! frames, once, so that sending is only header stamping. Pure: no I/O, no clock.

pub mod g711;

use std::fmt;
use std::str::FromStr;

use bytes::Bytes;
use serde::{Deserialize, Serialize};

/// The payload format a cluster is sent.
#[derive(
    Debug,
    Clone,
    Copy,
    PartialEq,
    Eq,
    PartialOrd,
    Ord,
    Hash,
    Serialize,
    Deserialize,
    utoipa::ToSchema,
)]
#[serde(rename_all = "lowercase")]
pub enum Codec {
    /// G.711 µ-law, RFC 3551 static payload type 0.
    Pcmu,
    /// G.711 A-law, RFC 3551 static payload type 8.
    Pcma,
}

/// The codec name is not one this build can send.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown codec `{0}`; expected one of: pcmu, pcma")]
pub struct UnknownCodec(pub String);

impl FromStr for Codec {
    type Err = UnknownCodec;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "pcmu" => Ok(Codec::Pcmu),
            "pcma" => Ok(Codec::Pcma),
            other => Err(UnknownCodec(other.to_string())),
        }
    }
}

impl fmt::Display for Codec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl Codec {
    pub fn as_str(self) -> &'static str {
        match self {
            Codec::Pcmu => "pcmu",
            Codec::Pcma => "pcma",
        }
    }

    /// RTP payload type (RFC 3551 table 4).
    pub fn payload_type(self) -> u8 {
        match self {
            Codec::Pcmu => 0,
            Codec::Pcma => 8,
        }
    }

    /// Encoding name as written in an SDP `a=rtpmap` line.
    pub fn encoding_name(self) -> &'static str {
        match self {
            Codec::Pcmu => "PCMU",
            Codec::Pcma => "PCMA",
        }
    }

    /// Rate the audio must be resampled to before encoding.
    pub fn sample_rate(self) -> u32 {
        8000
    }

    /// RTP timestamp clock rate (differs from the sample rate for G.722 and Opus).
    pub fn clock_rate(self) -> u32 {
        8000
    }

    /// Samples of audio in one frame of `ptime_ms`.
    pub fn samples_per_frame(self, ptime_ms: u32) -> usize {
        (self.sample_rate() as usize * ptime_ms as usize) / 1000
    }

    /// RTP timestamp advance per frame of `ptime_ms`.
    pub fn timestamp_step(self, ptime_ms: u32) -> u32 {
        self.clock_rate() * ptime_ms / 1000
    }

    /// Encodes mono samples in [-1, 1] at [`Codec::sample_rate`] into one payload per
    /// `ptime_ms`. The last frame is padded with silence so every packet has the same length.
    pub fn encode_frames(self, samples: &[f32], ptime_ms: u32) -> Vec<Bytes> {
        let per_frame = self.samples_per_frame(ptime_ms).max(1);
        let encode: fn(i16) -> u8 = match self {
            Codec::Pcmu => g711::ulaw_encode,
            Codec::Pcma => g711::alaw_encode,
        };
        samples
            .chunks(per_frame)
            .map(|chunk| {
                let mut frame = Vec::with_capacity(per_frame);
                frame.extend(chunk.iter().map(|&s| encode(to_i16(s))));
                frame.resize(per_frame, encode(0));
                Bytes::from(frame)
            })
            .collect()
    }

    /// Decodes one payload back to linear samples (receivers and tests).
    pub fn decode_payload(self, payload: &[u8]) -> Vec<i16> {
        let decode: fn(u8) -> i16 = match self {
            Codec::Pcmu => g711::ulaw_decode,
            Codec::Pcma => g711::alaw_decode,
        };
        payload.iter().map(|&b| decode(b)).collect()
    }

    /// One frame of silence, for keeping a session's clock running between programmes.
    pub fn silence_frame(self, ptime_ms: u32) -> Bytes {
        self.encode_frames(&vec![0.0; self.samples_per_frame(ptime_ms)], ptime_ms)
            .pop()
            .unwrap_or_default()
    }
}

/// Scales a float sample to 16-bit, saturating outside [-1, 1].
fn to_i16(sample: f32) -> i16 {
    (sample * 32767.0).round().clamp(-32768.0, 32767.0) as i16
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codec_names_parse_and_print_the_same() {
        for codec in [Codec::Pcmu, Codec::Pcma] {
            assert_eq!(codec.as_str().parse::<Codec>(), Ok(codec));
        }
        assert!("opus2".parse::<Codec>().is_err());
    }

    #[test]
    fn twenty_ms_at_8khz_is_160_samples_and_160_ticks() {
        assert_eq!(Codec::Pcmu.samples_per_frame(20), 160);
        assert_eq!(Codec::Pcma.timestamp_step(20), 160);
        assert_eq!(Codec::Pcmu.payload_type(), 0);
        assert_eq!(Codec::Pcma.payload_type(), 8);
    }

    #[test]
    fn the_last_frame_is_padded_with_silence() {
        let frames = Codec::Pcmu.encode_frames(&vec![0.5; 400], 20);
        assert_eq!(frames.len(), 3);
        assert!(frames.iter().all(|f| f.len() == 160));
        assert_eq!(frames[2][80..], [0xFF; 80]);
        assert_eq!(Codec::Pcma.silence_frame(20), Bytes::from(vec![0xD5; 160]));
    }

    #[test]
    fn encoding_then_decoding_keeps_the_waveform() {
        let tone: Vec<f32> = (0..800)
            .map(|i| 0.5 * (i as f32 * 2.0 * std::f32::consts::PI * 1000.0 / 8000.0).sin())
            .collect();
        for codec in [Codec::Pcmu, Codec::Pcma] {
            let decoded: Vec<i16> = codec
                .encode_frames(&tone, 20)
                .iter()
                .flat_map(|f| codec.decode_payload(f))
                .collect();
            let worst = tone
                .iter()
                .zip(&decoded)
                .map(|(&s, &d)| (s * 32767.0 - f32::from(d)).abs())
                .fold(0.0, f32::max);
            assert!(worst < 600.0, "{codec}: worst error {worst}");
        }
    }
}
