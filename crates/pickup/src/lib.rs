//! pickup — feeds local submissions from `maildrop/` to cleanup.
//!
//! `postdrop` leaves each message from `sendmail` as a queue file in
//! `maildrop/` and pokes `public/pickup`; master also wakes pickup every
//! `wakeup` seconds (master.cf, 60 in the shipped file). On every trigger
//! and wakeup pickup lists `maildrop/` and, for each file, oldest first:
//! opens it, sends its envelope and content to cleanup
//! (`private/cleanup`, flag `ADD_MISSING_HEADERS`, attributes
//! `origin=pickup`, `local_user`, `uid`), waits for `Queued`, and only then
//! unlinks the maildrop file, so a crash anywhere leaves the message in
//! one of the two queues (at worst in both: a duplicate, never a loss). It
//! logs `NEWID: uid=1000 from=<user>` with cleanup's queue ID.
//!
//! Envelope: postdrop already qualified every address (bare names get
//! `@myorigin`, no -f means `login@myorigin`), so a maildrop file's
//! envelope means what a queue file's does and pickup passes it on; only a
//! version 1 file (an older postdrop) still means "the submitting user" by
//! an empty sender ([`envelope_sender`]).
//!
//! Failures: a file that does not parse is logged and removed (pickup may
//! not write `corrupt/`, docs/security.md); a temporary cleanup failure
//! (no socket, timeout, a temporary `Rejected`) leaves the file
//! and ends this scan, to be retried at the next wakeup; a permanent
//! rejection is logged with its reason and the file removed.
//!
//! SECURITY: runs as `postern-pickup` (groups postern, postern-ipc,
//! postdrop), chroot allowed. Maildrop files were written by `postdrop` on
//! behalf of any local user, so their content is untrusted data: the queue
//! reader is strict, files are opened read-only with O_NOFOLLOW and must be
//! regular files, and the submitter's identity (`uid`, `local_user`) is
//! taken from the file OWNER (which the user cannot change), not from the
//! attributes inside it; a mismatch is logged.
//!
//! PARAMETERS: queue_directory, myorigin, ipc_timeout.

#![forbid(unsafe_code)]

use std::fs::{self, File, OpenOptions};
use std::io::{self, Read};
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::rc::Rc;
use std::time::{Duration, SystemTime};

use postern_config::MainCf;
use postern_ipc::{CHUNK_SIZE, CleanupClient, CleanupError, Mailbox, ReversePath, cleanup_flags};
use postern_queue::{Queue, QueueDirs, QueueError, QueueFile, QueueId, TEMP_PREFIX, sync_dir};
use tokio::sync::mpsc;
use tracing::{info, warn};

/// Temporary maildrop files older than this were left by a postdrop that
/// was killed; pickup removes them.
pub const STALE_TEMP_AGE: Duration = Duration::from_secs(86400);

/// pickup's settings, read once at start.
#[derive(Clone, Debug)]
pub struct Settings {
    /// The queue root (`/` inside a chroot).
    pub queue_dir: PathBuf,
    /// Domain for bare local names and for the user's own address.
    pub myorigin: String,
    /// Limit on each step of the cleanup conversation.
    pub ipc_timeout: Duration,
}

impl Settings {
    /// Reads the parameters pickup uses.
    pub fn from_config(main: &MainCf) -> Result<Settings, String> {
        Ok(Settings {
            queue_dir: main.path("queue_directory"),
            myorigin: main.str("myorigin"),
            ipc_timeout: main
                .time("ipc_timeout")
                .map_err(|e| e.to_string())?
                .max(Duration::from_secs(1)),
        })
    }

    fn cleanup_socket(&self) -> PathBuf {
        self.queue_dir.join("private").join("cleanup")
    }
}

/// What happened to one maildrop file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// cleanup queued it under this new ID; the maildrop file is gone.
    Queued(String),
    /// The file was unusable (corrupt, not a regular file) or permanently
    /// rejected by cleanup: logged and removed.
    Removed(String),
    /// The file vanished meanwhile (someone else took it).
    Gone,
    /// The file could not be read now: left for a later scan.
    Skipped(String),
    /// cleanup could not take it now: left, and the scan should stop.
    Retry(String),
}

/// The submitter of a maildrop file as pickup trusts it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Submitter {
    /// The file owner's user ID.
    pub uid: u32,
    /// That user's login name.
    pub login: String,
}

/// The envelope sender pickup gives cleanup: the file's own. A version 1
/// maildrop file (written by an older postdrop) meant the submitting user
/// by an empty sender; that meaning is kept for such files, so mail
/// dropped just before an upgrade keeps its sender.
pub fn envelope_sender(
    file_version: u8,
    sender: &ReversePath,
    login: &str,
    myorigin: &str,
) -> ReversePath {
    match sender {
        ReversePath::Null if file_version == 1 => Mailbox::parse(&format!("{login}@{myorigin}"))
            .map(ReversePath::Mailbox)
            .unwrap_or(ReversePath::Null),
        s => s.clone(),
    }
}

