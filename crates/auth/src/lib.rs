//! The auth service: verifies mail users' passwords and answers "does this
//! user exist?" for smtpd (and later pop3d/imapd), over `private/auth`.
//!
//! Requests and replies are [`postern_ipc::messages::AuthRequest`] and
//! [`postern_ipc::messages::AuthReply`] (docs/auth.md). Users come from
//! `users_file` (a Dovecot passwd-file, read with its hashes by
//! postern-passdb), re-read when it changes; hashes are checked by
//! [`postern_passdb::verify_password`]; failed logins are throttled per
//! client address by [`throttle`].
//!
//! SECURITY: auth runs as `postern-auth`, the only user that can read
//! users_file once `postern install` has run (postern-auth:root 0600), and
//! it is the only service that keeps the hashes in memory: smtpd asks it,
//! local reads only uid/gid/home (postern-maps' `MailUsers`).
//! Passwords are never logged and are wiped from the request after use.
//! An unknown user costs the same work as a wrong password (a check
//! against a dummy argon2id hash) and gets the same `Failed` answer, so
//! neither the reply nor its timing tells which users exist. `Lookup`
//! never returns a hash. Clients are other Postern services (postern-ipc
//! group): auth trusts their framing, not their content.
//!
//! PARAMETERS: users_file, auth_failure_delay, auth_failure_limit,
//! auth_failure_window, ipc_timeout.

#![forbid(unsafe_code)]

pub mod throttle;

use std::cell::RefCell;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::rc::Rc;
use std::time::{Duration, Instant};

use postern_config::MainCf;
use postern_ipc::Channel;
use postern_ipc::messages::{AuthReply, AuthRequest};
use postern_passdb::{Check, PassDb, split_scheme, verify_password};

pub use throttle::Throttle;

/// The reply text when a client address has failed too often.
pub const THROTTLED: &str = "too many failed logins, try later";

/// The hash an unknown user's password is checked against, so that an
/// unknown user costs the same work as a wrong password. Made once by
/// [`postern_passdb::hash_password`] (same parameters: a test keeps them equal); what it
/// hashes does not matter, only the cost of checking it. A constant rather
/// than a fresh hash per process: auth processes are restarted after
/// max_use clients, and hashing at each start cost more CPU than the
/// lookups they served.
pub const DUMMY_HASH: &str = "{ARGON2ID}$argon2id$v=19$m=19456,t=2,p=1$rdGLRdbWo5SglkSffz0VwQ$wVCnJy8fKJ0/16h9EOS+ZRcA57d9OZByz/JejDgWz1A";

/// What identifies one version of the users file (reload when it changes).
type Stamp = (i64, i64, u64, u64);

fn stamp(path: &Path) -> std::io::Result<Stamp> {
    let m = std::fs::metadata(path)?;
    Ok((m.mtime(), m.mtime_nsec(), m.size(), m.ino()))
}

/// The users file as last read, and whether the last read worked.
#[derive(Debug)]
enum Users {
    /// users_file is empty: there are no users.
    None,
    /// Read successfully at `stamp`.
    Loaded {
        path: PathBuf,
        stamp: Stamp,
        users: PassDb,
    },
    /// Could not be read or parsed (the reason); every request TempFails
    /// until it can be.
    Broken { path: PathBuf, reason: String },
}

/// One auth process's state: users, throttle, settings.
#[derive(Debug)]
pub struct Auth {
    users: Users,
    throttle: Throttle,
    delay: Duration,
    dummy: String,
}

/// The answer to one request and how long to wait before sending it.
#[derive(Debug, PartialEq, Eq)]
pub struct Answer {
    /// What to send.
    pub reply: AuthReply,
    /// Wait this long first (failed logins).
    pub delay: Duration,
}

fn load(path: &Path) -> Users {
    let result = stamp(path)
        .map_err(|e| format!("{}: cannot stat: {e}", path.display()))
        .and_then(|st| {
            PassDb::load(path)
                .map(|u| (st, u))
                .map_err(|e| e.to_string())
        });
    match result {
        Ok((stamp, users)) => {
            for w in users.warnings() {
                tracing::warn!("{w}");
            }
            for u in users.iter() {
                if split_scheme(&u.password).0 == "PLAIN" {
                    tracing::warn!(
                        "{}: user {} has a {{PLAIN}} password: clear-text passwords are for tests only",
                        path.display(),
                        u.user.name
                    );
                }
            }
            Users::Loaded {
                path: path.to_path_buf(),
                stamp,
                users,
            }
        }
        Err(reason) => {
            tracing::warn!("{reason}");
            Users::Broken {
                path: path.to_path_buf(),
                reason,
            }
        }
    }
}

