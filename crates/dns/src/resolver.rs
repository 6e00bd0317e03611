//! The I/O half: asks hickory-resolver the questions, hands the answers to
//! [`crate::select`].

use std::collections::{HashMap, HashSet};
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::path::Path;
use std::time::Duration;

use hickory_resolver::TokioResolver;
use hickory_resolver::config::{
    ConnectionConfig, NameServerConfig, ResolveHosts, ResolverConfig, ResolverOpts,
    ServerOrderingStrategy,
};
use hickory_resolver::lookup::Lookup;
use hickory_resolver::net::runtime::TokioRuntimeProvider;
use hickory_resolver::net::{DnsError as HickoryDnsError, NetError};
use hickory_resolver::proto::op::ResponseCode;
use hickory_resolver::proto::rr::{Name, RData, RecordType};

use crate::conf::{ResolvConf, parse_resolv_conf};
use crate::select::{self, AddrAnswers, Answer, Failure, Mx, name_service_error, normalize};
use crate::{DnsError, Host, Options, parse_ip_literal};

/// Where the system's resolver configuration lives (inside the smtp
/// client's chroot, the copy the jail holds at the same path).
pub const DEFAULT_RESOLV_CONF: &str = "/etc/resolv.conf";

/// How many MX names are resolved at once: enough to hide latency, few
/// enough that a domain publishing hundreds of MX records cannot flood the
/// name server (hickory allows 32 requests in flight per connection).
const CONCURRENT_NAMES: usize = 8;

/// Timeouts for a resolver built from explicit servers.
///
/// Exists so tests can make a dead name server fail in a second instead of
/// the resolv.conf default of 2 × 5 s.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ResolverSettings {
    /// How long to wait for one answer from one server.
    pub timeout: Duration,
    /// How many times each query is sent before giving up (at least 1).
    pub attempts: usize,
}

impl Default for ResolverSettings {
    /// resolv.conf's defaults: 5 s, 2 attempts.
    fn default() -> Self {
        Self {
            timeout: Duration::from_secs(5),
            attempts: 2,
        }
    }
}

/// The name service client of the smtp delivery agent.
///
/// Exists to answer "which hosts, at which addresses" for a domain (MX) or a
/// `[host]` nexthop, with DNS only (never /etc/hosts, as Postfix's default
/// `smtp_host_lookup = dns`), fully-qualified names only (no search list),
/// and errors sorted into bounce and defer. Cheap to clone; use it from a
/// tokio runtime.
#[derive(Clone)]
pub struct Resolver {
    inner: TokioResolver,
}

impl std::fmt::Debug for Resolver {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Resolver").finish_non_exhaustive()
    }
}

impl Resolver {
    /// A resolver configured by a resolv.conf file (`nameserver`, `options
    /// timeout:N attempts:N rotate use-vc`); see [`parse_resolv_conf`].
    /// Pass [`DEFAULT_RESOLV_CONF`] for the system's.
    pub fn from_resolv_conf(path: impl AsRef<Path>) -> io::Result<Self> {
        let path = path.as_ref();
        let text = std::fs::read_to_string(path)
            .map_err(|e| io::Error::new(e.kind(), format!("{}: {e}", path.display())))?;
        Self::from_conf(&parse_resolv_conf(&text))
    }

    /// A resolver asking `servers` (any port: tests run servers on
    /// `127.0.0.1:<port>`), UDP then TCP, with the default timeouts.
    pub fn with_servers(servers: &[SocketAddr]) -> io::Result<Self> {
        Self::with_settings(servers, ResolverSettings::default())
    }

    /// A resolver asking `servers` with the given timeouts.
    pub fn with_settings(servers: &[SocketAddr], settings: ResolverSettings) -> io::Result<Self> {
        Self::from_conf(&ResolvConf {
            servers: servers.to_vec(),
            timeout: settings.timeout,
            attempts: settings.attempts,
            ..ResolvConf::default()
        })
    }

