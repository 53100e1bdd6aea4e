//! Playout: the arbiter decides what each cluster airs (pure, [`arbiter`]); the pacer
//! thread ticks on absolute deadlines and sends it ([`pacer`]). [`Engine`] is the handle
//! the rest of the daemon talks to, over a channel.

pub mod arbiter;
pub mod live;
pub mod pacer;
pub mod registry;
pub mod reports;
pub mod sender;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, mpsc};
use std::thread::JoinHandle;
use std::time::SystemTime;

pub use arbiter::{Frames, Interruption, Outcome, Priority};
pub use live::{FeedStats, LiveFeed};

use crate::codec::Codec;

/// Where a cluster's packets go.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Destination {
    /// A configured unicast address or multicast group.
    Fixed(SocketAddr),
    /// Wherever the cluster's verified keepalives last came from (behind NAT).
    Registered,
}

/// One cluster a programme goes to, with everything the sender needs.
#[derive(Debug, Clone)]
pub struct Target {
    pub cluster_id: String,
    pub destination: Destination,
    pub codec: Codec,
    pub ptime_ms: u32,
    /// For a multicast group: its TTL (the group's datagrams leave from a socket set up
    /// for it).
    pub multicast_ttl: Option<u8>,
    /// SRTP master key of the cluster: its packets are protected (RFC 3711) with a
    /// context of its own, so their payload bytes are no longer shared.
    pub srtp: Option<crate::rtp::srtp::MasterKey>,
    /// The payload frames, encoded for this cluster's codec and ptime; shared by every
    /// cluster with the same (codec, ptime).
    pub frames: Frames,
}

pub(crate) enum Command {
    Play {
        broadcast: String,
        priority: Priority,
        on_interrupt: Interruption,
        targets: Vec<Target>,
        /// Start on the tick at this wall-clock instant; `None`: the next tick.
        at: Option<SystemTime>,
    },
    Cancel {
        broadcast: String,
    },
    RemoveCluster {
        cluster: String,
    },
    Shutdown,
}

/// What happened in playout, for the store.
#[derive(Debug, Clone, PartialEq)]
pub enum EngineEvent {
    Started {
        broadcast: String,
        cluster: String,
        at: String,
    },
    Preempted {
        broadcast: String,
        cluster: String,
        by: String,
        policy: Interruption,
        /// How far into the programme it was cut, in ms of audio.
        at_ms: u64,
        at: String,
    },
    Finished {
        broadcast: String,
        cluster: String,
        outcome: Outcome,
        packets_sent: u64,
        at: String,
    },
    /// The pacer thread has stopped; no more events follow.
    Stopped,
}

/// Live frames-sent counters by broadcast then cluster, published by the pacer a few
/// times a second (keys are the pacer's shared strings: no allocation per update).
pub(crate) type Progress = Arc<Mutex<HashMap<Arc<str>, HashMap<Arc<str>, u64>>>>;

/// Handle to the playout engine.
pub struct Engine {
    commands: mpsc::Sender<Command>,
    reports: Arc<reports::Reports>,
    registry: Arc<registry::Registry>,
    progress: Progress,
    running: Arc<AtomicBool>,
    thread: Mutex<Option<JoinHandle<()>>>,
    rtp_addr: SocketAddr,
    rtcp_addr: SocketAddr,
}

impl Engine {
    /// Binds the sending sockets and starts the pacer thread. Events go to `events`.
    pub fn start(
        settings: pacer::Settings,
        events: tokio::sync::mpsc::UnboundedSender<EngineEvent>,
    ) -> std::io::Result<Self> {
        let (commands, rx) = mpsc::channel();
        let progress: Progress = Arc::default();
        let running = Arc::new(AtomicBool::new(true));
        let reports = Arc::new(reports::Reports::default());
        let registry = Arc::new(registry::Registry::new(settings.registration_timeout));
        let pacer = pacer::Pacer::bind(
            settings,
            rx,
            events,
            progress.clone(),
            running.clone(),
            reports.clone(),
            registry.clone(),
        )?;
        let rtp_addr = pacer.rtp_local_addr()?;
        let rtcp_socket = pacer.rtcp_socket()?;
        let rtcp_addr = rtcp_socket.local_addr()?;
        reports::spawn(rtcp_socket, reports.clone(), running.clone())?;
        registry::spawn(
            pacer.rtp_socket()?,
            registry.clone(),
            reports.clone(),
            running.clone(),
        )?;
        let thread = std::thread::Builder::new()
            .name("loaxa-pacer".into())
            .spawn(move || pacer.run())?;
        Ok(Self {
            commands,
            reports,
            registry,
            progress,
            running,
            thread: Mutex::new(Some(thread)),
            rtp_addr,
            rtcp_addr,
        })
    }

