//! Unit tests: envelope rules, identity, and whole scans against a fake
//! cleanup on a real Unix socket.

use super::*;
use postern_ipc::{Channel, CleanupReply, CleanupRequest, DeliveryStatus, ReversePath};
use postern_queue::{Envelope, QueueFileWriter, Recipient};

#[test]
fn envelope_rules() {
    let a: ReversePath = "a@b.test".parse().unwrap();
    // Version 2 files mean what they say.
    assert_eq!(envelope_sender(2, &a, "alice", "o.test"), a);
    assert_eq!(
        envelope_sender(2, &ReversePath::Null, "alice", "o.test"),
        ReversePath::Null
    );
    // A version 1 file's empty sender was "the submitting user".
    assert_eq!(
        envelope_sender(1, &ReversePath::Null, "alice", "o.test").bare(),
        "alice@o.test"
    );
    assert_eq!(envelope_sender(1, &a, "alice", "o.test"), a);
}

#[test]
fn the_file_owner_decides_who_submitted() {
    let db = |uid: u32| (uid == 1000).then(|| "alice".to_string());
    let s = submitter(1000, Some("0"), Some("root"), db);
    assert_eq!(
        s,
        Submitter {
            uid: 1000,
            login: "alice".into()
        }
    );
    // Unknown to passwd: the attributes are used only when they agree.
    let s = submitter(2000, Some("2000"), Some("ghost"), db);
    assert_eq!(s.login, "ghost");
    let s = submitter(2000, Some("0"), Some("root"), db);
    assert_eq!(
        s,
        Submitter {
            uid: 2000,
            login: "2000".into()
        }
    );
}

struct Fixture {
    _t: tempfile::TempDir,
    settings: Settings,
    dirs: QueueDirs,
}

fn fixture() -> Fixture {
    let t = tempfile::tempdir().unwrap();
    let dirs = QueueDirs::new(t.path().join("queue"));
    dirs.create_all().unwrap();
    Fixture {
        settings: Settings {
            queue_dir: dirs.root().to_path_buf(),
            myorigin: "example.test".into(),
            ipc_timeout: Duration::from_secs(5),
        },
        dirs,
        _t: t,
    }
}

/// A maildrop file as postdrop writes it: `rcpts` are (address, as given).
fn drop_file(dirs: &QueueDirs, sender: &str, rcpts: &[(&str, &str)], content: &[u8]) -> QueueId {
    let mut w = QueueFileWriter::create_in(dirs, Queue::Maildrop).unwrap();
    let uid = nix::unistd::getuid().as_raw().to_string();
    w.write_envelope(&Envelope {
        arrival: SystemTime::now(),
        sender: sender.parse().unwrap(),
        recipients: rcpts
            .iter()
            .map(|(a, o)| Recipient::new(a.parse().unwrap(), *o))
            .collect(),
        attributes: vec![
            ("origin".into(), "sendmail".into()),
            ("local_user".into(), "someone".into()),
            ("uid".into(), uid),
        ],
    })
    .unwrap();
    w.write_content(content).unwrap();
    w.commit().unwrap()
}

/// A fake cleanup: answers each connection with `final_reply` after End and
/// returns everything it was sent, per connection.
fn fake_cleanup(
    settings: &Settings,
    final_reply: CleanupReply,
) -> tokio::task::JoinHandle<Vec<Vec<CleanupRequest>>> {
    let path = settings.cleanup_socket();
    let listener = tokio::net::UnixListener::bind(&path).unwrap();
    tokio::spawn(async move {
        let mut all = Vec::new();
        while let Ok(Ok((s, _))) =
            tokio::time::timeout(Duration::from_millis(500), listener.accept()).await
        {
            let mut ch = Channel::new(s);
            let mut got = Vec::new();
            while let Ok(Some(req)) = ch.recv::<CleanupRequest>().await {
                let end = req == CleanupRequest::End;
                if matches!(req, CleanupRequest::Open { .. }) {
                    ch.send(&CleanupReply::Opened {
                        queue_id: "NEWID123".into(),
                    })
                    .await
                    .unwrap();
                }
                got.push(req);
                if end {
                    ch.send(&final_reply).await.unwrap();
                    break;
                }
            }
            all.push(got);
        }
        all
    })
}

