//! Property test of the decode path against hostile input: random bytes, and the real fixtures
//! bit-flipped, cut, spliced and with their header fields set to absurd values. Every input must
//! come back as `Ok` or `Err` — no panic, no hang, no giant allocation. Deterministic (a fixed
//! seed) and bounded (about 300 inputs) so that it runs in every `cargo test`.

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::mpsc;
use std::time::Duration;

use super::decode::{DecodeError, DecodeLimits, decode};

/// The seed of the whole run. `LOAXA_FUZZ_SEED=<n>` explores another one; a failure names the
/// seed and the input.
const SEED: u64 = 0x10A7_A5EE_D000_0001;

fn seed() -> u64 {
    std::env::var("LOAXA_FUZZ_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(SEED)
}

/// Longest one decode may take before it counts as a hang. Inputs are at most ~200 KB and the
/// slowest legitimate one decodes in well under a second in a debug build; 5 s leaves room for
/// a loaded 2-core CI machine.
const HANG_AFTER: Duration = Duration::from_secs(5);

/// splitmix64: tiny, fast and fixed forever, unlike a library generator whose stream may change
/// between versions and silently change what this test covers.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform-enough in `0..n`; `n` must be non-zero.
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }

    fn bytes(&mut self, len: usize) -> Vec<u8> {
        (0..len).map(|_| self.next() as u8).collect()
    }
}

/// One input and how it was made, for the failure message.
struct Case {
    what: String,
    hint: Option<&'static str>,
    data: Vec<u8>,
    limits: DecodeLimits,
}

/// A limit well under the default, as a config may set it, so the length checks run too.
const LIMITS: DecodeLimits = DecodeLimits {
    max_duration_s: 600,
};

/// No length limit: a header field set to something absurd often declares a huge length,
/// which the limit would refuse before symphonia's demuxer ever met the field. The inputs are
/// small real files, so what they really decode to stays small.
const UNLIMITED: DecodeLimits = DecodeLimits {
    max_duration_s: u64::MAX,
};

fn fixture(name: &str) -> Vec<u8> {
    let path = format!("{}/tests/fixtures/{name}", env!("CARGO_MANIFEST_DIR"));
    std::fs::read(&path).unwrap_or_else(|e| panic!("reading {path}: {e}"))
}

/// Offset of the first occurrence of `needle` in `haystack`.
fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

/// A copy of `data` with `value` written at `at` (nothing if the field does not fit).
fn with_field(data: &[u8], at: usize, value: &[u8]) -> Vec<u8> {
    let mut out = data.to_vec();
    if let Some(field) = out.get_mut(at..at + value.len()) {
        field.copy_from_slice(value);
    }
    out
}

fn random_inputs(rng: &mut Rng, cases: &mut Vec<Case>) {
    for len in [
        1, 2, 3, 4, 7, 8, 12, 44, 45, 100, 1000, 4096, 16_384, 65_536,
    ] {
        for hint in [None, Some("wav"), Some("mp3")] {
            cases.push(Case {
                limits: LIMITS,
                what: format!("{len} random bytes"),
                hint,
                data: rng.bytes(len),
            });
        }
    }
    // Random bodies behind each container's magic, so the demuxers (not just the probe) see
    // garbage.
    let magics: [(&[u8], &str); 7] = [
        (b"RIFF\xff\xff\xff\xffWAVEfmt ", "wav"),
        (b"ID3\x03\x00\x00\x00\x00\x00\x00", "mp3"),
        (b"\xff\xfb\x90\x64", "mp3"),
        (b"fLaC\x00\x00\x00\x22", "flac"),
        (b"OggS\x00\x02", "ogg"),
        (b"\x00\x00\x00\x20ftypM4A \x00\x00\x00\x00", "m4a"),
        (b"FORM\x00\x00\x10\x00AIFFCOMM", "aiff"),
    ];
    for (magic, hint) in magics {
        for len in [0, 16, 200, 5000] {
            let mut data = magic.to_vec();
            data.extend(rng.bytes(len));
            cases.push(Case {
                limits: LIMITS,
                what: format!("{hint} magic + {len} random bytes"),
                hint: Some(hint),
                data,
            });
        }
    }
}

