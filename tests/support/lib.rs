//! Harness for end-to-end tests: builds an instance directory, starts master, speaks SMTP.
