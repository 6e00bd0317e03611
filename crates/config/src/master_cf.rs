//! master.cf: the service table master(8) reads (Postfix's master(5)).
//!
//! Each logical line (continuations and comments as in main.cf) is one
//! service: `service type private unpriv chroot wakeup maxproc command
//! [args]`. `-` in a column means its default. Postern's one extension: the
//! unpriv column may name the user the service runs as.
//!
//! `-o name=value` (also `-oname=value` and Postfix 3.0's `-o { name = value }`)
//! in the arguments are main.cf overrides for that service; they are taken
//! out of `args`. As the service's own getopt would, option scanning stops at
//! the first argument that is not an option (so `pipe ... argv=cmd -o x`
//! leaves `-o x` to the command) and at `--`.
//!
//! SECURITY: master.cf is trusted administrator input, but service names of
//! socket services become file names under the queue directory, so names
//! with `/` or `.`/`..` are refused.

use std::collections::HashMap;
use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, ToSocketAddrs};
use std::path::{Path, PathBuf};
use std::str::FromStr;

use crate::error::ConfigError;
use crate::main_cf::{MainCf, logical_lines};
use crate::params::is_param_name;

/// The transport type column: how master listens for the service.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ServiceType {
    /// A TCP listener ("inet").
    Inet,
    /// A Unix-domain stream socket ("unix").
    Unix,
    /// A Unix-domain datagram socket ("unix-dgram").
    UnixDgram,
    /// A named pipe ("fifo").
    Fifo,
    /// A socket that receives connections passed by another process ("pass").
    Pass,
}

impl ServiceType {
    /// The master.cf spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            ServiceType::Inet => "inet",
            ServiceType::Unix => "unix",
            ServiceType::UnixDgram => "unix-dgram",
            ServiceType::Fifo => "fifo",
            ServiceType::Pass => "pass",
        }
    }
}

impl fmt::Display for ServiceType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for ServiceType {
    type Err = String;
    /// Parses the master.cf spelling (used for the `-t` argument of services too).
    fn from_str(s: &str) -> Result<ServiceType, String> {
        match s {
            "inet" => Ok(ServiceType::Inet),
            "unix" => Ok(ServiceType::Unix),
            "unix-dgram" => Ok(ServiceType::UnixDgram),
            "fifo" => Ok(ServiceType::Fifo),
            "pass" => Ok(ServiceType::Pass),
            _ => Err(format!("invalid transport type: {s}")),
        }
    }
}

/// The unpriv column: which user the service runs as.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Unpriv {
    /// `-` or `y`: the service's default unprivileged user (mail_owner).
    Default,
    /// `n`: the service keeps root (local needs it to become each recipient).
    Root,
    /// A user name (Postern extension): run as that user.
    User(String),
}

/// One service line of master.cf.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ServiceEntry {
    /// The service column (for inet: `[host:]port`).
    pub name: String,
    /// The type column.
    pub kind: ServiceType,
    /// private column: socket in private/ (true) or public/; '-' = y.
    pub private: bool,
    /// unpriv column.
    pub unpriv: Unpriv,
    /// chroot column: run chrooted to the queue directory; '-' = n.
    pub chroot: bool,
    /// wakeup column in seconds; '-' = 0 (never).
    pub wakeup: u32,
    /// wakeup written as "N?": wake only when the service is in use.
    pub wakeup_conditional: bool,
    /// maxproc column; '-' = None (default_process_limit); Some(0) = unlimited.
    pub maxproc: Option<u32>,
    /// The program (first word of the command column).
    pub command: String,
    /// The remaining words, without the `-o` pairs.
    pub args: Vec<String>,
    /// The `-o name=value` main.cf overrides, in order.
    pub overrides: Vec<(String, String)>,
    /// Line of master.cf the entry starts on.
    pub line: usize,
}

/// Well-known service ports, so resolution does not depend on /etc/services.
const PORTS: &[(&str, u16)] = &[
    ("imap", 143),
    ("imaps", 993),
    ("lmtp", 24),
    ("pop3", 110),
    ("pop3s", 995),
    ("smtp", 25),
    ("smtps", 465),
    ("submission", 587),
    ("submissions", 465),
];

