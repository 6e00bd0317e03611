//! `postern install` and `postern install --check` against the real system
//! account databases (root only; skipped with a reason otherwise).
//!
//! The users and groups of docs/security.md are created for real and left in
//! place afterwards (other tests run services as them). Everything else lives
//! in a temporary directory: the config dir (with the TLS certificate that
//! install makes), the queue and a stand-in `postdrop` program. The
//! expectations below are written out from docs/security.md rather than
//! taken from the code under test.

use postern_tests::bin_dir;
use std::fs;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::Mutex;

/// install changes system-wide accounts: one test at a time in this binary.
static SERIAL: Mutex<()> = Mutex::new(());

/// (user, primary group, supplementary groups) from docs/security.md.
const USERS: &[(&str, &str, &[&str])] = &[
    ("postern-smtpd", "postern-smtpd", &["postern-ipc"]),
    ("postern-cleanup", "postern", &["postern-ipc"]),
    ("postern-qmgr", "postern", &["postern-ipc"]),
    ("postern-pickup", "postern", &["postdrop", "postern-ipc"]),
    ("postern-smtp", "postern-smtp", &["postern-ipc"]),
    ("postern-auth", "postern-auth", &["postern-ipc"]),
    ("postern-pop3d", "postern-pop3d", &["postern-ipc"]),
    ("postern-imapd", "postern-imapd", &["postern-ipc"]),
];

/// (path under queue_directory, owner, group, mode) from docs/security.md.
const DIRS: &[(&str, &str, &str, u32)] = &[
    ("", "root", "root", 0o755),
    ("incoming", "postern-qmgr", "postern", 0o730),
    ("active", "postern-qmgr", "postern", 0o700),
    ("deferred", "postern-qmgr", "postern", 0o700),
    ("hold", "postern-qmgr", "postern", 0o700),
    ("corrupt", "postern-qmgr", "postern", 0o700),
    ("defer", "postern-qmgr", "postern", 0o700),
    ("maildrop", "postern-pickup", "postdrop", 0o1730),
    ("private", "root", "postern-ipc", 0o710),
    ("public", "root", "postdrop", 0o710),
    ("pid", "root", "root", 0o755),
];

