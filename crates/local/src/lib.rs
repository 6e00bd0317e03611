//! Local delivery: aliases, .forward, Maildir, mbox, pipes and files.
//!
//! This is the blocking delivery library behind the `local` daemon (the IPC
//! driver lives in `server`). For one envelope recipient of a local domain it:
//! 1. expands aliases (alias_maps) recursively, with loop and depth limits;
//! 2. delivers users_file users to their Maildir;
//! 3. for system users, follows a safe ~/.forward or delivers to the mailbox
//!    (home_mailbox under the home directory, else mail_spool_directory/USER);
//! 4. bounces anything else as an unknown user (5.1.1).
//!
//! SECURITY: `|command` and `/file` targets come only from alias, :include:
//! and .forward files, and are allowed per allow_mail_to_commands /
//! allow_mail_to_files. Commands run as argv [shell, "-c", text] with a clean
//! environment; nothing from the message reaches a shell command line. A
//! message already carrying "Delivered-To: <this address>" is bounced as a
//! mail loop.
//!
//! SECURITY (privileges): when local runs as root with privilege_separation
//! on ([`DeliveryMode::SwitchUser`]), every final delivery and every read of
//! a .forward or :include: file happens in a forked child that has become
//! the recipient ([`privsep`]); `LocalDelivery::as_recipient` is the single
//! place where that happens. Nothing is ever delivered as root: a recipient
//! resolving to uid 0, a users_file user without uid:gid, and alias targets
//! get the default_privs user. The only things the root parent itself does
//! to user-writable places are creating a missing spool mailbox
//! (O_EXCL|O_NOFOLLOW, then fchown) and its dotlock. Without root, delivery
//! runs in this process as the process user (the quickstart).
//!
//! PARAMETERS: alias_maps, users_file, virtual_mailbox_base,
//! home_mailbox, mail_spool_directory, recipient_delimiter, mydestination,
//! myhostname, allow_mail_to_commands, allow_mail_to_files, forward_path,
//! local_command_shell, command_time_limit, default_privs,
//! privilege_separation, ipc_timeout.
#![deny(unsafe_code)]

pub mod command;
pub mod mailbox;
pub mod privsep;
pub mod server;

use std::collections::HashSet;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, SystemTime};

use postern_ipc::{Mailbox, ReversePath};
use postern_maps::{
    AliasMaps, AliasTarget, LocalDomains, MailUser, MailUsers, split_map_list, strip_extension,
};

use crate::command::{CommandSpec, run_command};
use crate::mailbox::{
    ContentReader, DeliveryError, append_mbox, deliver_maildir, delivered_to_values,
    prepended_headers,
};
use crate::privsep::{Identity, Report};
pub use postern_status::{DeliveryStatus, EnhancedCode, StatusClass};

/// Default for command_time_limit when main.cf does not give a usable value.
pub const COMMAND_TIME_LIMIT: Duration = Duration::from_secs(1000);
/// Alias / .forward / :include: nesting limit.
pub const MAX_EXPANSION_DEPTH: usize = 100;

/// What local needs from main.cf, read once at start.
///
/// Fields are public so tests and the daemon can adjust them; every field
/// mirrors one main.cf parameter.
#[derive(Clone, Debug)]
pub struct LocalConfig {
    /// alias_maps specs, in lookup order.
    pub alias_maps: Vec<String>,
    /// Directory relative table names resolve against.
    pub config_dir: PathBuf,
    /// users_file (None = no users file).
    pub users_file: Option<PathBuf>,
    /// virtual_mailbox_base (None = unset).
    pub virtual_mailbox_base: Option<PathBuf>,
    /// home_mailbox ("" = mbox in the spool directory; ends in "/" = Maildir).
    pub home_mailbox: String,
    /// mail_spool_directory.
    pub mail_spool_directory: PathBuf,
    /// recipient_delimiter characters.
    pub recipient_delimiter: String,
    /// mydestination entries.
    pub mydestination: Vec<String>,
    /// myhostname (Maildir unique names, qualifying bare names).
    pub myhostname: String,
    /// allow_mail_to_commands classes: alias, forward, include.
    pub allow_mail_to_commands: Vec<String>,
    /// allow_mail_to_files classes: alias, forward, include.
    pub allow_mail_to_files: Vec<String>,
    /// forward_path templates, unexpanded ($home, $user, $local, $domain, $extension).
    pub forward_path: Vec<String>,
    /// Shell for commands.
    pub local_command_shell: String,
    /// command_time_limit.
    pub command_time_limit: Duration,
    /// default_privs: the user deliveries run as when the recipient has no
    /// usable uid (root, users_file lines without uid:gid, alias targets).
    pub default_privs: String,
    /// privilege_separation: when false, a root local delivers in-process
    /// as root, like the quickstart does as its user.
    pub privilege_separation: bool,
}

