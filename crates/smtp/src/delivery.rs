//! One delivery request: next hop → servers → SMTP sessions → one status
//! per recipient, each logged the way Postfix's smtp(8) logs it.

use crate::nexthop::{self, Nexthop};
use crate::{Settings, TlsLevel};
use postern_dns::DnsError;
use postern_ipc::{DeliveryRequest, DeliveryStatus};
use postern_queue::content_reader_for;
use postern_smtp_proto::client::{
    self, Action, Disposition, GreetingVerdict, HeloVerdict, Outcome, RcptResult, ReplyParser,
    ServerReply, Stage, Transaction, TransactionOptions,
};
use std::fs::File;
use std::io::Read;
use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant, SystemTime};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tracing::info;

/// One address to try, with the name logs give it.
#[derive(Clone, Debug)]
struct Target {
    name: String,
    addr: SocketAddr,
    /// An LMTP server's Unix socket (then `addr` is unused).
    unix: Option<std::path::PathBuf>,
}

impl Target {
    /// `mx.example[192.0.2.1]`, as Postfix names a server in texts
    /// (`host[/path/to/socket]` for a Unix socket).
    fn server(&self) -> String {
        match &self.unix {
            Some(p) => format!("{}[{}]", self.name, p.display()),
            None => format!("{}[{}]", self.name, self.addr.ip()),
        }
    }
    /// `mx.example[192.0.2.1]:25`, the relay= of the logs.
    fn relay(&self) -> String {
        match &self.unix {
            Some(_) => self.server(),
            None => format!("{}:{}", self.server(), self.addr.port()),
        }
    }
}

/// Who the TLS handshake is with: the server's host name and the next-hop
/// domain it serves (for smtp_tls_security_level = secure).
pub struct TargetName<'a> {
    /// The MX (or `[host]`) name.
    pub host: &'a str,
    /// The next-hop domain, lower-cased.
    pub nexthop: &'a str,
}

/// What became of a request: (index, status) for every recipient, and
/// whether the destination itself failed (no server could be used).
pub struct Delivered {
    /// One status per recipient of the request.
    pub results: Vec<(u32, DeliveryStatus)>,
    /// Some(reason) when no server of the next hop got as far as a mail
    /// transaction: qmgr suspends the destination for a while.
    pub site_failure: Option<String>,
}

/// Delivers the request.
pub async fn deliver(settings: &Settings, req: &DeliveryRequest, file: &File) -> Delivered {
    let mut site_failure = None;
    let results = deliver_to(settings, req, file, &mut site_failure).await;
    Delivered {
        results,
        site_failure,
    }
}

