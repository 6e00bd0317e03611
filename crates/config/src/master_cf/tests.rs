//! Tests of the master.cf grammar and of service addresses.

use std::net::SocketAddr;
use std::path::Path;

use proptest::prelude::*;

use super::*;

const FILE: &str = "/etc/postern/master.cf";

fn parse(text: &str) -> MasterCf {
    MasterCf::parse(text, Path::new(FILE)).expect("parses")
}

fn one(text: &str) -> ServiceEntry {
    let m = parse(text);
    assert_eq!(m.services.len(), 1);
    m.services.into_iter().next().expect("one service")
}

fn parse_err(text: &str) -> String {
    MasterCf::parse(text, Path::new(FILE))
        .expect_err("must fail")
        .to_string()
}

fn main_cf(text: &str) -> MainCf {
    MainCf::parse(text, Path::new("/etc/postern/main.cf")).expect("main.cf parses")
}

#[test]
fn columns() {
    let e = one("smtp inet n - n - - smtpd\n");
    assert_eq!(
        e,
        ServiceEntry {
            name: "smtp".into(),
            kind: ServiceType::Inet,
            private: false,
            unpriv: Unpriv::Default,
            chroot: false,
            wakeup: 0,
            wakeup_conditional: false,
            maxproc: None,
            command: "smtpd".into(),
            args: vec![],
            overrides: vec![],
            line: 1,
        }
    );
    assert_eq!(e.key(), "smtp/inet");

    let e = one("# c\n\npickup fifo y y y 60? 0 pickup -v\n");
    assert_eq!(e.kind, ServiceType::Fifo);
    assert!(e.private && e.chroot);
    assert_eq!(e.unpriv, Unpriv::Default);
    assert_eq!(
        (e.wakeup, e.wakeup_conditional, e.maxproc),
        (60, true, Some(0))
    );
    assert_eq!(e.args, vec!["-v"]);
    assert_eq!(e.line, 3);

    let e = one("x unix - n - 300 7 local\n");
    assert!(e.private && !e.chroot);
    assert_eq!(e.unpriv, Unpriv::Root);
    assert_eq!((e.wakeup, e.maxproc), (300, Some(7)));

    let e = one("x unix-dgram - vmail - - - local\n");
    assert_eq!(e.unpriv, Unpriv::User("vmail".into()));
    assert_eq!(e.key(), "x/unix-dgram");
    assert_eq!(one("x pass - - - - - smtpd\n").kind, ServiceType::Pass);
}

#[test]
fn continuation_and_overrides() {
    let e = one(
        "submission inet n - n - - smtpd\n  -o smtpd_sasl_auth_enable=yes\n# comment\n  -o { smtpd_tls_security_level = encrypt } -ocontent_filter=\n\t-o x=a=b -v extra -o not=override\n",
    );
    assert_eq!(
        e.overrides,
        vec![
            ("smtpd_sasl_auth_enable".to_string(), "yes".to_string()),
            (
                "smtpd_tls_security_level".to_string(),
                "encrypt".to_string()
            ),
            ("content_filter".to_string(), "".to_string()),
            ("x".to_string(), "a=b".to_string()),
        ]
    );
    assert_eq!(e.args, vec!["-v", "extra", "-o", "not=override"]);
    assert_eq!(e.line, 1);
}

#[test]
fn option_scanning_like_getopt() {
    let e = one("filter unix - n n - 10 pipe -n name -o a=1 flags=Rq user=f argv=/bin/f -o b=2\n");
    assert_eq!(e.overrides, vec![("a".to_string(), "1".to_string())]);
    assert_eq!(
        e.args,
        vec![
            "-n",
            "name",
            "flags=Rq",
            "user=f",
            "argv=/bin/f",
            "-o",
            "b=2"
        ]
    );
    let e = one("x unix - - - - - cmd -- -o a=1\n");
    assert!(e.overrides.is_empty());
    assert_eq!(e.args, vec!["--", "-o", "a=1"]);
    let e = one("x unix - - - - - cmd { a b } -o a=1\n");
    assert_eq!(e.args, vec!["a b", "-o", "a=1"]);
}

