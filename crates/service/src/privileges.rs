//! Dropping start-up privileges: the hook every service passes through.
//!
//! Postfix's skeleton runs a service's pre-init code with the privileges it
//! was started with (to open keys and tables), then irreversibly drops them:
//! chroot to the queue directory when the master.cf chroot column says so,
//! setgid/setuid to the service user (`mail_owner`, or the master.cf unpriv
//! user), drop every capability, set no_new_privs.
//!
//! That work belongs to the privilege-separation issue. Until then this is
//! a deliberate no-op with one fixed place in the start-up sequence
//! (after `init`, before the first client), so that making it real changes
//! no service code. It logs nothing for an unprivileged process and only a
//! debug line for root.

use crate::ServiceContext;

/// Drops the privileges the service started with. Currently a no-op (see
/// the module documentation); errors will become fatal start-up errors.
pub fn drop_privileges(ctx: &ServiceContext) -> Result<(), String> {
    if nix::unistd::geteuid().is_root() {
        tracing::debug!(
            "privilege drop not implemented yet: {} keeps running as root",
            ctx.service_name
        );
    }
    Ok(())
}
