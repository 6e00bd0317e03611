//! Harness for end-to-end tests: builds an instance directory, starts a real
//! master (which starts the real services), and speaks SMTP to it over
//! loopback.
//!
//! The binaries come from the cargo target directory these tests were built
//! in (`cargo build --workspace` first; the README's test command does it).

pub mod scripted;
pub mod tls;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// The directory holding the built binaries (target/debug or target/release).
pub fn bin_dir() -> PathBuf {
    let exe = std::env::current_exe().expect("test binary path");
    // target/<profile>/deps/test-binary
    let dir = exe
        .parent()
        .and_then(Path::parent)
        .expect("target dir")
        .to_path_buf();
    for b in ["master", "smtpd", "cleanup", "qmgr", "local", "postern"] {
        assert!(
            dir.join(b).is_file(),
            "{} is missing: run `cargo build --workspace` before the tests",
            dir.join(b).display()
        );
    }
    dir
}

/// A port on 127.0.0.1 that was free a moment ago.
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Waits until `f` is true or the time is up; returns whether it became true.
pub fn wait_until(timeout: Duration, mut f: impl FnMut() -> bool) -> bool {
    let end = Instant::now() + timeout;
    loop {
        if f() {
            return true;
        }
        if Instant::now() >= end {
            return false;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Options for a test instance.
#[derive(Clone, Debug)]
pub struct Options {
    /// mynetworks (default excludes loopback, so relaying is refused).
    pub mynetworks: String,
    /// Extra main.cf lines.
    pub main_extra: String,
    /// Extra master.cf lines, appended after the standard services.
    pub master_extra: String,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            mynetworks: "192.0.2.0/24".into(),
            main_extra: String::new(),
            master_extra: String::new(),
        }
    }
}

/// A Postern instance in a temporary directory.
pub struct Instance {
    /// Keeps the directory alive.
    _tmp: tempfile::TempDir,
    /// The instance directory (config, queue, mail, log).
    pub dir: PathBuf,
    /// The SMTP port of the first smtpd.
    pub smtp_port: u16,
    /// The running master, if started by this harness.
    pub master: Option<Child>,
}

/// Users of every test instance (users_file).
pub const USERS: &[&str] = &["alice", "bob", "carol"];

impl Instance {
    /// Writes a complete instance (not started).
    pub fn new(opts: Options) -> Instance {
        let tmp = tempfile::Builder::new()
            .prefix("postern-test-")
            .tempdir()
            .unwrap();
        let dir = tmp.path().to_path_buf();
        let smtp_port = free_port();
        let bins = bin_dir();
        let main_cf = format!(
            "queue_directory = {d}/queue\n\
             daemon_directory = {b}\n\
             data_directory = {d}/data\n\
             maillog_file = {d}/maillog\n\
             myhostname = mail.example.test\n\
             mydomain = example.test\n\
             mydestination = $mydomain, $myhostname, localhost\n\
             mynetworks = {nets}\n\
             inet_interfaces = loopback-only\n\
             alias_maps = hash:{d}/aliases\n\
             users_file = {d}/users\n\
             local_recipient_maps = $alias_maps\n\
             virtual_mailbox_base = {d}/mail\n\
             home_mailbox = Maildir/\n\
             minimal_backoff_time = 1s\n\
             maximal_backoff_time = 2s\n\
             queue_run_delay = 1s\n\
             service_throttle_time = 2s\n\
             {extra}\n",
            d = dir.display(),
            b = bins.display(),
            nets = opts.mynetworks,
            extra = opts.main_extra
        );
        std::fs::write(dir.join("main.cf"), main_cf).unwrap();
        std::fs::write(
            dir.join("master.cf"),
            Self::master_cf_text(&[smtp_port]) + &opts.master_extra,
        )
        .unwrap();
        std::fs::write(
            dir.join("aliases"),
            "postmaster: alice\nteam: alice, bob\nall: team, carol\nloop1: loop2\nloop2: loop1\n",
        )
        .unwrap();
        let users: String = USERS
            .iter()
            .map(|u| format!("{u}:{{PLAIN}}secret::::::\n"))
            .collect();
        std::fs::write(dir.join("users"), users).unwrap();
        for sub in ["queue", "data", "mail"] {
            std::fs::create_dir_all(dir.join(sub)).unwrap();
        }
        if is_root() {
            // As root the services run as their own users (docs/security.md):
            // they must be able to reach the instance, read its tables, and
            // local delivers to users_file users as default_privs (nobody).
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755)).unwrap();
            let nobody = nix::unistd::User::from_name("nobody")
                .unwrap()
                .expect("user nobody");
            nix::unistd::chown(&dir.join("mail"), Some(nobody.uid), Some(nobody.gid)).unwrap();
        }
        Instance {
            _tmp: tmp,
            dir,
            smtp_port,
            master: None,
        }
    }

    /// master.cf text with one smtpd per port.
    pub fn master_cf_text(ports: &[u16]) -> String {
        let mut s = String::from("# test instance\n");
        for p in ports {
            s.push_str(&format!("127.0.0.1:{p} inet n - n - - smtpd\n"));
        }
        s.push_str("cleanup unix - - n - 0 cleanup\nqmgr unix - - n 300 1 qmgr\nlocal unix - n n - - local\n# local submission: feeds maildrop/ to cleanup, woken every 60 s\npickup unix n - n 60 1 pickup\n# passwords and user lookups\nauth unix - - n - - auth\n");
        s
    }

    /// Starts master in the foreground as a child and waits for SMTP.
    pub fn start(&mut self) {
        self.install();
        let child = Command::new(bin_dir().join("master"))
            .arg("-c")
            .arg(&self.dir)
            .arg("-f")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start master");
        self.master = Some(child);
        let port = self.smtp_port;
        if !wait_until(Duration::from_secs(20), || {
            TcpStream::connect(("127.0.0.1", port)).is_ok()
        }) {
            let mut err = String::new();
            if let Some(mut c) = self.master.take() {
                let _ = c.kill();
                if let Some(mut e) = c.stderr.take() {
                    let _ = e.read_to_string(&mut err);
                }
                let _ = c.wait();
            }
            panic!(
                "master did not start listening: {err}\nlog:\n{}",
                self.log()
            );
        }
    }

    /// As root: `postern install` for this instance (users, groups, queue
    /// permissions; idempotent). Does nothing for other users.
    pub fn install(&self) {
        if is_root() {
            let out = self.postern(&["install"]);
            assert!(
                out.status.success(),
                "postern install failed: {}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
        }
    }

    /// Stops master with SIGTERM and waits for it.
    pub fn stop(&mut self) {
        if let Some(mut c) = self.master.take() {
            signal(c.id() as i32, libc::SIGTERM);
            let done = wait_until(Duration::from_secs(15), || {
                matches!(c.try_wait(), Ok(Some(_)))
            });
            if !done {
                let _ = c.kill();
                let _ = c.wait();
                panic!("master did not stop on SIGTERM");
            }
        }
    }

    /// Runs the postern command against this instance.
    pub fn postern(&self, args: &[&str]) -> std::process::Output {
        Command::new(bin_dir().join("postern"))
            .arg("-c")
            .arg(&self.dir)
            .args(args)
            .output()
            .expect("run postern")
    }

    /// The mail log so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("maillog")).unwrap_or_default()
    }

    /// The messages in a user's Maildir new/ (sorted by file name).
    pub fn mailbox(&self, user: &str) -> Vec<Vec<u8>> {
        let d = self.dir.join("mail").join(user).join("Maildir").join("new");
        let mut names: Vec<PathBuf> = match std::fs::read_dir(&d) {
            Ok(rd) => rd.filter_map(|e| e.ok()).map(|e| e.path()).collect(),
            Err(_) => return Vec::new(),
        };
        names.sort();
        names.iter().filter_map(|p| std::fs::read(p).ok()).collect()
    }

    /// Waits until `user` has at least `n` messages; returns them.
    pub fn wait_mail(&self, user: &str, n: usize, timeout: Duration) -> Vec<Vec<u8>> {
        let ok = wait_until(timeout, || self.mailbox(user).len() >= n);
        let got = self.mailbox(user);
        assert!(
            ok,
            "{user} has {} messages, want {n}\nlog:\n{}",
            got.len(),
            self.log()
        );
        got
    }

    /// Files in a queue directory.
    pub fn queue_files(&self, queue: &str) -> Vec<String> {
        match std::fs::read_dir(self.dir.join("queue").join(queue)) {
            Ok(rd) => rd
                .filter_map(|e| e.ok())
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect(),
            Err(_) => Vec::new(),
        }
    }

    /// True when incoming/, active/ and deferred/ hold no message. Dot
    /// files are not messages: a cleanup killed mid-write leaves its
    /// temporary file (removed after a day), qmgr keeps retry markers.
    pub fn queue_empty(&self) -> bool {
        ["incoming", "active", "deferred"]
            .iter()
            .all(|q| self.queue_files(q).iter().all(|f| f.starts_with('.')))
    }

    /// Connects an SMTP client to the first smtpd.
    pub fn smtp(&self) -> Smtp {
        Smtp::connect(SocketAddr::from(([127, 0, 0, 1], self.smtp_port)))
    }

    /// Pids of running processes whose program is `name` (e.g. "qmgr") and
    /// that belong to this instance (their MAIL_CONFIG is our directory).
    pub fn pids_of(&self, name: &str) -> Vec<i32> {
        let mut out = Vec::new();
        let Ok(rd) = std::fs::read_dir("/proc") else {
            return out;
        };
        for e in rd.filter_map(|e| e.ok()) {
            let Ok(pid) = e.file_name().to_string_lossy().parse::<i32>() else {
                continue;
            };
            let Ok(cmd) = std::fs::read(format!("/proc/{pid}/cmdline")) else {
                continue;
            };
            let argv0 = cmd.split(|&b| b == 0).next().unwrap_or_default();
            if !argv0.ends_with(format!("/{name}").as_bytes()) && argv0 != name.as_bytes() {
                continue;
            }
            let Ok(env) = std::fs::read(format!("/proc/{pid}/environ")) else {
                continue;
            };
            let want = format!("MAIL_CONFIG={}", self.dir.display());
            if env.split(|&b| b == 0).any(|v| v == want.as_bytes()) || self.is_our_master(pid, &cmd)
            {
                out.push(pid);
            }
        }
        out
    }

    fn is_our_master(&self, _pid: i32, cmd: &[u8]) -> bool {
        let dir = self.dir.display().to_string();
        cmd.split(|&b| b == 0).any(|a| a == dir.as_bytes())
    }
}

