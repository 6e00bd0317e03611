//! Fuzz target: every IPC message family's decoder.
//!
//! Input: arbitrary bytes, taken as one frame. Checks: no decoder panics;
//! whatever decodes re-encodes to exactly the same frame (the wire form has
//! one spelling per message), and that frame decodes to the same message.

#![no_main]

use libfuzzer_sys::fuzz_target;
use postern_ipc_proto::codec::decode_frame;
use postern_ipc_proto::{
    AuthReply, AuthRequest, CleanupReply, CleanupRequest, DeliveryReply, DeliveryRequest, Message,
    SubmitContent, SubmitRequest,
};

fn check<M: Message + PartialEq + std::fmt::Debug>(data: &[u8]) {
    if let Ok(m) = decode_frame::<M>(data) {
        let again = m.encode();
        assert_eq!(again, data, "one spelling per message");
        assert_eq!(decode_frame::<M>(&again).as_ref().ok(), Some(&m));
    }
}

fuzz_target!(|data: &[u8]| {
    check::<CleanupRequest>(data);
    check::<CleanupReply>(data);
    check::<DeliveryRequest>(data);
    check::<DeliveryReply>(data);
    check::<SubmitRequest>(data);
    check::<SubmitContent>(data);
    check::<AuthReply>(data);
    // AuthRequest has no Debug (it would show a password): same checks by hand.
    if let Ok(m) = decode_frame::<AuthRequest>(data) {
        let again = m.encode();
        assert!(again == data, "one spelling per message");
        assert!(decode_frame::<AuthRequest>(&again).ok() == Some(m));
    }
});
