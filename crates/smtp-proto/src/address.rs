//! Mailboxes and envelope paths (RFC 5321 section 4.1.2, extended for UTF-8 by
//! RFC 6531 section 3.3).
//!
//! ```text
//! Reverse-path   = Path / "<>"
//! Forward-path   = Path / "<Postmaster>"     ; "<Postmaster@" Domain ">" is a Path
//! Path           = "<" [ A-d-l ":" ] Mailbox ">"
//! A-d-l          = At-domain *( "," At-domain )   ; source route: accepted, dropped
//! At-domain      = "@" Domain
//! Mailbox        = Local-part "@" ( Domain / address-literal )
//! Local-part     = Dot-string / Quoted-string     ; max 64 octets
//! Dot-string     = Atom *("."  Atom)
//! Atom           = 1*atext                        ; RFC 5322 atext
//! atext          =/ UTF8-non-ascii                ; RFC 6531
//! Quoted-string  = DQUOTE *QcontentSMTP DQUOTE
//! QcontentSMTP   = qtextSMTP / quoted-pairSMTP
//! quoted-pairSMTP = %d92 %d32-126
//! qtextSMTP      = %d32-33 / %d35-91 / %d93-126
//! qtextSMTP      =/ UTF8-non-ascii                ; RFC 6531
//! Domain         = sub-domain *("." sub-domain)   ; max 255 octets
//! sub-domain     = Let-dig [Ldh-str]              ; max 63 octets (RFC 1035)
//! sub-domain     =/ U-label                       ; RFC 6531
//! Let-dig        = ALPHA / DIGIT
//! Ldh-str        = *( ALPHA / DIGIT / "-" ) Let-dig
//! address-literal = "[" ( IPv4-address-literal / IPv6-address-literal /
//!                         General-address-literal ) "]"
//! IPv4-address-literal = Snum 3("."  Snum)        ; Snum = 1*3DIGIT, 0..255
//! IPv6-address-literal = "IPv6:" IPv6-addr
//! General-address-literal = Standardized-tag ":" 1*dcontent
//! Standardized-tag = Ldh-str
//! dcontent       = %d33-90 / %d94-126
//! ```
//!
//! A "U-label" is checked only loosely here (letters, digits, hyphens and
//! non-ASCII characters, no hyphen at either end); IDNA validity is not this
//! crate's business.
//!
//! The whole path, brackets included, may be at most 256 octets (RFC 5321
//! section 4.5.3.1.3).

use std::fmt;
use std::net::Ipv6Addr;

use nom::bytes::complete::{tag, tag_no_case, take_while1};
use nom::character::complete::char;
use nom::combinator::{all_consuming, recognize, verify};
use nom::multi::separated_list1;
use nom::sequence::terminated;
use nom::{IResult, Parser};

/// RFC 5321 section 4.5.3.1.1: longest local part, in octets.
pub const MAX_LOCAL_PART: usize = 64;
/// RFC 5321 section 4.5.3.1.2: longest domain, in octets.
pub const MAX_DOMAIN: usize = 255;
/// RFC 5321 section 4.5.3.1.3: longest reverse- or forward-path, brackets included.
pub const MAX_PATH: usize = 256;
/// RFC 1035 section 2.3.4: longest label of a domain name, in octets.
pub const MAX_LABEL: usize = 63;

/// Why a mailbox or path was refused, for logs; the client is told only
/// "Bad sender/recipient address syntax".
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum AddressError {
    /// Nothing where an address was expected.
    Empty,
    /// Does not match the grammar (bad characters, missing `@`, junk, ...).
    Syntax,
    /// A local part without `@domain` (only `<Postmaster>` may do that).
    NoDomain,
    /// Local part longer than [`MAX_LOCAL_PART`] octets.
    LocalPartTooLong,
    /// Domain longer than [`MAX_DOMAIN`] octets (or a label longer than 63).
    DomainTooLong,
    /// Path longer than [`MAX_PATH`] octets.
    PathTooLong,
    /// A `<` without its `>`.
    Unbalanced,
}

