//! The messages Postern's processes exchange, one enum per conversation.
//!
//! Who talks to whom (docs/ipc.md has the full picture):
//! - smtpd, pickup, local (forwarding) and qmgr (bounces) → cleanup:
//!   [`CleanupRequest`] in, [`CleanupReply`] out, one message per connection.
//! - qmgr → a delivery agent (local, later smtp): one [`DeliveryRequest`]
//!   carrying the open queue file as a descriptor, answered by one
//!   [`DeliveryReply::Status`] per recipient and a [`DeliveryReply::Finished`].
//! - cleanup and master → qmgr: a one-byte [`Trigger`].
//! - `sendmail` → `postdrop` (on postdrop's standard input, no socket):
//!   one [`SubmitRequest`], then [`SubmitContent`] frames ending in `End`.

use crate::codec::{DecodeError, Decoder, Encoder, Message};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// What a client of cleanup sends, in this order: `Open`, `Sender`,
/// `Recipient`+, `Content`*, `End`. Closing the connection before `End`
/// abandons the message (cleanup removes its temporary file).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum CleanupRequest {
    /// Starts a message. Attributes describe where it came from (client_name,
    /// client_address, client_port, helo_name, protocol, origin, ...); they go
    /// into the queue file and the Received header.
    Open {
        attributes: Vec<(String, String)>,
        flags: u32,
    },
    /// The envelope sender ("" = null sender).
    Sender { address: String },
    /// One envelope recipient, and the address as originally received.
    Recipient { address: String, original: String },
    /// A chunk of message content with LF line endings (header, blank line, body).
    Content { data: Vec<u8> },
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
    Opened { queue_id: String },
    /// Sent after `End`: the queue file is written, fsync'd and in incoming/.
    Queued { queue_id: String },
    /// The message was not queued. `temporary` decides 4xx versus 5xx.
    Rejected {
        temporary: bool,
        dsn: String,
        reason: String,
    },
}

const K_OPEN: u8 = 1;
const K_SENDER: u8 = 2;
const K_RCPT: u8 = 3;
const K_CONTENT: u8 = 4;
const K_END: u8 = 5;
const K_OPENED: u8 = 65;
const K_QUEUED: u8 = 66;
const K_REJECTED: u8 = 67;
const K_DELIVER: u8 = 10;
const K_STATUS: u8 = 74;
const K_FINISHED: u8 = 75;
const K_DELIVERED: u8 = 76;

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
                e.str(address);
                e.finish()
            }
            CleanupRequest::Recipient { address, original } => {
                let mut e = Encoder::new(K_RCPT);
                e.str(address).str(original);
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
            K_SENDER => CleanupRequest::Sender { address: d.str()? },
            K_RCPT => CleanupRequest::Recipient {
                address: d.str()?,
                original: d.str()?,
            },
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
            CleanupReply::Rejected {
                temporary,
                dsn,
                reason,
            } => {
                let mut e = Encoder::new(K_REJECTED);
                e.u8(u8::from(*temporary)).str(dsn).str(reason);
                e.finish()
            }
        }
    }
    fn decode(kind: u8, d: &mut Decoder<'_>) -> Result<Self, DecodeError> {
        Ok(match kind {
            K_OPENED => CleanupReply::Opened { queue_id: d.str()? },
            K_QUEUED => CleanupReply::Queued { queue_id: d.str()? },
            K_REJECTED => {
                let temporary = match d.u8()? {
                    0 => false,
                    1 => true,
                    _ => return Err(DecodeError::BadValue("boolean")),
                };
                CleanupReply::Rejected {
                    temporary,
                    dsn: d.str()?,
                    reason: d.str()?,
                }
            }
            k => return Err(DecodeError::UnknownKind(k)),
        })
    }
}

/// One recipient in a delivery request. `index` is its position in the queue
/// file, so the agent's status can be matched back to the record to mark done.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DeliveryRecipient {
    /// Position of the recipient in the queue file's envelope.
    pub index: u32,
    /// Address to deliver to.
    pub address: String,
    /// Address as originally received (for orig_to= and X-Original-To).
    pub original: String,
}

