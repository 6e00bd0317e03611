//! The queue directories: which exist, who owns them, and the moves between them.
//!
//! Every directory under `queue_directory` is listed once in [`QUEUE_DIRS`]
//! with its mode, owning user and group, so `postern install`, its `--check`
//! and tests all agree. [`QueueDirs`] turns a queue root into paths and performs the one
//! operation that moves a message between states: a `rename(2)` of
//! `from/ID` to `to/ID` followed by an `fsync` of the target directory.
//!
//! SECURITY: the owners and modes here are the permission matrix of
//! docs/security.md (a test parses that table so the two cannot drift):
//! smtpd has no access to any queue directory, cleanup may only create files
//! in incoming/ (group write+search, no read), qmgr alone lists and moves.
//! [`QueueDirs::create_all`] only creates directories with these modes as
//! the current user and never chowns; ownership is `postern install`'s job.

use std::fs;
use std::io;
use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use crate::id::QueueId;

/// Prefix of the temporary files writers create before the final rename.
/// Any name starting with `.` is treated as temporary by [`QueueDirs::list`].
pub const TEMP_PREFIX: &str = ".tmp-";

/// One queue directory holding message files; each message is in exactly one.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Queue {
    /// Mail dropped by the local `sendmail` command, waiting for pickup.
    Maildrop,
    /// Accepted, durable mail that qmgr has not yet taken on.
    Incoming,
    /// Mail qmgr is delivering now (bounded by qmgr's active limit).
    Active,
    /// Mail that had a temporary failure; the file's mtime is the next attempt.
    Deferred,
    /// Mail put aside by the administrator; never scheduled until released.
    Hold,
    /// Files that could not be parsed; kept for inspection, never deleted automatically.
    Corrupt,
}

impl Queue {
    /// Every queue, in the order a message normally meets them.
    pub const ALL: [Queue; 6] = [
        Queue::Maildrop,
        Queue::Incoming,
        Queue::Active,
        Queue::Deferred,
        Queue::Hold,
        Queue::Corrupt,
    ];

    /// The directory name under `queue_directory` (also used in log lines).
    pub fn name(self) -> &'static str {
        match self {
            Queue::Maildrop => "maildrop",
            Queue::Incoming => "incoming",
            Queue::Active => "active",
            Queue::Deferred => "deferred",
            Queue::Hold => "hold",
            Queue::Corrupt => "corrupt",
        }
    }

    /// Inverse of [`Queue::name`], for `postern queue` arguments.
    pub fn from_name(name: &str) -> Option<Queue> {
        Queue::ALL.into_iter().find(|q| q.name() == name)
    }
}

/// Who owns a queue directory, by user and group name, exactly as
/// docs/security.md "The queue directory" says. The names are resolved only
/// by whoever installs or checks the queue (`postern install`), never by
/// [`QueueDirs::create_all`], so this crate needs no account database.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct DirOwner {
    /// Owning user name.
    pub user: &'static str,
    /// Owning group name.
    pub group: &'static str,
}

impl DirOwner {
    /// root:root — directories only master (root) writes.
    pub const ROOT: DirOwner = DirOwner {
        user: "root",
        group: "root",
    };
    /// postern-qmgr:postern — the queue proper: qmgr owns it, cleanup (group
    /// `postern`) may create files in incoming/.
    pub const QMGR: DirOwner = DirOwner {
        user: "postern-qmgr",
        group: "postern",
    };
    /// postern-pickup:postdrop — maildrop/: the setgid `postdrop` program
    /// creates files, pickup reads and removes them.
    pub const PICKUP: DirOwner = DirOwner {
        user: "postern-pickup",
        group: "postdrop",
    };
    /// root:postern-ipc — private/: only members of postern-ipc reach the
    /// internal sockets.
    pub const IPC: DirOwner = DirOwner {
        user: "root",
        group: "postern-ipc",
    };
    /// root:postdrop — public/: sockets local programs reach through postdrop.
    pub const POSTDROP: DirOwner = DirOwner {
        user: "root",
        group: "postdrop",
    };
}

/// Declarative description of one directory under `queue_directory`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DirSpec {
    /// Directory name relative to `queue_directory`.
    pub name: &'static str,
    /// Permission bits, including the sticky bit where needed.
    pub mode: u32,
    /// Owning user and group (applied by `postern install`, not by create_all).
    pub owner: DirOwner,
    /// One line saying what lives there.
    pub doc: &'static str,
}

