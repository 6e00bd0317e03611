//! Queue files through the public API: write → commit → open, marks, crashes.

use std::collections::HashSet;
use std::fs;
use std::io::{self, Read};
use std::path::Path;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use postern_queue::{
    Envelope, Queue, QueueDirs, QueueError, QueueFile, QueueFileWriter, QueueId, Recipient,
    content_reader_for, next_attempt, set_next_attempt,
};

fn setup() -> (tempfile::TempDir, QueueDirs) {
    let tmp = tempfile::tempdir().expect("tempdir");
    let dirs = QueueDirs::new(tmp.path().join("queue"));
    dirs.create_all().expect("create_all");
    (tmp, dirs)
}

fn envelope() -> Envelope {
    Envelope {
        arrival: UNIX_EPOCH + Duration::from_micros(1_712_345_678_901_234),
        sender: "sender@example.org".parse().unwrap(),
        recipients: vec![
            Recipient {
                address: "a@example.net".parse().unwrap(),
                original: "A@example.net".into(),
                notify: None,
                orcpt: None,
                done: false,
            },
            Recipient {
                address: "b@example.net".parse().unwrap(),
                original: "b@example.net".into(),
                notify: None,
                orcpt: None,
                done: false,
            },
            Recipient {
                address: "c@example.net".parse().unwrap(),
                original: "".into(),
                notify: None,
                orcpt: None,
                done: false,
            },
        ],
        attributes: vec![
            ("client_name".into(), "mail.example.org".into()),
            ("client_address".into(), "2001:db8::1".into()),
            ("protocol".into(), "ESMTP".into()),
        ],
    }
}

fn write_message(dirs: &QueueDirs, env: &Envelope, content: &[u8]) -> QueueId {
    let mut w = QueueFileWriter::create(dirs).expect("create");
    let expected = w.queue_id().clone();
    w.write_envelope(env).expect("envelope");
    // Write in odd-sized pieces to exercise buffering.
    for chunk in content.chunks(7919) {
        w.write_content(chunk).expect("content");
    }
    assert_eq!(w.content_len(), content.len() as u64);
    let id = w.commit().expect("commit");
    assert_eq!(id, expected, "the ID given at create time is the final one");
    id
}

fn temp_files(dir: &Path) -> Vec<String> {
    fs::read_dir(dir)
        .expect("read_dir")
        .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with('.'))
        .collect()
}

#[test]
fn round_trip_fields_and_content() {
    let (_t, dirs) = setup();
    let env = envelope();
    let content = b"Subject: hello\nFrom: <sender@example.org>\n\nbody line\n";
    let id = write_message(&dirs, &env, content);
    assert_eq!(dirs.list(Queue::Incoming).expect("list"), vec![id.clone()]);
    assert!(temp_files(&dirs.dir(Queue::Incoming)).is_empty());

    let path = dirs.file(Queue::Incoming, &id);
    let qf = QueueFile::open(&path, id.clone()).expect("open");
    assert_eq!(qf.id(), &id);
    assert_eq!(qf.envelope(), &env);
    assert_eq!(qf.envelope().attribute("protocol"), Some("ESMTP"));
    assert_eq!(qf.read_content().expect("read"), content);
    assert_eq!(qf.content_len(), content.len() as u64);
    assert_eq!(qf.pending(), vec![0, 1, 2]);
    assert!(!qf.all_done());

    let mode =
        std::os::unix::fs::PermissionsExt::mode(&fs::metadata(&path).expect("stat").permissions());
    // docs/security.md: queue files are 0660 (cleanup writes, group postern reads).
    assert_eq!(mode & 0o777, 0o660);
}

