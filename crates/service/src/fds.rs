//! The descriptors a service inherits from master.
//!
//! master starts every child with fd 3 = the service's listening socket and
//! fd 4 = the write end of the service's status pipe (see `status`). This
//! module is the only place that turns those raw numbers into owned Rust
//! handles, which needs `unsafe` (`OwnedFd::from_raw_fd`): the safety
//! argument is that master reserved those numbers for us across exec, we
//! check the descriptor is open first, and each number is taken at most
//! once per process. Both are then marked close-on-exec so that programs a
//! service runs (local's pipe deliveries) never inherit them.

use std::os::fd::{FromRawFd, OwnedFd, RawFd};
use std::sync::atomic::{AtomicBool, Ordering};

use nix::fcntl::{FcntlArg, FdFlag, fcntl};

/// fd of the listening socket master hands to each child.
pub const LISTEN_FD: RawFd = 3;
/// fd of the write end of the service's status pipe.
pub const STATUS_FD: RawFd = 4;
/// Environment variable carrying master's reload generation to a child.
pub const GENERATION_ENV: &str = "POSTERN_GENERATION";
/// Environment variable naming the configuration directory.
pub const CONFIG_ENV: &str = "MAIL_CONFIG";

static TAKEN_LISTEN: AtomicBool = AtomicBool::new(false);
static TAKEN_STATUS: AtomicBool = AtomicBool::new(false);

/// Takes ownership of inherited descriptor `fd` (3 or 4) if it is open.
/// Returns None when it is not open, or was already taken.
#[allow(unsafe_code)]
pub fn take_inherited(fd: RawFd) -> Option<OwnedFd> {
    let flag = match fd {
        LISTEN_FD => &TAKEN_LISTEN,
        STATUS_FD => &TAKEN_STATUS,
        _ => return None,
    };
    if flag.swap(true, Ordering::SeqCst) {
        return None;
    }
    // SAFETY: F_GETFD only reads descriptor flags; any integer is allowed.
    if unsafe { libc::fcntl(fd, libc::F_GETFD) } < 0 {
        return None;
    }
    // SAFETY: the descriptor is open (checked above); it was inherited
    // across exec at a number master reserves for this purpose, and the
    // flag above guarantees no other OwnedFd in this process claims it.
    let owned = unsafe { OwnedFd::from_raw_fd(fd) };
    let _ = fcntl(&owned, FcntlArg::F_SETFD(FdFlag::FD_CLOEXEC));
    Some(owned)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_3_and_4() {
        // fd 3/4 themselves are not taken here: in the test harness they
        // belong to other tests. Taking them is covered by the master
        // end-to-end tests.
        assert!(take_inherited(0).is_none());
        assert!(take_inherited(2).is_none());
        assert!(take_inherited(7).is_none());
    }
}
