//! The message header as cleanup sees it: where it ends, which fields are
//! there, and the fields cleanup adds (Received, Message-ID, Date, From).
//!
//! Pure code over LF-terminated content, so it can be tested on its own.

use std::time::SystemTime;

/// What cleanup learned from a message's header section.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct HeaderSummary {
    /// Bytes of `content` that belong to the header (including the blank
    /// separator line when there is one).
    pub header_len: usize,
    /// True when the header is not followed by a blank line and cleanup must
    /// insert one before the body (Postfix does the same).
    pub needs_separator: bool,
    /// The Message-ID value, if present.
    pub message_id: Option<String>,
    /// A Date field is present.
    pub has_date: bool,
    /// A From field is present.
    pub has_from: bool,
    /// Number of Received (and Delivered-To) fields: the hop count.
    pub hops: usize,
}

/// Is this line the start of a header field ("Name: value")?
fn is_field_start(line: &[u8]) -> bool {
    let Some(colon) = line.iter().position(|&b| b == b':') else {
        return false;
    };
    colon > 0
        && line[..colon]
            .iter()
            .all(|&b| (33..=126).contains(&b) && b != b':')
}

/// Scans the header section at the start of `content` (LF line endings).
/// `complete` says whether `content` holds the whole message; when false and
/// no header end is found yet, `None` asks for more bytes.
pub fn scan(content: &[u8], complete: bool) -> Option<HeaderSummary> {
    let mut s = HeaderSummary::default();
    let mut pos = 0;
    let mut current: Option<(usize, usize)> = None; // current field (start, end)
    let mut fields: Vec<(usize, usize)> = Vec::new();
    loop {
        let rest = &content[pos..];
        let (line, next) = match rest.iter().position(|&b| b == b'\n') {
            Some(i) => (&rest[..i], pos + i + 1),
            None if complete => (rest, content.len()),
            None => return None,
        };
        if rest.is_empty() {
            s.header_len = pos;
            break;
        }
        if line.is_empty() {
            s.header_len = next;
            break;
        }
        if (line[0] == b' ' || line[0] == b'\t') && current.is_some() {
            if let Some(c) = current.as_mut() {
                c.1 = next;
            }
        } else if is_field_start(line) {
            if let Some(c) = current.take() {
                fields.push(c);
            }
            current = Some((pos, next));
        } else {
            // First line that is not a header field: the body starts here.
            s.header_len = pos;
            s.needs_separator = true;
            break;
        }
        pos = next;
        if pos >= content.len() {
            s.header_len = pos;
            break;
        }
    }
    if let Some(c) = current.take() {
        fields.push(c);
    }
    for (a, b) in fields {
        let f = &content[a..b];
        let colon = f.iter().position(|&c| c == b':').unwrap_or(0);
        let name = String::from_utf8_lossy(&f[..colon]).to_ascii_lowercase();
        let value = || {
            let v = String::from_utf8_lossy(&f[colon + 1..]);
            v.split_whitespace().collect::<Vec<_>>().join(" ")
        };
        match name.as_str() {
            "message-id" => s.message_id = Some(value()),
            "date" => s.has_date = true,
            "from" => s.has_from = true,
            "received" | "delivered-to" => s.hops += 1,
            _ => {}
        }
    }
    if s.header_len == content.len() && !content.is_empty() && s.needs_separator {
        s.needs_separator = false;
    }
    Some(s)
}

/// RFC 5322 date in local time (see postern-mailtime).
pub use postern_mailtime::rfc5322 as rfc5322_date;

/// "YYYYMMDDhhmmss" in local time, for Message-IDs.
pub use postern_mailtime::compact as compact_timestamp;

/// Where a message came from, as the Received header tells it.
#[derive(Debug, Default, Clone)]
pub struct Origin {
    /// HELO/EHLO argument.
    pub helo: Option<String>,
    /// Reverse-DNS name of the client ("unknown" when none).
    pub client_name: Option<String>,
    /// Client IP address.
    pub client_address: Option<String>,
    /// "SMTP", "ESMTP", "ESMTPS", "ESMTPA", "ESMTPSA", or "local" for sendmail.
    pub protocol: Option<String>,
    /// TLS details for the Received comment, e.g. "(using TLSv1.3 with cipher ...)".
    pub tls: Option<String>,
    /// Local user for mail submitted by sendmail.
    pub local_user: Option<String>,
    /// Authenticated SASL user, for the Received comment.
    pub sasl_username: Option<String>,
}

impl Origin {
    /// Reads the attributes a client of cleanup sent with Open.
    pub fn from_attributes(attrs: &[(String, String)]) -> Origin {
        let get = |n: &str| {
            attrs
                .iter()
                .find(|(k, _)| k == n)
                .map(|(_, v)| v.clone())
                .filter(|v| !v.is_empty())
        };
        Origin {
            helo: get("helo_name"),
            client_name: get("client_name"),
            client_address: get("client_address"),
            protocol: get("protocol"),
            tls: get("tls_info"),
            local_user: get("local_user"),
            sasl_username: get("sasl_username"),
        }
    }
}

/// Removes characters that would break a header line (CR, LF, other controls).
fn clean(s: &str) -> String {
    s.chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect()
}

