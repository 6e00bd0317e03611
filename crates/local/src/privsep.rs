//! Delivering as the recipient: one forked child per final delivery.
//!
//! When `local` runs as root (and privilege_separation is on), every final
//! delivery — writing a Maildir or mbox, running a `|command`, writing a
//! `/file`, reading a `.forward` or `:include:` file — happens in a child
//! process forked for it, which first becomes the recipient through the
//! service skeleton's audited path, [`postern_service::run_as`] (clean
//! environment, default signal handlers, descriptors above 2 close-on-exec,
//! umask 077, setgroups, setresgid and setresuid to the same id three
//! times, checks that the ids changed and root cannot be regained, chdir /;
//! its module documentation is the full list). The child performs the work
//! and sends a [`Report`] back as its result (one frame: a tag byte, a
//! length-prefixed DSN and a length-prefixed text).
//!
//! SECURITY:
//! - The child never runs as uid 0: an identity with uid 0 is refused
//!   (the caller maps root to default_privs before asking).
//! - The parent trusts nothing from the child but a well-formed frame: a
//!   short, malformed or oversized report, a failed switch, or a child that
//!   died, becomes a deferral (4.3.0), never a "sent".
//! - fork() is only sound because the caller (local's service handler, on
//!   a current_thread runtime) has no other thread that could hold a lock
//!   the child needs; the child does not log (its warnings travel in the
//!   report) and does not touch the runtime.

use std::io::Read;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::Path;

use postern_service::run_as;

use crate::mailbox::{DeliveryError, EnhancedCode};
use crate::{Outcome, StatusClass};

pub use crate::mailbox::create_spool_mailbox;
/// The user a delivery child becomes (the skeleton's [`run_as::Identity`]).
/// Built by the caller from the recipient (passwd entry, users_file line,
/// or default_privs).
pub use postern_service::run_as::Identity;

/// Largest text a report may carry (a .forward or :include: file, or a
/// reason): a bigger frame is refused by the decoder and a bigger user file
/// is refused by the reader.
pub const MAX_REPORT_TEXT: usize = 4 << 20;

/// Tag bytes of a report frame.
const TAG_DONE: u8 = 0;
const TAG_TEMP: u8 = 1;
const TAG_PERM: u8 = 2;
const TAG_SKIPPED: u8 = 3;

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

/// Encodes a report as one frame: tag byte, the enhanced code as three
/// numbers (u8 class, u16 big-endian subject and detail; 0.0.0 for a
/// report without one), u32 big-endian length + text. Texts longer than
/// [`MAX_REPORT_TEXT`] are cut (at a character boundary) so that the frame
/// always decodes.
pub fn encode_report(r: &Report) -> Vec<u8> {
    const NONE: EnhancedCode = EnhancedCode(0, 0, 0);
    let (tag, dsn, text) = match r {
        Report::Done(t) => (TAG_DONE, NONE, t.as_str()),
        Report::Failed(e) if e.temporary => (TAG_TEMP, e.dsn, e.reason.as_str()),
        Report::Failed(e) => (TAG_PERM, e.dsn, e.reason.as_str()),
        Report::Skipped(t) => (TAG_SKIPPED, NONE, t.as_str()),
    };
    frame(tag, dsn, text)
}

/// Decodes one frame made by [`encode_report`]; the buffer must hold
/// exactly one frame.
pub fn decode_report(buf: &[u8]) -> Result<Report, String> {
    let (tag, dsn, text) = unframe(buf)?;
    Ok(match tag {
        TAG_DONE => Report::Done(text),
        TAG_TEMP | TAG_PERM => Report::Failed(failure(tag, dsn, text)?),
        TAG_SKIPPED => Report::Skipped(text),
        other => return Err(format!("unknown report tag {other}")),
    })
}

/// A failure tag's error, refused unless the code is valid and its class
/// is the tag's (4 for temporary, 5 for permanent).
fn failure(tag: u8, dsn: EnhancedCode, text: String) -> Result<DeliveryError, String> {
    let class = if tag == TAG_TEMP { 4 } else { 5 };
    if !dsn.is_valid() || dsn.0 != class {
        return Err(format!(
            "report status code {dsn} is not a {class}.x.x code"
        ));
    }
    Ok(DeliveryError {
        temporary: tag == TAG_TEMP,
        dsn,
        reason: text,
    })
}

/// Encodes an [`Outcome`] in the same frame format (Sent = tag 0 with the
/// detail and 2.0.0, Deferred = 1, Bounced = 2, each with code and reason).
pub fn encode_outcome(o: &Outcome) -> Vec<u8> {
    let tag = match o.class() {
        StatusClass::Success => TAG_DONE,
        StatusClass::Temporary => TAG_TEMP,
        StatusClass::Permanent => TAG_PERM,
    };
    frame(tag, o.code(), o.text())
}

