//! The pacer: one thread for the whole fleet. It wakes on absolute deadlines
//! (`epoch + k·tick`, so it never drifts), asks the arbiter what every cluster airs at
//! tick k, stamps RTP headers and sends the batch. It owns the RTP sessions and sockets.
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
use super::reports::Reports;
use super::sender::{Datagram, SendOutcome, Sender};
use super::{Command, EngineEvent, Progress, Target};
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
}

/// One cluster's live stream.
struct Link {
    session: RtpSession,
    destination: SocketAddr,
    rtcp_destination: SocketAddr,
    codec: Codec,
    ptime_ms: u32,
    next_report: Instant,
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
    reports_due: Vec<(Bytes, SocketAddr)>,
    rtcp: UdpSocket,
    commands: mpsc::Receiver<Command>,
    events: tokio::sync::mpsc::UnboundedSender<EngineEvent>,
    progress: Progress,
    running: Arc<AtomicBool>,
    reports: Arc<Reports>,
    arbiter: Arbiter,
    /// Where each queued cluster's stream goes; created on enqueue, dropped on idle.
    targets: HashMap<ClusterKey, Target>,
    links: HashMap<ClusterKey, Link>,
    cancelled: VecDeque<String>,
    /// Streams that ended, with the tick their BYE is due.
    byes: Vec<(u64, Link)>,
}

