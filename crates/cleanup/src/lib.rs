//! cleanup — the one way into the queue.
//!
//! Every message, whatever door it came in by (smtpd, pickup, local's
//! forwarding, qmgr's bounces), reaches the queue through cleanup: it
//! receives the envelope and content as [`CleanupRequest`] messages, adds the
//! Received header and any missing Message-ID/Date (and From for local mail),
//! writes the queue file in incoming/ (temporary file, write, fsync, rename,
//! fsync of the directory), answers [`CleanupReply::Queued`] only then, and
//! tells qmgr.
//!
//! SECURITY: cleanup trusts its clients no more than their messages' framing:
//! header text from mail is copied, never interpreted beyond field names;
//! anything added is stripped of control characters. It needs write access
//! to incoming/ only, and the qmgr trigger socket.
//!
//! STANDARDS: RFC 5322 (header fields), RFC 5321 section 4.4 (trace fields).
//!
//! PARAMETERS: queue_directory, myhostname, mail_name, myorigin,
//! header_size_limit, message_size_limit, hopcount_limit.
#![forbid(unsafe_code)]

pub mod headers;

use headers::{HeaderSummary, Origin, compact_timestamp, received_header, rfc5322_date};
use postern_config::MainCf;
use postern_ipc::{
    Channel, CleanupReply, CleanupRequest, DeliveryStatus, ReversePath, Trigger, cleanup_flags,
};
use postern_queue::{Envelope, QueueDirs, QueueFileWriter, Recipient};
use std::path::PathBuf;
use std::time::SystemTime;
use tracing::{debug, info, warn};

/// cleanup's settings, read once at start.
#[derive(Debug, Clone)]
pub struct Cleanup {
    dirs: QueueDirs,
    myhostname: String,
    myorigin: String,
    mail_name: String,
    header_size_limit: usize,
    message_size_limit: u64,
    hopcount_limit: usize,
    qmgr_socket: PathBuf,
}

/// How a message failed; decides 4xx or 5xx at smtpd.
type Failure = DeliveryStatus;

impl Cleanup {
    /// Reads the parameters cleanup uses.
    pub fn from_config(main: &MainCf) -> Result<Cleanup, String> {
        let e = |e: postern_config::ConfigError| e.to_string();
        let queue = main.path("queue_directory");
        Ok(Cleanup {
            dirs: QueueDirs::new(&queue),
            myhostname: main.str("myhostname"),
            myorigin: main.str("myorigin"),
            mail_name: main.str("mail_name"),
            header_size_limit: main.bounded("header_size_limit").map_err(e)?,
            message_size_limit: main.size("message_size_limit").map_err(e)?,
            hopcount_limit: main.bounded("hopcount_limit").map_err(e)?,
            qmgr_socket: queue.join("private").join("qmgr"),
        })
    }