/// qmgr's request to a delivery agent. The queue file itself travels with the
/// frame as a descriptor (SCM_RIGHTS); the agent reads the content range from it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DeliveryRequest {
    /// Queue ID, for logging.
    pub queue_id: String,
    /// Envelope sender ("" = null sender).
    pub sender: String,
    /// When the message entered the queue (for delay= in logs).
    pub arrival: SystemTime,
    /// Where the content starts in the passed file.
    pub content_offset: u64,
    /// Content length in bytes.
    pub content_len: u64,
    /// The next-hop destination the transport was chosen for (a domain, or empty).
    pub nexthop: String,
    /// Recipients to deliver in this request.
    pub recipients: Vec<DeliveryRecipient>,
    /// Message attributes from the queue file (client info, ...).
    pub attributes: Vec<(String, String)>,
    /// Mailboxes (and files, commands, forwards) that earlier requests for
    /// this message already delivered to, as the agent reported them in
    /// [`DeliveryReply::Delivered`]: the agent skips them, so two recipients
    /// that resolve to one mailbox get one copy (Postfix's duplicate filter).
    pub delivered: Vec<String>,
}

/// The result class of one recipient's delivery.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DeliveryOutcome {
    /// Delivered: mark the recipient done.
    Sent,
    /// Temporary failure: try again later.
    Deferred,
    /// Permanent failure: return to sender, mark done.
    Bounced,
}

/// A delivery agent's answers.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum DeliveryReply {
    /// The outcome for one recipient of the request.
    Status {
        index: u32,
        outcome: DeliveryOutcome,
        dsn: String,
        text: String,
    },
    /// The destinations this message has now been delivered to (the
    /// request's `delivered` plus this request's successes), sent before
    /// [`DeliveryReply::Finished`] by agents that suppress duplicates, for
    /// qmgr to pass on to the next request for the same message.
    Delivered {
        /// Opaque destination keys ("mailbox:joe", "file:/path", ...).
        keys: Vec<String>,
    },
    /// Every recipient of the request has a status.
    Finished,
}

fn put_time(e: &mut Encoder, t: SystemTime) {
    let d = t.duration_since(UNIX_EPOCH).unwrap_or_default();
    e.u64(d.as_secs()).u32(d.subsec_micros());
}

fn get_time(d: &mut Decoder<'_>) -> Result<SystemTime, DecodeError> {
    let secs = d.u64()?;
    let micros = d.u32()?;
    if micros >= 1_000_000 {
        return Err(DecodeError::BadValue("microseconds"));
    }
    UNIX_EPOCH
        .checked_add(Duration::from_secs(secs) + Duration::from_micros(u64::from(micros)))
        .ok_or(DecodeError::BadValue("time"))
}

impl Message for DeliveryRequest {
    fn encode(&self) -> Vec<u8> {
        let mut e = Encoder::new(K_DELIVER);
        e.str(&self.queue_id).str(&self.sender);
        put_time(&mut e, self.arrival);
        e.u64(self.content_offset)
            .u64(self.content_len)
            .str(&self.nexthop);
        e.u32(self.recipients.len() as u32);
        for r in &self.recipients {
            e.u32(r.index).str(&r.address).str(&r.original);
        }
        e.pairs(&self.attributes);
        put_strs(&mut e, &self.delivered);
        e.finish()
    }
    fn decode(kind: u8, d: &mut Decoder<'_>) -> Result<Self, DecodeError> {
        if kind != K_DELIVER {
            return Err(DecodeError::UnknownKind(kind));
        }
        let queue_id = d.str()?;
        let sender = d.str()?;
        let arrival = get_time(d)?;
        let content_offset = d.u64()?;
        let content_len = d.u64()?;
        let nexthop = d.str()?;
        let n = d.u32()? as usize;
        let mut recipients = Vec::with_capacity(n.min(1024));
        for _ in 0..n {
            recipients.push(DeliveryRecipient {
                index: d.u32()?,
                address: d.str()?,
                original: d.str()?,
            });
        }
        let attributes = d.pairs()?;
        let delivered = get_strs(d)?;
        Ok(DeliveryRequest {
            queue_id,
            sender,
            arrival,
            content_offset,
            content_len,
            nexthop,
            recipients,
            attributes,
            delivered,
        })
    }
}

