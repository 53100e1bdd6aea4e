//! Decoding of uploaded audio (any container and codec symphonia knows), from bytes in memory
//! or straight from a file, into mono `f32` samples at the original rate, and classification of
//! every way an upload can be unusable. Must not read the clock or touch an async runtime; the
//! only file it opens is the one `decode_file` is given.

use std::fs::File;
use std::io::{BufReader, Cursor, ErrorKind, Read, Seek};
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::Path;

use symphonia::core::codecs::audio::CODEC_ID_NULL_AUDIO;
use symphonia::core::codecs::audio::{AudioCodecParameters, AudioDecoderOptions};
use symphonia::core::errors::Error as SymphoniaError;
use symphonia::core::formats::probe::Hint;
use symphonia::core::formats::{FormatOptions, FormatReader, TrackType};
use symphonia::core::io::{MediaSource, MediaSourceStream};
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

/// Packets a demuxer may hand out beyond one per byte of input. Every real packet carries at
/// least a byte, so a reader that yields more packets than the file has bytes is going round in
/// circles (or its sample table points many packets at the same bytes): stop it rather than
/// spin. The constant covers the header packets some formats synthesise.
const PACKET_SLACK: u64 = 1024;

/// Consecutive packets that yield no audio before the stream is declared undecodable. Legitimate
/// streams have a few (Vorbis headers, an MP3 frame eaten by gapless trimming); thousands in a
/// row, minutes of missing audio, mean the rest is junk, and stopping early bounds the time a
/// hostile file can keep us busy.
const MAX_FRUITLESS_PACKETS: u64 = 10_000;

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
    /// `decode_file` could not open or read the file (missing, unreadable, a directory). This
    /// is a fault on the caller's side of the upload, not in the audio; the message is the OS's.
    #[error("the file could not be read ({0})")]
    Io(String),
    /// The decoding library panicked on this input: a bug it has with some malformed file.
    /// The panic is caught so the upload is refused instead of killing the worker; the message
    /// is the panic's.
    #[error("the file could not be decoded (decoder failure: {0})")]
    DecoderFailed(String),
}

/// Decodes an upload held in memory into mono samples at its original rate.
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
    let mut reopen = || Some(Box::new(Cursor::new(data)) as Box<dyn ReadSeek + '_>);
    decode_source(
        Box::new(Cursor::new(data)),
        data.len() as u64,
        extension_hint,
        limits,
        &mut reopen,
    )
}

/// Decodes the upload stored at `path`, streaming it from disk: memory use is the decoded
/// samples plus symphonia's read buffer, never the whole file. Same answers as [`decode`] on
/// the file's bytes; a file that cannot be opened or read is [`DecodeError::Io`].
pub fn decode_file(
    path: &Path,
    extension_hint: Option<&str>,
    limits: DecodeLimits,
) -> Result<DecodedAudio, DecodeError> {
    let io = |e: std::io::Error| DecodeError::Io(e.to_string());
    let file = File::open(path).map_err(io)?;
    let metadata = file.metadata().map_err(io)?;
    // Opening a directory succeeds on Unix; reading it is what fails, with a worse message.
    if !metadata.is_file() {
        return Err(DecodeError::Io("not a regular file".into()));
    }
    if metadata.len() == 0 {
        return Err(DecodeError::Empty);
    }
    // Header fields read outside symphonia go through a second handle: symphonia owns the
    // first, and its position must not move under it.
    let mut reopen = || {
        let file = File::open(path).ok()?;
        Some(Box::new(BufReader::new(file)) as Box<dyn ReadSeek>)
    };
    decode_source(
        Box::new(file),
        metadata.len(),
        extension_hint,
        limits,
        &mut reopen,
    )
}

/// A second, independent reader over the input, for the few header fields we check ourselves.
trait ReadSeek: Read + Seek {}
impl<T: Read + Seek> ReadSeek for T {}

/// Opens a fresh reader over the input at its start; `None` if it cannot (the checks it feeds
/// are then skipped, and symphonia's own reading reports any real I/O problem).
type Reopen<'a, 'r> = dyn FnMut() -> Option<Box<dyn ReadSeek + 'a>> + 'r;

