//! The smtpd_*_restrictions lists: Postfix's access-restriction language.
//!
//! Five lists are evaluated, in this order, when a RCPT TO arrives (as
//! Postfix does with its default smtpd_delay_reject = yes, so the client,
//! HELO name and sender are all known): smtpd_client_restrictions,
//! smtpd_helo_restrictions, smtpd_sender_restrictions,
//! smtpd_relay_restrictions, smtpd_recipient_restrictions. Within a list the
//! first word that decides wins: `permit`-like words end that list (the next
//! list still runs), `reject`/`defer`-like words refuse the recipient. After
//! the lists, a recipient in a local domain must exist (Postfix's implicit
//! reject_unlisted_recipient).
//!
//! Supported words: permit, reject, defer, permit_mynetworks,
//! permit_sasl_authenticated, permit_auth_destination,
//! reject_unauth_destination, defer_unauth_destination,
//! reject_sender_login_mismatch, reject_non_fqdn_sender,
//! reject_non_fqdn_recipient, reject_non_fqdn_helo_hostname,
//! reject_unlisted_recipient, and check_{client,helo,sender,recipient}_access
//! with an access(5) table. An unknown word stops smtpd at start-up with
//! the parameter and the word (Postfix would answer 451 to every client).
//!
//! SECURITY: start-up refuses a configuration in which neither
//! smtpd_relay_restrictions nor smtpd_recipient_restrictions can refuse
//! anything (an open relay), with Postfix's words. A lookup that fails is a
//! 451 4.3.0, never a permit.

use crate::policy::Policy;
use postern_config::MainCf;
use postern_maps::Table;
use postern_smtp_proto::{EnhancedCode, Mailbox, Reply, ReversePath};
use std::net::IpAddr;

/// One restriction word.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Word {
    /// `permit`: end this list, allowing.
    Permit,
    /// `reject`: refuse (554 5.7.1 ... Access denied).
    Reject,
    /// `defer`: refuse for now (450 4.7.1 ... Access denied).
    Defer,
    /// `permit_mynetworks`: allow clients in mynetworks.
    PermitMynetworks,
    /// `permit_sasl_authenticated`: allow clients that did AUTH.
    PermitSaslAuthenticated,
    /// `permit_auth_destination`: allow mail to local or relay_domains domains.
    PermitAuthDestination,
    /// `reject_unauth_destination`: refuse mail to other domains (554).
    RejectUnauthDestination,
    /// `defer_unauth_destination`: the same, temporary (454).
    DeferUnauthDestination,
    /// `reject_sender_login_mismatch`: MAIL FROM must belong to the login.
    RejectSenderLoginMismatch,
    /// `reject_non_fqdn_sender`: MAIL FROM domain must have a dot.
    RejectNonFqdnSender,
    /// `reject_non_fqdn_recipient`: RCPT TO domain must have a dot.
    RejectNonFqdnRecipient,
    /// `reject_non_fqdn_helo_hostname`: the HELO name must have a dot.
    RejectNonFqdnHeloHostname,
    /// `reject_unlisted_recipient`: a local recipient must exist.
    RejectUnlistedRecipient,
    /// `check_{client,helo,sender,recipient}_access TABLE`: an access(5)
    /// table (the index into [`Restrictions`]'s tables) decides.
    CheckAccess(Access, usize),
}

/// What a `check_*_access` table is searched for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Access {
    /// The client address (`check_client_access`).
    Client,
    /// The HELO/EHLO name (`check_helo_access`).
    Helo,
    /// The MAIL FROM address (`check_sender_access`).
    Sender,
    /// The RCPT TO address (`check_recipient_access`).
    Recipient,
}

impl Access {
    /// How a refusal names what was checked, and the value itself:
    /// `<target>: What rejected: ...`.
    fn subject(self, req: &Request<'_>) -> (&'static str, String) {
        match self {
            Access::Client => ("Client host", req.client.to_string()),
            Access::Helo => ("Helo command", req.helo.unwrap_or("").to_string()),
            Access::Sender => ("Sender address", req.sender.bare()),
            Access::Recipient => ("Recipient address", req.recipient.to_string()),
        }
    }

    fn from_word(word: &str) -> Option<Access> {
        Some(match word.to_ascii_lowercase().as_str() {
            "check_client_access" => Access::Client,
            "check_helo_access" => Access::Helo,
            "check_sender_access" => Access::Sender,
            "check_recipient_access" => Access::Recipient,
            _ => return None,
        })
    }
}

