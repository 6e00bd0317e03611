//! The composed notifications as another MIME implementation sees them:
//! Python's standard `email` package (policy `default`) must find a
//! multipart/report with report-type delivery-status, the per-recipient
//! fields with the right values and the original as message/rfc822 or
//! text/rfc822-headers; and no supplied field contents can change that
//! structure (proptest).
//!
//! The tests are skipped, with a note, only when `python3` cannot be run.

use postern_dsn::{Action, DeliveryStatus, EnhancedCode, Kind, Recipient, Report, Ret, Typed};
use proptest::prelude::*;
use std::io::Write;
use std::process::{Command, Stdio};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// Prints what Python sees, one tab-separated record a line, values with
/// their white space collapsed.
const SCRIPT: &str = r#"
import sys, email, email.policy
from email.parser import BytesHeaderParser
sys.stdout.reconfigure(encoding='utf-8', errors='surrogateescape')
data = sys.stdin.buffer.read()
m = email.message_from_bytes(data, policy=email.policy.default)
def norm(v): return ' '.join(str(v).split())
def out(*a): print('\t'.join(norm(x) for x in a))
out('type', m.get_content_type())
out('report-type', m.get_param('report-type') or '')
out('keys', ','.join(m.keys()))
defects = list(m.defects)
parts = list(m.iter_parts()) if m.is_multipart() else []
out('parts', len(parts))
for i, p in enumerate(parts):
    out('part', i, p.get_content_type())
    defects += p.defects
out('defects', len(defects), ' '.join(type(d).__name__ for d in defects))
if len(parts) == 3:
    ds = parts[1]
    if ds.get_content_type() == 'message/delivery-status':
        blocks = ds.get_payload()
    else:
        # Python has no parser for message/global-delivery-status: split the
        # part's raw text into its blocks and parse each as a header block.
        raw = data.split(b'\n--' + m.get_boundary().encode() + b'\n')[2]
        body = raw.split(b'\n\n', 1)[1]
        blocks = [BytesHeaderParser(policy=email.policy.default).parsebytes(b + b'\n')
                  for b in body.strip(b'\n').split(b'\n\n')]
    out('blocks', len(blocks))
    for j, b in enumerate(blocks):
        defects += b.defects
        for k, v in b.raw_items():
            out('field', j, k, v)
    orig = parts[2]
    if orig.get_content_maintype() == 'message':
        sub = orig.get_payload()[0]
        for k, v in sub.raw_items():
            out('orig-field', k, v)
        out('orig-body', sub.get_payload())
    else:
        out('orig-text', orig.get_content())
out('all-defects', len(defects))
"#;

/// What Python printed: records of fields.
struct Seen(Vec<Vec<String>>);

impl Seen {
    fn one(&self, key: &str) -> String {
        let r: Vec<_> = self.0.iter().filter(|r| r[0] == key).collect();
        assert_eq!(r.len(), 1, "one {key} record in {:?}", self.0);
        r[0][1..].join("\t")
    }

    /// The value of `name` in delivery-status block `block` (0: the
    /// per-message fields), if present once.
    fn field(&self, block: usize, name: &str) -> Option<String> {
        let b = block.to_string();
        let v: Vec<_> = self
            .0
            .iter()
            .filter(|r| r[0] == "field" && r[1] == b && r[2].eq_ignore_ascii_case(name))
            .collect();
        assert!(v.len() <= 1, "{name} twice in block {block}");
        v.first().map(|r| r.get(3).cloned().unwrap_or_default())
    }

    fn names(&self, block: usize) -> Vec<String> {
        let b = block.to_string();
        self.0
            .iter()
            .filter(|r| r[0] == "field" && r[1] == b)
            .map(|r| r[2].clone())
            .collect()
    }

    fn orig_field(&self, name: &str) -> Option<String> {
        self.0
            .iter()
            .find(|r| r[0] == "orig-field" && r[1].eq_ignore_ascii_case(name))
            .map(|r| r.get(2).cloned().unwrap_or_default())
    }
}

