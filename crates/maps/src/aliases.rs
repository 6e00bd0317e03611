//! aliases(5) files and `.forward` / `:include:` target lists.
//!
//! Syntax (as Postfix reads /etc/aliases):
//! ```text
//! # comment
//! postmaster: root
//! "odd name": joe, "|/usr/bin/filter --opt, with comma", /var/log/mail-copy
//! list: :include:/etc/mail/list.members,
//!     continued@example.org
//! ```
//! Names are case-folded. A target is an address, `|command`, `/file`
//! (a path ending in `/` is a Maildir) or `:include:/path`. Commas inside
//! double quotes do not split; a target wholly in quotes is unquoted.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use crate::error::{MapError, logical_lines, read_file};

/// One target of an alias (aliases(5) / .forward syntax).
///
/// Local delivery needs to know which kind each target is because each kind is
/// delivered differently and allowed separately (allow_mail_to_commands,
/// allow_mail_to_files).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum AliasTarget {
    /// A mail address (local or remote), without angle brackets.
    Address(String),
    /// "|cmd args" without the `|`; run by the shell, text from the admin's file.
    Command(String),
    /// "/path": append to a file (or a Maildir when it ends in `/`).
    File(PathBuf),
    /// ":include:/path": more targets read from that file.
    Include(PathBuf),
}

/// Parsed /etc/aliases: "name: target, target" lines, continuation lines start with
/// white space, '#' comments, quoted targets ("|cmd with, comma"), names case-folded,
/// "name" may be quoted. Duplicate name: last wins + warning. Bad line → MapError with line.
#[derive(Clone, Debug, Default)]
pub struct Aliases {
    entries: BTreeMap<String, Vec<AliasTarget>>,
    warnings: Vec<String>,
}

impl Aliases {
    /// Parses aliases text; `path` is only used in errors and warnings.
    pub fn parse(text: &str, path: &Path) -> Result<Aliases, MapError> {
        let lines = logical_lines(text).map_err(|(l, r)| MapError::new(path, l, r))?;
        let mut out = Aliases::default();
        let mut first_line: BTreeMap<String, usize> = BTreeMap::new();
        for (lineno, line) in lines {
            let (name, rest) = split_name(&line).map_err(|r| MapError::new(path, lineno, r))?;
            let targets = parse_target_list(rest).map_err(|r| MapError::new(path, lineno, r))?;
            if targets.is_empty() {
                return Err(MapError::new(
                    path,
                    lineno,
                    format!("alias \"{name}\" has no targets"),
                ));
            }
            if let Some(prev) = first_line.insert(name.clone(), lineno) {
                out.warnings.push(format!(
                    "{}:{}: duplicate alias \"{}\" (first at line {}): the last one wins",
                    path.display(),
                    lineno,
                    name,
                    prev
                ));
            }
            out.entries.insert(name, targets);
        }
        Ok(out)
    }

    /// Reads and parses an aliases file.
    pub fn load(path: &Path) -> Result<Aliases, MapError> {
        Aliases::parse(&read_file(path)?, path)
    }

    /// The targets of `name` (case-insensitive), if it is an alias.
    pub fn lookup(&self, name: &str) -> Option<&[AliasTarget]> {
        self.entries.get(&name.to_lowercase()).map(|v| v.as_slice())
    }

    /// Non-fatal problems found while parsing (duplicates), for logging.
    pub fn warnings(&self) -> &[String] {
        &self.warnings
    }

    /// All alias names (lower-cased, sorted), for `postern` listings and checks.
    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.entries.keys().map(|s| s.as_str())
    }

    /// Number of aliases.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// True when the file defined no alias.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }
}

/// Splits `name: rest` where name may be double-quoted. Returns the case-folded name.
fn split_name(line: &str) -> Result<(String, &str), String> {
    if let Some(after) = line.strip_prefix('"') {
        let mut name = String::new();
        let mut chars = after.char_indices();
        let mut end = None;
        while let Some((i, c)) = chars.next() {
            match c {
                '\\' => match chars.next() {
                    Some((_, n)) => name.push(n),
                    None => return Err("unterminated quoted alias name".into()),
                },
                '"' => {
                    end = Some(i + 1);
                    break;
                }
                _ => name.push(c),
            }
        }
        let end = end.ok_or_else(|| "unterminated quoted alias name".to_string())?;
        let rest = after[end..].trim_start();
        let rest = rest
            .strip_prefix(':')
            .ok_or_else(|| "expected ':' after the alias name".to_string())?;
        if name.is_empty() {
            return Err("empty alias name".into());
        }
        return Ok((name.to_lowercase(), rest));
    }
    let (name, rest) = line
        .split_once(':')
        .ok_or_else(|| "expected \"name: target, ...\" (no ':' found)".to_string())?;
    let name = name.trim_end();
    if name.is_empty() {
        return Err("empty alias name".into());
    }
    if name.chars().any(|c| c.is_whitespace()) {
        return Err(format!(
            "alias name \"{name}\" contains white space (quote it)"
        ));
    }
    Ok((name.to_lowercase(), rest))
}

