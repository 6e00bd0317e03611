//! The client side of SMTP (RFC 5321) and LMTP (RFC 2033) without I/O, for
//! the outbound delivery agent (Postfix's smtp(8)/lmtp(8)): the driver owns
//! the socket and TLS, feeds what the server sends into a [`ReplyParser`]
//! and writes the bytes these types hand it.
//!
//! Modules:
//! - [`reply`](mod@reply): the server's replies, read incrementally with limits;
//! - [`caps`]: the EHLO/LHLO extensions;
//! - [`encode`]: the commands on the wire (and AUTH PLAIN/LOGIN);
//! - [`session`]: stages and their timeouts, the greeting, EHLO→HELO and
//!   STARTTLS decisions;
//! - [`transaction`]: the mail transaction planner (MAIL, RCPT, DATA/BDAT,
//!   pipelining, per-recipient results);
//! - [`stuff`]: streaming dot-stuffing and CRLF normalization of content.
//!
//! A session, step by step (each read with `stage.timeout_parameter()`):
//! 1. connect; read the greeting; [`greeting_verdict`];
//! 2. send [`encode::ehlo`] (LMTP: [`encode::lhlo`]); [`helo_verdict`]
//!    gives the [`Capabilities`], or says to send HELO, or to try the next
//!    host;
//! 3. optionally STARTTLS ([`starttls_verdict`], then
//!    [`ReplyParser::clear`] and EHLO again) and AUTH ([`AuthClient`]);
//! 4. [`Transaction::new`] and its [`Transaction::next_action`] loop;
//! 5. [`Outcome::Completed`]: QUIT, or RSET and another transaction;
//!    [`Outcome::TryNextHost`]: close, and take the deferred recipients to
//!    the next MX host.

pub mod caps;
pub mod encode;
pub mod reply;
pub mod session;
pub mod stuff;
pub mod transaction;

pub use caps::Capabilities;
pub use encode::{AuthClient, AuthStep, EncodeError, xtext_encode};
pub use reply::{MAX_REPLY_LINE, MAX_REPLY_LINES, ReplyError, ReplyParser, ServerReply};
pub use session::{
    GreetingVerdict, HeloVerdict, Stage, StartTlsVerdict, greeting_verdict, helo_verdict,
    starttls_verdict,
};
pub use stuff::{CrlfNormalizer, DotStuffer};
pub use transaction::{
    Action, Disposition, Envelope, NextHostReason, Outcome, Protocol, RcptResult, RcptState,
    Recipient, Transaction, TransactionOptions, UsageError,
};

#[cfg(test)]
mod tests;
