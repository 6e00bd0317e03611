//! Queue IDs: the per-message name that is unique on this host.
//!
//! A queue ID is made when cleanup creates the temporary file of a new
//! message, from two things that together cannot repeat while the message
//! exists: the creation time in microseconds and the inode number of the
//! temporary file (the inode is kept by every later rename, because all
//! queue directories live on one file system, and no other file can hold it
//! while the message exists). This is Postfix's "long queue ID" idea.
//!
//! Layout: 11 characters of time (microseconds since the Unix epoch, base 32,
//! digits `0-9A-V`, fixed width) followed by the inode in base 36 (`0-9A-Z`,
//! 1 to 13 characters). Generated IDs therefore sort by creation time:
//! the fixed-width time comes first and the alphabet is in ASCII order.

use std::fmt;
use std::time::{SystemTime, UNIX_EPOCH};

/// Width of the time part of a generated queue ID.
const TIME_WIDTH: usize = 11;
/// Digits used by both encodings; base 32 uses the first 32 of them.
const DIGITS: &[u8; 36] = b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZ";
/// Shortest accepted queue ID (also accepts hand-made test IDs).
pub const MIN_ID_LEN: usize = 6;
/// Longest accepted queue ID.
pub const MAX_ID_LEN: usize = 32;

/// The name of one message in the queue, used as its file name in every
/// queue directory and logged at every step so one grep follows a message.
///
/// Only values that pass [`QueueId::parse`] can exist, so a `QueueId` is
/// always safe to join to a directory path (no `/`, no `.`, no `..`).
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct QueueId(String);

impl QueueId {
    /// Validates a queue ID read from a directory listing, a command line or
    /// the network: 6 to 32 characters of `[0-9A-Za-z]`.
    pub fn parse(s: &str) -> Option<QueueId> {
        let ok = (MIN_ID_LEN..=MAX_ID_LEN).contains(&s.len())
            && s.bytes().all(|b| b.is_ascii_alphanumeric());
        ok.then(|| QueueId(s.to_owned()))
    }

    /// Builds the ID for a file created at `time` with inode number `inode`.
    /// Public so every writer of queue-like files (cleanup, the maildrop
    /// writer) names files the same way.
    pub fn from_parts(time: SystemTime, inode: u64) -> QueueId {
        // Times before 1970 cannot happen on a sane host; map them to 0
        // rather than fail (uniqueness still comes from the inode).
        let micros = time
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_micros())
            .unwrap_or(0);
        let mut s = String::with_capacity(TIME_WIDTH + 13);
        // 32^11 microseconds is about 1100 years; wrap rather than grow so
        // the width stays fixed.
        let mut t = micros % (1u128 << (5 * TIME_WIDTH));
        let mut time_digits = [b'0'; TIME_WIDTH];
        for slot in time_digits.iter_mut().rev() {
            *slot = DIGITS[(t % 32) as usize];
            t /= 32;
        }
        s.extend(time_digits.iter().map(|&b| b as char));
        s.push_str(&base36(inode));
        QueueId(s)
    }

    /// The ID as text, for file names and log lines.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// Base-36 text of `n`, most significant digit first, at least one digit.
fn base36(mut n: u64) -> String {
    let mut out = Vec::with_capacity(13);
    loop {
        out.push(DIGITS[(n % 36) as usize]);
        n /= 36;
        if n == 0 {
            break;
        }
    }
    out.reverse();
    out.into_iter().map(char::from).collect()
}

impl fmt::Display for QueueId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for QueueId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "QueueId({})", self.0)
    }
}

impl AsRef<str> for QueueId {
    fn as_ref(&self) -> &str {
        &self.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn parse_accepts_alphanumerics_in_range() {
        assert!(QueueId::parse("ABC123").is_some());
        assert!(QueueId::parse("abcXYZ0123456789").is_some());
        assert!(QueueId::parse(&"A".repeat(32)).is_some());
    }

    #[test]
    fn parse_rejects_bad_input() {
        for bad in [
            "", "ABCDE", "ABC/DEF", "../ABCD", ".tmp-1-2", "ABC DEF", "ABCDÉF", "ABCDEF\n",
        ] {
            assert_eq!(QueueId::parse(bad), None, "{bad:?}");
        }
        assert_eq!(QueueId::parse(&"A".repeat(33)), None);
    }

    #[test]
    fn generated_ids_parse_and_have_expected_shape() {
        let t = UNIX_EPOCH + Duration::from_micros(1_700_000_000_123_456);
        for inode in [0u64, 1, 35, 36, 123_456_789, u64::MAX] {
            let id = QueueId::from_parts(t, inode);
            assert!(id.as_str().len() >= 12 && id.as_str().len() <= 24, "{id}");
            assert_eq!(QueueId::parse(id.as_str()), Some(id.clone()));
        }
        assert_eq!(QueueId::from_parts(UNIX_EPOCH, 0).as_str(), "000000000000");
        assert_eq!(QueueId::from_parts(UNIX_EPOCH, 35).as_str(), "00000000000Z");
        assert_eq!(
            QueueId::from_parts(UNIX_EPOCH, 36).as_str(),
            "0000000000010"
        );
        assert_eq!(
            QueueId::from_parts(UNIX_EPOCH + Duration::from_micros(33), 1).as_str(),
            "000000000111"
        );
    }

    #[test]
    fn ids_sort_by_time_first() {
        let t1 = UNIX_EPOCH + Duration::from_micros(1_700_000_000_000_001);
        let t2 = t1 + Duration::from_micros(1);
        let a = QueueId::from_parts(t1, u64::MAX);
        let b = QueueId::from_parts(t2, 1);
        assert!(a < b);
        let c = QueueId::from_parts(t2 + Duration::from_secs(86_400 * 365), 0);
        assert!(b < c);
    }

    #[test]
    fn distinct_inodes_give_distinct_ids() {
        let t = SystemTime::now();
        let ids: std::collections::HashSet<_> =
            (0..10_000u64).map(|i| QueueId::from_parts(t, i)).collect();
        assert_eq!(ids.len(), 10_000);
    }
}
