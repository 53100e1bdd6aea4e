//! Property tests of every parser that meets bytes from the network or an upload: RTCP on
//! the controller's RTCP port, keepalives and RTP on the RTP ports, the agent's jitter buffer
//! and receiver statistics, CAP alerts and JSON bodies on the API, uploaded audio and cron
//! rules. Each is fed random input and mutations of valid input (bit flips, cuts, splices,
//! length fields set to extremes) and must answer without panicking, in bounded time and
//! memory, and with results that hold their invariants.
//!
//! Failures are not persisted to a `proptest-regressions` file: proptest prints the minimal
//! failing input, and a parser bug found here becomes a named regression test next to the
//! parser it is about. `PROPTEST_RNG_SEED=<n>` replays or explores a seed.

use std::collections::{HashMap, HashSet};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use chrono::{DateTime, TimeZone, Utc};
use proptest::prelude::*;
use proptest::sample::Index;

use loaxa::agent::jitter::{JitterBuffer, JitterConfig, Packet, Pushed, Slot, parse_rtp};
use loaxa::agent::stats::{ReceiverStats, ReportBlock};
use loaxa::api::problem::{ApiError, parse_json};
use loaxa::cap;
use loaxa::media::{DecodeError, DecodeLimits, decode};
use loaxa::rtp::keepalive::{self, KeepaliveError};
use loaxa::rtp::{RtpSession, rtcp};
use loaxa::schedule::{Cron, Schedule, parse_timezone};

/// Proptest settings: `cases` inputs, nothing written to disk. `PROPTEST_CASES=<n>` runs
/// every property `n` times instead, for a longer hunt than `cargo test` can afford.
fn config(cases: u32) -> ProptestConfig {
    let default = ProptestConfig::default();
    ProptestConfig {
        cases: if std::env::var_os("PROPTEST_CASES").is_some() {
            default.cases
        } else {
            cases
        },
        failure_persistence: None,
        ..default
    }
}

// ---------------------------------------------------------------------------------------
// Mutations shared by every parser.

/// Byte widths of the integer fields the wire formats use.
const WIDTHS: [usize; 4] = [1, 2, 4, 8];

/// One change to a valid input. Positions are `Index`es so that they scale to whatever
/// length the input has by then, and shrink well.
#[derive(Debug, Clone)]
enum Mutation {
    FlipBit(Index, u8),
    SetByte(Index, u8),
    Truncate(Index),
    Insert(Index, Vec<u8>),
    Delete(Index, usize),
    /// This input up to one point, then another valid input from some point on: two
    /// well-formed halves that do not belong together.
    Splice(Index, Index),
    /// A field of `WIDTHS[width]` bytes set to an extreme value (0, 1, signed maximum,
    /// signed minimum, all ones), big- or little-endian.
    Extreme {
        at: Index,
        width: usize,
        value: usize,
        big_endian: bool,
    },
    /// A run of bytes repeated: a length that no longer matches what follows it.
    Duplicate(Index, usize),
}

fn mutation() -> impl Strategy<Value = Mutation> {
    prop_oneof![
        3 => (any::<Index>(), 0u8..8).prop_map(|(at, bit)| Mutation::FlipBit(at, bit)),
        2 => (any::<Index>(), any::<u8>()).prop_map(|(at, v)| Mutation::SetByte(at, v)),
        1 => any::<Index>().prop_map(Mutation::Truncate),
        1 => (any::<Index>(), prop::collection::vec(any::<u8>(), 1..32))
            .prop_map(|(at, b)| Mutation::Insert(at, b)),
        1 => (any::<Index>(), 1usize..64).prop_map(|(at, n)| Mutation::Delete(at, n)),
        1 => (any::<Index>(), any::<Index>()).prop_map(|(a, b)| Mutation::Splice(a, b)),
        2 => (any::<Index>(), 0..WIDTHS.len(), 0usize..5, any::<bool>()).prop_map(
            |(at, width, value, big_endian)| Mutation::Extreme {
                at,
                width,
                value,
                big_endian
            }
        ),
        1 => (any::<Index>(), 1usize..64).prop_map(|(at, n)| Mutation::Duplicate(at, n)),
    ]
}

fn mutations() -> impl Strategy<Value = Vec<Mutation>> {
    prop::collection::vec(mutation(), 1..6)
}

/// The extreme values of an unsigned field `width` bytes wide.
fn extreme(width: usize, which: usize) -> u64 {
    let bits = 8 * width as u32;
    let all_ones = if bits == 64 {
        u64::MAX
    } else {
        (1u64 << bits) - 1
    };
    [0, 1, all_ones >> 1, (all_ones >> 1) + 1, all_ones][which % 5]
}

/// `data` with `mutations` applied in order; `donor` is the other half of splices.
fn mutate(data: &[u8], donor: &[u8], mutations: &[Mutation]) -> Vec<u8> {
    let mut d = data.to_vec();
    for m in mutations {
        let len = d.len();
        // Indexing an empty input means nothing; only insertions and splices still apply.
        let at = |i: &Index| if len == 0 { 0 } else { i.index(len) };
        match m {
            Mutation::FlipBit(i, bit) if len > 0 => d[at(i)] ^= 1 << bit,
            Mutation::SetByte(i, v) if len > 0 => d[at(i)] = *v,
            Mutation::Truncate(i) => d.truncate(at(i)),
            Mutation::Insert(i, bytes) => {
                let at = if len == 0 { 0 } else { i.index(len + 1) };
                d.splice(at..at, bytes.iter().copied());
            }
            Mutation::Delete(i, n) if len > 0 => {
                let start = at(i);
                d.drain(start..(start + n).min(len));
            }
            Mutation::Splice(i, j) => {
                d.truncate(if len == 0 { 0 } else { i.index(len + 1) });
                if !donor.is_empty() {
                    d.extend_from_slice(&donor[j.index(donor.len())..]);
                }
            }
            Mutation::Extreme {
                at: i,
                width,
                value,
                big_endian,
            } => {
                let width = WIDTHS[width % WIDTHS.len()];
                if len >= width {
                    let start = i.index(len - width + 1);
                    let v = extreme(width, *value);
                    let bytes = if *big_endian {
                        v.to_be_bytes()[8 - width..].to_vec()
                    } else {
                        v.to_le_bytes()[..width].to_vec()
                    };
                    d[start..start + width].copy_from_slice(&bytes);
                }
            }
            Mutation::Duplicate(i, n) if len > 0 => {
                let start = at(i);
                let run = d[start..(start + n).min(len)].to_vec();
                d.splice(start..start, run);
            }
            _ => {}
        }
    }
    d
}

// ---------------------------------------------------------------------------------------
// RTCP: `rtcp::parse_reports` on the controller's RTCP port.

/// What a report block reads as once it has been on the wire.
fn expected_stats(reporter: u32, block: &ReportBlock) -> rtcp::ReceptionStats {
    let lost = block.cumulative_lost & 0xFF_FFFF;
    rtcp::ReceptionStats {
        reporter_ssrc: reporter,
        media_ssrc: block.ssrc,
        fraction_lost: f64::from(block.fraction_lost) / 256.0,
        cumulative_lost: if lost & 0x80_0000 != 0 { 0 } else { lost },
        jitter: block.jitter,
    }
}

fn report_block() -> impl Strategy<Value = ReportBlock> {
    (
        any::<u32>(),
        any::<u8>(),
        any::<u32>(),
        any::<u32>(),
        any::<u32>(),
    )
        .prop_map(
            |(ssrc, fraction_lost, cumulative_lost, extended_highest_sequence, jitter)| {
                ReportBlock {
                    ssrc,
                    fraction_lost,
                    cumulative_lost,
                    extended_highest_sequence,
                    jitter,
                }
            },
        )
}

