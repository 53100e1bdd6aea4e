//! Every upload format the issue lists, decoded from `tests/fixtures/` by
//! `loaxa::media::decode_file` and uploaded through the real daemon: each must report its
//! format, rate, channels, duration and loudness as ffmpeg sees them, and every broken file must
//! be refused with a reason. Also checks that hostile headers do not make the decoder allocate
//! what they declare.

mod common;

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::path::Path;

use common::{fixture, spawn_app};
use loaxa::media::{DecodeError, DecodeLimits, decode, decode_file, measure};

/// What a fixture is. Reference figures come from ffmpeg 6 on the fixture itself:
/// - `duration_ms`: `ffprobe -show_entries stream=duration`. For MP3 ffprobe reports the
///   container length, which includes the encoder delay and padding that LAME's gapless header
///   tells the decoder to drop (45 ms on a 1 s clip); there the reference is what ffmpeg decodes
///   after trimming, `ffmpeg -i X -f f32le - | wc -c` / 4 / rate.
/// - `lufs`: integrated loudness from `ffmpeg -i X -af ebur128 -f null -`. We measure the mono
///   mix, so for stereo files the reference is `-af 'pan=mono|c0=0.5*c0+0.5*c1,ebur128'`
///   (ffmpeg's own stereo figure, which sums the channels' power, is given in a comment).
///   `None`: shorter than one 400 ms gating block, so there is no integrated loudness.
struct Expected {
    name: &'static str,
    format: &'static str,
    codec: &'static str,
    rate: u32,
    channels: u16,
    duration_ms: f64,
    lufs: Option<f64>,
}

const ANNOUNCEMENTS: &[Expected] = &[
    Expected {
        name: "announce-vi-u8.wav",
        format: "wav",
        codec: "pcm_u8",
        rate: 16_000,
        channels: 1,
        duration_ms: 1000.0,
        lufs: Some(-20.4),
    },
    Expected {
        name: "announce-vi-f32.wav",
        format: "wav",
        codec: "pcm_f32le",
        rate: 16_000,
        channels: 1,
        duration_ms: 600.0,
        lufs: Some(-20.9),
    },
    Expected {
        // The last 2041-frame ADPCM block is padded with silence: 16328 frames, as ffprobe says.
        name: "announce-vi-ima-adpcm.wav",
        format: "wav",
        codec: "adpcm_ima_wav",
        rate: 16_000,
        channels: 1,
        duration_ms: 1020.5,
        lufs: Some(-20.4),
    },
    Expected {
        name: "announce-vi-8k.wav",
        format: "wav",
        codec: "pcm_s16le",
        rate: 8_000,
        channels: 1,
        duration_ms: 1000.0,
        lufs: Some(-20.4),
    },
    Expected {
        name: "announce-vi-96k-stereo.wav",
        format: "wav",
        codec: "pcm_s16le",
        rate: 96_000,
        channels: 2,
        duration_ms: 100.0,
        lufs: None,
    },
    Expected {
        name: "announce-vi-48k-24bit-stereo.wav",
        format: "wav",
        codec: "pcm_s24le",
        rate: 48_000,
        channels: 2,
        duration_ms: 2000.0,
        // ffmpeg's stereo figure: -17.5 LUFS (both channels carry the same signal, +3 dB).
        lufs: Some(-20.6),
    },
    Expected {
        // ffprobe: 1.044898 s by container; 44100 frames after the gapless trim.
        name: "announce-vi-id3v1.mp3",
        format: "mp3",
        codec: "mp3",
        rate: 44_100,
        channels: 1,
        duration_ms: 1000.0,
        lufs: Some(-20.9),
    },
    Expected {
        // ffprobe: 1.044898 s by container; 44100 frames after the gapless trim.
        name: "announce-vi-vbr-1s.mp3",
        format: "mp3",
        codec: "mp3",
        rate: 44_100,
        channels: 1,
        duration_ms: 1000.0,
        lufs: Some(-20.5),
    },
    Expected {
        // ffprobe: 10.240 s by container; 449451 frames after the gapless trim.
        name: "announce-vi.mp3",
        format: "mp3",
        codec: "mp3",
        rate: 44_100,
        channels: 2,
        duration_ms: 10_191.63,
        // ffmpeg's stereo figure: -22.2 LUFS.
        lufs: Some(-25.2),
    },
    Expected {
        // ffprobe 1.000000 s, from the MP4 edit list that hides the AAC priming and padding.
        name: "announce-vi-1s.m4a",
        format: "mp4",
        codec: "aac",
        rate: 44_100,
        channels: 1,
        duration_ms: 1000.0,
        lufs: Some(-20.6),
    },
    Expected {
        name: "announce-vi.flac",
        format: "flac",
        codec: "flac",
        rate: 22_050,
        channels: 1,
        duration_ms: 10_191.655,
        lufs: Some(-21.7),
    },
    Expected {
        name: "announce-vi-quiet.flac",
        format: "flac",
        codec: "flac",
        rate: 16_000,
        channels: 1,
        duration_ms: 10_191.625,
        lufs: Some(-34.7),
    },
    Expected {
        name: "announce-vi-loud.flac",
        format: "flac",
        codec: "flac",
        rate: 16_000,
        channels: 1,
        duration_ms: 10_191.625,
        lufs: Some(-14.9),
    },
    Expected {
        name: "announce-vi.ogg",
        format: "ogg",
        codec: "vorbis",
        rate: 22_050,
        channels: 1,
        duration_ms: 10_191.655,
        lufs: Some(-21.7),
    },
];

