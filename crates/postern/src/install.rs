//! `postern install` and `postern install --check`: make the system match
//! docs/security.md, or report where it does not.
//!
//! What is installed, in this order (each step only when something differs):
//! 1. the groups `postern`, `postern-ipc`, `postdrop` and each user's own
//!    group ([`GROUPS`], [`USERS`]), with `groupadd --system`;
//! 2. the system users of [`USERS`] (no login shell, home `/nonexistent`,
//!    no password) with `useradd --system`; an existing user whose primary or
//!    supplementary groups differ from the table is corrected with `usermod`,
//!    anything else about an existing user is left alone;
//! 3. CONFIG_DIR (0755) with the shipped `main.cf` and `master.cf`, only
//!    where missing: an existing file is never overwritten;
//! 4. `queue_directory` ([`QueueDirs::ROOT_SPEC`]) and every directory of
//!    [`QUEUE_DIRS`], created when missing and chowned/chmodded to the table;
//! 5. `daemon_directory/postdrop`, when present: root:postdrop, mode 2755;
//! 6. smtpd's TLS certificate: when main.cf names `smtpd_tls_cert_file`
//!    (the shipped one: `$config_directory/tls/cert.pem`; not when
//!    `smtpd_tls_chain_files` replaces it) and neither it nor
//!    `smtpd_tls_key_file` exists, a self-signed pair for `myhostname`
//!    ([`crate::tls::generate`]): key root:root 0600, certificate 0644,
//!    missing directories 0755. If only one of the two exists, install stops
//!    with an error naming the missing one;
//! 7. the alias file: when the first `hash:` or `texthash:` table of
//!    `alias_maps` (the shipped main.cf: `/etc/aliases`; a relative name is
//!    under CONFIG_DIR, as newaliases reads it) does not exist, it is created
//!    root:root 0644 with [`ALIASES_TEXT`] (a comment and `postmaster:
//!    root`), as Debian's postfix package does. An existing file (or
//!    symbolic link) is never touched.
//!
//! Every change prints one line (`postern: created user postern-smtpd`); a
//! second run prints nothing. `--check` changes nothing, prints one line per
//! difference and fails (exit 1) when there is any; it works for anyone who
//! can read the configuration and stat the queue.
//!
//! SECURITY: install runs as root and writes where ownership matters, so it
//! never follows a symbolic link when changing a queue directory or the
//! postdrop program: the path is checked with lstat, opened, and the open
//! descriptor is compared (device and inode) with what lstat saw before
//! fchown/fchmod touch it; anything but a directory (or a regular file for
//! postdrop) is refused, not "fixed". The queue root's parent is not
//! changed. Account tools (`getent`, `id`, `groupadd`, `useradd`, `usermod`)
//! are run by absolute path with an empty environment except PATH and
//! LC_ALL=C, and the names given to them are this module's constants only.
//! Config files are created with O_EXCL, so an existing file or a planted
//! symbolic link is never written through. The certificate and key are
//! written to a temporary file (O_EXCL|O_NOFOLLOW, created with its final
//! mode, so the key is never readable by others, not even briefly) and put in
//! place with link(2), which refuses to replace anything: an existing
//! certificate, key or symbolic link there is never overwritten. The alias
//! file is written the same way.

use std::fmt;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::Command;

use postern_config::MainCf;
use postern_queue::{DirSpec, QUEUE_DIRS, QueueDirs};

use crate::Failure;

/// The shipped main.cf, written to CONFIG_DIR when it has none.
pub const SHIPPED_MAIN_CF: &str = include_str!("../../../main.cf");

/// The shipped master.cf, written to CONFIG_DIR when it has none.
pub const SHIPPED_MASTER_CF: &str = include_str!("../../../master.cf");

/// The groups docs/security.md names that are not simply a user's own group:
/// the queue group, the internal-socket group and the local-submission group.
pub const GROUPS: &[&str] = &["postern", "postern-ipc", "postdrop"];

/// One system user of docs/security.md "Users and groups".
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct UserSpec {
    /// Login name.
    pub name: &'static str,
    /// Primary group (equal to `name` for users with a group of their own).
    pub primary_group: &'static str,
    /// Exactly the supplementary groups the user must have.
    pub extra_groups: &'static [&'static str],
    /// The program it runs, for the GECOS field ("Postern smtpd").
    pub program: &'static str,
}

/// Every system user Postern needs, as docs/security.md lists them (a unit
/// test parses that table and compares, so they cannot drift apart).
pub static USERS: &[UserSpec] = &[
    UserSpec {
        name: "postern-smtpd",
        primary_group: "postern-smtpd",
        extra_groups: &["postern-ipc"],
        program: "smtpd",
    },
    UserSpec {
        name: "postern-cleanup",
        primary_group: "postern",
        extra_groups: &["postern-ipc"],
        program: "cleanup",
    },
    UserSpec {
        name: "postern-qmgr",
        primary_group: "postern",
        extra_groups: &["postern-ipc"],
        program: "qmgr",
    },
    UserSpec {
        name: "postern-pickup",
        primary_group: "postern",
        extra_groups: &["postern-ipc", "postdrop"],
        program: "pickup",
    },
    UserSpec {
        name: "postern-smtp",
        primary_group: "postern-smtp",
        extra_groups: &["postern-ipc"],
        program: "smtp client",
    },
    UserSpec {
        name: "postern-auth",
        primary_group: "postern-auth",
        extra_groups: &["postern-ipc"],
        program: "auth",
    },
    UserSpec {
        name: "postern-pop3d",
        primary_group: "postern-pop3d",
        extra_groups: &["postern-ipc"],
        program: "pop3d",
    },
    UserSpec {
        name: "postern-imapd",
        primary_group: "postern-imapd",
        extra_groups: &["postern-ipc"],
        program: "imapd",
    },
];

/// What install writes into a missing alias file: mail to postmaster (which
/// RFC 5321 requires to work) goes to root, whose mail the administrator
/// forwards to a person.
pub const ALIASES_TEXT: &str = "\
# Aliases for local delivery (aliases(5): \"name: target, target...\"; a
# target is a user, an address, |command, /file or :include:/path).
# Created by `postern install`; check it with `newaliases` after editing.
# Mail to postmaster must reach a person: add a line \"root: you\" (or an
# address) so that root's mail is read.
postmaster: root
";

/// Home directory of every Postern system user (it must not exist).
pub const HOME: &str = "/nonexistent";

/// Mode of the postdrop program: setgid postdrop, so any local user can
/// write into maildrop/ through it and through nothing else.
pub const POSTDROP_MODE: u32 = 0o2755;

/// Every group to create: [`GROUPS`] then each user's own group, in order,
/// without duplicates.
pub fn all_groups() -> Vec<&'static str> {
    let mut out: Vec<&'static str> = GROUPS.to_vec();
    for u in USERS {
        if !out.contains(&u.primary_group) {
            out.push(u.primary_group);
        }
    }
    out
}

/// Why install or check could not go on (a failed tool, an unreadable
/// main.cf, something in the way that must not be changed automatically).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InstallError {
    /// The complete message, without the "postern: " prefix.
    pub message: String,
}

impl InstallError {
    fn new(message: impl Into<String>) -> Self {
        InstallError {
            message: message.into(),
        }
    }
}

impl fmt::Display for InstallError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for InstallError {}

/// What kind of file system object a [`Target`] must be.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TargetKind {
    /// A directory (created by install when missing).
    Dir,
    /// An existing regular file (never created by install).
    File,
}

