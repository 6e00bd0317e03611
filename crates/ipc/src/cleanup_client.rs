//! The one client of cleanup's conversation: Open → Sender → Recipient+ →
//! Content* → End, for every program that puts mail into the queue (smtpd,
//! pickup, local's forwarding, qmgr's bounces). [`CleanupClient`] for tokio
//! code, [`BlockingCleanupClient`] for blocking code; both keep each step
//! under one timeout and sort every failure into [`CleanupError`], so a
//! caller only decides what a permanent refusal and a temporary fault mean
//! for it (a 5xx or a 4xx, a bounce or a retry).

use crate::channel::{BlockingChannel, Channel};
use postern_ipc_proto::{
    CHUNK_SIZE, CleanupReply, CleanupRequest, DeliveryStatus, Mailbox, Notify, Orcpt, ReversePath,
};
use std::fmt;
use std::path::Path;
use std::time::Duration;

/// Why a message did not get into the queue.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum CleanupError {
    /// cleanup refused the message (it said why): a temporary (disk full,
    /// ...: try again later) or permanent status, e.g. 5.3.4 "message file
    /// too big".
    Rejected(DeliveryStatus),
    /// The conversation failed: cleanup unreachable, an I/O error, a
    /// timeout, or an answer out of protocol. Always temporary.
    Unavailable(String),
}

impl CleanupError {
    /// True unless cleanup refused the message for good.
    pub fn is_temporary(&self) -> bool {
        match self {
            CleanupError::Rejected(status) => status.is_temporary(),
            CleanupError::Unavailable(_) => true,
        }
    }
}

impl fmt::Display for CleanupError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CleanupError::Rejected(status) => write!(f, "{status}"),
            CleanupError::Unavailable(why) => write!(f, "cleanup: {why}"),
        }
    }
}

impl std::error::Error for CleanupError {}

/// What the answer to `Open` means: the new queue ID, or why not.
fn opened(reply: Option<CleanupReply>) -> Result<String, CleanupError> {
    match reply {
        Some(CleanupReply::Opened { queue_id }) => Ok(queue_id),
        Some(CleanupReply::Rejected { status }) => Err(CleanupError::Rejected(status)),
        Some(other) => Err(CleanupError::Unavailable(format!(
            "unexpected reply {other:?}"
        ))),
        None => Err(CleanupError::Unavailable("closed the connection".into())),
    }
}

/// What the answer to `End` means: queued (the ID), or why not.
fn committed(reply: Option<CleanupReply>) -> Result<String, CleanupError> {
    match reply {
        Some(CleanupReply::Queued { queue_id }) => Ok(queue_id),
        Some(CleanupReply::Rejected { status }) => Err(CleanupError::Rejected(status)),
        Some(other) => Err(CleanupError::Unavailable(format!(
            "unexpected reply {other:?}"
        ))),
        None => Err(CleanupError::Unavailable("closed the connection".into())),
    }
}

fn unavailable(what: &str) -> impl Fn(std::io::Error) -> CleanupError + '_ {
    move |e| CleanupError::Unavailable(format!("{what}: {e}"))
}

/// One message on its way into the queue, from tokio code.
pub struct CleanupClient {
    ch: Channel,
    timeout: Duration,
    queue_id: String,
}

impl CleanupClient {
    /// Connects to cleanup's socket and opens a message; cleanup answers
    /// with the queue ID it will have ([`CleanupClient::queue_id`]).
    pub async fn open(
        socket: &Path,
        attributes: Vec<(String, String)>,
        flags: u32,
        timeout: Duration,
    ) -> Result<CleanupClient, CleanupError> {
        let mut ch = tokio::time::timeout(timeout, Channel::connect(socket))
            .await
            .map_err(|_| {
                CleanupError::Unavailable(format!("connect to {}: timed out", socket.display()))
            })?
            .map_err(|e| {
                CleanupError::Unavailable(format!("connect to {}: {e}", socket.display()))
            })?;
        let open = CleanupRequest::Open { attributes, flags };
        tokio::time::timeout(timeout, ch.send(&open))
            .await
            .map_err(|_| CleanupError::Unavailable("send: timed out".into()))?
            .map_err(unavailable("send"))?;
        let reply = tokio::time::timeout(timeout, ch.recv::<CleanupReply>())
            .await
            .map_err(|_| CleanupError::Unavailable("reply: timed out".into()))?
            .map_err(|e| CleanupError::Unavailable(format!("reply: {e}")))?;
        let queue_id = opened(reply)?;
        Ok(CleanupClient {
            ch,
            timeout,
            queue_id,
        })
    }

    /// The queue ID of the message being written.
    pub fn queue_id(&self) -> &str {
        &self.queue_id
    }

    async fn send(&mut self, req: &CleanupRequest) -> Result<(), CleanupError> {
        tokio::time::timeout(self.timeout, self.ch.send(req))
            .await
            .map_err(|_| CleanupError::Unavailable("send: timed out".into()))?
            .map_err(unavailable("send"))
    }

