//! The facts smtpd's restrictions ask about: is the client in mynetworks,
//! is a domain ours or one we relay for, does a local recipient exist, who
//! owns a sender address (smtpd_sender_login_maps). The decisions themselves
//! are made by [`crate::restrictions`].
//!
//! users_file holds password hashes, and only the auth service keeps them
//! (docs/auth.md): smtpd never opens users_file, even when it could
//! (privilege separation off, as in the demo). It asks the auth service
//! about users_file users (`private/auth`, [`AuthRequest::Lookup`]) after
//! local_recipient_maps has not said yes.
//!
//! SECURITY: a lookup that cannot be answered (auth unreachable, a table
//! unreadable) is a temporary failure (451 4.3.0), never "unknown user":
//! mail is not bounced because a helper was down. Only the local part goes
//! to auth, and only as a lookup key.

use postern_ipc::BlockingChannel;
use postern_ipc::messages::{AuthReply, AuthRequest};
use std::path::PathBuf;
use std::time::Duration;

use postern_config::MainCf;
use postern_maps::{LocalDomains, LocalRecipients, NetworkList, Table};
use postern_smtp_proto::Mailbox;
use std::net::IpAddr;

/// How long smtpd waits for the auth service (connect, each read and write).
pub const AUTH_TIMEOUT: Duration = Duration::from_secs(10);

/// Why the auth service gave no yes/no answer.
enum AuthTrouble {
    /// No answer at all (connect, I/O, closed): worth one more try.
    Connection(String),
    /// It answered, but not yes or no (TempFail, out of protocol).
    Answer(String),
}

impl AuthTrouble {
    fn into_reason(self) -> String {
        match self {
            AuthTrouble::Connection(r) | AuthTrouble::Answer(r) => r,
        }
    }
}

/// The recipient policy of one smtpd process.
pub struct Policy {
    /// mydestination, parsed (and its tables opened) once at start-up.
    local_domains: LocalDomains,
    /// recipient_delimiter.
    delimiters: String,
    mynetworks: NetworkList,
    relay_domains: Vec<String>,
    /// local_recipient_maps (never users_file).
    recipients: LocalRecipients,
    /// users_file is set: ask the auth service about its users.
    users_via_auth: bool,
    auth_socket: PathBuf,
    /// smtpd_sender_login_maps, in order (empty: the built-in rule).
    sender_logins: Vec<Table>,
}

impl Policy {
    /// Loads the tables the policy needs.
    pub fn from_config(main: &MainCf) -> Result<Policy, String> {
        let mynetworks =
            NetworkList::parse(&main.list("mynetworks")).map_err(|e| format!("mynetworks: {e}"))?;
        let relay_domains = main
            .list("relay_domains")
            .into_iter()
            .map(|d| d.to_ascii_lowercase())
            .collect();
        let recipients = LocalRecipients::from_config(main).map_err(|e| e.to_string())?;
        let users_via_auth = !main.str("users_file").is_empty();
        let config_dir = main.path("config_directory");
        let sender_logins = postern_maps::split_map_list(&main.str("smtpd_sender_login_maps"))
            .iter()
            .map(|spec| {
                Table::open_or_unavailable(spec, &config_dir)
                    .map_err(|e| format!("smtpd_sender_login_maps: {e}"))
            })
            .collect::<Result<Vec<_>, _>>()?;
        let local_domains =
            LocalDomains::from_config(main).map_err(|e| format!("mydestination: {e}"))?;
        Ok(Policy {
            sender_logins,
            local_domains,
            delimiters: main.str("recipient_delimiter"),
            mynetworks,
            relay_domains,
            recipients,
            users_via_auth,
            auth_socket: main.path("queue_directory").join("private").join("auth"),
        })
    }

    /// Asks the auth service whether `local_part` (or, with an extension,
    /// its base) is a users_file user.
    fn ask_auth(&self, socket: &std::path::Path, local_part: &str) -> Result<bool, String> {
        // A connection that fails or is closed before an answer is tried once
        // more: after `postern reload` the auth process that took it may be
        // an old-generation one on its way out. An answer (TempFail included)
        // is never retried.
        match self.ask_auth_once(socket, local_part) {
            Err(AuthTrouble::Connection(first)) => {
                tracing::debug!("{first}: asking the auth service again");
                std::thread::sleep(Duration::from_millis(100));
                self.ask_auth_once(socket, local_part)
                    .map_err(|e| e.into_reason())
            }
            other => other.map_err(|e| e.into_reason()),
        }
    }

