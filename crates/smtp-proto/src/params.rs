//! ESMTP parameters of MAIL and RCPT: the generic `keyword[=value]` syntax
//! (RFC 5321 section 4.1.2) and typed views of the ones Postern knows:
//! SIZE (RFC 1870), BODY (RFC 6152 / RFC 3030), SMTPUTF8 (RFC 6531),
//! RET, ENVID, NOTIFY, ORCPT (RFC 3461, parsed only) and AUTH (RFC 4954).
//!
//! ```text
//! esmtp-param    = esmtp-keyword ["=" esmtp-value]
//! esmtp-keyword  = (ALPHA / DIGIT) *(ALPHA / DIGIT / "-")
//! esmtp-value    = 1*(%d33-60 / %d62-126)
//! esmtp-value    =/ UTF8-non-ascii               ; RFC 6531
//! size-value     = 1*20DIGIT                      ; RFC 1870
//! body-value     = "7BIT" / "8BITMIME" / "BINARYMIME"
//! ret-value      = "FULL" / "HDRS"                ; RFC 3461
//! envid-value    = xtext
//! notify-esmtp-value = "NEVER" / 1#notify-list-element
//! notify-list-element = "SUCCESS" / "FAILURE" / "DELAY"
//! orcpt-value    = addr-type ";" xtext
//! xtext          = *( xchar / hexchar )           ; RFC 3461 section 4
//! hexchar        = "+" 2(%x30-39 / %x41-46)
//! auth-param     = "AUTH=" xtext                  ; RFC 4954 section 5
//! ```

use std::fmt;

use crate::reply::{EnhancedCode, Reply};

/// One ESMTP parameter as sent, so unknown ones can be refused precisely.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Param {
    /// The keyword, upper-cased (`SIZE`, `BODY`, ...).
    pub keyword: String,
    /// The value after `=`, as written; `None` for bare keywords like `SMTPUTF8`.
    pub value: Option<String>,
}

impl fmt::Display for Param {
    /// Wire form, `KEYWORD` or `KEYWORD=value`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.value {
            Some(v) => write!(f, "{}={}", self.keyword, v),
            None => f.write_str(&self.keyword),
        }
    }
}

/// Parses one `esmtp-param`; `None` when it breaks the grammar.
pub(crate) fn parse_param(s: &str) -> Option<Param> {
    let (kw, value) = match s.split_once('=') {
        Some((k, v)) => (k, Some(v)),
        None => (s, None),
    };
    let mut kw_chars = kw.chars();
    let first_ok = kw_chars.next().is_some_and(|c| c.is_ascii_alphanumeric());
    if !first_ok || !kw_chars.all(|c| c.is_ascii_alphanumeric() || c == '-') {
        return None;
    }
    if let Some(v) = value {
        let ok = !v.is_empty()
            && v.chars()
                .all(|c| matches!(c, '!'..='<' | '>'..='~') || !c.is_ascii());
        if !ok {
            return None;
        }
    }
    Some(Param {
        keyword: kw.to_ascii_uppercase(),
        value: value.map(str::to_string),
    })
}

/// Decodes RFC 3461 xtext (`+XX` hex escapes); `None` if malformed.
pub fn xtext_decode(s: &str) -> Option<String> {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let b = bytes[i];
        if b == b'+' {
            let hex = bytes.get(i + 1..i + 3)?;
            let ok = hex.iter().all(|h| matches!(h, b'0'..=b'9' | b'A'..=b'F'));
            if !ok {
                return None;
            }
            let text = std::str::from_utf8(hex).ok()?;
            out.push(u8::from_str_radix(text, 16).ok()?);
            i += 3;
        } else if (b'!'..=b'~').contains(&b) && b != b'=' {
            out.push(b);
            i += 1;
        } else if b >= 0x80 {
            // RFC 6533 utf-8-addr-xtext: UTF-8 passes through.
            out.push(b);
            i += 1;
        } else {
            return None;
        }
    }
    String::from_utf8(out).ok()
}

/// BODY= values (RFC 6152, RFC 3030).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Body {
    /// `BODY=7BIT`.
    SevenBit,
    /// `BODY=8BITMIME`.
    EightBitMime,
    /// `BODY=BINARYMIME` (needs CHUNKING, which Postern does not offer).
    BinaryMime,
}

/// RET= values (RFC 3461): what a DSN should return.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Ret {
    /// `RET=FULL`: the whole message.
    Full,
    /// `RET=HDRS`: headers only.
    Hdrs,
}

