//! Interop with a standard receiver: ffmpeg, given nothing but the SDP a cluster serves,
//! plays the cluster's stream, and what it decodes is the uploaded announcement. Needs
//! `ffmpeg` on PATH, hence the `interop` feature (.ci/run installs it).

mod common;

use std::net::{SocketAddr, UdpSocket};
use std::path::Path;
use std::process::Stdio;
use std::time::{Duration, Instant};

use common::*;

const FIXTURE: &str = "announce-vi-48k-24bit-stereo.wav";
const AREA: &str = "ffmpeg-test";
/// G.711 runs at 8 kHz; ffmpeg is asked for exactly that, so no resampler sits between
/// the stream and the comparison.
const RATE: u32 = 8000;
/// 20 ms envelope windows: one RTP packet's worth at the default ptime.
const WINDOW: usize = 160;
/// Lag searched when lining the envelopes up, in windows (100 ms either way).
const MAX_LAG: usize = 5;
const MIN_CORRELATION: f64 = 0.9;
const MAX_DURATION_ERROR_MS: i64 = 100;
/// ffmpeg normally holds its ports within ~100 ms; CI machines are slow and busy.
const FFMPEG_READY_WITHIN: Duration = Duration::from_secs(5);
/// The clip is 2 s; the rest is slack for a loaded 2-core machine.
const FFMPEG_DONE_WITHIN: Duration = Duration::from_secs(15);
/// From the BYE to ffmpeg's exit.
const FFMPEG_EXIT_WITHIN: Duration = Duration::from_secs(5);
/// Fresh port pairs tried when ffmpeg loses its port to someone else (see `start_ffmpeg`).
const PORT_ATTEMPTS: usize = 3;

#[tokio::test]
async fn ffmpeg_plays_a_pcmu_cluster_from_its_sdp() {
    ffmpeg_plays_a_cluster_from_its_sdp("pcmu").await;
}

#[tokio::test]
async fn ffmpeg_plays_a_pcma_cluster_from_its_sdp() {
    ffmpeg_plays_a_cluster_from_its_sdp("pcma").await;
}

#[tokio::test]
async fn ffmpeg_plays_an_l16_cluster_from_its_sdp() {
    ffmpeg_plays_a_cluster_from_its_sdp("l16").await;
}

#[tokio::test]
async fn ffmpeg_plays_a_g722_cluster_from_its_sdp() {
    ffmpeg_plays_a_cluster_from_its_sdp("g722").await;
}

#[tokio::test]
async fn ffmpeg_plays_an_opus_cluster_from_its_sdp() {
    ffmpeg_plays_a_cluster_from_its_sdp("opus").await;
}

#[tokio::test]
async fn ffmpeg_plays_an_srtp_cluster_from_its_sdp() {
    ffmpeg_plays("pcmu", Srtp::On).await;
}

#[tokio::test]
async fn a_receiver_with_the_wrong_srtp_key_gets_nothing_playable() {
    let app = spawn_app().await;
    let work = tempfile::tempdir().expect("temp dir");
    app.create_area(AREA, None).await;
    let audio = app.upload_ok(&fixture(FIXTURE)).await;
    let mut ffmpeg = start_ffmpeg(&app, "pcmu", work.path(), Srtp::WrongKey).await;
    let broadcast = app
        .broadcast(audio["id"].as_str().unwrap(), &[&ffmpeg.cluster])
        .await;
    let status = app
        .wait_status(&broadcast, "done", FFMPEG_DONE_WITHIN)
        .await;
    assert_eq!(status["status"], "done");
    tokio::time::sleep(Duration::from_millis(500)).await;
    let _ = ffmpeg.child.kill().await;
    let _ = ffmpeg.child.wait().await;
    // Every packet failed authentication: nothing decoded.
    let played = std::fs::read(&ffmpeg.out)
        .ok()
        .and_then(|wav| read_pcm16_mono_wav(&wav).ok())
        .map_or(0, |(_, samples)| samples.len());
    assert_eq!(
        played,
        0,
        "a wrong key decoded {played} samples\n{}",
        ffmpeg.stderr()
    );
    assert!(
        ffmpeg.stderr().contains("HMAC mismatch"),
        "ffmpeg did not refuse the packets\n{}",
        ffmpeg.stderr()
    );
}