async fn deliver_to(
    settings: &Settings,
    req: &DeliveryRequest,
    file: &File,
    site_failure: &mut Option<String>,
) -> Vec<(u32, DeliveryStatus)> {
    let started = Instant::now();
    let queued_for = SystemTime::now()
        .duration_since(req.arrival)
        .unwrap_or_default();
    let mut log = Log {
        req,
        queued_for,
        started,
        setup: Duration::ZERO,
        results: Vec::new(),
    };
    let nexthop = if req.nexthop.is_empty() {
        // qmgr names the destination; without one use the first domain.
        req.recipients
            .first()
            .map(|r| r.address.domain_lowercase())
            .unwrap_or_default()
    } else {
        req.nexthop.clone()
    };
    let nexthop_host = nexthop::parse(&nexthop, settings.default_port)
        .map(|n| n.host)
        .unwrap_or_default();
    let facts = match ContentFacts::read(file, req) {
        Ok(f) => f,
        Err(e) => {
            let all: Vec<usize> = (0..req.recipients.len()).collect();
            let why = format!("cannot read queue file: {e}");
            log.finish_all(&all, "none", DeliveryStatus::temporary(3, 0, why));
            return log.results;
        }
    };
    let mut state = Attempt {
        pending: (0..req.recipients.len()).collect(),
        last_error: String::from("no server reachable"),
        last_status: None,
        last_relay: None,
    };
    let mut sessions = 0;
    let mut transactions = 0;
    // A session this process keeps from its last delivery to the same next
    // hop (smtp_connection_cache_time_limit): no DNS, no connect, no EHLO.
    if let Some(mut cached) = settings.cache.take(&nexthop) {
        if cached.conn.rset(settings).await.is_ok() {
            sessions += 1;
            log.setup = Duration::ZERO;
            let outcome = cached
                .conn
                .deliver(
                    settings,
                    &cached.target,
                    cached.caps.clone(),
                    req,
                    file,
                    &facts,
                    &mut state,
                    &mut log,
                )
                .await;
            settings
                .cache
                .release(
                    settings,
                    &nexthop,
                    cached.target,
                    cached.caps,
                    cached.conn,
                    outcome,
                )
                .await;
        } else {
            cached.conn.quit(settings).await;
        }
        if state.pending.is_empty() {
            return log.results;
        }
    }
    // Resolved only when no cached session served the next hop.
    let targets = match resolved(settings, &nexthop).await {
        Ok(t) => t,
        Err(status) => {
            log.finish_all(&state.pending, "none", status);
            return log.results;
        }
    };
    for target in &targets {
        if state.pending.is_empty() || sessions >= settings.session_limit {
            break;
        }
        let setup_start = Instant::now();
        let mut conn = match Conn::connect(target, &nexthop_host, settings.connect_timeout).await {
            Ok(c) => c,
            Err(why) => {
                state.last_error = why;
                state.last_status = None;
                state.last_relay = None;
                continue;
            }
        };
        sessions += 1;
        let tls = settings.tls_level_for(&[nexthop.trim(), &nexthop_host]);
        let mut hello = conn.hello(settings, target, tls).await;
        if let Err(HelloError {
            retry_plain: true,
            status,
        }) = &hello
        {
            // Opportunistic TLS failed: once more in plaintext, as Postfix.
            info!("{}; trying again without TLS", status.text());
            hello = match Conn::connect(target, &nexthop_host, settings.connect_timeout).await {
                Ok(c) => {
                    conn = c;
                    conn.hello(settings, target, TlsLevel::None).await
                }
                Err(why) => Err(HelloError::defer(why)),
            };
        }
        if let Ok(caps) = &hello {
            let port = target.addr.port().to_string();
            let bracketed = format!("[{}]", target.name);
            let with_port = format!("[{}]:{port}", target.name);
            let keys = [
                nexthop.trim(),
                with_port.as_str(),
                bracketed.as_str(),
                target.name.as_str(),
                nexthop_host.as_str(),
            ];
            if let Err(e) = conn.authenticate(settings, target, caps, &keys).await {
                hello = Err(e);
            }
        }
        match hello {
            Ok(caps) => {
                log.setup = setup_start.elapsed();
                transactions += 1;
                let outcome = conn
                    .deliver(
                        settings,
                        target,
                        caps.clone(),
                        req,
                        file,
                        &facts,
                        &mut state,
                        &mut log,
                    )
                    .await;
                settings
                    .cache
                    .release(settings, &nexthop, target.clone(), caps, conn, outcome)
                    .await;
            }
            Err(e) => {
                state.last_status = Some(e.status);
                state.last_relay = Some(target.relay());
                conn.quit(settings).await;
            }
        }
    }
    let status = state
        .last_status
        .take()
        .unwrap_or_else(|| DeliveryStatus::temporary(4, 1, state.last_error.clone()));
    if transactions == 0 && !targets.is_empty() && !state.pending.is_empty() {
        *site_failure = Some(status.text().to_string());
    }
    let relay = state
        .last_relay
        .clone()
        .unwrap_or_else(|| "none".to_string());
    log.finish_all(&state.pending, &relay, status);
    log.results
}

/// Where a delivery stands between sessions.
struct Attempt {
    /// Recipients (positions in the request) without a final result.
    pending: Vec<usize>,
    /// Why they were not delivered yet, for their deferral.
    last_error: String,
    /// Or a status of its own (TLS required but missing, a broken
    /// conversation with its 4.4.2, ...), which wins.
    last_status: Option<DeliveryStatus>,
    /// The server that last failed after a connection was made (the
    /// relay= of the deferral; none when nothing connected).
    last_relay: Option<String>,
}

/// The next hop's servers, or the status every recipient gets.
async fn resolved(settings: &Settings, nexthop: &str) -> Result<Vec<Target>, DeliveryStatus> {
    match nexthop::parse(nexthop, settings.default_port) {
        Err(nexthop::BadNexthop(why)) => Err(DeliveryStatus::temporary(3, 5, why)),
        Ok(nh) => targets(settings, &nh).await,
    }
}

