//! 16-bit PCM WAV files: a streaming writer whose header is valid on disk after every
//! write, and a reader for tests and tools. Plain file I/O only; no resampling, no clock.

use std::fs::File;
use std::io::{self, Write};
use std::path::Path;

/// Bytes before the first sample: RIFF header (12), `fmt ` chunk (24), `data` header (8).
const HEADER_LEN: u64 = 44;
/// The RIFF size field is a u32 counting everything after itself: 36 header bytes plus
/// the data. Past this the file would need RF64, so the writer refuses to grow.
const MAX_DATA_LEN: u32 = (u32::MAX - 36) & !1;

/// Appends mono 16-bit samples to a WAV file, rewriting the two size fields after each
/// append. Samples go to disk before the sizes that cover them, so a process killed at
/// any point leaves a playable file (the page cache survives SIGKILL; a power cut is not
/// covered, as there is no fsync).
pub struct WavWriter {
    file: File,
    sample_rate: u32,
    data_len: u32,
    scratch: Vec<u8>,
}

impl WavWriter {
    /// Creates/truncates `path` and writes a 16-bit PCM mono header for `sample_rate`.
    pub fn create(path: &Path, sample_rate: u32) -> io::Result<Self> {
        let byte_rate = sample_rate.checked_mul(2).filter(|_| sample_rate > 0);
        let Some(byte_rate) = byte_rate else {
            let message = format!("unusable WAV sample rate {sample_rate}");
            return Err(io::Error::new(io::ErrorKind::InvalidInput, message));
        };
        let mut header = Vec::with_capacity(HEADER_LEN as usize);
        header.extend_from_slice(b"RIFF");
        header.extend_from_slice(&36u32.to_le_bytes());
        header.extend_from_slice(b"WAVEfmt ");
        header.extend_from_slice(&16u32.to_le_bytes());
        header.extend_from_slice(&1u16.to_le_bytes()); // WAVE_FORMAT_PCM
        header.extend_from_slice(&1u16.to_le_bytes()); // mono
        header.extend_from_slice(&sample_rate.to_le_bytes());
        header.extend_from_slice(&byte_rate.to_le_bytes());
        header.extend_from_slice(&2u16.to_le_bytes()); // block align
        header.extend_from_slice(&16u16.to_le_bytes()); // bits per sample
        header.extend_from_slice(b"data");
        header.extend_from_slice(&0u32.to_le_bytes());
        let mut file = File::create(path)?;
        file.write_all(&header)?;
        Ok(Self {
            file,
            sample_rate,
            data_len: 0,
            scratch: Vec::new(),
        })
    }

    pub fn sample_rate(&self) -> u32 {
        self.sample_rate
    }

    /// Appends `samples`, then rewrites the RIFF and data sizes. Fails without writing
    /// anything if the file would pass the 4 GiB WAV limit.
    pub fn write(&mut self, samples: &[i16]) -> io::Result<()> {
        let Some(data_len) = grown_len(self.data_len, samples.len()) else {
            return Err(io::Error::new(
                io::ErrorKind::FileTooLarge,
                "WAV file reached its 4 GiB limit",
            ));
        };
        self.scratch.clear();
        self.scratch
            .extend(samples.iter().flat_map(|s| s.to_le_bytes()));
        write_at(
            &mut self.file,
            HEADER_LEN + u64::from(self.data_len),
            &self.scratch,
        )?;
        write_at(&mut self.file, 4, &(36 + data_len).to_le_bytes())?;
        write_at(&mut self.file, 40, &data_len.to_le_bytes())?;
        self.data_len = data_len;
        Ok(())
    }

    pub fn samples_written(&self) -> u64 {
        u64::from(self.data_len / 2)
    }
}

/// The data length after appending `samples`, or `None` past the WAV limit.
fn grown_len(data_len: u32, samples: usize) -> Option<u32> {
    let added = u32::try_from(samples).ok()?.checked_mul(2)?;
    data_len
        .checked_add(added)
        .filter(|&len| len <= MAX_DATA_LEN)
}

#[cfg(unix)]
fn write_at(file: &mut File, offset: u64, bytes: &[u8]) -> io::Result<()> {
    std::os::unix::fs::FileExt::write_all_at(file, bytes, offset)
}

#[cfg(not(unix))]
fn write_at(file: &mut File, offset: u64, bytes: &[u8]) -> io::Result<()> {
    use std::io::{Seek, SeekFrom};
    file.seek(SeekFrom::Start(offset))?;
    file.write_all(bytes)
}

