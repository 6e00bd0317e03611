//! Maildir delivery (maildir(5)), as `local` has always written it.
//!
//! A message is written to `tmp/UNIQUE` (O_CREAT|O_EXCL|O_NOFOLLOW, 0600),
//! fsync'd, renamed to `new/UNIQUE,S=SIZE` (SIZE = the bytes of the file),
//! and new/ is fsync'd, so a message is either complete in new/ or absent.
//! The directories are created 0700 when missing. The name format is an
//! on-disk format that readers depend on: change it only with the mailbox
//! format version of issue 10.

use std::fs::{File, OpenOptions};
use std::io::{self, BufWriter, Read, Write};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use crate::{Error, Op, Result};

/// The three subdirectories of a Maildir, in the order they are created.
pub const SUBDIRS: [&str; 3] = ["tmp", "new", "cur"];

static COUNTER: AtomicU64 = AtomicU64::new(0);

/// A Maildir unique name: `SECS.M{micros}P{pid}Q{counter}.HOST`, with `/`
/// and `:` in HOST written as `\057` and `\072` (maildir(5)). The counter
/// counts deliveries by this process.
pub fn unique_name(hostname: &str) -> String {
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

/// One Maildir, named by its root directory (the one holding tmp/ new/ cur/).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Maildir {
    root: PathBuf,
}

impl Maildir {
    /// The Maildir at `root` (nothing is touched on disk).
    pub fn new(root: impl Into<PathBuf>) -> Maildir {
        Maildir { root: root.into() }
    }

    /// The root directory.
    pub fn path(&self) -> &Path {
        &self.root
    }

    /// `root/tmp`.
    pub fn tmp(&self) -> PathBuf {
        self.root.join("tmp")
    }

    /// `root/new`.
    pub fn new_dir(&self) -> PathBuf {
        self.root.join("new")
    }

    /// `root/cur`.
    pub fn cur(&self) -> PathBuf {
        self.root.join("cur")
    }

    /// Creates the root and tmp/ new/ cur/ (mode 0700, parents too) where
    /// missing; existing directories are left as they are.
    pub fn create(&self) -> Result<()> {
        let mut b = std::fs::DirBuilder::new();
        b.recursive(true).mode(0o700);
        for sub in SUBDIRS {
            let p = self.root.join(sub);
            b.create(&p)
                .map_err(|e| Error::io(Op::CreateMaildir, &p, e))?;
        }
        Ok(())
    }

    /// Delivers `message` (read to its end) into new/, creating the Maildir
    /// first if needed, and returns the message's final path
    /// (`new/UNIQUE,S=SIZE`). On any error the tmp/ file is removed and
    /// nothing appears in new/.
    pub fn deliver(&self, hostname: &str, message: impl Read) -> Result<PathBuf> {
        self.create()?;
        let unique = unique_name(hostname);
        let tmp = self.tmp().join(&unique);
        let file = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .custom_flags(libc::O_NOFOLLOW)
            .open(&tmp)
            .map_err(|e| Error::io(Op::CreateMaildirFile, &tmp, e))?;
        let result = (|| -> io::Result<PathBuf> {
            let mut w = BufWriter::new(&file);
            let mut message = message;
            io::copy(&mut message, &mut w)?;
            w.flush()?;
            drop(w);
            file.sync_all()?;
            let size = file.metadata()?.len();
            let new = self.new_dir().join(format!("{unique},S={size}"));
            std::fs::rename(&tmp, &new)?;
            File::open(self.new_dir())?.sync_all()?;
            Ok(new)
        })();
        result.map_err(|e| {
            let _ = std::fs::remove_file(&tmp);
            Error::io(Op::WriteMaildir, &self.root, e)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::MetadataExt;

    /// A reader that yields `ok` bytes, then fails.
    struct Failing<'a>(&'a [u8]);
    impl Read for Failing<'_> {
        fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
            if self.0.is_empty() {
                return Err(io::Error::other("queue file went away"));
            }
            let n = buf.len().min(self.0.len());
            buf[..n].copy_from_slice(&self.0[..n]);
            self.0 = &self.0[n..];
            Ok(n)
        }
    }

