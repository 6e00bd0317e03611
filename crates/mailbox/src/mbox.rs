//! mbox append (the `From `-separated format of /var/mail), as `local` has
//! always written it.
//!
//! [`append`]: optionally the `PATH.lock` dotlock ([`dotlock`]: O_EXCL, a
//! lock older than five minutes is stale and removed, no write access to
//! the directory = the kernel lock alone, as Postfix does), then an
//! exclusive flock(2) on the file, a `From SENDER  DATE` line (asctime, UTC;
//! `MAILER-DAEMON` for the null sender), the message with mboxrd quoting
//! (every line matching `^>*From ` gets one more `>`), a newline if the
//! message did not end in one, a blank line, fsync. On any error after the
//! lock the file is truncated back to its old size, so no half message stays
//! behind. Busy locks are retried [`LOCK_ATTEMPTS`] times, [`LOCK_DELAY`]
//! apart.
//!
//! [`create_owned`]: creating a missing spool mailbox for its owner (done by
//! root before a delivery process that runs as the owner appends to it).

use std::fs::OpenOptions;
use std::io::{self, BufWriter, Read, Write};
use std::os::unix::fs::{MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use crate::{Error, Op, Result, strip_controls};

/// A dotlock older than this is taken to be left over by a crashed program.
pub const STALE_DOTLOCK: Duration = Duration::from_secs(300);
/// How many times a busy lock (dotlock or kernel lock) is tried.
pub const LOCK_ATTEMPTS: u32 = 20;
/// The pause between two tries of a busy lock.
pub const LOCK_DELAY: Duration = Duration::from_millis(500);

/// "Www Mmm dd hh:mm:ss yyyy" (asctime layout, UTC) for the From line.
pub use postern_mailtime::asctime_utc as asctime;

/// The `From ` separator line (without its newline) for a message from
/// `sender` (empty = the null sender) received at `now`.
pub fn from_line(sender: &str, now: SystemTime) -> String {
    let sender_word = if sender.is_empty() {
        "MAILER-DAEMON".to_string()
    } else {
        strip_controls(sender).replace(' ', "_")
    };
    format!("From {}  {}", sender_word, asctime(now))
}

/// A writer that applies mboxrd "From " quoting: every line matching
/// `^>*From ` gets one more '>' in front. Tracks whether output ended in LF.
pub struct FromQuoter<W: Write> {
    inner: W,
    /// Bytes at the start of the current line that may still become ">*From ".
    pending: Vec<u8>,
    at_line_start: bool,
    ends_with_newline: bool,
}

impl<W: Write> FromQuoter<W> {
    /// Quotes what is written into `inner`, starting at the start of a line.
    pub fn new(inner: W) -> FromQuoter<W> {
        FromQuoter {
            inner,
            pending: Vec::new(),
            at_line_start: true,
            ends_with_newline: true,
        }
    }

    /// Writes out what is still pending and returns the inner writer and
    /// whether the output ended with a newline (true for no output).
    pub fn finish(mut self) -> io::Result<(W, bool)> {
        if !self.pending.is_empty() {
            self.inner.write_all(&self.pending)?;
            self.ends_with_newline = false;
        }
        Ok((self.inner, self.ends_with_newline))
    }
}

impl<W: Write> Write for FromQuoter<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        const FROM: &[u8] = b"From ";
        let mut i = 0;
        while i < buf.len() {
            if !self.at_line_start {
                // Copy up to and including the next LF in one go.
                match buf[i..].iter().position(|&b| b == b'\n') {
                    Some(p) => {
                        self.inner.write_all(&buf[i..=i + p])?;
                        i += p + 1;
                        self.at_line_start = true;
                        self.ends_with_newline = true;
                    }
                    None => {
                        self.inner.write_all(&buf[i..])?;
                        self.ends_with_newline = false;
                        i = buf.len();
                    }
                }
                continue;
            }
            let b = buf[i];
            i += 1;
            let gts = self.pending.iter().take_while(|&&c| c == b'>').count();
            let k = self.pending.len() - gts;
            if b == b'>' && k == 0 {
                self.pending.push(b);
            } else if FROM.get(k) == Some(&b) {
                self.pending.push(b);
                if k + 1 == FROM.len() {
                    self.inner.write_all(b">")?;
                    self.inner.write_all(&self.pending)?;
                    self.pending.clear();
                    self.at_line_start = false;
                    self.ends_with_newline = false;
                }
            } else {
                self.inner.write_all(&self.pending)?;
                self.pending.clear();
                self.inner.write_all(&[b])?;
                self.at_line_start = b == b'\n';
                self.ends_with_newline = b == b'\n';
            }
        }
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

/// Held while a `PATH.lock` dotlock exists; removes it on drop. An empty
/// guard ([`DotLock::held`] false) means the directory was not writable and
/// the kernel lock alone protects the mailbox.
#[derive(Debug)]
pub struct DotLock {
    path: Option<PathBuf>,
}

impl DotLock {
    /// Whether a lock file was created (and will be removed on drop).
    pub fn held(&self) -> bool {
        self.path.is_some()
    }
}

impl Drop for DotLock {
    fn drop(&mut self) {
        if let Some(p) = self.path.take() {
            let _ = std::fs::remove_file(p);
        }
    }
}

/// The dotlock path of a mailbox: `MBOX.lock`.
pub fn lock_path(mbox: &Path) -> PathBuf {
    let mut name = mbox.as_os_str().to_owned();
    name.push(".lock");
    PathBuf::from(name)
}

/// Takes the `MBOX.lock` dotlock (created O_EXCL, 0600; a stale one older
/// than [`STALE_DOTLOCK`] is removed; no write access to the directory =
/// rely on the kernel lock alone, as Postfix does).
pub fn dotlock(mbox: &Path) -> Result<DotLock> {
    let lock = lock_path(mbox);
    for _ in 0..LOCK_ATTEMPTS {
        match OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&lock)
        {
            Ok(_) => return Ok(DotLock { path: Some(lock) }),
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
                let stale = std::fs::symlink_metadata(&lock)
                    .ok()
                    .and_then(|m| m.modified().ok())
                    .and_then(|m| m.elapsed().ok())
                    .is_some_and(|age| age > STALE_DOTLOCK);
                if stale {
                    tracing::warn!("removing stale lock file {}", lock.display());
                    let _ = std::fs::remove_file(&lock);
                    continue;
                }
                std::thread::sleep(LOCK_DELAY);
            }
            Err(e)
                if matches!(
                    e.raw_os_error(),
                    Some(libc::EACCES) | Some(libc::EPERM) | Some(libc::EROFS)
                ) =>
            {
                // No write access to the spool directory: rely on the kernel lock alone.
                tracing::debug!(
                    "cannot create {}: {e}; using the file lock only",
                    lock.display()
                );
                return Ok(DotLock { path: None });
            }
            Err(e) => return Err(Error::io(Op::CreateLock, &lock, e)),
        }
    }
    Err(Error::Locked {
        path: mbox.to_path_buf(),
        lock_file: Some(lock),
    })
}

