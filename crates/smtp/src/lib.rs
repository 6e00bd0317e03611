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
//! Not yet here (issue 9): STARTTLS (mail goes in plaintext, as with
//! smtp_tls_security_level = none), SASL client, connection reuse, LMTP.
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
//! dns_resolv_conf, inet_interfaces.

#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod delivery;
pub mod nexthop;

use postern_config::MainCf;
use postern_dns::{AddressPreference, IpFamilies, Resolver};
use postern_ipc::{Channel, DeliveryReply, DeliveryRequest, DeliveryStatus};
use postern_smtp_proto::client::Stage;
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
    /// The port when the next hop names none.
    pub default_port: u16,
}

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
    pub fn from_config(main: &MainCf) -> Result<Settings, String> {
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
            default_port: 25,
        })
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
    let results = match ch.take_fd() {
        Some(fd) => {
            let file = std::fs::File::from(fd);
            delivery::deliver(settings, &req, &file).await
        }
        None => {
            warn!(
                "{}: delivery request without queue file descriptor",
                req.queue_id
            );
            req.recipients
                .iter()
                .map(|r| {
                    let s = DeliveryStatus::temporary(3, 0, "internal error: no queue file");
                    (r.index, s)
                })
                .collect()
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
    let _ = ch.send(&DeliveryReply::Finished).await;
}

/// The program: a one-request-at-a-time service on the skeleton (master
/// runs as many processes as master.cf's maxproc allows).
pub fn main() -> ! {
    postern_service::single_server(
        "smtp",
        |ctx| Settings::from_config(&ctx.config),
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
