//! The service extensions a server announces in its EHLO or LHLO reply
//! (RFC 5321 section 4.1.1.1): one keyword per line after the first, with
//! optional parameters, matched case-insensitively.
//!
//! ```text
//! ehlo-ok-rsp = "250-" Domain [ SP ehlo-greet ] CRLF
//!               *( "250-" ehlo-line CRLF ) "250" SP ehlo-line CRLF
//! ehlo-line   = ehlo-keyword *( SP ehlo-param )
//! ```
//!
//! Known: SIZE \[n\] (RFC 1870), PIPELINING (RFC 2920), 8BITMIME (RFC 6152),
//! SMTPUTF8 (RFC 6531), DSN (RFC 3461), CHUNKING and BINARYMIME (RFC 3030),
//! STARTTLS (RFC 3207), ENHANCEDSTATUSCODES (RFC 2034), AUTH (RFC 4954;
//! also the pre-standard `AUTH=PLAIN LOGIN` form that old servers send).
//! Anything else is kept in [`Capabilities::other`].

use super::reply::ServerReply;

/// What the server offers; [`Capabilities::default`] is a plain RFC 821
/// server (after HELO), offering nothing.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Capabilities {
    /// SIZE: `None` when not announced; `Some(0)` when announced without a
    /// fixed limit; `Some(n)` for a limit of n octets.
    pub size: Option<u64>,
    /// PIPELINING: commands may be sent in groups.
    pub pipelining: bool,
    /// 8BITMIME: `BODY=8BITMIME` may be declared.
    pub eightbitmime: bool,
    /// SMTPUTF8: UTF-8 addresses and headers may be sent.
    pub smtputf8: bool,
    /// DSN: RET, ENVID, NOTIFY and ORCPT may be sent.
    pub dsn: bool,
    /// CHUNKING: BDAT may be used.
    pub chunking: bool,
    /// BINARYMIME: `BODY=BINARYMIME` (with BDAT).
    pub binarymime: bool,
    /// STARTTLS.
    pub starttls: bool,
    /// ENHANCEDSTATUSCODES: replies carry RFC 3463 codes.
    pub enhanced_status_codes: bool,
    /// AUTH mechanisms, upper-cased, in the server's order, no duplicates.
    pub auth: Vec<String>,
    /// Other extension lines, as sent (e.g. `"XCLIENT NAME ADDR"`).
    pub other: Vec<String>,
}

impl Capabilities {
    /// The extensions in a 250 EHLO/LHLO reply; the first line (the
    /// server's name and greeting) is skipped. Call only for a 2xx reply.
    pub fn from_ehlo(reply: &ServerReply) -> Capabilities {
        let mut caps = Capabilities::default();
        for line in reply.lines.iter().skip(1) {
            caps.add_line(line);
        }
        caps
    }

    fn add_line(&mut self, line: &str) {
        let line = line.trim();
        let mut words = line.split_ascii_whitespace();
        let Some(first) = words.next() else {
            return;
        };
        // "AUTH=PLAIN LOGIN": the keyword and the first mechanism glued.
        let (keyword, glued) = match first.split_once('=') {
            Some((k, v)) if k.eq_ignore_ascii_case("AUTH") => (k, Some(v)),
            _ => (first, None),
        };
        match keyword.to_ascii_uppercase().as_str() {
            "SIZE" => {
                // A missing or unreadable number means no fixed limit.
                let n = words
                    .next()
                    .and_then(|w| w.parse::<u64>().ok())
                    .unwrap_or(0);
                self.size = Some(n);
            }
            "PIPELINING" => self.pipelining = true,
            "8BITMIME" => self.eightbitmime = true,
            "SMTPUTF8" => self.smtputf8 = true,
            "DSN" => self.dsn = true,
            "CHUNKING" => self.chunking = true,
            "BINARYMIME" => self.binarymime = true,
            "STARTTLS" => self.starttls = true,
            "ENHANCEDSTATUSCODES" => self.enhanced_status_codes = true,
            "AUTH" => {
                for mech in glued.into_iter().chain(words) {
                    let mech = mech.to_ascii_uppercase();
                    if !mech.is_empty() && !self.auth.contains(&mech) {
                        self.auth.push(mech);
                    }
                }
            }
            _ => self.other.push(line.to_string()),
        }
    }

    /// Whether the server offers this AUTH mechanism (case-insensitive).
    pub fn offers_auth(&self, mechanism: &str) -> bool {
        self.auth.iter().any(|m| m.eq_ignore_ascii_case(mechanism))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_known_extensions() {
        let r = ServerReply::new(
            250,
            &[
                "mx.example Hello",
                "size 10240000",
                "PIPELINING",
                "8BITMIME",
                "SmtpUtf8",
                "DSN",
                "CHUNKING",
                "BINARYMIME",
                "STARTTLS",
                "ENHANCEDSTATUSCODES",
                "AUTH PLAIN login",
                "AUTH=PLAIN LOGIN CRAM-MD5",
                "XCLIENT NAME ADDR",
                "",
            ],
        );
        let c = Capabilities::from_ehlo(&r);
        assert_eq!(c.size, Some(10_240_000));
        assert!(c.pipelining && c.eightbitmime && c.smtputf8 && c.dsn);
        assert!(c.chunking && c.binarymime && c.starttls && c.enhanced_status_codes);
        assert_eq!(c.auth, vec!["PLAIN", "LOGIN", "CRAM-MD5"]);
        assert!(c.offers_auth("cram-md5"));
        assert_eq!(c.other, vec!["XCLIENT NAME ADDR"]);
    }

    #[test]
    fn size_without_limit_and_nothing_announced() {
        let c = Capabilities::from_ehlo(&ServerReply::new(250, &["mx", "SIZE"]));
        assert_eq!(c.size, Some(0));
        let c = Capabilities::from_ehlo(&ServerReply::new(250, &["mx", "SIZE abc"]));
        assert_eq!(c.size, Some(0));
        let c = Capabilities::from_ehlo(&ServerReply::new(250, &["mx.example"]));
        assert_eq!(c, Capabilities::default());
        // The first line is the greeting, never an extension.
        let c = Capabilities::from_ehlo(&ServerReply::new(250, &["PIPELINING"]));
        assert!(!c.pipelining);
    }
}