#[test]
fn content_is_byte_exact_for_binary_empty_and_large() {
    let (_t, dirs) = setup();
    let binary: Vec<u8> = (0..=255u8).cycle().take(70_000).collect();
    let eight_bit = "Subject: Grüße\n\n日本語 \u{0}\r\n.\n..\n"
        .as_bytes()
        .to_vec();
    let big: Vec<u8> = (0..5 * 1024 * 1024u32)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 24) as u8)
        .collect();
    for content in [Vec::new(), binary, eight_bit, big] {
        let id = write_message(&dirs, &envelope(), &content);
        let qf = QueueFile::open(&dirs.file(Queue::Incoming, &id), id).expect("open");
        assert_eq!(qf.content_len(), content.len() as u64);
        let got = qf.read_content().expect("read");
        assert!(
            got == content,
            "content differs (len {} vs {})",
            got.len(),
            content.len()
        );
        // The fd-only path a delivery agent uses gives the same bytes.
        let mut via_fd = Vec::new();
        content_reader_for(qf.file(), qf.content_offset(), qf.content_len())
            .read_to_end(&mut via_fd)
            .expect("read via fd");
        assert!(via_fd == content);
    }
}

#[test]
fn content_readers_do_not_disturb_each_other() {
    let (_t, dirs) = setup();
    let content: Vec<u8> = (0..100_000u32).map(|i| i as u8).collect();
    let id = write_message(&dirs, &envelope(), &content);
    let qf = QueueFile::open(&dirs.file(Queue::Incoming, &id), id).expect("open");
    let mut a = qf.content_reader();
    let mut b = qf.content_reader();
    let mut buf_a = [0u8; 1000];
    let mut buf_b = [0u8; 10];
    a.read_exact(&mut buf_a).expect("a");
    b.read_exact(&mut buf_b).expect("b");
    assert_eq!(&buf_b[..], &content[..10]);
    assert_eq!(a.remaining(), 99_000);
    let mut rest = Vec::new();
    a.read_to_end(&mut rest).expect("rest");
    assert_eq!(&rest[..], &content[1000..]);
}

#[test]
fn content_reader_reports_a_short_file() {
    let (_t, dirs) = setup();
    let id = write_message(&dirs, &envelope(), b"short\n");
    let qf = QueueFile::open(&dirs.file(Queue::Incoming, &id), id).expect("open");
    let mut out = Vec::new();
    let err = content_reader_for(qf.file(), qf.content_offset(), 1_000_000)
        .read_to_end(&mut out)
        .unwrap_err();
    assert_eq!(err.kind(), io::ErrorKind::UnexpectedEof);
}

#[test]
fn mark_done_persists_and_changes_only_type_bytes() {
    let (_t, dirs) = setup();
    let id = write_message(&dirs, &envelope(), b"x\n");
    let path = dirs.file(Queue::Incoming, &id);
    let before = fs::read(&path).expect("read");

    let mut qf = QueueFile::open(&path, id.clone()).expect("open");
    qf.mark_done(&[2, 0, 2]).expect("mark");
    assert_eq!(qf.pending(), vec![1]);
    qf.mark_done(&[0]).expect("idempotent");
    let err = qf.mark_done(&[1, 3]).unwrap_err();
    assert_eq!(err.kind(), io::ErrorKind::InvalidInput);
    assert_eq!(qf.pending(), vec![1], "a bad index marks nothing");
    drop(qf);

    let after = fs::read(&path).expect("read");
    assert_eq!(before.len(), after.len());
    let diffs: Vec<(usize, u8, u8)> = before
        .iter()
        .zip(&after)
        .enumerate()
        .filter(|(_, (a, b))| a != b)
        .map(|(i, (a, b))| (i, *a, *b))
        .collect();
    assert_eq!(diffs.len(), 2, "{diffs:?}");
    assert!(diffs.iter().all(|&(_, a, b)| a == b'R' && b == b'D'));

    let mut qf = QueueFile::open(&path, id).expect("reopen");
    let done: Vec<bool> = qf.envelope().recipients.iter().map(|r| r.done).collect();
    assert_eq!(done, vec![true, false, true]);
    qf.mark_done(&[1]).expect("mark last");
    assert!(qf.all_done());
    assert!(qf.pending().is_empty());
}