    fn ask_auth_once(
        &self,
        socket: &std::path::Path,
        local_part: &str,
    ) -> Result<bool, AuthTrouble> {
        let full = local_part.to_lowercase();
        let (base, ext) = postern_maps::strip_extension(&full, &self.delimiters);
        let mut keys = vec![full.as_str()];
        if ext.is_some() {
            keys.push(base);
        }
        let said = |e: &dyn std::fmt::Display| format!("auth service {}: {e}", socket.display());
        let lost = |e: &dyn std::fmt::Display| AuthTrouble::Connection(said(e));
        let mut chan = BlockingChannel::connect(socket, AUTH_TIMEOUT).map_err(|e| lost(&e))?;
        for key in keys {
            chan.send(&AuthRequest::Lookup {
                user: key.to_string(),
            })
            .map_err(|e| lost(&e))?;
            match chan.recv::<AuthReply>().map_err(|e| lost(&e))? {
                Some(AuthReply::User { .. }) => return Ok(true),
                Some(AuthReply::NoSuchUser) => {}
                Some(AuthReply::TempFail { reason }) => {
                    return Err(AuthTrouble::Answer(said(&reason)));
                }
                Some(other) => {
                    return Err(AuthTrouble::Answer(said(&format!(
                        "unexpected reply {other:?}"
                    ))));
                }
                None => return Err(lost(&"closed the connection")),
            }
        }
        Ok(false)
    }

    /// Is `local_part` a local recipient? Err = could not tell (temporary).
    pub fn recipient_exists(&mut self, local_part: &str) -> Result<bool, String> {
        match self.recipients.exists(local_part) {
            Ok(true) => Ok(true),
            Ok(false) if self.users_via_auth => self.ask_auth(&self.auth_socket, local_part),
            Ok(false) => Ok(false),
            // A map could not be read: the auth service may still know the
            // user; otherwise the answer is unknown (a temporary failure).
            Err(e) => {
                if self.users_via_auth && self.ask_auth(&self.auth_socket, local_part)? {
                    return Ok(true);
                }
                Err(e.to_string())
            }
        }
    }

    /// The auth service's socket (private/auth): recipient lookups here,
    /// password checks in the session.
    pub fn auth_socket(&self) -> &std::path::Path {
        &self.auth_socket
    }

    /// Is this client in mynetworks?
    pub fn is_mynetworks(&self, ip: IpAddr) -> bool {
        self.mynetworks.contains(ip)
    }

    /// Is this domain one we deliver locally? Err = a mydestination table
    /// could not be read (a temporary failure, never a relay decision).
    pub fn is_local_domain(&self, domain: &str) -> Result<bool, String> {
        self.local_domains
            .try_contains(domain)
            .map_err(|e| format!("mydestination: {e}"))
    }

    /// Is this domain in relay_domains (or below one)?
    pub fn is_relay_domain(&self, domain: &str) -> bool {
        let d = domain.trim_end_matches('.').to_ascii_lowercase();
        self.relay_domains.iter().any(|r| {
            let r = r.trim_end_matches('.');
            // Postfix's parent_domain_matches_subdomains default includes
            // relay_domains: a ".example" entry or "example" matches subdomains.
            match r.strip_prefix('.') {
                Some(parent) => d.ends_with(&format!(".{parent}")),
                None => d == r || d.ends_with(&format!(".{r}")),
            }
        })
    }

