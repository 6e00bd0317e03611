//! A loopback DNS server for tests.
//!
//! Integration tests of the SMTP client need MX, A and AAAA answers they
//! control, without touching the machine's resolver or the internet. This
//! crate serves authoritative in-memory zones with hickory-server on
//! `127.0.0.1:<port>`, UDP and TCP on the same port, from a background thread
//! with its own tokio runtime, so plain synchronous `#[test]`s can use it (and
//! async tests too: starting only binds sockets and spawns the thread).
//!
//! ```no_run
//! use postern_testdns::{TestDns, Zone};
//! use std::net::Ipv4Addr;
//!
//! let dns = TestDns::start(
//!     Zone::new("example.test.")
//!         .mx("@", 10, "mx1")
//!         .a("mx1", Ipv4Addr::new(127, 0, 0, 2)),
//! );
//! let server = dns.addr(); // give this to postern_dns::Resolver::with_servers
//! # let _ = server;
//! ```
//!
//! Names, in every builder method: `@` is the zone's origin; a name without a
//! dot is relative to the origin (`mx1` → `mx1.example.test.`); a name with
//! a dot is absolute, with or without the trailing dot
//! (`mx.other.test` → `mx.other.test.`).
//!
//! Answers: a name declared in a zone answers its records (NODATA for other
//! types); a name under a zone's origin that is not declared answers NXDOMAIN
//! with the zone's SOA; a name under no zone at all also answers NXDOMAIN
//! (no SOA), so tests can use `example.invalid` without declaring anything.
#![forbid(unsafe_code)]
#![warn(missing_docs)]

use std::collections::HashSet;
use std::io;
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr, TcpListener, UdpSocket};
use std::str::FromStr;
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use hickory_proto::op::{Header, HeaderCounts, Metadata, ResponseCode};
use hickory_proto::rr::rdata::{A, AAAA, CNAME, MX, NS, SOA, TXT};
use hickory_proto::rr::{LowerName, Name, RData, Record};
use hickory_server::Server;
use hickory_server::net::runtime::{Time, TokioRuntimeProvider};
use hickory_server::server::{Request, RequestHandler, ResponseHandler, ResponseInfo};
use hickory_server::store::in_memory::InMemoryZoneHandler;
use hickory_server::zone_handler::{AxfrPolicy, Catalog, MessageResponseBuilder, ZoneType};

/// TTL of every record served: short, so nothing a test does lingers in a cache for long.
pub const TTL: u32 = 60;

/// One authoritative zone, declared record by record.
///
/// Exists so a test states the DNS it needs in a few lines. Every method
/// panics on a malformed name or a record hickory refuses (a CNAME next to
/// other data): a mistake in a test, not a runtime condition.
#[derive(Debug, Clone)]
pub struct Zone {
    origin: Name,
    records: Vec<Record>,
    servfail: Vec<Name>,
    no_answer: Vec<Name>,
}

impl Zone {
    /// A zone for `origin` (`"example.test."`; the trailing dot is optional),
    /// with its SOA and NS records and nothing else.
    pub fn new(origin: &str) -> Self {
        let origin = absolute(origin);
        let ns = Name::from_ascii("ns")
            .unwrap()
            .append_domain(&origin)
            .unwrap();
        let hostmaster = Name::from_ascii("hostmaster")
            .unwrap()
            .append_domain(&origin)
            .unwrap();
        let soa = SOA::new(ns.clone(), hostmaster, 1, 3600, 600, 86_400, TTL);
        let records = vec![
            Record::from_rdata(origin.clone(), TTL, RData::SOA(soa)),
            Record::from_rdata(origin.clone(), TTL, RData::NS(NS(ns))),
        ];
        Self {
            origin,
            records,
            servfail: Vec::new(),
            no_answer: Vec::new(),
        }
    }

    /// The zone's origin, absolute (with the trailing dot).
    pub fn origin(&self) -> String {
        self.origin.to_ascii()
    }

    /// An MX record at `name`: mail for it goes to `exchange` at `preference`.
    pub fn mx(self, name: &str, preference: u16, exchange: &str) -> Self {
        let exchange = self.name(exchange);
        self.push(name, RData::MX(MX::new(preference, exchange)))
    }

    /// The RFC 7505 null MX (`0 .`) at `name`: the domain accepts no mail.
    pub fn null_mx(self, name: &str) -> Self {
        self.push(name, RData::MX(MX::new(0, Name::root())))
    }

    /// An A record at `name`.
    pub fn a(self, name: &str, addr: Ipv4Addr) -> Self {
        self.push(name, RData::A(A(addr)))
    }

    /// An AAAA record at `name`.
    pub fn aaaa(self, name: &str, addr: Ipv6Addr) -> Self {
        self.push(name, RData::AAAA(AAAA(addr)))
    }

    /// A CNAME at `name` pointing to `target` (no other record may share `name`).
    pub fn cname(self, name: &str, target: &str) -> Self {
        let target = self.name(target);
        self.push(name, RData::CNAME(CNAME(target)))
    }