impl Word {
    /// Parses one word of a list (case-insensitive, as Postfix).
    pub fn parse(s: &str) -> Option<Word> {
        Some(match s.to_ascii_lowercase().as_str() {
            "permit" => Word::Permit,
            "reject" => Word::Reject,
            "defer" => Word::Defer,
            "permit_mynetworks" => Word::PermitMynetworks,
            "permit_sasl_authenticated" => Word::PermitSaslAuthenticated,
            "permit_auth_destination" => Word::PermitAuthDestination,
            "reject_unauth_destination" => Word::RejectUnauthDestination,
            "defer_unauth_destination" => Word::DeferUnauthDestination,
            "reject_sender_login_mismatch" => Word::RejectSenderLoginMismatch,
            "reject_non_fqdn_sender" => Word::RejectNonFqdnSender,
            "reject_non_fqdn_recipient" => Word::RejectNonFqdnRecipient,
            "reject_non_fqdn_helo_hostname" | "reject_non_fqdn_hostname" => {
                Word::RejectNonFqdnHeloHostname
            }
            "reject_unlisted_recipient" | "check_recipient_maps" => Word::RejectUnlistedRecipient,
            _ => return None,
        })
    }

    /// Words that can refuse a relay attempt (Postfix's open-relay check).
    fn stops_relaying(self) -> bool {
        matches!(
            self,
            Word::Reject
                | Word::Defer
                | Word::RejectUnauthDestination
                | Word::DeferUnauthDestination
        )
    }
}

/// Which list a word is in: decides the wording of a plain reject/defer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Stage {
    Client,
    Helo,
    Sender,
    Relay,
    Recipient,
}

impl Stage {
    /// What a plain `reject` or `defer` in this list refuses.
    fn subject(self) -> Access {
        match self {
            Stage::Client => Access::Client,
            Stage::Helo => Access::Helo,
            Stage::Sender => Access::Sender,
            Stage::Relay | Stage::Recipient => Access::Recipient,
        }
    }
}

/// `reject`/`defer` (and an access table's REJECT/DEFER): 554 5.7.1 or
/// 450 4.7.1 `<target>: What rejected: text`.
fn refuse(defer: bool, subject: Access, req: &Request<'_>, text: &str) -> Step {
    let (what, target) = subject.subject(req);
    let text = format!("<{target}>: {what} rejected: {text}");
    Step::Final(if defer {
        reply(450, (4, 7, 1), text)
    } else {
        reply(554, (5, 7, 1), text)
    })
}

/// The parameter names, in evaluation order.
const LISTS: [(&str, Stage); 5] = [
    ("smtpd_client_restrictions", Stage::Client),
    ("smtpd_helo_restrictions", Stage::Helo),
    ("smtpd_sender_restrictions", Stage::Sender),
    ("smtpd_relay_restrictions", Stage::Relay),
    ("smtpd_recipient_restrictions", Stage::Recipient),
];

/// The parsed lists of one smtpd process.
#[derive(Clone, Debug)]
pub struct Restrictions {
    lists: Vec<(Stage, Vec<Word>)>,
    /// The tables of the check_*_access words.
    tables: Vec<Table>,
}

/// What is known when a recipient is checked.
#[derive(Clone, Copy, Debug)]
pub struct Request<'a> {
    /// The client's address.
    pub client_ip: IpAddr,
    /// `name[addr]` as logged.
    pub client: &'a str,
    /// The HELO/EHLO argument, if any.
    pub helo: Option<&'a str>,
    /// The SASL login, when the client authenticated.
    pub sasl_user: Option<&'a str>,
    /// MAIL FROM address.
    pub sender: &'a ReversePath,
    /// RCPT TO address (`<Postmaster>` already completed with a domain).
    pub recipient: &'a Mailbox,
}

/// The outcome for one recipient.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Decision {
    /// Accept the recipient.
    Accept,
    /// Refuse it with this reply (4xx or 5xx).
    Refuse(Reply),
}

fn reply(code: u16, ec: (u8, u16, u16), text: String) -> Decision {
    Decision::Refuse(Reply::new(code, Some(EnhancedCode(ec.0, ec.1, ec.2)), text))
}

