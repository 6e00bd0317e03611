//! Non-delivery notifications (RFC 3464 delivery status notifications).
//!
//! When recipients fail permanently, the sender gets one message listing
//! them, with a machine-readable message/delivery-status part and the
//! original header. It is sent with the null sender (so it can never bounce
//! back and loop) and enters the queue through cleanup like any mail.

use postern_config::MainCf;
use postern_ipc::{BlockingChannel, CHUNK_SIZE, CleanupReply, CleanupRequest};
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
    failed: &[(String, String, String)],
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
    m.push_str(&format!("To: {}\n", clean(&env.sender)));
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
    for (addr, _dsn, reason) in failed {
        m.push_str(&format!("<{}>: {}\n", clean(addr), clean(reason)));
    }
    m.push('\n');
    m.push_str(&format!("--{boundary}\nContent-Description: Delivery report\nContent-Type: message/delivery-status\n\n"));
    m.push_str(&format!("Reporting-MTA: dns; {host}\n"));
    m.push_str(&format!("X-Postern-Queue-ID: {id}\n"));
    m.push_str(&format!(
        "X-Postern-Sender: rfc822; {}\n",
        clean(&env.sender)
    ));
    m.push_str(&format!("Arrival-Date: {}\n", rfc5322(env.arrival)));
    for (addr, dsn, reason) in failed {
        let status = if dsn.starts_with('5') {
            dsn.clone()
        } else {
            format!("5{}", dsn.get(1..).unwrap_or(".0.0"))
        };
        m.push_str(&format!("\nFinal-Recipient: rfc822; {}\n", clean(addr)));
        if let Some(r) = env.recipients.iter().find(|r| &r.address == addr)
            && r.original != r.address
        {
            m.push_str(&format!(
                "Original-Recipient: rfc822; {}\n",
                clean(&r.original)
            ));
        }
        m.push_str(&format!(
            "Action: failed\nStatus: {status}\nDiagnostic-Code: X-Postern; {}\n",
            clean(reason)
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

fn rfc5322(t: SystemTime) -> String {
    // Same form as cleanup's Date header, in UTC to stay simple and exact.
    let secs = t.duration_since(UNIX_EPOCH).unwrap_or_default().as_secs() as i64;
    let days = secs.div_euclid(86400);
    let rem = secs.rem_euclid(86400);
    let (y, mo, d) = civil_from_days(days);
    const DAYS: [&str; 7] = ["Thu", "Fri", "Sat", "Sun", "Mon", "Tue", "Wed"];
    const MONTHS: [&str; 12] = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ];
    format!(
        "{}, {} {} {} {:02}:{:02}:{:02} +0000 (UTC)",
        DAYS[days.rem_euclid(7) as usize],
        d,
        MONTHS[(mo - 1) as usize],
        y,
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

/// Days since 1970-01-01 to (year, month, day) — Howard Hinnant's algorithm.
fn civil_from_days(z: i64) -> (i64, i64, i64) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    (if m <= 2 { y + 1 } else { y }, m, d)
}

/// Builds the notification and queues it through cleanup; returns its queue ID.
pub fn send_bounce(
    main: &MainCf,
    queue_dir: &Path,
    id: &QueueId,
    original: &QueueFile,
    failed: &[(String, String, String)],
) -> Result<String, String> {
    let text = build(main, id, original, failed, SystemTime::now())
        .map_err(|e| format!("read queue file: {e}"))?;
    let socket = queue_dir.join("public").join("cleanup");
    let mut ch = BlockingChannel::connect(&socket, Duration::from_secs(60))
        .map_err(|e| format!("connect to {}: {e}", socket.display()))?;
    let err = |e: std::io::Error| e.to_string();
    ch.send(&CleanupRequest::Open {
        attributes: vec![
            ("origin".into(), "bounce".into()),
            ("protocol".into(), "local".into()),
        ],
        flags: 0,
    })
    .map_err(err)?;
    match ch.recv::<CleanupReply>() {
        Ok(Some(CleanupReply::Opened { .. })) => {}
        other => return Err(format!("cleanup did not open a queue file: {other:?}")),
    }
    ch.send(&CleanupRequest::Sender {
        address: String::new(),
    })
    .map_err(err)?;
    let to = original.envelope().sender.clone();
    ch.send(&CleanupRequest::Recipient {
        address: to.clone(),
        original: to,
    })
    .map_err(err)?;
    for chunk in text.chunks(CHUNK_SIZE) {
        ch.send(&CleanupRequest::Content {
            data: chunk.to_vec(),
        })
        .map_err(err)?;
    }
    ch.send(&CleanupRequest::End).map_err(err)?;
    match ch.recv::<CleanupReply>() {
        Ok(Some(CleanupReply::Queued { queue_id })) => Ok(queue_id),
        Ok(Some(CleanupReply::Rejected { reason, .. })) => Err(reason),
        other => Err(format!("no answer from cleanup: {other:?}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn utc_dates_are_right() {
        assert_eq!(rfc5322(UNIX_EPOCH), "Thu, 1 Jan 1970 00:00:00 +0000 (UTC)");
        assert_eq!(
            rfc5322(UNIX_EPOCH + Duration::from_secs(1_700_000_000)),
            "Tue, 14 Nov 2023 22:13:20 +0000 (UTC)"
        );
    }

    #[test]
    fn header_end_is_found() {
        assert_eq!(find_header_end(b"A: b\nC: d\n\nbody\n"), 10);
        assert_eq!(find_header_end(b"\nbody"), 0);
        assert_eq!(find_header_end(b"A: b\n"), 5);
    }
}
