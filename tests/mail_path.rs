//! The first mail path, end to end: a real master with its real services on
//! loopback, a real SMTP conversation, mail landing in Maildirs.

use postern_tests::*;
use std::net::SocketAddr;
use std::time::Duration;

const T: Duration = Duration::from_secs(30);

fn started(opts: Options) -> Instance {
    let mut i = Instance::new(opts);
    i.start();
    i
}

#[test]
fn message_lands_byte_exact_in_the_maildir() {
    let inst = started(Options::default());
    let long_value = "x".repeat(900);
    let mut content = Vec::new();
    content.extend_from_slice(b"From: Sender <sender@remote.example>\r\n");
    content.extend_from_slice(b"To: alice@example.test\r\n");
    content.extend_from_slice(b"Subject: a folded\r\n  and long subject line\r\n");
    content.extend_from_slice(format!("X-Long: {long_value}\r\n").as_bytes());
    content.extend_from_slice(b"Message-ID: <byte-exact@remote.example>\r\n");
    content.extend_from_slice(b"Date: Sun, 22 Nov 2026 03:05:00 +0000\r\n");
    content.extend_from_slice(b"MIME-Version: 1.0\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Transfer-Encoding: 8bit\r\n");
    content.extend_from_slice(b"\r\n");
    content.extend_from_slice(b".leading dot (stuffed on the wire)\r\n");
    content.extend_from_slice(b"..two leading dots\r\n");
    content.extend_from_slice(b".\tdot and tab\r\n");
    content.extend_from_slice("8-bit: gr\u{fc}\u{df}e, \u{65e5}\u{672c}, \u{1f600}\r\n".as_bytes());
    content.extend_from_slice(&[0xff, 0xfe, b' ', b'r', b'a', b'w', b'\r', b'\n']);
    content.extend_from_slice(b"trailing spaces   \r\n");
    content.extend_from_slice(b"\r\n");
    content.extend_from_slice(b"last line\r\n");
    let r = Smtp::send_one(
        inst_addr(&inst),
        "sender@remote.example",
        &["alice@example.test"],
        &content,
    );
    let id = queued_id(&r);
    let msgs = inst.wait_mail("alice", 1, T);
    assert_eq!(msgs.len(), 1);
    let got = &msgs[0];
    let want = to_lf(&content);
    assert!(
        got.ends_with(&want),
        "content not byte-exact:\n{}",
        String::from_utf8_lossy(got)
    );
    let added = String::from_utf8_lossy(&got[..got.len() - want.len()]).into_owned();
    assert!(
        added.starts_with("Return-Path: <sender@remote.example>\n"),
        "{added}"
    );
    assert!(
        added.contains("Delivered-To: alice@example.test\n"),
        "{added}"
    );
    assert!(added.contains(&format!("with ESMTP id {id}")), "{added}");
    assert!(
        added.contains("Received: from client.example (unknown [127.0.0.1])"),
        "{added}"
    );
    // Message-ID and Date were present, so none were added.
    assert!(!added.contains("Message-Id:"), "{added}");
    // One grep on the queue ID follows the message through every program.
    assert!(
        wait_until(T, || inst.log().contains(&format!("{id}: removed"))),
        "{}",
        inst.log()
    );
    let log = inst.log();
    for needle in [
        "postern/smtpd[".to_string(),
        format!("]: {id}: client=unknown[127.0.0.1]"),
        "postern/cleanup[".to_string(),
        format!("]: {id}: message-id=<byte-exact@remote.example>"),
        format!("]: {id}: from=<sender@remote.example>, size="),
        format!("]: {id}: to=<alice@example.test>, relay=local"),
        "status=sent".to_string(),
    ] {
        assert!(log.contains(&needle), "log lacks {needle:?}:\n{log}");
    }
    assert!(inst.queue_empty());
}

fn inst_addr(inst: &Instance) -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], inst.smtp_port))
}

#[test]
fn missing_message_id_and_date_are_added() {
    let inst = started(Options::default());
    let r = Smtp::send_one(
        inst_addr(&inst),
        "s@remote.example",
        &["bob@example.test"],
        b"Subject: bare\r\n\r\nbody\r\n",
    );
    let id = queued_id(&r);
    let msgs = inst.wait_mail("bob", 1, T);
    let h = header_of(&msgs[0]);
    assert!(
        h.contains(&"Message-Id: <".to_string())
            && h.contains(&format!(".{id}@mail.example.test>")),
        "{h}"
    );
    assert!(h.contains("\nDate: "), "{h}");
}

