//! The parameter table: every main.cf parameter Postern knows, with its
//! default, its kind and a one-line description, plus the parsers for typed
//! values and the generator of the documentation table.
//!
//! There is exactly one table ([`PARAMETERS`]); `postern config`, the
//! validation in [`crate::MainCf::validate`] and the parameter table in
//! docs/configuration.md are all derived from it (a unit test fails when the
//! documentation drifts).

use std::time::Duration;

/// The type of a parameter's value, which decides how it is validated and
/// which accessor of [`crate::MainCf`] reads it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ParamKind {
    /// Free text (after `$name` expansion).
    Str,
    /// yes/no/true/false/1/0/on/off, case-insensitive.
    Bool,
    /// A signed decimal integer (a count or a limit).
    Int,
    /// A duration: a number with an optional unit s, m, h, d or w; a bare
    /// number is in the parameter's own default unit, as in Postfix
    /// (postconf(5): `maximal_queue_lifetime = 5` is five days).
    Time(TimeUnit),
    /// A size in bytes: a plain non-negative decimal integer (no suffixes, as Postfix).
    Size,
    /// A list, separated by commas and/or white space.
    List,
}

impl ParamKind {
    /// The name used in documentation and `postern config` output.
    pub fn as_str(self) -> &'static str {
        match self {
            ParamKind::Str => "string",
            ParamKind::Bool => "boolean",
            ParamKind::Int => "integer",
            ParamKind::Time(_) => "time",
            ParamKind::Size => "size",
            ParamKind::List => "list",
        }
    }
}

/// The unit a bare number means for one time parameter (Postfix gives each
/// time parameter its own: days for the queue lifetimes, seconds for most).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum TimeUnit {
    /// Seconds.
    S,
    /// Minutes.
    M,
    /// Hours.
    H,
    /// Days.
    D,
    /// Weeks.
    W,
}

impl TimeUnit {
    /// The unit's letter, as written after a number in main.cf.
    pub fn letter(self) -> char {
        match self {
            TimeUnit::S => 's',
            TimeUnit::M => 'm',
            TimeUnit::H => 'h',
            TimeUnit::D => 'd',
            TimeUnit::W => 'w',
        }
    }

    /// The unit's length in seconds.
    pub fn seconds(self) -> u64 {
        match self {
            TimeUnit::S => 1,
            TimeUnit::M => 60,
            TimeUnit::H => 3600,
            TimeUnit::D => 86_400,
            TimeUnit::W => 604_800,
        }
    }
}

/// One parameter: its name, its default as it would be written in main.cf,
/// its kind and a one-line description for the documentation.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ParamDef {
    /// The main.cf name.
    pub name: &'static str,
    /// The default, in main.cf syntax (may contain `$name` references).
    /// For parameters whose default is computed at run time (myhostname,
    /// mydomain, config_directory) this is a placeholder; read the value
    /// through [`crate::MainCf`].
    pub default: &'static str,
    /// How the value is parsed and validated.
    pub kind: ParamKind,
    /// One line saying what the parameter does.
    pub doc: &'static str,
}

/// Parameters whose value is restricted to a fixed set of words.
/// For a list parameter every element must be one of the words.
const CHOICES: &[(&str, &[&str])] = &[
    ("allow_mail_to_commands", &["alias", "forward", "include"]),
    ("allow_mail_to_files", &["alias", "forward", "include"]),
    ("inet_protocols", &["all", "ipv4", "ipv6"]),
    ("smtp_address_preference", &["any", "ipv4", "ipv6"]),
    (
        "smtp_tls_security_level",
        &["", "none", "may", "encrypt", "verify", "secure"],
    ),
    ("smtpd_forbid_bare_newline", &["normalize", "reject", "no"]),
    ("smtpd_tls_security_level", &["", "none", "may", "encrypt"]),
];

/// Inclusive bounds of numeric parameters, as Postfix's tables give them
/// (`invalid NAME parameter value N < MIN`): a value outside is a start-up
/// error, so a daemon never clamps a setting silently. Read them with
/// [`crate::MainCf::bounded`], which also checks the value fits the
/// daemon's integer type.
const BOUNDS: &[(&str, i64, i64)] = &[
    ("auth_failure_limit", 0, i64::MAX),
    ("default_destination_concurrency_limit", 1, i64::MAX),
    ("default_destination_recipient_limit", 1, i64::MAX),
    ("default_process_limit", 1, i64::MAX),
    ("duplicate_filter_limit", 0, i64::MAX),
    ("hopcount_limit", 1, i64::MAX),
    ("initial_destination_concurrency", 1, i64::MAX),
    ("line_length_limit", 512, i64::MAX),
    ("local_destination_concurrency_limit", 1, i64::MAX),
    ("local_destination_recipient_limit", 1, i64::MAX),
    ("max_use", 1, i64::MAX),
    ("qmgr_message_active_limit", 1, i64::MAX),
    ("smtpd_hard_error_limit", 1, u32::MAX as i64),
    ("smtpd_junk_command_limit", 1, u32::MAX as i64),
    ("smtpd_recipient_limit", 1, i64::MAX),
    ("smtpd_soft_error_limit", 0, u32::MAX as i64),
];

