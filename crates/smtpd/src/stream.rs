//! The client connection: plain TCP, or TLS after STARTTLS / at connect.
//!
//! SECURITY: the switch to TLS consumes the plain stream; the caller must
//! throw away any plaintext it buffered before the switch (CVE-2011-0411),
//! which `Session` does. A failed handshake leaves the stream `Closed`, so
//! nothing can be read from or written to the client in the clear afterwards.

use postern_tls::{TlsAcceptor, TlsStream};
use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;

/// A client connection, plain or encrypted.
pub enum Stream {
    /// Plain TCP (before STARTTLS, or TLS not offered).
    Plain(TcpStream),
    /// TLS over TCP.
    Tls(Box<TlsStream<TcpStream>>),
    /// After a failed handshake: every operation fails.
    Closed,
}

/// Why the TLS handshake did not complete.
pub enum HandshakeError {
    /// The client was too slow.
    Timeout,
    /// The TLS library or the connection failed.
    Failed(String),
}

impl Stream {
    /// True once TLS is active.
    pub fn is_tls(&self) -> bool {
        matches!(self, Stream::Tls(_))
    }

    /// Does the server side of the TLS handshake within `timeout`; on
    /// success returns the session description for logs and Received.
    pub async fn start_tls(
        &mut self,
        acceptor: &TlsAcceptor,
        timeout: Duration,
    ) -> Result<String, HandshakeError> {
        let tcp = match std::mem::replace(self, Stream::Closed) {
            Stream::Plain(tcp) => tcp,
            other => {
                *self = other;
                return Err(HandshakeError::Failed("TLS already active".into()));
            }
        };
        match tokio::time::timeout(timeout, acceptor.accept(tcp)).await {
            Err(_) => Err(HandshakeError::Timeout),
            Ok(Err(e)) => Err(HandshakeError::Failed(e.to_string())),
            Ok(Ok(tls)) => {
                let info = postern_tls::describe(tls.get_ref().1);
                *self = Stream::Tls(Box::new(tls));
                Ok(info)
            }
        }
    }
}

fn closed() -> io::Error {
    io::Error::new(io::ErrorKind::NotConnected, "connection closed")
}

impl AsyncRead for Stream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_read(cx, buf),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_read(cx, buf),
            Stream::Closed => Poll::Ready(Err(closed())),
        }
    }
}

impl AsyncWrite for Stream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_write(cx, buf),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_write(cx, buf),
            Stream::Closed => Poll::Ready(Err(closed())),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_flush(cx),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_flush(cx),
            Stream::Closed => Poll::Ready(Err(closed())),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_shutdown(cx),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_shutdown(cx),
            Stream::Closed => Poll::Ready(Ok(())),
        }
    }
}
