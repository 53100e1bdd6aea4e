//! Decoding of uploaded audio bytes (any container and codec symphonia knows) into mono `f32`
//! samples at the original rate, and classification of every way an upload can be unusable.
//! Must not read files, the clock or an async runtime: bytes in, samples or a `DecodeError` out.

use std::io::{Cursor, ErrorKind};

use symphonia::core::codecs::audio::CODEC_ID_NULL_AUDIO;
use symphonia::core::codecs::audio::{AudioCodecParameters, AudioDecoderOptions};
use symphonia::core::errors::Error as SymphoniaError;
use symphonia::core::formats::probe::Hint;
use symphonia::core::formats::{FormatOptions, FormatReader, TrackType};
use symphonia::core::io::MediaSourceStream;
use symphonia::core::meta::MetadataOptions;

use super::{DecodedAudio, frames_to_ms};

/// Sample rates outside this range are rejected: below 8 kHz speech is unintelligible and no
/// loudspeaker path we drive needs more than 96 kHz, so anything else is a broken or exotic file.
const SUPPORTED_RATES: std::ops::RangeInclusive<u32> = 8_000..=96_000;

/// How much shorter than its declared length a stream may decode before it counts as truncated.
/// Declared lengths (LAME/Xing headers, container durations) are estimates for some encoders, so
/// an exact match cannot be demanded; 2% is far below what a cut-off upload loses.
const TRUNCATION_RATIO_PERCENT: u64 = 98;

/// Packets of slack, on top of the ratio, when comparing decoded and declared lengths: encoder
/// delay and padding are trimmed per packet, so the last packet or two may legitimately differ.
const TRUNCATION_SLACK_PACKETS: u64 = 2;

/// A damaged packet is skipped, but once more than 1 in this many fail the file is too damaged
/// to broadcast: the gaps would be audible.
const MAX_FAILED_PACKETS_ONE_IN: u64 = 20;

/// The message symphonia's probe gives when no demuxer claims the bytes. Matched exactly because
/// symphonia has no typed error for it; a unit test pins it so an upgrade that rewords it fails
/// loudly instead of turning "not audio" into "unsupported codec".
const NO_FORMAT_READER: &str = "core (probe): no suitable format reader found";

/// Limits applied while decoding an upload.
#[derive(Debug, Clone, Copy)]
pub struct DecodeLimits {
    /// Longest accepted audio, in seconds; decoding stops as soon as it is exceeded.
    pub max_duration_s: u64,
}

impl Default for DecodeLimits {
    /// Two hours: longer than any announcement, short enough to bound memory (mono f32 is
    /// 1.3 GB at 44.1 kHz, 2.8 GB at the 96 kHz worst case).
    fn default() -> Self {
        Self {
            max_duration_s: 7200,
        }
    }
}

/// Why an upload could not be turned into audio. Messages are written for the person who
/// uploaded the file.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    /// The upload has zero bytes.
    #[error("the file is empty")]
    Empty,
    /// No demuxer recognises the bytes: text, an image, random data.
    #[error("the file is not in a recognised audio format")]
    Unrecognised,
    /// The container was recognised but holds no audio track.
    #[error("the file contains no audio track")]
    NoAudioTrack,
    /// The audio track uses a codec (or codec feature) there is no decoder for.
    #[error("the audio codec is not supported ({0})")]
    UnsupportedCodec(String),
    /// The container was recognised but holds no audio samples, e.g. a WAV header alone.
    #[error("the file contains no audio samples")]
    NoSamples,
    /// The stream ends before the length its header declares: an interrupted upload or copy.
    #[error("the file ends early: {decoded_ms} ms decoded of {expected_ms} ms declared")]
    Truncated {
        /// Audio actually decoded, in milliseconds.
        decoded_ms: u64,
        /// Length declared by the file's header, in milliseconds.
        expected_ms: u64,
    },
    /// The container or codec data is damaged beyond skipping a bad packet.
    #[error("the audio data is corrupt ({0})")]
    Corrupt(String),
    /// The audio is longer than `DecodeLimits::max_duration_s`.
    #[error("the audio is longer than the limit of {max_s} s")]
    TooLong {
        /// The limit that was exceeded, in seconds.
        max_s: u64,
    },
    /// The sample rate is outside 8000..=96000 Hz.
    #[error("the sample rate of {0} Hz is not supported (8000 to 96000 Hz)")]
    UnsupportedRate(u32),
}

