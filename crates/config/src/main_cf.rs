//! main.cf: reading `name = value` lines, `$name` expansion, typed access.
//!
//! Grammar (as Postfix's postconf(5)): one `name = value` per logical line;
//! a line that starts with white space continues the previous logical line
//! (joined with one space); lines whose first non-blank character is `#` are
//! comments and blank lines are ignored (neither ends a continuation). The
//! value runs to the end of the line (a `#` inside it is text), with white
//! space trimmed at both ends.
//!
//! Expansion happens when a value is read: `$name`, `${name}`, `$(name)`,
//! `$$` (a literal `$`), `${name?text}` (text when name is non-empty) and
//! `${name:text}` (text when name is empty). Expansion is recursive with a
//! depth limit; a loop is an error naming the parameter. A few parameters
//! (forward_path, ...) are "raw": the program that uses them expands
//! per-recipient variables itself, so main.cf leaves them alone.
//!
//! SECURITY: main.cf is written by the administrator and trusted, but this
//! code still never panics on any input (a property test checks it) and
//! bounds expansion depth and size.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::error::ConfigError;
use crate::params::{
    PARAMETERS, ParamKind, TimeUnit, check_value, default_hostname, domain_of_hostname,
    is_param_name, param_def, parse_bool, parse_int, parse_size, parse_time_in, split_list,
};

/// Deepest chain of `$name` references followed before giving up.
const MAX_DEPTH: usize = 100;
/// Longest expanded value (bytes): stops `a = $b$b$b`, `b = $c$c$c`, ... blow-ups.
const MAX_EXPANDED: usize = 1 << 20;

/// Where a setting came from: a main.cf line, or an override (`-o`).
#[derive(Clone, Debug, PartialEq, Eq)]
struct Setting {
    value: String,
    /// Line in main.cf; 0 for a `set()` override.
    line: usize,
}

/// The parsed main.cf plus any `-o` overrides: the configuration every
/// program reads its parameters from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MainCf {
    file: PathBuf,
    config_dir: PathBuf,
    /// myhostname's run-time default, computed once so every read agrees.
    hostname: String,
    settings: BTreeMap<String, Setting>,
    /// Warnings found while reading the file (duplicates).
    parse_warnings: Vec<(usize, String)>,
    warnings: Vec<String>,
}

/// Splits text into logical lines: (first physical line number, text).
/// Comment and blank lines are skipped; continuation lines are joined with
/// one space. Errors carry the line number and reason.
pub(crate) fn logical_lines(text: &str) -> Result<Vec<(usize, String)>, (usize, String)> {
    let mut out: Vec<(usize, String)> = Vec::new();
    for (idx, raw) in text.lines().enumerate() {
        let lineno = idx + 1;
        let line = raw.trim_end();
        let body = line.trim_start();
        if body.is_empty() || body.starts_with('#') {
            continue;
        }
        if body.len() != line.len() {
            // Starts with white space: continues the previous logical line.
            match out.last_mut() {
                Some((_, prev)) => {
                    prev.push(' ');
                    prev.push_str(body);
                }
                None => {
                    return Err((
                        lineno,
                        "line starts with white space but there is no line before it to continue"
                            .to_string(),
                    ));
                }
            }
        } else {
            out.push((lineno, line.to_string()));
        }
    }
    Ok(out)
}

