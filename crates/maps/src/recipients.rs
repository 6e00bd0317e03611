//! The configured sets of maps: alias_maps, local_recipient_maps and
//! mydestination, with reload-when-the-file-changed.
//!
//! A file is re-read when its (mtime, size, inode) differ from when it was
//! last read, checked on every lookup with one stat(2) per file; a file that
//! cannot be re-read makes the lookup fail with a temporary error rather than
//! silently using stale or empty data.

use std::collections::HashSet;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use crate::aliases::{AliasTarget, Aliases, parse_targets};
use crate::error::MapError;
use crate::table::{Table, hash_source};

/// Splits a map list parameter ("a:x, inline:{ k=v, k2=v2 } b:y") on commas
/// and white space outside braces (postern-config's list splitting).
pub fn split_map_list(s: &str) -> Vec<String> {
    postern_config::split_list(s)
}

/// Splits "user+ext" at the first character that is one of `delimiters`
/// (recipient_delimiter may list several). Returns (user, Some((delimiter, ext))).
/// A delimiter in the first position does not split (the user would be empty).
pub fn strip_extension<'a>(local: &'a str, delimiters: &str) -> (&'a str, Option<(char, &'a str)>) {
    if delimiters.is_empty() {
        return (local, None);
    }
    match local
        .char_indices()
        .find(|&(i, c)| i > 0 && delimiters.contains(c))
    {
        Some((i, c)) => (&local[..i], Some((c, &local[i + c.len_utf8()..]))),
        None => (local, None),
    }
}

/// The configuration directory, for resolving relative table names.
fn config_dir(main: &postern_config::MainCf) -> PathBuf {
    main.config_dir().to_path_buf()
}

/// What identifies one version of a file, for reload-on-change.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Stamp {
    mtime: i64,
    mtime_nsec: i64,
    size: u64,
    ino: u64,
}

fn stamp(path: &Path) -> Result<Stamp, MapError> {
    let m =
        std::fs::metadata(path).map_err(|e| MapError::new(path, 0, format!("cannot stat: {e}")))?;
    Ok(Stamp {
        mtime: m.mtime(),
        mtime_nsec: m.mtime_nsec(),
        size: m.size(),
        ino: m.ino(),
    })
}

#[derive(Debug)]
enum Kind {
    Aliases(Aliases),
    Table(Table),
    /// The file could not be read or parsed: every lookup tries again and,
    /// while it fails, answers with this error (a temporary failure).
    Unavailable(MapError),
}

/// One map with the file it came from, reloadable.
#[derive(Debug)]
struct Source {
    spec: String,
    base_dir: PathBuf,
    /// Hash-like files are read as aliases(5).
    alias_syntax: bool,
    kind: Kind,
    file: Option<(PathBuf, Stamp)>,
}

impl Source {
    /// Opens a map the way a running service must: a mistake in the spec
    /// itself is an error, but a missing or broken file is a warning and a
    /// source that answers with a temporary failure until the file is fixed
    /// (Postfix: "table is unavailable", 451 4.3.0) — never a start-up
    /// failure that would leave master restarting the service in a loop.
    fn open_or_unavailable(
        spec: &str,
        base_dir: &Path,
        alias_syntax: bool,
    ) -> Result<Source, MapError> {
        Table::check_spec(spec)?;
        match Source::open(spec, base_dir, alias_syntax) {
            Ok(s) => Ok(s),
            Err(e) => {
                tracing::warn!("{} is unavailable: {e}", spec.trim());
                Ok(Source {
                    spec: spec.to_string(),
                    base_dir: base_dir.to_path_buf(),
                    alias_syntax,
                    kind: Kind::Unavailable(e),
                    file: None,
                })
            }
        }
    }

