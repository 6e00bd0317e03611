//! Fuzz target: the DATA decoder and dot-stuffing.
//!
//! Input: two bytes that choose a split point and a size limit, then the
//! bytes the client sends after DATA. Checks: nothing panics; the result
//! (content, where the data ended, size and flags) is the same whether the
//! input is fed at once, in two pieces or byte by byte; content never grows
//! past the limit; dot-stuffing the input's LF-terminated form and decoding
//! it gives it back and ends exactly at the terminator.

#![no_main]

use libfuzzer_sys::fuzz_target;
use postern_smtp_proto::{DataDecoder, DataProgress, dot_stuff};

#[derive(Debug, PartialEq, Eq)]
struct Outcome {
    content: Vec<u8>,
    end: Option<usize>,
    size: u64,
    too_big: bool,
    bare_cr: bool,
    bare_lf: bool,
    longest_line: usize,
}

fn decode(pieces: &[&[u8]], max_size: u64) -> Outcome {
    let mut decoder = DataDecoder::new(max_size);
    let mut content = Vec::new();
    let mut offset = 0;
    let mut end = None;
    for piece in pieces {
        if let DataProgress::Done { consumed } = decoder.feed(piece, &mut content) {
            assert!(consumed <= piece.len());
            end = Some(offset + consumed);
            break;
        }
        offset += piece.len();
    }
    Outcome {
        content,
        end,
        size: decoder.size(),
        too_big: decoder.too_big(),
        bare_cr: decoder.saw_bare_cr(),
        bare_lf: decoder.saw_bare_lf(),
        longest_line: decoder.longest_line(),
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
    if max_size != 0 {
        assert!(whole.content.len() as u64 <= max_size);
    }
    assert_eq!(whole.too_big, max_size != 0 && whole.size > max_size);

    // Round trip: the input taken as LF-normalized content, LF-terminated.
    let mut content = input.to_vec();
    if content.last().is_some_and(|&b| b != b'\n') {
        content.push(b'\n');
    }
    let mut wire = Vec::new();
    dot_stuff(&content, &mut wire);
    let terminator_end = wire.len();
    wire.extend_from_slice(b"QUIT\r\n");
    let back = decode(&[&wire], 0);
    assert_eq!(back.end, Some(terminator_end));
    assert_eq!(back.content, content);
});
