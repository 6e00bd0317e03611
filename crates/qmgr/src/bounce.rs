//! Non-delivery notifications (RFC 3464 delivery status notifications).
//!
//! When recipients fail permanently, the sender gets one message listing
//! them, with a machine-readable message/delivery-status part and the
//! original header. It is sent with the null sender (so it can never bounce
//! back and loop) and enters the queue through cleanup like any mail.

use postern_config::MainCf;
use postern_dsn::{Action, Kind, Recipient, Report, Ret, Typed};
use postern_ipc::{CleanupClient, DeliveryStatus, Mailbox, ReversePath};
use postern_queue::{QueueFile, QueueId};
use std::path::Path;
use std::time::{Duration, SystemTime};

/// Builds the notification (LF line endings) with postern-dsn: the
/// failed recipients with their statuses, the DSN parameters the queue file
/// kept (ENVID, RET, each ORCPT), and the original returned whole or as
/// headers as RET and bounce_size_limit say (Postfix's rules).
pub fn build(
    main: &MainCf,
    id: &QueueId,
    original: &QueueFile,
    failed: &[(Mailbox, DeliveryStatus)],
    now: SystemTime,
) -> std::io::Result<Vec<u8>> {
    build_report(main, id, original, Kind::Failure, failed, now)
}

/// A double bounce: the notification that could not be delivered (its
/// sender is null), reported to `postmaster` (2bounce_notice_recipient)
/// as Postfix's "Postmaster Copy: Undelivered Mail".
pub fn build_double(
    main: &MainCf,
    id: &QueueId,
    original: &QueueFile,
    failed: &[(Mailbox, DeliveryStatus)],
    postmaster: &Mailbox,
    now: SystemTime,
) -> std::io::Result<Vec<u8>> {
    report(
        main,
        id,
        original,
        Kind::Failure,
        failed,
        now,
        Some(postmaster),
    )
}

/// Builds a notification of `kind` for `entries`: a bounce
/// ([`Kind::Failure`], action failed) or a NOTIFY=SUCCESS report
/// ([`Kind::Success`], action delivered).
pub fn build_report(
    main: &MainCf,
    id: &QueueId,
    original: &QueueFile,
    kind: Kind,
    failed: &[(Mailbox, DeliveryStatus)],
    now: SystemTime,
) -> std::io::Result<Vec<u8>> {
    report(main, id, original, kind, failed, now, None)
}

fn report(
    main: &MainCf,
    id: &QueueId,
    original: &QueueFile,
    kind: Kind,
    failed: &[(Mailbox, DeliveryStatus)],
    now: SystemTime,
    postmaster: Option<&Mailbox>,
) -> std::io::Result<Vec<u8>> {
    let action = match kind {
        Kind::Success => Action::Delivered,
        Kind::Delay => Action::Delayed,
        Kind::Failure => Action::Failed,
    };
    let env = original.envelope();
    let mut report = Report::new(
        kind,
        main.str("myhostname"),
        id.to_string(),
        env.sender.bare(),
        env.arrival,
        now,
    );
    report.mail_name = main.str("mail_name");
    if let Ok(t) = main.time("delay_warning_time") {
        report.delay_warning_time = t;
    }
    if let Ok(t) = main.time("maximal_queue_lifetime") {
        report.maximal_queue_lifetime = t;
    }
    report.postmaster_copy = postmaster.map(|m| m.to_string());
    report.envid = env.attribute("dsn_envid").map(str::to_string);
    report.ret = env
        .attribute("dsn_ret")
        .and_then(postern_ipc::Ret::parse)
        .map(|r| match r {
            postern_ipc::Ret::Full => Ret::Full,
            postern_ipc::Ret::Hdrs => Ret::Headers,
        });
    report.original_size = Some(original.content_len());
    report.bounce_size_limit = main.size("bounce_size_limit").ok().filter(|&l| l > 0);
    for (addr, status) in failed {
        let mut r = Recipient::new(addr.to_string(), action, status);
        if let Some(q) = env.recipients.iter().find(|r| &r.address == addr) {
            if !q.original.is_empty() && q.original != addr.to_string() {
                r.original = Some(q.original.clone());
            }
            r.orcpt = q
                .orcpt
                .as_ref()
                .map(|o| Typed::new(o.addr_type.clone(), o.address.clone()));
        }
        if let Some((mta, reply)) = remote_reply(status.text()) {
            r.remote_mta = Some(Typed::new("dns", mta));
            r.diagnostic = Some(Typed::new("smtp", reply));
        }
        report.recipients.push(r);
    }
    let mut out = Vec::new();
    postern_dsn::compose(&report, original.content_reader(), &mut out)?;
    Ok(out)
}