#[test]
fn malformed_entries() {
    for (text, want) in [
        (
            "smtp inet n - n - smtpd\n",
            "/etc/postern/master.cf:1: unexpected end of entry; need at least 8 fields",
        ),
        (
            "# c\nsmtp\n",
            "/etc/postern/master.cf:2: unexpected end of entry; need at least 8 fields",
        ),
        (
            "smtp tcp n - n - - smtpd\n",
            "/etc/postern/master.cf:1: invalid transport type: tcp",
        ),
        (
            "smtp inet x - n - - smtpd\n",
            "/etc/postern/master.cf:1: bad private field: \"x\" (expected y, n or -)",
        ),
        (
            "smtp inet yes - n - - smtpd\n",
            "/etc/postern/master.cf:1: bad private field: \"yes\" (expected y, n or -)",
        ),
        (
            "smtp inet n - 1 - - smtpd\n",
            "/etc/postern/master.cf:1: bad chroot field: \"1\" (expected y, n or -)",
        ),
        (
            "smtp inet n -x n - - smtpd\n",
            "/etc/postern/master.cf:1: bad unprivileged field: \"-x\" (expected y, n, - or a user name)",
        ),
        (
            "smtp inet n a/b n - - smtpd\n",
            "/etc/postern/master.cf:1: bad unprivileged field: \"a/b\" (expected y, n, - or a user name)",
        ),
        (
            "smtp inet n - n x - smtpd\n",
            "/etc/postern/master.cf:1: bad wakeup field: \"x\"",
        ),
        (
            "smtp inet n - n ? - smtpd\n",
            "/etc/postern/master.cf:1: bad wakeup field: \"?\"",
        ),
        (
            "smtp inet n - n -5 - smtpd\n",
            "/etc/postern/master.cf:1: bad wakeup field: \"-5\"",
        ),
        (
            "smtp inet n - n 99999999999 - smtpd\n",
            "/etc/postern/master.cf:1: bad wakeup field: \"99999999999\"",
        ),
        (
            "smtp inet n - n - 1.5 smtpd\n",
            "/etc/postern/master.cf:1: bad maximal process count: \"1.5\"",
        ),
        (
            "smtp inet n - n - -1 smtpd\n",
            "/etc/postern/master.cf:1: bad maximal process count: \"-1\"",
        ),
        (
            "smtp inet n - n - 99999999999 smtpd\n",
            "/etc/postern/master.cf:1: bad maximal process count: \"99999999999\"",
        ),
        (
            "smtp inet n - n - - smtpd -o\n",
            "/etc/postern/master.cf:1: -o without a value",
        ),
        (
            "smtp inet n - n - - smtpd -o foo\n",
            "/etc/postern/master.cf:1: bad -o override: \"foo\" (expected name=value)",
        ),
        (
            "smtp inet n - n - - smtpd -o =x\n",
            "/etc/postern/master.cf:1: bad -o override: \"=x\" (bad parameter name)",
        ),
        (
            "smtp inet n - n - - smtpd -o a-b=x\n",
            "/etc/postern/master.cf:1: bad -o override: \"a-b=x\" (bad parameter name)",
        ),
        (
            "smtp inet n - n - - smtpd -o { a = b\n",
            "/etc/postern/master.cf:1: missing '}' after \"{ a = b\"",
        ),
        (
            "a unix - - - - - x\n\nb unix - - - - - x\na unix - - - - - y\n",
            "/etc/postern/master.cf:4: duplicate service: a/unix (first defined at line 1)",
        ),
        (
            "../x unix - - - - - x\n",
            "/etc/postern/master.cf:1: bad service name: \"../x\"",
        ),
        (
            ".. fifo - - - - - x\n",
            "/etc/postern/master.cf:1: bad service name: \"..\"",
        ),
        (
            "{ a } unix - - - - - x\n",
            "/etc/postern/master.cf:1: unexpected '{ a }' in the first 8 fields",
        ),
        (
            "  smtp inet n - n - - smtpd\n",
            "/etc/postern/master.cf:1: line starts with white space but there is no line before it to continue",
        ),
    ] {
        assert_eq!(parse_err(text), want, "{text:?}");
    }
    // Same name with another type is a different service.
    let m = parse("a unix - - - - - x\na inet n - - - - y\n");
    assert_eq!(m.services.len(), 2);
}

