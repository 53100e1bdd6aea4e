//! Codecs a cluster can receive: turn a mono clip at the codec's rate into RTP payload
//! frames, once, so that sending is only header stamping, or a live stream frame by frame as
//! it arrives ([`StreamEncoder`]); decode them back for receivers and tests; say what the SDP
//! must carry. Pure: no I/O, no clock, no async.
//!
//! | codec | PT | sample rate | RTP clock | 20 ms payload |
//! |---|---|---|---|---|
//! | PCMU (G.711 µ-law) | 0 | 8000 | 8000 | 160 bytes |
//! | PCMA (G.711 A-law) | 8 | 8000 | 8000 | 160 bytes |
//! | L16 mono | 11 | 44100 | 44100 | 1764 bytes |
//! | G.722 64 kbit/s | 9 | 16000 | 8000 (RFC 3551 §4.5.2) | 160 bytes |
//! | Opus mono CBR | 96 | 48000 | 48000 (RFC 7587) | bitrate × ptime (60 bytes at 24 kb/s) |
//!
//! L16 at 44.1 kHz is 1764 bytes per 20 ms, more than an Ethernet MTU carries in one IP
//! packet: the stream is fragmented unless the cluster uses 10 ms packets. It is meant for
//! LAN receivers; 4G clusters should use Opus.

pub mod g711;
mod g722;
mod l16;
mod opus;

use std::fmt;
use std::ops::RangeInclusive;
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
    /// 16-bit big-endian linear PCM, mono, 44.1 kHz: RFC 3551 static payload type 11.
    L16,
    /// ITU-T G.722 at 64 kbit/s (16 kHz audio), RFC 3551 static payload type 9.
    G722,
    /// Opus, mono, 48 kHz, dynamic payload type 96 (RFC 7587).
    Opus,
}

/// The codec name is not one this build can send.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown codec `{0}`; expected one of: pcmu, pcma, l16, g722, opus")]
pub struct UnknownCodec(pub String);

/// Why a clip could not be encoded or a payload decoded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CodecError {
    /// The packet time cannot be framed by this codec (Opus has no 30 or 50 ms frames; L16 at
    /// 44.1 kHz needs whole multiples of 10 ms to have whole samples).
    #[error("{codec} cannot use {ptime_ms} ms packets; it supports {:?} ms", .codec.supported_ptimes())]
    UnsupportedPtime { codec: Codec, ptime_ms: u32 },
    /// The Opus bitrate setting is outside what we let a cluster be sent.
    #[error(
        "Opus bitrate {0} b/s is outside {min}..={max} b/s",
        min = CodecSettings::OPUS_BITRATE_BPS.start(),
        max = CodecSettings::OPUS_BITRATE_BPS.end()
    )]
    OpusBitrateOutOfRange(u32),
    /// A payload that no sender of this codec produces (odd-length L16, empty Opus).
    #[error("invalid {codec} payload: {reason}")]
    InvalidPayload { codec: Codec, reason: &'static str },
    /// The Opus library refused to encode or decode, with its reason.
    #[error("Opus: {0}")]
    Opus(&'static str),
}

/// Per-cluster encoder knobs. Only Opus has any today.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(default)]
pub struct CodecSettings {
    /// Opus target bitrate, sent as CBR. 24 kb/s mono is clear speech and fits a weak 4G
    /// uplink with room for retransmissions.
    pub opus_bitrate_bps: u32,
}

impl Default for CodecSettings {
    fn default() -> Self {
        CodecSettings {
            opus_bitrate_bps: 24_000,
        }
    }
}

impl CodecSettings {
    /// Allowed Opus bitrates: below 6 kb/s Opus is narrowband mush; above 128 kb/s mono is
    /// transparent and only wastes a metered link.
    pub const OPUS_BITRATE_BPS: RangeInclusive<u32> = 6_000..=128_000;

    /// Checks the settings, for validating configuration at the edge.
    pub fn validate(&self) -> Result<(), CodecError> {
        if Self::OPUS_BITRATE_BPS.contains(&self.opus_bitrate_bps) {
            Ok(())
        } else {
            Err(CodecError::OpusBitrateOutOfRange(self.opus_bitrate_bps))
        }
    }
}

/// Turns the payloads of one stream back into linear PCM at [`Codec::decoded_rate`].
/// Stateful codecs (G.722, Opus) must be fed one stream's payloads in order.
pub trait PayloadDecoder: Send {
    /// Decodes one RTP payload.
    fn decode(&mut self, payload: &[u8]) -> Result<Vec<i16>, CodecError>;
}

impl FromStr for Codec {
    type Err = UnknownCodec;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "pcmu" => Ok(Codec::Pcmu),
            "pcma" => Ok(Codec::Pcma),
            "l16" => Ok(Codec::L16),
            "g722" => Ok(Codec::G722),
            "opus" => Ok(Codec::Opus),
            other => Err(UnknownCodec(other.to_string())),
        }
    }
}

impl fmt::Display for Codec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Delay of the G.722 transmit and receive QMF pair at 16 kHz (the ADPCM adds none), appended
/// as silence so the end of a clip is not cut off.
const G722_DELAY_SAMPLES: usize = 22;

/// How many frames of Opus silence [`Codec::silence`] encodes before it repeats the last
/// packet: 1 s at 20 ms, ample for the encoder's energy history and mode to settle.
const SILENCE_SETTLE_FRAMES: usize = 50;

