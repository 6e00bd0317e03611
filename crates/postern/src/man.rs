//! The postern(1) manual page, rendered from the sources it describes so
//! that it cannot drift from them: the COMMANDS section from [`crate::USAGE`],
//! the SYNOPSIS from that and [`crate::sendmail::USAGE`], and the PARAMETERS
//! section from the parameter table ([`postern_config::PARAMETERS`], with the
//! type and default column of [`postern_config::parameter_table_markdown`],
//! which is what docs/configuration.md shows).
//!
//! The rendered page is committed as `docs/postern.1` and installed by the
//! Debian package as `/usr/share/man/man1/postern.1.gz`. A unit test fails
//! when the committed file differs from [`render`]; rewrite it with
//! `POSTERN_BLESS=1 cargo test -p postern man_page`.

use postern_config::{PARAMETERS, parameter_table_markdown};

/// Where the rendered page lives in the repository (relative to the root).
pub const PAGE_PATH: &str = "docs/postern.1";

/// The whole page, in roff (man macros).
pub fn render() -> String {
    let mut out = String::new();
    out.push_str(
        ".\\\" postern(1). Generated from crates/postern/src/man.rs (USAGE and the\n\
         .\\\" parameter table); do not edit: rewrite it with\n\
         .\\\" POSTERN_BLESS=1 cargo test -p postern man_page\n",
    );
    out.push_str(&format!(
        ".TH POSTERN 1 \"\" \"Postern {}\" \"Postern Manual\"\n",
        env!("CARGO_PKG_VERSION")
    ));
    out.push_str(".SH NAME\npostern \\- Postern mail system control program\n");

    let usage = Usage::parse(crate::USAGE);
    out.push_str(".SH SYNOPSIS\n");
    out.push_str(&synopsis_words(&usage.synopsis, true));
    out.push_str("\n.br\n");
    out.push_str(&synopsis_words(
        crate::sendmail::USAGE
            .strip_prefix("usage: ")
            .unwrap_or(crate::sendmail::USAGE),
        false,
    ));
    out.push('\n');
    out.push_str(".br\n.B mailq\n.br\n.B newaliases\n");

    out.push_str(".SH DESCRIPTION\n");
    for para in DESCRIPTION {
        out.push_str(".PP\n");
        out.push_str(&text(para));
        out.push('\n');
    }
    for para in &usage.notes {
        out.push_str(".PP\n");
        out.push_str(&text(para));
        out.push('\n');
    }

    out.push_str(".SH COMMANDS\n");
    for c in &usage.commands {
        out.push_str(".TP\n");
        out.push_str(&synopsis_words(&c.head, true));
        out.push('\n');
        out.push_str(&text(&c.description));
        out.push('\n');
    }

    out.push_str(".SH PARAMETERS\n.PP\n");
    out.push_str(&text(
        "Every parameter of `main.cf`, with its type and default. \
         `postern config` prints the effective values, `postern config -n` \
         only those set in main.cf, `postern config -d` the defaults.",
    ));
    out.push('\n');
    let table = markdown_rows(&parameter_table_markdown());
    for def in PARAMETERS {
        let (kind, default) = table
            .iter()
            .find(|r| r.first().map(String::as_str) == Some(&format!("`{}`", def.name)))
            .map(|r| (r[1].clone(), r[2].clone()))
            .unwrap_or_else(|| (def.kind.as_str().to_owned(), format!("`{}`", def.default)));
        out.push_str(".TP\n");
        out.push_str(&format!(".B {}\n", escape(def.name)));
        out.push_str(&format!(
            "({}; default: {})\n.br\n",
            markdown(&kind),
            markdown(&default)
        ));
        out.push_str(&text(def.doc));
        out.push('\n');
    }

    out.push_str(".SH FILES\n");
    for (path, what) in FILES {
        out.push_str(&format!(".TP\n.I {}\n{}\n", escape(path), text(what)));
    }

    out.push_str(".SH SEE ALSO\n");
    out.push_str(&text(SEE_ALSO));
    out.push('\n');
    out
}

