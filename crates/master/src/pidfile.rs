//! master's pid file: QUEUE_DIR/pid/master.pid, Postfix format ("%10d\n").
//!
//! The file is held with an exclusive flock(2) for master's whole life, so
//! "is master running?" is answered by the lock, not by a pid that may have
//! been reused: a second master fails to take the lock, and `postern stop`
//! knows master is gone once the lock is free.

use std::fs::{File, OpenOptions};
use std::io::{Read, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use nix::errno::Errno;
use nix::fcntl::{Flock, FlockArg};

/// Message of a second master (Postfix's wording).
pub const ALREADY_RUNNING: &str = "the Postern mail system is already running";

/// Where the pid file lives below the queue directory.
pub fn pid_file_path(queue_dir: &Path) -> PathBuf {
    queue_dir.join("pid").join("master.pid")
}

/// The locked pid file of the running master.
#[derive(Debug)]
pub struct PidFile {
    path: PathBuf,
    lock: Flock<File>,
}

impl PidFile {
    /// Locks the pid file and writes this process's pid into it. Fails with
    /// [`ALREADY_RUNNING`] when another process holds the lock.
    pub fn acquire(path: &Path) -> Result<PidFile, String> {
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .mode(0o644)
            .open(path)
            .map_err(|e| format!("open {}: {e}", path.display()))?;
        let mut lock = match Flock::lock(file, FlockArg::LockExclusiveNonblock) {
            Ok(l) => l,
            Err((_, Errno::EWOULDBLOCK)) => return Err(ALREADY_RUNNING.to_string()),
            Err((_, e)) => return Err(format!("lock {}: {e}", path.display())),
        };
        let text = format!("{:>10}\n", std::process::id());
        lock.set_len(0)
            .and_then(|()| lock.write_all(text.as_bytes()))
            .and_then(|()| lock.sync_all())
            .map_err(|e| format!("write {}: {e}", path.display()))?;
        Ok(PidFile {
            path: path.to_path_buf(),
            lock,
        })
    }

    /// Removes the file, then releases the lock (on exit).
    pub fn remove(self) {
        let _ = std::fs::remove_file(&self.path);
        drop(self.lock);
    }
}

/// The pid of the process holding the pid file's lock, if any. A missing
/// or unlocked (stale) file means nothing is running.
pub fn read_running(path: &Path) -> Result<Option<i32>, String> {
    // A master that has just taken the lock may not have written its pid
    // yet: retry briefly on an empty file.
    for _ in 0..50 {
        let file = match File::open(path) {
            Ok(f) => f,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(format!("open {}: {e}", path.display())),
        };
        let mut file = match Flock::lock(file, FlockArg::LockSharedNonblock) {
            Ok(_unlocked_again_on_drop) => return Ok(None),
            Err((f, Errno::EWOULDBLOCK)) => f,
            Err((_, e)) => return Err(format!("lock {}: {e}", path.display())),
        };
        let mut text = String::new();
        file.read_to_string(&mut text)
            .map_err(|e| format!("read {}: {e}", path.display()))?;
        let trimmed = text.trim();
        if trimmed.is_empty() {
            std::thread::sleep(std::time::Duration::from_millis(10));
            continue;
        }
        return match trimmed.parse::<i32>() {
            Ok(pid) if pid > 0 => Ok(Some(pid)),
            _ => Err(format!(
                "{}: bad pid file contents: {trimmed:?}",
                path.display()
            )),
        };
    }
    Err(format!("{}: locked but empty", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn acquire_write_lock_and_remove() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("master.pid");
        assert_eq!(read_running(&p).unwrap(), None);
        let pf = PidFile::acquire(&p).unwrap();
        let text = std::fs::read_to_string(&p).unwrap();
        assert_eq!(text.len(), 11);
        assert_eq!(text, format!("{:>10}\n", std::process::id()));
        // flock locks belong to the open file description: a second open in
        // the same process conflicts too, as a second master would.
        assert_eq!(PidFile::acquire(&p).unwrap_err(), ALREADY_RUNNING);
        assert_eq!(read_running(&p).unwrap(), Some(std::process::id() as i32));
        pf.remove();
        assert!(!p.exists());
        assert_eq!(read_running(&p).unwrap(), None);
    }

    #[test]
    fn stale_file_is_not_running() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("master.pid");
        std::fs::write(&p, "      4242\n").unwrap();
        assert_eq!(read_running(&p).unwrap(), None);
        // and can be taken over
        let pf = PidFile::acquire(&p).unwrap();
        assert!(
            std::fs::read_to_string(&p)
                .unwrap()
                .ends_with(&format!("{}\n", std::process::id()))
        );
        pf.remove();
    }

    #[test]
    fn garbage_in_locked_file_is_an_error() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("master.pid");
        let f = OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .open(&p)
            .unwrap();
        let mut l = Flock::lock(f, FlockArg::LockExclusiveNonblock).unwrap();
        l.write_all(b"junk\n").unwrap();
        assert!(
            read_running(&p)
                .unwrap_err()
                .contains("bad pid file contents")
        );
    }
}
