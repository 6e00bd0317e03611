//! The `postern` admin command: the one tool an administrator types.
//!
//! `postern [-c CONFIG_DIR] COMMAND`, like `postfix -c` and `postconf`:
//! start, stop, reload, status, check, config, and demo (a complete
//! instance in one directory, for trying Postern without root).
//!
//! SECURITY: runs as its caller. It reads configuration and signals master
//! through its pid file; it never needs privileges of its own, except
//! `install`, which must run as root (see the `install` module).
#![forbid(unsafe_code)]

pub mod demo;
pub mod install;
pub mod man;
pub mod passwd;
pub mod queue;
pub mod sendmail;
pub mod tls;

use postern_config::{MainCf, MasterCf};
use std::path::{Path, PathBuf};

/// Usage text, printed for -h and on a usage error.
pub const USAGE: &str = "\
usage: postern [-c CONFIG_DIR] COMMAND [ARGS]

commands:
  start              start the mail system (master in the background)
  stop               stop the mail system
  reload             re-read main.cf and master.cf (running mail is not disturbed)
  status             say whether the mail system is running
  check              validate main.cf and master.cf and the installation
  config [-n] [-d] [-x] [NAME...]
                     print main.cf parameters, like postconf
                     (-n: only those set in main.cf, -d: defaults, -x: expand $names)
  install [--check]  create users, groups, config and queue directories with the
                     owners and modes of docs/security.md (root); --check only
                     reports differences (exit 1 if any)
  tls selfsigned [--hostname NAME] [--days N] [--force]
                     write CONFIG_DIR/tls/cert.pem and key.pem, a self-signed
                     certificate for NAME (default: myhostname) for smtpd
  passwd USER        set USER's password in users_file (argon2id; from stdin
                     if it is not a terminal, else prompted for twice)
  queue list [-j]    list the queue as mailq does, with why each recipient is
                     deferred (-j: one JSON object per message, as postqueue -j)
  queue show ID      print a message's envelope and content (postcat -q)
  queue flush        ask qmgr to retry all deferred mail now (postqueue -f;
                     root or group postern-ipc); also `postern flush`
  queue delete ID...|ALL|- [QUEUE]
                     remove messages (postsuper -d; root); QUEUE: one of
                     incoming active deferred hold, or maildrop, corrupt
  queue hold ID...|ALL|-     put messages on hold (postsuper -h; root)
  queue release ID...|ALL|-  release held messages for delivery now (postsuper -H; root)
  queue requeue ID...|ALL|-  give messages back to qmgr at once through incoming/
                     (postsuper -r; root); a message qmgr is delivering (active/)
                     is left alone while the mail system runs
  demo [DIR]         create (or reuse) a complete instance in DIR (default
                     ./postern-demo) on 127.0.0.1 high ports and run it in the
                     foreground

CONFIG_DIR defaults to $MAIL_CONFIG, then /etc/postern.";

/// A command-line failure: message and exit status.
#[derive(Debug)]
pub struct Failure {
    /// What went wrong, for stderr.
    pub message: String,
    /// Exit status (1 = error, 2 = usage).
    pub status: i32,
}

fn fail(message: impl Into<String>) -> Failure {
    Failure {
        message: message.into(),
        status: 1,
    }
}

fn usage(message: impl Into<String>) -> Failure {
    Failure {
        message: format!("{}\n{USAGE}", message.into()),
        status: 2,
    }
}