/// Every directory under `queue_directory`, with mode and owner: the one list
/// used by [`QueueDirs::create_all`], `postern install` and `postern install
/// --check`. It is docs/security.md's "The queue directory" table (a test
/// compares the two); the queue root itself is [`QueueDirs::ROOT_SPEC`].
pub static QUEUE_DIRS: &[DirSpec] = &[
    DirSpec {
        name: "maildrop",
        mode: 0o1730,
        owner: DirOwner::PICKUP,
        doc: "local submissions; group postdrop may create files but not list or read them",
    },
    DirSpec {
        name: "incoming",
        mode: 0o730,
        owner: DirOwner::QMGR,
        doc: "new queue files being written (.tmp-*) and accepted mail not yet seen by qmgr; \
              cleanup (group postern) creates files but cannot list",
    },
    DirSpec {
        name: "active",
        mode: 0o700,
        owner: DirOwner::QMGR,
        doc: "mail qmgr is delivering now",
    },
    DirSpec {
        name: "deferred",
        mode: 0o700,
        owner: DirOwner::QMGR,
        doc: "mail waiting for a retry; file mtime is the next attempt time",
    },
    DirSpec {
        name: "hold",
        mode: 0o700,
        owner: DirOwner::QMGR,
        doc: "mail held by the administrator",
    },
    DirSpec {
        name: "corrupt",
        mode: 0o700,
        owner: DirOwner::QMGR,
        doc: "queue files that could not be parsed, kept for inspection",
    },
    DirSpec {
        name: "defer",
        mode: 0o700,
        owner: DirOwner::QMGR,
        doc: "defer logs: why each recipient of a deferred message waits (qmgr writes, mailq reads)",
    },
    DirSpec {
        name: "private",
        mode: 0o710,
        owner: DirOwner::IPC,
        doc: "sockets of internal services (cleanup, local, ...); only postern-ipc reaches them",
    },
    DirSpec {
        name: "public",
        mode: 0o710,
        owner: DirOwner::POSTDROP,
        doc: "sockets local programs may connect to through postdrop (the pickup trigger)",
    },
    DirSpec {
        name: "pid",
        mode: 0o755,
        owner: DirOwner::ROOT,
        doc: "master's pid and lock file",
    },
];

/// The queue rooted at one `queue_directory`: paths plus the directory-level
/// operations (list, move, locate, clean up).
#[derive(Clone, Debug)]
pub struct QueueDirs {
    root: PathBuf,
}

/// Result of scanning one queue directory: valid IDs plus names that are
/// neither queue IDs nor temporary files (for the caller to log).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct DirScan {
    /// Valid queue IDs, sorted (which is arrival order for generated IDs).
    pub ids: Vec<QueueId>,
    /// Names that are not queue IDs and do not start with `.`.
    pub junk: Vec<String>,
}

impl QueueDirs {
    /// The queue root (`queue_directory`) itself: root:root 0755, so every
    /// service can traverse it to reach the directory it is allowed into.
    /// `name` is empty: the spec applies to the root, not to a child.
    pub const ROOT_SPEC: DirSpec = DirSpec {
        name: "",
        mode: 0o755,
        owner: DirOwner::ROOT,
        doc: "queue_directory: everyone traverses",
    };

    /// A queue rooted at `root` (normally main.cf's `queue_directory`, or `/`
    /// inside a chroot). Touches nothing on disk.
    pub fn new(root: impl Into<PathBuf>) -> Self {
        QueueDirs { root: root.into() }
    }

    /// The queue root.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Path of one queue directory.
    pub fn dir(&self, q: Queue) -> PathBuf {
        self.root.join(q.name())
    }

    /// Path of message `id` in queue `q`.
    pub fn file(&self, q: Queue, id: &QueueId) -> PathBuf {
        self.dir(q).join(id.as_str())
    }

