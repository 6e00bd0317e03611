//! SMTP command lines (RFC 5321 section 4.1.1 and the extensions Postern
//! knows about) parsed into [`Command`], or refused with a [`CommandError`]
//! that knows its reply.
//!
//! ```text
//! helo     = "HELO" SP Domain CRLF
//! ehlo     = "EHLO" SP ( Domain / address-literal ) CRLF
//! mail     = "MAIL FROM:" Reverse-path [SP Mail-parameters] CRLF
//! rcpt     = "RCPT TO:" ( "<Postmaster@" Domain ">" / "<Postmaster>" /
//!            Forward-path ) [SP Rcpt-parameters] CRLF
//! Mail-parameters = esmtp-param *(SP esmtp-param)
//! Rcpt-parameters = esmtp-param *(SP esmtp-param)
//! data     = "DATA" CRLF
//! rset     = "RSET" CRLF
//! vrfy     = "VRFY" SP String CRLF
//! expn     = "EXPN" SP String CRLF
//! help     = "HELP" [ SP String ] CRLF
//! noop     = "NOOP" [ SP String ] CRLF
//! quit     = "QUIT" CRLF
//! starttls = "STARTTLS" CRLF                                  ; RFC 3207
//! auth     = "AUTH" SP sasl-mech [SP initial-response] CRLF    ; RFC 4954
//! sasl-mech = 1*20(UPPER-ALPHA / DIGIT / "-" / "_")
//! initial-response = base64 / "="
//! bdat     = "BDAT" SP chunk-size [ SP end-marker ] CRLF       ; RFC 3030
//! chunk-size = 1*DIGIT
//! end-marker = "LAST"
//! etrn     = "ETRN" SP [ "@" / "#" ] domain CRLF               ; RFC 1985
//! ```
//!
//! Verbs and the `FROM:`/`TO:` keywords are case-insensitive. Leading and
//! trailing white space is ignored and arguments may be separated by more
//! than one SP or HT. Leniencies, as Postfix with
//! `strict_rfc821_envelopes = no`: `MAIL FROM: <a@b>` (white space after the
//! colon) and `MAIL FROM:a@b` (no brackets); [`ParseOptions`] turns them off.
//! QUIT ignores any argument so a sloppy client can always leave.
//!
//! SECURITY: the input is raw network bytes. Nothing here panics on any
//! input (a proptest checks it), control characters other than HT are
//! refused, and non-ASCII is refused unless [`ParseOptions::allow_utf8`].

use std::fmt;

use crate::address::{
    AddressError, ForwardPath, MAX_PATH, PathContent, ReversePath, find_path_end,
    parse_path_content, token_len,
};
use crate::params::{Param, parse_param};
use crate::reply::{EnhancedCode, Reply};

/// The text of [`CommandError::BadAddress`] for a MAIL FROM address (5.1.7).
pub const BAD_SENDER: &str = "Bad sender address syntax";
/// The text of [`CommandError::BadAddress`] for a RCPT TO address (5.1.3).
pub const BAD_RECIPIENT: &str = "Bad recipient address syntax";

/// One SMTP command, parsed; what smtpd's command table dispatches on.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Command {
    /// `HELO domain`; the argument is kept as written.
    Helo {
        /// The client's name for itself, not validated (smtpd decides).
        domain: String,
    },
    /// `EHLO domain`; domain or address literal, as written.
    Ehlo {
        /// The client's name for itself, not validated (smtpd decides).
        domain: String,
    },
    /// `MAIL FROM:<reverse-path> [params]`.
    Mail {
        /// The sender, possibly null.
        from: ReversePath,
        /// ESMTP parameters in the order given; see [`crate::MailParams`].
        params: Vec<Param>,
    },
    /// `RCPT TO:<forward-path> [params]`.
    Rcpt {
        /// The recipient.
        to: ForwardPath,
        /// ESMTP parameters in the order given; see [`crate::RcptParams`].
        params: Vec<Param>,
    },
    /// `DATA`.
    Data,
    /// `RSET`.
    Rset,
    /// `QUIT` (arguments ignored).
    Quit,
    /// `STARTTLS`.
    StartTls,
    /// `NOOP [string]`.
    Noop {
        /// The ignored argument, if any.
        arg: Option<String>,
    },
    /// `VRFY string`.
    Vrfy {
        /// The name or address to verify, as written.
        arg: String,
    },
    /// `EXPN string`.
    Expn {
        /// The list to expand, as written.
        arg: String,
    },
    /// `HELP [string]`.
    Help {
        /// The topic, if any.
        arg: Option<String>,
    },
    /// `AUTH mechanism [initial-response]`.
    Auth {
        /// The SASL mechanism, upper-cased.
        mechanism: String,
        /// The base64 initial response, or `"="` for an empty one.
        initial_response: Option<String>,
    },
    /// `BDAT size [LAST]`: parsed so smtpd can answer precisely (and know
    /// how many bytes to skip), although CHUNKING is not advertised.
    Bdat {
        /// The chunk size in octets.
        size: u64,
        /// `LAST` was given.
        last: bool,
    },
    /// `ETRN [@|#]domain`.
    Etrn {
        /// The argument as written.
        arg: String,
    },
}