fn is_root() -> bool {
    nix::unistd::geteuid().is_root()
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// A config dir whose main.cf points the queue and daemon_directory into a
/// temporary directory (world-traversable, so the service users can reach
/// the queue as they would under /var/spool).
struct Setup {
    _tmp: tempfile::TempDir,
    etc: PathBuf,
    queue: PathBuf,
    postdrop: PathBuf,
}

impl Setup {
    fn new() -> Setup {
        let tmp = tempfile::Builder::new()
            .prefix("postern-install-")
            .tempdir()
            .expect("tempdir");
        fs::set_permissions(tmp.path(), fs::Permissions::from_mode(0o755)).expect("chmod");
        let etc = tmp.path().join("etc");
        let queue = tmp.path().join("spool/postern");
        let libexec = tmp.path().join("libexec");
        fs::create_dir_all(&etc).expect("mkdir etc");
        fs::create_dir_all(&libexec).expect("mkdir libexec");
        fs::write(
            etc.join("main.cf"),
            format!(
                "# test\nqueue_directory = {}\ndaemon_directory = {}\n\
                 alias_maps = hash:{etc}/aliases\nalias_database = $alias_maps\n",
                queue.display(),
                libexec.display(),
                etc = etc.display()
            ),
        )
        .expect("main.cf");
        let postdrop = libexec.join("postdrop");
        fs::write(&postdrop, "#!/bin/sh\nexit 0\n").expect("postdrop");
        fs::set_permissions(&postdrop, fs::Permissions::from_mode(0o755)).expect("chmod");
        Setup {
            _tmp: tmp,
            etc,
            queue,
            postdrop,
        }
    }

    fn postern(&self, args: &[&str]) -> Output {
        Command::new(bin_dir().join("postern"))
            .arg("-c")
            .arg(&self.etc)
            .args(args)
            .output()
            .expect("run postern")
    }

    fn install(&self) -> Output {
        let o = self.postern(&["install"]);
        assert!(
            o.status.success(),
            "install failed: {}{}",
            stdout(&o),
            stderr(&o)
        );
        o
    }
}

fn uid_of(user: &str) -> u32 {
    nix::unistd::User::from_name(user)
        .expect("getpwnam")
        .unwrap_or_else(|| panic!("user {user} exists"))
        .uid
        .as_raw()
}

fn gid_of(group: &str) -> u32 {
    nix::unistd::Group::from_name(group)
        .expect("getgrnam")
        .unwrap_or_else(|| panic!("group {group} exists"))
        .gid
        .as_raw()
}

/// `id -Gn USER` minus the primary group, sorted.
fn supplementary(user: &str, primary: &str) -> Vec<String> {
    let o = Command::new("id")
        .args(["-G", "-n", user])
        .output()
        .expect("id");
    assert!(o.status.success(), "id {user}: {}", stderr(&o));
    let mut g: Vec<String> = stdout(&o)
        .split_whitespace()
        .filter(|g| *g != primary)
        .map(str::to_owned)
        .collect();
    g.sort();
    g
}

/// Runs a shell command as `user` (runuser: no password, no PAM session
/// needed as root); returns whether it succeeded.
fn as_user(user: &str, script: &str) -> Output {
    Command::new("/usr/sbin/runuser")
        .args(["-u", user, "--", "/bin/sh", "-c", script])
        .output()
        .expect("runuser")
}

fn assert_matrix(s: &Setup) {
    for (user, primary, extra) in USERS {
        let pw = nix::unistd::User::from_name(user)
            .expect("getpwnam")
            .unwrap_or_else(|| panic!("user {user} was created"));
        assert_eq!(pw.gid.as_raw(), gid_of(primary), "{user}: primary group");
        assert_eq!(supplementary(user, primary), *extra, "{user}: extra groups");
        assert_eq!(pw.dir, Path::new("/nonexistent"), "{user}: home");
        assert!(
            pw.shell.to_string_lossy().ends_with("nologin") || pw.shell == Path::new("/bin/false"),
            "{user}: shell {}",
            pw.shell.display()
        );
        assert!(pw.uid.as_raw() < 1000, "{user} is a system user");
    }
    for (name, owner, group, mode) in DIRS {
        let p = if name.is_empty() {
            s.queue.clone()
        } else {
            s.queue.join(name)
        };
        let m = fs::symlink_metadata(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()));
        assert!(m.is_dir(), "{name}");
        assert_eq!(m.uid(), uid_of(owner), "{name}: owner");
        assert_eq!(m.gid(), gid_of(group), "{name}: group");
        assert_eq!(m.mode() & 0o7777, *mode, "{name}: mode {:o}", m.mode());
    }
    let m = fs::metadata(&s.postdrop).expect("postdrop");
    assert_eq!(
        (m.uid(), m.gid(), m.mode() & 0o7777),
        (0, gid_of("postdrop"), 0o2755),
        "postdrop is root:postdrop 2755"
    );
}

#[test]
fn install_creates_the_matrix_and_is_idempotent() {
    if !is_root() {
        eprintln!("skipped: postern install needs root");
        return;
    }
    let _g = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let s = Setup::new();
    let main_before = fs::read_to_string(s.etc.join("main.cf")).expect("main.cf");

    let o = s.install();
    let out = stdout(&o);
    for want in [
        "postern: created incoming\n",
        "postern: created maildrop\n",
        &format!("postern: created {}\n", s.etc.join("master.cf").display()),
        &format!(
            "postern: {}: group set to postdrop (was root)\n",
            s.postdrop.display()
        ),
        &format!(
            "postern: {}: mode set to 2755 (was 0755)\n",
            s.postdrop.display()
        ),
    ] {
        assert!(out.contains(want), "want {want:?} in:\n{out}");
    }
    assert_matrix(&s);
    // main.cf existed: untouched; master.cf did not: the shipped one.
    assert_eq!(
        fs::read_to_string(s.etc.join("main.cf")).expect("main.cf"),
        main_before
    );
    assert_eq!(
        fs::read_to_string(s.etc.join("master.cf")).expect("master.cf"),
        include_str!("../master.cf")
    );

    // Second run: nothing to do, nothing printed.
    let o = s.install();
    assert_eq!(stdout(&o), "", "second install changed something");
    let o = s.postern(&["install", "--check"]);
    assert!(o.status.success(), "{}{}", stdout(&o), stderr(&o));
    assert_eq!(stdout(&o), "");
}

