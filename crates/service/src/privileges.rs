//! Dropping start-up privileges: the hook every service passes through.
//!
//! Postern runs each stage as its own user (docs/security.md, "What each
//! service runs as"). The policy lives in two places only: the master.cf
//! `unpriv` and `chroot` columns, which master resolves into a user name and
//! a directory, and the [`PROGRAMS`] table below (each program's default
//! user, primary group, supplementary groups, and whether it keeps root).
//! A unit test parses the Markdown table in docs/security.md and compares it
//! with [`PROGRAMS`], so the documentation and the code cannot drift.
//!
//! How a service learns what to become: when master runs as root it starts
//! every child with `POSTERN_PRIVSEP=1`, `POSTERN_RUN_AS=USER` and, for a
//! chrooted service, `POSTERN_CHROOT=DIR` (see [`request_from_env`]). When
//! master is not root it passes none of them and [`drop_privileges`] does
//! nothing but set the umask: every service then runs as the invoking user
//! (the quickstart).
//!
//! Start-up order in the skeleton (`server.rs`):
//! 1. main.cf is loaded; if a chroot is requested, `queue_directory` is set
//!    to `/` in the service's configuration BEFORE its `init` runs
//!    ([`adjust_config_for_chroot`]). Services build their socket and queue
//!    paths from `queue_directory` in `init` but use them only after the
//!    drop, when `/` is the queue directory.
//! 2. The service's `init` runs with start-up privileges: it may read keys
//!    and tables anywhere (they are opened, not re-read, later).
//! 3. [`drop_privileges`], in this order (docs/security.md): resolve user
//!    and groups (the password and group databases are outside the chroot),
//!    drop every capability from the bounding set, chroot + chdir("/"),
//!    setgroups(extra groups), setresgid, setresuid, clear the effective,
//!    permitted, inheritable and ambient sets, set no_new_privs, then check
//!    that setuid(0) fails. A service whose user resolves to root (master.cf
//!    `n`, or local's default) keeps root: its supplementary groups are still
//!    reset, its inheritable and ambient sets cleared, no_new_privs is not
//!    set (local switches to each recipient and runs their commands).
//!
//! SECURITY: every failure is returned as an error that the skeleton turns
//! into a `fatal:` log line and exit 1 (master then throttles the service):
//! a service never serves with more than it should. Capabilities and
//! no_new_privs are per thread, so the drop refuses to run when the process
//! has more than one thread. The umask is 007 for every service, privilege
//! separation or not: queue files are shared with the group (`postern`),
//! never with the world.

use std::path::{Path, PathBuf};

use caps::CapSet;
use nix::sys::stat::{Mode, umask};
use nix::unistd::{Gid, Group, Uid, User};

use crate::ServiceContext;

/// Set to `1` by master when it runs as root: privilege separation is on.
pub const PRIVSEP_ENV: &str = "POSTERN_PRIVSEP";
/// The user the service must run as (master resolved the unpriv column).
pub const RUN_AS_ENV: &str = "POSTERN_RUN_AS";
/// The directory the service must chroot to (master.cf chroot column `y`).
pub const CHROOT_ENV: &str = "POSTERN_CHROOT";

/// The umask of every service: no access for others (queue files are
/// group-shared, docs/security.md).
pub const SERVICE_UMASK: u32 = 0o007;

/// One row of docs/security.md "What each service runs as": what a program
/// runs as when master.cf does not say otherwise, and which groups it needs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ProgramPrivileges<'a> {
    /// The program name (the service's log tag, e.g. `smtpd`).
    pub program: &'a str,
    /// The user for master.cf unpriv `-`/`y`; None = root.
    pub default_user: Option<&'a str>,
    /// The primary group when running as `default_user`; None = the user's
    /// own group from the password database (also for any other user).
    pub primary_group: Option<&'a str>,
    /// The supplementary groups: set to exactly these, whatever the user.
    pub extra_groups: &'a [&'a str],
    /// Whether the master.cf chroot column may say `y` for this program.
    pub chroot_allowed: bool,
    /// Set no_new_privs after the drop.
    pub no_new_privs: bool,
    /// The program needs root after start-up (local: becomes each
    /// recipient; master).
    pub keep_root: bool,
}

