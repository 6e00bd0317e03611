//! Reading the server's replies (RFC 5321 section 4.2) from a byte stream,
//! incrementally, with limits.
//!
//! ```text
//! Reply-line = *( Reply-code "-" [ textstring ] CRLF )
//!              Reply-code [ SP textstring ] CRLF
//! Reply-code = %x32-35 DIGIT DIGIT     ; 2xx..5xx (second digit: any, leniently)
//! ```
//!
//! Bytes come in whatever pieces the socket gives ([`ReplyParser::push`]);
//! complete replies come out in order ([`ReplyParser::next_reply`]), so the
//! way the input is cut never changes the result (a proptest checks this).
//! A line ends at LF; a CR before it is dropped (a bare LF line end is
//! accepted, as Postfix does). Lines longer than [`MAX_REPLY_LINE`] bytes
//! and replies of more than [`MAX_REPLY_LINES`] lines are errors, detected
//! as the bytes arrive, so memory stays bounded by the caller's read size
//! plus one line. After an error the parser stays failed: the stream is out
//! of step and the connection must be closed.

use std::collections::VecDeque;
use std::fmt;

use crate::reply::EnhancedCode;

/// Longest reply line accepted, without its line end (Postfix's
/// line_length_limit default; RFC 5321 section 4.5.3.1.5 says 512).
pub const MAX_REPLY_LINE: usize = 2048;

/// Most lines accepted in one reply (an EHLO reply has one per extension).
pub const MAX_REPLY_LINES: usize = 1000;

/// One complete reply from the server, as the client sees it.
///
/// Unlike [`crate::Reply`] (what our server sends), `lines` keep the text
/// exactly as sent after the code and its separator, enhanced code
/// included, so logs and bounces can quote the server word for word.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ServerReply {
    /// The reply code, 200..=599.
    pub code: u16,
    /// The RFC 3463 code at the start of the first line's text, if its class
    /// is the reply code's first digit.
    pub enhanced: Option<EnhancedCode>,
    /// The text of each line after `"250-"` / `"250 "` (control characters
    /// other than HT replaced by a space, invalid UTF-8 replaced by U+FFFD).
    pub lines: Vec<String>,
}

impl ServerReply {
    /// A reply built from its parts (for tests and for drivers that
    /// synthesize one); the enhanced code is taken from the first line as
    /// the parser would.
    pub fn new(code: u16, lines: &[&str]) -> ServerReply {
        let lines: Vec<String> = lines.iter().map(|l| l.to_string()).collect();
        let enhanced = lines.first().and_then(|l| enhanced_prefix(code, l));
        ServerReply {
            code,
            enhanced,
            lines,
        }
    }

    /// The first digit of the code: 2, 3, 4 or 5.
    pub fn class(&self) -> u16 {
        self.code / 100
    }

    /// True for 2xx.
    pub fn is_success(&self) -> bool {
        self.class() == 2
    }

    /// True for 3xx (354 after DATA, 334 during AUTH).
    pub fn is_intermediate(&self) -> bool {
        self.class() == 3
    }

    /// True for 4xx.
    pub fn is_transient(&self) -> bool {
        self.class() == 4
    }

    /// True for 5xx.
    pub fn is_permanent(&self) -> bool {
        self.class() == 5
    }

    /// The enhanced code the server sent, or the one Postfix derives when
    /// it sent none: the reply's class with `.0.0` (4.0.0, 5.0.0, 2.0.0).
    /// A 3xx reply (no such enhanced class) gives 4.0.0, as it is never a
    /// final answer.
    pub fn enhanced_or_default(&self) -> EnhancedCode {
        self.enhanced.unwrap_or(match self.class() {
            2 => EnhancedCode(2, 0, 0),
            5 => EnhancedCode(5, 0, 0),
            _ => EnhancedCode(4, 0, 0),
        })
    }

    /// The whole reply on one line as Postfix logs and bounces it: every
    /// line with its code and separator, joined by a space, e.g.
    /// `"550-5.1.1 No such user 550 5.1.1 see https://x"`.
    pub fn full_text(&self) -> String {
        let mut s = String::new();
        let n = self.lines.len().max(1);
        for i in 0..n {
            if i > 0 {
                s.push(' ');
            }
            s.push_str(&self.code.to_string());
            let text = self.lines.get(i).map(String::as_str).unwrap_or("");
            if i + 1 < n {
                s.push('-');
            } else if !text.is_empty() {
                s.push(' ');
            }
            s.push_str(text);
        }
        s
    }

    /// The first line's text without a leading enhanced code (for messages
    /// like "host refused to talk to me" where only the words matter).
    pub fn first_line_text(&self) -> &str {
        let first = self.lines.first().map(String::as_str).unwrap_or("");
        match self.enhanced {
            Some(_) => first.split_once(' ').map(|(_, rest)| rest).unwrap_or(""),
            None => first,
        }
    }
}

