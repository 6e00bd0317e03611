//! Unit tests for alias expansion and delivery, using temp dirs and a
//! recording Forwarder.

use super::*;
use std::io::Write as _;

struct Env {
    dir: tempfile::TempDir,
    queue: tempfile::NamedTempFile,
    len: u64,
    sender: ReversePath,
}

/// Tests name recipients as text.
trait DeliverText {
    fn deliver_text(
        &mut self,
        msg: &Message,
        address: &str,
        original: &str,
        fwd: &mut dyn Forwarder,
    ) -> Outcome;
}

impl DeliverText for LocalDelivery {
    fn deliver_text(
        &mut self,
        msg: &Message,
        address: &str,
        original: &str,
        fwd: &mut dyn Forwarder,
    ) -> Outcome {
        let address = Mailbox::parse(address).expect("test address");
        self.deliver(msg, &address, original, fwd)
    }
}

const BODY: &[u8] = b"Subject: test\n\nFrom the body\nbye\n";

fn env(aliases: &str, users: &str, extra: &[(&str, &str)]) -> (Env, LocalDelivery) {
    env_body(aliases, users, extra, BODY)
}

fn env_body(
    aliases: &str,
    users: &str,
    extra: &[(&str, &str)],
    body: &[u8],
) -> (Env, LocalDelivery) {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    std::fs::write(d.join("aliases"), aliases).unwrap();
    std::fs::write(d.join("users"), users).unwrap();
    std::fs::create_dir(d.join("spool")).unwrap();
    let mut main = postern_config::MainCf::parse("", &d.join("main.cf")).unwrap();
    main.set("alias_maps", "hash:aliases");
    main.set("users_file", &d.join("users").display().to_string());
    main.set(
        "virtual_mailbox_base",
        &d.join("vmail").display().to_string(),
    );
    main.set(
        "mail_spool_directory",
        &d.join("spool").display().to_string(),
    );
    main.set("myhostname", "mail.example.org");
    main.set("mydestination", "$myhostname, localhost, other.example.org");
    main.set(
        "forward_path",
        &format!("{}/fwd/$user${{extension?+$extension}}", d.display()),
    );
    for (k, v) in extra {
        main.set(k, v);
    }
    let cfg = LocalConfig::from_main(&main).unwrap();
    let mut ld = LocalDelivery::new(cfg).unwrap();
    // These tests check expansion and formats as the test user; delivery
    // as each recipient (root only) is tested in tests/local_users.rs.
    ld.set_in_process();
    let mut queue = tempfile::NamedTempFile::new().unwrap();
    queue.write_all(b"ENVELOPE\n").unwrap();
    queue.write_all(body).unwrap();
    (
        Env {
            dir,
            queue,
            len: body.len() as u64,
            sender: "sender@remote.example".parse().unwrap(),
        },
        ld,
    )
}

impl Env {
    fn msg(&self) -> Message<'_> {
        Message {
            queue_id: "4ABCDEF",
            sender: &self.sender,
            arrival: SystemTime::now(),
            content: self.queue.as_file(),
            content_offset: 9,
            content_len: self.len,
        }
    }
    fn path(&self, p: &str) -> PathBuf {
        self.dir.path().join(p)
    }
    fn maildir(&self, user: &str) -> Vec<String> {
        let new = self.path(&format!("vmail/{user}/Maildir/new"));
        let mut v: Vec<String> = match std::fs::read_dir(new) {
            Ok(rd) => rd
                .map(|e| std::fs::read_to_string(e.unwrap().path()).unwrap())
                .collect(),
            Err(_) => Vec::new(),
        };
        v.sort();
        v
    }
}

#[derive(Default)]
struct Recorder {
    calls: Vec<(Vec<String>, String)>,
    fail: Option<Outcome>,
}

impl Forwarder for Recorder {
    fn forward(&mut self, _msg: &Message, recipients: &[Mailbox]) -> Result<(), Outcome> {
        let rcpts = recipients.iter().map(|m| m.to_string()).collect();
        self.calls.push((rcpts, String::new()));
        Ok(())
    }
    fn forward_delivered_to(
        &mut self,
        _msg: &Message,
        recipients: &[Mailbox],
        delivered_to: &str,
    ) -> Result<(), Outcome> {
        let rcpts = recipients.iter().map(|m| m.to_string()).collect();
        self.calls.push((rcpts, delivered_to.to_string()));
        match &self.fail {
            Some(o) => Err(o.clone()),
            None => Ok(()),
        }
    }
}

fn sent(o: &Outcome) -> bool {
    o.is_success()
}

