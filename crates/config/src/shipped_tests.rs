//! Tests of the files shipped in the repository: docs/configuration.md's
//! parameter table must match PARAMETERS, and the shipped main.cf and
//! master.cf must load cleanly.

use std::path::Path;

use crate::{MainCf, MasterCf, ServiceType, Unpriv, parameter_table_markdown};

const DOC: &str = include_str!("../../../docs/configuration.md");
const BEGIN: &str = "<!-- params:begin -->";
const END: &str = "<!-- params:end -->";

fn section(doc: &str) -> Option<(usize, usize)> {
    let b = doc.find(BEGIN)? + BEGIN.len();
    let e = b + doc[b..].find(END)?;
    Some((b, e))
}

#[test]
fn docs_parameter_table() {
    let want = parameter_table_markdown();
    if std::env::var_os("POSTERN_BLESS").is_some() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../docs/configuration.md");
        let doc = std::fs::read_to_string(&path).expect("read docs/configuration.md");
        let (b, e) = section(&doc).expect("markers in docs/configuration.md");
        let new = format!("{}\n{}{}", &doc[..b], want, &doc[e..]);
        std::fs::write(&path, new).expect("write docs/configuration.md");
        return;
    }
    let (b, e) = section(DOC).expect("docs/configuration.md has the params markers");
    assert_eq!(
        DOC[b..e].trim(),
        want.trim(),
        "docs/configuration.md parameter table is stale; run \
         POSTERN_BLESS=1 cargo test -p postern-config docs_parameter_table"
    );
}

#[test]
fn shipped_main_cf_is_clean() {
    let cf = MainCf::parse(
        include_str!("../../../main.cf"),
        Path::new("/etc/postern/main.cf"),
    )
    .expect("shipped main.cf parses");
    cf.validate().expect("shipped main.cf validates");
    assert_eq!(cf.warnings(), &[] as &[String]);
    assert_eq!(cf.config_dir(), Path::new("/etc/postern"));
    assert_eq!(cf.str("home_mailbox"), "Maildir/");
    assert!(
        !cf.is_set("myhostname"),
        "myhostname must stay commented out"
    );
    assert_eq!(cf.list("mynetworks"), vec!["127.0.0.0/8", "[::1]/128"]);
    assert_eq!(cf.size("message_size_limit"), Ok(10_240_000));
    // The certificate `postern install` makes when missing, under -c DIR.
    assert_eq!(cf.str("smtpd_tls_cert_file"), "/etc/postern/tls/cert.pem");
    assert_eq!(cf.str("smtpd_tls_key_file"), "/etc/postern/tls/key.pem");
    let mut elsewhere = MainCf::parse(
        include_str!("../../../main.cf"),
        Path::new("/srv/mail/etc/main.cf"),
    )
    .expect("shipped main.cf parses");
    assert_eq!(
        elsewhere.str("smtpd_tls_key_file"),
        "/srv/mail/etc/tls/key.pem"
    );
    elsewhere.set("config_directory", "/opt/postern");
    assert_eq!(
        elsewhere.str("smtpd_tls_cert_file"),
        "/opt/postern/tls/cert.pem"
    );
}

#[test]
fn shipped_main_cf_lines_are_commented() {
    // Every setting is preceded by a comment line explaining it.
    let mut prev_comment = false;
    for line in include_str!("../../../main.cf").lines() {
        let t = line.trim();
        if t.starts_with('#') {
            prev_comment = true;
        } else if t.is_empty() {
            continue;
        } else {
            assert!(prev_comment, "uncommented setting in main.cf: {line}");
            prev_comment = false;
        }
    }
}

