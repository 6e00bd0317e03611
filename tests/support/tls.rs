//! TLS clients for end-to-end tests: certificates, rustls client configs,
//! SMTP over a plain socket and over TLS (STARTTLS or implicit).

use crate::{Instance, Options};
use rustls::pki_types::{CertificateDer, ServerName};
use rustls::{ClientConfig, ClientConnection, RootCertStore, StreamOwned};
use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

const T: Duration = Duration::from_secs(30);
/// The certificate's host name.
pub const HOST: &str = "mail.example.test";

/// A self-signed certificate for HOST: (DER, cert PEM, key PEM).
pub fn new_cert() -> (CertificateDer<'static>, String, String) {
    let ck = rcgen::generate_simple_self_signed(vec![HOST.to_string()]).expect("rcgen");
    (
        ck.cert.der().clone(),
        ck.cert.pem(),
        ck.signing_key.serialize_pem(),
    )
}

/// Writes cert.pem and key.pem (0600) into DIR/tls; returns the main.cf lines.
pub fn install_cert(dir: &Path, cert: &str, key: &str) -> String {
    use std::os::unix::fs::PermissionsExt;
    let tls = dir.join("tls");
    std::fs::create_dir_all(&tls).expect("mkdir tls");
    let c = tls.join("cert.pem");
    let k = tls.join("key.pem");
    // Replace atomically, as an administrator's tooling would.
    let tmp = tls.join("new.tmp");
    std::fs::write(&tmp, cert).expect("write cert");
    std::fs::rename(&tmp, &c).expect("rename cert");
    std::fs::write(&tmp, key).expect("write key");
    std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(0o600)).expect("chmod");
    std::fs::rename(&tmp, &k).expect("rename key");
    format!(
        "smtpd_tls_cert_file = {}\nsmtpd_tls_key_file = {}\n",
        c.display(),
        k.display()
    )
}

