//! `postern queue`: Postfix's queue commands in one place.
//!
//! - `list [-j]` (= `mailq`, `postqueue -p` / `-j`): the queue in Postfix's
//!   layout, with each deferred recipient's reason from qmgr's defer log
//!   (`defer/ID`, postern-queue's `defer_log`); `-j` prints one JSON object
//!   per message with Postfix's field names.
//! - `delete`, `hold`, `release`, `requeue` (`postsuper -d -h -H -r`), root
//!   only, with Postfix's words on stderr and in the mail log.
//! - `flush` (`postqueue -f`): the Flush trigger to qmgr.
//! - `show ID` (`postcat -q`): envelope and content.
//!
//! A message in active/ is being delivered by qmgr: while the mail system
//! runs, delete, hold and requeue refuse it ("message is being delivered;
//! try again") instead of taking the file from under qmgr; with the mail
//! system stopped, active/ holds only leftovers and they are handled like
//! any other message. `requeue` moves the message to incoming/ (Postfix
//! re-runs it through cleanup; here qmgr simply takes it at once).
//!
//! SECURITY: runs as its caller. The changing commands refuse anyone but
//! root; listing and show need read access to the queue (root or the mail
//! system's users); flush needs access to `private/qmgr` (root or group
//! postern-ipc: the trigger socket is private, docs/security.md). Queue IDs
//! from the command line are validated with `QueueId::parse` before they
//! are joined to a path.
//!
//! PARAMETERS: queue_directory, maillog_file, syslog_name, myhostname.

use crate::sendmail::mailq_time;
use crate::{Failure, fail, usage};
use postern_config::MainCf;
use postern_queue::defer_log::{self, DeferEntry};
use postern_queue::{Queue, QueueDirs, QueueFile, QueueId};
use postern_smtp_proto::ReversePath;
use postern_status::sysexits::{EX_NOPERM, EX_TEMPFAIL};
use std::io::{self, BufRead, Write};
use std::path::Path;
use std::time::{SystemTime, UNIX_EPOCH};

/// One message as the listings show it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Listed {
    /// The queue holding it.
    pub queue: Queue,
    /// Its queue ID.
    pub id: QueueId,
    /// Arrival time.
    pub arrival: SystemTime,
    /// Content size in bytes.
    pub size: u64,
    /// Envelope sender, bare ("" for the null sender).
    pub sender: String,
    /// Recipients not yet done, each with its defer reason when known.
    pub recipients: Vec<(String, Option<String>)>,
    /// Set when the file could not be read: why (listed as such).
    pub error: Option<String>,
}

/// Why the queue could not be listed: (exit status, message).
pub type ListError = (i32, String);

fn denied() -> ListError {
    (EX_NOPERM, "permission denied: run mailq as root".into())
}

/// Reads every message of maildrop/, incoming/, active/, deferred/ and
/// hold/, oldest first, with the reasons of its defer log.
pub fn read_queue(dirs: &QueueDirs) -> Result<Vec<Listed>, ListError> {
    let mut entries = Vec::new();
    for q in [
        Queue::Maildrop,
        Queue::Incoming,
        Queue::Active,
        Queue::Deferred,
        Queue::Hold,
    ] {
        match dirs.list(q) {
            Ok(ids) => entries.extend(ids.into_iter().map(|id| (id, q))),
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) if e.kind() == io::ErrorKind::PermissionDenied => return Err(denied()),
            Err(e) => {
                return Err((
                    EX_TEMPFAIL,
                    format!("cannot read {}: {e}", dirs.dir(q).display()),
                ));
            }
        }
    }
    entries.sort_by(|a, b| a.0.cmp(&b.0));
    let mut out = Vec::new();
    for (id, q) in entries {
        let mut item = Listed {
            queue: q,
            id: id.clone(),
            arrival: UNIX_EPOCH,
            size: 0,
            sender: String::new(),
            recipients: Vec::new(),
            error: None,
        };
        let file = match std::fs::File::open(dirs.file(q, &id)) {
            Ok(f) => f,
            Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
            Err(e) if e.kind() == io::ErrorKind::PermissionDenied => return Err(denied()),
            Err(e) => {
                item.error = Some(format!("cannot read: {e}"));
                out.push(item);
                continue;
            }
        };
        let qf = match QueueFile::from_file(file, id.clone()) {
            Ok(qf) => qf,
            Err(e) => {
                item.error = Some(e.to_string());
                out.push(item);
                continue;
            }
        };
        let env = qf.envelope();
        item.arrival = env.arrival;
        item.size = qf.content_len();
        item.sender = match &env.sender {
            // A version 1 maildrop file's empty sender was the submitter.
            ReversePath::Null if q == Queue::Maildrop && qf.version() == 1 => {
                env.attribute("local_user").unwrap_or("").to_string()
            }
            s => s.bare(),
        };
        let reasons = defer_log::read(dirs, &id).unwrap_or_default();
        item.recipients = env
            .recipients
            .iter()
            .filter(|r| !r.done)
            .map(|r| {
                let a = r.address.to_string();
                let why = reasons
                    .iter()
                    .find(|e: &&DeferEntry| e.address == a)
                    .map(|e| e.reason.clone());
                (a, why)
            })
            .collect();
        out.push(item);
    }
    Ok(out)
}

