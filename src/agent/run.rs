//! The agent's event loop: heartbeats to the controller (whose answers carry the stream
//! settings, the volume and test tones), the RTP socket(s) the stream arrives on,
//! keepalives for clusters behind NAT, receiver reports, and the playout clock that
//! takes frames from the jitter buffer, decodes or conceals them and hands them to the
//! output. One task per agent; `loaxa simulate` runs many in one process. When the
//! cluster is SRTP, every datagram is authenticated and decrypted before anything else
//! looks at it; what does not verify is dropped and counted.

use std::borrow::Cow;
use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashSet, VecDeque};
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::Context;
use bytes::Bytes;
use rand::Rng;
use serde::Serialize;
use sha2::Digest;
use tokio::net::UdpSocket;
use tokio::sync::{mpsc, watch};

use super::jitter::{JitterBuffer, JitterConfig, Pushed, Slot, parse_rtp};
use super::output::{self, Output, OutputSpec};
use super::stats::ReceiverStats;
use crate::api::health::HeartbeatAnswer;
use crate::codec::{Codec, PayloadDecoder};
use crate::fleet::{Endpoint, EndpointSpec};
use crate::monitor::{AgentReport, Playing, ToneCommand};
use crate::rtp::srtp::{MasterKey, SrtpContext, SrtpError};
use crate::rtp::{keepalive, rtcp};

/// Keepalives of a registered cluster go out this often (NAT bindings for UDP commonly
/// last 30 s or more; the controller's registration timeout defaults to 30 s).
const KEEPALIVE_EVERY: Duration = Duration::from_secs(5);
/// Receiver reports go out about this often (RFC 3550's minimum interval).
const REPORT_EVERY: Duration = Duration::from_secs(5);
/// Longest wait between heartbeat attempts while the controller cannot be reached.
const MAX_BACKOFF: Duration = Duration::from_secs(30);
/// Largest datagram read.
const MAX_DATAGRAM: usize = 2048;
/// SRTP streams (SSRCs) kept at once: the one playing, the one it replaced (its BYE and
/// last packets may still arrive), and room for a quick restart or codec change or two.
const SRTP_STREAMS: usize = 4;
/// SSRCs whose SRTP context was dropped, remembered so that their packets are not
/// accepted again under a fresh context (a replay of an old stream). The controller picks
/// SSRCs at random, so it never comes back to one.
const SRTP_RETIRED: usize = 64;

/// What `loaxa agent` is told on its command line.
#[derive(Clone)]
pub struct AgentOptions {
    /// The controller's base URL, e.g. `http://10.0.0.1:8080`.
    pub controller: reqwest::Url,
    /// The cluster's agent token (shown once when the cluster was created).
    pub token: String,
    pub cluster: String,
    pub output: OutputSpec,
    /// Local address to receive on, instead of any address.
    pub bind: Option<IpAddr>,
    /// Jitter buffer bounds.
    pub min_delay: Duration,
    pub max_delay: Duration,
    /// Network trouble to simulate on reception (`loaxa simulate`).
    pub impairment: Impairment,
}

/// Never prints the token.
impl std::fmt::Debug for AgentOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AgentOptions")
            .field("controller", &self.controller.as_str())
            .field("token", &"<redacted>")
            .field("cluster", &self.cluster)
            .field("output", &self.output)
            .field("bind", &self.bind)
            .finish_non_exhaustive()
    }
}

/// Simulated loss and jitter, applied to datagrams as they arrive.
#[derive(Debug, Clone, Copy, Default)]
pub struct Impairment {
    /// Probability (0-1) that a datagram is dropped.
    pub loss: f64,
    /// Each datagram is held back by a uniform random delay up to this.
    pub jitter: Duration,
}

/// What an agent received and played, for `loaxa simulate`'s report and tests.
#[derive(Debug, Clone, Copy, Default, Serialize, PartialEq)]
pub struct Tally {
    /// RTP packets that reached the jitter buffer.
    pub packets_received: u64,
    /// Dropped by the simulated loss before reaching it.
    pub packets_dropped: u64,
    /// Frames concealed because their packet never came (or came too late).
    pub concealed: u64,
    /// Packets that arrived after their playout instant.
    pub late: u64,
    /// Frames decoded and played.
    pub frames_played: u64,
    /// Seconds of audio handed to the output (decoded and concealed).
    pub decoded_seconds: f64,
    /// Streams (SSRCs) heard.
    pub streams: u64,
    pub heartbeats_ok: u64,
    pub heartbeats_failed: u64,
    pub test_tones_played: u64,
    /// SRTP/SRTCP datagrams dropped because they did not authenticate or were replays.
    pub packets_unauthenticated: u64,
}

/// The stream this agent is set up for, from the controller's latest answer.
#[derive(Debug, Clone, PartialEq)]
struct StreamSettings {
    codec: Codec,
    ptime_ms: u32,
    endpoint: EndpointSpec,
    rtp_port: u16,
    rtcp_port: u16,
}

/// Where the stream arrives and reports leave from.
struct Sockets {
    rtp: UdpSocket,
    /// Unicast and multicast: the RTP port + 1. Registered clusters multiplex RTCP on the
    /// RTP socket (the only port their NAT keeps open).
    rtcp: Option<UdpSocket>,
    registered: bool,
}