/// Decodes an upload into mono samples at its original rate.
///
/// `extension_hint` is the uploaded file's extension (with or without the dot), passed to
/// symphonia's probe as a hint; the bytes themselves decide the format.
pub fn decode(
    data: &[u8],
    extension_hint: Option<&str>,
    limits: DecodeLimits,
) -> Result<DecodedAudio, DecodeError> {
    if data.is_empty() {
        return Err(DecodeError::Empty);
    }
    let mut format = open(data, extension_hint)?;
    let format_name = container_name(format.format_info().short_name);

    let track = format
        .default_track(TrackType::Audio)
        .ok_or(DecodeError::NoAudioTrack)?;
    let track_id = track.id;
    let declared_frames = track.num_frames;
    // symphonia 0.6 parses MP4 edit lists but does not apply them, so AAC encoder priming and
    // padding (~50 ms) would be played and counted. Apply the edit ourselves, unless symphonia
    // already reports a delay or padding for the track (a newer version trimming on its own).
    let edit = if format_name == "mp4" && track.delay.is_none() && track.padding.is_none() {
        mp4::audio_edit(data, track_id)
    } else {
        None
    };
    let params: AudioCodecParameters = track
        .codec_params
        .as_ref()
        .and_then(|p| p.audio())
        .ok_or(DecodeError::NoAudioTrack)?
        .clone();
    if params.codec == CODEC_ID_NULL_AUDIO {
        return Err(DecodeError::UnsupportedCodec("unknown codec".into()));
    }

    // Reject on the header alone when it already tells us the answer, before decoding anything.
    if let Some(rate) = params.sample_rate {
        check_rate(rate)?;
        if let Some(frames) = declared_frames
            && frames > max_frames(limits, rate)
        {
            return Err(DecodeError::TooLong {
                max_s: limits.max_duration_s,
            });
        }
    }

    let options = AudioDecoderOptions::default().gapless(true);
    let mut decoder = symphonia::default::get_codecs()
        .make_audio_decoder(&params, &options)
        .map_err(|e| match e {
            SymphoniaError::Unsupported(what) => DecodeError::UnsupportedCodec(what.into()),
            other => DecodeError::Corrupt(other.to_string()),
        })?;
    let codec_name = decoder.codec_info().short_name.to_ascii_lowercase();

    let mut mix = Mixdown::new();
    let end = loop {
        let packet = match format.next_packet() {
            Ok(Some(packet)) => packet,
            Ok(None) => break StreamEnd::Complete,
            Err(SymphoniaError::IoError(e)) if e.kind() == ErrorKind::UnexpectedEof => {
                break StreamEnd::CutMidPacket;
            }
            // A chained Ogg stream starts a new logical stream here; an announcement is one
            // stream, so what follows is not ours to play.
            Err(SymphoniaError::ResetRequired) => break StreamEnd::Complete,
            Err(e) => break StreamEnd::DemuxFailed(e.to_string()),
        };
        if packet.track_id != track_id {
            continue;
        }
        mix.note_timing(packet.pts.get(), packet.dur.get());
        match decoder.decode(&packet) {
            Ok(buf) => {
                let rate = buf.spec().rate();
                let channels = buf.spec().channels().count();
                if !mix.accepts(rate, channels) {
                    // A frame whose format disagrees with the stream is junk that happened to
                    // parse (common when a demuxer resyncs inside garbage).
                    mix.packet_failed(None);
                    continue;
                }
                check_rate(rate)?;
                buf.copy_to_vec_interleaved(&mut mix.scratch);
                mix.push_interleaved(channels);
                if mix.mono.len() as u64 > max_frames(limits, rate) {
                    return Err(DecodeError::TooLong {
                        max_s: limits.max_duration_s,
                    });
                }
            }
            // Symphonia documents both as "this packet is bad, the next may be fine".
            Err(SymphoniaError::DecodeError(_) | SymphoniaError::IoError(_)) => {
                mix.packet_failed(None);
            }
            // Damaged bits often read as a syntax element the decoder lacks, so this is only
            // "unsupported codec" if no packet at all decodes; see `Mixdown::finish`.
            Err(SymphoniaError::Unsupported(what)) => mix.packet_failed(Some(what)),
            Err(e) => return Err(DecodeError::Corrupt(e.to_string())),
        }
    };

    mix.finish(end, declared_frames)?;
    let (Some(sample_rate), Some(channels)) = (mix.rate, mix.channels) else {
        return Err(DecodeError::NoSamples);
    };
    if let Some(edit) = edit {
        edit.apply(&mut mix.mono, sample_rate);
        if mix.mono.is_empty() {
            return Err(DecodeError::NoSamples);
        }
    }
    let channels = u16::try_from(channels)
        .map_err(|_| DecodeError::Corrupt(format!("{channels} channels")))?;
    Ok(DecodedAudio {
        format: format_name,
        codec: codec_name,
        sample_rate,
        channels,
        mono: mix.mono,
    })
}