/// The decoding both entry points share. `input_len` is the size of `source` in bytes, for the
/// runaway-demuxer guard.
///
/// The inputs symphonia 0.6.1 is known to panic on are refused before it sees them
/// (`riff::check_header`, `mp4::check_tables`). It still runs under `catch_unwind`: it parses
/// hostile input, and a panic we have not met yet must become a refused upload, not a dead
/// worker thread. Nothing survives the closure but its result, so no state can be seen
/// half-updated.
fn decode_source<'a>(
    source: Box<dyn MediaSource + 'a>,
    input_len: u64,
    extension_hint: Option<&str>,
    limits: DecodeLimits,
    reopen: &mut Reopen<'a, '_>,
) -> Result<DecodedAudio, DecodeError> {
    if let Some(mut header) = reopen() {
        riff::check_header(&mut header)?;
    }
    let mut inspect_mp4 = |track_id| {
        let Some(moov) = reopen().and_then(|mut file| mp4::read_moov(&mut file)) else {
            return Ok(None);
        };
        mp4::check_tables(&moov)?;
        Ok(mp4::audio_edit(&moov, track_id))
    };
    catch_unwind(AssertUnwindSafe(|| {
        decode_stream(source, input_len, extension_hint, limits, &mut inspect_mp4)
    }))
    .unwrap_or_else(|panic| {
        let why = panic
            .downcast_ref::<&str>()
            .map(|s| (*s).to_string())
            .or_else(|| panic.downcast_ref::<String>().cloned())
            .unwrap_or_else(|| "unknown panic".into());
        Err(DecodeError::DecoderFailed(why))
    })
}

