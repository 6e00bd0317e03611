//! Unit tests: validation, framing and the maildrop file postdrop writes.

use super::*;
use postern_queue::QueueFile;
use std::os::unix::fs::MetadataExt;

fn frames(req: &SubmitRequest, chunks: &[&[u8]], end: bool) -> Vec<u8> {
    let mut out = req.encode();
    for c in chunks {
        out.extend(SubmitContent::Chunk { data: c.to_vec() }.encode());
    }
    if end {
        out.extend(SubmitContent::End.encode());
    }
    out
}

fn req(sender: &str, rcpts: &[&str]) -> SubmitRequest {
    SubmitRequest {
        sender: match sender {
            "" => SubmitSender::Caller,
            "<>" => SubmitSender::Null,
            s => SubmitSender::Given(s.into()),
        },
        recipients: rcpts.iter().map(|r| r.to_string()).collect(),
        attributes: vec![],
    }
}

fn queue() -> (tempfile::TempDir, QueueDirs) {
    let t = tempfile::tempdir().unwrap();
    let dirs = QueueDirs::new(t.path().join("queue"));
    dirs.create_all().unwrap();
    (t, dirs)
}

fn caller() -> Caller {
    Caller {
        uid: 4242,
        login: "alice".into(),
    }
}

fn maildrop_names(dirs: &QueueDirs) -> Vec<String> {
    fs::read_dir(dirs.dir(Queue::Maildrop))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect()
}

#[test]
fn config_dir_rules() {
    let other = Some(OsString::from("/home/mallory/conf"));
    assert_eq!(
        config_dir(None, false, true).unwrap(),
        PathBuf::from(DEFAULT_CONFIG_DIR)
    );
    assert_eq!(
        config_dir(Some(OsString::new()), false, true).unwrap(),
        PathBuf::from(DEFAULT_CONFIG_DIR)
    );
    let e = config_dir(other.clone(), false, true).unwrap_err();
    assert_eq!(e.status, EX_NOPERM);
    assert!(e.message.contains("/home/mallory/conf"), "{e}");
    assert_eq!(
        config_dir(other.clone(), true, true).unwrap(),
        PathBuf::from("/home/mallory/conf")
    );
    assert_eq!(
        config_dir(other, false, false).unwrap(),
        PathBuf::from("/home/mallory/conf")
    );
    assert_eq!(
        config_dir(Some(OsString::from(DEFAULT_CONFIG_DIR)), false, true).unwrap(),
        PathBuf::from(DEFAULT_CONFIG_DIR)
    );
}

#[test]
fn admin_owned_directories_only() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("main.cf"), "").unwrap();
    let set = |p: &std::path::Path, m: u32| {
        std::fs::set_permissions(p, std::fs::Permissions::from_mode(m)).unwrap()
    };
    set(dir.path(), 0o755);
    set(&dir.path().join("main.cf"), 0o644);
    let root = nix::unistd::geteuid().is_root();
    // Owned by whoever runs the test: admin-owned only when that is root.
    assert_eq!(admin_owned(dir.path()), root);
    set(&dir.path().join("main.cf"), 0o666);
    assert!(
        !admin_owned(dir.path()),
        "a world-writable main.cf is the caller's"
    );
    set(&dir.path().join("main.cf"), 0o644);
    set(dir.path(), 0o777);
    assert!(
        !admin_owned(dir.path()),
        "a world-writable directory is the caller's"
    );
    assert!(!admin_owned(std::path::Path::new("/nonexistent/postern")));
}

#[test]
fn addresses_are_checked() {
    for ok in ["alice", "bob@example.test", "x.y+tag@[192.0.2.1]"] {
        assert!(
            check_address("recipient", ok, "origin.test").is_ok(),
            "{ok}"
        );
    }
    assert_eq!(
        check_address("recipient", "alice", "origin.test")
            .unwrap()
            .to_string(),
        "alice@origin.test"
    );
    for bad in [
        "",
        "a@",
        "@b",
        "a b@c",
        "a\0b",
        "alice\nRCPT TO:<x@y>",
        "a@b\r",
    ] {
        assert!(
            check_address("recipient", bad, "origin.test").is_err(),
            "{bad:?}"
        );
    }
}

