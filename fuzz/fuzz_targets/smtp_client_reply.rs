//! Fuzz target: the SMTP client's reply parser, and what reads its replies
//! (EHLO capabilities, the session verdicts, the mail transaction).
//!
//! Input: one byte that chooses a split point, then the server's output.
//! Checks: nothing panics; the replies (and the error, if any) are the same
//! whether the input comes whole, in two pieces or one byte at a time;
//! every reply has a 2xx..5xx code, at most MAX_REPLY_LINES lines of at
//! most MAX_REPLY_LINE bytes, and no line break in its one-line text; a
//! pipelined transaction fed these replies ends with a result for every
//! recipient.

#![no_main]

use libfuzzer_sys::fuzz_target;
use postern_smtp_proto::client::{
    Action, Capabilities, Envelope, MAX_REPLY_LINE, MAX_REPLY_LINES, Protocol, RcptState,
    Recipient, ReplyError, ReplyParser, ServerReply, Stage, Transaction, TransactionOptions,
    greeting_verdict, helo_verdict,
};
use postern_smtp_proto::{Mailbox, ReversePath};

fn parse(pieces: &[&[u8]]) -> (Vec<ServerReply>, Option<ReplyError>) {
    let mut parser = ReplyParser::new();
    let mut replies = Vec::new();
    for piece in pieces {
        parser.push(piece);
        loop {
            match parser.next_reply() {
                Ok(Some(r)) => replies.push(r),
                Ok(None) => break,
                Err(e) => return (replies, Some(e)),
            }
        }
    }
    (replies, None)
}

fuzz_target!(|data: &[u8]| {
    let Some((&head, input)) = data.split_first() else {
        return;
    };
    let cut = usize::from(head) % (input.len() + 1);
    let whole = parse(&[input]);
    let halves = parse(&[&input[..cut], &input[cut..]]);
    let bytes: Vec<&[u8]> = input.chunks(1).collect();
    let one_by_one = parse(&bytes);
    assert_eq!(whole, halves);
    assert_eq!(whole, one_by_one);
    for r in &whole.0 {
        assert!((200..600).contains(&r.code));
        assert!(!r.lines.is_empty() && r.lines.len() <= MAX_REPLY_LINES);
        assert!(r.lines.iter().all(|l| l.len() <= 3 * MAX_REPLY_LINE));
        assert!(!r.full_text().contains(['\r', '\n']));
        if let Some(e) = r.enhanced {
            assert_eq!(u16::from(e.0), r.code / 100);
        }
        let _ = Capabilities::from_ehlo(r);
        let _ = greeting_verdict(r);
        let _ = helo_verdict(Stage::Ehlo, r);
    }

    // A transaction fed these replies always ends, with every result.
    let caps = whole
        .0
        .first()
        .map(Capabilities::from_ehlo)
        .unwrap_or_default();
    let rcpt = |s: &str| Recipient::new(Mailbox::parse(s).expect("valid"));
    let env = Envelope {
        sender: ReversePath::Null,
        recipients: vec![rcpt("a@x.example"), rcpt("b@x.example")],
        ret: None,
        envid: None,
        size: 10,
        eight_bit: false,
        smtputf8: false,
    };
    let protocol = if head & 1 == 1 {
        Protocol::Lmtp
    } else {
        Protocol::Smtp
    };
    let opts = TransactionOptions {
        protocol,
        server: "mx".into(),
        ..TransactionOptions::default()
    };
    let mut tx = Transaction::new(caps, env, opts);
    let mut replies = whole.0.iter().skip(1);
    for _ in 0..100 {
        match tx.next_action() {
            Action::Send(_) => {}
            Action::Read(_) => match replies.next() {
                Some(r) => tx.on_reply(r).expect("a reply was expected"),
                None => tx.abort("lost connection"),
            },
            Action::SendContent => tx.content_sent().expect("in DATA"),
            Action::SendChunk => {
                tx.bdat_command(0, true).expect("in BDAT");
            }
            Action::Done(_) => break,
        }
    }
    assert!(tx.outcome().is_some());
    assert!(
        tx.recipients()
            .iter()
            .all(|s| matches!(s, RcptState::Final(_)))
    );
});
