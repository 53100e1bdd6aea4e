//! Keepalives of `registered` clusters: the small authenticated datagram a cluster's
//! agent sends from its RTP port to the controller's RTP port, so that the controller
//! can stream back to the address those packets came from (symmetric RTP, RFC 4961)
//! through carrier NAT. Encoding, parsing and verification only: no socket, no clock.
//!
//! Wire format (big-endian), 16-byte HMAC-SHA256 tag at the end:
//!
//! ```text
//! 0      4       5        6          6+L        14+L       22+L       38+L
//! | LXKA | ver=1 | L=len  | cluster  | unix ms  | counter  | tag[16]  |
//! ```
//!
//! The first byte `L` (0x4C) has version bits 01, so a keepalive can never be mistaken
//! for RTP or RTCP (version 2) arriving on the same port (the demultiplexing rule of
//! RFC 7983). The tag covers every byte before it, keyed by the cluster's key (the
//! SHA-256 of its agent token): without the key a packet cannot be forged. Each accepted
//! keepalive must be newer than the last, ordered by (time, counter): a captured one
//! cannot be replayed from another address to steal the stream, while an agent that
//! reboots (its counter back at 0, its clock still running) is accepted at once. The time
//! window bounds replays across a controller restart.

use hmac::{Hmac, Mac};
use sha2::Sha256;

/// First four bytes of every keepalive.
pub const MAGIC: &[u8; 4] = b"LXKA";
/// The only version so far.
pub const VERSION: u8 = 1;
/// Bytes of the truncated HMAC-SHA256 tag (128 bits, as SRTP's strongest tags are 80).
pub const TAG_LEN: usize = 16;
/// Longest cluster id a keepalive may carry.
pub const MAX_ID_LEN: usize = 64;
/// A keepalive whose clock is further than this from the controller's is refused: it
/// bounds how long a captured packet stays useful to a replayer, across restarts too.
pub const MAX_CLOCK_SKEW_MS: u64 = 60_000;

type HmacSha256 = Hmac<Sha256>;

/// What a keepalive says, once its tag has been checked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Keepalive {
    pub cluster: String,
    /// The agent's wall clock, Unix milliseconds.
    pub unix_ms: u64,
    /// Strictly increasing per cluster.
    pub counter: u64,
}

/// Why a datagram is not an acceptable keepalive.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum KeepaliveError {
    /// Not a keepalive at all (wrong magic or version, truncated, bad length).
    #[error("malformed keepalive")]
    Malformed,
    /// Well formed, but the tag does not match the cluster's key.
    #[error("keepalive tag does not verify")]
    BadTag,
    /// Signed by the right key but too old or too far in the future.
    #[error("keepalive time is outside the accepted window")]
    Stale,
    /// Signed by the right key but not newer (time, counter) than the last one accepted.
    #[error("keepalive replayed")]
    Replayed,
}

/// True when `datagram` looks like a keepalive (for demultiplexing; not a verification).
pub fn is_keepalive(datagram: &[u8]) -> bool {
    datagram.starts_with(MAGIC)
}

/// Builds a keepalive for `cluster`, signed with `key`.
///
/// # Panics
/// If `cluster` is longer than [`MAX_ID_LEN`] bytes: ids are ours (UUIDs), never input.
pub fn encode(cluster: &str, unix_ms: u64, counter: u64, key: &[u8]) -> Vec<u8> {
    assert!(
        !cluster.is_empty() && cluster.len() <= MAX_ID_LEN,
        "cluster ids are 1 to {MAX_ID_LEN} bytes"
    );
    let mut out = Vec::with_capacity(6 + cluster.len() + 16 + TAG_LEN);
    out.extend_from_slice(MAGIC);
    out.push(VERSION);
    out.push(cluster.len() as u8);
    out.extend_from_slice(cluster.as_bytes());
    out.extend_from_slice(&unix_ms.to_be_bytes());
    out.extend_from_slice(&counter.to_be_bytes());
    let tag = mac(key).chain_update(&out).finalize().into_bytes();
    out.extend_from_slice(&tag[..TAG_LEN]);
    out
}

/// Reads the cluster id of a keepalive without trusting anything else in it: the
/// receiver needs it to find the key that [`verify`] checks the tag with.
pub fn cluster_id(datagram: &[u8]) -> Result<&str, KeepaliveError> {
    let (id, _, _) = split(datagram)?;
    Ok(id)
}

/// Checks `datagram` against `key`, the controller's clock `now_unix_ms` and the
/// `(unix_ms, counter)` of the last keepalive accepted from this cluster, and returns
/// what it says.
pub fn verify(
    datagram: &[u8],
    key: &[u8],
    now_unix_ms: u64,
    last: Option<(u64, u64)>,
) -> Result<Keepalive, KeepaliveError> {
    let (cluster, signed, tag) = split(datagram)?;
    mac(key)
        .chain_update(signed)
        .verify_truncated_left(tag)
        .map_err(|_| KeepaliveError::BadTag)?;
    let fields = &signed[6 + cluster.len()..];
    let unix_ms = u64::from_be_bytes(
        fields[..8]
            .try_into()
            .map_err(|_| KeepaliveError::Malformed)?,
    );
    let counter = u64::from_be_bytes(
        fields[8..16]
            .try_into()
            .map_err(|_| KeepaliveError::Malformed)?,
    );
    if unix_ms.abs_diff(now_unix_ms) > MAX_CLOCK_SKEW_MS {
        return Err(KeepaliveError::Stale);
    }
    if last.is_some_and(|last| (unix_ms, counter) <= last) {
        return Err(KeepaliveError::Replayed);
    }
    Ok(Keepalive {
        cluster: cluster.to_string(),
        unix_ms,
        counter,
    })
}

