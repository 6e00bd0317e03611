//! Writing one message into a Maildir, an mbox file or any appended file.
//!
//! Maildir (maildir(5)): write tmp/UNIQUE with O_EXCL, fsync, rename to
//! new/UNIQUE,S=SIZE, fsync new/. mbox: dotlock (USER.lock, stale after 5
//! minutes) + flock, a "From " line, mboxrd quoting of body lines matching
//! `>*From `, a blank line at the end, fsync; on any write error the file is
//! truncated back to its old size so no half message stays behind.
//!
//! SECURITY: files are opened with O_NOFOLLOW and must be regular files with
//! one link, so a symlink or hard link planted in a mailbox directory cannot
//! redirect the write.

use std::fs::{File, OpenOptions};
use std::io::{self, BufWriter, Read, Write};
use std::os::unix::fs::{DirBuilderExt, FileExt, MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// A failed delivery attempt: temporary (defer) or permanent (bounce).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DeliveryError {
    /// True = try again later.
    pub temporary: bool,
    /// Enhanced status code, e.g. "4.2.0".
    pub dsn: String,
    /// Human-readable reason for logs and bounces.
    pub reason: String,
}

impl DeliveryError {
    /// A temporary failure.
    pub fn temp(dsn: &str, reason: impl Into<String>) -> DeliveryError {
        DeliveryError {
            temporary: true,
            dsn: dsn.into(),
            reason: reason.into(),
        }
    }
    /// A permanent failure.
    pub fn perm(dsn: &str, reason: impl Into<String>) -> DeliveryError {
        DeliveryError {
            temporary: false,
            dsn: dsn.into(),
            reason: reason.into(),
        }
    }
    /// Maps an I/O error: quota / file too big bounce (5.2.2, as Postfix), anything else defers (4.2.0).
    pub fn io(context: &str, e: &io::Error) -> DeliveryError {
        match e.raw_os_error() {
            Some(libc::EDQUOT) | Some(libc::EFBIG) => {
                DeliveryError::perm("5.2.2", format!("{context}: mailbox full: {e}"))
            }
            _ => DeliveryError::temp("4.2.0", format!("{context}: {e}")),
        }
    }
}

/// Reads a byte range of an open file with pread, so the shared file offset
/// of the queue file descriptor is never moved.
pub struct ContentReader<'a> {
    file: &'a File,
    pos: u64,
    end: u64,
}

impl<'a> ContentReader<'a> {
    /// A reader over `len` bytes of `file` starting at `offset`.
    pub fn new(file: &'a File, offset: u64, len: u64) -> ContentReader<'a> {
        ContentReader {
            file,
            pos: offset,
            end: offset.saturating_add(len),
        }
    }
}

impl Read for ContentReader<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let left = self.end.saturating_sub(self.pos);
        if left == 0 || buf.is_empty() {
            return Ok(0);
        }
        let want = buf.len().min(usize::try_from(left).unwrap_or(usize::MAX));
        let n = self.file.read_at(&mut buf[..want], self.pos)?;
        if n == 0 {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "queue file shorter than its content length",
            ));
        }
        self.pos += n as u64;
        Ok(n)
    }
}

/// Largest header section scanned for Delivered-To (loop detection).
const HEADER_SCAN_LIMIT: u64 = 1 << 20;

/// The (lower-cased, unbracketed) values of every Delivered-To header in the
/// message's header section, for mail-loop detection.
pub fn delivered_to_values(content: ContentReader<'_>) -> io::Result<Vec<String>> {
    let mut head = Vec::new();
    content.take(HEADER_SCAN_LIMIT).read_to_end(&mut head)?;
    let end = head
        .windows(2)
        .position(|w| w == b"\n\n")
        .map(|p| p + 1)
        .unwrap_or(head.len());
    let text = String::from_utf8_lossy(&head[..end]);
    let mut out = Vec::new();
    let mut current: Option<String> = None;
    let finish = |cur: Option<String>, out: &mut Vec<String>| {
        if let Some(h) = cur
            && let Some((name, value)) = h.split_once(':')
            && name.trim().eq_ignore_ascii_case("delivered-to")
        {
            let v = value.trim();
            let v = v
                .strip_prefix('<')
                .and_then(|x| x.strip_suffix('>'))
                .unwrap_or(v);
            out.push(v.trim().to_lowercase());
        }
    };
    for line in text.split('\n') {
        if line.starts_with(' ') || line.starts_with('\t') {
            if let Some(c) = current.as_mut() {
                c.push(' ');
                c.push_str(line.trim());
            }
        } else {
            finish(current.take(), &mut out);
            current = Some(line.to_string());
        }
    }
    finish(current, &mut out);
    Ok(out)
}

