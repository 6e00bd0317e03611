//! mynetworks-style lists of addresses and networks.
//!
//! Accepted forms: `192.0.2.1`, `192.0.2.0/24`, `[::1]`, `[2001:db8::]/32`,
//! `2001:db8::/32`, `!pattern` (exclusion, first match wins) and
//! `/path/to/file` (more patterns read from that file, '#' comments).
//! A network with host bits set (`192.0.2.1/24`) is refused, as Postfix does,
//! because it is almost always a typo.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

/// One network: address with host bits cleared + prefix length.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Cidr {
    addr: IpAddr,
    prefix: u8,
}

impl Cidr {
    /// Parses "addr", "addr/len", "[v6]", "[v6]/len".
    pub(crate) fn parse(s: &str) -> Result<Cidr, String> {
        let (addr_part, len_part) = match s.rsplit_once('/') {
            Some((a, l)) => (a, Some(l)),
            None => (s, None),
        };
        let addr_text = addr_part
            .strip_prefix('[')
            .and_then(|a| a.strip_suffix(']'))
            .unwrap_or(addr_part);
        let addr: IpAddr = addr_text
            .parse()
            .map_err(|_| format!("\"{s}\": not an IP address"))?;
        let max = if addr.is_ipv4() { 32 } else { 128 };
        let prefix = match len_part {
            None => max,
            Some(l) => match l.parse::<u8>() {
                Ok(n) if n <= max => n,
                _ => return Err(format!("\"{s}\": bad prefix length \"{l}\"")),
            },
        };
        let cidr = Cidr {
            addr: mask(addr, prefix),
            prefix,
        };
        if cidr.addr != addr {
            return Err(format!(
                "\"{s}\": non-null host address bits (did you mean {}/{}?)",
                cidr.addr, prefix
            ));
        }
        Ok(cidr)
    }

    /// True when `ip` is inside this network (IPv4-mapped IPv6 matches IPv4).
    pub(crate) fn contains(&self, ip: IpAddr) -> bool {
        let ip = normalize(ip);
        if ip.is_ipv4() != self.addr.is_ipv4() {
            return false;
        }
        mask(ip, self.prefix) == self.addr
    }
}

/// Maps ::ffff:a.b.c.d to a.b.c.d so IPv4 clients on a dual-stack socket match IPv4 networks.
fn normalize(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6
            .to_ipv4_mapped()
            .map(IpAddr::V4)
            .unwrap_or(IpAddr::V6(v6)),
        v4 => v4,
    }
}

fn mask(ip: IpAddr, prefix: u8) -> IpAddr {
    match ip {
        IpAddr::V4(v4) => {
            let bits = u32::from(v4);
            let m = if prefix == 0 {
                0
            } else {
                u32::MAX << (32 - u32::from(prefix))
            };
            IpAddr::V4(Ipv4Addr::from(bits & m))
        }
        IpAddr::V6(v6) => {
            let bits = u128::from(v6);
            let m = if prefix == 0 {
                0
            } else {
                u128::MAX << (128 - u32::from(prefix))
            };
            IpAddr::V6(Ipv6Addr::from(bits & m))
        }
    }
}

/// mynetworks-style address lists: "127.0.0.0/8 [::1]/128 192.0.2.1 [2001:db8::]/32", comma/space separated.
///
/// smtpd uses it to decide which clients may relay; it is a plain ordered list
/// of (negated?, network) checked first-match-wins.
#[derive(Clone, Debug, Default)]
pub struct NetworkList {
    entries: Vec<(bool, Cidr)>,
}

impl NetworkList {
    /// Parses the items (each may itself hold several comma/space separated patterns).
    pub fn parse(items: &[String]) -> Result<NetworkList, String> {
        let mut out = NetworkList::default();
        for item in items {
            for word in item
                .split(|c: char| c == ',' || c.is_whitespace())
                .filter(|w| !w.is_empty())
            {
                out.add(word, 0)?;
            }
        }
        Ok(out)
    }

