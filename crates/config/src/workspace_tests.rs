//! Rules the whole workspace's source must keep, checked against the one
//! parameter table so they cannot drift:
//! - every daemon's library says which main.cf parameters it reads in a
//!   `PARAMETERS:` header; each name there is a parameter of the table,
//!   and every parameter the crate's code reads by name (`main.time("x")`
//!   and the other typed accessors) is in its header;
//! - every crate forbids unsafe code, or denies it and allows it only on
//!   blocks that carry a `// SAFETY:` comment.

use crate::params::{PARAMETERS, param_def};
use std::path::{Path, PathBuf};

/// The programs master runs (each has a PARAMETERS header).
const DAEMONS: &[&str] = &[
    "master", "smtpd", "cleanup", "qmgr", "local", "pickup", "postdrop", "auth",
];

fn crates_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    let mut entries: Vec<PathBuf> = entries.filter_map(|e| e.ok().map(|e| e.path())).collect();
    entries.sort();
    for p in entries {
        if p.is_dir() {
            rust_files(&p, out);
        } else if p.extension().is_some_and(|e| e == "rs") {
            out.push(p);
        }
    }
}

/// The code of a file without its test modules (they sit at the end).
fn non_test_code(text: &str) -> &str {
    text.find("#[cfg(test)]").map_or(text, |i| &text[..i])
}

/// The names in a crate's `//! PARAMETERS:` header.
fn header(lib: &str) -> Option<Vec<String>> {
    let mut lines = lib
        .lines()
        .skip_while(|l| !l.starts_with("//! PARAMETERS:"));
    let first = lines.next()?;
    let mut text = first.trim_start_matches("//! PARAMETERS:").to_string();
    for l in lines {
        match l.strip_prefix("//!") {
            Some(rest) if !rest.trim().is_empty() => {
                text.push(' ');
                text.push_str(rest);
            }
            _ => break,
        }
    }
    // Parenthesised remarks are prose, not names.
    let mut names = String::new();
    let mut depth = 0usize;
    for c in text.chars() {
        match c {
            '(' => depth += 1,
            ')' => depth = depth.saturating_sub(1),
            c if depth == 0 => names.push(c),
            _ => {}
        }
    }
    Some(
        names
            .split(|c: char| c == ',' || c.is_whitespace())
            .map(|w| w.trim_end_matches('.'))
            .filter(|w| !w.is_empty())
            .map(str::to_string)
            .collect(),
    )
}

/// Parameter names the code reads with a typed accessor and a literal name.
fn names_read(code: &str) -> Vec<String> {
    let mut out = Vec::new();
    for accessor in [
        ".str(\"", ".time(\"", ".int(\"", ".bool(\"", ".size(\"", ".list(\"", ".path(\"",
    ] {
        let mut rest = code;
        while let Some(i) = rest.find(accessor) {
            rest = &rest[i + accessor.len()..];
            if let Some(end) = rest.find('"') {
                let name = &rest[..end];
                if param_def(name).is_some() {
                    out.push(name.to_string());
                }
            }
        }
    }
    out.sort();
    out.dedup();
    out
}

#[test]
fn daemon_parameter_headers_match_the_table_and_the_code() {
    let mut problems = Vec::new();
    for daemon in DAEMONS {
        let dir = crates_dir().join(daemon).join("src");
        let lib = std::fs::read_to_string(dir.join("lib.rs")).expect("lib.rs");
        let Some(listed) = header(&lib) else {
            problems.push(format!(
                "crates/{daemon}: no `//! PARAMETERS:` header in src/lib.rs"
            ));
            continue;
        };
        for name in &listed {
            if param_def(name).is_none() {
                problems.push(format!(
                    "crates/{daemon}: header names {name:?}, not a parameter"
                ));
            }
        }
        let mut files = Vec::new();
        rust_files(&dir, &mut files);
        for f in files {
            if f.file_name().is_some_and(|n| n == "tests.rs") {
                continue;
            }
            let text = std::fs::read_to_string(&f).expect("source");
            for name in names_read(non_test_code(&text)) {
                if !listed.contains(&name) {
                    problems.push(format!(
                        "crates/{daemon}: {} reads {name} but the PARAMETERS header does not list it",
                        f.display()
                    ));
                }
            }
        }
    }
    assert!(problems.is_empty(), "\n{}", problems.join("\n"));
    assert!(!PARAMETERS.is_empty());
}

#[test]
fn every_crate_forbids_unsafe_code_or_explains_each_use() {
    let mut problems = Vec::new();
    let mut crates: Vec<PathBuf> = std::fs::read_dir(crates_dir())
        .expect("crates/")
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.join("Cargo.toml").is_file())
        .collect();
    crates.sort();
    for krate in crates {
        let src = krate.join("src");
        let mut files = Vec::new();
        rust_files(&src, &mut files);
        let roots: Vec<&PathBuf> = files
            .iter()
            .filter(|f| {
                f.parent() == Some(src.as_path())
                    && f.file_name()
                        .is_some_and(|n| n == "lib.rs" || n == "main.rs")
            })
            .collect();
        for root in roots {
            let text = std::fs::read_to_string(root).expect("source");
            if !text.contains("#![forbid(unsafe_code)]") && !text.contains("#![deny(unsafe_code)]")
            {
                problems.push(format!(
                    "{}: neither forbid nor deny(unsafe_code)",
                    root.display()
                ));
            }
        }
        for f in &files {
            if f.ends_with("config/src/workspace_tests.rs") {
                continue; // this file names the words it looks for
            }
            let text = std::fs::read_to_string(f).expect("source");
            let lines: Vec<&str> = text.lines().collect();
            for (i, l) in lines.iter().enumerate() {
                let code = l.split("//").next().unwrap_or("");
                if !(code.contains("unsafe {")
                    || code.contains("unsafe fn")
                    || code.contains("unsafe impl"))
                {
                    continue;
                }
                let explained = lines[i.saturating_sub(6)..i]
                    .iter()
                    .chain(std::iter::once(l))
                    .any(|p| p.contains("SAFETY"));
                if !explained {
                    problems.push(format!(
                        "{}:{}: unsafe without a SAFETY comment",
                        f.display(),
                        i + 1
                    ));
                }
            }
        }
    }
    assert!(problems.is_empty(), "\n{}", problems.join("\n"));
}
