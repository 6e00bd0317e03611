//! The users file: Dovecot-style passwd-file of mail-only (virtual) users.
//!
//! Format, one user a line: `user:password:uid:gid:gecos:home:shell:extra`.
//! Only the user name is required; empty uid/gid/home mean "not set". Blank
//! lines and '#' comments are skipped. Passwords are kept as the opaque
//! `{SCHEME}...` strings Dovecot uses; nothing here checks them.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use crate::error::{MapError, read_file};

/// One mail user from the users file.
///
/// Local uses it to find the Maildir; the access daemons (later) use the
/// password; uid/gid say whom to run as when writing the mailbox.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MailUser {
    /// Lower-cased login / local part.
    pub name: String,
    /// Password hash as stored, e.g. "{ARGON2ID}$argon2id$..."; may be empty.
    pub password: String,
    /// System uid that owns the mailbox, if given.
    pub uid: Option<u32>,
    /// System gid that owns the mailbox, if given.
    pub gid: Option<u32>,
    /// Home directory, if given (else virtual_mailbox_base/NAME is used).
    pub home: Option<PathBuf>,
}

/// The parsed users file, in file order, with lookup by name.
#[derive(Clone, Debug, Default)]
pub struct UsersFile {
    users: Vec<MailUser>,
    index: HashMap<String, usize>,
    warnings: Vec<String>,
}

fn parse_id(field: &str, what: &str) -> Result<Option<u32>, String> {
    if field.is_empty() {
        return Ok(None);
    }
    field
        .parse::<u32>()
        .map(Some)
        .map_err(|_| format!("{what} \"{field}\" is not a number"))
}

fn valid_name(name: &str) -> Result<(), String> {
    if name.is_empty() {
        return Err("empty user name".into());
    }
    if name
        .chars()
        .any(|c| c == ':' || c.is_whitespace() || c.is_control())
    {
        return Err(format!("bad user name \"{}\"", name.escape_debug()));
    }
    Ok(())
}

impl UsersFile {
    /// Parses the users file text; `path` is only used in errors.
    pub fn parse(text: &str, path: &Path) -> Result<UsersFile, MapError> {
        let mut out = UsersFile::default();
        for (idx, raw) in text.lines().enumerate() {
            let lineno = idx + 1;
            let line = raw.strip_suffix('\r').unwrap_or(raw);
            let t = line.trim();
            if t.is_empty() || t.starts_with('#') {
                continue;
            }
            let fields: Vec<&str> = line.splitn(8, ':').collect();
            let err = |r: String| MapError::new(path, lineno, r);
            let name = fields[0].trim().to_lowercase();
            valid_name(&name).map_err(err)?;
            let field = |i: usize| fields.get(i).map(|s| s.trim()).unwrap_or("");
            let user = MailUser {
                name: name.clone(),
                password: field(1).to_string(),
                uid: parse_id(field(2), "uid").map_err(err)?,
                gid: parse_id(field(3), "gid").map_err(err)?,
                home: match field(5) {
                    "" => None,
                    h if h.starts_with('/') => Some(PathBuf::from(h)),
                    h => return Err(err(format!("home \"{h}\" is not an absolute path"))),
                },
            };
            if out.index.contains_key(&name) {
                out.warnings.push(format!(
                    "{}:{}: duplicate user \"{}\": the last one wins",
                    path.display(),
                    lineno,
                    name
                ));
            }
            out.upsert(user);
        }
        Ok(out)
    }

    /// Reads and parses a users file.
    pub fn load(path: &Path) -> Result<UsersFile, MapError> {
        UsersFile::parse(&read_file(path)?, path)
    }

    /// The user called `name` (compared lower-cased, no extension stripping).
    pub fn get(&self, name: &str) -> Option<&MailUser> {
        self.index
            .get(&name.to_lowercase())
            .and_then(|&i| self.users.get(i))
    }

    /// All users in file order.
    pub fn iter(&self) -> impl Iterator<Item = &MailUser> {
        self.users.iter()
    }

    /// Non-fatal problems (duplicate users) found while parsing.
    pub fn warnings(&self) -> &[String] {
        &self.warnings
    }

