//! `sendmail` → `postdrop`, on postdrop's standard input (no socket): one
//! [`SubmitRequest`], then [`SubmitContent`] frames ending in `End`.

use crate::codec::{DecodeError, Decoder, Encoder, Message};
use crate::kinds::*;

/// The envelope of a local submission, the first frame `sendmail` writes to
/// `postdrop`'s standard input; [`SubmitContent`] frames follow.
///
/// It exists so the setgid `postdrop` parses a typed, length-checked message
/// instead of text. postdrop trusts none of it: it validates every address,
/// accepts only a short list of attribute names, and sets `local_user`,
/// `uid` and `origin` itself from the real user ID.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SubmitRequest {
    /// Envelope sender: the caller's own address, the null sender, or what
    /// the caller gave with -f.
    pub sender: SubmitSender,
    /// Envelope recipients: addresses or bare local names (at least one).
    pub recipients: Vec<String>,
    /// Extra attributes for the queue file (e.g. helo_name and protocol
    /// for `sendmail -bs`); postdrop keeps only the names it allows.
    pub attributes: Vec<(String, String)>,
}

/// Who a local submission is from, as `sendmail` was told.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SubmitSender {
    /// No -f: the submitting user (postdrop writes `login@myorigin`).
    Caller,
    /// `-f '<>'` (or `-f ''`): the null sender.
    Null,
    /// `-f ADDRESS`: an address or a bare local name (postdrop validates it
    /// and appends @myorigin to a bare name).
    Given(String),
}

/// What follows a [`SubmitRequest`] on postdrop's standard input: content
/// chunks (LF line endings, at most [`crate::CHUNK_SIZE`] bytes each are
/// expected), then `End`. Input that stops before `End` abandons the message.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SubmitContent {
    /// A piece of the message (header, empty line, body).
    Chunk {
        /// Message bytes, LF line endings.
        data: Vec<u8>,
    },
    /// The whole message was sent: write it to maildrop/.
    End,
}

impl Message for SubmitRequest {
    fn encode(&self) -> Vec<u8> {
        let mut e = Encoder::new(K_SUBMIT);
        match &self.sender {
            SubmitSender::Caller => e.u8(0).str(""),
            SubmitSender::Null => e.u8(1).str(""),
            SubmitSender::Given(a) => e.u8(2).str(a),
        };
        e.strs(&self.recipients).pairs(&self.attributes);
        e.finish()
    }
    fn decode(kind: u8, d: &mut Decoder<'_>) -> Result<Self, DecodeError> {
        if kind != K_SUBMIT {
            return Err(DecodeError::UnknownKind(kind));
        }
        let tag = d.u8()?;
        let given = d.str()?;
        let sender = match tag {
            0 if given.is_empty() => SubmitSender::Caller,
            1 if given.is_empty() => SubmitSender::Null,
            2 if !given.is_empty() => SubmitSender::Given(given),
            _ => return Err(DecodeError::BadValue("submission sender")),
        };
        Ok(SubmitRequest {
            sender,
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
mod submit_tests {
    use super::*;
    use crate::codec::decode_frame;

    #[test]
    fn submission_frames_round_trip() {
        let req = SubmitRequest {
            sender: SubmitSender::Caller,
            recipients: vec!["alice".into(), "bob@example.test".into()],
            attributes: vec![("helo_name".into(), "localhost".into())],
        };
        assert_eq!(decode_frame::<SubmitRequest>(&req.encode()).unwrap(), req);
        for sender in [SubmitSender::Null, SubmitSender::Given("joe".into())] {
            let req = SubmitRequest {
                sender,
                ..req.clone()
            };
            assert_eq!(decode_frame::<SubmitRequest>(&req.encode()).unwrap(), req);
        }
        // A given sender is never empty, the others carry no text.
        for (tag, text) in [(0, "x"), (1, "x"), (2, ""), (3, "")] {
            let mut e = Encoder::new(20);
            e.u8(tag).str(text).strs::<&str>(&[]).pairs(&[]);
            assert_eq!(
                decode_frame::<SubmitRequest>(&e.finish()),
                Err(DecodeError::BadValue("submission sender"))
            );
        }
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
            sender: SubmitSender::Given("a".into()),
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
        e.u8(0).str("").u32(u32::MAX);
        assert!(decode_frame::<SubmitRequest>(&e.finish()).is_err());
    }
}
