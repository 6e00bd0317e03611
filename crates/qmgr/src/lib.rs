//! qmgr — the queue manager.
//!
//! Owns the queue from incoming/ on: moves new messages to active/, hands
//! each recipient to its transport (a delivery agent listening on
//! private/TRANSPORT) together with the open queue file, marks recipients
//! done durably as agents report success or permanent failure, returns
//! undeliverable mail to the sender, defers the rest to deferred/ with
//! backoff, and removes a message once nothing is left to do.
//!
//! Crash rules (docs/queue.md): at start-up everything in active/ goes back
//! to incoming/ and is tried again; recipients already marked done are never
//! delivered twice by the queue; a message whose recipients are all done is
//! removed. Nothing is acknowledged here, so no directory fsync is needed for
//! the moves qmgr makes: after a crash a file is in one directory or the
//! other, and both are scanned.
//!
//! SECURITY: qmgr reads and renames queue files; it parses only the queue
//! file format (postern-queue) and delivery agents' typed replies.
//!
//! PARAMETERS: queue_directory, mydestination, local_transport,
//! default_transport, relayhost, queue_run_delay, minimal_backoff_time,
//! maximal_backoff_time, maximal_queue_lifetime, bounce_queue_lifetime,
//! qmgr_message_active_limit, default_destination_concurrency_limit,
//! local_destination_concurrency_limit, local_destination_recipient_limit,
//! ipc_timeout, myhostname, mail_name, daemon_timeout, default_process_limit,
//! duplicate_filter_limit, default_destination_recipient_limit, transport_maps,
//! bounce_size_limit, 2bounce_notice_recipient, myorigin, initial_destination_concurrency,
//! delay_warning_time, notify_classes, bounce_notice_recipient,
//! smtp_destination_concurrency_limit, smtp_destination_recipient_limit,
//! lmtp_destination_concurrency_limit, lmtp_destination_recipient_limit.
#![forbid(unsafe_code)]

pub mod bounce;
pub mod transport;

use postern_config::MainCf;
use postern_ipc::{
    Channel, DeliveryRecipient, DeliveryReply, DeliveryRequest, DeliveryStatus, Mailbox,
    StatusClass, Trigger,
};
use postern_queue::{Queue, QueueDirs, QueueError, QueueFile, QueueId};
use std::cell::RefCell;
use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::os::fd::AsFd;
use std::path::PathBuf;
use std::rc::Rc;
use std::time::{Duration, SystemTime};
use tokio::sync::mpsc;
use tracing::{info, warn};
use transport::{Route, Router};

/// qmgr's settings, read once at start.
#[derive(Clone, Debug)]
pub struct Settings {
    queue_dir: PathBuf,
    queue_run_delay: Duration,
    min_backoff: Duration,
    max_backoff: Duration,
    max_lifetime: Duration,
    bounce_lifetime: Duration,
    active_limit: usize,
    transport_limit: usize,
    destination_limit: usize,
    local_destination_limit: usize,
    local_recipient_limit: usize,
    default_recipient_limit: usize,
    ipc_timeout: Duration,
    delivery_timeout: Duration,
    duplicate_filter_limit: usize,
    initial_concurrency: usize,
    /// notify_classes has `bounce`: copies of bounces to the postmaster.
    bounce_copies: bool,
    /// bounce_notice_recipient, qualified with myorigin.
    bounce_copy_to: Mailbox,
    /// delay_warning_time (zero: no delay warnings).
    delay_warning_time: Duration,
    /// 2bounce_notice_recipient, qualified with myorigin.
    double_bounce_to: Mailbox,
}

impl Settings {
    /// Reads the parameters qmgr uses.
    pub fn from_config(main: &MainCf) -> Result<Settings, String> {
        let e = |e: postern_config::ConfigError| e.to_string();
        Ok(Settings {
            queue_dir: main.path("queue_directory"),
            queue_run_delay: main
                .time("queue_run_delay")
                .map_err(e)?
                .max(Duration::from_secs(1)),
            min_backoff: main.time("minimal_backoff_time").map_err(e)?,
            max_backoff: main.time("maximal_backoff_time").map_err(e)?,
            max_lifetime: main.time("maximal_queue_lifetime").map_err(e)?,
            bounce_lifetime: main.time("bounce_queue_lifetime").map_err(e)?,
            // Bounds come from the parameter table (start-up errors, never
            // a silent clamp).
            active_limit: main.bounded("qmgr_message_active_limit").map_err(e)?,
            transport_limit: main.bounded("default_process_limit").map_err(e)?,
            destination_limit: main
                .bounded("default_destination_concurrency_limit")
                .map_err(e)?,
            local_destination_limit: main
                .bounded("local_destination_concurrency_limit")
                .map_err(e)?,
            local_recipient_limit: main
                .bounded("local_destination_recipient_limit")
                .map_err(e)?,
            default_recipient_limit: main
                .bounded("default_destination_recipient_limit")
                .map_err(e)?,
            ipc_timeout: main.time("ipc_timeout").map_err(e)?,
            delivery_timeout: main.time("daemon_timeout").map_err(e)?,
            duplicate_filter_limit: main.bounded("duplicate_filter_limit").map_err(e)?,
            initial_concurrency: main.bounded("initial_destination_concurrency").map_err(e)?,
            delay_warning_time: main.time("delay_warning_time").map_err(e)?,
            double_bounce_to: notice_recipient(main, "2bounce_notice_recipient")?,
            bounce_copies: main
                .list("notify_classes")
                .iter()
                .any(|c| c.eq_ignore_ascii_case("bounce")),
            bounce_copy_to: notice_recipient(main, "bounce_notice_recipient")?,
        })
    }
}

/// A *_notice_recipient parameter as a mailbox: a bare name gets
/// @myorigin.
fn notice_recipient(main: &MainCf, name: &str) -> Result<Mailbox, String> {
    let to = main.str(name);
    let to = if to.contains('@') {
        to
    } else {
        format!("{to}@{}", main.str("myorigin"))
    };
    Mailbox::parse(&to).map_err(|err| format!("{name}: <{to}>: {err}"))
}