impl Drop for Instance {
    fn drop(&mut self) {
        if let Some(mut c) = self.master.take() {
            signal(c.id() as i32, libc::SIGTERM);
            if !wait_until(Duration::from_secs(10), || {
                matches!(c.try_wait(), Ok(Some(_)))
            }) {
                let _ = c.kill();
                let _ = c.wait();
            }
        }
        // Anything of ours still running (after a kill -9 of master) goes too.
        for name in ["smtpd", "cleanup", "qmgr", "local", "master"] {
            for pid in self.pids_of(name) {
                signal(pid, libc::SIGKILL);
            }
        }
    }
}

/// True when the tests run as root (privilege separation is then on).
pub fn is_root() -> bool {
    nix::unistd::geteuid().is_root()
}

/// Sends a signal; ignores errors (the process may be gone).
pub fn signal(pid: i32, sig: i32) {
    // SAFETY: kill(2) has no memory effects.
    unsafe {
        libc::kill(pid, sig);
    }
}

/// One SMTP reply: code and text lines.
#[derive(Debug, Clone)]
pub struct Reply {
    /// The three-digit code.
    pub code: u16,
    /// The text of each line (after "NNN-" / "NNN ").
    pub lines: Vec<String>,
}

impl Reply {
    /// All lines joined with spaces.
    pub fn text(&self) -> String {
        self.lines.join(" ")
    }
}

