//! qmgr and the delivery agents (local, later smtp): one [`DeliveryRequest`]
//! carrying the open queue file as a descriptor, answered by one
//! [`DeliveryReply::Status`] per recipient, the agent's
//! [`DeliveryReply::Delivered`] destinations, and [`DeliveryReply::Finished`].

use crate::address::{
    get_mailbox, get_rcpt_dsn, get_sender, put_mailbox, put_rcpt_dsn, put_sender,
};
use crate::codec::{DecodeError, Decoder, Encoder, Message};
use crate::kinds::*;
use postern_smtp_proto::{Mailbox, Notify, Orcpt, ReversePath};
use postern_status::{DeliveryStatus, EnhancedCode, StatusClass};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// One recipient in a delivery request. `index` is its position in the queue
/// file, so the agent's status can be matched back to the record to mark done.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DeliveryRecipient {
    /// Position of the recipient in the queue file's envelope.
    pub index: u32,
    /// Address to deliver to.
    pub address: Mailbox,
    /// Address as originally received (for orig_to= and X-Original-To).
    pub original: String,
    /// RFC 3461 NOTIFY= from the queue file (passed on by smtp).
    pub notify: Option<Notify>,
    /// RFC 3461 ORCPT= from the queue file (passed on by smtp).
    pub orcpt: Option<Orcpt>,
}

/// qmgr's request to a delivery agent. The queue file itself travels with the
/// frame as a descriptor (SCM_RIGHTS); the agent reads the content range from it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DeliveryRequest {
    /// Queue ID, for logging.
    pub queue_id: String,
    /// Envelope sender.
    pub sender: ReversePath,
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

/// A delivery agent's answers.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum DeliveryReply {
    /// The outcome for one recipient of the request.
    Status {
        /// The recipient's [`DeliveryRecipient::index`].
        index: u32,
        /// Sent (success), deferred (temporary) or bounced (permanent),
        /// its enhanced code and what happened, for the log and the bounce.
        status: DeliveryStatus,
    },
    /// The destinations this message has now been delivered to (the
    /// request's `delivered` plus this request's successes), sent before
    /// [`DeliveryReply::Finished`] by agents that suppress duplicates, for
    /// qmgr to pass on to the next request for the same message.
    Delivered {
        /// Opaque destination keys ("mailbox:joe", "file:/path", ...).
        keys: Vec<String>,
    },
    /// The destination could not be used at all (no server answered: every
    /// connection was refused, timed out or turned away), sent before
    /// [`DeliveryReply::Finished`]: qmgr suspends deliveries to it for a
    /// while instead of trying each message (Postfix's dead destination).
    SiteFailure {
        /// Why, for the "delivery temporarily suspended" deferrals.
        reason: String,
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

/// A [`DeliveryStatus`] on the wire: the class (0 success, 1 temporary,
/// 2 permanent), the enhanced code as three numbers (u8 class digit, u32
/// subject, u32 detail), and the text. Decoding refuses an invalid code
/// (9.x.x, a part over 999) and a class that disagrees with the code's first
/// digit.
pub fn put_status(e: &mut Encoder, s: &DeliveryStatus) {
    let class = match s.class() {
        StatusClass::Success => 0,
        StatusClass::Temporary => 1,
        StatusClass::Permanent => 2,
    };
    let EnhancedCode(c, subject, detail) = s.code();
    e.u8(class)
        .u8(c)
        .u32(u32::from(subject))
        .u32(u32::from(detail))
        .str(s.text());
}

/// Reads what [`put_status`] wrote, checked.
pub fn get_status(d: &mut Decoder<'_>) -> Result<DeliveryStatus, DecodeError> {
    let class = match d.u8()? {
        0 => StatusClass::Success,
        1 => StatusClass::Temporary,
        2 => StatusClass::Permanent,
        _ => return Err(DecodeError::BadValue("delivery status class")),
    };
    let c = d.u8()?;
    let subject = u16::try_from(d.u32()?).map_err(|_| DecodeError::BadValue("status code"))?;
    let detail = u16::try_from(d.u32()?).map_err(|_| DecodeError::BadValue("status code"))?;
    let text = d.str()?;
    DeliveryStatus::new(class, EnhancedCode(c, subject, detail), text).map_err(|e| match e {
        postern_status::StatusError::BadCode(_) => DecodeError::BadValue("status code"),
        postern_status::StatusError::ClassMismatch(..) => {
            DecodeError::BadValue("status class disagrees with its code")
        }
    })
}

impl Message for DeliveryRequest {
    fn encode(&self) -> Vec<u8> {
        let mut e = Encoder::new(K_DELIVER);
        e.str(&self.queue_id);
        put_sender(&mut e, &self.sender);
        put_time(&mut e, self.arrival);
        e.u64(self.content_offset)
            .u64(self.content_len)
            .str(&self.nexthop);
        e.u32(u32::try_from(self.recipients.len()).unwrap_or(u32::MAX));
        for r in &self.recipients {
            e.u32(r.index);
            put_mailbox(&mut e, &r.address);
            e.str(&r.original);
            put_rcpt_dsn(&mut e, r.notify, r.orcpt.as_ref());
        }
        e.pairs(&self.attributes);
        e.strs(&self.delivered);
        e.finish()
    }
    fn decode(kind: u8, d: &mut Decoder<'_>) -> Result<Self, DecodeError> {
        if kind != K_DELIVER {
            return Err(DecodeError::UnknownKind(kind));
        }
        let queue_id = d.str()?;
        let sender = get_sender(d)?;
        let arrival = get_time(d)?;
        let content_offset = d.u64()?;
        let content_len = d.u64()?;
        let nexthop = d.str()?;
        let n = d.u32()? as usize;
        let mut recipients = Vec::with_capacity(n.min(1024));
        for _ in 0..n {
            let index = d.u32()?;
            let address = get_mailbox(d)?;
            let original = d.str()?;
            let (notify, orcpt) = get_rcpt_dsn(d)?;
            recipients.push(DeliveryRecipient {
                index,
                address,
                original,
                notify,
                orcpt,
            });
        }
        let attributes = d.pairs()?;
        let delivered = d.strs()?;
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

impl Message for DeliveryReply {
    fn encode(&self) -> Vec<u8> {
        match self {
            DeliveryReply::Status { index, status } => {
                let mut e = Encoder::new(K_STATUS);
                e.u32(*index);
                put_status(&mut e, status);
                e.finish()
            }
            DeliveryReply::Delivered { keys } => {
                let mut e = Encoder::new(K_DELIVERED);
                e.strs(keys);
                e.finish()
            }
            DeliveryReply::SiteFailure { reason } => {
                let mut e = Encoder::new(K_SITE_FAILURE);
                e.str(reason);
                e.finish()
            }
            DeliveryReply::Finished => Encoder::new(K_FINISHED).finish(),
        }
    }
    fn decode(kind: u8, d: &mut Decoder<'_>) -> Result<Self, DecodeError> {
        Ok(match kind {
            K_STATUS => DeliveryReply::Status {
                index: d.u32()?,
                status: get_status(d)?,
            },
            K_DELIVERED => DeliveryReply::Delivered { keys: d.strs()? },
            K_SITE_FAILURE => DeliveryReply::SiteFailure { reason: d.str()? },
            K_FINISHED => DeliveryReply::Finished,
            k => return Err(DecodeError::UnknownKind(k)),
        })
    }
}
