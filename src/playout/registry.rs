//! Where `registered` clusters are: the address their agent's keepalives last came from
//! (symmetric RTP, RFC 4961). A thread reads the controller's RTP port: keepalives are
//! verified against the cluster's key and update its address; RTCP multiplexed on that
//! port (RFC 5761, what agents behind NAT send) goes to the receiver reports. The pacer
//! takes a snapshot of the live addresses when something changed.

use std::collections::HashMap;
use std::net::{SocketAddr, UdpSocket};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use super::reports::Reports;
use crate::rtp::keepalive::{self, KeepaliveError};

/// What the controller knows about one registered cluster.
struct Entry {
    key: Vec<u8>,
    /// The latest verified keepalive: where it came from, when, and its counter.
    seen: Option<Seen>,
}

#[derive(Clone, Copy)]
struct Seen {
    from: SocketAddr,
    at: Instant,
    /// (agent time, counter) of the keepalive: the next must be newer.
    newest: (u64, u64),
}

/// A registered cluster's current address, as the API shows it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Registration {
    pub address: SocketAddr,
    /// How long ago the latest keepalive arrived.
    pub age: Duration,
}

/// Keepalives turned away, by reason, since the daemon started.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct KeepaliveCounts {
    pub accepted: u64,
    /// Not a keepalive (or RTCP) at all.
    pub malformed: u64,
    /// For a cluster that is not registered here.
    pub unknown_cluster: u64,
    /// The tag did not verify: forged, or signed with an old key.
    pub bad_tag: u64,
    /// Outside the clock window.
    pub stale: u64,
    /// Counter not above the last one: a replay.
    pub replayed: u64,
}

/// Shared between the reading thread, the pacer and the API.
pub struct Registry {
    entries: Mutex<HashMap<Arc<str>, Entry>>,
    /// Bumped whenever an address appears, moves or a cluster is removed.
    version: AtomicU64,
    /// A cluster whose keepalives stop for this long has no address any more.
    timeout: Duration,
    counts: Mutex<KeepaliveCounts>,
}

impl Registry {
    pub fn new(timeout: Duration) -> Self {
        Self {
            entries: Mutex::default(),
            version: AtomicU64::new(0),
            timeout,
            counts: Mutex::default(),
        }
    }

    /// Lets `cluster` register with keepalives signed by `key`.
    pub fn set_key(&self, cluster: &str, key: Vec<u8>) {
        if let Ok(mut entries) = self.entries.lock() {
            // The same key again (an edit that kept the mode) keeps the current address.
            if entries.get(cluster).is_none_or(|e| e.key != key) {
                entries.insert(cluster.into(), Entry { key, seen: None });
            }
        }
        self.version.fetch_add(1, Ordering::AcqRel);
    }

    /// Forgets `cluster` (it was deleted).
    pub fn remove(&self, cluster: &str) {
        if let Ok(mut entries) = self.entries.lock() {
            entries.remove(cluster);
        }
        self.version.fetch_add(1, Ordering::AcqRel);
    }

    /// `cluster`'s address, if its keepalives are current at `now`.
    pub fn registration(&self, cluster: &str, now: Instant) -> Option<Registration> {
        let entries = self.entries.lock().ok()?;
        let seen = entries.get(cluster)?.seen?;
        let age = now.saturating_duration_since(seen.at);
        (age < self.timeout).then_some(Registration {
            address: seen.from,
            age,
        })
    }

    /// How long ago each registered cluster's latest verified keepalive arrived (current
    /// or not), for the health model.
    pub fn keepalive_ages(&self, now: Instant) -> Vec<(Arc<str>, Duration)> {
        let Ok(entries) = self.entries.lock() else {
            return Vec::new();
        };
        entries
            .iter()
            .filter_map(|(cluster, e)| {
                e.seen
                    .map(|s| (cluster.clone(), now.saturating_duration_since(s.at)))
            })
            .collect()
    }

    pub fn counts(&self) -> KeepaliveCounts {
        self.counts.lock().map(|c| *c).unwrap_or_default()
    }

    pub(crate) fn version(&self) -> u64 {
        self.version.load(Ordering::Acquire)
    }

    /// Every cluster with a current address at `now`, into `into` (cleared first).
    pub(crate) fn snapshot(&self, now: Instant, into: &mut HashMap<Arc<str>, SocketAddr>) {
        into.clear();
        let Ok(entries) = self.entries.lock() else {
            return;
        };
        for (cluster, entry) in entries.iter() {
            if let Some(seen) = entry.seen
                && now.saturating_duration_since(seen.at) < self.timeout
            {
                into.insert(cluster.clone(), seen.from);
            }
        }
    }

