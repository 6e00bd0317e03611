//! Tests of the main.cf grammar, expansion and typed access.

use std::path::Path;
use std::time::Duration;

use proptest::prelude::*;

use super::*;

const FILE: &str = "/etc/postern/main.cf";

fn parse(text: &str) -> MainCf {
    MainCf::parse(text, Path::new(FILE)).expect("parses")
}

fn parse_err(text: &str) -> String {
    MainCf::parse(text, Path::new(FILE))
        .expect_err("must fail")
        .to_string()
}

#[test]
fn assignments_and_white_space() {
    let cf = parse(
        "a=1\nb = 2  \nc\t=\t three words \t\n# comment\n   # indented comment\n\nd =\ne = x # not a comment\n",
    );
    assert_eq!(cf.raw("a"), Some("1"));
    assert_eq!(cf.raw("b"), Some("2"));
    assert_eq!(cf.raw("c"), Some("three words"));
    assert_eq!(cf.raw("d"), Some(""));
    assert_eq!(cf.raw("e"), Some("x # not a comment"));
    assert!(cf.is_set("d"));
    assert!(!cf.is_set("f"));
    assert_eq!(cf.raw("f"), None);
}

#[test]
fn continuation_lines() {
    let cf =
        parse("mydestination = a,\n    b,\n# comment between\n\n\tc\nmynetworks = 10.0.0.0/8\r\n");
    assert_eq!(cf.raw("mydestination"), Some("a, b, c"));
    assert_eq!(cf.list("mydestination"), vec!["a", "b", "c"]);
    assert_eq!(cf.raw("mynetworks"), Some("10.0.0.0/8"));
}

#[test]
fn malformed_lines() {
    for (text, want) in [
        (
            "foo bar\n",
            "/etc/postern/main.cf:1: missing '=' after parameter name: \"foo bar\"",
        ),
        (
            "a = 1\n\n= 2\n",
            "/etc/postern/main.cf:3: missing parameter name before '='",
        ),
        (
            "fo-o = 1\n",
            "/etc/postern/main.cf:1: bad parameter name: \"fo-o\"",
        ),
        (
            "foo bar = 1\n",
            "/etc/postern/main.cf:1: bad parameter name: \"foo bar\"",
        ),
        (
            "f\u{e9}e = 1\n",
            "/etc/postern/main.cf:1: bad parameter name: \"f\u{e9}e\"",
        ),
        (
            "  a = 1\n",
            "/etc/postern/main.cf:1: line starts with white space but there is no line before it to continue",
        ),
        (
            "# only comment\n  a = 1\n",
            "/etc/postern/main.cf:2: line starts with white space but there is no line before it to continue",
        ),
        (
            "a = 1\nb\n",
            "/etc/postern/main.cf:2: missing '=' after parameter name: \"b\"",
        ),
    ] {
        assert_eq!(parse_err(text), want, "{text:?}");
    }
}

#[test]
fn error_line_of_a_continued_entry_is_its_first_line() {
    assert_eq!(
        parse_err("a = 1\nfoo\n  bar\n"),
        "/etc/postern/main.cf:2: missing '=' after parameter name: \"foo bar\""
    );
}

#[test]
fn expansion_table() {
    let cf = parse(
        "a = A\nb = [$a]\nc = ${b}-$(a)\nd = $$a and $$$a\nempty =\n\
         e = ${a?set}|${empty?set}|${a:unset}|${empty:unset}\n\
         f = ${a?${b}x}\ng = $c$c\nh = cost $ 5 and $\ni = ${unknown_x?yes}${unknown_x:no}\n\
         j = $a_b\na_b = AB\nk = ${a?{x}}\n",
    );
    for (name, want) in [
        ("a", "A"),
        ("b", "[A]"),
        ("c", "[A]-A"),
        ("d", "$a and $A"),
        ("e", "set|||unset"),
        ("f", "[A]x"),
        ("g", "[A]-A[A]-A"),
        ("h", "cost $ 5 and $"),
        ("i", "no"),
        ("j", "AB"),
        ("k", "{x}"),
    ] {
        assert_eq!(cf.str(name), want, "{name}");
    }
    assert_eq!(cf.validate(), Ok(()));
}

