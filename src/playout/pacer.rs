//! The pacer: one thread for the whole fleet. It wakes on absolute deadlines
//! (`epoch + k·tick`, so it never drifts), asks the arbiter what every cluster airs at
//! tick k, stamps RTP headers and sends the batch. It owns the RTP sessions and sockets.
//!
//! Each cluster keeps one RTP session for as long as the daemon runs (RFC 3550 §8: a
//! source keeps its SSRC): programmes follow each other on the same SSRC with continuous
//! sequence numbers, the timestamp follows the media clock across silences, a marker
//! starts each talkspurt, and BYE is sent only when the cluster is removed or the daemon
//! stops.
//!
//! A dedicated OS thread rather than a tokio timer: tokio's timer wheel has 1 ms
//! granularity and shares the reactor with HTTP work; a plain thread sleeping to an
//! absolute deadline wakes within tens of microseconds on an idle core.

use std::collections::{HashMap, VecDeque};
use std::net::{SocketAddr, UdpSocket};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, mpsc};
use std::time::{Duration, Instant, SystemTime};

use bytes::Bytes;

use super::arbiter::{Arbiter, ClusterKey, Event, Frame, Programme};
use super::registry::Registry;
use super::reports::Reports;
use super::sender::{Datagram, SendOutcome, Sender};
use super::{Command, Destination, EngineEvent, Progress, Target};
use crate::codec::Codec;
use crate::rtp::{RtpSession, ntp_timestamp, rtcp};
use crate::store::now_rfc3339;

/// RTCP sender reports at least this often while a stream is live (RFC 3550 §6.2 allows
/// 5 s as the minimum interval for small sessions).
const SENDER_REPORT_INTERVAL: Duration = Duration::from_secs(5);
/// Live progress counters are published this often (in ticks) for status queries.
const PROGRESS_EVERY_TICKS: u64 = 10;
/// Behind by more than this, the pacer re-anchors its clock instead of bursting the
/// backlog onto the network (a suspended VM, a stalled disk).
const MAX_CATCH_UP: Duration = Duration::from_millis(500);
/// Cancels remembered for plays still being prepared when the cancel arrived.
const REMEMBERED_CANCELS: usize = 1024;
/// A planned start wakes an idle pacer this many ticks early, so the first packet
/// leaves on its tick rather than after a cold wake-up.
const WAKE_BEFORE_START_TICKS: u32 = 2;
/// A planned instant within this of a tick boundary starts on that tick (wall-clock to
/// grid rounding).
const GRID_TOLERANCE: Duration = Duration::from_millis(1);
/// Registered clusters' addresses are re-read at least this often (in ticks) even when
/// nothing changed, so that one whose keepalives stopped loses its address on time.
const REGISTRY_REFRESH_TICKS: u64 = 25;

/// How the pacer is set up.
#[derive(Debug, Clone)]
pub struct Settings {
    /// Tick length: the fleet's base ptime.
    pub tick: Duration,
    /// Where RTP leaves from (`rtp.port`; 0 picks a free port).
    pub rtp_bind: SocketAddr,
    /// Where RTCP leaves from (usually the RTP port + 1).
    pub rtcp_bind: SocketAddr,
    /// RTCP CNAME of this controller.
    pub cname: String,
    /// Interface multicast streams leave by (0.0.0.0: the kernel's choice).
    pub multicast_interface: std::net::Ipv4Addr,
    /// A registered cluster whose keepalives stop for this long loses its address.
    pub registration_timeout: Duration,
}

/// One cluster's stream, alive from its first packet until the cluster is removed or
/// the daemon stops.
struct Link {
    session: RtpSession,
    destination: Destination,
    codec: Codec,
    ptime_ms: u32,
    next_report: Instant,
    /// Deadline of the latest packet, to carry the media clock across a silence.
    last_deadline: Option<Instant>,
    /// A programme is airing (false between programmes).
    sending: bool,
    /// SRTP protection of this stream (and its RTCP), keyed by the cluster's master key.
    srtp: Option<(crate::rtp::srtp::MasterKey, crate::rtp::srtp::SrtpContext)>,
    /// The session's first sequence number.
    first_sequence: u16,
}

