//! Delivery status notifications: the bounce, the delay warning and the
//! success report a mail system sends back to a message's sender, composed
//! as Postfix's bounce(8) daemon composes them.
//!
//! A notification is an RFC 3464 `multipart/report;
//! report-type=delivery-status` with three parts: a text for people (in
//! Postfix's wording), a `message/delivery-status` for programs (one block
//! of per-message fields, one block per recipient) and the original
//! message, whole (`message/rfc822`) or its header block only
//! (`text/rfc822-headers`). When an address or the original is UTF-8
//! (SMTPUTF8, RFC 6531/6532) the RFC 6533 types are used instead:
//! `message/global-delivery-status`, `message/global`,
//! `message/global-headers`.
//!
//! [`compose`] is pure code: it reads the original from a [`Read`] and
//! writes the notification to a [`Write`], holding at most the start of the
//! original's header block in memory. Lines end in LF (cleanup converts as
//! needed). Which recipients to report and whether to send at all (DSN
//! NOTIFY, a null sender) is the caller's decision.
//!
//! Safety of what is written: every supplied string has its control
//! characters replaced ([`text::clean`]) and every line that carries one is
//! folded at 79 columns with a four-space indent, as Postfix's
//! `line_wrap()`, so no value can start a header field, end a header block
//! or put a MIME boundary at the start of a line. The boundary carries 96
//! bits from the standard library's randomly keyed SipHash (see
//! [`Report::boundary`]), so the original, which is copied unchanged, cannot
//! contain it except by guessing.
#![forbid(unsafe_code)]
#![warn(missing_docs)]

use std::collections::hash_map::RandomState;
use std::hash::BuildHasher;
use std::io::{self, BufReader, BufWriter, Read, Write};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

pub use postern_status::{DeliveryStatus, EnhancedCode};

mod original;
pub mod text;

use original::Original;
use text::{clean, clean_ascii, fold};

/// Which notification this is: it decides the subject, the wording, the
/// action each recipient is reported with and what of the original is
/// returned by default.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Kind {
    /// Recipients failed for good (or their mail expired): a bounce,
    /// "Undelivered Mail Returned to Sender". Every recipient is reported
    /// with Action `failed` and a class-5 status.
    Failure,
    /// Delivery is still being tried after `delay_warning_time`: "Delayed
    /// Mail (still being retried)". Action `delayed`, class-4 status,
    /// Will-Retry-Until.
    Delay,
    /// A NOTIFY=SUCCESS report: "Successful Mail Delivery Report". Action
    /// `delivered`, `relayed` (handed to a server without DSN) or
    /// `expanded` (an alias or list), class-2 status.
    Success,
}

/// What of the original to return (RFC 3461 RET).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Ret {
    /// RET=FULL: the whole message.
    Full,
    /// RET=HDRS: its header block only.
    Headers,
}

/// The RFC 3464 Action of one recipient.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Action {
    /// Could not be delivered; no further attempts.
    Failed,
    /// Not delivered yet; still trying.
    Delayed,
    /// Delivered to the recipient's mailbox.
    Delivered,
    /// Handed to a system that does not send notifications (no DSN).
    Relayed,
    /// Delivered to an alias or list and passed on to its members.
    Expanded,
}

impl Action {
    /// The field value: `failed`, `delayed`, `delivered`, `relayed`,
    /// `expanded`.
    pub fn as_str(self) -> &'static str {
        match self {
            Action::Failed => "failed",
            Action::Delayed => "delayed",
            Action::Delivered => "delivered",
            Action::Relayed => "relayed",
            Action::Expanded => "expanded",
        }
    }
}

/// A typed value as the report fields carry them, `type; value`: an
/// address type (`rfc822; bob@example.org`), an MTA-name type
/// (`dns; mx.example.net`) or a diagnostic type (`smtp; 550 5.1.1 …`).
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Typed {
    /// The type (an atom: `rfc822`, `utf-8`, `dns`, `smtp`, `X-Postern`).
    pub kind: String,
    /// The value after the `;`.
    pub value: String,
}

