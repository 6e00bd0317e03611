//! The client's commands on the wire (RFC 5321 section 4.1.1 and the
//! extensions' RFCs), each one line ending in CRLF.
//!
//! ```text
//! mail   = "MAIL FROM:" Reverse-path [SP Mail-parameters] CRLF
//! rcpt   = "RCPT TO:" Forward-path [SP Rcpt-parameters] CRLF
//! bdat   = "BDAT" SP chunk-size [SP "LAST"] CRLF          ; RFC 3030
//! auth   = "AUTH" SP mechanism [SP initial-response] CRLF  ; RFC 4954
//! xtext  = *( xchar / hexchar )                            ; RFC 3461
//! xchar  = %d33-42 / %d44-60 / %d62-126                    ; not "+" or "="
//! hexchar = "+" 2HEXDIG                                    ; upper case
//! ```
//!
//! SECURITY: every command is checked for CR, LF and NUL before it is
//! appended ([`EncodeError::LineBreak`]): an address or parameter that
//! reached us from a queue file or a configuration must never turn into a
//! second command (SMTP command injection). MAIL and RCPT carry only the
//! parameters the server announced in its EHLO reply ([`Capabilities`]).

use std::fmt;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;

use super::caps::Capabilities;
use super::reply::ServerReply;
use super::transaction::{Envelope, Recipient};
use crate::address::Mailbox;
use crate::params::{Body, Notify};

/// Why a command could not be encoded.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum EncodeError {
    /// The command would contain CR, LF or NUL (injection attempt or a
    /// corrupt address).
    LineBreak,
    /// A required argument is empty or malformed (an empty or spaced
    /// EHLO name, a bad ORCPT address type).
    BadArgument(&'static str),
}

impl fmt::Display for EncodeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            EncodeError::LineBreak => f.write_str("line break or NUL inside an SMTP command"),
            EncodeError::BadArgument(what) => write!(f, "bad SMTP command argument: {what}"),
        }
    }
}

impl std::error::Error for EncodeError {}

/// Appends `line` CRLF to `out` after checking it holds no CR, LF or NUL.
fn finish(line: String, out: &mut Vec<u8>) -> Result<(), EncodeError> {
    if line.bytes().any(|b| matches!(b, b'\r' | b'\n' | 0)) {
        return Err(EncodeError::LineBreak);
    }
    out.extend_from_slice(line.as_bytes());
    out.extend_from_slice(b"\r\n");
    Ok(())
}

/// Encodes text as RFC 3461 xtext: every octet outside `!`..`~`, and `+`
/// and `=`, becomes `+XX` (upper-case hex); UTF-8 is encoded octet by octet.
pub fn xtext_encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if (b'!'..=b'~').contains(&b) && b != b'+' && b != b'=' {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("+{b:02X}"));
        }
    }
    out
}

fn check_name(name: &str) -> Result<(), EncodeError> {
    if name.bytes().any(|b| matches!(b, b'\r' | b'\n' | 0)) {
        return Err(EncodeError::LineBreak);
    }
    if name.is_empty() || name.bytes().any(|b| b.is_ascii_whitespace() || b < 0x20) {
        return Err(EncodeError::BadArgument("HELO name"));
    }
    Ok(())
}

/// `EHLO name` (RFC 5321): the ESMTP greeting.
pub fn ehlo(name: &str, out: &mut Vec<u8>) -> Result<(), EncodeError> {
    check_name(name)?;
    finish(format!("EHLO {name}"), out)
}

/// `HELO name`: the fallback for servers that refuse EHLO.
pub fn helo(name: &str, out: &mut Vec<u8>) -> Result<(), EncodeError> {
    check_name(name)?;
    finish(format!("HELO {name}"), out)
}

/// `LHLO name` (RFC 2033): LMTP's EHLO.
pub fn lhlo(name: &str, out: &mut Vec<u8>) -> Result<(), EncodeError> {
    check_name(name)?;
    finish(format!("LHLO {name}"), out)
}

