//! The one delivery-status type: [`DeliveryStatus`] = a [`StatusClass`]
//! (success, temporary, permanent), an RFC 3463 [`EnhancedCode`] and a reply
//! or diagnostic text, with the one sysexits(3) mapping ([`sysexits`]) and
//! the SMTP reply-code mapping ([`DeliveryStatus::reply_code`]).
//!
//! Why a crate of its own: the type is needed by the IPC messages
//! (postern-ipc-proto, which must stay free of I/O and of the SMTP parser),
//! by the SMTP protocol crate (its replies carry the same enhanced code), by
//! the setgid postdrop and `sendmail` (their exit statuses) and by every
//! daemon that logs or bounces a result. Putting it in ipc-proto would make
//! smtp-proto depend on the IPC messages, and putting it in smtp-proto would
//! pull nom into postdrop; this crate depends on nothing.
//!
//! The code is carried as three numbers everywhere, never as a string that
//! is parsed back; [`EnhancedCode::parse`] exists only for text that comes
//! from outside (configuration files, a remote server's reply).
#![forbid(unsafe_code)]
#![warn(missing_docs)]

use std::fmt;

pub mod sysexits;

/// An enhanced mail system status code `class.subject.detail` (RFC 3463),
/// sent after the basic SMTP reply code when ENHANCEDSTATUSCODES is in force
/// and carried in delivery status notifications.
///
/// A valid code has class 2, 4 or 5 and subject and detail of at most three
/// digits ([`EnhancedCode::new`] and [`EnhancedCode::parse`] check this).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct EnhancedCode(pub u8, pub u16, pub u16);

impl EnhancedCode {
    /// The code if it is valid (class 2, 4 or 5; subject and detail 0..=999).
    pub fn new(class: u8, subject: u16, detail: u16) -> Option<EnhancedCode> {
        let c = EnhancedCode(class, subject, detail);
        c.is_valid().then_some(c)
    }

    /// Whether the class is 2, 4 or 5 and subject and detail have at most
    /// three digits.
    pub fn is_valid(self) -> bool {
        matches!(self.0, 2 | 4 | 5) && self.1 <= 999 && self.2 <= 999
    }

    /// Parses `"5.1.1"`: three dot-separated decimal numbers of one to three
    /// digits forming a valid code, nothing else.
    pub fn parse(s: &str) -> Option<EnhancedCode> {
        let mut it = s.split('.');
        let mut part = || -> Option<u16> {
            let p = it.next()?;
            if p.is_empty() || p.len() > 3 || !p.bytes().all(|b| b.is_ascii_digit()) {
                return None;
            }
            p.parse().ok()
        };
        let class = part()?;
        let subject = part()?;
        let detail = part()?;
        if it.next().is_some() {
            return None;
        }
        EnhancedCode::new(u8::try_from(class).ok()?, subject, detail)
    }

    /// The class this code's first digit stands for, if it is 2, 4 or 5.
    pub fn class(self) -> Option<StatusClass> {
        StatusClass::from_digit(self.0)
    }

    /// The same subject and detail with class 5: how a temporary failure is
    /// reported once it is final (an expired message's 4.4.7 → 5.4.7).
    pub fn permanent(self) -> EnhancedCode {
        EnhancedCode(5, self.1, self.2)
    }
}

impl fmt::Display for EnhancedCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}.{}", self.0, self.1, self.2)
    }
}

/// What a result means for the message: done, try again, or return it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum StatusClass {
    /// Delivered or accepted (enhanced class 2).
    Success,
    /// Try again later (class 4).
    Temporary,
    /// Final failure, return to the sender (class 5).
    Permanent,
}

impl StatusClass {
    /// The enhanced-code class digit: 2, 4 or 5.
    pub fn digit(self) -> u8 {
        match self {
            StatusClass::Success => 2,
            StatusClass::Temporary => 4,
            StatusClass::Permanent => 5,
        }
    }

    /// The class for an enhanced-code class digit.
    pub fn from_digit(d: u8) -> Option<StatusClass> {
        match d {
            2 => Some(StatusClass::Success),
            4 => Some(StatusClass::Temporary),
            5 => Some(StatusClass::Permanent),
            _ => None,
        }
    }
}

/// Why a [`DeliveryStatus`] could not be built.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StatusError {
    /// The enhanced code is not valid (class not 2/4/5, or a part > 999).
    BadCode(EnhancedCode),
    /// The class disagrees with the code's first digit.
    ClassMismatch(StatusClass, EnhancedCode),
}

impl fmt::Display for StatusError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            StatusError::BadCode(c) => write!(f, "invalid enhanced status code {c}"),
            StatusError::ClassMismatch(k, c) => {
                write!(f, "status class {k:?} disagrees with code {c}")
            }
        }
    }
}

impl std::error::Error for StatusError {}

