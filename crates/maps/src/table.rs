//! Postfix-style lookup tables named "type:name".
//!
//! | type                | source                                        |
//! |---------------------|-----------------------------------------------|
//! | `texthash:/path`    | "key value" lines, keys case-folded           |
//! | `hash:/path` (and btree, lmdb, cdb, dbm) | read from the source text file, like texthash |
//! | `inline:{ k=v, { k2 = v with, comma } }` | the spec itself          |
//! | `static:value`      | every key gives `value`                       |
//! | `cidr:/path`        | "network value" lines, first match wins       |
//! | `regexp:/path`, `pcre:/path` | "/re/flags value" lines, first match wins, `$1` substitution |
//! | `unix:passwd.byname`| the system password database (getpwnam)       |
//!
//! A `proxy:` prefix is accepted and ignored. Relative paths are resolved
//! against the configuration directory given to [`Table::open`].

use std::collections::HashMap;
use std::net::IpAddr;
use std::path::{Path, PathBuf};

use crate::error::{MapError, logical_lines, read_file};
use crate::network::Cidr;

/// One rule of a regexp table.
#[derive(Clone, Debug)]
pub(crate) struct RegexpRule {
    re: regex::Regex,
    negate: bool,
    result: String,
}

/// Lookup tables named "type:name" as in Postfix: texthash:/path ("key value" lines),
/// hash:/path (for now: same as texthash, read from the source file — when the name is
/// used as an alias map it's aliases syntax, see LocalRecipients), inline:{ key=value, key2=value2 },
/// static:value, cidr:/path (network → value), regexp:/path (/re/flags value), unix:passwd.byname.
///
/// Every daemon that consults a configurable table (smtpd access checks,
/// local_recipient_maps, mydestination) goes through this one type so table
/// syntax is the same everywhere.
#[derive(Clone, Debug)]
pub enum Table {
    /// texthash/hash and friends: key → value from a text file.
    Hash {
        /// The source file.
        path: PathBuf,
        /// Lower-cased keys.
        entries: HashMap<String, String>,
    },
    /// inline:{...}: lower-cased keys from the spec itself.
    Inline(HashMap<String, String>),
    /// static:value.
    Static(String),
    /// cidr:/path.
    Cidr {
        /// The source file.
        path: PathBuf,
        /// (network, result) rules in file order.
        #[allow(private_interfaces)]
        rules: Vec<(Cidr, String)>,
    },
    /// regexp:/path or pcre:/path.
    Regexp {
        /// The source file.
        path: PathBuf,
        /// Rules in file order.
        #[allow(private_interfaces)]
        rules: Vec<RegexpRule>,
    },
    /// unix:passwd.byname.
    UnixPasswd,
    /// A file-backed table whose file could not be read or parsed when it
    /// was opened (see [`Table::open_or_unavailable`]). Each lookup tries to
    /// read it again; while that fails the lookup is an error, which callers
    /// answer with a temporary failure (451 4.3.0, a deferral) — as Postfix
    /// does for an unavailable table — instead of refusing to start.
    Unavailable {
        /// The table as written in main.cf.
        spec: String,
        /// Where relative names resolve.
        base_dir: PathBuf,
        /// Why it could not be read the last time.
        error: MapError,
    },
}

/// Splits "type:name" and drops a leading "proxy:".
fn split_spec(spec: &str) -> Result<(&str, &str), MapError> {
    let spec = spec.trim();
    let spec = spec.strip_prefix("proxy:").unwrap_or(spec);
    match spec.split_once(':') {
        Some((t, n)) if !t.is_empty() => Ok((t, n)),
        _ => Err(MapError::new(spec, 0, "expected a table as \"type:name\"")),
    }
}

/// True when the table type reads a text source file in "key value" (or,
/// for alias maps, aliases) syntax.
pub(crate) fn is_hash_type(t: &str) -> bool {
    matches!(
        t,
        "hash" | "texthash" | "btree" | "lmdb" | "cdb" | "dbm" | "sdbm"
    )
}