#[test]
fn load_from_dir() {
    let dir = tempfile::tempdir().expect("tempdir");
    let e = MasterCf::load(dir.path()).expect_err("missing");
    assert!(e.to_string().contains("master.cf: cannot read:"), "{e}");
    std::fs::write(
        dir.path().join("master.cf"),
        "cleanup unix n - n - 0 cleanup\n",
    )
    .expect("write");
    let m = MasterCf::load(dir.path()).expect("loads");
    assert_eq!(m.path, dir.path().join("master.cf"));
    assert_eq!(m.services[0].command, "cleanup");
}

#[test]
fn socket_paths() {
    let mut cf = MainCf::defaults();
    cf.set("queue_directory", "/q");
    let e = one("cleanup unix n - n - 0 cleanup\n");
    assert_eq!(e.socket_path(&cf), Path::new("/q/public/cleanup"));
    let e = one("local unix - n n - - local\n");
    assert_eq!(e.socket_path(&cf), Path::new("/q/private/local"));
}

fn addrs(service: &str, main: &str) -> Result<Vec<SocketAddr>, String> {
    let e = one(&format!("{service} inet n - n - - smtpd\n"));
    e.inet_addresses(&main_cf(main)).map_err(|e| e.to_string())
}

fn sa(s: &str) -> SocketAddr {
    s.parse().expect("socket address")
}

#[test]
fn inet_address_forms() {
    let v4 = "inet_protocols = ipv4\n";
    for (service, want) in [
        ("smtp", "0.0.0.0:25"),
        ("submission", "0.0.0.0:587"),
        ("submissions", "0.0.0.0:465"),
        ("smtps", "0.0.0.0:465"),
        ("pop3", "0.0.0.0:110"),
        ("pop3s", "0.0.0.0:995"),
        ("imap", "0.0.0.0:143"),
        ("imaps", "0.0.0.0:993"),
        ("lmtp", "0.0.0.0:24"),
        ("2525", "0.0.0.0:2525"),
        ("127.0.0.1:1025", "127.0.0.1:1025"),
        ("127.0.0.1:smtp", "127.0.0.1:25"),
        ("[127.0.0.1]:26", "127.0.0.1:26"),
    ] {
        assert_eq!(addrs(service, v4), Ok(vec![sa(want)]), "{service}");
    }
    assert_eq!(
        addrs("[::1]:1025", "inet_protocols = all\n"),
        Ok(vec![sa("[::1]:1025")])
    );
    // localhost resolves without DNS (hosts file); keep only IPv4 ones.
    let local = addrs("localhost:2525", v4).expect("localhost resolves");
    assert!(local.contains(&sa("127.0.0.1:2525")), "{local:?}");
}

#[test]
fn well_known_ports_do_not_depend_on_etc_services() {
    // Hosts whose /etc/services lacks "submissions" (older netbase) or has
    // no such file (containers) still get these ports: the built-in table
    // is consulted first.
    for (name, port) in [
        ("smtp", 25),
        ("submission", 587),
        ("submissions", 465),
        ("smtps", 465),
        ("pop3", 110),
        ("pop3s", 995),
        ("imap", 143),
        ("imaps", 993),
    ] {
        assert_eq!(
            PORTS.iter().find(|(n, _)| *n == name).map(|(_, p)| *p),
            Some(port),
            "{name} is in the built-in table"
        );
        assert_eq!(port_of(name), Some(port), "{name}");
    }
    assert_eq!(port_of("587"), Some(587));
    for bad in ["", "65536", "-1", "no-such-service-here", "submission/tcp"] {
        assert_eq!(port_of(bad), None, "{bad:?}");
    }
}