impl Link {
    /// An SRTP stream whose sequence has wrapped: its rollover counter is above 0, which
    /// a receiver joining now cannot know from SDES (RFC 4568 carries no ROC). Such a
    /// stream is restarted (new SSRC, ROC 0) at its next programme.
    fn rolled_over(&self) -> bool {
        self.srtp.is_some()
            && u64::from(self.first_sequence) + u64::from(self.session.packets_sent()) > 0xFFFF
    }
}

/// Where RTCP for a stream goes: port + 1 of a fixed destination from the RTCP socket,
/// or, for a registered cluster, multiplexed on its RTP mapping (RFC 5761) from the RTP
/// socket, since only that port is open through its NAT.
#[derive(Debug, Clone, Copy)]
enum RtcpRoute {
    Separate(SocketAddr),
    Muxed(SocketAddr),
}

pub(crate) struct Pacer {
    settings: Settings,
    sender: Sender,
    /// One socket per multicast TTL in use, created on first need.
    multicast: HashMap<u8, Sender>,
    /// This tick's unicast datagrams, and what became of each.
    batch: Batch,
    /// This tick's multicast datagrams, by TTL.
    multicast_batches: HashMap<u8, Batch>,
    outcomes: Vec<SendOutcome>,
    /// Sender reports due this tick, sent after the RTP batch.
    reports_due: Vec<(Bytes, RtcpRoute)>,
    rtcp: UdpSocket,
    commands: mpsc::Receiver<Command>,
    events: tokio::sync::mpsc::UnboundedSender<EngineEvent>,
    progress: Progress,
    running: Arc<AtomicBool>,
    reports: Arc<Reports>,
    registry: Arc<Registry>,
    /// Registered clusters' current addresses, refreshed from the registry.
    registered: HashMap<ClusterKey, SocketAddr>,
    registry_version: u64,
    arbiter: Arbiter,
    /// Where each queued cluster's stream goes; created on enqueue, dropped on idle.
    targets: HashMap<ClusterKey, Target>,
    links: HashMap<ClusterKey, Link>,
    cancelled: VecDeque<String>,
    /// Streams that ended, with the tick their BYE is due and where it goes.
    byes: Vec<(u64, Link, Option<RtcpRoute>)>,
    /// Plays prepared ahead of their planned instant.
    planned: Vec<Planned>,
    /// Clusters removed lately: a play prepared before the removal must not revive them.
    removed: VecDeque<String>,
}

/// A play waiting for its planned instant.
struct Planned {
    at: SystemTime,
    broadcast: String,
    priority: super::Priority,
    on_interrupt: super::Interruption,
    targets: Vec<Target>,
}

/// The tick grid: tick k is due at `epoch + k·tick`, which is wall-clock time
/// `epoch_wall + k·tick`. Anchored on whole multiples of the tick since the Unix epoch,
/// so a planned second (a cron instant) falls exactly on a tick.
#[derive(Debug, Clone, Copy)]
struct Clock {
    tick: Duration,
    epoch: Instant,
    epoch_wall: SystemTime,
}

impl Clock {
    /// A grid whose tick 0 is the next wall-clock multiple of `tick`.
    fn aligned(tick: Duration) -> Self {
        let (now, now_wall) = (Instant::now(), SystemTime::now());
        let tick_ns = tick.as_nanos().max(1);
        let since = now_wall
            .duration_since(SystemTime::UNIX_EPOCH)
            .unwrap_or_default()
            .as_nanos();
        let offset = Duration::from_nanos(((tick_ns - since % tick_ns) % tick_ns) as u64);
        Self {
            tick,
            epoch: now + offset,
            epoch_wall: now_wall + offset,
        }
    }

    fn offset(&self, k: u64) -> Duration {
        Duration::from_nanos((self.tick.as_nanos() as u64).saturating_mul(k))
    }

    fn deadline(&self, k: u64) -> Instant {
        self.epoch + self.offset(k)
    }

    fn wall(&self, k: u64) -> SystemTime {
        self.epoch_wall + self.offset(k)
    }

    /// Moves the grid on by whole ticks so that tick k is due at most one tick from now
    /// (after a stall), keeping the wall mapping in step and the grid on wall-clock
    /// multiples of the tick.
    fn reanchor(&mut self, k: u64) {
        let behind = Instant::now().saturating_duration_since(self.deadline(k));
        let tick_ns = self.tick.as_nanos().max(1);
        let whole = Duration::from_nanos((behind.as_nanos() / tick_ns * tick_ns) as u64);
        self.epoch += whole;
        self.epoch_wall += whole;
    }
}