/// Runs one agent until `stop` turns true; returns what it received.
pub async fn run(options: AgentOptions, mut stop: watch::Receiver<bool>) -> anyhow::Result<Tally> {
    let output = output::open(&options.output)?;
    let mut agent = Agent::new(&options, output);
    let report = Arc::new(Mutex::new(agent.report()));
    let (answers_tx, mut answers) = mpsc::channel(4);
    let counts = Arc::new(HeartbeatCounts::default());
    let heartbeats = tokio::spawn(heartbeat_loop(
        options.clone(),
        report.clone(),
        answers_tx,
        counts.clone(),
        stop.clone(),
    ));
    let mut sockets: Option<Sockets> = None;
    let mut rtp_buf = vec![0u8; MAX_DATAGRAM];
    let mut rtcp_buf = vec![0u8; MAX_DATAGRAM];
    let mut playout = tokio::time::interval(Duration::from_millis(10));
    playout.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    let mut control = tokio::time::interval(Duration::from_millis(500));
    control.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    loop {
        tokio::select! {
            changed = stop.changed() => {
                if changed.is_err() || *stop.borrow() {
                    break;
                }
            }
            Some((answer, from)) = answers.recv() => {
                agent.controller_ip = from.or(agent.controller_ip);
                if let Some(settings) = agent.apply(&answer, sockets.is_none()) {
                    // The old sockets go first: the new ones may want the same port.
                    drop(sockets.take());
                    sockets = match bind(&settings, options.bind) {
                        Ok(s) => {
                            tracing::info!(cluster = %options.cluster, rtp = ?s.rtp.local_addr().ok(),
                                mode = %settings.endpoint.mode, codec = %settings.codec, "receiving");
                            agent.next_keepalive = Instant::now();
                            Some(s)
                        }
                        Err(e) => {
                            tracing::error!(cluster = %options.cluster, error = %e, "cannot bind the RTP socket");
                            None
                        }
                    };
                }
            }
            r = recv(sockets.as_ref().map(|s| &s.rtp), &mut rtp_buf) => {
                if let Ok((n, from)) = r {
                    agent.on_datagram(&rtp_buf[..n], from, Instant::now());
                }
            }
            r = recv(sockets.as_ref().and_then(|s| s.rtcp.as_ref()), &mut rtcp_buf) => {
                if let Ok((n, _)) = r {
                    agent.on_rtcp(&rtcp_buf[..n]);
                }
            }
            _ = playout.tick() => {
                if let Err(e) = agent.play(Instant::now()) {
                    tracing::error!(cluster = %options.cluster, error = %e, "output failed");
                    break;
                }
            }
            _ = control.tick() => {
                if let Some(s) = &sockets {
                    agent.control(s, Instant::now()).await;
                }
                *report.lock().unwrap_or_else(|p| p.into_inner()) = agent.report();
            }
        }
    }
    heartbeats.abort();
    let mut tally = agent.tally();
    tally.heartbeats_ok = counts.ok.load(Ordering::Relaxed);
    tally.heartbeats_failed = counts.failed.load(Ordering::Relaxed);
    Ok(tally)
}

/// Receives from `socket`, or waits forever when there is none.
async fn recv(socket: Option<&UdpSocket>, buf: &mut [u8]) -> std::io::Result<(usize, SocketAddr)> {
    match socket {
        Some(s) => s.recv_from(buf).await,
        None => std::future::pending().await,
    }
}

/// Opens the sockets the settings call for.
fn bind(settings: &StreamSettings, local: Option<IpAddr>) -> anyhow::Result<Sockets> {
    let any = local.unwrap_or(IpAddr::V4(Ipv4Addr::UNSPECIFIED));
    let endpoint = Endpoint::parse(&settings.endpoint)
        .map_err(|(f, e)| anyhow::anyhow!("the controller sent a bad endpoint: {f}: {}", e.0))?;
    match endpoint {
        Endpoint::Unicast { address } => {
            let rtp = udp(SocketAddr::new(any, address.port()), None)?;
            let rtcp = udp(SocketAddr::new(any, address.port().wrapping_add(1)), None)?;
            Ok(Sockets {
                rtp,
                rtcp: Some(rtcp),
                registered: false,
            })
        }
        Endpoint::Multicast { group, .. } => {
            let IpAddr::V4(group_ip) = group.ip() else {
                anyhow::bail!("only IPv4 multicast groups are supported");
            };
            let interface = match local {
                Some(IpAddr::V4(ip)) => ip,
                _ => Ipv4Addr::UNSPECIFIED,
            };
            let wildcard = IpAddr::V4(Ipv4Addr::UNSPECIFIED);
            let rtp = udp(
                SocketAddr::new(wildcard, group.port()),
                Some((group_ip, interface)),
            )?;
            let rtcp = udp(
                SocketAddr::new(wildcard, group.port().wrapping_add(1)),
                Some((group_ip, interface)),
            )?;
            Ok(Sockets {
                rtp,
                rtcp: Some(rtcp),
                registered: false,
            })
        }
        Endpoint::Registered => Ok(Sockets {
            rtp: udp(SocketAddr::new(any, 0), None)?,
            rtcp: None,
            registered: true,
        }),
    }
}

fn udp(addr: SocketAddr, multicast: Option<(Ipv4Addr, Ipv4Addr)>) -> anyhow::Result<UdpSocket> {
    use socket2::{Domain, Protocol, Socket, Type};
    let socket = Socket::new(Domain::for_address(addr), Type::DGRAM, Some(Protocol::UDP))?;
    if let Some((group, interface)) = multicast {
        // Several speakers of a group may listen on one host.
        socket.set_reuse_address(true)?;
        socket.bind(&addr.into())?;
        socket.join_multicast_v4(&group, &interface)?;
    } else {
        socket
            .bind(&addr.into())
            .with_context(|| format!("cannot bind {addr}"))?;
    }
    // Room for a second or so of Opus/L16 bursts.
    let _ = socket.set_recv_buffer_size(1 << 20);
    socket.set_nonblocking(true)?;
    Ok(UdpSocket::from_std(socket.into())?)
}

#[derive(Default)]
struct HeartbeatCounts {
    ok: AtomicU64,
    failed: AtomicU64,
}

