//! Password hashes in the Dovecot passwd-file form `{SCHEME}hash`.
//!
//! Schemes verified: `{ARGON2ID}` / `{ARGON2I}` (PHC strings), `{BLF-CRYPT}` /
//! `{BCRYPT}` (`$2y$`, `$2b$`, `$2a$`), `{SHA512-CRYPT}` (`$6$`), `{CRYPT}`
//! or no prefix (one of the crypt forms above, recognised by its `$id$`),
//! and `{PLAIN}` (clear text: for tests only; auth warns when it
//! loads one). New hashes are always argon2id ([`hash_password`]).
//!
//! SECURITY: every comparison of secret material is constant-time (the
//! argon2, bcrypt and sha-crypt crates compare with `subtle`; `{PLAIN}`
//! uses [`ct_eq`]). Passwords longer than [`MAX_PASSWORD`] bytes are
//! refused before hashing, because SHA-crypt's cost grows with the length.

use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use std::io::Read;

/// Longest password accepted (bytes); longer ones never verify.
pub const MAX_PASSWORD: usize = 1024;

/// The result of checking a password against a stored hash.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Check {
    /// The password is right.
    Match,
    /// The password is wrong.
    Mismatch,
    /// The stored hash uses a scheme Postern does not verify (the scheme name).
    Unsupported(String),
    /// The stored hash is not a valid hash of its scheme (why).
    Malformed(String),
}

/// Splits `{SCHEME}rest` into (upper-cased scheme, rest); no braces → ("", all).
pub fn split_scheme(stored: &str) -> (String, &str) {
    if let Some(body) = stored.strip_prefix('{')
        && let Some(end) = body.find('}')
    {
        return (body[..end].to_ascii_uppercase(), &body[end + 1..]);
    }
    (String::new(), stored)
}

/// Compares two byte strings in time that depends only on their lengths.
pub fn ct_eq(a: &[u8], b: &[u8]) -> bool {
    let mut diff = u8::from(a.len() != b.len());
    for i in 0..a.len().max(b.len()) {
        let x = a.get(i).copied().unwrap_or(0);
        let y = b.get(i).copied().unwrap_or(1);
        diff |= x ^ y;
    }
    std::hint::black_box(diff) == 0
}

fn argon2_check(phc: &str, want: &str, password: &str) -> Check {
    let parsed = match PasswordHash::new(phc) {
        Ok(p) => p,
        Err(e) => return Check::Malformed(format!("bad PHC string: {e}")),
    };
    if parsed.hash.is_none() || parsed.salt.is_none() {
        return Check::Malformed("PHC string without salt or hash".into());
    }
    if parsed.algorithm.as_str() != want {
        return Check::Malformed(format!(
            "scheme says {want} but the hash is {}",
            parsed.algorithm
        ));
    }
    match argon2::Argon2::default().verify_password(password.as_bytes(), &parsed) {
        Ok(()) => Check::Match,
        Err(argon2::password_hash::Error::Password) => Check::Mismatch,
        Err(e) => Check::Malformed(e.to_string()),
    }
}

fn bcrypt_check(h: &str, password: &str) -> Check {
    if !(h.starts_with("$2y$") || h.starts_with("$2b$") || h.starts_with("$2a$")) {
        return Check::Malformed("not a $2y$/$2b$ bcrypt hash".into());
    }
    match bcrypt::verify(password.as_bytes(), h) {
        Ok(true) => Check::Match,
        Ok(false) => Check::Mismatch,
        Err(e) => Check::Malformed(e.to_string()),
    }
}

fn sha512_check(h: &str, password: &str) -> Check {
    if !h.starts_with("$6$") {
        return Check::Malformed("not a $6$ SHA512-CRYPT hash".into());
    }
    match sha_crypt::sha512_check(password, h) {
        Ok(()) => Check::Match,
        // The crate does not export its error type; its Debug name is stable.
        Err(e) => match format!("{e:?}") {
            m if m == "HashMismatch" => Check::Mismatch,
            other => Check::Malformed(other),
        },
    }
}