/// The supplementary group of every unprivileged service: may connect to
/// the internal sockets in `private/`.
pub const IPC_GROUP: &str = "postern-ipc";
/// The queue group: cleanup, qmgr and pickup.
pub const QUEUE_GROUP: &str = "postern";
/// The local submission group: owns `maildrop/` and `public/`.
pub const POSTDROP_GROUP: &str = "postdrop";

const fn unprivileged(
    program: &'static str,
    user: &'static str,
    group: &'static str,
    extra_groups: &'static [&'static str],
) -> ProgramPrivileges<'static> {
    ProgramPrivileges {
        program,
        default_user: Some(user),
        primary_group: Some(group),
        extra_groups,
        chroot_allowed: true,
        no_new_privs: true,
        keep_root: false,
    }
}

const fn root(program: &'static str) -> ProgramPrivileges<'static> {
    ProgramPrivileges {
        program,
        default_user: None,
        primary_group: None,
        extra_groups: &[],
        chroot_allowed: false,
        no_new_privs: false,
        keep_root: true,
    }
}

/// docs/security.md "What each service runs as", as data.
pub const PROGRAMS: &[ProgramPrivileges<'static>] = &[
    unprivileged("smtpd", "postern-smtpd", "postern-smtpd", &[IPC_GROUP]),
    unprivileged("cleanup", "postern-cleanup", QUEUE_GROUP, &[IPC_GROUP]),
    unprivileged("qmgr", "postern-qmgr", QUEUE_GROUP, &[IPC_GROUP]),
    unprivileged(
        "pickup",
        "postern-pickup",
        QUEUE_GROUP,
        &[IPC_GROUP, POSTDROP_GROUP],
    ),
    unprivileged("smtp", "postern-smtp", "postern-smtp", &[IPC_GROUP]),
    // The only process that keeps users_file's password hashes (smtpd asks
    // it; local, as root, reads only uid/gid/home); outside any chroot so it
    // can follow users_file wherever the administrator keeps it.
    ProgramPrivileges {
        program: "auth",
        default_user: Some("postern-auth"),
        primary_group: Some("postern-auth"),
        extra_groups: &[IPC_GROUP],
        chroot_allowed: false,
        no_new_privs: true,
        keep_root: false,
    },
    root("local"),
    root("master"),
];

/// The privileges of `program`: its [`PROGRAMS`] row, or for a program
/// the table does not know (a site's own service) the user `mail_owner`
/// (main.cf), its own primary group, and the extra group postern-ipc, with
/// no capabilities and no_new_privs.
pub fn program_privileges<'a>(program: &'a str, mail_owner: &'a str) -> ProgramPrivileges<'a> {
    match PROGRAMS.iter().find(|p| p.program == program) {
        Some(p) => *p,
        None => ProgramPrivileges {
            program,
            default_user: Some(mail_owner),
            primary_group: None,
            extra_groups: &[IPC_GROUP],
            chroot_allowed: true,
            no_new_privs: true,
            keep_root: false,
        },
    }
}

/// What master asked for through the environment (privilege separation on).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PrivsepRequest {
    /// The user name to run as (`root` for master.cf `n`).
    pub run_as: String,
    /// The directory to chroot to, if the chroot column said `y`.
    pub chroot: Option<PathBuf>,
}

/// Reads [`PRIVSEP_ENV`], [`RUN_AS_ENV`] and [`CHROOT_ENV`]. Ok(None) when
/// privilege separation is off (master not root); an error when the
/// variables are inconsistent (never guess: a service must not run with
/// more than master meant).
pub fn request_from_env() -> Result<Option<PrivsepRequest>, String> {
    let get = |name: &str| std::env::var_os(name).map(|v| v.to_string_lossy().into_owned());
    request_from(get(PRIVSEP_ENV), get(RUN_AS_ENV), get(CHROOT_ENV))
}

/// [`request_from_env`] on given values (testable without touching the
/// process environment).
fn request_from(
    privsep: Option<String>,
    run_as: Option<String>,
    chroot: Option<String>,
) -> Result<Option<PrivsepRequest>, String> {
    match privsep.as_deref() {
        None => return Ok(None),
        Some("1") => {}
        Some(other) => return Err(format!("bad {PRIVSEP_ENV} value: \"{other}\"")),
    }
    let run_as = run_as
        .filter(|u| !u.is_empty())
        .ok_or_else(|| format!("{PRIVSEP_ENV} is set but {RUN_AS_ENV} is missing"))?;
    let chroot = match chroot.filter(|c| !c.is_empty()) {
        None => None,
        Some(dir) if Path::new(&dir).is_absolute() => Some(PathBuf::from(dir)),
        Some(dir) => return Err(format!("{CHROOT_ENV} is not absolute: \"{dir}\"")),
    };
    Ok(Some(PrivsepRequest { run_as, chroot }))
}