/// Probes the bytes for a container and opens a reader over them.
fn open<'a>(
    data: &'a [u8],
    extension_hint: Option<&str>,
) -> Result<Box<dyn FormatReader + 'a>, DecodeError> {
    let mut hint = Hint::new();
    if let Some(ext) = extension_hint {
        hint.with_extension(&ext.trim_start_matches('.').to_ascii_lowercase());
    }
    let source = MediaSourceStream::new(Box::new(Cursor::new(data)), Default::default());
    symphonia::default::get_probe()
        .probe(
            &hint,
            source,
            FormatOptions::default(),
            MetadataOptions::default(),
        )
        .map_err(|e| match e {
            SymphoniaError::Unsupported(NO_FORMAT_READER) => DecodeError::Unrecognised,
            // Readers also report missing structure as "unsupported" (an MP4 cut before its
            // moov atom, a WAV without a data chunk): that is damage, not a codec we lack.
            SymphoniaError::Unsupported(what) if what.contains("missing") => {
                DecodeError::Corrupt(what.into())
            }
            SymphoniaError::Unsupported(what) => DecodeError::UnsupportedCodec(what.into()),
            // A recognised header that stops short: there is no audio behind it.
            SymphoniaError::IoError(e) if e.kind() == ErrorKind::UnexpectedEof => {
                DecodeError::NoSamples
            }
            other => DecodeError::Corrupt(other.to_string()),
        })
}

/// Maps symphonia's reader names to the names users and ffprobe know.
fn container_name(short_name: &str) -> String {
    match short_name {
        "wave" => "wav".into(),
        "isomp4" => "mp4".into(),
        "matroska" => "mkv".into(),
        other => other.to_ascii_lowercase(),
    }
}

fn check_rate(rate: u32) -> Result<(), DecodeError> {
    if SUPPORTED_RATES.contains(&rate) {
        Ok(())
    } else {
        Err(DecodeError::UnsupportedRate(rate))
    }
}

fn max_frames(limits: DecodeLimits, rate: u32) -> u64 {
    limits.max_duration_s.saturating_mul(u64::from(rate))
}

/// How the demuxer stopped handing out packets.
enum StreamEnd {
    /// The container said there is nothing more.
    Complete,
    /// The bytes ran out in the middle of a packet.
    CutMidPacket,
    /// The container became unreadable; the message says where.
    DemuxFailed(String),
}

/// Accumulates decoded packets as one mono signal and keeps the packet statistics that decide,
/// at the end, whether the result is usable.
struct Mixdown {
    mono: Vec<f32>,
    /// Interleaved copy of the packet being mixed; reused so decoding allocates once per size.
    scratch: Vec<f32>,
    /// Rate and channel count of the first decoded packet. The decoder, not the container
    /// header, is the authority: the two can disagree (implicit AAC signalling, for one).
    rate: Option<u32>,
    channels: Option<usize>,
    decoded_packets: u64,
    failed_packets: u64,
    /// Failures since the last good packet. A cut file typically ends in one bad packet, so
    /// only failures with good audio after them show damage inside the stream.
    trailing_failures: u64,
    /// Packets the demuxer skipped without telling (a timestamp jump), as some readers do when
    /// they resync past a damaged frame.
    gaps: u64,
    /// End timestamp of the previous packet, in track timebase units.
    next_pts: Option<i64>,
    /// Why the decoder last refused a packet as unsupported.
    unsupported: Option<&'static str>,
    /// Largest packet seen, in frames: the unit of slack for the truncation check.
    largest_packet: u64,
}

impl Mixdown {
    fn new() -> Self {
        Self {
            mono: Vec::new(),
            scratch: Vec::new(),
            rate: None,
            channels: None,
            decoded_packets: 0,
            failed_packets: 0,
            trailing_failures: 0,
            gaps: 0,
            next_pts: None,
            unsupported: None,
            largest_packet: 0,
        }
    }