/// Resolves a table's file name against the configuration directory.
pub(crate) fn resolve(name: &str, base_dir: &Path) -> PathBuf {
    let p = Path::new(name);
    if p.is_absolute() {
        p.to_path_buf()
    } else {
        base_dir.join(p)
    }
}

/// If `spec` names a hash-like table, returns its source file.
pub(crate) fn hash_source(spec: &str, base_dir: &Path) -> Option<PathBuf> {
    let (t, n) = split_spec(spec).ok()?;
    if is_hash_type(t) {
        Some(resolve(n, base_dir))
    } else {
        None
    }
}

impl Table {
    /// Checks the spec itself — `type:name` form, a known type, a valid
    /// inline body — without touching any file. An error here is a mistake
    /// in main.cf (a start-up error, like Postfix's "unsupported dictionary
    /// type"); a file that is missing or broken is not (see
    /// [`Table::open_or_unavailable`]).
    pub fn check_spec(spec: &str) -> Result<(), MapError> {
        let (kind, _) = split_spec(spec)?;
        match kind {
            t if is_hash_type(t) || matches!(t, "cidr" | "regexp" | "pcre") => Ok(()),
            "inline" | "static" | "unix" => Table::open(spec, Path::new("/")).map(|_| ()),
            other => Err(MapError::new(
                spec,
                0,
                format!("unsupported table type \"{other}\""),
            )),
        }
    }

    /// Opens `spec` for a long-running service. A bad spec is an error (see
    /// [`Table::check_spec`]); a table file that cannot be read or parsed is
    /// logged as a warning naming the table and the reason and gives a
    /// [`Table::Unavailable`], so the service starts and answers the lookups
    /// that need this table with a temporary failure until it is fixed.
    pub fn open_or_unavailable(spec: &str, base_dir: &Path) -> Result<Table, MapError> {
        Table::check_spec(spec)?;
        match Table::open(spec, base_dir) {
            Ok(t) => Ok(t),
            Err(error) => {
                tracing::warn!("{} is unavailable: {error}", spec.trim());
                Ok(Table::Unavailable {
                    spec: spec.to_string(),
                    base_dir: base_dir.to_path_buf(),
                    error,
                })
            }
        }
    }

    /// Every table a list parameter of `main` names (e.g. transport_maps),
    /// each as [`Table::open_or_unavailable`] opens it, relative to the
    /// configuration directory. Err = a bad spec, prefixed with the
    /// parameter's name.
    pub fn open_list(main: &postern_config::MainCf, name: &str) -> Result<Vec<Table>, String> {
        crate::split_map_list(&main.str(name))
            .iter()
            .map(|spec| Table::open_or_unavailable(spec, main.config_dir()))
            .collect::<Result<_, _>>()
            .map_err(|e| format!("{name}: {e}"))
    }

    /// Opens (reads and parses) the table named by `spec`.
    pub fn open(spec: &str, base_dir: &Path) -> Result<Table, MapError> {
        let (kind, name) = split_spec(spec)?;
        match kind {
            t if is_hash_type(t) => {
                let path = resolve(name, base_dir);
                let entries = parse_key_values(&read_file(&path)?, &path)?;
                Ok(Table::Hash { path, entries })
            }
            "inline" => parse_inline(name)
                .map(Table::Inline)
                .map_err(|r| MapError::new(spec, 0, r)),
            "static" => {
                let v = name.trim();
                let v = v
                    .strip_prefix('{')
                    .and_then(|x| x.strip_suffix('}'))
                    .map(str::trim)
                    .unwrap_or(v);
                Ok(Table::Static(v.to_string()))
            }
            "cidr" => {
                let path = resolve(name, base_dir);
                let rules = parse_cidr(&read_file(&path)?, &path)?;
                Ok(Table::Cidr { path, rules })
            }
            "regexp" | "pcre" => {
                let path = resolve(name, base_dir);
                let rules = parse_regexp(&read_file(&path)?, &path)?;
                Ok(Table::Regexp { path, rules })
            }
            "unix" => match name {
                "passwd.byname" => Ok(Table::UnixPasswd),
                _ => Err(MapError::new(
                    spec,
                    0,
                    format!("unsupported unix table \"{name}\" (only passwd.byname)"),
                )),
            },
            other => Err(MapError::new(
                spec,
                0,
                format!("unsupported table type \"{other}\""),
            )),
        }
    }

