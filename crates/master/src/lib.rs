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
//! Parameters: queue_directory, daemon_directory, maillog_file,
//! syslog_name, myhostname, default_process_limit, service_throttle_time.

#![deny(unsafe_code)]

mod listen;
mod master;
mod notify;
mod pidfile;
mod spawn;

use std::fs::{File, OpenOptions};
use std::io::{BufRead, BufReader, Write};
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
use postern_service::log::{LogSink, connect_syslog, init_logging_with, preinit};
use tracing::{info, warn};

pub use listen::Endpoint;
pub use pidfile::{ALREADY_RUNNING, pid_file_path};
pub use spawn::ChildLog;

/// The version master logs at start and reload.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");

/// How long start() waits for the background master to report ready.
const START_TIMEOUT: Duration = Duration::from_secs(30);
/// How long stop() waits for master to go away.
const STOP_TIMEOUT: Duration = Duration::from_secs(30);
/// Hidden flag: run as start()'s background child (ready report on stdout).
const DETACHED_FLAG: &str = "--detached-child";

/// Opens maillog_file for master and its children: master's own sink and
/// what becomes each child's fd 2. Empty maillog_file → syslog (or stderr)
/// for master, master's stderr for children. "/dev/stdout" and
/// "/dev/stderr" mean master's own stdout/stderr.
pub fn open_log(main: &MainCf) -> Result<(LogSink, ChildLog), String> {
    let file = main.str("maillog_file");
    match file.as_str() {
        "" => Ok((
            connect_syslog()
                .map(LogSink::Syslog)
                .unwrap_or(LogSink::Stderr),
            ChildLog::Inherit,
        )),
        "/dev/stderr" => Ok((LogSink::Stderr, ChildLog::Inherit)),
        "/dev/stdout" => {
            let fd = std::io::stdout()
                .as_fd()
                .try_clone_to_owned()
                .map_err(|e| format!("dup stdout: {e}"))?;
            let child = fd.try_clone().map_err(|e| format!("dup stdout: {e}"))?;
            Ok((LogSink::File(File::from(fd)), ChildLog::Fd(child)))
        }
        path => {
            let f = OpenOptions::new()
                .append(true)
                .create(true)
                .mode(0o640)
                .open(path)
                .map_err(|e| format!("open maillog_file {path}: {e}"))?;
            let child = f.try_clone().map_err(|e| format!("dup {path}: {e}"))?;
            Ok((LogSink::File(f), ChildLog::Fd(child.into())))
        }
    }
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
fn run(config_dir: &Path, verbose: bool, ready: Option<File>) -> Result<(), String> {
    preinit("master");
    let config_dir =
        std::fs::canonicalize(config_dir).map_err(|e| format!("{}: {e}", config_dir.display()))?;
    let main = MainCf::load(&config_dir).map_err(|e| e.to_string())?;
    let (sink, child_log) = open_log(&main)?;
    init_logging_with("master", &main, verbose, sink);
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

    let mut m = master::Master::new(config_dir.clone(), main, child_log, signals, verbose);
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
        notify::ready(&format!(
            "serving: version {VERSION}, configuration {}",
            config_dir.display()
        ));
    }
    let result = m.run();
    drop(m);
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

/// Starts master in the background (fork/setsid or spawn DAEMON_DIR/master -c DIR with
/// stdio detached) and returns once it is listening (wait on a pipe for "ready" or an
/// error message, max 30 s); Err if it failed, with master's reason.
pub fn start(config_dir: &Path) -> Result<(), String> {
    let main = MainCf::load(config_dir).map_err(|e| e.to_string())?;
    start_with(config_dir, &main.path("daemon_directory").join("master"))
}

/// [`start`] with an explicit master binary (the `master` command uses its
/// own executable; tests use the freshly built one).
pub fn start_with(config_dir: &Path, master_bin: &Path) -> Result<(), String> {
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
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut line = String::new();
        let _ = BufReader::new(reader).read_line(&mut line);
        let _ = tx.send(line);
    });
    match rx.recv_timeout(START_TIMEOUT) {
        Ok(line) if line.trim_end() == "ready" => Ok(()),
        Ok(line) if !line.is_empty() => {
            Err(line.trim_end().trim_start_matches("error: ").to_string())
        }
        Ok(_) => {
            let status = child
                .wait()
                .map(|s| s.to_string())
                .unwrap_or_else(|e| e.to_string());
            Err(format!("master exited without starting ({status})"))
        }
        Err(_) => Err(format!(
            "master did not report ready within {} s",
            START_TIMEOUT.as_secs()
        )),
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