/// Checks `password` against a stored `{SCHEME}hash`.
pub fn verify_password(stored: &str, password: &str) -> Check {
    if password.len() > MAX_PASSWORD {
        return Check::Mismatch;
    }
    let (scheme, rest) = split_scheme(stored);
    match scheme.as_str() {
        "ARGON2ID" => argon2_check(rest, "argon2id", password),
        "ARGON2I" => argon2_check(rest, "argon2i", password),
        "BLF-CRYPT" | "BCRYPT" => bcrypt_check(rest, password),
        "SHA512-CRYPT" => sha512_check(rest, password),
        "PLAIN" => {
            if ct_eq(rest.as_bytes(), password.as_bytes()) {
                Check::Match
            } else {
                Check::Mismatch
            }
        }
        "CRYPT" | "" => {
            if rest.starts_with("$argon2id$") {
                argon2_check(rest, "argon2id", password)
            } else if rest.starts_with("$argon2i$") {
                argon2_check(rest, "argon2i", password)
            } else if rest.starts_with("$2") {
                bcrypt_check(rest, password)
            } else if rest.starts_with("$6$") {
                sha512_check(rest, password)
            } else if rest.is_empty() {
                Check::Malformed("no password set".into())
            } else {
                Check::Unsupported(if scheme.is_empty() {
                    "(none)".into()
                } else {
                    scheme
                })
            }
        }
        _ => Check::Unsupported(scheme),
    }
}

fn random_bytes(n: usize) -> Result<Vec<u8>, String> {
    let mut buf = vec![0u8; n];
    std::fs::File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(&mut buf))
        .map_err(|e| format!("cannot read /dev/urandom: {e}"))?;
    Ok(buf)
}

