//! Fuzz target: the BDAT chunk decoder.
//!
//! Input: two bytes that choose a split point and a size limit, then the
//! octets of a message sent in BDAT chunks. Checks: nothing panics; the
//! result (content, size, flags) is the same whether the message comes in
//! one chunk, two or one octet at a time; the size is every octet received;
//! content never grows past the limit; CRLF text without bare line ends
//! comes back as the same text with LF.

#![no_main]

use libfuzzer_sys::fuzz_target;
use postern_smtp_proto::ChunkDecoder;

#[derive(Debug, PartialEq, Eq)]
struct Outcome {
    content: Vec<u8>,
    size: u64,
    too_big: bool,
    bare_cr: bool,
    bare_lf: bool,
}

fn decode(pieces: &[&[u8]], max_size: u64) -> Outcome {
    let mut decoder = ChunkDecoder::new(max_size);
    let mut content = Vec::new();
    for piece in pieces {
        decoder.feed(piece, &mut content);
    }
    decoder.finish(&mut content);
    Outcome {
        content,
        size: decoder.size(),
        too_big: decoder.too_big(),
        bare_cr: decoder.saw_bare_cr(),
        bare_lf: decoder.saw_bare_lf(),
    }
}

fuzz_target!(|data: &[u8]| {
    if data.len() < 2 {
        return;
    }
    let (head, input) = data.split_at(2);
    let cut = usize::from(head[0]) % (input.len() + 1);
    let max_size = u64::from(head[1]);

    let whole = decode(&[input], max_size);
    let halves = decode(&[&input[..cut], &input[cut..]], max_size);
    let bytes: Vec<&[u8]> = input.chunks(1).collect();
    let one_by_one = decode(&bytes, max_size);
    assert_eq!(whole, halves);
    assert_eq!(whole, one_by_one);
    assert_eq!(whole.size, input.len() as u64);
    assert_eq!(whole.too_big, max_size != 0 && whole.size > max_size);
    if max_size != 0 {
        assert!(whole.content.len() as u64 <= max_size);
    }
    let unlimited = decode(&[input], 0);
    if !unlimited.bare_cr && !unlimited.bare_lf {
        let text = input.to_vec();
        let mut expect = Vec::new();
        let mut i = 0;
        while i < text.len() {
            if text[i] == b'\r' && text.get(i + 1) == Some(&b'\n') {
                expect.push(b'\n');
                i += 2;
            } else {
                expect.push(text[i]);
                i += 1;
            }
        }
        assert_eq!(unlimited.content, expect);
    }
});