/// One RTCP compound packet the crate itself builds, of any of its three kinds.
#[derive(Debug, Clone)]
enum Compound {
    Receiver(u32, Option<ReportBlock>, String),
    Sender(u32, u64, u32, String),
    Goodbye(u32, u64, u32, String, String),
}

fn compound() -> impl Strategy<Value = Compound> {
    let cname = "[a-z0-9@.-]{0,40}";
    prop_oneof![
        3 => (any::<u32>(), prop::option::weighted(0.8, report_block()), cname)
            .prop_map(|(s, b, c)| Compound::Receiver(s, b, c)),
        1 => (any::<u32>(), any::<u64>(), any::<u32>(), cname)
            .prop_map(|(s, n, r, c)| Compound::Sender(s, n, r, c)),
        1 => (any::<u32>(), any::<u64>(), any::<u32>(), cname, "[ -~]{0,40}")
            .prop_map(|(s, n, r, c, why)| Compound::Goodbye(s, n, r, c, why)),
    ]
}

impl Compound {
    fn wire(&self) -> Vec<u8> {
        let built = match self {
            Compound::Receiver(ssrc, block, cname) => {
                rtcp::receiver_report(*ssrc, block.as_ref(), cname)
            }
            Compound::Sender(ssrc, ntp, rtp, cname) => {
                rtcp::sender_report(&RtpSession::with_initial(0, *ssrc, 0, 0), *ntp, *rtp, cname)
            }
            Compound::Goodbye(ssrc, ntp, rtp, cname, why) => rtcp::goodbye(
                &RtpSession::with_initial(0, *ssrc, 0, 0),
                *ntp,
                *rtp,
                cname,
                why,
            ),
        };
        built
            .expect("short CNAMEs and reasons always marshal")
            .to_vec()
    }

    /// The report blocks `parse_reports` must find in it.
    fn blocks(&self) -> Vec<rtcp::ReceptionStats> {
        match self {
            Compound::Receiver(ssrc, Some(block), _) => vec![expected_stats(*ssrc, block)],
            _ => Vec::new(),
        }
    }
}

/// Most report blocks `parse_reports` accepts from one datagram (`rtcp::MAX_BLOCKS`).
const MAX_RTCP_BLOCKS: usize = 64;

/// `parse_reports` on anything: no panic, nothing from its panic net, and what it accepts
/// is in range.
fn check_rtcp(datagram: &[u8]) -> Result<(), TestCaseError> {
    match rtcp::parse_reports(datagram) {
        Ok(stats) => {
            prop_assert!(stats.len() <= MAX_RTCP_BLOCKS);
            for s in &stats {
                prop_assert!((0.0..1.0).contains(&s.fraction_lost), "{s:?}");
                prop_assert!(s.cumulative_lost <= 0x7F_FFFF, "{s:?}");
            }
        }
        Err(e) => {
            // The catch_unwind around rtc-rtcp keeps the pacer alive, but a panic it
            // catches is still a parser bug worth a report.
            prop_assert!(
                !e.to_string().contains("RTCP parser failed"),
                "rtc-rtcp panicked on {datagram:02x?}"
            );
        }
    }
    Ok(())
}

/// Offsets of the 16-bit length fields of the packets of a compound, walking it as a
/// receiver would.
fn rtcp_length_fields(data: &[u8]) -> Vec<usize> {
    let mut out = Vec::new();
    let mut at = 0;
    while at + 4 <= data.len() {
        out.push(at + 2);
        let words = usize::from(u16::from_be_bytes([data[at + 2], data[at + 3]]));
        at += 4 * (words + 1);
    }
    out
}

proptest! {
    #![proptest_config(config(2000))]

    #[test]
    fn random_datagrams_on_the_rtcp_port_are_refused_or_in_range(
        mut data in prop::collection::vec(any::<u8>(), 0..600),
        looks_like_rtcp in any::<bool>(),
        rr in any::<bool>(),
    ) {
        if looks_like_rtcp && data.len() >= 8 {
            // Past the cheap checks, so the bytes reach rtc-rtcp itself.
            data.truncate(data.len() / 4 * 4);
            data[0] = 0x80 | (data[0] & 0x3F);
            data[1] = if rr { 201 } else { 200 };
        }
        check_rtcp(&data)?;
    }

    #[test]
    fn mutated_rtcp_compounds_are_refused_or_in_range(
        packets in prop::collection::vec(compound(), 1..4),
        donor in compound(),
        mutations in mutations(),
    ) {
        let wire: Vec<u8> = packets.iter().flat_map(Compound::wire).collect();
        check_rtcp(&mutate(&wire, &donor.wire(), &mutations))?;
    }

    #[test]
    fn rtcp_length_fields_set_to_extremes_are_refused_or_in_range(
        packets in prop::collection::vec(compound(), 1..4),
        which in any::<Index>(),
        value in prop_oneof![
            Just(0u16), Just(1), Just(2), Just(6), Just(7), Just(0x7FFF), Just(0xFFFF),
            any::<u16>(),
        ],
    ) {
        let mut wire: Vec<u8> = packets.iter().flat_map(Compound::wire).collect();
        let fields = rtcp_length_fields(&wire);
        let at = fields[which.index(fields.len())];
        wire[at..at + 2].copy_from_slice(&value.to_be_bytes());
        check_rtcp(&wire)?;
    }
}

proptest! {
    // Up to 70 compounds each: fewer cases.
    #![proptest_config(config(500))]

    #[test]
    fn compound_packets_the_crate_builds_round_trip_and_the_block_count_is_capped(
        packets in prop_oneof![
            3 => prop::collection::vec(compound(), 1..40),
            // Around the cap of 64 blocks.
            1 => prop::collection::vec(
                (any::<u32>(), report_block()).prop_map(|(s, b)| Compound::Receiver(s, Some(b), "c".into())),
                60..70,
            ),
        ],
    ) {
        let wire: Vec<u8> = packets.iter().flat_map(Compound::wire).collect();
        let blocks: Vec<_> = packets.iter().flat_map(Compound::blocks).collect();
        let parsed = rtcp::parse_reports(&wire);
        if blocks.len() > MAX_RTCP_BLOCKS {
            prop_assert!(parsed.is_err(), "{} blocks accepted", blocks.len());
        } else {
            // Every compound the crate builds starts with an SR or an RR.
            prop_assert_eq!(parsed.expect("the crate's own compound parses"), blocks);
        }
    }
}

// ---------------------------------------------------------------------------------------
// Keepalives on the RTP port.

const NOW_MS: u64 = 1_795_000_000_000;

/// Cluster ids: UUIDs in practice, but anything of 1 to 64 bytes of UTF-8 encodes.
fn cluster() -> impl Strategy<Value = String> {
    prop_oneof![
        "[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}",
        "\\PC{1,16}",
        "[ -~]{1,64}",
    ]
    .prop_filter("1 to 64 bytes", |s| {
        (1..=keepalive::MAX_ID_LEN).contains(&s.len())
    })
}

fn key() -> impl Strategy<Value = Vec<u8>> {
    prop::collection::vec(any::<u8>(), 0..80)
}

/// The keepalive functions on anything: no panic, and their answers agree with each other.
fn check_keepalive(datagram: &[u8], key: &[u8]) -> Result<(), TestCaseError> {
    prop_assert_eq!(
        keepalive::is_keepalive(datagram),
        datagram.starts_with(b"LXKA")
    );
    if let Ok(id) = keepalive::cluster_id(datagram) {
        prop_assert!(keepalive::is_keepalive(datagram));
        prop_assert!((1..=keepalive::MAX_ID_LEN).contains(&id.len()));
        prop_assert_eq!(datagram.len(), 6 + id.len() + 16 + keepalive::TAG_LEN);
        prop_assert_eq!(&datagram[6..6 + id.len()], id.as_bytes());
    }
    // Without the key nothing verifies (a forgery would be a 2^-128 event).
    let verdict = keepalive::verify(datagram, key, NOW_MS, None);
    prop_assert!(verdict.is_err(), "forged keepalive verified: {verdict:?}");
    if keepalive::cluster_id(datagram).is_err() {
        prop_assert_eq!(verdict, Err(KeepaliveError::Malformed));
    }
    Ok(())
}

