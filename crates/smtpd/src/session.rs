//! One SMTP session: the command loop, the mail transaction, DATA.
//!
//! Replies are queued and written when the client has no more pipelined
//! commands waiting in our buffer (RFC 2920), and always before we wait for
//! input. When a limit is hit we drain to the end of the line or of the data
//! before replying, so the stream never gets out of step.
//!
//! SECURITY: after "220 Ready to start TLS" every byte the client pipelined
//! behind STARTTLS is discarded (CVE-2011-0411) and, after the handshake,
//! the session starts afresh (no HELO, no transaction), as RFC 3207 says.

use crate::restrictions::{Decision, Request};
use crate::stream::{HandshakeError, Stream};
use crate::{BareNewline, Smtpd, TlsLevel};
use postern_ipc::messages::{AuthReply, AuthRequest};
use postern_ipc::{CHUNK_SIZE, Channel, CleanupReply, CleanupRequest};
use postern_sasl::{Exchange, Mechanism, SaslError, Step};
use postern_smtp_proto::{
    ChunkDecoder, Command, DataDecoder, DataProgress, EnhancedCode, ForwardPath, Line, LineReader,
    ParseOptions, Reply, ReversePath, parse_command,
};
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tracing::{info, warn};

fn reply(code: u16, ec: (u8, u16, u16), text: impl Into<String>) -> Reply {
    Reply::new(code, Some(EnhancedCode(ec.0, ec.1, ec.2)), text)
}

/// Why the session ended early.
enum End {
    /// The client went away.
    Lost,
    /// The client was too slow.
    Timeout,
    /// We hung up on the client (reply already sent).
    HungUp,
}

/// The state of the current mail transaction.
struct Transaction {
    sender: String,
    recipients: Vec<String>,
    cleanup: Option<Channel>,
    queue_id: Option<String>,
    /// Set by the first BDAT: the message is coming in chunks (and DATA
    /// may no longer be used in this transaction, RFC 3030).
    chunks: Option<Chunks>,
}

/// A message arriving in BDAT chunks.
struct Chunks {
    decoder: ChunkDecoder,
    /// False once a write to cleanup failed (the rest is read and dropped).
    cleanup_ok: bool,
}

struct Session<'a> {
    smtpd: &'a Smtpd,
    stream: Stream,
    /// The TLS session description once TLS is active.
    tls_info: Option<String>,
    peer: SocketAddr,
    client: String,
    reader: LineReader,
    out: Vec<u8>,
    helo: Option<String>,
    esmtp: bool,
    tx: Option<Transaction>,
    errors: u32,
    junk: u32,
    counts: BTreeMap<&'static str, u32>,
    /// Per command, how many got a 4xx/5xx final reply (Postfix's "ok/total").
    failed: BTreeMap<&'static str, u32>,
    /// The statistics key of the command being answered, until its first
    /// 4xx/5xx reply has been counted.
    current: Option<&'static str>,
    last_command: &'static str,
    /// The SASL login once AUTH succeeded.
    sasl: Option<SaslLogin>,
}

/// Who the client authenticated as, and how.
struct SaslLogin {
    /// The login as the auth service canonicalised it.
    user: String,
    /// The mechanism used (for logs: sasl_method=).
    method: Mechanism,
}

/// Serves one client until it quits or the connection ends.
pub async fn run(smtpd: &Smtpd, stream: TcpStream, peer: SocketAddr) {
    let _ = stream.set_nodelay(true);
    // No reverse lookup yet (the policy issue adds DNS): Postfix's "unknown".
    let client = format!("unknown[{}]", peer.ip());
    info!("connect from {client}");
    let mut s = Session {
        smtpd,
        stream: Stream::Plain(stream),
        tls_info: None,
        peer,
        client,
        reader: LineReader::new(smtpd.settings.line_limit),
        out: Vec::with_capacity(512),
        helo: None,
        esmtp: false,
        tx: None,
        errors: 0,
        junk: 0,
        counts: BTreeMap::new(),
        failed: BTreeMap::new(),
        current: None,
        last_command: "CONNECT",
        sasl: None,
    };
    if smtpd.settings.tls_wrappermode {
        // Implicit TLS (RFC 8314): the handshake comes before the banner.
        if s.start_tls().await.is_err() {
            report(&s);
            return;
        }
    }
    let banner = format!(
        "220 {}\r\n",
        s.smtpd.settings.banner.replace(['\r', '\n'], " ")
    );
    s.out.extend_from_slice(banner.as_bytes());
    let end = s.command_loop().await;
    match end {
        Ok(()) | Err(End::HungUp) => {}
        Err(End::Lost) => info!("lost connection after {} from {}", s.last_command, s.client),
        Err(End::Timeout) => {
            info!("timeout after {} from {}", s.last_command, s.client);
            let r = format!(
                "421 4.4.2 {} Error: timeout exceeded\r\n",
                s.smtpd.settings.myhostname
            );
            let _ = tokio::time::timeout(Duration::from_secs(5), s.stream.write_all(r.as_bytes()))
                .await;
        }
    }
    let _ = tokio::time::timeout(Duration::from_secs(5), s.stream.shutdown()).await;
    report(&s);
}

