//! End-to-end tests of master with real processes: the compiled `master`
//! binary supervising the `echo-service` and `wakeup-counter` examples
//! (built by `cargo test -p postern-master`, which builds examples).
//! Every wait is bounded. As root, master separates privileges: the
//! examples then run as `nobody` (main.cf mail_owner) in group postern-ipc,
//! which these tests create when missing (tests/privsep.rs checks the drop).

mod common;
use common::{MASTER, WAIT, examples_dir, free_port, wait_for};

use std::io::{BufRead, BufReader, Write};
use std::net::{TcpListener, TcpStream};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

struct Setup {
    dir: tempfile::TempDir,
}

impl Setup {
    fn new(master_cf: &str) -> Setup {
        if common::is_root() {
            common::ensure_groups();
        }
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        std::fs::write(
            d.join("main.cf"),
            format!(
                "queue_directory = {q}\ndaemon_directory = {e}\nmaillog_file = {l}\nmyhostname = test.example\n\
                 service_throttle_time = 4s\nmail_owner = nobody\n",
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

    /// Runs `master -c DIR -f` as a child process.
    fn master(&self) -> Child {
        Command::new(MASTER)
            .arg("-c")
            .arg(self.path())
            .arg("-f")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap()
    }

    fn start(&self) -> Running {
        let child = self.master();
        self.wait_log("daemon started -- version 0.1.0");
        Running { child }
    }
}

struct Running {
    child: Child,
}

impl Running {
    fn pid(&self) -> i32 {
        self.child.id() as i32
    }

    fn signal(&self, sig: i32) {
        assert_eq!(unsafe_free_kill(self.pid(), sig), 0);
    }

    /// Waits (bounded) for master to exit; returns its exit code.
    fn wait_exit(&mut self) -> Option<i32> {
        wait_for("master to exit", || self.child.try_wait().unwrap()).code()
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        if self.child.try_wait().ok().flatten().is_none() {
            unsafe_free_kill(self.pid(), 15);
            let deadline = Instant::now() + WAIT;
            while self.child.try_wait().ok().flatten().is_none() && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(50));
            }
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// kill(2) through the kill command, keeping the tests free of unsafe.
fn unsafe_free_kill(pid: i32, sig: i32) -> i32 {
    let st = Command::new("kill")
        .arg(format!("-{sig}"))
        .arg(pid.to_string())
        .status()
        .unwrap();
    if st.success() { 0 } else { 1 }
}

fn alive(pid: u32) -> bool {
    // A zombie still has /proc/PID; treat it as gone.
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(s) => !s
            .rsplit(')')
            .next()
            .unwrap_or("")
            .trim_start()
            .starts_with('Z'),
        Err(_) => false,
    }
}

fn parent_of(pid: u32) -> Option<i32> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    s.rsplit(')')
        .next()?
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()
}

/// A line-oriented client of the echo service.
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

    /// Sends a line, returns (pid, echoed text).
    fn echo(&mut self, line: &str) -> (u32, String) {
        self.w.write_all(format!("{line}\n").as_bytes()).unwrap();
        self.read_reply()
    }

    fn read_reply(&mut self) -> (u32, String) {
        let mut reply = String::new();
        self.r.read_line(&mut reply).unwrap();
        let (pid, text) = reply
            .trim_end()
            .split_once(' ')
            .unwrap_or_else(|| panic!("bad reply {reply:?}"));
        (pid.parse().unwrap(), text.to_string())
    }

    /// Whether a reply arrives within `d`.
    fn reply_within(&mut self, d: Duration) -> bool {
        self.w.set_read_timeout(Some(d)).unwrap();
        let mut buf = String::new();
        let got = matches!(self.r.read_line(&mut buf), Ok(n) if n > 0);
        self.w.set_read_timeout(Some(WAIT)).unwrap();
        if got {
            // Put nothing back: callers only use this as a probe before closing.
        }
        got
    }
}

/// The inode of the LISTEN socket on 127.0.0.1:port (from /proc/net/tcp).
fn listen_inode(port: u16) -> Option<String> {
    let tcp = std::fs::read_to_string("/proc/net/tcp").ok()?;
    let want = format!("0100007F:{port:04X}");
    tcp.lines().skip(1).find_map(|l| {
        let f: Vec<&str> = l.split_whitespace().collect();
        (f.len() > 9 && f[1] == want && f[3] == "0A").then(|| f[9].to_string())
    })
}

#[test]
fn client_gets_echo_from_a_child_with_the_documented_descriptors() {
    let port = free_port();
    let s = Setup::new(&format!("127.0.0.1:{port} inet n - n - - echo-service\n"));
    let m = s.start();
    let mut c = Client::connect(port);
    let (pid, text) = c.echo("hello");
    assert_eq!(text, "hello");
    assert_eq!(parent_of(pid), Some(m.pid()));
    let link = |fd: u32| {
        std::fs::read_link(format!("/proc/{pid}/fd/{fd}"))
            .unwrap()
            .display()
            .to_string()
    };
    assert_eq!(link(0), "/dev/null");
    assert_eq!(link(1), "/dev/null");
    assert_eq!(link(2), s.path().join("maillog").display().to_string());
    assert!(link(3).starts_with("socket:"), "{}", link(3));
    assert!(link(4).starts_with("pipe:"), "{}", link(4));
    let env = std::fs::read(format!("/proc/{pid}/environ")).unwrap();
    let env: Vec<String> = env
        .split(|b| *b == 0)
        .map(|v| String::from_utf8_lossy(v).into_owned())
        .collect();
    assert!(env.contains(&format!(
        "MAIL_CONFIG={}",
        std::fs::canonicalize(s.path()).unwrap().display()
    )));
    assert!(env.contains(&"PATH=/usr/bin:/bin".to_string()));
    assert!(env.contains(&"POSTERN_GENERATION=0".to_string()));
    assert!(!env.iter().any(|e| e.starts_with("HOME=")), "{env:?}");
    let argv = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap();
    let argv: Vec<&[u8]> = argv.split(|b| *b == 0).collect();
    assert_eq!(
        &argv[1..5],
        &[
            b"-n".as_slice(),
            format!("127.0.0.1:{port}").as_bytes(),
            b"-t",
            b"inet"
        ]
    );
    let pidfile = std::fs::read_to_string(s.path().join("queue/pid/master.pid")).unwrap();
    assert_eq!(pidfile, format!("{:>10}\n", m.pid()));
    // Every log line has the Postfix shape.
    let log = s.log();
    let line = log.lines().next().unwrap();
    assert!(
        line.contains(&format!(
            " test postern/master[{}]: daemon started -- version 0.1.0, configuration ",
            m.pid()
        )),
        "{line}"
    );
}

#[test]
fn maxproc_caps_children_and_the_extra_client_waits() {
    let port = free_port();
    let s = Setup::new(&format!("127.0.0.1:{port} inet n - n - 2 echo-service\n"));
    let _m = s.start();
    let mut a = Client::connect(port);
    let (pa, _) = a.echo("a");
    let mut b = Client::connect(port);
    let (pb, _) = b.echo("b");
    assert_ne!(pa, pb);
    let mut c = Client::connect(port);
    c.w.write_all(b"c\n").unwrap();
    assert!(
        !c.reply_within(Duration::from_millis(1500)),
        "third client served beyond maxproc 2"
    );
    drop(a); // frees a process, which takes the waiting client
    let (pc, text) = c.read_reply();
    assert_eq!(text, "c");
    assert!(
        pc == pa || pc == pb,
        "third client served by a third process {pc}"
    );
}

#[test]
fn killed_child_is_logged_and_replaced() {
    let port = free_port();
    let s = Setup::new(&format!("127.0.0.1:{port} inet n - n - - echo-service\n"));
    let _m = s.start();
    let mut a = Client::connect(port);
    let (pa, _) = a.echo("a");
    std::thread::sleep(Duration::from_millis(1200)); // ran long: no throttle
    unsafe_free_kill(pa as i32, 9);
    let prog = examples_dir().join("echo-service");
    s.wait_log(&format!(
        "warning: process {} pid {pa} killed by signal 9",
        prog.display()
    ));
    let mut b = Client::connect(port);
    let (pb, text) = b.echo("again");
    assert_eq!(text, "again");
    assert_ne!(pa, pb);
    assert!(!s.log().contains("throttling"));
}

#[test]
fn failing_start_up_is_throttled() {
    let port = free_port();
    let s = Setup::new(&format!(
        "127.0.0.1:{port} inet n - n - - echo-service crash\n"
    ));
    let _m = s.start();
    let _c = Client::connect(port);
    let log = s.wait_log("bad command startup -- throttling");
    let prog = examples_dir().join("echo-service");
    assert!(log.contains("fatal: told to crash at start-up"), "{log}");
    assert!(
        log.contains(&format!("warning: process {} pid ", prog.display())),
        "{log}"
    );
    assert!(log.contains(" exit status 1"), "{log}");
    assert!(
        log.contains(&format!(
            "warning: {}: bad command startup -- throttling",
            prog.display()
        )),
        "{log}"
    );
    // Throttled: 1 s, then 2 s, ... not a tight respawn loop.
    std::thread::sleep(Duration::from_secs(2));
    let starts = s.log().matches("told to crash").count();
    assert!((1..=3).contains(&starts), "{starts} start-ups in ~2 s");
}

#[test]
fn reload_adds_and_removes_services_without_dropping_connections() {
    let (p1, p2) = (free_port(), free_port());
    let one = format!("127.0.0.1:{p1} inet n - n - - echo-service\n");
    let s = Setup::new(&one);
    let m = s.start();
    let mut c1 = Client::connect(p1);
    let (pid1, _) = c1.echo("before");
    let inode = listen_inode(p1).expect("listener in /proc/net/tcp");
    s.write_master_cf(&format!(
        "{one}127.0.0.1:{p2} inet n - n - - echo-service\n"
    ));
    m.signal(1);
    s.wait_log("reload -- version 0.1.0, configuration");
    let mut c2 = Client::connect(p2);
    assert_eq!(c2.echo("new").1, "new");
    // The open connection still works, served by the same process.
    assert_eq!(c1.echo("after"), (pid1, "after".to_string()));
    // The first listener kept its socket, and new clients are served.
    assert_eq!(listen_inode(p1), Some(inode));
    let mut c3 = Client::connect(p1);
    assert_eq!(c3.echo("x").1, "x");
    drop(c2);
    // Remove the second service: its port closes.
    s.write_master_cf(&one);
    m.signal(1);
    wait_for("port 2 to close", || {
        TcpStream::connect(("127.0.0.1", p2)).is_err().then_some(())
    });
    assert_eq!(c1.echo("still").1, "still");
    assert!(
        s.log()
            .contains(&format!("service 127.0.0.1:{p2}/inet: removed"))
    );
}

#[test]
fn reload_with_bad_config_keeps_running() {
    let p1 = free_port();
    let s = Setup::new(&format!("127.0.0.1:{p1} inet n - n - - echo-service\n"));
    let m = s.start();
    s.write_master_cf("bad line\n");
    m.signal(1);
    let log = s.wait_log("keeping the old configuration");
    assert!(log.contains("master.cf:1:"), "{log}");
    let mut c = Client::connect(p1);
    assert_eq!(c.echo("ok").1, "ok");
}

#[test]
fn wakeup_service_receives_triggers() {
    let s = Setup::new("counter unix n - n 1 1 wakeup-counter\n");
    let m = s.start();
    let log = s.wait_log("wakeup 3");
    // One long-running process, never a second one.
    let pids: std::collections::BTreeSet<&str> = log
        .lines()
        .filter(|l| l.contains("postern/wakeup-counter["))
        .filter_map(|l| l.split("wakeup-counter[").nth(1)?.split(']').next())
        .collect();
    assert_eq!(pids.len(), 1, "{log}");
    let pid: u32 = pids.iter().next().unwrap().parse().unwrap();
    assert_eq!(parent_of(pid), Some(m.pid()));
    assert!(s.path().join("queue/public/counter").exists());
}

#[test]
fn sigterm_stops_master_and_every_child() {
    let port = free_port();
    let s = Setup::new(&format!(
        "127.0.0.1:{port} inet n - n - - echo-service\ncounter unix n - n 1 1 wakeup-counter\n"
    ));
    let mut m = s.start();
    let mut a = Client::connect(port);
    let mut b = Client::connect(port);
    let (pa, _) = a.echo("a");
    let (pb, _) = b.echo("b");
    s.wait_log("wakeup 1");
    m.signal(15);
    assert_eq!(m.wait_exit(), Some(0));
    let log = s.log();
    assert!(log.contains("terminating on signal 15"), "{log}");
    for pid in [pa, pb] {
        assert!(!alive(pid), "child {pid} still alive");
    }
    // No process of ours is left with master as its parent.
    let left: Vec<u32> = std::fs::read_dir("/proc")
        .unwrap()
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse().ok())
        .filter(|&p| parent_of(p) == Some(m.pid()) && alive(p))
        .collect();
    assert!(left.is_empty(), "{left:?}");
    assert!(!s.path().join("queue/pid/master.pid").exists());
    assert!(TcpStream::connect(("127.0.0.1", port)).is_err());
}