    /// Opens `spec`; `alias_syntax` makes hash-like tables read as aliases(5).
    fn open(spec: &str, base_dir: &Path, alias_syntax: bool) -> Result<Source, MapError> {
        if alias_syntax && let Some(path) = hash_source(spec, base_dir) {
            let st = stamp(&path)?;
            let a = Aliases::load(&path)?;
            for w in a.warnings() {
                tracing::warn!("{w}");
            }
            return Ok(Source {
                spec: spec.to_string(),
                base_dir: base_dir.to_path_buf(),
                alias_syntax,
                kind: Kind::Aliases(a),
                file: Some((path, st)),
            });
        }
        let t = Table::open(spec, base_dir)?;
        let file = match t.source_file() {
            Some(p) => Some((p.to_path_buf(), stamp(p)?)),
            None => None,
        };
        Ok(Source {
            spec: spec.to_string(),
            base_dir: base_dir.to_path_buf(),
            alias_syntax,
            kind: Kind::Table(t),
            file,
        })
    }

    /// Opens this source again from its spec, the way it was first opened.
    fn reopen(&self) -> Result<Source, MapError> {
        Source::open(&self.spec, &self.base_dir, self.alias_syntax)
    }

    /// Re-reads the file if it changed since it was read, or if it could not
    /// be read last time. Err = it cannot be read now (a temporary failure).
    fn refresh(&mut self) -> Result<(), MapError> {
        if let Kind::Unavailable(_) = &self.kind {
            match self.reopen() {
                Ok(fresh) => {
                    tracing::info!("{} is available again", self.spec.trim());
                    *self = fresh;
                    return Ok(());
                }
                Err(e) => {
                    self.kind = Kind::Unavailable(e.clone());
                    return Err(e);
                }
            }
        }
        let Some((path, old)) = &self.file else {
            return Ok(());
        };
        let now = stamp(path)?;
        if now == *old {
            return Ok(());
        }
        let fresh = self.reopen()?;
        tracing::info!("reloaded {}", path.display());
        *self = fresh;
        Ok(())
    }

    /// For alias use: the targets of `name`, if this map has it.
    fn alias_lookup(&self, name: &str) -> Result<Option<Vec<AliasTarget>>, MapError> {
        match &self.kind {
            Kind::Aliases(a) => Ok(a.lookup(name).map(|t| t.to_vec())),
            Kind::Table(t) => match t.lookup(name)? {
                Some(v) => parse_targets(&v).map(Some).map_err(|r| {
                    MapError::new(&self.spec, 0, format!("bad value for \"{name}\": {r}"))
                }),
                None => Ok(None),
            },
            Kind::Unavailable(e) => Err(e.clone()),
        }
    }

    fn has(&self, key: &str) -> Result<bool, MapError> {
        match &self.kind {
            Kind::Aliases(a) => Ok(a.lookup(key).is_some()),
            Kind::Table(t) => Ok(t.lookup(key)?.is_some()),
            Kind::Unavailable(e) => Err(e.clone()),
        }
    }
}

/// The alias_maps set: aliases looked up in order, first map with the name wins.
///
/// Local delivery uses it for alias expansion. Hash-like tables are read in
/// aliases(5) syntax; other table types give a value in .forward syntax.
#[derive(Debug)]
pub struct AliasMaps {
    sources: Vec<Source>,
}

impl AliasMaps {
    /// Opens every map in `specs`; relative names resolve against `base_dir`.
    /// Err only for a spec that is wrong in itself; a missing or unreadable
    /// file is logged and makes the lookups that reach it fail (temporary)
    /// until it can be read.
    pub fn open(specs: &[String], base_dir: &Path) -> Result<AliasMaps, MapError> {
        let sources = specs
            .iter()
            .map(|s| Source::open_or_unavailable(s, base_dir, true))
            .collect::<Result<_, _>>()?;
        Ok(AliasMaps { sources })
    }

    /// Opens main.cf's alias_maps.
    pub fn from_config(main: &postern_config::MainCf) -> Result<AliasMaps, MapError> {
        AliasMaps::open(&split_map_list(&main.str("alias_maps")), &config_dir(main))
    }

