//! Starting one service process with exactly the descriptors it may have.
//!
//! The child runs `PROGRAM ARGV...` with fd 0 and 1 on /dev/null, fd 2 on
//! the log sink, fd 3 = the service's listening socket, fd 4 = the write
//! end of the service's status pipe, an empty signal mask, and a cleared
//! environment (PATH=/usr/bin:/bin, MAIL_CONFIG, POSTERN_GENERATION, and
//! TZ / RUST_BACKTRACE / RUST_LOG when set; with privilege separation on,
//! POSTERN_PRIVSEP=1, POSTERN_RUN_AS=USER and POSTERN_CHROOT=DIR, which the
//! service skeleton applies after its start-up hook). Every descriptor master opens
//! is close-on-exec, and the child closes anything else above 4 (master may
//! itself have inherited stray descriptors).
//!
//! This is the crate's one `unsafe` block: placing descriptors at fixed
//! numbers in the child needs a `pre_exec` hook. The hook only makes
//! async-signal-safe calls (fcntl, dup2, close_range/close, sigemptyset,
//! pthread_sigmask) and touches no memory shared with the parent.

use std::os::fd::{AsRawFd, BorrowedFd, OwnedFd};
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Command, Stdio};

use postern_service::fds::{CONFIG_ENV, GENERATION_ENV, LISTEN_FD, STATUS_FD};
use postern_service::privileges::{CHROOT_ENV, PRIVSEP_ENV, RUN_AS_ENV};

/// What a child must become (master runs as root): resolved from the
/// master.cf unpriv and chroot columns, applied by the child itself.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RunAs {
    /// The user name (`root` for unpriv `n`).
    pub user: String,
    /// The chroot directory (chroot `y`: the queue directory).
    pub chroot: Option<std::path::PathBuf>,
}

/// Where a child's fd 2 points.
#[derive(Debug)]
pub enum ChildLog {
    /// master's own stderr (syslog mode, or maillog_file = /dev/stderr).
    Inherit,
    /// The maillog file master opened (or a copy of master's stdout).
    Fd(OwnedFd),
}

/// Everything needed to start one child.
#[derive(Debug)]
pub struct SpawnSpec<'a> {
    /// DAEMON_DIR/COMMAND.
    pub program: &'a Path,
    /// `-n NAME -t TYPE ARGS... -o name=value...`.
    pub argv: &'a [String],
    /// Passed as MAIL_CONFIG.
    pub config_dir: &'a Path,
    /// Passed as POSTERN_GENERATION.
    pub generation: u32,
    /// Becomes fd 3.
    pub listen: BorrowedFd<'a>,
    /// Becomes fd 4.
    pub status: BorrowedFd<'a>,
    /// Becomes fd 2.
    pub log: &'a ChildLog,
    /// Privilege separation: None when master is not root (the child then
    /// runs as master's user and gets no POSTERN_PRIVSEP).
    pub run_as: Option<&'a RunAs>,
}

/// Starts the child; returns its pid. An exec failure (missing program)
/// is reported here as an error.
#[allow(unsafe_code)]
pub fn spawn(spec: &SpawnSpec<'_>) -> std::io::Result<u32> {
    let mut cmd = Command::new(spec.program);
    cmd.args(spec.argv)
        .env_clear()
        .env("PATH", "/usr/bin:/bin")
        .env(CONFIG_ENV, spec.config_dir)
        .env(GENERATION_ENV, spec.generation.to_string())
        .stdin(Stdio::null())
        .stdout(Stdio::null());
    if let Some(run_as) = spec.run_as {
        cmd.env(PRIVSEP_ENV, "1").env(RUN_AS_ENV, &run_as.user);
        if let Some(dir) = &run_as.chroot {
            cmd.env(CHROOT_ENV, dir);
        }
    }
    for name in ["TZ", "RUST_BACKTRACE", "RUST_LOG"] {
        if let Some(v) = std::env::var_os(name) {
            cmd.env(name, v);
        }
    }
    match spec.log {
        ChildLog::Inherit => cmd.stderr(Stdio::inherit()),
        ChildLog::Fd(fd) => cmd.stderr(Stdio::from(fd.try_clone()?)),
    };
    let listen = spec.listen.as_raw_fd();
    let status = spec.status.as_raw_fd();
    // SAFETY: the closure runs in the forked child before exec and only
    // calls async-signal-safe functions on descriptor numbers captured by
    // value; it allocates nothing and takes no locks.
    unsafe {
        cmd.pre_exec(move || {
            // Move both out of the way first (close-on-exec copies), so that
            // placing one cannot clobber the other if it already sits at 3/4.
            let l = libc::fcntl(listen, libc::F_DUPFD_CLOEXEC, 10);
            let s = libc::fcntl(status, libc::F_DUPFD_CLOEXEC, 10);
            if l < 0 || s < 0 {
                return Err(std::io::Error::last_os_error());
            }
            // dup2's result is not close-on-exec: these two survive exec.
            if libc::dup2(l, LISTEN_FD) < 0 || libc::dup2(s, STATUS_FD) < 0 {
                return Err(std::io::Error::last_os_error());
            }
            // Descriptors master itself inherited without close-on-exec
            // must not reach services either: close everything above 4.
            if libc::syscall(libc::SYS_close_range, 5u32, u32::MAX, 0u32) != 0 {
                for fd in 5..1024 {
                    libc::close(fd);
                }
            }
            // master blocks the signals it reads through signalfd; the mask
            // is inherited across exec, so clear it.
            let mut set: libc::sigset_t = std::mem::zeroed();
            libc::sigemptyset(&mut set);
            libc::pthread_sigmask(libc::SIG_SETMASK, &set, std::ptr::null_mut());
            Ok(())
        });
    }
    let child = cmd.spawn()?;
    // The child is reaped with waitpid(-1) by master's SIGCHLD handling;
    // dropping the handle neither waits nor kills.
    Ok(child.id())
}
