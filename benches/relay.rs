//! Relay latency, stream in to RTP out: a local station streams an MP3 programme at
//! real-time rate over HTTP; the daemon relays it to a PCMU cluster (a real UDP socket);
//! each received 20 ms packet is matched to the station's audio (envelope correlation
//! against the programme decoded by ffmpeg) and its arrival compared with the instant
//! the station sent that audio. Median and p90 over every packet of several relays.
//!
//! The peer, measured in the same run on the same station: ffmpeg reading the same URL
//! with low-latency input options (`-seekable 0 -fflags nobuffer -probesize 4096
//! -analyzeduration 100000 -f mp3`; with `-probesize 32 -analyzeduration 0` it holds
//! everything back until its `-t` is reached) and sending PCMU over RTP as it decodes,
//! i.e. a decoder with no cushion and no levelling. The ratio says what the relay's cushion (`[relay] buffer_ms`), levelling
//! and pacing add.
//!
//! Run: `cargo bench --bench relay -- --rounds 3 --seconds 8 --buffer-ms 500`
//! Needs ffmpeg.

#[path = "../tests/common/mod.rs"]
mod common;
#[path = "../tests/common/station.rs"]
mod station;

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::*;
use serde_json::json;
use station::{Station, collect, decoded, latencies_ms};

fn arg(name: &str, default: u64) -> u64 {
    let args: Vec<String> = std::env::args().collect();
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// Latencies (ms) of the audio received, in 20 ms windows matched against the station's
/// programme; the connection is the newest the station served on `path`. A window has
/// arrived when the packet holding its last sample has (ffmpeg's packets are not 20 ms).
fn measure(station: &Station, path: &str, packets: &[Datagram], reference: &[f64]) -> Vec<f64> {
    let mut audio: Vec<f32> = Vec::new();
    let mut arrived: Vec<Instant> = Vec::new();
    for d in packets {
        let (_, payload) = parse_rtp(&d.bytes);
        for &b in payload {
            audio.push(f32::from(loaxa::codec::g711::ulaw_decode(b)) / 32768.0);
            arrived.push(d.at);
        }
    }
    // Steady state only: skip the first second (the cushion filling).
    let skip = 8000.min(audio.len());
    let (audio, arrived) = (&audio[skip..], &arrived[skip..]);
    if audio.len() < 16_000 {
        return Vec::new();
    }
    let received = envelope(audio, 160);
    let looped: Vec<f64> = reference.iter().chain(reference).copied().collect();
    let n = received.len().min(reference.len());
    let (lag, fit) = (0..reference.len())
        .map(|lag| (lag, correlation(&looped[lag..lag + n], &received[..n])))
        .max_by(|a, b| a.1.total_cmp(&b.1))
        .unwrap();
    if fit < 0.9 {
        eprintln!("  {path}: audio correlates only {fit:.3}; round skipped");
        return Vec::new();
    }
    let conn = station.served(path).last().cloned().expect("a connection");
    let windows: Vec<Instant> = arrived.chunks(160).map(|w| w[w.len() - 1]).collect();
    latencies_ms(&windows, lag, reference.len(), &conn)
}

fn summary(name: &str, all: &mut [f64]) -> f64 {
    all.sort_by(f64::total_cmp);
    let median = all[all.len() / 2];
    println!(
        "{name:<8} windows {:>5}  latency median {median:>6.0} ms  p90 {:>6.0} ms  max {:>6.0} ms",
        all.len(),
        all[all.len() * 9 / 10],
        all[all.len() - 1]
    );
    median
}

#[tokio::main]
async fn main() {
    let rounds = arg("--rounds", 3);
    let seconds = arg("--seconds", 8);
    let buffer_ms = arg("--buffer-ms", 500);
    let station = Station::start().await;
    let reference = envelope(&decoded(&station.mp3_path()), 160);
    let app = spawn_app_with_config(&format!(
        "[relay]\nallowed_hosts = [\"127.0.0.1\"]\nbuffer_ms = {buffer_ms}\n"
    ))
    .await;
    app.create_area("xa", None).await;
    let (mut ours, mut theirs) = (Vec::new(), Vec::new());
    println!("relay latency: {rounds} rounds of {seconds} s, buffer_ms = {buffer_ms}");
    for round in 0..rounds {
        // loaxa: a relay broadcast to one PCMU cluster.
        let rx = Receiver::bind();
        let cluster = app.create_cluster("xa", "pcmu", rx.addr()).await;
        let receiving =
            tokio::task::spawn_blocking(move || collect(&rx, Duration::from_secs(seconds + 1)));
        let r = app
            .post_json(
                "/api/v1/broadcasts",
                &json!({"relay": {"url": station.url("/live.mp3"), "duration_s": seconds},
                        "targets": {"clusters": [cluster]}, "priority": "live"}),
            )
            .await;
        assert_eq!(r.status(), 202, "relay");
        let packets = receiving.await.unwrap();
        let l = measure(&station, "/live.mp3", &packets, &reference);
        eprintln!("  round {round} loaxa: {} windows measured", l.len());
        ours.extend(l);

        // ffmpeg: the same stream, straight to RTP.
        let rx = Receiver::bind();
        let addr = rx.addr();
        let receiving =
            tokio::task::spawn_blocking(move || collect(&rx, Duration::from_secs(seconds + 1)));
        let mut ffmpeg = Command::new("ffmpeg")
            .args([
                "-hide_banner",
                "-loglevel",
                "error",
                "-seekable",
                "0",
                "-fflags",
                "nobuffer",
                "-probesize",
                "4096",
                "-analyzeduration",
                "100000",
                "-f",
                "mp3",
                "-i",
            ])
            .arg(station.url("/live.mp3"))
            .args([
                "-t",
                &seconds.to_string(),
                "-ac",
                "1",
                "-ar",
                "8000",
                "-c:a",
                "pcm_mulaw",
            ])
            .args([
                "-flush_packets",
                "1",
                "-f",
                "rtp",
                &format!("rtp://{addr}?pkt_size=172"),
            ])
            .stdout(Stdio::null())
            .spawn()
            .expect("ffmpeg");
        let packets = receiving.await.unwrap();
        let _ = ffmpeg.kill();
        let _ = ffmpeg.wait();
        if let (Some(first), Some(last), Some(conn)) = (
            packets.first(),
            packets.last(),
            station.served("/live.mp3").last(),
        ) {
            eprintln!(
                "  round {round} ffmpeg: packets from {:.2} s to {:.2} s after it connected",
                (first.at - conn.at).as_secs_f64(),
                (last.at - conn.at).as_secs_f64()
            );
        }
        let l = measure(&station, "/live.mp3", &packets, &reference);
        eprintln!(
            "  round {round} ffmpeg: {} windows measured over {} packets, {} connections so far",
            l.len(),
            packets.len(),
            station.served("/live.mp3").len()
        );
        theirs.extend(l);
    }
    if ours.is_empty() || theirs.is_empty() {
        println!("not enough packets matched to measure");
        return;
    }
    let a = summary("loaxa", &mut ours);
    let b = summary("ffmpeg", &mut theirs);
    println!(
        "loaxa adds {:.0} ms over ffmpeg's direct relay (median {:.2}x); buffer_ms = {buffer_ms}",
        a - b,
        a / b
    );
}
