//! The master event loop: listeners, children, status pipes, signals, timers.
//!
//! One thread, one poll(2) loop (level-triggered, as Postfix's events.c):
//! - a listener is polled only while its service may start another child
//!   (not throttled, below maxproc, no idle child of the current generation
//!   on that listener); readable → spawn a child, which accepts;
//! - each service's status pipe carries 9-byte idle/busy records;
//! - signals arrive through a signalfd: SIGCHLD → reap, SIGHUP → reload,
//!   SIGTERM/SIGINT → stop;
//! - the poll timeout is the next wakeup trigger or throttle expiry.
//!
//! Start-up failures: a service whose processes exit within 1 s of their
//! start is throttled and marked failing, with the reason the process sent
//! on the status pipe before it exited (its `fatal:` text) or how it ended.
//! It counts as healthy again once one of its processes reports idle/busy,
//! exits 0, or lives past that first second. Every change is published in
//! the status file (`health`) and, under systemd, as the unit's STATUS=.
//!
//! Privilege separation (docs/security.md): when master runs as root, each
//! service carries the user and chroot its children must take (resolved
//! from the master.cf unpriv and chroot columns when the service is
//! prepared, so a reload that changes them starts the new children with the
//! new values), and its Unix socket is root:postern-ipc (private/) or
//! root:postdrop (public/) mode 0660. When master is not root it passes
//! nothing and says so once at start.

use std::cell::Cell;
use std::collections::HashMap;
use std::os::fd::{AsFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, SystemTime};

use nix::errno::Errno;
use nix::fcntl::{FcntlArg, OFlag, fcntl};
use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
use nix::sys::signal::{Signal, kill};
use nix::sys::signalfd::SignalFd;
use nix::sys::wait::{WaitPidFlag, WaitStatus, waitpid};
use nix::unistd::Pid;
use nix::unistd::{Gid, Group, User};
use postern_config::{MainCf, MasterCf, ServiceEntry, ServiceType, Unpriv};
use postern_service::privileges::{IPC_GROUP, POSTDROP_GROUP, program_privileges};
use postern_service::service_type_name;
use postern_service::status::{StatusMessage, drain_messages};
use tracing::{debug, error, info, warn};

use crate::VERSION;
use crate::health::{
    MasterStatus, ServiceHealth, StartupFailure, epoch_secs, wall_clock, write_status,
};
use crate::listen::{Endpoint, bind_endpoint, trigger};
use crate::spawn::{ChildLog, RunAs, SpawnSpec, spawn};

/// How long children get to exit after SIGTERM before SIGKILL.
const STOP_GRACE: Duration = Duration::from_secs(5);
/// A child that dies sooner than this after start is a bad start-up.
const STARTUP_FAILURE_WINDOW: Duration = Duration::from_secs(1);
/// Failure count resets after this long without failures.
const FAILURE_RESET: Duration = Duration::from_secs(60);

/// One master.cf service master runs.
#[derive(Debug)]
struct Service {
    entry: ServiceEntry,
    key: String,
    endpoint: Endpoint,
    listeners: Vec<OwnedFd>,
    status_r: OwnedFd,
    status_w: OwnedFd,
    status_buf: Vec<u8>,
    generation: u32,
    /// 0 = unlimited.
    maxproc: u32,
    program: PathBuf,
    argv: Vec<String>,
    /// What its children become; None when privilege separation is off.
    run_as: Option<RunAs>,
    throttled_until: Option<Instant>,
    failures: u32,
    last_failure: Option<Instant>,
    /// Set while its processes fail at start-up.
    failing: Option<Failing>,
    next_wakeup: Option<Instant>,
}

/// A service whose processes keep failing at start-up.
#[derive(Debug)]
struct Failing {
    /// The last reason (`fatal: ...`, or how the process ended).
    reason: String,
    /// Failed start-ups in a row.
    failures: u32,
    since: SystemTime,
}

/// One running child.
#[derive(Debug)]
struct Child {
    key: String,
    listener: usize,
    generation: u32,
    started: Instant,
    available: bool,
    /// master sent it SIGHUP/SIGTERM/SIGKILL: dying of that is normal.
    signalled: bool,
    program: PathBuf,
    /// What it sent on the status pipe before exiting (its fatal error).
    fatal: Option<String>,
}

/// What a poll slot refers to.
#[derive(Clone, Copy, Debug)]
enum Slot {
    Signals,
    Status(usize),
    Listen(usize, usize),
}

/// The master process state.
pub(crate) struct Master {
    config_dir: PathBuf,
    main: MainCf,
    services: Vec<Service>,
    children: HashMap<u32, Child>,
    generation: u32,
    child_log: ChildLog,
    signals: SignalFd,
    verbose: bool,
    /// master runs as root: children drop to their users.
    privsep: bool,
    /// The "postern install has not been run" warning was logged.
    warned_no_groups: Cell<bool>,
    /// master runs in the foreground (decides where logs go without syslog).
    foreground: bool,
    /// Where the pid and status files are (the queue directory at start).
    queue_dir: PathBuf,
    /// The systemd STATUS= of a healthy master.
    normal_status: String,
    /// The failing summary last sent as STATUS=; None = a healthy one was.
    notified_failing: Option<String>,
    /// A failure to write the status file was logged.
    warned_status_file: Cell<bool>,
}

