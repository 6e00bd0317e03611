//! Delivering as the recipient: one forked child per final delivery.
//!
//! When `local` runs as root (and privilege_separation is on), every final
//! delivery — writing a Maildir or mbox, running a `|command`, writing a
//! `/file`, reading a `.forward` or `:include:` file — happens in a child
//! process forked for it, which first becomes the recipient: a clean
//! environment, setgroups (the login's groups), setresgid and setresuid to the same
//! id three times, then checks that root cannot be regained. The child
//! performs the work and reports a [`Report`] to the parent over a pipe
//! (one frame: a tag byte, a length-prefixed DSN and a length-prefixed
//! text), then ends with `_exit` so that none of the parent's state (the
//! tokio runtime, open channels, buffered writers) is touched or dropped.
//!
//! SECURITY:
//! - The child never runs as uid 0: an identity with uid 0 is refused here
//!   (the caller maps root to default_privs before asking).
//! - Every descriptor above 2 is marked close-on-exec in the child, so a
//!   user's `|command` inherits only its standard input, output and error,
//!   never the queue file or the connection to qmgr.
//! - Signal handlers inherited from the parent (tokio's) are reset to the
//!   default in the child, so a signal to the child cannot wake the
//!   parent's event loop through a shared self-pipe.
//! - The parent trusts nothing from the child but a well-formed frame: a
//!   short, malformed or oversized report, or a child that died, becomes a
//!   deferral (4.3.0), never a "sent".
//! - fork() is only sound here because the caller (local's service handler,
//!   on a current_thread runtime) has no other thread that could hold a lock
//!   the child needs; the child does not log (its warnings travel in the
//!   report) and does not touch the runtime.
#![allow(unsafe_code)]

use std::ffi::CString;
use std::io::{Read, Write};
use std::os::fd::OwnedFd;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::Path;

use nix::sys::wait::{WaitStatus, waitpid};
use nix::unistd::{ForkResult, Gid, Uid};

use crate::Outcome;
use crate::mailbox::DeliveryError;

/// Largest text a report may carry (a .forward or :include: file, or a
/// reason): a bigger frame is refused by the decoder and a bigger user file
/// is refused by the reader.
pub const MAX_REPORT_TEXT: usize = 4 << 20;

/// Tag bytes of a report frame.
const TAG_DONE: u8 = 0;
const TAG_TEMP: u8 = 1;
const TAG_PERM: u8 = 2;
const TAG_SKIPPED: u8 = 3;

/// The user a delivery child becomes. Built by the caller from the
/// recipient (passwd entry, users_file line, or default_privs).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Identity {
    /// uid for the real, effective and saved ids. Never 0.
    pub uid: u32,
    /// gid for the real, effective and saved ids.
    pub gid: u32,
    /// Login name whose supplementary groups the child gets (getgrouplist);
    /// None = no supplementary group but `gid` (users_file users, who may
    /// not be system users).
    pub login: Option<String>,
}

/// What a delivery child reports to its parent: the result of the work
/// done as the recipient.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Report {
    /// The work succeeded; the text is a detail for the log (or the content
    /// of a file that was read).
    Done(String),
    /// The work failed (temporarily or permanently).
    Failed(DeliveryError),
    /// Nothing to do: a file that does not exist (empty reason) or that was
    /// refused as unsafe (the reason, which the parent logs).
    Skipped(String),
}

impl From<Result<String, DeliveryError>> for Report {
    fn from(r: Result<String, DeliveryError>) -> Report {
        match r {
            Ok(s) => Report::Done(s),
            Err(e) => Report::Failed(e),
        }
    }
}

/// Encodes a report as one frame: tag byte, u32 big-endian length + DSN,
/// u32 big-endian length + text. Texts longer than [`MAX_REPORT_TEXT`] are
/// cut (at a character boundary) so that the frame always decodes.
pub fn encode_report(r: &Report) -> Vec<u8> {
    let (tag, dsn, text) = match r {
        Report::Done(t) => (TAG_DONE, "", t.as_str()),
        Report::Failed(e) if e.temporary => (TAG_TEMP, e.dsn.as_str(), e.reason.as_str()),
        Report::Failed(e) => (TAG_PERM, e.dsn.as_str(), e.reason.as_str()),
        Report::Skipped(t) => (TAG_SKIPPED, "", t.as_str()),
    };
    frame(tag, dsn, text)
}