impl fmt::Display for AddressError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            AddressError::Empty => "empty address",
            AddressError::Syntax => "bad address syntax",
            AddressError::NoDomain => "address has no domain",
            AddressError::LocalPartTooLong => "local part too long",
            AddressError::DomainTooLong => "domain too long",
            AddressError::PathTooLong => "path too long",
            AddressError::Unbalanced => "missing '>'",
        })
    }
}

impl std::error::Error for AddressError {}

/// A mailbox: local-part @ domain, the unit of every envelope address.
///
/// `local_part` is stored as the client wrote it, except that quoting that
/// was not needed is removed (`"joe"` becomes `joe`, `"j\oe"` becomes `joe`);
/// when quoting is needed the canonical quoted form is kept (only `"` and
/// `\` escaped). `domain` is kept as written (not lower-cased); address
/// literals keep their brackets, e.g. `[192.0.2.1]`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Mailbox {
    /// The local part, canonically (un)quoted as described above.
    pub local_part: String,
    /// The domain or the bracketed address literal.
    pub domain: String,
}

impl Mailbox {
    /// Parses a bare mailbox `local@domain` (no angle brackets), enforcing the
    /// 64/255-octet limits. UTF-8 is allowed (RFC 6531); whether the session
    /// may use it is the caller's decision (see [`Mailbox::is_ascii`]).
    pub fn parse(s: &str) -> Result<Mailbox, AddressError> {
        if s.is_empty() {
            return Err(AddressError::Empty);
        }
        let (local_written, local_part) = match local_part(s) {
            Ok((rest, (written, canonical))) if rest.starts_with('@') => (written, canonical),
            Ok(("", _)) => return Err(AddressError::NoDomain),
            _ => return Err(AddressError::Syntax),
        };
        let domain = &s[local_written.len() + 1..];
        if local_written.len() > MAX_LOCAL_PART {
            return Err(AddressError::LocalPartTooLong);
        }
        check_domain_or_literal(domain)?;
        Ok(Mailbox {
            local_part,
            domain: domain.to_string(),
        })
    }

    /// True when neither part holds non-ASCII characters, i.e. the address
    /// may be used without the SMTPUTF8 extension.
    pub fn is_ascii(&self) -> bool {
        self.local_part.is_ascii() && self.domain.is_ascii()
    }

    /// True when the domain is an address literal such as `[192.0.2.1]`.
    pub fn is_address_literal(&self) -> bool {
        self.domain.starts_with('[')
    }

    /// The domain lower-cased: what routing and table lookups compare
    /// (domains are case-insensitive, local parts are not).
    pub fn domain_lowercase(&self) -> String {
        self.domain.to_ascii_lowercase()
    }

    /// `local@domain` with the domain lower-cased: two mailboxes with equal
    /// keys are the same mailbox (RFC 5321 leaves local parts' case to the
    /// receiving host, so it is kept).
    pub fn key(&self) -> String {
        format!("{}@{}", self.local_part, self.domain_lowercase())
    }
}

impl std::str::FromStr for Mailbox {
    type Err = AddressError;
    /// Same as [`Mailbox::parse`].
    fn from_str(s: &str) -> Result<Mailbox, AddressError> {
        Mailbox::parse(s)
    }
}

impl fmt::Display for Mailbox {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}@{}", self.local_part, self.domain)
    }
}

/// The MAIL FROM address: a mailbox, or the null sender `<>` used by bounces.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ReversePath {
    /// `<>`: no bounce must ever be sent for this message.
    Null,
    /// `<local@domain>`.
    Mailbox(Mailbox),
}

impl ReversePath {
    /// Reads the bare form [`ReversePath::bare`] writes, the one queue files
    /// and IPC frames carry: `""` is the null sender, anything else must be
    /// a mailbox ([`Mailbox::parse`]).
    pub fn parse_bare(s: &str) -> Result<ReversePath, AddressError> {
        if s.is_empty() {
            Ok(ReversePath::Null)
        } else {
            Mailbox::parse(s).map(ReversePath::Mailbox)
        }
    }

    /// The address without angle brackets, `""` for the null sender (the
    /// stored form; [`Display`](fmt::Display) gives the bracketed wire and
    /// log form).
    pub fn bare(&self) -> String {
        match self {
            ReversePath::Null => String::new(),
            ReversePath::Mailbox(m) => m.to_string(),
        }
    }