proptest! {
    #![proptest_config(config(2000))]

    #[test]
    fn random_datagrams_on_the_rtp_port_are_not_keepalives(
        data in prop::collection::vec(any::<u8>(), 0..120),
        id_len in 0u8..=255,
        shaped in any::<bool>(),
        key in key(),
    ) {
        let data = if shaped {
            // The magic, version and an id length, then noise: what reaches `split`.
            let mut d = b"LXKA\x01".to_vec();
            d.push(id_len);
            d.extend(data);
            d
        } else {
            data
        };
        check_keepalive(&data, &key)?;
    }

    #[test]
    fn a_keepalive_verifies_with_its_key_and_reads_back_what_was_encoded(
        id in cluster(),
        unix_ms in any::<u64>(),
        counter in any::<u64>(),
        key in key(),
    ) {
        let packet = keepalive::encode(&id, unix_ms, counter, &key);
        prop_assert!(keepalive::is_keepalive(&packet));
        prop_assert_eq!(keepalive::cluster_id(&packet), Ok(id.as_str()));
        let k = keepalive::verify(&packet, &key, unix_ms, None).expect("verifies");
        prop_assert_eq!((k.cluster.as_str(), k.unix_ms, k.counter), (id.as_str(), unix_ms, counter));
        // Another key (not one with zeros appended: HMAC pads short keys with zeros, so
        // those are the same key).
        let mut other = key.clone();
        match other.first_mut() {
            Some(first) => *first ^= 1,
            None => other.push(1),
        }
        prop_assert_eq!(
            keepalive::verify(&packet, &other, unix_ms, None),
            Err(KeepaliveError::BadTag)
        );
        // Replayed: refused whatever came before it at the same (time, counter).
        prop_assert_eq!(
            keepalive::verify(&packet, &key, unix_ms, Some((unix_ms, counter))),
            Err(KeepaliveError::Replayed)
        );
    }

    #[test]
    fn any_single_byte_change_to_a_keepalive_stops_it_verifying(
        id in cluster(),
        counter in any::<u64>(),
        key in key(),
        at in any::<Index>(),
        xor in 1u8..=255,
    ) {
        let mut packet = keepalive::encode(&id, NOW_MS, counter, &key);
        let at = at.index(packet.len());
        packet[at] ^= xor;
        prop_assert!(keepalive::verify(&packet, &key, NOW_MS, None).is_err(), "byte {at} ^ {xor:#04x}");
        check_keepalive(&packet, &key)?;
    }

    #[test]
    fn a_mutated_keepalive_never_verifies(
        id in cluster(),
        counter in any::<u64>(),
        key in key(),
        donor_id in cluster(),
        mutations in mutations(),
    ) {
        let packet = keepalive::encode(&id, NOW_MS, counter, &key);
        let donor = keepalive::encode(&donor_id, NOW_MS, counter.wrapping_add(1), &key);
        let mutated = mutate(&packet, &donor, &mutations);
        // Mutations can cancel out, and a splice can rebuild the donor whole: both are
        // genuine keepalives.
        prop_assume!(mutated != packet && mutated != donor);
        prop_assert!(keepalive::verify(&mutated, &key, NOW_MS, None).is_err());
        check_keepalive(&mutated, &key)?;
    }

    #[test]
    fn a_keepalive_whose_id_length_is_changed_is_malformed(
        id in cluster(),
        key in key(),
        len in 0u8..=255,
    ) {
        let mut packet = keepalive::encode(&id, NOW_MS, 1, &key);
        prop_assume!(usize::from(len) != id.len());
        packet[5] = len;
        prop_assert_eq!(keepalive::cluster_id(&packet), Err(KeepaliveError::Malformed));
        prop_assert_eq!(
            keepalive::verify(&packet, &key, NOW_MS, None),
            Err(KeepaliveError::Malformed)
        );
    }
}

// ---------------------------------------------------------------------------------------
// RTP on the agent's port: `parse_rtp`, then the jitter buffer and receiver statistics.

/// The header fields of a hand-built RTP packet, CSRCs, extension and padding included.
#[derive(Debug, Clone)]
struct RtpFields {
    payload_type: u8,
    marker: bool,
    sequence: u16,
    timestamp: u32,
    ssrc: u32,
    csrcs: usize,
    /// Extension words, if any.
    extension: Option<u16>,
    /// Padding octets, the count octet included.
    padding: u8,
    payload: Vec<u8>,
}

impl RtpFields {
    fn wire(&self) -> Vec<u8> {
        let mut d = vec![
            0x80 | (u8::from(self.padding > 0) << 5)
                | (u8::from(self.extension.is_some()) << 4)
                | self.csrcs as u8,
            (u8::from(self.marker) << 7) | self.payload_type,
        ];
        d.extend(self.sequence.to_be_bytes());
        d.extend(self.timestamp.to_be_bytes());
        d.extend(self.ssrc.to_be_bytes());
        d.extend((0..self.csrcs * 4).map(|i| i as u8));
        if let Some(words) = self.extension {
            d.extend([0xBE, 0xDE]);
            d.extend(words.to_be_bytes());
            d.extend(std::iter::repeat_n(0xEE, 4 * usize::from(words)));
        }
        d.extend(&self.payload);
        if self.padding > 0 {
            d.extend(std::iter::repeat_n(0, usize::from(self.padding) - 1));
            d.push(self.padding);
        }
        d
    }
}

fn rtp_fields() -> impl Strategy<Value = RtpFields> {
    (
        (0u8..128).prop_filter("not an RTCP type", |pt| !(72..=76).contains(pt)),
        any::<bool>(),
        any::<u16>(),
        any::<u32>(),
        any::<u32>(),
        0usize..16,
        prop::option::of(0u16..8),
        prop_oneof![3 => Just(0u8), 1 => 1u8..=255],
        prop::collection::vec(any::<u8>(), 0..200),
    )
        .prop_map(
            |(
                payload_type,
                marker,
                sequence,
                timestamp,
                ssrc,
                csrcs,
                extension,
                padding,
                payload,
            )| {
                RtpFields {
                    payload_type,
                    marker,
                    sequence,
                    timestamp,
                    ssrc,
                    csrcs,
                    extension,
                    padding,
                    payload,
                }
            },
        )
}

/// `parse_rtp` on anything: no panic, and when it accepts, its reading is the RFC 3550
/// layout recomputed here independently.
fn check_rtp(d: &[u8]) -> Result<(), TestCaseError> {
    let Some(p) = parse_rtp(d) else {
        return Ok(());
    };
    prop_assert!(d.len() >= 12 && d[0] >> 6 == 2);
    prop_assert!(!(72..=76).contains(&p.payload_type));
    let mut start = 12 + 4 * usize::from(d[0] & 0x0F);
    if d[0] & 0x10 != 0 {
        start += 4 + 4 * usize::from(u16::from_be_bytes([d[start + 2], d[start + 3]]));
    }
    let pad = if d[0] & 0x20 != 0 {
        usize::from(d[d.len() - 1])
    } else {
        0
    };
    prop_assert!(d[0] & 0x20 == 0 || pad > 0, "zero padding accepted");
    prop_assert_eq!(start + p.payload.len() + pad, d.len());
    prop_assert_eq!(&p.payload[..], &d[start..d.len() - pad]);
    prop_assert_eq!(p.payload_type, d[1] & 0x7F);
    prop_assert_eq!(p.marker, d[1] & 0x80 != 0);
    prop_assert_eq!(p.sequence, u16::from_be_bytes([d[2], d[3]]));
    prop_assert_eq!(p.timestamp, u32::from_be_bytes([d[4], d[5], d[6], d[7]]));
    prop_assert_eq!(p.ssrc, u32::from_be_bytes([d[8], d[9], d[10], d[11]]));
    Ok(())
}

