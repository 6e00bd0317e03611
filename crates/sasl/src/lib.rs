//! The server side of SASL PLAIN (RFC 4616) and LOGIN, without I/O.
//!
//! smtpd (RFC 4954 AUTH), and later pop3d (RFC 5034 AUTH) and imapd
//! (RFC 9051 AUTHENTICATE), all carry SASL the same way: a mechanism name,
//! an optional base64 initial response, then base64 challenge/response
//! lines until the mechanism has what it needs. [`Exchange`] is that state
//! machine; the protocol driver reads lines, writes challenges in its own
//! framing (`334 ...`, `+ ...`) and hands the finished [`Credentials`] to
//! the auth service for checking. Nothing here knows any password.
//!
//! SECURITY: every byte here comes from an unauthenticated network client.
//! Responses are length-limited before decoding, decoded strictly (base64
//! alphabet, UTF-8, no NUL inside fields), and never panic (property-tested
//! and fuzzed: `fuzz/fuzz_targets/sasl_exchange.rs`). Proxy authorization
//! (an authorization identity different from the login) is refused: a user
//! can only act as themselves. The password lives in [`Password`], which
//! hides it from `Debug` and overwrites it when dropped. PLAIN and LOGIN send
//! the password itself, so drivers offer them only inside TLS.
//!
//! STANDARDS: RFC 4422 (SASL), RFC 4616 (PLAIN), draft-murchison-sasl-login
//! (LOGIN), RFC 4648 (base64).
#![forbid(unsafe_code)]
#![warn(missing_docs)]

use base64::Engine;
use base64::engine::{DecodePaddingMode, GeneralPurpose, GeneralPurposeConfig};
use std::fmt;

/// Longest base64 response line accepted (before decoding). RFC 4954 asks
/// servers to take at least 12288 octets for an AUTH line; credentials for
/// PLAIN and LOGIN never need more.
pub const MAX_RESPONSE: usize = 12288;
/// Longest user name (octets) accepted in a response.
pub const MAX_USERNAME: usize = 255;
/// Longest password (octets) accepted in a response.
pub const MAX_PASSWORD: usize = 1024;

/// Base64 as clients send it: the standard alphabet; padding may be present
/// or left out (some clients omit it), but must be right when present.
const B64: GeneralPurpose = GeneralPurpose::new(
    &base64::alphabet::STANDARD,
    GeneralPurposeConfig::new()
        .with_encode_padding(true)
        .with_decode_padding_mode(DecodePaddingMode::Indifferent),
);

/// The mechanisms Postern offers. Both send the password itself, so they
/// are offered only over TLS (smtpd_tls_auth_only).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mechanism {
    /// RFC 4616: one message `authzid NUL authcid NUL password`.
    Plain,
    /// The LOGIN mechanism: "Username:" and "Password:" challenges. Not
    /// standardised but what Outlook and many devices use.
    Login,
}

impl Mechanism {
    /// Every mechanism, in the order they are advertised.
    pub const ALL: [Mechanism; 2] = [Mechanism::Plain, Mechanism::Login];

    /// The mechanism with this name (case-insensitive), if we offer it.
    pub fn from_name(name: &str) -> Option<Mechanism> {
        if name.eq_ignore_ascii_case("PLAIN") {
            Some(Mechanism::Plain)
        } else if name.eq_ignore_ascii_case("LOGIN") {
            Some(Mechanism::Login)
        } else {
            None
        }
    }

    /// The registered name, upper-case, as advertised and as logged
    /// (`sasl_method=PLAIN`).
    pub fn name(self) -> &'static str {
        match self {
            Mechanism::Plain => "PLAIN",
            Mechanism::Login => "LOGIN",
        }
    }

    /// The advertised list, e.g. `"PLAIN LOGIN"` for EHLO's AUTH line.
    pub fn advertised() -> String {
        Mechanism::ALL
            .iter()
            .map(|m| m.name())
            .collect::<Vec<_>>()
            .join(" ")
    }
}

/// A password from a client. Hidden from `Debug`; zeroed when dropped, so
/// it does not linger in freed memory after the auth service has answered.
#[derive(Clone, PartialEq, Eq)]
pub struct Password(String);

impl Password {
    /// The password, for handing to the auth service (and nowhere else).
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Password {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("<hidden>")
    }
}

