//! The sockets master owns: binding services' listeners and sending
//! wakeup triggers.
//!
//! inet services get one TCP listener per address (SO_REUSEADDR, IPv6
//! sockets V6ONLY so 0.0.0.0 and [::] can coexist, backlog 256); unix and
//! fifo services get a stream Unix socket at QUEUE_DIR/private|public/NAME
//! (a stale file is unlinked first). A Unix socket is root:GROUP 0660 when
//! master runs as root and the group exists (postern-ipc for private/,
//! postdrop for public/, docs/security.md); otherwise 0666 and the
//! directory controls access. Every descriptor is close-on-exec and non-blocking: master
//! only polls them for readability and never accepts; the child that gets
//! one as fd 3 accepts.

use std::io::Write;
use std::net::SocketAddr;
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::fs::{FileTypeExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::time::Duration;

use nix::sys::socket::{
    AddressFamily, Backlog, SockFlag, SockType, SockaddrStorage, UnixAddr, bind, connect, listen,
    setsockopt, socket, sockopt,
};
use nix::unistd::{Gid, Uid};

/// Where a service listens; compared on reload to decide whether the
/// existing socket can be kept.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Endpoint {
    /// TCP addresses (inet services).
    Inet(Vec<SocketAddr>),
    /// A stream Unix socket path (unix and fifo services).
    Unix(PathBuf),
}

impl std::fmt::Display for Endpoint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Endpoint::Inet(addrs) => {
                let list: Vec<String> = addrs.iter().map(|a| a.to_string()).collect();
                write!(f, "{}", list.join(", "))
            }
            Endpoint::Unix(p) => write!(f, "{}", p.display()),
        }
    }
}

const BACKLOG: i32 = 256;

fn backlog() -> Backlog {
    Backlog::new(BACKLOG).unwrap_or(Backlog::MAXCONN)
}

/// Opens every listener of an endpoint, in address order. The error names
/// the address or path that failed. `unix_group`: for a Unix socket, the
/// group it is given (owner root, mode 0660); None = mode 0666.
pub fn bind_endpoint(ep: &Endpoint, unix_group: Option<Gid>) -> Result<Vec<OwnedFd>, String> {
    match ep {
        Endpoint::Inet(addrs) => addrs
            .iter()
            .map(|a| bind_inet(*a).map_err(|e| format!("cannot bind {a}: {}", e.desc())))
            .collect(),
        Endpoint::Unix(path) => Ok(vec![bind_unix(path, unix_group)?]),
    }
}

/// One TCP listener.
pub fn bind_inet(addr: SocketAddr) -> nix::Result<OwnedFd> {
    let family = if addr.is_ipv4() {
        AddressFamily::Inet
    } else {
        AddressFamily::Inet6
    };
    let fd = socket(
        family,
        SockType::Stream,
        SockFlag::SOCK_CLOEXEC | SockFlag::SOCK_NONBLOCK,
        None,
    )?;
    setsockopt(&fd, sockopt::ReuseAddr, &true)?;
    if addr.is_ipv6() {
        setsockopt(&fd, sockopt::Ipv6V6Only, &true)?;
    }
    bind(fd.as_raw_fd(), &SockaddrStorage::from(addr))?;
    listen(&fd, backlog())?;
    Ok(fd)
}

/// One stream Unix listener at `path`: owner root, group `group`, mode
/// 0660 when `group` is given (master runs as root), else mode 0666.
pub fn bind_unix(path: &Path, group: Option<Gid>) -> Result<OwnedFd, String> {
    let what = path.display();
    match std::fs::symlink_metadata(path) {
        Ok(m) if m.file_type().is_socket() => std::fs::remove_file(path)
            .map_err(|e| format!("cannot remove stale socket {what}: {e}"))?,
        Ok(_) => {
            return Err(format!(
                "cannot bind {what}: a file that is not a socket is in the way"
            ));
        }
        Err(_) => {}
    }
    let addr = UnixAddr::new(path).map_err(|e| format!("cannot bind {what}: {}", e.desc()))?;
    let fd = socket(
        AddressFamily::Unix,
        SockType::Stream,
        SockFlag::SOCK_CLOEXEC | SockFlag::SOCK_NONBLOCK,
        None,
    )
    .map_err(|e| format!("socket: {}", e.desc()))?;
    bind(fd.as_raw_fd(), &addr).map_err(|e| format!("cannot bind {what}: {}", e.desc()))?;
    // Owner and group before the mode: the socket is never 0660 with the
    // wrong group. Until then only its creator may connect (the umask).
    let mode = match group {
        Some(gid) => {
            nix::unistd::chown(path, Some(Uid::from_raw(0)), Some(gid))
                .map_err(|e| format!("chown {what}: {}", e.desc()))?;
            0o660
        }
        None => 0o666,
    };
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))
        .map_err(|e| format!("chmod {what}: {e}"))?;
    listen(&fd, backlog()).map_err(|e| format!("listen {what}: {}", e.desc()))?;
    Ok(fd)
}

