//! A loopback DNS server for tests (work in progress).
#![forbid(unsafe_code)]
#![warn(missing_docs)]
