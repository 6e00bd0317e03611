//! Local delivery: aliases, .forward, Maildir, mbox, pipes and files.