impl fmt::Display for Command {
    /// The canonical wire form without CRLF, e.g. `MAIL FROM:<a@b> SIZE=10`.
    /// Parsing it again gives back the same command.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let params = |f: &mut fmt::Formatter<'_>, ps: &[Param]| {
            for p in ps {
                write!(f, " {p}")?;
            }
            Ok(())
        };
        match self {
            Command::Helo { domain } => write!(f, "HELO {domain}"),
            Command::Ehlo { domain } => write!(f, "EHLO {domain}"),
            Command::Mail { from, params: ps } => {
                write!(f, "MAIL FROM:{from}")?;
                params(f, ps)
            }
            Command::Rcpt { to, params: ps } => {
                write!(f, "RCPT TO:{to}")?;
                params(f, ps)
            }
            Command::Data => f.write_str("DATA"),
            Command::Rset => f.write_str("RSET"),
            Command::Quit => f.write_str("QUIT"),
            Command::StartTls => f.write_str("STARTTLS"),
            Command::Noop { arg: None } => f.write_str("NOOP"),
            Command::Noop { arg: Some(a) } => write!(f, "NOOP {a}"),
            Command::Vrfy { arg } => write!(f, "VRFY {arg}"),
            Command::Expn { arg } => write!(f, "EXPN {arg}"),
            Command::Help { arg: None } => f.write_str("HELP"),
            Command::Help { arg: Some(a) } => write!(f, "HELP {a}"),
            Command::Auth {
                mechanism,
                initial_response: None,
            } => write!(f, "AUTH {mechanism}"),
            Command::Auth {
                mechanism,
                initial_response: Some(r),
            } => write!(f, "AUTH {mechanism} {r}"),
            Command::Bdat { size, last: false } => write!(f, "BDAT {size}"),
            Command::Bdat { size, last: true } => write!(f, "BDAT {size} LAST"),
            Command::Etrn { arg } => write!(f, "ETRN {arg}"),
        }
    }
}

/// Why a command line was refused; `reply()` gives the SMTP reply to send.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum CommandError {
    /// Blank line: `500 5.5.2 Error: bad syntax`.
    Empty,
    /// Unknown verb: `500 5.5.2 Error: command not recognized`.
    Unknown {
        /// The verb as sent (for logs only; never echoed to the client).
        verb: String,
    },
    /// Bad arguments: `501 5.5.4 <message>`, e.g. `Syntax: MAIL FROM:<address>`.
    Syntax {
        /// The full reply text.
        message: String,
    },
    /// Bad path: `501 5.1.7 Bad sender address syntax` when `message` is
    /// [`BAD_SENDER`], otherwise `501 5.1.3 <message>` (normally [`BAD_RECIPIENT`]).
    BadAddress {
        /// The full reply text.
        message: String,
    },
    /// Non-ASCII bytes where they are not allowed (UTF-8 disabled, or not
    /// valid UTF-8): `500 5.5.2 Error: non-ASCII command`.
    NonAscii,
}

impl CommandError {
    /// The reply smtpd sends for this error.
    pub fn reply(&self) -> Reply {
        match self {
            CommandError::Empty => {
                Reply::new(500, Some(EnhancedCode(5, 5, 2)), "Error: bad syntax")
            }
            CommandError::Unknown { .. } => Reply::new(
                500,
                Some(EnhancedCode(5, 5, 2)),
                "Error: command not recognized",
            ),
            CommandError::Syntax { message } => {
                Reply::new(501, Some(EnhancedCode(5, 5, 4)), message.clone())
            }
            CommandError::BadAddress { message } => {
                let detail = if message.starts_with("Bad sender") {
                    7
                } else {
                    3
                };
                Reply::new(501, Some(EnhancedCode(5, 1, detail)), message.clone())
            }
            CommandError::NonAscii => {
                Reply::new(500, Some(EnhancedCode(5, 5, 2)), "Error: non-ASCII command")
            }
        }
    }
}

