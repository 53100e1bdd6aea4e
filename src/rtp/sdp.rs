//! The SDP (RFC 8866) that describes a cluster's stream from the receiver's side: what
//! ffmpeg, GStreamer or VLC need to play it. Pure text rendering.

use std::fmt::Write;
use std::net::SocketAddr;

use crate::codec::{Codec, CodecSettings};

/// What the SDP of one cluster's stream says.
#[derive(Debug, Clone)]
pub struct StreamDescription<'a> {
    /// Stable per cluster, so receivers can tell a re-fetched SDP is the same session.
    pub session_id: u64,
    /// Bumped whenever the description changes (codec, endpoint).
    pub session_version: u64,
    /// The controller's address, for the `o=` line.
    pub origin: std::net::IpAddr,
    /// Session name: the cluster's name.
    pub name: &'a str,
    /// Where the RTP goes (the receiver listens there; RTCP on port + 1).
    pub destination: SocketAddr,
    pub codec: Codec,
    pub ptime_ms: u32,
    /// For a multicast group: the TTL, written on the `c=` line as RFC 8866 §5.7 asks.
    pub multicast_ttl: Option<u8>,
    /// RTCP shares the RTP port (RFC 5761): a registered cluster behind NAT, where only
    /// the port its keepalives open is reachable.
    pub rtcp_mux: bool,
    /// SRTP: the profile is RTP/SAVP and the key goes in `a=crypto` (SDES, RFC 4568).
    pub srtp: Option<&'a crate::rtp::srtp::MasterKey>,
}

/// Renders the description. Lines end in CRLF as the RFC requires. The SDP is declarative
/// (handed to a receiver, not negotiated), so it says `recvonly`: RFC 8866 §6.7.1, "tools
/// should be started in receive-only mode". The codec's own lines (rtpmap, fmtp, ptime) come
/// from [`Codec::sdp_attributes`]; without the cluster's [`CodecSettings`] the Opus bitrate
/// is left out rather than guessed (see [`render_with_settings`]).
pub fn render(d: &StreamDescription<'_>) -> String {
    render_inner(d, None)
}

/// [`render`], stating the encoder settings the stream is sent with (for Opus, the
/// `maxaveragebitrate` fmtp parameter).
pub fn render_with_settings(d: &StreamDescription<'_>, settings: &CodecSettings) -> String {
    render_inner(d, Some(settings))
}