/// Whether a test's cluster streams SRTP, and whether the receiver gets its real key.
#[derive(Clone, Copy, PartialEq)]
enum Srtp {
    Off,
    On,
    WrongKey,
}

async fn ffmpeg_plays_a_cluster_from_its_sdp(codec: &str) {
    ffmpeg_plays(codec, Srtp::Off).await;
}

async fn ffmpeg_plays(codec: &str, srtp: Srtp) {
    let app = spawn_app().await;
    let work = tempfile::tempdir().expect("temp dir");
    app.create_area(AREA, None).await;
    let audio = app.upload_ok(&fixture(FIXTURE)).await;
    let audio_id = audio["id"].as_str().expect("audio id");
    let uploaded_ms = audio["duration_ms"].as_i64().expect("duration_ms");

    let mut ffmpeg = start_ffmpeg(&app, codec, work.path(), srtp).await;

    let broadcast = app.broadcast(audio_id, &[&ffmpeg.cluster]).await;
    let status = app
        .wait_status(&broadcast, "done", FFMPEG_DONE_WITHIN)
        .await;
    assert_eq!(
        status["status"],
        "done",
        "{codec}: broadcast {status}\ndaemon stderr:\n{}",
        tail(&app.stderr())
    );
    // The cluster's RTP session outlives the programme; removing the cluster ends it with
    // an RTCP BYE, and ffmpeg's SDP demuxer ends its input once every stream has had one:
    // exiting by itself is part of the test.
    let r = app
        .client
        .delete(app.url(&format!("/api/v1/clusters/{}", ffmpeg.cluster)))
        .bearer_auth(TOKEN)
        .send()
        .await
        .expect("DELETE cluster");
    assert_eq!(r.status(), 204, "{codec}: DELETE cluster");
    let exit = match tokio::time::timeout(FFMPEG_EXIT_WITHIN, ffmpeg.child.wait()).await {
        Ok(exit) => exit.expect("wait for ffmpeg"),
        Err(_) => {
            let _ = ffmpeg.child.kill().await;
            panic!(
                "{codec}: ffmpeg still running {FFMPEG_EXIT_WITHIN:?} after its cluster was \
                 removed (no BYE, or BYE ignored)\nffmpeg stderr:\n{}\ndaemon stderr:\n{}",
                ffmpeg.stderr(),
                tail(&app.stderr())
            );
        }
    };
    assert!(
        exit.success(),
        "{codec}: ffmpeg failed ({exit})\nffmpeg stderr:\n{}",
        ffmpeg.stderr()
    );

    let wav = std::fs::read(&ffmpeg.out).expect("ffmpeg's output file");
    let (rate, played) = read_pcm16_mono_wav(&wav).unwrap_or_else(|e| {
        panic!(
            "{codec}: ffmpeg's output is not the WAV asked for: {e}\nffmpeg stderr:\n{}",
            ffmpeg.stderr()
        )
    });
    assert_eq!(rate, RATE, "{codec}: ffmpeg's output rate");
    let played_ms = (played.len() as i64 * 1000) / i64::from(RATE);
    let reference = reference_audio(&fixture(FIXTURE), RATE);
    // Loudness is normalised on the way out, so levels differ by a constant gain:
    // compare the shapes of the envelopes, not their values.
    let r = best_correlation(
        &envelope(&played, WINDOW),
        &envelope(&reference, WINDOW),
        MAX_LAG,
    );
    eprintln!(
        "{codec}: ffmpeg decoded {played_ms} ms of {uploaded_ms} ms uploaded, \
         envelope correlation {r:.4}"
    );
    assert!(
        (played_ms - uploaded_ms).abs() <= MAX_DURATION_ERROR_MS,
        "{codec}: ffmpeg decoded {played_ms} ms, the upload is {uploaded_ms} ms \
         (allowed ±{MAX_DURATION_ERROR_MS} ms); envelope correlation {r:.4}\nffmpeg stderr:\n{}",
        ffmpeg.stderr()
    );
    assert!(
        r > MIN_CORRELATION,
        "{codec}: envelope correlation {r:.4} ≤ {MIN_CORRELATION} ({played_ms} ms decoded, \
         {uploaded_ms} ms uploaded)\nffmpeg stderr:\n{}",
        ffmpeg.stderr()
    );
}

