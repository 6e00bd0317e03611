//! Outbound delivery, end to end: a Postern instance relays through its
//! `smtp` agent to a second Postern instance, finding it with MX answers
//! from a real DNS server on loopback (postern-testdns, on port 53 of a
//! 127.53.x.y address named in the sender's dns_resolv_conf, so the
//! resolver reads an ordinary resolv.conf). Needs root (port 53); skipped
//! otherwise.

use postern_testdns::{TestDns, Zone};
use postern_tests::*;
use std::net::{Ipv4Addr, SocketAddr};
use std::time::Duration;

const T: Duration = Duration::from_secs(40);

/// A DNS server on 127.53.X.Y:53, distinct per test and per run.
fn dns(test: u8, zones: Vec<Zone>) -> Option<TestDns> {
    let pid = std::process::id();
    let addr = Ipv4Addr::new(127, 53, (pid % 250) as u8 + 1, test);
    match TestDns::start_on(SocketAddr::from((addr, 53)), zones) {
        Ok(d) => Some(d),
        Err(e) => {
            eprintln!("skipped: cannot serve DNS on {addr}:53: {e}");
            None
        }
    }
}

/// The receiving site: dest.test on its own instance.
fn receiver() -> Instance {
    let mut b = Instance::new(Options {
        main_extra: "myhostname = mx.dest.test\nmydomain = dest.test\n".into(),
        ..Options::default()
    });
    b.start();
    b
}

/// The sending site: relays for 127.0.0.0/8, routes dest.test to the
/// receiver's port through transport_maps (MX lookup, then that port).
fn sender(scratch: &std::path::Path, dns: &TestDns, receiver_port: u16) -> Instance {
    std::fs::write(
        scratch.join("resolv.conf"),
        format!(
            "nameserver {}\noptions timeout:2 attempts:1\n",
            dns.addr().ip()
        ),
    )
    .unwrap();
    std::fs::write(
        scratch.join("transport"),
        format!(
            "dest.test smtp:dest.test:{receiver_port}\ndown.test smtp:down.test:{receiver_port}\n"
        ),
    )
    .unwrap();
    let mut a = Instance::new(Options {
        mynetworks: "127.0.0.0/8".into(),
        main_extra: format!(
            "dns_resolv_conf = {d}/resolv.conf\ntransport_maps = hash:{d}/transport\nsmtp_connect_timeout = 5s\n",
            d = scratch.display()
        ),
        master_extra: "smtp unix - - y - - smtp\n".into(),
    });
    a.start();
    a
}

/// A sending site and a receiving site with a DNS server that knows
/// them, as most tests here need; None (skipped) unless root.
struct Sites {
    /// The sender (relays for 127.0.0.0/8; dest.test goes to `b`).
    a: Instance,
    /// The receiver, dest.test.
    b: Instance,
    /// Kept alive for the test's duration.
    dns: TestDns,
    /// The sender's resolv.conf and transport table.
    scratch: tempfile::TempDir,
}

fn sites(test: u8) -> Option<Sites> {
    if !is_root() {
        eprintln!("skipped: needs root (DNS on port 53)");
        return None;
    }
    let dns = dns(test, zones())?;
    let scratch = tempfile::tempdir().unwrap();
    let b = receiver();
    let a = sender(scratch.path(), &dns, b.smtp_port);
    Some(Sites { a, b, dns, scratch })
}

fn zones() -> Vec<Zone> {
    vec![
        // The best MX refuses connections (nothing listens on 127.0.0.2).
        Zone::new("dest.test.")
            .mx("@", 10, "down.dest.test.")
            .mx("@", 20, "mx.dest.test.")
            .a("down", Ipv4Addr::new(127, 0, 0, 2))
            .a("mx", Ipv4Addr::new(127, 0, 0, 1)),
        Zone::new("nullmx.test.").null_mx("@"),
        // Served by dest.test's receiver, under another domain name.
        Zone::new("verified.test.").mx("@", 10, "mx.dest.test."),
        // The same server under a name its certificate does not carry.
        Zone::new("misnamed.test.")
            .mx("@", 10, "mx.misnamed.test.")
            .a("mx", Ipv4Addr::new(127, 0, 0, 1)),
        Zone::new("broken.test.").servfail("@"),
        // Nothing listens there: a dead destination.
        Zone::new("down.test.")
            .mx("@", 10, "mx.down.test.")
            .a("mx", Ipv4Addr::new(127, 0, 0, 2)),
    ]
}

fn log_has(inst: &Instance, want: &str) -> bool {
    wait_until(T, || inst.log().contains(want))
}

