//! smtpd — the SMTP server.
//!
//! Talks SMTP with one client at a time (RFC 5321 with PIPELINING, SIZE,
//! 8BITMIME, ENHANCEDSTATUSCODES, SMTPUTF8), decides per recipient whether
//! the mail is for this site, may be relayed, or is refused, and streams the
//! accepted message to cleanup. It never writes the queue itself: "250 Ok:
//! queued as ID" is sent only after cleanup reports the queue file durable.
//!
//! SECURITY: smtpd is where untrusted network input enters. All parsing and
//! the session itself (states, command table, limits, pipelining, DATA and
//! BDAT framing: `postern_smtp_proto::server`) are in postern-smtp-proto
//! (pure, fuzzed, unit-tested without sockets); this crate is the tokio
//! driver and the policy behind the session's hooks. Every limit
//! (line length, recipients, message size, errors, junk commands, time) is a
//! main.cf parameter. End of data is only CRLF.CRLF, so a bare LF or bare CR
//! can never smuggle a second message. VRFY is off by default and never tells
//! whether a user exists; unknown local users are refused at RCPT with the
//! same reply whatever the reason.
//!
//! TLS (RFC 3207): STARTTLS is offered when smtpd_tls_security_level is
//! may or encrypt; the certificate and key are loaded in init, before the
//! privilege drop (the key is root-only). Plaintext pipelined after STARTTLS
//! is discarded, never executed (CVE-2011-0411), and the session state is
//! reset after the handshake. With smtpd_tls_wrappermode the handshake
//! happens at connect (port 465). At level encrypt MAIL is refused until TLS
//! is active. The handshake is bounded by smtpd_timeout.
//!
//! AUTH (RFC 4954): with smtpd_sasl_auth_enable, PLAIN and LOGIN are offered
//! (by default only inside TLS: smtpd_tls_auth_only); postern-sasl runs the
//! exchange and the auth service (private/auth) checks the password, so
//! smtpd never sees the password database. A failure is logged with
//! Postfix's words (`warning: host[addr]: SASL LOGIN authentication failed:
//! ...`) for fail2ban. Who may relay, and with which sender, is decided by
//! the smtpd_*_restrictions lists ([`restrictions`]).
//!
//! STANDARDS: RFC 5321, RFC 1870, RFC 2920, RFC 2034/3463, RFC 6152, RFC 6531,
//! RFC 3207, RFC 8314, RFC 4954, RFC 3848.
//!
//! PARAMETERS: myhostname, smtpd_banner, mydestination, mynetworks,
//! relay_domains, local_recipient_maps, message_size_limit,
//! smtpd_recipient_limit, smtpd_timeout, smtpd_hard_error_limit,
//! smtpd_soft_error_limit, smtpd_error_sleep_time, smtpd_junk_command_limit,
//! line_length_limit, disable_vrfy_command, smtpd_helo_required,
//! smtpd_forbid_bare_newline, smtputf8_enable, strict_rfc821_envelopes,
//! smtpd_tls_security_level, smtpd_tls_wrappermode, smtpd_tls_cert_file,
//! smtpd_tls_key_file, smtpd_tls_chain_files, smtpd_sasl_auth_enable,
//! smtpd_tls_auth_only, smtpd_sasl_authenticated_header,
//! smtpd_client_restrictions, smtpd_helo_restrictions,
//! smtpd_sender_restrictions, smtpd_relay_restrictions,
//! smtpd_recipient_restrictions, smtpd_sender_login_maps, ipc_timeout,
//! myorigin, queue_directory, config_directory, recipient_delimiter,
//! users_file.
#![forbid(unsafe_code)]

pub mod policy;
pub mod restrictions;
pub mod session;
pub mod stream;

use postern_config::MainCf;
use postern_ipc::CHUNK_SIZE;
use postern_sasl::Mechanism;
use postern_smtp_proto::server;
use std::path::PathBuf;
use std::time::Duration;

/// How smtpd treats a bare LF in commands or message content
/// (`smtpd_forbid_bare_newline`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BareNewline {
    /// Accept it as content (the default): end of data still needs CRLF.CRLF.
    Normalize,
    /// Refuse the message with 550 5.5.2.
    Reject,
    /// Accept silently.
    Allow,
}