/// Appends one message in mbox format to `path` (created 0600 if missing):
/// the From line, `message` quoted, a blank line (see the module
/// documentation). `use_dotlock` adds the `PATH.lock` convention used for
/// /var/mail.
pub fn append(
    path: &Path,
    use_dotlock: bool,
    sender: &str,
    now: SystemTime,
    message: impl Read,
) -> Result<()> {
    let _dot = if use_dotlock {
        Some(dotlock(path)?)
    } else {
        None
    };
    let file = OpenOptions::new()
        .append(true)
        .create(true)
        .mode(0o600)
        .custom_flags(libc::O_NOFOLLOW)
        .open(path)
        .map_err(|e| match e.raw_os_error() {
            Some(libc::ELOOP) => Error::Symlink {
                path: path.to_path_buf(),
            },
            _ => Error::io(Op::Open, path, e),
        })?;
    let meta = file.metadata().map_err(|e| Error::io(Op::Stat, path, e))?;
    if !meta.is_file() || meta.nlink() != 1 {
        return Err(Error::NotRegularFile {
            path: path.to_path_buf(),
        });
    }
    let mut locked = false;
    for _ in 0..LOCK_ATTEMPTS {
        if fs2::FileExt::try_lock_exclusive(&file).is_ok() {
            locked = true;
            break;
        }
        std::thread::sleep(LOCK_DELAY);
    }
    if !locked {
        return Err(Error::Locked {
            path: path.to_path_buf(),
            lock_file: None,
        });
    }
    // Size after locking: another writer may have appended meanwhile.
    let old_len = file
        .metadata()
        .map(|m| m.len())
        .map_err(|e| Error::io(Op::Stat, path, e))?;
    let result = (|| -> io::Result<()> {
        let mut w = BufWriter::new(&file);
        writeln!(w, "{}", from_line(sender, now))?;
        let mut q = FromQuoter::new(w);
        let mut message = message;
        io::copy(&mut message, &mut q)?;
        let (mut w, ends_nl) = q.finish()?;
        if !ends_nl {
            w.write_all(b"\n")?;
        }
        w.write_all(b"\n")?;
        w.flush()?;
        drop(w);
        file.sync_all()
    })();
    let outcome = result.map_err(|e| {
        if let Err(t) = file.set_len(old_len).and_then(|_| file.sync_all()) {
            tracing::warn!(
                "cannot truncate {} back to {} bytes: {t}",
                path.display(),
                old_len
            );
        }
        Error::io(Op::Write, path, e)
    });
    let _ = fs2::FileExt::unlock(&file);
    outcome
}