/// One path whose owner, group and mode install enforces.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Target {
    /// How it is named in messages ("incoming", or a full path).
    pub what: String,
    /// Where it is.
    pub path: PathBuf,
    /// Directory or regular file.
    pub kind: TargetKind,
    /// True only for the queue root, which the administrator may have made a
    /// symbolic link (to a bigger disk); everything below it must be real.
    pub follow_link: bool,
    /// Owning user name.
    pub user: &'static str,
    /// Owning group name.
    pub group: &'static str,
    /// Exact permission bits (with setgid/sticky).
    pub mode: u32,
}

/// One difference between the system and docs/security.md.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Drift {
    /// A group does not exist.
    MissingGroup(&'static str),
    /// A user does not exist.
    MissingUser(&'static str),
    /// A user exists with other groups than the table says.
    UserGroups {
        /// The user.
        user: &'static UserSpec,
        /// Its primary group now (a name, or the number when unnamed).
        primary: String,
        /// Its supplementary groups now, sorted.
        extra: Vec<String>,
    },
    /// A config file (or the config directory) is missing.
    MissingConfig(PathBuf),
    /// A directory or file of the matrix is missing.
    Missing(Target),
    /// Something else is where a directory (or regular file) must be.
    WrongType(Target),
    /// Wrong owner.
    Owner {
        /// The path concerned.
        target: Target,
        /// The owner now.
        have: String,
    },
    /// Wrong group.
    Group {
        /// The path concerned.
        target: Target,
        /// The group now.
        have: String,
    },
    /// Wrong permission bits.
    Mode {
        /// The path concerned.
        target: Target,
        /// The bits now (with setgid/sticky).
        have: u32,
    },
    /// Neither file of smtpd's certificate exists: install makes a
    /// self-signed pair.
    MissingCertificate(CertPlan),
    /// The alias file of alias_maps does not exist: install creates it with
    /// [`ALIASES_TEXT`].
    MissingAliases(PathBuf),
    /// One file of smtpd's certificate pair exists and the other does not:
    /// install refuses (it never replaces a certificate or a key).
    HalfCertificate {
        /// The parameter that names the missing file.
        param: &'static str,
        /// The missing file.
        missing: PathBuf,
        /// The parameter that names the file that exists.
        other_param: &'static str,
        /// The file that exists.
        present: PathBuf,
    },
}

/// The self-signed certificate install would make: where, and for whom.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CertPlan {
    /// `smtpd_tls_cert_file`, expanded.
    pub cert: PathBuf,
    /// `smtpd_tls_key_file`, expanded (equal to `cert` for a single file
    /// holding both, Postfix's default).
    pub key: PathBuf,
    /// The name the certificate is for (`myhostname`).
    pub hostname: String,
}

impl fmt::Display for Drift {
    /// The `--check` line, without the "postern: " prefix.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Drift::MissingGroup(g) => write!(f, "missing group {g}"),
            Drift::MissingUser(u) => write!(f, "missing user {u}"),
            Drift::UserGroups {
                user,
                primary,
                extra,
            } => write!(
                f,
                "user {}: groups {} + {}, want {} + {}",
                user.name,
                primary,
                list_or_none(extra),
                user.primary_group,
                list_or_none(user.extra_groups)
            ),
            Drift::MissingConfig(p) => write!(f, "missing {}", p.display()),
            Drift::Missing(t) => write!(f, "{}: missing", t.what),
            Drift::WrongType(t) => write!(
                f,
                "{}: {} is not a {}",
                t.what,
                t.path.display(),
                kind_name(t.kind)
            ),
            Drift::Owner { target, have } => {
                write!(f, "{}: owner {have}, want {}", target.what, target.user)
            }
            Drift::Group { target, have } => {
                write!(f, "{}: group {have}, want {}", target.what, target.group)
            }
            Drift::Mode { target, have } => {
                write!(
                    f,
                    "{}: mode {have:04o}, want {:04o}",
                    target.what, target.mode
                )
            }
            Drift::MissingAliases(p) => {
                write!(f, "missing alias file {} (alias_maps)", p.display())
            }
            Drift::MissingCertificate(plan) if plan.cert == plan.key => write!(
                f,
                "missing TLS certificate and key {} (smtpd_tls_cert_file)",
                plan.cert.display()
            ),
            Drift::MissingCertificate(plan) => write!(
                f,
                "missing TLS certificate {} and key {}",
                plan.cert.display(),
                plan.key.display()
            ),
            Drift::HalfCertificate {
                param,
                missing,
                other_param,
                present,
            } => write!(
                f,
                "{param} {} is missing but {other_param} {} exists",
                missing.display(),
                present.display()
            ),
        }
    }
}

impl Drift {
    /// The line install prints after fixing this drift.
    pub fn fixed_message(&self) -> String {
        match self {
            Drift::MissingGroup(g) => format!("created group {g}"),
            Drift::MissingUser(u) => format!("created user {u}"),
            Drift::UserGroups {
                user,
                primary,
                extra,
            } => format!(
                "user {}: groups set to {} + {} (were {} + {})",
                user.name,
                user.primary_group,
                list_or_none(user.extra_groups),
                primary,
                list_or_none(extra)
            ),
            Drift::MissingConfig(p) => format!("created {}", p.display()),
            Drift::Missing(t) => format!("created {}", t.what),
            Drift::WrongType(t) => self_describing_refusal(t),
            Drift::Owner { target, have } => {
                format!("{}: owner set to {} (was {have})", target.what, target.user)
            }
            Drift::Group { target, have } => {
                format!(
                    "{}: group set to {} (was {have})",
                    target.what, target.group
                )
            }
            Drift::Mode { target, have } => format!(
                "{}: mode set to {:04o} (was {have:04o})",
                target.what, target.mode
            ),
            Drift::MissingAliases(p) => format!("created {} (postmaster: root)", p.display()),
            Drift::MissingCertificate(plan) => format!(
                "created self-signed certificate {} for {}; replace it with a real one",
                plan.cert.display(),
                plan.hostname
            ),
            Drift::HalfCertificate { present, .. } => format!(
                "{self}; put the matching file there (or move {} away and run \
                 postern install again for a new self-signed pair)",
                present.display()
            ),
        }
    }
}

fn self_describing_refusal(t: &Target) -> String {
    format!(
        "{}: {} is not a {}; move it away and run postern install again",
        t.what,
        t.path.display(),
        kind_name(t.kind)
    )
}

fn kind_name(k: TargetKind) -> &'static str {
    match k {
        TargetKind::Dir => "directory",
        TargetKind::File => "regular file",
    }
}

fn list_or_none<S: AsRef<str>>(items: &[S]) -> String {
    if items.is_empty() {
        "none".to_owned()
    } else {
        items
            .iter()
            .map(|s| s.as_ref())
            .collect::<Vec<_>>()
            .join(",")
    }
}

/// `postern [-c DIR] install [--check]`: the command-line entry point.
pub fn command(config_dir: &Path, args: &[String]) -> Result<(), Failure> {
    let mut check_only = false;
    for a in args {
        match a.as_str() {
            "--check" => check_only = true,
            other => {
                return Err(Failure {
                    message: format!(
                        "postern: install: unknown argument {other}\n{}",
                        crate::USAGE
                    ),
                    status: 2,
                });
            }
        }
    }
    let err = |e: InstallError| Failure {
        message: format!("postern: fatal: {e}"),
        status: 1,
    };
    if check_only {
        let drifts = check(config_dir).map_err(err)?;
        for d in &drifts {
            println!("postern: {d}");
        }
        if drifts.is_empty() {
            return Ok(());
        }
        return Err(Failure {
            message: format!(
                "postern: {} difference(s) from docs/security.md; run `postern install` as root",
                drifts.len()
            ),
            status: 1,
        });
    }
    if effective_uid().map_err(err)? != 0 {
        return Err(Failure {
            message:
                "postern: fatal: install must run as root (`postern install --check` only looks)"
                    .to_owned(),
            status: 1,
        });
    }
    install(config_dir, &mut |line| println!("postern: {line}")).map_err(err)
}