    /// Takes a keepalive that arrived from `from`. `now` and `unix_ms` are the
    /// controller's monotonic and wall clocks at arrival.
    pub(crate) fn handle_keepalive(
        &self,
        datagram: &[u8],
        from: SocketAddr,
        now: Instant,
        unix_ms: u64,
    ) -> Result<(), KeepaliveError> {
        let result = self.accept(datagram, from, now, unix_ms);
        if let Ok(mut counts) = self.counts.lock() {
            match result {
                Ok(()) => counts.accepted += 1,
                Err(Refusal::UnknownCluster) => counts.unknown_cluster += 1,
                Err(Refusal::Keepalive(KeepaliveError::Malformed)) => counts.malformed += 1,
                Err(Refusal::Keepalive(KeepaliveError::BadTag)) => counts.bad_tag += 1,
                Err(Refusal::Keepalive(KeepaliveError::Stale)) => counts.stale += 1,
                Err(Refusal::Keepalive(KeepaliveError::Replayed)) => counts.replayed += 1,
            }
        }
        match result {
            Ok(()) => Ok(()),
            Err(Refusal::Keepalive(e)) => Err(e),
            Err(Refusal::UnknownCluster) => Err(KeepaliveError::BadTag),
        }
    }

    fn accept(
        &self,
        datagram: &[u8],
        from: SocketAddr,
        now: Instant,
        unix_ms: u64,
    ) -> Result<(), Refusal> {
        let cluster = keepalive::cluster_id(datagram)?;
        let mut entries = self.entries.lock().map_err(|_| Refusal::UnknownCluster)?;
        let entry = entries.get_mut(cluster).ok_or(Refusal::UnknownCluster)?;
        let last = entry.seen.map(|s| s.newest);
        let keepalive = keepalive::verify(datagram, &entry.key, unix_ms, last)?;
        let moved = entry
            .seen
            .is_none_or(|s| s.from != from || now.saturating_duration_since(s.at) >= self.timeout);
        entry.seen = Some(Seen {
            from,
            at: now,
            newest: (keepalive.unix_ms, keepalive.counter),
        });
        drop(entries);
        if moved {
            tracing::info!(cluster, %from, "registered cluster is at a new address");
            self.version.fetch_add(1, Ordering::AcqRel);
        }
        Ok(())
    }
}

enum Refusal {
    UnknownCluster,
    Keepalive(KeepaliveError),
}

impl From<KeepaliveError> for Refusal {
    fn from(e: KeepaliveError) -> Self {
        Refusal::Keepalive(e)
    }
}

/// Reads the RTP port until `running` turns false: keepalives to the registry, RTCP to
/// the receiver reports, anything else counted as malformed.
pub(crate) fn spawn(
    socket: UdpSocket,
    registry: Arc<Registry>,
    reports: Arc<Reports>,
    running: Arc<AtomicBool>,
) -> std::io::Result<std::thread::JoinHandle<()>> {
    std::thread::Builder::new()
        .name("loaxa-rtp-in".into())
        .spawn(move || {
            let mut buf = [0u8; 1500];
            while running.load(Ordering::Acquire) {
                // The socket is the pacer's, non-blocking: wait for data with a timeout so
                // shutdown is noticed.
                if !readable(&socket, Duration::from_millis(200)) {
                    continue;
                }
                let (n, from) = match socket.recv_from(&mut buf) {
                    Ok(got) => got,
                    Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => continue,
                    Err(e) => {
                        tracing::debug!(error = %e, "RTP port receive error");
                        continue;
                    }
                };
                let datagram = &buf[..n];
                let wall = SystemTime::now();
                if keepalive::is_keepalive(datagram) {
                    let unix_ms = wall
                        .duration_since(SystemTime::UNIX_EPOCH)
                        .map_or(0, |d| d.as_millis() as u64);
                    if let Err(e) =
                        registry.handle_keepalive(datagram, from, Instant::now(), unix_ms)
                    {
                        tracing::debug!(%from, error = %e, "keepalive refused");
                    }
                } else {
                    reports.handle(datagram, wall);
                }
            }
        })
}

#[cfg(unix)]
fn readable(socket: &UdpSocket, timeout: Duration) -> bool {
    use std::os::fd::AsRawFd;
    let mut fd = libc::pollfd {
        fd: socket.as_raw_fd(),
        events: libc::POLLIN,
        revents: 0,
    };
    // SAFETY: one valid pollfd for the duration of the call.
    let ready = unsafe { libc::poll(&mut fd, 1, timeout.as_millis() as libc::c_int) };
    ready > 0
}

#[cfg(not(unix))]
fn readable(_socket: &UdpSocket, timeout: Duration) -> bool {
    std::thread::sleep(timeout.min(Duration::from_millis(5)));
    true
}

#[cfg(test)]
mod tests {
    use super::*;

    const KEY: &[u8] = &[3u8; 32];
    const NOW_MS: u64 = 1_795_000_000_000;

    fn addr(port: u16) -> SocketAddr {
        SocketAddr::from(([198, 51, 100, 7], port))
    }

