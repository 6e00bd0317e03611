//! Durability and supervision: kill -9 in the middle of a run loses nothing;
//! reload adds a listener without disturbing the running one.

use postern_tests::*;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

const T: Duration = Duration::from_secs(60);

/// Sends `n` messages from a few threads; returns the subjects that got 250.
fn send_many(addr: SocketAddr, n: usize, tag: &str, stop: Arc<AtomicBool>) -> Vec<String> {
    let accepted = Arc::new(Mutex::new(Vec::new()));
    let threads: Vec<_> = (0..4)
        .map(|t| {
            let accepted = accepted.clone();
            let tag = tag.to_string();
            let stop = stop.clone();
            std::thread::spawn(move || {
                for i in (t..n).step_by(4) {
                    if stop.load(Ordering::Relaxed) {
                        break;
                    }
                    let subject = format!("{tag}-{i}");
                    let body = format!("Subject: {subject}\r\n\r\nbody {i}\r\n");
                    // A refused or broken session is fine here (master may be
                    // dead); only mail that got 250 must be delivered.
                    let r = std::panic::catch_unwind(|| {
                        Smtp::send_one(
                            addr,
                            "s@remote.example",
                            &["alice@example.test", "bob@example.test"],
                            body.as_bytes(),
                        )
                    });
                    if let Ok(r) = r
                        && r.code == 250
                    {
                        accepted.lock().unwrap().push(subject);
                    }
                }
            })
        })
        .collect();
    for t in threads {
        let _ = t.join();
    }

    accepted.lock().unwrap().clone()
}

fn assert_all_delivered(inst: &Instance, subjects: &[String]) {
    for user in ["alice", "bob"] {
        let ok = wait_until(T, || {
            let msgs = inst.mailbox(user);
            subjects.iter().all(|s| {
                let needle = format!("Subject: {s}\n");
                msgs.iter()
                    .any(|m| String::from_utf8_lossy(m).contains(&needle))
            })
        });
        if !ok {
            let msgs = inst.mailbox(user);
            let missing: Vec<&String> = subjects
                .iter()
                .filter(|s| {
                    !msgs
                        .iter()
                        .any(|m| String::from_utf8_lossy(m).contains(&format!("Subject: {s}\n")))
                })
                .collect();
            panic!(
                "{user} is missing {} accepted messages: {missing:?}\nlog:\n{}",
                missing.len(),
                inst.log()
            );
        }
    }
}

#[test]
fn kill_9_of_qmgr_loses_nothing() {
    let mut inst = Instance::new(Options::default());
    inst.start();
    let addr = SocketAddr::from(([127, 0, 0, 1], inst.smtp_port));
    let stop = Arc::new(AtomicBool::new(false));
    let sender = {
        let stop = stop.clone();
        std::thread::spawn(move || send_many(addr, 60, "qmgr-kill", stop))
    };
    // Kill qmgr a few times while mail flows.
    for _ in 0..3 {
        std::thread::sleep(Duration::from_millis(300));
        assert!(
            wait_until(Duration::from_secs(10), || !inst.pids_of("qmgr").is_empty()),
            "no qmgr running"
        );
        for pid in inst.pids_of("qmgr") {
            signal(pid, libc::SIGKILL);
        }
    }
    let accepted = sender.join().unwrap();
    assert!(
        accepted.len() >= 50,
        "only {} of 60 accepted",
        accepted.len()
    );
    assert_all_delivered(&inst, &accepted);
    assert!(wait_until(T, || inst.queue_empty()), "queue not empty");
    let log = inst.log();
    assert!(
        log.contains("killed by signal 9"),
        "master did not log the crash:\n{log}"
    );
    inst.stop();
}