impl LocalConfig {
    /// Reads the parameters listed in the module header.
    pub fn from_main(main: &postern_config::MainCf) -> Result<LocalConfig, String> {
        let opt_path = |name: &str| {
            let v = main.str(name);
            if v.is_empty() {
                None
            } else {
                Some(PathBuf::from(v))
            }
        };
        let forward_raw = main
            .raw("forward_path")
            .map(|s| s.to_string())
            .unwrap_or_else(|| "$home/.forward".to_string());
        let shell = main.str("local_command_shell");
        let limit = match main.raw("command_time_limit") {
            Some(_) => main.time("command_time_limit").map_err(|e| e.to_string())?,
            None => main
                .time("command_time_limit")
                .unwrap_or(COMMAND_TIME_LIMIT),
        };
        let spool = main.path("mail_spool_directory");
        Ok(LocalConfig {
            alias_maps: split_map_list(&main.str("alias_maps")),
            config_dir: main.config_dir().to_path_buf(),
            users_file: opt_path("users_file"),
            virtual_mailbox_base: opt_path("virtual_mailbox_base"),
            home_mailbox: main.str("home_mailbox"),
            mail_spool_directory: if spool.as_os_str().is_empty() {
                PathBuf::from("/var/mail")
            } else {
                spool
            },
            recipient_delimiter: main.str("recipient_delimiter"),
            mydestination: split_map_list(&main.str("mydestination")),
            myhostname: main.str("myhostname"),
            allow_mail_to_commands: main
                .list("allow_mail_to_commands")
                .iter()
                .map(|s| s.to_lowercase())
                .collect(),
            allow_mail_to_files: main
                .list("allow_mail_to_files")
                .iter()
                .map(|s| s.to_lowercase())
                .collect(),
            forward_path: split_map_list(&forward_raw),
            local_command_shell: if shell.is_empty() {
                "/bin/sh".into()
            } else {
                shell
            },
            command_time_limit: limit,
            default_privs: {
                let v = main.str("default_privs");
                if v.is_empty() {
                    "nobody".to_string()
                } else {
                    v
                }
            },
            privilege_separation: main
                .bool("privilege_separation")
                .map_err(|e| e.to_string())?,
        })
    }
}

/// The message being delivered: content is a range of an open file (the queue file fd
/// received from qmgr) holding the LF-line-ending message.
pub struct Message<'a> {
    /// Queue ID, for logging.
    pub queue_id: &'a str,
    /// Envelope sender.
    pub sender: &'a ReversePath,
    /// When the message entered the queue (for delay=).
    pub arrival: std::time::SystemTime,
    /// The open queue file.
    pub content: &'a std::fs::File,
    /// Where the message (headers + body) starts in it.
    pub content_offset: u64,
    /// Its length in bytes.
    pub content_len: u64,
}

impl Message<'_> {
    /// A fresh reader over the message bytes.
    pub fn reader(&self) -> ContentReader<'_> {
        ContentReader::new(self.content, self.content_offset, self.content_len)
    }
}

/// Result for one envelope recipient, as qmgr needs it: the system's one
/// [`DeliveryStatus`] (success with the detail logged after
/// "status=sent", a temporary failure to try again later, or a permanent
/// one that qmgr bounces).
pub type Outcome = DeliveryStatus;

/// Re-injects mail for alias/.forward targets that are not local (the lead implements it
/// by talking to cleanup). sender = original sender (Postfix keeps it), recipients = the addresses.
pub trait Forwarder {
    /// Queues a copy of `msg` for `recipients`.
    fn forward(&mut self, msg: &Message, recipients: &[Mailbox]) -> Result<(), Outcome>;

    /// Like [`Forwarder::forward`], but told which local address is being
    /// forwarded: an implementation should prepend "Delivered-To: ADDRESS" to
    /// the copy so that a loop through another server is detected when the
    /// message comes back. The default ignores it.
    fn forward_delivered_to(
        &mut self,
        msg: &Message,
        recipients: &[Mailbox],
        delivered_to: &str,
    ) -> Result<(), Outcome> {
        let _ = delivered_to;
        self.forward(msg, recipients)
    }
}

/// Whom a delivery acts for: the user whose files are written and whose
/// environment a command gets.
#[derive(Clone, Debug)]
pub struct RunAs {
    /// Login name (or alias/virtual user name).
    pub name: String,
    /// uid to switch to, when known.
    pub uid: Option<u32>,
    /// gid to switch to, when known.
    pub gid: Option<u32>,
    /// Home directory ("/" when unknown).
    pub home: PathBuf,
    /// Login whose supplementary groups a delivery gets (initgroups); None
    /// = only `gid` (users_file users need not be system users).
    pub login: Option<String>,
}

/// How deliveries get the recipient's privileges.
#[derive(Clone, Debug)]
pub enum DeliveryMode {
    /// In this process, as the process user: local is not root, or
    /// privilege_separation = no, or a test asked for it.
    InProcess,
    /// In a forked child that becomes the recipient (local is root).
    SwitchUser {
        /// The default_privs user, resolved at start (never uid 0).
        default_privs: RunAs,
        /// gid of the group `mail` (spool mailboxes are USER:mail 0600);
        /// None = the user's own group.
        mail_gid: Option<u32>,
    },
}

/// Turns a child's report on a write into the delivery result.
fn written(r: Report) -> Result<(), DeliveryError> {
    match r {
        Report::Done(_) => Ok(()),
        Report::Failed(e) => Err(e),
        Report::Skipped(why) => Err(DeliveryError::temp(
            EnhancedCode(4, 3, 0),
            format!("internal error: delivery skipped: {why}"),
        )),
    }
}

/// Where a target came from (decides what allow_mail_to_* permits).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Class {
    Alias,
    Forward,
    Include,
}

impl Class {
    fn name(self) -> &'static str {
        match self {
            Class::Alias => "alias",
            Class::Forward => "forward",
            Class::Include => "include",
        }
    }

    /// Whether an allow_mail_to_* list (alias, forward, include) names
    /// this class.
    fn allowed_by(self, list: &[String]) -> bool {
        list.iter().any(|c| c == self.name())
    }
}

/// The recipient whose alias/.forward is being expanded.
#[derive(Clone, Debug)]
struct Rcpt {
    /// Full address for logs and Delivered-To: "local@domain".
    address: String,
    /// Lower-cased local part with extension.
    local: String,
    /// Local part without extension.
    base: String,
    /// Extension (without delimiter), "" if none.
    ext: String,
    /// Domain, lower-cased.
    domain: String,
}

/// State of one deliver() call.
struct Run<'r, 'm> {
    msg: &'r Message<'m>,
    fwd: &'r mut dyn Forwarder,
    original: String,
    loop_seen: Vec<String>,
    done: HashSet<String>,
    outcomes: Vec<Outcome>,
    start: Instant,
}