/// Postfix's mailq layout. Recipients with a reason come first, each group
/// with the same reason under one `(reason)` line right-aligned to column
/// 78, as Postfix's showq prints its defer log; then the others.
pub fn format_mailq(items: &[Listed], out: &mut impl Write) -> io::Result<()> {
    if items.is_empty() {
        return writeln!(out, "Mail queue is empty");
    }
    writeln!(
        out,
        "-Queue ID-  --Size-- ----Arrival Time---- -Sender/Recipient-------"
    )?;
    let mut total = 0u64;
    for m in items {
        if let Some(e) = &m.error {
            writeln!(out, "{:<11} ({e})\n", m.id)?;
            continue;
        }
        let status = match m.queue {
            Queue::Active => '*',
            Queue::Hold => '!',
            _ => ' ',
        };
        let sender = if m.sender.is_empty() {
            "MAILER-DAEMON"
        } else {
            &m.sender
        };
        total += m.size;
        writeln!(
            out,
            "{:<11} {:>7} {:>20.20} {}",
            format!("{}{status}", m.id),
            m.size,
            mailq_time(m.arrival),
            sender
        )?;
        if m.queue == Queue::Maildrop {
            writeln!(out, "{:41}(waiting for pickup)", "")?;
        }
        let mut last: Option<&str> = None;
        for (a, why) in m.recipients.iter().filter(|r| r.1.is_some()) {
            let why = why.as_deref().unwrap_or("");
            if last != Some(why) {
                let pad = 76usize.saturating_sub(why.chars().count());
                writeln!(out, "{:pad$}({why})", "")?;
                last = Some(why);
            }
            writeln!(out, "{:41}{a}", "")?;
        }
        for (a, _) in m.recipients.iter().filter(|r| r.1.is_none()) {
            writeln!(out, "{:41}{a}", "")?;
        }
        writeln!(out)?;
    }
    let n = items.len();
    writeln!(
        out,
        "-- {} Kbytes in {} Request{}.",
        total.div_ceil(1024),
        n,
        if n == 1 { "" } else { "s" }
    )
}

/// A JSON string literal for `s` (RFC 8259: `"` and `\` escaped, control
/// characters as `\n`, `\t`... or `\u00XX`; everything else as UTF-8).
pub fn json_string(s: &str) -> String {
    let mut o = String::with_capacity(s.len() + 2);
    o.push('"');
    for c in s.chars() {
        match c {
            '"' => o.push_str("\\\""),
            '\\' => o.push_str("\\\\"),
            '\n' => o.push_str("\\n"),
            '\r' => o.push_str("\\r"),
            '\t' => o.push_str("\\t"),
            '\u{8}' => o.push_str("\\b"),
            '\u{c}' => o.push_str("\\f"),
            c if (c as u32) < 0x20 || c == '\u{7f}' => {
                o.push_str(&format!("\\u{:04x}", c as u32));
            }
            c => o.push(c),
        }
    }
    o.push('"');
    o
}

