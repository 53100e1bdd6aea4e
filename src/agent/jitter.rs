//! The agent's adaptive jitter buffer: puts the RTP packets of one stream back in order and
//! decides when each frame plays and which are lost. Pure: no I/O and no clock reads; the
//! playout clock passes `now` in, the receiver passes each packet's arrival.
//!
//! Every packet gets a playout instant when it arrives: the talkspurt's anchor (the arrival
//! of its first packet plus the target delay) advanced by its timestamp. The playout point
//! walks the sequence numbers one slot per frame, so a slot is either its packet or `Lost`.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use bytes::Bytes;

/// Packets further than this beyond the playout point are refused: it bounds memory and the
/// run of `Lost` slots a sequence jump can cause, whatever a sender does.
const MAX_AHEAD: Duration = Duration::from_secs(2);
/// A stream that sent nothing for this long past its last played slot has ended...
const IDLE_END: Duration = Duration::from_secs(1);
/// ...or for this many frames, for long ptimes.
const IDLE_END_FRAMES: u32 = 5;
/// How many played slots are remembered, to tell a duplicate from a late packet.
const HISTORY: i64 = 64;

/// One RTP packet, as far as playout cares.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Packet {
    pub ssrc: u32,
    /// Lets the receiver notice a codec it did not expect.
    pub payload_type: u8,
    pub sequence: u16,
    pub timestamp: u32,
    /// Set on the first packet of a talkspurt.
    pub marker: bool,
    pub payload: Bytes,
}

/// Parses an RTP datagram (RFC 3550 §5.1: version 2; CSRCs, header extension and padding
/// skipped). Anything malformed, and RTCP multiplexed onto the port, is `None`. Never panics.
pub fn parse_rtp(datagram: &[u8]) -> Option<Packet> {
    let header: &[u8; 12] = datagram.get(..12)?.try_into().ok()?;
    if header[0] >> 6 != 2 {
        return None;
    }
    let payload_type = header[1] & 0x7F;
    // SR, RR, SDES, BYE and APP read as payload types 72-76 through an RTP header (RFC 5761 §4).
    if (72..=76).contains(&payload_type) {
        return None;
    }
    let mut start = 12 + 4 * usize::from(header[0] & 0x0F);
    if header[0] & 0x10 != 0 {
        let extension = datagram.get(start..start + 4)?;
        start += 4 + 4 * usize::from(u16::from_be_bytes([extension[2], extension[3]]));
    }
    let mut end = datagram.len();
    if header[0] & 0x20 != 0 {
        // The last octet counts the padding, itself included, so it is never 0.
        let padding = usize::from(*datagram.last()?);
        if padding == 0 {
            return None;
        }
        end = end.checked_sub(padding)?;
    }
    Some(Packet {
        ssrc: u32::from_be_bytes([header[8], header[9], header[10], header[11]]),
        payload_type,
        sequence: u16::from_be_bytes([header[2], header[3]]),
        timestamp: u32::from_be_bytes([header[4], header[5], header[6], header[7]]),
        marker: header[1] & 0x80 != 0,
        payload: Bytes::copy_from_slice(datagram.get(start..end)?),
    })
}

/// Delay bounds and the codec's framing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct JitterConfig {
    /// The target delay never goes below this.
    pub min_delay: Duration,
    /// Nor above this.
    pub max_delay: Duration,
    /// RTP timestamp units per second.
    pub clock_rate: u32,
    /// RTP timestamp units per packet (160 for PCMU at 20 ms).
    pub frame_ticks: u32,
    /// Audio per packet (the ptime).
    pub frame: Duration,
}

impl JitterConfig {
    /// Default delay bounds for a codec whose RTP clock runs at `clock_rate` and whose packets
    /// each carry `frame` of audio.
    pub fn for_clock(clock_rate: u32, frame: Duration) -> Self {
        let ticks = u128::from(clock_rate) * frame.as_nanos() / 1_000_000_000;
        Self {
            clock_rate,
            frame_ticks: u32::try_from(ticks).unwrap_or(u32::MAX),
            frame,
            ..Self::default()
        }
    }
}

impl Default for JitterConfig {
    /// PCMU at 20 ms, 60 to 200 ms of delay.
    fn default() -> Self {
        Self {
            min_delay: Duration::from_millis(60),
            max_delay: Duration::from_millis(200),
            clock_rate: 8000,
            frame_ticks: 160,
            frame: Duration::from_millis(20),
        }
    }
}

/// What became of a pushed packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Pushed {
    /// Buffered for playout.
    Accepted,
    /// Buffered, and it starts a stream from a new SSRC (the previous one is dropped).
    NewStream,
    /// Its slot has already played (as `Lost`); dropped.
    Late,
    /// Already buffered or played; dropped.
    Duplicate,
    /// More than 2 s beyond the playout point; dropped.
    TooFarAhead,
}

