//! DNS for outbound delivery: which hosts, at which addresses, to try for a
//! domain, per RFC 5321 section 5.1 and Postfix's smtp client.
//!
//! Two halves:
//! - [`select`]: pure code from DNS answers to the ordered host list (MX
//!   preference order, random order among equal preferences, null MX,
//!   implicit MX, `inet_protocols`, `smtp_address_preference`,
//!   `smtp_mx_address_limit`), unit- and property-tested;
//! - [`Resolver`]: a thin async wrapper around hickory-resolver that asks the
//!   questions and feeds the answers to [`select`].
//!
//! Errors say what Postfix says, so its log tools and its users recognise
//! them, and are sorted into permanent ([`DnsError::NotFound`],
//! [`DnsError::NullMx`]: bounce) and temporary ([`DnsError::Temporary`]:
//! defer). What this crate does not do, because the caller knows more: the
//! `smtp_mx_session_limit`, and dropping MX hosts at or below this host's own
//! preference ("mail for X loops back to myself").
#![forbid(unsafe_code)]
#![warn(missing_docs)]

use std::fmt;
use std::net::IpAddr;

mod conf;
mod resolver;
pub mod select;

pub use conf::{ResolvConf, parse_resolv_conf};
pub use resolver::{DEFAULT_RESOLV_CONF, Resolver, ResolverSettings};

/// Which address families to use: Postfix's `inet_protocols`.
///
/// Exists so a host without IPv6 connectivity never asks for or tries AAAA
/// addresses (and the reverse).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum IpFamilies {
    /// `inet_protocols = ipv4`: A records only.
    V4,
    /// `inet_protocols = ipv6`: AAAA records only.
    V6,
    /// `inet_protocols = all` (or `ipv4, ipv6`): both.
    #[default]
    Both,
}

impl IpFamilies {
    /// Parses an `inet_protocols` value (`ipv4`, `ipv6`, `all`, or a list
    /// such as `ipv4, ipv6`); `None` if it names nothing known.
    pub fn from_inet_protocols(value: &str) -> Option<Self> {
        let (mut v4, mut v6) = (false, false);
        for word in value
            .split(|c: char| c == ',' || c.is_whitespace())
            .filter(|w| !w.is_empty())
        {
            match word.to_ascii_lowercase().as_str() {
                "ipv4" => v4 = true,
                "ipv6" => v6 = true,
                "all" => (v4, v6) = (true, true),
                _ => return None,
            }
        }
        match (v4, v6) {
            (true, true) => Some(Self::Both),
            (true, false) => Some(Self::V4),
            (false, true) => Some(Self::V6),
            (false, false) => None,
        }
    }

    /// Whether IPv4 (A records) is in use.
    pub fn v4(self) -> bool {
        matches!(self, Self::V4 | Self::Both)
    }

    /// Whether IPv6 (AAAA records) is in use.
    pub fn v6(self) -> bool {
        matches!(self, Self::V6 | Self::Both)
    }

    /// Whether `addr` is of a family in use.
    pub fn allows(self, addr: IpAddr) -> bool {
        match addr {
            IpAddr::V4(_) => self.v4(),
            IpAddr::V6(_) => self.v6(),
        }
    }
}

/// Which family a host's addresses are tried in first: Postfix's
/// `smtp_address_preference`.
///
/// Exists because sites with poor IPv6 (or IPv4) routes want the other
/// family first, and the default spreads load randomly.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum AddressPreference {
    /// `any` (Postfix's default): a random family first, chosen per lookup.
    #[default]
    Any,
    /// `ipv4`: IPv4 addresses first.
    V4,
    /// `ipv6`: IPv6 addresses first.
    V6,
}

impl AddressPreference {
    /// Parses an `smtp_address_preference` value (`any`, `ipv4`, `ipv6`).
    pub fn from_postfix(value: &str) -> Option<Self> {
        match value.trim().to_ascii_lowercase().as_str() {
            "any" => Some(Self::Any),
            "ipv4" => Some(Self::V4),
            "ipv6" => Some(Self::V6),
            _ => None,
        }
    }
}

/// How to turn a destination into addresses.
///
/// Exists to carry the main.cf parameters that shape the host list.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Options {
    /// `inet_protocols`: which address types to ask for and keep.
    pub families: IpFamilies,
    /// `smtp_address_preference`: which family goes first within a host.
    pub prefer: AddressPreference,
    /// `smtp_mx_address_limit` (Postfix default 5): the most addresses
    /// returned in all, over every host; 0 = no limit.
    pub address_limit: usize,
    /// `smtp_balance_inet_protocols` (Postfix default yes): when the
    /// destination has both IPv4 and IPv6 addresses and the limit would cut
    /// one family out, reserve up to half of the slots for each.
    pub balance_families: bool,
}

impl Default for Options {
    /// Postfix's defaults: `all`, `any`, 5, yes.
    fn default() -> Self {
        Self {
            families: IpFamilies::Both,
            prefer: AddressPreference::Any,
            address_limit: 5,
            balance_families: true,
        }
    }
}

