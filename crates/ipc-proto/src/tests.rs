//! Cross-conversation tests: every message round-trips, frames are strict.

use crate::codec::{DecodeError, Encoder, VERSION, decode_frame};
use crate::kinds::{K_RCPT, K_SENDER};
use crate::*;
use proptest::prelude::*;
use std::time::{Duration, UNIX_EPOCH};

fn round<M: Message + PartialEq + std::fmt::Debug>(m: M) {
    let f = m.encode();
    assert_eq!(decode_frame::<M>(&f).unwrap(), m);
}

#[test]
fn every_message_round_trips() {
    round(CleanupRequest::Open {
        flags: 3,
        attributes: vec![("client_name".into(), "x".into())],
    });
    round(CleanupRequest::Sender {
        address: ReversePath::Null,
    });
    round(CleanupRequest::Sender {
        address: ReversePath::Mailbox(mb("s@x")),
    });
    round(CleanupRequest::Recipient {
        address: mb("a@b"),
        original: "A@b".into(),
        notify: None,
        orcpt: None,
    });
    round(CleanupRequest::Recipient {
        address: mb("\"a b\"@b"),
        original: "".into(),
        notify: Some(Notify::On {
            success: true,
            failure: false,
            delay: true,
        }),
        orcpt: Some(Orcpt {
            addr_type: "rfc822".into(),
            address: "x;y@z".into(),
        }),
    });
    round(CleanupRequest::Content {
        data: vec![0, 255, b'\n'],
    });
    round(CleanupRequest::End);
    round(CleanupReply::Opened {
        queue_id: "ABC".into(),
    });
    round(CleanupReply::Queued {
        queue_id: "ABC".into(),
    });
    round(CleanupReply::Rejected {
        status: DeliveryStatus::temporary(3, 0, "disk full"),
    });
    round(CleanupReply::Rejected {
        status: DeliveryStatus::permanent(3, 4, "message file too big"),
    });
    round(DeliveryRequest {
        queue_id: "Q".into(),
        sender: ReversePath::Mailbox(mb("s@x")),
        arrival: UNIX_EPOCH + Duration::from_micros(1_700_000_000_123_456),
        content_offset: 99,
        content_len: 1234,
        nexthop: "example.test".into(),
        recipients: vec![DeliveryRecipient {
            index: 2,
            address: mb("a@b"),
            original: "a@b".into(),
            notify: Some(Notify::Never),
            orcpt: None,
        }],
        attributes: vec![],
        delivered: vec!["mailbox:joe".into(), "file:/tmp/x".into()],
    });
    round(DeliveryReply::Delivered {
        keys: vec!["mailbox:joe".into()],
    });
    round(DeliveryReply::Delivered { keys: vec![] });
    round(DeliveryReply::SiteFailure {
        reason: "connect to mx[192.0.2.1]:25: Connection refused".into(),
    });
    round(DeliveryReply::Status {
        index: 7,
        status: DeliveryStatus::permanent(1, 1, "no"),
    });
    round(DeliveryReply::Status {
        index: 0,
        status: DeliveryStatus::sent("delivered to maildir"),
    });
    round(DeliveryReply::Status {
        index: u32::MAX,
        status: DeliveryStatus::temporary(999, 999, ""),
    });
    round(DeliveryReply::Finished);
}

/// A status frame built by hand: index 7, then class, the code's three
/// numbers and the text.
fn status_frame(class: u8, c: u8, subject: u32, detail: u32) -> Vec<u8> {
    let mut e = crate::codec::Encoder::new(
        crate::kinds::KINDS
            .iter()
            .find(|k| k.message == "DeliveryReply::Status")
            .unwrap()
            .byte,
    );
    e.u32(7).u8(class).u8(c).u32(subject).u32(detail).str("why");
    e.finish()
}

#[test]
fn the_status_code_travels_as_three_numbers() {
    let f = DeliveryReply::Status {
        index: 7,
        status: DeliveryStatus::permanent(1, 1, "why"),
    }
    .encode();
    assert_eq!(f, status_frame(2, 5, 1, 1));
    assert!(!f.windows(5).any(|w| w == b"5.1.1"));
    assert_eq!(
        decode_frame::<DeliveryReply>(&status_frame(1, 4, 4, 7)),
        Ok(DeliveryReply::Status {
            index: 7,
            status: DeliveryStatus::temporary(4, 7, "why"),
        })
    );
}

#[test]
fn a_cleanup_rejection_carries_a_checked_failure_status() {
    let byte = crate::kinds::KINDS
        .iter()
        .find(|k| k.message == "CleanupReply::Rejected")
        .unwrap()
        .byte;
    let frame = |class: u8, c: u8| {
        let mut e = crate::codec::Encoder::new(byte);
        e.u8(class).u8(c).u32(3).u32(4).str("too big");
        e.finish()
    };
    assert_eq!(
        decode_frame::<CleanupReply>(&frame(2, 5)),
        Ok(CleanupReply::Rejected {
            status: DeliveryStatus::permanent(3, 4, "too big"),
        })
    );
    assert_eq!(
        decode_frame::<CleanupReply>(&frame(0, 2)),
        Err(DecodeError::BadValue("a rejection with a success status"))
    );
    assert_eq!(
        decode_frame::<CleanupReply>(&frame(1, 5)),
        Err(DecodeError::BadValue(
            "status class disagrees with its code"
        ))
    );
    assert_eq!(
        decode_frame::<CleanupReply>(&frame(2, 9)),
        Err(DecodeError::BadValue("status code"))
    );
}

