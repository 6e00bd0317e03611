//! Session tests over an in-memory driver: no sockets, no runtime. Each
//! `read` hands out the next scripted piece of input, so a piece is what
//! the client pipelined in one go.

use super::*;
use std::collections::VecDeque;
use std::future::Future;
use std::pin::pin;
use std::task::{Context, Poll, Waker};

/// Runs a future that never waits (the test driver is all in memory).
fn block_on<F: Future>(f: F) -> F::Output {
    let mut f = pin!(f);
    let mut cx = Context::from_waker(Waker::noop());
    loop {
        if let Poll::Ready(v) = f.as_mut().poll(&mut cx) {
            return v;
        }
    }
}

#[derive(Default)]
struct Mem {
    input: VecDeque<Vec<u8>>,
    output: Vec<u8>,
    notices: Vec<Notice>,
    content: Vec<u8>,
    /// (sender, recipients, content) per message committed.
    committed: Vec<(String, Vec<String>, Vec<u8>)>,
    resets: u32,
    tls_handshakes: u32,
    slept: u32,
    /// RCPT local parts refused with this reply.
    refuse: Vec<(String, Reply)>,
    /// The password of user "u" for AUTH PLAIN-ish tests.
    auth_lines: Vec<Vec<u8>>,
    /// Every recipient the driver was asked about.
    rcpts: Vec<RcptTo>,
    /// The MAIL parameters of each committed message.
    mail_params: Vec<crate::MailParams>,
}

impl Mem {
    fn new(pieces: &[&[u8]]) -> Mem {
        Mem {
            input: pieces.iter().map(|p| p.to_vec()).collect(),
            ..Mem::default()
        }
    }

    fn out(&self) -> String {
        String::from_utf8_lossy(&self.output).into_owned()
    }

    /// The reply codes written, one per final reply line.
    fn codes(&self) -> Vec<u16> {
        self.out()
            .split("\r\n")
            .filter(|l| l.len() >= 4 && l.as_bytes()[3] == b' ')
            .filter_map(|l| l[..3].parse().ok())
            .collect()
    }
}

impl Driver for Mem {
    async fn read(&mut self, buf: &mut [u8]) -> Result<usize, End> {
        let Some(mut piece) = self.input.pop_front() else {
            return Err(End::Lost);
        };
        if piece.len() > buf.len() {
            let rest = piece.split_off(buf.len());
            self.input.push_front(rest);
        }
        buf[..piece.len()].copy_from_slice(&piece);
        Ok(piece.len())
    }
    async fn write(&mut self, bytes: &[u8]) -> Result<(), End> {
        self.output.extend_from_slice(bytes);
        Ok(())
    }
    async fn sleep(&mut self, _: Duration) {
        self.slept += 1;
    }
    async fn start_tls(&mut self, _: &Session) -> Result<(), End> {
        self.tls_handshakes += 1;
        Ok(())
    }
    async fn rcpt(&mut self, _: &Session, to: &RcptTo) -> Result<(), Reply> {
        self.rcpts.push(to.clone());
        match self
            .refuse
            .iter()
            .find(|(l, _)| *l == to.address.local_part)
        {
            Some((_, r)) => Err(r.clone()),
            None => Ok(()),
        }
    }
    async fn content(&mut self, _: &Session, data: Vec<u8>) -> bool {
        self.content.extend_from_slice(&data);
        true
    }
    async fn data_end(&mut self, s: &Session) -> Reply {
        let content = std::mem::take(&mut self.content);
        self.mail_params.extend(s.mail_params().cloned());
        self.committed.push((
            s.sender().map_or("?".into(), |r| r.bare()),
            s.recipients().iter().map(|m| m.to_string()).collect(),
            content,
        ));
        reply(
            250,
            (2, 0, 0),
            format!("Ok: queued as Q{}", self.committed.len()),
        )
    }
    async fn auth_start(&mut self, _: &Session, mechanism: &str, _: Option<&str>) -> AuthStep {
        if mechanism == "LOGIN" {
            AuthStep::Challenge("VXNlcm5hbWU6".into())
        } else {
            AuthStep::Refused(reply(
                504,
                (5, 5, 4),
                "Unsupported authentication mechanism",
            ))
        }
    }
    async fn auth_response(&mut self, _: &Session, line: Option<&[u8]>) -> AuthStep {
        let Some(line) = line else {
            return AuthStep::Refused(reply(500, (5, 5, 6), "too long"));
        };
        self.auth_lines.push(line.to_vec());
        match self.auth_lines.len() {
            1 => AuthStep::Challenge(String::new()),
            _ if line == b"c2VjcmV0" => AuthStep::Success(SaslLogin {
                user: "u".into(),
                mechanism: "LOGIN".into(),
            }),
            _ => AuthStep::Refused(reply(535, (5, 7, 8), "Error: authentication failed")),
        }
    }
    fn reset(&mut self) {
        self.resets += 1;
        self.content.clear();
    }
    fn notice(&mut self, _: &Session, n: Notice) {
        self.notices.push(n);
    }
}