/// One message in the active queue.
struct Active {
    file: QueueFile,
    /// Requests handed to agents and not finished yet.
    outstanding: usize,
    /// Some recipient got a temporary failure this round.
    deferred: bool,
    /// Recipients that bounced this round: (address, status). An expired
    /// recipient's status is the temporary 4.4.7 (the bounce reports 5.4.7).
    bounced: Vec<(Mailbox, DeliveryStatus)>,
    /// The latest temporary status of each recipient deferred this round
    /// (for the delay warning).
    deferred_reasons: BTreeMap<usize, DeliveryStatus>,
    /// Recipients delivered this round whose NOTIFY asked for SUCCESS
    /// (local deliveries; smtp passes NOTIFY on to the next server).
    succeeded: Vec<(Mailbox, DeliveryStatus)>,
    /// Destinations local has delivered this message to (its duplicate
    /// filter across requests; see docs/ipc.md), at most
    /// duplicate_filter_limit of them.
    delivered: HashSet<String>,
    /// A local request for this message is running: the next one waits for
    /// it, so it sees every destination the first one delivered to.
    local_busy: bool,
}

/// A unit of work for a delivery agent.
struct Job {
    id: QueueId,
    route: Route,
    recipients: Vec<usize>,
}

/// What a delivery task reports back to the scheduler.
struct Done {
    id: QueueId,
    route: Route,
    results: Vec<(usize, DeliveryStatus)>,
    /// The agent's `Delivered` keys (empty if it sent none).
    delivered: Vec<String>,
    /// The agent's `SiteFailure`: the destination could not be used.
    site_failure: Option<String>,
}

/// What finished work reports back to the scheduler loop.
enum Event {
    /// A delivery agent answered (or failed).
    Delivered(Done),
    /// Done marks were written (or failed to be).
    Marked {
        id: QueueId,
        marks: postern_queue::DoneMarks,
        result: std::io::Result<()>,
    },
    /// A non-delivery notification went to cleanup (its queue ID), or not.
    Bounced {
        id: QueueId,
        result: Result<String, String>,
        /// It was a double bounce (to the postmaster).
        double: bool,
    },
}

/// The queue manager's state.
pub struct Qmgr {
    settings: Settings,
    dirs: QueueDirs,
    router: Router,
    main: MainCf,
    active: HashMap<QueueId, Active>,
    /// Jobs waiting for a free slot, per transport and next hop.
    pending: BTreeMap<String, BTreeMap<String, VecDeque<Job>>>,
    /// Deliveries in progress per transport and per (transport, nexthop).
    busy_transport: HashMap<String, usize>,
    busy_destination: HashMap<(String, String), usize>,
    /// Per-destination concurrency window (Postfix's): starts at
    /// initial_destination_concurrency, grows by one per request that
    /// reached the destination, falls to one when it could not be reached.
    window: HashMap<(String, String), usize>,
    /// Destinations that could not be reached: until when their mail is
    /// deferred without a delivery attempt, and why.
    dead: HashMap<(String, String), (std::time::Instant, String)>,
    /// Where the next dispatch round starts (round-robin over destinations).
    rotation: usize,
    /// (concurrency, recipients) per transport name, read once.
    limits: RefCell<HashMap<String, (usize, usize)>>,
    done_tx: mpsc::UnboundedSender<Event>,
    /// incoming/ may hold more than the active limit let us take.
    incoming_left: bool,
    /// Done-mark writes in progress on blocking threads.
    marks_in_flight: usize,
    /// Messages whose non-delivery notification is being handed to cleanup
    /// (a task of its own, so the scheduler never waits for cleanup).
    bouncing: HashMap<QueueId, Active>,
}

impl Qmgr {
    fn new(main: &MainCf, done_tx: mpsc::UnboundedSender<Event>) -> Result<Qmgr, String> {
        let mut settings = Settings::from_config(main)?;
        // Every active message keeps its queue file open: make sure the
        // descriptor limit allows the active limit, or lower the latter.
        let fds = raise_fd_limit();
        let cap = fds.saturating_sub(256).max(16) as usize;
        if settings.active_limit > cap {
            if cap < 1000 {
                warn!(
                    "qmgr_message_active_limit {} exceeds what {fds} open files allow; using {cap}",
                    settings.active_limit
                );
            }
            settings.active_limit = cap;
        }
        Ok(Qmgr {
            dirs: QueueDirs::new(&settings.queue_dir),
            router: Router::from_config(main)?,
            main: main.clone(),
            settings,
            active: HashMap::new(),
            pending: BTreeMap::new(),
            busy_transport: HashMap::new(),
            busy_destination: HashMap::new(),
            window: HashMap::new(),
            dead: HashMap::new(),
            rotation: 0,
            limits: RefCell::new(HashMap::new()),
            done_tx,
            incoming_left: false,
            marks_in_flight: 0,
            bouncing: HashMap::new(),
        })
    }

    /// Start-up recovery: whatever a previous qmgr left in active/ goes back
    /// to incoming/, where it is picked up like new mail.
    fn recover(&mut self) {
        match self.dirs.list(Queue::Active) {
            Ok(ids) => {
                for id in ids {
                    if let Err(e) = self.rename(&id, Queue::Active, Queue::Incoming) {
                        warn!("{id}: cannot move back to incoming: {e}");
                    }
                }
            }
            Err(e) => warn!(
                "cannot read {}: {e}",
                self.dirs.dir(Queue::Active).display()
            ),
        }
        // Retry-time markers whose message left deferred/ during a crash.
        let deferred = self.dirs.dir(Queue::Deferred);
        if let Ok(rd) = std::fs::read_dir(&deferred) {
            for e in rd.flatten() {
                let name = e.file_name().to_string_lossy().into_owned();
                if let Some(id) = name.strip_prefix(".next-")
                    && !deferred.join(id).exists()
                {
                    let _ = std::fs::remove_file(e.path());
                }
                // A delay-warning record outlives deferred/ visits, not its
                // message.
                if let Some(id) = name.strip_prefix(".warned-")
                    && !QUEUE_HOLDERS
                        .iter()
                        .any(|q| self.dirs.dir(*q).join(id).exists())
                {
                    let _ = std::fs::remove_file(e.path());
                }
            }
        }
        // Defer logs whose message left the queue during a crash.
        for id in postern_queue::defer_log::list(&self.dirs).unwrap_or_default() {
            if !QUEUE_HOLDERS
                .iter()
                .any(|q| self.dirs.file(*q, &id).exists())
            {
                postern_queue::defer_log::remove(&self.dirs, &id);
            }
        }
        match self.dirs.remove_stale_temp(Duration::from_secs(86400)) {
            Ok(0) => {}
            Ok(n) => info!("removed {n} stale temporary queue files"),
            Err(e) => warn!("cannot clean up temporary files: {e}"),
        }
    }