/// A rustls client trusting `trusted` (TLS 1.3 and 1.2, or 1.2 only).
pub fn client_config(trusted: &[CertificateDer<'static>], tls12_only: bool) -> Arc<ClientConfig> {
    let mut roots = RootCertStore::empty();
    for c in trusted {
        roots.add(c.clone()).expect("add root");
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let versions: &[&rustls::SupportedProtocolVersion] = if tls12_only {
        &[&rustls::version::TLS12]
    } else {
        &[&rustls::version::TLS13, &rustls::version::TLS12]
    };
    Arc::new(
        ClientConfig::builder_with_provider(provider)
            .with_protocol_versions(versions)
            .expect("versions")
            .with_root_certificates(roots)
            .with_no_client_auth(),
    )
}

/// A client TLS stream with a line buffer.
pub type Tls = BufReader<StreamOwned<ClientConnection, TcpStream>>;

/// Reads one SMTP reply (code, lines) from any reader.
pub fn reply(r: &mut impl BufRead) -> (u16, Vec<String>) {
    let mut lines = Vec::new();
    loop {
        let mut l = String::new();
        let n = r.read_line(&mut l).expect("read reply");
        assert!(n > 0, "connection closed while waiting for a reply");
        let code: u16 = l[..3].parse().expect("reply code");
        let more = l.as_bytes().get(3) == Some(&b'-');
        lines.push(l[4..].trim_end().to_string());
        if !more {
            return (code, lines);
        }
    }
}

/// Reads one reply from a plain socket byte by byte, so nothing after it
/// (the TLS handshake) is swallowed by a buffer.
pub fn plain_reply(s: &mut TcpStream) -> (u16, Vec<String>) {
    let mut bytes = Vec::new();
    let mut b = [0u8; 1];
    loop {
        let n = s.read(&mut b).expect("read");
        assert!(
            n > 0,
            "connection closed: {}",
            String::from_utf8_lossy(&bytes)
        );
        bytes.push(b[0]);
        if bytes.ends_with(b"\r\n") {
            let text = String::from_utf8_lossy(&bytes).into_owned();
            let last = text
                .trim_end()
                .rsplit("\r\n")
                .next()
                .unwrap_or("")
                .to_string();
            if last.as_bytes().get(3) == Some(&b' ') || last.len() == 3 {
                return reply(&mut text.as_bytes());
            }
        }
    }
}

/// Sends one command line on a plain socket and reads the reply.
pub fn plain_cmd(s: &mut TcpStream, line: &str) -> (u16, Vec<String>) {
    s.write_all(format!("{line}\r\n").as_bytes())
        .expect("write");
    plain_reply(s)
}

/// Sends one command line inside TLS and reads the reply.
pub fn tls_cmd(s: &mut Tls, line: &str) -> (u16, Vec<String>) {
    let w = s.get_mut();
    w.write_all(format!("{line}\r\n").as_bytes())
        .expect("write");
    w.flush().expect("flush");
    reply(s)
}

/// Completes the client side of the handshake on `tcp`.
pub fn handshake(tcp: TcpStream, cfg: Arc<ClientConfig>) -> Result<Tls, std::io::Error> {
    let name = ServerName::try_from(HOST).expect("name");
    let conn = ClientConnection::new(cfg, name).map_err(std::io::Error::other)?;
    let mut s = StreamOwned::new(conn, tcp);
    while s.conn.is_handshaking() {
        s.conn.complete_io(&mut s.sock)?;
    }
    Ok(BufReader::new(s))
}

/// A plain TCP connection to 127.0.0.1:port with a read timeout.
pub fn connect(port: u16) -> TcpStream {
    let s = TcpStream::connect(("127.0.0.1", port)).expect("connect");
    s.set_read_timeout(Some(T)).expect("timeout");
    s
}

/// Plain connect, EHLO (asserting STARTTLS is offered), STARTTLS, handshake.
pub fn starttls(port: u16, cfg: Arc<ClientConfig>) -> Tls {
    let mut s = connect(port);
    assert_eq!(plain_reply(&mut s).0, 220);
    let (code, lines) = plain_cmd(&mut s, "EHLO client.example");
    assert_eq!(code, 250);
    assert!(lines.iter().any(|l| l == "STARTTLS"), "{lines:?}");
    let (code, lines) = plain_cmd(&mut s, "STARTTLS");
    assert_eq!((code, lines[0].as_str()), (220, "2.0.0 Ready to start TLS"));
    handshake(s, cfg).expect("handshake")
}

/// MAIL, RCPT, DATA of a small message inside TLS; returns the final reply text.
pub fn send_over(s: &mut Tls, to: &str, subject: &str) -> String {
    assert_eq!(tls_cmd(s, "MAIL FROM:<sender@remote.example>").0, 250);
    assert_eq!(tls_cmd(s, &format!("RCPT TO:<{to}>")).0, 250);
    assert_eq!(tls_cmd(s, "DATA").0, 354);
    let (code, lines) = tls_cmd(
        s,
        &format!("Subject: {subject}\r\nFrom: sender@remote.example\r\n\r\nover TLS\r\n."),
    );
    assert_eq!(code, 250, "{lines:?}");
    lines.join(" ")
}

/// Gives a (not yet started) instance a fresh self-signed certificate and
/// names it in its main.cf; returns the certificate to trust.
pub fn add_cert(inst: &Instance) -> CertificateDer<'static> {
    let (der, cert, key) = new_cert();
    let lines = install_cert(&inst.dir, &cert, &key);
    let mut main = std::fs::read_to_string(inst.dir.join("main.cf")).expect("main.cf");
    main.push_str(&lines);
    std::fs::write(inst.dir.join("main.cf"), main).expect("main.cf");
    der
}

/// A started instance with a fresh self-signed certificate installed.
pub fn tls_instance(extra_main: &str, extra_master: &str) -> (Instance, CertificateDer<'static>) {
    let mut inst = Instance::new(Options {
        main_extra: extra_main.to_string(),
        master_extra: extra_master.to_string(),
        ..Options::default()
    });
    let der = add_cert(&inst);
    inst.start();
    (inst, der)
}

/// The first Received header of a delivered message, unfolded lines kept.
pub fn received_of(msg: &[u8]) -> String {
    let text = String::from_utf8_lossy(msg).into_owned();
    let start = text.find("Received: ").expect("Received header");
    let mut out = String::new();
    for (i, line) in text[start..].lines().enumerate() {
        if i > 0 && !line.starts_with([' ', '\t']) {
            break;
        }
        out.push_str(line);
        out.push('\n');
    }
    out
}
