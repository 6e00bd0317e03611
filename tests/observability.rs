//! An administrator's first hour (issue 8): log lines that never vanish,
//! `postern status` telling the truth about services that fail at start-up,
//! and `postern check` / `postern start` naming the first-time mistakes
//! (a host name that is not fully qualified, a port another program holds,
//! TLS files that cannot be read). Real instances on loopback high ports;
//! every wait is bounded.

use postern_tests::*;
use std::io::{BufRead, BufReader, Write};
use std::net::{TcpListener, TcpStream};
use std::process::{Command, Output, Stdio};
use std::time::Duration;

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// Whether a syslog daemon takes datagrams on /dev/log here (then the
/// no-syslog behaviour cannot be seen on this machine).
fn syslog_listening() -> bool {
    std::os::unix::net::UnixDatagram::unbound()
        .and_then(|s| s.connect("/dev/log"))
        .is_ok()
}

/// Appends lines to the instance's main.cf (later lines win).
fn add_to_main_cf(inst: &Instance, text: &str) {
    let mut f = std::fs::OpenOptions::new()
        .append(true)
        .open(inst.dir.join("main.cf"))
        .unwrap();
    writeln!(f, "{text}").unwrap();
}

/// Stops a master that `postern start` put in the background, also when
/// the test fails half-way.
struct StopOnDrop<'a>(&'a Instance);

impl Drop for StopOnDrop<'_> {
    fn drop(&mut self) {
        let _ = self.0.postern(&["stop"]);
    }
}

/// An instance whose main.cf leaves maillog_file empty, without privilege
/// separation (so its fallback log is its own data_directory/postern.log,
/// also as root).
fn instance_without_maillog_file() -> Instance {
    Instance::new(Options {
        main_extra: "maillog_file =\nprivilege_separation = no".into(),
        ..Options::default()
    })
}

