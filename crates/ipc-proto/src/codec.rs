//! The wire form of every internal message.
//!
//! A frame is `[length u32 BE][version u8][kind u8][payload]`, where `length`
//! counts everything after itself. Payload fields are written in a fixed order
//! per message kind: integers big-endian, byte strings as `[len u32 BE][bytes]`.
//! A decoder must consume the whole payload (as OpenSMTPD's `m_end` and
//! rustls' codec insist): leftover bytes mean the two sides disagree on the
//! format, and that is an error, never something to skip.

use std::fmt;

/// The version byte every frame carries. Bump it when any message layout changes.
pub const VERSION: u8 = 2;

/// Largest frame accepted (length field), so a confused or hostile peer cannot
/// make a process allocate without bound. Content travels in chunks below this.
pub const MAX_FRAME: usize = 1024 * 1024 + 1024;

/// Size of the content chunks senders should use.
pub const CHUNK_SIZE: usize = 64 * 1024;

/// Why a frame could not be turned into a message.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum DecodeError {
    /// The frame's version byte is not [`VERSION`].
    Version(u8),
    /// The frame's kind byte is not one this message family knows.
    UnknownKind(u8),
    /// A field ran past the end of the frame.
    Truncated,
    /// Bytes were left after the last field.
    TrailingBytes(usize),
    /// The length field is over [`MAX_FRAME`] or too small to hold a header.
    BadLength(usize),
    /// A field holds a value its type does not allow (e.g. non-UTF-8 text).
    BadValue(&'static str),
}

impl fmt::Display for DecodeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DecodeError::Version(v) => write!(f, "unsupported IPC version {v} (want {VERSION})"),
            DecodeError::UnknownKind(k) => write!(f, "unknown IPC message kind {k}"),
            DecodeError::Truncated => write!(f, "truncated IPC message"),
            DecodeError::TrailingBytes(n) => write!(f, "{n} unexpected bytes after IPC message"),
            DecodeError::BadLength(n) => write!(f, "bad IPC frame length {n}"),
            DecodeError::BadValue(what) => write!(f, "bad IPC field value: {what}"),
        }
    }
}

impl std::error::Error for DecodeError {}

/// Builds a frame payload field by field.
#[derive(Default)]
pub struct Encoder {
    buf: Vec<u8>,
}

impl Encoder {
    /// Starts a frame of the given kind (length is patched by [`Encoder::finish`]).
    pub fn new(kind: u8) -> Encoder {
        let mut buf = Vec::with_capacity(64);
        buf.extend_from_slice(&[0, 0, 0, 0, VERSION, kind]);
        Encoder { buf }
    }
    /// Appends one byte.
    pub fn u8(&mut self, v: u8) -> &mut Self {
        self.buf.push(v);
        self
    }
    /// Appends a big-endian u32.
    pub fn u32(&mut self, v: u32) -> &mut Self {
        self.buf.extend_from_slice(&v.to_be_bytes());
        self
    }
    /// Appends a big-endian u64.
    pub fn u64(&mut self, v: u64) -> &mut Self {
        self.buf.extend_from_slice(&v.to_be_bytes());
        self
    }
    /// Appends a length-prefixed byte string.
    pub fn bytes(&mut self, v: &[u8]) -> &mut Self {
        // A field over u32::MAX is written with a saturated length, which
        // makes the frame undecodable; Message::to_frame refuses such a
        // frame long before (it is far over MAX_FRAME).
        self.u32(u32::try_from(v.len()).unwrap_or(u32::MAX));
        self.buf.extend_from_slice(v);
        self
    }
    /// Appends a length-prefixed UTF-8 string.
    pub fn str(&mut self, v: &str) -> &mut Self {
        self.bytes(v.as_bytes())
    }
    /// Appends a count followed by each string.
    pub fn strs<S: AsRef<str>>(&mut self, v: &[S]) -> &mut Self {
        self.u32(u32::try_from(v.len()).unwrap_or(u32::MAX));
        for s in v {
            self.str(s.as_ref());
        }
        self
    }
    /// Appends a count followed by name/value pairs.
    pub fn pairs(&mut self, v: &[(String, String)]) -> &mut Self {
        self.u32(u32::try_from(v.len()).unwrap_or(u32::MAX));
        for (k, val) in v {
            self.str(k).str(val);
        }
        self
    }
    /// Patches the length and returns the complete frame.
    pub fn finish(mut self) -> Vec<u8> {
        let len = u32::try_from(self.buf.len() - 4).unwrap_or(u32::MAX);
        self.buf[..4].copy_from_slice(&len.to_be_bytes());
        self.buf
    }
}

/// Reads the fields of one frame's payload, in order.
pub struct Decoder<'a> {
    data: &'a [u8],
}

