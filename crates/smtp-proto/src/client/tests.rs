//! The transaction planner against scripted servers.

use super::*;
use crate::params::{Notify, Orcpt};
use crate::{EnhancedCode, Mailbox, ReversePath};
use proptest::prelude::*;

const SERVER: &str = "mx.example[192.0.2.1]";

fn mb(s: &str) -> Mailbox {
    Mailbox::parse(s).unwrap()
}

fn envelope(rcpts: &[&str]) -> Envelope {
    Envelope {
        sender: ReversePath::Mailbox(mb("alice@example.org")),
        recipients: rcpts.iter().map(|r| Recipient::new(mb(r))).collect(),
        ret: None,
        envid: None,
        size: 100,
        eight_bit: false,
        smtputf8: false,
    }
}

fn caps(ehlo_lines: &[&str]) -> Capabilities {
    let mut lines = vec!["mx.example"];
    lines.extend_from_slice(ehlo_lines);
    Capabilities::from_ehlo(&ServerReply::new(250, &lines))
}

fn opts(protocol: Protocol) -> TransactionOptions {
    TransactionOptions {
        protocol,
        server: SERVER.into(),
        ..TransactionOptions::default()
    }
}

/// What a scripted run did.
#[derive(Debug)]
struct Run {
    /// Each write, as text.
    writes: Vec<String>,
    reads: Vec<Stage>,
    outcome: Outcome,
    results: Vec<RcptResult>,
    /// Results in the order take_results handed them over.
    reported: Vec<usize>,
}

/// Plays `tx` against a server that answers with `replies` (wire form, all
/// available from the start: that is fine for a pipelining client, since
/// it reads replies in order). Content goes through DotStuffer or, with
/// BDAT, through CrlfNormalizer in chunks of `chunk` input bytes. When the
/// replies run out, the connection is "lost".
fn run(mut tx: Transaction, replies: &str, content: &[u8], chunk: usize) -> Run {
    let mut parser = ReplyParser::new();
    parser.push(replies.as_bytes());
    let mut writes = Vec::new();
    let mut reads = Vec::new();
    let mut reported = Vec::new();
    let mut chunks = content.chunks(chunk.max(1)).peekable();
    let mut normalizer = Some(CrlfNormalizer::new());
    for _ in 0..10_000 {
        reported.extend(tx.take_results().into_iter().map(|(i, _)| i));
        match tx.next_action() {
            Action::Send(bytes) => writes.push(String::from_utf8(bytes).unwrap()),
            Action::Read(stage) => {
                reads.push(stage);
                match parser.next_reply() {
                    Ok(Some(r)) => tx.on_reply(&r).unwrap(),
                    Ok(None) => tx.abort(format!(
                        "lost connection with {SERVER} while {}",
                        stage.while_doing()
                    )),
                    Err(e) => tx.abort(e.to_string()),
                }
            }
            Action::SendContent => {
                let mut s = DotStuffer::new();
                let mut out = Vec::new();
                for piece in content.chunks(chunk.max(1)) {
                    s.feed(piece, &mut out);
                }
                s.finish(&mut out);
                writes.push(String::from_utf8(out).unwrap());
                tx.content_sent().unwrap();
            }
            Action::SendChunk => {
                let mut data = Vec::new();
                let piece = chunks.next();
                let n = normalizer.as_mut().unwrap();
                if let Some(p) = piece {
                    n.feed(p, &mut data);
                }
                let last = chunks.peek().is_none();
                if last {
                    normalizer.take().unwrap().finish(&mut data);
                }
                let mut w = tx.bdat_command(data.len() as u64, last).unwrap();
                w.extend_from_slice(&data);
                writes.push(String::from_utf8(w).unwrap());
            }
            Action::Done(outcome) => {
                reported.extend(tx.take_results().into_iter().map(|(i, _)| i));
                let results = tx
                    .recipients()
                    .iter()
                    .map(|s| match s {
                        RcptState::Final(r) => r.clone(),
                        other => panic!("recipient not final: {other:?}"),
                    })
                    .collect();
                return Run {
                    writes,
                    reads,
                    outcome,
                    results,
                    reported,
                };
            }
        }
    }
    panic!("transaction never ended");
}