    #[test]
    fn delivery_lands_in_new_byte_exact_with_the_name_pattern() {
        let d = tempfile::tempdir().unwrap();
        let md = Maildir::new(d.path().join("a/Maildir"));
        let body = b"Delivered-To: joe@x\nSubject: hi\n\nline1\r\nFrom me\n\x00\xff binary\n";
        let p1 = md.deliver("h/o:st", &body[..]).unwrap();
        let p2 = md.deliver("h/o:st", &body[..]).unwrap();
        assert_ne!(p1, p2);
        assert_eq!(std::fs::read(&p1).unwrap(), body);
        assert_eq!(p1.parent().unwrap(), md.new_dir());
        let name = p1.file_name().unwrap().to_str().unwrap().to_string();
        // SECS.M{micros}P{pid}Q{n}.HOST,S=SIZE
        let (secs, rest) = name.split_once(".M").unwrap();
        assert!(secs.parse::<u64>().unwrap() > 1_600_000_000, "{name}");
        let (micros, rest) = rest.split_once('P').unwrap();
        assert!(micros.parse::<u32>().unwrap() < 1_000_000, "{name}");
        let (pid, rest) = rest.split_once('Q').unwrap();
        assert_eq!(pid, std::process::id().to_string());
        let (q, rest) = rest.split_once('.').unwrap();
        assert!(q.parse::<u64>().unwrap() >= 1, "{name}");
        assert_eq!(rest, format!("h\\057o\\072st,S={}", body.len()));
        for sub in SUBDIRS {
            let m = std::fs::metadata(md.path().join(sub)).unwrap();
            assert_eq!(m.mode() & 0o777, 0o700);
        }
        assert_eq!(std::fs::metadata(&p1).unwrap().mode() & 0o777, 0o600);
        assert_eq!(std::fs::read_dir(md.tmp()).unwrap().count(), 0);
        assert_eq!(std::fs::read_dir(md.cur()).unwrap().count(), 0);
    }

    #[test]
    fn a_failed_write_leaves_nothing_and_names_the_maildir() {
        let d = tempfile::tempdir().unwrap();
        let md = Maildir::new(d.path().join("Maildir"));
        let e = md.deliver("h", Failing(b"Subject: x\n")).unwrap_err();
        assert!(
            matches!(
                e,
                Error::Io {
                    op: Op::WriteMaildir,
                    ..
                }
            ),
            "{e:?}"
        );
        assert_eq!(e.path(), md.path());
        assert!(e.to_string().contains("queue file went away"), "{e}");
        assert_eq!(std::fs::read_dir(md.tmp()).unwrap().count(), 0);
        assert_eq!(std::fs::read_dir(md.new_dir()).unwrap().count(), 0);
    }

    #[test]
    fn a_maildir_that_cannot_be_created_names_the_directory() {
        let d = tempfile::tempdir().unwrap();
        std::fs::write(d.path().join("file"), "").unwrap();
        let md = Maildir::new(d.path().join("file/Maildir"));
        let e = md.deliver("h", &b"x"[..]).unwrap_err();
        assert!(
            matches!(
                e,
                Error::Io {
                    op: Op::CreateMaildir,
                    ..
                }
            ),
            "{e:?}"
        );
        assert_eq!(e.path(), md.tmp());
        assert!(e.to_string().starts_with("create maildir "), "{e}");
    }

    #[test]
    fn unique_names_differ_and_escape_the_host() {
        let a = unique_name("mx/1:25");
        let b = unique_name("mx/1:25");
        assert_ne!(a, b);
        assert!(a.ends_with(".mx\\0571\\07225"), "{a}");
    }
}