#[test]
fn an_alias_fans_out_to_two_mailboxes() {
    let inst = started(Options::default());
    let r = Smtp::send_one(
        inst_addr(&inst),
        "s@remote.example",
        &["team@example.test"],
        b"Subject: team\r\n\r\nhello team\r\n",
    );
    queued_id(&r);
    let a = inst.wait_mail("alice", 1, T);
    let b = inst.wait_mail("bob", 1, T);
    assert!(a[0].ends_with(b"hello team\n") && b[0].ends_with(b"hello team\n"));
    assert!(inst.mailbox("carol").is_empty());
    // Nested: all -> team (alice, bob) + carol.
    let r = Smtp::send_one(
        inst_addr(&inst),
        "s@remote.example",
        &["all@example.test"],
        b"Subject: all\r\n\r\nhello all\r\n",
    );
    queued_id(&r);
    inst.wait_mail("alice", 2, T);
    inst.wait_mail("bob", 2, T);
    inst.wait_mail("carol", 1, T);
}

#[test]
fn duplicate_recipients_get_one_copy_per_mailbox() {
    let inst = started(Options::default());
    // alice three ways (twice the same, and through the team alias, and
    // with another case), bob through team and directly, carol once.
    let r = Smtp::send_one(
        inst_addr(&inst),
        "s@remote.example",
        &[
            "alice@example.test",
            "alice@EXAMPLE.test",
            "team@example.test",
            "ALICE@example.test",
            "bob@example.test",
            "all@example.test",
        ],
        b"Subject: dups\r\n\r\nonce each\r\n",
    );
    let id = queued_id(&r);
    inst.wait_mail("alice", 1, T);
    inst.wait_mail("bob", 1, T);
    inst.wait_mail("carol", 1, T);
    assert!(wait_until(T, || inst.queue_empty()), "all recipients done");
    for user in ["alice", "bob", "carol"] {
        assert_eq!(inst.mailbox(user).len(), 1, "{user} has one copy");
    }
    // Every envelope recipient is accounted for in the log (pflogsumm
    // counts them), the suppressed ones as duplicates.
    let log = inst.log();
    let lines: Vec<&str> = log
        .lines()
        .filter(|l| l.contains(&format!("{id}: to=<")))
        .collect();
    assert!(
        lines
            .iter()
            .any(|l| l.contains("duplicate of an earlier recipient")),
        "{log}"
    );
    assert!(lines.iter().all(|l| l.contains("status=sent")), "{log}");
}

#[test]
fn a_missing_alias_file_defers_its_recipients_and_nothing_else() {
    let inst = started(Options::default());
    let aliases = inst.dir.join("aliases");
    std::fs::remove_file(&aliases).unwrap();
    // New processes start without the file (no crash loop: the reload's
    // smtpd and local come up with it missing).
    let out = inst.postern(&["reload"]);
    assert!(out.status.success(), "{out:?}");
    // smtpd says 451 for a recipient only the table could decide, naming
    // no user; a users_file user is still accepted ...
    let mut c = inst.smtp();
    assert_eq!(c.cmd("EHLO client.example").code, 250);
    assert_eq!(c.cmd("MAIL FROM:<s@remote.example>").code, 250);
    let r = c.cmd("RCPT TO:<team@example.test>");
    assert_eq!(r.code, 451, "{r:?}");
    assert!(r.text().contains("4.3.0"), "{r:?}");
    assert_eq!(c.cmd("RSET").code, 250);
    let r = c.send(
        "s@remote.example",
        &["carol@example.test"],
        b"Subject: ok\r\n\r\nkept\r\n",
    );
    let id = queued_id(&r);
    // ... and kept in the queue (local cannot know whether an alias
    // applies, so it defers: never a bounce, never a loss).
    assert!(
        wait_until(T, || inst
            .log()
            .contains(&format!("{id}: to=<carol@example.test>"))
            && inst
                .log()
                .contains("status=deferred (alias database unavailable")),
        "{}",
        inst.log()
    );
    assert!(inst.mailbox("carol").is_empty());
    let log = inst.log();
    assert!(
        log.contains(&format!(
            "warning: hash:{} is unavailable: {}: ",
            aliases.display(),
            aliases.display()
        )),
        "{log}"
    );
    assert!(!log.contains(":0:"), "{log}");
    assert!(!log.contains("fatal:"), "{log}");
    // The administrator creates the file: the same server now accepts.
    std::fs::write(&aliases, "team: alice, bob\n").unwrap();
    let r = c.cmd("MAIL FROM:<s@remote.example>");
    assert_eq!(r.code, 250);
    let r = c.cmd("RCPT TO:<team@example.test>");
    assert_eq!(r.code, 250, "{r:?}");
    // And the deferred message is delivered on the next retry.
    inst.wait_mail("carol", 1, T);
    assert!(!inst.log().contains("status=bounced"), "{}", inst.log());
}

