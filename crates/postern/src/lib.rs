//! The postern admin command (also sendmail, mailq, newaliases).
