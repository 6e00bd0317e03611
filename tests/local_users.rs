//! local delivers as each recipient (docs/security.md "Mail delivery as the
//! recipient"): the delivery library, run as root, against real system
//! users created for the test.
//!
//! SECURITY: these tests create and remove the system users pt-user1 and
//! pt-user2 (homes under a temporary directory). They need root and skip
//! with a printed reason otherwise. They are serialized by one lock because
//! they share the process-wide log sink.

use std::io::Write as _;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Mutex, OnceLock};
use std::time::SystemTime;

use postern_ipc::{Mailbox, ReversePath};
use postern_local::{DeliveryMode, Forwarder, LocalConfig, LocalDelivery, Message, Outcome};

/// Serializes the tests of this file (shared log file, system users).
static LOCK: Mutex<()> = Mutex::new(());
/// The log file every test's local writes to (kept for the whole run).
static LOG: OnceLock<(tempfile::NamedTempFile, PathBuf)> = OnceLock::new();

const BODY: &[u8] = b"Subject: hello\n\nFrom the body\nbye\n";

fn root_or_skip(test: &str) -> bool {
    if nix::unistd::geteuid().is_root() {
        return true;
    }
    eprintln!("{test}: skipped: needs root (creates users, switches uids)");
    false
}

/// Points the process's logging at a file and returns its path.
fn log_path() -> PathBuf {
    LOG.get_or_init(|| {
        let f = tempfile::NamedTempFile::new().unwrap();
        let p = f.path().to_path_buf();
        let writer = f.reopen().unwrap();
        let mut main =
            postern_config::MainCf::parse("", Path::new("/nonexistent/main.cf")).unwrap();
        main.set("myhostname", "mail.example.test");
        postern_service::log::init_logging_with(
            "local",
            &main,
            false,
            postern_service::log::LogSink::File(writer),
        );
        (f, p)
    })
    .1
    .clone()
}

fn log_text() -> String {
    std::fs::read_to_string(log_path()).unwrap()
}

/// A system user created with useradd for the test, removed on drop.
struct TestUser {
    name: String,
    uid: u32,
    gid: u32,
    home: PathBuf,
}

impl TestUser {
    fn create(name: &str, homes: &Path) -> TestUser {
        // A leftover from an interrupted earlier run.
        let _ = Command::new("userdel").args(["-r", name]).output();
        let _ = Command::new("userdel").arg(name).output();
        let home = homes.join(name);
        let out = Command::new("useradd")
            .args(["-m", "-d"])
            .arg(&home)
            .args(["-s", "/bin/sh", name])
            .output()
            .expect("run useradd");
        assert!(
            out.status.success(),
            "useradd {name}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let pw = nix::unistd::User::from_name(name).unwrap().unwrap();
        // Home as useradd's HOME_MODE may leave it; make it a plain 0755.
        std::fs::set_permissions(&home, std::fs::Permissions::from_mode(0o755)).unwrap();
        TestUser {
            name: name.into(),
            uid: pw.uid.as_raw(),
            gid: pw.gid.as_raw(),
            home,
        }
    }

    fn maildir_new(&self) -> Vec<PathBuf> {
        let mut v: Vec<PathBuf> = match std::fs::read_dir(self.home.join("Maildir/new")) {
            Ok(rd) => rd.map(|e| e.unwrap().path()).collect(),
            Err(_) => Vec::new(),
        };
        v.sort();
        v
    }

    fn write_forward(&self, text: &str, owner: u32, mode: u32) -> PathBuf {
        let p = self.home.join(".forward");
        std::fs::write(&p, text).unwrap();
        nix::unistd::chown(&p, Some(nix::unistd::Uid::from_raw(owner)), None).unwrap();
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(mode)).unwrap();
        p
    }
}

impl Drop for TestUser {
    fn drop(&mut self) {
        let _ = Command::new("userdel").args(["-r", &self.name]).output();
    }
}

/// Records remote forwards (none are expected here).
#[derive(Default)]
struct NoForward {
    calls: usize,
}