proptest! {
    #![proptest_config(config(2000))]

    #[test]
    fn random_datagrams_parse_as_rtp_only_when_consistent(
        mut data in prop::collection::vec(any::<u8>(), 0..300),
        version_2 in any::<bool>(),
    ) {
        if version_2 && !data.is_empty() {
            data[0] = 0x80 | (data[0] & 0x3F);
        }
        check_rtp(&data)?;
    }

    #[test]
    fn rtp_with_csrcs_extension_and_padding_round_trips(f in rtp_fields()) {
        let p = parse_rtp(&f.wire()).expect("well-formed");
        prop_assert_eq!(
            p,
            Packet {
                ssrc: f.ssrc,
                payload_type: f.payload_type,
                sequence: f.sequence,
                timestamp: f.timestamp,
                marker: f.marker,
                payload: Bytes::from(f.payload.clone()),
            }
        );
    }

    #[test]
    fn mutated_rtp_is_refused_or_read_consistently(
        f in rtp_fields(),
        donor in rtp_fields(),
        from_session in any::<bool>(),
        mutations in mutations(),
    ) {
        let wire = if from_session {
            // What the controller itself sends.
            let mut session = RtpSession::with_initial(f.payload_type, f.ssrc, f.sequence, f.timestamp);
            session.packetize(Bytes::from(f.payload.clone()), 160, f.marker).expect("packetizes").to_vec()
        } else {
            f.wire()
        };
        check_rtp(&mutate(&wire, &donor.wire(), &mutations))?;
    }

    #[test]
    fn rtp_length_fields_set_to_extremes_are_refused_or_read_consistently(
        mut f in rtp_fields(),
        csrcs in 0u8..16,
        extension_words in prop_oneof![Just(0u16), Just(1), Just(0x7FFF), Just(0xFFFF), any::<u16>()],
        padding in any::<u8>(),
    ) {
        // A valid packet whose CSRC count, extension length and padding count are then
        // overwritten with values that need not fit.
        f.extension = Some(0);
        f.padding = 1;
        let mut wire = f.wire();
        wire[0] = (wire[0] & 0xF0) | csrcs;
        let ext = 12 + 4 * f.csrcs;
        wire[ext + 2..ext + 4].copy_from_slice(&extension_words.to_be_bytes());
        *wire.last_mut().expect("not empty") = padding;
        check_rtp(&wire)?;
    }
}

/// What happens next on the agent's RTP socket and playout clock.
#[derive(Debug, Clone)]
enum Event {
    /// The next packet of one of a few streams: `step` sequence numbers after that
    /// stream's previous one, its timestamp following by as many frames plus `skew`.
    Next {
        stream: usize,
        step: i32,
        skew: i32,
        marker: bool,
        extra: u8,
        after_ms: u32,
    },
    /// A packet with any header at all.
    Wild {
        header: [u8; 11],
        extra: u8,
        after_ms: u32,
    },
    /// Only time passes.
    Tick { after_ms: u32 },
    /// The codec or ptime changes.
    Reconfigure(usize),
}

/// Codec clocks and ptimes an agent meets: PCMU/PCMA and G.722 (8 kHz RTP clock), L16 at
/// 44.1 kHz, Opus at 48 kHz; 10 to 60 ms.
fn jitter_configs() -> Vec<JitterConfig> {
    let mut out = vec![JitterConfig::default()];
    for rate in [8000, 16_000, 44_100, 48_000] {
        for ms in [10, 20, 40, 60] {
            out.push(JitterConfig::for_clock(rate, Duration::from_millis(ms)));
        }
    }
    out
}

fn after_ms() -> impl Strategy<Value = u32> {
    prop_oneof![8 => 0u32..40, 2 => 40u32..400, 1 => 400u32..5000]
}

fn event() -> impl Strategy<Value = Event> {
    let step = prop_oneof![
        12 => Just(1i32),
        4 => -8i32..40,
        1 => -3000i32..3000,
        1 => any::<i16>().prop_map(i32::from),
    ];
    let skew = prop_oneof![8 => Just(0i32), 2 => -400i32..400, 1 => any::<i32>()];
    prop_oneof![
        20 => (0usize..3, step, skew, prop::bool::weighted(0.05), any::<u8>(), after_ms())
            .prop_map(|(stream, step, skew, marker, extra, after_ms)| Event::Next {
                stream, step, skew, marker, extra, after_ms
            }),
        2 => (any::<[u8; 11]>(), any::<u8>(), after_ms())
            .prop_map(|(header, extra, after_ms)| Event::Wild { header, extra, after_ms }),
        4 => after_ms().prop_map(|after_ms| Event::Tick { after_ms }),
        1 => (0..jitter_configs().len()).prop_map(Event::Reconfigure),
    ]
}

/// Most slots one call of the playout clock may drain: the 2 s window of 10 ms frames,
/// with room to spare. More means `pop` does not converge.
const MAX_POPS: usize = 1000;

/// What the playout clock took from the buffer.
#[derive(Default)]
struct Playout {
    frames: u64,
    lost: u64,
    played_ids: HashSet<u32>,
}

impl Playout {
    fn drain(&mut self, jb: &mut JitterBuffer, now: Instant) -> Result<(), TestCaseError> {
        for _ in 0..MAX_POPS {
            match jb.pop(now) {
                None => return Ok(()),
                Some(Slot::Lost) => self.lost += 1,
                Some(Slot::Frame(payload)) => {
                    self.frames += 1;
                    let id = u32::from_be_bytes(payload[..4].try_into().expect("an id"));
                    prop_assert!(self.played_ids.insert(id), "packet {id} played twice");
                }
            }
        }
        Err(TestCaseError::fail(format!(
            "pop still giving slots after {MAX_POPS}"
        )))
    }
}

/// The buffer's bounds after every step: at most 2 s of media beyond the playout point
/// (plus the frame being placed), and a target delay within its configuration.
fn check_bounds(jb: &JitterBuffer, config: &JitterConfig) -> Result<(), TestCaseError> {
    prop_assert!(
        jb.depth() <= Duration::from_secs(2) + config.frame,
        "{:?} buffered with {:?} frames",
        jb.depth(),
        config.frame
    );
    prop_assert!(
        (config.min_delay..=config.max_delay).contains(&jb.target_delay()),
        "target {:?}",
        jb.target_delay()
    );
    Ok(())
}

