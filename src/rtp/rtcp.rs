//! RTCP compound packets a sender emits (RFC 3550 §6): sender report + SDES CNAME, and the
//! same followed by BYE when a stream ends. Pure builders over session state.

use bytes::Bytes;
use rtc_rtcp::goodbye::Goodbye;
use rtc_rtcp::packet::Packet as RtcpPacket;
use rtc_rtcp::receiver_report::ReceiverReport;
use rtc_rtcp::reception_report::ReceptionReport;
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

/// A receiver report (with SDES CNAME) from `reporter_ssrc` carrying `block`, as RFC 3550
/// §6.4.2 describes: what a speaker agent sends back about the stream it plays. Without a
/// block (nothing received yet) the report still says the receiver is there.
pub fn receiver_report(
    reporter_ssrc: u32,
    block: Option<&crate::agent::stats::ReportBlock>,
    cname: &str,
) -> Result<Bytes, RtpError> {
    let reports = block
        .map(|b| ReceptionReport {
            ssrc: b.ssrc,
            fraction_lost: b.fraction_lost,
            total_lost: b.cumulative_lost & 0xFF_FFFF,
            last_sequence_number: b.extended_highest_sequence,
            jitter: b.jitter,
            // No sender reports are tracked, so LSR and DLSR stay 0 (§6.4.1 allows it).
            ..Default::default()
        })
        .into_iter()
        .collect();
    let packets: Vec<Box<dyn RtcpPacket>> = vec![
        Box::new(ReceiverReport {
            ssrc: reporter_ssrc,
            reports,
            ..Default::default()
        }),
        Box::new(SourceDescription {
            chunks: vec![SourceDescriptionChunk {
                source: reporter_ssrc,
                items: vec![SourceDescriptionItem {
                    sdes_type: SdesType::SdesCname,
                    text: Bytes::copy_from_slice(cname.as_bytes()),
                }],
            }],
        }),
    ];
    marshal(&packets)
}

/// What a receiver said about one of our streams in an RTCP report block.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ReceptionStats {
    /// The reporting receiver.
    pub reporter_ssrc: u32,
    /// Our stream the block is about.
    pub media_ssrc: u32,
    /// Fraction of packets lost since the previous report, 0.0-1.0.
    pub fraction_lost: f64,
    /// Packets lost since the stream began (24-bit signed on the wire, clamped at 0).
    pub cumulative_lost: u32,
    /// Interarrival jitter in RTP timestamp units.
    pub jitter: u32,
}

/// Most report blocks accepted from one datagram (an RR holds at most 31 per packet; a
/// compound packet may hold a few).
const MAX_BLOCKS: usize = 64;