#[test]
fn an_undeliverable_recipient_is_returned_to_the_sender() {
    let mut inst = Instance::new(Options::default());
    let aliases = inst.dir.join("aliases");
    let mut text = std::fs::read_to_string(&aliases).unwrap();
    text.push_str("ghost: nosuch-user-postern-test\n");
    std::fs::write(&aliases, text).unwrap();
    inst.start();
    let r = Smtp::send_one(
        inst_addr(&inst),
        "alice@example.test",
        &["ghost@example.test", "bob@example.test"],
        b"Subject: to a ghost\r\nMessage-ID: <ghost@remote.example>\r\n\r\nboo\r\n",
    );
    let id = queued_id(&r);
    inst.wait_mail("bob", 1, T);
    // qmgr hands the notice to cleanup without waiting for it (its own
    // task); it arrives from the null sender in alice's mailbox.
    let notices = inst.wait_mail("alice", 1, T);
    let n = String::from_utf8_lossy(&notices[0]).into_owned();
    assert!(
        n.contains("Subject: Undelivered Mail Returned to Sender"),
        "{n}"
    );
    assert!(n.contains("Return-Path: <>"), "{n}");
    assert!(n.contains("Content-Type: message/delivery-status"), "{n}");
    assert!(
        n.contains("Final-Recipient: rfc822; ghost@example.test")
            || n.contains("nosuch-user-postern-test"),
        "{n}"
    );
    assert!(
        n.contains("Message-ID: <ghost@remote.example>"),
        "the original header is attached: {n}"
    );
    assert!(
        wait_until(T, || inst.queue_empty()),
        "the original is removed once the notice is queued"
    );
    let log = inst.log();
    assert!(
        log.contains(&format!("{id}: sender non-delivery notification: ")),
        "{log}"
    );
}

#[test]
fn unknown_users_and_relaying_are_refused_at_rcpt() {
    let inst = started(Options::default());
    let mut c = inst.smtp();
    assert_eq!(c.cmd("EHLO client.example").code, 250);
    assert_eq!(c.cmd("MAIL FROM:<s@remote.example>").code, 250);
    let r = c.cmd("RCPT TO:<nobody@example.test>");
    assert_eq!(r.code, 550, "{r:?}");
    assert!(
        r.text()
            .starts_with("5.1.1 <nobody@example.test>: Recipient address rejected"),
        "{r:?}"
    );
    let r = c.cmd("RCPT TO:<someone@elsewhere.example>");
    assert_eq!(r.code, 554, "{r:?}");
    assert!(
        r.text()
            .starts_with("5.7.1 <someone@elsewhere.example>: Relay access denied"),
        "{r:?}"
    );
    // Postmaster is always accepted, with or without a domain.
    assert_eq!(c.cmd("RCPT TO:<Postmaster>").code, 250);
    assert_eq!(c.cmd("RCPT TO:<postmaster@example.test>").code, 250);
    assert_eq!(c.cmd("QUIT").code, 221);
    let log = inst.log();
    assert!(
        log.contains(
            "NOQUEUE: reject: RCPT from unknown[127.0.0.1]: 550 5.1.1 <nobody@example.test>"
        ),
        "{log}"
    );
}

#[test]
fn clients_in_mynetworks_may_relay() {
    let inst = started(Options {
        mynetworks: "127.0.0.0/8".into(),
        ..Options::default()
    });
    let mut c = inst.smtp();
    c.cmd("EHLO client.example");
    assert_eq!(c.cmd("MAIL FROM:<alice@example.test>").code, 250);
    assert_eq!(c.cmd("RCPT TO:<someone@elsewhere.example>").code, 250);
}

