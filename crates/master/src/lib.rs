//! The master process: reads master.cf, owns listening sockets, spawns and
//! supervises services.
//!
//! Postfix's process model (see docs/master.md): master binds every
//! listener itself, watches them without accepting, and starts a service
//! process (`DAEMON_DIR/COMMAND -n NAME -t TYPE ARGS...`, socket on fd 3,
//! status pipe on fd 4) when a client is waiting and no idle process of
//! that service exists, within the service's maxproc. Services report
//! idle/busy on the status pipe. Crashing services are throttled; SIGHUP
//! reloads main.cf/master.cf without dropping connections; SIGTERM stops
//! everything.
//!
//! SECURITY: master is the one long-lived root process. It reads only the
//! configuration directory and never reads client data: it does not accept
//! connections. `unsafe` is confined to the `spawn` module's pre_exec hook.
//!
//! PARAMETERS: queue_directory, daemon_directory, data_directory,
//! maillog_file, syslog_name, myhostname, default_process_limit,
//! service_throttle_time, privilege_separation, mail_owner.
//!
//! What the `postern` command learns from a running master: its pid (the
//! pid file) and its services' state (the status file, `health`), e.g. a
//! service that fails at start-up with its last `fatal:` line.

#![deny(unsafe_code)]

mod health;
mod listen;
mod master;
mod notify;
mod pidfile;
mod spawn;

use std::fs::{File, OpenOptions};
use std::io::{BufRead, BufReader, Write};
use std::net::SocketAddr;
use std::os::fd::AsFd;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use nix::fcntl::{FcntlArg, FdFlag, fcntl};
use nix::sys::signal::{SigSet, SigmaskHow, Signal, kill};
use nix::sys::signalfd::{SfdFlags, SignalFd};
use nix::unistd::Pid;
use postern_config::{MainCf, MasterCf};
use postern_service::log::{LogSink, init_logging_with, open_syslog, preinit};
use tracing::{info, warn};

pub use health::{MasterStatus, ServiceHealth, StartupFailure, status_file_path};
pub use listen::Endpoint;
pub use pidfile::{ALREADY_RUNNING, pid_file_path};
pub use postern_service::log::SYSLOG_SOCKET;
pub use spawn::ChildLog;

/// The version master logs at start and reload.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");

/// How long start() waits for the background master to report ready.
const START_TIMEOUT: Duration = Duration::from_secs(30);
/// How long stop() waits for master to go away.
const STOP_TIMEOUT: Duration = Duration::from_secs(30);
/// Hidden flag: run as start()'s background child (ready report on stdout).
const DETACHED_FLAG: &str = "--detached-child";

/// Where master's log lines go and what its children get as fd 2.
#[derive(Debug)]
pub struct LogChoice {
    /// master's own sink.
    pub sink: LogSink,
    /// The children's fd 2.
    pub child: ChildLog,
    /// Set when master did not log where main.cf asked (no syslog): says
    /// where the lines go instead, e.g. `no syslog socket at /dev/log:
    /// logging to /var/log/postern.log`. master logs it, and a background
    /// master also reports it to `postern start`.
    pub notice: Option<String>,
}

/// Whether master separates privileges: it runs as root and main.cf does
/// not say `privilege_separation = no` (docs/security.md).
pub fn privilege_separation(main: &MainCf) -> bool {
    nix::unistd::geteuid().is_root() && main.bool("privilege_separation").unwrap_or(true)
}

/// The file master logs to when maillog_file is empty and there is no
/// syslog daemon: /var/log/postern.log for a system installation
/// (privilege separation on), else `$data_directory/postern.log` (a private
/// instance: not root, or `privilege_separation = no` as in the demo).
pub fn fallback_log_file(main: &MainCf) -> PathBuf {
    if privilege_separation(main) {
        PathBuf::from("/var/log/postern.log")
    } else {
        main.path("data_directory").join("postern.log")
    }
}