    /// The SASL logins that own `sender` (for reject_sender_login_mismatch).
    ///
    /// With smtpd_sender_login_maps set, the tables answer, first match
    /// wins, for the keys `user@domain`, `user` (local domains only) and
    /// `@domain`; a value is a list of logins separated by commas or spaces.
    /// Without tables, Postern's built-in rule for local domains (D in
    /// mydestination): the login `user` or `user@D` owns `user@D` and
    /// `user+ext@D`; addresses in other domains have no owner.
    /// Err = a table failed (temporary).
    pub fn sender_owners(&self, sender: &Mailbox) -> Result<Vec<String>, String> {
        let (local, domain) = (sender.local_part.as_str(), sender.domain.as_str());
        let local_domain = self.is_local_domain(domain)?;
        if self.sender_logins.is_empty() {
            if !local_domain {
                return Ok(Vec::new());
            }
            let lower = local.to_lowercase();
            let (base, _) = postern_maps::strip_extension(&lower, &self.delimiters);
            return Ok(vec![
                base.to_string(),
                format!("{base}@{}", domain.to_lowercase()),
                sender.to_string().to_lowercase(),
            ]);
        }
        let mut keys = vec![sender.to_string().to_lowercase()];
        if local_domain {
            keys.push(local.to_lowercase());
        }
        keys.push(format!("@{}", domain.to_lowercase()));
        for key in &keys {
            for t in &self.sender_logins {
                if let Some(v) = t.lookup(key).map_err(|e| e.to_string())? {
                    return Ok(v
                        .split([',', ' ', '\t'])
                        .filter(|s| !s.is_empty())
                        .map(str::to_string)
                        .collect());
                }
            }
        }
        Ok(Vec::new())
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use std::path::Path;

    /// A fresh scratch directory with private/ (for the auth socket).
    pub(crate) fn scratch(name: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("postern-policy-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(d.join("private")).unwrap();
        d
    }

    fn config(dir: &Path) -> MainCf {
        let mut m = MainCf::parse("", &dir.join("main.cf")).unwrap();
        m.set("myhostname", "mail.example.org");
        m.set("mydestination", "example.org");
        m.set("alias_maps", "");
        m.set("local_recipient_maps", "inline:{ extra=1 }");
        m.set("recipient_delimiter", "+");
        m.set("queue_directory", &dir.display().to_string());
        m.set("users_file", &dir.join("users").display().to_string());
        m
    }

    #[test]
    fn without_users_file_auth_is_not_asked() {
        let d = scratch("none");
        let mut m = config(&d);
        m.set("users_file", "");
        let mut p = Policy::from_config(&m).unwrap();
        // No auth service listens: an unknown user is still a plain "no".
        assert_eq!(p.recipient_exists("vera"), Ok(false));
        assert_eq!(p.recipient_exists("extra"), Ok(true));
        let _ = std::fs::remove_dir_all(&d);
    }

    #[test]
    fn never_reads_users_file_asks_auth_and_tempfails_without_it() {
        let d = scratch("auth");
        // Readable by this process, and still never read: its users are
        // the auth service's to answer.
        std::fs::write(d.join("users"), "vera:{PLAIN}x\n").unwrap();
        let mut p = Policy::from_config(&config(&d)).unwrap();
        // No auth service yet: temporary failure, never "unknown user".
        assert!(p.recipient_exists("vera").is_err());
        // Other maps still answer without auth.
        assert_eq!(p.recipient_exists("extra"), Ok(true));
        let listener = std::os::unix::net::UnixListener::bind(d.join("private/auth")).unwrap();
        let server = std::thread::spawn(move || {
            let mut asked = Vec::new();
            for _ in 0..2 {
                let (s, _) = listener.accept().unwrap();
                let mut c = BlockingChannel::new(s);
                while let Some(AuthRequest::Lookup { user }) = c.recv::<AuthRequest>().unwrap() {
                    let reply = if user == "vera" {
                        AuthReply::User {
                            name: user.clone(),
                            uid: None,
                            gid: None,
                            home: None,
                        }
                    } else {
                        AuthReply::NoSuchUser
                    };
                    asked.push(user);
                    c.send(&reply).unwrap();
                }
            }
            asked
        });
        assert_eq!(p.recipient_exists("Vera+tag"), Ok(true));
        assert_eq!(p.recipient_exists("bob"), Ok(false));
        let asked = server.join().unwrap();
        assert_eq!(asked, vec!["vera+tag", "vera", "bob"]);
        let _ = std::fs::remove_dir_all(&d);
    }

    #[test]
    fn a_connection_auth_drops_is_asked_again_once_but_an_answer_is_final() {
        let d = scratch("retry");
        let mut p = Policy::from_config(&config(&d)).unwrap();
        let listener = std::os::unix::net::UnixListener::bind(d.join("private/auth")).unwrap();
        let server = std::thread::spawn(move || {
            // An old-generation auth on its way out: takes one and closes it.
            drop(listener.accept().unwrap());
            let (s, _) = listener.accept().unwrap();
            let mut c = BlockingChannel::new(s);
            if let Some(AuthRequest::Lookup { user }) = c.recv::<AuthRequest>().unwrap() {
                c.send(&AuthReply::User {
                    name: user,
                    uid: None,
                    gid: None,
                    home: None,
                })
                .unwrap();
            }
            // Then a TempFail answer, which is not retried.
            let (s, _) = listener.accept().unwrap();
            let mut c = BlockingChannel::new(s);
            if let Some(AuthRequest::Lookup { .. }) = c.recv::<AuthRequest>().unwrap() {
                c.send(&AuthReply::TempFail {
                    reason: "users file unreadable".into(),
                })
                .unwrap();
            }
            listener
        });
        assert_eq!(p.recipient_exists("vera"), Ok(true));
        let e = p.recipient_exists("vera").unwrap_err();
        assert!(e.contains("users file unreadable"), "{e}");
        drop(server.join().unwrap());
        let _ = std::fs::remove_dir_all(&d);
    }
}
