//! Non-delivery notifications (RFC 3464 delivery status notifications).
//!
//! When recipients fail permanently, the sender gets one message listing
//! them, with a machine-readable message/delivery-status part and the
//! original header. It is sent with the null sender (so it can never bounce
//! back and loop) and enters the queue through cleanup like any mail.

use postern_config::MainCf;
use postern_ipc::{CleanupClient, DeliveryStatus, Mailbox, ReversePath};
use postern_queue::{QueueFile, QueueId};
use std::io::Read;
use std::path::Path;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// Strips characters that could break a header or a report line.
fn clean(s: &str) -> String {
    s.chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect()
}

/// Builds the notification text (LF line endings).
pub fn build(
    main: &MainCf,
    id: &QueueId,
    original: &QueueFile,
    failed: &[(Mailbox, DeliveryStatus)],
    now: SystemTime,
) -> std::io::Result<Vec<u8>> {
    let host = main.str("myhostname");
    let mail_name = main.str("mail_name");
    let env = original.envelope();
    let secs = now.duration_since(UNIX_EPOCH).unwrap_or_default().as_secs();
    let boundary = format!("{id}.{secs}/{host}");
    let mut m = String::new();
    m.push_str(&format!(
        "From: MAILER-DAEMON@{host} (Mail Delivery System)\n"
    ));
    m.push_str(&format!("To: {}\n", clean(&env.sender.bare())));
    m.push_str("Subject: Undelivered Mail Returned to Sender\n");
    m.push_str("Auto-Submitted: auto-replied\n");
    m.push_str("MIME-Version: 1.0\n");
    m.push_str(&format!(
        "Content-Type: multipart/report; report-type=delivery-status;\n\tboundary=\"{boundary}\"\n"
    ));
    m.push_str("Content-Transfer-Encoding: 8bit\n\n");
    m.push_str("This is a MIME-encapsulated message.\n\n");
    m.push_str(&format!("--{boundary}\nContent-Description: Notification\nContent-Type: text/plain; charset=utf-8\n\n"));
    m.push_str(&format!("This is the mail system at host {host}.\n\n"));
    m.push_str("I'm sorry to have to inform you that your message could not\n");
    m.push_str("be delivered to one or more recipients. It's attached below.\n\n");
    m.push_str("For further assistance, please send mail to postmaster.\n\n");
    m.push_str(&format!("                   The {mail_name} program\n\n"));
    for (addr, status) in failed {
        m.push_str(&format!(
            "<{}>: {}\n",
            clean(&addr.to_string()),
            clean(status.text())
        ));
    }
    m.push('\n');
    m.push_str(&format!("--{boundary}\nContent-Description: Delivery report\nContent-Type: message/delivery-status\n\n"));
    m.push_str(&format!("Reporting-MTA: dns; {host}\n"));
    m.push_str(&format!("X-Postern-Queue-ID: {id}\n"));
    m.push_str(&format!(
        "X-Postern-Sender: rfc822; {}\n",
        clean(&env.sender.bare())
    ));
    m.push_str(&format!(
        "Arrival-Date: {}\n",
        postern_mailtime::rfc5322(env.arrival)
    ));
    for (addr, failure) in failed {
        // Returned to the sender means final: a temporary code that ran
        // out of time (4.4.7) is reported as 5.4.7.
        let status = failure.code().permanent();
        m.push_str(&format!(
            "\nFinal-Recipient: rfc822; {}\n",
            clean(&addr.to_string())
        ));
        if let Some(r) = env.recipients.iter().find(|r| &r.address == addr)
            && r.original != r.address.to_string()
        {
            m.push_str(&format!(
                "Original-Recipient: rfc822; {}\n",
                clean(&r.original)
            ));
        }
        m.push_str(&format!(
            "Action: failed\nStatus: {status}\nDiagnostic-Code: X-Postern; {}\n",
            clean(failure.text())
        ));
    }
    m.push('\n');
    m.push_str(&format!(
        "--{boundary}\nContent-Description: Undelivered Message Headers\nContent-Type: text/rfc822-headers\nContent-Transfer-Encoding: 8bit\n\n"
    ));
    let mut out = m.into_bytes();
    // The original header, read up to the first empty line (bounded).
    let mut content = Vec::new();
    original
        .content_reader()
        .take(256 * 1024)
        .read_to_end(&mut content)?;
    let header_end = find_header_end(&content);
    out.extend_from_slice(&content[..header_end]);
    if !out.ends_with(b"\n") {
        out.push(b'\n');
    }
    out.extend_from_slice(format!("\n--{boundary}--\n").as_bytes());
    Ok(out)
}

fn find_header_end(content: &[u8]) -> usize {
    if content.starts_with(b"\n") {
        return 0;
    }
    match content.windows(2).position(|w| w == b"\n\n") {
        Some(i) => i + 1,
        None => content.len(),
    }
}

/// Hands a notification built by [`build`] to cleanup, from the null
/// sender to `to`, without blocking the scheduler: the queue ID, or why not.
pub async fn send(
    socket: &Path,
    text: Vec<u8>,
    to: &Mailbox,
    timeout: Duration,
) -> Result<String, String> {
    let mut c = CleanupClient::open(
        socket,
        vec![
            ("origin".into(), "bounce".into()),
            ("protocol".into(), "local".into()),
        ],
        0,
        timeout,
    )
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

    #[test]
    fn header_end_is_found() {
        assert_eq!(find_header_end(b"A: b\nC: d\n\nbody\n"), 10);
        assert_eq!(find_header_end(b"\nbody"), 0);
        assert_eq!(find_header_end(b"A: b\n"), 5);
    }

    #[test]
    fn the_report_is_built_from_delivery_statuses() {
        use postern_queue::{Envelope, QueueDirs, QueueFileWriter, Recipient};
        let tmp = tempfile::tempdir().unwrap();
        let dirs = QueueDirs::new(tmp.path().join("queue"));
        dirs.create_all().unwrap();
        let rcpt = |a: &str, o: &str| Recipient::new(a.parse().unwrap(), o);
        let env = Envelope {
            arrival: UNIX_EPOCH + Duration::from_secs(1_700_000_000),
            sender: "s@example.org".parse().unwrap(),
            recipients: vec![
                rcpt("late@x.test", "late@x.test"),
                rcpt("gone@x.test", "Gone@x.test"),
            ],
            attributes: vec![],
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
        ];
        let out = build(&MainCf::defaults(), &id, &qf, &failed, SystemTime::now()).unwrap();
        let text = String::from_utf8(out).unwrap();
        for want in [
            "<late@x.test>: message delivery timed out\n",
            "<gone@x.test>: unknown user: \"gone\"\n",
            "Final-Recipient: rfc822; late@x.test\nAction: failed\nStatus: 5.4.7\nDiagnostic-Code: X-Postern; message delivery timed out\n",
            "Final-Recipient: rfc822; gone@x.test\nOriginal-Recipient: rfc822; Gone@x.test\nAction: failed\nStatus: 5.1.1\n",
            "Subject: hi\n",
        ] {
            assert!(text.contains(want), "{want:?} not in\n{text}");
        }
    }
}