/// The master.cf path for error messages.
fn master_cf_path(config_dir: &Path) -> PathBuf {
    config_dir.join("master.cf")
}

/// Non-blocking read end, blocking write end (children write 9 bytes and
/// must not see EAGAIN), both close-on-exec.
fn status_pipe() -> Result<(OwnedFd, OwnedFd), String> {
    let (r, w) = nix::unistd::pipe2(OFlag::O_CLOEXEC).map_err(|e| format!("pipe: {}", e.desc()))?;
    fcntl(&r, FcntlArg::F_SETFL(OFlag::O_NONBLOCK)).map_err(|e| format!("pipe: {}", e.desc()))?;
    Ok((r, w))
}

/// The endpoint of a service, or None (with a warning) for types master
/// does not run yet.
fn endpoint_of(
    entry: &ServiceEntry,
    main: &MainCf,
    config_dir: &Path,
) -> Result<Option<Endpoint>, String> {
    match entry.kind {
        ServiceType::Inet => {
            let addrs = entry.inet_addresses(main).map_err(|e| e.to_string())?;
            Ok(Some(Endpoint::Inet(addrs)))
        }
        ServiceType::Unix | ServiceType::Fifo => Ok(Some(Endpoint::Unix(entry.socket_path(main)))),
        ServiceType::Pass | ServiceType::UnixDgram => {
            warn!(
                "{}:{}: service {}: type {} is not supported yet; skipped",
                master_cf_path(config_dir).display(),
                entry.line,
                entry.key(),
                service_type_name(&entry.kind)
            );
            Ok(None)
        }
    }
}

fn program_of(entry: &ServiceEntry, main: &MainCf) -> PathBuf {
    let cmd = Path::new(&entry.command);
    if cmd.is_absolute() {
        cmd.to_path_buf()
    } else {
        main.path("daemon_directory").join(cmd)
    }
}

fn argv_of(entry: &ServiceEntry) -> Vec<String> {
    let mut argv = vec![
        "-n".to_string(),
        entry.name.clone(),
        "-t".to_string(),
        service_type_name(&entry.kind).to_string(),
    ];
    argv.extend(entry.args.iter().cloned());
    for (n, v) in &entry.overrides {
        argv.push("-o".to_string());
        argv.push(format!("{n}={v}"));
    }
    argv
}

/// The user and chroot of a service's children (master runs as root):
/// unpriv `-`/`y` = the program's default user (privileges table; main.cf
/// mail_owner for programs it does not know; root for local), `n` = root,
/// a word = that user; chroot `y` = the service's queue_directory (with its
/// `-o` overrides, as the child sees it).
fn run_as_of(entry: &ServiceEntry, main: &MainCf) -> RunAs {
    let mut effective = main.clone();
    for (n, v) in &entry.overrides {
        effective.set(n, v);
    }
    let program = Path::new(&entry.command)
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let mail_owner = effective.str("mail_owner");
    let user = match &entry.unpriv {
        Unpriv::Default => program_privileges(&program, &mail_owner)
            .default_user
            .unwrap_or("root")
            .to_string(),
        Unpriv::Root => "root".to_string(),
        Unpriv::User(u) => u.clone(),
    };
    RunAs {
        user,
        chroot: entry.chroot.then(|| effective.path("queue_directory")),
    }
}

/// Files of /etc a chrooted service may need (copied into QUEUE_DIR/etc).
const CHROOT_ETC_FILES: [&str; 6] = [
    "resolv.conf",
    "hosts",
    "services",
    "localtime",
    "nsswitch.conf",
    "host.conf",
];

/// The name master's children run as when privilege separation is off.
fn own_user_name() -> String {
    let uid = nix::unistd::geteuid();
    match User::from_uid(uid) {
        Ok(Some(u)) => u.name,
        _ => uid.to_string(),
    }
}

fn maxproc_of(entry: &ServiceEntry, main: &MainCf) -> Result<u32, String> {
    match entry.maxproc {
        Some(n) => Ok(n),
        None => main
            .bounded::<u32>("default_process_limit")
            .map_err(|e| e.to_string()),
    }
}

/// Two entries are "the same service" when every field but the line
/// number matches.
fn same_entry(a: &ServiceEntry, b: &ServiceEntry) -> bool {
    let mut b = b.clone();
    b.line = a.line;
    *a == b
}

