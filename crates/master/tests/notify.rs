//! systemd readiness (sd_notify) end to end: the compiled `master` binary,
//! started with `NOTIFY_SOCKET` pointing at a Unix datagram socket this test
//! owns, as systemd would for `systemd/postern.service` (Type=notify).
//! The `echo-service` example is the supervised service (built by
//! `cargo test -p postern-master`, which builds examples). Every wait is
//! bounded.

mod common;
use common::{MASTER, WAIT, examples_dir, free_port};

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Write};
use std::net::TcpStream;
use std::os::unix::net::UnixDatagram;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// kill(2) through the kill command, keeping the tests free of unsafe.
fn send_signal(pid: u32, sig: &str) {
    let st = Command::new("kill")
        .arg(format!("-{sig}"))
        .arg(pid.to_string())
        .status()
        .expect("run kill");
    assert!(st.success(), "kill -{sig} {pid} failed");
}

/// A configuration directory with one echo-service listener, and the
/// notification socket a service manager would own.
struct Setup {
    dir: tempfile::TempDir,
    port: u16,
    sock: UnixDatagram,
}

impl Setup {
    fn new() -> Setup {
        let dir = tempfile::tempdir().expect("tempdir");
        let d = dir.path();
        std::fs::write(
            d.join("main.cf"),
            format!(
                "queue_directory = {q}\ndaemon_directory = {e}\nmaillog_file = {l}\nmyhostname = test.example\n",
                q = d.join("queue").display(),
                e = examples_dir().display(),
                l = d.join("maillog").display()
            ),
        )
        .expect("write main.cf");
        let port = free_port();
        // unpriv `n`: the service runs as master's user, so this test needs
        // no service users even as root (privsep.rs tests the drop).
        std::fs::write(
            d.join("master.cf"),
            format!("127.0.0.1:{port} inet n n n - - echo-service\n"),
        )
        .expect("write master.cf");
        let sock = UnixDatagram::bind(d.join("notify.sock")).expect("bind notify socket");
        sock.set_read_timeout(Some(WAIT)).expect("timeout");
        Setup { dir, port, sock }
    }

    fn path(&self) -> &Path {
        self.dir.path()
    }

    /// Starts `master -c DIR ARGS` with NOTIFY_SOCKET set to our socket.
    fn master(&self, args: &[&str]) -> Child {
        Command::new(MASTER)
            .arg("-c")
            .arg(self.path())
            .args(args)
            .env("NOTIFY_SOCKET", self.path().join("notify.sock"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn master")
    }

    /// The next notification datagram as KEY → VALUE (panics after WAIT).
    fn next(&self) -> HashMap<String, String> {
        let mut buf = vec![0u8; 4096];
        let n = self
            .sock
            .recv(&mut buf)
            .unwrap_or_else(|e| panic!("no notification within {WAIT:?}: {e}"));
        let text = String::from_utf8_lossy(&buf[..n]).into_owned();
        assert!(
            text.ends_with('\n'),
            "datagram not newline-terminated: {text:?}"
        );
        text.lines()
            .map(|l| {
                let (k, v) = l
                    .split_once('=')
                    .unwrap_or_else(|| panic!("bad line {l:?} in {text:?}"));
                (k.to_string(), v.to_string())
            })
            .collect()
    }

    /// Whether any datagram arrives within `d`.
    fn quiet_for(&self, d: Duration) -> bool {
        self.sock.set_read_timeout(Some(d)).expect("timeout");
        let mut buf = [0u8; 4096];
        let got = self.sock.recv(&mut buf).is_ok();
        self.sock.set_read_timeout(Some(WAIT)).expect("timeout");
        !got
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.path().join("maillog")).unwrap_or_default()
    }
}

/// Kills master (and so its children, which it stops) if a test failed early.
struct Reaper(Child);

impl Drop for Reaper {
    fn drop(&mut self) {
        if self.0.try_wait().ok().flatten().is_none() {
            let _ = Command::new("kill")
                .arg("-TERM")
                .arg(self.0.id().to_string())
                .status();
            let deadline = Instant::now() + WAIT;
            while self.0.try_wait().ok().flatten().is_none() && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(50));
            }
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
}

/// One echo round trip; returns the pid of the service process that answered.
fn echo(port: u16) -> u32 {
    let s = TcpStream::connect(("127.0.0.1", port)).expect("connect to echo-service");
    s.set_read_timeout(Some(WAIT)).expect("timeout");
    let mut w = s.try_clone().expect("clone");
    w.write_all(b"hi\n").expect("write");
    let mut line = String::new();
    BufReader::new(s).read_line(&mut line).expect("read");
    let (pid, text) = line.trim_end().split_once(' ').expect("reply: PID TEXT");
    assert_eq!(text, "hi");
    pid.parse().expect("pid")
}

#[test]
fn foreground_master_reports_ready_reloading_and_stopping() {
    let s = Setup::new();
    let mut m = Reaper(s.master(&["-f"]));
    let pid = m.0.id();

    // READY=1 with MAINPID and a STATUS, sent only once it is listening.
    let ready = s.next();
    assert_eq!(
        ready.get("READY").map(String::as_str),
        Some("1"),
        "{ready:?}"
    );
    assert_eq!(ready.get("MAINPID"), Some(&pid.to_string()), "{ready:?}");
    let status = ready.get("STATUS").expect("STATUS with READY");
    assert!(status.starts_with("serving: version "), "{status}");
    assert!(
        s.log().contains("daemon started -- version"),
        "READY before master logged its start:\n{}",
        s.log()
    );
    let child = echo(s.port);

    // The service process never inherits the notification socket.
    let env = std::fs::read(format!("/proc/{child}/environ")).unwrap_or_default();
    assert!(
        !env.is_empty(),
        "cannot read the environment of service pid {child}"
    );
    assert!(
        !env.split(|b| *b == 0)
            .any(|v| v.starts_with(b"NOTIFY_SOCKET=")),
        "service process {child} inherited NOTIFY_SOCKET"
    );

    // SIGHUP: RELOADING=1 (with MONOTONIC_USEC), then READY=1 again.
    send_signal(pid, "HUP");
    let reloading = s.next();
    assert_eq!(
        reloading.get("RELOADING").map(String::as_str),
        Some("1"),
        "{reloading:?}"
    );
    let usec = reloading.get("MONOTONIC_USEC").expect("MONOTONIC_USEC");
    assert!(usec.parse::<u64>().is_ok_and(|u| u > 0), "{usec}");
    assert!(!reloading.contains_key("READY"), "{reloading:?}");
    let again = s.next();
    assert_eq!(
        again.get("READY").map(String::as_str),
        Some("1"),
        "{again:?}"
    );
    assert!(!again.contains_key("RELOADING"), "{again:?}");
    // Still serving after the reload.
    echo(s.port);

    // SIGTERM: STOPPING=1, then a clean exit.
    send_signal(pid, "TERM");
    let stopping = s.next();
    assert_eq!(
        stopping.get("STOPPING").map(String::as_str),
        Some("1"),
        "{stopping:?}"
    );
    assert_eq!(
        stopping.get("STATUS").map(String::as_str),
        Some("stopping on signal 15")
    );
    let deadline = Instant::now() + WAIT;
    let code = loop {
        if let Some(st) = m.0.try_wait().expect("try_wait") {
            break st.code();
        }
        assert!(
            Instant::now() < deadline,
            "master did not exit after SIGTERM"
        );
        std::thread::sleep(Duration::from_millis(50));
    };
    assert_eq!(code, Some(0));
    assert!(
        s.quiet_for(Duration::from_millis(200)),
        "notification after STOPPING"
    );
}

/// Stops a background master (through its pid file) if a test failed early.
struct StopOnDrop<'a>(&'a Path);