/// NOTIFY= (RFC 3461): when the sender wants a DSN for this recipient.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Notify {
    /// `NOTIFY=NEVER`.
    Never,
    /// Any non-empty combination of SUCCESS, FAILURE, DELAY.
    On {
        /// SUCCESS was listed.
        success: bool,
        /// FAILURE was listed.
        failure: bool,
        /// DELAY was listed.
        delay: bool,
    },
}

impl Ret {
    /// Parses a RET= value (any case): `FULL` or `HDRS`; also how the
    /// queue file's `dsn_ret` attribute is read back.
    pub fn parse(value: &str) -> Option<Ret> {
        match value.to_ascii_uppercase().as_str() {
            "FULL" => Some(Ret::Full),
            "HDRS" => Some(Ret::Hdrs),
            _ => None,
        }
    }
}

impl fmt::Display for Ret {
    /// The RET= keyword, `FULL` or `HDRS`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Ret::Full => "FULL",
            Ret::Hdrs => "HDRS",
        })
    }
}

impl Notify {
    /// Parses a NOTIFY= value (any case): `NEVER`, or SUCCESS, FAILURE and
    /// DELAY each at most once, comma-separated. None when invalid.
    pub fn parse(value: &str) -> Option<Notify> {
        let v = value.to_ascii_uppercase();
        if v == "NEVER" {
            return Some(Notify::Never);
        }
        let (mut success, mut failure, mut delay) = (false, false, false);
        for item in v.split(',') {
            let flag = match item {
                "SUCCESS" => &mut success,
                "FAILURE" => &mut failure,
                "DELAY" => &mut delay,
                _ => return None,
            };
            if *flag {
                return None;
            }
            *flag = true;
        }
        Some(Notify::On {
            success,
            failure,
            delay,
        })
    }
}

impl fmt::Display for Notify {
    /// The NOTIFY= value: `NEVER` or the listed keywords in RFC order.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            Notify::Never => f.write_str("NEVER"),
            Notify::On {
                success,
                failure,
                delay,
            } => {
                let words = [(success, "SUCCESS"), (failure, "FAILURE"), (delay, "DELAY")];
                let listed: Vec<&str> = words.iter().filter(|w| w.0).map(|w| w.1).collect();
                f.write_str(&listed.join(","))
            }
        }
    }
}

/// ORCPT= (RFC 3461): the original recipient, `addr-type;xtext`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Orcpt {
    /// The address type, e.g. `rfc822` (as written).
    pub addr_type: String,
    /// The xtext-decoded address.
    pub address: String,
}

impl Orcpt {
    /// Reads the decoded form [`Orcpt`]'s Display writes, `type;address`
    /// (what queue files store). None when there is no `;`, the type is
    /// not alphanumeric/`-`, or the address is empty or holds a control
    /// character.
    pub fn parse_decoded(s: &str) -> Option<Orcpt> {
        let (t, a) = s.split_once(';')?;
        let type_ok = !t.is_empty() && t.chars().all(|c| c.is_ascii_alphanumeric() || c == '-');
        (type_ok && !a.is_empty() && !a.chars().any(char::is_control)).then(|| Orcpt {
            addr_type: t.to_string(),
            address: a.to_string(),
        })
    }
}

impl fmt::Display for Orcpt {
    /// `type;address` with the address decoded (RFC 3464's
    /// Original-Recipient field form), not xtext.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{};{}", self.addr_type, self.address)
    }
}

/// The MAIL FROM parameters Postern understands, checked and typed.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct MailParams {
    /// SIZE=: the size the client declares.
    pub size: Option<u64>,
    /// BODY=.
    pub body: Option<Body>,
    /// SMTPUTF8 was given.
    pub smtputf8: bool,
    /// RET=.
    pub ret: Option<Ret>,
    /// ENVID=, xtext-decoded.
    pub envid: Option<String>,
    /// AUTH=, xtext-decoded (`<>` when the submitter is unknown).
    pub auth: Option<String>,
}

/// The RCPT TO parameters Postern understands, checked and typed.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RcptParams {
    /// NOTIFY=.
    pub notify: Option<Notify>,
    /// ORCPT=.
    pub orcpt: Option<Orcpt>,
}

/// Why a MAIL or RCPT parameter list was refused.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ParamError {
    /// A keyword this server does not support (555 5.5.4).
    Unsupported {
        /// The upper-cased keyword.
        keyword: String,
    },
    /// A known keyword with a missing or bad value (501 5.5.4).
    BadValue {
        /// The upper-cased keyword.
        keyword: String,
    },
    /// The same keyword twice (501 5.5.4).
    Duplicate {
        /// The upper-cased keyword.
        keyword: String,
    },
}