/// Parameters that main.cf does NOT `$`-expand, because the program that
/// uses them expands them itself with per-message values (`$home`, `$user`,
/// ...), as Postfix does for forward_path.
const RAW: &[&str] = &["forward_path"];

/// Parameters whose default is computed at run time, with how the docs show it.
const COMPUTED: &[(&str, &str)] = &[
    (
        "config_directory",
        "the directory main.cf was read from (/etc/postern)",
    ),
    (
        "mydomain",
        "$myhostname minus its first label (localdomain if none)",
    ),
    (
        "myhostname",
        "the system host name; .localdomain appended if it has no dot",
    ),
];

impl ParamDef {
    /// The only values this parameter accepts, when it is an enumeration.
    pub fn choices(&self) -> Option<&'static [&'static str]> {
        CHOICES
            .iter()
            .find(|(n, _)| *n == self.name)
            .map(|(_, c)| *c)
    }

    /// The smallest and largest value allowed, for numeric parameters that
    /// have bounds.
    pub fn bounds(&self) -> Option<(i64, i64)> {
        BOUNDS
            .iter()
            .find(|(n, _, _)| *n == self.name)
            .map(|&(_, lo, hi)| (lo, hi))
    }

    /// True when main.cf leaves `$name` in this value alone (the program
    /// that uses it expands per-message variables such as `$home` itself).
    pub fn is_raw(&self) -> bool {
        RAW.contains(&self.name)
    }

    /// True when the default is computed at run time rather than taken from
    /// [`ParamDef::default`].
    pub fn is_computed(&self) -> bool {
        COMPUTED.iter().any(|(n, _)| *n == self.name)
    }
}

macro_rules! p {
    ($name:literal, $default:literal, Time($unit:ident), $doc:literal) => {
        ParamDef {
            name: $name,
            default: $default,
            kind: ParamKind::Time(TimeUnit::$unit),
            doc: $doc,
        }
    };
    ($name:literal, $default:literal, $kind:ident, $doc:literal) => {
        ParamDef {
            name: $name,
            default: $default,
            kind: ParamKind::$kind,
            doc: $doc,
        }
    };
}