/// The header lines local prepends, in Postfix's order: Return-Path,
/// X-Original-To (when the original recipient is known), Delivered-To.
pub fn prepended_headers(sender: &str, original: Option<&str>, delivered_to: &str) -> String {
    let mut s = format!("Return-Path: <{}>\n", clean(sender));
    if let Some(o) = original.filter(|o| !o.is_empty()) {
        s.push_str(&format!("X-Original-To: {}\n", clean(o)));
    }
    s.push_str(&format!("Delivered-To: {}\n", clean(delivered_to)));
    s
}

/// Removes CR/LF and other controls so an address can never start a new header line.
fn clean(s: &str) -> String {
    s.chars().filter(|c| !c.is_control()).collect()
}

static COUNTER: AtomicU64 = AtomicU64::new(0);

/// A Maildir unique name: "SECS.M{micros}P{pid}Q{counter}.HOST", with '/'
/// and ':' in HOST written as \057 and \072 (maildir(5)).
pub fn maildir_unique(hostname: &str) -> String {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or(Duration::ZERO);
    let host = hostname.replace('/', "\\057").replace(':', "\\072");
    format!(
        "{}.M{}P{}Q{}.{}",
        now.as_secs(),
        now.subsec_micros(),
        std::process::id(),
        COUNTER.fetch_add(1, Ordering::Relaxed) + 1,
        host
    )
}

/// Delivers into the Maildir `dir` (created with cur/ new/ tmp/ at 0700 if
/// missing). Returns the final path in new/.
pub fn deliver_maildir(
    dir: &Path,
    hostname: &str,
    prefix: &[u8],
    content: ContentReader<'_>,
) -> Result<PathBuf, DeliveryError> {
    let mut b = std::fs::DirBuilder::new();
    b.recursive(true).mode(0o700);
    for sub in ["tmp", "new", "cur"] {
        let p = dir.join(sub);
        b.create(&p)
            .map_err(|e| DeliveryError::io(&format!("create maildir {}", p.display()), &e))?;
    }
    let unique = maildir_unique(hostname);
    let tmp = dir.join("tmp").join(&unique);
    let file = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .custom_flags(libc::O_NOFOLLOW)
        .open(&tmp)
        .map_err(|e| DeliveryError::io(&format!("create maildir file {}", tmp.display()), &e))?;
    let result = (|| -> io::Result<PathBuf> {
        let mut w = BufWriter::new(&file);
        w.write_all(prefix)?;
        let mut content = content;
        io::copy(&mut content, &mut w)?;
        w.flush()?;
        drop(w);
        file.sync_all()?;
        let size = file.metadata()?.len();
        let new = dir.join("new").join(format!("{unique},S={size}"));
        std::fs::rename(&tmp, &new)?;
        File::open(dir.join("new"))?.sync_all()?;
        Ok(new)
    })();
    result.map_err(|e| {
        let _ = std::fs::remove_file(&tmp);
        DeliveryError::io(&format!("write maildir {}", dir.display()), &e)
    })
}

/// "Www Mmm dd hh:mm:ss yyyy" (asctime layout, UTC) for the mbox From line.
pub use postern_mailtime::asctime_utc as asctime;

/// A writer that applies mboxrd "From " quoting: every line matching
/// `^>*From ` gets one more '>' in front. Tracks whether output ended in LF.
struct FromQuoter<W: Write> {
    inner: W,
    /// Bytes at the start of the current line that may still become ">*From ".
    pending: Vec<u8>,
    at_line_start: bool,
    ends_with_newline: bool,
}

impl<W: Write> FromQuoter<W> {
    fn new(inner: W) -> FromQuoter<W> {
        FromQuoter {
            inner,
            pending: Vec::new(),
            at_line_start: true,
            ends_with_newline: true,
        }
    }