    fn rename(&self, id: &QueueId, from: Queue, to: Queue) -> std::io::Result<()> {
        std::fs::rename(self.dirs.file(from, id), self.dirs.file(to, id))
    }

    /// Takes new mail from incoming/ into the active queue.
    fn scan_incoming(&mut self) {
        let ids = match self.dirs.list(Queue::Incoming) {
            Ok(ids) => ids,
            Err(e) => {
                warn!(
                    "cannot read {}: {e}",
                    self.dirs.dir(Queue::Incoming).display()
                );
                return;
            }
        };
        self.incoming_left = false;
        for id in ids {
            if self.active.len() + self.bouncing.len() >= self.settings.active_limit {
                self.incoming_left = true;
                break;
            }
            if self.active.contains_key(&id) {
                continue;
            }
            if let Err(e) = self.rename(&id, Queue::Incoming, Queue::Active) {
                if e.kind() != std::io::ErrorKind::NotFound {
                    warn!("{id}: cannot move to active: {e}");
                }
                continue;
            }
            self.activate(id);
        }
    }

    /// Takes deferred mail whose time has come (or all of it on flush).
    fn scan_deferred(&mut self, flush: bool) {
        let ids = match self.dirs.list(Queue::Deferred) {
            Ok(ids) => ids,
            Err(e) => {
                warn!(
                    "cannot read {}: {e}",
                    self.dirs.dir(Queue::Deferred).display()
                );
                return;
            }
        };
        let now = SystemTime::now();
        for id in ids {
            if self.active.len() + self.bouncing.len() >= self.settings.active_limit {
                break;
            }
            let path = self.dirs.file(Queue::Deferred, &id);
            if !flush {
                match postern_queue::next_attempt(&path) {
                    Ok(t) if t > now => continue,
                    Ok(_) => {}
                    Err(_) => continue,
                }
            }
            if self.rename(&id, Queue::Deferred, Queue::Active).is_ok() {
                postern_queue::clear_next_attempt(&path);
                self.activate(id);
            }
        }
    }

    /// Opens a message now in active/ and schedules its recipients.
    fn activate(&mut self, id: QueueId) {
        let path = self.dirs.file(Queue::Active, &id);
        let file = match QueueFile::open(&path, id.clone()) {
            Ok(f) => f,
            Err(QueueError::Corrupt(why)) => {
                warn!("{id}: corrupt queue file: {why}; moved to corrupt/");
                if let Err(e) = self.rename(&id, Queue::Active, Queue::Corrupt) {
                    warn!("{id}: cannot move to corrupt: {e}");
                }
                return;
            }
            Err(QueueError::Io(e)) => {
                warn!("{id}: cannot open queue file: {e}");
                return;
            }
        };
        let env = file.envelope();
        let pending = file.pending();
        if pending.is_empty() {
            // All recipients were done before a crash: finish the removal.
            self.remove(&id);
            return;
        }
        info!(
            "{id}: from={}, size={}, nrcpt={} (queue active)",
            env.sender,
            file.content_len(),
            env.recipients.len()
        );
        let arrival = env.arrival;
        let age = SystemTime::now()
            .duration_since(arrival)
            .unwrap_or_default();
        let lifetime = if env.sender.is_null() {
            self.settings.bounce_lifetime
        } else {
            self.settings.max_lifetime
        };
        let mut active = Active {
            file,
            outstanding: 0,
            deferred: false,
            bounced: Vec::new(),
            succeeded: Vec::new(),
            deferred_reasons: BTreeMap::new(),
            delivered: HashSet::new(),
            local_busy: false,
        };
        if age > lifetime {
            // Too old: every remaining recipient bounces.
            let reasons: Vec<(usize, DeliveryStatus)> = pending
                .iter()
                .map(|&i| {
                    (
                        i,
                        DeliveryStatus::temporary(4, 7, "message delivery timed out"),
                    )
                })
                .collect();
            for (i, status) in &reasons {
                let r = &active.file.envelope().recipients[*i];
                let (addr, notify) = (r.address.clone(), r.notify);
                info!(
                    "{id}: to=<{addr}>, relay=none, delay={}, dsn={}, status=expired, returned to sender ({})",
                    age.as_secs(),
                    status.code(),
                    status.text()
                );
                if bounce::wanted(notify, postern_dsn::Kind::Failure) {
                    active.bounced.push((addr, status.clone()));
                }
            }
            let idx: Vec<usize> = reasons.iter().map(|r| r.0).collect();
            if let Err(e) = active.file.mark_done(&idx) {
                warn!("{id}: cannot update queue file: {e}");
            }
            self.active.insert(id.clone(), active);
            self.finish(&id);
            return;
        }
        // Group recipients by route, split by the transport's recipient limit.
        let mut groups: BTreeMap<Route, Vec<usize>> = BTreeMap::new();
        for i in pending {
            let address = &active.file.envelope().recipients[i].address;
            match self.router.route(address) {
                Ok(route) => groups.entry(route).or_default().push(i),
                Err(why) => {
                    // Unknown whether it is local: wait, never guess.
                    info!(
                        "{id}: to=<{address}>, relay=none, delay={}, dsn=4.3.0, status=deferred ({why})",
                        delay_secs(active.file.envelope().arrival)
                    );
                    active.deferred = true;
                    active
                        .deferred_reasons
                        .insert(i, DeliveryStatus::temporary(3, 0, why));
                }
            }
        }
        if groups.is_empty() {
            self.active.insert(id.clone(), active);
            self.finish(&id);
            return;
        }
        for (route, rcpts) in groups {
            let limit = if route.transport == self.router.local_transport() {
                self.settings.local_recipient_limit
            } else {
                self.transport_limits(&route.transport).1
            };
            for chunk in rcpts.chunks(limit) {
                active.outstanding += 1;
                self.pending
                    .entry(route.transport.clone())
                    .or_default()
                    .entry(route.nexthop.clone())
                    .or_default()
                    .push_back(Job {
                        id: id.clone(),
                        route: route.clone(),
                        recipients: chunk.to_vec(),
                    });
            }
        }
        self.active.insert(id, active);
    }