/// Lists every difference between the system and docs/security.md without
/// changing anything. An unreadable or invalid main.cf is an error; a
/// missing one is a difference (and the shipped main.cf that install would
/// write locates the queue and the certificate).
pub fn check(config_dir: &Path) -> Result<Vec<Drift>, InstallError> {
    let mut drifts = survey_accounts()?;
    let config = survey_config(config_dir);
    let main = if config
        .iter()
        .any(|d| matches!(d, Drift::MissingConfig(p) if p.ends_with("main.cf")))
    {
        MainCf::parse(SHIPPED_MAIN_CF, &config_dir.join("main.cf"))
            .map_err(|e| InstallError::new(e.to_string()))?
    } else {
        load_main(config_dir)?
    };
    drifts.extend(config);
    for t in targets(&main)? {
        drifts.extend(survey_target(&t)?);
    }
    drifts.extend(survey_aliases(&main)?);
    drifts.extend(survey_certificate(&main)?);
    Ok(drifts)
}

/// Makes the system match docs/security.md (root only); calls `report` with
/// one line per change, in the order made. Idempotent: a second run reports
/// nothing. Stops at the first change it cannot make.
pub fn install(config_dir: &Path, report: &mut dyn FnMut(&str)) -> Result<(), InstallError> {
    // Accounts first: the directories' owners must exist before chown.
    // Concurrent installs would make useradd fail on /etc/passwd's lock.
    let _lock = account_lock();
    for d in survey_accounts()? {
        apply_account(&d)?;
        report(&d.fixed_message());
    }
    for d in survey_config(config_dir) {
        if let Drift::MissingConfig(p) = &d {
            create_config(config_dir, p)?;
            report(&d.fixed_message());
        }
    }
    let main = load_main(config_dir)?;
    for t in targets(&main)? {
        let drifts = survey_target(&t)?;
        if drifts.is_empty() {
            continue;
        }
        if let Some(d) = drifts.iter().find(|d| matches!(d, Drift::WrongType(_))) {
            return Err(InstallError::new(d.fixed_message()));
        }
        apply_target(&t)?;
        if drifts.iter().any(|d| matches!(d, Drift::Missing(_))) {
            report(&Drift::Missing(t).fixed_message());
        } else {
            for d in &drifts {
                report(&d.fixed_message());
            }
        }
    }
    for d in survey_aliases(&main)? {
        if let Drift::MissingAliases(p) = &d {
            create_aliases(p, (0, 0))?;
            report(&d.fixed_message());
        }
    }
    // Last, so that a half certificate pair (an error) leaves everything
    // else installed.
    for d in survey_certificate(&main)? {
        match &d {
            Drift::MissingCertificate(plan) => {
                create_certificate(plan, (0, 0))?;
                report(&d.fixed_message());
            }
            _ => return Err(InstallError::new(d.fixed_message())),
        }
    }
    Ok(())
}

fn load_main(config_dir: &Path) -> Result<MainCf, InstallError> {
    MainCf::load(config_dir).map_err(|e| InstallError::new(e.to_string()))
}

/// The paths whose ownership install enforces, for this main.cf: the queue
/// root, each [`QUEUE_DIRS`] entry, and the postdrop program if present.
pub fn targets(main: &MainCf) -> Result<Vec<Target>, InstallError> {
    let root = main.path("queue_directory");
    if !root.is_absolute() || root == Path::new("/") {
        return Err(InstallError::new(format!(
            "queue_directory must be an absolute path other than /: {}",
            root.display()
        )));
    }
    let dir = |what: String, path: PathBuf, spec: &DirSpec, follow_link: bool| Target {
        what,
        path,
        kind: TargetKind::Dir,
        follow_link,
        user: spec.owner.user,
        group: spec.owner.group,
        mode: spec.mode,
    };
    let mut out = vec![dir(
        root.display().to_string(),
        root.clone(),
        &QueueDirs::ROOT_SPEC,
        true,
    )];
    for spec in QUEUE_DIRS {
        out.push(dir(spec.name.to_owned(), root.join(spec.name), spec, false));
    }
    let postdrop = main.path("daemon_directory").join("postdrop");
    if fs::symlink_metadata(&postdrop).is_ok() {
        out.push(Target {
            what: postdrop.display().to_string(),
            path: postdrop,
            kind: TargetKind::File,
            follow_link: false,
            user: "root",
            group: "postdrop",
            mode: POSTDROP_MODE,
        });
    }
    // The users file holds password hashes: only the auth service reads it
    // (docs/auth.md); local and `postern` read it as root.
    let users_file = main.str("users_file");
    if !users_file.is_empty() && fs::symlink_metadata(&users_file).is_ok() {
        out.push(Target {
            what: users_file.clone(),
            path: PathBuf::from(users_file),
            kind: TargetKind::File,
            follow_link: false,
            user: "postern-auth",
            group: "root",
            mode: 0o600,
        });
    }
    Ok(out)
}

// ---------------------------------------------------------------------------
// Accounts

/// A passwd entry: what install needs of it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Account {
    /// Login name.
    pub name: String,
    /// User ID.
    pub uid: u32,
    /// Primary group ID.
    pub gid: u32,
}

/// Looks a user up (by name or decimal uid) in the system's databases.
pub fn lookup_user(key: &str) -> Result<Option<Account>, InstallError> {
    let Some(f) = getent("passwd", key)? else {
        return Ok(None);
    };
    if f.len() < 7 {
        return Err(InstallError::new(format!(
            "getent passwd {key}: malformed entry"
        )));
    }
    let (Ok(uid), Ok(gid)) = (f[2].parse(), f[3].parse()) else {
        return Err(InstallError::new(format!(
            "getent passwd {key}: malformed ids"
        )));
    };
    Ok(Some(Account {
        name: f[0].clone(),
        uid,
        gid,
    }))
}

/// Looks a group up (by name or decimal gid): (name, gid).
pub fn lookup_group(key: &str) -> Result<Option<(String, u32)>, InstallError> {
    let Some(f) = getent("group", key)? else {
        return Ok(None);
    };
    let Some(gid) = f.get(2).and_then(|g| g.parse().ok()) else {
        return Err(InstallError::new(format!(
            "getent group {key}: malformed entry"
        )));
    };
    Ok(Some((f[0].clone(), gid)))
}

fn user_name(uid: u32) -> Result<String, InstallError> {
    Ok(lookup_user(&uid.to_string())?
        .map(|a| a.name)
        .unwrap_or_else(|| uid.to_string()))
}

fn group_name(gid: u32) -> Result<String, InstallError> {
    Ok(lookup_group(&gid.to_string())?
        .map(|(n, _)| n)
        .unwrap_or_else(|| gid.to_string()))
}

/// The user's supplementary groups (names, sorted), as initgroups would
/// set them, minus the primary group.
fn supplementary_groups(user: &str, primary: &str) -> Result<Vec<String>, InstallError> {
    let out = run_tool("id", &["-G", "-n", user])?;
    let mut groups: Vec<String> = out
        .split_whitespace()
        .filter(|g| *g != primary)
        .map(str::to_owned)
        .collect();
    groups.sort();
    groups.dedup();
    Ok(groups)
}