/// Splits a list on commas (and, when `newlines`, on line ends) outside double
/// quotes. Returns the raw, trimmed, non-empty pieces (quotes kept).
fn split_list(s: &str) -> Result<Vec<String>, String> {
    let mut out = Vec::new();
    let mut cur = String::new();
    let mut in_quotes = false;
    let mut chars = s.chars();
    while let Some(c) = chars.next() {
        match c {
            '\\' if in_quotes => {
                cur.push(c);
                if let Some(n) = chars.next() {
                    cur.push(n);
                }
            }
            '"' => {
                in_quotes = !in_quotes;
                cur.push(c);
            }
            ',' | '\n' if !in_quotes => {
                let t = cur.trim();
                if !t.is_empty() {
                    out.push(t.to_string());
                }
                cur.clear();
            }
            _ => cur.push(c),
        }
    }
    if in_quotes {
        return Err("unterminated double quote".into());
    }
    let t = cur.trim();
    if !t.is_empty() {
        out.push(t.to_string());
    }
    Ok(out)
}

/// Removes one level of double quotes (and backslash escapes inside them)
/// from a token that is wholly quoted; anything else is returned as is.
fn unquote(tok: &str) -> String {
    if tok.len() >= 2 && tok.starts_with('"') && tok.ends_with('"') {
        let inner = &tok[1..tok.len() - 1];
        let mut out = String::with_capacity(inner.len());
        let mut chars = inner.chars();
        while let Some(c) = chars.next() {
            if c == '\\' {
                if let Some(n) = chars.next() {
                    out.push(n);
                }
            } else {
                out.push(c);
            }
        }
        out
    } else {
        tok.to_string()
    }
}

/// Classifies one (unquoted) target.
fn classify(tok: &str) -> Result<AliasTarget, String> {
    let t = unquote(tok);
    let t = t.trim();
    if let Some(cmd) = t.strip_prefix('|') {
        let cmd = unquote(cmd.trim());
        if cmd.trim().is_empty() {
            return Err("empty command after '|'".into());
        }
        return Ok(AliasTarget::Command(cmd.trim().to_string()));
    }
    if let Some(rest) = t
        .get(..9)
        .filter(|h| h.eq_ignore_ascii_case(":include:"))
        .and(t.get(9..))
    {
        let p = unquote(rest.trim());
        if !p.starts_with('/') {
            return Err(format!(":include: needs an absolute path, got \"{p}\""));
        }
        return Ok(AliasTarget::Include(PathBuf::from(p)));
    }
    if t.starts_with('/') {
        return Ok(AliasTarget::File(PathBuf::from(t)));
    }
    let mut a = t;
    if let Some(inner) = a.strip_prefix('<').and_then(|x| x.strip_suffix('>')) {
        a = inner.trim();
    }
    // "\user" means "user's own mailbox" in .forward files; the self-reference
    // rule in local delivery gives that meaning, so the backslash just goes.
    let a = a.strip_prefix('\\').unwrap_or(a);
    let a = unquote(a);
    if a.is_empty() {
        return Err("empty address".into());
    }
    if a.chars().any(|c| c.is_control()) {
        return Err(format!(
            "control character in address \"{}\"",
            a.escape_debug()
        ));
    }
    Ok(AliasTarget::Address(a))
}

/// Parses the right-hand side of an alias (comma separated; no newlines left).
fn parse_target_list(s: &str) -> Result<Vec<AliasTarget>, String> {
    split_list(s)?.iter().map(|t| classify(t)).collect()
}