    /// Looks `key` up. Err only for a failing lookup (e.g. the password database
    /// answered with an error): callers treat that as temporary.
    pub fn lookup(&self, key: &str) -> Result<Option<String>, MapError> {
        match self {
            Table::Unavailable { spec, base_dir, .. } => {
                // Read it again: the administrator may have fixed it.
                Table::open(spec, base_dir)?.lookup(key)
            }
            Table::Hash { entries, .. } | Table::Inline(entries) => {
                Ok(entries.get(&key.to_lowercase()).cloned())
            }
            Table::Static(v) => Ok(Some(v.clone())),
            Table::Cidr { rules, .. } => {
                let Ok(ip) = key
                    .trim_start_matches('[')
                    .trim_end_matches(']')
                    .parse::<IpAddr>()
                else {
                    return Ok(None);
                };
                Ok(rules
                    .iter()
                    .find(|(c, _)| c.contains(ip))
                    .map(|(_, v)| v.clone()))
            }
            Table::Regexp { rules, .. } => {
                for r in rules {
                    if r.negate {
                        if !r.re.is_match(key) {
                            return Ok(Some(r.result.clone()));
                        }
                    } else if let Some(c) = r.re.captures(key) {
                        return Ok(Some(substitute(&r.result, &c)));
                    }
                }
                Ok(None)
            }
            Table::UnixPasswd => match nix::unistd::User::from_name(key) {
                Ok(Some(u)) => Ok(Some(format!(
                    "{}:*:{}:{}:{}:{}:{}",
                    u.name,
                    u.uid,
                    u.gid,
                    u.gecos.to_string_lossy(),
                    u.dir.display(),
                    u.shell.display()
                ))),
                Ok(None) => Ok(None),
                Err(e) => Err(MapError::new(
                    "unix:passwd.byname",
                    0,
                    format!("lookup of \"{key}\" failed: {e}"),
                )),
            },
        }
    }

    /// The file this table was read from, if any (for reload-on-change).
    pub fn source_file(&self) -> Option<&Path> {
        match self {
            Table::Hash { path, .. } | Table::Cidr { path, .. } | Table::Regexp { path, .. } => {
                Some(path)
            }
            Table::Unavailable { .. } => None,
            Table::Inline(_) | Table::Static(_) | Table::UnixPasswd => None,
        }
    }
}

/// "key value" lines (value = rest of the logical line).
fn parse_key_values(text: &str, path: &Path) -> Result<HashMap<String, String>, MapError> {
    let mut out = HashMap::new();
    for (lineno, line) in logical_lines(text).map_err(|(l, r)| MapError::new(path, l, r))? {
        let (k, v) = line
            .split_once(|c: char| c.is_whitespace())
            .map(|(k, v)| (k, v.trim()))
            .ok_or_else(|| MapError::new(path, lineno, "expected \"key whitespace value\""))?;
        if v.is_empty() {
            return Err(MapError::new(
                path,
                lineno,
                "expected \"key whitespace value\"",
            ));
        }
        out.insert(k.to_lowercase(), v.to_string());
    }
    Ok(out)
}

