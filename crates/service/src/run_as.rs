//! Becoming a user for one piece of work: the one audited path by which a
//! root service runs code as a mail user.
//!
//! `local` delivers as the recipient through it; the post-login processes
//! of pop3d and imapd (issue 10) will serve a session as the mailbox owner
//! through it. [`privileges`](crate::privileges) is the other half: it drops
//! a service's start-up privileges once, for the service's own user; this
//! module switches a forked child to a *mail user*, once per piece of work.
//!
//! # Who may call it
//!
//! A service that runs as root (today only `local`; master.cf unpriv `n`).
//! Without root the switch fails and the failure is reported
//! ([`Error::Switch`]); callers that run as the mailbox owner already (the
//! quickstart) do the work in-process instead. [`run`] forks: the caller
//! must not have another thread that may hold a lock the child needs (the
//! service skeleton's only other thread is the status-pipe watcher, which
//! holds none; the child must not log through `tracing` — put warnings in
//! the result). A uid of 0 is refused before anything happens
//! ([`Error::Root`]): nothing is ever run as root through this path.
//!
//! # What the child sets, in this order ([`Plan::become_user`])
//!
//! 1. every signal handler back to the default (not SIGPIPE, which stays
//!    ignored as Rust programs start with it), so a signal to the child
//!    cannot run a handler of the parent's (tokio's self-pipe);
//! 2. every descriptor above 2 close-on-exec (close_range, else fcntl), so a
//!    program the work executes inherits only stdin, stdout and stderr;
//! 3. an empty environment;
//! 4. the umask ([`Options::umask`], 077 unless asked otherwise);
//! 5. with [`Options::no_capabilities`]: an empty capability bounding set;
//! 6. setgroups (the login's groups from the group database, resolved
//!    before the fork, or only the gid), setresgid and setresuid to the same
//!    id three times;
//! 7. checks: real, effective and saved uid and gid are the target, the
//!    supplementary groups are exactly the planned ones, the effective and
//!    permitted capability sets are empty, and setuid(0) fails;
//! 8. with [`Options::no_new_privs`]: no_new_privs, checked;
//! 9. chdir to [`Options::cwd`] (as the user: the user must be able to
//!    reach it).
//!
//! # What it guarantees on failure
//!
//! The work runs only if every step above succeeded. A failed step ends the
//! child with a [`Error::Switch`] naming the step; a failure to prepare,
//! fork or wait, a child that panicked, exited non-zero or was killed, and a
//! result that is missing, malformed or larger than
//! [`Options::max_result`] are all errors for the parent, never a success.
//! The child ends with `_exit`: none of the parent's state (runtime,
//! channels, buffered writers) is flushed or dropped twice.
//!
//! # Wire format (child → parent, over a close-on-exec pipe)
//!
//! One byte, 0 = the work ran and its result follows (the rest of the
//! stream), 1 = the switch failed and a UTF-8 reason follows. The parent
//! reads at most `max_result + 1` bytes after the tag, closes the pipe, then
//! reaps the child.
#![allow(unsafe_code)]

use std::ffi::CString;
use std::fmt;
use std::io::{Read, Write};
use std::os::fd::OwnedFd;
use std::path::PathBuf;

use caps::CapSet;
use nix::errno::Errno;
use nix::sys::wait::{WaitStatus, waitpid};
use nix::unistd::{ForkResult, Gid, Uid};

/// The user a child becomes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Identity {
    /// uid for the real, effective and saved ids. Never 0.
    pub uid: u32,
    /// gid for the real, effective and saved ids.
    pub gid: u32,
    /// Login name whose supplementary groups the child gets (getgrouplist,
    /// which includes `gid`); None = no supplementary group but `gid`
    /// (users_file users, who may not be system users).
    pub login: Option<String>,
}

/// How the child is set up besides its ids. Start from [`Options::delivery`]
/// or [`Options::session`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Options {
    /// The umask of the child.
    pub umask: u32,
    /// The working directory of the child, entered after the switch.
    pub cwd: PathBuf,
    /// Set no_new_privs: programs the work executes cannot gain privileges
    /// (setuid/setgid bits and file capabilities are ignored).
    pub no_new_privs: bool,
    /// Empty the capability bounding set before the switch.
    pub no_capabilities: bool,
    /// The largest result the parent accepts, in bytes.
    pub max_result: usize,
}