fn temp_fail(what: impl std::fmt::Display) -> Decision {
    reply(
        451,
        (4, 3, 0),
        format!("<{what}>: Temporary lookup failure"),
    )
}

/// Is this domain fully qualified (has a dot, or is an address literal)?
fn fqdn(domain: &str) -> bool {
    domain.starts_with('[') || domain.trim_end_matches('.').contains('.')
}

impl Restrictions {
    /// Parses the five lists; an unknown word or an open-relay setup is a
    /// start-up error naming the parameter.
    pub fn from_config(main: &MainCf) -> Result<Restrictions, String> {
        let mut lists = Vec::new();
        let mut tables = Vec::new();
        let config_dir = main.path("config_directory");
        for (param, stage) in LISTS {
            let mut words = Vec::new();
            let mut items = main.list(param).into_iter();
            while let Some(item) = items.next() {
                if let Some(access) = Access::from_word(&item) {
                    let spec = items.next().ok_or_else(|| {
                        format!(
                            "{param}: {item} needs a table (e.g. {item} hash:/etc/postern/access)"
                        )
                    })?;
                    let table = Table::open_or_unavailable(&spec, &config_dir)
                        .map_err(|e| format!("{param}: {item} {spec}: {e}"))?;
                    tables.push(table);
                    words.push(Word::CheckAccess(access, tables.len() - 1));
                    continue;
                }
                let w = Word::parse(&item).ok_or_else(|| {
                    format!(
                        "{param}: unknown or unsupported restriction \"{item}\" \
                         (see docs/restrictions.md for the supported words)"
                    )
                })?;
                words.push(w);
            }
            lists.push((stage, words));
        }
        let r = Restrictions { lists, tables };
        let guarded = r
            .lists
            .iter()
            .filter(|(s, _)| matches!(s, Stage::Relay | Stage::Recipient))
            .any(|(_, ws)| ws.iter().any(|w| w.stops_relaying()));
        if !guarded {
            return Err(
                "in parameter smtpd_relay_restrictions or smtpd_recipient_restrictions, \
                 specify at least one working instance of: reject_unauth_destination, \
                 defer_unauth_destination, reject, defer"
                    .into(),
            );
        }
        Ok(r)
    }

    /// Whether any list uses `word` (smtpd warns about
    /// reject_sender_login_mismatch without AUTH, for example).
    pub fn uses(&self, word: Word) -> bool {
        self.lists.iter().any(|(_, ws)| ws.contains(&word))
    }

    /// Runs the lists, then the implicit local-recipient check.
    pub fn check(&self, policy: &mut Policy, req: &Request<'_>) -> Decision {
        for (stage, words) in &self.lists {
            for &w in words {
                match self.apply(w, *stage, policy, req) {
                    Step::Next => {}
                    Step::PermitList => break,
                    Step::Final(d) => return d,
                }
            }
        }
        self.unlisted_recipient(policy, req)
            .unwrap_or(Decision::Accept)
    }

    fn unlisted_recipient(&self, policy: &mut Policy, req: &Request<'_>) -> Option<Decision> {
        match policy.is_local_domain(&req.recipient.domain) {
            Ok(true) => {}
            Ok(false) => return None,
            Err(why) => {
                tracing::warn!(
                    "{}: domain lookup for <{}> failed: {why}",
                    req.client,
                    req.recipient
                );
                return Some(temp_fail(req.recipient));
            }
        }
        if req.recipient.local_part.eq_ignore_ascii_case("postmaster") {
            return None;
        }
        match policy.recipient_exists(&req.recipient.local_part) {
            Ok(true) => None,
            Ok(false) => Some(reply(
                550,
                (5, 1, 1),
                format!(
                    "<{}>: Recipient address rejected: User unknown in local recipient table",
                    req.recipient
                ),
            )),
            Err(why) => {
                tracing::warn!(
                    "{}: recipient lookup for <{}> failed: {why}",
                    req.client,
                    req.recipient
                );
                Some(temp_fail(req.recipient))
            }
        }
    }