/// Called before the service's `init`: a chrooted service sees the queue
/// directory as `/`, so its `queue_directory` is set to `/` and every path
/// it builds from it in `init` is valid after the drop.
pub fn adjust_config_for_chroot(ctx: &mut ServiceContext, req: Option<&PrivsepRequest>) {
    if req.is_some_and(|r| r.chroot.is_some()) {
        ctx.config.set("queue_directory", "/");
    }
}

/// Everything resolved for the drop, before anything irreversible happens.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DropPlan {
    /// The user name (for messages).
    pub user: String,
    /// uid to set (real, effective, saved).
    pub uid: Uid,
    /// gid to set (real, effective, saved).
    pub gid: Gid,
    /// The supplementary groups, exactly.
    pub groups: Vec<Gid>,
    /// chroot directory.
    pub chroot: Option<PathBuf>,
    /// The user is root: keep root (reset groups, clear inheritable and
    /// ambient capabilities only).
    pub keep_root: bool,
    /// Set no_new_privs.
    pub no_new_privs: bool,
}

fn install_hint() -> &'static str {
    "run `postern install` to create Postern's users and groups"
}

fn group_gid(name: &str) -> Result<Gid, String> {
    match Group::from_name(name) {
        Ok(Some(g)) => Ok(g.gid),
        Ok(None) => Err(format!("group {name} does not exist: {}", install_hint())),
        Err(e) => Err(format!("cannot look up group {name}: {}", e.desc())),
    }
}

/// Resolves the request against the password and group databases. Errors
/// name the missing user or group and say to run `postern install`.
pub fn plan(privs: &ProgramPrivileges<'_>, req: &PrivsepRequest) -> Result<DropPlan, String> {
    let user = match User::from_name(&req.run_as) {
        Ok(Some(u)) => u,
        Ok(None) => {
            return Err(format!(
                "user {} does not exist: {}",
                req.run_as,
                install_hint()
            ));
        }
        Err(e) => return Err(format!("cannot look up user {}: {}", req.run_as, e.desc())),
    };
    if req.chroot.is_some() && !privs.chroot_allowed {
        return Err(format!(
            "{} cannot run chrooted: set its master.cf chroot column to n",
            privs.program
        ));
    }
    let keep_root = user.uid.is_root();
    // The table's primary group applies to the program's own user; any
    // other user keeps the group the password database gives it.
    let gid = match (privs.default_user, privs.primary_group) {
        (Some(default), Some(group)) if default == req.run_as && !keep_root => group_gid(group)?,
        _ => user.gid,
    };
    let mut groups = Vec::with_capacity(privs.extra_groups.len());
    for name in privs.extra_groups {
        let g = group_gid(name)?;
        if !groups.contains(&g) {
            groups.push(g);
        }
    }
    Ok(DropPlan {
        user: req.run_as.clone(),
        uid: user.uid,
        gid,
        groups,
        chroot: req.chroot.clone(),
        keep_root,
        no_new_privs: privs.no_new_privs && !keep_root,
    })
}

/// Drops the privileges the service started with, as master asked (see the
/// module documentation). Called once, after the service's `init` and
/// before it serves anything. Without [`PRIVSEP_ENV`] it only sets the
/// umask. Errors become fatal start-up errors.
pub fn drop_privileges(ctx: &ServiceContext) -> Result<(), String> {
    umask(Mode::from_bits_truncate(SERVICE_UMASK));
    let Some(req) = request_from_env()? else {
        return Ok(());
    };
    let mail_owner = ctx.config.str("mail_owner");
    let privs = program_privileges(ctx.program, &mail_owner);
    let plan = plan(&privs, &req).map_err(|e| format!("privilege drop: {e}"))?;
    apply(&plan).map_err(|e| format!("privilege drop to {}: {e}", plan.user))?;
    tracing::debug!(
        "running as {} (uid {}, gid {}, groups {:?}){}",
        plan.user,
        plan.uid,
        plan.gid,
        plan.groups.iter().map(|g| g.as_raw()).collect::<Vec<_>>(),
        match &plan.chroot {
            Some(d) => format!(", chrooted to {}", d.display()),
            None => String::new(),
        }
    );
    Ok(())
}