impl Options {
    /// For local's deliveries: umask 077, cwd `/`, no no_new_privs (a
    /// user's `|command` may run the setgid `postdrop` through `sendmail`,
    /// as with Postfix), bounding set kept (the kernel already clears the
    /// effective and permitted sets on the switch away from root, checked).
    pub fn delivery(max_result: usize) -> Options {
        Options {
            umask: 0o077,
            cwd: PathBuf::from("/"),
            no_new_privs: false,
            no_capabilities: false,
            max_result,
        }
    }

    /// For a mail-access session as the mailbox owner (pop3d, imapd after
    /// login): umask 077, cwd `home`, no_new_privs, no capabilities at all.
    pub fn session(home: impl Into<PathBuf>, max_result: usize) -> Options {
        Options {
            umask: 0o077,
            cwd: home.into(),
            no_new_privs: true,
            no_capabilities: true,
            max_result,
        }
    }
}

/// Why work could not be run as the user, or its result not be had.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Error {
    /// The identity has uid 0: refused before anything happened.
    Root,
    /// Something needed before the fork failed (a bad login name, the
    /// group database, the pipe).
    Prepare(String),
    /// fork(2) failed.
    Fork(Errno),
    /// The child could not become the user (the step and its error); the
    /// work did not run.
    Switch(String),
    /// The child did not end well or its result could not be read: exit
    /// status, signal, wait error, read error, a missing tag, an oversized
    /// result. The work may or may not have run.
    Child(String),
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::Root => f.write_str("refusing to run as root"),
            Error::Prepare(why) | Error::Switch(why) | Error::Child(why) => f.write_str(why),
            Error::Fork(e) => write!(f, "cannot fork: {e}"),
        }
    }
}

impl std::error::Error for Error {}

/// Everything resolved before the fork, so the child only makes system
/// calls. Also usable on its own by a process that becomes the user for
/// good (a freshly forked or single-threaded post-login process):
/// [`Plan::become_user`].
#[derive(Clone, Debug)]
pub struct Plan {
    uid: Uid,
    gid: Gid,
    groups: Vec<Gid>,
    options: Options,
}

/// Tags of the child's frame.
const TAG_RESULT: u8 = 0;
const TAG_SWITCH_FAILED: u8 = 1;

/// Exit codes of the child when it cannot even report.
const EXIT_REPORT_FAILED: i32 = 70;
/// Exit code of a child whose work panicked.
pub const EXIT_PANIC: i32 = 71;

impl Plan {
    /// Resolves `id` (the login's groups, read from the group database
    /// here, so the child needs no NSS module) and checks it is not root.
    pub fn new(id: &Identity, options: Options) -> Result<Plan, Error> {
        if id.uid == 0 {
            return Err(Error::Root);
        }
        let gid = Gid::from_raw(id.gid);
        let groups = match &id.login {
            Some(l) => {
                let c = CString::new(l.as_str())
                    .map_err(|_| Error::Prepare(format!("bad login name {l:?}")))?;
                nix::unistd::getgrouplist(&c, gid)
                    .map_err(|e| Error::Prepare(format!("cannot find the groups of {l}: {e}")))?
            }
            None => vec![gid],
        };
        Ok(Plan {
            uid: Uid::from_raw(id.uid),
            gid,
            groups,
            options,
        })
    }

    /// The supplementary groups the switch sets.
    pub fn groups(&self) -> Vec<u32> {
        self.groups.iter().map(|g| g.as_raw()).collect()
    }

