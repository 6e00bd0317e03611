//! Reading the original message as a stream: its header block (for the
//! returned headers, the UTF-8 check and the Message-Id) and then, for a
//! full return, the rest copied through without being held in memory.
//!
//! Memory is bounded: lines are read in pieces of at most [`PIECE`] bytes
//! and at most [`PREFETCH`] bytes of the header block are held; a longer
//! header block is streamed like the body.

use std::io::{self, BufRead, Write};

/// The longest piece of a line read at once. A header field name must be
/// complete within it to be recognised as one.
pub const PIECE: usize = 4096;
/// How much of the header block is held to decide, before anything of the
/// original is written, whether it is UTF-8 (RFC 6532) and what its
/// Message-Id is.
pub const PREFETCH: usize = 256 * 1024;

/// What the start of a line is, in a header block.
#[derive(Debug, PartialEq, Eq)]
enum Line {
    /// `Name:` (a field), or white space (its continuation).
    Header,
    /// An empty line, or one that is not a header line: the header block
    /// ended before it (Postfix's `IS_HEADER` test in bounce_original()).
    End,
}

fn classify(piece: &[u8]) -> Line {
    match piece.first() {
        None | Some(b'\n') => return Line::End,
        Some(b' ' | b'\t') => return Line::Header,
        Some(b'\r') if piece.get(1).is_none_or(|b| *b == b'\n') => return Line::End,
        _ => {}
    }
    let name = piece
        .iter()
        .take_while(|b| (33..=126).contains(*b) && **b != b':')
        .count();
    if name == 0 {
        return Line::End;
    }
    let after = piece[name..]
        .iter()
        .position(|b| *b != b' ' && *b != b'\t')
        .map(|i| piece[name + i]);
    if after == Some(b':') {
        Line::Header
    } else {
        Line::End
    }
}