fn put_strs(e: &mut Encoder, v: &[String]) {
    e.u32(v.len() as u32);
    for s in v {
        e.str(s);
    }
}

fn get_strs(d: &mut Decoder<'_>) -> Result<Vec<String>, DecodeError> {
    let n = d.u32()? as usize;
    let mut out = Vec::with_capacity(n.min(1024));
    for _ in 0..n {
        out.push(d.str()?);
    }
    Ok(out)
}

impl Message for DeliveryReply {
    fn encode(&self) -> Vec<u8> {
        match self {
            DeliveryReply::Status {
                index,
                outcome,
                dsn,
                text,
            } => {
                let mut e = Encoder::new(K_STATUS);
                let o = match outcome {
                    DeliveryOutcome::Sent => 0,
                    DeliveryOutcome::Deferred => 1,
                    DeliveryOutcome::Bounced => 2,
                };
                e.u32(*index).u8(o).str(dsn).str(text);
                e.finish()
            }
            DeliveryReply::Delivered { keys } => {
                let mut e = Encoder::new(K_DELIVERED);
                put_strs(&mut e, keys);
                e.finish()
            }
            DeliveryReply::Finished => Encoder::new(K_FINISHED).finish(),
        }
    }
    fn decode(kind: u8, d: &mut Decoder<'_>) -> Result<Self, DecodeError> {
        Ok(match kind {
            K_STATUS => {
                let index = d.u32()?;
                let outcome = match d.u8()? {
                    0 => DeliveryOutcome::Sent,
                    1 => DeliveryOutcome::Deferred,
                    2 => DeliveryOutcome::Bounced,
                    _ => return Err(DecodeError::BadValue("delivery outcome")),
                };
                DeliveryReply::Status {
                    index,
                    outcome,
                    dsn: d.str()?,
                    text: d.str()?,
                }
            }
            K_DELIVERED => DeliveryReply::Delivered { keys: get_strs(d)? },
            K_FINISHED => DeliveryReply::Finished,
            k => return Err(DecodeError::UnknownKind(k)),
        })
    }
}

/// One-byte requests written to a service's socket to make it look at the
/// queue (Postfix's triggers). Unknown bytes are ignored by the receiver.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Trigger {
    /// New mail in incoming/ (from cleanup).
    ScanIncoming,
    /// Periodic wakeup (from master): look at deferred/ too.
    Wakeup,
    /// Deliver deferred mail now (`postern flush`).
    Flush,
}

impl Trigger {
    /// The byte on the wire.
    pub fn byte(self) -> u8 {
        match self {
            Trigger::ScanIncoming => b'I',
            Trigger::Wakeup => b'W',
            Trigger::Flush => b'F',
        }
    }
    /// Parses a byte from the wire.
    pub fn from_byte(b: u8) -> Option<Trigger> {
        match b {
            b'I' => Some(Trigger::ScanIncoming),
            b'W' => Some(Trigger::Wakeup),
            b'F' => Some(Trigger::Flush),
            _ => None,
        }
    }
}

/// The envelope of a local submission, the first frame `sendmail` writes to
/// `postdrop`'s standard input; [`SubmitContent`] frames follow.
///
/// It exists so the setgid `postdrop` parses a typed, length-checked message
/// instead of text. postdrop trusts none of it: it validates every address,
/// accepts only a short list of attribute names, and sets `local_user`,
/// `uid` and `origin` itself from the real user ID.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SubmitRequest {
    /// Envelope sender: "" = the submitting user's own address (pickup
    /// appends @myorigin), "<>" = the null sender, else an address or a
    /// bare local name.
    pub sender: String,
    /// Envelope recipients: addresses or bare local names (at least one).
    pub recipients: Vec<String>,
    /// Extra attributes for the queue file (e.g. helo_name and protocol
    /// for `sendmail -bs`); postdrop keeps only the names it allows.
    pub attributes: Vec<(String, String)>,
}

