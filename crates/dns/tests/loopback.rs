//! postern-dns against a real name server on loopback (postern-testdns),
//! over UDP and TCP.

use std::collections::HashSet;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::time::{Duration, Instant};

use postern_dns::{
    AddressPreference, DnsError, IpFamilies, Options, ResolvConf, Resolver, ResolverSettings,
};
use postern_testdns::{Query, TestDns, Zone};

fn v4(last: u8) -> Ipv4Addr {
    Ipv4Addr::new(127, 0, 0, last)
}

fn v6(last: u16) -> Ipv6Addr {
    Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, last)
}

/// A resolver that gives up on a silent server after one second.
fn resolver(dns: &TestDns) -> Resolver {
    Resolver::with_settings(
        &[dns.addr()],
        ResolverSettings {
            timeout: Duration::from_secs(1),
            attempts: 1,
        },
    )
    .unwrap()
}

fn opts(families: IpFamilies, prefer: AddressPreference, address_limit: usize) -> Options {
    Options {
        families,
        prefer,
        address_limit,
        ..Options::default()
    }
}

fn names(hosts: &[postern_dns::Host]) -> Vec<&str> {
    hosts.iter().map(|h| h.name.as_str()).collect()
}

fn asked(dns: &TestDns, name: &str, rtype: &str) -> bool {
    dns.queries().contains(&Query {
        name: name.to_owned(),
        rtype: rtype.to_owned(),
    })
}

#[tokio::test]
async fn mx_preference_order() {
    let dns = TestDns::start(
        Zone::new("example.test.")
            .mx("@", 20, "mx2")
            .mx("@", 10, "mx1")
            .mx("@", 30, "mx3.other.test")
            .a("mx1", v4(11))
            .a("mx2", v4(12)),
    );
    let r = resolver(&dns);
    let hosts = r
        .mx_hosts("example.test", &Options::default())
        .await
        .unwrap();
    // mx3.other.test is under no zone: NXDOMAIN, skipped.
    assert_eq!(names(&hosts), ["mx1.example.test", "mx2.example.test"]);
    assert_eq!(hosts[0].preference, 10);
    assert_eq!(hosts[0].addrs, [IpAddr::V4(v4(11))]);
    assert_eq!(hosts[1].addrs, [IpAddr::V4(v4(12))]);
    assert!(asked(&dns, "example.test.", "MX"));
}

#[tokio::test]
async fn random_order_among_equal_preferences() {
    let dns = TestDns::start(
        Zone::new("example.test.")
            .mx("@", 10, "a")
            .mx("@", 10, "b")
            .a("a", v4(1))
            .a("b", v4(2)),
    );
    let r = resolver(&dns);
    let mut firsts = HashSet::new();
    for _ in 0..50 {
        let hosts = r
            .mx_hosts("example.test.", &Options::default())
            .await
            .unwrap();
        assert_eq!(hosts.len(), 2);
        firsts.insert(hosts[0].name.clone());
        if firsts.len() == 2 {
            break;
        }
    }
    assert_eq!(firsts.len(), 2, "both orders over 50 runs");
}

#[tokio::test]
async fn implicit_mx() {
    let dns = TestDns::start(
        Zone::new("example.test.")
            .a("@", v4(5))
            .aaaa("@", v6(5))
            .txt("@", "v=spf1 -all"),
    );
    let r = resolver(&dns);
    let o = opts(IpFamilies::Both, AddressPreference::V6, 5);
    let hosts = r.mx_hosts("example.test", &o).await.unwrap();
    assert_eq!(names(&hosts), ["example.test"]);
    assert_eq!(hosts[0].preference, 0);
    assert_eq!(hosts[0].addrs, [IpAddr::V6(v6(5)), IpAddr::V4(v4(5))]);
}

#[tokio::test]
async fn implicit_mx_without_address_is_not_found() {
    let dns = TestDns::start(Zone::new("example.test.").txt("@", "no mail here"));
    let r = resolver(&dns);
    let e = r
        .mx_hosts("example.test", &Options::default())
        .await
        .unwrap_err();
    assert_eq!(
        e,
        DnsError::NotFound(
            "Host or domain name not found. Name service error for name=example.test type=AAAA: \
             Host found but no data record of requested type"
                .into()
        )
    );
}