/// A port from a number or a service name (built-in table, then /etc/services).
fn port_of(service: &str) -> Option<u16> {
    if !service.is_empty() && service.bytes().all(|b| b.is_ascii_digit()) {
        return service.parse().ok();
    }
    if let Some((_, p)) = PORTS.iter().find(|(n, _)| *n == service) {
        return Some(*p);
    }
    let services = std::fs::read_to_string("/etc/services").ok()?;
    for line in services.lines() {
        let line = line.split('#').next().unwrap_or("");
        let mut words = line.split_whitespace();
        let (Some(name), Some(portproto)) = (words.next(), words.next()) else {
            continue;
        };
        let Some((port, "tcp")) = portproto.split_once('/') else {
            continue;
        };
        if name == service || words.any(|alias| alias == service) {
            return port.parse().ok();
        }
    }
    None
}

/// True when this host can use IPv6 (a socket can be bound to ::1).
fn host_has_ipv6() -> bool {
    std::net::UdpSocket::bind((Ipv6Addr::LOCALHOST, 0)).is_ok()
}

impl ServiceEntry {
    /// Key used by reload to match services: "name/type".
    pub fn key(&self) -> String {
        format!("{}/{}", self.name, self.kind)
    }

    fn err(&self, main: &MainCf, reason: String) -> ConfigError {
        ConfigError::new(main.config_dir().join("master.cf"), self.line, reason)
    }

    /// For inet: the addresses to bind. name forms: "smtp", "2525", "127.0.0.1:1025", "[::1]:1025", "host:smtp".
    /// Without a host part the addresses come from inet_interfaces ("all" →
    /// 0.0.0.0 plus [::] when inet_protocols allows IPv6 and the host has it;
    /// "loopback-only" → 127.0.0.1 plus ::1 likewise; or a list of addresses
    /// or host names), filtered by inet_protocols. A [::] listener must be
    /// bound with IPV6_V6ONLY so it does not clash with 0.0.0.0.
    pub fn inet_addresses(&self, main: &MainCf) -> Result<Vec<SocketAddr>, ConfigError> {
        let (host, service) = split_host_port(&self.name)
            .ok_or_else(|| self.err(main, format!("bad inet service name: \"{}\"", self.name)))?;
        let port = port_of(service)
            .ok_or_else(|| self.err(main, format!("unknown service port: \"{service}\"")))?;

        let protocols = main.list("inet_protocols");
        let v4 = protocols.iter().any(|p| p == "all" || p == "ipv4");
        let v6 = protocols.iter().any(|p| p == "all" || p == "ipv6");
        if !v4 && !v6 {
            return Err(self.err(
                main,
                format!(
                    "bad inet_protocols value: \"{}\"",
                    main.str("inet_protocols")
                ),
            ));
        }
        let mut out: Vec<SocketAddr> = Vec::new();
        let interfaces = main.list("inet_interfaces");
        let wildcard = match interfaces.as_slice() {
            [one] if one == "all" => Some((Ipv4Addr::UNSPECIFIED, Ipv6Addr::UNSPECIFIED)),
            [one] if one == "loopback-only" => Some((Ipv4Addr::LOCALHOST, Ipv6Addr::LOCALHOST)),
            _ => None,
        };
        if let Some(host) = host {
            out.extend(resolve(host, port).map_err(|r| self.err(main, r))?);
        } else if let Some((any4, any6)) = wildcard {
            if v4 {
                out.push(SocketAddr::new(IpAddr::V4(any4), port));
            }
            if v6 && host_has_ipv6() {
                out.push(SocketAddr::new(IpAddr::V6(any6), port));
            }
        } else {
            if interfaces.is_empty() {
                return Err(self.err(main, "inet_interfaces is empty".to_string()));
            }
            for item in &interfaces {
                if item == "all" || item == "loopback-only" {
                    return Err(self.err(
                        main,
                        format!("inet_interfaces: \"{item}\" must be the only value"),
                    ));
                }
                out.extend(resolve(item, port).map_err(|r| self.err(main, r))?);
            }
        }
        // Keep only the enabled protocols, as Postfix does.
        out.retain(|a| if a.is_ipv4() { v4 } else { v6 });
        let mut seen = Vec::new();
        out.retain(|a| {
            if seen.contains(a) {
                false
            } else {
                seen.push(*a);
                true
            }
        });
        if out.is_empty() {
            return Err(self.err(
                main,
                format!(
                    "service {}: no address to listen on (inet_interfaces = {}, inet_protocols = {})",
                    self.name,
                    main.str("inet_interfaces"),
                    main.str("inet_protocols")
                ),
            ));
        }
        Ok(out)
    }

