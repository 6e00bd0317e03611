//! Envelope addresses on the wire: typed on both ends, so no receiver
//! splits strings at `@` or guesses what an empty sender means.
//!
//! A sender is its bare form (`""` = the null sender `<>`), a mailbox is
//! `local@domain`, and the DSN parameters of a recipient are NOTIFY and
//! ORCPT in their decoded text forms (`""` = not given). Decoding parses
//! each with the SMTP address parser and refuses what it refuses.

use crate::codec::{DecodeError, Decoder, Encoder};
use postern_smtp_proto::{Mailbox, Notify, Orcpt, ReversePath};

/// Writes an envelope sender.
pub fn put_sender(e: &mut Encoder, s: &ReversePath) {
    e.str(&s.bare());
}

/// Reads what [`put_sender`] wrote.
pub fn get_sender(d: &mut Decoder<'_>) -> Result<ReversePath, DecodeError> {
    ReversePath::parse_bare(&d.str()?).map_err(|_| DecodeError::BadValue("sender address"))
}

/// Writes a mailbox.
pub fn put_mailbox(e: &mut Encoder, m: &Mailbox) {
    e.str(&m.to_string());
}

/// Reads what [`put_mailbox`] wrote.
pub fn get_mailbox(d: &mut Decoder<'_>) -> Result<Mailbox, DecodeError> {
    Mailbox::parse(&d.str()?).map_err(|_| DecodeError::BadValue("mailbox"))
}

/// Writes a recipient's RFC 3461 parameters.
pub fn put_rcpt_dsn(e: &mut Encoder, notify: Option<Notify>, orcpt: Option<&Orcpt>) {
    e.str(&notify.map(|n| n.to_string()).unwrap_or_default())
        .str(&orcpt.map(|o| o.to_string()).unwrap_or_default());
}

/// Reads what [`put_rcpt_dsn`] wrote.
pub fn get_rcpt_dsn(d: &mut Decoder<'_>) -> Result<(Option<Notify>, Option<Orcpt>), DecodeError> {
    let notify = match d.str()?.as_str() {
        "" => None,
        n => Some(Notify::parse(n).ok_or(DecodeError::BadValue("NOTIFY"))?),
    };
    let orcpt = match d.str()?.as_str() {
        "" => None,
        o => Some(Orcpt::parse_decoded(o).ok_or(DecodeError::BadValue("ORCPT"))?),
    };
    Ok((notify, orcpt))
}
