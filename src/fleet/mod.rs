//! The fleet's domain types: area codes, cluster endpoints, names. Each parses and
//! validates once at the edge; past that, values are known good. No I/O here.

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
}

/// The endpoint as it arrives in JSON, before validation.
#[derive(Debug, Clone, Deserialize, Serialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct EndpointSpec {
    /// `unicast` (more modes come with the playout engine).
    pub mode: String,
    /// For `unicast`: the receiver's `IP:PORT`; RTCP goes to PORT+1.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub address: Option<String>,
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
            "multicast" | "registered" => Err((
                "endpoint.mode",
                Invalid(format!("`{}` endpoints are not supported yet", spec.mode)),
            )),
            other => Err((
                "endpoint.mode",
                Invalid(format!("`{other}` is not one of: unicast")),
            )),
        }
    }

    pub fn to_spec(self) -> EndpointSpec {
        match self {
            Endpoint::Unicast { address } => EndpointSpec {
                mode: "unicast".into(),
                address: Some(address.to_string()),
            },
        }
    }

    /// Where RTP packets go.
    pub fn rtp_destination(self) -> SocketAddr {
        match self {
            Endpoint::Unicast { address } => address,
        }
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
        })
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
    fn an_unknown_mode_is_named() {
        let (field, why) = Endpoint::parse(&EndpointSpec {
            mode: "carrier-pigeon".into(),
            address: None,
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
