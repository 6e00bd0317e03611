//! Logging for every Postern process, in Postfix's log format.
//!
//! Each process installs one tracing subscriber that writes ONE line per
//! event, tagged `{syslog_name}/{program}[pid]`:
//! - `maillog_file` set: lines `Nov 22 03:05:00 HOST TAG[PID]: message` go
//!   to fd 2, which master opened on the log file (O_APPEND) for its
//!   children; each line is one write(2), so lines from many processes
//!   never mix.
//! - `maillog_file` empty: RFC 3164 datagrams `<22>Nov 22 03:05:00 TAG[PID]: message`
//!   to /dev/log (facility mail), falling back to the fd 2 format when
//!   /dev/log is not there. master points every child's fd 2 at a file
//!   then (docs/master.md, "Logging"), so those lines are never lost.
//!
//! Levels: ERROR → "error: ", WARN → "warning: ", INFO → no prefix,
//! DEBUG/TRACE only with `-v`. Fields other than the message are appended
//! as ` key=value`. [`fatal`] writes "fatal: ...", tells master the reason
//! on the status pipe (`status::report_fatal`, so `postern status` can show
//! why a service fails at start-up) and exits 1.
//!
//! The configuration lives in a global that [`init_logging`] may replace
//! (master does so on reload); the subscriber itself is installed once.

use std::fmt::{Display, Write as _};
use std::fs::File;
use std::io::{IsTerminal, Write};
use std::os::unix::net::UnixDatagram;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Mutex, OnceLock, RwLock};
use std::time::SystemTime;

use postern_config::MainCf;
use tracing::field::{Field, Visit};
use tracing::{Event, Level, Metadata, Subscriber};
use tracing_subscriber::layer::{Context, Layer};
use tracing_subscriber::prelude::*;

/// Where log lines go.
#[derive(Debug)]
pub enum LogSink {
    /// The process's fd 2 (the log file master handed over, or a terminal).
    Stderr,
    /// A file this process opened itself (master's maillog_file).
    File(File),
    /// A datagram socket connected to /dev/log.
    Syslog(UnixDatagram),
}

/// Severity of one log line; decides the text prefix and the syslog priority.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Severity {
    /// DEBUG/TRACE events (only with -v).
    Debug,
    /// INFO events: no prefix.
    Info,
    /// WARN events: "warning: ".
    Warning,
    /// ERROR events: "error: ".
    Error,
    /// [`fatal`]: "fatal: ", then exit.
    Fatal,
}

impl Severity {
    /// Text put before the message, as Postfix does.
    pub fn prefix(self) -> &'static str {
        match self {
            Severity::Debug | Severity::Info => "",
            Severity::Warning => "warning: ",
            Severity::Error => "error: ",
            Severity::Fatal => "fatal: ",
        }
    }

    /// RFC 3164 PRI value: facility mail (2) * 8 + severity.
    pub fn syslog_priority(self) -> u8 {
        16 + match self {
            Severity::Debug => 7,
            Severity::Info => 6,
            Severity::Warning => 4,
            Severity::Error => 3,
            Severity::Fatal => 2,
        }
    }
}

struct LogState {
    tag: String,
    host: String,
    sink: LogSink,
}

static STATE: RwLock<Option<LogState>> = RwLock::new(None);
static VERBOSE: AtomicBool = AtomicBool::new(false);
static INSTALLED: OnceLock<bool> = OnceLock::new();
static PREINIT_TAG: Mutex<Option<String>> = Mutex::new(None);

/// Sets the tag used by [`fatal`] and events before [`init_logging`] ran
/// (e.g. when main.cf itself cannot be read): "postern/PROGRAM".
pub fn preinit(program: &str) {
    if let Ok(mut t) = PREINIT_TAG.lock() {
        *t = Some(format!("postern/{program}"));
    }
}

/// Installs (or reconfigures) logging for a service process: fd 2 lines
/// when maillog_file is set, else /dev/log, else fd 2.
pub fn init_logging(program: &str, main: &MainCf, verbose: bool) {
    let sink = if main.str("maillog_file").is_empty() {
        connect_syslog()
            .map(LogSink::Syslog)
            .unwrap_or(LogSink::Stderr)
    } else {
        LogSink::Stderr
    };
    init_logging_with(program, main, verbose, sink);
}

/// Like [`init_logging`] with an explicit sink (master writes to the log
/// file it opened itself).
pub fn init_logging_with(program: &str, main: &MainCf, verbose: bool, sink: LogSink) {
    let tag = format!("{}/{}", main.str("syslog_name"), program);
    let host = short_host(&main.str("myhostname"));
    // Prime the C library's time zone data now, before any chroot.
    let _ = timestamp(SystemTime::now());
    VERBOSE.store(verbose, Ordering::Relaxed);
    if let Ok(mut st) = STATE.write() {
        *st = Some(LogState { tag, host, sink });
    }
    INSTALLED.get_or_init(|| {
        tracing::subscriber::set_global_default(tracing_subscriber::registry().with(LineLayer))
            .is_ok()
    });
}

