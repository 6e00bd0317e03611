//! Which transport (delivery agent service) and next hop a recipient goes to.
//!
//! transport_maps (transport(5)) decide first: the domain, then each parent
//! as `.parent`, then `*`, each answered with `transport:nexthop` where
//! either half may be empty (an empty transport keeps the default one, an
//! empty next hop the default next hop). Otherwise local domains
//! (mydestination) go to local_transport with the recipient as the "next
//! hop" (so the per-destination concurrency limit is per user, as in
//! Postfix); everything else goes to default_transport, to relayhost when
//! one is set, else to the recipient's domain.

use postern_config::MainCf;
use postern_ipc::Mailbox;

/// A delivery agent service (master.cf name, socket private/NAME) and the
/// destination it is asked to deliver to.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Route {
    /// master.cf service name of the delivery agent.
    pub transport: String,
    /// Destination for that agent (domain, relay host, or local recipient).
    pub nexthop: String,
}

/// Decides routes from main.cf.
#[derive(Clone, Debug)]
pub struct Router {
    /// mydestination, parsed (tables opened) once.
    local_domains: std::sync::Arc<postern_maps::LocalDomains>,
    local_transport: String,
    /// local_transport's own next hop (`lmtp:unix:/run/dovecot/lmtp`), if any.
    local_nexthop: Option<String>,
    default_transport: String,
    default_nexthop: Option<String>,
    relayhost: String,
    /// transport_maps, opened once (each re-read when its file changes).
    transport_maps: Vec<postern_maps::Table>,
}

/// "transport:nexthop" → (transport, optional nexthop).
fn split_transport(spec: &str) -> (String, Option<String>) {
    match spec.split_once(':') {
        Some((t, n)) if !n.is_empty() => (t.trim().to_string(), Some(n.trim().to_string())),
        Some((t, _)) => (t.trim().to_string(), None),
        None => (spec.trim().to_string(), None),
    }
}

impl Router {
    /// Reads local_transport, default_transport and relayhost.
    pub fn from_config(main: &MainCf) -> Result<Router, String> {
        let (local_transport, local_nexthop) = split_transport(&main.str("local_transport"));
        let (default_transport, default_nexthop) = split_transport(&main.str("default_transport"));
        if local_transport.is_empty() || default_transport.is_empty() {
            return Err("local_transport and default_transport must name a transport".into());
        }
        let local_domains = postern_maps::LocalDomains::from_config(main)
            .map_err(|e| format!("mydestination: {e}"))?;
        Ok(Router {
            local_domains: std::sync::Arc::new(local_domains),
            local_transport,
            local_nexthop,
            default_transport,
            default_nexthop,
            relayhost: main.str("relayhost"),
            transport_maps: postern_maps::Table::open_list(main, "transport_maps")?,
        })
    }

    /// The transport that delivers to local mailboxes.
    pub fn local_transport(&self) -> &str {
        &self.local_transport
    }

    /// Where mail for `address` goes. Err = mydestination could not be
    /// read, so whether the address is local is unknown: the recipient is
    /// deferred, never sent to the network on a guess.
    pub fn route(&self, address: &Mailbox) -> Result<Route, String> {
        let domain = address.domain_lowercase();
        if let Some((transport, nexthop)) = self.transport_lookup(&domain)? {
            let local = transport.as_deref() == Some(self.local_transport.as_str());
            let nexthop = match nexthop {
                Some(n) => n,
                None if local => address.local_part.to_ascii_lowercase(),
                None => self.default_route_nexthop(&domain),
            };
            return Ok(Route {
                transport: transport.unwrap_or_else(|| self.default_transport.clone()),
                nexthop,
            });
        }
        let is_local = self
            .local_domains
            .try_contains(&domain)
            .map_err(|e| format!("mydestination lookup failed: {e}"))?;
        if is_local {
            return Ok(Route {
                transport: self.local_transport.clone(),
                // The recipient for local (per-user concurrency); the named
                // server for an LMTP local_transport.
                nexthop: self
                    .local_nexthop
                    .clone()
                    .unwrap_or_else(|| address.local_part.to_ascii_lowercase()),
            });
        }
        Ok(Route {
            transport: self.default_transport.clone(),
            nexthop: self.default_route_nexthop(&domain),
        })
    }

    /// default_transport's next hop: its own, relayhost, or the domain.
    fn default_route_nexthop(&self, domain: &str) -> String {
        if let Some(n) = &self.default_nexthop {
            n.clone()
        } else if !self.relayhost.is_empty() {
            self.relayhost.clone()
        } else {
            domain.to_string()
        }
    }

