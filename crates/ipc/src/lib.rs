//! Typed, length-framed, versioned messages between Postern processes, with
//! descriptor passing.
//!
//! Nothing crosses a process boundary as text for the receiver to interpret:
//! each conversation has its own message enum ([`messages`]), every frame
//! carries a version byte, and a decoder that does not use up the whole frame
//! fails ([`codec`]). Queue files travel to delivery agents as open
//! descriptors ([`Channel::send_with_fd`]), so agents need no access to the
//! queue directories.

pub mod channel;
pub mod codec;
pub mod messages;

pub use channel::{BlockingChannel, Channel, IpcError, read_triggers, send_trigger};
pub use codec::{CHUNK_SIZE, DecodeError, MAX_FRAME, Message, VERSION};
pub use messages::{
    CleanupReply, CleanupRequest, DeliveryOutcome, DeliveryRecipient, DeliveryReply,
    DeliveryRequest, Trigger, cleanup_flags,
};
