//! RTP as RFC 3550/3551 describe it: per-cluster sessions that stamp headers on ready-made
//! payloads, RTCP sender reports and BYE, the SDP a receiver needs, and the keepalives of
//! clusters behind NAT. Sans-IO: the
//! caller passes the time and does the sending.

pub mod keepalive;
pub mod rtcp;
pub mod sdp;
pub mod session;
pub mod srtp;

pub use session::RtpSession;

/// Seconds between 1900-01-01 (NTP epoch) and 1970-01-01 (Unix epoch).
const NTP_UNIX_OFFSET_S: u64 = 2_208_988_800;

/// Converts a time since the Unix epoch to a 64-bit NTP timestamp (32.32 fixed point).
pub fn ntp_timestamp(since_unix_epoch: std::time::Duration) -> u64 {
    let secs = since_unix_epoch.as_secs() + NTP_UNIX_OFFSET_S;
    let frac = (u64::from(since_unix_epoch.subsec_nanos()) << 32) / 1_000_000_000;
    (secs << 32) | frac
}

/// Errors building or parsing RTP/RTCP packets.
#[derive(Debug, thiserror::Error)]
pub enum RtpError {
    /// The packet could not be serialised (a field out of range for the wire format).
    #[error("could not build packet: {0}")]
    Marshal(String),
    /// The bytes are not a valid RTP packet.
    #[error("not a valid RTP packet: {0}")]
    Parse(String),
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn the_unix_epoch_is_2208988800_ntp_seconds() {
        assert_eq!(ntp_timestamp(Duration::ZERO), NTP_UNIX_OFFSET_S << 32);
        let half = ntp_timestamp(Duration::from_millis(1500));
        assert_eq!(half >> 32, NTP_UNIX_OFFSET_S + 1);
        assert_eq!(half & 0xFFFF_FFFF, 1 << 31);
    }
}