impl Typed {
    /// A typed value from its two parts.
    pub fn new(kind: impl Into<String>, value: impl Into<String>) -> Typed {
        Typed {
            kind: kind.into(),
            value: value.into(),
        }
    }

    /// `"type;value"` (an ORCPT parameter as received, after xtext
    /// decoding): split at the first `;`, white space around the parts
    /// dropped. `None` without a `;`.
    pub fn parse(s: &str) -> Option<Typed> {
        let (kind, value) = s.split_once(';')?;
        Some(Typed::new(kind.trim(), value.trim()))
    }
}

/// One recipient's line in the notification: who, what happened, why.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Recipient {
    /// The address delivery was tried for (Final-Recipient).
    pub address: String,
    /// The address before alias or virtual rewriting, when it differs
    /// (Postfix's "orig_addr"): shown as "(expanded from <…>)", and sent as
    /// Original-Recipient when there is no ORCPT.
    pub original: Option<String>,
    /// The ORCPT parameter given with RCPT TO (Original-Recipient).
    pub orcpt: Option<Typed>,
    /// What happened ([`Kind`] decides it for failures and delays).
    pub action: Action,
    /// The enhanced status code (its class is made to agree with the
    /// action).
    pub status: EnhancedCode,
    /// The reason in words, for the text part, and for Diagnostic-Code
    /// (as `X-Postern; reason`) when `diagnostic` is `None`.
    pub reason: String,
    /// The server that gave the answer (Remote-MTA, `dns; mx.example.net`).
    pub remote_mta: Option<Typed>,
    /// The remote answer as received (Diagnostic-Code, `smtp; 550 …`).
    pub diagnostic: Option<Typed>,
    /// When delivery was last tried (Last-Attempt-Date).
    pub last_attempt: Option<SystemTime>,
    /// Until when delivery will be tried (Will-Retry-Until; for a delay
    /// warning it defaults to arrival + `maximal_queue_lifetime`).
    pub will_retry_until: Option<SystemTime>,
}

impl Recipient {
    /// A recipient with the code and text of a delivery status, the other
    /// fields empty.
    pub fn new(address: impl Into<String>, action: Action, status: &DeliveryStatus) -> Recipient {
        Recipient {
            address: address.into(),
            original: None,
            orcpt: None,
            action,
            status: status.code(),
            reason: status.text().to_string(),
            remote_mta: None,
            diagnostic: None,
            last_attempt: None,
            will_retry_until: None,
        }
    }
}

/// Everything a notification says, apart from the original message itself.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Report {
    /// Bounce, delay warning or success report.
    pub kind: Kind,
    /// This host's name (`myhostname`): Reporting-MTA, From, the boundary.
    pub reporting_mta: String,
    /// `mail_name` ("Postern"): the `X-Postern-Queue-ID` field names and
    /// the `X-Postern` diagnostic type.
    pub mail_name: String,
    /// The original's queue ID.
    pub queue_id: String,
    /// When the original arrived (Arrival-Date; the delay warning's
    /// Will-Retry-Until is counted from it).
    pub arrival: SystemTime,
    /// Now: the Date header, the Message-Id.
    pub now: SystemTime,
    /// The original's envelope sender (To:, X-Postern-Sender, Return-Path).
    pub sender: String,
    /// The ENVID given with MAIL FROM (Original-Envelope-Id).
    pub envid: Option<String>,
    /// The RET given with MAIL FROM, if any.
    pub ret: Option<Ret>,
    /// The original came with SMTPUTF8: use the RFC 6533 global types even
    /// if no address is UTF-8.
    pub smtputf8: bool,
    /// The original's size in bytes, if known (for `bounce_size_limit`).
    pub original_size: Option<u64>,
    /// Postfix's `bounce_size_limit`: a message larger than this, or of
    /// unknown size, is returned as headers only, so that cutting it never
    /// breaks its MIME structure. `None`: no limit.
    pub bounce_size_limit: Option<u64>,
    /// `delay_warning_time`, for the delay warning's text.
    pub delay_warning_time: Duration,
    /// `maximal_queue_lifetime`, for the delay warning's text and
    /// Will-Retry-Until.
    pub maximal_queue_lifetime: Duration,
    /// `Some(address)`: this is the postmaster's copy (Postfix's
    /// notify_classes), sent to that address: "Postmaster Copy" subject,
    /// `Auto-Submitted: auto-generated`, no polite text, headers only.
    pub postmaster_copy: Option<String>,
    /// Add In-Reply-To and References with the original's Message-Id
    /// (Postfix's `enable_threaded_bounces`, default off).
    pub threaded: bool,
    /// The recipients to report, in order. At least one.
    pub recipients: Vec<Recipient>,
}