    /// The envelope sender ("" = the null sender).
    pub async fn sender(&mut self, address: &ReversePath) -> Result<(), CleanupError> {
        self.send(&CleanupRequest::Sender {
            address: address.clone(),
        })
        .await
    }

    /// One envelope recipient and the address as first received.
    pub async fn recipient(
        &mut self,
        address: &Mailbox,
        original: &str,
    ) -> Result<(), CleanupError> {
        self.recipient_dsn(address, original, None, None).await
    }

    /// One envelope recipient with its RFC 3461 NOTIFY and ORCPT.
    pub async fn recipient_dsn(
        &mut self,
        address: &Mailbox,
        original: &str,
        notify: Option<Notify>,
        orcpt: Option<Orcpt>,
    ) -> Result<(), CleanupError> {
        self.send(&CleanupRequest::Recipient {
            address: address.clone(),
            original: original.to_string(),
            notify,
            orcpt,
        })
        .await
    }

    /// Message content (LF line endings), in frames of at most CHUNK_SIZE.
    pub async fn content(&mut self, data: &[u8]) -> Result<(), CleanupError> {
        for piece in data.chunks(CHUNK_SIZE) {
            self.send(&CleanupRequest::Content {
                data: piece.to_vec(),
            })
            .await?;
        }
        Ok(())
    }

    /// Ends the message and waits until cleanup has written it durably:
    /// the queue ID, or why it was not queued. Dropping the client
    /// instead abandons the message.
    pub async fn commit(mut self) -> Result<String, CleanupError> {
        self.send(&CleanupRequest::End).await?;
        let reply = tokio::time::timeout(self.timeout, self.ch.recv::<CleanupReply>())
            .await
            .map_err(|_| CleanupError::Unavailable("reply: timed out".into()))?
            .map_err(|e| CleanupError::Unavailable(format!("reply: {e}")))?;
        committed(reply)
    }
}

/// One message on its way into the queue, from blocking code (the socket's
/// read and write timeouts bound each step).
pub struct BlockingCleanupClient {
    ch: BlockingChannel,
    queue_id: String,
}

impl BlockingCleanupClient {
    /// Connects to cleanup's socket and opens a message.
    pub fn open(
        socket: &Path,
        attributes: Vec<(String, String)>,
        flags: u32,
        timeout: Duration,
    ) -> Result<BlockingCleanupClient, CleanupError> {
        let mut ch = BlockingChannel::connect(socket, timeout).map_err(|e| {
            CleanupError::Unavailable(format!("connect to {}: {e}", socket.display()))
        })?;
        ch.send(&CleanupRequest::Open { attributes, flags })
            .map_err(unavailable("send"))?;
        let reply = ch
            .recv::<CleanupReply>()
            .map_err(|e| CleanupError::Unavailable(format!("reply: {e}")))?;
        let queue_id = opened(reply)?;
        Ok(BlockingCleanupClient { ch, queue_id })
    }

    /// The queue ID of the message being written.
    pub fn queue_id(&self) -> &str {
        &self.queue_id
    }

    /// The envelope sender ("" = the null sender).
    pub fn sender(&mut self, address: &ReversePath) -> Result<(), CleanupError> {
        self.ch
            .send(&CleanupRequest::Sender {
                address: address.clone(),
            })
            .map_err(unavailable("send"))
    }

    /// One envelope recipient and the address as first received.
    pub fn recipient(&mut self, address: &Mailbox, original: &str) -> Result<(), CleanupError> {
        self.ch
            .send(&CleanupRequest::Recipient {
                address: address.clone(),
                original: original.to_string(),
                notify: None,
                orcpt: None,
            })
            .map_err(unavailable("send"))
    }

    /// Message content (LF line endings), in frames of at most CHUNK_SIZE.
    pub fn content(&mut self, data: &[u8]) -> Result<(), CleanupError> {
        for piece in data.chunks(CHUNK_SIZE) {
            self.ch
                .send(&CleanupRequest::Content {
                    data: piece.to_vec(),
                })
                .map_err(unavailable("send"))?;
        }
        Ok(())
    }