fn config() -> Config {
    Config {
        hostname: "mx.test".into(),
        greeting: "mx.test ESMTP Postern".into(),
        message_size_limit: 1000,
        postmaster_domain: "example.test".into(),
        ..Config::default()
    }
}

/// Plays `pieces` against a fresh session with `config`.
fn play_with(config: Config, mut mem: Mem) -> (Session, Mem, Result<(), End>) {
    let mut s = Session::new(config);
    let end = block_on(s.run(&mut mem));
    (s, mem, end)
}

fn play(pieces: &[&[u8]]) -> (Session, Mem, Result<(), End>) {
    play_with(config(), Mem::new(pieces))
}

const ENVELOPE: &[u8] = b"EHLO c.test\r\nMAIL FROM:<a@c.test>\r\nRCPT TO:<b@example.test>\r\n";

#[test]
fn a_whole_transaction() {
    let (s, m, end) = play(&[
        b"EHLO c.test\r\n",
        b"MAIL FROM:<a@c.test> SIZE=10\r\nRCPT TO:<b@example.test>\r\nRCPT TO:<Postmaster>\r\nDATA\r\n",
        b"Subject: x\r\n\r\n..dot\r\n.\r\n",
        b"QUIT\r\n",
    ]);
    assert_eq!(end, Ok(()));
    let out = m.out();
    assert!(
        out.starts_with(
            "220 mx.test ESMTP Postern\r\n250-mx.test\r\n250-PIPELINING\r\n250-SIZE 1000\r\n"
        ),
        "{out}"
    );
    assert!(out.contains("250-CHUNKING\r\n250 SMTPUTF8\r\n"), "{out}");
    assert!(!out.contains("STARTTLS") && !out.contains("AUTH"), "{out}");
    assert_eq!(m.codes(), [220, 250, 250, 250, 250, 354, 250, 221]);
    assert!(
        out.contains("250 2.0.0 Ok: queued as Q1\r\n221 2.0.0 Bye\r\n"),
        "{out}"
    );
    assert_eq!(
        m.committed,
        [(
            "a@c.test".to_string(),
            vec![
                "b@example.test".to_string(),
                "postmaster@example.test".to_string()
            ],
            b"Subject: x\n\n.dot\n".to_vec()
        )]
    );
    assert_eq!(s.stats(), "ehlo=1 mail=1 rcpt=2 data=1 quit=1 commands=6");
    assert_eq!(s.last_command(), "QUIT");
    assert_eq!(s.proto(), "ESMTP");
}

#[test]
fn dsn_parameters_arrive_typed() {
    let (_, m, end) = play(&[
        b"EHLO c.test\r\n",
        b"MAIL FROM:<a@c.test> RET=HDRS ENVID=QQ+2B1\r\n",
        b"RCPT TO:<b@example.test> NOTIFY=success,DELAY ORCPT=rfc822;B+40example.test\r\n",
        b"RCPT TO:<c@example.test> NOTIFY=SOMETIMES\r\n",
        b"RCPT TO:<d@example.test> NOTIFY=NEVER\r\n",
        b"DATA\r\n",
        b"x\r\n.\r\nQUIT\r\n",
    ]);
    assert_eq!(end, Ok(()));
    let out = m.out();
    assert!(out.contains("250-8BITMIME\r\n250-DSN\r\n"), "{out}");
    assert_eq!(m.codes(), [220, 250, 250, 250, 501, 250, 354, 250, 221]);
    assert_eq!(m.rcpts.len(), 2, "the bad NOTIFY never reached the driver");
    assert_eq!(
        m.rcpts[0].notify,
        Some(crate::Notify::On {
            success: true,
            failure: false,
            delay: true
        })
    );
    let orcpt = m.rcpts[0].orcpt.as_ref().expect("ORCPT");
    assert_eq!(
        (orcpt.addr_type.as_str(), orcpt.address.as_str()),
        ("rfc822", "B@example.test")
    );
    assert_eq!(m.rcpts[1].notify, Some(crate::Notify::Never));
    assert_eq!(m.mail_params.len(), 1);
    assert_eq!(m.mail_params[0].ret, Some(crate::Ret::Hdrs));
    assert_eq!(m.mail_params[0].envid.as_deref(), Some("QQ+1"));
}