impl Report {
    /// A report with Postfix's defaults for the rest: mail_name "Postern",
    /// no ENVID or RET, 4h delay warning, 5d lifetime, no size limit, sent
    /// to the sender, not threaded, no recipients yet.
    pub fn new(
        kind: Kind,
        reporting_mta: impl Into<String>,
        queue_id: impl Into<String>,
        sender: impl Into<String>,
        arrival: SystemTime,
        now: SystemTime,
    ) -> Report {
        Report {
            kind,
            reporting_mta: reporting_mta.into(),
            mail_name: "Postern".into(),
            queue_id: queue_id.into(),
            arrival,
            now,
            sender: sender.into(),
            envid: None,
            ret: None,
            smtputf8: false,
            original_size: None,
            bounce_size_limit: None,
            delay_warning_time: Duration::from_secs(4 * 3600),
            maximal_queue_lifetime: Duration::from_secs(5 * 86400),
            postmaster_copy: None,
            threaded: false,
            recipients: Vec::new(),
        }
    }

    /// What of the original this notification returns, as Postfix decides
    /// (bounce_notify_service.c, bounce_warn_service.c,
    /// bounce_trace_service.c, bounce_original()): a bounce to the sender
    /// returns what RET asked for and the full message without RET; a delay
    /// warning, a success report and a postmaster copy return headers only;
    /// and a message over `bounce_size_limit` (or of unknown size when there
    /// is a limit) is returned as headers only.
    pub fn effective_ret(&self) -> Ret {
        let asked = match (self.kind, &self.postmaster_copy) {
            (Kind::Failure, None) => self.ret.unwrap_or(Ret::Full),
            _ => Ret::Headers,
        };
        match (asked, self.bounce_size_limit) {
            (Ret::Full, Some(limit)) if self.original_size.is_none_or(|s| s > limit) => {
                Ret::Headers
            }
            _ => asked,
        }
    }

    /// The Subject: Postfix's default template subjects.
    pub fn subject(&self) -> &'static str {
        match (self.kind, self.postmaster_copy.is_some()) {
            (Kind::Failure, false) => "Undelivered Mail Returned to Sender",
            (Kind::Failure, true) => "Postmaster Copy: Undelivered Mail",
            (Kind::Delay, false) => "Delayed Mail (still being retried)",
            (Kind::Delay, true) => "Postmaster Warning: Delayed Mail",
            (Kind::Success, _) => "Successful Mail Delivery Report",
        }
    }

    /// A new MIME boundary: as Postfix's `queueid.time/host`, with 96
    /// random bits after the time, at most 70 characters (RFC 2046).
    ///
    /// Why it cannot collide with the original, which is copied unchanged:
    /// the random part comes from [`RandomState`], SipHash keyed from the
    /// operating system's random source, over the queue ID, the time and a
    /// counter, and is made after the original was received, so a sender
    /// would have to guess 96 bits to put the boundary in a line of it.
    /// The texts this crate writes cannot start a line with `--`.
    pub fn boundary(&self) -> String {
        let secs = unix_secs(self.now);
        let r = random_hex(&self.queue_id, secs);
        let mut b = format!(
            "{}.{secs}.{r}/{}",
            text::token(&self.queue_id, 16),
            text::token(&self.reporting_mta, 70)
        );
        b.truncate(70);
        b
    }
}