impl Drop for StopOnDrop<'_> {
    fn drop(&mut self) {
        if let Ok(Some(_)) = postern_master::running_pid(self.0) {
            let _ = postern_master::stop(self.0);
        }
    }
}

#[test]
fn background_master_does_not_notify() {
    // `master` without -f (as `postern start`) detaches: the service
    // manager that set NOTIFY_SOCKET did not start that process, so it
    // must hear nothing from it, neither at start nor at reload or stop.
    let s = Setup::new();
    let mut starter = s.master(&[]);
    let st = starter.wait().expect("wait for the starting master");
    let _stop = StopOnDrop(s.path());
    assert!(st.success(), "master (background start) failed: {st}");
    let pid = postern_master::running_pid(s.path())
        .expect("read pid file")
        .expect("background master running");
    // Listening, yet silent.
    echo(s.port);
    assert!(
        s.quiet_for(Duration::from_millis(500)),
        "background master sent a notification at start"
    );
    send_signal(pid as u32, "HUP");
    assert!(
        s.quiet_for(Duration::from_millis(500)),
        "background master sent a notification at reload"
    );
    postern_master::stop(s.path()).expect("stop the background master");
    assert!(
        s.quiet_for(Duration::from_millis(200)),
        "background master sent a notification at stop"
    );
}

#[test]
fn failing_service_shows_in_the_unit_status_until_it_recovers() {
    let s = Setup::new();
    let needed = s.path().join("needed-file");
    std::fs::write(
        s.path().join("master.cf"),
        format!(
            "127.0.0.1:{} inet n n n - - echo-service crash-unless={}\n",
            s.port,
            needed.display()
        ),
    )
    .expect("write master.cf");
    let _m = Reaper(s.master(&["-f"]));
    let ready = s.next();
    assert_eq!(ready.get("READY").map(String::as_str), Some("1"));
    // A client makes master start a process, which exits at start-up.
    let client = TcpStream::connect(("127.0.0.1", s.port)).expect("connect");
    let failing = s.next();
    assert_eq!(
        failing.get("STATUS").cloned(),
        Some(format!(
            "1 service failing: 127.0.0.1:{}/inet: fatal: {}: cannot stat: \
             No such file or directory (os error 2)",
            s.port,
            needed.display()
        )),
        "{failing:?}"
    );
    assert!(!failing.contains_key("READY"), "{failing:?}");
    // The same failure again (throttled retries) is not sent again; once
    // the file is there the next start works and the status is normal.
    std::fs::write(&needed, "").expect("create the needed file");
    let back = s.next();
    let status = back.get("STATUS").expect("STATUS");
    assert!(status.starts_with("serving: version "), "{back:?}");
    drop(client);
    echo(s.port);
}