impl Drop for Password {
    fn drop(&mut self) {
        let mut bytes = std::mem::take(&mut self.0).into_bytes();
        bytes.iter_mut().for_each(|b| *b = 0);
        // Keeps the stores from being optimised away as dead.
        std::hint::black_box(&bytes);
    }
}

/// What a finished exchange yields: who the client says it is and the
/// password to check.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Credentials {
    /// The login (authentication identity), exactly as sent.
    pub username: String,
    /// The password to verify.
    pub password: Password,
}

/// What the driver does next.
#[derive(Debug, PartialEq, Eq)]
pub enum Step {
    /// Send this challenge (raw octets: the driver base64-encodes them with
    /// [`encode`]) and feed the client's next line to [`Exchange::respond`].
    Challenge(&'static [u8]),
    /// The exchange is complete: verify these credentials.
    Done(Credentials),
}

/// Why an exchange failed. Each maps to one precise protocol reply.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SaslError {
    /// The client cancelled with `*` (RFC 4954 section 4).
    Aborted,
    /// The response is not valid base64.
    BadBase64,
    /// The response line is longer than [`MAX_RESPONSE`].
    TooLong,
    /// The decoded response is not what the mechanism expects (the reason).
    Malformed(&'static str),
    /// An authorization identity other than the login was given: acting as
    /// another user is not allowed.
    ProxyRefused,
    /// [`Exchange::respond`] was called after the exchange finished.
    Finished,
}

impl fmt::Display for SaslError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SaslError::Aborted => f.write_str("authentication aborted by the client"),
            SaslError::BadBase64 => f.write_str("invalid base64 data"),
            SaslError::TooLong => f.write_str("response too long"),
            SaslError::Malformed(why) => write!(f, "malformed response: {why}"),
            SaslError::ProxyRefused => f.write_str("authorization identity differs from the login"),
            SaslError::Finished => f.write_str("exchange already finished"),
        }
    }
}

impl std::error::Error for SaslError {}

/// Base64-encodes a challenge for the wire.
pub fn encode(bytes: &[u8]) -> String {
    B64.encode(bytes)
}

/// Decodes one response line: `*` cancels, `=` (where allowed) or an empty
/// line is an empty response.
fn decode(line: &str) -> Result<Vec<u8>, SaslError> {
    let line = line.trim_end_matches(['\r', '\n']);
    if line == "*" {
        return Err(SaslError::Aborted);
    }
    if line.len() > MAX_RESPONSE {
        return Err(SaslError::TooLong);
    }
    if line.is_empty() || line == "=" {
        return Ok(Vec::new());
    }
    B64.decode(line).map_err(|_| SaslError::BadBase64)
}

/// The two fields a response carries, with their limits and complaints.
#[derive(Clone, Copy)]
enum Field {
    UserName,
    Password,
}

impl Field {
    fn max(self) -> usize {
        match self {
            Field::UserName => MAX_USERNAME,
            Field::Password => MAX_PASSWORD,
        }
    }

    fn empty(self) -> SaslError {
        SaslError::Malformed(match self {
            Field::UserName => "empty user name",
            Field::Password => "empty password",
        })
    }

    fn too_long(self) -> SaslError {
        SaslError::Malformed(match self {
            Field::UserName => "user name too long",
            Field::Password => "password too long",
        })
    }
}

/// A field of a response: UTF-8, no NUL, not empty, within its limit.
fn field(bytes: &[u8], kind: Field) -> Result<String, SaslError> {
    if bytes.is_empty() {
        return Err(kind.empty());
    }
    if bytes.len() > kind.max() {
        return Err(kind.too_long());
    }
    if bytes.contains(&0) {
        return Err(SaslError::Malformed("NUL inside a field"));
    }
    String::from_utf8(bytes.to_vec()).map_err(|_| SaslError::Malformed("not UTF-8"))
}

/// Parses a PLAIN message: `[authzid] NUL authcid NUL passwd`.
fn parse_plain(msg: &[u8]) -> Result<Credentials, SaslError> {
    let mut parts = msg.splitn(3, |&b| b == 0);
    let (Some(authzid), Some(authcid), Some(passwd)) = (parts.next(), parts.next(), parts.next())
    else {
        return Err(SaslError::Malformed(
            "want authzid NUL authcid NUL password",
        ));
    };
    let username = field(authcid, Field::UserName)?;
    let password = Password(field(passwd, Field::Password)?);
    if !authzid.is_empty() {
        let authzid = field(authzid, Field::UserName)?;
        if authzid != username {
            return Err(SaslError::ProxyRefused);
        }
    }
    Ok(Credentials { username, password })
}