/// Parses a datagram that arrived on our RTCP port into the report blocks it carries
/// (from receiver reports and from sender reports of receivers that also send). Anything
/// that is not well-formed RTCP is an error; the parser never panics on hostile input.
pub fn parse_reports(datagram: &[u8]) -> Result<Vec<ReceptionStats>, RtpError> {
    // Cheap checks before handing bytes to the parser: version 2, a length that is a
    // multiple of 4, and the packet type of an RTCP packet (RFC 3550 §6.4, first packet
    // of a compound is SR or RR).
    if datagram.len() < 8 || !datagram.len().is_multiple_of(4) || datagram[0] >> 6 != 2 {
        return Err(RtpError::Parse("not an RTCP packet".into()));
    }
    if !matches!(datagram[1], 200 | 201) {
        return Err(RtpError::Parse(format!(
            "a compound RTCP packet starts with SR or RR, not type {}",
            datagram[1]
        )));
    }
    let mut buf = Bytes::copy_from_slice(datagram);
    // The parser is third-party code fed by the network: a panic in it must not take the
    // pacer down with it.
    let packets = std::panic::catch_unwind(move || rtc_rtcp::packet::unmarshal(&mut buf))
        .map_err(|_| RtpError::Parse("RTCP parser failed".into()))?
        .map_err(|e| RtpError::Parse(e.to_string()))?;
    let mut out = Vec::new();
    for packet in &packets {
        let any = packet.as_any();
        let (reporter, blocks) = if let Some(rr) = any.downcast_ref::<ReceiverReport>() {
            (rr.ssrc, &rr.reports)
        } else if let Some(sr) = any.downcast_ref::<SenderReport>() {
            (sr.ssrc, &sr.reports)
        } else {
            continue;
        };
        for block in blocks {
            if out.len() >= MAX_BLOCKS {
                return Err(RtpError::Parse("too many report blocks".into()));
            }
            out.push(ReceptionStats {
                reporter_ssrc: reporter,
                media_ssrc: block.ssrc,
                fraction_lost: f64::from(block.fraction_lost) / 256.0,
                // A negative 24-bit count (duplicates) reads as a huge u32: treat as 0.
                cumulative_lost: if block.total_lost & 0x80_0000 != 0 {
                    0
                } else {
                    block.total_lost & 0xFF_FFFF
                },
                jitter: block.jitter,
            });
        }
    }
    Ok(out)
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
    use rtc_rtcp::reception_report::ReceptionReport;

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

    fn receiver_report(media_ssrc: u32, fraction_lost: u8, total_lost: u32, jitter: u32) -> Bytes {
        let rr = ReceiverReport {
            ssrc: 0xAAAA,
            reports: vec![ReceptionReport {
                ssrc: media_ssrc,
                fraction_lost,
                total_lost,
                jitter,
                ..Default::default()
            }],
            ..Default::default()
        };
        rtc_rtcp::packet::marshal(&[Box::new(rr) as Box<dyn RtcpPacket>])
            .unwrap()
            .freeze()
    }

    #[test]
    fn a_receiver_report_gives_loss_and_jitter_for_our_ssrc() {
        let stats = parse_reports(&receiver_report(42, 64, 10, 80)).unwrap();
        assert_eq!(stats.len(), 1);
        assert_eq!(stats[0].reporter_ssrc, 0xAAAA);
        assert_eq!(stats[0].media_ssrc, 42);
        assert!((stats[0].fraction_lost - 0.25).abs() < 1e-9);
        assert_eq!(stats[0].cumulative_lost, 10);
        assert_eq!(stats[0].jitter, 80);
    }

    #[test]
    fn hostile_and_truncated_reports_are_errors_not_panics() {
        let good = receiver_report(42, 0, 0, 0);
        for cut in 0..good.len() {
            let _ = parse_reports(&good[..cut]);
        }
        assert!(parse_reports(&good[..good.len() - 4]).is_err());
        assert!(parse_reports(b"GET / HTTP/1.1\r\n\r\n").is_err());
        assert!(
            parse_reports(&[0x80, 0, 0, 0, 0, 0, 0, 0]).is_err(),
            "an RTP-looking packet"
        );
        // A length field pointing past the end.
        let mut long = good.to_vec();
        long[2] = 0xFF;
        assert!(parse_reports(&long).is_err());
        // Deterministic garbage with a valid-looking first byte.
        let mut x: u32 = 0x1234_5678;
        for len in (8..200).step_by(4) {
            let mut g: Vec<u8> = (0..len)
                .map(|_| {
                    x ^= x << 13;
                    x ^= x >> 17;
                    x ^= x << 5;
                    x as u8
                })
                .collect();
            g[0] = 0x81;
            g[1] = 201;
            let _ = parse_reports(&g);
        }
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

    #[test]
    fn an_agent_receiver_report_round_trips_through_parse_reports() {
        let block = crate::agent::stats::ReportBlock {
            ssrc: 42,
            fraction_lost: 25,
            cumulative_lost: 10,
            extended_highest_sequence: (1 << 16) + 7,
            jitter: 80,
        };
        // `super::` because the helper above shares the name.
        let wire = super::receiver_report(0xBEEF, Some(&block), "agent@hall").unwrap();
        let stats = parse_reports(&wire).unwrap();
        assert_eq!(stats.len(), 1);
        assert_eq!(stats[0].reporter_ssrc, 0xBEEF);
        assert_eq!(stats[0].media_ssrc, 42);
        assert!((stats[0].fraction_lost - 25.0 / 256.0).abs() < 1e-9);
        assert_eq!(stats[0].cumulative_lost, 10);
        assert_eq!(stats[0].jitter, 80);
        let parsed = rtc_rtcp::packet::unmarshal(&mut wire.clone()).unwrap();
        let rr = parsed[0]
            .as_any()
            .downcast_ref::<ReceiverReport>()
            .expect("RR first");
        assert_eq!(rr.reports[0].last_sequence_number, (1 << 16) + 7);
        let sdes = parsed[1]
            .as_any()
            .downcast_ref::<SourceDescription>()
            .expect("SDES second");
        assert_eq!(sdes.chunks[0].source, 0xBEEF);
        assert_eq!(&sdes.chunks[0].items[0].text[..], b"agent@hall");
    }

    #[test]
    fn an_agent_receiver_report_without_a_block_is_still_a_valid_compound() {
        let wire = super::receiver_report(0xBEEF, None, "agent@hall").unwrap();
        assert!(parse_reports(&wire).unwrap().is_empty());
    }

    #[test]
    fn a_negative_cumulative_loss_reads_as_none_lost() {
        let block = crate::agent::stats::ReportBlock {
            ssrc: 42,
            fraction_lost: 0,
            cumulative_lost: (-3i32 as u32) & 0xFF_FFFF,
            extended_highest_sequence: 9,
            jitter: 0,
        };
        let wire = super::receiver_report(1, Some(&block), "c").unwrap();
        assert_eq!(parse_reports(&wire).unwrap()[0].cumulative_lost, 0);
    }
}