/// What follows a [`SubmitRequest`] on postdrop's standard input: content
/// chunks (LF line endings, at most [`crate::CHUNK_SIZE`] bytes each are
/// expected), then `End`. Input that stops before `End` abandons the message.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SubmitContent {
    /// A piece of the message (header, empty line, body).
    Chunk { data: Vec<u8> },
    /// The whole message was sent: write it to maildrop/.
    End,
}

const K_SUBMIT: u8 = 20;
const K_SUBMIT_CHUNK: u8 = 21;
const K_SUBMIT_END: u8 = 22;

impl Message for SubmitRequest {
    fn encode(&self) -> Vec<u8> {
        let mut e = Encoder::new(K_SUBMIT);
        e.str(&self.sender)
            .strs(&self.recipients)
            .pairs(&self.attributes);
        e.finish()
    }
    fn decode(kind: u8, d: &mut Decoder<'_>) -> Result<Self, DecodeError> {
        if kind != K_SUBMIT {
            return Err(DecodeError::UnknownKind(kind));
        }
        Ok(SubmitRequest {
            sender: d.str()?,
            recipients: d.strs()?,
            attributes: d.pairs()?,
        })
    }
}

impl Message for SubmitContent {
    fn encode(&self) -> Vec<u8> {
        match self {
            SubmitContent::Chunk { data } => {
                let mut e = Encoder::new(K_SUBMIT_CHUNK);
                e.bytes(data);
                e.finish()
            }
            SubmitContent::End => Encoder::new(K_SUBMIT_END).finish(),
        }
    }
    fn decode(kind: u8, d: &mut Decoder<'_>) -> Result<Self, DecodeError> {
        Ok(match kind {
            K_SUBMIT_CHUNK => SubmitContent::Chunk {
                data: d.bytes()?.to_vec(),
            },
            K_SUBMIT_END => SubmitContent::End,
            k => return Err(DecodeError::UnknownKind(k)),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::codec::{VERSION, decode_frame};
    use proptest::prelude::*;

    fn round<M: Message + PartialEq + std::fmt::Debug>(m: M) {
        let f = m.encode();
        assert_eq!(decode_frame::<M>(&f).unwrap(), m);
    }

    #[test]
    fn every_message_round_trips() {
        round(CleanupRequest::Open {
            flags: 3,
            attributes: vec![("client_name".into(), "x".into())],
        });
        round(CleanupRequest::Sender {
            address: String::new(),
        });
        round(CleanupRequest::Recipient {
            address: "a@b".into(),
            original: "A@b".into(),
        });
        round(CleanupRequest::Content {
            data: vec![0, 255, b'\n'],
        });
        round(CleanupRequest::End);
        round(CleanupReply::Opened {
            queue_id: "ABC".into(),
        });
        round(CleanupReply::Queued {
            queue_id: "ABC".into(),
        });
        round(CleanupReply::Rejected {
            temporary: true,
            dsn: "4.3.0".into(),
            reason: "disk full".into(),
        });
        round(DeliveryRequest {
            queue_id: "Q".into(),
            sender: "s@x".into(),
            arrival: UNIX_EPOCH + Duration::from_micros(1_700_000_000_123_456),
            content_offset: 99,
            content_len: 1234,
            nexthop: "example.test".into(),
            recipients: vec![DeliveryRecipient {
                index: 2,
                address: "a@b".into(),
                original: "a@b".into(),
            }],
            attributes: vec![],
            delivered: vec!["mailbox:joe".into(), "file:/tmp/x".into()],
        });
        round(DeliveryReply::Delivered {
            keys: vec!["mailbox:joe".into()],
        });
        round(DeliveryReply::Delivered { keys: vec![] });
        round(DeliveryReply::Status {
            index: 7,
            outcome: DeliveryOutcome::Bounced,
            dsn: "5.1.1".into(),
            text: "no".into(),
        });
        round(DeliveryReply::Finished);
    }

    #[test]
    fn trailing_bytes_are_an_error() {
        let mut f = CleanupRequest::Sender {
            address: "a".into(),
        }
        .encode();
        f.push(0);
        let len = (f.len() - 4) as u32;
        f[..4].copy_from_slice(&len.to_be_bytes());
        assert_eq!(
            decode_frame::<CleanupRequest>(&f),
            Err(DecodeError::TrailingBytes(1))
        );
    }

    #[test]
    fn wrong_version_and_kind_are_errors() {
        let mut f = CleanupRequest::End.encode();
        f[4] = VERSION + 1;
        assert_eq!(
            decode_frame::<CleanupRequest>(&f),
            Err(DecodeError::Version(VERSION + 1))
        );
        let f = CleanupReply::Opened {
            queue_id: "x".into(),
        }
        .encode();
        assert!(matches!(
            decode_frame::<CleanupRequest>(&f),
            Err(DecodeError::UnknownKind(65))
        ));
    }

    #[test]
    fn truncated_fields_are_errors() {
        let f = CleanupRequest::Recipient {
            address: "a@b".into(),
            original: "c".into(),
        }
        .encode();
        // Cut the last byte off but keep the length field consistent.
        let mut g = f[..f.len() - 1].to_vec();
        let len = (g.len() - 4) as u32;
        g[..4].copy_from_slice(&len.to_be_bytes());
        assert_eq!(
            decode_frame::<CleanupRequest>(&g),
            Err(DecodeError::Truncated)
        );
    }

    proptest! {
        #[test]
        fn decoding_arbitrary_bytes_never_panics(data in proptest::collection::vec(any::<u8>(), 0..200)) {
            let _ = decode_frame::<CleanupRequest>(&data);
            let _ = decode_frame::<CleanupReply>(&data);
            let _ = decode_frame::<DeliveryRequest>(&data);
            let _ = decode_frame::<DeliveryReply>(&data);
        }
        #[test]
        fn content_round_trips(data in proptest::collection::vec(any::<u8>(), 0..5000)) {
            round(CleanupRequest::Content { data });
        }
    }
}

#[cfg(test)]
mod submit_tests {
    use super::*;
    use crate::codec::decode_frame;

    #[test]
    fn submission_frames_round_trip() {
        let req = SubmitRequest {
            sender: String::new(),
            recipients: vec!["alice".into(), "bob@example.test".into()],
            attributes: vec![("helo_name".into(), "localhost".into())],
        };
        assert_eq!(decode_frame::<SubmitRequest>(&req.encode()).unwrap(), req);
        let c = SubmitContent::Chunk {
            data: b"Subject: x\n\nhi\n".to_vec(),
        };
        assert_eq!(decode_frame::<SubmitContent>(&c.encode()).unwrap(), c);
        let end = SubmitContent::End;
        assert_eq!(decode_frame::<SubmitContent>(&end.encode()).unwrap(), end);
    }

    #[test]
    fn submission_frames_are_not_confused() {
        let req = SubmitRequest {
            sender: "a".into(),
            recipients: vec![],
            attributes: vec![],
        };
        assert!(matches!(
            decode_frame::<SubmitContent>(&req.encode()),
            Err(DecodeError::UnknownKind(20))
        ));
        assert!(matches!(
            decode_frame::<SubmitRequest>(&SubmitContent::End.encode()),
            Err(DecodeError::UnknownKind(22))
        ));
        // A recipient count the frame cannot hold is refused, not allocated.
        let mut e = Encoder::new(20);
        e.str("").u32(u32::MAX);
        assert!(decode_frame::<SubmitRequest>(&e.finish()).is_err());
    }
}

/// A question to the auth service (`private/auth`), one per connection or
/// several in a row; each is answered by one [`AuthReply`].
///
/// SECURITY: `Verify` carries a password in clear over a socket only
/// postern-ipc members can reach; neither end logs it, and its [`Debug`]
/// output hides it.
#[derive(Clone, PartialEq, Eq)]
pub enum AuthRequest {
    /// Check a login. `service` is who asks on behalf of a client (smtpd,
    /// pop3d, imapd), `client_address` the client's IP (for throttling and logs).
    Verify {
        service: String,
        user: String,
        password: String,
        client_address: String,
    },
    /// Does this mail user exist, and where is their mailbox? Never reveals
    /// the password hash.
    Lookup { user: String },
}

impl std::fmt::Debug for AuthRequest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            AuthRequest::Verify {
                service,
                user,
                client_address,
                ..
            } => f
                .debug_struct("Verify")
                .field("service", service)
                .field("user", user)
                .field("password", &"<hidden>")
                .field("client_address", client_address)
                .finish(),
            AuthRequest::Lookup { user } => f.debug_struct("Lookup").field("user", user).finish(),
        }
    }
}

