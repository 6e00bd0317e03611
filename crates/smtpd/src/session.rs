//! One SMTP session: the tokio driver around the sans-I/O session of
//! postern-smtp-proto ([`postern_smtp_proto::server`]).
//!
//! The protocol (states, the command table, replies, limits, pipelining,
//! DATA and BDAT framing, the STARTTLS discard) is all in the proto
//! session; this driver does the I/O with smtpd_timeout, the TLS handshake,
//! and answers the policy hooks: restrictions at RCPT, the cleanup stream
//! (opened at the first accepted recipient, as Postfix's
//! smtpd_delay_open_until_valid_rcpt), the auth service for AUTH, and the
//! Postfix-format log lines.
//!
//! SECURITY: what this driver adds to the proto session's rules: the
//! password from an AUTH exchange goes only to the auth service and is
//! wiped after the request; "250 Ok: queued as" is only cleanup's answer
//! once the queue file is durable.

use crate::Smtpd;
use crate::restrictions::{Decision, Request};
use crate::stream::{HandshakeError, Stream};
use postern_ipc::messages::{AuthReply, AuthRequest};
use postern_ipc::{Channel, CleanupClient, CleanupError};
use postern_sasl::{Exchange, Mechanism, SaslError, Step};
use postern_smtp_proto::server::{self, AuthStep, End, Notice, RcptTo, SaslLogin, Session, reply};
use postern_smtp_proto::{Reply, ReversePath};
use std::net::SocketAddr;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tracing::{info, warn};

/// What the session needs from outside: the socket, cleanup, auth.
struct Driver<'a> {
    smtpd: &'a Smtpd,
    stream: Stream,
    /// The TLS session description once TLS is active.
    tls_info: Option<String>,
    peer: SocketAddr,
    client: String,
    /// The cleanup stream of the current transaction, from its first
    /// accepted recipient on.
    cleanup: Option<CleanupClient>,
    queue_id: Option<String>,
    /// The SASL exchange in progress.
    exchange: Option<Exchange>,
}

/// Serves one client until it quits or the connection ends.
pub async fn run(smtpd: &Smtpd, stream: TcpStream, peer: SocketAddr) {
    let _ = stream.set_nodelay(true);
    // No reverse lookup yet (the policy issue adds DNS): Postfix's "unknown".
    let client = format!("unknown[{}]", peer.ip());
    info!("connect from {client}");
    let mut d = Driver {
        smtpd,
        stream: Stream::Plain(stream),
        tls_info: None,
        peer,
        client,
        cleanup: None,
        queue_id: None,
        exchange: None,
    };
    let mut s = Session::new(smtpd.settings.session.clone());
    if smtpd.settings.tls_wrappermode {
        // Implicit TLS (RFC 8314): the handshake comes before the banner.
        if server::Driver::start_tls(&mut d, &s).await.is_err() {
            report(&d, &s);
            return;
        }
        s.set_tls_active();
    }
    match s.run(&mut d).await {
        Ok(()) | Err(End::HungUp) => {}
        Err(End::Lost) => info!(
            "lost connection after {} from {}",
            s.last_command(),
            d.client
        ),
        Err(End::Timeout) => {
            info!("timeout after {} from {}", s.last_command(), d.client);
            let r = format!(
                "421 4.4.2 {} Error: timeout exceeded\r\n",
                smtpd.settings.session.hostname
            );
            let _ = tokio::time::timeout(Duration::from_secs(5), d.stream.write_all(r.as_bytes()))
                .await;
        }
    }
    let _ = tokio::time::timeout(Duration::from_secs(5), d.stream.shutdown()).await;
    report(&d, &s);
}

/// Logs the per-session command statistics (Postfix's disconnect line).
fn report(d: &Driver<'_>, s: &Session) {
    info!("disconnect from {} {}", d.client, s.stats());
}

