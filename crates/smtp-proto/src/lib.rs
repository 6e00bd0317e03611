//! SMTP protocol (RFC 5321) without I/O: command parser, replies, DATA decoder.
//!
//! This crate is pure code: it never reads a socket or a file. smtpd (and
//! later the SMTP client) wrap it in tokio drivers. Everything here handles
//! untrusted network bytes, so nothing panics on any input, every limit is
//! explicit, and the parsers are fuzzed (see `fuzz/` at the repository root).
//!
//! STANDARDS: RFC 5321 (SMTP), RFC 1870 (SIZE), RFC 6152 (8BITMIME),
//! RFC 2034 (ENHANCEDSTATUSCODES), RFC 2920 (PIPELINING: [`LineReader`]
//! keeps pipelined input), RFC 6531 (SMTPUTF8), RFC 3461 (DSN parameters,
//! parsed only), RFC 4954 (AUTH command syntax), RFC 3207 (STARTTLS),
//! RFC 3030 (CHUNKING: [`ChunkDecoder`]).
//!
//! Modules:
//! - [`address`]: mailboxes and envelope paths;
//! - [`command`]: command lines into [`Command`] or [`CommandError`];
//! - [`params`]: ESMTP parameters, generic and typed;
//! - [`reply`]: replies and their wire form;
//! - [`line`](mod@line): command line framing with a length limit;
//! - [`data`]: DATA phase decoding and dot-stuffing;
//! - [`chunk`]: BDAT chunk decoding;
//! - [`server`]: the server session (states, command table, limits,
//!   policy hooks) that smtpd and `sendmail -bs` drive;
//! - [`client`]: the client side (reply parser, EHLO capabilities, command
//!   encoding, the mail transaction planner, streaming dot-stuffing) that
//!   the smtp/lmtp delivery agent drives.

#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod address;
pub mod chunk;
pub mod client;
pub mod command;
pub mod data;
pub mod line;
pub mod params;
pub mod reply;
pub mod server;

pub use address::{
    AddressError, ForwardPath, MAX_DOMAIN, MAX_LOCAL_PART, MAX_PATH, Mailbox, ReversePath,
    valid_address_literal, valid_domain,
};
pub use chunk::ChunkDecoder;
pub use command::{
    BAD_RECIPIENT, BAD_SENDER, Command, CommandError, ParseOptions, address_error_detail,
    parse_command,
};
pub use data::{DataDecoder, DataProgress, dot_stuff};
pub use line::{Line, LineReader};
pub use params::{
    Body, MailParams, Notify, Orcpt, Param, ParamError, RcptParams, Ret, xtext_decode,
};
pub use reply::{EnhancedCode, Reply, ehlo_reply};

#[cfg(test)]
mod proptests {
    use super::*;
    use proptest::prelude::*;

    fn smtpish() -> impl Strategy<Value = Vec<u8>> {
        let piece = prop_oneof![
            Just(b"MAIL FROM:".to_vec()),
            Just(b"RCPT TO:".to_vec()),
            Just(b"<".to_vec()),
            Just(b">".to_vec()),
            Just(b"@".to_vec()),
            Just(b"\"".to_vec()),
            Just(b"\\".to_vec()),
            Just(b" ".to_vec()),
            Just(b"[IPv6:".to_vec()),
            Just(b"]".to_vec()),
            Just(b"=".to_vec()),
            Just(b"a".to_vec()),
            Just(b".".to_vec()),
            Just("é".as_bytes().to_vec()),
            proptest::collection::vec(any::<u8>(), 0..4),
        ];
        proptest::collection::vec(piece, 0..16).prop_map(|v| v.concat())
    }

    proptest! {
        #[test]
        fn parse_command_never_panics(line in proptest::collection::vec(any::<u8>(), 0..600),
                                      strict in any::<bool>(), utf8 in any::<bool>()) {
            let opts = ParseOptions { strict_rfc821_envelopes: strict, allow_utf8: utf8 };
            if let Err(e) = parse_command(&line, &opts) {
                let r = e.reply();
                prop_assert!(r.is_permanent());
            }
        }

        #[test]
        fn parsed_commands_round_trip(line in smtpish(), strict in any::<bool>()) {
            let opts = ParseOptions { strict_rfc821_envelopes: strict, allow_utf8: true };
            match parse_command(&line, &opts) {
                Ok(cmd) => {
                    let again = parse_command(cmd.to_string().as_bytes(), &opts);
                    prop_assert_eq!(again, Ok(cmd));
                }
                Err(e) => {
                    let wire = e.reply().to_bytes();
                    // One reply line, no injected line breaks.
                    prop_assert_eq!(wire.iter().filter(|&&b| b == b'\n').count(), 1);
                }
            }
        }

        #[test]
        fn mailbox_display_round_trips(s in "[a-z\"\\\\. @\\[\\]:0-9]{0,30}") {
            if let Ok(m) = Mailbox::parse(&s) {
                prop_assert_eq!(Mailbox::parse(&m.to_string()), Ok(m));
            }
        }
    }
}