/// One piece of a value, as the expander sees it.
enum Seg<'a> {
    Lit(&'a str),
    Dollar,
    Ref(&'a str),
    /// `${name?text}` (if_set) or `${name:text}` (!if_set).
    Cond {
        name: &'a str,
        if_set: bool,
        text: &'a str,
    },
}

fn name_len(s: &str) -> usize {
    s.bytes()
        .position(|b| !(b.is_ascii_alphanumeric() || b == b'_'))
        .unwrap_or(s.len())
}

/// Cuts a value into literal text and `$` references.
fn tokenize(text: &str) -> Result<Vec<Seg<'_>>, String> {
    let b = text.as_bytes();
    let mut segs = Vec::new();
    let mut i = 0;
    let mut lit = 0;
    while i < b.len() {
        if b[i] != b'$' {
            i += 1;
            continue;
        }
        if lit < i {
            segs.push(Seg::Lit(&text[lit..i]));
        }
        match b.get(i + 1) {
            Some(b'$') => {
                segs.push(Seg::Dollar);
                i += 2;
            }
            Some(&open @ (b'{' | b'(')) => {
                let close = if open == b'{' { b'}' } else { b')' };
                let mut depth = 0usize;
                let mut end = None;
                for (j, &c) in b.iter().enumerate().skip(i + 2) {
                    if c == open {
                        depth += 1;
                    } else if c == close {
                        if depth == 0 {
                            end = Some(j);
                            break;
                        }
                        depth -= 1;
                    }
                }
                let Some(end) = end else {
                    return Err(format!(
                        "unmatched '{}' in \"{}\"",
                        open as char,
                        &text[i..]
                    ));
                };
                let inner = &text[i + 2..end];
                let n = name_len(inner);
                let (name, rest) = inner.split_at(n);
                if name.is_empty() {
                    return Err(format!("bad macro syntax: \"{}\"", &text[i..=end]));
                }
                match rest.as_bytes().first() {
                    None => segs.push(Seg::Ref(name)),
                    Some(b'?') => segs.push(Seg::Cond {
                        name,
                        if_set: true,
                        text: &rest[1..],
                    }),
                    Some(b':') => segs.push(Seg::Cond {
                        name,
                        if_set: false,
                        text: &rest[1..],
                    }),
                    Some(_) => {
                        return Err(format!("bad macro syntax: \"{}\"", &text[i..=end]));
                    }
                }
                i = end + 1;
            }
            Some(_) if name_len(&text[i + 1..]) > 0 => {
                let n = name_len(&text[i + 1..]);
                segs.push(Seg::Ref(&text[i + 1..i + 1 + n]));
                i += 1 + n;
            }
            _ => {
                // A lone '$' (end of text, or not followed by a name): literal.
                segs.push(Seg::Lit("$"));
                i += 1;
            }
        }
        lit = i;
    }
    if lit < b.len() {
        segs.push(Seg::Lit(&text[lit..]));
    }
    Ok(segs)
}

/// Every name a value refers to, with `true` for a plain reference
/// (`$name`) and `false` for a conditional one (`${name?..}`).
fn collect_refs(text: &str, out: &mut Vec<(String, bool)>, depth: usize) {
    if depth > MAX_DEPTH {
        return;
    }
    let Ok(segs) = tokenize(text) else { return };
    for seg in segs {
        match seg {
            Seg::Ref(n) => out.push((n.to_string(), true)),
            Seg::Cond { name, text, .. } => {
                out.push((name.to_string(), false));
                collect_refs(text, out, depth + 1);
            }
            Seg::Lit(_) | Seg::Dollar => {}
        }
    }
}

/// The names a value refers to with plain `$name` / `${name}` references.
#[cfg(test)]
pub(crate) fn referenced_names(text: &str) -> Vec<String> {
    let mut refs = Vec::new();
    collect_refs(text, &mut refs, 0);
    refs.into_iter()
        .filter(|(_, plain)| *plain)
        .map(|(n, _)| n)
        .collect()
}

/// An expansion failure: the parameter to blame (for the line number) and why.
struct ExpandError {
    param: String,
    reason: String,
}

/// One expansion run: the chain of names being expanded (loop detection)
/// and the values already expanded (so shared references cost once).
struct Expander<'a> {
    cf: &'a MainCf,
    stack: Vec<String>,
    memo: HashMap<String, String>,
}

