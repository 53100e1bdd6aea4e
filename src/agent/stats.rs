//! Receiver statistics of the stream the agent plays, for its RTCP receiver reports:
//! sequence tracking, loss and interarrival jitter as RFC 3550 Appendix A.1, A.3 and A.8
//! compute them. Pure: the receiver passes each packet's arrival in.

use std::time::Instant;

/// A jump of fewer packets than this ahead is loss; more is a sender restart (RFC 3550 A.1).
const MAX_DROPOUT: u16 = 3000;
/// A packet this close behind the highest is a duplicate or reordered (RFC 3550 A.1).
const MAX_MISORDER: u16 = 100;
/// The 24-bit signed cumulative loss of a report block.
const MAX_LOST: i64 = 0x7F_FFFF;
const MIN_LOST: i64 = -0x80_0000;

/// The values of one RTCP report block (RFC 3550 §6.4.1).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReportBlock {
    /// The source reported on.
    pub ssrc: u32,
    /// Packets lost since the previous report, in 1/256ths.
    pub fraction_lost: u8,
    /// Packets lost since the source began, 24-bit two's complement (duplicates make it
    /// negative).
    pub cumulative_lost: u32,
    /// Sequence number cycles in the high 16 bits, highest sequence number in the low.
    pub extended_highest_sequence: u32,
    /// Interarrival jitter in RTP timestamp units.
    pub jitter: u32,
}

/// What has been received from the current source.
#[derive(Debug)]
pub struct ReceiverStats {
    clock_rate: u32,
    source: Option<Source>,
}

#[derive(Debug)]
struct Source {
    ssrc: u32,
    /// Arrivals are measured from the source's first packet.
    start: Instant,
    max_seq: u16,
    /// Sequence number wraps, times 65536.
    cycles: u32,
    base_seq: u32,
    /// The sequence number that would confirm a jump beyond `MAX_DROPOUT` as a restart.
    bad_seq: Option<u16>,
    received: u64,
    expected_prior: u64,
    received_prior: u64,
    /// Arrival minus timestamp of the previous packet, in RTP units.
    transit: Option<u32>,
    /// Interarrival jitter, in RTP units.
    jitter: f64,
}

impl ReceiverStats {
    pub fn new(clock_rate: u32) -> Self {
        Self {
            clock_rate: clock_rate.max(1),
            source: None,
        }
    }

    /// Every RTP packet received, before the jitter buffer. A new SSRC restarts the count.
    pub fn on_packet(&mut self, ssrc: u32, sequence: u16, timestamp: u32, arrival: Instant) {
        let source = match &mut self.source {
            Some(source) if source.ssrc == ssrc => source,
            _ => self.source.insert(Source::new(ssrc, sequence, arrival)),
        };
        if source.update_seq(sequence) {
            source.update_jitter(timestamp, arrival, self.clock_rate);
        }
    }

    /// The source being reported on, if any.
    pub fn source(&self) -> Option<u32> {
        self.source.as_ref().map(|s| s.ssrc)
    }

    /// The report block for the interval since the previous call (RFC 3550 A.3), which
    /// starts a new interval.
    pub fn report(&mut self) -> Option<ReportBlock> {
        let source = self.source.as_mut()?;
        let expected = source.expected();
        let expected_interval = expected.saturating_sub(source.expected_prior);
        let received_interval = source.received.saturating_sub(source.received_prior);
        source.expected_prior = expected;
        source.received_prior = source.received;
        let lost_interval = expected_interval.saturating_sub(received_interval);
        let fraction_lost = (lost_interval << 8)
            .checked_div(expected_interval)
            .map_or(0, |f| u8::try_from(f).unwrap_or(u8::MAX));
        let cumulative_lost = source.lost().clamp(MIN_LOST, MAX_LOST);
        Some(ReportBlock {
            ssrc: source.ssrc,
            fraction_lost,
            cumulative_lost: (cumulative_lost as u32) & 0xFF_FFFF,
            extended_highest_sequence: source.extended_max(),
            jitter: source.jitter as u32,
        })
    }

    /// Packets received from the source, duplicates included.
    pub fn received(&self) -> u64 {
        self.source.as_ref().map_or(0, |s| s.received)
    }

    /// Packets the sequence numbers say the source sent.
    pub fn expected(&self) -> u64 {
        self.source.as_ref().map_or(0, Source::expected)
    }

    /// Expected minus received: negative when duplicates outnumber losses.
    pub fn lost(&self) -> i64 {
        self.source.as_ref().map_or(0, Source::lost)
    }