impl fmt::Display for CommandError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.reply())
    }
}

impl std::error::Error for CommandError {}

/// How lenient [`parse_command`] is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ParseOptions {
    /// `strict_rfc821_envelopes`: refuse `MAIL FROM: <a@b>` and `MAIL FROM:a@b`.
    pub strict_rfc821_envelopes: bool,
    /// Accept UTF-8 in commands (RFC 6531 SMTPUTF8); otherwise non-ASCII is
    /// [`CommandError::NonAscii`].
    pub allow_utf8: bool,
}

impl Default for ParseOptions {
    /// Postfix's defaults: lenient envelopes, UTF-8 accepted.
    fn default() -> Self {
        ParseOptions {
            strict_rfc821_envelopes: false,
            allow_utf8: true,
        }
    }
}

fn syntax(message: &str) -> CommandError {
    CommandError::Syntax {
        message: message.to_string(),
    }
}

fn is_ws(c: char) -> bool {
    c == ' ' || c == '\t'
}

/// Parses one command line WITHOUT its CRLF. Verbs are case-insensitive.
/// Lenient as Postfix with `strict_rfc821_envelopes = no`:
/// `MAIL FROM: <a@b>` and `MAIL FROM:a@b` are accepted; with strict they are
/// 501. Source routes `<@x,@y:a@b>` are accepted and dropped. The null sender
/// is only for MAIL (`RCPT TO:<>` is 501 5.1.3). A local part over 64
/// octets, a domain over 255 or a path over 256 is 501.
pub fn parse_command(line: &[u8], opts: &ParseOptions) -> Result<Command, CommandError> {
    if line.iter().all(|&b| b == b' ' || b == b'\t') {
        return Err(CommandError::Empty);
    }
    if !line.is_ascii() && !opts.allow_utf8 {
        return Err(CommandError::NonAscii);
    }
    let text = std::str::from_utf8(line).map_err(|_| CommandError::NonAscii)?;
    let text = text.trim_matches(is_ws);
    let (verb, rest) = match text.find(is_ws) {
        Some(i) => (&text[..i], text[i..].trim_start_matches(is_ws)),
        None => (text, ""),
    };
    let upper = verb.to_ascii_uppercase();
    let known = matches!(
        upper.as_str(),
        "HELO"
            | "EHLO"
            | "MAIL"
            | "RCPT"
            | "DATA"
            | "RSET"
            | "QUIT"
            | "STARTTLS"
            | "NOOP"
            | "VRFY"
            | "EXPN"
            | "HELP"
            | "AUTH"
            | "BDAT"
            | "ETRN"
    );
    if !known {
        return Err(CommandError::Unknown {
            verb: verb.to_string(),
        });
    }
    if rest.chars().any(|c| c.is_control() && c != '\t') {
        return Err(syntax("Syntax: control character in command"));
    }
    let opt_arg = |rest: &str| (!rest.is_empty()).then(|| rest.to_string());
    let no_arg = |cmd: Command, msg: &str| {
        if rest.is_empty() {
            Ok(cmd)
        } else {
            Err(syntax(msg))
        }
    };
    let need_arg = |msg: &str| {
        if rest.is_empty() {
            Err(syntax(msg))
        } else {
            Ok(rest.to_string())
        }
    };
    match upper.as_str() {
        "HELO" => need_arg("Syntax: HELO hostname").map(|domain| Command::Helo { domain }),
        "EHLO" => need_arg("Syntax: EHLO hostname").map(|domain| Command::Ehlo { domain }),
        "MAIL" => parse_mail(rest, opts),
        "RCPT" => parse_rcpt(rest, opts),
        "DATA" => no_arg(Command::Data, "Syntax: DATA"),
        "RSET" => no_arg(Command::Rset, "Syntax: RSET"),
        "QUIT" => Ok(Command::Quit),
        "STARTTLS" => no_arg(Command::StartTls, "Syntax: STARTTLS"),
        "NOOP" => Ok(Command::Noop { arg: opt_arg(rest) }),
        "VRFY" => need_arg("Syntax: VRFY address").map(|arg| Command::Vrfy { arg }),
        "EXPN" => need_arg("Syntax: EXPN mailing-list").map(|arg| Command::Expn { arg }),
        "HELP" => Ok(Command::Help { arg: opt_arg(rest) }),
        "AUTH" => parse_auth(rest),
        "BDAT" => parse_bdat(rest),
        _ => need_arg("Syntax: ETRN destination").map(|arg| Command::Etrn { arg }),
    }
}