impl Expander<'_> {
    fn root(&self) -> String {
        self.stack.first().cloned().unwrap_or_default()
    }

    /// An error blamed on the parameter being validated (depth, size).
    fn err(&self, reason: String) -> ExpandError {
        let root = self.root();
        ExpandError {
            reason: format!("parameter {root}: {reason}"),
            param: root,
        }
    }

    /// An error blamed on the parameter whose own value is wrong (syntax).
    fn err_here(&self, reason: String) -> ExpandError {
        let here = self.stack.last().cloned().unwrap_or_default();
        ExpandError {
            reason: format!("parameter {here}: {reason}"),
            param: here,
        }
    }

    fn name(&mut self, name: &str) -> Result<String, ExpandError> {
        if let Some(v) = self.memo.get(name) {
            return Ok(v.clone());
        }
        if self.stack.iter().any(|n| n == name) {
            let via = self.stack.last().cloned().unwrap_or_default();
            return Err(ExpandError {
                reason: format!("parameter {name}: recursion loop via {via}"),
                param: name.to_string(),
            });
        }
        if self.stack.len() >= MAX_DEPTH {
            return Err(self.err(format!(
                "too many levels of $name expansion (limit {MAX_DEPTH}) at {name}"
            )));
        }
        self.stack.push(name.to_string());
        let result = self.name_inner(name);
        self.stack.pop();
        let v = result?;
        self.memo.insert(name.to_string(), v.clone());
        Ok(v)
    }

    fn name_inner(&mut self, name: &str) -> Result<String, ExpandError> {
        let def = param_def(name);
        let raw_param = def.is_some_and(|d| d.is_raw());
        if let Some(s) = self.cf.settings.get(name) {
            if raw_param {
                return Ok(s.value.clone());
            }
            let text = s.value.clone();
            return self.text(&text);
        }
        match name {
            "myhostname" => return Ok(self.cf.hostname.clone()),
            "config_directory" => return Ok(self.cf.config_dir.to_string_lossy().into_owned()),
            "mydomain" => {
                let host = self.name("myhostname")?;
                return Ok(domain_of_hostname(&host));
            }
            _ => {}
        }
        match def {
            Some(d) if d.is_raw() => Ok(d.default.to_string()),
            Some(d) => self.text(d.default),
            None => Ok(String::new()),
        }
    }

    fn text(&mut self, text: &str) -> Result<String, ExpandError> {
        let segs = tokenize(text).map_err(|r| self.err_here(r))?;
        let mut out = String::new();
        for seg in segs {
            match seg {
                Seg::Lit(s) => out.push_str(s),
                Seg::Dollar => out.push('$'),
                Seg::Ref(n) => {
                    let v = self.name(n)?;
                    out.push_str(&v);
                }
                Seg::Cond { name, if_set, text } => {
                    let v = self.name(name)?;
                    if v.is_empty() != if_set {
                        let t = self.text(text)?;
                        out.push_str(&t);
                    }
                }
            }
            if out.len() > MAX_EXPANDED {
                return Err(self.err(format!("expanded value longer than {MAX_EXPANDED} bytes")));
            }
        }
        Ok(out)
    }
}

impl MainCf {
    fn empty(file: PathBuf, config_dir: PathBuf) -> MainCf {
        MainCf {
            file,
            config_dir,
            hostname: default_hostname(),
            settings: BTreeMap::new(),
            parse_warnings: Vec::new(),
            warnings: Vec::new(),
        }
    }

    /// Reads CONFIG_DIR/main.cf (missing file = error), sets config_directory = CONFIG_DIR, validates.
    pub fn load(config_dir: &Path) -> Result<MainCf, ConfigError> {
        let path = config_dir.join("main.cf");
        let bytes = std::fs::read(&path)
            .map_err(|e| ConfigError::new(&path, 0, format!("cannot read: {e}")))?;
        let text = String::from_utf8(bytes).map_err(|e| {
            let ok = e.utf8_error().valid_up_to();
            let line = e
                .as_bytes()
                .iter()
                .take(ok)
                .filter(|&&b| b == b'\n')
                .count()
                + 1;
            ConfigError::new(&path, line, "invalid UTF-8")
        })?;
        let mut cf = MainCf::parse(&text, &path)?;
        cf.config_dir = config_dir.to_path_buf();
        cf.validate()?;
        Ok(cf)
    }

    /// Parses text as if read from `path` (config_directory = path's parent dir). Does not validate.
    pub fn parse(text: &str, path: &Path) -> Result<MainCf, ConfigError> {
        let dir = match path.parent() {
            Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
            _ => PathBuf::from("."),
        };
        let mut cf = MainCf::empty(path.to_path_buf(), dir);
        let lines = logical_lines(text).map_err(|(l, r)| ConfigError::new(path, l, r))?;
        for (line, text) in lines {
            let Some((name, value)) = text.split_once('=') else {
                return Err(ConfigError::new(
                    path,
                    line,
                    format!("missing '=' after parameter name: \"{text}\""),
                ));
            };
            let name = name.trim();
            let value = value.trim();
            if name.is_empty() {
                return Err(ConfigError::new(
                    path,
                    line,
                    "missing parameter name before '='",
                ));
            }
            if !is_param_name(name) {
                return Err(ConfigError::new(
                    path,
                    line,
                    format!("bad parameter name: \"{name}\""),
                ));
            }
            if let Some(old) = cf.settings.get(name) {
                cf.parse_warnings.push((
                    line,
                    format!(
                        "{}:{line}: overriding earlier entry at line {}: {name}={value}",
                        path.display(),
                        old.line
                    ),
                ));
            }
            cf.settings.insert(
                name.to_string(),
                Setting {
                    value: value.to_string(),
                    line,
                },
            );
        }
        cf.refresh_warnings();
        Ok(cf)
    }