/// Decodes one frame made by [`encode_report`]; the buffer must hold
/// exactly one frame.
pub fn decode_report(buf: &[u8]) -> Result<Report, String> {
    let (tag, dsn, text) = unframe(buf)?;
    Ok(match tag {
        TAG_DONE => Report::Done(text),
        TAG_TEMP => Report::Failed(DeliveryError::temp(&dsn, text)),
        TAG_PERM => Report::Failed(DeliveryError::perm(&dsn, text)),
        TAG_SKIPPED => Report::Skipped(text),
        other => return Err(format!("unknown report tag {other}")),
    })
}

/// Encodes an [`Outcome`] in the same frame format (Sent = tag 0 with the
/// detail, Deferred = 1, Bounced = 2, each with DSN and reason).
pub fn encode_outcome(o: &Outcome) -> Vec<u8> {
    match o {
        Outcome::Sent { detail } => frame(TAG_DONE, "2.0.0", detail),
        Outcome::Deferred { dsn, reason } => frame(TAG_TEMP, dsn, reason),
        Outcome::Bounced { dsn, reason } => frame(TAG_PERM, dsn, reason),
    }
}

/// Decodes a frame made by [`encode_outcome`]; a "skipped" frame is not an
/// outcome and is refused.
pub fn decode_outcome(buf: &[u8]) -> Result<Outcome, String> {
    let (tag, dsn, text) = unframe(buf)?;
    match tag {
        TAG_DONE => Ok(Outcome::Sent { detail: text }),
        TAG_TEMP => Ok(Outcome::Deferred { dsn, reason: text }),
        TAG_PERM => Ok(Outcome::Bounced { dsn, reason: text }),
        other => Err(format!("report tag {other} is not an outcome")),
    }
}