/// Every main.cf parameter, sorted by name (a test checks the order, so
/// [`param_def`] can binary-search).
#[rustfmt::skip]
pub static PARAMETERS: &[ParamDef] = &[
    p!("2bounce_notice_recipient", "postmaster", Str, "Who gets a non-delivery notification that could not be delivered itself (a double bounce); a bare name gets @$myorigin."),
    p!("alias_database", "hash:/etc/aliases", List, "Alias files that `postern map` / newaliases compiles."),
    p!("alias_maps", "hash:/etc/aliases", List, "Lookup tables that local searches for aliases of a local recipient."),
    p!("allow_mail_to_commands", "alias, forward", List, "Where local allows `|command` delivery: alias, forward, include."),
    p!("allow_mail_to_files", "alias, forward", List, "Where local allows `/file` delivery: alias, forward, include."),
    p!("auth_failure_delay", "2s", Time(S), "How long the auth service waits before answering a failed login."),
    p!("auth_failure_limit", "10", Int, "Failed logins from one client address within auth_failure_window before auth refuses it for a while; 0 = no limit."),
    p!("auth_failure_window", "10m", Time(S), "The period over which the auth service counts a client address's failed logins."),
    p!("bounce_notice_recipient", "postmaster", Str, "Who gets the copies of non-delivery notifications that notify_classes = bounce asks for; a bare name gets @$myorigin."),
    p!("bounce_queue_lifetime", "5d", Time(D), "How long a bounce message stays queued before it is given up."),
    p!("bounce_size_limit", "50000", Size, "Largest original (in bytes) a non-delivery notification returns whole; a larger one is returned as its headers only."),
    p!("command_directory", "/usr/sbin", Str, "Where the administrative command (postern) is installed."),
    p!("command_time_limit", "1000s", Time(S), "Time limit for a delivery by local to a `|command`."),
    p!("config_directory", "/etc/postern", Str, "Directory of main.cf and master.cf (set by the -c option or MAIL_CONFIG)."),
    p!("daemon_directory", "/usr/libexec/postern", Str, "Where the service programs started by master are installed."),
    p!("daemon_timeout", "18000s", Time(S), "How long a service may take to handle one request before it is killed."),
    p!("data_directory", "/var/lib/postern", Str, "Directory for data files written at run time (caches, random seed)."),
    p!("default_destination_concurrency_limit", "20", Int, "Default number of parallel deliveries qmgr makes to one destination."),
    p!("default_destination_recipient_limit", "50", Int, "Default most recipients qmgr hands a delivery agent in one request (local_destination_recipient_limit for local)."),
    p!("default_privs", "nobody", Str, "User that local runs commands and writes files as for mail to an alias with no owner."),
    p!("default_process_limit", "100", Int, "Default number of processes of a service (master.cf maxproc `-`)."),
    p!("default_transport", "smtp", Str, "Transport for mail to domains that are not local."),
    p!("delay_warning_time", "0h", Time(H), "After how long in the queue a sender is told (once) that a message is still being retried; 0 = never, as Postfix."),
    p!("disable_vrfy_command", "yes", Bool, "Whether smtpd refuses the VRFY command (stops address harvesting)."),
    p!("dns_resolv_conf", "/etc/resolv.conf", Str, "Postern: the resolver configuration smtp reads at start-up (before any chroot) for MX and address lookups."),
    p!("duplicate_filter_limit", "1000", Int, "Most destinations (mailboxes, files, commands) remembered per message so that recipients resolving to the same one get one copy; 0 = no duplicate filter across recipients."),
    p!("forward_path", "$home/.forward", List, "Where local looks for .forward files; $home, $user, $local, $domain, $extension are expanded per recipient."),
    p!("header_size_limit", "102400", Size, "Largest message header (in bytes) that cleanup keeps; the rest is truncated."),
    p!("home_mailbox", "", Str, "Mailbox path relative to the home directory; ends in / = Maildir; empty = mbox in mail_spool_directory."),
    p!("hopcount_limit", "50", Int, "Most Received: headers a message may have before it is bounced as a loop."),
    p!("inet_interfaces", "all", List, "Addresses inet services listen on: all, loopback-only, or a list of addresses."),
    p!("inet_protocols", "all", List, "IP versions used: all, ipv4, ipv6, or ipv4, ipv6."),
    p!("initial_destination_concurrency", "5", Int, "Parallel deliveries qmgr starts with to a remote destination; each delivery that reaches it adds one, up to default_destination_concurrency_limit."),
    p!("ipc_timeout", "3600s", Time(S), "Time limit for one read or write on an internal socket between services."),
    p!("line_length_limit", "2048", Size, "Longest SMTP command or message line (in bytes) accepted as one line."),
    p!("lmtp_destination_concurrency_limit", "$default_destination_concurrency_limit", Int, "Most parallel deliveries qmgr makes to one destination of the lmtp transport."),
    p!("lmtp_destination_recipient_limit", "$default_destination_recipient_limit", Int, "Most recipients qmgr hands the lmtp transport in one request."),
    p!("local_command_shell", "", Str, "Shell for `|command` delivery; empty = /bin/sh -c."),
    p!("local_destination_concurrency_limit", "2", Int, "Number of parallel deliveries qmgr makes to one local recipient."),
    p!("local_destination_recipient_limit", "1", Int, "Most recipients handed to local in one delivery request."),
    p!("local_recipient_maps", "unix:passwd.byname $alias_maps", List, "Tables of valid local recipients; smtpd rejects others; empty = accept any."),
    p!("local_transport", "local", Str, "Transport for mail to domains in mydestination."),
    p!("mail_name", "Postern", Str, "The name of the mail system, shown in the SMTP banner and in bounces."),
    p!("mail_owner", "postern", Str, "Owner of the queue and default user of the unprivileged services."),
    p!("mail_spool_directory", "/var/mail", Str, "Directory of mbox files (USER files) used when home_mailbox is empty."),
    p!("maillog_file", "", Str, "File services log to; empty = syslog (/dev/log), and without a syslog daemon master's standard error (master -f) or else /var/log/postern.log ($data_directory/postern.log without privilege separation), see docs/master.md."),
    p!("max_idle", "100s", Time(S), "How long an idle service process waits for a new client before it exits."),
    p!("max_use", "100", Int, "How many clients a service process serves before it exits."),
    p!("maximal_backoff_time", "4000s", Time(S), "Longest time qmgr waits before retrying a deferred message."),
    p!("maximal_queue_lifetime", "5d", Time(D), "How long a message may stay deferred before it is bounced."),
    p!("message_size_limit", "10240000", Size, "Largest message (bytes) smtpd and cleanup accept, envelope included."),
    p!("minimal_backoff_time", "300s", Time(S), "Shortest time qmgr waits before retrying a deferred message."),
    p!("mydestination", "$myhostname, localhost.$mydomain, localhost", List, "Domains delivered by local_transport."),
    p!("mydomain", "", Str, "The internet domain of this host."),
    p!("myhostname", "", Str, "The fully qualified host name of this system."),
    p!("mynetworks", "127.0.0.0/8 [::1]/128", List, "Client networks trusted to relay (permit_mynetworks)."),
    p!("myorigin", "$myhostname", Str, "Domain appended to addresses of locally posted mail that have none."),
    p!("notify_classes", "resource, software", List, "Which problems the postmaster hears of; Postern acts on bounce (a copy of every non-delivery notification, headers only)."),
    p!("privilege_separation", "yes", Bool, "Postern: run each service as its own user when master runs as root (no = everything as the invoking user, as the quickstart does)."),
    p!("qmgr_message_active_limit", "20000", Int, "Most messages in the active queue at once."),
    p!("queue_directory", "/var/spool/postern", Str, "Root of the queue directories and of the private/public sockets."),
    p!("queue_run_delay", "300s", Time(S), "How often qmgr scans the deferred queue."),
    p!("recipient_delimiter", "", Str, "Characters that separate a user name from an address extension (user+ext); empty = none."),
    p!("relay_domains", "", List, "Remote domains this server relays to for any client."),
    p!("relayhost", "", Str, "Smart host for all non-local mail ([host]:port skips MX lookup); empty = direct delivery."),
    p!("service_throttle_time", "60s", Time(S), "How long master waits before restarting a service that failed to start."),
    p!("smtp_address_preference", "any", Str, "Which address family smtp tries first for a host with both: any (random), ipv4, ipv6."),
    p!("smtp_connect_timeout", "30s", Time(S), "Time limit for smtp to complete a TCP connection to a server."),
    p!("smtp_connection_cache_time_limit", "2s", Time(S), "How long an smtp process keeps an idle session for its next delivery to the same next hop; 0 = no reuse."),
    p!("smtp_data_done_timeout", "600s", Time(S), "Time limit for smtp to get the server's reply after the end of the message."),
    p!("smtp_data_init_timeout", "120s", Time(S), "Time limit for smtp to get the reply to DATA."),
    p!("smtp_data_xfer_timeout", "180s", Time(S), "Time limit for smtp to send each piece of the message."),
    p!("smtp_destination_concurrency_limit", "$default_destination_concurrency_limit", Int, "Most parallel deliveries qmgr makes to one destination of the smtp transport."),
    p!("smtp_destination_recipient_limit", "$default_destination_recipient_limit", Int, "Most recipients qmgr hands the smtp transport in one request (one SMTP transaction)."),
    p!("smtp_helo_name", "$myhostname", Str, "The name smtp sends in EHLO/HELO."),
    p!("smtp_helo_timeout", "300s", Time(S), "Time limit for smtp to get the greeting and the reply to EHLO/HELO."),
    p!("smtp_mail_timeout", "300s", Time(S), "Time limit for smtp to get the reply to MAIL FROM."),
    p!("smtp_mx_address_limit", "5", Int, "Most server addresses smtp tries for one delivery, over all MX hosts; 0 = no limit."),
    p!("smtp_mx_session_limit", "2", Int, "Most SMTP sessions (servers that answered) smtp uses for one delivery; 0 = no limit."),
    p!("smtp_quit_timeout", "300s", Time(S), "Time limit for smtp to get the reply to QUIT."),
    p!("smtp_rcpt_timeout", "300s", Time(S), "Time limit for smtp to get the reply to RCPT TO."),
    p!("smtp_rset_timeout", "20s", Time(S), "Time limit for smtp to get the reply to RSET."),
    p!("smtp_sasl_auth_enable", "no", Bool, "Whether smtp authenticates to servers that offer AUTH and have a login in smtp_sasl_password_maps (a smart host)."),
    p!("smtp_sasl_password_maps", "", List, "Lookup tables of `user:password` per server for smtp (keys: [host]:port, [host], host, next-hop domain); read at start-up, never logged."),
    p!("smtp_sasl_security_options", "noplaintext, noanonymous", List, "smtp's SASL restrictions without TLS; noplaintext forbids PLAIN and LOGIN there."),
    p!("smtp_sasl_tls_security_options", "noanonymous", List, "smtp's SASL restrictions inside TLS (PLAIN and LOGIN allowed unless noplaintext); Postfix's default is $smtp_sasl_security_options, which forbids them even there."),
    p!("smtp_starttls_timeout", "300s", Time(S), "Time limit for smtp to get the reply to STARTTLS and finish the TLS handshake."),
    p!("smtp_tls_CAfile", "", Str, "PEM bundle of CA certificates smtp trusts for the verify and secure TLS levels; empty = the system's /etc/ssl/certs/ca-certificates.crt."),
    p!("smtp_tls_policy_maps", "", List, "Lookup tables of a TLS level per next-hop domain for smtp (none, may, encrypt, verify, secure), overriding smtp_tls_security_level."),
    p!("smtp_tls_security_level", "may", Str, "smtp's TLS: none, may (STARTTLS when offered), encrypt (required), verify (required, trusted certificate naming the MX host), secure (verify, host in the next-hop domain)."),
    p!("smtpd_banner", "$myhostname ESMTP $mail_name", Str, "Text after 220 in the SMTP greeting."),
    p!("smtpd_client_restrictions", "", List, "Restrictions applied to the client (evaluated at RCPT time, as with smtpd_delay_reject); see docs/restrictions.md."),
    p!("smtpd_error_sleep_time", "1s", Time(S), "Delay before smtpd replies to a client that has made soft_error_limit errors."),
    p!("smtpd_forbid_bare_newline", "normalize", Str, "What smtpd does with a bare LF line ending: normalize (accept as CRLF), reject, or no (accept)."),
    p!("smtpd_hard_error_limit", "20", Int, "Errors after which smtpd disconnects the client."),
    p!("smtpd_helo_required", "no", Bool, "Whether smtpd requires HELO/EHLO before MAIL FROM."),
    p!("smtpd_helo_restrictions", "", List, "Restrictions applied to the HELO/EHLO name (evaluated at RCPT time)."),
    p!("smtpd_junk_command_limit", "100", Int, "Most NOOP/RSET/VRFY/ETRN commands per session before they count as errors."),
    p!("smtpd_recipient_limit", "1000", Int, "Most recipients smtpd accepts for one message."),
    p!("smtpd_recipient_restrictions", "", List, "Restrictions applied at RCPT TO, after smtpd_relay_restrictions (spam blocking, policy)."),
    p!("smtpd_relay_restrictions", "permit_mynetworks, permit_sasl_authenticated, reject_unauth_destination", List, "Restrictions at RCPT TO that decide who may relay (mail to domains that are not ours)."),
    p!("smtpd_sasl_auth_enable", "no", Bool, "Whether smtpd offers SASL AUTH (PLAIN, LOGIN), checked by the auth service."),
    p!("smtpd_sasl_authenticated_header", "yes", Bool, "Whether the Received header names the SASL login (\"Authenticated sender: user\"). Postfix's default is no."),
    p!("smtpd_sender_login_maps", "", List, "Tables: MAIL FROM address (or @domain) -> the SASL logins that own it, for reject_sender_login_mismatch; empty = a login owns login@each local domain."),
    p!("smtpd_sender_restrictions", "", List, "Restrictions applied to the MAIL FROM address (evaluated at RCPT time)."),
    p!("smtpd_soft_error_limit", "10", Int, "Errors after which smtpd delays each reply by smtpd_error_sleep_time."),
    p!("smtpd_timeout", "300s", Time(S), "How long smtpd waits for a client command or data before it disconnects."),
    p!("smtpd_tls_auth_only", "yes", Bool, "Whether smtpd offers AUTH only after STARTTLS (or on implicit TLS), so passwords never cross the network in clear."),
    p!("smtpd_tls_cert_file", "", Str, "PEM file with smtpd's server certificate (and its chain); empty means no certificate."),
    p!("smtpd_tls_chain_files", "", List, "PEM files each holding a private key followed by its certificate chain; overrides smtpd_tls_cert_file/smtpd_tls_key_file."),
    p!("smtpd_tls_key_file", "$smtpd_tls_cert_file", Str, "PEM file with the private key for smtpd_tls_cert_file (read as root before the privilege drop)."),
    p!("smtpd_tls_security_level", "", Str, "SMTP server TLS: none, may (offer STARTTLS) or encrypt (require it); empty means may when a certificate is configured, else none."),
    p!("smtpd_tls_wrappermode", "no", Bool, "Whether smtpd does the TLS handshake at connect, before the greeting (implicit TLS, port 465)."),
    p!("smtputf8_enable", "yes", Bool, "Whether smtpd announces and accepts SMTPUTF8 (RFC 6531)."),
    p!("strict_rfc821_envelopes", "no", Bool, "Whether smtpd requires <> around MAIL FROM/RCPT TO addresses and nothing else."),
    p!("syslog_name", "postern", Str, "Prefix of the program name in log lines (postern/smtpd)."),
    p!("transport_maps", "", List, "Lookup tables of per-domain routes (transport(5)): domain, .parent or * → transport:nexthop; qmgr consults them before mydestination and relayhost."),
    p!("users_file", "", Str, "Dovecot-style passwd-file of mailbox users (name:{SCHEME}hash:uid:gid::home::); empty = none."),
    p!("virtual_mailbox_base", "", Str, "Directory that holds the homes of users_file users whose home field is empty."),
];

