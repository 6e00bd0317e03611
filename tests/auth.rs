//! The auth service in a real instance: password checks for every scheme
//! over private/auth, user lookups, throttling, `postern passwd`, and (as
//! root, after `postern install`) users_file readable by postern-auth only,
//! with smtpd still telling users_file users from unknown ones via auth.

use postern_ipc::BlockingChannel;
use postern_ipc::messages::{AuthReply, AuthRequest};
use postern_tests::*;
use std::io::Write;
use std::net::SocketAddr;
use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

const T: Duration = Duration::from_secs(30);

/// openssl passwd -6 -salt saltsalt secret
const SHA512: &str = "{SHA512-CRYPT}$6$saltsalt$TVLlQcbpFVof5W3Yz4DTP6gRstiNuHwwTt6GLc1E5n0U0aDehy0S5knV8wiOQSpT0Y77vwPZN.Pq.H91p5hVO1";
/// crypt_blowfish's test vector for "U*U", in $2y$ form.
const BCRYPT: &str = "{BLF-CRYPT}$2y$05$CCCCCCCCCCCCCCCCCCCCC.E5YPO9kmyuRGyh0XouQYb4YMJKvyOeW";

fn socket(inst: &Instance) -> std::path::PathBuf {
    inst.dir.join("queue").join("private").join("auth")
}

fn ask(inst: &Instance, req: &AuthRequest) -> AuthReply {
    let mut c = BlockingChannel::connect(&socket(inst), T).expect("connect to private/auth");
    c.send(req).unwrap();
    c.recv::<AuthReply>().unwrap().expect("a reply")
}

fn verify(user: &str, password: &str, client: &str) -> AuthRequest {
    AuthRequest::Verify {
        service: "smtpd".into(),
        user: user.into(),
        password: password.into(),
        client_address: client.into(),
    }
}

fn passwd(inst: &Instance, user: &str, password: &str) -> std::process::Output {
    let mut child = Command::new(bin_dir().join("postern"))
        .arg("-c")
        .arg(&inst.dir)
        .args(["passwd", user])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // A refused name exits before reading: ignore a broken pipe.
    let _ = child
        .stdin
        .take()
        .unwrap()
        .write_all(format!("{password}\n").as_bytes());
    child.wait_with_output().unwrap()
}

fn owner_and_mode(p: &Path) -> (u32, u32, u32) {
    let m = std::fs::metadata(p).unwrap();
    (m.uid(), m.gid(), m.mode() & 0o7777)
}