    /// Serves one client connection: at most one message.
    pub async fn serve(&self, mut ch: Channel) {
        let (attributes, flags) = match ch.recv::<CleanupRequest>().await {
            Ok(Some(CleanupRequest::Open { attributes, flags })) => (attributes, flags),
            Ok(None) => return,
            Ok(Some(other)) => {
                warn!("unexpected request before Open: {:?}", kind_name(&other));
                return;
            }
            Err(e) => {
                warn!("bad request from client: {e}");
                return;
            }
        };
        let mut writer = match QueueFileWriter::create(&self.dirs) {
            Ok(w) => w,
            Err(e) => {
                warn!(
                    "cannot create queue file in {}: {e}",
                    self.dirs.dir(postern_queue::Queue::Incoming).display()
                );
                let _ = ch
                    .send(&CleanupReply::Rejected {
                        status: DeliveryStatus::temporary(3, 0, "queue file write error"),
                    })
                    .await;
                return;
            }
        };
        let id = writer.queue_id().to_string();
        if ch
            .send(&CleanupReply::Opened {
                queue_id: id.clone(),
            })
            .await
            .is_err()
        {
            writer.abort();
            return;
        }
        let mut msg = MessageState {
            arrival: SystemTime::now(),
            origin: Origin::from_attributes(&attributes),
            attributes,
            flags,
            sender: None,
            recipients: Vec::new(),
            recipient_keys: std::collections::HashSet::new(),
            envelope_written: false,
            header_buf: Vec::new(),
            header_done: false,
            failure: None,
            message_id: None,
        };
        loop {
            let req = match ch.recv::<CleanupRequest>().await {
                Ok(Some(r)) => r,
                Ok(None) => {
                    // Client gave up (RSET, QUIT, lost connection): nothing is queued.
                    writer.abort();
                    return;
                }
                Err(e) => {
                    warn!("{id}: bad request from client: {e}");
                    writer.abort();
                    return;
                }
            };
            match req {
                CleanupRequest::Sender { address } if !msg.envelope_written => {
                    msg.sender = Some(address)
                }
                CleanupRequest::Recipient {
                    address,
                    original,
                    notify,
                    orcpt,
                } if !msg.envelope_written => msg.add_recipient(
                    &id,
                    Recipient {
                        address,
                        original,
                        notify,
                        orcpt,
                        done: false,
                    },
                ),
                CleanupRequest::Content { data } => {
                    if msg.failure.is_none()
                        && let Err(f) = self.content(&mut writer, &id, &mut msg, &data)
                    {
                        msg.failure = Some(f);
                    }
                }
                CleanupRequest::End => break,
                other => {
                    warn!("{id}: unexpected {} request", kind_name(&other));
                    writer.abort();
                    return;
                }
            }
        }
        if msg.failure.is_none()
            && let Err(f) = self.finish_header(&mut writer, &id, &mut msg, true)
        {
            msg.failure = Some(f);
        }
        if msg.failure.is_none()
            && writer.content_len() > self.message_size_limit
            && self.message_size_limit > 0
        {
            msg.failure = Some(DeliveryStatus::permanent(3, 4, "message file too big"));
        }
        if let Some(f) = msg.failure {
            writer.abort();
            info!("{id}: reject: {}", f.text());
            let _ = ch.send(&CleanupReply::Rejected { status: f }).await;
            return;
        }
        match writer.commit() {
            Ok(qid) => {
                if let Some(mid) = &msg.message_id {
                    info!("{qid}: message-id={mid}");
                }
                let _ = ch
                    .send(&CleanupReply::Queued {
                        queue_id: qid.to_string(),
                    })
                    .await;
                if let Err(e) = postern_ipc::send_trigger(&self.qmgr_socket, Trigger::ScanIncoming)
                {
                    // Not fatal: qmgr's periodic wakeup finds the file anyway.
                    warn!(
                        "{qid}: cannot notify qmgr at {}: {e}",
                        self.qmgr_socket.display()
                    );
                }
            }
            Err(e) => {
                warn!("{id}: cannot write queue file: {e}");
                let _ = ch
                    .send(&CleanupReply::Rejected {
                        status: DeliveryStatus::temporary(3, 0, "queue file write error"),
                    })
                    .await;
            }
        }
    }

    fn content(
        &self,
        w: &mut QueueFileWriter,
        id: &str,
        msg: &mut MessageState,
        data: &[u8],
    ) -> Result<(), Failure> {
        if !msg.envelope_written {
            self.write_envelope(w, msg)?;
        }
        if msg.header_done {
            return w.write_content(data).map_err(io_failure);
        }
        msg.header_buf.extend_from_slice(data);
        self.finish_header(w, id, msg, false)
    }

    fn write_envelope(
        &self,
        w: &mut QueueFileWriter,
        msg: &mut MessageState,
    ) -> Result<(), Failure> {
        let Some(sender) = msg.sender.clone() else {
            return Err(DeliveryStatus::permanent(5, 1, "no sender"));
        };
        if msg.recipients.is_empty() {
            return Err(DeliveryStatus::permanent(5, 1, "no recipients"));
        }
        let env = Envelope {
            arrival: msg.arrival,
            sender,
            recipients: msg.recipients.clone(),
            attributes: msg.attributes.clone(),
        };
        w.write_envelope(&env).map_err(io_failure)?;
        msg.envelope_written = true;
        Ok(())
    }