#[test]
fn defaults_expand() {
    let mut cf = MainCf::defaults();
    cf.set("myhostname", "mail.example.com");
    assert_eq!(cf.str("mydomain"), "example.com");
    assert_eq!(cf.str("myorigin"), "mail.example.com");
    assert_eq!(
        cf.list("mydestination"),
        vec!["mail.example.com", "localhost.example.com", "localhost"]
    );
    assert_eq!(cf.str("smtpd_banner"), "mail.example.com ESMTP Postern");
    assert_eq!(
        cf.list("local_recipient_maps"),
        vec!["unix:passwd.byname", "hash:/etc/aliases"]
    );
    cf.set("myhostname", "localhost");
    assert_eq!(cf.str("mydomain"), "localdomain");
}

#[test]
fn computed_defaults() {
    let cf = MainCf::defaults();
    assert_eq!(cf.str("myhostname"), default_hostname());
    assert_eq!(cf.str("mydomain"), domain_of_hostname(&default_hostname()));
    assert_eq!(cf.str("config_directory"), "/etc/postern");
    assert_eq!(cf.config_dir(), Path::new("/etc/postern"));
    assert_eq!(cf.file(), Path::new("main.cf"));
    assert_eq!(cf.str("queue_directory"), "/var/spool/postern");
    assert_eq!(cf.str("no_such_thing"), "");
    assert_eq!(cf.validate(), Ok(()));
    assert!(cf.warnings().is_empty());
    // parse(): config_directory is the file's directory.
    let cf = parse("");
    assert_eq!(cf.str("config_directory"), "/etc/postern");
    let cf = MainCf::parse("", Path::new("/tmp/x/main.cf")).expect("parses");
    assert_eq!(cf.config_dir(), Path::new("/tmp/x"));
    assert_eq!(cf.path("config_directory"), Path::new("/tmp/x"));
    let cf = MainCf::parse("", Path::new("main.cf")).expect("parses");
    assert_eq!(cf.config_dir(), Path::new("."));
}

#[test]
fn mydomain_follows_myhostname_in_main_cf() {
    let cf = parse("myhostname = mx1.mail.example.org\n");
    assert_eq!(cf.str("mydomain"), "mail.example.org");
    let cf = parse("mydomain = example.net\nmyhostname = mx.$mydomain\n");
    assert_eq!(cf.str("myhostname"), "mx.example.net");
    // myhostname referring to an unset mydomain, whose default needs myhostname: a loop.
    let cf = parse("myhostname = mx.$mydomain\n");
    assert_eq!(
        cf.validate().map_err(|e| e.to_string()),
        Err("/etc/postern/main.cf:1: parameter myhostname: recursion loop via mydomain".into())
    );
}

#[test]
fn loops_are_errors() {
    for (text, want) in [
        (
            "a = $b\nb = $a\n",
            "/etc/postern/main.cf:1: parameter a: recursion loop via b",
        ),
        (
            "x = 1\nb = $a\na = $b\n",
            "/etc/postern/main.cf:2: parameter b: recursion loop via a",
        ),
        (
            "a = x$a\n",
            "/etc/postern/main.cf:1: parameter a: recursion loop via a",
        ),
        (
            "a = ${b?x}\nb = ${c:y}\nc = $a\n",
            "/etc/postern/main.cf:1: parameter a: recursion loop via c",
        ),
        (
            "myorigin = $mydestination\nmyhostname = $myorigin\n",
            "/etc/postern/main.cf:1: parameter myorigin: recursion loop via myhostname",
        ),
    ] {
        let cf = parse(text);
        assert_eq!(
            cf.validate().map_err(|e| e.to_string()),
            Err(want.to_string()),
            "{text:?}"
        );
    }
    // Reading a looping value gives "" rather than hanging or panicking.
    let cf = parse("a = $b\nb = $a\n");
    assert_eq!(cf.str("a"), "");
    assert_eq!(cf.list("a"), Vec::<String>::new());
    assert!(cf.bool("a").is_err());
}