    /// The mailbox, None for the null sender.
    pub fn mailbox(&self) -> Option<&Mailbox> {
        match self {
            ReversePath::Null => None,
            ReversePath::Mailbox(m) => Some(m),
        }
    }

    /// True for `<>`, the sender of notifications that must never bounce.
    pub fn is_null(&self) -> bool {
        matches!(self, ReversePath::Null)
    }
}

impl std::str::FromStr for ReversePath {
    type Err = AddressError;
    /// Same as [`ReversePath::parse_bare`]: `""` is the null sender.
    fn from_str(s: &str) -> Result<ReversePath, AddressError> {
        ReversePath::parse_bare(s)
    }
}

impl fmt::Display for ReversePath {
    /// The bracketed wire form, `<>` or `<a@b>`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ReversePath::Null => f.write_str("<>"),
            ReversePath::Mailbox(m) => write!(f, "<{m}>"),
        }
    }
}

/// The RCPT TO address: a mailbox, or the bare `<Postmaster>` every server
/// must accept (RFC 5321 section 4.5.1).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ForwardPath {
    /// `<Postmaster>` without a domain (matched case-insensitively).
    Postmaster,
    /// `<local@domain>`.
    Mailbox(Mailbox),
}

impl fmt::Display for ForwardPath {
    /// The bracketed wire form, `<Postmaster>` or `<a@b>`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ForwardPath::Postmaster => f.write_str("<Postmaster>"),
            ForwardPath::Mailbox(m) => write!(f, "<{m}>"),
        }
    }
}

/// What was between the angle brackets of a path.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum PathContent {
    /// `<>`.
    Null,
    /// `<Postmaster>` (no domain, any case).
    Postmaster,
    /// A mailbox, source route already dropped.
    Mailbox(Mailbox),
}

/// Parses the text between `<` and `>` of a path: empty, `Postmaster`, or
/// `[A-d-l ":"] Mailbox`.
pub(crate) fn parse_path_content(s: &str) -> Result<PathContent, AddressError> {
    if s.is_empty() {
        return Ok(PathContent::Null);
    }
    if s.eq_ignore_ascii_case("postmaster") {
        return Ok(PathContent::Postmaster);
    }
    let rest = if s.starts_with('@') {
        match terminated(source_route, char(':')).parse(s) {
            Ok((rest, ())) => rest,
            Err(_) => return Err(AddressError::Syntax),
        }
    } else {
        s
    };
    Mailbox::parse(rest).map(PathContent::Mailbox)
}

/// Given text starting with `<`, returns the index of the matching `>`,
/// skipping over quoted strings (a `>` may appear inside quotes).
pub(crate) fn find_path_end(s: &str) -> Option<usize> {
    let mut in_quote = false;
    let mut escaped = false;
    for (i, c) in s.char_indices().skip(1) {
        if in_quote {
            if escaped {
                escaped = false;
            } else if c == '\\' {
                escaped = true;
            } else if c == '"' {
                in_quote = false;
            }
        } else if c == '"' {
            in_quote = true;
        } else if c == '>' {
            return Some(i);
        }
    }
    None
}

/// Length in octets of the next whitespace-delimited token, where white
/// space inside a quoted string does not end the token (for unbracketed
/// addresses accepted in lenient mode).
pub(crate) fn token_len(s: &str) -> usize {
    let mut in_quote = false;
    let mut escaped = false;
    for (i, c) in s.char_indices() {
        if in_quote {
            if escaped {
                escaped = false;
            } else if c == '\\' {
                escaped = true;
            } else if c == '"' {
                in_quote = false;
            }
        } else if c == '"' {
            in_quote = true;
        } else if c == ' ' || c == '\t' {
            return i;
        }
    }
    s.len()
}

/// True if `s` is a syntactically valid domain name (RFC 5321 `Domain`,
/// with U-labels), at most 255 octets. Useful for HELO checks.
pub fn valid_domain(s: &str) -> bool {
    s.len() <= MAX_DOMAIN && all_consuming(domain).parse(s).is_ok()
}

/// True if `s` is a valid bracketed address literal: `[192.0.2.1]`,
/// `[IPv6:2001:db8::1]` or a general `[tag:content]` literal.
pub fn valid_address_literal(s: &str) -> bool {
    all_consuming(address_literal).parse(s).is_ok()
}