fn unix_secs(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH).unwrap_or_default().as_secs()
}

/// 24 hex digits (96 bits) from two randomly keyed SipHash states.
fn random_hex(seed: &str, secs: u64) -> String {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    let a = RandomState::new().hash_one((seed, secs, n));
    let b = RandomState::new().hash_one((n, secs, seed));
    format!("{a:016x}{:08x}", b as u32)
}

/// The buffered output, written a line at a time (LF endings).
struct Out<W: Write> {
    w: BufWriter<W>,
}

impl<W: Write> Out<W> {
    fn line(&mut self, s: &str) -> io::Result<()> {
        self.w.write_all(s.as_bytes())?;
        self.w.write_all(b"\n")
    }

    /// A header or report field `Name: value`, cleaned and folded.
    fn field(&mut self, name: &str, value: &str) -> io::Result<()> {
        self.folded(&format!("{name}: {}", clean(value)))
    }

    /// A line that holds supplied text (already cleaned), folded.
    fn folded(&mut self, line: &str) -> io::Result<()> {
        for l in fold(line) {
            self.line(&l)?;
        }
        Ok(())
    }
}

/// The per-recipient values, checked against the kind.
fn action_and_status(kind: Kind, r: &Recipient) -> (Action, EnhancedCode) {
    let EnhancedCode(_, s, d) = r.status;
    let (s, d) = (s.min(999), d.min(999));
    match kind {
        Kind::Failure => (Action::Failed, EnhancedCode(5, s, d)),
        Kind::Delay => (Action::Delayed, EnhancedCode(4, s, d)),
        Kind::Success => {
            let action = match r.action {
                a @ (Action::Delivered | Action::Relayed | Action::Expanded) => a,
                _ => Action::Delivered,
            };
            (action, EnhancedCode(2, s, d))
        }
    }
}