#[test]
fn without_dsn_its_parameters_are_refused() {
    let config = Config {
        dsn: false,
        ..config()
    };
    let mem = Mem::new(&[
        b"EHLO c.test\r\n",
        b"MAIL FROM:<a@c.test> RET=FULL\r\n",
        b"MAIL FROM:<a@c.test>\r\n",
        b"RCPT TO:<b@example.test> NOTIFY=NEVER\r\n",
        b"QUIT\r\n",
    ]);
    let (_, m, _) = play_with(config, mem);
    let out = m.out();
    assert!(!out.contains("DSN"), "{out}");
    assert_eq!(m.codes(), [220, 250, 555, 250, 555, 221]);
}

#[test]
fn data_last_in_a_pipelined_group_is_fine() {
    let mut first = ENVELOPE.to_vec();
    first.extend_from_slice(b"DATA\r\n");
    let (_, m, end) = play(&[&first, b"hello\r\n.\r\nQUIT\r\n"]);
    assert_eq!(end, Ok(()));
    assert_eq!(m.codes(), [220, 250, 250, 250, 354, 250, 221]);
    assert_eq!(m.committed[0].2, b"hello\n");
}

#[test]
fn commands_after_data_in_one_group_end_the_session() {
    // The bytes after DATA may be message text: never run them as commands.
    let mut first = ENVELOPE.to_vec();
    first.extend_from_slice(b"DATA\r\nRCPT TO:<evil@x.test>\r\n.\r\nQUIT\r\n");
    let (s, m, end) = play(&[&first]);
    assert_eq!(end, Err(End::HungUp));
    assert!(
        m.out().ends_with(
            "554 5.5.0 Error: improper command pipelining after DATA, closing connection\r\n"
        ),
        "{}",
        m.out()
    );
    assert_eq!(m.notices, [Notice::ImproperPipelining]);
    assert!(m.committed.is_empty());
    assert_eq!(m.resets, 1);
    assert_eq!(s.stats(), "ehlo=1 mail=1 rcpt=1 data=0/1 commands=3/4");
}

#[test]
fn end_of_data_is_only_crlf_dot_crlf() {
    // SMTP smuggling: none of these ends the message, so the "MAIL" after
    // them is content and never a second transaction.
    for fake in [&b"\n.\n"[..], b"\r.\r", b"\n.\r\n", b"\r\n.\n", b"\r.\r\n"] {
        let mut body = b"one".to_vec();
        body.extend_from_slice(fake);
        body.extend_from_slice(b"MAIL FROM:<evil@x.test>\r\nRCPT TO:<v@example.test>\r\n");
        body.extend_from_slice(b"\r\n.\r\nQUIT\r\n");
        let mut first = ENVELOPE.to_vec();
        first.extend_from_slice(b"DATA\r\n");
        let (_, m, end) = play(&[&first, &body]);
        assert_eq!(end, Ok(()), "{fake:?}");
        assert_eq!(m.committed.len(), 1, "{fake:?}");
        let content = String::from_utf8_lossy(&m.committed[0].2).into_owned();
        assert!(
            content.contains("MAIL FROM:<evil@x.test>"),
            "{fake:?}: {content}"
        );
        assert_eq!(m.codes(), [220, 250, 250, 250, 354, 250, 221], "{fake:?}");
    }
}

#[test]
fn commands_pipelined_after_the_end_of_data_are_read() {
    let mut first = ENVELOPE.to_vec();
    first.extend_from_slice(b"DATA\r\n");
    let (_, m, end) = play(&[
        &first,
        b"one\r\n.\r\nMAIL FROM:<>\r\nRCPT TO:<c@example.test>\r\nDATA\r\n",
        b"two\r\n",
        b".\r\nQUIT\r\n",
    ]);
    assert_eq!(end, Ok(()));
    assert_eq!(m.committed.len(), 2);
    assert_eq!(m.committed[1].0, "");
    assert_eq!(m.committed[1].2, b"two\n");
    assert_eq!(m.resets, 2);
}