fn cut(s: &str, max: usize) -> &str {
    if s.len() <= max {
        return s;
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}

fn frame(tag: u8, dsn: &str, text: &str) -> Vec<u8> {
    let dsn = cut(dsn, 64);
    let text = cut(text, MAX_REPORT_TEXT);
    let mut out = Vec::with_capacity(9 + dsn.len() + text.len());
    out.push(tag);
    for part in [dsn, text] {
        // Both lengths are bounded above, so they fit in a u32.
        out.extend_from_slice(&(part.len() as u32).to_be_bytes());
        out.extend_from_slice(part.as_bytes());
    }
    out
}

fn unframe(buf: &[u8]) -> Result<(u8, String, String), String> {
    let (&tag, mut rest) = buf.split_first().ok_or("empty report")?;
    let mut parts = Vec::with_capacity(2);
    for (what, max) in [("dsn", 64), ("text", MAX_REPORT_TEXT)] {
        if rest.len() < 4 {
            return Err(format!("report truncated before the {what} length"));
        }
        let (len, tail) = rest.split_at(4);
        let len = u32::from_be_bytes([len[0], len[1], len[2], len[3]]) as usize;
        if len > max {
            return Err(format!("report {what} too long ({len} bytes)"));
        }
        if tail.len() < len {
            return Err(format!("report truncated in the {what}"));
        }
        let (bytes, tail) = tail.split_at(len);
        let s =
            String::from_utf8(bytes.to_vec()).map_err(|_| format!("report {what} is not UTF-8"))?;
        parts.push(s);
        rest = tail;
    }
    if !rest.is_empty() {
        return Err(format!("{} bytes after the report", rest.len()));
    }
    let text = parts.pop().unwrap_or_default();
    let dsn = parts.pop().unwrap_or_default();
    Ok((tag, dsn, text))
}

/// Runs `work` in a child process that has become `id`, and returns what it
/// reported. Blocks until the child exits. Any failure to fork, to switch
/// users, or to get a well-formed report is a temporary failure (4.3.0).
///
/// The caller must be the only thread that can be holding locks the child
/// needs (see the module header): local calls this from its
/// single-threaded delivery code.
pub fn run_as_user(id: &Identity, work: impl FnOnce() -> Report) -> Report {
    if id.uid == 0 {
        return Report::Failed(DeliveryError::temp(
            "4.3.0",
            "internal error: refusing to deliver as root",
        ));
    }
    // Everything that allocates or may fail is prepared before the fork,
    // including the supplementary groups (getgrouplist reads the group
    // database: done here, the child need not load NSS modules).
    let gid = Gid::from_raw(id.gid);
    let groups = match &id.login {
        Some(l) => match CString::new(l.as_str()) {
            Ok(c) => match nix::unistd::getgrouplist(&c, gid) {
                Ok(g) => g,
                Err(e) => {
                    return Report::Failed(DeliveryError::temp(
                        "4.3.0",
                        format!("cannot find the groups of {l}: {e}"),
                    ));
                }
            },
            Err(_) => {
                return Report::Failed(DeliveryError::temp(
                    "4.3.0",
                    format!("bad login name {l:?}"),
                ));
            }
        },
        None => vec![gid],
    };
    let (rd, wr) = match nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC) {
        Ok(p) => p,
        Err(e) => {
            return Report::Failed(DeliveryError::temp(
                "4.3.0",
                format!("cannot create a pipe for the delivery process: {e}"),
            ));
        }
    };
    // SAFETY: see the module header: no other thread of this process can
    // hold a lock the child uses; the child only switches ids, runs `work`
    // (blocking file and process code), writes to the pipe and _exits.
    match unsafe { nix::unistd::fork() } {
        Err(e) => Report::Failed(DeliveryError::temp(
            "4.3.0",
            format!("cannot fork a delivery process: {e}"),
        )),
        Ok(ForkResult::Child) => {
            drop(rd);
            child(id, &groups, wr, work)
        }
        Ok(ForkResult::Parent { child }) => {
            drop(wr);
            let mut buf = Vec::new();
            let read = std::fs::File::from(rd)
                .take(MAX_REPORT_TEXT as u64 + 1024)
                .read_to_end(&mut buf);
            let status = loop {
                match waitpid(child, None) {
                    Err(nix::errno::Errno::EINTR) => continue,
                    other => break other,
                }
            };
            let failed = |why: String| {
                Report::Failed(DeliveryError::temp(
                    "4.3.0",
                    format!("delivery process for uid {}: {why}", id.uid),
                ))
            };
            match status {
                Ok(WaitStatus::Exited(_, 0)) => {}
                Ok(WaitStatus::Exited(_, code)) => return failed(format!("exit status {code}")),
                Ok(WaitStatus::Signaled(_, sig, _)) => {
                    return failed(format!("killed by signal {sig}"));
                }
                Ok(other) => return failed(format!("unexpected wait status {other:?}")),
                Err(e) => return failed(format!("wait: {e}")),
            }
            if let Err(e) = read {
                return failed(format!("reading its report: {e}"));
            }
            match decode_report(&buf) {
                Ok(r) => r,
                Err(e) => failed(format!("bad report: {e}")),
            }
        }
    }
}

/// Exit codes of the child when it cannot even report.
const EXIT_REPORT_FAILED: i32 = 70;
const EXIT_PANIC: i32 = 71;

/// The child side of [`run_as_user`]: never returns.
fn child(id: &Identity, groups: &[Gid], wr: OwnedFd, work: impl FnOnce() -> Report) -> ! {
    let report = match become_user(id, groups) {
        Ok(()) => match std::panic::catch_unwind(std::panic::AssertUnwindSafe(work)) {
            Ok(r) => r,
            Err(_) => exit_now(EXIT_PANIC),
        },
        Err(why) => Report::Failed(DeliveryError::temp(
            "4.3.0",
            format!("cannot switch to uid {} gid {}: {why}", id.uid, id.gid),
        )),
    };
    let mut pipe = std::fs::File::from(wr);
    let code = match pipe.write_all(&encode_report(&report)) {
        Ok(()) => 0,
        Err(_) => EXIT_REPORT_FAILED,
    };
    exit_now(code)
}

