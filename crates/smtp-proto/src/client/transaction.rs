//! One mail transaction as the client plays it: what cannot be sent at
//! all, the MAIL/RCPT/DATA (or BDAT) commands, pipelined when the server
//! allows (RFC 2920), and a result per recipient from the replies, with
//! the rules of Postfix's smtp(8) and lmtp(8).
//!
//! The [`Transaction`] is a state machine without I/O. The driver loops on
//! [`Transaction::next_action`]:
//!
//! - [`Action::Send`]: write the bytes;
//! - [`Action::Read`]: read one reply (with [`Stage::timeout_parameter`]'s
//!   timeout) and give it to [`Transaction::on_reply`];
//! - [`Action::SendContent`]: DATA was accepted (354): stream the message
//!   through a [`super::DotStuffer`], write its end (`.`), then call
//!   [`Transaction::content_sent`];
//! - [`Action::SendChunk`]: BDAT: for each chunk call
//!   [`Transaction::bdat_command`] and write the command and then exactly
//!   that many octets (from a [`super::CrlfNormalizer`]), the last one with
//!   `last = true`;
//! - [`Action::Done`]: every recipient has its result
//!   ([`Transaction::take_results`] hands them over as they become final).
//!
//! A read or write error, a timeout or a [`super::ReplyError`] is the
//! driver's to see: it calls [`Transaction::abort`], which defers every
//! recipient without a result.
//!
//! Rules (RFC 5321, RFC 2920, RFC 3030, RFC 2033, and Postfix's choices):
//! - decided before anything is sent: a message larger than the server's
//!   non-zero SIZE bounces every recipient (5.3.4, "message size N exceeds
//!   size limit M of server X"); a message that needs SMTPUTF8 (the flag, or
//!   a non-ASCII address) at a server that does not offer it bounces every
//!   recipient (5.6.7, RFC 6531 section 3.2); an address that cannot be
//!   encoded (CR/LF inside) bounces that recipient, or all for the sender;
//! - with PIPELINING, MAIL, every RCPT and DATA go in one write (with BDAT:
//!   MAIL and every RCPT, then the chunks); without it, one command per reply;
//! - RCPT 2xx: accepted, pending the end of data; 4xx: that recipient
//!   deferred; 5xx: bounced. MAIL 4xx/5xx: every recipient deferred/bounced
//!   (the replies to the pipelined RCPTs and DATA are read and ignored);
//! - no recipient accepted: DATA is not sent, or its pipelined reply (554 or
//!   503) is read and ignored; a server that answers 354 anyway gets an
//!   empty message's `.` and its reply is ignored;
//! - the reply to DATA, to a BDAT or to the end of data decides for every
//!   accepted recipient (2xx sent, 4xx deferred, 5xx bounced); in LMTP the
//!   end of data brings one reply per accepted recipient, in RCPT order;
//! - 421 at any point: every recipient without a result is deferred and
//!   the outcome is [`Outcome::TryNextHost`]; so is a reply of a class that
//!   makes no sense there (the conversation is out of step: 4.5.0);
//! - every result keeps the server's reply (code, enhanced code or Postfix's
//!   x.0.0, the whole text on one line) and the [`Stage`] it answered, for
//!   "(in reply to RCPT TO command)".

use std::collections::VecDeque;
use std::fmt;

use postern_status::{DeliveryStatus, StatusClass};

use super::caps::Capabilities;
use super::encode::{self, EncodeError};
use super::reply::ServerReply;
use super::session::Stage;
use crate::address::{Mailbox, ReversePath};
use crate::params::{Notify, Orcpt, Ret};
use crate::reply::EnhancedCode;

/// One recipient of the transaction with its DSN parameters (sent only if
/// the server offers DSN).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Recipient {
    /// The address for RCPT TO.
    pub address: Mailbox,
    /// NOTIFY=, as the sender asked.
    pub notify: Option<Notify>,
    /// ORCPT= (`rfc822;` + the original address), xtext-encoded on the wire.
    pub orcpt: Option<Orcpt>,
}