    /// Starts as many waiting jobs as the concurrency limits allow, one
    /// job per destination per round, the rounds starting at a destination
    /// that moves on every call (so one busy destination cannot take every
    /// slot of its transport from the others). A destination's limit is its
    /// concurrency window; a dead destination's jobs are deferred at once.
    fn dispatch(&mut self) {
        let now = std::time::Instant::now();
        self.dead.retain(|_, (until, _)| *until > now);
        let mut keys: Vec<(String, String)> = self
            .pending
            .iter()
            .flat_map(|(t, d)| d.keys().map(move |n| (t.clone(), n.clone())))
            .collect();
        if keys.is_empty() {
            return;
        }
        let limits: HashMap<String, (usize, usize)> = keys
            .iter()
            .map(|(t, _)| (t.clone(), self.transport_limits(t)))
            .collect();
        let start = self.rotation % keys.len();
        keys.rotate_left(start);
        self.rotation = self.rotation.wrapping_add(1);
        if self.window.len() > 10_000 {
            // Forget the windows of idle destinations (they start over).
            let busy = &self.busy_destination;
            self.window
                .retain(|k, _| busy.get(k).is_some_and(|&n| n > 0));
        }
        let mut ready = Vec::new();
        let mut suspended = Vec::new();
        loop {
            let mut progress = false;
            for key in &keys {
                let (transport, nexthop) = key;
                let Some(jobs) = self
                    .pending
                    .get_mut(transport)
                    .and_then(|d| d.get_mut(nexthop))
                else {
                    continue;
                };
                if let Some((_, why)) = self.dead.get(key) {
                    // Counted busy like a started job: completed() frees it.
                    for job in jobs.drain(..) {
                        *self.busy_transport.entry(transport.clone()).or_insert(0) += 1;
                        *self.busy_destination.entry(key.clone()).or_insert(0) += 1;
                        suspended.push((job, why.clone()));
                    }
                    continue;
                }
                let local = *transport == self.router.local_transport();
                let dlimit = if local {
                    self.settings.local_destination_limit
                } else {
                    let w = self
                        .window
                        .get(key)
                        .copied()
                        .unwrap_or(self.settings.initial_concurrency);
                    w.clamp(1, limits.get(transport).map_or(1, |l| l.0).max(1))
                };
                let busy_t = self.busy_transport.entry(transport.clone()).or_insert(0);
                let busy_d = self.busy_destination.entry(key.clone()).or_insert(0);
                if *busy_t >= self.settings.transport_limit || *busy_d >= dlimit {
                    continue;
                }
                // One local request per message at a time (its duplicate
                // filter needs the previous one's answer).
                if local
                    && jobs.front().is_some_and(|j| {
                        self.active
                            .get_mut(&j.id)
                            .is_some_and(|a| std::mem::replace(&mut a.local_busy, true))
                    })
                {
                    continue;
                }
                let Some(job) = jobs.pop_front() else {
                    continue;
                };
                *busy_t += 1;
                *busy_d += 1;
                ready.push(job);
                progress = true;
            }
            if !progress {
                break;
            }
        }
        for d in self.pending.values_mut() {
            d.retain(|_, jobs| !jobs.is_empty());
        }
        self.pending.retain(|_, d| !d.is_empty());
        for job in ready {
            self.start(job);
        }
        for (job, why) in suspended {
            let why = format!("delivery temporarily suspended: {why}");
            if let Some(active) = self.active.get(&job.id) {
                let env = active.file.envelope();
                for &i in &job.recipients {
                    info!(
                        "{}: to=<{}>, relay=none, delay={}, dsn=4.4.1, status=deferred ({why})",
                        job.id,
                        env.recipients[i].address,
                        delay_secs(env.arrival)
                    );
                }
            }
            let results = job
                .recipients
                .iter()
                .map(|&i| (i, DeliveryStatus::temporary(4, 1, why.clone())))
                .collect();
            self.completed(Done {
                id: job.id,
                route: job.route,
                results,
                delivered: Vec::new(),
                site_failure: None,
            });
        }
    }

    /// A transport's per-destination concurrency and recipient limits:
    /// TRANSPORT_destination_concurrency_limit and
    /// TRANSPORT_destination_recipient_limit when main.cf (or the table)
    /// has them, else the default_ ones (Postfix's per-transport names).
    fn transport_limits(&self, transport: &str) -> (usize, usize) {
        if let Some(l) = self.limits.borrow().get(transport) {
            return *l;
        }
        let read = |what: &str, default: usize| -> usize {
            let name = format!("{transport}_destination_{what}_limit");
            if postern_config::param_def(&name).is_none() && !self.main.is_set(&name) {
                return default;
            }
            match self.main.int(&name) {
                Ok(n) if n >= 1 => usize::try_from(n).unwrap_or(default),
                Ok(n) => {
                    warn!("{name} = {n}: must be at least 1; using {default}");
                    default
                }
                Err(e) => {
                    warn!("{e}; using {default}");
                    default
                }
            }
        };
        let l = (
            read("concurrency", self.settings.destination_limit),
            read("recipient", self.settings.default_recipient_limit),
        );
        self.limits.borrow_mut().insert(transport.to_string(), l);
        l
    }

