//! Framing of SMTP command lines from a byte stream (RFC 5321 section 2.3.8
//! and 4.5.3.1.4), with a length limit and without I/O.
//!
//! ```text
//! command-line = *OCTET CRLF      ; the proper form
//! command-line =/ *OCTET LF       ; bare LF: accepted (as Postfix) but flagged
//! ```
//!
//! A line ends at LF. When the LF is preceded by CR, the line ended properly;
//! otherwise it is a "bare LF" line, which is returned with `bare_lf = true`
//! so smtpd can log or refuse it (`smtpd_forbid_bare_newline`). A CR that is
//! not followed by LF is an ordinary byte of the line.
//!
//! `limit` counts the bytes of a line without its line ending. A longer line
//! is dropped as it arrives (memory stays bounded by about `limit` bytes) and
//! reported once, as [`Line::TooLong`], when its LF arrives, so the stream
//! never gets out of step: what follows is read as the next command.

/// One framed line.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Line {
    /// A line within the limit, without its CRLF or LF.
    Complete {
        /// The line's bytes.
        line: Vec<u8>,
        /// True when the line ended with LF alone instead of CRLF.
        bare_lf: bool,
    },
    /// A line longer than the limit; its bytes were discarded.
    TooLong,
}

/// Frames command lines from pushed bytes; see the module documentation.
#[derive(Clone, Debug)]
pub struct LineReader {
    limit: usize,
    buf: Vec<u8>,
    /// Start of the unreturned data in `buf`.
    start: usize,
    /// Bytes from `start` already searched for LF without success.
    scanned: usize,
    /// Inside an over-long line: dropping bytes until the next LF.
    discarding: bool,
}

impl LineReader {
    /// A reader for lines of at most `limit` bytes (line ending excluded).
    pub fn new(limit: usize) -> Self {
        LineReader {
            limit,
            buf: Vec::new(),
            start: 0,
            scanned: 0,
            discarding: false,
        }
    }

    /// Appends input to the internal buffer. Bytes of an over-long line are
    /// dropped here already, so memory stays bounded.
    pub fn push(&mut self, input: &[u8]) {
        if self.discarding {
            match input.iter().position(|&b| b == b'\n') {
                // Keep the LF so next_line can report TooLong at the right point.
                Some(i) => self.buf.extend_from_slice(&input[i..]),
                None => return,
            }
        } else {
            self.buf.extend_from_slice(input);
        }
        self.trim_overlong();
    }

    /// If the current unterminated line is already too long, switch to
    /// discarding: drop its bytes, keep everything from its LF on.
    fn trim_overlong(&mut self) {
        if self.discarding {
            return;
        }
        let pending = &self.buf[self.start..];
        let unterminated = match pending.iter().position(|&b| b == b'\n') {
            Some(_) => return, // a line end is there; next_line will judge it
            None => pending.len(),
        };
        // `limit` bytes plus a CR that may turn out to start the CRLF.
        let over = unterminated > self.limit.saturating_add(1)
            || (unterminated == self.limit.saturating_add(1) && pending.last() != Some(&b'\r'));
        if over {
            self.buf.truncate(self.start);
            self.compact();
            self.scanned = 0;
            self.discarding = true;
        }
    }

    /// Next complete line (without its line ending), or None if more input
    /// is needed.
    pub fn next_line(&mut self) -> Option<Line> {
        let pending = &self.buf[self.start..];
        let from = self.scanned.min(pending.len());
        let Some(pos) = pending[from..]
            .iter()
            .position(|&b| b == b'\n')
            .map(|p| p + from)
        else {
            self.scanned = pending.len();
            return None;
        };
        let raw = &pending[..pos];
        let (body, bare_lf) = match raw.split_last() {
            Some((b'\r', body)) => (body, false),
            _ => (raw, true),
        };
        let result = if self.discarding || body.len() > self.limit {
            Line::TooLong
        } else {
            Line::Complete {
                line: body.to_vec(),
                bare_lf,
            }
        };
        self.discarding = false;
        self.start += pos + 1;
        self.scanned = 0;
        self.compact();
        self.trim_overlong();
        Some(result)
    }

    /// Bytes buffered but not yet returned as lines (pipelined input): smtpd
    /// discards them after STARTTLS and hands them to the DATA decoder after
    /// DATA. If an over-long line was being dropped, its dropped bytes are
    /// gone and the reader starts afresh.
    pub fn take_buffered(&mut self) -> Vec<u8> {
        let rest = self.buf.split_off(self.start);
        self.buf.clear();
        self.start = 0;
        self.scanned = 0;
        self.discarding = false;
        rest
    }

    /// Number of bytes buffered but not yet returned.
    pub fn buffered_len(&self) -> usize {
        self.buf.len() - self.start
    }

    /// The configured line length limit.
    pub fn limit(&self) -> usize {
        self.limit
    }