/// Python's view of `msg`, or `None` when python3 is not there.
fn python(msg: &[u8]) -> Option<Seen> {
    let child = Command::new("python3")
        .arg("-c")
        .arg(SCRIPT)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn();
    let mut child = match child {
        Ok(c) => c,
        Err(e) => {
            eprintln!("skipped: python3 cannot be run: {e}");
            return None;
        }
    };
    child.stdin.take().unwrap().write_all(msg).unwrap();
    let output = child.wait_with_output().unwrap();
    assert!(
        output.status.success(),
        "python failed: {}\non:\n{}",
        String::from_utf8_lossy(&output.stderr),
        String::from_utf8_lossy(msg)
    );
    let text = String::from_utf8(output.stdout).unwrap();
    Some(Seen(
        text.lines()
            .map(|l| l.split('\t').map(str::to_string).collect())
            .collect(),
    ))
}

fn t(secs: u64) -> SystemTime {
    UNIX_EPOCH + Duration::from_secs(secs)
}

const ORIGINAL: &[u8] = b"From: s@example.org\nTo: gone@x.test\nSubject: hi there\nMessage-ID: <o@example.org>\n\nthe body\n";

fn report(kind: Kind) -> Report {
    let mut r = Report::new(
        kind,
        "mx.example.com",
        "4AbCdEf123",
        "s@example.org",
        t(1_700_000_000),
        t(1_700_014_400),
    );
    let mut gone = Recipient::new(
        "gone@x.test",
        Action::Failed,
        &DeliveryStatus::permanent(
            1,
            1,
            "host mx.x.test[192.0.2.1] said: 550 5.1.1 <gone@x.test>: Recipient address rejected: User unknown in virtual mailbox table (in reply to RCPT TO command)",
        ),
    );
    gone.orcpt = Typed::parse("rfc822;Gone@alias.test");
    gone.remote_mta = Some(Typed::new("dns", "mx.x.test"));
    gone.diagnostic = Some(Typed::new(
        "smtp",
        "550 5.1.1 <gone@x.test>: Recipient address rejected: User unknown in virtual mailbox table",
    ));
    let late = Recipient::new(
        "late@x.test",
        Action::Delayed,
        &DeliveryStatus::temporary(
            4,
            1,
            "connect to mx.x.test[192.0.2.2]:25: Connection timed out",
        ),
    );
    r.recipients = vec![gone, late];
    r
}

fn compose(r: &Report, original: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    postern_dsn::compose(r, original, &mut out).unwrap();
    out
}

/// The structure every notification must have.
fn assert_structure(s: &Seen, recipients: usize) {
    assert_eq!(s.one("type"), "multipart/report");
    assert_eq!(s.one("report-type"), "delivery-status");
    assert_eq!(s.one("parts"), "3");
    assert_eq!(s.one("defects"), "0\t");
    assert_eq!(s.one("all-defects"), "0");
    assert_eq!(s.one("blocks"), (recipients + 1).to_string());
    assert_eq!(
        s.one("keys"),
        "From,To,Subject,Date,Message-Id,Auto-Submitted,MIME-Version,Content-Type,Content-Transfer-Encoding"
    );
}

#[test]
fn python_sees_a_bounce_with_the_whole_message() {
    let r = report(Kind::Failure);
    let Some(s) = python(&compose(&r, ORIGINAL)) else {
        return;
    };
    assert_structure(&s, 2);
    let parts: Vec<_> =
        s.0.iter()
            .filter(|r| r[0] == "part")
            .map(|r| r[2].clone())
            .collect();
    assert_eq!(
        parts,
        ["text/plain", "message/delivery-status", "message/rfc822"]
    );
    assert_eq!(s.field(0, "Reporting-MTA").unwrap(), "dns; mx.example.com");
    assert_eq!(s.field(0, "X-Postern-Queue-ID").unwrap(), "4AbCdEf123");
    assert_eq!(
        s.field(0, "X-Postern-Sender").unwrap(),
        "rfc822; s@example.org"
    );
    assert!(s.field(0, "Arrival-Date").is_some());
    assert_eq!(
        s.field(1, "Final-Recipient").unwrap(),
        "rfc822; gone@x.test"
    );
    assert_eq!(
        s.field(1, "Original-Recipient").unwrap(),
        "rfc822; Gone@alias.test"
    );
    assert_eq!(s.field(1, "Action").unwrap(), "failed");
    assert_eq!(s.field(1, "Status").unwrap(), "5.1.1");
    assert_eq!(s.field(1, "Remote-MTA").unwrap(), "dns; mx.x.test");
    assert_eq!(
        s.field(1, "Diagnostic-Code").unwrap(),
        "smtp; 550 5.1.1 <gone@x.test>: Recipient address rejected: User unknown in virtual mailbox table"
    );
    assert_eq!(
        s.field(2, "Final-Recipient").unwrap(),
        "rfc822; late@x.test"
    );
    assert_eq!(s.field(2, "Original-Recipient"), None);
    assert_eq!(s.field(2, "Action").unwrap(), "failed");
    assert_eq!(s.field(2, "Status").unwrap(), "5.4.1");
    assert_eq!(
        s.field(2, "Diagnostic-Code").unwrap(),
        "X-Postern; connect to mx.x.test[192.0.2.2]:25: Connection timed out"
    );
    assert_eq!(s.orig_field("Subject").unwrap(), "hi there");
    assert_eq!(s.orig_field("Return-Path").unwrap(), "<s@example.org>");
    assert_eq!(s.one("orig-body"), "the body");
}