#[test]
fn plaintext_pipelined_after_starttls_is_discarded() {
    let cfg = Config {
        starttls: true,
        ..config()
    };
    let mem = Mem::new(&[
        b"EHLO c.test\r\n",
        b"STARTTLS\r\nMAIL FROM:<evil@x.test>\r\nRCPT TO:<b@example.test>\r\n",
        b"MAIL FROM:<a@c.test>\r\n",
        b"EHLO c.test\r\nQUIT\r\n",
    ]);
    let (s, m, end) = play_with(cfg, mem);
    assert_eq!(end, Ok(()));
    assert_eq!(m.tls_handshakes, 1);
    assert_eq!(m.notices, [Notice::PlaintextDiscarded { bytes: 51 }]);
    let out = m.out();
    assert!(out.contains("250-STARTTLS\r\n"), "{out}");
    let after = out
        .split("220 2.0.0 Ready to start TLS\r\n")
        .nth(1)
        .unwrap();
    // Only the MAIL sent inside TLS was answered (and the RCPT never).
    assert!(
        after.starts_with("250 2.1.0 Ok\r\n250-mx.test\r\n"),
        "{after}"
    );
    assert!(!after.contains("STARTTLS"), "{after}");
    assert!(s.tls_active());
    assert_eq!(s.proto(), "ESMTPS");
    assert_eq!(s.stats(), "ehlo=2 starttls=1 mail=1 quit=1 commands=5");
}

#[test]
fn starttls_resets_helo_and_is_refused_inside_tls() {
    let cfg = Config {
        starttls: true,
        helo_required: true,
        ..config()
    };
    let mem = Mem::new(&[
        b"EHLO c.test\r\n",
        b"STARTTLS\r\n",
        b"MAIL FROM:<a@c.test>\r\n",
        b"STARTTLS\r\nQUIT\r\n",
    ]);
    let (_, m, _) = play_with(cfg, mem);
    let out = m.out();
    assert!(
        out.contains("503 5.5.1 Error: send HELO/EHLO first\r\n"),
        "{out}"
    );
    assert!(
        out.contains("554 5.5.1 Error: TLS already active\r\n"),
        "{out}"
    );
}

#[test]
fn bdat_consumes_exactly_its_size() {
    // The chunk holds text that looks like commands and a CRLF.CRLF: it is
    // content all the same, and what follows the size is the next command.
    let (_, m, end) = play(&[
        ENVELOPE,
        b"BDAT 20\r\nQUIT\r\n.\r\nRSET\r\nabcd\r",
        b"BDAT 3 LAST\r\n",
        b"\ndeNOOP\r\nQUIT\r\n",
    ]);
    assert_eq!(end, Ok(()));
    assert_eq!(m.committed.len(), 1);
    assert_eq!(m.committed[0].2, b"QUIT\n.\nRSET\nabcd\nde");
    let out = m.out();
    assert!(
        out.contains("250 2.0.0 Ok: 20 bytes\r\n250 2.0.0 Ok: queued as Q1\r\n250 2.0.0 Ok\r\n221"),
        "{out}"
    );
}

#[test]
fn bdat_split_across_reads_and_refused_bdat_is_skipped() {
    let mut mem = Mem::new(&[
        b"BDAT 6\r\nQUIT\r\n",
        b"NOOP\r\n",
        ENVELOPE,
        b"BDAT 10 LAST\r\n0123",
        b"45",
        b"6789DATA\r\n",
        b"QUIT\r\n",
    ]);
    mem.input.push_front(b"EHLO c.test\r\n".to_vec());
    let (s, m, end) = play_with(config(), mem);
    assert_eq!(end, Ok(()));
    let out = m.out();
    // No transaction: 503, and "QUIT\r\n" was the skipped chunk.
    assert!(
        out.contains("503 5.5.1 Error: need RCPT command\r\n250 2.0.0 Ok\r\n"),
        "{out}"
    );
    assert_eq!(m.committed[0].2, b"0123456789");
    // DATA after the message: a new transaction is needed.
    assert!(
        out.ends_with("Q1\r\n503 5.5.1 Error: need RCPT command\r\n221 2.0.0 Bye\r\n"),
        "{out}"
    );
    assert_eq!(
        s.stats(),
        "ehlo=2 mail=1 rcpt=1 data=0/1 bdat=1/2 noop=1 quit=1 commands=7/9"
    );
}

