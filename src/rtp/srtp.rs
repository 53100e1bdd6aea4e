//! SRTP and SRTCP with AES_CM_128_HMAC_SHA1_80 (RFC 3711), and the SDES key of RFC 4568 that
//! carries its master key in SDP. Pure byte transforms: no sockets, no clock; the only
//! randomness is `MasterKey::generate`.

use aes::Aes128;
use aes::cipher::{InnerIvInit, KeyInit, KeyIvInit, StreamCipher};
use base64::Engine;
use base64::engine::general_purpose::STANDARD as BASE64;
use hmac::{Hmac, Mac};
use sha1::Sha1;

type AesCm = ctr::Ctr128BE<Aes128>;

/// The crypto suite name of RFC 4568 §6.2.
pub const SUITE: &str = "AES_CM_128_HMAC_SHA1_80";
/// HMAC-SHA1 truncated to 80 bits, the "_80" of the suite.
const TAG_LEN: usize = 10;
const KEY_LEN: usize = 16;
const SALT_LEN: usize = 14;
/// RFC 3711 §3.3.2 asks for at least 64; one `u64` bitmask is exactly that.
const REPLAY_WINDOW: u64 = 64;
/// The SRTP packet index is 48 bits and the SRTCP index 31 bits; past them the keystream
/// would repeat, so the key must be replaced (§9.2).
const RTP_INDEX_LIMIT: u64 = 1 << 48;
const RTCP_INDEX_LIMIT: u32 = 1 << 31;

/// Why a packet could not be protected or unprotected.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum SrtpError {
    /// Too short, not RTP/RTCP version 2, or a header that runs past the packet.
    #[error("malformed SRTP/SRTCP packet")]
    Malformed,
    /// The authentication tag does not match: wrong key, or the packet was altered.
    #[error("SRTP authentication failed")]
    AuthFailed,
    /// The packet index was already accepted, or is too old to tell (behind the 64-packet
    /// window, or before the first packet of the stream).
    #[error("SRTP packet replayed or too old")]
    Replayed,
    /// The packet belongs to another SSRC than the one this context serves; a new stream
    /// needs a new context (its rollover counter starts again at zero).
    #[error("SSRC {got:#010x} does not belong to this SRTP context ({expected:#010x})")]
    ForeignSsrc { expected: u32, got: u32 },
    /// The packet index space of this master key is used up; the key must be replaced.
    #[error("SRTP index exhausted; rekey")]
    KeyExhausted,
}

/// A 30-byte master key + salt (16-byte AES-128 key, 14-byte salt).
#[derive(Clone, PartialEq, Eq)]
pub struct MasterKey([u8; KEY_LEN + SALT_LEN]);

impl std::fmt::Debug for MasterKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("MasterKey(<redacted>)")
    }
}

impl MasterKey {
    /// A fresh key from the thread-local CSPRNG.
    pub fn generate() -> Self {
        let mut bytes = [0; KEY_LEN + SALT_LEN];
        rand::Rng::fill(&mut rand::rng(), &mut bytes[..]);
        Self(bytes)
    }

    pub fn from_bytes(bytes: &[u8]) -> Option<Self> {
        bytes.try_into().ok().map(Self)
    }

    pub fn as_bytes(&self) -> &[u8; KEY_LEN + SALT_LEN] {
        &self.0
    }

    /// The SDES inline key of RFC 4568: base64 of key||salt (40 chars).
    pub fn to_inline(&self) -> String {
        BASE64.encode(self.0)
    }

    /// Accepts `inline:KEY`, `inline:KEY|2^31|1:1` (lifetime and MKI are ignored) or the
    /// bare base64.
    pub fn from_inline(s: &str) -> Option<Self> {
        let s = s.trim();
        let s = s.strip_prefix("inline:").unwrap_or(s);
        let key = s.split('|').next()?;
        Self::from_bytes(&BASE64.decode(key).ok()?)
    }