impl<'a> Decoder<'a> {
    /// Wraps a payload (the bytes after version and kind).
    pub fn new(data: &'a [u8]) -> Decoder<'a> {
        Decoder { data }
    }
    fn take(&mut self, n: usize) -> Result<&'a [u8], DecodeError> {
        if self.data.len() < n {
            return Err(DecodeError::Truncated);
        }
        let (head, rest) = self.data.split_at(n);
        self.data = rest;
        Ok(head)
    }
    /// Reads one byte.
    pub fn u8(&mut self) -> Result<u8, DecodeError> {
        Ok(self.take(1)?[0])
    }
    /// Reads a big-endian u32.
    pub fn u32(&mut self) -> Result<u32, DecodeError> {
        let b = self.take(4)?;
        Ok(u32::from_be_bytes([b[0], b[1], b[2], b[3]]))
    }
    /// Reads a big-endian u64.
    pub fn u64(&mut self) -> Result<u64, DecodeError> {
        let b = self.take(8)?;
        let mut a = [0u8; 8];
        a.copy_from_slice(b);
        Ok(u64::from_be_bytes(a))
    }
    /// Reads a length-prefixed byte string.
    pub fn bytes(&mut self) -> Result<&'a [u8], DecodeError> {
        let n = self.u32()? as usize;
        self.take(n)
    }
    /// Reads a length-prefixed UTF-8 string.
    pub fn str(&mut self) -> Result<String, DecodeError> {
        let b = self.bytes()?;
        String::from_utf8(b.to_vec()).map_err(|_| DecodeError::BadValue("text is not UTF-8"))
    }
    /// Reads a counted list of strings.
    pub fn strs(&mut self) -> Result<Vec<String>, DecodeError> {
        let n = self.u32()? as usize;
        // Each string needs at least 4 bytes: refuse counts the frame cannot hold.
        if n > self.data.len() / 4 {
            return Err(DecodeError::Truncated);
        }
        (0..n).map(|_| self.str()).collect()
    }
    /// Reads counted name/value pairs.
    pub fn pairs(&mut self) -> Result<Vec<(String, String)>, DecodeError> {
        let n = self.u32()? as usize;
        if n > self.data.len() / 8 {
            return Err(DecodeError::Truncated);
        }
        (0..n).map(|_| Ok((self.str()?, self.str()?))).collect()
    }
    /// Ends decoding: every byte must have been used.
    pub fn finish(self) -> Result<(), DecodeError> {
        if self.data.is_empty() {
            Ok(())
        } else {
            Err(DecodeError::TrailingBytes(self.data.len()))
        }
    }
}

/// A frame [`Message::to_frame`] refused to produce: bigger than
/// [`MAX_FRAME`], so the receiver would refuse it and the conversation
/// would be lost. Senders split content into [`CHUNK_SIZE`] pieces; this
/// catches what cannot be split (a huge list of recipients or keys).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FrameTooLarge {
    /// The length field the frame would have had.
    pub length: usize,
}

impl fmt::Display for FrameTooLarge {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "IPC frame of {} bytes is over the limit of {MAX_FRAME}",
            self.length
        )
    }
}

impl std::error::Error for FrameTooLarge {}

/// A family of messages that travel on one kind of channel.
pub trait Message: Sized {
    /// Encodes the message as one complete frame (unchecked: use
    /// [`Message::to_frame`] to send).
    fn encode(&self) -> Vec<u8>;
    /// Decodes a message from its kind byte and payload.
    fn decode(kind: u8, payload: &mut Decoder<'_>) -> Result<Self, DecodeError>;
    /// Encodes the message, refusing a frame the receiver would refuse:
    /// the same [`MAX_FRAME`] bound on both sides.
    fn to_frame(&self) -> Result<Vec<u8>, FrameTooLarge> {
        let frame = self.encode();
        let length = frame.len().saturating_sub(4);
        if length > MAX_FRAME {
            return Err(FrameTooLarge { length });
        }
        Ok(frame)
    }
}

/// Splits one frame off the front of `buf` if a whole one is there.
/// Returns the frame's (kind, payload range) and the total bytes it used.
pub fn split_frame(buf: &[u8]) -> Result<Option<(u8, std::ops::Range<usize>, usize)>, DecodeError> {
    if buf.len() < 4 {
        return Ok(None);
    }
    let len = u32::from_be_bytes([buf[0], buf[1], buf[2], buf[3]]) as usize;
    if !(2..=MAX_FRAME).contains(&len) {
        return Err(DecodeError::BadLength(len));
    }
    if buf.len() < 4 + len {
        return Ok(None);
    }
    if buf[4] != VERSION {
        return Err(DecodeError::Version(buf[4]));
    }
    Ok(Some((buf[5], 6..4 + len, 4 + len)))
}

/// Decodes exactly one whole frame (tests, fuzzing): no more, no less.
pub fn decode_frame<M: Message>(frame: &[u8]) -> Result<M, DecodeError> {
    match split_frame(frame)? {
        None => Err(DecodeError::Truncated),
        Some((kind, range, used)) => {
            if used != frame.len() {
                return Err(DecodeError::TrailingBytes(frame.len() - used));
            }
            let mut d = Decoder::new(&frame[range]);
            let m = M::decode(kind, &mut d)?;
            d.finish()?;
            Ok(m)
        }
    }
}
