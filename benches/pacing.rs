//! Packet pacing of a real broadcast, measured at a real UDP receiver, against two peers
//! measured in the same run on the same machine:
//! - `sleep-loop`: `thread::sleep(20 ms)` between sends, the drifting way;
//! - `tokio-interval`: `tokio::time::interval(20 ms)`, absolute deadlines on tokio's timer.
//!
//! Run: `cargo bench --bench pacing` (LOAXA_BENCH_SECONDS=60 by default).
//! Prints, per sender: median and p99 of |inter-arrival − 20 ms|, median and p99 of the
//! deviation of packet k from first + k·20 ms, and the total drift over the stream.

use std::io::{BufRead, BufReader};
use std::net::UdpSocket;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const TOKEN: &str = "bench-admin-token-0123456789";
const PTIME: Duration = Duration::from_millis(20);

struct Figures {
    name: &'static str,
    packets: usize,
    interval_median_ms: f64,
    interval_p99_ms: f64,
    grid_median_ms: f64,
    grid_p99_ms: f64,
    drift_ms: f64,
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i]
}

fn figures(name: &'static str, arrivals: &[Instant]) -> Figures {
    let t0 = arrivals[0];
    let mut intervals: Vec<f64> = arrivals
        .windows(2)
        .map(|w| (w[1].duration_since(w[0]).as_secs_f64() * 1000.0 - 20.0).abs())
        .collect();
    intervals.sort_by(f64::total_cmp);
    let offsets: Vec<f64> = arrivals
        .iter()
        .enumerate()
        .map(|(k, t)| t.duration_since(t0).as_secs_f64() * 1000.0 - 20.0 * k as f64)
        .collect();
    let mut grid: Vec<f64> = offsets.iter().map(|o| o.abs()).collect();
    grid.sort_by(f64::total_cmp);
    Figures {
        name,
        packets: arrivals.len(),
        interval_median_ms: percentile(&intervals, 0.5),
        interval_p99_ms: percentile(&intervals, 0.99),
        grid_median_ms: percentile(&grid, 0.5),
        grid_p99_ms: percentile(&grid, 0.99),
        drift_ms: *offsets.last().unwrap(),
    }
}

fn receive(socket: &UdpSocket, expected: usize, limit: Duration) -> Vec<Instant> {
    socket
        .set_read_timeout(Some(Duration::from_millis(500)))
        .unwrap();
    let mut out = Vec::with_capacity(expected);
    let mut buf = [0u8; 2048];
    let start = Instant::now();
    while out.len() < expected && start.elapsed() < limit {
        if socket.recv(&mut buf).is_ok() {
            out.push(Instant::now());
        }
    }
    out
}

/// A clip of `seconds` of a 440 Hz tone with a slow envelope, as a 8 kHz 16-bit WAV.
fn wav(seconds: u32) -> Vec<u8> {
    let n = 8000 * seconds;
    let mut w = Vec::with_capacity(44 + 2 * n as usize);
    let data_len = 2 * n;
    w.extend_from_slice(b"RIFF");
    w.extend_from_slice(&(36 + data_len).to_le_bytes());
    w.extend_from_slice(b"WAVEfmt ");
    w.extend_from_slice(&16u32.to_le_bytes());
    w.extend_from_slice(&1u16.to_le_bytes());
    w.extend_from_slice(&1u16.to_le_bytes());
    w.extend_from_slice(&8000u32.to_le_bytes());
    w.extend_from_slice(&16000u32.to_le_bytes());
    w.extend_from_slice(&2u16.to_le_bytes());
    w.extend_from_slice(&16u16.to_le_bytes());
    w.extend_from_slice(b"data");
    w.extend_from_slice(&data_len.to_le_bytes());
    for i in 0..n {
        let t = i as f32 / 8000.0;
        let env = 0.5 + 0.4 * (t * 2.0).sin();
        let s = (env * 0.5 * (t * 440.0 * std::f32::consts::TAU).sin() * 32767.0) as i16;
        w.extend_from_slice(&s.to_le_bytes());
    }
    w
}

