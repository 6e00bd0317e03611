//! Queue file format v2 (and v1, still read): the envelope types, the
//! encoder and the strict parser.
//!
//! Layout (documented byte by byte in docs/queue.md):
//!
//! ```text
//! "POSTERNQ" 0x02
//! [type u8][len u32 BE][data]        T, A*, S, R|D*  (envelope records)
//! 'M' [len u64 BE][content bytes]    exactly one, after the envelope
//! 'E' 00 00 00 00                    end marker; nothing may follow
//! ```
//!
//! The parser trusts nothing: every length is checked against the file size
//! before anything is read or allocated, and every defect is reported as
//! [`QueueError::Corrupt`] with a specific reason. It never panics.

use postern_smtp_proto::{Mailbox, Notify, Orcpt, ReversePath};
use std::fmt;
use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// First eight bytes of every queue file.
pub const MAGIC: &[u8; 8] = b"POSTERNQ";
/// The format version this crate writes. Version 2 added the DSN fields
/// (NOTIFY, ORCPT) to recipient records; version 1 files are still read.
pub const VERSION: u8 = 2;
/// The oldest format version this crate reads.
pub const OLDEST_VERSION: u8 = 1;
/// Length of magic + version.
pub const HEADER_LEN: u64 = 9;
/// Largest data length of one envelope record; larger ones are refused by
/// the writer and reported as corrupt by the reader (bounds memory use).
pub const MAX_RECORD_LEN: u32 = 1 << 20;

/// Record type: arrival time, "SECS.MICROS".
pub const REC_TIME: u8 = b'T';
/// Record type: attribute, "name=value".
pub const REC_ATTR: u8 = b'A';
/// Record type: envelope sender.
pub const REC_SENDER: u8 = b'S';
/// Record type: recipient still to deliver, "ADDRESS\0ORIGINAL\0NOTIFY\0ORCPT"
/// (v1: "ADDRESS\0ORIGINAL").
pub const REC_RCPT: u8 = b'R';
/// Record type: recipient done (an `R` whose type byte was overwritten).
pub const REC_DONE: u8 = b'D';
/// Record type: message content, with a u64 length.
pub const REC_CONTENT: u8 = b'M';
/// Record type: end of file marker, length 0.
pub const REC_END: u8 = b'E';

/// One envelope recipient and its delivery status.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Recipient {
    /// The address to deliver to (after rewriting).
    pub address: Mailbox,
    /// The address as the client gave it (for orig_to= and X-Original-To);
    /// free text, possibly unqualified.
    pub original: String,
    /// RFC 3461 NOTIFY= as the client gave it; None = the default
    /// (failures, and delays if the site sends delay warnings).
    pub notify: Option<Notify>,
    /// RFC 3461 ORCPT=, for the Original-Recipient field of notifications.
    pub orcpt: Option<Orcpt>,
    /// True once a delivery agent reported success (or a final bounce was sent).
    pub done: bool,
}

impl Recipient {
    /// A recipient still to deliver, without DSN parameters.
    pub fn new(address: Mailbox, original: impl Into<String>) -> Recipient {
        Recipient {
            address,
            original: original.into(),
            notify: None,
            orcpt: None,
            done: false,
        }
    }
}

/// Everything about a message except its content.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Envelope {
    /// When the message was accepted. Stored with microsecond precision.
    pub arrival: SystemTime,
    /// Envelope sender (stored as "" for the null sender).
    pub sender: ReversePath,
    /// Recipients in the order they were accepted; at least one.
    pub recipients: Vec<Recipient>,
    /// Opaque name/value pairs (client_name, helo_name, ...), order preserved.
    pub attributes: Vec<(String, String)>,
}

impl Envelope {
    /// The value of the first attribute called `name`.
    pub fn attribute(&self, name: &str) -> Option<&str> {
        self.attributes
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }
}

/// Why a queue file could not be read.
#[derive(Debug)]
pub enum QueueError {
    /// The operating system refused (open, read): usually temporary.
    Io(io::Error),
    /// The file is not a valid queue file; move it to corrupt/.
    Corrupt(String),
}

impl fmt::Display for QueueError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            QueueError::Io(e) => write!(f, "queue file I/O error: {e}"),
            QueueError::Corrupt(r) => write!(f, "corrupt queue file: {r}"),
        }
    }
}

