//! local's side of writing one message into a Maildir, an mbox file or any
//! appended file: the message as local delivers it (the headers it prepends,
//! then the queue file's content range) and the delivery status of a result.
//!
//! The mailbox formats themselves live in the shared mailbox store,
//! `postern_mailbox` (Maildir: tmp/ → fsync → rename to new/NAME,S=SIZE →
//! fsync of new/; mbox: dotlock + flock, From line, mboxrd quoting, truncation
//! back on error). Its errors are plain I/O errors with the path; this module
//! maps them to DSN codes ([`DeliveryError::mailbox`]): a full mailbox or too
//! big a file (EDQUOT, EFBIG) bounces 5.2.2, a symlinked or hard-linked
//! mailbox bounces 5.2.0, anything else (a busy lock included) defers 4.2.0.

use std::fs::File;
use std::io::{self, Read};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::time::SystemTime;

use postern_ipc::ReversePath;
use postern_mailbox::{Maildir, Op, mbox};

pub use postern_mailbox::mbox::DotLock;
pub use postern_status::EnhancedCode;

/// A failed delivery attempt: temporary (defer) or permanent (bounce).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DeliveryError {
    /// True = try again later.
    pub temporary: bool,
    /// Enhanced status code, e.g. 4.2.0 (its class agrees with `temporary`).
    pub dsn: EnhancedCode,
    /// Human-readable reason for logs and bounces.
    pub reason: String,
}

impl From<DeliveryError> for postern_status::DeliveryStatus {
    /// The failure as the one status type: temporary or permanent by
    /// `temporary`, with its code's subject and detail and the reason.
    fn from(e: DeliveryError) -> postern_status::DeliveryStatus {
        let EnhancedCode(_, s, d) = e.dsn;
        if e.temporary {
            postern_status::DeliveryStatus::temporary(s, d, e.reason)
        } else {
            postern_status::DeliveryStatus::permanent(s, d, e.reason)
        }
    }
}

impl DeliveryError {
    /// A temporary failure.
    pub fn temp(dsn: EnhancedCode, reason: impl Into<String>) -> DeliveryError {
        DeliveryError {
            temporary: true,
            dsn: EnhancedCode(4, dsn.1, dsn.2),
            reason: reason.into(),
        }
    }
    /// A permanent failure.
    pub fn perm(dsn: EnhancedCode, reason: impl Into<String>) -> DeliveryError {
        DeliveryError {
            temporary: false,
            dsn: EnhancedCode(5, dsn.1, dsn.2),
            reason: reason.into(),
        }
    }
    /// Maps an I/O error: quota / file too big bounce (5.2.2, as Postfix), anything else defers (4.2.0).
    pub fn io(context: &str, e: &io::Error) -> DeliveryError {
        match e.raw_os_error() {
            Some(libc::EDQUOT) | Some(libc::EFBIG) => DeliveryError::perm(
                EnhancedCode(5, 2, 2),
                format!("{context}: mailbox full: {e}"),
            ),
            _ => DeliveryError::temp(EnhancedCode(4, 2, 0), format!("{context}: {e}")),
        }
    }

    /// Maps a mailbox store error: an I/O error as [`DeliveryError::io`]
    /// with "OPERATION PATH" as the context (5.2.2 for quota / file too
    /// big, else 4.2.0), a mailbox refused as unsafe (symlink, not a regular
    /// file with one link) 5.2.0, a lock held through every retry 4.2.0.
    pub fn mailbox(e: &postern_mailbox::Error) -> DeliveryError {
        use postern_mailbox::Error as E;
        match e {
            E::Io { op, path, source } => {
                DeliveryError::io(&format!("{op} {}", path.display()), source)
            }
            E::Symlink { .. } | E::NotRegularFile { .. } => {
                DeliveryError::perm(EnhancedCode(5, 2, 0), e.to_string())
            }
            _ => DeliveryError::temp(EnhancedCode(4, 2, 0), e.to_string()),
        }
    }
}