    /// The targets of alias `name` (case-insensitive), re-reading changed files
    /// first. Err = a map could not be read: the caller should defer.
    pub fn lookup(&mut self, name: &str) -> Result<Option<Vec<AliasTarget>>, MapError> {
        let name = name.to_lowercase();
        for s in &mut self.sources {
            s.refresh()?;
            if let Some(t) = s.alias_lookup(&name)? {
                return Ok(Some(t));
            }
        }
        Ok(None)
    }
}

/// Answers "does this local part exist?" for smtpd (reject unknown users at RCPT).
/// Built from local_recipient_maps; reloads a file when it changed.
/// An empty local_recipient_maps means "accept every local part" (Postfix semantics).
/// Strips recipient_delimiter extensions (user+ext → user) and lower-cases.
///
/// users_file is not one of its sources: it holds password hashes, and
/// smtpd asks the auth service about its users instead (docs/auth.md).
#[derive(Debug)]
pub struct LocalRecipients {
    accept_all: bool,
    sources: Vec<Source>,
    delimiters: String,
}

impl LocalRecipients {
    /// Opens local_recipient_maps (hash-like maps that also appear in
    /// alias_maps are read as aliases); never users_file. A spec that is
    /// wrong in itself is an error; a file that is missing or cannot be read
    /// is logged and makes [`LocalRecipients::exists`] fail (451 4.3.0) until
    /// it can be read, as Postfix does with an unavailable table.
    pub fn from_config(main: &postern_config::MainCf) -> Result<LocalRecipients, MapError> {
        let base = config_dir(main);
        let specs = split_map_list(&main.str("local_recipient_maps"));
        let alias_files: HashSet<PathBuf> = split_map_list(&main.str("alias_maps"))
            .iter()
            .filter_map(|s| hash_source(s, &base))
            .collect();
        let mut sources = Vec::new();
        for spec in &specs {
            let as_alias = hash_source(spec, &base).is_some_and(|p| alias_files.contains(&p));
            sources.push(Source::open_or_unavailable(spec, &base, as_alias)?);
        }
        Ok(LocalRecipients {
            accept_all: specs.is_empty(),
            sources,
            delimiters: main.str("recipient_delimiter"),
        })
    }

    /// True if `local_part` (with or without extension) is a known recipient.
    /// A map that answers yes is enough, even when another one cannot be
    /// read; Err = no map said yes and one could not be (re)read, so the
    /// answer is unknown: a temporary failure (451 4.3.0).
    pub fn exists(&mut self, local_part: &str) -> Result<bool, MapError> {
        if self.accept_all {
            return Ok(true);
        }
        let full = local_part.to_lowercase();
        let (base, ext) = strip_extension(&full, &self.delimiters);
        let mut keys = vec![full.as_str()];
        if ext.is_some() {
            keys.push(base);
        }
        let mut failed = None;
        for s in &mut self.sources {
            if let Err(e) = s.refresh() {
                failed.get_or_insert(e);
                continue;
            }
            for k in &keys {
                match s.has(k) {
                    Ok(true) => return Ok(true),
                    Ok(false) => {}
                    Err(e) => {
                        failed.get_or_insert(e);
                    }
                }
            }
        }
        match failed {
            Some(e) => Err(e),
            None => Ok(false),
        }
    }
}

/// One mydestination entry.
#[derive(Debug)]
enum DomainEntry {
    Name(String),
    Table(Table),
    /// A "/file" of names that could not be read at start-up: read again
    /// at each lookup, which fails (temporarily) while it cannot be read.
    UnreadableFile(PathBuf),
}

/// The names in a mydestination "/file": '#' comments, names separated by
/// commas and white space.
fn domain_file_names(path: &Path) -> Result<Vec<String>, MapError> {
    let text = crate::error::read_file(path)?;
    let mut names = Vec::new();
    for line in text.lines() {
        let line = line.split('#').next().unwrap_or("");
        names.extend(
            line.split(|c: char| c == ',' || c.is_whitespace())
                .filter(|w| !w.is_empty())
                .map(normalize_domain),
        );
    }
    Ok(names)
}