/// The table entry for `name`, if it is a known parameter.
pub fn param_def(name: &str) -> Option<&'static ParamDef> {
    PARAMETERS
        .binary_search_by(|d| d.name.cmp(name))
        .ok()
        .and_then(|i| PARAMETERS.get(i))
}

/// The system host name (gethostname), with ".localdomain" appended when it
/// has no dot: the run-time default of myhostname.
pub fn default_hostname() -> String {
    let name = nix::unistd::gethostname()
        .ok()
        .and_then(|n| n.into_string().ok())
        .map(|n| n.trim().to_string())
        .filter(|n| !n.is_empty())
        .unwrap_or_else(|| "localhost".to_string());
    if name.contains('.') {
        name
    } else {
        format!("{name}.localdomain")
    }
}

/// mydomain's default from a host name: everything after the first label,
/// or "localdomain" when there is nothing after it.
pub fn domain_of_hostname(host: &str) -> String {
    match host.split_once('.') {
        Some((_, rest)) if !rest.is_empty() => rest.to_string(),
        _ => "localdomain".to_string(),
    }
}

/// True for a valid parameter name: one or more of [A-Za-z0-9_].
pub fn is_param_name(name: &str) -> bool {
    !name.is_empty() && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_')
}

/// Parses a boolean: yes/no/true/false/1/0/on/off, case-insensitive.
pub fn parse_bool(value: &str) -> Option<bool> {
    match value.trim().to_ascii_lowercase().as_str() {
        "yes" | "true" | "1" | "on" => Some(true),
        "no" | "false" | "0" | "off" => Some(false),
        _ => None,
    }
}