fn survey_accounts() -> Result<Vec<Drift>, InstallError> {
    let mut drifts = Vec::new();
    for g in all_groups() {
        if lookup_group(g)?.is_none() {
            drifts.push(Drift::MissingGroup(g));
        }
    }
    for u in USERS {
        let Some(acct) = lookup_user(u.name)? else {
            drifts.push(Drift::MissingUser(u.name));
            continue;
        };
        let primary = group_name(acct.gid)?;
        let extra = supplementary_groups(u.name, &primary)?;
        let mut want: Vec<&str> = u.extra_groups.to_vec();
        want.sort_unstable();
        if primary != u.primary_group || extra != want {
            drifts.push(Drift::UserGroups {
                user: u,
                primary,
                extra,
            });
        }
    }
    Ok(drifts)
}

fn nologin_shell() -> &'static str {
    ["/usr/sbin/nologin", "/sbin/nologin", "/bin/false"]
        .into_iter()
        .find(|p| Path::new(p).is_file())
        .unwrap_or("/usr/sbin/nologin")
}

fn apply_account(d: &Drift) -> Result<(), InstallError> {
    match d {
        Drift::MissingGroup(g) => run_tool("groupadd", &["--system", g]).map(drop),
        Drift::MissingUser(name) => {
            let Some(u) = USERS.iter().find(|u| u.name == *name) else {
                return Err(InstallError::new(format!("{name}: not a Postern user")));
            };
            let gecos = format!("Postern {}", u.program);
            let extra = u.extra_groups.join(",");
            run_tool(
                "useradd",
                &[
                    "--system",
                    "--no-create-home",
                    "--home-dir",
                    HOME,
                    "--shell",
                    nologin_shell(),
                    "--gid",
                    u.primary_group,
                    "--no-user-group",
                    "--groups",
                    &extra,
                    "--comment",
                    &gecos,
                    u.name,
                ],
            )
            .map(drop)
        }
        Drift::UserGroups { user, .. } => {
            let extra = user.extra_groups.join(",");
            run_tool(
                "usermod",
                &["--gid", user.primary_group, "--groups", &extra, user.name],
            )
            .map(drop)
        }
        other => Err(InstallError::new(format!("not an account change: {other}"))),
    }
}

/// Runs `getent DB KEY`: the entry's fields, or None when there is none.
fn getent(db: &str, key: &str) -> Result<Option<Vec<String>>, InstallError> {
    let out = tool_command("getent")?
        .args([db, key])
        .output()
        .map_err(|e| InstallError::new(format!("getent {db} {key}: {e}")))?;
    match out.status.code() {
        Some(0) => {}
        // 2: no such key.
        Some(2) => return Ok(None),
        _ => {
            return Err(InstallError::new(format!(
                "getent {db} {key} failed: {}",
                String::from_utf8_lossy(&out.stderr).trim()
            )));
        }
    }
    let text = String::from_utf8_lossy(&out.stdout);
    let Some(line) = text.lines().next() else {
        return Ok(None);
    };
    Ok(Some(line.split(':').map(str::to_owned).collect()))
}

/// Directories the account tools are looked up in, in order.
const TOOL_DIRS: &[&str] = &["/usr/sbin", "/usr/bin", "/sbin", "/bin"];

fn tool_command(name: &str) -> Result<Command, InstallError> {
    let Some(path) = TOOL_DIRS
        .iter()
        .map(|d| Path::new(d).join(name))
        .find(|p| p.is_file())
    else {
        return Err(InstallError::new(format!(
            "{name} not found in {} (install the passwd and coreutils packages)",
            TOOL_DIRS.join(":")
        )));
    };
    let mut cmd = Command::new(path);
    cmd.env_clear()
        .env("PATH", "/usr/sbin:/usr/bin:/sbin:/bin")
        .env("LC_ALL", "C");
    Ok(cmd)
}

/// Runs a tool, returns its stdout; a non-zero exit is an error with stderr.
/// Serializes account changes between concurrent `postern install` runs
/// (groupadd/useradd refuse to run while another one holds their lock).
/// Best effort: without a lock file the tools' own locking still protects
/// the account files; only a concurrent run might then fail.
fn account_lock() -> Option<nix::fcntl::Flock<std::fs::File>> {
    use std::os::unix::fs::OpenOptionsExt;
    for dir in ["/run/lock", "/run", "/var/lock"] {
        if !Path::new(dir).is_dir() {
            continue;
        }
        let file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .mode(0o600)
            .custom_flags(libc_o_nofollow())
            .open(Path::new(dir).join("postern-install.lock"))
            .ok()?;
        return nix::fcntl::Flock::lock(file, nix::fcntl::FlockArg::LockExclusive).ok();
    }
    None
}

fn libc_o_nofollow() -> i32 {
    nix::fcntl::OFlag::O_NOFOLLOW.bits()
}

fn run_tool(name: &str, args: &[&str]) -> Result<String, InstallError> {
    let out = tool_command(name)?
        .args(args)
        .output()
        .map_err(|e| InstallError::new(format!("{name}: {e}")))?;
    if !out.status.success() {
        return Err(InstallError::new(format!(
            "{name} {} failed ({}): {}",
            args.join(" "),
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        )));
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// The effective user ID of this process (from /proc, else `id -u`).
fn effective_uid() -> Result<u32, InstallError> {
    if let Ok(status) = fs::read_to_string("/proc/self/status")
        && let Some(euid) = status
            .lines()
            .find_map(|l| l.strip_prefix("Uid:"))
            .and_then(|rest| rest.split_whitespace().nth(1))
            .and_then(|e| e.parse().ok())
    {
        return Ok(euid);
    }
    run_tool("id", &["-u"])?
        .trim()
        .parse()
        .map_err(|_| InstallError::new("id -u: not a number"))
}

// ---------------------------------------------------------------------------
// Configuration files

fn survey_config(config_dir: &Path) -> Vec<Drift> {
    let mut drifts = Vec::new();
    if !config_dir.is_dir() {
        drifts.push(Drift::MissingConfig(config_dir.to_path_buf()));
    }
    for f in ["main.cf", "master.cf"] {
        let p = config_dir.join(f);
        if fs::symlink_metadata(&p).is_err() {
            drifts.push(Drift::MissingConfig(p));
        }
    }
    drifts
}

fn create_config(config_dir: &Path, path: &Path) -> Result<(), InstallError> {
    let io_err = |e: io::Error| InstallError::new(format!("{}: {e}", path.display()));
    if path == config_dir {
        fs::DirBuilder::new()
            .recursive(true)
            .mode(0o755)
            .create(path)
            .map_err(io_err)?;
        return fs::set_permissions(path, fs::Permissions::from_mode(0o755)).map_err(io_err);
    }
    let text = match path.file_name().and_then(|n| n.to_str()) {
        Some("main.cf") => SHIPPED_MAIN_CF,
        Some("master.cf") => SHIPPED_MASTER_CF,
        _ => {
            return Err(InstallError::new(format!(
                "{}: not a config file",
                path.display()
            )));
        }
    };
    // O_EXCL: never overwrite, never write through a symbolic link.
    let mut f = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o644)
        .open(path)
        .map_err(io_err)?;
    f.set_permissions(fs::Permissions::from_mode(0o644))
        .map_err(io_err)?;
    f.write_all(text.as_bytes()).map_err(io_err)?;
    f.sync_all().map_err(io_err)
}

// ---------------------------------------------------------------------------
// The alias file

/// Table types whose source install can create as an aliases(5) text file.
const ALIAS_FILE_TYPES: &[&str] = &["hash", "texthash"];

/// The alias file install creates when missing: the first `hash:` or
/// `texthash:` table of alias_maps (after an optional `proxy:`), relative
/// names under the config directory as newaliases reads them. None when
/// alias_maps has no such table (only `unix:`, `regexp:`, ... or nothing).
pub fn alias_file(main: &MainCf) -> Option<PathBuf> {
    postern_config::split_list(&main.str("alias_maps"))
        .iter()
        .find_map(|spec| {
            let s = spec.trim();
            let s = s.strip_prefix("proxy:").unwrap_or(s);
            let (kind, name) = s.split_once(':')?;
            if !ALIAS_FILE_TYPES.contains(&kind) || name.is_empty() {
                return None;
            }
            let p = Path::new(name);
            Some(if p.is_absolute() {
                p.to_path_buf()
            } else {
                main.config_dir().join(p)
            })
        })
}

/// The alias file drift: [`Drift::MissingAliases`] when [`alias_file`]
/// names a file that is not there (a dangling symbolic link counts as
/// there: it is never replaced).
pub fn survey_aliases(main: &MainCf) -> Result<Vec<Drift>, InstallError> {
    match alias_file(main) {
        Some(p) if !present(&p) => Ok(vec![Drift::MissingAliases(p)]),
        _ => Ok(Vec::new()),
    }
}

/// Creates the alias file with [`ALIASES_TEXT`], mode 0644, owned by
/// `owner`; missing parent directories 0755. Refuses when anything is
/// already there.
pub fn create_aliases(path: &Path, owner: (u32, u32)) -> Result<(), InstallError> {
    let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) else {
        return Err(InstallError::new(format!(
            "{}: not a file path",
            path.display()
        )));
    };
    create_dirs(dir)?;
    write_new_file(path, ALIASES_TEXT.as_bytes(), 0o644, owner)
}

