//! The Debian package, end to end, on this machine: `cargo deb -p postern`
//! builds it, `dpkg -i` installs it (its postinst runs `postern install`
//! and `newaliases`), `postern start` starts the mail system with the
//! shipped configuration, a message sent over SMTP to port 25 for a real
//! system user lands in that user's ~/Maildir (the shipped main.cf:
//! home_mailbox = Maildir/), one sent with /usr/sbin/sendmail too, then
//! `postern stop` and `dpkg --purge postern`, after which nothing the
//! package or its `postern install` made is left (and nothing that was
//! there before is gone).
//!
//! This changes the real system: /etc/postern, /var/spool/postern,
//! /usr/libexec/postern, port 25, accounts. It runs only as root, with
//! dpkg and cargo-deb (`cargo install cargo-deb --version =3.8.0
//! --locked`; .ci/run does it), and only on a machine where none of those
//! are in use: otherwise it says why and returns. Nothing else in tests/
//! uses /etc/postern, /var/spool/postern or port 25 (the other tests run
//! instances in temporary directories on free high ports).
//!
//! cargo-deb builds the release binaries (`cargo build --release`, so a
//! release build already made is reused), and the package is made with
//! `--fast --strip --no-dbgsym`: the same files as the README's `cargo deb
//! -p postern` (which moves debug info to a -dbgsym.ddeb instead of
//! stripping it away), without the minute the xz compression of that takes.

use postern_tests::{Smtp, wait_until};
use std::fs;
use std::io::Write;
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::os::unix::net::UnixDatagram;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// The programs master runs, as the package installs them.
const DAEMONS: &[&str] = &[
    "master", "smtpd", "cleanup", "qmgr", "local", "pickup", "postdrop", "auth",
];

/// The accounts `postern install` makes (docs/security.md).
const USERS: &[&str] = &[
    "postern-smtpd",
    "postern-cleanup",
    "postern-qmgr",
    "postern-pickup",
    "postern-smtp",
    "postern-auth",
    "postern-pop3d",
    "postern-imapd",
];
const GROUPS: &[&str] = &[
    "postern",
    "postern-ipc",
    "postdrop",
    "postern-smtpd",
    "postern-smtp",
    "postern-auth",
    "postern-pop3d",
    "postern-imapd",
];

/// What the package installs that purge must take away again.
const PACKAGE_PATHS: &[&str] = &[
    "/usr/sbin/postern",
    "/usr/sbin/sendmail",
    "/usr/bin/mailq",
    "/usr/bin/newaliases",
    "/usr/libexec/postern",
    "/lib/systemd/system/postern.service",
    "/usr/share/doc/postern",
    "/usr/share/man/man1/postern.1.gz",
    "/etc/postern",
    "/var/spool/postern",
    "/var/lib/postern",
    "/var/log/postern.log",
];