#[test]
fn deep_chain_and_blow_up_are_bounded() {
    let mut text = String::new();
    for i in 0..150 {
        text.push_str(&format!("p{i} = $p{}\n", i + 1));
    }
    let cf = parse(&text);
    let e = cf.validate().expect_err("too deep");
    assert!(e.reason.contains("too many levels"), "{e}");
    assert_eq!(e.line, 1);

    let mut text = String::from("p0 = x\n");
    for i in 1..40 {
        text.push_str(&format!("p{i} = $p{0}$p{0}$p{0}$p{0}\n", i - 1));
    }
    let cf = parse(&text);
    let e = cf.validate().expect_err("too long");
    assert!(e.reason.contains("longer than"), "{e}");
    // A modest chain is fine.
    let mut text = String::new();
    for i in 0..90 {
        text.push_str(&format!("p{i} = $p{}\n", i + 1));
    }
    text.push_str("p90 = end\n");
    assert_eq!(parse(&text).str("p0"), "end");
}

#[test]
fn bad_macro_syntax() {
    for (text, want) in [
        (
            "a = ${b\n",
            "/etc/postern/main.cf:1: parameter a: unmatched '{' in \"${b\"",
        ),
        (
            "a = $(b\n",
            "/etc/postern/main.cf:1: parameter a: unmatched '(' in \"$(b\"",
        ),
        (
            "a = ${}\n",
            "/etc/postern/main.cf:1: parameter a: bad macro syntax: \"${}\"",
        ),
        (
            "a = ${b!c}\n",
            "/etc/postern/main.cf:1: parameter a: bad macro syntax: \"${b!c}\"",
        ),
        (
            "a = $b\nb = ${?x}\n",
            "/etc/postern/main.cf:2: parameter b: bad macro syntax: \"${?x}\"",
        ),
    ] {
        let cf = parse(text);
        assert_eq!(
            cf.validate().map_err(|e| e.to_string()),
            Err(want.to_string()),
            "{text:?}"
        );
    }
}

#[test]
fn raw_parameters_are_not_expanded() {
    let cf = MainCf::defaults();
    assert_eq!(cf.str("forward_path"), "$home/.forward");
    assert!(cf.warnings().is_empty());
    let cf = parse("forward_path = $home/.forward-$user, $home/.forward\n");
    assert_eq!(
        cf.list("forward_path"),
        vec!["$home/.forward-$user", "$home/.forward"]
    );
    assert!(cf.warnings().is_empty(), "{:?}", cf.warnings());
    assert_eq!(cf.validate(), Ok(()));
}

#[test]
fn warnings() {
    let cf = parse(
        "foo = bar\nmyorigin = $nowhere.example\nused = x\nmydomain = $used\nmail_name = A\nmail_name = B\ncond = ${alsonowhere?x}\n",
    );
    assert_eq!(
        cf.warnings(),
        &[
            "/etc/postern/main.cf:1: unused parameter: foo=bar".to_string(),
            "/etc/postern/main.cf:2: undefined parameter: nowhere (referenced by myorigin)"
                .to_string(),
            "/etc/postern/main.cf:6: overriding earlier entry at line 5: mail_name=B".to_string(),
            "/etc/postern/main.cf:7: unused parameter: cond=${alsonowhere?x}".to_string(),
        ]
    );
    assert_eq!(cf.str("myorigin"), ".example");
    assert_eq!(cf.str("mail_name"), "B");
    assert_eq!(cf.str("foo"), "bar");
    assert_eq!(cf.validate(), Ok(()));
    // Defining the missing name with -o removes the undefined warning; -o
    // names are never "unused".
    let mut cf = cf;
    cf.set("nowhere", "here");
    cf.set("another_unknown", "1");
    assert_eq!(cf.str("myorigin"), "here.example");
    assert!(
        !cf.warnings()
            .iter()
            .any(|w| w.contains("undefined") || w.contains("another_unknown"))
    );
}