/// The servers to try, in order: MX hosts (or the `[host]`'s addresses)
/// as postern-dns orders them; a DNS failure is the status for everyone.
async fn targets(settings: &Settings, nh: &Nexthop) -> Result<Vec<Target>, DeliveryStatus> {
    if let Some(path) = &nh.unix {
        return Ok(vec![Target {
            name: settings.myhostname.clone(),
            addr: SocketAddr::from(([0, 0, 0, 0], 0)),
            unix: Some(path.clone()),
        }]);
    }
    let dns_status = |e: DnsError| match e {
        DnsError::Temporary(m) => DeliveryStatus::temporary(4, 3, m),
        DnsError::NotFound(m) => DeliveryStatus::permanent(4, 4, m),
        DnsError::NullMx(m) => DeliveryStatus::permanent(1, 10, m),
    };
    let mut out = Vec::new();
    if nh.mx {
        let hosts = settings
            .resolver
            .mx_hosts(&nh.host, &settings.dns)
            .await
            .map_err(dns_status)?;
        // An MX that is this host: only the better ones may be used, and
        // if this host is the best there is nowhere to send the mail.
        let own = hosts
            .iter()
            .find(|h| h.name.eq_ignore_ascii_case(&settings.myhostname))
            .map(|h| h.preference);
        for h in &hosts {
            if own.is_some_and(|p| h.preference >= p) {
                continue;
            }
            for ip in &h.addrs {
                out.push(Target {
                    name: h.name.clone(),
                    addr: SocketAddr::new(*ip, nh.port),
                    unix: None,
                });
            }
        }
        if out.is_empty() && own.is_some() {
            return Err(DeliveryStatus::permanent(
                4,
                6,
                format!("mail for {} loops back to myself", nh.host),
            ));
        }
    } else {
        let addrs: Vec<IpAddr> = settings
            .resolver
            .host_addrs(&nh.host, &settings.dns)
            .await
            .map_err(dns_status)?;
        for ip in addrs {
            out.push(Target {
                name: nh.host.clone(),
                addr: SocketAddr::new(ip, nh.port),
                unix: None,
            });
        }
    }
    Ok(out)
}

/// The status qmgr gets and the log shows for a recipient's result.
fn status_of(target: &Target, r: &RcptResult) -> DeliveryStatus {
    let text = result_text(target, r);
    let postern_status::EnhancedCode(_, subject, detail) = r.enhanced;
    match r.disposition {
        Disposition::Sent => DeliveryStatus::success(subject, detail, text),
        Disposition::Deferred => DeliveryStatus::temporary(subject, detail, text),
        Disposition::Bounced => DeliveryStatus::permanent(subject, detail, text),
    }
}

/// Postfix's words: the server's reply as is for a success, "host X
/// said: REPLY (in reply to ... command)" for a refusal, our own text for
/// what was decided here.
fn result_text(target: &Target, r: &RcptResult) -> String {
    match (r.disposition, r.from_server()) {
        (Disposition::Sent, _) => r.text.clone(),
        (_, true) => format!("host {} said: {}", target.server(), r.diagnostic()),
        (_, false) => r.text.clone(),
    }
}

/// The facts the MAIL command needs, from one pass over the content.
struct ContentFacts {
    /// Octets as sent (each LF becomes CRLF).
    size: u64,
    /// Any octet over 127.
    eight_bit: bool,
}

impl ContentFacts {
    fn read(file: &File, req: &DeliveryRequest) -> std::io::Result<ContentFacts> {
        let mut reader = content_reader_for(file, req.content_offset, req.content_len);
        let mut buf = vec![0u8; 64 * 1024];
        let (mut lines, mut eight_bit) = (0u64, false);
        loop {
            let n = reader.read(&mut buf)?;
            if n == 0 {
                break;
            }
            lines += buf[..n].iter().filter(|&&b| b == b'\n').count() as u64;
            eight_bit |= buf[..n].iter().any(|&b| b >= 0x80);
        }
        Ok(ContentFacts {
            size: req.content_len + lines,
            eight_bit,
        })
    }
}

/// The connection, before and after STARTTLS.
enum Stream {
    Plain(TcpStream),
    Unix(tokio::net::UnixStream),
    Tls(Box<postern_tls::ClientTlsStream<TcpStream>>),
    /// Between taking the plain stream and getting the TLS one back.
    Gone,
}

impl Stream {
    async fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        match self {
            Stream::Plain(s) => s.read(buf).await,
            Stream::Unix(s) => s.read(buf).await,
            Stream::Tls(s) => s.read(buf).await,
            Stream::Gone => Ok(0),
        }
    }

    async fn write_all(&mut self, bytes: &[u8]) -> std::io::Result<()> {
        match self {
            Stream::Plain(s) => s.write_all(bytes).await,
            Stream::Unix(s) => s.write_all(bytes).await,
            Stream::Tls(s) => {
                s.write_all(bytes).await?;
                s.flush().await
            }
            Stream::Gone => Err(std::io::ErrorKind::NotConnected.into()),
        }
    }

    async fn shutdown(&mut self) {
        let _ = match self {
            Stream::Plain(s) => s.shutdown().await,
            Stream::Unix(s) => s.shutdown().await,
            Stream::Tls(s) => s.shutdown().await,
            Stream::Gone => Ok(()),
        };
    }
}

/// Why a server could not be used before any transaction.
struct HelloError {
    /// For the deferral (and the log).
    status: DeliveryStatus,
    /// The TLS handshake failed at an opportunistic level: Postfix tries
    /// the same server once more without TLS.
    retry_plain: bool,
}

