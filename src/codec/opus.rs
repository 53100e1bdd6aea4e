//! Opus (RFC 6716) for RTP as RFC 7587 carries it: 48 kHz, mono, one Opus packet per RTP
//! packet, one packet per ptime. Wraps the pure-Rust `opus-rs` port of libopus. Pure: no I/O.
//!
//! `opus-rs` is third-party code decoding bytes from the network, so every call into it is
//! fenced with `catch_unwind`: a panic there becomes a [`CodecError`], never a crash, and the
//! state it may have left half-updated is thrown away.

use std::panic::{AssertUnwindSafe, catch_unwind};

use bytes::Bytes;
use opus_rs::{Application, OpusDecoder, OpusEncoder};

use super::CodecError;

/// Opus always runs at 48 kHz here: RFC 7587 fixes the RTP clock at 48000, and encoding at the
/// clock rate means no hidden resampling inside the codec.
pub const RATE: u32 = 48_000;

/// Encoder lookahead at 48 kHz (libopus's 4 ms delay compensation plus the 2.5 ms CELT
/// overlap): how much later the audio comes out of a decoder than it went in.
pub const LOOKAHEAD_SAMPLES: usize = 312;

/// Largest Opus packet (RFC 6716 §3.4, R5 with code 3 framing: 1275 bytes per frame, up to
/// three 20 ms frames in a 60 ms packet); CBR at our bitrates stays far below it.
const MAX_PACKET_BYTES: usize = 3 * 1275 + 7;

/// The longest packet a decoder may meet: 120 ms at 48 kHz.
const MAX_DECODED_SAMPLES: usize = 5760;

/// One clip's (or one silence run's) encoder.
pub struct Encoder {
    inner: OpusEncoder,
    frame_samples: usize,
    out: Vec<u8>,
}

impl Encoder {
    /// `bitrate_bps` must already be within the codec's bounds; `frame_samples` one of the
    /// Opus frame durations at 48 kHz.
    pub fn new(bitrate_bps: u32, frame_samples: usize) -> Result<Self, CodecError> {
        // Voip, not Audio: the content is speech announcements played on PA horns that
        // reproduce little below 300 Hz, heard over street noise. Voip's speech tuning
        // (SILK layer in use at low rates, high-pass at the SILK cutoff rather than DC-only)
        // spends the 24 kb/s on intelligibility instead of bass the horns cannot play.
        let mut inner =
            OpusEncoder::new(RATE as i32, 1, Application::Voip).map_err(CodecError::Opus)?;
        inner.bitrate_bps = i32::try_from(bitrate_bps).unwrap_or(i32::MAX);
        // CBR: a 4G link's budget per cluster is fixed and metered; every packet has the same
        // size (bitrate × ptime), so a campaign's data use is known in advance and there are
        // no bursts for a cellular scheduler to queue.
        inner.use_cbr = true;
        inner.use_inband_fec = false;
        Ok(Encoder {
            inner,
            frame_samples,
            out: vec![0; MAX_PACKET_BYTES],
        })
    }

    /// Encodes exactly one frame of `frame_samples` samples into one packet.
    pub fn encode_frame(&mut self, frame: &[f32]) -> Result<Bytes, CodecError> {
        let (inner, out, n) = (&mut self.inner, &mut self.out, self.frame_samples);
        let len = catch_unwind(AssertUnwindSafe(|| inner.encode(frame, n, out)))
            .map_err(|_| CodecError::Opus("the Opus encoder panicked"))?
            .map_err(CodecError::Opus)?;
        self.out
            .get(..len)
            .map(Bytes::copy_from_slice)
            .ok_or(CodecError::Opus("the Opus encoder overran its buffer"))
    }
}

/// A 48 kHz mono Opus decoder for one stream.
pub struct Decoder {
    inner: OpusDecoder,
    pcm: Vec<f32>,
}

impl Decoder {
    pub fn new() -> Result<Self, CodecError> {
        Ok(Decoder {
            inner: OpusDecoder::new(RATE as i32, 1).map_err(CodecError::Opus)?,
            pcm: vec![0.0; MAX_DECODED_SAMPLES],
        })
    }

    pub fn decode(&mut self, packet: &[u8]) -> Result<Vec<i16>, CodecError> {
        // An empty payload is no Opus packet (RFC 7587 §4.2); libopus would read it as a
        // loss to conceal, which is the jitter buffer's call, not the depacketizer's.
        if packet.is_empty() {
            return Err(CodecError::InvalidPayload {
                codec: super::Codec::Opus,
                reason: "empty Opus packet",
            });
        }
        let (inner, pcm) = (&mut self.inner, &mut self.pcm);
        let result = catch_unwind(AssertUnwindSafe(|| {
            inner.decode(packet, MAX_DECODED_SAMPLES, pcm)
        }));
        let n = match result {
            Ok(decoded) => decoded.map_err(CodecError::Opus)?,
            Err(_) => {
                // The decoder's state is suspect after a panic: start afresh.
                *self = Decoder::new()?;
                return Err(CodecError::Opus("the Opus decoder panicked"));
            }
        };
        Ok(self.pcm.iter().take(n).map(|&s| super::to_i16(s)).collect())
    }
}