#[test]
fn check_reports_drift_without_changing_it_and_install_fixes_it() {
    if !is_root() {
        eprintln!("skipped: postern install needs root");
        return;
    }
    let _g = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let s = Setup::new();
    s.install();

    let incoming = s.queue.join("incoming");
    fs::set_permissions(&incoming, fs::Permissions::from_mode(0o700)).expect("chmod");
    let active = s.queue.join("active");
    std::os::unix::fs::chown(&active, Some(0), None).expect("chown");
    fs::remove_dir(s.queue.join("hold")).expect("rmdir");
    fs::remove_file(s.etc.join("master.cf")).expect("rm master.cf");

    let o = s.postern(&["install", "--check"]);
    assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
    let out = stdout(&o);
    let mut lines: Vec<&str> = out.lines().collect();
    lines.sort();
    let mut want = vec![
        "postern: active: owner root, want postern-qmgr".to_owned(),
        "postern: hold: missing".to_owned(),
        "postern: incoming: mode 0700, want 0730".to_owned(),
        format!("postern: missing {}", s.etc.join("master.cf").display()),
    ];
    want.sort();
    assert_eq!(lines, want);
    // --check changed nothing.
    assert_eq!(
        fs::metadata(&incoming).expect("stat").mode() & 0o7777,
        0o700
    );
    assert_eq!(fs::metadata(&active).expect("stat").uid(), 0);
    assert!(!s.queue.join("hold").exists());
    assert!(!s.etc.join("master.cf").exists());

    let o = s.install();
    let out = stdout(&o);
    assert!(
        out.contains("postern: incoming: mode set to 0730 (was 0700)\n"),
        "{out}"
    );
    assert!(
        out.contains("postern: active: owner set to postern-qmgr (was root)\n"),
        "{out}"
    );
    assert!(out.contains("postern: created hold\n"), "{out}");
    assert_matrix(&s);
    let o = s.postern(&["install", "--check"]);
    assert!(o.status.success(), "{}", stdout(&o));
    assert_eq!(stdout(&o), "");
}

#[test]
fn wrong_user_groups_are_reported_and_fixed() {
    if !is_root() {
        eprintln!("skipped: postern install needs root");
        return;
    }
    let _g = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let s = Setup::new();
    s.install();
    // postern-auth runs nothing yet, so changing it disturbs no other test.
    let o = Command::new("/usr/sbin/usermod")
        .args(["-G", "", "postern-auth"])
        .output()
        .expect("usermod");
    assert!(o.status.success(), "{}", stderr(&o));
    let o = s.postern(&["install", "--check"]);
    assert_eq!(o.status.code(), Some(1));
    assert_eq!(
        stdout(&o),
        "postern: user postern-auth: groups postern-auth + none, want postern-auth + postern-ipc\n"
    );
    let o = s.install();
    assert_eq!(
        stdout(&o),
        "postern: user postern-auth: groups set to postern-auth + postern-ipc (were postern-auth + none)\n"
    );
    assert_eq!(
        supplementary("postern-auth", "postern-auth"),
        ["postern-ipc"]
    );
}

#[test]
fn a_symlink_in_place_of_a_queue_directory_is_refused() {
    if !is_root() {
        eprintln!("skipped: postern install needs root");
        return;
    }
    let _g = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let s = Setup::new();
    s.install();
    let target = s.queue.join("..").join("victim");
    fs::create_dir(&target).expect("mkdir victim");
    fs::set_permissions(&target, fs::Permissions::from_mode(0o700)).expect("chmod");
    fs::remove_dir(s.queue.join("deferred")).expect("rmdir");
    std::os::unix::fs::symlink(&target, s.queue.join("deferred")).expect("symlink");

    let o = s.postern(&["install", "--check"]);
    assert_eq!(o.status.code(), Some(1));
    assert!(
        stdout(&o).contains("postern: deferred: ") && stdout(&o).contains("is not a directory"),
        "{}",
        stdout(&o)
    );
    let o = s.postern(&["install"]);
    assert_eq!(o.status.code(), Some(1), "{}", stdout(&o));
    assert!(
        stderr(&o).contains("is not a directory; move it away"),
        "{}",
        stderr(&o)
    );
    let m = fs::metadata(&target).expect("stat");
    assert_eq!(
        (m.uid(), m.mode() & 0o7777),
        (0, 0o700),
        "link target untouched"
    );
}