// ---------------------------------------------------------------------------
// smtpd's TLS certificate

/// True when something (even a dangling symbolic link) is at `path`, or when
/// it cannot be told (no permission to look): only "no such file" is absent.
fn present(path: &Path) -> bool {
    !matches!(fs::symlink_metadata(path), Err(e) if e.kind() == io::ErrorKind::NotFound)
}

/// The certificate drift for this main.cf: nothing when no certificate is
/// configured (or `smtpd_tls_chain_files` is used instead) or both files
/// are there; [`Drift::MissingCertificate`] when neither is;
/// [`Drift::HalfCertificate`] when one is. A relative path is an error.
pub fn survey_certificate(main: &MainCf) -> Result<Vec<Drift>, InstallError> {
    if !main.list("smtpd_tls_chain_files").is_empty() {
        return Ok(Vec::new());
    }
    let cert = main.str("smtpd_tls_cert_file").trim().to_owned();
    if cert.is_empty() {
        return Ok(Vec::new());
    }
    let mut key = main.str("smtpd_tls_key_file").trim().to_owned();
    if key.is_empty() {
        key = cert.clone();
    }
    let (cert, key) = (PathBuf::from(cert), PathBuf::from(key));
    let (have_cert, have_key) = (present(&cert), present(&key));
    if have_cert && have_key {
        return Ok(Vec::new());
    }
    for (param, p) in [("smtpd_tls_cert_file", &cert), ("smtpd_tls_key_file", &key)] {
        if !p.is_absolute() {
            return Err(InstallError::new(format!(
                "{param} must be an absolute path: {}",
                p.display()
            )));
        }
    }
    let drift = match (have_cert, have_key) {
        (false, false) => Drift::MissingCertificate(CertPlan {
            cert,
            key,
            hostname: main.str("myhostname"),
        }),
        (true, _) => Drift::HalfCertificate {
            param: "smtpd_tls_key_file",
            missing: key,
            other_param: "smtpd_tls_cert_file",
            present: cert,
        },
        (false, true) => Drift::HalfCertificate {
            param: "smtpd_tls_cert_file",
            missing: cert,
            other_param: "smtpd_tls_key_file",
            present: key,
        },
    };
    Ok(vec![drift])
}

/// Makes the self-signed pair of `plan`, files owned by `owner` (uid, gid):
/// missing directories 0755, key 0600, certificate 0644 (one file 0600,
/// key first, when both paths are the same). Never replaces an existing
/// file; if the certificate cannot be written the new key is removed again,
/// so a failure never leaves half a pair behind.
pub fn create_certificate(plan: &CertPlan, owner: (u32, u32)) -> Result<(), InstallError> {
    let (cert_pem, key_pem) = crate::tls::generate(&plan.hostname, crate::tls::DEFAULT_DAYS)
        .map_err(|e| InstallError::new(e.trim_start_matches("postern: ")))?;
    for p in [&plan.cert, &plan.key] {
        let Some(dir) = p.parent().filter(|d| !d.as_os_str().is_empty()) else {
            return Err(InstallError::new(format!(
                "{}: not a file path",
                p.display()
            )));
        };
        create_dirs(dir)?;
    }
    if plan.cert == plan.key {
        return write_new_file(
            &plan.key,
            format!("{key_pem}{cert_pem}").as_bytes(),
            0o600,
            owner,
        );
    }
    write_new_file(&plan.key, key_pem.as_bytes(), 0o600, owner)?;
    if let Err(e) = write_new_file(&plan.cert, cert_pem.as_bytes(), 0o644, owner) {
        let _ = fs::remove_file(&plan.key);
        return Err(e);
    }
    Ok(())
}

/// `mkdir -p` with mode 0755 (within the umask, as for the config
/// directory); existing directories are left as they are. The directories
/// belong to whoever runs install (root).
fn create_dirs(dir: &Path) -> Result<(), InstallError> {
    fs::DirBuilder::new()
        .recursive(true)
        .mode(0o755)
        .create(dir)
        .map_err(|e| InstallError::new(format!("{}: {e}", dir.display())))
}

/// Writes a new file at `path` with exactly `mode` and `owner`, durably,
/// and refuses (AlreadyExists) if anything is already there.
fn write_new_file(
    path: &Path,
    data: &[u8],
    mode: u32,
    owner: (u32, u32),
) -> Result<(), InstallError> {
    let io_err = |p: &Path, e: io::Error| InstallError::new(format!("{}: {e}", p.display()));
    let (Some(dir), Some(name)) = (path.parent(), path.file_name()) else {
        return Err(InstallError::new(format!(
            "{}: not a file path",
            path.display()
        )));
    };
    let tmp = dir.join(format!(".{}.postern-install", name.to_string_lossy()));
    // A leftover of an interrupted install is ours to remove (unlink never
    // follows a symbolic link).
    match fs::remove_file(&tmp) {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => return Err(io_err(&tmp, e)),
    }
    let written = (|| -> io::Result<()> {
        let mut f = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(mode)
            .custom_flags(libc_o_nofollow())
            .open(&tmp)?;
        std::os::unix::fs::fchown(&f, Some(owner.0), Some(owner.1))?;
        f.set_permissions(fs::Permissions::from_mode(mode))?;
        f.write_all(data)?;
        f.sync_all()
    })();
    let linked = written.and_then(|()| fs::hard_link(&tmp, path));
    let _ = fs::remove_file(&tmp);
    match linked {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
            return Err(InstallError::new(format!(
                "{} exists; not overwritten",
                path.display()
            )));
        }
        Err(e) => return Err(io_err(path, e)),
    }
    postern_queue::sync_dir(dir).map_err(|e| io_err(dir, e))
}

// ---------------------------------------------------------------------------
// Directories and the postdrop program