    /// Once the whole header is buffered (or the header limit is reached, or
    /// the message ended), writes the added fields, the header and what came
    /// after it.
    fn finish_header(
        &self,
        w: &mut QueueFileWriter,
        id: &str,
        msg: &mut MessageState,
        complete: bool,
    ) -> Result<(), Failure> {
        if msg.header_done {
            return Ok(());
        }
        if !msg.envelope_written {
            self.write_envelope(w, msg)?;
        }
        let over = msg.header_buf.len() > self.header_size_limit;
        let summary = match headers::scan(&msg.header_buf, complete || over) {
            Some(s) => s,
            None => return Ok(()),
        };
        if summary.hops >= self.hopcount_limit {
            return Err(DeliveryStatus::permanent(4, 6, "too many hops"));
        }
        let added = self.added_fields(id, msg, &summary);
        w.write_content(added.as_bytes()).map_err(io_failure)?;
        let buf = std::mem::take(&mut msg.header_buf);
        w.write_content(&buf[..summary.header_len])
            .map_err(io_failure)?;
        if summary.needs_separator {
            w.write_content(b"\n").map_err(io_failure)?;
        }
        w.write_content(&buf[summary.header_len..])
            .map_err(io_failure)?;
        msg.header_done = true;
        Ok(())
    }

    fn added_fields(&self, id: &str, msg: &mut MessageState, summary: &HeaderSummary) -> String {
        let now = SystemTime::now();
        let mut out = String::new();
        if msg.flags & cleanup_flags::NO_RECEIVED == 0 {
            let single = if msg.recipients.len() == 1 {
                Some(msg.recipients[0].original.as_str())
            } else {
                None
            };
            out.push_str(&received_header(
                &msg.origin,
                &self.myhostname,
                &self.mail_name,
                id,
                single,
                now,
            ));
        }
        // Added fields go before the original header, Received first (trace
        // fields must stay on top); Postfix appends the others at the end of
        // the header, which is equally valid.
        match &summary.message_id {
            Some(mid) => msg.message_id = Some(mid.clone()),
            None => {
                let mid = format!("<{}.{}@{}>", compact_timestamp(now), id, self.myhostname);
                out.push_str(&format!("Message-Id: {mid}\n"));
                msg.message_id = Some(mid);
            }
        }
        if !summary.has_date {
            out.push_str(&format!("Date: {}\n", rfc5322_date(msg.arrival)));
        }
        if !summary.has_from && msg.flags & cleanup_flags::ADD_MISSING_HEADERS != 0 {
            let from = match &msg.sender {
                Some(ReversePath::Mailbox(m)) => m.to_string(),
                Some(ReversePath::Null) | None => format!("MAILER-DAEMON@{}", self.myorigin),
            };
            out.push_str(&format!("From: {}\n", from.replace(['\r', '\n'], "")));
        }
        out
    }
}

struct MessageState {
    arrival: SystemTime,
    origin: Origin,
    attributes: Vec<(String, String)>,
    flags: u32,
    sender: Option<ReversePath>,
    recipients: Vec<Recipient>,
    /// (address key, original) of each recipient: the duplicate check.
    recipient_keys: std::collections::HashSet<(String, String)>,
    envelope_written: bool,
    header_buf: Vec<u8>,
    header_done: bool,
    failure: Option<Failure>,
    message_id: Option<String>,
}

impl MessageState {
    /// The same recipient twice in one transaction is kept once, as
    /// Postfix's cleanup does (same mailbox, domains compared
    /// case-insensitively, and same original address). Different addresses
    /// for one mailbox are local's to merge (its duplicate filter).
    fn add_recipient(&mut self, id: &str, r: Recipient) {
        if self
            .recipient_keys
            .insert((r.address.key(), r.original.clone()))
        {
            self.recipients.push(r);
        } else {
            debug!("{id}: duplicate recipient <{}> dropped", r.address);
        }
    }
}

fn io_failure(e: std::io::Error) -> Failure {
    warn!("queue file write error: {e}");
    DeliveryStatus::temporary(3, 0, "queue file write error")
}

fn kind_name(r: &CleanupRequest) -> &'static str {
    match r {
        CleanupRequest::Open { .. } => "Open",
        CleanupRequest::Sender { .. } => "Sender",
        CleanupRequest::Recipient { .. } => "Recipient",
        CleanupRequest::Content { .. } => "Content",
        CleanupRequest::End => "End",
    }
}

/// The program: a one-client-at-a-time service on the skeleton.
pub fn main() -> ! {
    postern_service::single_server(
        "cleanup",
        |ctx| Cleanup::from_config(&ctx.config),
        |cleanup: std::rc::Rc<Cleanup>, conn| async move {
            match conn {
                postern_service::Connection::Unix { stream } => {
                    cleanup.serve(Channel::new(stream)).await
                }
                postern_service::Connection::Tcp { peer, .. } => {
                    warn!("refusing TCP client {peer}: cleanup is a unix service")
                }
            }
        },
    )
}
