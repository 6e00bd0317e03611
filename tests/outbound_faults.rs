//! Outbound faults: a Postern instance delivers through its `smtp` agent
//! to scripted SMTP servers in the test process (tests/support/scripted.rs)
//! that answer 4xx, 421, advertise SIZE, stall, offer CHUNKING or
//! PIPELINING, or are slow, while the agent or qmgr may be killed. MX
//! answers come from a DNS server on 127.53.x.y:53 (postern-testdns)
//! named in the sender's dns_resolv_conf; transport_maps routes each
//! domain to `smtp:DOMAIN:PORT` (MX lookup, then the scripted port).
//! Needs root (port 53); skipped otherwise.

use postern_testdns::{TestDns, Zone};
use postern_tests::scripted::{Answer, Received, ScriptedServer, Session, bind_pair};
use postern_tests::*;
use std::net::{Ipv4Addr, SocketAddr};
use std::path::Path;
use std::time::Duration;

/// The bound of every wait.
const T: Duration = Duration::from_secs(25);

/// The sender of every message: a local user, so bounces come back to a
/// Maildir of the sending instance.
const SENDER: &str = "bob@example.test";

/// A DNS server on 127.53.X.(100 + test):53, distinct per test and run
/// (tests/outbound.rs uses the low numbers).
fn dns(test: u8, zones: Vec<Zone>) -> Option<TestDns> {
    if !is_root() {
        eprintln!("skipped: needs root (DNS on port 53)");
        return None;
    }
    let pid = std::process::id();
    let addr = Ipv4Addr::new(127, 53, (pid % 250) as u8 + 1, 100 + test);
    match TestDns::start_on(SocketAddr::from((addr, 53)), zones) {
        Ok(d) => Some(d),
        Err(e) => {
            eprintln!("skipped: cannot serve DNS on {addr}:53: {e}");
            None
        }
    }
}

/// A zone whose single MX, `mx.DOMAIN`, is 127.0.0.1.
fn zone(domain: &str) -> Zone {
    Zone::new(&format!("{domain}."))
        .mx("@", 10, &format!("mx.{domain}."))
        .a("mx", Ipv4Addr::LOCALHOST)
}

/// A scripted server on 127.0.0.1, any port.
fn server(script: Vec<Session>) -> ScriptedServer {
    ScriptedServer::start(SocketAddr::from((Ipv4Addr::LOCALHOST, 0)), script).unwrap()
}

/// The sending instance: relays for loopback, resolves with `dns`, routes
/// each (domain, port) of `routes` to `smtp:domain:port`. `params` add to
/// or replace the short timeouts these tests use.
fn sender(
    scratch: &Path,
    dns: &TestDns,
    routes: &[(&str, u16)],
    params: &[(&str, &str)],
) -> Instance {
    std::fs::write(
        scratch.join("resolv.conf"),
        format!(
            "nameserver {}\noptions timeout:2 attempts:1\n",
            dns.addr().ip()
        ),
    )
    .unwrap();
    let transport: String = routes
        .iter()
        .map(|(d, p)| format!("{d} smtp:{d}:{p}\n"))
        .collect();
    std::fs::write(scratch.join("transport"), transport).unwrap();
    let d = scratch.display().to_string();
    let mut main: Vec<(String, String)> = [
        ("dns_resolv_conf", format!("{d}/resolv.conf")),
        ("transport_maps", format!("hash:{d}/transport")),
        ("smtp_connect_timeout", "2s".into()),
        ("smtp_helo_timeout", "3s".into()),
        ("smtp_data_done_timeout", "3s".into()),
        ("smtp_quit_timeout", "1s".into()),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v))
    .collect();
    for (k, v) in params {
        match main.iter_mut().find(|(name, _)| name == k) {
            Some(p) => p.1 = v.to_string(),
            None => main.push((k.to_string(), v.to_string())),
        }
    }
    let mut a = Instance::new(Options {
        mynetworks: "127.0.0.0/8".into(),
        main_extra: main.iter().map(|(k, v)| format!("{k} = {v}\n")).collect(),
        master_extra: "smtp unix - - n - - smtp\n".into(),
    });
    a.start();
    a
}

