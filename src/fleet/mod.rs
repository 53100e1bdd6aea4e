//! The fleet's domain types: area codes, cluster endpoints, names. Each parses and
//! validates once at the edge; past that, values are known good. No I/O here.

pub mod health;

use std::fmt;
use std::net::{IpAddr, SocketAddr};

use serde::{Deserialize, Serialize};

/// A value from a request that is not acceptable, with the reason.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct Invalid(pub String);

/// An area's code: what operators type and CAP geocodes carry (e.g. `xa-vinh-hoa`).
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize, PartialOrd, Ord)]
#[serde(transparent)]
pub struct AreaCode(String);

impl AreaCode {
    /// 1 to 64 characters of lowercase ASCII letters, digits, `-`, `_` and `.`: codes appear
    /// in URLs, file names and CAP geocodes, so they stay plain.
    pub fn parse(s: &str) -> Result<Self, Invalid> {
        if s.is_empty() || s.len() > 64 {
            return Err(Invalid("must be 1 to 64 characters".into()));
        }
        if !s
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || "-_.".contains(c))
        {
            return Err(Invalid(format!(
                "`{s}` may only contain lowercase a-z, 0-9, `-`, `_` and `.`"
            )));
        }
        Ok(Self(s.to_string()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for AreaCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A human name (area, cluster, audio title): trimmed, 1 to `max` characters, no control
/// characters (they would break SDP and CSV output).
pub fn parse_name(s: &str, max: usize) -> Result<String, Invalid> {
    let s = s.trim();
    if s.is_empty() {
        return Err(Invalid("must not be empty".into()));
    }
    if s.chars().count() > max {
        return Err(Invalid(format!("must be at most {max} characters")));
    }
    if s.chars().any(char::is_control) {
        return Err(Invalid("must not contain control characters".into()));
    }
    Ok(s.to_string())
}

/// Where a cluster's stream goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Endpoint {
    /// Straight to one receiver's address.
    Unicast { address: SocketAddr },
    /// To a multicast group every speaker of the cluster has joined: one datagram per
    /// packet whatever the number of speakers.
    Multicast { group: SocketAddr, ttl: u8 },
    /// Behind NAT: to wherever the cluster's authenticated keepalives come from
    /// (symmetric RTP), with RTCP multiplexed on the same port.
    Registered,
}

/// TTL of multicast streams when none is given: the local subnet only, so a stream never
/// leaks across routers unless someone decided it should.
pub const DEFAULT_MULTICAST_TTL: u8 = 1;

/// The endpoint as it arrives in JSON, before validation.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct EndpointSpec {
    /// `unicast`, `multicast`, or `registered` (behind NAT: the stream goes where the
    /// cluster's agent sends its keepalives from).
    pub mode: String,
    /// For `unicast`: the receiver's `IP:PORT`; RTCP goes to PORT+1.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub address: Option<String>,
    /// For `multicast`: the group's `IP:PORT` (IPv4, 224.0.1.0-239.255.255.255).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub group: Option<String>,
    /// For `multicast`: hops the stream may cross, 1-255 (default 1).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ttl: Option<u32>,
}

impl Endpoint {
    pub fn parse(spec: &EndpointSpec) -> Result<Self, (&'static str, Invalid)> {
        match spec.mode.as_str() {
            "unicast" => {
                let raw = spec.address.as_deref().ok_or((
                    "endpoint.address",
                    Invalid("is required for unicast".into()),
                ))?;
                let address: SocketAddr = raw.parse().map_err(|_| {
                    (
                        "endpoint.address",
                        Invalid(format!("`{raw}` is not an IP:PORT address")),
                    )
                })?;
                check_unicast(address).map_err(|e| ("endpoint.address", e))?;
                Ok(Endpoint::Unicast { address })
            }
            "multicast" => {
                let raw = spec.group.as_deref().ok_or((
                    "endpoint.group",
                    Invalid("is required for multicast".into()),
                ))?;
                let group: SocketAddr = raw.parse().map_err(|_| {
                    (
                        "endpoint.group",
                        Invalid(format!("`{raw}` is not an IP:PORT address")),
                    )
                })?;
                check_multicast(group).map_err(|e| ("endpoint.group", e))?;
                let ttl = match spec.ttl {
                    None => DEFAULT_MULTICAST_TTL,
                    Some(t @ 1..=255) => t as u8,
                    Some(t) => {
                        return Err((
                            "endpoint.ttl",
                            Invalid(format!("{t} is not between 1 and 255")),
                        ));
                    }
                };
                Ok(Endpoint::Multicast { group, ttl })
            }
            "registered" => {
                if let Some(field) = [
                    ("endpoint.address", spec.address.is_some()),
                    ("endpoint.group", spec.group.is_some()),
                    ("endpoint.ttl", spec.ttl.is_some()),
                ]
                .iter()
                .find_map(|(f, set)| set.then_some(*f))
                {
                    return Err((
                        field,
                        Invalid("must not be set: a registered cluster's address is learned from its keepalives".into()),
                    ));
                }
                Ok(Endpoint::Registered)
            }
            other => Err((
                "endpoint.mode",
                Invalid(format!(
                    "`{other}` is not one of: unicast, multicast, registered"
                )),
            )),
        }
    }

