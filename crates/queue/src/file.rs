//! Reading an existing queue file and marking recipients done in place.
//!
//! qmgr opens files in active/ with [`QueueFile::open`]; a delivery agent
//! that was handed only the descriptor uses [`QueueFile::from_file`] or
//! [`content_reader_for`]. All reads are positional (pread), so several
//! readers can share one descriptor without moving each other's offset.
//!
//! The only modification ever made to a committed queue file is
//! [`QueueFile::mark_done`]: one byte per recipient, `R` → `D`, followed by
//! a single `fdatasync`.

use std::fs::{File, OpenOptions};
use std::io::{self, Read};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use crate::format::{Envelope, QueueError, REC_DONE, parse};
use crate::id::QueueId;

/// An open queue file (qmgr reads it from active/; local gets it as an fd).
#[derive(Debug)]
pub struct QueueFile {
    file: File,
    id: QueueId,
    version: u8,
    envelope: Envelope,
    rcpt_offsets: Vec<u64>,
    content_offset: u64,
    content_len: u64,
}

impl QueueFile {
    /// Opens `path` read+write and parses it. `Corrupt` means: move it to corrupt/.
    pub fn open(path: &Path, id: QueueId) -> Result<QueueFile, QueueError> {
        let file = OpenOptions::new().read(true).write(true).open(path)?;
        QueueFile::from_file(file, id)
    }

    /// Parses an already open queue file (e.g. a descriptor received over a
    /// socket). Needs write access only for [`QueueFile::mark_done`].
    pub fn from_file(file: File, id: QueueId) -> Result<QueueFile, QueueError> {
        let p = parse(&file)?;
        Ok(QueueFile {
            file,
            id,
            version: p.version,
            envelope: p.envelope,
            rcpt_offsets: p.rcpt_offsets,
            content_offset: p.content_offset,
            content_len: p.content_len,
        })
    }

    /// The message's queue ID (for log lines).
    pub fn id(&self) -> &QueueId {
        &self.id
    }

    /// The format version the file was written in ([`crate::VERSION`] or
    /// an older one still read), for readers whose meaning changed.
    pub fn version(&self) -> u8 {
        self.version
    }

    /// Sender, recipients with their done flags, arrival time, attributes.
    pub fn envelope(&self) -> &Envelope {
        &self.envelope
    }

    /// The open file, to pass the descriptor to a delivery agent.
    pub fn file(&self) -> &File {
        &self.file
    }

    /// File offset of the first content byte.
    pub fn content_offset(&self) -> u64 {
        self.content_offset
    }

    /// Length of the content in bytes.
    pub fn content_len(&self) -> u64 {
        self.content_len
    }

    /// Reads the whole content into memory (tests and small uses).
    pub fn read_content(&self) -> io::Result<Vec<u8>> {
        let mut out = Vec::new();
        self.content_reader().read_to_end(&mut out)?;
        Ok(out)
    }

    /// A reader over the content range (pread based, does not move other readers).
    pub fn content_reader(&self) -> ContentReader<'_> {
        content_reader_for(&self.file, self.content_offset, self.content_len)
    }

    /// Indexes of recipients not yet done.
    pub fn pending(&self) -> Vec<usize> {
        self.envelope
            .recipients
            .iter()
            .enumerate()
            .filter(|(_, r)| !r.done)
            .map(|(i, _)| i)
            .collect()
    }

    /// Marks recipients done: writes 'D' over each one's type byte (pwrite),
    /// then ONE fdatasync. Idempotent. Updates the in-memory envelope only
    /// once the marks are durable. An index out of range is InvalidInput
    /// and nothing is written.
    pub fn mark_done(&mut self, indexes: &[usize]) -> io::Result<()> {
        let marks = self.prepare_done(indexes)?;
        marks.write()?;
        self.record_done(&marks);
        Ok(())
    }

    /// The first half of [`QueueFile::mark_done`] for callers that do the
    /// slow part (the fdatasync) off their event loop: collects what to
    /// write, with a duplicate of the descriptor. Write it with
    /// [`DoneMarks::write`], then call [`QueueFile::record_done`].
    pub fn prepare_done(&self, indexes: &[usize]) -> io::Result<DoneMarks> {
        let count = self.envelope.recipients.len();
        if let Some(bad) = indexes.iter().find(|&&i| i >= count) {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("recipient index {bad} out of range ({count} recipients)"),
            ));
        }
        let mut todo: Vec<usize> = indexes
            .iter()
            .copied()
            .filter(|&i| !self.envelope.recipients[i].done)
            .collect();
        todo.sort_unstable();
        todo.dedup();
        Ok(DoneMarks {
            file: self.file.try_clone()?,
            offsets: todo.iter().map(|&i| self.rcpt_offsets[i]).collect(),
            indexes: todo,
        })
    }

    /// Records in memory that marks written by [`DoneMarks::write`] are durable.
    pub fn record_done(&mut self, marks: &DoneMarks) {
        for &i in &marks.indexes {
            if let Some(r) = self.envelope.recipients.get_mut(i) {
                r.done = true;
            }
        }
    }

    /// True when no recipient is left: the file may be removed.
    pub fn all_done(&self) -> bool {
        self.envelope.recipients.iter().all(|r| r.done)
    }
}

