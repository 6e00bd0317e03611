//! Privilege separation of a real instance, checked from the outside: every
//! service process's ids, capabilities, no_new_privs and root directory, as
//! docs/security.md and master.cf say; then master.cf is edited and reloaded.

use postern_tests::*;
use std::net::SocketAddr;
use std::time::Duration;

const T: Duration = Duration::from_secs(30);

/// The fields of /proc/PID/status we check.
#[derive(Debug)]
struct Status {
    uid: Vec<u32>,
    gid: Vec<u32>,
    groups: Vec<u32>,
    caps: Vec<(String, String)>,
    no_new_privs: String,
}

fn status(pid: i32) -> Option<Status> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let field = |name: &str| {
        text.lines()
            .find_map(|l| {
                l.strip_prefix(&format!("{name}:"))
                    .map(|v| v.trim().to_string())
            })
            .unwrap_or_default()
    };
    let nums = |v: String| {
        v.split_whitespace()
            .filter_map(|x| x.parse().ok())
            .collect::<Vec<u32>>()
    };
    Some(Status {
        uid: nums(field("Uid")),
        gid: nums(field("Gid")),
        groups: nums(field("Groups")),
        caps: ["CapInh", "CapPrm", "CapEff", "CapBnd", "CapAmb"]
            .iter()
            .map(|c| (c.to_string(), field(c)))
            .collect(),
        no_new_privs: field("NoNewPrivs"),
    })
}

fn root_of(pid: i32) -> String {
    std::fs::read_link(format!("/proc/{pid}/root"))
        .map(|p| p.display().to_string())
        .unwrap_or_default()
}

fn uid_of(user: &str) -> u32 {
    nix::unistd::User::from_name(user)
        .unwrap()
        .unwrap_or_else(|| panic!("no user {user}"))
        .uid
        .as_raw()
}

fn gid_of_group(group: &str) -> u32 {
    nix::unistd::Group::from_name(group)
        .unwrap()
        .unwrap_or_else(|| panic!("no group {group}"))
        .gid
        .as_raw()
}

/// Asserts a dropped service: all ids = user, no capability at all, no_new_privs.
fn assert_dropped(name: &str, pid: i32, user: &str, primary_group: &str, extra: &[&str]) {
    let st = status(pid).unwrap_or_else(|| panic!("{name} pid {pid} gone"));
    let uid = uid_of(user);
    assert_eq!(st.uid, vec![uid; 4], "{name}: Uid");
    assert_eq!(st.gid, vec![gid_of_group(primary_group); 4], "{name}: Gid");
    let mut want: Vec<u32> = extra.iter().map(|g| gid_of_group(g)).collect();
    want.sort();
    let mut got = st.groups.clone();
    got.sort();
    assert_eq!(got, want, "{name}: supplementary groups");
    for (cap, v) in &st.caps {
        assert_eq!(v, "0000000000000000", "{name}: {cap}");
    }
    assert_eq!(st.no_new_privs, "1", "{name}: NoNewPrivs");
}