impl Recipient {
    /// A recipient without DSN parameters.
    pub fn new(address: Mailbox) -> Recipient {
        Recipient {
            address,
            notify: None,
            orcpt: None,
        }
    }
}

/// The envelope and the facts about the content the transaction needs.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Envelope {
    /// MAIL FROM.
    pub sender: ReversePath,
    /// RCPT TO, in order; results are indexed the same way.
    pub recipients: Vec<Recipient>,
    /// RET= (with DSN).
    pub ret: Option<Ret>,
    /// ENVID= (with DSN), not yet xtext-encoded.
    pub envid: Option<String>,
    /// The message size in octets as sent (CRLF line ends), for SIZE=.
    pub size: u64,
    /// The content has 8-bit octets (BODY=8BITMIME when offered; sent as
    /// it is otherwise, as Postfix does without MIME conversion).
    pub eight_bit: bool,
    /// The message needs SMTPUTF8 (RFC 6531: the sender asked for it and
    /// the headers hold UTF-8); non-ASCII addresses need it anyway.
    pub smtputf8: bool,
}

/// SMTP or LMTP.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum Protocol {
    /// RFC 5321: one reply after the end of data.
    #[default]
    Smtp,
    /// RFC 2033: one reply per accepted recipient after the end of data.
    Lmtp,
}

/// How the client may use what the server offers.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TransactionOptions {
    /// SMTP or LMTP.
    pub protocol: Protocol,
    /// The server as logs name it, `mx.example[192.0.2.1]`, for the texts
    /// of results decided here.
    pub server: String,
    /// Pipeline when the server offers PIPELINING (Postfix:
    /// smtp_pipelining, hard-wired on).
    pub pipelining: bool,
    /// Use BDAT when the server offers CHUNKING.
    pub chunking: bool,
}

impl Default for TransactionOptions {
    fn default() -> Self {
        TransactionOptions {
            protocol: Protocol::Smtp,
            server: String::new(),
            pipelining: true,
            chunking: true,
        }
    }
}

/// What became of a recipient.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Disposition {
    /// The server took responsibility (2xx to the end of data).
    Sent,
    /// Try again later (4xx, 421, a broken connection).
    Deferred,
    /// Permanent failure: bounce (5xx, or refused before sending).
    Bounced,
}

/// The final result for one recipient.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RcptResult {
    /// Sent, deferred or bounced.
    pub disposition: Disposition,
    /// The server's reply code; `None` when decided here (SIZE, SMTPUTF8,
    /// an address that cannot be sent, a broken connection).
    pub code: Option<u16>,
    /// The server's enhanced code, or x.0.0 from its reply code when it
    /// sent none (Postfix), or ours when decided here.
    pub enhanced: EnhancedCode,
    /// The server's whole reply on one line ([`ServerReply::full_text`]),
    /// or our explanation.
    pub text: String,
    /// The command the reply answered (`None` when decided here before
    /// anything was sent).
    pub stage: Option<Stage>,
}

impl RcptResult {
    /// True when the text is the server's reply (Postfix: "host X said:").
    pub fn from_server(&self) -> bool {
        self.code.is_some()
    }

    /// The text for logs and bounces: the reply, then Postfix's
    /// "(in reply to ... command)" when it came from the server.
    pub fn diagnostic(&self) -> String {
        match (self.code, self.stage) {
            (Some(_), Some(stage)) => format!("{} {}", self.text, stage.in_reply_to()),
            _ => self.text.clone(),
        }
    }