#[test]
fn kill_9_of_master_and_all_children_loses_nothing() {
    let mut inst = Instance::new(Options::default());
    inst.start();
    let addr = SocketAddr::from(([127, 0, 0, 1], inst.smtp_port));
    let stop = Arc::new(AtomicBool::new(false));
    let sender = {
        let stop = stop.clone();
        std::thread::spawn(move || send_many(addr, 400, "all-kill", stop))
    };
    std::thread::sleep(Duration::from_millis(1500));
    // Everything dies at once.
    let mut victims = Vec::new();
    for name in ["master", "smtpd", "cleanup", "qmgr", "local"] {
        victims.extend(inst.pids_of(name));
    }
    assert!(!victims.is_empty());
    for pid in &victims {
        signal(*pid, libc::SIGKILL);
    }
    if let Some(mut c) = inst.master.take() {
        let _ = c.wait();
    }
    stop.store(true, Ordering::Relaxed);
    let accepted = sender.join().unwrap();
    assert!(!accepted.is_empty(), "nothing was accepted before the kill");
    // Restart on the same queue: everything that got a 250 is delivered.
    std::thread::sleep(Duration::from_millis(200));
    inst.start();
    assert_all_delivered(&inst, &accepted);
    assert!(
        wait_until(T, || inst.queue_empty()),
        "queue not empty: incoming {:?} active {:?} deferred {:?}",
        inst.queue_files("incoming"),
        inst.queue_files("active"),
        inst.queue_files("deferred")
    );
    inst.stop();
}

#[test]
fn reload_adds_a_listener_without_restarting_the_first() {
    let mut inst = Instance::new(Options::default());
    inst.start();
    let first = SocketAddr::from(([127, 0, 0, 1], inst.smtp_port));
    // A session that is open across the reload.
    let mut open = Smtp::connect(first);
    assert_eq!(open.cmd("EHLO before.example").code, 250);
    let smtpd_before = inst.pids_of("smtpd");
    assert!(!smtpd_before.is_empty());
    let second_port = free_port();
    std::fs::write(
        inst.dir.join("master.cf"),
        Instance::master_cf_text(&[inst.smtp_port, second_port]),
    )
    .unwrap();
    let out = inst.postern(&["reload"]);
    assert!(
        out.status.success(),
        "reload failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let second = SocketAddr::from(([127, 0, 0, 1], second_port));
    assert!(
        wait_until(Duration::from_secs(10), || std::net::TcpStream::connect(
            second
        )
        .is_ok()),
        "second listener did not appear\n{}",
        inst.log()
    );
    // The open session still works and delivers.
    let r = open.send(
        "s@remote.example",
        &["alice@example.test"],
        b"Subject: across reload\r\n\r\nstill here\r\n",
    );
    queued_id(&r);
    assert_eq!(open.cmd("QUIT").code, 221);
    // Both listeners take new mail.
    queued_id(&Smtp::send_one(
        first,
        "s@remote.example",
        &["bob@example.test"],
        b"Subject: first\r\n\r\n1\r\n",
    ));
    queued_id(&Smtp::send_one(
        second,
        "s@remote.example",
        &["bob@example.test"],
        b"Subject: second\r\n\r\n2\r\n",
    ));
    inst.wait_mail("alice", 1, T);
    inst.wait_mail("bob", 2, T);
    let log = inst.log();
    assert!(log.contains("reload"), "{log}");
    inst.stop();
}

#[test]
fn temporary_delivery_failures_are_retried() {
    // A mailbox directory that cannot be created makes local defer; once it
    // can, the retry delivers.
    let mut inst = Instance::new(Options::default());
    let carol_home = inst.dir.join("mail").join("carol");
    std::fs::write(&carol_home, b"not a directory").unwrap();
    inst.start();
    let addr = SocketAddr::from(([127, 0, 0, 1], inst.smtp_port));
    queued_id(&Smtp::send_one(
        addr,
        "s@remote.example",
        &["carol@example.test"],
        b"Subject: retry\r\n\r\nlater\r\n",
    ));
    assert!(
        wait_until(T, || inst.log().contains("status=deferred")),
        "{}",
        inst.log()
    );
    assert!(wait_until(T, || !inst.queue_files("deferred").is_empty()));
    std::fs::remove_file(&carol_home).unwrap();
    let m = inst.wait_mail("carol", 1, T);
    assert!(m[0].ends_with(b"later\n"));
    assert!(wait_until(T, || inst.queue_empty()));
    inst.stop();
}