#[test]
fn overrides_win() {
    let mut cf =
        parse("smtpd_timeout = 60s\nmydestination = $myhostname\nmyhostname = a.example\n");
    cf.set("smtpd_timeout", "10s");
    cf.set("myhostname", " b.example ");
    cf.set("relay_domains", "");
    assert_eq!(cf.time("smtpd_timeout"), Ok(Duration::from_secs(10)));
    assert_eq!(cf.raw("smtpd_timeout"), Some("10s"));
    assert_eq!(cf.list("mydestination"), vec!["b.example"]);
    assert!(cf.is_set("relay_domains"));
    // An override's error has no line.
    cf.set("smtpd_timeout", "forever");
    assert_eq!(
        cf.validate().map_err(|e| e.to_string()),
        Err("/etc/postern/main.cf: bad time parameter value: smtpd_timeout = forever".into())
    );
}

#[test]
fn validate_typed_values() {
    for (text, want) in [
        (
            "a = 1\nmessage_size_limit = abc\n",
            "/etc/postern/main.cf:2: bad numerical parameter value: message_size_limit = abc",
        ),
        (
            "message_size_limit = 10k\n",
            "/etc/postern/main.cf:1: bad numerical parameter value: message_size_limit = 10k",
        ),
        (
            "smtpd_helo_required = perhaps\n",
            "/etc/postern/main.cf:1: bad boolean parameter value: smtpd_helo_required = perhaps",
        ),
        (
            "max_idle = 1y\n",
            "/etc/postern/main.cf:1: bad time parameter value: max_idle = 1y",
        ),
        (
            "max_use = 1.5\n",
            "/etc/postern/main.cf:1: bad numerical parameter value: max_use = 1.5",
        ),
        (
            "smtpd_forbid_bare_newline = yes\n",
            "/etc/postern/main.cf:1: bad parameter value: smtpd_forbid_bare_newline = yes (expected one of: normalize, reject, no)",
        ),
        (
            "inet_protocols = ipv4, ipx\n",
            "/etc/postern/main.cf:1: bad parameter value: inet_protocols = ipv4, ipx (expected one of: all, ipv4, ipv6)",
        ),
        // Expanded before checking: the value named is the expanded one.
        (
            "lim = lots\nmessage_size_limit = $lim\n",
            "/etc/postern/main.cf:2: bad numerical parameter value: message_size_limit = lots",
        ),
        // A default that refers to a bad value is reported without a line.
        (
            "mail_name = x\nmyhostname = a\nsmtp_helo_name = ok\nmax_use = \n",
            "/etc/postern/main.cf:4: bad numerical parameter value: max_use = ",
        ),
    ] {
        let cf = parse(text);
        assert_eq!(
            cf.validate().map_err(|e| e.to_string()),
            Err(want.to_string()),
            "{text:?}"
        );
    }
    let cf =
        parse("lim = 2048\nmessage_size_limit = $lim\nsmtpd_helo_required = YES\nmax_idle = 5m\n");
    assert_eq!(cf.validate(), Ok(()));
    assert_eq!(cf.size("message_size_limit"), Ok(2048));
    assert_eq!(cf.bool("smtpd_helo_required"), Ok(true));
    assert_eq!(cf.time("max_idle"), Ok(Duration::from_secs(300)));
}