/// Reads a 16-bit PCM mono or stereo WAV: `(sample_rate, channels, interleaved samples)`.
/// Unknown chunks (LIST, fact, ...) are skipped. The `data` chunk ends the parse: whatever
/// follows it is trailing metadata or samples a killed writer appended past its last size
/// update, and neither belongs to the audio the header declares.
pub fn read(path: &Path) -> io::Result<(u32, u16, Vec<i16>)> {
    let bytes = std::fs::read(path)?;
    let mut rest = bytes.as_slice();
    let riff = take(&mut rest, 12).map_err(|_| invalid("not a RIFF/WAVE file"))?;
    if riff[..4] != *b"RIFF" || riff[8..] != *b"WAVE" {
        return Err(invalid("not a RIFF/WAVE file"));
    }
    let mut format = None;
    loop {
        if rest.is_empty() {
            return Err(invalid("WAV file has no data chunk"));
        }
        let id = take(&mut rest, 4)?;
        let len = u32_at(take(&mut rest, 4)?, 0) as usize;
        let body = take(&mut rest, len)?;
        match id {
            b"fmt " => format = Some(parse_fmt(body)?),
            b"data" => {
                let (sample_rate, channels) =
                    format.ok_or_else(|| invalid("data chunk before fmt chunk"))?;
                if !len.is_multiple_of(2 * usize::from(channels)) {
                    return Err(invalid("data chunk does not hold whole sample frames"));
                }
                let samples = body
                    .chunks_exact(2)
                    .map(|b| i16::from_le_bytes([b[0], b[1]]))
                    .collect();
                return Ok((sample_rate, channels, samples));
            }
            _ => {}
        }
        // Chunks are padded to an even length; a missing pad at the end of file is harmless.
        if len % 2 == 1 && !rest.is_empty() {
            take(&mut rest, 1)?;
        }
    }
}

/// `(sample_rate, channels)` from a `fmt ` chunk, if it describes 16-bit PCM mono/stereo.
fn parse_fmt(body: &[u8]) -> io::Result<(u32, u16)> {
    if body.len() < 16 {
        return Err(invalid("fmt chunk too short"));
    }
    let tag = u16_at(body, 0);
    // WAVE_FORMAT_EXTENSIBLE carries the real format in the first two bytes of its GUID.
    let pcm = tag == 1 || (tag == 0xFFFE && body.len() >= 26 && u16_at(body, 24) == 1);
    let (channels, sample_rate, bits) = (u16_at(body, 2), u32_at(body, 4), u16_at(body, 14));
    if !pcm || bits != 16 {
        return Err(invalid(format!(
            "unsupported WAV encoding (format tag {tag:#x}, {bits} bits); expected 16-bit PCM"
        )));
    }
    if !(1..=2).contains(&channels) || sample_rate == 0 {
        return Err(invalid(format!(
            "unsupported WAV layout: {channels} channels at {sample_rate} Hz"
        )));
    }
    Ok((sample_rate, channels))
}

/// Splits `n` bytes off the front of `rest`, or fails on a truncated file.
fn take<'a>(rest: &mut &'a [u8], n: usize) -> io::Result<&'a [u8]> {
    if rest.len() < n {
        return Err(io::Error::new(
            io::ErrorKind::UnexpectedEof,
            "truncated WAV file",
        ));
    }
    let (head, tail) = rest.split_at(n);
    *rest = tail;
    Ok(head)
}

fn u16_at(bytes: &[u8], at: usize) -> u16 {
    u16::from_le_bytes([bytes[at], bytes[at + 1]])
}

fn u32_at(bytes: &[u8], at: usize) -> u32 {
    u32::from_le_bytes([bytes[at], bytes[at + 1], bytes[at + 2], bytes[at + 3]])
}