/// Parses a signed decimal integer.
pub fn parse_int(value: &str) -> Option<i64> {
    value.trim().parse::<i64>().ok()
}

/// Parses a size: a plain non-negative decimal integer of bytes.
pub fn parse_size(value: &str) -> Option<u64> {
    let v = value.trim();
    if v.is_empty() || !v.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    v.parse::<u64>().ok()
}

/// Parses a time: digits with an optional unit s (seconds), m (minutes),
/// h (hours), d (days) or w (weeks); a bare number is seconds. For a
/// parameter, use [`parse_time_in`] with its [`TimeUnit`].
pub fn parse_time(value: &str) -> Option<Duration> {
    parse_time_in(value, TimeUnit::S)
}

/// Parses a time whose bare number is in `unit` (Postfix's rule: each time
/// parameter has a default unit, see [`ParamKind::Time`]).
pub fn parse_time_in(value: &str, unit: TimeUnit) -> Option<Duration> {
    let v = value.trim();
    let digits_end = v
        .bytes()
        .position(|b| !b.is_ascii_digit())
        .unwrap_or(v.len());
    let (num, unit_text) = v.split_at(digits_end);
    if num.is_empty() {
        return None;
    }
    let n: u64 = num.parse().ok()?;
    let mult: u64 = match unit_text {
        "" => unit.seconds(),
        "s" | "S" => 1,
        "m" | "M" => 60,
        "h" | "H" => 3600,
        "d" | "D" => 86_400,
        "w" | "W" => 604_800,
        _ => return None,
    };
    n.checked_mul(mult).map(Duration::from_secs)
}