#[test]
fn typed_accessors() {
    let cf = parse("b1 = on\nb2 = Off\ni1 = -3\nt1 = 2d\ns1 = 12\nbad = x\n");
    assert_eq!(cf.bool("b1"), Ok(true));
    assert_eq!(cf.bool("b2"), Ok(false));
    assert_eq!(cf.int("i1"), Ok(-3));
    assert_eq!(cf.time("t1"), Ok(Duration::from_secs(172_800)));
    assert_eq!(cf.size("s1"), Ok(12));
    assert_eq!(
        cf.bool("bad").map_err(|e| e.to_string()),
        Err("/etc/postern/main.cf:6: bad boolean parameter value: bad = x".into())
    );
    assert_eq!(
        cf.int("bad").map_err(|e| e.to_string()),
        Err("/etc/postern/main.cf:6: bad numerical parameter value: bad = x".into())
    );
    assert_eq!(
        cf.size("s0").map_err(|e| e.to_string()),
        Err("/etc/postern/main.cf: bad numerical parameter value: s0 = ".into())
    );
    assert!(cf.time("bad").is_err());
    // Defaults of the table.
    let d = MainCf::defaults();
    assert_eq!(d.bool("disable_vrfy_command"), Ok(true));
    assert_eq!(d.int("default_process_limit"), Ok(100));
    assert_eq!(
        d.time("maximal_queue_lifetime"),
        Ok(Duration::from_secs(5 * 86_400))
    );
    assert_eq!(d.time("max_idle"), Ok(Duration::from_secs(100)));
    assert_eq!(d.size("message_size_limit"), Ok(10_240_000));
    // A main.cf copied from Postfix means the same here: a bare number is
    // in the parameter's own unit (days for the queue lifetimes).
    let cf =
        parse("maximal_queue_lifetime = 5\nbounce_queue_lifetime = 2\nminimal_backoff_time = 30\n");
    assert_eq!(cf.validate(), Ok(()));
    assert_eq!(
        cf.time("maximal_queue_lifetime"),
        Ok(Duration::from_secs(5 * 86_400))
    );
    assert_eq!(
        cf.time("bounce_queue_lifetime"),
        Ok(Duration::from_secs(2 * 86_400))
    );
    assert_eq!(cf.time("minimal_backoff_time"), Ok(Duration::from_secs(30)));
    assert_eq!(d.str("smtpd_forbid_bare_newline"), "normalize");
    assert_eq!(d.list("relay_domains"), Vec::<String>::new());
    assert_eq!(d.list("allow_mail_to_commands"), vec!["alias", "forward"]);
    assert_eq!(d.path("mail_spool_directory"), Path::new("/var/mail"));
}

#[test]
fn effective_values() {
    let cf = parse(
        "myhostname = mx.example.com\nmyorigin = $mydomain\nzzz_custom = 1\nmail_name = $zzz_custom\n",
    );
    let only = cf.effective(true, false);
    assert_eq!(
        only,
        vec![
            ("mail_name".to_string(), "$zzz_custom".to_string()),
            ("myhostname".to_string(), "mx.example.com".to_string()),
            ("myorigin".to_string(), "$mydomain".to_string()),
            ("zzz_custom".to_string(), "1".to_string()),
        ]
    );
    let only_x = cf.effective(true, true);
    assert_eq!(only_x[0], ("mail_name".to_string(), "1".to_string()));
    assert_eq!(
        only_x[2],
        ("myorigin".to_string(), "example.com".to_string())
    );
    let all = cf.effective(false, false);
    assert_eq!(all.len(), PARAMETERS.len() + 1);
    assert!(all.windows(2).all(|w| w[0].0 < w[1].0));
    let get =
        |v: &[(String, String)], n: &str| v.iter().find(|(k, _)| k == n).map(|(_, v)| v.clone());
    assert_eq!(
        get(&all, "mydestination").as_deref(),
        Some("$myhostname, localhost.$mydomain, localhost")
    );
    // Computed defaults print their computed value even unexpanded.
    assert_eq!(get(&all, "mydomain").as_deref(), Some("example.com"));
    assert_eq!(
        get(&all, "config_directory").as_deref(),
        Some("/etc/postern")
    );
    let allx = cf.effective(false, true);
    assert_eq!(
        get(&allx, "mydestination").as_deref(),
        Some("mx.example.com, localhost.example.com, localhost")
    );
    let d = MainCf::defaults().effective(false, false);
    assert_eq!(get(&d, "myhostname"), Some(default_hostname()));
    assert!(MainCf::defaults().effective(true, true).is_empty());
}

