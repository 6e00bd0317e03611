//! Framed message channels over Unix stream sockets, with descriptor passing.
//!
//! [`Channel`] is the tokio form used by the daemons; [`BlockingChannel`] is
//! the same protocol for blocking code (a delivery agent's forwarding, admin
//! commands). Both read with `recvmsg` so a descriptor sent with a frame
//! (SCM_RIGHTS) is picked up and queued for [`Channel::take_fd`].

use crate::codec::{DecodeError, Decoder, Message, split_frame};
use nix::sys::socket::{ControlMessage, ControlMessageOwned, MsgFlags, recvmsg, sendmsg};
use std::collections::VecDeque;
use std::fmt;
use std::io::{self, IoSlice, IoSliceMut, Read, Write};
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};
use std::path::Path;
use tokio::io::{AsyncWriteExt, Interest};

/// Why a message could not be received.
#[derive(Debug)]
#[non_exhaustive]
pub enum IpcError {
    /// The socket failed.
    Io(io::Error),
    /// The peer sent bytes that are not a valid message.
    Decode(DecodeError),
    /// The peer closed the connection in the middle of a frame.
    UnexpectedEof,
}

impl fmt::Display for IpcError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            IpcError::Io(e) => write!(f, "{e}"),
            IpcError::Decode(e) => write!(f, "{e}"),
            IpcError::UnexpectedEof => write!(f, "unexpected end of input in IPC message"),
        }
    }
}

impl std::error::Error for IpcError {}

impl From<io::Error> for IpcError {
    fn from(e: io::Error) -> Self {
        IpcError::Io(e)
    }
}

impl From<DecodeError> for IpcError {
    fn from(e: DecodeError) -> Self {
        IpcError::Decode(e)
    }
}

/// Bytes received but not yet decoded, plus descriptors that came with them.
#[derive(Default)]
struct Inbox {
    buf: Vec<u8>,
    start: usize,
    fds: VecDeque<OwnedFd>,
}

impl Inbox {
    fn try_message<M: Message>(&mut self) -> Result<Option<M>, IpcError> {
        let avail = &self.buf[self.start..];
        match split_frame(avail)? {
            None => {
                // Compact so the buffer does not grow without bound.
                if self.start > 0 {
                    self.buf.drain(..self.start);
                    self.start = 0;
                }
                Ok(None)
            }
            Some((kind, range, used)) => {
                let mut d = Decoder::new(&avail[range]);
                let m = M::decode(kind, &mut d)?;
                d.finish()?;
                self.start += used;
                if self.start == self.buf.len() {
                    self.buf.clear();
                    self.start = 0;
                }
                Ok(Some(m))
            }
        }
    }

    fn pending(&self) -> bool {
        self.start < self.buf.len()
    }

    /// One recvmsg into the buffer; returns bytes read (0 = EOF).
    fn recv_from(&mut self, fd: RawFd) -> io::Result<usize> {
        let mut chunk = [0u8; 16 * 1024];
        let mut cmsg = nix::cmsg_space!([RawFd; 4]);
        let (n, fds) = {
            let mut iov = [IoSliceMut::new(&mut chunk)];
            let msg = recvmsg::<()>(fd, &mut iov, Some(&mut cmsg), MsgFlags::MSG_CMSG_CLOEXEC)
                .map_err(io::Error::from)?;
            let mut fds = Vec::new();
            for c in msg.cmsgs().map_err(io::Error::from)? {
                if let ControlMessageOwned::ScmRights(list) = c {
                    fds.extend(list);
                }
            }
            (msg.bytes, fds)
        };
        for raw in fds {
            // SAFETY: the kernel just installed this descriptor in our table for
            // us (SCM_RIGHTS); nothing else owns it.
            #[allow(unsafe_code)]
            let owned = unsafe { OwnedFd::from_raw_fd(raw) };
            self.fds.push_back(owned);
        }
        self.buf.extend_from_slice(&chunk[..n]);
        Ok(n)
    }
}

fn send_first(fd: RawFd, frame: &[u8], pass: Option<RawFd>) -> io::Result<usize> {
    let iov = [IoSlice::new(frame)];
    let fds;
    let cmsgs: &[ControlMessage<'_>] = match pass {
        Some(p) => {
            fds = [p];
            &[ControlMessage::ScmRights(&fds)]
        }
        None => &[],
    };
    sendmsg::<()>(fd, &iov, cmsgs, MsgFlags::MSG_NOSIGNAL, None).map_err(io::Error::from)
}

/// An asynchronous message channel on a Unix stream socket.
pub struct Channel {
    stream: tokio::net::UnixStream,
    inbox: Inbox,
}