impl AuthRequest {
    /// Overwrites the password of a `Verify` with zeros (before the request
    /// is dropped), so it does not linger in freed memory.
    pub fn wipe(&mut self) {
        if let AuthRequest::Verify { password, .. } = self {
            let mut bytes = std::mem::take(password).into_bytes();
            bytes.iter_mut().for_each(|b| *b = 0);
            // Keeps the stores from being optimised away as dead.
            std::hint::black_box(&mut bytes);
        }
    }
}

/// The auth service's answers.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum AuthReply {
    /// The password is right; `user` is the canonical (lower-cased) name.
    Verified { user: String },
    /// Wrong password, unknown user or unusable hash: the same answer for
    /// all of them, so a client cannot tell which.
    Failed,
    /// No decision now (users file unreadable, too many failures from the
    /// client address): try again later.
    TempFail { reason: String },
    /// The user exists (answer to `Lookup`). uid/gid/home are empty (None)
    /// when the users file leaves them out.
    User {
        name: String,
        uid: Option<u32>,
        gid: Option<u32>,
        home: Option<String>,
    },
    /// No such user (answer to `Lookup`).
    NoSuchUser,
}

const K_AUTH_VERIFY: u8 = 30;
const K_AUTH_LOOKUP: u8 = 31;
const K_AUTH_VERIFIED: u8 = 94;
const K_AUTH_FAILED: u8 = 95;
const K_AUTH_TEMPFAIL: u8 = 96;
const K_AUTH_USER: u8 = 97;
const K_AUTH_NOUSER: u8 = 98;