#[test]
fn every_service_runs_as_master_cf_says_and_reload_changes_it() {
    if !is_root() {
        eprintln!("skipped: privilege separation needs root");
        return;
    }
    let mut inst = Instance::new(Options::default());
    // cleanup and qmgr chrooted (they only need the queue); smtpd not (it
    // reads the recipient tables at RCPT time).
    let port = inst.smtp_port;
    let master_cf = format!(
        "127.0.0.1:{port} inet n - n - - smtpd\n\
         cleanup unix - - y - 0 cleanup\n\
         qmgr unix - - y 300 1 qmgr\n\
         local unix - n n - - local\n\
         auth unix - - n - - auth\n"
    );
    std::fs::write(inst.dir.join("master.cf"), &master_cf).unwrap();
    inst.start();
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    // Mail flows through the separated services.
    let mut open = Smtp::connect(addr);
    assert_eq!(open.cmd("EHLO client.example").code, 250);
    queued_id(&open.send(
        "s@remote.example",
        &["alice@example.test"],
        b"Subject: separated\r\n\r\nhello\r\n",
    ));
    inst.wait_mail("alice", 1, T);
    let queue = inst.dir.join("queue").display().to_string();
    // The jail has the bits of /etc a service may need (names, time zone).
    for f in ["hosts", "services"] {
        if std::path::Path::new("/etc").join(f).exists() {
            assert!(
                inst.dir.join("queue/etc").join(f).is_file(),
                "queue/etc/{f} missing"
            );
        }
    }

    // auth (smtpd asked it about alice: users_file is postern-auth's now).
    let auth = inst.pids_of("auth");
    assert!(!auth.is_empty(), "smtpd's recipient lookup started auth");
    for &pid in &auth {
        assert_dropped(
            "auth",
            pid,
            "postern-auth",
            "postern-auth",
            &["postern-ipc"],
        );
        assert_eq!(root_of(pid), "/", "auth is not chrooted");
    }

    let smtpd = inst.pids_of("smtpd");
    assert!(!smtpd.is_empty());
    for &pid in &smtpd {
        assert_dropped(
            "smtpd",
            pid,
            "postern-smtpd",
            "postern-smtpd",
            &["postern-ipc"],
        );
        assert_eq!(root_of(pid), "/", "smtpd is not chrooted");
    }
    for &pid in &inst.pids_of("cleanup") {
        assert_dropped(
            "cleanup",
            pid,
            "postern-cleanup",
            "postern",
            &["postern-ipc"],
        );
        assert_eq!(root_of(pid), queue, "cleanup is chrooted at the queue");
    }
    let qmgr = inst.pids_of("qmgr");
    assert_eq!(qmgr.len(), 1);
    assert_dropped("qmgr", qmgr[0], "postern-qmgr", "postern", &["postern-ipc"]);
    assert_eq!(root_of(qmgr[0]), queue, "qmgr is chrooted at the queue");
    for &pid in &inst.pids_of("local") {
        let st = status(pid).unwrap();
        assert_eq!(
            st.uid,
            vec![0; 4],
            "local keeps root to switch to each recipient"
        );
        assert!(
            st.groups.is_empty(),
            "local's supplementary groups are reset: {:?}",
            st.groups
        );
    }
    // The delivered file belongs to the recipient's user, not root.
    let new = inst.dir.join("mail/alice/Maildir/new");
    let f = std::fs::read_dir(&new).unwrap().next().unwrap().unwrap();
    use std::os::unix::fs::MetadataExt;
    assert_eq!(
        f.metadata().unwrap().uid(),
        uid_of("nobody"),
        "users_file user without uid → default_privs"
    );

    // Another user and no chroot for... cleanup chroot off, smtpd as nobody.
    let edited = master_cf
        .replace(
            &format!("127.0.0.1:{port} inet n - n - - smtpd"),
            &format!("127.0.0.1:{port} inet n nobody n - - smtpd"),
        )
        .replace(
            "cleanup unix - - y - 0 cleanup",
            "cleanup unix - - n - 0 cleanup",
        );
    std::fs::write(inst.dir.join("master.cf"), edited).unwrap();
    let out = inst.postern(&["reload"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // The session opened before the reload keeps its old smtpd and works.
    queued_id(&open.send(
        "s@remote.example",
        &["bob@example.test"],
        b"Subject: old smtpd\r\n\r\nstill\r\n",
    ));
    assert_eq!(open.cmd("QUIT").code, 221);
    // Old-generation smtpd processes finish their client and exit (an idle
    // one may still take a connection that races with its SIGHUP).
    assert!(
        wait_until(Duration::from_secs(10), || smtpd
            .iter()
            .all(|p| status(*p).is_none())),
        "old smtpd processes did not exit after the reload"
    );
    // A new session gets a new smtpd, running as nobody.
    queued_id(&Smtp::send_one(
        addr,
        "s@remote.example",
        &["bob@example.test"],
        b"Subject: new smtpd\r\n\r\nnew\r\n",
    ));
    inst.wait_mail("bob", 2, T);
    let nobody = uid_of("nobody");
    assert!(
        wait_until(Duration::from_secs(10), || inst
            .pids_of("smtpd")
            .iter()
            .any(|&p| status(p)
                .map(|s| s.uid == vec![nobody; 4])
                .unwrap_or(false))),
        "no smtpd runs as nobody after the reload"
    );
    for &pid in &inst.pids_of("smtpd") {
        if let Some(st) = status(pid)
            && st.uid == vec![nobody; 4]
        {
            assert_dropped(
                "smtpd (nobody)",
                pid,
                "nobody",
                &group_name_of_user("nobody"),
                &["postern-ipc"],
            );
        }
    }
    for &pid in &inst.pids_of("cleanup") {
        if status(pid).is_some() && root_of(pid) == "/" {
            assert_dropped(
                "cleanup (no chroot)",
                pid,
                "postern-cleanup",
                "postern",
                &["postern-ipc"],
            );
        }
    }
    assert!(
        wait_until(Duration::from_secs(10), || inst
            .pids_of("cleanup")
            .iter()
            .any(|&p| root_of(p) == "/")),
        "no unchrooted cleanup after the reload"
    );
    inst.stop();
}

fn group_name_of_user(user: &str) -> String {
    let u = nix::unistd::User::from_name(user).unwrap().unwrap();
    nix::unistd::Group::from_gid(u.gid).unwrap().unwrap().name
}

#[test]
fn the_smtpd_user_cannot_read_the_queue() {
    if !is_root() {
        eprintln!("skipped: needs root");
        return;
    }
    let mut inst = Instance::new(Options::default());
    inst.start();
    let incoming = inst.dir.join("queue/incoming");
    let active = inst.dir.join("queue/active");
    for dir in [&incoming, &active] {
        let out = std::process::Command::new("runuser")
            .args(["-u", "postern-smtpd", "--", "ls"])
            .arg(dir)
            .output()
            .expect("runuser");
        assert!(
            !out.status.success(),
            "postern-smtpd could list {}",
            dir.display()
        );
    }
    inst.stop();
}