/// A new argon2id hash (default parameters, 16 random salt bytes) in the
/// passwd-file form `{ARGON2ID}$argon2id$v=19$...`.
pub fn hash_password(password: &str) -> Result<String, String> {
    let salt = SaltString::encode_b64(&random_bytes(16)?).map_err(|e| format!("salt: {e}"))?;
    let hash = argon2::Argon2::default()
        .hash_password(password.as_bytes(), &salt)
        .map_err(|e| format!("password hash: {e}"))?;
    Ok(format!("{{ARGON2ID}}{hash}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn argon2id_round_trip_and_salted() {
        let h = hash_password("secret").unwrap();
        assert!(h.starts_with("{ARGON2ID}$argon2id$"), "{h}");
        assert_eq!(verify_password(&h, "secret"), Check::Match);
        assert_eq!(verify_password(&h, "Secret"), Check::Mismatch);
        assert_ne!(h, hash_password("secret").unwrap(), "salted");
        // Lower-case scheme names are accepted, as Dovecot does.
        let lower = h.replacen("{ARGON2ID}", "{argon2id}", 1);
        assert_eq!(verify_password(&lower, "secret"), Check::Match);
    }

    #[test]
    fn argon2i_vector_and_scheme_mismatch() {
        use argon2::{Algorithm, Argon2, Params, Version};
        let a = Argon2::new(Algorithm::Argon2i, Version::V0x13, Params::default());
        let salt = SaltString::encode_b64(b"0123456789abcdef").unwrap();
        let phc = a.hash_password(b"pw", &salt).unwrap().to_string();
        assert!(phc.starts_with("$argon2i$"));
        assert_eq!(
            verify_password(&format!("{{ARGON2I}}{phc}"), "pw"),
            Check::Match
        );
        assert_eq!(
            verify_password(&format!("{{ARGON2I}}{phc}"), "px"),
            Check::Mismatch
        );
        assert!(matches!(
            verify_password(&format!("{{ARGON2ID}}{phc}"), "pw"),
            Check::Malformed(_)
        ));
        assert!(matches!(
            verify_password("{ARGON2ID}$argon2id$garbage", "pw"),
            Check::Malformed(_)
        ));
    }

    #[test]
    fn sha512_crypt_reference_vector() {
        // openssl passwd -6 -salt saltsalt secret
        let h = "{SHA512-CRYPT}$6$saltsalt$TVLlQcbpFVof5W3Yz4DTP6gRstiNuHwwTt6GLc1E5n0U0aDehy0S5knV8wiOQSpT0Y77vwPZN.Pq.H91p5hVO1";
        assert_eq!(verify_password(h, "secret"), Check::Match);
        assert_eq!(verify_password(h, "secreT"), Check::Mismatch);
        // openssl passwd -6 -salt 'rounds=5000$abc' secret (explicit rounds)
        let r = "{SHA512-CRYPT}$6$rounds=5000$abc$IdWKNKTJEb8LxY7CGg8YBXlvtfZzFw7Mp/r6niK9YB2mdvgY..TKjv1T..8RadRt2qvUHYRLr/TsVArtr91iR1";
        assert_eq!(verify_password(r, "secret"), Check::Match);
        // Without a scheme prefix, the crypt form is recognised.
        assert_eq!(
            verify_password(&h["{SHA512-CRYPT}".len()..], "secret"),
            Check::Match
        );
        assert!(matches!(
            verify_password("{SHA512-CRYPT}$5$abc$def", "secret"),
            Check::Malformed(_)
        ));
    }

    #[test]
    fn bcrypt_vectors() {
        // crypt_blowfish's published test vector ("U*U"), in $2a$ and $2y$ form.
        let a = "$2a$05$CCCCCCCCCCCCCCCCCCCCC.E5YPO9kmyuRGyh0XouQYb4YMJKvyOeW";
        assert_eq!(
            verify_password(&format!("{{BLF-CRYPT}}{a}"), "U*U"),
            Check::Match
        );
        let y = a.replacen("$2a$", "$2y$", 1);
        assert_eq!(
            verify_password(&format!("{{BLF-CRYPT}}{y}"), "U*U"),
            Check::Match
        );
        assert_eq!(
            verify_password(&format!("{{BCRYPT}}{y}"), "U*V"),
            Check::Mismatch
        );
        // One made with the bcrypt crate ($2b$).
        let made = bcrypt::hash("hunter2", 4).unwrap();
        assert_eq!(
            verify_password(&format!("{{BLF-CRYPT}}{made}"), "hunter2"),
            Check::Match
        );
        assert_eq!(
            verify_password(&format!("{{BLF-CRYPT}}{made}"), "hunter3"),
            Check::Mismatch
        );
        assert!(matches!(
            verify_password("{BLF-CRYPT}$6$x$y", "x"),
            Check::Malformed(_)
        ));
    }

    #[test]
    fn plain_unknown_and_empty() {
        assert_eq!(verify_password("{PLAIN}pw", "pw"), Check::Match);
        assert_eq!(verify_password("{PLAIN}pw", "pw2"), Check::Mismatch);
        assert_eq!(verify_password("{PLAIN}pw", ""), Check::Mismatch);
        assert_eq!(
            verify_password("{MD5-CRYPT}$1$abc$def", "x"),
            Check::Unsupported("MD5-CRYPT".into())
        );
        assert_eq!(
            verify_password("plaintext", "plaintext"),
            Check::Unsupported("(none)".into())
        );
        assert!(matches!(verify_password("", ""), Check::Malformed(_)));
        let long = "x".repeat(MAX_PASSWORD + 1);
        assert_eq!(
            verify_password(&format!("{{PLAIN}}{long}"), &long),
            Check::Mismatch
        );
    }

    #[test]
    fn constant_time_compare() {
        assert!(ct_eq(b"abc", b"abc"));
        assert!(!ct_eq(b"abc", b"abd"));
        assert!(!ct_eq(b"abc", b"ab"));
        assert!(!ct_eq(b"", b"\x01"));
        assert!(ct_eq(b"", b""));
    }
}