/// Runs the command line (without argv[0]); prints to stdout, returns the
/// failure for the caller to print and exit with.
pub fn run(args: &[String]) -> Result<(), Failure> {
    let mut config_dir: Option<PathBuf> = None;
    let mut i = 0;
    while i < args.len() {
        match args[i].as_str() {
            "-c" => {
                let Some(d) = args.get(i + 1) else {
                    return Err(usage("postern: -c needs a directory"));
                };
                config_dir = Some(PathBuf::from(d));
                i += 2;
            }
            "-h" | "--help" | "help" => {
                println!("{USAGE}");
                return Ok(());
            }
            "-V" | "--version" => {
                println!("postern {}", env!("CARGO_PKG_VERSION"));
                return Ok(());
            }
            s if s.starts_with('-') => return Err(usage(format!("postern: unknown option {s}"))),
            _ => break,
        }
    }
    let Some(command) = args.get(i) else {
        return Err(usage("postern: no command given"));
    };
    let rest = &args[i + 1..];
    let config_dir = config_dir
        .or_else(|| std::env::var_os("MAIL_CONFIG").map(PathBuf::from))
        .unwrap_or_else(|| PathBuf::from("/etc/postern"));
    match command.as_str() {
        "start" => {
            no_args(command, rest)?;
            check(&config_dir, true)?;
            let started = postern_master::start(&config_dir)
                .map_err(|e| fail(format!("postern: fatal: {e}")))?;
            for w in &started.warnings {
                eprintln!("postern: warning: {w}");
            }
            println!("postern: the mail system is running");
            Ok(())
        }
        "stop" => {
            no_args(command, rest)?;
            postern_master::stop(&config_dir).map_err(fail)?;
            println!("postern: the mail system is stopped");
            Ok(())
        }
        "reload" => {
            no_args(command, rest)?;
            check(&config_dir, true)?;
            postern_master::reload(&config_dir).map_err(fail)?;
            println!("postern: refreshing the mail system");
            Ok(())
        }
        "status" => {
            no_args(command, rest)?;
            status(&config_dir)
        }
        "check" => {
            no_args(command, rest)?;
            check(&config_dir, false)
        }
        "config" => config(&config_dir, rest),
        "install" => install::command(&config_dir, rest),
        "passwd" => passwd::command(&config_dir, rest).map_err(fail),
        "tls" => tls::command(&config_dir, rest),
        "queue" => queue::command(&config_dir, rest),
        "flush" => {
            no_args(command, rest)?;
            queue::flush(&config_dir)
        }
        "demo" => {
            if rest.len() > 1 {
                return Err(usage("postern: demo takes at most one directory"));
            }
            let dir = rest
                .first()
                .map(PathBuf::from)
                .unwrap_or_else(|| PathBuf::from("postern-demo"));
            demo::run(&dir).map_err(fail)
        }
        other => Err(usage(format!("postern: unknown command: {other}"))),
    }
}

fn no_args(command: &str, rest: &[String]) -> Result<(), Failure> {
    if rest.is_empty() {
        Ok(())
    } else {
        Err(usage(format!("postern: {command} takes no arguments")))
    }
}

/// `postern status`: whether master runs, and every service it is
/// throttling because its processes exit at start-up, with the last fatal
/// line of each. Exit 0 only when master runs and no service fails.
fn status(config_dir: &Path) -> Result<(), Failure> {
    let Some(pid) = postern_master::running_pid(config_dir).map_err(fail)? else {
        return Err(fail("postern: the mail system is not running"));
    };
    println!("postern: the mail system is running: PID: {pid}");
    let failing = match failing_services(config_dir) {
        Ok(f) => f,
        Err(e) => {
            // E.g. not root: the file is 0640, like the mail log.
            eprintln!("postern: warning: {e}: cannot tell whether a service is failing");
            Vec::new()
        }
    };
    if failing.is_empty() {
        return Ok(());
    }
    Err(fail(
        failing
            .iter()
            .map(|l| format!("postern: {l}"))
            .collect::<Vec<_>>()
            .join("\n"),
    ))
}

/// One line per service the running master reports failing at start-up.
fn failing_services(config_dir: &Path) -> Result<Vec<String>, String> {
    let Some(st) = postern_master::read_status(config_dir)? else {
        return Ok(Vec::new());
    };
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    Ok(st.failing().filter_map(|s| s.describe(now)).collect())
}

/// What `postern check` found: warnings (reported, not fatal) and errors.
#[derive(Debug, Default)]
struct Findings {
    warnings: Vec<String>,
    errors: Vec<String>,
}