    /// Hands one job to its delivery agent in a task of its own.
    fn start(&mut self, job: Job) {
        let Some(active) = self.active.get(&job.id) else {
            return;
        };
        if let Some(results) = builtin_transport(&job, active) {
            let _ = self.done_tx.send(Event::Delivered(Done {
                id: job.id,
                route: job.route,
                results,
                delivered: Vec::new(),
                site_failure: None,
            }));
            return;
        }
        let env = active.file.envelope();
        let req = DeliveryRequest {
            queue_id: job.id.to_string(),
            sender: env.sender.clone(),
            arrival: env.arrival,
            content_offset: active.file.content_offset(),
            content_len: active.file.content_len(),
            nexthop: job.route.nexthop.clone(),
            recipients: job
                .recipients
                .iter()
                .map(|&i| DeliveryRecipient {
                    index: i as u32,
                    address: env.recipients[i].address.clone(),
                    original: env.recipients[i].original.clone(),
                    notify: env.recipients[i].notify,
                    orcpt: env.recipients[i].orcpt.clone(),
                })
                .collect(),
            attributes: env.attributes.clone(),
            delivered: if job.route.transport == self.router.local_transport() {
                active.delivered.iter().cloned().collect()
            } else {
                Vec::new()
            },
        };
        let file = match active.file.file().try_clone() {
            Ok(f) => f,
            Err(e) => {
                let results = defer_all(
                    &job.recipients,
                    &format!("cannot duplicate queue file descriptor: {e}"),
                );
                let _ = self.done_tx.send(Event::Delivered(Done {
                    id: job.id,
                    route: job.route,
                    results,
                    delivered: Vec::new(),
                    site_failure: None,
                }));
                return;
            }
        };
        let socket = self
            .settings
            .queue_dir
            .join("private")
            .join(&job.route.transport);
        let tx = self.done_tx.clone();
        let connect_timeout = self.settings.ipc_timeout.min(Duration::from_secs(30));
        let timeout = self.settings.delivery_timeout;
        tokio::task::spawn_local(async move {
            let (results, delivered, site_failure) = match deliver(
                &socket,
                &req,
                &file,
                connect_timeout,
                timeout,
            )
            .await
            {
                Ok(r) => r,
                Err(why) => {
                    let why = format!("delivery temporarily suspended: {why}");
                    for r in &req.recipients {
                        info!(
                            "{}: to=<{}>, relay={}, delay={}, dsn=4.3.0, status=deferred ({why})",
                            req.queue_id,
                            r.address,
                            job.route.transport,
                            delay_secs(req.arrival)
                        );
                    }
                    (defer_all(&job.recipients, &why), Vec::new(), None)
                }
            };
            let _ = tx.send(Event::Delivered(Done {
                id: job.id,
                route: job.route,
                results,
                delivered,
                site_failure,
            }));
        });
    }

    /// Records a finished job; finishes the message when it was the last.
    fn completed(&mut self, done: Done) {
        if let Some(n) = self.busy_transport.get_mut(&done.route.transport) {
            *n = n.saturating_sub(1);
        }
        let key = (done.route.transport.clone(), done.route.nexthop.clone());
        if let Some(n) = self.busy_destination.get_mut(&key) {
            *n = n.saturating_sub(1);
        }
        if done.route.transport != self.router.local_transport() {
            let max_concurrency = self.transport_limits(&done.route.transport).0;
            let w = self
                .window
                .entry(key.clone())
                .or_insert(self.settings.initial_concurrency);
            match &done.site_failure {
                Some(why) => {
                    // Nobody answered: the destination is dead for a
                    // while, and comes back one delivery at a time.
                    *w = 1;
                    let until = std::time::Instant::now() + self.settings.min_backoff;
                    if !self.dead.contains_key(&key) {
                        info!(
                            "{}: destination suspended for {}s: {why}",
                            key.1,
                            self.settings.min_backoff.as_secs()
                        );
                    }
                    self.dead.insert(key.clone(), (until, why.clone()));
                }
                None => *w = (*w + 1).min(max_concurrency.max(1)),
            }
        }
        let Some(active) = self.active.get_mut(&done.id) else {
            return;
        };
        if done.route.transport == self.router.local_transport() {
            active.local_busy = false;
        }
        for key in done.delivered {
            if active.delivered.len() >= self.settings.duplicate_filter_limit {
                break;
            }
            active.delivered.insert(key);
        }
        let mut finished = Vec::new();
        let local = done.route.transport == self.router.local_transport();
        for (i, status) in done.results {
            let rcpt = active.file.envelope().recipients.get(i);
            let notify = rcpt.and_then(|r| r.notify);
            match status.class() {
                StatusClass::Success => {
                    finished.push(i);
                    if let Some(r) = rcpt
                        && local
                        && bounce::wanted(notify, postern_dsn::Kind::Success)
                    {
                        active.succeeded.push((r.address.clone(), status));
                    }
                }
                StatusClass::Permanent => {
                    finished.push(i);
                    match rcpt {
                        Some(r) if bounce::wanted(notify, postern_dsn::Kind::Failure) => {
                            active.bounced.push((r.address.clone(), status));
                        }
                        Some(r) => info!(
                            "{}: <{}>: no non-delivery notification (NOTIFY)",
                            done.id, r.address
                        ),
                        None => {}
                    }
                }
                StatusClass::Temporary => {
                    active.deferred = true;
                    active.deferred_reasons.insert(i, status);
                }
            }
        }
        // The last job of a message that is now completely delivered: the
        // marks need no fdatasync, since the file is unlinked right away
        // (docs/queue.md, S3 → S6 → S0). One fsync less per message.
        let last = !finished.is_empty()
            && active.outstanding == 1
            && !active.deferred
            && active.bounced.is_empty()
            && active.file.pending().iter().all(|i| finished.contains(i));
        if last {
            let written = active
                .file
                .prepare_done(&finished)
                .and_then(|marks| marks.write_unsynced().map(|()| marks));
            match written {
                Ok(marks) => active.file.record_done(&marks),
                Err(e) => {
                    warn!("{}: cannot mark recipients done: {e}", done.id);
                    active.deferred = true;
                }
            }
        } else if !finished.is_empty() {
            // The fdatasync of the marks runs on a blocking thread so the
            // scheduler keeps dispatching; the message is not finished (and
            // so not removed) until the marks are durable.
            match active.file.prepare_done(&finished) {
                Ok(marks) => {
                    active.outstanding += 1;
                    self.marks_in_flight += 1;
                    let tx = self.done_tx.clone();
                    let id = done.id.clone();
                    tokio::task::spawn_blocking(move || {
                        let result = marks.write();
                        let _ = tx.send(Event::Marked { id, marks, result });
                    });
                }
                Err(e) => {
                    warn!("{}: cannot mark recipients done: {e}", done.id);
                    active.deferred = true;
                }
            }
        }
        active.outstanding = active.outstanding.saturating_sub(1);
        if active.outstanding == 0 {
            self.finish(&done.id);
        }
    }

    /// Done marks are durable (or failed): record them.
    fn marked(
        &mut self,
        id: QueueId,
        marks: postern_queue::DoneMarks,
        result: std::io::Result<()>,
    ) {
        self.marks_in_flight = self.marks_in_flight.saturating_sub(1);
        let Some(active) = self.active.get_mut(&id) else {
            return;
        };
        match result {
            Ok(()) => active.file.record_done(&marks),
            Err(e) => {
                // Not marked: those recipients may be delivered again later
                // (at least once, never zero times).
                warn!("{id}: cannot mark recipients done: {e}");
                active.deferred = true;
            }
        }
        active.outstanding = active.outstanding.saturating_sub(1);
        if active.outstanding == 0 {
            self.finish(&id);
        }
    }

