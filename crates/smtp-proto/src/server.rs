//! The SMTP server session (RFC 5321) without I/O: states, the command
//! table, replies as values, limits, and the hooks where policy decides.
//!
//! A [`Session`] holds everything the protocol knows about one client: the
//! line reader with its pipelined input, the HELO name, whether TLS and
//! AUTH are in force, the mail transaction (envelope, DATA or BDAT state),
//! error and junk counters, and the per-command statistics of Postfix's
//! disconnect line. [`Session::run`] plays the protocol against a
//! [`Driver`], which is everything outside: the driver reads and writes the
//! bytes (with its own timeouts), does the TLS handshake, and answers the
//! policy hooks (connect, HELO, MAIL, RCPT, DATA, each content piece, end
//! of data, AUTH steps) as async calls — a tokio smtpd talks to cleanup and
//! the auth service there, `sendmail -bs` to postdrop, DNS checks, policy
//! services and milters will plug in there, and the unit tests below use
//! an in-memory driver. This module never touches a socket or a file.
//!
//! States: before HELO/EHLO (`helo() == None`), after it, in a transaction
//! (`sender() == Some(..)`, recipients being collected), in DATA (inside
//! [`Session::run`], reading until CRLF.CRLF), between BDAT chunks (the
//! transaction holds a [`ChunkDecoder`]), and in an AUTH exchange. STARTTLS
//! and the end of a message return to an earlier state; QUIT, the hard
//! error limit and a protocol violation that would put the stream out of
//! step end the session.
//!
//! Replies are queued and written when the client has no more pipelined
//! commands waiting in our buffer (RFC 2920), and always before we wait for
//! input. When a limit is hit we drain to the end of the line or of the
//! data before replying, so the stream never gets out of step.
//!
//! SECURITY: the rules against desynchronisation live here, so every driver
//! has them. DATA must be the last command of a pipelined group: bytes
//! after it are answered 554 and the session ends, since they may be
//! message text. The end of data is only CRLF.CRLF ([`DataDecoder`]). BDAT
//! consumes exactly its size, also when it is refused; a BDAT whose size
//! cannot be read ends the session. After "220 Ready to start TLS" every
//! byte pipelined behind STARTTLS is discarded (CVE-2011-0411) and, after
//! the handshake, the session starts afresh (no HELO, no transaction, no
//! login), as RFC 3207 says.

use crate::{
    ChunkDecoder, Command, CommandError, DataDecoder, DataProgress, EnhancedCode, ForwardPath,
    Line, LineReader, MailParams, Mailbox, Notify, Orcpt, Param, ParseOptions, RcptParams, Reply,
    ReversePath, parse_command,
};
use std::time::Duration;

/// Why a session ended early.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum End {
    /// The client went away (end of input or a read/write error).
    Lost,
    /// The client was too slow (the driver's timeout).
    Timeout,
    /// We hung up on the client (the reply was already sent).
    HungUp,
}

/// What a session offers and its limits (smtpd reads them from main.cf).
#[derive(Clone, Debug)]
pub struct Config {
    /// Our name: EHLO's first line, HELO's reply, the 421 texts.
    pub hostname: String,
    /// The text after "220 " in the greeting.
    pub greeting: String,
    /// message_size_limit in octets received (0 = none).
    pub message_size_limit: u64,
    /// Recipients per transaction; more get 452 4.5.3.
    pub recipient_limit: usize,
    /// At this many errors: 421 and hang up.
    pub hard_error_limit: u32,
    /// Past this many errors: pause `error_sleep` after each error reply.
    pub soft_error_limit: u32,
    /// The pause past the soft limit.
    pub error_sleep: Duration,
    /// RSET/NOOP/VRFY/HELP past this many count as errors.
    pub junk_limit: u32,
    /// Longest command line, CRLF excluded.
    pub line_limit: usize,
    /// No VRFY (502) and not advertised.
    pub vrfy_disabled: bool,
    /// MAIL needs HELO/EHLO first.
    pub helo_required: bool,
    /// Refuse bare LF in commands (500) and in content (550).
    pub reject_bare_newline: bool,
    /// Offer SMTPUTF8 and accept UTF-8 in commands.
    pub smtputf8: bool,
    /// strict_rfc821_envelopes for the command parser.
    pub strict_envelopes: bool,
    /// STARTTLS can be offered (a certificate is loaded; the driver does
    /// the handshake in [`Driver::start_tls`]).
    pub starttls: bool,
    /// MAIL needs TLS first (530 5.7.0).
    pub require_tls: bool,
    /// AUTH is enabled.
    pub sasl: bool,
    /// AUTH only inside TLS.
    pub tls_auth_only: bool,
    /// The mechanisms after "AUTH " in the EHLO reply.
    pub sasl_mechanisms: String,
    /// The domain that completes `RCPT TO:<Postmaster>` (myorigin).
    pub postmaster_domain: String,
    /// Offer DSN (RFC 3461): RET and ENVID on MAIL, NOTIFY and ORCPT on
    /// RCPT; without it those parameters are refused (555).
    pub dsn: bool,
    /// Size of the content pieces handed to [`Driver::content`].
    pub content_chunk: usize,
}

impl Default for Config {
    /// Postfix's defaults, no TLS, no AUTH.
    fn default() -> Self {
        Config {
            hostname: "localhost".into(),
            greeting: "localhost ESMTP".into(),
            message_size_limit: 10_240_000,
            recipient_limit: 1000,
            hard_error_limit: 20,
            soft_error_limit: 10,
            error_sleep: Duration::from_secs(1),
            junk_limit: 100,
            line_limit: 2048,
            vrfy_disabled: true,
            helo_required: false,
            reject_bare_newline: false,
            smtputf8: true,
            strict_envelopes: false,
            starttls: false,
            require_tls: false,
            sasl: false,
            tls_auth_only: true,
            sasl_mechanisms: String::new(),
            postmaster_domain: "localhost".into(),
            dsn: true,
            content_chunk: 64 * 1024,
        }
    }
}

