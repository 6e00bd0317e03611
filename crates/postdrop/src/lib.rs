//! postdrop — writes one local submission into `maildrop/`.
//!
//! `sendmail` (the `postern` binary under that name) runs `postdrop` with
//! the message on its standard input as postern-ipc-proto frames: one
//! [`SubmitRequest`] (sender, recipients, a few attributes), then
//! [`SubmitContent`] chunks and `End`. postdrop validates the envelope,
//! writes a normal queue file into `maildrop/` with the same durable
//! discipline as cleanup (`QueueFileWriter::create_in`: temporary file,
//! fsync, no-replace rename, directory fsync), prints the maildrop queue ID
//! on standard output and pokes pickup (`public/pickup`, byte `W`). It needs
//! nothing else running: while master is stopped the file waits in
//! `maildrop/` and pickup's first wakeup finds it.
//!
//! Exit status (sysexits): 0 accepted, 65 `EX_DATAERR` (bad input: address
//! syntax, NUL or line breaks in an address, too big, broken framing),
//! 67 `EX_NOUSER` (the real user ID has no login name), 75 `EX_TEMPFAIL`
//! (the queue cannot be written now), 77 `EX_NOPERM` (not allowed: another
//! configuration directory, permission denied on `maildrop/`), 78
//! `EX_CONFIG` (main.cf is broken).
//!
//! SECURITY: installed set-group-ID `postdrop` (docs/security.md), so its
//! caller is any local user and everything it reads is hostile:
//! - the environment is cleared at start; `MAIL_CONFIG` is honoured only
//!   when the real user is root, when it names the default directory, or
//!   when the process is not set-ID at all (then it grants nothing the
//!   caller does not already have), so a user cannot point a privileged
//!   postdrop at a main.cf of their own (Postfix's
//!   alternate_config_directories rule);
//! - `local_user`, `uid` and `origin` come from `getuid()` and the password
//!   database, never from the input; caller attributes are limited to
//!   [`ALLOWED_ATTRIBUTES`] and may not contain NUL or line breaks;
//! - every address is checked with postern-smtp-proto's `Mailbox::parse`
//!   after a bare local name gets `@myorigin`, and "no -f" becomes the
//!   caller's `login@myorigin`, so the maildrop file's envelope means what
//!   a queue file's does; NUL, CR and LF are refused;
//! - content is bounded by `message_size_limit` and framed (each frame at
//!   most `MAX_FRAME` bytes), so memory use is bounded;
//! - the maildrop file is made group-readable (0640, group postdrop) so
//!   pickup can read it, and is owned by the caller: pickup takes the
//!   submitter's identity from the file owner, not from its content.
//!
//! PARAMETERS: queue_directory, message_size_limit, myorigin.

#![deny(unsafe_code)]

use std::ffi::OsString;
use std::fmt;
use std::fs;
use std::io::{self, Read};
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::time::SystemTime;

use postern_config::MainCf;
use postern_ipc_proto::codec::{Decoder, MAX_FRAME, split_frame};
use postern_ipc_proto::{Message, SubmitContent, SubmitRequest, SubmitSender, Trigger};
use postern_queue::{Envelope, Queue, QueueDirs, QueueFileWriter, QueueId, Recipient};
use postern_smtp_proto::{Mailbox, ReversePath};

/// The sysexits statuses postdrop exits with, from the one table
/// (postern-status): `EX_DATAERR` bad input, `EX_NOUSER` the real user has
/// no login name, `EX_TEMPFAIL` try again later (nothing was accepted),
/// `EX_NOPERM` the caller may not do this, `EX_CONFIG` broken configuration.
pub use postern_status::sysexits::{EX_CONFIG, EX_DATAERR, EX_NOPERM, EX_NOUSER, EX_TEMPFAIL};

/// The configuration directory used when MAIL_CONFIG is not set (and the
/// only one a non-root caller of a set-ID postdrop may name).
pub const DEFAULT_CONFIG_DIR: &str = "/etc/postern";

/// Attributes a caller may pass through to the queue file (the `-bs`
/// conversation's HELO name and protocol). Everything identifying the user
/// is set by postdrop itself.
pub const ALLOWED_ATTRIBUTES: &[&str] = &["helo_name", "protocol"];

/// Longest attribute value accepted from the caller.
pub const MAX_ATTRIBUTE_VALUE: usize = 1000;

