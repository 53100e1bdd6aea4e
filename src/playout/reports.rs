//! Receiver reports: a thread reads the controller's RTCP port, parses what receivers
//! say about our streams (loss, jitter) and keeps the latest per cluster for the health
//! model. Hostile or malformed datagrams are dropped and counted, never fatal.

use std::collections::HashMap;
use std::net::UdpSocket;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use super::sender::SendOutcome;
use crate::rtp::rtcp;

/// The latest reception report about one cluster's stream.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Reception {
    /// Loss since the receiver's previous report, in percent.
    pub loss_pct: f64,
    /// Packets lost since the stream began.
    pub cumulative_lost: u32,
    /// Interarrival jitter in milliseconds.
    pub jitter_ms: f64,
    /// Reports received for this cluster since the daemon started.
    pub reports: u64,
    pub at: SystemTime,
}

/// Which cluster (and RTP clock rate) each of our SSRCs belongs to.
#[derive(Default)]
pub(crate) struct SsrcMap {
    by_ssrc: HashMap<u32, (Arc<str>, u32)>,
    /// The current SSRC of each cluster, so replacing one costs O(1) with 10,000 clusters.
    by_cluster: HashMap<Arc<str>, u32>,
}

impl SsrcMap {
    pub(crate) fn insert(&mut self, ssrc: u32, cluster: Arc<str>, clock_rate: u32) {
        // One live session per cluster: forget its previous SSRC so the map stays bounded.
        if let Some(old) = self.by_cluster.insert(cluster.clone(), ssrc) {
            self.by_ssrc.remove(&old);
        }
        self.by_ssrc.insert(ssrc, (cluster, clock_rate));
    }

    pub(crate) fn remove_cluster(&mut self, cluster: &str) {
        if let Some(old) = self.by_cluster.remove(cluster) {
            self.by_ssrc.remove(&old);
        }
    }
}

/// Shared between the report thread, the pacer and the API.
#[derive(Default)]
pub struct Reports {
    pub(crate) ssrcs: Mutex<SsrcMap>,
    latest: Mutex<HashMap<String, Reception>>,
    malformed: AtomicU64,
    unknown_ssrc: AtomicU64,
    send_errors: Mutex<HashMap<String, SendErrors>>,
    /// What the pacer sent, and how punctually it woke.
    pub(crate) sent: SentCounters,
}

/// Upper bounds (µs) of the pacer's wake-up lateness histogram.
pub const LATENESS_BUCKETS_US: [u64; 9] = [50, 100, 250, 500, 1_000, 2_000, 5_000, 10_000, 20_000];

/// Counters the pacer updates once per tick (atomics: read by `/metrics` at any time).
#[derive(Default)]
pub struct SentCounters {
    pub packets: AtomicU64,
    pub bytes: AtomicU64,
    pub ticks: AtomicU64,
    /// Ticks whose wake-up was at most each bound late (cumulative, Prometheus-style is
    /// computed when rendering); the last slot counts the rest.
    pub lateness: [AtomicU64; LATENESS_BUCKETS_US.len() + 1],
    pub lateness_sum_us: AtomicU64,
}

impl SentCounters {
    pub(crate) fn record_tick(&self, late: Duration) {
        let us = late.as_micros() as u64;
        let slot = LATENESS_BUCKETS_US
            .iter()
            .position(|&b| us <= b)
            .unwrap_or(LATENESS_BUCKETS_US.len());
        self.lateness[slot].fetch_add(1, Ordering::Relaxed);
        self.lateness_sum_us.fetch_add(us, Ordering::Relaxed);
        self.ticks.fetch_add(1, Ordering::Relaxed);
    }
}

/// Datagrams to one cluster that could not be handed to the network.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SendErrors {
    /// The socket buffer was full: the datagram was dropped rather than wait.
    pub would_block: u64,
    /// The destination is refused (permissions, a broadcast address) or unreachable.
    pub refused: u64,
    /// Anything else (no buffers, bad address).
    pub other: u64,
    /// A registered cluster had no current address (no keepalive within the timeout).
    pub not_registered: u64,
}

impl Reports {
    /// What the pacer sent and how punctually.
    pub fn sent(&self) -> &SentCounters {
        &self.sent
    }

    /// Send failures of every cluster.
    pub fn all_send_errors(&self) -> Vec<(String, SendErrors)> {
        self.send_errors
            .lock()
            .map(|m| m.iter().map(|(k, v)| (k.clone(), *v)).collect())
            .unwrap_or_default()
    }

    /// Forgets what was heard about `cluster` (it was deleted).
    pub fn forget(&self, cluster: &str) {
        if let Ok(mut latest) = self.latest.lock() {
            latest.remove(cluster);
        }
        if let Ok(mut errors) = self.send_errors.lock() {
            errors.remove(cluster);
        }
    }

    /// The latest receiver report of every cluster that sent one.
    pub fn all_receptions(&self) -> Vec<(String, Reception)> {
        self.latest
            .lock()
            .map(|m| m.iter().map(|(k, v)| (k.clone(), *v)).collect())
            .unwrap_or_default()
    }

    pub fn reception(&self, cluster: &str) -> Option<Reception> {
        self.latest.lock().ok()?.get(cluster).copied()
    }

    /// Send failures counted for `cluster` since the daemon started.
    pub fn send_errors(&self, cluster: &str) -> SendErrors {
        self.send_errors
            .lock()
            .ok()
            .and_then(|m| m.get(cluster).copied())
            .unwrap_or_default()
    }