impl Forwarder for NoForward {
    fn forward(&mut self, _msg: &Message, _recipients: &[Mailbox]) -> Result<(), Outcome> {
        self.calls += 1;
        Ok(())
    }
}

/// A temporary tree every test user can traverse, with a queue file.
struct Site {
    dir: tempfile::TempDir,
    queue: tempfile::NamedTempFile,
    sender: ReversePath,
}

impl Site {
    fn new() -> Site {
        let dir = tempfile::Builder::new()
            .prefix("postern-local-users-")
            .tempdir()
            .unwrap();
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
        for sub in ["home", "spool"] {
            std::fs::create_dir(dir.path().join(sub)).unwrap();
            std::fs::set_permissions(dir.path().join(sub), std::fs::Permissions::from_mode(0o755))
                .unwrap();
        }
        let mut queue = tempfile::NamedTempFile::new().unwrap();
        queue.write_all(b"ENVELOPE\n").unwrap();
        queue.write_all(BODY).unwrap();
        queue.flush().unwrap();
        Site {
            dir,
            queue,
            sender: "sender@remote.example".parse().unwrap(),
        }
    }

    fn path(&self, p: &str) -> PathBuf {
        self.dir.path().join(p)
    }

    fn msg(&self) -> Message<'_> {
        Message {
            queue_id: "4LOCALUSR",
            sender: &self.sender,
            arrival: SystemTime::now(),
            content: self.queue.as_file(),
            content_offset: 9,
            content_len: BODY.len() as u64,
        }
    }

    /// A LocalDelivery with the test's tables and `extra` main.cf settings.
    fn local(&self, extra: &[(&str, &str)]) -> LocalDelivery {
        let _ = log_path();
        let mut main = postern_config::MainCf::parse("", &self.path("main.cf")).unwrap();
        main.set(
            "alias_maps",
            &format!("hash:{}", self.path("aliases").display()),
        );
        if !self.path("aliases").exists() {
            std::fs::write(self.path("aliases"), "").unwrap();
        }
        main.set("myhostname", "mail.example.test");
        main.set("mydestination", "example.test, localhost");
        main.set(
            "mail_spool_directory",
            &self.path("spool").display().to_string(),
        );
        main.set("home_mailbox", "Maildir/");
        for (k, v) in extra {
            main.set(k, v);
        }
        let ld = LocalDelivery::new(LocalConfig::from_main(&main).unwrap()).unwrap();
        assert!(
            matches!(ld.mode(), DeliveryMode::SwitchUser { .. }),
            "root must deliver as each recipient"
        );
        ld
    }

    fn deliver(&self, ld: &mut LocalDelivery, address: &str) -> Outcome {
        let mut fwd = NoForward::default();
        let mailbox = Mailbox::parse(address).expect("test address");
        let o = ld.deliver(&self.msg(), &mailbox, address, &mut fwd);
        assert_eq!(fwd.calls, 0);
        o
    }
}

fn sent(o: &Outcome) -> bool {
    o.is_success()
}

fn owner_mode(p: &Path) -> (u32, u32, u32) {
    let m = std::fs::symlink_metadata(p).unwrap();
    (m.uid(), m.gid(), m.mode() & 0o7777)
}

fn nobody() -> (u32, u32) {
    let u = nix::unistd::User::from_name("nobody").unwrap().unwrap();
    (u.uid.as_raw(), u.gid.as_raw())
}