impl Codec {
    /// Every codec, in payload-type order of the contract.
    pub const ALL: [Codec; 5] = [
        Codec::Pcmu,
        Codec::Pcma,
        Codec::L16,
        Codec::G722,
        Codec::Opus,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Codec::Pcmu => "pcmu",
            Codec::Pcma => "pcma",
            Codec::L16 => "l16",
            Codec::G722 => "g722",
            Codec::Opus => "opus",
        }
    }

    /// RTP payload type: RFC 3551 table 4 for the static ones, 96 (the first dynamic type)
    /// for Opus.
    pub fn payload_type(self) -> u8 {
        match self {
            Codec::Pcmu => 0,
            Codec::Pcma => 8,
            Codec::G722 => 9,
            Codec::L16 => 11,
            Codec::Opus => 96,
        }
    }

    /// Encoding name as written in an SDP `a=rtpmap` line (RFC 7587 spells Opus in lower case).
    pub fn encoding_name(self) -> &'static str {
        match self {
            Codec::Pcmu => "PCMU",
            Codec::Pcma => "PCMA",
            Codec::L16 => "L16",
            Codec::G722 => "G722",
            Codec::Opus => "opus",
        }
    }

    /// Rate the audio must be resampled to before [`Codec::encode`].
    pub fn sample_rate(self) -> u32 {
        match self {
            Codec::Pcmu | Codec::Pcma => 8000,
            Codec::L16 => 44_100,
            Codec::G722 => 16_000,
            Codec::Opus => opus::RATE,
        }
    }

    /// RTP timestamp clock rate. G.722 keeps 8000 although it samples at 16 kHz, an error in
    /// RFC 1890 that RFC 3551 §4.5.2 keeps for compatibility.
    pub fn clock_rate(self) -> u32 {
        match self {
            Codec::Pcmu | Codec::Pcma | Codec::G722 => 8000,
            Codec::L16 => 44_100,
            Codec::Opus => opus::RATE,
        }
    }

    /// Rate of the PCM a [`PayloadDecoder`] returns: the codec's own sample rate.
    pub fn decoded_rate(self) -> u32 {
        self.sample_rate()
    }

    /// Packet times this codec can frame. Opus frames are 2.5, 5, 10, 20, 40 or 60 ms
    /// (RFC 6716 §2.1.4); we keep to multiples of 10 ms, whole samples at 44.1 kHz.
    pub fn supported_ptimes(self) -> &'static [u32] {
        match self {
            Codec::Opus => &[10, 20, 40, 60],
            _ => &[10, 20, 30, 40, 50, 60],
        }
    }

    /// Whether clusters on this codec can use `ptime_ms`.
    pub fn supports_ptime(self, ptime_ms: u32) -> bool {
        self.supported_ptimes().contains(&ptime_ms)
    }

    /// Samples of audio (at [`Codec::sample_rate`]) in one frame of `ptime_ms`.
    pub fn samples_per_frame(self, ptime_ms: u32) -> usize {
        let n = u64::from(self.sample_rate()) * u64::from(ptime_ms) / 1000;
        usize::try_from(n).unwrap_or(usize::MAX)
    }

    /// RTP timestamp advance per frame of `ptime_ms`: 160 per 20 ms for G.722 (not 320),
    /// 960 per 20 ms for Opus.
    pub fn timestamp_step(self, ptime_ms: u32) -> u32 {
        let n = u64::from(self.clock_rate()) * u64::from(ptime_ms) / 1000;
        u32::try_from(n).unwrap_or(u32::MAX)
    }

    /// Encodes a whole clip — mono samples in [-1, 1] at [`Codec::sample_rate`] — into one
    /// payload per `ptime_ms`, the last padded with silence. Out-of-range samples saturate and
    /// NaN is silence.
    ///
    /// G.722 and Opus run one encoder across the clip, so each payload continues the last.
    /// Their algorithmic delay (1.4 ms and 6.5 ms) is flushed with appended silence, which
    /// can add one frame over the clip's duration; G.711 and L16 give exactly
    /// ⌈samples / samples_per_frame⌉ frames. An empty clip gives no frames.
    pub fn encode(
        self,
        samples: &[f32],
        ptime_ms: u32,
        settings: &CodecSettings,
    ) -> Result<Vec<Bytes>, CodecError> {
        self.check(ptime_ms, settings)?;
        if samples.is_empty() {
            return Ok(Vec::new());
        }
        let per_frame = self.samples_per_frame(ptime_ms);
        let tail = match self {
            Codec::G722 => G722_DELAY_SAMPLES,
            Codec::Opus => opus::LOOKAHEAD_SAMPLES,
            _ => 0,
        };
        let frames = (samples.len() + tail).div_ceil(per_frame);
        let padded = frames * per_frame;

        let pcm = || {
            samples
                .iter()
                .map(|&s| to_i16(s))
                .chain(std::iter::repeat(0))
                .take(padded)
        };
        let wire: Vec<u8> = match self {
            Codec::Pcmu => pcm().map(g711::ulaw_encode).collect(),
            Codec::Pcma => pcm().map(g711::alaw_encode).collect(),
            Codec::L16 => {
                let mut wire = Vec::with_capacity(padded * 2);
                l16::encode(&pcm().collect::<Vec<_>>(), &mut wire);
                wire
            }
            Codec::G722 => {
                let mut wire = Vec::with_capacity(padded / 2);
                g722::Encoder::new().encode(&pcm().collect::<Vec<_>>(), &mut wire);
                wire
            }
            Codec::Opus => return encode_opus(samples, frames, per_frame, settings),
        };
        Ok(split(Bytes::from(wire), frames))
    }

    /// `n` frames of encoded silence: the gaps between playlist items, keeping a stream's
    /// clock running. Stateless codecs repeat one frame. G.722 encodes all `n` frames: its
    /// idle ADPCM wanders in the last bit or two and never falls into a cycle (none within
    /// 250 s), so a repeated frame would drift the receiver's predictor, and at ~1000× real
    /// time encoding is cheap. Opus encodes up to 1 s of silence, by which time its packets
    /// are steady, then repeats the last one, so a long gap costs no more than a short one.
    pub fn silence(
        self,
        ptime_ms: u32,
        n: usize,
        settings: &CodecSettings,
    ) -> Result<Vec<Bytes>, CodecError> {
        self.check(ptime_ms, settings)?;
        let per_frame = self.samples_per_frame(ptime_ms);
        if self == Codec::G722 {
            let zeros = vec![0i16; per_frame];
            let mut encoder = g722::Encoder::new();
            let mut wire = Vec::with_capacity(n * per_frame / 2);
            for _ in 0..n {
                encoder.encode(&zeros, &mut wire);
            }
            return Ok(split(Bytes::from(wire), n));
        }
        let settle = match self {
            Codec::Opus => SILENCE_SETTLE_FRAMES,
            _ => 1,
        }
        .min(n);
        let mut frames = self.encode(&vec![0.0; per_frame * settle], ptime_ms, settings)?;
        // Opus's lookahead flush may have added a frame; silence has nothing to flush.
        frames.truncate(settle);
        let settled = frames.last().cloned().unwrap_or_default();
        frames.resize(n, settled);
        Ok(frames)
    }

    /// A decoder for one stream of this codec.
    pub fn decoder(self) -> Result<Box<dyn PayloadDecoder>, CodecError> {
        Ok(match self {
            Codec::Pcmu => Box::new(G711Decoder(g711::ulaw_decode)),
            Codec::Pcma => Box::new(G711Decoder(g711::alaw_decode)),
            Codec::L16 => Box::new(L16Decoder),
            Codec::G722 => Box::new(G722Decoder(g722::Decoder::new())),
            Codec::Opus => Box::new(opus::Decoder::new()?),
        })
    }

    /// An encoder for a live stream of this codec in `ptime_ms` frames: feed it mono samples at
    /// [`Codec::sample_rate`] as they come and it gives one payload per complete frame, each
    /// continuing the last. See [`StreamEncoder`].
    pub fn stream_encoder(
        self,
        ptime_ms: u32,
        settings: &CodecSettings,
    ) -> Result<StreamEncoder, CodecError> {
        StreamEncoder::new(self, ptime_ms, settings)
    }

    /// The SDP attribute lines for this codec, without the `a=` prefix and without line ends:
    /// `rtpmap`, `fmtp` where the codec has parameters, and `ptime`. For Opus,
    /// `maxaveragebitrate` is written only when `settings` is given, so an SDP rendered
    /// without knowing the cluster's bitrate never states a wrong one.
    pub fn sdp_attributes(self, ptime_ms: u32, settings: Option<&CodecSettings>) -> Vec<String> {
        let pt = self.payload_type();
        let mut lines = Vec::with_capacity(3);
        lines.push(match self {
            // RFC 7587 §7: always "/2", whatever is sent; sprop-stereo says it is mono.
            Codec::Opus => format!("rtpmap:{pt} opus/48000/2"),
            // The channel count is what makes raw PCM decodable; state it.
            Codec::L16 => format!("rtpmap:{pt} L16/{}/1", self.clock_rate()),
            _ => format!("rtpmap:{pt} {}/{}", self.encoding_name(), self.clock_rate()),
        });
        if self == Codec::Opus {
            // RFC 7587 §6.1: we send mono (sprop-stereo=0) and ask for nothing else; CBR and
            // no in-band FEC, as the encoder is set up.
            let mut fmtp = format!("fmtp:{pt} stereo=0; sprop-stereo=0; useinbandfec=0; cbr=1");
            if let Some(settings) = settings {
                fmtp.push_str(&format!(
                    "; maxaveragebitrate={}",
                    settings.opus_bitrate_bps
                ));
            }
            lines.push(fmtp);
        }
        lines.push(format!("ptime:{ptime_ms}"));
        lines
    }

    /// Decodes one payload back to linear samples with a fresh decoder; empty on any error.
    /// Right for G.711 and L16; G.722 and Opus lose their inter-packet state this way, so
    /// use [`Codec::decoder`] for a stream.
    pub fn decode_payload(self, payload: &[u8]) -> Vec<i16> {
        self.decoder()
            .and_then(|mut d| d.decode(payload))
            .unwrap_or_default()
    }

    fn check(self, ptime_ms: u32, settings: &CodecSettings) -> Result<(), CodecError> {
        if !self.supports_ptime(ptime_ms) {
            return Err(CodecError::UnsupportedPtime {
                codec: self,
                ptime_ms,
            });
        }
        if self == Codec::Opus {
            settings.validate()?;
        }
        Ok(())
    }
}

