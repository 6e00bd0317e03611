//! Writing a new queue file durably (used by cleanup).
//!
//! The sequence is the one that makes "250 Ok: queued" true:
//! create `incoming/.tmp-PID-N` (O_EXCL, then fchmod 0660) → write header,
//! envelope and content → patch the content length → write the end marker →
//! `fsync(file)` → `rename` to `incoming/ID` without replacing anything →
//! `fsync(incoming/)` (or `syncfs` when the writer may not open the directory).
//! Until [`QueueFileWriter::commit`] returns `Ok`, nothing is accepted and a
//! crash leaves only a temporary file that `remove_stale_temp` deletes later.
//!
//! SECURITY: queue files are mode 0660 ([`QueueFileWriter::FILE_MODE`], set
//! with fchmod so the umask does not matter): cleanup (the owner) writes, the
//! group (`postern`: qmgr) reads and marks recipients done; nobody else. The
//! writer (cleanup as `postern-cleanup`, postdrop setgid `postdrop`) has write
//! and search but not read permission on incoming/ and maildrop/ (modes 0730
//! and 1730 in docs/security.md), so it cannot open the directory to fsync
//! it; it then commits the rename with `syncfs` on the file's own descriptor,
//! which is slower but just as durable.

use std::fs::{self, File, OpenOptions};
use std::io::{self, BufWriter, Write};
use std::os::unix::fs::{FileExt, MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::SystemTime;

use crate::dirs::{Queue, QueueDirs, TEMP_PREFIX, sync_dir};
use crate::format::{Envelope, HEADER_LEN, MAGIC, REC_CONTENT, REC_END, VERSION, encode_envelope};
use crate::id::QueueId;

/// Per-process counter that makes temporary file names unique within a process.
static TEMP_COUNTER: AtomicU64 = AtomicU64::new(0);

/// How many temporary names to try before giving up (a name can only be
/// taken by a stale file of an earlier process with the same pid).
const TEMP_ATTEMPTS: u32 = 100;

/// Writes a new queue file (cleanup). Creates `incoming/.tmp-<pid>-<n>` with
/// O_EXCL, mode 0660 ([`QueueFileWriter::FILE_MODE`]); assigns the queue id at create time (from time + the
/// tmp file's inode). Dropping it without `commit` removes the temporary file.
pub struct QueueFileWriter {
    out: Option<BufWriter<File>>,
    dir: PathBuf,
    tmp_path: PathBuf,
    id: QueueId,
    state: State,
    /// Bytes handed to `out` so far (the logical file size).
    pos: u64,
    /// File offset of the content length placeholder.
    len_offset: u64,
    content_len: u64,
    /// Set once the temporary file no longer needs removing.
    finished: bool,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum State {
    /// Header written, envelope not yet.
    Fresh,
    /// Envelope and content record header written; content may follow.
    Content,
    /// A write failed: the file is in an unknown state and must not be committed.
    Failed,
}

impl QueueFileWriter {
    /// Mode of every queue file (docs/security.md: postern-cleanup:postern
    /// 0660): the writer reads and writes, the group (qmgr, or pickup for
    /// maildrop/) reads and marks recipients done, others nothing.
    pub const FILE_MODE: u32 = 0o660;

    /// Starts a new queue file in incoming/.
    pub fn create(dirs: &QueueDirs) -> io::Result<QueueFileWriter> {
        QueueFileWriter::create_in(dirs, Queue::Incoming)
    }

    /// Starts a new queue file in any queue directory; the local submission
    /// path uses this to write into maildrop/ with the same discipline.
    pub fn create_in(dirs: &QueueDirs, queue: Queue) -> io::Result<QueueFileWriter> {
        let dir = dirs.dir(queue);
        let pid = std::process::id();
        let mut last_err = None;
        for _ in 0..TEMP_ATTEMPTS {
            let n = TEMP_COUNTER.fetch_add(1, Ordering::Relaxed);
            let tmp_path = dir.join(format!("{TEMP_PREFIX}{pid}-{n}"));
            let file = match OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o600)
                .open(&tmp_path)
            {
                Ok(f) => f,
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
                    last_err = Some(e);
                    continue;
                }
                Err(e) => return Err(e),
            };
            // The open mode was filtered by the umask: set the exact mode on
            // the descriptor. On failure the file is removed before returning.
            if let Err(e) = file.set_permissions(fs::Permissions::from_mode(Self::FILE_MODE)) {
                drop(file);
                let _ = fs::remove_file(&tmp_path);
                return Err(e);
            }
            let mut w = QueueFileWriter {
                out: None,
                dir,
                tmp_path,
                id: QueueId::from_parts(SystemTime::now(), 0),
                state: State::Fresh,
                pos: 0,
                len_offset: 0,
                content_len: 0,
                finished: false,
            };
            // From here on, Drop removes the temporary file on any error.
            let inode = file.metadata()?.ino();
            w.id = QueueId::from_parts(SystemTime::now(), inode);
            w.out = Some(BufWriter::with_capacity(64 * 1024, file));
            let mut header = MAGIC.to_vec();
            header.push(VERSION);
            w.write_raw(&header)?;
            debug_assert_eq!(w.pos, HEADER_LEN);
            return Ok(w);
        }
        Err(last_err.unwrap_or_else(|| io::Error::other("no free temporary queue file name")))
    }

    /// The ID this message will have once committed (log it from now on).
    pub fn queue_id(&self) -> &QueueId {
        &self.id
    }

    /// Path of the temporary file (for diagnostics).
    pub fn temp_path(&self) -> &Path {
        &self.tmp_path
    }

    fn write_raw(&mut self, bytes: &[u8]) -> io::Result<()> {
        let Some(out) = self.out.as_mut() else {
            return Err(io::Error::other("queue file writer already closed"));
        };
        match out.write_all(bytes) {
            Ok(()) => {
                self.pos += bytes.len() as u64;
                Ok(())
            }
            Err(e) => {
                self.state = State::Failed;
                Err(e)
            }
        }
    }

    /// Writes T, A*, S, R* records (D for recipients already marked done),
    /// then starts the content record. Must be called exactly once, before
    /// content. An envelope the reader could not read back (no recipient, a
    /// NUL in an address, an attribute name with '=', an oversized record)
    /// is refused with InvalidInput and nothing is written.
    pub fn write_envelope(&mut self, env: &Envelope) -> io::Result<()> {
        match self.state {
            State::Fresh => {}
            State::Content => {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidInput,
                    "envelope already written",
                ));
            }
            State::Failed => return Err(failed()),
        }
        let (mut bytes, _) = encode_envelope(env)?;
        bytes.push(REC_CONTENT);
        let len_offset = self.pos + bytes.len() as u64;
        bytes.extend_from_slice(&0u64.to_be_bytes());
        self.write_raw(&bytes)?;
        self.len_offset = len_offset;
        self.state = State::Content;
        Ok(())
    }

    /// Appends content bytes (LF line endings, header then body), buffered.
    pub fn write_content(&mut self, bytes: &[u8]) -> io::Result<()> {
        match self.state {
            State::Content => {}
            State::Fresh => {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidInput,
                    "content written before envelope",
                ));
            }
            State::Failed => return Err(failed()),
        }
        self.write_raw(bytes)?;
        self.content_len += bytes.len() as u64;
        Ok(())
    }

    /// Content bytes written so far (for message_size_limit checks).
    pub fn content_len(&self) -> u64 {
        self.content_len
    }

    /// Ends the content, patches its length, writes 'E', flushes, fsync(file),
    /// renames tmp → incoming/ID without replacing an existing file
    /// (renameat2 RENAME_NOREPLACE; on EINVAL fall back to link()+unlink()),
    /// fsync(incoming dir). Only after this returns Ok may anyone tell the
    /// client the mail is accepted. On error nothing is left in the queue.
    pub fn commit(mut self) -> io::Result<QueueId> {
        match self.state {
            State::Content => {}
            State::Fresh => {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidInput,
                    "commit before envelope",
                ));
            }
            State::Failed => return Err(failed()),
        }
        let out = self
            .out
            .take()
            .ok_or_else(|| io::Error::other("queue file writer already closed"))?;
        let file = out.into_inner().map_err(|e| e.into_error())?;
        file.write_all_at(&self.content_len.to_be_bytes(), self.len_offset)?;
        file.write_all_at(&[REC_END, 0, 0, 0, 0], self.pos)?;
        file.sync_all()?;
        let final_path = self.dir.join(self.id.as_str());
        rename_noreplace(&self.tmp_path, &final_path)?;
        self.finished = true;
        if let Err(e) = sync_rename(&self.dir, &file) {
            // We cannot promise durability: take the file back so the client
            // retries instead of believing a possibly lost acceptance.
            let _ = fs::remove_file(&final_path);
            return Err(e);
        }
        Ok(self.id.clone())
    }

    /// Removes the temporary file (also done by Drop when neither commit nor abort ran).
    pub fn abort(self) {
        drop(self);
    }
}

