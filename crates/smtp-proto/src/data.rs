//! The DATA phase (RFC 5321 sections 4.1.1.4 and 4.5.2): finding the end of
//! the message, dot-unstuffing, and the reverse for sending.
//!
//! ```text
//! data-content = *( line CRLF ) "." CRLF   ; the terminator is CRLF "." CRLF
//! line         = [ "." ] *OCTET            ; a leading "." is removed (unstuffing)
//! ```
//!
//! The end of data is ONLY `CRLF "." CRLF`, where the first CRLF may be the
//! one that ended the DATA command (so `".\r\n"` first thing is an empty
//! message). A bare LF or a bare CR never ends the message and never starts
//! a line for dot-unstuffing purposes: they are content bytes, recorded in
//! [`DataDecoder::saw_bare_lf`] / [`DataDecoder::saw_bare_cr`]. This is what
//! defeats SMTP smuggling (`"\n.\n"`, `"\r.\r"`, `"\n.\r\n"`, `"\r\n.\n"`
//! and `"\r.\r\n"` all stay inside the message).
//!
//! The decoder is a byte-at-a-time state machine, so the way the input is
//! split into feeds never changes the result (a proptest checks this).

/// Where the decoder is, relative to lines.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum State {
    /// Just after CRLF (or at the start of data).
    LineStart,
    /// A "." at the start of a line: removed; the end if CRLF follows.
    Dot,
    /// "." CR at the start of a line: the end if LF follows.
    DotCr,
    /// Inside a line.
    Middle,
    /// A CR inside a line (or at its start): a line end if LF follows.
    Cr,
    /// The terminator was seen.
    Done,
}

/// What a call to [`DataDecoder::feed`] achieved.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DataProgress {
    /// All input was content; the terminator has not been seen yet.
    NeedMore,
    /// The terminator was seen. `consumed` counts the bytes of THIS feed's
    /// input up to and including the terminator; the rest is pipelined
    /// commands that the caller must handle.
    Done {
        /// Bytes of this feed's input used.
        consumed: usize,
    },
}

/// Decodes the DATA phase into LF-normalized content: each CRLF becomes
/// "\n", a leading "." after CRLF is removed, every other byte (8-bit, NUL,
/// bare CR, bare LF) is passed through unchanged. See the module docs.
#[derive(Clone, Debug)]
pub struct DataDecoder {
    state: State,
    max_size: u64,
    size: u64,
    too_big: bool,
    bare_lf: bool,
    bare_cr: bool,
    line_len: usize,
    longest_line: usize,
}

impl DataDecoder {
    /// A decoder for one message. `max_size`: message octets as they came
    /// over the wire (CRLF counts two, stuffing dots none: RFC 1870 and
    /// Postfix count this way) beyond which content is no longer appended
    /// to `out`, though the end is still found; 0 = unlimited.
    pub fn new(max_size: u64) -> Self {
        DataDecoder {
            state: State::LineStart,
            max_size,
            size: 0,
            too_big: false,
            bare_lf: false,
            bare_cr: false,
            line_len: 0,
            longest_line: 0,
        }
    }

    /// Decodes `input`, appending content to `out`. After `Done`, further
    /// calls consume nothing and return `Done { consumed: 0 }`.
    pub fn feed(&mut self, input: &[u8], out: &mut Vec<u8>) -> DataProgress {
        if self.state == State::Done {
            return DataProgress::Done { consumed: 0 };
        }
        for (i, &b) in input.iter().enumerate() {
            self.step(b, out);
            if self.state == State::Done {
                return DataProgress::Done { consumed: i + 1 };
            }
        }
        DataProgress::NeedMore
    }

    fn step(&mut self, b: u8, out: &mut Vec<u8>) {
        match self.state {
            State::LineStart => match b {
                b'.' => self.state = State::Dot,
                _ => self.middle(b, out),
            },
            State::Dot => match b {
                b'\r' => self.state = State::DotCr,
                // The "." was stuffing: drop it, the byte is content.
                _ => self.middle(b, out),
            },
            State::DotCr => match b {
                b'\n' => self.state = State::Done,
                _ => {
                    // ".", bare CR, then more: dot removed, CR is content.
                    self.bare_cr(out);
                    self.middle(b, out);
                }
            },
            State::Middle => self.middle(b, out),
            State::Cr => match b {
                b'\n' => {
                    // CRLF: one "\n" of content, two octets on the wire.
                    self.size = self.size.saturating_add(1);
                    self.emit(b'\n', out);
                    self.state = State::LineStart;
                }
                _ => {
                    self.bare_cr(out);
                    self.middle(b, out);
                }
            },
            State::Done => {}
        }
    }