fn describe_exit(status: &WaitStatus) -> Option<String> {
    match status {
        WaitStatus::Exited(_, code) => Some(format!("exit status {code}")),
        WaitStatus::Signaled(_, sig, _) => Some(format!("killed by signal {}", *sig as i32)),
        _ => None,
    }
}

impl Master {
    /// A master with no services yet.
    pub(crate) fn new(
        config_dir: PathBuf,
        main: MainCf,
        child_log: ChildLog,
        signals: SignalFd,
        verbose: bool,
        foreground: bool,
    ) -> Master {
        // On when master is root, unless main.cf turns it off (the
        // quickstart does, so it never needs `postern install`).
        let privsep = crate::privilege_separation(&main);
        let normal_status = format!(
            "serving: version {VERSION}, configuration {}",
            config_dir.display()
        );
        Master {
            queue_dir: main.path("queue_directory"),
            config_dir,
            main,
            services: Vec::new(),
            children: HashMap::new(),
            generation: 0,
            child_log,
            signals,
            verbose,
            privsep,
            warned_no_groups: Cell::new(false),
            foreground,
            normal_status,
            notified_failing: None,
            warned_status_file: Cell::new(false),
        }
    }

    /// The systemd STATUS= of a healthy master (sent with READY=1).
    pub(crate) fn normal_status(&self) -> &str {
        &self.normal_status
    }

    /// The group of a unix/fifo service's socket (privilege separation on):
    /// postern-ipc for private/, postdrop for public/. None (socket mode
    /// 0666) when master is not root or the group does not exist yet; the
    /// latter is logged once.
    fn socket_group(&self, entry: &ServiceEntry) -> Option<Gid> {
        if !self.privsep || !matches!(entry.kind, ServiceType::Unix | ServiceType::Fifo) {
            return None;
        }
        let name = if entry.private {
            IPC_GROUP
        } else {
            POSTDROP_GROUP
        };
        match Group::from_name(name) {
            Ok(Some(g)) => Some(g.gid),
            _ => {
                if !self.warned_no_groups.replace(true) {
                    warn!(
                        "group {name} does not exist: `postern install` has not been run; \
                         sockets in private/ and public/ are left mode 0666"
                    );
                }
                None
            }
        }
    }

    /// Builds (binds) one service. Errors name master.cf:LINE and the service.
    fn prepare(
        &self,
        entry: &ServiceEntry,
        main: &MainCf,
        reuse: Option<(Endpoint, Vec<OwnedFd>)>,
    ) -> Result<Option<Service>, String> {
        let where_ = format!(
            "{}:{}: service {}",
            master_cf_path(&self.config_dir).display(),
            entry.line,
            entry.key()
        );
        let Some(endpoint) =
            endpoint_of(entry, main, &self.config_dir).map_err(|e| format!("{where_}: {e}"))?
        else {
            return Ok(None);
        };
        let listeners = match reuse {
            Some((old_ep, fds)) if old_ep == endpoint => fds,
            other => {
                // Close a different old endpoint before binding the new one
                // (127.0.0.1:25 → 0.0.0.0:25 would otherwise conflict).
                drop(other);
                bind_endpoint(&endpoint, self.socket_group(entry))
                    .map_err(|e| format!("{where_}: {e}"))?
            }
        };
        let (status_r, status_w) = status_pipe().map_err(|e| format!("{where_}: {e}"))?;
        let maxproc = maxproc_of(entry, main).map_err(|e| format!("{where_}: {e}"))?;
        Ok(Some(Service {
            key: entry.key(),
            program: program_of(entry, main),
            argv: argv_of(entry),
            run_as: self.privsep.then(|| run_as_of(entry, main)),
            entry: entry.clone(),
            endpoint,
            listeners,
            status_r,
            status_w,
            status_buf: Vec::new(),
            generation: self.generation,
            maxproc,
            throttled_until: None,
            failures: 0,
            last_failure: None,
            failing: None,
            next_wakeup: (entry.wakeup > 0).then(Instant::now),
        }))
    }

    /// Binds every service of master.cf; the first failure stops start-up.
    pub(crate) fn start_services(&mut self, mcf: &MasterCf) -> Result<(), String> {
        if !self.privsep {
            let why = if nix::unistd::geteuid().is_root() {
                "privilege_separation = no"
            } else {
                "not running as root"
            };
            warn!(
                "{why}: privilege separation is off; every service runs as {}",
                own_user_name()
            );
        }
        self.prepare_chroot(mcf, &self.main.clone());
        for entry in &mcf.services {
            let main = self.main.clone();
            if let Some(svc) = self.prepare(entry, &main, None)? {
                debug!("service {} listening on {}", svc.key, svc.endpoint);
                self.services.push(svc);
            }
        }
        Ok(())
    }