/// The local delivery agent: configuration plus the alias maps, users file
/// and local domains it keeps open (reloaded when their files change).
pub struct LocalDelivery {
    config: LocalConfig,
    aliases: AliasMaps,
    /// users_file: path, stamp when read, contents (None = could not be
    /// read: every delivery defers until it can be). Names, uids, gids and
    /// homes only: the password hashes stay with the auth service.
    users: Option<(PathBuf, Option<FileStamp>, Option<MailUsers>)>,
    domains: LocalDomains,
    mode: DeliveryMode,
}

/// (mtime, mtime_nsec, size) of a file, to notice it changed.
type FileStamp = (i64, i64, u64);

fn file_stamp(p: &Path) -> Option<FileStamp> {
    std::fs::metadata(p)
        .ok()
        .map(|m| (m.mtime(), m.mtime_nsec(), m.size()))
}

impl LocalDelivery {
    /// Opens the alias maps, users file and mydestination tables, and
    /// chooses the [`DeliveryMode`]: as root with privilege_separation on,
    /// deliveries switch to the recipient, and default_privs must name an
    /// existing user other than root (else an error: local must not start).
    pub fn new(config: LocalConfig) -> Result<LocalDelivery, String> {
        let mode = if config.privilege_separation && nix::unistd::geteuid().is_root() {
            let dp = match nix::unistd::User::from_name(&config.default_privs) {
                Ok(Some(u)) => u,
                Ok(None) => {
                    return Err(format!(
                        "default_privs: unknown user \"{}\"",
                        config.default_privs
                    ));
                }
                Err(e) => return Err(format!("default_privs: password database: {e}")),
            };
            if dp.uid.is_root() || dp.gid.as_raw() == 0 {
                return Err(format!(
                    "default_privs: user \"{}\" has uid or gid 0: use an unprivileged user",
                    dp.name
                ));
            }
            let mail_gid = nix::unistd::Group::from_name("mail")
                .ok()
                .flatten()
                .map(|g| g.gid.as_raw());
            DeliveryMode::SwitchUser {
                default_privs: RunAs {
                    name: dp.name.clone(),
                    uid: Some(dp.uid.as_raw()),
                    gid: Some(dp.gid.as_raw()),
                    home: dp.dir,
                    login: Some(dp.name),
                },
                mail_gid,
            }
        } else {
            DeliveryMode::InProcess
        };
        let aliases =
            AliasMaps::open(&config.alias_maps, &config.config_dir).map_err(|e| e.to_string())?;
        // A users_file that cannot be read is no reason not to start (master
        // would restart local in a loop): deliveries defer until it can.
        let users = match &config.users_file {
            Some(p) => {
                let loaded = MailUsers::load(p)
                    .inspect_err(|e| {
                        tracing::warn!("users_file {} is unavailable: {e}", p.display())
                    })
                    .ok();
                Some((p.clone(), file_stamp(p), loaded))
            }
            None => None,
        };
        let domains = LocalDomains::parse(&config.mydestination, &config.config_dir)
            .map_err(|e| e.to_string())?;
        Ok(LocalDelivery {
            config,
            aliases,
            users,
            domains,
            mode,
        })
    }

    /// How deliveries get the recipient's privileges (chosen by [`LocalDelivery::new`]).
    pub fn mode(&self) -> &DeliveryMode {
        &self.mode
    }

    /// Delivers in this process as the process user from now on, even as
    /// root. For tests of the expansion logic and for tools that already
    /// run as the right user; the daemon never calls it.
    pub fn set_in_process(&mut self) {
        self.mode = DeliveryMode::InProcess;
    }

    /// The ids a delivery child for `run_as` switches to: its own when it
    /// has a uid and gid other than root's, else default_privs's.
    fn identity(&self, run_as: &RunAs) -> Option<Identity> {
        let DeliveryMode::SwitchUser { default_privs, .. } = &self.mode else {
            return None;
        };
        let who = match (run_as.uid, run_as.gid) {
            (Some(u), Some(g)) if u != 0 => (u, g, run_as.login.clone()),
            _ => (
                default_privs.uid.unwrap_or(u32::MAX),
                default_privs.gid.unwrap_or(u32::MAX),
                default_privs.login.clone(),
            ),
        };
        Some(Identity {
            uid: who.0,
            gid: who.1,
            login: who.2,
        })
    }

    /// The single place where local "becomes user X": runs `work` in a
    /// child that switched to the recipient (SwitchUser), or right here
    /// (InProcess).
    fn as_recipient(&self, run_as: &RunAs, work: impl FnOnce() -> Report) -> Report {
        match self.identity(run_as) {
            Some(id) => {
                tracing::trace!(
                    "delivering for {} as uid {} gid {}",
                    run_as.name,
                    id.uid,
                    id.gid
                );
                privsep::run_as_user(&id, work)
            }
            None => work(),
        }
    }

    /// The uid a .forward or :include: file may be owned by (besides root):
    /// the uid the read runs as.
    fn file_owner(&self, run_as: &RunAs) -> Option<u32> {
        match self.identity(run_as) {
            Some(id) => Some(id.uid),
            None => run_as.uid,
        }
    }

    /// Whom alias targets (|command, /file, :include:) run as: default_privs
    /// when switching users (Postfix: the alias database owner, or
    /// default_privs when that is root), else the process user.
    fn alias_run_as(&self) -> RunAs {
        match &self.mode {
            DeliveryMode::SwitchUser { default_privs, .. } => default_privs.clone(),
            DeliveryMode::InProcess => current_user(),
        }
    }