/// Why syslog cannot be used, or None when its socket takes datagrams.
pub fn syslog_unavailable(socket: &Path) -> Option<String> {
    match open_syslog(socket) {
        Ok(_) => None,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            Some(format!("no syslog socket at {}", socket.display()))
        }
        Err(e) => Some(format!(
            "cannot connect to the syslog socket {}: {}",
            socket.display(),
            reason(&e)
        )),
    }
}

/// An I/O error's reason without Rust's " (os error N)".
fn reason(e: &std::io::Error) -> String {
    postern_service::log::io_reason(e)
}

/// True when this process's stderr goes somewhere (a terminal, a pipe, the
/// journal, a file): not closed, not /dev/null.
fn stderr_is_read() -> bool {
    let Ok(st) = nix::sys::stat::fstat(std::io::stderr()) else {
        return false;
    };
    match nix::sys::stat::stat("/dev/null") {
        Ok(null) => !(st.st_dev == null.st_dev && st.st_ino == null.st_ino),
        Err(_) => true,
    }
}

fn open_append(path: &Path) -> std::io::Result<File> {
    OpenOptions::new()
        .append(true)
        .create(true)
        .mode(0o640)
        .open(path)
}

/// Opens maillog_file for master and its children: master's own sink and
/// what becomes each child's fd 2. "/dev/stdout" and "/dev/stderr" mean
/// master's own stdout/stderr.
///
/// Empty maillog_file: syslog at /dev/log for master, and its children send
/// there themselves. Without a syslog daemon the lines must not be lost: a
/// foreground master whose stderr goes somewhere (a terminal, the journal,
/// a container's log) logs there and so do its children; otherwise (a
/// background master: its stderr is /dev/null) master and its children log
/// to [`fallback_log_file`], and if that cannot be opened start-up fails.
pub fn open_log(main: &MainCf, foreground: bool) -> Result<LogChoice, String> {
    open_log_with(main, foreground, Path::new(SYSLOG_SOCKET))
}

/// [`open_log`] with the syslog socket at `socket`.
fn open_log_with(main: &MainCf, foreground: bool, socket: &Path) -> Result<LogChoice, String> {
    let file = main.str("maillog_file");
    let choice = |sink, child| LogChoice {
        sink,
        child,
        notice: None,
    };
    match file.as_str() {
        "" => {
            let Some(why) = syslog_unavailable(socket) else {
                let sink = open_syslog(socket)
                    .map(LogSink::Syslog)
                    .unwrap_or(LogSink::Stderr);
                return Ok(choice(sink, ChildLog::Inherit));
            };
            if foreground && stderr_is_read() {
                return Ok(LogChoice {
                    sink: LogSink::Stderr,
                    child: ChildLog::Inherit,
                    notice: Some(format!("{why}: logging to standard error")),
                });
            }
            let path = fallback_log_file(main);
            let f = open_append(&path).map_err(|e| {
                format!(
                    "{why}, and cannot open {}: {}: set maillog_file in main.cf",
                    path.display(),
                    reason(&e)
                )
            })?;
            let child = f
                .try_clone()
                .map_err(|e| format!("dup {}: {e}", path.display()))?;
            Ok(LogChoice {
                sink: LogSink::File(f),
                child: ChildLog::Fd(child.into()),
                notice: Some(format!("{why}: logging to {}", path.display())),
            })
        }
        "/dev/stderr" => Ok(choice(LogSink::Stderr, ChildLog::Inherit)),
        "/dev/stdout" => {
            let fd = std::io::stdout()
                .as_fd()
                .try_clone_to_owned()
                .map_err(|e| format!("dup stdout: {e}"))?;
            let child = fd.try_clone().map_err(|e| format!("dup stdout: {e}"))?;
            Ok(choice(LogSink::File(File::from(fd)), ChildLog::Fd(child)))
        }
        path => {
            let f = open_append(Path::new(path))
                .map_err(|e| format!("open maillog_file {path}: {e}"))?;
            let child = f.try_clone().map_err(|e| format!("dup {path}: {e}"))?;
            Ok(choice(LogSink::File(f), ChildLog::Fd(child.into())))
        }
    }
}