fn dispositions(run: &Run) -> Vec<Disposition> {
    run.results.iter().map(|r| r.disposition).collect()
}

use Disposition::{Bounced, Deferred, Sent};

#[test]
fn pipelined_one_rcpt_rejected() {
    let tx = Transaction::new(
        caps(&["PIPELINING", "ENHANCEDSTATUSCODES"]),
        envelope(&["a@x.example", "b@x.example", "c@x.example"]),
        opts(Protocol::Smtp),
    );
    let r = run(
        tx,
        "250 2.1.0 Ok\r\n250 2.1.5 Ok\r\n550-5.1.1 <b@x.example>: Recipient address rejected:\r\n550 5.1.1 User unknown\r\n250 2.1.5 Ok\r\n354 End data with <CR><LF>.<CR><LF>\r\n250 2.0.0 Ok: queued as 4ABC\r\n",
        b"Subject: hi\n\n.dot\n",
        4,
    );
    assert_eq!(
        r.writes[0],
        "MAIL FROM:<alice@example.org>\r\nRCPT TO:<a@x.example>\r\nRCPT TO:<b@x.example>\r\nRCPT TO:<c@x.example>\r\nDATA\r\n",
        "MAIL, every RCPT and DATA in one write"
    );
    assert_eq!(r.writes[1], "Subject: hi\r\n\r\n..dot\r\n.\r\n");
    assert_eq!(r.writes.len(), 2);
    assert_eq!(dispositions(&r), vec![Sent, Bounced, Sent]);
    let b = &r.results[1];
    assert_eq!(b.code, Some(550));
    assert_eq!(b.enhanced, EnhancedCode(5, 1, 1));
    assert_eq!(b.stage, Some(Stage::Rcpt));
    assert_eq!(
        b.diagnostic(),
        "550-5.1.1 <b@x.example>: Recipient address rejected: 550 5.1.1 User unknown (in reply to RCPT TO command)"
    );
    assert_eq!(b.status().code(), EnhancedCode(5, 1, 1));
    assert!(b.status().is_permanent());
    let a = &r.results[0];
    assert_eq!(a.stage, Some(Stage::DataDone));
    assert_eq!(
        a.diagnostic(),
        "250 2.0.0 Ok: queued as 4ABC (in reply to end of DATA command)"
    );
    assert!(a.status().is_success());
    assert_eq!(r.outcome, Outcome::Completed { needs_rset: false });
    assert_eq!(
        r.reads,
        vec![
            Stage::Mail,
            Stage::Rcpt,
            Stage::Rcpt,
            Stage::Rcpt,
            Stage::Data,
            Stage::DataDone
        ]
    );
    // The bounce was reported before the others became final.
    assert_eq!(r.reported, vec![1, 0, 2]);
}

#[test]
fn all_rcpts_rejected_consumes_the_data_reply() {
    let tx = Transaction::new(
        caps(&["PIPELINING"]),
        envelope(&["a@x.example", "b@x.example"]),
        opts(Protocol::Smtp),
    );
    let r = run(
        tx,
        "250 Ok\r\n550 no\r\n450 later\r\n554 5.5.1 Error: no valid recipients\r\n",
        b"secret content\n",
        100,
    );
    assert_eq!(r.writes.len(), 1, "no content sent");
    assert!(!r.writes.concat().contains("secret"));
    assert_eq!(dispositions(&r), vec![Bounced, Deferred]);
    assert_eq!(
        r.results[0].enhanced,
        EnhancedCode(5, 0, 0),
        "Postfix's x.0.0"
    );
    assert_eq!(r.results[1].enhanced, EnhancedCode(4, 0, 0));
    assert_eq!(r.reads.last(), Some(&Stage::Data));
    assert_eq!(r.outcome, Outcome::Completed { needs_rset: true });
}