/// Checks a mailbox domain: `Domain` or `address-literal`, with length limits.
fn check_domain_or_literal(s: &str) -> Result<(), AddressError> {
    if s.is_empty() {
        return Err(AddressError::Syntax);
    }
    if s.starts_with('[') {
        return if valid_address_literal(s) {
            Ok(())
        } else {
            Err(AddressError::Syntax)
        };
    }
    if s.len() > MAX_DOMAIN {
        return Err(AddressError::DomainTooLong);
    }
    if all_consuming(domain).parse(s).is_err() {
        // Tell a label that is too long apart from plain junk.
        let labels_ok = s
            .split('.')
            .all(|l| !l.is_empty() && l.chars().all(|c| c.is_ascii_alphanumeric() || c == '-'));
        return Err(if labels_ok && s.split('.').any(|l| l.len() > MAX_LABEL) {
            AddressError::DomainTooLong
        } else {
            AddressError::Syntax
        });
    }
    Ok(())
}

/// RFC 5322 atext, plus UTF-8 (RFC 6531).
fn is_atext(c: char) -> bool {
    c.is_ascii_alphanumeric() || "!#$%&'*+-/=?^_`{|}~".contains(c) || !c.is_ascii()
}

/// `Atom *("." Atom)`.
fn dot_string(i: &str) -> IResult<&str, &str> {
    recognize(separated_list1(char('.'), take_while1(is_atext))).parse(i)
}

/// True if the (unquoted) text can be written as a Dot-string.
fn is_dot_string(s: &str) -> bool {
    !s.is_empty() && all_consuming(dot_string).parse(s).is_ok()
}

/// `Quoted-string`: returns the unescaped content.
fn quoted_string(i: &str) -> IResult<&str, String> {
    let err = |at| nom::Err::Error(nom::error::Error::new(at, nom::error::ErrorKind::Char));
    let Some(body) = i.strip_prefix('"') else {
        return Err(err(i));
    };
    let mut out = String::new();
    let mut chars = body.char_indices();
    while let Some((pos, c)) = chars.next() {
        match c {
            '"' => return Ok((&body[pos + 1..], out)),
            '\\' => match chars.next() {
                Some((_, e)) if (' '..='~').contains(&e) => out.push(e),
                _ => return Err(err(&body[pos..])),
            },
            c if (' '..='~').contains(&c) || !c.is_ascii() => out.push(c),
            _ => return Err(err(&body[pos..])),
        }
    }
    Err(err(""))
}

/// `Local-part`: returns (the text as written, the canonical form).
fn local_part(i: &str) -> IResult<&str, (&str, String)> {
    if i.starts_with('"') {
        let (rest, content) = quoted_string(i)?;
        let written = &i[..i.len() - rest.len()];
        let canonical = if is_dot_string(&content) {
            content
        } else {
            let mut q = String::with_capacity(content.len() + 2);
            q.push('"');
            for c in content.chars() {
                if c == '"' || c == '\\' {
                    q.push('\\');
                }
                q.push(c);
            }
            q.push('"');
            q
        };
        Ok((rest, (written, canonical)))
    } else {
        let (rest, written) = dot_string(i)?;
        Ok((rest, (written, written.to_string())))
    }
}

/// `sub-domain`: Let-dig [Ldh-str], or a U-label; at most 63 octets.
fn sub_domain(i: &str) -> IResult<&str, &str> {
    verify(
        take_while1(|c: char| c.is_ascii_alphanumeric() || c == '-' || !c.is_ascii()),
        |l: &str| {
            !l.starts_with('-') && !l.ends_with('-') && (l.len() <= MAX_LABEL || !l.is_ascii())
        },
    )
    .parse(i)
}

/// `Domain = sub-domain *("." sub-domain)`.
fn domain(i: &str) -> IResult<&str, &str> {
    recognize(separated_list1(char('.'), sub_domain)).parse(i)
}

