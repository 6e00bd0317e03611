//! The password database: users_file with its password hashes, and the
//! hashing and checking of passwords.
//!
//! Only the auth service (which checks passwords) and the `postern`
//! command (whose `passwd` makes new hashes) link this crate. smtpd asks
//! auth about users; local reads users_file through postern-maps'
//! [`postern_maps::MailUsers`], which keeps no hash. Both readers use the
//! one grammar, [`postern_maps::user_lines`].
//!
//! - [`PassDb`]: the parsed users file, each user with its stored hash.
//! - [`hash`]: [`verify_password`] for the Dovecot `{SCHEME}hash` forms,
//!   [`hash_password`] for new argon2id hashes.
//!
//! SECURITY: a [`PassDb`] holds every user's hash for as long as it lives;
//! keep it in the process that checks passwords and nowhere else. Its
//! `Debug` output leaves the hashes out.
#![forbid(unsafe_code)]

pub mod hash;

use std::fmt;
use std::path::Path;

pub use hash::{Check, MAX_PASSWORD, ct_eq, hash_password, split_scheme, verify_password};
use postern_maps::UserTable;
pub use postern_maps::{MailUser, MapError};

/// One users_file user with the password hash stored for it.
#[derive(Clone, PartialEq, Eq)]
pub struct PassUser {
    /// Name, uid, gid, home.
    pub user: MailUser,
    /// The hash as stored, e.g. "{ARGON2ID}$argon2id$..."; may be empty.
    pub password: String,
}

impl fmt::Debug for PassUser {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PassUser")
            .field("user", &self.user)
            .field("password", &"<hidden>")
            .finish()
    }
}

/// The parsed users file with its hashes, in file order, with lookup by name.
#[derive(Clone, Debug, Default)]
pub struct PassDb {
    table: UserTable<PassUser>,
}

impl PassDb {
    /// Parses users-file text; `path` is only used in errors.
    pub fn parse(text: &str, path: &Path) -> Result<PassDb, MapError> {
        let table = UserTable::parse_with(text, path, |line| PassUser {
            password: line.password.to_string(),
            user: line.user,
        })?;
        Ok(PassDb { table })
    }

    /// Reads and parses a users file (the bytes read are wiped after; the
    /// hashes live on in the result).
    pub fn load(path: &Path) -> Result<PassDb, MapError> {
        postern_maps::with_users_file(path, |text| PassDb::parse(text, path))
    }

    /// The user called `name` (compared lower-cased, no extension stripping).
    pub fn get(&self, name: &str) -> Option<&PassUser> {
        self.table.get(name)
    }

    /// All users in file order.
    pub fn iter(&self) -> impl Iterator<Item = &PassUser> {
        self.table.iter()
    }

    /// Non-fatal problems (duplicate users) found while parsing.
    pub fn warnings(&self) -> &[String] {
        self.table.warnings()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::PathBuf;

    const P: &str = "/etc/postern/users";

    #[test]
    fn keeps_the_hashes_with_the_users() {
        let t = "# users\n\nJoe:{ARGON2ID}$argon2id$v=19$m=65536,t=3,p=1$c2FsdA$aGFzaA:1001:1001::/home/joe::extra=1\nann:{PLAIN}x\nbob:\n";
        let db = PassDb::parse(t, Path::new(P)).unwrap();
        let joe = db.get("JOE").unwrap();
        assert_eq!(joe.user.name, "joe");
        assert!(joe.password.starts_with("{ARGON2ID}$argon2id$"));
        assert_eq!((joe.user.uid, joe.user.gid), (Some(1001), Some(1001)));
        assert_eq!(joe.user.home, Some(PathBuf::from("/home/joe")));
        assert_eq!(db.get("ann").unwrap().password, "{PLAIN}x");
        assert_eq!(db.get("bob").unwrap().password, "");
        assert!(db.get("nobody").is_none());
        assert_eq!(
            db.iter().map(|u| u.user.name.as_str()).collect::<Vec<_>>(),
            ["joe", "ann", "bob"]
        );
        assert!(!format!("{db:?}").contains("PLAIN"), "Debug hides hashes");
    }

    #[test]
    fn same_grammar_as_the_maps_reader() {
        for t in ["a:x\nb:x:12z\n", "a b:x\n", "a:x:1:1::relative\n"] {
            let ours = PassDb::parse(t, Path::new(P)).unwrap_err();
            let theirs = postern_maps::MailUsers::parse(t, Path::new(P)).unwrap_err();
            assert_eq!(ours, theirs, "{t:?}");
        }
        let db = PassDb::parse("a:1\na:2\n", Path::new(P)).unwrap();
        assert_eq!(db.get("a").unwrap().password, "2");
        assert_eq!(db.warnings().len(), 1);
    }

    #[test]
    fn load_and_its_errors() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("users");
        std::fs::write(&p, "vera:{PLAIN}x:10\n").unwrap();
        assert_eq!(
            PassDb::load(&p).unwrap().get("vera").unwrap().password,
            "{PLAIN}x"
        );
        std::fs::write(&p, b"vera:\xff\n").unwrap();
        assert!(PassDb::load(&p).unwrap_err().reason.contains("UTF-8"));
        std::fs::remove_file(&p).unwrap();
        assert!(PassDb::load(&p).unwrap_err().reason.contains("cannot read"));
    }
}