/// A remote server's refusal as smtp words it, "host NAME[ADDR] said:
/// REPLY (in reply to X command)": the server's name and its reply, for
/// Remote-MTA and the smtp Diagnostic-Code.
fn remote_reply(text: &str) -> Option<(String, String)> {
    let rest = text.strip_prefix("host ")?;
    let (server, reply) = rest.split_once(" said: ")?;
    let name = server.split('[').next()?.to_string();
    let reply = match reply.rfind(" (in reply to ") {
        Some(i) => &reply[..i],
        None => reply,
    };
    Some((name, reply.to_string()))
}

/// The queue file attribute `notify` of a double bounce.
pub const DOUBLE_BOUNCE: &str = "2bounce";

/// Whether a recipient's NOTIFY asks for this kind of notification
/// (RFC 3461 section 4.1): without NOTIFY, failures (and delays) are
/// reported and successes are not; NEVER silences everything.
pub fn wanted(notify: Option<postern_ipc::Notify>, kind: Kind) -> bool {
    use postern_ipc::Notify;
    match (notify, kind) {
        (None, Kind::Success) => false,
        (None, _) => true,
        (Some(Notify::Never), _) => false,
        (Some(Notify::On { success, .. }), Kind::Success) => success,
        (Some(Notify::On { failure, .. }), Kind::Failure) => failure,
        (Some(Notify::On { delay, .. }), Kind::Delay) => delay,
    }
}