    /// Whether a decoded buffer fits the stream so far; the first one defines the stream.
    fn accepts(&mut self, rate: u32, channels: usize) -> bool {
        if channels == 0 {
            return false;
        }
        let rate_ok = *self.rate.get_or_insert(rate) == rate;
        let channels_ok = *self.channels.get_or_insert(channels) == channels;
        rate_ok && channels_ok
    }

    /// Notes a packet's place on the timeline to spot packets that never arrived.
    fn note_timing(&mut self, pts: i64, dur: u64) {
        if let Some(expected) = self.next_pts {
            // Half a packet of leeway absorbs timestamp rounding in coarse timebases.
            let missing = u64::try_from(pts.saturating_sub(expected)).unwrap_or(0);
            if missing.saturating_mul(2) > dur {
                self.gaps += 1;
            }
        }
        self.next_pts = Some(pts.saturating_add_unsigned(dur));
    }

    fn packet_failed(&mut self, unsupported: Option<&'static str>) {
        self.failed_packets += 1;
        self.trailing_failures += 1;
        if unsupported.is_some() {
            self.unsupported = unsupported;
        }
    }

    /// Averages the frames in `scratch` into `mono`.
    fn push_interleaved(&mut self, channels: usize) {
        let frames = self.scratch.len() / channels;
        self.decoded_packets += 1;
        self.trailing_failures = 0;
        self.largest_packet = self.largest_packet.max(frames as u64);
        let scale = 1.0 / channels as f32;
        self.mono.extend(
            self.scratch
                .chunks_exact(channels)
                .map(|frame| sanitise(frame.iter().sum::<f32>() * scale)),
        );
    }

    /// Decides whether what was decoded is the whole stream.
    fn finish(&self, end: StreamEnd, declared_frames: Option<u64>) -> Result<(), DecodeError> {
        let attempted = self.decoded_packets + self.failed_packets;
        if self.decoded_packets == 0 && self.failed_packets > 0 {
            return Err(match self.unsupported {
                Some(what) => DecodeError::UnsupportedCodec(what.into()),
                None => DecodeError::Corrupt(format!(
                    "none of {attempted} audio packets could be decoded"
                )),
            });
        }
        if self.mono.is_empty() {
            // A header promising audio with nothing behind it is an empty file, not a cut one:
            // there is no partial announcement the user might mistake for the whole.
            return Err(match end {
                StreamEnd::DemuxFailed(why) => DecodeError::Corrupt(why),
                StreamEnd::Complete | StreamEnd::CutMidPacket => DecodeError::NoSamples,
            });
        }
        if self.failed_packets > 1 && self.failed_packets * MAX_FAILED_PACKETS_ONE_IN > attempted {
            return Err(DecodeError::Corrupt(format!(
                "{} of {attempted} audio packets could not be decoded",
                self.failed_packets
            )));
        }

        let decoded = self.mono.len() as u64;
        let cut_short = !matches!(end, StreamEnd::Complete);
        if let Some(declared) = declared_frames.filter(|&d| d > 0) {
            let slack = TRUNCATION_SLACK_PACKETS * self.largest_packet;
            let well_short = decoded.saturating_add(slack)
                < declared.saturating_mul(TRUNCATION_RATIO_PERCENT) / 100;
            // When the bytes visibly ran out, a declared length is trusted more closely.
            let short_after_cut = cut_short && decoded.saturating_add(slack) < declared;
            if well_short || short_after_cut {
                let rate = self.rate.unwrap_or(0);
                let (decoded_ms, expected_ms) =
                    (frames_to_ms(decoded, rate), frames_to_ms(declared, rate));
                let damaged_inside = self.gaps > 0 || self.failed_packets > self.trailing_failures;
                return Err(if damaged_inside {
                    DecodeError::Corrupt(format!(
                        "only {decoded_ms} ms of {expected_ms} ms could be decoded"
                    ))
                } else {
                    DecodeError::Truncated {
                        decoded_ms,
                        expected_ms,
                    }
                });
            }
        }
        if let StreamEnd::DemuxFailed(why) = end {
            // With a declared length that was reached, a failure past it is trailing junk;
            // without one there is no telling how much audio was lost.
            if declared_frames.is_none() {
                return Err(DecodeError::Corrupt(why));
            }
        }
        Ok(())
    }
}

/// Keeps a sample inside the documented [-1, 1] range: lossy decoders overshoot slightly on
/// loud material, and a NaN from a damaged packet must not reach the encoder or loudness meter.
fn sanitise(sample: f32) -> f32 {
    if sample.is_nan() {
        0.0
    } else {
        sample.clamp(-1.0, 1.0)
    }
}

