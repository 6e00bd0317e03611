//! Clients of the auth service (`private/auth`): smtpd (SASL logins and
//! recipient lookups), later pop3d and imapd.

use crate::codec::{DecodeError, Decoder, Encoder, Message};
use crate::kinds::*;

/// A question to the auth service (`private/auth`), one per connection or
/// several in a row; each is answered by one [`AuthReply`].
///
/// SECURITY: `Verify` carries a password in clear over a socket only
/// postern-ipc members can reach; neither end logs it, and its [`Debug`]
/// output hides it.
#[derive(Clone, PartialEq, Eq)]
pub enum AuthRequest {
    /// Check a login. `service` is who asks on behalf of a client (smtpd,
    /// pop3d, imapd), `client_address` the client's IP (for throttling and logs).
    Verify {
        /// The asking service (smtpd, pop3d, imapd).
        service: String,
        /// The login name as the client gave it.
        user: String,
        /// The password in clear (never logged).
        password: String,
        /// The client's IP address, for throttling and logs.
        client_address: String,
    },
    /// Does this mail user exist, and where is their mailbox? Never reveals
    /// the password hash.
    Lookup {
        /// The mail user's name.
        user: String,
    },
}

impl std::fmt::Debug for AuthRequest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            AuthRequest::Verify {
                service,
                user,
                client_address,
                ..
            } => f
                .debug_struct("Verify")
                .field("service", service)
                .field("user", user)
                .field("password", &"<hidden>")
                .field("client_address", client_address)
                .finish(),
            AuthRequest::Lookup { user } => f.debug_struct("Lookup").field("user", user).finish(),
        }
    }
}

impl AuthRequest {
    /// Overwrites the password of a `Verify` with zeros (before the request
    /// is dropped), so it does not linger in freed memory.
    pub fn wipe(&mut self) {
        if let AuthRequest::Verify { password, .. } = self {
            let mut bytes = std::mem::take(password).into_bytes();
            bytes.iter_mut().for_each(|b| *b = 0);
            // Keeps the stores from being optimised away as dead.
            std::hint::black_box(&mut bytes);
        }
    }
}

/// The auth service's answers.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum AuthReply {
    /// The password is right; `user` is the canonical (lower-cased) name.
    Verified {
        /// The canonical login name.
        user: String,
    },
    /// Wrong password, unknown user or unusable hash: the same answer for
    /// all of them, so a client cannot tell which.
    Failed,
    /// No decision now (users file unreadable, too many failures from the
    /// client address): try again later.
    TempFail {
        /// Why (for the log; the client gets a generic 454/NO).
        reason: String,
    },
    /// The user exists (answer to `Lookup`). uid/gid/home are empty (None)
    /// when the users file leaves them out.
    User {
        /// The canonical user name.
        name: String,
        /// The uid mail for them is stored as, if the users file sets one.
        uid: Option<u32>,
        /// The gid, likewise.
        gid: Option<u32>,
        /// The home directory, if set.
        home: Option<String>,
    },
    /// No such user (answer to `Lookup`).
    NoSuchUser,
}

impl Message for AuthRequest {
    fn encode(&self) -> Vec<u8> {
        match self {
            AuthRequest::Verify {
                service,
                user,
                password,
                client_address,
            } => {
                let mut e = Encoder::new(K_AUTH_VERIFY);
                e.str(service).str(user).str(password).str(client_address);
                e.finish()
            }
            AuthRequest::Lookup { user } => {
                let mut e = Encoder::new(K_AUTH_LOOKUP);
                e.str(user);
                e.finish()
            }
        }
    }
    fn decode(kind: u8, d: &mut Decoder<'_>) -> Result<Self, DecodeError> {
        Ok(match kind {
            K_AUTH_VERIFY => AuthRequest::Verify {
                service: d.str()?,
                user: d.str()?,
                password: d.str()?,
                client_address: d.str()?,
            },
            K_AUTH_LOOKUP => AuthRequest::Lookup { user: d.str()? },
            k => return Err(DecodeError::UnknownKind(k)),
        })
    }
}

fn put_opt_u32(e: &mut Encoder, v: Option<u32>) {
    match v {
        Some(n) => e.u8(1).u32(n),
        None => e.u8(0).u32(0),
    };
}

fn get_opt_u32(d: &mut Decoder<'_>) -> Result<Option<u32>, DecodeError> {
    let present = d.u8()?;
    let n = d.u32()?;
    match present {
        0 if n == 0 => Ok(None),
        1 => Ok(Some(n)),
        _ => Err(DecodeError::BadValue("optional number")),
    }
}