impl ParamError {
    /// The reply to send for this error.
    pub fn reply(&self) -> Reply {
        let e = Some(EnhancedCode(5, 5, 4));
        match self {
            ParamError::Unsupported { keyword } => {
                Reply::new(555, e, format!("Unsupported option: {keyword}"))
            }
            ParamError::BadValue { keyword } => {
                Reply::new(501, e, format!("Bad {keyword} parameter syntax"))
            }
            ParamError::Duplicate { keyword } => {
                Reply::new(501, e, format!("Duplicate {keyword} parameter"))
            }
        }
    }
}

impl fmt::Display for ParamError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.reply())
    }
}

impl std::error::Error for ParamError {}

fn bad(keyword: &str) -> ParamError {
    ParamError::BadValue {
        keyword: keyword.to_string(),
    }
}

fn set_once<T>(slot: &mut Option<T>, value: T, keyword: &str) -> Result<(), ParamError> {
    if slot.is_some() {
        return Err(ParamError::Duplicate {
            keyword: keyword.to_string(),
        });
    }
    *slot = Some(value);
    Ok(())
}

impl MailParams {
    /// Checks MAIL parameters: SIZE, BODY, SMTPUTF8, RET, ENVID, AUTH.
    /// Anything else is [`ParamError::Unsupported`].
    pub fn from_params(params: &[Param]) -> Result<MailParams, ParamError> {
        let mut m = MailParams::default();
        for p in params {
            let kw = p.keyword.as_str();
            let v = p.value.as_deref();
            match kw {
                "SIZE" => {
                    let v = v.filter(|v| v.len() <= 20 && v.bytes().all(|b| b.is_ascii_digit()));
                    let n = v
                        .and_then(|v| v.parse::<u64>().ok())
                        .ok_or_else(|| bad(kw))?;
                    set_once(&mut m.size, n, kw)?;
                }
                "BODY" => {
                    let b = match v.map(str::to_ascii_uppercase).as_deref() {
                        Some("7BIT") => Body::SevenBit,
                        Some("8BITMIME") => Body::EightBitMime,
                        Some("BINARYMIME") => Body::BinaryMime,
                        _ => return Err(bad(kw)),
                    };
                    set_once(&mut m.body, b, kw)?;
                }
                "SMTPUTF8" => {
                    if v.is_some() {
                        return Err(bad(kw));
                    }
                    if m.smtputf8 {
                        return Err(ParamError::Duplicate {
                            keyword: kw.to_string(),
                        });
                    }
                    m.smtputf8 = true;
                }
                "RET" => {
                    let r = v.and_then(Ret::parse).ok_or_else(|| bad(kw))?;
                    set_once(&mut m.ret, r, kw)?;
                }
                "ENVID" => {
                    let id = v
                        .and_then(xtext_decode)
                        // RFC 3461 section 4.4: printable US-ASCII, at most 100.
                        .filter(|d| d.len() <= 100 && d.bytes().all(|b| (0x20..0x7f).contains(&b)))
                        .ok_or_else(|| bad(kw))?;
                    set_once(&mut m.envid, id, kw)?;
                }
                "AUTH" => {
                    let a = v.and_then(xtext_decode).ok_or_else(|| bad(kw))?;
                    set_once(&mut m.auth, a, kw)?;
                }
                _ => {
                    return Err(ParamError::Unsupported {
                        keyword: kw.to_string(),
                    });
                }
            }
        }
        Ok(m)
    }
}