impl std::error::Error for QueueError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            QueueError::Io(e) => Some(e),
            QueueError::Corrupt(_) => None,
        }
    }
}

impl From<io::Error> for QueueError {
    fn from(e: io::Error) -> Self {
        QueueError::Io(e)
    }
}

fn invalid(msg: impl Into<String>) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidInput, msg.into())
}

fn push_record(out: &mut Vec<u8>, kind: u8, data: &[u8]) -> io::Result<()> {
    let len = u32::try_from(data.len())
        .ok()
        .filter(|&l| l <= MAX_RECORD_LEN)
        .ok_or_else(|| {
            invalid(format!(
                "queue record {:?} longer than {MAX_RECORD_LEN} bytes",
                kind as char
            ))
        })?;
    out.push(kind);
    out.extend_from_slice(&len.to_be_bytes());
    out.extend_from_slice(data);
    Ok(())
}

/// Encodes the envelope records (T, A*, S, R|D*) of `env`. Returns the bytes
/// and, for each recipient, the offset of its type byte relative to the start
/// of the returned buffer. Refuses (InvalidInput) what the reader would not
/// read back identically.
pub(crate) fn encode_envelope(env: &Envelope) -> io::Result<(Vec<u8>, Vec<u64>)> {
    if env.recipients.is_empty() {
        return Err(invalid("envelope has no recipient"));
    }
    let since = env
        .arrival
        .duration_since(UNIX_EPOCH)
        .map_err(|_| invalid("arrival time before 1970"))?;
    let mut out = Vec::new();
    let time = format!("{}.{:06}", since.as_secs(), since.subsec_micros());
    push_record(&mut out, REC_TIME, time.as_bytes())?;
    for (name, value) in &env.attributes {
        if name.is_empty() || name.contains('=') {
            return Err(invalid(format!("bad attribute name {name:?}")));
        }
        push_record(&mut out, REC_ATTR, format!("{name}={value}").as_bytes())?;
    }
    push_record(&mut out, REC_SENDER, env.sender.bare().as_bytes())?;
    let mut offsets = Vec::with_capacity(env.recipients.len());
    for r in &env.recipients {
        let address = r.address.to_string();
        let notify = r.notify.map(|n| n.to_string()).unwrap_or_default();
        let orcpt = r.orcpt.as_ref().map(|o| o.to_string()).unwrap_or_default();
        if [&address, &r.original, &orcpt]
            .iter()
            .any(|f| f.contains('\0'))
        {
            return Err(invalid("recipient contains a NUL byte"));
        }
        if r.orcpt.is_some() && Orcpt::parse_decoded(&orcpt).as_ref() != r.orcpt.as_ref() {
            return Err(invalid("ORCPT that would not read back"));
        }
        let data = [
            address.as_bytes(),
            b"\0",
            r.original.as_bytes(),
            b"\0",
            notify.as_bytes(),
            b"\0",
            orcpt.as_bytes(),
        ]
        .concat();
        offsets.push(out.len() as u64);
        push_record(&mut out, if r.done { REC_DONE } else { REC_RCPT }, &data)?;
    }
    Ok((out, offsets))
}

/// Random-access input for the parser: a file (read with pread) or bytes.
pub(crate) trait Source {
    fn total_len(&self) -> io::Result<u64>;
    fn read_at_exact(&self, buf: &mut [u8], offset: u64) -> io::Result<()>;
}

impl Source for File {
    fn total_len(&self) -> io::Result<u64> {
        Ok(self.metadata()?.len())
    }
    fn read_at_exact(&self, buf: &mut [u8], offset: u64) -> io::Result<()> {
        self.read_exact_at(buf, offset)
    }
}

impl Source for [u8] {
    fn total_len(&self) -> io::Result<u64> {
        Ok(self.len() as u64)
    }
    fn read_at_exact(&self, buf: &mut [u8], offset: u64) -> io::Result<()> {
        let start = usize::try_from(offset).map_err(|_| io::ErrorKind::UnexpectedEof)?;
        let end = start
            .checked_add(buf.len())
            .ok_or(io::ErrorKind::UnexpectedEof)?;
        let src = self.get(start..end).ok_or(io::ErrorKind::UnexpectedEof)?;
        buf.copy_from_slice(src);
        Ok(())
    }
}

