//! The records a service writes to master on its status pipe.
//!
//! One pipe per service; every child of that service holds the write end as
//! fd 4. Every record starts with `[pid u32 LE][generation u32 LE][kind u8]`:
//!
//! - kind 0 = busy, 1 = idle: nothing follows (9 bytes, [`StatusRecord`]).
//!   master counts a child as idle from spawn until it reports busy, and
//!   from its next "idle" record on.
//! - kind 2 = fatal: `[len u16 LE][len bytes of UTF-8]` follow, the text of
//!   the `fatal:` line the process logged just before exiting
//!   ([`FatalReport`], at most [`MAX_FATAL_TEXT`] bytes). master shows it in
//!   `postern status` when the service fails at start-up.
//! - every kind above 1 carries that u16 length, so a reader skips kinds it
//!   does not know (reported as an error) and stays in step.
//!
//! Each record is one write(2) below PIPE_BUF, so concurrent writers never
//! interleave.
//!
//! [`report_fatal`] is what `log::fatal` calls: it sends the fatal record on
//! the status pipe of the process's [`StatusReporter`], or, before the
//! skeleton made one (a bad main.cf), on fd 4 itself when master started the
//! process (`POSTERN_GENERATION` set and fd 4 a pipe). A program master did
//! not start has neither, and nothing is sent.

use std::fs::File;
use std::io::Write;
use std::sync::{Arc, Mutex, Weak};

use crate::fds::{GENERATION_ENV, STATUS_FD, take_inherited};

/// Length of one idle/busy record on the pipe.
pub const STATUS_RECORD_LEN: usize = 9;

/// Kind byte: the process is serving a client.
pub const KIND_BUSY: u8 = 0;
/// Kind byte: the process waits for a client.
pub const KIND_IDLE: u8 = 1;
/// Kind byte: the process is exiting with this fatal error.
pub const KIND_FATAL: u8 = 2;

/// Longest fatal text a record carries, in bytes (longer text is cut at a
/// character boundary). Header + length + text stays far below PIPE_BUF.
pub const MAX_FATAL_TEXT: usize = 1024;

/// Header of a record with a length: pid, generation, kind, u16 length.
const LONG_HEADER_LEN: usize = STATUS_RECORD_LEN + 2;

/// One child's idle/busy report to master.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct StatusRecord {
    /// The reporting child's process id.
    pub pid: u32,
    /// master's reload generation the child was started with (env POSTERN_GENERATION).
    pub generation: u32,
    /// true = idle, waiting for a client; false = busy.
    pub available: bool,
}

impl StatusRecord {
    /// The wire form.
    pub fn encode(&self) -> [u8; STATUS_RECORD_LEN] {
        let mut b = [0u8; STATUS_RECORD_LEN];
        b[0..4].copy_from_slice(&self.pid.to_le_bytes());
        b[4..8].copy_from_slice(&self.generation.to_le_bytes());
        b[8] = if self.available { KIND_IDLE } else { KIND_BUSY };
        b
    }

    /// Parses the wire form; a kind other than busy or idle is an error
    /// (use [`drain_messages`] for a stream that may hold other kinds).
    pub fn decode(b: &[u8; STATUS_RECORD_LEN]) -> Result<StatusRecord, String> {
        let (pid, generation) = header(b);
        let available = match b[8] {
            KIND_BUSY => false,
            KIND_IDLE => true,
            other => return Err(format!("bad status byte {other} from pid {pid}")),
        };
        Ok(StatusRecord {
            pid,
            generation,
            available,
        })
    }
}

/// A process's last words: the fatal error it logged before exiting 1.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FatalReport {
    /// The reporting process's id.
    pub pid: u32,
    /// master's reload generation the process was started with.
    pub generation: u32,
    /// The text after `fatal: `, one line, at most [`MAX_FATAL_TEXT`] bytes.
    pub message: String,
}

impl FatalReport {
    /// A report for this process; the text is made one line and cut to
    /// [`MAX_FATAL_TEXT`] bytes at a character boundary.
    pub fn new(pid: u32, generation: u32, message: &str) -> FatalReport {
        let mut text: String = message
            .chars()
            .map(|c| if c.is_control() { ' ' } else { c })
            .collect();
        if text.len() > MAX_FATAL_TEXT {
            let mut end = MAX_FATAL_TEXT;
            while !text.is_char_boundary(end) {
                end -= 1;
            }
            text.truncate(end);
        }
        FatalReport {
            pid,
            generation,
            message: text,
        }
    }