    /// All of a message's jobs are done: bounce, defer or remove it.
    fn finish(&mut self, id: &QueueId) {
        let Some(active) = self.active.remove(id) else {
            return;
        };
        if !active.succeeded.is_empty() {
            self.success_notice(id, &active);
        }
        if !active.bounced.is_empty() {
            let env = active.file.envelope();
            let double = env.sender.is_null();
            let built = match (double, env.sender.mailbox()) {
                (true, _) if env.attribute("notify") == Some(bounce::DOUBLE_BOUNCE) => {
                    info!("{id}: undeliverable postmaster notification discarded");
                    None
                }
                (true, _) => {
                    let to = self.settings.double_bounce_to.clone();
                    Some((
                        bounce::build_double(
                            &self.main,
                            id,
                            &active.file,
                            &active.bounced,
                            &to,
                            SystemTime::now(),
                        ),
                        to,
                    ))
                }
                (false, Some(sender)) => {
                    if self.settings.bounce_copies {
                        self.postmaster_copy(id, &active);
                    }
                    Some((
                        bounce::build(
                            &self.main,
                            id,
                            &active.file,
                            &active.bounced,
                            SystemTime::now(),
                        ),
                        sender.clone(),
                    ))
                }
                (false, None) => None,
            };
            match built {
                Some((Ok(text), to)) => {
                    // cleanup's answer comes back as Event::Bounced, and
                    // settle() finishes the message then.
                    let socket = self.settings.queue_dir.join("private").join("cleanup");
                    let timeout = self.settings.ipc_timeout.min(Duration::from_secs(60));
                    let tx = self.done_tx.clone();
                    let bid = id.clone();
                    tokio::task::spawn_local(async move {
                        let result = bounce::send(&socket, text, &to, timeout, double).await;
                        let _ = tx.send(Event::Bounced {
                            id: bid,
                            result,
                            double,
                        });
                    });
                    self.bouncing.insert(id.clone(), active);
                    return;
                }
                Some((Err(e), _)) => {
                    warn!("{id}: cannot send non-delivery notification: read queue file: {e}")
                }
                None => {}
            }
        }
        self.settle(id, active);
    }

    /// notify_classes = bounce: the postmaster (bounce_notice_recipient)
    /// gets a copy of each non-delivery notification, headers only.
    /// Best effort, like the success report.
    fn postmaster_copy(&self, id: &QueueId, active: &Active) {
        let to = self.settings.bounce_copy_to.clone();
        let text = match bounce::build_double(
            &self.main,
            id,
            &active.file,
            &active.bounced,
            &to,
            SystemTime::now(),
        ) {
            Ok(t) => t,
            Err(e) => return warn!("{id}: cannot send postmaster copy: {e}"),
        };
        // Marked like a double bounce: if it cannot be delivered it is
        // dropped, never reported again.
        self.notify(id, text, to, true, "postmaster non-delivery notification");
    }

    /// Hands a best-effort notification (a copy, a report, a warning) to
    /// cleanup in a task of its own and logs `ID: WHAT: NEWID`; the
    /// message's own fate does not wait for it.
    fn notify(&self, id: &QueueId, text: Vec<u8>, to: Mailbox, double: bool, what: &'static str) {
        let socket = self.settings.queue_dir.join("private").join("cleanup");
        let timeout = self.settings.ipc_timeout.min(Duration::from_secs(60));
        let id = id.clone();
        tokio::task::spawn_local(async move {
            match bounce::send(&socket, text, &to, timeout, double).await {
                Ok(nid) => info!("{id}: {what}: {nid}"),
                Err(e) => warn!("{id}: cannot send {what}: {e}"),
            }
        });
    }

    /// Sends the NOTIFY=SUCCESS report for a message's delivered
    /// recipients (RFC 3464 action "delivered"). Best effort: the
    /// deliveries stand whatever becomes of the report.
    fn success_notice(&self, id: &QueueId, active: &Active) {
        let Some(to) = active.file.envelope().sender.mailbox().cloned() else {
            return;
        };
        let text = match bounce::build_report(
            &self.main,
            id,
            &active.file,
            postern_dsn::Kind::Success,
            &active.succeeded,
            SystemTime::now(),
        ) {
            Ok(t) => t,
            Err(e) => return warn!("{id}: cannot send delivery status notification: {e}"),
        };
        self.notify(id, text, to, false, "sender delivery status notification");
    }

    /// cleanup answered for a message's non-delivery notification.
    fn bounced(&mut self, id: QueueId, result: Result<String, String>, double: bool) {
        let Some(active) = self.bouncing.remove(&id) else {
            return;
        };
        match result {
            Ok(bid) if double => info!("{id}: postmaster non-delivery notification: {bid}"),
            Ok(bid) => info!("{id}: sender non-delivery notification: {bid}"),
            // The bounced recipients are already marked done and their
            // reasons live only in memory: the notice is lost. Persisting
            // them (a bounce log, as Postfix's bounce(8)) is issue 9's.
            Err(e) => warn!("{id}: cannot send non-delivery notification: {e}"),
        }
        self.settle(&id, active);
    }

    /// The end of a message's round: back to deferred/ with a retry time
    /// while recipients are left, else removed.
    fn settle(&mut self, id: &QueueId, active: Active) {
        if active.deferred || !active.file.all_done() {
            self.delay_warning(id, &active);
            let age = SystemTime::now()
                .duration_since(active.file.envelope().arrival)
                .unwrap_or_default();
            let backoff = age.clamp(
                self.settings.min_backoff,
                self.settings.max_backoff.max(self.settings.min_backoff),
            );
            self.write_defer_log(id, &active);
            drop(active);
            if let Err(e) = self.rename(id, Queue::Active, Queue::Deferred) {
                warn!("{id}: cannot move to deferred: {e}");
                return;
            }
            let path = self.dirs.file(Queue::Deferred, id);
            if let Err(e) = postern_queue::set_next_attempt(&path, SystemTime::now() + backoff) {
                warn!("{id}: cannot set retry time: {e}");
            }
        } else {
            drop(active);
            self.remove(id);
        }
    }

    fn remove(&mut self, id: &QueueId) {
        match std::fs::remove_file(self.dirs.file(Queue::Active, id)) {
            Ok(()) => info!("{id}: removed"),
            Err(e) => warn!("{id}: cannot remove queue file: {e}"),
        }
        let _ = std::fs::remove_file(self.warned_marker(id));
        postern_queue::defer_log::remove(&self.dirs, id);
    }