impl server::Driver for Driver<'_> {
    async fn read(&mut self, buf: &mut [u8]) -> Result<usize, End> {
        let t = self.smtpd.settings.timeout;
        match tokio::time::timeout(t, self.stream.read(buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) => Err(End::Lost),
            Ok(Ok(n)) => Ok(n),
            Err(_) => Err(End::Timeout),
        }
    }

    async fn write(&mut self, bytes: &[u8]) -> Result<(), End> {
        let t = self.smtpd.settings.timeout;
        let write = async {
            self.stream.write_all(bytes).await?;
            self.stream.flush().await
        };
        match tokio::time::timeout(t, write).await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(_)) => Err(End::Lost),
            Err(_) => Err(End::Timeout),
        }
    }

    async fn sleep(&mut self, d: Duration) {
        tokio::time::sleep(d).await;
    }

    /// Does the server side of the handshake on the current stream. On
    /// failure logs as Postfix does and the session is over.
    async fn start_tls(&mut self, s: &Session) -> Result<(), End> {
        let Some(acceptor) = self.smtpd.tls.clone() else {
            return Err(End::HungUp);
        };
        let t = self.smtpd.settings.timeout;
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
                    s.last_command(),
                    self.client
                );
                Err(End::HungUp)
            }
            Err(HandshakeError::Failed(why)) => {
                warn!("TLS library problem: {why}");
                info!(
                    "lost connection after {} from {}",
                    s.last_command(),
                    self.client
                );
                Err(End::HungUp)
            }
        }
    }

    async fn rcpt(&mut self, s: &Session, to: &RcptTo) -> Result<(), Reply> {
        let null = ReversePath::Null;
        let request = Request {
            client_ip: self.peer.ip(),
            client: &self.client,
            helo: s.helo(),
            sasl_user: s.sasl().map(|l| l.user.as_str()),
            sender: s.sender().unwrap_or(&null),
            recipient: &to.address,
        };
        let decision = self
            .smtpd
            .restrictions
            .check(&mut self.smtpd.policy.borrow_mut(), &request);
        if let Decision::Refuse(r) = decision {
            self.reject_log(s, &r, &to.address.to_string());
            return Err(r);
        }
        // First accepted recipient: open the cleanup stream (Postfix's
        // smtpd_delay_open_until_valid_rcpt), so the queue ID exists from here on.
        if self.cleanup.is_none()
            && let Err(why) = self.open_cleanup(s).await
        {
            warn!("{}: cannot open cleanup stream: {why}", self.client);
            return Err(reply(451, (4, 3, 0), "Error: queue file write error"));
        }
        let sent = match self.cleanup.as_mut() {
            Some(c) => c
                .recipient_dsn(
                    &to.address,
                    &to.address.to_string(),
                    to.notify,
                    to.orcpt.clone(),
                )
                .await
                .is_ok(),
            None => false,
        };
        if !sent {
            self.cleanup = None;
            return Err(reply(451, (4, 3, 0), "Error: queue file write error"));
        }
        Ok(())
    }

    async fn content(&mut self, _: &Session, data: Vec<u8>) -> bool {
        let Some(c) = self.cleanup.as_mut() else {
            return false;
        };
        c.content(&data).await.is_ok()
    }

    /// Asks cleanup to commit the message and relays its answer.
    async fn data_end(&mut self, s: &Session) -> Reply {
        let id = self.queue_id();
        let Some(c) = self.cleanup.take() else {
            return reply(451, (4, 3, 0), "Error: queue file write error");
        };
        match c.commit().await {
            Ok(queue_id) => reply(250, (2, 0, 0), format!("Ok: queued as {queue_id}")),
            Err(CleanupError::Rejected(status)) => {
                let c = status.code();
                let ec = (c.0, c.1, c.2);
                // 451 or 554, whatever the code's subject (as before).
                let code = if status.is_temporary() { 451 } else { 554 };
                let r = reply(code, ec, format!("Error: {}", status.text()));
                info!(
                    "{id}: reject: DATA from {}: {r}; from=<{}>",
                    self.client,
                    s.sender().map(|r| r.bare()).unwrap_or_default()
                );
                r
            }
            Err(CleanupError::Unavailable(why)) => {
                warn!("{id}: no answer from cleanup: {why}");
                reply(451, (4, 3, 0), "Error: queue file write error")
            }
        }
    }

    async fn auth_start(
        &mut self,
        _: &Session,
        mechanism: &str,
        initial: Option<&str>,
    ) -> AuthStep {
        let Some(mech) = Mechanism::from_name(mechanism) else {
            return AuthStep::Refused(reply(
                504,
                (5, 5, 4),
                "Unsupported authentication mechanism",
            ));
        };
        match Exchange::start(mech, initial) {
            Ok((ex, step)) => self.sasl_step(mech, ex, step).await,
            Err(e) => self.sasl_error(mech, e),
        }
    }

    async fn auth_response(&mut self, _: &Session, line: Option<&[u8]>) -> AuthStep {
        let Some(mut ex) = self.exchange.take() else {
            return AuthStep::Refused(reply(501, (5, 7, 0), "Authentication aborted"));
        };
        let mech = ex.mechanism();
        let Some(line) = line else {
            return self.sasl_error(mech, SaslError::TooLong);
        };
        let text = String::from_utf8_lossy(line).into_owned();
        match ex.respond(&text) {
            Ok(step) => self.sasl_step(mech, ex, step).await,
            Err(e) => self.sasl_error(mech, e),
        }
    }

    fn reset(&mut self) {
        self.cleanup = None;
        self.queue_id = None;
    }

    fn notice(&mut self, s: &Session, n: Notice) {
        let client = &self.client;
        match n {
            Notice::TooManyErrors => {
                info!("too many errors after {} from {client}", s.last_command())
            }
            Notice::BadBdat => info!("bad BDAT command from {client}: closing"),
            Notice::PlaintextDiscarded { bytes } => info!(
                "discarding {bytes} bytes of plaintext pipelined after STARTTLS from {client}"
            ),
            Notice::ImproperPipelining => {
                info!("improper command pipelining after DATA from {client}")
            }
            Notice::MessageTooBig { size } => info!(
                "{}: reject: message size {size} exceeds limit from {client}",
                self.queue_id()
            ),
            Notice::BareNewlineContent => info!(
                "{}: reject: bare <LF> in message content from {client}",
                self.queue_id()
            ),
        }
    }
}