#[test]
fn expand_arbitrary_text() {
    let cf = parse("myhostname = h.example\n");
    assert_eq!(
        cf.expand("x $myhostname ${mydomain} $$"),
        "x h.example example $"
    );
    assert_eq!(cf.expand("${"), "");
}

#[test]
fn load_reads_validates_and_reports() {
    let dir = tempfile::tempdir().expect("tempdir");
    let e = MainCf::load(dir.path()).expect_err("missing main.cf");
    assert!(
        e.to_string()
            .starts_with(&format!("{}/main.cf: cannot read:", dir.path().display())),
        "{e}"
    );

    std::fs::write(
        dir.path().join("main.cf"),
        "queue_directory = $config_directory/q\nfoo = 1\n",
    )
    .expect("write");
    let cf = MainCf::load(dir.path()).expect("loads");
    assert_eq!(cf.config_dir(), dir.path());
    assert_eq!(cf.file(), dir.path().join("main.cf"));
    assert_eq!(cf.path("queue_directory"), dir.path().join("q"));
    assert_eq!(cf.warnings().len(), 1);

    std::fs::write(dir.path().join("main.cf"), "a = 1\nmax_use = lots\n").expect("write");
    let e = MainCf::load(dir.path()).expect_err("invalid");
    assert_eq!(e.line, 2);
    assert_eq!(e.reason, "bad numerical parameter value: max_use = lots");

    std::fs::write(dir.path().join("main.cf"), b"a = 1\nb = \xff\n").expect("write");
    let e = MainCf::load(dir.path()).expect_err("not utf-8");
    assert_eq!((e.line, e.reason.as_str()), (2, "invalid UTF-8"));
}

proptest! {
    #[test]
    fn parse_never_panics(text in "\\PC*") {
        if let Ok(cf) = MainCf::parse(&text, Path::new(FILE)) {
            let _ = cf.validate();
            let _ = cf.effective(false, true);
            for (name, _) in cf.effective(true, false) {
                let _ = cf.str(&name);
                let _ = cf.bool(&name);
                let _ = cf.list(&name);
            }
        }
    }

    #[test]
    fn parse_never_panics_on_config_like_text(
        lines in proptest::collection::vec("[ \\t]{0,2}[a-c_$#={}()?:\\- ]{0,12}", 0..12)
    ) {
        let text = lines.join("\n");
        if let Ok(cf) = MainCf::parse(&text, Path::new(FILE)) {
            let _ = cf.validate();
            for (name, _) in cf.effective(true, false) {
                let _ = cf.str(&name);
            }
        }
    }
}

#[test]
fn bounded_reads_refuse_out_of_range_values_instead_of_clamping() {
    let cf = parse("smtpd_recipient_limit = 0\nhopcount_limit = 7\nsmtpd_hard_error_limit = -1\n");
    assert_eq!(
        cf.bounded::<usize>("smtpd_recipient_limit")
            .map_err(|e| e.to_string()),
        Err("/etc/postern/main.cf:1: invalid smtpd_recipient_limit parameter value 0 < 1".into())
    );
    assert_eq!(cf.bounded::<usize>("hopcount_limit"), Ok(7));
    assert!(cf.bounded::<u32>("smtpd_hard_error_limit").is_err());
    // validate() (every daemon's start-up and `postern check`) says the same.
    assert_eq!(
        cf.validate().map_err(|e| e.to_string()),
        Err("/etc/postern/main.cf:1: invalid smtpd_recipient_limit parameter value 0 < 1".into())
    );
    // A value within the table's bounds that does not fit the caller's type.
    let cf = parse("hopcount_limit = 300\n");
    assert!(cf.bounded::<u8>("hopcount_limit").is_err());
    assert_eq!(
        MainCf::defaults().bounded::<usize>("default_destination_recipient_limit"),
        Ok(50)
    );
}
