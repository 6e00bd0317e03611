//! systemd readiness notification (sd_notify(3)) for master.
//!
//! Under `systemd/postern.service` (Type=notify) master runs in the
//! foreground and systemd waits for it to say it is serving. master sends:
//! - `READY=1`, `MAINPID=<pid>`, `STATUS=...` once every listener is bound
//!   and the services are started ([`ready`]);
//! - `RELOADING=1`, `MONOTONIC_USEC=...` when SIGHUP arrives, then `READY=1`
//!   again once the new configuration is applied (or refused and the old one
//!   kept) ([`reloading`], [`reloaded`]);
//! - `STOPPING=1` when SIGTERM/SIGINT arrives, before it stops its services
//!   ([`stopping`]);
//! - `STATUS=1 service failing: smtp/inet: fatal: ...` when a service starts
//!   failing at start-up (or its reason changes), and the serving status
//!   again once none fails ([`status`]).
//!
//! Nothing is sent without `NOTIFY_SOCKET` (sd-notify does nothing then),
//! nor by a background master (`postern start`): only [`ready`] enables the
//! later messages, and only the foreground path calls it.
//!
//! SECURITY: the messages are fixed words plus master's own pid and
//! configuration path, and the fatal text of failing services, which comes
//! from a child: [`status`] makes it one line, so it can never add a
//! `READY=`/`MAINPID=` assignment of its own; nothing from clients. `NOTIFY_SOCKET`
//! stays in master's environment (later messages need it) but never reaches
//! a service: spawn clears every child's environment, and the unit sets
//! `NotifyAccess=main` so systemd would ignore a child's message anyway.
//! A failed send is logged and ignored: notification never stops the mail
//! system.

use std::sync::atomic::{AtomicBool, Ordering};

use sd_notify::NotifyState;
use tracing::warn;

/// Set by [`ready`] when master runs in the foreground with `NOTIFY_SOCKET`
/// set: the reload and stop messages are sent only then, so a background
/// master never talks to a service manager that did not start it.
static ENABLED: AtomicBool = AtomicBool::new(false);

/// Sends one datagram with `states`; a failure is logged, never fatal.
fn send(what: &str, states: &[NotifyState<'_>]) {
    if let Err(e) = sd_notify::notify(false, states) {
        warn!("cannot notify the service manager ({what}): {e}");
    }
}

/// master is listening on every listener and serving: tells systemd
/// (`READY=1` with master's pid and `status`) so a Type=notify unit counts
/// as started, and enables [`reloading`], [`reloaded`] and [`stopping`].
/// Call it from the foreground master only; a no-op without `NOTIFY_SOCKET`.
pub(crate) fn ready(status: &str) {
    if std::env::var_os("NOTIFY_SOCKET").is_none() {
        return;
    }
    ENABLED.store(true, Ordering::SeqCst);
    send(
        "ready",
        &[
            NotifyState::Ready,
            NotifyState::MainPid(std::process::id()),
            NotifyState::Status(status),
        ],
    );
}

/// SIGHUP arrived and master is about to re-read its configuration: tells
/// systemd (`RELOADING=1` with the monotonic time systemd ≥ 253 requires) so
/// `systemctl reload` waits until [`reloaded`].
pub(crate) fn reloading() {
    if !ENABLED.load(Ordering::SeqCst) {
        return;
    }
    let mut states = vec![
        NotifyState::Reloading,
        NotifyState::Status("reloading the configuration"),
    ];
    match NotifyState::monotonic_usec_now() {
        Ok(now) => states.push(now),
        Err(e) => warn!("cannot read the monotonic clock for the reload notification: {e}"),
    }
    send("reloading", &states);
}

/// The reload is over (applied, or refused with the old configuration kept,
/// which master has logged): tells systemd master is serving again.
pub(crate) fn reloaded() {
    if !ENABLED.load(Ordering::SeqCst) {
        return;
    }
    send(
        "reloaded",
        &[
            NotifyState::Ready,
            NotifyState::Status("serving (configuration reloaded)"),
        ],
    );
}

/// SIGTERM/SIGINT arrived: tells systemd master is stopping its services
/// (`STOPPING=1`), so the unit shows "deactivating" rather than a crash.
pub(crate) fn stopping(signo: i32) {
    if !ENABLED.load(Ordering::SeqCst) {
        return;
    }
    let status = format!("stopping on signal {signo}");
    send(
        "stopping",
        &[NotifyState::Stopping, NotifyState::Status(&status)],
    );
}

/// Says how master is doing (`STATUS=`), e.g. which services fail at
/// start-up. Control characters become spaces: one datagram line per
/// assignment, so a child's text cannot add assignments of its own.
pub(crate) fn status(text: &str) {
    if !ENABLED.load(Ordering::SeqCst) {
        return;
    }
    let line: String = text
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect();
    send("status", &[NotifyState::Status(&line)]);
}