/// Who the client authenticated as, and how.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SaslLogin {
    /// The login as the checker canonicalised it.
    pub user: String,
    /// The mechanism used, e.g. "PLAIN" (for logs: sasl_method=).
    pub mechanism: String,
}

/// A recipient as the policy sees it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RcptTo {
    /// The address recorded in the envelope (`<Postmaster>` completed with
    /// [`Config::postmaster_domain`]).
    pub address: Mailbox,
    /// RFC 3461 NOTIFY=, when given.
    pub notify: Option<Notify>,
    /// RFC 3461 ORCPT=, when given.
    pub orcpt: Option<Orcpt>,
}

/// One step of an AUTH exchange, as the driver answers it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum AuthStep {
    /// Send `334 <text>` (base64) and hand back the client's next line.
    Challenge(String),
    /// Logged in: 235 2.7.0.
    Success(SaslLogin),
    /// Refused; the reply counts as an error (a bad password, a bad
    /// exchange, an unknown mechanism).
    Refused(Reply),
    /// Could not check now (454); not the client's error.
    TempFail(Reply),
}

/// Events a driver may log (smtpd logs them with Postfix's words).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Notice {
    /// The hard error limit was reached: 421 and hang up.
    TooManyErrors,
    /// A BDAT line whose size could not be read: reply and hang up.
    BadBdat,
    /// Plaintext pipelined after STARTTLS was thrown away.
    PlaintextDiscarded {
        /// How many bytes.
        bytes: usize,
    },
    /// Commands after DATA in one pipelined group: 554 and hang up.
    ImproperPipelining,
    /// The message went past message_size_limit (552).
    MessageTooBig {
        /// Octets received.
        size: u64,
    },
    /// Bare LF or CR in the content with bare newlines refused (550).
    BareNewlineContent,
}

/// What is outside the session: I/O, TLS, and the policy hooks. An `Err`
/// reply from a hook is sent as it is; a 5xx one also counts as an error.
///
/// Single-threaded drivers are the design (one client per smtpd process,
/// or sendmail's stdin), so the futures need not be `Send`.
#[allow(async_fn_in_trait)]
pub trait Driver {
    /// Reads some input into `buf`: Ok(n) with n > 0, or `Err(End::Lost)`
    /// at the end of input, `Err(End::Timeout)` when the client is too slow.
    async fn read(&mut self, buf: &mut [u8]) -> Result<usize, End>;
    /// Writes all of `bytes` (queued replies) to the client.
    async fn write(&mut self, bytes: &[u8]) -> Result<(), End>;
    /// Pauses (the error sleep past the soft error limit).
    async fn sleep(&mut self, d: Duration);
    /// Does the server side of a TLS handshake after "220 Ready to start
    /// TLS" was written; an error ends the session (the driver logs it).
    async fn start_tls(&mut self, s: &Session) -> Result<(), End> {
        let _ = s;
        Err(End::HungUp)
    }

    /// A client connected: before the greeting. A refusal is sent instead
    /// of the greeting and the session ends.
    async fn connect(&mut self, s: &Session) -> Result<(), Reply> {
        let _ = s;
        Ok(())
    }
    /// HELO or EHLO with this name (`s.helo()` is still the old one).
    async fn helo(&mut self, s: &Session, domain: &str, esmtp: bool) -> Result<(), Reply> {
        let _ = (s, domain, esmtp);
        Ok(())
    }
    /// MAIL, after the session's own checks; Ok starts the transaction.
    async fn mail(
        &mut self,
        s: &Session,
        from: &ReversePath,
        params: &[Param],
    ) -> Result<(), Reply> {
        let _ = (s, from, params);
        Ok(())
    }
    /// RCPT, after the session's own checks; Ok adds the recipient (and the
    /// driver may open its queue file here: `s.recipients()` is empty for
    /// the first one).
    async fn rcpt(&mut self, s: &Session, to: &RcptTo) -> Result<(), Reply>;
    /// DATA or the first BDAT, before any content is read.
    async fn data(&mut self, s: &Session) -> Result<(), Reply> {
        let _ = s;
        Ok(())
    }
    /// A piece of LF-normalized content; false when it could not be kept
    /// (the rest is read and dropped, the end of data gets 451).
    async fn content(&mut self, s: &Session, data: Vec<u8>) -> bool;
    /// The end of an acceptable message: commit it and give the reply
    /// (250 only once it is safe). Never counted as an error.
    async fn data_end(&mut self, s: &Session) -> Reply;
    /// AUTH with this mechanism (as sent) and initial response, after the
    /// session's checks (enabled, offered, EHLO, no login, no transaction).
    async fn auth_start(
        &mut self,
        s: &Session,
        mechanism: &str,
        initial: Option<&str>,
    ) -> AuthStep {
        let _ = (s, mechanism, initial);
        AuthStep::Refused(reply(
            504,
            (5, 5, 4),
            "Unsupported authentication mechanism",
        ))
    }
    /// The client's answer to a challenge (None: the line was too long).
    async fn auth_response(&mut self, s: &Session, line: Option<&[u8]>) -> AuthStep {
        let _ = (s, line);
        AuthStep::Refused(reply(501, (5, 7, 0), "Authentication aborted"))
    }
    /// The transaction is over (committed, refused, reset, or dropped):
    /// forget what was kept for it.
    fn reset(&mut self) {}
    /// Something worth a log line happened.
    fn notice(&mut self, s: &Session, n: Notice) {
        let _ = (s, n);
    }
}

