//! Test harness: every test gets its own daemon (the real binary) on port 0 with a fresh
//! data directory, and talks to it over HTTP; receivers are real UDP sockets.
#![allow(dead_code)]

use std::io::{BufRead, BufReader};
use std::net::{SocketAddr, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

pub const TOKEN: &str = "test-admin-token-0123456789";

pub struct TestApp {
    pub base: String,
    pub client: reqwest::Client,
    pub child: Option<Child>,
    pub dir: tempfile::TempDir,
    pub stderr_path: PathBuf,
}

pub fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(name)
}

/// Starts `loaxa serve` on 127.0.0.1:0 with a temp data dir and waits for its
/// `listening on` line.
pub async fn spawn_app() -> TestApp {
    spawn_app_in(tempfile::tempdir().expect("temp dir")).await
}

pub async fn spawn_app_in(dir: tempfile::TempDir) -> TestApp {
    let config = Path::new(env!("CARGO_MANIFEST_DIR")).join("config/loaxa.toml");
    spawn_app_with(dir, &config, &[]).await
}

/// Starts the daemon with a config file of the test's own.
pub async fn spawn_app_with_config(toml: &str) -> TestApp {
    spawn_app_with_config_env(toml, &[]).await
}

/// Starts the daemon with a config file and environment variables of the test's own.
pub async fn spawn_app_with_config_env(toml: &str, env: &[(&str, &str)]) -> TestApp {
    let dir = tempfile::tempdir().expect("temp dir");
    let config = dir.path().join("loaxa.toml");
    std::fs::write(&config, toml).expect("write config");
    spawn_app_with(dir, &config, env).await
}

/// Starts the daemon. Quiet hours are off unless `env` sets `LOAXA_QUIET_HOURS`: the
/// suite must pass at any hour of the day in Vietnam.
pub async fn spawn_app_with(
    dir: tempfile::TempDir,
    config: &Path,
    env: &[(&str, &str)],
) -> TestApp {
    let stderr_path = dir.path().join("stderr.log");
    let stderr = std::fs::File::create(&stderr_path).expect("stderr log");
    let mut child = Command::new(env!("CARGO_BIN_EXE_loaxa"))
        .arg("serve")
        .arg("--config")
        .arg(config)
        .env("LOAXA_LISTEN", "127.0.0.1:0")
        .env("LOAXA_DATA_DIR", dir.path().join("data"))
        .env("LOAXA_ADMIN_TOKEN", TOKEN)
        .env("LOAXA_RTP_PORT", "0")
        .env("RUST_LOG", "info,symphonia=warn")
        .env("LOAXA_QUIET_HOURS", "")
        .env("LOAXA_SCHEDULES_DIR", dir.path().join("schedules"))
        .envs(env.iter().copied())
        .stdout(Stdio::piped())
        .stderr(Stdio::from(stderr))
        .spawn()
        .expect("start loaxa");
    let stdout = child.stdout.take().expect("stdout");
    let base = tokio::task::spawn_blocking(move || {
        let mut lines = BufReader::new(stdout).lines();
        for line in lines.by_ref() {
            let line = line.expect("read stdout");
            if let Some(rest) = line.strip_prefix("listening on ") {
                // Keep draining stdout so the daemon never blocks on a full pipe.
                std::thread::spawn(move || for _ in lines {});
                return rest.to_string();
            }
        }
        panic!("loaxa exited before listening");
    })
    .await
    .expect("read listening line");
    TestApp {
        base,
        client: reqwest::Client::new(),
        child: Some(child),
        dir,
        stderr_path,
    }
}

impl Drop for TestApp {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl TestApp {
    pub fn url(&self, path: &str) -> String {
        format!("{}{}", self.base, path)
    }

    pub fn stderr(&self) -> String {
        std::fs::read_to_string(&self.stderr_path).unwrap_or_default()
    }

    pub async fn get(&self, path: &str) -> reqwest::Response {
        self.client
            .get(self.url(path))
            .bearer_auth(TOKEN)
            .send()
            .await
            .expect("GET")
    }

    pub async fn post_json(&self, path: &str, body: &Value) -> reqwest::Response {
        self.client
            .post(self.url(path))
            .bearer_auth(TOKEN)
            .json(body)
            .send()
            .await
            .expect("POST")
    }

    pub async fn json_ok(&self, path: &str) -> Value {
        let r = self.get(path).await;
        assert_eq!(r.status(), 200, "GET {path}");
        r.json().await.expect("json")
    }