/// mydestination, parsed once: the domains this host is the final destination for.
///
/// smtpd and local call [`LocalDomains::contains`] for every address; build it
/// once (opening the tables) and keep it.
#[derive(Debug)]
pub struct LocalDomains {
    entries: Vec<DomainEntry>,
}

fn normalize_domain(d: &str) -> String {
    d.trim().trim_end_matches('.').to_lowercase()
}

impl LocalDomains {
    /// Parses a list of names, "type:table" maps and "/file" names (files of
    /// domain names, '#' comments).
    pub fn parse(items: &[String], base_dir: &Path) -> Result<LocalDomains, MapError> {
        let mut entries = Vec::new();
        for item in items {
            if item.starts_with('/') {
                match domain_file_names(Path::new(item)) {
                    Ok(names) => entries.extend(names.into_iter().map(DomainEntry::Name)),
                    Err(e) => {
                        tracing::warn!("mydestination: {item} is unavailable: {e}");
                        entries.push(DomainEntry::UnreadableFile(PathBuf::from(item)));
                    }
                }
            } else if item.contains(':') && !item.starts_with('[') {
                entries.push(DomainEntry::Table(Table::open_or_unavailable(
                    item, base_dir,
                )?));
            } else {
                entries.push(DomainEntry::Name(normalize_domain(item)));
            }
        }
        Ok(LocalDomains { entries })
    }

    /// Reads main.cf's mydestination.
    pub fn from_config(main: &postern_config::MainCf) -> Result<LocalDomains, MapError> {
        LocalDomains::parse(
            &split_map_list(&main.str("mydestination")),
            &config_dir(main),
        )
    }

    /// True if `domain` is local (case-insensitive, trailing dot ignored).
    /// A table that fails to answer counts as "not local" and is logged;
    /// callers that can defer use [`LocalDomains::try_contains`].
    pub fn contains(&self, domain: &str) -> bool {
        self.try_contains(domain).unwrap_or_else(|e| {
            tracing::warn!("mydestination lookup failed: {e}");
            false
        })
    }