/// The syslog daemon's socket.
pub const SYSLOG_SOCKET: &str = "/dev/log";

/// Connects a datagram socket to [`SYSLOG_SOCKET`]; None when there is no
/// syslog daemon.
pub fn connect_syslog() -> Option<UnixDatagram> {
    open_syslog(std::path::Path::new(SYSLOG_SOCKET)).ok()
}

/// Connects a datagram socket to the syslog socket at `path`; the error
/// says why not (NotFound: there is no socket; ConnectionRefused: nothing
/// listens on it).
pub fn open_syslog(path: &std::path::Path) -> std::io::Result<UnixDatagram> {
    let sock = UnixDatagram::unbound()?;
    sock.connect(path)?;
    Ok(sock)
}

/// Logs "fatal: MSG" and exits with status 1. Also echoes the line to a
/// terminal on stderr when the log goes elsewhere, so an administrator
/// starting a program by hand sees why it stopped, and, in a process master
/// started, sends MSG to master on the status pipe
/// ([`crate::status::report_fatal`]).
pub fn fatal(msg: impl Display) -> ! {
    let text = msg.to_string();
    let to_stderr = emit(Severity::Fatal, &text);
    if !to_stderr && std::io::stderr().is_terminal() {
        let tag = current_tag();
        let _ = std::io::stderr().write_all(format!("{tag}: fatal: {text}\n").as_bytes());
    }
    crate::status::report_fatal(&text);
    std::process::exit(1)
}

/// Writes one line at the given severity, bypassing tracing (used by
/// [`fatal`] and by code that logs before tracing is set up). Returns true
/// when the line went to fd 2.
pub fn emit(sev: Severity, message: &str) -> bool {
    let now = SystemTime::now();
    let pid = std::process::id();
    let guard = STATE.read().ok();
    let state = guard.as_ref().and_then(|g| g.as_ref());
    match state {
        Some(LogState {
            tag,
            sink: LogSink::Syslog(sock),
            ..
        }) => {
            let mut dgram = format_syslog(sev, &timestamp(now), tag, pid, message).into_bytes();
            dgram.truncate(8192);
            if sock.send(&dgram).is_ok() {
                return false;
            }
            let line = format_line(&timestamp(now), &fallback_host(), tag, pid, sev, message);
            write_stderr(&line);
            true
        }
        Some(LogState {
            tag,
            host,
            sink: LogSink::File(f),
        }) => {
            let line = format_line(&timestamp(now), host, tag, pid, sev, message);
            let _ = (&*f).write_all(line.as_bytes());
            false
        }
        Some(LogState {
            tag,
            host,
            sink: LogSink::Stderr,
        }) => {
            write_stderr(&format_line(&timestamp(now), host, tag, pid, sev, message));
            true
        }
        None => {
            let tag = current_tag();
            write_stderr(&format_line(
                &timestamp(now),
                &fallback_host(),
                &tag,
                pid,
                sev,
                message,
            ));
            true
        }
    }
}

fn current_tag() -> String {
    if let Ok(st) = STATE.read()
        && let Some(s) = st.as_ref()
    {
        return s.tag.clone();
    }
    PREINIT_TAG
        .lock()
        .ok()
        .and_then(|t| t.clone())
        .unwrap_or_else(|| "postern".to_string())
}

fn write_stderr(line: &str) {
    // std's Stderr is unbuffered: write_all is one write(2) for a line.
    let _ = std::io::stderr().lock().write_all(line.as_bytes());
}

fn fallback_host() -> String {
    nix::unistd::gethostname()
        .ok()
        .and_then(|h| h.into_string().ok())
        .map(|h| short_host(&h))
        .unwrap_or_else(|| "localhost".to_string())
}

/// The first label of a host name ("mail.example.com" → "mail").
pub fn short_host(name: &str) -> String {
    let first = name.split('.').next().unwrap_or("");
    if first.is_empty() {
        "localhost".to_string()
    } else {
        first.to_string()
    }
}

/// A file/stderr log line: `Nov 22 03:05:00 HOST TAG[PID]: PREFIXmessage\n`.
/// Newlines inside the message are replaced so one event stays one line.
pub fn format_line(
    ts: &str,
    host: &str,
    tag: &str,
    pid: u32,
    sev: Severity,
    message: &str,
) -> String {
    format!(
        "{ts} {host} {tag}[{pid}]: {}{}\n",
        sev.prefix(),
        one_line(message)
    )
}

/// An RFC 3164 datagram: `<PRI>Nov 22 03:05:00 TAG[PID]: PREFIXmessage`.
pub fn format_syslog(sev: Severity, ts: &str, tag: &str, pid: u32, message: &str) -> String {
    format!(
        "<{}>{ts} {tag}[{pid}]: {}{}",
        sev.syslog_priority(),
        sev.prefix(),
        one_line(message)
    )
}

fn one_line(message: &str) -> std::borrow::Cow<'_, str> {
    if message.contains(['\n', '\r']) {
        std::borrow::Cow::Owned(message.replace(['\n', '\r'], " "))
    } else {
        std::borrow::Cow::Borrowed(message)
    }
}