fn survey_target(t: &Target) -> Result<Vec<Drift>, InstallError> {
    let meta = match lstat_target(t) {
        Ok(m) => m,
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            return Ok(vec![Drift::Missing(t.clone())]);
        }
        Err(e) => return Err(InstallError::new(format!("{}: {e}", t.path.display()))),
    };
    let right_type = match t.kind {
        TargetKind::Dir => meta.is_dir(),
        TargetKind::File => meta.is_file(),
    };
    if !right_type {
        return Ok(vec![Drift::WrongType(t.clone())]);
    }
    let mut drifts = Vec::new();
    let want_uid = lookup_user(t.user)?.map(|a| a.uid);
    if want_uid != Some(meta.uid()) {
        drifts.push(Drift::Owner {
            target: t.clone(),
            have: user_name(meta.uid())?,
        });
    }
    let want_gid = lookup_group(t.group)?.map(|(_, g)| g);
    if want_gid != Some(meta.gid()) {
        drifts.push(Drift::Group {
            target: t.clone(),
            have: group_name(meta.gid())?,
        });
    }
    let have = meta.mode() & 0o7777;
    if have != t.mode {
        drifts.push(Drift::Mode {
            target: t.clone(),
            have,
        });
    }
    Ok(drifts)
}

/// lstat, or stat for a target that may be a symbolic link (the queue root).
fn lstat_target(t: &Target) -> io::Result<fs::Metadata> {
    if t.follow_link {
        fs::metadata(&t.path)
    } else {
        fs::symlink_metadata(&t.path)
    }
}

