//! Lookup tables, aliases and mailbox users shared by smtpd and local.