    pub fn jitter_ms(&self) -> f64 {
        self.source
            .as_ref()
            .map_or(0.0, |s| s.jitter * 1000.0 / f64::from(self.clock_rate))
    }
}

impl Source {
    /// Without probation: the agent's controller is known, so its first packet counts.
    fn new(ssrc: u32, sequence: u16, arrival: Instant) -> Self {
        let mut source = Self {
            ssrc,
            start: arrival,
            max_seq: 0,
            cycles: 0,
            base_seq: 0,
            bad_seq: None,
            received: 0,
            expected_prior: 0,
            received_prior: 0,
            transit: None,
            jitter: 0.0,
        };
        source.init_seq(sequence);
        source
    }

    fn init_seq(&mut self, sequence: u16) {
        self.base_seq = u32::from(sequence);
        self.max_seq = sequence;
        self.bad_seq = None;
        self.cycles = 0;
        self.received = 0;
        self.expected_prior = 0;
        self.received_prior = 0;
    }

    /// RFC 3550 A.1 `update_seq`: false for a packet that is not counted (the first of a
    /// large jump, until the next one confirms it).
    fn update_seq(&mut self, sequence: u16) -> bool {
        let delta = sequence.wrapping_sub(self.max_seq);
        if delta < MAX_DROPOUT {
            if sequence < self.max_seq {
                self.cycles = self.cycles.wrapping_add(1 << 16);
            }
            self.max_seq = sequence;
        } else if delta <= u16::MAX - MAX_MISORDER + 1 {
            // A very large jump: the sender restarted if the next packet follows this one.
            if self.bad_seq == Some(sequence) {
                self.init_seq(sequence);
            } else {
                self.bad_seq = Some(sequence.wrapping_add(1));
                return false;
            }
        }
        // Otherwise a duplicate or reordered packet, counted as received all the same.
        self.received += 1;
        true
    }

    /// RFC 3550 A.8: transit times in RTP units, their differences smoothed by 1/16.
    fn update_jitter(&mut self, timestamp: u32, arrival: Instant, clock_rate: u32) {
        let elapsed = arrival.saturating_duration_since(self.start);
        // RTP units modulo 2^32, as timestamps are.
        let arrival_ticks = (elapsed.as_nanos() * u128::from(clock_rate) / 1_000_000_000) as u32;
        let transit = arrival_ticks.wrapping_sub(timestamp);
        if let Some(previous) = self.transit.replace(transit) {
            let d = f64::from(transit.wrapping_sub(previous) as i32).abs();
            self.jitter += (d - self.jitter) / 16.0;
        }
    }

    fn extended_max(&self) -> u32 {
        self.cycles.wrapping_add(u32::from(self.max_seq))
    }

    fn expected(&self) -> u64 {
        (u64::from(self.cycles) + u64::from(self.max_seq) + 1)
            .saturating_sub(u64::from(self.base_seq))
    }