/// Logs the per-session command statistics.
fn report(s: &Session<'_>) {
    // Postfix's order, so log tools that parse these lines see the same.
    const ORDER: [&str; 14] = [
        "helo", "ehlo", "starttls", "auth", "mail", "rcpt", "data", "bdat", "rset", "noop", "vrfy",
        "help", "quit", "unknown",
    ];
    // "name=N", or "name=OK/N" when some got an error reply (fail2ban's
    // postfix filter reads "auth=0/1" in its ddos mode).
    let shown = |k: &str, total: u32, failed: u32| {
        if failed == 0 {
            format!("{k}={total}")
        } else {
            format!("{k}={}/{total}", total - failed)
        }
    };
    let mut stats: Vec<String> = ORDER
        .iter()
        .filter_map(|k| {
            let failed = s.failed.get(k).copied().unwrap_or(0);
            s.counts.get(k).map(|&v| shown(k, v, failed))
        })
        .collect();
    let total: u32 = s.counts.values().sum();
    let failed: u32 = s.failed.values().sum();
    stats.push(shown("commands", total, failed));
    info!("disconnect from {} {}", s.client, stats.join(" "));
}

impl Session<'_> {
    fn settings(&self) -> &crate::Settings {
        &self.smtpd.settings
    }

    /// The protocol name for logs and Received (RFC 3848): SMTP/ESMTP, plus
    /// S with TLS and A after AUTH.
    fn proto(&self) -> &'static str {
        match (self.esmtp, self.tls_info.is_some(), self.sasl.is_some()) {
            (false, false, _) => "SMTP",
            (false, true, _) => "SMTPS",
            (true, false, false) => "ESMTP",
            (true, true, false) => "ESMTPS",
            (true, false, true) => "ESMTPA",
            (true, true, true) => "ESMTPSA",
        }
    }

    /// Whether AUTH may be used now: enabled, and (with
    /// smtpd_tls_auth_only) only inside TLS.
    fn auth_offered(&self) -> bool {
        self.settings().sasl_enabled && (self.tls_info.is_some() || !self.settings().tls_auth_only)
    }

    /// The commands HELP lists: only those this session can use now (no
    /// VRFY when it is disabled, no STARTTLS inside TLS or without a
    /// certificate, no AUTH where AUTH is not offered), like EHLO.
    fn help_commands(&self) -> Vec<&'static str> {
        let mut cmds = vec![
            "HELO", "EHLO", "MAIL", "RCPT", "DATA", "BDAT", "RSET", "NOOP", "QUIT", "HELP",
        ];
        if !self.settings().vrfy_disabled {
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

    /// Whether STARTTLS may be offered now.
    fn starttls_offered(&self) -> bool {
        self.tls_info.is_none()
            && self.smtpd.tls.is_some()
            && self.settings().tls_level != TlsLevel::None
    }

    /// Does the server side of the handshake on the current stream. On
    /// failure logs as Postfix does and the session is over.
    async fn start_tls(&mut self) -> Result<(), End> {
        let Some(acceptor) = self.smtpd.tls.clone() else {
            return Err(End::HungUp);
        };
        let t = self.settings().timeout;
        match self.stream.start_tls(&acceptor, t).await {
            Ok(info) => {
                info!(
                    "Anonymous TLS connection established from {}: {info}",
                    self.client
                );
                self.tls_info = Some(info);
                Ok(())
            }
            Err(HandshakeError::Timeout) => {
                info!("SSL_accept error from {}: timed out", self.client);
                info!(
                    "lost connection after {} from {}",
                    self.last_command, self.client
                );
                Err(End::HungUp)
            }
            Err(HandshakeError::Failed(why)) => {
                warn!("TLS library problem: {why}");
                info!(
                    "lost connection after {} from {}",
                    self.last_command, self.client
                );
                Err(End::HungUp)
            }
        }
    }

    async fn flush(&mut self) -> Result<(), End> {
        if self.out.is_empty() {
            return Ok(());
        }
        let t = self.settings().timeout;
        let write = async {
            self.stream.write_all(&self.out).await?;
            self.stream.flush().await
        };
        match tokio::time::timeout(t, write).await {
            Ok(Ok(())) => {
                self.out.clear();
                Ok(())
            }
            Ok(Err(_)) => Err(End::Lost),
            Err(_) => Err(End::Timeout),
        }
    }

    /// Reads more input into the line reader (flushing replies first).
    async fn fill(&mut self) -> Result<(), End> {
        self.flush().await?;
        let mut buf = [0u8; 8192];
        let t = self.settings().timeout;
        match tokio::time::timeout(t, self.stream.read(&mut buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) => Err(End::Lost),
            Ok(Ok(n)) => {
                self.reader.push(&buf[..n]);
                Ok(())
            }
            Err(_) => Err(End::Timeout),
        }
    }

    /// The next input line, reading more (and flushing replies) as needed.
    async fn next_line(&mut self) -> Result<Line, End> {
        loop {
            if let Some(l) = self.reader.next_line() {
                return Ok(l);
            }
            self.fill().await?;
        }
    }

    fn send(&mut self, r: &Reply) {
        if r.code >= 400
            && let Some(k) = self.current.take()
        {
            *self.failed.entry(k).or_insert(0) += 1;
        }
        r.encode(&mut self.out);
    }

    fn count(&mut self, name: &'static str) {
        *self.counts.entry(name).or_insert(0) += 1;
        self.current = Some(name);
        self.last_command = match name {
            "ehlo" => "EHLO",
            "helo" => "HELO",
            "mail" => "MAIL",
            "rcpt" => "RCPT",
            "data" => "DATA",
            "rset" => "RSET",
            "noop" => "NOOP",
            "quit" => "QUIT",
            "vrfy" => "VRFY",
            "help" => "HELP",
            "starttls" => "STARTTLS",
            "auth" => "AUTH",
            "bdat" => "BDAT",
            _ => "UNKNOWN",
        };
    }

    /// Counts an error; past the soft limit we slow down, at the hard limit we hang up.
    async fn error(&mut self, r: Reply) -> Result<(), End> {
        self.errors += 1;
        self.send(&r);
        if self.errors >= self.settings().hard_error_limit {
            info!(
                "too many errors after {} from {}",
                self.last_command, self.client
            );
            self.send(&reply(
                421,
                (4, 7, 0),
                format!("{} Error: too many errors", self.settings().myhostname),
            ));
            let _ = self.flush().await;
            return Err(End::HungUp);
        }
        if self.errors > self.settings().soft_error_limit {
            self.flush().await?;
            tokio::time::sleep(self.settings().error_sleep).await;
        }
        Ok(())
    }

    async fn junk(&mut self) -> Result<(), End> {
        self.junk += 1;
        if self.junk > self.settings().junk_limit {
            self.errors += 1;
            if self.errors >= self.settings().hard_error_limit {
                info!(
                    "too many errors after {} from {}",
                    self.last_command, self.client
                );
                self.send(&reply(
                    421,
                    (4, 7, 0),
                    format!("{} Error: too many errors", self.settings().myhostname),
                ));
                let _ = self.flush().await;
                return Err(End::HungUp);
            }
        }
        Ok(())
    }

    async fn command_loop(&mut self) -> Result<(), End> {
        let opts = ParseOptions {
            strict_rfc821_envelopes: self.settings().strict_envelopes,
            allow_utf8: self.settings().smtputf8,
        };
        loop {
            // Replies from here on belong to the next command.
            self.current = None;
            let line = match self.next_line().await? {
                Line::TooLong => {
                    self.last_command = "UNKNOWN";
                    self.error(reply(500, (5, 5, 2), "Error: line too long"))
                        .await?;
                    continue;
                }
                Line::Complete { line, bare_lf } => {
                    if bare_lf && self.settings().bare_newline == BareNewline::Reject {
                        self.error(reply(500, (5, 5, 2), "Error: bare <LF> received"))
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
                        self.count("bdat");
                        info!("bad BDAT command from {}: closing", self.client);
                        self.tx = None;
                        self.send(&r);
                        let _ = self.flush().await;
                        return Err(End::HungUp);
                    }
                    if matches!(
                        e,
                        postern_smtp_proto::CommandError::Unknown { .. }
                            | postern_smtp_proto::CommandError::Empty
                    ) {
                        self.count("unknown");
                    }
                    self.error(r).await?;
                    continue;
                }
            };
            match cmd {
                Command::Ehlo { domain } => {
                    self.count("ehlo");
                    self.tx = None;
                    self.helo = Some(domain);
                    self.esmtp = true;
                    let mut lines =
                        vec![self.settings().myhostname.clone(), "PIPELINING".to_string()];
                    if self.settings().message_size_limit > 0 {
                        lines.push(format!("SIZE {}", self.settings().message_size_limit));
                    } else {
                        lines.push("SIZE".into());
                    }
                    if !self.settings().vrfy_disabled {
                        lines.push("VRFY".into());
                    }
                    if self.starttls_offered() {
                        lines.push("STARTTLS".into());
                    }
                    if self.auth_offered() {
                        lines.push(format!("AUTH {}", Mechanism::advertised()));
                    }
                    lines.push("ENHANCEDSTATUSCODES".into());
                    lines.push("8BITMIME".into());
                    lines.push("CHUNKING".into());
                    if self.settings().smtputf8 {
                        lines.push("SMTPUTF8".into());
                    }
                    self.send(&Reply::multi(250, lines));
                }
                Command::Helo { domain } => {
                    self.count("helo");
                    self.tx = None;
                    self.helo = Some(domain);
                    self.esmtp = false;
                    let r = Reply::new(250, None, self.settings().myhostname.clone());
                    self.send(&r);
                }
                Command::Mail { from, params } => {
                    self.count("mail");
                    self.mail(from, params).await?;
                }
                Command::Rcpt { to, params } => {
                    self.count("rcpt");
                    self.rcpt(to, params).await?;
                }
                Command::Data => {
                    self.count("data");
                    self.data().await?;
                }
                Command::Rset => {
                    self.count("rset");
                    self.tx = None;
                    self.junk().await?;
                    self.send(&reply(250, (2, 0, 0), "Ok"));
                }
                Command::Noop { .. } => {
                    self.count("noop");
                    self.junk().await?;
                    self.send(&reply(250, (2, 0, 0), "Ok"));
                }
                Command::Quit => {
                    self.count("quit");
                    self.send(&reply(221, (2, 0, 0), "Bye"));
                    let _ = self.flush().await;
                    return Ok(());
                }
                Command::Vrfy { .. } => {
                    self.count("vrfy");
                    self.junk().await?;
                    if self.settings().vrfy_disabled {
                        self.error(reply(502, (5, 5, 1), "VRFY command is disabled"))
                            .await?;
                    } else {
                        // Never tell whether a user exists.
                        self.send(&reply(
                            252,
                            (2, 0, 0),
                            "Cannot VRFY user, but will accept message and attempt delivery",
                        ));
                    }
                }
                Command::Expn { .. } => {
                    self.count("unknown");
                    self.error(reply(502, (5, 5, 1), "EXPN command is disabled"))
                        .await?;
                }
                Command::Help { .. } => {
                    self.count("help");
                    self.junk().await?;
                    let lines = vec![
                        "2.0.0 Commands supported:".into(),
                        format!("2.0.0 {}", self.help_commands().join(" ")),
                    ];
                    self.send(&Reply::multi(214, lines));
                }
                Command::StartTls => {
                    self.count("starttls");
                    if self.tls_info.is_some() {
                        self.error(reply(554, (5, 5, 1), "Error: TLS already active"))
                            .await?;
                    } else if !self.starttls_offered() {
                        self.error(reply(502, (5, 5, 1), "Error: command not implemented"))
                            .await?;
                    } else {
                        // CVE-2011-0411: what the client pipelined after
                        // STARTTLS was sent in the clear and must not be
                        // executed inside the TLS session.
                        let injected = self.reader.take_buffered();
                        if !injected.is_empty() {
                            info!(
                                "discarding {} bytes of plaintext pipelined after STARTTLS from {}",
                                injected.len(),
                                self.client
                            );
                        }
                        self.send(&reply(220, (2, 0, 0), "Ready to start TLS"));
                        self.flush().await?;
                        self.start_tls().await?;
                        // RFC 3207 4.2: forget everything learned in the clear.
                        self.helo = None;
                        self.esmtp = false;
                        self.tx = None;
                        self.sasl = None;
                    }
                }
                Command::Auth {
                    mechanism,
                    initial_response,
                } => {
                    self.count("auth");
                    self.auth(&mechanism, initial_response.as_deref()).await?;
                }
                Command::Etrn { .. } => {
                    self.count("unknown");
                    self.error(reply(502, (5, 5, 1), "Error: command not implemented"))
                        .await?;
                }
                Command::Bdat { size, last } => {
                    self.count("bdat");
                    self.bdat(size, last).await?;
                }
            }
        }
    }

    /// AUTH (RFC 4954): runs the SASL exchange, then asks the auth service.
    async fn auth(&mut self, mechanism: &str, initial: Option<&str>) -> Result<(), End> {
        if !self.settings().sasl_enabled {
            return self
                .error(reply(503, (5, 5, 1), "Error: authentication not enabled"))
                .await;
        }
        if !self.auth_offered() {
            // smtpd_tls_auth_only: never take a password in the clear.
            return self
                .error(reply(
                    538,
                    (5, 7, 11),
                    "Encryption required for requested authentication mechanism",
                ))
                .await;
        }
        if !self.esmtp {
            return self
                .error(reply(503, (5, 5, 1), "Error: send EHLO first"))
                .await;
        }
        if self.sasl.is_some() {
            return self
                .error(reply(503, (5, 5, 1), "Error: already authenticated"))
                .await;
        }
        if self.tx.is_some() {
            return self
                .error(reply(503, (5, 5, 1), "Error: MAIL transaction in progress"))
                .await;
        }
        let Some(mech) = Mechanism::from_name(mechanism) else {
            return self
                .error(reply(
                    504,
                    (5, 5, 4),
                    "Unsupported authentication mechanism",
                ))
                .await;
        };
        let mut result = Exchange::start(mech, initial);
        let creds = loop {
            match result {
                Ok((_, Step::Done(c))) => break c,
                Ok((mut ex, Step::Challenge(c))) => {
                    // RFC 4954: "334" SP [base64] CRLF, the space even
                    // before an empty challenge (PLAIN's first).
                    let challenge = format!("334 {}\r\n", postern_sasl::encode(c));
                    self.out.extend_from_slice(challenge.as_bytes());
                    let text = match self.next_line().await? {
                        Line::TooLong => return self.sasl_error(mech, SaslError::TooLong).await,
                        Line::Complete { line, .. } => String::from_utf8_lossy(&line).into_owned(),
                    };
                    result = ex.respond(&text).map(|step| (ex, step));
                }
                Err(e) => return self.sasl_error(mech, e).await,
            }
        };
        let verdict = self.verify(&creds.username, creds.password.expose()).await;
        drop(creds);
        match verdict {
            Ok(AuthReply::Verified { user }) => {
                self.sasl = Some(SaslLogin { user, method: mech });
                self.send(&reply(235, (2, 7, 0), "Authentication successful"));
                Ok(())
            }
            Ok(AuthReply::TempFail { reason }) => {
                warn!(
                    "{}: SASL {} authentication failed: {reason}",
                    self.client,
                    mech.name()
                );
                self.send(&reply(454, (4, 7, 0), "Temporary authentication failure"));
                Ok(())
            }
            Ok(AuthReply::Failed) => self.auth_failed(mech, "authentication failure").await,
            Ok(other) => {
                warn!(
                    "SASL authentication problem: unexpected answer from auth service: {other:?}"
                );
                self.auth_unavailable(mech).await
            }
            Err(why) => {
                warn!("SASL authentication failure: {why}");
                self.auth_unavailable(mech).await
            }
        }
    }

    /// The auth service could not answer: 454, logged with Postfix's words
    /// (which fail2ban deliberately does not count against the client).
    async fn auth_unavailable(&mut self, mech: Mechanism) -> Result<(), End> {
        warn!(
            "{}: SASL {} authentication failed: Connection lost to authentication server",
            self.client,
            mech.name()
        );
        self.send(&reply(454, (4, 7, 0), "Temporary authentication failure"));
        Ok(())
    }

    /// A failed login: 535 and the warning fail2ban's postfix filter reads.
    async fn auth_failed(&mut self, mech: Mechanism, why: &str) -> Result<(), End> {
        warn!(
            "{}: SASL {} authentication failed: {why}",
            self.client,
            mech.name()
        );
        self.error(reply(
            535,
            (5, 7, 8),
            format!("Error: authentication failed: {why}"),
        ))
        .await
    }

    /// A SASL exchange that went wrong before any password was checked.
    async fn sasl_error(&mut self, mech: Mechanism, e: SaslError) -> Result<(), End> {
        match e {
            SaslError::Aborted => {
                self.error(reply(501, (5, 7, 0), "Authentication aborted"))
                    .await
            }
            SaslError::BadBase64 => {
                self.error(reply(501, (5, 5, 2), "Error: invalid base64 data"))
                    .await
            }
            SaslError::TooLong => {
                self.error(reply(
                    500,
                    (5, 5, 6),
                    "Authentication Exchange line is too long",
                ))
                .await
            }
            // A malformed message or proxy authorization counts as a failed
            // login (it is one, as far as a password guesser is concerned).
            SaslError::Malformed(_) | SaslError::ProxyRefused | SaslError::Finished => {
                let why = e.to_string();
                self.auth_failed(mech, &why).await
            }
        }
    }

    /// Asks the auth service to check a password.
    async fn verify(&mut self, user: &str, password: &str) -> Result<AuthReply, String> {
        let socket = self.smtpd.policy.borrow().auth_socket().to_path_buf();
        let t = self.settings().ipc_timeout.min(Duration::from_secs(60));
        let mut req = AuthRequest::Verify {
            service: self.settings().service_name.clone(),
            user: user.to_string(),
            password: password.to_string(),
            client_address: self.peer.ip().to_string(),
        };
        let ask = async {
            let mut ch = Channel::connect(&socket)
                .await
                .map_err(|e| format!("cannot connect to auth server {}: {e}", socket.display()))?;
            ch.send(&req)
                .await
                .map_err(|e| format!("auth server: {e}"))?;
            match ch.recv::<AuthReply>().await {
                Ok(Some(r)) => Ok(r),
                Ok(None) => Err("auth server closed the connection".to_string()),
                Err(e) => Err(format!("auth server: {e}")),
            }
        };
        let answer = match tokio::time::timeout(t, ask).await {
            Ok(r) => r,
            Err(_) => Err("auth server: timeout".to_string()),
        };
        req.wipe();
        answer
    }

    async fn skip_bytes(&mut self, mut n: u64) -> Result<(), End> {
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
            self.fill().await?;
        }
    }

    async fn mail(
        &mut self,
        from: ReversePath,
        params: Vec<postern_smtp_proto::Param>,
    ) -> Result<(), End> {
        if self.helo.is_none() && self.settings().helo_required {
            return self
                .error(reply(503, (5, 5, 1), "Error: send HELO/EHLO first"))
                .await;
        }
        if self.settings().tls_level == TlsLevel::Encrypt && self.tls_info.is_none() {
            return self
                .error(reply(530, (5, 7, 0), "Must issue a STARTTLS command first"))
                .await;
        }
        if self.tx.is_some() {
            return self
                .error(reply(503, (5, 5, 1), "Error: nested MAIL command"))
                .await;
        }
        for p in &params {
            match p.keyword.as_str() {
                "SIZE" if self.esmtp => {
                    let declared: Option<u64> = p.value.as_deref().and_then(|v| v.parse().ok());
                    match declared {
                        None => {
                            return self
                                .error(reply(501, (5, 5, 4), "Bad message size syntax"))
                                .await;
                        }
                        Some(n)
                            if self.settings().message_size_limit > 0
                                && n > self.settings().message_size_limit =>
                        {
                            return self
                                .error(reply(552, (5, 3, 4), "Message size exceeds fixed limit"))
                                .await;
                        }
                        Some(_) => {}
                    }
                }
                "BODY" if self.esmtp => match p.value.as_deref().map(|v| v.to_ascii_uppercase()) {
                    Some(v) if v == "8BITMIME" || v == "7BIT" => {}
                    _ => {
                        return self
                            .error(reply(501, (5, 5, 4), "Unsupported BODY parameter value"))
                            .await;
                    }
                },
                "SMTPUTF8" if self.esmtp && self.settings().smtputf8 && p.value.is_none() => {}
                // RFC 4954 section 5: accepted when AUTH is offered; the
                // claimed identity is not trusted, so it is not kept.
                "AUTH" if self.esmtp && self.settings().sasl_enabled && p.value.is_some() => {}
                _ => {
                    let r = reply(555, (5, 5, 4), format!("Unsupported option: {}", p.keyword));
                    return self.error(r).await;
                }
            }
        }
        let sender = match from {
            ReversePath::Null => String::new(),
            ReversePath::Mailbox(m) => m.to_string(),
        };
        self.tx = Some(Transaction {
            sender,
            recipients: Vec::new(),
            cleanup: None,
            queue_id: None,
            chunks: None,
        });
        self.send(&reply(250, (2, 1, 0), "Ok"));
        Ok(())
    }

    fn reject_log(&self, r: &Reply, to: &str) {
        let from = self.tx.as_ref().map(|t| t.sender.as_str()).unwrap_or("");
        let id = self
            .tx
            .as_ref()
            .and_then(|t| t.queue_id.as_deref())
            .unwrap_or("NOQUEUE");
        info!(
            "{id}: reject: RCPT from {}: {}; from=<{from}> to=<{to}> proto={} helo=<{}>",
            self.client,
            r,
            self.proto(),
            self.helo.as_deref().unwrap_or("")
        );
    }

    async fn rcpt(
        &mut self,
        to: ForwardPath,
        params: Vec<postern_smtp_proto::Param>,
    ) -> Result<(), End> {
        let Some(tx) = self.tx.as_ref() else {
            return self
                .error(reply(503, (5, 5, 1), "Error: need MAIL command"))
                .await;
        };
        if tx.recipients.len() >= self.settings().recipient_limit {
            self.send(&reply(452, (4, 5, 3), "Error: too many recipients"));
            return Ok(());
        }
        if let Some(p) = params
            .iter()
            .find(|p| !matches!(p.keyword.as_str(), "NOTIFY" | "ORCPT"))
        {
            let r = reply(555, (5, 5, 4), format!("Unsupported option: {}", p.keyword));
            return self.error(r).await;
        }
        let (address, local, domain) = match to {
            ForwardPath::Postmaster => {
                let d = self.settings().myorigin.clone();
                (format!("postmaster@{d}"), "postmaster".to_string(), d)
            }
            ForwardPath::Mailbox(m) => (m.to_string(), m.local_part.clone(), m.domain.clone()),
        };
        let request = Request {
            client_ip: self.peer.ip(),
            client: &self.client,
            helo: self.helo.as_deref(),
            sasl_user: self.sasl.as_ref().map(|l| l.user.as_str()),
            sender: self.tx.as_ref().map_or("", |t| t.sender.as_str()),
            recipient: &address,
            rcpt_local: &local,
            rcpt_domain: &domain,
        };
        let decision = self
            .smtpd
            .restrictions
            .check(&mut self.smtpd.policy.borrow_mut(), &request);
        if let Decision::Refuse(r) = decision {
            self.reject_log(&r, &address);
            if r.is_permanent() {
                return self.error(r).await;
            }
            self.send(&r);
            return Ok(());
        }
        // First accepted recipient: open the cleanup stream (Postfix's
        // smtpd_delay_open_until_valid_rcpt), so the queue ID exists from here on.
        if self.tx.as_ref().is_some_and(|t| t.cleanup.is_none())
            && let Err(why) = self.open_cleanup().await
        {
            warn!("{}: cannot open cleanup stream: {why}", self.client);
            self.send(&reply(451, (4, 3, 0), "Error: queue file write error"));
            return Ok(());
        }
        let Some(tx) = self.tx.as_mut() else {
            return Ok(());
        };
        let req = CleanupRequest::Recipient {
            address: address.clone(),
            original: address.clone(),
        };
        let sent = match tx.cleanup.as_mut() {
            Some(ch) => ch.send(&req).await.is_ok(),
            None => false,
        };
        if !sent {
            tx.cleanup = None;
            self.send(&reply(451, (4, 3, 0), "Error: queue file write error"));
            return Ok(());
        }
        tx.recipients.push(address);
        self.send(&reply(250, (2, 1, 5), "Ok"));
        Ok(())
    }

    async fn open_cleanup(&mut self) -> Result<(), String> {
        let t = self.settings().ipc_timeout.min(Duration::from_secs(60));
        let path = self.settings().cleanup_socket.clone();
        let mut ch = tokio::time::timeout(t, Channel::connect(&path))
            .await
            .map_err(|_| "timeout".to_string())?
            .map_err(|e| format!("{}: {e}", path.display()))?;
        let proto = self.proto();
        let mut attributes = vec![
            ("client_name".to_string(), "unknown".to_string()),
            ("client_address".to_string(), self.peer.ip().to_string()),
            ("client_port".to_string(), self.peer.port().to_string()),
            (
                "helo_name".to_string(),
                self.helo.clone().unwrap_or_default(),
            ),
            ("protocol".to_string(), proto.to_string()),
            ("origin".to_string(), "smtpd".to_string()),
            ("service".to_string(), self.settings().service_name.clone()),
        ];
        if let Some(tls) = &self.tls_info {
            attributes.push(("tls_info".to_string(), tls.clone()));
        }
        if let Some(login) = &self.sasl {
            attributes.push(("sasl_method".to_string(), login.method.name().to_string()));
            if self.settings().sasl_header {
                attributes.push(("sasl_username".to_string(), login.user.clone()));
            }
        }
        ch.send(&CleanupRequest::Open {
            attributes,
            flags: 0,
        })
        .await
        .map_err(|e| e.to_string())?;
        let id = match tokio::time::timeout(t, ch.recv::<CleanupReply>()).await {
            Ok(Ok(Some(CleanupReply::Opened { queue_id }))) => queue_id,
            Ok(Ok(Some(CleanupReply::Rejected { reason, .. }))) => return Err(reason),
            Ok(Ok(other)) => return Err(format!("unexpected reply {other:?}")),
            Ok(Err(e)) => return Err(e.to_string()),
            Err(_) => return Err("timeout".into()),
        };
        let Some(tx) = self.tx.as_mut() else {
            return Err("no transaction".into());
        };
        ch.send(&CleanupRequest::Sender {
            address: tx.sender.clone(),
        })
        .await
        .map_err(|e| e.to_string())?;
        match &self.sasl {
            Some(login) => info!(
                "{id}: client={}, sasl_method={}, sasl_username={}",
                self.client,
                login.method.name(),
                login.user
            ),
            None => info!("{id}: client={}", self.client),
        }
        tx.queue_id = Some(id);
        tx.cleanup = Some(ch);
        Ok(())
    }

    async fn data(&mut self) -> Result<(), End> {
        match &self.tx {
            None => {
                return self
                    .error(reply(503, (5, 5, 1), "Error: need RCPT command"))
                    .await;
            }
            Some(t) if t.recipients.is_empty() => {
                return self
                    .error(reply(503, (5, 5, 1), "Error: need RCPT command"))
                    .await;
            }
            Some(t) if t.chunks.is_some() => {
                return self
                    .error(reply(
                        503,
                        (5, 5, 1),
                        "Error: DATA cannot follow BDAT in one transaction",
                    ))
                    .await;
            }
            _ => {}
        }
        if self.reader.buffered_len() > 0 {
            // RFC 2920: DATA must be the last command of a pipelined group.
            // Postfix answers "improper command pipelining" here and so do we,
            // since the bytes after DATA cannot be the message yet.
            // What follows may be message text: treating it as commands would
            // let a client smuggle commands, so hang up instead.
            let _ = self.reader.take_buffered();
            self.tx = None;
            info!(
                "improper command pipelining after DATA from {}",
                self.client
            );
            self.send(&reply(
                554,
                (5, 5, 0),
                "Error: improper command pipelining after DATA, closing connection",
            ));
            let _ = self.flush().await;
            return Err(End::HungUp);
        }
        self.send(&Reply::new(354, None, "End data with <CR><LF>.<CR><LF>"));
        self.flush().await?;
        let mut dec = DataDecoder::new(self.settings().message_size_limit);
        let mut chunk: Vec<u8> = Vec::with_capacity(CHUNK_SIZE * 2);
        let mut cleanup_ok = true;
        let mut buf = vec![0u8; 64 * 1024];
        let t = self.settings().timeout;
        loop {
            let n = match tokio::time::timeout(t, self.stream.read(&mut buf)).await {
                Ok(Ok(0)) | Ok(Err(_)) => return Err(End::Lost),
                Ok(Ok(n)) => n,
                Err(_) => return Err(End::Timeout),
            };
            let progress = dec.feed(&buf[..n], &mut chunk);
            if chunk.len() >= CHUNK_SIZE || matches!(progress, DataProgress::Done { .. }) {
                if cleanup_ok && !dec.too_big() && !chunk.is_empty() {
                    cleanup_ok = self.send_content(std::mem::take(&mut chunk)).await;
                }
                chunk.clear();
            }
            if let DataProgress::Done { consumed } = progress {
                // Whatever follows the end of data are the next commands.
                self.reader.push(&buf[consumed..n]);
                break;
            }
        }
        self.end_of_message(
            dec.size(),
            dec.too_big(),
            dec.saw_bare_lf() || dec.saw_bare_cr(),
            cleanup_ok,
        )
        .await
    }

    /// BDAT (RFC 3030): reads exactly `size` octets of the message, hands
    /// them to cleanup, and after the LAST chunk ends the message as DATA
    /// does (250 only once the queue file is on disk). Whatever happens, the
    /// `size` octets are consumed, so the session stays in step.
    async fn bdat(&mut self, size: u64, last: bool) -> Result<(), End> {
        let ready = matches!(&self.tx, Some(t) if !t.recipients.is_empty());
        if !ready {
            self.skip_bytes(size).await?;
            return self
                .error(reply(503, (5, 5, 1), "Error: need RCPT command"))
                .await;
        }
        let limit = self.settings().message_size_limit;
        let mut chunks = self
            .tx
            .as_mut()
            .and_then(|t| t.chunks.take())
            .unwrap_or_else(|| Chunks {
                decoder: ChunkDecoder::new(limit),
                cleanup_ok: true,
            });
        let mut out: Vec<u8> = Vec::with_capacity(CHUNK_SIZE * 2);
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
            self.flush().await?;
        }
        let mut buf = vec![0u8; left.clamp(1, 64 * 1024) as usize];
        let t = self.settings().timeout;
        while left > 0 {
            let want = (buf.len() as u64).min(left) as usize;
            let n = match tokio::time::timeout(t, self.stream.read(&mut buf[..want])).await {
                Ok(Ok(0)) | Ok(Err(_)) => return Err(End::Lost),
                Ok(Ok(n)) => n,
                Err(_) => return Err(End::Timeout),
            };
            chunks.decoder.feed(&buf[..n], &mut out);
            left -= n as u64;
            if out.len() >= CHUNK_SIZE {
                if chunks.cleanup_ok && !chunks.decoder.too_big() {
                    chunks.cleanup_ok = self.send_content(std::mem::take(&mut out)).await;
                }
                out.clear();
            }
        }
        if last {
            chunks.decoder.finish(&mut out);
        }
        if chunks.cleanup_ok && !chunks.decoder.too_big() && !out.is_empty() {
            chunks.cleanup_ok = self.send_content(out).await;
        }
        let d = &chunks.decoder;
        if last || d.too_big() {
            // Too big: refused now and the transaction is over (later
            // chunks get 503 and are skipped).
            return self
                .end_of_message(
                    d.size(),
                    d.too_big(),
                    d.saw_bare_lf() || d.saw_bare_cr(),
                    chunks.cleanup_ok,
                )
                .await;
        }
        if let Some(t) = self.tx.as_mut() {
            t.chunks = Some(chunks);
        }
        self.send(&reply(250, (2, 0, 0), format!("Ok: {size} bytes")));
        Ok(())
    }

    /// The end of a message (DATA's terminator, BDAT LAST): refuses it when
    /// it was too big or had bare line ends under smtpd_forbid_bare_newline
    /// = reject, else asks cleanup to commit it and relays the answer. The
    /// transaction is over either way.
    async fn end_of_message(
        &mut self,
        size: u64,
        too_big: bool,
        bare_newline: bool,
        cleanup_ok: bool,
    ) -> Result<(), End> {
        let Some(mut tx) = self.tx.take() else {
            return Ok(());
        };
        let id = tx.queue_id.clone().unwrap_or_else(|| "NOQUEUE".into());
        if too_big {
            info!(
                "{id}: reject: message size {size} exceeds limit from {}",
                self.client
            );
            self.send(&reply(552, (5, 3, 4), "Error: message file too big"));
            return Ok(());
        }
        if bare_newline && self.settings().bare_newline == BareNewline::Reject {
            info!(
                "{id}: reject: bare <LF> in message content from {}",
                self.client
            );
            self.send(&reply(550, (5, 5, 2), "Error: bare <LF> received"));
            return Ok(());
        }
        if !cleanup_ok {
            self.send(&reply(451, (4, 3, 0), "Error: queue file write error"));
            return Ok(());
        }
        let Some(ch) = tx.cleanup.as_mut() else {
            self.send(&reply(451, (4, 3, 0), "Error: queue file write error"));
            return Ok(());
        };
        if ch.send(&CleanupRequest::End).await.is_err() {
            self.send(&reply(451, (4, 3, 0), "Error: queue file write error"));
            return Ok(());
        }
        let answer =
            tokio::time::timeout(self.settings().ipc_timeout, ch.recv::<CleanupReply>()).await;
        let r = match answer {
            Ok(Ok(Some(CleanupReply::Queued { queue_id }))) => {
                reply(250, (2, 0, 0), format!("Ok: queued as {queue_id}"))
            }
            Ok(Ok(Some(CleanupReply::Rejected {
                temporary,
                dsn,
                reason,
            }))) => {
                let ec = parse_dsn(&dsn).unwrap_or(if temporary { (4, 3, 0) } else { (5, 3, 0) });
                let code = if temporary { 451 } else { 554 };
                let r = reply(code, ec, format!("Error: {reason}"));
                info!(
                    "{id}: reject: DATA from {}: {r}; from=<{}>",
                    self.client, tx.sender
                );
                r
            }
            other => {
                warn!("{id}: no answer from cleanup: {other:?}");
                reply(451, (4, 3, 0), "Error: queue file write error")
            }
        };
        self.send(&r);
        Ok(())
    }

    async fn send_content(&mut self, data: Vec<u8>) -> bool {
        let Some(ch) = self.tx.as_mut().and_then(|t| t.cleanup.as_mut()) else {
            return false;
        };
        ch.send(&CleanupRequest::Content { data }).await.is_ok()
    }
}

/// True for a command line whose verb is BDAT (whatever its arguments).
fn is_bdat(line: &[u8]) -> bool {
    line.len() >= 4
        && line[..4].eq_ignore_ascii_case(b"BDAT")
        && line.get(4).is_none_or(|&b| b == b' ' || b == b'\t')
}

fn parse_dsn(s: &str) -> Option<(u8, u16, u16)> {
    let mut it = s.split('.');
    let a = it.next()?.parse().ok()?;
    let b = it.next()?.parse().ok()?;
    let c = it.next()?.parse().ok()?;
    if it.next().is_some() || !(2..=5).contains(&a) {
        return None;
    }
    Some((a, b, c))
}
