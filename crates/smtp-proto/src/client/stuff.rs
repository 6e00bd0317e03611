//! Sending the message content piece by piece, so a message is never held
//! in memory whole: [`DotStuffer`] for DATA (RFC 5321 section 4.5.2) and
//! [`CrlfNormalizer`] for BDAT (RFC 3030: counted chunks, no stuffing).
//!
//! Both take content with LF or CRLF line ends (the queue file's LF text,
//! or text that already has CRLF) and write CRLF line ends. A CR that is
//! not followed by LF is kept as a content byte, as [`crate::dot_stuff`]
//! does, and is never a line start: a "." after it is not doubled, which is
//! right because a receiver (our [`crate::DataDecoder`] included) does not
//! take a bare CR for a line end either. The only line starts are after a
//! CRLF written here, and a "." there is always doubled, so the output
//! holds no `CRLF "." CRLF` before the terminator that
//! [`DotStuffer::finish`] writes (a proptest checks this).
//!
//! The state between pieces is one pending CR and whether we are at a line
//! start, so the output is the same however the content is cut (a proptest
//! checks this, and that the result equals [`crate::dot_stuff`] for
//! content without CR).

#[derive(Clone, Copy, Debug)]
struct LineState {
    /// The last byte written ended a line (or nothing was written yet).
    line_start: bool,
    /// The last input byte was a CR whose meaning depends on the next byte.
    pending_cr: bool,
}

impl LineState {
    fn new() -> Self {
        LineState {
            line_start: true,
            pending_cr: false,
        }
    }

    fn feed(&mut self, input: &[u8], stuff: bool, out: &mut Vec<u8>) {
        out.reserve(input.len() + input.len() / 16 + 2);
        for &b in input {
            if self.pending_cr {
                self.pending_cr = false;
                if b == b'\n' {
                    out.extend_from_slice(b"\r\n");
                    self.line_start = true;
                    continue;
                }
                // A bare CR: content, and not a line end.
                out.push(b'\r');
                self.line_start = false;
            }
            match b {
                b'\r' => self.pending_cr = true,
                b'\n' => {
                    out.extend_from_slice(b"\r\n");
                    self.line_start = true;
                }
                b'.' if stuff && self.line_start => {
                    out.extend_from_slice(b"..");
                    self.line_start = false;
                }
                _ => {
                    out.push(b);
                    self.line_start = false;
                }
            }
        }
    }

    /// Writes a pending CR; reports whether the last line is unterminated.
    fn flush(&mut self, out: &mut Vec<u8>) -> bool {
        if self.pending_cr {
            self.pending_cr = false;
            out.push(b'\r');
            self.line_start = false;
        }
        !self.line_start
    }
}

/// Dot-stuffs content for DATA as it streams: see the module docs. Feed
/// the pieces, then [`DotStuffer::finish`] writes the end (`.` CRLF).
#[derive(Clone, Debug)]
pub struct DotStuffer {
    state: LineState,
}

impl Default for DotStuffer {
    fn default() -> Self {
        Self::new()
    }
}

impl DotStuffer {
    /// A stuffer at the start of a message.
    pub fn new() -> Self {
        DotStuffer {
            state: LineState::new(),
        }
    }

    /// Appends the wire form of this piece of content to `out`; a CR at the
    /// end of the piece is held until the next byte tells what it is.
    pub fn feed(&mut self, content: &[u8], out: &mut Vec<u8>) {
        self.state.feed(content, true, out);
    }

    /// Ends the message: CRLF if the last line had none, then `.` CRLF.
    pub fn finish(mut self, out: &mut Vec<u8>) {
        if self.state.flush(out) {
            out.extend_from_slice(b"\r\n");
        }
        out.extend_from_slice(b".\r\n");
    }
}

/// Turns LF line ends into CRLF as content streams, for BDAT chunks (no
/// dot-stuffing, no terminator). The output of each [`CrlfNormalizer::feed`]
/// is what one `BDAT n` carries, so its length is the chunk size.
#[derive(Clone, Debug)]
pub struct CrlfNormalizer {
    state: LineState,
}

impl Default for CrlfNormalizer {
    fn default() -> Self {
        Self::new()
    }
}

impl CrlfNormalizer {
    /// A normalizer at the start of a message.
    pub fn new() -> Self {
        CrlfNormalizer {
            state: LineState::new(),
        }
    }

    /// Appends the CRLF form of this piece to `out` (a trailing CR is held).
    pub fn feed(&mut self, content: &[u8], out: &mut Vec<u8>) {
        self.state.feed(content, false, out);
    }

