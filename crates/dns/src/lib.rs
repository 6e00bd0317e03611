//! DNS for outbound delivery (work in progress: MX selection per RFC 5321 section 5.1).
#![forbid(unsafe_code)]
#![warn(missing_docs)]