/// Generic damage to a real file: flips, cuts, insertions, deletions and overwrites.
fn mutations(rng: &mut Rng, name: &str, hint: &'static str, data: &[u8], n: usize) -> Vec<Case> {
    let mut out = Vec::new();
    for i in 0..n {
        let mut d = data.to_vec();
        let mut limits = LIMITS;
        let what = match i % 7 {
            0 => {
                let flips = [1, 8, 64][rng.below(3)];
                for _ in 0..flips {
                    let at = rng.below(d.len());
                    d[at] ^= 1 << rng.below(8);
                }
                format!("{name} with {flips} bits flipped")
            }
            1 => {
                let at = rng.below(d.len());
                d.truncate(at);
                format!("{name} cut at {at}")
            }
            2 => {
                let (at, len) = (rng.below(d.len()), 1 + rng.below(512));
                let junk = rng.bytes(len);
                d.splice(at..at, junk);
                format!("{name} with {len} bytes inserted at {at}")
            }
            3 => {
                let at = rng.below(d.len());
                let end = (at + 1 + rng.below(2048)).min(d.len());
                d.drain(at..end);
                format!("{name} with {at}..{end} deleted")
            }
            4 => {
                // Damage near the start, where the headers are.
                let at = rng.below(d.len().min(256));
                let end = (at + 1 + rng.below(16)).min(d.len());
                let junk = rng.bytes(end - at);
                d[at..end].copy_from_slice(&junk);
                format!("{name} with header bytes {at}..{end} overwritten")
            }
            5 => {
                let at = rng.below(d.len());
                let end = (at + 1 + rng.below(4096)).min(d.len());
                d[at..end].fill([0x00, 0xFF][rng.below(2)]);
                format!("{name} with {at}..{end} filled")
            }
            _ => {
                // An extreme value in some header field we did not think to target; either
                // byte order, since containers differ. No limit, so a huge declared length
                // does not end the run before the demuxer meets it.
                let at = rng.below(d.len().min(1024).saturating_sub(4).max(1));
                let v = [0, 1, 0x7FFF_FFFF, 0x8000_0000, u32::MAX][rng.below(5)];
                let bytes = if rng.below(2) == 0 {
                    v.to_le_bytes()
                } else {
                    v.to_be_bytes()
                };
                if let Some(field) = d.get_mut(at..at + 4) {
                    field.copy_from_slice(&bytes);
                }
                limits = UNLIMITED;
                format!("{name} with {bytes:02x?} written at {at}")
            }
        };
        out.push(Case {
            limits,
            what,
            hint: Some(hint),
            data: d,
        });
    }
    out
}

/// WAV header fields set to the values that break naive readers: zero and huge sizes, rates
/// and channel counts.
fn wav_fields(name: &str, data: &[u8], cases: &mut Vec<Case>) {
    let (Some(fmt), Some(chunk)) = (find(data, b"fmt "), find(data, b"data")) else {
        panic!("{name}: no fmt or data chunk");
    };
    let body = fmt + 8;
    let u16s: [(&str, usize, &[u16]); 3] = [
        ("channels", 2, &[0, 255, u16::MAX]),
        ("block align", 12, &[0, 1, u16::MAX]),
        ("bits per sample", 14, &[0, 7, 64, u16::MAX]),
    ];
    for (field, offset, values) in u16s {
        for &v in values {
            cases.push(Case {
                limits: UNLIMITED,
                what: format!("{name} with {field} {v}"),
                hint: Some("wav"),
                data: with_field(data, body + offset, &v.to_le_bytes()),
            });
        }
    }
    let u32s: [(&str, usize, &[u32]); 4] = [
        ("sample rate", body + 4, &[0, 1, 96_001, u32::MAX]),
        ("byte rate", body + 8, &[0, u32::MAX]),
        ("data size", chunk + 4, &[0, 1, 0x7FFF_FFFF, u32::MAX - 1]),
        ("RIFF size", 4, &[0, u32::MAX]),
    ];
    for (field, at, values) in u32s {
        for &v in values {
            cases.push(Case {
                limits: UNLIMITED,
                what: format!("{name} with {field} {v}"),
                hint: Some("wav"),
                data: with_field(data, at, &v.to_le_bytes()),
            });
        }
    }
    if data.get(body..body + 2) == Some(&[0x11, 0x00]) {
        // IMA ADPCM: frames per block decides the decoder's buffer size.
        for v in [0u16, 1, 2, u16::MAX] {
            cases.push(Case {
                limits: UNLIMITED,
                what: format!("{name} with ADPCM frames per block {v}"),
                hint: Some("wav"),
                data: with_field(data, body + 18, &v.to_le_bytes()),
            });
        }
    }
    // 96 kHz with 255 channels: the largest per-frame buffer a WAV header can ask for.
    let wide = with_field(data, body + 2, &255u16.to_le_bytes());
    cases.push(Case {
        limits: UNLIMITED,
        what: format!("{name} claiming 255 channels at 96 kHz"),
        hint: Some("wav"),
        data: with_field(&wide, body + 4, &96_000u32.to_le_bytes()),
    });
}

