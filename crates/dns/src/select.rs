//! The pure half of RFC 5321 section 5.1: from DNS answers to the ordered
//! list of hosts to try. No I/O here, so every rule is unit-tested and
//! property-tested without a name server.

use std::collections::{HashMap, HashSet};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use rand::Rng;
use rand::seq::SliceRandom;

use crate::{AddressPreference, DnsError, Host, IpFamilies, Options};

/// One MX record as the name server sent it.
///
/// Exists so the selection logic takes plain data rather than hickory types.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mx {
    /// Lower is preferred.
    pub preference: u16,
    /// The mail exchanger's name (`mx1.example.com`, with or without the
    /// trailing dot; `.` or empty is the RFC 7505 null MX).
    pub exchange: String,
}

/// What one query (one name, one type) got back.
///
/// Exists because the four outcomes lead to different decisions: use the
/// records, fall back to the implicit MX, bounce, or defer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Answer<T> {
    /// The records of the asked type (CNAMEs already followed).
    Records(Vec<T>),
    /// NOERROR without records of that type: the name exists.
    NoData,
    /// NXDOMAIN: the name does not exist.
    NxDomain,
    /// SERVFAIL, REFUSED, a timeout or a network error: ask again later.
    Temporary,
}

/// The address answers for one name, per type; `None` for a type that was
/// not asked (filtered out by `inet_protocols`).
///
/// Exists so a name's A and AAAA outcomes are judged together: one family
/// answering is enough.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AddrAnswers {
    /// The A query's outcome, if asked.
    pub a: Option<Answer<Ipv4Addr>>,
    /// The AAAA query's outcome, if asked.
    pub aaaa: Option<Answer<Ipv6Addr>>,
}

/// Why one query found nothing, for messages in Postfix's words.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) enum Failure {
    NxDomain,
    NoData,
    Temporary,
}

/// `Host or domain name not found. Name service error for name=N type=T: ...`,
/// as Postfix's smtp client says it.
pub(crate) fn name_service_error(name: &str, rtype: &str, why: Failure) -> DnsError {
    let text = match why {
        Failure::NxDomain => "Host not found",
        Failure::NoData => "Host found but no data record of requested type",
        Failure::Temporary => "Host not found, try again",
    };
    let message = format!(
        "Host or domain name not found. Name service error for name={name} type={rtype}: {text}"
    );
    match why {
        Failure::Temporary => DnsError::Temporary(message),
        Failure::NxDomain | Failure::NoData => DnsError::NotFound(message),
    }
}

/// A name as hosts are reported: lower case, no trailing dot.
pub(crate) fn normalize(name: &str) -> String {
    name.trim_end_matches('.').to_ascii_lowercase()
}

/// Step one: the MX answer for `domain` → the exchangers to resolve, in the
/// order to try them.
///
/// Sorted by preference, random order among equal preferences, each name
/// once (at its best preference). A lone MX whose exchange is `.` is the
/// null MX ([`DnsError::NullMx`]); in a list with other MX records such an
/// entry is dropped. NODATA (or an empty list) is the implicit MX: the domain
/// itself at preference 0. NXDOMAIN is [`DnsError::NotFound`]; a temporary
/// failure is [`DnsError::Temporary`].
pub fn mx_targets<R: Rng + ?Sized>(
    domain: &str,
    answer: Answer<Mx>,
    rng: &mut R,
) -> Result<Vec<Mx>, DnsError> {
    let domain = normalize(domain);
    let records = match answer {
        Answer::Records(records) if !records.is_empty() => records,
        Answer::Records(_) | Answer::NoData => {
            return Ok(vec![Mx {
                preference: 0,
                exchange: domain,
            }]);
        }
        Answer::NxDomain => return Err(name_service_error(&domain, "MX", Failure::NxDomain)),
        Answer::Temporary => return Err(name_service_error(&domain, "MX", Failure::Temporary)),
    };
    let mut records: Vec<Mx> = records
        .into_iter()
        .map(|mx| Mx {
            preference: mx.preference,
            exchange: normalize(&mx.exchange),
        })
        .collect();
    records.retain(|mx| !mx.exchange.is_empty());
    if records.is_empty() {
        // RFC 7505 wants exactly one `0 .`; several `.` records and nothing
        // else mean the same: there is no host to deliver to.
        return Err(DnsError::NullMx(format!(
            "Domain {domain} does not accept mail (nullMX)"
        )));
    }
    records.shuffle(rng);
    // Stable: the shuffle decides the order among equal preferences.
    records.sort_by_key(|mx| mx.preference);
    let mut seen = HashSet::new();
    records.retain(|mx| seen.insert(mx.exchange.clone()));
    Ok(records)
}