/// Broken uploads, the status they get and words their problem detail must contain.
const BROKEN: &[(&str, u16, &str)] = &[
    ("broken-empty.mp3", 422, "the file is empty"),
    ("broken-truncated.mp3", 422, "the file ends early"),
    ("broken-random.wav", 415, "not in a recognised audio format"),
    ("broken-text.mp3", 415, "not in a recognised audio format"),
    ("broken-header-only.wav", 422, "contains no audio samples"),
];

/// One 20 ms frame: the tolerance on durations.
const DURATION_TOLERANCE_MS: f64 = 20.0;

/// Loudness tolerance against ffmpeg, in LU. ffmpeg prints one decimal, and lossy decoders
/// differ in the last bits.
const LOUDNESS_TOLERANCE_LU: f64 = 0.5;

fn fixtures_starting_with(prefix: &str) -> Vec<String> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures");
    let mut names: Vec<String> = std::fs::read_dir(&dir)
        .expect("tests/fixtures")
        .filter_map(|e| e.ok()?.file_name().into_string().ok())
        .filter(|n| n.starts_with(prefix))
        .collect();
    names.sort();
    names
}

fn expected(name: &str) -> &'static Expected {
    ANNOUNCEMENTS
        .iter()
        .find(|e| e.name == name)
        .unwrap_or_else(|| panic!("{name} is in tests/fixtures but not in ANNOUNCEMENTS"))
}

fn extension(name: &str) -> Option<&str> {
    Path::new(name).extension().and_then(|e| e.to_str())
}

#[test]
fn every_announcement_fixture_is_listed_with_its_expected_figures() {
    let on_disk = fixtures_starting_with("announce-");
    let listed: Vec<&str> = ANNOUNCEMENTS.iter().map(|e| e.name).collect();
    for name in &on_disk {
        expected(name);
    }
    assert_eq!(on_disk.len(), listed.len(), "{listed:?} vs {on_disk:?}");
}