/// Submits one message from [`SENDER`] to the instance.
fn submit(a: &Instance, to: &[&str], msg: &[u8]) {
    let r = a.smtp().send(SENDER, to, msg);
    assert_eq!(r.code, 250, "{}", r.text());
}

/// A message with the header fields cleanup would otherwise add (so that
/// only a Received: field is prepended on the way), CRLF line ends.
fn message(subject: &str, body: &str) -> Vec<u8> {
    format!(
        "From: {SENDER}\r\nTo: someone@remote.test\r\nDate: Thu, 3 Dec 2026 12:00:00 +0000\r\n\
         Message-ID: <{subject}@example.test>\r\nSubject: {subject}\r\n\r\n{body}"
    )
    .into_bytes()
}

/// The log lines about recipient `who`, in order.
fn lines_for(log: &str, who: &str) -> Vec<String> {
    let key = format!("to=<{who}>");
    log.lines()
        .filter(|l| l.contains(&key))
        .map(str::to_string)
        .collect()
}

/// Waits until the server has accepted messages for every one of `rcpts`.
fn wait_accepted(srv: &ScriptedServer, a: &Instance, rcpts: &[&str]) -> Vec<Received> {
    let all = |got: &[Received]| {
        rcpts
            .iter()
            .all(|r| got.iter().any(|m| m.rcpts.iter().any(|x| x == r)))
    };
    let ok = wait_until(T, || all(&srv.accepted()));
    let got = srv.accepted();
    assert!(
        ok,
        "server accepted {:?}, want {rcpts:?}\nsessions: {:#?}\nlog:\n{}",
        got.iter().map(|m| &m.rcpts).collect::<Vec<_>>(),
        srv.sessions(),
        a.log()
    );
    got
}

/// Waits until the sender's queue holds nothing.
fn wait_queue_empty(a: &Instance) {
    assert!(
        wait_until(T, || a.queue_empty()),
        "queue not empty: active {:?} deferred {:?} incoming {:?}\nlog:\n{}",
        a.queue_files("active"),
        a.queue_files("deferred"),
        a.queue_files("incoming"),
        a.log()
    );
}

/// Every LF is part of a CRLF.
fn crlf_only(content: &[u8]) -> bool {
    content
        .iter()
        .enumerate()
        .all(|(i, &b)| b != b'\n' || (i > 0 && content[i - 1] == b'\r'))
}

