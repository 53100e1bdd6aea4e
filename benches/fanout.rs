//! Fan-out benchmark: one clip streamed as PCMU (20 ms packets) to N destinations on this
//! machine, by three subjects run one after the other in the same run, each a child
//! process measured the same way:
//! - `loaxa`: the real daemon (release build), N unicast clusters below one area, one
//!   broadcast to the area;
//! - `floor`: this binary re-executed as a bare loop sending the same number of pre-built
//!   packets with `sendmmsg` on the same 20 ms absolute schedule, with no decoding,
//!   arbitration or bookkeeping. On loopback most of the cost is the kernel's, so this is
//!   the physical limit to compare against;
//! - `gstreamer`: `gst-launch-1.0 … ! rtppcmupay ! multiudpsink` on the same MP3 and the
//!   same destinations.
//!
//! Run: `cargo bench --bench fanout -- --clusters 1000 --seconds 60`
//! (options: `--unreachable-pct P` sends P% of the destinations to a port nobody listens
//! on and leaves them out of the figures; `--only loaxa,floor,gstreamer` picks subjects).
//! Needs ffmpeg (to make the clip) and, for the GStreamer subject, Debian's
//! `apt-get install gstreamer1.0-tools gstreamer1.0-plugins-base gstreamer1.0-plugins-good`.
//!
//! Destination i is `127.1.(i / 250).(i % 250 + 1):PORT`: all of 127/8 is loopback, so
//! one socket bound to `0.0.0.0:PORT` receives every stream, told apart by the
//! destination address (`IP_PKTINFO`). Arrival times are the kernel's receive timestamps
//! (`SO_TIMESTAMPNS`), which on loopback are taken while the sender is still in its send
//! call, so the receiver's own scheduling on a busy machine does not show in the figures.
//!
//! Figures, per subject:
//! - CPU seconds per stream-minute: the child's user + system CPU for the job (for loaxa
//!   from `/proc/PID/stat` between the broadcast request and the broadcast's end being
//!   recorded, so cluster set-up and upload are left out but preparing the clip and the
//!   as-run bookkeeping are in; for the others their whole life, decoding included),
//!   divided by N × S / 60; and the same CPU as a percentage of one core over S seconds
//!   (or over the streams' real span, if the sender fell behind real time);
//! - peak RSS (VmHWM of the child, read until it exits);
//! - pacing: packet k of a stream should arrive at (that stream's first arrival + k·20 ms),
//!   k counted from the RTP sequence number so a lost packet does not shift the grid; p50,
//!   p99 and max of |deviation| over every packet of every reachable stream, and drift:
//!   the median over streams of the last packet's deviation;
//! - spread: per tick k, the time from the first to the last stream's packet k (p50, p99);
//! - loss: packets missing against the longest stream, over all reachable streams.

use std::collections::HashMap;
use std::io::{BufRead, BufReader};
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4, UdpSocket};
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use serde_json::{Value, json};
use socket2::{Domain, Protocol, Socket, Type};

const TOKEN: &str = "bench-admin-token-0123456789";
/// The packet time of every subject.
const PTIME_NS: i64 = 20_000_000;
/// PCMU at 8 kHz: samples (and payload bytes) per 20 ms packet.
const SAMPLES_PER_PACKET: u32 = 160;
/// Destination addresses per third octet of 127.1.x.y (y = 1..=250).
const HOSTS_PER_OCTET: usize = 250;
/// Most destinations the 127.1.0.0/16 scheme can name.
const MAX_CLUSTERS: usize = HOSTS_PER_OCTET * HOSTS_PER_OCTET;
/// `sendmmsg` takes at most UIO_MAXIOV messages per call.
const SEND_BATCH: usize = 1024;
/// Datagrams taken per `recvmmsg` call.
const RECV_BATCH: usize = 512;
/// Receive buffer asked for (root may exceed rmem_max): at N = 10 000 one tick is about
/// 10 MB of socket memory, so this lets the receiver fall behind by dozens of ticks
/// without a drop.
const RECV_BUFFER_BYTES: i32 = 512 << 20;
/// The stream is over when nothing arrived for this long.
const QUIET: Duration = Duration::from_secs(2);
/// Once the sender has exited, this much silence is enough.
const QUIET_AFTER_EXIT: Duration = Duration::from_millis(300);
/// Absolute deviations are counted in 1 µs bins up to this many µs (the rest in the last).
const HISTOGRAM_US: usize = 1_000_000;
/// How long to wait for a broadcast's end to be recorded once its packets stopped.
const SETTLE_LIMIT: Duration = Duration::from_secs(300);
/// Clusters created concurrently over HTTP.
const CREATE_IN_FLIGHT: usize = 16;
/// A `multiudpsink clients=` value must fit in one exec argument (128 KiB on Linux).
const GST_CLIENTS_PER_SINK: usize = 4000;
const GST_INSTALL: &str = "apt-get install -y gstreamer1.0-tools gstreamer1.0-plugins-base \
                           gstreamer1.0-plugins-good";

fn main() {
    let options = match Options::parse(std::env::args().skip(1)) {
        Ok(o) => o,
        Err(e) => {
            eprintln!("fanout: {e:#}\n{USAGE}");
            std::process::exit(2);
        }
    };
    let result = match options.floor_child {
        Some(plan) => floor_child(&plan),
        None => run(&options),
    };
    if let Err(e) = result {
        eprintln!("fanout: {e:#}");
        std::process::exit(1);
    }
}

const USAGE: &str = "usage: cargo bench --bench fanout -- [--clusters N] [--seconds S] \
                     [--unreachable-pct P] [--only loaxa,floor,gstreamer]";

// ---------------------------------------------------------------------------------------
// Options and the plan every subject follows
// ---------------------------------------------------------------------------------------

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Subject {
    Loaxa,
    Floor,
    Gstreamer,
}

impl Subject {
    fn name(self) -> &'static str {
        match self {
            Subject::Loaxa => "loaxa",
            Subject::Floor => "floor",
            Subject::Gstreamer => "gstreamer",
        }
    }
}

struct Options {
    plan: Plan,
    only: Vec<Subject>,
    /// Set in the re-executed child that runs the floor loop.
    floor_child: Option<Plan>,
}

impl Options {
    /// Unknown flags are ignored: `cargo bench` adds `--bench`.
    fn parse(mut args: impl Iterator<Item = String>) -> Result<Options> {
        let mut plan = Plan {
            clusters: 1000,
            seconds: 60,
            unreachable_pct: 0,
            port: 0,
            dead_port: 0,
        };
        let mut only = vec![Subject::Loaxa, Subject::Floor, Subject::Gstreamer];
        let mut floor_child = false;
        while let Some(arg) = args.next() {
            let mut value = || args.next().with_context(|| format!("{arg} needs a value"));
            match arg.as_str() {
                "--clusters" => plan.clusters = value()?.parse().context("--clusters")?,
                "--seconds" => plan.seconds = value()?.parse().context("--seconds")?,
                "--unreachable-pct" => {
                    plan.unreachable_pct = value()?.parse().context("--unreachable-pct")?;
                }
                "--only" => only = parse_subjects(&value()?)?,
                "--port" => plan.port = value()?.parse().context("--port")?,
                "--dead-port" => plan.dead_port = value()?.parse().context("--dead-port")?,
                "--floor-child" => floor_child = true,
                _ => {}
            }
        }
        if !(1..=MAX_CLUSTERS).contains(&plan.clusters) {
            bail!("--clusters must be between 1 and {MAX_CLUSTERS}");
        }
        if plan.seconds == 0 || plan.unreachable_pct >= 100 {
            bail!("--seconds must be positive and --unreachable-pct below 100");
        }
        Ok(Options {
            plan,
            only,
            floor_child: floor_child.then_some(plan),
        })
    }
}