    /// The system's one status type for qmgr and bounces.
    pub fn status(&self) -> DeliveryStatus {
        let class = match self.disposition {
            Disposition::Sent => StatusClass::Success,
            Disposition::Deferred => StatusClass::Temporary,
            Disposition::Bounced => StatusClass::Permanent,
        };
        let EnhancedCode(_, subject, detail) = self.enhanced;
        let text = self.diagnostic();
        // The class follows the disposition; the constructors clamp.
        match class {
            StatusClass::Success => DeliveryStatus::success(subject, detail, text),
            StatusClass::Temporary => DeliveryStatus::temporary(subject, detail, text),
            StatusClass::Permanent => DeliveryStatus::permanent(subject, detail, text),
        }
    }
}

/// Where a recipient stands during the transaction.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RcptState {
    /// No answer yet.
    Pending,
    /// RCPT got 2xx; waiting for the end of data.
    Accepted,
    /// Done.
    Final(RcptResult),
}

/// Why the rest must be tried at another host.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum NextHostReason {
    /// The server said 421 (service not available, closing).
    ServiceClosing,
    /// A reply that makes no sense at that point: out of step.
    ProtocolError,
    /// The driver called [`Transaction::abort`] (lost connection, timeout,
    /// unreadable reply).
    Aborted,
}

/// How the transaction ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// Every recipient has a result and the conversation is in step: QUIT,
    /// or reuse the connection (RSET first when `needs_rset`: the transaction
    /// did not end with the end-of-data reply).
    Completed {
        /// Send RSET before another MAIL on this connection.
        needs_rset: bool,
    },
    /// Stop using this connection (QUIT, close) and try the recipients that
    /// were deferred at the next host.
    TryNextHost(NextHostReason),
}

/// What the driver must do next; see the module documentation.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Action {
    /// Write these bytes to the server.
    Send(Vec<u8>),
    /// Read one reply and pass it to [`Transaction::on_reply`].
    Read(Stage),
    /// Stream the dot-stuffed content and its `.` line, then call
    /// [`Transaction::content_sent`].
    SendContent,
    /// Send the next BDAT chunk ([`Transaction::bdat_command`]).
    SendChunk,
    /// The transaction is over.
    Done(Outcome),
}

/// A call that does not fit the transaction's state (a driver bug).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum UsageError {
    /// A reply arrived when none was expected.
    NoReplyExpected,
    /// [`Transaction::content_sent`] without [`Action::SendContent`].
    NotInData,
    /// [`Transaction::bdat_command`] without [`Action::SendChunk`].
    NotInChunks,
}

impl fmt::Display for UsageError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            UsageError::NoReplyExpected => "SMTP client: reply when none was expected",
            UsageError::NotInData => "SMTP client: content sent outside DATA",
            UsageError::NotInChunks => "SMTP client: BDAT outside the chunking phase",
        })
    }
}

impl std::error::Error for UsageError {}

/// A reply the transaction waits for, in order.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Expect {
    Mail,
    Rcpt(usize),
    Data,
    /// The reply to the `.` sent after an unwanted 354: ignored.
    EmptyDot,
    /// End of data: SMTP's one reply, or LMTP's one for this recipient.
    DataDone(Option<usize>),
    Bdat,
    BdatLast(Option<usize>),
}