/// Sends heartbeats: the agent's state in, the controller's answer out to the main
/// loop. Retries with exponential backoff (with jitter) while the controller is away.
async fn heartbeat_loop(
    options: AgentOptions,
    report: Arc<Mutex<AgentReport>>,
    answers: mpsc::Sender<(HeartbeatAnswer, Option<IpAddr>)>,
    counts: Arc<HeartbeatCounts>,
    mut stop: watch::Receiver<bool>,
) {
    let client = match reqwest::Client::builder()
        .timeout(Duration::from_secs(5))
        .build()
    {
        Ok(c) => c,
        Err(e) => {
            tracing::error!(error = %e, "cannot build the HTTP client");
            return;
        }
    };
    let url = match options
        .controller
        .join(&format!("api/v1/clusters/{}/heartbeat", options.cluster))
    {
        Ok(u) => u,
        Err(e) => {
            tracing::error!(error = %e, "bad controller URL");
            return;
        }
    };
    let mut backoff = Duration::from_secs(1);
    let mut reachable = None;
    loop {
        let body = serde_json::to_vec(&*report.lock().unwrap_or_else(|p| p.into_inner()))
            .unwrap_or_default();
        let outcome = client
            .post(url.clone())
            .bearer_auth(&options.token)
            .header(reqwest::header::CONTENT_TYPE, "application/json")
            .body(body)
            .send()
            .await;
        let from = outcome
            .as_ref()
            .ok()
            .and_then(|r| r.remote_addr())
            .map(|a| a.ip());
        let wait = match answer_of(outcome).await {
            Ok(answer) => {
                counts.ok.fetch_add(1, Ordering::Relaxed);
                if reachable != Some(true) {
                    tracing::info!(cluster = %options.cluster, status = %answer.status, "heartbeat answered");
                }
                reachable = Some(true);
                backoff = Duration::from_secs(1);
                let every = Duration::from_secs(answer.heartbeat_interval_s.max(1));
                if answers.send((answer, from)).await.is_err() {
                    return;
                }
                every
            }
            Err(e) => {
                counts.failed.fetch_add(1, Ordering::Relaxed);
                if reachable != Some(false) {
                    tracing::warn!(cluster = %options.cluster, error = %e, "controller unreachable; retrying with backoff");
                }
                reachable = Some(false);
                let wait = backoff.mul_f64(rand::rng().random_range(0.5..1.0));
                backoff = (backoff * 2).min(MAX_BACKOFF);
                wait
            }
        };
        tokio::select! {
            () = tokio::time::sleep(wait) => {}
            _ = stop.changed() => return,
        }
    }
}

async fn answer_of(outcome: reqwest::Result<reqwest::Response>) -> anyhow::Result<HeartbeatAnswer> {
    let response = outcome?;
    let status = response.status();
    let bytes = response.bytes().await?;
    if !status.is_success() {
        anyhow::bail!(
            "heartbeat refused: {status}: {}",
            String::from_utf8_lossy(&bytes[..bytes.len().min(300)])
        );
    }
    Ok(serde_json::from_slice(&bytes)?)
}

/// The codec of a static or our dynamic payload type (API.md: PCMU 0, PCMA 8, G.722 9,
/// L16 11, Opus 96).
fn codec_of(payload_type: u8) -> Option<Codec> {
    [
        Codec::Pcmu,
        Codec::Pcma,
        Codec::G722,
        Codec::L16,
        Codec::Opus,
    ]
    .into_iter()
    .find(|c| c.payload_type() == payload_type)
}

/// The packet time of a constant-rate codec's payload of `len` bytes.
fn ptime_of(codec: Codec, len: usize) -> Option<u32> {
    let bytes_per_ms = match codec {
        Codec::Pcmu | Codec::Pcma | Codec::G722 => 8.0,
        Codec::L16 => 88.2,
        Codec::Opus => return None,
    };
    let ms = (len as f64 / bytes_per_ms).round() as u32;
    [10, 20, 30, 40, 60].contains(&ms).then_some(ms)
}

/// How the cluster's datagrams are protected, from the controller's latest answer.
enum Protection {
    /// Plain RTP and RTCP.
    Plain,
    /// SRTP and SRTCP under one master key.
    Srtp(Box<SrtpStreams>),
    /// The controller named a key that does not parse: nothing can be authenticated, and
    /// playing the datagrams as plain RTP would play ciphertext.
    Unusable,
}

impl Protection {
    /// The protection an answer's `srtp_key` calls for.
    fn of(srtp_key: Option<&str>) -> Self {
        match srtp_key.map(MasterKey::from_inline) {
            None => Self::Plain,
            Some(Some(master)) => Self::Srtp(Box::new(SrtpStreams::new(&master))),
            Some(None) => Self::Unusable,
        }
    }
}

/// The receiving SRTP contexts of one master key, one per stream: a context binds to the
/// first SSRC it authenticates, and the controller starts a new SSRC after a restart or a
/// codec change.
struct SrtpStreams {
    /// Keys derived, no SSRC bound: cloned for each new stream (derivation is done once).
    fresh: SrtpContext,
    /// Least recently used first.
    streams: VecDeque<(u32, SrtpContext)>,
    retired: VecDeque<u32>,
}

impl SrtpStreams {
    fn new(master: &MasterKey) -> Self {
        Self {
            fresh: SrtpContext::new(master),
            streams: VecDeque::with_capacity(SRTP_STREAMS),
            retired: VecDeque::with_capacity(SRTP_RETIRED),
        }
    }

    /// An SRTP packet to plain RTP.
    fn unprotect_rtp(&mut self, datagram: &[u8]) -> Result<Vec<u8>, SrtpError> {
        let ssrc = datagram.get(8..12).ok_or(SrtpError::Malformed)?;
        let ssrc = u32::from_be_bytes([ssrc[0], ssrc[1], ssrc[2], ssrc[3]]);
        self.with_stream(ssrc, |ctx| ctx.unprotect_rtp(datagram))
    }

    /// An SRTCP compound packet to plain RTCP, under the context of its sender's SSRC (the
    /// controller reports on a stream with that stream's SSRC).
    fn unprotect_rtcp(&mut self, datagram: &[u8]) -> Result<Vec<u8>, SrtpError> {
        let ssrc = datagram.get(4..8).ok_or(SrtpError::Malformed)?;
        let ssrc = u32::from_be_bytes([ssrc[0], ssrc[1], ssrc[2], ssrc[3]]);
        self.with_stream(ssrc, |ctx| ctx.unprotect_rtcp(datagram))
    }