/// True for a fully qualified domain name: at least two labels of letters,
/// digits and inner hyphens, a last label that is not all digits, and not
/// the placeholder domain `localdomain` (what the computed default appends
/// to a host name without a dot).
fn is_fqdn(name: &str) -> bool {
    let name = name.strip_suffix('.').unwrap_or(name);
    let labels: Vec<&str> = name.split('.').collect();
    let label_ok = |l: &&str| {
        !l.is_empty()
            && l.len() <= 63
            && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
            && !l.starts_with('-')
            && !l.ends_with('-')
    };
    labels.len() >= 2
        && labels.iter().all(label_ok)
        && labels
            .last()
            .is_some_and(|l| !l.bytes().all(|b| b.is_ascii_digit()))
        && !labels
            .last()
            .is_some_and(|l| l.eq_ignore_ascii_case("localdomain"))
}

/// The warning for a myhostname that is not a fully qualified domain name
/// (other servers check the HELO name and Message-IDs use it), as Postfix
/// warns.
fn hostname_warning(main: &MainCf) -> Option<String> {
    let host = main.str("myhostname");
    if is_fqdn(&host) {
        return None;
    }
    Some(if main.is_set("myhostname") {
        format!(
            "myhostname = {host} is not a fully qualified domain name (like mail.example.com): \
             other mail servers may refuse mail that says HELO {host}; fix it in {}",
            main.file().display()
        )
    } else {
        format!(
            "myhostname is not set and this system's host name gives {host}, which is not a \
             fully qualified domain name: set myhostname = mail.example.com (your host's \
             name in DNS) in {}",
            main.file().display()
        )
    })
}

/// The warning for an empty maillog_file without a syslog daemon at
/// `socket`: where the log goes instead (docs/master.md, "Logging").
fn log_warning(main: &MainCf, socket: &Path) -> Option<String> {
    if !main.str("maillog_file").is_empty() {
        return None;
    }
    let why = postern_master::syslog_unavailable(socket)?;
    Some(format!(
        "maillog_file is empty and {why}: `postern start` will log to {}, `master -f` \
         to its standard error; set maillog_file in {} to choose",
        postern_master::fallback_log_file(main).display(),
        main.file().display()
    ))
}

/// Errors for inet listeners another program holds (call only while the
/// mail system is stopped: its own listeners hold the ports while it runs).
fn port_problems(main: &MainCf, master: &MasterCf) -> Vec<String> {
    use nix::errno::Errno;
    let mut out = Vec::new();
    for s in &master.services {
        if s.kind != postern_config::ServiceType::Inet {
            continue;
        }
        let Ok(addrs) = s.inet_addresses(main) else {
            continue; // reported by the service checks
        };
        for addr in addrs {
            let hint = match postern_master::try_bind_inet(addr) {
                Ok(()) => continue,
                // A port below 1024 without root: master (as root) can.
                Err(Errno::EACCES) if !nix::unistd::geteuid().is_root() => continue,
                Err(e @ Errno::EADDRINUSE) => format!(
                    "{}: another program is listening there (`ss -ltnp 'sport = :{}'` shows which)",
                    e.desc(),
                    addr.port()
                ),
                Err(e @ Errno::EADDRNOTAVAIL) => {
                    format!("{}: no interface of this host has that address", e.desc())
                }
                Err(e) => e.desc().to_string(),
            };
            out.push(format!(
                "{}:{}: service {}: cannot bind {addr}: {hint}",
                master.path.display(),
                s.line,
                s.key()
            ));
        }
    }
    out
}