/// Runs a session (or any future) whose driver does blocking I/O, so it is
/// never left waiting to be woken: for drivers without an async runtime
/// (`sendmail -bs` on its stdin, the fuzz target).
pub fn block_on<F: std::future::Future>(f: F) -> F::Output {
    let mut f = std::pin::pin!(f);
    let mut cx = std::task::Context::from_waker(std::task::Waker::noop());
    loop {
        if let std::task::Poll::Ready(v) = f.as_mut().poll(&mut cx) {
            return v;
        }
    }
}

/// A reply with an enhanced status code.
pub fn reply(code: u16, ec: (u8, u16, u16), text: impl Into<String>) -> Reply {
    Reply::new(code, Some(EnhancedCode(ec.0, ec.1, ec.2)), text)
}

/// One row of the command table: the statistics key (Postfix's, in the
/// order of its disconnect line) and the name in "after X" log lines.
struct Verb {
    key: &'static str,
    name: &'static str,
    /// RSET, NOOP, VRFY, HELP: counted against the junk limit.
    junk: bool,
}

/// The command table, in Postfix's order (log tools read it in this order).
const VERBS: [Verb; 14] = [
    Verb {
        key: "helo",
        name: "HELO",
        junk: false,
    },
    Verb {
        key: "ehlo",
        name: "EHLO",
        junk: false,
    },
    Verb {
        key: "starttls",
        name: "STARTTLS",
        junk: false,
    },
    Verb {
        key: "auth",
        name: "AUTH",
        junk: false,
    },
    Verb {
        key: "mail",
        name: "MAIL",
        junk: false,
    },
    Verb {
        key: "rcpt",
        name: "RCPT",
        junk: false,
    },
    Verb {
        key: "data",
        name: "DATA",
        junk: false,
    },
    Verb {
        key: "bdat",
        name: "BDAT",
        junk: false,
    },
    Verb {
        key: "rset",
        name: "RSET",
        junk: true,
    },
    Verb {
        key: "noop",
        name: "NOOP",
        junk: true,
    },
    Verb {
        key: "vrfy",
        name: "VRFY",
        junk: true,
    },
    Verb {
        key: "help",
        name: "HELP",
        junk: true,
    },
    Verb {
        key: "quit",
        name: "QUIT",
        junk: false,
    },
    Verb {
        key: "unknown",
        name: "UNKNOWN",
        junk: false,
    },
];

/// The row of `cmd` in [`VERBS`] (EXPN and ETRN count as "unknown", as
/// Postfix counts commands it does not offer).
fn verb(cmd: &Command) -> usize {
    match cmd {
        Command::Helo { .. } => 0,
        Command::Ehlo { .. } => 1,
        Command::StartTls => 2,
        Command::Auth { .. } => 3,
        Command::Mail { .. } => 4,
        Command::Rcpt { .. } => 5,
        Command::Data => 6,
        Command::Bdat { .. } => 7,
        Command::Rset => 8,
        Command::Noop { .. } => 9,
        Command::Vrfy { .. } => 10,
        Command::Help { .. } => 11,
        Command::Quit => 12,
        Command::Expn { .. } | Command::Etrn { .. } => 13,
    }
}

const BDAT: usize = 7;
const UNKNOWN: usize = 13;

/// The mail transaction.
#[derive(Debug)]
struct Transaction {
    sender: ReversePath,
    /// The MAIL parameters, checked (SIZE, BODY, SMTPUTF8, RET, ENVID).
    params: MailParams,
    recipients: Vec<Mailbox>,
    /// Set by the first BDAT: the message comes in chunks (and DATA may no
    /// longer be used in this transaction, RFC 3030).
    chunks: Option<Chunks>,
}

/// A message arriving in BDAT chunks.
#[derive(Debug)]
struct Chunks {
    decoder: ChunkDecoder,
    /// False once the driver could not keep a piece.
    content_ok: bool,
}

/// One SMTP server session; see the module documentation.
#[derive(Debug)]
pub struct Session {
    config: Config,
    reader: LineReader,
    out: Vec<u8>,
    helo: Option<String>,
    esmtp: bool,
    tls: bool,
    sasl: Option<SaslLogin>,
    tx: Option<Transaction>,
    errors: u32,
    junk: u32,
    /// Per row of [`VERBS`]: commands seen, and how many got a 4xx/5xx.
    counts: [u32; VERBS.len()],
    failed: [u32; VERBS.len()],
    seen: [bool; VERBS.len()],
    /// The row of the command being answered, until its first 4xx/5xx
    /// reply has been counted.
    current: Option<usize>,
    last_command: &'static str,
}

impl Session {
    /// A session before the greeting.
    pub fn new(config: Config) -> Session {
        Session {
            reader: LineReader::new(config.line_limit),
            config,
            out: Vec::with_capacity(512),
            helo: None,
            esmtp: false,
            tls: false,
            sasl: None,
            tx: None,
            errors: 0,
            junk: 0,
            counts: [0; VERBS.len()],
            failed: [0; VERBS.len()],
            seen: [false; VERBS.len()],
            current: None,
            last_command: "CONNECT",
        }
    }

    /// The configuration.
    pub fn config(&self) -> &Config {
        &self.config
    }

    /// The HELO/EHLO name, once given (and not forgotten by STARTTLS).
    pub fn helo(&self) -> Option<&str> {
        self.helo.as_deref()
    }