    /// A byte inside a line (also the first one that is not "." or CR).
    fn middle(&mut self, b: u8, out: &mut Vec<u8>) {
        match b {
            b'\r' => self.state = State::Cr,
            b'\n' => {
                // Bare LF: content, and not a line start for unstuffing.
                self.bare_lf = true;
                self.emit(b'\n', out);
                self.state = State::Middle;
            }
            _ => {
                self.emit(b, out);
                self.state = State::Middle;
            }
        }
    }

    fn bare_cr(&mut self, out: &mut Vec<u8>) {
        self.bare_cr = true;
        self.emit(b'\r', out);
    }

    fn emit(&mut self, b: u8, out: &mut Vec<u8>) {
        self.size = self.size.saturating_add(1);
        if self.max_size != 0 && self.size > self.max_size {
            self.too_big = true;
        } else {
            out.push(b);
        }
        if b == b'\n' {
            self.line_len = 0;
        } else {
            self.line_len = self.line_len.saturating_add(1);
            self.longest_line = self.longest_line.max(self.line_len);
        }
    }

    /// Message size counted so far (even past the limit), in octets as
    /// received: each CRLF counts two although it becomes one "\n" of
    /// content, a stuffing dot counts none, the terminator is not counted.
    pub fn size(&self) -> u64 {
        self.size
    }

    /// True once content went past `max_size` (and was no longer appended).
    pub fn too_big(&self) -> bool {
        self.too_big
    }

    /// True if a LF not preceded by CR was seen.
    pub fn saw_bare_lf(&self) -> bool {
        self.bare_lf
    }

    /// True if a CR not followed by LF was seen.
    pub fn saw_bare_cr(&self) -> bool {
        self.bare_cr
    }

    /// Length of the longest content line, in bytes, without its "\n".
    pub fn longest_line(&self) -> usize {
        self.longest_line
    }

    /// True once the terminating `CRLF "." CRLF` was seen.
    pub fn is_done(&self) -> bool {
        self.state == State::Done
    }
}