#[tokio::test]
async fn a_maildrop_file_goes_to_cleanup_and_is_removed() {
    let f = fixture();
    let id = drop_file(
        &f.dirs,
        "list-owner@example.test",
        &[
            ("bob@example.test", "bob"),
            ("carol@else.test", "carol@else.test"),
        ],
        b"Subject: hi\n\nhello\n",
    );
    let cleanup = fake_cleanup(
        &f.settings,
        CleanupReply::Queued {
            queue_id: "NEWID123".into(),
        },
    );
    let out = scan(&f.settings).await;
    assert_eq!(out, vec![(id.clone(), Outcome::Queued("NEWID123".into()))]);
    assert!(f.dirs.list(Queue::Maildrop).unwrap().is_empty());
    let convs = cleanup.await.unwrap();
    assert_eq!(convs.len(), 1);
    let c = &convs[0];
    let me = passwd_name(nix::unistd::getuid().as_raw()).unwrap_or_default();
    match &c[0] {
        CleanupRequest::Open { attributes, flags } => {
            assert_eq!(*flags, cleanup_flags::ADD_MISSING_HEADERS);
            assert!(attributes.contains(&("origin".into(), "pickup".into())));
            // The owner's login, not the "someone" written in the file.
            assert!(
                attributes.contains(&("local_user".into(), me.clone())),
                "{attributes:?}"
            );
        }
        other => panic!("first request {other:?}"),
    }
    assert_eq!(
        c[1],
        CleanupRequest::Sender {
            address: "list-owner@example.test".parse().unwrap()
        }
    );
    assert_eq!(
        c[2],
        CleanupRequest::Recipient {
            address: "bob@example.test".parse().unwrap(),
            original: "bob".into(),
            notify: None,
            orcpt: None,
        }
    );
    assert_eq!(
        c[3],
        CleanupRequest::Recipient {
            address: "carol@else.test".parse().unwrap(),
            original: "carol@else.test".into(),
            notify: None,
            orcpt: None,
        }
    );
    assert_eq!(
        c[4],
        CleanupRequest::Content {
            data: b"Subject: hi\n\nhello\n".to_vec()
        }
    );
    assert_eq!(c[5], CleanupRequest::End);
}

/// A maildrop file from an older postdrop (queue file version 1), where an
/// empty sender meant "the submitting user".
fn drop_v1_file(dirs: &QueueDirs, id: &QueueId) {
    let rec = |kind: u8, data: &[u8]| {
        let mut v = vec![kind];
        v.extend_from_slice(&(data.len() as u32).to_be_bytes());
        v.extend_from_slice(data);
        v
    };
    let mut f = b"POSTERNQ\x01".to_vec();
    f.extend(rec(b'T', b"1700000000.000000"));
    f.extend(rec(b'S', b""));
    f.extend(rec(b'R', b"bob@example.test\0bob"));
    let body = b"Subject: old\n\nhi\n";
    f.push(b'M');
    f.extend_from_slice(&(body.len() as u64).to_be_bytes());
    f.extend_from_slice(body);
    f.extend_from_slice(&[b'E', 0, 0, 0, 0]);
    fs::write(dirs.file(Queue::Maildrop, id), f).unwrap();
}

