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