#[test]
fn virtual_user_maildir_with_headers() {
    let (e, mut ld) = env("", "joe:{PLAIN}x\n", &[("recipient_delimiter", "+")]);
    let mut f = Recorder::default();
    let o = ld.deliver_text(
        &e.msg(),
        "Joe+News@mail.example.org",
        "Joe+News@Mail.Example.org",
        &mut f,
    );
    assert_eq!(o, Outcome::sent("delivered to maildir"));
    let m = e.maildir("joe");
    assert_eq!(m.len(), 1);
    let mut expect =
        "Return-Path: <sender@remote.example>\nX-Original-To: Joe+News@Mail.Example.org\nDelivered-To: joe+news@mail.example.org\n"
            .to_string();
    expect.push_str(std::str::from_utf8(BODY).unwrap());
    assert_eq!(m[0], expect);
}

#[test]
fn alias_fan_out_nested_self_reference_and_dedup() {
    let aliases = "team: joe, ann, sub\nsub: joe, bob@remote.example, \"Carl@Remote.Example\"\nann: ann, joe\n";
    let (e, mut ld) = env(aliases, "joe:x\nann:x\n", &[]);
    let mut f = Recorder::default();
    let o = ld.deliver_text(
        &e.msg(),
        "team@mail.example.org",
        "team@mail.example.org",
        &mut f,
    );
    assert!(sent(&o), "{o:?}");
    assert_eq!(
        e.maildir("joe").len(),
        1,
        "joe reached three ways gets one copy"
    );
    assert_eq!(
        e.maildir("ann").len(),
        1,
        "ann: ann delivers to ann's own mailbox"
    );
    assert_eq!(
        f.calls,
        vec![(
            vec![
                "bob@remote.example".to_string(),
                "Carl@Remote.Example".to_string()
            ],
            "sub@mail.example.org".to_string()
        )]
    );
}

#[test]
fn alias_loop_delivers_to_earliest_name() {
    let (e, mut ld) = env("a: b\nb: c\nc: a\n", "a:x\nb:x\nc:x\n", &[]);
    let o = ld.deliver_text(
        &e.msg(),
        "a@mail.example.org",
        "a@mail.example.org",
        &mut Recorder::default(),
    );
    assert!(sent(&o), "{o:?}");
    assert_eq!(e.maildir("a").len(), 1);
    assert!(e.maildir("b").is_empty() && e.maildir("c").is_empty());
}

#[test]
fn depth_limit_bounces() {
    let mut aliases = String::new();
    for i in 0..=MAX_EXPANSION_DEPTH + 1 {
        aliases.push_str(&format!("l{i}: l{}\n", i + 1));
    }
    let (e, mut ld) = env(&aliases, "", &[]);
    match ld.deliver_text(
        &e.msg(),
        "l0@mail.example.org",
        "",
        &mut Recorder::default(),
    ) {
        o if o.is_permanent() => {
            assert!(
                o.code() == EnhancedCode(5, 4, 6) && o.text().contains("too deep"),
                "{o}"
            )
        }
        o => panic!("{o:?}"),
    }
}

#[test]
fn unknown_user_bounces_and_other_local_domain_is_local() {
    let (e, mut ld) = env("x: nosuch@other.example.org\n", "", &[]);
    let o = ld.deliver_text(&e.msg(), "x@mail.example.org", "", &mut Recorder::default());
    assert_eq!(o, Outcome::permanent(1, 1, "unknown user: \"nosuch\""));
}

#[test]
fn delivered_to_loop_is_bounced() {
    let body = b"Delivered-To: joe@mail.example.org\nSubject: x\n\nhi\n";
    let (e, mut ld) = env_body("", "joe:x\n", &[], body);
    match ld.deliver_text(
        &e.msg(),
        "joe@mail.example.org",
        "",
        &mut Recorder::default(),
    ) {
        o if o.is_permanent() => {
            assert_eq!(o.code(), EnhancedCode(5, 4, 6));
            assert_eq!(o.text(), "mail forwarding loop for joe@mail.example.org");
        }
        o => panic!("{o:?}"),
    }
    assert!(e.maildir("joe").is_empty());
}