proptest! {
    #![proptest_config(config(700))]

    #[test]
    fn the_jitter_buffer_stays_bounded_and_plays_each_accepted_packet_at_most_once(
        initial in 0..jitter_configs().len(),
        starts in any::<[(u16, u32, u32); 3]>(),
        events in prop::collection::vec(event(), 1..400),
    ) {
        let configs = jitter_configs();
        let mut config = configs[initial];
        let mut jb = JitterBuffer::new(config);
        let t0 = Instant::now();
        let mut now = t0;
        // (sequence, timestamp, ssrc) of each generated stream.
        let mut streams = starts;
        let mut next_id: u32 = 0;
        let mut dropped = HashSet::new();
        let mut pushed = 0u64;
        let mut playout = Playout::default();
        for event in events {
            let datagram = match event {
                Event::Next { stream, step, skew, marker, extra, after_ms } => {
                    now += Duration::from_millis(u64::from(after_ms));
                    let (seq, ts, ssrc) = &mut streams[stream];
                    *seq = seq.wrapping_add(step as u16);
                    *ts = ts
                        .wrapping_add((step as u32).wrapping_mul(config.frame_ticks))
                        .wrapping_add(skew as u32);
                    let mut h = vec![0x80, u8::from(marker) << 7];
                    h.extend(seq.to_be_bytes());
                    h.extend(ts.to_be_bytes());
                    h.extend(ssrc.to_be_bytes());
                    Some((h, extra))
                }
                Event::Wild { header, extra, after_ms } => {
                    now += Duration::from_millis(u64::from(after_ms));
                    // Version 2 and a plain header, so the payload is the id below.
                    let mut h = vec![0x80];
                    h.extend(header);
                    Some((h, extra))
                }
                Event::Tick { after_ms } => {
                    now += Duration::from_millis(u64::from(after_ms));
                    None
                }
                Event::Reconfigure(i) => {
                    config = configs[i];
                    jb.set_config(config);
                    None
                }
            };
            if let Some((mut datagram, extra)) = datagram {
                // Each payload starts with a unique id, to see what plays.
                datagram.extend(next_id.to_be_bytes());
                datagram.extend(std::iter::repeat_n(0x55, usize::from(extra)));
                if let Some(packet) = parse_rtp(&datagram) {
                    pushed += 1;
                    match jb.push(packet, now) {
                        Pushed::Accepted | Pushed::NewStream => {}
                        Pushed::Late | Pushed::Duplicate | Pushed::TooFarAhead => {
                            dropped.insert(next_id);
                        }
                    }
                }
                next_id += 1;
            }
            check_bounds(&jb, &config)?;
            playout.drain(&mut jb, now)?;
            check_bounds(&jb, &config)?;
        }
        prop_assert!(playout.played_ids.is_disjoint(&dropped), "a dropped packet played");
        let counts = jb.counts();
        prop_assert_eq!(counts.received, pushed);
        prop_assert_eq!((counts.played, counts.lost), (playout.frames, playout.lost));
        prop_assert!(counts.late + counts.duplicates + counts.too_far_ahead <= pushed);
        // Once the sender stops, the buffer drains and the stream ends within a few
        // seconds of playout clock: nothing stays buffered for ever.
        let frame = config.frame;
        let mut ticks = 0;
        while jb.is_playing() && ticks < 10_000 {
            now += frame;
            playout.drain(&mut jb, now)?;
            ticks += 1;
        }
        prop_assert!(!jb.is_playing(), "still playing {:?} after the sender stopped", jb.depth());
        prop_assert_eq!(jb.depth(), Duration::ZERO);
    }
}

/// What happens next at the agent's receiver statistics.
#[derive(Debug, Clone)]
enum StatsEvent {
    Packet {
        ssrc: u32,
        sequence: SeqStep,
        timestamp: u32,
        after_ms: u32,
    },
    Report,
}

#[derive(Debug, Clone)]
enum SeqStep {
    /// The previous sequence number plus this.
    By(i32),
    /// Any sequence number.
    To(u16),
}

fn stats_event() -> impl Strategy<Value = StatsEvent> {
    let sequence = prop_oneof![
        10 => Just(SeqStep::By(1)),
        4 => (-120i32..120).prop_map(SeqStep::By),
        2 => (-4000i32..4000).prop_map(SeqStep::By),
        1 => any::<u16>().prop_map(SeqStep::To),
    ];
    prop_oneof![
        12 => (
            prop_oneof![9 => Just(7u32), 1 => any::<u32>()],
            sequence,
            any::<u32>(),
            prop_oneof![9 => 0u32..60, 1 => any::<u32>()],
        )
            .prop_map(|(ssrc, sequence, timestamp, after_ms)| StatsEvent::Packet {
                ssrc,
                sequence,
                timestamp,
                after_ms,
            }),
        1 => Just(StatsEvent::Report),
    ]
}

proptest! {
    #![proptest_config(config(500))]

    #[test]
    fn receiver_statistics_of_any_packet_sequence_report_blocks_that_survive_the_wire(
        clock_rate in prop_oneof![Just(0u32), Just(8000), Just(48_000), any::<u32>()],
        first in any::<u16>(),
        events in prop::collection::vec(stats_event(), 1..600),
    ) {
        let mut stats = ReceiverStats::new(clock_rate);
        let mut now = Instant::now();
        let mut seq = first;
        let mut any_packet = false;
        for event in events {
            match event {
                StatsEvent::Packet { ssrc, sequence, timestamp, after_ms } => {
                    seq = match sequence {
                        SeqStep::By(step) => seq.wrapping_add(step as u16),
                        SeqStep::To(to) => to,
                    };
                    // Arrivals up to ~50 days apart: far beyond any RTP clock's wrap.
                    now += Duration::from_millis(u64::from(after_ms));
                    stats.on_packet(ssrc, seq, timestamp, now);
                    any_packet = true;
                }
                StatsEvent::Report => {
                    let block = stats.report();
                    prop_assert_eq!(block.is_some(), any_packet);
                    if let Some(block) = block {
                        prop_assert_eq!(Some(block.ssrc), stats.source());
                        prop_assert!(block.cumulative_lost <= 0xFF_FFFF);
                        // What the agent sends is what the controller reads.
                        let wire = rtcp::receiver_report(0xA6E7, Some(&block), "agent@fuzz")
                            .expect("marshals");
                        prop_assert_eq!(
                            rtcp::parse_reports(&wire).expect("parses"),
                            vec![expected_stats(0xA6E7, &block)]
                        );
                    }
                }
            }
            if stats.source().is_some() {
                prop_assert!(stats.expected() >= 1);
            }
            prop_assert_eq!(stats.lost(), stats.expected() as i64 - stats.received() as i64);
            let jitter = stats.jitter_ms();
            prop_assert!(jitter.is_finite() && jitter >= 0.0, "jitter {jitter} ms");
        }
    }
}

// ---------------------------------------------------------------------------------------
// CAP alerts on /api/v1/emergency.

/// The CAP 1.2 alert of the crate's own tests (src/cap.rs), every element it reads present.
const VALID_CAP: &str = r#"<?xml version="1.0" encoding="UTF-8"?>
<alert xmlns="urn:oasis:names:tc:emergency:cap:1.2">
  <identifier>VN-KTTV-2026-0042</identifier>
  <sender>canhbao@kttv.gov.vn</sender>
  <sent>2026-11-22T15:00:00+07:00</sent>
  <status>Actual</status>
  <msgType>Update</msgType>
  <scope>Public</scope>
  <references>canhbao@kttv.gov.vn,VN-KTTV-2026-0041,2026-11-22T14:00:00+07:00</references>
  <info>
    <language>vi-VN</language>
    <category>Met</category>
    <event>Bão số 9</event>
    <urgency>Immediate</urgency>
    <severity>Extreme</severity>
    <certainty>Observed</certainty>
    <expires>2026-11-22T21:00:00+07:00</expires>
    <headline>Bão số 9 đổ bộ</headline>
    <resource>
      <resourceDesc>Thông báo</resourceDesc>
      <mimeType>audio/mpeg</mimeType>
      <derefUri>SUQz</derefUri>
    </resource>
    <area>
      <areaDesc>Xã Vĩnh Hòa</areaDesc>
      <geocode><valueName>loaxa</valueName><value>xa-vinh-hoa</value></geocode>
      <geocode><valueName>other</valueName><value>123</value></geocode>
    </area>
  </info>
</alert>"#;

const CAP_OPEN: &str = r#"<alert xmlns="urn:oasis:names:tc:emergency:cap:1.2">"#;

/// The longest one `cap::parse` may take on any input here, in a debug build on a loaded
/// 2-core machine; the inputs are at most a few MB and the work should be linear.
const CAP_TIME: Duration = Duration::from_secs(2);

