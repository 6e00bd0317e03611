//! RFC 3464 delivery status notifications (work in progress).
#![forbid(unsafe_code)]
#![warn(missing_docs)]
