//! The postern command: config, check, start/stop, and the demo.

use postern_tests::*;
use std::process::Command;
use std::time::Duration;

fn stdout(o: &std::process::Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn stderr(o: &std::process::Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

#[test]
fn config_prints_effective_values_like_postconf() {
    let inst = Instance::new(Options::default());
    let o = inst.postern(&["config", "-n"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let out = stdout(&o);
    assert!(out.contains("myhostname = mail.example.test\n"), "{out}");
    assert!(
        !out.contains("smtpd_timeout"),
        "-n prints only what main.cf sets: {out}"
    );
    let o = inst.postern(&["config", "smtpd_timeout", "mydestination"]);
    assert_eq!(
        stdout(&o),
        "smtpd_timeout = 300s\nmydestination = $mydomain, $myhostname, localhost\n"
    );
    let o = inst.postern(&["config", "-x", "mydestination"]);
    assert_eq!(
        stdout(&o),
        "mydestination = example.test, mail.example.test, localhost\n"
    );
    let o = inst.postern(&["config", "no_such_parameter"]);
    assert!(!o.status.success());
    assert!(
        stderr(&o).contains("no_such_parameter: unknown parameter"),
        "{}",
        stderr(&o)
    );
}

#[test]
fn check_names_file_line_and_reason() {
    let inst = Instance::new(Options::default());
    let o = inst.postern(&["check"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let main = std::fs::read_to_string(inst.dir.join("main.cf")).unwrap();
    let lines = main.lines().count();
    std::fs::write(
        inst.dir.join("main.cf"),
        format!("{main}this line is wrong\n"),
    )
    .unwrap();
    let o = inst.postern(&["check"]);
    assert!(!o.status.success());
    let want = format!("{}:{}:", inst.dir.join("main.cf").display(), lines + 1);
    assert!(stderr(&o).contains(&want), "want {want} in {}", stderr(&o));
    std::fs::write(
        inst.dir.join("main.cf"),
        format!("{main}smtpd_timeout = soon\n"),
    )
    .unwrap();
    let o = inst.postern(&["check"]);
    assert!(!o.status.success());
    assert!(stderr(&o).contains("smtpd_timeout"), "{}", stderr(&o));
    std::fs::write(inst.dir.join("main.cf"), &main).unwrap();
    std::fs::write(
        inst.dir.join("master.cf"),
        "smtp inet n - n - - smtpd\nbroken line\n",
    )
    .unwrap();
    let o = inst.postern(&["check"]);
    assert!(!o.status.success());
    assert!(
        stderr(&o).contains(&format!("{}:2:", inst.dir.join("master.cf").display())),
        "{}",
        stderr(&o)
    );
}

#[test]
fn unknown_parameters_warn_with_file_and_line() {
    let inst = Instance::new(Options {
        main_extra: "smptd_timeout = 10s".into(),
        ..Options::default()
    });
    let o = inst.postern(&["check"]);
    assert!(o.status.success());
    assert!(
        stderr(&o).contains("unused parameter: smptd_timeout=10s"),
        "{}",
        stderr(&o)
    );
}

#[test]
fn start_status_stop() {
    let inst = Instance::new(Options::default());
    inst.install();
    let o = inst.postern(&["start"]);
    assert!(
        o.status.success(),
        "start: {}{}\n{}",
        stdout(&o),
        stderr(&o),
        inst.log()
    );
    assert!(wait_until(Duration::from_secs(10), || {
        std::net::TcpStream::connect(("127.0.0.1", inst.smtp_port)).is_ok()
    }));
    let o = inst.postern(&["status"]);
    assert!(
        o.status.success() && stdout(&o).contains("is running"),
        "{}",
        stdout(&o)
    );
    let o = inst.postern(&["start"]);
    assert!(!o.status.success(), "a second start must fail");
    let o = inst.postern(&["stop"]);
    assert!(o.status.success(), "stop: {}", stderr(&o));
    assert!(std::net::TcpStream::connect(("127.0.0.1", inst.smtp_port)).is_err());
    let o = inst.postern(&["status"]);
    assert!(!o.status.success());
    assert!(wait_until(Duration::from_secs(10), || inst
        .pids_of("smtpd")
        .is_empty()
        && inst.pids_of("qmgr").is_empty()));
}

#[test]
fn demo_creates_a_working_instance_and_reuses_it() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("demo");
    // The demo's fixed port may be taken on a busy machine: then skip.
    if std::net::TcpListener::bind("127.0.0.1:1025").is_err() {
        eprintln!("port 1025 busy; skipping");
        return;
    }
    let mut child = Command::new(bin_dir().join("postern"))
        .arg("demo")
        .arg(&dir)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let up = wait_until(Duration::from_secs(20), || {
        std::net::TcpStream::connect("127.0.0.1:1025").is_ok()
    });
    if !up {
        let _ = child.kill();
        let o = child.wait_with_output().unwrap();
        panic!("demo did not start: {}{}", stdout(&o), stderr(&o));
    }
    let r = Smtp::send_one(
        "127.0.0.1:1025".parse().unwrap(),
        "you@example.test",
        &["demo@example.test"],
        b"Subject: hello\r\n\r\nIt works.\r\n",
    );
    queued_id(&r);
    let new = dir.join("mail/demo/Maildir/new");
    assert!(wait_until(Duration::from_secs(20), || std::fs::read_dir(
        &new
    )
    .map(|d| d.count() == 1)
    .unwrap_or(false)));
    signal(child.id() as i32, libc::SIGTERM);
    let o = child.wait_with_output().unwrap();
    let out = stdout(&o);
    assert!(
        out.contains("127.0.0.1:1025") && out.contains("demo@example.test"),
        "{out}"
    );
    assert!(out.contains("created"), "{out}");
    assert!(
        out.contains("privilege separation is off"),
        "the demo says it runs as one user: {out}"
    );
    let users = std::fs::read_to_string(dir.join("users")).unwrap();
    assert!(users.contains("demo:{ARGON2ID}$argon2id$"), "{users}");
    // Run again: reused, same password.
    let pw = std::fs::read_to_string(dir.join("demo-password")).unwrap();
    let child = Command::new(bin_dir().join("postern"))
        .arg("demo")
        .arg(&dir)
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    assert!(wait_until(Duration::from_secs(20), || {
        std::net::TcpStream::connect("127.0.0.1:1025").is_ok()
    }));
    signal(child.id() as i32, libc::SIGTERM);
    let o = child.wait_with_output().unwrap();
    let out = stdout(&o);
    assert!(out.contains("reused") && out.contains(pw.trim()), "{out}");
}