#[test]
fn auth_service_end_to_end() {
    let mut inst = Instance::new(Options {
        main_extra: "auth_failure_delay = 0\nauth_failure_limit = 3\n".into(),
        ..Options::default()
    });
    let argon = postern_passdb::hash_password("argon-pw").unwrap();
    std::fs::write(
        inst.dir.join("users"),
        format!(
            "# test users\n\
             alice:{{PLAIN}}secret::::::\n\
             bob:{{PLAIN}}secret::::::\n\
             carol:{{PLAIN}}secret::::::\n\
             dora:{argon}:1234:1234::/home/dora::\n\
             erin:{BCRYPT}::::::\n\
             fred:{SHA512}::::::\n\
             gus:{{MD5-CRYPT}}$1$abc$def::::::\n"
        ),
    )
    .unwrap();
    inst.start();
    let users = inst.dir.join("users");

    // Good and bad passwords, per scheme; unknown users look like bad passwords.
    for (i, (user, good)) in [
        ("alice", "secret"),
        ("dora", "argon-pw"),
        ("erin", "U*U"),
        ("fred", "secret"),
    ]
    .iter()
    .enumerate()
    {
        assert_eq!(
            ask(&inst, &verify(&user.to_uppercase(), good, "192.0.2.10")),
            AuthReply::Verified {
                user: user.to_string()
            },
            "{user}"
        );
        assert_eq!(
            ask(
                &inst,
                &verify(user, "wrong", &format!("192.0.2.{}", 20 + i))
            ),
            AuthReply::Failed,
            "{user} with a wrong password"
        );
    }
    assert_eq!(
        ask(&inst, &verify("nosuch", "secret", "192.0.2.30")),
        AuthReply::Failed
    );
    assert_eq!(
        ask(&inst, &verify("gus", "x", "192.0.2.31")),
        AuthReply::Failed
    );
    assert!(
        wait_until(T, || inst
            .log()
            .contains("unsupported password scheme MD5-CRYPT")),
        "unknown scheme is logged with the user: {}",
        inst.log()
    );
    assert!(
        !inst.log().contains("argon-pw"),
        "passwords never reach the log"
    );

    // Lookups: canonical name and mailbox data, never the hash.
    assert_eq!(
        ask(
            &inst,
            &AuthRequest::Lookup {
                user: "Dora".into()
            }
        ),
        AuthReply::User {
            name: "dora".into(),
            uid: Some(1234),
            gid: Some(1234),
            home: Some("/home/dora".into())
        }
    );
    assert_eq!(
        ask(
            &inst,
            &AuthRequest::Lookup {
                user: "nosuch".into()
            }
        ),
        AuthReply::NoSuchUser
    );

    // Throttling: 3 failures from one address, then even the right password
    // is refused for now (one connection, so one auth process).
    let mut c = BlockingChannel::connect(&socket(&inst), T).unwrap();
    for _ in 0..3 {
        c.send(&verify("alice", "bad", "198.51.100.5")).unwrap();
        assert_eq!(c.recv::<AuthReply>().unwrap(), Some(AuthReply::Failed));
    }
    c.send(&verify("alice", "secret", "198.51.100.5")).unwrap();
    assert!(matches!(
        c.recv::<AuthReply>().unwrap(),
        Some(AuthReply::TempFail { reason }) if reason.contains("too many failed logins")
    ));
    c.send(&verify("alice", "secret", "198.51.100.6")).unwrap();
    assert_eq!(
        c.recv::<AuthReply>().unwrap(),
        Some(AuthReply::Verified {
            user: "alice".into()
        })
    );
    drop(c);

    if is_root() {
        // After `postern install` (start runs it) only postern-auth reads users_file.
        let auth_uid = nix::unistd::User::from_name("postern-auth")
            .unwrap()
            .unwrap()
            .uid
            .as_raw();
        assert_eq!(owner_and_mode(&users), (auth_uid, 0, 0o600));
        let smtpd_cat = Command::new("runuser")
            .args(["-u", "postern-smtpd", "--", "cat"])
            .arg(&users)
            .output()
            .unwrap();
        assert!(
            !smtpd_cat.status.success(),
            "postern-smtpd must not read users_file"
        );
        let check = inst.postern(&["install", "--check"]);
        assert!(
            check.status.success(),
            "{}",
            String::from_utf8_lossy(&check.stdout)
        );
    }

    // smtpd tells users_file users from unknown ones (through auth when it
    // cannot read the file).
    let addr = SocketAddr::from(([127, 0, 0, 1], inst.smtp_port));
    let mut s = Smtp::connect(addr);
    assert_eq!(s.cmd("EHLO client.example").code, 250);
    assert_eq!(s.cmd("MAIL FROM:<x@example.net>").code, 250);
    let r = s.cmd("RCPT TO:<fred@example.test>");
    assert_eq!(r.code, 250, "{r:?}");
    let r = s.cmd("RCPT TO:<Dora@example.test>");
    assert_eq!(r.code, 250, "{r:?}");
    let r = s.cmd("RCPT TO:<nosuch@example.test>");
    assert_eq!(r.code, 550, "{r:?}");
    let _ = s.cmd("QUIT");

    // `postern passwd` via stdin: new user, changed password; owner and mode kept.
    let before = owner_and_mode(&users);
    let out = passwd(&inst, "newbie", "n3w-pass");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        ask(&inst, &verify("newbie", "n3w-pass", "192.0.2.40")),
        AuthReply::Verified {
            user: "newbie".into()
        }
    );
    let out = passwd(&inst, "fred", "changed");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        ask(&inst, &verify("fred", "changed", "192.0.2.41")),
        AuthReply::Verified {
            user: "fred".into()
        }
    );
    assert_eq!(
        ask(&inst, &verify("fred", "secret", "192.0.2.42")),
        AuthReply::Failed
    );
    assert_eq!(owner_and_mode(&users), before);
    let text = std::fs::read_to_string(&users).unwrap();
    assert!(text.starts_with("# test users\n"), "comments kept: {text}");
    assert!(text.contains("dora:{ARGON2ID}"), "other users kept: {text}");
    assert!(text.contains("fred:{ARGON2ID}$argon2id$"), "{text}");
    // Bad names are refused and change nothing.
    let out = passwd(&inst, "evil:0:0", "x");
    assert!(!out.status.success());
    assert_eq!(std::fs::read_to_string(&users).unwrap(), text);

    inst.stop();
}