/// Ends the child at once: no destructors, no atexit handlers, no stdio
/// flushing of the parent's buffers.
fn exit_now(code: i32) -> ! {
    // SAFETY: _exit is async-signal-safe and always sound to call.
    unsafe { libc::_exit(code) }
}

/// In the child: reset signals, hide descriptors from exec'd programs,
/// clear the environment, switch ids irrevocably and verify.
fn become_user(id: &Identity, groups: &[Gid]) -> Result<(), String> {
    use nix::sys::signal::{SigHandler, Signal, signal};
    for sig in Signal::iterator() {
        if matches!(sig, Signal::SIGKILL | Signal::SIGSTOP | Signal::SIGPIPE) {
            continue;
        }
        // SAFETY: installing SIG_DFL runs no Rust code in a handler.
        let _ = unsafe { signal(sig, SigHandler::SigDfl) };
    }
    cloexec_from(3);
    // SAFETY: this process has one thread (the forked child), so nothing
    // reads the environment concurrently.
    unsafe { libc::clearenv() };
    nix::sys::stat::umask(nix::sys::stat::Mode::from_bits_truncate(0o077));
    let gid = Gid::from_raw(id.gid);
    let uid = Uid::from_raw(id.uid);
    nix::unistd::setgroups(groups).map_err(|e| format!("setgroups: {e}"))?;
    nix::unistd::setresgid(gid, gid, gid).map_err(|e| format!("setresgid: {e}"))?;
    nix::unistd::setresuid(uid, uid, uid).map_err(|e| format!("setresuid: {e}"))?;
    let ids = nix::unistd::getresuid().map_err(|e| format!("getresuid: {e}"))?;
    let gids = nix::unistd::getresgid().map_err(|e| format!("getresgid: {e}"))?;
    if [ids.real, ids.effective, ids.saved] != [uid; 3]
        || [gids.real, gids.effective, gids.saved] != [gid; 3]
    {
        return Err("ids did not change".into());
    }
    if nix::unistd::setuid(Uid::from_raw(0)).is_ok() {
        return Err("root could be regained".into());
    }
    nix::unistd::chdir("/").map_err(|e| format!("chdir /: {e}"))?;
    Ok(())
}

/// Marks every descriptor >= `first` close-on-exec (close_range when the
/// kernel has it, else one fcntl per possible descriptor).
fn cloexec_from(first: i32) {
    // SAFETY: close_range with CLOSE_RANGE_CLOEXEC only sets flags.
    let r = unsafe {
        libc::syscall(
            libc::SYS_close_range,
            first as libc::c_uint,
            libc::c_uint::MAX,
            libc::CLOSE_RANGE_CLOEXEC,
        )
    };
    if r == 0 {
        return;
    }
    let max = nix::sys::resource::getrlimit(nix::sys::resource::Resource::RLIMIT_NOFILE)
        .map(|(soft, _)| soft.min(65536) as i32)
        .unwrap_or(1024);
    for fd in first..max {
        // SAFETY: F_GETFD/F_SETFD on a descriptor number only change its
        // flags; a closed number returns EBADF.
        unsafe {
            let flags = libc::fcntl(fd, libc::F_GETFD);
            if flags >= 0 {
                libc::fcntl(fd, libc::F_SETFD, flags | libc::FD_CLOEXEC);
            }
        }
    }
}