/// Creates the mailbox `path` for its owner if it does not exist: never
/// following a symlink and never opening an existing file
/// (O_CREAT|O_EXCL|O_NOFOLLOW), mode 0600, then fchown to `uid` and group
/// `gid` and fchmod 0600 (Postfix's /var/mail/USER: the user, group mail).
/// An existing path is left alone (Ok). If the file cannot be given away it
/// is removed again ([`Op::Chown`]), so no mailbox its owner cannot write
/// stays behind. Needs root (or `uid` being the caller).
pub fn create_owned(path: &Path, uid: u32, gid: u32) -> Result<()> {
    let f = match OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .custom_flags(libc::O_NOFOLLOW)
        .open(path)
    {
        Ok(f) => f,
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => return Ok(()),
        Err(e) => return Err(Error::io(Op::Create, path, e)),
    };
    let owned = std::os::unix::fs::fchown(&f, Some(uid), Some(gid))
        .and_then(|_| f.set_permissions(std::fs::Permissions::from_mode(0o600)));
    if let Err(e) = owned {
        let _ = std::fs::remove_file(path);
        return Err(Error::io(Op::Chown, path, e));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs::File;
    use std::time::UNIX_EPOCH;

    struct Failing<'a>(&'a [u8]);
    impl Read for Failing<'_> {
        fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
            if self.0.is_empty() {
                return Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    "queue file shorter than its content length",
                ));
            }
            let n = buf.len().min(self.0.len());
            buf[..n].copy_from_slice(&self.0[..n]);
            self.0 = &self.0[n..];
            Ok(n)
        }
    }

    #[test]
    fn asctime_layout() {
        assert_eq!(asctime(UNIX_EPOCH), "Thu Jan  1 00:00:00 1970");
        assert_eq!(
            from_line("a b\r\n@x", UNIX_EPOCH),
            "From a_b@x  Thu Jan  1 00:00:00 1970"
        );
        assert_eq!(
            from_line("", UNIX_EPOCH),
            "From MAILER-DAEMON  Thu Jan  1 00:00:00 1970"
        );
    }

    #[test]
    fn from_quoting_mboxrd() {
        let mut out = Vec::new();
        let mut q = FromQuoter::new(&mut out);
        // Split writes at awkward places to exercise the pending state.
        for chunk in [
            &b"From a\n>Fr"[..],
            b"om b\n>>From c\nFrom\nFromage\n From d\nx From e\nFro",
            b"m ",
        ] {
            q.write_all(chunk).unwrap();
        }
        let (_, nl) = q.finish().unwrap();
        assert!(!nl);
        assert_eq!(
            String::from_utf8(out).unwrap(),
            ">From a\n>>From b\n>>>From c\nFrom\nFromage\n From d\nx From e\n>From "
        );
    }

    #[test]
    fn append_quotes_and_separates() {
        let d = tempfile::tempdir().unwrap();
        let mbox = d.path().join("joe");
        let body = b"Subject: a\n\nFrom here\nno newline at end";
        let t = UNIX_EPOCH + Duration::from_secs(86_400 * 365);
        append(
            &mbox,
            true,
            "",
            t,
            (&b"Delivered-To: joe@x\n"[..]).chain(&body[..]),
        )
        .unwrap();
        append(&mbox, true, "s@x", t, &body[..]).unwrap();
        let text = std::fs::read_to_string(&mbox).unwrap();
        assert_eq!(
            text,
            "From MAILER-DAEMON  Fri Jan  1 00:00:00 1971\nDelivered-To: joe@x\nSubject: a\n\n>From here\nno newline at end\n\n\
From s@x  Fri Jan  1 00:00:00 1971\nSubject: a\n\n>From here\nno newline at end\n\n"
        );
        assert!(!lock_path(&mbox).exists());
        assert_eq!(std::fs::metadata(&mbox).unwrap().mode() & 0o777, 0o600);
    }

    #[test]
    fn refuses_symlinks_and_hard_links() {
        let d = tempfile::tempdir().unwrap();
        let target = d.path().join("target");
        std::fs::write(&target, "").unwrap();
        let link = d.path().join("link");
        std::os::unix::fs::symlink(&target, &link).unwrap();
        let e = append(&link, false, "s", UNIX_EPOCH, &b"x\n"[..]).unwrap_err();
        assert!(
            matches!(&e, Error::Symlink { path } if path == &link),
            "{e:?}"
        );
        assert!(e.is_refused());
        let hard = d.path().join("hard");
        std::fs::hard_link(&target, &hard).unwrap();
        let e = append(&hard, false, "s", UNIX_EPOCH, &b"x\n"[..]).unwrap_err();
        assert!(
            matches!(&e, Error::NotRegularFile { path } if path == &hard),
            "{e:?}"
        );
        assert_eq!(std::fs::read(&target).unwrap(), b"");
    }

    #[test]
    fn a_failed_write_truncates_back_and_names_the_file() {
        let d = tempfile::tempdir().unwrap();
        let mbox = d.path().join("mbox");
        std::fs::write(&mbox, "old\n").unwrap();
        let e = append(&mbox, false, "s", UNIX_EPOCH, Failing(b"x\n")).unwrap_err();
        assert!(matches!(&e, Error::Io { op: Op::Write, .. }), "{e:?}");
        assert_eq!(e.path(), mbox);
        assert!(!e.is_full() && !e.is_refused());
        assert_eq!(std::fs::read_to_string(&mbox).unwrap(), "old\n");
    }

    #[test]
    fn stale_dotlock_is_removed() {
        let d = tempfile::tempdir().unwrap();
        let mbox = d.path().join("joe");
        let lock = d.path().join("joe.lock");
        std::fs::write(&lock, "").unwrap();
        let old = SystemTime::now() - Duration::from_secs(600);
        File::options()
            .write(true)
            .open(&lock)
            .unwrap()
            .set_modified(old)
            .unwrap();
        append(&mbox, true, "s", UNIX_EPOCH, &b"x\n"[..]).unwrap();
        assert!(!lock.exists());
    }

    #[test]
    fn dotlock_is_exclusive_and_released_on_drop() {
        let d = tempfile::tempdir().unwrap();
        let mbox = d.path().join("joe");
        let guard = dotlock(&mbox).unwrap();
        assert!(guard.held() && lock_path(&mbox).exists());
        // A second taker waits for it: release it from another thread.
        let t = std::thread::spawn(move || {
            std::thread::sleep(LOCK_DELAY / 2);
            drop(guard);
        });
        let second = dotlock(&mbox).unwrap();
        t.join().unwrap();
        assert!(second.held());
        drop(second);
        assert!(!lock_path(&mbox).exists());
    }

    #[test]
    fn the_kernel_lock_excludes_a_second_writer_until_released() {
        let d = tempfile::tempdir().unwrap();
        let mbox = d.path().join("joe");
        std::fs::write(&mbox, "").unwrap();
        let holder = File::open(&mbox).unwrap();
        fs2::FileExt::lock_exclusive(&holder).unwrap();
        let t = std::thread::spawn(move || {
            std::thread::sleep(LOCK_DELAY + LOCK_DELAY / 2);
            fs2::FileExt::unlock(&holder).unwrap();
        });
        let started = std::time::Instant::now();
        append(&mbox, false, "s", UNIX_EPOCH, &b"x\n"[..]).unwrap();
        assert!(
            started.elapsed() >= LOCK_DELAY,
            "appended under a held lock"
        );
        t.join().unwrap();
        assert!(std::fs::read_to_string(&mbox).unwrap().ends_with("x\n\n"));
    }

    #[test]
    fn create_owned_makes_a_private_file_and_never_touches_an_existing_one() {
        let d = tempfile::tempdir().unwrap();
        let me = std::fs::metadata(d.path()).unwrap();
        let p = d.path().join("joe");
        create_owned(&p, me.uid(), me.gid()).unwrap();
        let m = std::fs::symlink_metadata(&p).unwrap();
        assert!(m.is_file());
        assert_eq!(
            (m.uid(), m.gid(), m.mode() & 0o777),
            (me.uid(), me.gid(), 0o600)
        );
        // Existing file or symlink: left alone.
        std::fs::write(&p, "mail\n").unwrap();
        create_owned(&p, me.uid(), me.gid()).unwrap();
        assert_eq!(std::fs::read_to_string(&p).unwrap(), "mail\n");
        let link = d.path().join("link");
        std::os::unix::fs::symlink(d.path().join("nowhere"), &link).unwrap();
        create_owned(&link, me.uid(), me.gid()).unwrap();
        assert!(!d.path().join("nowhere").exists());
        // A directory that does not exist: the error names the file.
        let e = create_owned(&d.path().join("no/joe"), me.uid(), me.gid()).unwrap_err();
        assert!(matches!(&e, Error::Io { op: Op::Create, .. }), "{e:?}");
        assert_eq!(e.path(), d.path().join("no/joe"));
    }
}