fn parse_subjects(list: &str) -> Result<Vec<Subject>> {
    list.split(',')
        .map(|s| match s.trim() {
            "loaxa" => Ok(Subject::Loaxa),
            "floor" => Ok(Subject::Floor),
            "gstreamer" | "gst" => Ok(Subject::Gstreamer),
            other => bail!("unknown subject `{other}` (loaxa, floor, gstreamer)"),
        })
        .collect()
}

/// The job: N destinations, S seconds, which of them are unreachable, and the ports.
#[derive(Debug, Clone, Copy)]
struct Plan {
    clusters: usize,
    seconds: u32,
    unreachable_pct: u32,
    /// Where the receiver listens (chosen per subject).
    port: u16,
    /// A port nobody listens on: the kernel answers with ICMP port unreachable.
    dead_port: u16,
}

impl Plan {
    /// The first P of every 100 destinations are unreachable, spread over the batch.
    fn reachable(&self, i: usize) -> bool {
        (i % 100) as u32 >= self.unreachable_pct
    }

    fn reachable_count(&self) -> usize {
        (0..self.clusters).filter(|&i| self.reachable(i)).count()
    }

    fn destination(&self, i: usize) -> SocketAddrV4 {
        let port = if self.reachable(i) {
            self.port
        } else {
            self.dead_port
        };
        SocketAddrV4::new(host(i), port)
    }

    fn destinations(&self) -> Vec<SocketAddrV4> {
        (0..self.clusters).map(|i| self.destination(i)).collect()
    }

    /// Which destination a datagram was addressed to, from its destination IP.
    fn stream_of(&self, ip: Ipv4Addr) -> Option<usize> {
        let [a, b, c, d] = ip.octets();
        let (c, d) = (usize::from(c), usize::from(d));
        let i = c * HOSTS_PER_OCTET + d.checked_sub(1)?;
        (a == 127 && b == 1 && d <= HOSTS_PER_OCTET && i < self.clusters).then_some(i)
    }

    fn stream_minutes(&self) -> f64 {
        self.clusters as f64 * f64::from(self.seconds) / 60.0
    }
}

fn host(i: usize) -> Ipv4Addr {
    Ipv4Addr::new(
        127,
        1,
        (i / HOSTS_PER_OCTET) as u8,
        (i % HOSTS_PER_OCTET + 1) as u8,
    )
}

// ---------------------------------------------------------------------------------------
// The run: each subject in turn, then the table
// ---------------------------------------------------------------------------------------

/// What one subject cost and what the receiver saw.
struct Measured {
    cpu_seconds: f64,
    /// For loaxa: CPU until the packets stopped, without recording the broadcast's end.
    streaming_cpu_seconds: Option<f64>,
    peak_rss_kb: u64,
    tally: Tally,
    notes: Vec<String>,
}

fn run(options: &Options) -> Result<()> {
    let plan = options.plan;
    let dir = tempfile::tempdir().context("temp dir")?;
    let clip = make_clip(dir.path(), plan.seconds)?;
    println!(
        "fanout: {} PCMU streams ({} unreachable) of a {} s MP3, 20 ms packets, \
         received on 127.1.x.y; {} cores",
        plan.clusters,
        plan.clusters - plan.reachable_count(),
        plan.seconds,
        std::thread::available_parallelism().map_or(0, |n| n.get()),
    );
    let mut rows = Vec::new();
    for &subject in &options.only {
        let mut plan = plan;
        plan.dead_port = free_port()?;
        println!("-- {} ...", subject.name());
        let measured = match subject {
            Subject::Loaxa => run_loaxa(&mut plan, &clip, dir.path()),
            Subject::Floor => run_floor(&mut plan),
            Subject::Gstreamer => run_gstreamer(&mut plan, &clip),
        };
        match measured {
            Ok(m) => {
                for note in &m.notes {
                    println!("   {note}");
                }
                println!("   {}", tick_diagnostics(&m.tally));
                if m.tally.socket_drops > 0 {
                    println!(
                        "   the receiving socket overflowed and dropped {} datagrams: loss of \
                         the measuring side, not the sender",
                        m.tally.socket_drops
                    );
                }
                rows.push(Figures::new(subject, &plan, &m));
            }
            Err(e) => println!("   {} skipped: {e:#}", subject.name()),
        }
    }
    print_table(&rows);
    print_ratios(&rows);
    Ok(())
}

/// An MP3 of `seconds` of a speech-like tone: a 220 Hz voice with its 2nd and 3rd
/// harmonics, amplitude-modulated at syllable rate.
fn make_clip(dir: &Path, seconds: u32) -> Result<PathBuf> {
    let path = dir.join("clip.mp3");
    let source = format!(
        "aevalsrc=(0.5*sin(2*PI*220*t)+0.25*sin(2*PI*440*t)+0.12*sin(2*PI*660*t))\
         *(0.55+0.45*sin(2*PI*4*t)):s=44100:d={seconds}"
    );
    let status = Command::new("ffmpeg")
        .args(["-y", "-loglevel", "error", "-f", "lavfi", "-i", &source])
        .args(["-ac", "1", "-c:a", "libmp3lame", "-b:a", "64k"])
        .arg(&path)
        .status()
        .context("run ffmpeg to make the clip (apt-get install ffmpeg)")?;
    if !status.success() {
        bail!("ffmpeg could not make the clip: {status}");
    }
    Ok(path)
}

fn free_port() -> Result<u16> {
    Ok(UdpSocket::bind("0.0.0.0:0")?.local_addr()?.port())
}

// ---------------------------------------------------------------------------------------
// Subject 1: the loaxa daemon
// ---------------------------------------------------------------------------------------

fn run_loaxa(plan: &mut Plan, clip: &Path, dir: &Path) -> Result<Measured> {
    let data = dir.join("loaxa");
    std::fs::create_dir_all(&data)?;
    let config = data.join("loaxa.toml");
    std::fs::write(
        &config,
        "[schedule]\nquiet_hours = \"\"\n[audio]\nchime = false\n",
    )?;
    let (child, base) = spawn_daemon(&config, &data)?;
    let pid = child.id() as i32;
    let outcome = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?
        .block_on(drive_loaxa(plan, clip, base, pid));
    let peak_rss_kb = vm_hwm_kb(pid).unwrap_or(0);
    terminate(pid);
    let mut measured = outcome?;
    measured.peak_rss_kb = peak_rss_kb;
    measured.notes.extend(log_summary(&data.join("stderr.log")));
    Ok(measured)
}