/// Reads a `.forward` or `:include:` file if it is safe, as the current
/// process user (in the child, the recipient). Refused, with the reason in
/// [`Report::Skipped`]: a symlink or anything but a regular file, a file
/// owned by anyone but `owner` or root, a group- or world-writable file, a
/// file in a group- or world-writable directory without the sticky bit, and
/// a file bigger than [`MAX_REPORT_TEXT`]. A missing file is
/// `Skipped("")`; a file that cannot be examined for lack of permission is
/// skipped with the reason (Postfix ignores it too); other I/O errors defer.
pub fn read_user_file(path: &Path, owner: Option<u32>) -> Report {
    let shown = path.display();
    let meta = match std::fs::symlink_metadata(path) {
        Ok(m) => m,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Report::Skipped(String::new()),
        Err(e) if e.raw_os_error() == Some(libc::ENOTDIR) => return Report::Skipped(String::new()),
        Err(e) if e.raw_os_error() == Some(libc::EACCES) => {
            return Report::Skipped(format!("{shown}: cannot examine: {e}: ignored"));
        }
        Err(e) => {
            return Report::Failed(DeliveryError::temp(
                "4.3.0",
                format!("cannot examine {shown}: {e}"),
            ));
        }
    };
    if let Some(why) = unsafe_reason(path, &meta, owner) {
        return Report::Skipped(format!("{shown}: {why}: refused"));
    }
    let file = match std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK | libc::O_NOCTTY)
        .open(path)
    {
        Ok(f) => f,
        Err(e) if e.raw_os_error() == Some(libc::EACCES) => {
            return Report::Skipped(format!("{shown}: cannot open: {e}: ignored"));
        }
        Err(e) => {
            return Report::Failed(DeliveryError::temp(
                "4.3.0",
                format!("cannot open {shown}: {e}"),
            ));
        }
    };
    // The file opened must be the one examined (no swap in between).
    match file.metadata() {
        Ok(m) if m.dev() == meta.dev() && m.ino() == meta.ino() => {
            if let Some(why) = unsafe_reason(path, &m, owner) {
                return Report::Skipped(format!("{shown}: {why}: refused"));
            }
        }
        Ok(_) => return Report::Skipped(format!("{shown}: changed while being opened: refused")),
        Err(e) => {
            return Report::Failed(DeliveryError::temp(
                "4.3.0",
                format!("cannot examine {shown}: {e}"),
            ));
        }
    }
    let mut bytes = Vec::new();
    if let Err(e) = (&file)
        .take(MAX_REPORT_TEXT as u64 + 1)
        .read_to_end(&mut bytes)
    {
        return Report::Failed(DeliveryError::temp(
            "4.3.0",
            format!("cannot read {shown}: {e}"),
        ));
    }
    if bytes.len() > MAX_REPORT_TEXT {
        return Report::Skipped(format!(
            "{shown}: larger than {MAX_REPORT_TEXT} bytes: refused"
        ));
    }
    match String::from_utf8(bytes) {
        Ok(s) => Report::Done(s),
        Err(_) => Report::Failed(DeliveryError::temp(
            "4.3.0",
            format!("{shown}: not valid UTF-8"),
        )),
    }
}

/// Why a user file (`meta` from lstat or fstat) must not be trusted, if it
/// must not.
fn unsafe_reason(path: &Path, meta: &std::fs::Metadata, owner: Option<u32>) -> Option<String> {
    if meta.file_type().is_symlink() {
        return Some("is a symbolic link".into());
    }
    if !meta.is_file() {
        return Some("not a regular file".into());
    }
    if meta.uid() != 0 && Some(meta.uid()) != owner {
        return Some(match owner {
            Some(o) => format!("owned by uid {}, not by uid {o} or root", meta.uid()),
            None => format!("owned by uid {}, not by root", meta.uid()),
        });
    }
    let mode = meta.permissions().mode();
    if mode & 0o022 != 0 {
        return Some(format!(
            "group or world writable (mode {:04o})",
            mode & 0o7777
        ));
    }
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("/"),
    };
    match std::fs::metadata(dir) {
        Ok(d) => {
            let dmode = d.permissions().mode();
            if dmode & 0o022 != 0 && dmode & 0o1000 == 0 {
                return Some(format!(
                    "directory {} is group or world writable without the sticky bit (mode {:04o})",
                    dir.display(),
                    dmode & 0o7777
                ));
            }
        }
        Err(e) => return Some(format!("cannot examine directory {}: {e}", dir.display())),
    }
    None
}