impl Drop for QueueFileWriter {
    fn drop(&mut self) {
        if !self.finished {
            // Close before unlinking; errors are irrelevant, the file goes away.
            drop(self.out.take().map(BufWriter::into_parts));
            let _ = fs::remove_file(&self.tmp_path);
        }
    }
}

/// Makes the rename into `dir` durable: fsync of the directory, or, when the
/// writer has no read permission on it (cleanup on incoming/ 0730, postdrop
/// on maildrop/ 1730), syncfs(2) of the file system through the file's own
/// descriptor, which also writes out the directory entry.
fn sync_rename(dir: &Path, file: &File) -> io::Result<()> {
    match sync_dir(dir) {
        Err(e) if e.kind() == io::ErrorKind::PermissionDenied => sync_fs_of(file),
        other => other,
    }
}

#[cfg(any(target_os = "linux", target_os = "android"))]
fn sync_fs_of(file: &File) -> io::Result<()> {
    nix::unistd::syncfs(file).map_err(io::Error::from)
}

#[cfg(not(any(target_os = "linux", target_os = "android")))]
fn sync_fs_of(_file: &File) -> io::Result<()> {
    // No per-file-system sync: flush everything (sync(2) cannot fail).
    nix::unistd::sync();
    Ok(())
}

fn failed() -> io::Error {
    io::Error::other("an earlier write to this queue file failed")
}