/// Binds (and at once closes) a TCP listener on `addr` exactly as master
/// would: `postern check` uses it to find a port another program holds.
pub fn try_bind_inet(addr: SocketAddr) -> Result<(), nix::errno::Errno> {
    listen::bind_inet(addr).map(drop)
}

/// The running master's view of its services (the status file), or None
/// when master is not running or has not written it yet.
pub fn read_status(config_dir: &Path) -> Result<Option<MasterStatus>, String> {
    let main = MainCf::load(config_dir).map_err(|e| e.to_string())?;
    let queue_dir = main.path("queue_directory");
    let Some(pid) = pidfile::read_running(&pid_file_path(&queue_dir))? else {
        return Ok(None);
    };
    let Ok(pid) = u32::try_from(pid) else {
        return Ok(None);
    };
    health::read_status_file(&queue_dir, pid)
}

/// Restores the signal mask on every exit path of [`run`].
struct MaskGuard(Option<SigSet>);

impl Drop for MaskGuard {
    fn drop(&mut self) {
        if let Some(old) = self.0.take() {
            let _ = old.thread_set_mask();
        }
    }
}

/// Master's whole life: start-up, loop, shutdown. `ready` receives "ready\n"
/// once every listener is bound.
fn run(config_dir: &Path, verbose: bool, mut ready: Option<File>) -> Result<(), String> {
    preinit("master");
    let config_dir =
        std::fs::canonicalize(config_dir).map_err(|e| format!("{}: {e}", config_dir.display()))?;
    let main = MainCf::load(&config_dir).map_err(|e| e.to_string())?;
    let foreground = ready.is_none();
    let log = open_log(&main, foreground)?;
    init_logging_with("master", &main, verbose, log.sink);
    if let Some(notice) = &log.notice {
        warn!("{notice}");
        // `postern start` prints it: the one place an administrator looks.
        if let Some(r) = ready.as_mut() {
            let _ = writeln!(r, "warning: {notice}");
        }
    }
    let child_log = log.child;
    for w in main.warnings() {
        warn!("{w}");
    }
    let mcf = MasterCf::load(&config_dir).map_err(|e| e.to_string())?;
    let queue_dir = main.path("queue_directory");
    // Every queue directory with its mode (postern-queue's QUEUE_DIRS).
    postern_queue::QueueDirs::new(&queue_dir)
        .create_all()
        .map_err(|e| format!("create queue directories in {}: {e}", queue_dir.display()))?;
    let pid_file = pidfile::PidFile::acquire(&pid_file_path(&queue_dir))?;

    let mut sigs = SigSet::empty();
    for s in [
        Signal::SIGHUP,
        Signal::SIGTERM,
        Signal::SIGINT,
        Signal::SIGCHLD,
    ] {
        sigs.add(s);
    }
    let old_mask = sigs
        .thread_swap_mask(SigmaskHow::SIG_BLOCK)
        .map_err(|e| format!("sigprocmask: {}", e.desc()))?;
    let _mask = MaskGuard(Some(old_mask));
    let signals = SignalFd::with_flags(&sigs, SfdFlags::SFD_NONBLOCK | SfdFlags::SFD_CLOEXEC)
        .map_err(|e| format!("signalfd: {}", e.desc()))?;

    let mut m = master::Master::new(
        config_dir.clone(),
        main,
        child_log,
        signals,
        verbose,
        foreground,
    );
    if let Err(e) = m.start_services(&mcf) {
        pid_file.remove();
        return Err(e);
    }
    info!(
        "daemon started -- version {VERSION}, configuration {}",
        config_dir.display()
    );
    if let Some(mut r) = ready {
        let _ = r.write_all(b"ready\n");
    } else {
        // Foreground (master -f under a Type=notify unit): READY=1 to systemd.
        notify::ready(m.normal_status());
    }
    let result = m.run();
    drop(m);
    health::remove_status(&queue_dir);
    pid_file.remove();
    result
}