#[test]
fn all_rcpts_rejected_without_pipelining_sends_no_data() {
    let tx = Transaction::new(
        Capabilities::default(),
        envelope(&["a@x.example", "b@x.example"]),
        opts(Protocol::Smtp),
    );
    let r = run(tx, "250 Ok\r\n550 no\r\n550 no\r\n", b"x\n", 100);
    assert_eq!(
        r.writes,
        vec![
            "MAIL FROM:<alice@example.org>\r\n",
            "RCPT TO:<a@x.example>\r\n",
            "RCPT TO:<b@x.example>\r\n"
        ]
    );
    assert_eq!(dispositions(&r), vec![Bounced, Bounced]);
    assert_eq!(r.outcome, Outcome::Completed { needs_rset: true });
}

#[test]
fn one_command_per_reply_without_pipelining() {
    let tx = Transaction::new(
        caps(&["8BITMIME"]),
        envelope(&["a@x.example", "b@x.example"]),
        opts(Protocol::Smtp),
    );
    let r = run(
        tx,
        "250 Ok\r\n250 Ok\r\n451 4.3.0 try later\r\n354 go\r\n250 Ok\r\n",
        b"x",
        100,
    );
    assert_eq!(
        r.writes,
        vec![
            "MAIL FROM:<alice@example.org>\r\n",
            "RCPT TO:<a@x.example>\r\n",
            "RCPT TO:<b@x.example>\r\n",
            "DATA\r\n",
            "x\r\n.\r\n"
        ]
    );
    assert_eq!(dispositions(&r), vec![Sent, Deferred]);
    assert_eq!(r.results[1].enhanced, EnhancedCode(4, 3, 0));
}

#[test]
fn mail_refused_fails_everyone() {
    for (reply, disp, e) in [
        ("451 4.7.1 greylisted", Deferred, EnhancedCode(4, 7, 1)),
        ("553 sender rejected", Bounced, EnhancedCode(5, 0, 0)),
    ] {
        let tx = Transaction::new(
            caps(&["PIPELINING"]),
            envelope(&["a@x.example", "b@x.example"]),
            opts(Protocol::Smtp),
        );
        let replies = format!("{reply}\r\n503 5.5.1 need MAIL\r\n503 need MAIL\r\n503 no rcpt\r\n");
        let r = run(tx, &replies, b"x\n", 100);
        assert_eq!(dispositions(&r), vec![disp, disp]);
        for res in &r.results {
            assert_eq!(res.stage, Some(Stage::Mail));
            assert_eq!(res.enhanced, e);
            assert!(
                res.diagnostic()
                    .ends_with("(in reply to MAIL FROM command)")
            );
        }
        assert_eq!(r.reads.len(), 4, "every pipelined reply read");
        assert_eq!(r.writes.len(), 1);
        assert_eq!(r.outcome, Outcome::Completed { needs_rset: true });
    }
    // Without pipelining nothing more is sent.
    let tx = Transaction::new(
        Capabilities::default(),
        envelope(&["a@x.example"]),
        opts(Protocol::Smtp),
    );
    let r = run(tx, "550 no\r\n", b"x\n", 100);
    assert_eq!(r.writes.len(), 1);
    assert_eq!(dispositions(&r), vec![Bounced]);
}

#[test]
fn data_refused_fails_the_accepted() {
    let tx = Transaction::new(
        caps(&["PIPELINING"]),
        envelope(&["a@x.example", "b@x.example"]),
        opts(Protocol::Smtp),
    );
    let r = run(
        tx,
        "250 Ok\r\n250 Ok\r\n550 no\r\n451 4.3.0 queue full\r\n",
        b"x\n",
        100,
    );
    assert_eq!(dispositions(&r), vec![Deferred, Bounced]);
    assert_eq!(
        r.results[0].diagnostic(),
        "451 4.3.0 queue full (in reply to DATA command)"
    );
    assert_eq!(r.outcome, Outcome::Completed { needs_rset: true });
}

#[test]
fn unwanted_354_gets_an_empty_message() {
    let tx = Transaction::new(
        caps(&["PIPELINING"]),
        envelope(&["a@x.example"]),
        opts(Protocol::Smtp),
    );
    let r = run(
        tx,
        "250 Ok\r\n550 no\r\n354 go ahead\r\n250 Ok\r\n",
        b"secret\n",
        100,
    );
    assert_eq!(r.writes[1], ".\r\n");
    assert!(!r.writes.concat().contains("secret"));
    assert_eq!(dispositions(&r), vec![Bounced]);
    assert_eq!(r.outcome, Outcome::Completed { needs_rset: true });
}