#[test]
fn invalid_status_codes_are_refused() {
    let bad = |class, c, s, d| decode_frame::<DeliveryReply>(&status_frame(class, c, s, d));
    // 9.x.x and 3.x.x are no classes.
    assert_eq!(bad(2, 9, 1, 1), Err(DecodeError::BadValue("status code")));
    assert_eq!(bad(0, 3, 0, 0), Err(DecodeError::BadValue("status code")));
    // Subject or detail over three digits (or over u16).
    assert_eq!(
        bad(2, 5, 1000, 0),
        Err(DecodeError::BadValue("status code"))
    );
    assert_eq!(
        bad(2, 5, 0, 70_000),
        Err(DecodeError::BadValue("status code"))
    );
    // A class that disagrees with the code's first digit.
    for (class, c) in [(0, 5), (1, 2), (2, 4), (0, 4), (1, 5), (2, 2)] {
        assert_eq!(
            bad(class, c, 0, 0),
            Err(DecodeError::BadValue(
                "status class disagrees with its code"
            )),
            "{class} {c}"
        );
    }
    // No such class.
    assert_eq!(
        bad(3, 5, 0, 0),
        Err(DecodeError::BadValue("delivery status class"))
    );
}

proptest! {
    #[test]
    fn every_valid_status_round_trips(class in 0u8..3, s in 0u16..1000, d in 0u16..1000, text in ".{0,40}") {
        let status = match class {
            0 => DeliveryStatus::success(s, d, text),
            1 => DeliveryStatus::temporary(s, d, text),
            _ => DeliveryStatus::permanent(s, d, text),
        };
        round(DeliveryReply::Status { index: 1, status });
    }
}

fn mb(s: &str) -> Mailbox {
    Mailbox::parse(s).expect("mailbox")
}

#[test]
fn addresses_that_do_not_parse_are_refused() {
    // Frames built by hand: what a typed sender could never encode.
    for (kind, fields, why) in [
        (K_SENDER, vec!["<a@b>"], "sender address"),
        (K_SENDER, vec!["joe"], "sender address"),
        (K_RCPT, vec!["joe", "", "", ""], "mailbox"),
        (K_RCPT, vec!["a@b", "", "ALWAYS", ""], "NOTIFY"),
        (K_RCPT, vec!["a@b", "", "", "rfc822"], "ORCPT"),
    ] {
        let mut e = Encoder::new(kind);
        for f in fields {
            e.str(f);
        }
        assert_eq!(
            decode_frame::<CleanupRequest>(&e.finish()),
            Err(DecodeError::BadValue(why))
        );
    }
}

#[test]
fn trailing_bytes_are_an_error() {
    let mut f = CleanupRequest::Sender {
        address: ReversePath::Null,
    }
    .encode();
    f.push(0);
    let len = (f.len() - 4) as u32;
    f[..4].copy_from_slice(&len.to_be_bytes());
    assert_eq!(
        decode_frame::<CleanupRequest>(&f),
        Err(DecodeError::TrailingBytes(1))
    );
}

#[test]
fn wrong_version_and_kind_are_errors() {
    let mut f = CleanupRequest::End.encode();
    f[4] = VERSION + 1;
    assert_eq!(
        decode_frame::<CleanupRequest>(&f),
        Err(DecodeError::Version(VERSION + 1))
    );
    let f = CleanupReply::Opened {
        queue_id: "x".into(),
    }
    .encode();
    assert!(matches!(
        decode_frame::<CleanupRequest>(&f),
        Err(DecodeError::UnknownKind(65))
    ));
}

#[test]
fn truncated_fields_are_errors() {
    let f = CleanupRequest::Recipient {
        address: mb("a@b"),
        original: "c".into(),
        notify: None,
        orcpt: None,
    }
    .encode();
    // Cut the last byte off but keep the length field consistent.
    let mut g = f[..f.len() - 1].to_vec();
    let len = (g.len() - 4) as u32;
    g[..4].copy_from_slice(&len.to_be_bytes());
    assert_eq!(
        decode_frame::<CleanupRequest>(&g),
        Err(DecodeError::Truncated)
    );
}

proptest! {
    #[test]
    fn decoding_arbitrary_bytes_never_panics(data in proptest::collection::vec(any::<u8>(), 0..200)) {
        let _ = decode_frame::<CleanupRequest>(&data);
        let _ = decode_frame::<CleanupReply>(&data);
        let _ = decode_frame::<DeliveryRequest>(&data);
        let _ = decode_frame::<DeliveryReply>(&data);
    }
    #[test]
    fn content_round_trips(data in proptest::collection::vec(any::<u8>(), 0..5000)) {
        round(CleanupRequest::Content { data });
    }
}

#[test]
fn frames_over_the_limit_are_refused_when_sent() {
    let big = CleanupRequest::Content {
        data: vec![b'x'; MAX_FRAME],
    };
    let e = big.to_frame().unwrap_err();
    assert!(e.length > MAX_FRAME, "{e}");
    let fits = CleanupRequest::Content {
        data: vec![b'x'; CHUNK_SIZE],
    };
    let f = fits.to_frame().unwrap();
    assert_eq!(decode_frame::<CleanupRequest>(&f).unwrap(), fits);
}
