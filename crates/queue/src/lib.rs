//! The mail queue: directories, queue IDs, the queue file format, durable writes.
//!
//! This crate is the heart of "no mail is lost". It knows:
//! - the queue directories ([`QUEUE_DIRS`], [`QueueDirs`]) and the single
//!   rename that moves a message from one state to another;
//! - queue IDs ([`QueueId`]), unique on the host and sortable by time;
//! - queue file format v2 (v1 still read): [`QueueFileWriter`] writes a new file durably
//!   (tmp → fsync → rename without replace → fsync dir), [`QueueFile`] reads
//!   one strictly and marks recipients done in place;
//! - the defer log ([`defer_log`]): why each deferred recipient waits.
//!
//! The state machine, crash recovery rules and the byte layout are in
//! `docs/queue.md`.
//!
//! SECURITY: queue files are written by cleanup and read by qmgr and the
//! delivery agents; the reader still treats every byte as untrusted (a disk
//! error, a bad restore, a bug elsewhere) and reports
//! [`QueueError::Corrupt`] instead of panicking, so the caller can move the
//! file to corrupt/. All code is blocking; callers choose the thread.
#![forbid(unsafe_code)]

pub mod defer_log;
mod dirs;
mod file;
mod format;
mod id;
mod writer;

pub use dirs::{DirOwner, DirScan, DirSpec, QUEUE_DIRS, Queue, QueueDirs, TEMP_PREFIX, sync_dir};
pub use file::{
    ContentReader, DoneMarks, QueueFile, clear_next_attempt, content_reader_for, next_attempt,
    next_attempt_marker, set_next_attempt,
};
pub use format::{
    Envelope, HEADER_LEN, MAGIC, MAX_RECORD_LEN, OLDEST_VERSION, QueueError, REC_ATTR, REC_CONTENT,
    REC_DONE, REC_END, REC_RCPT, REC_SENDER, REC_TIME, Recipient, VERSION,
};
pub use id::{MAX_ID_LEN, MIN_ID_LEN, QueueId};
pub use writer::QueueFileWriter;