impl Expect {
    fn stage(self) -> Stage {
        match self {
            Expect::Mail => Stage::Mail,
            Expect::Rcpt(_) => Stage::Rcpt,
            Expect::Data => Stage::Data,
            Expect::EmptyDot | Expect::DataDone(_) => Stage::DataDone,
            Expect::Bdat => Stage::Bdat,
            Expect::BdatLast(_) => Stage::BdatLast,
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Phase {
    /// MAIL and RCPT (and a pipelined DATA) under way.
    Envelope,
    /// 354 received; the driver streams the content.
    Content,
    /// Between BDAT chunks.
    Chunks,
    /// The end of data (or BDAT LAST) sent; final replies under way.
    Final,
    /// Over.
    Done,
}

/// The client side of one mail transaction; see the module documentation.
#[derive(Clone, Debug)]
pub struct Transaction {
    caps: Capabilities,
    opts: TransactionOptions,
    env: Envelope,
    rcpts: Vec<RcptState>,
    /// Which results [`Transaction::take_results`] already handed over.
    reported: Vec<bool>,
    out: Vec<u8>,
    expect: VecDeque<Expect>,
    phase: Phase,
    pipelining: bool,
    chunking: bool,
    /// MAIL's reply: `None` before it.
    mail_ok: Option<bool>,
    /// Next recipient index to send RCPT for (without pipelining).
    next_rcpt: usize,
    /// DATA has been sent.
    data_sent: bool,
    outcome: Option<Outcome>,
}

impl Transaction {
    /// Plans the transaction for a server with `caps` (from its EHLO or
    /// LHLO reply; [`Capabilities::default`] after HELO). What cannot be
    /// sent is decided here; the commands are ready for the first
    /// [`Transaction::next_action`].
    pub fn new(caps: Capabilities, env: Envelope, opts: TransactionOptions) -> Transaction {
        let n = env.recipients.len();
        let pipelining = caps.pipelining && opts.pipelining;
        let chunking = caps.chunking && opts.chunking;
        let mut t = Transaction {
            caps,
            opts,
            env,
            rcpts: vec![RcptState::Pending; n],
            reported: vec![false; n],
            out: Vec::new(),
            expect: VecDeque::new(),
            phase: Phase::Envelope,
            pipelining,
            chunking,
            mail_ok: None,
            next_rcpt: 0,
            data_sent: false,
            outcome: None,
        };
        t.plan();
        t
    }

    fn plan(&mut self) {
        let server = self.opts.server.clone();
        if encode::needs_smtputf8(&self.env) && !self.caps.smtputf8 {
            self.fail_all_local(
                EnhancedCode(5, 6, 7),
                format!("SMTPUTF8 is required, but was not offered by host {server}"),
            );
        }
        if let Some(limit) = self.caps.size
            && limit > 0
            && self.env.size > limit
        {
            let size = self.env.size;
            self.fail_all_local(
                EnhancedCode(5, 3, 4),
                format!("message size {size} exceeds size limit {limit} of server {server}"),
            );
        }
        let mut mail = Vec::new();
        if let Err(e) = encode::mail_from(&self.env, &self.caps, &mut mail) {
            self.fail_all_local(
                EnhancedCode(5, 1, 7),
                format!("invalid sender address: {e}"),
            );
        }
        for i in 0..self.rcpts.len() {
            if self.rcpts[i] == RcptState::Pending
                && let Err(e) = self.rcpt_line(i)
            {
                self.set_final(
                    i,
                    RcptResult {
                        disposition: Disposition::Bounced,
                        code: None,
                        enhanced: EnhancedCode(5, 1, 3),
                        text: format!("invalid recipient address: {e}"),
                        stage: None,
                    },
                );
            }
        }
        if !self.rcpts.contains(&RcptState::Pending) {
            self.finish(false);
            return;
        }
        self.out.extend_from_slice(&mail);
        self.expect.push_back(Expect::Mail);
        if self.pipelining {
            for i in 0..self.rcpts.len() {
                if self.rcpts[i] == RcptState::Pending
                    && let Ok(line) = self.rcpt_line(i)
                {
                    self.out.extend_from_slice(&line);
                    self.expect.push_back(Expect::Rcpt(i));
                }
            }
            self.next_rcpt = self.rcpts.len();
            if !self.chunking {
                encode::data(&mut self.out);
                self.data_sent = true;
                self.expect.push_back(Expect::Data);
            }
        }
    }

    fn rcpt_line(&self, i: usize) -> Result<Vec<u8>, EncodeError> {
        let mut line = Vec::new();
        encode::rcpt_to(&self.env.recipients[i], &self.caps, &mut line)?;
        Ok(line)
    }

    /// What the driver must do now.
    pub fn next_action(&mut self) -> Action {
        if !self.out.is_empty() {
            return Action::Send(std::mem::take(&mut self.out));
        }
        if let Some(o) = self.outcome {
            return Action::Done(o);
        }
        if let Some(e) = self.expect.front() {
            return Action::Read(e.stage());
        }
        match self.phase {
            Phase::Content => Action::SendContent,
            Phase::Chunks => Action::SendChunk,
            // Unreachable by construction: every other phase either waits
            // for a reply or has ended; end it rather than loop.
            _ => {
                self.finish(true);
                Action::Done(
                    self.outcome
                        .unwrap_or(Outcome::Completed { needs_rset: true }),
                )
            }
        }
    }

    /// The stage whose timeout applies to the driver's next read or write.
    pub fn stage(&self) -> Stage {
        match (self.expect.front(), self.phase) {
            (Some(e), _) => e.stage(),
            (None, Phase::Content | Phase::Chunks) => Stage::DataContent,
            (None, Phase::Final) => Stage::DataDone,
            (None, _) => Stage::Mail,
        }
    }

    /// Takes the server's reply to the oldest command still unanswered.
    pub fn on_reply(&mut self, reply: &ServerReply) -> Result<(), UsageError> {
        let Some(e) = self.expect.pop_front() else {
            return Err(UsageError::NoReplyExpected);
        };
        let stage = e.stage();
        if reply.code == 421 {
            self.fail_unfinished(reply, stage);
            self.stop(NextHostReason::ServiceClosing);
            return Ok(());
        }
        match e {
            Expect::Mail => match reply.class() {
                2 => self.mail_ok = Some(true),
                4 | 5 => {
                    self.mail_ok = Some(false);
                    self.fail_unfinished(reply, stage);
                }
                _ => {
                    self.protocol_error(reply, stage);
                    return Ok(());
                }
            },
            Expect::Rcpt(i) => {
                if self.mail_ok == Some(true) {
                    match reply.class() {
                        2 => self.rcpts[i] = RcptState::Accepted,
                        4 | 5 => self.set_final(i, result_of(reply, stage)),
                        _ => {
                            self.protocol_error(reply, stage);
                            return Ok(());
                        }
                    }
                }
            }
            Expect::Data => {
                if self.accepted().next().is_none() {
                    // Nobody to send to: a 354 anyway gets an empty message.
                    if reply.code == 354 {
                        self.out.extend_from_slice(b".\r\n");
                        self.expect.push_back(Expect::EmptyDot);
                    }
                } else {
                    match reply.class() {
                        3 => self.phase = Phase::Content,
                        4 | 5 => self.settle_accepted(reply, stage),
                        _ => {
                            self.protocol_error(reply, stage);
                            return Ok(());
                        }
                    }
                }
            }
            Expect::EmptyDot => {}
            Expect::DataDone(who) | Expect::BdatLast(who) => match reply.class() {
                2 | 4 | 5 => match who {
                    Some(i) => self.set_final(i, result_of(reply, stage)),
                    None => self.settle_accepted(reply, stage),
                },
                _ => {
                    self.protocol_error(reply, stage);
                    return Ok(());
                }
            },
            Expect::Bdat => match reply.class() {
                2 => {}
                4 | 5 => {
                    self.settle_accepted(reply, stage);
                    self.expect.clear();
                    self.finish(true);
                }
                _ => {
                    self.protocol_error(reply, stage);
                    return Ok(());
                }
            },
        }
        self.advance();
        Ok(())
    }

    /// Moves on once every reply of the last group is in.
    fn advance(&mut self) {
        if self.outcome.is_some() || !self.expect.is_empty() {
            return;
        }
        match self.phase {
            Phase::Envelope => {
                if self.mail_ok != Some(true) {
                    return self.finish(true);
                }
                if !self.pipelining {
                    while self.next_rcpt < self.rcpts.len() {
                        let i = self.next_rcpt;
                        self.next_rcpt += 1;
                        if self.rcpts[i] == RcptState::Pending
                            && let Ok(line) = self.rcpt_line(i)
                        {
                            self.out.extend_from_slice(&line);
                            self.expect.push_back(Expect::Rcpt(i));
                            return;
                        }
                    }
                }
                if self.data_sent || self.accepted().next().is_none() {
                    // DATA was answered but not with 354 (or nobody is left).
                    return self.finish(true);
                }
                if self.chunking {
                    self.phase = Phase::Chunks;
                } else {
                    encode::data(&mut self.out);
                    self.data_sent = true;
                    self.expect.push_back(Expect::Data);
                }
            }
            Phase::Final => self.finish(false),
            Phase::Content | Phase::Chunks | Phase::Done => {}
        }
    }

    /// The driver has written the whole dot-stuffed content and its `.`
    /// line; the final reply (or LMTP's replies) follows.
    pub fn content_sent(&mut self) -> Result<(), UsageError> {
        if self.phase != Phase::Content || self.outcome.is_some() {
            return Err(UsageError::NotInData);
        }
        self.phase = Phase::Final;
        self.expect_final(Expect::DataDone);
        Ok(())
    }

    /// The `BDAT size [LAST]` command for the next chunk: write it, then
    /// exactly `size` octets of content (no dot-stuffing), then follow
    /// [`Transaction::next_action`] (its reply is read before the next
    /// chunk, so a refusal stops the transfer, RFC 3030 section 3).
    pub fn bdat_command(&mut self, size: u64, last: bool) -> Result<Vec<u8>, UsageError> {
        if self.phase != Phase::Chunks || self.outcome.is_some() || !self.expect.is_empty() {
            return Err(UsageError::NotInChunks);
        }
        let mut cmd = Vec::new();
        encode::bdat(size, last, &mut cmd);
        if last {
            self.phase = Phase::Final;
            self.expect_final(Expect::BdatLast);
        } else {
            self.expect.push_back(Expect::Bdat);
        }
        Ok(cmd)
    }

    fn expect_final(&mut self, each: fn(Option<usize>) -> Expect) {
        match self.opts.protocol {
            Protocol::Smtp => self.expect.push_back(each(None)),
            Protocol::Lmtp => {
                let accepted: Vec<usize> = self.accepted().collect();
                for i in accepted {
                    self.expect.push_back(each(Some(i)));
                }
            }
        }
    }

    /// The connection broke, timed out or sent an unreadable reply: every
    /// recipient without a result is deferred (4.4.2) with `text` (Postfix:
    /// "lost connection with X while sending RCPT TO", see
    /// [`Stage::while_doing`]); the outcome is [`Outcome::TryNextHost`].
    pub fn abort(&mut self, text: impl Into<String>) {
        if self.outcome.is_some() {
            return;
        }
        let text = text.into();
        let stage = self.stage();
        for i in 0..self.rcpts.len() {
            if !matches!(self.rcpts[i], RcptState::Final(_)) {
                self.set_final(
                    i,
                    RcptResult {
                        disposition: Disposition::Deferred,
                        code: None,
                        enhanced: EnhancedCode(4, 4, 2),
                        text: text.clone(),
                        stage: Some(stage),
                    },
                );
            }
        }
        self.out.clear();
        self.stop(NextHostReason::Aborted);
    }

    /// Each recipient's state, in envelope order.
    pub fn recipients(&self) -> &[RcptState] {
        &self.rcpts
    }

    /// The results that became final since the last call, with their
    /// recipient's index (for logging each as it happens).
    pub fn take_results(&mut self) -> Vec<(usize, RcptResult)> {
        let mut v = Vec::new();
        for (i, s) in self.rcpts.iter().enumerate() {
            if let RcptState::Final(r) = s
                && !self.reported[i]
            {
                self.reported[i] = true;
                v.push((i, r.clone()));
            }
        }
        v
    }

    /// The outcome once the transaction is over.
    pub fn outcome(&self) -> Option<Outcome> {
        self.outcome
    }

    /// Whether the server has been asked to use BDAT for this message.
    pub fn uses_chunking(&self) -> bool {
        self.chunking
    }

    /// True when 8-bit content goes to a server that did not announce
    /// 8BITMIME: it is sent as it is (Postfix does so when it cannot or
    /// may not convert to 7 bits); the driver may log it or convert first.
    pub fn eight_bit_unannounced(&self) -> bool {
        self.env.eight_bit && !self.caps.eightbitmime
    }

    /// Whether commands are pipelined in this transaction.
    pub fn uses_pipelining(&self) -> bool {
        self.pipelining
    }

    fn accepted(&self) -> impl Iterator<Item = usize> + '_ {
        self.rcpts
            .iter()
            .enumerate()
            .filter(|(_, s)| **s == RcptState::Accepted)
            .map(|(i, _)| i)
    }

    fn set_final(&mut self, i: usize, r: RcptResult) {
        if let Some(s) = self.rcpts.get_mut(i)
            && !matches!(s, RcptState::Final(_))
        {
            *s = RcptState::Final(r);
        }
    }

    fn fail_all_local(&mut self, enhanced: EnhancedCode, text: String) {
        for i in 0..self.rcpts.len() {
            self.set_final(
                i,
                RcptResult {
                    disposition: Disposition::Bounced,
                    code: None,
                    enhanced,
                    text: text.clone(),
                    stage: None,
                },
            );
        }
    }

    /// Every recipient without a result gets this reply's.
    fn fail_unfinished(&mut self, reply: &ServerReply, stage: Stage) {
        let r = result_of(reply, stage);
        for i in 0..self.rcpts.len() {
            self.set_final(i, r.clone());
        }
    }

    /// Every accepted recipient gets this reply's result.
    fn settle_accepted(&mut self, reply: &ServerReply, stage: Stage) {
        let r = result_of(reply, stage);
        let accepted: Vec<usize> = self.accepted().collect();
        for i in accepted {
            self.set_final(i, r.clone());
        }
    }

    fn protocol_error(&mut self, reply: &ServerReply, stage: Stage) {
        let r = RcptResult {
            disposition: Disposition::Deferred,
            code: Some(reply.code),
            enhanced: EnhancedCode(4, 5, 0),
            text: reply.full_text(),
            stage: Some(stage),
        };
        for i in 0..self.rcpts.len() {
            self.set_final(i, r.clone());
        }
        self.stop(NextHostReason::ProtocolError);
    }

    fn stop(&mut self, why: NextHostReason) {
        self.expect.clear();
        self.phase = Phase::Done;
        self.outcome = Some(Outcome::TryNextHost(why));
    }

    fn finish(&mut self, needs_rset: bool) {
        // Nobody may be left without a result (defensive: by construction
        // this finds no one).
        for i in 0..self.rcpts.len() {
            if !matches!(self.rcpts[i], RcptState::Final(_)) {
                self.set_final(
                    i,
                    RcptResult {
                        disposition: Disposition::Deferred,
                        code: None,
                        enhanced: EnhancedCode(4, 3, 0),
                        text: "mail transaction ended without a result".into(),
                        stage: None,
                    },
                );
            }
        }
        self.expect.clear();
        self.phase = Phase::Done;
        self.outcome = Some(Outcome::Completed { needs_rset });
    }
}

/// A recipient's result from a 2xx/4xx/5xx reply (a 3xx never gets here).
fn result_of(reply: &ServerReply, stage: Stage) -> RcptResult {
    let disposition = match reply.class() {
        2 => Disposition::Sent,
        5 => Disposition::Bounced,
        _ => Disposition::Deferred,
    };
    RcptResult {
        disposition,
        code: Some(reply.code),
        enhanced: reply.enhanced_or_default(),
        text: reply.full_text(),
        stage: Some(stage),
    }
}