    fn finish(mut self) -> io::Result<(W, bool)> {
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

/// Held while a USER.lock dotlock exists; removes it on drop. When local
/// delivers as the recipient, the parent (root) takes the dotlock in the
/// spool directory and the child appends with the file lock only.
pub struct DotLock {
    path: Option<PathBuf>,
}

impl Drop for DotLock {
    fn drop(&mut self) {
        if let Some(p) = self.path.take() {
            let _ = std::fs::remove_file(p);
        }
    }
}

/// A dotlock older than this is taken to be left over by a crashed program.
const STALE_DOTLOCK: Duration = Duration::from_secs(300);
/// How often and how long to retry a busy lock.
const LOCK_ATTEMPTS: u32 = 20;
const LOCK_DELAY: Duration = Duration::from_millis(500);

/// Takes the `MBOX.lock` dotlock (created O_EXCL; a stale one older than
/// five minutes is removed; no write access to the directory = rely on the
/// kernel lock alone, as Postfix does).
pub fn dotlock(mbox: &Path) -> Result<DotLock, DeliveryError> {
    let mut name = mbox.as_os_str().to_owned();
    name.push(".lock");
    let lock = PathBuf::from(name);
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
            Err(e) => {
                return Err(DeliveryError::io(
                    &format!("create lock file {}", lock.display()),
                    &e,
                ));
            }
        }
    }
    Err(DeliveryError::temp(
        "4.2.0",
        format!(
            "mailbox {} is locked (lock file {})",
            mbox.display(),
            lock.display()
        ),
    ))
}

/// Appends one message in mbox format to `path` (created 0600 if missing):
/// "From SENDER  DATE" line, `prefix` headers, quoted content, blank line.
/// `use_dotlock` adds the PATH.lock convention used for /var/mail.
pub fn append_mbox(
    path: &Path,
    use_dotlock: bool,
    sender: &str,
    now: SystemTime,
    prefix: &[u8],
    content: ContentReader<'_>,
) -> Result<(), DeliveryError> {
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
            Some(libc::ELOOP) => DeliveryError::perm(
                "5.2.0",
                format!("{}: is a symbolic link: refused", path.display()),
            ),
            _ => DeliveryError::io(&format!("open {}", path.display()), &e),
        })?;
    let meta = file
        .metadata()
        .map_err(|e| DeliveryError::io(&format!("stat {}", path.display()), &e))?;
    if !meta.is_file() || meta.nlink() != 1 {
        return Err(DeliveryError::perm(
            "5.2.0",
            format!(
                "{}: not a regular file with one link: refused",
                path.display()
            ),
        ));
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
        return Err(DeliveryError::temp(
            "4.2.0",
            format!("mailbox {} is locked", path.display()),
        ));
    }
    // Size after locking: another writer may have appended meanwhile.
    let old_len = file
        .metadata()
        .map(|m| m.len())
        .map_err(|e| DeliveryError::io(&format!("stat {}", path.display()), &e))?;
    let sender_word = if sender.is_empty() {
        "MAILER-DAEMON".to_string()
    } else {
        clean(sender).replace(' ', "_")
    };
    let result = (|| -> io::Result<()> {
        let mut w = BufWriter::new(&file);
        writeln!(w, "From {}  {}", sender_word, asctime(now))?;
        let mut q = FromQuoter::new(w);
        q.write_all(prefix)?;
        let mut content = content;
        io::copy(&mut content, &mut q)?;
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
        DeliveryError::io(&format!("write {}", path.display()), &e)
    });
    let _ = fs2::FileExt::unlock(&file);
    outcome
}

#[cfg(test)]
mod tests {
    use super::*;

    fn content(text: &[u8]) -> (tempfile::NamedTempFile, u64) {
        let mut f = tempfile::NamedTempFile::new().unwrap();
        f.write_all(b"QUEUE-ENVELOPE\n").unwrap();
        f.write_all(text).unwrap();
        (f, text.len() as u64)
    }

    #[test]
    fn content_reader_reads_exact_range() {
        let (f, len) = content(b"Subject: x\n\nbody\n");
        let mut s = String::new();
        ContentReader::new(f.as_file(), 15, len)
            .read_to_string(&mut s)
            .unwrap();
        assert_eq!(s, "Subject: x\n\nbody\n");
        let mut r = ContentReader::new(f.as_file(), 15, len + 10);
        let mut v = Vec::new();
        assert!(
            r.read_to_end(&mut v).is_err(),
            "short file must be an error, not silent truncation"
        );
    }

    #[test]
    fn finds_delivered_to_in_header_only() {
        let (f, len) =
            content(b"Delivered-To: <Joe@Example.org>\nX: y\nDelivered-To:\n ann@example.org\n\nDelivered-To: body@example.org\n");
        let v = delivered_to_values(ContentReader::new(f.as_file(), 15, len)).unwrap();
        assert_eq!(v, vec!["joe@example.org", "ann@example.org"]);
    }