/// Decides who submitted a file: the owner `file_uid` is authoritative;
/// the login comes from the password database (`lookup`), else from the
/// file's own attributes when they agree with the owner, else the number.
pub fn submitter(
    file_uid: u32,
    attr_uid: Option<&str>,
    attr_login: Option<&str>,
    lookup: impl Fn(u32) -> Option<String>,
) -> Submitter {
    let attrs_agree = attr_uid.and_then(|u| u.parse::<u32>().ok()) == Some(file_uid);
    let login = lookup(file_uid)
        .or_else(|| {
            attrs_agree
                .then(|| attr_login.map(str::to_string))
                .flatten()
        })
        .unwrap_or_else(|| file_uid.to_string());
    Submitter {
        uid: file_uid,
        login,
    }
}

fn passwd_name(uid: u32) -> Option<String> {
    nix::unistd::User::from_uid(nix::unistd::Uid::from_raw(uid))
        .ok()
        .flatten()
        .map(|u| u.name)
}

/// Opens a maildrop file read-only without following symlinks; it must be
/// a regular file. Returns the parsed file and its owner.
fn open_maildrop(path: &Path, id: &QueueId) -> Result<(QueueFile, u32), QueueError> {
    let file: File = OpenOptions::new()
        .read(true)
        .custom_flags(nix::libc::O_NOFOLLOW | nix::libc::O_NONBLOCK)
        .open(path)
        .map_err(|e| {
            if e.raw_os_error() == Some(nix::libc::ELOOP) {
                QueueError::Corrupt("not a regular file".into())
            } else {
                QueueError::Io(e)
            }
        })?;
    let meta = file.metadata()?;
    if !meta.is_file() {
        return Err(QueueError::Corrupt("not a regular file".into()));
    }
    let qf = QueueFile::from_file(file, id.clone())?;
    Ok((qf, meta.uid()))
}

