//! Incremental decoding of a live stream: bytes arrive from the network in chunks of any
//! size, with no end and no way back, and may start anywhere inside a frame. symphonia
//! reads them through [`ByteChannel`], a blocking reader fed by the async side, so this
//! runs on a thread of its own. Its output is mono `f32` at the stream's rate, handed on
//! as each packet decodes.
//!
//! What a broadcast controller needs beyond a file decoder: a stream joined mid-frame
//! resyncs on the next frame (MP3 and ADTS readers search for the sync word; Icecast sends
//! Ogg headers to each new listener); a demuxer error re-probes the bytes that follow
//! instead of giving up; and bytes that stop being audio (an HTML page in place of the
//! stream) end the decoding with a reason after a bounded amount of input.

use std::io::{Read, Seek, SeekFrom};
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, mpsc};

use bytes::Bytes;
use symphonia::core::codecs::audio::AudioDecoderOptions;
use symphonia::core::errors::Error as SymphoniaError;
use symphonia::core::formats::probe::Hint;
use symphonia::core::formats::{FormatOptions, TrackType};
use symphonia::core::io::{MediaSource, MediaSourceStream, MediaSourceStreamOptions};
use symphonia::core::meta::MetadataOptions;

/// Input without a single decoded sample before the stream is declared not audio. Covers
/// an Icecast burst of metadata and a resync across a damaged stretch, while an HTML
/// error page (a few KB) or junk is refused within well under a second of a 128 kb/s
/// stream.
const MAX_BYTES_WITHOUT_AUDIO: u64 = 64 * 1024;
/// Re-probes in a row, without audio between them, before giving up.
const MAX_REPROBES: u32 = 8;

/// The container a stream says (or is guessed) to be, from its Content-Type.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StreamFormat {
    Mp3,
    /// AAC in ADTS frames.
    Aac,
    Ogg,
}

impl StreamFormat {
    /// The format a Content-Type announces; `None` for anything that is not a live
    /// audio stream we relay (an HTML error page, JSON, a playlist).
    pub fn from_content_type(content_type: &str) -> Option<Self> {
        let essence = content_type
            .split(';')
            .next()
            .unwrap_or_default()
            .trim()
            .to_ascii_lowercase();
        match essence.as_str() {
            "audio/mpeg" | "audio/mp3" | "audio/mpeg3" | "audio/x-mpeg" => Some(Self::Mp3),
            "audio/aac" | "audio/aacp" | "audio/x-aac" | "audio/x-hx-aac-adts" => Some(Self::Aac),
            "application/ogg" | "audio/ogg" | "audio/vorbis" | "audio/x-vorbis+ogg" => {
                Some(Self::Ogg)
            }
            _ => None,
        }
    }

    fn extension(self) -> &'static str {
        match self {
            Self::Mp3 => "mp3",
            Self::Aac => "aac",
            Self::Ogg => "ogg",
        }
    }
}

/// Whether the first bytes of a body look like markup or text rather than audio: servers
/// answer errors with an HTML page, sometimes under an audio Content-Type.
pub fn looks_like_text(head: &[u8]) -> bool {
    let trimmed = head
        .iter()
        .position(|b| !b.is_ascii_whitespace())
        .map_or(&[][..], |i| &head[i..]);
    let lower: Vec<u8> = trimmed
        .iter()
        .take(16)
        .map(u8::to_ascii_lowercase)
        .collect();
    [
        &b"<!doctype"[..],
        b"<html",
        b"<?xml",
        b"<head",
        b"<body",
        b"{",
        b"[playlist]",
        b"#extm3u",
    ]
    .iter()
    .any(|m| lower.starts_with(m))
}

/// A blocking reader over chunks sent from another thread; the end of input is the
/// sender going away.
pub struct ByteChannel {
    chunks: Mutex<mpsc::Receiver<Bytes>>,
    current: Bytes,
    /// Bytes handed to the reader so far.
    consumed: Arc<AtomicU64>,
    /// `consumed` when audio last decoded. A demuxer hunting for a sync word reads on
    /// inside symphonia without coming back to us, so the budget of bytes without audio
    /// is enforced here, by failing the read.
    audio_at: Arc<AtomicU64>,
}

impl ByteChannel {
    /// The sender never blocks (it is called from async code): a live stream arrives
    /// in real time and decodes a hundred times faster, so nothing piles up.
    pub fn new() -> (mpsc::Sender<Bytes>, Self) {
        let (tx, rx) = mpsc::channel();
        (
            tx,
            Self {
                chunks: Mutex::new(rx),
                current: Bytes::new(),
                consumed: Arc::default(),
                audio_at: Arc::default(),
            },
        )
    }
}