    /// The SDP attribute value after `a=`: `crypto:1 AES_CM_128_HMAC_SHA1_80 inline:<40 chars>`.
    pub fn sdp_crypto_attribute(&self) -> String {
        format!("crypto:1 {SUITE} inline:{}", self.to_inline())
    }

    /// Reads back an `a=crypto:` line (with or without `a=`); `None` for another suite or
    /// a key that is not 30 bytes. Session parameters after the key are ignored.
    pub fn from_sdp_crypto_attribute(line: &str) -> Option<Self> {
        let line = line.trim();
        let line = line.strip_prefix("a=").unwrap_or(line);
        let mut fields = line.strip_prefix("crypto:")?.split_ascii_whitespace();
        let (_tag, suite, key) = (fields.next()?, fields.next()?, fields.next()?);
        if suite != SUITE {
            return None;
        }
        Self::from_inline(key.strip_prefix("inline:")?)
    }

    fn key(&self) -> [u8; KEY_LEN] {
        let mut key = [0; KEY_LEN];
        key.copy_from_slice(&self.0[..KEY_LEN]);
        key
    }

    fn salt(&self) -> &[u8] {
        &self.0[KEY_LEN..]
    }
}

/// Session keys of one direction of SRTP or SRTCP (RFC 3711 §4.3).
#[derive(Clone)]
struct SessionKeys {
    cipher: Aes128,
    salt: [u8; SALT_LEN],
    /// Keyed once; cloned per packet so the key schedule is not redone.
    mac: Hmac<Sha1>,
}

impl SessionKeys {
    /// Labels `first`, `first + 1`, `first + 2` give the cipher key, auth key and salt:
    /// 0..=2 for SRTP, 3..=5 for SRTCP.
    fn derive(master: &MasterKey, first: u8) -> Self {
        let key: [u8; KEY_LEN] = derive(master, first);
        let auth: [u8; 20] = derive(master, first + 1);
        Self {
            cipher: Aes128::new(&key.into()),
            salt: derive(master, first + 2),
            mac: Mac::new_from_slice(&auth).expect("HMAC takes keys of any length"),
        }
    }

    /// Encrypts or decrypts with AES-CM of §4.1.1: IV = (salt·2^16) XOR (SSRC·2^64) XOR (index·2^16).
    fn crypt(&self, ssrc: u32, index: u64, data: &mut [u8]) {
        let mut iv = [0; 16];
        iv[..SALT_LEN].copy_from_slice(&self.salt);
        xor(&mut iv[4..8], &ssrc.to_be_bytes());
        xor(&mut iv[8..14], &index.to_be_bytes()[2..]);
        let core = ctr::CtrCore::inner_iv_init(self.cipher.clone(), &iv.into());
        AesCm::from_core(core).apply_keystream(data);
    }

    fn tag(&self, parts: &[&[u8]]) -> [u8; TAG_LEN] {
        let mut tag = [0; TAG_LEN];
        tag.copy_from_slice(&self.mac(parts).finalize().into_bytes()[..TAG_LEN]);
        tag
    }

    /// Constant time, through `hmac`'s `subtle` comparison.
    fn verify(&self, parts: &[&[u8]], tag: &[u8]) -> Result<(), SrtpError> {
        let mac = self.mac(parts);
        mac.verify_truncated_left(tag)
            .map_err(|_| SrtpError::AuthFailed)
    }

    fn mac(&self, parts: &[&[u8]]) -> Hmac<Sha1> {
        let mut mac = self.mac.clone();
        parts.iter().for_each(|p| mac.update(p));
        mac
    }
}

/// The key derivation of §4.3.1 with KDR 0: AES-CM under the master key, IV =
/// (master salt XOR label·2^48)·2^16, keystream taken as the key.
fn derive<const N: usize>(master: &MasterKey, label: u8) -> [u8; N] {
    let mut iv = [0; 16];
    iv[..SALT_LEN].copy_from_slice(master.salt());
    iv[7] ^= label;
    let mut out = [0; N];
    AesCm::new(&master.key().into(), &iv.into()).apply_keystream(&mut out);
    out
}