    /// Airs `targets` (each with its frames) at `priority` from the next tick; if a higher
    /// priority cuts in, `on_interrupt` says what becomes of it.
    pub fn play(
        &self,
        broadcast: &str,
        priority: Priority,
        on_interrupt: Interruption,
        targets: Vec<Target>,
    ) -> bool {
        self.commands
            .send(Command::Play {
                broadcast: broadcast.to_string(),
                priority,
                on_interrupt,
                targets,
                at: None,
            })
            .is_ok()
    }

    /// As [`Engine::play`], starting on the tick at wall-clock instant `at` (the pacer's
    /// ticks fall on whole multiples of the tick in wall-clock time, so a planned second
    /// is a tick boundary). An `at` already past starts on the next tick.
    pub fn play_at(
        &self,
        broadcast: &str,
        priority: Priority,
        on_interrupt: Interruption,
        targets: Vec<Target>,
        at: SystemTime,
    ) -> bool {
        self.commands
            .send(Command::Play {
                broadcast: broadcast.to_string(),
                priority,
                on_interrupt,
                targets,
                at: Some(at),
            })
            .is_ok()
    }

    /// Stops `broadcast` on every cluster at the next tick.
    pub fn cancel(&self, broadcast: &str) -> bool {
        self.commands
            .send(Command::Cancel {
                broadcast: broadcast.to_string(),
            })
            .is_ok()
    }

    /// Stops everything on `cluster` and ends its stream (the cluster was deleted).
    pub fn remove_cluster(&self, cluster: &str) -> bool {
        self.commands
            .send(Command::RemoveCluster {
                cluster: cluster.to_string(),
            })
            .is_ok()
    }

    /// Frames sent so far of `broadcast` to `cluster`, while it is airing.
    pub fn packets_sent(&self, broadcast: &str, cluster: &str) -> Option<u64> {
        let progress = self.progress.lock().ok()?;
        progress.get(broadcast)?.get(cluster).copied()
    }

    /// Receiver reports, send errors and send counters of the whole fleet.
    pub fn reports(&self) -> &reports::Reports {
        &self.reports
    }

    /// The latest receiver report about `cluster`'s stream.
    pub fn reception(&self, cluster: &str) -> Option<reports::Reception> {
        self.reports.reception(cluster)
    }

    /// Registered clusters: their keys and the addresses their keepalives come from.
    pub fn registry(&self) -> &registry::Registry {
        &self.registry
    }

    /// Send failures counted for `cluster`.
    pub fn send_errors(&self, cluster: &str) -> reports::SendErrors {
        self.reports.send_errors(cluster)
    }

    /// The pacer thread is alive.
    pub fn is_running(&self) -> bool {
        self.running.load(Ordering::Acquire)
    }

    /// The local address RTP leaves from.
    pub fn rtp_local_addr(&self) -> SocketAddr {
        self.rtp_addr
    }

    /// Where receivers of unicast and multicast streams send their RTCP reports.
    pub fn rtcp_local_addr(&self) -> SocketAddr {
        self.rtcp_addr
    }

    /// Finishes the current batch, sends BYE on every live stream, reports everything
    /// still airing as interrupted, and joins the thread. Blocking: call from
    /// `spawn_blocking` in async code.
    pub fn shutdown(&self) {
        let _ = self.commands.send(Command::Shutdown);
        let handle = self.thread.lock().ok().and_then(|mut t| t.take());
        if let Some(handle) = handle
            && handle.join().is_err()
        {
            tracing::error!("the pacer thread panicked");
        }
    }
}
