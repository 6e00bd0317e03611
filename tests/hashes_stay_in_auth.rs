//! The password hashes of users_file stay in the auth service (issue 15,
//! point 7): smtpd never holds one, even when it checks users_file users
//! at RCPT and could open the file itself (privilege separation off, as in
//! the demo), and local, which reads users_file for uid/gid/home, keeps no
//! copy either.
//!
//! How: users_file gets a user whose stored hash is a fresh argon2id hash
//! (random salt, so its text exists nowhere else), smtpd is driven through
//! RCPT checks of users_file users, and the memory of every smtpd process
//! is read through /proc/PID/maps and /proc/PID/mem and searched for the
//! hash. To show the search can find it, the same search must find it in
//! the auth process, which keeps the hashes to check passwords.

use postern_ipc::BlockingChannel;
use postern_ipc::messages::{AuthReply, AuthRequest};
use postern_tests::*;
use std::os::unix::fs::FileExt;
use std::time::{Duration, Instant};

const T: Duration = Duration::from_secs(30);

/// Whether `needle` is anywhere in the readable memory of process `pid`.
/// Err when the process's memory cannot be read at all (gone, or no
/// permission), so that a failure to look never passes as "absent".
fn memory_contains(pid: i32, needle: &[u8]) -> Result<bool, String> {
    let maps = std::fs::read_to_string(format!("/proc/{pid}/maps"))
        .map_err(|e| format!("/proc/{pid}/maps: {e}"))?;
    let mem = std::fs::File::open(format!("/proc/{pid}/mem"))
        .map_err(|e| format!("/proc/{pid}/mem: {e}"))?;
    const CHUNK: usize = 1 << 20;
    let overlap = needle.len() - 1;
    let mut buf = vec![0u8; CHUNK + overlap];
    let mut scanned = 0u64;
    for line in maps.lines() {
        let fields: Vec<&str> = line.split_whitespace().collect();
        let (Some(range), Some(perms)) = (fields.first(), fields.get(1)) else {
            continue;
        };
        // Kernel pages that cannot be read through mem.
        if !perms.starts_with('r')
            || fields
                .get(5)
                .is_some_and(|p| p.starts_with("[vvar") || *p == "[vsyscall]")
        {
            continue;
        }
        let Some((start, end)) = range.split_once('-') else {
            continue;
        };
        let (Ok(start), Ok(end)) = (u64::from_str_radix(start, 16), u64::from_str_radix(end, 16))
        else {
            continue;
        };
        // Read the region in chunks that overlap by needle.len() - 1 bytes.
        let mut at = start;
        let mut carried = 0usize;
        while at < end {
            let want = usize::try_from((end - at).min(CHUNK as u64)).unwrap();
            let n = match mem.read_at(&mut buf[carried..carried + want], at) {
                Ok(0) | Err(_) => break, // unmapped meanwhile, or unreadable
                Ok(n) => n,
            };
            scanned += n as u64;
            let have = carried + n;
            if buf[..have].windows(needle.len()).any(|w| w == needle) {
                return Ok(true);
            }
            carried = overlap.min(have);
            buf.copy_within(have - carried..have, 0);
            at += n as u64;
        }
    }
    if scanned == 0 {
        return Err(format!("nothing of process {pid}'s memory could be read"));
    }
    Ok(false)
}

#[test]
fn smtpd_never_holds_a_password_hash() {
    let mut inst = Instance::new(Options::default());
    // A real stored hash, unique to this run: its salt is random.
    let hash = postern_passdb::hash_password("canary-password").unwrap();
    // The part after the scheme and parameters: salt$hash, 60-odd
    // characters that only this users_file contains.
    let canary = hash.rsplitn(3, '$').take(2).collect::<Vec<_>>();
    let canary = format!("{}${}", canary[1], canary[0]);
    assert!(canary.len() > 60, "{hash}");
    std::fs::write(
        inst.dir.join("users"),
        format!(
            "alice:{{PLAIN}}secret::::::\n\
             bob:{{PLAIN}}secret::::::\n\
             carol:{{PLAIN}}secret::::::\n\
             canary:{hash}::::::\n"
        ),
    )
    .unwrap();
    inst.start();
    let begun = Instant::now();
    // As root, `postern install` (run by start) has made users_file
    // postern-auth's, 0600. Make it readable by everyone again: smtpd
    // could now read it, and must still not.
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(
        inst.dir.join("users"),
        std::fs::Permissions::from_mode(0o644),
    )
    .unwrap();

    // RCPT checks of users_file users (and one unknown user): every way
    // smtpd could have had to learn about them has been taken.
    let mut s = inst.smtp();
    assert_eq!(s.cmd("EHLO client.example").code, 250);
    assert_eq!(s.cmd("MAIL FROM:<sender@example.net>").code, 250);
    for (rcpt, want) in [
        ("canary@example.test", 250),
        ("CANARY@example.test", 250),
        ("alice@example.test", 250),
        ("nosuch@example.test", 550),
    ] {
        let r = s.cmd(&format!("RCPT TO:<{rcpt}>"));
        assert_eq!(r.code, want, "{rcpt}: {r:?}");
    }
    // The hash is the one auth checks passwords against.
    let mut c = BlockingChannel::connect(&inst.dir.join("queue/private/auth"), T).unwrap();
    c.send(&AuthRequest::Verify {
        service: "test".into(),
        user: "canary".into(),
        password: "canary-password".into(),
        client_address: "192.0.2.1".into(),
    })
    .unwrap();
    assert_eq!(
        c.recv::<AuthReply>().unwrap(),
        Some(AuthReply::Verified {
            user: "canary".into()
        })
    );
    drop(c);

    // With the session still open, so its smtpd is alive: no smtpd holds
    // the hash ...
    let smtpds = inst.pids_of("smtpd");
    assert!(!smtpds.is_empty(), "no smtpd process found");
    for pid in &smtpds {
        assert_eq!(
            memory_contains(*pid, canary.as_bytes()),
            Ok(false),
            "smtpd process {pid} holds users_file's password hash"
        );
    }
    // ... while the auth process does: the search finds what is there.
    let auths = inst.pids_of("auth");
    assert!(!auths.is_empty(), "no auth process found");
    let found: Vec<_> = auths
        .iter()
        .map(|pid| memory_contains(*pid, canary.as_bytes()))
        .collect();
    assert!(
        found.contains(&Ok(true)),
        "the hash was not found in auth's memory either: {found:?}"
    );

    // local reads users_file for uid/gid/home when it delivers to a
    // users_file user: it keeps no hash either.
    let r = s.cmd("DATA");
    assert_eq!(r.code, 354, "{r:?}");
    s.raw(b"Subject: canary\r\n\r\nhello\r\n.\r\n");
    let r = s.read_reply();
    assert_eq!(r.code, 250, "{r:?}");
    let _ = s.cmd("QUIT");
    assert_eq!(inst.wait_mail("canary", 1, T).len(), 1);
    let locals = inst.pids_of("local");
    assert!(!locals.is_empty(), "no local process found");
    for pid in &locals {
        assert_eq!(
            memory_contains(*pid, canary.as_bytes()),
            Ok(false),
            "local process {pid} holds users_file's password hash"
        );
    }
    assert!(begun.elapsed() < Duration::from_secs(60), "took too long");
}
