//! A local radio station for relay tests and the relay benchmark: a real HTTP server
//! streaming MP3 and AAC at real-time rate from wherever its programme is now (so a
//! listener joins mid-frame), misbehaving on cue by path: it pauses, sends silence, drops
//! the connection, or answers with an HTML page. It also keeps the JSON POSTed to
//! `/hook` (health webhooks). Needs ffmpeg to encode its programmes.
#![allow(dead_code)]

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// 64 kb/s CBR MP3: exactly 8000 bytes a second.
pub const MP3_BYTES_PER_S: f64 = 8000.0;

/// What the station sends on a path.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Show {
    /// The programme, live.
    Live,
    /// The first connection closes after this long; later ones are live.
    DropAfter(Duration),
    /// The first connection goes silent (stays open, sends nothing) after this long.
    StallAfter(Duration),
    /// Digital silence, live.
    DeadAir,
    /// An HTML error page as text/html.
    Page,
    /// An HTML page that claims to be audio/mpeg.
    PageAsAudio,
}

pub struct Programme {
    content_type: &'static str,
    bytes: Vec<u8>,
    bytes_per_s: f64,
}

/// One connection the station served: when it began and where in the programme.
#[derive(Debug, Clone)]
pub struct Served {
    pub path: String,
    pub at: Instant,
    pub from_byte: usize,
}

pub struct Station {
    pub addr: SocketAddr,
    pub epoch: Instant,
    pub served: Arc<Mutex<Vec<Served>>>,
    pub hooks: Arc<Mutex<Vec<Value>>>,
    pub dir: tempfile::TempDir,
}

