//! The mailbox store: writing (and later reading) the mailboxes users own.
//!
//! Why a crate of its own: the code that knows the on-disk mailbox formats
//! must be one code, shared by every program that touches a mailbox. Today
//! that is `local`, which delivers through [`maildir`] and [`mbox`]; the
//! mail-access servers of issue 10 (pop3d, then imapd) will read and change
//! the same mailboxes through this crate, so a message `local` writes is
//! named, sized and locked the way the readers expect.
//!
//! What it holds now (moved out of `local` unchanged in behaviour and on-disk
//! format):
//! - [`maildir`]: Maildir delivery (maildir(5)): a unique name
//!   `SECS.MmicrosPpidQn.HOST`, tmp/ with O_EXCL|O_NOFOLLOW, fsync, rename to
//!   new/NAME`,S=SIZE`, fsync of new/.
//! - [`mbox`]: mbox append with the `PATH.lock` dotlock and flock(2), a
//!   `From ` line, mboxrd quoting, a blank line at the end, fsync, and
//!   truncation back to the old size on any error; plus creating a spool
//!   mailbox for its owner.
//!
//! What it will grow into (issue 10): Maildir++ folders (`.Name`,
//! `maildirfolder`, `subscriptions`), sizes with `,W=` in the name, flags in
//! the `:2,` info, the persistent per-mailbox UID map (UIDVALIDITY, UIDNEXT)
//! and the versioned, checksummed index with its change log — the one
//! mailbox store local, pop3d and imapd share.
//!
//! Errors are plain [`Error`] values (the [`std::io::Error`] and what was
//! being done to which path), never delivery status codes: each caller maps
//! them to its own protocol (local to DSN codes, pop3d to `-ERR [SYS/TEMP]`).
//!
//! SECURITY: every file is opened with O_NOFOLLOW and must be a regular file
//! with one link before anything is appended to it, so a symlink or hard
//! link planted in a mailbox directory cannot redirect a write. The crate
//! switches no user itself: callers run it as the mailbox owner
//! (`postern_service::run_as`).

#![forbid(unsafe_code)]

pub mod maildir;
pub mod mbox;

use std::fmt;
use std::io;
use std::path::{Path, PathBuf};

pub use maildir::Maildir;

/// What was being done when an I/O error happened (the context of
/// [`Error::Io`]; its `Display` is the words logged before the path).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Op {
    /// Creating a Maildir directory (the root, tmp/, new/ or cur/).
    CreateMaildir,
    /// Creating the file in a Maildir's tmp/.
    CreateMaildirFile,
    /// Writing, syncing or renaming a Maildir message (the path is the Maildir).
    WriteMaildir,
    /// Creating a `PATH.lock` dotlock.
    CreateLock,
    /// Opening an mbox file for appending.
    Open,
    /// Examining an open mbox file.
    Stat,
    /// Appending to an mbox file (and syncing it).
    Write,
    /// Creating a spool mailbox for its owner.
    Create,
    /// Giving a new spool mailbox to its owner (fchown, fchmod).
    Chown,
}

impl fmt::Display for Op {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Op::CreateMaildir => "create maildir",
            Op::CreateMaildirFile => "create maildir file",
            Op::WriteMaildir => "write maildir",
            Op::CreateLock => "create lock file",
            Op::Open => "open",
            Op::Stat => "stat",
            Op::Write => "write",
            Op::Create => "create",
            Op::Chown => "give to its owner",
        })
    }
}

/// A mailbox operation that failed. Every variant names the path.
#[derive(Debug)]
#[non_exhaustive]
pub enum Error {
    /// An I/O error: `op` on `path` failed with `source`.
    Io {
        /// What was being done.
        op: Op,
        /// The file or directory it was done to.
        path: PathBuf,
        /// The operating system's error.
        source: io::Error,
    },
    /// The mailbox stayed locked by another program through every retry
    /// (`lock_file` is the dotlock when that was the lock held; None = the
    /// kernel lock on the file itself).
    Locked {
        /// The mailbox.
        path: PathBuf,
        /// The dotlock that was held, if it was the dotlock.
        lock_file: Option<PathBuf>,
    },
    /// The mailbox path is a symbolic link: refused.
    Symlink {
        /// The mailbox.
        path: PathBuf,
    },
    /// The mailbox is not a regular file with exactly one link: refused.
    NotRegularFile {
        /// The mailbox.
        path: PathBuf,
    },
}