/// smtpd_tls_security_level.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TlsLevel {
    /// No STARTTLS.
    None,
    /// STARTTLS offered, not required.
    May,
    /// STARTTLS required before MAIL.
    Encrypt,
}

/// smtpd's settings, read once at start.
#[derive(Clone, Debug)]
pub struct Settings {
    /// What every session offers and its limits (smtp-proto's server
    /// configuration); `starttls` and `require_tls` are settled in `main`
    /// once the certificate is loaded.
    pub session: server::Config,
    /// smtpd_timeout: how long to wait for a command or data.
    pub timeout: Duration,
    /// Where cleanup listens.
    pub cleanup_socket: PathBuf,
    /// ipc_timeout, for waiting on cleanup.
    pub ipc_timeout: Duration,
    /// Service name (for the Received header's protocol is per session).
    pub service_name: String,
    /// smtpd_tls_security_level (after the default is worked out).
    pub tls_level: TlsLevel,
    /// smtpd_tls_wrappermode: handshake at connect.
    pub tls_wrappermode: bool,
    /// smtpd_sasl_authenticated_header: name the login in Received.
    pub sasl_header: bool,
}

impl Settings {
    /// Reads the parameters smtpd uses; a bad value is a start-up error.
    pub fn from_config(main: &MainCf, service_name: &str) -> Result<Settings, String> {
        let e = |e: postern_config::ConfigError| e.to_string();
        let bare = match main
            .str("smtpd_forbid_bare_newline")
            .to_ascii_lowercase()
            .as_str()
        {
            "normalize" | "yes" => BareNewline::Normalize,
            "reject" => BareNewline::Reject,
            "no" => BareNewline::Allow,
            other => {
                return Err(format!(
                    "bad smtpd_forbid_bare_newline value: {other} (want normalize, reject or no)"
                ));
            }
        };
        let have_cert = postern_tls::CertSource::from_config(main, "smtpd").is_some();
        let tls_level = match main.str("smtpd_tls_security_level").trim() {
            "" if have_cert => TlsLevel::May,
            "" | "none" => TlsLevel::None,
            "may" => TlsLevel::May,
            "encrypt" => TlsLevel::Encrypt,
            other => {
                return Err(format!(
                    "bad smtpd_tls_security_level value: {other} (want none, may or encrypt)"
                ));
            }
        };
        let session = server::Config {
            hostname: main.str("myhostname"),
            greeting: main.str("smtpd_banner"),
            message_size_limit: main.size("message_size_limit").map_err(e)?,
            recipient_limit: main.bounded("smtpd_recipient_limit").map_err(e)?,
            hard_error_limit: main.bounded("smtpd_hard_error_limit").map_err(e)?,
            soft_error_limit: main.bounded("smtpd_soft_error_limit").map_err(e)?,
            error_sleep: main.time("smtpd_error_sleep_time").map_err(e)?,
            junk_limit: main.bounded("smtpd_junk_command_limit").map_err(e)?,
            line_limit: main.bounded("line_length_limit").map_err(e)?,
            vrfy_disabled: main.bool("disable_vrfy_command").map_err(e)?,
            helo_required: main.bool("smtpd_helo_required").map_err(e)?,
            reject_bare_newline: bare == BareNewline::Reject,
            smtputf8: main.bool("smtputf8_enable").map_err(e)?,
            strict_envelopes: main.bool("strict_rfc821_envelopes").map_err(e)?,
            // Settled once the certificate is loaded (main).
            starttls: false,
            require_tls: tls_level == TlsLevel::Encrypt,
            sasl: main.bool("smtpd_sasl_auth_enable").map_err(e)?,
            tls_auth_only: main.bool("smtpd_tls_auth_only").map_err(e)?,
            sasl_mechanisms: Mechanism::advertised(),
            postmaster_domain: main.str("myorigin"),
            // NOTIFY/ORCPT per recipient and RET/ENVID go into the queue
            // file (version 2), as Postfix's smtpd always offers them.
            dsn: true,
            content_chunk: CHUNK_SIZE,
        };
        Ok(Settings {
            session,
            tls_level,
            tls_wrappermode: main.bool("smtpd_tls_wrappermode").map_err(e)?,
            timeout: main.time("smtpd_timeout").map_err(e)?,
            cleanup_socket: main.path("queue_directory").join("private").join("cleanup"),
            sasl_header: main.bool("smtpd_sasl_authenticated_header").map_err(e)?,
            ipc_timeout: main.time("ipc_timeout").map_err(e)?,
            service_name: service_name.to_string(),
        })
    }
}

