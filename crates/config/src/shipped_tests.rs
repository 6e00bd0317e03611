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
            "cleanup/unix",
            "qmgr/unix",
            "local/unix",
            "pickup/unix",
            "auth/unix"
        ]
    );
    let smtp = &m.services[0];
    assert_eq!(smtp.kind, ServiceType::Inet);
    assert!(!smtp.private && !smtp.chroot);
    assert_eq!((smtp.maxproc, smtp.command.as_str()), (None, "smtpd"));
    let cleanup = &m.services[1];
    assert_eq!(cleanup.maxproc, Some(0));
    let qmgr = &m.services[2];
    assert_eq!(
        (qmgr.wakeup, qmgr.wakeup_conditional, qmgr.maxproc),
        (300, false, Some(1))
    );
    let local = &m.services[3];
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
}