pub fn ffmpeg(args: &[&str]) {
    let out = Command::new("ffmpeg")
        .args(["-hide_banner", "-loglevel", "error", "-y"])
        .args(args)
        .output()
        .expect("ffmpeg is installed (.ci/run installs it)");
    assert!(
        out.status.success(),
        "ffmpeg {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// The programme as the station's listeners hear it: decoded by ffmpeg, mono, 8 kHz.
pub fn decoded(path: &Path) -> Vec<f32> {
    let out = Command::new("ffmpeg")
        .args(["-hide_banner", "-loglevel", "error", "-i"])
        .arg(path)
        .args(["-ac", "1", "-ar", "8000", "-f", "f32le", "-"])
        .output()
        .expect("ffmpeg");
    assert!(out.status.success());
    out.stdout
        .chunks_exact(4)
        .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
        .collect()
}

impl Station {
    /// Encodes the announcement as a 64 kb/s MP3 and an AAC (ADTS) stream, plus an MP3 of
    /// silence, and starts serving them.
    pub async fn start() -> Station {
        let dir = tempfile::tempdir().expect("temp dir");
        let source = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/announce-vi.mp3");
        let mp3 = dir.path().join("live.mp3");
        let aac = dir.path().join("live.aac");
        let silent = dir.path().join("silent.mp3");
        let src = source.to_str().unwrap();
        // No Xing/ID3 header: a live stream is frames only.
        ffmpeg(&[
            "-i",
            src,
            "-ac",
            "1",
            "-ar",
            "44100",
            "-b:a",
            "64k",
            "-write_xing",
            "0",
            "-id3v2_version",
            "0",
            "-f",
            "mp3",
            mp3.to_str().unwrap(),
        ]);
        ffmpeg(&[
            "-i",
            src,
            "-ac",
            "1",
            "-ar",
            "44100",
            "-c:a",
            "aac",
            "-b:a",
            "64k",
            "-f",
            "adts",
            aac.to_str().unwrap(),
        ]);
        ffmpeg(&[
            "-f",
            "lavfi",
            "-i",
            "anullsrc=r=44100:cl=mono",
            "-t",
            "10",
            "-b:a",
            "64k",
            "-write_xing",
            "0",
            "-id3v2_version",
            "0",
            "-f",
            "mp3",
            silent.to_str().unwrap(),
        ]);
        let aac_bytes = std::fs::read(&aac).unwrap();
        let aac_rate = aac_bytes.len() as f64 / (decoded(&aac).len() as f64 / 8000.0);
        let mut programmes = HashMap::new();
        for (name, content_type, bytes, rate) in [
            (
                "mp3",
                "audio/mpeg",
                std::fs::read(&mp3).unwrap(),
                MP3_BYTES_PER_S,
            ),
            ("aac", "audio/aac", aac_bytes, aac_rate),
            (
                "silent",
                "audio/mpeg",
                std::fs::read(&silent).unwrap(),
                MP3_BYTES_PER_S,
            ),
        ] {
            programmes.insert(
                name,
                Arc::new(Programme {
                    content_type,
                    bytes,
                    bytes_per_s: rate,
                }),
            );
        }
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let epoch = Instant::now();
        let served: Arc<Mutex<Vec<Served>>> = Arc::default();
        let hooks: Arc<Mutex<Vec<Value>>> = Arc::default();
        let (s, h) = (served.clone(), hooks.clone());
        tokio::spawn(async move {
            while let Ok((socket, _)) = listener.accept().await {
                let programmes = programmes.clone();
                let (s, h) = (s.clone(), h.clone());
                tokio::spawn(async move {
                    let _ = serve(socket, &programmes, epoch, &s, &h).await;
                });
            }
        });
        Station {
            addr,
            epoch,
            served,
            hooks,
            dir,
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    pub fn served(&self, path: &str) -> Vec<Served> {
        self.served
            .lock()
            .unwrap()
            .iter()
            .filter(|s| s.path == path)
            .cloned()
            .collect()
    }

    pub fn mp3_path(&self) -> PathBuf {
        self.dir.path().join("live.mp3")
    }
}

/// Which show a path is, and which programme it carries.
fn show_of(path: &str) -> (Show, &'static str) {
    match path {
        "/live.mp3" => (Show::Live, "mp3"),
        "/live.aac" => (Show::Live, "aac"),
        "/drop.mp3" => (Show::DropAfter(Duration::from_millis(1500)), "mp3"),
        "/stall.mp3" => (Show::StallAfter(Duration::from_millis(1500)), "mp3"),
        "/silent.mp3" => (Show::DeadAir, "silent"),
        "/fake.mp3" => (Show::PageAsAudio, "mp3"),
        _ => (Show::Page, "mp3"),
    }
}

async fn serve(
    mut socket: tokio::net::TcpStream,
    programmes: &HashMap<&'static str, Arc<Programme>>,
    epoch: Instant,
    served: &Mutex<Vec<Served>>,
    hooks: &Mutex<Vec<Value>>,
) -> std::io::Result<()> {
    let mut head = Vec::new();
    let mut buf = [0u8; 1024];
    while !head.windows(4).any(|w| w == b"\r\n\r\n") {
        let n = socket.read(&mut buf).await?;
        if n == 0 || head.len() > 16 * 1024 {
            return Ok(());
        }
        head.extend_from_slice(&buf[..n]);
    }
    let text = String::from_utf8_lossy(&head).to_string();
    let mut words = text.split_whitespace();
    let (method, path) = (words.next().unwrap_or(""), words.next().unwrap_or("/"));
    if method == "POST" {
        // A webhook: read the body and keep it.
        let length: usize = text
            .lines()
            .find_map(|l| {
                let (k, v) = l.split_once(':')?;
                k.eq_ignore_ascii_case("content-length")
                    .then(|| v.trim().parse().ok())?
            })
            .unwrap_or(0);
        let start = text.find("\r\n\r\n").unwrap() + 4;
        let mut body = head[start..].to_vec();
        while body.len() < length {
            let n = socket.read(&mut buf).await?;
            if n == 0 {
                break;
            }
            body.extend_from_slice(&buf[..n]);
        }
        if let Ok(v) = serde_json::from_slice(&body) {
            hooks.lock().unwrap().push(v);
        }
        socket
            .write_all(b"HTTP/1.1 204 No Content\r\nConnection: close\r\n\r\n")
            .await?;
        return Ok(());
    }
    let (show, programme) = show_of(path);
    let page = "<!DOCTYPE html><html><body><h1>503 Service Unavailable</h1></body></html>";
    match show {
        Show::Page => {
            let answer = format!(
                "HTTP/1.1 200 OK\r\nContent-Type: text/html; charset=utf-8\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{page}",
                page.len()
            );
            return socket.write_all(answer.as_bytes()).await;
        }
        Show::PageAsAudio => {
            let answer = format!(
                "HTTP/1.0 200 OK\r\nContent-Type: audio/mpeg\r\nicy-name: fake\r\n\r\n{}",
                page.repeat(50)
            );
            return socket.write_all(answer.as_bytes()).await;
        }
        _ => {}
    }
    let p = &programmes[programme];
    // The station's programme runs on its own clock: a listener joins wherever it is,
    // usually in the middle of a frame.
    let now = Instant::now();
    let from_byte = ((now - epoch).as_secs_f64() * p.bytes_per_s) as usize % p.bytes.len();
    let first = {
        let mut served = served.lock().unwrap();
        let first = !served.iter().any(|s| s.path == path);
        served.push(Served {
            path: path.to_string(),
            at: now,
            from_byte,
        });
        first
    };
    socket
        .write_all(
            format!(
                "HTTP/1.0 200 OK\r\nContent-Type: {}\r\nicy-name: Dai Tieng noi test\r\n\r\n",
                p.content_type
            )
            .as_bytes(),
        )
        .await?;
    let mut sent = 0usize;
    loop {
        tokio::time::sleep(Duration::from_millis(20)).await;
        let elapsed = now.elapsed();
        match show {
            Show::DropAfter(after) if first && elapsed >= after => return Ok(()),
            Show::StallAfter(after) if first && elapsed >= after => {
                // Holds the connection open and sends nothing more.
                tokio::time::sleep(Duration::from_secs(60)).await;
                return Ok(());
            }
            _ => {}
        }
        let due = (elapsed.as_secs_f64() * p.bytes_per_s) as usize;
        while sent < due {
            let at = (from_byte + sent) % p.bytes.len();
            let n = (due - sent).min(p.bytes.len() - at);
            socket.write_all(&p.bytes[at..at + n]).await?;
            sent += n;
        }
    }
}

/// Stream-in to RTP-out latency of each received 20 ms packet: packet `k` carries the
/// station's audio at window `lag + k` of the (looped) programme, which the station sent
/// at a known instant, pacing in real time from where connection `conn` joined.
pub fn latencies_ms(arrivals: &[Instant], lag: usize, period: usize, conn: &Served) -> Vec<f64> {
    let joined_window = (conn.from_byte as f64 / MP3_BYTES_PER_S / 0.020) as usize;
    let mut out: Vec<f64> = arrivals
        .iter()
        .enumerate()
        .map(|(k, at)| {
            let window = (lag + k) % period;
            let since_join = (window + period - joined_window % period) % period;
            let sent_at = conn.at + Duration::from_millis(20 * since_join as u64);
            at.saturating_duration_since(sent_at).as_secs_f64() * 1000.0
        })
        .collect();
    out.sort_by(f64::total_cmp);
    out
}

/// RTP packets as they arrive on a receiver, for `limit` (whatever gaps the stream has).
pub fn collect(rx: &crate::common::Receiver, limit: Duration) -> Vec<crate::common::Datagram> {
    let mut out = Vec::new();
    let mut buf = [0u8; 2048];
    let start = Instant::now();
    while start.elapsed() < limit {
        if let Ok(n) = rx.rtp.recv(&mut buf) {
            out.push(crate::common::Datagram {
                at: Instant::now(),
                bytes: buf[..n].to_vec(),
            });
        }
    }
    out
}