/// Runs master in the foreground until SIGTERM (postern demo; master -f). Returns Err
/// with a clear message on a start-up failure (bad config, bind failure, already running).
///
/// Signals are received through a signalfd, so call this from the main
/// thread before other threads exist (other threads would otherwise take
/// SIGTERM/SIGHUP with their default action).
pub fn run_foreground(config_dir: &Path) -> Result<(), String> {
    run(config_dir, false, None)
}

/// Like [`run_foreground`] with debug logging (`master -f -v`).
pub fn run_foreground_verbose(config_dir: &Path, verbose: bool) -> Result<(), String> {
    run(config_dir, verbose, None)
}

/// What a background master said while starting.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Started {
    /// Warnings for whoever started it, without "warning: " (e.g. `no
    /// syslog socket at /dev/log: logging to /var/log/postern.log`).
    pub warnings: Vec<String>,
}

/// Starts master in the background (fork/setsid or spawn DAEMON_DIR/master -c DIR with
/// stdio detached) and returns once it is listening (wait on a pipe for "ready" or an
/// error message, max 30 s), with the warnings it reported on the way; Err if it failed,
/// with master's reason.
pub fn start(config_dir: &Path) -> Result<Started, String> {
    let main = MainCf::load(config_dir).map_err(|e| e.to_string())?;
    start_with(config_dir, &main.path("daemon_directory").join("master"))
}

/// [`start`] with an explicit master binary (the `master` command uses its
/// own executable; tests use the freshly built one).
pub fn start_with(config_dir: &Path, master_bin: &Path) -> Result<Started, String> {
    if let Some(pid) = running_pid(config_dir)? {
        return Err(format!("{ALREADY_RUNNING} (pid {pid})"));
    }
    let (reader, writer) = std::io::pipe().map_err(|e| format!("pipe: {e}"))?;
    let mut cmd = Command::new(master_bin);
    cmd.arg("-c").arg(config_dir).arg(DETACHED_FLAG);
    cmd.stdin(Stdio::null())
        .stdout(Stdio::from(writer))
        .stderr(Stdio::null());
    let mut child = cmd
        .spawn()
        .map_err(|e| format!("cannot run {}: {e}", master_bin.display()))?;
    drop(cmd); // closes our copy of the pipe's write end
    // The background master writes "warning: ..." lines, then "ready" or
    // "error: ..."; end of file means it died without a word.
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(reader).lines() {
            let Ok(line) = line else { break };
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let deadline = Instant::now() + START_TIMEOUT;
    let mut started = Started::default();
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match rx.recv_timeout(left) {
            Ok(line) if line == "ready" => return Ok(started),
            Ok(line) => match line.strip_prefix("warning: ") {
                Some(w) => started.warnings.push(w.to_string()),
                None if line.is_empty() => {}
                None => return Err(line.trim_start_matches("error: ").to_string()),
            },
            Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => {
                let status = child
                    .wait()
                    .map(|s| s.to_string())
                    .unwrap_or_else(|e| e.to_string());
                return Err(format!("master exited without starting ({status})"));
            }
            Err(std::sync::mpsc::RecvTimeoutError::Timeout) => {
                return Err(format!(
                    "master did not report ready within {} s",
                    START_TIMEOUT.as_secs()
                ));
            }
        }
    }
}