/// One host to try, with its addresses in the order to try them.
///
/// Exists so the delivery agent can log `name[addr]`, match TLS names
/// against `name`, and count sessions per host.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Host {
    /// The host name: an MX exchange, or the domain itself for the implicit
    /// MX; lower case, without the trailing dot.
    pub name: String,
    /// The MX preference (0 for the implicit MX and for `host_addrs`).
    pub preference: u16,
    /// At least one address; none repeated across the list.
    pub addrs: Vec<IpAddr>,
}

/// Why a destination has no usable address.
///
/// Exists to split DNS outcomes into bounce (permanent) and defer
/// (temporary), with the text Postfix would log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DnsError {
    /// RFC 7505 null MX: the domain accepts no mail. Permanent.
    /// `Domain example.com does not accept mail (nullMX)`.
    NullMx(String),
    /// The name does not exist, or no host has an address and no lookup
    /// failed temporarily. Permanent. `Host or domain name not found. Name
    /// service error for name=example.invalid type=MX: Host not found`.
    NotFound(String),
    /// SERVFAIL, timeout, refused, network error: try again later. `Host or
    /// domain name not found. Name service error for name=x type=MX: Host
    /// not found, try again`.
    Temporary(String),
}

impl DnsError {
    /// Whether the message should be deferred rather than bounced.
    pub fn is_temporary(&self) -> bool {
        matches!(self, Self::Temporary(_))
    }

    /// The text to log and put in the DSN, in Postfix's words.
    pub fn message(&self) -> &str {
        match self {
            Self::NullMx(m) | Self::NotFound(m) | Self::Temporary(m) => m,
        }
    }

    /// The RFC 3463 status code Postfix's smtp client uses for this error:
    /// `5.1.0` for a null MX (Postfix's smtp client; its smtpd rejects
    /// with RFC 7505's `5.1.10`), `5.4.4` for host not found (unable to
    /// route), `4.4.3` for a temporary name service failure.
    pub fn dsn_status(&self) -> &'static str {
        match self {
            Self::NullMx(_) => "5.1.0",
            Self::NotFound(_) => "5.4.4",
            Self::Temporary(_) => "4.4.3",
        }
    }
}

impl fmt::Display for DnsError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.message())
    }
}

impl std::error::Error for DnsError {}

/// An IP address literal as a `[host]` nexthop spells it: `192.0.2.1`,
/// `2001:db8::1`, `ipv6:2001:db8::1`, any of them optionally in brackets.
///
/// Exists so literal nexthops never cause a DNS query.
pub fn parse_ip_literal(text: &str) -> Option<IpAddr> {
    let text = text.trim();
    let text = text
        .strip_prefix('[')
        .and_then(|t| t.strip_suffix(']'))
        .unwrap_or(text);
    let text = match text.get(..5) {
        Some(prefix) if prefix.eq_ignore_ascii_case("ipv6:") => {
            let v6 = &text[5..];
            return v6.parse::<std::net::Ipv6Addr>().ok().map(IpAddr::V6);
        }
        _ => text,
    };
    text.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn inet_protocols() {
        assert_eq!(
            IpFamilies::from_inet_protocols("all"),
            Some(IpFamilies::Both)
        );
        assert_eq!(
            IpFamilies::from_inet_protocols("ipv4"),
            Some(IpFamilies::V4)
        );
        assert_eq!(
            IpFamilies::from_inet_protocols(" IPv6 "),
            Some(IpFamilies::V6)
        );
        assert_eq!(
            IpFamilies::from_inet_protocols("ipv4, ipv6"),
            Some(IpFamilies::Both)
        );
        assert_eq!(IpFamilies::from_inet_protocols(""), None);
        assert_eq!(IpFamilies::from_inet_protocols("ipx"), None);
        assert_eq!(
            AddressPreference::from_postfix("IPv6"),
            Some(AddressPreference::V6)
        );
        assert_eq!(AddressPreference::from_postfix("both"), None);
    }

    #[test]
    fn ip_literals() {
        let v4: IpAddr = "192.0.2.1".parse().unwrap();
        let v6: IpAddr = "2001:db8::1".parse().unwrap();
        assert_eq!(parse_ip_literal("192.0.2.1"), Some(v4));
        assert_eq!(parse_ip_literal("[192.0.2.1]"), Some(v4));
        assert_eq!(parse_ip_literal("2001:db8::1"), Some(v6));
        assert_eq!(parse_ip_literal("IPv6:2001:db8::1"), Some(v6));
        assert_eq!(parse_ip_literal("[ipv6:2001:db8::1]"), Some(v6));
        assert_eq!(parse_ip_literal("ipv6:192.0.2.1"), None);
        assert_eq!(parse_ip_literal("mx.example.com"), None);
        assert_eq!(parse_ip_literal("ipv6"), None);
    }

    #[test]
    fn errors_classify() {
        assert!(DnsError::Temporary("x".into()).is_temporary());
        assert!(!DnsError::NotFound("x".into()).is_temporary());
        assert_eq!(DnsError::NullMx("x".into()).dsn_status(), "5.1.0");
        assert_eq!(DnsError::NotFound("why".into()).to_string(), "why");
    }
}