fn xor(dst: &mut [u8], src: &[u8]) {
    dst.iter_mut().zip(src).for_each(|(d, s)| *d ^= s);
}

/// The replay list of §3.3.2: the highest accepted index and a bitmask of the 64 below it.
#[derive(Debug, Clone, Copy, Default)]
struct ReplayWindow {
    highest: u64,
    /// Bit k set: index `highest - k` was accepted.
    seen: u64,
}

impl ReplayWindow {
    fn check(self, index: u64) -> Result<(), SrtpError> {
        let Some(age) = self.highest.checked_sub(index) else {
            return Ok(());
        };
        if age >= REPLAY_WINDOW || self.seen >> age & 1 == 1 {
            return Err(SrtpError::Replayed);
        }
        Ok(())
    }

    fn accept(window: &mut Option<Self>, index: u64) {
        // An empty window at index 0 behaves as a fresh one for any first index.
        let w = window.get_or_insert_default();
        if index > w.highest {
            let shift = u32::try_from(index - w.highest).unwrap_or(u32::MAX);
            w.seen = w.seen.checked_shl(shift).unwrap_or(0);
            w.highest = index;
        }
        w.seen |= 1 << (w.highest - index);
    }
}

/// The packet index of a sequence number given the highest index so far: RFC 3711 §3.3.1
/// and Appendix A (the ROC guess that keeps |index - highest| below 2^15).
fn estimate_index(highest: u64, seq: u16) -> Result<u64, SrtpError> {
    let (roc, s_l) = (highest >> 16, i32::from(highest as u16));
    let delta = i32::from(seq) - s_l;
    let v = if s_l < 0x8000 && delta > 0x8000 {
        roc.checked_sub(1).ok_or(SrtpError::Replayed)?
    } else if s_l >= 0x8000 && delta < -0x8000 {
        roc + 1
    } else {
        roc
    };
    let index = v << 16 | u64::from(seq);
    if index >= RTP_INDEX_LIMIT {
        return Err(SrtpError::KeyExhausted);
    }
    Ok(index)
}

/// Length of the RTP header (fixed part, CSRCs, extension), if `packet` holds one.
fn rtp_header_len(packet: &[u8]) -> Option<usize> {
    let first = *packet.first()?;
    if packet.len() < 12 || first >> 6 != 2 {
        return None;
    }
    let mut len = 12 + 4 * usize::from(first & 0x0F);
    if first & 0x10 != 0 {
        let words = packet.get(len + 2..len + 4)?;
        len += 4 + 4 * usize::from(u16::from_be_bytes([words[0], words[1]]));
    }
    (len <= packet.len()).then_some(len)
}

fn be_u32(bytes: &[u8]) -> u32 {
    u32::from_be_bytes([bytes[0], bytes[1], bytes[2], bytes[3]])
}

/// Sequence number and SSRC of an RTP header already checked by `rtp_header_len`.
fn seq_and_ssrc(header: &[u8]) -> (u16, u32) {
    (
        u16::from_be_bytes([header[2], header[3]]),
        be_u32(&header[8..12]),
    )
}

/// One direction of one SRTP stream (one SSRC): keys derived once (KDR 0), rollover counter
/// tracked. A sender uses the `protect_*` half, a receiver the `unprotect_*` half.
#[derive(Clone)]
pub struct SrtpContext {
    rtp: SessionKeys,
    rtcp: SessionKeys,
    /// Bound by the first RTP packet; the ROC and replay state only make sense per SSRC.
    ssrc: Option<u32>,
    /// Highest SRTP index sent; its top 32 bits are the sender's ROC.
    sent_highest: Option<u64>,
    received: Option<ReplayWindow>,
    rtcp_next_index: u32,
    rtcp_received: Option<ReplayWindow>,
}

impl std::fmt::Debug for SrtpContext {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SrtpContext")
            .field("ssrc", &self.ssrc)
            .field("sent_highest", &self.sent_highest)
            .field("received", &self.received)
            .field("rtcp_next_index", &self.rtcp_next_index)
            .field("rtcp_received", &self.rtcp_received)
            .finish_non_exhaustive()
    }
}