/// rename(2) that fails with AlreadyExists instead of replacing `to`.
fn rename_noreplace(from: &Path, to: &Path) -> io::Result<()> {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        use nix::errno::Errno;
        use nix::fcntl::{AT_FDCWD, RenameFlags, renameat2};
        match renameat2(AT_FDCWD, from, AT_FDCWD, to, RenameFlags::RENAME_NOREPLACE) {
            Ok(()) => return Ok(()),
            // The file system (or an old kernel) does not support the flag.
            Err(Errno::EINVAL) | Err(Errno::ENOSYS) => {}
            Err(e) => return Err(io::Error::from(e)),
        }
    }
    link_then_unlink(from, to)
}

/// The portable no-replace rename: link(2) refuses an existing target.
fn link_then_unlink(from: &Path, to: &Path) -> io::Result<()> {
    fs::hard_link(from, to)?;
    fs::remove_file(from)
}

#[cfg(test)]
mod tests {
    use super::*;

    use crate::format::Recipient;
    use std::time::{Duration, UNIX_EPOCH};

    fn envelope() -> Envelope {
        Envelope {
            arrival: UNIX_EPOCH + Duration::from_secs(1_712_345_678),
            sender: "sender@example.org".parse().unwrap(),
            recipients: vec![Recipient {
                address: "a@example.net".parse().unwrap(),
                original: "a@example.net".into(),
                notify: None,
                orcpt: None,
                done: false,
            }],
            attributes: vec![],
        }
    }

    fn write_one(dirs: &QueueDirs) -> io::Result<QueueId> {
        let mut w = QueueFileWriter::create(dirs)?;
        w.write_envelope(&envelope())?;
        w.write_content(b"Subject: t\n\nbody\n")?;
        w.commit()
    }

    /// Environment variable naming the queue root for the helper below.
    const HELPER_ENV: &str = "POSTERN_QUEUE_WRITER_HELPER_ROOT";

    #[test]
    fn queue_files_are_0660_whatever_the_umask() {
        use nix::sys::stat::{Mode, umask};
        let tmp = tempfile::tempdir().expect("tempdir");
        let dirs = QueueDirs::new(tmp.path());
        dirs.create_all().expect("create");
        let old = umask(Mode::from_bits_truncate(0o077));
        let res = write_one(&dirs);
        umask(old);
        let id = res.expect("write");
        let meta = fs::metadata(dirs.file(Queue::Incoming, &id)).expect("stat");
        assert_eq!(meta.mode() & 0o7777, QueueFileWriter::FILE_MODE);
        assert_eq!(QueueFileWriter::FILE_MODE, 0o660);
    }