#[test]
fn command_targets_and_exit_codes() {
    let (e, mut ld) = env("", "", &[]);
    let out = e.path("cmd.out");
    let aliases = format!(
        "ok: \"|cat > {}; echo $RECIPIENT $LOCAL $DOMAIN >> {}\"\ntemp: |\"exit 75\"\nperm: \"|exit 65\"\n",
        out.display(),
        out.display()
    );
    std::fs::write(e.path("aliases"), aliases).unwrap();
    let o = ld.deliver_text(
        &e.msg(),
        "ok@mail.example.org",
        "",
        &mut Recorder::default(),
    );
    assert!(
        o.is_success() && o.text().starts_with("delivered to command: cat >"),
        "{o:?}"
    );
    let text = std::fs::read_to_string(&out).unwrap();
    assert!(
        text.starts_with("Return-Path: <sender@remote.example>\nDelivered-To: ok@mail.example.org\nSubject: test\n"),
        "{text}"
    );
    assert!(
        text.ends_with("bye\nok@mail.example.org ok mail.example.org\n"),
        "{text}"
    );
    let o = ld.deliver_text(
        &e.msg(),
        "temp@mail.example.org",
        "",
        &mut Recorder::default(),
    );
    assert!(
        o.is_temporary() && o.code() == EnhancedCode(4, 3, 0),
        "{o:?}"
    );
    let o = ld.deliver_text(
        &e.msg(),
        "perm@mail.example.org",
        "",
        &mut Recorder::default(),
    );
    assert!(
        o.is_permanent() && o.code() == EnhancedCode(5, 6, 0),
        "{o:?}"
    );
}

#[test]
fn restrictions_and_file_targets() {
    let (e, mut ld) = env(
        "",
        "",
        &[
            ("allow_mail_to_commands", "forward"),
            ("allow_mail_to_files", "alias"),
        ],
    );
    let file = e.path("archive");
    std::fs::write(
        e.path("aliases"),
        format!("cmd: |/bin/true\nfile: {}\n", file.display()),
    )
    .unwrap();
    let o = ld.deliver_text(
        &e.msg(),
        "cmd@mail.example.org",
        "",
        &mut Recorder::default(),
    );
    assert_eq!(o, Outcome::permanent(7, 1, "mail to command is restricted"));
    let o = ld.deliver_text(
        &e.msg(),
        "file@mail.example.org",
        "",
        &mut Recorder::default(),
    );
    assert!(sent(&o), "{o:?}");
    let text = std::fs::read_to_string(&file).unwrap();
    assert!(text.starts_with("From sender@remote.example  "), "{text}");
    assert!(
        text.contains(
            "\nDelivered-To: file@mail.example.org\nSubject: test\n\n>From the body\nbye\n\n"
        ),
        "{text}"
    );
}

#[test]
fn include_files() {
    let (e, mut ld) = env("", "joe:x\nann:x\n", &[]);
    let inc = e.path("list.inc");
    std::fs::write(&inc, "# members\njoe\nann, far@remote.example\n").unwrap();
    std::fs::write(
        e.path("aliases"),
        format!(
            "list: :include:{}\nbroken: :include:/nonexistent/inc\n",
            inc.display()
        ),
    )
    .unwrap();
    let mut f = Recorder::default();
    assert!(sent(&ld.deliver_text(
        &e.msg(),
        "list@mail.example.org",
        "",
        &mut f
    )));
    assert_eq!((e.maildir("joe").len(), e.maildir("ann").len()), (1, 1));
    assert_eq!(f.calls[0].0, vec!["far@remote.example".to_string()]);
    let o = ld.deliver_text(&e.msg(), "broken@mail.example.org", "", &mut f);
    assert!(o.is_temporary() && o.text().contains("include"), "{o:?}");
}

#[test]
fn forwarder_failure_is_the_outcome() {
    let (e, mut ld) = env("x: a@remote.example\n", "", &[]);
    let mut f = Recorder {
        fail: Some(Outcome::temporary(3, 0, "cleanup down")),
        ..Default::default()
    };
    assert_eq!(
        ld.deliver_text(&e.msg(), "x@mail.example.org", "", &mut f),
        Outcome::temporary(3, 0, "cleanup down")
    );
}