impl HelloError {
    fn defer(text: String) -> HelloError {
        HelloError {
            status: DeliveryStatus::temporary(4, 1, text),
            retry_plain: false,
        }
    }
}

/// One SMTP connection.
struct Conn {
    stream: Stream,
    parser: ReplyParser,
    buf: Vec<u8>,
    /// The next-hop domain this connection serves.
    nexthop: String,
    /// `host[addr]`, for the texts of broken conversations.
    server: String,
}

impl Conn {
    async fn connect(target: &Target, nexthop: &str, timeout: Duration) -> Result<Conn, String> {
        let what = format!("connect to {}", target.relay());
        let stream = match &target.unix {
            Some(path) => {
                match tokio::time::timeout(timeout, tokio::net::UnixStream::connect(path)).await {
                    Ok(Ok(s)) => Stream::Unix(s),
                    Ok(Err(e)) => {
                        return Err(format!("{what}: {}", postern_service::log::io_reason(&e)));
                    }
                    Err(_) => return Err(format!("{what}: Connection timed out")),
                }
            }
            None => match tokio::time::timeout(timeout, TcpStream::connect(target.addr)).await {
                Ok(Ok(s)) => {
                    let _ = s.set_nodelay(true);
                    Stream::Plain(s)
                }
                Ok(Err(e)) => {
                    return Err(format!("{what}: {}", postern_service::log::io_reason(&e)));
                }
                Err(_) => return Err(format!("{what}: Connection timed out")),
            },
        };
        Ok(Conn {
            stream,
            parser: ReplyParser::new(),
            buf: vec![0u8; 16 * 1024],
            nexthop: nexthop.to_string(),
            server: target.server(),
        })
    }