/// The DESCRIPTION section (markdown-ish: `code` becomes bold).
const DESCRIPTION: &[&str] = &[
    "Postern is a mail system built the way Postfix is: small programs \
     (`master`, `smtpd`, `cleanup`, `qmgr`, `local`, `pickup`, `postdrop`, \
     `auth`), each doing one job as its own unprivileged user, connected \
     through queue directories and Unix sockets and supervised by `master`, \
     which reads `master.cf`. The site's configuration is `main.cf`, with \
     Postfix's parameter names.",
    "`postern` is the one command an administrator types: it starts, stops \
     and reloads the mail system, checks and prints the configuration, \
     installs users, groups and directories, and manages TLS certificates \
     and passwords. It runs as its caller; only `install` needs root.",
    "Called as `sendmail`, `mailq` or `newaliases` (the package installs \
     those names as symbolic links to `postern`), it is the local \
     submission command: `sendmail` hands a message to `postdrop`, which \
     queues it even while the mail system is down; `mailq` lists the queue; \
     `newaliases` checks the alias files of `alias_maps` (Postern reads \
     aliases as text, so there is no database to rebuild).",
];

/// The FILES section: (path, what).
const FILES: &[(&str, &str)] = &[
    (
        "/etc/postern/main.cf",
        "Parameters (see PARAMETERS); `name = value` lines.",
    ),
    (
        "/etc/postern/master.cf",
        "The services `master` runs, in Postfix's columns.",
    ),
    (
        "/etc/postern/tls/cert.pem, /etc/postern/tls/key.pem",
        "smtpd's certificate and key (`postern install` makes a self-signed pair when neither exists).",
    ),
    (
        "/etc/aliases",
        "The alias table of the shipped main.cf (`postern install` creates it with `postmaster: root` when missing).",
    ),
    (
        "/var/spool/postern",
        "The queue (`queue_directory`) and the services' sockets.",
    ),
    (
        "/usr/libexec/postern",
        "The service programs (`daemon_directory`).",
    ),
    (
        "/usr/share/doc/postern",
        "The documentation: configuration, queue, security, TLS, submission.",
    ),
];

/// The SEE ALSO section.
const SEE_ALSO: &str = "aliases(5), sendmail(8), postfix(1), postconf(5), systemctl(1); \
     /usr/share/doc/postern/configuration.md, security.md, tls.md.";

/// USAGE, taken apart.
#[derive(Debug, Default, PartialEq, Eq)]
struct Usage {
    /// The first line without "usage: ".
    synopsis: String,
    /// Each command of the "commands:" list.
    commands: Vec<CommandDoc>,
    /// Paragraphs after the list.
    notes: Vec<String>,
}

/// One command of USAGE's list.
#[derive(Debug, PartialEq, Eq)]
struct CommandDoc {
    /// The command and its arguments ("config [-n] [-d] [-x] [NAME...]").
    head: String,
    /// The description, continuation lines joined with spaces.
    description: String,
}

impl Usage {
    /// Reads USAGE's layout: `usage: ...`, a blank line, `commands:`, one
    /// entry per line indented by two spaces (command, then two or more
    /// spaces and the description, or the description alone on the
    /// following, deeper indented lines), then free paragraphs.
    fn parse(usage: &str) -> Usage {
        let mut u = Usage::default();
        let mut in_commands = false;
        let mut after_commands = false;
        let mut para = String::new();
        for line in usage.lines() {
            if let Some(s) = line.strip_prefix("usage: ") {
                u.synopsis = s.trim().to_owned();
                continue;
            }
            if line.trim() == "commands:" {
                in_commands = true;
                continue;
            }
            if in_commands {
                if line.trim().is_empty() {
                    if !u.commands.is_empty() {
                        in_commands = false;
                        after_commands = true;
                    }
                    continue;
                }
                let indent = line.len() - line.trim_start().len();
                if indent <= 2 {
                    let body = line.trim();
                    let (head, desc) = match body.find("  ") {
                        Some(i) => (body[..i].trim(), body[i..].trim()),
                        None => (body, ""),
                    };
                    u.commands.push(CommandDoc {
                        head: head.to_owned(),
                        description: desc.to_owned(),
                    });
                } else if let Some(c) = u.commands.last_mut() {
                    if !c.description.is_empty() {
                        c.description.push(' ');
                    }
                    c.description.push_str(line.trim());
                }
                continue;
            }
            if after_commands || !u.synopsis.is_empty() {
                if line.trim().is_empty() {
                    if !para.is_empty() {
                        u.notes.push(std::mem::take(&mut para));
                    }
                } else {
                    if !para.is_empty() {
                        para.push(' ');
                    }
                    para.push_str(line.trim());
                }
            }
        }
        if !para.is_empty() {
            u.notes.push(para);
        }
        u
    }
}