    /// A resolver from a parsed resolv.conf.
    pub fn from_conf(conf: &ResolvConf) -> io::Result<Self> {
        if conf.servers.is_empty() {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "no name server to ask",
            ));
        }
        let servers = conf
            .servers
            .iter()
            .map(|server| {
                let mut tcp = ConnectionConfig::tcp();
                tcp.port = server.port();
                let connections = if conf.use_tcp {
                    vec![tcp]
                } else {
                    let mut udp = ConnectionConfig::udp();
                    udp.port = server.port();
                    vec![udp, tcp]
                };
                NameServerConfig::new(server.ip(), true, connections)
            })
            .collect();
        let config = ResolverConfig::from_parts(None, Vec::new(), servers);
        let mut options = ResolverOpts::default();
        options.timeout = conf.timeout;
        // hickory counts retries after the first try; resolv.conf counts tries.
        options.attempts = conf.attempts.max(1) - 1;
        options.use_hosts_file = ResolveHosts::Never;
        options.server_ordering_strategy = if conf.rotate {
            ServerOrderingStrategy::RoundRobin
        } else {
            ServerOrderingStrategy::UserProvidedOrder
        };
        // A small cache: an MX host shared by many domains is asked once,
        // and nothing stays longer than its TTL.
        options.cache_size = 1024;
        let inner = TokioResolver::builder_with_config(config, TokioRuntimeProvider::default())
            .with_options(options)
            .build()
            .map_err(|e| io::Error::other(format!("DNS resolver: {e}")))?;
        Ok(Self { inner })
    }

    /// The hosts to try for mail to `domain`, in order (RFC 5321 section
    /// 5.1): see [`select::mx_targets`] and [`select::hosts`] for the rules.
    ///
    /// Addresses are looked up one preference level at a time (the names of
    /// a level concurrently), stopping once `options.address_limit`
    /// addresses are known (a few names at a time), so a domain with
    /// hundreds of MX records costs a few queries.
    pub async fn mx_hosts(&self, domain: &str, options: &Options) -> Result<Vec<Host>, DnsError> {
        let name = fqdn(domain, "MX")?;
        let answer = answer(self.inner.mx_lookup(name).await, |rdata| match rdata {
            RData::MX(mx) => Some(Mx {
                preference: mx.preference,
                exchange: mx.exchange.to_ascii(),
            }),
            _ => None,
        });
        let targets = select::mx_targets(domain, answer, &mut rand::rng())?;

        let mut answers: HashMap<String, AddrAnswers> = HashMap::new();
        let mut found: HashSet<IpAddr> = HashSet::new();
        let mut start = 0;
        'levels: while start < targets.len() {
            let preference = targets[start].preference;
            let end = targets[start..]
                .iter()
                .position(|t| t.preference != preference)
                .map_or(targets.len(), |n| start + n);
            let level = &targets[start..end];
            start = end;
            // A few names at a time: the level is already in random order,
            // so stopping after a chunk still picks among equals at random.
            for chunk in level.chunks(CONCURRENT_NAMES) {
                if enough(&found, options) {
                    break 'levels;
                }
                let mut tasks = tokio::task::JoinSet::new();
                for target in chunk {
                    let resolver = self.clone();
                    let name = target.exchange.clone();
                    let families = options.families;
                    tasks.spawn(async move {
                        let answer = resolver.addr_answers(&name, families).await;
                        (name, answer)
                    });
                }
                while let Some(joined) = tasks.join_next().await {
                    // A panicked task leaves its name out: as if not looked up.
                    let Ok((name, answer)) = joined else { continue };
                    for ip in answer_addrs(&answer) {
                        if options.families.allows(ip) {
                            found.insert(ip);
                        }
                    }
                    answers.insert(normalize(&name), answer);
                }
            }
        }
        select::hosts(&targets, &answers, options, &mut rand::rng())
    }

    /// The addresses of one host, for a `[host]` nexthop (no MX lookup), in
    /// the order to try them and at most `options.address_limit` of them;
    /// `name` may keep its brackets. An IP literal (`192.0.2.1`,
    /// `2001:db8::1`, `ipv6:2001:db8::1`) is returned as it is, without a
    /// query; a literal of a family that `options.families` excludes is a
    /// temporary error (a configuration to fix, not a reason to bounce).
    pub async fn host_addrs(&self, name: &str, options: &Options) -> Result<Vec<IpAddr>, DnsError> {
        if let Some(ip) = parse_ip_literal(name) {
            if options.families.allows(ip) {
                return Ok(vec![ip]);
            }
            return Err(DnsError::Temporary(format!(
                "Host or domain name not found. Name service error for name={name}: \
                 address family not enabled by inet_protocols"
            )));
        }
        let name = name
            .strip_prefix('[')
            .and_then(|n| n.strip_suffix(']'))
            .unwrap_or(name);
        let rtype = if options.families.v4() && !options.families.v6() {
            "A"
        } else {
            "AAAA"
        };
        fqdn(name, rtype)?;
        let target = Mx {
            preference: 0,
            exchange: normalize(name),
        };
        let answer = self.addr_answers(&target.exchange, options.families).await;
        let answers = HashMap::from([(target.exchange.clone(), answer)]);
        let hosts = select::hosts(&[target], &answers, options, &mut rand::rng())?;
        Ok(hosts.into_iter().flat_map(|h| h.addrs).collect())
    }

    /// A and/or AAAA for `name`, concurrently, per the families in use.
    async fn addr_answers(&self, name: &str, families: crate::IpFamilies) -> AddrAnswers {
        let Ok(fq) = fqdn(name, "A") else {
            return AddrAnswers {
                a: families.v4().then_some(Answer::NxDomain),
                aaaa: families.v6().then_some(Answer::NxDomain),
            };
        };
        let a = async {
            if families.v4() {
                let r = self.inner.lookup(fq.clone(), RecordType::A).await;
                Some(answer(r, |rdata| match rdata {
                    RData::A(a) => Some(a.0),
                    _ => None,
                }))
            } else {
                None
            }
        };
        let aaaa = async {
            if families.v6() {
                let r = self.inner.lookup(fq.clone(), RecordType::AAAA).await;
                Some(answer(r, |rdata| match rdata {
                    RData::AAAA(aaaa) => Some(aaaa.0),
                    _ => None,
                }))
            } else {
                None
            }
        };
        let (a, aaaa) = tokio::join!(a, aaaa);
        AddrAnswers { a, aaaa }
    }
}