#[test]
fn the_smtpd_user_cannot_read_the_queue_and_cleanup_can_only_add() {
    if !is_root() {
        eprintln!("skipped: postern install needs root");
        return;
    }
    if !Path::new("/usr/sbin/runuser").is_file() {
        eprintln!("skipped: /usr/sbin/runuser is missing");
        return;
    }
    let _g = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let s = Setup::new();
    s.install();
    let q = s.queue.display().to_string();
    // A queue file as cleanup writes it (owner postern-cleanup, 0660).
    let o = as_user(
        "postern-cleanup",
        &format!("umask 077 && echo x > {q}/incoming/ABCDEF12 && chmod 0660 {q}/incoming/ABCDEF12"),
    );
    assert!(
        o.status.success(),
        "cleanup creates in incoming/: {}",
        stderr(&o)
    );
    assert!(
        !as_user("postern-cleanup", &format!("ls {q}/incoming"))
            .status
            .success(),
        "cleanup cannot list incoming/"
    );
    for dir in [
        "incoming", "active", "deferred", "hold", "corrupt", "maildrop",
    ] {
        assert!(
            !as_user("postern-smtpd", &format!("ls {q}/{dir}"))
                .status
                .success(),
            "smtpd cannot list {dir}/"
        );
    }
    assert!(
        !as_user("postern-smtpd", &format!("cat {q}/incoming/ABCDEF12"))
            .status
            .success(),
        "smtpd cannot read a queue file"
    );
    assert!(
        !as_user("postern-smtpd", &format!("echo x > {q}/incoming/EVIL1234"))
            .status
            .success(),
        "smtpd cannot create a queue file"
    );
    let o = as_user(
        "postern-qmgr",
        &format!("ls {q}/incoming && cat {q}/incoming/ABCDEF12"),
    );
    assert!(o.status.success(), "qmgr lists and reads: {}", stderr(&o));
    assert_eq!(stdout(&o), "ABCDEF12\nx\n");
    // private/: postern-ipc members traverse, others do not.
    assert!(
        as_user("postern-smtpd", &format!("cd {q}/private"))
            .status
            .success()
    );
    assert!(
        !as_user("nobody", &format!("cd {q}/private"))
            .status
            .success()
    );
}

