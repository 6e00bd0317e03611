//! Lookup tables, aliases and mailbox users shared by smtpd and local.
//!
//! What lives here:
//! - [`Aliases`]: aliases(5) files (`name: target, target`), and
//!   [`parse_targets`] for `.forward` / `:include:` files.
//! - [`MailUsers`]: the Dovecot-style passwd-file of virtual mail users,
//!   without its password hashes (those are postern-passdb's, for auth);
//!   [`user_lines`] is the file's one grammar.
//! - [`Table`]: Postfix-style `type:name` lookup tables (texthash, hash, inline,
//!   static, cidr, regexp, unix:passwd.byname).
//! - [`NetworkList`]: mynetworks-style address/prefix lists.
//! - [`LocalDomains`]: mydestination matching.
//! - [`AliasMaps`] / [`LocalRecipients`]: the alias_maps and
//!   local_recipient_maps sets, reloaded when a source file changes.
//!
//! SECURITY: everything here parses files written by the administrator and
//! keys taken from mail (local parts, domains, client addresses). Keys are only
//! ever used as lookup keys; nothing here runs programs or opens paths named by
//! mail data. Malformed files give a [`MapError`] with file and line, never a
//! panic.
//!
//! Parameters read: alias_maps, local_recipient_maps, recipient_delimiter,
//! mydestination, config_directory. (users_file is read by its callers:
//! local through [`MailUsers`], auth through postern-passdb.)
#![forbid(unsafe_code)]

mod aliases;
mod error;
mod network;
mod recipients;
mod table;
mod users;

pub use aliases::{AliasTarget, Aliases, parse_targets};
pub use error::MapError;
pub use network::NetworkList;
pub use recipients::{AliasMaps, LocalDomains, LocalRecipients, split_map_list, strip_extension};
pub use table::Table;
pub use users::{
    MailUser, MailUsers, UserLine, UserTable, duplicate_user_warning, user_lines, with_users_file,
};
