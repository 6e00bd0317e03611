//! Making supplied strings safe to put in a header field or a report line:
//! control characters out, long lines folded, words that must be atoms made
//! atoms.
//!
//! Everything the notification shows comes from somewhere else (a remote
//! server's reply, an address from the envelope, the configuration), so every
//! value passes through [`clean`] and every line through [`fold`] before it is
//! written: no value can end a line, so none can start a header field, end a
//! header block or put a MIME boundary at the start of a line.

/// Postfix's `line_wrap()` width for report lines (bounce_notify_util.c).
pub const WIDTH: usize = 79;
/// Postfix's indent of a continuation line (four spaces).
pub const INDENT: &str = "    ";
/// The longest piece of one output line, in bytes: RFC 5322 allows 998
/// octets; a word longer than this is cut (the one case folding changes a
/// value by more than white space).
pub const HARD: usize = 900;
/// The longest [`atom`]: a type or a `mail_name`.
pub const ATOM_MAX: usize = 64;
/// The longest [`domain`] (a DNS name has at most 253 characters).
pub const DOMAIN_MAX: usize = 253;

/// The value with every control character (C0, DEL, C1: CR, LF, NUL, tab…)
/// and the Unicode line and paragraph separators replaced by a space, so
/// that it is one line.
pub fn clean(s: &str) -> String {
    s.chars()
        .map(|c| {
            if c.is_control() || c == '\u{2028}' || c == '\u{2029}' {
                ' '
            } else {
                c
            }
        })
        .collect()
}

/// [`clean`], with every non-ASCII character replaced by `?`: for fields of
/// a plain message/delivery-status, which is 7-bit (RFC 3464).
pub fn clean_ascii(s: &str) -> String {
    clean(s)
        .chars()
        .map(|c| if c.is_ascii() { c } else { '?' })
        .collect()
}

/// Whether the text has a character outside US-ASCII.
pub fn is_non_ascii(s: &str) -> bool {
    !s.is_ascii()
}

/// An RFC 5322 atom made from `s` (for a diagnostic, address or MTA-name
/// type, and for the `X-<mail_name>-…` field names): Postfix's
/// transliteration of white space and specials to `-`, extended to control
/// and non-ASCII characters, at most [`ATOM_MAX`] characters (a field name
/// cannot be folded). Empty input gives `fallback`.
pub fn atom(s: &str, fallback: &str) -> String {
    let out: String = s
        .chars()
        .take(ATOM_MAX)
        .map(|c| {
            if c.is_ascii_graphic() && !"()<>@,;:\\\".[]".contains(c) {
                c
            } else {
                '-'
            }
        })
        .collect();
    if out.is_empty() {
        fallback.to_string()
    } else {
        out
    }
}

/// A host name that can stand after `@` and in a Message-Id: letters,
/// digits, `-`, `.` and non-ASCII kept, anything else becomes `-`; at most
/// [`DOMAIN_MAX`] characters, so the line it is in needs no folding.
pub fn domain(s: &str) -> String {
    let out: String = s
        .chars()
        .take(DOMAIN_MAX)
        .map(|c| {
            if c.is_ascii_alphanumeric()
                || c == '-'
                || c == '.'
                || (!c.is_ascii() && !c.is_control())
            {
                c
            } else {
                '-'
            }
        })
        .collect();
    if out.is_empty() {
        "localhost".to_string()
    } else {
        out
    }
}

/// Letters, digits, `-` and `.` only: for the parts of a MIME boundary and
/// a Message-Id that come from a queue ID or a host name.
pub fn token(s: &str, max: usize) -> String {
    s.chars()
        .filter(|c| c.is_ascii_alphanumeric() || *c == '-' || *c == '.')
        .take(max)
        .collect()
}

/// An address for a `To:` header: the local part quoted when it is not a
/// dot-atom (as Postfix's quote_822_local), and the domain part's specials
/// replaced, so that the header holds exactly one address.
pub fn header_address(addr: &str) -> String {
    let addr = clean(addr);
    let (local, domain_part) = match addr.rfind('@') {
        Some(i) if i > 0 => (&addr[..i], Some(&addr[i + 1..])),
        _ => (addr.as_str(), None),
    };
    let atext =
        |c: char| c.is_ascii_alphanumeric() || "!#$%&'*+-/=?^_`{|}~".contains(c) || !c.is_ascii();
    let dot_atom = !local.is_empty()
        && !local.starts_with('.')
        && !local.ends_with('.')
        && !local.contains("..")
        && local.chars().all(|c| c == '.' || atext(c));
    let mut out = if dot_atom || local.is_empty() {
        local.to_string()
    } else {
        let mut q = String::from("\"");
        for c in local.chars() {
            if c == '"' || c == '\\' {
                q.push('\\');
            }
            q.push(c);
        }
        q.push('"');
        q
    };
    if let Some(d) = domain_part {
        out.push('@');
        out.extend(
            d.chars()
                .map(|c| if " <>(),;:\\\"@".contains(c) { '-' } else { c }),
        );
    }
    out
}

