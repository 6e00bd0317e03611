//! TLS end to end: a real instance with a self-signed certificate, real TLS
//! clients (rustls, and the openssl command-line tool): STARTTLS, implicit
//! TLS, old protocol versions refused, plaintext injection after STARTTLS
//! (CVE-2011-0411) not executed, the encrypt level, and certificate reload.

use postern_tests::tls::*;
use postern_tests::*;
use rustls::ClientConfig;
use rustls::pki_types::CertificateDer;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::sync::Arc;
use std::time::Duration;

const T: Duration = Duration::from_secs(30);

#[test]
fn starttls_then_mail_is_delivered_with_tls_in_received() {
    let (inst, der) = tls_instance("", "");
    // STARTTLS takes no arguments.
    let mut s = connect(inst.smtp_port);
    assert_eq!(plain_reply(&mut s).0, 220);
    let (code, lines) = plain_cmd(&mut s, "STARTTLS now");
    assert_eq!(code, 501, "{lines:?}");
    drop(s);

    let mut s = starttls(inst.smtp_port, client_config(&[der], false));
    // After the handshake the session starts afresh and STARTTLS is gone.
    let (code, lines) = tls_cmd(&mut s, "EHLO client.example");
    assert_eq!(code, 250);
    assert!(!lines.iter().any(|l| l == "STARTTLS"), "{lines:?}");
    let (code, lines) = tls_cmd(&mut s, "STARTTLS");
    assert_eq!(code, 554, "{lines:?}");
    assert_eq!(lines[0], "5.5.1 Error: TLS already active");
    send_over(&mut s, "alice@example.test", "starttls");
    assert_eq!(tls_cmd(&mut s, "QUIT").0, 221);

    let msgs = inst.wait_mail("alice", 1, T);
    assert_eq!(msgs.len(), 1);
    let rcvd = received_of(&msgs[0]);
    assert!(
        rcvd.contains("(TLSv1.3 with cipher TLS_") && rcvd.contains("with ESMTPS"),
        "{rcvd}"
    );
    let log = inst.log();
    assert!(
        log.contains(
            "Anonymous TLS connection established from unknown[127.0.0.1]: TLSv1.3 with cipher"
        ),
        "{log}"
    );
}

#[test]
fn implicit_tls_on_a_wrappermode_listener_with_tls12() {
    let port = free_port();
    let (inst, der) = tls_instance(
        "",
        &format!("127.0.0.1:{port} inet n - n - - smtpd -o smtpd_tls_wrappermode=yes\n"),
    );
    assert!(wait_until(T, || TcpStream::connect(("127.0.0.1", port)).is_ok()));
    // TLS 1.2 only: the older of the two versions still works.
    let mut s = handshake(connect(port), client_config(&[der], true)).expect("handshake");
    let (code, lines) = reply(&mut s);
    assert_eq!(code, 220, "{lines:?}");
    let (code, lines) = tls_cmd(&mut s, "EHLO client.example");
    assert_eq!(code, 250);
    assert!(!lines.iter().any(|l| l == "STARTTLS"), "{lines:?}");
    send_over(&mut s, "bob@example.test", "implicit");
    assert_eq!(tls_cmd(&mut s, "QUIT").0, 221);
    let msgs = inst.wait_mail("bob", 1, T);
    let rcvd = received_of(&msgs[0]);
    assert!(
        rcvd.contains("(TLSv1.2 with cipher ECDHE-") && rcvd.contains("with ESMTPS"),
        "{rcvd}"
    );
    // A plaintext client on the wrapper port gets no banner: the session ends.
    let mut p = connect(port);
    p.write_all(b"EHLO plain.example\r\n").expect("write");
    let mut buf = [0u8; 64];
    let n = p.read(&mut buf).unwrap_or(0);
    assert!(!buf[..n].starts_with(b"220"), "{:?}", &buf[..n]);
    assert!(
        wait_until(T, || inst.log().contains("warning: TLS library problem")),
        "{}",
        inst.log()
    );
}

#[test]
fn plaintext_pipelined_after_starttls_is_not_executed() {
    let (inst, der) = tls_instance("", "");
    let mut s = connect(inst.smtp_port);
    assert_eq!(plain_reply(&mut s).0, 220);
    assert_eq!(plain_cmd(&mut s, "EHLO client.example").0, 250);
    // CVE-2011-0411: the NOOP travels in the clear in the same packet.
    s.write_all(b"STARTTLS\r\nNOOP\r\n").expect("write");
    let (code, _) = plain_reply(&mut s);
    assert_eq!(code, 220);
    let mut t = handshake(s, client_config(&[der], false)).expect("handshake");
    // Had the NOOP been executed, its "250 2.0.0 Ok" would come first.
    let (code, lines) = tls_cmd(&mut t, "EHLO again.example");
    assert_eq!(code, 250);
    assert_eq!(lines[0], HOST, "a reply to the injected NOOP: {lines:?}");
    let (code, lines) = tls_cmd(&mut t, "QUIT");
    assert_eq!(code, 221, "{lines:?}");
    assert!(
        wait_until(T, || inst.log().contains(
            "discarding 6 bytes of plaintext pipelined after STARTTLS"
        )),
        "{}",
        inst.log()
    );
    let log = inst.log();
    assert!(!log.contains("noop="), "{log}");
}