    /// Reads one reply within `timeout`.
    async fn reply(&mut self, stage: Stage, timeout: Duration) -> Result<ServerReply, String> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            match self.parser.next_reply() {
                Ok(Some(r)) => return Ok(r),
                Ok(None) => {}
                Err(e) => {
                    return Err(format!(
                        "bad reply from {} while {}: {e}",
                        self.server,
                        stage.while_doing()
                    ));
                }
            }
            let read = tokio::time::timeout_at(deadline, self.stream.read(&mut self.buf)).await;
            match read {
                Ok(Ok(0)) => return Err(self.lost(stage, None)),
                Ok(Ok(n)) => self.parser.push(&self.buf[..n]),
                Ok(Err(e)) => return Err(self.lost(stage, Some(&e))),
                Err(_) => return Err(self.timed_out(stage)),
            }
        }
    }

    async fn send(&mut self, bytes: &[u8], stage: Stage, timeout: Duration) -> Result<(), String> {
        match tokio::time::timeout(timeout, self.stream.write_all(bytes)).await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(e)) => Err(self.lost(stage, Some(&e))),
            Err(_) => Err(self.timed_out(stage)),
        }
    }

    /// "lost connection with HOST while sending RCPT TO", Postfix's words.
    fn lost(&self, stage: Stage, e: Option<&std::io::Error>) -> String {
        let mut s = format!(
            "lost connection with {} while {}",
            self.server,
            stage.while_doing()
        );
        if let Some(e) = e {
            s.push_str(&format!(": {}", postern_service::log::io_reason(e)));
        }
        s
    }

    /// "conversation with HOST timed out while sending ...", Postfix's words.
    fn timed_out(&self, stage: Stage) -> String {
        format!(
            "conversation with {} timed out while {}",
            self.server,
            stage.while_doing()
        )
    }

    /// Greeting, EHLO (HELO when EHLO is refused) and STARTTLS as `tls`
    /// says: the server's capabilities, or why this server cannot be used.
    async fn hello(
        &mut self,
        settings: &Settings,
        target: &Target,
        tls: TlsLevel,
    ) -> Result<client::Capabilities, HelloError> {
        let greeting = self
            .reply(Stage::Greeting, settings.timeout(Stage::Greeting))
            .await
            .map_err(HelloError::defer)?;
        if let GreetingVerdict::Refused { reply, .. } = client::greeting_verdict(&greeting) {
            return Err(HelloError::defer(refused(target, &reply)));
        }
        let caps = self
            .ehlo(settings, target)
            .await
            .map_err(HelloError::defer)?;
        if tls == TlsLevel::None || target.unix.is_some() {
            return Ok(caps);
        }
        if !caps.starttls {
            if tls.mandatory() {
                return Err(HelloError {
                    status: DeliveryStatus::temporary(
                        7,
                        4,
                        format!(
                            "TLS is required, but was not offered by host {}",
                            target.server()
                        ),
                    ),
                    retry_plain: false,
                });
            }
            return Ok(caps);
        }
        self.starttls(settings, target, tls).await?;
        self.ehlo(settings, target).await.map_err(HelloError::defer)
    }

    /// AUTH with the smart host's credentials, when smtp_sasl_auth_enable
    /// is on, the server offers AUTH and smtp_sasl_password_maps has a
    /// login for it. The password goes only to the server, never to a log.
    async fn authenticate(
        &mut self,
        settings: &Settings,
        target: &Target,
        caps: &client::Capabilities,
        keys: &[&str],
    ) -> Result<(), HelloError> {
        if !settings.sasl || caps.auth.is_empty() {
            return Ok(());
        }
        let (user, password) = match settings.sasl_credentials(keys) {
            Ok(Some(c)) => c,
            Ok(None) => return Ok(()),
            Err(why) => return Err(HelloError::defer(why)),
        };
        let tls = matches!(self.stream, Stream::Tls(_));
        let fail = |text: String| HelloError {
            status: DeliveryStatus::temporary(7, 0, text),
            retry_plain: false,
        };
        if !settings.sasl_plaintext_allowed(tls) {
            return Err(fail(format!(
                "SASL authentication failed; cannot authenticate to server {}: no mechanism available{}",
                target.server(),
                if tls { "" } else { " without TLS" }
            )));
        }
        let mut auth = if caps.offers_auth("PLAIN") {
            client::AuthClient::plain("", &user, &password)
        } else if caps.offers_auth("LOGIN") {
            client::AuthClient::login(&user, &password)
        } else {
            return Err(fail(format!(
                "SASL authentication failed; cannot authenticate to server {}: no mechanism available",
                target.server()
            )));
        };
        let t = settings.timeout(Stage::Auth);
        let mut out = Vec::new();
        auth.start(&mut out)
            .map_err(|e| HelloError::defer(format!("bad SASL login: {e}")))?;
        loop {
            self.send(&out, Stage::Auth, t)
                .await
                .map_err(HelloError::defer)?;
            out.clear();
            let r = self
                .reply(Stage::Auth, t)
                .await
                .map_err(HelloError::defer)?;
            match auth.on_reply(&r, &mut out) {
                client::AuthStep::Send => {}
                client::AuthStep::Authenticated => return Ok(()),
                client::AuthStep::Failed(reply) => {
                    return Err(fail(format!(
                        "SASL authentication failed; server {} said: {}",
                        target.server(),
                        reply.full_text()
                    )));
                }
            }
        }
    }

    /// STARTTLS and the handshake; logs the session as Postfix does.
    async fn starttls(
        &mut self,
        settings: &Settings,
        target: &Target,
        tls: TlsLevel,
    ) -> Result<(), HelloError> {
        let t = settings.timeout(Stage::StartTls);
        let mut out = Vec::new();
        client::encode::starttls(&mut out);
        self.send(&out, Stage::StartTls, t)
            .await
            .map_err(HelloError::defer)?;
        let r = self
            .reply(Stage::StartTls, t)
            .await
            .map_err(HelloError::defer)?;
        match client::starttls_verdict(&r, &self.parser) {
            client::StartTlsVerdict::Handshake => {}
            client::StartTlsVerdict::InjectedData => {
                return Err(HelloError::defer(format!(
                    "host {} sent data after its STARTTLS reply, before the handshake",
                    target.server()
                )));
            }
            client::StartTlsVerdict::Refused(reply) if !tls.mandatory() => {
                info!(
                    "host {} refused to start TLS: {}; continuing without TLS",
                    target.server(),
                    reply.full_text()
                );
                return Ok(());
            }
            client::StartTlsVerdict::Refused(reply) => {
                return Err(HelloError {
                    status: DeliveryStatus::temporary(
                        7,
                        4,
                        format!(
                            "TLS is required, but host {} refused to start TLS: {}",
                            target.server(),
                            reply.full_text()
                        ),
                    ),
                    retry_plain: false,
                });
            }
        }
        let (config, name, verified) = settings
            .tls_client(
                tls,
                &TargetName {
                    host: &target.name,
                    nexthop: &self.nexthop,
                },
            )
            .map_err(|why| HelloError {
                status: DeliveryStatus::temporary(7, 5, why),
                retry_plain: false,
            })?;
        let Stream::Plain(tcp) = std::mem::replace(&mut self.stream, Stream::Gone) else {
            return Err(HelloError::defer("STARTTLS inside TLS".into()));
        };
        let connector = postern_tls::TlsConnector::from(config);
        let handshake = tokio::time::timeout(t, connector.connect(name, tcp)).await;
        match handshake {
            Ok(Ok(stream)) => {
                let (_, conn) = stream.get_ref();
                info!(
                    "{} TLS connection established to {}: {}",
                    if verified { "Verified" } else { "Untrusted" },
                    target.relay(),
                    postern_tls::describe(conn)
                );
                self.stream = Stream::Tls(Box::new(stream));
                self.parser.clear();
                Ok(())
            }
            Ok(Err(e)) => {
                let why = format!(
                    "TLS handshake with {} failed: {}",
                    target.relay(),
                    postern_service::log::io_reason(&e)
                );
                Err(HelloError {
                    retry_plain: !tls.mandatory(),
                    status: if verified {
                        DeliveryStatus::temporary(7, 5, why)
                    } else {
                        DeliveryStatus::temporary(4, 1, why)
                    },
                })
            }
            Err(_) => Err(HelloError {
                retry_plain: !tls.mandatory(),
                status: DeliveryStatus::temporary(
                    4,
                    1,
                    format!("TLS handshake with {} timed out", target.relay()),
                ),
            }),
        }
    }

    /// EHLO, or HELO when EHLO is refused.
    async fn ehlo(
        &mut self,
        settings: &Settings,
        target: &Target,
    ) -> Result<client::Capabilities, String> {
        let mut stage = if settings.lmtp {
            Stage::Lhlo
        } else {
            Stage::Ehlo
        };
        loop {
            let mut out = Vec::new();
            let encoded = match stage {
                Stage::Ehlo => client::encode::ehlo(&settings.helo_name, &mut out),
                Stage::Lhlo => client::encode::lhlo(&settings.helo_name, &mut out),
                _ => client::encode::helo(&settings.helo_name, &mut out),
            };
            encoded.map_err(|e| format!("bad smtp_helo_name: {e}"))?;
            let t = settings.timeout(stage);
            self.send(&out, stage, t).await?;
            let r = self.reply(stage, t).await?;
            match client::helo_verdict(stage, &r) {
                HeloVerdict::Proceed(caps) => return Ok(caps),
                HeloVerdict::FallBackToHelo => stage = Stage::Helo,
                HeloVerdict::TryNextHost { reply, .. } => return Err(refused(target, &reply)),
            }
        }
    }

    /// One transaction for the pending recipients: final results are
    /// logged, those to try at the next server stay pending.
    #[allow(clippy::too_many_arguments)]
    async fn deliver(
        &mut self,
        settings: &Settings,
        target: &Target,
        caps: client::Capabilities,
        req: &DeliveryRequest,
        file: &File,
        facts: &ContentFacts,
        state: &mut Attempt,
        log: &mut Log<'_>,
    ) -> Outcome {
        let slots = std::mem::take(&mut state.pending);
        let (results, outcome) = self
            .transaction(settings, target, caps, req, file, facts, &slots)
            .await;
        for (k, result) in results {
            let slot = slots[k];
            let retry_elsewhere = matches!(outcome, Outcome::TryNextHost(_))
                && result.disposition == Disposition::Deferred;
            if retry_elsewhere {
                state.last_error = result_text(target, &result);
                state.last_status = Some(status_of(target, &result));
                state.last_relay = Some(target.relay());
                state.pending.push(slot);
            } else {
                log.finish(slot, &target.relay(), status_of(target, &result));
            }
        }
        outcome
    }

    /// RSET and its 250: the session is in step (before reusing a cached
    /// one, or after a transaction that did not end at the end of data).
    async fn rset(&mut self, settings: &Settings) -> Result<(), String> {
        let t = settings.timeout(Stage::Rset);
        let mut out = Vec::new();
        client::encode::rset(&mut out);
        self.send(&out, Stage::Rset, t).await?;
        let r = self.reply(Stage::Rset, t).await?;
        if r.is_success() {
            Ok(())
        } else {
            Err(r.full_text())
        }
    }

    /// One mail transaction for the recipients at `slots`: the results
    /// (indexed like `slots`) and how it ended.
    #[allow(clippy::too_many_arguments)]
    async fn transaction(
        &mut self,
        settings: &Settings,
        target: &Target,
        caps: client::Capabilities,
        req: &DeliveryRequest,
        file: &File,
        facts: &ContentFacts,
        slots: &[usize],
    ) -> (Vec<(usize, RcptResult)>, Outcome) {
        let recipients: Vec<client::transaction::Recipient> = slots
            .iter()
            .map(|&s| {
                let r = &req.recipients[s];
                client::transaction::Recipient {
                    address: r.address.clone(),
                    notify: r.notify,
                    orcpt: r.orcpt.clone(),
                }
            })
            .collect();
        let smtputf8 = req.sender.mailbox().is_some_and(|m| !m.is_ascii())
            || recipients.iter().any(|r| !r.address.is_ascii());
        let attr = |name: &str| {
            req.attributes
                .iter()
                .find(|(n, _)| n == name)
                .map(|(_, v)| v.as_str())
        };
        let envelope = client::transaction::Envelope {
            sender: req.sender.clone(),
            recipients,
            ret: attr("dsn_ret").and_then(postern_smtp_proto::Ret::parse),
            envid: attr("dsn_envid").map(str::to_string),
            size: facts.size,
            eight_bit: facts.eight_bit,
            smtputf8,
        };
        let options = TransactionOptions {
            server: target.server(),
            protocol: if settings.lmtp {
                client::transaction::Protocol::Lmtp
            } else {
                client::transaction::Protocol::Smtp
            },
            ..TransactionOptions::default()
        };
        let mut tx = Transaction::new(caps, envelope, options);
        let mut content = Content::new(file, req);
        let mut results = Vec::new();
        let outcome = loop {
            let step = match tx.next_action() {
                Action::Done(outcome) => break outcome,
                Action::Send(bytes) => {
                    let stage = tx.stage();
                    self.send(&bytes, stage, settings.timeout(stage)).await
                }
                Action::Read(stage) => match self.reply(stage, settings.timeout(stage)).await {
                    Ok(r) => tx.on_reply(&r).map_err(|e| format!("{e:?}")),
                    Err(e) => Err(e),
                },
                Action::SendContent => {
                    let t = settings.timeout(Stage::DataContent);
                    match self.send_dot_stuffed(&mut content, t).await {
                        Ok(()) => tx.content_sent().map_err(|e| format!("{e:?}")),
                        Err(e) => Err(e),
                    }
                }
                Action::SendChunk => {
                    let t = settings.timeout(Stage::Bdat);
                    match content.next_chunk() {
                        Ok((chunk, last)) => match tx.bdat_command(chunk.len() as u64, last) {
                            Ok(mut cmd) => {
                                cmd.extend_from_slice(&chunk);
                                self.send(&cmd, Stage::Bdat, t).await
                            }
                            Err(e) => Err(format!("{e:?}")),
                        },
                        Err(e) => Err(format!("cannot read queue file: {e}")),
                    }
                }
            };
            if let Err(why) = step {
                tx.abort(why);
            }
            results.extend(tx.take_results());
        };
        results.extend(tx.take_results());
        (results, outcome)
    }

    async fn send_dot_stuffed(
        &mut self,
        content: &mut Content<'_>,
        t: Duration,
    ) -> Result<(), String> {
        let mut stuffer = client::stuff::DotStuffer::new();
        let mut out = Vec::with_capacity(70 * 1024);
        loop {
            out.clear();
            let n = content
                .read_raw()
                .map_err(|e| format!("cannot read queue file: {e}"))?;
            if n == 0 {
                stuffer.finish(&mut out);
                return self.send(&out, Stage::DataContent, t).await;
            }
            stuffer.feed(&content.buf[..n], &mut out);
            self.send(&out, Stage::DataContent, t).await?;
        }
    }

    /// QUIT, without waiting long for the answer; the connection closes.
    async fn quit(self, settings: &Settings) {
        self.quit_within(settings.timeout(Stage::Quit)).await
    }

    async fn quit_within(mut self, t: Duration) {
        let mut out = Vec::new();
        client::encode::quit(&mut out);
        let t = t.min(Duration::from_secs(5));
        if self.send(&out, Stage::Quit, t).await.is_ok() {
            let _ = self.reply(Stage::Quit, t).await;
        }
        self.stream.shutdown().await;
    }
}