/// Dot-stuffs LF-normalized content for sending (for the SMTP client and
/// tests): each line gets CRLF instead of LF; a line starting with "." gets
/// another "."; a final line without LF gets CRLF; then ".\r\n" is appended.
///
/// A CR in the content is kept as it is. This can never produce a premature
/// `CRLF "." CRLF`: every CRLF written here ends a line, and every line that
/// starts with "." has it doubled, so a "." directly after a CRLF is always
/// followed by another "." or by the rest of the line. Decoding the output
/// with [`DataDecoder`] gives back the content exactly when it is empty or
/// ends with LF (otherwise a final LF is added).
pub fn dot_stuff(content: &[u8], out: &mut Vec<u8>) {
    let mut rest = content;
    while !rest.is_empty() {
        let (line, next) = match rest.iter().position(|&b| b == b'\n') {
            Some(i) => (&rest[..i], &rest[i + 1..]),
            None => (rest, &rest[rest.len()..]),
        };
        if line.first() == Some(&b'.') {
            out.push(b'.');
        }
        out.extend_from_slice(line);
        out.extend_from_slice(b"\r\n");
        rest = next;
    }
    out.extend_from_slice(b".\r\n");
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// Decodes a whole input; returns (content, consumed if done).
    fn decode(input: &[u8]) -> (Vec<u8>, Option<usize>, DataDecoder) {
        let mut d = DataDecoder::new(0);
        let mut out = Vec::new();
        let done = match d.feed(input, &mut out) {
            DataProgress::Done { consumed } => Some(consumed),
            DataProgress::NeedMore => None,
        };
        (out, done, d)
    }

    #[test]
    fn simple_message() {
        let (out, done, d) = decode(b"Subject: x\r\n\r\nbody\r\n.\r\nQUIT\r\n");
        assert_eq!(out, b"Subject: x\n\nbody\n");
        assert_eq!(done, Some(23));
        assert!(!d.saw_bare_cr() && !d.saw_bare_lf());
        assert_eq!(d.size(), 20);
        assert_eq!(d.longest_line(), 10);
    }

    #[test]
    fn empty_message() {
        let (out, done, _) = decode(b".\r\nQUIT\r\n");
        assert!(out.is_empty());
        assert_eq!(done, Some(3));
    }

    #[test]
    fn unstuffing() {
        assert_eq!(decode(b"a\r\n..x\r\n.\r\n").0, b"a\n.x\n");
        assert_eq!(decode(b"..\r\n.\r\n").0, b".\n");
        assert_eq!(decode(b".x\r\n.\r\n").0, b"x\n");
        assert_eq!(decode(b"a.b\r\n .\r\n.\r\n").0, b"a.b\n .\n");
    }

    #[test]
    fn smuggling_vectors_never_end_data() {
        for vector in [
            &b"\n.\n"[..],
            b"\r.\r",
            b"\n.\r\n",
            b"\r\n.\n",
            b"\r.\r\n",
            b"\r\n.\r",
            b"\n.\r",
        ] {
            let mut input = b"x".to_vec();
            input.extend_from_slice(vector);
            input.extend_from_slice(b"MAIL FROM:<evil@x>\r\n");
            let (out, done, d) = decode(&input);
            assert_eq!(done, None, "{vector:?} ended data");
            assert!(d.saw_bare_lf() || d.saw_bare_cr(), "{vector:?} not flagged");
            assert!(out.ends_with(b"MAIL FROM:<evil@x>\n"));
            let mut input = input.clone();
            input.extend_from_slice(b".\r\n");
            assert!(decode(&input).1.is_some(), "{vector:?} then a proper end");
        }
    }

    #[test]
    fn bare_bytes_pass_through() {
        let (out, done, d) = decode(b"a\rb\nc\0\xff\r\n.\r\n");
        assert_eq!(out, b"a\rb\nc\0\xff\n");
        assert!(done.is_some());
        assert!(d.saw_bare_cr());
        assert!(d.saw_bare_lf());
        let (out, _, d) = decode(b"a\r\r\n.\r\n");
        assert_eq!(out, b"a\r\n");
        assert!(d.saw_bare_cr());
        assert!(!d.saw_bare_lf());
        let (out, _, _) = decode(b".\rx\r\n.\r\n");
        assert_eq!(out, b"\rx\n");
    }

    #[test]
    fn size_limit() {
        let mut d = DataDecoder::new(5);
        let mut out = Vec::new();
        assert_eq!(d.feed(b"abc\r\ndef\r\n", &mut out), DataProgress::NeedMore);
        // "abc" CRLF is five octets on the wire: within the limit.
        assert_eq!(out, b"abc\n");
        assert!(d.too_big());
        assert_eq!(
            d.feed(b"ghi\r\n.\r\nQUIT\r\n", &mut out),
            DataProgress::Done { consumed: 8 }
        );
        assert_eq!(out, b"abc\n");
        assert_eq!(d.size(), 15);
        assert!(d.is_done());
        assert_eq!(
            d.feed(b"more", &mut out),
            DataProgress::Done { consumed: 0 }
        );
        let mut d = DataDecoder::new(5);
        let mut out = Vec::new();
        d.feed(b"abc\r\n.\r\n", &mut out);
        assert!(!d.too_big());
        assert_eq!(out, b"abc\n");
        let mut d = DataDecoder::new(4);
        d.feed(b"abc\r\n.\r\n", &mut Vec::new());
        assert!(d.too_big(), "the CR of CRLF counts");
    }

    #[test]
    fn size_counts_octets_on_the_wire() {
        // Short lines: the LF-normalized content is half the wire size, and
        // the limit applies to the wire size (RFC 1870, Postfix).
        let wire = b"a\r\n".repeat(100);
        let mut input = wire.clone();
        input.extend_from_slice(b".\r\n");
        let mut d = DataDecoder::new(250);
        let mut out = Vec::new();
        assert_eq!(
            d.feed(&input, &mut out),
            DataProgress::Done {
                consumed: input.len()
            }
        );
        assert_eq!(d.size(), 300);
        assert!(d.too_big());
        // Stuffing dots are not message octets; bare LF counts one.
        let mut d = DataDecoder::new(0);
        d.feed(b"..x\r\ny\nz\r\n.\r\n", &mut Vec::new());
        assert_eq!(d.size(), ".x\r\ny\nz\r\n".len() as u64);
    }

    #[test]
    fn terminator_split_across_feeds() {
        let mut d = DataDecoder::new(0);
        let mut out = Vec::new();
        assert_eq!(d.feed(b"x\r", &mut out), DataProgress::NeedMore);
        assert_eq!(d.feed(b"\n.", &mut out), DataProgress::NeedMore);
        assert_eq!(d.feed(b"\r", &mut out), DataProgress::NeedMore);
        assert_eq!(
            d.feed(b"\nRSET\r\n", &mut out),
            DataProgress::Done { consumed: 1 }
        );
        assert_eq!(out, b"x\n");
    }

    #[test]
    fn stuffing() {
        let mut out = Vec::new();
        dot_stuff(b".a\nb\n.\n\nc", &mut out);
        assert_eq!(out, b"..a\r\nb\r\n..\r\n\r\nc\r\n.\r\n");
        let mut out = Vec::new();
        dot_stuff(b"", &mut out);
        assert_eq!(out, b".\r\n");
    }

    fn decode_in_pieces(
        input: &[u8],
        cuts: &[usize],
        max: u64,
    ) -> (Vec<u8>, Option<usize>, u64, bool, bool, bool, usize) {
        let mut d = DataDecoder::new(max);
        let mut out = Vec::new();
        let mut cuts: Vec<usize> = cuts.iter().map(|c| c % (input.len() + 1)).collect();
        cuts.sort_unstable();
        cuts.push(input.len());
        let mut pos = 0;
        let mut done = None;
        for c in cuts {
            if c < pos {
                continue;
            }
            if let DataProgress::Done { consumed } = d.feed(&input[pos..c], &mut out) {
                done = Some(pos + consumed);
                break;
            }
            pos = c;
        }
        (
            out,
            done,
            d.size(),
            d.too_big(),
            d.saw_bare_cr(),
            d.saw_bare_lf(),
            d.longest_line(),
        )
    }

    fn content_byte() -> impl Strategy<Value = u8> {
        prop_oneof![
            Just(b'\r'),
            Just(b'\n'),
            Just(b'.'),
            Just(b'a'),
            Just(0u8),
            Just(0xffu8),
            any::<u8>()
        ]
    }

    proptest! {
        #[test]
        fn chunking_does_not_matter(
            input in proptest::collection::vec(content_byte(), 0..300),
            cuts in proptest::collection::vec(any::<usize>(), 0..20),
            max in 0u64..64,
        ) {
            let whole = decode_in_pieces(&input, &[], max);
            let split = decode_in_pieces(&input, &cuts, max);
            prop_assert_eq!(&whole, &split);
            let bytes: Vec<usize> = (0..input.len()).collect();
            prop_assert_eq!(&whole, &decode_in_pieces(&input, &bytes, max));
        }

        #[test]
        fn stuff_then_decode_is_identity(
            lines in proptest::collection::vec(
                proptest::collection::vec(content_byte().prop_filter("no LF", |b| *b != b'\n'), 0..40),
                0..20),
            cuts in proptest::collection::vec(any::<usize>(), 0..10),
        ) {
            let mut content = Vec::new();
            for l in &lines {
                content.extend_from_slice(l);
                content.push(b'\n');
            }
            let mut wire = dot_stuff_vec(&content);
            let end = wire.len();
            wire.extend_from_slice(b"QUIT\r\n");
            let (out, done, ..) = decode_in_pieces(&wire, &cuts, 0);
            prop_assert_eq!(done, Some(end));
            prop_assert_eq!(out, content);
        }
    }

    fn dot_stuff_vec(content: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        dot_stuff(content, &mut out);
        out
    }
}