/// What an accepted alert promises the code that airs it.
fn check_cap(xml: &str) -> Result<(), TestCaseError> {
    let start = Instant::now();
    let result = cap::parse(xml, "loaxa");
    prop_assert!(
        start.elapsed() < CAP_TIME,
        "{:?} on {} bytes",
        start.elapsed(),
        xml.len()
    );
    let Ok(alert) = result else {
        return Ok(());
    };
    for plain in [&alert.identifier, &alert.sender] {
        prop_assert!(!plain.is_empty() && plain.len() <= 256);
        prop_assert!(
            !plain
                .chars()
                .any(|c| c.is_whitespace() || ",<&".contains(c))
        );
    }
    if matches!(alert.msg_type, cap::MsgType::Update | cap::MsgType::Cancel) {
        prop_assert!(!alert.references.is_empty());
    }
    prop_assert!(alert.infos.len() <= 64);
    for info in &alert.infos {
        prop_assert!(!info.event.is_empty());
        prop_assert!(info.resources.len() <= 64);
        let unique: HashSet<_> = info.area_codes.iter().collect();
        prop_assert_eq!(unique.len(), info.area_codes.len());
    }
    let codes = alert.area_codes();
    prop_assert_eq!(codes.iter().collect::<HashSet<_>>().len(), codes.len());
    Ok(())
}

/// Pieces of CAP documents, to assemble into strings that get past the XML parser more
/// often than random text does.
fn cap_token() -> impl Strategy<Value = String> {
    let tokens = [
        CAP_OPEN,
        "<alert>",
        "</alert>",
        "<identifier>",
        "</identifier>",
        "<sender>",
        "</sender>",
        "<sent>",
        "</sent>",
        "<status>Actual</status>",
        "<msgType>Alert</msgType>",
        "<msgType>Cancel</msgType>",
        "<scope>Public</scope>",
        "<references>",
        "</references>",
        "<info>",
        "</info>",
        "<category>Met</category><urgency>Immediate</urgency>",
        "<severity>Extreme</severity><certainty>Observed</certainty>",
        "<event>",
        "</event>",
        "<expires>",
        "</expires>",
        "<area><areaDesc>x</areaDesc>",
        "</area>",
        "<geocode><valueName>loaxa</valueName><value>",
        "</value></geocode>",
        "<resource><resourceDesc>r</resourceDesc><mimeType>audio/mpeg</mimeType>",
        "<derefUri>",
        "</derefUri>",
        "</resource>",
        "2026-11-22T15:00:00+07:00",
        "9999-99-99T99:99:99+99:99",
        "a,b,c",
        "SUQz",
        "====",
        "&amp;",
        "&lt;",
        "&#x1F600;",
        "&#0;",
        "&bogus;",
        "<![CDATA[",
        "]]>",
        "<!--",
        "-->",
        r#"<?xml version="1.0" encoding="UTF-8"?>"#,
        "<!DOCTYPE alert>",
        r#"<p:x xmlns:p="urn:x">"#,
        "</p:x>",
        " ",
        "\n",
        "Bão số 9",
    ];
    prop_oneof![
        6 => prop::sample::select(tokens.to_vec()).prop_map(str::to_string),
        1 => "\\PC{0,8}",
    ]
}

proptest! {
    #![proptest_config(config(2000))]

    #[test]
    fn random_text_is_not_a_cap_alert(xml in "\\PC{0,2000}") {
        check_cap(&xml)?;
        prop_assert!(cap::parse(&xml, "loaxa").is_err());
    }

    #[test]
    fn cap_token_soup_is_refused_or_a_valid_alert(
        tokens in prop::collection::vec(cap_token(), 0..120),
    ) {
        check_cap(&tokens.concat())?;
    }

    #[test]
    fn mutated_cap_alerts_are_refused_or_valid(
        mutations in mutations(),
        donor in prop::sample::select(vec![
            VALID_CAP.replace("Update", "Alert"),
            VALID_CAP.replace("<info>", "<info><info>"),
            "<alert>not CAP</alert>".to_string(),
        ]),
    ) {
        let bytes = mutate(VALID_CAP.as_bytes(), donor.as_bytes(), &mutations);
        check_cap(&String::from_utf8_lossy(&bytes))?;
    }
}

#[test]
fn the_cap_seed_is_a_valid_alert() {
    let alert = cap::parse(VALID_CAP, "loaxa").expect("valid");
    assert_eq!(alert.area_codes(), ["xa-vinh-hoa"]);
    assert_eq!(alert.references.len(), 1);
}

/// `cap::parse` on `xml` is refused within `CAP_TIME`.
fn refused_quickly(what: &str, xml: &str) {
    let start = Instant::now();
    let result = cap::parse(xml, "loaxa");
    let elapsed = start.elapsed();
    assert!(result.is_err(), "{what}: accepted");
    assert!(elapsed < CAP_TIME, "{what}: {elapsed:?}");
}

#[test]
fn a_cap_alert_nested_100_000_deep_is_refused_quickly() {
    // roxmltree has no element depth limit (only for entities), but builds its tree
    // without recursion: depth costs linear time, not stack.
    let n = 100_000;
    let closed = format!("{CAP_OPEN}{}{}</alert>", "<x>".repeat(n), "</x>".repeat(n));
    refused_quickly("closed", &closed);
    let unclosed = format!("{CAP_OPEN}{}", "<info>".repeat(n));
    refused_quickly("unclosed", &unclosed);
    let inside = VALID_CAP.replace(
        "<headline>",
        &format!("{}{}<headline>", "<x>".repeat(n), "</x>".repeat(n)),
    );
    // Deep but otherwise valid: accepted or not, answered quickly.
    let start = Instant::now();
    let _ = cap::parse(&inside, "loaxa");
    assert!(
        start.elapsed() < CAP_TIME,
        "valid + deep: {:?}",
        start.elapsed()
    );
    let no_alert = format!("{}{}", "<a>".repeat(n), "</a>".repeat(n));
    refused_quickly("not an alert", &no_alert);
}