/// A line of /proc/self/status, e.g. "Threads" or "CapBnd".
fn proc_status_field(name: &str) -> Option<String> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    status.lines().find_map(|l| {
        l.strip_prefix(name)
            .and_then(|rest| rest.strip_prefix(':'))
            .map(|v| v.trim().to_string())
    })
}

/// Capabilities and no_new_privs are per thread: a second thread would keep
/// root's. Refuse unless the process has exactly one.
fn check_single_thread() -> Result<(), String> {
    match proc_status_field("Threads").map(|t| t.parse::<u32>()) {
        Some(Ok(1)) | None => Ok(()),
        Some(Ok(n)) => Err(format!(
            "{n} threads at privilege drop (capabilities are per thread; start threads after the drop)"
        )),
        Some(Err(_)) => Err("cannot read the thread count".to_string()),
    }
}

fn caps_err(what: &str, e: caps::errors::CapsError) -> String {
    format!("{what}: {e}")
}

/// Performs the drop (order: docs/security.md). Irreversible.
fn apply(plan: &DropPlan) -> Result<(), String> {
    check_single_thread()?;
    // Load the time zone while /etc/localtime is reachable, so log lines
    // keep local time inside the chroot.
    let _ = crate::log::timestamp(std::time::SystemTime::now());
    if !plan.keep_root {
        caps::clear(None, CapSet::Bounding)
            .map_err(|e| caps_err("cannot drop the bounding set", e))?;
        // The caps crate drops the capabilities it knows; a newer kernel
        // may know more. /proc tells the truth (read before the chroot).
        if let Some(bnd) = proc_status_field("CapBnd")
            && u64::from_str_radix(&bnd, 16) != Ok(0)
        {
            return Err(format!("bounding set still {bnd} after dropping"));
        }
    }
    if let Some(dir) = &plan.chroot {
        nix::unistd::chroot(dir).map_err(|e| format!("chroot {}: {}", dir.display(), e.desc()))?;
        nix::unistd::chdir("/").map_err(|e| format!("chdir / in the chroot: {}", e.desc()))?;
    }
    nix::unistd::setgroups(&plan.groups).map_err(|e| format!("setgroups: {}", e.desc()))?;
    nix::unistd::setresgid(plan.gid, plan.gid, plan.gid)
        .map_err(|e| format!("setresgid {}: {}", plan.gid, e.desc()))?;
    nix::unistd::setresuid(plan.uid, plan.uid, plan.uid)
        .map_err(|e| format!("setresuid {}: {}", plan.uid, e.desc()))?;
    if plan.keep_root {
        caps::clear(None, CapSet::Inheritable)
            .map_err(|e| caps_err("cannot clear the inheritable set", e))?;
        caps::clear(None, CapSet::Ambient)
            .map_err(|e| caps_err("cannot clear the ambient set", e))?;
        return Ok(());
    }
    for set in [CapSet::Effective, CapSet::Permitted, CapSet::Inheritable] {
        caps::clear(None, set).map_err(|e| caps_err(&format!("cannot clear {set:?}"), e))?;
    }
    caps::clear(None, CapSet::Ambient).map_err(|e| caps_err("cannot clear the ambient set", e))?;
    if plan.no_new_privs {
        nix::sys::prctl::set_no_new_privs()
            .map_err(|e| format!("cannot set no_new_privs: {}", e.desc()))?;
    }
    verify(plan)
}