#[test]
fn bare_lf_dot_does_not_end_the_message() {
    let inst = started(Options::default());
    for (n, smuggle) in [
        &b"\n.\nMAIL FROM:<evil@remote.example>\nRCPT TO:<bob@example.test>\nDATA\nsmuggled\n.\n"[..],
        &b"\r.\rMAIL FROM:<evil@remote.example>\rRCPT TO:<bob@example.test>\rDATA\rsmuggled\r.\r"[..],
        &b"\n.\r\nMAIL FROM:<evil@remote.example>\r\nRCPT TO:<bob@example.test>\r\nDATA\r\nsmuggled\r\n.\r\n"[..],
    ]
    .iter()
    .enumerate()
    {
        let mut c = inst.smtp();
        c.cmd("EHLO client.example");
        assert_eq!(c.cmd("MAIL FROM:<s@remote.example>").code, 250);
        assert_eq!(c.cmd("RCPT TO:<alice@example.test>").code, 250);
        assert_eq!(c.cmd("DATA").code, 354);
        c.raw(format!("Subject: smuggle {n}\r\n\r\nbefore").as_bytes());
        c.raw(smuggle);
        // The third attack closes with a real CRLF.CRLF: that ends the one
        // message, whose text then includes the would-be commands.
        if !smuggle.ends_with(b"\r\n.\r\n") {
            c.raw(b"after\r\n.\r\n");
        }
        let r = c.read_reply();
        queued_id(&r);
        assert_eq!(c.cmd("QUIT").code, 221);
    }
    let msgs = inst.wait_mail("alice", 3, T);
    for m in &msgs {
        let text = String::from_utf8_lossy(m);
        assert!(
            text.contains("MAIL FROM:<evil@remote.example>") && text.contains("smuggled"),
            "{text}"
        );
    }
    std::thread::sleep(Duration::from_secs(1));
    assert!(
        inst.mailbox("bob").is_empty(),
        "a smuggled message was delivered"
    );
}

#[test]
fn fifty_concurrent_clients_each_deliver_once() {
    let inst = started(Options::default());
    let addr = inst_addr(&inst);
    let handles: Vec<_> = (0..50)
        .map(|i| {
            std::thread::spawn(move || {
                let body = format!("Subject: concurrent {i}\r\n\r\nmessage number {i}\r\n");
                let r = Smtp::send_one(
                    addr,
                    "s@remote.example",
                    &["carol@example.test"],
                    body.as_bytes(),
                );
                queued_id(&r)
            })
        })
        .collect();
    let ids: Vec<String> = handles.into_iter().map(|h| h.join().unwrap()).collect();
    let unique: std::collections::HashSet<_> = ids.iter().collect();
    assert_eq!(unique.len(), 50, "queue IDs must be unique");
    let msgs = inst.wait_mail("carol", 50, Duration::from_secs(60));
    std::thread::sleep(Duration::from_millis(500));
    let msgs2 = inst.mailbox("carol");
    assert_eq!(msgs2.len(), 50, "each message exactly once");
    for i in 0..50 {
        let needle = format!("Subject: concurrent {i}\n");
        let n = msgs
            .iter()
            .filter(|m| String::from_utf8_lossy(m).contains(&needle))
            .count();
        assert_eq!(n, 1, "message {i} delivered {n} times");
    }
}