    /// Becomes the user in this process, irrevocably (steps 1–9 of the
    /// module documentation). Only for a process with one thread (a forked
    /// child): the environment is cleared and ids are per thread in the
    /// kernel. On error the process may be half switched and must end
    /// without doing the work.
    pub fn become_user(&self) -> Result<(), String> {
        use nix::sys::signal::{SigHandler, Signal, signal};
        for sig in Signal::iterator() {
            if matches!(sig, Signal::SIGKILL | Signal::SIGSTOP | Signal::SIGPIPE) {
                continue;
            }
            // SAFETY: installing SIG_DFL runs no Rust code in a handler.
            let _ = unsafe { signal(sig, SigHandler::SigDfl) };
        }
        cloexec_from(3);
        // SAFETY: this process has one thread (see above), so nothing reads
        // the environment concurrently.
        unsafe { libc::clearenv() };
        nix::sys::stat::umask(nix::sys::stat::Mode::from_bits_truncate(self.options.umask));
        if self.options.no_capabilities {
            caps::clear(None, CapSet::Bounding)
                .map_err(|e| format!("cannot drop the bounding set: {e}"))?;
        }
        let (uid, gid) = (self.uid, self.gid);
        nix::unistd::setgroups(&self.groups).map_err(|e| format!("setgroups: {e}"))?;
        nix::unistd::setresgid(gid, gid, gid).map_err(|e| format!("setresgid: {e}"))?;
        nix::unistd::setresuid(uid, uid, uid).map_err(|e| format!("setresuid: {e}"))?;
        let ids = nix::unistd::getresuid().map_err(|e| format!("getresuid: {e}"))?;
        let gids = nix::unistd::getresgid().map_err(|e| format!("getresgid: {e}"))?;
        if [ids.real, ids.effective, ids.saved] != [uid; 3]
            || [gids.real, gids.effective, gids.saved] != [gid; 3]
        {
            return Err("ids did not change".into());
        }
        let mut have = nix::unistd::getgroups().map_err(|e| format!("getgroups: {e}"))?;
        let mut want = self.groups.clone();
        have.sort_by_key(|g| g.as_raw());
        have.dedup();
        want.sort_by_key(|g| g.as_raw());
        want.dedup();
        if have != want {
            return Err("supplementary groups did not change".into());
        }
        for set in [CapSet::Effective, CapSet::Permitted] {
            let left = caps::read(None, set).map_err(|e| format!("read {set:?}: {e}"))?;
            if !left.is_empty() {
                return Err(format!("capabilities left in {set:?}: {left:?}"));
            }
        }
        if nix::unistd::setuid(Uid::from_raw(0)).is_ok() {
            return Err("root could be regained".into());
        }
        if self.options.no_new_privs {
            nix::sys::prctl::set_no_new_privs()
                .map_err(|e| format!("cannot set no_new_privs: {e}"))?;
            if !nix::sys::prctl::get_no_new_privs().unwrap_or(false) {
                return Err("no_new_privs is not set".into());
            }
        }
        let cwd = &self.options.cwd;
        nix::unistd::chdir(cwd).map_err(|e| format!("chdir {}: {e}", cwd.display()))?;
        Ok(())
    }
}

/// Runs `work` in a child process that has become `id` (set up per
/// `options`), and returns the bytes it produced. Blocks until the child
/// exited. See the module documentation for who may call it and what an
/// error means; `Ok` means the switch succeeded, the work ran to its end and
/// the child exited 0.
pub fn run(
    id: &Identity,
    options: Options,
    work: impl FnOnce() -> Vec<u8>,
) -> Result<Vec<u8>, Error> {
    let plan = Plan::new(id, options)?;
    let (rd, wr) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC)
        .map_err(|e| Error::Prepare(format!("cannot create a pipe: {e}")))?;
    // SAFETY: see "Who may call it": no other thread of this process holds
    // a lock the child uses; the child only switches ids, runs `work`,
    // writes to the pipe and _exits.
    match unsafe { nix::unistd::fork() } {
        Err(e) => Err(Error::Fork(e)),
        Ok(ForkResult::Child) => {
            drop(rd);
            child(&plan, wr, work)
        }
        Ok(ForkResult::Parent { child }) => {
            drop(wr);
            let mut buf = Vec::new();
            // The read end is closed at the end of this statement: a child
            // writing more than the limit gets EPIPE instead of blocking.
            let read = std::fs::File::from(rd)
                .take(plan.options.max_result as u64 + 2)
                .read_to_end(&mut buf);
            let status = loop {
                match waitpid(child, None) {
                    Err(Errno::EINTR) => continue,
                    other => break other,
                }
            };
            let failed = |why: String| Err(Error::Child(why));
            let tag = buf.first().copied();
            match status {
                Ok(WaitStatus::Exited(_, 0)) => {}
                Ok(WaitStatus::Exited(_, code)) => {
                    if tag == Some(TAG_SWITCH_FAILED) {
                        return Err(switch_error(&buf));
                    }
                    return failed(format!("exit status {code}"));
                }
                Ok(WaitStatus::Signaled(_, sig, _)) => {
                    return failed(format!("killed by signal {sig}"));
                }
                Ok(other) => return failed(format!("unexpected wait status {other:?}")),
                Err(e) => return failed(format!("wait: {e}")),
            }
            if let Err(e) = read {
                return failed(format!("reading its result: {e}"));
            }
            match tag {
                Some(TAG_RESULT) if buf.len() - 1 <= plan.options.max_result => {
                    buf.remove(0);
                    Ok(buf)
                }
                Some(TAG_RESULT) => failed(format!(
                    "result larger than {} bytes",
                    plan.options.max_result
                )),
                Some(TAG_SWITCH_FAILED) => Err(switch_error(&buf)),
                Some(other) => failed(format!("unknown result tag {other}")),
                None => failed("no result".into()),
            }
        }
    }
}

