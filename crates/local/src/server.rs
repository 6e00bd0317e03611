//! The local delivery agent as a service: takes qmgr's delivery requests
//! (with the queue file as an open descriptor), delivers each recipient with
//! [`LocalDelivery`], and answers one status per recipient.
//!
//! SECURITY: local never opens the queue directory; it reads the message
//! from the descriptor qmgr passes. Mail for non-local alias targets is
//! re-injected through cleanup ([`CleanupForwarder`]), never sent directly.

use crate::{LocalConfig, LocalDelivery, Message, Outcome};
use postern_ipc::{
    BlockingCleanupClient, CHUNK_SIZE, Channel, CleanupError, DeliveryReply, DeliveryRequest,
    DeliveryStatus, Mailbox,
};
use std::cell::RefCell;
use std::io::Read;
use std::path::PathBuf;
use std::time::Duration;
use tracing::warn;

/// Re-injects mail for remote alias/.forward targets through cleanup, with
/// the original envelope sender (as Postfix's local does).
pub struct CleanupForwarder {
    socket: PathBuf,
    timeout: Duration,
}

impl CleanupForwarder {
    /// A forwarder that talks to cleanup at QUEUE_DIR/public/cleanup.
    pub fn new(queue_dir: &std::path::Path, timeout: Duration) -> CleanupForwarder {
        CleanupForwarder {
            socket: queue_dir.join("private").join("cleanup"),
            timeout,
        }
    }

    fn try_forward(
        &self,
        msg: &Message,
        recipients: &[Mailbox],
        delivered_to: Option<&str>,
    ) -> Result<String, CleanupError> {
        let mut c = BlockingCleanupClient::open(
            &self.socket,
            vec![
                ("origin".into(), "local".into()),
                ("protocol".into(), "local".into()),
                ("forwarded_from".into(), msg.queue_id.to_string()),
            ],
            postern_ipc::cleanup_flags::NO_RECEIVED,
            self.timeout,
        )?;
        c.sender(msg.sender)?;
        for r in recipients {
            c.recipient(r, &r.to_string())?;
        }
        if let Some(d) = delivered_to {
            // Lets the next hop (or we, when it comes back) see the loop.
            let line = format!("Delivered-To: {}\n", d.replace(['\r', '\n'], ""));
            c.content(line.as_bytes())?;
        }
        let mut reader =
            postern_queue::content_reader_for(msg.content, msg.content_offset, msg.content_len);
        let mut buf = vec![0u8; CHUNK_SIZE];
        loop {
            let n = reader
                .read(&mut buf)
                .map_err(|e| CleanupError::Unavailable(format!("read queue file: {e}")))?;
            if n == 0 {
                break;
            }
            c.content(&buf[..n])?;
        }
        c.commit()
    }
}

impl crate::Forwarder for CleanupForwarder {
    fn forward(&mut self, msg: &Message, recipients: &[Mailbox]) -> Result<(), Outcome> {
        self.forward_delivered_to_opt(msg, recipients, None)
    }

    fn forward_delivered_to(
        &mut self,
        msg: &Message,
        recipients: &[Mailbox],
        delivered_to: &str,
    ) -> Result<(), Outcome> {
        self.forward_delivered_to_opt(msg, recipients, Some(delivered_to))
    }
}

impl CleanupForwarder {
    fn forward_delivered_to_opt(
        &mut self,
        msg: &Message,
        recipients: &[Mailbox],
        d: Option<&str>,
    ) -> Result<(), Outcome> {
        match self.try_forward(msg, recipients, d) {
            Ok(_) => Ok(()),
            Err(e) => Err(DeliveryStatus::temporary(
                3,
                0,
                format!("cannot forward mail: {e}"),
            )),
        }
    }
}

/// The per-process state of the local service.
pub struct LocalService {
    delivery: RefCell<LocalDelivery>,
    forwarder: RefCell<CleanupForwarder>,
}

impl LocalService {
    /// Serves one qmgr connection: one request, one status per recipient.
    pub async fn serve(&self, mut ch: Channel) {
        let req = match ch.recv::<DeliveryRequest>().await {
            Ok(Some(r)) => r,
            Ok(None) => return,
            Err(e) => {
                warn!("bad delivery request: {e}");
                return;
            }
        };
        let Some(fd) = ch.take_fd() else {
            warn!(
                "{}: delivery request without queue file descriptor",
                req.queue_id
            );
            for r in &req.recipients {
                let st = DeliveryReply::Status {
                    index: r.index,
                    status: DeliveryStatus::temporary(3, 0, "internal error: no queue file"),
                };
                if ch.send(&st).await.is_err() {
                    return;
                }
            }
            let _ = ch.send(&DeliveryReply::Finished).await;
            return;
        };
        let file = std::fs::File::from(fd);
        let msg = Message {
            queue_id: &req.queue_id,
            sender: &req.sender,
            arrival: req.arrival,
            content: &file,
            content_offset: req.content_offset,
            content_len: req.content_len,
        };
        // Where this message already went (earlier requests, earlier
        // recipients of this one): each destination gets one copy.
        let mut delivered: std::collections::HashSet<String> =
            req.delivered.iter().cloned().collect();
        for r in &req.recipients {
            // Delivery is blocking file I/O; this process serves one client,
            // so blocking its runtime thread delays nobody else.
            let outcome = {
                let mut d = self.delivery.borrow_mut();
                let mut f = self.forwarder.borrow_mut();
                d.deliver_once(&msg, &r.address, &r.original, &mut *f, &mut delivered)
            };
            if ch
                .send(&DeliveryReply::Status {
                    index: r.index,
                    status: outcome,
                })
                .await
                .is_err()
            {
                return;
            }
        }
        let mut keys: Vec<String> = delivered.into_iter().collect();
        keys.sort();
        if ch.send(&DeliveryReply::Delivered { keys }).await.is_err() {
            return;
        }
        let _ = ch.send(&DeliveryReply::Finished).await;
    }
}

/// The program: a one-client-at-a-time service on the skeleton.
pub fn main() -> ! {
    postern_service::single_server(
        "local",
        |ctx| {
            let config = LocalConfig::from_main(&ctx.config)?;
            let delivery = LocalDelivery::new(config)?;
            let timeout = ctx
                .config
                .time("ipc_timeout")
                .map_err(|e| e.to_string())?
                .min(Duration::from_secs(300));
            Ok(LocalService {
                delivery: RefCell::new(delivery),
                forwarder: RefCell::new(CleanupForwarder::new(&ctx.queue_dir(), timeout)),
            })
        },
        |svc: std::rc::Rc<LocalService>, conn| async move {
            match conn {
                postern_service::Connection::Unix { stream } => {
                    svc.serve(Channel::new(stream)).await
                }
                postern_service::Connection::Tcp { peer, .. } => {
                    warn!("refusing TCP client {peer}: local is a unix service")
                }
            }
        },
    )
}