/// Why a submission was not accepted: the exit status and a message for
/// standard error. It exists so every refusal carries its sysexits class.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Failure {
    /// Exit status (one of the `EX_*` constants).
    pub status: i32,
    /// What went wrong, for the user.
    pub message: String,
}

impl Failure {
    /// A failure of the given class.
    pub fn new(status: i32, message: impl Into<String>) -> Failure {
        Failure {
            status,
            message: message.into(),
        }
    }
}

impl fmt::Display for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

/// Who is submitting: the real user ID and its login name. Taken from the
/// kernel and the password database, never from the input.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Caller {
    /// The real user ID.
    pub uid: u32,
    /// Its login name.
    pub login: String,
}

impl Caller {
    /// The caller of this process (real user ID).
    pub fn current() -> Result<Caller, Failure> {
        let uid = nix::unistd::getuid();
        match nix::unistd::User::from_uid(uid) {
            Ok(Some(u)) => Ok(Caller {
                uid: uid.as_raw(),
                login: u.name,
            }),
            Ok(None) => Err(Failure::new(
                EX_NOUSER,
                format!("no login name found for user ID {uid}"),
            )),
            Err(e) => Err(Failure::new(
                EX_TEMPFAIL,
                format!("cannot look up user ID {uid}: {e}"),
            )),
        }
    }
}

/// Decides which configuration directory to read. `env_value` is
/// MAIL_CONFIG as it was at start; `real_root`: the real user is root;
/// `set_id`: the process runs with an effective ID other than the real one.
/// A non-default directory is refused only when it would lend the set-ID
/// privilege to a configuration the caller may have chosen (see [`admin_owned`]).
pub fn config_dir(
    env_value: Option<OsString>,
    real_root: bool,
    set_id: bool,
) -> Result<PathBuf, Failure> {
    let default = PathBuf::from(DEFAULT_CONFIG_DIR);
    let Some(v) = env_value.filter(|v| !v.is_empty()) else {
        return Ok(default);
    };
    let wanted = PathBuf::from(v);
    if wanted == default || real_root || !set_id || admin_owned(&wanted) {
        Ok(wanted)
    } else {
        Err(Failure::new(
            EX_NOPERM,
            format!(
                "MAIL_CONFIG={}: only root may use another configuration directory with the set-group-ID postdrop",
                wanted.display()
            ),
        ))
    }
}

/// True when a configuration directory is the administrator's, not the
/// caller's: the directory and its main.cf belong to root and nobody else
/// may write them. Such a directory lends the set-group-ID privilege to
/// nothing the caller controls (Postfix asks for alternate_config_directories
/// instead; ownership says the same without a list to keep).
pub fn admin_owned(dir: &std::path::Path) -> bool {
    use std::os::unix::fs::MetadataExt;
    let safe = |p: &std::path::Path| match std::fs::symlink_metadata(p) {
        Ok(m) => m.uid() == 0 && m.mode() & 0o022 == 0 && !m.file_type().is_symlink(),
        Err(_) => false,
    };
    safe(dir) && safe(&dir.join("main.cf"))
}

/// Checks one envelope address and qualifies it: an address
/// `local@domain` that `Mailbox::parse` accepts, or a bare local name, to
/// which `@myorigin` is appended (as Postfix's append_at_myorigin does).
/// NUL, CR and LF are always refused.
pub fn check_address(what: &str, address: &str, myorigin: &str) -> Result<Mailbox, String> {
    if address.is_empty() {
        return Err(format!("empty {what} address"));
    }
    if address.contains(['\0', '\r', '\n']) {
        return Err(format!(
            "{what} address contains a NUL or a line break: {}",
            address.escape_debug()
        ));
    }
    let parsed = if address.contains('@') {
        Mailbox::parse(address)
    } else {
        Mailbox::parse(&format!("{address}@{myorigin}"))
    };
    parsed.map_err(|e| {
        format!(
            "bad {what} address syntax: <{}>: {e}",
            address.escape_debug()
        )
    })
}

/// A submission's envelope as it is written to maildrop/: every address
/// qualified, "the caller" resolved, so the file means what a queue file
/// means.
#[derive(Debug)]
pub struct Submission {
    /// The envelope sender.
    pub sender: ReversePath,
    /// Each recipient, qualified, with the text the caller gave.
    pub recipients: Vec<(Mailbox, String)>,
}