/// MP3: the Xing/Info frame and byte counts and the LAME delay/padding set to extremes.
fn mp3_fields(name: &str, data: &[u8], cases: &mut Vec<Case>) {
    let Some(xing) = find(data, b"Xing").or_else(|| find(data, b"Info")) else {
        panic!("{name}: no Xing/Info header");
    };
    for (field, at) in [
        ("Xing frame count", xing + 8),
        ("Xing byte count", xing + 12),
    ] {
        for v in [0u32, 1, u32::MAX] {
            cases.push(Case {
                limits: UNLIMITED,
                what: format!("{name} with {field} {v}"),
                hint: Some("mp3"),
                data: with_field(data, at, &v.to_be_bytes()),
            });
        }
    }
    if data.starts_with(b"ID3") {
        // A syncsafe tag size of 256 MB in front of an 8 KB file.
        cases.push(Case {
            limits: UNLIMITED,
            what: format!("{name} with ID3v2 size 2^28-1"),
            hint: Some("mp3"),
            data: with_field(data, 6, &[0x7F; 4]),
        });
    }
    if let Some(lame) = find(data, b"LAME") {
        // 12 bits of delay then 12 of padding, 21 bytes into the LAME tag.
        cases.push(Case {
            limits: UNLIMITED,
            what: format!("{name} with LAME delay and padding 4095"),
            hint: Some("mp3"),
            data: with_field(data, lame + 21, &[0xFF, 0xFF, 0xFF]),
        });
    }
}

/// MP4: sample counts, timescales and edit lists set to extremes.
fn mp4_fields(name: &str, data: &[u8], cases: &mut Vec<Case>) {
    // (box, offset of the field from the box type, what it is); all full boxes, version 0.
    let fields: [(&str, isize, &str); 14] = [
        ("stsz", 12, "sample count"),
        ("stsz", 8, "sample size"),
        ("stco", 8, "chunk count"),
        ("stts", 8, "entry count"),
        ("stts", 12, "first sample count"),
        ("stsc", 8, "entry count"),
        ("mdhd", 16, "timescale"),
        ("mvhd", 16, "timescale"),
        ("elst", 8, "entry count"),
        ("elst", 16, "media time"),
        ("stsd", 8, "entry count"),
        ("mdat", -4, "box size"),
        ("moov", -4, "box size"),
        ("esds", 4, "version and flags"),
    ];
    for (kind, offset, field) in fields {
        let Some(at) = find(data, kind.as_bytes()) else {
            panic!("{name}: no {kind} box");
        };
        let at = at.saturating_add_signed(offset);
        for v in [0u32, u32::MAX] {
            cases.push(Case {
                limits: UNLIMITED,
                what: format!("{name} with {kind} {field} {v}"),
                hint: Some("m4a"),
                data: with_field(data, at, &v.to_be_bytes()),
            });
        }
    }
}

/// FLAC STREAMINFO: block sizes, rate, channels and total samples set to extremes.
fn flac_fields(name: &str, data: &[u8], cases: &mut Vec<Case>) {
    // "fLaC", a 4-byte block header, then STREAMINFO.
    let info = 8;
    let edits: [(&str, usize, &[u8]); 6] = [
        ("min and max block size 0", info, &[0, 0, 0, 0]),
        ("max block size 65535", info + 2, &[0xFF, 0xFF]),
        ("sample rate 0", info + 10, &[0, 0]),
        (
            "all-ones rate, channels and depth",
            info + 10,
            &[0xFF, 0xFF, 0xFF, 0xF0],
        ),
        (
            "total samples 2^36-1",
            info + 13,
            &[0x0F, 0xFF, 0xFF, 0xFF, 0xFF],
        ),
        ("total samples 0", info + 13, &[0x00, 0, 0, 0, 0]),
    ];
    for (what, at, value) in edits {
        let mut d = with_field(data, at, value);
        if what == "total samples 2^36-1" || what == "total samples 0" {
            // Keep the bits-per-sample nibble that shares the first byte.
            d[at] = (data[at] & 0xF0) | (value[0] & 0x0F);
        }
        cases.push(Case {
            limits: UNLIMITED,
            what: format!("{name} with {what}"),
            hint: Some("flac"),
            data: d,
        });
    }
}

/// Ogg Vorbis identification header: channels and rate set to extremes. The page CRC is left
/// stale, which is itself a case the reader must survive.
fn vorbis_fields(name: &str, data: &[u8], cases: &mut Vec<Case>) {
    let Some(ident) = find(data, b"\x01vorbis") else {
        panic!("{name}: no Vorbis identification header");
    };
    for (what, at, value) in [
        ("channels 0", ident + 11, vec![0]),
        ("channels 255", ident + 11, vec![255]),
        ("rate 0", ident + 12, 0u32.to_le_bytes().to_vec()),
        ("rate u32::MAX", ident + 12, u32::MAX.to_le_bytes().to_vec()),
    ] {
        cases.push(Case {
            limits: UNLIMITED,
            what: format!("{name} with Vorbis {what}"),
            hint: Some("ogg"),
            data: with_field(data, at, &value),
        });
    }
}

