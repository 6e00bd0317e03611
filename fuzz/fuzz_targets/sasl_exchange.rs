//! Fuzz target: SASL PLAIN/LOGIN exchanges (postern-sasl).
//!
//! Input: one byte choosing the mechanism (bit 0) and whether the first line
//! is an initial response (bit 1), then response lines separated by `\n`.
//! Checks: nothing panics; finished credentials never have an empty or
//! NUL-containing user name or password; after Done or an error the exchange
//! only answers Finished.

#![no_main]

use libfuzzer_sys::fuzz_target;
use postern_sasl::{Exchange, Mechanism, SaslError, Step};

fn check(step: &Step) {
    if let Step::Done(c) = step {
        assert!(!c.username.is_empty() && !c.username.contains('\0'));
        assert!(!c.password.expose().is_empty() && !c.password.expose().contains('\0'));
    }
}

fuzz_target!(|data: &[u8]| {
    let Some((&flags, rest)) = data.split_first() else {
        return;
    };
    let Ok(text) = std::str::from_utf8(rest) else {
        return;
    };
    let mech = if flags & 1 == 0 { Mechanism::Plain } else { Mechanism::Login };
    let mut lines = text.split('\n');
    let initial = if flags & 2 != 0 { lines.next() } else { None };
    let Ok((mut ex, step)) = Exchange::start(mech, initial) else {
        return;
    };
    check(&step);
    let mut over = matches!(step, Step::Done(_));
    for line in lines {
        match ex.respond(line) {
            Ok(step) => {
                assert!(!over, "an answer after the exchange ended");
                check(&step);
                over = matches!(step, Step::Done(_));
            }
            Err(e) => {
                if over {
                    assert_eq!(e, SaslError::Finished);
                }
                over = true;
            }
        }
    }
});