impl SrtpContext {
    pub fn new(master: &MasterKey) -> Self {
        Self {
            rtp: SessionKeys::derive(master, 0),
            rtcp: SessionKeys::derive(master, 3),
            ssrc: None,
            sent_highest: None,
            received: None,
            rtcp_next_index: 0,
            rtcp_received: None,
        }
    }

    /// Encrypts the payload of a whole RTP packet (header+payload) and appends the tag.
    pub fn protect_rtp(&mut self, packet: &[u8]) -> Result<Vec<u8>, SrtpError> {
        let header_len = rtp_header_len(packet).ok_or(SrtpError::Malformed)?;
        let mut out = Vec::new();
        self.protect_rtp_into(&packet[..header_len], &packet[header_len..], &mut out)?;
        Ok(out)
    }

    /// Same, writing into `out` (cleared) so the pacer's hot loop can reuse one buffer.
    /// The sequence number may go back (a resend) as long as it stays within 2^15 of the
    /// highest sent; the ROC increments when it wraps forward.
    pub fn protect_rtp_into(
        &mut self,
        header: &[u8],
        payload: &[u8],
        out: &mut Vec<u8>,
    ) -> Result<(), SrtpError> {
        if rtp_header_len(header) != Some(header.len()) {
            return Err(SrtpError::Malformed);
        }
        let (seq, ssrc) = seq_and_ssrc(header);
        self.check_ssrc(ssrc)?;
        let index = match self.sent_highest {
            Some(highest) => estimate_index(highest, seq)?,
            None => u64::from(seq),
        };
        out.clear();
        out.reserve(header.len() + payload.len() + TAG_LEN);
        out.extend_from_slice(header);
        out.extend_from_slice(payload);
        self.rtp.crypt(ssrc, index, &mut out[header.len()..]);
        let roc = (index >> 16) as u32;
        let tag = self.rtp.tag(&[out, &roc.to_be_bytes()]);
        out.extend_from_slice(&tag);
        self.ssrc = Some(ssrc);
        self.sent_highest = Some(self.sent_highest.map_or(index, |h| h.max(index)));
        Ok(())
    }

    /// Checks the tag (constant time) and the replay window, estimates the ROC, and returns
    /// the plain RTP packet. State changes only once the packet has authenticated.
    pub fn unprotect_rtp(&mut self, packet: &[u8]) -> Result<Vec<u8>, SrtpError> {
        let tag_at = packet.len().checked_sub(TAG_LEN);
        let (body, tag) = packet.split_at(tag_at.ok_or(SrtpError::Malformed)?);
        let header_len = rtp_header_len(body).ok_or(SrtpError::Malformed)?;
        let (seq, ssrc) = seq_and_ssrc(body);
        self.check_ssrc(ssrc)?;
        let index = match self.received {
            Some(window) => {
                let index = estimate_index(window.highest, seq)?;
                window.check(index)?;
                index
            }
            // RFC 3711 §3.3.1: a receiver starts with ROC 0 unless told otherwise.
            None => u64::from(seq),
        };
        let roc = (index >> 16) as u32;
        self.rtp.verify(&[body, &roc.to_be_bytes()], tag)?;
        let mut plain = body.to_vec();
        self.rtp.crypt(ssrc, index, &mut plain[header_len..]);
        self.ssrc = Some(ssrc);
        ReplayWindow::accept(&mut self.received, index);
        Ok(plain)
    }

    /// SRTCP (§3.4): encrypts everything after the first 8 bytes, appends E-flag|31-bit
    /// index and the tag. The index starts at 0 and counts SRTCP packets sent.
    pub fn protect_rtcp(&mut self, packet: &[u8]) -> Result<Vec<u8>, SrtpError> {
        if packet.len() < 8 || packet[0] >> 6 != 2 {
            return Err(SrtpError::Malformed);
        }
        let index = self.rtcp_next_index;
        if index >= RTCP_INDEX_LIMIT {
            return Err(SrtpError::KeyExhausted);
        }
        let mut out = Vec::with_capacity(packet.len() + 4 + TAG_LEN);
        out.extend_from_slice(packet);
        self.rtcp
            .crypt(be_u32(&packet[4..8]), index.into(), &mut out[8..]);
        out.extend_from_slice(&(RTCP_INDEX_LIMIT | index).to_be_bytes());
        let tag = self.rtcp.tag(&[&out]);
        out.extend_from_slice(&tag);
        self.rtcp_next_index = index + 1;
        Ok(out)
    }