async fn loaxa(seconds: u32) -> Vec<Instant> {
    let dir = tempfile::tempdir().unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_loaxa"))
        .arg("serve")
        .env("LOAXA_LISTEN", "127.0.0.1:0")
        .env("LOAXA_DATA_DIR", dir.path().join("data"))
        .env("LOAXA_ADMIN_TOKEN", TOKEN)
        .env("LOAXA_RTP_PORT", "0")
        .env("RUST_LOG", "warn")
        .stdout(Stdio::piped())
        .spawn()
        .expect("start loaxa");
    let stdout = child.stdout.take().unwrap();
    let mut lines = BufReader::new(stdout).lines();
    let base = lines
        .by_ref()
        .map_while(Result::ok)
        .find_map(|l| l.strip_prefix("listening on ").map(str::to_string))
        .expect("listening line");
    std::thread::spawn(move || for _ in lines {});
    let http = reqwest::Client::new();
    let post = |path: &str, body: serde_json::Value| {
        http.post(format!("{base}{path}"))
            .bearer_auth(TOKEN)
            .json(&body)
            .send()
    };
    let receiver = UdpSocket::bind("127.0.0.1:0").unwrap();
    post(
        "/api/v1/areas",
        serde_json::json!({"code": "bench", "name": "Bench", "kind": "commune"}),
    )
    .await
    .unwrap();
    let cluster: serde_json::Value = post(
        "/api/v1/clusters",
        serde_json::json!({"name": "bench", "area_code": "bench", "codec": "pcmu",
            "endpoint": {"mode": "unicast", "address": receiver.local_addr().unwrap().to_string()}}),
    )
    .await
    .unwrap()
    .json()
    .await
    .unwrap();
    let form = reqwest::multipart::Form::new().part(
        "file",
        reqwest::multipart::Part::bytes(wav(seconds)).file_name("bench.wav"),
    );
    let audio: serde_json::Value = http
        .post(format!("{base}/api/v1/audio"))
        .bearer_auth(TOKEN)
        .multipart(form)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let expected = (seconds * 50) as usize;
    let receiving = std::thread::spawn(move || {
        receive(
            &receiver,
            expected,
            Duration::from_secs(u64::from(seconds) + 20),
        )
    });
    post(
        "/api/v1/broadcasts",
        serde_json::json!({"audio_ids": [audio["id"]], "targets": {"clusters": [cluster["id"]]}}),
    )
    .await
    .unwrap();
    let arrivals = receiving.join().unwrap();
    let _ = child.kill();
    let _ = child.wait();
    arrivals
}

fn sleep_loop(seconds: u32) -> Vec<Instant> {
    let receiver = UdpSocket::bind("127.0.0.1:0").unwrap();
    let to = receiver.local_addr().unwrap();
    let n = (seconds * 50) as usize;
    let sender = std::thread::spawn(move || {
        let socket = UdpSocket::bind("127.0.0.1:0").unwrap();
        for _ in 0..n {
            socket.send_to(&[0u8; 172], to).unwrap();
            std::thread::sleep(PTIME);
        }
    });
    let arrivals = receive(&receiver, n, Duration::from_secs(u64::from(seconds) + 20));
    sender.join().unwrap();
    arrivals
}

async fn tokio_interval(seconds: u32) -> Vec<Instant> {
    let receiver = UdpSocket::bind("127.0.0.1:0").unwrap();
    let to = receiver.local_addr().unwrap();
    let n = (seconds * 50) as usize;
    let receiving = std::thread::spawn(move || {
        receive(&receiver, n, Duration::from_secs(u64::from(seconds) + 20))
    });
    let socket = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let mut interval = tokio::time::interval(PTIME);
    for _ in 0..n {
        interval.tick().await;
        socket.send_to(&[0u8; 172], to).await.unwrap();
    }
    receiving.join().unwrap()
}

#[tokio::main]
async fn main() {
    // `cargo bench` passes --bench; nothing else to parse.
    let seconds: u32 = std::env::var("LOAXA_BENCH_SECONDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(60);
    println!("pacing over {seconds} s of 20 ms packets, received on 127.0.0.1 (one after another)");
    let results = [
        figures("loaxa", &loaxa(seconds).await),
        figures("sleep-loop", &sleep_loop(seconds)),
        figures("tokio-interval", &tokio_interval(seconds).await),
    ];
    println!(
        "{:<15} {:>7} {:>12} {:>12} {:>12} {:>12} {:>10}",
        "sender", "packets", "ivl med ms", "ivl p99 ms", "grid med ms", "grid p99 ms", "drift ms"
    );
    for f in &results {
        println!(
            "{:<15} {:>7} {:>12.3} {:>12.3} {:>12.3} {:>12.3} {:>10.1}",
            f.name,
            f.packets,
            f.interval_median_ms,
            f.interval_p99_ms,
            f.grid_median_ms,
            f.grid_p99_ms,
            f.drift_ms
        );
    }
    let ours = &results[0];
    for peer in &results[1..] {
        println!(
            "ratio {} / loaxa: interval p99 {:.1}x, grid p99 {:.1}x, |drift| {:.1}x",
            peer.name,
            peer.interval_p99_ms / ours.interval_p99_ms.max(1e-6),
            peer.grid_p99_ms / ours.grid_p99_ms.max(1e-6),
            peer.drift_ms.abs() / ours.drift_ms.abs().max(1e-3),
        );
    }
}