fn render_inner(d: &StreamDescription<'_>, settings: Option<&CodecSettings>) -> String {
    let ip_kind = |ip: std::net::IpAddr| if ip.is_ipv4() { "IP4" } else { "IP6" };
    // SDP is text; names go on one line with no control characters.
    let name: String = d
        .name
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect();
    let name = if name.trim().is_empty() { "-" } else { &name };
    let mut s = String::new();
    // Writing to a String cannot fail.
    let _ = write!(
        s,
        "v=0\r\n\
         o=loaxa {sid} {ver} IN {ok} {origin}\r\n\
         s={name}\r\n\
         c=IN {ck} {dest}{ttl}\r\n\
         t=0 0\r\n\
         m=audio {port} {profile} {pt}\r\n",
        sid = d.session_id,
        ver = d.session_version,
        ok = ip_kind(d.origin),
        origin = d.origin,
        ck = ip_kind(d.destination.ip()),
        dest = d.destination.ip(),
        ttl = d.multicast_ttl.map(|t| format!("/{t}")).unwrap_or_default(),
        port = d.destination.port(),
        pt = d.codec.payload_type(),
        profile = if d.srtp.is_some() {
            "RTP/SAVP"
        } else {
            "RTP/AVP"
        },
    );
    for line in d.codec.sdp_attributes(d.ptime_ms, settings) {
        let _ = write!(s, "a={line}\r\n");
    }
    if d.rtcp_mux {
        s.push_str("a=rtcp-mux\r\n");
    } else {
        let _ = write!(s, "a=rtcp:{}\r\n", d.destination.port().wrapping_add(1));
    }
    if let Some(key) = d.srtp {
        let _ = write!(s, "a={}\r\n", key.sdp_crypto_attribute());
    }
    s.push_str("a=recvonly\r\n");
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_pcmu_cluster_gets_payload_type_0_at_8000_hz() {
        let sdp = render(&StreamDescription {
            session_id: 7,
            session_version: 1,
            origin: "127.0.0.1".parse().unwrap(),
            name: "Thôn 1\r\nx",
            destination: "192.0.2.10:5004".parse().unwrap(),
            codec: Codec::Pcmu,
            ptime_ms: 20,
            multicast_ttl: None,
            rtcp_mux: false,
            srtp: None,
        });
        assert!(sdp.starts_with("v=0\r\n"));
        assert!(sdp.contains("c=IN IP4 192.0.2.10\r\n"));
        assert!(sdp.contains("m=audio 5004 RTP/AVP 0\r\n"));
        assert!(sdp.contains("a=rtpmap:0 PCMU/8000\r\n"));
        assert!(sdp.contains("a=ptime:20\r\n"));
        assert!(sdp.contains("a=rtcp:5005\r\n"));
        // The name cannot inject SDP lines.
        assert!(sdp.contains("s=Thôn 1  x\r\n"));
        assert_eq!(sdp.matches("\r\n").count(), sdp.lines().count());
    }

    #[test]
    fn ipv6_destinations_use_ip6() {
        let sdp = render(&StreamDescription {
            session_id: 1,
            session_version: 1,
            origin: "::1".parse().unwrap(),
            name: "c",
            destination: "[::1]:6000".parse().unwrap(),
            codec: Codec::Pcma,
            ptime_ms: 20,
            multicast_ttl: None,
            rtcp_mux: false,
            srtp: None,
        });
        assert!(sdp.contains("c=IN IP6 ::1\r\n"));
        assert!(sdp.contains("a=rtpmap:8 PCMA/8000\r\n"));
    }

    fn description(codec: Codec, ptime_ms: u32) -> StreamDescription<'static> {
        StreamDescription {
            session_id: 1,
            session_version: 1,
            origin: "192.0.2.1".parse().unwrap(),
            name: "Loa xã",
            destination: "239.1.2.3:5004".parse().unwrap(),
            codec,
            ptime_ms,
            multicast_ttl: Some(8),
            rtcp_mux: false,
            srtp: None,
        }
    }

    #[test]
    fn a_multicast_group_carries_its_ttl_on_the_connection_line() {
        let sdp = render(&description(Codec::Pcmu, 20));
        assert!(sdp.contains("c=IN IP4 239.1.2.3/8\r\n"), "{sdp}");
    }

    #[test]
    fn every_codec_gets_its_rtpmap_and_ptime() {
        for (codec, m, rtpmap) in [
            (Codec::Pcma, "RTP/AVP 8", "a=rtpmap:8 PCMA/8000"),
            (Codec::L16, "RTP/AVP 11", "a=rtpmap:11 L16/44100/1"),
            (Codec::G722, "RTP/AVP 9", "a=rtpmap:9 G722/8000"),
            (Codec::Opus, "RTP/AVP 96", "a=rtpmap:96 opus/48000/2"),
        ] {
            let sdp = render(&description(codec, 40));
            assert!(sdp.contains(&format!("m=audio 5004 {m}\r\n")), "{sdp}");
            assert!(sdp.contains(&format!("{rtpmap}\r\n")), "{sdp}");
            assert!(sdp.contains("a=ptime:40\r\n"), "{sdp}");
            assert_eq!(sdp.contains("a=fmtp:"), codec == Codec::Opus, "{sdp}");
            assert!(sdp.ends_with("a=rtcp:5005\r\na=recvonly\r\n"), "{sdp}");
        }
    }

    #[test]
    fn an_opus_stream_says_it_is_mono_cbr_and_its_bitrate_only_when_known() {
        let d = description(Codec::Opus, 20);
        let sdp = render(&d);
        assert!(sdp.contains(
            "a=rtpmap:96 opus/48000/2\r\n\
             a=fmtp:96 stereo=0; sprop-stereo=0; useinbandfec=0; cbr=1\r\n\
             a=ptime:20\r\n"
        ));
        let settings = CodecSettings {
            opus_bitrate_bps: 32_000,
        };
        let sdp = render_with_settings(&d, &settings);
        assert!(
            sdp.contains("; cbr=1; maxaveragebitrate=32000\r\n"),
            "{sdp}"
        );
        // Other codecs have no settings to state.
        let g722 = description(Codec::G722, 20);
        assert_eq!(render_with_settings(&g722, &settings), render(&g722));
    }
}