/// "host X refused to talk to me: REPLY", Postfix's words.
fn refused(target: &Target, r: &ServerReply) -> String {
    format!(
        "host {} refused to talk to me: {}",
        target.server(),
        r.full_text()
    )
}

/// The message, read from the queue file descriptor piece by piece.
struct Content<'a> {
    reader: postern_queue::ContentReader<'a>,
    buf: Vec<u8>,
    normalizer: Option<client::stuff::CrlfNormalizer>,
}

impl<'a> Content<'a> {
    fn new(file: &'a File, req: &DeliveryRequest) -> Content<'a> {
        Content {
            reader: content_reader_for(file, req.content_offset, req.content_len),
            buf: vec![0u8; 64 * 1024],
            normalizer: Some(client::stuff::CrlfNormalizer::new()),
        }
    }

    fn read_raw(&mut self) -> std::io::Result<usize> {
        self.reader.read(&mut self.buf)
    }

    /// The next BDAT chunk (CRLF line ends) and whether it is the last.
    fn next_chunk(&mut self) -> std::io::Result<(Vec<u8>, bool)> {
        let mut out = Vec::new();
        let n = self.reader.read(&mut self.buf)?;
        match (n, self.normalizer.as_mut()) {
            (0, _) | (_, None) => {
                if let Some(norm) = self.normalizer.take() {
                    norm.finish(&mut out);
                }
                Ok((out, true))
            }
            (n, Some(norm)) => {
                norm.feed(&self.buf[..n], &mut out);
                Ok((out, false))
            }
        }
    }
}

/// The results of a request and their log lines.
struct Log<'a> {
    req: &'a DeliveryRequest,
    queued_for: Duration,
    started: Instant,
    setup: Duration,
    results: Vec<(u32, DeliveryStatus)>,
}