/// Syslog time stamp in local time: "Nov 22 03:05:00" (day padded with a space).
pub fn timestamp(t: SystemTime) -> String {
    postern_mailtime::syslog(t)
}

/// The tracing layer: turns each event into one line through [`emit`].
struct LineLayer;

impl<S: Subscriber> Layer<S> for LineLayer {
    fn register_callsite(&self, _: &'static Metadata<'static>) -> tracing::subscriber::Interest {
        // Verbosity can change at run time (reload): ask every time.
        tracing::subscriber::Interest::sometimes()
    }

    fn enabled(&self, metadata: &Metadata<'_>, _ctx: Context<'_, S>) -> bool {
        *metadata.level() <= Level::INFO || VERBOSE.load(Ordering::Relaxed)
    }

    fn on_event(&self, event: &Event<'_>, _ctx: Context<'_, S>) {
        let sev = match *event.metadata().level() {
            Level::ERROR => Severity::Error,
            Level::WARN => Severity::Warning,
            Level::INFO => Severity::Info,
            _ => Severity::Debug,
        };
        let mut v = LineVisitor::default();
        event.record(&mut v);
        emit(sev, &(v.message + &v.fields));
    }
}

#[derive(Default)]
struct LineVisitor {
    message: String,
    fields: String,
}

impl Visit for LineVisitor {
    fn record_str(&mut self, field: &Field, value: &str) {
        if field.name() == "message" {
            self.message.push_str(value);
        } else {
            let _ = write!(self.fields, " {}={}", field.name(), value);
        }
    }

    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        if field.name() == "message" {
            let _ = write!(self.message, "{value:?}");
        } else {
            let _ = write!(self.fields, " {}={:?}", field.name(), value);
        }
    }
}

/// An I/O error's reason as mail logs word it ("Connection refused", "No
/// such file or directory"), without Rust's " (os error N)".
pub fn io_reason(e: &std::io::Error) -> String {
    match e.raw_os_error() {
        Some(n) => nix::errno::Errno::from_raw(n).desc().to_string(),
        None => e.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn line_format() {
        assert_eq!(
            format_line(
                "Nov 22 03:05:00",
                "mail",
                "postern/smtpd",
                1234,
                Severity::Warning,
                "hello"
            ),
            "Nov 22 03:05:00 mail postern/smtpd[1234]: warning: hello\n"
        );
        assert_eq!(
            format_line(
                "Nov  2 03:05:00",
                "mail",
                "postern/master",
                1,
                Severity::Info,
                "a\nb"
            ),
            "Nov  2 03:05:00 mail postern/master[1]: a b\n"
        );
    }

    #[test]
    fn syslog_format() {
        assert_eq!(
            format_syslog(Severity::Info, "Nov 22 03:05:00", "postern/smtpd", 7, "x"),
            "<22>Nov 22 03:05:00 postern/smtpd[7]: x"
        );
        assert_eq!(
            format_syslog(Severity::Warning, "T", "t", 7, "x"),
            "<20>T t[7]: warning: x"
        );
        assert_eq!(
            format_syslog(Severity::Error, "T", "t", 7, "x"),
            "<19>T t[7]: error: x"
        );
    }

    #[test]
    fn timestamp_shape() {
        let ts = timestamp(SystemTime::now());
        assert_eq!(ts.len(), 15, "{ts}");
        assert!(ts[..3].chars().all(|c| c.is_ascii_alphabetic()), "{ts}");
        assert_eq!(&ts[9..10], ":");
        assert_eq!(&ts[12..13], ":");
    }

    #[test]
    fn short_host_names() {
        assert_eq!(short_host("mail.example.com"), "mail");
        assert_eq!(short_host("mail"), "mail");
        assert_eq!(short_host(""), "localhost");
    }

    #[test]
    fn events_become_lines_in_a_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("maillog");
        let f = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)
            .unwrap();
        let mut main = MainCf::defaults();
        main.set("syslog_name", "postern/test");
        main.set("myhostname", "box.example.org");
        init_logging_with("prog", &main, false, LogSink::File(f));
        tracing::info!("plain message");
        tracing::warn!(queue_id = "ABC", "with field");
        tracing::error!("bad");
        tracing::debug!("not shown");
        let text = std::fs::read_to_string(&path).unwrap();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 3, "{text}");
        let pid = std::process::id();
        assert!(
            lines[0].ends_with(&format!(" box postern/test/prog[{pid}]: plain message")),
            "{}",
            lines[0]
        );
        assert!(
            lines[1].ends_with(": warning: with field queue_id=ABC"),
            "{}",
            lines[1]
        );
        assert!(lines[2].ends_with(": error: bad"), "{}", lines[2]);
        // Verbose: debug events appear.
        let f = std::fs::OpenOptions::new()
            .append(true)
            .open(&path)
            .unwrap();
        init_logging_with("prog", &main, true, LogSink::File(f));
        tracing::debug!("now shown");
        let text = std::fs::read_to_string(&path).unwrap();
        assert!(text.lines().last().unwrap().ends_with(": now shown"));
    }
}