#[test]
fn system_user_mbox_and_forward() {
    let me = nix::unistd::User::from_uid(nix::unistd::geteuid())
        .unwrap()
        .unwrap();
    let (e, mut ld) = env("", "", &[("recipient_delimiter", "+")]);
    let addr = format!("{}@mail.example.org", me.name);
    // No .forward: mbox in the spool directory.
    assert!(sent(&ld.deliver_text(
        &e.msg(),
        &addr,
        "",
        &mut Recorder::default()
    )));
    let mbox = std::fs::read_to_string(e.path(&format!("spool/{}", me.name))).unwrap();
    assert!(mbox.contains(&format!("Delivered-To: {addr}\n")), "{mbox}");
    // A .forward with a self-reference (\user) and a remote address.
    std::fs::create_dir(e.path("fwd")).unwrap();
    let fwd = e.path(&format!("fwd/{}", me.name));
    std::fs::write(&fwd, format!("\\{}, away@remote.example\n", me.name)).unwrap();
    let mut f = Recorder::default();
    assert!(sent(&ld.deliver_text(&e.msg(), &addr, "", &mut f)));
    assert_eq!(
        f.calls,
        vec![(vec!["away@remote.example".to_string()], addr.clone())]
    );
    let mbox = std::fs::read_to_string(e.path(&format!("spool/{}", me.name))).unwrap();
    assert_eq!(mbox.matches("\nDelivered-To:").count(), 2);
    // Extension-specific forward file via ${extension?...}.
    std::fs::write(
        e.path(&format!("fwd/{}+list", me.name)),
        "listcopy@remote.example\n",
    )
    .unwrap();
    let mut f = Recorder::default();
    assert!(sent(&ld.deliver_text(
        &e.msg(),
        &format!("{}+list@mail.example.org", me.name),
        "",
        &mut f
    )));
    assert_eq!(f.calls[0].0, vec!["listcopy@remote.example".to_string()]);
    // A group-writable .forward is refused: mail goes to the mailbox instead.
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&fwd, std::fs::Permissions::from_mode(0o666)).unwrap();
    let mut f = Recorder::default();
    assert!(sent(&ld.deliver_text(&e.msg(), &addr, "", &mut f)));
    assert!(f.calls.is_empty());
    let mbox = std::fs::read_to_string(e.path(&format!("spool/{}", me.name))).unwrap();
    assert_eq!(mbox.matches("\nDelivered-To:").count(), 3);
}

#[test]
fn aliases_reload_when_changed() {
    let (e, mut ld) = env("x: joe\n", "joe:x\nann:x\n", &[]);
    assert!(sent(&ld.deliver_text(
        &e.msg(),
        "x@mail.example.org",
        "",
        &mut Recorder::default()
    )));
    std::fs::write(e.path("aliases"), "x: ann, joe\n#longer\n").unwrap();
    assert!(sent(&ld.deliver_text(
        &e.msg(),
        "x@mail.example.org",
        "",
        &mut Recorder::default()
    )));
    assert_eq!((e.maildir("joe").len(), e.maildir("ann").len()), (2, 1));
    std::fs::write(e.path("aliases"), "broken\n").unwrap();
    assert!(
        ld.deliver_text(&e.msg(), "x@mail.example.org", "", &mut Recorder::default())
            .is_temporary()
    );
}

#[test]
fn var_expansion() {
    let v = [
        ("home", "/h".to_string()),
        ("extension", String::new()),
        ("user", "u".into()),
    ];
    assert_eq!(
        expand_vars("$home/.forward${extension?+$extension}", &v, 0),
        "/h/.forward"
    );
    assert_eq!(
        expand_vars("${home}/x${extension:-none}$", &v, 0),
        "/h/x-none$"
    );
    let v = [("extension", "e".to_string())];
    assert_eq!(
        expand_vars("a${extension?+$extension}b${unterminated", &v, 0),
        "a+eb${unterminated"
    );
}

#[test]
fn outcomes_aggregate() {
    let s = Outcome::sent("a");
    let b = Outcome::permanent(1, 1, "r");
    let d = Outcome::temporary(3, 0, "t");
    assert_eq!(aggregate(vec![s.clone(), b.clone(), d.clone()]), d);
    assert_eq!(aggregate(vec![s.clone(), b.clone()]), b);
    assert_eq!(
        aggregate(vec![s.clone(), Outcome::sent("c"), s]),
        Outcome::sent("a; c")
    );
}

#[test]
fn outcomes_are_delivery_statuses_and_cross_the_child_pipe_checked() {
    use crate::privsep::{decode_outcome, encode_outcome};
    // A failure of a leaf delivery becomes the one status type.
    let s: DeliveryStatus =
        crate::mailbox::DeliveryError::perm(EnhancedCode(5, 1, 1), "unknown user").into();
    assert_eq!(s, Outcome::permanent(1, 1, "unknown user"));
    let s: DeliveryStatus =
        crate::mailbox::DeliveryError::temp(EnhancedCode(4, 2, 0), "disk").into();
    assert_eq!(s.to_string(), "4.2.0 disk");
    for o in [
        Outcome::sent("delivered to maildir"),
        Outcome::success(1, 5, "x"),
        Outcome::temporary(2, 0, "disk"),
        Outcome::permanent(7, 1, "no"),
    ] {
        assert_eq!(decode_outcome(&encode_outcome(&o)).unwrap(), o);
    }
    // A "done" frame with a failure code is refused.
    let mut f = encode_outcome(&Outcome::permanent(1, 1, "x"));
    f[0] = 0;
    assert!(decode_outcome(&f).unwrap_err().contains("2.x.x"), "{f:?}");
    // A command's exit status goes through the one sysexits table.
    assert_eq!(
        postern_status::sysexits::describe(67),
        (EnhancedCode(5, 1, 1), "user unknown")
    );
}
