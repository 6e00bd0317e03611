//! The messages Postern's processes exchange and their wire form, as pure
//! code: no sockets, no tokio, no nix, no file system. postern-ipc puts
//! them on Unix sockets (with descriptor passing); the setgid postdrop reads
//! them from its standard input and links nothing else of the IPC code.
//!
//! Nothing crosses a process boundary as text for the receiver to interpret:
//! each conversation has its own message types in its own module, every
//! frame carries a version byte and a kind byte from one table
//! ([`kinds::KINDS`]), a decoder that does not use up the whole frame fails,
//! and frames over [`MAX_FRAME`] are refused on both sides ([`codec`]).
//!
//! Envelope addresses travel typed ([`address`]): [`ReversePath`] for
//! senders (the null sender is a variant, not a string), [`Mailbox`] for
//! recipients.
//!
//! Conversations (docs/ipc.md has the full picture):
//! - [`cleanup`]: smtpd, pickup, local (forwarding) and qmgr (bounces) →
//!   cleanup;
//! - [`delivery`]: qmgr → a delivery agent (local, later smtp);
//! - [`trigger`]: one-byte wake-ups for qmgr and pickup;
//! - [`submit`]: `sendmail` → `postdrop`;
//! - [`auth`]: smtpd (and later pop3d, imapd) → the auth service.
//!
//! Fuzzing: `fuzz/fuzz_targets/ipc_frames.rs` decodes arbitrary bytes as
//! every family and checks decode → encode → decode round trips.
#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod address;
pub mod auth;
pub mod cleanup;
pub mod codec;
pub mod delivery;
pub mod kinds;
pub mod submit;
pub mod trigger;

pub use auth::{AuthReply, AuthRequest};
pub use cleanup::{CleanupReply, CleanupRequest, cleanup_flags};
pub use codec::{CHUNK_SIZE, DecodeError, FrameTooLarge, MAX_FRAME, Message, VERSION};
pub use delivery::{DeliveryRecipient, DeliveryReply, DeliveryRequest};
pub use postern_smtp_proto::{Mailbox, Notify, Orcpt, Ret, ReversePath};
pub use postern_status::{DeliveryStatus, EnhancedCode, StatusClass};
pub use submit::{SubmitContent, SubmitRequest, SubmitSender};
pub use trigger::Trigger;

#[cfg(test)]
mod tests;