#[tokio::test]
async fn null_mx() {
    let dns = TestDns::start(Zone::new("example.test.").null_mx("@").a("@", v4(1)));
    let r = resolver(&dns);
    let e = r
        .mx_hosts("example.test", &Options::default())
        .await
        .unwrap_err();
    assert_eq!(
        e,
        DnsError::NullMx("Domain example.test does not accept mail (nullMX)".into())
    );
    assert!(!e.is_temporary());
    // No address query for a domain that takes no mail.
    assert!(!asked(&dns, "example.test.", "A"));
}

#[tokio::test]
async fn nxdomain_is_not_found() {
    let dns = TestDns::start(Zone::new("example.test.").a("@", v4(1)));
    let r = resolver(&dns);
    let e = r
        .mx_hosts("nope.example.test", &Options::default())
        .await
        .unwrap_err();
    assert_eq!(
        e,
        DnsError::NotFound(
            "Host or domain name not found. Name service error for name=nope.example.test \
             type=MX: Host not found"
                .into()
        )
    );
    // Outside every zone too.
    let e = r
        .mx_hosts("example.invalid", &Options::default())
        .await
        .unwrap_err();
    assert_eq!(
        e.message(),
        "Host or domain name not found. Name service error for name=example.invalid type=MX: Host not found"
    );
    assert_eq!(e.dsn_status(), "5.4.4");
}

#[tokio::test]
async fn every_mx_host_missing_is_not_found() {
    let dns = TestDns::start(
        Zone::new("example.test.")
            .mx("@", 10, "gone1")
            .mx("@", 20, "gone2"),
    );
    let r = resolver(&dns);
    let e = r
        .mx_hosts(
            "example.test",
            &opts(IpFamilies::V4, AddressPreference::Any, 5),
        )
        .await
        .unwrap_err();
    assert_eq!(
        e,
        DnsError::NotFound(
            "Host or domain name not found. Name service error for name=gone1.example.test \
             type=A: Host not found"
                .into()
        )
    );
}

#[tokio::test]
async fn cname_to_an_a_record() {
    let dns = TestDns::start_zones([
        Zone::new("example.test.")
            .mx("@", 10, "alias")
            .mx("@", 20, "alias2")
            .cname("alias", "real.other.test")
            .cname("alias2", "real2")
            .a("real2", v4(8)),
        Zone::new("other.test.").a("real", v4(7)),
    ]);
    let r = resolver(&dns);
    let hosts = r
        .mx_hosts(
            "example.test",
            &opts(IpFamilies::V4, AddressPreference::Any, 0),
        )
        .await
        .unwrap();
    assert_eq!(names(&hosts), ["alias.example.test", "alias2.example.test"]);
    assert_eq!(hosts[0].addrs, [IpAddr::V4(v4(7))]);
    assert_eq!(hosts[1].addrs, [IpAddr::V4(v4(8))]);
}

#[tokio::test]
async fn cname_to_nothing_is_skipped() {
    let dns = TestDns::start(
        Zone::new("example.test.")
            .mx("@", 10, "dangling")
            .mx("@", 20, "mx")
            .cname("dangling", "nothing")
            .a("mx", v4(9)),
    );
    let r = resolver(&dns);
    let hosts = r
        .mx_hosts(
            "example.test",
            &opts(IpFamilies::V4, AddressPreference::Any, 0),
        )
        .await
        .unwrap();
    assert_eq!(names(&hosts), ["mx.example.test"]);
}

#[tokio::test]
async fn aaaa_filtering_per_family() {
    let dns = TestDns::start(
        Zone::new("example.test.")
            .mx("@", 10, "mx")
            .a("mx", v4(3))
            .aaaa("mx", v6(3))
            .mx("@", 20, "six")
            .aaaa("six", v6(4)),
    );
    let r = resolver(&dns);

    let hosts = r
        .mx_hosts(
            "example.test",
            &opts(IpFamilies::V4, AddressPreference::Any, 0),
        )
        .await
        .unwrap();
    assert_eq!(names(&hosts), ["mx.example.test"]);
    assert_eq!(hosts[0].addrs, [IpAddr::V4(v4(3))]);
    assert!(!asked(&dns, "mx.example.test.", "AAAA"));
    assert!(!asked(&dns, "six.example.test.", "AAAA"));

    let hosts = r
        .mx_hosts(
            "example.test",
            &opts(IpFamilies::V6, AddressPreference::Any, 0),
        )
        .await
        .unwrap();
    assert_eq!(names(&hosts), ["mx.example.test", "six.example.test"]);
    assert_eq!(hosts[0].addrs, [IpAddr::V6(v6(3))]);
    assert_eq!(hosts[1].addrs, [IpAddr::V6(v6(4))]);

    let hosts = r
        .mx_hosts(
            "example.test",
            &opts(IpFamilies::Both, AddressPreference::V4, 0),
        )
        .await
        .unwrap();
    assert_eq!(hosts[0].addrs, [IpAddr::V4(v4(3)), IpAddr::V6(v6(3))]);

    // Any: over many lookups, both families come first.
    let mut firsts = HashSet::new();
    for _ in 0..50 {
        let hosts = r
            .mx_hosts(
                "example.test",
                &opts(IpFamilies::Both, AddressPreference::Any, 0),
            )
            .await
            .unwrap();
        firsts.insert(hosts[0].addrs[0].is_ipv6());
        if firsts.len() == 2 {
            break;
        }
    }
    assert_eq!(firsts.len(), 2);
}