#[test]
fn encrypt_level_refuses_mail_before_starttls() {
    let (inst, der) = tls_instance("smtpd_tls_security_level = encrypt\n", "");
    let mut s = connect(inst.smtp_port);
    assert_eq!(plain_reply(&mut s).0, 220);
    assert_eq!(plain_cmd(&mut s, "EHLO client.example").0, 250);
    let (code, lines) = plain_cmd(&mut s, "MAIL FROM:<sender@remote.example>");
    assert_eq!(code, 530, "{lines:?}");
    assert_eq!(lines[0], "5.7.0 Must issue a STARTTLS command first");
    drop(s);
    let mut t = starttls(inst.smtp_port, client_config(&[der], false));
    assert_eq!(tls_cmd(&mut t, "EHLO client.example").0, 250);
    send_over(&mut t, "carol@example.test", "encrypt");
    assert_eq!(inst.wait_mail("carol", 1, T).len(), 1);
}

/// Runs openssl s_client -starttls smtp with extra arguments; returns
/// (success, stdout+stderr).
fn s_client(port: u16, extra: &[&str]) -> (bool, String) {
    let out = std::process::Command::new("openssl")
        .args(["s_client", "-brief", "-starttls", "smtp", "-connect"])
        .arg(format!("127.0.0.1:{port}"))
        .args(["-servername", HOST])
        .args(extra)
        .stdin(std::process::Stdio::null())
        .output()
        .expect("run openssl");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

#[test]
fn openssl_s_client_starttls_works_and_tls11_is_refused() {
    let (inst, _) = tls_instance("", "");
    let (_, text) = s_client(inst.smtp_port, &[]);
    assert!(text.contains("CONNECTION ESTABLISHED"), "{text}");
    assert!(text.contains("Protocol version: TLSv1.3"), "{text}");
    // TLS 1.1 (allowed on the client side by lowering its security level):
    // the server refuses the handshake.
    let (ok, text) = s_client(
        inst.smtp_port,
        &["-tls1_1", "-cipher", "DEFAULT@SECLEVEL=0"],
    );
    assert!(!ok, "{text}");
    assert!(!text.contains("CONNECTION ESTABLISHED"), "{text}");
    assert!(
        wait_until(T, || {
            let log = inst.log();
            log.contains("warning: TLS library problem")
                && log.contains("lost connection after STARTTLS from unknown[127.0.0.1]")
        }),
        "{}",
        inst.log()
    );
}

fn peer_cert(port: u16, cfg: Arc<ClientConfig>) -> Option<CertificateDer<'static>> {
    let mut s = connect(port);
    assert_eq!(plain_reply(&mut s).0, 220);
    let (_, lines) = plain_cmd(&mut s, "EHLO client.example");
    if !lines.iter().any(|l| l == "STARTTLS") {
        return None;
    }
    assert_eq!(plain_cmd(&mut s, "STARTTLS").0, 220);
    let t = handshake(s, cfg).ok()?;
    let certs = t.get_ref().conn.peer_certificates()?;
    Some(certs[0].clone().into_owned())
}

#[test]
fn reload_makes_new_connections_use_a_replaced_certificate() {
    let (inst, old) = tls_instance("", "");
    let cfg = client_config(std::slice::from_ref(&old), false);
    assert_eq!(peer_cert(inst.smtp_port, cfg), Some(old.clone()));
    // `postern tls selfsigned` writes the same files tls_instance did: it
    // refuses to replace them without --force.
    let args = ["tls", "selfsigned", "--hostname", HOST, "--days", "30"];
    let out = inst.postern(&args);
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("use --force"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = inst.postern(&[&args[..], &["--force"]].concat());
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let cert_path = inst.dir.join("tls").join("cert.pem");
    assert!(
        stdout.contains(&format!("smtpd_tls_cert_file = {}", cert_path.display())),
        "{stdout}"
    );
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(inst.dir.join("tls").join("key.pem"))
            .expect("key")
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
    }
    let new = {
        use rustls::pki_types::pem::PemObject;
        CertificateDer::from_pem_file(&cert_path).expect("new cert")
    };
    assert_ne!(new, old);
    let cfg = client_config(&[old.clone(), new.clone()], false);
    // (Running smtpd processes keep the certificate they loaded; whether
    // the next connection meets one of them or a new process is up to
    // master, so only the state after reload is asserted.)
    let out = inst.postern(&["reload"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // Certificates are compared whole (DER), which is stronger than
    // comparing fingerprints of them.
    assert!(
        wait_until(T, || peer_cert(inst.smtp_port, cfg.clone()).as_ref()
            == Some(&new)),
        "still not the new certificate after reload:\n{}",
        inst.log()
    );
}

#[test]
fn help_lists_only_what_the_session_offers() {
    let (inst, der) = tls_instance(
        "smtpd_sasl_auth_enable = yes\ndisable_vrfy_command = no\n",
        "",
    );
    let help_words = |lines: &[String]| -> Vec<String> {
        lines
            .last()
            .map(|l| l.split(' ').skip(1).map(str::to_string).collect())
            .unwrap_or_default()
    };
    let mut s = connect(inst.smtp_port);
    assert_eq!(plain_reply(&mut s).0, 220);
    let (code, lines) = plain_cmd(&mut s, "HELP");
    assert_eq!(code, 214, "{lines:?}");
    let words = help_words(&lines);
    assert!(words.iter().any(|w| w == "STARTTLS"), "{lines:?}");
    assert!(words.iter().any(|w| w == "VRFY"), "{lines:?}");
    // AUTH only inside TLS (smtpd_tls_auth_only = yes).
    assert!(!words.iter().any(|w| w == "AUTH"), "{lines:?}");
    drop(s);
    let mut s = starttls(inst.smtp_port, client_config(&[der], false));
    let (code, lines) = tls_cmd(&mut s, "HELP");
    assert_eq!(code, 214, "{lines:?}");
    let words = help_words(&lines);
    assert!(!words.iter().any(|w| w == "STARTTLS"), "{lines:?}");
    assert!(words.iter().any(|w| w == "AUTH"), "{lines:?}");
    assert_eq!(tls_cmd(&mut s, "QUIT").0, 221);
}
