//! Privilege separation with real processes: the compiled `master` binary
//! starts the `echo-service` and `wakeup-counter` examples, and the tests
//! read /proc/PID/status and /proc/PID/root of each child to check what the
//! master.cf unpriv and chroot columns asked for (docs/security.md): user
//! and group ids (all four fields), supplementary groups reset to
//! postern-ipc, no capabilities at all (bounding set included),
//! no_new_privs, the chroot, umask 007; then a reload that changes the user
//! and drops the chroot; a missing user refused at start-up; and a master
//! that is not root logging once that privilege separation is off.
//!
//! The root tests skip (with a printed reason) when not run as root. They
//! create the groups postern-ipc, postern and postdrop when missing and do
//! not delete them.

mod common;
use common::{MASTER, WAIT, examples_dir, free_port, wait_for};

use std::io::{BufRead, BufReader, Write};
use std::net::TcpStream;
use std::os::unix::fs::MetadataExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use nix::unistd::User;

fn skip_unless_root(test: &str) -> bool {
    if common::is_root() {
        common::ensure_groups();
        true
    } else {
        eprintln!(
            "{test}: skipped: needs root (privilege separation is on only for a root master)"
        );
        false
    }
}

fn user(name: &str) -> User {
    User::from_name(name)
        .ok()
        .flatten()
        .unwrap_or_else(|| panic!("user {name} missing"))
}

/// An instance directory with main.cf and master.cf.
struct Setup {
    dir: tempfile::TempDir,
}

impl Setup {
    fn new(master_cf: &str) -> Setup {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        std::fs::write(
            d.join("main.cf"),
            format!(
                "queue_directory = {q}\ndaemon_directory = {e}\nmaillog_file = {l}\n\
                 myhostname = test.example\nservice_throttle_time = 4s\nmail_owner = daemon\n",
                q = d.join("queue").display(),
                e = examples_dir().display(),
                l = d.join("maillog").display()
            ),
        )
        .unwrap();
        let s = Setup { dir };
        s.write_master_cf(master_cf);
        s
    }

    fn path(&self) -> &Path {
        self.dir.path()
    }

    fn queue(&self) -> PathBuf {
        std::fs::canonicalize(self.path().join("queue")).unwrap()
    }

    fn write_master_cf(&self, text: &str) {
        std::fs::write(self.path().join("master.cf"), text).unwrap();
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.path().join("maillog")).unwrap_or_default()
    }

    fn wait_log(&self, needle: &str) -> String {
        wait_for(&format!("log line containing {needle:?}"), || {
            let l = self.log();
            l.contains(needle).then_some(l)
        })
    }

    /// `master -c DIR -f`, as `as_user` when given (root tests only).
    fn start(&self, as_user: Option<&User>) -> Running {
        let mut cmd = Command::new(MASTER);
        cmd.arg("-c")
            .arg(self.path())
            .arg("-f")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        if let Some(u) = as_user {
            cmd.uid(u.uid.as_raw()).gid(u.gid.as_raw());
        }
        let child = cmd.spawn().unwrap();
        let r = Running { child };
        self.wait_log("daemon started -- version");
        r
    }
}

struct Running {
    child: Child,
}

impl Running {
    fn signal(&self, sig: i32) {
        let st = Command::new("kill")
            .arg(format!("-{sig}"))
            .arg(self.child.id().to_string())
            .status()
            .unwrap();
        assert!(st.success());
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        if self.child.try_wait().ok().flatten().is_none() {
            let _ = Command::new("kill")
                .arg("-15")
                .arg(self.child.id().to_string())
                .status();
            let deadline = Instant::now() + WAIT;
            while self.child.try_wait().ok().flatten().is_none() && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(50));
            }
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// A line client of echo-service.
struct Client {
    r: BufReader<TcpStream>,
    w: TcpStream,
}

impl Client {
    fn connect(port: u16) -> Client {
        let s = wait_for("connect", || TcpStream::connect(("127.0.0.1", port)).ok());
        s.set_read_timeout(Some(WAIT)).unwrap();
        Client {
            r: BufReader::new(s.try_clone().unwrap()),
            w: s,
        }
    }

    /// Sends a line; returns (pid of the serving child, answer).
    fn ask(&mut self, line: &str) -> (u32, String) {
        self.w.write_all(format!("{line}\n").as_bytes()).unwrap();
        let mut reply = String::new();
        self.r.read_line(&mut reply).unwrap();
        let (pid, text) = reply
            .trim_end()
            .split_once(' ')
            .map(|(p, t)| (p.to_string(), t.to_string()))
            .unwrap_or_else(|| (reply.trim_end().to_string(), String::new()));
        (
            pid.parse()
                .unwrap_or_else(|_| panic!("bad reply {reply:?}")),
            text,
        )
    }
}

/// The fields of /proc/PID/status.
struct Status(String);

impl Status {
    fn of(pid: u32) -> Status {
        Status(std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap())
    }

    fn field(&self, name: &str) -> String {
        self.0
            .lines()
            .find_map(|l| l.strip_prefix(&format!("{name}:")))
            .unwrap_or_else(|| panic!("no {name} in status"))
            .trim()
            .to_string()
    }