/// `address-literal`, brackets included.
fn address_literal(i: &str) -> IResult<&str, &str> {
    let inner = |i| take_while1(|c: char| matches!(c, '!'..='Z' | '^'..='~'))(i);
    recognize(verify(
        (char('['), inner, char(']')),
        |(_, body, _): &(char, &str, char)| valid_literal_body(body),
    ))
    .parse(i)
}

/// The text between the brackets of an address literal.
fn valid_literal_body(body: &str) -> bool {
    if let Ok((v6, _)) = tag_no_case::<_, _, nom::error::Error<&str>>("IPv6:").parse(body) {
        return v6.parse::<Ipv6Addr>().is_ok();
    }
    if body.bytes().all(|b| b.is_ascii_digit() || b == b'.') {
        let parts: Vec<&str> = body.split('.').collect();
        return parts.len() == 4
            && parts.iter().all(|p| {
                !p.is_empty() && p.len() <= 3 && p.parse::<u16>().is_ok_and(|n| n <= 255)
            });
    }
    // General-address-literal = Standardized-tag ":" 1*dcontent
    match body.split_once(':') {
        Some((tag_text, content)) => {
            !content.is_empty()
                && !tag_text.is_empty()
                && tag_text
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '-')
                && !tag_text.ends_with('-')
        }
        None => false,
    }
}