/// Creates the directory if missing, then sets owner, group and mode through
/// a descriptor that is checked to be the object lstat saw.
fn apply_target(t: &Target) -> Result<(), InstallError> {
    let io_err = |e: io::Error| InstallError::new(format!("{}: {e}", t.path.display()));
    let Some(acct) = lookup_user(t.user)? else {
        return Err(InstallError::new(format!("{}: no user {}", t.what, t.user)));
    };
    let Some((_, gid)) = lookup_group(t.group)? else {
        return Err(InstallError::new(format!(
            "{}: no group {}",
            t.what, t.group
        )));
    };
    if t.kind == TargetKind::Dir {
        // Private until owner and mode are right.
        match fs::DirBuilder::new().mode(0o700).create(&t.path) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                // The queue root's parents: created like mkdir -p would.
                fs::DirBuilder::new()
                    .recursive(true)
                    .mode(0o755)
                    .create(&t.path)
                    .map_err(io_err)?;
            }
            Err(e) => return Err(io_err(e)),
        }
    }
    let before = lstat_target(t).map_err(io_err)?;
    let right_type = match t.kind {
        TargetKind::Dir => before.is_dir(),
        TargetKind::File => before.is_file(),
    };
    if !right_type {
        return Err(InstallError::new(self_describing_refusal(t)));
    }
    let file = File::open(&t.path).map_err(io_err)?;
    let after = file.metadata().map_err(io_err)?;
    if (after.dev(), after.ino()) != (before.dev(), before.ino()) {
        return Err(InstallError::new(format!(
            "{}: {} changed while being installed; not touched",
            t.what,
            t.path.display()
        )));
    }
    // chown first: it may clear setgid bits, which chmod then sets.
    std::os::unix::fs::fchown(&file, Some(acct.uid), Some(gid)).map_err(io_err)?;
    file.set_permissions(fs::Permissions::from_mode(t.mode))
        .map_err(io_err)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// docs/security.md "Users and groups" as (name, kind, primary, extras).
    fn security_md_accounts() -> Vec<(String, bool, Option<String>, Vec<String>)> {
        let doc = include_str!("../../../docs/security.md");
        let section = doc
            .split("\n## ")
            .find(|s| s.starts_with("Users and groups"))
            .expect("section");
        let mut out = Vec::new();
        for line in section.lines().filter(|l| l.starts_with("| `")) {
            let cells: Vec<&str> = line.split('|').map(str::trim).collect();
            let names: Vec<String> = cells[1]
                .split(',')
                .map(|n| n.trim().trim_matches('`').to_owned())
                .collect();
            let kind = cells[2];
            let ticked: Vec<String> = kind
                .split('`')
                .skip(1)
                .step_by(2)
                .map(str::to_owned)
                .collect();
            for n in names {
                if kind == "group" {
                    out.push((n, false, None, vec![]));
                } else if kind.contains("own group") {
                    out.push((n.clone(), true, Some(n), ticked.clone()));
                } else {
                    out.push((n, true, ticked.first().cloned(), ticked[1..].to_vec()));
                }
            }
        }
        out
    }

    #[test]
    fn users_and_groups_match_docs_security_md() {
        let doc = security_md_accounts();
        let doc_groups: Vec<&str> = doc.iter().filter(|r| !r.1).map(|r| r.0.as_str()).collect();
        assert_eq!(doc_groups, GROUPS);
        let doc_users: Vec<(String, String, Vec<String>)> = doc
            .iter()
            .filter(|r| r.1)
            .map(|r| (r.0.clone(), r.2.clone().expect("primary"), r.3.clone()))
            .collect();
        let ours: Vec<(String, String, Vec<String>)> = USERS
            .iter()
            .map(|u| {
                (
                    u.name.to_owned(),
                    u.primary_group.to_owned(),
                    u.extra_groups.iter().map(|g| g.to_string()).collect(),
                )
            })
            .collect();
        assert_eq!(ours, doc_users);
        assert_eq!(USERS.len(), 8);
    }

    #[test]
    fn all_groups_lists_shared_then_own_groups_once() {
        let g = all_groups();
        assert_eq!(&g[..3], GROUPS);
        for own in [
            "postern-smtpd",
            "postern-smtp",
            "postern-auth",
            "postern-pop3d",
            "postern-imapd",
        ] {
            assert_eq!(g.iter().filter(|x| **x == own).count(), 1, "{own}");
        }
        assert_eq!(g.iter().filter(|x| **x == "postern").count(), 1);
        assert_eq!(g.len(), 8);
    }

    #[test]
    fn drift_lines_read_like_the_docs() {
        let t = Target {
            what: "incoming".into(),
            path: "/q/incoming".into(),
            kind: TargetKind::Dir,
            follow_link: false,
            user: "postern-qmgr",
            group: "postern",
            mode: 0o730,
        };
        let owner = Drift::Owner {
            target: t.clone(),
            have: "root".into(),
        };
        assert_eq!(owner.to_string(), "incoming: owner root, want postern-qmgr");
        assert_eq!(
            owner.fixed_message(),
            "incoming: owner set to postern-qmgr (was root)"
        );
        let mode = Drift::Mode {
            target: t.clone(),
            have: 0o700,
        };
        assert_eq!(mode.to_string(), "incoming: mode 0700, want 0730");
        assert_eq!(
            Drift::MissingUser("postern-smtpd").to_string(),
            "missing user postern-smtpd"
        );
        assert_eq!(
            Drift::MissingUser("postern-smtpd").fixed_message(),
            "created user postern-smtpd"
        );
        let ug = Drift::UserGroups {
            user: &USERS[3],
            primary: "postern".into(),
            extra: vec![],
        };
        assert_eq!(
            ug.to_string(),
            "user postern-pickup: groups postern + none, want postern + postern-ipc,postdrop"
        );
        assert!(
            Drift::WrongType(t)
                .fixed_message()
                .contains("is not a directory")
        );
    }

    #[test]
    fn targets_refuse_relative_or_root_queue_directory() {
        for bad in ["relative/queue", "/"] {
            let mut m = MainCf::defaults();
            m.set("queue_directory", bad);
            let err = targets(&m).unwrap_err();
            assert!(err.message.contains("absolute path"), "{err}");
        }
        let mut m = MainCf::defaults();
        m.set("queue_directory", "/var/spool/postern");
        m.set("daemon_directory", "/nonexistent/postern-libexec");
        let t = targets(&m).expect("targets");
        assert_eq!(t.len(), QUEUE_DIRS.len() + 1, "no postdrop when absent");
        assert_eq!(t[0].path, Path::new("/var/spool/postern"));
        assert_eq!(t[0].mode, 0o755);
        let inc = t.iter().find(|t| t.what == "incoming").expect("incoming");
        assert_eq!(
            (inc.user, inc.group, inc.mode),
            ("postern-qmgr", "postern", 0o730)
        );
    }

    #[test]
    fn config_files_are_created_once_and_never_overwritten() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let dir = tmp.path().join("etc");
        let drifts = survey_config(&dir);
        assert_eq!(drifts.len(), 3);
        for d in &drifts {
            let Drift::MissingConfig(p) = d else {
                panic!("unexpected {d:?}");
            };
            create_config(&dir, p).expect("create");
        }
        assert!(survey_config(&dir).is_empty());
        assert_eq!(
            fs::read_to_string(dir.join("main.cf")).expect("read"),
            SHIPPED_MAIN_CF
        );
        let meta = fs::metadata(&dir).expect("stat");
        assert_eq!(meta.mode() & 0o7777, 0o755);
        let meta = fs::metadata(dir.join("master.cf")).expect("stat");
        assert_eq!(meta.mode() & 0o7777, 0o644);
        fs::write(dir.join("main.cf"), "# mine\n").expect("write");
        let err = create_config(&dir, &dir.join("main.cf")).unwrap_err();
        assert!(err.message.contains("exists"), "{err}");
        assert_eq!(
            fs::read_to_string(dir.join("main.cf")).expect("read"),
            "# mine\n"
        );
    }

    /// A main.cf in a temporary config directory, parsed as install loads it.
    fn main_with(dir: &Path, text: &str) -> MainCf {
        MainCf::parse(text, &dir.join("main.cf")).expect("main.cf parses")
    }

    const SHIPPED_TLS: &str = "myhostname = mx.example.test\n\
        smtpd_tls_cert_file = $config_directory/tls/cert.pem\n\
        smtpd_tls_key_file = $config_directory/tls/key.pem\n";

    fn me() -> (u32, u32) {
        (
            nix::unistd::geteuid().as_raw(),
            nix::unistd::getegid().as_raw(),
        )
    }

    fn mode_of(p: &Path) -> u32 {
        fs::symlink_metadata(p).expect("stat").mode() & 0o7777
    }

    #[test]
    fn no_certificate_configured_means_nothing_to_do() {
        let tmp = tempfile::tempdir().expect("tempdir");
        for text in [
            "",
            "smtpd_tls_cert_file =\n",
            // chain files replace the pair: install does not make those.
            "smtpd_tls_chain_files = /nonexistent/chain.pem\n\
             smtpd_tls_cert_file = /nonexistent/cert.pem\n",
        ] {
            let main = main_with(tmp.path(), text);
            assert_eq!(survey_certificate(&main).expect("survey"), vec![], "{text}");
        }
    }

    #[test]
    fn certificate_drift_names_what_is_missing() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let etc = tmp.path();
        let main = main_with(etc, SHIPPED_TLS);
        let cert = etc.join("tls/cert.pem");
        let key = etc.join("tls/key.pem");
        let plan = CertPlan {
            cert: cert.clone(),
            key: key.clone(),
            hostname: "mx.example.test".into(),
        };
        let drifts = survey_certificate(&main).expect("survey");
        assert_eq!(drifts, vec![Drift::MissingCertificate(plan.clone())]);
        assert_eq!(
            drifts[0].to_string(),
            format!(
                "missing TLS certificate {} and key {}",
                cert.display(),
                key.display()
            )
        );
        assert_eq!(
            drifts[0].fixed_message(),
            format!(
                "created self-signed certificate {} for mx.example.test; replace it with a real one",
                cert.display()
            )
        );

        // Only the certificate: the key is missing, and install refuses.
        fs::create_dir(etc.join("tls")).expect("mkdir");
        fs::write(&cert, "mine").expect("write");
        let drifts = survey_certificate(&main).expect("survey");
        assert_eq!(
            drifts[0].to_string(),
            format!(
                "smtpd_tls_key_file {} is missing but smtpd_tls_cert_file {} exists",
                key.display(),
                cert.display()
            )
        );
        assert!(
            drifts[0]
                .fixed_message()
                .contains("put the matching file there"),
            "{}",
            drifts[0].fixed_message()
        );
        // Only the key (a dangling symbolic link counts: it is never replaced).
        fs::remove_file(&cert).expect("rm");
        std::os::unix::fs::symlink(etc.join("nowhere"), &key).expect("symlink");
        let drifts = survey_certificate(&main).expect("survey");
        assert_eq!(
            drifts,
            vec![Drift::HalfCertificate {
                param: "smtpd_tls_cert_file",
                missing: cert.clone(),
                other_param: "smtpd_tls_key_file",
                present: key.clone(),
            }]
        );
        // Both: nothing.
        fs::write(&cert, "mine").expect("write");
        assert_eq!(survey_certificate(&main).expect("survey"), vec![]);

        // One file for both (Postfix's default key file).
        let one = main_with(etc, "smtpd_tls_cert_file = /nonexistent/both.pem\n");
        let drifts = survey_certificate(&one).expect("survey");
        assert_eq!(
            drifts[0].to_string(),
            "missing TLS certificate and key /nonexistent/both.pem (smtpd_tls_cert_file)"
        );
        // A relative path is refused, not resolved against install's cwd.
        let rel = main_with(etc, "smtpd_tls_cert_file = tls/cert.pem\n");
        let err = survey_certificate(&rel).unwrap_err();
        assert!(err.message.contains("absolute path"), "{err}");
    }

    #[test]
    fn certificate_is_created_with_modes_once_and_never_overwritten() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let etc = tmp.path().join("etc/postern");
        let main = main_with(&etc, SHIPPED_TLS);
        let drifts = survey_certificate(&main).expect("survey");
        let [Drift::MissingCertificate(plan)] = drifts.as_slice() else {
            panic!("want one missing certificate");
        };
        create_certificate(plan, me()).expect("create");
        assert_eq!(mode_of(&etc), 0o755);
        assert_eq!(mode_of(&etc.join("tls")), 0o755);
        assert_eq!(mode_of(&plan.key), 0o600);
        assert_eq!(mode_of(&plan.cert), 0o644);
        let meta = fs::metadata(&plan.key).expect("stat");
        assert_eq!((meta.uid(), meta.gid()), me());
        let cert = fs::read_to_string(&plan.cert).expect("cert");
        let key = fs::read_to_string(&plan.key).expect("key");
        assert!(cert.starts_with("-----BEGIN CERTIFICATE-----"), "{cert}");
        assert!(key.contains("PRIVATE KEY") && !key.contains("CERTIFICATE"));
        // A usable pair: the TLS crate loads it and the key matches.
        let src = postern_tls::CertSource::from_config(&main, "smtpd").expect("configured");
        postern_tls::server_config(&src).expect("loads");
        // No temporary files are left behind.
        let mut names: Vec<String> = fs::read_dir(etc.join("tls"))
            .expect("readdir")
            .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        assert_eq!(names, ["cert.pem", "key.pem"]);

        // Done: no drift. Asked again anyway, it refuses and changes nothing.
        assert_eq!(survey_certificate(&main).expect("survey"), vec![]);
        let err = create_certificate(plan, me()).unwrap_err();
        assert!(err.message.contains("exists; not overwritten"), "{err}");
        assert_eq!(fs::read_to_string(&plan.key).expect("key"), key);
        assert_eq!(fs::read_to_string(&plan.cert).expect("cert"), cert);
    }

    #[test]
    fn a_failed_certificate_write_leaves_no_half_pair() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let main = main_with(tmp.path(), SHIPPED_TLS);
        let drifts = survey_certificate(&main).expect("survey");
        let [Drift::MissingCertificate(plan)] = drifts.as_slice() else {
            panic!("want one missing certificate");
        };
        // Something install cannot remove where its temporary file goes.
        let blocker = tmp.path().join("tls/.cert.pem.postern-install");
        fs::create_dir_all(blocker.join("x")).expect("mkdir");
        let err = create_certificate(plan, me()).unwrap_err();
        assert!(err.message.contains("postern-install"), "{err}");
        assert!(!present(&plan.key), "the new key was removed again");
        assert!(!present(&plan.cert));
        assert_eq!(
            survey_certificate(&main).expect("survey"),
            vec![Drift::MissingCertificate(plan.clone())]
        );
        // A planted symbolic link at the key's place is not written through.
        fs::remove_dir_all(tmp.path().join("tls")).expect("rm");
        fs::create_dir(tmp.path().join("tls")).expect("mkdir");
        let victim = tmp.path().join("victim");
        fs::write(&victim, "untouched").expect("write");
        std::os::unix::fs::symlink(&victim, &plan.key).expect("symlink");
        let err = create_certificate(plan, me()).unwrap_err();
        assert!(err.message.contains("not overwritten"), "{err}");
        assert_eq!(fs::read_to_string(&victim).expect("victim"), "untouched");
        assert!(!present(&plan.cert));
    }

    #[test]
    fn one_file_for_key_and_certificate_is_private() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let both = tmp.path().join("ssl/both.pem");
        let main = main_with(
            tmp.path(),
            &format!(
                "myhostname = mx.example.test\nsmtpd_tls_cert_file = {}\n",
                both.display()
            ),
        );
        let drifts = survey_certificate(&main).expect("survey");
        let [Drift::MissingCertificate(plan)] = drifts.as_slice() else {
            panic!("want one missing certificate");
        };
        assert_eq!(plan.key, both);
        create_certificate(plan, me()).expect("create");
        assert_eq!(mode_of(&both), 0o600);
        let src = postern_tls::CertSource::from_config(&main, "smtpd").expect("configured");
        postern_tls::server_config(&src).expect("loads");
        assert_eq!(survey_certificate(&main).expect("survey"), vec![]);
    }

    #[test]
    fn a_bad_host_name_is_refused_before_anything_is_written() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let plan = CertPlan {
            cert: tmp.path().join("tls/cert.pem"),
            key: tmp.path().join("tls/key.pem"),
            hostname: "not a host".into(),
        };
        let err = create_certificate(&plan, me()).unwrap_err();
        assert!(err.message.starts_with("bad host name"), "{err}");
        assert!(!tmp.path().join("tls").exists());
    }

    /// The Debian postinst notes which accounts install created (so that
    /// purge removes only those): its lists must be this module's.
    #[test]
    fn debian_postinst_knows_every_account() {
        let script = include_str!("../../../debian/postinst");
        let list = |var: &str| -> Vec<String> {
            let line = script
                .lines()
                .map(str::trim)
                .find_map(|l| l.strip_prefix(&format!("{var}=\"")))
                .unwrap_or_else(|| panic!("{var}=\"...\" in debian/postinst"));
            let mut v: Vec<String> = line
                .trim_end_matches('"')
                .split_whitespace()
                .map(str::to_owned)
                .collect();
            v.sort();
            v
        };
        let mut users: Vec<String> = USERS.iter().map(|u| u.name.to_owned()).collect();
        users.sort();
        let mut groups: Vec<String> = all_groups().iter().map(|g| g.to_string()).collect();
        groups.sort();
        assert_eq!(list("users"), users);
        assert_eq!(list("groups"), groups);
    }

    #[test]
    fn the_alias_file_is_the_first_text_table_of_alias_maps() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let etc = tmp.path();
        let shipped = MainCf::parse(SHIPPED_MAIN_CF, &etc.join("main.cf")).expect("parses");
        assert_eq!(alias_file(&shipped), Some(PathBuf::from("/etc/aliases")));
        for (maps, want) in [
            (
                "unix:passwd.byname, texthash:/x/a, hash:/x/b",
                Some(PathBuf::from("/x/a")),
            ),
            ("proxy:hash:/x/c", Some(PathBuf::from("/x/c"))),
            ("hash:aliases", Some(etc.join("aliases"))),
            ("regexp:/x/r, unix:passwd.byname", None),
            ("", None),
        ] {
            let main = main_with(etc, &format!("alias_maps = {maps}\n"));
            assert_eq!(alias_file(&main), want, "{maps}");
        }
    }

    #[test]
    fn the_alias_file_is_created_once_and_never_overwritten() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let aliases = tmp.path().join("etc/aliases");
        let main = main_with(
            tmp.path(),
            &format!("alias_maps = hash:{}\n", aliases.display()),
        );
        let drifts = survey_aliases(&main).expect("survey");
        assert_eq!(drifts, vec![Drift::MissingAliases(aliases.clone())]);
        assert_eq!(
            drifts[0].to_string(),
            format!("missing alias file {} (alias_maps)", aliases.display())
        );
        assert_eq!(
            drifts[0].fixed_message(),
            format!("created {} (postmaster: root)", aliases.display())
        );
        create_aliases(&aliases, me()).expect("create");
        assert_eq!(mode_of(&aliases), 0o644);
        let text = fs::read_to_string(&aliases).expect("read");
        assert_eq!(text, ALIASES_TEXT);
        // What local and newaliases read: exactly postmaster -> root.
        let loaded = postern_maps::Aliases::load(&aliases).expect("aliases(5) syntax");
        assert_eq!(loaded.len(), 1);
        assert_eq!(survey_aliases(&main).expect("survey"), vec![]);
        // Never overwritten, not even asked twice.
        fs::write(&aliases, "postmaster: alice\n").expect("write");
        let err = create_aliases(&aliases, me()).unwrap_err();
        assert!(err.message.contains("not overwritten"), "{err}");
        assert_eq!(
            fs::read_to_string(&aliases).expect("read"),
            "postmaster: alice\n"
        );
        // A dangling symbolic link is something there: no drift, untouched.
        fs::remove_file(&aliases).expect("rm");
        std::os::unix::fs::symlink(tmp.path().join("nowhere"), &aliases).expect("symlink");
        assert_eq!(survey_aliases(&main).expect("survey"), vec![]);
        assert!(create_aliases(&aliases, me()).is_err());
        assert!(!tmp.path().join("nowhere").exists());
    }

    #[test]
    fn a_symlink_is_not_a_queue_directory() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let elsewhere = tmp.path().join("elsewhere");
        fs::create_dir(&elsewhere).expect("mkdir");
        std::os::unix::fs::symlink(&elsewhere, tmp.path().join("incoming")).expect("symlink");
        let t = Target {
            what: "incoming".into(),
            path: tmp.path().join("incoming"),
            kind: TargetKind::Dir,
            follow_link: false,
            user: "root",
            group: "root",
            mode: 0o730,
        };
        assert_eq!(
            survey_target(&t).expect("survey"),
            vec![Drift::WrongType(t.clone())]
        );
        let err = apply_target(&t).unwrap_err();
        assert!(err.message.contains("is not a directory"), "{err}");
        let meta = fs::metadata(&elsewhere).expect("stat");
        assert_ne!(
            meta.mode() & 0o7777,
            0o730,
            "the link target was not touched"
        );
    }
}