#[tokio::test]
async fn address_limit() {
    let dns = TestDns::start(
        Zone::new("example.test.")
            .mx("@", 10, "a")
            .mx("@", 20, "b")
            .mx("@", 30, "c")
            .a("a", v4(1))
            .a("a", v4(2))
            .a("b", v4(3))
            .a("b", v4(4))
            .a("c", v4(5)),
    );
    let r = resolver(&dns);
    let o = opts(IpFamilies::V4, AddressPreference::Any, 3);
    let hosts = r.mx_hosts("example.test", &o).await.unwrap();
    assert_eq!(names(&hosts), ["a.example.test", "b.example.test"]);
    let total: usize = hosts.iter().map(|h| h.addrs.len()).sum();
    assert_eq!(total, 3);
    assert_eq!(hosts[1].addrs.len(), 1);
    // The limit was met by a and b: c was never asked.
    assert!(!asked(&dns, "c.example.test.", "A"));

    let unlimited = opts(IpFamilies::V4, AddressPreference::Any, 0);
    let hosts = r.mx_hosts("example.test", &unlimited).await.unwrap();
    assert_eq!(hosts.iter().map(|h| h.addrs.len()).sum::<usize>(), 5);
}

#[tokio::test]
async fn hundreds_of_mx_records_cost_a_few_queries() {
    let mut zone = Zone::new("many.test.");
    for i in 0..200u8 {
        zone = zone
            .mx("@", 10, &format!("mx{i}"))
            .a(&format!("mx{i}"), v4(i));
    }
    let dns = TestDns::start(zone);
    let r = resolver(&dns);
    let hosts = r
        .mx_hosts(
            "many.test",
            &opts(IpFamilies::V4, AddressPreference::Any, 5),
        )
        .await
        .unwrap();
    assert_eq!(hosts.len(), 5);
    let address_queries = dns.queries().iter().filter(|q| q.rtype == "A").count();
    assert!(address_queries <= 8, "{address_queries} A queries");
}

#[tokio::test]
async fn ip_literals_need_no_query() {
    let dns = TestDns::start(Zone::new("example.test.").a("mx", v4(1)));
    let r = resolver(&dns);
    let o = Options::default();
    assert_eq!(
        r.host_addrs("192.0.2.1", &o).await.unwrap(),
        ["192.0.2.1".parse::<IpAddr>().unwrap()]
    );
    assert_eq!(
        r.host_addrs("ipv6:2001:db8::1", &o).await.unwrap(),
        ["2001:db8::1".parse::<IpAddr>().unwrap()]
    );
    assert_eq!(
        r.host_addrs("[2001:db8::2]", &o).await.unwrap(),
        ["2001:db8::2".parse::<IpAddr>().unwrap()]
    );
    let e = r
        .host_addrs(
            "2001:db8::1",
            &opts(IpFamilies::V4, AddressPreference::Any, 5),
        )
        .await
        .unwrap_err();
    assert!(e.is_temporary());
    assert_eq!(dns.queries(), []);

    // A name: A/AAAA, no MX.
    assert_eq!(
        r.host_addrs("mx.example.test", &o).await.unwrap(),
        [IpAddr::V4(v4(1))]
    );
    assert_eq!(
        r.host_addrs("[mx.example.test]", &o).await.unwrap(),
        [IpAddr::V4(v4(1))]
    );
    assert!(!asked(&dns, "mx.example.test.", "MX"));
    let e = r.host_addrs("nx.example.test", &o).await.unwrap_err();
    assert_eq!(
        e,
        DnsError::NotFound(
            "Host or domain name not found. Name service error for name=nx.example.test \
             type=AAAA: Host not found"
                .into()
        )
    );
}