/// `FROM:` / `TO:` followed by a path and parameters; returns the path
/// content and the parameters.
fn parse_path_and_params(
    rest: &str,
    keyword: &str,
    usage: &str,
    bad: &str,
    param_error: &str,
    opts: &ParseOptions,
) -> Result<(PathContent, Vec<Param>), CommandError> {
    let bad_address = || CommandError::BadAddress {
        message: bad.to_string(),
    };
    let kw_len = keyword.len();
    let after = match rest.get(..kw_len) {
        Some(k) if k.eq_ignore_ascii_case(keyword) => &rest[kw_len..],
        _ => return Err(syntax(usage)),
    };
    let after = if opts.strict_rfc821_envelopes {
        if after.starts_with(is_ws) {
            return Err(syntax(usage));
        }
        after
    } else {
        after.trim_start_matches(is_ws)
    };
    if after.is_empty() {
        return Err(syntax(usage));
    }
    let (content, tail) = if after.starts_with('<') {
        let end = find_path_end(after).ok_or_else(bad_address)?;
        if end + 1 > MAX_PATH {
            return Err(bad_address());
        }
        let content = parse_path_content(&after[1..end]).map_err(|_| bad_address())?;
        let tail = &after[end + 1..];
        if !tail.is_empty() && !tail.starts_with(is_ws) {
            return Err(bad_address());
        }
        (content, tail)
    } else {
        if opts.strict_rfc821_envelopes {
            return Err(bad_address());
        }
        let len = token_len(after);
        if len + 2 > MAX_PATH {
            return Err(bad_address());
        }
        let content = match parse_path_content(&after[..len]) {
            Ok(c) => c,
            Err(_) => return Err(bad_address()),
        };
        (content, &after[len..])
    };
    let mut params = Vec::new();
    for word in tail.split(is_ws).filter(|w| !w.is_empty()) {
        params.push(parse_param(word).ok_or_else(|| syntax(param_error))?);
    }
    Ok((content, params))
}

fn parse_mail(rest: &str, opts: &ParseOptions) -> Result<Command, CommandError> {
    let (content, params) = parse_path_and_params(
        rest,
        "FROM:",
        "Syntax: MAIL FROM:<address>",
        BAD_SENDER,
        "Bad MAIL parameter syntax",
        opts,
    )?;
    let from = match content {
        PathContent::Null => ReversePath::Null,
        PathContent::Mailbox(m) => ReversePath::Mailbox(m),
        PathContent::Postmaster => {
            return Err(CommandError::BadAddress {
                message: BAD_SENDER.to_string(),
            });
        }
    };
    Ok(Command::Mail { from, params })
}

fn parse_rcpt(rest: &str, opts: &ParseOptions) -> Result<Command, CommandError> {
    let (content, params) = parse_path_and_params(
        rest,
        "TO:",
        "Syntax: RCPT TO:<address>",
        BAD_RECIPIENT,
        "Bad RCPT parameter syntax",
        opts,
    )?;
    let to = match content {
        PathContent::Postmaster => ForwardPath::Postmaster,
        PathContent::Mailbox(m) => ForwardPath::Mailbox(m),
        PathContent::Null => {
            return Err(CommandError::BadAddress {
                message: BAD_RECIPIENT.to_string(),
            });
        }
    };
    Ok(Command::Rcpt { to, params })
}

fn parse_auth(rest: &str) -> Result<Command, CommandError> {
    const USAGE: &str = "Syntax: AUTH mechanism [initial-response]";
    let mut words = rest.split(is_ws).filter(|w| !w.is_empty());
    let mechanism = words.next().ok_or_else(|| syntax(USAGE))?;
    let response = words.next();
    if words.next().is_some() {
        return Err(syntax(USAGE));
    }
    let mech_ok = mechanism.len() <= 20
        && mechanism
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_');
    if !mech_ok {
        return Err(syntax(USAGE));
    }
    if let Some(r) = response
        && r != "="
        && !is_base64(r)
    {
        return Err(syntax(USAGE));
    }
    Ok(Command::Auth {
        mechanism: mechanism.to_ascii_uppercase(),
        initial_response: response.map(str::to_string),
    })
}

/// Base64 alphabet with at most two trailing `=` (RFC 4648 section 4).
fn is_base64(s: &str) -> bool {
    let body = s.trim_end_matches('=');
    s.len() - body.len() <= 2
        && !body.is_empty()
        && body
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'+' || b == b'/')
}