impl Pacer {
    pub(crate) fn bind(
        settings: Settings,
        commands: mpsc::Receiver<Command>,
        events: tokio::sync::mpsc::UnboundedSender<EngineEvent>,
        progress: Progress,
        running: Arc<AtomicBool>,
        reports: Arc<Reports>,
        registry: Arc<Registry>,
    ) -> std::io::Result<Self> {
        let sender = Sender::bind(settings.rtp_bind)?;
        let rtcp = UdpSocket::bind(settings.rtcp_bind)?;
        Ok(Self {
            settings,
            sender,
            multicast: HashMap::new(),
            batch: Batch::default(),
            multicast_batches: HashMap::new(),
            outcomes: Vec::new(),
            reports_due: Vec::new(),
            rtcp,
            commands,
            events,
            progress,
            running,
            reports,
            registry,
            registered: HashMap::new(),
            registry_version: u64::MAX,
            arbiter: Arbiter::new(),
            targets: HashMap::new(),
            links: HashMap::new(),
            cancelled: VecDeque::new(),
            byes: Vec::new(),
            planned: Vec::new(),
            removed: VecDeque::new(),
        })
    }

    pub(crate) fn rtp_local_addr(&self) -> std::io::Result<SocketAddr> {
        self.sender.local_addr()
    }

    /// A handle on the RTCP socket for the thread that reads receiver reports.
    pub(crate) fn rtcp_socket(&self) -> std::io::Result<UdpSocket> {
        self.rtcp.try_clone()
    }

    /// A handle on the RTP socket for the thread that reads keepalives.
    pub(crate) fn rtp_socket(&self) -> std::io::Result<UdpSocket> {
        self.sender.try_clone_socket()
    }