/// Writes the whole notification for `report` to `out`, reading the
/// original message from `original` (give [`io::empty`] when it cannot be
/// read: the part then says "Undelivered message unavailable", as Postfix
/// does). At most the first 256 KiB of the original's header block are
/// held in memory; the rest is streamed.
///
/// An error is an error of the input or the output, or a report without
/// recipients (`InvalidInput`: Postfix cancels such a notice).
pub fn compose<R: Read, W: Write>(report: &Report, original: R, out: W) -> io::Result<()> {
    if report.recipients.is_empty() {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "a delivery status notification needs at least one recipient",
        ));
    }
    let original = Original::open(BufReader::with_capacity(64 * 1024, original))?;
    let mut out = Out {
        w: BufWriter::with_capacity(16 * 1024, out),
    };

    let ret = report.effective_ret();
    let addresses_utf8 = text::is_non_ascii(&report.sender)
        || report
            .postmaster_copy
            .as_deref()
            .is_some_and(text::is_non_ascii)
        || report.recipients.iter().any(|r| {
            text::is_non_ascii(&r.address)
                || r.original.as_deref().is_some_and(text::is_non_ascii)
                || r.orcpt
                    .as_ref()
                    .is_some_and(|o| text::is_non_ascii(&o.value))
        });
    let global = report.smtputf8 || addresses_utf8 || original.head_is_utf8();
    // The report fields: UTF-8 allowed only in the global type.
    let ds = |s: &str| if global { clean(s) } else { clean_ascii(s) };
    let addr_type = |a: &str| {
        if global && text::is_non_ascii(a) {
            "utf-8"
        } else {
            "rfc822"
        }
    };

    let host = clean(&report.reporting_mta);
    let host_domain = text::domain(&host);
    let mail_name = text::atom(&report.mail_name, "Postern");
    let boundary = report.boundary();
    let undelivered = matches!(report.kind, Kind::Failure | Kind::Delay);

    // The message header.
    out.line(&format!(
        "From: MAILER-DAEMON@{host_domain} (Mail Delivery System)"
    ))?;
    let to = report.postmaster_copy.as_deref().unwrap_or(&report.sender);
    out.folded(&format!("To: <{}>", text::header_address(to)))?;
    out.line(&format!("Subject: {}", report.subject()))?;
    out.line(&format!("Date: {}", postern_mailtime::rfc5322(report.now)))?;
    out.folded(&format!(
        "Message-Id: <{}.{}.{}@{host_domain}>",
        postern_mailtime::compact(report.now),
        text::token(&report.queue_id, 64),
        &random_hex(&report.queue_id, unix_secs(report.now))[..16],
    ))?;
    if report.threaded
        && let Some(id) = original.message_id()
    {
        out.line(&format!("In-Reply-To: {id}"))?;
        out.line(&format!("References: {id}"))?;
    }
    out.line(&format!(
        "Auto-Submitted: {}",
        if report.postmaster_copy.is_some() {
            "auto-generated"
        } else {
            "auto-replied"
        }
    ))?;
    out.line("MIME-Version: 1.0")?;
    out.line("Content-Type: multipart/report; report-type=delivery-status;")?;
    out.line(&format!("\tboundary=\"{boundary}\""))?;
    out.line("Content-Transfer-Encoding: 8bit")?;
    out.line("")?;
    out.line("This is a MIME-encapsulated message.")?;
    out.line("")?;

    // Part 1: for people.
    out.line(&format!("--{boundary}"))?;
    out.line("Content-Description: Notification")?;
    out.line("Content-Type: text/plain; charset=utf-8")?;
    out.line("Content-Transfer-Encoding: 8bit")?;
    out.line("")?;
    if report.postmaster_copy.is_none() {
        write_boilerplate(&mut out, report, &host)?;
    }
    for r in &report.recipients {
        out.line("")?;
        let addr = clean(&r.address);
        let line = match r.original.as_deref().map(clean) {
            Some(o) if !o.is_empty() && !o.eq_ignore_ascii_case(&addr) => {
                format!("<{addr}> (expanded from <{o}>): {}", clean(&r.reason))
            }
            _ => format!("<{addr}>: {}", clean(&r.reason)),
        };
        out.folded(&line)?;
    }
    out.line("")?;

    // Part 2: for programs.
    out.line(&format!("--{boundary}"))?;
    out.line("Content-Description: Delivery report")?;
    if global {
        out.line("Content-Type: message/global-delivery-status")?;
        out.line("Content-Transfer-Encoding: 8bit")?;
    } else {
        out.line("Content-Type: message/delivery-status")?;
    }
    out.line("")?;
    out.field("Reporting-MTA", &format!("dns; {}", ds(&host)))?;
    if let Some(envid) = report.envid.as_deref().filter(|e| !e.is_empty()) {
        out.field("Original-Envelope-Id", &ds(envid))?;
    }
    out.field(&format!("X-{mail_name}-Queue-ID"), &ds(&report.queue_id))?;
    let sender = if report.sender.is_empty() {
        "MAILER-DAEMON"
    } else {
        &report.sender
    };
    out.field(
        &format!("X-{mail_name}-Sender"),
        &format!("{}; {}", addr_type(sender), ds(sender)),
    )?;
    out.field("Arrival-Date", &postern_mailtime::rfc5322(report.arrival))?;
    for r in &report.recipients {
        let (action, status) = action_and_status(report.kind, r);
        out.line("")?;
        out.field(
            "Final-Recipient",
            &format!("{}; {}", addr_type(&r.address), ds(&r.address)),
        )?;
        if let Some(o) = &r.orcpt {
            out.field(
                "Original-Recipient",
                &format!("{}; {}", text::atom(&o.kind, "rfc822"), ds(&o.value)),
            )?;
        } else if let Some(o) = r.original.as_deref().filter(|o| !o.is_empty()) {
            out.field(
                "Original-Recipient",
                &format!("{}; {}", addr_type(o), ds(o)),
            )?;
        }
        out.field("Action", action.as_str())?;
        out.field("Status", &status.to_string())?;
        if let Some(m) = r.remote_mta.as_ref().filter(|m| !m.value.is_empty()) {
            out.field(
                "Remote-MTA",
                &format!("{}; {}", text::atom(&m.kind, "dns"), ds(&m.value)),
            )?;
        }
        match r.diagnostic.as_ref().filter(|d| !d.value.is_empty()) {
            Some(d) => out.field(
                "Diagnostic-Code",
                &format!("{}; {}", text::atom(&d.kind, "smtp"), ds(&d.value)),
            )?,
            None => out.field(
                "Diagnostic-Code",
                &format!("X-{mail_name}; {}", ds(&r.reason)),
            )?,
        }
        if let Some(t) = r.last_attempt {
            out.field("Last-Attempt-Date", &postern_mailtime::rfc5322(t))?;
        }
        let until = r.will_retry_until.or_else(|| {
            (report.kind == Kind::Delay).then(|| report.arrival + report.maximal_queue_lifetime)
        });
        if let Some(t) = until {
            out.field("Will-Retry-Until", &postern_mailtime::rfc5322(t))?;
        }
    }
    out.line("")?;

    // Part 3: the original.
    out.line(&format!("--{boundary}"))?;
    out.line(&format!(
        "Content-Description: {}{}",
        if undelivered { "Undelivered " } else { "" },
        match ret {
            Ret::Full => "Message",
            Ret::Headers => "Message Headers",
        }
    ))?;
    out.line(&format!(
        "Content-Type: {}",
        match (global, ret) {
            (false, Ret::Full) => "message/rfc822",
            (false, Ret::Headers) => "text/rfc822-headers",
            (true, Ret::Full) => "message/global",
            (true, Ret::Headers) => "message/global-headers",
        }
    ))?;
    out.line("Content-Transfer-Encoding: 8bit")?;
    out.line("")?;
    if original.empty {
        out.line("\t--- Undelivered message unavailable ---")?;
    } else {
        out.folded(&format!("Return-Path: <{}>", clean(&report.sender)))?;
        original.copy_to(&mut out.w, ret == Ret::Full)?;
    }
    out.line("")?;
    out.line(&format!("--{boundary}--"))?;
    out.w.flush()
}

