//! The `postern` admin command: the one tool an administrator types.
//!
//! `postern [-c CONFIG_DIR] COMMAND`, like `postfix -c` and `postconf`:
//! start, stop, reload, status, check, config, and demo (a complete
//! instance in one directory, for trying Postern without root).
//!
//! SECURITY: runs as its caller. It reads configuration and signals master
//! through its pid file; it never needs privileges of its own, except
//! `install`, which must run as root (see the `install` module).

pub mod demo;
pub mod install;
pub mod passwd;
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
            postern_master::start(&config_dir).map_err(fail)?;
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
            match postern_master::running_pid(&config_dir).map_err(fail)? {
                Some(pid) => {
                    println!("postern: the mail system is running: PID: {pid}");
                    Ok(())
                }
                None => Err(fail("postern: the mail system is not running")),
            }
        }
        "check" => {
            no_args(command, rest)?;
            check(&config_dir, false)
        }
        "config" => config(&config_dir, rest),
        "install" => install::command(&config_dir, rest),
        "passwd" => passwd::command(&config_dir, rest).map_err(fail),
        "tls" => tls::command(&config_dir, rest),
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

/// Validates main.cf, master.cf and what they point at. Warnings go to
/// stderr; the first error stops with file:line and reason.
pub fn check(config_dir: &Path, quiet: bool) -> Result<(), Failure> {
    let main = MainCf::load(config_dir).map_err(|e| fail(format!("postern: fatal: {e}")))?;
    for w in main.warnings() {
        eprintln!("postern: warning: {w}");
    }
    let master = MasterCf::load(config_dir).map_err(|e| fail(format!("postern: fatal: {e}")))?;
    let daemon_dir = main.path("daemon_directory");
    let mut problems = Vec::new();
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
    let queue = main.path("queue_directory");
    if !queue.is_dir() && !quiet {
        eprintln!(
            "postern: warning: queue_directory {} does not exist yet (created at start)",
            queue.display()
        );
    }
    if problems.is_empty() {
        Ok(())
    } else {
        Err(fail(
            problems
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