    fn numbers(&self, name: &str) -> Vec<u32> {
        self.field(name)
            .split_whitespace()
            .map(|n| n.parse().unwrap())
            .collect()
    }

    fn cap(&self, name: &str) -> u64 {
        u64::from_str_radix(&self.field(name), 16).unwrap()
    }

    /// Everything an unprivileged service must look like.
    fn assert_dropped(&self, what: &str, uid: u32, gid: u32) {
        assert_eq!(self.numbers("Uid"), vec![uid; 4], "{what}: Uid");
        assert_eq!(self.numbers("Gid"), vec![gid; 4], "{what}: Gid");
        assert_eq!(
            self.numbers("Groups"),
            vec![common::gid_of("postern-ipc")],
            "{what}: Groups"
        );
        for cap in ["CapEff", "CapPrm", "CapInh", "CapAmb", "CapBnd"] {
            assert_eq!(self.cap(cap), 0, "{what}: {cap}");
        }
        assert_eq!(self.field("NoNewPrivs"), "1", "{what}: NoNewPrivs");
        assert_eq!(self.field("Umask"), "0007", "{what}: Umask");
    }
}

fn root_of(pid: u32) -> PathBuf {
    std::fs::read_link(format!("/proc/{pid}/root")).unwrap()
}

/// Children of `master` whose command line contains `name`.
fn children_named(master: u32, name: &str) -> Vec<u32> {
    let mut out = Vec::new();
    for e in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(pid) = e.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
            continue;
        };
        let ppid: Option<u32> = stat
            .rsplit(')')
            .next()
            .and_then(|s| s.split_whitespace().nth(1))
            .and_then(|p| p.parse().ok());
        let cmdline = std::fs::read_to_string(format!("/proc/{pid}/cmdline")).unwrap_or_default();
        if ppid == Some(master) && cmdline.contains(name) {
            out.push(pid);
        }
    }
    out
}

#[test]
fn services_run_as_master_cf_says_and_reload_applies_changes() {
    if !skip_unless_root("services_run_as_master_cf_says_and_reload_applies_changes") {
        return;
    }
    let (plain, chrooted, as_root, default) = (free_port(), free_port(), free_port(), free_port());
    let s = Setup::new(&format!(
        "127.0.0.1:{plain} inet n nobody n - - echo-service\n\
         127.0.0.1:{chrooted} inet n nobody y - - echo-service\n\
         127.0.0.1:{as_root} inet n n n - - echo-service\n\
         127.0.0.1:{default} inet n - n - - echo-service\n\
         counter unix - nobody n 1 1 wakeup-counter\n\
         pub unix n nobody n - - echo-service\n"
    ));
    let m = s.start(None);
    let nobody = user("nobody");
    let daemon = user("daemon");
    let (nobody_uid, nobody_gid) = (nobody.uid.as_raw(), nobody.gid.as_raw());

    // unpriv = nobody, no chroot.
    let mut c = Client::connect(plain);
    let (pid, _) = c.ask("hello");
    Status::of(pid).assert_dropped("nobody", nobody_uid, nobody_gid);
    assert_eq!(root_of(pid), PathBuf::from("/"));
    let env = std::fs::read_to_string(format!("/proc/{pid}/environ")).unwrap();
    assert!(env.contains("POSTERN_PRIVSEP=1") && env.contains("POSTERN_RUN_AS=nobody"));
    assert!(!env.contains("POSTERN_CHROOT"), "{env:?}");
    assert_eq!(
        c.ask("?config queue_directory").1,
        s.path().join("queue").display().to_string()
    );

    // unpriv = nobody, chroot = y: root is the queue directory, which the
    // service sees as "/".
    let mut c2 = Client::connect(chrooted);
    let (old_pid, _) = c2.ask("hello");
    Status::of(old_pid).assert_dropped("nobody chrooted", nobody_uid, nobody_gid);
    assert_eq!(root_of(old_pid), s.queue());
    assert_eq!(
        c2.ask("?config queue_directory"),
        (old_pid, "/".to_string())
    );

    // unpriv = n: keeps root, but groups reset and no inheritable/ambient
    // capabilities, and no no_new_privs (it may need to exec as others).
    let mut c3 = Client::connect(as_root);
    let (pid, _) = c3.ask("hello");
    let st = Status::of(pid);
    assert_eq!(st.numbers("Uid"), vec![0; 4]);
    assert_eq!(st.numbers("Gid"), vec![0; 4]);
    assert_eq!(st.numbers("Groups"), vec![common::gid_of("postern-ipc")]);
    assert_eq!((st.cap("CapInh"), st.cap("CapAmb")), (0, 0));
    assert_ne!(st.cap("CapEff"), 0);
    assert_eq!(st.field("NoNewPrivs"), "0");

    // unpriv = -: an unknown program's default user is main.cf mail_owner.
    let mut c4 = Client::connect(default);
    let (pid, _) = c4.ask("hello");
    Status::of(pid).assert_dropped("mail_owner", daemon.uid.as_raw(), daemon.gid.as_raw());

    // The event service (wakeup-counter) drops too.
    s.wait_log("wakeup 1");
    let mpid = m.child.id();
    let counter = wait_for("wakeup-counter child", || {
        children_named(mpid, "wakeup-counter").first().copied()
    });
    Status::of(counter).assert_dropped("wakeup-counter", nobody_uid, nobody_gid);

    // Sockets: private/ is root:postern-ipc 0660, public/ root:postdrop 0660.
    let md = std::fs::metadata(s.path().join("queue/private/counter")).unwrap();
    assert_eq!(
        (md.uid(), md.gid(), md.mode() & 0o777),
        (0, common::gid_of("postern-ipc"), 0o660)
    );
    let md = std::fs::metadata(s.path().join("queue/public/pub")).unwrap();
    assert_eq!(
        (md.uid(), md.gid(), md.mode() & 0o777),
        (0, common::gid_of("postdrop"), 0o660)
    );
    assert!(
        !s.log().contains("privilege separation is off"),
        "{}",
        s.log()
    );
    assert!(!s.log().contains("has not been run"), "{}", s.log());

    // Reload: the chrooted service now runs as daemon without chroot. The
    // old child keeps its client (c2 stays connected and busy)...
    s.write_master_cf(&format!(
        "127.0.0.1:{plain} inet n nobody n - - echo-service\n\
         127.0.0.1:{chrooted} inet n daemon n - - echo-service\n\
         127.0.0.1:{as_root} inet n n n - - echo-service\n\
         127.0.0.1:{default} inet n - n - - echo-service\n\
         counter unix - nobody n 1 1 wakeup-counter\n\
         pub unix n nobody n - - echo-service\n"
    ));
    m.signal(1);
    s.wait_log(&format!(
        "service 127.0.0.1:{chrooted}/inet: configuration changed"
    ));
    assert_eq!(c2.ask("during"), (old_pid, "during".to_string()));
    assert_eq!(root_of(old_pid), s.queue());
    // ...and a new client gets a new child with the new user and no chroot.
    let mut c5 = Client::connect(chrooted);
    let (new_pid, _) = c5.ask("new");
    assert_ne!(new_pid, old_pid);
    Status::of(new_pid).assert_dropped(
        "daemon after reload",
        daemon.uid.as_raw(),
        daemon.gid.as_raw(),
    );
    assert_eq!(root_of(new_pid), PathBuf::from("/"));
    assert_eq!(
        c5.ask("?config queue_directory").1,
        s.path().join("queue").display().to_string()
    );
    let env = std::fs::read_to_string(format!("/proc/{new_pid}/environ")).unwrap();
    assert!(!env.contains("POSTERN_CHROOT"), "{env:?}");
    assert!(!s.log().contains("fatal"), "{}", s.log());
}