    /// Runs `f` on the context of `ssrc`. A new stream's context is kept only once a packet
    /// authenticated under it, so forged packets with made-up SSRCs evict nothing.
    fn with_stream(
        &mut self,
        ssrc: u32,
        f: impl FnOnce(&mut SrtpContext) -> Result<Vec<u8>, SrtpError>,
    ) -> Result<Vec<u8>, SrtpError> {
        if let Some(at) = self.streams.iter().position(|(s, _)| *s == ssrc) {
            let plain = f(&mut self.streams[at].1)?;
            if let Some(entry) = self.streams.remove(at) {
                self.streams.push_back(entry);
            }
            return Ok(plain);
        }
        if self.retired.contains(&ssrc) {
            return Err(SrtpError::Replayed);
        }
        let mut ctx = self.fresh.clone();
        let plain = f(&mut ctx)?;
        if self.streams.len() >= SRTP_STREAMS
            && let Some((old, _)) = self.streams.pop_front()
        {
            if self.retired.len() >= SRTP_RETIRED {
                self.retired.pop_front();
            }
            self.retired.push_back(old);
        }
        self.streams.push_back((ssrc, ctx));
        Ok(plain)
    }
}

/// A datagram held back by the simulated jitter: delivery instant, arrival order (so
/// that the datagram itself is never compared), the datagram and its sender.
type Delayed = (Instant, u64, Vec<u8>, IpAddr);

/// A sine tone being played.
struct Tone {
    frequency_hz: f64,
    remaining: usize,
    phase: f64,
}

/// The agent's state, driven by the event loop. No sockets of its own except where it
/// sends (keepalives and reports, through the ones it is handed).
struct Agent {
    cluster: String,
    key: [u8; 32],
    /// The controller's address, as the latest answered heartbeat reached it (DNS may
    /// change it; the board may boot before its link is up).
    controller_ip: Option<IpAddr>,
    /// Where the stream's packets come from (the controller's sending address).
    source_ip: Option<IpAddr>,
    settings: Option<StreamSettings>,
    /// The `srtp_key` of the latest answer, to notice a change.
    srtp_key: Option<String>,
    protection: Protection,
    /// Whether the drops under the current key were logged already.
    warned_unauthenticated: bool,
    decoder: Option<Box<dyn PayloadDecoder>>,
    /// The codec and packet time the decoder and jitter buffer are set up for.
    current: Option<(Codec, u32)>,
    jitter: JitterBuffer,
    bounds: (Duration, Duration),
    stats: ReceiverStats,
    output: Box<dyn Output>,
    volume: u8,
    impairment: Impairment,
    /// Datagrams held back by the simulated jitter.
    delayed: BinaryHeap<Reverse<Delayed>>,
    delayed_seq: u64,
    last_frame: Vec<i16>,
    lost_run: u32,
    tone: Option<Tone>,
    next_tones: VecDeque<Tone>,
    tones_played: Vec<(String, Instant)>,
    tones_seen: HashSet<String>,
    ssrc: u32,
    keepalive_counter: u64,
    next_keepalive: Instant,
    next_report: Instant,
    playing: Option<Playing>,
    started: Instant,
    output_name: &'static str,
    tally: Tally,
}

impl Agent {
    fn new(options: &AgentOptions, output: Box<dyn Output>) -> Self {
        let bounds = (options.min_delay, options.max_delay);
        Self {
            cluster: options.cluster.clone(),
            key: sha2::Sha256::digest(options.token.as_bytes()).into(),
            controller_ip: None,
            source_ip: None,
            settings: None,
            srtp_key: None,
            protection: Protection::Plain,
            warned_unauthenticated: false,
            decoder: None,
            current: None,
            jitter: JitterBuffer::new(JitterConfig {
                min_delay: bounds.0,
                max_delay: bounds.1,
                ..JitterConfig::default()
            }),
            bounds,
            stats: ReceiverStats::new(8000),
            output,
            volume: 100,
            impairment: options.impairment,
            delayed: BinaryHeap::new(),
            delayed_seq: 0,
            last_frame: Vec::new(),
            lost_run: 0,
            tone: None,
            next_tones: VecDeque::new(),
            tones_played: Vec::new(),
            tones_seen: HashSet::new(),
            ssrc: rand::random(),
            keepalive_counter: 0,
            next_keepalive: Instant::now(),
            next_report: Instant::now() + REPORT_EVERY,
            playing: None,
            started: Instant::now(),
            output_name: match options.output {
                OutputSpec::Null => "null",
                OutputSpec::Wav(_) => "wav",
                OutputSpec::Alsa { .. } => "alsa",
            },
            tally: Tally::default(),
        }
    }

    /// Takes the controller's answer; returns the new settings when the sockets must be
    /// (re)opened.
    fn apply(&mut self, answer: &HeartbeatAnswer, unbound: bool) -> Option<StreamSettings> {
        self.volume = answer.volume.min(100);
        for tone in &answer.test_tones {
            self.start_tone(tone);
        }
        if answer.srtp_key != self.srtp_key {
            // A new key (or none): the old contexts are of no use, the next packets say
            // which streams exist under it.
            self.protection = Protection::of(answer.srtp_key.as_deref());
            self.srtp_key.clone_from(&answer.srtp_key);
            self.warned_unauthenticated = false;
            match &self.protection {
                Protection::Plain => tracing::info!(cluster = %self.cluster, "plain RTP"),
                Protection::Srtp(_) => tracing::info!(cluster = %self.cluster, "SRTP"),
                Protection::Unusable => tracing::error!(cluster = %self.cluster,
                    "the controller sent an SRTP key that does not parse; dropping the stream"),
            }
        }
        let codec: Codec = match answer.codec.parse() {
            Ok(c) => c,
            Err(e) => {
                tracing::error!(cluster = %self.cluster, error = %e, "the controller named an unknown codec");
                return None;
            }
        };
        let settings = StreamSettings {
            codec,
            ptime_ms: answer.ptime_ms,
            endpoint: answer.endpoint.clone(),
            rtp_port: answer.rtp_port,
            rtcp_port: answer.rtcp_port,
        };
        let old = self.settings.replace(settings.clone());
        // A new codec applies from the next stream: the one playing keeps its decoder
        // (its packets still carry the old payload type).
        if !self.jitter.is_playing() && self.current != Some((codec, settings.ptime_ms)) {
            self.configure(codec, settings.ptime_ms);
        }
        let rebind = unbound || old.is_none_or(|o| o.endpoint != settings.endpoint);
        rebind.then_some(settings)
    }