    #[test]
    fn a_verified_keepalive_gives_the_cluster_the_address_it_came_from() {
        let registry = Registry::new(Duration::from_secs(30));
        registry.set_key("c1", KEY.to_vec());
        let t0 = Instant::now();
        let before = registry.version();
        let ka = keepalive::encode("c1", NOW_MS, 1, KEY);
        registry
            .handle_keepalive(&ka, addr(40000), t0, NOW_MS)
            .unwrap();
        assert_eq!(
            registry.registration("c1", t0).unwrap().address,
            addr(40000)
        );
        assert!(registry.version() > before);
        let mut snap = HashMap::new();
        registry.snapshot(t0, &mut snap);
        assert_eq!(snap.get("c1"), Some(&addr(40000)));
    }

    #[test]
    fn the_address_follows_a_nat_rebinding_and_expires_when_keepalives_stop() {
        let registry = Registry::new(Duration::from_secs(30));
        registry.set_key("c1", KEY.to_vec());
        let t0 = Instant::now();
        let first = keepalive::encode("c1", NOW_MS, 1, KEY);
        registry
            .handle_keepalive(&first, addr(40000), t0, NOW_MS)
            .unwrap();
        let moved = keepalive::encode("c1", NOW_MS + 10_000, 2, KEY);
        let t1 = t0 + Duration::from_secs(10);
        registry
            .handle_keepalive(&moved, addr(51000), t1, NOW_MS + 10_000)
            .unwrap();
        assert_eq!(
            registry.registration("c1", t1).unwrap().address,
            addr(51000)
        );
        assert!(
            registry
                .registration("c1", t1 + Duration::from_secs(30))
                .is_none()
        );
        let mut snap = HashMap::new();
        registry.snapshot(t1 + Duration::from_secs(30), &mut snap);
        assert!(snap.is_empty());
    }

    #[test]
    fn forged_replayed_and_unknown_keepalives_do_not_move_the_stream() {
        let registry = Registry::new(Duration::from_secs(30));
        registry.set_key("c1", KEY.to_vec());
        let t0 = Instant::now();
        let genuine = keepalive::encode("c1", NOW_MS, 5, KEY);
        registry
            .handle_keepalive(&genuine, addr(40000), t0, NOW_MS)
            .unwrap();

        let forged = keepalive::encode("c1", NOW_MS, 6, &[9u8; 32]);
        let replay_from_elsewhere = genuine.clone();
        let stranger = keepalive::encode("c2", NOW_MS, 1, KEY);
        assert_eq!(
            registry.handle_keepalive(&forged, addr(666), t0, NOW_MS),
            Err(KeepaliveError::BadTag)
        );
        assert_eq!(
            registry.handle_keepalive(&replay_from_elsewhere, addr(666), t0, NOW_MS),
            Err(KeepaliveError::Replayed)
        );
        assert!(
            registry
                .handle_keepalive(&stranger, addr(666), t0, NOW_MS)
                .is_err()
        );
        assert!(
            registry
                .handle_keepalive(b"garbage", addr(666), t0, NOW_MS)
                .is_err()
        );
        assert_eq!(
            registry.registration("c1", t0).unwrap().address,
            addr(40000)
        );
        let counts = registry.counts();
        assert_eq!(
            (
                counts.accepted,
                counts.bad_tag,
                counts.replayed,
                counts.unknown_cluster,
                counts.malformed
            ),
            (1, 1, 1, 1, 1)
        );
    }

    #[test]
    fn an_agent_that_rebooted_gets_its_stream_back_at_its_new_address() {
        let registry = Registry::new(Duration::from_secs(30));
        registry.set_key("c1", KEY.to_vec());
        let t0 = Instant::now();
        for n in 1..=3 {
            let ka = keepalive::encode("c1", NOW_MS + n * 10_000, n, KEY);
            registry
                .handle_keepalive(&ka, addr(40000), t0, NOW_MS + n * 10_000)
                .unwrap();
        }
        // Power cut: the counter starts again, the clock has moved on, the NAT port too.
        let fresh = keepalive::encode("c1", NOW_MS + 45_000, 1, KEY);
        registry
            .handle_keepalive(&fresh, addr(41234), t0, NOW_MS + 45_000)
            .unwrap();
        assert_eq!(
            registry.registration("c1", t0).unwrap().address,
            addr(41234)
        );
    }

    #[test]
    fn a_removed_cluster_has_no_address() {
        let registry = Registry::new(Duration::from_secs(30));
        registry.set_key("c1", KEY.to_vec());
        let t0 = Instant::now();
        let ka = keepalive::encode("c1", NOW_MS, 1, KEY);
        registry
            .handle_keepalive(&ka, addr(40000), t0, NOW_MS)
            .unwrap();
        registry.remove("c1");
        assert!(registry.registration("c1", t0).is_none());
    }
}