/// `postqueue -j`: one JSON object per message and line, with Postfix's
/// field names (queue_name, queue_id, arrival_time, message_size, sender,
/// recipients with address and, when known, delay_reason).
pub fn format_json(items: &[Listed], out: &mut impl Write) -> io::Result<()> {
    for m in items.iter().filter(|m| m.error.is_none()) {
        let secs = m
            .arrival
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        let rcpts: Vec<String> = m
            .recipients
            .iter()
            .map(|(a, why)| match why {
                Some(w) => format!(
                    "{{\"address\": {}, \"delay_reason\": {}}}",
                    json_string(a),
                    json_string(w)
                ),
                None => format!("{{\"address\": {}}}", json_string(a)),
            })
            .collect();
        writeln!(
            out,
            "{{\"queue_name\": {}, \"queue_id\": {}, \"arrival_time\": {secs}, \
             \"message_size\": {}, \"sender\": {}, \"recipients\": [{}]}}",
            json_string(m.queue.name()),
            json_string(m.id.as_str()),
            m.size,
            json_string(&m.sender),
            rcpts.join(", ")
        )?;
    }
    Ok(())
}

/// The operations of `postsuper`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Op {
    Delete,
    Hold,
    Release,
    Requeue,
}

impl Op {
    /// The queues the operation looks in by default, and may be named.
    fn queues(self) -> (&'static [Queue], &'static [Queue]) {
        use Queue::*;
        match self {
            Op::Delete => (
                &[Incoming, Active, Deferred, Hold],
                &[Maildrop, Incoming, Active, Deferred, Hold, Corrupt],
            ),
            Op::Hold => (&[Incoming, Active, Deferred], &[Incoming, Active, Deferred]),
            Op::Release => (&[Hold], &[Hold]),
            Op::Requeue => (
                &[Incoming, Active, Deferred, Hold],
                &[Incoming, Active, Deferred, Hold],
            ),
        }
    }

    /// Postfix's per-message word and summary word.
    fn words(self) -> (&'static str, &'static str) {
        match self {
            Op::Delete => ("removed", "Deleted"),
            Op::Hold => ("placed on hold", "Placed on hold"),
            Op::Release => ("released from hold", "Released from hold"),
            Op::Requeue => ("requeued", "Requeued"),
        }
    }
}

/// Where postsuper's lines go besides stderr: the mail log, as
/// `postern/postsuper[PID]: ...` (none when maillog_file is master's own
/// stdout or stderr, which this process does not have).
fn open_mail_log(main: &MainCf) {
    if matches!(
        main.str("maillog_file").as_str(),
        "/dev/stdout" | "/dev/stderr"
    ) {
        return;
    }
    if let Ok(choice) = postern_master::open_log(main, false) {
        postern_service::log::init_logging_with("postsuper", main, false, choice.sink);
    }
}

fn say(line: &str) {
    eprintln!("postsuper: {line}");
    postern_service::log::emit(postern_service::log::Severity::Info, line);
}

fn warn(line: &str) {
    eprintln!("postsuper: warning: {line}");
    postern_service::log::emit(postern_service::log::Severity::Warning, line);
}

/// What one operation on one message came to.
enum Outcome {
    Done,
    NotFound,
    Busy,
}

/// Files that belong to a message besides its queue file.
fn remove_side_files(dirs: &QueueDirs, id: &QueueId) {
    defer_log::remove(dirs, id);
    postern_queue::clear_next_attempt(&dirs.file(Queue::Deferred, id));
    let _ = std::fs::remove_file(dirs.dir(Queue::Deferred).join(format!(".warned-{id}")));
}