/// Case 1: A 451 at RCPT defers that recipient only; the retry delivers it;
/// each recipient arrives exactly once. (The retry may come over the same
/// session, kept by smtp_connection_cache_time_limit, or a new one: the
/// 451 is for the server's first RCPT for that address.)
#[test]
fn a_4xx_at_rcpt_defers_only_that_recipient_and_the_retry_delivers_it() {
    let Some(dns) = dns(1, vec![zone("t1.test")]) else {
        return;
    };
    let srv = server(vec![Session::default().rcpt_once(
        "b@t1.test",
        Answer::reply("451 4.2.0 <b@t1.test>: Mailbox busy, try again later"),
    )]);
    let scratch = tempfile::tempdir().unwrap();
    let a = sender(scratch.path(), &dns, &[("t1.test", srv.port())], &[]);
    let msg = message("rcpt-4xx", "first and second\r\n");
    submit(&a, &["a@t1.test", "b@t1.test"], &msg);

    wait_accepted(&srv, &a, &["a@t1.test", "b@t1.test"]);
    wait_queue_empty(&a);
    let got = srv.accepted();
    let log = a.log();
    let sessions = srv.sessions();
    assert_eq!(got.len(), 2, "{got:#?}\n{sessions:#?}\n{log}");
    assert_eq!(got[0].rcpts, ["a@t1.test"], "{got:#?}");
    assert_eq!(got[1].rcpts, ["b@t1.test"], "{got:#?}");
    for m in &got {
        assert!(m.content.ends_with(&msg), "{m:?}");
    }
    // b was offered twice: refused, then accepted in a later transaction.
    let b_rcpts = sessions
        .iter()
        .flat_map(|s| &s.commands)
        .filter(|c| c.line.eq_ignore_ascii_case("RCPT TO:<b@t1.test>"))
        .count();
    assert_eq!(b_rcpts, 2, "{sessions:#?}");

    let a_lines = lines_for(&log, "a@t1.test");
    assert_eq!(a_lines.len(), 1, "{log}");
    assert!(
        a_lines[0].contains("status=sent (250 2.0.0 Ok: queued)"),
        "{log}"
    );
    let b_lines = lines_for(&log, "b@t1.test");
    assert_eq!(b_lines.len(), 2, "{sessions:#?}\n{log}");
    let relay = format!("relay=mx.t1.test[127.0.0.1]:{}", srv.port());
    assert!(
        b_lines[0].contains(&relay)
            && b_lines[0].contains(
                "dsn=4.2.0, status=deferred (host mx.t1.test[127.0.0.1] said: 451 4.2.0 <b@t1.test>: Mailbox busy, try again later (in reply to RCPT TO command))"
            ),
        "{log}"
    );
    assert!(
        b_lines[1].contains(&relay) && b_lines[1].contains("status=sent (250 "),
        "{log}"
    );
}

/// Two MX hosts for `domain`: mx1 (preference 10) on 127.0.0.1 and mx2
/// (20) on 127.0.0.2.
fn two_mx(domain: &str) -> Zone {
    Zone::new(&format!("{domain}."))
        .mx("@", 10, &format!("mx1.{domain}."))
        .mx("@", 20, &format!("mx2.{domain}."))
        .a("mx1", Ipv4Addr::new(127, 0, 0, 1))
        .a("mx2", Ipv4Addr::new(127, 0, 0, 2))
}

/// Case 2: The best MX answers 421 (to the greeting for one domain's message,
/// to EHLO for another's): the next MX gets the mail in the same attempt.
/// Two domains, so that the second delivery cannot reuse the first one's
/// session with the next MX (the connection cache is per next hop).
#[test]
fn a_421_from_the_best_mx_sends_the_mail_to_the_next_one_at_once() {
    let Some(dns) = dns(2, vec![two_mx("t2a.test"), two_mx("t2b.test")]) else {
        return;
    };
    let (l1, l2) = bind_pair(Ipv4Addr::new(127, 0, 0, 1), Ipv4Addr::new(127, 0, 0, 2));
    let port = l1.local_addr().unwrap().port();
    let best = ScriptedServer::serve(
        l1,
        vec![
            Session {
                greeting: Answer::reply("421 4.3.2 mx1 is busy, come back later"),
                ..Session::default()
            },
            Session {
                ehlo: Some(Answer::reply("421 4.3.2 shutting down")),
                ..Session::default()
            },
        ],
    );
    let next = ScriptedServer::serve(l2, vec![Session::default()]);
    let scratch = tempfile::tempdir().unwrap();
    let a = sender(
        scratch.path(),
        &dns,
        &[("t2a.test", port), ("t2b.test", port)],
        &[],
    );

    submit(&a, &["one@t2a.test"], &message("greeting-421", "one\r\n"));
    wait_accepted(&next, &a, &["one@t2a.test"]);
    submit(&a, &["two@t2b.test"], &message("ehlo-421", "two\r\n"));
    wait_accepted(&next, &a, &["two@t2b.test"]);
    wait_queue_empty(&a);

    let log = a.log();
    let sessions = best.sessions();
    assert_eq!(sessions.len(), 2, "{sessions:#?}");
    assert!(sessions[0].commands.is_empty(), "{sessions:#?}");
    assert_eq!(sessions[1].verbs(), ["EHLO"], "{sessions:#?}");
    assert!(best.received().is_empty());
    assert!(!log.contains("status=deferred"), "{log}");
    for (who, domain) in [("one@t2a.test", "t2a.test"), ("two@t2b.test", "t2b.test")] {
        let l = lines_for(&log, who);
        assert_eq!(l.len(), 1, "{log}");
        assert!(
            l[0].contains(&format!("relay=mx2.{domain}[127.0.0.2]:{port}"))
                && l[0].contains("status=sent"),
            "{log}"
        );
    }
}