    /// mkdir -p of every [`QUEUE_DIRS`] entry with its mode (as the current
    /// user; no chown). Directories that already exist are left as they are;
    /// a non-directory in the way is an error.
    pub fn create_all(&self) -> io::Result<()> {
        fs::create_dir_all(&self.root)?;
        for spec in QUEUE_DIRS {
            let path = self.root.join(spec.name);
            match fs::DirBuilder::new().mode(spec.mode & 0o777).create(&path) {
                Ok(()) => {
                    // The umask may have cleared bits and mkdir may drop the
                    // sticky bit: set the exact mode explicitly.
                    fs::set_permissions(&path, fs::Permissions::from_mode(spec.mode))?;
                }
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
                    if !fs::metadata(&path)?.is_dir() {
                        return Err(io::Error::new(
                            io::ErrorKind::AlreadyExists,
                            format!("{} exists and is not a directory", path.display()),
                        ));
                    }
                }
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }

    /// Queue IDs in one queue dir, sorted, skipping temporary files (names
    /// starting with '.') and anything that is not a valid queue ID. Use
    /// [`QueueDirs::scan`] to also get the skipped junk names.
    pub fn list(&self, q: Queue) -> io::Result<Vec<QueueId>> {
        Ok(self.scan(q)?.ids)
    }

    /// Like [`QueueDirs::list`] but also returns the names that are neither
    /// queue IDs nor temporary files, so the caller can log them.
    pub fn scan(&self, q: Queue) -> io::Result<DirScan> {
        let mut out = DirScan::default();
        for entry in fs::read_dir(self.dir(q))? {
            let entry = entry?;
            let name = entry.file_name();
            let name = name.to_string_lossy();
            if name.starts_with('.') {
                continue;
            }
            match QueueId::parse(&name) {
                Some(id) => out.ids.push(id),
                None => out.junk.push(name.into_owned()),
            }
        }
        out.ids.sort();
        out.junk.sort();
        Ok(out)
    }

    /// rename(from/ID, to/ID) then fsync the target directory: the single
    /// step that moves a message from one state to another. A missing source
    /// is reported as `io::ErrorKind::NotFound` (someone else moved it).
    pub fn move_file(&self, id: &QueueId, from: Queue, to: Queue) -> io::Result<()> {
        fs::rename(self.file(from, id), self.file(to, id))?;
        sync_dir(&self.dir(to))
    }

    /// Finds which queue holds ID (for postern queue commands). Looks twice
    /// so that a single concurrent move between directories is not missed.
    pub fn locate(&self, id: &QueueId) -> Option<Queue> {
        const ORDER: [Queue; 6] = [
            Queue::Incoming,
            Queue::Active,
            Queue::Deferred,
            Queue::Hold,
            Queue::Corrupt,
            Queue::Maildrop,
        ];
        for _ in 0..2 {
            for q in ORDER {
                if fs::symlink_metadata(self.file(q, id)).is_ok() {
                    return Some(q);
                }
            }
        }
        None
    }

    /// Removes temporary files older than `age` left by crashed writers in
    /// incoming/ (and maildrop/). Returns count. Only regular files whose
    /// name starts with '.' are considered; a file that vanishes meanwhile
    /// (its writer committed or aborted) is not an error, and a directory
    /// this process may not list (maildrop/ is pickup's, not qmgr's, in
    /// docs/security.md) is skipped.
    pub fn remove_stale_temp(&self, age: Duration) -> io::Result<usize> {
        let now = SystemTime::now();
        let mut removed = 0;
        for q in [Queue::Incoming, Queue::Maildrop] {
            let before = removed;
            let entries = match fs::read_dir(self.dir(q)) {
                Ok(e) => e,
                // Missing, or not ours to list under privilege separation
                // (maildrop/ for qmgr): its owner cleans it up.
                Err(e)
                    if matches!(
                        e.kind(),
                        io::ErrorKind::NotFound | io::ErrorKind::PermissionDenied
                    ) =>
                {
                    continue;
                }
                Err(e) => return Err(e),
            };
            for entry in entries {
                let entry = entry?;
                if !entry.file_name().to_string_lossy().starts_with('.') {
                    continue;
                }
                let meta = match entry.metadata() {
                    Ok(m) => m,
                    Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
                    Err(e) => return Err(e),
                };
                if !meta.is_file() {
                    continue;
                }
                let old = match meta.modified() {
                    // A file modified "in the future" is not stale.
                    Ok(m) => now.duration_since(m).map(|d| d >= age).unwrap_or(false),
                    Err(_) => false,
                };
                if !old {
                    continue;
                }
                match fs::remove_file(entry.path()) {
                    Ok(()) => removed += 1,
                    Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                    Err(e) => return Err(e),
                }
            }
            if removed > before {
                sync_dir(&self.dir(q))?;
            }
        }
        Ok(removed)
    }
}

/// fsync a directory so that renames, creations and unlinks in it are durable.
pub fn sync_dir(dir: &Path) -> io::Result<()> {
    fs::File::open(dir)?.sync_all()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::MetadataExt;

    fn id(s: &str) -> QueueId {
        QueueId::parse(s).expect("valid test id")
    }

    #[test]
    fn names_round_trip_and_are_distinct() {
        let names: std::collections::HashSet<_> = Queue::ALL.iter().map(|q| q.name()).collect();
        assert_eq!(names.len(), 6);
        for q in Queue::ALL {
            assert_eq!(Queue::from_name(q.name()), Some(q));
            assert!(
                QUEUE_DIRS.iter().any(|d| d.name == q.name()),
                "{q:?} missing"
            );
        }
        assert_eq!(Queue::from_name("bogus"), None);
    }

    #[test]
    fn create_all_sets_exact_modes_and_is_idempotent() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let dirs = QueueDirs::new(tmp.path().join("q"));
        dirs.create_all().expect("create");
        dirs.create_all().expect("create again");
        for spec in QUEUE_DIRS {
            let meta = fs::metadata(dirs.root().join(spec.name)).expect("stat");
            assert!(meta.is_dir());
            assert_eq!(meta.mode() & 0o7777, spec.mode, "{}", spec.name);
        }
    }