/// Whether the envelope needs SMTPUTF8: the sender asked for it, or an
/// address is not ASCII (it cannot be sent any other way).
pub(crate) fn needs_smtputf8(env: &Envelope) -> bool {
    let sender_utf8 = match &env.sender {
        crate::ReversePath::Null => false,
        crate::ReversePath::Mailbox(m) => !m.is_ascii(),
    };
    env.smtputf8 || sender_utf8 || env.recipients.iter().any(|r| !r.address.is_ascii())
}

/// `MAIL FROM:<sender>` with the parameters the server announced: SIZE=
/// (with SIZE), BODY=8BITMIME (8-bit content, with 8BITMIME), SMTPUTF8
/// (when needed, with SMTPUTF8), RET= and ENVID= (xtext; with DSN).
pub fn mail_from(
    env: &Envelope,
    caps: &Capabilities,
    out: &mut Vec<u8>,
) -> Result<(), EncodeError> {
    let mut line = format!("MAIL FROM:{}", env.sender);
    if caps.size.is_some() {
        line.push_str(&format!(" SIZE={}", env.size));
    }
    if env.eight_bit && caps.eightbitmime {
        line.push_str(" BODY=8BITMIME");
    }
    if needs_smtputf8(env) && caps.smtputf8 {
        line.push_str(" SMTPUTF8");
    }
    if caps.dsn {
        if let Some(ret) = env.ret {
            line.push_str(&format!(" RET={ret}"));
        }
        if let Some(id) = &env.envid {
            line.push_str(" ENVID=");
            line.push_str(&xtext_encode(id));
        }
    }
    finish(line, out)
}

/// `RCPT TO:<address>` with NOTIFY= and ORCPT= (`type;xtext`) when the
/// server announced DSN.
pub fn rcpt_to(
    rcpt: &Recipient,
    caps: &Capabilities,
    out: &mut Vec<u8>,
) -> Result<(), EncodeError> {
    let mut line = format!("RCPT TO:<{}>", rcpt.address);
    if caps.dsn {
        match rcpt.notify {
            Some(Notify::Never) => line.push_str(" NOTIFY=NEVER"),
            Some(Notify::On {
                success,
                failure,
                delay,
            }) => {
                let words: Vec<&str> =
                    [(success, "SUCCESS"), (failure, "FAILURE"), (delay, "DELAY")]
                        .iter()
                        .filter(|(on, _)| *on)
                        .map(|(_, w)| *w)
                        .collect();
                if !words.is_empty() {
                    line.push_str(" NOTIFY=");
                    line.push_str(&words.join(","));
                }
            }
            None => {}
        }
        if let Some(o) = &rcpt.orcpt {
            let type_ok = !o.addr_type.is_empty()
                && o.addr_type
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '-');
            if !type_ok {
                return Err(EncodeError::BadArgument("ORCPT address type"));
            }
            line.push_str(&format!(
                " ORCPT={};{}",
                o.addr_type,
                xtext_encode(&o.address)
            ));
        }
    }
    finish(line, out)
}

/// `RCPT TO:<address>` without parameters (a probe, or a plain server).
pub fn rcpt_to_plain(address: &Mailbox, out: &mut Vec<u8>) -> Result<(), EncodeError> {
    finish(format!("RCPT TO:<{address}>"), out)
}

/// `DATA`: after its 354 the dot-stuffed message follows.
pub fn data(out: &mut Vec<u8>) {
    out.extend_from_slice(b"DATA\r\n");
}

/// `BDAT n` or `BDAT n LAST` (RFC 3030): exactly n octets follow.
pub fn bdat(size: u64, last: bool, out: &mut Vec<u8>) {
    let line = if last {
        format!("BDAT {size} LAST\r\n")
    } else {
        format!("BDAT {size}\r\n")
    };
    out.extend_from_slice(line.as_bytes());
}

/// `RSET`: abandons the transaction so the connection can be reused.
pub fn rset(out: &mut Vec<u8>) {
    out.extend_from_slice(b"RSET\r\n");
}