/// Case 3: A message larger than the server's SIZE bounces before MAIL (so
/// before DATA): the sender gets a 5.3.4 bounce.
#[test]
fn a_message_over_the_servers_size_limit_bounces_without_data() {
    let Some(dns) = dns(3, vec![zone("t3.test")]) else {
        return;
    };
    let srv = server(vec![Session::offering(&[
        "PIPELINING",
        "SIZE 1000",
        "8BITMIME",
    ])]);
    let scratch = tempfile::tempdir().unwrap();
    let a = sender(scratch.path(), &dns, &[("t3.test", srv.port())], &[]);
    let body = "0123456789 the quick brown fox jumps over the lazy dog 0123456789\r\n".repeat(50);
    submit(&a, &["big@t3.test"], &message("too-big", &body));

    let bounces = a.wait_mail("bob", 1, T);
    let bounce = String::from_utf8_lossy(&bounces[0]).into_owned();
    assert!(
        bounce.contains("Final-Recipient: rfc822; big@t3.test"),
        "{bounce}"
    );
    assert!(bounce.contains("Status: 5.3.4"), "{bounce}");
    // The text is folded in the notification.
    let unfolded = bounce.replace("\n    ", " ");
    assert!(
        unfolded.contains("exceeds size limit 1000 of server mx.t3.test[127.0.0.1]"),
        "{bounce}"
    );
    let log = a.log();
    let l = lines_for(&log, "big@t3.test");
    assert_eq!(l.len(), 1, "{log}");
    assert!(
        l[0].contains("dsn=5.3.4, status=bounced (message size ")
            && l[0].contains(" exceeds size limit 1000 of server mx.t3.test[127.0.0.1])"),
        "{log}"
    );
    for s in srv.sessions() {
        let verbs = s.verbs();
        for v in ["MAIL", "RCPT", "DATA", "BDAT"] {
            assert!(!verbs.iter().any(|x| x == v), "{v} was sent: {verbs:?}");
        }
    }
    assert!(srv.received().is_empty());
}

/// The end-of-data timeout scenario (case 4): the first session gets the
/// whole message and never answers, the retry's session answers 250.
/// Returns the sender's log lines for the recipient and the server port.
fn end_of_data_timeout(test: u8) -> Option<(Vec<String>, u16)> {
    let domain = format!("t{test}.test");
    let rcpt = format!("slow@{domain}");
    let dns = dns(test, vec![zone(&domain)])?;
    let srv = server(vec![
        Session {
            data_done: Answer::stall(),
            ..Session::default()
        },
        Session::default(),
    ]);
    let scratch = tempfile::tempdir().unwrap();
    let a = sender(scratch.path(), &dns, &[(&domain, srv.port())], &[]);
    let msg = message("stall-at-dot", "no answer the first time\r\n");
    submit(&a, &[&rcpt], &msg);

    let got = wait_accepted(&srv, &a, &[&rcpt]);
    wait_queue_empty(&a);
    srv.release();
    assert!(got.iter().all(|m| m.content.ends_with(&msg)), "{got:#?}");
    // The first session got the whole message and never answered.
    let all = srv.received();
    assert_eq!(all[0].session, 0, "{all:#?}");
    assert_eq!(all[0].reply, None, "{all:#?}");
    assert!(all[0].content.ends_with(&msg));
    let log = a.log();
    let l = lines_for(&log, &rcpt);
    assert_eq!(l.len(), 2, "{log}");
    assert!(l[1].contains("status=sent (250 "), "{log}");
    Some((l, srv.port()))
}

