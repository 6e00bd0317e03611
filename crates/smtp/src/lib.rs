//! smtp — the outbound delivery agent (Postfix's smtp(8)).
//!
//! qmgr sends one [`DeliveryRequest`] per message and next hop with the
//! queue file as a descriptor; smtp finds the servers for the next hop
//! ([`nexthop`]: MX lookup for a domain, the host's own addresses for
//! `[host]`), talks SMTP to them one after the other until the recipients
//! have a final answer ([`delivery`]), and reports one status per
//! recipient: sent (2xx at the end of data), deferred (4xx, a broken
//! connection, no reachable server, a temporary DNS failure) or bounced
//! (5xx, NXDOMAIN, null MX, mail that loops back to this host). Every
//! result is logged in Postfix's shape (`to=<...>, relay=host[addr]:port,
//! delay=, delays=a/b/c/d, dsn=, status=sent (...)`).
//!
//! The SMTP conversation is postern-smtp-proto's client planner
//! (pipelining, SIZE, 8BITMIME, SMTPUTF8, DSN pass-through, BDAT when
//! offered); the message is streamed from the queue file, never held in
//! memory. A 4xx greeting, a 421 at any stage and a connection that fails
//! move to the next address, up to smtp_mx_session_limit sessions.
//!
//! TLS (smtp_tls_security_level, per destination smtp_tls_policy_maps):
//! `none`; `may` (the default: STARTTLS when offered, any certificate,
//! and a failed handshake retried once in plaintext, as Postfix does);
//! `encrypt` (TLS required, any certificate); `verify` (the certificate
//! must chain to smtp_tls_CAfile, or the system's CA bundle, and name the
//! MX host); `secure` (as verify, and the host must be the next-hop domain
//! or below it). TLS 1.2 and 1.3 only. Each session is logged as Postfix
//! does: `Untrusted TLS connection established to mx[addr]:25: TLSv1.3
//! with cipher ...` (`Verified` for verify/secure).
//!
//! SASL client for a smart host (smtp_sasl_auth_enable): the credentials
//! come from smtp_sasl_password_maps (`[relay.example]:587 user:password`,
//! looked up by the next hop as written, `[host]`, the host, the domain),
//! read at start-up before the privilege drop and never logged; PLAIN (or
//! LOGIN) is used only where smtp_sasl_tls_security_options (inside TLS) or
//! smtp_sasl_security_options (without) allow plaintext mechanisms —
//! Postfix's defaults: inside TLS only.
//!
//! Connection reuse: after a transaction that ended in step, the session
//! stays open for smtp_connection_cache_time_limit (2s) and this process's
//! next delivery to the same next hop uses it (RSET first, no DNS lookup,
//! no new connection), as Postfix's connection cache does.
//!
//! LMTP (RFC 2033): the same program run under the master.cf service name
//! `lmtp` speaks LHLO and reads one reply per recipient after the data; its
//! next hops may be `unix:/path` (e.g. `local_transport =
//! lmtp:unix:/run/dovecot/lmtp`) or `inet:host:port`, default port 24,
//! with the smtp_* timeouts.
//!
//! SECURITY: runs as `postern-smtp` (group postern-smtp, postern-ipc), may
//! be chrooted: the resolver configuration is read at start-up, before the
//! privilege drop. It never opens the queue; everything from the network
//! goes through the client's parsers, which bound every line and reply.
//!
//! PARAMETERS: myhostname, smtp_helo_name, inet_protocols,
//! smtp_address_preference, smtp_mx_address_limit, smtp_mx_session_limit,
//! smtp_connect_timeout, smtp_helo_timeout, smtp_mail_timeout,
//! smtp_rcpt_timeout, smtp_data_init_timeout, smtp_data_xfer_timeout,
//! smtp_data_done_timeout, smtp_quit_timeout, smtp_rset_timeout,
//! dns_resolv_conf, smtp_tls_security_level, smtp_tls_policy_maps,
//! smtp_tls_CAfile, smtp_starttls_timeout, smtp_sasl_auth_enable,
//! smtp_sasl_password_maps, smtp_sasl_security_options,
//! smtp_sasl_tls_security_options, smtp_connection_cache_time_limit.

#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod delivery;
pub mod nexthop;

use postern_config::MainCf;
use postern_dns::{AddressPreference, IpFamilies, Resolver};
use postern_ipc::{Channel, DeliveryReply, DeliveryRequest, DeliveryStatus};
use postern_smtp_proto::client::Stage;
use std::sync::Arc;
use std::time::Duration;
use tracing::warn;