    /// Gives chrooted services the few files of /etc they need inside the
    /// jail (name resolution, service names, the time zone for log time
    /// stamps), as Postfix's start-up script does: copied into
    /// QUEUE_DIR/etc, root-owned 0644, refreshed at start and on reload.
    fn prepare_chroot(&self, mcf: &MasterCf, main: &MainCf) {
        if !self.privsep || !mcf.services.iter().any(|s| s.chroot) {
            return;
        }
        let etc = main.path("queue_directory").join("etc");
        if let Err(e) = std::fs::create_dir_all(&etc) {
            warn!("cannot create {}: {e}", etc.display());
            return;
        }
        for name in CHROOT_ETC_FILES {
            let src = std::path::Path::new("/etc").join(name);
            // Follow links (/etc/localtime usually is one): copy the content.
            let Ok(data) = std::fs::read(&src) else {
                continue;
            };
            let dst = etc.join(name);
            let tmp = etc.join(format!(".{name}.new"));
            let done = std::fs::write(&tmp, &data)
                .and_then(|()| {
                    use std::os::unix::fs::PermissionsExt;
                    std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(0o644))
                })
                .and_then(|()| std::fs::rename(&tmp, &dst));
            if let Err(e) = done {
                let _ = std::fs::remove_file(&tmp);
                warn!("cannot copy {} into the chroot: {e}", src.display());
            }
        }
    }

    fn service_index(&self, key: &str) -> Option<usize> {
        self.services.iter().position(|s| s.key == key)
    }

    /// (all children, idle current-generation children on each listener).
    fn counts(&self, si: usize) -> (u32, Vec<u32>) {
        let svc = &self.services[si];
        let mut total = 0u32;
        let mut idle = vec![0u32; svc.listeners.len()];
        for c in self.children.values().filter(|c| c.key == svc.key) {
            total = total.saturating_add(1);
            if c.available
                && c.generation == svc.generation
                && let Some(n) = idle.get_mut(c.listener)
            {
                *n += 1;
            }
        }
        (total, idle)
    }

    fn eligible_listeners(&self, si: usize, now: Instant) -> Vec<usize> {
        let svc = &self.services[si];
        if svc.throttled_until.is_some_and(|t| t > now) {
            return Vec::new();
        }
        let (total, idle) = self.counts(si);
        if svc.maxproc != 0 && total >= svc.maxproc {
            return Vec::new();
        }
        (0..svc.listeners.len())
            .filter(|&li| idle[li] == 0)
            .collect()
    }

    /// Runs until SIGTERM/SIGINT; returns after all children are gone.
    pub(crate) fn run(&mut self) -> Result<(), String> {
        self.publish_health();
        loop {
            let now = Instant::now();
            self.timers(now);
            let timeout = self.poll_timeout(now);
            let mut slots = vec![Slot::Signals];
            let mut ready = Vec::new();
            {
                let mut fds = vec![PollFd::new(self.signals.as_fd(), PollFlags::POLLIN)];
                for (si, svc) in self.services.iter().enumerate() {
                    fds.push(PollFd::new(svc.status_r.as_fd(), PollFlags::POLLIN));
                    slots.push(Slot::Status(si));
                    for li in self.eligible_listeners(si, now) {
                        fds.push(PollFd::new(svc.listeners[li].as_fd(), PollFlags::POLLIN));
                        slots.push(Slot::Listen(si, li));
                    }
                }
                match poll(&mut fds, timeout) {
                    Ok(_) => {}
                    Err(Errno::EINTR) => continue,
                    Err(e) => return Err(format!("poll: {}", e.desc())),
                }
                for (slot, fd) in slots.iter().zip(fds.iter()) {
                    if fd.revents().is_some_and(|r| !r.is_empty()) {
                        ready.push(*slot);
                    }
                }
            }
            for slot in &ready {
                if let Slot::Status(si) = slot {
                    self.read_status(*si);
                }
            }
            let mut reloaded = false;
            if ready.iter().any(|s| matches!(s, Slot::Signals)) {
                match self.read_signals() {
                    SignalAction::Stop(sig) => {
                        self.shutdown(sig);
                        return Ok(());
                    }
                    SignalAction::Reloaded => reloaded = true,
                    SignalAction::None => {}
                }
            }
            if !reloaded {
                let now = Instant::now();
                for slot in &ready {
                    if let Slot::Listen(si, li) = *slot
                        && self.eligible_listeners(si, now).contains(&li)
                    {
                        self.spawn_child(si, li);
                    }
                }
            }
        }
    }

    fn poll_timeout(&self, now: Instant) -> PollTimeout {
        let next = self
            .services
            .iter()
            .flat_map(|s| [s.throttled_until, s.next_wakeup])
            .flatten()
            .chain(self.recovery_checks())
            .min();
        match next {
            None => PollTimeout::NONE,
            Some(t) => {
                let d = t.saturating_duration_since(now);
                let ms = d.as_millis().saturating_add(1).min(60_000);
                PollTimeout::try_from(ms as i32).unwrap_or(PollTimeout::NONE)
            }
        }
    }

    /// When current-generation processes of failing services pass the
    /// start-up window (they then count as a successful start).
    fn recovery_checks(&self) -> impl Iterator<Item = Instant> + '_ {
        self.children.values().filter_map(|c| {
            let svc = self.services.iter().find(|s| s.key == c.key)?;
            (svc.failing.is_some() && c.generation == svc.generation)
                .then(|| c.started + STARTUP_FAILURE_WINDOW)
        })
    }

    /// Marks failing services healthy whose current process has lived
    /// past the start-up window.
    fn check_recovery(&mut self, now: Instant) {
        let survivors: Vec<usize> = self
            .services
            .iter()
            .enumerate()
            .filter(|(_, svc)| svc.failing.is_some())
            .filter(|(_, svc)| {
                self.children.values().any(|c| {
                    c.key == svc.key
                        && c.generation == svc.generation
                        && now.duration_since(c.started) >= STARTUP_FAILURE_WINDOW
                })
            })
            .map(|(si, _)| si)
            .collect();
        for si in survivors {
            self.recovered(si);
        }
    }

    /// A process of a failing service started fine: it is healthy again.
    fn recovered(&mut self, si: usize) {
        let svc = &mut self.services[si];
        if let Some(f) = svc.failing.take() {
            let n = f.failures;
            info!(
                "service {}: started normally after {n} failed start-up{}",
                svc.key,
                if n == 1 { "" } else { "s" }
            );
            self.publish_health();
        }
    }

    /// Writes the status file and, when the set of failing services or
    /// their reasons changed, tells systemd (STATUS=).
    fn publish_health(&mut self) {
        let status = MasterStatus {
            master_pid: std::process::id(),
            written: epoch_secs(SystemTime::now()),
            services: self
                .services
                .iter()
                .map(|s| ServiceHealth {
                    service: s.key.clone(),
                    line: u32::try_from(s.entry.line).unwrap_or(u32::MAX),
                    program: s.program.display().to_string(),
                    failure: s.failing.as_ref().map(|f| StartupFailure {
                        reason: f.reason.clone(),
                        failures: f.failures,
                        since: epoch_secs(f.since),
                        throttled_until: wall_clock(s.throttled_until),
                    }),
                })
                .collect(),
        };
        if let Err(e) = write_status(&self.queue_dir, &status)
            && !self.warned_status_file.replace(true)
        {
            warn!("{e}: `postern status` cannot show failing services");
        }
        let failing: Vec<String> = self
            .services
            .iter()
            .filter_map(|s| Some(format!("{}: {}", s.key, s.failing.as_ref()?.reason)))
            .collect();
        let summary = (!failing.is_empty()).then(|| {
            format!(
                "{} service{} failing: {}",
                failing.len(),
                if failing.len() == 1 { "" } else { "s" },
                failing.join("; ")
            )
        });
        if summary != self.notified_failing {
            crate::notify::status(summary.as_deref().unwrap_or(&self.normal_status));
            self.notified_failing = summary;
        }
    }

    /// Expires throttles and sends due wakeup triggers.
    fn timers(&mut self, now: Instant) {
        self.check_recovery(now);
        let mut in_use = HashMap::new();
        for c in self.children.values() {
            *in_use.entry(c.key.clone()).or_insert(0u32) += 1;
        }
        for svc in &mut self.services {
            if svc.throttled_until.is_some_and(|t| t <= now) {
                svc.throttled_until = None;
            }
            let Some(due) = svc.next_wakeup else { continue };
            if due > now {
                continue;
            }
            if let Some(t) = svc.throttled_until {
                svc.next_wakeup = Some(t);
                continue;
            }
            svc.next_wakeup = Some(now + Duration::from_secs(u64::from(svc.entry.wakeup)));
            // "N?": only wake a service that is in use.
            if svc.entry.wakeup_conditional && !in_use.contains_key(&svc.key) {
                continue;
            }
            match trigger(&svc.endpoint) {
                Ok(()) => debug!("wakeup {}", svc.key),
                Err(e) => warn!("wakeup service {}: {e}", svc.key),
            }
        }
    }

    fn read_status(&mut self, si: usize) {
        let mut buf = [0u8; 4096];
        loop {
            match nix::unistd::read(&self.services[si].status_r, &mut buf) {
                Ok(0) => break,
                Ok(n) => self.services[si].status_buf.extend_from_slice(&buf[..n]),
                Err(Errno::EINTR) => continue,
                Err(_) => break,
            }
        }
        let messages = drain_messages(&mut self.services[si].status_buf);
        let key = self.services[si].key.clone();
        let generation = self.services[si].generation;
        let mut started_fine = false;
        for msg in messages {
            match msg {
                Ok(StatusMessage::Availability(rec)) => match self.children.get_mut(&rec.pid) {
                    Some(c) if c.key == key => {
                        c.available = rec.available;
                        // It got as far as serving: its start-up worked.
                        started_fine |= c.generation == generation;
                    }
                    _ => debug!("status from unknown pid {} for {key}", rec.pid),
                },
                Ok(StatusMessage::Fatal(report)) => match self.children.get_mut(&report.pid) {
                    Some(c) if c.key == key => c.fatal = Some(report.message),
                    _ => debug!("fatal report from unknown pid {} for {key}", report.pid),
                },
                Err(e) => warn!("service {key}: status pipe: {e}"),
            }
        }
        if started_fine {
            self.recovered(si);
        }
    }

    fn read_signals(&mut self) -> SignalAction {
        let mut action = SignalAction::None;
        loop {
            match self.signals.read_signal() {
                Ok(Some(info)) => {
                    let signo = info.ssi_signo as i32;
                    match Signal::try_from(signo) {
                        Ok(Signal::SIGCHLD) => self.reap(),
                        Ok(Signal::SIGHUP) => {
                            crate::notify::reloading();
                            self.reload();
                            crate::notify::reloaded();
                            // reloaded() said "serving": say again what fails.
                            self.notified_failing = None;
                            self.publish_health();
                            if !matches!(action, SignalAction::Stop(_)) {
                                action = SignalAction::Reloaded;
                            }
                        }
                        Ok(Signal::SIGTERM) | Ok(Signal::SIGINT) => {
                            action = SignalAction::Stop(signo)
                        }
                        _ => {}
                    }
                }
                Ok(None) => break,
                Err(Errno::EINTR) => continue,
                Err(_) => break,
            }
        }
        action
    }

    fn spawn_child(&mut self, si: usize, li: usize) {
        let svc = &self.services[si];
        let spec = SpawnSpec {
            program: &svc.program,
            argv: &svc.argv,
            config_dir: &self.config_dir,
            generation: svc.generation,
            listen: svc.listeners[li].as_fd(),
            status: svc.status_w.as_fd(),
            log: &self.child_log,
            run_as: svc.run_as.as_ref(),
        };
        match spawn(&spec) {
            Ok(pid) => {
                debug!(
                    "spawned {} pid {pid} for {}",
                    svc.program.display(),
                    svc.key
                );
                let child = Child {
                    key: svc.key.clone(),
                    listener: li,
                    generation: svc.generation,
                    started: Instant::now(),
                    available: true,
                    signalled: false,
                    program: svc.program.clone(),
                    fatal: None,
                };
                self.children.insert(pid, child);
            }
            Err(e) => {
                let reason = format!("cannot start {}: {e}", svc.program.display());
                error!("{reason}");
                self.throttle(si, reason);
            }
        }
    }

    /// Backs a failing service off: 1 s, doubling per consecutive failure,
    /// up to service_throttle_time; marks it failing with `reason`.
    fn throttle(&mut self, si: usize, reason: String) {
        let max = self
            .main
            .time("service_throttle_time")
            .unwrap_or(Duration::from_secs(60));
        let now = Instant::now();
        let svc = &mut self.services[si];
        if svc
            .last_failure
            .is_some_and(|t| now.duration_since(t) > FAILURE_RESET)
        {
            svc.failures = 0;
        }
        svc.failures = svc.failures.saturating_add(1);
        svc.last_failure = Some(now);
        let shift = svc.failures.saturating_sub(1).min(30);
        let delay = Duration::from_secs(1u64 << shift).min(max.max(Duration::from_secs(1)));
        svc.throttled_until = Some(now + delay);
        warn!(
            "{}: bad command startup -- throttling",
            svc.program.display()
        );
        match &mut svc.failing {
            Some(f) => {
                f.failures = f.failures.saturating_add(1);
                f.reason = reason;
            }
            None => {
                svc.failing = Some(Failing {
                    reason,
                    failures: 1,
                    since: SystemTime::now(),
                })
            }
        }
        self.publish_health();
    }

    /// Reaps every exited child (SIGCHLD).
    fn reap(&mut self) {
        loop {
            match waitpid(None::<Pid>, Some(WaitPidFlag::WNOHANG)) {
                Ok(WaitStatus::StillAlive) => break,
                Ok(status) => {
                    if let Some(pid) = status.pid() {
                        self.child_exited(pid, &status);
                    }
                }
                Err(Errno::EINTR) => continue,
                Err(_) => break,
            }
        }
    }

    fn child_exited(&mut self, pid: Pid, status: &WaitStatus) {
        let Ok(upid) = u32::try_from(pid.as_raw()) else {
            return;
        };
        // Read what it wrote before it exited (its fatal error) while it is
        // still known.
        if let Some(si) = self
            .children
            .get(&upid)
            .and_then(|c| self.service_index(&c.key))
        {
            self.read_status(si);
        }
        let Some(child) = self.children.remove(&upid) else {
            return;
        };
        let normal = match status {
            WaitStatus::Exited(_, 0) => true,
            WaitStatus::Signaled(_, _, _) => child.signalled,
            WaitStatus::Exited(_, _) => false,
            _ => return,
        };
        let si = self.service_index(&child.key);
        let current = si.is_some_and(|si| self.services[si].generation == child.generation);
        if !normal {
            let how = describe_exit(status);
            if let Some(how) = &how {
                warn!("process {} pid {upid} {how}", child.program.display());
            }
            if let Some(si) = si
                && current
                && child.started.elapsed() < STARTUP_FAILURE_WINDOW
            {
                let reason = match (&child.fatal, how) {
                    (Some(fatal), _) => format!("fatal: {fatal}"),
                    (None, Some(how)) => how,
                    (None, None) => "exited".to_string(),
                };
                self.throttle(si, reason);
            }
        } else if let Some(si) = si
            && current
            && matches!(status, WaitStatus::Exited(_, 0))
        {
            self.recovered(si);
        }
        // A wakeup service with no child left is woken again at once (after
        // any throttle delay), so it comes back without waiting a full period.
        if let Some(si) = si {
            let key = child.key;
            if self.services[si].entry.wakeup > 0 && !self.children.values().any(|c| c.key == key) {
                let svc = &mut self.services[si];
                let at = svc.throttled_until.unwrap_or_else(Instant::now);
                svc.next_wakeup = Some(at);
            }
        }
    }

    fn signal_children(&mut self, key: Option<&str>, sig: Signal) {
        for (pid, c) in self.children.iter_mut() {
            if key.is_none_or(|k| k == c.key) {
                c.signalled = true;
                if let Ok(p) = i32::try_from(*pid) {
                    let _ = kill(Pid::from_raw(p), sig);
                }
            }
        }
    }

    /// SIGHUP: re-read both files and apply the differences.
    fn reload(&mut self) {
        info!(
            "reload -- version {VERSION}, configuration {}",
            self.config_dir.display()
        );
        let main = match MainCf::load(&self.config_dir) {
            Ok(m) => m,
            Err(e) => {
                error!("{e}; keeping the old configuration");
                return;
            }
        };
        let mcf = match MasterCf::load(&self.config_dir) {
            Ok(m) => m,
            Err(e) => {
                error!("{e}; keeping the old configuration");
                return;
            }
        };
        for w in main.warnings() {
            warn!("{w}");
        }
        if main.str("maillog_file") != self.main.str("maillog_file") {
            match crate::open_log(&main, self.foreground) {
                Ok(log) => {
                    postern_service::log::init_logging_with(
                        "master",
                        &main,
                        self.verbose,
                        log.sink,
                    );
                    if let Some(notice) = log.notice {
                        warn!("{notice}");
                    }
                    self.child_log = log.child;
                }
                Err(e) => error!("{e}; keeping the old log"),
            }
        }
        self.prepare_chroot(&mcf, &main);
        self.generation = self.generation.wrapping_add(1);
        let main_changed = main != self.main;
        let mut old: HashMap<String, Service> = self
            .services
            .drain(..)
            .map(|s| (s.key.clone(), s))
            .collect();
        let mut new_services = Vec::new();
        for entry in &mcf.services {
            let key = entry.key();
            match old.remove(&key) {
                Some(mut svc) if !main_changed && same_entry(&svc.entry, entry) => {
                    svc.entry = entry.clone();
                    new_services.push(svc);
                }
                Some(svc) => {
                    // Changed: keep the socket when the endpoint is the same,
                    // keep the status pipe (old children still write to it),
                    // new generation; old children finish and exit.
                    let Service {
                        endpoint,
                        listeners,
                        status_r,
                        status_w,
                        ..
                    } = svc;
                    match self.prepare(entry, &main, Some((endpoint, listeners))) {
                        Ok(Some(mut s)) => {
                            s.status_r = status_r;
                            s.status_w = status_w;
                            info!("service {key}: configuration changed");
                            new_services.push(s);
                        }
                        Ok(None) => {}
                        Err(e) => error!("{e}"),
                    }
                    self.signal_children(Some(&key), Signal::SIGHUP);
                }
                None => match self.prepare(entry, &main, None) {
                    Ok(Some(s)) => {
                        info!("service {key}: added, listening on {}", s.endpoint);
                        new_services.push(s);
                    }
                    Ok(None) => {}
                    Err(e) => error!("{e}"),
                },
            }
        }
        for (key, svc) in old {
            info!("service {key}: removed");
            if let Endpoint::Unix(path) = &svc.endpoint {
                // Unless a new service took over the same path.
                if !new_services
                    .iter()
                    .any(|s: &Service| s.endpoint == svc.endpoint)
                {
                    let _ = std::fs::remove_file(path);
                }
            }
            drop(svc);
            self.signal_children(Some(&key), Signal::SIGHUP);
        }
        self.services = new_services;
        self.main = main;
    }

    /// SIGTERM/SIGINT: stop every child (SIGTERM, then SIGKILL after 5 s).
    fn shutdown(&mut self, signo: i32) {
        info!("terminating on signal {signo}");
        crate::notify::stopping(signo);
        // Stop listening first so nothing new queues up.
        self.services.clear();
        self.signal_children(None, Signal::SIGTERM);
        let deadline = Instant::now() + STOP_GRACE;
        self.wait_children(deadline);
        if !self.children.is_empty() {
            self.signal_children(None, Signal::SIGKILL);
            self.wait_children(Instant::now() + STOP_GRACE);
        }
    }

    fn wait_children(&mut self, deadline: Instant) {
        self.reap();
        while !self.children.is_empty() {
            let now = Instant::now();
            if now >= deadline {
                return;
            }
            let ms = deadline.duration_since(now).as_millis().min(1000) as i32 + 1;
            let mut fds = [PollFd::new(self.signals.as_fd(), PollFlags::POLLIN)];
            let _ = poll(
                &mut fds,
                PollTimeout::try_from(ms).unwrap_or(PollTimeout::NONE),
            );
            while let Ok(Some(_)) = self.signals.read_signal() {}
            self.reap();
        }
    }
}