    pub async fn create_area(&self, code: &str, parent: Option<&str>) {
        let r = self
            .post_json(
                "/api/v1/areas",
                &json!({"code": code, "name": format!("Area {code}"), "kind": "commune", "parent_code": parent}),
            )
            .await;
        assert_eq!(
            r.status(),
            201,
            "create area {code}: {}",
            r.text().await.unwrap_or_default()
        );
    }

    pub async fn create_cluster(&self, area: &str, codec: &str, address: SocketAddr) -> String {
        let r = self
            .post_json(
                "/api/v1/clusters",
                &json!({"name": format!("Cụm {address}"), "area_code": area, "codec": codec,
                        "endpoint": {"mode": "unicast", "address": address.to_string()}}),
            )
            .await;
        assert_eq!(r.status(), 201, "create cluster");
        let v: Value = r.json().await.expect("json");
        v["id"].as_str().expect("id").to_string()
    }

    pub async fn upload(&self, path: &Path, title: &str) -> reqwest::Response {
        let bytes = std::fs::read(path).expect("fixture");
        let name = path.file_name().unwrap().to_string_lossy().to_string();
        let form = reqwest::multipart::Form::new()
            .part(
                "file",
                reqwest::multipart::Part::bytes(bytes).file_name(name),
            )
            .text("title", title.to_string())
            .text("topic", "test");
        self.client
            .post(self.url("/api/v1/audio"))
            .bearer_auth(TOKEN)
            .multipart(form)
            .send()
            .await
            .expect("upload")
    }

    pub async fn upload_ok(&self, path: &Path) -> Value {
        let r = self.upload(path, "Thông báo").await;
        assert_eq!(r.status(), 201, "upload {}", path.display());
        r.json().await.expect("json")
    }

    pub async fn broadcast(&self, audio_id: &str, clusters: &[&str]) -> String {
        let r = self
            .post_json(
                "/api/v1/broadcasts",
                &json!({"audio_ids": [audio_id], "targets": {"clusters": clusters}}),
            )
            .await;
        assert_eq!(r.status(), 202, "broadcast");
        let v: Value = r.json().await.expect("json");
        v["id"].as_str().expect("id").to_string()
    }