fn text(o: &Output) -> String {
    format!(
        "status {}\nstdout:\n{}stderr:\n{}",
        o.status,
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

fn run(program: &str, args: &[&str]) -> Output {
    Command::new(program)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("run {program}: {e}"))
}

fn ok(program: &str, args: &[&str]) -> Output {
    let o = run(program, args);
    assert!(
        o.status.success(),
        "{program} {} failed: {}",
        args.join(" "),
        text(&o)
    );
    o
}

fn exists(p: &str) -> bool {
    fs::symlink_metadata(p).is_ok()
}

fn has_program(name: &str) -> bool {
    Command::new("sh")
        .args(["-c", &format!("command -v {name}")])
        .stdout(Stdio::null())
        .status()
        .map(|s| s.success())
        .unwrap_or(false)
}

fn account_exists(db: &str, name: &str) -> bool {
    run("getent", &[db, name]).status.success()
}

/// Why this machine cannot run the test, if it cannot.
fn skip_reason() -> Option<String> {
    if !nix::unistd::geteuid().is_root() {
        return Some("not root (dpkg -i needs it)".into());
    }
    for tool in ["dpkg", "dpkg-deb", "useradd", "userdel"] {
        if !has_program(tool) {
            return Some(format!("{tool} is not installed"));
        }
    }
    let o = Command::new(cargo())
        .args(["deb", "--version"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status();
    if !o.map(|s| s.success()).unwrap_or(false) {
        return Some(
            "cargo-deb is not installed (cargo install cargo-deb --version =3.8.0 --locked)".into(),
        );
    }
    let o = run("dpkg-query", &["-W", "-f=${Status}", "postern"]);
    if String::from_utf8_lossy(&o.stdout).contains("installed") {
        return Some("the postern package is already installed here".into());
    }
    for p in [
        "/etc/postern",
        "/var/spool/postern",
        "/var/lib/postern",
        "/usr/libexec/postern",
        "/usr/sbin/postern",
        "/usr/sbin/sendmail",
    ] {
        if exists(p) {
            return Some(format!(
                "{p} exists (an installed Postern or another mail system): not touching it"
            ));
        }
    }
    if TcpListener::bind("0.0.0.0:25").is_err() {
        return Some("port 25 is in use".into());
    }
    None
}

fn cargo() -> String {
    std::env::var("CARGO").unwrap_or_else(|_| "cargo".into())
}

fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("workspace root")
        .to_path_buf()
}

/// Catches what the services log when this machine has no syslog daemon
/// (they log to /dev/log; the shipped main.cf sets no maillog_file), so a
/// failure can show the mail log. Removes its socket when dropped.
struct Syslog {
    lines: Arc<Mutex<Vec<String>>>,
    path: Option<PathBuf>,
}

impl Syslog {
    fn start() -> Syslog {
        let path = PathBuf::from("/dev/log");
        let lines = Arc::new(Mutex::new(Vec::new()));
        if exists("/dev/log") {
            return Syslog { lines, path: None };
        }
        let Ok(sock) = UnixDatagram::bind(&path) else {
            return Syslog { lines, path: None };
        };
        let _ = fs::set_permissions(&path, fs::Permissions::from_mode(0o666));
        let sink = lines.clone();
        std::thread::spawn(move || {
            let mut buf = vec![0u8; 65536];
            while let Ok(n) = sock.recv(&mut buf) {
                let line = String::from_utf8_lossy(&buf[..n]).trim_end().to_owned();
                sink.lock().unwrap_or_else(|e| e.into_inner()).push(line);
            }
        });
        Syslog {
            lines,
            path: Some(path),
        }
    }

    fn text(&self) -> String {
        if self.path.is_none() {
            return "(the mail log went to this machine's syslog daemon)".into();
        }
        self.lines
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .join("\n")
    }
}

impl Drop for Syslog {
    fn drop(&mut self) {
        if let Some(p) = &self.path {
            let _ = fs::remove_file(p);
        }
    }
}

/// Undoes whatever the test got to, even when it fails half way: stops the
/// mail system, purges the package, removes the test user.
struct Cleanup {
    user: Option<String>,
    installed: bool,
}

impl Drop for Cleanup {
    fn drop(&mut self) {
        if self.installed {
            if exists("/usr/sbin/postern") {
                let _ = run("/usr/sbin/postern", &["stop"]);
            }
            let _ = run("dpkg", &["--purge", "postern"]);
        }
        if let Some(u) = &self.user {
            let _ = run("userdel", &["-r", "-f", u]);
        }
    }
}

fn maildir_messages(home: &Path) -> Vec<String> {
    let new = home.join("Maildir/new");
    let Ok(rd) = fs::read_dir(&new) else {
        return Vec::new();
    };
    let mut names: Vec<PathBuf> = rd.filter_map(|e| e.ok()).map(|e| e.path()).collect();
    names.sort();
    names
        .iter()
        .filter_map(|p| fs::read(p).ok())
        .map(|b| String::from_utf8_lossy(&b).into_owned())
        .collect()
}

#[test]
fn the_debian_package_installs_delivers_and_purges() {
    if let Some(why) = skip_reason() {
        eprintln!("skipped: {why}");
        return;
    }
    let started = Instant::now();
    let users_before: Vec<&str> = USERS
        .iter()
        .copied()
        .filter(|u| account_exists("passwd", u))
        .collect();
    let groups_before: Vec<&str> = GROUPS
        .iter()
        .copied()
        .filter(|g| account_exists("group", g))
        .collect();
    let aliases_before = fs::read("/etc/aliases").ok();

    // Build the package from the release binaries.
    let out = tempfile::Builder::new()
        .prefix("postern-deb-")
        .tempdir()
        .expect("tempdir");
    let t = Instant::now();
    let o = Command::new(cargo())
        .current_dir(workspace_root())
        .args(["deb", "-p", "postern", "--fast", "--strip", "--no-dbgsym"])
        .arg("--output")
        .arg(out.path())
        .stdin(Stdio::null())
        .output()
        .expect("run cargo deb");
    assert!(o.status.success(), "cargo deb -p postern: {}", text(&o));
    eprintln!("cargo deb -p postern: {:.0?}", t.elapsed());
    let debs: Vec<PathBuf> = fs::read_dir(out.path())
        .expect("readdir")
        .filter_map(|e| e.ok())
        .map(|e| e.path())
        .filter(|p| {
            let n = p.file_name().unwrap_or_default().to_string_lossy();
            n.starts_with("postern_") && n.ends_with(".deb")
        })
        .collect();
    assert_eq!(debs.len(), 1, "one postern_*.deb in {debs:?}");
    let deb = debs[0].display().to_string();

    // The package's metadata: conffiles, and a mail transport agent.
    let o = ok("dpkg-deb", &["-f", &deb, "Package", "Provides", "Depends"]);
    let control = String::from_utf8_lossy(&o.stdout).into_owned();
    assert!(control.contains("Package: postern\n"), "{control}");
    assert!(control.contains("mail-transport-agent"), "{control}");
    assert!(control.contains("passwd"), "{control}");

    let syslog = Syslog::start();
    let mut cleanup = Cleanup {
        user: None,
        installed: true,
    };
    let o = ok("dpkg", &["-i", &deb]);
    eprintln!("dpkg -i: {}", String::from_utf8_lossy(&o.stdout));
    let postinst_said = String::from_utf8_lossy(&o.stdout).into_owned();
    assert!(
        postinst_said.contains("postern start"),
        "without systemd the postinst says to run postern start: {postinst_said}"
    );

    // Files where Debian's conventions put them.
    for d in DAEMONS {
        let p = format!("/usr/libexec/postern/{d}");
        let m = fs::metadata(&p).unwrap_or_else(|e| panic!("{p}: {e}"));
        assert!(m.is_file() && m.mode() & 0o111 != 0, "{p} is a program");
    }
    for link in [
        "/usr/sbin/sendmail",
        "/usr/bin/mailq",
        "/usr/bin/newaliases",
    ] {
        assert!(
            fs::symlink_metadata(link)
                .expect("link")
                .file_type()
                .is_symlink(),
            "{link} is a symbolic link"
        );
        assert_eq!(
            fs::canonicalize(link).expect("resolves"),
            Path::new("/usr/sbin/postern"),
            "{link}"
        );
    }
    assert_eq!(
        fs::read_to_string("/etc/postern/main.cf").expect("main.cf"),
        include_str!("../main.cf")
    );
    assert_eq!(
        fs::read_to_string("/etc/postern/master.cf").expect("master.cf"),
        include_str!("../master.cf")
    );
    let o = ok("dpkg-query", &["-W", "-f=${Conffiles}", "postern"]);
    let conffiles = String::from_utf8_lossy(&o.stdout).into_owned();
    for c in ["/etc/postern/main.cf", "/etc/postern/master.cf"] {
        assert!(conffiles.contains(c), "{c} is a conffile: {conffiles}");
    }
    assert_eq!(
        fs::read_to_string("/lib/systemd/system/postern.service").expect("unit"),
        include_str!("../systemd/postern.service")
    );
    for doc in [
        "README.md",
        "configuration.md",
        "security.md",
        "tls.md",
        "copyright",
    ] {
        let p = format!("/usr/share/doc/postern/{doc}");
        assert!(exists(&p), "{p}");
    }
    let o = ok("zcat", &["/usr/share/man/man1/postern.1.gz"]);
    assert_eq!(
        String::from_utf8_lossy(&o.stdout),
        include_str!("../docs/postern.1"),
        "the man page is docs/postern.1"
    );

    // What postinst's `postern install` made: postdrop setgid, the
    // certificate, the queue, an alias file; nothing left to do.
    let m = fs::metadata("/usr/libexec/postern/postdrop").expect("postdrop");
    assert_eq!(m.mode() & 0o7777, 0o2755, "postdrop is setgid");
    for p in ["/etc/postern/tls/cert.pem", "/etc/postern/tls/key.pem"] {
        assert!(exists(p), "{p}");
    }
    assert_eq!(
        fs::metadata("/etc/postern/tls/key.pem")
            .expect("key")
            .mode()
            & 0o777,
        0o600
    );
    assert!(Path::new("/var/spool/postern/maildrop").is_dir());
    let aliases = fs::read_to_string("/etc/aliases").expect("/etc/aliases exists");
    match &aliases_before {
        Some(before) => assert_eq!(aliases.as_bytes(), &before[..], "/etc/aliases untouched"),
        None => assert!(
            aliases.lines().any(|l| l == "postmaster: root"),
            "new /etc/aliases: {aliases}"
        ),
    }
    let o = run("/usr/sbin/postern", &["install", "--check"]);
    assert!(
        o.status.success() && o.stdout.is_empty(),
        "postinst left nothing for install to do: {}",
        text(&o)
    );

    // A real user to mail.
    let user = format!("pkgtest{}", std::process::id() % 100_000);
    ok("useradd", &["-m", "-s", "/bin/sh", &user]);
    cleanup.user = Some(user.clone());
    let home = PathBuf::from(
        String::from_utf8_lossy(&ok("getent", &["passwd", &user]).stdout)
            .trim()
            .split(':')
            .nth(5)
            .expect("home")
            .to_owned(),
    );

    let o = ok("/usr/sbin/postern", &["start"]);
    eprintln!("postern start: {}", String::from_utf8_lossy(&o.stdout));
    let smtp: SocketAddr = "127.0.0.1:25".parse().expect("addr");
    assert!(
        wait_until(Duration::from_secs(20), || TcpStream::connect(smtp).is_ok()),
        "nothing listens on port 25 after postern start\nlog:\n{}",
        syslog.text()
    );
    ok("/usr/sbin/postern", &["status"]);

    // Over SMTP, as another server would send it.
    let subject = format!("package test {}", std::process::id());
    let content = format!(
        "From: Tester <tester@example.test>\r\nTo: <{user}@localhost>\r\n\
         Subject: {subject}\r\n\r\nDelivered by the installed package.\r\n"
    );
    let mut c = Smtp::connect(smtp);
    let r = c.cmd("EHLO client.example.test");
    assert_eq!(r.code, 250, "{r:?}");
    let r = c.send(
        "tester@example.test",
        &[&format!("{user}@localhost")],
        content.as_bytes(),
    );
    assert_eq!(r.code, 250, "{r:?}\nlog:\n{}", syslog.text());
    let _ = c.cmd("QUIT");

    // With sendmail, as a local program would (postdrop, pickup).
    let mut child = Command::new("/usr/sbin/sendmail")
        .args(["-i", &user])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run sendmail");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(format!("Subject: {subject} via sendmail\n\nLocal.\n").as_bytes())
        .expect("write to sendmail");
    let o = child.wait_with_output().expect("sendmail");
    assert!(o.status.success(), "sendmail: {}", text(&o));

    let delivered = wait_until(Duration::from_secs(60), || {
        maildir_messages(&home).len() >= 2
    });
    let msgs = maildir_messages(&home);
    assert!(
        delivered,
        "{user} has {} messages in {}/Maildir/new, want 2\nmailq: {}\nlog:\n{}",
        msgs.len(),
        home.display(),
        text(&run("/usr/bin/mailq", &[])),
        syslog.text()
    );
    assert!(
        msgs.iter()
            .any(|m| m.contains(&format!("Subject: {subject}\n"))
                && m.contains("Delivered by the installed package.")),
        "the SMTP message: {msgs:?}"
    );
    assert!(
        msgs.iter()
            .any(|m| m.contains(&format!("Subject: {subject} via sendmail\n"))),
        "the sendmail message: {msgs:?}"
    );
    let m = fs::metadata(home.join("Maildir/new")).expect("Maildir");
    let pw = nix::unistd::User::from_name(&user)
        .expect("getpwnam")
        .expect("user");
    assert_eq!(m.uid(), pw.uid.as_raw(), "the Maildir belongs to {user}");

    let o = ok("/usr/sbin/postern", &["stop"]);
    eprintln!("postern stop: {}", String::from_utf8_lossy(&o.stdout));
    assert!(
        wait_until(Duration::from_secs(15), || TcpStream::connect(smtp)
            .is_err()),
        "port 25 still answers after postern stop"
    );

    // Purge: everything the package and its postinst made goes.
    let o = ok("dpkg", &["--purge", "postern"]);
    cleanup.installed = false;
    eprintln!(
        "dpkg --purge: {}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
    for p in PACKAGE_PATHS {
        assert!(!exists(p), "{p} is left after purge");
    }
    for u in USERS {
        assert_eq!(
            account_exists("passwd", u),
            users_before.contains(u),
            "user {u}: there after purge exactly when it was there before"
        );
    }
    for g in GROUPS {
        assert_eq!(
            account_exists("group", g),
            groups_before.contains(g),
            "group {g}: there after purge exactly when it was there before"
        );
    }
    assert_eq!(
        fs::read("/etc/aliases").ok(),
        aliases_before,
        "/etc/aliases is as it was before the package"
    );
    drop(cleanup);
    assert!(!account_exists("passwd", &user), "test user removed");
    eprintln!("package test: {:.0?} in all", started.elapsed());
}