/// One Opus encoder across the clip, one packet per frame.
fn encode_opus(
    samples: &[f32],
    frames: usize,
    per_frame: usize,
    settings: &CodecSettings,
) -> Result<Vec<Bytes>, CodecError> {
    let mut encoder = opus::Encoder::new(settings.opus_bitrate_bps, per_frame)?;
    let mut frame = vec![0.0f32; per_frame];
    let mut out = Vec::with_capacity(frames);
    for k in 0..frames {
        let chunk = samples.get(k * per_frame..).unwrap_or_default();
        for (i, slot) in frame.iter_mut().enumerate() {
            *slot = chunk.get(i).map_or(0.0, |&s| sanitize(s));
        }
        out.push(encoder.encode_frame(&frame)?);
    }
    Ok(out)
}

/// Encodes a live stream into RTP payloads as its audio arrives: mono samples in [-1, 1] at
/// the codec's [`Codec::sample_rate`], in pieces of any size, one payload out per complete
/// frame of `ptime_ms`. A piece that does not complete a frame waits for the next.
///
/// The G.722 and Opus encoder state runs on from frame to frame, so the stream decodes as one
/// continuous signal, and the frames are byte for byte the ones [`Codec::encode`] gives for the
/// same audio as a clip, however it was cut into pieces. Samples are converted as
/// [`Codec::encode`] converts them: out-of-range samples saturate and NaN is silence.
///
/// The encoder adds no latency beyond waiting for a frame to fill: a frame is out the moment
/// its last sample is pushed. The codec's own delay (22 samples, 1.4 ms, for G.722; 312
/// samples, 6.5 ms, for Opus) is in the decoded audio, not in when packets leave.
pub struct StreamEncoder {
    codec: Codec,
    ptime_ms: u32,
    settings: CodecSettings,
    /// Samples of the frame being filled; its length is the frame's.
    frame: Vec<f32>,
    filled: usize,
    /// Samples pushed since the stream began, for `finish` to flush the codec delay as
    /// [`Codec::encode`] does.
    pushed: u64,
    /// Whole 16-bit frame, reused so that a frame costs one allocation: its payload.
    pcm: Vec<i16>,
    state: StreamState,
}