#[test]
fn second_master_refuses_to_start() {
    let port = free_port();
    let s = Setup::new(&format!("127.0.0.1:{port} inet n - n - - echo-service\n"));
    let _m = s.start();
    let mut second = Running { child: s.master() };
    assert_eq!(second.wait_exit(), Some(1));
    s.wait_log("fatal: the Postern mail system is already running");
    let mut c = Client::connect(port);
    assert_eq!(c.echo("first still serves").1, "first still serves");
}

#[test]
fn bad_master_cf_line_stops_start_up_naming_file_and_line() {
    let s = Setup::new("# comment\nsmtp inet n - n\n");
    let mut m = Running { child: s.master() };
    assert_eq!(m.wait_exit(), Some(1));
    let log = s.log();
    let want = format!(
        "fatal: {}:2: ",
        std::fs::canonicalize(s.path())
            .unwrap()
            .join("master.cf")
            .display()
    );
    assert!(log.contains(&want), "{log}");
    assert!(!s.path().join("queue/pid/master.pid").exists());
}

#[test]
fn bind_failure_names_service_and_line() {
    let busy = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = busy.local_addr().unwrap().port();
    let s = Setup::new(&format!(
        "# c\n\n127.0.0.1:{port} inet n - n - - echo-service\n"
    ));
    let mut m = Running { child: s.master() };
    assert_eq!(m.wait_exit(), Some(1));
    let log = s.log();
    assert!(
        log.contains(&format!(
            "master.cf:3: service 127.0.0.1:{port}/inet: cannot bind 127.0.0.1:{port}: "
        )),
        "{log}"
    );
}

