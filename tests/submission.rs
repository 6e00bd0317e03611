//! Local submission end to end: `sendmail` (the postern binary called by
//! that name) → postdrop → maildrop/ → pickup → cleanup → qmgr → local,
//! on a real instance; plus mailq and newaliases.

use postern_tests::{Instance, Options, bin_dir, header_of, wait_until};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::Duration;

const WAIT: Duration = Duration::from_secs(30);

/// A directory with `sendmail`, `mailq` and `newaliases` symlinks to the
/// postern binary, as an installation has them.
fn links() -> (tempfile::TempDir, PathBuf) {
    let t = tempfile::tempdir().unwrap();
    for name in ["sendmail", "mailq", "newaliases"] {
        std::os::unix::fs::symlink(bin_dir().join("postern"), t.path().join(name)).unwrap();
    }
    let p = t.path().to_path_buf();
    (t, p)
}

/// Runs one of the linked commands against `dir` with `input` on stdin.
fn run(links: &Path, name: &str, dir: &Path, args: &[&str], input: &[u8]) -> Output {
    let mut child = Command::new(links.join(name))
        .env("MAIL_CONFIG", dir)
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run command");
    let mut stdin = child.stdin.take().unwrap();
    let _ = stdin.write_all(input);
    drop(stdin);
    child.wait_with_output().unwrap()
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

fn started() -> Instance {
    let mut inst = Instance::new(Options::default());
    inst.start();
    inst
}

#[test]
fn sendmail_t_delivers_to_to_cc_and_bcc_and_removes_bcc() {
    let inst = started();
    let (_t, l) = links();
    let msg = b"From: Sender <sender@example.org>\n\
        To: Alice <alice@example.test>\n\
        Cc: \"Bob, B.\" <bob@example.test>\n\
        Bcc: carol\n\
        Subject: to everyone\n\
        \n\
        hello all\n";
    let out = run(&l, "sendmail", &inst.dir, &["-t"], msg);
    assert!(out.status.success(), "{out:?}");
    for user in ["alice", "bob", "carol"] {
        let got = inst.wait_mail(user, 1, WAIT);
        let h = header_of(&got[0]);
        assert!(h.contains("Subject: to everyone\n"), "{h}");
        assert!(h.contains("Cc: \"Bob, B.\" <bob@example.test>\n"), "{h}");
        assert!(
            !h.to_ascii_lowercase().contains("bcc:"),
            "Bcc leaked to {user}: {h}"
        );
        assert!(text(&got[0]).ends_with("\nhello all\n"));
    }
    let log = inst.log();
    assert!(
        log.contains("postern/pickup[") && log.contains(": uid="),
        "{log}"
    );
    assert!(inst.queue_files("maildrop").is_empty());
}

#[test]
fn dash_f_sets_the_return_path_and_dash_capital_f_the_from() {
    let inst = started();
    let (_t, l) = links();
    let out = run(
        &l,
        "sendmail",
        &inst.dir,
        &[
            "-f",
            "list-owner@example.org",
            "-F",
            "Test User",
            "-oem",
            "-v",
            "alice@example.test",
        ],
        b"Subject: with -f\n\nbody\n",
    );
    assert!(out.status.success(), "{out:?}");
    let got = inst.wait_mail("alice", 1, WAIT);
    let h = header_of(&got[0]);
    assert!(
        h.starts_with("Return-Path: <list-owner@example.org>\n"),
        "{h}"
    );
    assert!(
        h.contains("From: Test User <list-owner@example.org>\n"),
        "{h}"
    );
    // Locally submitted: Received names the user, cleanup added the rest.
    assert!(h.contains("from userid"), "{h}");
    assert!(h.contains("Message-Id: <") && h.contains("Date: "), "{h}");
}

#[test]
fn a_lone_dot_ends_input_unless_dash_i() {
    let inst = started();
    let (_t, l) = links();
    let msg = b"Subject: dots\r\n\r\nbefore\r\n.\r\nafter\r\n";
    let out = run(
        &l,
        "sendmail",
        &inst.dir,
        &["-i", "alice@example.test"],
        msg,
    );
    assert!(out.status.success(), "{out:?}");
    let out = run(&l, "sendmail", &inst.dir, &["bob@example.test"], msg);
    assert!(out.status.success(), "{out:?}");
    let a = text(&inst.wait_mail("alice", 1, WAIT)[0]);
    assert!(a.ends_with("\n\nbefore\n.\nafter\n"), "{a:?}");
    let b = text(&inst.wait_mail("bob", 1, WAIT)[0]);
    assert!(b.ends_with("\n\nbefore\n"), "{b:?}");
    assert!(!b.contains("after"), "{b:?}");
}

#[test]
fn sendmail_bs_speaks_smtp_on_stdin() {
    let inst = started();
    let (_t, l) = links();
    let conversation = b"EHLO me.example\r\n\
        MAIL FROM:<robot@example.org>\r\n\
        RCPT TO:<alice@example.test>\r\n\
        DATA\r\n\
        Subject: via -bs\r\n\
        \r\n\
        ..stuffed\r\n\
        .\r\n\
        QUIT\r\n";
    let out = run(&l, "sendmail", &inst.dir, &["-bs"], conversation);
    assert!(out.status.success(), "{out:?}");
    let o = text(&out.stdout);
    assert!(o.starts_with("220 mail.example.test ESMTP"), "{o}");
    assert!(o.contains("\r\n354 "), "{o}");
    assert!(o.contains("250 2.0.0 Ok: queued as "), "{o}");
    assert!(o.ends_with("221 2.0.0 Bye\r\n"), "{o}");
    let got = inst.wait_mail("alice", 1, WAIT);
    let m = text(&got[0]);
    assert!(m.starts_with("Return-Path: <robot@example.org>\n"), "{m}");
    assert!(
        m.contains("Subject: via -bs\n") && m.ends_with("\n.stuffed\n"),
        "{m}"
    );
}

#[test]
fn submission_while_master_is_stopped_is_delivered_after_start() {
    let mut inst = started();
    inst.stop();
    let (_t, l) = links();
    let out = run(
        &l,
        "sendmail",
        &inst.dir,
        &["alice"],
        b"Subject: while down\n\nqueued in maildrop\n",
    );
    assert!(out.status.success(), "{out:?}");
    let id = text(&out.stdout);
    assert!(id.is_empty(), "sendmail prints nothing: {id:?}");
    assert_eq!(inst.queue_files("maildrop").len(), 1);
    std::thread::sleep(Duration::from_millis(300));
    assert!(inst.mailbox("alice").is_empty());
    inst.start();
    let got = inst.wait_mail("alice", 1, WAIT);
    assert!(header_of(&got[0]).contains("Subject: while down\n"));
    assert!(wait_until(WAIT, || inst.queue_files("maildrop").is_empty()));
}

#[test]
fn mailq_lists_a_deferred_message() {
    let inst = started();
    let (_t, l) = links();
    let out = run(&l, "mailq", &inst.dir, &[], b"");
    assert!(out.status.success(), "{out:?}");
    assert_eq!(text(&out.stdout), "Mail queue is empty\n");
    // No smtp transport in this instance: remote mail is deferred.
    let out = run(
        &l,
        "sendmail",
        &inst.dir,
        &["-f", "alice@example.test", "someone@remote.example"],
        b"Subject: stuck\n\nwaits\n",
    );
    assert!(out.status.success(), "{out:?}");
    assert!(
        wait_until(WAIT, || inst.log().contains("status=deferred")),
        "{}",
        inst.log()
    );
    let out = run(&l, "sendmail", &inst.dir, &["-bp"], b"");
    assert!(out.status.success(), "{out:?}");
    let q = text(&out.stdout);
    let lines: Vec<&str> = q.lines().collect();
    assert!(lines[0].starts_with("-Queue ID-  --Size--"), "{q}");
    assert!(lines[1].ends_with(" alice@example.test"), "{q}");
    // The reason it waits, from qmgr's defer log, then the recipient.
    assert_eq!(
        lines[2].trim_start(),
        format!(
            "(delivery temporarily suspended: connect to {}/queue/private/smtp: No such file or directory)",
            inst.dir.display()
        ),
        "{q}"
    );
    assert_eq!(lines[3].trim_start(), "someone@remote.example", "{q}");
    assert!(
        lines.last().unwrap().ends_with(" Kbytes in 1 Request."),
        "{q}"
    );
}

#[test]
fn newaliases_counts_aliases_and_reports_errors_with_line_numbers() {
    let inst = Instance::new(Options::default());
    let (_t, l) = links();
    let out = run(&l, "newaliases", &inst.dir, &[], b"");
    assert!(out.status.success(), "{out:?}");
    assert_eq!(
        text(&out.stdout),
        format!(
            "postern: {}: 5 aliases\n",
            inst.dir.join("aliases").display()
        )
    );
    std::fs::write(
        inst.dir.join("aliases"),
        "ok: alice\n  , bob\n\"broken: carol\n",
    )
    .unwrap();
    let out = run(&l, "sendmail", &inst.dir, &["-bi"], b"");
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    let err = text(&out.stderr);
    assert!(
        err.contains(&format!("{}:3:", inst.dir.join("aliases").display())),
        "{err}"
    );
}

#[test]
fn bad_submissions_are_refused_with_sysexits() {
    let inst = started();
    let (_t, l) = links();
    let out = run(&l, "sendmail", &inst.dir, &["-Z", "alice"], b"x\n");
    assert_eq!(out.status.code(), Some(64), "{out:?}");
    assert!(text(&out.stderr).contains("invalid option"), "{out:?}");
    let out = run(&l, "sendmail", &inst.dir, &[], b"x\n");
    assert_eq!(out.status.code(), Some(64), "{out:?}");
    let out = run(&l, "sendmail", &inst.dir, &["bad address@"], b"x\n");
    assert_eq!(out.status.code(), Some(65), "{out:?}");
    assert!(
        text(&out.stderr).contains("bad recipient address syntax"),
        "{out:?}"
    );
    let out = run(
        &l,
        "sendmail",
        &inst.dir,
        &["-f", "a\u{1}b@@x", "alice"],
        b"x\n",
    );
    assert_eq!(out.status.code(), Some(65), "{out:?}");
    // postdrop refuses input that is not its framing, and forged identities.
    let mut child = Command::new(bin_dir().join("postdrop"))
        .env("MAIL_CONFIG", &inst.dir)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(b"MAIL FROM:<x>\r\n")
        .unwrap();
    let mut err = String::new();
    child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut err)
        .unwrap();
    assert_eq!(child.wait().unwrap().code(), Some(65), "{err}");
    assert!(inst.queue_files("maildrop").is_empty());
    std::thread::sleep(Duration::from_millis(500));
    assert!(inst.mailbox("alice").is_empty());
}

