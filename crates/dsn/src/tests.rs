use super::*;

const ORIGINAL: &[u8] = b"Received: by client.example.org; Tue, 14 Nov 2023 22:13:20 +0000\n\
From: s@example.org\n\
To: gone@x.test\n\
Subject: hi\n\
Message-ID: <orig.1@example.org>\n\
\n\
body line 1\n\
--not-our-boundary\n";

fn t(secs: u64) -> SystemTime {
    UNIX_EPOCH + Duration::from_secs(secs)
}

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
    gone.original = Some("Gone@alias.test".into());
    gone.orcpt = Typed::parse("rfc822;Gone@alias.test");
    gone.remote_mta = Some(Typed::new("dns", "mx.x.test"));
    gone.diagnostic = Some(Typed::new(
        "smtp",
        "550 5.1.1 <gone@x.test>: Recipient address rejected: User unknown in virtual mailbox table",
    ));
    let late = Recipient::new(
        "late@x.test",
        Action::Delayed,
        &DeliveryStatus::temporary(4, 7, "message delivery timed out"),
    );
    r.recipients = vec![gone, late];
    r
}

fn compose_str(r: &Report, original: &[u8]) -> String {
    let mut out = Vec::new();
    compose(r, original, &mut out).unwrap();
    String::from_utf8(out).unwrap()
}

fn boundary_of(msg: &str) -> String {
    let i = msg.find("boundary=\"").unwrap() + 10;
    let j = msg[i..].find('"').unwrap();
    msg[i..i + j].to_string()
}

/// The message with its variable parts (boundary, dates, Message-Id)
/// replaced by fixed names.
fn normalized(msg: &str) -> String {
    let b = boundary_of(msg);
    msg.replace(&b, "BOUNDARY")
        .lines()
        .map(|l| {
            for f in [
                "Date: ",
                "Message-Id: ",
                "Arrival-Date: ",
                "Will-Retry-Until: ",
                "Last-Attempt-Date: ",
            ] {
                if l.starts_with(f) {
                    return format!("{f}X");
                }
            }
            l.to_string()
        })
        .collect::<Vec<_>>()
        .join("\n")
        + "\n"
}

#[test]
fn a_bounce_has_postfixs_layout() {
    let msg = compose_str(&report(Kind::Failure), ORIGINAL);
    let want = "From: MAILER-DAEMON@mx.example.com (Mail Delivery System)
To: <s@example.org>
Subject: Undelivered Mail Returned to Sender
Date: X
Message-Id: X
Auto-Submitted: auto-replied
MIME-Version: 1.0
Content-Type: multipart/report; report-type=delivery-status;
\tboundary=\"BOUNDARY\"
Content-Transfer-Encoding: 8bit

This is a MIME-encapsulated message.

--BOUNDARY
Content-Description: Notification
Content-Type: text/plain; charset=utf-8
Content-Transfer-Encoding: 8bit

This is the mail system at host mx.example.com.

I'm sorry to have to inform you that your message could not
be delivered to one or more recipients. It's attached below.

For further assistance, please send mail to postmaster.

If you do so, please include this problem report. You can
delete your own text from the attached returned message.

                   The mail system

<gone@x.test> (expanded from <Gone@alias.test>): host mx.x.test[192.0.2.1]
    said: 550 5.1.1 <gone@x.test>: Recipient address rejected: User unknown in
    virtual mailbox table (in reply to RCPT TO command)

<late@x.test>: message delivery timed out

--BOUNDARY
Content-Description: Delivery report
Content-Type: message/delivery-status

Reporting-MTA: dns; mx.example.com
X-Postern-Queue-ID: 4AbCdEf123
X-Postern-Sender: rfc822; s@example.org
Arrival-Date: X

Final-Recipient: rfc822; gone@x.test
Original-Recipient: rfc822; Gone@alias.test
Action: failed
Status: 5.1.1
Remote-MTA: dns; mx.x.test
Diagnostic-Code: smtp; 550 5.1.1 <gone@x.test>: Recipient address rejected:
    User unknown in virtual mailbox table

Final-Recipient: rfc822; late@x.test
Action: failed
Status: 5.4.7
Diagnostic-Code: X-Postern; message delivery timed out

--BOUNDARY
Content-Description: Undelivered Message
Content-Type: message/rfc822
Content-Transfer-Encoding: 8bit

Return-Path: <s@example.org>
Received: by client.example.org; Tue, 14 Nov 2023 22:13:20 +0000
From: s@example.org
To: gone@x.test
Subject: hi
Message-ID: <orig.1@example.org>

body line 1
--not-our-boundary

--BOUNDARY--
";
    assert_eq!(normalized(&msg), want);
    assert!(msg.contains(&format!(
        "Date: {}\n",
        postern_mailtime::rfc5322(t(1_700_014_400))
    )));
    assert!(msg.contains(&format!(
        "Arrival-Date: {}\n",
        postern_mailtime::rfc5322(t(1_700_000_000))
    )));
}