#[test]
fn python_sees_headers_only_for_ret_hdrs() {
    let mut r = report(Kind::Failure);
    r.ret = Some(Ret::Headers);
    r.envid = Some("ENV-42".into());
    let Some(s) = python(&compose(&r, ORIGINAL)) else {
        return;
    };
    assert_structure(&s, 2);
    let parts: Vec<_> =
        s.0.iter()
            .filter(|r| r[0] == "part")
            .map(|r| r[2].clone())
            .collect();
    assert_eq!(
        parts,
        [
            "text/plain",
            "message/delivery-status",
            "text/rfc822-headers"
        ]
    );
    assert_eq!(s.field(0, "Original-Envelope-Id").unwrap(), "ENV-42");
    let text = s.one("orig-text");
    assert!(text.contains("Subject: hi there"), "{text}");
    assert!(!text.contains("the body"));
}

#[test]
fn python_sees_a_delay_warning() {
    let mut r = report(Kind::Delay);
    r.recipients.remove(0);
    let Some(s) = python(&compose(&r, ORIGINAL)) else {
        return;
    };
    assert_structure(&s, 1);
    assert_eq!(s.field(1, "Action").unwrap(), "delayed");
    assert_eq!(s.field(1, "Status").unwrap(), "4.4.1");
    assert!(s.field(1, "Will-Retry-Until").is_some());
    let parts: Vec<_> =
        s.0.iter()
            .filter(|r| r[0] == "part")
            .map(|r| r[2].clone())
            .collect();
    assert_eq!(parts[2], "text/rfc822-headers");
}

#[test]
fn python_sees_a_success_report() {
    let mut r = report(Kind::Success);
    r.recipients[0].action = Action::Relayed;
    r.recipients[0].status = EnhancedCode(2, 0, 0);
    r.recipients[0].diagnostic = Some(Typed::new("smtp", "250 2.0.0 Ok"));
    r.recipients[1].action = Action::Delivered;
    let Some(s) = python(&compose(&r, ORIGINAL)) else {
        return;
    };
    assert_structure(&s, 2);
    assert_eq!(s.field(1, "Action").unwrap(), "relayed");
    assert_eq!(s.field(1, "Status").unwrap(), "2.0.0");
    assert_eq!(s.field(1, "Diagnostic-Code").unwrap(), "smtp; 250 2.0.0 Ok");
    assert_eq!(s.field(2, "Action").unwrap(), "delivered");
    assert_eq!(s.field(2, "Status").unwrap(), "2.4.1");
}

#[test]
fn python_sees_the_global_types_for_utf8() {
    let mut r = report(Kind::Failure);
    r.recipients[0].address = "jöran@bücher.test".into();
    r.recipients[0].orcpt = Typed::parse("utf-8;jöran@bücher.test");
    let Some(s) = python(&compose(&r, "Subject: Grüße\n\nbody\n".as_bytes())) else {
        return;
    };
    assert_structure(&s, 2);
    let parts: Vec<_> =
        s.0.iter()
            .filter(|r| r[0] == "part")
            .map(|r| r[2].clone())
            .collect();
    assert_eq!(
        parts,
        [
            "text/plain",
            "message/global-delivery-status",
            "message/global"
        ]
    );
    assert_eq!(
        s.field(1, "Final-Recipient").unwrap(),
        "utf-8; jöran@bücher.test"
    );
    assert_eq!(
        s.field(1, "Original-Recipient").unwrap(),
        "utf-8; jöran@bücher.test"
    );
    assert_eq!(
        s.field(2, "Final-Recipient").unwrap(),
        "rfc822; late@x.test"
    );
    assert_eq!(s.field(1, "Action").unwrap(), "failed");
    assert_eq!(s.orig_field("Subject").unwrap(), "Grüße");
}