/// Sends SIGTERM to the running master (from the pid file) and waits until it is gone (≤ 30 s).
pub fn stop(config_dir: &Path) -> Result<(), String> {
    let pid = running_pid(config_dir)?
        .ok_or_else(|| "the Postern mail system is not running".to_string())?;
    kill(Pid::from_raw(pid), Signal::SIGTERM).map_err(|e| format!("kill {pid}: {}", e.desc()))?;
    let deadline = Instant::now() + STOP_TIMEOUT;
    while Instant::now() < deadline {
        if running_pid(config_dir)?.is_none() {
            return Ok(());
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    Err(format!(
        "master pid {pid} did not stop within {} s",
        STOP_TIMEOUT.as_secs()
    ))
}

/// Sends SIGHUP to the running master.
pub fn reload(config_dir: &Path) -> Result<(), String> {
    let pid = running_pid(config_dir)?
        .ok_or_else(|| "the Postern mail system is not running".to_string())?;
    kill(Pid::from_raw(pid), Signal::SIGHUP).map_err(|e| format!("kill {pid}: {}", e.desc()))
}

/// Pid of the running master, if any (pid file present and locked).
pub fn running_pid(config_dir: &Path) -> Result<Option<i32>, String> {
    let main = MainCf::load(config_dir).map_err(|e| e.to_string())?;
    pidfile::read_running(&pid_file_path(&main.path("queue_directory")))
}

/// The `master` command: `master [-c CONFIG_DIR] [-f] [-v]`. Without -f it
/// starts a background master and exits once that one is listening.
pub fn master_main(args: Vec<String>) -> ! {
    preinit("master");
    let usage = "usage: master [-c config_dir] [-f] [-v]";
    let mut config_dir: PathBuf = std::env::var_os("MAIL_CONFIG")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(postern_service::DEFAULT_CONFIG_DIR));
    let (mut foreground, mut verbose, mut detached) = (false, false, false);
    let mut it = args.into_iter();
    while let Some(a) = it.next() {
        match a.as_str() {
            "-c" => match it.next() {
                Some(d) => config_dir = PathBuf::from(d),
                None => postern_service::fatal(usage),
            },
            "-f" => foreground = true,
            "-v" => verbose = true,
            DETACHED_FLAG => detached = true,
            _ => postern_service::fatal(usage),
        }
    }
    if detached {
        let ready = match detach() {
            Ok(r) => r,
            Err(e) => postern_service::fatal(e),
        };
        let report = ready.try_clone().ok();
        match run(&config_dir, verbose, Some(ready)) {
            Ok(()) => std::process::exit(0),
            Err(e) => {
                if let Some(mut r) = report {
                    let _ = writeln!(r, "error: {e}");
                }
                postern_service::fatal(e)
            }
        }
    }
    let result = if foreground {
        run(&config_dir, verbose, None)
    } else {
        let me = std::env::current_exe().map_err(|e| format!("cannot find my own executable: {e}"));
        me.and_then(|me| start_with(&config_dir, &me))
            .map(|started| {
                for w in started.warnings {
                    eprintln!("master: warning: {w}");
                }
            })
    };
    match result {
        Ok(()) => std::process::exit(0),
        Err(e) => postern_service::fatal(e),
    }
}

/// Background child set-up: new session, stdout (start()'s pipe) kept as a
/// close-on-exec ready channel, fd 1 → /dev/null.
fn detach() -> Result<File, String> {
    let _ = nix::unistd::setsid();
    let ready =
        nix::unistd::dup(std::io::stdout().as_fd()).map_err(|e| format!("dup: {}", e.desc()))?;
    fcntl(&ready, FcntlArg::F_SETFD(FdFlag::FD_CLOEXEC))
        .map_err(|e| format!("fcntl: {}", e.desc()))?;
    let null = File::options()
        .write(true)
        .open("/dev/null")
        .map_err(|e| format!("/dev/null: {e}"))?;
    nix::unistd::dup2_stdout(&null).map_err(|e| format!("dup2: {}", e.desc()))?;
    Ok(File::from(ready))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn instance(dir: &Path, privsep: &str) -> MainCf {
        let mut main = MainCf::defaults();
        main.set("data_directory", &dir.display().to_string());
        main.set("privilege_separation", privsep);
        main.set("myhostname", "mail.example.test");
        main
    }

    #[test]
    fn fallback_file_is_the_system_log_only_for_a_separated_root_master() {
        let d = tempfile::tempdir().unwrap();
        let own = d.path().join("postern.log");
        assert_eq!(fallback_log_file(&instance(d.path(), "no")), own);
        let want = if nix::unistd::geteuid().is_root() {
            PathBuf::from("/var/log/postern.log")
        } else {
            own
        };
        assert_eq!(fallback_log_file(&instance(d.path(), "yes")), want);
    }

    #[test]
    fn without_syslog_a_background_master_logs_to_the_fallback_file() {
        let d = tempfile::tempdir().unwrap();
        let main = instance(d.path(), "no");
        let socket = d.path().join("no-such-log-socket");
        let log = open_log_with(&main, false, &socket).unwrap();
        let file = d.path().join("postern.log");
        assert_eq!(
            log.notice.as_deref(),
            Some(
                format!(
                    "no syslog socket at {}: logging to {}",
                    socket.display(),
                    file.display()
                )
                .as_str()
            )
        );
        assert!(matches!(log.sink, LogSink::File(_)));
        // The children's fd 2 is the same file.
        let ChildLog::Fd(fd) = log.child else {
            panic!("children inherit master's stderr");
        };
        let mut f = File::from(fd);
        f.write_all(b"from a child\n").unwrap();
        assert_eq!(std::fs::read_to_string(&file).unwrap(), "from a child\n");
        // A socket nobody listens on is no better.
        let dead = d.path().join("dead-socket");
        drop(std::os::unix::net::UnixDatagram::bind(&dead).unwrap());
        let log = open_log_with(&main, false, &dead).unwrap();
        let notice = log.notice.unwrap();
        assert!(
            notice.starts_with(&format!(
                "cannot connect to the syslog socket {}: ",
                dead.display()
            )),
            "{notice}"
        );
        // A foreground master whose stderr is read (a test's is) logs there.
        let log = open_log_with(&main, true, &socket).unwrap();
        assert!(matches!(log.sink, LogSink::Stderr));
        assert!(matches!(log.child, ChildLog::Inherit));
        assert!(log.notice.unwrap().ends_with(": logging to standard error"));
    }

    #[test]
    fn without_syslog_and_fallback_file_start_up_fails_clearly() {
        let d = tempfile::tempdir().unwrap();
        let main = instance(&d.path().join("missing-dir"), "no");
        let socket = d.path().join("no-such-log-socket");
        let err = open_log_with(&main, false, &socket).unwrap_err();
        assert_eq!(
            err,
            format!(
                "no syslog socket at {}, and cannot open {}: No such file or directory: \
                 set maillog_file in main.cf",
                socket.display(),
                d.path().join("missing-dir/postern.log").display()
            )
        );
    }

    #[test]
    fn a_listening_syslog_socket_is_used() {
        let d = tempfile::tempdir().unwrap();
        let socket = d.path().join("log");
        let syslogd = std::os::unix::net::UnixDatagram::bind(&socket).unwrap();
        let log = open_log_with(&instance(d.path(), "no"), false, &socket).unwrap();
        assert!(matches!(log.sink, LogSink::Syslog(_)));
        assert!(log.notice.is_none());
        assert_eq!(syslog_unavailable(&socket), None);
        drop(syslogd);
    }

    #[test]
    fn try_bind_inet_reports_a_port_in_use() {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = l.local_addr().unwrap();
        assert_eq!(try_bind_inet(addr), Err(nix::errno::Errno::EADDRINUSE));
        drop(l);
        assert_eq!(try_bind_inet(addr), Ok(()));
    }
}