    /// The wire form (one write(2)).
    pub fn encode(&self) -> Vec<u8> {
        let text = self.message.as_bytes();
        let len = text.len().min(MAX_FATAL_TEXT);
        let mut b = Vec::with_capacity(LONG_HEADER_LEN + len);
        b.extend_from_slice(&self.pid.to_le_bytes());
        b.extend_from_slice(&self.generation.to_le_bytes());
        b.push(KIND_FATAL);
        // len <= MAX_FATAL_TEXT < u16::MAX.
        b.extend_from_slice(&(len as u16).to_le_bytes());
        b.extend_from_slice(&text[..len]);
        b
    }
}

/// One record read from a status pipe.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum StatusMessage {
    /// Idle or busy.
    Availability(StatusRecord),
    /// The process is exiting with this error.
    Fatal(FatalReport),
}

fn header(b: &[u8]) -> (u32, u32) {
    (
        u32::from_le_bytes([b[0], b[1], b[2], b[3]]),
        u32::from_le_bytes([b[4], b[5], b[6], b[7]]),
    )
}

/// Splits a byte stream read from a status pipe into records; returns them
/// in order and leaves a trailing partial record in `buf`. A record of an
/// unknown kind, a fatal record that is too long or not UTF-8 is consumed
/// and returned as an error, so the stream stays in step.
pub fn drain_messages(buf: &mut Vec<u8>) -> Vec<Result<StatusMessage, String>> {
    let mut out = Vec::new();
    let mut at = 0;
    loop {
        let rest = &buf[at..];
        if rest.len() < STATUS_RECORD_LEN {
            break;
        }
        let (pid, generation) = header(rest);
        match rest[8] {
            KIND_BUSY | KIND_IDLE => {
                out.push(Ok(StatusMessage::Availability(StatusRecord {
                    pid,
                    generation,
                    available: rest[8] == KIND_IDLE,
                })));
                at += STATUS_RECORD_LEN;
            }
            kind => {
                if rest.len() < LONG_HEADER_LEN {
                    break;
                }
                let len = usize::from(u16::from_le_bytes([rest[9], rest[10]]));
                if rest.len() < LONG_HEADER_LEN + len {
                    break;
                }
                let payload = &rest[LONG_HEADER_LEN..LONG_HEADER_LEN + len];
                out.push(match kind {
                    KIND_FATAL if len > MAX_FATAL_TEXT => Err(format!(
                        "fatal record of {len} bytes from pid {pid} (at most {MAX_FATAL_TEXT})"
                    )),
                    KIND_FATAL => match std::str::from_utf8(payload) {
                        Ok(text) => Ok(StatusMessage::Fatal(FatalReport::new(
                            pid, generation, text,
                        ))),
                        Err(_) => Err(format!("fatal record from pid {pid} is not UTF-8")),
                    },
                    other => Err(format!("unknown status record kind {other} from pid {pid}")),
                });
                at += LONG_HEADER_LEN + len;
            }
        }
    }
    buf.drain(..at);
    out
}

/// Like [`drain_messages`], keeping only the idle/busy records (and the
/// errors); fatal reports are dropped.
pub fn drain_records(buf: &mut Vec<u8>) -> Vec<Result<StatusRecord, String>> {
    drain_messages(buf)
        .into_iter()
        .filter_map(|m| match m {
            Ok(StatusMessage::Availability(r)) => Some(Ok(r)),
            Ok(StatusMessage::Fatal(_)) => None,
            Err(e) => Some(Err(e)),
        })
        .collect()
}

/// Where [`report_fatal`] writes: the status pipe of the last
/// [`StatusReporter`] made with one, while it is alive.
static FATAL_CHANNEL: Mutex<Option<(Weak<File>, u32)>> = Mutex::new(None);

/// The child side: writes idle/busy records to master (no-op when the
/// service runs without master, i.e. fd 4 was not open). Making one with a
/// pipe also makes that pipe where [`report_fatal`] sends this process's
/// fatal error.
#[derive(Debug)]
pub struct StatusReporter {
    pipe: Option<Arc<File>>,
    generation: u32,
}