/// Checks that the certificate and key files of every smtpd with TLS on
/// can be read: as root (how smtpd reads them, before dropping privileges)
/// any failure is an error; otherwise "permission denied" only means it
/// cannot be checked from here (the key is root's, mode 0600).
fn tls_findings(main: &MainCf, master: &MasterCf, as_root: bool, found: &mut Findings) {
    let mut seen = std::collections::HashSet::new();
    for s in &master.services {
        let is_smtpd = Path::new(&s.command)
            .file_name()
            .is_some_and(|n| n == "smtpd");
        if !is_smtpd {
            continue;
        }
        let mut m = main.clone();
        for (k, v) in &s.overrides {
            m.set(k, v);
        }
        let chain = m.list("smtpd_tls_chain_files");
        let cert = m.str("smtpd_tls_cert_file");
        let files: Vec<(&str, String)> = if !chain.is_empty() {
            chain
                .into_iter()
                .map(|f| ("smtpd_tls_chain_files", f))
                .collect()
        } else if !cert.is_empty() {
            [
                ("smtpd_tls_cert_file", cert),
                ("smtpd_tls_key_file", m.str("smtpd_tls_key_file")),
            ]
            .into_iter()
            .filter(|(_, f)| !f.is_empty())
            .collect()
        } else {
            Vec::new()
        };
        let level = m.str("smtpd_tls_security_level");
        let wrapper = m.bool("smtpd_tls_wrappermode").unwrap_or(false);
        let where_ = format!("{}:{}: service {}", master.path.display(), s.line, s.key());
        if files.is_empty() {
            if wrapper || level == "encrypt" {
                let why = if wrapper {
                    "smtpd_tls_wrappermode = yes"
                } else {
                    "smtpd_tls_security_level = encrypt"
                };
                found.errors.push(format!(
                    "{where_}: {why} needs a certificate, but no smtpd_tls_cert_file or \
                     smtpd_tls_chain_files is set (`postern tls selfsigned` makes one)"
                ));
            }
            continue;
        }
        if !(wrapper || level == "may" || level == "encrypt" || level.is_empty()) {
            continue;
        }
        for (param, file) in files {
            // The key often is the certificate's file: one report per file.
            if !seen.insert(file.clone()) {
                continue;
            }
            let Err(e) = std::fs::File::open(&file).and_then(|mut f| {
                let mut b = [0u8; 1];
                std::io::Read::read(&mut f, &mut b).map(drop)
            }) else {
                continue;
            };
            let why = match e.raw_os_error() {
                Some(n) => nix::errno::Errno::from_raw(n).desc().to_string(),
                None => e.to_string(),
            };
            if !as_root && e.kind() == std::io::ErrorKind::PermissionDenied {
                found.warnings.push(format!(
                    "cannot check {param} {file}: {why} (smtpd reads it as root: run `postern check` as root)"
                ));
                continue;
            }
            let hint = if e.kind() == std::io::ErrorKind::NotFound {
                " (`postern tls selfsigned` makes a certificate and key)"
            } else {
                ""
            };
            found.errors.push(format!(
                "{where_}: {param} {file}: cannot read: {why}{hint}"
            ));
        }
    }
}

/// Validates main.cf, master.cf and what they point at. Warnings go to
/// stderr; errors (all of them, each with file:line and reason) fail.
/// `quiet` (start, reload): also skips the notes only `postern check` gives
/// (queue directory not created yet, failing services of a running master).
pub fn check(config_dir: &Path, quiet: bool) -> Result<(), Failure> {
    let main = MainCf::load(config_dir).map_err(|e| fail(format!("postern: fatal: {e}")))?;
    for w in main.warnings() {
        eprintln!("postern: warning: {w}");
    }
    let master = MasterCf::load(config_dir).map_err(|e| fail(format!("postern: fatal: {e}")))?;
    let daemon_dir = main.path("daemon_directory");
    let mut found = Findings::default();
    found.warnings.extend(hostname_warning(&main));
    let problems = &mut found.errors;
    for s in &master.services {
        let program = daemon_dir.join(&s.command);
        if !program.is_file() {
            problems.push(format!(
                "{}:{}: service {}: program {} does not exist",
                master.path.display(),
                s.line,
                s.name,
                program.display()
            ));
        }
        if s.kind == postern_config::ServiceType::Inet
            && let Err(e) = s.inet_addresses(&main)
        {
            problems.push(e.to_string());
        }
        let mut m = main.clone();
        for (k, v) in &s.overrides {
            m.set(k, v);
        }
        if let Err(e) = m.validate() {
            problems.push(format!(
                "{}:{}: service {}: {e}",
                master.path.display(),
                s.line,
                s.name
            ));
        }
    }
    found
        .warnings
        .extend(log_warning(&main, Path::new(postern_master::SYSLOG_SOCKET)));
    let running = postern_master::running_pid(config_dir).ok().flatten();
    if running.is_none() {
        found.errors.extend(port_problems(&main, &master));
    }
    tls_findings(&main, &master, nix::unistd::geteuid().is_root(), &mut found);
    if running.is_some() && !quiet {
        match failing_services(config_dir) {
            Ok(lines) => found.warnings.extend(lines),
            Err(e) => found.warnings.push(e),
        }
    }
    let queue = main.path("queue_directory");
    if !queue.is_dir() && !quiet {
        found.warnings.push(format!(
            "queue_directory {} does not exist yet (created at start)",
            queue.display()
        ));
    }
    for w in &found.warnings {
        eprintln!("postern: warning: {w}");
    }
    if found.errors.is_empty() {
        Ok(())
    } else {
        Err(fail(
            found
                .errors
                .iter()
                .map(|p| format!("postern: fatal: {p}"))
                .collect::<Vec<_>>()
                .join("\n"),
        ))
    }
}