#[test]
fn mail_goes_to_the_working_mx_and_each_recipient_gets_its_own_answer() {
    let Some(Sites {
        a,
        b,
        dns: _dns,
        scratch: _scratch,
    }) = sites(1)
    else {
        return;
    };

    let msg = b"From: bob@example.test\r\nTo: alice@dest.test\r\nSubject: outbound\r\n\r\nover the wire\r\n";
    let r = a.smtp().send(
        "bob@example.test",
        &["alice@dest.test", "nosuch@dest.test"],
        msg,
    );
    assert_eq!(r.code, 250, "{}", r.text());

    // Delivered to the second MX (the first refused the connection).
    let got = b.wait_mail("alice", 1, T);
    assert_eq!(got.len(), 1, "receiver log:\n{}", b.log());
    let text = String::from_utf8_lossy(&got[0]);
    assert!(text.contains("over the wire"), "{text}");
    assert!(text.contains("Subject: outbound"), "{text}");
    let relay = format!("relay=mx.dest.test[127.0.0.1]:{}", b.smtp_port);
    assert!(
        log_has(&a, &format!("to=<alice@dest.test>, {relay}, ")),
        "{}",
        a.log()
    );
    let log = a.log();
    assert!(
        log.lines().any(|l| l.contains("to=<alice@dest.test>")
            && l.contains("dsn=2.0.0, status=sent (250 2.0.0 Ok: queued as ")),
        "{log}"
    );
    // The agent ran chrooted in the queue directory, as its own user.
    let pids = a.pids_of("smtp");
    assert!(!pids.is_empty(), "an idle smtp process stays for a while");
    for pid in pids {
        let root = std::fs::read_link(format!("/proc/{pid}/root")).unwrap();
        assert_eq!(root, a.dir.join("queue"), "smtp {pid} is not chrooted");
        let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
        let uid = nix::unistd::User::from_name("postern-smtp")
            .unwrap()
            .unwrap()
            .uid;
        assert!(
            status
                .lines()
                .any(|l| l.starts_with("Uid:") && l.contains(&uid.to_string())),
            "{status}"
        );
    }
    // The unknown user bounced at RCPT, and only that recipient.
    assert!(
        log.lines().any(|l| l.contains("to=<nosuch@dest.test>")
            && l.contains(&relay)
            && l.contains("dsn=5.1.1, status=bounced (host mx.dest.test[127.0.0.1] said: 550 5.1.1 <nosuch@dest.test>")
            && l.contains("(in reply to RCPT TO command))")),
        "{log}"
    );
    // The sender gets the bounce, naming the remote server's answer.
    let bounces = a.wait_mail("bob", 1, T);
    assert_eq!(bounces.len(), 1, "{}", a.log());
    let bounce = String::from_utf8_lossy(&bounces[0]);
    assert!(
        bounce.contains("Final-Recipient: rfc822; nosuch@dest.test"),
        "{bounce}"
    );
    assert!(bounce.contains("Status: 5.1.1"), "{bounce}");
    assert!(
        bounce.contains("host mx.dest.test[127.0.0.1] said: 550 5.1.1"),
        "{bounce}"
    );
    assert!(!bounce.contains("alice@dest.test>:"), "{bounce}");
}

#[test]
fn dns_answers_decide_bounce_or_retry() {
    let Some(Sites {
        a,
        b,
        dns: _dns,
        scratch: _scratch,
    }) = sites(2)
    else {
        return;
    };
    let msg = b"Subject: nowhere\r\n\r\nx\r\n";
    let r = a.smtp().send(
        "bob@example.test",
        &["x@nullmx.test", "y@nxdomain.test", "z@broken.test"],
        msg,
    );
    assert_eq!(r.code, 250, "{}", r.text());
    // Null MX (RFC 7505) and a name that does not exist bounce at once.
    assert!(
        log_has(&a, "to=<x@nullmx.test>, relay=none, "),
        "{}",
        a.log()
    );
    assert!(
        log_has(&a, "to=<y@nxdomain.test>, relay=none, "),
        "{}",
        a.log()
    );
    assert!(
        log_has(&a, "to=<z@broken.test>, relay=none, "),
        "{}",
        a.log()
    );
    let log = a.log();
    let line = |who: &str| {
        log.lines()
            .find(|l| l.contains(&format!("to=<{who}>")))
            .unwrap_or_default()
            .to_string()
    };
    assert!(
        line("x@nullmx.test").contains("dsn=5.1.10, status=bounced"),
        "{log}"
    );
    assert!(
        line("y@nxdomain.test").contains("status=bounced (Host or domain name not found."),
        "{log}"
    );
    // A server failure is temporary: the recipient waits in the queue.
    assert!(
        line("z@broken.test").contains("dsn=4.4.3, status=deferred"),
        "{log}"
    );
    let bounces = a.wait_mail("bob", 1, T);
    let bounce = String::from_utf8_lossy(&bounces[0]);
    assert!(bounce.contains("x@nullmx.test"), "{bounce}");
    assert!(bounce.contains("y@nxdomain.test"), "{bounce}");
    assert!(!bounce.contains("z@broken.test>:"), "{bounce}");
    drop(b);
}