#[test]
fn ret_hdrs_returns_the_header_block_only() {
    let mut r = report(Kind::Failure);
    r.ret = Some(Ret::Headers);
    assert_eq!(r.effective_ret(), Ret::Headers);
    let msg = normalized(&compose_str(&r, ORIGINAL));
    assert!(
        msg.ends_with(
            "--BOUNDARY
Content-Description: Undelivered Message Headers
Content-Type: text/rfc822-headers
Content-Transfer-Encoding: 8bit

Return-Path: <s@example.org>
Received: by client.example.org; Tue, 14 Nov 2023 22:13:20 +0000
From: s@example.org
To: gone@x.test
Subject: hi
Message-ID: <orig.1@example.org>

--BOUNDARY--
"
        ),
        "{msg}"
    );
    assert!(!msg.contains("body line 1"));
}

#[test]
fn ret_full_and_no_ret_return_the_whole_bounced_message() {
    for ret in [None, Some(Ret::Full)] {
        let mut r = report(Kind::Failure);
        r.ret = ret;
        assert_eq!(r.effective_ret(), Ret::Full);
        let msg = compose_str(&r, ORIGINAL);
        assert!(msg.contains("Content-Type: message/rfc822\n"));
        assert!(msg.contains("\nbody line 1\n--not-our-boundary\n"));
    }
}

#[test]
fn a_delay_warning_says_so_and_returns_headers_even_with_ret_full() {
    let mut r = report(Kind::Delay);
    r.ret = Some(Ret::Full);
    r.recipients.truncate(1);
    r.recipients[0].status = EnhancedCode(4, 4, 1);
    assert_eq!(r.effective_ret(), Ret::Headers);
    let msg = compose_str(&r, ORIGINAL);
    let n = normalized(&msg);
    assert!(n.contains("Subject: Delayed Mail (still being retried)\n"));
    assert!(
        n.contains(
            "This is the mail system at host mx.example.com.

####################################################################
# THIS IS A WARNING ONLY.  YOU DO NOT NEED TO RESEND YOUR MESSAGE. #
####################################################################

Your message could not be delivered for more than 4 hour(s).
It will be retried until it is 5 day(s) old.

For further assistance, please send mail to postmaster.
"
        ),
        "{n}"
    );
    assert!(n.contains("Action: delayed\nStatus: 4.4.1\n"));
    assert!(n.contains("Will-Retry-Until: X\n"));
    assert!(msg.contains(&format!(
        "Will-Retry-Until: {}\n",
        postern_mailtime::rfc5322(t(1_700_000_000 + 5 * 86400))
    )));
    assert!(n.contains(
        "Content-Description: Undelivered Message Headers\nContent-Type: text/rfc822-headers\n"
    ));
    assert!(!n.contains("body line 1"));
}

#[test]
fn the_delay_text_counts_the_configured_times() {
    let mut r = report(Kind::Delay);
    r.delay_warning_time = Duration::from_secs(2 * 3600);
    r.maximal_queue_lifetime = Duration::from_secs(3 * 86400);
    r.recipients[1].will_retry_until = Some(t(1_800_000_000));
    let msg = compose_str(&r, ORIGINAL);
    assert!(
        msg.contains("for more than 2 hour(s).\nIt will be retried until it is 3 day(s) old.\n")
    );
    assert!(msg.contains(&format!(
        "Will-Retry-Until: {}\n",
        postern_mailtime::rfc5322(t(1_800_000_000))
    )));
}