#[test]
fn a_cap_alert_with_a_huge_attribute_or_text_is_refused_quickly() {
    let big = "x".repeat(8 << 20);
    refused_quickly(
        "attribute",
        &format!(r#"<alert a="{big}" xmlns="urn:oasis:names:tc:emergency:cap:1.2"/>"#),
    );
    refused_quickly("identifier", &VALID_CAP.replace("VN-KTTV-2026-0042", &big));
    refused_quickly("derefUri", &VALID_CAP.replace("SUQz", &format!("{big}!")));
    refused_quickly("unterminated", &format!("{CAP_OPEN}<identifier>{big}"));
}

// ---------------------------------------------------------------------------------------
// JSON bodies: `parse_json` for the request types of the API.

/// Valid bodies of the public request types, to mutate.
const JSON_SEEDS: &[&str] = &[
    r#"{"uptime_s":12,"volume":80,"playing":{"ssrc":42,"codec":"pcmu","since":"2026-01-01T00:00:00Z"},"buffer_ms":80,"target_delay_ms":60,"packets_received":1000,"packets_lost":3,"packets_late":1,"jitter_ms":2.5,"output":"wav","version":"0.1.0","test_tones_played":["t1","t2"]}"#,
    r#"{"code":"xa-vinh-hoa","name":"Xã Vĩnh Hòa","kind":"commune","parent_code":"huyen-a"}"#,
    r#"{"audio_ids":["a1","a2"],"targets":{"areas":["xa-vinh-hoa"],"clusters":["c1"]},"priority":"priority","repeat":2,"on_interrupt":"resume"}"#,
    r#"{"title":"t","topic":"chuyen-doi-so","audio_ids":["a1"],"targets":{"areas":["x"]},"schedule":{"cron":["0 6 * * 1-5"],"timezone":"Asia/Ho_Chi_Minh","starts_on":"2026-01-01","ends_on":"2026-12-31"},"repeat":1}"#,
    r#"{"audio_id":"a1","targets":{"areas":["xa-vinh-hoa"]},"repeat":3,"interval_s":5}"#,
    r#"{"frequency_hz":1000,"duration_ms":2000}"#,
    r#"{"a":[1,-2.5e300,true,false,null,"\u00e9\ud83d\ude00"],"b":{"c":{}}}"#,
];

/// `parse_json::<T>` answers with the value, or with a 400 or 422 (never a 500 or a panic).
fn check_json<T: serde::de::DeserializeOwned>(bytes: &[u8]) -> Result<Option<T>, TestCaseError> {
    match parse_json::<T>(bytes) {
        Ok(v) => Ok(Some(v)),
        Err(ApiError::BadRequest(_)) => Ok(None),
        Err(ApiError::Validation { errors, .. }) => {
            prop_assert_eq!(errors.len(), 1);
            Ok(None)
        }
        Err(other) => Err(TestCaseError::fail(format!("unexpected {other:?}"))),
    }
}

/// Equal JSON values, numbers within a few ULPs: without its `float_roundtrip` feature
/// serde_json may read a float one ULP off what it wrote (`-118446744073709551616` reads as
/// `-1.1844674407370957e20`, which reads back as `...55e20`).
fn same_json(a: &serde_json::Value, b: &serde_json::Value) -> bool {
    use serde_json::Value;
    match (a, b) {
        (Value::Number(x), Value::Number(y)) => {
            x == y || {
                let (x, y) = (
                    x.as_f64().unwrap_or(f64::NAN),
                    y.as_f64().unwrap_or(f64::NAN),
                );
                (x - y).abs() <= 4.0 * f64::EPSILON * x.abs().max(y.abs())
            }
        }
        (Value::Array(x), Value::Array(y)) => {
            x.len() == y.len() && x.iter().zip(y).all(|(x, y)| same_json(x, y))
        }
        (Value::Object(x), Value::Object(y)) => {
            x.len() == y.len()
                && x.iter()
                    .all(|(k, v)| y.get(k).is_some_and(|w| same_json(v, w)))
        }
        _ => a == b,
    }
}

/// Every public request type on the same bytes.
fn check_all_json(bytes: &[u8]) -> Result<(), TestCaseError> {
    if let Some(value) = check_json::<serde_json::Value>(bytes)? {
        // What parses re-serialises and parses back to the same value.
        let again = serde_json::to_vec(&value).expect("serialises");
        let back = check_json::<serde_json::Value>(&again)?.expect("round trips");
        prop_assert!(same_json(&back, &value), "{value} became {back}");
    }
    if let Some(report) = check_json::<loaxa::monitor::AgentReport>(bytes)? {
        let again = serde_json::to_vec(&report).expect("serialises");
        let back = check_json::<loaxa::monitor::AgentReport>(&again)?.expect("round trips");
        let (back, report) = (
            serde_json::to_value(&back).expect("serialises"),
            serde_json::to_value(&report).expect("serialises"),
        );
        prop_assert!(same_json(&back, &report), "{report} became {back}");
    }
    check_json::<loaxa::api::areas::CreateArea>(bytes)?;
    check_json::<loaxa::api::broadcasts::CreateBroadcast>(bytes)?;
    check_json::<loaxa::api::broadcasts::Targets>(bytes)?;
    check_json::<loaxa::api::campaigns::CreateCampaign>(bytes)?;
    check_json::<loaxa::api::campaigns::PatchCampaign>(bytes)?;
    check_json::<loaxa::api::campaigns::ScheduleSpec>(bytes)?;
    check_json::<loaxa::api::clusters::CreateCluster>(bytes)?;
    check_json::<loaxa::api::clusters::UpdateCluster>(bytes)?;
    check_json::<loaxa::api::emergency::CreateEmergency>(bytes)?;
    check_json::<loaxa::api::health::TestToneRequest>(bytes)?;
    check_json::<loaxa::api::health::HeartbeatAnswer>(bytes)?;
    Ok(())
}

fn json_token() -> impl Strategy<Value = String> {
    let tokens = [
        "{",
        "}",
        "[",
        "]",
        ":",
        ",",
        "\"",
        "null",
        "true",
        "false",
        "0",
        "-1",
        "1e999",
        "-0.0",
        "18446744073709551616",
        "\"\\u0000\"",
        "\"\\ud800\"",
        "\"uptime_s\"",
        "\"volume\"",
        "\"playing\"",
        "\"ssrc\"",
        "\"codec\"",
        "\"targets\"",
        "\"areas\"",
        "\"cron\"",
        "\"schedule\"",
        "\"endpoint\"",
        "\"mode\"",
        "\"audio_ids\"",
        " ",
    ];
    prop_oneof![
        8 => prop::sample::select(tokens.to_vec()).prop_map(str::to_string),
        1 => "\\PC{0,6}",
    ]
}

proptest! {
    #![proptest_config(config(2000))]

    #[test]
    fn random_bodies_are_a_400_or_422_never_a_panic(
        bytes in prop::collection::vec(any::<u8>(), 0..400),
    ) {
        check_all_json(&bytes)?;
    }

    #[test]
    fn json_token_soup_is_a_400_422_or_a_value_that_round_trips(
        tokens in prop::collection::vec(json_token(), 0..80),
    ) {
        check_all_json(tokens.concat().as_bytes())?;
    }

    #[test]
    fn mutated_valid_bodies_are_a_400_422_or_a_value_that_round_trips(
        seed in prop::sample::select(JSON_SEEDS.to_vec()),
        donor in prop::sample::select(JSON_SEEDS.to_vec()),
        mutations in mutations(),
    ) {
        check_all_json(&mutate(seed.as_bytes(), donor.as_bytes(), &mutations))?;
    }
}

#[test]
fn the_json_seeds_are_valid_bodies() {
    let parsed = [
        parse_json::<loaxa::monitor::AgentReport>(JSON_SEEDS[0].as_bytes()).is_ok(),
        parse_json::<loaxa::api::areas::CreateArea>(JSON_SEEDS[1].as_bytes()).is_ok(),
        parse_json::<loaxa::api::broadcasts::CreateBroadcast>(JSON_SEEDS[2].as_bytes()).is_ok(),
        parse_json::<loaxa::api::campaigns::CreateCampaign>(JSON_SEEDS[3].as_bytes()).is_ok(),
        parse_json::<loaxa::api::emergency::CreateEmergency>(JSON_SEEDS[4].as_bytes()).is_ok(),
        parse_json::<loaxa::api::health::TestToneRequest>(JSON_SEEDS[5].as_bytes()).is_ok(),
        parse_json::<serde_json::Value>(JSON_SEEDS[6].as_bytes()).is_ok(),
    ];
    assert_eq!(parsed, [true; 7]);
}

#[test]
fn json_nested_100_000_deep_is_a_400_not_a_stack_overflow() {
    let n = 100_000;
    let arrays = format!("{}{}", "[".repeat(n), "]".repeat(n));
    let objects = format!("{}1{}", r#"{"a":"#.repeat(n), "}".repeat(n));
    let unclosed = "[".repeat(n);
    // Unknown fields of a heartbeat are skipped, not refused: the skipping must not
    // recurse either.
    let in_unknown_field = format!(r#"{{"uptime_s":1,"future":{arrays}}}"#);
    let in_known_field = format!(r#"{{"uptime_s":1,"playing":{arrays}}}"#);
    let in_list = format!(r#"{{"test_tones_played":{arrays}}}"#);
    for (what, body) in [
        ("arrays", &arrays),
        ("objects", &objects),
        ("unclosed", &unclosed),
        ("unknown field", &in_unknown_field),
        ("known field", &in_known_field),
        ("list field", &in_list),
    ] {
        let start = Instant::now();
        let value = parse_json::<serde_json::Value>(body.as_bytes());
        assert!(
            matches!(value, Err(ApiError::BadRequest(_))),
            "{what} as a Value: {value:?}"
        );
        let report = parse_json::<loaxa::monitor::AgentReport>(body.as_bytes());
        if what == "unknown field" {
            assert_eq!(report.map(|r| r.uptime_s).ok(), Some(1), "{what}");
        } else {
            assert!(report.is_err(), "{what} as a heartbeat");
        }
        let campaign = parse_json::<loaxa::api::campaigns::CreateCampaign>(body.as_bytes());
        assert!(campaign.is_err(), "{what} as a campaign");
        assert!(
            start.elapsed() < Duration::from_secs(2),
            "{what}: {:?}",
            start.elapsed()
        );
    }
}

// ---------------------------------------------------------------------------------------
// Uploaded audio: `media::decode`. src/media/fuzz.rs already runs ~300 fixed cases (random
// bytes with no, wav or mp3 hints; one mutation at a time; header fields of every format
// set to extremes, under a 600 s or no limit). These add random bytes under every hint,
// stacked mutations, splices across formats, wrong hints and the default limits.

const DECODE_HINTS: [&str; 5] = ["wav", "mp3", "flac", "ogg", "m4a"];

/// Longest one decode may take before it counts as a hang, as in src/media/fuzz.rs: the
/// inputs are under 40 KB, but the machine is a loaded 2-core one.
const DECODE_HANG: Duration = Duration::from_secs(5);

fn fixture(name: &str) -> Vec<u8> {
    let path = format!("{}/tests/fixtures/{name}", env!("CARGO_MANIFEST_DIR"));
    std::fs::read(&path).unwrap_or_else(|e| panic!("reading {path}: {e}"))
}

/// The small fixtures, and the heads of the long FLAC and Ogg (their headers and first
/// frames), loaded once.
fn decode_seeds() -> &'static HashMap<&'static str, Vec<u8>> {
    static SEEDS: std::sync::OnceLock<HashMap<&'static str, Vec<u8>>> = std::sync::OnceLock::new();
    SEEDS.get_or_init(|| {
        let head = |name: &str| fixture(name)[..16_384].to_vec();
        HashMap::from([
            ("wav", fixture("announce-vi-8k.wav")),
            ("mp3", fixture("announce-vi-vbr-1s.mp3")),
            ("m4a", fixture("announce-vi-1s.m4a")),
            ("flac", head("announce-vi.flac")),
            ("ogg", head("announce-vi.ogg")),
        ])
    })
}

/// Decodes on its own thread so that a hang is seen (and the thread abandoned); checks
/// what callers rely on for every input that decodes.
fn check_decode(data: Vec<u8>, hint: &'static str) -> Result<(), TestCaseError> {
    let (tx, rx) = mpsc::channel();
    let len = data.len();
    std::thread::spawn(move || {
        let _ = tx.send(decode(&data, Some(hint), DecodeLimits::default()));
    });
    match rx.recv_timeout(DECODE_HANG) {
        Ok(Ok(audio)) => {
            prop_assert!(audio.mono.iter().all(|s| (-1.0..=1.0).contains(s)));
            prop_assert!((8_000..=96_000).contains(&audio.sample_rate));
            prop_assert!(audio.channels > 0);
            prop_assert!(!audio.mono.is_empty());
            prop_assert!(audio.duration_ms() <= DecodeLimits::default().max_duration_s * 1000);
        }
        // The decoder's own panic net caught something: still a symphonia bug to report.
        Ok(Err(DecodeError::DecoderFailed(why))) => {
            return Err(TestCaseError::fail(format!(
                "symphonia panicked ({hint}, {len} bytes): {why}"
            )));
        }
        Ok(Err(_)) => {}
        Err(mpsc::RecvTimeoutError::Timeout) => {
            return Err(TestCaseError::fail(format!(
                "decode still running after {DECODE_HANG:?}"
            )));
        }
        Err(mpsc::RecvTimeoutError::Disconnected) => {
            return Err(TestCaseError::fail("decode panicked"));
        }
    }
    Ok(())
}

proptest! {
    #![proptest_config(config(256))]

    #[test]
    fn random_uploads_under_every_extension_are_refused_without_panic(
        data in prop::collection::vec(any::<u8>(), 1..4096),
        hint in prop::sample::select(DECODE_HINTS.to_vec()),
    ) {
        check_decode(data, hint)?;
    }
}

proptest! {
    #![proptest_config(config(512))]


    #[test]
    fn mutated_uploads_decode_within_bounds_or_are_refused(
        seed in prop::sample::select(DECODE_HINTS.to_vec()),
        donor in prop::sample::select(DECODE_HINTS.to_vec()),
        wrong_hint in prop::option::weighted(0.2, prop::sample::select(DECODE_HINTS.to_vec())),
        mutations in mutations(),
    ) {
        let seeds = decode_seeds();
        let data = mutate(&seeds[seed], &seeds[donor], &mutations);
        prop_assume!(!data.is_empty());
        check_decode(data, wrong_hint.unwrap_or(seed))?;
    }
}

// ---------------------------------------------------------------------------------------
// Cron rules (campaign schedules and schedule files).

fn cron_atom() -> impl Strategy<Value = String> {
    prop_oneof![
        4 => (0u32..70).prop_map(|n| n.to_string()),
        2 => Just("*".to_string()),
        1 => prop::sample::select(vec![
            "mon", "SUN", "jan", "Dec", "L", "W", "?", "#", "", "-1", "7", "0", "60", "24",
            "32", "13", "8", "99999999999999999999", "٣", "*/", "1-", "-",
        ])
        .prop_map(str::to_string),
    ]
}

fn cron_field() -> impl Strategy<Value = String> {
    let item = (
        cron_atom(),
        prop::option::weighted(0.3, cron_atom()),
        prop::option::weighted(0.3, cron_atom()),
    )
        .prop_map(|(a, range, step)| {
            let mut s = a;
            if let Some(to) = range {
                s = format!("{s}-{to}");
            }
            if let Some(step) = step {
                s = format!("{s}/{step}");
            }
            s
        });
    prop::collection::vec(item, 1..4).prop_map(|items| items.join(","))
}

fn cron_text() -> impl Strategy<Value = String> {
    prop_oneof![
        6 => (prop::collection::vec(cron_field(), 4..8), prop::sample::select(vec![" ", "  ", "\t", " \n "]))
            .prop_map(|(fields, sep)| fields.join(sep)),
        1 => prop::sample::select(vec![
            "@daily", "@HOURLY", "@reboot", "@", "@weekly ", " @monthly", "@yearly x",
        ])
        .prop_map(str::to_string),
        1 => "\\PC{0,40}",
    ]
}

proptest! {
    #![proptest_config(config(2000))]

    #[test]
    fn cron_rules_parse_into_rules_that_fire_when_they_say(
        text in cron_text(),
        after_s in 946_684_800i64..4_102_444_800, // 2000 to 2100
    ) {
        let Ok(cron) = Cron::parse(&text) else {
            return Ok(());
        };
        prop_assert_eq!(cron.as_str(), text.trim());
        prop_assert_eq!(Cron::parse(cron.as_str()), Ok(cron.clone()));
        let tz = parse_timezone("Asia/Ho_Chi_Minh").expect("a zone");
        let schedule = Schedule::new(vec![cron.clone()], tz, None, None).expect("one rule");
        let after: DateTime<Utc> = Utc.timestamp_opt(after_s, 0).single().expect("in range");
        let start = Instant::now();
        let next = schedule.next_after(after);
        prop_assert!(start.elapsed() < Duration::from_secs(1), "{:?} for `{text}`", start.elapsed());
        if let Some(next) = next {
            prop_assert!(next > after);
            prop_assert!(cron.matches(next.with_timezone(&tz).naive_local()), "`{text}` at {next}");
        }
    }
}