/// Starts `loaxa serve` on 127.0.0.1:0 and returns it with its base URL.
fn spawn_daemon(config: &Path, data: &Path) -> Result<(Child, String)> {
    let log = std::fs::File::create(data.join("stderr.log"))?;
    let mut child = Command::new(env!("CARGO_BIN_EXE_loaxa"))
        .arg("serve")
        .arg("--config")
        .arg(config)
        .env("LOAXA_LISTEN", "127.0.0.1:0")
        .env("LOAXA_DATA_DIR", data)
        .env("LOAXA_ADMIN_TOKEN", TOKEN)
        .env("LOAXA_RTP_PORT", "0")
        // The daemon's own default, whatever the caller's environment says.
        .env("RUST_LOG", "info,symphonia=warn")
        .stdout(Stdio::piped())
        .stderr(log)
        .spawn()
        .context("start the loaxa daemon")?;
    let stdout = child.stdout.take().context("daemon stdout")?;
    let mut lines = BufReader::new(stdout).lines();
    let base = lines
        .by_ref()
        .map_while(Result::ok)
        .find_map(|l| l.strip_prefix("listening on ").map(str::to_string))
        .with_context(|| format!("loaxa exited before listening; see {}", data.display()))?;
    // Keep draining stdout so the daemon never blocks on a full pipe.
    std::thread::spawn(move || for _ in lines {});
    Ok((child, base))
}

