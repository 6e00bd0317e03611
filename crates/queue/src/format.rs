//! Queue file format v1: the envelope types, the encoder and the strict parser.
//!
//! Layout (documented byte by byte in docs/queue.md):
//!
//! ```text
//! "POSTERNQ" 0x01
//! [type u8][len u32 BE][data]        T, A*, S, R|D*  (envelope records)
//! 'M' [len u64 BE][content bytes]    exactly one, after the envelope
//! 'E' 00 00 00 00                    end marker; nothing may follow
//! ```
//!
//! The parser trusts nothing: every length is checked against the file size
//! before anything is read or allocated, and every defect is reported as
//! [`QueueError::Corrupt`] with a specific reason. It never panics.

use std::fmt;
use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// First eight bytes of every queue file.
pub const MAGIC: &[u8; 8] = b"POSTERNQ";
/// The format version this crate writes and reads.
pub const VERSION: u8 = 1;
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
/// Record type: recipient still to deliver, "ADDRESS\0ORIGINAL".
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
    pub address: String,
    /// The address as the client gave it (for DSN ORCPT and logs).
    pub original: String,
    /// True once a delivery agent reported success (or a final bounce was sent).
    pub done: bool,
}

/// Everything about a message except its content.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Envelope {
    /// When the message was accepted. Stored with microsecond precision.
    pub arrival: SystemTime,
    /// Envelope sender, "" for the null sender.
    pub sender: String,
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
    /// The file is not a valid v1 queue file; move it to corrupt/.
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
    push_record(&mut out, REC_SENDER, env.sender.as_bytes())?;
    let mut offsets = Vec::with_capacity(env.recipients.len());
    for r in &env.recipients {
        if r.address.contains('\0') || r.original.contains('\0') {
            return Err(invalid("recipient contains a NUL byte"));
        }
        let data = [r.address.as_bytes(), b"\0", r.original.as_bytes()].concat();
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
    if head[8] != VERSION {
        return Err(corrupt(format!("unsupported version {}", head[8])));
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
                sender = Some(utf8(kind, data)?);
            }
            _ => {
                let text = utf8(kind, data)?;
                match text.split_once('\0') {
                    Some((a, o)) if !o.contains('\0') => {
                        rcpt_offsets.push(pos);
                        recipients.push(Recipient {
                            address: a.to_owned(),
                            original: o.to_owned(),
                            done: kind == REC_DONE,
                        });
                    }
                    _ => return Err(corrupt("bad recipient record")),
                }
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
            sender: "alice@example.org".into(),
            recipients: vec![
                Recipient {
                    address: "bob@example.net".into(),
                    original: "Bob@Example.NET".into(),
                    done: false,
                },
                Recipient {
                    address: "carol@example.net".into(),
                    original: "".into(),
                    done: true,
                },
                Recipient {
                    address: "dave@example.net".into(),
                    original: "dave@example.net".into(),
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

    fn file_of(parts: &[&[u8]]) -> Vec<u8> {
        let mut v = Vec::new();
        v.extend_from_slice(MAGIC);
        v.push(VERSION);
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
        e.recipients[0].address = "a\0b".into();
        assert!(encode_envelope(&e).is_err());
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
        e.sender = "x".repeat(MAX_RECORD_LEN as usize + 1);
        assert!(encode_envelope(&e).is_err());
        let mut e = sample_envelope();
        e.arrival = UNIX_EPOCH - Duration::from_secs(1);
        assert!(encode_envelope(&e).is_err());
    }

    #[test]
    fn null_sender_and_nanoseconds() {
        let mut e = sample_envelope();
        e.sender = String::new();
        e.arrival = UNIX_EPOCH + Duration::new(1_700_000_000, 123_456_789);
        let p = parse(&build(&e, b"")[..]).expect("parse");
        assert_eq!(p.envelope.sender, "");
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
        bad_version[8] = 2;
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
            ("version 2", bad_version, "unsupported version 2"),
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
            sender in "[ -~]{0,40}",
            rcpts in proptest::collection::vec(("[a-z@.]{0,20}", "[^\u{0}]{0,20}", any::<bool>()), 1..6),
            attrs in proptest::collection::vec(("[a-z_]{1,12}", "[^\u{0}]{0,20}"), 0..6),
            micros in 0u64..4_000_000_000_000_000,
            body in proptest::collection::vec(any::<u8>(), 0..200),
        ) {
            let env = Envelope {
                arrival: UNIX_EPOCH + Duration::from_micros(micros),
                sender,
                recipients: rcpts.into_iter().map(|(address, original, done)| Recipient { address, original, done }).collect(),
                attributes: attrs,
            };
            let bytes = build(&env, &body);
            let p = parse(&bytes[..]).expect("valid file parses");
            prop_assert_eq!(p.envelope, env);
            let s = p.content_offset as usize;
            prop_assert_eq!(&bytes[s..s + p.content_len as usize], &body[..]);
        }
    }
}