#[test]
fn data_cannot_follow_bdat() {
    let (_, m, _) = play(&[
        ENVELOPE,
        b"BDAT 2\r\nab",
        b"DATA\r\n",
        b"BDAT 0 LAST\r\nQUIT\r\n",
    ]);
    let out = m.out();
    assert!(
        out.contains("503 5.5.1 Error: DATA cannot follow BDAT in one transaction\r\n"),
        "{out}"
    );
    assert_eq!(m.committed[0].2, b"ab");
}

#[test]
fn a_bdat_without_a_readable_size_ends_the_session() {
    let (s, m, end) = play(&[ENVELOPE, b"BDAT 1x\r\nQUIT\r\n"]);
    assert_eq!(end, Err(End::HungUp));
    assert_eq!(m.notices, [Notice::BadBdat]);
    assert_eq!(m.resets, 1);
    assert!(
        m.out()
            .ends_with("250 2.1.5 Ok\r\n501 5.5.4 Syntax: BDAT chunk-size [LAST]\r\n"),
        "{}",
        m.out()
    );
    assert_eq!(s.last_command(), "BDAT");
}

#[test]
fn too_big_and_bare_newlines() {
    let mut body = vec![b'x'; 1200];
    body.extend_from_slice(b"\r\n.\r\n");
    let mut first = ENVELOPE.to_vec();
    first.extend_from_slice(b"DATA\r\n");
    let (_, m, _) = play(&[&first, &body, b"QUIT\r\n"]);
    assert!(
        m.out()
            .contains("552 5.3.4 Error: message file too big\r\n"),
        "{}",
        m.out()
    );
    assert_eq!(m.notices, [Notice::MessageTooBig { size: 1202 }]);
    assert!(m.committed.is_empty());

    let cfg = Config {
        reject_bare_newline: true,
        ..config()
    };
    let (_, m, _) = play_with(
        cfg,
        Mem::new(&[&first, b"a\nb\r\n.\r\n", b"NOOP\n", b"QUIT\r\n"]),
    );
    let out = m.out();
    assert!(
        out.contains("550 5.5.2 Error: bare <LF> received\r\n"),
        "{out}"
    );
    assert!(
        out.contains("500 5.5.2 Error: bare <LF> received\r\n"),
        "{out}"
    );
    assert_eq!(m.notices, [Notice::BareNewlineContent]);
}

#[test]
fn limits_on_errors_recipients_and_lines() {
    let cfg = Config {
        hard_error_limit: 3,
        soft_error_limit: 1,
        recipient_limit: 1,
        line_limit: 512,
        ..config()
    };
    let long = [b'x'; 600];
    let mut mem = Mem::new(&[
        ENVELOPE,
        b"RCPT TO:<c@example.test>\r\n",
        &long,
        b"\r\nBOGUS\r\n",
        b"MAIL FROM:<a@c.test>\r\n",
        b"NOOP\r\n",
    ]);
    mem.refuse.clear();
    let (s, m, end) = play_with(cfg, mem);
    assert_eq!(end, Err(End::HungUp));
    let out = m.out();
    assert!(
        out.contains("452 4.5.3 Error: too many recipients\r\n"),
        "{out}"
    );
    assert!(out.contains("500 5.5.2 Error: line too long\r\n"), "{out}");
    assert!(
        out.ends_with(
            "503 5.5.1 Error: nested MAIL command\r\n421 4.7.0 mx.test Error: too many errors\r\n"
        ),
        "{out}"
    );
    assert_eq!(m.notices, [Notice::TooManyErrors]);
    // Past the soft limit: a pause after each error.
    assert_eq!(m.slept, 1);
    assert_eq!(
        s.stats(),
        "ehlo=1 mail=1/2 rcpt=1/2 unknown=0/1 commands=3/6"
    );
}