/// A small blocking SMTP client over a real TCP connection.
pub struct Smtp {
    reader: BufReader<TcpStream>,
    writer: TcpStream,
}

impl Smtp {
    /// Connects and reads the greeting (asserting 220).
    pub fn connect(addr: SocketAddr) -> Smtp {
        let s = TcpStream::connect(addr).expect("connect to smtpd");
        s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
        let mut c = Smtp {
            reader: BufReader::new(s.try_clone().unwrap()),
            writer: s,
        };
        let g = c.read_reply();
        assert_eq!(g.code, 220, "greeting: {g:?}");
        c
    }

    /// Reads one (possibly multi-line) reply.
    pub fn read_reply(&mut self) -> Reply {
        let mut lines = Vec::new();
        loop {
            let mut l = String::new();
            let n = self.reader.read_line(&mut l).expect("read reply");
            assert!(n > 0, "connection closed while waiting for a reply");
            assert!(l.ends_with("\r\n"), "reply line not CRLF-terminated: {l:?}");
            let code: u16 = l[..3].parse().expect("reply code");
            let more = l.as_bytes().get(3) == Some(&b'-');
            lines.push(l[4..].trim_end().to_string());
            if !more {
                return Reply { code, lines };
            }
        }
    }

    /// Tries to read a reply; None on EOF or timeout.
    pub fn try_read_reply(&mut self) -> Option<Reply> {
        let mut l = String::new();
        match self.reader.read_line(&mut l) {
            Ok(0) | Err(_) => None,
            Ok(_) => {
                let code: u16 = l.get(..3)?.parse().ok()?;
                Some(Reply {
                    code,
                    lines: vec![l.get(4..).unwrap_or("").trim_end().to_string()],
                })
            }
        }
    }