    /// A TXT record at `name` with one character-string (SPF, DMARC tests).
    pub fn txt(self, name: &str, text: &str) -> Self {
        self.push(name, RData::TXT(TXT::new(vec![text.to_owned()])))
    }

    /// Any record hickory can serve (TLSA for DANE tests, SRV, ...); its name
    /// must be inside the zone.
    pub fn record(mut self, record: Record) -> Self {
        assert!(
            self.origin.zone_of(&record.name),
            "{} is not inside zone {}",
            record.name,
            self.origin
        );
        self.records.push(record);
        self
    }

    /// Every query for `name` (any type) answers SERVFAIL: a temporary
    /// failure of the name service, as from a broken upstream.
    pub fn servfail(mut self, name: &str) -> Self {
        let name = self.name(name);
        self.servfail.push(name);
        self
    }

    /// Every query for `name` (any type) gets no answer at all, over UDP and
    /// TCP: the client runs into its timeout.
    pub fn no_answer(mut self, name: &str) -> Self {
        let name = self.name(name);
        self.no_answer.push(name);
        self
    }

    fn push(self, name: &str, rdata: RData) -> Self {
        let name = self.name(name);
        let record = Record::from_rdata(name, TTL, rdata);
        self.record(record)
    }

    /// Resolves a builder name: `@`, relative (no dot) or absolute.
    fn name(&self, name: &str) -> Name {
        if name == "@" {
            self.origin.clone()
        } else if name.contains('.') {
            absolute(name)
        } else {
            Name::from_ascii(name)
                .unwrap_or_else(|e| panic!("bad name {name:?}: {e}"))
                .append_domain(&self.origin)
                .unwrap_or_else(|e| panic!("bad name {name:?}: {e}"))
        }
    }

    fn into_handler(self) -> InMemoryZoneHandler<TokioRuntimeProvider> {
        let mut handler = InMemoryZoneHandler::<TokioRuntimeProvider>::empty(
            self.origin.clone(),
            ZoneType::Primary,
            AxfrPolicy::Deny,
            // hickory-server's constructors take this argument only with its
            // dnssec features; this crate always enables dnssec-ring so the
            // signature does not change when another crate enables it.
            None,
        );
        for record in self.records {
            let text = record.to_string();
            assert!(
                handler.upsert_mut(record, 1),
                "zone {}: hickory refused record {text}",
                self.origin
            );
        }
        handler
    }
}

fn absolute(name: &str) -> Name {
    let text = if name.ends_with('.') {
        name.to_owned()
    } else {
        format!("{name}.")
    };
    Name::from_str(&text).unwrap_or_else(|e| panic!("bad name {name:?}: {e}"))
}

/// One query the server received, for tests that check what was (not) asked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Query {
    /// The name asked for, lower case, absolute (`mx1.example.test.`).
    pub name: String,
    /// The record type, as DNS spells it (`MX`, `A`, `AAAA`).
    pub rtype: String,
}

/// The request handler: the catalog of zones, plus the test-only behaviours
/// (SERVFAIL, silence, NXDOMAIN outside every zone) and a query log.
struct Handler {
    catalog: Catalog,
    servfail: HashSet<LowerName>,
    no_answer: HashSet<LowerName>,
    log: Arc<Mutex<Vec<Query>>>,
}

#[async_trait::async_trait]
impl RequestHandler for Handler {
    async fn handle_request<R: ResponseHandler, T: Time>(
        &self,
        request: &Request,
        mut response_handle: R,
    ) -> ResponseInfo {
        let Ok(info) = request.request_info() else {
            return self
                .catalog
                .handle_request::<R, T>(request, response_handle)
                .await;
        };
        let name = info.query.name().clone();
        if let Ok(mut log) = self.log.lock() {
            log.push(Query {
                name: name.to_string().to_ascii_lowercase(),
                rtype: info.query.query_type().to_string(),
            });
        }
        if self.no_answer.contains(&name) {
            let mut metadata = Metadata::response_from_request(&request.metadata);
            metadata.response_code = ResponseCode::ServFail;
            return ResponseInfo::from(Header {
                metadata,
                counts: HeaderCounts::default(),
            });
        }
        let code = if self.servfail.contains(&name) {
            Some(ResponseCode::ServFail)
        } else if self.catalog.find(&name).is_none() {
            Some(ResponseCode::NXDomain)
        } else {
            None
        };
        let Some(code) = code else {
            return self
                .catalog
                .handle_request::<R, T>(request, response_handle)
                .await;
        };
        let response = MessageResponseBuilder::from_message_request(request)
            .error_msg(&request.metadata, code);
        match response_handle.send_response(response).await {
            Ok(info) => info,
            Err(_) => {
                let mut metadata = Metadata::response_from_request(&request.metadata);
                metadata.response_code = ResponseCode::ServFail;
                ResponseInfo::from(Header {
                    metadata,
                    counts: HeaderCounts::default(),
                })
            }
        }
    }
}

/// A running test DNS server; it stops when dropped.
///
/// Exists so integration tests get a name server whose every answer they
/// chose, reachable at [`TestDns::addr`].
pub struct TestDns {
    addr: SocketAddr,
    log: Arc<Mutex<Vec<Query>>>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<JoinHandle<()>>,
}