    #[test]
    fn sync_fs_fallback_works_on_a_file() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let f = File::create(tmp.path().join("f")).expect("create");
        sync_fs_of(&f).expect("syncfs");
    }

    /// Not a test of its own: run by `commit_without_read_permission_on_incoming`
    /// as user nobody, it writes one queue file under the root named by
    /// HELPER_ENV and prints its ID.
    #[test]
    #[ignore = "helper, run as another user by commit_without_read_permission_on_incoming"]
    fn helper_write_one_queue_file() {
        let Some(root) = std::env::var_os(HELPER_ENV) else {
            return;
        };
        let dirs = QueueDirs::new(PathBuf::from(root));
        assert!(
            fs::read_dir(dirs.dir(Queue::Incoming)).is_err(),
            "the helper must not be able to list incoming/"
        );
        let id = write_one(&dirs).expect("commit as a writer without read permission");
        println!("HELPER-ID {id}");
    }

    /// The writer as cleanup really runs: write+search but no read permission
    /// on incoming/ (mode 0730, group member). Needs root to set up and
    /// runuser to become `nobody`; skipped otherwise.
    #[test]
    fn commit_without_read_permission_on_incoming() {
        use std::process::Command;
        if !nix::unistd::geteuid().is_root() {
            eprintln!("skipped: needs root to run the writer as another user");
            return;
        }
        let runuser = ["/usr/sbin/runuser", "/sbin/runuser"]
            .into_iter()
            .find(|p| Path::new(p).is_file());
        let nobody = nix::unistd::User::from_name("nobody").ok().flatten();
        let (Some(runuser), Some(nobody)) = (runuser, nobody) else {
            eprintln!("skipped: runuser or user nobody missing");
            return;
        };
        let exe = std::env::current_exe().expect("test binary");
        let tmp = tempfile::tempdir().expect("tempdir");
        fs::set_permissions(tmp.path(), fs::Permissions::from_mode(0o755)).expect("chmod");
        let dirs = QueueDirs::new(tmp.path().join("q"));
        dirs.create_all().expect("create");
        let incoming = dirs.dir(Queue::Incoming);
        nix::unistd::chown(
            &incoming,
            Some(nix::unistd::Uid::from_raw(0)),
            Some(nobody.gid),
        )
        .expect("chown");
        fs::set_permissions(&incoming, fs::Permissions::from_mode(0o730)).expect("chmod");
        let out = Command::new(runuser)
            .args(["-u", "nobody", "--"])
            .arg(&exe)
            .args([
                "--exact",
                "writer::tests::helper_write_one_queue_file",
                "--ignored",
                "--nocapture",
            ])
            .env(HELPER_ENV, dirs.root())
            .output()
            .expect("run helper");
        let stdout = String::from_utf8_lossy(&out.stdout);
        if !out.status.success() && fs::metadata(&exe).is_ok() {
            // The test binary itself may be out of reach for nobody (a
            // private target directory): that is an environment limit.
            let stderr = String::from_utf8_lossy(&out.stderr);
            if stderr.contains("Permission denied") && !stdout.contains("running 1 test") {
                eprintln!("skipped: nobody cannot run {}: {stderr}", exe.display());
                return;
            }
        }
        assert!(
            out.status.success(),
            "helper failed: {stdout}\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let id = stdout
            .lines()
            .find_map(|l| l.strip_prefix("HELPER-ID "))
            .and_then(QueueId::parse)
            .expect("helper printed a queue ID");
        let meta = fs::metadata(dirs.file(Queue::Incoming, &id)).expect("committed file");
        assert_eq!(meta.mode() & 0o7777, 0o660);
        assert_eq!(meta.uid(), nobody.uid.as_raw());
        let leftovers: Vec<_> = fs::read_dir(&incoming)
            .expect("list")
            .filter_map(Result::ok)
            .filter(|e| e.file_name().to_string_lossy().starts_with('.'))
            .collect();
        assert!(leftovers.is_empty(), "no temporary file left");
    }

    #[test]
    fn link_fallback_never_replaces() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let a = tmp.path().join("a");
        let b = tmp.path().join("b");
        fs::write(&a, b"new").expect("write");
        fs::write(&b, b"old").expect("write");
        let err = link_then_unlink(&a, &b).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::AlreadyExists);
        assert_eq!(fs::read(&b).expect("read"), b"old");
        assert!(a.exists());
        fs::remove_file(&b).expect("rm");
        link_then_unlink(&a, &b).expect("link");
        assert!(!a.exists());
        assert_eq!(fs::read(&b).expect("read"), b"new");
    }

    #[test]
    fn rename_noreplace_never_replaces() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let a = tmp.path().join("a");
        let b = tmp.path().join("b");
        fs::write(&a, b"new").expect("write");
        fs::write(&b, b"old").expect("write");
        let err = rename_noreplace(&a, &b).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::AlreadyExists);
        assert_eq!(fs::read(&b).expect("read"), b"old");
    }
}