#[tokio::test]
async fn a_version_1_maildrop_file_keeps_its_sender() {
    let f = fixture();
    let id = QueueId::parse("1AAAAAAAAAAOLD").unwrap();
    drop_v1_file(&f.dirs, &id);
    let cleanup = fake_cleanup(
        &f.settings,
        CleanupReply::Queued {
            queue_id: "NEWID123".into(),
        },
    );
    let out = scan(&f.settings).await;
    assert_eq!(out, vec![(id, Outcome::Queued("NEWID123".into()))]);
    let convs = cleanup.await.unwrap();
    let me = passwd_name(nix::unistd::getuid().as_raw()).unwrap_or_default();
    assert_eq!(
        convs[0][1],
        CleanupRequest::Sender {
            address: format!("{me}@example.test").parse().unwrap()
        },
        "not the null sender"
    );
}

#[tokio::test]
async fn temporary_failures_leave_the_file() {
    let f = fixture();
    let id = drop_file(&f.dirs, "", &[("bob@example.test", "bob")], b"x\n");
    // No cleanup at all.
    let out = scan(&f.settings).await;
    assert!(matches!(out[0].1, Outcome::Retry(_)), "{out:?}");
    assert_eq!(f.dirs.list(Queue::Maildrop).unwrap(), vec![id.clone()]);
    // cleanup says "later".
    let cleanup = fake_cleanup(
        &f.settings,
        CleanupReply::Rejected {
            status: DeliveryStatus::temporary(3, 0, "disk full"),
        },
    );
    let out = scan(&f.settings).await;
    assert!(
        matches!(&out[0].1, Outcome::Retry(r) if r.contains("disk full")),
        "{out:?}"
    );
    assert_eq!(f.dirs.list(Queue::Maildrop).unwrap(), vec![id]);
    let convs = cleanup.await.unwrap();
    // The null sender stays null.
    assert_eq!(
        convs[0][1],
        CleanupRequest::Sender {
            address: ReversePath::Null
        }
    );
}

#[tokio::test]
async fn corrupt_and_rejected_files_are_removed() {
    let f = fixture();
    let bad = QueueId::parse("1AAAAAAAAAABAD").unwrap();
    fs::write(f.dirs.file(Queue::Maildrop, &bad), b"POSTERNQ\x01garbage").unwrap();
    let good = drop_file(&f.dirs, "", &[("bob@example.test", "bob")], b"x\n");
    let cleanup = fake_cleanup(
        &f.settings,
        CleanupReply::Rejected {
            status: DeliveryStatus::permanent(3, 4, "too big"),
        },
    );
    let out = scan(&f.settings).await;
    assert_eq!(out.len(), 2, "{out:?}");
    let of = |id: &QueueId| out.iter().find(|(i, _)| i == id).map(|(_, o)| o.clone());
    assert!(matches!(of(&bad), Some(Outcome::Removed(_))), "{out:?}");
    assert!(
        matches!(of(&good), Some(Outcome::Removed(r)) if r.contains("too big")),
        "{out:?}"
    );
    assert!(f.dirs.list(Queue::Maildrop).unwrap().is_empty());
    drop(cleanup);
}

#[test]
fn symlinks_are_not_followed() {
    let f = fixture();
    let id = QueueId::parse("1AAAAAAAAAALINK").unwrap();
    let target = f.dirs.root().join("secret");
    fs::write(&target, b"not yours").unwrap();
    std::os::unix::fs::symlink(&target, f.dirs.file(Queue::Maildrop, &id)).unwrap();
    assert!(matches!(
        open_maildrop(&f.dirs.file(Queue::Maildrop, &id), &id),
        Err(QueueError::Corrupt(_))
    ));
}

#[test]
fn stale_temporary_files_go() {
    let f = fixture();
    let tmp = f.dirs.dir(Queue::Maildrop).join(".tmp-1-1");
    fs::write(&tmp, b"partial").unwrap();
    assert_eq!(
        remove_stale_maildrop_temp(&f.dirs, Duration::from_secs(3600)).unwrap(),
        0
    );
    assert!(tmp.exists());
    assert_eq!(
        remove_stale_maildrop_temp(&f.dirs, Duration::ZERO).unwrap(),
        1
    );
    assert!(!tmp.exists());
}
