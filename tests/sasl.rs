//! SASL AUTH end to end: a real instance with TLS and the auth service,
//! real clients (rustls, swaks, python smtplib, fail2ban-regex from Debian's
//! packages).
//! AUTH is not offered or accepted before TLS; PLAIN and LOGIN work for
//! every hash scheme and refuse wrong passwords; an authenticated client
//! may relay and an anonymous one may not; on a submission service the
//! sender must belong to the login; failures are logged so that fail2ban's
//! stock postfix filter finds the client.

use postern_tests::tls::*;
use postern_tests::*;
use std::process::Command;
use std::time::Duration;

const T: Duration = Duration::from_secs(30);

/// openssl passwd -6 -salt saltsalt secret
const SHA512: &str = "{SHA512-CRYPT}$6$saltsalt$TVLlQcbpFVof5W3Yz4DTP6gRstiNuHwwTt6GLc1E5n0U0aDehy0S5knV8wiOQSpT0Y77vwPZN.Pq.H91p5hVO1";
/// crypt_blowfish's test vector for "U*U", in $2y$ form.
const BCRYPT: &str = "{BLF-CRYPT}$2y$05$CCCCCCCCCCCCCCCCCCCCC.E5YPO9kmyuRGyh0XouQYb4YMJKvyOeW";

/// The overrides of the shipped master.cf's submission service.
const SUBMISSION: &str = "-o syslog_name=postern/submission \
     -o smtpd_tls_security_level=encrypt -o smtpd_sasl_auth_enable=yes \
     -o smtpd_tls_auth_only=yes \
     -o smtpd_client_restrictions=permit_sasl_authenticated,reject \
     -o smtpd_sender_restrictions=reject_sender_login_mismatch \
     -o smtpd_relay_restrictions=permit_sasl_authenticated,reject";

fn b64(s: &[u8]) -> String {
    postern_sasl::encode(s)
}

/// A started instance: the port-25-style smtpd offers AUTH (after TLS),
/// plus a submission service on the returned port; users of every scheme.
fn sasl_instance() -> (Instance, rustls::pki_types::CertificateDer<'static>, u16) {
    let submission = free_port();
    let master = format!("127.0.0.1:{submission} inet n - n - - smtpd {SUBMISSION}\n");
    let mut inst = Instance::new(Options {
        main_extra:
            "smtpd_sasl_auth_enable = yes\nauth_failure_delay = 0\nrecipient_delimiter = +\n".into(),
        master_extra: master,
        ..Options::default()
    });
    let argon = postern_passdb::hash_password("argon-pw").expect("argon2id");
    std::fs::write(
        inst.dir.join("users"),
        format!(
            "alice:{{PLAIN}}secret::::::\n\
             bob:{{PLAIN}}secret::::::\n\
             carol:{{PLAIN}}secret::::::\n\
             dora:{argon}::::::\n\
             erin:{BCRYPT}::::::\n\
             fred:{SHA512}::::::\n"
        ),
    )
    .expect("users");
    let der = add_cert(&inst);
    inst.start();
    assert!(wait_until(T, || std::net::TcpStream::connect((
        "127.0.0.1",
        submission
    ))
    .is_ok()));
    (inst, der, submission)
}

/// STARTTLS and EHLO; returns the session and the EHLO lines.
fn tls_session(port: u16, der: &rustls::pki_types::CertificateDer<'static>) -> (Tls, Vec<String>) {
    let mut s = starttls(port, client_config(std::slice::from_ref(der), false));
    let (code, lines) = tls_cmd(&mut s, "EHLO client.example");
    assert_eq!(code, 250, "{lines:?}");
    (s, lines)
}

