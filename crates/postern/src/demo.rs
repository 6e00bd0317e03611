//! `postern demo`: a complete, working instance in one directory.
//!
//! Everything lives under DIR (configuration, queue, mailboxes, log), the
//! services listen on 127.0.0.1 at 1000 + their standard port, the domain is
//! example.test with one mailbox user, `demo`. It needs no root and no
//! install step; running it again on the same DIR reuses what is there.
//!
//! Services: SMTP with STARTTLS on [`SMTP_PORT`], and the two submission
//! services of the shipped master.cf: `submission` on [`SUBMISSION_PORT`]
//! (STARTTLS required) and `submissions` on [`SMTPS_PORT`] (implicit TLS),
//! where nothing is accepted without AUTH as `demo`.
//!
//! SECURITY: everything listens on 127.0.0.1 only; the demo password is
//! random, stored hashed (argon2id) in DIR/users and in clear in
//! DIR/demo-password, both mode 0600; the TLS key is DIR/tls/key.pem, 0600.

use std::fs;
use std::io::Read;
use std::path::{Path, PathBuf};

/// The demo's SMTP port (1000 + 25).
pub const SMTP_PORT: u16 = 1025;

/// The demo's message submission port (1000 + 587): STARTTLS, then AUTH.
pub const SUBMISSION_PORT: u16 = 1587;

/// The demo's implicit-TLS submission port (1000 + 465, "submissions").
pub const SMTPS_PORT: u16 = 1465;

/// The `-o` overrides of the shipped master.cf's `submission` service, which
/// the demo's [`SUBMISSION_PORT`] service uses too.
pub const SUBMISSION_OVERRIDES: &[(&str, &str)] = &[
    ("syslog_name", "postern/submission"),
    ("smtpd_tls_security_level", "encrypt"),
    ("smtpd_sasl_auth_enable", "yes"),
    ("smtpd_tls_auth_only", "yes"),
    (
        "smtpd_client_restrictions",
        "permit_sasl_authenticated,reject",
    ),
    ("smtpd_sender_restrictions", "reject_sender_login_mismatch"),
    (
        "smtpd_relay_restrictions",
        "permit_sasl_authenticated,reject",
    ),
];

/// The `-o` overrides of the shipped master.cf's `submissions` service,
/// which the demo's [`SMTPS_PORT`] service uses too.
pub const SUBMISSIONS_OVERRIDES: &[(&str, &str)] = &[
    ("syslog_name", "postern/submissions"),
    ("smtpd_tls_wrappermode", "yes"),
    ("smtpd_sasl_auth_enable", "yes"),
    (
        "smtpd_client_restrictions",
        "permit_sasl_authenticated,reject",
    ),
    ("smtpd_sender_restrictions", "reject_sender_login_mismatch"),
    (
        "smtpd_relay_restrictions",
        "permit_sasl_authenticated,reject",
    ),
];

/// Continuation lines `  -o name=value` for master.cf.
fn override_lines(overrides: &[(&str, &str)]) -> String {
    overrides
        .iter()
        .map(|(k, v)| format!("  -o {k}={v}\n"))
        .collect()
}

fn write_new(path: &Path, text: &str) -> Result<(), String> {
    fs::write(path, text).map_err(|e| format!("postern: cannot write {}: {e}", path.display()))
}

fn random_bytes(n: usize) -> Result<Vec<u8>, String> {
    let mut buf = vec![0u8; n];
    fs::File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(&mut buf))
        .map_err(|e| format!("postern: cannot read /dev/urandom: {e}"))?;
    Ok(buf)
}

/// A password that is easy to type: 16 characters of a-z and 2-9.
fn new_password() -> Result<String, String> {
    const ALPHABET: &[u8] = b"abcdefghijkmnpqrstuvwxyz23456789";
    Ok(random_bytes(16)?
        .iter()
        .map(|b| ALPHABET[(*b as usize) % ALPHABET.len()] as char)
        .collect())
}

/// An argon2id hash in the passwd-file form "{ARGON2ID}$argon2id$..."
/// (postern-passdb's [`postern_passdb::hash_password`]; auth verifies it).
pub use postern_passdb::hash_password;

/// Where the service binaries are: next to this `postern` binary.
fn daemon_directory() -> Result<PathBuf, String> {
    let exe =
        std::env::current_exe().map_err(|e| format!("postern: cannot find my own binary: {e}"))?;
    exe.parent()
        .map(Path::to_path_buf)
        .ok_or_else(|| "postern: binary has no directory".to_string())
}