impl Read for ByteChannel {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let consumed = self.consumed.load(Ordering::Relaxed);
        if consumed.saturating_sub(self.audio_at.load(Ordering::Relaxed)) > MAX_BYTES_WITHOUT_AUDIO
        {
            return Err(std::io::Error::new(
                std::io::ErrorKind::InvalidData,
                "no audio in the stream",
            ));
        }
        while self.current.is_empty() {
            let next = match self.chunks.get_mut() {
                Ok(rx) => rx.recv(),
                Err(poisoned) => poisoned.into_inner().recv(),
            };
            match next {
                Ok(chunk) => self.current = chunk,
                Err(_) => return Ok(0),
            }
        }
        let n = buf.len().min(self.current.len());
        buf[..n].copy_from_slice(&self.current.split_to(n));
        self.consumed.fetch_add(n as u64, Ordering::Relaxed);
        Ok(n)
    }
}

impl Seek for ByteChannel {
    fn seek(&mut self, _: SeekFrom) -> std::io::Result<u64> {
        Err(std::io::Error::new(
            std::io::ErrorKind::Unsupported,
            "a live stream cannot seek",
        ))
    }
}

impl MediaSource for ByteChannel {
    fn is_seekable(&self) -> bool {
        false
    }

    fn byte_len(&self) -> Option<u64> {
        None
    }
}

/// Why decoding stopped.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StreamError {
    /// The input ended (the connection closed or was dropped).
    #[error("the stream ended")]
    Ended,
    /// The consumer asked to stop.
    #[error("stopped")]
    Stopped,
    #[error("not an audio stream: {0}")]
    NotAudio(String),
    #[error("the decoder failed: {0}")]
    DecoderFailed(String),
}

/// Decodes `source` until it ends, handing each decoded packet to `sink` as mono samples
/// with their rate. `sink` returns false to stop. Never panics: a panic inside symphonia
/// is caught and reported.
pub fn decode_stream(
    source: ByteChannel,
    format: StreamFormat,
    sink: &mut dyn FnMut(&[f32], u32) -> bool,
) -> StreamError {
    catch_unwind(AssertUnwindSafe(|| run(source, format, sink))).unwrap_or_else(|panic| {
        let why = panic
            .downcast_ref::<&str>()
            .map(|s| (*s).to_string())
            .or_else(|| panic.downcast_ref::<String>().cloned())
            .unwrap_or_else(|| "unknown panic".into());
        StreamError::DecoderFailed(why)
    })
}

