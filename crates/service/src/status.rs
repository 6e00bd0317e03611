//! The status record a service writes to master on its status pipe.
//!
//! One pipe per service; every child of that service holds the write end as
//! fd 4. A record is 9 bytes: `[pid u32 LE][generation u32 LE][status u8]`
//! with status 1 = idle/available, 0 = busy. 9 bytes is below PIPE_BUF, so
//! concurrent writers never interleave. master counts a child as idle from
//! spawn until it reports busy, and from its next "idle" record on.

use std::fs::File;
use std::io::Write;

/// Length of one status record on the pipe.
pub const STATUS_RECORD_LEN: usize = 9;

/// One child's report to master.
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
        b[8] = u8::from(self.available);
        b
    }

    /// Parses the wire form; a status byte other than 0 or 1 is an error
    /// (something other than a service wrote to the pipe).
    pub fn decode(b: &[u8; STATUS_RECORD_LEN]) -> Result<StatusRecord, String> {
        let pid = u32::from_le_bytes([b[0], b[1], b[2], b[3]]);
        let generation = u32::from_le_bytes([b[4], b[5], b[6], b[7]]);
        let available = match b[8] {
            0 => false,
            1 => true,
            other => return Err(format!("bad status byte {other} from pid {pid}")),
        };
        Ok(StatusRecord {
            pid,
            generation,
            available,
        })
    }
}

/// Splits a byte stream read from a status pipe into records; returns the
/// records and leaves a trailing partial record in `buf`.
pub fn drain_records(buf: &mut Vec<u8>) -> Vec<Result<StatusRecord, String>> {
    let whole = buf.len() - buf.len() % STATUS_RECORD_LEN;
    let out = buf[..whole]
        .chunks_exact(STATUS_RECORD_LEN)
        .map(|c| {
            let mut rec = [0u8; STATUS_RECORD_LEN];
            rec.copy_from_slice(c);
            StatusRecord::decode(&rec)
        })
        .collect();
    buf.drain(..whole);
    out
}

/// The child side: writes idle/busy records to master (no-op when the
/// service runs without master, i.e. fd 4 was not open).
#[derive(Debug)]
pub struct StatusReporter {
    pipe: Option<std::sync::Arc<File>>,
    generation: u32,
}

impl StatusReporter {
    /// A reporter writing to `pipe` with the given generation.
    pub fn new(pipe: Option<std::sync::Arc<File>>, generation: u32) -> StatusReporter {
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
        let mut buf = vec![0u8; 18];
        let mut rf = File::from(r);
        std::io::Read::read_exact(&mut rf, &mut buf).unwrap();
        let recs = drain_records(&mut buf);
        assert!(!recs[0].as_ref().unwrap().available);
        assert!(recs[1].as_ref().unwrap().available);
        assert_eq!(recs[1].as_ref().unwrap().generation, 3);
        assert_eq!(recs[1].as_ref().unwrap().pid, std::process::id());
        StatusReporter::new(None, 0).idle(); // no pipe: no-op
    }
}