#[tokio::test]
async fn silent_server_is_temporary_within_the_timeout() {
    let dns = TestDns::start(Zone::new("example.test.").no_answer("@").a("mx", v4(1)));
    let r = resolver(&dns);
    let started = Instant::now();
    let e = r
        .mx_hosts("example.test", &Options::default())
        .await
        .unwrap_err();
    let took = started.elapsed();
    assert_eq!(
        e,
        DnsError::Temporary(
            "Host or domain name not found. Name service error for name=example.test type=MX: \
             Host not found, try again"
                .into()
        )
    );
    assert_eq!(e.dsn_status(), "4.4.3");
    assert!(took < Duration::from_secs(5), "took {took:?}");
}

#[tokio::test]
async fn no_server_listening_is_temporary() {
    // A UDP port with nobody behind it (ICMP port unreachable) and no TCP.
    let socket = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    let addr = socket.local_addr().unwrap();
    drop(socket);
    let r = Resolver::with_settings(
        &[addr],
        ResolverSettings {
            timeout: Duration::from_secs(1),
            attempts: 1,
        },
    )
    .unwrap();
    let started = Instant::now();
    let e = r
        .mx_hosts("example.test", &Options::default())
        .await
        .unwrap_err();
    assert!(e.is_temporary(), "{e:?}");
    assert!(started.elapsed() < Duration::from_secs(5));
}

#[tokio::test]
async fn servfail_is_temporary_and_one_broken_mx_is_skipped() {
    let dns = TestDns::start_zones([
        Zone::new("broken.test.").servfail("@"),
        Zone::new("example.test.")
            .mx("@", 10, "bad")
            .mx("@", 20, "good")
            .servfail("bad")
            .a("good", v4(2)),
        Zone::new("allbad.test.")
            .mx("@", 10, "bad1")
            .mx("@", 20, "gone")
            .servfail("bad1"),
    ]);
    let r = resolver(&dns);
    let e = r
        .mx_hosts("broken.test", &Options::default())
        .await
        .unwrap_err();
    assert!(e.is_temporary(), "{e:?}");

    let hosts = r
        .mx_hosts("example.test", &Options::default())
        .await
        .unwrap();
    assert_eq!(names(&hosts), ["good.example.test"]);

    // One MX host failing temporarily, the other not existing: defer.
    let e = r
        .mx_hosts("allbad.test", &Options::default())
        .await
        .unwrap_err();
    assert!(e.is_temporary(), "{e:?}");
    assert!(e.message().contains("name=bad1.allbad.test"), "{e}");
}

#[tokio::test]
async fn tcp_only_and_resolv_conf_file() {
    let dns = TestDns::start(Zone::new("example.test.").mx("@", 10, "mx").a("mx", v4(1)));
    let conf = ResolvConf {
        servers: vec![dns.addr()],
        use_tcp: true,
        ..ResolvConf::default()
    };
    let r = Resolver::from_conf(&conf).unwrap();
    let hosts = r
        .mx_hosts("example.test", &Options::default())
        .await
        .unwrap();
    assert_eq!(names(&hosts), ["mx.example.test"]);

    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("resolv.conf");
    std::fs::write(
        &path,
        "search example.test\nnameserver 127.0.0.1\noptions timeout:1 attempts:1\n",
    )
    .unwrap();
    Resolver::from_resolv_conf(&path).unwrap();
    let e = Resolver::from_resolv_conf(dir.path().join("missing")).unwrap_err();
    assert!(e.to_string().contains("missing"), "{e}");
}

#[test]
fn fifty_destinations_from_a_synchronous_test() {
    let zones = (0..50).map(|i| {
        Zone::new(&format!("d{i}.test."))
            .mx("@", 10, "mx")
            .a("mx", Ipv4Addr::new(127, 0, 1, i as u8))
    });
    let dns = TestDns::start_zones(zones);
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        let r = resolver(&dns);
        for i in 0..50u8 {
            let hosts = r
                .mx_hosts(&format!("d{i}.test"), &Options::default())
                .await
                .unwrap();
            assert_eq!(hosts[0].name, format!("mx.d{i}.test"));
            assert_eq!(hosts[0].addrs, [IpAddr::V4(Ipv4Addr::new(127, 0, 1, i))]);
        }
    });
}