impl Auth {
    /// An auth state reading `users_file` (None = no users), blocking an
    /// address after `limit` failures within `window`, delaying every
    /// failure reply by `delay`.
    pub fn new(
        users_file: Option<&Path>,
        limit: usize,
        window: Duration,
        delay: Duration,
    ) -> Result<Auth, String> {
        let users = match users_file {
            Some(p) => load(p),
            None => Users::None,
        };
        Ok(Auth {
            users,
            throttle: Throttle::new(limit, window),
            delay,
            dummy: DUMMY_HASH.to_string(),
        })
    }

    /// Reads the auth parameters from main.cf.
    pub fn from_config(main: &MainCf) -> Result<Auth, String> {
        let users_file = main.str("users_file");
        let limit = main.int("auth_failure_limit").map_err(|e| e.to_string())?;
        let window = main
            .time("auth_failure_window")
            .map_err(|e| e.to_string())?;
        let delay = main.time("auth_failure_delay").map_err(|e| e.to_string())?;
        if users_file.is_empty() {
            tracing::warn!("users_file is empty: no user can log in");
        }
        Auth::new(
            (!users_file.is_empty()).then(|| Path::new(&users_file)),
            usize::try_from(limit).unwrap_or(0),
            window,
            delay,
        )
    }

    /// Re-reads the users file if it changed (or could not be read before).
    fn refresh(&mut self) {
        let (path, old) = match &self.users {
            Users::None => return,
            Users::Loaded { path, stamp, .. } => (path.clone(), Some(*stamp)),
            Users::Broken { path, .. } => (path.clone(), None),
        };
        match stamp(&path) {
            Ok(now) if Some(now) == old => {}
            Ok(_) => {
                self.users = load(&path);
                if matches!(self.users, Users::Loaded { .. }) && old.is_some() {
                    tracing::info!("reloaded {}", path.display());
                }
            }
            Err(e) => {
                let reason = format!("{}: cannot stat: {e}", path.display());
                tracing::warn!("{reason}");
                self.users = Users::Broken { path, reason };
            }
        }
    }

    /// Answers one request. `now` is the time used for throttling.
    pub fn handle(&mut self, req: &AuthRequest, now: Instant) -> Answer {
        self.refresh();
        match req {
            AuthRequest::Lookup { user } => Answer {
                reply: self.lookup(user),
                delay: Duration::ZERO,
            },
            AuthRequest::Verify {
                service,
                user,
                password,
                client_address,
            } => self.verify(service, user, password, client_address, now),
        }
    }

    fn lookup(&self, user: &str) -> AuthReply {
        match &self.users {
            Users::None => AuthReply::NoSuchUser,
            Users::Broken { reason, .. } => AuthReply::TempFail {
                reason: reason.clone(),
            },
            Users::Loaded { users, .. } => match users.get(user).map(|u| &u.user) {
                Some(u) => AuthReply::User {
                    name: u.name.clone(),
                    uid: u.uid,
                    gid: u.gid,
                    home: u.home.as_ref().map(|h| h.display().to_string()),
                },
                None => AuthReply::NoSuchUser,
            },
        }
    }

    fn verify(
        &mut self,
        service: &str,
        user: &str,
        password: &str,
        client: &str,
        now: Instant,
    ) -> Answer {
        let client = if client.is_empty() { "unknown" } else { client };
        let user_shown = user.escape_debug().to_string();
        if self.throttle.blocked(client, now) {
            tracing::warn!("{service}: login of {user_shown} from {client} refused: {THROTTLED}");
            return Answer {
                reply: AuthReply::TempFail {
                    reason: THROTTLED.into(),
                },
                delay: self.delay,
            };
        }
        let stored = match &self.users {
            Users::Broken { reason, .. } => {
                return Answer {
                    reply: AuthReply::TempFail {
                        reason: reason.clone(),
                    },
                    delay: Duration::ZERO,
                };
            }
            Users::None => None,
            Users::Loaded { users, .. } => users
                .get(user)
                .map(|u| (u.user.name.clone(), u.password.clone())),
        };
        let (verdict, name) = match &stored {
            Some((name, hash)) => (verify_password(hash, password), Some(name.as_str())),
            None => {
                // Same work as a real check; the result is always a failure.
                let _ = verify_password(&self.dummy, password);
                (Check::Mismatch, None)
            }
        };
        match (verdict, name) {
            (Check::Match, Some(name)) => {
                self.throttle.success(client);
                tracing::info!("{service}: {name} logged in from {client}");
                Answer {
                    reply: AuthReply::Verified { user: name.into() },
                    delay: Duration::ZERO,
                }
            }
            (verdict, _) => {
                match &verdict {
                    Check::Unsupported(scheme) => tracing::warn!(
                        "user {user_shown}: unsupported password scheme {scheme}: login refused"
                    ),
                    Check::Malformed(why) => tracing::warn!(
                        "user {user_shown}: unusable password hash: {why}: login refused"
                    ),
                    _ => {}
                }
                self.throttle.failure(client, now);
                tracing::info!("{service}: authentication failed for {user_shown} from {client}");
                Answer {
                    reply: AuthReply::Failed,
                    delay: self.delay,
                }
            }
        }
    }
}