    fn apply(&self, w: Word, stage: Stage, policy: &mut Policy, req: &Request<'_>) -> Step {
        // Err = mydestination could not be read: 451, never a relay decision.
        let auth_destination = |p: &Policy| -> Result<bool, Step> {
            if p.is_relay_domain(&req.recipient.domain) {
                return Ok(true);
            }
            p.is_local_domain(&req.recipient.domain).map_err(|why| {
                tracing::warn!(
                    "{}: domain lookup for <{}> failed: {why}",
                    req.client,
                    req.recipient
                );
                Step::Final(temp_fail(req.recipient))
            })
        };
        match w {
            Word::Permit => Step::PermitList,
            Word::Reject | Word::Defer => {
                refuse(w == Word::Defer, stage.subject(), req, "Access denied")
            }
            Word::PermitMynetworks => permit_if(policy.is_mynetworks(req.client_ip)),
            Word::PermitSaslAuthenticated => permit_if(req.sasl_user.is_some()),
            Word::PermitAuthDestination => match auth_destination(policy) {
                Ok(yes) => permit_if(yes),
                Err(step) => step,
            },
            Word::RejectUnauthDestination | Word::DeferUnauthDestination => {
                match auth_destination(policy) {
                    Ok(true) => return Step::Next,
                    Ok(false) => {}
                    Err(step) => return step,
                }
                let (code, ec) = if w == Word::RejectUnauthDestination {
                    (554, (5, 7, 1))
                } else {
                    (454, (4, 7, 1))
                };
                Step::Final(reply(
                    code,
                    ec,
                    format!("<{}>: Relay access denied", req.recipient),
                ))
            }
            Word::RejectSenderLoginMismatch => self.login_mismatch(policy, req),
            Word::RejectNonFqdnSender => match req.sender.mailbox() {
                Some(m) if !fqdn(&m.domain) => Step::Final(reply(
                    504,
                    (5, 5, 2),
                    format!("<{m}>: Sender address rejected: need fully-qualified address"),
                )),
                _ => Step::Next,
            },
            Word::RejectNonFqdnRecipient => {
                if fqdn(&req.recipient.domain) {
                    Step::Next
                } else {
                    Step::Final(reply(
                        504,
                        (5, 5, 2),
                        format!(
                            "<{}>: Recipient address rejected: need fully-qualified address",
                            req.recipient
                        ),
                    ))
                }
            }
            Word::RejectNonFqdnHeloHostname => match req.helo {
                Some(h) if !fqdn(h) => Step::Final(reply(
                    504,
                    (5, 5, 2),
                    format!("<{h}>: Helo command rejected: need fully-qualified hostname"),
                )),
                _ => Step::Next,
            },
            Word::CheckAccess(access, i) => match self.tables.get(i) {
                Some(table) => access_check(table, access, req),
                None => Step::Next,
            },
            Word::RejectUnlistedRecipient => match self.unlisted_recipient(policy, req) {
                Some(d) => Step::Final(d),
                None => Step::Next,
            },
        }
    }

    /// reject_sender_login_mismatch, as Postfix defines it: a logged-in
    /// client may only use addresses its login owns; a client that is not
    /// logged in may not use an address that has an owner. The null sender
    /// is never checked.
    fn login_mismatch(&self, policy: &mut Policy, req: &Request<'_>) -> Step {
        let Some(sender) = req.sender.mailbox() else {
            return Step::Next;
        };
        let owners = match policy.sender_owners(sender) {
            Ok(o) => o,
            Err(why) => {
                tracing::warn!(
                    "{}: smtpd_sender_login_maps lookup for <{sender}> failed: {why}",
                    req.client,
                );
                return Step::Final(temp_fail(sender));
            }
        };
        match (req.sasl_user, owners) {
            (Some(user), owners) => {
                let owned = owners.iter().any(|o| o.eq_ignore_ascii_case(user));
                if owned {
                    Step::Next
                } else {
                    Step::Final(reply(
                        553,
                        (5, 7, 1),
                        format!("<{sender}>: Sender address rejected: not owned by user {user}"),
                    ))
                }
            }
            (None, owners) if !owners.is_empty() => Step::Final(reply(
                553,
                (5, 7, 1),
                format!("<{sender}>: Sender address rejected: not logged in"),
            )),
            (None, _) => Step::Next,
        }
    }
}