    /// In SwitchUser mode, a recipient with uid 0 gets default_privs's ids
    /// (and a warning: `hint` says what the administrator should do), one
    /// without uid or gid gets them silently.
    fn never_root(&self, mut run_as: RunAs, hint: &str) -> RunAs {
        let DeliveryMode::SwitchUser { default_privs, .. } = &self.mode else {
            return run_as;
        };
        match (run_as.uid, run_as.gid) {
            (Some(0), _) => tracing::warn!(
                "delivering mail for {} as {}: {}",
                run_as.name,
                default_privs.name,
                hint
            ),
            (Some(_), Some(_)) => return run_as,
            _ => tracing::debug!(
                "no uid:gid for {}: delivering as {}",
                run_as.name,
                default_privs.name
            ),
        }
        run_as.uid = default_privs.uid;
        run_as.gid = default_privs.gid;
        run_as.login = default_privs.login.clone();
        run_as
    }

    /// Delivers to one envelope recipient (address "user@domain", original = as received):
    /// strip domain (it's local), recipient_delimiter extension, lower-case; then
    /// 1. aliases (alias_maps, in order): expand recursively (an alias target equal to
    ///    itself, e.g. "joe: joe, other", delivers to joe's mailbox; loops → deliver to the
    ///    earliest name; depth limit 100); |command and /file targets allowed per
    ///    allow_mail_to_*; :include: files; addresses in non-local domains → Forwarder;
    /// 2. users_file user → Maildir at (home or virtual_mailbox_base/NAME)/ + home_mailbox
    ///    ("Maildir/" when home_mailbox is empty for users_file users);
    /// 3. system user (getpwnam) → ~/.forward if present and safe (not group/world
    ///    writable, owned by the user or root: else logged "warning: ... refused"),
    ///    else home_mailbox under home, or mbox in mail_spool_directory/USER if home_mailbox empty;
    /// 4. otherwise Bounced 5.1.1 "unknown user: \"name\"".
    ///
    /// Every final delivery is logged in Postfix's format. Aggregate: any
    /// target deferred → Deferred; else any bounced → Bounced; else Sent.
    pub fn deliver(
        &mut self,
        msg: &Message,
        address: &Mailbox,
        original: &str,
        fwd: &mut dyn Forwarder,
    ) -> Outcome {
        self.deliver_once(msg, address, original, fwd, &mut HashSet::new())
    }

    /// [`LocalDelivery::deliver`] for one recipient of a message whose
    /// other recipients may resolve to the same destinations: `delivered`
    /// holds the destination keys ("mailbox:joe", "file:/path", ...) this
    /// message was already delivered to, which are skipped, and gains this
    /// recipient's keys when its delivery succeeded in full (a partly
    /// failed one adds nothing, so a retry may write a second copy but never
    /// skips a destination that did not get the message). Postfix's
    /// duplicate filter, across the recipients of one message.
    pub fn deliver_once(
        &mut self,
        msg: &Message,
        address: &Mailbox,
        original: &str,
        fwd: &mut dyn Forwarder,
        delivered: &mut HashSet<String>,
    ) -> Outcome {
        let mut run_done = delivered.clone();
        let outcome = self.deliver_with(msg, address, original, fwd, &mut run_done);
        if outcome.is_success() {
            *delivered = run_done;
        }
        outcome
    }

    fn deliver_with(
        &mut self,
        msg: &Message,
        address: &Mailbox,
        original: &str,
        fwd: &mut dyn Forwarder,
        done: &mut HashSet<String>,
    ) -> Outcome {
        let loop_seen = match delivered_to_values(msg.reader()) {
            Ok(v) => v,
            Err(e) => {
                let mut run = Run {
                    msg,
                    fwd,
                    original: original.to_string(),
                    loop_seen: Vec::new(),
                    done: HashSet::new(),
                    outcomes: Vec::new(),
                    start: Instant::now(),
                };
                self.record(
                    &mut run,
                    &address.to_string(),
                    Err(DeliveryError::temp(
                        EnhancedCode(4, 3, 0),
                        format!("cannot read queue file: {e}"),
                    )),
                );
                return aggregate(run.outcomes);
            }
        };
        let mut run = Run {
            msg,
            fwd,
            original: original.to_string(),
            loop_seen,
            done: std::mem::take(done),
            outcomes: Vec::new(),
            start: Instant::now(),
        };
        let outcome = self.deliver_run(&mut run, address);
        *done = std::mem::take(&mut run.done);
        outcome
    }

    fn deliver_run(&mut self, run: &mut Run<'_, '_>, address: &Mailbox) -> Outcome {
        let shown = address.to_string();
        if let Err(e) = self.refresh_users() {
            self.record(
                run,
                &shown,
                Err(DeliveryError::temp(EnhancedCode(4, 3, 0), e)),
            );
            return aggregate(std::mem::take(&mut run.outcomes));
        }
        let mut stack = Vec::new();
        self.recipient(
            run,
            &address.local_part.to_lowercase(),
            &address.domain_lowercase(),
            0,
            &mut stack,
        );
        if run.outcomes.is_empty() {
            // Every destination of this recipient already has the message
            // (an earlier recipient of it resolved to the same mailboxes).
            self.record(
                run,
                &shown,
                Ok("duplicate of an earlier recipient of this message: delivered once".into()),
            );
        }
        aggregate(std::mem::take(&mut run.outcomes))
    }

    fn refresh_users(&mut self) -> Result<(), String> {
        if let Some((path, stamp, users)) = &mut self.users {
            let now = file_stamp(path);
            if now != *stamp || users.is_none() {
                *users = None;
                *users = Some(
                    MailUsers::load(path).map_err(|e| format!("users file unavailable: {e}"))?,
                );
                *stamp = now;
            }
        }
        Ok(())
    }

    fn rcpt(&self, local: &str, domain: &str) -> Rcpt {
        let (base, ext) = strip_extension(local, &self.config.recipient_delimiter);
        Rcpt {
            address: format!("{local}@{domain}"),
            local: local.to_string(),
            base: base.to_string(),
            ext: ext.map(|(_, e)| e.to_string()).unwrap_or_default(),
            domain: domain.to_string(),
        }
    }