fn run(
    source: ByteChannel,
    format: StreamFormat,
    sink: &mut dyn FnMut(&[f32], u32) -> bool,
) -> StreamError {
    let mut hint = Hint::new();
    hint.with_extension(format.extension());
    let consumed = source.consumed.clone();
    let audio_at = source.audio_at.clone();
    let without_audio = |last_audio_at: u64| {
        consumed
            .load(Ordering::Relaxed)
            .saturating_sub(last_audio_at)
    };
    // symphonia's read-ahead only waits for what a packet needs: our reads return
    // whatever has arrived.
    let mut mss = MediaSourceStream::new(Box::new(source), MediaSourceStreamOptions::default());
    let mut mono = Vec::new();
    let mut scratch = Vec::new();
    let mut reprobes = 0;
    // Position of the stream at the last decoded audio.
    let mut last_audio_at = 0u64;
    loop {
        let start = consumed.load(Ordering::Relaxed);
        let mut reader = match symphonia::default::get_probe().probe(
            &hint,
            mss,
            FormatOptions::default(),
            MetadataOptions::default(),
        ) {
            Ok(reader) => reader,
            Err(SymphoniaError::IoError(e)) if e.kind() == std::io::ErrorKind::UnexpectedEof => {
                return StreamError::Ended;
            }
            Err(e) => {
                return StreamError::NotAudio(format!(
                    "no {} audio found after byte {start}: {e}",
                    format.extension()
                ));
            }
        };
        let Some(track) = reader.default_track(TrackType::Audio) else {
            return StreamError::NotAudio("no audio track".into());
        };
        let track_id = track.id;
        let Some(params) = track.codec_params.as_ref().and_then(|p| p.audio()).cloned() else {
            return StreamError::NotAudio("no audio track".into());
        };
        let mut decoder = match symphonia::default::get_codecs()
            .make_audio_decoder(&params, &AudioDecoderOptions::default())
        {
            Ok(d) => d,
            Err(e) => return StreamError::NotAudio(e.to_string()),
        };
        // Read packets until the demuxer gives up, then probe again from where it is.
        loop {
            let packet = match reader.next_packet() {
                Ok(Some(p)) => p,
                Ok(None) => return StreamError::Ended,
                Err(SymphoniaError::IoError(e))
                    if e.kind() == std::io::ErrorKind::UnexpectedEof =>
                {
                    return StreamError::Ended;
                }
                // A chained Ogg stream (a new programme) or junk the demuxer cannot get
                // past: start again on what follows.
                Err(_) => break,
            };
            if packet.track_id != track_id {
                continue;
            }
            let Ok(buf) = decoder.decode(&packet) else {
                // A damaged packet (often the first after joining mid-stream): skip it,
                // unless the stream has stopped being audio that decodes.
                if without_audio(last_audio_at) > MAX_BYTES_WITHOUT_AUDIO {
                    return StreamError::NotAudio(format!(
                        "{} bytes without decodable audio",
                        without_audio(last_audio_at)
                    ));
                }
                continue;
            };
            let rate = buf.spec().rate();
            let channels = buf.spec().channels().count();
            if channels == 0 || !(8_000..=96_000).contains(&rate) {
                continue;
            }
            buf.copy_to_vec_interleaved(&mut scratch);
            if scratch.is_empty() {
                continue;
            }
            mono.clear();
            let scale = 1.0 / channels as f32;
            mono.extend(scratch.chunks_exact(channels).map(|frame| {
                let s = frame.iter().sum::<f32>() * scale;
                if s.is_finite() {
                    s.clamp(-1.0, 1.0)
                } else {
                    0.0
                }
            }));
            reprobes = 0;
            last_audio_at = consumed.load(Ordering::Relaxed);
            audio_at.store(last_audio_at, Ordering::Relaxed);
            if !sink(&mono, rate) {
                return StreamError::Stopped;
            }
        }
        mss = reader.into_inner();
        reprobes += 1;
        if reprobes > MAX_REPROBES || without_audio(last_audio_at) > MAX_BYTES_WITHOUT_AUDIO {
            return StreamError::NotAudio(format!(
                "{} bytes without decodable audio",
                without_audio(last_audio_at)
            ));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Feeds `bytes` from another thread in chunks of `chunk`, as a connection would,
    /// and decodes them: (samples decoded, rate, why it stopped).
    fn feed(bytes: Vec<u8>, chunk: usize, format: StreamFormat) -> (usize, u32, StreamError) {
        let (tx, source) = ByteChannel::new();
        let writer = std::thread::spawn(move || {
            for c in bytes.chunks(chunk) {
                if tx.send(Bytes::copy_from_slice(c)).is_err() {
                    return;
                }
            }
        });
        let (mut samples, mut rate) = (0, 0);
        let why = decode_stream(source, format, &mut |mono, r| {
            samples += mono.len();
            rate = r;
            true
        });
        writer.join().unwrap();
        (samples, rate, why)
    }

    fn fixture(name: &str) -> Vec<u8> {
        std::fs::read(
            std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
                .join("tests/fixtures")
                .join(name),
        )
        .unwrap()
    }

    #[test]
    fn an_mp3_stream_joined_mid_frame_resyncs_and_decodes_to_its_end() {
        let mp3 = fixture("announce-vi.mp3");
        // 10.2 s at 128 kb/s: from byte 40,001 on, about 7.7 s remain.
        let (samples, rate, why) = feed(mp3[40_001..].to_vec(), 1_000, StreamFormat::Mp3);
        assert_eq!(rate, 44_100);
        let seconds = samples as f64 / f64::from(rate);
        assert!((7.0..8.2).contains(&seconds), "{seconds:.2} s decoded");
        assert_eq!(why, StreamError::Ended);
    }

    #[test]
    fn an_ogg_vorbis_stream_decodes_in_small_chunks() {
        let (samples, rate, why) = feed(fixture("announce-vi.ogg"), 333, StreamFormat::Ogg);
        assert!(
            rate > 0 && samples as f64 / f64::from(rate) > 9.0,
            "{samples} at {rate}"
        );
        assert_eq!(why, StreamError::Ended);
    }

    #[test]
    fn a_page_or_junk_in_place_of_audio_is_refused_within_a_bounded_input() {
        let page = b"<html><body>Service Unavailable</body></html>".repeat(4000);
        let (samples, _, why) = feed(page, 1_000, StreamFormat::Mp3);
        assert_eq!(samples, 0);
        assert!(matches!(why, StreamError::NotAudio(_)), "{why:?}");
        // Audio that turns into junk: the audio decodes, then the junk is refused.
        let mut mixed = fixture("announce-vi.mp3")[..40_000].to_vec();
        mixed.extend(std::iter::repeat_n(0x55u8, 400_000));
        let (samples, _, why) = feed(mixed, 4_096, StreamFormat::Mp3);
        assert!(samples > 44_100, "{samples}");
        assert!(matches!(why, StreamError::NotAudio(_)), "{why:?}");
    }

    #[test]
    fn content_types_map_to_formats_and_markup_is_not_audio() {
        assert_eq!(
            StreamFormat::from_content_type("audio/mpeg"),
            Some(StreamFormat::Mp3)
        );
        assert_eq!(
            StreamFormat::from_content_type("audio/aacp; charset=x"),
            Some(StreamFormat::Aac)
        );
        assert_eq!(
            StreamFormat::from_content_type("application/ogg"),
            Some(StreamFormat::Ogg)
        );
        assert_eq!(
            StreamFormat::from_content_type("text/html; charset=utf-8"),
            None
        );
        assert!(looks_like_text(b"\r\n  <!DOCTYPE html><html>"));
        assert!(looks_like_text(b"<HTML><body>404</body>"));
        assert!(!looks_like_text(b"\xff\xfb\x90\x64"));
        assert!(!looks_like_text(b"OggS\x00\x02"));
    }
}