/// `postern config`: prints parameters like postconf.
fn config(config_dir: &Path, args: &[String]) -> Result<(), Failure> {
    let mut only_set = false;
    let mut defaults = false;
    let mut expand = false;
    let mut names = Vec::new();
    for a in args {
        match a.as_str() {
            "-n" => only_set = true,
            "-d" => defaults = true,
            "-x" => expand = true,
            s if s.starts_with('-') => {
                return Err(usage(format!("postern: config: unknown option {s}")));
            }
            s => names.push(s.to_string()),
        }
    }
    let main = if defaults {
        let mut m = MainCf::defaults();
        m.set("config_directory", &config_dir.display().to_string());
        m
    } else {
        MainCf::load(config_dir).map_err(|e| fail(format!("postern: fatal: {e}")))?
    };
    if !defaults {
        for w in main.warnings() {
            eprintln!("postern: warning: {w}");
        }
    }
    let all = main.effective(only_set && !defaults, expand);
    if names.is_empty() {
        for (k, v) in all {
            println!("{k} = {v}");
        }
        return Ok(());
    }
    let mut bad = false;
    for n in &names {
        match all.iter().find(|(k, _)| k == n) {
            Some((k, v)) => println!("{k} = {v}"),
            None => {
                eprintln!("postern: warning: {n}: unknown parameter");
                bad = true;
            }
        }
    }
    if bad {
        Err(Failure {
            message: String::new(),
            status: 1,
        })
    } else {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn main_cf(dir: &Path, text: &str) -> MainCf {
        std::fs::write(dir.join("main.cf"), text).unwrap();
        MainCf::load(dir).unwrap()
    }

    fn master_cf(dir: &Path, text: &str) -> MasterCf {
        std::fs::write(dir.join("master.cf"), text).unwrap();
        MasterCf::load(dir).unwrap()
    }

    #[test]
    fn fully_qualified_names() {
        for good in ["mail.example.com", "mx-1.example.org.", "a.b"] {
            assert!(is_fqdn(good), "{good}");
        }
        for bad in [
            "mail",
            "",
            "mail.",
            "box.localdomain",
            "mail..example.com",
            "-x.example.com",
            "10.0.0.1",
            "mail_1.example.com",
        ] {
            assert!(!is_fqdn(bad), "{bad}");
        }
    }

    #[test]
    fn hostname_warning_names_the_value_and_the_file() {
        let d = tempfile::tempdir().unwrap();
        let m = main_cf(d.path(), "myhostname = mailhost\n");
        let w = hostname_warning(&m).unwrap();
        assert!(
            w.starts_with("myhostname = mailhost is not a fully qualified domain name"),
            "{w}"
        );
        assert!(w.ends_with(&format!("fix it in {}", d.path().join("main.cf").display())));
        let m = main_cf(d.path(), "myhostname = mail.example.com\n");
        assert_eq!(hostname_warning(&m), None);
    }

    #[test]
    fn log_warning_only_without_maillog_file_and_syslog() {
        let d = tempfile::tempdir().unwrap();
        let data = d.path().join("data");
        let m = main_cf(
            d.path(),
            &format!(
                "data_directory = {}\nprivilege_separation = no\n",
                data.display()
            ),
        );
        let socket = d.path().join("log");
        let w = log_warning(&m, &socket).unwrap();
        assert_eq!(
            w,
            format!(
                "maillog_file is empty and no syslog socket at {}: `postern start` will log to \
                 {}, `master -f` to its standard error; set maillog_file in {} to choose",
                socket.display(),
                data.join("postern.log").display(),
                d.path().join("main.cf").display()
            )
        );
        let _syslogd = std::os::unix::net::UnixDatagram::bind(&socket).unwrap();
        assert_eq!(log_warning(&m, &socket), None);
        let m = main_cf(d.path(), "maillog_file = /var/log/mail.log\n");
        assert_eq!(log_warning(&m, &d.path().join("nothing")), None);
    }

    #[test]
    fn port_problems_name_line_service_and_address() {
        let d = tempfile::tempdir().unwrap();
        let busy = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = busy.local_addr().unwrap().port();
        let m = main_cf(d.path(), "");
        let mcf = master_cf(
            d.path(),
            &format!("# x\n127.0.0.1:{port} inet n - n - - smtpd\nq unix - - n - 1 qmgr\n"),
        );
        assert_eq!(
            port_problems(&m, &mcf),
            vec![format!(
                "{}:2: service 127.0.0.1:{port}/inet: cannot bind 127.0.0.1:{port}: \
                 Address already in use: another program is listening there \
                 (`ss -ltnp 'sport = :{port}'` shows which)",
                d.path().join("master.cf").display()
            )]
        );
        drop(busy);
        assert!(port_problems(&m, &mcf).is_empty());
    }

    #[test]
    fn tls_files_that_cannot_be_read_are_errors() {
        let d = tempfile::tempdir().unwrap();
        let cert = d.path().join("cert.pem");
        let m = main_cf(
            d.path(),
            &format!("smtpd_tls_cert_file = {}\n", cert.display()),
        );
        let mcf = master_cf(
            d.path(),
            &format!(
                "smtp inet n - n - - smtpd\n\
                 x inet n - n - - smtpd -o smtpd_tls_key_file={k}\n\
                 y inet n - n - - smtpd -o smtpd_tls_security_level=none\n\
                 z inet n - n - - smtpd -o smtpd_tls_cert_file= -o smtpd_tls_wrappermode=yes\n\
                 c unix - - n - - cleanup\n",
                k = d.path().display()
            ),
        );
        let mut found = Findings::default();
        tls_findings(&m, &mcf, true, &mut found);
        let mc = d.path().join("master.cf");
        assert_eq!(
            found.errors,
            vec![
                format!(
                    "{}:1: service smtp/inet: smtpd_tls_cert_file {}: cannot read: \
                     No such file or directory (`postern tls selfsigned` makes a certificate and key)",
                    mc.display(),
                    cert.display()
                ),
                format!(
                    "{}:2: service x/inet: smtpd_tls_key_file {}: cannot read: Is a directory",
                    mc.display(),
                    d.path().display()
                ),
                format!(
                    "{}:4: service z/inet: smtpd_tls_wrappermode = yes needs a certificate, but no \
                     smtpd_tls_cert_file or smtpd_tls_chain_files is set (`postern tls selfsigned` makes one)",
                    mc.display()
                ),
            ]
        );
        std::fs::write(&cert, "pem").unwrap();
        let mut found = Findings::default();
        tls_findings(&m, &mcf, true, &mut found);
        assert_eq!(found.errors.len(), 2, "{:?}", found.errors);
    }
}