    /// True after EHLO.
    pub fn esmtp(&self) -> bool {
        self.esmtp
    }

    /// True once TLS is in force.
    pub fn tls_active(&self) -> bool {
        self.tls
    }

    /// Records that TLS is in force before the session starts (implicit
    /// TLS, RFC 8314: the driver did the handshake before [`Session::run`]).
    pub fn set_tls_active(&mut self) {
        self.tls = true;
    }

    /// The login, after a successful AUTH.
    pub fn sasl(&self) -> Option<&SaslLogin> {
        self.sasl.as_ref()
    }

    /// The sender of the current transaction, or None outside a
    /// transaction.
    pub fn sender(&self) -> Option<&ReversePath> {
        self.tx.as_ref().map(|t| &t.sender)
    }

    /// The current transaction's MAIL parameters (DSN's RET and ENVID for
    /// the queue file), or None outside a transaction.
    pub fn mail_params(&self) -> Option<&MailParams> {
        self.tx.as_ref().map(|t| &t.params)
    }

    /// The recipients accepted so far in the current transaction.
    pub fn recipients(&self) -> &[Mailbox] {
        self.tx.as_ref().map_or(&[], |t| t.recipients.as_slice())
    }

    /// The last command seen, for "lost connection after X" ("CONNECT"
    /// before the first).
    pub fn last_command(&self) -> &'static str {
        self.last_command
    }

    /// The protocol name for logs and Received (RFC 3848): SMTP/ESMTP, plus
    /// S with TLS and A after AUTH.
    pub fn proto(&self) -> &'static str {
        match (self.esmtp, self.tls, self.sasl.is_some()) {
            (false, false, _) => "SMTP",
            (false, true, _) => "SMTPS",
            (true, false, false) => "ESMTP",
            (true, true, false) => "ESMTPS",
            (true, false, true) => "ESMTPA",
            (true, true, true) => "ESMTPSA",
        }
    }

    /// The command statistics of Postfix's disconnect line, e.g.
    /// `ehlo=1 mail=1 rcpt=0/1 quit=1 commands=3/4`: "name=N", or
    /// "name=OK/N" when some got an error reply (fail2ban's postfix filter
    /// reads "auth=0/1" in its ddos mode).
    pub fn stats(&self) -> String {
        let shown = |k: &str, total: u32, failed: u32| {
            if failed == 0 {
                format!("{k}={total}")
            } else {
                format!("{k}={}/{total}", total - failed)
            }
        };
        let mut stats: Vec<String> = (0..VERBS.len())
            .filter(|&i| self.seen[i])
            .map(|i| shown(VERBS[i].key, self.counts[i], self.failed[i]))
            .collect();
        let total: u32 = self.counts.iter().sum();
        let failed: u32 = self.failed.iter().sum();
        stats.push(shown("commands", total, failed));
        stats.join(" ")
    }

    /// Whether AUTH may be used now: enabled, and (with tls_auth_only)
    /// only inside TLS.
    pub fn auth_offered(&self) -> bool {
        self.config.sasl && (self.tls || !self.config.tls_auth_only)
    }

    /// Whether STARTTLS may be offered now.
    pub fn starttls_offered(&self) -> bool {
        !self.tls && self.config.starttls
    }

    /// The commands HELP lists: only those this session can use now (no
    /// VRFY when it is disabled, no STARTTLS inside TLS or without a
    /// certificate, no AUTH where AUTH is not offered), like EHLO.
    fn help_commands(&self) -> Vec<&'static str> {
        let mut cmds = vec![
            "HELO", "EHLO", "MAIL", "RCPT", "DATA", "BDAT", "RSET", "NOOP", "QUIT", "HELP",
        ];
        if !self.config.vrfy_disabled {
            cmds.push("VRFY");
        }
        if self.starttls_offered() {
            cmds.push("STARTTLS");
        }
        if self.auth_offered() {
            cmds.push("AUTH");
        }
        cmds
    }

    /// The EHLO reply.
    fn ehlo_reply(&self) -> Reply {
        let c = &self.config;
        let mut lines = vec![c.hostname.clone(), "PIPELINING".to_string()];
        if c.message_size_limit > 0 {
            lines.push(format!("SIZE {}", c.message_size_limit));
        } else {
            lines.push("SIZE".into());
        }
        if !c.vrfy_disabled {
            lines.push("VRFY".into());
        }
        if self.starttls_offered() {
            lines.push("STARTTLS".into());
        }
        if self.auth_offered() {
            lines.push(format!("AUTH {}", c.sasl_mechanisms));
        }
        lines.push("ENHANCEDSTATUSCODES".into());
        lines.push("8BITMIME".into());
        if c.dsn {
            lines.push("DSN".into());
        }
        lines.push("CHUNKING".into());
        if c.smtputf8 {
            lines.push("SMTPUTF8".into());
        }
        Reply::multi(250, lines)
    }

    /// Plays the session: the connect hook, the greeting, then commands
    /// until QUIT (Ok) or an early end. Queued replies are written before
    /// it returns Ok; after an `Err` the driver decides what else to say.
    pub async fn run<D: Driver>(&mut self, d: &mut D) -> Result<(), End> {
        if let Err(r) = d.connect(self).await {
            self.send(&r);
            let _ = self.flush(d).await;
            return Err(End::HungUp);
        }
        let banner = Reply::new(220, None, self.config.greeting.clone());
        self.send(&banner);
        self.command_loop(d).await
    }

    fn send(&mut self, r: &Reply) {
        if r.code >= 400
            && let Some(k) = self.current.take()
        {
            self.failed[k] += 1;
        }
        r.encode(&mut self.out);
    }

    fn count(&mut self, row: usize) {
        self.counts[row] += 1;
        self.seen[row] = true;
        self.current = Some(row);
        self.last_command = VERBS[row].name;
    }

    /// Ends the transaction, if any, and tells the driver.
    fn drop_tx<D: Driver>(&mut self, d: &mut D) {
        if self.tx.take().is_some() {
            d.reset();
        }
    }

    async fn flush<D: Driver>(&mut self, d: &mut D) -> Result<(), End> {
        if self.out.is_empty() {
            return Ok(());
        }
        d.write(&self.out).await?;
        self.out.clear();
        Ok(())
    }

    /// Reads more input into the line reader (writing replies first).
    async fn fill<D: Driver>(&mut self, d: &mut D) -> Result<(), End> {
        self.flush(d).await?;
        let mut buf = [0u8; 8192];
        match d.read(&mut buf).await? {
            0 => Err(End::Lost),
            n => {
                self.reader.push(&buf[..n.min(buf.len())]);
                Ok(())
            }
        }
    }

    /// The next input line, reading more (and writing replies) as needed.
    async fn next_line<D: Driver>(&mut self, d: &mut D) -> Result<Line, End> {
        loop {
            if let Some(l) = self.reader.next_line() {
                return Ok(l);
            }
            self.fill(d).await?;
        }
    }

    /// 421 and hang up at the hard error limit.
    async fn too_many_errors<D: Driver>(&mut self, d: &mut D) -> Result<(), End> {
        d.notice(self, Notice::TooManyErrors);
        let r = reply(
            421,
            (4, 7, 0),
            format!("{} Error: too many errors", self.config.hostname),
        );
        self.send(&r);
        let _ = self.flush(d).await;
        Err(End::HungUp)
    }

    /// Sends an error reply and counts it; past the soft limit we slow
    /// down, at the hard limit we hang up.
    async fn error<D: Driver>(&mut self, d: &mut D, r: Reply) -> Result<(), End> {
        self.errors += 1;
        self.send(&r);
        if self.errors >= self.config.hard_error_limit {
            return self.too_many_errors(d).await;
        }
        if self.errors > self.config.soft_error_limit {
            self.flush(d).await?;
            d.sleep(self.config.error_sleep).await;
        }
        Ok(())
    }

    /// A hook's refusal: a 5xx counts as an error, a 4xx does not.
    async fn refuse<D: Driver>(&mut self, d: &mut D, r: Reply) -> Result<(), End> {
        if r.is_permanent() {
            self.error(d, r).await
        } else {
            self.send(&r);
            Ok(())
        }
    }

    /// A junk command (RSET, NOOP, VRFY, HELP): past the junk limit each
    /// counts as an error.
    async fn junk<D: Driver>(&mut self, d: &mut D) -> Result<(), End> {
        self.junk += 1;
        if self.junk > self.config.junk_limit {
            self.errors += 1;
            if self.errors >= self.config.hard_error_limit {
                return self.too_many_errors(d).await;
            }
        }
        Ok(())
    }

    async fn command_loop<D: Driver>(&mut self, d: &mut D) -> Result<(), End> {
        let opts = ParseOptions {
            strict_rfc821_envelopes: self.config.strict_envelopes,
            allow_utf8: self.config.smtputf8,
        };
        loop {
            // Replies from here on belong to the next command.
            self.current = None;
            let line = match self.next_line(d).await? {
                Line::TooLong => {
                    self.last_command = "UNKNOWN";
                    self.error(d, reply(500, (5, 5, 2), "Error: line too long"))
                        .await?;
                    continue;
                }
                Line::Complete { line, bare_lf } => {
                    if bare_lf && self.config.reject_bare_newline {
                        self.error(d, reply(500, (5, 5, 2), "Error: bare <LF> received"))
                            .await?;
                        continue;
                    }
                    line
                }
            };
            let cmd = match parse_command(&line, &opts) {
                Ok(c) => c,
                Err(e) => {
                    let r = e.reply();
                    if is_bdat(&line) {
                        // A chunk of unknown length follows: reading it as
                        // commands would run whatever text it holds.
                        self.count(BDAT);
                        d.notice(self, Notice::BadBdat);
                        self.drop_tx(d);
                        self.send(&r);
                        let _ = self.flush(d).await;
                        return Err(End::HungUp);
                    }
                    if matches!(e, CommandError::Unknown { .. } | CommandError::Empty) {
                        self.count(UNKNOWN);
                    }
                    self.error(d, r).await?;
                    continue;
                }
            };
            let row = verb(&cmd);
            self.count(row);
            if VERBS[row].junk {
                self.junk(d).await?;
            }
            if self.command(d, cmd).await? {
                return Ok(());
            }
        }
    }

    /// Answers one command; Ok(true) after QUIT.
    async fn command<D: Driver>(&mut self, d: &mut D, cmd: Command) -> Result<bool, End> {
        match cmd {
            Command::Ehlo { domain } => self.hello(d, domain, true).await?,
            Command::Helo { domain } => self.hello(d, domain, false).await?,
            Command::Mail { from, params } => self.mail(d, from, params).await?,
            Command::Rcpt { to, params } => self.rcpt(d, to, params).await?,
            Command::Data => self.data(d).await?,
            Command::Bdat { size, last } => self.bdat(d, size, last).await?,
            Command::Rset => {
                self.drop_tx(d);
                self.send(&reply(250, (2, 0, 0), "Ok"));
            }
            Command::Noop { .. } => self.send(&reply(250, (2, 0, 0), "Ok")),
            Command::Quit => {
                self.send(&reply(221, (2, 0, 0), "Bye"));
                let _ = self.flush(d).await;
                return Ok(true);
            }
            Command::Vrfy { .. } if self.config.vrfy_disabled => {
                self.error(d, reply(502, (5, 5, 1), "VRFY command is disabled"))
                    .await?
            }
            // Never tell whether a user exists.
            Command::Vrfy { .. } => self.send(&reply(
                252,
                (2, 0, 0),
                "Cannot VRFY user, but will accept message and attempt delivery",
            )),
            Command::Expn { .. } => {
                self.error(d, reply(502, (5, 5, 1), "EXPN command is disabled"))
                    .await?
            }
            Command::Help { .. } => {
                let lines = vec![
                    "2.0.0 Commands supported:".into(),
                    format!("2.0.0 {}", self.help_commands().join(" ")),
                ];
                self.send(&Reply::multi(214, lines));
            }
            Command::StartTls => self.starttls(d).await?,
            Command::Auth {
                mechanism,
                initial_response,
            } => {
                self.auth(d, &mechanism, initial_response.as_deref())
                    .await?
            }
            Command::Etrn { .. } => {
                self.error(d, reply(502, (5, 5, 1), "Error: command not implemented"))
                    .await?
            }
        }
        Ok(false)
    }

    /// HELO and EHLO: a new start (no transaction).
    async fn hello<D: Driver>(
        &mut self,
        d: &mut D,
        domain: String,
        esmtp: bool,
    ) -> Result<(), End> {
        self.drop_tx(d);
        if let Err(r) = d.helo(self, &domain, esmtp).await {
            return self.refuse(d, r).await;
        }
        self.helo = Some(domain);
        self.esmtp = esmtp;
        let r = if esmtp {
            self.ehlo_reply()
        } else {
            Reply::new(250, None, self.config.hostname.clone())
        };
        self.send(&r);
        Ok(())
    }

    async fn starttls<D: Driver>(&mut self, d: &mut D) -> Result<(), End> {
        if self.tls {
            return self
                .error(d, reply(554, (5, 5, 1), "Error: TLS already active"))
                .await;
        }
        if !self.starttls_offered() {
            return self
                .error(d, reply(502, (5, 5, 1), "Error: command not implemented"))
                .await;
        }
        // CVE-2011-0411: what the client pipelined after STARTTLS was sent
        // in the clear and must not be executed inside the TLS session.
        let injected = self.reader.take_buffered();
        if !injected.is_empty() {
            d.notice(
                self,
                Notice::PlaintextDiscarded {
                    bytes: injected.len(),
                },
            );
        }
        self.send(&reply(220, (2, 0, 0), "Ready to start TLS"));
        self.flush(d).await?;
        d.start_tls(self).await?;
        self.tls = true;
        // RFC 3207 4.2: forget everything learned in the clear.
        self.helo = None;
        self.esmtp = false;
        self.drop_tx(d);
        self.sasl = None;
        Ok(())
    }

    /// AUTH (RFC 4954): the session's checks, then the exchange with the
    /// driver's steps.
    async fn auth<D: Driver>(
        &mut self,
        d: &mut D,
        mechanism: &str,
        initial: Option<&str>,
    ) -> Result<(), End> {
        let refusal = if !self.config.sasl {
            Some(reply(503, (5, 5, 1), "Error: authentication not enabled"))
        } else if !self.auth_offered() {
            // tls_auth_only: never take a password in the clear.
            Some(reply(
                538,
                (5, 7, 11),
                "Encryption required for requested authentication mechanism",
            ))
        } else if !self.esmtp {
            Some(reply(503, (5, 5, 1), "Error: send EHLO first"))
        } else if self.sasl.is_some() {
            Some(reply(503, (5, 5, 1), "Error: already authenticated"))
        } else if self.tx.is_some() {
            Some(reply(503, (5, 5, 1), "Error: MAIL transaction in progress"))
        } else {
            None
        };
        if let Some(r) = refusal {
            return self.error(d, r).await;
        }
        let mut step = d.auth_start(self, mechanism, initial).await;
        loop {
            match step {
                AuthStep::Challenge(c) => {
                    // RFC 4954: "334" SP [base64] CRLF, the space even
                    // before an empty challenge (PLAIN's first).
                    let mut challenge = b"334 ".to_vec();
                    challenge.extend(c.bytes().filter(|b| !b.is_ascii_control()));
                    challenge.extend_from_slice(b"\r\n");
                    self.out.extend_from_slice(&challenge);
                    step = match self.next_line(d).await? {
                        Line::TooLong => d.auth_response(self, None).await,
                        Line::Complete { line, .. } => d.auth_response(self, Some(&line)).await,
                    };
                }
                AuthStep::Success(login) => {
                    self.sasl = Some(login);
                    self.send(&reply(235, (2, 7, 0), "Authentication successful"));
                    return Ok(());
                }
                AuthStep::Refused(r) => return self.error(d, r).await,
                AuthStep::TempFail(r) => {
                    self.send(&r);
                    return Ok(());
                }
            }
        }
    }

    async fn mail<D: Driver>(
        &mut self,
        d: &mut D,
        from: ReversePath,
        params: Vec<Param>,
    ) -> Result<(), End> {
        if self.helo.is_none() && self.config.helo_required {
            return self
                .error(d, reply(503, (5, 5, 1), "Error: send HELO/EHLO first"))
                .await;
        }
        if self.config.require_tls && !self.tls {
            return self
                .error(
                    d,
                    reply(530, (5, 7, 0), "Must issue a STARTTLS command first"),
                )
                .await;
        }
        if self.tx.is_some() {
            return self
                .error(d, reply(503, (5, 5, 1), "Error: nested MAIL command"))
                .await;
        }
        if let Some(r) = self.mail_param_error(&params) {
            return self.error(d, r).await;
        }
        let typed = match MailParams::from_params(&params) {
            Ok(p) => p,
            Err(e) => return self.error(d, e.reply()).await,
        };
        if let Err(r) = d.mail(self, &from, &params).await {
            return self.refuse(d, r).await;
        }
        self.tx = Some(Transaction {
            sender: from,
            params: typed,
            recipients: Vec::new(),
            chunks: None,
        });
        self.send(&reply(250, (2, 1, 0), "Ok"));
        Ok(())
    }

    /// The reply for the first MAIL parameter this session cannot take.
    fn mail_param_error(&self, params: &[Param]) -> Option<Reply> {
        let limit = self.config.message_size_limit;
        for p in params {
            match p.keyword.as_str() {
                "SIZE" if self.esmtp => {
                    match p.value.as_deref().and_then(|v| v.parse::<u64>().ok()) {
                        None => return Some(reply(501, (5, 5, 4), "Bad message size syntax")),
                        Some(n) if limit > 0 && n > limit => {
                            return Some(reply(552, (5, 3, 4), "Message size exceeds fixed limit"));
                        }
                        Some(_) => {}
                    }
                }
                "BODY" if self.esmtp => match p.value.as_deref().map(|v| v.to_ascii_uppercase()) {
                    Some(v) if v == "8BITMIME" || v == "7BIT" => {}
                    _ => return Some(reply(501, (5, 5, 4), "Unsupported BODY parameter value")),
                },
                "SMTPUTF8" if self.esmtp && self.config.smtputf8 && p.value.is_none() => {}
                // RFC 4954 section 5: accepted when AUTH is offered; the
                // claimed identity is not trusted, so it is not kept.
                "AUTH" if self.esmtp && self.config.sasl && p.value.is_some() => {}
                "RET" | "ENVID" if self.esmtp && self.config.dsn => {}
                _ => {
                    return Some(reply(
                        555,
                        (5, 5, 4),
                        format!("Unsupported option: {}", p.keyword),
                    ));
                }
            }
        }
        None
    }

    async fn rcpt<D: Driver>(
        &mut self,
        d: &mut D,
        to: ForwardPath,
        params: Vec<Param>,
    ) -> Result<(), End> {
        let Some(tx) = self.tx.as_ref() else {
            return self
                .error(d, reply(503, (5, 5, 1), "Error: need MAIL command"))
                .await;
        };
        if tx.recipients.len() >= self.config.recipient_limit {
            self.send(&reply(452, (4, 5, 3), "Error: too many recipients"));
            return Ok(());
        }
        let dsn = self.esmtp && self.config.dsn;
        if let Some(p) = params
            .iter()
            .find(|p| !(dsn && matches!(p.keyword.as_str(), "NOTIFY" | "ORCPT")))
        {
            let r = reply(555, (5, 5, 4), format!("Unsupported option: {}", p.keyword));
            return self.error(d, r).await;
        }
        let typed = match RcptParams::from_params(&params) {
            Ok(p) => p,
            Err(e) => return self.error(d, e.reply()).await,
        };
        let address = match to {
            ForwardPath::Postmaster => Mailbox {
                local_part: "postmaster".into(),
                domain: self.config.postmaster_domain.clone(),
            },
            ForwardPath::Mailbox(m) => m,
        };
        let to = RcptTo {
            address,
            notify: typed.notify,
            orcpt: typed.orcpt,
        };
        if let Err(r) = d.rcpt(self, &to).await {
            return self.refuse(d, r).await;
        }
        if let Some(tx) = self.tx.as_mut() {
            tx.recipients.push(to.address);
        }
        self.send(&reply(250, (2, 1, 5), "Ok"));
        Ok(())
    }

    async fn data<D: Driver>(&mut self, d: &mut D) -> Result<(), End> {
        let refusal = match &self.tx {
            None => Some("Error: need RCPT command"),
            Some(t) if t.recipients.is_empty() => Some("Error: need RCPT command"),
            Some(t) if t.chunks.is_some() => {
                Some("Error: DATA cannot follow BDAT in one transaction")
            }
            _ => None,
        };
        if let Some(text) = refusal {
            return self.error(d, reply(503, (5, 5, 1), text)).await;
        }
        if self.reader.buffered_len() > 0 {
            // RFC 2920: DATA must be the last command of a pipelined group.
            // Postfix answers "improper command pipelining" here and so do
            // we, since the bytes after DATA cannot be the message yet.
            // What follows may be message text: treating it as commands
            // would let a client smuggle commands, so hang up instead.
            let _ = self.reader.take_buffered();
            self.drop_tx(d);
            d.notice(self, Notice::ImproperPipelining);
            self.send(&reply(
                554,
                (5, 5, 0),
                "Error: improper command pipelining after DATA, closing connection",
            ));
            let _ = self.flush(d).await;
            return Err(End::HungUp);
        }
        if let Err(r) = d.data(self).await {
            return self.refuse(d, r).await;
        }
        self.send(&Reply::new(354, None, "End data with <CR><LF>.<CR><LF>"));
        self.flush(d).await?;
        let piece = self.config.content_chunk.max(1);
        let mut dec = DataDecoder::new(self.config.message_size_limit);
        let mut chunk: Vec<u8> = Vec::with_capacity(piece * 2);
        let mut content_ok = true;
        let mut buf = vec![0u8; 64 * 1024];
        loop {
            let n = match d.read(&mut buf).await? {
                0 => return Err(End::Lost),
                n => n.min(buf.len()),
            };
            let progress = dec.feed(&buf[..n], &mut chunk);
            if chunk.len() >= piece || matches!(progress, DataProgress::Done { .. }) {
                if content_ok && !dec.too_big() && !chunk.is_empty() {
                    content_ok = d.content(self, std::mem::take(&mut chunk)).await;
                }
                chunk.clear();
            }
            if let DataProgress::Done { consumed } = progress {
                // Whatever follows the end of data are the next commands.
                self.reader.push(&buf[consumed..n]);
                break;
            }
        }
        let bare = dec.saw_bare_lf() || dec.saw_bare_cr();
        self.end_of_message(d, dec.size(), dec.too_big(), bare, content_ok)
            .await
    }

    /// Consumes `n` octets of input (a refused BDAT chunk).
    async fn skip_bytes<D: Driver>(&mut self, d: &mut D, mut n: u64) -> Result<(), End> {
        loop {
            let buffered = self.reader.take_buffered();
            let take = (buffered.len() as u64).min(n) as usize;
            n -= take as u64;
            if take < buffered.len() {
                self.reader.push(&buffered[take..]);
            }
            if n == 0 {
                return Ok(());
            }
            self.fill(d).await?;
        }
    }

    /// BDAT (RFC 3030): reads exactly `size` octets of the message, hands
    /// them to the driver, and after the LAST chunk ends the message as
    /// DATA does. Whatever happens, the `size` octets are consumed, so the
    /// session stays in step.
    async fn bdat<D: Driver>(&mut self, d: &mut D, size: u64, last: bool) -> Result<(), End> {
        let Some(tx) = self.tx.as_ref().filter(|t| !t.recipients.is_empty()) else {
            self.skip_bytes(d, size).await?;
            return self
                .error(d, reply(503, (5, 5, 1), "Error: need RCPT command"))
                .await;
        };
        if tx.chunks.is_none()
            && let Err(r) = d.data(self).await
        {
            self.skip_bytes(d, size).await?;
            return self.refuse(d, r).await;
        }
        let limit = self.config.message_size_limit;
        let mut chunks = self
            .tx
            .as_mut()
            .and_then(|t| t.chunks.take())
            .unwrap_or_else(|| Chunks {
                decoder: ChunkDecoder::new(limit),
                content_ok: true,
            });
        let piece = self.config.content_chunk.max(1);
        let mut out: Vec<u8> = Vec::with_capacity(piece * 2);
        let mut left = size;
        // First what the line reader already holds (pipelined with BDAT).
        let buffered = self.reader.take_buffered();
        let take = (buffered.len() as u64).min(left) as usize;
        if take < buffered.len() {
            self.reader.push(&buffered[take..]);
        }
        chunks.decoder.feed(&buffered[..take], &mut out);
        left -= take as u64;
        if left > 0 {
            self.flush(d).await?;
        }
        let mut buf = vec![0u8; left.clamp(1, 64 * 1024) as usize];
        while left > 0 {
            let want = (buf.len() as u64).min(left) as usize;
            let n = match d.read(&mut buf[..want]).await? {
                0 => return Err(End::Lost),
                n => n.min(want),
            };
            chunks.decoder.feed(&buf[..n], &mut out);
            left -= n as u64;
            if out.len() >= piece {
                if chunks.content_ok && !chunks.decoder.too_big() {
                    chunks.content_ok = d.content(self, std::mem::take(&mut out)).await;
                }
                out.clear();
            }
        }
        if last {
            chunks.decoder.finish(&mut out);
        }
        if chunks.content_ok && !chunks.decoder.too_big() && !out.is_empty() {
            chunks.content_ok = d.content(self, out).await;
        }
        let dec = &chunks.decoder;
        if last || dec.too_big() {
            // Too big: refused now and the transaction is over (later
            // chunks get 503 and are skipped).
            let bare = dec.saw_bare_lf() || dec.saw_bare_cr();
            return self
                .end_of_message(d, dec.size(), dec.too_big(), bare, chunks.content_ok)
                .await;
        }
        if let Some(t) = self.tx.as_mut() {
            t.chunks = Some(chunks);
        }
        self.send(&reply(250, (2, 0, 0), format!("Ok: {size} bytes")));
        Ok(())
    }

    /// The end of a message (DATA's terminator, BDAT LAST): refuses it when
    /// it was too big or had bare line ends that are refused, else asks the
    /// driver to commit it. The transaction is over either way.
    async fn end_of_message<D: Driver>(
        &mut self,
        d: &mut D,
        size: u64,
        too_big: bool,
        bare_newline: bool,
        content_ok: bool,
    ) -> Result<(), End> {
        if self.tx.is_none() {
            return Ok(());
        }
        let r = if too_big {
            d.notice(self, Notice::MessageTooBig { size });
            reply(552, (5, 3, 4), "Error: message file too big")
        } else if bare_newline && self.config.reject_bare_newline {
            d.notice(self, Notice::BareNewlineContent);
            reply(550, (5, 5, 2), "Error: bare <LF> received")
        } else if !content_ok {
            reply(451, (4, 3, 0), "Error: queue file write error")
        } else {
            d.data_end(self).await
        };
        self.drop_tx(d);
        self.send(&r);
        Ok(())
    }
}

/// True for a command line whose verb is BDAT (whatever its arguments).
fn is_bdat(line: &[u8]) -> bool {
    line.len() >= 4
        && line[..4].eq_ignore_ascii_case(b"BDAT")
        && line.get(4).is_none_or(|&b| b == b' ' || b == b'\t')
}

#[cfg(test)]
mod tests;