fn remove(dirs: &QueueDirs, id: &QueueId) {
    match fs::remove_file(dirs.file(Queue::Maildrop, id)) {
        Ok(()) => {
            if let Err(e) = sync_dir(&dirs.dir(Queue::Maildrop)) {
                warn!("{id}: cannot sync maildrop directory: {e}");
            }
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => warn!("{id}: cannot remove maildrop file: {e}"),
    }
}

/// The conversation with cleanup for one message: the new queue ID, or
/// cleanup's refusal (a [`postern_ipc::DeliveryStatus`], temporary or
/// permanent) or an unreachable cleanup (temporary).
async fn cleanup_conversation(
    settings: &Settings,
    qf: &QueueFile,
    who: &Submitter,
) -> Result<String, CleanupError> {
    let env = qf.envelope();
    let attributes = vec![
        ("origin".to_string(), "pickup".to_string()),
        ("local_user".to_string(), who.login.clone()),
        ("uid".to_string(), who.uid.to_string()),
    ];
    let mut c = CleanupClient::open(
        &settings.cleanup_socket(),
        attributes,
        cleanup_flags::ADD_MISSING_HEADERS,
        settings.ipc_timeout,
    )
    .await?;
    let sender = envelope_sender(qf.version(), &env.sender, &who.login, &settings.myorigin);
    info!("{}: uid={} from={sender}", c.queue_id(), who.uid);
    c.sender(&sender).await?;
    for r in env.recipients.iter().filter(|r| !r.done) {
        c.recipient(&r.address, &r.original).await?;
    }
    let mut reader = qf.content_reader();
    let mut buf = vec![0u8; CHUNK_SIZE];
    loop {
        let n = reader
            .read(&mut buf)
            .map_err(|e| CleanupError::Unavailable(format!("read maildrop file: {e}")))?;
        if n == 0 {
            break;
        }
        c.content(&buf[..n]).await?;
    }
    c.commit().await
}

/// Takes one maildrop file through cleanup (see the module docs).
pub async fn pickup_one(settings: &Settings, dirs: &QueueDirs, id: &QueueId) -> Outcome {
    let path = dirs.file(Queue::Maildrop, id);
    let (qf, owner) = match open_maildrop(&path, id) {
        Ok(x) => x,
        Err(QueueError::Io(e)) if e.kind() == io::ErrorKind::NotFound => return Outcome::Gone,
        Err(QueueError::Io(e)) => {
            warn!("{id}: cannot open maildrop file: {e}");
            return Outcome::Skipped(e.to_string());
        }
        Err(QueueError::Corrupt(reason)) => {
            warn!("{id}: corrupt maildrop file: {reason}; removed");
            remove(dirs, id);
            return Outcome::Removed(reason);
        }
    };
    let env = qf.envelope();
    let who = submitter(
        owner,
        env.attribute("uid"),
        env.attribute("local_user"),
        passwd_name,
    );
    if let Some(claimed) = env.attribute("uid")
        && claimed != who.uid.to_string()
    {
        warn!(
            "{id}: maildrop file claims uid {} but is owned by uid {}: using the owner",
            claimed.escape_debug(),
            who.uid
        );
    }
    match cleanup_conversation(settings, &qf, &who).await {
        Ok(new_id) => {
            drop(qf);
            remove(dirs, id);
            Outcome::Queued(new_id)
        }
        Err(e) if e.is_temporary() => {
            let reason = e.to_string();
            warn!("{id}: deferred: {reason}; will retry");
            Outcome::Retry(reason)
        }
        Err(e) => {
            let reason = e.to_string();
            warn!("{id}: rejected by cleanup: {reason}; maildrop file removed");
            drop(qf);
            remove(dirs, id);
            Outcome::Removed(reason)
        }
    }
}

/// Removes `.tmp-*` files in maildrop/ older than `age` (left by a killed
/// postdrop). Returns how many were removed.
pub fn remove_stale_maildrop_temp(dirs: &QueueDirs, age: Duration) -> io::Result<usize> {
    let now = SystemTime::now();
    let mut removed = 0;
    for entry in fs::read_dir(dirs.dir(Queue::Maildrop))? {
        let entry = entry?;
        if !entry.file_name().to_string_lossy().starts_with(TEMP_PREFIX) {
            continue;
        }
        let Ok(meta) = entry.metadata() else { continue };
        let old = meta
            .modified()
            .ok()
            .and_then(|m| now.duration_since(m).ok())
            .is_some_and(|d| d >= age);
        if meta.is_file() && old && fs::remove_file(entry.path()).is_ok() {
            removed += 1;
        }
    }
    Ok(removed)
}

/// One pass over maildrop/: every file, oldest first, until cleanup says
/// "later". Returns the outcomes in order.
pub async fn scan(settings: &Settings) -> Vec<(QueueId, Outcome)> {
    let dirs = QueueDirs::new(&settings.queue_dir);
    let mut out = Vec::new();
    let listing = match dirs.scan(Queue::Maildrop) {
        Ok(l) => l,
        Err(e) => {
            warn!("cannot read {}: {e}", dirs.dir(Queue::Maildrop).display());
            return out;
        }
    };
    for junk in &listing.junk {
        warn!("maildrop: ignoring unexpected file {}", junk.escape_debug());
    }
    for id in listing.ids {
        let outcome = pickup_one(settings, &dirs, &id).await;
        let stop = matches!(outcome, Outcome::Retry(_));
        out.push((id, outcome));
        if stop {
            break;
        }
    }
    match remove_stale_maildrop_temp(&dirs, STALE_TEMP_AGE) {
        Ok(0) => {}
        Ok(n) => info!("removed {n} stale temporary maildrop files"),
        Err(e) => warn!("cannot clean up maildrop temporary files: {e}"),
    }
    out
}

/// The service loop: scan at start, then on every trigger (postdrop's or
/// master's wakeup); exits on SIGTERM at once (an interrupted message stays
/// in maildrop/) and on SIGHUP after the current scan.
pub async fn run(
    ctx: std::sync::Arc<postern_service::ServiceContext>,
    listener: postern_service::Listener,
    mut lifecycle: tokio::sync::watch::Receiver<postern_service::Lifecycle>,
) -> Result<(), String> {
    use postern_service::{Lifecycle, Listener};
    let Listener::Unix(listener) = listener else {
        return Err("pickup must be a unix service in master.cf".into());
    };
    let settings = Rc::new(Settings::from_config(&ctx.config)?);
    let (tx, mut rx) = mpsc::unbounded_channel::<()>();
    let _ = tx.send(());
    loop {
        tokio::select! {
            accepted = listener.accept() => {
                if let Ok((stream, _)) = accepted {
                    let tx = tx.clone();
                    tokio::task::spawn_local(async move {
                        // Any trigger means "look at maildrop/".
                        postern_ipc::read_triggers(stream).await;
                        let _ = tx.send(());
                    });
                }
            }
            Some(()) = rx.recv() => {
                // Triggers that arrived meanwhile are served by this scan.
                while rx.try_recv().is_ok() {}
                let s = settings.clone();
                tokio::select! {
                    _ = scan(&s) => {}
                    _ = lifecycle.wait_for(|l| *l == Lifecycle::Stop) => return Ok(()),
                }
            }
            changed = lifecycle.changed() => {
                let state = if changed.is_ok() { *lifecycle.borrow() } else { Lifecycle::Stop };
                if state != Lifecycle::Running {
                    return Ok(());
                }
            }
        }
    }
}

/// The program: a long-running service driving its own listener.
pub fn main() -> ! {
    postern_service::event_server("pickup", |_ctx| Ok(()), run)
}

#[cfg(test)]
mod tests;