/// Validates a submission envelope and qualifies it: the sender (the
/// caller's own `login@myorigin`, the null sender, or an address), at least
/// one recipient, every address well formed, only allowed attributes with
/// clean values.
pub fn validate(
    req: &SubmitRequest,
    caller: &Caller,
    myorigin: &str,
) -> Result<Submission, Failure> {
    let bad = |m: String| Failure::new(EX_DATAERR, m);
    let sender = match &req.sender {
        SubmitSender::Caller => {
            ReversePath::Mailbox(check_address("sender", &caller.login, myorigin).map_err(bad)?)
        }
        SubmitSender::Null => ReversePath::Null,
        SubmitSender::Given(a) => {
            ReversePath::Mailbox(check_address("sender", a, myorigin).map_err(bad)?)
        }
    };
    if req.recipients.is_empty() {
        return Err(bad("no recipient addresses".into()));
    }
    let mut recipients = Vec::with_capacity(req.recipients.len());
    for r in &req.recipients {
        recipients.push((
            check_address("recipient", r, myorigin).map_err(bad)?,
            r.clone(),
        ));
    }
    for (name, value) in &req.attributes {
        if !ALLOWED_ATTRIBUTES.contains(&name.as_str()) {
            return Err(bad(format!(
                "attribute \"{}\" may not be set by the caller",
                name.escape_debug()
            )));
        }
        if value.len() > MAX_ATTRIBUTE_VALUE || value.contains(['\0', '\r', '\n']) {
            return Err(bad(format!("bad value for attribute {name}")));
        }
    }
    Ok(Submission { sender, recipients })
}

/// Reads exactly one frame of message family `M` from a byte stream.
/// End of input before a complete frame, a bad length or a frame that does
/// not decode is `EX_DATAERR` (the message is abandoned).
pub fn read_frame<M: Message, R: Read>(input: &mut R) -> Result<M, Failure> {
    let bad = |m: String| Failure::new(EX_DATAERR, m);
    let mut len_bytes = [0u8; 4];
    input
        .read_exact(&mut len_bytes)
        .map_err(|e| bad(format!("message input ended early: {e}")))?;
    let len = u32::from_be_bytes(len_bytes) as usize;
    if !(2..=MAX_FRAME).contains(&len) {
        return Err(bad(format!("bad submission frame length {len}")));
    }
    let mut frame = Vec::with_capacity(4 + len);
    frame.extend_from_slice(&len_bytes);
    frame.resize(4 + len, 0);
    input
        .read_exact(&mut frame[4..])
        .map_err(|e| bad(format!("message input ended early: {e}")))?;
    let decoded = match split_frame(&frame) {
        Ok(Some((kind, range, _))) => {
            let mut d = Decoder::new(&frame[range]);
            M::decode(kind, &mut d).and_then(|m| d.finish().map(|()| m))
        }
        Ok(None) => return Err(bad("truncated submission frame".into())),
        Err(e) => Err(e),
    };
    decoded.map_err(|e| bad(format!("bad submission input: {e}")))
}

fn io_failure(what: &str, e: io::Error) -> Failure {
    let status = match e.kind() {
        io::ErrorKind::PermissionDenied => EX_NOPERM,
        io::ErrorKind::InvalidInput => EX_DATAERR,
        _ => EX_TEMPFAIL,
    };
    Failure::new(status, format!("{what}: {e}"))
}

