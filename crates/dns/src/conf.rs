//! resolv.conf, read the way glibc reads it, for the parts that matter to
//! MX and address lookups of fully-qualified names.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::Duration;

/// glibc's limits: at most 3 name servers, timeout at most 30 s, at most 5 attempts.
const MAXNS: usize = 3;
const MAX_TIMEOUT: u64 = 30;
const MAX_ATTEMPTS: usize = 5;

/// What this crate takes from a resolv.conf file.
///
/// Exists so the chrooted smtp client reads the same file format as the
/// system's resolver, and so that reading is tested apart from any I/O.
/// `search`, `domain` and `ndots` are read by nobody: every lookup here is of
/// a fully-qualified name (Postfix resolves with RES_DEFNAMES and RES_DNSRCH
/// off).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResolvConf {
    /// `nameserver` lines, port 53, at most three; `127.0.0.1` if there is
    /// none (glibc's default).
    pub servers: Vec<SocketAddr>,
    /// `options timeout:N` (default 5 s, at most 30 s): per query and server.
    pub timeout: Duration,
    /// `options attempts:N` (default 2, at most 5): tries of each query.
    pub attempts: usize,
    /// `options rotate`: spread queries over the servers instead of
    /// always asking the first.
    pub rotate: bool,
    /// `options use-vc` (or `tcp`): queries over TCP only.
    pub use_tcp: bool,
}

impl Default for ResolvConf {
    /// No server yet; resolv.conf's option defaults (5 s, 2 attempts).
    /// [`parse_resolv_conf`] adds 127.0.0.1 when a file names no server.
    fn default() -> Self {
        Self {
            servers: Vec::new(),
            timeout: Duration::from_secs(5),
            attempts: 2,
            rotate: false,
            use_tcp: false,
        }
    }
}

/// Reads resolv.conf text. Never fails: like glibc, it skips what it does
/// not understand (a malformed address, an unknown option).
pub fn parse_resolv_conf(text: &str) -> ResolvConf {
    let mut conf = ResolvConf::default();
    for line in text.lines() {
        let line = line.trim_start();
        if line.starts_with('#') || line.starts_with(';') {
            continue;
        }
        let mut words = line.split_whitespace();
        match words.next() {
            Some("nameserver") => {
                let Some(addr) = words.next() else { continue };
                // Drop an IPv6 zone (`fe80::1%eth0`): hickory takes plain
                // addresses; link-local name servers are rare on mail hosts.
                let addr = addr.split('%').next().unwrap_or(addr);
                if let Ok(ip) = addr.parse::<IpAddr>()
                    && conf.servers.len() < MAXNS
                {
                    conf.servers.push(SocketAddr::new(ip, 53));
                }
            }
            Some("options") => {
                for option in words {
                    if let Some(n) = option.strip_prefix("timeout:") {
                        if let Ok(n) = n.parse::<u64>() {
                            conf.timeout = Duration::from_secs(n.clamp(1, MAX_TIMEOUT));
                        }
                    } else if let Some(n) = option.strip_prefix("attempts:") {
                        if let Ok(n) = n.parse::<usize>() {
                            conf.attempts = n.clamp(1, MAX_ATTEMPTS);
                        }
                    } else if option == "rotate" {
                        conf.rotate = true;
                    } else if option == "use-vc" || option == "usevc" || option == "tcp" {
                        conf.use_tcp = true;
                    }
                }
            }
            _ => {}
        }
    }
    if conf.servers.is_empty() {
        conf.servers
            .push(SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), 53));
    }
    conf
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn empty_file_is_glibc_defaults() {
        let conf = parse_resolv_conf("");
        assert_eq!(conf.servers, vec!["127.0.0.1:53".parse().unwrap()]);
        assert_eq!(conf.timeout, Duration::from_secs(5));
        assert_eq!(conf.attempts, 2);
        assert!(!conf.rotate && !conf.use_tcp);
    }

    #[test]
    fn nameservers_options_and_ignored_lines() {
        let conf = parse_resolv_conf(
            "# comment\n; also a comment\nsearch example.com corp.example\ndomain example.com\n\
             nameserver 192.0.2.53\nnameserver 2001:db8::53\n   nameserver fe80::1%eth0\n\
             nameserver 192.0.2.54\nnameserver bogus\n\
             options ndots:3 timeout:1 attempts:1 rotate\noptions edns0 use-vc\n",
        );
        assert_eq!(
            conf.servers,
            vec![
                "192.0.2.53:53".parse().unwrap(),
                "[2001:db8::53]:53".parse().unwrap(),
                "[fe80::1]:53".parse().unwrap(),
            ]
        );
        assert_eq!(conf.timeout, Duration::from_secs(1));
        assert_eq!(conf.attempts, 1);
        assert!(conf.rotate && conf.use_tcp);
    }

    #[test]
    fn options_are_clamped() {
        let conf = parse_resolv_conf("nameserver 192.0.2.1\noptions timeout:0 attempts:99\n");
        assert_eq!(conf.timeout, Duration::from_secs(1));
        assert_eq!(conf.attempts, 5);
        let conf = parse_resolv_conf("options timeout:3600 attempts:0 timeout:x\n");
        assert_eq!(conf.timeout, Duration::from_secs(30));
        assert_eq!(conf.attempts, 1);
    }
}