/// What a codec carries from one frame to the next. Boxed: the encoders are hundreds of
/// bytes, made once per stream.
enum StreamState {
    Stateless,
    G722(Box<g722::Encoder>),
    Opus(Box<opus::Encoder>),
}

impl StreamEncoder {
    fn new(codec: Codec, ptime_ms: u32, settings: &CodecSettings) -> Result<Self, CodecError> {
        codec.check(ptime_ms, settings)?;
        let per_frame = codec.samples_per_frame(ptime_ms);
        let state = StreamState::new(codec, per_frame, settings)?;
        Ok(StreamEncoder {
            codec,
            ptime_ms,
            settings: *settings,
            frame: vec![0.0; per_frame],
            filled: 0,
            pushed: 0,
            pcm: Vec::with_capacity(per_frame),
            state,
        })
    }

    pub fn codec(&self) -> Codec {
        self.codec
    }

    pub fn ptime_ms(&self) -> u32 {
        self.ptime_ms
    }

    /// Samples still waiting for their frame to fill.
    pub fn pending_samples(&self) -> usize {
        self.filled
    }

    /// Takes the next `samples` of the stream and appends a payload to `out` for every frame
    /// they complete.
    ///
    /// On an error (only Opus can fail) the frame being encoded is lost, `out` keeps the
    /// frames completed before it, and the Opus encoder starts afresh: its state after a
    /// failure cannot be trusted, and a glitch is better than a stream that stops.
    pub fn push(&mut self, mut samples: &[f32], out: &mut Vec<Bytes>) -> Result<(), CodecError> {
        while !samples.is_empty() {
            let n = (self.frame.len() - self.filled).min(samples.len());
            self.frame[self.filled..self.filled + n].copy_from_slice(&samples[..n]);
            self.filled += n;
            self.pushed += n as u64;
            samples = &samples[n..];
            if self.filled == self.frame.len() {
                self.filled = 0;
                out.push(self.encode_frame()?);
            }
        }
        Ok(())
    }

    /// Ends the stream as [`Codec::encode`] ends a clip: the last frame padded with silence,
    /// and for G.722 and Opus enough silence after it to flush the codec's delay, which can
    /// add a frame. The payloads of the whole stream are then exactly those of
    /// [`Codec::encode`] on its audio.
    pub fn finish(mut self, out: &mut Vec<Bytes>) -> Result<(), CodecError> {
        if self.pushed == 0 {
            return Ok(());
        }
        let per_frame = self.frame.len() as u64;
        let tail = match self.codec {
            Codec::G722 => G722_DELAY_SAMPLES,
            Codec::Opus => opus::LOOKAHEAD_SAMPLES,
            _ => 0,
        } as u64;
        let frames = (self.pushed + tail).div_ceil(per_frame);
        let done = self.pushed / per_frame;
        let silence = vec![0.0; self.frame.len()];
        for _ in done..frames {
            let missing = self.frame.len() - self.filled;
            self.push(&silence[..missing], out)?;
        }
        Ok(())
    }

    /// Encodes `self.frame`, which is full.
    fn encode_frame(&mut self) -> Result<Bytes, CodecError> {
        self.pcm.clear();
        if !matches!(self.state, StreamState::Opus(_)) {
            self.pcm.extend(self.frame.iter().map(|&s| to_i16(s)));
        }
        let wire: Vec<u8> = match &mut self.state {
            StreamState::Stateless => match self.codec {
                Codec::Pcmu => self.pcm.iter().map(|&s| g711::ulaw_encode(s)).collect(),
                Codec::Pcma => self.pcm.iter().map(|&s| g711::alaw_encode(s)).collect(),
                _ => {
                    let mut wire = Vec::with_capacity(self.pcm.len() * 2);
                    l16::encode(&self.pcm, &mut wire);
                    wire
                }
            },
            StreamState::G722(encoder) => {
                let mut wire = Vec::with_capacity(self.pcm.len() / 2);
                encoder.encode(&self.pcm, &mut wire);
                wire
            }
            StreamState::Opus(encoder) => {
                for s in &mut self.frame {
                    *s = sanitize(*s);
                }
                return match encoder.encode_frame(&self.frame) {
                    Ok(packet) => Ok(packet),
                    Err(e) => {
                        self.state =
                            StreamState::new(self.codec, self.frame.len(), &self.settings)?;
                        Err(e)
                    }
                };
            }
        };
        Ok(Bytes::from(wire))
    }
}

impl StreamState {
    fn new(codec: Codec, per_frame: usize, settings: &CodecSettings) -> Result<Self, CodecError> {
        Ok(match codec {
            Codec::Pcmu | Codec::Pcma | Codec::L16 => StreamState::Stateless,
            Codec::G722 => StreamState::G722(Box::default()),
            Codec::Opus => StreamState::Opus(Box::new(opus::Encoder::new(
                settings.opus_bitrate_bps,
                per_frame,
            )?)),
        })
    }
}

// By hand: the derived form would print the frame buffer, and the Opus encoder has no Debug.
impl fmt::Debug for StreamEncoder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("StreamEncoder")
            .field("codec", &self.codec)
            .field("ptime_ms", &self.ptime_ms)
            .field("pending_samples", &self.filled)
            .finish_non_exhaustive()
    }
}

/// Splits a stream of equal-sized payloads into `frames` views of one allocation.
fn split(wire: Bytes, frames: usize) -> Vec<Bytes> {
    let size = wire.len() / frames.max(1);
    (0..frames)
        .map(|k| wire.slice(k * size..(k + 1) * size))
        .collect()
}