impl Log<'_> {
    fn finish_all(&mut self, slots: &[usize], relay: &str, status: DeliveryStatus) {
        for &s in slots {
            self.finish(s, relay, status.clone());
        }
    }

    /// Logs one recipient's final result in Postfix's format and keeps it.
    fn finish(&mut self, slot: usize, relay: &str, status: DeliveryStatus) {
        let r = &self.req.recipients[slot];
        let total = self.queued_for + self.started.elapsed();
        let xmit = self.started.elapsed().saturating_sub(self.setup);
        let shown = r.address.to_string();
        let orig = if r.original.is_empty() || r.original.eq_ignore_ascii_case(&shown) {
            String::new()
        } else {
            format!(", orig_to=<{}>", r.original)
        };
        let word = if status.is_success() {
            "sent"
        } else if status.is_temporary() {
            "deferred"
        } else {
            "bounced"
        };
        info!(
            "{}: to=<{shown}>{orig}, relay={relay}, delay={}, delays={}/0/{}/{}, dsn={}, status={word} ({})",
            self.req.queue_id,
            postern_mailtime::log_delay(total),
            postern_mailtime::log_delay(self.queued_for),
            postern_mailtime::log_delay(self.setup),
            postern_mailtime::log_delay(xmit),
            status.code(),
            status.text()
        );
        self.results.push((r.index, status));
    }
}