/// Everything smtp takes from main.cf, read once at start-up.
pub struct Settings {
    /// EHLO/HELO name (smtp_helo_name, default $myhostname).
    pub helo_name: String,
    /// This host's names, for "mail for X loops back to myself".
    pub myhostname: String,
    /// How MX hosts become addresses.
    pub dns: postern_dns::Options,
    /// The resolver (servers from dns_resolv_conf, read before any chroot).
    pub resolver: Resolver,
    /// At most this many SMTP sessions per delivery (smtp_mx_session_limit).
    pub session_limit: usize,
    /// smtp_connect_timeout.
    pub connect_timeout: Duration,
    /// The timeout of each stage, by its parameter name.
    timeouts: Vec<(&'static str, Duration)>,
    /// The port when the next hop names none (25; 24 for LMTP).
    pub default_port: u16,
    /// Running as `lmtp` (master.cf service name): LHLO, one reply per
    /// recipient after the data, `unix:/path` next hops.
    pub lmtp: bool,
    /// smtp_tls_security_level.
    pub tls_level: TlsLevel,
    /// smtp_tls_policy_maps: a level per next-hop domain.
    tls_policy: Vec<postern_maps::Table>,
    /// Opportunistic / mandatory-unauthenticated client configuration.
    tls_any: Arc<postern_tls::rustls::ClientConfig>,
    /// The verifying configuration (smtp_tls_CAfile or the system's
    /// bundle), or why it could not be made.
    tls_verified: Result<Arc<postern_tls::rustls::ClientConfig>, String>,
    /// smtp_sasl_auth_enable.
    pub sasl: bool,
    /// Sessions kept between deliveries (smtp_connection_cache_time_limit).
    pub cache: delivery::SessionCache,
    /// smtp_sasl_password_maps, opened (read) before the privilege drop.
    sasl_passwords: Vec<postern_maps::Table>,
    /// PLAIN/LOGIN allowed without TLS (smtp_sasl_security_options lacks
    /// noplaintext).
    sasl_plain_cleartext: bool,
    /// PLAIN/LOGIN allowed inside TLS (smtp_sasl_tls_security_options).
    sasl_plain_tls: bool,
}

/// Postfix's smtp_tls_security_level values.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum TlsLevel {
    /// Never STARTTLS.
    None,
    /// STARTTLS when offered; plaintext otherwise or when it fails.
    May,
    /// TLS required; the certificate is not checked.
    Encrypt,
    /// TLS required; the certificate must be trusted and name the MX host.
    Verify,
    /// As verify, and the MX host must be in the next-hop domain.
    Secure,
}

impl TlsLevel {
    /// Parses a level word (case-insensitive); empty means none, as Postfix.
    pub fn parse(word: &str) -> Option<TlsLevel> {
        Some(match word.trim().to_ascii_lowercase().as_str() {
            "" | "none" => TlsLevel::None,
            "may" => TlsLevel::May,
            "encrypt" => TlsLevel::Encrypt,
            "verify" => TlsLevel::Verify,
            "secure" => TlsLevel::Secure,
            _ => return None,
        })
    }

    /// TLS is required (no plaintext fallback).
    pub fn mandatory(self) -> bool {
        self >= TlsLevel::Encrypt
    }
}

/// The system's CA bundle (Debian's ca-certificates).
const SYSTEM_CA_FILE: &str = "/etc/ssl/certs/ca-certificates.crt";

/// The per-stage timeout parameters and Postfix's defaults.
const TIMEOUTS: &[&str] = &[
    "smtp_helo_timeout",
    "smtp_mail_timeout",
    "smtp_rcpt_timeout",
    "smtp_data_init_timeout",
    "smtp_data_xfer_timeout",
    "smtp_data_done_timeout",
    "smtp_quit_timeout",
    "smtp_rset_timeout",
    "smtp_starttls_timeout",
];