#[test]
fn each_format_decodes_from_its_file_with_the_right_rate_channels_duration_and_loudness() {
    let mut failures = Vec::new();
    for e in ANNOUNCEMENTS {
        let audio = match decode_file(&fixture(e.name), extension(e.name), Default::default()) {
            Ok(audio) => audio,
            Err(err) => {
                failures.push(format!("{}: {err}", e.name));
                continue;
            }
        };
        let got = (
            audio.format.as_str(),
            audio.codec.as_str(),
            audio.sample_rate,
            audio.channels,
        );
        if got != (e.format, e.codec, e.rate, e.channels) {
            failures.push(format!("{}: {got:?}", e.name));
        }
        let duration_ms = audio.mono.len() as f64 * 1000.0 / f64::from(audio.sample_rate);
        if (duration_ms - e.duration_ms).abs() > DURATION_TOLERANCE_MS {
            failures.push(format!(
                "{}: {duration_ms:.1} ms, ffprobe {} ms",
                e.name, e.duration_ms
            ));
        }
        let lufs = measure(&audio.mono, audio.sample_rate).map(|l| l.integrated_lufs);
        println!("{}: {duration_ms:.1} ms, {lufs:.2?} LUFS", e.name);
        match (lufs, e.lufs) {
            (None, None) => {}
            (Some(got), Some(want)) if (got - want).abs() <= LOUDNESS_TOLERANCE_LU => {}
            (got, want) => failures.push(format!(
                "{}: loudness {got:?} LUFS, ffmpeg {want:?}",
                e.name
            )),
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn the_loudness_fixtures_stored_as_flac_hold_the_shared_wav_samples_at_their_levels() {
    // The shared announce-vi-{quiet,loud}.wav are 16-bit PCM; their FLAC copies are lossless,
    // so every sample is a multiple of 1/32768 and the levels are ffmpeg's -34.7 and -14.9.
    for (name, lufs) in [
        ("announce-vi-quiet.flac", -34.7),
        ("announce-vi-loud.flac", -14.9),
    ] {
        let audio = decode_file(&fixture(name), Some("flac"), Default::default()).unwrap();
        assert_eq!(audio.mono.len(), 163_066, "{name}");
        assert!(
            audio
                .mono
                .iter()
                .all(|s| (s * 32768.0).fract() == 0.0 && (-1.0..1.0).contains(s)),
            "{name}: not 16-bit samples"
        );
        let measured = measure(&audio.mono, audio.sample_rate).unwrap();
        assert!(
            (measured.integrated_lufs - lufs).abs() <= LOUDNESS_TOLERANCE_LU,
            "{name}: {measured:?}"
        );
    }
}

#[test]
fn stereo_is_measured_on_the_mono_mix() {
    // The 96 kHz fixture's right channel is the left at half amplitude, so the mix is 3/4 of
    // the left channel: compare against our own mix of the two channels.
    let audio = decode_file(
        &fixture("announce-vi-96k-stereo.wav"),
        Some("wav"),
        Default::default(),
    )
    .unwrap();
    assert_eq!(audio.mono.len(), 9_600);
    let data = std::fs::read(fixture("announce-vi-96k-stereo.wav")).unwrap();
    let pcm = &data[data.len() - 9_600 * 4..];
    for (i, frame) in pcm.chunks_exact(4).enumerate() {
        let left = f32::from(i16::from_le_bytes([frame[0], frame[1]])) / 32768.0;
        let right = f32::from(i16::from_le_bytes([frame[2], frame[3]])) / 32768.0;
        assert!(
            (audio.mono[i] - (left + right) / 2.0).abs() < 1e-6,
            "frame {i}"
        );
    }
}

#[test]
fn broken_fixtures_give_the_same_errors_from_a_file_as_from_bytes() {
    for name in fixtures_starting_with("broken-") {
        let ext = extension(&name);
        let from_file = decode_file(&fixture(&name), ext, Default::default()).unwrap_err();
        let bytes = std::fs::read(fixture(&name)).unwrap();
        let from_bytes = decode(&bytes, ext, Default::default()).unwrap_err();
        assert_eq!(from_file, from_bytes, "{name}");
    }
}

#[tokio::test]
async fn every_announcement_fixture_uploads_and_reports_what_it_is() {
    let app = spawn_app().await;
    let mut failures = Vec::new();
    for name in fixtures_starting_with("announce-") {
        let e = expected(&name);
        let a = app.upload_ok(&fixture(&name)).await;
        let got = (
            a["format"].as_str().unwrap_or_default(),
            a["codec"].as_str().unwrap_or_default(),
            a["sample_rate"].as_u64(),
            a["channels"].as_u64(),
        );
        let want = (
            e.format,
            e.codec,
            Some(u64::from(e.rate)),
            Some(u64::from(e.channels)),
        );
        if got != want {
            failures.push(format!("{name}: {got:?}, expected {want:?}"));
        }
        let duration_ms = a["duration_ms"].as_f64().unwrap_or(f64::NAN);
        // The answer is rounded to the millisecond: allow that half millisecond too.
        if (duration_ms - e.duration_ms).abs() > DURATION_TOLERANCE_MS + 0.5 {
            failures.push(format!(
                "{name}: {duration_ms} ms, ffprobe {}",
                e.duration_ms
            ));
        }
        match (a["loudness_lufs"].as_f64(), e.lufs) {
            (None, None) => {}
            // The answer is rounded to 0.1 LU.
            (Some(got), Some(want)) if (got - want).abs() <= LOUDNESS_TOLERANCE_LU + 0.05 => {}
            (got, want) => failures.push(format!("{name}: loudness {got:?}, ffmpeg {want:?}")),
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[tokio::test]
async fn every_broken_fixture_is_refused_with_a_reason() {
    let app = spawn_app().await;
    let on_disk = fixtures_starting_with("broken-");
    assert_eq!(on_disk.len(), BROKEN.len(), "{on_disk:?}");
    for name in on_disk {
        let Some(&(_, status, reason)) = BROKEN.iter().find(|(n, _, _)| *n == name) else {
            panic!("{name} is in tests/fixtures but not in BROKEN");
        };
        let r = app.upload(&fixture(&name), "hỏng").await;
        assert_eq!(r.status().as_u16(), status, "{name}");
        let content_type = r
            .headers()
            .get("content-type")
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_string();
        assert_eq!(content_type, "application/problem+json", "{name}");
        let body: serde_json::Value = r.json().await.unwrap();
        let detail = body["detail"].as_str().unwrap_or_default();
        assert!(detail.contains(reason), "{name}: {body}");
    }
    assert_eq!(app.json_ok("/api/v1/audio").await, serde_json::json!([]));
}

/// Records the largest single allocation made by each thread, so a test can check what the
/// decoder asked for without other tests' allocations (each test runs on its own thread, and
/// decoding does not spawn threads).
struct LargestAllocation;

thread_local! {
    // const-initialised and without a destructor, so touching it never allocates: safe to
    // use from inside the allocator.
    static LARGEST: Cell<usize> = const { Cell::new(0) };
}

fn note(size: usize) {
    let _ = LARGEST.try_with(|largest| largest.set(largest.get().max(size)));
}

// SAFETY: every call is forwarded unchanged to the system allocator; the bookkeeping touches
// only a thread-local `Cell`.
unsafe impl GlobalAlloc for LargestAllocation {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        note(layout.size());
        // SAFETY: the caller's obligations are passed through.
        unsafe { System.alloc(layout) }
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        note(layout.size());
        // SAFETY: as above.
        unsafe { System.alloc_zeroed(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: as above.
        unsafe { System.dealloc(ptr, layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        note(new_size);
        // SAFETY: as above.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static ALLOCATOR: LargestAllocation = LargestAllocation;

fn with_field(data: &[u8], at: usize, value: &[u8]) -> Vec<u8> {
    let mut out = data.to_vec();
    out[at..at + value.len()].copy_from_slice(value);
    out
}

fn find(data: &[u8], needle: &[u8]) -> usize {
    data.windows(needle.len())
        .position(|w| w == needle)
        .unwrap_or_else(|| panic!("{needle:?} not found"))
}

#[test]
fn headers_declaring_huge_sizes_do_not_make_the_decoder_allocate_them() {
    // No limit on duration, so every declared length gets past the header check and the
    // decoder itself meets the lie.
    let unlimited = DecodeLimits {
        max_duration_s: u64::MAX,
    };
    let wav = std::fs::read(fixture("announce-vi-8k.wav")).unwrap();
    let f32_wav = std::fs::read(fixture("announce-vi-f32.wav")).unwrap();
    let mp3 = std::fs::read(fixture("announce-vi.mp3")).unwrap();
    let vbr = std::fs::read(fixture("announce-vi-vbr-1s.mp3")).unwrap();
    let m4a = std::fs::read(fixture("announce-vi-1s.m4a")).unwrap();
    let flac = std::fs::read(fixture("announce-vi.flac")).unwrap();
    let stsz = find(&m4a, b"stsz");
    let stts = find(&m4a, b"stts");
    let xing = find(&vbr, b"Xing");
    let cases = [
        (
            "WAV declaring 4 GB of data",
            with_field(&wav, 40, &(u32::MAX - 1).to_le_bytes()),
            "wav",
        ),
        (
            "WAV declaring 26 channels of 32-bit float at 96 kHz",
            with_field(
                &with_field(&f32_wav, 22, &26u16.to_le_bytes()),
                24,
                &96_000u32.to_le_bytes(),
            ),
            "wav",
        ),
        (
            "WAV declaring 255 channels at 96 kHz",
            with_field(
                &with_field(&wav, 22, &255u16.to_le_bytes()),
                24,
                &96_000u32.to_le_bytes(),
            ),
            "wav",
        ),
        (
            "MP3 whose ID3v2 tag claims 256 MB",
            with_field(&mp3[..20_000], 6, &[0x7F; 4]),
            "mp3",
        ),
        (
            "MP3 whose Xing header claims 4 billion frames",
            with_field(&vbr, xing + 8, &u32::MAX.to_be_bytes()),
            "mp3",
        ),
        (
            "M4A whose sample table claims 4 billion samples",
            with_field(&m4a, stsz + 12, &u32::MAX.to_be_bytes()),
            "m4a",
        ),
        (
            "M4A whose time table claims 4 billion samples",
            with_field(&m4a, stts + 12, &u32::MAX.to_be_bytes()),
            "m4a",
        ),
        (
            "FLAC declaring 2^36 samples",
            {
                let mut d = with_field(&flac, 22, &[0xFF; 4]);
                d[21] |= 0x0F;
                d
            },
            "flac",
        ),
    ];
    for (what, data, ext) in cases {
        LARGEST.with(|l| l.set(0));
        let result = decode(&data, Some(ext), unlimited);
        let largest = LARGEST.with(Cell::get);
        // The decoded samples of the largest fixture (10 s at 44.1 kHz, 1.8 MB) are the
        // biggest legitimate buffer; 16 MB is far from anything a header could ask for.
        assert!(
            largest < 16 << 20,
            "{what}: allocated {largest} bytes at once ({result:?})"
        );
        println!("{what}: {:?}, largest allocation {largest} B", result.err());
    }
}

#[test]
fn decode_errors_read_as_reasons() {
    assert_eq!(
        DecodeError::Io("No such file or directory (os error 2)".into()).to_string(),
        "the file could not be read (No such file or directory (os error 2))"
    );
}
