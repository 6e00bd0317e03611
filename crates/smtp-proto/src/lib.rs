//! SMTP protocol (RFC 5321) without I/O: command parser, replies, DATA decoder.
