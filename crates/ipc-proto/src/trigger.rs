//! One-byte wake-up calls: cleanup and master → qmgr, master → pickup,
//! postdrop → pickup, `postern flush` → qmgr.

/// One-byte requests written to a service's socket to make it look at the
/// queue (Postfix's triggers). Unknown bytes are ignored by the receiver.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Trigger {
    /// New mail in incoming/ (from cleanup).
    ScanIncoming,
    /// Periodic wakeup (from master): look at deferred/ too.
    Wakeup,
    /// Deliver deferred mail now (`postern flush`).
    Flush,
}

impl Trigger {
    /// The byte on the wire.
    pub fn byte(self) -> u8 {
        match self {
            Trigger::ScanIncoming => b'I',
            Trigger::Wakeup => b'W',
            Trigger::Flush => b'F',
        }
    }
    /// Parses a byte from the wire.
    pub fn from_byte(b: u8) -> Option<Trigger> {
        match b {
            b'I' => Some(Trigger::ScanIncoming),
            b'W' => Some(Trigger::Wakeup),
            b'F' => Some(Trigger::Flush),
            _ => None,
        }
    }
}