/// A session kept for the next delivery to the same next hop.
struct Cached {
    nexthop: String,
    target: Target,
    caps: client::Capabilities,
    conn: Conn,
    since: Instant,
    generation: u64,
}

/// This process's connection cache (Postfix's connection cache, per
/// process): after a transaction that ended in step, the session stays
/// open for smtp_connection_cache_time_limit and the next request to the
/// same next hop uses it (RSET first) instead of a new connection.
pub struct SessionCache {
    slot: std::rc::Rc<std::cell::RefCell<Option<Cached>>>,
    generation: std::cell::Cell<u64>,
    time_limit: Duration,
    quit_timeout: Duration,
}

impl SessionCache {
    /// A cache keeping sessions for `time_limit` (zero: no cache).
    pub fn new(time_limit: Duration, quit_timeout: Duration) -> SessionCache {
        SessionCache {
            slot: Default::default(),
            generation: Default::default(),
            time_limit,
            quit_timeout,
        }
    }

    /// The cached session to `nexthop`, if there is a fresh one.
    fn take(&self, nexthop: &str) -> Option<Cached> {
        let mut slot = self.slot.borrow_mut();
        match slot.as_ref() {
            Some(c) if c.nexthop == nexthop && c.since.elapsed() < self.time_limit => slot.take(),
            _ => None,
        }
    }

    /// After a session: keep it when the transaction ended in step (RSET
    /// when needed), else QUIT.
    async fn release(
        &self,
        settings: &Settings,
        nexthop: &str,
        target: Target,
        caps: client::Capabilities,
        mut conn: Conn,
        outcome: Outcome,
    ) {
        let reusable = match outcome {
            Outcome::Completed { needs_rset } => {
                self.time_limit > Duration::ZERO
                    && (!needs_rset || conn.rset(settings).await.is_ok())
            }
            // A broken or closing conversation: no QUIT (Postfix sends none
            // after a timeout or a lost connection, or after 421).
            Outcome::TryNextHost(
                client::transaction::NextHostReason::Aborted
                | client::transaction::NextHostReason::ServiceClosing,
            ) => {
                conn.stream.shutdown().await;
                return;
            }
            Outcome::TryNextHost(_) => false,
        };
        if !reusable {
            return conn.quit(settings).await;
        }
        let generation = self.generation.get() + 1;
        self.generation.set(generation);
        let old = self.slot.borrow_mut().replace(Cached {
            nexthop: nexthop.to_string(),
            target,
            caps,
            conn,
            since: Instant::now(),
            generation,
        });
        if let Some(old) = old {
            old.conn.quit(settings).await;
        }
        // Close it when it has been idle for the time limit.
        let slot = self.slot.clone();
        let (limit, quit) = (self.time_limit, self.quit_timeout);
        tokio::task::spawn_local(async move {
            tokio::time::sleep(limit).await;
            let expired = {
                let mut s = slot.borrow_mut();
                match s.as_ref() {
                    Some(c) if c.generation == generation => s.take(),
                    _ => None,
                }
            };
            if let Some(c) = expired {
                c.conn.quit_within(quit).await;
            }
        });
    }
}