#[test]
fn sasl_end_to_end() {
    let (inst, der, submission) = sasl_instance();

    // Before TLS: not offered, and refused when tried anyway.
    let mut p = connect(inst.smtp_port);
    assert_eq!(plain_reply(&mut p).0, 220);
    let (code, lines) = plain_cmd(&mut p, "EHLO client.example");
    assert_eq!(code, 250);
    assert!(!lines.iter().any(|l| l.starts_with("AUTH")), "{lines:?}");
    let (code, lines) = plain_cmd(&mut p, &format!("AUTH PLAIN {}", b64(b"\0alice\0secret")));
    assert_eq!(
        (code, lines[0].as_str()),
        (
            538,
            "5.7.11 Encryption required for requested authentication mechanism"
        )
    );
    drop(p);

    // Inside TLS: offered; every scheme, PLAIN with an initial response.
    let (_, lines) = tls_session(inst.smtp_port, &der);
    assert!(lines.iter().any(|l| l == "AUTH PLAIN LOGIN"), "{lines:?}");
    for (user, good) in [
        ("alice", "secret"),
        ("dora", "argon-pw"),
        ("erin", "U*U"),
        ("fred", "secret"),
    ] {
        let (mut s, _) = tls_session(inst.smtp_port, &der);
        let bad = tls_cmd(
            &mut s,
            &format!("AUTH PLAIN {}", b64(format!("\0{user}\0wrong").as_bytes())),
        );
        assert_eq!(bad.0, 535, "{user}: {bad:?}");
        assert_eq!(
            bad.1[0],
            "5.7.8 Error: authentication failed: authentication failure"
        );
        let ok = tls_cmd(
            &mut s,
            &format!("AUTH PLAIN {}", b64(format!("\0{user}\0{good}").as_bytes())),
        );
        assert_eq!(
            ok,
            (235, vec!["2.7.0 Authentication successful".to_string()]),
            "{user}"
        );
        let again = tls_cmd(&mut s, &format!("AUTH PLAIN {}", b64(b"\0bob\0secret")));
        assert_eq!(again.0, 503, "{again:?}");
    }

    // LOGIN, challenge by challenge; PLAIN without an initial response; "*" cancels.
    let (mut s, _) = tls_session(inst.smtp_port, &der);
    assert_eq!(
        tls_cmd(&mut s, "AUTH LOGIN"),
        (334, vec!["VXNlcm5hbWU6".to_string()])
    );
    assert_eq!(
        tls_cmd(&mut s, &b64(b"erin")),
        (334, vec!["UGFzc3dvcmQ6".to_string()])
    );
    assert_eq!(tls_cmd(&mut s, &b64(b"U*U")).0, 235);
    let (mut s, _) = tls_session(inst.smtp_port, &der);
    {
        // RFC 4954's grammar: "334" SP, even for an empty challenge.
        use std::io::{BufRead, Write};
        let w = s.get_mut();
        w.write_all(b"AUTH PLAIN\r\n").expect("write");
        w.flush().expect("flush");
        let mut line = String::new();
        s.read_line(&mut line).expect("read");
        assert_eq!(line, "334 \r\n");
    }
    assert_eq!(tls_cmd(&mut s, "*").0, 501);
    assert_eq!(tls_cmd(&mut s, "AUTH CRAM-MD5").0, 504);
    assert_eq!(
        tls_cmd(&mut s, "AUTH LOGIN"),
        (334, vec!["VXNlcm5hbWU6".to_string()])
    );
    assert_eq!(tls_cmd(&mut s, &b64(b"nosuchuser")).0, 334);
    let unknown = tls_cmd(&mut s, &b64(b"secret"));
    // An unknown user gets exactly what a wrong password gets.
    assert_eq!(
        unknown.1[0],
        "5.7.8 Error: authentication failed: authentication failure"
    );
    // Acting as someone else (PLAIN authzid) is refused.
    let proxy = tls_cmd(
        &mut s,
        &format!("AUTH PLAIN {}", b64(b"bob\0alice\0secret")),
    );
    assert_eq!(proxy.0, 535, "{proxy:?}");

    // Relay: refused without AUTH, allowed with it; the Received header
    // names the login and says ESMTPSA.
    let (mut s, _) = tls_session(inst.smtp_port, &der);
    assert_eq!(tls_cmd(&mut s, "MAIL FROM:<alice@example.test>").0, 250);
    let r = tls_cmd(&mut s, "RCPT TO:<far@remote.example>");
    assert_eq!(r.0, 554, "{r:?}");
    assert_eq!(r.1[0], "5.7.1 <far@remote.example>: Relay access denied");
    assert_eq!(tls_cmd(&mut s, "RSET").0, 250);
    assert_eq!(
        tls_cmd(&mut s, &format!("AUTH PLAIN {}", b64(b"\0alice\0secret"))).0,
        235
    );
    assert_eq!(
        tls_cmd(&mut s, "MAIL FROM:<alice@example.test> AUTH=<>").0,
        250
    );
    assert_eq!(tls_cmd(&mut s, "RCPT TO:<far@remote.example>").0, 250);
    assert_eq!(tls_cmd(&mut s, "RCPT TO:<bob@example.test>").0, 250);
    // Unknown local users are still refused after AUTH.
    assert_eq!(tls_cmd(&mut s, "RCPT TO:<nosuch@example.test>").0, 550);
    assert_eq!(tls_cmd(&mut s, "DATA").0, 354);
    let (code, lines) = tls_cmd(&mut s, "Subject: relayed\r\n\r\nfrom a road warrior\r\n.");
    assert_eq!(code, 250, "{lines:?}");
    let id = lines[0].rsplit(' ').next().unwrap_or("").to_string();
    assert_eq!(tls_cmd(&mut s, "QUIT").0, 221);
    let msgs = inst.wait_mail("bob", 1, T);
    let rcvd = received_of(&msgs[0]);
    assert!(
        rcvd.contains("(Authenticated sender: alice)") && rcvd.contains("with ESMTPSA"),
        "{rcvd}"
    );
    let log = inst.log();
    assert!(
        log.contains(&format!(
            "{id}: client=unknown[127.0.0.1], sasl_method=PLAIN, sasl_username=alice"
        )),
        "{log}"
    );

    // The submission service: nothing without AUTH, and only one's own address.
    let (mut s, lines) = tls_session(submission, &der);
    assert!(lines.iter().any(|l| l == "AUTH PLAIN LOGIN"), "{lines:?}");
    assert_eq!(tls_cmd(&mut s, "MAIL FROM:<alice@example.test>").0, 250);
    let r = tls_cmd(&mut s, "RCPT TO:<bob@example.test>");
    assert_eq!(r.0, 554, "{r:?}");
    assert_eq!(
        r.1[0],
        "5.7.1 <unknown[127.0.0.1]>: Client host rejected: Access denied"
    );
    assert_eq!(tls_cmd(&mut s, "RSET").0, 250);
    assert_eq!(
        tls_cmd(&mut s, &format!("AUTH PLAIN {}", b64(b"\0alice\0secret"))).0,
        235
    );
    assert_eq!(tls_cmd(&mut s, "MAIL FROM:<bob@example.test>").0, 250);
    let r = tls_cmd(&mut s, "RCPT TO:<far@remote.example>");
    assert_eq!(r.0, 553, "{r:?}");
    assert_eq!(
        r.1[0],
        "5.7.1 <bob@example.test>: Sender address rejected: not owned by user alice"
    );
    assert_eq!(tls_cmd(&mut s, "RSET").0, 250);
    assert_eq!(
        tls_cmd(&mut s, "MAIL FROM:<alice+lists@example.test>").0,
        250
    );
    assert_eq!(tls_cmd(&mut s, "RCPT TO:<carol@example.test>").0, 250);
    assert_eq!(tls_cmd(&mut s, "QUIT").0, 221);

    // Failures are logged in Postfix's words, under the service's name.
    let log = inst.log();
    assert!(
        log.contains("postern/smtpd[")
            && log.contains("warning: unknown[127.0.0.1]: SASL PLAIN authentication failed: authentication failure"),
        "{log}"
    );
    assert!(
        log.contains(
            "warning: unknown[127.0.0.1]: SASL LOGIN authentication failed: authentication failure"
        ),
        "{log}"
    );
    // Session statistics count failed commands as Postfix does ("ok/total").
    assert!(log.contains("starttls=1 auth=1/3 commands=4/6"), "{log}");
    // Passwords never reach the log.
    assert!(!log.contains("argon-pw") && !log.contains("U*U"), "{log}");
}

