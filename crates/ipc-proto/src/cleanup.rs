//! Talking to cleanup, the one door into the queue: smtpd, pickup, local
//! (forwarding) and qmgr (bounces) send [`CleanupRequest`]s, one message per
//! connection, and cleanup answers with [`CleanupReply`]s.

use crate::address::{
    get_mailbox, get_rcpt_dsn, get_sender, put_mailbox, put_rcpt_dsn, put_sender,
};
use crate::codec::{DecodeError, Decoder, Encoder, Message};
use crate::delivery::{get_status, put_status};
use crate::kinds::*;
use postern_smtp_proto::{Mailbox, Notify, Orcpt, ReversePath};
use postern_status::DeliveryStatus;

/// What a client of cleanup sends, in this order: `Open`, `Sender`,
/// `Recipient`+, `Content`*, `End`. Closing the connection before `End`
/// abandons the message (cleanup removes its temporary file).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum CleanupRequest {
    /// Starts a message. Attributes describe where it came from (client_name,
    /// client_address, client_port, helo_name, protocol, origin, ...); they go
    /// into the queue file and the Received header.
    Open {
        /// Name/value pairs about the message's origin.
        attributes: Vec<(String, String)>,
        /// [`cleanup_flags`] bits.
        flags: u32,
    },
    /// The envelope sender.
    Sender {
        /// A mailbox, or the null sender.
        address: ReversePath,
    },
    /// One envelope recipient, the address as originally received, and
    /// its DSN parameters.
    Recipient {
        /// Where to deliver.
        address: Mailbox,
        /// As the client gave it (for orig_to=; free text).
        original: String,
        /// RFC 3461 NOTIFY=, if given.
        notify: Option<Notify>,
        /// RFC 3461 ORCPT=, if given.
        orcpt: Option<Orcpt>,
    },
    /// A chunk of message content with LF line endings (header, blank line, body).
    Content {
        /// At most [`crate::CHUNK_SIZE`] bytes are expected.
        data: Vec<u8>,
    },
    /// All content sent: write the queue file durably and answer.
    End,
}

/// Flags for [`CleanupRequest::Open`].
pub mod cleanup_flags {
    /// Add Message-ID/Date/From headers when missing (mail from local programs;
    /// Postfix also does it for SMTP mail unless configured otherwise).
    pub const ADD_MISSING_HEADERS: u32 = 1;
    /// Do not add a Received header (re-injected or locally generated mail).
    pub const NO_RECEIVED: u32 = 2;
}

/// cleanup's answers.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum CleanupReply {
    /// Sent right after `Open`: the queue ID the message will have.
    Opened {
        /// The new message's queue ID.
        queue_id: String,
    },
    /// Sent after `End`: the queue file is written, fsync'd and in incoming/.
    Queued {
        /// The queue ID, as logged everywhere.
        queue_id: String,
    },
    /// The message was not queued: a temporary or permanent
    /// [`DeliveryStatus`] (its class decides 4xx versus 5xx) with the text
    /// for the client and the log. On the wire as
    /// [`crate::delivery::put_status`] writes it; a success class is refused.
    Rejected {
        /// Why, e.g. 5.3.4 "message file too big".
        status: DeliveryStatus,
    },
}

impl Message for CleanupRequest {
    fn encode(&self) -> Vec<u8> {
        match self {
            CleanupRequest::Open { attributes, flags } => {
                let mut e = Encoder::new(K_OPEN);
                e.u32(*flags).pairs(attributes);
                e.finish()
            }
            CleanupRequest::Sender { address } => {
                let mut e = Encoder::new(K_SENDER);
                put_sender(&mut e, address);
                e.finish()
            }
            CleanupRequest::Recipient {
                address,
                original,
                notify,
                orcpt,
            } => {
                let mut e = Encoder::new(K_RCPT);
                put_mailbox(&mut e, address);
                e.str(original);
                put_rcpt_dsn(&mut e, *notify, orcpt.as_ref());
                e.finish()
            }
            CleanupRequest::Content { data } => {
                let mut e = Encoder::new(K_CONTENT);
                e.bytes(data);
                e.finish()
            }
            CleanupRequest::End => Encoder::new(K_END).finish(),
        }
    }
    fn decode(kind: u8, d: &mut Decoder<'_>) -> Result<Self, DecodeError> {
        Ok(match kind {
            K_OPEN => {
                let flags = d.u32()?;
                CleanupRequest::Open {
                    flags,
                    attributes: d.pairs()?,
                }
            }
            K_SENDER => CleanupRequest::Sender {
                address: get_sender(d)?,
            },
            K_RCPT => {
                let address = get_mailbox(d)?;
                let original = d.str()?;
                let (notify, orcpt) = get_rcpt_dsn(d)?;
                CleanupRequest::Recipient {
                    address,
                    original,
                    notify,
                    orcpt,
                }
            }
            K_CONTENT => CleanupRequest::Content {
                data: d.bytes()?.to_vec(),
            },
            K_END => CleanupRequest::End,
            k => return Err(DecodeError::UnknownKind(k)),
        })
    }
}

impl Message for CleanupReply {
    fn encode(&self) -> Vec<u8> {
        match self {
            CleanupReply::Opened { queue_id } => {
                let mut e = Encoder::new(K_OPENED);
                e.str(queue_id);
                e.finish()
            }
            CleanupReply::Queued { queue_id } => {
                let mut e = Encoder::new(K_QUEUED);
                e.str(queue_id);
                e.finish()
            }
            CleanupReply::Rejected { status } => {
                let mut e = Encoder::new(K_REJECTED);
                put_status(&mut e, status);
                e.finish()
            }
        }
    }
    fn decode(kind: u8, d: &mut Decoder<'_>) -> Result<Self, DecodeError> {
        Ok(match kind {
            K_OPENED => CleanupReply::Opened { queue_id: d.str()? },
            K_QUEUED => CleanupReply::Queued { queue_id: d.str()? },
            K_REJECTED => {
                let status = get_status(d)?;
                if status.is_success() {
                    return Err(DecodeError::BadValue("a rejection with a success status"));
                }
                CleanupReply::Rejected { status }
            }
            k => return Err(DecodeError::UnknownKind(k)),
        })
    }
}