#[test]
fn unsynced_marks_are_seen_by_the_next_reader() {
    // qmgr's last marks before the unlink: no fdatasync, but written, so a
    // qmgr that is killed and restarted (same kernel) skips the recipient.
    let (_t, dirs) = setup();
    let id = write_message(&dirs, &envelope(), b"x\n");
    let path = dirs.file(Queue::Incoming, &id);
    let mut qf = QueueFile::open(&path, id.clone()).expect("open");
    let marks = qf.prepare_done(&[0, 1, 2]).expect("prepare");
    marks.write_unsynced().expect("write");
    qf.record_done(&marks);
    assert!(qf.all_done());
    let again = QueueFile::open(&path, id).expect("reopen");
    assert!(again.pending().is_empty());
}

#[test]
fn from_file_works_on_a_read_only_descriptor() {
    let (_t, dirs) = setup();
    let id = write_message(&dirs, &envelope(), b"hello\n");
    let f = fs::File::open(dirs.file(Queue::Incoming, &id)).expect("open ro");
    let mut qf = QueueFile::from_file(f, id).expect("parse");
    assert_eq!(qf.read_content().expect("read"), b"hello\n");
    assert!(qf.mark_done(&[0]).is_err(), "no write access, no mark");
    assert_eq!(qf.pending(), vec![0, 1, 2]);
}

#[test]
fn commit_never_replaces_an_existing_file() {
    let (_t, dirs) = setup();
    let mut w = QueueFileWriter::create(&dirs).expect("create");
    w.write_envelope(&envelope()).expect("env");
    w.write_content(b"new\n").expect("content");
    let target = dirs.file(Queue::Incoming, w.queue_id());
    fs::write(&target, b"precious").expect("plant");
    let err = w.commit().unwrap_err();
    assert_eq!(err.kind(), io::ErrorKind::AlreadyExists);
    assert_eq!(fs::read(&target).expect("read"), b"precious");
    assert!(
        temp_files(&dirs.dir(Queue::Incoming)).is_empty(),
        "failed commit leaves no tmp"
    );
}

#[test]
fn parallel_writers_get_distinct_ids() {
    let (_t, dirs) = setup();
    let threads: Vec<_> = (0..2)
        .map(|_| {
            let dirs = dirs.clone();
            std::thread::spawn(move || {
                (0..500)
                    .map(|_| write_message(&dirs, &envelope(), b"m\n"))
                    .collect::<Vec<_>>()
            })
        })
        .collect();
    let mut all = HashSet::new();
    for t in threads {
        for id in t.join().expect("thread") {
            assert!(all.insert(id), "duplicate queue id");
        }
    }
    assert_eq!(all.len(), 1000);
    assert_eq!(dirs.list(Queue::Incoming).expect("list").len(), 1000);
}

#[test]
fn abort_and_drop_leave_no_temp_file() {
    let (_t, dirs) = setup();
    let inc = dirs.dir(Queue::Incoming);

    let w = QueueFileWriter::create(&dirs).expect("create");
    assert!(w.temp_path().exists());
    assert_eq!(temp_files(&inc).len(), 1);
    w.abort();
    assert!(temp_files(&inc).is_empty());

    let mut w = QueueFileWriter::create(&dirs).expect("create");
    w.write_envelope(&envelope()).expect("env");
    w.write_content(&[b'x'; 200_000]).expect("content");
    drop(w);
    assert!(temp_files(&inc).is_empty());
    assert!(
        fs::read_dir(&inc).expect("dir").next().is_none(),
        "nothing at all left"
    );
}

#[test]
fn writer_enforces_call_order() {
    let (_t, dirs) = setup();
    let mut w = QueueFileWriter::create(&dirs).expect("create");
    assert_eq!(
        w.write_content(b"x").unwrap_err().kind(),
        io::ErrorKind::InvalidInput
    );
    let mut bad = envelope();
    bad.recipients.clear();
    assert_eq!(
        w.write_envelope(&bad).unwrap_err().kind(),
        io::ErrorKind::InvalidInput
    );
    w.write_envelope(&envelope())
        .expect("env after refused env");
    assert_eq!(
        w.write_envelope(&envelope()).unwrap_err().kind(),
        io::ErrorKind::InvalidInput
    );
    let id = w.commit().expect("commit");
    let qf = QueueFile::open(&dirs.file(Queue::Incoming, &id), id).expect("open");
    assert_eq!(qf.envelope(), &envelope());

    let w = QueueFileWriter::create(&dirs).expect("create");
    assert_eq!(w.commit().unwrap_err().kind(), io::ErrorKind::InvalidInput);
    assert!(temp_files(&dirs.dir(Queue::Incoming)).is_empty());
}