/// The keys an access table is searched with, in Postfix's order
/// (access(5)): an address is tried as `user@domain`, `domain` and its
/// parent domains, then `user@`; a client as its address and the address
/// with the last octets cut (`192.0.2`, `192.0`, `192`); a HELO name as
/// itself and its parent domains.
fn access_keys(access: Access, req: &Request<'_>) -> Vec<String> {
    fn domain_and_parents(domain: &str, keys: &mut Vec<String>) {
        let d = domain.trim_end_matches('.').to_ascii_lowercase();
        if d.is_empty() || d.starts_with('[') {
            return;
        }
        keys.push(d.clone());
        let mut rest = d.as_str();
        while let Some((_, parent)) = rest.split_once('.') {
            if parent.is_empty() {
                break;
            }
            keys.push(parent.to_string());
            rest = parent;
        }
    }
    match access {
        Access::Client => {
            let ip = req.client_ip.to_string();
            let mut keys = vec![ip.clone()];
            if req.client_ip.is_ipv4() {
                let mut parts: Vec<&str> = ip.split('.').collect();
                while parts.len() > 1 {
                    parts.pop();
                    keys.push(parts.join("."));
                }
            }
            keys
        }
        Access::Helo => {
            let mut keys = Vec::new();
            domain_and_parents(req.helo.unwrap_or(""), &mut keys);
            keys
        }
        Access::Sender | Access::Recipient => {
            let address = match access {
                Access::Sender => req.sender.mailbox(),
                _ => Some(req.recipient),
            };
            let Some(m) = address else {
                // The null sender is looked up as Postfix's smtpd_null_access_lookup_key.
                return vec!["<>".to_string()];
            };
            let mut keys = vec![m.to_string().to_lowercase()];
            domain_and_parents(&m.domain, &mut keys);
            keys.push(format!("{}@", m.local_part.to_lowercase()));
            keys
        }
    }
}

/// Turns an access table's answer into a step: OK, DUNNO, REJECT [text],
/// DEFER [text], or a 4NN/5NN code with text; anything else is a
/// configuration error (451 4.3.5, as Postfix).
fn access_check(table: &Table, access: Access, req: &Request<'_>) -> Step {
    let (what, shown) = access.subject(req);
    let mut found = None;
    for key in &access_keys(access, req) {
        match table.lookup(key) {
            Ok(Some(v)) => {
                found = Some(v);
                break;
            }
            Ok(None) => {}
            Err(e) => {
                tracing::warn!("{}: access table lookup for {key} failed: {e}", req.client);
                return Step::Final(temp_fail(shown));
            }
        }
    }
    let Some(value) = found else {
        return Step::Next;
    };
    let value = value.trim();
    let (word, text) = value
        .split_once(char::is_whitespace)
        .map(|(w, t)| (w, t.trim()))
        .unwrap_or((value, ""));
    let text_or = |default: &'static str| if text.is_empty() { default } else { text };
    match word.to_ascii_uppercase().as_str() {
        "OK" => Step::PermitList,
        "DUNNO" => Step::Next,
        "REJECT" => refuse(false, access, req, text_or("Access denied")),
        "DEFER" | "DEFER_IF_PERMIT" | "DEFER_IF_REJECT" => {
            refuse(true, access, req, text_or("Access denied"))
        }
        w if w.len() == 3
            && w.bytes().all(|b| b.is_ascii_digit())
            && matches!(w.as_bytes()[0], b'4' | b'5') =>
        {
            let code: u16 = w.parse().unwrap_or(554);
            let class = if code >= 500 { 5 } else { 4 };
            // "550 5.7.1 text" keeps its enhanced code; "550 text" gets X.7.1.
            let (first, after) = text
                .split_once(' ')
                .map(|(e, r)| (e, r.trim()))
                .unwrap_or((text, ""));
            let (ec, rest) = match parse_enhanced(first, class) {
                Some(ec) => (ec, after),
                None => ((class, 7, 1), text),
            };
            let rest = if rest.is_empty() {
                "Access denied"
            } else {
                rest
            };
            Step::Final(reply(
                code,
                ec,
                format!("<{shown}>: {what} rejected: {rest}"),
            ))
        }
        _ => {
            tracing::warn!(
                "access table: unsupported result \"{value}\" for {shown} \
                 (Postern knows OK, DUNNO, REJECT, DEFER, 4NN and 5NN)"
            );
            Step::Final(reply(
                451,
                (4, 3, 5),
                "Server configuration error".to_string(),
            ))
        }
    }
}

/// "5.7.1" (a valid code, postern-status's parser) with the given class as
/// its first digit, or None. The access table is text from outside, so it
/// is the one place a code is parsed.
fn parse_enhanced(s: &str, class: u8) -> Option<(u8, u16, u16)> {
    EnhancedCode::parse(s)
        .filter(|c| c.0 == class)
        .map(|c| (c.0, c.1, c.2))
}