/// inline:{ key=value, { key = value, with comma }, ... }
fn parse_inline(name: &str) -> Result<HashMap<String, String>, String> {
    let body = name
        .trim()
        .strip_prefix('{')
        .and_then(|b| b.strip_suffix('}'))
        .ok_or_else(|| "inline table must be written as inline:{ key=value, ... }".to_string())?;
    let mut items = Vec::new();
    let mut depth = 0usize;
    let mut cur = String::new();
    for c in body.chars() {
        match c {
            '{' => {
                depth += 1;
                if depth > 1 {
                    cur.push(c);
                }
            }
            '}' => {
                if depth == 0 {
                    return Err("unbalanced '}' in inline table".into());
                }
                depth -= 1;
                if depth > 0 {
                    cur.push(c);
                }
            }
            ',' if depth == 0 => items.push(std::mem::take(&mut cur)),
            c if c.is_whitespace() && depth == 0 && cur.trim().is_empty() => {}
            _ => cur.push(c),
        }
    }
    if depth != 0 {
        return Err("unbalanced '{' in inline table".into());
    }
    items.push(cur);
    let mut out = HashMap::new();
    for item in items.iter().map(|i| i.trim()).filter(|i| !i.is_empty()) {
        let (k, v) = item
            .split_once('=')
            .ok_or_else(|| format!("inline entry \"{item}\" has no '='"))?;
        let k = k.trim();
        if k.is_empty() {
            return Err(format!("inline entry \"{item}\" has an empty key"));
        }
        out.insert(k.to_lowercase(), v.trim().to_string());
    }
    Ok(out)
}

fn parse_cidr(text: &str, path: &Path) -> Result<Vec<(Cidr, String)>, MapError> {
    let mut out = Vec::new();
    for (lineno, line) in logical_lines(text).map_err(|(l, r)| MapError::new(path, l, r))? {
        let (net, v) = line
            .split_once(|c: char| c.is_whitespace())
            .map(|(k, v)| (k, v.trim()))
            .filter(|(_, v)| !v.is_empty())
            .ok_or_else(|| MapError::new(path, lineno, "expected \"network/prefix result\""))?;
        let cidr = Cidr::parse(net).map_err(|r| MapError::new(path, lineno, r))?;
        out.push((cidr, v.to_string()));
    }
    Ok(out)
}

fn parse_regexp(text: &str, path: &Path) -> Result<Vec<RegexpRule>, MapError> {
    let mut out = Vec::new();
    for (lineno, line) in logical_lines(text).map_err(|(l, r)| MapError::new(path, l, r))? {
        let err = |r: String| MapError::new(path, lineno, r);
        let (negate, rest) = match line.strip_prefix('!') {
            Some(r) => (true, r),
            None => (false, line.as_str()),
        };
        let mut chars = rest.char_indices();
        let delim = match chars.next() {
            Some((_, d)) if !d.is_alphanumeric() && !d.is_whitespace() && d != '\\' => d,
            _ => {
                let word = rest.split_whitespace().next().unwrap_or("");
                if word.eq_ignore_ascii_case("if") || word.eq_ignore_ascii_case("endif") {
                    return Err(err("if/endif blocks are not supported".into()));
                }
                return Err(err("expected \"/regexp/flags result\"".into()));
            }
        };
        let mut pattern = String::new();
        let mut end = None;
        while let Some((i, c)) = chars.next() {
            if c == '\\' {
                match chars.next() {
                    Some((_, n)) if n == delim => pattern.push(n),
                    Some((_, n)) => {
                        pattern.push('\\');
                        pattern.push(n);
                    }
                    None => break,
                }
            } else if c == delim {
                end = Some(i + c.len_utf8());
                break;
            } else {
                pattern.push(c);
            }
        }
        let end = end.ok_or_else(|| err(format!("missing closing '{delim}'")))?;
        let after = &rest[end..];
        let flags_len = after
            .find(|c: char| c.is_whitespace())
            .unwrap_or(after.len());
        let (flags, result) = (&after[..flags_len], after[flags_len..].trim());
        if result.is_empty() {
            return Err(err("missing result after the pattern".into()));
        }
        let mut b = regex::RegexBuilder::new(&pattern);
        let (mut icase, mut multi, mut dotall, mut ext) = (true, false, false, false);
        for f in flags.chars() {
            match f {
                'i' => icase = !icase,
                'm' => multi = !multi,
                's' => dotall = !dotall,
                'x' => ext = !ext,
                other => return Err(err(format!("unknown flag '{other}'"))),
            }
        }
        b.case_insensitive(icase)
            .multi_line(multi)
            .dot_matches_new_line(dotall)
            .ignore_whitespace(ext);
        let re = b
            .build()
            .map_err(|e| err(format!("bad regular expression: {e}")))?;
        out.push(RegexpRule {
            re,
            negate,
            result: result.to_string(),
        });
    }
    Ok(out)
}

