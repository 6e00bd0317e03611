//! The users file without its passwords: who the mail-only (virtual) users
//! are and where their mail goes.
//!
//! Format (a Dovecot-style passwd-file), one user a line:
//! `user:password:uid:gid:gecos:home:shell:extra`. Only the user name is
//! required; empty uid/gid/home mean "not set". Blank lines and '#' comments
//! are skipped.
//!
//! SECURITY: the password field is a hash that only the auth service keeps
//! (docs/auth.md). [`MailUsers`], what local reads, never copies it:
//! [`user_lines`] hands it out only as a slice of the caller's text, and
//! [`MailUsers::load`] overwrites the file's bytes with zeros once it has
//! parsed them. The hash-keeping reader is postern-passdb's, built on
//! [`user_lines`] so that both read the same grammar.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use crate::error::MapError;

/// One mail user from the users file, without the password.
///
/// Local uses it to find the Maildir; uid/gid say whom to run as when
/// writing the mailbox.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MailUser {
    /// Lower-cased login / local part.
    pub name: String,
    /// System uid that owns the mailbox, if given.
    pub uid: Option<u32>,
    /// System gid that owns the mailbox, if given.
    pub gid: Option<u32>,
    /// Home directory, if given (else virtual_mailbox_base/NAME is used).
    pub home: Option<PathBuf>,
}

/// One parsed user line: the user, and the password field as a slice of the
/// text that was parsed (never copied here).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UserLine<'a> {
    /// 1-based line number.
    pub line: usize,
    /// The user's fields other than the password.
    pub user: MailUser,
    /// The password field as stored ("{SCHEME}..."; may be empty).
    pub password: &'a str,
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

fn parse_line<'a>(line: &'a str, lineno: usize, path: &Path) -> Result<UserLine<'a>, MapError> {
    let fields: Vec<&str> = line.splitn(8, ':').collect();
    let err = |r: String| MapError::new(path, lineno, r);
    let name = fields[0].trim().to_lowercase();
    valid_name(&name).map_err(err)?;
    let field = |i: usize| fields.get(i).map(|s| s.trim()).unwrap_or("");
    Ok(UserLine {
        line: lineno,
        password: field(1),
        user: MailUser {
            name,
            uid: parse_id(field(2), "uid").map_err(err)?,
            gid: parse_id(field(3), "gid").map_err(err)?,
            home: match field(5) {
                "" => None,
                h if h.starts_with('/') => Some(PathBuf::from(h)),
                h => return Err(err(format!("home \"{h}\" is not an absolute path"))),
            },
        },
    })
}

/// The user lines of users-file `text`, in file order (comments and blank
/// lines skipped); `path` is only used in errors. The one grammar of the
/// users file, for [`MailUsers`] here and the password database.
pub fn user_lines<'a>(
    text: &'a str,
    path: &'a Path,
) -> impl Iterator<Item = Result<UserLine<'a>, MapError>> + 'a {
    text.lines().enumerate().filter_map(move |(idx, raw)| {
        let line = raw.strip_suffix('\r').unwrap_or(raw);
        let t = line.trim();
        if t.is_empty() || t.starts_with('#') {
            return None;
        }
        Some(parse_line(line, idx + 1, path))
    })
}

/// The warning for a user named twice (the last line wins).
pub fn duplicate_user_warning(path: &Path, line: usize, name: &str) -> String {
    format!(
        "{}:{}: duplicate user \"{}\": the last one wins",
        path.display(),
        line,
        name
    )
}

/// Overwrites `buf` with zeros, in a way the optimiser keeps.
pub(crate) fn wipe(buf: &mut [u8]) {
    buf.fill(0);
    std::hint::black_box(&buf);
}

/// Users of a users file by name, in file order, the last line for a name
/// winning (with a warning): the one collection behind [`MailUsers`] (no
/// hashes, for local) and postern-passdb's `PassDb` (with them, for auth).
#[derive(Clone, Debug)]
pub struct UserTable<T> {
    users: Vec<T>,
    index: HashMap<String, usize>,
    warnings: Vec<String>,
}

impl<T> Default for UserTable<T> {
    fn default() -> Self {
        UserTable {
            users: Vec::new(),
            index: HashMap::new(),
            warnings: Vec::new(),
        }
    }
}