/// Whether the address limit is already met (with both families present
/// when balancing wants both).
fn enough(found: &HashSet<IpAddr>, options: &Options) -> bool {
    let limit = options.address_limit;
    if limit == 0 || found.len() < limit {
        return false;
    }
    let both_wanted = options.balance_families && options.families.v4() && options.families.v6();
    !both_wanted || (found.iter().any(|a| a.is_ipv4()) && found.iter().any(|a| a.is_ipv6()))
}

fn answer_addrs(answer: &AddrAnswers) -> Vec<IpAddr> {
    let mut out = Vec::new();
    if let Some(Answer::Records(r)) = &answer.a {
        out.extend(r.iter().copied().map(IpAddr::V4));
    }
    if let Some(Answer::Records(r)) = &answer.aaaa {
        out.extend(r.iter().copied().map(IpAddr::V6));
    }
    out
}

/// `domain` as an absolute DNS name (a trailing dot, so no search list ever
/// applies); a name that is not a valid DNS name does not exist.
fn fqdn(domain: &str, rtype: &str) -> Result<Name, DnsError> {
    let trimmed = domain.strip_suffix('.').unwrap_or(domain);
    let text = format!("{trimmed}.");
    let parsed = if trimmed.is_empty() || trimmed.contains(['[', ']', '\\', ' ']) {
        None
    } else if text.is_ascii() {
        Name::from_ascii(&text).ok()
    } else {
        Name::from_utf8(&text).ok()
    };
    parsed.ok_or_else(|| name_service_error(&normalize(domain), rtype, Failure::NxDomain))
}

/// One hickory outcome as an [`Answer`], keeping the records `pick` accepts
/// (the answer section also holds the CNAMEs followed on the way).
fn answer<T>(result: Result<Lookup, NetError>, pick: impl Fn(&RData) -> Option<T>) -> Answer<T> {
    match result {
        Ok(lookup) => {
            let records: Vec<T> = lookup
                .answers()
                .iter()
                .filter_map(|r| pick(&r.data))
                .collect();
            if !records.is_empty() {
                Answer::Records(records)
            } else if lookup.message().metadata.response_code == ResponseCode::NXDomain {
                // A CNAME to a name that does not exist.
                Answer::NxDomain
            } else {
                Answer::NoData
            }
        }
        Err(NetError::Dns(HickoryDnsError::NoRecordsFound(no))) => {
            if no.response_code == ResponseCode::NXDomain {
                Answer::NxDomain
            } else {
                Answer::NoData
            }
        }
        Err(_) => Answer::Temporary,
    }
}
