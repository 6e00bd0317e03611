//! A scripted SMTP server in the test process, for driving the outbound
//! `smtp` agent into faults: each connection follows a [`Session`] script
//! (the greeting, the EHLO extensions, the answer to each command, with
//! delays, stalls, 421s and closed connections), and everything the client
//! sent is recorded ([`SessionLog`]: the command lines and which read
//! brought each; [`Received`]: each message's envelope and content as it
//! came through DATA or BDAT).
//!
//! The server is honest SMTP: CRLF replies, multi-line EHLO, commands
//! parsed line by line from whatever a read brings (pipelined commands
//! arrive several per read), DATA content read to the `.` line and
//! un-dot-stuffed, BDAT chunks read by their exact size.

use std::io::{self, Read, Write};
use std::net::{Ipv4Addr, Shutdown, SocketAddr, SocketAddrV4, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// The longest a stall lasts when nobody releases it (so that no thread
/// outlives its test by much).
const MAX_STALL: Duration = Duration::from_secs(45);

/// How long a connection may sit without sending anything.
const IDLE_LIMIT: Duration = Duration::from_secs(60);

/// What the server does when it has to answer.
#[derive(Clone, Debug)]
pub enum Action {
    /// Sends this reply: one or more complete lines (`"250 2.1.0 Ok"`,
    /// `"250-first\n250 last"`), each sent with CRLF. A 421 closes the
    /// connection after it, as RFC 5321 wants.
    Reply(String),
    /// Closes the connection without a word.
    Close,
    /// Never answers: stops reading and waits until
    /// [`ScriptedServer::release`] (or a long limit), then closes.
    Stall,
}

/// One answer: an [`Action`], after an optional delay.
#[derive(Clone, Debug)]
pub struct Answer {
    /// Waited before acting.
    pub delay: Duration,
    /// What to do.
    pub action: Action,
}

impl Answer {
    /// Answers `text` at once (see [`Action::Reply`]).
    pub fn reply(text: &str) -> Answer {
        Answer {
            delay: Duration::ZERO,
            action: Action::Reply(text.to_string()),
        }
    }

    /// Closes the connection.
    pub fn close() -> Answer {
        Answer {
            delay: Duration::ZERO,
            action: Action::Close,
        }
    }

    /// Never answers (until released).
    pub fn stall() -> Answer {
        Answer {
            delay: Duration::ZERO,
            action: Action::Stall,
        }
    }

    /// The same answer, given `delay` later.
    pub fn after(mut self, delay: Duration) -> Answer {
        self.delay = delay;
        self
    }
}

/// The script of one connection. [`Session::default`] is a server that
/// accepts everything and offers no extension.
#[derive(Clone, Debug)]
pub struct Session {
    /// The greeting.
    pub greeting: Answer,
    /// The EHLO extensions offered (`"PIPELINING"`, `"SIZE 1000"`...).
    pub extensions: Vec<String>,
    /// Instead of the 250 EHLO reply built from `extensions`.
    pub ehlo: Option<Answer>,
    /// The answer to MAIL.
    pub mail: Answer,
    /// The answer to RCPT, unless `rcpt_for` names the address.
    pub rcpt: Answer,
    /// Answers to RCPT for particular addresses (compared without case).
    pub rcpt_for: Vec<(String, Answer)>,
    /// Answers to the first RCPT for an address the server sees, over
    /// all sessions (later RCPTs for it get `rcpt_for` or `rcpt`): a
    /// fault for the first try that holds when the agent reuses sessions.
    pub rcpt_once: Vec<(String, Answer)>,
    /// The answer to DATA (a 354 reads the content).
    pub data: Answer,
    /// After this many octets of DATA content, stall (mid-DATA).
    pub stall_in_data_after: Option<usize>,
    /// The answer at the end of data.
    pub data_done: Answer,
    /// The answer to BDAT ... LAST.
    pub bdat_last: Answer,
}

impl Default for Session {
    fn default() -> Self {
        Session {
            greeting: Answer::reply("220 scripted.test ESMTP"),
            extensions: Vec::new(),
            ehlo: None,
            mail: Answer::reply("250 2.1.0 Ok"),
            rcpt: Answer::reply("250 2.1.5 Ok"),
            rcpt_for: Vec::new(),
            rcpt_once: Vec::new(),
            data: Answer::reply("354 End data with <CR><LF>.<CR><LF>"),
            stall_in_data_after: None,
            data_done: Answer::reply("250 2.0.0 Ok: queued"),
            bdat_last: Answer::reply("250 2.0.0 Ok: queued"),
        }
    }
}

impl Session {
    /// A session offering these EHLO extensions.
    pub fn offering(extensions: &[&str]) -> Session {
        Session {
            extensions: extensions.iter().map(|e| e.to_string()).collect(),
            ..Session::default()
        }
    }

    /// The same session, answering RCPT for `address` with `answer`.
    pub fn rcpt_for(mut self, address: &str, answer: Answer) -> Session {
        self.rcpt_for.push((address.to_string(), answer));
        self
    }

    /// The same session, answering the server's first RCPT for `address`
    /// with `answer` (see [`Session::rcpt_once`]).
    pub fn rcpt_once(mut self, address: &str, answer: Answer) -> Session {
        self.rcpt_once.push((address.to_string(), answer));
        self
    }
}

/// One command line as received.
#[derive(Clone, Debug)]
pub struct Command {
    /// The line without its CRLF.
    pub line: String,
    /// Which read of the session brought the line's end (0-based).
    pub read: usize,
}

impl Command {
    /// The command word, upper-cased (`"MAIL"`, `"BDAT"`).
    pub fn verb(&self) -> String {
        self.line
            .split_whitespace()
            .next()
            .unwrap_or("")
            .to_ascii_uppercase()
    }
}

/// What one connection brought.
#[derive(Clone, Debug)]
pub struct SessionLog {
    /// When the connection was accepted.
    pub started: Instant,
    /// The command lines, in order (DATA content and BDAT chunks are not
    /// commands).
    pub commands: Vec<Command>,
    /// How many reads returned data.
    pub reads: usize,
    /// Octets of DATA content received in a transaction that did not end.
    pub partial_data: usize,
    /// The session reached a stall.
    pub stalled: bool,
    /// The connection has ended.
    pub closed: bool,
}

impl SessionLog {
    /// The command words, in order.
    pub fn verbs(&self) -> Vec<String> {
        self.commands.iter().map(Command::verb).collect()
    }
}

/// A message as the server got it.
#[derive(Clone, Debug)]
pub struct Received {
    /// The session (connection) number, from 0.
    pub session: usize,
    /// The MAIL FROM line.
    pub mail: String,
    /// The recipients the server accepted (the address inside `<>`).
    pub rcpts: Vec<String>,
    /// The content: un-dot-stuffed DATA, or the BDAT chunks joined.
    pub content: Vec<u8>,
    /// It came through BDAT.
    pub bdat: bool,
    /// The code of the final reply, None when the server never answered.
    pub reply: Option<u16>,
    /// When the final reply was sent (or the content was complete).
    pub at: Instant,
}

impl Received {
    /// The server took responsibility for the message (2xx at the end).
    pub fn accepted(&self) -> bool {
        self.reply.is_some_and(|c| (200..300).contains(&c))
    }
}

#[derive(Default)]
struct Record {
    sessions: Vec<SessionLog>,
    received: Vec<Received>,
}

struct Shared {
    script: Vec<Session>,
    record: Mutex<Record>,
    /// Addresses whose `rcpt_once` answer has been given.
    once_used: Mutex<Vec<String>>,
    /// Bumped by release(): every stall that began before ends.
    release: AtomicU64,
    stopping: AtomicBool,
}

/// The server: an accept loop and a thread per connection. Dropping it
/// stops accepting and ends every stall.
pub struct ScriptedServer {
    addr: SocketAddr,
    shared: Arc<Shared>,
}

impl ScriptedServer {
    /// Serves on a new listener at `addr` (port 0: any free port).
    /// Connection N follows `script[N]`, the last one when there are
    /// more connections than sessions.
    pub fn start(addr: SocketAddr, script: Vec<Session>) -> io::Result<ScriptedServer> {
        Ok(Self::serve(TcpListener::bind(addr)?, script))
    }

    /// Serves on `listener` (see [`ScriptedServer::start`]).
    pub fn serve(listener: TcpListener, script: Vec<Session>) -> ScriptedServer {
        assert!(!script.is_empty(), "a script needs at least one session");
        let addr = listener.local_addr().expect("listener address");
        let shared = Arc::new(Shared {
            script,
            record: Mutex::new(Record::default()),
            once_used: Mutex::new(Vec::new()),
            release: AtomicU64::new(0),
            stopping: AtomicBool::new(false),
        });
        let s = shared.clone();
        std::thread::spawn(move || {
            for conn in listener.incoming() {
                if s.stopping.load(Ordering::SeqCst) {
                    return;
                }
                let Ok(stream) = conn else { continue };
                let n = {
                    let mut r = s.record.lock().unwrap();
                    r.sessions.push(SessionLog {
                        started: Instant::now(),
                        commands: Vec::new(),
                        reads: 0,
                        partial_data: 0,
                        stalled: false,
                        closed: false,
                    });
                    r.sessions.len() - 1
                };
                let s = s.clone();
                std::thread::spawn(move || {
                    let script = s.script[n.min(s.script.len() - 1)].clone();
                    let mut c = Conn {
                        stream,
                        shared: s.clone(),
                        n,
                        buf: Vec::new(),
                        pos: 0,
                        read_ends: Vec::new(),
                    };
                    let _ = c.run(&script);
                    let _ = c.stream.shutdown(Shutdown::Both);
                    s.record.lock().unwrap().sessions[n].closed = true;
                });
            }
        });
        ScriptedServer { addr, shared }
    }

    /// Where it listens.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Where it listens: the port.
    pub fn port(&self) -> u16 {
        self.addr.port()
    }

    /// The sessions so far.
    pub fn sessions(&self) -> Vec<SessionLog> {
        self.shared.record.lock().unwrap().sessions.clone()
    }

    /// Every message whose content arrived, in order of arrival.
    pub fn received(&self) -> Vec<Received> {
        let mut v = self.shared.record.lock().unwrap().received.clone();
        v.sort_by_key(|m| m.at);
        v
    }

    /// The messages the server accepted (2xx at the end of data).
    pub fn accepted(&self) -> Vec<Received> {
        self.received()
            .into_iter()
            .filter(|m| m.accepted())
            .collect()
    }

    /// Ends every stall under way (later stalls still stall).
    pub fn release(&self) {
        self.shared.release.fetch_add(1, Ordering::SeqCst);
    }
}

impl Drop for ScriptedServer {
    fn drop(&mut self) {
        self.shared.stopping.store(true, Ordering::SeqCst);
        self.release();
        // Wakes the accept loop so that it sees `stopping`.
        let _ = TcpStream::connect_timeout(&self.addr, Duration::from_secs(1));
    }
}

/// Two listeners on the same port of two loopback addresses (two MX hosts
/// that differ only by address), e.g. 127.0.0.1 and 127.0.0.2.
pub fn bind_pair(a: Ipv4Addr, b: Ipv4Addr) -> (TcpListener, TcpListener) {
    for _ in 0..100 {
        let first = TcpListener::bind(SocketAddrV4::new(a, 0)).expect("bind");
        let port = first.local_addr().unwrap().port();
        if let Ok(second) = TcpListener::bind(SocketAddrV4::new(b, port)) {
            return (first, second);
        }
    }
    panic!("no port free on both {a} and {b}");
}

/// The session ended (closed by either side, or by the script).
struct Ended;

impl From<io::Error> for Ended {
    fn from(_: io::Error) -> Ended {
        Ended
    }
}

struct Conn {
    stream: TcpStream,
    shared: Arc<Shared>,
    n: usize,
    /// Everything received on this connection.
    buf: Vec<u8>,
    /// The first octet not consumed yet.
    pos: usize,
    /// The end offset (in `buf`) of each read.
    read_ends: Vec<usize>,
}

/// The envelope of the transaction under way.
#[derive(Default)]
struct Envelope {
    mail: Option<String>,
    rcpts: Vec<String>,
    chunks: Vec<u8>,
}

impl Conn {
    fn run(&mut self, script: &Session) -> Result<(), Ended> {
        self.stream.set_read_timeout(Some(IDLE_LIMIT))?;
        self.answer(&script.greeting)?;
        let mut env = Envelope::default();
        loop {
            let line = self.line()?;
            let verb = line
                .split_whitespace()
                .next()
                .unwrap_or("")
                .to_ascii_uppercase();
            match verb.as_str() {
                "EHLO" => match &script.ehlo {
                    Some(a) => {
                        self.answer(a)?;
                    }
                    None => {
                        let mut lines = vec!["scripted.test".to_string()];
                        lines.extend(script.extensions.iter().cloned());
                        let text = lines
                            .iter()
                            .enumerate()
                            .map(|(i, l)| {
                                let sep = if i + 1 == lines.len() { ' ' } else { '-' };
                                format!("250{sep}{l}")
                            })
                            .collect::<Vec<_>>()
                            .join("\n");
                        self.answer(&Answer::reply(&text))?;
                    }
                },
                "HELO" => {
                    self.answer(&Answer::reply("250 scripted.test"))?;
                }
                "MAIL" => {
                    env = Envelope::default();
                    if self.answer(&script.mail)? / 100 == 2 {
                        env.mail = Some(line.clone());
                    }
                }
                "RCPT" => {
                    let addr = angle(&line);
                    let once = script
                        .rcpt_once
                        .iter()
                        .find(|(who, _)| who.eq_ignore_ascii_case(&addr))
                        .filter(|_| {
                            let mut used = self.shared.once_used.lock().unwrap();
                            let first = !used.contains(&addr);
                            used.push(addr.clone());
                            first
                        });
                    let a = once
                        .or_else(|| {
                            script
                                .rcpt_for
                                .iter()
                                .find(|(who, _)| who.eq_ignore_ascii_case(&addr))
                        })
                        .map(|(_, a)| a)
                        .unwrap_or(&script.rcpt);
                    if env.mail.is_none() {
                        self.answer(&Answer::reply("503 5.5.1 Error: need MAIL command"))?;
                    } else if self.answer(a)? / 100 == 2 {
                        env.rcpts.push(addr);
                    }
                }
                "DATA" => {
                    if env.rcpts.is_empty() {
                        self.answer(&Answer::reply("554 5.5.1 Error: no valid recipients"))?;
                        continue;
                    }
                    if self.answer(&script.data)? != 354 {
                        continue;
                    }
                    let content = self.data_content(script)?;
                    let idx = self.record(&env, content, false);
                    let code = self.answer(&script.data_done)?;
                    self.set_reply(idx, code);
                    env = Envelope::default();
                }
                "BDAT" => {
                    let mut words = line.split_whitespace().skip(1);
                    let size: Option<usize> = words.next().and_then(|w| w.parse().ok());
                    let last = words.next().is_some_and(|w| w.eq_ignore_ascii_case("LAST"));
                    let Some(size) = size else {
                        self.answer(&Answer::reply("501 5.5.4 Syntax: BDAT size [LAST]"))?;
                        continue;
                    };
                    let chunk = self.exact(size)?;
                    if env.rcpts.is_empty() {
                        self.answer(&Answer::reply("554 5.5.1 Error: no valid recipients"))?;
                        continue;
                    }
                    env.chunks.extend_from_slice(&chunk);
                    if last {
                        let content = std::mem::take(&mut env.chunks);
                        let idx = self.record(&env, content, true);
                        let code = self.answer(&script.bdat_last)?;
                        self.set_reply(idx, code);
                        env = Envelope::default();
                    } else {
                        self.answer(&Answer::reply(&format!("250 2.0.0 {size} octets received")))?;
                    }
                }
                "RSET" => {
                    env = Envelope::default();
                    self.answer(&Answer::reply("250 2.0.0 Ok"))?;
                }
                "NOOP" => {
                    self.answer(&Answer::reply("250 2.0.0 Ok"))?;
                }
                "QUIT" => {
                    self.answer(&Answer::reply("221 2.0.0 Bye"))?;
                    return Ok(());
                }
                _ => {
                    self.answer(&Answer::reply("502 5.5.2 Error: command not recognized"))?;
                }
            }
        }
    }

    /// Reads DATA content up to the `.` line; returns it un-dot-stuffed.
    fn data_content(&mut self, script: &Session) -> Result<Vec<u8>, Ended> {
        let mut content = Vec::new();
        loop {
            let line = self.raw_line(1 << 20)?;
            if line == b".\r\n" {
                self.log(|s| s.partial_data = 0);
                return Ok(content);
            }
            let unstuffed = if line.first() == Some(&b'.') {
                &line[1..]
            } else {
                &line[..]
            };
            content.extend_from_slice(unstuffed);
            let got = content.len();
            self.log(|s| s.partial_data = got);
            if script.stall_in_data_after.is_some_and(|n| got >= n) {
                self.stall();
                return Err(Ended);
            }
        }
    }

    /// Keeps a message; returns its index for [`Conn::set_reply`].
    fn record(&mut self, env: &Envelope, content: Vec<u8>, bdat: bool) -> usize {
        let mut r = self.shared.record.lock().unwrap();
        r.received.push(Received {
            session: self.n,
            mail: env.mail.clone().unwrap_or_default(),
            rcpts: env.rcpts.clone(),
            content,
            bdat,
            reply: None,
            at: Instant::now(),
        });
        r.received.len() - 1
    }

    fn set_reply(&mut self, idx: usize, code: u16) {
        let mut r = self.shared.record.lock().unwrap();
        r.received[idx].reply = Some(code);
        r.received[idx].at = Instant::now();
    }

    fn log(&self, f: impl FnOnce(&mut SessionLog)) {
        f(&mut self.shared.record.lock().unwrap().sessions[self.n]);
    }

    /// Acts on `a`; returns the reply code sent, or Ended when the
    /// connection is over (closed, stalled, 421).
    fn answer(&mut self, a: &Answer) -> Result<u16, Ended> {
        if !a.delay.is_zero() {
            std::thread::sleep(a.delay);
        }
        match &a.action {
            Action::Reply(text) => {
                let mut out = Vec::new();
                for l in text.lines() {
                    out.extend_from_slice(l.as_bytes());
                    out.extend_from_slice(b"\r\n");
                }
                self.stream.write_all(&out)?;
                let code: u16 = text.get(..3).and_then(|c| c.parse().ok()).unwrap_or(0);
                if code == 421 {
                    return Err(Ended);
                }
                Ok(code)
            }
            Action::Close => Err(Ended),
            Action::Stall => {
                self.stall();
                Err(Ended)
            }
        }
    }

    /// Waits without reading until released (or MAX_STALL).
    fn stall(&mut self) {
        let generation = self.shared.release.load(Ordering::SeqCst);
        self.log(|s| s.stalled = true);
        let end = Instant::now() + MAX_STALL;
        while self.shared.release.load(Ordering::SeqCst) == generation && Instant::now() < end {
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// One read more into `buf`.
    fn fill(&mut self) -> Result<(), Ended> {
        let mut chunk = [0u8; 64 * 1024];
        let n = self.stream.read(&mut chunk)?;
        if n == 0 {
            return Err(Ended);
        }
        self.buf.extend_from_slice(&chunk[..n]);
        self.read_ends.push(self.buf.len());
        let reads = self.read_ends.len();
        self.log(|s| s.reads = reads);
        Ok(())
    }

    /// The next line, CRLF included (at most `max` octets).
    fn raw_line(&mut self, max: usize) -> Result<Vec<u8>, Ended> {
        let mut from = self.pos;
        loop {
            if let Some(i) = self.buf[from..].windows(2).position(|w| w == b"\r\n") {
                let end = from + i + 2;
                let line = self.buf[self.pos..end].to_vec();
                self.pos = end;
                return Ok(line);
            }
            if self.buf.len() - self.pos > max {
                return Err(Ended);
            }
            from = self.buf.len().saturating_sub(1).max(self.pos);
            self.fill()?;
        }
    }

    /// The next command line (recorded with the read that completed it).
    fn line(&mut self) -> Result<String, Ended> {
        let raw = self.raw_line(4096)?;
        let last = self.pos - 1;
        let read = self.read_ends.partition_point(|&end| end <= last);
        let line = String::from_utf8_lossy(&raw[..raw.len() - 2]).into_owned();
        let cmd = Command {
            line: line.clone(),
            read,
        };
        self.log(|s| s.commands.push(cmd));
        Ok(line)
    }

    /// Exactly `n` octets (a BDAT chunk).
    fn exact(&mut self, n: usize) -> Result<Vec<u8>, Ended> {
        while self.buf.len() - self.pos < n {
            self.fill()?;
        }
        let out = self.buf[self.pos..self.pos + n].to_vec();
        self.pos += n;
        Ok(out)
    }
}

/// The address between `<` and `>` in a MAIL or RCPT line (lower-cased).
fn angle(line: &str) -> String {
    let start = line.find('<').map(|i| i + 1).unwrap_or(line.len());
    let end = line[start..]
        .find('>')
        .map(|i| start + i)
        .unwrap_or(line.len());
    line[start..end].to_ascii_lowercase()
}