#[test]
fn system_users_get_their_own_files_and_commands() {
    if !root_or_skip("system_users_get_their_own_files_and_commands") {
        return;
    }
    let _g = LOCK.lock().unwrap_or_else(|e| e.into_inner());
    let site = Site::new();
    let u1 = TestUser::create("pt-user1", &site.path("home"));
    let u2 = TestUser::create("pt-user2", &site.path("home"));
    let mut ld = site.local(&[]);
    let addr1 = "pt-user1@example.test";

    // Maildir: the file is the user's, 0600, and so are the directories.
    let o = site.deliver(&mut ld, addr1);
    assert!(sent(&o), "{o:?}");
    let files = u1.maildir_new();
    assert_eq!(files.len(), 1);
    assert_eq!(owner_mode(&files[0]), (u1.uid, u1.gid, 0o600));
    assert_eq!(owner_mode(&u1.home.join("Maildir")).0, u1.uid);
    assert_eq!(owner_mode(&u1.home.join("Maildir/tmp")).0, u1.uid);
    let text = std::fs::read_to_string(&files[0]).unwrap();
    assert!(
        text.starts_with("Return-Path: <sender@remote.example>\n"),
        "{text}"
    );
    assert!(text.contains(&format!("Delivered-To: {addr1}\n")), "{text}");

    // mbox in the spool: created for the user, group mail, 0600; no dotlock left.
    let mut mbox_ld = site.local(&[("home_mailbox", "")]);
    let o = site.deliver(&mut mbox_ld, "pt-user2@example.test");
    assert!(sent(&o), "{o:?}");
    let spool = site.path("spool/pt-user2");
    let mail_gid = nix::unistd::Group::from_name("mail")
        .unwrap()
        .map(|g| g.gid.as_raw())
        .unwrap_or(u2.gid);
    assert_eq!(owner_mode(&spool), (u2.uid, mail_gid, 0o600));
    assert!(!site.path("spool/pt-user2.lock").exists());
    let o = site.deliver(&mut mbox_ld, "pt-user2@example.test");
    assert!(sent(&o), "{o:?}");
    let mbox = std::fs::read_to_string(&spool).unwrap();
    assert_eq!(
        mbox.matches("\nFrom sender@remote.example  ").count() + 1,
        2,
        "{mbox}"
    );
    assert_eq!(owner_mode(&spool), (u2.uid, mail_gid, 0o600));

    // |command from ~/.forward runs as the user, with a clean environment.
    let out = u1.home.join("uid.out");
    let saved = u1.home.join("saved.mbox");
    u1.write_forward(
        &format!(
            "\"|id -u > {o}; id -g >> {o}; env | sort >> {o}\", {s}\n",
            o = out.display(),
            s = saved.display()
        ),
        u1.uid,
        0o644,
    );
    let o = site.deliver(&mut ld, addr1);
    assert!(sent(&o), "{o:?}");
    let got = std::fs::read_to_string(&out).unwrap();
    let mut lines = got.lines();
    assert_eq!(lines.next(), Some(u1.uid.to_string().as_str()), "{got}");
    assert_eq!(lines.next(), Some(u1.gid.to_string().as_str()), "{got}");
    assert!(got.contains("USER=pt-user1\n"), "{got}");
    assert!(
        got.contains(&format!("HOME={}\n", u1.home.display())),
        "{got}"
    );
    assert!(
        !got.contains("CARGO") && !got.contains("RUST"),
        "environment leaked: {got}"
    );
    assert_eq!(owner_mode(&out).0, u1.uid);
    // ... and the /file target from the same .forward is written as the user.
    assert_eq!(owner_mode(&saved).0, u1.uid);
    assert!(
        std::fs::read_to_string(&saved)
            .unwrap()
            .contains("Subject: hello")
    );
    assert_eq!(
        u1.maildir_new().len(),
        1,
        "the .forward replaced the mailbox"
    );

    // The user cannot make local write where the user could not.
    let rootonly = site.path("rootonly");
    std::fs::create_dir(&rootonly).unwrap();
    std::fs::set_permissions(&rootonly, std::fs::Permissions::from_mode(0o755)).unwrap();
    u1.write_forward(&format!("{}/stolen\n", rootonly.display()), u1.uid, 0o600);
    let o = site.deliver(&mut ld, addr1);
    assert!(
        o.is_temporary() && o.text().contains("ermission denied"),
        "{o:?}"
    );
    assert!(!rootonly.join("stolen").exists());

    // A world-writable .forward is refused: mail goes to the Maildir, the log says why.
    let fwd = u1.write_forward(&format!("{}\n", saved.display()), u1.uid, 0o666);
    let before = std::fs::read_to_string(&saved).unwrap();
    let o = site.deliver(&mut ld, addr1);
    assert!(sent(&o), "{o:?}");
    assert_eq!(u1.maildir_new().len(), 2);
    assert_eq!(std::fs::read_to_string(&saved).unwrap(), before);
    let log = log_text();
    let want = format!(
        "warning: forward file of pt-user1: {}: group or world writable (mode 0666): refused",
        fwd.display()
    );
    assert!(log.contains(&want), "log lacks {want:?}:\n{log}");

    // A .forward owned by another user is refused.
    u1.write_forward(&format!("{}\n", saved.display()), u2.uid, 0o644);
    let o = site.deliver(&mut ld, addr1);
    assert!(sent(&o), "{o:?}");
    assert_eq!(u1.maildir_new().len(), 3);
    assert_eq!(std::fs::read_to_string(&saved).unwrap(), before);
    let want = format!(
        "{}: owned by uid {}, not by uid {} or root: refused",
        fwd.display(),
        u2.uid,
        u1.uid
    );
    assert!(log_text().contains(&want), "log lacks {want:?}");

    // A .forward in a group-writable home (no sticky bit) is refused too.
    u1.write_forward(&format!("{}\n", saved.display()), u1.uid, 0o644);
    std::fs::set_permissions(&u1.home, std::fs::Permissions::from_mode(0o775)).unwrap();
    let o = site.deliver(&mut ld, addr1);
    assert!(sent(&o), "{o:?}");
    assert_eq!(u1.maildir_new().len(), 4);
    assert!(log_text().contains("without the sticky bit"));
    std::fs::set_permissions(&u1.home, std::fs::Permissions::from_mode(0o755)).unwrap();

    // A symlinked .forward is refused.
    std::fs::remove_file(&fwd).unwrap();
    let real = u1.home.join("real-forward");
    std::fs::write(&real, format!("{}\n", saved.display())).unwrap();
    std::os::unix::fs::symlink(&real, &fwd).unwrap();
    let o = site.deliver(&mut ld, addr1);
    assert!(sent(&o), "{o:?}");
    assert_eq!(u1.maildir_new().len(), 5);
    assert!(log_text().contains(&format!("{}: is a symbolic link: refused", fwd.display())));

    // Every Maildir file is still the user's.
    for f in u1.maildir_new() {
        assert_eq!(owner_mode(&f), (u1.uid, u1.gid, 0o600), "{}", f.display());
    }
}