/// Splits a keepalive into (cluster id, signed bytes, tag), checking only its shape.
fn split(datagram: &[u8]) -> Result<(&str, &[u8], &[u8]), KeepaliveError> {
    if datagram.len() < 6 || !is_keepalive(datagram) || datagram[4] != VERSION {
        return Err(KeepaliveError::Malformed);
    }
    let id_len = usize::from(datagram[5]);
    if id_len == 0 || id_len > MAX_ID_LEN || datagram.len() != 6 + id_len + 16 + TAG_LEN {
        return Err(KeepaliveError::Malformed);
    }
    let id =
        std::str::from_utf8(&datagram[6..6 + id_len]).map_err(|_| KeepaliveError::Malformed)?;
    let (signed, tag) = datagram.split_at(datagram.len() - TAG_LEN);
    Ok((id, signed, tag))
}

fn mac(key: &[u8]) -> HmacSha256 {
    // HMAC takes keys of any length; this cannot fail.
    <HmacSha256 as Mac>::new_from_slice(key).unwrap_or_else(|_| unreachable!())
}

#[cfg(test)]
mod tests {
    use super::*;

    const KEY: &[u8] = &[7u8; 32];
    const ID: &str = "0b6f3c1e-8d2a-4c4e-9a57-3f1f0c2b7d11";
    const NOW: u64 = 1_795_000_000_000;

    #[test]
    fn a_keepalive_signed_with_the_clusters_key_verifies() {
        let packet = encode(ID, NOW, 5, KEY);
        assert_eq!(cluster_id(&packet), Ok(ID));
        let k = verify(&packet, KEY, NOW + 1000, Some((NOW, 4))).unwrap();
        assert_eq!(
            k,
            Keepalive {
                cluster: ID.into(),
                unix_ms: NOW,
                counter: 5
            }
        );
    }

    #[test]
    fn a_keepalive_signed_with_another_key_is_refused() {
        let packet = encode(ID, NOW, 1, &[8u8; 32]);
        assert_eq!(verify(&packet, KEY, NOW, None), Err(KeepaliveError::BadTag));
    }

    #[test]
    fn every_flipped_bit_breaks_the_tag_or_the_shape() {
        let packet = encode(ID, NOW, 1, KEY);
        for byte in 0..packet.len() {
            for bit in 0..8 {
                let mut p = packet.clone();
                p[byte] ^= 1 << bit;
                assert!(verify(&p, KEY, NOW, None).is_err(), "byte {byte} bit {bit}");
            }
        }
    }

    #[test]
    fn a_replayed_or_older_keepalive_is_refused() {
        let packet = encode(ID, NOW, 9, KEY);
        assert_eq!(
            verify(&packet, KEY, NOW, Some((NOW, 9))),
            Err(KeepaliveError::Replayed)
        );
        assert_eq!(
            verify(&packet, KEY, NOW, Some((NOW, 10))),
            Err(KeepaliveError::Replayed)
        );
        assert_eq!(
            verify(&packet, KEY, NOW, Some((NOW + 1, 0))),
            Err(KeepaliveError::Replayed)
        );
    }

    #[test]
    fn an_agent_that_rebooted_is_accepted_with_its_counter_back_at_zero() {
        let after_reboot = encode(ID, NOW + 30_000, 0, KEY);
        assert!(verify(&after_reboot, KEY, NOW + 30_000, Some((NOW, 5000))).is_ok());
    }

    #[test]
    fn a_keepalive_from_outside_the_clock_window_is_stale() {
        let packet = encode(ID, NOW, 1, KEY);
        let late = NOW + MAX_CLOCK_SKEW_MS + 1;
        assert_eq!(verify(&packet, KEY, late, None), Err(KeepaliveError::Stale));
        let early = NOW - MAX_CLOCK_SKEW_MS - 1;
        assert_eq!(
            verify(&packet, KEY, early, None),
            Err(KeepaliveError::Stale)
        );
    }

    #[test]
    fn truncated_padded_and_foreign_datagrams_are_malformed() {
        let packet = encode(ID, NOW, 1, KEY);
        for n in 0..packet.len() {
            assert_eq!(
                verify(&packet[..n], KEY, NOW, None),
                Err(KeepaliveError::Malformed)
            );
        }
        let mut padded = packet.clone();
        padded.push(0);
        assert_eq!(
            verify(&padded, KEY, NOW, None),
            Err(KeepaliveError::Malformed)
        );
        // An RTP packet (version 2) arriving on the same port is not a keepalive.
        assert!(!is_keepalive(&[0x80, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0]));
        let mut bad_id = packet;
        bad_id[6] = 0xFF;
        assert!(cluster_id(&bad_id).is_err());
    }

    #[test]
    fn random_datagrams_never_panic() {
        use rand::{Rng, SeedableRng};
        let mut rng = rand::rngs::StdRng::seed_from_u64(4961);
        let valid = encode(ID, NOW, 1, KEY);
        for _ in 0..20_000 {
            let mut p = if rng.random_bool(0.5) {
                valid.clone()
            } else {
                let n = rng.random_range(0..100);
                (0..n).map(|_| rng.random()).collect()
            };
            if !p.is_empty() {
                let i = rng.random_range(0..p.len());
                p[i] = rng.random();
            }
            let _ = cluster_id(&p);
            let _ = verify(&p, KEY, NOW, None);
        }
    }
}
