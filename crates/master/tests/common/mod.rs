//! Shared by master's integration tests: the groups privilege separation
//! needs, and whether the tests run as root.
//!
//! SECURITY: creates system groups (postern, postern-ipc, postdrop) on the
//! machine when missing, as `postern install` would; never deletes them
//! (other tests and an installed Postern rely on them).

#![allow(dead_code)]

use std::net::TcpListener;
use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};

use nix::unistd::Group;

/// The groups the privileges table names (docs/security.md).
pub const GROUPS: &[&str] = &["postern-ipc", "postern", "postdrop"];

/// Whether the test process is root (privilege separation is on for a
/// master it starts).
pub fn is_root() -> bool {
    nix::unistd::geteuid().is_root()
}

/// Creates the groups of [`GROUPS`] that do not exist (`groupadd --system`),
/// tolerating a concurrent test creating them at the same time. Root only.
pub fn ensure_groups() {
    for name in GROUPS {
        for _ in 0..50 {
            if matches!(Group::from_name(name), Ok(Some(_))) {
                break;
            }
            // Fails when another test process holds the lock or just
            // created it: check again.
            let _ = Command::new("groupadd")
                .arg("--system")
                .arg(name)
                .env("PATH", "/usr/sbin:/usr/bin:/sbin:/bin")
                .status();
            std::thread::sleep(Duration::from_millis(20));
        }
        assert!(
            matches!(Group::from_name(name), Ok(Some(_))),
            "cannot create group {name}"
        );
    }
}

/// The gid of an existing group.
pub fn gid_of(name: &str) -> u32 {
    Group::from_name(name)
        .ok()
        .flatten()
        .unwrap_or_else(|| panic!("group {name} missing"))
        .gid
        .as_raw()
}

/// master's binary, as cargo built it for these tests.
pub const MASTER: &str = env!("CARGO_BIN_EXE_master");
/// How long a test waits for anything.
pub const WAIT: Duration = Duration::from_secs(15);

/// Where cargo put the example services (echo-service, wakeup-counter).
pub fn examples_dir() -> PathBuf {
    // target/<profile>/deps/master-HASH → target/<profile>/examples
    let exe = std::env::current_exe().unwrap();
    let dir = exe.parent().unwrap().parent().unwrap().join("examples");
    assert!(
        dir.join("echo-service").exists() && dir.join("wakeup-counter").exists(),
        "examples not built in {}: run `cargo test -p postern-master` (or cargo build --examples)",
        dir.display()
    );
    dir
}

/// A loopback port that was free a moment ago.
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Polls `f` every 50 ms until it returns Some, or panics after WAIT.
pub fn wait_for<T>(what: &str, mut f: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + WAIT;
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}