fn switch_error(buf: &[u8]) -> Error {
    Error::Switch(String::from_utf8_lossy(&buf[1..]).into_owned())
}

/// The child side of [`run`]: never returns.
fn child(plan: &Plan, wr: OwnedFd, work: impl FnOnce() -> Vec<u8>) -> ! {
    let mut pipe = std::fs::File::from(wr);
    let (frame, code) = match plan.become_user() {
        Ok(()) => match std::panic::catch_unwind(std::panic::AssertUnwindSafe(work)) {
            Ok(mut r) => {
                r.insert(0, TAG_RESULT);
                (r, 0)
            }
            Err(_) => exit_now(EXIT_PANIC),
        },
        Err(why) => {
            let mut f = vec![TAG_SWITCH_FAILED];
            f.extend_from_slice(
                format!("cannot switch to uid {} gid {}: {why}", plan.uid, plan.gid).as_bytes(),
            );
            (f, 1)
        }
    };
    let code = match pipe.write_all(&frame) {
        Ok(()) => code,
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

#[cfg(test)]
mod tests {
    use super::*;

    fn proc_status(name: &str) -> String {
        let s = std::fs::read_to_string("/proc/self/status").unwrap();
        s.lines()
            .find_map(|l| l.strip_prefix(name).and_then(|r| r.strip_prefix(':')))
            .map(|v| v.trim().to_string())
            .unwrap_or_default()
    }

    /// The user nobody, when the tests run as root (else None: skipped).
    fn nobody() -> Option<nix::unistd::User> {
        if !nix::unistd::geteuid().is_root() {
            eprintln!("skipped: switching users needs root");
            return None;
        }
        match nix::unistd::User::from_name("nobody") {
            Ok(Some(u)) => Some(u),
            _ => {
                eprintln!("skipped: no user nobody");
                None
            }
        }
    }

    fn id_of(u: &nix::unistd::User, login: bool) -> Identity {
        Identity {
            uid: u.uid.as_raw(),
            gid: u.gid.as_raw(),
            login: login.then(|| u.name.clone()),
        }
    }

    #[test]
    fn root_is_refused_before_anything_runs() {
        let id = Identity {
            uid: 0,
            gid: 0,
            login: None,
        };
        let ran = std::cell::Cell::new(false);
        let r = run(&id, Options::delivery(100), || {
            ran.set(true);
            b"as root".to_vec()
        });
        assert_eq!(r, Err(Error::Root));
        assert!(!ran.get());
        assert!(matches!(
            Plan::new(&id, Options::delivery(1)),
            Err(Error::Root)
        ));
        let bad = Identity {
            uid: 1,
            gid: 1,
            login: Some("a\0b".into()),
        };
        assert!(matches!(
            run(&bad, Options::delivery(1), Vec::new),
            Err(Error::Prepare(w)) if w.contains("bad login name")
        ));
    }

    #[test]
    fn the_child_runs_as_the_user_and_the_parent_gets_its_result() {
        let Some(nobody) = nobody() else { return };
        // A descriptor the parent leaves inheritable must not reach an exec.
        let inheritable = nix::unistd::dup(std::io::stdin()).unwrap();
        let raw = std::os::fd::AsRawFd::as_raw_fd(&inheritable);
        let out = run(&id_of(&nobody, true), Options::delivery(1 << 16), || {
            let ids = nix::unistd::getresuid().unwrap();
            let gids = nix::unistd::getresgid().unwrap();
            // SAFETY (test): F_GETFD only reads the flags.
            let fd_flags = unsafe { libc::fcntl(raw, libc::F_GETFD) };
            format!(
                "{} {} {} {} {} {} env={} umask={} cwd={} cloexec={} capeff={}",
                ids.real,
                ids.effective,
                ids.saved,
                gids.real,
                gids.effective,
                gids.saved,
                std::env::vars_os().count(),
                proc_status("Umask"),
                std::env::current_dir().unwrap().display(),
                fd_flags & libc::FD_CLOEXEC != 0,
                proc_status("CapEff"),
            )
            .into_bytes()
        })
        .unwrap();
        let (u, g) = (nobody.uid, nobody.gid);
        assert_eq!(
            String::from_utf8(out).unwrap(),
            format!(
                "{u} {u} {u} {g} {g} {g} env=0 umask=0077 cwd=/ cloexec=true capeff=0000000000000000"
            )
        );
        // Supplementary groups: the login's, or only the gid without one.
        let groups_in_child = |id: &Identity| {
            let out = run(id, Options::delivery(1 << 16), || {
                let mut g: Vec<u32> = nix::unistd::getgroups()
                    .unwrap()
                    .iter()
                    .map(|g| g.as_raw())
                    .collect();
                g.sort();
                format!("{g:?}").into_bytes()
            });
            String::from_utf8(out.unwrap()).unwrap()
        };
        let mut want: Vec<u32> = nix::unistd::getgrouplist(c"nobody", nobody.gid)
            .unwrap()
            .iter()
            .map(|g| g.as_raw())
            .collect();
        want.sort();
        want.dedup();
        assert_eq!(groups_in_child(&id_of(&nobody, true)), format!("{want:?}"));
        assert_eq!(
            groups_in_child(&id_of(&nobody, false)),
            format!("{:?}", vec![g.as_raw()])
        );
        // The parent is untouched.
        assert!(nix::unistd::geteuid().is_root());
    }

    #[test]
    fn a_session_has_no_capabilities_and_no_new_privs() {
        let Some(nobody) = nobody() else { return };
        let home = tempfile::tempdir().unwrap();
        std::fs::set_permissions(
            home.path(),
            std::os::unix::fs::PermissionsExt::from_mode(0o755),
        )
        .unwrap();
        let out = run(
            &id_of(&nobody, false),
            Options::session(home.path(), 1024),
            || {
                format!(
                    "{} {} {} {}",
                    proc_status("CapBnd"),
                    proc_status("CapPrm"),
                    proc_status("NoNewPrivs"),
                    std::env::current_dir().unwrap().display()
                )
                .into_bytes()
            },
        )
        .unwrap();
        assert_eq!(
            String::from_utf8(out).unwrap(),
            format!(
                "0000000000000000 0000000000000000 1 {}",
                home.path().canonicalize().unwrap().display()
            )
        );
    }

    #[test]
    fn a_failed_switch_is_reported_and_the_work_never_runs() {
        let Some(nobody) = nobody() else { return };
        let d = tempfile::tempdir().unwrap();
        let marker = d.path().join("ran");
        let mut opts = Options::delivery(1024);
        opts.cwd = d.path().join("no-such-dir");
        let r = run(&id_of(&nobody, true), opts, || {
            let _ = std::fs::write(&marker, "");
            b"ran".to_vec()
        });
        match r {
            Err(Error::Switch(why)) => {
                assert!(
                    why.contains(&format!("cannot switch to uid {}", nobody.uid))
                        && why.contains("chdir"),
                    "{why}"
                );
            }
            other => panic!("{other:?}"),
        }
        assert!(!marker.exists(), "the work ran after a failed switch");
    }

    #[test]
    fn panics_and_oversized_results_are_errors() {
        let Some(nobody) = nobody() else { return };
        let id = id_of(&nobody, false);
        let r = run(&id, Options::delivery(1024), || panic!("boom"));
        assert_eq!(r, Err(Error::Child(format!("exit status {EXIT_PANIC}"))));
        // Exactly the limit passes; one byte more is refused, as is far
        // more (the child gets EPIPE rather than blocking the parent).
        assert_eq!(
            run(&id, Options::delivery(1024), || vec![7; 1024]).unwrap(),
            vec![7; 1024]
        );
        for n in [1025, 1 << 20] {
            let r = run(&id, Options::delivery(1024), || vec![7; n]);
            assert!(matches!(&r, Err(Error::Child(_))), "{n}: {r:?}");
        }
        // An empty result is a result.
        assert_eq!(run(&id, Options::delivery(0), Vec::new).unwrap(), b"");
    }
}