/// Serves one client connection: requests until it closes.
async fn serve(auth: &RefCell<Auth>, mut chan: Channel, timeout: Duration) {
    loop {
        let req = match tokio::time::timeout(timeout, chan.recv::<AuthRequest>()).await {
            Ok(Ok(Some(r))) => r,
            Ok(Ok(None)) => return,
            Ok(Err(e)) => {
                tracing::warn!("auth request: {e}");
                return;
            }
            Err(_) => {
                tracing::warn!("auth client timed out");
                return;
            }
        };
        let mut req = req;
        let answer = auth.borrow_mut().handle(&req, Instant::now());
        req.wipe();
        drop(req);
        if !answer.delay.is_zero() {
            tokio::time::sleep(answer.delay).await;
        }
        if let Err(e) = chan.send(&answer.reply).await {
            tracing::warn!("auth reply: {e}");
            return;
        }
    }
}

/// The program: a one-client-at-a-time service on the skeleton, listening
/// on `private/auth`.
pub fn main() -> ! {
    postern_service::single_server(
        "auth",
        |ctx| {
            let timeout = ctx.config.time("ipc_timeout").map_err(|e| e.to_string())?;
            Ok((RefCell::new(Auth::from_config(&ctx.config)?), timeout))
        },
        |state: Rc<(RefCell<Auth>, Duration)>, conn| async move {
            match conn {
                postern_service::Connection::Unix { stream } => {
                    serve(&state.0, Channel::new(stream), state.1).await
                }
                postern_service::Connection::Tcp { peer, .. } => {
                    tracing::warn!(
                        "auth refuses TCP client {peer}: configure it as a unix service"
                    );
                }
            }
        },
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use postern_passdb::hash_password;

    fn verify(user: &str, password: &str, client: &str) -> AuthRequest {
        AuthRequest::Verify {
            service: "smtpd".into(),
            user: user.into(),
            password: password.into(),
            client_address: client.into(),
        }
    }

    fn setup(text: &str, limit: usize) -> (tempfile::TempDir, PathBuf, Auth) {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("users");
        std::fs::write(&p, text).unwrap();
        let a = Auth::new(
            Some(&p),
            limit,
            Duration::from_secs(600),
            Duration::from_millis(5),
        )
        .unwrap();
        (d, p, a)
    }

    #[test]
    fn good_bad_and_unknown_users() {
        let h = hash_password("right").unwrap();
        let (_d, _p, mut a) = setup(
            &format!("# users\nalice:{h}:1000:1000::/home/alice::\nbob:{{PLAIN}}pw:::::\n"),
            0,
        );
        let now = Instant::now();
        let ok = a.handle(&verify("Alice", "right", "192.0.2.1"), now);
        assert_eq!(
            ok.reply,
            AuthReply::Verified {
                user: "alice".into()
            }
        );
        assert_eq!(ok.delay, Duration::ZERO);
        let wrong = a.handle(&verify("alice", "wrong", "192.0.2.1"), now);
        let unknown = a.handle(&verify("mallory", "right", "192.0.2.1"), now);
        assert_eq!(wrong.reply, AuthReply::Failed);
        assert_eq!(
            unknown, wrong,
            "unknown user and wrong password look the same"
        );
        assert_eq!(
            a.handle(&verify("bob", "pw", "::1"), now).reply,
            AuthReply::Verified { user: "bob".into() }
        );
    }

    #[test]
    fn the_dummy_hash_costs_what_a_new_hash_costs() {
        let params = |h: &str| h.split('$').nth(3).map(str::to_string);
        let fresh = hash_password("x").unwrap();
        assert_eq!(params(DUMMY_HASH), params(&fresh));
        assert_eq!(DUMMY_HASH.split('$').nth(1), fresh.split('$').nth(1));
        assert_eq!(verify_password(DUMMY_HASH, "x"), Check::Mismatch);
    }

    #[test]
    fn unknown_scheme_fails() {
        let (_d, _p, mut a) = setup("carol:{MD5-CRYPT}$1$x$y:::::\ndave::::::\n", 0);
        let now = Instant::now();
        assert_eq!(
            a.handle(&verify("carol", "x", "a"), now).reply,
            AuthReply::Failed
        );
        assert_eq!(
            a.handle(&verify("dave", "", "a"), now).reply,
            AuthReply::Failed
        );
    }

    #[test]
    fn lookup_never_shows_the_hash() {
        let (_d, _p, mut a) = setup("alice:{PLAIN}pw:1000:100::/home/alice::\nbob\n", 0);
        let now = Instant::now();
        let r = a.handle(
            &AuthRequest::Lookup {
                user: "ALICE".into(),
            },
            now,
        );
        assert_eq!(
            r.reply,
            AuthReply::User {
                name: "alice".into(),
                uid: Some(1000),
                gid: Some(100),
                home: Some("/home/alice".into())
            }
        );
        assert!(!format!("{:?}", r.reply).contains("pw"));
        assert_eq!(
            a.handle(&AuthRequest::Lookup { user: "bob".into() }, now)
                .reply,
            AuthReply::User {
                name: "bob".into(),
                uid: None,
                gid: None,
                home: None
            }
        );
        assert_eq!(
            a.handle(
                &AuthRequest::Lookup {
                    user: "nobody".into()
                },
                now
            )
            .reply,
            AuthReply::NoSuchUser
        );
    }

    #[test]
    fn throttling_blocks_even_the_right_password() {
        let (_d, _p, mut a) = setup("u:{PLAIN}good:::::\n", 3);
        let now = Instant::now();
        for _ in 0..3 {
            let r = a.handle(&verify("u", "bad", "198.51.100.7"), now);
            assert_eq!(r.reply, AuthReply::Failed);
            assert_eq!(r.delay, Duration::from_millis(5));
        }
        let r = a.handle(&verify("u", "good", "198.51.100.7"), now);
        assert_eq!(
            r.reply,
            AuthReply::TempFail {
                reason: THROTTLED.into()
            }
        );
        assert_eq!(r.delay, Duration::from_millis(5));
        // Another address is not affected; the window passes.
        assert!(matches!(
            a.handle(&verify("u", "good", "198.51.100.8"), now).reply,
            AuthReply::Verified { .. }
        ));
        let later = now + Duration::from_secs(601);
        assert!(matches!(
            a.handle(&verify("u", "good", "198.51.100.7"), later).reply,
            AuthReply::Verified { .. }
        ));
    }

    #[test]
    fn malformed_file_is_a_temporary_failure_and_reload_fixes_it() {
        let (_d, p, mut a) = setup("alice:{PLAIN}pw:notanumber:::::\n", 0);
        let now = Instant::now();
        assert!(matches!(
            a.handle(&verify("alice", "pw", "a"), now).reply,
            AuthReply::TempFail { .. }
        ));
        assert!(matches!(
            a.handle(
                &AuthRequest::Lookup {
                    user: "alice".into()
                },
                now
            )
            .reply,
            AuthReply::TempFail { .. }
        ));
        std::fs::write(&p, "alice:{PLAIN}pw2:1000::::\n").unwrap();
        assert_eq!(
            a.handle(&verify("alice", "pw2", "a"), now).reply,
            AuthReply::Verified {
                user: "alice".into()
            }
        );
        // A removed file is a temporary failure, never "no such user".
        std::fs::remove_file(&p).unwrap();
        assert!(matches!(
            a.handle(
                &AuthRequest::Lookup {
                    user: "alice".into()
                },
                now
            )
            .reply,
            AuthReply::TempFail { .. }
        ));
    }

    #[test]
    fn no_users_file_means_no_users() {
        let mut a = Auth::new(None, 0, Duration::from_secs(1), Duration::ZERO).unwrap();
        let now = Instant::now();
        assert_eq!(
            a.handle(&verify("x", "y", "z"), now).reply,
            AuthReply::Failed
        );
        assert_eq!(
            a.handle(&AuthRequest::Lookup { user: "x".into() }, now)
                .reply,
            AuthReply::NoSuchUser
        );
    }
}