/// The demo's main.cf.
pub fn main_cf(dir: &Path, daemon_dir: &Path) -> String {
    let d = dir.display();
    format!(
        "\
# main.cf of a Postern demo instance, written by `postern demo`.
# Every path is inside this directory; nothing here needs root.

# Where the queue, the service sockets and the pid file live.
queue_directory = {d}/queue
# Where master finds the service programs (smtpd, cleanup, qmgr, local).
daemon_directory = {daemon}
# Where long-lived state lives.
data_directory = {d}/data
# Log to master's standard output (the terminal), Postfix's format.
maillog_file = /dev/stdout
# Run every service as the invoking user, even root: the demo needs no
# `postern install` (no system users, no permission changes).
privilege_separation = no

# The demo mail domain and this host's name in it.
myhostname = mail.example.test
mydomain = example.test
myorigin = $mydomain
# Mail for these domains is delivered here.
mydestination = $mydomain, $myhostname, localhost
# Clients allowed to relay to other domains (smtp delivers that mail: MX
# lookup, STARTTLS when offered).
mynetworks = 127.0.0.0/8 [::1]/128
# Listen on the loopback interface only.
inet_interfaces = loopback-only

# Aliases (/etc/aliases syntax) and the mailbox users (Dovecot passwd-file).
alias_maps = hash:{d}/aliases
users_file = {d}/users
# Only aliases and users_file users are valid recipients (not system users).
local_recipient_maps = $alias_maps
# Users' mailboxes: {d}/mail/USER/Maildir/
virtual_mailbox_base = {d}/mail
home_mailbox = Maildir/
# Retry deferred mail quickly in a demo.
minimal_backoff_time = 30s
maximal_backoff_time = 300s
queue_run_delay = 30s

# TLS: a self-signed certificate made by `postern tls selfsigned`. STARTTLS
# is offered on {smtp} (level may: the default once a certificate is set) and
# required on {submission}; {smtps} is implicit TLS (see master.cf).
smtpd_tls_cert_file = {d}/tls/cert.pem
smtpd_tls_key_file = {d}/tls/key.pem
",
        smtp = SMTP_PORT,
        submission = SUBMISSION_PORT,
        smtps = SMTPS_PORT,
        daemon = daemon_dir.display()
    )
}

/// Makes the demo's self-signed certificate unless it already has one.
fn ensure_certificate(dir: &Path) -> Result<(), String> {
    if dir.join("tls").join("cert.pem").exists() {
        return Ok(());
    }
    crate::tls::selfsigned(dir, "mail.example.test", crate::tls::DEFAULT_DAYS, false).map(|_| ())
}

/// The demo's master.cf.
pub fn master_cf(smtp_port: u16) -> String {
    format!(
        "\
# master.cf of a Postern demo instance, written by `postern demo`.
# ==========================================================================
# service type  private unpriv  chroot  wakeup  maxproc command + args
#               (yes)   (yes)   (no)    (never) (100)
# ==========================================================================
# SMTP on 1000 + 25, loopback only.
127.0.0.1:{smtp_port} inet n - n - - smtpd
# Message submission (\"submission\", RFC 6409) on 1000 + 587: STARTTLS
# required, AUTH only inside TLS, nothing accepted without it, and the
# sender must be the login's own address (as the shipped master.cf).
127.0.0.1:{submission_port} inet n - n - - smtpd
{submission}# The same with implicit TLS (\"submissions\", RFC 8314) on 1000 + 465.
127.0.0.1:{smtps_port} inet n - n - - smtpd
{submissions}# Writes queue files; smtpd and local talk to it.
cleanup   unix  -       -       n       -       0       cleanup
# The queue manager, woken every 300 s and whenever mail arrives.
qmgr      unix  -       -       n       300     1       qmgr
# Delivers to the mailboxes.
local     unix  -       n       n       -       -       local
# Delivers to other servers.
smtp      unix  -       -       n       -       -       smtp
# Local submission (sendmail, postdrop): feeds maildrop/ to cleanup.
pickup    unix  n       -       n       60      1       pickup
# Checks passwords and answers user lookups (private/auth).
auth      unix  -       -       n       -       -       auth
",
        submission_port = SUBMISSION_PORT,
        submission = override_lines(SUBMISSION_OVERRIDES),
        smtps_port = SMTPS_PORT,
        submissions = override_lines(SUBMISSIONS_OVERRIDES),
    )
}

