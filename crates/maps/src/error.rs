//! The one error type for reading lookup tables, aliases and users files.

use std::fmt;
use std::path::PathBuf;

/// Error reading a table: file, line (0 = whole file), reason. Display
/// "file:line: reason", or "file: reason" for the whole file.
///
/// It exists so that every caller (smtpd, local, `postern check`) can report
/// exactly where an administrator's file is wrong. When it comes from a lookup
/// (rather than from start-up) callers treat it as a temporary failure.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MapError {
    /// The file (or, for non-file tables, the table spec) at fault.
    pub file: PathBuf,
    /// 1-based line number; 0 when the problem is the whole file.
    pub line: usize,
    /// What is wrong, for a human.
    pub reason: String,
}

impl MapError {
    /// Builds an error; a short-hand used throughout the crate.
    pub fn new(file: impl Into<PathBuf>, line: usize, reason: impl Into<String>) -> MapError {
        MapError {
            file: file.into(),
            line,
            reason: reason.into(),
        }
    }
}

impl fmt::Display for MapError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.line == 0 {
            // The whole file: no line number (never ":0:").
            write!(f, "{}: {}", self.file.display(), self.reason)
        } else {
            write!(f, "{}:{}: {}", self.file.display(), self.line, self.reason)
        }
    }
}

impl std::error::Error for MapError {}

/// Reads a whole file as UTF-8, mapping failures to a [`MapError`] on line 0.
pub(crate) fn read_file(path: &std::path::Path) -> Result<String, MapError> {
    let bytes =
        std::fs::read(path).map_err(|e| MapError::new(path, 0, format!("cannot read: {e}")))?;
    String::from_utf8(bytes).map_err(|e| {
        MapError::new(
            path,
            0,
            format!(
                "not valid UTF-8 (byte offset {})",
                e.utf8_error().valid_up_to()
            ),
        )
    })
}

/// Splits text into "logical lines" as Postfix does for its tables: blank
/// lines and lines whose first non-blank character is '#' are ignored, a line
/// starting with white space continues the previous logical line. Yields
/// (first physical line number, joined text). A continuation with nothing to
/// continue is an error on its line.
pub(crate) fn logical_lines(text: &str) -> Result<Vec<(usize, String)>, (usize, String)> {
    let mut out: Vec<(usize, String)> = Vec::new();
    for (idx, raw) in text.lines().enumerate() {
        let lineno = idx + 1;
        let line = raw.strip_suffix('\r').unwrap_or(raw);
        let trimmed = line.trim_start();
        if trimmed.is_empty() || trimmed.starts_with('#') {
            continue;
        }
        if trimmed.len() != line.len() {
            match out.last_mut() {
                Some((_, cur)) => {
                    cur.push(' ');
                    cur.push_str(trimmed.trim_end());
                }
                None => {
                    return Err((
                        lineno,
                        "continuation line (starts with white space) without a preceding entry"
                            .into(),
                    ));
                }
            }
        } else {
            out.push((lineno, line.trim_end().to_string()));
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn display_has_file_and_line() {
        let e = MapError::new("/etc/aliases", 3, "bad");
        assert_eq!(e.to_string(), "/etc/aliases:3: bad");
        let e = MapError::new("/etc/aliases", 0, "cannot stat: No such file or directory");
        assert_eq!(
            e.to_string(),
            "/etc/aliases: cannot stat: No such file or directory"
        );
    }

    #[test]
    fn logical_lines_join_and_skip() {
        let t = "# c\na: b,\n  c\n\n   # indented comment\n\td\ne: f\r\n";
        let l = logical_lines(t).unwrap();
        assert_eq!(
            l,
            vec![(2, "a: b, c d".to_string()), (7, "e: f".to_string())]
        );
    }

    #[test]
    fn leading_continuation_is_error() {
        assert_eq!(logical_lines("\n  x\n").unwrap_err().0, 2);
    }
}