/// Scales a float sample to 16-bit, saturating outside [-1, 1]; NaN becomes 0.
fn to_i16(sample: f32) -> i16 {
    (sample * 32767.0).round().clamp(-32768.0, 32767.0) as i16
}

/// A float sample the Opus encoder can take: within [-1, 1] and finite.
fn sanitize(sample: f32) -> f32 {
    if sample.is_nan() {
        0.0
    } else {
        sample.clamp(-1.0, 1.0)
    }
}

struct G711Decoder(fn(u8) -> i16);

impl PayloadDecoder for G711Decoder {
    fn decode(&mut self, payload: &[u8]) -> Result<Vec<i16>, CodecError> {
        Ok(payload.iter().map(|&b| (self.0)(b)).collect())
    }
}

struct L16Decoder;

impl PayloadDecoder for L16Decoder {
    fn decode(&mut self, payload: &[u8]) -> Result<Vec<i16>, CodecError> {
        l16::decode(payload).ok_or(CodecError::InvalidPayload {
            codec: Codec::L16,
            reason: "odd number of bytes",
        })
    }
}

struct G722Decoder(g722::Decoder);

impl PayloadDecoder for G722Decoder {
    fn decode(&mut self, payload: &[u8]) -> Result<Vec<i16>, CodecError> {
        let mut out = Vec::new();
        self.0.decode(payload, &mut out);
        Ok(out)
    }
}