    /// Serializes back (for `postern passwd` later): one line per user,
    /// `name:password:uid:gid::home` with trailing empty fields dropped.
    /// Comments of the original file are not kept.
    pub fn to_text(&self) -> String {
        let mut out = String::new();
        for u in &self.users {
            let uid = u.uid.map(|v| v.to_string()).unwrap_or_default();
            let gid = u.gid.map(|v| v.to_string()).unwrap_or_default();
            let home = u
                .home
                .as_ref()
                .map(|h| h.display().to_string())
                .unwrap_or_default();
            let mut fields = vec![u.name.as_str(), u.password.as_str(), &uid, &gid, "", &home];
            while fields.len() > 1 && fields.last().is_some_and(|f| f.is_empty()) {
                fields.pop();
            }
            out.push_str(&fields.join(":"));
            out.push('\n');
        }
        out
    }

    /// Adds `user`, or replaces the user with the same (lower-cased) name in place.
    pub fn upsert(&mut self, mut user: MailUser) {
        user.name = user.name.to_lowercase();
        match self.index.get(&user.name) {
            Some(&i) => self.users[i] = user,
            None => {
                self.index.insert(user.name.clone(), self.users.len());
                self.users.push(user);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const P: &str = "/etc/postern/users";

    #[test]
    fn parses_fields() {
        let t = "# users\n\nJoe:{ARGON2ID}$argon2id$v=19$m=65536,t=3,p=1$c2FsdA$aGFzaA:1001:1001::/home/joe::extra=1\nann:{PLAIN}x\nbob:\n";
        let u = UsersFile::parse(t, Path::new(P)).unwrap();
        let joe = u.get("JOE").unwrap();
        assert_eq!(joe.name, "joe");
        assert!(joe.password.starts_with("{ARGON2ID}$argon2id$"));
        assert_eq!((joe.uid, joe.gid), (Some(1001), Some(1001)));
        assert_eq!(joe.home.as_deref(), Some(Path::new("/home/joe")));
        let ann = u.get("ann").unwrap();
        assert_eq!((ann.uid, ann.gid, ann.home.as_ref()), (None, None, None));
        assert_eq!(u.get("bob").unwrap().password, "");
        assert!(u.get("nobody").is_none());
        assert_eq!(
            u.iter().map(|u| u.name.as_str()).collect::<Vec<_>>(),
            ["joe", "ann", "bob"]
        );
    }

    #[test]
    fn errors_with_line() {
        for (t, line, why) in [
            ("a:x\nb:x:12z\n", 2, "uid"),
            ("a:x:1:g\n", 1, "gid"),
            (":x\n", 1, "empty user"),
            ("a b:x\n", 1, "bad user"),
            ("a:x:1:1::relative\n", 1, "absolute"),
        ] {
            let e = UsersFile::parse(t, Path::new(P)).unwrap_err();
            assert_eq!(e.line, line, "{t:?}: {e}");
            assert!(e.reason.contains(why), "{t:?}: {e}");
        }
    }

    #[test]
    fn round_trip_and_upsert() {
        let t = "joe:{PLAIN}a:1:2::/home/joe\nann:{PLAIN}b\n";
        let mut u = UsersFile::parse(t, Path::new(P)).unwrap();
        assert_eq!(u.to_text(), t);
        u.upsert(MailUser {
            name: "Ann".into(),
            password: "{PLAIN}c".into(),
            uid: None,
            gid: Some(5),
            home: None,
        });
        u.upsert(MailUser {
            name: "zed".into(),
            password: String::new(),
            uid: None,
            gid: None,
            home: None,
        });
        assert_eq!(
            u.to_text(),
            "joe:{PLAIN}a:1:2::/home/joe\nann:{PLAIN}c::5\nzed\n"
        );
        let again = UsersFile::parse(&u.to_text(), Path::new(P)).unwrap();
        assert_eq!(again.get("ann").unwrap().gid, Some(5));
        assert_eq!(again.iter().count(), 3);
    }

    #[test]
    fn duplicate_warns() {
        let u = UsersFile::parse("a:1\na:2\n", Path::new(P)).unwrap();
        assert_eq!(u.get("a").unwrap().password, "2");
        assert_eq!(u.warnings().len(), 1);
    }
}