#[test]
fn size_exceeded_sends_nothing() {
    let mut env = envelope(&["a@x.example", "b@x.example"]);
    env.size = 20_000_001;
    let mut tx = Transaction::new(
        caps(&["SIZE 20000000", "PIPELINING"]),
        env.clone(),
        opts(Protocol::Smtp),
    );
    assert_eq!(
        tx.next_action(),
        Action::Done(Outcome::Completed { needs_rset: false })
    );
    for s in tx.recipients() {
        let RcptState::Final(r) = s else { panic!() };
        assert_eq!(r.disposition, Bounced);
        assert_eq!(r.enhanced, EnhancedCode(5, 3, 4));
        assert_eq!(r.code, None);
        assert_eq!(
            r.diagnostic(),
            "message size 20000001 exceeds size limit 20000000 of server mx.example[192.0.2.1]"
        );
        assert_eq!(r.status().reply_code(), 552);
    }
    // SIZE without a limit, or a message that fits: sent, with SIZE=.
    for limit in ["SIZE", "SIZE 20000001"] {
        let mut tx = Transaction::new(caps(&[limit]), env.clone(), opts(Protocol::Smtp));
        assert_eq!(
            tx.next_action(),
            Action::Send(b"MAIL FROM:<alice@example.org> SIZE=20000001\r\n".to_vec())
        );
    }
}

#[test]
fn smtputf8_required_but_not_offered() {
    let mut env = envelope(&["a@x.example"]);
    env.smtputf8 = true;
    let mut tx = Transaction::new(caps(&["8BITMIME"]), env.clone(), opts(Protocol::Smtp));
    assert!(matches!(tx.next_action(), Action::Done(_)));
    let RcptState::Final(r) = &tx.recipients()[0] else {
        panic!()
    };
    assert_eq!(r.enhanced, EnhancedCode(5, 6, 7));
    assert_eq!(
        r.text,
        "SMTPUTF8 is required, but was not offered by host mx.example[192.0.2.1]"
    );
    // A non-ASCII address needs it too.
    let env2 = envelope(&["jörg@x.example"]);
    let mut tx = Transaction::new(caps(&[]), env2.clone(), opts(Protocol::Smtp));
    assert!(matches!(tx.next_action(), Action::Done(_)));
    // Offered: the parameter is sent.
    let mut tx = Transaction::new(caps(&["SMTPUTF8"]), env2, opts(Protocol::Smtp));
    assert_eq!(
        tx.next_action(),
        Action::Send(b"MAIL FROM:<alice@example.org> SMTPUTF8\r\n".to_vec())
    );
}

#[test]
fn service_closing_mid_rcpt() {
    let tx = Transaction::new(
        caps(&["PIPELINING"]),
        envelope(&["a@x.example", "b@x.example", "c@x.example"]),
        opts(Protocol::Smtp),
    );
    let r = run(
        tx,
        "250 Ok\r\n250 Ok\r\n421 4.3.2 Service shutting down\r\n",
        b"x\n",
        100,
    );
    assert_eq!(
        r.outcome,
        Outcome::TryNextHost(NextHostReason::ServiceClosing)
    );
    assert_eq!(dispositions(&r), vec![Deferred, Deferred, Deferred]);
    for res in &r.results {
        assert_eq!(res.code, Some(421));
        assert_eq!(res.enhanced, EnhancedCode(4, 3, 2));
        assert_eq!(res.stage, Some(Stage::Rcpt));
    }
    assert_eq!(r.writes.len(), 1);
}

#[test]
fn service_closing_after_data_keeps_earlier_results() {
    let tx = Transaction::new(
        caps(&["PIPELINING"]),
        envelope(&["a@x.example", "b@x.example"]),
        opts(Protocol::Smtp),
    );
    let r = run(
        tx,
        "250 Ok\r\n550 no\r\n250 Ok\r\n354 go\r\n421 bye\r\n",
        b"x\n",
        100,
    );
    assert_eq!(dispositions(&r), vec![Bounced, Deferred]);
    assert_eq!(r.results[0].stage, Some(Stage::Rcpt));
    assert_eq!(r.results[1].stage, Some(Stage::DataDone));
    assert_eq!(r.results[1].code, Some(421));
    assert_eq!(
        r.outcome,
        Outcome::TryNextHost(NextHostReason::ServiceClosing)
    );
}