impl Driver<'_> {
    fn settings(&self) -> &crate::Settings {
        &self.smtpd.settings
    }

    /// The queue ID for log lines ("NOQUEUE" before the first recipient).
    fn queue_id(&self) -> String {
        self.queue_id.clone().unwrap_or_else(|| "NOQUEUE".into())
    }

    fn reject_log(&self, s: &Session, r: &Reply, to: &str) {
        info!(
            "{}: reject: RCPT from {}: {}; from=<{}> to=<{to}> proto={} helo=<{}>",
            self.queue_id(),
            self.client,
            r,
            s.sender().map(|r| r.bare()).unwrap_or_default(),
            s.proto(),
            s.helo().unwrap_or("")
        );
    }

    async fn open_cleanup(&mut self, s: &Session) -> Result<(), CleanupError> {
        let mut attributes = vec![
            ("client_name".to_string(), "unknown".to_string()),
            ("client_address".to_string(), self.peer.ip().to_string()),
            ("client_port".to_string(), self.peer.port().to_string()),
            (
                "helo_name".to_string(),
                s.helo().unwrap_or_default().to_string(),
            ),
            ("protocol".to_string(), s.proto().to_string()),
            ("origin".to_string(), "smtpd".to_string()),
            ("service".to_string(), self.settings().service_name.clone()),
        ];
        if let Some(tls) = &self.tls_info {
            attributes.push(("tls_info".to_string(), tls.clone()));
        }
        if let Some(login) = s.sasl() {
            attributes.push(("sasl_method".to_string(), login.mechanism.clone()));
            if self.settings().sasl_header {
                attributes.push(("sasl_username".to_string(), login.user.clone()));
            }
        }
        let (Some(sender), Some(params)) = (s.sender(), s.mail_params()) else {
            return Err(CleanupError::Unavailable("no transaction".into()));
        };
        // RFC 3461's message-level parameters, under Postfix's queue file
        // attribute names.
        if let Some(ret) = params.ret {
            attributes.push(("dsn_ret".to_string(), ret.to_string()));
        }
        if let Some(envid) = &params.envid {
            attributes.push(("dsn_envid".to_string(), envid.clone()));
        }
        let mut c = CleanupClient::open(
            &self.settings().cleanup_socket,
            attributes,
            0,
            self.settings().ipc_timeout,
        )
        .await?;
        c.sender(sender).await?;
        let id = c.queue_id().to_string();
        match s.sasl() {
            Some(login) => info!(
                "{id}: client={}, sasl_method={}, sasl_username={}",
                self.client, login.mechanism, login.user
            ),
            None => info!("{id}: client={}", self.client),
        }
        self.queue_id = Some(id);
        self.cleanup = Some(c);
        Ok(())
    }

    /// The next step of an exchange: a challenge for the client, or the
    /// credentials checked by the auth service.
    async fn sasl_step(&mut self, mech: Mechanism, ex: Exchange, step: Step) -> AuthStep {
        let creds = match step {
            Step::Challenge(c) => {
                self.exchange = Some(ex);
                return AuthStep::Challenge(postern_sasl::encode(c));
            }
            Step::Done(c) => c,
        };
        let verdict = self.verify(&creds.username, creds.password.expose()).await;
        drop(creds);
        match verdict {
            Ok(AuthReply::Verified { user }) => AuthStep::Success(SaslLogin {
                user,
                mechanism: mech.name().to_string(),
            }),
            Ok(AuthReply::TempFail { reason }) => {
                warn!(
                    "{}: SASL {} authentication failed: {reason}",
                    self.client,
                    mech.name()
                );
                AuthStep::TempFail(reply(454, (4, 7, 0), "Temporary authentication failure"))
            }
            Ok(AuthReply::Failed) => self.auth_failed(mech, "authentication failure"),
            Ok(other) => {
                warn!(
                    "SASL authentication problem: unexpected answer from auth service: {other:?}"
                );
                self.auth_unavailable(mech)
            }
            Err(why) => {
                warn!("SASL authentication failure: {why}");
                self.auth_unavailable(mech)
            }
        }
    }

    /// The auth service could not answer: 454, logged with Postfix's words
    /// (which fail2ban deliberately does not count against the client).
    fn auth_unavailable(&self, mech: Mechanism) -> AuthStep {
        warn!(
            "{}: SASL {} authentication failed: Connection lost to authentication server",
            self.client,
            mech.name()
        );
        AuthStep::TempFail(reply(454, (4, 7, 0), "Temporary authentication failure"))
    }

    /// A failed login: 535 and the warning fail2ban's postfix filter reads.
    fn auth_failed(&self, mech: Mechanism, why: &str) -> AuthStep {
        warn!(
            "{}: SASL {} authentication failed: {why}",
            self.client,
            mech.name()
        );
        AuthStep::Refused(reply(
            535,
            (5, 7, 8),
            format!("Error: authentication failed: {why}"),
        ))
    }

    /// A SASL exchange that went wrong before any password was checked.
    fn sasl_error(&self, mech: Mechanism, e: SaslError) -> AuthStep {
        match e {
            SaslError::Aborted => {
                AuthStep::Refused(reply(501, (5, 7, 0), "Authentication aborted"))
            }
            SaslError::BadBase64 => {
                AuthStep::Refused(reply(501, (5, 5, 2), "Error: invalid base64 data"))
            }
            SaslError::TooLong => AuthStep::Refused(reply(
                500,
                (5, 5, 6),
                "Authentication Exchange line is too long",
            )),
            // A malformed message or proxy authorization counts as a failed
            // login (it is one, as far as a password guesser is concerned).
            SaslError::Malformed(_) | SaslError::ProxyRefused | SaslError::Finished => {
                self.auth_failed(mech, &e.to_string())
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
}