/// Postfix's default template text for the kind (bounce_templates.c).
fn write_boilerplate<W: Write>(out: &mut Out<W>, report: &Report, host: &str) -> io::Result<()> {
    out.folded(&format!("This is the mail system at host {host}."))?;
    out.line("")?;
    match report.kind {
        Kind::Failure => {
            out.line("I'm sorry to have to inform you that your message could not")?;
            out.line("be delivered to one or more recipients. It's attached below.")?;
        }
        Kind::Delay => {
            let hashes = "#".repeat(68);
            out.line(&hashes)?;
            out.line("# THIS IS A WARNING ONLY.  YOU DO NOT NEED TO RESEND YOUR MESSAGE. #")?;
            out.line(&hashes)?;
            out.line("")?;
            out.line(&format!(
                "Your message could not be delivered for more than {} hour(s).",
                report.delay_warning_time.as_secs() / 3600
            ))?;
            out.line(&format!(
                "It will be retried until it is {} day(s) old.",
                report.maximal_queue_lifetime.as_secs() / 86400
            ))?;
        }
        Kind::Success => {
            out.line("Your message was successfully delivered to the destination(s)")?;
            out.line("listed below. If the message was delivered to mailbox you will")?;
            out.line("receive no further notifications. Otherwise you may still receive")?;
            out.line("notifications of mail delivery errors from other systems.")?;
        }
    }
    if report.kind != Kind::Success {
        out.line("")?;
        out.line("For further assistance, please send mail to postmaster.")?;
        out.line("")?;
        out.line("If you do so, please include this problem report. You can")?;
        out.line("delete your own text from the attached returned message.")?;
    }
    out.line("")?;
    out.line("                   The mail system")?;
    Ok(())
}

#[cfg(test)]
mod tests;
