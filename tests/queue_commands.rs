//! `postern queue`: mailq with defer reasons, -j, show, hold, release,
//! flush, requeue and delete against a running instance whose relayhost
//! refuses connections until the test starts a scripted SMTP server there.

use postern_tests::scripted::{ScriptedServer, Session};
use postern_tests::*;
use std::io::Write;
use std::os::unix::process::CommandExt;
use std::process::{Command, Output, Stdio};
use std::time::Duration;

const T: Duration = Duration::from_secs(30);

fn text(o: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

fn ok(o: Output) -> String {
    assert!(o.status.success(), "{}", text(&o));
    text(&o)
}

/// The queue holding `id` ("" when none).
fn where_is(inst: &Instance, id: &str) -> String {
    for q in ["incoming", "active", "deferred", "hold"] {
        if inst.queue_files(q).iter().any(|f| f == id) {
            return q.into();
        }
    }
    String::new()
}

/// Number of delivery attempts logged for `id` that deferred it.
fn deferrals(inst: &Instance, id: &str) -> usize {
    inst.log()
        .lines()
        .filter(|l| l.contains(&format!("{id}: to=<")) && l.contains("status=deferred"))
        .count()
}

/// `postern -c DIR ARGS` as user nobody.
fn as_nobody(inst: &Instance, args: &[&str]) -> Output {
    let nobody = nix::unistd::User::from_name("nobody").unwrap().unwrap();
    Command::new(bin_dir().join("postern"))
        .arg("-c")
        .arg(&inst.dir)
        .args(args)
        .uid(nobody.uid.as_raw())
        .gid(nobody.gid.as_raw())
        .output()
        .unwrap()
}

#[test]
fn queue_commands_end_to_end() {
    let port = free_port();
    let mut inst = Instance::new(Options {
        mynetworks: "127.0.0.0/8".into(),
        // Long backoffs: nothing is retried unless a command asks for it.
        main_extra: format!(
            "relayhost = [127.0.0.1]:{port}\nsmtp_connect_timeout = 2s\n\
             minimal_backoff_time = 3600s\nmaximal_backoff_time = 3600s\n"
        ),
        master_extra: "smtp unix - - n - - smtp\n".into(),
    });
    inst.start();
    let mut c = inst.smtp();
    let a = queued_id(&c.send(
        "bob@example.test",
        &["far@remote.example"],
        b"Subject: first\r\n\r\nbody one\r\n",
    ));
    let b = queued_id(&c.send(
        "bob@example.test",
        &["other@remote.example"],
        b"Subject: second\r\n\r\nbody two\r\n",
    ));
    for id in [&a, &b] {
        assert!(
            wait_until(T, || where_is(&inst, id) == "deferred"
                && deferrals(&inst, id) == 1),
            "{id} not deferred:\n{}",
            inst.log()
        );
    }

    // mailq: the reason above the recipient, as Postfix's mailq.
    let why = format!("(connect to 127.0.0.1[127.0.0.1]:{port}: Connection refused)");
    let list = ok(inst.postern(&["queue", "list"]));
    let lines: Vec<&str> = list.lines().collect();
    let at = lines
        .iter()
        .position(|l| l.starts_with(&format!("{a} ")))
        .unwrap_or_else(|| panic!("{a} not listed:\n{list}"));
    assert!(lines[at].ends_with(" bob@example.test"), "{list}");
    assert_eq!(lines[at + 1].trim_start(), why, "{list}");
    assert!(lines[at + 1].len() >= 78 || lines[at + 1].starts_with('('));
    assert_eq!(
        lines[at + 2],
        format!("{:41}far@remote.example", ""),
        "{list}"
    );
    assert!(list.ends_with(" Kbytes in 2 Requests.\n"), "{list}");
    assert_eq!(ok(inst.postern(&["mailq"])), list, "mailq is queue list");

    // -j: JSON lines with Postfix's names.
    let json = inst.postern(&["queue", "list", "-j"]);
    let json_text = ok(json);
    let mut py = Command::new("python3")
        .arg("-c")
        .arg(
            "import json,sys\n\
             for l in sys.stdin:\n\
             \x20 m=json.loads(l)\n\
             \x20 r=m['recipients'][0]\n\
             \x20 print(m['queue_name'],m['queue_id'],type(m['arrival_time']).__name__,m['message_size']>0,m['sender'],r['address'],r['delay_reason'])\n",
        )
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    py.stdin
        .take()
        .unwrap()
        .write_all(json_text.as_bytes())
        .unwrap();
    let parsed = py.wait_with_output().unwrap();
    assert!(parsed.status.success(), "{json_text}");
    let reason = &why[1..why.len() - 1];
    assert_eq!(
        String::from_utf8_lossy(&parsed.stdout),
        format!(
            "deferred {a} int True bob@example.test far@remote.example {reason}\n\
             deferred {b} int True bob@example.test other@remote.example {reason}\n"
        )
    );

    // show: envelope and content.
    let shown = ok(inst.postern(&["queue", "show", &a]));
    assert!(
        shown.starts_with(&format!("*** ENVELOPE RECORDS deferred/{a} ***\n")),
        "{shown}"
    );
    assert!(shown.contains("\nsender: bob@example.test\n"), "{shown}");
    assert!(
        shown.contains("\nrecipient: far@remote.example\n"),
        "{shown}"
    );
    assert!(shown.contains(&format!("delay_reason: far@remote.example: {reason}\n")));
    assert!(shown.contains("Subject: first\n\nbody one\n"), "{shown}");
    assert!(shown.ends_with(&format!("*** MESSAGE FILE END deferred/{a} ***\n")));

    if is_root() {
        // Only root changes the queue; the private qmgr socket is not for
        // everyone either.
        for op in ["delete", "hold", "release", "requeue"] {
            let o = as_nobody(&inst, &["queue", op, &a]);
            assert!(!o.status.success(), "{op}");
            assert!(
                text(&o).contains(
                    "postsuper: fatal: use of this command is reserved for the superuser"
                ),
                "{op}: {}",
                text(&o)
            );
        }
        let o = as_nobody(&inst, &["queue", "flush"]);
        assert!(!o.status.success());
        assert!(
            text(&o).contains(
                "permission denied (flush needs root or membership in group postern-ipc)"
            ),
            "{}",
            text(&o)
        );
        assert_eq!(where_is(&inst, &a), "deferred");
    }

    // requeue: back through incoming/, tried again at once.
    let out = ok(inst.postern(&["queue", "requeue", &b]));
    assert_eq!(
        out,
        format!("postsuper: {b}: requeued\npostsuper: Requeued: 1 message\n")
    );
    assert!(
        wait_until(T, || deferrals(&inst, &b) == 2
            && where_is(&inst, &b) == "deferred"),
        "{b} not retried after requeue:\n{}",
        inst.log()
    );

    // delete: gone, with its defer log, and logged.
    let defer_b = inst.dir.join("queue/defer").join(&b);
    assert!(defer_b.exists());
    let out = ok(inst.postern(&["queue", "delete", &b]));
    assert_eq!(
        out,
        format!("postsuper: {b}: removed\npostsuper: Deleted: 1 message\n")
    );
    assert_eq!(where_is(&inst, &b), "");
    assert!(!defer_b.exists());
    assert!(
        inst.log()
            .lines()
            .any(|l| l.contains("/postsuper[") && l.ends_with(&format!(": {b}: removed"))),
        "{}",
        inst.log()
    );
    let o = inst.postern(&["queue", "delete", &b]);
    assert!(!o.status.success());
    assert!(text(&o).contains(&format!("postsuper: warning: {b}: no such message")));

    // hold: marked '!', and not delivered even on flush.
    let out = ok(inst.postern(&["queue", "hold", "ALL"]));
    assert_eq!(
        out,
        format!("postsuper: {a}: placed on hold\npostsuper: Placed on hold: 1 message\n")
    );
    assert!(ok(inst.postern(&["mailq"])).contains(&format!("\n{a}! ")));
    ok(inst.postern(&["queue", "flush"]));
    std::thread::sleep(Duration::from_secs(3));
    assert_eq!(
        deferrals(&inst, &a),
        1,
        "held mail was tried:\n{}",
        inst.log()
    );
    assert_eq!(where_is(&inst, &a), "hold");

    // release: due at once, qmgr is woken and tries it again.
    let out = ok(inst.postern(&["queue", "release", &a]));
    assert_eq!(
        out,
        format!("postsuper: {a}: released from hold\npostsuper: Released from hold: 1 message\n")
    );
    assert!(wait_until(T, || where_is(&inst, &a) == "deferred"
        && deferrals(&inst, &a) >= 2));
    // flush: delivered at once, though the next retry is an hour away (and
    // the destination may be marked dead).
    let server =
        ScriptedServer::start(([127, 0, 0, 1], port).into(), vec![Session::default()]).unwrap();
    ok(inst.postern(&["flush"]));
    assert!(
        wait_until(Duration::from_secs(15), || server.accepted().len() == 1),
        "not delivered after flush:\n{}",
        inst.log()
    );
    assert!(wait_until(T, || inst.queue_empty()), "{}", inst.log());
    assert!(!inst.dir.join("queue/defer").join(&a).exists());
    assert_eq!(
        ok(inst.postern(&["queue", "list"])),
        "Mail queue is empty\n"
    );
    assert_eq!(ok(inst.postern(&["queue", "list", "-j"])), "");
}