fn invalid(message: impl Into<String>) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, message.into())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tone(len: usize) -> Vec<i16> {
        (0..len)
            .map(|i| ((i as f32 * 0.05).sin() * 20_000.0) as i16)
            .collect()
    }

    /// A hand-built WAV: `fmt ` for 16-bit PCM, then `chunks` as given.
    fn wav_bytes(channels: u16, rate: u32, chunks: &[(&[u8; 4], Vec<u8>)]) -> Vec<u8> {
        let mut fmt = Vec::new();
        fmt.extend_from_slice(&1u16.to_le_bytes());
        fmt.extend_from_slice(&channels.to_le_bytes());
        fmt.extend_from_slice(&rate.to_le_bytes());
        fmt.extend_from_slice(&(rate * 2 * u32::from(channels)).to_le_bytes());
        fmt.extend_from_slice(&(2 * channels).to_le_bytes());
        fmt.extend_from_slice(&16u16.to_le_bytes());
        let mut body = b"WAVE".to_vec();
        for (id, data) in std::iter::once((b"fmt ", fmt)).chain(chunks.iter().cloned()) {
            body.extend_from_slice(id);
            body.extend_from_slice(&(data.len() as u32).to_le_bytes());
            body.extend_from_slice(&data);
            if data.len() % 2 == 1 {
                body.push(0);
            }
        }
        let mut file = b"RIFF".to_vec();
        file.extend_from_slice(&(body.len() as u32).to_le_bytes());
        file.extend_from_slice(&body);
        file
    }

    fn le(samples: &[i16]) -> Vec<u8> {
        samples.iter().flat_map(|s| s.to_le_bytes()).collect()
    }

    #[test]
    fn written_samples_read_back_unchanged() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("out.wav");
        let samples = tone(16_000);
        let mut writer = WavWriter::create(&path, 16_000).unwrap();
        for frame in samples.chunks(320) {
            writer.write(frame).unwrap();
        }
        assert_eq!(writer.samples_written(), 16_000);
        assert_eq!(writer.sample_rate(), 16_000);
        assert_eq!(read(&path).unwrap(), (16_000, 1, samples));
    }

    #[test]
    fn the_file_is_a_valid_wav_after_every_write() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("live.wav");
        let mut writer = WavWriter::create(&path, 8_000).unwrap();
        assert_eq!(read(&path).unwrap(), (8_000, 1, vec![]));
        let samples = tone(800);
        for (n, frame) in samples.chunks(160).enumerate() {
            writer.write(frame).unwrap();
            // No flush, no drop: what another process sees right now.
            let expected = samples[..(n + 1) * 160].to_vec();
            assert_eq!(read(&path).unwrap(), (8_000, 1, expected));
            let bytes = std::fs::read(&path).unwrap();
            assert_eq!(u32_at(&bytes, 4) as usize, bytes.len() - 8);
        }
    }

    #[test]
    fn samples_past_the_last_size_update_are_ignored() {
        // What a writer killed between its sample write and its size update leaves.
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("killed.wav");
        let mut writer = WavWriter::create(&path, 8_000).unwrap();
        writer.write(&[1, 2, 3]).unwrap();
        drop(writer);
        let mut bytes = std::fs::read(&path).unwrap();
        bytes.extend_from_slice(&le(&[4, 5, 6]));
        std::fs::write(&path, bytes).unwrap();
        assert_eq!(read(&path).unwrap(), (8_000, 1, vec![1, 2, 3]));
    }

    #[test]
    fn the_writer_refuses_to_pass_the_4_gib_limit() {
        assert_eq!(grown_len(0, 160), Some(320));
        assert_eq!(grown_len(MAX_DATA_LEN - 2, 1), Some(MAX_DATA_LEN));
        assert_eq!(grown_len(MAX_DATA_LEN - 2, 2), None);
        assert_eq!(grown_len(0, usize::MAX), None);
        assert!(36 + u64::from(MAX_DATA_LEN) <= u64::from(u32::MAX));
    }

    #[test]
    fn a_zero_sample_rate_is_rejected() {
        let dir = tempfile::tempdir().unwrap();
        let error = WavWriter::create(&dir.path().join("x.wav"), 0)
            .err()
            .unwrap();
        assert_eq!(error.kind(), io::ErrorKind::InvalidInput);
    }

    #[test]
    fn a_stereo_file_with_list_chunks_and_odd_padding_reads() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("ffmpeg.wav");
        let list = b"INFOISFT\x05\x00\x00\x00Lavf\x00".to_vec(); // odd length: padded
        let data = le(&[1, -1, 2, -2]);
        let trailer = b"id3 tag".to_vec();
        let bytes = wav_bytes(
            2,
            44_100,
            &[(b"LIST", list), (b"data", data), (b"id3 ", trailer)],
        );
        std::fs::write(&path, bytes).unwrap();
        assert_eq!(read(&path).unwrap(), (44_100, 2, vec![1, -1, 2, -2]));
    }

    #[test]
    fn truncated_and_foreign_files_are_errors() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("bad.wav");
        let good = wav_bytes(1, 8_000, &[(b"data", le(&[1, 2, 3, 4]))]);
        let mut float = good.clone();
        float[20] = 3; // WAVE_FORMAT_IEEE_FLOAT
        let mut eight_bit = good.clone();
        eight_bit[34] = 8;
        let no_data = wav_bytes(1, 8_000, &[(b"LIST", b"INFO".to_vec())]);
        let cases: Vec<(&str, Vec<u8>)> = vec![
            ("empty", vec![]),
            (
                "garbage",
                b"this is not a wav file at all, not even close".to_vec(),
            ),
            ("header only", good[..12].to_vec()),
            ("cut in fmt", good[..30].to_vec()),
            ("cut in data", good[..good.len() - 1].to_vec()),
            ("float", float),
            ("8 bit", eight_bit),
            ("no data chunk", no_data),
            ("data before fmt", {
                let mut bytes = b"RIFF\x10\x00\x00\x00WAVEdata\x02\x00\x00\x00".to_vec();
                bytes.extend_from_slice(&[1, 0]);
                bytes
            }),
        ];
        for (name, bytes) in cases {
            std::fs::write(&path, &bytes).unwrap();
            let error = read(&path)
                .err()
                .unwrap_or_else(|| panic!("{name} was accepted"));
            assert!(
                matches!(
                    error.kind(),
                    io::ErrorKind::InvalidData | io::ErrorKind::UnexpectedEof
                ),
                "{name}: {error}"
            );
        }
    }

    #[test]
    fn a_missing_file_is_a_not_found_error() {
        let dir = tempfile::tempdir().unwrap();
        let error = read(&dir.path().join("absent.wav")).err().unwrap();
        assert_eq!(error.kind(), io::ErrorKind::NotFound);
    }
}