    /// Ends the message and waits until cleanup has written it durably.
    pub fn commit(mut self) -> Result<String, CleanupError> {
        self.ch
            .send(&CleanupRequest::End)
            .map_err(unavailable("send"))?;
        let reply = self
            .ch
            .recv::<CleanupReply>()
            .map_err(|e| CleanupError::Unavailable(format!("reply: {e}")))?;
        committed(reply)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A fake cleanup on a socket: records the requests, answers as told.
    async fn fake_cleanup(
        listener: tokio::net::UnixListener,
        open_answer: CleanupReply,
        end_answer: Option<CleanupReply>,
    ) -> Vec<CleanupRequest> {
        let (s, _) = listener.accept().await.unwrap();
        let mut ch = Channel::new(s);
        let mut seen = Vec::new();
        while let Ok(Some(req)) = ch.recv::<CleanupRequest>().await {
            let answer = match &req {
                CleanupRequest::Open { .. } => Some(open_answer.clone()),
                CleanupRequest::End => end_answer.clone(),
                _ => None,
            };
            let end = matches!(req, CleanupRequest::End);
            seen.push(req);
            if let Some(a) = answer {
                ch.send(&a).await.unwrap();
            }
            if end {
                break;
            }
        }
        seen
    }

    fn socket() -> (scratch::Dir, std::path::PathBuf) {
        let d = scratch::Dir::new();
        let p = d.0.join("cleanup");
        (d, p)
    }

    /// A scratch directory removed on drop (no tempfile dependency here).
    mod scratch {
        pub struct Dir(pub std::path::PathBuf);
        impl Dir {
            pub fn new() -> Dir {
                use std::sync::atomic::{AtomicUsize, Ordering};
                static N: AtomicUsize = AtomicUsize::new(0);
                let p = std::env::temp_dir().join(format!(
                    "postern-ipc-client-{}-{}",
                    std::process::id(),
                    N.fetch_add(1, Ordering::Relaxed)
                ));
                std::fs::create_dir_all(&p).unwrap();
                Dir(p)
            }
        }
        impl Drop for Dir {
            fn drop(&mut self) {
                let _ = std::fs::remove_dir_all(&self.0);
            }
        }
    }

    #[tokio::test]
    async fn a_whole_conversation_in_order_with_chunked_content() {
        let (_d, path) = socket();
        let listener = tokio::net::UnixListener::bind(&path).unwrap();
        let server = tokio::spawn(fake_cleanup(
            listener,
            CleanupReply::Opened {
                queue_id: "Q1".into(),
            },
            Some(CleanupReply::Queued {
                queue_id: "Q1".into(),
            }),
        ));
        let t = Duration::from_secs(5);
        let mut c = CleanupClient::open(&path, vec![("origin".into(), "test".into())], 0, t)
            .await
            .unwrap();
        assert_eq!(c.queue_id(), "Q1");
        c.sender(&ReversePath::Null).await.unwrap();
        c.recipient(&"a@b".parse().unwrap(), "A@b").await.unwrap();
        let big = vec![b'x'; CHUNK_SIZE + 10];
        c.content(&big).await.unwrap();
        assert_eq!(c.commit().await, Ok("Q1".to_string()));
        let seen = server.await.unwrap();
        assert_eq!(seen.len(), 6, "{seen:?}");
        assert!(matches!(&seen[1], CleanupRequest::Sender { address } if address.is_null()));
        assert!(matches!(&seen[3], CleanupRequest::Content { data } if data.len() == CHUNK_SIZE));
        assert!(matches!(&seen[4], CleanupRequest::Content { data } if data.len() == 10));
        assert_eq!(seen[5], CleanupRequest::End);
    }

    #[tokio::test]
    async fn refusals_and_faults_are_sorted() {
        let (_d, path) = socket();
        let t = Duration::from_secs(5);
        // Nobody listening: temporary.
        let e = CleanupClient::open(&path, vec![], 0, t)
            .await
            .err()
            .unwrap();
        assert!(e.is_temporary(), "{e}");
        assert!(matches!(e, CleanupError::Unavailable(_)));
        // A permanent refusal at End keeps cleanup's words.
        let listener = tokio::net::UnixListener::bind(&path).unwrap();
        let server = tokio::spawn(fake_cleanup(
            listener,
            CleanupReply::Opened {
                queue_id: "Q2".into(),
            },
            Some(CleanupReply::Rejected {
                status: DeliveryStatus::permanent(3, 4, "message file too big"),
            }),
        ));
        let c = CleanupClient::open(&path, vec![], 0, t).await.unwrap();
        let e = c.commit().await.unwrap_err();
        assert!(!e.is_temporary());
        assert_eq!(e.to_string(), "5.3.4 message file too big");
        server.await.unwrap();
    }

    #[test]
    fn the_blocking_client_speaks_the_same_conversation() {
        let (_d, path) = socket();
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let listener = rt.block_on(async { tokio::net::UnixListener::bind(&path).unwrap() });
        let server = std::thread::spawn(move || {
            rt.block_on(fake_cleanup(
                listener,
                CleanupReply::Opened {
                    queue_id: "Q3".into(),
                },
                Some(CleanupReply::Queued {
                    queue_id: "Q3".into(),
                }),
            ))
        });
        let mut c = BlockingCleanupClient::open(&path, vec![], 0, Duration::from_secs(5)).unwrap();
        c.sender(&"s@x".parse().unwrap()).unwrap();
        c.recipient(&"r@y".parse().unwrap(), "r@y").unwrap();
        c.content(b"Subject: x\n\nbody\n").unwrap();
        assert_eq!(c.commit(), Ok("Q3".to_string()));
        assert_eq!(server.join().unwrap().len(), 5);
    }
}