/// `QUIT`: the polite end of a session.
pub fn quit(out: &mut Vec<u8>) {
    out.extend_from_slice(b"QUIT\r\n");
}

/// `STARTTLS` (RFC 3207): after its 220 the TLS handshake starts.
pub fn starttls(out: &mut Vec<u8>) {
    out.extend_from_slice(b"STARTTLS\r\n");
}

/// `BODY=` keyword for a [`Body`] value (for drivers that build their own
/// MAIL parameters).
pub fn body_keyword(body: Body) -> &'static str {
    match body {
        Body::SevenBit => "7BIT",
        Body::EightBitMime => "8BITMIME",
        Body::BinaryMime => "BINARYMIME",
    }
}

/// What to do after a reply during AUTH.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum AuthStep {
    /// The next line was appended to `out`: send it and read a reply.
    Send,
    /// 235: authenticated.
    Authenticated,
    /// The server refused (the reply says whether 4xx or 5xx); Postfix
    /// logs "SASL authentication failed; server X said: ...".
    Failed(ServerReply),
}

#[derive(Clone, Debug)]
enum Mechanism {
    Plain { authzid: String },
    Login,
}

/// A client AUTH exchange (RFC 4954) for PLAIN (RFC 4616, with the initial
/// response) or LOGIN (the username and password prompts): the secrets are
/// base64-encoded here so a driver only moves lines.
#[derive(Clone)]
pub struct AuthClient {
    mechanism: Mechanism,
    user: String,
    password: String,
    /// Replies seen so far after `AUTH`.
    step: u8,
}

impl fmt::Debug for AuthClient {
    /// Never shows the password.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AuthClient")
            .field("mechanism", &self.mechanism)
            .field("user", &self.user)
            .field("step", &self.step)
            .finish_non_exhaustive()
    }
}

impl AuthClient {
    /// AUTH PLAIN as `authzid` (empty: the same as `user`).
    pub fn plain(authzid: &str, user: &str, password: &str) -> AuthClient {
        AuthClient {
            mechanism: Mechanism::Plain {
                authzid: authzid.to_string(),
            },
            user: user.to_string(),
            password: password.to_string(),
            step: 0,
        }
    }

    /// AUTH LOGIN: the user name and the password in answer to prompts.
    pub fn login(user: &str, password: &str) -> AuthClient {
        AuthClient {
            mechanism: Mechanism::Login,
            user: user.to_string(),
            password: password.to_string(),
            step: 0,
        }
    }

    /// Appends the `AUTH` command (PLAIN carries its initial response).
    pub fn start(&mut self, out: &mut Vec<u8>) -> Result<(), EncodeError> {
        self.step = 0;
        match &self.mechanism {
            Mechanism::Plain { authzid } => {
                let mut msg = Vec::new();
                msg.extend_from_slice(authzid.as_bytes());
                msg.push(0);
                msg.extend_from_slice(self.user.as_bytes());
                msg.push(0);
                msg.extend_from_slice(self.password.as_bytes());
                finish(format!("AUTH PLAIN {}", BASE64.encode(msg)), out)
            }
            Mechanism::Login => finish("AUTH LOGIN".to_string(), out),
        }
    }