/// Everything one smtpd process keeps between clients.
pub struct Smtpd {
    /// Settings from main.cf.
    pub settings: Settings,
    /// What the restrictions ask about (local users, networks, sender owners).
    pub policy: std::cell::RefCell<policy::Policy>,
    /// The smtpd_*_restrictions lists.
    pub restrictions: restrictions::Restrictions,
    /// The TLS server side, when a certificate is configured and loaded.
    pub tls: Option<postern_tls::TlsAcceptor>,
}

/// Loads the certificate for the settings' TLS level. No certificate (or
/// one that fails to load) at level `may` only disables STARTTLS, as in
/// Postfix; at level `encrypt` or in wrapper mode it is a start-up error.
pub fn load_tls(
    main: &MainCf,
    settings: &mut Settings,
) -> Result<Option<postern_tls::TlsAcceptor>, String> {
    let required = settings.tls_level == TlsLevel::Encrypt || settings.tls_wrappermode;
    if settings.tls_level == TlsLevel::None && !settings.tls_wrappermode {
        return Ok(None);
    }
    match postern_tls::server_config_from_main(main, "smtpd") {
        Ok(Some(cfg)) => Ok(Some(postern_tls::TlsAcceptor::from(cfg))),
        Ok(None) if required => Err(
            "TLS is required (smtpd_tls_security_level = encrypt or smtpd_tls_wrappermode = yes) \
             but no smtpd_tls_cert_file or smtpd_tls_chain_files is set"
                .into(),
        ),
        Err(e) if required => Err(e.to_string()),
        Ok(None) => {
            tracing::warn!(
                "smtpd_tls_security_level = may but no certificate is configured: STARTTLS disabled"
            );
            settings.tls_level = TlsLevel::None;
            Ok(None)
        }
        Err(e) => {
            tracing::warn!("TLS library problem: {e}: STARTTLS disabled");
            settings.tls_level = TlsLevel::None;
            Ok(None)
        }
    }
}

/// The program: a one-client-at-a-time service on the skeleton.
pub fn main() -> ! {
    postern_service::single_server(
        "smtpd",
        |ctx| {
            let mut settings = Settings::from_config(&ctx.config, &ctx.service_name)?;
            let policy = policy::Policy::from_config(&ctx.config)?;
            let restrictions = restrictions::Restrictions::from_config(&ctx.config)?;
            // Before the privilege drop: the key file is readable by root only.
            let tls = load_tls(&ctx.config, &mut settings)?;
            settings.session.starttls = tls.is_some() && settings.tls_level != TlsLevel::None;
            if settings.session.sasl && settings.session.tls_auth_only && tls.is_none() {
                tracing::warn!(
                    "smtpd_sasl_auth_enable = yes and smtpd_tls_auth_only = yes but TLS is not \
                     available: AUTH will not be offered"
                );
            }
            if !settings.session.sasl
                && restrictions.uses(restrictions::Word::RejectSenderLoginMismatch)
            {
                tracing::warn!(
                    "reject_sender_login_mismatch without smtpd_sasl_auth_enable = yes: \
                     senders that have an owner are refused to every client"
                );
            }
            Ok(Smtpd {
                settings,
                policy: std::cell::RefCell::new(policy),
                restrictions,
                tls,
            })
        },
        |smtpd: std::rc::Rc<Smtpd>, conn| async move {
            match conn {
                postern_service::Connection::Tcp { stream, peer, .. } => {
                    session::run(&smtpd, stream, peer).await;
                }
                postern_service::Connection::Unix { .. } => {
                    tracing::warn!("smtpd does not serve unix-domain clients");
                }
            }
        },
    )
}
