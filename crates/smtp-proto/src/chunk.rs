//! BDAT chunks (RFC 3030, CHUNKING): the message as a sequence of counted
//! chunks instead of a dot-terminated text, turned into the same
//! LF-normalized content the DATA decoder gives.
//!
//! ```text
//! bdat-cmd   = "BDAT" SP chunk-size [ SP end-marker ] CRLF
//! chunk-size = 1*DIGIT            ; exactly this many octets follow
//! end-marker = "LAST"
//! ```
//!
//! No dot-stuffing and no terminator: the octets are the message. Each CRLF
//! becomes "\n", also when the CR ends one chunk and the LF starts the next
//! (the decoder keeps that one CR across calls), so how the client cuts the
//! message into chunks never changes the content (a proptest checks this).
//! A bare LF or a bare CR is content, recorded in
//! [`ChunkDecoder::saw_bare_lf`] / [`ChunkDecoder::saw_bare_cr`] as the DATA
//! decoder does, so smtpd applies the same smtpd_forbid_bare_newline policy.
//!
//! The size counted against message_size_limit is every octet received in
//! the chunks (RFC 1870's count, the same as DATA's without its stuffing).

/// Decodes the chunks of one message. Feed each chunk's octets (in any
/// pieces), then call [`ChunkDecoder::finish`] after the LAST chunk.
#[derive(Clone, Debug)]
pub struct ChunkDecoder {
    max_size: u64,
    size: u64,
    too_big: bool,
    bare_lf: bool,
    bare_cr: bool,
    /// The previous octet was a CR not yet known to start a CRLF.
    pending_cr: bool,
}

impl ChunkDecoder {
    /// A decoder for one message; `max_size` is message_size_limit in
    /// octets received (0 = unlimited). Past it, content is no longer
    /// appended to `out` and [`ChunkDecoder::too_big`] is true.
    pub fn new(max_size: u64) -> Self {
        ChunkDecoder {
            max_size,
            size: 0,
            too_big: false,
            bare_lf: false,
            bare_cr: false,
            pending_cr: false,
        }
    }

    /// Decodes octets of the message, appending content to `out`.
    pub fn feed(&mut self, input: &[u8], out: &mut Vec<u8>) {
        for &b in input {
            self.size = self.size.saturating_add(1);
            if self.max_size != 0 && self.size > self.max_size {
                self.too_big = true;
            }
            match (self.pending_cr, b) {
                (true, b'\n') => {
                    self.pending_cr = false;
                    self.emit(b'\n', out);
                }
                (true, b'\r') => {
                    // The first CR was bare; this one may start a CRLF.
                    self.bare_cr = true;
                    self.emit(b'\r', out);
                }
                (true, _) => {
                    self.pending_cr = false;
                    self.bare_cr = true;
                    self.emit(b'\r', out);
                    self.emit(b, out);
                }
                (false, b'\r') => self.pending_cr = true,
                (false, b'\n') => {
                    self.bare_lf = true;
                    self.emit(b'\n', out);
                }
                (false, _) => self.emit(b, out),
            }
        }
    }

    /// Ends the message (after the LAST chunk): a CR that ended it was bare.
    pub fn finish(&mut self, out: &mut Vec<u8>) {
        if self.pending_cr {
            self.pending_cr = false;
            self.bare_cr = true;
            self.emit(b'\r', out);
        }
    }

    fn emit(&self, b: u8, out: &mut Vec<u8>) {
        if !self.too_big {
            out.push(b);
        }
    }

    /// Octets received so far, in all chunks (even past the limit).
    pub fn size(&self) -> u64 {
        self.size
    }

    /// True once the message went past `max_size`.
    pub fn too_big(&self) -> bool {
        self.too_big
    }

    /// True if a LF not preceded by CR was seen.
    pub fn saw_bare_lf(&self) -> bool {
        self.bare_lf
    }