impl StatusReporter {
    /// A reporter writing to `pipe` with the given generation.
    pub fn new(pipe: Option<Arc<File>>, generation: u32) -> StatusReporter {
        if let Some(p) = &pipe
            && let Ok(mut ch) = FATAL_CHANNEL.lock()
        {
            *ch = Some((Arc::downgrade(p), generation));
        }
        StatusReporter { pipe, generation }
    }

    /// Tells master this process is waiting for a client.
    pub fn idle(&self) {
        self.send(true);
    }

    /// Tells master this process is serving a client.
    pub fn busy(&self) {
        self.send(false);
    }

    fn send(&self, available: bool) {
        if let Some(pipe) = &self.pipe {
            let rec = StatusRecord {
                pid: std::process::id(),
                generation: self.generation,
                available,
            };
            // One write(2) of 9 bytes (< PIPE_BUF): atomic. An error means
            // master is gone; the master watcher handles that.
            let _ = (&**pipe).write(&rec.encode());
        }
    }
}

/// Tells master why this process is about to exit (`log::fatal` calls it
/// with the text after `fatal: `). Uses the status pipe of the live
/// [`StatusReporter`]; before there is one, fd 4 when master started this
/// process (`POSTERN_GENERATION` is set and fd 4 is a pipe nobody took);
/// otherwise nothing. Never fails: the process is exiting anyway.
pub fn report_fatal(message: &str) {
    let registered = FATAL_CHANNEL
        .lock()
        .ok()
        .and_then(|ch| ch.as_ref().and_then(|(w, g)| Some((w.upgrade()?, *g))));
    let (pipe, generation) = match registered {
        Some(found) => found,
        None => {
            let Some(generation) = std::env::var(GENERATION_ENV)
                .ok()
                .and_then(|g| g.parse::<u32>().ok())
            else {
                return;
            };
            let Some(fd) = take_inherited(STATUS_FD) else {
                return;
            };
            let is_pipe = nix::sys::stat::fstat(&fd)
                .is_ok_and(|st| st.st_mode & libc::S_IFMT == libc::S_IFIFO);
            if !is_pipe {
                return;
            }
            (Arc::new(File::from(fd)), generation)
        }
    };
    let rec = FatalReport::new(std::process::id(), generation, message).encode();
    let _ = (&*pipe).write(&rec);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip() {
        let r = StatusRecord {
            pid: 0x01020304,
            generation: 7,
            available: true,
        };
        let b = r.encode();
        assert_eq!(b, [4, 3, 2, 1, 7, 0, 0, 0, 1]);
        assert_eq!(StatusRecord::decode(&b).unwrap(), r);
        let r = StatusRecord {
            pid: 1,
            generation: u32::MAX,
            available: false,
        };
        assert_eq!(StatusRecord::decode(&r.encode()).unwrap(), r);
    }

    #[test]
    fn bad_status_byte() {
        let b = [1, 0, 0, 0, 0, 0, 0, 0, 2];
        assert_eq!(
            StatusRecord::decode(&b).unwrap_err(),
            "bad status byte 2 from pid 1"
        );
    }

    #[test]
    fn drain_keeps_partial() {
        let a = StatusRecord {
            pid: 5,
            generation: 1,
            available: false,
        }
        .encode();
        let mut buf = a.to_vec();
        buf.extend_from_slice(&a);
        buf.extend_from_slice(&a[..4]);
        let recs = drain_records(&mut buf);
        assert_eq!(recs.len(), 2);
        assert!(recs.iter().all(|r| r.as_ref().unwrap().pid == 5));
        assert_eq!(buf, a[..4].to_vec());
        buf.extend_from_slice(&a[4..]);
        assert_eq!(drain_records(&mut buf).len(), 1);
        assert!(buf.is_empty());
    }

    #[test]
    fn reporter_writes_records() {
        let (r, w) = nix::unistd::pipe().unwrap();
        let rep = StatusReporter::new(Some(std::sync::Arc::new(File::from(w))), 3);
        rep.busy();
        rep.idle();
        drop(rep);
        let mut buf = Vec::new();
        std::io::Read::read_to_end(&mut File::from(r), &mut buf).unwrap();
        // drain_records: a fatal report of a test running at the same time
        // may have landed here too (report_fatal uses the latest reporter).
        let recs = drain_records(&mut buf);
        assert!(!recs[0].as_ref().unwrap().available);
        assert!(recs[1].as_ref().unwrap().available);
        assert_eq!(recs[1].as_ref().unwrap().generation, 3);
        assert_eq!(recs[1].as_ref().unwrap().pid, std::process::id());
        StatusReporter::new(None, 0).idle(); // no pipe: no-op
    }

    #[test]
    fn fatal_reports_round_trip_between_availability_records() {
        let busy = StatusRecord {
            pid: 9,
            generation: 4,
            available: false,
        };
        let fatal = FatalReport::new(9, 4, "/etc/aliases: cannot stat: No such file");
        let mut buf = busy.encode().to_vec();
        buf.extend_from_slice(&fatal.encode());
        buf.extend_from_slice(&busy.encode());
        let msgs: Vec<StatusMessage> = drain_messages(&mut buf)
            .into_iter()
            .map(|m| m.unwrap())
            .collect();
        assert_eq!(
            msgs,
            vec![
                StatusMessage::Availability(busy),
                StatusMessage::Fatal(fatal.clone()),
                StatusMessage::Availability(busy),
            ]
        );
        assert!(buf.is_empty());
        // A partial fatal record waits for the rest; drain_records skips it.
        let wire = fatal.encode();
        let mut buf = wire[..12].to_vec();
        assert!(drain_messages(&mut buf).is_empty());
        assert_eq!(buf.len(), 12);
        buf.extend_from_slice(&wire[12..]);
        buf.extend_from_slice(&busy.encode());
        let recs = drain_records(&mut buf);
        assert_eq!(recs.len(), 1);
        assert_eq!(recs[0].as_ref().unwrap(), &busy);
    }

    #[test]
    fn fatal_text_is_one_line_and_bounded() {
        let r = FatalReport::new(1, 0, "a\nb\rc");
        assert_eq!(r.message, "a b c");
        let long = "é".repeat(MAX_FATAL_TEXT); // 2 bytes each
        let r = FatalReport::new(1, 0, &long);
        assert_eq!(r.message.len(), MAX_FATAL_TEXT);
        assert_eq!(r.encode().len(), LONG_HEADER_LEN + MAX_FATAL_TEXT);
        let r = FatalReport::new(1, 0, &"x".repeat(MAX_FATAL_TEXT + 1));
        assert_eq!(r.message.len(), MAX_FATAL_TEXT);
    }

    #[test]
    fn unknown_and_bad_records_are_skipped_in_step() {
        let idle = StatusRecord {
            pid: 3,
            generation: 0,
            available: true,
        };
        let mut buf = vec![3, 0, 0, 0, 0, 0, 0, 0, 7, 2, 0, b'h', b'i'];
        buf.extend_from_slice(&[3, 0, 0, 0, 0, 0, 0, 0, KIND_FATAL, 2, 0, 0xff, 0xfe]);
        let mut long = vec![3, 0, 0, 0, 0, 0, 0, 0, KIND_FATAL];
        long.extend_from_slice(&2000u16.to_le_bytes());
        long.extend(std::iter::repeat_n(b'x', 2000));
        buf.extend_from_slice(&long);
        buf.extend_from_slice(&idle.encode());
        let msgs = drain_messages(&mut buf);
        assert_eq!(msgs.len(), 4, "{msgs:?}");
        assert_eq!(
            msgs[0].as_ref().unwrap_err(),
            "unknown status record kind 7 from pid 3"
        );
        assert!(msgs[1].as_ref().unwrap_err().contains("not UTF-8"));
        assert!(msgs[2].as_ref().unwrap_err().contains("2000 bytes"));
        assert_eq!(msgs[3], Ok(StatusMessage::Availability(idle)));
    }

    #[test]
    fn report_fatal_uses_the_live_reporter_pipe() {
        // Other tests of this process make reporters too, and the latest
        // one is where report_fatal writes: try until ours was the latest.
        let want = |generation| {
            vec![Ok(StatusMessage::Fatal(FatalReport {
                pid: std::process::id(),
                generation,
                message: "cannot open the door".into(),
            }))]
        };
        let got = (0..50).any(|_| {
            let (r, w) = nix::unistd::pipe().unwrap();
            let rep = StatusReporter::new(Some(std::sync::Arc::new(File::from(w))), 6);
            report_fatal("cannot open the door");
            drop(rep);
            // End of file here also shows report_fatal keeps no copy of the pipe.
            let mut buf = Vec::new();
            std::io::Read::read_to_end(&mut File::from(r), &mut buf).unwrap();
            drain_messages(&mut buf) == want(6)
        });
        assert!(got);
    }
}