/// A parsed queue file: the envelope plus where things are in the file.
#[derive(Debug)]
pub(crate) struct Parsed {
    /// The format version the file was written in.
    pub version: u8,
    pub envelope: Envelope,
    /// File offset of each recipient's type byte, same order as `envelope.recipients`.
    pub rcpt_offsets: Vec<u64>,
    pub content_offset: u64,
    pub content_len: u64,
}

fn corrupt(msg: impl Into<String>) -> QueueError {
    QueueError::Corrupt(msg.into())
}

/// Buffered positional reader over a [`Source`] of known length.
struct Cursor<'a, S: Source + ?Sized> {
    src: &'a S,
    len: u64,
    buf: Vec<u8>,
    buf_start: u64,
}

const CHUNK: u64 = 64 * 1024;

impl<S: Source + ?Sized> Cursor<'_, S> {
    /// Bytes `[off, off+n)`, or Corrupt(`what`) if the file is shorter.
    fn get(&mut self, off: u64, n: u64, what: &str) -> Result<&[u8], QueueError> {
        let end = off.checked_add(n).ok_or_else(|| corrupt(what.to_owned()))?;
        if end > self.len {
            return Err(corrupt(what.to_owned()));
        }
        let buf_end = self.buf_start + self.buf.len() as u64;
        if off < self.buf_start || end > buf_end {
            // n is bounded by MAX_RECORD_LEN + a few bytes by every caller.
            let want = n.max(CHUNK).min(self.len - off);
            let want = usize::try_from(want).map_err(|_| corrupt(what.to_owned()))?;
            self.buf.resize(want, 0);
            self.buf_start = off;
            if let Err(e) = self.src.read_at_exact(&mut self.buf, off) {
                self.buf.clear();
                // The file shrank under us: that is a truncated file.
                return Err(if e.kind() == io::ErrorKind::UnexpectedEof {
                    corrupt(what.to_owned())
                } else {
                    QueueError::Io(e)
                });
            }
        }
        let s = (off - self.buf_start) as usize;
        Ok(&self.buf[s..s + n as usize])
    }
}

fn record_name(kind: u8) -> &'static str {
    match kind {
        REC_TIME => "arrival time",
        REC_ATTR => "attribute",
        REC_SENDER => "sender",
        REC_RCPT | REC_DONE => "recipient",
        REC_CONTENT => "content",
        REC_END => "end marker",
        _ => "unknown",
    }
}

fn utf8(kind: u8, data: &[u8]) -> Result<String, QueueError> {
    String::from_utf8(data.to_vec())
        .map_err(|_| corrupt(format!("{} record is not valid UTF-8", record_name(kind))))
}

fn parse_time(data: &[u8]) -> Result<SystemTime, QueueError> {
    let bad = || corrupt("bad arrival time record");
    let text = std::str::from_utf8(data).map_err(|_| bad())?;
    let (secs, micros) = text.split_once('.').ok_or_else(bad)?;
    let digits = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
    if !digits(secs) || secs.len() > 20 || micros.len() != 6 || !digits(micros) {
        return Err(bad());
    }
    let secs: u64 = secs.parse().map_err(|_| bad())?;
    let micros: u64 = micros.parse().map_err(|_| bad())?;
    UNIX_EPOCH
        .checked_add(Duration::from_secs(secs))
        .and_then(|t| t.checked_add(Duration::from_micros(micros)))
        .ok_or_else(bad)
}

/// One recipient record's text: v1 "ADDRESS\0ORIGINAL", v2 adds
/// "\0NOTIFY\0ORCPT" (each possibly empty).
fn parse_recipient(version: u8, text: &str) -> Result<Recipient, QueueError> {
    let bad = || corrupt("bad recipient record");
    let fields: Vec<&str> = text.split('\0').collect();
    let (address, original, notify, orcpt) = match (version, fields.as_slice()) {
        (1, [a, o]) => (*a, *o, "", ""),
        (2, [a, o, n, r]) => (*a, *o, *n, *r),
        _ => return Err(bad()),
    };
    let address =
        Mailbox::parse(address).map_err(|e| corrupt(format!("bad recipient address: {e}")))?;
    let notify = match notify {
        "" => None,
        n => Some(Notify::parse(n).ok_or_else(|| corrupt("bad recipient NOTIFY"))?),
    };
    let orcpt = match orcpt {
        "" => None,
        o => Some(Orcpt::parse_decoded(o).ok_or_else(|| corrupt("bad recipient ORCPT"))?),
    };
    Ok(Recipient {
        address,
        original: original.to_owned(),
        notify,
        orcpt,
        done: false,
    })
}