    /// Ends the message: a held CR, and CRLF if the last line had none
    /// (RFC 5322 text ends with CRLF). What this appends belongs to the
    /// LAST chunk (possibly `BDAT 0 LAST` when it appends nothing).
    pub fn finish(mut self, out: &mut Vec<u8>) {
        if self.state.flush(out) {
            out.extend_from_slice(b"\r\n");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::data::{DataDecoder, DataProgress, dot_stuff};
    use proptest::prelude::*;

    fn stuff_in_pieces(content: &[u8], cuts: &[usize]) -> Vec<u8> {
        let mut s = DotStuffer::new();
        let mut out = Vec::new();
        let mut cuts: Vec<usize> = cuts.iter().map(|c| c % (content.len() + 1)).collect();
        cuts.sort_unstable();
        let mut pos = 0;
        for c in cuts {
            s.feed(&content[pos..c], &mut out);
            pos = c;
        }
        s.feed(&content[pos..], &mut out);
        s.finish(&mut out);
        out
    }

    #[test]
    fn stuffs_and_normalizes() {
        assert_eq!(stuff_in_pieces(b"", &[]), b".\r\n");
        assert_eq!(stuff_in_pieces(b"a", &[]), b"a\r\n.\r\n");
        assert_eq!(
            stuff_in_pieces(b".a\r\nb\n.\r\n\n.", &[]),
            b"..a\r\nb\r\n..\r\n\r\n..\r\n.\r\n"
        );
        // A CR split from its LF is still a line end, and the dot after it
        // is stuffed.
        assert_eq!(stuff_in_pieces(b"a\r\n.b", &[2, 3]), b"a\r\n..b\r\n.\r\n");
        // Bare CR is content and no line start.
        assert_eq!(stuff_in_pieces(b"a\r.\r", &[2]), b"a\r.\r\r\n.\r\n");
    }

    #[test]
    fn crlf_for_bdat() {
        let mut n = CrlfNormalizer::new();
        let mut out = Vec::new();
        n.feed(b".a\nb\r", &mut out);
        assert_eq!(out, b".a\r\nb", "the trailing CR waits");
        n.feed(b"\n.\n", &mut out);
        n.finish(&mut out);
        assert_eq!(out, b".a\r\nb\r\n.\r\n");
        let mut out = Vec::new();
        let mut n = CrlfNormalizer::new();
        n.feed(b"x", &mut out);
        n.finish(&mut out);
        assert_eq!(out, b"x\r\n");
    }

    fn content_byte() -> impl Strategy<Value = u8> {
        prop_oneof![
            Just(b'\r'),
            Just(b'\n'),
            Just(b'.'),
            Just(b'a'),
            any::<u8>()
        ]
    }

    proptest! {
        #[test]
        fn chunking_never_changes_the_output(
            content in proptest::collection::vec(content_byte(), 0..300),
            cuts in proptest::collection::vec(any::<usize>(), 0..12),
        ) {
            let whole = stuff_in_pieces(&content, &[]);
            prop_assert_eq!(&whole, &stuff_in_pieces(&content, &cuts));
            let bytes: Vec<usize> = (0..content.len()).collect();
            prop_assert_eq!(&whole, &stuff_in_pieces(&content, &bytes));
            // No line "." before the terminator.
            let body = &whole[..whole.len() - 3];
            prop_assert!(!body.windows(5).any(|w| w == b"\r\n.\r\n"));
            prop_assert!(!body.starts_with(b".\r\n"));
            prop_assert!(whole.ends_with(b"\r\n.\r\n") || whole == b".\r\n");
            // The receiver finds the end exactly at our terminator.
            let mut d = DataDecoder::new(0);
            let mut out = Vec::new();
            prop_assert_eq!(
                d.feed(&whole, &mut out),
                DataProgress::Done { consumed: whole.len() }
            );
            if !content.contains(&b'\r') {
                let mut expect = Vec::new();
                dot_stuff(&content, &mut expect);
                prop_assert_eq!(&whole, &expect);
                let mut c = content.clone();
                if !c.is_empty() && c.last() != Some(&b'\n') {
                    c.push(b'\n');
                }
                prop_assert_eq!(out, c);
            }
        }

        #[test]
        fn normalizer_chunking_never_changes_the_output(
            content in proptest::collection::vec(content_byte(), 0..300),
            cut in any::<usize>(),
        ) {
            let run = |pieces: &[&[u8]]| {
                let mut n = CrlfNormalizer::new();
                let mut out = Vec::new();
                for p in pieces {
                    n.feed(p, &mut out);
                }
                n.finish(&mut out);
                out
            };
            let cut = cut % (content.len() + 1);
            let whole = run(&[&content]);
            prop_assert_eq!(&whole, &run(&[&content[..cut], &content[cut..]]));
            // Every LF in the output is part of a CRLF.
            for (i, &b) in whole.iter().enumerate() {
                if b == b'\n' {
                    prop_assert!(i > 0 && whole[i - 1] == b'\r');
                }
            }
        }
    }
}