/// Checks that `value` (already expanded) is acceptable for `def`; on
/// failure returns the reason in Postfix's wording, naming the parameter.
pub(crate) fn check_value(def: &ParamDef, value: &str) -> Result<(), String> {
    let ok = match def.kind {
        ParamKind::Bool => parse_bool(value).is_some(),
        ParamKind::Int => parse_int(value).is_some(),
        ParamKind::Time(unit) => parse_time_in(value, unit).is_some(),
        ParamKind::Size => parse_size(value).is_some(),
        ParamKind::Str | ParamKind::List => true,
    };
    if !ok {
        let what = match def.kind {
            ParamKind::Bool => "boolean",
            ParamKind::Time(_) => "time",
            _ => "numerical",
        };
        return Err(format!(
            "bad {what} parameter value: {} = {value}",
            def.name
        ));
    }
    if let Some((lo, hi)) = def.bounds() {
        let n = match def.kind {
            ParamKind::Int => parse_int(value),
            ParamKind::Size => parse_size(value).map(|v| i64::try_from(v).unwrap_or(i64::MAX)),
            _ => None,
        };
        if let Some(n) = n {
            if n < lo {
                return Err(format!("invalid {} parameter value {n} < {lo}", def.name));
            }
            if n > hi {
                return Err(format!("invalid {} parameter value {n} > {hi}", def.name));
            }
        }
    }
    if let Some(choices) = def.choices() {
        let bad = if def.kind == ParamKind::List {
            split_list(value)
                .iter()
                .any(|v| !choices.contains(&v.as_str()))
        } else {
            !choices.contains(&value)
        };
        if bad {
            return Err(format!(
                "bad parameter value: {} = {value} (expected one of: {})",
                def.name,
                choices.join(", ")
            ));
        }
    }
    Ok(())
}

/// Splits a list value on commas and white space, dropping empty elements.
/// Text inside `{ ... }` is kept together (as Postfix does), so
/// `inline:{ a=b, c=d }` stays one element.
pub fn split_list(value: &str) -> Vec<String> {
    let mut items = Vec::new();
    let mut cur = String::new();
    let mut depth = 0usize;
    for c in value.chars() {
        match c {
            '{' => {
                depth += 1;
                cur.push(c);
            }
            '}' => {
                depth = depth.saturating_sub(1);
                cur.push(c);
            }
            c if depth == 0 && (c == ',' || c.is_whitespace()) => {
                if !cur.is_empty() {
                    items.push(std::mem::take(&mut cur));
                }
            }
            c => cur.push(c),
        }
    }
    if !cur.is_empty() {
        items.push(cur);
    }
    items
}

fn md_escape(s: &str) -> String {
    s.replace('|', "\\|")
}