#[test]
fn policy_refusals_count_only_when_permanent() {
    let mut mem = Mem::new(&[
        ENVELOPE,
        b"RCPT TO:<temp@example.test>\r\nRCPT TO:<perm@example.test>\r\nQUIT\r\n",
    ]);
    mem.refuse = vec![
        ("temp".into(), reply(450, (4, 1, 1), "try later")),
        ("perm".into(), reply(550, (5, 1, 1), "no such user")),
    ];
    let (s, m, _) = play_with(config(), mem);
    let out = m.out();
    assert!(
        out.contains("450 4.1.1 try later\r\n550 5.1.1 no such user\r\n"),
        "{out}"
    );
    let rcpts: Vec<String> = s.recipients().iter().map(|m| m.to_string()).collect();
    assert_eq!(rcpts, ["b@example.test"]);
    assert_eq!(s.stats(), "ehlo=1 mail=1 rcpt=1/3 quit=1 commands=4/6");
}

#[test]
fn mail_parameters_and_order() {
    let (_, m, _) = play(&[
        b"RCPT TO:<b@example.test>\r\n",
        b"MAIL FROM:<a@c.test> SIZE=5000\r\n",
        b"EHLO c.test\r\nMAIL FROM:<a@c.test> SIZE=5000\r\n",
        b"MAIL FROM:<a@c.test> BODY=BINARY\r\nMAIL FROM:<a@c.test> FOO=1\r\n",
        b"DATA\r\nQUIT\r\n",
    ]);
    let out = m.out();
    assert!(
        out.contains("503 5.5.1 Error: need MAIL command\r\n"),
        "{out}"
    );
    // Before EHLO, SIZE is not an extension in force.
    assert!(
        out.contains("555 5.5.4 Unsupported option: SIZE\r\n"),
        "{out}"
    );
    assert!(
        out.contains("552 5.3.4 Message size exceeds fixed limit\r\n"),
        "{out}"
    );
    assert!(
        out.contains("501 5.5.4 Unsupported BODY parameter value\r\n"),
        "{out}"
    );
    assert!(
        out.contains("555 5.5.4 Unsupported option: FOO\r\n"),
        "{out}"
    );
    assert!(
        out.contains("503 5.5.1 Error: need RCPT command\r\n"),
        "{out}"
    );
}

#[test]
fn auth_exchange() {
    let cfg = Config {
        sasl: true,
        tls_auth_only: false,
        sasl_mechanisms: "PLAIN LOGIN".into(),
        ..config()
    };
    let mem = Mem::new(&[
        b"AUTH LOGIN\r\n",
        b"EHLO c.test\r\nAUTH CRAM-MD5\r\n",
        b"AUTH LOGIN\r\n",
        b"dQ==\r\n",
        b"c2VjcmV0\r\n",
        b"AUTH LOGIN\r\nQUIT\r\n",
    ]);
    let (s, m, _) = play_with(cfg, mem);
    let out = m.out();
    assert!(
        out.contains("503 5.5.1 Error: send EHLO first\r\n"),
        "{out}"
    );
    assert!(out.contains("250-AUTH PLAIN LOGIN\r\n"), "{out}");
    assert!(
        out.contains("504 5.5.4 Unsupported authentication mechanism\r\n"),
        "{out}"
    );
    assert!(
        out.contains("334 VXNlcm5hbWU6\r\n334 \r\n235 2.7.0 Authentication successful\r\n"),
        "{out}"
    );
    assert!(
        out.contains("503 5.5.1 Error: already authenticated\r\n"),
        "{out}"
    );
    assert_eq!(s.sasl().map(|l| l.user.as_str()), Some("u"));
    assert_eq!(s.proto(), "ESMTPA");
    assert_eq!(s.stats(), "ehlo=1 auth=1/4 quit=1 commands=3/6");

    // smtpd_tls_auth_only: no AUTH in the clear.
    let cfg = Config {
        sasl: true,
        ..config()
    };
    let (_, m, _) = play_with(cfg, Mem::new(&[b"EHLO c.test\r\nAUTH LOGIN\r\nQUIT\r\n"]));
    assert!(!m.out().contains("AUTH"), "{}", m.out());
    assert!(
        m.out().contains("538 5.7.11 Encryption required"),
        "{}",
        m.out()
    );
}

#[test]
fn help_vrfy_and_junk() {
    let cfg = Config {
        junk_limit: 2,
        hard_error_limit: 2,
        ..config()
    };
    let (_, m, end) = play_with(
        cfg,
        Mem::new(&[b"HELP\r\nVRFY x\r\nNOOP\r\nRSET\r\nQUIT\r\n"]),
    );
    let out = m.out();
    assert!(out.contains("214-2.0.0 Commands supported:\r\n214 2.0.0 HELO EHLO MAIL RCPT DATA BDAT RSET NOOP QUIT HELP\r\n"), "{out}");
    assert!(
        out.contains("502 5.5.1 VRFY command is disabled\r\n"),
        "{out}"
    );
    // The third junk command is past the limit: with the VRFY error that
    // makes two errors, the hard limit.
    assert!(
        out.ends_with("421 4.7.0 mx.test Error: too many errors\r\n"),
        "{out}"
    );
    assert_eq!(end, Err(End::HungUp));
}