/// `A-d-l = At-domain *( "," At-domain )`; address literals are tolerated.
fn source_route(i: &str) -> IResult<&str, ()> {
    let at_domain = |i| {
        let (i, _) = tag("@")(i)?;
        nom::branch::alt((address_literal, domain)).parse(i)
    };
    let (i, _) = separated_list1(char(','), at_domain).parse(i)?;
    Ok((i, ()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mb(l: &str, d: &str) -> Mailbox {
        Mailbox {
            local_part: l.into(),
            domain: d.into(),
        }
    }

    #[test]
    fn plain_mailboxes() {
        assert_eq!(Mailbox::parse("a@b"), Ok(mb("a", "b")));
        assert_eq!(
            Mailbox::parse("First.Last@Example.COM"),
            Ok(mb("First.Last", "Example.COM"))
        );
        assert_eq!(
            Mailbox::parse("a+tag@sub-1.example.org"),
            Ok(mb("a+tag", "sub-1.example.org"))
        );
        assert_eq!(
            Mailbox::parse("a@b").map(|m| m.to_string()),
            Ok("a@b".into())
        );
    }

    #[test]
    fn quoted_local_parts() {
        assert_eq!(Mailbox::parse("\"joe\"@b"), Ok(mb("joe", "b")));
        assert_eq!(Mailbox::parse("\"j\\oe\"@b"), Ok(mb("joe", "b")));
        assert_eq!(Mailbox::parse("\"a b\"@b"), Ok(mb("\"a b\"", "b")));
        assert_eq!(Mailbox::parse("\"a\\\"b\"@b"), Ok(mb("\"a\\\"b\"", "b")));
        assert_eq!(Mailbox::parse("\"a@b\"@c"), Ok(mb("\"a@b\"", "c")));
        assert_eq!(Mailbox::parse("\"\"@c"), Ok(mb("\"\"", "c")));
        assert_eq!(Mailbox::parse("\"a..b\"@c"), Ok(mb("\"a..b\"", "c")));
        assert_eq!(Mailbox::parse("\"a\"b@c"), Err(AddressError::Syntax));
        assert_eq!(
            Mailbox::parse("\"unterminated@c"),
            Err(AddressError::Syntax)
        );
        assert_eq!(Mailbox::parse("\"tab\there\"@c"), Err(AddressError::Syntax));
    }

    #[test]
    fn address_literals() {
        assert_eq!(Mailbox::parse("a@[192.0.2.1]"), Ok(mb("a", "[192.0.2.1]")));
        assert_eq!(Mailbox::parse("a@[IPv6:::1]"), Ok(mb("a", "[IPv6:::1]")));
        assert_eq!(
            Mailbox::parse("a@[ipv6:2001:db8::1]"),
            Ok(mb("a", "[ipv6:2001:db8::1]"))
        );
        assert_eq!(
            Mailbox::parse("a@[IPv6:::ffff:1.2.3.4]"),
            Ok(mb("a", "[IPv6:::ffff:1.2.3.4]"))
        );
        assert_eq!(
            Mailbox::parse("a@[x-tag:stuff]"),
            Ok(mb("a", "[x-tag:stuff]"))
        );
        for bad in [
            "a@[256.0.0.1]",
            "a@[1.2.3]",
            "a@[1.2.3.4.5]",
            "a@[IPv6:zz]",
            "a@[1.2.3.4",
            "a@[]",
            "a@[1.2.3.4]x",
            "a@[0001.2.3.4]",
        ] {
            assert_eq!(Mailbox::parse(bad), Err(AddressError::Syntax), "{bad}");
        }
        assert!(valid_address_literal("[1.2.3.4]"));
        assert!(!valid_address_literal("1.2.3.4"));
    }

    #[test]
    fn bad_mailboxes() {
        assert_eq!(Mailbox::parse(""), Err(AddressError::Empty));
        assert_eq!(Mailbox::parse("user"), Err(AddressError::NoDomain));
        for bad in [
            "@b", "a@", "a@@b", "a.@b", ".a@b", "a..b@c", "a@b.", "a@.b", "a@-b", "a@b-", "a@b..c",
            "a b@c", "a@b c", "a@b>", "<a@b>", "a@b_c", "a\u{0}@b",
        ] {
            assert_eq!(Mailbox::parse(bad), Err(AddressError::Syntax), "{bad:?}");
        }
    }

    #[test]
    fn limits() {
        let l64 = "l".repeat(64);
        assert!(Mailbox::parse(&format!("{l64}@b")).is_ok());
        assert_eq!(
            Mailbox::parse(&format!("{l64}x@b")),
            Err(AddressError::LocalPartTooLong)
        );
        let quoted = format!("\"{}\"@b", "x".repeat(63));
        assert_eq!(Mailbox::parse(&quoted), Err(AddressError::LocalPartTooLong));
        let label = "d".repeat(63);
        let dom = format!("{label}.{label}.{label}.{label}"); // 255
        assert_eq!(dom.len(), 255);
        assert!(Mailbox::parse(&format!("a@{dom}")).is_ok());
        assert_eq!(
            Mailbox::parse(&format!("a@x{dom}")),
            Err(AddressError::DomainTooLong)
        );
        assert_eq!(
            Mailbox::parse(&format!("a@x{label}.b")),
            Err(AddressError::DomainTooLong)
        );
    }

    #[test]
    fn utf8() {
        let m = Mailbox::parse("δοκιμή@παράδειγμα.δοκιμή").expect("utf8 mailbox");
        assert!(!m.is_ascii());
        assert!(Mailbox::parse("a@b").is_ok_and(|m| m.is_ascii()));
        assert!(valid_domain("bücher.example"));
    }

    #[test]
    fn path_contents() {
        assert_eq!(parse_path_content(""), Ok(PathContent::Null));
        assert_eq!(
            parse_path_content("POSTMASTER"),
            Ok(PathContent::Postmaster)
        );
        assert_eq!(
            parse_path_content("@x,@y:a@b"),
            Ok(PathContent::Mailbox(mb("a", "b")))
        );
        assert_eq!(
            parse_path_content("@x:a@b"),
            Ok(PathContent::Mailbox(mb("a", "b")))
        );
        assert_eq!(parse_path_content("@x,a@b"), Err(AddressError::Syntax));
        assert_eq!(parse_path_content("@:a@b"), Err(AddressError::Syntax));
    }

    #[test]
    fn path_end_and_tokens() {
        assert_eq!(find_path_end("<a@b>"), Some(4));
        assert_eq!(find_path_end("<\"x>\"@b> y"), Some(7));
        assert_eq!(find_path_end("<\"x\\\">\"@b>"), Some(9));
        assert_eq!(find_path_end("<a@b"), None);
        assert_eq!(token_len("a@b SIZE=1"), 3);
        assert_eq!(token_len("\"a b\"@c x"), 7);
        assert_eq!(token_len("abc"), 3);
    }

    #[test]
    fn domains() {
        assert!(valid_domain("mx1.example.com"));
        assert!(valid_domain("localhost"));
        assert!(!valid_domain("a_b.example"));
        assert!(!valid_domain(""));
        assert!(!valid_domain("[1.2.3.4]"));
    }
}