    fn add(&mut self, word: &str, depth: usize) -> Result<(), String> {
        let (neg, pat) = match word.strip_prefix('!') {
            Some(p) => (true, p),
            None => (false, word),
        };
        if pat.starts_with('/') {
            if neg {
                return Err(format!("\"{word}\": a file name cannot be negated"));
            }
            if depth > 10 {
                return Err(format!("\"{word}\": files nested too deeply"));
            }
            let text = std::fs::read_to_string(pat).map_err(|e| format!("{pat}: {e}"))?;
            for line in text.lines() {
                let line = line.split('#').next().unwrap_or("");
                for w in line
                    .split(|c: char| c == ',' || c.is_whitespace())
                    .filter(|w| !w.is_empty())
                {
                    self.add(w, depth + 1).map_err(|e| format!("{pat}: {e}"))?;
                }
            }
            return Ok(());
        }
        if pat.contains(':')
            && !pat.starts_with('[')
            && pat.parse::<IpAddr>().is_err()
            && Cidr::parse(pat).is_err()
        {
            return Err(format!(
                "\"{word}\": lookup tables are not supported in network lists"
            ));
        }
        self.entries.push((neg, Cidr::parse(pat)?));
        Ok(())
    }

    /// True if `ip` matches the list (first matching entry decides; `!` excludes).
    pub fn contains(&self, ip: std::net::IpAddr) -> bool {
        for (neg, c) in &self.entries {
            if c.contains(ip) {
                return !neg;
            }
        }
        false
    }

    /// True when the list has no entries (nothing matches).
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn matches_v4_v6_and_mapped() {
        let l = NetworkList::parse(&[
            "127.0.0.0/8 [::1]/128, 192.0.2.1".into(),
            "[2001:db8::]/32".into(),
        ])
        .unwrap();
        assert!(l.contains(ip("127.1.2.3")));
        assert!(l.contains(ip("::1")));
        assert!(l.contains(ip("192.0.2.1")));
        assert!(!l.contains(ip("192.0.2.2")));
        assert!(l.contains(ip("2001:db8:ffff::1")));
        assert!(!l.contains(ip("2001:db9::1")));
        assert!(l.contains(ip("::ffff:127.0.0.1")));
        assert!(!l.contains(ip("10.0.0.1")));
    }

    #[test]
    fn negation_first_match_wins_and_zero_prefix() {
        let l = NetworkList::parse(&["!192.0.2.66 192.0.2.0/24 0.0.0.0/0".into()]).unwrap();
        assert!(!l.contains(ip("192.0.2.66")));
        assert!(l.contains(ip("192.0.2.67")));
        assert!(l.contains(ip("8.8.8.8")));
        assert!(!l.contains(ip("::2")));
        assert!(NetworkList::parse(&[]).unwrap().is_empty());
    }

    #[test]
    fn rejects_bad_entries() {
        for bad in [
            "192.0.2.1/24",
            "300.1.1.1",
            "10.0.0.0/33",
            "[::1]/129",
            "hash:/etc/nets",
            "host.example",
            "1.2.3.4/x",
            "!/etc/x",
        ] {
            assert!(NetworkList::parse(&[bad.to_string()]).is_err(), "{bad}");
        }
    }

    #[test]
    fn reads_pattern_files() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("nets");
        std::fs::write(&f, "# trusted\n10.1.0.0/16 # office\n[2001:db8::]/48\n").unwrap();
        let l = NetworkList::parse(&[f.display().to_string()]).unwrap();
        assert!(l.contains(ip("10.1.9.9")));
        assert!(l.contains(ip("2001:db8::5")));
        assert!(!l.contains(ip("10.2.0.1")));
        std::fs::write(&f, "10.1.0.1/16\n").unwrap();
        assert!(
            NetworkList::parse(&[f.display().to_string()])
                .unwrap_err()
                .contains("host address bits")
        );
    }
}