#[test]
fn create_in_maildrop_uses_same_discipline() {
    let (_t, dirs) = setup();
    let mut w = QueueFileWriter::create_in(&dirs, Queue::Maildrop).expect("create");
    w.write_envelope(&envelope()).expect("env");
    let id = w.commit().expect("commit");
    assert_eq!(dirs.locate(&id), Some(Queue::Maildrop));
    let qf = QueueFile::open(&dirs.file(Queue::Maildrop, &id), id).expect("open");
    assert_eq!(qf.content_len(), 0);
}

#[test]
fn message_walks_through_the_queues() {
    let (_t, dirs) = setup();
    let id = write_message(&dirs, &envelope(), b"walk\n");
    dirs.move_file(&id, Queue::Incoming, Queue::Active)
        .expect("to active");
    let mut qf = QueueFile::open(&dirs.file(Queue::Active, &id), id.clone()).expect("open");
    qf.mark_done(&[0]).expect("mark");
    drop(qf);
    let deferred = dirs.file(Queue::Deferred, &id);
    let when = UNIX_EPOCH + Duration::from_secs(2_000_000_000);
    set_next_attempt(&dirs.file(Queue::Active, &id), when).expect("mtime");
    dirs.move_file(&id, Queue::Active, Queue::Deferred)
        .expect("to deferred");
    assert_eq!(
        next_attempt(&deferred).expect("mtime"),
        when,
        "rename keeps mtime"
    );
    assert_eq!(dirs.locate(&id), Some(Queue::Deferred));
    dirs.move_file(&id, Queue::Deferred, Queue::Active)
        .expect("back");
    let qf = QueueFile::open(&dirs.file(Queue::Active, &id), id).expect("reopen");
    assert_eq!(qf.pending(), vec![1, 2], "done marks survive moves");
}

#[test]
fn next_attempt_round_trips_sub_second_times() {
    let (_t, dirs) = setup();
    let p = dirs.dir(Queue::Deferred).join("FILE01");
    fs::write(&p, b"").expect("write");
    let when = SystemTime::now() + Duration::from_millis(3_600_123);
    set_next_attempt(&p, when).expect("set");
    let got = next_attempt(&p).expect("get");
    let diff = got
        .duration_since(when)
        .or_else(|e| Ok::<_, ()>(e.duration()))
        .expect("diff");
    assert!(diff < Duration::from_micros(1), "{got:?} vs {when:?}");
    assert_eq!(
        set_next_attempt(&dirs.dir(Queue::Deferred).join("NOSUCH"), when)
            .unwrap_err()
            .kind(),
        io::ErrorKind::NotFound
    );
}

#[test]
fn damaged_files_on_disk_are_corrupt_not_panics() {
    let (_t, dirs) = setup();
    let id = write_message(&dirs, &envelope(), b"0123456789\n");
    let path = dirs.file(Queue::Incoming, &id);
    let good = fs::read(&path).expect("read");
    for cut in [0, 5, 9, 20, good.len() - 6, good.len() - 1] {
        fs::write(&path, &good[..cut]).expect("write");
        match QueueFile::open(&path, id.clone()) {
            Err(QueueError::Corrupt(_)) => {}
            other => panic!("cut at {cut}: {other:?}"),
        }
    }
    match QueueFile::open(
        &dirs.file(Queue::Incoming, &QueueId::parse("NOSUCHFILE").expect("id")),
        id,
    ) {
        Err(QueueError::Io(e)) => assert_eq!(e.kind(), io::ErrorKind::NotFound),
        other => panic!("{other:?}"),
    }
}