impl PayloadDecoder for opus::Decoder {
    fn decode(&mut self, payload: &[u8]) -> Result<Vec<i16>, CodecError> {
        opus::Decoder::decode(self, payload)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const DEFAULT: CodecSettings = CodecSettings {
        opus_bitrate_bps: 24_000,
    };

    fn tone(codec: Codec, freq: f32, seconds: f32) -> Vec<f32> {
        let rate = codec.sample_rate() as f32;
        (0..(rate * seconds) as usize)
            .map(|i| 0.5 * (i as f32 * 2.0 * std::f32::consts::PI * freq / rate).sin())
            .collect()
    }

    fn decode_all(codec: Codec, frames: &[Bytes]) -> Vec<i16> {
        let mut decoder = codec.decoder().unwrap();
        frames
            .iter()
            .flat_map(|f| decoder.decode(f).unwrap())
            .collect()
    }

    /// Signal-to-noise ratio in dB of `decoded` against `reference`, at the lag (0..max_lag
    /// samples of codec delay) and gain that fit best, over the middle of the clip.
    fn best_snr_db(reference: &[f32], decoded: &[i16], max_lag: usize) -> (f64, usize) {
        let skip = reference.len() / 10;
        let len = reference.len() - 2 * skip - max_lag;
        (0..max_lag)
            .map(|lag| {
                let r = &reference[skip..skip + len];
                let d = &decoded[skip + lag..skip + lag + len];
                let rr: f64 = r.iter().map(|&x| f64::from(x) * f64::from(x)).sum();
                let rd: f64 = r
                    .iter()
                    .zip(d)
                    .map(|(&x, &y)| f64::from(x) * f64::from(y))
                    .sum();
                let gain = rd / rr;
                let noise: f64 = r
                    .iter()
                    .zip(d)
                    .map(|(&x, &y)| (f64::from(y) - gain * f64::from(x)).powi(2))
                    .sum();
                let signal = gain * gain * rr;
                (10.0 * (signal / noise.max(1e-9)).log10(), lag)
            })
            .fold((f64::NEG_INFINITY, 0), |a, b| if b.0 > a.0 { b } else { a })
    }

    #[test]
    fn codec_names_parse_and_print_the_same() {
        for codec in Codec::ALL {
            assert_eq!(codec.as_str().parse::<Codec>(), Ok(codec));
            assert_eq!(
                serde_json::to_string(&codec).unwrap(),
                format!("\"{}\"", codec.as_str())
            );
        }
        let err = "opus2".parse::<Codec>().unwrap_err().to_string();
        assert!(err.contains("pcmu, pcma, l16, g722, opus"), "{err}");
    }

    #[test]
    fn payload_types_and_clocks_follow_rfc_3551_and_7587() {
        let table: Vec<_> = Codec::ALL
            .iter()
            .map(|c| {
                (
                    c.payload_type(),
                    c.encoding_name(),
                    c.sample_rate(),
                    c.clock_rate(),
                )
            })
            .collect();
        assert_eq!(
            table,
            [
                (0, "PCMU", 8000, 8000),
                (8, "PCMA", 8000, 8000),
                (11, "L16", 44_100, 44_100),
                (9, "G722", 16_000, 8000),
                (96, "opus", 48_000, 48_000),
            ]
        );
        for codec in Codec::ALL {
            assert_eq!(codec.decoded_rate(), codec.sample_rate());
        }
    }

    #[test]
    fn each_codec_frames_and_stamps_every_ptime() {
        // (codec, ptime) -> (samples per frame, timestamp step, payload bytes)
        let cases = [
            (Codec::Pcmu, 20, 160, 160, 160),
            (Codec::Pcma, 40, 320, 320, 320),
            (Codec::Pcmu, 60, 480, 480, 480),
            (Codec::L16, 10, 441, 441, 882),
            (Codec::L16, 20, 882, 882, 1764),
            (Codec::L16, 60, 2646, 2646, 5292),
            (Codec::G722, 20, 320, 160, 160),
            (Codec::G722, 40, 640, 320, 320),
            (Codec::G722, 60, 960, 480, 480),
            (Codec::Opus, 20, 960, 960, 60),
            (Codec::Opus, 40, 1920, 1920, 120),
            (Codec::Opus, 60, 2880, 2880, 180),
        ];
        for (codec, ptime, samples, step, bytes) in cases {
            assert_eq!(codec.samples_per_frame(ptime), samples, "{codec} {ptime}");
            assert_eq!(codec.timestamp_step(ptime), step, "{codec} {ptime}");
            let frames = codec
                .encode(&tone(codec, 1000.0, 0.5), ptime, &DEFAULT)
                .unwrap();
            // A 40 or 60 ms Opus packet is two or three 20 ms frames behind one framing
            // header (RFC 6716 §3.2.5), which may cost a byte or two over bitrate × ptime.
            let slack = if codec == Codec::Opus { 2 } else { 0 };
            assert!(
                frames
                    .iter()
                    .all(|f| (bytes..=bytes + slack).contains(&f.len())),
                "{codec} {ptime}: {:?}",
                frames.iter().map(Bytes::len).collect::<Vec<_>>()
            );
        }
    }

    #[test]
    fn the_last_frame_is_padded_with_silence() {
        let frames = Codec::Pcmu.encode(&vec![0.5; 400], 20, &DEFAULT).unwrap();
        assert_eq!(frames.len(), 3);
        assert!(frames.iter().all(|f| f.len() == 160));
        assert_eq!(frames[2][80..], [0xFF; 80]);
        assert_eq!(
            Codec::Pcma.silence(20, 1, &DEFAULT).unwrap()[0],
            Bytes::from(vec![0xD5; 160])
        );
        assert_eq!(
            Codec::L16.silence(20, 1, &DEFAULT).unwrap()[0],
            Bytes::from(vec![0; 1764])
        );
    }

    #[test]
    fn stateless_codecs_give_one_frame_per_ptime_and_stateful_ones_flush_their_delay() {
        // 1 s exactly: 50 frames, plus one for G.722 and Opus whose delay spills over.
        for codec in Codec::ALL {
            let frames = codec
                .encode(&tone(codec, 1000.0, 1.0), 20, &DEFAULT)
                .unwrap();
            let expected = if matches!(codec, Codec::G722 | Codec::Opus) {
                51
            } else {
                50
            };
            assert_eq!(frames.len(), expected, "{codec}");
            assert_eq!(codec.encode(&[], 20, &DEFAULT), Ok(vec![]));
        }
    }

    #[test]
    fn encoding_then_decoding_keeps_a_1khz_sine() {
        // Minimum SNR per codec (dB) and the largest codec delay to search, in samples.
        for (codec, min_snr, max_lag) in [
            (Codec::Pcmu, 30.0, 1),
            (Codec::Pcma, 30.0, 1),
            (Codec::L16, 80.0, 1),
            (Codec::G722, 40.0, 64),
            (Codec::Opus, 20.0, 400),
        ] {
            for ptime in [20, 40, 60] {
                let input = tone(codec, 1000.0, 1.0);
                let frames = codec.encode(&input, ptime, &DEFAULT).unwrap();
                let decoded = decode_all(codec, &frames);
                assert_eq!(decoded.len(), frames.len() * codec.samples_per_frame(ptime));
                let reference: Vec<f32> = input.iter().map(|s| s * 32767.0).collect();
                let (snr, lag) = best_snr_db(&reference, &decoded, max_lag);
                assert!(
                    snr > min_snr,
                    "{codec} {ptime} ms: SNR {snr:.1} dB at lag {lag}"
                );
                match codec {
                    Codec::Pcmu | Codec::Pcma | Codec::L16 => assert_eq!(lag, 0),
                    Codec::G722 => assert_eq!(lag, G722_DELAY_SAMPLES),
                    // A pure tone pins the lag only modulo its 48-sample period, and a
                    // perceptual codec may shift the phase by a few samples.
                    Codec::Opus => {
                        let off = (lag + 48 - opus::LOOKAHEAD_SAMPLES % 48) % 48;
                        assert!(off <= 4 || off >= 44, "lag {lag}");
                    }
                }
            }
        }
    }

    #[test]
    fn silence_decodes_to_near_zero_for_every_codec() {
        for codec in Codec::ALL {
            for ptime in [20, 60] {
                let frames = codec.silence(ptime, 120, &DEFAULT).unwrap();
                assert_eq!(frames.len(), 120);
                let decoded = decode_all(codec, &frames);
                let loudest = decoded.iter().map(|s| s.unsigned_abs()).max().unwrap();
                assert!(loudest <= 8, "{codec} {ptime}: {loudest}");
            }
            assert_eq!(codec.silence(20, 0, &DEFAULT), Ok(vec![]));
        }
    }

    #[test]
    fn g722_at_64_kbits_is_160_bytes_per_20_ms() {
        let frames = Codec::G722
            .encode(&tone(Codec::G722, 1000.0, 0.2), 20, &DEFAULT)
            .unwrap();
        assert!(frames.iter().all(|f| f.len() == 160));
        assert_eq!(frames.len(), 11);
    }

    #[test]
    fn opus_packets_at_24_kbits_are_60_bytes_per_20_ms() {
        let speechy: Vec<f32> = (0..48_000)
            .map(|i| {
                let t = i as f32 / 48_000.0;
                let envelope = (t * 2.0 * std::f32::consts::PI * 3.0).sin().abs();
                envelope
                    * (0.3 * (t * 2.0 * std::f32::consts::PI * 220.0).sin()
                        + 0.2 * (t * 2.0 * std::f32::consts::PI * 1250.0).sin()
                        + 0.1 * (t * 2.0 * std::f32::consts::PI * 3100.0).sin())
            })
            .collect();
        let frames = Codec::Opus.encode(&speechy, 20, &DEFAULT).unwrap();
        assert!(
            frames.iter().all(|f| (50..=60).contains(&f.len())),
            "{:?}",
            frames.iter().map(Bytes::len).collect::<Vec<_>>()
        );
        let fast = CodecSettings {
            opus_bitrate_bps: 64_000,
        };
        let frames = Codec::Opus.encode(&speechy, 20, &fast).unwrap();
        assert!(frames.iter().all(|f| (140..=160).contains(&f.len())));
    }

    #[test]
    fn opus_bitrates_outside_6_to_128_kbits_are_refused() {
        let tone = tone(Codec::Opus, 1000.0, 0.1);
        for bps in [0, 5_999, 128_001, u32::MAX] {
            let settings = CodecSettings {
                opus_bitrate_bps: bps,
            };
            assert_eq!(
                Codec::Opus.encode(&tone, 20, &settings),
                Err(CodecError::OpusBitrateOutOfRange(bps))
            );
            assert!(settings.validate().is_err());
            // Only Opus reads the bitrate.
            assert!(Codec::G722.encode(&tone, 20, &settings).is_ok());
        }
        for bps in [6_000, 128_000] {
            let settings = CodecSettings {
                opus_bitrate_bps: bps,
            };
            assert!(Codec::Opus.encode(&tone, 60, &settings).is_ok());
        }
        assert_eq!(CodecSettings::default(), DEFAULT);
    }

    #[test]
    fn packet_times_a_codec_cannot_frame_are_refused() {
        let err = Codec::Opus.encode(&[0.0; 100], 30, &DEFAULT).unwrap_err();
        assert_eq!(
            err,
            CodecError::UnsupportedPtime {
                codec: Codec::Opus,
                ptime_ms: 30
            }
        );
        assert!(err.to_string().contains("[10, 20, 40, 60]"), "{err}");
        for codec in Codec::ALL {
            for ptime in [0, 5, 25, 1000, u32::MAX] {
                assert!(codec.encode(&[0.0; 100], ptime, &DEFAULT).is_err());
                assert!(codec.silence(ptime, 3, &DEFAULT).is_err());
            }
            assert!(
                codec.supports_ptime(20) && codec.supports_ptime(40) && codec.supports_ptime(60)
            );
            // Pure arithmetic never overflows, whatever the ptime.
            let _ = (
                codec.samples_per_frame(u32::MAX),
                codec.timestamp_step(u32::MAX),
            );
        }
    }

    #[test]
    fn samples_outside_the_unit_range_saturate_and_nan_is_silence() {
        let wild = [f32::NAN, f32::INFINITY, f32::NEG_INFINITY, 3.0, -3.0, 0.0];
        for codec in Codec::ALL {
            let input: Vec<f32> = wild.iter().copied().cycle().take(4800).collect();
            let frames = codec.encode(&input, 20, &DEFAULT).unwrap();
            assert!(!frames.is_empty());
            decode_all(codec, &frames);
        }
        let frames = Codec::L16.encode(&wild, 10, &DEFAULT).unwrap();
        assert_eq!(
            &frames[0][..12],
            &[0, 0, 0x7F, 0xFF, 0x80, 0x00, 0x7F, 0xFF, 0x80, 0x00, 0, 0]
        );
    }

    #[test]
    fn l16_payloads_are_big_endian_and_odd_lengths_are_refused() {
        let frames = Codec::L16.encode(&[0.5, -0.5], 10, &DEFAULT).unwrap();
        assert_eq!(&frames[0][..4], &[0x40, 0x00, 0xC0, 0x00]);
        assert_eq!(
            Codec::L16.decode_payload(&[0x40, 0x00, 0xC0, 0x01]),
            [16384, -16383]
        );
        let mut decoder = Codec::L16.decoder().unwrap();
        assert!(matches!(
            decoder.decode(&[1, 2, 3]),
            Err(CodecError::InvalidPayload {
                codec: Codec::L16,
                ..
            })
        ));
    }

    #[test]
    fn decoders_survive_garbage_payloads() {
        let mut seed = 0x2545_F491u32;
        let mut garbage = |len: usize| -> Vec<u8> {
            (0..len)
                .map(|_| {
                    seed ^= seed << 13;
                    seed ^= seed >> 17;
                    seed ^= seed << 5;
                    seed as u8
                })
                .collect()
        };
        for codec in Codec::ALL {
            let mut decoder = codec.decoder().unwrap();
            for len in [0, 1, 2, 3, 7, 60, 61, 160, 1275, 1500] {
                for _ in 0..20 {
                    // Any answer will do, as long as there is one.
                    let _ = decoder.decode(&garbage(len));
                }
            }
        }
        assert!(Codec::Opus.decoder().unwrap().decode(&[]).is_err());
    }

    #[test]
    fn decoding_one_payload_agrees_with_a_stream_decoder() {
        let input = tone(Codec::Pcma, 1000.0, 0.1);
        let frame = &Codec::Pcma.encode(&input, 20, &DEFAULT).unwrap()[0];
        assert_eq!(
            Codec::Pcma.decode_payload(frame),
            Codec::Pcma.decoder().unwrap().decode(frame).unwrap()
        );
        for codec in Codec::ALL {
            let silence = &codec.silence(20, 1, &DEFAULT).unwrap()[0];
            assert_eq!(
                codec.decode_payload(silence).len(),
                codec.samples_per_frame(20)
            );
        }
    }

    #[test]
    fn sdp_attributes_name_each_codec_as_receivers_expect() {
        let lines = |c: Codec| c.sdp_attributes(20, None);
        assert_eq!(lines(Codec::Pcmu), ["rtpmap:0 PCMU/8000", "ptime:20"]);
        assert_eq!(lines(Codec::Pcma), ["rtpmap:8 PCMA/8000", "ptime:20"]);
        assert_eq!(lines(Codec::L16), ["rtpmap:11 L16/44100/1", "ptime:20"]);
        assert_eq!(lines(Codec::G722), ["rtpmap:9 G722/8000", "ptime:20"]);
        assert_eq!(
            lines(Codec::Opus),
            [
                "rtpmap:96 opus/48000/2",
                "fmtp:96 stereo=0; sprop-stereo=0; useinbandfec=0; cbr=1",
                "ptime:20"
            ]
        );
        assert_eq!(
            Codec::Opus.sdp_attributes(60, Some(&DEFAULT))[1..],
            [
                "fmtp:96 stereo=0; sprop-stereo=0; useinbandfec=0; cbr=1; maxaveragebitrate=24000",
                "ptime:60"
            ]
        );
    }

    /// A 2 s clip with something for every codec to work on: a chirp over a tone, with a
    /// syllable-rate envelope and a few samples out of range.
    fn speechy_clip(codec: Codec) -> Vec<f32> {
        let rate = codec.sample_rate() as f32;
        (0..(2.0 * rate) as usize)
            .map(|i| {
                let t = i as f32 / rate;
                let envelope = 0.2 + (t * 3.0 * std::f32::consts::TAU).sin().abs();
                let chirp = (std::f32::consts::TAU * (200.0 + 900.0 * t) * t).sin();
                let tone = (std::f32::consts::TAU * 1250.0 * t).sin();
                envelope * (0.5 * chirp + 0.3 * tone) * if i % 4000 == 7 { 3.0 } else { 1.0 }
            })
            .collect()
    }

    /// Piece sizes from 1 up, mostly under a frame, some many frames long, from a fixed seed.
    fn random_pieces(seed: u32) -> impl FnMut() -> usize {
        let mut state = seed.max(1);
        move || {
            state ^= state << 13;
            state ^= state >> 17;
            state ^= state << 5;
            let limit = [1, 7, 333, 1_000, 20_000][state as usize % 5];
            (state as usize / 5) % limit + 1
        }
    }

    fn stream_encode(
        codec: Codec,
        input: &[f32],
        ptime: u32,
        mut piece: impl FnMut() -> usize,
    ) -> (Vec<Bytes>, Vec<Bytes>) {
        let mut encoder = codec.stream_encoder(ptime, &DEFAULT).unwrap();
        let mut frames = Vec::new();
        let mut rest = input;
        while !rest.is_empty() {
            let n = piece().min(rest.len());
            encoder.push(&rest[..n], &mut frames).unwrap();
            rest = &rest[n..];
        }
        let complete = frames.clone();
        encoder.finish(&mut frames).unwrap();
        (complete, frames)
    }

    #[test]
    fn a_stream_cut_into_random_pieces_gives_the_frames_of_the_whole_clip() {
        for codec in Codec::ALL {
            let input = speechy_clip(codec);
            for ptime in [10, 20, 60] {
                let clip = codec.encode(&input, ptime, &DEFAULT).unwrap();
                for seed in [1, 99] {
                    let (complete, finished) =
                        stream_encode(codec, &input, ptime, random_pieces(seed));
                    // Every complete frame as soon as it is complete; only the padded last
                    // frame and the delay flush wait for `finish`.
                    assert_eq!(
                        complete.len(),
                        input.len() / codec.samples_per_frame(ptime),
                        "{codec} {ptime}"
                    );
                    assert!(
                        complete == clip[..complete.len()],
                        "{codec} {ptime} seed {seed}"
                    );
                    assert!(finished == clip, "{codec} {ptime} seed {seed}, finished");
                }
            }
        }
    }

    #[test]
    fn a_stream_encoder_keeps_a_partial_frame_for_the_next_push() {
        for codec in Codec::ALL {
            let per_frame = codec.samples_per_frame(20);
            let input = tone(codec, 1000.0, 0.1);
            let mut encoder = codec.stream_encoder(20, &DEFAULT).unwrap();
            assert_eq!((encoder.codec(), encoder.ptime_ms()), (codec, 20));
            let mut frames = Vec::new();
            encoder.push(&input[..per_frame - 1], &mut frames).unwrap();
            assert!(frames.is_empty(), "{codec}");
            assert_eq!(encoder.pending_samples(), per_frame - 1);
            encoder
                .push(&input[per_frame - 1..per_frame + 1], &mut frames)
                .unwrap();
            assert_eq!(frames.len(), 1, "{codec}");
            assert_eq!(encoder.pending_samples(), 1);
            assert_eq!(frames[0], codec.encode(&input, 20, &DEFAULT).unwrap()[0]);
        }
    }

    #[test]
    fn a_stream_encoder_converts_samples_as_encode_does() {
        let wild = [
            f32::NAN,
            f32::INFINITY,
            f32::NEG_INFINITY,
            3.0,
            -3.0,
            0.0,
            0.25,
        ];
        for codec in Codec::ALL {
            let input: Vec<f32> = wild.iter().copied().cycle().take(9_600).collect();
            let (_, finished) = stream_encode(codec, &input, 20, random_pieces(5));
            assert!(
                finished == codec.encode(&input, 20, &DEFAULT).unwrap(),
                "{codec}"
            );
        }
    }

    #[test]
    fn an_empty_stream_finishes_with_no_frames() {
        for codec in Codec::ALL {
            let mut frames = Vec::new();
            let encoder = codec.stream_encoder(20, &DEFAULT).unwrap();
            encoder.finish(&mut frames).unwrap();
            assert!(frames.is_empty(), "{codec}");
        }
    }

    #[test]
    fn a_stream_encoder_refuses_what_encode_refuses() {
        assert_eq!(
            Codec::Opus.stream_encoder(30, &DEFAULT).err(),
            Some(CodecError::UnsupportedPtime {
                codec: Codec::Opus,
                ptime_ms: 30
            })
        );
        let too_slow = CodecSettings {
            opus_bitrate_bps: 5_999,
        };
        assert_eq!(
            Codec::Opus.stream_encoder(20, &too_slow).err(),
            Some(CodecError::OpusBitrateOutOfRange(5_999))
        );
        for codec in Codec::ALL {
            assert!(codec.stream_encoder(0, &DEFAULT).is_err());
            assert!(codec.stream_encoder(u32::MAX, &DEFAULT).is_err());
        }
    }

    #[test]
    fn stream_encoders_can_move_to_another_thread() {
        fn is_send<T: Send>(_: &T) {}
        for codec in Codec::ALL {
            is_send(&codec.stream_encoder(20, &DEFAULT).unwrap());
        }
    }

    #[test]
    fn decoders_can_move_to_another_thread() {
        fn is_send<T: Send>(_: &T) {}
        for codec in Codec::ALL {
            is_send(&codec.decoder().unwrap());
        }
    }
}