#[test]
fn an_unprivileged_user_submits_through_setgid_postdrop_while_master_is_down() {
    if !postern_tests::is_root() {
        eprintln!("skipped: needs root to act as another user and install the setgid postdrop");
        return;
    }
    let inst = Instance::new(Options::default());
    // Users, groups, queue permissions and the setgid postdrop.
    inst.install();
    use std::os::unix::fs::{MetadataExt, PermissionsExt};
    let postdrop = std::fs::metadata(bin_dir().join("postdrop")).unwrap();
    assert_eq!(
        postdrop.mode() & 0o7777,
        0o2755,
        "postdrop is setgid after install"
    );
    let t = tempfile::tempdir().unwrap();
    std::fs::set_permissions(t.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    std::os::unix::fs::symlink(bin_dir().join("postern"), t.path().join("sendmail")).unwrap();
    let out = Command::new("runuser")
        .args(["-u", "nobody", "--", "env"])
        .arg(format!("MAIL_CONFIG={}", inst.dir.display()))
        .arg(t.path().join("sendmail"))
        .arg("-t")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .and_then(|mut c| {
            c.stdin
                .take()
                .unwrap()
                .write_all(b"To: bob@example.test\nSubject: from nobody\n\nhi\n")?;
            c.wait_with_output()
        })
        .expect("runuser");
    assert!(
        out.status.success(),
        "sendmail as nobody: {}",
        text(&out.stderr)
    );
    // The maildrop file is the user's, readable by pickup's group only.
    let files = inst.queue_files("maildrop");
    assert_eq!(files.len(), 1, "{files:?}");
    let meta = std::fs::metadata(inst.dir.join("queue/maildrop").join(&files[0])).unwrap();
    let nobody = nix::unistd::User::from_name("nobody").unwrap().unwrap();
    let postdrop_gid = nix::unistd::Group::from_name("postdrop")
        .unwrap()
        .unwrap()
        .gid;
    assert_eq!(meta.uid(), nobody.uid.as_raw());
    assert_eq!(meta.gid(), postdrop_gid.as_raw());
    // Another user cannot list the maildrop (1730).
    let ls = Command::new("runuser")
        .args(["-u", "daemon", "--", "ls"])
        .arg(inst.dir.join("queue/maildrop"))
        .output()
        .unwrap();
    assert!(!ls.status.success(), "daemon could list maildrop/");
    // Start the mail system: pickup (as postern-pickup) feeds it in.
    let mut inst = inst;
    inst.start();
    let got = inst.wait_mail("bob", 1, WAIT);
    let h = header_of(&got[0]);
    assert!(h.contains("Subject: from nobody\n"), "{h}");
    assert!(h.contains("from userid nobody"), "{h}");
    assert!(h.contains("Return-Path: <nobody@"), "{h}");
    assert!(wait_until(WAIT, || inst.queue_files("maildrop").is_empty()));
}