/// What plays in one frame period.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Slot {
    /// The packet's payload, to decode.
    Frame(Bytes),
    /// The packet is missing: the caller conceals.
    Lost,
}

/// Counters since the buffer was made.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct JitterCounts {
    /// Packets pushed, whatever became of them.
    pub received: u64,
    /// Slots that played a frame.
    pub played: u64,
    /// Slots that played `Lost` (concealed).
    pub lost: u64,
    /// Packets that arrived after their slot had played.
    pub late: u64,
    pub duplicates: u64,
    pub too_far_ahead: u64,
    /// Streams started by a new SSRC.
    pub streams: u64,
}

/// The adaptive jitter buffer of one receiver.
#[derive(Debug)]
pub struct JitterBuffer {
    adapt: Adaptation,
    stream: Option<Stream>,
    counts: JitterCounts,
}

impl JitterBuffer {
    pub fn new(config: JitterConfig) -> Self {
        Self {
            adapt: Adaptation::new(config),
            stream: None,
            counts: JitterCounts::default(),
        }
    }

    /// A codec or ptime change: what is buffered was framed the old way, so playout restarts
    /// at the next packet.
    pub fn set_config(&mut self, config: JitterConfig) {
        self.adapt = Adaptation::new(config);
        if let Some(stream) = &mut self.stream {
            stream.end();
        }
    }

    pub fn push(&mut self, packet: Packet, arrival: Instant) -> Pushed {
        self.counts.received += 1;
        let new_stream = self.stream.as_ref().is_none_or(|s| s.ssrc != packet.ssrc);
        if new_stream {
            self.counts.streams += 1;
            self.adapt = Adaptation::new(self.adapt.config);
            self.stream = Some(Stream::new(&packet, arrival));
        }
        let verdict = self.place(packet, arrival);
        match verdict {
            Pushed::Accepted if new_stream => return Pushed::NewStream,
            Pushed::Accepted | Pushed::NewStream => {}
            Pushed::Late => self.counts.late += 1,
            Pushed::Duplicate => self.counts.duplicates += 1,
            Pushed::TooFarAhead => self.counts.too_far_ahead += 1,
        }
        verdict
    }

    /// Called once per frame period by the playout clock (and again while it returns `Some`,
    /// if the clock fell behind). `None`: nothing to play now (idle, filling before the
    /// first playout instant, or a silence between talkspurts).
    pub fn pop(&mut self, now: Instant) -> Option<Slot> {
        let frame = self.adapt.config.frame;
        let stream = self.stream.as_mut()?;
        if stream.phase == Phase::Idle {
            return None;
        }
        let Some((&seq, first)) = stream.buffer.first_key_value() else {
            let idle_end = IDLE_END.max(frame.saturating_mul(IDLE_END_FRAMES));
            if stream.last_due.is_some_and(|last| now >= last + idle_end) {
                stream.end();
            }
            return None;
        };
        if seq == stream.next_seq {
            let due = first.due;
            if now < due {
                return None;
            }
            let (_, entry) = stream.buffer.pop_first()?;
            stream.advance(due, true);
            self.counts.played += 1;
            return Some(Slot::Frame(entry.payload));
        }
        // The slot's packet is missing but a later one is here, so it will not come in
        // order. Its instant is the later packet's, one frame earlier per slot between, or
        // right after the previous slot when a silence lies between them.
        let between = u32::try_from(seq - stream.next_seq).unwrap_or(u32::MAX);
        let mut due = first
            .due
            .checked_sub(frame.saturating_mul(between))
            .unwrap_or(first.due);
        if let Some(last) = stream.last_due {
            due = due.min(last + frame);
        }
        if now < due {
            return None;
        }
        stream.advance(due, false);
        self.counts.lost += 1;
        Some(Slot::Lost)
    }

    /// How long after its arrival the first packet of a talkspurt plays.
    pub fn target_delay(&self) -> Duration {
        self.adapt.target
    }

    /// Media buffered ahead of the playout point.
    pub fn depth(&self) -> Duration {
        let packets = self.stream.as_ref().map_or(0, |s| s.buffer.len());
        let packets = u32::try_from(packets).unwrap_or(u32::MAX);
        self.adapt.config.frame.saturating_mul(packets)
    }

    /// The RFC 3550 interarrival jitter estimate.
    pub fn jitter(&self) -> Duration {
        self.adapt.jitter()
    }

    /// A stream is on: from its first packet (while it fills) until it ends or the config
    /// changes.
    pub fn is_playing(&self) -> bool {
        self.stream.as_ref().is_some_and(|s| s.phase != Phase::Idle)
    }

    pub fn counts(&self) -> JitterCounts {
        self.counts
    }