    /// All defaults, no file (config_directory = /etc/postern).
    pub fn defaults() -> MainCf {
        MainCf::empty(PathBuf::from("main.cf"), PathBuf::from("/etc/postern"))
    }

    /// Sets a value as a master.cf `-o name=value` override would (wins over main.cf).
    pub fn set(&mut self, name: &str, value: &str) {
        self.settings.insert(
            name.to_string(),
            Setting {
                value: value.trim().to_string(),
                line: 0,
            },
        );
        self.refresh_warnings();
    }

    fn location(&self, line: usize) -> String {
        if line == 0 {
            self.file.display().to_string()
        } else {
            format!("{}:{line}", self.file.display())
        }
    }

    /// Rebuilds the warning list: duplicates, unused unknown parameters,
    /// references to parameters that exist nowhere.
    fn refresh_warnings(&mut self) {
        let mut found: Vec<(usize, String)> = self.parse_warnings.clone();
        let mut used: BTreeSet<String> = BTreeSet::new();
        for (name, s) in &self.settings {
            if param_def(name).is_some_and(|d| d.is_raw()) {
                continue;
            }
            let mut refs = Vec::new();
            collect_refs(&s.value, &mut refs, 0);
            for (r, plain) in refs {
                if plain && param_def(&r).is_none() && !self.settings.contains_key(&r) {
                    found.push((
                        s.line,
                        format!(
                            "{}: undefined parameter: {r} (referenced by {name})",
                            self.location(s.line)
                        ),
                    ));
                }
                used.insert(r);
            }
        }
        for (name, s) in &self.settings {
            if s.line != 0 && param_def(name).is_none() && !used.contains(name) {
                found.push((
                    s.line,
                    format!(
                        "{}: unused parameter: {name}={}",
                        self.location(s.line),
                        s.value
                    ),
                ));
            }
        }
        found.sort_by_key(|(l, _)| *l);
        self.warnings = found.into_iter().map(|(_, w)| w).collect();
    }

    fn line_of(&self, name: &str) -> usize {
        self.settings.get(name).map_or(0, |s| s.line)
    }

    fn expand_checked(&self, name: &str) -> Result<String, ConfigError> {
        let mut ex = Expander {
            cf: self,
            stack: Vec::new(),
            memo: HashMap::new(),
        };
        ex.name(name)
            .map_err(|e| ConfigError::new(&self.file, self.line_of(&e.param), e.reason))
    }

