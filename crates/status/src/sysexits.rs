//! The one sysexits(3) mapping, both ways: a command's (or a delivery
//! program's) exit status to a [`DeliveryStatus`] (the table Postfix uses
//! for pipe and local command delivery), and a status back to the exit
//! status `sendmail` and `postdrop` report.

use crate::{DeliveryStatus, EnhancedCode, StatusClass};

/// Successful termination.
pub const EX_OK: i32 = 0;
/// Command line usage error.
pub const EX_USAGE: i32 = 64;
/// Data format error (bad input: address or message).
pub const EX_DATAERR: i32 = 65;
/// Cannot open input.
pub const EX_NOINPUT: i32 = 66;
/// Addressee unknown (or the caller has no login name).
pub const EX_NOUSER: i32 = 67;
/// Host name unknown.
pub const EX_NOHOST: i32 = 68;
/// Service unavailable.
pub const EX_UNAVAILABLE: i32 = 69;
/// Internal software error.
pub const EX_SOFTWARE: i32 = 70;
/// System error (e.g. cannot fork).
pub const EX_OSERR: i32 = 71;
/// Critical OS file missing.
pub const EX_OSFILE: i32 = 72;
/// Cannot create (user) output file.
pub const EX_CANTCREAT: i32 = 73;
/// Input/output error.
pub const EX_IOERR: i32 = 74;
/// Temporary failure; the user is invited to retry.
pub const EX_TEMPFAIL: i32 = 75;
/// Remote error in protocol.
pub const EX_PROTOCOL: i32 = 76;
/// Permission denied.
pub const EX_NOPERM: i32 = 77;
/// Configuration error.
pub const EX_CONFIG: i32 = 78;

/// The sysexits table as Postfix uses it: (exit status, code, text).
pub const TABLE: &[(i32, EnhancedCode, &str)] = &[
    (EX_USAGE, EnhancedCode(5, 3, 0), "command line usage error"),
    (EX_DATAERR, EnhancedCode(5, 6, 0), "data format error"),
    (EX_NOINPUT, EnhancedCode(5, 3, 0), "cannot open input"),
    (EX_NOUSER, EnhancedCode(5, 1, 1), "user unknown"),
    (EX_NOHOST, EnhancedCode(5, 1, 2), "host name unknown"),
    (EX_UNAVAILABLE, EnhancedCode(5, 3, 0), "service unavailable"),
    (
        EX_SOFTWARE,
        EnhancedCode(5, 3, 0),
        "internal software error",
    ),
    (EX_OSERR, EnhancedCode(4, 3, 0), "system resource problem"),
    (EX_OSFILE, EnhancedCode(5, 3, 0), "critical OS file missing"),
    (
        EX_CANTCREAT,
        EnhancedCode(5, 2, 0),
        "can't create user output file",
    ),
    (EX_IOERR, EnhancedCode(5, 3, 0), "input/output error"),
    (EX_TEMPFAIL, EnhancedCode(4, 3, 0), "temporary failure"),
    (
        EX_PROTOCOL,
        EnhancedCode(5, 5, 0),
        "remote error in protocol",
    ),
    (EX_NOPERM, EnhancedCode(5, 7, 0), "permission denied"),
    (
        EX_CONFIG,
        EnhancedCode(5, 3, 5),
        "local configuration error",
    ),
];

/// A non-zero exit status's enhanced code and meaning: the table's row, or
/// 5.3.0 "unknown mail system error" for a status outside it.
pub fn describe(status: i32) -> (EnhancedCode, &'static str) {
    TABLE
        .iter()
        .find(|(c, _, _)| *c == status)
        .map(|(_, code, what)| (*code, *what))
        .unwrap_or((EnhancedCode(5, 3, 0), "unknown mail system error"))
}

/// The status for a program's exit status: 0 is success 2.0.0, anything
/// else is [`describe`]d, with `text` as the status text.
pub fn to_status(status: i32, text: impl Into<String>) -> DeliveryStatus {
    if status == EX_OK {
        return DeliveryStatus::sent(text);
    }
    let (code, _) = describe(status);
    DeliveryStatus::from_code(code, text).unwrap_or_else(|_| DeliveryStatus::permanent(3, 0, ""))
}

/// The exit status for a status: 0 for success, `EX_TEMPFAIL` for any
/// temporary failure, and for a permanent one the table's row with that
/// exact code (5.1.1 → `EX_NOUSER`, 5.6.0 → `EX_DATAERR`, ...), else by
/// subject (5.1.x `EX_NOUSER`, 5.6.x `EX_DATAERR`, 5.7.x `EX_NOPERM`),
/// else `EX_UNAVAILABLE`.
pub fn exit_code(status: &DeliveryStatus) -> i32 {
    match status.class() {
        StatusClass::Success => EX_OK,
        StatusClass::Temporary => EX_TEMPFAIL,
        StatusClass::Permanent => {
            let code = status.code();
            // Rows whose code is unique in the table map back exactly.
            let exact: Vec<i32> = TABLE
                .iter()
                .filter(|(_, c, _)| *c == code)
                .map(|(s, _, _)| *s)
                .collect();
            if let [one] = exact.as_slice() {
                return *one;
            }
            match code.1 {
                1 => EX_NOUSER,
                6 => EX_DATAERR,
                7 => EX_NOPERM,
                _ => EX_UNAVAILABLE,
            }
        }
    }
}
