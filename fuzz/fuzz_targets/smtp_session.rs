//! Fuzz target: the whole SMTP server session (smtp-proto's `server`), with
//! an in-memory driver.
//!
//! Input: one byte of options (limits, STARTTLS/AUTH offered, bare-newline
//! policy), one byte choosing how the client's bytes are cut into reads,
//! then the bytes a client sends. Checks: nothing panics; the session ends
//! (the input runs out, or the server hangs up); everything written is
//! whole reply lines (`NNN[ -]text CRLF`); content is only handed on, and a
//! message only committed, inside a transaction with recipients.

#![no_main]

use libfuzzer_sys::fuzz_target;
use postern_smtp_proto::Reply;
use postern_smtp_proto::server::{
    self, AuthStep, Config, Driver, End, RcptTo, SaslLogin, Session,
};
use std::time::Duration;

struct Fuzz<'a> {
    input: &'a [u8],
    step: usize,
    out: Vec<u8>,
}

impl Driver for Fuzz<'_> {
    async fn read(&mut self, buf: &mut [u8]) -> Result<usize, End> {
        if self.input.is_empty() {
            return Err(End::Lost);
        }
        let n = self.step.min(self.input.len()).min(buf.len()).max(1);
        buf[..n].copy_from_slice(&self.input[..n]);
        self.input = &self.input[n..];
        Ok(n)
    }
    async fn write(&mut self, bytes: &[u8]) -> Result<(), End> {
        self.out.extend_from_slice(bytes);
        Ok(())
    }
    async fn sleep(&mut self, _: Duration) {}
    async fn rcpt(&mut self, _: &Session, to: &RcptTo) -> Result<(), Reply> {
        if to.address.local_part.starts_with('x') {
            Err(Reply::new(550, None, "no"))
        } else {
            Ok(())
        }
    }
    async fn content(&mut self, s: &Session, _: Vec<u8>) -> bool {
        assert!(!s.recipients().is_empty(), "content without recipients");
        true
    }
    async fn data_end(&mut self, s: &Session) -> Reply {
        assert!(!s.recipients().is_empty(), "commit without recipients");
        Reply::new(250, None, "Ok: queued as FUZZ")
    }
    async fn auth_start(&mut self, _: &Session, _: &str, initial: Option<&str>) -> AuthStep {
        match initial {
            Some(_) => AuthStep::Success(SaslLogin {
                user: "u".into(),
                mechanism: "PLAIN".into(),
            }),
            None => AuthStep::Challenge(String::new()),
        }
    }
    async fn auth_response(&mut self, _: &Session, _: Option<&[u8]>) -> AuthStep {
        AuthStep::Refused(Reply::new(535, None, "no"))
    }
}

fuzz_target!(|data: &[u8]| {
    if data.len() < 2 {
        return;
    }
    let (head, input) = data.split_at(2);
    let opts = head[0];
    let cfg = Config {
        hostname: "mx.example.test".into(),
        message_size_limit: if opts & 1 != 0 { 64 } else { 0 },
        recipient_limit: if opts & 2 != 0 { 2 } else { 100 },
        starttls: opts & 4 != 0,
        sasl: opts & 8 != 0,
        tls_auth_only: opts & 16 != 0,
        reject_bare_newline: opts & 32 != 0,
        hard_error_limit: 5,
        ..Config::default()
    };
    let mut driver = Fuzz {
        input,
        step: usize::from(head[1]).max(1),
        out: Vec::new(),
    };
    let mut session = Session::new(cfg);
    // STARTTLS is not fuzzed (the default start_tls hook refuses it).
    let _ = server::block_on(session.run(&mut driver));
    for line in driver.out.split_inclusive(|&b| b == b'\n') {
        assert!(line.ends_with(b"\r\n"), "reply line not CRLF-terminated: {line:?}");
        assert!(line.len() >= 5, "short reply line: {line:?}");
        assert!(line[..3].iter().all(u8::is_ascii_digit), "no code: {line:?}");
        assert!(line[3] == b' ' || line[3] == b'-', "bad separator: {line:?}");
    }
});