#[test]
fn the_connect_hook_can_refuse() {
    struct No(Mem);
    impl Driver for No {
        async fn read(&mut self, buf: &mut [u8]) -> Result<usize, End> {
            self.0.read(buf).await
        }
        async fn write(&mut self, b: &[u8]) -> Result<(), End> {
            self.0.write(b).await
        }
        async fn sleep(&mut self, _: Duration) {}
        async fn connect(&mut self, _: &Session) -> Result<(), Reply> {
            Err(reply(554, (5, 7, 1), "go away"))
        }
        async fn rcpt(&mut self, _: &Session, _: &RcptTo) -> Result<(), Reply> {
            Ok(())
        }
        async fn content(&mut self, _: &Session, _: Vec<u8>) -> bool {
            true
        }
        async fn data_end(&mut self, _: &Session) -> Reply {
            reply(250, (2, 0, 0), "Ok")
        }
    }
    let mut d = No(Mem::new(&[b"QUIT\r\n"]));
    let mut s = Session::new(config());
    assert_eq!(block_on(s.run(&mut d)), Err(End::HungUp));
    assert_eq!(d.0.out(), "554 5.7.1 go away\r\n");
}

#[test]
fn lost_connection_mid_data() {
    let mut first = ENVELOPE.to_vec();
    first.extend_from_slice(b"DATA\r\n");
    let (s, m, end) = play(&[&first, b"partial"]);
    assert_eq!(end, Err(End::Lost));
    assert!(m.committed.is_empty());
    assert_eq!(s.last_command(), "DATA");
}

mod prop {
    use super::*;
    use proptest::prelude::*;

    fn piece() -> impl Strategy<Value = Vec<u8>> {
        prop_oneof![
            Just(b"EHLO c.test\r\n".to_vec()),
            Just(b"MAIL FROM:<a@c.test>\r\n".to_vec()),
            Just(b"RCPT TO:<b@example.test>\r\n".to_vec()),
            Just(b"DATA\r\n".to_vec()),
            Just(b"BDAT 3\r\n".to_vec()),
            Just(b"BDAT 2 LAST\r\n".to_vec()),
            Just(b"BDAT x\r\n".to_vec()),
            Just(b"STARTTLS\r\n".to_vec()),
            Just(b"AUTH LOGIN\r\n".to_vec()),
            Just(b"RSET\r\n".to_vec()),
            Just(b"\r\n.\r\n".to_vec()),
            Just(b"\n.\n".to_vec()),
            Just(b"QUIT\r\n".to_vec()),
            proptest::collection::vec(any::<u8>(), 0..8),
        ]
    }

    proptest! {
        /// Whatever the client sends, cut into reads however: no panic,
        /// the session ends, and every line written is a reply line.
        #[test]
        fn any_input_ends_with_well_formed_replies(
            pieces in proptest::collection::vec(piece(), 0..24),
            cuts in proptest::collection::vec(1usize..40, 1..8),
        ) {
            let input = pieces.concat();
            let mut reads = Vec::new();
            let mut rest = &input[..];
            let mut i = 0;
            while !rest.is_empty() {
                let n = cuts[i % cuts.len()].min(rest.len());
                reads.push(rest[..n].to_vec());
                rest = &rest[n..];
                i += 1;
            }
            let cfg = Config { starttls: true, sasl: true, tls_auth_only: false, ..config() };
            let mut mem = Mem::new(&[]);
            mem.input = reads.into();
            let (s, m, _) = play_with(cfg, mem);
            let out = m.out();
            prop_assert!(out.ends_with("\r\n"));
            for line in out.split_terminator("\r\n") {
                prop_assert!(line.len() >= 3 && line[..3].bytes().all(|b| b.is_ascii_digit()), "{line:?}");
            }
            // Every committed message had a recipient.
            for (_, rcpts, _) in &m.committed {
                prop_assert!(!rcpts.is_empty());
            }
            prop_assert!(s.stats().contains("commands="));
        }
    }
}