impl RcptParams {
    /// Checks RCPT parameters: NOTIFY, ORCPT. Anything else is
    /// [`ParamError::Unsupported`].
    pub fn from_params(params: &[Param]) -> Result<RcptParams, ParamError> {
        let mut r = RcptParams::default();
        for p in params {
            let kw = p.keyword.as_str();
            let v = p.value.as_deref();
            match kw {
                "NOTIFY" => {
                    let n = v.and_then(Notify::parse).ok_or_else(|| bad(kw))?;
                    set_once(&mut r.notify, n, kw)?;
                }
                "ORCPT" => {
                    let (t, a) = v.and_then(|v| v.split_once(';')).ok_or_else(|| bad(kw))?;
                    let type_ok =
                        !t.is_empty() && t.chars().all(|c| c.is_ascii_alphanumeric() || c == '-');
                    let address = xtext_decode(a)
                        .filter(|a| !a.is_empty() && type_ok && !a.chars().any(char::is_control))
                        .ok_or_else(|| bad(kw))?;
                    set_once(
                        &mut r.orcpt,
                        Orcpt {
                            addr_type: t.to_string(),
                            address,
                        },
                        kw,
                    )?;
                }
                _ => {
                    return Err(ParamError::Unsupported {
                        keyword: kw.to_string(),
                    });
                }
            }
        }
        Ok(r)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(s: &str) -> Param {
        parse_param(s).expect("valid param")
    }

    #[test]
    fn generic_syntax() {
        assert_eq!(
            p("size=10"),
            Param {
                keyword: "SIZE".into(),
                value: Some("10".into())
            }
        );
        assert_eq!(
            p("SMTPUTF8"),
            Param {
                keyword: "SMTPUTF8".into(),
                value: None
            }
        );
        assert_eq!(p("x-foo=ä").value.as_deref(), Some("ä"));
        for bad in [
            "",
            "=1",
            "X-FOO=a=b",
            "-X=1",
            "SIZE=",
            "A_B=1",
            "K=a\u{1}b",
            "K=x\u{7f}",
        ] {
            assert_eq!(parse_param(bad), None, "{bad:?}");
        }
        assert_eq!(p("ENVID=x").to_string(), "ENVID=x");
    }

    #[test]
    fn xtext() {
        assert_eq!(xtext_decode("a+2Bb"), Some("a+b".into()));
        assert_eq!(xtext_decode("rfc822+3Ba@b"), Some("rfc822;a@b".into()));
        assert_eq!(xtext_decode("a+2b"), None);
        assert_eq!(xtext_decode("a+2"), None);
        assert_eq!(xtext_decode("a b"), None);
        assert_eq!(xtext_decode("a=b"), None);
        assert_eq!(xtext_decode(""), Some(String::new()));
    }

    #[test]
    fn mail_params() {
        let ps: Vec<Param> = [
            "SIZE=123",
            "BODY=8bitmime",
            "SMTPUTF8",
            "RET=HDRS",
            "ENVID=x+2By",
            "AUTH=<>",
        ]
        .iter()
        .map(|s| p(s))
        .collect();
        let m = MailParams::from_params(&ps).expect("valid");
        assert_eq!(
            m,
            MailParams {
                size: Some(123),
                body: Some(Body::EightBitMime),
                smtputf8: true,
                ret: Some(Ret::Hdrs),
                envid: Some("x+y".into()),
                auth: Some("<>".into()),
            }
        );
        let err = |s: &[&str]| {
            MailParams::from_params(&s.iter().map(|x| p(x)).collect::<Vec<_>>()).unwrap_err()
        };
        assert_eq!(
            err(&["SIZE=abc"]).reply().to_string(),
            "501 5.5.4 Bad SIZE parameter syntax"
        );
        assert_eq!(err(&["SIZE=99999999999999999999999"]), bad("SIZE"));
        assert_eq!(err(&["SIZE"]), bad("SIZE"));
        assert_eq!(err(&["BODY=9BIT"]), bad("BODY"));
        assert_eq!(err(&["SMTPUTF8=yes"]), bad("SMTPUTF8"));
        assert_eq!(
            err(&["SIZE=1", "SIZE=2"]).reply().to_string(),
            "501 5.5.4 Duplicate SIZE parameter"
        );
        assert_eq!(
            err(&["XYZ=1"]).reply().to_string(),
            "555 5.5.4 Unsupported option: XYZ"
        );
        assert_eq!(
            err(&["NOTIFY=NEVER"]),
            ParamError::Unsupported {
                keyword: "NOTIFY".into()
            }
        );
    }

    #[test]
    fn rcpt_params() {
        let r = RcptParams::from_params(&[p("NOTIFY=SUCCESS,FAILURE"), p("ORCPT=rfc822;a@b")])
            .expect("valid");
        assert_eq!(
            r.notify,
            Some(Notify::On {
                success: true,
                failure: true,
                delay: false
            })
        );
        assert_eq!(
            r.orcpt,
            Some(Orcpt {
                addr_type: "rfc822".into(),
                address: "a@b".into()
            })
        );
        assert_eq!(
            RcptParams::from_params(&[p("NOTIFY=never")]).map(|r| r.notify),
            Ok(Some(Notify::Never))
        );
        for bad_one in [
            "NOTIFY=NEVER,SUCCESS",
            "NOTIFY=SUCCESS,SUCCESS",
            "NOTIFY=SOMETIMES",
            "ORCPT=rfc822",
            "ORCPT=;a@b",
            "ORCPT=rfc822;a+zz",
        ] {
            assert!(RcptParams::from_params(&[p(bad_one)]).is_err(), "{bad_one}");
        }
        assert_eq!(
            RcptParams::from_params(&[p("SIZE=1")]),
            Err(ParamError::Unsupported {
                keyword: "SIZE".into()
            })
        );
    }
}