#[test]
fn a_missing_user_is_fatal_and_throttled() {
    if !skip_unless_root("a_missing_user_is_fatal_and_throttled") {
        return;
    }
    let port = free_port();
    let s = Setup::new(&format!(
        "127.0.0.1:{port} inet n postern-no-such-user n - - echo-service\n"
    ));
    let _m = s.start(None);
    // The client is never served: the child refuses to start.
    let c = TcpStream::connect(("127.0.0.1", port)).unwrap();
    let log = s.wait_log("bad command startup -- throttling");
    assert!(
        log.contains(
            "fatal: privilege drop: user postern-no-such-user does not exist: \
             run `postern install` to create Postern's users and groups"
        ),
        "{log}"
    );
    drop(c);
}

#[test]
fn a_master_that_is_not_root_logs_once_that_privsep_is_off() {
    let port = free_port();
    let s = Setup::new(&format!("127.0.0.1:{port} inet n - n - - echo-service\n"));
    let (as_user, name) = if common::is_root() {
        // Run master as nobody: give it the instance directory.
        let nobody = user("nobody");
        nix::unistd::chown(s.path(), Some(nobody.uid), Some(nobody.gid)).unwrap();
        (Some(nobody), "nobody".to_string())
    } else {
        let me = User::from_uid(nix::unistd::geteuid()).unwrap().unwrap();
        (None, me.name)
    };
    let m = s.start(as_user.as_ref());
    let warning = format!(
        "warning: not running as root: privilege separation is off; every service runs as {name}"
    );
    let mut c = Client::connect(port);
    let (pid, _) = c.ask("hello");
    let env = std::fs::read_to_string(format!("/proc/{pid}/environ")).unwrap();
    assert!(!env.contains("POSTERN_PRIVSEP"), "{env:?}");
    let uid = nix::unistd::geteuid().as_raw();
    let want = as_user.as_ref().map_or(uid, |u| u.uid.as_raw());
    assert_eq!(Status::of(pid).numbers("Uid"), vec![want; 4]);
    assert_eq!(Status::of(pid).field("Umask"), "0007");
    // Once at start, not again on reload.
    m.signal(1);
    s.wait_log("reload -- version");
    let log = s.log();
    assert_eq!(log.matches(&warning).count(), 1, "{log}");
    assert!(!log.contains("fatal"), "{log}");
}