    /// `defer/ID`: why each recipient deferred this round waits, for mailq.
    fn write_defer_log(&self, id: &QueueId, active: &Active) {
        let env = active.file.envelope();
        let entries: Vec<postern_queue::defer_log::DeferEntry> = active
            .deferred_reasons
            .iter()
            .filter_map(|(&i, status)| {
                let r = env.recipients.get(i).filter(|r| !r.done)?;
                Some(postern_queue::defer_log::DeferEntry {
                    address: r.address.to_string(),
                    reason: status.text().to_string(),
                })
            })
            .collect();
        if let Err(e) = postern_queue::defer_log::write(&self.dirs, id, &entries) {
            warn!("{id}: cannot write defer log: {e}");
        }
    }

    /// `deferred/.warned-ID`: this message's sender got its delay warning.
    fn warned_marker(&self, id: &QueueId) -> PathBuf {
        self.dirs.dir(Queue::Deferred).join(format!(".warned-{id}"))
    }

    /// Postfix's delay warning: once a message has waited
    /// delay_warning_time (0 = never, the default), its sender hears which
    /// recipients are still being retried, and until when: once per
    /// message, for the recipients whose NOTIFY asks for DELAY (the default).
    fn delay_warning(&self, id: &QueueId, active: &Active) {
        let limit = self.settings.delay_warning_time;
        let env = active.file.envelope();
        let Some(to) = env.sender.mailbox().cloned() else {
            return;
        };
        let age = SystemTime::now()
            .duration_since(env.arrival)
            .unwrap_or_default();
        if limit.is_zero() || age < limit {
            return;
        }
        let marker = self.warned_marker(id);
        if marker.exists() {
            return;
        }
        let delayed: Vec<(Mailbox, DeliveryStatus)> = active
            .deferred_reasons
            .iter()
            .filter_map(|(&i, status)| {
                let r = env.recipients.get(i)?;
                bounce::wanted(r.notify, postern_dsn::Kind::Delay)
                    .then(|| (r.address.clone(), status.clone()))
            })
            .collect();
        if delayed.is_empty() {
            return;
        }
        let text = match bounce::build_report(
            &self.main,
            id,
            &active.file,
            postern_dsn::Kind::Delay,
            &delayed,
            SystemTime::now(),
        ) {
            Ok(t) => t,
            Err(e) => return warn!("{id}: cannot send delay warning: {e}"),
        };
        if let Err(e) = std::fs::write(&marker, b"") {
            // Without the marker the sender would be warned on every retry.
            return warn!("{id}: cannot record the delay warning ({e}): not sending it");
        }
        self.notify(id, text, to, false, "sender delay notification");
    }

    fn idle(&self) -> bool {
        self.active.is_empty() && self.bouncing.is_empty()
    }

    /// No delivery and no done-mark write in progress: safe to exit.
    fn quiet(&self) -> bool {
        self.marks_in_flight == 0
            && self.bouncing.is_empty()
            && self.busy_transport.values().all(|&n| n == 0)
    }
}

/// Raises the soft RLIMIT_NOFILE to the hard limit; returns the new soft limit.
fn raise_fd_limit() -> u64 {
    use nix::sys::resource::{Resource, getrlimit, setrlimit};
    match getrlimit(Resource::RLIMIT_NOFILE) {
        Ok((soft, hard)) => {
            if soft < hard && setrlimit(Resource::RLIMIT_NOFILE, hard, hard).is_ok() {
                hard
            } else {
                soft
            }
        }
        Err(_) => 1024,
    }
}

/// The transports qmgr runs itself, as Postfix's error(8), discard(8)
/// and retry: `error:5.1.1 text` bounces with that code and text,
/// `retry:4.3.0 text` defers, `discard:text` throws the mail away as
/// delivered. None for a real delivery agent.
fn builtin_transport(job: &Job, active: &Active) -> Option<Vec<(usize, DeliveryStatus)>> {
    let kind = job.route.transport.as_str();
    if !matches!(kind, "error" | "retry" | "discard") {
        return None;
    }
    let text = job.route.nexthop.trim();
    let (code, words) = match text.split_once(' ') {
        Some((c, w)) if postern_ipc::EnhancedCode::parse(c).is_some() => (c, w.trim()),
        _ if postern_ipc::EnhancedCode::parse(text).is_some() => (text, ""),
        _ => ("", text),
    };
    let parsed = postern_ipc::EnhancedCode::parse(code);
    let status = match kind {
        "discard" => DeliveryStatus::sent(if text.is_empty() {
            "discarded".to_string()
        } else {
            format!("discarded: {text}")
        }),
        "retry" => {
            let (subject, detail) = parsed.map_or((0, 0), |c| (c.1, c.2));
            let words = if words.is_empty() {
                "delivery deferred"
            } else {
                words
            };
            DeliveryStatus::temporary(subject, detail, words)
        }
        _ => {
            let (subject, detail) = parsed.map_or((0, 0), |c| (c.1, c.2));
            let words = if words.is_empty() {
                "mail delivery refused"
            } else {
                words
            };
            DeliveryStatus::permanent(subject, detail, words)
        }
    };
    let env = active.file.envelope();
    let word = match status.class() {
        StatusClass::Success => "sent",
        StatusClass::Temporary => "deferred",
        StatusClass::Permanent => "bounced",
    };
    for &i in &job.recipients {
        info!(
            "{}: to=<{}>, relay=none, delay={}, delays=0/0/0/0, dsn={}, status={word} ({})",
            job.id,
            env.recipients[i].address,
            postern_mailtime::log_delay(
                SystemTime::now()
                    .duration_since(env.arrival)
                    .unwrap_or_default()
            ),
            status.code(),
            status.text()
        );
    }
    Some(
        job.recipients
            .iter()
            .map(|&i| (i, status.clone()))
            .collect(),
    )
}

fn delay_secs(arrival: SystemTime) -> String {
    let d = SystemTime::now()
        .duration_since(arrival)
        .unwrap_or_default();
    format!("{:.2}", d.as_secs_f64())
}

fn defer_all(recipients: &[usize], why: &str) -> Vec<(usize, DeliveryStatus)> {
    recipients
        .iter()
        .map(|&i| (i, DeliveryStatus::temporary(3, 0, why)))
        .collect()
}