/// Hands a notification built by [`build`] to cleanup, from the null
/// sender to `to`, without blocking the scheduler: the queue ID, or why not.
pub async fn send(
    socket: &Path,
    text: Vec<u8>,
    to: &Mailbox,
    timeout: Duration,
    double: bool,
) -> Result<String, String> {
    let mut attributes = vec![
        ("origin".to_string(), "bounce".to_string()),
        ("protocol".to_string(), "local".to_string()),
    ];
    if double {
        // A double bounce that cannot be delivered is dropped, not
        // reported again (no loop through the postmaster).
        attributes.push(("notify".to_string(), DOUBLE_BOUNCE.to_string()));
    }
    let mut c = CleanupClient::open(socket, attributes, 0, timeout)
        .await
        .map_err(|e| e.to_string())?;
    c.sender(&ReversePath::Null)
        .await
        .map_err(|e| e.to_string())?;
    c.recipient(to, &to.to_string())
        .await
        .map_err(|e| e.to_string())?;
    c.content(&text).await.map_err(|e| e.to_string())?;
    c.commit().await.map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::UNIX_EPOCH;

    #[test]
    fn notify_decides_who_hears_what() {
        use postern_ipc::Notify;
        let on = |success, failure, delay| {
            Some(Notify::On {
                success,
                failure,
                delay,
            })
        };
        assert!(wanted(None, Kind::Failure) && wanted(None, Kind::Delay));
        assert!(!wanted(None, Kind::Success));
        assert!(!wanted(Some(Notify::Never), Kind::Failure));
        assert!(wanted(on(true, false, false), Kind::Success));
        assert!(!wanted(on(true, false, false), Kind::Failure));
        assert!(wanted(on(false, true, false), Kind::Failure));
        assert!(!wanted(on(false, true, false), Kind::Delay));
    }

    #[test]
    fn remote_replies_are_split_out() {
        assert_eq!(
            remote_reply(
                "host mx.example[192.0.2.1] said: 550 5.1.1 <a@b>: no (in reply to RCPT TO command)"
            ),
            Some(("mx.example".into(), "550 5.1.1 <a@b>: no".into()))
        );
        assert_eq!(remote_reply("unknown user: \"x\""), None);
    }

    #[test]
    fn the_report_is_built_from_delivery_statuses() {
        use postern_queue::{Envelope, QueueDirs, QueueFileWriter, Recipient};
        let tmp = tempfile::tempdir().unwrap();
        let dirs = QueueDirs::new(tmp.path().join("queue"));
        dirs.create_all().unwrap();
        let rcpt = |a: &str, o: &str| Recipient::new(a.parse().unwrap(), o);
        let mut with_dsn = rcpt("far@x.test", "far@x.test");
        with_dsn.orcpt = Some(postern_ipc::Orcpt {
            addr_type: "rfc822".into(),
            address: "Far@X.test".into(),
        });
        let env = Envelope {
            arrival: UNIX_EPOCH + Duration::from_secs(1_700_000_000),
            sender: "s@example.org".parse().unwrap(),
            recipients: vec![
                rcpt("late@x.test", "late@x.test"),
                rcpt("gone@x.test", "Gone@x.test"),
                with_dsn,
            ],
            attributes: vec![
                ("dsn_envid".into(), "ENV-1".into()),
                ("dsn_ret".into(), "HDRS".into()),
            ],
        };
        let mut w = QueueFileWriter::create(&dirs).unwrap();
        w.write_envelope(&env).unwrap();
        w.write_content(b"Subject: hi\n\nbody\n").unwrap();
        let id = w.commit().unwrap();
        let qf =
            QueueFile::open(&dirs.file(postern_queue::Queue::Incoming, &id), id.clone()).unwrap();
        let failed = [
            (
                "late@x.test".parse().unwrap(),
                DeliveryStatus::temporary(4, 7, "message delivery timed out"),
            ),
            (
                "gone@x.test".parse().unwrap(),
                DeliveryStatus::permanent(1, 1, "unknown user: \"gone\""),
            ),
            (
                "far@x.test".parse().unwrap(),
                DeliveryStatus::permanent(
                    1,
                    1,
                    "host mx.x.test[192.0.2.7] said: 550 5.1.1 no such user (in reply to RCPT TO command)",
                ),
            ),
        ];
        let out = build(&MainCf::defaults(), &id, &qf, &failed, SystemTime::now()).unwrap();
        let text = String::from_utf8(out).unwrap();
        for want in [
            "<late@x.test>: message delivery timed out\n",
            "<gone@x.test>: unknown user: \"gone\"\n",
            "Final-Recipient: rfc822; late@x.test\n",
            "Status: 5.4.7\n",
            "Diagnostic-Code: X-Postern; message delivery timed out\n",
            "Final-Recipient: rfc822; gone@x.test\n",
            "Original-Recipient: rfc822; Gone@x.test\n",
            "Status: 5.1.1\n",
            // ORCPT wins over the address as received; the server's answer
            // becomes Remote-MTA and an smtp Diagnostic-Code.
            "Original-Recipient: rfc822; Far@X.test\n",
            "Remote-MTA: dns; mx.x.test\n",
            "Diagnostic-Code: smtp; 550 5.1.1 no such user\n",
            "Original-Envelope-Id: ENV-1\n",
            "Content-Type: text/rfc822-headers",
            "Subject: hi\n",
        ] {
            assert!(text.contains(want), "{want:?} not in\n{text}");
        }
        assert!(
            !text.contains("\nbody\n"),
            "RET=HDRS returns no body:\n{text}"
        );
    }
}