const USERNAME_CHALLENGE: &[u8] = b"Username:";
const PASSWORD_CHALLENGE: &[u8] = b"Password:";

#[derive(Debug)]
enum State {
    /// PLAIN sent its empty challenge; the next line is the message.
    PlainMessage,
    /// LOGIN asked for the user name.
    LoginUser,
    /// LOGIN asked for the password of this user.
    LoginPassword(String),
    /// Credentials were handed out (or the exchange failed).
    Finished,
}

/// One SASL exchange, from the AUTH command to the credentials.
#[derive(Debug)]
pub struct Exchange {
    mechanism: Mechanism,
    state: State,
}

impl Exchange {
    /// Starts `mechanism`. `initial` is the initial response exactly as the
    /// client sent it with the command (base64, or `=` for an empty one).
    pub fn start(
        mechanism: Mechanism,
        initial: Option<&str>,
    ) -> Result<(Exchange, Step), SaslError> {
        let mut ex = Exchange {
            mechanism,
            state: match mechanism {
                Mechanism::Plain => State::PlainMessage,
                Mechanism::Login => State::LoginUser,
            },
        };
        let step = match initial {
            Some(line) => ex.respond(line)?,
            None => Step::Challenge(match mechanism {
                Mechanism::Plain => b"",
                Mechanism::Login => USERNAME_CHALLENGE,
            }),
        };
        Ok((ex, step))
    }

    /// The mechanism of this exchange.
    pub fn mechanism(&self) -> Mechanism {
        self.mechanism
    }