#[test]
fn a_success_report_keeps_relayed_and_expanded() {
    let mut r = report(Kind::Success);
    r.recipients[0].action = Action::Relayed;
    r.recipients[0].status = EnhancedCode(2, 0, 0);
    r.recipients[0].diagnostic = Some(Typed::new("smtp", "250 2.0.0 Ok: queued as 123"));
    r.recipients[1].action = Action::Expanded;
    r.recipients[1].reason = "alias expanded".into();
    r.recipients.push(Recipient::new(
        "box@here.test",
        Action::Failed,
        &DeliveryStatus::sent("delivered to mailbox"),
    ));
    let n = normalized(&compose_str(&r, ORIGINAL));
    assert!(n.contains("Subject: Successful Mail Delivery Report\n"));
    assert!(n.contains(
        "Your message was successfully delivered to the destination(s)
listed below. If the message was delivered to mailbox you will
receive no further notifications. Otherwise you may still receive
notifications of mail delivery errors from other systems.

                   The mail system
"
    ));
    assert!(!n.contains("For further assistance"));
    assert!(n.contains("Action: relayed\nStatus: 2.0.0\nRemote-MTA: dns; mx.x.test\nDiagnostic-Code: smtp; 250 2.0.0 Ok: queued as 123\n"));
    assert!(n.contains("Action: expanded\nStatus: 2.4.7\n"));
    assert!(
        n.contains("Final-Recipient: rfc822; box@here.test\nAction: delivered\nStatus: 2.0.0\n")
    );
    assert!(
        n.contains("Content-Description: Message Headers\nContent-Type: text/rfc822-headers\n")
    );
    assert!(!n.contains("Will-Retry-Until"));
}

#[test]
fn bounce_size_limit_returns_headers_of_big_or_unknown_messages() {
    let mut r = report(Kind::Failure);
    r.bounce_size_limit = Some(50_000);
    assert_eq!(r.effective_ret(), Ret::Headers);
    r.original_size = Some(60_000);
    assert_eq!(r.effective_ret(), Ret::Headers);
    r.original_size = Some(ORIGINAL.len() as u64);
    assert_eq!(r.effective_ret(), Ret::Full);
    r.ret = Some(Ret::Headers);
    assert_eq!(r.effective_ret(), Ret::Headers);
}

#[test]
fn the_postmaster_copy_has_no_polite_text() {
    let mut r = report(Kind::Failure);
    r.postmaster_copy = Some("postmaster@mx.example.com".into());
    assert_eq!(r.effective_ret(), Ret::Headers);
    let n = normalized(&compose_str(&r, ORIGINAL));
    assert!(
        n.contains("To: <postmaster@mx.example.com>\nSubject: Postmaster Copy: Undelivered Mail\n")
    );
    assert!(n.contains("Auto-Submitted: auto-generated\n"));
    assert!(!n.contains("I'm sorry"));
    assert!(n.contains("X-Postern-Sender: rfc822; s@example.org\n"));
    let mut r = report(Kind::Delay);
    r.postmaster_copy = Some("postmaster".into());
    assert_eq!(r.subject(), "Postmaster Warning: Delayed Mail");
}

#[test]
fn envid_and_last_attempt_are_reported() {
    let mut r = report(Kind::Failure);
    r.envid = Some("QQ314159".into());
    r.recipients[0].last_attempt = Some(t(1_700_010_000));
    let msg = compose_str(&r, ORIGINAL);
    assert!(msg.contains("Reporting-MTA: dns; mx.example.com\nOriginal-Envelope-Id: QQ314159\nX-Postern-Queue-ID: 4AbCdEf123\n"));
    assert!(msg.contains(&format!(
        "Last-Attempt-Date: {}\n",
        postern_mailtime::rfc5322(t(1_700_010_000))
    )));
    r.envid = Some(String::new());
    assert!(!compose_str(&r, ORIGINAL).contains("Original-Envelope-Id"));
}