/// The lines of `line` (already [`clean`]ed) folded as Postfix's
/// `line_wrap(line, 79, 4)`: broken at spaces so that a line is at most
/// [`WIDTH`] characters where a space allows it, the continuation lines
/// starting with [`INDENT`]. Spaces at a break are dropped and trailing
/// spaces trimmed, so no line is empty or white space only after the first;
/// a word longer than [`HARD`] bytes is cut there.
pub fn fold(line: &str) -> Vec<String> {
    let mut lines = Vec::new();
    let mut rest = line.trim_end_matches(' ');
    let mut first = true;
    while !rest.is_empty() || first {
        let limit = if first { WIDTH } else { WIDTH - INDENT.len() };
        let (piece, next) = split_piece(rest, limit);
        if first {
            lines.push(piece.to_string());
        } else {
            lines.push(format!("{INDENT}{piece}"));
        }
        rest = next.trim_start_matches(' ');
        first = false;
    }
    lines
}

/// The first piece of `s` for a line of `limit` characters, and the rest.
/// The piece never starts with a space unless `s` does (only the first line
/// can), and is never empty unless `s` is.
fn split_piece(s: &str, limit: usize) -> (&str, &str) {
    if s.chars().count() <= limit && s.len() <= HARD {
        return (s, "");
    }
    // The last space at or before `limit` characters that leaves a
    // non-blank piece before it.
    let mut best = None;
    for (n, (i, c)) in s.char_indices().enumerate() {
        if n > limit || i > HARD {
            break;
        }
        if c == ' ' && !s[..i].trim_end_matches(' ').is_empty() {
            best = Some(i);
        }
    }
    // Otherwise the first such space after it (a long word stays whole, as
    // in Postfix), within the hard limit.
    if best.is_none() {
        best = s
            .char_indices()
            .take_while(|(i, _)| *i <= HARD)
            .find(|(i, c)| *c == ' ' && !s[..*i].trim_end_matches(' ').is_empty())
            .map(|(i, _)| i);
    }
    let cut = match best {
        Some(i) => i,
        None if s.len() <= HARD => return (s, ""),
        None => {
            // A word too long for any line: cut it at a character boundary.
            let mut i = HARD;
            while !s.is_char_boundary(i) {
                i -= 1;
            }
            i
        }
    };
    (s[..cut].trim_end_matches(' '), &s[cut..])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn control_characters_become_spaces() {
        assert_eq!(
            clean("a\r\nB: c\0\u{7f}\u{85}\u{2028}d\te"),
            "a  B: c    d e"
        );
        assert_eq!(clean_ascii("é\nx"), "? x");
    }

    #[test]
    fn atoms_and_tokens() {
        assert_eq!(atom("Post ern(x)", "X"), "Post-ern-x-");
        assert_eq!(atom("", "X"), "X");
        assert_eq!(atom("smtp", "X"), "smtp");
        assert_eq!(atom(&"a".repeat(100), "X").len(), ATOM_MAX);
        assert_eq!(domain(&"é".repeat(300)).chars().count(), DOMAIN_MAX);
        assert_eq!(token("AB12/é .c-d", 5), "AB12.");
        assert_eq!(domain("mx.example.net"), "mx.example.net");
        assert_eq!(domain("a b<c>"), "a-b-c-");
    }

    #[test]
    fn addresses_are_quoted_for_to() {
        assert_eq!(header_address("user@example.org"), "user@example.org");
        assert_eq!(header_address("a b@example.org"), "\"a b\"@example.org");
        assert_eq!(header_address("x\"y@ex"), "\"x\\\"y\"@ex");
        assert_eq!(header_address("u@a>, v@b"), "\"u@a>, v\"@b");
        assert_eq!(header_address("u@a>, v"), "u@a---v");
        assert_eq!(header_address(""), "");
    }

    #[test]
    fn short_lines_stay_whole() {
        assert_eq!(fold("Status: 5.1.1"), vec!["Status: 5.1.1"]);
        assert_eq!(fold(""), vec![""]);
        assert_eq!(fold("x   "), vec!["x"]);
    }

    #[test]
    fn long_lines_fold_at_spaces_like_postfix() {
        let line = "Diagnostic-Code: smtp; 550 5.1.1 <nobody@refuse.lab>: Recipient address rejected: User unknown in virtual mailbox table";
        let lines = fold(line);
        assert_eq!(
            lines,
            vec![
                "Diagnostic-Code: smtp; 550 5.1.1 <nobody@refuse.lab>: Recipient address",
                "    rejected: User unknown in virtual mailbox table",
            ]
        );
        for l in &lines {
            assert!(l.chars().count() <= WIDTH);
        }
        assert_eq!(
            lines.join(" ").split_whitespace().collect::<Vec<_>>(),
            line.split_whitespace().collect::<Vec<_>>()
        );
    }

    #[test]
    fn long_words_stay_whole_up_to_the_hard_limit() {
        let word = "x".repeat(200);
        let lines = fold(&format!("A: {word} b"));
        assert_eq!(
            lines,
            vec!["A:".to_string(), format!("    {word}"), "    b".to_string()]
        );
        let huge = "é".repeat(2000);
        let lines = fold(&huge);
        assert!(lines.len() > 1);
        for l in &lines {
            assert!(l.len() <= HARD + INDENT.len());
            assert!(!l.trim().is_empty());
        }
        assert_eq!(lines.concat().replace(' ', ""), huge);
    }

    #[test]
    fn continuation_lines_are_never_blank() {
        let lines = fold(&format!("A:{}b", " ".repeat(300)));
        assert_eq!(lines, vec!["A:", "    b"]);
        let lines = fold(&" ".repeat(300));
        assert_eq!(lines, vec![""]);
    }
}