fn parse_bdat(rest: &str) -> Result<Command, CommandError> {
    const USAGE: &str = "Syntax: BDAT chunk-size [LAST]";
    let mut words = rest.split(is_ws).filter(|w| !w.is_empty());
    let size = words
        .next()
        .filter(|w| w.bytes().all(|b| b.is_ascii_digit()))
        .and_then(|w| w.parse::<u64>().ok())
        .ok_or_else(|| syntax(USAGE))?;
    let last = match words.next() {
        None => false,
        Some(w) if w.eq_ignore_ascii_case("LAST") => true,
        Some(_) => return Err(syntax(USAGE)),
    };
    if words.next().is_some() {
        return Err(syntax(USAGE));
    }
    Ok(Command::Bdat { size, last })
}

/// Why an address was refused, for logs: re-parses a MAIL/RCPT path so
/// smtpd can log a precise reason while telling the client only 501.
pub fn address_error_detail(path: &str) -> Option<AddressError> {
    let inner = path
        .strip_prefix('<')
        .and_then(|p| p.strip_suffix('>'))
        .unwrap_or(path);
    parse_path_content(inner).err()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::address::Mailbox;

    fn lenient(s: &str) -> Result<Command, CommandError> {
        parse_command(s.as_bytes(), &ParseOptions::default())
    }

    fn strict(s: &str) -> Result<Command, CommandError> {
        parse_command(
            s.as_bytes(),
            &ParseOptions {
                strict_rfc821_envelopes: true,
                allow_utf8: true,
            },
        )
    }

    fn mb(l: &str, d: &str) -> Mailbox {
        Mailbox {
            local_part: l.into(),
            domain: d.into(),
        }
    }

    fn mail(l: &str, d: &str) -> Command {
        Command::Mail {
            from: ReversePath::Mailbox(mb(l, d)),
            params: vec![],
        }
    }

    fn rcpt(l: &str, d: &str) -> Command {
        Command::Rcpt {
            to: ForwardPath::Mailbox(mb(l, d)),
            params: vec![],
        }
    }

    fn param(k: &str, v: Option<&str>) -> Param {
        Param {
            keyword: k.into(),
            value: v.map(Into::into),
        }
    }

    /// The reply text a line gets, or "ok".
    fn reply_of(s: &str) -> String {
        match lenient(s) {
            Ok(_) => "ok".into(),
            Err(e) => e.reply().to_string(),
        }
    }

    #[test]
    fn simple_verbs() {
        let table: &[(&str, Command)] = &[
            (
                "HELO mx.example",
                Command::Helo {
                    domain: "mx.example".into(),
                },
            ),
            (
                "helo  mx.example  ",
                Command::Helo {
                    domain: "mx.example".into(),
                },
            ),
            (
                "EHLO [192.0.2.1]",
                Command::Ehlo {
                    domain: "[192.0.2.1]".into(),
                },
            ),
            (
                "ehlo bad_name here",
                Command::Ehlo {
                    domain: "bad_name here".into(),
                },
            ),
            ("DATA", Command::Data),
            ("data ", Command::Data),
            ("RSET", Command::Rset),
            ("QUIT", Command::Quit),
            ("quit now please", Command::Quit),
            ("STARTTLS", Command::StartTls),
            ("NOOP", Command::Noop { arg: None }),
            (
                "NOOP hello there",
                Command::Noop {
                    arg: Some("hello there".into()),
                },
            ),
            ("VRFY joe", Command::Vrfy { arg: "joe".into() }),
            (
                "EXPN staff",
                Command::Expn {
                    arg: "staff".into(),
                },
            ),
            ("HELP", Command::Help { arg: None }),
            (
                "HELP mail",
                Command::Help {
                    arg: Some("mail".into()),
                },
            ),
            (
                "AUTH plain",
                Command::Auth {
                    mechanism: "PLAIN".into(),
                    initial_response: None,
                },
            ),
            (
                "AUTH PLAIN AGpvZQBzZWNyZXQ=",
                Command::Auth {
                    mechanism: "PLAIN".into(),
                    initial_response: Some("AGpvZQBzZWNyZXQ=".into()),
                },
            ),
            (
                "AUTH EXTERNAL =",
                Command::Auth {
                    mechanism: "EXTERNAL".into(),
                    initial_response: Some("=".into()),
                },
            ),
            (
                "AUTH SCRAM-SHA-256",
                Command::Auth {
                    mechanism: "SCRAM-SHA-256".into(),
                    initial_response: None,
                },
            ),
            (
                "BDAT 100",
                Command::Bdat {
                    size: 100,
                    last: false,
                },
            ),
            (
                "BDAT 0 last",
                Command::Bdat {
                    size: 0,
                    last: true,
                },
            ),
            (
                "ETRN @example.org",
                Command::Etrn {
                    arg: "@example.org".into(),
                },
            ),
            ("\tNOOP", Command::Noop { arg: None }),
        ];
        for (line, want) in table {
            assert_eq!(lenient(line).as_ref(), Ok(want), "{line:?}");
        }
    }

    #[test]
    fn error_replies() {
        let table: &[(&str, &str)] = &[
            ("", "500 5.5.2 Error: bad syntax"),
            ("   \t", "500 5.5.2 Error: bad syntax"),
            ("FOO bar", "500 5.5.2 Error: command not recognized"),
            ("MAILFROM:<a@b>", "500 5.5.2 Error: command not recognized"),
            ("HELO", "501 5.5.4 Syntax: HELO hostname"),
            ("EHLO ", "501 5.5.4 Syntax: EHLO hostname"),
            ("MAIL", "501 5.5.4 Syntax: MAIL FROM:<address>"),
            ("MAIL TO:<a@b>", "501 5.5.4 Syntax: MAIL FROM:<address>"),
            ("MAIL FROM <a@b>", "501 5.5.4 Syntax: MAIL FROM:<address>"),
            ("MAIL FROM:", "501 5.5.4 Syntax: MAIL FROM:<address>"),
            ("RCPT", "501 5.5.4 Syntax: RCPT TO:<address>"),
            ("RCPT FROM:<a@b>", "501 5.5.4 Syntax: RCPT TO:<address>"),
            ("DATA x", "501 5.5.4 Syntax: DATA"),
            ("RSET x", "501 5.5.4 Syntax: RSET"),
            ("STARTTLS x", "501 5.5.4 Syntax: STARTTLS"),
            ("VRFY", "501 5.5.4 Syntax: VRFY address"),
            ("EXPN", "501 5.5.4 Syntax: EXPN mailing-list"),
            ("ETRN", "501 5.5.4 Syntax: ETRN destination"),
            (
                "AUTH",
                "501 5.5.4 Syntax: AUTH mechanism [initial-response]",
            ),
            (
                "AUTH PLAIN a b",
                "501 5.5.4 Syntax: AUTH mechanism [initial-response]",
            ),
            (
                "AUTH PLAIN ab$",
                "501 5.5.4 Syntax: AUTH mechanism [initial-response]",
            ),
            (
                "AUTH PLAIN a===",
                "501 5.5.4 Syntax: AUTH mechanism [initial-response]",
            ),
            (
                "AUTH PL@IN",
                "501 5.5.4 Syntax: AUTH mechanism [initial-response]",
            ),
            (
                "AUTH ABCDEFGHIJKLMNOPQRSTU",
                "501 5.5.4 Syntax: AUTH mechanism [initial-response]",
            ),
            ("BDAT", "501 5.5.4 Syntax: BDAT chunk-size [LAST]"),
            ("BDAT -1", "501 5.5.4 Syntax: BDAT chunk-size [LAST]"),
            ("BDAT +1", "501 5.5.4 Syntax: BDAT chunk-size [LAST]"),
            (
                "BDAT 99999999999999999999999",
                "501 5.5.4 Syntax: BDAT chunk-size [LAST]",
            ),
            ("BDAT 1 FIRST", "501 5.5.4 Syntax: BDAT chunk-size [LAST]"),
            ("BDAT 1 LAST x", "501 5.5.4 Syntax: BDAT chunk-size [LAST]"),
            (
                "HELO a\rb",
                "501 5.5.4 Syntax: control character in command",
            ),
            ("NOOP \0", "501 5.5.4 Syntax: control character in command"),
            (
                "MAIL FROM:<a@b> SIZE=",
                "501 5.5.4 Bad MAIL parameter syntax",
            ),
            ("MAIL FROM:<a@b> =1", "501 5.5.4 Bad MAIL parameter syntax"),
            (
                "RCPT TO:<a@b> NOTIFY=a=b",
                "501 5.5.4 Bad RCPT parameter syntax",
            ),
        ];
        for (line, want) in table {
            assert_eq!(reply_of(line), *want, "{line:?}");
        }
    }

    #[test]
    fn mail_from() {
        assert_eq!(lenient("MAIL FROM:<a@b>"), Ok(mail("a", "b")));
        assert_eq!(
            lenient("mail from:<A@B.example>"),
            Ok(mail("A", "B.example"))
        );
        assert_eq!(
            lenient("MAIL FROM:<>"),
            Ok(Command::Mail {
                from: ReversePath::Null,
                params: vec![]
            })
        );
        assert_eq!(lenient("MAIL FROM:<\"joe\"@b>"), Ok(mail("joe", "b")));
        assert_eq!(
            lenient("MAIL FROM:<\"j o>e\"@b>"),
            Ok(mail("\"j o>e\"", "b"))
        );
        assert_eq!(
            lenient("MAIL FROM:<a@[1.2.3.4]>"),
            Ok(mail("a", "[1.2.3.4]"))
        );
        assert_eq!(
            lenient("MAIL FROM:<a@[IPv6:::1]>"),
            Ok(mail("a", "[IPv6:::1]"))
        );
        assert_eq!(lenient("MAIL FROM:<@x,@y:a@b>"), Ok(mail("a", "b")));
        assert_eq!(lenient("MAIL FROM:<a@b>  "), Ok(mail("a", "b")));
        assert_eq!(
            lenient("MAIL FROM:<δ@παράδειγμα.δοκιμή>"),
            Ok(mail("δ", "παράδειγμα.δοκιμή"))
        );
    }

    #[test]
    fn mail_params() {
        let got =
            lenient("MAIL FROM:<a@b> SIZE=123 BODY=8BITMIME SMTPUTF8 RET=HDRS ENVID=x auth=<>");
        let want = Command::Mail {
            from: ReversePath::Mailbox(mb("a", "b")),
            params: vec![
                param("SIZE", Some("123")),
                param("BODY", Some("8BITMIME")),
                param("SMTPUTF8", None),
                param("RET", Some("HDRS")),
                param("ENVID", Some("x")),
                param("AUTH", Some("<>")),
            ],
        };
        assert_eq!(got, Ok(want));
        let got = lenient("RCPT TO:<a@b> NOTIFY=SUCCESS,FAILURE ORCPT=rfc822;a@b");
        let want = Command::Rcpt {
            to: ForwardPath::Mailbox(mb("a", "b")),
            params: vec![
                param("NOTIFY", Some("SUCCESS,FAILURE")),
                param("ORCPT", Some("rfc822;a@b")),
            ],
        };
        assert_eq!(got, Ok(want));
        assert_eq!(
            lenient("MAIL FROM:a@b  size=1"),
            Ok(Command::Mail {
                from: ReversePath::Mailbox(mb("a", "b")),
                params: vec![param("SIZE", Some("1"))]
            })
        );
    }

    #[test]
    fn lenient_and_strict_envelopes() {
        assert_eq!(lenient("MAIL FROM: <a@b>"), Ok(mail("a", "b")));
        assert_eq!(lenient("MAIL FROM:a@b"), Ok(mail("a", "b")));
        assert_eq!(lenient("RCPT TO: c@d"), Ok(rcpt("c", "d")));
        assert_eq!(strict("MAIL FROM:<a@b>"), Ok(mail("a", "b")));
        assert_eq!(
            strict("MAIL FROM: <a@b>").map_err(|e| e.reply().to_string()),
            Err("501 5.5.4 Syntax: MAIL FROM:<address>".into())
        );
        assert_eq!(
            strict("MAIL FROM:a@b").map_err(|e| e.reply().to_string()),
            Err("501 5.1.7 Bad sender address syntax".into())
        );
        assert_eq!(
            strict("RCPT TO:c@d").map_err(|e| e.reply().to_string()),
            Err("501 5.1.3 Bad recipient address syntax".into())
        );
        assert_eq!(
            strict("RCPT TO:<c@d> NOTIFY=NEVER").map(|c| c.to_string()),
            Ok("RCPT TO:<c@d> NOTIFY=NEVER".into())
        );
    }

    #[test]
    fn rcpt_to() {
        assert_eq!(lenient("RCPT TO:<c@d>"), Ok(rcpt("c", "d")));
        assert_eq!(
            lenient("rcpt to:<Postmaster>"),
            Ok(Command::Rcpt {
                to: ForwardPath::Postmaster,
                params: vec![]
            })
        );
        assert_eq!(
            lenient("RCPT TO:<POSTMASTER>"),
            Ok(Command::Rcpt {
                to: ForwardPath::Postmaster,
                params: vec![]
            })
        );
        assert_eq!(
            lenient("RCPT TO:<postmaster@d>"),
            Ok(rcpt("postmaster", "d"))
        );
        assert_eq!(lenient("RCPT TO:<@hop:c@d>"), Ok(rcpt("c", "d")));
    }

    #[test]
    fn bad_addresses() {
        let sender = "501 5.1.7 Bad sender address syntax";
        let recipient = "501 5.1.3 Bad recipient address syntax";
        let long_local = "l".repeat(65);
        let long_domain = format!("{}.example", "d".repeat(250));
        let long_path = format!("<a@{}>", vec!["d".repeat(60); 5].join("."));
        assert!(long_path.len() > 256 && long_path.len() - 4 <= 305);
        let table: Vec<(String, &str)> = vec![
            ("RCPT TO:<>".into(), recipient),
            ("MAIL FROM:<Postmaster>".into(), sender),
            ("MAIL FROM:<a@b".into(), sender),
            ("MAIL FROM:<a@b>x".into(), sender),
            ("MAIL FROM:<a@b>>".into(), sender),
            ("MAIL FROM:<a>".into(), sender),
            ("MAIL FROM:<a@>".into(), sender),
            ("MAIL FROM:<@b>".into(), sender),
            ("MAIL FROM:<a@b@c>".into(), sender),
            ("MAIL FROM:<a b@c>".into(), sender),
            ("MAIL FROM:<<a@b>>".into(), sender),
            ("MAIL FROM:<a@[1.2.3.999]>".into(), sender),
            ("MAIL FROM:<@x,a@b>".into(), sender),
            ("MAIL FROM:user".into(), sender),
            ("RCPT TO:user".into(), recipient),
            ("RCPT TO:<c@d".into(), recipient),
            ("RCPT TO:<c..x@d>".into(), recipient),
            (format!("MAIL FROM:<{long_local}@b>"), sender),
            (format!("RCPT TO:<a@{long_domain}>"), recipient),
            (format!("RCPT TO:{long_path}"), recipient),
            (
                format!("RCPT TO:{}", &long_path[1..long_path.len() - 1]),
                recipient,
            ),
        ];
        for (line, want) in &table {
            assert_eq!(reply_of(line), *want, "{line:?}");
        }
        assert_eq!(
            address_error_detail(&format!("<{long_local}@b>")),
            Some(AddressError::LocalPartTooLong)
        );
        assert_eq!(address_error_detail("<a@b>"), None);
    }

    #[test]
    fn path_limit_is_inclusive() {
        // 256 octets including the brackets is allowed.
        let domain = format!(
            "{}.{}.{}.{}",
            "a".repeat(63),
            "b".repeat(63),
            "c".repeat(63),
            "d".repeat(60)
        );
        let path = format!("<x@{domain}>");
        assert_eq!(path.len(), 256);
        assert!(lenient(&format!("RCPT TO:{path}")).is_ok());
        let path = format!("<xy@{domain}>");
        assert_eq!(
            reply_of(&format!("RCPT TO:{path}")),
            "501 5.1.3 Bad recipient address syntax"
        );
    }

    #[test]
    fn non_ascii() {
        let no_utf8 = ParseOptions {
            strict_rfc821_envelopes: false,
            allow_utf8: false,
        };
        assert_eq!(
            parse_command("MAIL FROM:<δ@b>".as_bytes(), &no_utf8),
            Err(CommandError::NonAscii)
        );
        assert_eq!(
            CommandError::NonAscii.reply().to_string(),
            "500 5.5.2 Error: non-ASCII command"
        );
        assert_eq!(
            parse_command(b"MAIL FROM:<\xff@b>", &ParseOptions::default()),
            Err(CommandError::NonAscii)
        );
        assert_eq!(
            parse_command(b"\xc3\xa9HLO x", &ParseOptions::default()),
            Err(CommandError::Unknown {
                verb: "éHLO".into()
            })
        );
    }

    #[test]
    fn display_round_trips() {
        for line in [
            "MAIL FROM:<\"a b\"@c> SIZE=1 SMTPUTF8",
            "MAIL FROM:<>",
            "RCPT TO:<Postmaster>",
            "RCPT TO:<a@[IPv6:::1]> ORCPT=rfc822;a@b",
            "HELO x y",
            "AUTH PLAIN =",
            "BDAT 7 LAST",
            "NOOP",
            "HELP x",
            "ETRN #q",
        ] {
            let cmd = lenient(line).expect(line);
            assert_eq!(cmd.to_string(), line);
            assert_eq!(lenient(&cmd.to_string()), Ok(cmd));
        }
        assert_eq!(
            lenient("mail from: a@b body=7bit").map(|c| c.to_string()),
            Ok("MAIL FROM:<a@b> BODY=7bit".into())
        );
    }
}