    /// Handles one local recipient. `stack` holds the names being expanded
    /// (with the class of the expansion) to detect self-references and loops.
    fn recipient(
        &mut self,
        run: &mut Run<'_, '_>,
        local: &str,
        domain: &str,
        depth: usize,
        stack: &mut Vec<(String, Class)>,
    ) {
        let r = self.rcpt(local, domain);
        if depth > MAX_EXPANSION_DEPTH {
            return self.record(
                run,
                &r.address,
                Err(DeliveryError::perm(
                    EnhancedCode(5, 4, 6),
                    format!("alias expansion too deep for {}", r.address),
                )),
            );
        }
        if run.loop_seen.contains(&r.address) {
            return self.record(
                run,
                &r.address,
                Err(DeliveryError::perm(
                    EnhancedCode(5, 4, 6),
                    format!("mail forwarding loop for {}", r.address),
                )),
            );
        }
        // A name already being expanded (itself or further up): skip its
        // alias; skip its .forward too if that is what got us here.
        let in_alias = stack.iter().any(|(n, _)| *n == r.base || *n == r.local);
        let in_forward = stack
            .iter()
            .any(|(n, c)| *n == r.base && *c == Class::Forward);
        if !in_alias {
            let mut found = None;
            let mut keys = vec![r.local.clone()];
            if r.local != r.base {
                keys.push(r.base.clone());
            }
            for k in keys {
                match self.aliases.lookup(&k) {
                    Ok(Some(t)) => {
                        found = Some((k, t));
                        break;
                    }
                    Ok(None) => {}
                    Err(e) => {
                        return self.record(
                            run,
                            &r.address,
                            Err(DeliveryError::temp(
                                EnhancedCode(4, 3, 0),
                                format!("alias database unavailable: {e}"),
                            )),
                        );
                    }
                }
            }
            if let Some((key, targets)) = found {
                let run_as = self.alias_run_as();
                stack.push((key, Class::Alias));
                self.targets(run, &r, &run_as, &targets, Class::Alias, depth, stack);
                stack.pop();
                return;
            }
        }
        // 2. users_file (virtual) users.
        let vuser = self
            .users
            .as_ref()
            .and_then(|(_, _, u)| u.as_ref())
            .and_then(|u| u.get(&r.base).cloned());
        if let Some(u) = vuser {
            return self.virtual_user(run, &r, &u);
        }
        // 3. system users.
        let pw = match nix::unistd::User::from_name(&r.base) {
            Ok(pw) => pw,
            Err(e) => {
                return self.record(
                    run,
                    &r.address,
                    Err(DeliveryError::temp(
                        EnhancedCode(4, 3, 0),
                        format!("password database lookup failed: {e}"),
                    )),
                );
            }
        };
        let Some(pw) = pw else {
            return self.record(
                run,
                &r.address,
                Err(DeliveryError::perm(
                    EnhancedCode(5, 1, 1),
                    format!("unknown user: \"{}\"", r.base),
                )),
            );
        };
        let run_as = self.never_root(
            RunAs {
                name: pw.name.clone(),
                uid: Some(pw.uid.as_raw()),
                gid: Some(pw.gid.as_raw()),
                home: pw.dir.clone(),
                login: Some(pw.name.clone()),
            },
            &format!("alias {} to a real user", pw.name),
        );
        if !in_forward {
            match self.read_forward(&r, &run_as) {
                Ok(Some(targets)) => {
                    stack.push((r.base.clone(), Class::Forward));
                    self.targets(run, &r, &run_as, &targets, Class::Forward, depth, stack);
                    stack.pop();
                    return;
                }
                Ok(None) => {}
                Err(e) => return self.record(run, &r.address, Err(e)),
            }
        }
        let key = format!("mailbox:{}", pw.name);
        if !run.done.insert(key) {
            return;
        }
        // root's mail is written as default_privs, which cannot write
        // under root's home: it goes to the spool mbox (mail_spool_directory
        // /root, as Postfix's default), where root can read it, rather than
        // waiting forever on "Permission denied". An alias root: you is the
        // real fix, and the warning above says so.
        let root_in_spool =
            pw.uid.is_root() && matches!(self.mode, DeliveryMode::SwitchUser { .. });
        let result = if self.config.home_mailbox.is_empty() || root_in_spool {
            let path = self.config.mail_spool_directory.join(&pw.name);
            self.write_mbox(run, &r, &run_as, &path, true)
                .map(|_| "delivered to mailbox".to_string())
        } else {
            self.system_home_mailbox(run, &r, &run_as, &pw.dir)
        };
        self.record(run, &r.address, result);
    }

    fn virtual_user(&mut self, run: &mut Run<'_, '_>, r: &Rcpt, u: &MailUser) {
        if !run.done.insert(format!("mailbox:virtual:{}", u.name)) {
            return;
        }
        let home = match (&u.home, &self.config.virtual_mailbox_base) {
            (Some(h), _) => h.clone(),
            (None, Some(base)) => base.join(&u.name),
            (None, None) => {
                return self.record(
                    run,
                    &r.address,
                    Err(DeliveryError::temp(
                        EnhancedCode(4, 3, 5),
                        format!(
                            "user \"{}\" has no home and virtual_mailbox_base is not set",
                            u.name
                        ),
                    )),
                );
            }
        };
        let run_as = self.never_root(
            RunAs {
                name: u.name.clone(),
                uid: u.uid,
                gid: u.gid,
                home: home.clone(),
                login: None,
            },
            "give its users_file line a real uid:gid",
        );
        let mb = if self.config.home_mailbox.is_empty() {
            "Maildir/".to_string()
        } else {
            self.config.home_mailbox.clone()
        };
        let result = self.write_home_mailbox(run, r, &run_as, &home, &mb);
        self.record(run, &r.address, result);
    }