/// Performs `op` on `id`, looking in `queues` (twice, so that one
/// concurrent move by qmgr is not missed).
fn operate(
    dirs: &QueueDirs,
    op: Op,
    id: &QueueId,
    queues: &[Queue],
    running: bool,
) -> io::Result<Outcome> {
    for _ in 0..2 {
        for &q in queues {
            let path = dirs.file(q, id);
            if std::fs::symlink_metadata(&path).is_err() {
                continue;
            }
            if q == Queue::Active && running {
                return Ok(Outcome::Busy);
            }
            let result = match op {
                Op::Delete => std::fs::remove_file(&path).map(|()| {
                    let _ = postern_queue::sync_dir(&dirs.dir(q));
                    remove_side_files(dirs, id);
                }),
                Op::Hold => dirs.move_file(id, q, Queue::Hold).map(|()| {
                    postern_queue::clear_next_attempt(&dirs.file(Queue::Deferred, id));
                }),
                Op::Release => {
                    // Due at once: the mtime survives the rename.
                    let _ = postern_queue::set_next_attempt(&path, SystemTime::now());
                    postern_queue::clear_next_attempt(&dirs.file(Queue::Deferred, id));
                    dirs.move_file(id, q, Queue::Deferred)
                }
                Op::Requeue => dirs.move_file(id, q, Queue::Incoming).map(|()| {
                    postern_queue::clear_next_attempt(&dirs.file(Queue::Deferred, id));
                }),
            };
            match result {
                Ok(()) => return Ok(Outcome::Done),
                // qmgr moved it meanwhile: look again.
                Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
                Err(e) => return Err(e),
            }
        }
    }
    Ok(Outcome::NotFound)
}

/// `postern queue delete|hold|release|requeue ID...|ALL|- [QUEUE]`.
fn postsuper(config_dir: &Path, op: Op, name: &str, args: &[String]) -> Result<(), Failure> {
    let (default, allowed) = op.queues();
    let mut args: Vec<String> = args.to_vec();
    let named = match args.last().and_then(|a| Queue::from_name(a)) {
        Some(q) if args.len() > 1 => {
            if !allowed.contains(&q) {
                return Err(usage(format!(
                    "postern: queue {name}: cannot {name} messages in {}/",
                    q.name()
                )));
            }
            args.pop();
            Some(q)
        }
        _ => None,
    };
    if args.is_empty() {
        return Err(usage(format!(
            "postern: queue {name}: name a queue ID, ALL or -"
        )));
    }
    if !nix::unistd::geteuid().is_root() {
        return Err(fail(
            "postsuper: fatal: use of this command is reserved for the superuser",
        ));
    }
    let main = MainCf::load(config_dir).map_err(|e| fail(format!("postsuper: fatal: {e}")))?;
    let dirs = QueueDirs::new(main.path("queue_directory"));
    let queues: Vec<Queue> = match named {
        Some(q) => vec![q],
        None => default.to_vec(),
    };
    let running = postern_master::running_pid(config_dir)
        .ok()
        .flatten()
        .is_some();
    open_mail_log(&main);
    // The IDs: named, from stdin ("-"), or every message in the queues.
    let mut ids: Vec<(QueueId, bool)> = Vec::new();
    let mut bad = false;
    for a in &args {
        if a == "ALL" {
            for &q in &queues {
                for id in dirs.list(q).unwrap_or_default() {
                    ids.push((id, false));
                }
            }
        } else if a == "-" {
            for line in io::stdin().lock().lines() {
                let line = line.map_err(|e| fail(format!("postsuper: fatal: stdin: {e}")))?;
                match QueueId::parse(line.trim()) {
                    Some(id) => ids.push((id, true)),
                    None if line.trim().is_empty() => {}
                    None => {
                        warn(&format!("invalid mail queue id: {}", line.trim()));
                        bad = true;
                    }
                }
            }
        } else {
            match QueueId::parse(a) {
                Some(id) => ids.push((id, true)),
                None => {
                    warn(&format!("invalid mail queue id: {a}"));
                    bad = true;
                }
            }
        }
    }
    let (word, summary) = op.words();
    let mut count = 0usize;
    for (id, explicit) in ids {
        match operate(&dirs, op, &id, &queues, running) {
            Ok(Outcome::Done) => {
                say(&format!("{id}: {word}"));
                count += 1;
            }
            Ok(Outcome::NotFound) => {
                if explicit {
                    warn(&format!("{id}: no such message in {}", queue_list(&queues)));
                    bad = true;
                }
            }
            Ok(Outcome::Busy) => {
                warn(&format!(
                    "{id}: message is being delivered; try again (or stop the mail system first)"
                ));
                bad |= explicit;
            }
            Err(e) => {
                warn(&format!("{id}: cannot {name}: {e}"));
                bad = true;
            }
        }
    }
    if count > 0 {
        say(&format!(
            "{summary}: {count} message{}",
            if count > 1 { "s" } else { "" }
        ));
        // Tell qmgr at once; without it the next periodic scan finds the mail.
        let trigger = match op {
            Op::Requeue => Some(postern_ipc::Trigger::ScanIncoming),
            Op::Release => Some(postern_ipc::Trigger::Wakeup),
            _ => None,
        };
        if let Some(t) = trigger {
            let _ = postern_ipc::send_trigger(&dirs.root().join("private").join("qmgr"), t);
        }
    }
    if bad {
        Err(Failure {
            message: String::new(),
            status: 1,
        })
    } else {
        Ok(())
    }
}

