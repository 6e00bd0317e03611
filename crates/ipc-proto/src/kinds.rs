//! Every message kind byte, in one table, so two conversations never share a
//! kind by accident (a test checks the table has no duplicates) and a frame
//! sent to the wrong service fails with `UnknownKind` instead of being read
//! as something else.
//!
//! Requests use 1–63, replies 64–127; each conversation has its own block.

/// One row of [`KINDS`]: the byte, its conversation, and the message.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Kind {
    /// The kind byte on the wire.
    pub byte: u8,
    /// Which conversation it belongs to (the module that defines it).
    pub conversation: &'static str,
    /// The message and variant it encodes.
    pub message: &'static str,
}

macro_rules! kinds {
    ($($name:ident = $byte:literal, $conv:literal, $msg:literal;)*) => {
        $(pub(crate) const $name: u8 = $byte;)*
        /// Every kind byte in use.
        pub static KINDS: &[Kind] = &[
            $(Kind { byte: $byte, conversation: $conv, message: $msg },)*
        ];
    };
}

kinds! {
    K_OPEN = 1, "cleanup", "CleanupRequest::Open";
    K_SENDER = 2, "cleanup", "CleanupRequest::Sender";
    K_RCPT = 3, "cleanup", "CleanupRequest::Recipient";
    K_CONTENT = 4, "cleanup", "CleanupRequest::Content";
    K_END = 5, "cleanup", "CleanupRequest::End";
    K_DELIVER = 10, "delivery", "DeliveryRequest";
    K_SUBMIT = 20, "submit", "SubmitRequest";
    K_SUBMIT_CHUNK = 21, "submit", "SubmitContent::Chunk";
    K_SUBMIT_END = 22, "submit", "SubmitContent::End";
    K_AUTH_VERIFY = 30, "auth", "AuthRequest::Verify";
    K_AUTH_LOOKUP = 31, "auth", "AuthRequest::Lookup";
    K_OPENED = 65, "cleanup", "CleanupReply::Opened";
    K_QUEUED = 66, "cleanup", "CleanupReply::Queued";
    K_REJECTED = 67, "cleanup", "CleanupReply::Rejected";
    K_STATUS = 74, "delivery", "DeliveryReply::Status";
    K_FINISHED = 75, "delivery", "DeliveryReply::Finished";
    K_DELIVERED = 76, "delivery", "DeliveryReply::Delivered";
    K_SITE_FAILURE = 77, "delivery", "DeliveryReply::SiteFailure";
    K_AUTH_VERIFIED = 94, "auth", "AuthReply::Verified";
    K_AUTH_FAILED = 95, "auth", "AuthReply::Failed";
    K_AUTH_TEMPFAIL = 96, "auth", "AuthReply::TempFail";
    K_AUTH_USER = 97, "auth", "AuthReply::User";
    K_AUTH_NOUSER = 98, "auth", "AuthReply::NoSuchUser";
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn no_two_messages_share_a_kind() {
        let mut seen = std::collections::HashSet::new();
        for k in KINDS {
            assert!(
                seen.insert(k.byte),
                "kind {} used twice ({})",
                k.byte,
                k.message
            );
            assert!(k.byte != 0 && k.byte < 128, "{}", k.message);
        }
    }
}