/// An ffmpeg listening on a cluster's stream, writing what it decodes to `out`.
struct Ffmpeg {
    child: tokio::process::Child,
    cluster: String,
    out: std::path::PathBuf,
    stderr_path: std::path::PathBuf,
}

impl Ffmpeg {
    fn stderr(&self) -> String {
        tail(&std::fs::read_to_string(&self.stderr_path).unwrap_or_default())
    }
}

/// Creates a cluster on a free port pair, fetches its SDP and starts ffmpeg on it; returns
/// once ffmpeg holds the RTP port, so that nothing the daemon sends can be lost.
///
/// A free port is only free until someone takes it: another test may grab it between our
/// probe and ffmpeg's bind, or ffmpeg may try to bind in the instant our readiness probe
/// holds it. Either way ffmpeg exits at once with a bind error, and a new cluster on a
/// fresh pair is tried.
async fn start_ffmpeg(app: &TestApp, codec: &str, dir: &Path, srtp: Srtp) -> Ffmpeg {
    let mut last_failure = String::new();
    for attempt in 0..PORT_ATTEMPTS {
        let port = free_port_pair();
        let address = SocketAddr::from(([127, 0, 0, 1], port));
        let r = app
            .post_json(
                "/api/v1/clusters",
                &serde_json::json!({"name": "Cụm", "area_code": AREA, "codec": codec,
                    "endpoint": {"mode": "unicast", "address": address.to_string()},
                    "srtp": srtp != Srtp::Off}),
            )
            .await;
        assert_eq!(r.status(), 201, "{codec}: create cluster");
        let created: serde_json::Value = r.json().await.expect("cluster");
        let cluster = created["id"].as_str().expect("id").to_string();
        let r = app.get(&format!("/api/v1/clusters/{cluster}/sdp")).await;
        assert_eq!(r.status(), 200, "{codec}: GET sdp");
        let mut sdp = r.text().await.expect("sdp text");
        assert_eq!(
            sdp.contains("a=crypto:1 AES_CM_128_HMAC_SHA1_80 inline:"),
            srtp != Srtp::Off,
            "{sdp}"
        );
        if srtp == Srtp::WrongKey {
            // Another key of the right form: the receiver of someone else's SDP.
            let other = loaxa::rtp::srtp::MasterKey::generate();
            let at = sdp.find("a=crypto:").expect("crypto line");
            let end = at + sdp[at..].find("\r\n").expect("line end");
            sdp.replace_range(at..end, &format!("a={}", other.sdp_crypto_attribute()));
        }
        let sdp_path = dir.join(format!("cluster-{attempt}.sdp"));
        std::fs::write(&sdp_path, &sdp).expect("write sdp");
        let out = dir.join(format!("out-{attempt}.wav"));
        let stderr_path = dir.join(format!("ffmpeg-{attempt}.log"));
        let child = tokio::process::Command::new("ffmpeg")
            // No -probesize/-analyzeduration/-reorder_queue_size tuning: the SDP already
            // gives codec, rate and channels, what ffmpeg reads while probing is kept, and
            // the kernel queues packets for the bound port until ffmpeg reads them, so the
            // output starts at the first packet. -nostdin: nothing needs to stop it, the
            // BYE sent when its cluster is removed does. `verbose` logs enough to diagnose a failure.
            .args(["-hide_banner", "-nostdin", "-loglevel", "verbose"])
            // Reading an SDP file opens rtp:// and udp:// URLs, which ffmpeg refuses
            // unless whitelisted.
            .args(["-protocol_whitelist", "file,rtp,udp", "-f", "sdp", "-i"])
            .arg(&sdp_path)
            .args(["-f", "wav", "-acodec", "pcm_s16le", "-ac", "1", "-y"])
            .args(["-ar", &RATE.to_string()])
            .arg(&out)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&stderr_path).expect("ffmpeg log"))
            .kill_on_drop(true)
            .spawn()
            .expect("start ffmpeg (the interop feature needs ffmpeg on PATH)");
        let mut ffmpeg = Ffmpeg {
            child,
            cluster,
            out,
            stderr_path,
        };
        let deadline = Instant::now() + FFMPEG_READY_WITHIN;
        loop {
            if let Some(exit) = ffmpeg.child.try_wait().expect("poll ffmpeg") {
                last_failure = format!(
                    "ffmpeg exited ({exit}) before the broadcast, port {port}, SDP:\n{sdp}\n\
                     ffmpeg stderr:\n{}",
                    ffmpeg.stderr()
                );
                if ffmpeg.stderr().contains("Address already in use") {
                    break;
                }
                panic!("{codec}: {last_failure}");
            }
            // ffmpeg binds unicast RTP without SO_REUSEADDR, so our bind fails once it
            // holds the port (and there is no other way to see it has without parsing
            // its log).
            match UdpSocket::bind(address) {
                Err(e) if e.kind() == std::io::ErrorKind::AddrInUse => return ffmpeg,
                Err(e) => panic!("{codec}: probing port {port}: {e}"),
                Ok(probe) => drop(probe),
            }
            if Instant::now() > deadline {
                let _ = ffmpeg.child.kill().await;
                panic!(
                    "{codec}: ffmpeg did not bind port {port} within {FFMPEG_READY_WITHIN:?}\n\
                     ffmpeg stderr:\n{}",
                    ffmpeg.stderr()
                );
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
    panic!("{codec}: ffmpeg could not start in {PORT_ATTEMPTS} attempts; last: {last_failure}");
}

/// A free even port P with P + 1 free too (RTP and RTCP), released for ffmpeg to take.
fn free_port_pair() -> u16 {
    let rx = Receiver::bind();
    rx.addr().port()
}

/// The end of a log: enough to see what went wrong without flooding the test output.
fn tail(log: &str) -> String {
    const KEEP: usize = 6000;
    if log.len() <= KEEP {
        return log.to_string();
    }
    let mut start = log.len() - KEEP;
    while !log.is_char_boundary(start) {
        start += 1;
    }
    format!("…{}", &log[start..])
}

/// Reads the 16-bit PCM mono WAV ffmpeg was asked to write: its rate and its samples in
/// [-1, 1]. Parsed here rather than by the crate's decoder, so that what checks the daemon's
/// output does not share code with the daemon.
fn read_pcm16_mono_wav(bytes: &[u8]) -> Result<(u32, Vec<f32>), String> {
    if bytes.len() < 12 || &bytes[..4] != b"RIFF" || &bytes[8..12] != b"WAVE" {
        return Err(format!("no RIFF/WAVE header ({} bytes)", bytes.len()));
    }
    let u16_at = |b: &[u8], i: usize| u16::from_le_bytes([b[i], b[i + 1]]);
    let u32_at = |b: &[u8], i: usize| u32::from_le_bytes([b[i], b[i + 1], b[i + 2], b[i + 3]]);
    let mut rate = None;
    let mut rest = &bytes[12..];
    while rest.len() >= 8 {
        let id = &rest[..4];
        let declared = u32_at(rest, 4) as usize;
        let body = &rest[8..];
        // A writer that was stopped early leaves a placeholder size: take what is there.
        let size = declared.min(body.len());
        match id {
            b"fmt " => {
                if size < 16 {
                    return Err(format!("fmt chunk of {size} bytes"));
                }
                let (format, channels, bits) = (u16_at(body, 0), u16_at(body, 2), u16_at(body, 14));
                if format != 1 || channels != 1 || bits != 16 {
                    return Err(format!(
                        "format {format}, {channels} channels, {bits} bits; wanted PCM, 1, 16"
                    ));
                }
                rate = Some(u32_at(body, 4));
            }
            b"data" => {
                let rate = rate.ok_or("data before fmt")?;
                let samples = body[..size]
                    .chunks_exact(2)
                    .map(|s| f32::from(i16::from_le_bytes([s[0], s[1]])) / 32768.0)
                    .collect();
                return Ok((rate, samples));
            }
            _ => {}
        }
        // Chunks are padded to an even length.
        let next = 8 + size + (size & 1);
        rest = rest.get(next..).unwrap_or(&[]);
    }
    Err("no data chunk".to_string())
}