#[test]
fn smtp_protocol_details() {
    let inst = started(Options::default());
    let mut c = inst.smtp();
    let r = c.cmd("EHLO client.example");
    assert_eq!(r.code, 250);
    for ext in [
        "PIPELINING",
        "SIZE 10240000",
        "8BITMIME",
        "ENHANCEDSTATUSCODES",
    ] {
        assert!(r.lines.iter().any(|l| l == ext), "EHLO lacks {ext}: {r:?}");
    }
    assert!(
        !r.lines.iter().any(|l| l == "VRFY"),
        "VRFY is off by default"
    );
    assert_eq!(c.cmd("RCPT TO:<alice@example.test>").code, 503);
    assert_eq!(c.cmd("DATA").code, 503);
    assert_eq!(c.cmd("FROBNICATE").code, 500);
    assert_eq!(c.cmd("VRFY alice").code, 502);
    assert_eq!(c.cmd("NOOP").code, 250);
    let help = c.cmd("HELP");
    assert_eq!(help.code, 214);
    let listed = help.lines.last().cloned().unwrap_or_default();
    assert!(listed.contains("MAIL RCPT DATA"), "{help:?}");
    for absent in ["VRFY", "STARTTLS", "AUTH"] {
        assert!(
            !listed.split(' ').any(|w| w == absent),
            "HELP offers {absent}, which this session does not: {help:?}"
        );
    }
    let r = c.cmd("MAIL FROM:<s@remote.example> SIZE=999999999");
    assert_eq!(r.code, 552, "{r:?}");
    assert_eq!(c.cmd("MAIL FROM:<s@remote.example> SIZE=100").code, 250);
    assert_eq!(
        c.cmd("MAIL FROM:<s@remote.example>").code,
        503,
        "nested MAIL"
    );
    assert_eq!(c.cmd("RSET").code, 250);
    // Pipelining: several commands in one write, replies in order.
    c.raw(b"MAIL FROM:<s@remote.example>\r\nRCPT TO:<alice@example.test>\r\nRCPT TO:<nobody@example.test>\r\nDATA\r\n");
    assert_eq!(c.read_reply().code, 250);
    assert_eq!(c.read_reply().code, 250);
    assert_eq!(c.read_reply().code, 550);
    assert_eq!(c.read_reply().code, 354);
    c.raw(b"Subject: pipelined\r\n\r\nok\r\n.\r\n");
    queued_id(&c.read_reply());
    let long = format!("NOOP {}", "a".repeat(5000));
    assert_eq!(c.cmd(&long).code, 500, "over-long command line");
    assert_eq!(c.cmd("NOOP").code, 250, "still in step after the long line");
    assert_eq!(c.cmd("QUIT").code, 221);
    inst.wait_mail("alice", 1, T);
}

#[test]
fn oversized_messages_are_refused_after_data() {
    let inst = started(Options {
        main_extra: "message_size_limit = 20000".into(),
        ..Options::default()
    });
    let mut c = inst.smtp();
    c.cmd("EHLO client.example");
    let big = format!("Subject: big\r\n\r\n{}\r\n", "y".repeat(100).repeat(300));
    let r = c.send("s@remote.example", &["alice@example.test"], big.as_bytes());
    assert_eq!(r.code, 552, "{r:?}");
    // The session continues in step after the refused data.
    assert_eq!(c.cmd("NOOP").code, 250);
    // Short lines, no SIZE parameter: 18,000 bytes once CRLF became LF but
    // 24,000 on the wire. The limit is on the octets received (RFC 1870,
    // Postfix), so this is refused too, after the end of data.
    let short_lines = format!("Subject: short\r\n\r\n{}", "yy\r\n".repeat(6000));
    let r = c.send(
        "s@remote.example",
        &["alice@example.test"],
        short_lines.as_bytes(),
    );
    assert_eq!(r.code, 552, "{r:?}");
    assert!(r.text().contains("5.3.4"), "{r:?}");
    assert_eq!(c.cmd("NOOP").code, 250);
    let r = c.send(
        "s@remote.example",
        &["alice@example.test"],
        b"Subject: small\r\n\r\nfits\r\n",
    );
    queued_id(&r);
    let msgs = inst.wait_mail("alice", 1, T);
    assert_eq!(msgs.len(), 1);
    assert!(msgs[0].ends_with(b"fits\n"));
    assert!(wait_until(T, || inst.queue_empty()), "nothing else queued");
    assert_eq!(
        inst.mailbox("alice").len(),
        1,
        "the refused messages were not delivered"
    );
}