/// Sets the job up over HTTP, then measures the daemon from the broadcast request to the
/// streams' end (peak RSS is filled in once the daemon is reaped).
async fn drive_loaxa(plan: &mut Plan, clip: &Path, base: String, pid: i32) -> Result<Measured> {
    let api = Api {
        base,
        http: reqwest::Client::new(),
    };
    let receiver = Receiver::bind()?;
    plan.port = receiver.port;
    let mut notes = Vec::new();
    api.post(
        "/api/v1/areas",
        json!({"code": "bench", "name": "Bench", "kind": "commune"}),
    )
    .await?;
    let started = Instant::now();
    create_clusters(&api, plan).await?;
    let took = started.elapsed().as_secs_f64();
    notes.push(format!(
        "{} clusters created over HTTP in {took:.1} s ({:.0}/s, {CREATE_IN_FLIGHT} in flight)",
        plan.clusters,
        plan.clusters as f64 / took
    ));
    let audio = api.upload(clip).await?;
    let audio_id = audio["id"].as_str().context("upload answer has no id")?;

    let stop = Arc::new(AtomicBool::new(false));
    let receiving = receiver.spawn(*plan, stop.clone());
    let cpu_before = process_cpu_seconds(pid)?;
    let requested = Instant::now();
    let broadcast = api
        .post(
            "/api/v1/broadcasts",
            json!({"audio_ids": [audio_id], "targets": {"areas": ["bench"]}}),
        )
        .await?;
    while !receiving.is_finished() {
        if !process_alive(pid) {
            stop.store(true, Ordering::Relaxed);
            bail!("the daemon exited during the broadcast");
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let streamed_cpu = process_cpu_seconds(pid)? - cpu_before;
    let tally = join(receiving)?;
    let (Some(first), Some(last)) = (tally.first_arrival, tally.last_arrival) else {
        bail!("no packet arrived");
    };
    notes.push(format!(
        "first packet {:.0} ms after the broadcast request (preparing the clip for air)",
        (first - wall_ns_at(requested)) as f64 / 1e6
    ));
    let id = broadcast["id"]
        .as_str()
        .context("broadcast answer has no id")?;
    let (settled, note) = settle(&api, id, last).await?;
    notes.push(note);
    // Recording the end of the broadcast is part of the job, so the window closes there.
    let cpu_seconds = process_cpu_seconds(pid)? - cpu_before;
    let per_minute = |cpu: f64| cpu / plan.stream_minutes();
    notes.push(format!(
        "daemon CPU: {streamed_cpu:.2} s ({:.6}/stream-min) until {:.0} s after the last \
         packet; {cpu_seconds:.2} s ({:.6}/stream-min) until {}",
        per_minute(streamed_cpu),
        QUIET.as_secs_f64(),
        per_minute(cpu_seconds),
        if settled {
            "the broadcast was settled (the table's figure)"
        } else {
            "the wait for it to settle ran out (the table's figure)"
        }
    ));
    Ok(Measured {
        cpu_seconds,
        streaming_cpu_seconds: Some(streamed_cpu),
        peak_rss_kb: 0,
        tally,
        notes,
    })
}

/// Waits for the broadcast to reach a final status (true if it did), and says how long
/// after its last packet that was and what it recorded as sent.
async fn settle(api: &Api, id: &str, last_packet_ns: i64) -> Result<(bool, String)> {
    let deadline = Instant::now() + SETTLE_LIMIT;
    let mut first_look = true;
    let mut pause = Duration::from_millis(250);
    loop {
        let state = api.get(&format!("/api/v1/broadcasts/{id}")).await?;
        let status = state["status"].as_str().unwrap_or("?").to_string();
        let settled = !matches!(status.as_str(), "queued" | "playing");
        if settled || Instant::now() > deadline {
            let sent: u64 = state["clusters"]
                .as_array()
                .map(|cs| cs.iter().filter_map(|c| c["packets_sent"].as_u64()).sum())
                .unwrap_or(0);
            let after = (realtime_ns() - last_packet_ns) as f64 / 1e9;
            let when = if first_look {
                format!("already at the first look, {after:.1} s after the last packet")
            } else {
                format!("{after:.1} s after the last packet")
            };
            let note =
                format!("broadcast `{status}` {when}; packets_sent over its clusters: {sent}");
            return Ok((settled, note));
        }
        // Ever more seldom: each look at a broadcast of N clusters costs the daemon CPU.
        tokio::time::sleep(pause).await;
        pause = (pause * 2).min(Duration::from_secs(5));
        first_look = false;
    }
}

/// How many warnings and errors the daemon logged, with the first few of them.
fn log_summary(path: &Path) -> Vec<String> {
    let log = std::fs::read_to_string(path).unwrap_or_default();
    let bad: Vec<&str> = log
        .lines()
        .filter(|l| l.contains(" WARN ") || l.contains(" ERROR "))
        .collect();
    let mut notes = vec![format!("daemon log: {} warnings or errors", bad.len())];
    notes.extend(bad.iter().take(3).map(|l| format!("  {l}")));
    notes
}

#[derive(Clone)]
struct Api {
    base: String,
    http: reqwest::Client,
}

impl Api {
    async fn post(&self, path: &str, body: Value) -> Result<Value> {
        let request = self.http.post(format!("{}{path}", self.base)).json(&body);
        answer(request, "POST", path).await
    }

    async fn get(&self, path: &str) -> Result<Value> {
        let request = self.http.get(format!("{}{path}", self.base));
        answer(request, "GET", path).await
    }

    async fn upload(&self, file: &Path) -> Result<Value> {
        let bytes = std::fs::read(file)?;
        let form = reqwest::multipart::Form::new()
            .part(
                "file",
                reqwest::multipart::Part::bytes(bytes).file_name("clip.mp3"),
            )
            .text("title", "fanout bench")
            .text("topic", "bench");
        let request = self
            .http
            .post(format!("{}/api/v1/audio", self.base))
            .multipart(form);
        answer(request, "POST", "/api/v1/audio").await
    }
}

async fn answer(request: reqwest::RequestBuilder, method: &str, path: &str) -> Result<Value> {
    let response = request
        .bearer_auth(TOKEN)
        .send()
        .await
        .with_context(|| format!("{method} {path}"))?;
    let status = response.status();
    let text = response.text().await?;
    if !status.is_success() {
        bail!("{method} {path}: {status}: {text}");
    }
    serde_json::from_str(&text).with_context(|| format!("{method} {path}: not JSON: {text}"))
}

async fn create_clusters(api: &Api, plan: &Plan) -> Result<()> {
    let mut in_flight = tokio::task::JoinSet::new();
    for i in 0..plan.clusters {
        if in_flight.len() >= CREATE_IN_FLIGHT {
            in_flight.join_next().await.expect("a task in flight")??;
        }
        let api = api.clone();
        let body = json!({"name": format!("bench {i}"), "area_code": "bench", "codec": "pcmu",
            "endpoint": {"mode": "unicast", "address": plan.destination(i).to_string()}});
        in_flight.spawn(async move { api.post("/api/v1/clusters", body).await });
    }
    while let Some(done) = in_flight.join_next().await {
        done??;
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------
// Subject 2: the floor, a bare batched-send loop in a child process
// ---------------------------------------------------------------------------------------

fn run_floor(plan: &mut Plan) -> Result<Measured> {
    let receiver = Receiver::bind()?;
    plan.port = receiver.port;
    let child = Command::new(std::env::current_exe()?)
        .args(["--floor-child", "--clusters", &plan.clusters.to_string()])
        .args(["--seconds", &plan.seconds.to_string()])
        .args(["--unreachable-pct", &plan.unreachable_pct.to_string()])
        .args(["--port", &plan.port.to_string()])
        .args(["--dead-port", &plan.dead_port.to_string()])
        .stdout(Stdio::piped())
        .spawn()
        .context("re-execute the bench as the floor sender")?;
    let (mut measured, mut child) = measure_sender(plan, receiver, child)?;
    if let Some(out) = child.stdout.take() {
        measured
            .notes
            .extend(BufReader::new(out).lines().map_while(Result::ok));
    }
    Ok(measured)
}

/// The floor itself: per tick, patch sequence and timestamp into N pre-built headers and
/// send them with a shared payload, 1024 per `sendmmsg`, at start + k·20 ms.
fn floor_child(plan: &Plan) -> Result<()> {
    let socket = UdpSocket::bind("0.0.0.0:0")?;
    socket.set_nonblocking(true)?;
    set_int_option(&socket, libc::SOL_SOCKET, libc::SO_SNDBUF, 4 << 20);
    let mut batch = FloorBatch::new(&plan.destinations());
    let ticks = i64::from(plan.seconds) * 1_000_000_000 / PTIME_NS;
    let start = monotonic_ns();
    let mut errors = 0u64;
    for k in 0..ticks {
        sleep_until(start + k * PTIME_NS);
        errors += batch.send(socket.as_raw_fd(), k as u32);
    }
    let sent = ticks as u64 * plan.clusters as u64 - errors;
    println!("floor sent {sent} datagrams, {errors} refused by the kernel");
    Ok(())
}

/// N RTP headers and one shared payload, laid out for `sendmmsg`.
struct FloorBatch {
    headers: Vec<[u8; 12]>,
    first_seq: Vec<u16>,
    payload: [u8; SAMPLES_PER_PACKET as usize],
    addresses: Vec<libc::sockaddr_in>,
    iovecs: Vec<[libc::iovec; 2]>,
    messages: Vec<libc::mmsghdr>,
}

impl FloorBatch {
    fn new(destinations: &[SocketAddrV4]) -> Self {
        let n = destinations.len();
        let headers = (0..n)
            .map(|i| {
                let mut h = [0u8; 12];
                h[0] = 0x80; // V=2
                h[1] = 0; // PT 0, PCMU
                h[8..].copy_from_slice(&(0x1000_0000 + i as u32).to_be_bytes());
                h
            })
            .collect();
        let addresses = destinations.iter().map(|d| sockaddr_in(*d)).collect();
        let empty = libc::iovec {
            iov_base: std::ptr::null_mut(),
            iov_len: 0,
        };
        FloorBatch {
            headers,
            first_seq: (0..n).map(|i| (i as u16).wrapping_mul(7919)).collect(),
            // μ-law silence: what the payload holds does not change what sending costs.
            payload: [0xFF; SAMPLES_PER_PACKET as usize],
            addresses,
            iovecs: vec![[empty, empty]; n],
            // SAFETY: an all-zero mmsghdr is a valid empty message.
            messages: vec![unsafe { std::mem::zeroed() }; n],
        }
    }

    /// Stamps tick `k` into every header and sends the batch; returns the datagrams the
    /// kernel refused (each one skipped, so one bad destination never stops the rest).
    fn send(&mut self, fd: i32, k: u32) -> u64 {
        let timestamp = k.wrapping_mul(SAMPLES_PER_PACKET).to_be_bytes();
        let payload = self.payload.as_mut_ptr().cast();
        for (i, header) in self.headers.iter_mut().enumerate() {
            header[2..4].copy_from_slice(&self.first_seq[i].wrapping_add(k as u16).to_be_bytes());
            header[4..8].copy_from_slice(&timestamp);
            self.iovecs[i] = [
                libc::iovec {
                    iov_base: header.as_mut_ptr().cast(),
                    iov_len: header.len(),
                },
                libc::iovec {
                    iov_base: payload,
                    iov_len: SAMPLES_PER_PACKET as usize,
                },
            ];
            let m = &mut self.messages[i].msg_hdr;
            m.msg_name = (&raw mut self.addresses[i]).cast();
            m.msg_namelen = size_of::<libc::sockaddr_in>() as u32;
            m.msg_iov = self.iovecs[i].as_mut_ptr();
            m.msg_iovlen = 2;
        }
        let mut errors = 0;
        let mut offset = 0;
        while offset < self.messages.len() {
            let len = (self.messages.len() - offset).min(SEND_BATCH);
            // SAFETY: every message from `offset` points at live buffers set just above.
            let sent = unsafe {
                libc::sendmmsg(fd, self.messages.as_mut_ptr().add(offset), len as u32, 0)
            };
            if sent <= 0 {
                errors += 1;
                offset += 1;
            } else {
                offset += sent as usize;
            }
        }
        errors
    }
}

fn sockaddr_in(address: SocketAddrV4) -> libc::sockaddr_in {
    libc::sockaddr_in {
        sin_family: libc::AF_INET as libc::sa_family_t,
        sin_port: address.port().to_be(),
        sin_addr: libc::in_addr {
            s_addr: u32::from(*address.ip()).to_be(),
        },
        sin_zero: [0; 8],
    }
}

fn monotonic_ns() -> i64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid out-pointer.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    ts.tv_sec * 1_000_000_000 + ts.tv_nsec
}

/// Sleeps to an absolute CLOCK_MONOTONIC deadline, so lateness never accumulates.
fn sleep_until(deadline_ns: i64) {
    let ts = libc::timespec {
        tv_sec: deadline_ns / 1_000_000_000,
        tv_nsec: deadline_ns % 1_000_000_000,
    };
    // SAFETY: `ts` is valid; a null remainder is allowed with TIMER_ABSTIME.
    while unsafe {
        libc::clock_nanosleep(
            libc::CLOCK_MONOTONIC,
            libc::TIMER_ABSTIME,
            &ts,
            std::ptr::null_mut(),
        )
    } == libc::EINTR
    {}
}

// ---------------------------------------------------------------------------------------
// Subject 3: GStreamer
// ---------------------------------------------------------------------------------------

fn run_gstreamer(plan: &mut Plan, clip: &Path) -> Result<Measured> {
    let decoder = gstreamer_decoder()?;
    let receiver = Receiver::bind()?;
    plan.port = receiver.port;
    let pipeline = gstreamer_pipeline(plan, clip, decoder);
    let child = Command::new("gst-launch-1.0")
        .arg("-q")
        .args(&pipeline)
        .stdout(Stdio::null())
        .spawn()
        .context("start gst-launch-1.0")?;
    let (mut measured, _) = measure_sender(plan, receiver, child)?;
    let sinks = plan.clusters.div_ceil(GST_CLIENTS_PER_SINK);
    measured.notes.push(format!(
        "gst-launch-1.0: filesrc ! mpegaudioparse ! {decoder} ! audioconvert ! audioresample \
         ! mulawenc ! rtppcmupay ptime 20 ms ! {}multiudpsink sync=true",
        if sinks > 1 {
            format!("tee ! {sinks} × ")
        } else {
            String::new()
        }
    ));
    Ok(measured)
}

/// Checks gst-launch-1.0 is there (warming its plugin registry, so that the one-off scan
/// is not measured) and picks the MP3 decoder.
fn gstreamer_decoder() -> Result<&'static str> {
    let has = |element: &str| {
        Command::new("gst-inspect-1.0")
            .arg(element)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
    };
    if !has("multiudpsink") || !has("rtppcmupay") || !has("mulawenc") {
        bail!("GStreamer is not installed; on Debian: {GST_INSTALL}");
    }
    if has("mpg123audiodec") && has("mpegaudioparse") {
        Ok("mpg123audiodec")
    } else if has("decodebin") {
        Ok("decodebin")
    } else {
        bail!("no GStreamer MP3 decoder; on Debian: {GST_INSTALL}");
    }
}

/// The gst-launch arguments. Past 4000 clients a `clients=` value would not fit in one
/// exec argument, so the packets go through a `tee` into several sinks (`async=false`,
/// so that no sink waits for the others to preroll).
fn gstreamer_pipeline(plan: &Plan, clip: &Path, decoder: &str) -> Vec<String> {
    let parse = if decoder == "decodebin" {
        "decodebin"
    } else {
        "mpegaudioparse ! mpg123audiodec"
    };
    let mut text = format!(
        "filesrc location=\"{}\" ! {parse} ! audioconvert ! audioresample \
         ! audio/x-raw,rate=8000,channels=1 ! mulawenc \
         ! rtppcmupay min-ptime={PTIME_NS} max-ptime={PTIME_NS}",
        clip.display()
    );
    let destinations = plan.destinations();
    let chunks: Vec<&[SocketAddrV4]> = destinations.chunks(GST_CLIENTS_PER_SINK).collect();
    let mut args: Vec<String> = Vec::new();
    if let [only] = chunks[..] {
        text.push_str(" ! multiudpsink sync=true");
        args.extend(text.split(' ').map(str::to_string));
        args.push(format!("clients={}", clients(only)));
    } else {
        text.push_str(" ! tee name=t");
        args.extend(text.split(' ').map(str::to_string));
        for chunk in chunks {
            args.extend(["t.", "!", "multiudpsink", "sync=true", "async=false"].map(String::from));
            args.push(format!("clients={}", clients(chunk)));
        }
    }
    args
}

fn clients(destinations: &[SocketAddrV4]) -> String {
    destinations
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join(",")
}

// ---------------------------------------------------------------------------------------
// Child processes: CPU, memory, exit
// ---------------------------------------------------------------------------------------

/// Receives while a sender child runs, then reaps it for its CPU and peak RSS.
fn measure_sender(plan: &Plan, receiver: Receiver, child: Child) -> Result<(Measured, Child)> {
    let stop = Arc::new(AtomicBool::new(false));
    let receiving = receiver.spawn(*plan, stop.clone());
    let pid = child.id() as i32;
    let mut peak_rss_kb = 0;
    let exited = loop {
        peak_rss_kb = peak_rss_kb.max(vm_hwm_kb(pid).unwrap_or(0));
        if let Some(exited) = reap(pid, false) {
            break exited;
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    stop.store(true, Ordering::Relaxed);
    let tally = join(receiving)?;
    let mut notes = Vec::new();
    if !exited.success {
        notes.push("the sender exited with an error".into());
    }
    Ok((
        Measured {
            cpu_seconds: exited.cpu_seconds,
            streaming_cpu_seconds: None,
            peak_rss_kb,
            tally,
            notes,
        },
        child,
    ))
}

struct Exited {
    success: bool,
    cpu_seconds: f64,
}

/// `wait4` on a child: its exit and user + system CPU (None if still running and `block`
/// is false). Not its `ru_maxrss`: that carries the parent's RSS over a fork + exec.
fn reap(pid: i32, block: bool) -> Option<Exited> {
    let mut status = 0;
    // SAFETY: an all-zero rusage is valid, and both out-pointers are live.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    let flags = if block { 0 } else { libc::WNOHANG };
    let r = unsafe { libc::wait4(pid, &mut status, flags, &mut usage) };
    let seconds = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 / 1e6;
    (r == pid).then(|| Exited {
        success: libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0,
        cpu_seconds: seconds(usage.ru_utime) + seconds(usage.ru_stime),
    })
}

/// Peak RSS of a live process (VmHWM: this process image's own high-water mark).
fn vm_hwm_kb(pid: i32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

fn process_alive(pid: i32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|s| {
        !s.rsplit(')')
            .next()
            .unwrap_or("")
            .trim_start()
            .starts_with('Z')
    })
}

/// SIGTERM (the daemon's clean shutdown), then SIGKILL if it lingers; reaps it.
fn terminate(pid: i32) {
    // SAFETY: signalling our own child.
    unsafe { libc::kill(pid, libc::SIGTERM) };
    let deadline = Instant::now() + Duration::from_secs(10);
    while Instant::now() < deadline {
        if reap(pid, false).is_some() {
            return;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    // SAFETY: as above.
    unsafe { libc::kill(pid, libc::SIGKILL) };
    reap(pid, true);
}

/// User + system CPU of a live process, every thread included (those that ended too).
fn process_cpu_seconds(pid: i32) -> Result<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
    // Fields after the command name, which may itself hold spaces or parentheses.
    let fields: Vec<&str> = stat
        .rsplit_once(')')
        .context("/proc stat")?
        .1
        .split_whitespace()
        .collect();
    // utime and stime are fields 14 and 15 of proc(5); field 3 is fields[0].
    let ticks: u64 = fields[11].parse::<u64>()? + fields[12].parse::<u64>()?;
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64;
    Ok(ticks as f64 / hz)
}

fn set_int_option(socket: &impl AsRawFd, level: i32, name: i32, value: i32) -> bool {
    // SAFETY: `value` outlives the call and its size is passed.
    unsafe {
        libc::setsockopt(
            socket.as_raw_fd(),
            level,
            name,
            (&raw const value).cast(),
            size_of::<i32>() as libc::socklen_t,
        ) == 0
    }
}

// ---------------------------------------------------------------------------------------
// The receiver
// ---------------------------------------------------------------------------------------

/// One socket on `0.0.0.0:PORT` for every stream, and one on PORT+1 that swallows RTCP
/// (so that sender reports neither fill a buffer nor draw ICMP errors).
struct Receiver {
    socket: Socket,
    rtcp: UdpSocket,
    port: u16,
}

impl Receiver {
    fn bind() -> Result<Receiver> {
        for _ in 0..200 {
            let socket = Socket::new(Domain::IPV4, Type::DGRAM, Some(Protocol::UDP))?;
            socket.bind(&SocketAddr::from(([0, 0, 0, 0], 0)).into())?;
            let port = socket
                .local_addr()?
                .as_socket()
                .context("bound address")?
                .port();
            if port % 2 != 0 || port == u16::MAX {
                continue;
            }
            let Ok(rtcp) = UdpSocket::bind(("0.0.0.0", port + 1)) else {
                continue;
            };
            if !set_int_option(
                &socket,
                libc::SOL_SOCKET,
                libc::SO_RCVBUFFORCE,
                RECV_BUFFER_BYTES,
            ) && !set_int_option(
                &socket,
                libc::SOL_SOCKET,
                libc::SO_RCVBUF,
                RECV_BUFFER_BYTES,
            ) {
                eprintln!("fanout: cannot enlarge the receive buffer; expect drops at large N");
            }
            let timestamps = set_int_option(&socket, libc::SOL_SOCKET, libc::SO_TIMESTAMPNS, 1);
            let pktinfo = set_int_option(&socket, libc::IPPROTO_IP, libc::IP_PKTINFO, 1);
            let overflows = set_int_option(&socket, libc::SOL_SOCKET, libc::SO_RXQ_OVFL, 1);
            if !timestamps || !pktinfo || !overflows {
                bail!("cannot enable SO_TIMESTAMPNS, IP_PKTINFO and SO_RXQ_OVFL on the receiver");
            }
            socket.set_read_timeout(Some(Duration::from_millis(100)))?;
            rtcp.set_read_timeout(Some(Duration::from_millis(200)))?;
            return Ok(Receiver { socket, rtcp, port });
        }
        bail!("no free even UDP port with a free port above it");
    }

    /// Receives on its own thread until the streams go quiet (or `stop` is set and they
    /// have been quiet briefly, or a deadline passes).
    fn spawn(self, plan: Plan, stop: Arc<AtomicBool>) -> JoinHandle<Tally> {
        let rtcp = self.rtcp;
        let drain_stop = stop.clone();
        std::thread::spawn(move || {
            let mut buf = [0u8; 1500];
            while !drain_stop.load(Ordering::Relaxed) {
                let _ = rtcp.recv(&mut buf);
            }
        });
        let socket = self.socket;
        std::thread::spawn(move || {
            let tally = receive(&socket, &plan, &stop);
            stop.store(true, Ordering::Relaxed);
            tally
        })
    }
}

fn join(handle: JoinHandle<Tally>) -> Result<Tally> {
    handle
        .join()
        .map_err(|_| anyhow::anyhow!("the receiver thread panicked"))
}

fn receive(socket: &Socket, plan: &Plan, stop: &AtomicBool) -> Tally {
    let first_within = Duration::from_secs(60 + u64::from(plan.seconds) / 5);
    let limit = first_within + Duration::from_secs(u64::from(plan.seconds) * 3 / 2 + 10);
    let mut tally = Tally::new(plan.clusters);
    let mut batch = RecvBatch::new();
    let started = Instant::now();
    let mut last_packet: Option<Instant> = None;
    loop {
        let n = batch.receive(socket.as_raw_fd());
        let now = Instant::now();
        for i in 0..n {
            let d = batch.datagram(i);
            tally.socket_drops = tally.socket_drops.max(d.socket_drops);
            match (d.seq, d.to.and_then(|ip| plan.stream_of(ip))) {
                (Some(seq), Some(stream)) => tally.record(stream, seq, d.at_ns),
                _ => tally.stray += 1,
            }
        }
        if n > 0 {
            last_packet = Some(now);
        }
        let quiet = last_packet.map(|t| now - t);
        let stopping = stop.load(Ordering::Relaxed);
        let done = match quiet {
            Some(q) => q > QUIET || (stopping && q > QUIET_AFTER_EXIT),
            None => stopping || now - started > first_within,
        };
        if done || now - started > limit {
            return tally;
        }
    }
}

/// Buffers for `recvmmsg`: only the RTP header of each datagram is kept, with its
/// control messages (kernel timestamp, destination address).
struct RecvBatch {
    data: Vec<[u8; 12]>,
    /// u64s so that control messages are aligned as `cmsghdr` needs.
    control: Vec<[u64; 16]>,
    iovecs: Vec<libc::iovec>,
    messages: Vec<libc::mmsghdr>,
}

impl RecvBatch {
    fn new() -> Self {
        RecvBatch {
            data: vec![[0; 12]; RECV_BATCH],
            control: vec![[0; 16]; RECV_BATCH],
            iovecs: vec![
                libc::iovec {
                    iov_base: std::ptr::null_mut(),
                    iov_len: 0
                };
                RECV_BATCH
            ],
            // SAFETY: an all-zero mmsghdr is a valid empty message.
            messages: vec![unsafe { std::mem::zeroed() }; RECV_BATCH],
        }
    }

    /// Waits up to the socket's read timeout for at least one datagram; returns how many.
    fn receive(&mut self, fd: i32) -> usize {
        for i in 0..RECV_BATCH {
            self.iovecs[i] = libc::iovec {
                iov_base: self.data[i].as_mut_ptr().cast(),
                iov_len: 12,
            };
            let m = &mut self.messages[i];
            m.msg_len = 0;
            m.msg_hdr.msg_iov = &raw mut self.iovecs[i];
            m.msg_hdr.msg_iovlen = 1;
            m.msg_hdr.msg_control = self.control[i].as_mut_ptr().cast();
            m.msg_hdr.msg_controllen = size_of::<[u64; 16]>();
            m.msg_hdr.msg_flags = 0;
        }
        // SAFETY: every message points at live buffers of the lengths given, set above.
        let n = unsafe {
            libc::recvmmsg(
                fd,
                self.messages.as_mut_ptr(),
                RECV_BATCH as u32,
                libc::MSG_WAITFORONE,
                std::ptr::null_mut(),
            )
        };
        n.max(0) as usize
    }

    /// Datagram `i` of the last batch.
    fn datagram(&self, i: usize) -> Datagram {
        let b = &self.data[i];
        let is_rtp = self.messages[i].msg_len >= 12 && b[0] >> 6 == 2 && b[1] & 0x7F < 72;
        let mut at_ns = None;
        let mut to = None;
        let mut socket_drops = 0;
        let hdr = &self.messages[i].msg_hdr;
        // SAFETY: the kernel filled `msg_control` up to `msg_controllen`; the CMSG macros
        // stay within it, and each payload is read unaligned at its declared type.
        unsafe {
            let mut c = libc::CMSG_FIRSTHDR(hdr);
            while !c.is_null() {
                let data = libc::CMSG_DATA(c);
                match ((*c).cmsg_level, (*c).cmsg_type) {
                    (libc::SOL_SOCKET, libc::SO_TIMESTAMPNS) => {
                        let ts: libc::timespec = std::ptr::read_unaligned(data.cast());
                        at_ns = Some(ts.tv_sec * 1_000_000_000 + ts.tv_nsec);
                    }
                    (libc::IPPROTO_IP, libc::IP_PKTINFO) => {
                        let info: libc::in_pktinfo = std::ptr::read_unaligned(data.cast());
                        to = Some(Ipv4Addr::from(u32::from_be(info.ipi_addr.s_addr)));
                    }
                    (libc::SOL_SOCKET, libc::SO_RXQ_OVFL) => {
                        socket_drops = std::ptr::read_unaligned(data.cast::<u32>());
                    }
                    _ => {}
                }
                c = libc::CMSG_NXTHDR(hdr, c);
            }
        }
        Datagram {
            seq: is_rtp.then(|| u16::from_be_bytes([b[2], b[3]])),
            at_ns: at_ns.unwrap_or_else(realtime_ns),
            to,
            socket_drops: u64::from(socket_drops),
        }
    }
}

/// What the receiver keeps of one datagram.
struct Datagram {
    /// RTP sequence number, if it is RTP.
    seq: Option<u16>,
    /// Kernel receive time, wall clock, ns.
    at_ns: i64,
    /// Destination address.
    to: Option<Ipv4Addr>,
    /// Datagrams the socket had dropped for want of buffer space so far.
    socket_drops: u64,
}

fn realtime_ns() -> i64 {
    let since = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    since.as_nanos() as i64
}

/// Wall-clock time (as the kernel stamps packets) of a monotonic instant in the past.
fn wall_ns_at(t: Instant) -> i64 {
    realtime_ns() - t.elapsed().as_nanos() as i64
}

// ---------------------------------------------------------------------------------------
// What the receiver saw, folded as it arrives (N × S × 50 packets do not fit in memory)
// ---------------------------------------------------------------------------------------

#[derive(Debug, Clone, Copy, Default)]
struct Stream {
    received: u64,
    first_ns: i64,
    last_seq: u16,
    /// Index on the 20 ms grid of the latest in-order packet.
    last_k: i64,
    /// Deviation of that packet from the grid.
    last_deviation_ns: i64,
    /// Sum of every packet's deviation: its mean says how late the first packet was
    /// against the rest of the stream.
    deviation_sum_ns: i64,
}

struct Tally {
    streams: Vec<Stream>,
    /// |deviation| in 1 µs bins.
    histogram: Vec<u64>,
    max_deviation_ns: i64,
    /// Per grid index k: earliest and latest arrival over all streams.
    ticks: Vec<(i64, i64)>,
    /// Kernel (wall-clock) times of the first and latest datagrams.
    first_arrival: Option<i64>,
    last_arrival: Option<i64>,
    /// Datagrams that were not RTP to one of the plan's destinations.
    stray: u64,
    /// Datagrams the receiving socket dropped (SO_RXQ_OVFL).
    socket_drops: u64,
}

impl Tally {
    fn new(streams: usize) -> Self {
        Tally {
            streams: vec![Stream::default(); streams],
            histogram: vec![0; HISTOGRAM_US + 1],
            max_deviation_ns: 0,
            ticks: Vec::new(),
            first_arrival: None,
            last_arrival: None,
            stray: 0,
            socket_drops: 0,
        }
    }

    fn record(&mut self, stream: usize, seq: u16, at_ns: i64) {
        if self.first_arrival.is_none() {
            self.first_arrival = Some(at_ns);
        }
        self.last_arrival = self.last_arrival.max(Some(at_ns));
        let s = &mut self.streams[stream];
        let k = if s.received == 0 {
            s.first_ns = at_ns;
            s.last_seq = seq;
            0
        } else {
            // Sequence numbers wrap; a step back is a late (reordered) packet.
            let step = i64::from(seq.wrapping_sub(s.last_seq) as i16);
            s.last_k + step
        };
        if k < 0 {
            self.stray += 1;
            return;
        }
        s.received += 1;
        let deviation = at_ns - (s.first_ns + k * PTIME_NS);
        s.deviation_sum_ns += deviation;
        if k >= s.last_k {
            s.last_k = k;
            s.last_seq = seq;
            s.last_deviation_ns = deviation;
        }
        let us = (deviation.unsigned_abs() / 1000) as usize;
        self.histogram[us.min(HISTOGRAM_US)] += 1;
        self.max_deviation_ns = self.max_deviation_ns.max(deviation.abs());
        let k = k as usize;
        if k >= self.ticks.len() {
            self.ticks.resize(k + 1, (i64::MAX, i64::MIN));
        }
        let (first, last) = &mut self.ticks[k];
        *first = (*first).min(at_ns);
        *last = (*last).max(at_ns);
    }
}

// ---------------------------------------------------------------------------------------
// Figures and the table
// ---------------------------------------------------------------------------------------

struct Figures {
    subject: Subject,
    clusters: usize,
    cpu_per_stream_minute: f64,
    streaming_cpu_per_stream_minute: Option<f64>,
    core_pct: f64,
    rss_mb: f64,
    p50_ms: f64,
    p99_ms: f64,
    max_ms: f64,
    drift_ms: f64,
    first_late_ms: f64,
    spread_p50_ms: f64,
    spread_p99_ms: f64,
    loss_pct: f64,
    received: u64,
    expected: u64,
}

impl Figures {
    fn new(subject: Subject, plan: &Plan, m: &Measured) -> Self {
        let t = &m.tally;
        let reachable: Vec<&Stream> = (0..plan.clusters)
            .filter(|&i| plan.reachable(i))
            .map(|i| &t.streams[i])
            .collect();
        let per_stream = reachable
            .iter()
            .filter(|s| s.received > 0)
            .map(|s| s.last_k as u64 + 1)
            .max()
            .unwrap_or(0);
        let expected = per_stream * reachable.len() as u64;
        let received: u64 = reachable.iter().map(|s| s.received.min(per_stream)).sum();
        let total: u64 = t.histogram.iter().sum();
        let mut drifts: Vec<i64> = reachable
            .iter()
            .filter(|s| s.received > 0)
            .map(|s| s.last_deviation_ns)
            .collect();
        drifts.sort_unstable();
        let mut first_late: Vec<i64> = reachable
            .iter()
            .filter(|s| s.received > 0)
            .map(|s| -s.deviation_sum_ns / s.received as i64)
            .collect();
        first_late.sort_unstable();
        let mut spreads: Vec<i64> = t
            .ticks
            .iter()
            .filter(|(first, last)| last >= first)
            .map(|(first, last)| last - first)
            .collect();
        spreads.sort_unstable();
        let ms = |ns: i64| ns as f64 / 1e6;
        Figures {
            subject,
            clusters: plan.clusters,
            cpu_per_stream_minute: m.cpu_seconds / plan.stream_minutes(),
            streaming_cpu_per_stream_minute: m
                .streaming_cpu_seconds
                .map(|cpu| cpu / plan.stream_minutes()),
            core_pct: 100.0 * m.cpu_seconds / stream_seconds(plan, t),
            rss_mb: m.peak_rss_kb as f64 / 1024.0,
            p50_ms: histogram_percentile(&t.histogram, total, 0.50),
            p99_ms: histogram_percentile(&t.histogram, total, 0.99),
            max_ms: ms(t.max_deviation_ns),
            drift_ms: ms(median(&drifts)),
            first_late_ms: ms(median(&first_late)),
            spread_p50_ms: ms(percentile(&spreads, 0.50)),
            spread_p99_ms: ms(percentile(&spreads, 0.99)),
            loss_pct: if expected == 0 {
                100.0
            } else {
                100.0 * (expected - received) as f64 / expected as f64
            },
            received,
            expected,
        }
    }
}

/// How long the streams lasted: S, or longer if the sender fell behind real time.
fn stream_seconds(plan: &Plan, t: &Tally) -> f64 {
    let span = match (t.first_arrival, t.last_arrival) {
        (Some(first), Some(last)) => (last - first + PTIME_NS) as f64 / 1e9,
        _ => 0.0,
    };
    span.max(f64::from(plan.seconds))
}

/// The p-th quantile of |deviation|, in ms, from 1 µs bins (the last bin: 1 s or more).
fn histogram_percentile(histogram: &[u64], total: u64, p: f64) -> f64 {
    let target = ((total as f64 * p).ceil() as u64).max(1);
    let mut seen = 0;
    for (us, count) in histogram.iter().enumerate() {
        seen += count;
        if seen >= target {
            return us as f64 / 1000.0;
        }
    }
    f64::NAN
}

fn percentile(sorted: &[i64], p: f64) -> i64 {
    if sorted.is_empty() {
        return 0;
    }
    sorted[((sorted.len() - 1) as f64 * p).round() as usize]
}

fn median(sorted: &[i64]) -> i64 {
    percentile(sorted, 0.5)
}

/// The sender's wake-ups as the receiver saw them: tick k's first packet against the
/// median of (first packet of tick j − j·20 ms), which a late first tick cannot shift.
fn tick_diagnostics(t: &Tally) -> String {
    let starts: Vec<(i64, i64)> = t
        .ticks
        .iter()
        .enumerate()
        .filter(|(_, (first, last))| last >= first)
        .map(|(k, &(first, last))| (first - k as i64 * PTIME_NS, last - first))
        .collect();
    let (Some(&(first_tick, _)), Some(&(_, last_spread))) = (starts.first(), starts.last()) else {
        return "no packets".into();
    };
    let mut offsets: Vec<i64> = starts.iter().map(|(o, _)| *o).collect();
    offsets.sort_unstable();
    let anchor = median(&offsets);
    let mut late: Vec<i64> = offsets.iter().map(|o| (o - anchor).abs()).collect();
    late.sort_unstable();
    let ms = |ns: i64| ns as f64 / 1e6;
    let audio_s = (t.ticks.len() as i64 * PTIME_NS) as f64 / 1e9;
    let span_s = match (t.first_arrival, t.last_arrival) {
        (Some(first), Some(last)) => (last - first + PTIME_NS) as f64 / 1e9,
        _ => 0.0,
    };
    let behind = if span_s > audio_s * 1.01 {
        " (the sender fell behind real time)"
    } else {
        ""
    };
    format!(
        "tick starts against their median grid: first tick {:+.3} ms, |p99| {:.3} ms, max \
         {:.3} ms; last tick spread {:.3} ms; {audio_s:.1} s of packets took \
         {span_s:.1} s{behind}; {} stray datagrams",
        ms(first_tick - anchor),
        ms(percentile(&late, 0.99)),
        ms(late.last().copied().unwrap_or(0)),
        ms(last_spread),
        t.stray,
    )
}

fn print_table(rows: &[Figures]) {
    println!();
    println!(
        "{:<10} {:>6} {:>13} {:>6} {:>7} {:>7} {:>7} {:>7} {:>8} {:>8} {:>8} {:>8} {:>7} {:>16}",
        "subject",
        "N",
        "CPU-s/str-min",
        "%core",
        "RSS MB",
        "p50 ms",
        "p99 ms",
        "max ms",
        "drift ms",
        "1st late",
        "sprd p50",
        "sprd p99",
        "loss %",
        "packets",
    );
    for f in rows {
        println!(
            "{:<10} {:>6} {:>13.6} {:>6.1} {:>7.1} {:>7} {:>7} {:>7.2} {:>8.3} {:>8.3} \
             {:>8.3} {:>8.3} {:>7.3} {:>16}",
            f.subject.name(),
            f.clusters,
            f.cpu_per_stream_minute,
            f.core_pct,
            f.rss_mb,
            quantile_cell(f.p50_ms),
            quantile_cell(f.p99_ms),
            f.max_ms,
            f.drift_ms,
            f.first_late_ms,
            f.spread_p50_ms,
            f.spread_p99_ms,
            f.loss_pct,
            format!("{}/{}", f.received, f.expected),
        );
    }
    println!(
        "p50/p99/max: |arrival − (stream's first arrival + k·20 ms)| over all packets; drift: \
         median last-packet deviation;\n1st late: median over streams of how late the first \
         packet was against the stream's mean grid; sprd: first-to-last stream per tick."
    );
}

/// A deviation quantile, or ">1000" when it fell in the histogram's last bin.
fn quantile_cell(ms: f64) -> String {
    if ms >= (HISTOGRAM_US / 1000) as f64 {
        format!(">{}", HISTOGRAM_US / 1000)
    } else {
        format!("{ms:.3}")
    }
}

fn print_ratios(rows: &[Figures]) {
    let by: HashMap<&str, &Figures> = rows.iter().map(|f| (f.subject.name(), f)).collect();
    let Some(ours) = by.get("loaxa") else {
        return;
    };
    for peer in ["gstreamer", "floor"] {
        if let Some(p) = by.get(peer) {
            let streaming = ours
                .streaming_cpu_per_stream_minute
                .map(|cpu| format!(" ({:.2}x streaming only)", cpu / p.cpu_per_stream_minute))
                .unwrap_or_default();
            println!(
                "loaxa / {peer}: CPU per stream-minute {:.2}x{streaming}, p99 pacing deviation \
                 {:.2}x",
                ours.cpu_per_stream_minute / p.cpu_per_stream_minute,
                ours.p99_ms / p.p99_ms.max(0.001),
            );
        }
    }
}