/// Step two: the exchangers in order plus the address answers per name →
/// the hosts with their addresses.
///
/// Names missing from `answers` were not looked up (the address limit was
/// already reached) and are left out silently. Per name, addresses of the
/// families that `options.families` allows are kept, ordered by
/// `options.prefer` (for [`AddressPreference::Any`] one random choice per
/// call); an address already listed under an earlier host is dropped. Then
/// at most `options.address_limit` addresses in all (0 = no limit) are kept,
/// reserving room for both families when the destination has both (Postfix's
/// `smtp_balance_inet_protocols`), and hosts left with no address are
/// dropped. A name whose lookups all failed is skipped; if no host remains,
/// the result is [`DnsError::Temporary`] if any lookup failed temporarily,
/// else [`DnsError::NotFound`] (every name NXDOMAIN or NODATA), with the
/// first such failure's message.
pub fn hosts<R: Rng + ?Sized>(
    targets: &[Mx],
    answers: &HashMap<String, AddrAnswers>,
    options: &Options,
    rng: &mut R,
) -> Result<Vec<Host>, DnsError> {
    let v6_first = match options.prefer {
        AddressPreference::V6 => true,
        AddressPreference::V4 => false,
        AddressPreference::Any => rng.random_bool(0.5),
    };
    let mut seen: HashSet<IpAddr> = HashSet::new();
    let mut hosts: Vec<Host> = Vec::new();
    let mut first_temporary: Option<DnsError> = None;
    let mut first_not_found: Option<DnsError> = None;
    for target in targets {
        let name = normalize(&target.exchange);
        let Some(answer) = answers.get(&name).or_else(|| answers.get(&target.exchange)) else {
            continue;
        };
        match addresses(&name, answer, options.families, v6_first) {
            Ok(addrs) => {
                let addrs: Vec<IpAddr> = addrs.into_iter().filter(|a| seen.insert(*a)).collect();
                if !addrs.is_empty() {
                    hosts.push(Host {
                        name,
                        preference: target.preference,
                        addrs,
                    });
                }
            }
            Err(e @ DnsError::Temporary(_)) => {
                first_temporary.get_or_insert(e);
            }
            Err(e) => {
                first_not_found.get_or_insert(e);
            }
        }
    }
    if hosts.is_empty() {
        return Err(first_temporary.or(first_not_found).unwrap_or_else(|| {
            let name = targets
                .first()
                .map(|t| normalize(&t.exchange))
                .unwrap_or_default();
            let rtype = match options.families {
                IpFamilies::V4 => "A",
                IpFamilies::V6 | IpFamilies::Both => "AAAA",
            };
            name_service_error(&name, rtype, Failure::Temporary)
        }));
    }
    Ok(limit(hosts, options))
}

/// The whole pure pipeline: [`mx_targets`] then [`hosts`].
///
/// Exists for callers (and property tests) that hold every answer already.
pub fn select_hosts<R: Rng + ?Sized>(
    domain: &str,
    mx: Answer<Mx>,
    answers: &HashMap<String, AddrAnswers>,
    options: &Options,
    rng: &mut R,
) -> Result<Vec<Host>, DnsError> {
    let targets = mx_targets(domain, mx, rng)?;
    hosts(&targets, answers, options, rng)
}

/// One name's usable addresses in the order to try them, or why there are none.
fn addresses(
    name: &str,
    answer: &AddrAnswers,
    families: IpFamilies,
    v6_first: bool,
) -> Result<Vec<IpAddr>, DnsError> {
    let mut v4 = Vec::new();
    let mut v6 = Vec::new();
    // (type, failure) of each asked type that gave nothing; A is asked
    // before AAAA, so the last one is AAAA, as in Postfix's messages.
    let mut failures: Vec<(&str, Failure)> = Vec::new();
    if families.v4() {
        match &answer.a {
            Some(Answer::Records(r)) => v4.extend(r.iter().copied().map(IpAddr::V4)),
            Some(Answer::NoData) => failures.push(("A", Failure::NoData)),
            Some(Answer::NxDomain) => failures.push(("A", Failure::NxDomain)),
            Some(Answer::Temporary) | None => failures.push(("A", Failure::Temporary)),
        }
    }
    if families.v6() {
        match &answer.aaaa {
            Some(Answer::Records(r)) => v6.extend(r.iter().copied().map(IpAddr::V6)),
            Some(Answer::NoData) => failures.push(("AAAA", Failure::NoData)),
            Some(Answer::NxDomain) => failures.push(("AAAA", Failure::NxDomain)),
            Some(Answer::Temporary) | None => failures.push(("AAAA", Failure::Temporary)),
        }
    }
    let mut addrs = if v6_first {
        v6.extend(v4);
        v6
    } else {
        v4.extend(v6);
        v4
    };
    let mut unique = HashSet::new();
    addrs.retain(|a| unique.insert(*a));
    if !addrs.is_empty() {
        return Ok(addrs);
    }
    // Nothing usable: a temporary failure of any type wins (the data may
    // exist), else the last type's answer.
    let (rtype, why) = failures
        .iter()
        .find(|(_, why)| *why == Failure::Temporary)
        .or(failures.last())
        .copied()
        .unwrap_or(("A", Failure::NoData));
    Err(name_service_error(name, rtype, why))
}