impl fmt::Display for ServerReply {
    /// The same as [`ServerReply::full_text`].
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.full_text())
    }
}

/// The enhanced code at the start of `text` if it is valid and its class is
/// `code`'s first digit (RFC 3463; RFC 2034 section 4).
fn enhanced_prefix(code: u16, text: &str) -> Option<EnhancedCode> {
    let word = text.split([' ', '\t']).next()?;
    let e = EnhancedCode::parse(word)?;
    (u16::from(e.0) == code / 100).then_some(e)
}

/// Why the server's output could not be read as replies. Any of these means
/// the conversation is out of step: close the connection (Postfix logs
/// "malformed reply" / "server reply ... too long" and tries the next host).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ReplyError {
    /// A line that does not start with a 2xx..5xx code followed by SP, "-"
    /// or the line end.
    Malformed {
        /// The start of the offending line (at most 80 bytes, sanitized).
        line: String,
    },
    /// A continuation line whose code differs from the first line's.
    CodeMismatch {
        /// The code of the reply's first line.
        expected: u16,
        /// The code of the line that broke the reply.
        found: u16,
    },
    /// A line longer than [`MAX_REPLY_LINE`] bytes.
    LineTooLong,
    /// More than [`MAX_REPLY_LINES`] lines in one reply.
    TooManyLines,
}

impl fmt::Display for ReplyError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ReplyError::Malformed { line } => write!(f, "malformed server reply: {line}"),
            ReplyError::CodeMismatch { expected, found } => write!(
                f,
                "malformed multi-line server reply: code {found} after {expected}"
            ),
            ReplyError::LineTooLong => {
                write!(f, "server reply line longer than {MAX_REPLY_LINE} bytes")
            }
            ReplyError::TooManyLines => {
                write!(f, "server reply with more than {MAX_REPLY_LINES} lines")
            }
        }
    }
}

impl std::error::Error for ReplyError {}

/// Turns the server's byte stream into [`ServerReply`] values; see the
/// module documentation.
#[derive(Clone, Debug, Default)]
pub struct ReplyParser {
    /// The current, unterminated line.
    line: Vec<u8>,
    /// The reply being assembled: its code and lines so far.
    partial: Option<(u16, Vec<String>)>,
    /// Complete replies not yet taken.
    ready: VecDeque<ServerReply>,
    /// The first error; nothing is parsed after it.
    error: Option<ReplyError>,
}

impl ReplyParser {
    /// A parser at the start of a stream.
    pub fn new() -> Self {
        Self::default()
    }

    /// Parses `input` (any piece of the stream). Complete replies are kept
    /// for [`ReplyParser::next_reply`]; after an error the rest is ignored.
    pub fn push(&mut self, input: &[u8]) {
        let mut rest = input;
        while self.error.is_none() && !rest.is_empty() {
            match rest.iter().position(|&b| b == b'\n') {
                Some(i) => {
                    if self.line.len() + i > MAX_REPLY_LINE + 1 {
                        self.fail(ReplyError::LineTooLong);
                        return;
                    }
                    self.line.extend_from_slice(&rest[..i]);
                    rest = &rest[i + 1..];
                    let mut line = std::mem::take(&mut self.line);
                    if line.last() == Some(&b'\r') {
                        line.pop();
                    }
                    if line.len() > MAX_REPLY_LINE {
                        self.fail(ReplyError::LineTooLong);
                        return;
                    }
                    self.complete_line(&line);
                }
                None => {
                    // One more byte than the limit may be the CR of CRLF.
                    if self.line.len() + rest.len() > MAX_REPLY_LINE + 1 {
                        self.fail(ReplyError::LineTooLong);
                        return;
                    }
                    self.line.extend_from_slice(rest);
                    rest = &[];
                }
            }
        }
    }

    fn fail(&mut self, e: ReplyError) {
        self.error = Some(e);
        self.line = Vec::new();
        self.partial = None;
    }

    fn complete_line(&mut self, line: &[u8]) {
        let code = match line {
            [a @ b'2'..=b'5', b @ b'0'..=b'9', c @ b'0'..=b'9', ..] => {
                u16::from(a - b'0') * 100 + u16::from(b - b'0') * 10 + u16::from(c - b'0')
            }
            _ => return self.fail(malformed(line)),
        };
        let (last, text) = match line.get(3) {
            None => (true, &line[3..]),
            Some(b' ') => (true, &line[4..]),
            Some(b'-') => (false, &line[4..]),
            Some(_) => return self.fail(malformed(line)),
        };
        let (first_code, mut lines) = self.partial.take().unwrap_or((code, Vec::new()));
        if first_code != code {
            return self.fail(ReplyError::CodeMismatch {
                expected: first_code,
                found: code,
            });
        }
        if lines.len() >= MAX_REPLY_LINES {
            return self.fail(ReplyError::TooManyLines);
        }
        lines.push(sanitize(text));
        if last {
            let enhanced = enhanced_prefix(code, &lines[0]);
            self.ready.push_back(ServerReply {
                code,
                enhanced,
                lines,
            });
        } else {
            self.partial = Some((code, lines));
        }
    }