/// Parses a list of targets (a .forward file's or :include: file's contents: comma/newline separated).
///
/// Lines whose first non-blank character is '#' are comments. An empty result
/// is not an error (an empty .forward means "no forwarding").
pub fn parse_targets(text: &str) -> Result<Vec<AliasTarget>, String> {
    let mut joined = String::with_capacity(text.len());
    for line in text.lines() {
        let line = line.strip_suffix('\r').unwrap_or(line);
        if line.trim_start().starts_with('#') {
            continue;
        }
        joined.push_str(line);
        joined.push('\n');
    }
    split_list(&joined)?.iter().map(|t| classify(t)).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p() -> &'static Path {
        Path::new("/etc/aliases")
    }

    #[test]
    fn parses_kinds_quotes_and_continuations() {
        let text = "# header\n\
Postmaster: root\n\
list: joe, \"|/usr/bin/filter -a, -b\",\n\
\t/var/log/copy, :include:/etc/list.inc,\n\
\x20 <Ann@Example.org>\n\
\"odd name\": /var/spool/odd/\n\
pipe: |\"/bin/cat\"\n";
        let a = Aliases::parse(text, p()).unwrap();
        assert_eq!(
            a.lookup("POSTMASTER"),
            Some(&[AliasTarget::Address("root".into())][..])
        );
        assert_eq!(
            a.lookup("list").unwrap(),
            &[
                AliasTarget::Address("joe".into()),
                AliasTarget::Command("/usr/bin/filter -a, -b".into()),
                AliasTarget::File("/var/log/copy".into()),
                AliasTarget::Include("/etc/list.inc".into()),
                AliasTarget::Address("Ann@Example.org".into()),
            ]
        );
        assert_eq!(
            a.lookup("Odd Name").unwrap(),
            &[AliasTarget::File("/var/spool/odd/".into())]
        );
        assert_eq!(
            a.lookup("pipe").unwrap(),
            &[AliasTarget::Command("/bin/cat".into())]
        );
        assert_eq!(
            a.names().collect::<Vec<_>>(),
            vec!["list", "odd name", "pipe", "postmaster"]
        );
        assert!(a.warnings().is_empty());
    }

    #[test]
    fn duplicate_last_wins_with_warning() {
        let a = Aliases::parse("a: b\nA: c\n", p()).unwrap();
        assert_eq!(a.lookup("a").unwrap(), &[AliasTarget::Address("c".into())]);
        assert_eq!(a.warnings().len(), 1);
        assert!(
            a.warnings()[0].contains("/etc/aliases:2"),
            "{:?}",
            a.warnings()
        );
    }

    #[test]
    fn errors_carry_line_numbers() {
        let cases = [
            ("a: b\nno colon here\n", 2, "no ':'"),
            ("a: b\n\nbad name: x\n", 3, "white space"),
            ("x: \"|unterminated\n", 1, "unterminated"),
            ("x:\n", 1, "no targets"),
            ("  x: y\n", 1, "continuation"),
            ("x: |\n", 1, "empty command"),
            ("x: :include:relative\n", 1, "absolute"),
            ("\"x: y\n", 1, "unterminated quoted"),
            (": y\n", 1, "empty alias name"),
        ];
        for (text, line, why) in cases {
            let e = Aliases::parse(text, p()).unwrap_err();
            assert_eq!(e.line, line, "{text:?}: {e}");
            assert!(e.reason.contains(why), "{text:?}: {e}");
            assert_eq!(e.file, p());
        }
    }

    #[test]
    fn forward_file_targets() {
        let t = "# my forward\n\\joe, joe@elsewhere.example\n\"|/usr/bin/procmail -f-\"\n/home/joe/Mail/\n\n";
        assert_eq!(
            parse_targets(t).unwrap(),
            vec![
                AliasTarget::Address("joe".into()),
                AliasTarget::Address("joe@elsewhere.example".into()),
                AliasTarget::Command("/usr/bin/procmail -f-".into()),
                AliasTarget::File("/home/joe/Mail/".into()),
            ]
        );
        assert_eq!(parse_targets("# only a comment\n\n").unwrap(), vec![]);
        assert!(parse_targets("\"|oops\n").is_err());
    }

    #[test]
    fn load_reports_missing_file() {
        let e = Aliases::load(Path::new("/nonexistent/aliases")).unwrap_err();
        assert_eq!(e.line, 0);
    }

    proptest::proptest! {
        #[test]
        fn never_panics(s in "\\PC{0,200}") {
            let _ = Aliases::parse(&s, p());
            let _ = parse_targets(&s);
        }
    }
}