    /// The "The queue directory" table of docs/security.md as
    /// (name, user, group, mode) rows; name "" is the queue root.
    fn security_md_queue_rows() -> Vec<(String, String, String, u32)> {
        let doc = include_str!("../../../docs/security.md");
        let section = doc
            .split("\n## ")
            .find(|s| s.starts_with("The queue directory"))
            .expect("security.md has a queue directory section");
        let mut rows = Vec::new();
        for line in section.lines().filter(|l| l.starts_with("| `")) {
            let cells: Vec<&str> = line.split('|').map(str::trim).collect();
            // ["", path, owner:group, mode, who, ""]
            let (user, group) = cells[2].split_once(':').expect("owner:group");
            let mode = u32::from_str_radix(cells[3], 8).expect("octal mode");
            for name in cells[1].split(',') {
                let name = name.trim().trim_matches('`');
                let name = if name == "queue_directory" {
                    ""
                } else {
                    name.strip_suffix('/').expect("directory rows end in /")
                };
                rows.push((name.to_owned(), user.to_owned(), group.to_owned(), mode));
            }
        }
        rows
    }

    #[test]
    fn queue_dirs_match_docs_security_md() {
        let rows = security_md_queue_rows();
        let mut ours: Vec<(String, String, String, u32)> = QUEUE_DIRS
            .iter()
            .chain(std::iter::once(&QueueDirs::ROOT_SPEC))
            .map(|d| {
                (
                    d.name.to_owned(),
                    d.owner.user.to_owned(),
                    d.owner.group.to_owned(),
                    d.mode,
                )
            })
            .collect();
        let mut doc = rows.clone();
        ours.sort();
        doc.sort();
        assert_eq!(ours, doc, "QUEUE_DIRS and docs/security.md disagree");
        // Spot checks, so a parser bug cannot make both sides empty.
        assert!(doc.contains(&(
            "incoming".into(),
            "postern-qmgr".into(),
            "postern".into(),
            0o730
        )));
        assert!(doc.contains(&(
            "maildrop".into(),
            "postern-pickup".into(),
            "postdrop".into(),
            0o1730
        )));
        assert_eq!(doc.len(), QUEUE_DIRS.len() + 1);
    }

    #[test]
    fn smtpd_style_outsider_has_no_access_by_mode() {
        // "other" never gets read or write on a queue directory: only the
        // queue root, pid/ (root-owned) are world-traversable.
        for spec in QUEUE_DIRS {
            if spec.owner.user == "root" && spec.owner.group == "root" {
                assert_eq!(spec.mode & 0o002, 0, "{}", spec.name);
                continue;
            }
            assert_eq!(spec.mode & 0o007, 0, "{} open to others", spec.name);
        }
    }

    #[test]
    fn remove_stale_temp_skips_a_directory_it_may_not_list() {
        if nix::unistd::geteuid().is_root() {
            eprintln!("skipped: root may list any directory");
            return;
        }
        let tmp = tempfile::tempdir().expect("tempdir");
        let dirs = QueueDirs::new(tmp.path());
        dirs.create_all().expect("create");
        let md = dirs.dir(Queue::Maildrop);
        fs::set_permissions(&md, fs::Permissions::from_mode(0o300)).expect("chmod");
        let res = dirs.remove_stale_temp(Duration::from_secs(1));
        fs::set_permissions(&md, fs::Permissions::from_mode(0o700)).expect("chmod back");
        assert_eq!(res.expect("maildrop/ skipped, not an error"), 0);
    }

