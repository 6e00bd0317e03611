//! The service skeleton every Postern daemon runs on: sockets from master,
//! logging, privileges, limits.
//!
//! A daemon's `main.rs` is one call: [`single_server`] for services that
//! serve one client at a time (smtpd, cleanup, local) or [`event_server`]
//! for long-running ones that drive their own listener (qmgr). Both take
//! the listening socket master passes as fd 3, report idle/busy to master
//! on the status pipe (fd 4, see [`status`]), log in Postfix's format
//! ([`log`]), and go through the privilege-drop hook ([`privileges`]).
//!
//! SECURITY: this crate trusts master (its argv, environment and
//! descriptors) and the configuration directory; it reads nothing from the
//! network itself. `unsafe` is confined to [`fds`] (adopting inherited
//! descriptors), one localtime_r call in [`log`], and [`run_as`] (fork,
//! signal reset, clearenv, close-on-exec, `_exit`). When master runs as
//! root, [`privileges`] irreversibly drops to the service's user (groups,
//! chroot, capabilities, no_new_privs) after `init` and before the first
//! client; any failure there is fatal. [`run_as`] is the one path by which
//! a root service (local; later the post-login side of pop3d and imapd)
//! runs a piece of work as a mail user, in a forked child.

#![deny(unsafe_code)]

pub mod args;
mod conn;
pub mod fds;
pub mod log;
pub mod privileges;
pub mod run_as;
mod server;
pub mod status;

use std::path::PathBuf;

pub use args::{ParsedArgs, parse_service_args, parse_service_type, service_type_name};
pub use conn::{Connection, Listener};
pub use log::{fatal, init_logging};
pub use postern_config::ServiceType;
pub use server::{DEFAULT_CONFIG_DIR, build_context, event_server, single_server};

/// Everything a service knows about itself, built from argv and MAIL_CONFIG.
#[derive(Debug)]
pub struct ServiceContext {
    /// The program name, e.g. "smtpd" (the log tag's second half).
    pub program: &'static str,
    /// `-n` (the master.cf service column), or the program name if absent.
    pub service_name: String,
    /// `-t`, default Unix.
    pub service_type: ServiceType,
    /// $MAIL_CONFIG or /etc/postern.
    pub config_dir: PathBuf,
    /// main.cf with every `-o` override applied, validated.
    pub config: postern_config::MainCf,
    /// Remaining args (not -n/-t/-o/-v).
    pub args: Vec<String>,
    /// `-v`: debug logging.
    pub verbose: bool,
}

impl ServiceContext {
    /// The queue directory (parameter queue_directory), where the queue
    /// and the private/ and public/ sockets live.
    pub fn queue_dir(&self) -> PathBuf {
        self.config.path("queue_directory")
    }
}

/// What a service is asked to do, published through a tokio watch channel.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Lifecycle {
    /// Serve normally.
    Running,
    /// SIGHUP (reload) or master gone: finish current work, then exit.
    Drain,
    /// SIGTERM: exit now.
    Stop,
}