#[test]
fn bdat_chunks_are_delivered_byte_exact_and_limited_like_data() {
    let inst = started(Options {
        main_extra: "message_size_limit = 20000".into(),
        ..Options::default()
    });
    let mut c = inst.smtp();
    let ehlo = c.cmd("EHLO client.example");
    assert!(ehlo.lines.iter().any(|l| l == "CHUNKING"), "{ehlo:?}");
    // Without a transaction the chunk is skipped, the session stays in step.
    c.raw(b"BDAT 13\r\nRCPT TO:<x>\r\n");
    assert_eq!(c.read_reply().code, 503);
    assert_eq!(
        c.cmd("NOOP").code,
        250,
        "the chunk was not read as commands"
    );
    // A message in three chunks, all pipelined; a CRLF split between
    // chunks, a "." line that is content (no stuffing in BDAT).
    let parts: [&[u8]; 3] = [
        b"Subject: chunks\r\nFrom: s@remote.example\r",
        b"\n\r\nline one\r\n.\r\n..two dots\r\n",
        b"last line\r\n",
    ];
    let mut wire = b"MAIL FROM:<s@remote.example>\r\nRCPT TO:<alice@example.test>\r\n".to_vec();
    for (i, p) in parts.iter().enumerate() {
        let last = if i == parts.len() - 1 { " LAST" } else { "" };
        wire.extend_from_slice(format!("BDAT {}{last}\r\n", p.len()).as_bytes());
        wire.extend_from_slice(p);
    }
    c.raw(&wire);
    assert_eq!(c.read_reply().code, 250, "MAIL");
    assert_eq!(c.read_reply().code, 250, "RCPT");
    let r = c.read_reply();
    assert_eq!(
        (r.code, r.text()),
        (250, format!("2.0.0 Ok: {} bytes", parts[0].len()))
    );
    assert_eq!(c.read_reply().code, 250);
    let r = c.read_reply();
    queued_id(&r);
    let msgs = inst.wait_mail("alice", 1, T);
    assert!(
        msgs[0].ends_with(b"From: s@remote.example\n\nline one\n.\n..two dots\nlast line\n"),
        "{}",
        String::from_utf8_lossy(&msgs[0])
    );
    // DATA cannot follow BDAT in one transaction.
    assert_eq!(c.cmd("MAIL FROM:<s@remote.example>").code, 250);
    assert_eq!(c.cmd("RCPT TO:<bob@example.test>").code, 250);
    c.raw(b"BDAT 4\r\nab\r\n");
    assert_eq!(c.read_reply().code, 250);
    assert_eq!(c.cmd("DATA").code, 503);
    assert_eq!(c.cmd("RSET").code, 250);
    // Over message_size_limit in the second chunk: 552 5.3.4 for it, the
    // chunk is still consumed, nothing is queued; the next BDAT has no
    // transaction any more.
    assert_eq!(c.cmd("MAIL FROM:<s@remote.example>").code, 250);
    assert_eq!(c.cmd("RCPT TO:<bob@example.test>").code, 250);
    let chunk = "y\r\n".repeat(4000);
    c.raw(format!("BDAT {}\r\n{chunk}", chunk.len()).as_bytes());
    assert_eq!(c.read_reply().code, 250);
    c.raw(format!("BDAT {}\r\n{chunk}", chunk.len()).as_bytes());
    let r = c.read_reply();
    assert_eq!(r.code, 552, "{r:?}");
    assert!(r.text().contains("5.3.4"), "{r:?}");
    c.raw(format!("BDAT {} LAST\r\n{chunk}", chunk.len()).as_bytes());
    assert_eq!(c.read_reply().code, 503);
    assert_eq!(c.cmd("NOOP").code, 250);
    assert!(wait_until(T, || inst.queue_empty()));
    assert!(
        inst.mailbox("bob").is_empty(),
        "nothing of the refused messages"
    );
    // A BDAT whose size cannot be read: the chunk cannot be found, so the
    // server hangs up rather than read its bytes as commands.
    c.raw(b"BDAT 1x\r\nQUIT\r\n");
    assert_eq!(c.read_reply().code, 501);
    assert!(c.try_read_reply().is_none(), "connection closed");
}

#[test]
fn python_smtplib_can_send() {
    // A real client that is not ours.
    let inst = started(Options::default());
    let script = format!(
        "import smtplib\n\
         s = smtplib.SMTP('127.0.0.1', {port}, timeout=30)\n\
         s.ehlo('pyclient.example')\n\
         s.sendmail('py@remote.example', ['bob@example.test'], b'Subject: from python\\r\\n\\r\\n.hello from smtplib\\r\\n')\n\
         s.quit()\n",
        port = inst.smtp_port
    );
    let out = std::process::Command::new("python3")
        .arg("-c")
        .arg(&script)
        .output();
    let Ok(out) = out else {
        eprintln!("python3 not available; skipping");
        return;
    };
    assert!(
        out.status.success(),
        "smtplib failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let m = inst.wait_mail("bob", 1, T);
    assert!(
        m[0].ends_with(b".hello from smtplib\n"),
        "{}",
        String::from_utf8_lossy(&m[0])
    );
}