enum SignalAction {
    None,
    Reloaded,
    Stop(i32),
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(text: &str) -> ServiceEntry {
        MasterCf::parse(text, Path::new("/etc/postern/master.cf"))
            .unwrap()
            .services
            .remove(0)
    }

    #[test]
    fn argv_has_name_type_args_then_overrides() {
        let e =
            entry("submission inet n - n - - smtpd -v -o syslog_name=postern/submission -o a=b\n");
        assert_eq!(
            argv_of(&e),
            vec![
                "-n",
                "submission",
                "-t",
                "inet",
                "-v",
                "-o",
                "syslog_name=postern/submission",
                "-o",
                "a=b"
            ]
        );
        let mut main = MainCf::defaults();
        main.set("daemon_directory", "/usr/libexec/postern");
        assert_eq!(
            program_of(&e, &main),
            PathBuf::from("/usr/libexec/postern/smtpd")
        );
        let e = entry("x unix n - n - - /opt/bin/thing\n");
        assert_eq!(program_of(&e, &main), PathBuf::from("/opt/bin/thing"));
    }

    #[test]
    fn run_as_follows_the_unpriv_and_chroot_columns() {
        let mut main = MainCf::defaults();
        main.set("queue_directory", "/var/spool/pt");
        main.set("mail_owner", "daemon");
        let ra = |line: &str| run_as_of(&entry(line), &main);
        let user = |u: &str, c: Option<&str>| RunAs {
            user: u.to_string(),
            chroot: c.map(PathBuf::from),
        };
        // `-`: the table's default user; mail_owner for unknown programs;
        // root for local.
        assert_eq!(
            ra("smtp inet n - n - - smtpd\n"),
            user("postern-smtpd", None)
        );
        assert_eq!(
            ra("cleanup unix - y y - 0 /usr/lib/postern/cleanup\n"),
            user("postern-cleanup", Some("/var/spool/pt"))
        );
        assert_eq!(ra("x unix - - n - - echo\n"), user("daemon", None));
        assert_eq!(ra("local unix - - n - - local\n"), user("root", None));
        // `n` = root, a word = that user.
        assert_eq!(ra("smtp inet n n n - - smtpd\n"), user("root", None));
        assert_eq!(
            ra("smtp inet n nobody y - - smtpd\n"),
            user("nobody", Some("/var/spool/pt"))
        );
        // -o overrides are what the child sees.
        assert_eq!(
            ra("x unix - - y - - echo -o mail_owner=nobody -o queue_directory=/q\n"),
            user("nobody", Some("/q"))
        );
    }

    #[test]
    fn maxproc_default_and_unlimited() {
        let mut main = MainCf::defaults();
        main.set("default_process_limit", "7");
        assert_eq!(
            maxproc_of(&entry("a unix n - n - - x\n"), &main).unwrap(),
            7
        );
        assert_eq!(
            maxproc_of(&entry("a unix n - n - 0 x\n"), &main).unwrap(),
            0
        );
        assert_eq!(
            maxproc_of(&entry("a unix n - n - 3 x\n"), &main).unwrap(),
            3
        );
    }

    #[test]
    fn same_entry_ignores_line_only() {
        let a = entry("a unix n - n - 1 x\n");
        let mut b = a.clone();
        b.line = 40;
        assert!(same_entry(&a, &b));
        b.args.push("-v".into());
        assert!(!same_entry(&a, &b));
    }

    #[test]
    fn exit_descriptions_use_postfix_words() {
        let p = Pid::from_raw(1);
        assert_eq!(
            describe_exit(&WaitStatus::Exited(p, 1)).unwrap(),
            "exit status 1"
        );
        assert_eq!(
            describe_exit(&WaitStatus::Signaled(p, Signal::SIGKILL, false)).unwrap(),
            "killed by signal 9"
        );
    }
}
