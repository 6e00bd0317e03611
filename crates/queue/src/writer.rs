//! Writing a new queue file durably (used by cleanup).
//!
//! The sequence is the one that makes "250 Ok: queued" true:
//! create `incoming/.tmp-PID-N` (O_EXCL, 0600) → write header, envelope and
//! content → patch the content length → write the end marker → `fsync(file)`
//! → `rename` to `incoming/ID` without replacing anything → `fsync(incoming/)`.
//! Until [`QueueFileWriter::commit`] returns `Ok`, nothing is accepted and a
//! crash leaves only a temporary file that `remove_stale_temp` deletes later.

use std::fs::{self, File, OpenOptions};
use std::io::{self, BufWriter, Write};
use std::os::unix::fs::{FileExt, MetadataExt, OpenOptionsExt};
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
/// O_EXCL, mode 0600; assigns the queue id at create time (from time + the
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
        drop(file);
        let final_path = self.dir.join(self.id.as_str());
        rename_noreplace(&self.tmp_path, &final_path)?;
        self.finished = true;
        if let Err(e) = sync_dir(&self.dir) {
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
