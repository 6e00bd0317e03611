//! Fuzz target: SMTP command lines and their framing.
//!
//! Input: one flags byte (bit 0 = strict_rfc821_envelopes, bit 1 = allow_utf8,
//! the rest picks a line limit), then the bytes of a command line. Checks:
//! nothing panics; a parsed command prints to a line that parses back to the
//! same command; an error reply is exactly one line; the typed parameter
//! checks never panic; the LineReader frames the same lines whether fed at
//! once or byte by byte; a parsed mailbox prints and parses back unchanged.

#![no_main]

use libfuzzer_sys::fuzz_target;
use postern_smtp_proto::{
    Command, Line, LineReader, MailParams, Mailbox, ParseOptions, RcptParams, parse_command,
};

fn frame(input: &[u8], limit: usize, one_byte_at_a_time: bool) -> (Vec<Line>, Vec<u8>) {
    let mut reader = LineReader::new(limit);
    let mut lines = Vec::new();
    if one_byte_at_a_time {
        for b in input {
            reader.push(std::slice::from_ref(b));
            while let Some(line) = reader.next_line() {
                lines.push(line);
            }
        }
    } else {
        reader.push(input);
        while let Some(line) = reader.next_line() {
            lines.push(line);
        }
    }
    (lines, reader.take_buffered())
}

fuzz_target!(|data: &[u8]| {
    let Some((&flags, line)) = data.split_first() else {
        return;
    };
    let opts = ParseOptions {
        strict_rfc821_envelopes: flags & 1 != 0,
        allow_utf8: flags & 2 != 0,
    };

    match parse_command(line, &opts) {
        Ok(cmd) => {
            let text = cmd.to_string();
            assert_eq!(parse_command(text.as_bytes(), &opts), Ok(cmd.clone()), "{text:?}");
            match &cmd {
                Command::Mail { params, .. } => {
                    let _ = MailParams::from_params(params);
                }
                Command::Rcpt { params, .. } => {
                    let _ = RcptParams::from_params(params);
                }
                _ => {}
            }
        }
        Err(e) => {
            let wire = e.reply().to_bytes();
            assert!(wire.ends_with(b"\r\n"));
            assert_eq!(wire.iter().filter(|&&b| b == b'\n').count(), 1);
            assert!(e.reply().is_permanent());
        }
    }

    if let Ok(text) = std::str::from_utf8(line)
        && let Ok(mailbox) = Mailbox::parse(text)
    {
        assert_eq!(Mailbox::parse(&mailbox.to_string()), Ok(mailbox));
    }

    // The trailing partial line may be partly dropped (too long) in one mode
    // and not yet in the other only if it exceeds the limit; compare lines.
    let limit = 1 + usize::from(flags >> 2);
    let (whole, _) = frame(line, limit, false);
    let (bytes, _) = frame(line, limit, true);
    assert_eq!(whole, bytes);
    for l in &whole {
        if let Line::Complete { line, .. } = l {
            assert!(line.len() <= limit);
        }
    }
});