    /// Feeds the client's next response line (without CRLF).
    pub fn respond(&mut self, line: &str) -> Result<Step, SaslError> {
        let state = std::mem::replace(&mut self.state, State::Finished);
        let bytes = decode(line)?;
        match state {
            State::Finished => Err(SaslError::Finished),
            State::PlainMessage => parse_plain(&bytes).map(Step::Done),
            State::LoginUser => {
                let user = field(&bytes, Field::UserName)?;
                self.state = State::LoginPassword(user);
                Ok(Step::Challenge(PASSWORD_CHALLENGE))
            }
            State::LoginPassword(username) => {
                let password = Password(field(&bytes, Field::Password)?);
                Ok(Step::Done(Credentials { username, password }))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn creds(user: &str, pass: &str) -> Step {
        Step::Done(Credentials {
            username: user.into(),
            password: Password(pass.into()),
        })
    }

    #[test]
    fn plain_with_initial_response() {
        let ir = encode(b"\0vera\0s3cret pass");
        let (_, step) = Exchange::start(Mechanism::Plain, Some(&ir)).unwrap();
        assert_eq!(step, creds("vera", "s3cret pass"));
        // authzid equal to the login is fine.
        let ir = encode(b"vera\0vera\0pw");
        let (_, step) = Exchange::start(Mechanism::Plain, Some(&ir)).unwrap();
        assert_eq!(step, creds("vera", "pw"));
    }

    #[test]
    fn plain_without_initial_response_gets_an_empty_challenge() {
        let (mut ex, step) = Exchange::start(Mechanism::Plain, None).unwrap();
        assert_eq!(step, Step::Challenge(b""));
        assert_eq!(encode(b""), "");
        let step = ex.respond(&encode(b"\0vera\0pw")).unwrap();
        assert_eq!(step, creds("vera", "pw"));
        assert_eq!(ex.respond("AAAA"), Err(SaslError::Finished));
    }

    #[test]
    fn plain_refuses_acting_as_someone_else_and_bad_shapes() {
        let ir = encode(b"root\0vera\0pw");
        assert_eq!(
            Exchange::start(Mechanism::Plain, Some(&ir)).unwrap_err(),
            SaslError::ProxyRefused
        );
        for bad in [
            &b"vera\0pw"[..],
            b"\0\0pw",
            b"\0vera\0",
            b"\0ve\xffra\0pw",
            b"\0vera\0p\0w",
        ] {
            let r = Exchange::start(Mechanism::Plain, Some(&encode(bad)));
            assert!(
                matches!(r, Err(SaslError::Malformed(_))),
                "{bad:?} gave {r:?}"
            );
        }
        assert!(matches!(
            Exchange::start(Mechanism::Plain, Some("=")),
            Err(SaslError::Malformed(_))
        ));
        assert_eq!(
            Exchange::start(Mechanism::Plain, Some("AGZvbwBiYXI!")).unwrap_err(),
            SaslError::BadBase64
        );
    }

    #[test]
    fn login_asks_for_user_then_password() {
        let (mut ex, step) = Exchange::start(Mechanism::Login, None).unwrap();
        assert_eq!(step, Step::Challenge(b"Username:"));
        assert_eq!(encode(b"Username:"), "VXNlcm5hbWU6");
        assert_eq!(
            ex.respond(&encode(b"vera")).unwrap(),
            Step::Challenge(b"Password:")
        );
        assert_eq!(encode(b"Password:"), "UGFzc3dvcmQ6");
        assert_eq!(ex.respond(&encode(b"pw")).unwrap(), creds("vera", "pw"));
        assert_eq!(ex.mechanism(), Mechanism::Login);
    }

    #[test]
    fn login_accepts_the_user_name_as_initial_response() {
        let (mut ex, step) = Exchange::start(Mechanism::Login, Some("dmVyYQ==")).unwrap();
        assert_eq!(step, Step::Challenge(b"Password:"));
        // Unpadded base64 is accepted too.
        assert_eq!(ex.respond("cHc").unwrap(), creds("vera", "pw"));
    }

    #[test]
    fn star_cancels_and_long_lines_are_refused_undecoded() {
        let (mut ex, _) = Exchange::start(Mechanism::Login, None).unwrap();
        assert_eq!(ex.respond("*"), Err(SaslError::Aborted));
        let (mut ex, _) = Exchange::start(Mechanism::Plain, None).unwrap();
        assert_eq!(
            ex.respond(&"A".repeat(MAX_RESPONSE + 4)),
            Err(SaslError::TooLong)
        );
        let long_user = encode(format!("\0{}\0pw", "u".repeat(MAX_USERNAME + 1)).as_bytes());
        assert_eq!(
            Exchange::start(Mechanism::Plain, Some(&long_user)).unwrap_err(),
            SaslError::Malformed("user name too long")
        );
    }

    #[test]
    fn mechanism_names() {
        assert_eq!(Mechanism::from_name("plain"), Some(Mechanism::Plain));
        assert_eq!(Mechanism::from_name("LOGIN"), Some(Mechanism::Login));
        assert_eq!(Mechanism::from_name("CRAM-MD5"), None);
        assert_eq!(Mechanism::advertised(), "PLAIN LOGIN");
    }

    #[test]
    fn password_is_hidden_from_debug() {
        let c = Credentials {
            username: "vera".into(),
            password: Password("hunter2".into()),
        };
        let shown = format!("{c:?}");
        assert!(!shown.contains("hunter2"), "{shown}");
        assert_eq!(c.password.expose(), "hunter2");
    }

    proptest! {
        /// Any PLAIN message with sane fields round-trips through base64.
        #[test]
        fn plain_round_trips(user in "[^\u{0}]{1,40}", pass in "[^\u{0}]{1,80}", same_authzid in any::<bool>()) {
            let authzid = if same_authzid { user.clone() } else { String::new() };
            let msg = format!("{authzid}\0{user}\0{pass}");
            let (_, step) = Exchange::start(Mechanism::Plain, Some(&encode(msg.as_bytes()))).unwrap();
            prop_assert_eq!(step, creds(&user, &pass));
        }

        /// Arbitrary response lines never panic, whatever the state.
        #[test]
        fn arbitrary_lines_never_panic(lines in proptest::collection::vec(".{0,64}", 0..5), login in any::<bool>()) {
            let mech = if login { Mechanism::Login } else { Mechanism::Plain };
            if let Ok((mut ex, _)) = Exchange::start(mech, lines.first().map(String::as_str)) {
                for l in lines.iter().skip(1) {
                    let _ = ex.respond(l);
                }
            }
        }

        /// Arbitrary decoded bytes never panic and never yield an empty field.
        #[test]
        fn arbitrary_bytes_never_yield_empty_fields(bytes in proptest::collection::vec(any::<u8>(), 0..64)) {
            if let Ok((_, Step::Done(c))) = Exchange::start(Mechanism::Plain, Some(&encode(&bytes))) {
                prop_assert!(!c.username.is_empty());
                prop_assert!(!c.password.expose().is_empty());
                prop_assert!(!c.username.contains('\0'));
            }
        }
    }
}