    fn lost(&self) -> i64 {
        self.expected() as i64 - self.received as i64
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    /// Feeds packets `seqs` (offsets from `seq0`) of a 20 ms PCMU stream, each arriving
    /// on time plus `delay(i)` ms.
    fn feed(
        stats: &mut ReceiverStats,
        t0: Instant,
        seq0: u16,
        seqs: impl IntoIterator<Item = u32>,
        mut delay: impl FnMut(u32) -> u64,
    ) {
        for i in seqs {
            let arrival = t0 + Duration::from_millis(20 * u64::from(i) + delay(i));
            stats.on_packet(7, seq0.wrapping_add(i as u16), 160 * i, arrival);
        }
    }

    #[test]
    fn nothing_to_report_before_the_first_packet() {
        let mut stats = ReceiverStats::new(8000);
        assert_eq!(stats.source(), None);
        assert_eq!(stats.report(), None);
        assert_eq!(
            (stats.received(), stats.expected(), stats.lost()),
            (0, 0, 0)
        );
    }

    #[test]
    fn a_stream_without_loss_reports_none_lost() {
        let t0 = Instant::now();
        let mut stats = ReceiverStats::new(8000);
        feed(&mut stats, t0, 100, 0..50, |_| 0);
        let block = stats.report().unwrap();
        assert_eq!(stats.source(), Some(7));
        assert_eq!(block.ssrc, 7);
        assert_eq!(block.fraction_lost, 0);
        assert_eq!(block.cumulative_lost, 0);
        assert_eq!(block.extended_highest_sequence, 149);
        assert_eq!((stats.received(), stats.expected()), (50, 50));
    }

    #[test]
    fn ten_percent_loss_is_a_fraction_of_25_256ths_and_accumulates() {
        let t0 = Instant::now();
        let mut stats = ReceiverStats::new(8000);
        feed(&mut stats, t0, 0, (0..100).filter(|i| i % 10 != 5), |_| 0);
        let first = stats.report().unwrap();
        assert_eq!(first.fraction_lost, 25);
        assert_eq!(first.cumulative_lost, 10);
        // A clean interval: no fraction lost, the cumulative count stays.
        feed(&mut stats, t0, 0, 100..200, |_| 0);
        let second = stats.report().unwrap();
        assert_eq!(second.fraction_lost, 0);
        assert_eq!(second.cumulative_lost, 10);
        assert_eq!(stats.lost(), 10);
    }

    #[test]
    fn duplicates_make_the_cumulative_loss_negative_in_24_bits() {
        let t0 = Instant::now();
        let mut stats = ReceiverStats::new(8000);
        feed(&mut stats, t0, 0, 0..10, |_| 0);
        feed(&mut stats, t0, 0, 5..8, |_| 1);
        assert_eq!(stats.lost(), -3);
        let block = stats.report().unwrap();
        assert_eq!(block.cumulative_lost, 0xFF_FFFD);
        assert_eq!(block.fraction_lost, 0);
    }

    #[test]
    fn sequence_wrap_counts_a_cycle() {
        let t0 = Instant::now();
        let mut stats = ReceiverStats::new(8000);
        feed(&mut stats, t0, 65_500, (0..100).filter(|&i| i != 50), |_| 0);
        let block = stats.report().unwrap();
        assert_eq!(block.extended_highest_sequence, (1 << 16) + 63);
        assert_eq!(stats.expected(), 100);
        assert_eq!(block.cumulative_lost, 1);
    }

    #[test]
    fn reordering_across_the_wrap_loses_nothing() {
        let t0 = Instant::now();
        let mut stats = ReceiverStats::new(8000);
        let mut order: Vec<u32> = (0..20).collect();
        order.swap(5, 6); // 65535 after 0
        feed(&mut stats, t0, 65_530, order, |_| 0);
        let block = stats.report().unwrap();
        assert_eq!(block.cumulative_lost, 0);
        assert_eq!(block.extended_highest_sequence, (1 << 16) + 13);
    }

    #[test]
    fn a_new_source_restarts_the_statistics() {
        let t0 = Instant::now();
        let mut stats = ReceiverStats::new(8000);
        feed(&mut stats, t0, 0, (0..100).filter(|i| i % 2 == 0), |_| 0);
        assert!(stats.lost() > 0);
        stats.on_packet(8, 5000, 1, t0 + Duration::from_secs(3));
        assert_eq!(stats.source(), Some(8));
        assert_eq!(
            (stats.received(), stats.expected(), stats.lost()),
            (1, 1, 0)
        );
        let block = stats.report().unwrap();
        assert_eq!((block.ssrc, block.cumulative_lost, block.jitter), (8, 0, 0));
    }

    #[test]
    fn a_sender_restart_is_confirmed_by_two_sequential_packets() {
        let t0 = Instant::now();
        let mut stats = ReceiverStats::new(8000);
        feed(&mut stats, t0, 0, 0..10, |_| 0);
        feed(&mut stats, t0, 30_000, 10..13, |_| 0);
        // The first of the jump is not counted; the next confirms the new sequence.
        assert_eq!(stats.received(), 2);
        assert_eq!(stats.expected(), 2);
    }

    #[test]
    fn jitter_is_zero_on_perfect_timing_and_grows_with_jittered_arrivals() {
        let t0 = Instant::now();
        let mut steady = ReceiverStats::new(8000);
        feed(&mut steady, t0, 0, 0..200, |_| 0);
        assert_eq!(steady.report().unwrap().jitter, 0);
        assert_eq!(steady.jitter_ms(), 0.0);

        let mut jittered = ReceiverStats::new(8000);
        let mut noise: u32 = 0x1234_5678;
        feed(&mut jittered, t0, 0, 0..400, |_| {
            noise ^= noise << 13;
            noise ^= noise >> 17;
            noise ^= noise << 5;
            u64::from(noise % 30)
        });
        let block = jittered.report().unwrap();
        assert!(block.jitter > 0);
        // Delays spread uniformly over 0-30 ms differ by about 10 ms on average.
        let ms = jittered.jitter_ms();
        assert!((6.0..14.0).contains(&ms), "{ms} ms");
        assert!((f64::from(block.jitter) / 8.0 - ms).abs() < 0.2);
    }
}
