//! The messages between Postern processes on Unix sockets, with descriptor
//! passing: the I/O half of the IPC. The messages themselves and their wire
//! form are pure code in postern-ipc-proto (re-exported here, so callers
//! name one crate); this crate adds the channels that carry them
//! ([`Channel`] for tokio code, [`BlockingChannel`] for blocking code), the
//! queue file as an open descriptor ([`Channel::send_with_fd`]), so agents
//! need no access to the queue directories, and the one-byte trigger
//! sockets.
#![deny(unsafe_code)] // one exception, with its SAFETY comment: channel.rs, descriptors received with SCM_RIGHTS

pub mod channel;
pub mod cleanup_client;

pub use channel::{BlockingChannel, Channel, IpcError, read_triggers, send_trigger};
pub use cleanup_client::{BlockingCleanupClient, CleanupClient, CleanupError};
pub use postern_ipc_proto::codec;
pub use postern_ipc_proto::{
    AuthReply, AuthRequest, CHUNK_SIZE, CleanupReply, CleanupRequest, DecodeError,
    DeliveryRecipient, DeliveryReply, DeliveryRequest, DeliveryStatus, EnhancedCode, FrameTooLarge,
    MAX_FRAME, Mailbox, Message, Notify, Orcpt, Ret, ReversePath, StatusClass, SubmitContent,
    SubmitRequest, SubmitSender, Trigger, VERSION, cleanup_flags,
};

/// Every message type under the path older code uses
/// (`postern_ipc::messages::AuthRequest`); new code names them from the
/// crate root or from postern-ipc-proto's conversation modules.
pub mod messages {
    pub use postern_ipc_proto::auth::*;
    pub use postern_ipc_proto::cleanup::*;
    pub use postern_ipc_proto::delivery::*;
    pub use postern_ipc_proto::submit::*;
    pub use postern_ipc_proto::trigger::*;
}