#[test]
fn lmtp_one_reply_per_accepted_recipient() {
    let tx = Transaction::new(
        caps(&["PIPELINING", "ENHANCEDSTATUSCODES", "8BITMIME"]),
        envelope(&["a@x.example", "b@x.example", "c@x.example", "d@x.example"]),
        opts(Protocol::Lmtp),
    );
    let r = run(
        tx,
        "250 Ok\r\n250 Ok\r\n550 5.1.1 unknown\r\n250 Ok\r\n250 Ok\r\n354 go\r\n250 2.0.0 a ok\r\n452 4.2.2 c over quota\r\n552 5.2.2 d full\r\n",
        b"hello\n",
        100,
    );
    assert_eq!(dispositions(&r), vec![Sent, Bounced, Deferred, Bounced]);
    assert_eq!(r.results[0].text, "250 2.0.0 a ok");
    assert_eq!(r.results[2].enhanced, EnhancedCode(4, 2, 2));
    assert_eq!(r.results[3].stage, Some(Stage::DataDone));
    assert_eq!(r.reads.iter().filter(|s| **s == Stage::DataDone).count(), 3);
    assert_eq!(r.outcome, Outcome::Completed { needs_rset: false });
    // Too few final replies: the rest is deferred when the connection goes.
    let tx = Transaction::new(
        caps(&["PIPELINING"]),
        envelope(&["a@x.example", "b@x.example"]),
        opts(Protocol::Lmtp),
    );
    let r = run(
        tx,
        "250 Ok\r\n250 Ok\r\n250 Ok\r\n354 go\r\n250 ok\r\n",
        b"x\n",
        100,
    );
    assert_eq!(dispositions(&r), vec![Sent, Deferred]);
    assert_eq!(r.results[1].enhanced, EnhancedCode(4, 4, 2));
    assert_eq!(
        r.results[1].text,
        "lost connection with mx.example[192.0.2.1] while sending end of data -- message may be sent more than once"
    );
    assert_eq!(r.outcome, Outcome::TryNextHost(NextHostReason::Aborted));
}

#[test]
fn bdat_with_chunking() {
    let tx = Transaction::new(
        caps(&["PIPELINING", "CHUNKING", "8BITMIME"]),
        envelope(&["a@x.example", "b@x.example"]),
        opts(Protocol::Smtp),
    );
    let r = run(
        tx,
        "250 Ok\r\n250 Ok\r\n550 no\r\n250 2.0.0 chunk\r\n250 2.0.0 chunk\r\n250 2.0.0 queued\r\n",
        b".a\nbb\n.\nc",
        4,
    );
    assert_eq!(
        r.writes,
        vec![
            "MAIL FROM:<alice@example.org>\r\nRCPT TO:<a@x.example>\r\nRCPT TO:<b@x.example>\r\n",
            "BDAT 5\r\n.a\r\nb",
            "BDAT 6\r\nb\r\n.\r\n",
            "BDAT 3 LAST\r\nc\r\n",
        ],
        "MAIL and RCPTs pipelined, no DATA, raw chunks"
    );
    assert_eq!(dispositions(&r), vec![Sent, Bounced]);
    assert_eq!(r.results[0].stage, Some(Stage::BdatLast));
    assert_eq!(
        r.results[0].diagnostic(),
        "250 2.0.0 queued (in reply to BDAT LAST command)"
    );
    assert_eq!(r.outcome, Outcome::Completed { needs_rset: false });
}

#[test]
fn bdat_refused_chunk_stops_the_transfer() {
    let tx = Transaction::new(
        caps(&["CHUNKING"]),
        envelope(&["a@x.example"]),
        opts(Protocol::Smtp),
    );
    let r = run(
        tx,
        "250 Ok\r\n250 Ok\r\n552 5.3.4 too big\r\n",
        b"aaaa\nbbbb\n",
        5,
    );
    assert_eq!(r.writes.len(), 3, "no chunk after the refused one");
    assert_eq!(dispositions(&r), vec![Bounced]);
    assert_eq!(r.results[0].stage, Some(Stage::Bdat));
    assert_eq!(r.outcome, Outcome::Completed { needs_rset: true });
}