/// The markdown table of every parameter, as it appears between the
/// `<!-- params:begin -->` and `<!-- params:end -->` markers of
/// docs/configuration.md (a unit test keeps the two identical).
pub fn parameter_table_markdown() -> String {
    let mut out = String::new();
    out.push_str("| Parameter | Type | Default | Description |\n");
    out.push_str("|---|---|---|---|\n");
    for def in PARAMETERS {
        let default = if let Some((_, how)) = COMPUTED.iter().find(|(n, _)| *n == def.name) {
            format!("*{}*", md_escape(how))
        } else if def.default.is_empty() {
            "*(empty)*".to_string()
        } else {
            format!("`{}`", md_escape(def.default))
        };
        let mut kind = def.kind.as_str().to_string();
        if let ParamKind::Time(unit) = def.kind {
            kind = format!("{kind} (unit {})", unit.letter());
        }
        match def.bounds() {
            Some((lo, i64::MAX)) => kind = format!("{kind}, ≥ {lo}"),
            Some((lo, hi)) => kind = format!("{kind}, {lo}..{hi}"),
            None => {}
        }
        if let Some(choices) = def.choices() {
            kind = format!("{kind}: {}", choices.join(" \\| "));
        }
        if def.is_raw() {
            kind.push_str(" (not expanded)");
        }
        out.push_str(&format!(
            "| `{}` | {} | {} | {} |\n",
            def.name,
            kind,
            default,
            md_escape(def.doc)
        ));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table_is_sorted_and_unique() {
        for w in PARAMETERS.windows(2) {
            assert!(w[0].name < w[1].name, "{} !< {}", w[0].name, w[1].name);
        }
    }

    #[test]
    fn every_entry_documented_and_default_valid() {
        for def in PARAMETERS {
            assert!(is_param_name(def.name), "{}", def.name);
            assert!(!def.doc.trim().is_empty(), "{} has no doc", def.name);
            assert!(!def.doc.contains('\n'), "{} doc is not one line", def.name);
            if !def.default.contains('$') {
                assert_eq!(check_value(def, def.default), Ok(()), "{}", def.name);
            }
        }
    }

    #[test]
    fn defaults_reference_only_known_parameters() {
        for def in PARAMETERS.iter().filter(|d| !d.is_raw()) {
            for name in crate::main_cf::referenced_names(def.default) {
                assert!(
                    param_def(&name).is_some(),
                    "{} refers to unknown ${name}",
                    def.name
                );
            }
        }
    }

    #[test]
    fn required_parameters_present() {
        for (name, default) in [
            ("queue_directory", "/var/spool/postern"),
            (
                "mydestination",
                "$myhostname, localhost.$mydomain, localhost",
            ),
            ("mynetworks", "127.0.0.0/8 [::1]/128"),
            ("smtpd_banner", "$myhostname ESMTP $mail_name"),
            ("message_size_limit", "10240000"),
            ("maximal_queue_lifetime", "5d"),
            ("local_recipient_maps", "unix:passwd.byname $alias_maps"),
            ("smtpd_forbid_bare_newline", "normalize"),
            ("forward_path", "$home/.forward"),
        ] {
            assert_eq!(param_def(name).map(|d| d.default), Some(default), "{name}");
        }
        assert!(param_def("no_such_parameter").is_none());
        assert!(param_def("").is_none());
    }

    #[test]
    fn bool_values() {
        for (v, want) in [
            ("yes", Some(true)),
            ("YES", Some(true)),
            ("True", Some(true)),
            ("1", Some(true)),
            ("on", Some(true)),
            ("no", Some(false)),
            ("false", Some(false)),
            ("0", Some(false)),
            ("OFF", Some(false)),
            ("", None),
            ("y", None),
            ("2", None),
            ("yess", None),
        ] {
            assert_eq!(parse_bool(v), want, "{v:?}");
        }
    }

    #[test]
    fn bare_times_take_the_parameters_postfix_unit() {
        // postconf(5): the queue lifetimes are in days, the rest in seconds.
        for (name, unit) in [
            ("maximal_queue_lifetime", TimeUnit::D),
            ("bounce_queue_lifetime", TimeUnit::D),
            ("minimal_backoff_time", TimeUnit::S),
            ("maximal_backoff_time", TimeUnit::S),
            ("queue_run_delay", TimeUnit::S),
            ("smtpd_timeout", TimeUnit::S),
            ("service_throttle_time", TimeUnit::S),
        ] {
            let d = param_def(name).expect("in table");
            assert_eq!(d.kind, ParamKind::Time(unit), "{name}");
        }
        assert_eq!(
            parse_time_in("5", TimeUnit::D),
            Some(Duration::from_secs(5 * 86_400))
        );
        assert_eq!(
            parse_time_in("5s", TimeUnit::D),
            Some(Duration::from_secs(5))
        );
        assert_eq!(
            parse_time_in("2h", TimeUnit::D),
            Some(Duration::from_secs(7200))
        );
        assert_eq!(parse_time_in("", TimeUnit::D), None);
        assert_eq!(parse_time_in("999999999999999999", TimeUnit::W), None);
        // Every default is written with its unit, so `postern config -d`
        // shows what it means.
        for def in PARAMETERS {
            if let ParamKind::Time(_) = def.kind {
                assert!(
                    def.default.ends_with(|c: char| c.is_ascii_alphabetic()),
                    "{} default {:?} has no unit",
                    def.name,
                    def.default
                );
            }
        }
    }

    #[test]
    fn time_values() {
        for (v, want) in [
            ("300s", Some(300)),
            ("300", Some(300)),
            ("5m", Some(300)),
            ("1h", Some(3600)),
            ("2d", Some(172_800)),
            ("1w", Some(604_800)),
            ("0", Some(0)),
            ("", None),
            ("s", None),
            ("5x", None),
            ("5ms", None),
            ("-5s", None),
            ("1.5h", None),
            ("5 m", None),
            ("99999999999999999999w", None),
            ("18446744073709551615w", None),
        ] {
            assert_eq!(parse_time(v), want.map(Duration::from_secs), "{v:?}");
        }
    }

    #[test]
    fn size_and_int_values() {
        assert_eq!(parse_size("10240000"), Some(10_240_000));
        assert_eq!(parse_size("0"), Some(0));
        for bad in [
            "",
            "10k",
            "1m",
            "-1",
            "+1",
            "abc",
            "1 2",
            "99999999999999999999999",
        ] {
            assert_eq!(parse_size(bad), None, "{bad:?}");
        }
        assert_eq!(parse_int("42"), Some(42));
        assert_eq!(parse_int("-1"), Some(-1));
        for bad in ["", "4 2", "x", "1.0", "99999999999999999999999"] {
            assert_eq!(parse_int(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn bounds_are_start_up_errors_in_postfix_words() {
        let d = param_def("smtpd_recipient_limit").expect("in table");
        assert_eq!(d.bounds(), Some((1, i64::MAX)));
        assert_eq!(
            check_value(d, "0"),
            Err("invalid smtpd_recipient_limit parameter value 0 < 1".into())
        );
        assert_eq!(check_value(d, "1"), Ok(()));
        let d = param_def("line_length_limit").expect("in table");
        assert_eq!(
            check_value(d, "100"),
            Err("invalid line_length_limit parameter value 100 < 512".into())
        );
        let d = param_def("smtpd_hard_error_limit").expect("in table");
        assert_eq!(
            check_value(d, "4294967296"),
            Err("invalid smtpd_hard_error_limit parameter value 4294967296 > 4294967295".into())
        );
        for (name, lo, _) in BOUNDS {
            let d = param_def(name).unwrap_or_else(|| panic!("bounds for unknown {name}"));
            assert!(matches!(d.kind, ParamKind::Int | ParamKind::Size), "{name}");
            assert_eq!(
                check_value(d, d.default),
                Ok(()),
                "{name} default in bounds"
            );
            assert!(
                check_value(d, &(lo - 1).to_string()).is_err() || *lo == 0,
                "{name}"
            );
        }
    }

    #[test]
    fn check_value_messages() {
        let d = param_def("message_size_limit").expect("in table");
        assert_eq!(
            check_value(d, "abc"),
            Err("bad numerical parameter value: message_size_limit = abc".into())
        );
        let d = param_def("smtpd_helo_required").expect("in table");
        assert_eq!(
            check_value(d, "maybe"),
            Err("bad boolean parameter value: smtpd_helo_required = maybe".into())
        );
        let d = param_def("smtpd_timeout").expect("in table");
        assert_eq!(
            check_value(d, "5y"),
            Err("bad time parameter value: smtpd_timeout = 5y".into())
        );
        let d = param_def("smtpd_recipient_limit").expect("in table");
        assert!(check_value(d, "many").is_err());
        let d = param_def("smtpd_forbid_bare_newline").expect("in table");
        assert_eq!(check_value(d, "reject"), Ok(()));
        assert_eq!(check_value(d, "no"), Ok(()));
        assert_eq!(
            check_value(d, "yes"),
            Err("bad parameter value: smtpd_forbid_bare_newline = yes (expected one of: normalize, reject, no)".into())
        );
    }

    #[test]
    fn list_splitting() {
        assert_eq!(split_list("a, b ,c\td  e,,"), vec!["a", "b", "c", "d", "e"]);
        assert_eq!(split_list(""), Vec::<String>::new());
        assert_eq!(split_list(" , ,"), Vec::<String>::new());
        assert_eq!(
            split_list("hash:/a, inline:{ x=y, z=w } static:q"),
            vec!["hash:/a", "inline:{ x=y, z=w }", "static:q"]
        );
        assert_eq!(split_list("a} b"), vec!["a}", "b"]);
    }

    #[test]
    fn list_choices() {
        let d = param_def("inet_protocols").expect("in table");
        assert_eq!(check_value(d, "ipv4, ipv6"), Ok(()));
        assert_eq!(
            check_value(d, "ipv4 ipv5"),
            Err("bad parameter value: inet_protocols = ipv4 ipv5 (expected one of: all, ipv4, ipv6)".into())
        );
    }

    #[test]
    fn hostname_helpers() {
        let h = default_hostname();
        assert!(h.contains('.'), "{h}");
        assert_eq!(domain_of_hostname("mail.example.com"), "example.com");
        assert_eq!(domain_of_hostname("host"), "localdomain");
        assert_eq!(domain_of_hostname("host."), "localdomain");
    }

    #[test]
    fn markdown_has_every_parameter() {
        let md = parameter_table_markdown();
        assert_eq!(md.lines().count(), PARAMETERS.len() + 2);
        for def in PARAMETERS {
            assert!(md.contains(&format!("| `{}` |", def.name)), "{}", def.name);
        }
    }
}
