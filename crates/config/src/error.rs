//! The one error type of the configuration crate.
//!
//! Bad configuration must stop start-up with the file, the line and the
//! reason, so every error carries all three.

use std::fmt;
use std::path::PathBuf;

/// A configuration error: which file, which line (0 = not line specific,
/// e.g. a default value or a master.cf `-o` override) and why.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConfigError {
    /// The file the bad setting came from (main.cf or master.cf).
    pub file: PathBuf,
    /// 1-based line of the logical line that is wrong; 0 when not line specific.
    pub line: usize,
    /// What is wrong, in Postfix's words where Postfix has words for it.
    pub reason: String,
}

impl ConfigError {
    /// Builds an error; a small helper so call sites stay one line long.
    pub fn new(file: impl Into<PathBuf>, line: usize, reason: impl Into<String>) -> ConfigError {
        ConfigError {
            file: file.into(),
            line,
            reason: reason.into(),
        }
    }
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.line == 0 {
            write!(f, "{}: {}", self.file.display(), self.reason)
        } else {
            write!(f, "{}:{}: {}", self.file.display(), self.line, self.reason)
        }
    }
}

impl std::error::Error for ConfigError {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn display_with_and_without_line() {
        let e = ConfigError::new("/etc/postern/main.cf", 12, "bad thing");
        assert_eq!(e.to_string(), "/etc/postern/main.cf:12: bad thing");
        let e = ConfigError::new("/etc/postern/main.cf", 0, "bad thing");
        assert_eq!(e.to_string(), "/etc/postern/main.cf: bad thing");
    }
}
