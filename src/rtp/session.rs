//! One RTP sender session: SSRC, sequence number and timestamp of the stream to one
//! cluster, plus the counters RTCP sender reports carry. Wrapping arithmetic throughout.

use bytes::Bytes;
use rand::Rng;
use rtc_rtp::header::Header;
use rtc_rtp::packet::Packet;
use rtc_shared::marshal::Marshal;

use super::RtpError;

/// State of one outgoing RTP stream (RFC 3550 §5.1).
#[derive(Debug, Clone)]
pub struct RtpSession {
    ssrc: u32,
    payload_type: u8,
    /// Sequence number the next packet gets.
    next_sequence: u16,
    /// RTP timestamp the next packet gets.
    next_timestamp: u32,
    packets_sent: u32,
    octets_sent: u32,
}

impl RtpSession {
    /// A session with random SSRC, initial sequence number and timestamp, as RFC 3550
    /// §5.1 asks so that streams are hard to guess and do not collide.
    pub fn new(payload_type: u8, rng: &mut impl Rng) -> Self {
        Self::with_initial(payload_type, rng.random(), rng.random(), rng.random())
    }

    /// A session with chosen initial values (tests, and resuming a known stream).
    pub fn with_initial(payload_type: u8, ssrc: u32, sequence: u16, timestamp: u32) -> Self {
        Self {
            ssrc,
            payload_type,
            next_sequence: sequence,
            next_timestamp: timestamp,
            packets_sent: 0,
            octets_sent: 0,
        }
    }

    pub fn ssrc(&self) -> u32 {
        self.ssrc
    }

    /// The sequence number of the next packet.
    pub fn next_sequence(&self) -> u16 {
        self.next_sequence
    }

    pub fn payload_type(&self) -> u8 {
        self.payload_type
    }

    pub fn packets_sent(&self) -> u32 {
        self.packets_sent
    }

    pub fn octets_sent(&self) -> u32 {
        self.octets_sent
    }

    /// The RTP timestamp the next packet will carry.
    pub fn next_timestamp(&self) -> u32 {
        self.next_timestamp
    }

    /// Builds the next packet around `payload`, then advances the sequence by one and the
    /// timestamp by `timestamp_step` (the frame's duration in the codec's RTP clock).
    pub fn packetize(
        &mut self,
        payload: Bytes,
        timestamp_step: u32,
        marker: bool,
    ) -> Result<Bytes, RtpError> {
        let payload_len = payload.len() as u32;
        let packet = Packet {
            header: Header {
                version: 2,
                marker,
                payload_type: self.payload_type,
                sequence_number: self.next_sequence,
                timestamp: self.next_timestamp,
                ssrc: self.ssrc,
                ..Default::default()
            },
            payload,
        };
        let wire = packet
            .marshal()
            .map_err(|e| RtpError::Marshal(e.to_string()))?
            .freeze();
        self.next_sequence = self.next_sequence.wrapping_add(1);
        self.next_timestamp = self.next_timestamp.wrapping_add(timestamp_step);
        self.packets_sent = self.packets_sent.wrapping_add(1);
        self.octets_sent = self.octets_sent.wrapping_add(payload_len);
        Ok(wire)
    }

    /// The 12-byte header of the next packet (version 2, no padding, extension or CSRC),
    /// for senders that pair it with a payload shared between clusters; then advances as
    /// [`RtpSession::packetize`] does.
    pub fn next_header(
        &mut self,
        payload_len: usize,
        timestamp_step: u32,
        marker: bool,
    ) -> [u8; 12] {
        let mut h = [0u8; 12];
        h[0] = 0x80;
        h[1] = (u8::from(marker) << 7) | (self.payload_type & 0x7F);
        h[2..4].copy_from_slice(&self.next_sequence.to_be_bytes());
        h[4..8].copy_from_slice(&self.next_timestamp.to_be_bytes());
        h[8..12].copy_from_slice(&self.ssrc.to_be_bytes());
        self.next_sequence = self.next_sequence.wrapping_add(1);
        self.next_timestamp = self.next_timestamp.wrapping_add(timestamp_step);
        self.packets_sent = self.packets_sent.wrapping_add(1);
        self.octets_sent = self.octets_sent.wrapping_add(payload_len as u32);
        h
    }