impl Settings {
    /// Reads the settings; Err names the parameter that is wrong.
    /// `service` is the master.cf service name: `lmtp` (or `lmtp-...`)
    /// makes this process an LMTP client, as Postfix's smtp(8) binary is
    /// lmtp(8) under that name.
    pub fn from_config(main: &MainCf, service: &str) -> Result<Settings, String> {
        let lmtp = service == "lmtp" || service.starts_with("lmtp-");
        let e = |err: postern_config::ConfigError| err.to_string();
        let families = IpFamilies::from_inet_protocols(&main.str("inet_protocols"))
            .ok_or("inet_protocols: expected all, ipv4 or ipv6")?;
        let prefer = AddressPreference::from_postfix(&main.str("smtp_address_preference"))
            .ok_or("smtp_address_preference: expected any, ipv4 or ipv6")?;
        let address_limit = usize::try_from(main.int("smtp_mx_address_limit").map_err(e)?)
            .map_err(|_| "smtp_mx_address_limit: must not be negative")?;
        let session_limit = usize::try_from(main.int("smtp_mx_session_limit").map_err(e)?)
            .map_err(|_| "smtp_mx_session_limit: must not be negative")?;
        let conf = main.str("dns_resolv_conf");
        let resolver = Resolver::from_resolv_conf(&conf)
            .map_err(|err| format!("dns_resolv_conf: {conf}: {err}"))?;
        let mut timeouts = Vec::new();
        for name in TIMEOUTS {
            timeouts.push((*name, main.time(name).map_err(e)?));
        }
        Ok(Settings {
            helo_name: main.str("smtp_helo_name"),
            myhostname: main.str("myhostname").to_ascii_lowercase(),
            dns: postern_dns::Options {
                families,
                prefer,
                address_limit,
                ..postern_dns::Options::default()
            },
            resolver,
            session_limit: if session_limit == 0 {
                usize::MAX
            } else {
                session_limit
            },
            connect_timeout: main.time("smtp_connect_timeout").map_err(e)?,
            timeouts,
            default_port: if lmtp { 24 } else { 25 },
            lmtp,
            tls_level: TlsLevel::parse(&main.str("smtp_tls_security_level"))
                .ok_or("smtp_tls_security_level: expected none, may, encrypt, verify or secure")?,
            tls_policy: postern_maps::Table::open_list(main, "smtp_tls_policy_maps")?,
            tls_any: postern_tls::client_config(&postern_tls::ClientTrust::Unauthenticated)
                .map_err(|err| err.to_string())?,
            sasl: main.bool("smtp_sasl_auth_enable").map_err(e)?,
            cache: delivery::SessionCache::new(
                main.time("smtp_connection_cache_time_limit").map_err(e)?,
                main.time("smtp_quit_timeout").map_err(e)?,
            ),
            sasl_passwords: postern_maps::Table::open_list(main, "smtp_sasl_password_maps")?,
            sasl_plain_cleartext: !main
                .list("smtp_sasl_security_options")
                .iter()
                .any(|o| o.eq_ignore_ascii_case("noplaintext")),
            sasl_plain_tls: !main
                .list("smtp_sasl_tls_security_options")
                .iter()
                .any(|o| o.eq_ignore_ascii_case("noplaintext")),
            tls_verified: {
                let ca = main.str("smtp_tls_CAfile");
                let ca = if ca.is_empty() {
                    SYSTEM_CA_FILE.to_string()
                } else {
                    ca
                };
                postern_tls::load_roots(std::path::Path::new(&ca))
                    .and_then(|roots| {
                        postern_tls::client_config(&postern_tls::ClientTrust::Roots(roots))
                    })
                    .map_err(|err| err.to_string())
            },
        })
    }

    /// The TLS level for a next hop: smtp_tls_policy_maps's first word
    /// for the first of `keys` found (the next hop as written, e.g.
    /// `[mx.example]:587`, then its host or domain), else
    /// smtp_tls_security_level. A policy table that
    /// cannot be read, or a word it does not know, means `encrypt` (or the
    /// default when stricter), so mail is never sent in plaintext on a
    /// guess.
    pub fn tls_level_for(&self, keys: &[&str]) -> TlsLevel {
        let domain = keys.last().copied().unwrap_or("");
        for t in &self.tls_policy {
            let mut found = Ok(None);
            for key in keys {
                found = t.lookup(key);
                if !matches!(found, Ok(None)) {
                    break;
                }
            }
            match found {
                Ok(Some(v)) => {
                    let word = v.split_whitespace().next().unwrap_or("");
                    return TlsLevel::parse(word).unwrap_or_else(|| {
                        warn!(
                            "smtp_tls_policy_maps: {domain}: unknown level {word:?}: using encrypt"
                        );
                        TlsLevel::Encrypt
                    });
                }
                Ok(None) => {}
                Err(err) => {
                    warn!("smtp_tls_policy_maps lookup for {domain} failed: {err}: using encrypt");
                    return TlsLevel::Encrypt.max(self.tls_level);
                }
            }
        }
        self.tls_level
    }