    /// transport_maps for `domain`: Ok(None) when no table has an entry;
    /// Ok(Some((transport, nexthop))) with None for an empty half; Err when
    /// a table cannot be read (the recipient is deferred).
    #[allow(clippy::type_complexity)]
    fn transport_lookup(
        &self,
        domain: &str,
    ) -> Result<Option<(Option<String>, Option<String>)>, String> {
        if self.transport_maps.is_empty() {
            return Ok(None);
        }
        let mut keys = vec![domain.to_string()];
        let mut rest = domain;
        while let Some((_, parent)) = rest.split_once('.') {
            keys.push(format!(".{parent}"));
            rest = parent;
        }
        keys.push("*".to_string());
        for key in &keys {
            for t in &self.transport_maps {
                let found = t
                    .lookup(key)
                    .map_err(|e| format!("transport_maps lookup failed: {e}"))?;
                if let Some(value) = found {
                    let (transport, nexthop) = match value.trim().split_once(':') {
                        Some((t, n)) => (t.trim(), n.trim()),
                        None => (value.trim(), ""),
                    };
                    let some = |s: &str| (!s.is_empty()).then(|| s.to_string());
                    return Ok(Some((some(transport), some(nexthop))));
                }
            }
        }
        Ok(None)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn router(extra: &str) -> Router {
        let text = format!(
            "myhostname = mx.example.test\nmydestination = example.test, localhost\n{extra}"
        );
        let main = MainCf::parse(&text, std::path::Path::new("/x/main.cf")).unwrap();
        Router::from_config(&main).unwrap()
    }

    fn mb(s: &str) -> Mailbox {
        Mailbox::parse(s).unwrap()
    }

    #[test]
    fn local_domains_go_to_local_per_user() {
        let r = router("");
        assert_eq!(
            r.route(&mb("Joe@Example.TEST")).unwrap(),
            Route {
                transport: "local".into(),
                nexthop: "joe".into()
            }
        );
        assert_eq!(
            r.route(&mb("postmaster@localhost")).unwrap(),
            Route {
                transport: "local".into(),
                nexthop: "postmaster".into()
            }
        );
    }

    #[test]
    fn remote_domains_go_to_smtp_or_relayhost() {
        assert_eq!(
            router("").route(&mb("a@Remote.example")).unwrap(),
            Route {
                transport: "smtp".into(),
                nexthop: "remote.example".into()
            }
        );
        assert_eq!(
            router("relayhost = [smart.example]:587")
                .route(&mb("a@remote.example"))
                .unwrap(),
            Route {
                transport: "smtp".into(),
                nexthop: "[smart.example]:587".into()
            }
        );
        assert_eq!(
            router("default_transport = relay:[gw.example]")
                .route(&mb("a@remote.example"))
                .unwrap(),
            Route {
                transport: "relay".into(),
                nexthop: "[gw.example]".into()
            }
        );
    }

    #[test]
    fn an_unreadable_mydestination_table_defers_instead_of_routing() {
        let d = std::env::temp_dir().join(format!("postern-qmgr-route-{}", std::process::id()));
        std::fs::create_dir_all(&d).unwrap();
        let table = d.join("domains");
        let _ = std::fs::remove_file(&table);
        let r = router(&format!(
            "mydestination = localhost, texthash:{}\n",
            table.display()
        ));
        assert!(r.route(&mb("joe@localhost")).is_ok(), "names need no table");
        let e = r.route(&mb("joe@example.test")).unwrap_err();
        assert!(e.contains("mydestination lookup failed"), "{e}");
        std::fs::write(&table, "example.test ok\n").unwrap();
        assert_eq!(r.route(&mb("joe@example.test")).unwrap().transport, "local");
        assert_eq!(
            r.route(&mb("joe@remote.example")).unwrap().transport,
            "smtp"
        );
        let _ = std::fs::remove_dir_all(&d);
    }

    #[test]
    fn transport_maps_decide_first() {
        let dir = std::env::temp_dir().join(format!("postern-transport-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("transport");
        std::fs::write(
            &file,
            "dest.example smtp:[10.0.0.1]:2525\n.sub.example :[relay.example]\nexample.test smtp:\n*  :backup.example\n",
        )
        .unwrap();
        let r = router(&format!("transport_maps = hash:{}", file.display()));
        let route = |a: &str| r.route(&mb(a)).unwrap();
        assert_eq!(
            route("a@Dest.Example"),
            Route {
                transport: "smtp".into(),
                nexthop: "[10.0.0.1]:2525".into()
            }
        );
        assert_eq!(route("a@x.sub.example").nexthop, "[relay.example]");
        assert_eq!(route("a@x.sub.example").transport, "smtp");
        // An entry with an empty next hop keeps the default one (the domain).
        assert_eq!(route("a@example.test").nexthop, "example.test");
        assert_eq!(route("a@anything.else").nexthop, "backup.example");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