impl TestDns {
    /// Serves one zone on 127.0.0.1 (a free port, UDP and TCP). Panics if
    /// no port can be bound.
    pub fn start(zone: Zone) -> Self {
        Self::start_zones([zone])
    }

    /// Serves several zones (several destination domains) on 127.0.0.1 (a
    /// free port, UDP and TCP). Panics if no port can be bound.
    pub fn start_zones(zones: impl IntoIterator<Item = Zone>) -> Self {
        Self::start_on(SocketAddr::from((Ipv4Addr::LOCALHOST, 0)), zones)
            .expect("bind a loopback port for the test DNS server")
    }

    /// Serves the zones on `addr`, UDP and TCP on the same port (e.g.
    /// `127.0.0.2:53` when the test runs as root, so programs that only read
    /// resolv.conf can use it). Port 0 picks a port free for both protocols.
    pub fn start_on(addr: SocketAddr, zones: impl IntoIterator<Item = Zone>) -> io::Result<Self> {
        let (udp, tcp) = bind_pair(addr)?;
        let addr = udp.local_addr()?;
        udp.set_nonblocking(true)?;
        tcp.set_nonblocking(true)?;

        let mut catalog = Catalog::new();
        let mut servfail = HashSet::new();
        let mut no_answer = HashSet::new();
        for zone in zones {
            servfail.extend(zone.servfail.iter().map(LowerName::new));
            no_answer.extend(zone.no_answer.iter().map(LowerName::new));
            let origin = LowerName::new(&zone.origin);
            let handler = zone.into_handler();
            assert!(!catalog.contains(&origin), "zone {origin} declared twice");
            catalog.upsert(origin, vec![Arc::new(handler)]);
        }
        let log = Arc::new(Mutex::new(Vec::new()));
        let handler = Handler {
            catalog,
            servfail,
            no_answer,
            log: log.clone(),
        };

        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        let thread = std::thread::Builder::new()
            .name(format!("testdns-{addr}"))
            .spawn(move || {
                runtime.block_on(async move {
                    let mut server = Server::new(handler);
                    match (
                        tokio::net::UdpSocket::from_std(udp),
                        tokio::net::TcpListener::from_std(tcp),
                    ) {
                        (Ok(udp), Ok(tcp)) => {
                            server.register_socket(udp);
                            server.register_listener(tcp, Duration::from_secs(10), 64);
                        }
                        (Err(e), _) | (_, Err(e)) => {
                            eprintln!("testdns: cannot register sockets: {e}");
                            return;
                        }
                    }
                    // Either a stop message or the TestDns being dropped.
                    let _ = stopped.await;
                    let _ = server.shutdown_gracefully().await;
                });
            })?;
        Ok(Self {
            addr,
            log,
            stop: Some(stop),
            thread: Some(thread),
        })
    }

    /// Where the server listens, UDP and TCP.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Every query received so far, in arrival order.
    pub fn queries(&self) -> Vec<Query> {
        self.log.lock().map(|l| l.clone()).unwrap_or_default()
    }

    /// Forgets the queries received so far.
    pub fn clear_queries(&self) {
        if let Ok(mut log) = self.log.lock() {
            log.clear();
        }
    }
}

impl Drop for TestDns {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

impl std::fmt::Debug for TestDns {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TestDns").field("addr", &self.addr).finish()
    }
}

/// Binds UDP and TCP on the same address; with port 0, retries until a port
/// is free for both.
fn bind_pair(addr: SocketAddr) -> io::Result<(UdpSocket, TcpListener)> {
    if addr.port() != 0 {
        let udp = UdpSocket::bind(addr)?;
        let tcp = TcpListener::bind(addr)?;
        return Ok((udp, tcp));
    }
    let mut last = None;
    for _ in 0..64 {
        let udp = UdpSocket::bind(addr)?;
        match TcpListener::bind(udp.local_addr()?) {
            Ok(tcp) => return Ok((udp, tcp)),
            Err(e) => last = Some(e),
        }
    }
    Err(last.unwrap_or_else(|| io::Error::other("no free port")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_resolve_relative_absolute_and_origin() {
        let zone = Zone::new("example.test");
        assert_eq!(zone.origin(), "example.test.");
        assert_eq!(zone.name("@").to_ascii(), "example.test.");
        assert_eq!(zone.name("mx1").to_ascii(), "mx1.example.test.");
        assert_eq!(zone.name("mx.other.test").to_ascii(), "mx.other.test.");
        assert_eq!(zone.name("mx.other.test.").to_ascii(), "mx.other.test.");
    }

    #[test]
    #[should_panic(expected = "not inside zone")]
    fn records_outside_the_zone_are_refused() {
        let _ = Zone::new("example.test.").a("mx.other.test", Ipv4Addr::LOCALHOST);
    }

    #[test]
    fn starts_and_stops() {
        let dns = TestDns::start(Zone::new("example.test.").a("@", Ipv4Addr::LOCALHOST));
        assert!(dns.addr().ip().is_loopback());
        assert_ne!(dns.addr().port(), 0);
        drop(dns);
    }
}