impl Error {
    pub(crate) fn io(op: Op, path: &Path, source: io::Error) -> Error {
        Error::Io {
            op,
            path: path.to_path_buf(),
            source,
        }
    }

    /// The path the error is about.
    pub fn path(&self) -> &Path {
        match self {
            Error::Io { path, .. }
            | Error::Locked { path, .. }
            | Error::Symlink { path }
            | Error::NotRegularFile { path } => path,
        }
    }

    /// The operating system's error, for [`Error::Io`].
    pub fn io_error(&self) -> Option<&io::Error> {
        match self {
            Error::Io { source, .. } => Some(source),
            _ => None,
        }
    }

    /// The mailbox is over quota or the file too big (EDQUOT, EFBIG): no
    /// retry will help until the owner makes room.
    pub fn is_full(&self) -> bool {
        matches!(
            self.io_error().and_then(io::Error::raw_os_error),
            Some(libc::EDQUOT) | Some(libc::EFBIG)
        )
    }

    /// The mailbox was refused as unsafe (symlink, not a regular file, more
    /// than one link): permanent, an administrator must look.
    pub fn is_refused(&self) -> bool {
        matches!(self, Error::Symlink { .. } | Error::NotRegularFile { .. })
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::Io { op, path, source } => write!(f, "{op} {}: {source}", path.display()),
            Error::Locked {
                path,
                lock_file: Some(lock),
            } => write!(
                f,
                "mailbox {} is locked (lock file {})",
                path.display(),
                lock.display()
            ),
            Error::Locked {
                path,
                lock_file: None,
            } => write!(f, "mailbox {} is locked", path.display()),
            Error::Symlink { path } => {
                write!(f, "{}: is a symbolic link: refused", path.display())
            }
            Error::NotRegularFile { path } => write!(
                f,
                "{}: not a regular file with one link: refused",
                path.display()
            ),
        }
    }
}

impl std::error::Error for Error {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            Error::Io { source, .. } => Some(source),
            _ => None,
        }
    }
}

/// The result of a mailbox operation.
pub type Result<T> = std::result::Result<T, Error>;

/// Removes CR/LF and other controls so an address can never start a new
/// line (of a header or of the mbox `From ` line).
pub fn strip_controls(s: &str) -> String {
    s.chars().filter(|c| !c.is_control()).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errors_name_the_path_and_classify() {
        let full = Error::io(
            Op::Write,
            Path::new("/m/joe"),
            io::Error::from_raw_os_error(libc::EDQUOT),
        );
        assert!(full.is_full() && !full.is_refused());
        assert_eq!(full.path(), Path::new("/m/joe"));
        assert!(full.to_string().starts_with("write /m/joe: "), "{full}");
        let big = Error::io(
            Op::WriteMaildir,
            Path::new("/m/Maildir"),
            io::Error::from_raw_os_error(libc::EFBIG),
        );
        assert!(big.is_full());
        let other = Error::io(
            Op::Open,
            Path::new("/m/x"),
            io::Error::from_raw_os_error(libc::EIO),
        );
        assert!(!other.is_full());
        assert!(std::error::Error::source(&other).is_some());
        let link = Error::Symlink {
            path: "/m/l".into(),
        };
        assert!(link.is_refused() && link.io_error().is_none());
        assert_eq!(link.to_string(), "/m/l: is a symbolic link: refused");
        assert_eq!(
            Error::Locked {
                path: "/m/j".into(),
                lock_file: Some("/m/j.lock".into())
            }
            .to_string(),
            "mailbox /m/j is locked (lock file /m/j.lock)"
        );
    }

    #[test]
    fn controls_are_stripped() {
        assert_eq!(strip_controls("a\r\nX: y\t"), "aX: y");
    }
}