/// Applies `address_limit` (with the family balance) and drops emptied hosts.
fn limit(hosts: Vec<Host>, options: &Options) -> Vec<Host> {
    let limit = options.address_limit;
    let total: usize = hosts.iter().map(|h| h.addrs.len()).sum();
    if limit == 0 || total <= limit {
        return hosts;
    }
    let count = |v6: bool| {
        hosts
            .iter()
            .flat_map(|h| &h.addrs)
            .filter(|a| a.is_ipv6() == v6)
            .count()
    };
    let (n4, n6) = (count(false), count(true));
    // Reserve up to half of the slots for each family when both are present.
    let (need4, need6) = if options.balance_families && limit >= 2 && n4 > 0 && n6 > 0 {
        (n4.min(limit / 2), n6.min(limit / 2))
    } else {
        (0, 0)
    };
    let (mut kept4, mut kept6) = (0usize, 0usize);
    let mut out = Vec::with_capacity(hosts.len());
    for host in hosts {
        let mut addrs = Vec::new();
        for addr in host.addrs {
            let kept = kept4 + kept6;
            if kept == limit {
                break;
            }
            let (mine, need_mine, other, need_other) = if addr.is_ipv6() {
                (kept6, need6, kept4, need4)
            } else {
                (kept4, need4, kept6, need6)
            };
            let other_left = need_other.saturating_sub(other);
            if mine < need_mine || limit - kept > other_left {
                if addr.is_ipv6() {
                    kept6 += 1;
                } else {
                    kept4 += 1;
                }
                addrs.push(addr);
            }
        }
        if !addrs.is_empty() {
            out.push(Host { addrs, ..host });
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use rand::SeedableRng;
    use rand::rngs::StdRng;

    fn mx(preference: u16, exchange: &str) -> Mx {
        Mx {
            preference,
            exchange: exchange.to_owned(),
        }
    }

    fn v4(name: &str, addrs: &[[u8; 4]]) -> (String, AddrAnswers) {
        (
            name.to_owned(),
            AddrAnswers {
                a: Some(Answer::Records(
                    addrs.iter().map(|o| Ipv4Addr::from(*o)).collect(),
                )),
                aaaa: Some(Answer::NoData),
            },
        )
    }

    fn options(limit: usize) -> Options {
        Options {
            address_limit: limit,
            ..Options::default()
        }
    }

    fn rng() -> StdRng {
        StdRng::seed_from_u64(7)
    }

    #[test]
    fn sorted_by_preference_and_names_normalized() {
        let t = mx_targets(
            "Example.COM.",
            Answer::Records(vec![mx(20, "MX2.example.com."), mx(10, "mx1.example.com.")]),
            &mut rng(),
        )
        .unwrap();
        assert_eq!(
            t,
            vec![mx(10, "mx1.example.com"), mx(20, "mx2.example.com")]
        );
    }

    #[test]
    fn equal_preferences_come_in_both_orders() {
        let mut r = rng();
        let mut firsts = HashSet::new();
        for _ in 0..64 {
            let t = mx_targets(
                "example.com",
                Answer::Records(vec![
                    mx(10, "a.example.com"),
                    mx(10, "b.example.com"),
                    mx(5, "c.example.com"),
                ]),
                &mut r,
            )
            .unwrap();
            assert_eq!(t[0].exchange, "c.example.com");
            firsts.insert(t[1].exchange.clone());
        }
        assert_eq!(firsts.len(), 2);
    }

    #[test]
    fn duplicate_exchange_kept_at_best_preference() {
        let t = mx_targets(
            "example.com",
            Answer::Records(vec![mx(30, "mx.example.com"), mx(10, "MX.example.com.")]),
            &mut rng(),
        )
        .unwrap();
        assert_eq!(t, vec![mx(10, "mx.example.com")]);
    }

    #[test]
    fn null_mx() {
        let e =
            mx_targets("example.com", Answer::Records(vec![mx(0, ".")]), &mut rng()).unwrap_err();
        assert_eq!(
            e,
            DnsError::NullMx("Domain example.com does not accept mail (nullMX)".into())
        );
        assert!(!e.is_temporary());
        // Mixed with real MX records, the `.` entry is just unusable.
        let t = mx_targets(
            "example.com",
            Answer::Records(vec![mx(0, "."), mx(10, "mx.example.com")]),
            &mut rng(),
        )
        .unwrap();
        assert_eq!(t, vec![mx(10, "mx.example.com")]);
    }

    #[test]
    fn implicit_mx_nxdomain_and_temporary() {
        assert_eq!(
            mx_targets("example.com.", Answer::NoData, &mut rng()).unwrap(),
            vec![mx(0, "example.com")]
        );
        assert_eq!(
            mx_targets("example.invalid", Answer::NxDomain, &mut rng()).unwrap_err(),
            DnsError::NotFound(
                "Host or domain name not found. Name service error for name=example.invalid type=MX: Host not found"
                    .into()
            )
        );
        assert_eq!(
            mx_targets("x", Answer::Temporary, &mut rng()).unwrap_err(),
            DnsError::Temporary(
                "Host or domain name not found. Name service error for name=x type=MX: Host not found, try again"
                    .into()
            )
        );
    }

    #[test]
    fn hosts_skip_failures_and_keep_order() {
        let targets = vec![mx(10, "a.test"), mx(20, "b.test"), mx(30, "c.test")];
        let answers: HashMap<_, _> = [
            (
                "a.test".to_owned(),
                AddrAnswers {
                    a: Some(Answer::Temporary),
                    aaaa: Some(Answer::Temporary),
                },
            ),
            v4("b.test", &[[192, 0, 2, 2]]),
            v4("c.test", &[[192, 0, 2, 3], [192, 0, 2, 2]]),
        ]
        .into_iter()
        .collect();
        let h = hosts(&targets, &answers, &options(0), &mut rng()).unwrap();
        assert_eq!(h.len(), 2);
        assert_eq!(h[0].name, "b.test");
        assert_eq!(h[0].preference, 20);
        // 192.0.2.2 already listed under b.test.
        assert_eq!(h[1].addrs, vec![IpAddr::from([192, 0, 2, 3])]);
    }

    #[test]
    fn all_temporary_is_temporary_all_missing_is_not_found() {
        let targets = vec![mx(10, "a.test"), mx(20, "b.test")];
        let temp = AddrAnswers {
            a: Some(Answer::NxDomain),
            aaaa: Some(Answer::Temporary),
        };
        let nx = AddrAnswers {
            a: Some(Answer::NxDomain),
            aaaa: Some(Answer::NxDomain),
        };
        let answers: HashMap<_, _> = [
            ("a.test".to_owned(), nx.clone()),
            ("b.test".to_owned(), temp),
        ]
        .into_iter()
        .collect();
        let e = hosts(&targets, &answers, &options(5), &mut rng()).unwrap_err();
        assert_eq!(
            e,
            DnsError::Temporary(
                "Host or domain name not found. Name service error for name=b.test type=AAAA: Host not found, try again"
                    .into()
            )
        );
        let answers: HashMap<_, _> = [
            ("a.test".to_owned(), nx),
            (
                "b.test".to_owned(),
                AddrAnswers {
                    a: Some(Answer::NoData),
                    aaaa: None,
                },
            ),
        ]
        .into_iter()
        .collect();
        let v4only = Options {
            families: IpFamilies::V4,
            ..options(5)
        };
        let e = hosts(&targets, &answers, &v4only, &mut rng()).unwrap_err();
        assert_eq!(
            e,
            DnsError::NotFound(
                "Host or domain name not found. Name service error for name=a.test type=A: Host not found".into()
            )
        );
    }

    #[test]
    fn families_filter_and_preference() {
        let targets = vec![mx(10, "a.test")];
        let answers: HashMap<_, _> = [(
            "a.test".to_owned(),
            AddrAnswers {
                a: Some(Answer::Records(vec![Ipv4Addr::new(192, 0, 2, 1)])),
                aaaa: Some(Answer::Records(vec!["2001:db8::1".parse().unwrap()])),
            },
        )]
        .into_iter()
        .collect();
        let v4: IpAddr = "192.0.2.1".parse().unwrap();
        let v6: IpAddr = "2001:db8::1".parse().unwrap();
        let run = |families, prefer| {
            let o = Options {
                families,
                prefer,
                ..options(0)
            };
            hosts(&targets, &answers, &o, &mut rng()).unwrap()[0]
                .addrs
                .clone()
        };
        assert_eq!(run(IpFamilies::V4, AddressPreference::V6), vec![v4]);
        assert_eq!(run(IpFamilies::V6, AddressPreference::V4), vec![v6]);
        assert_eq!(run(IpFamilies::Both, AddressPreference::V6), vec![v6, v4]);
        assert_eq!(run(IpFamilies::Both, AddressPreference::V4), vec![v4, v6]);
    }

    #[test]
    fn address_limit_and_balance() {
        let targets = vec![mx(10, "a.test"), mx(20, "b.test")];
        let answers: HashMap<_, _> = [
            v4("a.test", &[[192, 0, 2, 1], [192, 0, 2, 2], [192, 0, 2, 3]]),
            (
                "b.test".to_owned(),
                AddrAnswers {
                    a: Some(Answer::NoData),
                    aaaa: Some(Answer::Records(vec!["2001:db8::1".parse().unwrap()])),
                },
            ),
        ]
        .into_iter()
        .collect();
        let h = hosts(&targets, &answers, &options(2), &mut rng()).unwrap();
        // One slot reserved for IPv6, which only b.test has.
        assert_eq!(h.len(), 2);
        assert_eq!(h[0].addrs, vec![IpAddr::from([192, 0, 2, 1])]);
        assert_eq!(h[1].addrs, vec!["2001:db8::1".parse::<IpAddr>().unwrap()]);
        let unbalanced = Options {
            balance_families: false,
            ..options(2)
        };
        let h = hosts(&targets, &answers, &unbalanced, &mut rng()).unwrap();
        assert_eq!(h.len(), 1);
        assert_eq!(h[0].addrs.len(), 2);
    }

    fn arb_answer<T: std::fmt::Debug + Clone + 'static>(
        item: impl Strategy<Value = T> + 'static,
    ) -> impl Strategy<Value = Answer<T>> {
        prop_oneof![
            proptest::collection::vec(item, 0..4).prop_map(Answer::Records),
            Just(Answer::NoData),
            Just(Answer::NxDomain),
            Just(Answer::Temporary),
        ]
    }

    fn arb_name() -> impl Strategy<Value = String> {
        prop_oneof![
            "[a-d]\\.test\\.?",
            Just(".".to_owned()),
            Just(String::new()),
            Just("A.TEST".to_owned()),
        ]
    }

    proptest! {
        #[test]
        fn selection_never_panics_and_keeps_its_promises(
            mx in arb_answer((0u16..4, arb_name()).prop_map(|(preference, exchange)| Mx { preference, exchange })),
            answers in proptest::collection::hash_map(
                arb_name().prop_map(|n| normalize(&n)),
                (proptest::option::of(arb_answer(any::<[u8; 4]>().prop_map(|o| Ipv4Addr::from([192, 0, 2, o[3] % 8])))),
                 proptest::option::of(arb_answer((0u16..8).prop_map(|i| Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, i)))))
                    .prop_map(|(a, aaaa)| AddrAnswers { a, aaaa }),
                0..6),
            limit in 0usize..6,
            families in prop_oneof![Just(IpFamilies::V4), Just(IpFamilies::V6), Just(IpFamilies::Both)],
            prefer in prop_oneof![Just(AddressPreference::Any), Just(AddressPreference::V4), Just(AddressPreference::V6)],
            balance in any::<bool>(),
            seed in any::<u64>(),
        ) {
            let options = Options { families, prefer, address_limit: limit, balance_families: balance };
            let mut rng = StdRng::seed_from_u64(seed);
            if let Ok(hosts) = select_hosts("example.test", mx, &answers, &options, &mut rng) {
                prop_assert!(!hosts.is_empty());
                prop_assert!(hosts.windows(2).all(|w| w[0].preference <= w[1].preference));
                let all: Vec<IpAddr> = hosts.iter().flat_map(|h| h.addrs.clone()).collect();
                if limit > 0 {
                    prop_assert!(all.len() <= limit);
                }
                let unique: HashSet<_> = all.iter().collect();
                prop_assert_eq!(unique.len(), all.len());
                for h in &hosts {
                    prop_assert!(!h.addrs.is_empty());
                    prop_assert!(!h.name.is_empty() && !h.name.ends_with('.'));
                    prop_assert!(h.addrs.iter().all(|a| families.allows(*a)));
                }
            }
        }
    }
}