#[test]
fn lmtp_bdat_per_recipient() {
    let tx = Transaction::new(
        caps(&["PIPELINING", "CHUNKING"]),
        envelope(&["a@x.example", "b@x.example"]),
        opts(Protocol::Lmtp),
    );
    let r = run(
        tx,
        "250 Ok\r\n250 Ok\r\n250 Ok\r\n250 ok a\r\n450 no b\r\n",
        b"x\n",
        100,
    );
    assert_eq!(r.writes[1], "BDAT 3 LAST\r\nx\r\n");
    assert_eq!(dispositions(&r), vec![Sent, Deferred]);
}

#[test]
fn dsn_parameters_with_xtext() {
    let mut env = envelope(&["b@x.example"]);
    env.ret = Some(crate::Ret::Full);
    env.envid = Some("Q1+x".into());
    env.recipients[0].notify = Some(Notify::On {
        success: false,
        failure: true,
        delay: true,
    });
    env.recipients[0].orcpt = Some(Orcpt {
        addr_type: "rfc822".into(),
        address: "B=b+1@x.example".into(),
    });
    let mut tx = Transaction::new(
        caps(&["PIPELINING", "DSN", "SIZE"]),
        env.clone(),
        opts(Protocol::Smtp),
    );
    assert_eq!(
        tx.next_action(),
        Action::Send(
            b"MAIL FROM:<alice@example.org> SIZE=100 RET=FULL ENVID=Q1+2Bx\r\nRCPT TO:<b@x.example> NOTIFY=FAILURE,DELAY ORCPT=rfc822;B+3Db+2B1@x.example\r\nDATA\r\n".to_vec()
        )
    );
    // Without DSN: none of them.
    let mut tx = Transaction::new(caps(&["PIPELINING"]), env, opts(Protocol::Smtp));
    assert_eq!(
        tx.next_action(),
        Action::Send(
            b"MAIL FROM:<alice@example.org>\r\nRCPT TO:<b@x.example>\r\nDATA\r\n".to_vec()
        )
    );
}

#[test]
fn eight_bit_body() {
    let mut env = envelope(&["b@x.example"]);
    env.eight_bit = true;
    let mut tx = Transaction::new(caps(&["8BITMIME"]), env.clone(), opts(Protocol::Smtp));
    assert_eq!(
        tx.next_action(),
        Action::Send(b"MAIL FROM:<alice@example.org> BODY=8BITMIME\r\n".to_vec())
    );
    assert!(!tx.eight_bit_unannounced());
    let mut tx = Transaction::new(caps(&[]), env, opts(Protocol::Smtp));
    assert_eq!(
        tx.next_action(),
        Action::Send(b"MAIL FROM:<alice@example.org>\r\n".to_vec())
    );
    assert!(tx.eight_bit_unannounced());
}

#[test]
fn unencodable_addresses() {
    let mut env = envelope(&["a@x.example", "b@x.example"]);
    env.recipients[0].address = Mailbox {
        local_part: "a".into(),
        domain: "x\r\nDATA".into(),
    };
    let tx = Transaction::new(caps(&["PIPELINING"]), env.clone(), opts(Protocol::Smtp));
    let r = run(tx, "250 Ok\r\n250 Ok\r\n354 go\r\n250 Ok\r\n", b"x\n", 100);
    assert!(!r.writes[0].contains("x\r\nDATA\r\nRCPT"));
    assert_eq!(
        r.writes[0],
        "MAIL FROM:<alice@example.org>\r\nRCPT TO:<b@x.example>\r\nDATA\r\n"
    );
    assert_eq!(dispositions(&r), vec![Bounced, Sent]);
    assert_eq!(r.results[0].enhanced, EnhancedCode(5, 1, 3));
    env.sender = ReversePath::Mailbox(Mailbox {
        local_part: "a\n".into(),
        domain: "x".into(),
    });
    let mut tx = Transaction::new(caps(&[]), env, opts(Protocol::Smtp));
    assert!(matches!(tx.next_action(), Action::Done(_)));
}