#[test]
fn without_syslog_a_started_mail_system_logs_to_the_fallback_file() {
    if syslog_listening() {
        eprintln!("skipped: a syslog daemon listens on /dev/log here");
        return;
    }
    let inst = instance_without_maillog_file();
    let fallback = inst.dir.join("data").join("postern.log");

    // check says beforehand where the lines will go.
    let o = inst.postern(&["check"]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(
        stderr(&o).contains(&format!(
            "postern: warning: maillog_file is empty and no syslog socket at /dev/log: \
             `postern start` will log to {}",
            fallback.display()
        )),
        "{}",
        stderr(&o)
    );

    // start says it once, on its stderr.
    let o = inst.postern(&["start"]);
    let _stop = StopOnDrop(&inst);
    assert!(o.status.success(), "start: {}{}", stdout(&o), stderr(&o));
    assert!(
        stderr(&o).contains(&format!(
            "postern: warning: no syslog socket at /dev/log: logging to {}",
            fallback.display()
        )),
        "{}",
        stderr(&o)
    );
    assert!(stdout(&o).contains("the mail system is running"));

    // master's lines and its children's are in that file.
    let mut c = inst.smtp();
    assert_eq!(c.cmd("QUIT").code, 221);
    let log = || std::fs::read_to_string(&fallback).unwrap_or_default();
    let found = wait_until(Duration::from_secs(20), || {
        let l = log();
        l.contains("postern/smtpd[") && l.contains("disconnect from")
    });
    let text = log();
    assert!(found, "no smtpd lines in {}:\n{text}", fallback.display());
    assert!(
        text.contains("postern/master[") && text.contains("daemon started -- version"),
        "{text}"
    );
    assert!(
        text.contains("warning: no syslog socket at /dev/log: logging to"),
        "{text}"
    );
    let o = inst.postern(&["stop"]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(log().contains("terminating on signal 15"), "{}", log());
}

#[test]
fn without_syslog_a_foreground_master_logs_to_its_stderr() {
    if syslog_listening() {
        eprintln!("skipped: a syslog daemon listens on /dev/log here");
        return;
    }
    let mut inst = instance_without_maillog_file();
    let mut child = Command::new(bin_dir().join("master"))
        .arg("-c")
        .arg(&inst.dir)
        .arg("-f")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let err = child.stderr.take().unwrap();
    inst.master = Some(child); // stopped when inst is dropped
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(err).lines() {
            let Ok(line) = line else { break };
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let mut seen = Vec::new();
    let mut wait_line = |what: &str| {
        while !seen.iter().any(|l: &String| l.contains(what)) {
            match rx.recv_timeout(Duration::from_secs(20)) {
                Ok(l) => seen.push(l),
                Err(_) => panic!("no stderr line with {what:?}; got:\n{}", seen.join("\n")),
            }
        }
        seen.clone()
    };
    let lines = wait_line("daemon started -- version");
    assert!(
        lines.iter().any(|l| l.contains("postern/master[",)
            && l.ends_with("warning: no syslog socket at /dev/log: logging to standard error")),
        "{lines:?}"
    );
    // The children write to the same stderr.
    let mut c = Smtp::connect(std::net::SocketAddr::from(([127, 0, 0, 1], inst.smtp_port)));
    assert_eq!(c.cmd("QUIT").code, 221);
    let lines = wait_line("disconnect from");
    assert!(
        lines
            .iter()
            .any(|l| l.contains("postern/smtpd[") && l.contains("disconnect from")),
        "{lines:?}"
    );
    assert!(!inst.dir.join("data").join("postern.log").exists());
}

#[test]
fn status_names_a_service_failing_at_start_up_until_it_is_fixed() {
    let port = free_port();
    let tls = |name: &str| format!("{{d}}/tls/{name}");
    let line = Instance::master_cf_text(&[0]).lines().count() + 1;
    let mut inst = Instance::new(Options {
        master_extra: format!(
            "127.0.0.1:{port} inet n - n - - smtpd -o smtpd_tls_wrappermode=yes \
             -o smtpd_tls_cert_file={} -o smtpd_tls_key_file={}\n",
            tls("cert.pem"),
            tls("key.pem")
        ),
        ..Options::default()
    });
    // The certificate's path is in the instance directory, not known before.
    let mcf = std::fs::read_to_string(inst.dir.join("master.cf"))
        .unwrap()
        .replace("{d}", &inst.dir.display().to_string());
    std::fs::write(inst.dir.join("master.cf"), mcf).unwrap();
    inst.start();

    let o = inst.postern(&["status"]);
    assert!(o.status.success(), "{}{}", stdout(&o), stderr(&o));

    // A client: master starts smtpd, which cannot read its certificate.
    let _client = TcpStream::connect(("127.0.0.1", port)).unwrap();
    let want = format!(
        "postern: service 127.0.0.1:{port}/inet (master.cf line {line}) is failing at start-up"
    );
    let mut last = None;
    let failed = wait_until(Duration::from_secs(20), || {
        let o = inst.postern(&["status"]);
        let done = stderr(&o).contains(&want);
        last = Some(o);
        done
    });
    let o = last.unwrap();
    assert!(failed, "{}{}\n{}", stdout(&o), stderr(&o), inst.log());
    assert_eq!(o.status.code(), Some(1));
    assert!(
        stdout(&o).starts_with("postern: the mail system is running: PID: "),
        "{}",
        stdout(&o)
    );
    let report = stderr(&o);
    let report = report.lines().find(|l| l.starts_with(&want)).unwrap();
    let cert = inst.dir.join("tls").join("cert.pem");
    assert!(
        report.contains(": fatal: ") && report.contains(&cert.display().to_string()),
        "{report}"
    );
    assert!(
        report.contains("; throttled, next try in ")
            || report.ends_with("; next try when a client or wakeup needs it"),
        "{report}"
    );
    // The same fatal line is in the log, where smtpd wrote it.
    let fatal = report.split(": fatal: ").nth(1).unwrap();
    let fatal = fatal.split("; ").next().unwrap();
    assert!(inst.log().contains(&format!("fatal: {fatal}")), "{fatal}");

    // check says so too (and why: the file cannot be read).
    let o = inst.postern(&["check"]);
    let err = stderr(&o);
    assert!(
        err.contains(&format!(
            "postern: warning: service 127.0.0.1:{port}/inet (master.cf line {line}) is failing at start-up"
        )),
        "{err}"
    );
    assert!(
        err.contains(&format!(
            "postern: fatal: {}:{line}: service 127.0.0.1:{port}/inet: smtpd_tls_cert_file {}: \
             cannot read: No such file or directory",
            inst.dir.join("master.cf").display(),
            cert.display()
        )),
        "{err}"
    );
    assert!(!o.status.success());

    // Fixed: the next start-up works and status is clean again.
    let o = inst.postern(&["tls", "selfsigned"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let mut last = None;
    let healthy = wait_until(Duration::from_secs(20), || {
        let o = inst.postern(&["status"]);
        let ok = o.status.success();
        last = Some(o);
        ok
    });
    let o = last.unwrap();
    assert!(healthy, "{}{}\n{}", stdout(&o), stderr(&o), inst.log());
    assert!(stderr(&o).is_empty(), "{}", stderr(&o));
    assert!(
        inst.log().contains(&format!(
            "service 127.0.0.1:{port}/inet: started normally after"
        )),
        "{}",
        inst.log()
    );
    inst.stop();
}

#[test]
fn a_port_in_use_stops_check_and_start_with_the_address() {
    let inst = Instance::new(Options::default());
    inst.install();
    let port = inst.smtp_port;
    let squatter = TcpListener::bind(("127.0.0.1", port)).unwrap();
    let master_cf = inst.dir.join("master.cf");
    let want = format!(
        "{}:2: service 127.0.0.1:{port}/inet: cannot bind 127.0.0.1:{port}: Address already in use",
        master_cf.display()
    );

    let o = inst.postern(&["check"]);
    assert!(!o.status.success());
    assert!(
        stderr(&o).contains(&format!(
            "postern: fatal: {want}: another program is listening there"
        )),
        "{}",
        stderr(&o)
    );

    let o = inst.postern(&["start"]);
    let _stop = StopOnDrop(&inst);
    assert_eq!(o.status.code(), Some(1), "{}{}", stdout(&o), stderr(&o));
    assert!(stderr(&o).contains(&want), "{}", stderr(&o));
    assert!(!stdout(&o).contains("running"), "{}", stdout(&o));
    assert!(!inst.postern(&["status"]).status.success());

    // master itself (started without `postern start`'s check) refuses too.
    let o = Command::new(bin_dir().join("master"))
        .arg("-c")
        .arg(&inst.dir)
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
    assert!(
        stderr(&o).contains(&format!(
            "service 127.0.0.1:{port}/inet: cannot bind 127.0.0.1:{port}: "
        )),
        "{}",
        stderr(&o)
    );
    assert!(!inst.postern(&["status"]).status.success());

    // Once the port is free, start works, and while the mail system runs
    // its own listeners are not "another program".
    drop(squatter);
    let o = inst.postern(&["start"]);
    assert!(
        o.status.success(),
        "{}{}\n{}",
        stdout(&o),
        stderr(&o),
        inst.log()
    );
    let o = inst.postern(&["check"]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(!stderr(&o).contains("cannot bind"), "{}", stderr(&o));
    let o = inst.postern(&["stop"]);
    assert!(o.status.success(), "{}", stderr(&o));
}

#[test]
fn check_warns_about_a_host_name_that_is_not_fully_qualified() {
    let inst = Instance::new(Options::default());
    let o = inst.postern(&["check"]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(!stderr(&o).contains("myhostname"), "{}", stderr(&o));
    add_to_main_cf(&inst, "myhostname = mailhost");
    let o = inst.postern(&["check"]);
    assert!(
        o.status.success(),
        "a warning, not an error: {}",
        stderr(&o)
    );
    assert!(
        stderr(&o).contains(
            "postern: warning: myhostname = mailhost is not a fully qualified domain name"
        ),
        "{}",
        stderr(&o)
    );
}

#[test]
fn check_names_tls_files_that_cannot_be_read() {
    let inst = Instance::new(Options::default());
    let cert = inst.dir.join("no-such-cert.pem");
    add_to_main_cf(
        &inst,
        &format!(
            "smtpd_tls_cert_file = {}\nsmtpd_tls_key_file = {}",
            cert.display(),
            inst.dir.display()
        ),
    );
    let o = inst.postern(&["check"]);
    assert!(!o.status.success());
    let err = stderr(&o);
    let at = format!(
        "postern: fatal: {}:2: service 127.0.0.1:{}/inet: ",
        inst.dir.join("master.cf").display(),
        inst.smtp_port
    );
    assert!(
        err.contains(&format!(
            "{at}smtpd_tls_cert_file {}: cannot read: No such file or directory",
            cert.display()
        )),
        "{err}"
    );
    assert!(
        err.contains(&format!(
            "{at}smtpd_tls_key_file {}: cannot read: Is a directory",
            inst.dir.display()
        )),
        "{err}"
    );
    // start refuses for the same reason, before anything runs.
    let o = inst.postern(&["start"]);
    let _stop = StopOnDrop(&inst);
    assert!(!o.status.success());
    assert!(stderr(&o).contains("smtpd_tls_cert_file"), "{}", stderr(&o));
    assert!(!inst.postern(&["status"]).status.success());
}