    /// For unix/fifo/unix-dgram: QUEUE_DIR/private/NAME or QUEUE_DIR/public/NAME.
    pub fn socket_path(&self, main: &MainCf) -> PathBuf {
        let dir = if self.private { "private" } else { "public" };
        main.path("queue_directory").join(dir).join(&self.name)
    }
}

/// Splits an inet service column into (host, port-or-service).
fn split_host_port(name: &str) -> Option<(Option<&str>, &str)> {
    if let Some(rest) = name.strip_prefix('[') {
        let (host, after) = rest.split_once(']')?;
        let port = after.strip_prefix(':')?;
        if host.is_empty() || port.is_empty() {
            return None;
        }
        return Some((Some(host), port));
    }
    match name.rsplit_once(':') {
        Some((host, port)) => {
            if host.is_empty() || port.is_empty() || host.contains(':') {
                // A bare IPv6 address must be written in brackets.
                return None;
            }
            Some((Some(host), port))
        }
        None if name.is_empty() => None,
        None => Some((None, name)),
    }
}

/// Addresses of a host (literal IP, possibly in brackets, or a name).
fn resolve(host: &str, port: u16) -> Result<Vec<SocketAddr>, String> {
    let bare = host
        .strip_prefix('[')
        .and_then(|h| h.strip_suffix(']'))
        .unwrap_or(host);
    if let Ok(ip) = bare.parse::<IpAddr>() {
        return Ok(vec![SocketAddr::new(ip, port)]);
    }
    match (bare, port).to_socket_addrs() {
        Ok(addrs) => {
            let v: Vec<SocketAddr> = addrs.collect();
            if v.is_empty() {
                Err(format!("host has no address: \"{bare}\""))
            } else {
                Ok(v)
            }
        }
        Err(e) => Err(format!("cannot resolve host \"{bare}\": {e}")),
    }
}

/// The whole master.cf: where it was read from and its services in order.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MasterCf {
    /// The file the services were read from.
    pub path: PathBuf,
    /// The services, in file order.
    pub services: Vec<ServiceEntry>,
}

/// One word of a line; `braced` when it was written as `{ ... }`.
struct Word {
    text: String,
    braced: bool,
}

/// Splits a logical line into words; `{ text }` is one word (outer braces
/// and the white space just inside them removed).
fn words(line: &str) -> Result<Vec<Word>, String> {
    let mut out = Vec::new();
    let mut chars = line.char_indices().peekable();
    while let Some(&(start, c)) = chars.peek() {
        if c.is_whitespace() {
            chars.next();
            continue;
        }
        if c == '{' {
            let mut depth = 0usize;
            let mut end = None;
            for (i, ch) in chars.by_ref() {
                if ch == '{' {
                    depth += 1;
                } else if ch == '}' {
                    depth -= 1;
                    if depth == 0 {
                        end = Some(i);
                        break;
                    }
                }
            }
            let Some(end) = end else {
                return Err(format!("missing '}}' after \"{}\"", &line[start..]));
            };
            out.push(Word {
                text: line[start + 1..end].trim().to_string(),
                braced: true,
            });
        } else {
            let mut end = line.len();
            while let Some(&(i, ch)) = chars.peek() {
                if ch.is_whitespace() {
                    end = i;
                    break;
                }
                chars.next();
            }
            out.push(Word {
                text: line[start..end].to_string(),
                braced: false,
            });
        }
    }
    Ok(out)
}

fn yes_no(field: &str, what: &str, dash: bool) -> Result<bool, String> {
    match field {
        "-" => Ok(dash),
        "y" => Ok(true),
        "n" => Ok(false),
        _ => Err(format!(
            "bad {what} field: \"{field}\" (expected y, n or -)"
        )),
    }
}

/// True for a user name master may switch to: letters, digits, `_.-`, not starting with `-`.
fn is_user_name(s: &str) -> bool {
    !s.is_empty()
        && !s.starts_with('-')
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-'))
}

/// Parses one `name=value` override (`name = value` inside braces).
fn parse_override(text: &str) -> Result<(String, String), String> {
    let Some((name, value)) = text.split_once('=') else {
        return Err(format!("bad -o override: \"{text}\" (expected name=value)"));
    };
    let name = name.trim();
    if !is_param_name(name) {
        return Err(format!("bad -o override: \"{text}\" (bad parameter name)"));
    }
    Ok((name.to_string(), value.trim().to_string()))
}

/// Options of the service skeleton that take an argument (getopt "i:m:n:o:s:t:").
fn option_takes_arg(opt: &str) -> bool {
    matches!(opt, "-i" | "-m" | "-n" | "-s" | "-t")
}