    /// home_mailbox under a system user's home, which must exist (local
    /// creates the mailbox, never the home directory itself).
    fn system_home_mailbox(
        &self,
        run: &Run<'_, '_>,
        r: &Rcpt,
        run_as: &RunAs,
        home: &Path,
    ) -> Result<String, DeliveryError> {
        let mb = self.config.home_mailbox.as_str();
        if !home.is_dir() {
            // Clearer than the ENOENT of a file deep below it; temporary,
            // since creating the directory fixes it.
            return Err(DeliveryError::temp(
                EnhancedCode(4, 3, 0),
                format!(
                    "user \"{}\" has no home directory {} (home_mailbox = {mb} is relative to it): \
                     create it, or set home_mailbox empty for mbox delivery to mail_spool_directory",
                    run_as.name,
                    home.display()
                ),
            ));
        }
        self.write_home_mailbox(run, r, run_as, home, mb)
    }

    /// home_mailbox under `home`: a Maildir when it ends in '/', else an mbox file.
    fn write_home_mailbox(
        &self,
        run: &Run<'_, '_>,
        r: &Rcpt,
        run_as: &RunAs,
        home: &Path,
        mb: &str,
    ) -> Result<String, DeliveryError> {
        let path = home.join(mb.trim_start_matches('/'));
        if mb.ends_with('/') {
            self.write_maildir(run, r, run_as, &path)
                .map(|_| "delivered to maildir".to_string())
        } else {
            self.write_mbox(run, r, run_as, &path, false)
                .map(|_| "delivered to mailbox".to_string())
        }
    }

    fn prefix(&self, run: &Run<'_, '_>, r: &Rcpt) -> String {
        prepended_headers(run.msg.sender, Some(run.original.as_str()), &r.address)
    }

    fn write_maildir(
        &self,
        run: &Run<'_, '_>,
        r: &Rcpt,
        run_as: &RunAs,
        dir: &Path,
    ) -> Result<(), DeliveryError> {
        let prefix = self.prefix(run, r);
        written(self.as_recipient(run_as, || {
            deliver_maildir(
                dir,
                &self.config.myhostname,
                prefix.as_bytes(),
                run.msg.reader(),
            )
            .map(|_| String::new())
            .into()
        }))
    }

    fn write_mbox(
        &self,
        run: &Run<'_, '_>,
        r: &Rcpt,
        run_as: &RunAs,
        path: &Path,
        dotlock: bool,
    ) -> Result<(), DeliveryError> {
        let prefix = self.prefix(run, r);
        // As root, the spool mailbox is created (for the user, group mail)
        // and dotlocked by this process: the user cannot write the spool
        // directory. The child appends with the file lock only.
        let mut child_dotlock = dotlock;
        let mut _lock = None;
        if dotlock && let Some(id) = self.identity(run_as) {
            let mail_gid = match &self.mode {
                DeliveryMode::SwitchUser { mail_gid, .. } => mail_gid.unwrap_or(id.gid),
                DeliveryMode::InProcess => id.gid,
            };
            privsep::create_spool_mailbox(path, id.uid, mail_gid)?;
            _lock = Some(mailbox::dotlock(path)?);
            child_dotlock = false;
        }
        written(self.as_recipient(run_as, || {
            append_mbox(
                path,
                child_dotlock,
                &run.msg.sender.bare(),
                SystemTime::now(),
                prefix.as_bytes(),
                run.msg.reader(),
            )
            .map(|_| String::new())
            .into()
        }))
    }

    /// Finds and reads the first existing forward_path file of a system user.
    /// Ok(None) = no usable .forward (missing, empty, or refused as unsafe).
    fn read_forward(
        &self,
        r: &Rcpt,
        run_as: &RunAs,
    ) -> Result<Option<Vec<AliasTarget>>, DeliveryError> {
        let delim = self
            .config
            .recipient_delimiter
            .chars()
            .next()
            .map(String::from)
            .unwrap_or_default();
        for template in &self.config.forward_path {
            let vars = [
                ("home", run_as.home.display().to_string()),
                ("user", run_as.name.clone()),
                ("local", r.local.clone()),
                ("domain", r.domain.clone()),
                ("extension", r.ext.clone()),
                (
                    "recipient_delimiter",
                    if r.ext.is_empty() {
                        String::new()
                    } else {
                        delim.clone()
                    },
                ),
            ];
            let path = expand_vars(template, &vars, 0);
            if path.is_empty() || !path.starts_with('/') {
                continue;
            }
            let path = PathBuf::from(path);
            // Cheap existence check first, so that the common case (no
            // .forward) costs no fork; the child examines it again.
            match std::fs::symlink_metadata(&path) {
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
                Err(e) if e.raw_os_error() == Some(libc::ENOTDIR) => continue,
                _ => {}
            }
            let owner = self.file_owner(run_as);
            let text = match self.as_recipient(run_as, || privsep::read_user_file(&path, owner)) {
                Report::Done(text) => text,
                Report::Skipped(why) => {
                    if !why.is_empty() {
                        tracing::warn!("forward file of {}: {why}", run_as.name);
                    }
                    continue;
                }
                Report::Failed(e) => return Err(e),
            };
            let targets = postern_maps::parse_targets(&text).map_err(|e| {
                DeliveryError::temp(EnhancedCode(4, 3, 0), format!("{}: {e}", path.display()))
            })?;
            if targets.is_empty() {
                continue;
            }
            return Ok(Some(targets));
        }
        Ok(None)
    }