/// Parses a notification with Python's `email` package (as the issue
/// asks: what is sent must parse) and prints what a client would see.
fn python_view(msg: &[u8]) -> String {
    let script = r#"
import sys, email, email.policy
m = email.message_from_bytes(sys.stdin.buffer.read(), policy=email.policy.default)
print("type", m.get_content_type(), m.get_param("report-type"))
parts = list(m.iter_parts())
print("parts", [p.get_content_type() for p in parts])
for block in parts[1].get_payload():
    for k, v in block.items():
        print("field", k, "=", v)
"#;
    let mut child = std::process::Command::new("python3")
        .args(["-c", script])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("python3");
    use std::io::Write as _;
    child.stdin.take().unwrap().write_all(msg).unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "python could not parse:\n{}",
        String::from_utf8_lossy(msg)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn dsn_parameters_travel_and_decide_the_notifications() {
    let Some(Sites {
        a,
        b: _b,
        dns: _dns,
        scratch: _scratch,
    }) = sites(3)
    else {
        return;
    };
    let mut c = a.smtp();
    assert!(c.cmd("EHLO client.example").text().contains("DSN"));
    let r = c.cmd("MAIL FROM:<bob@example.test> RET=FULL ENVID=trip+2B1");
    assert_eq!(r.code, 250, "{}", r.text());
    for rcpt in [
        "RCPT TO:<nosuch@dest.test> NOTIFY=FAILURE ORCPT=rfc822;Nosuch+40dest.test",
        "RCPT TO:<never@dest.test> NOTIFY=NEVER",
        "RCPT TO:<alice@example.test> NOTIFY=SUCCESS",
    ] {
        let r = c.cmd(rcpt);
        assert_eq!(r.code, 250, "{rcpt}: {}", r.text());
    }
    assert_eq!(c.cmd("DATA").code, 354);
    c.raw(b"Subject: with dsn\r\n\r\nthe whole body\r\n.\r\n");
    assert_eq!(c.read_reply().code, 250);

    // bob hears of the failure (not of never@, who asked for silence) and
    // of alice's delivery.
    let got = a.wait_mail("bob", 2, T);
    assert_eq!(got.len(), 2, "{}", a.log());
    assert!(
        log_has(
            &a,
            "<never@dest.test>: no non-delivery notification (NOTIFY)"
        ),
        "{}",
        a.log()
    );
    let (mut failure, mut success) = (None, None);
    for m in &got {
        let t = String::from_utf8_lossy(m).into_owned();
        if t.contains("Subject: Undelivered Mail Returned to Sender") {
            failure = Some(m.clone());
        } else if t.contains("Subject: Successful Mail Delivery Report") {
            success = Some(m.clone());
        }
    }
    let failure = python_view(&failure.expect("a bounce"));
    assert!(
        failure.contains("type multipart/report delivery-status"),
        "{failure}"
    );
    assert!(
        failure.contains("parts ['text/plain', 'message/delivery-status', 'message/rfc822']"),
        "RET=FULL returns the message: {failure}"
    );
    for want in [
        "field Original-Envelope-Id = trip+1",
        "field Final-Recipient = rfc822; nosuch@dest.test",
        "field Original-Recipient = rfc822; Nosuch@dest.test",
        "field Action = failed",
        "field Status = 5.1.1",
        "field Remote-MTA = dns; mx.dest.test",
        "field Diagnostic-Code = smtp; 550 5.1.1",
    ] {
        assert!(failure.contains(want), "{want:?} not in {failure}");
    }
    assert!(!failure.contains("never@dest.test"), "{failure}");
    let success = python_view(&success.expect("a success report"));
    assert!(
        success.contains("field Final-Recipient = rfc822; alice@example.test"),
        "{success}"
    );
    assert!(success.contains("field Action = delivered"), "{success}");
    assert!(success.contains("field Status = 2.0.0"), "{success}");
}

/// A test CA and a certificate it issued for `host`: (CA PEM, cert PEM, key PEM).
fn ca_and_cert(host: &str) -> (String, String, String) {
    let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    ca_params
        .distinguished_name
        .push(rcgen::DnType::CommonName, "Postern test CA");
    let ca = rcgen::CertifiedIssuer::self_signed(ca_params, rcgen::KeyPair::generate().unwrap())
        .unwrap();
    let key = rcgen::KeyPair::generate().unwrap();
    let cert = rcgen::CertificateParams::new(vec![host.to_string()])
        .unwrap()
        .signed_by(&key, &ca)
        .unwrap();
    (ca.pem(), cert.pem(), key.serialize_pem())
}

/// A receiver for dest.test with a certificate (from `ca_and_cert`).
fn tls_receiver(cert: &str, key: &str) -> Instance {
    let tmp = tempfile::tempdir().unwrap();
    let lines = postern_tests::tls::install_cert(tmp.path(), cert, key);
    let mut b = Instance::new(Options {
        main_extra: format!("myhostname = mx.dest.test\nmydomain = dest.test\n{lines}"),
        ..Options::default()
    });
    // The certificate files must outlive the instance's start.
    std::mem::forget(tmp);
    b.start();
    b
}

#[test]
fn opportunistic_tls_encrypts_and_verify_checks_the_certificate() {
    if !is_root() {
        eprintln!("skipped: needs root (DNS on port 53)");
        return;
    }
    let Some(dns) = dns(4, zones()) else { return };
    let (ca, cert, key) = ca_and_cert("mx.dest.test");
    let b = tls_receiver(&cert, &key);
    let scratch = tempfile::tempdir().unwrap();
    std::fs::write(scratch.path().join("ca.pem"), &ca).unwrap();
    let a = {
        // The default level (may) for dest.test; verify for the same
        // server under another name in the policy table is below.
        let mut a = sender(scratch.path(), &dns, b.smtp_port);
        a.stop();
        let extra = format!(
            "smtp_tls_CAfile = {d}/ca.pem\nsmtp_tls_policy_maps = hash:{d}/tls_policy\n",
            d = scratch.path().display()
        );
        let main = a.dir.join("main.cf");
        let text = std::fs::read_to_string(&main).unwrap() + &extra;
        std::fs::write(&main, text).unwrap();
        std::fs::write(
            scratch.path().join("tls_policy"),
            "verified.test verify\nmisnamed.test verify\n",
        )
        .unwrap();
        std::fs::write(
            scratch.path().join("transport"),
            format!(
                "dest.test smtp:dest.test:{p}\nverified.test smtp:verified.test:{p}\nmisnamed.test smtp:misnamed.test:{p}\n",
                p = b.smtp_port
            ),
        )
        .unwrap();
        a.start();
        a
    };
    let r = a.smtp().send(
        "bob@example.test",
        &["alice@dest.test"],
        b"Subject: over tls\r\n\r\nsecret\r\n",
    );
    assert_eq!(r.code, 250, "{}", r.text());
    let got = b.wait_mail("alice", 1, T);
    assert_eq!(got.len(), 1, "{}", a.log());
    assert!(
        log_has(
            &a,
            &format!(
                "Untrusted TLS connection established to mx.dest.test[127.0.0.1]:{}: TLSv1.3 with cipher",
                b.smtp_port
            )
        ),
        "{}",
        a.log()
    );
    // The receiver saw TLS too (its Received header names it).
    let text = String::from_utf8_lossy(&got[0]);
    assert!(text.contains("ESMTPS"), "{text}");

    // verify: the certificate chains to smtp_tls_CAfile and names the host.
    let r = a.smtp().send(
        "bob@example.test",
        &["carol@verified.test"],
        b"Subject: verified\r\n\r\nx\r\n",
    );
    assert_eq!(r.code, 250, "{}", r.text());
    assert!(
        log_has(
            &a,
            "Verified TLS connection established to mx.dest.test[127.0.0.1]"
        ),
        "{}",
        a.log()
    );
    // dest.test's receiver has no carol@verified.test: it refuses her over
    // the verified session, which proves the session got that far.
    assert!(log_has(&a, "to=<carol@verified.test>"), "{}", a.log());

    // verify against a host the certificate does not name: no mail, a
    // deferral (never a plaintext fallback at a mandatory level).
    let r = a.smtp().send(
        "bob@example.test",
        &["alice@misnamed.test"],
        b"Subject: misnamed\r\n\r\nx\r\n",
    );
    assert_eq!(r.code, 250, "{}", r.text());
    assert!(
        log_has(
            &a,
            &format!(
                "to=<alice@misnamed.test>, relay=mx.misnamed.test[127.0.0.1]:{}, ",
                b.smtp_port
            )
        ),
        "{}",
        a.log()
    );
    let log = a.log();
    let line = log
        .lines()
        .find(|l| l.contains("to=<alice@misnamed.test>"))
        .unwrap();
    assert!(
        line.contains("dsn=4.7.5, status=deferred (TLS handshake with mx.misnamed.test[127.0.0.1]"),
        "{line}"
    );
    assert_eq!(
        b.mailbox("alice").len(),
        1,
        "only the first message arrived"
    );
}

#[test]
fn tls_required_but_not_offered_defers() {
    let Some(Sites {
        mut a,
        b,
        dns: _dns,
        scratch: _scratch,
    }) = sites(5)
    else {
        return;
    };
    a.stop();
    let main = a.dir.join("main.cf");
    let text = std::fs::read_to_string(&main).unwrap() + "smtp_tls_security_level = encrypt\n";
    std::fs::write(&main, text).unwrap();
    a.start();
    let r = a.smtp().send(
        "bob@example.test",
        &["alice@dest.test"],
        b"Subject: t\r\n\r\nx\r\n",
    );
    assert_eq!(r.code, 250, "{}", r.text());
    assert!(
        log_has(
            &a,
            "dsn=4.7.4, status=deferred (TLS is required, but was not offered by host mx.dest.test[127.0.0.1])"
        ),
        "{}",
        a.log()
    );
    assert!(
        b.mailbox("alice").is_empty(),
        "nothing was sent in plaintext"
    );
}

/// Stops `a`, appends `extra` to its main.cf, starts it again.
fn reconfigure(a: &mut Instance, extra: &str) {
    a.stop();
    let main = a.dir.join("main.cf");
    let text = std::fs::read_to_string(&main).unwrap() + extra;
    std::fs::write(&main, text).unwrap();
    a.start();
}

#[test]
fn a_smart_host_gets_auth_plain_inside_tls() {
    if !is_root() {
        eprintln!("skipped: needs root (DNS on port 53)");
        return;
    }
    let Some(dns) = dns(6, zones()) else { return };
    let (_, cert, key) = ca_and_cert("mx.dest.test");
    // The smart host: AUTH (inside TLS only, the default) for its users.
    let tmp = tempfile::tempdir().unwrap();
    let lines = postern_tests::tls::install_cert(tmp.path(), &cert, &key);
    let mut b = Instance::new(Options {
        main_extra: format!(
            "myhostname = mx.dest.test\nmydomain = dest.test\nsmtpd_sasl_auth_enable = yes\n{lines}"
        ),
        ..Options::default()
    });
    b.start();
    let scratch = tempfile::tempdir().unwrap();
    let mut a = sender(scratch.path(), &dns, b.smtp_port);
    let relay = format!("[mx.dest.test]:{}", b.smtp_port);
    std::fs::write(
        scratch.path().join("sasl_passwd"),
        format!("{relay} alice:secret\n"),
    )
    .unwrap();
    reconfigure(
        &mut a,
        &format!(
            "relayhost = {relay}\nsmtp_sasl_auth_enable = yes\nsmtp_sasl_password_maps = hash:{}/sasl_passwd\n",
            scratch.path().display()
        ),
    );
    let r = a.smtp().send(
        "bob@example.test",
        &["far@elsewhere.test"],
        b"Subject: via the smart host\r\n\r\nx\r\n",
    );
    assert_eq!(r.code, 250, "{}", r.text());
    assert!(
        log_has(
            &a,
            &format!(
                "to=<far@elsewhere.test>, relay=mx.dest.test[127.0.0.1]:{}, ",
                b.smtp_port
            )
        ),
        "{}",
        a.log()
    );
    let log = a.log();
    assert!(
        log.lines()
            .any(|l| l.contains("to=<far@elsewhere.test>") && l.contains("status=sent (250 2.0.0")),
        "the smart host relayed for its authenticated user:\n{log}\nsmart host:\n{}",
        b.log()
    );
    assert!(
        log_has(&b, "sasl_method=PLAIN, sasl_username=alice"),
        "{}",
        b.log()
    );
    assert!(
        log.contains("Untrusted TLS connection established"),
        "{log}"
    );
    assert!(
        !log.contains("secret"),
        "the password is never logged:\n{log}"
    );
}

#[test]
fn a_bounce_that_bounces_goes_to_the_postmaster_once() {
    let Some(Sites {
        mut a,
        b: _b,
        dns: _dns,
        scratch: _scratch,
    }) = sites(7)
    else {
        return;
    };
    // A notification (null sender) the remote server refuses: it cannot be
    // returned, so the postmaster (alice, by the test aliases) hears of it.
    let r = a
        .smtp()
        .send("", &["nosuch@dest.test"], b"Subject: a bounce\r\n\r\nx\r\n");
    assert_eq!(r.code, 250, "{}", r.text());
    let got = a.wait_mail("alice", 1, T);
    assert_eq!(got.len(), 1, "{}", a.log());
    let text = String::from_utf8_lossy(&got[0]);
    assert!(
        text.contains("Subject: Postmaster Copy: Undelivered Mail"),
        "{text}"
    );
    assert!(text.contains("nosuch@dest.test"), "{text}");
    assert!(
        log_has(&a, "postmaster non-delivery notification: "),
        "{}",
        a.log()
    );
    // When the postmaster's copy cannot be delivered either, it is dropped
    // (logged), never sent around again.
    // Let qmgr finish with it first: a restart in the middle of a delivery
    // would make it deliver twice (at least once, never lost).
    assert!(wait_until(T, || a.queue_empty()), "{}", a.log());
    reconfigure(&mut a, "2bounce_notice_recipient = ghost@dest.test\n");
    let r = a.smtp().send(
        "",
        &["nosuch@dest.test"],
        b"Subject: another bounce\r\n\r\nx\r\n",
    );
    assert_eq!(r.code, 250, "{}", r.text());
    assert!(
        log_has(&a, "undeliverable postmaster notification discarded"),
        "{}",
        a.log()
    );
    assert_eq!(a.mailbox("alice").len(), 1);
}

#[test]
fn sessions_are_reused_for_the_next_message_to_the_same_destination() {
    let Some(Sites {
        a,
        b,
        dns: _dns,
        scratch: _scratch,
    }) = sites(8)
    else {
        return;
    };
    const N: usize = 30;
    let mut c = a.smtp();
    assert_eq!(c.cmd("EHLO client.example").code, 250);
    for i in 0..N {
        let body = format!("Subject: reuse {i}\r\n\r\nmessage {i}\r\n");
        let r = c.send("bob@example.test", &["alice@dest.test"], body.as_bytes());
        assert_eq!(r.code, 250, "{}", r.text());
        // One at a time, as a trickle of mail to one domain arrives.
        std::thread::sleep(Duration::from_millis(20));
    }
    let got = b.wait_mail("alice", N, T);
    assert_eq!(got.len(), N, "{}", a.log());
    // The receiver's view: sessions from the sender that carried mail
    // (each logged when it ends: the cached ones close after 2 s idle).
    let mails_in = |log: &str| -> usize {
        log.lines()
            .filter(|l| l.contains("disconnect from"))
            .filter_map(|l| {
                l.split(" mail=")
                    .nth(1)?
                    .split(' ')
                    .next()?
                    .parse::<usize>()
                    .ok()
            })
            .sum()
    };
    assert!(wait_until(T, || mails_in(&b.log()) >= N), "{}", b.log());
    let log = b.log();
    let sessions: Vec<&str> = log
        .lines()
        .filter(|l| l.contains("disconnect from") && l.contains(" mail="))
        .collect();
    assert!(
        sessions.len() <= N / 3,
        "{} sessions for {N} messages:\n{}",
        sessions.len(),
        sessions.join("\n")
    );
    // The sender never looked the destination up again for a reused one.
    assert!(a.log().contains("status=sent"), "{}", a.log());
}

#[test]
fn a_destination_nobody_answers_for_is_suspended_not_retried_per_message() {
    let Some(Sites {
        mut a,
        b,
        dns: _dns,
        scratch: _scratch,
    }) = sites(9)
    else {
        return;
    };
    // Suspended long enough for the test to see it.
    reconfigure(
        &mut a,
        "minimal_backoff_time = 20s\nmaximal_backoff_time = 30s\n",
    );
    let mut c = a.smtp();
    for i in 0..4 {
        let r = c.send(
            "bob@example.test",
            &[&format!("u{i}@down.test")],
            b"Subject: nowhere\r\n\r\nx\r\n",
        );
        assert_eq!(r.code, 250, "{}", r.text());
        if i == 0 {
            assert!(
                log_has(
                    &a,
                    &format!(
                        "down.test:{}: destination suspended for 20s: connect to mx.down.test[127.0.0.2]",
                        b.smtp_port
                    )
                ),
                "{}",
                a.log()
            );
        }
    }
    for i in 1..4 {
        assert!(
            log_has(&a, &format!("to=<u{i}@down.test>, relay=none, ")),
            "{}",
            a.log()
        );
    }
    let log = a.log();
    for i in 1..4 {
        let line = log
            .lines()
            .find(|l| l.contains(&format!("to=<u{i}@down.test>")))
            .unwrap();
        assert!(
            line.contains("status=deferred (delivery temporarily suspended: connect to mx.down.test[127.0.0.2]"),
            "{line}"
        );
        assert!(line.contains("postern/qmgr"), "no delivery attempt: {line}");
    }
}

/// A scripted LMTP server on a Unix socket: accepts every recipient but
/// `bob@...` (his mailbox is full), who gets 452 after the data (RFC 2033's per-recipient
/// replies). Returns what each session sent.
fn lmtp_server(path: &std::path::Path) -> std::sync::mpsc::Receiver<String> {
    use std::io::{BufRead, BufReader, Write};
    use std::os::unix::fs::PermissionsExt;
    let listener = std::os::unix::net::UnixListener::bind(path).unwrap();
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o777)).unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for conn in listener.incoming() {
            let Ok(mut w) = conn else { return };
            let mut r = BufReader::new(w.try_clone().unwrap());
            let mut seen = String::new();
            let mut rcpts: Vec<String> = Vec::new();
            let _ = w.write_all(b"220 lmtp.test LMTP ready\r\n");
            let mut line = String::new();
            loop {
                line.clear();
                if r.read_line(&mut line).unwrap_or(0) == 0 {
                    break;
                }
                seen.push_str(&line);
                let upper = line.to_ascii_uppercase();
                let reply: String = if upper.starts_with("LHLO") {
                    "250-lmtp.test\r\n250-PIPELINING\r\n250 ENHANCEDSTATUSCODES\r\n".into()
                } else if upper.starts_with("MAIL") {
                    "250 2.1.0 Ok\r\n".into()
                } else if upper.starts_with("RCPT") {
                    rcpts.push(line.trim().to_string());
                    "250 2.1.5 Ok\r\n".into()
                } else if upper.starts_with("DATA") {
                    let _ = w.write_all(b"354 go ahead\r\n");
                    loop {
                        line.clear();
                        if r.read_line(&mut line).unwrap_or(0) == 0 || line == ".\r\n" {
                            break;
                        }
                        seen.push_str(&line);
                    }
                    rcpts
                        .drain(..)
                        .map(|rc| {
                            if rc.contains("bob@") {
                                "452 4.2.2 Mailbox full\r\n".to_string()
                            } else {
                                "250 2.0.0 Saved\r\n".to_string()
                            }
                        })
                        .collect()
                } else if upper.starts_with("QUIT") {
                    let _ = w.write_all(b"221 2.0.0 Bye\r\n");
                    break;
                } else if upper.starts_with("RSET") {
                    "250 2.0.0 Ok\r\n".into()
                } else {
                    "502 5.5.2 What?\r\n".into()
                };
                let _ = w.write_all(reply.as_bytes());
            }
            let _ = tx.send(seen);
        }
    });
    rx
}