/// Strings that try to break lines, start fields and boundaries, or are
/// just anything.
fn nasty() -> impl Strategy<Value = String> {
    prop_oneof![
        any::<String>(),
        "[a-z@.<>;:\" \t\r\n-]{0,40}",
        "(\n|\r\n|\r|--|Subject: x|\n\n|\u{85}|\u{2028}|é|[a-z ]{1,20}|;|\t){0,12}",
        "[a-zA-Z0-9 ]{100,400}",
        "[^ ]{80,1200}",
    ]
}

fn recipient() -> impl Strategy<Value = Recipient> {
    (
        nasty(),
        proptest::option::of(nasty()),
        proptest::option::of((nasty(), nasty())),
        nasty(),
        proptest::option::of(nasty()),
        proptest::option::of((nasty(), nasty())),
        0u16..1000,
        0u16..1000,
    )
        .prop_map(|(address, original, orcpt, reason, mta, diag, s, d)| {
            let mut r = Recipient::new(
                address,
                Action::Failed,
                &DeliveryStatus::permanent(s, d, reason),
            );
            r.original = original;
            r.orcpt = orcpt.map(|(k, v)| Typed::new(k, v));
            r.remote_mta = mta.map(|m| Typed::new("dns", m));
            r.diagnostic = diag.map(|(k, v)| Typed::new(k, v));
            r
        })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]

    #[test]
    fn no_field_contents_change_the_structure(
        kind in prop_oneof![Just(Kind::Failure), Just(Kind::Delay), Just(Kind::Success)],
        ret in proptest::option::of(prop_oneof![Just(Ret::Full), Just(Ret::Headers)]),
        smtputf8 in any::<bool>(),
        host in nasty(),
        mail_name in nasty(),
        queue_id in nasty(),
        sender in nasty(),
        envid in proptest::option::of(nasty()),
        postmaster in proptest::option::of(nasty()),
        recipients in proptest::collection::vec(recipient(), 1..4),
    ) {
        let mut r = Report::new(kind, host, queue_id, sender, t(1_700_000_000), t(1_700_014_400));
        r.mail_name = mail_name;
        r.ret = ret;
        r.smtputf8 = smtputf8;
        r.envid = envid;
        r.postmaster_copy = postmaster;
        r.recipients = recipients;
        let msg = compose(&r, ORIGINAL);
        for line in msg.split(|b| *b == b'\n') {
            prop_assert!(line.len() <= 998);
        }
        let Some(s) = python(&msg) else { return Ok(()); };
        assert_structure(&s, r.recipients.len());
        let want_action = match kind {
            Kind::Failure => "failed",
            Kind::Delay => "delayed",
            Kind::Success => "delivered",
        };
        let allowed = [
            "Final-Recipient", "Original-Recipient", "Action", "Status", "Remote-MTA",
            "Diagnostic-Code", "Last-Attempt-Date", "Will-Retry-Until",
        ];
        for (i, rcpt) in r.recipients.iter().enumerate() {
            let b = i + 1;
            prop_assert_eq!(s.field(b, "Action").unwrap(), want_action);
            let EnhancedCode(_, sub, det) = rcpt.status;
            let class = match kind { Kind::Failure => 5, Kind::Delay => 4, Kind::Success => 2 };
            prop_assert_eq!(s.field(b, "Status").unwrap(), format!("{class}.{sub}.{det}"));
            let fr = s.field(b, "Final-Recipient").unwrap();
            prop_assert!(fr.starts_with("rfc822;") || fr.starts_with("utf-8;"), "{}", fr);
            prop_assert!(s.field(b, "Diagnostic-Code").is_some());
            for name in s.names(b) {
                prop_assert!(allowed.contains(&name.as_str()), "field {} in block {}", name, b);
            }
        }
        let names0 = s.names(0);
        prop_assert_eq!(names0.first().map(String::as_str), Some("Reporting-MTA"));
        prop_assert!(names0.len() <= 5, "{:?}", names0);
    }
}