    /// Writes raw bytes.
    pub fn raw(&mut self, bytes: &[u8]) {
        self.writer.write_all(bytes).expect("write");
    }

    /// Sends one command line and reads the reply.
    pub fn cmd(&mut self, line: &str) -> Reply {
        self.raw(format!("{line}\r\n").as_bytes());
        self.read_reply()
    }

    /// Sends a message (content with CRLF line endings, not dot-stuffed);
    /// returns the final reply. Panics on an unexpected reply before DATA.
    pub fn send(&mut self, from: &str, to: &[&str], content: &[u8]) -> Reply {
        let r = self.cmd(&format!("MAIL FROM:<{from}>"));
        assert_eq!(r.code, 250, "MAIL: {r:?}");
        for t in to {
            let r = self.cmd(&format!("RCPT TO:<{t}>"));
            assert_eq!(r.code, 250, "RCPT {t}: {r:?}");
        }
        let r = self.cmd("DATA");
        assert_eq!(r.code, 354, "DATA: {r:?}");
        self.raw(&dot_stuff(content));
        self.read_reply()
    }

    /// EHLO, send, QUIT: the whole conversation for one message.
    pub fn send_one(addr: SocketAddr, from: &str, to: &[&str], content: &[u8]) -> Reply {
        let mut c = Smtp::connect(addr);
        let r = c.cmd("EHLO client.example");
        assert_eq!(r.code, 250);
        let r = c.send(from, to, content);
        let _ = c.cmd("QUIT");
        r
    }
}

/// Dot-stuffs CRLF content and appends the end-of-data line.
pub fn dot_stuff(content: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(content.len() + 8);
    let mut at_line_start = true;
    for &b in content {
        if at_line_start && b == b'.' {
            out.push(b'.');
        }
        out.push(b);
        at_line_start = b == b'\n';
    }
    if !out.ends_with(b"\r\n") {
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(b".\r\n");
    out
}

/// The queue ID from "250 2.0.0 Ok: queued as ID".
pub fn queued_id(r: &Reply) -> String {
    assert_eq!(r.code, 250, "not queued: {r:?}");
    r.text().rsplit(' ').next().unwrap_or_default().to_string()
}

/// CRLF → LF, as the message appears in a Maildir.
pub fn to_lf(content: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(content.len());
    let mut i = 0;
    while i < content.len() {
        if content[i] == b'\r' && content.get(i + 1) == Some(&b'\n') {
            i += 1;
            continue;
        }
        out.push(content[i]);
        i += 1;
    }
    out
}

/// The header fields of a delivered message (up to the first empty line).
pub fn header_of(msg: &[u8]) -> String {
    let end = msg
        .windows(2)
        .position(|w| w == b"\n\n")
        .map(|i| i + 1)
        .unwrap_or(msg.len());
    String::from_utf8_lossy(&msg[..end]).into_owned()
}