impl Message for AuthReply {
    fn encode(&self) -> Vec<u8> {
        match self {
            AuthReply::Verified { user } => {
                let mut e = Encoder::new(K_AUTH_VERIFIED);
                e.str(user);
                e.finish()
            }
            AuthReply::Failed => Encoder::new(K_AUTH_FAILED).finish(),
            AuthReply::TempFail { reason } => {
                let mut e = Encoder::new(K_AUTH_TEMPFAIL);
                e.str(reason);
                e.finish()
            }
            AuthReply::User {
                name,
                uid,
                gid,
                home,
            } => {
                let mut e = Encoder::new(K_AUTH_USER);
                e.str(name);
                put_opt_u32(&mut e, *uid);
                put_opt_u32(&mut e, *gid);
                match home {
                    Some(h) => e.u8(1).str(h),
                    None => e.u8(0).str(""),
                };
                e.finish()
            }
            AuthReply::NoSuchUser => Encoder::new(K_AUTH_NOUSER).finish(),
        }
    }
    fn decode(kind: u8, d: &mut Decoder<'_>) -> Result<Self, DecodeError> {
        Ok(match kind {
            K_AUTH_VERIFIED => AuthReply::Verified { user: d.str()? },
            K_AUTH_FAILED => AuthReply::Failed,
            K_AUTH_TEMPFAIL => AuthReply::TempFail { reason: d.str()? },
            K_AUTH_USER => {
                let name = d.str()?;
                let uid = get_opt_u32(d)?;
                let gid = get_opt_u32(d)?;
                let present = d.u8()?;
                let h = d.str()?;
                let home = match present {
                    0 if h.is_empty() => None,
                    1 => Some(h),
                    _ => return Err(DecodeError::BadValue("optional home")),
                };
                AuthReply::User {
                    name,
                    uid,
                    gid,
                    home,
                }
            }
            K_AUTH_NOUSER => AuthReply::NoSuchUser,
            k => return Err(DecodeError::UnknownKind(k)),
        })
    }
}

#[cfg(test)]
mod auth_tests {
    use super::*;
    use crate::codec::decode_frame;
    use proptest::prelude::*;

    fn round<M: Message + PartialEq + std::fmt::Debug>(m: M) {
        assert_eq!(decode_frame::<M>(&m.encode()).unwrap(), m);
    }

    #[test]
    fn auth_frames_round_trip() {
        round(AuthRequest::Verify {
            service: "smtpd".into(),
            user: "Alice".into(),
            password: "p:ss wörd".into(),
            client_address: "192.0.2.1".into(),
        });
        round(AuthRequest::Lookup { user: "bob".into() });
        round(AuthReply::Verified {
            user: "alice".into(),
        });
        round(AuthReply::Failed);
        round(AuthReply::TempFail {
            reason: "try later".into(),
        });
        round(AuthReply::User {
            name: "bob".into(),
            uid: Some(0),
            gid: None,
            home: Some("/var/mail/bob".into()),
        });
        round(AuthReply::User {
            name: "c".into(),
            uid: None,
            gid: Some(5),
            home: None,
        });
        round(AuthReply::NoSuchUser);
    }

    #[test]
    fn auth_frames_are_not_confused_and_debug_hides_the_password() {
        let v = AuthRequest::Verify {
            service: "imapd".into(),
            user: "u".into(),
            password: "hunter2".into(),
            client_address: "::1".into(),
        };
        assert!(!format!("{v:?}").contains("hunter2"));
        assert!(matches!(
            decode_frame::<AuthReply>(&v.encode()),
            Err(DecodeError::UnknownKind(30))
        ));
        assert!(matches!(
            decode_frame::<AuthRequest>(&AuthReply::Failed.encode()),
            Err(DecodeError::UnknownKind(95))
        ));
        // An optional field with a bad presence byte is refused.
        let mut e = Encoder::new(97);
        e.str("x").u8(2).u32(1).u8(0).u32(0).u8(0).str("");
        assert!(decode_frame::<AuthReply>(&e.finish()).is_err());
    }

    #[test]
    fn wipe_clears_the_password() {
        let mut v = AuthRequest::Verify {
            service: "smtpd".into(),
            user: "u".into(),
            password: "secret".into(),
            client_address: "::1".into(),
        };
        v.wipe();
        assert!(matches!(v, AuthRequest::Verify { ref password, .. } if password.is_empty()));
    }

    proptest! {
        #[test]
        fn decoding_arbitrary_auth_bytes_never_panics(data in proptest::collection::vec(any::<u8>(), 0..200)) {
            let _ = decode_frame::<AuthRequest>(&data);
            let _ = decode_frame::<AuthReply>(&data);
        }
    }
}