#[test]
fn install_makes_the_shipped_self_signed_certificate_once() {
    if !is_root() {
        eprintln!("skipped: postern install needs root");
        return;
    }
    let _g = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let s = Setup::new();
    // The shipped main.cf (smtpd_tls_cert_file = $config_directory/tls/...),
    // then the test's queue and a host name (a later line wins).
    let ours = fs::read_to_string(s.etc.join("main.cf")).expect("main.cf");
    fs::write(
        s.etc.join("main.cf"),
        format!(
            "{}{ours}myhostname = mx.example.test\n",
            include_str!("../main.cf")
        ),
    )
    .expect("main.cf");
    let tls = s.etc.join("tls");
    let cert = tls.join("cert.pem");
    let key = tls.join("key.pem");

    let o = s.postern(&["install", "--check"]);
    assert_eq!(o.status.code(), Some(1));
    let want_missing = format!(
        "postern: missing TLS certificate {} and key {}\n",
        cert.display(),
        key.display()
    );
    assert!(stdout(&o).contains(&want_missing), "{}", stdout(&o));

    let o = s.install();
    let created = format!(
        "postern: created self-signed certificate {} for mx.example.test; replace it with a real one\n",
        cert.display()
    );
    assert!(stdout(&o).contains(&created), "{}", stdout(&o));
    let stat = |p: &Path| {
        let m = fs::symlink_metadata(p).unwrap_or_else(|e| panic!("{}: {e}", p.display()));
        (m.uid(), m.gid(), m.mode() & 0o7777)
    };
    assert!(fs::symlink_metadata(&tls).expect("tls").is_dir());
    assert_eq!(stat(&tls), (0, 0, 0o755), "tls/ is root:root 0755");
    assert_eq!(stat(&key), (0, 0, 0o600), "the key is root's alone");
    assert_eq!(stat(&cert), (0, 0, 0o644));
    let key_pem = fs::read_to_string(&key).expect("key");
    let cert_pem = fs::read_to_string(&cert).expect("cert");
    assert!(key_pem.contains("-----BEGIN PRIVATE KEY-----"), "{key_pem}");
    assert!(cert_pem.starts_with("-----BEGIN CERTIFICATE-----"));
    if Path::new("/usr/bin/openssl").is_file() {
        let o = Command::new("/usr/bin/openssl")
            .args(["x509", "-noout", "-text", "-in"])
            .arg(&cert)
            .output()
            .expect("openssl");
        assert!(o.status.success(), "{}", stderr(&o));
        assert!(stdout(&o).contains("DNS:mx.example.test"), "{}", stdout(&o));
    }
    // Nobody but root can read the key.
    if Path::new("/usr/sbin/runuser").is_file() {
        for user in ["postern-smtpd", "nobody"] {
            assert!(
                !as_user(user, &format!("cat {}", key.display()))
                    .status
                    .success(),
                "{user} reads the key"
            );
        }
        assert!(
            as_user("nobody", &format!("cat {}", cert.display()))
                .status
                .success(),
            "the certificate is public"
        );
    }

    // Second run: nothing about it; --check is clean.
    let o = s.install();
    assert_eq!(stdout(&o), "", "second install changed something");
    let o = s.postern(&["install", "--check"]);
    assert!(o.status.success(), "{}{}", stdout(&o), stderr(&o));
    assert_eq!(stdout(&o), "");
    assert_eq!(fs::read_to_string(&key).expect("key"), key_pem);

    // Half a pair: reported, and install refuses rather than guess.
    fs::remove_file(&key).expect("rm key");
    let half = format!(
        "postern: smtpd_tls_key_file {} is missing but smtpd_tls_cert_file {} exists\n",
        key.display(),
        cert.display()
    );
    let o = s.postern(&["install", "--check"]);
    assert_eq!(o.status.code(), Some(1));
    assert_eq!(stdout(&o), half);
    let o = s.postern(&["install"]);
    assert_eq!(o.status.code(), Some(1), "{}", stdout(&o));
    assert!(
        stderr(&o).contains(&format!("smtpd_tls_key_file {} is missing", key.display())),
        "{}",
        stderr(&o)
    );
    assert!(!key.exists());
    assert_eq!(fs::read_to_string(&cert).expect("cert"), cert_pem);

    // Neither: a new pair.
    fs::remove_file(&cert).expect("rm cert");
    let o = s.postern(&["install", "--check"]);
    assert_eq!(o.status.code(), Some(1));
    assert_eq!(stdout(&o), want_missing);
    let o = s.install();
    assert_eq!(stdout(&o), created);
    assert_ne!(fs::read_to_string(&cert).expect("cert"), cert_pem);
    assert_eq!(stat(&key), (0, 0, 0o600));
}

#[test]
fn install_needs_root_but_check_does_not() {
    if !is_root() {
        eprintln!("skipped: needs root to create the setup and switch to nobody");
        return;
    }
    if !Path::new("/usr/sbin/runuser").is_file() {
        eprintln!("skipped: /usr/sbin/runuser is missing");
        return;
    }
    let _g = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let s = Setup::new();
    s.install();
    let postern = bin_dir().join("postern");
    if !as_user("nobody", &format!("test -x {}", postern.display()))
        .status
        .success()
    {
        eprintln!("skipped: nobody cannot run {}", postern.display());
        return;
    }
    let cmd = |args: &str| {
        as_user(
            "nobody",
            &format!("{} -c {} {args}", postern.display(), s.etc.display()),
        )
    };
    let o = cmd("install --check");
    assert!(o.status.success(), "{}{}", stdout(&o), stderr(&o));
    assert_eq!(stdout(&o), "");
    let o = cmd("install");
    assert_eq!(o.status.code(), Some(1));
    assert!(stderr(&o).contains("must run as root"), "{}", stderr(&o));
    let o = s.postern(&["install", "--bogus"]);
    assert_eq!(o.status.code(), Some(2));
}