impl Message for AuthRequest {
    fn encode(&self) -> Vec<u8> {
        match self {
            AuthRequest::Verify {
                service,
                user,
                password,
                client_address,
            } => {
                let mut e = Encoder::new(K_AUTH_VERIFY);
                e.str(service).str(user).str(password).str(client_address);
                e.finish()
            }
            AuthRequest::Lookup { user } => {
                let mut e = Encoder::new(K_AUTH_LOOKUP);
                e.str(user);
                e.finish()
            }
        }
    }
    fn decode(kind: u8, d: &mut Decoder<'_>) -> Result<Self, DecodeError> {
        Ok(match kind {
            K_AUTH_VERIFY => AuthRequest::Verify {
                service: d.str()?,
                user: d.str()?,
                password: d.str()?,
                client_address: d.str()?,
            },
            K_AUTH_LOOKUP => AuthRequest::Lookup { user: d.str()? },
            k => return Err(DecodeError::UnknownKind(k)),
        })
    }
}

fn put_opt_u32(e: &mut Encoder, v: Option<u32>) {
    match v {
        Some(n) => e.u8(1).u32(n),
        None => e.u8(0).u32(0),
    };
}

fn get_opt_u32(d: &mut Decoder<'_>) -> Result<Option<u32>, DecodeError> {
    let present = d.u8()?;
    let n = d.u32()?;
    match present {
        0 if n == 0 => Ok(None),
        1 => Ok(Some(n)),
        _ => Err(DecodeError::BadValue("optional number")),
    }
}