fn all_cases() -> Vec<Case> {
    let mut rng = Rng(seed());
    let mut cases = Vec::new();
    random_inputs(&mut rng, &mut cases);

    let wavs = [
        "announce-vi-u8.wav",
        "announce-vi-8k.wav",
        "announce-vi-f32.wav",
        "announce-vi-ima-adpcm.wav",
        "announce-vi-96k-stereo.wav",
    ];
    for name in wavs {
        let data = fixture(name);
        wav_fields(name, &data, &mut cases);
        cases.extend(mutations(&mut rng, name, "wav", &data, 14));
    }
    for name in ["announce-vi-id3v1.mp3", "announce-vi-vbr-1s.mp3"] {
        let data = fixture(name);
        mp3_fields(name, &data, &mut cases);
        cases.extend(mutations(&mut rng, name, "mp3", &data, 14));
    }
    // The first 8 KB of the long MP3: its ID3v2.3 tag, LAME header and the first frames.
    let mp3 = fixture("announce-vi.mp3");
    let head = &mp3[..8192.min(mp3.len())];
    mp3_fields("announce-vi.mp3 (first 8 KB)", head, &mut cases);
    let m4a = fixture("announce-vi-1s.m4a");
    mp4_fields("announce-vi-1s.m4a", &m4a, &mut cases);
    cases.extend(mutations(&mut rng, "announce-vi-1s.m4a", "m4a", &m4a, 21));
    // The long FLAC and Ogg are the only ones of their kind; fewer cuts keep the run short.
    let flac = fixture("announce-vi.flac");
    flac_fields("announce-vi.flac", &flac, &mut cases);
    cases.extend(mutations(&mut rng, "announce-vi.flac", "flac", &flac, 12));
    let ogg = fixture("announce-vi.ogg");
    vorbis_fields("announce-vi.ogg", &ogg, &mut cases);
    cases.extend(mutations(&mut rng, "announce-vi.ogg", "ogg", &ogg, 12));
    cases
}

/// Decodes one case on its own thread, so that a hang is seen (the thread is abandoned) and a
/// panic is caught and named.
fn run(case: &Case) -> Result<Result<(), DecodeError>, String> {
    let (tx, rx) = mpsc::channel();
    let (data, hint, limits) = (case.data.clone(), case.hint, case.limits);
    std::thread::spawn(move || {
        let result = catch_unwind(AssertUnwindSafe(|| {
            decode(&data, hint, limits).map(|audio| {
                // What callers rely on, checked for every input that decodes.
                assert!(audio.mono.iter().all(|s| (-1.0..=1.0).contains(s)));
                assert!((8_000..=96_000).contains(&audio.sample_rate));
                assert!(audio.channels > 0);
                assert!(!audio.mono.is_empty());
            })
        }));
        let _ = tx.send(result);
    });
    match rx.recv_timeout(HANG_AFTER) {
        // The decoder's own panic net caught something: still a bug worth knowing about.
        Ok(Ok(Err(DecodeError::DecoderFailed(why)))) => Err(format!("symphonia panicked: {why}")),
        Ok(Ok(result)) => Ok(result),
        Ok(Err(panic)) => {
            let why = panic
                .downcast_ref::<&str>()
                .map(|s| s.to_string())
                .or_else(|| panic.downcast_ref::<String>().cloned())
                .unwrap_or_default();
            Err(format!("panicked: {why}"))
        }
        Err(mpsc::RecvTimeoutError::Timeout) => Err(format!("still running after {HANG_AFTER:?}")),
        Err(mpsc::RecvTimeoutError::Disconnected) => Err("the decode thread vanished".into()),
    }
}

#[test]
fn hostile_inputs_are_answered_with_ok_or_err_never_a_panic_or_hang() {
    let cases = all_cases();
    assert!((250..=400).contains(&cases.len()), "{} cases", cases.len());
    let mut failures = Vec::new();
    let mut outcomes = std::collections::BTreeMap::<String, usize>::new();
    for case in &cases {
        match run(case) {
            Ok(result) => {
                let outcome = match result {
                    Ok(()) => "ok".to_string(),
                    Err(e) => format!("{e:?}")
                        .split(['(', ' '])
                        .next()
                        .unwrap_or("")
                        .into(),
                };
                *outcomes.entry(outcome).or_default() += 1;
            }
            Err(why) => failures.push(format!(
                "{} ({} bytes, seed {}): {why}",
                case.what,
                case.data.len(),
                seed()
            )),
        }
    }
    println!("{} inputs: {outcomes:?}", cases.len());
    assert!(failures.is_empty(), "{}", failures.join("\n"));
    // Every kind of answer shows up, or the mutations are not reaching past the probe.
    for kind in ["ok", "Unrecognised", "Corrupt", "Truncated"] {
        assert!(outcomes.contains_key(kind), "no {kind} among {outcomes:?}");
    }
}
