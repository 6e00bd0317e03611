//! The listening socket a service receives and the clients it accepts.
//!
//! A [`Listener`] wraps fd 3 (TCP for inet services, a stream Unix socket
//! for unix/fifo ones); accepting yields a [`Connection`] that is both
//! AsyncRead and AsyncWrite, so service code does not care which it is.

use std::io;
use std::net::SocketAddr;
use std::os::fd::{AsRawFd, OwnedFd};
use std::pin::Pin;
use std::task::{Context, Poll};

use nix::sys::socket::{
    AddressFamily, SockaddrLike, SockaddrStorage, getsockname, getsockopt, sockopt,
};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// A listening socket handed over by master (fd 3).
#[derive(Debug)]
pub enum Listener {
    /// inet services.
    Tcp(tokio::net::TcpListener),
    /// unix and fifo services.
    Unix(tokio::net::UnixListener),
}

/// One accepted client. Implements tokio AsyncRead + AsyncWrite (+ Unpin).
#[derive(Debug)]
pub enum Connection {
    /// A TCP client, with both ends' addresses (smtpd logs and checks them).
    Tcp {
        /// The stream.
        stream: tokio::net::TcpStream,
        /// The client's address.
        peer: SocketAddr,
        /// Our address the client connected to.
        local: SocketAddr,
    },
    /// A local client (another Postern process).
    Unix {
        /// The stream.
        stream: tokio::net::UnixStream,
    },
}

impl Listener {
    /// Wraps a listening socket descriptor, deciding TCP or Unix from its
    /// address family. Must be called inside a tokio runtime. Fails when
    /// the descriptor is not a listening stream socket.
    pub fn from_fd(fd: OwnedFd) -> io::Result<Listener> {
        let listening = getsockopt(&fd, sockopt::AcceptConn).map_err(io::Error::from)?;
        if !listening {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "socket is not listening",
            ));
        }
        let addr: SockaddrStorage = getsockname(fd.as_raw_fd()).map_err(io::Error::from)?;
        match addr.family() {
            Some(AddressFamily::Inet) | Some(AddressFamily::Inet6) => {
                let l = std::net::TcpListener::from(fd);
                l.set_nonblocking(true)?;
                Ok(Listener::Tcp(tokio::net::TcpListener::from_std(l)?))
            }
            Some(AddressFamily::Unix) => {
                let l = std::os::unix::net::UnixListener::from(fd);
                l.set_nonblocking(true)?;
                Ok(Listener::Unix(tokio::net::UnixListener::from_std(l)?))
            }
            other => Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("unsupported socket family {other:?}"),
            )),
        }
    }

    /// Waits for and accepts the next client.
    pub async fn accept(&self) -> io::Result<Connection> {
        match self {
            Listener::Tcp(l) => {
                let (stream, peer) = l.accept().await?;
                let local = stream.local_addr()?;
                Ok(Connection::Tcp {
                    stream,
                    peer,
                    local,
                })
            }
            Listener::Unix(l) => {
                let (stream, _) = l.accept().await?;
                Ok(Connection::Unix { stream })
            }
        }
    }
}

impl Connection {
    /// The client's address for TCP clients; None for local clients.
    pub fn peer_addr(&self) -> Option<SocketAddr> {
        match self {
            Connection::Tcp { peer, .. } => Some(*peer),
            Connection::Unix { .. } => None,
        }
    }

    /// Our address for TCP clients; None for local clients.
    pub fn local_addr(&self) -> Option<SocketAddr> {
        match self {
            Connection::Tcp { local, .. } => Some(*local),
            Connection::Unix { .. } => None,
        }
    }
}

impl AsyncRead for Connection {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Connection::Tcp { stream, .. } => Pin::new(stream).poll_read(cx, buf),
            Connection::Unix { stream } => Pin::new(stream).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for Connection {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Connection::Tcp { stream, .. } => Pin::new(stream).poll_write(cx, buf),
            Connection::Unix { stream } => Pin::new(stream).poll_write(cx, buf),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Connection::Tcp { stream, .. } => Pin::new(stream).poll_flush(cx),
            Connection::Unix { stream } => Pin::new(stream).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Connection::Tcp { stream, .. } => Pin::new(stream).poll_shutdown(cx),
            Connection::Unix { stream } => Pin::new(stream).poll_shutdown(cx),
        }
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Connection::Tcp { stream, .. } => Pin::new(stream).poll_write_vectored(cx, bufs),
            Connection::Unix { stream } => Pin::new(stream).poll_write_vectored(cx, bufs),
        }
    }

    fn is_write_vectored(&self) -> bool {
        match self {
            Connection::Tcp { stream, .. } => stream.is_write_vectored(),
            Connection::Unix { stream } => stream.is_write_vectored(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};

    #[tokio::test]
    async fn tcp_listener_from_fd_accepts_and_echoes() {
        let std_l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = std_l.local_addr().unwrap();
        let l = Listener::from_fd(OwnedFd::from(std_l)).unwrap();
        assert!(matches!(l, Listener::Tcp(_)));
        let client = tokio::spawn(async move {
            let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
            s.write_all(b"hi\n").await.unwrap();
            let mut line = String::new();
            BufReader::new(s).read_line(&mut line).await.unwrap();
            line
        });
        let mut conn = l.accept().await.unwrap();
        assert_eq!(conn.local_addr(), Some(addr));
        assert!(conn.peer_addr().unwrap().ip().is_loopback());
        let mut line = String::new();
        let mut r = BufReader::new(&mut conn);
        r.read_line(&mut line).await.unwrap();
        conn.write_all(format!("echo {line}").as_bytes())
            .await
            .unwrap();
        assert_eq!(client.await.unwrap(), "echo hi\n");
    }

    #[tokio::test]
    async fn unix_listener_from_fd() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s");
        let std_l = std::os::unix::net::UnixListener::bind(&path).unwrap();
        let l = Listener::from_fd(OwnedFd::from(std_l)).unwrap();
        assert!(matches!(l, Listener::Unix(_)));
        let _c = tokio::net::UnixStream::connect(&path).await.unwrap();
        let conn = l.accept().await.unwrap();
        assert!(conn.peer_addr().is_none());
    }

    #[tokio::test]
    async fn rejects_non_listening_socket() {
        let (a, _b) = std::os::unix::net::UnixStream::pair().unwrap();
        assert!(Listener::from_fd(OwnedFd::from(a)).is_err());
        let f = std::fs::File::open("/dev/null").unwrap();
        assert!(Listener::from_fd(OwnedFd::from(f)).is_err());
    }
}