#[test]
fn mail_for_root_is_delivered_as_default_privs() {
    if !root_or_skip("mail_for_root_is_delivered_as_default_privs") {
        return;
    }
    let _g = LOCK.lock().unwrap_or_else(|e| e.into_inner());
    let site = Site::new();
    let (nb_uid, nb_gid) = nobody();
    // Commands from aliases run as default_privs; they write here.
    let drop_dir = site.path("drop");
    std::fs::create_dir(&drop_dir).unwrap();
    std::fs::set_permissions(&drop_dir, std::fs::Permissions::from_mode(0o1777)).unwrap();
    std::fs::write(
        site.path("aliases"),
        format!(
            "runner: \"|id -u > {d}/alias.out\"\n",
            d = drop_dir.display()
        ),
    )
    .unwrap();
    // users_file: one line with uid 0, one without uid:gid.
    let vhome = site.path("vhome");
    for u in ["zero", "blank"] {
        std::fs::create_dir_all(vhome.join(u)).unwrap();
        nix::unistd::chown(
            &vhome.join(u),
            Some(nix::unistd::Uid::from_raw(nb_uid)),
            Some(nix::unistd::Gid::from_raw(nb_gid)),
        )
        .unwrap();
    }
    std::fs::set_permissions(&vhome, std::fs::Permissions::from_mode(0o755)).unwrap();
    std::fs::write(
        site.path("users"),
        format!(
            "zero:{{PLAIN}}x:0:0::{v}/zero::\nblank:{{PLAIN}}x:::::\n",
            v = vhome.display()
        ),
    )
    .unwrap();
    let mut ld = site.local(&[
        ("home_mailbox", ""),
        // No .forward for root in this test, wherever root's home is.
        (
            "forward_path",
            &format!("{}/fwd/$user", site.path("").display()),
        ),
        ("users_file", &site.path("users").display().to_string()),
        ("virtual_mailbox_base", &vhome.display().to_string()),
    ]);

    // root (no alias): the spool mailbox is written as nobody, with a warning.
    let o = site.deliver(&mut ld, "root@example.test");
    assert!(sent(&o), "{o:?}");
    let (uid, _, mode) = owner_mode(&site.path("spool/root"));
    assert_eq!((uid, mode), (nb_uid, 0o600));
    assert!(
        log_text()
            .contains("warning: delivering mail for root as nobody: alias root to a real user"),
        "{}",
        log_text()
    );

    // users_file line with uid 0: delivered as nobody too.
    let o = site.deliver(&mut ld, "zero@example.test");
    assert!(sent(&o), "{o:?}");
    let new: Vec<_> = std::fs::read_dir(vhome.join("zero/Maildir/new"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    assert_eq!(new.len(), 1);
    assert_eq!(owner_mode(&new[0]), (nb_uid, nb_gid, 0o600));
    assert!(log_text().contains("delivering mail for zero as nobody"));

    // users_file line without uid:gid: default_privs.
    let o = site.deliver(&mut ld, "blank@example.test");
    assert!(sent(&o), "{o:?}");
    let new: Vec<_> = std::fs::read_dir(vhome.join("blank/Maildir/new"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    assert_eq!(owner_mode(&new[0]).0, nb_uid);

    // |command from the aliases file: as nobody, never as root.
    let o = site.deliver(&mut ld, "runner@example.test");
    assert!(sent(&o), "{o:?}");
    let out = std::fs::read_to_string(drop_dir.join("alias.out")).unwrap();
    assert_eq!(out.trim(), nb_uid.to_string());
    assert_eq!(owner_mode(&drop_dir.join("alias.out")).0, nb_uid);
}

#[test]
fn a_user_without_a_home_is_deferred_with_a_clear_reason() {
    if !root_or_skip("a_user_without_a_home_is_deferred_with_a_clear_reason") {
        return;
    }
    let _g = LOCK.lock().unwrap_or_else(|e| e.into_inner());
    let site = Site::new();
    let u = TestUser::create("pt-user3", &site.path("home"));
    std::fs::remove_dir_all(&u.home).unwrap();
    // users_file names a file that does not exist yet: local still starts.
    let users = site.path("users-later");
    let mut ld = site.local(&[("users_file", &users.display().to_string())]);
    let o = site.deliver(&mut ld, "pt-user3@example.test");
    match &o {
        o if o.is_temporary() => {
            assert!(o.text().contains("users file unavailable"), "{o}")
        }
        other => panic!("want deferred while users_file is missing: {other:?}"),
    }
    std::fs::write(&users, "").unwrap();
    let o = site.deliver(&mut ld, "pt-user3@example.test");
    match &o {
        o if o.is_temporary() => {
            assert_eq!(o.code().to_string(), "4.3.0");
            assert!(
                o.text().contains(&format!(
                    "user \"pt-user3\" has no home directory {}",
                    u.home.display()
                )),
                "{o}"
            );
        }
        other => panic!("want deferred: {other:?}"),
    }
    assert!(!u.home.exists(), "local never creates a home directory");
}

#[test]
fn mail_for_root_goes_to_the_spool_when_home_mailbox_is_set() {
    if !root_or_skip("mail_for_root_goes_to_the_spool_when_home_mailbox_is_set") {
        return;
    }
    let _g = LOCK.lock().unwrap_or_else(|e| e.into_inner());
    let site = Site::new();
    let (nb_uid, _) = nobody();
    // The shipped main.cf's home_mailbox = Maildir/: root's home is not
    // writable by default_privs, so the mail would wait forever there.
    let mut ld = site.local(&[(
        "forward_path",
        &format!("{}/fwd/$user", site.path("").display()),
    )]);
    let o = site.deliver(&mut ld, "root@example.test");
    assert!(sent(&o), "{o:?}");
    let spool = site.path("spool/root");
    let text = std::fs::read_to_string(&spool).expect("root's spool mbox");
    assert!(text.contains("From the body"), "{text}");
    assert_eq!(owner_mode(&spool).0, nb_uid);
}