/// Reads one submission from `input` and writes it into `maildrop/` under
/// `dirs`, as `caller`. `size_limit` bounds the content (0 = unlimited).
/// Returns the maildrop queue ID once the file is durable; on any error
/// nothing is left in `maildrop/`.
pub fn submit<R: Read>(
    input: &mut R,
    dirs: &QueueDirs,
    caller: &Caller,
    myorigin: &str,
    size_limit: u64,
) -> Result<QueueId, Failure> {
    let req: SubmitRequest = read_frame(input)?;
    let submission = validate(&req, caller, myorigin)?;
    let mut attributes = vec![
        ("origin".to_string(), "sendmail".to_string()),
        ("local_user".to_string(), caller.login.clone()),
        ("uid".to_string(), caller.uid.to_string()),
    ];
    attributes.extend(req.attributes);
    let envelope = Envelope {
        arrival: SystemTime::now(),
        sender: submission.sender,
        recipients: submission
            .recipients
            .into_iter()
            .map(|(address, original)| Recipient::new(address, original))
            .collect(),
        attributes,
    };
    let maildrop = dirs.dir(Queue::Maildrop);
    let what = format!("cannot write to {}", maildrop.display());
    let mut w =
        QueueFileWriter::create_in(dirs, Queue::Maildrop).map_err(|e| io_failure(&what, e))?;
    // pickup (group postdrop) must read the file; nobody else may.
    fs::set_permissions(w.temp_path(), fs::Permissions::from_mode(0o640))
        .map_err(|e| io_failure(&what, e))?;
    // Root runs postdrop without the set-group-ID effect (root's own group
    // would own the file): give the file maildrop/'s group (postdrop) so
    // pickup can still read it.
    if nix::unistd::geteuid().is_root() {
        let gid = fs::metadata(&maildrop)
            .map(|m| nix::unistd::Gid::from_raw(m.gid()))
            .map_err(|e| io_failure(&what, e))?;
        nix::unistd::chown(w.temp_path(), None, Some(gid))
            .map_err(|e| io_failure(&what, io::Error::from(e)))?;
    }
    w.write_envelope(&envelope)
        .map_err(|e| io_failure(&what, e))?;
    while let SubmitContent::Chunk { data } = read_frame::<SubmitContent, R>(input)? {
        let total = w.content_len().saturating_add(data.len() as u64);
        if size_limit > 0 && total > size_limit {
            return Err(Failure::new(
                EX_DATAERR,
                format!("message file too big (message_size_limit = {size_limit})"),
            ));
        }
        w.write_content(&data).map_err(|e| io_failure(&what, e))?;
    }
    w.commit().map_err(|e| io_failure(&what, e))
}

/// Path of pickup's trigger socket.
pub fn pickup_socket(queue_dir: &Path) -> PathBuf {
    queue_dir.join("public").join("pickup")
}

/// Clears the environment (keeping nothing: postdrop runs no program and
/// needs no locale) and ignores the terminal's signals, so that a Ctrl-C
/// aimed at sendmail makes postdrop see the end of its input and remove its
/// temporary file instead of dying half way.
#[allow(unsafe_code)]
fn sanitize_process() {
    let names: Vec<OsString> = std::env::vars_os().map(|(k, _)| k).collect();
    for k in names {
        // SAFETY: called first thing in main, before any other thread exists,
        // so nothing can read the environment concurrently.
        unsafe { std::env::remove_var(&k) };
    }
    use nix::sys::signal::{SigHandler, Signal, signal};
    for s in [
        Signal::SIGINT,
        Signal::SIGQUIT,
        Signal::SIGHUP,
        Signal::SIGTSTP,
    ] {
        // SAFETY: SIG_IGN installs no handler code.
        let _ = unsafe { signal(s, SigHandler::SigIgn) };
    }
}

fn run() -> Result<QueueId, Failure> {
    let mail_config = std::env::var_os("MAIL_CONFIG");
    sanitize_process();
    let uid = nix::unistd::getuid();
    let set_id = nix::unistd::geteuid() != uid || nix::unistd::getegid() != nix::unistd::getgid();
    let dir = config_dir(mail_config, uid.is_root(), set_id)?;
    let main = MainCf::load(&dir).map_err(|e| Failure::new(EX_CONFIG, e.to_string()))?;
    let limit = main
        .size("message_size_limit")
        .map_err(|e| Failure::new(EX_CONFIG, e.to_string()))?;
    let caller = Caller::current()?;
    let dirs = QueueDirs::new(main.path("queue_directory"));
    let myorigin = main.str("myorigin");
    let id = submit(&mut io::stdin().lock(), &dirs, &caller, &myorigin, limit)?;
    // A lost trigger only delays the mail until pickup's next wakeup.
    let _ = wake_pickup(&pickup_socket(dirs.root()));
    Ok(id)
}

/// Writes the one-byte wakeup trigger to pickup's socket (plain std: the
/// setgid program links no async runtime).
fn wake_pickup(socket: &std::path::Path) -> io::Result<()> {
    use std::io::Write as _;
    let mut s = std::os::unix::net::UnixStream::connect(socket)?;
    s.set_write_timeout(Some(std::time::Duration::from_secs(5)))?;
    s.write_all(&[Trigger::Wakeup.byte()])
}

/// The program: submit, print the maildrop queue ID, exit with a sysexits
/// status (see the module documentation).
pub fn main() -> ! {
    match run() {
        Ok(id) => {
            println!("{id}");
            std::process::exit(0)
        }
        Err(f) => {
            eprintln!("postdrop: fatal: {}", f.message);
            std::process::exit(f.status)
        }
    }
}

#[cfg(test)]
mod tests;