    /// Files the packet into the current stream; counting is the caller's.
    fn place(&mut self, packet: Packet, arrival: Instant) -> Pushed {
        let adapt = &mut self.adapt;
        let Some(stream) = self.stream.as_mut() else {
            return Pushed::Late;
        };
        let JitterConfig {
            clock_rate,
            frame_ticks,
            frame,
            ..
        } = adapt.config;
        let max_ahead =
            i64::try_from(MAX_AHEAD.as_nanos() / frame.as_nanos().max(1)).unwrap_or(i64::MAX);
        let seq = extend_seq(stream.newest.0, packet.sequence);
        let ts = extend_ts(stream.newest.1, packet.timestamp);
        if stream.buffer.contains_key(&seq) || stream.was_played(seq) {
            return Pushed::Duplicate;
        }
        if stream.phase == Phase::Idle {
            // A straggler of the run that ended is late; anything else starts a new run.
            if seq < stream.next_seq && stream.next_seq - seq <= max_ahead {
                return Pushed::Late;
            }
            let at = arrival + adapt.start_talkspurt();
            stream.start(seq, ts, at, packet.payload);
            adapt.observe(ts, arrival);
            return Pushed::Accepted;
        }
        let filling = stream.phase == Phase::Filling
            && seq >= stream.floor
            && stream.newest.0 - seq <= max_ahead;
        if seq < stream.next_seq && !filling {
            // Within reach, it shows the delay was too small; further back, or from a run
            // that ended, it is a stray.
            if seq >= stream.floor && stream.next_seq - seq <= max_ahead {
                adapt.observe(ts, arrival);
                let due = stream.due(seq, ts, clock_rate);
                if let Some(delta) = adapt.grow(arrival.saturating_duration_since(due)) {
                    stream.delay(delta);
                }
            }
            return Pushed::Late;
        }
        if seq > stream.next_seq.saturating_add(max_ahead) {
            return Pushed::TooFarAhead;
        }
        let (newest_seq, newest_ts) = stream.newest;
        let talkspurt = seq > newest_seq && {
            let expected = newest_ts + (seq - newest_seq) * i64::from(frame_ticks);
            packet.marker || (ts - expected).abs() > i64::from(frame_ticks / 2)
        };
        let due = if talkspurt {
            // Never before the packet it follows has played out: a delay that shrinks
            // while the sender did not pause would play frames on top of each other.
            let follows = stream.due(newest_seq, newest_ts, clock_rate);
            let slots = u32::try_from(seq - newest_seq).unwrap_or(u32::MAX);
            let at = (arrival + adapt.start_talkspurt()).max(follows + frame.saturating_mul(slots));
            stream.previous = Some(stream.anchor);
            stream.anchor = Anchor { seq, ts, at };
            at
        } else {
            let due = stream.due(seq, ts, clock_rate);
            if due > arrival + MAX_AHEAD {
                return Pushed::TooFarAhead;
            }
            due
        };
        stream.next_seq = stream.next_seq.min(seq);
        if seq > newest_seq {
            stream.newest = (seq, ts);
        }
        stream.buffer.insert(
            seq,
            Entry {
                due,
                payload: packet.payload,
            },
        );
        adapt.observe(ts, arrival);
        if let Some(delta) = adapt.grow(arrival.saturating_duration_since(due)) {
            stream.delay(delta);
        }
        Pushed::Accepted
    }
}

/// The delay the buffer aims for, and the jitter estimate it follows.
#[derive(Debug)]
struct Adaptation {
    config: JitterConfig,
    target: Duration,
    /// RFC 3550 §6.4.1 interarrival jitter, in RTP timestamp units.
    jitter: f64,
    /// Arrival in RTP units minus timestamp, of the previous packet.
    last_transit: Option<f64>,
    /// Arrivals are measured from here.
    epoch: Option<Instant>,
}

impl Adaptation {
    fn new(config: JitterConfig) -> Self {
        let mut adapt = Self {
            config,
            target: Duration::ZERO,
            jitter: 0.0,
            last_transit: None,
            epoch: None,
        };
        adapt.target = adapt.wanted();
        adapt
    }

    fn jitter(&self) -> Duration {
        Duration::try_from_secs_f64(self.jitter / f64::from(self.config.clock_rate.max(1)))
            .unwrap_or_default()
    }

    /// Feeds the interarrival jitter estimate (RFC 3550 §A.8).
    fn observe(&mut self, ts: i64, arrival: Instant) {
        let rate = f64::from(self.config.clock_rate.max(1));
        let epoch = *self.epoch.get_or_insert(arrival);
        let transit = arrival.saturating_duration_since(epoch).as_secs_f64() * rate - ts as f64;
        if let Some(last) = self.last_transit.replace(transit) {
            let d = (transit - last).abs();
            // A second or more is a discontinuity (a stray packet, a sender's clock jump),
            // not jitter: one such sample would hold the delay at its maximum for long.
            if d < rate {
                self.jitter += (d - self.jitter) / 16.0;
            }
        }
    }

    /// A frame plus three times the jitter, within the configured bounds.
    fn wanted(&self) -> Duration {
        (self.config.frame + self.jitter().saturating_mul(3))
            .max(self.config.min_delay)
            .min(self.config.max_delay)
    }