    /// True if a CR not followed by LF was seen.
    pub fn saw_bare_cr(&self) -> bool {
        self.bare_cr
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn decode(chunks: &[&[u8]], max: u64) -> (Vec<u8>, ChunkDecoder) {
        let mut d = ChunkDecoder::new(max);
        let mut out = Vec::new();
        for c in chunks {
            d.feed(c, &mut out);
        }
        d.finish(&mut out);
        (out, d)
    }

    #[test]
    fn crlf_becomes_lf_even_across_chunks() {
        let (out, d) = decode(&[b"Subject: x\r", b"\n\r\nbody\r\n"], 0);
        assert_eq!(out, b"Subject: x\n\nbody\n");
        assert!(!d.saw_bare_cr() && !d.saw_bare_lf());
        assert_eq!(d.size(), 20);
    }

    #[test]
    fn dots_and_terminators_are_plain_content() {
        // No stuffing in BDAT: a "." line is content, not an end.
        let (out, _) = decode(&[b".\r\n..x\r\n.\r\n"], 0);
        assert_eq!(out, b".\n..x\n.\n");
    }

    #[test]
    fn bare_line_ends_are_recorded() {
        let (out, d) = decode(&[b"a\nb\rc\r\r\n", b"d\r"], 0);
        assert_eq!(out, b"a\nb\rc\r\nd\r");
        assert!(d.saw_bare_lf());
        assert!(d.saw_bare_cr());
    }

    #[test]
    fn the_limit_counts_octets_received() {
        let (out, d) = decode(&[b"a\r\n", b"b\r\n"], 5);
        assert!(d.too_big());
        assert_eq!(d.size(), 6);
        assert_eq!(out, b"a\nb", "nothing past the limit is kept");
        let (_, d) = decode(&[b"a\r\n", b"b\r"], 5);
        assert!(!d.too_big());
    }

    fn content_byte() -> impl Strategy<Value = u8> {
        prop_oneof![
            Just(b'\r'),
            Just(b'\n'),
            Just(b'.'),
            Just(b'a'),
            any::<u8>()
        ]
    }

    proptest! {
        /// However the message is cut into chunks and pieces, the result is
        /// the same; without bare line ends, CRLF text comes back as LF text.
        #[test]
        fn chunking_never_changes_the_result(
            input in proptest::collection::vec(content_byte(), 0..200),
            cuts in proptest::collection::vec(any::<usize>(), 0..6),
            max in 0u64..150,
        ) {
            let (whole, dw) = decode(&[&input], max);
            let mut cuts: Vec<usize> = cuts.iter().map(|c| c % (input.len() + 1)).collect();
            cuts.sort_unstable();
            let mut pieces = Vec::new();
            let mut pos = 0;
            for c in cuts {
                pieces.push(&input[pos..c]);
                pos = c;
            }
            pieces.push(&input[pos..]);
            let (split, ds) = decode(&pieces, max);
            prop_assert_eq!(&whole, &split);
            prop_assert_eq!(dw.size(), ds.size());
            prop_assert_eq!(dw.too_big(), ds.too_big());
            prop_assert_eq!(dw.saw_bare_cr(), ds.saw_bare_cr());
            prop_assert_eq!(dw.saw_bare_lf(), ds.saw_bare_lf());
            prop_assert_eq!(dw.size(), input.len() as u64);
            prop_assert_eq!(dw.too_big(), max != 0 && dw.size() > max);
            if !dw.saw_bare_cr() && !dw.saw_bare_lf() && !dw.too_big() {
                let expect: Vec<u8> = {
                    let mut v = Vec::new();
                    let mut i = 0;
                    while i < input.len() {
                        if input[i] == b'\r' && input.get(i + 1) == Some(&b'\n') {
                            v.push(b'\n');
                            i += 2;
                        } else {
                            v.push(input[i]);
                            i += 1;
                        }
                    }
                    v
                };
                prop_assert_eq!(whole, expect);
            }
        }
    }
}