    /// Checks every typed parameter parses, expansion has no loops.
    /// Settings are checked in file order first (then `-o` overrides, then
    /// defaults), so the error names the first bad line of main.cf.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let mut set: Vec<(&String, &Setting)> = self.settings.iter().collect();
        set.sort_by_key(|(_, s)| if s.line == 0 { usize::MAX } else { s.line });
        let names = set.into_iter().map(|(n, _)| n.as_str()).chain(
            PARAMETERS
                .iter()
                .map(|d| d.name)
                .filter(|n| !self.is_set(n)),
        );
        for name in names {
            let value = self.expand_checked(name)?;
            if let Some(def) = param_def(name) {
                check_value(def, &value)
                    .map_err(|r| ConfigError::new(&self.file, self.line_of(name), r))?;
            }
        }
        Ok(())
    }

    /// Expands arbitrary text against this configuration (as a value of
    /// main.cf would be); errors (loops, bad syntax) give "".
    pub fn expand(&self, text: &str) -> String {
        let mut ex = Expander {
            cf: self,
            stack: Vec::new(),
            memo: HashMap::new(),
        };
        ex.text(text).unwrap_or_default()
    }

    /// Expanded value; default if unset; "" for an unknown unset name.
    /// A value that cannot be expanded (a loop; validate() reports those at
    /// start-up) reads as "".
    pub fn str(&self, name: &str) -> String {
        self.expand_checked(name).unwrap_or_default()
    }

    fn typed<T>(
        &self,
        name: &str,
        what: &str,
        parse: impl Fn(&str) -> Option<T>,
    ) -> Result<T, ConfigError> {
        let value = self.expand_checked(name)?;
        parse(&value).ok_or_else(|| {
            ConfigError::new(
                &self.file,
                self.line_of(name),
                format!("bad {what} parameter value: {name} = {value}"),
            )
        })
    }

    /// A boolean parameter: yes/no/true/false/1/0/on/off (case-insensitive).
    pub fn bool(&self, name: &str) -> Result<bool, ConfigError> {
        self.typed(name, "boolean", parse_bool)
    }

    /// An integer parameter.
    pub fn int(&self, name: &str) -> Result<i64, ConfigError> {
        self.typed(name, "numerical", parse_int)
    }

    /// A time parameter: "300s" "5m" "1h" "2d" "1w"; a bare number is in
    /// the parameter's default unit from the table (days for
    /// maximal_queue_lifetime, as in Postfix), seconds for unknown names.
    pub fn time(&self, name: &str) -> Result<Duration, ConfigError> {
        let unit = match param_def(name).map(|d| d.kind) {
            Some(ParamKind::Time(unit)) => unit,
            _ => TimeUnit::S,
        };
        self.typed(name, "time", |v| parse_time_in(v, unit))
    }

    /// A numeric parameter within the bounds the table gives it, converted
    /// to the integer type the caller uses (`usize`, `u32`, ...): an error
    /// naming the parameter when it is out of bounds or does not fit, never
    /// a silent clamp. For Int and Size parameters.
    pub fn bounded<T: TryFrom<i64>>(&self, name: &str) -> Result<T, ConfigError> {
        let def = param_def(name);
        let n: i64 = match def.map(|d| d.kind) {
            Some(ParamKind::Size) => {
                let v = self.size(name)?;
                i64::try_from(v).unwrap_or(i64::MAX)
            }
            _ => self.int(name)?,
        };
        let fail = |why: String| ConfigError::new(&self.file, self.line_of(name), why);
        if let Some((lo, hi)) = def.and_then(|d| d.bounds()) {
            if n < lo {
                return Err(fail(format!("invalid {name} parameter value {n} < {lo}")));
            }
            if n > hi {
                return Err(fail(format!("invalid {name} parameter value {n} > {hi}")));
            }
        }
        T::try_from(n)
            .map_err(|_| fail(format!("invalid {name} parameter value {n}: out of range")))
    }

    /// A size parameter in bytes: a plain non-negative integer.
    pub fn size(&self, name: &str) -> Result<u64, ConfigError> {
        self.typed(name, "numerical", parse_size)
    }

    /// A list parameter: expanded, split on commas and white space, empties
    /// dropped (text inside `{ }` stays one element).
    pub fn list(&self, name: &str) -> Vec<String> {
        split_list(&self.str(name))
    }

    /// A path parameter: str() as a PathBuf.
    pub fn path(&self, name: &str) -> PathBuf {
        PathBuf::from(self.str(name))
    }

    /// The value as written in main.cf or given to set(), unexpanded; None when unset.
    pub fn raw(&self, name: &str) -> Option<&str> {
        self.settings.get(name).map(|s| s.value.as_str())
    }

    /// True when the parameter was set in main.cf or by set().
    pub fn is_set(&self, name: &str) -> bool {
        self.settings.contains_key(name)
    }

    /// The configuration directory (where main.cf and master.cf live).
    pub fn config_dir(&self) -> &Path {
        &self.config_dir
    }

    /// The path of main.cf (or "main.cf" for defaults()).
    pub fn file(&self) -> &Path {
        &self.file
    }

    /// Warnings found while reading: unused (unknown, unreferenced)
    /// parameters, references to undefined parameters, duplicate entries.
    pub fn warnings(&self) -> &[String] {
        &self.warnings
    }

    /// The unexpanded value: as set, else the default (computed defaults as
    /// their computed value), else "".
    fn raw_or_default(&self, name: &str) -> String {
        if let Some(v) = self.raw(name) {
            return v.to_string();
        }
        match param_def(name) {
            Some(d) if d.is_computed() => self.str(name),
            Some(d) => d.default.to_string(),
            None => String::new(),
        }
    }

    /// For `postern config`: (name, value) sorted by name. Every table parameter plus
    /// unknown ones that are set; `only_set` = only those set in main.cf/-o (like postconf -n);
    /// `expand` = expanded values (postconf -x), else raw (default value string for unset).
    pub fn effective(&self, only_set: bool, expand: bool) -> Vec<(String, String)> {
        let names: BTreeSet<&str> = PARAMETERS
            .iter()
            .map(|d| d.name)
            .chain(self.settings.keys().map(String::as_str))
            .collect();
        names
            .into_iter()
            .filter(|n| !only_set || self.is_set(n))
            .map(|n| {
                let v = if expand {
                    self.str(n)
                } else {
                    self.raw_or_default(n)
                };
                (n.to_string(), v)
            })
            .collect()
    }
}

#[cfg(test)]
mod tests;