/// The example in docs/queue.md, byte for byte.
const DOC_EXAMPLE: &str = "
504f 5354 4552 4e51 0254 0000 0011 3137
3132 3334 3536 3738 2e39 3031 3233 3441
0000 0018 6865 6c6f 5f6e 616d 653d 6d78
2e65 7861 6d70 6c65 2e6f 7267 5300 0000
0d61 4065 7861 6d70 6c65 2e6f 7267 5200
0000 1d62 4065 7861 6d70 6c65 2e6e 6574
0042 4065 7861 6d70 6c65 2e6e 6574 0000
4d00 0000 0000 0000 1353 7562 6a65 6374
3a20 6869 0a0a 6865 6c6c 6f0a 4500 0000
00";

/// The same message in format version 1 (before the DSN fields), as
/// postern 0.1 wrote it: still read.
const V1_EXAMPLE: &str = "
504f 5354 4552 4e51 0154 0000 0011 3137
3132 3334 3536 3738 2e39 3031 3233 3441
0000 0018 6865 6c6f 5f6e 616d 653d 6d78
2e65 7861 6d70 6c65 2e6f 7267 5300 0000
0d61 4065 7861 6d70 6c65 2e6f 7267 5200
0000 1b62 4065 7861 6d70 6c65 2e6e 6574
0042 4065 7861 6d70 6c65 2e6e 6574 4d00
0000 0000 0000 1353 7562 6a65 6374 3a20
6869 0a0a 6865 6c6c 6f0a 4500 0000 00";

fn unhex(s: &str) -> Vec<u8> {
    let digits: Vec<u8> = s.bytes().filter(u8::is_ascii_hexdigit).collect();
    digits
        .chunks(2)
        .map(|p| u8::from_str_radix(std::str::from_utf8(p).expect("ascii"), 16).expect("hex"))
        .collect()
}

#[test]
fn writer_output_matches_the_documented_example() {
    let (_t, dirs) = setup();
    let env = Envelope {
        arrival: UNIX_EPOCH + Duration::from_micros(1_712_345_678_901_234),
        sender: "a@example.org".parse().unwrap(),
        recipients: vec![Recipient {
            address: "b@example.net".parse().unwrap(),
            original: "B@example.net".into(),
            notify: None,
            orcpt: None,
            done: false,
        }],
        attributes: vec![("helo_name".into(), "mx.example.org".into())],
    };
    let id = write_message(&dirs, &env, b"Subject: hi\n\nhello\n");
    let path = dirs.file(Queue::Incoming, &id);
    let expected = unhex(DOC_EXAMPLE);
    assert_eq!(fs::read(&path).expect("read"), expected);

    let mut qf = QueueFile::open(&path, id).expect("open");
    qf.mark_done(&[0]).expect("mark");
    let mut after = expected.clone();
    assert_eq!(after[0x4e], b'R');
    after[0x4e] = b'D';
    assert_eq!(fs::read(&path).expect("read"), after);
}

#[test]
fn version_1_files_are_still_read_and_marked() {
    let (_t, dirs) = setup();
    let id = QueueId::parse("V1EXAMPLE01").expect("id");
    let path = dirs.file(Queue::Incoming, &id);
    fs::write(&path, unhex(V1_EXAMPLE)).expect("write");
    let mut qf = QueueFile::open(&path, id).expect("a v1 file parses");
    assert_eq!(qf.version(), 1);
    let env = qf.envelope();
    assert_eq!(env.sender.bare(), "a@example.org");
    assert_eq!(env.recipients.len(), 1);
    assert_eq!(env.recipients[0].address.to_string(), "b@example.net");
    assert_eq!(env.recipients[0].original, "B@example.net");
    assert_eq!(env.recipients[0].notify, None);
    assert_eq!(env.attribute("helo_name"), Some("mx.example.org"));
    assert_eq!(
        qf.read_content().expect("content"),
        b"Subject: hi\n\nhello\n"
    );
    qf.mark_done(&[0]).expect("mark");
    let mut after = unhex(V1_EXAMPLE);
    after[0x4e] = b'D';
    assert_eq!(fs::read(&path).expect("read"), after);
}

#[test]
fn documented_queue_id_example() {
    let t = UNIX_EPOCH + Duration::from_micros(1_712_345_678_901_234);
    assert_eq!(
        QueueId::from_parts(t, 1_234_567).as_str(),
        "1GLBQ5UORVIQGLJ"
    );
}