fn queue_list(queues: &[Queue]) -> String {
    queues
        .iter()
        .map(|q| format!("{}/", q.name()))
        .collect::<Vec<_>>()
        .join(", ")
}

/// `postern queue flush` (postqueue -f): qmgr retries all deferred mail now.
pub fn flush(config_dir: &Path) -> Result<(), Failure> {
    let main = MainCf::load(config_dir).map_err(|e| fail(format!("postqueue: fatal: {e}")))?;
    let socket = main.path("queue_directory").join("private").join("qmgr");
    match postern_ipc::send_trigger(&socket, postern_ipc::Trigger::Flush) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == io::ErrorKind::PermissionDenied => Err(fail(format!(
            "postqueue: fatal: Cannot flush mail queue: {}: permission denied \
             (flush needs root or membership in group postern-ipc)",
            socket.display()
        ))),
        Err(e) => Err(fail(format!(
            "postqueue: fatal: Cannot flush mail queue - mail system is down ({}: {e})",
            socket.display()
        ))),
    }
}

/// `postern queue show ID` (postcat -q): envelope records, then content.
fn show(dirs: &QueueDirs, id: &QueueId, out: &mut impl Write) -> Result<(), Failure> {
    let err = |e: io::Error| fail(format!("postcat: fatal: write: {e}"));
    let Some(q) = dirs.locate(id) else {
        return Err(fail(format!("postcat: fatal: {id}: no such message")));
    };
    let path = dirs.file(q, id);
    let file = std::fs::File::open(&path).map_err(|e| {
        if e.kind() == io::ErrorKind::PermissionDenied {
            fail(format!(
                "postcat: fatal: open {}: permission denied: run as root",
                path.display()
            ))
        } else {
            fail(format!("postcat: fatal: open {}: {e}", path.display()))
        }
    })?;
    let qf = QueueFile::from_file(file, id.clone())
        .map_err(|e| fail(format!("postcat: fatal: {}: {e}", path.display())))?;
    let env = qf.envelope();
    let name = format!("{}/{id}", q.name());
    writeln!(out, "*** ENVELOPE RECORDS {name} ***").map_err(err)?;
    writeln!(out, "message_size: {}", qf.content_len()).map_err(err)?;
    let secs = env
        .arrival
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    writeln!(
        out,
        "message_arrival_time: {}{} ({secs})",
        mailq_time(env.arrival),
        postern_mailtime::local(env.arrival).year
    )
    .map_err(err)?;
    for (n, v) in &env.attributes {
        writeln!(out, "named_attribute: {n}={v}").map_err(err)?;
    }
    writeln!(out, "sender: {}", env.sender.bare()).map_err(err)?;
    for r in &env.recipients {
        if !r.original.is_empty() {
            writeln!(out, "original_recipient: {}", r.original).map_err(err)?;
        }
        if let Some(n) = &r.notify {
            writeln!(out, "dsn_notify_flags: {n}").map_err(err)?;
        }
        if let Some(o) = &r.orcpt {
            writeln!(out, "dsn_orig_rcpt: {o}").map_err(err)?;
        }
        let kind = if r.done {
            "done_recipient"
        } else {
            "recipient"
        };
        writeln!(out, "{kind}: {}", r.address).map_err(err)?;
    }
    for e in defer_log::read(dirs, id).unwrap_or_default() {
        writeln!(out, "delay_reason: {}: {}", e.address, e.reason).map_err(err)?;
    }
    writeln!(out, "*** MESSAGE CONTENTS {name} ***").map_err(err)?;
    let content = qf
        .read_content()
        .map_err(|e| fail(format!("postcat: fatal: read {}: {e}", path.display())))?;
    out.write_all(&content).map_err(err)?;
    if !content.ends_with(b"\n") && !content.is_empty() {
        writeln!(out).map_err(err)?;
    }
    writeln!(out, "*** MESSAGE FILE END {name} ***").map_err(err)?;
    Ok(())
}