/// Splits a markdown table into rows of cells (header and separator rows
/// dropped); `\|` inside a cell is a literal bar.
fn markdown_rows(table: &str) -> Vec<Vec<String>> {
    let mut rows = Vec::new();
    for line in table.lines().skip(2) {
        let line = line.trim();
        let inner = line
            .strip_prefix('|')
            .and_then(|l| l.strip_suffix('|'))
            .unwrap_or(line);
        let mut cells = vec![String::new()];
        let mut chars = inner.chars().peekable();
        while let Some(c) = chars.next() {
            match c {
                '\\' if chars.peek() == Some(&'|') => {
                    chars.next();
                    cells.last_mut().expect("one cell").push('|');
                }
                '|' => cells.push(String::new()),
                c => cells.last_mut().expect("one cell").push(c),
            }
        }
        rows.push(cells.into_iter().map(|c| c.trim().to_owned()).collect());
    }
    rows
}

/// Escapes text for roff: backslashes, hyphens (as \- so that options and
/// names copy as ASCII), and nothing else (line starts are handled by
/// [`text`]).
fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '\\' => out.push_str("\\e"),
            '-' => out.push_str("\\-"),
            c => out.push(c),
        }
    }
    out
}

/// Inline markdown to roff: `code` is bold, *emphasis* italic; the rest
/// escaped.
fn markdown(s: &str) -> String {
    let mut out = String::new();
    let mut rest = s;
    while let Some(i) = rest.find(['`', '*']) {
        let delim = &rest[i..i + 1];
        let Some(len) = rest[i + 1..].find(delim) else {
            break;
        };
        out.push_str(&escape(&rest[..i]));
        let inner = &rest[i + 1..i + 1 + len];
        let font = if delim == "`" { "\\fB" } else { "\\fI" };
        out.push_str(&format!("{font}{}\\fR", escape(inner)));
        rest = &rest[i + 2 + len..];
    }
    out.push_str(&escape(rest));
    out
}

/// A paragraph of inline markdown as roff text lines: never starting with
/// `.` or `'` (which would be a request).
fn text(s: &str) -> String {
    let t = markdown(s.trim());
    if t.starts_with('.') || t.starts_with('\'') {
        format!("\\&{t}")
    } else {
        t
    }
}

/// A command line (synopsis or command head) as roff: the first word and
/// options bold, placeholders italic, brackets and the rest roman.
/// Placeholders are words with capitals ("USER"); other lower-case words
/// are literal sub-commands ("tls selfsigned") when `lowercase_literal`,
/// else placeholders too (sendmail's "[-f sender]").
fn synopsis_words(s: &str, lowercase_literal: bool) -> String {
    let mut out = String::new();
    for (n, word) in s.split(' ').enumerate() {
        if n > 0 {
            out.push(' ');
        }
        let (lead, core, tail) = split_brackets(word);
        out.push_str(&escape(lead));
        let literal = n == 0
            || core.starts_with('-')
            || (lowercase_literal && core.chars().all(|c| c.is_ascii_lowercase()));
        if core.is_empty() || !core.chars().any(|c| c.is_ascii_alphabetic()) {
            out.push_str(&escape(core));
        } else if literal {
            out.push_str(&format!("\\fB{}\\fR", escape(core)));
        } else {
            out.push_str(&format!("\\fI{}\\fR", escape(core)));
        }
        out.push_str(&escape(tail));
    }
    if out.starts_with('.') || out.starts_with('\'') {
        format!("\\&{out}")
    } else {
        out
    }
}