/// Just enough ISO BMFF (MP4) parsing to find the edit list of one track. Every read is bounds
/// checked and any surprise yields `None`: the edit is a refinement, never a reason to fail.
mod mp4 {
    /// The part of a track's media that is presented, from its edit list.
    #[derive(Debug, Clone, Copy, PartialEq, Eq)]
    pub(super) struct Edit {
        /// Where presentation starts, in media timescale units (the encoder's priming).
        media_start: u64,
        /// Units per second of `media_start` (from `mdhd`).
        media_timescale: u32,
        /// How long presentation lasts, in movie timescale units; 0 means "to the end".
        duration: u64,
        /// Units per second of `duration` (from `mvhd`).
        movie_timescale: u32,
    }

    impl Edit {
        /// Drops the priming from the front of `mono` and the padding from its end.
        pub(super) fn apply(self, mono: &mut Vec<f32>, rate: u32) {
            let skip = rescale(self.media_start, self.media_timescale, rate);
            let skip = usize::try_from(skip).unwrap_or(usize::MAX).min(mono.len());
            mono.drain(..skip);
            if self.duration > 0 {
                let keep = rescale(self.duration, self.movie_timescale, rate);
                mono.truncate(usize::try_from(keep).unwrap_or(usize::MAX));
            }
        }
    }

    /// `value` in `from` units per second expressed in `to` units per second, rounded.
    fn rescale(value: u64, from: u32, to: u32) -> u64 {
        let from = u128::from(from.max(1));
        let scaled = (u128::from(value) * u128::from(to) + from / 2) / from;
        u64::try_from(scaled).unwrap_or(u64::MAX)
    }

    /// The edit of track `track_id`, when it is the usual single "skip the priming, stop before
    /// the padding" edit. Multi-segment edits (rare for audio) are left alone.
    pub(super) fn audio_edit(file: &[u8], track_id: u32) -> Option<Edit> {
        let moov = child(file, b"moov")?;
        let movie_timescale = timescale(child(moov, b"mvhd")?)?;
        let trak = boxes(moov)
            .filter(|(kind, _)| kind == b"trak")
            .map(|(_, trak)| trak)
            .find(|trak| child(trak, b"tkhd").and_then(tkhd_track_id) == Some(track_id))?;
        let media_timescale = timescale(child(child(trak, b"mdia")?, b"mdhd")?)?;
        let elst = child(child(trak, b"edts")?, b"elst")?;

        let version = *elst.first()?;
        let count = usize::try_from(be_u32(elst, 4)?).ok()?;
        let entry_len = match version {
            0 => 12,
            1 => 20,
            _ => return None,
        };
        let mut presented = Vec::new();
        for i in 0..count.min(16) {
            let entry = elst.get(8 + i * entry_len..8 + (i + 1) * entry_len)?;
            let (duration, media_time, rate_at) = if version == 0 {
                let time = i64::from(be_u32(entry, 4)? as i32);
                (u64::from(be_u32(entry, 0)?), time, 8)
            } else {
                let time = be_u64(entry, 8)? as i64;
                (be_u64(entry, 0)?, time, 16)
            };
            let rate = u16::from_be_bytes(entry.get(rate_at..rate_at + 2)?.try_into().ok()?);
            // media_time -1 is an empty edit (a pause before the track); a pause in front of
            // an announcement carries nothing worth keeping, so it is skipped, not rendered.
            if media_time == -1 {
                continue;
            }
            presented.push((duration, u64::try_from(media_time).ok()?, rate));
        }
        match presented.as_slice() {
            [(duration, media_start, 1)] => Some(Edit {
                media_start: *media_start,
                media_timescale,
                duration: *duration,
                movie_timescale,
            }),
            _ => None,
        }
    }

    /// Boxes laid end to end in `data` as (type, body); stops at the first malformed one.
    fn boxes(mut data: &[u8]) -> impl Iterator<Item = ([u8; 4], &[u8])> {
        std::iter::from_fn(move || {
            let size = be_u32(data, 0)?;
            let kind: [u8; 4] = data.get(4..8)?.try_into().ok()?;
            let (header, total) = match size {
                0 => (8, data.len()),
                1 => (16, usize::try_from(be_u64(data, 8)?).ok()?),
                n => (8, usize::try_from(n).ok()?),
            };
            let body = data.get(header..total)?;
            data = data.get(total..)?;
            Some((kind, body))
        })
    }