/// The result of one delivery attempt, one submission or one check, as it
/// crosses a process or crate boundary: its class, its enhanced code (whose
/// first digit always agrees with the class) and the text for the log, the
/// SMTP reply or the bounce.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DeliveryStatus {
    class: StatusClass,
    code: EnhancedCode,
    text: String,
}

impl DeliveryStatus {
    /// A status from its parts, checked: the code must be valid and its
    /// first digit must be the class's.
    pub fn new(
        class: StatusClass,
        code: EnhancedCode,
        text: impl Into<String>,
    ) -> Result<DeliveryStatus, StatusError> {
        if !code.is_valid() {
            return Err(StatusError::BadCode(code));
        }
        if code.0 != class.digit() {
            return Err(StatusError::ClassMismatch(class, code));
        }
        Ok(DeliveryStatus {
            class,
            code,
            text: text.into(),
        })
    }

    /// A status whose class is the code's first digit.
    pub fn from_code(
        code: EnhancedCode,
        text: impl Into<String>,
    ) -> Result<DeliveryStatus, StatusError> {
        let class = code.class().ok_or(StatusError::BadCode(code))?;
        DeliveryStatus::new(class, code, text)
    }

    /// Success with 2.0.0.
    pub fn sent(text: impl Into<String>) -> DeliveryStatus {
        DeliveryStatus::success(0, 0, text)
    }

    /// Success with 2.`subject`.`detail` (parts above 999 are clamped).
    pub fn success(subject: u16, detail: u16, text: impl Into<String>) -> DeliveryStatus {
        DeliveryStatus::of(StatusClass::Success, subject, detail, text)
    }

    /// A temporary failure 4.`subject`.`detail` (parts above 999 are clamped).
    pub fn temporary(subject: u16, detail: u16, text: impl Into<String>) -> DeliveryStatus {
        DeliveryStatus::of(StatusClass::Temporary, subject, detail, text)
    }

    /// A permanent failure 5.`subject`.`detail` (parts above 999 are clamped).
    pub fn permanent(subject: u16, detail: u16, text: impl Into<String>) -> DeliveryStatus {
        DeliveryStatus::of(StatusClass::Permanent, subject, detail, text)
    }

    fn of(
        class: StatusClass,
        subject: u16,
        detail: u16,
        text: impl Into<String>,
    ) -> DeliveryStatus {
        DeliveryStatus {
            class,
            code: EnhancedCode(class.digit(), subject.min(999), detail.min(999)),
            text: text.into(),
        }
    }

    /// Success, temporary or permanent.
    pub fn class(&self) -> StatusClass {
        self.class
    }

    /// The enhanced status code.
    pub fn code(&self) -> EnhancedCode {
        self.code
    }

    /// The reply or diagnostic text.
    pub fn text(&self) -> &str {
        &self.text
    }

    /// The text, by value.
    pub fn into_text(self) -> String {
        self.text
    }

    /// Whether the class is [`StatusClass::Success`].
    pub fn is_success(&self) -> bool {
        self.class == StatusClass::Success
    }

    /// Whether the class is [`StatusClass::Temporary`].
    pub fn is_temporary(&self) -> bool {
        self.class == StatusClass::Temporary
    }

    /// Whether the class is [`StatusClass::Permanent`].
    pub fn is_permanent(&self) -> bool {
        self.class == StatusClass::Permanent
    }

    /// The basic SMTP reply code for this status (RFC 5321 section 4.2.2,
    /// with the choices Postfix makes): 250 for success; 452 for a full
    /// mailbox or system (x.2.2, x.3.1) and 451 otherwise when temporary;
    /// 552 for a message too big (5.2.3, 5.3.4) or a full mailbox (5.2.2),
    /// 553 for a bad address syntax (5.1.3), 554 for a content or policy
    /// rejection of the whole message (5.6.x, 5.7.x, 5.3.0) and 550 otherwise
    /// when permanent.
    pub fn reply_code(&self) -> u16 {
        let EnhancedCode(_, s, d) = self.code;
        match self.class {
            StatusClass::Success => 250,
            StatusClass::Temporary => match (s, d) {
                (2, 2) | (3, 1) => 452,
                _ => 451,
            },
            StatusClass::Permanent => match (s, d) {
                (2, 2) | (2, 3) | (3, 4) => 552,
                (1, 3) => 553,
                (6, _) | (7, _) | (3, 0) => 554,
                _ => 550,
            },
        }
    }

    /// The sysexits(3) exit status a command-line program reports for this
    /// status ([`sysexits::exit_code`]).
    pub fn exit_code(&self) -> i32 {
        sysexits::exit_code(self)
    }
}

impl fmt::Display for DeliveryStatus {
    /// `"5.1.1 text"`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}", self.code, self.text)
    }
}

#[cfg(test)]
mod tests;