/// Splits "[--check]" into ("[", "--check", "]"), "[NAME...]" into ("[",
/// "NAME", "...]"), "-bm|-bs" into ("", "-bm|-bs", "").
fn split_brackets(word: &str) -> (&str, &str, &str) {
    let start = word.find(|c| c != '[').unwrap_or(word.len());
    let end = word
        .rfind(|c: char| c != ']' && c != '.')
        .map(|i| i + 1)
        .unwrap_or(start)
        .max(start);
    (&word[..start], &word[start..end], &word[end..])
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    #[test]
    fn man_page() {
        let want = render();
        let path = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../..")
            .join(PAGE_PATH);
        if std::env::var_os("POSTERN_BLESS").is_some() {
            std::fs::write(&path, &want).expect("write docs/postern.1");
            return;
        }
        let have = std::fs::read_to_string(&path).unwrap_or_default();
        assert!(
            have == want,
            "{PAGE_PATH} differs from the rendering of USAGE and the parameter \
             table (crates/postern/src/man.rs); rewrite it with\n    \
             POSTERN_BLESS=1 cargo test -p postern man_page\nand commit it"
        );
    }

    #[test]
    fn usage_is_taken_apart() {
        let u = Usage::parse(crate::USAGE);
        assert_eq!(u.synopsis, "postern [-c CONFIG_DIR] COMMAND [ARGS]");
        let heads: Vec<&str> = u.commands.iter().map(|c| c.head.as_str()).collect();
        for want in ["start", "stop", "install [--check]", "demo [DIR]"] {
            assert!(heads.contains(&want), "{want} in {heads:?}");
        }
        let config = u
            .commands
            .iter()
            .find(|c| c.head.starts_with("config"))
            .expect("config");
        assert!(
            config
                .description
                .starts_with("print main.cf parameters, like postconf (-n:"),
            "{}",
            config.description
        );
        assert!(u.notes.iter().any(|n| n.contains("MAIL_CONFIG")));
        // A command whose description starts on the next line.
        let u = Usage::parse(
            "usage: x\n\ncommands:\n  long command with args\n                     does it\n  b  two\n\nnote\n",
        );
        assert_eq!(
            u.commands,
            [
                CommandDoc {
                    head: "long command with args".into(),
                    description: "does it".into()
                },
                CommandDoc {
                    head: "b".into(),
                    description: "two".into()
                }
            ]
        );
        assert_eq!(u.notes, ["note"]);
    }

    #[test]
    fn every_command_and_parameter_is_in_the_page() {
        let page = render();
        for c in Usage::parse(crate::USAGE).commands {
            let name = c.head.split(' ').next().expect("name");
            assert!(
                page.contains(&format!(".TP\n\\fB{}\\fR", escape(name))),
                "{name}"
            );
        }
        for def in PARAMETERS {
            assert!(
                page.contains(&format!(".B {}\n", escape(def.name))),
                "{}",
                def.name
            );
        }
        // Computed defaults show how they are computed, as in the docs.
        assert!(page.contains("the system host name"), "myhostname");
        // No line of text is taken for a request.
        for line in page.lines() {
            if line.starts_with('.') {
                let req = line
                    .strip_prefix('.')
                    .unwrap_or("")
                    .split(' ')
                    .next()
                    .unwrap_or("");
                assert!(
                    ["\\\"", "TH", "SH", "PP", "TP", "B", "I", "br"].contains(&req),
                    "unexpected request: {line}"
                );
            }
            assert!(!line.starts_with('\''), "{line}");
        }
    }

    #[test]
    fn roff_escapes() {
        assert_eq!(escape("a-b\\c"), "a\\-b\\ec");
        assert_eq!(
            markdown("use `postern map` *now*"),
            "use \\fBpostern map\\fR \\fInow\\fR"
        );
        assert_eq!(markdown("a `b"), "a `b");
        assert_eq!(text(".hidden"), "\\&.hidden");
        assert_eq!(split_brackets("[--check]"), ("[", "--check", "]"));
        assert_eq!(split_brackets("[NAME...]"), ("[", "NAME", "...]"));
        assert_eq!(split_brackets("COMMAND"), ("", "COMMAND", ""));
        assert_eq!(
            synopsis_words("install [--check]", true),
            "\\fBinstall\\fR [\\fB\\-\\-check\\fR]"
        );
        assert_eq!(
            synopsis_words("passwd USER", true),
            "\\fBpasswd\\fR \\fIUSER\\fR"
        );
        assert_eq!(
            synopsis_words("sendmail [-f sender] [recipient ...]", false),
            "\\fBsendmail\\fR [\\fB\\-f\\fR \\fIsender\\fR] [\\fIrecipient\\fR ...]"
        );
    }
}