#[test]
fn shipped_master_cf_is_clean() {
    let m = MasterCf::parse(
        include_str!("../../../master.cf"),
        Path::new("/etc/postern/master.cf"),
    )
    .expect("shipped master.cf parses");
    let keys: Vec<String> = m.services.iter().map(|s| s.key()).collect();
    assert_eq!(
        keys,
        [
            "smtp/inet",
            "submission/inet",
            "submissions/inet",
            "cleanup/unix",
            "qmgr/unix",
            "local/unix",
            "smtp/unix",
            "pickup/unix",
            "auth/unix"
        ]
    );
    let smtp = &m.services[0];
    assert_eq!(smtp.kind, ServiceType::Inet);
    assert!(!smtp.private && !smtp.chroot);
    assert_eq!((smtp.maxproc, smtp.command.as_str()), (None, "smtpd"));
    let cleanup = &m.services[3];
    assert_eq!(cleanup.maxproc, Some(0));
    let qmgr = &m.services[4];
    assert_eq!(
        (qmgr.wakeup, qmgr.wakeup_conditional, qmgr.maxproc),
        (300, false, Some(1))
    );
    let local = &m.services[5];
    assert_eq!(local.unpriv, Unpriv::Root);
    assert!(local.private);
    // And it works with the shipped main.cf.
    let cf = MainCf::parse(
        include_str!("../../../main.cf"),
        Path::new("/etc/postern/main.cf"),
    )
    .expect("shipped main.cf parses");
    assert_eq!(
        local.socket_path(&cf),
        Path::new("/var/spool/postern/private/local")
    );
    assert_eq!(
        qmgr.socket_path(&cf),
        Path::new("/var/spool/postern/private/qmgr")
    );
    let addrs = smtp.inet_addresses(&cf).expect("smtp addresses");
    assert!(
        addrs
            .iter()
            .all(|a| a.port() == 25 && a.ip().is_unspecified())
    );
    assert!(smtp.overrides.is_empty());

    // The submission services, as in Postfix's sample master.cf.
    let restrictions = [
        ("smtpd_sasl_auth_enable", "yes"),
        (
            "smtpd_client_restrictions",
            "permit_sasl_authenticated,reject",
        ),
        ("smtpd_sender_restrictions", "reject_sender_login_mismatch"),
        (
            "smtpd_relay_restrictions",
            "permit_sasl_authenticated,reject",
        ),
    ];
    for (i, name, port, tls) in [
        (
            1,
            "submission",
            587,
            [
                ("smtpd_tls_security_level", "encrypt"),
                ("smtpd_tls_auth_only", "yes"),
            ]
            .as_slice(),
        ),
        (
            2,
            "submissions",
            465,
            [("smtpd_tls_wrappermode", "yes")].as_slice(),
        ),
    ] {
        let s = &m.services[i];
        assert_eq!(s.name, name);
        assert_eq!(s.kind, ServiceType::Inet);
        assert!(!s.private && !s.chroot, "{name}");
        assert_eq!(s.unpriv, Unpriv::Default, "{name}");
        assert_eq!((s.maxproc, s.command.as_str()), (None, "smtpd"), "{name}");
        assert!(s.args.is_empty(), "{name}: {:?}", s.args);
        let syslog = format!("postern/{name}");
        let mut want: Vec<(&str, &str)> = vec![("syslog_name", syslog.as_str())];
        want.extend(tls.iter().copied());
        want.extend(restrictions);
        let mut have: Vec<(&str, &str)> = s
            .overrides
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect();
        want.sort_unstable();
        have.sort_unstable();
        assert_eq!(have, want, "{name}");
        let addrs = s.inet_addresses(&cf).expect("addresses");
        assert!(
            addrs
                .iter()
                .all(|a| a.port() == port && a.ip().is_unspecified()),
            "{name}: {addrs:?}"
        );
        // The overrides are valid parameter values: main.cf plus them validates.
        let mut with = cf.clone();
        for (k, v) in &s.overrides {
            with.set(k, v);
        }
        with.validate().expect("overrides validate");
        assert_eq!(
            with.list("smtpd_relay_restrictions"),
            ["permit_sasl_authenticated", "reject"]
        );
        assert!(with.bool("smtpd_sasl_auth_enable").expect("bool"));
        assert_eq!(with.str("syslog_name"), syslog);
    }
}