impl Pacer {
    pub(crate) fn bind(
        settings: Settings,
        commands: mpsc::Receiver<Command>,
        events: tokio::sync::mpsc::UnboundedSender<EngineEvent>,
        progress: Progress,
        running: Arc<AtomicBool>,
        reports: Arc<Reports>,
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
            arbiter: Arbiter::new(),
            targets: HashMap::new(),
            links: HashMap::new(),
            cancelled: VecDeque::new(),
            byes: Vec::new(),
        })
    }

    pub(crate) fn rtp_local_addr(&self) -> std::io::Result<SocketAddr> {
        self.sender.local_addr()
    }

    /// A handle on the RTCP socket for the thread that reads receiver reports.
    pub(crate) fn rtcp_socket(&self) -> std::io::Result<UdpSocket> {
        self.rtcp.try_clone()
    }

    pub(crate) fn run(mut self) {
        let tick = self.settings.tick;
        let mut epoch = Instant::now();
        let mut k: u64 = 0;
        let mut frames = Vec::new();
        let mut events = Vec::new();
        'run: loop {
            if self.arbiter.is_idle() && self.byes.is_empty() {
                // Nothing airs: block until told otherwise, then restart the clock so the
                // first packet leaves now.
                let cmd = match self.commands.recv() {
                    Ok(Command::Shutdown) | Err(_) => break 'run,
                    Ok(cmd) => cmd,
                };
                epoch = Instant::now();
                k = 0;
                self.handle(cmd, k, &mut events);
                self.forward(&mut events, k);
            }
            let deadline = epoch + tick * (k as u32);
            let now = Instant::now();
            if deadline > now {
                std::thread::sleep(deadline - now);
            } else if now - deadline > MAX_CATCH_UP {
                tracing::warn!(
                    behind_ms = (now - deadline).as_millis() as u64,
                    "pacer fell behind; re-anchoring"
                );
                epoch = now - tick * (k as u32);
            }
            // Commands that arrived during the sleep take effect on this very tick.
            loop {
                match self.commands.try_recv() {
                    Ok(Command::Shutdown) | Err(mpsc::TryRecvError::Disconnected) => break 'run,
                    Ok(cmd) => self.handle(cmd, k, &mut events),
                    Err(mpsc::TryRecvError::Empty) => break,
                }
            }
            self.send_due_byes(k);
            self.arbiter.tick(k, &mut frames, &mut events);
            let wall = SystemTime::now();
            for frame in frames.drain(..) {
                self.send(frame, wall);
            }
            self.flush();
            self.forward(&mut events, k);
            if k.is_multiple_of(PROGRESS_EVERY_TICKS) {
                self.publish_progress();
            }
            k += 1;
        }
        // Shutdown: every stream still airing is interrupted and told goodbye.
        self.arbiter.interrupt_all(&mut events);
        self.forward(&mut events, k);
        self.send_due_byes(u64::MAX);
        self.running.store(false, Ordering::Release);
        let _ = self.events.send(EngineEvent::Stopped);
    }

    fn handle(&mut self, cmd: Command, now_tick: u64, events: &mut Vec<Event>) {
        match cmd {
            Command::Play {
                broadcast,
                priority,
                on_interrupt,
                targets,
            } => {
                if self.cancelled.contains(&broadcast) {
                    // Cancelled while its audio was being prepared.
                    return;
                }
                let broadcast: Arc<str> = broadcast.into();
                let base = self.settings.tick.as_millis().max(1) as u64;
                for target in targets {
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
            Command::Cancel { broadcast } => {
                self.arbiter.cancel(&broadcast, events);
                if self.cancelled.len() >= REMEMBERED_CANCELS {
                    self.cancelled.pop_front();
                }
                self.cancelled.push_back(broadcast);
            }
            Command::RemoveCluster { cluster } => {
                self.arbiter.remove_cluster(&cluster, events);
                if let Ok(mut ssrcs) = self.reports.ssrcs.lock() {
                    ssrcs.remove_cluster(&cluster);
                }
            }
            Command::Shutdown => {}
        }
    }

    fn send(&mut self, frame: Frame, wall: SystemTime) {
        let Some(target) = self.targets.get(&frame.cluster) else {
            return;
        };
        let reports = &self.reports;
        let link = self.links.entry(frame.cluster.clone()).or_insert_with(|| {
            let mut rng = rand::rng();
            let destination = target.destination;
            let session = RtpSession::new(target.codec.payload_type(), &mut rng);
            if let Ok(mut ssrcs) = reports.ssrcs.lock() {
                ssrcs.insert(
                    session.ssrc(),
                    frame.cluster.clone(),
                    target.codec.clock_rate(),
                );
            }
            Link {
                session,
                destination,
                rtcp_destination: SocketAddr::new(
                    destination.ip(),
                    destination.port().wrapping_add(1),
                ),
                codec: target.codec,
                ptime_ms: target.ptime_ms,
                // First report right after the first packet, so receivers can map the
                // media clock to wall-clock time from the start.
                next_report: Instant::now() + Duration::from_millis(u64::from(target.ptime_ms)),
            }
        });
        let step = link.codec.timestamp_step(link.ptime_ms);
        let rtp_time = link.session.next_timestamp();
        let header = link
            .session
            .next_header(frame.payload.len(), step, frame.marker);
        let datagram = Datagram {
            header,
            payload: frame.payload,
            destination: link.destination,
        };
        let batch = match target.multicast_ttl {
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
        let now = Instant::now();
        if now >= link.next_report {
            link.next_report = now + SENDER_REPORT_INTERVAL;
            let ntp = ntp_timestamp(
                wall.duration_since(SystemTime::UNIX_EPOCH)
                    .unwrap_or_default(),
            );
            match rtcp::sender_report(&link.session, ntp, rtp_time, &self.settings.cname) {
                Ok(report) => self.reports_due.push((report, link.rtcp_destination)),
                Err(e) => tracing::error!(error = %e, "RTCP report build failed"),
            }
        }
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
        for (report, to) in self.reports_due.drain(..) {
            if let Err(e) = self.rtcp.send_to(&report, to) {
                tracing::debug!(error = %e, %to, "RTCP send failed");
            }
        }
    }

    /// Sends the BYEs whose tick has come.
    fn send_due_byes(&mut self, tick: u64) {
        let (due, later): (Vec<_>, Vec<_>) = self.byes.drain(..).partition(|(at, _)| *at <= tick);
        self.byes = later;
        for (_, link) in due {
            self.goodbye(&link);
        }
    }

    /// Turns arbiter events into store events, and ends the streams of idle clusters.
    fn forward(&mut self, events: &mut Vec<Event>, tick: u64) {
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
                    if let Ok(mut p) = self.progress.lock() {
                        p.remove(&(broadcast.to_string(), cluster.to_string()));
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
                    self.targets.remove(&cluster);
                    if let Some(link) = self.links.remove(&cluster) {
                        // One tick after the last packet: a receiver that reads its RTCP
                        // socket first would otherwise end the stream before that packet.
                        self.byes.push((tick + 1, link));
                    }
                    continue;
                }
            };
            let _ = self.events.send(out);
        }
    }

    fn goodbye(&self, link: &Link) {
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
            "programme ended",
        ) {
            Ok(bye) => {
                let _ = self.rtcp.send_to(&bye, link.rtcp_destination);
            }
            Err(e) => tracing::error!(error = %e, "RTCP BYE build failed"),
        }
    }

    fn publish_progress(&self) {
        if let Ok(mut p) = self.progress.lock() {
            for (cluster, broadcast, sent) in self.arbiter.progress() {
                p.insert((broadcast.to_string(), cluster.to_string()), sent);
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
    for (outcome, cluster) in outcomes.iter().zip(&batch.clusters) {
        if *outcome != SendOutcome::Sent {
            reports.count_send_error(cluster, *outcome);
        }
    }
    batch.datagrams.clear();
    batch.clusters.clear();
}

/// A socket for multicast streams of one TTL, leaving by `interface`.
fn multicast_sender(ttl: u8, interface: std::net::Ipv4Addr) -> std::io::Result<Sender> {
    let sender = Sender::bind(SocketAddr::from(([0, 0, 0, 0], 0)))?;
    sender.set_multicast(u32::from(ttl), interface)?;
    Ok(sender)
}