#[test]
fn swaks_and_fail2ban_see_a_postfix_like_server() {
    let (inst, _, submission) = sasl_instance();
    let swaks = |user: &str, password: &str, to: &str| {
        let out = Command::new("swaks")
            .args(["--server", &format!("127.0.0.1:{submission}")])
            .args(["--tls", "--auth", "LOGIN"])
            .args(["--auth-user", user, "--auth-password", password])
            .args(["--from", &format!("{user}@example.test"), "--to", to])
            .args(["--helo", "roadwarrior.example", "--timeout", "30"])
            .output()
            .expect("swaks (apt-get install swaks)");
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
        )
    };
    let (code, text) = swaks("carol", "secret", "alice@example.test");
    assert_eq!(code, Some(0), "{text}");
    assert!(
        text.contains("235 2.7.0 Authentication successful"),
        "{text}"
    );
    assert_eq!(inst.wait_mail("alice", 1, T).len(), 1);
    for _ in 0..3 {
        let (code, text) = swaks("carol", "guess", "alice@example.test");
        assert_ne!(code, Some(0), "{text}");
        assert!(text.contains("535 5.7.8"), "{text}");
    }
    // fail2ban's stock postfix filter (mode=auth, as its postfix-sasl jail
    // uses), told that the daemon is called postern rather than postfix.
    let log = inst.dir.join("maillog");
    let out = Command::new("fail2ban-regex")
        .arg("--print-all-matched")
        .arg(&log)
        .arg(r#"postfix[mode=auth, _daemon="postern(-\w+)?/\w+(?:/smtp[ds])?"]"#)
        .output()
        .expect("fail2ban-regex (apt-get install fail2ban)");
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(out.status.success(), "{text}");
    assert!(
        text.contains("warning: unknown[127.0.0.1]: SASL LOGIN authentication failed"),
        "{text}"
    );
    assert!(
        text.lines()
            .any(|l| l.trim_start().starts_with("Failregex: 3 total")),
        "{text}"
    );
}

#[test]
fn python_smtplib_logs_in_over_starttls_and_sends() {
    let (inst, _, submission) = sasl_instance();
    let cert = inst.dir.join("tls").join("cert.pem");
    let script = r#"
import smtplib, ssl, sys
port, cafile = int(sys.argv[1]), sys.argv[2]
ctx = ssl.create_default_context(cafile=cafile)
ctx.check_hostname = False  # connected by address; the chain is still verified
s = smtplib.SMTP("127.0.0.1", port, timeout=30)
s.starttls(context=ctx)
try:
    s.login("dora", "wrong")
    sys.exit("a wrong password was accepted")
except smtplib.SMTPAuthenticationError as e:
    assert e.smtp_code == 535, e
s.login("dora", "argon-pw")
s.sendmail("dora@example.test", ["carol@example.test"], b"Subject: from python\r\n\r\nhello\r\n")
s.quit()
print("sent")
"#;
    let out = Command::new("python3")
        .arg("-c")
        .arg(script)
        .arg(submission.to_string())
        .arg(&cert)
        .output()
        .expect("python3");
    assert!(
        out.status.success(),
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let msgs = inst.wait_mail("carol", 1, T);
    assert!(received_of(&msgs[0]).contains("(Authenticated sender: dora)"));
}
