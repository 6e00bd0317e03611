//! The next hop qmgr hands over, as Postfix writes it: `domain` (MX
//! lookup), `domain:port`, `[host]` or `[host]:port` (no MX lookup: the
//! host's own addresses), an IP literal in brackets. Pure code.

/// Where to connect for one delivery request.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Nexthop {
    /// The domain or host name (lower-cased), or the IP literal's text.
    pub host: String,
    /// Look up MX records for `host` (false for `[host]`).
    pub mx: bool,
    /// The TCP port.
    pub port: u16,
    /// LMTP over a Unix socket: `unix:/path` (then `host` is the path).
    pub unix: Option<std::path::PathBuf>,
}

/// Why a next hop cannot be used (a configuration error: the mail is
/// deferred and the log says why).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BadNexthop(pub String);

/// Parses a next hop; `default_port` is 25 for SMTP (24 for LMTP). A
/// leading `smtp:` or `lmtp:` transport name (transport_maps style) is
/// ignored.
pub fn parse(text: &str, default_port: u16) -> Result<Nexthop, BadNexthop> {
    let bad = || BadNexthop(format!("bad next-hop destination {text:?}"));
    let t = text.trim();
    let t = t
        .strip_prefix("smtp:")
        .or_else(|| t.strip_prefix("lmtp:"))
        .unwrap_or(t);
    if let Some(path) = t.strip_prefix("unix:") {
        if path.is_empty() || path.contains('\0') {
            return Err(bad());
        }
        return Ok(Nexthop {
            host: path.to_string(),
            mx: false,
            port: 0,
            unix: Some(std::path::PathBuf::from(path)),
        });
    }
    let t = t.strip_prefix("inet:").unwrap_or(t);
    if t.is_empty() || t.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err(bad());
    }
    let (host, mx, rest) = if let Some(inner) = t.strip_prefix('[') {
        let end = inner.find(']').ok_or_else(bad)?;
        (&inner[..end], false, &inner[end + 1..])
    } else {
        match t.rsplit_once(':') {
            // An IPv6 address without brackets has several colons: no port.
            Some((h, _)) if !h.contains(':') => (h, true, &t[h.len()..]),
            _ => (t, true, ""),
        }
    };
    let port = match rest {
        "" => default_port,
        r => r
            .strip_prefix(':')
            .and_then(|p| p.parse::<u16>().ok())
            .filter(|&p| p != 0)
            .ok_or_else(bad)?,
    };
    if host.is_empty() {
        return Err(bad());
    }
    Ok(Nexthop {
        host: host.trim_end_matches('.').to_ascii_lowercase(),
        mx,
        port,
        unix: None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn nh(host: &str, mx: bool, port: u16) -> Nexthop {
        Nexthop {
            host: host.into(),
            mx,
            port,
            unix: None,
        }
    }

    #[test]
    fn postfix_forms() {
        assert_eq!(parse("Example.COM", 25), Ok(nh("example.com", true, 25)));
        assert_eq!(
            parse("example.com:587", 25),
            Ok(nh("example.com", true, 587))
        );
        assert_eq!(
            parse("[mx.example.com]", 25),
            Ok(nh("mx.example.com", false, 25))
        );
        assert_eq!(
            parse("[relay.example]:2525", 25),
            Ok(nh("relay.example", false, 2525))
        );
        assert_eq!(parse("[192.0.2.1]", 25), Ok(nh("192.0.2.1", false, 25)));
        assert_eq!(
            parse("[2001:db8::1]:26", 25),
            Ok(nh("2001:db8::1", false, 26))
        );
        assert_eq!(
            parse("smtp:[10.0.0.1]:2525", 25),
            Ok(nh("10.0.0.1", false, 2525))
        );
        assert_eq!(
            parse("lmtp:inet:localhost:24", 25),
            Ok(nh("localhost", true, 24))
        );
        assert_eq!(parse("example.com.", 25), Ok(nh("example.com", true, 25)));
        let unix = parse("lmtp:unix:/run/dovecot/lmtp", 24).unwrap();
        assert_eq!(
            unix.unix.as_deref(),
            Some(std::path::Path::new("/run/dovecot/lmtp"))
        );
        assert!(!unix.mx);
    }

    #[test]
    fn nonsense_is_refused() {
        for bad in [
            "", "[x", "[]", "a b", "x:0", "x:99999", "x:y", "[h]junk", ":25",
        ] {
            assert!(parse(bad, 25).is_err(), "{bad:?}");
        }
    }
}
