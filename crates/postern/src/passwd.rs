//! `postern [-c DIR] passwd USER`: sets a users_file user's password.
//!
//! The password is read from standard input when it is not a terminal (one
//! line, for scripts), otherwise prompted for twice without echo. The new
//! hash is argon2id ([`postern_passdb::hash_password`]). The user's line keeps
//! its other fields (uid, gid, home, ...); a new user is appended as
//! `user:{ARGON2ID}...::::::`. Every other line, comments included, is kept
//! as it was.
//!
//! SECURITY: the file is replaced atomically (a temporary file in the same
//! directory, fsync, rename, directory fsync) with the old file's owner and
//! mode, so the auth service never sees half a file and the permissions of
//! docs/security.md survive. A new file is created 0600 (and, when root
//! runs this and the user exists, owned by postern-auth:root as
//! `postern install` would make it). Names with ':', white space or
//! control characters are refused: they would change the file's structure.
//! The password is never echoed, logged or written anywhere but as a hash.

use std::fs;
use std::io::{BufRead, IsTerminal, Write};
use std::os::unix::fs::{MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use postern_config::MainCf;

/// Checks a user name for the users file.
pub fn valid_user(name: &str) -> Result<(), String> {
    if name.is_empty() {
        return Err("postern: passwd: empty user name".into());
    }
    if name.starts_with('#') {
        return Err("postern: passwd: a user name cannot start with '#'".into());
    }
    if let Some(c) = name
        .chars()
        .find(|c| *c == ':' || c.is_whitespace() || c.is_control())
    {
        return Err(format!(
            "postern: passwd: bad character {:?} in user name \"{}\"",
            c,
            name.escape_debug()
        ));
    }
    Ok(())
}

/// The first field of a users file line, lower-cased, if it is a user line.
fn line_user(line: &str) -> Option<String> {
    let t = line.trim();
    if t.is_empty() || t.starts_with('#') {
        return None;
    }
    Some(line.split(':').next().unwrap_or("").trim().to_lowercase())
}

/// Returns the users file text with `user`'s password set to `hash`: the
/// user's lines get the new hash in field 2 (other fields kept), or a new
/// line is appended. Other lines are kept byte for byte.
pub fn set_password(text: &str, user: &str, hash: &str) -> String {
    let user = user.to_lowercase();
    let mut out = String::with_capacity(text.len() + hash.len() + user.len() + 16);
    let mut found = false;
    for raw in text.split_inclusive('\n') {
        let (line, end) = match raw.strip_suffix("\r\n") {
            Some(l) => (l, "\r\n"),
            None => match raw.strip_suffix('\n') {
                Some(l) => (l, "\n"),
                None => (raw, ""),
            },
        };
        if line_user(line).as_deref() == Some(user.as_str()) {
            found = true;
            let mut fields: Vec<&str> = line.splitn(3, ':').collect();
            match fields.len() {
                1 => {
                    out.push_str(fields[0]);
                    out.push(':');
                    out.push_str(hash);
                }
                _ => {
                    fields[1] = hash;
                    out.push_str(&fields.join(":"));
                }
            }
            out.push_str(if end.is_empty() { "\n" } else { end });
        } else {
            out.push_str(line);
            out.push_str(end);
        }
    }
    if !found {
        if !out.is_empty() && !out.ends_with('\n') {
            out.push('\n');
        }
        out.push_str(&format!("{user}:{hash}::::::\n"));
    }
    out
}

/// Reads the new password: one line from stdin, or twice from the terminal.
fn read_password() -> Result<String, String> {
    let stdin = std::io::stdin();
    if !stdin.is_terminal() {
        let mut line = String::new();
        stdin
            .lock()
            .read_line(&mut line)
            .map_err(|e| format!("postern: passwd: cannot read the password: {e}"))?;
        let pw = line
            .strip_suffix('\n')
            .map(|l| l.strip_suffix('\r').unwrap_or(l))
            .unwrap_or(&line)
            .to_string();
        return Ok(pw);
    }
    let first = prompt("New password: ")?;
    let second = prompt("Retype new password: ")?;
    if first != second {
        return Err("postern: passwd: the passwords do not match".into());
    }
    Ok(first)
}

/// Prompts on stderr and reads one line from the terminal with echo off.
fn prompt(text: &str) -> Result<String, String> {
    use nix::sys::termios::{LocalFlags, SetArg, tcgetattr, tcsetattr};
    let stdin = std::io::stdin();
    let err = |e: &dyn std::fmt::Display| format!("postern: passwd: terminal: {e}");
    let saved = tcgetattr(&stdin).map_err(|e| err(&e))?;
    let mut quiet = saved.clone();
    quiet.local_flags.remove(LocalFlags::ECHO);
    quiet.local_flags.insert(LocalFlags::ECHONL);
    eprint!("{text}");
    let _ = std::io::stderr().flush();
    tcsetattr(&stdin, SetArg::TCSAFLUSH, &quiet).map_err(|e| err(&e))?;
    let mut line = String::new();
    let read = stdin.lock().read_line(&mut line);
    // Restore echo whatever happened.
    let restored = tcsetattr(&stdin, SetArg::TCSAFLUSH, &saved);
    read.map_err(|e| err(&e))?;
    restored.map_err(|e| err(&e))?;
    Ok(line.trim_end_matches(['\n', '\r']).to_string())
}

/// Replaces `path` with `text` atomically, keeping its owner and mode, or
/// creating it 0600 (postern-auth:root when root and that user exists).
pub fn write_atomically(path: &Path, text: &str) -> Result<(), String> {
    let err = |what: &str, e: &dyn std::fmt::Display| format!("postern: passwd: {what}: {e}");
    let dir = path
        .parent()
        .filter(|d| !d.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let name = path
        .file_name()
        .ok_or_else(|| format!("postern: passwd: bad users_file {}", path.display()))?;
    let old = match fs::metadata(path) {
        Ok(m) => Some(m),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
        Err(e) => return Err(err(&path.display().to_string(), &e)),
    };
    let tmp: PathBuf = dir.join(format!(
        ".{}.postern-passwd.{}",
        name.to_string_lossy(),
        std::process::id()
    ));
    let result = (|| {
        let mut f = fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&tmp)
            .map_err(|e| err(&tmp.display().to_string(), &e))?;
        f.write_all(text.as_bytes())
            .map_err(|e| err(&tmp.display().to_string(), &e))?;
        let (uid, gid, mode) = match &old {
            Some(m) => (Some(m.uid()), Some(m.gid()), m.mode() & 0o7777),
            None if nix::unistd::geteuid().is_root() => {
                match nix::unistd::User::from_name("postern-auth") {
                    Ok(Some(u)) => (Some(u.uid.as_raw()), Some(0), 0o600),
                    _ => (None, None, 0o600),
                }
            }
            None => (None, None, 0o600),
        };
        if uid.is_some() && nix::unistd::geteuid().is_root() {
            std::os::unix::fs::fchown(&f, uid, gid).map_err(|e| err("chown", &e))?;
        }
        f.set_permissions(fs::Permissions::from_mode(mode))
            .map_err(|e| err("chmod", &e))?;
        f.sync_all().map_err(|e| err("fsync", &e))?;
        fs::rename(&tmp, path).map_err(|e| err(&path.display().to_string(), &e))?;
        if let Ok(d) = fs::File::open(dir) {
            let _ = d.sync_all();
        }
        Ok(())
    })();
    if result.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    result
}

/// `postern passwd USER`: the command.
pub fn command(config_dir: &Path, args: &[String]) -> Result<(), String> {
    let [user] = args else {
        return Err("postern: usage: postern [-c CONFIG_DIR] passwd USER".into());
    };
    valid_user(user)?;
    let main = MainCf::load(config_dir).map_err(|e| format!("postern: fatal: {e}"))?;
    let users_file = main.str("users_file");
    if users_file.is_empty() {
        return Err(format!(
            "postern: passwd: users_file is not set in {}",
            main.file().display()
        ));
    }
    let path = PathBuf::from(&users_file);
    let text = match fs::read_to_string(&path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => String::new(),
        Err(e) => return Err(format!("postern: passwd: {users_file}: {e}")),
    };
    let password = read_password()?;
    if password.is_empty() {
        return Err("postern: passwd: empty password refused".into());
    }
    let hash =
        postern_passdb::hash_password(&password).map_err(|e| format!("postern: passwd: {e}"))?;
    drop(password);
    let existed = line_exists(&text, user);
    write_atomically(&path, &set_password(&text, user, &hash))?;
    println!(
        "postern: {} password of {} in {}",
        if existed {
            "changed the"
        } else {
            "added user with a"
        },
        user.to_lowercase(),
        path.display()
    );
    Ok(())
}

fn line_exists(text: &str, user: &str) -> bool {
    let user = user.to_lowercase();
    text.lines()
        .any(|l| line_user(l).as_deref() == Some(user.as_str()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn user_names_are_checked() {
        assert!(valid_user("alice").is_ok());
        assert!(valid_user("a.b-c_d@example.org").is_ok());
        for bad in ["", "a:b", "a b", "a\tb", "a\nb", "a\u{7f}", "#x"] {
            assert!(valid_user(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn changes_only_the_password_field_and_keeps_the_rest() {
        let text = "# users\nalice:{PLAIN}old:1000:1000::/home/alice::\n\nbob:{PLAIN}b:::::\r\n";
        let out = set_password(text, "Alice", "{ARGON2ID}new");
        assert_eq!(
            out,
            "# users\nalice:{ARGON2ID}new:1000:1000::/home/alice::\n\nbob:{PLAIN}b:::::\r\n"
        );
        // A line with only a name gets a password field.
        assert_eq!(set_password("carol\n", "carol", "H"), "carol:H\n");
        assert_eq!(set_password("carol:x", "carol", "H"), "carol:H\n");
    }

    #[test]
    fn appends_new_users() {
        assert_eq!(set_password("", "dave", "H"), "dave:H::::::\n");
        assert_eq!(
            set_password("# c\nalice:x", "Dave", "H"),
            "# c\nalice:x\ndave:H::::::\n"
        );
        // A comment mentioning the name is not the user's line.
        assert_eq!(
            set_password("#dave:x\n", "dave", "H"),
            "#dave:x\ndave:H::::::\n"
        );
        let parsed = postern_passdb::PassDb::parse(
            &set_password("# c\n", "erin", "{PLAIN}x"),
            Path::new("users"),
        )
        .unwrap();
        assert_eq!(parsed.get("erin").unwrap().password, "{PLAIN}x");
    }

    #[test]
    fn atomic_write_keeps_mode_and_creates_0600() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("users");
        write_atomically(&p, "a:x::::::\n").unwrap();
        assert_eq!(fs::metadata(&p).unwrap().mode() & 0o777, 0o600);
        fs::set_permissions(&p, fs::Permissions::from_mode(0o640)).unwrap();
        write_atomically(&p, "a:y::::::\n").unwrap();
        assert_eq!(fs::metadata(&p).unwrap().mode() & 0o777, 0o640);
        assert_eq!(fs::read_to_string(&p).unwrap(), "a:y::::::\n");
        // No temporary file is left behind.
        assert_eq!(fs::read_dir(d.path()).unwrap().count(), 1);
    }
}