    /// The SASL login for a server, `user:password` from
    /// smtp_sasl_password_maps under the first of `keys` found.
    /// Err = a table could not be read (the delivery is deferred).
    pub fn sasl_credentials(&self, keys: &[&str]) -> Result<Option<(String, String)>, String> {
        for t in &self.sasl_passwords {
            for key in keys {
                match t.lookup(key) {
                    Ok(Some(v)) => {
                        let v = v.trim();
                        let (user, password) = v.split_once(':').unwrap_or((v, ""));
                        return Ok(Some((user.to_string(), password.to_string())));
                    }
                    Ok(None) => {}
                    Err(err) => return Err(format!("smtp_sasl_password_maps: {err}")),
                }
            }
        }
        Ok(None)
    }

    /// Whether PLAIN and LOGIN may be used, inside TLS or not.
    pub fn sasl_plaintext_allowed(&self, tls: bool) -> bool {
        if tls {
            self.sasl_plain_tls
        } else {
            self.sasl_plain_cleartext
        }
    }

    /// The client configuration, the name to present and check, and
    /// whether the certificate is verified, for a handshake at `level`.
    fn tls_client(
        &self,
        level: TlsLevel,
        target: &delivery::TargetName<'_>,
    ) -> Result<
        (
            Arc<postern_tls::rustls::ClientConfig>,
            rustls_pki_types::ServerName<'static>,
            bool,
        ),
        String,
    > {
        let name = rustls_pki_types::ServerName::try_from(target.host.to_string())
            .map_err(|_| format!("bad TLS server name {:?}", target.host))?;
        if level < TlsLevel::Verify {
            return Ok((self.tls_any.clone(), name, false));
        }
        if level == TlsLevel::Secure {
            let (h, d) = (target.host.to_ascii_lowercase(), target.nexthop);
            if h != d && !h.ends_with(&format!(".{d}")) {
                return Err(format!(
                    "server name {h} is not in the next-hop domain {d} (smtp_tls_security_level = secure)"
                ));
            }
        }
        match &self.tls_verified {
            Ok(cfg) => Ok((cfg.clone(), name, true)),
            Err(why) => Err(format!("cannot verify certificates: {why}")),
        }
    }

    /// How long to wait for the reply of `stage` (or to send its data).
    pub fn timeout(&self, stage: Stage) -> Duration {
        let name = stage.timeout_parameter();
        self.timeouts
            .iter()
            .find(|(n, _)| *n == name)
            .map(|(_, d)| *d)
            .unwrap_or(Duration::from_secs(300))
    }
}

/// One delivery request: the descriptor, the deliveries, the replies.
async fn serve(settings: &Settings, mut ch: Channel) {
    let req = match ch.recv::<DeliveryRequest>().await {
        Ok(Some(r)) => r,
        Ok(None) => return,
        Err(e) => {
            warn!("bad delivery request: {e}");
            return;
        }
    };
    let (results, site_failure) = match ch.take_fd() {
        Some(fd) => {
            let file = std::fs::File::from(fd);
            let d = delivery::deliver(settings, &req, &file).await;
            (d.results, d.site_failure)
        }
        None => {
            warn!(
                "{}: delivery request without queue file descriptor",
                req.queue_id
            );
            let results = req
                .recipients
                .iter()
                .map(|r| {
                    let s = DeliveryStatus::temporary(3, 0, "internal error: no queue file");
                    (r.index, s)
                })
                .collect();
            (results, None)
        }
    };
    for (index, status) in results {
        if ch
            .send(&DeliveryReply::Status { index, status })
            .await
            .is_err()
        {
            return;
        }
    }
    if let Some(reason) = site_failure
        && ch
            .send(&DeliveryReply::SiteFailure { reason })
            .await
            .is_err()
    {
        return;
    }
    let _ = ch.send(&DeliveryReply::Finished).await;
}

/// The program: a one-request-at-a-time service on the skeleton (master
/// runs as many processes as master.cf's maxproc allows).
pub fn main() -> ! {
    postern_service::single_server(
        "smtp",
        |ctx| Settings::from_config(&ctx.config, &ctx.service_name),
        |settings: std::rc::Rc<Settings>, conn| async move {
            match conn {
                postern_service::Connection::Unix { stream } => {
                    serve(&settings, Channel::new(stream)).await
                }
                postern_service::Connection::Tcp { peer, .. } => {
                    warn!("refusing TCP client {peer}: smtp is a unix service")
                }
            }
        },
    )
}