impl Channel {
    /// Wraps a connected socket.
    pub fn new(stream: tokio::net::UnixStream) -> Channel {
        Channel {
            stream,
            inbox: Inbox::default(),
        }
    }

    /// Connects to a service's socket (e.g. QUEUE_DIR/public/cleanup).
    pub async fn connect(path: &Path) -> io::Result<Channel> {
        Ok(Channel::new(tokio::net::UnixStream::connect(path).await?))
    }

    /// Sends one message.
    pub async fn send<M: Message>(&mut self, m: &M) -> io::Result<()> {
        self.stream.write_all(&frame_of(m)?).await
    }

    /// Sends one message with an open descriptor attached to it.
    pub async fn send_with_fd<M: Message>(&mut self, m: &M, fd: BorrowedFd<'_>) -> io::Result<()> {
        let frame = frame_of(m)?;
        let raw = self.stream.as_raw_fd();
        let pass = fd.as_raw_fd();
        let n = self
            .stream
            .async_io(Interest::WRITABLE, || send_first(raw, &frame, Some(pass)))
            .await?;
        self.stream.write_all(&frame[n..]).await
    }

    /// Receives the next message; `Ok(None)` when the peer closed cleanly
    /// between messages.
    pub async fn recv<M: Message>(&mut self) -> Result<Option<M>, IpcError> {
        loop {
            if let Some(m) = self.inbox.try_message()? {
                return Ok(Some(m));
            }
            let raw = self.stream.as_raw_fd();
            let inbox = &mut self.inbox;
            let n = self
                .stream
                .async_io(Interest::READABLE, || inbox.recv_from(raw))
                .await?;
            if n == 0 {
                return if self.inbox.pending() {
                    Err(IpcError::UnexpectedEof)
                } else {
                    Ok(None)
                };
            }
        }
    }

    /// The oldest descriptor received and not yet taken.
    pub fn take_fd(&mut self) -> Option<OwnedFd> {
        self.inbox.fds.pop_front()
    }

    /// The underlying socket.
    pub fn stream(&self) -> &tokio::net::UnixStream {
        &self.stream
    }
}

/// The same protocol for blocking code.
pub struct BlockingChannel {
    stream: std::os::unix::net::UnixStream,
    inbox: Inbox,
}

impl BlockingChannel {
    /// Wraps a connected socket.
    pub fn new(stream: std::os::unix::net::UnixStream) -> BlockingChannel {
        BlockingChannel {
            stream,
            inbox: Inbox::default(),
        }
    }

    /// Connects to a service's socket, with a read/write timeout.
    pub fn connect(path: &Path, timeout: std::time::Duration) -> io::Result<BlockingChannel> {
        let s = std::os::unix::net::UnixStream::connect(path)?;
        s.set_read_timeout(Some(timeout))?;
        s.set_write_timeout(Some(timeout))?;
        Ok(BlockingChannel::new(s))
    }

    /// Sends one message.
    pub fn send<M: Message>(&mut self, m: &M) -> io::Result<()> {
        self.stream.write_all(&frame_of(m)?)
    }

    /// Sends one message with an open descriptor attached to it.
    pub fn send_with_fd<M: Message>(&mut self, m: &M, fd: BorrowedFd<'_>) -> io::Result<()> {
        let frame = frame_of(m)?;
        let n = send_first(self.stream.as_raw_fd(), &frame, Some(fd.as_raw_fd()))?;
        self.stream.write_all(&frame[n..])
    }

    /// Receives the next message; `Ok(None)` on a clean close.
    pub fn recv<M: Message>(&mut self) -> Result<Option<M>, IpcError> {
        loop {
            if let Some(m) = self.inbox.try_message()? {
                return Ok(Some(m));
            }
            let n = self.inbox.recv_from(self.stream.as_raw_fd())?;
            if n == 0 {
                return if self.inbox.pending() {
                    Err(IpcError::UnexpectedEof)
                } else {
                    Ok(None)
                };
            }
        }
    }

    /// The oldest descriptor received and not yet taken.
    pub fn take_fd(&mut self) -> Option<OwnedFd> {
        self.inbox.fds.pop_front()
    }

    /// Plain reads, for protocols that are not framed (none yet).
    pub fn stream(&mut self) -> &mut impl Read {
        &mut self.stream
    }
}

/// The frame to send for `m`, refused (as InvalidInput) when it is over
/// MAX_FRAME: the receiver would refuse it and the conversation be lost.
fn frame_of<M: Message>(m: &M) -> io::Result<Vec<u8>> {
    m.to_frame()
        .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))
}