impl<T> UserTable<T> {
    /// Parses users-file text, keeping of each line what `keep` makes of
    /// it; `path` is only used in errors and warnings.
    pub fn parse_with(
        text: &str,
        path: &Path,
        mut keep: impl FnMut(UserLine<'_>) -> T,
    ) -> Result<UserTable<T>, MapError> {
        let mut out = UserTable::default();
        for line in user_lines(text, path) {
            let line = line?;
            let (lineno, name) = (line.line, line.user.name.clone());
            let item = keep(line);
            match out.index.get(&name) {
                Some(&i) => {
                    out.warnings
                        .push(duplicate_user_warning(path, lineno, &name));
                    out.users[i] = item;
                }
                None => {
                    out.index.insert(name, out.users.len());
                    out.users.push(item);
                }
            }
        }
        Ok(out)
    }

    /// The user called `name` (compared lower-cased, no extension stripping).
    pub fn get(&self, name: &str) -> Option<&T> {
        self.index
            .get(&name.to_lowercase())
            .and_then(|&i| self.users.get(i))
    }

    /// All users in file order.
    pub fn iter(&self) -> impl Iterator<Item = &T> {
        self.users.iter()
    }

    /// Non-fatal problems (duplicate users) found while parsing.
    pub fn warnings(&self) -> &[String] {
        &self.warnings
    }
}

/// Reads a users file and hands its text to `parse`, then overwrites the
/// bytes read (the password hashes with the rest) with zeros.
pub fn with_users_file<R>(
    path: &Path,
    parse: impl FnOnce(&str) -> Result<R, MapError>,
) -> Result<R, MapError> {
    let mut bytes =
        std::fs::read(path).map_err(|e| MapError::new(path, 0, format!("cannot read: {e}")))?;
    let parsed = match std::str::from_utf8(&bytes) {
        Ok(text) => parse(text),
        Err(e) => Err(MapError::new(
            path,
            0,
            format!("not valid UTF-8 (byte offset {})", e.valid_up_to()),
        )),
    };
    wipe(&mut bytes);
    parsed
}

/// The users file's users without their passwords: what local needs (uid,
/// gid, home).
pub type MailUsers = UserTable<MailUser>;

impl UserTable<MailUser> {
    /// Parses users-file text; `path` is only used in errors.
    pub fn parse(text: &str, path: &Path) -> Result<MailUsers, MapError> {
        UserTable::parse_with(text, path, |line| line.user)
    }

    /// Reads and parses a users file, then overwrites what was read (the
    /// password hashes with the rest) with zeros.
    pub fn load(path: &Path) -> Result<MailUsers, MapError> {
        with_users_file(path, |text| MailUsers::parse(text, path))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const P: &str = "/etc/postern/users";

    #[test]
    fn parses_fields() {
        let t = "# users\n\nJoe:{ARGON2ID}$argon2id$v=19$m=65536,t=3,p=1$c2FsdA$aGFzaA:1001:1001::/home/joe::extra=1\nann:{PLAIN}x\nbob:\n";
        let u = MailUsers::parse(t, Path::new(P)).unwrap();
        let joe = u.get("JOE").unwrap();
        assert_eq!(joe.name, "joe");
        assert_eq!((joe.uid, joe.gid), (Some(1001), Some(1001)));
        assert_eq!(joe.home.as_deref(), Some(Path::new("/home/joe")));
        let ann = u.get("ann").unwrap();
        assert_eq!((ann.uid, ann.gid, ann.home.as_ref()), (None, None, None));
        assert!(u.get("nobody").is_none());
        assert_eq!(
            u.iter().map(|u| u.name.as_str()).collect::<Vec<_>>(),
            ["joe", "ann", "bob"]
        );
        // The password field is only ever a slice of the text.
        let lines: Vec<_> = user_lines(t, Path::new(P))
            .collect::<Result<_, _>>()
            .unwrap();
        assert!(lines[0].password.starts_with("{ARGON2ID}$argon2id$"));
        assert_eq!(lines[0].line, 3);
        assert_eq!(lines[1].password, "{PLAIN}x");
        assert_eq!(lines[2].password, "");
        assert!(!format!("{u:?}").contains("PLAIN"), "no hash kept");
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
            let e = MailUsers::parse(t, Path::new(P)).unwrap_err();
            assert_eq!(e.line, line, "{t:?}: {e}");
            assert!(e.reason.contains(why), "{t:?}: {e}");
        }
    }

    #[test]
    fn duplicate_warns_and_the_last_wins() {
        let u = MailUsers::parse("a:1:5\na:2:6\n", Path::new(P)).unwrap();
        assert_eq!(u.get("a").unwrap().uid, Some(6));
        assert_eq!(u.iter().count(), 1);
        assert_eq!(u.warnings().len(), 1);
    }

    #[test]
    fn load_reads_and_reports_the_file() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("users");
        std::fs::write(&p, "vera:{PLAIN}x:10:20::/home/vera\n").unwrap();
        let u = MailUsers::load(&p).unwrap();
        assert_eq!(u.get("vera").unwrap().gid, Some(20));
        std::fs::write(&p, b"vera:\xff\n").unwrap();
        let e = MailUsers::load(&p).unwrap_err();
        assert!(e.reason.contains("UTF-8"), "{e}");
        std::fs::remove_file(&p).unwrap();
        assert!(MailUsers::load(&p).is_err());
    }
}