    pub(crate) fn run(mut self) {
        let tick = self.settings.tick;
        let mut clock = Clock::aligned(tick);
        let mut k: u64 = 0;
        let mut frames = Vec::new();
        let mut events = Vec::new();
        'run: loop {
            if !self.busy(SystemTime::now()) {
                // Nothing airs: block until told otherwise or until a planned start comes
                // near, then restart the clock on the wall-clock grid.
                let cmd = match self.earliest_planned() {
                    Some(at) => {
                        let wait = at
                            .duration_since(SystemTime::now())
                            .unwrap_or_default()
                            .saturating_sub(tick * WAKE_BEFORE_START_TICKS);
                        match self.commands.recv_timeout(wait) {
                            Ok(Command::Shutdown) | Err(mpsc::RecvTimeoutError::Disconnected) => {
                                break 'run;
                            }
                            Ok(cmd) => Some(cmd),
                            Err(mpsc::RecvTimeoutError::Timeout) => None,
                        }
                    }
                    None => match self.commands.recv() {
                        Ok(Command::Shutdown) | Err(_) => break 'run,
                        Ok(cmd) => Some(cmd),
                    },
                };
                clock = Clock::aligned(tick);
                k = 0;
                if let Some(cmd) = cmd {
                    self.handle(cmd, k, clock.wall(k), &mut events);
                    self.forward(&mut events);
                }
                if !self.busy(SystemTime::now()) {
                    continue;
                }
            }
            let deadline = clock.deadline(k);
            let now = Instant::now();
            if deadline > now {
                std::thread::sleep(deadline - now);
            }
            self.reports
                .sent
                .record_tick(Instant::now().saturating_duration_since(deadline));
            if now > deadline && now - deadline > MAX_CATCH_UP {
                tracing::warn!(
                    behind_ms = (now - deadline).as_millis() as u64,
                    "pacer fell behind; re-anchoring"
                );
                clock.reanchor(k);
            }
            // Commands that arrived during the sleep take effect on this very tick.
            loop {
                match self.commands.try_recv() {
                    Ok(Command::Shutdown) | Err(mpsc::TryRecvError::Disconnected) => break 'run,
                    Ok(cmd) => self.handle(cmd, k, clock.wall(k), &mut events),
                    Err(mpsc::TryRecvError::Empty) => break,
                }
            }
            self.release_planned(k, clock.wall(k), &mut events);
            self.send_due_byes(k);
            self.refresh_registrations(k);
            self.arbiter.tick(k, &mut frames, &mut events);
            let wall = SystemTime::now();
            for frame in frames.drain(..) {
                self.send(frame, deadline, wall);
            }
            self.flush();
            self.forward(&mut events);
            if k.is_multiple_of(PROGRESS_EVERY_TICKS) {
                self.publish_progress();
            }
            k += 1;
        }
        // Shutdown: every stream still airing is interrupted, and every stream ends.
        self.arbiter.interrupt_all(&mut events);
        self.forward(&mut events);
        let links: Vec<ClusterKey> = self.links.keys().cloned().collect();
        for cluster in links {
            self.end_stream(&cluster, 0);
        }
        self.send_due_byes(u64::MAX);
        self.running.store(false, Ordering::Release);
        let _ = self.events.send(EngineEvent::Stopped);
    }

    /// Something airs, a BYE is pending, or a planned start is near.
    fn busy(&self, now: SystemTime) -> bool {
        !self.arbiter.is_idle()
            || !self.byes.is_empty()
            || self
                .earliest_planned()
                .is_some_and(|at| at <= now + self.settings.tick * WAKE_BEFORE_START_TICKS)
    }

    fn earliest_planned(&self) -> Option<SystemTime> {
        self.planned.iter().map(|p| p.at).min()
    }

    /// Starts the planned plays whose instant has come by tick `k` (wall time `wall`).
    fn release_planned(&mut self, k: u64, wall: SystemTime, events: &mut Vec<Event>) {
        if self.planned.is_empty() {
            return;
        }
        let (due, later): (Vec<_>, Vec<_>) = std::mem::take(&mut self.planned)
            .into_iter()
            .partition(|p| p.at <= wall + GRID_TOLERANCE);
        self.planned = later;
        for p in due {
            self.start(
                p.broadcast,
                p.priority,
                p.on_interrupt,
                p.targets,
                k,
                events,
            );
        }
    }

    fn handle(
        &mut self,
        cmd: Command,
        now_tick: u64,
        now_wall: SystemTime,
        events: &mut Vec<Event>,
    ) {
        match cmd {
            Command::Play {
                broadcast,
                priority,
                on_interrupt,
                targets,
                at,
            } => {
                if self.cancelled.contains(&broadcast) {
                    // Cancelled while its audio was being prepared.
                    return;
                }
                match at {
                    Some(at) if at > now_wall + GRID_TOLERANCE => self.planned.push(Planned {
                        at,
                        broadcast,
                        priority,
                        on_interrupt,
                        targets,
                    }),
                    _ => self.start(broadcast, priority, on_interrupt, targets, now_tick, events),
                }
            }
            Command::Cancel { broadcast } => {
                self.planned.retain(|p| p.broadcast != broadcast);
                self.arbiter.cancel(&broadcast, events);
                if self.cancelled.len() >= REMEMBERED_CANCELS {
                    self.cancelled.pop_front();
                }
                self.cancelled.push_back(broadcast);
            }
            Command::RemoveCluster { cluster } => {
                // Nothing planned or still being prepared may bring it back.
                for planned in &mut self.planned {
                    planned.targets.retain(|t| t.cluster_id != cluster);
                }
                if self.removed.len() >= REMEMBERED_CANCELS {
                    self.removed.pop_front();
                }
                self.removed.push_back(cluster.clone());
                self.arbiter.remove_cluster(&cluster, events);
                self.targets.remove(cluster.as_str());
                // BYE one tick after the last packet, which may be in this tick's batch.
                self.end_stream(&cluster, now_tick + 1);
                self.registry.remove(&cluster);
                if let Ok(mut ssrcs) = self.reports.ssrcs.lock() {
                    ssrcs.remove_cluster(&cluster);
                }
            }
            Command::Shutdown => {}
        }
    }

    /// Queues `targets` on their clusters' arbiters from tick `now_tick`.
    fn start(
        &mut self,
        broadcast: String,
        priority: super::Priority,
        on_interrupt: super::Interruption,
        targets: Vec<Target>,
        now_tick: u64,
        events: &mut Vec<Event>,
    ) {
        let broadcast: Arc<str> = broadcast.into();
        let base = self.settings.tick.as_millis().max(1) as u64;
        for target in targets {
            if self.removed.contains(&target.cluster_id) {
                continue;
            }
            let cluster: ClusterKey = target.cluster_id.as_str().into();
            let every = (u64::from(target.ptime_ms) / base).max(1);
            self.arbiter.enqueue(
                cluster.clone(),
                every,
                now_tick,
                Programme {
                    broadcast: broadcast.clone(),
                    priority,
                    frames: target.frames.clone(),
                    on_interrupt,
                },
                events,
            );
            self.targets.insert(cluster, target);
        }
    }

    /// Re-reads registered clusters' addresses when one changed, and now and then to
    /// drop those whose keepalives stopped.
    fn refresh_registrations(&mut self, tick: u64) {
        let version = self.registry.version();
        if version != self.registry_version || tick.is_multiple_of(REGISTRY_REFRESH_TICKS) {
            self.registry_version = version;
            self.registry.snapshot(Instant::now(), &mut self.registered);
        }
    }

    fn rtcp_route(&self, cluster: &str, destination: Destination) -> Option<RtcpRoute> {
        match destination {
            Destination::Fixed(to) => Some(RtcpRoute::Separate(SocketAddr::new(
                to.ip(),
                to.port().wrapping_add(1),
            ))),
            Destination::Registered => self.registered.get(cluster).copied().map(RtcpRoute::Muxed),
        }
    }

    /// Ends `cluster`'s stream: BYE at `tick`.
    fn end_stream(&mut self, cluster: &str, tick: u64) {
        if let Some(link) = self.links.remove(cluster) {
            let route = self.rtcp_route(cluster, link.destination);
            self.byes.push((tick, link, route));
        }
    }

    fn new_link(&self, cluster: &ClusterKey, target: &Target) -> Link {
        use rand::Rng;
        let mut rng = rand::rng();
        let session = if target.srtp.is_some() {
            // RFC 3711 §3.3.1: an initial sequence below 2^15, so a receiver that joins
            // (with a rollover counter of 0, all SDES can tell it) is right until the
            // sequence wraps; see `rolled_over`.
            RtpSession::with_initial(
                target.codec.payload_type(),
                rng.random(),
                rng.random_range(0..1 << 15),
                rng.random(),
            )
        } else {
            RtpSession::new(target.codec.payload_type(), &mut rng)
        };
        let first_sequence = session.next_sequence();
        if let Ok(mut ssrcs) = self.reports.ssrcs.lock() {
            ssrcs.insert(session.ssrc(), cluster.clone(), target.codec.clock_rate());
        }
        Link {
            session,
            destination: target.destination,
            codec: target.codec,
            ptime_ms: target.ptime_ms,
            // First report right after the first packet, so receivers can map the media
            // clock to wall-clock time from the start.
            next_report: Instant::now() + Duration::from_millis(u64::from(target.ptime_ms)),
            last_deadline: None,
            sending: false,
            first_sequence,
            srtp: target
                .srtp
                .as_ref()
                .map(|k| (k.clone(), crate::rtp::srtp::SrtpContext::new(k))),
        }
    }

    fn send(&mut self, frame: Frame, deadline: Instant, wall: SystemTime) {
        let Some(target) = self.targets.get(&frame.cluster) else {
            return;
        };
        let (codec, ptime_ms, destination, multicast_ttl) = (
            target.codec,
            target.ptime_ms,
            target.destination,
            target.multicast_ttl,
        );
        match self.links.get(&frame.cluster) {
            None => {
                let link = self.new_link(&frame.cluster, target);
                self.links.insert(frame.cluster.clone(), link);
            }
            // The cluster was edited to another codec or packet size: that is a new
            // stream (another payload type and clock), so the old one ends.
            // The cluster was edited to another codec, packet size or SRTP key: that is a
            // new stream (payload type, clock or keys), so the old one ends.
            Some(link)
                if link.codec != codec
                    || link.ptime_ms != ptime_ms
                    || link.srtp.as_ref().map(|(k, _)| k) != target.srtp.as_ref()
                    || (!link.sending && link.rolled_over()) =>
            {
                let link = self.new_link(&frame.cluster, target);
                if let Some(mut old) = self.links.insert(frame.cluster.clone(), link) {
                    let route = self.rtcp_route(&frame.cluster, old.destination);
                    self.goodbye(&mut old, route);
                }
            }
            Some(_) => {}
        }
        let route = self.rtcp_route(&frame.cluster, destination);
        let address = match destination {
            Destination::Fixed(to) => Some(to),
            Destination::Registered => self.registered.get(&frame.cluster).copied(),
        };
        let Some(link) = self.links.get_mut(&frame.cluster) else {
            return;
        };
        link.destination = destination;
        let step = codec.timestamp_step(ptime_ms);
        if !link.sending {
            // A new talkspurt: the timestamp jumps by the silence since the last packet,
            // so the receiver's media clock keeps running with ours.
            link.sending = true;
            if let Some(last) = link.last_deadline {
                let silence = deadline.saturating_duration_since(last);
                let ticks = silence.as_nanos() * u128::from(codec.clock_rate()) / 1_000_000_000;
                let extra = (ticks as u64).saturating_sub(u64::from(step));
                link.session.skip(extra as u32);
            }
        }
        link.last_deadline = Some(deadline);
        let rtp_time = link.session.next_timestamp();
        let Some(address) = address else {
            // A registered cluster with no current address: the packet is lost, as it
            // would be on the network, and the stream's clock moves on.
            link.session.lose(step);
            self.reports.count_unregistered(&frame.cluster);
            return;
        };
        let header = link
            .session
            .next_header(frame.payload.len(), step, frame.marker);
        let mut payload = frame.payload;
        if let Some((_, srtp)) = &mut link.srtp {
            // Encrypted per cluster: header in clear, payload and tag after it.
            let mut out = Vec::with_capacity(header.len() + payload.len() + 10);
            match srtp.protect_rtp_into(&header, &payload, &mut out) {
                Ok(()) => payload = Bytes::from(out).slice(header.len()..),
                Err(e) => {
                    tracing::error!(cluster = %frame.cluster, error = %e, "SRTP protection failed");
                    self.reports
                        .count_send_error(&frame.cluster, SendOutcome::Other(0));
                    return;
                }
            }
        }
        // The tick's own instant: no clock read per frame.
        if deadline >= link.next_report {
            link.next_report = deadline + SENDER_REPORT_INTERVAL;
            let ntp = ntp_timestamp(
                wall.duration_since(SystemTime::UNIX_EPOCH)
                    .unwrap_or_default(),
            );
            let report = rtcp::sender_report(&link.session, ntp, rtp_time, &self.settings.cname)
                .and_then(|r| protect_rtcp(link, r));
            match (report, route) {
                (Ok(report), Some(route)) => self.reports_due.push((report, route)),
                (Ok(_), None) => {}
                (Err(e), _) => tracing::error!(error = %e, "RTCP report build failed"),
            }
        }
        let datagram = Datagram {
            header,
            payload,
            destination: address,
        };
        let batch = match multicast_ttl {
            None => &mut self.batch,
            Some(ttl) => {
                if let std::collections::hash_map::Entry::Vacant(e) = self.multicast.entry(ttl) {
                    match multicast_sender(ttl, self.settings.multicast_interface) {
                        Ok(sender) => {
                            e.insert(sender);
                        }
                        Err(err) => {
                            tracing::error!(ttl, error = %err, "cannot open a multicast socket");
                            self.reports
                                .count_send_error(&frame.cluster, SendOutcome::Other(0));
                            return;
                        }
                    }
                }
                self.multicast_batches.entry(ttl).or_default()
            }
        };
        batch.datagrams.push(datagram);
        batch.clusters.push(frame.cluster);
    }

    /// Sends this tick's batch in as few system calls as the platform allows, counts the
    /// failures per cluster (one dead destination never holds up the others), then sends
    /// the sender reports that fell due.
    fn flush(&mut self) {
        send_and_count(
            &self.sender,
            &mut self.batch,
            &mut self.outcomes,
            &self.reports,
        );
        for (ttl, batch) in &mut self.multicast_batches {
            if let Some(sender) = self.multicast.get(ttl) {
                send_and_count(sender, batch, &mut self.outcomes, &self.reports);
            }
        }
        let due = std::mem::take(&mut self.reports_due);
        for (report, route) in &due {
            self.send_rtcp(report, *route);
        }
        self.reports_due = due;
        self.reports_due.clear();
    }

    /// Sends the BYEs whose tick has come.
    fn send_due_byes(&mut self, tick: u64) {
        let (due, later): (Vec<_>, Vec<_>) =
            self.byes.drain(..).partition(|(at, _, _)| *at <= tick);
        self.byes = later;
        for (_, mut link, route) in due {
            self.goodbye(&mut link, route);
        }
    }

    /// Turns arbiter events into store events, and ends the streams of idle clusters.
    fn forward(&mut self, events: &mut Vec<Event>) {
        for event in events.drain(..) {
            let out = match event {
                Event::Started { cluster, broadcast } => EngineEvent::Started {
                    broadcast: broadcast.to_string(),
                    cluster: cluster.to_string(),
                    at: now_rfc3339(),
                },
                Event::Preempted {
                    cluster,
                    broadcast,
                    by,
                    policy,
                    at_frame,
                } => EngineEvent::Preempted {
                    at_ms: at_frame as u64
                        * u64::from(self.targets.get(&cluster).map_or(0, |t| t.ptime_ms)),
                    broadcast: broadcast.to_string(),
                    cluster: cluster.to_string(),
                    by: by.to_string(),
                    policy,
                    at: now_rfc3339(),
                },
                Event::Finished {
                    cluster,
                    broadcast,
                    outcome,
                    frames_sent,
                } => {
                    if let Ok(mut p) = self.progress.lock()
                        && let Some(clusters) = p.get_mut(&*broadcast)
                    {
                        clusters.remove(&*cluster);
                        if clusters.is_empty() {
                            p.remove(&*broadcast);
                        }
                    }
                    EngineEvent::Finished {
                        broadcast: broadcast.to_string(),
                        cluster: cluster.to_string(),
                        outcome,
                        packets_sent: frames_sent,
                        at: now_rfc3339(),
                    }
                }
                Event::Idle { cluster } => {
                    // The stream stays: the next programme continues it.
                    self.targets.remove(&cluster);
                    if let Some(link) = self.links.get_mut(&cluster) {
                        link.sending = false;
                    }
                    continue;
                }
            };
            let _ = self.events.send(out);
        }
    }

    fn send_rtcp(&self, packet: &[u8], route: RtcpRoute) {
        let sent = match route {
            RtcpRoute::Separate(to) => self.rtcp.send_to(packet, to).map(|_| ()),
            RtcpRoute::Muxed(to) => self.sender.send_one(packet, to),
        };
        if let Err(e) = sent {
            tracing::debug!(error = %e, ?route, "RTCP send failed");
        }
    }

    fn goodbye(&self, link: &mut Link, route: Option<RtcpRoute>) {
        let Some(route) = route else {
            return;
        };
        let ntp = ntp_timestamp(
            SystemTime::now()
                .duration_since(SystemTime::UNIX_EPOCH)
                .unwrap_or_default(),
        );
        let rtp_time = link.session.next_timestamp();
        match rtcp::goodbye(
            &link.session,
            ntp,
            rtp_time,
            &self.settings.cname,
            "stream ended",
        )
        .and_then(|bye| protect_rtcp(link, bye))
        {
            Ok(bye) => self.send_rtcp(&bye, route),
            Err(e) => tracing::error!(error = %e, "RTCP BYE build failed"),
        }
    }

    fn publish_progress(&self) {
        if let Ok(mut p) = self.progress.lock() {
            for (cluster, broadcast, sent) in self.arbiter.progress() {
                let clusters = match p.get_mut(&**broadcast) {
                    Some(c) => c,
                    None => p.entry(broadcast.clone()).or_default(),
                };
                match clusters.get_mut(&**cluster) {
                    Some(n) => *n = sent,
                    None => {
                        clusters.insert(cluster.clone(), sent);
                    }
                }
            }
        }
    }
}