/// The effect of one word.
enum Step {
    /// Undecided: the next word.
    Next,
    /// Permitted: skip the rest of this list.
    PermitList,
    /// Decided.
    Final(Decision),
}

fn permit_if(b: bool) -> Step {
    if b { Step::PermitList } else { Step::Next }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::policy::tests::scratch;
    use std::net::Ipv4Addr;

    fn config(dir: &std::path::Path, extra: &[(&str, &str)]) -> MainCf {
        let mut m = MainCf::parse("", &dir.join("main.cf")).unwrap();
        m.set("myhostname", "mail.example.org");
        m.set("mydestination", "example.org");
        m.set("alias_maps", "");
        m.set("local_recipient_maps", "inline:{ vera=1, bob=1 }");
        m.set("recipient_delimiter", "+");
        m.set("mynetworks", "127.0.0.0/8");
        m.set("relay_domains", "partner.example");
        m.set("queue_directory", &dir.display().to_string());
        m.set("users_file", "");
        for (k, v) in extra {
            m.set(k, v);
        }
        m
    }

    const OUTSIDE: IpAddr = IpAddr::V4(Ipv4Addr::new(192, 0, 2, 9));
    const INSIDE: IpAddr = IpAddr::V4(Ipv4Addr::new(127, 0, 0, 1));

    fn check(main: &MainCf, ip: IpAddr, user: Option<&str>, sender: &str, rcpt: &str) -> Decision {
        let r = Restrictions::from_config(main).unwrap();
        let mut p = Policy::from_config(main).unwrap();
        let sender: ReversePath = sender.parse().unwrap();
        let rcpt: Mailbox = rcpt.parse().unwrap();
        r.check(
            &mut p,
            &Request {
                client_ip: ip,
                client: &format!("unknown[{ip}]"),
                helo: Some("client"),
                sasl_user: user,
                sender: &sender,
                recipient: &rcpt,
            },
        )
    }

    fn code(d: &Decision) -> u16 {
        match d {
            Decision::Accept => 250,
            Decision::Refuse(r) => r.code,
        }
    }

    #[test]
    fn default_relay_rules() {
        let d = scratch("default");
        let m = config(&d, &[]);
        // Local users from anywhere; unknown local users never.
        assert_eq!(
            check(&m, OUTSIDE, None, "x@a.example", "vera@example.org"),
            Decision::Accept
        );
        assert_eq!(
            code(&check(&m, OUTSIDE, None, "", "nobody@example.org")),
            550
        );
        assert_eq!(
            code(&check(&m, INSIDE, Some("vera"), "", "nobody@example.org")),
            550
        );
        // Relay: mynetworks, AUTH, relay_domains; nobody else.
        let relay = check(&m, OUTSIDE, None, "x@a.example", "far@remote.example");
        assert_eq!(code(&relay), 554);
        assert!(format!("{relay:?}").contains("Relay access denied"));
        assert_eq!(
            check(&m, INSIDE, None, "", "far@remote.example"),
            Decision::Accept
        );
        assert_eq!(
            check(&m, OUTSIDE, Some("vera"), "", "far@remote.example"),
            Decision::Accept
        );
        assert_eq!(
            check(&m, OUTSIDE, None, "", "x@sub.partner.example"),
            Decision::Accept
        );
        let _ = std::fs::remove_dir_all(&d);
    }

    #[test]
    fn submission_style_lists() {
        let d = scratch("submission");
        let m = config(
            &d,
            &[
                (
                    "smtpd_client_restrictions",
                    "permit_sasl_authenticated, reject",
                ),
                ("smtpd_sender_restrictions", "reject_sender_login_mismatch"),
                (
                    "smtpd_relay_restrictions",
                    "permit_sasl_authenticated, reject",
                ),
            ],
        );
        // Without AUTH nothing goes, not even to a local user.
        let r = check(&m, INSIDE, None, "vera@example.org", "bob@example.org");
        assert_eq!(
            r,
            reply(
                554,
                (5, 7, 1),
                "<unknown[127.0.0.1]>: Client host rejected: Access denied".into()
            )
        );
        // With AUTH: own address (with an extension) to anywhere.
        assert_eq!(
            check(
                &m,
                OUTSIDE,
                Some("vera"),
                "Vera+news@example.org",
                "far@remote.example"
            ),
            Decision::Accept
        );
        // Someone else's address, or a foreign domain: 553.
        let r = check(
            &m,
            OUTSIDE,
            Some("vera"),
            "bob@example.org",
            "far@remote.example",
        );
        assert_eq!(
            r,
            reply(
                553,
                (5, 7, 1),
                "<bob@example.org>: Sender address rejected: not owned by user vera".into()
            )
        );
        assert_eq!(
            code(&check(
                &m,
                OUTSIDE,
                Some("vera"),
                "vera@evil.example",
                "a@example.org"
            )),
            553
        );
        // The null sender is not checked.
        assert_eq!(
            check(&m, OUTSIDE, Some("vera"), "", "far@remote.example"),
            Decision::Accept
        );
        let _ = std::fs::remove_dir_all(&d);
    }

    #[test]
    fn sender_login_maps_name_owners() {
        let d = scratch("maps");
        std::fs::write(
            d.join("senders"),
            "sales@example.org vera, bob\n@partner.example bob\n",
        )
        .unwrap();
        let spec = format!("texthash:{}", d.join("senders").display());
        let m = config(
            &d,
            &[
                ("smtpd_sender_restrictions", "reject_sender_login_mismatch"),
                ("smtpd_sender_login_maps", &spec),
            ],
        );
        assert_eq!(
            check(
                &m,
                OUTSIDE,
                Some("Bob"),
                "sales@example.org",
                "vera@example.org"
            ),
            Decision::Accept
        );
        assert_eq!(
            check(
                &m,
                OUTSIDE,
                Some("bob"),
                "x@partner.example",
                "vera@example.org"
            ),
            Decision::Accept
        );
        // With a map, only the map counts: vera does not own vera@ by default.
        assert_eq!(
            code(&check(
                &m,
                OUTSIDE,
                Some("vera"),
                "vera@example.org",
                "bob@example.org"
            )),
            553
        );
        // Not logged in: an owned address is refused, an unowned one passes.
        let r = check(&m, OUTSIDE, None, "sales@example.org", "vera@example.org");
        assert_eq!(
            r,
            reply(
                553,
                (5, 7, 1),
                "<sales@example.org>: Sender address rejected: not logged in".into()
            )
        );
        assert_eq!(
            check(&m, OUTSIDE, None, "x@elsewhere.example", "vera@example.org"),
            Decision::Accept
        );
        let _ = std::fs::remove_dir_all(&d);
    }

    #[test]
    fn fqdn_checks_and_defer() {
        let d = scratch("fqdn");
        let m = config(
            &d,
            &[(
                "smtpd_recipient_restrictions",
                "reject_non_fqdn_sender, reject_non_fqdn_recipient, reject_non_fqdn_helo_hostname, permit",
            )],
        );
        assert_eq!(
            code(&check(&m, INSIDE, None, "a@localhost", "vera@example.org")),
            504
        );
        assert_eq!(code(&check(&m, INSIDE, None, "", "x@intranet")), 504);
        // "client" (the HELO name in these tests) is not fully qualified.
        assert_eq!(code(&check(&m, INSIDE, None, "", "vera@example.org")), 504);
        let m = config(
            &d,
            &[(
                "smtpd_relay_restrictions",
                "permit_mynetworks, defer_unauth_destination",
            )],
        );
        assert_eq!(
            code(&check(&m, OUTSIDE, None, "", "far@remote.example")),
            454
        );
        let m = config(&d, &[("smtpd_client_restrictions", "defer")]);
        assert_eq!(code(&check(&m, OUTSIDE, None, "", "vera@example.org")), 450);
        let _ = std::fs::remove_dir_all(&d);
    }

    #[test]
    fn access_tables() {
        let d = scratch("access");
        std::fs::write(
            d.join("clients"),
            "192.0.2 REJECT no mail from this network\n192.0.2.7 OK\n",
        )
        .unwrap();
        std::fs::write(
            d.join("senders"),
            "spammer.example 550 5.7.0 go away\nfriend@spammer.example OK\n\
             grey.example DEFER\nweird.example HOLD\n<> DUNNO\nboss@ REJECT\n",
        )
        .unwrap();
        let clients = format!("texthash:{}", d.join("clients").display());
        let senders = format!("texthash:{}", d.join("senders").display());
        let m = config(
            &d,
            &[
                (
                    "smtpd_client_restrictions",
                    &format!("check_client_access {clients}"),
                ),
                (
                    "smtpd_sender_restrictions",
                    &format!("check_sender_access {senders}"),
                ),
            ],
        );
        let near = IpAddr::V4(Ipv4Addr::new(192, 0, 2, 8));
        let listed = IpAddr::V4(Ipv4Addr::new(192, 0, 2, 7));
        assert_eq!(
            check(&m, near, None, "", "vera@example.org"),
            reply(
                554,
                (5, 7, 1),
                "<unknown[192.0.2.8]>: Client host rejected: no mail from this network".into()
            )
        );
        // The longest key wins: the host's own OK comes before its network.
        assert_eq!(
            check(&m, listed, None, "", "vera@example.org"),
            Decision::Accept
        );
        const ELSEWHERE: IpAddr = IpAddr::V4(Ipv4Addr::new(198, 51, 100, 9));
        // Sender: the address, then its domain and parents, then user@.
        assert_eq!(
            check(
                &m,
                ELSEWHERE,
                None,
                "x@mail.spammer.example",
                "vera@example.org"
            ),
            reply(
                550,
                (5, 7, 0),
                "<x@mail.spammer.example>: Sender address rejected: go away".into()
            )
        );
        assert_eq!(
            check(
                &m,
                ELSEWHERE,
                None,
                "friend@spammer.example",
                "vera@example.org"
            ),
            Decision::Accept
        );
        assert_eq!(
            code(&check(
                &m,
                ELSEWHERE,
                None,
                "a@grey.example",
                "vera@example.org"
            )),
            450
        );
        assert_eq!(
            code(&check(
                &m,
                ELSEWHERE,
                None,
                "boss@anywhere.example",
                "vera@example.org"
            )),
            554
        );
        assert_eq!(
            check(&m, ELSEWHERE, None, "", "vera@example.org"),
            Decision::Accept
        );
        // A result Postern does not know is a configuration error: 451.
        assert_eq!(
            code(&check(
                &m,
                ELSEWHERE,
                None,
                "a@weird.example",
                "vera@example.org"
            )),
            451
        );
        // A table is required, of a known type.
        let e = Restrictions::from_config(&config(
            &d,
            &[("smtpd_client_restrictions", "check_client_access")],
        ))
        .unwrap_err();
        assert!(e.contains("needs a table"), "{e}");
        let e = Restrictions::from_config(&config(
            &d,
            &[("smtpd_client_restrictions", "check_client_access nosuch:/x")],
        ))
        .unwrap_err();
        assert!(e.contains("unsupported table type"), "{e}");
        // A table file that is missing is no start-up error (no crash loop):
        // the check it would make is a temporary failure, 451 4.3.0.
        let m = config(
            &d,
            &[(
                "smtpd_client_restrictions",
                "check_client_access texthash:/nonexistent/x",
            )],
        );
        assert!(Restrictions::from_config(&m).is_ok());
        assert_eq!(
            check(&m, near, None, "", "vera@example.org"),
            reply(
                451,
                (4, 3, 0),
                "<unknown[192.0.2.8]>: Temporary lookup failure".into()
            )
        );
        let _ = std::fs::remove_dir_all(&d);
    }

    #[test]
    fn bad_configurations_stop_start_up() {
        let d = scratch("bad");
        let e = Restrictions::from_config(&config(
            &d,
            &[("smtpd_sender_restrictions", "reject_bogus")],
        ))
        .unwrap_err();
        assert!(
            e.contains("smtpd_sender_restrictions") && e.contains("reject_bogus"),
            "{e}"
        );
        let e = Restrictions::from_config(&config(
            &d,
            &[("smtpd_relay_restrictions", "permit_mynetworks")],
        ))
        .unwrap_err();
        assert!(e.contains("reject_unauth_destination"), "{e}");
        // A guard in smtpd_recipient_restrictions is enough (Postfix < 2.10 style).
        assert!(
            Restrictions::from_config(&config(
                &d,
                &[
                    ("smtpd_relay_restrictions", ""),
                    (
                        "smtpd_recipient_restrictions",
                        "permit_mynetworks, reject_unauth_destination"
                    ),
                ],
            ))
            .is_ok()
        );
        let _ = std::fs::remove_dir_all(&d);
    }
}