impl From<postern_mailbox::Error> for DeliveryError {
    fn from(e: postern_mailbox::Error) -> DeliveryError {
        DeliveryError::mailbox(&e)
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
pub fn prepended_headers(
    sender: &ReversePath,
    original: Option<&str>,
    delivered_to: &str,
) -> String {
    let mut s = format!("Return-Path: {}\n", clean(&sender.to_string()));
    if let Some(o) = original.filter(|o| !o.is_empty()) {
        s.push_str(&format!("X-Original-To: {}\n", clean(o)));
    }
    s.push_str(&format!("Delivered-To: {}\n", clean(delivered_to)));
    s
}

/// Removes CR/LF and other controls so an address can never start a new header line.
fn clean(s: &str) -> String {
    postern_mailbox::strip_controls(s)
}

/// Delivers into the Maildir `dir` (created with cur/ new/ tmp/ at 0700 if
/// missing): `prefix` then the content. Returns the final path in new/.
pub fn deliver_maildir(
    dir: &Path,
    hostname: &str,
    prefix: &[u8],
    content: ContentReader<'_>,
) -> Result<PathBuf, DeliveryError> {
    Ok(Maildir::new(dir).deliver(hostname, prefix.chain(content))?)
}

/// "Www Mmm dd hh:mm:ss yyyy" (asctime layout, UTC) for the mbox From line.
pub use postern_mailtime::asctime_utc as asctime;

/// Takes the `MBOX.lock` dotlock ([`postern_mailbox::mbox::dotlock`]).
/// When local delivers as the recipient, the parent (root) takes the
/// dotlock in the spool directory and the child appends with the file lock
/// only.
pub fn dotlock(path: &Path) -> Result<DotLock, DeliveryError> {
    Ok(mbox::dotlock(path)?)
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
    Ok(mbox::append(
        path,
        use_dotlock,
        sender,
        now,
        prefix.chain(content),
    )?)
}

/// Creates the spool mailbox `path` for a user if it does not exist (as
/// root: [`postern_mailbox::mbox::create_owned`], owner `uid`, group `gid`,
/// 0600). A mailbox that cannot be given to the user is removed and the
/// delivery defers (4.3.0).
pub fn create_spool_mailbox(path: &Path, uid: u32, gid: u32) -> Result<(), DeliveryError> {
    mbox::create_owned(path, uid, gid).map_err(|e| match &e {
        postern_mailbox::Error::Io {
            op: Op::Chown,
            source,
            ..
        } => DeliveryError::temp(
            EnhancedCode(4, 3, 0),
            format!("cannot give {} to uid {uid}: {source}", path.display()),
        ),
        _ => DeliveryError::mailbox(&e),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;
    use std::os::unix::fs::MetadataExt;
    use std::time::{Duration, UNIX_EPOCH};

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
    fn maildir_byte_exact_and_unique() {
        let d = tempfile::tempdir().unwrap();
        let body = b"Subject: hi\n\nline1\r\nFrom me\n\x00\xff binary\n";
        let (f, len) = content(body);
        let md = d.path().join("Maildir");
        let prefix = prepended_headers(&"s@x".parse().unwrap(), Some("orig@x"), "joe@x");
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
            prepended_headers(&ReversePath::Null, Some("o\r\nX: y"), "b\nZ: w"),
            "Return-Path: <>\nX-Original-To: oX: y\nDelivered-To: bZ: w\n"
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

    #[test]
    fn mailbox_errors_map_to_the_dsn_codes_of_before() {
        use postern_mailbox::Error as E;
        let io = |op, errno| E::Io {
            op,
            path: "/var/mail/joe".into(),
            source: io::Error::from_raw_os_error(errno),
        };
        // Quota and file too big bounce 5.2.2, with the path.
        for errno in [libc::EDQUOT, libc::EFBIG] {
            let d = DeliveryError::mailbox(&io(Op::Write, errno));
            assert!(!d.temporary && d.dsn == EnhancedCode(5, 2, 2), "{d:?}");
            assert!(
                d.reason.starts_with("write /var/mail/joe: mailbox full: "),
                "{d:?}"
            );
        }
        // Any other I/O error defers 4.2.0 with "OPERATION PATH: error".
        let d = DeliveryError::mailbox(&io(Op::CreateMaildirFile, libc::EIO));
        assert_eq!(
            d,
            DeliveryError::temp(
                EnhancedCode(4, 2, 0),
                format!(
                    "create maildir file /var/mail/joe: {}",
                    io::Error::from_raw_os_error(libc::EIO)
                )
            )
        );
        // Unsafe mailboxes bounce 5.2.0; busy locks defer 4.2.0.
        assert_eq!(
            DeliveryError::mailbox(&E::Symlink {
                path: "/m/l".into()
            }),
            DeliveryError::perm(EnhancedCode(5, 2, 0), "/m/l: is a symbolic link: refused")
        );
        assert_eq!(
            DeliveryError::mailbox(&E::NotRegularFile {
                path: "/m/h".into()
            }),
            DeliveryError::perm(
                EnhancedCode(5, 2, 0),
                "/m/h: not a regular file with one link: refused"
            )
        );
        assert_eq!(
            DeliveryError::mailbox(&E::Locked {
                path: "/m/j".into(),
                lock_file: Some("/m/j.lock".into())
            }),
            DeliveryError::temp(
                EnhancedCode(4, 2, 0),
                "mailbox /m/j is locked (lock file /m/j.lock)"
            )
        );
        assert_eq!(
            DeliveryError::mailbox(&E::Locked {
                path: "/m/j".into(),
                lock_file: None
            }),
            DeliveryError::temp(EnhancedCode(4, 2, 0), "mailbox /m/j is locked")
        );
    }
}