/// Case 4: The server never answers the end of data: the recipient is
/// deferred with the timeout's text and the retry delivers it.
#[test]
fn a_timeout_after_the_end_of_data_defers_and_the_retry_delivers() {
    let Some((l, _)) = end_of_data_timeout(4) else {
        return;
    };
    assert!(
        l[0].contains("status=deferred (")
            && l[0].contains("timed out")
            && l[0].contains("sending end of data -- message may be sent more than once"),
        "{l:#?}"
    );
}

/// Case 4b: the deferral after that timeout is logged as Postfix logs it:
/// the relay that timed out, 4.4.2, and "conversation with HOST timed out
/// while sending end of data".
#[test]
fn a_timeout_deferral_is_logged_as_postfix_logs_it() {
    let Some((l, port)) = end_of_data_timeout(10) else {
        return;
    };
    let want = format!("relay=mx.t10.test[127.0.0.1]:{port}, delay=");
    assert!(l[0].contains(&want), "{l:#?}");
    assert!(
        l[0].contains(
            "dsn=4.4.2, status=deferred (conversation with mx.t10.test[127.0.0.1] timed out while sending end of data -- message may be sent more than once)"
        ),
        "{l:#?}"
    );
}

/// Case 5: CHUNKING offered: the content goes in BDAT chunks (never DATA),
/// byte for byte the message with CRLF line ends, without dot-stuffing.
#[test]
fn chunking_sends_bdat_with_the_exact_crlf_content() {
    let Some(dns) = dns(5, vec![zone("t5.test")]) else {
        return;
    };
    let srv = server(vec![Session::offering(&[
        "PIPELINING",
        "8BITMIME",
        "CHUNKING",
        "DSN",
    ])]);
    let scratch = tempfile::tempdir().unwrap();
    let a = sender(scratch.path(), &dns, &[("t5.test", srv.port())], &[]);
    let msg = message(
        "bdat",
        "line one\r\n.a line with a leading dot\r\n..two dots\r\n.\r\nlast line\r\n",
    );
    submit(&a, &["c@t5.test"], &msg);

    let got = wait_accepted(&srv, &a, &["c@t5.test"]);
    wait_queue_empty(&a);
    assert_eq!(got.len(), 1, "{got:#?}");
    let m = &got[0];
    assert!(m.bdat, "{m:?}");
    assert!(m.content.starts_with(b"Received: "), "{m:?}");
    assert!(
        m.content.ends_with(&msg),
        "content:\n{}",
        String::from_utf8_lossy(&m.content)
    );
    assert!(crlf_only(&m.content), "{m:?}");
    let verbs = srv.sessions()[0].verbs();
    assert!(!verbs.iter().any(|v| v == "DATA"), "{verbs:?}");
    let s = &srv.sessions()[0];
    let bdats: Vec<&str> = s
        .commands
        .iter()
        .filter(|c| c.verb() == "BDAT")
        .map(|c| c.line.as_str())
        .collect();
    assert!(!bdats.is_empty(), "{verbs:?}");
    assert!(bdats.last().unwrap().ends_with(" LAST"), "{bdats:?}");
    assert_eq!(bdats.iter().filter(|b| b.ends_with(" LAST")).count(), 1);
    let log = a.log();
    assert!(
        lines_for(&log, "c@t5.test")[0].contains("status=sent"),
        "{log}"
    );
}

