//! Decode + normalise + encode of a 60 s MP3, the work done once per (clip, codec), in
//! x-realtime, next to ffmpeg doing the same conversion in the same run:
//! - loaxa: symphonia decode, EBU R128 normalisation (measure, gain, look-ahead limiter,
//!   re-measure), rubato resample, encode (one thread);
//! - ffmpeg: `-threads 1`, decode, `volume` gain, resample, encode (libopus / pcm_mulaw),
//!   once with the gain given (convert only) and once preceded by its own ebur128 pass.
//!
//! Run: `cargo bench --bench pipeline` (needs ffmpeg with libmp3lame and libopus, as in
//! Debian's package). Prints medians of 5 runs and the ratios.

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use loaxa::codec::{Codec, CodecSettings};
use loaxa::media::{self, DecodeLimits, LoudnessTarget};

const RUNS: usize = 5;
const TARGET_LUFS: f64 = -16.0;

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

fn ffmpeg(args: &[&str]) {
    let out = Command::new("ffmpeg")
        .args([
            "-hide_banner",
            "-nostdin",
            "-loglevel",
            "error",
            "-threads",
            "1",
        ])
        .args(args)
        .output()
        .expect("ffmpeg runs");
    assert!(
        out.status.success(),
        "ffmpeg {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

fn loaxa_pipeline(mp3: &[u8], codec: Codec) -> usize {
    let mut decoded = media::decode(mp3, Some("mp3"), DecodeLimits::default()).expect("decode");
    // The daemon's own normalisation: measure, gain, look-ahead limiter, re-measure.
    media::normalise(
        &mut decoded.mono,
        decoded.sample_rate,
        LoudnessTarget {
            integrated_lufs: TARGET_LUFS,
            true_peak_dbtp: -1.0,
        },
    )
    .expect("not silence");
    let samples =
        media::resample(&decoded.mono, decoded.sample_rate, codec.sample_rate()).expect("resample");
    let frames = codec
        .encode(&samples, 20, &CodecSettings::default())
        .expect("encode");
    frames.len()
}

fn main() {
    let dir = tempfile::tempdir().unwrap();
    let mp3 = dir.path().join("sixty.mp3");
    let source = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/announce-vi.flac");
    // 60 s of speech: the 10.2 s announcement six times over, as a 128 kb/s stereo MP3.
    ffmpeg(&[
        "-stream_loop",
        "5",
        "-i",
        source.to_str().unwrap(),
        "-t",
        "60",
        "-ac",
        "2",
        "-ar",
        "44100",
        "-c:a",
        "libmp3lame",
        "-b:a",
        "128k",
        "-y",
        mp3.to_str().unwrap(),
    ]);
    let data = std::fs::read(&mp3).unwrap();
    let seconds = 60.0;
    println!(
        "decode + normalise + encode of a 60 s 44.1 kHz stereo MP3, median of {RUNS} runs, one thread each"
    );
    println!(
        "{:<8} {:<34} {:>10} {:>12}",
        "codec", "pipeline", "median ms", "x-realtime"
    );
    for (codec, ffmpeg_codec) in [
        (
            Codec::Pcmu,
            vec!["-ar", "8000", "-c:a", "pcm_mulaw", "-f", "mulaw"],
        ),
        (
            Codec::Opus,
            vec![
                "-ar",
                "48000",
                "-c:a",
                "libopus",
                "-b:a",
                "24k",
                "-application",
                "voip",
                "-frame_duration",
                "20",
                "-f",
                "opus",
            ],
        ),
    ] {
        let ours = median(
            (0..RUNS)
                .map(|_| {
                    let t = Instant::now();
                    assert!(loaxa_pipeline(&data, codec) > 2900);
                    t.elapsed()
                })
                .collect(),
        );
        let out = dir.path().join("out");
        let convert = |with_measure: bool| {
            let t = Instant::now();
            if with_measure {
                ffmpeg(&[
                    "-i",
                    mp3.to_str().unwrap(),
                    "-af",
                    "ebur128=peak=true",
                    "-f",
                    "null",
                    "-",
                ]);
            }
            let mut args = vec!["-i", mp3.to_str().unwrap(), "-af", "volume=6dB", "-ac", "1"];
            args.extend(ffmpeg_codec.iter().copied());
            args.extend(["-y", out.to_str().unwrap()]);
            ffmpeg(&args);
            t.elapsed()
        };
        let ff_convert = median((0..RUNS).map(|_| convert(false)).collect());
        let ff_full = median((0..RUNS).map(|_| convert(true)).collect());
        for (name, d) in [
            ("loaxa (measure + convert)", ours),
            ("ffmpeg (convert only)", ff_convert),
            ("ffmpeg (ebur128 pass + convert)", ff_full),
        ] {
            println!(
                "{:<8} {:<34} {:>10.1} {:>12.0}",
                codec.as_str(),
                name,
                d.as_secs_f64() * 1000.0,
                seconds / d.as_secs_f64()
            );
        }
        println!(
            "{:<8} ratio loaxa speed / ffmpeg speed: {:.2}x (convert only), {:.2}x (with measure)",
            codec.as_str(),
            ff_convert.as_secs_f64() / ours.as_secs_f64(),
            ff_full.as_secs_f64() / ours.as_secs_f64()
        );
    }
}