    /// Delivers to every target of an alias, .forward or :include: file;
    /// the non-local addresses among them are forwarded in one copy.
    #[allow(clippy::too_many_arguments)]
    fn targets(
        &mut self,
        run: &mut Run<'_, '_>,
        r: &Rcpt,
        run_as: &RunAs,
        targets: &[AliasTarget],
        class: Class,
        depth: usize,
        stack: &mut Vec<(String, Class)>,
    ) {
        let mut remote = Vec::new();
        for t in targets {
            match t {
                AliasTarget::Address(a) => {
                    if let Some(m) = self.target_address(run, r, a, depth, stack) {
                        remote.push(m);
                    }
                }
                AliasTarget::Command(cmd) => self.target_command(run, r, run_as, cmd, class),
                AliasTarget::File(path) => self.target_file(run, r, run_as, path, class),
                AliasTarget::Include(path) => {
                    if let Some(inc) = self.target_include(run, r, run_as, path, depth) {
                        self.targets(run, r, run_as, &inc, Class::Include, depth + 1, stack)
                    }
                }
            }
        }
        if !remote.is_empty() {
            let result = run.fwd.forward_delivered_to(run.msg, &remote, &r.address);
            for a in &remote {
                let a = a.to_string();
                match &result {
                    Ok(()) => self.record(run, &a, Ok("forwarded".to_string())),
                    Err(o) => self.log_outcome(run, &a, o.clone()),
                }
            }
        }
    }

    /// An address target: a bare name or an address in a local domain is
    /// expanded here; any other mailbox is returned, to forward (once per
    /// message). A target that is not a valid address bounces.
    fn target_address(
        &mut self,
        run: &mut Run<'_, '_>,
        r: &Rcpt,
        target: &str,
        depth: usize,
        stack: &mut Vec<(String, Class)>,
    ) -> Option<Mailbox> {
        let qualified = if target.contains('@') {
            target.to_string()
        } else {
            format!("{target}@{}", r.domain)
        };
        let m = match Mailbox::parse(&qualified) {
            Ok(m) => m,
            Err(e) => {
                self.record(
                    run,
                    &r.address,
                    Err(DeliveryError::perm(
                        EnhancedCode(5, 1, 3),
                        format!("bad address syntax in alias or forward target {target:?}: {e}"),
                    )),
                );
                return None;
            }
        };
        let dom = m.domain_lowercase();
        if dom == r.domain || self.domains.contains(&dom) {
            self.recipient(run, &m.local_part.to_lowercase(), &dom, depth + 1, stack);
            None
        } else if run
            .done
            .insert(format!("forward:{}", m.key().to_lowercase()))
        {
            Some(m)
        } else {
            None
        }
    }

    /// A `|command` target, where allow_mail_to_commands permits it.
    fn target_command(
        &mut self,
        run: &mut Run<'_, '_>,
        r: &Rcpt,
        run_as: &RunAs,
        cmd: &str,
        class: Class,
    ) {
        if !class.allowed_by(&self.config.allow_mail_to_commands) {
            return self.restricted(run, r, "command");
        }
        if !run.done.insert(format!("command:{cmd}")) {
            return;
        }
        let result = self
            .command(run, r, run_as, cmd)
            .map(|_| format!("delivered to command: {cmd}"));
        self.record(run, &r.address, result);
    }

    /// allow_mail_to_commands / allow_mail_to_files said no: 5.7.1, as
    /// Postfix ("mail to command is restricted").
    fn restricted(&self, run: &mut Run<'_, '_>, r: &Rcpt, what: &str) {
        self.record(
            run,
            &r.address,
            Err(DeliveryError::perm(
                EnhancedCode(5, 7, 1),
                format!("mail to {what} is restricted"),
            )),
        )
    }

    /// A `/file` (mbox) or `/dir/` (Maildir) target, where
    /// allow_mail_to_files permits it.
    fn target_file(
        &mut self,
        run: &mut Run<'_, '_>,
        r: &Rcpt,
        run_as: &RunAs,
        path: &Path,
        class: Class,
    ) {
        if !class.allowed_by(&self.config.allow_mail_to_files) {
            return self.restricted(run, r, "file");
        }
        if !run.done.insert(format!("file:{}", path.display())) {
            return;
        }
        let result = if path.as_os_str().to_string_lossy().ends_with('/') {
            self.write_maildir(run, r, run_as, path)
                .map(|_| format!("delivered to maildir: {}", path.display()))
        } else {
            self.write_mbox(run, r, run_as, path, false)
                .map(|_| format!("delivered to file: {}", path.display()))
        };
        self.record(run, &r.address, result);
    }

    /// Reads an `:include:` file as the recipient: its targets, or None
    /// when it failed (the failure is recorded).
    fn target_include(
        &mut self,
        run: &mut Run<'_, '_>,
        r: &Rcpt,
        run_as: &RunAs,
        path: &Path,
        depth: usize,
    ) -> Option<Vec<AliasTarget>> {
        if depth + 1 > MAX_EXPANSION_DEPTH {
            self.record(
                run,
                &r.address,
                Err(DeliveryError::perm(
                    EnhancedCode(5, 4, 6),
                    format!("alias expansion too deep for {}", r.address),
                )),
            );
            return None;
        }
        let owner = self.file_owner(run_as);
        let failure = match self.as_recipient(run_as, || privsep::read_user_file(path, owner)) {
            Report::Done(text) => match postern_maps::parse_targets(&text) {
                Ok(inc) => return Some(inc),
                Err(e) => DeliveryError::temp(
                    EnhancedCode(4, 3, 0),
                    format!("include file {}: {e}", path.display()),
                ),
            },
            Report::Skipped(why) if why.is_empty() => DeliveryError::temp(
                EnhancedCode(4, 3, 0),
                format!("cannot open include file {}: not found", path.display()),
            ),
            Report::Skipped(why) => {
                // Postfix bounces an unsafe include file as a
                // configuration error (5.3.5), with a warning.
                tracing::warn!("include file for {}: {why}", r.address);
                DeliveryError::perm(
                    EnhancedCode(5, 3, 5),
                    format!("mail system configuration error: include file {why}"),
                )
            }
            Report::Failed(e) => DeliveryError {
                reason: format!("include file: {}", e.reason),
                ..e
            },
        };
        self.record(run, &r.address, Err(failure));
        None
    }