    /// Sets the decoder, jitter buffer and statistics up for `codec` at `ptime_ms`.
    fn configure(&mut self, codec: Codec, ptime_ms: u32) {
        self.decoder = codec.decoder().ok();
        let frame = Duration::from_millis(u64::from(ptime_ms));
        self.jitter.set_config(JitterConfig {
            min_delay: self.bounds.0,
            max_delay: self.bounds.1,
            ..JitterConfig::for_clock(codec.clock_rate(), frame)
        });
        self.stats = ReceiverStats::new(codec.clock_rate());
        self.current = Some((codec, ptime_ms));
    }

    fn start_tone(&mut self, command: &ToneCommand) {
        if !self.tones_seen.insert(command.id.clone()) {
            return;
        }
        let rate = self.rate();
        tracing::info!(cluster = %self.cluster, frequency_hz = command.frequency_hz,
            duration_ms = command.duration_ms, "test tone");
        let tone = Tone {
            frequency_hz: f64::from(command.frequency_hz),
            remaining: (u64::from(rate) * u64::from(command.duration_ms) / 1000) as usize,
            phase: 0.0,
        };
        // Several in one answer play one after the other.
        if self.tone.is_some() {
            self.next_tones.push_back(tone);
        } else {
            self.tone = Some(tone);
        }
        self.tones_played.push((command.id.clone(), Instant::now()));
        self.tally.test_tones_played += 1;
    }

    fn rate(&self) -> u32 {
        self.current.map_or(8000, |(c, _)| c.decoded_rate())
    }

    /// A datagram on the RTP socket: RTP, or (registered clusters) RTCP multiplexed.
    fn on_datagram(&mut self, datagram: &[u8], from: SocketAddr, now: Instant) {
        if self.impairment.loss > 0.0 && rand::rng().random_bool(self.impairment.loss.min(1.0)) {
            self.tally.packets_dropped += 1;
            return;
        }
        if self.impairment.jitter > Duration::ZERO {
            let delay = self
                .impairment
                .jitter
                .mul_f64(rand::rng().random_range(0.0..1.0));
            self.delayed_seq += 1;
            self.delayed.push(Reverse((
                now + delay,
                self.delayed_seq,
                datagram.to_vec(),
                from.ip(),
            )));
            return;
        }
        self.deliver(datagram, from.ip(), now);
    }

    fn deliver(&mut self, datagram: &[u8], from: IpAddr, now: Instant) {
        // RTCP multiplexed on the RTP port has payload types 200-204 (RFC 5761 §4); SRTCP
        // leaves that byte in the clear.
        if datagram.len() >= 2 && (200..=204).contains(&datagram[1]) {
            self.on_rtcp(datagram);
            return;
        }
        let Some(datagram) = self.in_clear(datagram, false) else {
            return;
        };
        let datagram = &*datagram;
        // Only an authenticated sender may become where receiver reports go.
        self.source_ip = Some(from);
        let Some(packet) = parse_rtp(datagram) else {
            return;
        };
        let Some((default_codec, default_ptime)) =
            self.settings.as_ref().map(|s| (s.codec, s.ptime_ms))
        else {
            return;
        };
        if self
            .current
            .is_none_or(|(c, _)| c.payload_type() != packet.payload_type)
        {
            // Another codec than the one set up: the cluster was edited, and the controller
            // began a new stream (new SSRC) before our next heartbeat told us.
            let Some(codec) = codec_of(packet.payload_type) else {
                return;
            };
            let ptime_ms = if codec == default_codec {
                default_ptime
            } else {
                ptime_of(codec, packet.payload.len()).unwrap_or(default_ptime)
            };
            self.configure(codec, ptime_ms);
        }
        let codec = self.current.map_or(default_codec, |(c, _)| c);
        self.stats
            .on_packet(packet.ssrc, packet.sequence, packet.timestamp, now);
        self.tally.packets_received += 1;
        let ssrc = packet.ssrc;
        match self.jitter.push(packet, now) {
            Pushed::NewStream => {
                self.tally.streams += 1;
                // The first report half an interval in (RFC 3550 §6.2's initial report).
                self.next_report = now + REPORT_EVERY / 2;
                self.playing = Some(Playing {
                    ssrc,
                    codec: codec.to_string(),
                    since: Some(
                        chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
                    ),
                });
                tracing::info!(cluster = %self.cluster, ssrc, "stream started");
            }
            Pushed::Accepted if self.playing.is_none() => {
                self.playing = Some(Playing {
                    ssrc,
                    codec: codec.to_string(),
                    since: Some(
                        chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
                    ),
                });
            }
            _ => {}
        }
    }

    /// RTCP from the controller: sender reports and BYE. Nothing in them changes
    /// playout (a stream ends when its packets stop), so they are only authenticated (SRTCP)
    /// and checked for form.
    fn on_rtcp(&mut self, datagram: &[u8]) {
        if let Some(clear) = self.in_clear(datagram, true) {
            let _ = rtcp::parse_reports(&clear);
        }
    }