    #[test]
    fn create_all_fails_on_file_in_the_way() {
        let tmp = tempfile::tempdir().expect("tempdir");
        fs::write(tmp.path().join("hold"), b"x").expect("write");
        let err = QueueDirs::new(tmp.path()).create_all().unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::AlreadyExists);
    }

    #[test]
    fn paths() {
        let dirs = QueueDirs::new("/var/spool/postern");
        assert_eq!(
            dirs.dir(Queue::Deferred),
            Path::new("/var/spool/postern/deferred")
        );
        assert_eq!(
            dirs.file(Queue::Active, &id("ABCDEF123")),
            Path::new("/var/spool/postern/active/ABCDEF123")
        );
    }

    #[test]
    fn list_skips_temp_files_and_reports_junk() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let dirs = QueueDirs::new(tmp.path());
        dirs.create_all().expect("create");
        let inc = dirs.dir(Queue::Incoming);
        for name in ["BBBBBB", "AAAAAA", ".tmp-1-2", ".hidden", "not-an-id", "x"] {
            fs::write(inc.join(name), b"").expect("write");
        }
        assert_eq!(
            dirs.list(Queue::Incoming).expect("list"),
            vec![id("AAAAAA"), id("BBBBBB")]
        );
        let scan = dirs.scan(Queue::Incoming).expect("scan");
        assert_eq!(scan.junk, vec!["not-an-id".to_owned(), "x".to_owned()]);
        assert!(dirs.list(Queue::Hold).expect("list").is_empty());
    }

    #[test]
    fn move_file_moves_and_reports_not_found() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let dirs = QueueDirs::new(tmp.path());
        dirs.create_all().expect("create");
        let qid = id("ABCDEF1");
        fs::write(dirs.file(Queue::Incoming, &qid), b"data").expect("write");
        assert_eq!(dirs.locate(&qid), Some(Queue::Incoming));
        dirs.move_file(&qid, Queue::Incoming, Queue::Active)
            .expect("move");
        assert!(!dirs.file(Queue::Incoming, &qid).exists());
        assert_eq!(
            fs::read(dirs.file(Queue::Active, &qid)).expect("read"),
            b"data"
        );
        assert_eq!(dirs.locate(&qid), Some(Queue::Active));
        let err = dirs
            .move_file(&qid, Queue::Incoming, Queue::Deferred)
            .unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::NotFound);
        assert_eq!(dirs.locate(&id("NOSUCH1")), None);
    }

    #[test]
    fn remove_stale_temp_removes_only_old_temp_files() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let dirs = QueueDirs::new(tmp.path());
        dirs.create_all().expect("create");
        let old = SystemTime::now() - Duration::from_secs(2 * 86_400);
        let inc = dirs.dir(Queue::Incoming);
        let md = dirs.dir(Queue::Maildrop);
        for p in [
            inc.join(".tmp-1-1"),
            md.join(".tmp-2-1"),
            inc.join("OLDQUEUEID"),
        ] {
            fs::write(&p, b"").expect("write");
            crate::set_next_attempt(&p, old).expect("set mtime");
        }
        fs::write(inc.join(".tmp-3-1"), b"").expect("write fresh");
        fs::create_dir(inc.join(".olddir")).expect("mkdir");
        crate::set_next_attempt(&inc.join(".olddir"), old).expect("set mtime");

        let n = dirs
            .remove_stale_temp(Duration::from_secs(86_400))
            .expect("clean");
        assert_eq!(n, 2);
        assert!(!inc.join(".tmp-1-1").exists());
        assert!(!md.join(".tmp-2-1").exists());
        assert!(inc.join(".tmp-3-1").exists(), "fresh temp file kept");
        assert!(
            inc.join("OLDQUEUEID").exists(),
            "queue files are never touched"
        );
        assert!(
            inc.join(".olddir").exists(),
            "directories are never touched"
        );
        assert_eq!(
            dirs.remove_stale_temp(Duration::from_secs(86_400))
                .expect("again"),
            0
        );
    }
}