/// Datagrams for one socket, with the cluster each is for.
#[derive(Default)]
struct Batch {
    datagrams: Vec<Datagram>,
    clusters: Vec<ClusterKey>,
}

/// Sends `batch` and counts every datagram the network stack refused on its cluster.
fn send_and_count(
    sender: &Sender,
    batch: &mut Batch,
    outcomes: &mut Vec<SendOutcome>,
    reports: &Reports,
) {
    if batch.datagrams.is_empty() {
        return;
    }
    sender.send_batch(&batch.datagrams, outcomes);
    let (mut packets, mut bytes) = (0u64, 0u64);
    for ((outcome, cluster), datagram) in outcomes.iter().zip(&batch.clusters).zip(&batch.datagrams)
    {
        if *outcome == SendOutcome::Sent {
            packets += 1;
            bytes += (datagram.header.len() + datagram.payload.len()) as u64;
        } else {
            reports.count_send_error(cluster, *outcome);
        }
    }
    reports.sent.packets.fetch_add(packets, Ordering::Relaxed);
    reports.sent.bytes.fetch_add(bytes, Ordering::Relaxed);
    batch.datagrams.clear();
    batch.clusters.clear();
}

/// A socket for multicast streams of one TTL, leaving by `interface`.
fn multicast_sender(ttl: u8, interface: std::net::Ipv4Addr) -> std::io::Result<Sender> {
    let sender = Sender::bind(SocketAddr::from(([0, 0, 0, 0], 0)))?;
    sender.set_multicast(u32::from(ttl), interface)?;
    Ok(sender)
}