#[test]
fn local_mail_can_go_to_an_lmtp_server_with_one_answer_per_recipient() {
    use std::os::unix::fs::PermissionsExt;
    let scratch = tempfile::tempdir().unwrap();
    std::fs::set_permissions(scratch.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let sock = scratch.path().join("lmtp.sock");
    let sessions = lmtp_server(&sock);
    let mut a = Instance::new(Options {
        main_extra: format!("local_transport = lmtp:unix:{}\n", sock.display()),
        master_extra: "lmtp unix - - n - - smtp\n".into(),
        ..Options::default()
    });
    a.start();
    let r = a.smtp().send(
        "someone@remote.example",
        &["alice@example.test", "bob@example.test"],
        b"Subject: to the store\r\n\r\nhello lmtp\r\n",
    );
    assert_eq!(r.code, 250, "{}", r.text());
    let seen = sessions.recv_timeout(T).expect("an LMTP session");
    assert!(seen.starts_with("LHLO mail.example.test\r\n"), "{seen}");
    assert!(seen.contains("RCPT TO:<alice@example.test>"), "{seen}");
    assert!(seen.contains("hello lmtp"), "{seen}");
    let relay = format!("relay=mail.example.test[{}]", sock.display());
    assert!(
        log_has(&a, &format!("to=<alice@example.test>, {relay}, ")),
        "{}",
        a.log()
    );
    let log = a.log();
    let line = |who: &str| {
        log.lines()
            .find(|l| l.contains(&format!("to=<{who}>")) && l.contains("postern/smtp"))
            .unwrap_or_default()
            .to_string()
    };
    assert!(
        line("alice@example.test").contains("status=sent (250 2.0.0 Saved)"),
        "{log}"
    );
    assert!(
        line("bob@example.test").contains("dsn=4.2.2, status=deferred (host mail.example.test[")
            && line("bob@example.test")
                .contains("said: 452 4.2.2 Mailbox full (in reply to end of DATA command))"),
        "{log}"
    );
}

#[test]
fn error_retry_and_discard_transports_need_no_agent() {
    let scratch = tempfile::tempdir().unwrap();
    std::fs::write(
        scratch.path().join("transport"),
        "refused.test error:5.7.1 we do not take mail for refused.test\n\
         later.test retry:4.3.0 down for maintenance\n\
         void.test discard:\n",
    )
    .unwrap();
    let mut a = Instance::new(Options {
        mynetworks: "127.0.0.0/8".into(),
        main_extra: format!(
            "transport_maps = hash:{}/transport\nnotify_classes = bounce\n",
            scratch.path().display()
        ),
        ..Options::default()
    });
    a.start();
    let r = a.smtp().send(
        "bob@example.test",
        &["x@refused.test", "y@later.test", "z@void.test"],
        b"Subject: builtin\r\n\r\nx\r\n",
    );
    assert_eq!(r.code, 250, "{}", r.text());
    for want in [
        "to=<x@refused.test>, relay=none, delay=",
        "to=<y@later.test>, relay=none, delay=",
        "to=<z@void.test>, relay=none, delay=",
    ] {
        assert!(log_has(&a, want), "{want}: {}", a.log());
    }
    let log = a.log();
    let line = |who: &str| {
        log.lines()
            .find(|l| l.contains(&format!("to=<{who}>")))
            .unwrap_or_default()
            .to_string()
    };
    assert!(
        line("x@refused.test")
            .contains("dsn=5.7.1, status=bounced (we do not take mail for refused.test)"),
        "{log}"
    );
    assert!(
        line("y@later.test").contains("dsn=4.3.0, status=deferred (down for maintenance)"),
        "{log}"
    );
    assert!(
        line("z@void.test").contains("dsn=2.0.0, status=sent (discarded: void.test)"),
        "{log}"
    );
    // The bounce reaches the sender, with the error transport's words.
    let got = a.wait_mail("bob", 1, T);
    assert_eq!(got.len(), 1, "{}", a.log());
    let text = String::from_utf8_lossy(&got[0]);
    assert!(
        text.contains("we do not take mail for refused.test"),
        "{text}"
    );
    assert!(!text.contains("z@void.test>:"), "{text}");
    // notify_classes = bounce: the postmaster (alice, by the test aliases)
    // gets a copy, headers only.
    let copies = a.wait_mail("alice", 1, T);
    assert_eq!(copies.len(), 1, "{}", a.log());
    let copy = String::from_utf8_lossy(&copies[0]);
    assert!(
        copy.contains("Subject: Postmaster Copy: Undelivered Mail"),
        "{copy}"
    );
    assert!(copy.contains("text/rfc822-headers"), "{copy}");
}

#[test]
fn a_sender_is_warned_once_then_gets_the_bounce_when_the_message_expires() {
    let Some(Sites {
        mut a,
        b: _b,
        dns: _dns,
        scratch: _scratch,
    }) = sites(10)
    else {
        return;
    };
    reconfigure(
        &mut a,
        "delay_warning_time = 2s\nmaximal_queue_lifetime = 7s\n",
    );
    let r = a.smtp().send(
        "bob@example.test",
        &["u@down.test"],
        b"Subject: patience\r\n\r\nx\r\n",
    );
    assert_eq!(r.code, 250, "{}", r.text());
    let got = a.wait_mail("bob", 2, Duration::from_secs(40));
    assert_eq!(got.len(), 2, "{}", a.log());
    let texts: Vec<String> = got
        .iter()
        .map(|m| String::from_utf8_lossy(m).into_owned())
        .collect();
    let warning = texts
        .iter()
        .find(|t| t.contains("Subject: Delayed Mail (still being retried)"))
        .expect("a delay warning");
    assert!(warning.contains("THIS IS A WARNING ONLY"), "{warning}");
    assert!(warning.contains("Action: delayed"), "{warning}");
    assert!(warning.contains("Will-Retry-Until:"), "{warning}");
    let bounce = texts
        .iter()
        .find(|t| t.contains("Subject: Undelivered Mail Returned to Sender"))
        .expect("the bounce at expiry");
    assert!(bounce.contains("Status: 5.4.7"), "{bounce}");
    assert!(
        log_has(&a, "status=expired, returned to sender"),
        "{}",
        a.log()
    );
    // Warned once, whatever the number of retries in between.
    assert_eq!(
        a.log().matches("sender delay notification").count(),
        1,
        "{}",
        a.log()
    );
}

#[test]
fn smtp_destination_recipient_limit_splits_the_transactions() {
    let Some(Sites {
        mut a,
        b,
        dns: _dns,
        scratch: _scratch,
    }) = sites(11)
    else {
        return;
    };
    reconfigure(&mut a, "smtp_destination_recipient_limit = 2\n");
    let rcpts = [
        "alice@dest.test",
        "bob@dest.test",
        "carol@dest.test",
        "postmaster@dest.test",
        "team@dest.test",
    ];
    let r = a
        .smtp()
        .send("bob@example.test", &rcpts, b"Subject: split\r\n\r\nx\r\n");
    assert_eq!(r.code, 250, "{}", r.text());
    let arrivals = |log: &str| -> Vec<usize> {
        log.lines()
            .filter(|l| l.contains("postern/qmgr") && l.contains("from=<bob@example.test>"))
            .filter_map(|l| l.split("nrcpt=").nth(1)?.split(' ').next()?.parse().ok())
            .collect()
    };
    assert!(
        wait_until(T, || arrivals(&b.log()).iter().sum::<usize>() >= 5),
        "{}",
        b.log()
    );
    let mut n = arrivals(&b.log());
    n.sort();
    assert_eq!(
        n,
        [1, 2, 2],
        "transactions of at most 2 recipients:\n{}",
        b.log()
    );
}

/// Debian's smtp-sink: installed, or unpacked by .ci/run (with the
/// libraries beside it). None when neither is there.
fn smtp_sink() -> Option<(std::path::PathBuf, Option<std::path::PathBuf>)> {
    let unpacked = std::path::Path::new("/opt/postern-ci/postfix");
    for (bin, libs) in [
        (std::path::PathBuf::from("/usr/sbin/smtp-sink"), None),
        (
            unpacked.join("usr/sbin/smtp-sink"),
            Some(unpacked.join("usr/lib/postfix")),
        ),
    ] {
        if bin.exists() {
            return Some((bin, libs));
        }
    }
    None
}

#[test]
fn mail_relays_to_debian_smtp_sink() {
    let Some((sink, libs)) = smtp_sink() else {
        eprintln!("skipped: no smtp-sink (Debian's postfix package; .ci/run unpacks it)");
        return;
    };
    let port = free_port();
    // "-d": one file per received message in this directory (smtp-sink
    // runs as nobody when we are root).
    let dump = tempfile::tempdir().unwrap();
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(dump.path(), std::fs::Permissions::from_mode(0o777)).unwrap();
    }
    let mut cmd = std::process::Command::new(&sink);
    if let Some(l) = &libs {
        cmd.env("LD_LIBRARY_PATH", l);
    }
    if is_root() {
        cmd.args(["-u", "nobody"]);
    }
    let mut child = cmd
        .arg("-d")
        .arg(dump.path().join("msg."))
        .args([&format!("127.0.0.1:{port}"), "100"])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("start smtp-sink");
    let count = || {
        std::fs::read_dir(dump.path())
            .map(|rd| rd.count())
            .unwrap_or(0)
    };
    assert!(
        wait_until(T, || std::net::TcpStream::connect(("127.0.0.1", port))
            .is_ok()),
        "smtp-sink did not start"
    );
    let mut a = Instance::new(Options {
        mynetworks: "127.0.0.0/8".into(),
        main_extra: format!("relayhost = [127.0.0.1]:{port}\n"),
        master_extra: "smtp unix - - n - - smtp\n".into(),
    });
    a.start();
    const N: usize = 20;
    let mut c = a.smtp();
    for i in 0..N {
        let body = format!("Subject: sink {i}\r\n\r\nto the sink\r\n");
        let r = c.send("bob@example.test", &["anyone@far.example"], body.as_bytes());
        assert_eq!(r.code, 250, "{}", r.text());
    }
    let done = wait_until(T, || count() >= N);
    let _ = child.kill();
    let _ = child.wait();
    assert!(done, "smtp-sink received {} of {N}:\n{}", count(), a.log());
    // What it got is the message (smtp-sink dumps the envelope and data).
    let one = std::fs::read_dir(dump.path())
        .unwrap()
        .next()
        .unwrap()
        .unwrap();
    let text = std::fs::read_to_string(one.path()).unwrap();
    assert!(text.contains("to the sink"), "{text}");
    let sent = a
        .log()
        .lines()
        .filter(|l| {
            l.contains(&format!("relay=127.0.0.1[127.0.0.1]:{port}, "))
                && l.contains("status=sent (250")
        })
        .count();
    assert_eq!(sent, N, "{}", a.log());
}