#[test]
fn utf8_addresses_use_the_global_types() {
    let mut r = report(Kind::Failure);
    r.recipients[0].address = "jöran@bücher.test".into();
    r.recipients[0].orcpt = None;
    r.recipients[0].original = None;
    let msg = compose_str(&r, ORIGINAL);
    assert!(msg.contains(
        "Content-Type: message/global-delivery-status\nContent-Transfer-Encoding: 8bit\n"
    ));
    assert!(msg.contains("Final-Recipient: utf-8; jöran@bücher.test\n"));
    assert!(msg.contains("Final-Recipient: rfc822; late@x.test\n"));
    assert!(msg.contains("Content-Type: message/global\n"));
    assert!(msg.contains("<jöran@bücher.test>: host"));
    r.ret = Some(Ret::Headers);
    assert!(compose_str(&r, ORIGINAL).contains("Content-Type: message/global-headers\n"));
}

#[test]
fn a_utf8_original_or_smtputf8_uses_the_global_types() {
    let r = report(Kind::Failure);
    let msg = compose_str(&r, "Subject: Grüße\n\nbody\n".as_bytes());
    assert!(msg.contains("Content-Type: message/global-delivery-status\n"));
    assert!(msg.contains("Content-Type: message/global\n"));
    assert!(msg.contains("Final-Recipient: rfc822; gone@x.test\n"));
    let mut r = report(Kind::Failure);
    r.smtputf8 = true;
    assert!(compose_str(&r, ORIGINAL).contains("Content-Type: message/global-delivery-status\n"));
    // 8-bit bytes that are not UTF-8 are not RFC 6532.
    let r = report(Kind::Failure);
    let mut out = Vec::new();
    compose(&r, &b"Subject: caf\xe9\n\nx\n"[..], &mut out).unwrap();
    let msg = String::from_utf8_lossy(&out);
    assert!(msg.contains("Content-Type: message/delivery-status\n"));
    assert!(msg.contains("Content-Type: message/rfc822\n"));
}

#[test]
fn non_ascii_text_in_a_plain_report_is_masked() {
    let mut r = report(Kind::Failure);
    r.recipients[1].reason = "Empfänger unbekannt".into();
    let msg = compose_str(&r, ORIGINAL);
    assert!(msg.contains("Content-Type: message/delivery-status\n"));
    assert!(msg.contains("Diagnostic-Code: X-Postern; Empf?nger unbekannt\n"));
    // The text part is UTF-8.
    assert!(msg.contains("<late@x.test>: Empfänger unbekannt\n"));
}

#[test]
fn supplied_fields_cannot_add_header_lines() {
    let mut r = report(Kind::Failure);
    r.sender = "s@example.org\nBcc: victim@example.net".into();
    r.envid = Some("E\r\nX-Evil: 1".into());
    r.queue_id = "Q\nX-Evil: 2".into();
    r.reporting_mta = "mx\n\n--x".into();
    r.mail_name = "Post\nern: x".into();
    r.recipients[0].reason = "bad\n\nSubject: evil\n--boundary".into();
    r.recipients[0].diagnostic = Some(Typed::new("smtp\n", "550\nX-Evil: 3"));
    r.recipients[0].remote_mta = Some(Typed::new("dns", "a\rX-Evil: 4"));
    r.recipients[1].address = "late@x.test\nAction: delivered".into();
    let msg = compose_str(&r, ORIGINAL);
    for l in msg.lines() {
        assert!(
            !l.starts_with("Bcc:") && !l.starts_with("X-Evil") && !l.starts_with("Subject: evil"),
            "{l:?} in\n{msg}"
        );
        assert!(
            !l.starts_with("--x") && !l.starts_with("--boundary"),
            "{l:?}"
        );
    }
    assert_eq!(msg.matches("\nAction: ").count(), 2);
    assert!(msg.contains("X-Post-ern--x-Queue-ID: Q X-Evil: 2\n"));
    assert!(msg.contains("Diagnostic-Code: smtp-; 550 X-Evil: 3\n"));
}