#[test]
fn library_start_reload_stop() {
    let port = free_port();
    let s = Setup::new(&format!("127.0.0.1:{port} inet n - n - - echo-service\n"));
    assert_eq!(postern_master::running_pid(s.path()).unwrap(), None);
    postern_master::start_with(s.path(), Path::new(MASTER)).unwrap();
    let pid = postern_master::running_pid(s.path())
        .unwrap()
        .expect("running");
    let err = postern_master::start_with(s.path(), Path::new(MASTER)).unwrap_err();
    assert!(err.contains("already running"), "{err}");
    let mut c = Client::connect(port);
    assert_eq!(c.echo("hi").1, "hi");
    postern_master::reload(s.path()).unwrap();
    s.wait_log("reload -- version 0.1.0");
    drop(c);
    postern_master::stop(s.path()).unwrap();
    assert_eq!(postern_master::running_pid(s.path()).unwrap(), None);
    assert!(!alive(pid as u32));
    assert!(
        postern_master::stop(s.path())
            .unwrap_err()
            .contains("not running")
    );
    // A start-up failure comes back as master's reason.
    s.write_master_cf("broken\n");
    let err = postern_master::start_with(s.path(), Path::new(MASTER)).unwrap_err();
    assert!(err.contains("master.cf:1:"), "{err}");
}