/// Builds the Received header (folded, LF line endings), shaped like Postfix's:
/// `Received: from HELO (NAME [ADDR])\n\tby HOST (Postern) with ESMTP id ID\n\tfor <rcpt>; DATE\n`
pub fn received_header(
    origin: &Origin,
    myhostname: &str,
    mail_name: &str,
    queue_id: &str,
    single_rcpt: Option<&str>,
    now: SystemTime,
) -> String {
    let mut h = String::from("Received: ");
    if let Some(addr) = &origin.client_address {
        let helo = origin
            .helo
            .as_deref()
            .map(clean)
            .unwrap_or_else(|| "unknown".into());
        let name = origin
            .client_name
            .as_deref()
            .map(clean)
            .unwrap_or_else(|| "unknown".into());
        h.push_str(&format!("from {} ({} [{}])", helo, name, clean(addr)));
        if let Some(tls) = &origin.tls {
            h.push_str(&format!("\n\t({})", clean(tls)));
        }
        if let Some(user) = &origin.sasl_username {
            h.push_str(&format!("\n\t(Authenticated sender: {})", clean(user)));
        }
        h.push_str("\n\t");
    } else if let Some(user) = &origin.local_user {
        h.push_str(&format!(
            "by {} ({}, from userid {})\n\t",
            clean(myhostname),
            clean(mail_name),
            clean(user)
        ));
        h.push_str(&format!("id {}", queue_id));
        if let Some(r) = single_rcpt {
            h.push_str(&format!("\n\tfor <{}>", clean(r)));
        }
        h.push_str(&format!("; {}\n", rfc5322_date(now)));
        return h;
    }
    let proto = origin
        .protocol
        .as_deref()
        .map(clean)
        .unwrap_or_else(|| "local".into());
    h.push_str(&format!(
        "by {} ({}) with {} id {}",
        clean(myhostname),
        clean(mail_name),
        proto,
        queue_id
    ));
    if let Some(r) = single_rcpt {
        h.push_str(&format!("\n\tfor <{}>", clean(r)));
    }
    h.push_str(&format!("; {}\n", rfc5322_date(now)));
    h
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::UNIX_EPOCH;

    #[test]
    fn finds_the_end_of_the_header_and_its_fields() {
        let m = b"From: a@b\nSubject: hi\n  folded\nMessage-ID:  <x@y>\nReceived: one\n\nbody\n";
        let s = scan(m, true).unwrap();
        assert_eq!(&m[s.header_len..], b"body\n");
        assert!(!s.needs_separator);
        assert_eq!(s.message_id.as_deref(), Some("<x@y>"));
        assert!(s.has_from && !s.has_date);
        assert_eq!(s.hops, 1);
    }

    #[test]
    fn body_without_header_gets_a_separator() {
        let s = scan(b"just text\nmore\n", true).unwrap();
        assert_eq!(s.header_len, 0);
        assert!(s.needs_separator);
        let s = scan(b"Subject: x\nnot a header line\n", true).unwrap();
        assert_eq!(s.header_len, 11);
        assert!(s.needs_separator);
    }

    #[test]
    fn header_only_and_empty_messages() {
        let s = scan(b"Subject: x\n", true).unwrap();
        assert_eq!(s.header_len, 11);
        assert!(!s.needs_separator);
        let s = scan(b"", true).unwrap();
        assert_eq!(s.header_len, 0);
        assert!(!s.needs_separator);
    }

    #[test]
    fn incomplete_header_asks_for_more() {
        assert!(scan(b"Subject: x\nFrom: y", false).is_none());
        assert!(scan(b"Subject: x\n\nbo", false).is_some());
    }

    #[test]
    fn received_header_shape() {
        let o = Origin {
            helo: Some("client.example".into()),
            client_name: Some("unknown".into()),
            client_address: Some("127.0.0.1".into()),
            protocol: Some("ESMTP".into()),
            ..Origin::default()
        };
        let h = received_header(
            &o,
            "mx.example.test",
            "Postern",
            "ABC123",
            Some("u@example.test"),
            UNIX_EPOCH,
        );
        assert!(h.starts_with("Received: from client.example (unknown [127.0.0.1])\n\tby mx.example.test (Postern) with ESMTP id ABC123\n\tfor <u@example.test>; "), "{h}");
        assert!(h.ends_with('\n'));
        assert!(!h.contains('\r'));
    }

    #[test]
    fn control_characters_cannot_break_the_header() {
        let o = Origin {
            helo: Some("evil\nX-Injected: yes".into()),
            client_address: Some("::1".into()),
            ..Origin::default()
        };
        let h = received_header(&o, "h", "Postern", "ID", None, UNIX_EPOCH);
        assert!(!h.contains("\nX-Injected"));
    }

    #[test]
    fn dates_look_like_rfc5322() {
        let d = rfc5322_date(UNIX_EPOCH + std::time::Duration::from_secs(1_700_000_000));
        // "Tue, 14 Nov 2023 22:13:20 +0000 (UTC)" in UTC; the zone depends on TZ.
        assert!(d.contains(" Nov 2023 ") || d.contains(" Nov 2023"), "{d}");
        assert_eq!(compact_timestamp(UNIX_EPOCH).len(), 14);
    }
}