/// Case 6: PIPELINING offered: MAIL, both RCPTs and DATA come in one read;
/// without it each command waits for the previous reply.
#[test]
fn pipelining_groups_the_envelope_in_one_read() {
    let Some(dns) = dns(6, vec![zone("p.test"), zone("np.test")]) else {
        return;
    };
    let piped = server(vec![Session::offering(&["PIPELINING", "8BITMIME"])]);
    let plain = server(vec![Session::offering(&["8BITMIME"])]);
    let scratch = tempfile::tempdir().unwrap();
    let a = sender(
        scratch.path(),
        &dns,
        &[("p.test", piped.port()), ("np.test", plain.port())],
        &[],
    );
    let msg = message("pipelining", "..dot-stuffed on the wire\r\nend\r\n");
    submit(
        &a,
        &["x@p.test", "y@p.test", "x@np.test", "y@np.test"],
        &msg,
    );
    let got_p = wait_accepted(&piped, &a, &["x@p.test", "y@p.test"]);
    let got_np = wait_accepted(&plain, &a, &["x@np.test", "y@np.test"]);
    wait_queue_empty(&a);
    for m in got_p.iter().chain(&got_np) {
        assert!(!m.bdat);
        assert!(m.content.ends_with(&msg), "{m:?}");
        assert!(crlf_only(&m.content));
    }

    let envelope = |s: &postern_tests::scripted::SessionLog| {
        s.commands
            .iter()
            .filter(|c| ["MAIL", "RCPT", "DATA"].contains(&c.verb().as_str()))
            .map(|c| (c.verb(), c.read))
            .collect::<Vec<_>>()
    };
    let s = &piped.sessions()[0];
    let e = envelope(s);
    let verbs: Vec<&str> = e.iter().map(|(v, _)| v.as_str()).collect();
    assert_eq!(verbs, ["MAIL", "RCPT", "RCPT", "DATA"], "{s:#?}");
    assert!(e.iter().all(|(_, r)| *r == e[0].1), "one read: {s:#?}");
    // EHLO came before, on its own.
    assert!(
        s.commands[0].verb() == "EHLO" && s.commands[0].read < e[0].1,
        "{s:#?}"
    );

    let s = &plain.sessions()[0];
    let e = envelope(s);
    let verbs: Vec<&str> = e.iter().map(|(v, _)| v.as_str()).collect();
    assert_eq!(verbs, ["MAIL", "RCPT", "RCPT", "DATA"], "{s:#?}");
    let reads: Vec<usize> = e.iter().map(|(_, r)| *r).collect();
    assert!(
        reads.windows(2).all(|w| w[0] < w[1]),
        "one read each: {s:#?}"
    );
}

/// Case 7a: `kill -9` of the smtp process in the middle of DATA: the message
/// is deferred, not lost, and the next session delivers it.
#[test]
fn kill_9_of_smtp_mid_data_loses_nothing() {
    let Some(dns) = dns(7, vec![zone("t7.test")]) else {
        return;
    };
    let srv = server(vec![
        Session {
            stall_in_data_after: Some(4096),
            ..Session::default()
        },
        Session::default(),
    ]);
    let scratch = tempfile::tempdir().unwrap();
    let a = sender(
        scratch.path(),
        &dns,
        &[("t7.test", srv.port())],
        &[
            ("smtp_data_xfer_timeout", "60s"),
            ("smtp_data_done_timeout", "60s"),
        ],
    );
    let line = "a line of content to make the message long enough for a stall...\r\n";
    let msg = message("kill-smtp", &line.repeat(4000));
    submit(&a, &["k@t7.test"], &msg);

    assert!(
        wait_until(T, || srv.sessions().first().is_some_and(|s| s.stalled)),
        "no stall: {:#?}\n{}",
        srv.sessions(),
        a.log()
    );
    let pids = a.pids_of("smtp");
    assert!(!pids.is_empty(), "no smtp process\n{}", a.log());
    for pid in pids {
        signal(pid, libc::SIGKILL);
    }
    srv.release();

    let got = wait_accepted(&srv, &a, &["k@t7.test"]);
    wait_queue_empty(&a);
    assert!(got[0].session >= 1, "{:#?}", srv.sessions());
    assert!(got.iter().all(|m| m.content.ends_with(&msg)));
    let log = a.log();
    assert!(
        lines_for(&log, "k@t7.test")
            .iter()
            .any(|l| l.contains("status=sent (250 ")),
        "{log}"
    );
}

