//! The SMTP server: talks to clients, applies policy, streams mail to cleanup.
