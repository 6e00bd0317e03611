//! The defer log: why each recipient of a deferred message is waiting.
//!
//! qmgr keeps the latest temporary status of every recipient in memory
//! while it delivers; when it puts a message back in deferred/ it writes
//! those reasons to `defer/ID`, one line per deferred recipient,
//! `ADDRESS<TAB>REASON`, so that `mailq` / `postern queue list` can show
//! them as Postfix's mailq does. The file is written atomically (a
//! `defer/.tmp-ID` file, then `rename`) and removed when the message leaves
//! the queue. Like the next-attempt marker it is a hint, not state: a lost
//! or stale log only changes what mailq shows, never what is delivered, so
//! it is not fsync'd.
//!
//! SECURITY: `defer/` belongs to qmgr (docs/security.md); readers treat the
//! text as untrusted (a line without a tab is skipped). Control characters
//! in an address or reason are replaced by `?` when writing, so a line
//! cannot be split or forged by a remote server's reply text.

use std::fs;
use std::io;
use std::path::PathBuf;

use crate::dirs::{QueueDirs, TEMP_PREFIX};
use crate::id::QueueId;

/// The directory under `queue_directory` that holds the defer logs.
pub const DEFER_DIR: &str = "defer";

/// One line of a defer log: a recipient and why it was deferred.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DeferEntry {
    /// The recipient address as qmgr delivers to it.
    pub address: String,
    /// The temporary status text (e.g. `connect to mx[192.0.2.1]:25: Connection refused`).
    pub reason: String,
}

/// Path of message `id`'s defer log.
pub fn path(dirs: &QueueDirs, id: &QueueId) -> PathBuf {
    dirs.root().join(DEFER_DIR).join(id.as_str())
}

fn clean(s: &str) -> String {
    s.chars()
        .map(|c| if c.is_control() { '?' } else { c })
        .collect()
}

/// The file's text for `entries`: `ADDRESS<TAB>REASON\n` per entry, with
/// control characters (tab, newline) replaced by `?`.
pub fn format(entries: &[DeferEntry]) -> String {
    entries
        .iter()
        .map(|e| format!("{}\t{}\n", clean(&e.address), clean(&e.reason)))
        .collect()
}

/// Reads a defer log's text; lines without a tab are skipped.
pub fn parse(text: &str) -> Vec<DeferEntry> {
    text.lines()
        .filter_map(|l| {
            let (a, r) = l.split_once('\t')?;
            Some(DeferEntry {
                address: a.to_string(),
                reason: r.to_string(),
            })
        })
        .collect()
}

/// Replaces message `id`'s defer log with `entries` (temporary file, then
/// rename). An empty list removes the log.
pub fn write(dirs: &QueueDirs, id: &QueueId, entries: &[DeferEntry]) -> io::Result<()> {
    if entries.is_empty() {
        remove(dirs, id);
        return Ok(());
    }
    let target = path(dirs, id);
    let tmp = target.with_file_name(format!("{TEMP_PREFIX}{id}"));
    fs::write(&tmp, format(entries))?;
    fs::rename(&tmp, &target).inspect_err(|_| {
        let _ = fs::remove_file(&tmp);
    })
}

/// Message `id`'s defer log; empty when there is none.
pub fn read(dirs: &QueueDirs, id: &QueueId) -> io::Result<Vec<DeferEntry>> {
    match fs::read(path(dirs, id)) {
        Ok(b) => Ok(parse(&String::from_utf8_lossy(&b))),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(Vec::new()),
        Err(e) => Err(e),
    }
}

/// Removes message `id`'s defer log (it left the queue); a missing log is fine.
pub fn remove(dirs: &QueueDirs, id: &QueueId) {
    let _ = fs::remove_file(path(dirs, id));
}

/// The message IDs that have a defer log (for removing orphans).
pub fn list(dirs: &QueueDirs) -> io::Result<Vec<QueueId>> {
    let mut out = Vec::new();
    for e in fs::read_dir(dirs.root().join(DEFER_DIR))? {
        let name = e?.file_name();
        if let Some(id) = QueueId::parse(&name.to_string_lossy()) {
            out.push(id);
        }
    }
    out.sort();
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(a: &str, r: &str) -> DeferEntry {
        DeferEntry {
            address: a.into(),
            reason: r.into(),
        }
    }

    #[test]
    fn format_and_parse_round_trip_and_clean_control_characters() {
        let e = vec![
            entry(
                "a@x.test",
                "connect to mx[192.0.2.1]:25: Connection refused",
            ),
            entry("b\t@x.test", "two\nlines\there"),
        ];
        let text = format(&e);
        assert_eq!(
            text,
            "a@x.test\tconnect to mx[192.0.2.1]:25: Connection refused\n\
             b?@x.test\ttwo?lines?here\n"
        );
        assert_eq!(
            parse(&text),
            vec![e[0].clone(), entry("b?@x.test", "two?lines?here")]
        );
        assert_eq!(parse("no tab here\n\nc@d\t\n"), vec![entry("c@d", "")]);
    }

    #[test]
    fn write_read_remove() {
        let t = tempfile::tempdir().unwrap();
        let dirs = QueueDirs::new(t.path());
        dirs.create_all().unwrap();
        let id = QueueId::parse("ABCDEF123").unwrap();
        assert!(read(&dirs, &id).unwrap().is_empty());
        write(&dirs, &id, &[entry("a@b", "why")]).unwrap();
        assert_eq!(read(&dirs, &id).unwrap(), vec![entry("a@b", "why")]);
        assert_eq!(list(&dirs).unwrap(), vec![id.clone()]);
        write(&dirs, &id, &[entry("c@d", "later")]).unwrap();
        assert_eq!(read(&dirs, &id).unwrap(), vec![entry("c@d", "later")]);
        // No temporary file is left behind.
        assert_eq!(fs::read_dir(t.path().join(DEFER_DIR)).unwrap().count(), 1);
        write(&dirs, &id, &[]).unwrap();
        assert!(!path(&dirs, &id).exists());
        remove(&dirs, &id);
    }
}