    /// The target a talkspurt starts with: up to what the jitter asks at once, down only
    /// halfway, so that one calm stretch does not undo what a burst of late packets taught.
    fn start_talkspurt(&mut self) -> Duration {
        let wanted = self.wanted();
        self.target = if wanted >= self.target {
            wanted
        } else {
            wanted + (self.target - wanted) / 2
        };
        self.target
    }

    /// A packet came `lateness` after its playout instant: the target grows at once by as
    /// much (within bounds), and the increase is returned for the playout to be held back.
    fn grow(&mut self, lateness: Duration) -> Option<Duration> {
        if lateness.is_zero() {
            return None;
        }
        let grown = (self.target + lateness)
            .max(self.wanted())
            .min(self.config.max_delay);
        let delta = grown.checked_sub(self.target).filter(|d| !d.is_zero())?;
        self.target = grown;
        Some(delta)
    }
}

/// The playout state of one SSRC.
#[derive(Debug)]
struct Stream {
    ssrc: u32,
    phase: Phase,
    /// Extended sequence number of the next slot to play.
    next_seq: i64,
    /// Extended sequence number and timestamp of the highest packet: the reference that
    /// unwraps the next ones.
    newest: (i64, i64),
    /// Where the current talkspurt's timestamps meet the playout clock.
    anchor: Anchor,
    /// The talkspurt's before, for its stragglers.
    previous: Option<Anchor>,
    buffer: BTreeMap<i64, Entry>,
    /// Playout instant of the last slot played.
    last_due: Option<Instant>,
    /// Bit i: slot `next_seq - 1 - i` played a frame.
    played: u64,
    /// Where the previous run of this SSRC stopped: a new run does not reach back past it.
    floor: i64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    /// Packets are buffered; the first has not played yet.
    Filling,
    Playing,
    /// Nothing buffered: the stream has not started, has ended or was reset.
    Idle,
}

#[derive(Debug, Clone, Copy)]
struct Anchor {
    seq: i64,
    ts: i64,
    at: Instant,
}

#[derive(Debug)]
struct Entry {
    due: Instant,
    payload: Bytes,
}

impl Stream {
    fn new(packet: &Packet, arrival: Instant) -> Self {
        let (seq, ts) = (i64::from(packet.sequence), i64::from(packet.timestamp));
        Self {
            ssrc: packet.ssrc,
            phase: Phase::Idle,
            next_seq: seq,
            newest: (seq, ts),
            anchor: Anchor {
                seq,
                ts,
                at: arrival,
            },
            previous: None,
            buffer: BTreeMap::new(),
            last_due: None,
            played: 0,
            floor: i64::MIN,
        }
    }

    /// A run starts with this packet, playing at `at`.
    fn start(&mut self, seq: i64, ts: i64, at: Instant, payload: Bytes) {
        self.phase = Phase::Filling;
        self.next_seq = seq;
        self.newest = (seq, ts);
        self.anchor = Anchor { seq, ts, at };
        self.previous = None;
        self.last_due = None;
        self.played = 0;
        self.buffer.insert(seq, Entry { due: at, payload });
    }

    fn end(&mut self) {
        self.phase = Phase::Idle;
        self.floor = self.next_seq;
        self.buffer.clear();
        self.previous = None;
    }

    /// The slot `next_seq` has played at `due`, a frame or not.
    fn advance(&mut self, due: Instant, frame: bool) {
        self.phase = Phase::Playing;
        self.next_seq += 1;
        self.last_due = Some(due);
        self.played = self.played << 1 | u64::from(frame);
    }

    fn was_played(&self, seq: i64) -> bool {
        let back = self.next_seq - 1 - seq;
        (0..HISTORY).contains(&back) && self.played >> back & 1 == 1
    }

    /// Playout instant of the packet `seq` stamped `ts`.
    fn due(&self, seq: i64, ts: i64, clock_rate: u32) -> Instant {
        let anchor = match self.previous {
            Some(previous) if seq < self.anchor.seq => previous,
            _ => self.anchor,
        };
        let ticks = ts - anchor.ts;
        let nanos =
            u128::from(ticks.unsigned_abs()) * 1_000_000_000 / u128::from(clock_rate.max(1));
        let offset = Duration::from_nanos(u64::try_from(nanos).unwrap_or(u64::MAX));
        let due = if ticks >= 0 {
            anchor.at.checked_add(offset)
        } else {
            anchor.at.checked_sub(offset)
        };
        due.unwrap_or(anchor.at)
    }

    /// Holds everything not yet played back by `delta`.
    fn delay(&mut self, delta: Duration) {
        self.anchor.at += delta;
        if let Some(previous) = &mut self.previous {
            previous.at += delta;
        }
        if let Some(last) = &mut self.last_due {
            *last += delta;
        }
        for entry in self.buffer.values_mut() {
            entry.due += delta;
        }
    }
}