/// Parses and validates a whole queue file. Reads the envelope records into
/// memory, but only checks the bounds of the content.
pub(crate) fn parse<S: Source + ?Sized>(src: &S) -> Result<Parsed, QueueError> {
    let len = src.total_len()?;
    if len == 0 {
        // The usual leftover of a crash before anything was written.
        return Err(corrupt("empty file"));
    }
    let mut cur = Cursor {
        src,
        len,
        buf: Vec::new(),
        buf_start: 0,
    };

    let head_len = len.min(HEADER_LEN);
    let head = cur.get(0, head_len, "truncated header")?;
    let magic_len = head.len().min(MAGIC.len());
    if head[..magic_len] != MAGIC[..magic_len] {
        return Err(corrupt("bad magic"));
    }
    if head.len() < HEADER_LEN as usize {
        return Err(corrupt("truncated header"));
    }
    let version = head[8];
    if !(OLDEST_VERSION..=VERSION).contains(&version) {
        return Err(corrupt(format!("unsupported version {version}")));
    }

    let mut pos = HEADER_LEN;
    let mut arrival = None;
    let mut sender = None;
    let mut attributes = Vec::new();
    let mut recipients = Vec::new();
    let mut rcpt_offsets = Vec::new();

    // Envelope records, up to and including the content record.
    let (content_offset, content_len) = loop {
        if pos == len {
            return Err(corrupt("missing content record"));
        }
        let kind = cur.get(pos, 1, "truncated record")?[0];
        match kind {
            REC_CONTENT => {
                let raw = cur.get(pos + 1, 8, "truncated content record")?;
                let mut n = [0u8; 8];
                n.copy_from_slice(raw);
                let clen = u64::from_be_bytes(n);
                let start = pos + 9;
                match start.checked_add(clen) {
                    Some(end) if end <= len => break (start, clen),
                    _ => return Err(corrupt("truncated content")),
                }
            }
            REC_TIME | REC_ATTR | REC_SENDER | REC_RCPT | REC_DONE => {}
            REC_END => return Err(corrupt("missing content record")),
            other => return Err(corrupt(format!("unknown record type 0x{other:02x}"))),
        }
        let raw = cur.get(pos + 1, 4, "truncated record")?;
        let mut n = [0u8; 4];
        n.copy_from_slice(raw);
        let dlen = u32::from_be_bytes(n);
        if dlen > MAX_RECORD_LEN {
            return Err(corrupt(format!("{} record too long", record_name(kind))));
        }
        let data = cur.get(pos + 5, u64::from(dlen), "truncated record")?;
        match kind {
            REC_TIME => {
                if arrival.is_some() {
                    return Err(corrupt("duplicate arrival time record"));
                }
                arrival = Some(parse_time(data)?);
            }
            REC_ATTR => {
                let text = utf8(kind, data)?;
                match text.split_once('=') {
                    Some((n, v)) if !n.is_empty() => attributes.push((n.to_owned(), v.to_owned())),
                    _ => return Err(corrupt("bad attribute record")),
                }
            }
            REC_SENDER => {
                if sender.is_some() {
                    return Err(corrupt("duplicate sender record"));
                }
                let text = utf8(kind, data)?;
                let parsed = ReversePath::parse_bare(&text)
                    .map_err(|e| corrupt(format!("bad sender address: {e}")))?;
                sender = Some(parsed);
            }
            _ => {
                let text = utf8(kind, data)?;
                let mut r = parse_recipient(version, &text)?;
                r.done = kind == REC_DONE;
                rcpt_offsets.push(pos);
                recipients.push(r);
            }
        }
        pos += 5 + u64::from(dlen);
    };

    // After the content: exactly one end marker, then nothing.
    pos = content_offset + content_len;
    if pos == len {
        return Err(corrupt("missing end marker"));
    }
    let kind = cur.get(pos, 1, "truncated record")?[0];
    match kind {
        REC_END => {}
        REC_CONTENT => return Err(corrupt("duplicate content record")),
        REC_TIME | REC_ATTR | REC_SENDER | REC_RCPT | REC_DONE => {
            return Err(corrupt("envelope record after content"));
        }
        other => return Err(corrupt(format!("unknown record type 0x{other:02x}"))),
    }
    let raw = cur.get(pos + 1, 4, "truncated end marker")?;
    if raw != [0, 0, 0, 0] {
        return Err(corrupt("end marker with non-zero length"));
    }
    if pos + 5 != len {
        return Err(corrupt("trailing bytes after end marker"));
    }

    let arrival = arrival.ok_or_else(|| corrupt("missing arrival time record"))?;
    let sender = sender.ok_or_else(|| corrupt("missing sender record"))?;
    if recipients.is_empty() {
        return Err(corrupt("no recipient"));
    }
    Ok(Parsed {
        version,
        envelope: Envelope {
            arrival,
            sender,
            recipients,
            attributes,
        },
        rcpt_offsets,
        content_offset,
        content_len,
    })
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use proptest::prelude::*;

    pub(crate) fn sample_envelope() -> Envelope {
        Envelope {
            arrival: UNIX_EPOCH + Duration::from_micros(1_700_000_000_654_321),
            sender: "alice@example.org".parse().unwrap(),
            recipients: vec![
                Recipient {
                    address: "bob@example.net".parse().unwrap(),
                    original: "Bob@Example.NET".into(),
                    notify: None,
                    orcpt: None,
                    done: false,
                },
                Recipient {
                    address: "carol@example.net".parse().unwrap(),
                    original: "".into(),
                    notify: None,
                    orcpt: None,
                    done: true,
                },
                Recipient {
                    address: "dave@example.net".parse().unwrap(),
                    original: "dave@example.net".into(),
                    notify: None,
                    orcpt: None,
                    done: false,
                },
            ],
            attributes: vec![
                ("client_name".into(), "mx.example.org".into()),
                ("client_address".into(), "192.0.2.1".into()),
                ("helo_name".into(), "a=b=c".into()),
                ("client_name".into(), "second".into()),
            ],
        }
    }

    /// A complete valid file built in memory, without the writer.
    pub(crate) fn build(env: &Envelope, content: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        out.extend_from_slice(MAGIC);
        out.push(VERSION);
        out.extend(encode_envelope(env).expect("encode").0);
        out.push(REC_CONTENT);
        out.extend_from_slice(&(content.len() as u64).to_be_bytes());
        out.extend_from_slice(content);
        out.extend_from_slice(&[REC_END, 0, 0, 0, 0]);
        out
    }

    fn rec(kind: u8, data: &[u8]) -> Vec<u8> {
        let mut v = vec![kind];
        v.extend_from_slice(&(data.len() as u32).to_be_bytes());
        v.extend_from_slice(data);
        v
    }

    /// A version 1 file of the given records (the corrupt-file table uses
    /// v1 recipient records, which also proves v1 files are still read).
    fn file_of(parts: &[&[u8]]) -> Vec<u8> {
        file_of_version(1, parts)
    }

    fn file_of_version(version: u8, parts: &[&[u8]]) -> Vec<u8> {
        let mut v = Vec::new();
        v.extend_from_slice(MAGIC);
        v.push(version);
        for p in parts {
            v.extend_from_slice(p);
        }
        v
    }

    fn content(bytes: &[u8]) -> Vec<u8> {
        let mut v = vec![REC_CONTENT];
        v.extend_from_slice(&(bytes.len() as u64).to_be_bytes());
        v.extend_from_slice(bytes);
        v
    }

    const END: &[u8] = &[REC_END, 0, 0, 0, 0];

    #[test]
    fn parse_round_trips_sample() {
        let env = sample_envelope();
        let bytes = build(&env, b"Subject: x\n\nbody\n");
        let p = parse(&bytes[..]).expect("parse");
        assert_eq!(p.envelope, env);
        assert_eq!(p.envelope.attribute("client_name"), Some("mx.example.org"));
        assert_eq!(p.envelope.attribute("helo_name"), Some("a=b=c"));
        assert_eq!(p.envelope.attribute("nope"), None);
        let start = p.content_offset as usize;
        assert_eq!(
            &bytes[start..start + p.content_len as usize],
            b"Subject: x\n\nbody\n"
        );
        for (i, off) in p.rcpt_offsets.iter().enumerate() {
            let expect = if env.recipients[i].done {
                REC_DONE
            } else {
                REC_RCPT
            };
            assert_eq!(bytes[*off as usize], expect);
        }
    }

    #[test]
    fn encoder_refuses_what_reader_cannot_read_back() {
        let mut e = sample_envelope();
        e.recipients.clear();
        assert_eq!(
            encode_envelope(&e).unwrap_err().kind(),
            io::ErrorKind::InvalidInput
        );
        let mut e = sample_envelope();
        e.recipients[0].orcpt = Some(Orcpt {
            addr_type: "rfc822".into(),
            address: "a\0b".into(),
        });
        assert!(encode_envelope(&e).is_err());
        let mut e = sample_envelope();
        e.recipients[0].orcpt = Some(Orcpt {
            addr_type: "rfc 822".into(),
            address: "a@b".into(),
        });
        assert!(
            encode_envelope(&e).is_err(),
            "an ORCPT type that would not read back"
        );
        let mut e = sample_envelope();
        e.recipients[0].original = "a\0b".into();
        assert!(encode_envelope(&e).is_err());
        let mut e = sample_envelope();
        e.attributes.push(("a=b".into(), "c".into()));
        assert!(encode_envelope(&e).is_err());
        let mut e = sample_envelope();
        e.attributes.push(("".into(), "c".into()));
        assert!(encode_envelope(&e).is_err());
        let mut e = sample_envelope();
        e.sender = ReversePath::Mailbox(Mailbox {
            local_part: "x".repeat(MAX_RECORD_LEN as usize + 1),
            domain: "example.org".into(),
        });
        assert!(encode_envelope(&e).is_err());
        let mut e = sample_envelope();
        e.arrival = UNIX_EPOCH - Duration::from_secs(1);
        assert!(encode_envelope(&e).is_err());
    }

    #[test]
    fn null_sender_and_nanoseconds() {
        let mut e = sample_envelope();
        e.sender = ReversePath::Null;
        e.arrival = UNIX_EPOCH + Duration::new(1_700_000_000, 123_456_789);
        let bytes = build(&e, b"");
        let p = parse(&bytes[..]).expect("parse");
        assert_eq!(p.envelope.sender, ReversePath::Null);
        // Stored as an empty sender record.
        assert!(bytes.windows(5).any(|w| w == [REC_SENDER, 0, 0, 0, 0]));
        assert_eq!(
            p.envelope.arrival,
            UNIX_EPOCH + Duration::new(1_700_000_000, 123_456_000)
        );
        assert_eq!(p.content_len, 0);
    }

    #[test]
    fn corrupt_table() {
        let t = rec(REC_TIME, b"1700000000.000001");
        let s = rec(REC_SENDER, b"a@b");
        let r = rec(REC_RCPT, b"c@d\0C@D");
        let m = content(b"hi\n");
        let ok = file_of(&[&t, &s, &r, &m, END]);
        assert!(parse(&ok[..]).is_ok(), "baseline must parse");

        let mut bad_version = ok.clone();
        bad_version[8] = 3;
        let mut version_zero = ok.clone();
        version_zero[8] = 0;
        let mut bad_end_len = ok.clone();
        let n = bad_end_len.len();
        bad_end_len[n - 1] = 1;
        let mut trailing = ok.clone();
        trailing.push(0);
        let mut dup_end = ok.clone();
        dup_end.extend_from_slice(END);
        let mut long_content = file_of(&[&t, &s, &r]);
        long_content.push(REC_CONTENT);
        long_content.extend_from_slice(&u64::MAX.to_be_bytes());
        long_content.extend_from_slice(END);
        let mut huge = file_of(&[&t, &s]);
        huge.push(REC_RCPT);
        huge.extend_from_slice(&(MAX_RECORD_LEN + 1).to_be_bytes());
        let mut short_len = file_of(&[&t, &s, &r]);
        short_len.extend_from_slice(&[REC_SENDER, 0, 0]);

        let cases: Vec<(&str, Vec<u8>, &str)> = vec![
            ("empty file", vec![], "empty file"),
            ("short magic", b"POST".to_vec(), "truncated header"),
            ("wrong magic", b"POSTFIXQ\x01".to_vec(), "bad magic"),
            ("no version", MAGIC.to_vec(), "truncated header"),
            ("version 3", bad_version, "unsupported version 3"),
            ("version 0", version_zero, "unsupported version 0"),
            (
                "v1 record in a v2 file",
                file_of_version(2, &[&t, &s, &r, &m, END]),
                "bad recipient record",
            ),
            (
                "v2 bad NOTIFY",
                file_of_version(2, &[&t, &s, &rec(REC_RCPT, b"c@d\0\0SOMETIMES\0"), &m, END]),
                "bad recipient NOTIFY",
            ),
            (
                "v2 bad ORCPT",
                file_of_version(
                    2,
                    &[&t, &s, &rec(REC_RCPT, b"c@d\0\0\0noseparator"), &m, END],
                ),
                "bad recipient ORCPT",
            ),
            (
                "unqualified recipient",
                file_of(&[&t, &s, &rec(REC_RCPT, b"joe\0joe"), &m, END]),
                "bad recipient address: address has no domain",
            ),
            (
                "bad sender",
                file_of(&[&t, &rec(REC_SENDER, b"<a@b>"), &r, &m, END]),
                "bad sender address: bad address syntax",
            ),
            ("header only", file_of(&[]), "missing content record"),
            (
                "unknown type",
                file_of(&[&t, &rec(b'X', b""), &s, &r, &m, END]),
                "unknown record type 0x58",
            ),
            ("truncated len", short_len, "truncated record"),
            (
                "truncated data",
                file_of(&[&t, &s, &r[..r.len() - 2]]),
                "truncated record",
            ),
            ("record too long", huge, "recipient record too long"),
            (
                "no content",
                file_of(&[&t, &s, &r, END]),
                "missing content record",
            ),
            (
                "dup content",
                file_of(&[&t, &s, &r, &m, &m, END]),
                "duplicate content record",
            ),
            ("content too long", long_content, "truncated content"),
            (
                "short content len",
                file_of(&[&t, &s, &r, &[REC_CONTENT, 0, 0]]),
                "truncated content record",
            ),
            (
                "envelope after content",
                file_of(&[&t, &s, &m, &r, END]),
                "envelope record after content",
            ),
            (
                "junk after content",
                file_of(&[&t, &s, &r, &m, b"Z"]),
                "unknown record type 0x5a",
            ),
            ("no end", file_of(&[&t, &s, &r, &m]), "missing end marker"),
            (
                "truncated end",
                file_of(&[&t, &s, &r, &m, &END[..3]]),
                "truncated end marker",
            ),
            (
                "end with length",
                bad_end_len,
                "end marker with non-zero length",
            ),
            ("trailing byte", trailing, "trailing bytes after end marker"),
            ("dup end", dup_end, "trailing bytes after end marker"),
            (
                "no time",
                file_of(&[&s, &r, &m, END]),
                "missing arrival time record",
            ),
            (
                "dup time",
                file_of(&[&t, &t, &s, &r, &m, END]),
                "duplicate arrival time record",
            ),
            (
                "no sender",
                file_of(&[&t, &r, &m, END]),
                "missing sender record",
            ),
            (
                "dup sender",
                file_of(&[&t, &s, &s, &r, &m, END]),
                "duplicate sender record",
            ),
            ("no recipient", file_of(&[&t, &s, &m, END]), "no recipient"),
            (
                "rcpt no NUL",
                file_of(&[&t, &s, &rec(REC_RCPT, b"c@d"), &m, END]),
                "bad recipient record",
            ),
            (
                "rcpt two NUL",
                file_of(&[&t, &s, &rec(REC_RCPT, b"c\0d\0e"), &m, END]),
                "bad recipient record",
            ),
            (
                "rcpt not utf8",
                file_of(&[&t, &s, &rec(REC_RCPT, b"\xff\0x"), &m, END]),
                "recipient record is not valid UTF-8",
            ),
            (
                "sender not utf8",
                file_of(&[&t, &rec(REC_SENDER, b"\xc3"), &r, &m, END]),
                "sender record is not valid UTF-8",
            ),
            (
                "attr no =",
                file_of(&[&t, &rec(REC_ATTR, b"novalue"), &s, &r, &m, END]),
                "bad attribute record",
            ),
            (
                "attr empty name",
                file_of(&[&t, &rec(REC_ATTR, b"=v"), &s, &r, &m, END]),
                "bad attribute record",
            ),
            (
                "time no dot",
                file_of(&[&rec(REC_TIME, b"1700000000"), &s, &r, &m, END]),
                "bad arrival time record",
            ),
            (
                "time short micros",
                file_of(&[&rec(REC_TIME, b"17.5"), &s, &r, &m, END]),
                "bad arrival time record",
            ),
            (
                "time sign",
                file_of(&[&rec(REC_TIME, b"+17.000000"), &s, &r, &m, END]),
                "bad arrival time record",
            ),
            (
                "time overflow",
                file_of(&[
                    &rec(REC_TIME, b"99999999999999999999.000000"),
                    &s,
                    &r,
                    &m,
                    END,
                ]),
                "bad arrival time record",
            ),
        ];
        for (name, bytes, reason) in cases {
            match parse(&bytes[..]) {
                Err(QueueError::Corrupt(r)) => assert_eq!(r, reason, "case {name}"),
                other => panic!("case {name}: expected Corrupt({reason}), got {other:?}"),
            }
        }
    }

    #[test]
    fn error_display() {
        assert_eq!(
            corrupt("bad magic").to_string(),
            "corrupt queue file: bad magic"
        );
        let e = QueueError::from(io::Error::other("boom"));
        assert!(e.to_string().contains("boom"));
        assert!(std::error::Error::source(&e).is_some());
    }

    proptest! {
        #[test]
        fn random_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
            let _ = parse(&bytes[..]);
        }

        #[test]
        fn random_bytes_after_header_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
            let mut v = file_of(&[]);
            v.extend_from_slice(&bytes);
            let _ = parse(&v[..]);
        }

        #[test]
        fn truncation_is_always_corrupt(
            body in proptest::collection::vec(any::<u8>(), 0..300),
            cut in any::<prop::sample::Index>(),
        ) {
            let full = build(&sample_envelope(), &body);
            let at = cut.index(full.len());
            match parse(&full[..at]) {
                Err(QueueError::Corrupt(_)) => {}
                other => prop_assert!(false, "truncated at {} of {}: {:?}", at, full.len(), other),
            }
        }

        #[test]
        fn bit_flips_never_panic(
            body in proptest::collection::vec(any::<u8>(), 0..300),
            flips in proptest::collection::vec((any::<prop::sample::Index>(), 0u8..8), 1..4),
        ) {
            let mut v = build(&sample_envelope(), &body);
            for (i, bit) in flips {
                let at = i.index(v.len());
                v[at] ^= 1 << bit;
            }
            let _ = parse(&v[..]);
        }

        #[test]
        fn encode_parse_round_trip(
            sender in "([a-z.]{1,10}@[a-z]{1,8}\\.[a-z]{2,3})?",
            rcpts in proptest::collection::vec((
                "[a-z.+]{1,10}@[a-z]{1,8}\\.[a-z]{2,3}",
                "[^\u{0}]{0,20}",
                any::<bool>(),
                proptest::option::of((any::<bool>(), any::<bool>(), any::<bool>())),
                proptest::option::of("[ -~é]{1,20}"),
            ), 1..6),
            attrs in proptest::collection::vec(("[a-z_]{1,12}", "[^\u{0}]{0,20}"), 0..6),
            micros in 0u64..4_000_000_000_000_000,
            body in proptest::collection::vec(any::<u8>(), 0..200),
        ) {
            let env = Envelope {
                arrival: UNIX_EPOCH + Duration::from_micros(micros),
                sender: match Mailbox::parse(&sender) {
                    Ok(m) => ReversePath::Mailbox(m),
                    Err(_) => ReversePath::Null,
                },
                recipients: rcpts.into_iter().filter_map(|(address, original, done, notify, orcpt)| Some(Recipient {
                    address: Mailbox::parse(&address).ok()?,
                    original,
                    notify: notify.map(|(success, failure, delay)| if success || failure || delay {
                        Notify::On { success, failure, delay }
                    } else {
                        Notify::Never
                    }),
                    orcpt: orcpt.map(|address| Orcpt { addr_type: "rfc822".into(), address }),
                    done,
                })).collect(),
                attributes: attrs,
            };
            prop_assume!(!env.recipients.is_empty());
            let bytes = build(&env, &body);
            let p = parse(&bytes[..]).expect("valid file parses");
            prop_assert_eq!(p.version, VERSION);
            prop_assert_eq!(p.envelope, env);
            let s = p.content_offset as usize;
            prop_assert_eq!(&bytes[s..s + p.content_len as usize], &body[..]);
        }
    }
}