/// Reads the next piece into `buf`: up to and including a line feed, or
/// [`PIECE`] bytes. Empty at the end of the input.
fn read_piece<R: BufRead>(r: &mut R, buf: &mut Vec<u8>) -> io::Result<()> {
    buf.clear();
    loop {
        let avail = match r.fill_buf() {
            Ok(b) => b,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        if avail.is_empty() {
            return Ok(());
        }
        let room = PIECE - buf.len();
        let take = &avail[..avail.len().min(room)];
        if let Some(i) = take.iter().position(|b| *b == b'\n') {
            buf.extend_from_slice(&take[..=i]);
            r.consume(i + 1);
            return Ok(());
        }
        let n = take.len();
        buf.extend_from_slice(take);
        r.consume(n);
        if buf.len() >= PIECE {
            return Ok(());
        }
    }
}

/// The original, with the start of its header block read.
pub struct Original<R> {
    reader: R,
    /// The header lines read so far (at most about [`PREFETCH`] bytes).
    pub head: Vec<u8>,
    /// The header block was read to its end (`end` holds the line that
    /// ended it, if any).
    complete: bool,
    /// The empty or non-header line that ended the header block.
    end: Option<Vec<u8>>,
    /// The last piece read was not the end of its line.
    mid_line: bool,
    /// The input ended before anything was read.
    pub empty: bool,
}

impl<R: BufRead> Original<R> {
    /// Reads the header block, or its first [`PREFETCH`] bytes.
    pub fn open(mut reader: R) -> io::Result<Original<R>> {
        let mut head = Vec::new();
        let mut piece = Vec::new();
        let mut mid_line = false;
        let mut complete = false;
        let mut end = None;
        while head.len() < PREFETCH {
            read_piece(&mut reader, &mut piece)?;
            if piece.is_empty() {
                complete = true;
                break;
            }
            if !mid_line && classify(&piece) == Line::End {
                end = Some(std::mem::take(&mut piece));
                complete = true;
                break;
            }
            head.extend_from_slice(&piece);
            mid_line = !piece.ends_with(b"\n");
        }
        let empty = head.is_empty() && end.is_none();
        Ok(Original {
            reader,
            head,
            complete,
            end,
            mid_line,
            empty,
        })
    }

    /// Whether the header block read holds UTF-8 that is not ASCII (an
    /// RFC 6532 message; a piece cut inside a character counts as valid).
    pub fn head_is_utf8(&self) -> bool {
        if self.head.is_ascii() {
            return false;
        }
        match std::str::from_utf8(&self.head) {
            Ok(_) => true,
            Err(e) => e.error_len().is_none(),
        }
    }

    /// The original's Message-Id (`<…>`), if its header block read has a
    /// well-formed one.
    pub fn message_id(&self) -> Option<String> {
        let text = String::from_utf8_lossy(&self.head);
        let mut value: Option<String> = None;
        for line in text.split_inclusive('\n') {
            let line = line.trim_end_matches(['\r', '\n']);
            if line.starts_with([' ', '\t']) {
                if let Some(v) = value.as_mut() {
                    v.push_str(line);
                }
                continue;
            }
            if value.is_some() {
                break;
            }
            if let Some((name, v)) = line.split_once(':')
                && name.trim_end().eq_ignore_ascii_case("message-id")
            {
                value = Some(v.to_string());
            }
        }
        let v = value?;
        let v = v.trim_matches([' ', '\t']);
        let ok = v.len() > 2
            && v.starts_with('<')
            && v.ends_with('>')
            && v.len() <= 900
            && !v[1..v.len() - 1].contains(['<', '>'])
            && v.bytes().all(|b| (33..=126).contains(&b));
        ok.then(|| v.to_string())
    }

    /// Writes the header block (the held part and the rest of it, streamed),
    /// then the body when `full`. The output ends with a line feed.
    pub fn copy_to<W: Write>(mut self, out: &mut W, full: bool) -> io::Result<()> {
        let mut last = self.head.last().copied();
        out.write_all(&self.head)?;
        let mut piece = Vec::new();
        while !self.complete {
            read_piece(&mut self.reader, &mut piece)?;
            if piece.is_empty() {
                break;
            }
            if !self.mid_line && classify(&piece) == Line::End {
                self.end = Some(std::mem::take(&mut piece));
                break;
            }
            out.write_all(&piece)?;
            last = piece.last().copied();
            self.mid_line = !piece.ends_with(b"\n");
        }
        if full {
            if let Some(end) = self.end.take() {
                out.write_all(&end)?;
                last = end.last().copied().or(last);
            }
            let mut buf = vec![0u8; 64 * 1024];
            loop {
                let n = match self.reader.read(&mut buf) {
                    Ok(0) => break,
                    Ok(n) => n,
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                    Err(e) => return Err(e),
                };
                out.write_all(&buf[..n])?;
                last = Some(buf[n - 1]);
            }
        }
        if last.is_some_and(|b| b != b'\n') {
            out.write_all(b"\n")?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn copy(input: &[u8], full: bool) -> Vec<u8> {
        let o = Original::open(input).unwrap();
        let mut out = Vec::new();
        o.copy_to(&mut out, full).unwrap();
        out
    }

    #[test]
    fn lines_are_classified_as_postfix_does() {
        assert_eq!(classify(b"Subject: x\n"), Line::Header);
        assert_eq!(classify(b"X-Y :x\n"), Line::Header);
        assert_eq!(classify(b" folded\n"), Line::Header);
        assert_eq!(classify(b"\n"), Line::End);
        assert_eq!(classify(b"\r\n"), Line::End);
        assert_eq!(classify(b"not a header\n"), Line::End);
        assert_eq!(classify(b":x\n"), Line::End);
        assert_eq!(classify(b"From someone\n"), Line::End);
    }

    #[test]
    fn headers_only_stops_at_the_empty_line() {
        assert_eq!(
            copy(b"A: b\n c\nD: e\n\nbody\n", false),
            b"A: b\n c\nD: e\n"
        );
        assert_eq!(copy(b"A: b\r\n\r\nbody\r\n", false), b"A: b\r\n");
        assert_eq!(copy(b"A: b\nbody without blank line\n", false), b"A: b\n");
        assert_eq!(copy(b"A: b", false), b"A: b\n");
        assert_eq!(copy(b"\nbody\n", false), b"");
    }

    #[test]
    fn full_copies_everything_and_ends_the_line() {
        assert_eq!(copy(b"A: b\n\nbody\n", true), b"A: b\n\nbody\n");
        assert_eq!(copy(b"A: b\n\nbody", true), b"A: b\n\nbody\n");
        assert_eq!(copy(b"\nbody", true), b"\nbody\n");
        assert_eq!(copy(b"", true), b"");
        assert!(Original::open(&b""[..]).unwrap().empty);
    }

    #[test]
    fn a_long_header_block_is_streamed() {
        let mut msg = Vec::new();
        while msg.len() < PREFETCH * 2 {
            msg.extend_from_slice(b"X-Filler: ");
            msg.extend_from_slice(&[b'a'; 5000]);
            msg.extend_from_slice(b"\n");
        }
        let headers = msg.clone();
        msg.extend_from_slice(b"\nthe body\n");
        let o = Original::open(&msg[..]).unwrap();
        assert!(o.head.len() < PREFETCH + PIECE);
        let mut out = Vec::new();
        o.copy_to(&mut out, false).unwrap();
        assert_eq!(out, headers);
        assert_eq!(copy(&msg, true), msg);
    }

    #[test]
    fn utf8_and_message_id_come_from_the_header_block() {
        let o = Original::open(&b"Subject: caf\xc3\xa9\nMessage-ID:\n <a@b>\n\nx"[..]).unwrap();
        assert!(o.head_is_utf8());
        assert_eq!(o.message_id().as_deref(), Some("<a@b>"));
        let o = Original::open(&b"Subject: caf\xe9\nMessage-Id: junk\n\n"[..]).unwrap();
        assert!(!o.head_is_utf8());
        assert_eq!(o.message_id(), None);
        let o = Original::open(&b"Subject: x\n\nMessage-Id: <in@body>\n"[..]).unwrap();
        assert_eq!(o.message_id(), None);
    }
}