    fn child<'a>(data: &'a [u8], kind: &[u8; 4]) -> Option<&'a [u8]> {
        boxes(data).find(|(k, _)| k == kind).map(|(_, body)| body)
    }

    /// Timescale of an `mvhd` or `mdhd` body, which share their layout up to it.
    fn timescale(body: &[u8]) -> Option<u32> {
        let at = match body.first()? {
            0 => 12,
            1 => 20,
            _ => return None,
        };
        be_u32(body, at).filter(|&ts| ts > 0)
    }

    fn tkhd_track_id(body: &[u8]) -> Option<u32> {
        match body.first()? {
            0 => be_u32(body, 12),
            1 => be_u32(body, 20),
            _ => None,
        }
    }

    fn be_u32(data: &[u8], at: usize) -> Option<u32> {
        Some(u32::from_be_bytes(
            data.get(at..at.checked_add(4)?)?.try_into().ok()?,
        ))
    }

    fn be_u64(data: &[u8], at: usize) -> Option<u64> {
        Some(u64::from_be_bytes(
            data.get(at..at.checked_add(8)?)?.try_into().ok()?,
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::super::test_support::wav;
    use super::*;

    fn fixture(name: &str) -> Vec<u8> {
        let path = format!("{}/tests/fixtures/{name}", env!("CARGO_MANIFEST_DIR"));
        std::fs::read(&path).unwrap_or_else(|e| panic!("reading {path}: {e}"))
    }

    fn silence_wav(rate: u32, seconds: u32, declared_data_bytes: Option<u32>) -> Vec<u8> {
        wav(
            rate,
            1,
            &vec![0; (rate * seconds) as usize],
            declared_data_bytes,
        )
    }

    #[test]
    fn each_announcement_fixture_decodes_with_its_rate_channels_and_duration() {
        // Reference durations: `ffprobe -show_entries stream=duration` for WAV, FLAC and Ogg.
        // For the MP3 ffprobe reports the container's 10.240 s; the reference is the length
        // after LAME gapless trimming, from `ffmpeg -i announce-vi.mp3 -f s16le - | wc -c`
        // (449451 frames at 44.1 kHz = 10191.63 ms).
        let cases = [
            (
                "announce-vi-48k-24bit-stereo.wav",
                "wav",
                "pcm_s24le",
                48_000,
                2,
                2000.0,
            ),
            ("announce-vi.flac", "flac", "flac", 22_050, 1, 10_191.655),
            ("announce-vi.mp3", "mp3", "mp3", 44_100, 2, 10_191.63),
            ("announce-vi.ogg", "ogg", "vorbis", 22_050, 1, 10_191.655),
        ];
        for (name, format, codec, rate, channels, reference_ms) in cases {
            let ext = name.rsplit('.').next();
            let audio = decode(&fixture(name), ext, DecodeLimits::default())
                .unwrap_or_else(|e| panic!("{name}: {e}"));
            assert_eq!(audio.format, format, "{name}");
            assert_eq!(audio.codec, codec, "{name}");
            assert_eq!(audio.sample_rate, rate, "{name}");
            assert_eq!(audio.channels, channels, "{name}");
            let off_by = (audio.duration_ms() as f64 - reference_ms).abs();
            assert!(off_by <= 20.0, "{name}: {} ms", audio.duration_ms());
            assert!(
                audio.mono.iter().all(|s| (-1.0..=1.0).contains(s)),
                "{name}"
            );
        }
    }

    #[test]
    fn the_mp3_fixture_is_trimmed_to_its_gapless_length() {
        // The LAME header declares 1105 frames of encoder delay and 1028 of padding around
        // 449451 frames of audio.
        let audio = decode(&fixture("announce-vi.mp3"), Some("mp3"), Default::default()).unwrap();
        assert_eq!(audio.mono.len(), 449_451);
    }

    #[test]
    fn the_extension_hint_may_carry_a_dot_and_capitals() {
        let audio = decode(
            &fixture("announce-vi.flac"),
            Some(".FLAC"),
            Default::default(),
        );
        assert_eq!(audio.map(|a| a.sample_rate), Ok(22_050));
        let audio = decode(&fixture("announce-vi.flac"), None, Default::default());
        assert_eq!(audio.map(|a| a.sample_rate), Ok(22_050));
    }

    #[test]
    fn an_empty_upload_is_rejected_as_empty() {
        let result = decode(
            &fixture("broken-empty.mp3"),
            Some("mp3"),
            Default::default(),
        );
        assert_eq!(result.unwrap_err(), DecodeError::Empty);
    }

    #[test]
    fn text_named_mp3_is_unrecognised() {
        // Also pins NO_FORMAT_READER: if symphonia rewords its probe failure this turns into
        // UnsupportedCodec and fails here.
        let result = decode(&fixture("broken-text.mp3"), Some("mp3"), Default::default());
        assert_eq!(result.unwrap_err(), DecodeError::Unrecognised);
    }

    #[test]
    fn random_bytes_named_wav_are_unrecognised() {
        let result = decode(
            &fixture("broken-random.wav"),
            Some("wav"),
            Default::default(),
        );
        assert_eq!(result.unwrap_err(), DecodeError::Unrecognised);
    }

    #[test]
    fn a_wav_header_without_samples_has_no_samples() {
        let result = decode(
            &fixture("broken-header-only.wav"),
            Some("wav"),
            Default::default(),
        );
        assert_eq!(result.unwrap_err(), DecodeError::NoSamples);
    }

    #[test]
    fn an_mp3_cut_after_9000_bytes_is_truncated() {
        // symphonia ends the cut stream cleanly (no I/O error) after 20 frames; only the LAME
        // header's frame count shows that 10 s are missing.
        let err = decode(
            &fixture("broken-truncated.mp3"),
            Some("mp3"),
            Default::default(),
        )
        .unwrap_err();
        let DecodeError::Truncated {
            decoded_ms,
            expected_ms,
        } = err
        else {
            panic!("expected Truncated, got {err:?}");
        };
        assert!((400..600).contains(&decoded_ms), "{decoded_ms}");
        assert_eq!(expected_ms, 10_192);
        assert_eq!(
            err.to_string(),
            format!("the file ends early: {decoded_ms} ms decoded of 10192 ms declared")
        );
    }

    #[test]
    fn a_wav_cut_mid_data_is_truncated() {
        let mut file = silence_wav(16_000, 2, None);
        file.truncate(44 + 16_000 * 2);
        let err = decode(&file, Some("wav"), Default::default()).unwrap_err();
        assert_eq!(
            err,
            DecodeError::Truncated {
                decoded_ms: 1000,
                expected_ms: 2000
            }
        );
    }

    #[test]
    fn cutting_a_fixture_anywhere_gives_an_error_not_a_panic() {
        for name in [
            "announce-vi.mp3",
            "announce-vi.flac",
            "announce-vi-48k-24bit-stereo.wav",
        ] {
            let data = fixture(name);
            for tenth in 1..10 {
                let cut = &data[..data.len() * tenth / 10];
                let result = decode(cut, name.rsplit('.').next(), Default::default());
                assert!(
                    matches!(
                        result,
                        Err(DecodeError::Truncated { .. } | DecodeError::NoSamples)
                    ),
                    "{name} cut at {tenth}/10: {result:?}"
                );
            }
        }
    }

    #[test]
    fn damaged_flac_frames_are_reported_as_corrupt_not_truncated() {
        // Overwrite 8 KiB in the middle: the FLAC reader resyncs past the damaged frames, so
        // the loss shows as a timestamp gap rather than as decode errors.
        let mut data = fixture("announce-vi.flac");
        let middle = data.len() / 2;
        data[middle..middle + 8192].fill(0x55);
        let result = decode(&data, Some("flac"), Default::default());
        assert!(matches!(result, Err(DecodeError::Corrupt(_))), "{result:?}");
    }

    #[test]
    fn a_header_declaring_too_much_audio_is_rejected_before_decoding() {
        // Declares 3 s of 8 kHz audio but carries none: the header alone settles it.
        let file = wav(8_000, 1, &[], Some(3 * 8_000 * 2));
        let limits = DecodeLimits { max_duration_s: 2 };
        assert_eq!(
            decode(&file, Some("wav"), limits).unwrap_err(),
            DecodeError::TooLong { max_s: 2 }
        );
    }

    #[test]
    fn a_stream_without_declared_length_stops_once_past_the_limit() {
        // u32::MAX is the placeholder size streaming writers (ffmpeg to a pipe) leave behind.
        let file = silence_wav(8_000, 3, Some(u32::MAX));
        let limits = DecodeLimits { max_duration_s: 2 };
        assert_eq!(
            decode(&file, Some("wav"), limits).unwrap_err(),
            DecodeError::TooLong { max_s: 2 }
        );
        let limits = DecodeLimits { max_duration_s: 3 };
        let audio = decode(&file, Some("wav"), limits).unwrap();
        assert_eq!(audio.duration_ms(), 3000);
    }

    #[test]
    fn stereo_is_averaged_to_mono() {
        // Left at +0.5, right at -0.25 full scale.
        let frames: Vec<i16> = (0..1600).flat_map(|_| [16_384, -8_192]).collect();
        let audio = decode(&wav(16_000, 2, &frames, None), None, Default::default()).unwrap();
        assert_eq!(audio.channels, 2);
        assert_eq!(audio.mono.len(), 1600);
        assert!(audio.mono.iter().all(|&s| (s - 0.125).abs() < 1e-4));
    }

    #[test]
    fn rates_outside_8_to_96_khz_are_rejected() {
        for rate in [4_000, 192_000] {
            let result = decode(&silence_wav(rate, 1, None), Some("wav"), Default::default());
            assert_eq!(result.unwrap_err(), DecodeError::UnsupportedRate(rate));
        }
        for rate in [8_000, 96_000] {
            let result = decode(&silence_wav(rate, 1, None), Some("wav"), Default::default());
            assert_eq!(result.map(|a| a.sample_rate), Ok(rate));
        }
    }

    #[test]
    fn default_limit_is_two_hours() {
        assert_eq!(DecodeLimits::default().max_duration_s, 7200);
    }

    #[test]
    fn messages_read_as_sentences_for_the_uploader() {
        let err = DecodeError::Truncated {
            decoded_ms: 520,
            expected_ms: 10_240,
        };
        assert_eq!(
            err.to_string(),
            "the file ends early: 520 ms decoded of 10240 ms declared"
        );
        assert_eq!(
            DecodeError::UnsupportedRate(4000).to_string(),
            "the sample rate of 4000 Hz is not supported (8000 to 96000 Hz)"
        );
    }

    mod mp4_edit_list {
        use super::super::mp4::audio_edit;

        fn mp4_box(kind: &[u8; 4], body: &[u8]) -> Vec<u8> {
            let mut out = ((body.len() + 8) as u32).to_be_bytes().to_vec();
            out.extend_from_slice(kind);
            out.extend_from_slice(body);
            out
        }

        /// Version-0 header body with `value` at the timescale / track-id offset (12).
        fn header_v0(value: u32) -> Vec<u8> {
            let mut body = vec![0; 12];
            body.extend_from_slice(&value.to_be_bytes());
            body.extend_from_slice(&[0; 8]);
            body
        }

        /// The layout ffmpeg writes for AAC: 1024 frames of priming, then 10191 ms presented.
        fn ffmpeg_like_moov() -> Vec<u8> {
            let mut elst = vec![0, 0, 0, 0];
            elst.extend_from_slice(&1u32.to_be_bytes());
            elst.extend_from_slice(&10_191u32.to_be_bytes());
            elst.extend_from_slice(&1024u32.to_be_bytes());
            elst.extend_from_slice(&[0, 1, 0, 0]);
            let trak = [
                mp4_box(b"tkhd", &header_v0(1)),
                mp4_box(b"edts", &mp4_box(b"elst", &elst)),
                mp4_box(b"mdia", &mp4_box(b"mdhd", &header_v0(44_100))),
            ]
            .concat();
            let moov = [mp4_box(b"mvhd", &header_v0(1000)), mp4_box(b"trak", &trak)].concat();
            [mp4_box(b"ftyp", b"M4A "), mp4_box(b"moov", &moov)].concat()
        }

        #[test]
        fn aac_priming_and_padding_are_trimmed_to_the_presented_length() {
            let edit = audio_edit(&ffmpeg_like_moov(), 1).expect("edit list");
            // 440 AAC frames of 1024 samples, as decoded from announce-vi.m4a.
            let mut mono: Vec<f32> = (0..450_560).map(|i| i as f32).collect();
            edit.apply(&mut mono, 44_100);
            // 10191 ms at 44.1 kHz, as ffprobe reports for the fixture.
            assert_eq!(mono.len(), 449_423);
            assert_eq!(mono[0], 1024.0);
        }

        #[test]
        fn another_track_id_has_no_edit() {
            assert_eq!(audio_edit(&ffmpeg_like_moov(), 2), None);
        }

        #[test]
        fn any_cut_of_the_boxes_is_handled_without_panicking() {
            let file = ffmpeg_like_moov();
            for len in 0..file.len() {
                assert_eq!(audio_edit(&file[..len], 1), None, "cut at {len}");
            }
        }
    }
}