/// Creates DIR if needed (or reuses it), prints how to use it, runs master
/// in the foreground until Ctrl-C.
pub fn run(dir: &Path) -> Result<(), String> {
    fs::create_dir_all(dir)
        .map_err(|e| format!("postern: cannot create {}: {e}", dir.display()))?;
    let dir = fs::canonicalize(dir).map_err(|e| format!("postern: {}: {e}", dir.display()))?;
    let daemon_dir = daemon_directory()?;
    let main_path = dir.join("main.cf");
    let fresh = !main_path.exists();
    if fresh {
        write_new(&main_path, &main_cf(&dir, &daemon_dir))?;
        write_new(&dir.join("master.cf"), &master_cf(SMTP_PORT))?;
        write_new(
            &dir.join("aliases"),
            "# Aliases of the demo instance (/etc/aliases syntax).\npostmaster: demo\nroot: demo\nabuse: postmaster\n",
        )?;
        let password = new_password()?;
        write_new(
            &dir.join("users"),
            &format!(
                "# Mailbox users (Dovecot passwd-file format).\ndemo:{}::::::\n",
                hash_password(&password)?
            ),
        )?;
        let pw_path = dir.join("demo-password");
        write_new(&pw_path, &format!("{password}\n"))?;
        set_mode(&pw_path, 0o600)?;
        set_mode(&dir.join("users"), 0o600)?;
    } else {
        // Reuse the instance, but follow the binaries if they moved
        // (a debug build, then a release build).
        refresh_daemon_directory(&main_path, &daemon_dir)?;
    }
    for sub in ["queue", "data", "mail"] {
        fs::create_dir_all(dir.join(sub))
            .map_err(|e| format!("postern: cannot create {sub}: {e}"))?;
    }
    if fresh {
        ensure_certificate(&dir)?;
    }
    crate::check(&dir, true).map_err(|f| f.message)?;
    let password = fs::read_to_string(dir.join("demo-password")).unwrap_or_default();
    let pw = password.trim();
    let d = dir.display();
    println!(
        "\
Postern demo instance in {d} ({state})
  SMTP        127.0.0.1:{SMTP_PORT}   (STARTTLS offered)
  SUBMISSION  127.0.0.1:{SUBMISSION_PORT}   (STARTTLS required, then AUTH)
  SUBMISSIONS 127.0.0.1:{SMTPS_PORT}   (implicit TLS, then AUTH)
  certificate {d}/tls/cert.pem (self-signed, mail.example.test)
  domain      example.test
  user        demo@example.test   login: demo   password: {pw}
Send a test message (from another terminal):
  python3 -c \"import smtplib; smtplib.SMTP('127.0.0.1', {SMTP_PORT}).sendmail('you@example.test', ['demo@example.test'], 'Subject: hello\\n\\nIt works.\\n')\"
Or as a road warrior would, over submission with AUTH (swaks from Debian's package):
  swaks --server 127.0.0.1:{SUBMISSION_PORT} --tls --tls-verify --tls-ca-path {d}/tls/cert.pem --auth PLAIN --auth-user demo --auth-password {pw} --from demo@example.test --to demo@example.test
  (implicit TLS: --server 127.0.0.1:{SMTPS_PORT} --tlsc instead of --tls)
Look at the TLS session:
  openssl s_client -starttls smtp -connect 127.0.0.1:{SUBMISSION_PORT} -CAfile {d}/tls/cert.pem -verify_hostname mail.example.test
It lands in {d}/mail/demo/Maildir/new/
Log lines follow; stop with Ctrl-C.
",
        state = if fresh { "created" } else { "reused" },
    );
    if !fresh && !has_submission(&dir) {
        println!(
            "note: this instance was made before the demo had a submission service on \
             {SUBMISSION_PORT}; remove {d} to recreate it with one."
        );
    }
    postern_master::run_foreground(&dir)
}

/// True when DIR/master.cf has the demo's submission service (instances
/// made by older versions do not).
fn has_submission(dir: &Path) -> bool {
    fs::read_to_string(dir.join("master.cf"))
        .map(|t| t.contains(&format!("127.0.0.1:{SUBMISSION_PORT} ")))
        .unwrap_or(false)
}

fn set_mode(path: &Path, mode: u32) -> Result<(), String> {
    use std::os::unix::fs::PermissionsExt;
    fs::set_permissions(path, fs::Permissions::from_mode(mode))
        .map_err(|e| format!("postern: chmod {}: {e}", path.display()))
}

fn refresh_daemon_directory(main_path: &Path, daemon_dir: &Path) -> Result<(), String> {
    let text = fs::read_to_string(main_path)
        .map_err(|e| format!("postern: cannot read {}: {e}", main_path.display()))?;
    let wanted = format!("daemon_directory = {}", daemon_dir.display());
    let mut changed = false;
    let lines: Vec<String> = text
        .lines()
        .map(|l| {
            if l.starts_with("daemon_directory") && l != wanted {
                changed = true;
                wanted.clone()
            } else {
                l.to_string()
            }
        })
        .collect();
    if changed {
        write_new(main_path, &(lines.join("\n") + "\n"))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn demo_configuration_is_valid_and_self_contained() {
        let dir = tempfile::tempdir().unwrap();
        fs::write(
            dir.path().join("main.cf"),
            main_cf(dir.path(), Path::new("/opt/postern/bin")),
        )
        .unwrap();
        fs::write(dir.path().join("master.cf"), master_cf(SMTP_PORT)).unwrap();
        let main = postern_config::MainCf::load(dir.path()).unwrap();
        assert!(main.warnings().is_empty(), "{:?}", main.warnings());
        assert!(main.path("queue_directory").starts_with(dir.path()));
        assert!(
            main.list("mydestination")
                .contains(&"example.test".to_string())
        );
        let master = postern_config::MasterCf::load(dir.path()).unwrap();
        let smtpds: Vec<_> = master
            .services
            .iter()
            .filter(|s| s.command == "smtpd")
            .collect();
        let listens: Vec<Vec<std::net::SocketAddr>> = smtpds
            .iter()
            .map(|s| s.inet_addresses(&main).unwrap())
            .collect();
        assert_eq!(
            listens,
            [
                vec!["127.0.0.1:1025".parse().unwrap()],
                vec!["127.0.0.1:1587".parse().unwrap()],
                vec!["127.0.0.1:1465".parse().unwrap()],
            ]
        );
        assert_eq!((SMTP_PORT, SUBMISSION_PORT, SMTPS_PORT), (1025, 1587, 1465));
        // Port 1025 is plain SMTP; 1587 and 1465 are the shipped master.cf's
        // submission and submissions services, overrides and all.
        assert!(smtpds[0].overrides.is_empty());
        let shipped = postern_config::MasterCf::parse(
            crate::install::SHIPPED_MASTER_CF,
            Path::new("/etc/postern/master.cf"),
        )
        .unwrap();
        for (demo, name) in [(smtpds[1], "submission"), (smtpds[2], "submissions")] {
            let ship = shipped.services.iter().find(|s| s.name == name).unwrap();
            assert_eq!(demo.overrides, ship.overrides, "{name}");
            // And they make a valid configuration with the demo's main.cf.
            let mut m = main.clone();
            for (k, v) in &demo.overrides {
                m.set(k, v);
            }
            m.validate().unwrap();
            assert!(m.bool("smtpd_sasl_auth_enable").unwrap(), "{name}");
            assert_eq!(
                m.list("smtpd_relay_restrictions"),
                ["permit_sasl_authenticated", "reject"]
            );
            assert_eq!(m.str("syslog_name"), format!("postern/{name}"));
        }
        let level = |s: &postern_config::ServiceEntry| {
            let mut m = main.clone();
            for (k, v) in &s.overrides {
                m.set(k, v);
            }
            (
                m.str("smtpd_tls_security_level"),
                m.bool("smtpd_tls_wrappermode").unwrap(),
            )
        };
        assert_eq!(level(smtpds[0]), (String::new(), false), "may, by default");
        assert_eq!(level(smtpds[1]), ("encrypt".to_string(), false));
        assert_eq!(level(smtpds[2]), (String::new(), true));
        assert!(has_submission(dir.path()));
        fs::write(dir.path().join("master.cf"), "# old\n").unwrap();
        assert!(!has_submission(dir.path()));
        assert!(main.str("smtpd_tls_cert_file").ends_with("/tls/cert.pem"));
        assert!(main.str("smtpd_tls_key_file").ends_with("/tls/key.pem"));
    }

    #[test]
    fn passwords_are_hashed_with_argon2id() {
        let h = hash_password("secret").unwrap();
        assert!(h.starts_with("{ARGON2ID}$argon2id$"), "{h}");
        assert_ne!(h, hash_password("secret").unwrap(), "salted");
    }

    #[test]
    fn daemon_directory_follows_the_binary() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("main.cf");
        fs::write(&p, "a = b\ndaemon_directory = /old\n").unwrap();
        refresh_daemon_directory(&p, Path::new("/new")).unwrap();
        assert_eq!(
            fs::read_to_string(&p).unwrap(),
            "a = b\ndaemon_directory = /new\n"
        );
    }
}