/// Creates the spool mailbox `path` for a user if it does not exist: as
/// root, never following a symlink and never opening an existing file
/// (O_CREAT|O_EXCL|O_NOFOLLOW), mode 0600, then fchown to `uid` and group
/// `gid` (Postfix's /var/mail/USER: the user, group mail). The delivery
/// child then appends to it as the user.
pub fn create_spool_mailbox(path: &Path, uid: u32, gid: u32) -> Result<(), DeliveryError> {
    let f = match std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .custom_flags(libc::O_NOFOLLOW)
        .open(path)
    {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => return Ok(()),
        Err(e) => return Err(DeliveryError::io(&format!("create {}", path.display()), &e)),
    };
    let owned = nix::unistd::fchown(&f, Some(Uid::from_raw(uid)), Some(Gid::from_raw(gid)))
        .and_then(|_| nix::sys::stat::fchmod(&f, nix::sys::stat::Mode::from_bits_truncate(0o600)));
    if let Err(e) = owned {
        // Do not leave a root-owned mailbox the user cannot write.
        let _ = std::fs::remove_file(path);
        return Err(DeliveryError::temp(
            "4.3.0",
            format!("cannot give {} to uid {uid}: {e}", path.display()),
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn outcomes_round_trip() {
        for o in [
            Outcome::Sent {
                detail: "delivered to maildir".into(),
            },
            Outcome::Deferred {
                dsn: "4.2.0".into(),
                reason: "disk on fire: ünïcode".into(),
            },
            Outcome::Bounced {
                dsn: "5.1.1".into(),
                reason: String::new(),
            },
        ] {
            let buf = encode_outcome(&o);
            assert_eq!(decode_outcome(&buf).unwrap(), o);
        }
        // The exact layout: tag, len+dsn, len+text.
        let buf = encode_outcome(&Outcome::Bounced {
            dsn: "5.7.1".into(),
            reason: "no".into(),
        });
        assert_eq!(buf, b"\x02\0\0\0\x055.7.1\0\0\0\x02no");
    }

    #[test]
    fn reports_round_trip() {
        for r in [
            Report::Done("content\nof a file\n".into()),
            Report::Failed(DeliveryError::temp("4.3.0", "x")),
            Report::Failed(DeliveryError::perm("5.2.2", "full")),
            Report::Skipped(String::new()),
            Report::Skipped("/h/.forward: is a symbolic link: refused".into()),
        ] {
            assert_eq!(decode_report(&encode_report(&r)).unwrap(), r);
        }
        // A skip is not an outcome.
        assert!(decode_outcome(&encode_report(&Report::Skipped("x".into()))).is_err());
    }

    #[test]
    fn malformed_frames_are_refused() {
        let good = encode_outcome(&Outcome::Deferred {
            dsn: "4.3.0".into(),
            reason: "why".into(),
        });
        assert!(decode_report(&[]).is_err());
        // Every truncation fails.
        for n in 1..good.len() {
            assert!(decode_report(&good[..n]).is_err(), "prefix {n} accepted");
        }
        // Trailing garbage, an unknown tag, a lying length, bad UTF-8.
        let mut long = good.clone();
        long.push(0);
        assert!(decode_report(&long).is_err());
        let mut tag = good.clone();
        tag[0] = 9;
        assert!(decode_report(&tag).unwrap_err().contains("tag"));
        assert!(
            decode_report(b"\x00\xff\xff\xff\xff")
                .unwrap_err()
                .contains("too long")
        );
        assert!(
            decode_report(b"\x00\0\0\0\0\0\0\0\x01\xff")
                .unwrap_err()
                .contains("UTF-8")
        );
        // Oversized text is cut by the encoder, so it still decodes.
        let big = "é".repeat(MAX_REPORT_TEXT / 2 + 10);
        match decode_report(&encode_report(&Report::Done(big))).unwrap() {
            Report::Done(t) => assert!(t.len() <= MAX_REPORT_TEXT && t.len() > MAX_REPORT_TEXT - 4),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn user_file_safety() {
        let d = tempfile::tempdir().unwrap();
        let me = nix::unistd::geteuid().as_raw();
        let p = d.path().join("forward");
        assert_eq!(read_user_file(&p, Some(me)), Report::Skipped(String::new()));
        std::fs::write(&p, "joe\n").unwrap();
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o644)).unwrap();
        std::fs::set_permissions(d.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
        assert_eq!(read_user_file(&p, Some(me)), Report::Done("joe\n".into()));
        // Group or world writable.
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o664)).unwrap();
        let r = read_user_file(&p, Some(me));
        assert!(
            matches!(&r, Report::Skipped(w) if w.contains("writable")),
            "{r:?}"
        );
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o600)).unwrap();
        // A writable directory without the sticky bit; with it, fine.
        std::fs::set_permissions(d.path(), std::fs::Permissions::from_mode(0o777)).unwrap();
        let r = read_user_file(&p, Some(me));
        assert!(
            matches!(&r, Report::Skipped(w) if w.contains("sticky")),
            "{r:?}"
        );
        std::fs::set_permissions(d.path(), std::fs::Permissions::from_mode(0o1777)).unwrap();
        assert_eq!(read_user_file(&p, Some(me)), Report::Done("joe\n".into()));
        std::fs::set_permissions(d.path(), std::fs::Permissions::from_mode(0o700)).unwrap();
        // A symlink, even to a good file.
        let l = d.path().join("link");
        std::os::unix::fs::symlink(&p, &l).unwrap();
        let r = read_user_file(&l, Some(me));
        assert!(
            matches!(&r, Report::Skipped(w) if w.contains("symbolic link")),
            "{r:?}"
        );
        // Not a regular file.
        let r = read_user_file(d.path(), Some(me));
        assert!(
            matches!(&r, Report::Skipped(w) if w.contains("regular")),
            "{r:?}"
        );
        // Owned by someone else (only checkable when that someone is not root).
        if me != 0 {
            let r = read_user_file(&p, Some(me + 1));
            assert!(
                matches!(&r, Report::Skipped(w) if w.contains("owned by")),
                "{r:?}"
            );
        }
    }

    #[test]
    fn child_switches_and_reports() {
        if !nix::unistd::geteuid().is_root() {
            eprintln!("skipped: switching users needs root");
            return;
        }
        let Ok(Some(nobody)) = nix::unistd::User::from_name("nobody") else {
            eprintln!("skipped: no user nobody");
            return;
        };
        let id = Identity {
            uid: nobody.uid.as_raw(),
            gid: nobody.gid.as_raw(),
            login: Some("nobody".into()),
        };
        let r = run_as_user(&id, || {
            let env: Vec<_> = std::env::vars().collect();
            Report::Done(format!(
                "{} {} {} {}",
                nix::unistd::getuid(),
                nix::unistd::geteuid(),
                nix::unistd::getegid(),
                env.len()
            ))
        });
        assert_eq!(
            r,
            Report::Done(format!("{} {} {} 0", nobody.uid, nobody.uid, nobody.gid))
        );
        // Supplementary groups: the login's (from the group database), or
        // only the primary group without a login.
        let groups_in_child = |id: &Identity| {
            run_as_user(id, || {
                let mut g: Vec<u32> = nix::unistd::getgroups()
                    .unwrap_or_default()
                    .iter()
                    .map(|g| g.as_raw())
                    .collect();
                g.sort();
                Report::Done(format!("{g:?}"))
            })
        };
        let mut want: Vec<u32> = nix::unistd::getgrouplist(c"nobody", nobody.gid)
            .unwrap()
            .iter()
            .map(|g| g.as_raw())
            .collect();
        want.sort();
        want.dedup();
        assert_eq!(groups_in_child(&id), Report::Done(format!("{want:?}")));
        let no_login = Identity {
            login: None,
            ..id.clone()
        };
        assert_eq!(
            groups_in_child(&no_login),
            Report::Done(format!("{:?}", vec![nobody.gid.as_raw()]))
        );
        // Failures and panics come back as deferrals.
        let r = run_as_user(&id, || Report::Failed(DeliveryError::perm("5.2.2", "full")));
        assert_eq!(r, Report::Failed(DeliveryError::perm("5.2.2", "full")));
        let r = run_as_user(&id, || panic!("boom"));
        assert!(
            matches!(&r, Report::Failed(e) if e.temporary && e.reason.contains("exit status")),
            "{r:?}"
        );
        // Root is refused outright.
        let root = Identity {
            uid: 0,
            gid: 0,
            login: None,
        };
        let r = run_as_user(&root, || Report::Done("as root".into()));
        assert!(matches!(&r, Report::Failed(e) if e.temporary), "{r:?}");
    }
}