#[test]
fn protocol_errors_end_the_connection() {
    let tx = Transaction::new(
        caps(&["PIPELINING"]),
        envelope(&["a@x.example"]),
        opts(Protocol::Smtp),
    );
    let r = run(tx, "250 Ok\r\n354 what\r\n", b"x\n", 100);
    assert_eq!(
        r.outcome,
        Outcome::TryNextHost(NextHostReason::ProtocolError)
    );
    assert_eq!(r.results[0].disposition, Deferred);
    assert_eq!(r.results[0].enhanced, EnhancedCode(4, 5, 0));
    // A malformed reply: the driver aborts.
    let tx = Transaction::new(caps(&[]), envelope(&["a@x.example"]), opts(Protocol::Smtp));
    let r = run(tx, "250 Ok\r\n25x bad\r\n", b"x\n", 100);
    assert_eq!(r.outcome, Outcome::TryNextHost(NextHostReason::Aborted));
    assert!(r.results[0].text.starts_with("malformed server reply"));
    assert_eq!(r.results[0].stage, Some(Stage::Rcpt));
}

#[test]
fn usage_errors() {
    let mut tx = Transaction::new(caps(&[]), envelope(&["a@x.example"]), opts(Protocol::Smtp));
    assert_eq!(tx.content_sent(), Err(UsageError::NotInData));
    assert_eq!(tx.bdat_command(1, true), Err(UsageError::NotInChunks));
    let mut done = Transaction::new(
        caps(&["SIZE 1"]),
        envelope(&["a@x.example"]),
        opts(Protocol::Smtp),
    );
    assert_eq!(
        done.on_reply(&ServerReply::new(250, &["ok"])),
        Err(UsageError::NoReplyExpected)
    );
    assert!(matches!(tx.next_action(), Action::Send(_)));
    assert_eq!(tx.stage(), Stage::Mail);
    assert!(!tx.uses_pipelining() && !tx.uses_chunking());
}

fn any_reply() -> impl Strategy<Value = ServerReply> {
    prop_oneof![
        Just(250u16),
        Just(251),
        Just(354),
        Just(421),
        Just(450),
        Just(452),
        Just(503),
        Just(550),
        Just(554),
        Just(235),
        200u16..600,
    ]
    .prop_map(|code| ServerReply::new(code, &["text"]))
}

proptest! {
    /// Whatever the server answers, the transaction ends, within a bounded
    /// number of steps, with a result for every recipient, and it never
    /// sends content before a 354 or a BDAT phase.
    #[test]
    fn any_replies_end_with_every_recipient_final(
        replies in proptest::collection::vec(any_reply(), 0..20),
        n in 1usize..5,
        pipelining in any::<bool>(),
        chunking in any::<bool>(),
        lmtp in any::<bool>(),
    ) {
        let mut ehlo = vec![];
        if pipelining { ehlo.push("PIPELINING"); }
        if chunking { ehlo.push("CHUNKING"); }
        let names: Vec<String> = (0..n).map(|i| format!("r{i}@x.example")).collect();
        let names: Vec<&str> = names.iter().map(String::as_str).collect();
        let protocol = if lmtp { Protocol::Lmtp } else { Protocol::Smtp };
        let mut tx = Transaction::new(caps(&ehlo), envelope(&names), opts(protocol));
        let mut replies = replies.into_iter();
        let mut steps = 0;
        loop {
            steps += 1;
            prop_assert!(steps < 200);
            match tx.next_action() {
                Action::Send(_) => {}
                Action::Read(_) => match replies.next() {
                    Some(r) => prop_assert_eq!(tx.on_reply(&r), Ok(())),
                    None => tx.abort("lost"),
                },
                Action::SendContent => prop_assert_eq!(tx.content_sent(), Ok(())),
                Action::SendChunk => { tx.bdat_command(1, steps % 3 == 0).unwrap(); }
                Action::Done(_) => break,
            }
        }
        prop_assert!(tx.outcome().is_some());
        for s in tx.recipients() {
            let is_final = matches!(s, RcptState::Final(_));
            prop_assert!(is_final);
        }
        prop_assert_eq!(tx.take_results().len(), n);
    }
}