    /// Drops consumed bytes once they are at least half of the buffer, so
    /// the cost stays linear in the input.
    fn compact(&mut self) {
        if self.start == self.buf.len() {
            self.buf.clear();
            self.start = 0;
        } else if self.start > 4096 && self.start * 2 > self.buf.len() {
            self.buf.drain(..self.start);
            self.start = 0;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn complete(s: &str) -> Option<Line> {
        Some(Line::Complete {
            line: s.as_bytes().to_vec(),
            bare_lf: false,
        })
    }

    fn bare(s: &str) -> Option<Line> {
        Some(Line::Complete {
            line: s.as_bytes().to_vec(),
            bare_lf: true,
        })
    }

    #[test]
    fn pipelined_lines() {
        let mut r = LineReader::new(512);
        r.push(b"MAIL FROM:<a@b>\r\nRCPT TO:<c@d>\r\nDATA\r\nSubject: x");
        assert_eq!(r.next_line(), complete("MAIL FROM:<a@b>"));
        assert_eq!(r.next_line(), complete("RCPT TO:<c@d>"));
        assert_eq!(r.next_line(), complete("DATA"));
        assert_eq!(r.next_line(), None);
        assert_eq!(r.buffered_len(), 10);
        assert_eq!(r.take_buffered(), b"Subject: x");
        assert_eq!(r.buffered_len(), 0);
        assert_eq!(r.next_line(), None);
    }

    #[test]
    fn split_input() {
        let mut r = LineReader::new(512);
        r.push(b"EH");
        assert_eq!(r.next_line(), None);
        r.push(b"LO x\r");
        assert_eq!(r.next_line(), None);
        r.push(b"\nQUIT\r\n");
        assert_eq!(r.next_line(), complete("EHLO x"));
        assert_eq!(r.next_line(), complete("QUIT"));
        assert_eq!(r.next_line(), None);
    }

    #[test]
    fn bare_lf_and_bare_cr() {
        let mut r = LineReader::new(512);
        r.push(b"NOOP\nNOOP a\rb\r\n\r\n\n");
        assert_eq!(r.next_line(), bare("NOOP"));
        assert_eq!(r.next_line(), complete("NOOP a\rb"));
        assert_eq!(r.next_line(), complete(""));
        assert_eq!(r.next_line(), bare(""));
        assert_eq!(r.next_line(), None);
    }

    #[test]
    fn limits() {
        let mut r = LineReader::new(4);
        r.push(b"abcd\r\nabcde\r\nab\r\n");
        assert_eq!(r.next_line(), complete("abcd"));
        assert_eq!(r.next_line(), Some(Line::TooLong));
        assert_eq!(r.next_line(), complete("ab"));
        assert_eq!(r.next_line(), None);
    }

    #[test]
    fn limit_exact_with_split_crlf() {
        let mut r = LineReader::new(4);
        r.push(b"abcd\r");
        assert_eq!(r.next_line(), None);
        r.push(b"\n");
        assert_eq!(r.next_line(), complete("abcd"));
        // limit + 1 bytes where the last is not CR: already too long.
        r.push(b"abcde");
        assert_eq!(r.buffered_len(), 0);
        r.push(b"\r\nok\r\n");
        assert_eq!(r.next_line(), Some(Line::TooLong));
        assert_eq!(r.next_line(), complete("ok"));
    }

    #[test]
    fn long_line_discarded_while_streaming() {
        let mut r = LineReader::new(8);
        for _ in 0..1000 {
            r.push(b"xxxxxxxxxxxxxxxx");
            assert_eq!(r.next_line(), None);
            assert!(r.buffered_len() <= 9);
        }
        r.push(b"yyy\r\nQUIT\r\n");
        assert_eq!(r.next_line(), Some(Line::TooLong));
        assert_eq!(r.next_line(), complete("QUIT"));
        assert_eq!(r.next_line(), None);
    }

    #[test]
    fn long_line_after_complete_ones_in_one_push() {
        let mut r = LineReader::new(3);
        r.push(b"a\r\nbbbbbbbbbb");
        assert_eq!(r.next_line(), complete("a"));
        assert_eq!(r.next_line(), None);
        assert_eq!(r.buffered_len(), 0);
        r.push(b"b\nc\r\n");
        assert_eq!(r.next_line(), Some(Line::TooLong));
        assert_eq!(r.next_line(), complete("c"));
    }

    #[test]
    fn byte_at_a_time_equals_whole() {
        let input =
            b"EHLO a\r\nMAIL FROM:<a@b>\nxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx\r\nQUIT\r\n";
        let mut whole = LineReader::new(20);
        whole.push(input);
        let mut a = Vec::new();
        while let Some(l) = whole.next_line() {
            a.push(l);
        }
        let mut bytes = LineReader::new(20);
        let mut b = Vec::new();
        for &x in input.iter() {
            bytes.push(&[x]);
            while let Some(l) = bytes.next_line() {
                b.push(l);
            }
        }
        assert_eq!(a, b);
        assert_eq!(a.len(), 4);
    }
}