/// Writes a one-byte trigger to a service socket and closes, as master's
/// wakeup and cleanup's "new mail" notice do. Failure is reported, not fatal:
/// the periodic wakeup covers a lost trigger.
pub fn send_trigger(path: &Path, trigger: crate::Trigger) -> io::Result<()> {
    let mut s = std::os::unix::net::UnixStream::connect(path)?;
    s.set_write_timeout(Some(std::time::Duration::from_secs(5)))?;
    s.write_all(&[trigger.byte()])
}

/// Reads the trigger bytes a client of a trigger socket writes, until it
/// closes — bounded to 5 seconds and 64 triggers, so a client that never
/// closes costs nothing. Unknown bytes are ignored.
pub async fn read_triggers(mut s: tokio::net::UnixStream) -> Vec<crate::Trigger> {
    use tokio::io::AsyncReadExt;
    let mut buf = [0u8; 64];
    let mut out = Vec::new();
    let read = tokio::time::timeout(std::time::Duration::from_secs(5), async {
        loop {
            match s.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => out.extend(
                    buf[..n]
                        .iter()
                        .filter_map(|&b| crate::Trigger::from_byte(b)),
                ),
            }
            if out.len() > 64 {
                break;
            }
        }
    });
    let _ = read.await;
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::messages::*;
    use std::io::Seek;
    use std::time::UNIX_EPOCH;

    #[tokio::test]
    async fn messages_and_descriptors_cross_a_socket() {
        let (a, b) = tokio::net::UnixStream::pair().unwrap();
        let (mut a, mut b) = (Channel::new(a), Channel::new(b));
        let mut file = tempfile_in_tmp();
        file.write_all(b"hello queue file").unwrap();
        file.rewind().unwrap();
        let req = DeliveryRequest {
            queue_id: "ID1".into(),
            sender: "s@x".parse().unwrap(),
            arrival: UNIX_EPOCH,
            content_offset: 0,
            content_len: 16,
            nexthop: String::new(),
            recipients: vec![],
            attributes: vec![],
            delivered: vec![],
        };
        use std::os::fd::AsFd;
        a.send_with_fd(&req, file.as_fd()).await.unwrap();
        a.send(&DeliveryReply::Finished).await.unwrap();
        let got: DeliveryRequest = b.recv().await.unwrap().unwrap();
        assert_eq!(got, req);
        let fd = b.take_fd().expect("descriptor passed");
        let mut f = std::fs::File::from(fd);
        let mut s = String::new();
        f.read_to_string(&mut s).unwrap();
        assert_eq!(s, "hello queue file");
        let fin: DeliveryReply = b.recv().await.unwrap().unwrap();
        assert_eq!(fin, DeliveryReply::Finished);
        drop(a);
        assert!(b.recv::<DeliveryReply>().await.unwrap().is_none());
    }

    #[tokio::test]
    async fn a_large_frame_arrives_whole() {
        let (a, b) = tokio::net::UnixStream::pair().unwrap();
        let (mut a, mut b) = (Channel::new(a), Channel::new(b));
        let data: Vec<u8> = (0..crate::codec::CHUNK_SIZE * 4)
            .map(|i| (i % 251) as u8)
            .collect();
        let m = CleanupRequest::Content { data: data.clone() };
        let sender = tokio::spawn(async move {
            a.send(&m).await.unwrap();
            a
        });
        let got: CleanupRequest = b.recv().await.unwrap().unwrap();
        assert_eq!(got, CleanupRequest::Content { data });
        drop(sender.await.unwrap());
    }

    #[tokio::test]
    async fn eof_inside_a_frame_is_an_error() {
        let (a, b) = tokio::net::UnixStream::pair().unwrap();
        let mut b = Channel::new(b);
        let frame = CleanupRequest::Sender {
            address: "a@b.c".parse().unwrap(),
        }
        .encode();
        let mut a = a;
        a.write_all(&frame[..frame.len() - 1]).await.unwrap();
        drop(a);
        assert!(matches!(
            b.recv::<CleanupRequest>().await,
            Err(IpcError::UnexpectedEof)
        ));
    }

    #[test]
    fn blocking_channel_speaks_the_same_protocol() {
        let (a, b) = std::os::unix::net::UnixStream::pair().unwrap();
        let (mut a, mut b) = (BlockingChannel::new(a), BlockingChannel::new(b));
        a.send(&CleanupReply::Queued {
            queue_id: "Q".into(),
        })
        .unwrap();
        let r: CleanupReply = b.recv().unwrap().unwrap();
        assert_eq!(
            r,
            CleanupReply::Queued {
                queue_id: "Q".into()
            }
        );
    }

    fn tempfile_in_tmp() -> std::fs::File {
        let p = std::env::temp_dir().join(format!("postern-ipc-test-{}", std::process::id()));
        let f = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(true)
            .open(&p)
            .unwrap();
        std::fs::remove_file(&p).unwrap();
        f
    }
}