    /// `datagram` (RTP, or RTCP when `rtcp`) in the clear: as it came without SRTP,
    /// decrypted with it, or `None` when it does not authenticate (dropped and counted).
    fn in_clear<'a>(&mut self, datagram: &'a [u8], rtcp: bool) -> Option<Cow<'a, [u8]>> {
        let result = match &mut self.protection {
            Protection::Plain => return Some(Cow::Borrowed(datagram)),
            Protection::Srtp(streams) if rtcp => streams.unprotect_rtcp(datagram),
            Protection::Srtp(streams) => streams.unprotect_rtp(datagram),
            Protection::Unusable => Err(SrtpError::AuthFailed),
        };
        match result {
            Ok(plain) => Some(Cow::Owned(plain)),
            Err(e) => {
                self.unauthenticated(&e);
                None
            }
        }
    }

    /// Counts a datagram dropped by SRTP; says so once per key, as a flood of forgeries
    /// must not flood the log.
    fn unauthenticated(&mut self, error: &SrtpError) {
        if !self.warned_unauthenticated {
            self.warned_unauthenticated = true;
            tracing::warn!(cluster = %self.cluster, error = %error,
                "dropping datagrams that do not authenticate");
        }
        self.tally.packets_unauthenticated += 1;
        tracing::trace!(cluster = %self.cluster, error = %error, "SRTP datagram dropped");
    }

    /// The playout clock: every frame whose instant has come, decoded or concealed, to
    /// the output; a test tone mixed in (or played alone when nothing streams).
    fn play(&mut self, now: Instant) -> anyhow::Result<()> {
        while let Some(Reverse((due, ..))) = self.delayed.peek() {
            if *due > now {
                break;
            }
            if let Some(Reverse((due, _, datagram, from))) = self.delayed.pop() {
                self.deliver(&datagram, from, due);
            }
        }
        let rate = self.rate();
        let frame_len =
            (rate as usize * self.settings.as_ref().map_or(20, |s| s.ptime_ms) as usize) / 1000;
        let mut played_stream = false;
        while let Some(slot) = self.jitter.pop(now) {
            played_stream = true;
            let mut samples = match slot {
                Slot::Frame(payload) => self.decode(&payload, frame_len),
                Slot::Lost => {
                    self.tally.concealed += 1;
                    self.conceal(frame_len)
                }
            };
            self.finish(&mut samples, rate)?;
        }
        if !self.jitter.is_playing() {
            if self.playing.take().is_some() {
                tracing::info!(cluster = %self.cluster, "stream ended");
            }
            if !played_stream && self.tone.is_some() {
                // Nothing streams: the tone plays alone, 10 ms per tick of this clock.
                let mut samples = vec![0i16; (rate / 100) as usize];
                self.finish(&mut samples, rate)?;
            }
        }
        Ok(())
    }

    fn decode(&mut self, payload: &Bytes, frame_len: usize) -> Vec<i16> {
        let decoded = self.decoder.as_mut().map(|d| d.decode(payload));
        match decoded {
            Some(Ok(samples)) => {
                self.tally.frames_played += 1;
                self.lost_run = 0;
                self.last_frame.clone_from(&samples);
                samples
            }
            _ => {
                self.tally.concealed += 1;
                self.conceal(frame_len)
            }
        }
    }

    /// A missing frame: the last one again at half the level, then at a quarter, then
    /// silence (waveform repetition, G.711 Appendix I's simplest form).
    fn conceal(&mut self, frame_len: usize) -> Vec<i16> {
        self.lost_run += 1;
        if self.lost_run <= 2 && self.last_frame.len() == frame_len {
            let shift = self.lost_run;
            self.last_frame.iter().map(|s| s >> shift).collect()
        } else {
            vec![0; frame_len]
        }
    }

    /// Volume, the test tone, and out.
    fn finish(&mut self, samples: &mut [i16], rate: u32) -> anyhow::Result<()> {
        if self.volume < 100 {
            // Perceptual taper: gain = (volume / 100)^2.
            let gain = (f32::from(self.volume) / 100.0).powi(2);
            for s in samples.iter_mut() {
                *s = (f32::from(*s) * gain) as i16;
            }
        }
        if let Some(tone) = &mut self.tone {
            let step = std::f64::consts::TAU * tone.frequency_hz / f64::from(rate);
            for s in samples.iter_mut().take(tone.remaining) {
                // -12 dBFS, mixed over what plays.
                let v = (tone.phase.sin() * 8192.0) as i32;
                *s = (i32::from(*s) + v).clamp(i32::from(i16::MIN), i32::from(i16::MAX)) as i16;
                tone.phase = (tone.phase + step) % std::f64::consts::TAU;
            }
            tone.remaining = tone.remaining.saturating_sub(samples.len());
            if tone.remaining == 0 {
                self.tone = self.next_tones.pop_front();
            }
        }
        self.tally.decoded_seconds += samples.len() as f64 / f64::from(rate);
        self.output.play(samples, rate)?;
        Ok(())
    }

    /// Keepalives and receiver reports when due.
    async fn control(&mut self, sockets: &Sockets, now: Instant) {
        let Some(settings) = &self.settings else {
            return;
        };
        if sockets.registered && now >= self.next_keepalive {
            let unix_ms = SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .unwrap_or_default()
                .as_millis() as u64;
            self.keepalive_counter += 1;
            if self.cluster.len() <= keepalive::MAX_ID_LEN && !self.cluster.is_empty() {
                let datagram =
                    keepalive::encode(&self.cluster, unix_ms, self.keepalive_counter, &self.key);
                let Some(ip) = self.controller_ip else {
                    return;
                };
                let to = SocketAddr::new(ip, settings.rtp_port);
                if let Err(e) = sockets.rtp.send_to(&datagram, to).await {
                    tracing::debug!(error = %e, "keepalive not sent");
                }
            }
            self.next_keepalive = now + KEEPALIVE_EVERY;
        }
        if now >= self.next_report {
            self.next_report = now + REPORT_EVERY;
            let block = self.stats.report();
            if block.is_none() {
                return;
            }
            let Some(ip) = self.source_ip.or(self.controller_ip) else {
                return;
            };
            let cname = format!("loaxa-agent@{}", self.cluster);
            let Ok(datagram) = rtcp::receiver_report(self.ssrc, block.as_ref(), &cname) else {
                return;
            };
            let (socket, port) = match &sockets.rtcp {
                Some(s) => (s, settings.rtcp_port),
                None => (&sockets.rtp, settings.rtp_port),
            };
            let _ = socket.send_to(&datagram, SocketAddr::new(ip, port)).await;
        }
    }

    /// The heartbeat body.
    fn report(&mut self) -> AgentReport {
        self.tones_played
            .retain(|(_, at)| at.elapsed() < Duration::from_secs(60));
        let counts = self.jitter.counts();
        AgentReport {
            uptime_s: self.started.elapsed().as_secs(),
            volume: Some(self.volume),
            playing: self.playing.clone(),
            buffer_ms: Some(self.jitter.depth().as_millis() as u32),
            target_delay_ms: Some(self.jitter.target_delay().as_millis() as u32),
            packets_received: counts.received,
            packets_lost: self.stats.lost().max(0) as u64,
            packets_late: counts.late,
            jitter_ms: Some((self.stats.jitter_ms() * 100.0).round() / 100.0),
            output: Some(self.output_name.to_string()),
            version: Some(env!("CARGO_PKG_VERSION").to_string()),
            test_tones_played: self.tones_played.iter().map(|(id, _)| id.clone()).collect(),
            packets_unauthenticated: self.tally.packets_unauthenticated,
        }
    }

    fn tally(&self) -> Tally {
        let counts = self.jitter.counts();
        Tally {
            late: counts.late,
            ..self.tally
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fleet::health::Status;

    const FROM: IpAddr = IpAddr::V4(Ipv4Addr::LOCALHOST);
    const SSRC_A: u32 = 0x1111_1111;
    const SSRC_B: u32 = 0x2222_2222;

    fn agent() -> Agent {
        let options = AgentOptions {
            controller: "http://127.0.0.1:1/".parse().unwrap(),
            token: "token".into(),
            cluster: "c1".into(),
            output: OutputSpec::Null,
            bind: None,
            min_delay: Duration::from_millis(40),
            max_delay: Duration::from_millis(400),
            impairment: Impairment::default(),
        };
        Agent::new(&options, output::open(&OutputSpec::Null).unwrap())
    }

    fn answer(srtp_key: Option<&str>) -> HeartbeatAnswer {
        HeartbeatAnswer {
            cluster_id: "c1".into(),
            name: "Hall".into(),
            codec: "pcmu".into(),
            payload_type: 0,
            clock_rate: 8000,
            ptime_ms: 20,
            endpoint: EndpointSpec {
                mode: "unicast".into(),
                address: Some("127.0.0.1:5004".into()),
                group: None,
                ttl: None,
            },
            rtp_port: 5004,
            rtcp_port: 5005,
            volume: 100,
            enabled: true,
            heartbeat_interval_s: 5,
            status: Status::Online,
            test_tones: Vec::new(),
            srtp_key: srtp_key.map(str::to_string),
        }
    }

    /// A 20 ms PCMU packet.
    fn rtp(ssrc: u32, sequence: u16) -> Vec<u8> {
        let mut p = vec![0x80, 0];
        p.extend(sequence.to_be_bytes());
        p.extend((u32::from(sequence) * 160).to_be_bytes());
        p.extend(ssrc.to_be_bytes());
        p.extend([0xFF; 160]);
        p
    }

    /// An empty receiver report from `ssrc` (as a sender report would do: only the form
    /// is checked).
    fn rtcp_from(ssrc: u32) -> Vec<u8> {
        let mut p = vec![0x80, 201, 0, 1];
        p.extend(ssrc.to_be_bytes());
        p
    }

    /// The controller's side of one stream.
    fn sender(key: &MasterKey) -> SrtpContext {
        SrtpContext::new(key)
    }

    #[test]
    fn a_protected_packet_plays_and_a_plain_or_replayed_one_is_dropped() {
        let key = MasterKey::generate();
        let mut a = agent();
        a.apply(&answer(Some(&key.to_inline())), true);
        let mut tx = sender(&key);
        let now = Instant::now();
        let first = tx.protect_rtp(&rtp(SSRC_A, 1)).unwrap();
        a.deliver(&first, FROM, now);
        assert_eq!(a.tally.packets_received, 1);
        a.deliver(&rtp(SSRC_A, 2), FROM, now);
        a.deliver(&first, FROM, now);
        assert_eq!(a.tally.packets_received, 1);
        assert_eq!(a.tally.packets_unauthenticated, 2);
        assert_eq!(a.report().packets_unauthenticated, 2);
        a.deliver(&tx.protect_rtp(&rtp(SSRC_A, 2)).unwrap(), FROM, now);
        assert_eq!(a.tally.packets_received, 2);
    }

    #[test]
    fn without_a_key_plain_rtp_plays_as_before() {
        let mut a = agent();
        a.apply(&answer(None), true);
        a.deliver(&rtp(SSRC_A, 1), FROM, Instant::now());
        assert_eq!(a.tally.packets_received, 1);
        assert_eq!(a.tally.packets_unauthenticated, 0);
    }

    #[test]
    fn forged_packets_do_not_count_in_the_loss_statistics() {
        let key = MasterKey::generate();
        let mut a = agent();
        a.apply(&answer(Some(&key.to_inline())), true);
        let mut tx = sender(&key);
        let now = Instant::now();
        a.deliver(&tx.protect_rtp(&rtp(SSRC_A, 1)).unwrap(), FROM, now);
        // Far ahead: counted, it would make 97 packets look lost.
        a.deliver(&rtp(SSRC_A, 100), FROM, now);
        a.deliver(&tx.protect_rtp(&rtp(SSRC_A, 2)).unwrap(), FROM, now);
        let report = a.report();
        assert_eq!(report.packets_lost, 0);
        assert_eq!(report.packets_unauthenticated, 1);
    }

    #[test]
    fn a_new_stream_gets_its_own_context_and_the_old_one_keeps_its_own() {
        let key = MasterKey::generate();
        let mut a = agent();
        a.apply(&answer(Some(&key.to_inline())), true);
        let (mut tx_a, mut tx_b) = (sender(&key), sender(&key));
        let now = Instant::now();
        a.deliver(&tx_a.protect_rtp(&rtp(SSRC_A, 1)).unwrap(), FROM, now);
        a.deliver(&tx_b.protect_rtp(&rtp(SSRC_B, 500)).unwrap(), FROM, now);
        // The old stream's last packet, after the new one began.
        a.deliver(&tx_a.protect_rtp(&rtp(SSRC_A, 2)).unwrap(), FROM, now);
        assert_eq!(a.tally.packets_unauthenticated, 0);
        assert_eq!(a.tally.packets_received, 3);
    }

    #[test]
    fn a_forged_packet_under_a_new_ssrc_evicts_no_stream() {
        let key = MasterKey::generate();
        let mut a = agent();
        a.apply(&answer(Some(&key.to_inline())), true);
        let mut tx = sender(&key);
        let now = Instant::now();
        a.deliver(&tx.protect_rtp(&rtp(SSRC_A, 1)).unwrap(), FROM, now);
        for ssrc in 1..=2 * SRTP_STREAMS as u32 {
            let mut forged = rtp(ssrc, 1);
            forged.extend([0; 10]);
            a.deliver(&forged, FROM, now);
        }
        assert_eq!(a.tally.packets_unauthenticated, 2 * SRTP_STREAMS as u64);
        let Protection::Srtp(streams) = &a.protection else {
            panic!("not SRTP");
        };
        assert_eq!(streams.streams.len(), 1);
    }

    #[test]
    fn an_evicted_streams_packets_are_not_accepted_again() {
        let key = MasterKey::generate();
        let mut a = agent();
        a.apply(&answer(Some(&key.to_inline())), true);
        let now = Instant::now();
        let mut first = sender(&key);
        let old = first.protect_rtp(&rtp(1, 1)).unwrap();
        a.deliver(&old, FROM, now);
        for ssrc in 2..=SRTP_STREAMS as u32 + 1 {
            a.deliver(&sender(&key).protect_rtp(&rtp(ssrc, 1)).unwrap(), FROM, now);
        }
        assert_eq!(a.tally.packets_unauthenticated, 0);
        // Stream 1 was dropped for stream 5; its packet replayed is not a new stream.
        a.deliver(&old, FROM, now);
        assert_eq!(a.tally.packets_unauthenticated, 1);
    }

    #[test]
    fn a_key_change_resets_the_contexts_and_the_old_key_no_longer_verifies() {
        let (old, new) = (MasterKey::generate(), MasterKey::generate());
        let mut a = agent();
        a.apply(&answer(Some(&old.to_inline())), true);
        let now = Instant::now();
        let mut tx_old = sender(&old);
        a.deliver(&tx_old.protect_rtp(&rtp(SSRC_A, 1)).unwrap(), FROM, now);
        a.apply(&answer(Some(&new.to_inline())), false);
        a.deliver(&tx_old.protect_rtp(&rtp(SSRC_A, 2)).unwrap(), FROM, now);
        assert_eq!(a.tally.packets_unauthenticated, 1);
        // The same SSRC under the new key starts a fresh context.
        a.deliver(
            &sender(&new).protect_rtp(&rtp(SSRC_A, 3)).unwrap(),
            FROM,
            now,
        );
        assert_eq!(a.tally.packets_received, 2);
        // The same key again is no change: the context (and its replay window) stays.
        a.apply(&answer(Some(&new.to_inline())), false);
        let Protection::Srtp(streams) = &a.protection else {
            panic!("not SRTP");
        };
        assert_eq!(streams.streams.len(), 1);
    }

    #[test]
    fn a_key_that_does_not_parse_drops_everything() {
        let mut a = agent();
        a.apply(&answer(Some("not base64!")), true);
        a.deliver(&rtp(SSRC_A, 1), FROM, Instant::now());
        a.on_rtcp(&rtcp_from(SSRC_A));
        assert_eq!(a.tally.packets_received, 0);
        assert_eq!(a.tally.packets_unauthenticated, 2);
    }

    #[test]
    fn srtcp_is_authenticated_on_its_own_socket_and_multiplexed() {
        let key = MasterKey::generate();
        let mut a = agent();
        a.apply(&answer(Some(&key.to_inline())), true);
        let mut tx = sender(&key);
        let now = Instant::now();
        a.deliver(&tx.protect_rtp(&rtp(SSRC_A, 1)).unwrap(), FROM, now);
        let report = tx.protect_rtcp(&rtcp_from(SSRC_A)).unwrap();
        a.on_rtcp(&report);
        a.deliver(&tx.protect_rtcp(&rtcp_from(SSRC_A)).unwrap(), FROM, now);
        assert_eq!(a.tally.packets_unauthenticated, 0);
        // Plain, replayed.
        a.on_rtcp(&rtcp_from(SSRC_A));
        a.deliver(&report, FROM, now);
        assert_eq!(a.tally.packets_unauthenticated, 2);
        assert_eq!(a.tally.packets_received, 1);
    }

    #[test]
    fn an_unauthenticated_sender_does_not_become_where_reports_go() {
        let key = MasterKey::generate();
        let mut a = agent();
        a.apply(&answer(Some(&key.to_inline())), true);
        let attacker = IpAddr::V4(Ipv4Addr::new(192, 0, 2, 66));
        a.on_datagram(
            &rtp(SSRC_A, 1),
            SocketAddr::new(attacker, 5004),
            Instant::now(),
        );
        assert_eq!(a.source_ip, None);
    }

    #[test]
    fn an_answer_without_srtp_key_still_parses() {
        let mut json = serde_json::to_value(answer(None)).unwrap();
        json.as_object_mut().unwrap().remove("srtp_key");
        let parsed: HeartbeatAnswer = serde_json::from_value(json).unwrap();
        assert_eq!(parsed.srtp_key, None);
    }
}