    fn command(
        &self,
        run: &Run<'_, '_>,
        r: &Rcpt,
        run_as: &RunAs,
        cmd: &str,
    ) -> Result<(), DeliveryError> {
        let env = vec![
            ("HOME", run_as.home.display().to_string()),
            ("USER", run_as.name.clone()),
            ("LOGNAME", run_as.name.clone()),
            ("SENDER", run.msg.sender.bare()),
            ("RECIPIENT", r.address.clone()),
            ("LOCAL", r.local.clone()),
            ("DOMAIN", r.domain.clone()),
            ("EXTENSION", r.ext.clone()),
            ("PATH", "/usr/bin:/bin".to_string()),
            ("SHELL", self.config.local_command_shell.clone()),
        ];
        let spec = CommandSpec {
            command: cmd,
            shell: &self.config.local_command_shell,
            env,
            time_limit: self.config.command_time_limit,
        };
        let prefix = self.prefix(run, r);
        written(self.as_recipient(run_as, || {
            run_command(&spec, prefix.as_bytes(), run.msg.reader())
                .map(|_| String::new())
                .into()
        }))
    }

    fn record(&self, run: &mut Run<'_, '_>, to: &str, result: Result<String, DeliveryError>) {
        let o = match result {
            Ok(detail) => DeliveryStatus::sent(detail),
            Err(e) => e.into(),
        };
        self.log_outcome(run, to, o);
    }

    /// Logs one final delivery in Postfix's format and keeps the outcome.
    fn log_outcome(&self, run: &mut Run<'_, '_>, to: &str, o: Outcome) {
        let now = SystemTime::now();
        let total = now
            .duration_since(run.msg.arrival)
            .unwrap_or(Duration::ZERO);
        let xmit = run.start.elapsed();
        let before = total.saturating_sub(xmit);
        let orig = if run.original.is_empty() || run.original.eq_ignore_ascii_case(to) {
            String::new()
        } else {
            format!(", orig_to=<{}>", run.original)
        };
        let (dsn, text) = (o.code(), o.text());
        let status = match o.class() {
            StatusClass::Success => "sent",
            StatusClass::Temporary => "deferred",
            StatusClass::Permanent => "bounced",
        };
        tracing::info!(
            "{}: to=<{}>{}, relay=local, delay={}, delays={}/0/0/{}, dsn={}, status={} ({})",
            run.msg.queue_id,
            to,
            orig,
            postern_mailtime::log_delay(total),
            postern_mailtime::log_delay(before),
            postern_mailtime::log_delay(xmit),
            dsn,
            status,
            text
        );
        run.outcomes.push(o);
    }
}

/// The process's own user, for alias deliveries (they run as local itself).
fn current_user() -> RunAs {
    let uid = nix::unistd::geteuid();
    match nix::unistd::User::from_uid(uid) {
        Ok(Some(u)) => RunAs {
            name: u.name.clone(),
            uid: Some(uid.as_raw()),
            gid: Some(u.gid.as_raw()),
            home: u.dir,
            login: Some(u.name),
        },
        _ => RunAs {
            name: uid.to_string(),
            uid: Some(uid.as_raw()),
            gid: None,
            home: PathBuf::from("/"),
            login: None,
        },
    }
}

/// Aggregates leaf outcomes: any deferred → Deferred; else any bounced →
/// Bounced; else Sent (details joined). No leaf at all (everything was a
/// duplicate) counts as sent.
fn aggregate(outcomes: Vec<Outcome>) -> Outcome {
    if let Some(d) = outcomes.iter().find(|o| o.is_temporary()) {
        return d.clone();
    }
    if let Some(b) = outcomes.iter().find(|o| o.is_permanent()) {
        return b.clone();
    }
    let mut details: Vec<String> = Vec::new();
    for o in outcomes {
        let detail = o.into_text();
        if !details.contains(&detail) {
            details.push(detail);
        }
    }
    if details.is_empty() {
        details.push("delivered".into());
    }
    DeliveryStatus::sent(details.join("; "))
}

/// Expands $name, ${name}, ${name?text} (text if non-empty) and ${name:text}
/// (text if empty) from `vars`; unknown names expand to "".
fn expand_vars(s: &str, vars: &[(&str, String)], depth: usize) -> String {
    let get = |n: &str| {
        vars.iter()
            .find(|(k, _)| *k == n)
            .map(|(_, v)| v.as_str())
            .unwrap_or("")
    };
    let mut out = String::new();
    let mut rest = s;
    while let Some(i) = rest.find('$') {
        out.push_str(&rest[..i]);
        let after = &rest[i + 1..];
        if let Some(inner) = after.strip_prefix('{') {
            let Some(close) = inner.find('}') else {
                out.push_str(&rest[i..]);
                return out;
            };
            let body = &inner[..close];
            let (name, op) = match body.find(['?', ':']) {
                Some(p) => (&body[..p], Some((&body[p..p + 1], &body[p + 1..]))),
                None => (body, None),
            };
            let v = get(name);
            match op {
                None => out.push_str(v),
                Some(("?", t)) if !v.is_empty() && depth < 5 => {
                    out.push_str(&expand_vars(t, vars, depth + 1))
                }
                Some((":", t)) if v.is_empty() && depth < 5 => {
                    out.push_str(&expand_vars(t, vars, depth + 1))
                }
                Some(_) => {}
            }
            rest = &inner[close + 1..];
        } else {
            let n = after
                .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
                .unwrap_or(after.len());
            if n == 0 {
                out.push('$');
            } else {
                out.push_str(get(&after[..n]));
            }
            rest = &after[n..];
        }
    }
    out.push_str(rest);
    out
}

#[cfg(test)]
mod tests;