/// Sends Postfix's wakeup trigger: connect, write "W", close. Never blocks
/// master for long: Unix connects are non-blocking (a full backlog means
/// the service already has work queued), TCP connects time out after 1 s.
pub fn trigger(ep: &Endpoint) -> Result<(), String> {
    match ep {
        Endpoint::Unix(path) => {
            let fd = socket(
                AddressFamily::Unix,
                SockType::Stream,
                SockFlag::SOCK_CLOEXEC | SockFlag::SOCK_NONBLOCK,
                None,
            )
            .map_err(|e| e.desc().to_string())?;
            let addr = UnixAddr::new(path).map_err(|e| e.desc().to_string())?;
            match connect(fd.as_raw_fd(), &addr) {
                Ok(()) => {}
                Err(nix::errno::Errno::EAGAIN) => return Ok(()),
                Err(e) => return Err(format!("connect {}: {}", path.display(), e.desc())),
            }
            nix::unistd::write(&fd, b"W")
                .map(|_| ())
                .map_err(|e| e.desc().to_string())
        }
        Endpoint::Inet(addrs) => {
            let Some(addr) = addrs.first() else {
                return Ok(());
            };
            let mut s = std::net::TcpStream::connect_timeout(addr, Duration::from_secs(1))
                .map_err(|e| format!("connect {addr}: {e}"))?;
            s.write_all(b"W").map_err(|e| e.to_string())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read;
    use std::os::unix::fs::MetadataExt;

    #[test]
    fn unix_bind_replaces_stale_socket_and_triggers() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("qmgr");
        let old = std::os::unix::net::UnixListener::bind(&p).unwrap();
        drop(old); // leaves the socket file behind
        let fd = bind_unix(&p, None).unwrap();
        assert_eq!(std::fs::metadata(&p).unwrap().mode() & 0o777, 0o666);
        let ep = Endpoint::Unix(p.clone());
        trigger(&ep).unwrap();
        let l = std::os::unix::net::UnixListener::from(fd);
        l.set_nonblocking(false).unwrap();
        let (mut c, _) = l.accept().unwrap();
        let mut b = Vec::new();
        c.read_to_end(&mut b).unwrap();
        assert_eq!(b, b"W");
    }

    #[test]
    fn unix_bind_with_group_is_root_group_0660() {
        if !nix::unistd::geteuid().is_root() {
            eprintln!("skipped: chown to another group needs root");
            return;
        }
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("cleanup");
        let _fd = bind_unix(&p, Some(Gid::from_raw(1))).unwrap();
        let m = std::fs::metadata(&p).unwrap();
        assert_eq!((m.uid(), m.gid(), m.mode() & 0o777), (0, 1, 0o660));
    }

    #[test]
    fn unix_bind_refuses_regular_file() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("x");
        std::fs::write(&p, "data").unwrap();
        assert!(bind_unix(&p, None).unwrap_err().contains("not a socket"));
        let long = d.path().join("a".repeat(200));
        assert!(
            bind_unix(&long, None)
                .unwrap_err()
                .starts_with("cannot bind")
        );
    }

    #[test]
    fn inet_bind_conflict_names_address() {
        let fd = bind_inet("127.0.0.1:0".parse().unwrap()).unwrap();
        let l = std::net::TcpListener::from(fd);
        let addr = l.local_addr().unwrap();
        let err = bind_endpoint(&Endpoint::Inet(vec![addr]), None).unwrap_err();
        assert!(err.starts_with(&format!("cannot bind {addr}: ")), "{err}");
        // trigger over TCP
        trigger(&Endpoint::Inet(vec![addr])).unwrap();
        l.set_nonblocking(false).unwrap();
        let (mut c, _) = l.accept().unwrap();
        let mut b = [0u8; 1];
        c.read_exact(&mut b).unwrap();
        assert_eq!(&b, b"W");
    }

    #[test]
    fn trigger_missing_socket_fails() {
        let ep = Endpoint::Unix(PathBuf::from("/nonexistent/postern/sock"));
        assert!(trigger(&ep).is_err());
        assert_eq!(ep.to_string(), "/nonexistent/postern/sock");
    }
}