/// Probes, demuxes and decodes `source`: the part that runs inside symphonia. For an MP4,
/// `inspect_mp4` checks the sample tables symphonia mishandles and returns the edit of the
/// given track.
fn decode_stream<'a>(
    source: Box<dyn MediaSource + 'a>,
    input_len: u64,
    extension_hint: Option<&str>,
    limits: DecodeLimits,
    inspect_mp4: &mut dyn FnMut(u32) -> Result<Option<mp4::Edit>, DecodeError>,
) -> Result<DecodedAudio, DecodeError> {
    let mut format = open(source, extension_hint)?;
    let format_name = container_name(format.format_info().short_name);

    let track = format
        .default_track(TrackType::Audio)
        .ok_or(DecodeError::NoAudioTrack)?;
    let track_id = track.id;
    let declared_frames = track.num_frames;
    // symphonia 0.6 parses MP4 edit lists but does not apply them, so AAC encoder priming and
    // padding (~50 ms) would be played and counted. Apply the edit ourselves, unless symphonia
    // already reports a delay or padding for the track (a newer version trimming on its own).
    let edit = if format_name == "mp4" {
        inspect_mp4(track_id)?.filter(|_| track.delay.is_none() && track.padding.is_none())
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
    let mut budget = PacketBudget::new(input_len);
    let end = loop {
        budget.next_packet()?;
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
                if !mix.scratch.is_empty() {
                    budget.produced_audio();
                }
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

/// Probes the source for a container and opens a reader over it.
fn open<'a>(
    source: Box<dyn MediaSource + 'a>,
    extension_hint: Option<&str>,
) -> Result<Box<dyn FormatReader + 'a>, DecodeError> {
    let mut hint = Hint::new();
    if let Some(ext) = extension_hint {
        hint.with_extension(&ext.trim_start_matches('.').to_ascii_lowercase());
    }
    let source = MediaSourceStream::new(source, Default::default());
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

/// Bounds the packets a demuxer may hand us, so that no input keeps the decode loop spinning
/// (symphonia has no overall limit of its own, and this module may not read the clock).
struct PacketBudget {
    input_len: u64,
    max_packets: u64,
    packets: u64,
    /// Packets since the last one that yielded audio.
    fruitless: u64,
}

impl PacketBudget {
    fn new(input_len: u64) -> Self {
        Self {
            input_len,
            max_packets: input_len.saturating_add(PACKET_SLACK),
            packets: 0,
            fruitless: 0,
        }
    }

    /// Called before reading each packet; errs once the budget is spent. A packet counts as
    /// fruitless until `produced_audio` says otherwise.
    fn next_packet(&mut self) -> Result<(), DecodeError> {
        if self.packets >= self.max_packets {
            return Err(DecodeError::Corrupt(format!(
                "the container lists more packets than its {} bytes can hold",
                self.input_len
            )));
        }
        if self.fruitless >= MAX_FRUITLESS_PACKETS {
            return Err(DecodeError::Corrupt(format!(
                "{MAX_FRUITLESS_PACKETS} packets in a row held no audio"
            )));
        }
        self.packets += 1;
        self.fruitless += 1;
        Ok(())
    }

    fn produced_audio(&mut self) {
        self.fruitless = 0;
    }
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

/// Just enough RIFF/WAVE parsing to refuse the headers symphonia 0.6 panics on, before it sees
/// them. Reads are bounded and any surprise means "nothing to refuse": symphonia then judges
/// the file as usual.
mod riff {
    use std::io::{Read, Seek, SeekFrom};

    use super::DecodeError;

    /// Chunks stepped over looking for `fmt `; real files have it first or after one or two
    /// (JUNK, bext, LIST).
    const MAX_CHUNKS: usize = 64;

    /// WAVE_FORMAT_EXTENSIBLE.
    const EXTENSIBLE: u16 = 0xFFFE;

    /// Most channels symphonia-format-riff 0.6.1 can map to positions
    /// (`map_wave_channel_count`); it refuses any WAV with more, but only after arithmetic
    /// that can overflow on them.
    const MAX_CHANNELS: u16 = 26;

    /// Refuses the WAV headers symphonia-format-riff 0.6.1 panics on (in builds with overflow
    /// checks; without them it computes garbage):
    /// - more channels than it supports: `read_pcm_fmt` multiplies the channel count by the
    ///   sample width in a `u16` (65535 channels of 16 bits overflow) before it gets to
    ///   refusing the count;
    /// - a WAVE_FORMAT_EXTENSIBLE channel mask with fewer bits set than channels declared,
    ///   where the shortfall cannot be filled inside 32 bits (the mask's top bit already set):
    ///   `fix_wave_channel_mask` fills it with a shift that overflows.
    pub(super) fn check_header<R: Read + Seek + ?Sized>(file: &mut R) -> Result<(), DecodeError> {
        let Some(fmt) = fmt_chunk(file) else {
            return Ok(());
        };
        let le16 = |at: usize| {
            fmt.get(at..at + 2)
                .map(|b| u16::from_le_bytes([b[0], b[1]]))
        };
        let Some(channels) = le16(2) else {
            return Ok(());
        };
        if channels > MAX_CHANNELS {
            return Err(DecodeError::Corrupt(format!(
                "the WAV header declares {channels} channels; at most {MAX_CHANNELS} are supported"
            )));
        }
        let (Some(EXTENSIBLE), Some(22)) = (le16(0), le16(16)) else {
            return Ok(());
        };
        let Some(mask) = fmt
            .get(20..24)
            .map(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
        else {
            return Ok(());
        };
        let missing = i64::from(channels) - i64::from(mask.count_ones());
        if missing > 0 && mask.leading_zeros() == 0 {
            return Err(DecodeError::Corrupt(format!(
                "the WAV channel mask {mask:#x} cannot describe {channels} channels"
            )));
        }
        Ok(())
    }

    /// The first 40 bytes of the `fmt ` chunk body of a RIFF/WAVE file, if it is one.
    fn fmt_chunk<R: Read + Seek + ?Sized>(file: &mut R) -> Option<Vec<u8>> {
        file.seek(SeekFrom::Start(0)).ok()?;
        let mut header = [0u8; 12];
        file.read_exact(&mut header).ok()?;
        if !matches!(&header[..4], b"RIFF" | b"RF64") || &header[8..] != b"WAVE" {
            return None;
        }
        for _ in 0..MAX_CHUNKS {
            let mut chunk = [0u8; 8];
            file.read_exact(&mut chunk).ok()?;
            let len = u32::from_le_bytes([chunk[4], chunk[5], chunk[6], chunk[7]]);
            if &chunk[..4] == b"fmt " {
                let mut body = Vec::with_capacity(40);
                file.take(u64::from(len.min(40)))
                    .read_to_end(&mut body)
                    .ok()?;
                return Some(body);
            }
            // Chunks are padded to an even length.
            let skip = i64::from(len) + i64::from(len & 1);
            file.seek(SeekFrom::Current(skip)).ok()?;
        }
        None
    }
}

/// Just enough ISO BMFF (MP4) parsing to find the edit list of one track. Every read is bounds
/// checked and any surprise yields `None`: the edit is a refinement, never a reason to fail.
mod mp4 {
    use std::io::{Read, Seek, SeekFrom};

    use super::DecodeError;

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

    /// Largest `moov` body read for its edit list. A two-hour AAC track's sample tables come to
    /// a few MB; anything bigger is no announcement, and the edit is optional anyway.
    const MAX_MOOV_BYTES: u64 = 64 << 20;

    /// Top-level boxes stepped over looking for `moov`. Real files have a handful before it
    /// (ftyp, free, mdat); the bound stops a file of tiny boxes from keeping us seeking.
    const MAX_TOP_LEVEL_BOXES: usize = 4096;

    /// The body of the top-level `moov` box, or `None` if there is none, it is cut short or
    /// it is implausibly large. Reads only the box headers up to `moov`, then `moov` itself, so
    /// a file on disk is not read whole.
    pub(super) fn read_moov<R: Read + Seek + ?Sized>(file: &mut R) -> Option<Vec<u8>> {
        file.seek(SeekFrom::Start(0)).ok()?;
        for _ in 0..MAX_TOP_LEVEL_BOXES {
            let mut header = [0u8; 8];
            file.read_exact(&mut header).ok()?;
            let (size, kind) = header.split_at(4);
            let (header_len, total) = match be_u32(size, 0)? {
                // Size 0: the box runs to the end of the file.
                0 => (8, None),
                1 => {
                    let mut large = [0u8; 8];
                    file.read_exact(&mut large).ok()?;
                    (16, Some(u64::from_be_bytes(large)))
                }
                n => (8, Some(u64::from(n))),
            };
            let body_len = match total {
                Some(total) => Some(total.checked_sub(header_len)?),
                None => None,
            };
            if kind == b"moov" {
                let want = body_len.unwrap_or(MAX_MOOV_BYTES);
                if want > MAX_MOOV_BYTES {
                    return None;
                }
                // Read, not pre-allocated from the declared size: a lying size costs only
                // the bytes that are really there.
                let mut body = Vec::new();
                file.take(want).read_to_end(&mut body).ok()?;
                let cut_short = body_len.is_some_and(|len| (body.len() as u64) < len);
                return (!cut_short).then_some(body);
            }
            let skip = i64::try_from(body_len?).ok()?;
            file.seek(SeekFrom::Current(skip)).ok()?;
        }
        None
    }

    /// Refuses sample tables that symphonia-format-isomp4 0.6.1 overflows on: a time-to-sample
    /// table (`stts`) whose sample counts add up past `u32::MAX`, which its
    /// `find_timing_for_sample` sums in a `u32` for every packet of every track. A zero sample
    /// delta keeps such a table's declared duration small, so the length limit does not catch
    /// it first.
    pub(super) fn check_tables(moov: &[u8]) -> Result<(), DecodeError> {
        for trak in boxes(moov).filter(|(kind, _)| kind == b"trak") {
            let stts = child(trak.1, b"mdia")
                .and_then(|mdia| child(mdia, b"minf"))
                .and_then(|minf| child(minf, b"stbl"))
                .and_then(|stbl| child(stbl, b"stts"));
            let Some(stts) = stts else { continue };
            let count = be_u32(stts, 4).unwrap_or(0);
            // Only the entries actually present: symphonia fails on a short table by itself.
            let total: u64 = (0..count)
                .map_while(|i| {
                    be_u32(
                        stts,
                        usize::try_from(i).ok()?.checked_mul(8)?.checked_add(8)?,
                    )
                })
                .map(u64::from)
                .sum();
            if total > u64::from(u32::MAX) {
                return Err(DecodeError::Corrupt(format!(
                    "the MP4 time table lists {total} samples"
                )));
            }
        }
        Ok(())
    }

    /// The edit of track `track_id`, when it is the usual single "skip the priming, stop before
    /// the padding" edit. Multi-segment edits (rare for audio) are left alone.
    pub(super) fn audio_edit(moov: &[u8], track_id: u32) -> Option<Edit> {
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

    fn fixture_path(name: &str) -> std::path::PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("tests/fixtures")
            .join(name)
    }

    #[test]
    fn decoding_from_a_file_gives_what_decoding_its_bytes_gives() {
        // Every fixture, good and broken, so the shared path is pinned for errors too.
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures");
        let mut names: Vec<String> = std::fs::read_dir(&dir)
            .unwrap()
            .filter_map(|e| e.ok()?.file_name().into_string().ok())
            .filter(|n| !n.ends_with(".md"))
            .collect();
        names.sort();
        assert!(names.len() >= 19, "{names:?}");
        for name in &names {
            let ext = name.rsplit('.').next();
            let from_bytes = decode(&fixture(name), ext, Default::default());
            let from_file = decode_file(&fixture_path(name), ext, Default::default());
            match (from_bytes, from_file) {
                (Ok(a), Ok(b)) => {
                    assert_eq!(
                        (&a.format, &a.codec, a.sample_rate, a.channels),
                        (&b.format, &b.codec, b.sample_rate, b.channels),
                        "{name}"
                    );
                    assert!(a.mono == b.mono, "{name}: samples differ");
                }
                (a, b) => assert_eq!(a.err(), b.err(), "{name}"),
            }
        }
    }

    #[test]
    fn the_mp4_edit_list_is_applied_when_decoding_from_a_file() {
        // ffprobe: duration=1.000000 (44100 frames); untrimmed AAC would be 45056 frames.
        let audio = decode_file(
            &fixture_path("announce-vi-1s.m4a"),
            Some("m4a"),
            Default::default(),
        )
        .unwrap();
        assert_eq!(audio.format, "mp4");
        assert_eq!(audio.mono.len(), 44_100);
    }

    #[test]
    fn a_missing_file_is_an_io_error() {
        let result = decode_file(
            &fixture_path("no-such-file.wav"),
            Some("wav"),
            Default::default(),
        );
        assert!(matches!(result, Err(DecodeError::Io(_))), "{result:?}");
        assert!(
            result
                .unwrap_err()
                .to_string()
                .starts_with("the file could not be read (")
        );
    }

    #[test]
    fn a_directory_is_an_io_error() {
        let result = decode_file(&fixture_path(""), None, Default::default());
        assert_eq!(
            result.unwrap_err(),
            DecodeError::Io("not a regular file".into())
        );
    }

    #[test]
    fn an_empty_file_is_rejected_as_empty() {
        let result = decode_file(
            &fixture_path("broken-empty.mp3"),
            Some("mp3"),
            Default::default(),
        );
        assert_eq!(result.unwrap_err(), DecodeError::Empty);
    }

    #[test]
    fn a_truncated_mp3_file_is_truncated() {
        let result = decode_file(
            &fixture_path("broken-truncated.mp3"),
            Some("mp3"),
            Default::default(),
        );
        assert!(
            matches!(
                result,
                Err(DecodeError::Truncated {
                    expected_ms: 10_192,
                    ..
                })
            ),
            "{result:?}"
        );
    }

    fn with_u16(data: &[u8], at: usize, value: u16) -> Vec<u8> {
        let mut out = data.to_vec();
        out[at..at + 2].copy_from_slice(&value.to_le_bytes());
        out
    }

    fn with_u32(data: &[u8], at: usize, value: u32) -> Vec<u8> {
        let mut out = data.to_vec();
        out[at..at + 4].copy_from_slice(&value.to_le_bytes());
        out
    }

    /// The f32 fixture (WAVE_FORMAT_EXTENSIBLE, mask 0x4 at byte 40 for its one channel)
    /// claiming `channels` channels.
    fn extensible_wav_with_channels(channels: u16) -> Vec<u8> {
        let data = fixture("announce-vi-f32.wav");
        assert_eq!(&data[12..16], b"fmt ");
        assert_eq!(data[20..22], [0xFE, 0xFF], "extensible format tag");
        assert_eq!(data[40..44], [4, 0, 0, 0], "mask: front centre");
        with_u16(&data, 22, channels)
    }

    #[test]
    fn a_wav_header_with_more_channels_than_supported_is_corrupt_instead_of_a_panic() {
        // symphonia-format-riff 0.6.1 overflows a multiplication (plain PCM) or a shift (an
        // extensible channel mask) on these; both found by the fuzz test.
        let pcm = wav(8_000, 1, &[0; 800], None);
        for (name, file) in [
            ("extensible", extensible_wav_with_channels(u16::MAX)),
            ("pcm", with_u16(&pcm, 22, u16::MAX)),
            ("pcm", with_u16(&pcm, 22, 27)),
        ] {
            let channels = u16::from_le_bytes([file[22], file[23]]);
            assert_eq!(
                decode(&file, Some("wav"), Default::default()).unwrap_err(),
                DecodeError::Corrupt(format!(
                    "the WAV header declares {channels} channels; at most 26 are supported"
                )),
                "{name}"
            );
        }
        // A mask whose top bit is set has no room above it for the channels it lacks.
        let file = with_u32(&extensible_wav_with_channels(2), 40, 0x8000_0000);
        assert_eq!(
            decode(&file, Some("wav"), Default::default()).unwrap_err(),
            DecodeError::Corrupt(
                "the WAV channel mask 0x80000000 cannot describe 2 channels".into()
            )
        );
        // 26 channels get as far as symphonia, which refuses 26 positions from a 1-bit mask
        // on its own terms.
        let result = decode(
            &extensible_wav_with_channels(26),
            Some("wav"),
            Default::default(),
        );
        assert!(
            !matches!(result, Err(DecodeError::DecoderFailed(_))),
            "{result:?}"
        );
    }

    #[test]
    fn an_mp4_time_table_past_u32_samples_is_corrupt_instead_of_a_panic() {
        // The fixture's stts holds (44 samples × 1024) and (1 × 68). A first entry of 2^32-1
        // samples lasting 0 each keeps the duration at 68 ticks, under any length limit, and
        // symphonia-format-isomp4 0.6.1 overflows a u32 adding up the counts (found by the
        // header-size test in tests/media_formats.rs).
        let mut data = fixture("announce-vi-1s.m4a");
        let stts = data.windows(4).position(|w| w == b"stts").unwrap();
        assert_eq!(data[stts + 8..stts + 12], [0, 0, 0, 2], "two entries");
        data[stts + 12..stts + 20].copy_from_slice(&[0xFF, 0xFF, 0xFF, 0xFF, 0, 0, 0, 0]);
        assert_eq!(
            decode(&data, Some("m4a"), Default::default()).unwrap_err(),
            DecodeError::Corrupt("the MP4 time table lists 4294967296 samples".into())
        );
    }

    #[test]
    fn a_demuxer_handing_out_more_packets_than_bytes_is_stopped() {
        let mut budget = PacketBudget::new(10);
        for _ in 0..10 + PACKET_SLACK {
            budget.next_packet().unwrap();
            budget.produced_audio();
        }
        assert_eq!(
            budget.next_packet().unwrap_err(),
            DecodeError::Corrupt(
                "the container lists more packets than its 10 bytes can hold".into()
            )
        );
    }

    #[test]
    fn a_long_run_of_packets_without_audio_is_stopped() {
        let mut budget = PacketBudget::new(u64::MAX);
        // A few silent packets (codec headers, a frame eaten by gapless trimming) are normal.
        for _ in 0..5 {
            budget.next_packet().unwrap();
        }
        budget.produced_audio();
        for _ in 0..MAX_FRUITLESS_PACKETS {
            budget.next_packet().unwrap();
        }
        assert_eq!(
            budget.next_packet().unwrap_err(),
            DecodeError::Corrupt("10000 packets in a row held no audio".into())
        );
    }

    mod mp4_edit_list {
        use std::io::Cursor;

        use super::super::mp4::{Edit, read_moov};

        fn audio_edit(file: &mut Cursor<impl AsRef<[u8]>>, track_id: u32) -> Option<Edit> {
            super::super::mp4::audio_edit(&read_moov(file)?, track_id)
        }

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
            let edit = audio_edit(&mut Cursor::new(ffmpeg_like_moov()), 1).expect("edit list");
            // 440 AAC frames of 1024 samples, as decoded from announce-vi.m4a.
            let mut mono: Vec<f32> = (0..450_560).map(|i| i as f32).collect();
            edit.apply(&mut mono, 44_100);
            // 10191 ms at 44.1 kHz, as ffprobe reports for the fixture.
            assert_eq!(mono.len(), 449_423);
            assert_eq!(mono[0], 1024.0);
        }

        #[test]
        fn another_track_id_has_no_edit() {
            assert_eq!(audio_edit(&mut Cursor::new(ffmpeg_like_moov()), 2), None);
        }

        #[test]
        fn any_cut_of_the_boxes_is_handled_without_panicking() {
            let file = ffmpeg_like_moov();
            for len in 0..file.len() {
                assert_eq!(
                    audio_edit(&mut Cursor::new(&file[..len]), 1),
                    None,
                    "cut at {len}"
                );
            }
        }
    }
}