#[test]
fn validation_refuses_bad_envelopes() {
    let validate = |r: &SubmitRequest| validate(r, &caller(), "origin.test");
    let ok = validate(&req("", &["alice"])).unwrap();
    assert_eq!(
        ok.sender.bare(),
        "alice@origin.test",
        "the caller, qualified"
    );
    assert_eq!(ok.recipients[0].0.to_string(), "alice@origin.test");
    assert_eq!(ok.recipients[0].1, "alice", "the original is as given");
    let null = validate(&req("<>", &["alice"])).unwrap();
    assert_eq!(null.sender, ReversePath::Null);
    let given = validate(&req("bob", &["alice"])).unwrap();
    assert_eq!(given.sender.bare(), "bob@origin.test");
    assert!(validate(&req("bob@example.test", &["alice"])).is_ok());
    let e = validate(&req("", &[])).unwrap_err();
    assert_eq!(e.status, EX_DATAERR);
    assert_eq!(
        validate(&req("bad@", &["alice"])).unwrap_err().status,
        EX_DATAERR
    );
    assert_eq!(
        validate(&req("", &["alice", "x\0"])).unwrap_err().status,
        EX_DATAERR
    );
    for forged in ["local_user", "uid", "origin", "client_address"] {
        let mut r = req("", &["alice"]);
        r.attributes.push((forged.into(), "root".into()));
        let e = validate(&r).unwrap_err();
        assert_eq!(e.status, EX_DATAERR);
        assert!(e.message.contains(forged), "{e}");
    }
    let mut r = req("", &["alice"]);
    r.attributes
        .push(("helo_name".into(), "x\nReceived: forged".into()));
    assert!(validate(&r).is_err());
    r.attributes[0].1 = "localhost".into();
    assert!(validate(&r).is_ok());
}

#[test]
fn submit_writes_a_maildrop_queue_file() {
    let (_t, dirs) = queue();
    let mut r = req("", &["bob", "carol@example.test"]);
    r.attributes.push(("protocol".into(), "ESMTP".into()));
    let input = frames(&r, &[b"Subject: hi\n\n", b"hello\n"], true);
    let id = submit(&mut input.as_slice(), &dirs, &caller(), "origin.test", 0).unwrap();
    assert_eq!(maildrop_names(&dirs), vec![id.to_string()]);
    let path = dirs.file(Queue::Maildrop, &id);
    let meta = fs::metadata(&path).unwrap();
    assert_eq!(meta.mode() & 0o777, 0o640);
    let qf = QueueFile::from_file(fs::File::open(&path).unwrap(), id).unwrap();
    let env = qf.envelope();
    assert_eq!(env.sender.bare(), "alice@origin.test");
    let rcpts: Vec<String> = env
        .recipients
        .iter()
        .map(|r| r.address.to_string())
        .collect();
    assert_eq!(rcpts, ["bob@origin.test", "carol@example.test"]);
    assert_eq!(env.recipients[0].original, "bob");
    assert_eq!(env.attribute("origin"), Some("sendmail"));
    assert_eq!(env.attribute("local_user"), Some("alice"));
    assert_eq!(env.attribute("uid"), Some("4242"));
    assert_eq!(env.attribute("protocol"), Some("ESMTP"));
    assert_eq!(qf.read_content().unwrap(), b"Subject: hi\n\nhello\n");
}

#[test]
fn too_big_or_unfinished_input_leaves_nothing() {
    let (_t, dirs) = queue();
    let r = req("", &["bob"]);
    let input = frames(&r, &[&[b'x'; 600], &[b'y'; 600]], true);
    let e = submit(&mut input.as_slice(), &dirs, &caller(), "origin.test", 1000).unwrap_err();
    assert_eq!(e.status, EX_DATAERR);
    assert!(e.message.contains("too big"), "{e}");
    assert!(maildrop_names(&dirs).is_empty());

    // sendmail died (or was interrupted) before End: nothing is queued.
    let input = frames(&r, &[b"Subject: x\n\n"], false);
    let e = submit(&mut input.as_slice(), &dirs, &caller(), "origin.test", 0).unwrap_err();
    assert_eq!(e.status, EX_DATAERR);
    assert!(maildrop_names(&dirs).is_empty());

    // Garbage instead of frames.
    let e = submit(
        &mut &b"hello world, not a frame"[..],
        &dirs,
        &caller(),
        "origin.test",
        0,
    )
    .unwrap_err();
    assert_eq!(e.status, EX_DATAERR);
    assert!(maildrop_names(&dirs).is_empty());
}

#[test]
fn missing_maildrop_is_temporary() {
    let t = tempfile::tempdir().unwrap();
    let dirs = QueueDirs::new(t.path().join("nowhere"));
    let input = frames(&req("", &["bob"]), &[b"x\n"], true);
    let e = submit(&mut input.as_slice(), &dirs, &caller(), "origin.test", 0).unwrap_err();
    assert_eq!(e.status, EX_TEMPFAIL, "{e}");
}