    /// Polls a broadcast until its status is `want` (or the deadline passes).
    pub async fn wait_status(&self, id: &str, want: &str, within: Duration) -> Value {
        let deadline = Instant::now() + within;
        loop {
            let v = self.json_ok(&format!("/api/v1/broadcasts/{id}")).await;
            if v["status"] == want || Instant::now() > deadline {
                return v;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

/// A real RTP receiver: an RTP socket on a free even port with its RTCP socket on +1.
pub struct Receiver {
    pub rtp: UdpSocket,
    pub rtcp: UdpSocket,
}

impl Receiver {
    pub fn bind() -> Receiver {
        for _ in 0..200 {
            let rtp = UdpSocket::bind("127.0.0.1:0").expect("bind");
            let port = rtp.local_addr().unwrap().port();
            if !port.is_multiple_of(2) || port == u16::MAX {
                continue;
            }
            if let Ok(rtcp) = UdpSocket::bind(("127.0.0.1", port + 1)) {
                rtp.set_read_timeout(Some(Duration::from_millis(200)))
                    .unwrap();
                rtcp.set_read_timeout(Some(Duration::from_millis(200)))
                    .unwrap();
                return Receiver { rtp, rtcp };
            }
        }
        panic!("no free RTP/RTCP port pair");
    }

    pub fn addr(&self) -> SocketAddr {
        self.rtp.local_addr().unwrap()
    }
}

/// One received datagram and when it arrived.
#[derive(Clone)]
pub struct Datagram {
    pub at: Instant,
    pub bytes: Vec<u8>,
}

/// Receives on both sockets until the stream goes quiet (800 ms without RTP after the
/// first packet), an RTCP BYE arrives, or `limit` passes. A cluster's RTP session outlives
/// each programme, so the end of a programme is silence, not BYE.
pub fn receive_stream(rx: &Receiver, limit: Duration) -> (Vec<Datagram>, Vec<Datagram>) {
    let rtp = rx.rtp.try_clone().unwrap();
    let done = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let rtp_done = done.clone();
    let rtp_thread = std::thread::spawn(move || {
        let mut out = Vec::new();
        let mut buf = [0u8; 2048];
        let start = Instant::now();
        let mut quiet_since = Instant::now();
        while start.elapsed() < limit {
            match rtp.recv(&mut buf) {
                Ok(n) => {
                    out.push(Datagram {
                        at: Instant::now(),
                        bytes: buf[..n].to_vec(),
                    });
                    quiet_since = Instant::now();
                }
                Err(_) => {
                    if !out.is_empty() && quiet_since.elapsed() > Duration::from_millis(800) {
                        break;
                    }
                }
            }
        }
        rtp_done.store(true, std::sync::atomic::Ordering::Release);
        out
    });
    let mut rtcp = Vec::new();
    let mut buf = [0u8; 2048];
    let start = Instant::now();
    while start.elapsed() < limit && !done.load(std::sync::atomic::Ordering::Acquire) {
        if let Ok(n) = rx.rtcp.recv(&mut buf) {
            let bytes = buf[..n].to_vec();
            // A compound packet whose last part is BYE (packet type 203).
            let is_bye = contains_rtcp_type(&bytes, 203);
            rtcp.push(Datagram {
                at: Instant::now(),
                bytes,
            });
            if is_bye {
                break;
            }
        }
    }
    (rtp_thread.join().unwrap(), rtcp)
}

/// Whether a compound RTCP packet contains a packet of `pt`.
pub fn contains_rtcp_type(mut bytes: &[u8], pt: u8) -> bool {
    while bytes.len() >= 4 {
        if bytes[1] == pt {
            return true;
        }
        let words = u16::from_be_bytes([bytes[2], bytes[3]]) as usize;
        let len = (words + 1) * 4;
        if len > bytes.len() {
            return false;
        }
        bytes = &bytes[len..];
    }
    false
}

/// Parsed fixed RTP header.
#[derive(Debug, Clone, Copy)]
pub struct RtpHeader {
    pub version: u8,
    pub padding: bool,
    pub extension: bool,
    pub csrc_count: u8,
    pub marker: bool,
    pub payload_type: u8,
    pub sequence: u16,
    pub timestamp: u32,
    pub ssrc: u32,
}

pub fn parse_rtp(b: &[u8]) -> (RtpHeader, &[u8]) {
    assert!(b.len() >= 12, "short RTP packet");
    let h = RtpHeader {
        version: b[0] >> 6,
        padding: b[0] & 0x20 != 0,
        extension: b[0] & 0x10 != 0,
        csrc_count: b[0] & 0x0F,
        marker: b[1] & 0x80 != 0,
        payload_type: b[1] & 0x7F,
        sequence: u16::from_be_bytes([b[2], b[3]]),
        timestamp: u32::from_be_bytes([b[4], b[5], b[6], b[7]]),
        ssrc: u32::from_be_bytes([b[8], b[9], b[10], b[11]]),
    };
    (h, &b[12..])
}

/// Decodes a WAV file with the crate's own decoder, mixed to mono, resampled to `rate`.
pub fn reference_audio(path: &Path, rate: u32) -> Vec<f32> {
    let data = std::fs::read(path).expect("fixture");
    let ext = path.extension().and_then(|e| e.to_str());
    let decoded =
        loaxa::media::decode(&data, ext, loaxa::media::DecodeLimits::default()).expect("decode");
    loaxa::media::resample(&decoded.mono, decoded.sample_rate, rate).expect("resample")
}

/// RMS envelope in windows of `window` samples.
pub fn envelope(samples: &[f32], window: usize) -> Vec<f64> {
    samples
        .chunks(window)
        .map(|c| {
            (c.iter().map(|&s| f64::from(s) * f64::from(s)).sum::<f64>() / c.len() as f64).sqrt()
        })
        .collect()
}

/// Pearson correlation of two equally long series.
pub fn correlation(a: &[f64], b: &[f64]) -> f64 {
    let n = a.len().min(b.len());
    let (a, b) = (&a[..n], &b[..n]);
    let ma = a.iter().sum::<f64>() / n as f64;
    let mb = b.iter().sum::<f64>() / n as f64;
    let cov: f64 = a.iter().zip(b).map(|(x, y)| (x - ma) * (y - mb)).sum();
    let va: f64 = a.iter().map(|x| (x - ma).powi(2)).sum();
    let vb: f64 = b.iter().map(|y| (y - mb).powi(2)).sum();
    cov / (va.sqrt() * vb.sqrt())
}

/// Best correlation over lags of up to `max_lag` windows either way (receivers may start
/// a few ms late or early relative to the source).
pub fn best_correlation(a: &[f64], b: &[f64], max_lag: usize) -> f64 {
    let mut best = f64::MIN;
    for lag in 0..=max_lag {
        if lag < a.len() {
            best = best.max(correlation(&a[lag..], b));
        }
        if lag < b.len() {
            best = best.max(correlation(a, &b[lag..]));
        }
    }
    best
}