impl Message for AuthReply {
    fn encode(&self) -> Vec<u8> {
        match self {
            AuthReply::Verified { user } => {
                let mut e = Encoder::new(K_AUTH_VERIFIED);
                e.str(user);
                e.finish()
            }
            AuthReply::Failed => Encoder::new(K_AUTH_FAILED).finish(),
            AuthReply::TempFail { reason } => {
                let mut e = Encoder::new(K_AUTH_TEMPFAIL);
                e.str(reason);
                e.finish()
            }
            AuthReply::User {
                name,
                uid,
                gid,
                home,
            } => {
                let mut e = Encoder::new(K_AUTH_USER);
                e.str(name);
                put_opt_u32(&mut e, *uid);
                put_opt_u32(&mut e, *gid);
                match home {
                    Some(h) => e.u8(1).str(h),
                    None => e.u8(0).str(""),
                };
                e.finish()
            }
            AuthReply::NoSuchUser => Encoder::new(K_AUTH_NOUSER).finish(),
        }
    }
    fn decode(kind: u8, d: &mut Decoder<'_>) -> Result<Self, DecodeError> {
        Ok(match kind {
            K_AUTH_VERIFIED => AuthReply::Verified { user: d.str()? },
            K_AUTH_FAILED => AuthReply::Failed,
            K_AUTH_TEMPFAIL => AuthReply::TempFail { reason: d.str()? },
            K_AUTH_USER => {
                let name = d.str()?;
                let uid = get_opt_u32(d)?;
                let gid = get_opt_u32(d)?;
                let present = d.u8()?;
                let h = d.str()?;
                let home = match present {
                    0 if h.is_empty() => None,
                    1 => Some(h),
                    _ => return Err(DecodeError::BadValue("optional home")),
                };
                AuthReply::User {
                    name,
                    uid,
                    gid,
                    home,
                }
            }
            K_AUTH_NOUSER => AuthReply::NoSuchUser,
            k => return Err(DecodeError::UnknownKind(k)),
        })
    }
}

#[cfg(test)]
mod auth_tests {
    use super::*;
    use crate::codec::decode_frame;
    use proptest::prelude::*;

    fn round<M: Message + PartialEq + std::fmt::Debug>(m: M) {
        assert_eq!(decode_frame::<M>(&m.encode()).unwrap(), m);
    }

    #[test]
    fn auth_frames_round_trip() {
        round(AuthRequest::Verify {
            service: "smtpd".into(),
            user: "Alice".into(),
            password: "p:ss wörd".into(),
            client_address: "192.0.2.1".into(),
        });
        round(AuthRequest::Lookup { user: "bob".into() });
        round(AuthReply::Verified {
            user: "alice".into(),
        });
        round(AuthReply::Failed);
        round(AuthReply::TempFail {
            reason: "try later".into(),
        });
        round(AuthReply::User {
            name: "bob".into(),
            uid: Some(0),
            gid: None,
            home: Some("/var/mail/bob".into()),
        });
        round(AuthReply::User {
            name: "c".into(),
            uid: None,
            gid: Some(5),
            home: None,
        });
        round(AuthReply::NoSuchUser);
    }

    #[test]
    fn auth_frames_are_not_confused_and_debug_hides_the_password() {
        let v = AuthRequest::Verify {
            service: "imapd".into(),
            user: "u".into(),
            password: "hunter2".into(),
            client_address: "::1".into(),
        };
        assert!(!format!("{v:?}").contains("hunter2"));
        assert!(matches!(
            decode_frame::<AuthReply>(&v.encode()),
            Err(DecodeError::UnknownKind(30))
        ));
        assert!(matches!(
            decode_frame::<AuthRequest>(&AuthReply::Failed.encode()),
            Err(DecodeError::UnknownKind(95))
        ));
        // An optional field with a bad presence byte is refused.
        let mut e = Encoder::new(97);
        e.str("x").u8(2).u32(1).u8(0).u32(0).u8(0).str("");
        assert!(decode_frame::<AuthReply>(&e.finish()).is_err());
    }

    #[test]
    fn wipe_clears_the_password() {
        let mut v = AuthRequest::Verify {
            service: "smtpd".into(),
            user: "u".into(),
            password: "secret".into(),
            client_address: "::1".into(),
        };
        v.wipe();
        assert!(matches!(v, AuthRequest::Verify { ref password, .. } if password.is_empty()));
    }

    proptest! {
        #[test]
        fn decoding_arbitrary_auth_bytes_never_panics(data in proptest::collection::vec(any::<u8>(), 0..200)) {
            let _ = decode_frame::<AuthRequest>(&data);
            let _ = decode_frame::<AuthReply>(&data);
        }
    }
}
