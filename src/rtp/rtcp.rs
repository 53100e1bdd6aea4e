//! RTCP compound packets a sender emits (RFC 3550 §6): sender report + SDES CNAME, and the
//! same followed by BYE when a stream ends. Pure builders over session state.

use bytes::Bytes;
use rtc_rtcp::goodbye::Goodbye;
use rtc_rtcp::packet::Packet as RtcpPacket;
use rtc_rtcp::sender_report::SenderReport;
use rtc_rtcp::source_description::{
    SdesType, SourceDescription, SourceDescriptionChunk, SourceDescriptionItem,
};

use super::{RtpError, RtpSession};

/// A sender report for `session` at wall-clock `ntp_time`, whose RTP timestamp is
/// `rtp_time` (the media clock at that same instant), with an SDES CNAME chunk as every
/// compound packet must carry (RFC 3550 §6.1).
pub fn sender_report(
    session: &RtpSession,
    ntp_time: u64,
    rtp_time: u32,
    cname: &str,
) -> Result<Bytes, RtpError> {
    let packets = vec![sr(session, ntp_time, rtp_time), sdes(session, cname)];
    marshal(&packets)
}

/// A sender report, SDES and BYE: the stream from `session` has ended.
pub fn goodbye(
    session: &RtpSession,
    ntp_time: u64,
    rtp_time: u32,
    cname: &str,
    reason: &str,
) -> Result<Bytes, RtpError> {
    let packets: Vec<Box<dyn RtcpPacket>> = vec![
        sr(session, ntp_time, rtp_time),
        sdes(session, cname),
        Box::new(Goodbye {
            sources: vec![session.ssrc()],
            reason: Bytes::copy_from_slice(reason.as_bytes()),
        }),
    ];
    marshal(&packets)
}

fn sr(session: &RtpSession, ntp_time: u64, rtp_time: u32) -> Box<dyn RtcpPacket> {
    Box::new(SenderReport {
        ssrc: session.ssrc(),
        ntp_time,
        rtp_time,
        packet_count: session.packets_sent(),
        octet_count: session.octets_sent(),
        ..Default::default()
    })
}

fn sdes(session: &RtpSession, cname: &str) -> Box<dyn RtcpPacket> {
    Box::new(SourceDescription {
        chunks: vec![SourceDescriptionChunk {
            source: session.ssrc(),
            items: vec![SourceDescriptionItem {
                sdes_type: SdesType::SdesCname,
                text: Bytes::copy_from_slice(cname.as_bytes()),
            }],
        }],
    })
}

fn marshal(packets: &[Box<dyn RtcpPacket>]) -> Result<Bytes, RtpError> {
    rtc_rtcp::packet::marshal(packets)
        .map(|b| b.freeze())
        .map_err(|e| RtpError::Marshal(e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;

    #[test]
    fn a_sender_report_carries_the_session_counters_and_a_cname() {
        let mut s = RtpSession::with_initial(0, 42, 0, 0);
        s.packetize(Bytes::from_static(&[0; 160]), 160, true)
            .unwrap();
        let wire = sender_report(&s, 7 << 32, 160, "loaxa@test").unwrap();
        let parsed = rtc_rtcp::packet::unmarshal(&mut wire.clone()).unwrap();
        assert_eq!(parsed.len(), 2);
        let report = parsed[0]
            .as_any()
            .downcast_ref::<SenderReport>()
            .expect("SR first");
        assert_eq!(report.ssrc, 42);
        assert_eq!(report.packet_count, 1);
        assert_eq!(report.octet_count, 160);
        assert_eq!(report.ntp_time, 7 << 32);
        assert_eq!(report.rtp_time, 160);
        assert!(parsed[1].as_any().is::<SourceDescription>());
    }

    #[test]
    fn goodbye_ends_with_a_bye_naming_the_ssrc() {
        let s = RtpSession::with_initial(0, 42, 0, 0);
        let wire = goodbye(&s, 0, 0, "c", "broadcast ended").unwrap();
        let parsed = rtc_rtcp::packet::unmarshal(&mut wire.clone()).unwrap();
        let bye = parsed[2]
            .as_any()
            .downcast_ref::<Goodbye>()
            .expect("BYE last");
        assert_eq!(bye.sources, vec![42]);
        assert_eq!(&bye.reason[..], b"broadcast ended");
    }
}