#[test]
fn reload_of_a_changed_service_drains_old_children_and_keeps_the_socket() {
    let port = free_port();
    let s = Setup::new(&format!("127.0.0.1:{port} inet n - n - - echo-service\n"));
    let m = s.start();
    let mut old = Client::connect(port);
    let (old_pid, _) = old.echo("before");
    let inode = listen_inode(port).expect("listener in /proc/net/tcp");
    s.write_master_cf(&format!(
        "127.0.0.1:{port} inet n - n - - echo-service -o max_use=50\n"
    ));
    m.signal(1);
    s.wait_log(&format!(
        "service 127.0.0.1:{port}/inet: configuration changed"
    ));
    // The busy old-generation child finishes its client...
    assert_eq!(old.echo("during"), (old_pid, "during".to_string()));
    // ...while new clients get a new-generation child with the new args.
    let mut new = Client::connect(port);
    let (new_pid, _) = new.echo("new");
    assert_ne!(new_pid, old_pid);
    let argv = std::fs::read_to_string(format!("/proc/{new_pid}/cmdline")).unwrap();
    assert!(argv.contains("max_use=50"), "{argv:?}");
    let env = std::fs::read_to_string(format!("/proc/{new_pid}/environ")).unwrap();
    assert!(env.contains("POSTERN_GENERATION=1"), "{env:?}");
    assert_eq!(listen_inode(port), Some(inode));
    // Once its client leaves, the old child exits (it got SIGHUP).
    drop(old);
    wait_for("old child to exit", || (!alive(old_pid)).then_some(()));
    assert!(!s.log().contains("warning: process"), "{}", s.log());
}