/// After the drop: every id is the target, no capability is left, and root
/// cannot be regained.
fn verify(plan: &DropPlan) -> Result<(), String> {
    let ids = nix::unistd::getresuid().map_err(|e| format!("getresuid: {}", e.desc()))?;
    let gids = nix::unistd::getresgid().map_err(|e| format!("getresgid: {}", e.desc()))?;
    if [ids.real, ids.effective, ids.saved] != [plan.uid; 3]
        || [gids.real, gids.effective, gids.saved] != [plan.gid; 3]
    {
        return Err("user or group ids did not all change".to_string());
    }
    for set in [
        CapSet::Effective,
        CapSet::Permitted,
        CapSet::Inheritable,
        CapSet::Ambient,
    ] {
        let left = caps::read(None, set).map_err(|e| caps_err(&format!("read {set:?}"), e))?;
        if !left.is_empty() {
            return Err(format!("capabilities left in {set:?}: {left:?}"));
        }
    }
    if nix::unistd::setuid(Uid::from_raw(0)).is_ok() {
        return Err("setuid(0) succeeded after the drop".to_string());
    }
    if plan.no_new_privs && !nix::sys::prctl::get_no_new_privs().unwrap_or(false) {
        return Err("no_new_privs is not set".to_string());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECURITY_MD: &str = include_str!("../../../docs/security.md");

    /// The rows of the "What each service runs as" table, as cells.
    fn doc_rows() -> Vec<Vec<String>> {
        let section = SECURITY_MD
            .split("## What each service runs as")
            .nth(1)
            .expect("docs/security.md has the section");
        let section = section.split("\n## ").next().unwrap_or(section);
        let mut rows: Vec<Vec<String>> = section
            .lines()
            .filter(|l| l.trim_start().starts_with('|'))
            .map(|l| {
                l.trim()
                    .trim_matches('|')
                    .split('|')
                    .map(|c| c.trim().to_string())
                    .collect()
            })
            .collect();
        assert!(rows.len() > 2, "table not found");
        let header = rows.remove(0);
        assert_eq!(
            header,
            [
                "program",
                "default user",
                "primary group",
                "extra groups",
                "chroot allowed",
                "after start-up"
            ]
        );
        rows.remove(0); // |---|---|
        rows
    }

    #[test]
    fn table_matches_docs_security_md() {
        let rows = doc_rows();
        assert_eq!(rows.len(), PROGRAMS.len(), "row count differs from docs");
        for row in &rows {
            let program = row[0].as_str();
            let p = PROGRAMS
                .iter()
                .find(|p| p.program == program)
                .unwrap_or_else(|| panic!("{program} is in docs/security.md but not in PROGRAMS"));
            let user = (row[1] != "root").then_some(row[1].as_str());
            assert_eq!(p.default_user, user, "{program}: default user");
            let group = (row[2] != "root").then_some(row[2].as_str());
            assert_eq!(p.primary_group, group, "{program}: primary group");
            let extra: Vec<&str> = if row[3] == "—" || row[3] == "-" {
                Vec::new()
            } else {
                row[3].split(',').map(str::trim).collect()
            };
            assert_eq!(p.extra_groups, extra.as_slice(), "{program}: extra groups");
            assert_eq!(
                p.chroot_allowed,
                match row[4].as_str() {
                    "yes" => true,
                    "no" => false,
                    other => panic!("{program}: chroot allowed {other:?}"),
                },
                "{program}: chroot allowed"
            );
            let after = row[5].as_str();
            assert_eq!(
                p.no_new_privs,
                after.contains("no_new_privs"),
                "{program}: no_new_privs"
            );
            assert_eq!(
                p.keep_root,
                !after.contains("no capabilities"),
                "{program}: keeps root"
            );
            assert_eq!(p.keep_root, p.default_user.is_none(), "{program}");
        }
    }

    #[test]
    fn unknown_program_runs_as_mail_owner_in_the_ipc_group() {
        let p = program_privileges("echo", "postern");
        assert_eq!(p.default_user, Some("postern"));
        assert_eq!(p.primary_group, None);
        assert_eq!(p.extra_groups, &[IPC_GROUP]);
        assert!(p.no_new_privs && !p.keep_root && p.chroot_allowed);
        let local = program_privileges("local", "postern");
        assert_eq!(local.default_user, None);
        assert!(local.keep_root && !local.no_new_privs);
        assert_eq!(
            program_privileges("pickup", "x").extra_groups,
            &[IPC_GROUP, POSTDROP_GROUP]
        );
    }

    #[test]
    fn request_parsing_refuses_inconsistent_environments() {
        assert_eq!(request_from(None, Some("nobody".into()), None), Ok(None));
        assert_eq!(
            request_from(Some("1".into()), Some("nobody".into()), Some("/q".into())),
            Ok(Some(PrivsepRequest {
                run_as: "nobody".into(),
                chroot: Some(PathBuf::from("/q")),
            }))
        );
        assert_eq!(
            request_from(Some("1".into()), Some("nobody".into()), Some(String::new()))
                .unwrap()
                .unwrap()
                .chroot,
            None
        );
        assert!(
            request_from(Some("1".into()), None, None)
                .unwrap_err()
                .contains(RUN_AS_ENV)
        );
        assert!(
            request_from(Some("yes".into()), Some("x".into()), None)
                .unwrap_err()
                .contains("bad POSTERN_PRIVSEP")
        );
        assert!(
            request_from(Some("1".into()), Some("x".into()), Some("q".into()))
                .unwrap_err()
                .contains("not absolute")
        );
    }

    fn req(user: &str, chroot: Option<&str>) -> PrivsepRequest {
        PrivsepRequest {
            run_as: user.to_string(),
            chroot: chroot.map(PathBuf::from),
        }
    }

    #[test]
    fn plan_resolves_users_and_refuses_what_is_missing() {
        // root (master.cf `n`) keeps root and gets no no_new_privs.
        let mut p = program_privileges("echo", "nobody");
        p.extra_groups = &["root"];
        let r = plan(&p, &req("root", None)).unwrap();
        assert!(r.keep_root && !r.no_new_privs);
        assert_eq!(
            (r.uid, r.gid, r.groups.clone()),
            (Uid::from_raw(0), Gid::from_raw(0), vec![Gid::from_raw(0)])
        );
        // Another user: its own passwd group, the extra groups, no_new_privs.
        let nobody = User::from_name("nobody").unwrap().expect("nobody exists");
        let r = plan(&p, &req("nobody", Some("/q"))).unwrap();
        assert_eq!((r.uid, r.gid), (nobody.uid, nobody.gid));
        assert!(!r.keep_root && r.no_new_privs);
        assert_eq!(r.chroot, Some(PathBuf::from("/q")));
        // Missing user and group: the message says what to do.
        let e = plan(&p, &req("postern-no-such-user", None)).unwrap_err();
        assert!(
            e.contains("user postern-no-such-user does not exist") && e.contains("postern install"),
            "{e}"
        );
        p.extra_groups = &["postern-no-such-group"];
        let e = plan(&p, &req("nobody", None)).unwrap_err();
        assert!(
            e.contains("group postern-no-such-group does not exist")
                && e.contains("postern install"),
            "{e}"
        );
        // local may not be chrooted.
        let e = plan(&program_privileges("local", "x"), &req("root", Some("/q"))).unwrap_err();
        assert!(e.contains("local cannot run chrooted"), "{e}");
    }

    #[test]
    fn table_primary_group_applies_to_the_programs_own_user_only() {
        // A synthetic program whose default user is nobody and whose primary
        // group is root: nobody gets gid 0 only as the default user.
        let p = ProgramPrivileges {
            program: "x",
            default_user: Some("nobody"),
            primary_group: Some("root"),
            extra_groups: &[],
            chroot_allowed: true,
            no_new_privs: true,
            keep_root: false,
        };
        assert_eq!(
            plan(&p, &req("nobody", None)).unwrap().gid,
            Gid::from_raw(0)
        );
        let daemon = User::from_name("daemon").unwrap().expect("daemon exists");
        assert_eq!(plan(&p, &req("daemon", None)).unwrap().gid, daemon.gid);
    }

    #[test]
    fn chroot_sets_queue_directory_to_slash_before_init() {
        let d = tempfile::tempdir().unwrap();
        std::fs::write(d.path().join("main.cf"), "queue_directory = /var/spool/x\n").unwrap();
        let mut ctx = crate::build_context("smtpd", &[], d.path().to_path_buf()).unwrap();
        adjust_config_for_chroot(&mut ctx, Some(&req("nobody", None)));
        assert_eq!(ctx.queue_dir(), PathBuf::from("/var/spool/x"));
        adjust_config_for_chroot(&mut ctx, None);
        assert_eq!(ctx.queue_dir(), PathBuf::from("/var/spool/x"));
        adjust_config_for_chroot(&mut ctx, Some(&req("nobody", Some("/var/spool/x"))));
        assert_eq!(ctx.queue_dir(), PathBuf::from("/"));
    }
}
