//! SMTP replies (RFC 5321 section 4.2) with optional enhanced status codes
//! (RFC 2034 / RFC 3463), and their wire encoding.
//!
//! ```text
//! Reply-line     = *( Reply-code "-" [ textstring ] CRLF )
//!                  Reply-code [ SP textstring ] CRLF
//! Reply-code     = %x32-35 %x30-35 %x30-39
//! textstring     = 1*(%d09 / %d32-126) ; HT, SP, Printable US-ASCII
//! status-code    = class "." subject "." detail        ; RFC 3463
//! ```
//!
//! Reply text is never trusted to be clean: it may quote things the client
//! sent. [`Reply::encode`] replaces CR, LF and the other control characters
//! (except HT) by a space, so a reply can never inject extra reply lines.

use std::fmt;

/// The enhanced status code type is the one the whole system uses for
/// results ([`postern_status`]); it is re-exported here for the replies.
pub use postern_status::EnhancedCode;

/// A reply to an SMTP client: a three-digit code, an optional enhanced status
/// code that is repeated on every line, and one or more lines of text.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Reply {
    /// The basic reply code, 200..=599.
    pub code: u16,
    /// The RFC 3463 enhanced status code, if any.
    pub enhanced: Option<EnhancedCode>,
    /// The text lines; an empty vector encodes as a single line with no text.
    pub lines: Vec<String>,
}

impl Reply {
    /// A single-line reply, e.g. `Reply::new(250, Some(EnhancedCode(2, 0, 0)), "Ok")`.
    pub fn new(code: u16, enhanced: Option<EnhancedCode>, text: impl Into<String>) -> Reply {
        Reply {
            code,
            enhanced,
            lines: vec![text.into()],
        }
    }

    /// A multi-line reply without an enhanced code, such as the EHLO response.
    pub fn multi(code: u16, lines: Vec<String>) -> Reply {
        Reply {
            code,
            enhanced: None,
            lines,
        }
    }

    /// Appends the wire form to `out`: `"250-first\r\n250 last\r\n"`, with the
    /// enhanced code repeated on each line (`"550-5.1.1 a\r\n550 5.1.1 b\r\n"`).
    /// Control characters in the text (CR and LF above all) become spaces.
    pub fn encode(&self, out: &mut Vec<u8>) {
        let code = self.code.to_string();
        let enhanced = self.enhanced.map(|e| e.to_string());
        let count = self.lines.len().max(1);
        for i in 0..count {
            let text = self.lines.get(i).map(String::as_str).unwrap_or("");
            out.extend_from_slice(code.as_bytes());
            let last = i + 1 == count;
            let mut sep_written = false;
            if let Some(e) = &enhanced {
                out.push(if last { b' ' } else { b'-' });
                out.extend_from_slice(e.as_bytes());
                sep_written = true;
            }
            if !text.is_empty() {
                if sep_written {
                    out.push(b' ');
                } else {
                    out.push(if last { b' ' } else { b'-' });
                }
                push_sanitized(text, out);
            } else if !sep_written && !last {
                out.push(b'-');
            }
            out.extend_from_slice(b"\r\n");
        }
    }

    /// The wire form as a fresh buffer; see [`Reply::encode`].
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = Vec::new();
        self.encode(&mut out);
        out
    }

    /// True for 2xx (completion) and 3xx (intermediate, e.g. 354 for DATA).
    pub fn is_positive(&self) -> bool {
        (200..400).contains(&self.code)
    }

    /// True for 4xx: the client may try again later.
    pub fn is_transient(&self) -> bool {
        (400..500).contains(&self.code)
    }

    /// True for 5xx: the client must not repeat the same request.
    pub fn is_permanent(&self) -> bool {
        (500..600).contains(&self.code)
    }
}

/// Writes `text` with every control character except HT replaced by a space.
fn push_sanitized(text: &str, out: &mut Vec<u8>) {
    for &b in text.as_bytes() {
        if (b < 0x20 && b != b'\t') || b == 0x7f {
            out.push(b' ');
        } else {
            out.push(b);
        }
    }
}

impl fmt::Display for Reply {
    /// One line for logs: `"550 5.1.1 text"`, lines joined by a space.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.code)?;
        if let Some(e) = self.enhanced {
            write!(f, " {e}")?;
        }
        let mut buf = Vec::new();
        for line in &self.lines {
            buf.clear();
            push_sanitized(line, &mut buf);
            write!(f, " {}", String::from_utf8_lossy(&buf))?;
        }
        Ok(())
    }
}

/// The EHLO response: `250-hostname` followed by one line per extension
/// keyword (`greeting_lines`, e.g. `"PIPELINING"`, `"SIZE 10240000"`).
pub fn ehlo_reply(hostname: &str, greeting_lines: &[String]) -> Reply {
    let mut lines = Vec::with_capacity(greeting_lines.len() + 1);
    lines.push(hostname.to_string());
    lines.extend(greeting_lines.iter().cloned());
    Reply::multi(250, lines)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn wire(r: &Reply) -> String {
        String::from_utf8(r.to_bytes()).expect("ascii")
    }

    #[test]
    fn single_line() {
        let r = Reply::new(250, Some(EnhancedCode(2, 1, 0)), "Ok");
        assert_eq!(wire(&r), "250 2.1.0 Ok\r\n");
        assert_eq!(wire(&Reply::new(220, None, "mx ESMTP")), "220 mx ESMTP\r\n");
    }

    #[test]
    fn multi_line_repeats_enhanced_code() {
        let r = Reply {
            code: 550,
            enhanced: Some(EnhancedCode(5, 1, 1)),
            lines: vec!["a".into(), "b".into()],
        };
        assert_eq!(wire(&r), "550-5.1.1 a\r\n550 5.1.1 b\r\n");
        assert_eq!(r.to_string(), "550 5.1.1 a b");
    }

    #[test]
    fn ehlo() {
        let r = ehlo_reply("mx.example", &["PIPELINING".into(), "8BITMIME".into()]);
        assert_eq!(
            wire(&r),
            "250-mx.example\r\n250-PIPELINING\r\n250 8BITMIME\r\n"
        );
        assert!(r.is_positive());
    }

    #[test]
    fn sanitizes_crlf_injection() {
        let r = Reply::new(550, None, "bad\r\n250 ok\x00");
        assert_eq!(wire(&r), "550 bad  250 ok \r\n");
        let r = Reply::multi(250, vec!["x\ny".into(), "tab\there".into()]);
        assert_eq!(wire(&r), "250-x y\r\n250 tab\there\r\n");
    }

    #[test]
    fn empty_text() {
        assert_eq!(wire(&Reply::multi(250, vec![])), "250\r\n");
        assert_eq!(
            wire(&Reply::new(250, Some(EnhancedCode(2, 0, 0)), "")),
            "250 2.0.0\r\n"
        );
        assert_eq!(
            wire(&Reply::multi(250, vec![String::new(), "x".into()])),
            "250-\r\n250 x\r\n"
        );
    }

    #[test]
    fn classes() {
        assert!(Reply::new(354, None, "go").is_positive());
        assert!(Reply::new(451, None, "x").is_transient());
        assert!(!Reply::new(451, None, "x").is_permanent());
        assert!(Reply::new(554, None, "x").is_permanent());
    }
}