/// `postern queue SUBCOMMAND ...`.
pub fn command(config_dir: &Path, args: &[String]) -> Result<(), Failure> {
    let Some(sub) = args.first() else {
        return Err(usage("postern: queue: name a subcommand"));
    };
    let rest = &args[1..];
    let load = || MainCf::load(config_dir).map_err(|e| fail(format!("postern: fatal: {e}")));
    match sub.as_str() {
        "list" => {
            let json = match rest {
                [] => false,
                [j] if j == "-j" => true,
                _ => return Err(usage("postern: queue list takes only -j")),
            };
            let main = load()?;
            let dirs = QueueDirs::new(main.path("queue_directory"));
            let items = read_queue(&dirs).map_err(|(status, m)| Failure {
                message: format!("postqueue: fatal: {m}"),
                status,
            })?;
            let mut out = io::stdout().lock();
            let r = if json {
                format_json(&items, &mut out)
            } else {
                format_mailq(&items, &mut out)
            };
            r.map_err(|e| fail(format!("postqueue: fatal: write: {e}")))
        }
        "flush" => {
            if !rest.is_empty() {
                return Err(usage("postern: queue flush takes no arguments"));
            }
            flush(config_dir)
        }
        "show" => {
            let [id] = rest else {
                return Err(usage("postern: queue show takes one queue ID"));
            };
            let Some(id) = QueueId::parse(id) else {
                return Err(fail(format!("postcat: fatal: invalid mail queue id: {id}")));
            };
            let main = load()?;
            let dirs = QueueDirs::new(main.path("queue_directory"));
            show(&dirs, &id, &mut io::stdout().lock())
        }
        "delete" => postsuper(config_dir, Op::Delete, sub, rest),
        "hold" => postsuper(config_dir, Op::Hold, sub, rest),
        "release" => postsuper(config_dir, Op::Release, sub, rest),
        "requeue" => postsuper(config_dir, Op::Requeue, sub, rest),
        other => Err(usage(format!("postern: queue: unknown subcommand {other}"))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn item(queue: Queue, rcpts: &[(&str, Option<&str>)]) -> Listed {
        Listed {
            queue,
            id: QueueId::parse("1GLBQ5UORVIQGLJ").unwrap(),
            arrival: UNIX_EPOCH + std::time::Duration::from_secs(1_700_000_000),
            size: 1500,
            sender: "a@x.test".into(),
            recipients: rcpts
                .iter()
                .map(|(a, r)| (a.to_string(), r.map(str::to_string)))
                .collect(),
            error: None,
        }
    }

    #[test]
    fn json_strings_are_escaped() {
        assert_eq!(json_string("plain"), "\"plain\"");
        assert_eq!(
            json_string("a\"b\\c\nd\te\u{1}f\u{7f}é"),
            "\"a\\\"b\\\\c\\nd\\te\\u0001f\\u007fé\""
        );
        assert_eq!(json_string(""), "\"\"");
    }

    #[test]
    fn mailq_shows_reasons_above_their_recipients() {
        let why = "connect to mx.example[192.0.2.1]:25: Connection refused";
        let m = item(
            Queue::Deferred,
            &[
                ("b@y.test", Some(why)),
                ("c@z.test", None),
                ("d@y.test", Some(why)),
            ],
        );
        let mut out = Vec::new();
        format_mailq(&[m], &mut out).unwrap();
        let text = String::from_utf8(out).unwrap();
        let lines: Vec<&str> = text.lines().collect();
        assert!(lines[1].starts_with("1GLBQ5UORVIQGLJ  "), "{text}");
        assert!(lines[1].ends_with(" a@x.test"), "{text}");
        assert_eq!(lines[2], format!("{:21}({why})", ""));
        assert_eq!(lines[2].len(), 78);
        assert_eq!(lines[3], format!("{:41}b@y.test", ""));
        assert_eq!(lines[4], format!("{:41}d@y.test", ""));
        assert_eq!(lines[5], format!("{:41}c@z.test", ""));
        assert_eq!(lines[6], "");
        assert_eq!(lines[7], "-- 2 Kbytes in 1 Request.");
        // A reason longer than the line starts at column 0.
        let long = "x".repeat(90);
        let m = item(Queue::Hold, &[("b@y.test", Some(&long))]);
        let mut out = Vec::new();
        format_mailq(&[m], &mut out).unwrap();
        let text = String::from_utf8(out).unwrap();
        assert!(text.lines().nth(1).unwrap().starts_with("1GLBQ5UORVIQGLJ!"));
        assert_eq!(text.lines().nth(2).unwrap(), format!("({long})"));
    }

    #[test]
    fn json_has_postfix_field_names() {
        let m = item(
            Queue::Deferred,
            &[("b@y.test", Some("it \"failed\"")), ("c@z.test", None)],
        );
        let mut out = Vec::new();
        format_json(&[m], &mut out).unwrap();
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "{\"queue_name\": \"deferred\", \"queue_id\": \"1GLBQ5UORVIQGLJ\", \
             \"arrival_time\": 1700000000, \"message_size\": 1500, \"sender\": \"a@x.test\", \
             \"recipients\": [{\"address\": \"b@y.test\", \"delay_reason\": \"it \\\"failed\\\"\"}, \
             {\"address\": \"c@z.test\"}]}\n"
        );
    }

    #[test]
    fn read_queue_joins_the_defer_log() {
        let t = tempfile::tempdir().unwrap();
        let dirs = QueueDirs::new(t.path().join("q"));
        dirs.create_all().unwrap();
        let mut w = postern_queue::QueueFileWriter::create_in(&dirs, Queue::Incoming).unwrap();
        w.write_envelope(&postern_queue::Envelope {
            arrival: SystemTime::now(),
            sender: "".parse().unwrap(),
            recipients: vec![
                postern_queue::Recipient::new("b@y.test".parse().unwrap(), "b@y.test"),
                postern_queue::Recipient::new("c@y.test".parse().unwrap(), ""),
            ],
            attributes: vec![],
        })
        .unwrap();
        w.write_content(b"Subject: x\n\nbody\n").unwrap();
        let id = w.commit().unwrap();
        dirs.move_file(&id, Queue::Incoming, Queue::Deferred)
            .unwrap();
        defer_log::write(
            &dirs,
            &id,
            &[DeferEntry {
                address: "c@y.test".into(),
                reason: "later".into(),
            }],
        )
        .unwrap();
        let items = read_queue(&dirs).unwrap();
        assert_eq!(items.len(), 1);
        assert_eq!(items[0].queue, Queue::Deferred);
        assert_eq!(items[0].sender, "");
        assert_eq!(
            items[0].recipients,
            vec![
                ("b@y.test".to_string(), None),
                ("c@y.test".to_string(), Some("later".to_string()))
            ]
        );
        let mut out = Vec::new();
        show(&dirs, &id, &mut out).unwrap();
        let text = String::from_utf8(out).unwrap();
        assert!(
            text.starts_with(&format!("*** ENVELOPE RECORDS deferred/{id} ***\n")),
            "{text}"
        );
        assert!(text.contains("\nsender: \n"), "{text}");
        assert!(text.contains("\noriginal_recipient: b@y.test\nrecipient: b@y.test\n"));
        assert!(text.contains("\ndelay_reason: c@y.test: later\n"), "{text}");
        assert!(text.contains(&format!(
            "*** MESSAGE CONTENTS deferred/{id} ***\nSubject: x\n\nbody\n*** MESSAGE FILE END deferred/{id} ***\n"
        )));
    }
}

#[cfg(test)]
mod operate_tests {
    use super::*;
    use std::time::Duration;

    fn message(dirs: &QueueDirs, q: Queue) -> QueueId {
        let mut w = postern_queue::QueueFileWriter::create_in(dirs, Queue::Incoming).unwrap();
        w.write_envelope(&postern_queue::Envelope {
            arrival: SystemTime::now(),
            sender: "a@x.test".parse().unwrap(),
            recipients: vec![postern_queue::Recipient::new(
                "b@y.test".parse().unwrap(),
                "",
            )],
            attributes: vec![],
        })
        .unwrap();
        w.write_content(b"x\n").unwrap();
        let id = w.commit().unwrap();
        if q != Queue::Incoming {
            dirs.move_file(&id, Queue::Incoming, q).unwrap();
        }
        id
    }

    #[test]
    fn active_mail_is_left_to_a_running_qmgr() {
        let t = tempfile::tempdir().unwrap();
        let dirs = QueueDirs::new(t.path());
        dirs.create_all().unwrap();
        let id = message(&dirs, Queue::Active);
        let (all, _) = Op::Delete.queues();
        assert!(matches!(
            operate(&dirs, Op::Delete, &id, all, true).unwrap(),
            Outcome::Busy
        ));
        assert!(matches!(
            operate(&dirs, Op::Hold, &id, all, true).unwrap(),
            Outcome::Busy
        ));
        assert_eq!(dirs.locate(&id), Some(Queue::Active));
        // Stopped: a leftover, handled like the others.
        assert!(matches!(
            operate(&dirs, Op::Hold, &id, all, false).unwrap(),
            Outcome::Done
        ));
        assert_eq!(dirs.locate(&id), Some(Queue::Hold));
    }

    #[test]
    fn hold_release_requeue_delete_move_the_file() {
        let t = tempfile::tempdir().unwrap();
        let dirs = QueueDirs::new(t.path());
        dirs.create_all().unwrap();
        let id = message(&dirs, Queue::Deferred);
        let deferred = dirs.file(Queue::Deferred, &id);
        postern_queue::set_next_attempt(&deferred, SystemTime::now() + Duration::from_secs(3600))
            .unwrap();
        let run = |op: Op| operate(&dirs, op, &id, op.queues().0, true).unwrap();
        assert!(matches!(run(Op::Hold), Outcome::Done));
        assert_eq!(dirs.locate(&id), Some(Queue::Hold));
        assert!(
            matches!(run(Op::Hold), Outcome::NotFound),
            "hold/ is not looked in"
        );
        assert!(matches!(run(Op::Release), Outcome::Done));
        assert_eq!(dirs.locate(&id), Some(Queue::Deferred));
        // Due now.
        assert!(postern_queue::next_attempt(&deferred).unwrap() <= SystemTime::now());
        assert!(matches!(run(Op::Release), Outcome::NotFound));
        assert!(matches!(run(Op::Requeue), Outcome::Done));
        assert_eq!(dirs.locate(&id), Some(Queue::Incoming));
        defer_log::write(
            &dirs,
            &id,
            &[DeferEntry {
                address: "b@y.test".into(),
                reason: "x".into(),
            }],
        )
        .unwrap();
        assert!(matches!(run(Op::Delete), Outcome::Done));
        assert_eq!(dirs.locate(&id), None);
        assert!(!defer_log::path(&dirs, &id).exists());
        assert!(matches!(run(Op::Delete), Outcome::NotFound));
    }
}