/// Decodes a frame made by [`encode_outcome`]; a "skipped" frame is not an
/// outcome and is refused.
pub fn decode_outcome(buf: &[u8]) -> Result<Outcome, String> {
    let (tag, dsn, text) = unframe(buf)?;
    match tag {
        // A plain report's "done" carries no code (0.0.0): 2.0.0.
        TAG_DONE if dsn == EnhancedCode(0, 0, 0) => Ok(Outcome::sent(text)),
        TAG_DONE => Outcome::new(StatusClass::Success, dsn, text)
            .map_err(|_| format!("report status code {dsn} is not a 2.x.x code")),
        TAG_TEMP | TAG_PERM => Ok(failure(tag, dsn, text)?.into()),
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

fn frame(tag: u8, dsn: EnhancedCode, text: &str) -> Vec<u8> {
    let text = cut(text, MAX_REPORT_TEXT);
    let mut out = Vec::with_capacity(10 + text.len());
    out.push(tag);
    out.push(dsn.0);
    out.extend_from_slice(&dsn.1.to_be_bytes());
    out.extend_from_slice(&dsn.2.to_be_bytes());
    // The length is bounded above, so it fits in a u32.
    out.extend_from_slice(&(text.len() as u32).to_be_bytes());
    out.extend_from_slice(text.as_bytes());
    out
}

fn unframe(buf: &[u8]) -> Result<(u8, EnhancedCode, String), String> {
    let (&tag, rest) = buf.split_first().ok_or("empty report")?;
    if rest.len() < 5 {
        return Err("report truncated in the status code".into());
    }
    let (code, rest) = rest.split_at(5);
    let dsn = EnhancedCode(
        code[0],
        u16::from_be_bytes([code[1], code[2]]),
        u16::from_be_bytes([code[3], code[4]]),
    );
    if rest.len() < 4 {
        return Err("report truncated before the text length".into());
    }
    let (len, tail) = rest.split_at(4);
    let len = u32::from_be_bytes([len[0], len[1], len[2], len[3]]) as usize;
    if len > MAX_REPORT_TEXT {
        return Err(format!("report text too long ({len} bytes)"));
    }
    if tail.len() < len {
        return Err("report truncated in the text".into());
    }
    let (bytes, tail) = tail.split_at(len);
    let text =
        String::from_utf8(bytes.to_vec()).map_err(|_| "report text is not UTF-8".to_string())?;
    if !tail.is_empty() {
        return Err(format!("{} bytes after the report", tail.len()));
    }
    Ok((tag, dsn, text))
}

/// The frame overhead a report may add to [`MAX_REPORT_TEXT`]: what the
/// parent accepts from a child.
const MAX_REPORT_FRAME: usize = MAX_REPORT_TEXT + 1024;

/// Runs `work` in a child process that has become `id`
/// ([`run_as::run`] with [`run_as::Options::delivery`]), and returns what
/// it reported. Blocks until the child exits. Any failure to fork, to
/// switch users, or to get a well-formed report is a temporary failure
/// (4.3.0).
///
/// The caller must be the only thread that can be holding locks the child
/// needs (see the module header): local calls this from its
/// single-threaded delivery code.
pub fn run_as_user(id: &Identity, work: impl FnOnce() -> Report) -> Report {
    let temp = |why: String| Report::Failed(DeliveryError::temp(EnhancedCode(4, 3, 0), why));
    let child_failed = |why: String| temp(format!("delivery process for uid {}: {why}", id.uid));
    match run_as::run(id, run_as::Options::delivery(MAX_REPORT_FRAME), || {
        encode_report(&work())
    }) {
        Ok(buf) => match decode_report(&buf) {
            Ok(r) => r,
            Err(e) => child_failed(format!("bad report: {e}")),
        },
        Err(run_as::Error::Root) => temp("internal error: refusing to deliver as root".into()),
        Err(run_as::Error::Prepare(why)) | Err(run_as::Error::Switch(why)) => temp(why),
        Err(run_as::Error::Fork(e)) => temp(format!("cannot fork a delivery process: {e}")),
        Err(run_as::Error::Child(why)) => child_failed(why),
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
                EnhancedCode(4, 3, 0),
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
                EnhancedCode(4, 3, 0),
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
                EnhancedCode(4, 3, 0),
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
            EnhancedCode(4, 3, 0),
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
            EnhancedCode(4, 3, 0),
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn outcomes_round_trip() {
        for o in [
            Outcome::sent("delivered to maildir"),
            Outcome::temporary(2, 0, "disk on fire: ünïcode"),
            Outcome::permanent(1, 1, ""),
        ] {
            let buf = encode_outcome(&o);
            assert_eq!(decode_outcome(&buf).unwrap(), o);
        }
        // The exact layout: tag, the code as three numbers, len+text.
        let buf = encode_outcome(&Outcome::permanent(7, 1, "no"));
        assert_eq!(buf, b"\x02\x05\0\x07\0\x01\0\0\0\x02no");
    }

    #[test]
    fn reports_round_trip() {
        for r in [
            Report::Done("content\nof a file\n".into()),
            Report::Failed(DeliveryError::temp(EnhancedCode(4, 3, 0), "x")),
            Report::Failed(DeliveryError::perm(EnhancedCode(5, 2, 2), "full")),
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
        let good = encode_outcome(&Outcome::temporary(3, 0, "why"));
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
            decode_report(b"\x00\0\0\0\0\0\xff\xff\xff\xff")
                .unwrap_err()
                .contains("too long")
        );
        assert!(
            decode_report(b"\x00\0\0\0\0\0\0\0\0\x01\xff")
                .unwrap_err()
                .contains("UTF-8")
        );
        // A failure whose code is invalid or of the other class.
        for code in [
            b"\x09\0\x01\0\x01",
            b"\x05\0\x01\0\x01",
            b"\x04\x03\xe8\0\0",
        ] {
            let mut f = vec![TAG_TEMP];
            f.extend_from_slice(code);
            f.extend_from_slice(b"\0\0\0\0");
            assert!(
                decode_report(&f).unwrap_err().contains("status code"),
                "{code:?}"
            );
        }
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
        let r = run_as_user(&id, || {
            Report::Failed(DeliveryError::perm(EnhancedCode(5, 2, 2), "full"))
        });
        assert_eq!(
            r,
            Report::Failed(DeliveryError::perm(EnhancedCode(5, 2, 2), "full"))
        );
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