#[test]
fn long_lines_are_folded() {
    let mut r = report(Kind::Failure);
    r.recipients[1].reason = "word ".repeat(100);
    r.recipients[1].address = format!("{}@x.test", "a".repeat(3000));
    let msg = compose_str(&r, ORIGINAL);
    let b = boundary_of(&msg);
    let head_and_report = &msg[..msg
        .find(&format!("--{b}\nContent-Description: Undelivered"))
        .unwrap()];
    for l in head_and_report.lines() {
        assert!(l.len() <= 998, "{} bytes", l.len());
        assert!(l.is_empty() || !l.trim().is_empty());
    }
    assert!(msg.contains("Diagnostic-Code: X-Postern; word word"));
    assert!(msg.contains("\n    word word"));
}

#[test]
fn an_unreadable_original_is_said_to_be_unavailable() {
    let msg = compose_str(&report(Kind::Failure), b"");
    assert!(msg.contains(
        "Content-Type: message/rfc822\nContent-Transfer-Encoding: 8bit\n\n\t--- Undelivered message unavailable ---\n\n--"
    ));
}

#[test]
fn an_original_without_final_newline_still_closes_the_mime_structure() {
    let msg = compose_str(&report(Kind::Failure), b"Subject: x\n\nno newline");
    let b = boundary_of(&msg);
    assert!(msg.ends_with(&format!("\nno newline\n\n--{b}--\n")));
    let mut r = report(Kind::Failure);
    r.ret = Some(Ret::Headers);
    let msg = compose_str(&r, b"Subject: x");
    assert!(msg.ends_with(&format!(
        "\nSubject: x\n\n--{b2}--\n",
        b2 = boundary_of(&msg)
    )));
}

#[test]
fn no_recipients_is_an_error() {
    let mut r = report(Kind::Failure);
    r.recipients.clear();
    let err = compose(&r, ORIGINAL, Vec::new()).unwrap_err();
    assert_eq!(err.kind(), io::ErrorKind::InvalidInput);
}

#[test]
fn threaded_bounces_refer_to_the_original() {
    let mut r = report(Kind::Failure);
    r.threaded = true;
    let msg = compose_str(&r, ORIGINAL);
    assert!(msg.contains(
        "In-Reply-To: <orig.1@example.org>\nReferences: <orig.1@example.org>\nAuto-Submitted"
    ));
    r.threaded = false;
    assert!(!compose_str(&r, ORIGINAL).contains("In-Reply-To"));
}

#[test]
fn boundaries_are_short_and_unique() {
    let mut r = report(Kind::Failure);
    r.reporting_mta = "a-very-long-host-name.in.a.very.long.domain.example.com".into();
    let a = r.boundary();
    let b = r.boundary();
    assert_ne!(a, b);
    assert!(a.len() <= 70);
    assert!(a.starts_with("4AbCdEf123.1700014400."), "{a}");
    assert!(
        a.bytes()
            .all(|c| c.is_ascii_alphanumeric() || b"./-".contains(&c))
    );
}

#[test]
fn the_to_address_is_quoted_when_needed() {
    let mut r = report(Kind::Failure);
    r.sender = "first last@example.org".into();
    let msg = compose_str(&r, ORIGINAL);
    assert!(msg.contains("To: <\"first last\"@example.org>\n"));
    assert!(msg.contains("X-Postern-Sender: rfc822; first last@example.org\n"));
}

#[test]
fn a_large_original_is_streamed_through() {
    struct Counting<'a>(&'a mut u64);
    impl Write for Counting<'_> {
        fn write(&mut self, b: &[u8]) -> io::Result<usize> {
            *self.0 += b.len() as u64;
            Ok(b.len())
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }
    let body = io::repeat(b'x').take(20 * 1024 * 1024);
    let original = (&b"Subject: big\n\n"[..]).chain(body);
    let mut n = 0;
    compose(&report(Kind::Failure), original, Counting(&mut n)).unwrap();
    assert!(n > 20 * 1024 * 1024);
}