    /// Whether `domain` is local; Err when an entry that could have matched
    /// cannot be read (a temporary failure: 451 4.3.0 / a deferral, never a
    /// relay decision). Names are compared before any table is consulted.
    pub fn try_contains(&self, domain: &str) -> Result<bool, MapError> {
        let d = normalize_domain(domain);
        if d.is_empty() {
            return Ok(false);
        }
        if self
            .entries
            .iter()
            .any(|e| matches!(e, DomainEntry::Name(n) if *n == d))
        {
            return Ok(true);
        }
        for e in &self.entries {
            match e {
                DomainEntry::Name(_) => {}
                DomainEntry::Table(t) => {
                    if t.lookup(&d)?.is_some() {
                        return Ok(true);
                    }
                }
                DomainEntry::UnreadableFile(path) => {
                    if domain_file_names(path)?.contains(&d) {
                        return Ok(true);
                    }
                }
            }
        }
        Ok(false)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use postern_config::MainCf;

    #[test]
    fn split_lists_respect_braces() {
        assert_eq!(
            split_map_list("hash:/a, inline:{ a=b, c=d },static:x\tunix:passwd.byname"),
            vec![
                "hash:/a",
                "inline:{ a=b, c=d }",
                "static:x",
                "unix:passwd.byname"
            ]
        );
        assert!(split_map_list("  ").is_empty());
    }

    #[test]
    fn extension_stripping() {
        assert_eq!(
            strip_extension("joe+news", "+"),
            ("joe", Some(('+', "news")))
        );
        assert_eq!(
            strip_extension("joe-a+b", "+-"),
            ("joe", Some(('-', "a+b")))
        );
        assert_eq!(strip_extension("+joe", "+"), ("+joe", None));
        assert_eq!(strip_extension("joe+news", ""), ("joe+news", None));
    }

    fn config(dir: &Path, extra: &[(&str, &str)]) -> MainCf {
        let mut m = MainCf::parse("", &dir.join("main.cf")).unwrap();
        m.set("myhostname", "mail.example.org");
        for (k, v) in extra {
            m.set(k, v);
        }
        m
    }

    #[test]
    fn a_missing_table_fails_its_lookups_until_it_appears() {
        let d = tempfile::tempdir().unwrap();
        let aliases = d.path().join("aliases");
        let spec = format!("hash:{}", aliases.display());
        let main = config(
            d.path(),
            &[
                ("alias_maps", &spec),
                ("local_recipient_maps", "$alias_maps"),
            ],
        );
        // Start-up works (no crash loop) ...
        let mut maps = AliasMaps::from_config(&main).expect("opens with the file missing");
        let mut rcpts = LocalRecipients::from_config(&main).expect("opens with the file missing");
        // ... and each lookup is a temporary failure naming the file, with
        // no ":0:" for the whole file.
        let e = maps.lookup("postmaster").unwrap_err().to_string();
        assert!(e.starts_with(&format!("{}: ", aliases.display())), "{e}");
        assert!(!e.contains(":0:"), "{e}");
        assert!(rcpts.exists("postmaster").is_err());
        // The administrator creates it: the same processes now answer.
        std::fs::write(&aliases, "postmaster: root\n").unwrap();
        assert!(maps.lookup("postmaster").unwrap().is_some());
        assert!(rcpts.exists("postmaster").unwrap());
        assert!(!rcpts.exists("nobody-here").unwrap());
        // Broken later (unreadable as text): temporary failure again, with the line.
        std::fs::write(&aliases, b"postmaster: root\n\xff\n").unwrap();
        assert!(rcpts.exists("postmaster").is_err());
        // A spec that is wrong in itself is still a start-up error.
        let main = config(d.path(), &[("alias_maps", "nosuchtype:/x")]);
        assert!(AliasMaps::from_config(&main).is_err());
    }

    #[test]
    fn unreadable_mydestination_entries_are_temporary_failures() {
        let d = tempfile::tempdir().unwrap();
        let table = d.path().join("domains");
        let file = d.path().join("domain-list");
        let items = vec![
            "example.org".to_string(),
            format!("texthash:{}", table.display()),
            file.display().to_string(),
        ];
        let l = LocalDomains::parse(&items, d.path()).expect("starts with files missing");
        assert_eq!(
            l.try_contains("EXAMPLE.org."),
            Ok(true),
            "names need no table"
        );
        assert!(l.try_contains("other.example").is_err());
        std::fs::write(&table, "other.example ok\n").unwrap();
        std::fs::write(&file, "third.example\n").unwrap();
        assert_eq!(l.try_contains("other.example"), Ok(true));
        assert_eq!(l.try_contains("third.example"), Ok(true));
        assert_eq!(l.try_contains("remote.example"), Ok(false));
    }

    #[test]
    fn local_recipients_from_aliases_and_reload() {
        let d = tempfile::tempdir().unwrap();
        std::fs::write(
            d.path().join("aliases"),
            "postmaster: root\nsales: joe, ann\n",
        )
        .unwrap();
        let m = config(
            d.path(),
            &[
                ("alias_maps", "hash:aliases"),
                ("local_recipient_maps", "$alias_maps inline:{ extra=1 }"),
                ("recipient_delimiter", "+"),
            ],
        );
        let mut r = LocalRecipients::from_config(&m).unwrap();
        assert!(r.exists("Sales").unwrap());
        assert!(r.exists("sales+promo").unwrap());
        assert!(r.exists("extra").unwrap());
        assert!(!r.exists("nobody").unwrap());
        // Change the aliases file: the next lookup sees it.
        std::fs::write(
            d.path().join("aliases"),
            "postmaster: root\nsales: joe\nnewbie: joe\n",
        )
        .unwrap();
        assert!(r.exists("newbie").unwrap());
        // A broken file is a temporary error, not "unknown user".
        std::fs::write(d.path().join("aliases"), "postmaster: root\nbroken line\n").unwrap();
        let e = r.exists("sales").unwrap_err();
        assert_eq!(e.line, 2);
        std::fs::remove_file(d.path().join("aliases")).unwrap();
        assert!(r.exists("sales").is_err());
    }

    #[test]
    fn users_file_is_never_a_source() {
        let d = tempfile::tempdir().unwrap();
        let users = d.path().join("users");
        std::fs::write(&users, "vera:{PLAIN}x\n").unwrap();
        let m = config(
            d.path(),
            &[
                ("alias_maps", ""),
                ("local_recipient_maps", "inline:{ extra=1 }"),
                ("users_file", &users.display().to_string()),
            ],
        );
        let mut r = LocalRecipients::from_config(&m).unwrap();
        assert!(r.exists("extra").unwrap());
        assert!(
            !r.exists("vera").unwrap(),
            "users_file users are auth's to answer"
        );
        // It never opens the file: a missing one is no error either.
        std::fs::remove_file(&users).unwrap();
        let mut r = LocalRecipients::from_config(&m).unwrap();
        assert!(!r.exists("vera").unwrap());
    }

    #[test]
    fn empty_local_recipient_maps_accepts_all_and_passwd_works() {
        let d = tempfile::tempdir().unwrap();
        let m = config(d.path(), &[("local_recipient_maps", "")]);
        assert!(
            LocalRecipients::from_config(&m)
                .unwrap()
                .exists("whoever")
                .unwrap()
        );
        let m = config(
            d.path(),
            &[
                ("local_recipient_maps", "unix:passwd.byname"),
                ("alias_maps", ""),
            ],
        );
        let mut r = LocalRecipients::from_config(&m).unwrap();
        assert!(r.exists("root").unwrap());
        assert!(!r.exists("no-such-user-postern").unwrap());
        let m = config(d.path(), &[("alias_maps", "hash:missing")]);
        let mut r = LocalRecipients::from_config(&m).expect("starts");
        assert!(
            r.exists("root").unwrap(),
            "unix:passwd.byname answers first"
        );
        assert!(
            r.exists("no-such-user-postern").is_err(),
            "then hash:missing fails"
        );
    }

    #[test]
    fn alias_maps_from_tables_and_files() {
        let d = tempfile::tempdir().unwrap();
        std::fs::write(d.path().join("aliases"), "a: b, |/bin/true\n").unwrap();
        let mut am = AliasMaps::open(
            &[
                "texthash:aliases".to_string(),
                "inline:{ a=ignored, { c = x, \"|y, z\" } }".to_string(),
            ],
            d.path(),
        )
        .unwrap();
        assert_eq!(
            am.lookup("A").unwrap().unwrap(),
            vec![
                AliasTarget::Address("b".into()),
                AliasTarget::Command("/bin/true".into())
            ]
        );
        assert_eq!(
            am.lookup("c").unwrap().unwrap(),
            vec![
                AliasTarget::Address("x".into()),
                AliasTarget::Command("y, z".into())
            ]
        );
        assert_eq!(am.lookup("zz").unwrap(), None);
    }

    #[test]
    fn local_domains() {
        let d = tempfile::tempdir().unwrap();
        std::fs::write(d.path().join("doms"), "a.example OK\n").unwrap();
        std::fs::write(
            d.path().join("list"),
            "# more\nlisted.example other.example\n",
        )
        .unwrap();
        let list = d.path().join("list").display().to_string();
        let m = config(
            d.path(),
            &[(
                "mydestination",
                &format!("$myhostname, localhost, texthash:doms {list}"),
            )],
        );
        for yes in [
            "mail.example.org",
            "MAIL.example.org.",
            "localhost",
            "a.example",
            "Listed.Example",
        ] {
            assert_eq!(
                LocalDomains::from_config(&m).unwrap().try_contains(yes),
                Ok(true),
                "{yes}"
            );
        }
        for no in ["example.org", "", "b.example", "."] {
            assert_eq!(
                LocalDomains::from_config(&m).unwrap().try_contains(no),
                Ok(false),
                "{no}"
            );
        }
        let m = config(d.path(), &[("mydestination", "texthash:missing")]);
        let l = LocalDomains::from_config(&m).expect("starts");
        assert!(l.try_contains("x").is_err());
    }
}