    pub fn to_spec(self) -> EndpointSpec {
        match self {
            Endpoint::Unicast { address } => EndpointSpec {
                mode: "unicast".into(),
                address: Some(address.to_string()),
                group: None,
                ttl: None,
            },
            Endpoint::Multicast { group, ttl } => EndpointSpec {
                mode: "multicast".into(),
                address: None,
                group: Some(group.to_string()),
                ttl: Some(u32::from(ttl)),
            },
            Endpoint::Registered => EndpointSpec {
                mode: "registered".into(),
                address: None,
                group: None,
                ttl: None,
            },
        }
    }

    /// Where RTP packets go, when it is configured rather than learned.
    pub fn rtp_destination(self) -> Option<SocketAddr> {
        match self {
            Endpoint::Unicast { address } => Some(address),
            Endpoint::Multicast { group, .. } => Some(group),
            Endpoint::Registered => None,
        }
    }

    /// The TTL of a multicast stream; `None` otherwise.
    pub fn multicast_ttl(self) -> Option<u8> {
        match self {
            Endpoint::Multicast { ttl, .. } => Some(ttl),
            Endpoint::Unicast { .. } | Endpoint::Registered => None,
        }
    }
}

fn check_multicast(group: SocketAddr) -> Result<(), Invalid> {
    if group.port() == 0 || group.port() == u16::MAX {
        return Err(Invalid("port must be between 1 and 65534".into()));
    }
    match group.ip() {
        // 224.0.0.0/24 is reserved for routing protocols on the local link.
        IpAddr::V4(ip) if ip.is_multicast() && ip.octets()[..3] != [224, 0, 0] => Ok(()),
        IpAddr::V4(ip) => Err(Invalid(format!(
            "{ip} is not a multicast group (224.0.1.0-239.255.255.255)"
        ))),
        IpAddr::V6(_) => Err(Invalid("IPv6 groups are not supported yet".into())),
    }
}

fn check_unicast(address: SocketAddr) -> Result<(), Invalid> {
    if address.port() == 0 || address.port() == u16::MAX {
        // RTCP needs port + 1.
        return Err(Invalid("port must be between 1 and 65534".into()));
    }
    match address.ip() {
        IpAddr::V4(ip) => {
            if ip.is_unspecified() || ip.is_broadcast() || ip.is_multicast() {
                return Err(Invalid(format!(
                    "{ip} is not a unicast address (multicast groups use mode `multicast`)"
                )));
            }
            Ok(())
        }
        IpAddr::V6(_) => Err(Invalid("IPv6 endpoints are not supported yet".into())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn unicast(addr: &str) -> Result<Endpoint, (&'static str, Invalid)> {
        Endpoint::parse(&EndpointSpec {
            mode: "unicast".into(),
            address: Some(addr.into()),
            group: None,
            ttl: None,
        })
    }

    fn multicast(group: &str, ttl: Option<u32>) -> Result<Endpoint, (&'static str, Invalid)> {
        Endpoint::parse(&EndpointSpec {
            mode: "multicast".into(),
            address: None,
            group: Some(group.into()),
            ttl,
        })
    }

    #[test]
    fn a_multicast_endpoint_needs_a_group_and_a_sane_ttl() {
        assert_eq!(
            multicast("239.1.2.3:5004", None).unwrap(),
            Endpoint::Multicast {
                group: "239.1.2.3:5004".parse().unwrap(),
                ttl: 1
            }
        );
        assert_eq!(
            multicast("239.1.2.3:5004", Some(16))
                .unwrap()
                .multicast_ttl(),
            Some(16)
        );
        for (group, ttl, field) in [
            ("10.0.0.1:5004", None, "endpoint.group"),
            ("224.0.0.5:5004", None, "endpoint.group"),
            ("239.1.2.3", None, "endpoint.group"),
            ("239.1.2.3:0", None, "endpoint.group"),
            ("239.1.2.3:5004", Some(0), "endpoint.ttl"),
            ("239.1.2.3:5004", Some(256), "endpoint.ttl"),
        ] {
            assert_eq!(
                multicast(group, ttl).unwrap_err().0,
                field,
                "{group} {ttl:?}"
            );
        }
        let spec = multicast("239.1.2.3:5004", Some(4)).unwrap().to_spec();
        assert_eq!(Endpoint::parse(&spec).unwrap().multicast_ttl(), Some(4));
    }

    #[test]
    fn area_codes_are_plain_lowercase() {
        assert!(AreaCode::parse("xa-vinh-hoa").is_ok());
        assert!(AreaCode::parse("HN").is_err());
        assert!(AreaCode::parse("").is_err());
        assert!(AreaCode::parse("a/b").is_err());
        assert!(AreaCode::parse(&"a".repeat(65)).is_err());
    }

    #[test]
    fn a_unicast_endpoint_needs_a_real_ip_and_port() {
        assert!(unicast("127.0.0.1:5004").is_ok());
        for bad in [
            "localhost:5004",
            "127.0.0.1",
            "127.0.0.1:0",
            "0.0.0.0:5004",
            "239.1.1.1:5004",
            "127.0.0.1:65535",
            "300.1.1.1:5004",
        ] {
            let (field, _) = unicast(bad).unwrap_err();
            assert_eq!(field, "endpoint.address", "{bad}");
        }
    }

    #[test]
    fn a_registered_endpoint_takes_no_address_of_its_own() {
        let spec = |address: Option<&str>| EndpointSpec {
            mode: "registered".into(),
            address: address.map(Into::into),
            group: None,
            ttl: None,
        };
        let endpoint = Endpoint::parse(&spec(None)).unwrap();
        assert_eq!(endpoint, Endpoint::Registered);
        assert_eq!(endpoint.rtp_destination(), None);
        assert_eq!(Endpoint::parse(&endpoint.to_spec()).unwrap(), endpoint);
        let (field, _) = Endpoint::parse(&spec(Some("10.0.0.1:5004"))).unwrap_err();
        assert_eq!(field, "endpoint.address");
    }

    #[test]
    fn an_unknown_mode_is_named() {
        let (field, why) = Endpoint::parse(&EndpointSpec {
            mode: "carrier-pigeon".into(),
            address: None,
            group: None,
            ttl: None,
        })
        .unwrap_err();
        assert_eq!(field, "endpoint.mode");
        assert!(why.0.contains("carrier-pigeon"));
    }

    #[test]
    fn names_are_trimmed_and_bounded() {
        assert_eq!(parse_name("  Thôn Đông  ", 10).unwrap(), "Thôn Đông");
        assert!(parse_name("   ", 10).is_err());
        assert!(parse_name("a\nb", 10).is_err());
        assert!(parse_name("ấp ấp ấp ấp", 5).is_err());
    }
}