    pub(crate) fn count_unregistered(&self, cluster: &str) {
        if let Ok(mut map) = self.send_errors.lock() {
            map.entry(cluster.to_string()).or_default().not_registered += 1;
        }
    }

    pub(crate) fn count_send_error(&self, cluster: &str, outcome: SendOutcome) {
        let Ok(mut map) = self.send_errors.lock() else {
            return;
        };
        let entry = map.entry(cluster.to_string()).or_default();
        match outcome {
            SendOutcome::Sent => {}
            SendOutcome::WouldBlock => entry.would_block += 1,
            SendOutcome::Unreachable | SendOutcome::NotPermitted => entry.refused += 1,
            SendOutcome::NoBuffers | SendOutcome::Other(_) => entry.other += 1,
        }
    }

    /// Datagrams on the RTCP port that were not valid RTCP reports.
    pub fn malformed(&self) -> u64 {
        self.malformed.load(Ordering::Relaxed)
    }

    /// Report blocks about SSRCs that are none of ours.
    pub fn unknown_ssrc(&self) -> u64 {
        self.unknown_ssrc.load(Ordering::Relaxed)
    }

    /// Takes one datagram that arrived at `at`.
    pub(crate) fn handle(&self, datagram: &[u8], at: SystemTime) {
        let blocks = match rtcp::parse_reports(datagram) {
            Ok(b) => b,
            Err(e) => {
                self.malformed.fetch_add(1, Ordering::Relaxed);
                tracing::debug!(error = %e, "dropped an RTCP datagram");
                return;
            }
        };
        let Ok(ssrcs) = self.ssrcs.lock() else {
            return;
        };
        let Ok(mut latest) = self.latest.lock() else {
            return;
        };
        for block in blocks {
            let Some((cluster, clock_rate)) = ssrcs.by_ssrc.get(&block.media_ssrc) else {
                self.unknown_ssrc.fetch_add(1, Ordering::Relaxed);
                continue;
            };
            let reports = latest.get(&**cluster).map_or(0, |r| r.reports) + 1;
            latest.insert(
                cluster.to_string(),
                Reception {
                    loss_pct: block.fraction_lost * 100.0,
                    cumulative_lost: block.cumulative_lost,
                    jitter_ms: f64::from(block.jitter) * 1000.0 / f64::from((*clock_rate).max(1)),
                    reports,
                    at,
                },
            );
        }
    }
}

/// Reads `socket` until `running` turns false.
pub(crate) fn spawn(
    socket: UdpSocket,
    reports: Arc<Reports>,
    running: Arc<AtomicBool>,
) -> std::io::Result<std::thread::JoinHandle<()>> {
    // Wake up now and then to notice shutdown.
    socket.set_read_timeout(Some(Duration::from_millis(200)))?;
    std::thread::Builder::new()
        .name("loaxa-rtcp".into())
        .spawn(move || {
            let mut buf = [0u8; 1500];
            while running.load(Ordering::Acquire) {
                match socket.recv_from(&mut buf) {
                    Ok((n, _from)) => reports.handle(&buf[..n], SystemTime::now()),
                    Err(e)
                        if matches!(
                            e.kind(),
                            std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                        ) => {}
                    // ICMP errors from earlier sends surface here on Linux; not fatal.
                    Err(e) => tracing::debug!(error = %e, "RTCP receive error"),
                }
            }
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rr(media_ssrc: u32, fraction_lost: u8, jitter: u32) -> Vec<u8> {
        // Version 2, RC=1, PT=201, length 7 words; reporter SSRC; one report block.
        let mut p = vec![0x81, 201, 0, 7];
        p.extend(0xBEEFu32.to_be_bytes());
        p.extend(media_ssrc.to_be_bytes());
        p.push(fraction_lost);
        p.extend([0, 0, 3]); // cumulative lost 3
        p.extend(1000u32.to_be_bytes()); // highest sequence
        p.extend(jitter.to_be_bytes());
        p.extend([0; 8]); // LSR, DLSR
        p
    }

    #[test]
    fn a_report_on_our_ssrc_lands_on_its_cluster_in_milliseconds() {
        let reports = Reports::default();
        reports.ssrcs.lock().unwrap().insert(7, "c1".into(), 8000);
        reports.handle(&rr(7, 128, 80), SystemTime::UNIX_EPOCH);
        let r = reports.reception("c1").unwrap();
        assert!((r.loss_pct - 50.0).abs() < 1e-9);
        assert_eq!(r.cumulative_lost, 3);
        assert!((r.jitter_ms - 10.0).abs() < 1e-9);
        assert_eq!(r.reports, 1);
    }

    #[test]
    fn garbage_and_strangers_are_counted_not_stored() {
        let reports = Reports::default();
        reports.ssrcs.lock().unwrap().insert(7, "c1".into(), 8000);
        reports.handle(b"hello", SystemTime::UNIX_EPOCH);
        reports.handle(&rr(99, 0, 0), SystemTime::UNIX_EPOCH);
        assert_eq!(reports.malformed(), 1);
        assert_eq!(reports.unknown_ssrc(), 1);
        assert!(reports.reception("c1").is_none());
    }

    #[test]
    fn a_new_session_replaces_the_clusters_old_ssrc() {
        let mut map = SsrcMap::default();
        map.insert(1, "c".into(), 8000);
        map.insert(2, "c".into(), 8000);
        assert_eq!(map.by_ssrc.len(), 1);
        map.remove_cluster("c");
        assert!(map.by_ssrc.is_empty());
    }
}