/// Talks to one delivery agent for one request.
async fn deliver(
    socket: &std::path::Path,
    req: &DeliveryRequest,
    file: &std::fs::File,
    connect_timeout: Duration,
    timeout: Duration,
) -> Result<Delivery, String> {
    let mut ch = tokio::time::timeout(connect_timeout, Channel::connect(socket))
        .await
        .map_err(|_| format!("connect to {}: timed out", socket.display()))?
        .map_err(|e| {
            format!(
                "connect to {}: {}",
                socket.display(),
                postern_service::log::io_reason(&e)
            )
        })?;
    ch.send_with_fd(req, file.as_fd())
        .await
        .map_err(|e| format!("send request: {e}"))?;
    let wanted: HashSet<u32> = req.recipients.iter().map(|r| r.index).collect();
    let mut results = Vec::new();
    let mut delivered = Vec::new();
    let mut site_failure = None;
    let mut seen = HashSet::new();
    let work = async {
        loop {
            match ch.recv::<DeliveryReply>().await {
                Ok(Some(DeliveryReply::Status { index, status })) => {
                    if !wanted.contains(&index) || !seen.insert(index) {
                        return Err(format!(
                            "agent sent a status for unexpected recipient {index}"
                        ));
                    }
                    results.push((index as usize, status));
                }
                Ok(Some(DeliveryReply::Delivered { keys })) => delivered = keys,
                Ok(Some(DeliveryReply::SiteFailure { reason })) => site_failure = Some(reason),
                Ok(Some(DeliveryReply::Finished)) => return Ok(()),
                Ok(None) => return Err("agent closed the connection early".to_string()),
                Err(e) => return Err(format!("bad reply from agent: {e}")),
            }
        }
    };
    let outcome = tokio::time::timeout(timeout, work).await;
    match outcome {
        Ok(Ok(())) => {}
        Ok(Err(e)) => {
            if results.is_empty() {
                return Err(e);
            }
            warn!("{}: {e}", req.queue_id);
        }
        Err(_) => {
            if results.is_empty() {
                return Err("agent timed out".into());
            }
        }
    }
    // Recipients the agent never answered for are deferred.
    for r in &req.recipients {
        if !seen.contains(&r.index) {
            results.push((
                r.index as usize,
                DeliveryStatus::temporary(3, 0, "no status from delivery agent"),
            ));
        }
    }
    Ok((results, delivered, site_failure))
}

/// An agent's answers: the statuses, the `Delivered` keys, the
/// `SiteFailure` reason.
type Delivery = (Vec<(usize, DeliveryStatus)>, Vec<String>, Option<String>);

/// The queues a message can be in while qmgr may still meet it again.
const QUEUE_HOLDERS: [Queue; 4] = [Queue::Incoming, Queue::Active, Queue::Deferred, Queue::Hold];

/// The scheduler loop.
pub async fn run(
    ctx: std::sync::Arc<postern_service::ServiceContext>,
    listener: postern_service::Listener,
    mut lifecycle: tokio::sync::watch::Receiver<postern_service::Lifecycle>,
) -> Result<(), String> {
    use postern_service::{Lifecycle, Listener};
    let Listener::Unix(listener) = listener else {
        return Err("qmgr must be a unix service in master.cf".into());
    };
    let (done_tx, mut done_rx) = mpsc::unbounded_channel();
    let qmgr = Rc::new(RefCell::new(Qmgr::new(&ctx.config, done_tx)?));
    let (trig_tx, mut trig_rx) = mpsc::unbounded_channel::<Trigger>();
    {
        let mut q = qmgr.borrow_mut();
        q.recover();
        q.scan_incoming();
        q.scan_deferred(false);
        q.dispatch();
    }
    let run_delay = qmgr.borrow().settings.queue_run_delay;
    let mut timer = tokio::time::interval(run_delay);
    timer.tick().await;
    let mut draining = false;
    loop {
        tokio::select! {
            accepted = listener.accept() => {
                if let Ok((stream, _)) = accepted {
                    let tx = trig_tx.clone();
                    tokio::task::spawn_local(async move {
                        for t in postern_ipc::read_triggers(stream).await {
                            let _ = tx.send(t);
                        }
                    });
                }
            }
            Some(t) = trig_rx.recv() => {
                if !draining {
                    let mut q = qmgr.borrow_mut();
                    match t {
                        Trigger::ScanIncoming => q.scan_incoming(),
                        Trigger::Wakeup => { q.scan_incoming(); q.scan_deferred(false); }
                        // As Postfix's postqueue -f: dead destinations are
                        // forgotten too, so their mail is really tried.
                        Trigger::Flush => { q.dead.clear(); q.scan_incoming(); q.scan_deferred(true); }
                    }
                    q.dispatch();
                }
            }
            Some(event) = done_rx.recv() => {
                let mut q = qmgr.borrow_mut();
                match event {
                    Event::Delivered(done) => q.completed(done),
                    Event::Marked { id, marks, result } => q.marked(id, marks, result),
                    Event::Bounced { id, result, double } => q.bounced(id, result, double),
                }
                if draining {
                    if q.quiet() {
                        return Ok(());
                    }
                } else {
                    if q.incoming_left {
                        q.scan_incoming();
                    }
                    q.dispatch();
                }
            }
            _ = timer.tick() => {
                if !draining {
                    let mut q = qmgr.borrow_mut();
                    q.scan_incoming();
                    q.scan_deferred(false);
                    q.dispatch();
                }
            }
            changed = lifecycle.changed() => {
                let state = if changed.is_ok() { *lifecycle.borrow() } else { Lifecycle::Stop };
                match state {
                    Lifecycle::Running => {}
                    Lifecycle::Stop => return Ok(()),
                    Lifecycle::Drain => {
                        draining = true;
                        let q = qmgr.borrow();
                        if q.quiet() {
                            return Ok(());
                        }
                        info!("reload: finishing {} deliveries in progress", q.busy_transport.values().sum::<usize>());
                    }
                }
            }
        }
        let q = qmgr.borrow();
        if draining && (q.idle() || q.quiet()) {
            // Messages still in active/ are picked up again by the next qmgr.
            return Ok(());
        }
    }
}

/// The program: a long-running service that drives its own listener.
pub fn main() -> ! {
    postern_service::event_server("qmgr", |_ctx| Ok(()), run)
}