/// SRTCP (RFC 3711 §3.4) for a protected stream; plain RTCP otherwise.
fn protect_rtcp(link: &mut Link, packet: Bytes) -> Result<Bytes, crate::rtp::RtpError> {
    match &mut link.srtp {
        None => Ok(packet),
        Some((_, srtp)) => srtp
            .protect_rtcp(&packet)
            .map(Bytes::from)
            .map_err(|e| crate::rtp::RtpError::Marshal(format!("SRTCP: {e}"))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_srtp_stream_counts_as_rolled_over_once_its_sequence_wraps() {
        let key = crate::rtp::srtp::MasterKey::generate();
        let mut link = Link {
            session: RtpSession::with_initial(0, 1, 65_000, 0),
            destination: Destination::Fixed(SocketAddr::from(([127, 0, 0, 1], 9))),
            codec: Codec::Pcmu,
            ptime_ms: 20,
            next_report: Instant::now(),
            last_deadline: None,
            sending: false,
            srtp: Some((key.clone(), crate::rtp::srtp::SrtpContext::new(&key))),
            first_sequence: 65_000,
        };
        for _ in 0..535 {
            link.session.next_header(160, 160, false);
        }
        assert!(
            !link.rolled_over(),
            "sequence 65535 is the last of rollover 0"
        );
        link.session.next_header(160, 160, false);
        assert!(link.rolled_over());
        // Plain RTP never needs a restart: nothing to decrypt.
        link.srtp = None;
        assert!(!link.rolled_over());
    }

    #[test]
    fn the_tick_grid_falls_on_wall_clock_multiples_of_the_tick() {
        let tick = Duration::from_millis(20);
        let clock = Clock::aligned(tick);
        for k in [0, 1, 49, 50_000] {
            let since = clock
                .wall(k)
                .duration_since(SystemTime::UNIX_EPOCH)
                .unwrap();
            assert_eq!(since.as_nanos() % tick.as_nanos(), 0, "tick {k}");
            assert_eq!(clock.deadline(k) - clock.epoch, tick * k as u32);
        }
        assert!(clock.epoch_wall >= SystemTime::now() - tick);
    }

    #[test]
    fn reanchoring_moves_instant_and_wall_time_together() {
        let mut clock = Clock::aligned(Duration::from_millis(20));
        let (epoch, epoch_wall) = (clock.epoch, clock.epoch_wall);
        std::thread::sleep(Duration::from_millis(30));
        clock.reanchor(0);
        let moved = clock.epoch - epoch;
        assert_eq!(clock.epoch_wall.duration_since(epoch_wall).unwrap(), moved);
        // Tick 0 was due up to 20 ms after the start; 30 ms later it is behind, and the
        // grid moved on by whole ticks only.
        assert_eq!(moved.as_nanos() % 20_000_000, 0, "{moved:?}");
        assert!(clock.deadline(0) <= Instant::now());
        assert!(Instant::now() - clock.deadline(0) < Duration::from_millis(20));
    }
}