    #[test]
    fn asctime_layout() {
        assert_eq!(asctime(UNIX_EPOCH), "Thu Jan  1 00:00:00 1970");
        assert_eq!(
            asctime(UNIX_EPOCH + Duration::from_secs(1_709_210_096)),
            "Thu Feb 29 12:34:56 2024"
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
    fn maildir_byte_exact_and_unique() {
        let d = tempfile::tempdir().unwrap();
        let body = b"Subject: hi\n\nline1\r\nFrom me\n\x00\xff binary\n";
        let (f, len) = content(body);
        let md = d.path().join("Maildir");
        let prefix = prepended_headers("s@x", Some("orig@x"), "joe@x");
        let p1 = deliver_maildir(
            &md,
            "h/o:st",
            prefix.as_bytes(),
            ContentReader::new(f.as_file(), 15, len),
        )
        .unwrap();
        let p2 = deliver_maildir(
            &md,
            "h/o:st",
            prefix.as_bytes(),
            ContentReader::new(f.as_file(), 15, len),
        )
        .unwrap();
        assert_ne!(p1, p2);
        let data = std::fs::read(&p1).unwrap();
        let mut expect =
            b"Return-Path: <s@x>\nX-Original-To: orig@x\nDelivered-To: joe@x\n".to_vec();
        expect.extend_from_slice(body);
        assert_eq!(data, expect);
        let name = p1.file_name().unwrap().to_str().unwrap().to_string();
        assert!(name.contains(".h\\057o\\072st,S="), "{name}");
        assert!(name.ends_with(&format!(",S={}", expect.len())), "{name}");
        assert_eq!(p1.parent().unwrap(), md.join("new"));
        for sub in ["cur", "new", "tmp"] {
            let m = std::fs::metadata(md.join(sub)).unwrap();
            assert_eq!(m.mode() & 0o777, 0o700);
        }
        assert_eq!(std::fs::metadata(&p1).unwrap().mode() & 0o777, 0o600);
        assert_eq!(std::fs::read_dir(md.join("tmp")).unwrap().count(), 0);
    }

    #[test]
    fn header_values_cannot_inject_lines() {
        assert_eq!(
            prepended_headers("a\r\nX: y", None, "b"),
            "Return-Path: <aX: y>\nDelivered-To: b\n"
        );
    }

    #[test]
    fn mbox_append_quotes_and_separates() {
        let d = tempfile::tempdir().unwrap();
        let mbox = d.path().join("joe");
        let (f, len) = content(b"Subject: a\n\nFrom here\nno newline at end");
        let t = UNIX_EPOCH + Duration::from_secs(86_400 * 365);
        append_mbox(
            &mbox,
            true,
            "",
            t,
            b"Delivered-To: joe@x\n",
            ContentReader::new(f.as_file(), 15, len),
        )
        .unwrap();
        append_mbox(
            &mbox,
            true,
            "s@x",
            t,
            b"",
            ContentReader::new(f.as_file(), 15, len),
        )
        .unwrap();
        let text = std::fs::read_to_string(&mbox).unwrap();
        assert_eq!(
            text,
            "From MAILER-DAEMON  Fri Jan  1 00:00:00 1971\nDelivered-To: joe@x\nSubject: a\n\n>From here\nno newline at end\n\n\
From s@x  Fri Jan  1 00:00:00 1971\nSubject: a\n\n>From here\nno newline at end\n\n"
        );
        assert!(!d.path().join("joe.lock").exists());
        assert_eq!(std::fs::metadata(&mbox).unwrap().mode() & 0o777, 0o600);
    }

    #[test]
    fn mbox_refuses_symlink_and_truncates_on_error() {
        let d = tempfile::tempdir().unwrap();
        let target = d.path().join("target");
        std::fs::write(&target, "").unwrap();
        let link = d.path().join("link");
        std::os::unix::fs::symlink(&target, &link).unwrap();
        let (f, len) = content(b"x\n");
        let e = append_mbox(
            &link,
            false,
            "s",
            UNIX_EPOCH,
            b"",
            ContentReader::new(f.as_file(), 15, len),
        )
        .unwrap_err();
        assert!(!e.temporary, "{e:?}");
        // Content range past the end of the queue file: the write fails midway
        // and the mailbox must be restored to its old size.
        let mbox = d.path().join("mbox");
        std::fs::write(&mbox, "old\n").unwrap();
        let e = append_mbox(
            &mbox,
            false,
            "s",
            UNIX_EPOCH,
            b"",
            ContentReader::new(f.as_file(), 15, len + 100),
        )
        .unwrap_err();
        assert!(e.temporary);
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
        let (f, len) = content(b"x\n");
        append_mbox(
            &mbox,
            true,
            "s",
            UNIX_EPOCH,
            b"",
            ContentReader::new(f.as_file(), 15, len),
        )
        .unwrap();
        assert!(!lock.exists());
    }
}