/// Replaces $N / ${N} with capture N (empty if unmatched) and $$ with $.
fn substitute(template: &str, caps: &regex::Captures<'_>) -> String {
    let mut out = String::with_capacity(template.len());
    let b = template.as_bytes();
    let mut i = 0;
    let mut lit_start = 0;
    while i < b.len() {
        if b[i] != b'$' {
            i += 1;
            continue;
        }
        out.push_str(&template[lit_start..i]);
        let (num, next) = if b.get(i + 1) == Some(&b'$') {
            out.push('$');
            (None, i + 2)
        } else if b.get(i + 1) == Some(&b'{') {
            match template[i + 2..].find('}') {
                Some(close) => (
                    template[i + 2..i + 2 + close].parse::<usize>().ok(),
                    i + 3 + close,
                ),
                None => {
                    out.push('$');
                    (None, i + 1)
                }
            }
        } else {
            let mut j = i + 1;
            while j < b.len() && b[j].is_ascii_digit() {
                j += 1;
            }
            if j == i + 1 {
                out.push('$');
                (None, i + 1)
            } else {
                (template[i + 1..j].parse::<usize>().ok(), j)
            }
        };
        if let Some(n) = num
            && let Some(m) = caps.get(n)
        {
            out.push_str(m.as_str());
        }
        i = next;
        lit_start = next;
    }
    out.push_str(&template[lit_start.min(template.len())..]);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
        let p = dir.join(name);
        std::fs::write(&p, text).unwrap();
        p
    }

    #[test]
    fn texthash_and_hash_relative_to_base() {
        let d = tempfile::tempdir().unwrap();
        write(
            d.path(),
            "access",
            "# c\nSpam.Example REJECT go away\nok.example\n  OK\n",
        );
        for t in ["texthash:access", "hash:access", "proxy:hash:access"] {
            let tab = Table::open(t, d.path()).unwrap();
            assert_eq!(
                tab.lookup("spam.example").unwrap().as_deref(),
                Some("REJECT go away")
            );
            assert_eq!(tab.lookup("OK.EXAMPLE").unwrap().as_deref(), Some("OK"));
            assert_eq!(tab.lookup("other").unwrap(), None);
            assert_eq!(tab.source_file(), Some(d.path().join("access").as_path()));
        }
        write(d.path(), "bad", "a b\nlonely\n");
        let e = Table::open("texthash:bad", d.path()).unwrap_err();
        assert_eq!(e.line, 2);
        let e = Table::open("hash:/nonexistent/x", d.path()).unwrap_err();
        assert_eq!((e.line, e.file), (0, PathBuf::from("/nonexistent/x")));
    }

    #[test]
    fn inline_and_static() {
        let t = Table::open(
            "inline:{ a=1, B = two words, { c = x, y }, d= }",
            Path::new("/"),
        )
        .unwrap();
        assert_eq!(t.lookup("A").unwrap().as_deref(), Some("1"));
        assert_eq!(t.lookup("b").unwrap().as_deref(), Some("two words"));
        assert_eq!(t.lookup("c").unwrap().as_deref(), Some("x, y"));
        assert_eq!(t.lookup("d").unwrap().as_deref(), Some(""));
        assert_eq!(t.lookup("e").unwrap(), None);
        assert!(Table::open("inline:a=1", Path::new("/")).is_err());
        assert!(Table::open("inline:{ a=1 } }", Path::new("/")).is_err());
        assert!(Table::open("inline:{ noequals }", Path::new("/")).is_err());
        let s = Table::open("static:{relay.example}", Path::new("/")).unwrap();
        assert_eq!(
            s.lookup("anything").unwrap().as_deref(),
            Some("relay.example")
        );
        assert_eq!(
            Table::open("static:x", Path::new("/"))
                .unwrap()
                .lookup("")
                .unwrap()
                .as_deref(),
            Some("x")
        );
    }

    #[test]
    fn cidr_first_match() {
        let d = tempfile::tempdir().unwrap();
        write(
            d.path(),
            "c",
            "192.0.2.66 REJECT\n192.0.2.0/24 OK\n[2001:db8::]/32 DUNNO\n",
        );
        let t = Table::open("cidr:c", d.path()).unwrap();
        assert_eq!(t.lookup("192.0.2.66").unwrap().as_deref(), Some("REJECT"));
        assert_eq!(t.lookup("192.0.2.1").unwrap().as_deref(), Some("OK"));
        assert_eq!(t.lookup("2001:db8::7").unwrap().as_deref(), Some("DUNNO"));
        assert_eq!(t.lookup("[2001:db8::7]").unwrap().as_deref(), Some("DUNNO"));
        assert_eq!(t.lookup("10.0.0.1").unwrap(), None);
        assert_eq!(t.lookup("not-an-ip").unwrap(), None);
        write(d.path(), "bad", "192.0.2.1/24 OK\n");
        assert_eq!(Table::open("cidr:bad", d.path()).unwrap_err().line, 1);
    }

    #[test]
    fn regexp_rules() {
        let d = tempfile::tempdir().unwrap();
        write(
            d.path(),
            "r",
            "/^(.*)\\+([a-z]+)@example\\.org$/ $1 ext=${2}$$\n/^CaSe$/i sensitive\n!/\\.example$/ not-example\n#c\n|a/b| slash-in\n/^zzz$/ fallback\n",
        );
        let t = Table::open("regexp:r", d.path()).unwrap();
        assert_eq!(
            t.lookup("joe+news@EXAMPLE.org").unwrap().as_deref(),
            Some("joe ext=news$")
        );
        assert_eq!(t.lookup("CaSe").unwrap().as_deref(), Some("sensitive"));
        assert_eq!(t.lookup("case").unwrap().as_deref(), Some("not-example"));
        assert_eq!(t.lookup("y.example").unwrap(), None);
        assert_eq!(t.lookup("ZZZ").unwrap().as_deref(), Some("not-example"));
        assert_eq!(
            t.lookup("a/b.example").unwrap().as_deref(),
            Some("slash-in")
        );
        for (bad, why) in [
            ("/unterminated OK\n", "closing"),
            ("/a/ \n", "missing result"),
            ("/a/q OK\n", "flag"),
            ("/(/ OK\n", "regular expression"),
            ("if /x/\n", "if/endif"),
            ("plain OK\n", "expected"),
        ] {
            write(d.path(), "bad", bad);
            let e = Table::open("pcre:bad", d.path()).unwrap_err();
            assert!(e.reason.contains(why) && e.line == 1, "{bad:?}: {e}");
        }
    }

    #[test]
    fn unix_passwd_and_unknown_types() {
        let t = Table::open("unix:passwd.byname", Path::new("/")).unwrap();
        let root = t.lookup("root").unwrap().unwrap();
        assert!(root.starts_with("root:*:0:0:"), "{root}");
        assert_eq!(t.lookup("no-such-user-postern").unwrap(), None);
        assert!(Table::open("unix:group.byname", Path::new("/")).is_err());
        assert!(
            Table::open("ldap:/etc/x", Path::new("/"))
                .unwrap_err()
                .reason
                .contains("unsupported")
        );
        assert!(Table::open("noprefix", Path::new("/")).is_err());
    }

    proptest::proptest! {
        #[test]
        fn regexp_parser_never_panics(s in "\\PC{0,80}") {
            let d = tempfile::tempdir().unwrap();
            std::fs::write(d.path().join("r"), &s).unwrap();
            let _ = Table::open("regexp:r", d.path());
            let _ = Table::open("cidr:r", d.path());
            let _ = Table::open(&format!("inline:{{{s}}}"), d.path());
        }
    }
}