/// The extended sequence number nearest `reference` whose low 16 bits are `seq`.
fn extend_seq(reference: i64, seq: u16) -> i64 {
    reference + i64::from(seq.wrapping_sub(reference as u16) as i16)
}

/// The extended timestamp nearest `reference` whose low 32 bits are `ts`.
fn extend_ts(reference: i64, ts: u32) -> i64 {
    reference + i64::from(ts.wrapping_sub(reference as u32) as i32)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::ops::RangeInclusive;

    const SSRC: u32 = 0x5EED;

    /// Packet `i` of a PCMU 20 ms stream from sequence `seq0` and timestamp `ts0`; its
    /// payload is its sequence number, to see what played.
    fn nth(seq0: u16, ts0: u32, i: u32) -> Packet {
        let sequence = seq0.wrapping_add(i as u16);
        Packet {
            ssrc: SSRC,
            payload_type: 0,
            sequence,
            timestamp: ts0.wrapping_add(160 * i),
            marker: i == 0,
            payload: Bytes::copy_from_slice(&sequence.to_be_bytes()),
        }
    }

    /// Packets `0..n` of a stream from 0, each arriving on time (20 ms apart).
    fn on_time(n: u32) -> Vec<(u64, Packet)> {
        (0..n).map(|i| (20 * u64::from(i), nth(0, 0, i))).collect()
    }

    #[derive(Debug, Clone, Copy, PartialEq, Eq)]
    enum Played {
        Frame(u16),
        Lost,
    }

    fn ms(t0: Instant, ms: u64) -> Instant {
        t0 + Duration::from_millis(ms)
    }

    /// Drives the buffer millisecond by millisecond over `span`: that millisecond's
    /// arrivals, then `pop` while it gives something. What played, and at which ms.
    fn run(
        jb: &mut JitterBuffer,
        t0: Instant,
        mut arrivals: Vec<(u64, Packet)>,
        span: RangeInclusive<u64>,
    ) -> Vec<(u64, Played)> {
        arrivals.sort_by_key(|(at, _)| *at);
        let mut arrivals = arrivals.into_iter().peekable();
        let mut out = Vec::new();
        for now_ms in span {
            let now = ms(t0, now_ms);
            while let Some((_, packet)) = arrivals.next_if(|(at, _)| *at <= now_ms) {
                jb.push(packet, now);
            }
            while let Some(slot) = jb.pop(now) {
                out.push((
                    now_ms,
                    match slot {
                        Slot::Frame(p) => Played::Frame(u16::from_be_bytes([p[0], p[1]])),
                        Slot::Lost => Played::Lost,
                    },
                ));
            }
        }
        out
    }

    fn frames(out: &[(u64, Played)]) -> Vec<u16> {
        out.iter()
            .filter_map(|(_, p)| match p {
                Played::Frame(seq) => Some(*seq),
                Played::Lost => None,
            })
            .collect()
    }

    /// Deterministic noise in `0..bound`.
    fn xorshift(state: &mut u32, bound: u32) -> u32 {
        *state ^= *state << 13;
        *state ^= *state >> 17;
        *state ^= *state << 5;
        *state % bound
    }

    #[test]
    fn in_order_packets_play_once_each_in_order_one_target_delay_after_arrival() {
        let t0 = Instant::now();
        let mut jb = JitterBuffer::new(JitterConfig::default());
        let out = run(&mut jb, t0, on_time(50), 0..=2000);
        let expected: Vec<_> = (0..50u16)
            .map(|i| (60 + 20 * u64::from(i), Played::Frame(i)))
            .collect();
        assert_eq!(out, expected);
        let counts = jb.counts();
        assert_eq!((counts.received, counts.played, counts.lost), (50, 50, 0));
        assert_eq!(jb.target_delay(), Duration::from_millis(60));
    }

    #[test]
    fn packets_reordered_within_the_delay_play_in_order() {
        let t0 = Instant::now();
        let mut jb = JitterBuffer::new(JitterConfig::default());
        let mut arrivals = on_time(20);
        arrivals[5].0 += 30; // after packet 6
        arrivals[12].0 += 55; // after 13 and 14
        let out = run(&mut jb, t0, arrivals, 0..=1000);
        assert_eq!(frames(&out), (0..20).collect::<Vec<_>>());
        assert_eq!(jb.counts().lost, 0);
        assert_eq!(jb.counts().late, 0);
    }

    #[test]
    fn a_stream_whose_first_two_packets_arrive_swapped_plays_in_order() {
        let t0 = Instant::now();
        let mut jb = JitterBuffer::new(JitterConfig::default());
        let mut arrivals = on_time(10);
        arrivals[0].0 = 25;
        let out = run(&mut jb, t0, arrivals, 0..=1000);
        assert_eq!(frames(&out), (0..10).collect::<Vec<_>>());
        assert_eq!(jb.counts().lost, 0);
    }

    #[test]
    fn a_missing_packet_plays_as_exactly_one_lost_slot_in_its_place() {
        let t0 = Instant::now();
        let mut jb = JitterBuffer::new(JitterConfig::default());
        let mut arrivals = on_time(20);
        arrivals.remove(7);
        let out = run(&mut jb, t0, arrivals, 0..=2000);
        assert_eq!(out.len(), 20);
        assert_eq!(out[7], (60 + 7 * 20, Played::Lost));
        assert_eq!(out[8], (60 + 8 * 20, Played::Frame(8)));
        assert_eq!(jb.counts().lost, 1);
    }

    #[test]
    fn a_packet_arriving_after_its_slot_is_counted_late_never_played_and_grows_the_delay() {
        let t0 = Instant::now();
        let mut jb = JitterBuffer::new(JitterConfig::default());
        let mut arrivals = on_time(20);
        arrivals[7].0 = 260; // its slot played (as lost) at 200
        let out = run(&mut jb, t0, arrivals, 0..=2000);
        assert_eq!(out[7], (200, Played::Lost));
        let played = frames(&out);
        assert!(!played.contains(&7));
        assert_eq!(played.len(), 19);
        assert!(played.is_sorted());
        assert_eq!(jb.counts().late, 1);
        // 60 ms late: the target grows by as much, and what had not played yet waits.
        assert_eq!(jb.target_delay(), Duration::from_millis(120));
        let ten = out.iter().find(|(_, p)| *p == Played::Frame(10));
        assert_eq!(ten, Some(&(60 + 10 * 20 + 60, Played::Frame(10))));
    }

    #[test]
    fn a_talkspurt_without_a_pause_keeps_its_frames_apart_when_the_delay_shrinks() {
        let t0 = Instant::now();
        let mut jb = JitterBuffer::new(JitterConfig::default());
        let mut arrivals = on_time(30);
        arrivals[7].0 = 260; // the delay grows to 120 ms
        arrivals[20].1.marker = true; // a new programme, straight on: it would shrink to 90
        let out = run(&mut jb, t0, arrivals, 0..=2000);
        let at = |seq| {
            out.iter()
                .find(|(_, p)| *p == Played::Frame(seq))
                .map(|(ms, _)| *ms)
        };
        assert_eq!(at(19), Some(60 + 19 * 20 + 60));
        assert_eq!(at(20), Some(60 + 20 * 20 + 60));
        assert_eq!(jb.target_delay(), Duration::from_millis(90));
    }

    #[test]
    fn duplicates_are_counted_and_dropped() {
        let t0 = Instant::now();
        let mut jb = JitterBuffer::new(JitterConfig::default());
        let mut arrivals = on_time(20);
        arrivals.extend(on_time(20));
        arrivals.push((700, nth(0, 0, 3))); // long after it played
        let out = run(&mut jb, t0, arrivals, 0..=2000);
        assert_eq!(frames(&out), (0..20).collect::<Vec<_>>());
        assert_eq!(jb.counts().duplicates, 21);
        assert_eq!(jb.counts().late, 0);
    }

    #[test]
    fn sequence_numbers_and_timestamps_wrap_around() {
        let t0 = Instant::now();
        let mut jb = JitterBuffer::new(JitterConfig::default());
        let mut arrivals: Vec<_> = (0..20)
            .map(|i| (20 * u64::from(i), nth(65_530, u32::MAX - 400, i)))
            .collect();
        arrivals.swap(5, 6); // reordered across the sequence wrap
        arrivals[5].0 = 100;
        arrivals[6].0 = 110;
        let out = run(&mut jb, t0, arrivals, 0..=2000);
        let expected: Vec<_> = (0..20).map(|i| 65_530u16.wrapping_add(i)).collect();
        assert_eq!(frames(&out), expected);
        assert_eq!(jb.counts().lost, 0);
        assert_eq!(out[19].0, 60 + 19 * 20);
    }

    #[test]
    fn a_new_ssrc_restarts_the_stream_at_its_first_packet() {
        let t0 = Instant::now();
        let mut jb = JitterBuffer::new(JitterConfig::default());
        assert_eq!(jb.push(nth(0, 0, 0), t0), Pushed::NewStream);
        let mut arrivals = on_time(10);
        arrivals.remove(0);
        let mut b = nth(1000, 99_999, 0);
        b.ssrc = 0xB;
        let out = run(&mut jb, t0, arrivals, 0..=199);
        assert_eq!(jb.push(b, ms(t0, 200)), Pushed::NewStream);
        let rest: Vec<_> = (1..5)
            .map(|i| {
                let mut p = nth(1000, 99_999, i);
                p.ssrc = 0xB;
                (200 + 20 * u64::from(i), p)
            })
            .collect();
        let out_b = run(&mut jb, t0, rest, 200..=1000);
        assert_eq!(frames(&out), (0..7).collect::<Vec<_>>());
        assert_eq!(out_b[0], (260, Played::Frame(1000)));
        assert_eq!(frames(&out_b), (1000..1005).collect::<Vec<_>>());
        assert_eq!(jb.counts().streams, 2);
    }

    #[test]
    fn a_stream_ends_a_second_after_its_last_frame_and_starts_again_at_the_next_packet() {
        let t0 = Instant::now();
        let mut jb = JitterBuffer::new(JitterConfig::default());
        let out = run(&mut jb, t0, on_time(10), 0..=1239);
        assert_eq!(out.last(), Some(&(240, Played::Frame(9))));
        assert!(jb.is_playing());
        assert_eq!(jb.pop(ms(t0, 1240)), None);
        assert!(!jb.is_playing());
        assert_eq!(jb.depth(), Duration::ZERO);
        let mut next = nth(0, 0, 10);
        next.marker = true;
        assert_eq!(jb.push(next, ms(t0, 3000)), Pushed::Accepted);
        assert_eq!(jb.push(nth(0, 0, 4), ms(t0, 3001)), Pushed::Late);
        let out = run(&mut jb, t0, vec![], 3000..=3100);
        assert_eq!(out, vec![(3060, Played::Frame(10))]);
        assert!(jb.is_playing());
    }

    #[test]
    fn a_talkspurt_after_a_silence_plays_one_target_delay_after_its_arrival() {
        let t0 = Instant::now();
        let mut jb = JitterBuffer::new(JitterConfig::default());
        let mut arrivals = on_time(10);
        // 500 ms sent nothing: sequence numbers go on, the timestamp jumps with the clock.
        arrivals.extend((10..20).map(|i| {
            let mut p = nth(0, 160 * 25, i);
            p.marker = i == 10;
            (20 * u64::from(i) + 500, p)
        }));
        let out = run(&mut jb, t0, arrivals, 0..=1000);
        assert_eq!(frames(&out), (0..20).collect::<Vec<_>>());
        assert_eq!(out[10], (700 + 60, Played::Frame(10)));
        assert_eq!(jb.counts().lost, 0);
        assert!(jb.is_playing(), "the silence did not end the stream");
    }

    #[test]
    fn the_last_packet_before_a_silence_lost_is_concealed_right_after_its_predecessor() {
        let t0 = Instant::now();
        let mut jb = JitterBuffer::new(JitterConfig::default());
        let mut arrivals = on_time(10);
        arrivals.pop();
        let mut spurt = nth(0, 160 * 25, 10);
        spurt.marker = true;
        arrivals.push((700, spurt));
        let out = run(&mut jb, t0, arrivals, 0..=2000);
        // Nothing is known lost until the next talkspurt shows packet 9 never came.
        assert_eq!(out[9], (700, Played::Lost));
        assert_eq!(out[10], (760, Played::Frame(10)));
    }

    #[test]
    fn jittered_arrivals_raise_the_target_but_never_beyond_its_bounds() {
        for spread in [80, 1000] {
            let t0 = Instant::now();
            let mut jb = JitterBuffer::new(JitterConfig::default());
            let mut noise = 0x1234_5678;
            let arrivals: Vec<_> = (0..500)
                .map(|i| {
                    let mut p = nth(0, 0, i);
                    p.marker = i % 50 == 0;
                    (
                        20 * u64::from(i) + u64::from(xorshift(&mut noise, spread)),
                        p,
                    )
                })
                .collect();
            let mut highest = Duration::ZERO;
            for step in 0..12 {
                let span = step * 1000..=step * 1000 + 999;
                run(&mut jb, t0, arrivals.clone(), span);
                highest = highest.max(jb.target_delay());
                assert!(jb.target_delay() >= Duration::from_millis(60));
                assert!(jb.target_delay() <= Duration::from_millis(200));
            }
            assert!(highest > Duration::from_millis(60), "spread {spread}");
            assert!(jb.jitter() > Duration::ZERO);
        }
    }

    #[test]
    fn moderate_jitter_settles_on_a_delay_that_loses_little() {
        let t0 = Instant::now();
        let mut jb = JitterBuffer::new(JitterConfig::default());
        let mut noise = 0xC0FF_EE11;
        let arrivals: Vec<_> = (0..1000)
            .map(|i| {
                let mut p = nth(0, 0, i);
                p.marker = i % 100 == 0;
                (20 * u64::from(i) + u64::from(xorshift(&mut noise, 70)), p)
            })
            .collect();
        let out = run(&mut jb, t0, arrivals, 0..=21_000);
        let counts = jb.counts();
        assert_eq!(counts.played + counts.lost, 1000);
        assert!(counts.late < 10, "{counts:?}");
        assert_eq!(frames(&out).len() as u64, counts.played);
        assert!(frames(&out).is_sorted());
    }

    #[test]
    fn packets_more_than_two_seconds_ahead_are_refused() {
        let t0 = Instant::now();
        let mut jb = JitterBuffer::new(JitterConfig::default());
        assert_eq!(jb.push(nth(0, 0, 0), t0), Pushed::NewStream);
        assert_eq!(jb.push(nth(0, 0, 2), t0), Pushed::Accepted);
        assert_eq!(jb.push(nth(0, 0, 101), t0), Pushed::TooFarAhead);
        assert_eq!(jb.push(nth(0, 0, 30_000), t0), Pushed::TooFarAhead);
        // In sequence, but stamped ten seconds on.
        let mut far = nth(0, 0, 1);
        far.timestamp = 8000 * 10;
        assert_eq!(jb.push(far, t0), Pushed::TooFarAhead);
        assert_eq!(jb.counts().too_far_ahead, 3);
        assert_eq!(jb.depth(), Duration::from_millis(40));
    }

    #[test]
    fn a_config_change_restarts_playout_at_the_next_packet() {
        let t0 = Instant::now();
        let mut jb = JitterBuffer::new(JitterConfig::default());
        run(&mut jb, t0, on_time(10), 0..=100);
        assert!(jb.is_playing());
        let opus = JitterConfig::for_clock(48_000, Duration::from_millis(40));
        assert_eq!(opus.frame_ticks, 1920);
        jb.set_config(opus);
        assert!(!jb.is_playing());
        assert_eq!(jb.depth(), Duration::ZERO);
        let p = Packet {
            timestamp: 5000,
            ..nth(0, 0, 20)
        };
        assert_eq!(jb.push(p, ms(t0, 200)), Pushed::Accepted);
        assert_eq!(jb.pop(ms(t0, 259)), None);
        assert!(matches!(jb.pop(ms(t0, 260)), Some(Slot::Frame(_))));
    }

    /// A header with two CSRCs, a one-word extension and three octets of padding around
    /// the payload `[7, 8, 9]`.
    fn full_packet() -> Vec<u8> {
        let mut p = vec![
            0xB2,
            0x80 | 96,
            0x12,
            0x34,
            0,
            0,
            0x01,
            0x00,
            0xDE,
            0xAD,
            0xBE,
            0xEF,
        ];
        p.extend([0; 8]); // CSRCs
        p.extend([0xBE, 0xDE, 0, 1, 1, 2, 3, 4]); // extension
        p.extend([7, 8, 9]);
        p.extend([0, 0, 3]); // padding
        p
    }

    #[test]
    fn parse_rtp_skips_csrcs_extension_and_padding() {
        let packet = parse_rtp(&full_packet()).expect("valid");
        assert_eq!(packet.ssrc, 0xDEAD_BEEF);
        assert_eq!(packet.payload_type, 96);
        assert_eq!(packet.sequence, 0x1234);
        assert_eq!(packet.timestamp, 256);
        assert!(packet.marker);
        assert_eq!(&packet.payload[..], &[7, 8, 9]);
    }

    #[test]
    fn parse_rtp_reads_what_the_controller_sends() {
        let mut session = crate::rtp::RtpSession::with_initial(0, 42, 65_535, 7);
        let wire = session
            .packetize(Bytes::from_static(&[0xFF; 160]), 160, true)
            .unwrap();
        let packet = parse_rtp(&wire).expect("valid");
        assert_eq!(
            (
                packet.ssrc,
                packet.sequence,
                packet.timestamp,
                packet.marker
            ),
            (42, 65_535, 7, true)
        );
        assert_eq!(packet.payload.len(), 160);
    }

    #[test]
    fn hostile_datagrams_are_refused_without_panicking() {
        let good = full_packet();
        for cut in 0..good.len() {
            // Every prefix but the whole is inconsistent somewhere or empty of payload.
            let _ = parse_rtp(&good[..cut]);
        }
        assert_eq!(parse_rtp(&good[..11]), None, "truncated header");
        let mut version = good.clone();
        version[0] &= 0x3F;
        assert_eq!(parse_rtp(&version), None, "version 0");
        let mut csrcs = good.clone();
        csrcs[0] |= 0x0F;
        assert_eq!(parse_rtp(&csrcs), None, "15 CSRCs in a short packet");
        let mut extension = good.clone();
        extension[22] = 0xFF;
        assert_eq!(parse_rtp(&extension), None, "extension beyond the packet");
        let mut padding = good.clone();
        *padding.last_mut().unwrap() = 200;
        assert_eq!(parse_rtp(&padding), None, "padding beyond the packet");
        *padding.last_mut().unwrap() = 0;
        assert_eq!(parse_rtp(&padding), None, "zero padding");
        let rtcp = [0x80, 201, 0, 1, 0, 0, 0, 1, 0, 0, 0, 0];
        assert_eq!(parse_rtp(&rtcp), None, "RTCP on the RTP port");
        assert_eq!(parse_rtp(b"LXKA\x01\x00"), None, "a keepalive");
        let mut noise = 0x9E37_79B9;
        for len in 0..300 {
            let mut g: Vec<u8> = (0..len).map(|_| xorshift(&mut noise, 256) as u8).collect();
            if let Some(first) = g.first_mut() {
                *first = 0x80 | (*first & 0x3F);
            }
            let _ = parse_rtp(&g);
        }
    }
}