    /// Checks tag and replay window of an SRTCP packet and returns the plain RTCP. A packet
    /// whose E flag is clear was authenticated but never encrypted, and is returned as is.
    pub fn unprotect_rtcp(&mut self, packet: &[u8]) -> Result<Vec<u8>, SrtpError> {
        let body_len = packet.len().saturating_sub(TAG_LEN);
        if body_len < 8 + 4 {
            return Err(SrtpError::Malformed);
        }
        let (body, tag) = packet.split_at(body_len);
        let (rtcp, e_index) = body.split_at(body_len - 4);
        if rtcp[0] >> 6 != 2 {
            return Err(SrtpError::Malformed);
        }
        let e_index = be_u32(e_index);
        let index = u64::from(e_index & !RTCP_INDEX_LIMIT);
        if let Some(window) = self.rtcp_received {
            window.check(index)?;
        }
        self.rtcp.verify(&[body], tag)?;
        let mut plain = rtcp.to_vec();
        if e_index & RTCP_INDEX_LIMIT != 0 {
            self.rtcp.crypt(be_u32(&rtcp[4..8]), index, &mut plain[8..]);
        }
        ReplayWindow::accept(&mut self.rtcp_received, index);
        Ok(plain)
    }

    fn check_ssrc(&self, got: u32) -> Result<(), SrtpError> {
        match self.ssrc {
            Some(expected) if expected != got => Err(SrtpError::ForeignSsrc { expected, got }),
            _ => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use SrtpError::*;

    fn hex(s: &str) -> Vec<u8> {
        hex::decode(s.replace(' ', "")).unwrap()
    }

    /// RFC 3711 B.3's master key and salt, also those of libsrtp's `srtp_validate`.
    fn rfc_key() -> MasterKey {
        let bytes = hex("E1F97A0D3E018BE0D64FA32C06DE4139 0EC675AD498AFEEBB6960B3AABE6");
        MasterKey::from_bytes(&bytes).unwrap()
    }

    /// A sender and a receiver sharing a fresh key.
    fn pair() -> (SrtpContext, SrtpContext, MasterKey) {
        let key = MasterKey::generate();
        (SrtpContext::new(&key), SrtpContext::new(&key), key)
    }

    fn rtp(seq: u16, ssrc: u32, payload: &[u8]) -> Vec<u8> {
        let ts = u32::from(seq).wrapping_mul(160);
        let header = [[0x80, 0], seq.to_be_bytes()].concat();
        [&header[..], &ts.to_be_bytes(), &ssrc.to_be_bytes(), payload].concat()
    }

    /// A sender report header and SSRC, then bytes standing in for the rest.
    fn rtcp(ssrc: u32) -> Vec<u8> {
        [&[0x80, 200, 0, 6][..], &ssrc.to_be_bytes(), &[0x5a; 20]].concat()
    }

    #[test]
    fn the_aes_cm_keystream_is_rfc_3711_b2() {
        let key: [u8; 16] = hex("2B7E151628AED2A6ABF7158809CF4F3C").try_into().unwrap();
        let keys = SessionKeys {
            cipher: Aes128::new(&key.into()),
            salt: hex("F0F1F2F3F4F5F6F7F8F9FAFBFCFD").try_into().unwrap(),
            mac: Mac::new_from_slice(&[0; 20]).unwrap(),
        };
        // The RFC's 65282-block segment; SSRC and index zero make the IV the salt itself.
        let mut stream = vec![0; 65282 * 16];
        keys.crypt(0, 0, &mut stream);
        let block = |i: usize, want: &str| assert_eq!(stream[i * 16..][..16], hex(want));
        block(0x0000, "E03EAD0935C95E80E166B16DD92B4EB4");
        block(0x0001, "D23513162B02D0F72A43A2FE4A5F97AB");
        block(0x0002, "41E95B3BB0A2E8DD477901E4FCA894C0");
        block(0xFEFF, "EC8CDF7398607CB0F2D21675EA9EA1E4");
        block(0xFF00, "362B7C3C6773516318A077D7FC5073AE");
        block(0xFF01, "6A2CC3787889374FBEB4C81B17BA6C44");
    }

    #[test]
    fn key_derivation_gives_the_keys_of_rfc_3711_b3() {
        let master = rfc_key();
        let cipher_key: [u8; 16] = derive(&master, 0);
        let auth_key: [u8; 20] = derive(&master, 1);
        let salt: [u8; 14] = derive(&master, 2);
        assert_eq!(cipher_key[..], hex("C61E7A93744F39EE10734AFE3FF7A087"));
        assert_eq!(
            auth_key[..],
            hex("CEBE321F6FF7716B6FD4AB49AF256A15 6D38BAA4")
        );
        assert_eq!(salt[..], hex("30CBBC08863D8C85D49DB34A9AE1"));
    }

    #[test]
    fn protected_packets_match_the_libsrtp_reference_packets() {
        let (mut tx, mut rx) = (SrtpContext::new(&rfc_key()), SrtpContext::new(&rfc_key()));
        let plain = hex("800f1234decafbadcafebabe abababababababababababababababab");
        let srtp = tx.protect_rtp(&plain).unwrap();
        let tail = "4e55dc4ce79978d88ca4d215949d2402 b78d6acc99ea179b8dbb";
        assert_eq!(srtp, hex(&format!("800f1234decafbadcafebabe {tail}")));
        assert_eq!(rx.unprotect_rtp(&srtp).unwrap(), plain);

        // libsrtp numbers its first SRTCP packet 1, where RFC 3711 §3.4 starts at 0.
        tx.rtcp_next_index = 1;
        let plain = hex("81c8000bcafebabe abababababababababababababababab");
        let srtcp = tx.protect_rtcp(&plain).unwrap();
        let tail = "7128035be487b9bdbef89041f977a5a8 80000001 993e08cd54d6c1230798";
        assert_eq!(srtcp, hex(&format!("81c8000bcafebabe {tail}")));
        assert_eq!(rx.unprotect_rtcp(&srtcp).unwrap(), plain);
    }

    #[test]
    fn rtp_and_rtcp_round_trip_and_the_payload_is_hidden() {
        let (mut tx, mut rx, _) = pair();
        let plain = rtp(7, 0xDEAD_BEEF, &[0x11; 160]);
        let srtp = tx.protect_rtp(&plain).unwrap();
        assert_eq!(srtp.len(), plain.len() + TAG_LEN);
        assert_eq!(srtp[..12], plain[..12]);
        assert_ne!(srtp[12..172], plain[12..]);
        assert_eq!(rx.unprotect_rtp(&srtp).unwrap(), plain);

        let mut reused = vec![0xFF; 3];
        let (header, payload) = plain.split_at(12);
        tx.protect_rtp_into(header, payload, &mut reused).unwrap();
        assert_eq!(reused, srtp, "the same index gives the same bytes");

        for _ in 0..3 {
            let srtcp = tx.protect_rtcp(&rtcp(0xDEAD_BEEF)).unwrap();
            assert_eq!(srtcp.len(), rtcp(0).len() + 4 + TAG_LEN);
            assert_ne!(srtcp[8..28], rtcp(0)[8..]);
            assert_eq!(rx.unprotect_rtcp(&srtcp).unwrap(), rtcp(0xDEAD_BEEF));
        }
    }

    #[test]
    fn csrcs_and_a_header_extension_stay_in_the_clear() {
        let (mut tx, mut rx, _) = pair();
        let mut plain = rtp(1, 9, &[0, 0, 0, 42, 0xBE, 0xDE, 0, 1, 1, 2, 3, 4, 9, 9, 9]);
        plain[0] |= 0x10 | 1; // X, one CSRC
        let srtp = tx.protect_rtp(&plain).unwrap();
        assert_eq!(srtp[..24], plain[..24]);
        assert_ne!(srtp[24..27], plain[24..]);
        assert_eq!(rx.unprotect_rtp(&srtp).unwrap(), plain);
    }

    #[test]
    fn a_tampered_byte_anywhere_fails() {
        let (mut tx, _, key) = pair();
        let srtp = tx.protect_rtp(&rtp(100, 5, &[1, 2, 3, 4])).unwrap();
        let srtcp = tx.protect_rtcp(&rtcp(5)).unwrap();
        for i in 0..srtp.len().max(srtcp.len()) {
            let flip =
                |p: &[u8]| (i < p.len()).then(|| [&p[..i], &[p[i] ^ 4], &p[i + 1..]].concat());
            if let Some(bad) = flip(&srtp) {
                assert!(
                    SrtpContext::new(&key).unprotect_rtp(&bad).is_err(),
                    "RTP byte {i}"
                );
            }
            if let Some(bad) = flip(&srtcp) {
                assert!(
                    SrtpContext::new(&key).unprotect_rtcp(&bad).is_err(),
                    "RTCP byte {i}"
                );
            }
        }
    }

    #[test]
    fn replayed_and_too_old_packets_are_refused_but_late_ones_are_not() {
        let (mut tx, mut rx, _) = pair();
        let mut send = |s: u16| tx.protect_rtp(&rtp(s, 1, &[s as u8])).unwrap();
        let sent: Vec<_> = (0..100).map(&mut send).collect();
        assert!(rx.unprotect_rtp(&sent[99]).is_ok());
        assert_eq!(rx.unprotect_rtp(&sent[99]), Err(Replayed));
        assert!(
            rx.unprotect_rtp(&sent[40]).is_ok(),
            "59 behind is in the window"
        );
        assert_eq!(rx.unprotect_rtp(&sent[40]), Err(Replayed));
        assert_eq!(
            rx.unprotect_rtp(&sent[35]),
            Err(Replayed),
            "64 behind is not"
        );

        let srtcp: Vec<_> = (0..2).map(|_| tx.protect_rtcp(&rtcp(1)).unwrap()).collect();
        assert!(rx.unprotect_rtcp(&srtcp[1]).is_ok());
        assert!(rx.unprotect_rtcp(&srtcp[0]).is_ok());
        assert_eq!(rx.unprotect_rtcp(&srtcp[1]), Err(Replayed));
    }

    #[test]
    fn a_wrong_key_fails_authentication() {
        let (mut tx, _, _) = pair();
        let (_, mut rx, _) = pair();
        let srtp = tx.protect_rtp(&rtp(1, 1, &[0; 20])).unwrap();
        assert_eq!(rx.unprotect_rtp(&srtp), Err(AuthFailed));
        let srtcp = tx.protect_rtcp(&rtcp(1)).unwrap();
        assert_eq!(rx.unprotect_rtcp(&srtcp), Err(AuthFailed));
    }

    #[test]
    fn the_sequence_wraps_into_the_next_rollover_on_both_sides() {
        let (mut tx, mut rx, _) = pair();
        let seqs: Vec<u16> = (0..2000).map(|i| 65000u16.wrapping_add(i)).collect();
        let mut send = |&s: &u16| tx.protect_rtp(&rtp(s, 3, &[7; 8])).unwrap();
        let sent: Vec<_> = seqs.iter().map(&mut send).collect();
        let last_index = 1 << 16 | u64::from(seqs[1999]);
        assert_eq!(tx.sent_highest, Some(last_index), "ROC 1 after the wrap");
        // 65535 is held back and arrives after 0 and 1: its ROC is one less than theirs.
        let held = seqs.iter().position(|&s| s == 65535).unwrap();
        for (i, packet) in sent.iter().enumerate().filter(|&(i, _)| i != held) {
            assert_eq!(
                rx.unprotect_rtp(packet).unwrap()[2..4],
                seqs[i].to_be_bytes()
            );
            if i == held + 2 {
                assert!(
                    rx.unprotect_rtp(&sent[held]).is_ok(),
                    "late across the wrap"
                );
            }
        }
        assert_eq!(rx.received.unwrap().highest, last_index);
    }

    #[test]
    fn a_bound_context_refuses_a_second_ssrc() {
        let (mut tx, mut rx, key) = pair();
        rx.unprotect_rtp(&tx.protect_rtp(&rtp(1, 1, &[])).unwrap())
            .unwrap();
        let other = SrtpContext::new(&key).protect_rtp(&rtp(2, 2, &[])).unwrap();
        let foreign = Err(ForeignSsrc {
            expected: 1,
            got: 2,
        });
        assert_eq!(rx.unprotect_rtp(&other), foreign);
        assert_eq!(tx.protect_rtp(&rtp(2, 2, &[])), foreign);
    }

    #[test]
    fn truncated_and_random_inputs_are_errors_not_panics() {
        let (mut tx, mut rx, key) = pair();
        let srtp = tx.protect_rtp(&rtp(1, 1, &[3; 40])).unwrap();
        let srtcp = tx.protect_rtcp(&rtcp(1)).unwrap();
        for n in 0..srtp.len() {
            assert!(rx.unprotect_rtp(&srtp[..n]).is_err());
        }
        for n in 0..srtcp.len() {
            assert!(rx.unprotect_rtcp(&srtcp[..n]).is_err());
        }
        let mut rng = rand::rng();
        for _ in 0..5000 {
            let mut junk = vec![0; rand::Rng::random_range(&mut rng, 0..80)];
            rand::Rng::fill(&mut rng, &mut junk[..]);
            if let Some(b) = junk.first_mut() {
                *b = *b & 0x3F | 0x80; // version 2, so parsing gets past the first byte
            }
            let _ = rx.unprotect_rtp(&junk);
            let _ = rx.unprotect_rtcp(&junk);
            let _ = SrtpContext::new(&key).protect_rtp(&junk);
            let _ = tx.protect_rtcp(&junk);
            let (header, payload) = junk.split_at(junk.len() / 2);
            let _ = SrtpContext::new(&key).protect_rtp_into(header, payload, &mut Vec::new());
        }
    }

    #[test]
    fn the_inline_key_round_trips_and_ignores_session_parameters() {
        let key = Some(rfc_key());
        let inline = rfc_key().to_inline();
        assert_eq!(inline.len(), 40);
        assert_eq!(MasterKey::from_inline(&inline), key);
        assert_eq!(MasterKey::from_inline(&format!("inline:{inline}")), key);
        assert_eq!(
            MasterKey::from_inline(&format!("inline:{inline}|2^31|1:1")),
            key
        );
        assert_eq!(MasterKey::from_inline("inline:AAAA"), None);
        assert_eq!(MasterKey::from_inline("not base64 at all!"), None);
        assert_eq!(MasterKey::from_bytes(&[0; 29]), None);

        let attr = rfc_key().sdp_crypto_attribute();
        assert_eq!(
            attr,
            format!("crypto:1 AES_CM_128_HMAC_SHA1_80 inline:{inline}")
        );
        assert_eq!(
            MasterKey::from_sdp_crypto_attribute(&format!("a={attr}|2^20")),
            key
        );
        let other_suite = attr.replace("_80", "_32");
        assert_eq!(MasterKey::from_sdp_crypto_attribute(&other_suite), None);
    }

    #[test]
    fn debug_output_never_shows_the_key() {
        let key = rfc_key();
        let shown = format!("{key:?} {:?}", SrtpContext::new(&key)).to_lowercase();
        assert!(!shown.contains(&key.to_inline().to_lowercase()) && !shown.contains("e1f97a0d"));
        assert!(shown.contains("redacted"), "{shown}");
    }
}