/// Case 7b: `kill -9` of qmgr while a delivery is under way (the server has
/// the message and has not answered): master starts a new qmgr, which
/// delivers the message again (at least once, never lost).
#[test]
fn kill_9_of_qmgr_during_a_delivery_loses_nothing() {
    let Some(dns) = dns(8, vec![zone("t8.test")]) else {
        return;
    };
    let srv = server(vec![
        Session {
            data_done: Answer::stall(),
            ..Session::default()
        },
        Session::default(),
    ]);
    let scratch = tempfile::tempdir().unwrap();
    let a = sender(
        scratch.path(),
        &dns,
        &[("t8.test", srv.port())],
        &[("smtp_data_done_timeout", "60s")],
    );
    let msg = message("kill-qmgr", "survives qmgr\r\n");
    submit(&a, &["q@t8.test"], &msg);

    assert!(
        wait_until(T, || srv.sessions().first().is_some_and(|s| s.stalled)),
        "no stall: {:#?}\n{}",
        srv.sessions(),
        a.log()
    );
    let old = a.pids_of("qmgr");
    assert_eq!(old.len(), 1, "{old:?}");
    signal(old[0], libc::SIGKILL);
    assert!(
        wait_until(T, || {
            let now = a.pids_of("qmgr");
            !now.is_empty() && !now.contains(&old[0])
        }),
        "master did not start a new qmgr\n{}",
        a.log()
    );

    let got = wait_accepted(&srv, &a, &["q@t8.test"]);
    wait_queue_empty(&a);
    srv.release();
    assert!(got.iter().all(|m| m.content.ends_with(&msg)));
    assert!(got[0].session >= 1, "{:#?}", srv.sessions());
    let log = a.log();
    assert!(
        lines_for(&log, "q@t8.test")
            .iter()
            .any(|l| l.contains("status=sent (250 ")),
        "{log}"
    );
}

/// Case 8: A slow destination does not starve a fast one: with room for four
/// smtp deliveries and two per destination, ten messages to a server that
/// takes two seconds per RCPT do not hold up ten to an instant one.
#[test]
fn a_slow_destination_does_not_starve_a_fast_one() {
    let Some(dns) = dns(9, vec![zone("slow.test"), zone("fast.test")]) else {
        return;
    };
    let slow = server(vec![Session {
        rcpt: Answer::reply("250 2.1.5 Ok, eventually").after(Duration::from_secs(2)),
        ..Session::offering(&["PIPELINING"])
    }]);
    let fast = server(vec![Session::offering(&["PIPELINING"])]);
    let scratch = tempfile::tempdir().unwrap();
    let a = sender(
        scratch.path(),
        &dns,
        &[("slow.test", slow.port()), ("fast.test", fast.port())],
        &[
            ("default_process_limit", "4"),
            ("default_destination_concurrency_limit", "2"),
        ],
    );
    // The slow mail first, so it is ahead in every queue.
    let mut c = a.smtp();
    for (domain, n) in [("slow.test", 10), ("fast.test", 10)] {
        for i in 0..n {
            let to = format!("u{i}@{domain}");
            let r = c.send(SENDER, &[&to], &message(&format!("{domain}-{i}"), "x\r\n"));
            assert_eq!(r.code, 250, "{}", r.text());
        }
    }
    let _ = c.cmd("QUIT");

    let done = |srv: &ScriptedServer| srv.accepted().len() >= 10;
    assert!(
        wait_until(Duration::from_secs(45), || done(&fast) && done(&slow)),
        "fast {} slow {}\n{}",
        fast.accepted().len(),
        slow.accepted().len(),
        a.log()
    );
    let last_fast = fast.accepted().iter().map(|m| m.at).max().unwrap();
    let last_slow = slow.accepted().iter().map(|m| m.at).max().unwrap();
    assert!(
        last_fast < last_slow,
        "the fast destination finished {:?} after the slow one",
        last_fast - last_slow
    );
    // Each message exactly once.
    assert_eq!(fast.accepted().len(), 10);
    assert_eq!(slow.accepted().len(), 10);
    wait_queue_empty(&a);
}