/// Content access for a delivery agent that only has an fd: pread-based
/// reader of [offset, offset+len). A file shorter than promised is an
/// `UnexpectedEof` error, never a silently short message.
#[derive(Debug, Clone)]
pub struct ContentReader<'a> {
    file: &'a File,
    pos: u64,
    end: u64,
}

/// Builds a [`ContentReader`] from a descriptor and the range qmgr sent along.
pub fn content_reader_for(file: &File, offset: u64, len: u64) -> ContentReader<'_> {
    ContentReader {
        file,
        pos: offset,
        end: offset.saturating_add(len),
    }
}

impl ContentReader<'_> {
    /// Bytes not yet read.
    pub fn remaining(&self) -> u64 {
        self.end - self.pos
    }
}

impl Read for ContentReader<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let left = self.end - self.pos;
        if left == 0 || buf.is_empty() {
            return Ok(0);
        }
        let n = usize::try_from(left).map_or(buf.len(), |l| l.min(buf.len()));
        let got = self.file.read_at(&mut buf[..n], self.pos)?;
        if got == 0 {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "queue file shorter than its content length",
            ));
        }
        self.pos += got as u64;
        Ok(got)
    }
}

/// The marker file that holds a deferred message's next attempt time when
/// the queue file itself belongs to another user: `DIR/.next-ID`.
///
/// Only a file's owner may set its modification time to an arbitrary value;
/// with privilege separation queue files belong to cleanup, while qmgr (which
/// owns deferred/) schedules retries. The marker is a hint, not state that
/// must survive a crash: a missing or stale one only makes a retry early.
pub fn next_attempt_marker(path: &Path) -> PathBuf {
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    path.with_file_name(format!(".next-{name}"))
}

fn set_mtime(path: &Path, when: SystemTime) -> io::Result<()> {
    use nix::fcntl::AT_FDCWD;
    use nix::sys::stat::{UtimensatFlags, utimensat};
    use nix::sys::time::TimeSpec;
    let since = when.duration_since(UNIX_EPOCH).unwrap_or_default();
    let secs = libc::time_t::try_from(since.as_secs()).unwrap_or(libc::time_t::MAX);
    let mtime = TimeSpec::new(secs, libc::c_long::from(since.subsec_nanos() as i32));
    utimensat(
        AT_FDCWD,
        path,
        &TimeSpec::UTIME_NOW,
        &mtime,
        UtimensatFlags::NoFollowSymlink,
    )
    .map_err(io::Error::from)
}

/// Records when a deferred message is due again (Postfix keeps it in the
/// file's mtime; so do we when we own the file, else in its marker).
pub fn set_next_attempt(path: &Path, when: SystemTime) -> io::Result<()> {
    match set_mtime(path, when) {
        Ok(()) => {
            // A marker from an earlier deferral would now be stale.
            let _ = std::fs::remove_file(next_attempt_marker(path));
            Ok(())
        }
        Err(e) if e.kind() == io::ErrorKind::PermissionDenied => {
            let marker = next_attempt_marker(path);
            std::fs::OpenOptions::new()
                .write(true)
                .create(true)
                .truncate(false)
                .open(&marker)?;
            set_mtime(&marker, when)
        }
        Err(e) => Err(e),
    }
}

/// When a deferred message is due (see [`set_next_attempt`]).
pub fn next_attempt(path: &Path) -> io::Result<SystemTime> {
    match std::fs::symlink_metadata(next_attempt_marker(path)) {
        Ok(m) => m.modified(),
        Err(_) => std::fs::symlink_metadata(path)?.modified(),
    }
}

/// Forgets a message's next attempt time (it left deferred/).
pub fn clear_next_attempt(path: &Path) {
    let _ = std::fs::remove_file(next_attempt_marker(path));
}

/// "Done" marks ready to be written to a queue file from any thread (see
/// [`QueueFile::prepare_done`]).
#[derive(Debug)]
pub struct DoneMarks {
    file: File,
    offsets: Vec<u64>,
    indexes: Vec<usize>,
}

impl DoneMarks {
    /// Writes 'D' over each recipient record's type byte, then one fdatasync.
    pub fn write(&self) -> io::Result<()> {
        if self.offsets.is_empty() {
            return Ok(());
        }
        self.write_unsynced()?;
        self.file.sync_data()
    }

    /// Writes the marks without the fdatasync: for a message's last
    /// recipients, when the file is unlinked right after. A crashed process
    /// loses nothing (the marks are in the page cache); a crashed machine
    /// may lose them and deliver those recipients again (at least once, as
    /// Postfix, which never syncs its done marks).
    pub fn write_unsynced(&self) -> io::Result<()> {
        for &off in &self.offsets {
            self.file.write_all_at(&[REC_DONE], off)?;
        }
        Ok(())
    }

    /// The recipient indexes these marks cover.
    pub fn indexes(&self) -> &[usize] {
        &self.indexes
    }
}