#[test]
fn inet_interfaces_and_protocols() {
    let has_v6 = host_has_ipv6();
    let all = addrs("smtp", "").expect("all");
    let mut want = vec![sa("0.0.0.0:25")];
    if has_v6 {
        want.push(sa("[::]:25"));
    }
    assert_eq!(all, want);

    let lo = addrs(
        "2525",
        "inet_interfaces = loopback-only\ninet_protocols = ipv4\n",
    );
    assert_eq!(lo, Ok(vec![sa("127.0.0.1:2525")]));
    let lo = addrs("2525", "inet_interfaces = loopback-only\n").expect("loopback");
    assert_eq!(lo[0], sa("127.0.0.1:2525"));
    assert_eq!(lo.len(), if has_v6 { 2 } else { 1 });

    let list = addrs(
        "2525",
        "inet_interfaces = 127.0.0.1, [::1] 127.0.0.2 127.0.0.1\ninet_protocols = ipv4, ipv6\n",
    );
    assert_eq!(
        list,
        Ok(vec![
            sa("127.0.0.1:2525"),
            sa("[::1]:2525"),
            sa("127.0.0.2:2525")
        ])
    );
    let list = addrs(
        "2525",
        "inet_interfaces = 127.0.0.1, ::1\ninet_protocols = ipv4\n",
    );
    assert_eq!(list, Ok(vec![sa("127.0.0.1:2525")]));
    // $name expansion applies.
    let list = addrs("2525", "me = 127.0.0.9\ninet_interfaces = $me\n");
    assert_eq!(list, Ok(vec![sa("127.0.0.9:2525")]));
}

#[test]
fn inet_address_errors() {
    for (service, main, want) in [
        (
            "nosuchservice-postern",
            "",
            "/etc/postern/master.cf:1: unknown service port: \"nosuchservice-postern\"",
        ),
        (
            "70000",
            "",
            "/etc/postern/master.cf:1: unknown service port: \"70000\"",
        ),
        (
            "127.0.0.1:",
            "",
            "/etc/postern/master.cf:1: bad inet service name: \"127.0.0.1:\"",
        ),
        (
            "::1:25",
            "",
            "/etc/postern/master.cf:1: bad inet service name: \"::1:25\"",
        ),
        (
            "[::1]25",
            "",
            "/etc/postern/master.cf:1: bad inet service name: \"[::1]25\"",
        ),
        (
            "smtp",
            "inet_interfaces =\n",
            "/etc/postern/master.cf:1: inet_interfaces is empty",
        ),
        (
            "smtp",
            "inet_interfaces = all, 127.0.0.1\n",
            "/etc/postern/master.cf:1: inet_interfaces: \"all\" must be the only value",
        ),
        (
            "smtp",
            "inet_protocols = none\n",
            "/etc/postern/master.cf:1: bad inet_protocols value: \"none\"",
        ),
        (
            "[::1]:25",
            "inet_protocols = ipv4\n",
            "/etc/postern/master.cf:1: service [::1]:25: no address to listen on (inet_interfaces = all, inet_protocols = ipv4)",
        ),
    ] {
        assert_eq!(
            addrs(service, main),
            Err(want.to_string()),
            "{service} {main:?}"
        );
    }
}

proptest! {
    #[test]
    fn parse_never_panics(text in "\\PC*") {
        let _ = MasterCf::parse(&text, Path::new(FILE));
    }

    #[test]
    fn parse_never_panics_on_master_like_text(
        lines in proptest::collection::vec(
            "[ \\t]?[a-z0-9:\\[\\]{}?=\\-]{1,6}( [a-z0-9:\\[\\]{}?=\\-]{1,6}){0,12}", 0..6)
    ) {
        let text = lines.join("\n");
        if let Ok(m) = MasterCf::parse(&text, Path::new(FILE)) {
            let cf = MainCf::defaults();
            for s in &m.services {
                let _ = s.key();
                let _ = s.socket_path(&cf);
                if s.kind == ServiceType::Inet && !s.name.contains(|c: char| c.is_ascii_alphabetic()) {
                    let _ = s.inet_addresses(&cf);
                }
            }
        }
    }
}