    /// Skips `timestamp_step` of media time without sending, so the timestamp keeps
    /// following the media clock across a gap (the receiver sees silence, not a jump).
    pub fn skip(&mut self, timestamp_step: u32) {
        self.next_timestamp = self.next_timestamp.wrapping_add(timestamp_step);
    }

    /// Uses up the next sequence number and `timestamp_step` without sending: the packet
    /// had nowhere to go (a registered cluster with no address yet). The receiver that
    /// comes back sees a gap in sequence numbers, which is what happened: loss.
    pub fn lose(&mut self, timestamp_step: u32) {
        self.next_sequence = self.next_sequence.wrapping_add(1);
        self.next_timestamp = self.next_timestamp.wrapping_add(timestamp_step);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rtc_shared::marshal::Unmarshal;

    fn parse(wire: &Bytes) -> Packet {
        Packet::unmarshal(&mut wire.clone()).expect("valid RTP")
    }

    #[test]
    fn packets_carry_version_2_the_payload_type_and_the_marker_only_when_asked() {
        let mut s = RtpSession::with_initial(8, 0xDEADBEEF, 100, 1000);
        let first = parse(
            &s.packetize(Bytes::from_static(&[1; 160]), 160, true)
                .unwrap(),
        );
        let second = parse(
            &s.packetize(Bytes::from_static(&[2; 160]), 160, false)
                .unwrap(),
        );
        assert_eq!(first.header.version, 2);
        assert_eq!(first.header.payload_type, 8);
        assert_eq!(first.header.ssrc, 0xDEADBEEF);
        assert!(first.header.marker);
        assert!(!second.header.marker);
        assert!(!first.header.padding && !first.header.extension);
        assert_eq!(first.payload.len(), 160);
        assert_eq!(s.packets_sent(), 2);
        assert_eq!(s.octets_sent(), 320);
    }

    #[test]
    fn sequence_and_timestamp_wrap_around_without_panicking() {
        let mut s = RtpSession::with_initial(0, 1, u16::MAX, u32::MAX - 100);
        let a = parse(
            &s.packetize(Bytes::from_static(&[0; 160]), 160, false)
                .unwrap(),
        );
        let b = parse(
            &s.packetize(Bytes::from_static(&[0; 160]), 160, false)
                .unwrap(),
        );
        assert_eq!(a.header.sequence_number, u16::MAX);
        assert_eq!(b.header.sequence_number, 0);
        assert_eq!(a.header.timestamp, u32::MAX - 100);
        assert_eq!(b.header.timestamp, 59);
    }

    #[test]
    fn the_bare_header_is_byte_for_byte_what_the_rtp_crate_builds() {
        let mut a = RtpSession::with_initial(96, 0x0102_0304, u16::MAX, u32::MAX - 10);
        let mut b = a.clone();
        for marker in [true, false, false] {
            let whole = a
                .packetize(Bytes::from_static(&[9; 60]), 960, marker)
                .unwrap();
            let header = b.next_header(60, 960, marker);
            assert_eq!(&whole[..12], &header[..]);
        }
        assert_eq!(
            (a.packets_sent(), a.octets_sent()),
            (b.packets_sent(), b.octets_sent())
        );
    }

    #[test]
    fn skipping_advances_the_timestamp_but_not_the_sequence() {
        let mut s = RtpSession::with_initial(0, 1, 10, 0);
        s.skip(160);
        let p = parse(
            &s.packetize(Bytes::from_static(&[0; 160]), 160, true)
                .unwrap(),
        );
        assert_eq!(p.header.sequence_number, 10);
        assert_eq!(p.header.timestamp, 160);
    }

    #[test]
    fn new_sessions_start_at_random_points() {
        let mut rng = rand::rng();
        let a = RtpSession::new(0, &mut rng);
        let b = RtpSession::new(0, &mut rng);
        // Two 80-bit random draws colliding means the generator is broken.
        assert!(
            (a.ssrc, a.next_sequence, a.next_timestamp)
                != (b.ssrc, b.next_sequence, b.next_timestamp)
        );
    }
}
