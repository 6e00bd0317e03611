//! Who may send mail to whom: the recipient decision smtpd makes at RCPT.
//!
//! A recipient in a local domain (mydestination) must exist (aliases, users
//! file, system users as local_recipient_maps says; postmaster always does);
//! any other domain is relayed only for clients in mynetworks or domains in
//! relay_domains. Everything else is refused: no open relay, ever by default.
//! The full restriction language (smtpd_*_restrictions) builds on this later.

use postern_config::MainCf;
use postern_maps::{LocalRecipients, NetworkList};
use std::net::IpAddr;

/// The verdict for one recipient.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// Accept: mail for a local user.
    Local,
    /// Accept: mail to relay elsewhere.
    Relay,
    /// Refuse permanently: unknown local user.
    UnknownUser,
    /// Refuse permanently: relaying not allowed.
    RelayDenied,
    /// Temporary failure (a table could not be read).
    TempFail(String),
}

/// The recipient policy of one smtpd process.
pub struct Policy {
    main: MainCf,
    mynetworks: NetworkList,
    relay_domains: Vec<String>,
    recipients: LocalRecipients,
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
        Ok(Policy {
            main: main.clone(),
            mynetworks,
            relay_domains,
            recipients,
        })
    }

    /// Is this client in mynetworks?
    pub fn is_mynetworks(&self, ip: IpAddr) -> bool {
        self.mynetworks.contains(ip)
    }

    /// Is this domain one we deliver locally?
    pub fn is_local_domain(&self, domain: &str) -> bool {
        postern_maps::is_local_domain(&self.main, domain)
    }

    fn is_relay_domain(&self, domain: &str) -> bool {
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

    /// Decides about one recipient address (local part and domain as parsed).
    pub fn check(&mut self, client: IpAddr, local_part: &str, domain: &str) -> Verdict {
        if self.is_local_domain(domain) {
            if local_part.eq_ignore_ascii_case("postmaster") {
                return Verdict::Local;
            }
            return match self.recipients.exists(local_part) {
                Ok(true) => Verdict::Local,
                Ok(false) => Verdict::UnknownUser,
                Err(e) => Verdict::TempFail(e.to_string()),
            };
        }
        if self.is_mynetworks(client) || self.is_relay_domain(domain) {
            Verdict::Relay
        } else {
            Verdict::RelayDenied
        }
    }
}