fn parse_entry(line: usize, text: &str) -> Result<ServiceEntry, String> {
    let w = words(text)?;
    if w.len() < 8 {
        return Err("unexpected end of entry; need at least 8 fields".to_string());
    }
    if let Some(b) = w.iter().take(8).find(|x| x.braced) {
        return Err(format!(
            "unexpected '{{ {} }}' in the first 8 fields",
            b.text
        ));
    }
    let field = |i: usize| w[i].text.as_str();
    let name = field(0).to_string();
    let kind: ServiceType = field(1).parse()?;
    if kind != ServiceType::Inet
        && (name.is_empty() || name.contains('/') || name == "." || name == "..")
    {
        return Err(format!("bad service name: \"{name}\""));
    }
    let private = yes_no(field(2), "private", true)?;
    let unpriv = match field(3) {
        "-" | "y" => Unpriv::Default,
        "n" => Unpriv::Root,
        u if is_user_name(u) => Unpriv::User(u.to_string()),
        u => {
            return Err(format!(
                "bad unprivileged field: \"{u}\" (expected y, n, - or a user name)"
            ));
        }
    };
    let chroot = yes_no(field(4), "chroot", false)?;
    let (wakeup, wakeup_conditional) = match field(5) {
        "-" => (0, false),
        f => {
            let (num, cond) = match f.strip_suffix('?') {
                Some(n) => (n, true),
                None => (f, false),
            };
            if num.is_empty() || !num.bytes().all(|b| b.is_ascii_digit()) {
                return Err(format!("bad wakeup field: \"{f}\""));
            }
            let n: u32 = num
                .parse()
                .map_err(|_| format!("bad wakeup field: \"{f}\""))?;
            (n, cond)
        }
    };
    let maxproc = match field(6) {
        "-" => None,
        f if !f.is_empty() && f.bytes().all(|b| b.is_ascii_digit()) => Some(
            f.parse::<u32>()
                .map_err(|_| format!("bad maximal process count: \"{f}\""))?,
        ),
        f => return Err(format!("bad maximal process count: \"{f}\"")),
    };
    let command = field(7).to_string();

    let mut args = Vec::new();
    let mut overrides = Vec::new();
    let mut rest = w.into_iter().skip(8);
    let mut scanning = true;
    while let Some(word) = rest.next() {
        if !scanning || word.braced {
            // A non-option word (braced or not) ends option scanning.
            scanning = false;
            args.push(word.text);
            continue;
        }
        let t = word.text;
        if t == "--" {
            scanning = false;
            args.push(t);
        } else if t == "-o" {
            let Some(v) = rest.next() else {
                return Err("-o without a value".to_string());
            };
            overrides.push(parse_override(&v.text)?);
        } else if let Some(v) = t.strip_prefix("-o") {
            overrides.push(parse_override(v)?);
        } else if option_takes_arg(&t) {
            args.push(t);
            if let Some(v) = rest.next() {
                args.push(v.text);
            }
        } else if t.starts_with('-') && t.len() > 1 {
            args.push(t);
        } else {
            scanning = false;
            args.push(t);
        }
    }
    Ok(ServiceEntry {
        name,
        kind,
        private,
        unpriv,
        chroot,
        wakeup,
        wakeup_conditional,
        maxproc,
        command,
        args,
        overrides,
        line,
    })
}

impl MasterCf {
    /// Reads CONFIG_DIR/master.cf.
    pub fn load(config_dir: &Path) -> Result<MasterCf, ConfigError> {
        let path = config_dir.join("master.cf");
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
        MasterCf::parse(&text, &path)
    }

    /// Parses master.cf text as if read from `path`.
    pub fn parse(text: &str, path: &Path) -> Result<MasterCf, ConfigError> {
        let lines = logical_lines(text).map_err(|(l, r)| ConfigError::new(path, l, r))?;
        let mut services: Vec<ServiceEntry> = Vec::new();
        let mut seen: HashMap<String, usize> = HashMap::new();
        for (line, text) in lines {
            let entry = parse_entry(line, &text).map_err(|r| ConfigError::new(path, line, r))?;
            if let Some(first) = seen.insert(entry.key(), line) {
                return Err(ConfigError::new(
                    path,
                    line,
                    format!(
                        "duplicate service: {} (first defined at line {first})",
                        entry.key()
                    ),
                ));
            }
            services.push(entry);
        }
        Ok(MasterCf {
            path: path.to_path_buf(),
            services,
        })
    }
}

#[cfg(test)]
mod tests;