    /// The next complete reply, `Ok(None)` if more input is needed, or the
    /// error that stopped the parser (after the replies that preceded it).
    pub fn next_reply(&mut self) -> Result<Option<ServerReply>, ReplyError> {
        if let Some(r) = self.ready.pop_front() {
            return Ok(Some(r));
        }
        match &self.error {
            Some(e) => Err(e.clone()),
            None => Ok(None),
        }
    }

    /// True when bytes are buffered beyond the replies already taken: a
    /// complete reply, part of one, or an error. After the 220 reply to
    /// STARTTLS this must be false, or the server (or a man in the middle)
    /// sent data ahead of the TLS handshake (CVE-2011-0411's mirror image):
    /// see [`crate::client::starttls_verdict`].
    pub fn has_pending(&self) -> bool {
        !self.ready.is_empty()
            || !self.line.is_empty()
            || self.partial.is_some()
            || self.error.is_some()
    }

    /// Forgets everything buffered (after STARTTLS the stream starts anew).
    pub fn clear(&mut self) {
        *self = ReplyParser::default();
    }
}

fn malformed(line: &[u8]) -> ReplyError {
    let head = &line[..line.len().min(80)];
    ReplyError::Malformed {
        line: sanitize(head),
    }
}

/// Reply text for logs: lossy UTF-8, control characters but HT as space.
fn sanitize(text: &[u8]) -> String {
    String::from_utf8_lossy(text)
        .chars()
        .map(|c| if c.is_control() && c != '\t' { ' ' } else { c })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn parse_all(input: &[u8]) -> (Vec<ServerReply>, Option<ReplyError>) {
        let mut p = ReplyParser::new();
        p.push(input);
        drain(&mut p)
    }

    fn drain(p: &mut ReplyParser) -> (Vec<ServerReply>, Option<ReplyError>) {
        let mut out = Vec::new();
        loop {
            match p.next_reply() {
                Ok(Some(r)) => out.push(r),
                Ok(None) => return (out, None),
                Err(e) => return (out, Some(e)),
            }
        }
    }

    #[test]
    fn single_and_multi_line() {
        let (r, e) =
            parse_all(b"220 mx.example ESMTP\r\n250-mx\r\n250-PIPELINING\r\n250 SIZE 100\r\n");
        assert_eq!(e, None);
        assert_eq!(r.len(), 2);
        assert_eq!(r[0].code, 220);
        assert_eq!(r[0].lines, vec!["mx.example ESMTP"]);
        assert_eq!(r[1].lines, vec!["mx", "PIPELINING", "SIZE 100"]);
        assert_eq!(r[1].full_text(), "250-mx 250-PIPELINING 250 SIZE 100");
    }

    #[test]
    fn enhanced_codes() {
        let (r, _) = parse_all(b"550-5.1.1 No such user\r\n550 5.1.1 more\r\n");
        assert_eq!(r[0].enhanced, Some(EnhancedCode(5, 1, 1)));
        assert_eq!(r[0].first_line_text(), "No such user");
        assert_eq!(r[0].to_string(), "550-5.1.1 No such user 550 5.1.1 more");
        // Class must match the reply code.
        let (r, _) = parse_all(b"550 4.1.1 odd\r\n250 2.1.5 Ok\r\n451 4.7.1\r\n");
        assert_eq!(r[0].enhanced, None);
        assert_eq!(r[0].enhanced_or_default(), EnhancedCode(5, 0, 0));
        assert_eq!(r[1].enhanced, Some(EnhancedCode(2, 1, 5)));
        assert_eq!(r[2].enhanced, Some(EnhancedCode(4, 7, 1)));
        let (r, _) = parse_all(b"550 5.1.1x no\r\n450 Try later\r\n");
        assert_eq!(r[0].enhanced, None);
        assert_eq!(r[1].enhanced_or_default(), EnhancedCode(4, 0, 0));
    }

    #[test]
    fn bare_lf_and_empty_text() {
        let (r, e) = parse_all(b"250\n250-\r\n250 x\n354 \r\n");
        assert_eq!(e, None);
        assert_eq!(r[0].lines, vec![""]);
        assert_eq!(r[1].lines, vec!["", "x"]);
        assert_eq!(r[1].full_text(), "250- 250 x");
        assert_eq!(r[2].code, 354);
        assert_eq!(r[0].full_text(), "250");
    }

    #[test]
    fn errors() {
        for bad in [
            &b"600 no\r\n"[..],
            b"150 no\r\n",
            b"25 no\r\n",
            b"250x\r\n",
            b"abc\r\n",
            b"\r\n",
            b"2a0 x\r\n",
        ] {
            let (r, e) = parse_all(bad);
            assert!(r.is_empty());
            assert!(matches!(e, Some(ReplyError::Malformed { .. })), "{bad:?}");
        }
        let (r, e) = parse_all(b"220 ok\r\n250-a\r\n251 b\r\n250 c\r\n");
        assert_eq!(r.len(), 1, "replies before the error are kept");
        assert_eq!(
            e,
            Some(ReplyError::CodeMismatch {
                expected: 250,
                found: 251
            })
        );
    }

    #[test]
    fn limits() {
        let mut long = b"250 ".to_vec();
        long.resize(MAX_REPLY_LINE, b'x');
        long.extend_from_slice(b"\r\n");
        assert_eq!(parse_all(&long).1, None, "exactly the limit is fine");
        let mut p = ReplyParser::new();
        p.push(b"250 ");
        for _ in 0..100 {
            p.push(&[b'x'; 100]);
        }
        assert_eq!(p.next_reply(), Err(ReplyError::LineTooLong));
        assert!(
            p.line.capacity() <= 2 * MAX_REPLY_LINE + 200,
            "memory stays bounded"
        );
        let many = b"250-x\r\n".repeat(MAX_REPLY_LINES + 1);
        assert_eq!(parse_all(&many).1, Some(ReplyError::TooManyLines));
        let mut ok = b"250-x\r\n".repeat(MAX_REPLY_LINES - 1);
        ok.extend_from_slice(b"250 x\r\n");
        assert_eq!(parse_all(&ok).0[0].lines.len(), MAX_REPLY_LINES);
    }

    #[test]
    fn split_across_chunks() {
        let mut p = ReplyParser::new();
        p.push(b"250-mx.exa");
        assert_eq!(p.next_reply(), Ok(None));
        p.push(b"mple\r");
        p.push(b"\n250-8BIT");
        p.push(b"MIME\r\n2");
        assert_eq!(p.next_reply(), Ok(None));
        assert!(p.has_pending());
        p.push(b"50 DSN\r\n");
        let r = p.next_reply().unwrap().unwrap();
        assert_eq!(r.lines, vec!["mx.example", "8BITMIME", "DSN"]);
        assert!(!p.has_pending());
    }

    #[test]
    fn control_characters_are_sanitized() {
        let (r, _) = parse_all(b"550 a\rb\x00c\xff\td\r\n");
        assert_eq!(r[0].lines, vec!["a b c\u{fffd}\td"]);
    }

    fn replyish() -> impl Strategy<Value = Vec<u8>> {
        let piece = prop_oneof![
            Just(b"250-".to_vec()),
            Just(b"250 ".to_vec()),
            Just(b"550-5.1.1 ".to_vec()),
            Just(b"550 5.1.1 ".to_vec()),
            Just(b"421 ".to_vec()),
            Just(b"\r\n".to_vec()),
            Just(b"\n".to_vec()),
            Just(b"x".to_vec()),
            proptest::collection::vec(any::<u8>(), 0..4),
        ];
        proptest::collection::vec(piece, 0..40).prop_map(|v| v.concat())
    }

    proptest! {
        #[test]
        fn chunking_never_changes_the_replies(
            input in prop_oneof![replyish(), proptest::collection::vec(any::<u8>(), 0..300)],
            cuts in proptest::collection::vec(any::<usize>(), 0..12),
        ) {
            let whole = parse_all(&input);
            let mut cuts: Vec<usize> = cuts.iter().map(|c| c % (input.len() + 1)).collect();
            cuts.sort_unstable();
            cuts.push(input.len());
            let mut p = ReplyParser::new();
            let mut got = Vec::new();
            let mut pos = 0;
            let mut err = None;
            for c in cuts {
                p.push(&input[pos..c]);
                pos = c;
                let (r, e) = drain(&mut p);
                got.extend(r);
                if e.is_some() {
                    err = e;
                    break;
                }
            }
            prop_assert_eq!(&whole.0, &got);
            prop_assert_eq!(&whole.1, &err);
            for r in &got {
                prop_assert!((200..600).contains(&r.code));
                prop_assert!(!r.full_text().contains(['\r', '\n']));
            }
        }
    }
}