#[test]
fn children_finish_and_exit_when_master_is_killed() {
    let port = free_port();
    let s = Setup::new(&format!(
        "127.0.0.1:{port} inet n - n - - echo-service\ncounter unix n - n 1 1 wakeup-counter\n"
    ));
    let mut m = s.start();
    let mut c = Client::connect(port);
    let (pid, _) = c.echo("a");
    let log = s.wait_log("wakeup 1");
    let counter: u32 = log
        .lines()
        .find_map(|l| {
            l.split("wakeup-counter[")
                .nth(1)?
                .split(']')
                .next()?
                .parse()
                .ok()
        })
        .unwrap();
    m.signal(9);
    m.wait_exit();
    // The event service stops; the busy one finishes its client first.
    wait_for("wakeup-counter to exit", || (!alive(counter)).then_some(()));
    assert_eq!(c.echo("b"), (pid, "b".to_string()));
    drop(c);
    wait_for("echo child to exit", || (!alive(pid)).then_some(()));
}

/// The failing services master publishes in its status file, as `postern
/// status` reads them: (service, reason, failures).
fn failing(s: &Setup) -> Vec<(String, String, u32)> {
    postern_master::read_status(s.path())
        .unwrap()
        .map(|st| {
            st.failing()
                .map(|h| {
                    let f = h.failure.as_ref().unwrap();
                    (h.service.clone(), f.reason.clone(), f.failures)
                })
                .collect()
        })
        .unwrap_or_default()
}

#[test]
fn start_up_failure_is_published_with_its_fatal_line_until_it_is_fixed() {
    let (p1, p2) = (free_port(), free_port());
    let s = Setup::new("");
    let needed = s.path().join("needed-file");
    s.write_master_cf(&format!(
        "# c\n127.0.0.1:{p1} inet n - n - - echo-service crash-unless={n}\n\
         127.0.0.1:{p2} inet n - n - - echo-service -o max_use=lots\n",
        n = needed.display()
    ));
    let _m = s.start();
    // Healthy until a process is needed: the file lists both, none failing.
    let st = wait_for("the status file", || {
        postern_master::read_status(s.path()).unwrap()
    });
    assert_eq!(st.services.len(), 2, "{st:?}");
    assert_eq!(st.services[0].line, 2);
    assert!(failing(&s).is_empty());
    // Clients make master start processes, which exit at start-up: one in
    // its init (after the skeleton took the status pipe), one on a bad -o
    // value (before: the report goes out on fd 4 itself).
    let mut c1 = Client::connect(p1);
    let _c2 = Client::connect(p2);
    let want1 = format!(
        "fatal: {}: cannot stat: No such file or directory (os error 2)",
        needed.display()
    );
    let got = wait_for("both services to be reported failing", || {
        let f = failing(&s);
        (f.len() == 2).then_some(f)
    });
    assert_eq!(got[0].0, format!("127.0.0.1:{p1}/inet"));
    assert_eq!(got[0].1, want1);
    assert_eq!(got[1].0, format!("127.0.0.1:{p2}/inet"));
    assert!(
        got[1].1.starts_with("fatal: ") && got[1].1.contains("max_use = lots"),
        "{got:?}"
    );
    let st = postern_master::read_status(s.path()).unwrap().unwrap();
    let line = st.services[0].describe(0).unwrap();
    assert!(
        line.starts_with(&format!(
            "service 127.0.0.1:{p1}/inet (master.cf line 2) is failing at start-up"
        )) && line.contains(&want1),
        "{line}"
    );
    // Fixed: the waiting client is served once the throttle lets master try
    // again, and the service is healthy again.
    std::fs::write(&needed, "").unwrap();
    assert_eq!(c1.echo("back").1, "back");
    wait_for("the first service to be healthy again", || {
        let f = failing(&s);
        (f.len() == 1 && f[0].0 == format!("127.0.0.1:{p2}/inet")).then_some(())
    });
    assert!(
        s.log().contains(&format!(
            "service 127.0.0.1:{p1}/inet: started normally after "
        )),
        "{}",
        s.log()
    );
}

#[test]
fn status_file_goes_away_with_master() {
    let port = free_port();
    let s = Setup::new(&format!("127.0.0.1:{port} inet n - n - - echo-service\n"));
    let mut m = s.start();
    wait_for("the status file", || {
        postern_master::read_status(s.path()).unwrap()
    });
    m.signal(15);
    assert_eq!(m.wait_exit(), Some(0));
    assert!(!postern_master::status_file_path(&s.path().join("queue")).exists());
    assert_eq!(postern_master::read_status(s.path()).unwrap(), None);
}