    /// Handles the server's reply; on [`AuthStep::Send`] the next line is
    /// in `out`. A challenge this mechanism does not expect is cancelled
    /// with `*` (RFC 4954 section 4), and the server's answer is the failure.
    pub fn on_reply(&mut self, reply: &ServerReply, out: &mut Vec<u8>) -> AuthStep {
        self.step = self.step.saturating_add(1);
        if reply.code == 235 {
            return AuthStep::Authenticated;
        }
        if reply.code != 334 {
            return AuthStep::Failed(reply.clone());
        }
        let answer = match (&self.mechanism, self.step) {
            (Mechanism::Login, 1) => Some(BASE64.encode(self.user.as_bytes())),
            (Mechanism::Login, 2) => Some(BASE64.encode(self.password.as_bytes())),
            _ => None,
        };
        out.extend_from_slice(answer.as_deref().unwrap_or("*").as_bytes());
        out.extend_from_slice(b"\r\n");
        AuthStep::Send
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::params::{Orcpt, Ret};
    use crate::{Mailbox, ReversePath};

    fn mb(s: &str) -> Mailbox {
        Mailbox::parse(s).unwrap()
    }

    fn s(f: impl FnOnce(&mut Vec<u8>) -> Result<(), EncodeError>) -> String {
        let mut out = Vec::new();
        f(&mut out).unwrap();
        String::from_utf8(out).unwrap()
    }

    fn env() -> Envelope {
        Envelope {
            sender: ReversePath::Mailbox(mb("a@example.org")),
            recipients: vec![Recipient::new(mb("b@example.net"))],
            ret: Some(Ret::Hdrs),
            envid: Some("id+1=x y".into()),
            size: 1234,
            eight_bit: true,
            smtputf8: false,
        }
    }

    #[test]
    fn xtext() {
        assert_eq!(xtext_encode("a+b=c d"), "a+2Bb+3Dc+20d");
        assert_eq!(xtext_encode("rfc822;x@y"), "rfc822;x@y");
        assert_eq!(xtext_encode("é"), "+C3+A9");
        for t in ["a+b=c d\x01", "é;<>", ""] {
            assert_eq!(crate::xtext_decode(&xtext_encode(t)).as_deref(), Some(t));
        }
    }

    #[test]
    fn greetings() {
        assert_eq!(s(|o| ehlo("client.example", o)), "EHLO client.example\r\n");
        assert_eq!(s(|o| helo("client.example", o)), "HELO client.example\r\n");
        assert_eq!(s(|o| lhlo("client.example", o)), "LHLO client.example\r\n");
        let mut out = Vec::new();
        assert_eq!(ehlo("a\r\nMAIL", &mut out), Err(EncodeError::LineBreak));
        assert_eq!(
            ehlo("", &mut out),
            Err(EncodeError::BadArgument("HELO name"))
        );
        assert_eq!(
            ehlo("a b", &mut out),
            Err(EncodeError::BadArgument("HELO name"))
        );
        assert!(out.is_empty());
    }

    #[test]
    fn mail_params_follow_the_capabilities() {
        let e = env();
        let none = Capabilities::default();
        assert_eq!(
            s(|o| mail_from(&e, &none, o)),
            "MAIL FROM:<a@example.org>\r\n"
        );
        let all = Capabilities {
            size: Some(0),
            eightbitmime: true,
            smtputf8: true,
            dsn: true,
            ..Capabilities::default()
        };
        assert_eq!(
            s(|o| mail_from(&e, &all, o)),
            "MAIL FROM:<a@example.org> SIZE=1234 BODY=8BITMIME RET=HDRS ENVID=id+2B1+3Dx+20y\r\n"
        );
        let mut e = env();
        e.sender = ReversePath::Null;
        e.eight_bit = false;
        e.smtputf8 = true;
        e.envid = None;
        e.ret = None;
        assert_eq!(
            s(|o| mail_from(&e, &all, o)),
            "MAIL FROM:<> SIZE=1234 SMTPUTF8\r\n"
        );
    }

    #[test]
    fn rcpt_params_only_with_dsn() {
        let mut r = Recipient::new(mb("b@example.net"));
        r.notify = Some(Notify::On {
            success: true,
            failure: true,
            delay: false,
        });
        r.orcpt = Some(Orcpt {
            addr_type: "rfc822".into(),
            address: "B+x=y@example.net".into(),
        });
        let dsn = Capabilities {
            dsn: true,
            ..Capabilities::default()
        };
        assert_eq!(
            s(|o| rcpt_to(&r, &dsn, o)),
            "RCPT TO:<b@example.net> NOTIFY=SUCCESS,FAILURE ORCPT=rfc822;B+2Bx+3Dy@example.net\r\n"
        );
        assert_eq!(
            s(|o| rcpt_to(&r, &Capabilities::default(), o)),
            "RCPT TO:<b@example.net>\r\n"
        );
        r.notify = Some(Notify::Never);
        r.orcpt = None;
        assert_eq!(
            s(|o| rcpt_to(&r, &dsn, o)),
            "RCPT TO:<b@example.net> NOTIFY=NEVER\r\n"
        );
        r.orcpt = Some(Orcpt {
            addr_type: "rfc 822".into(),
            address: "x".into(),
        });
        assert_eq!(
            rcpt_to(&r, &dsn, &mut Vec::new()),
            Err(EncodeError::BadArgument("ORCPT address type"))
        );
    }

    #[test]
    fn refuses_line_breaks_in_addresses() {
        let evil = Mailbox {
            local_part: "a".into(),
            domain: "b\r\nRCPT TO:<c@d>".into(),
        };
        let mut out = Vec::new();
        assert_eq!(
            rcpt_to(
                &Recipient::new(evil.clone()),
                &Capabilities::default(),
                &mut out
            ),
            Err(EncodeError::LineBreak)
        );
        let mut e = env();
        e.sender = ReversePath::Mailbox(evil);
        assert_eq!(
            mail_from(&e, &Capabilities::default(), &mut out),
            Err(EncodeError::LineBreak)
        );
        assert!(out.is_empty());
    }

    #[test]
    fn simple_commands() {
        let mut out = Vec::new();
        data(&mut out);
        bdat(10, false, &mut out);
        bdat(0, true, &mut out);
        rset(&mut out);
        quit(&mut out);
        starttls(&mut out);
        assert_eq!(
            out,
            b"DATA\r\nBDAT 10\r\nBDAT 0 LAST\r\nRSET\r\nQUIT\r\nSTARTTLS\r\n"
        );
        assert_eq!(body_keyword(Body::EightBitMime), "8BITMIME");
    }

    #[test]
    fn auth_plain() {
        let mut a = AuthClient::plain("", "tim", "tanstaaftanstaaf");
        let mut out = Vec::new();
        a.start(&mut out).unwrap();
        // RFC 4616 section 4's example.
        assert_eq!(out, b"AUTH PLAIN AHRpbQB0YW5zdGFhZnRhbnN0YWFm\r\n");
        assert_eq!(
            a.on_reply(&ServerReply::new(235, &["2.7.0 ok"]), &mut out),
            AuthStep::Authenticated
        );
        let mut out = Vec::new();
        a.start(&mut out).unwrap();
        out.clear();
        assert_eq!(
            a.on_reply(&ServerReply::new(334, &[""]), &mut out),
            AuthStep::Send
        );
        assert_eq!(out, b"*\r\n", "an unexpected challenge is cancelled");
        let no = ServerReply::new(535, &["5.7.8 no"]);
        assert_eq!(a.on_reply(&no, &mut out), AuthStep::Failed(no.clone()));
        assert!(!format!("{a:?}").contains("tanstaaf"));
    }

    #[test]
    fn auth_login() {
        let mut a = AuthClient::login("user", "pass");
        let mut out = Vec::new();
        a.start(&mut out).unwrap();
        assert_eq!(out, b"AUTH LOGIN\r\n");
        out.clear();
        let r = a.on_reply(&ServerReply::new(334, &["VXNlcm5hbWU6"]), &mut out);
        assert_eq!((r, out.as_slice()), (AuthStep::Send, &b"dXNlcg==\r\n"[..]));
        out.clear();
        let r = a.on_reply(&ServerReply::new(334, &["UGFzc3dvcmQ6"]), &mut out);
        assert_eq!((r, out.as_slice()), (AuthStep::Send, &b"cGFzcw==\r\n"[..]));
        assert_eq!(
            a.on_reply(&ServerReply::new(235, &["ok"]), &mut out),
            AuthStep::Authenticated
        );
        let mut bad = AuthClient::login("u\r\n", "p");
        bad.start(&mut Vec::new()).unwrap();
        let mut out = Vec::new();
        bad.on_reply(&ServerReply::new(334, &[""]), &mut out);
        assert!(
            !out[..out.len() - 2].contains(&b'\n'),
            "base64 never breaks lines"
        );
    }
}
