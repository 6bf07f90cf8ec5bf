//! The server-sent-events line scanner used by metering: splits an upstream's bytes into lines across
//! arbitrary chunk boundaries, accepting every line end the SSE spec allows (LF, CRLF and a lone CR),
//! and caps the length of one line so a hostile upstream cannot make the gateway buffer without bound.
//! Bytes of a line over the cap are handed on as they arrive (`Piece::Overlong`) and never kept.

use bytes::BytesMut;

/// What the scanner hands to its consumer, in stream order. Concatenating every `raw` gives back the
/// input exactly.
#[derive(Debug, PartialEq, Eq)]
pub enum Piece<'a> {
    /// A whole line: `text` without its line end, `raw` with it (no line end only for the last line of a
    /// stream that did not end in one).
    Line { raw: &'a [u8], text: &'a [u8] },
    /// The LF of a CRLF whose CR ended the previous chunk (and so the previous `Line`): it belongs to
    /// that line and shares its fate.
    LfAfterCr { raw: &'a [u8] },
    /// Part of a line longer than the cap, passed on without being kept; `first` on its first part.
    Overlong { raw: &'a [u8], first: bool },
}

/// Splits bytes into SSE lines; see [`Piece`].
#[derive(Debug)]
pub struct LineScanner {
    /// The incomplete line carried between chunks (never longer than `max_line`).
    buf: BytesMut,
    /// The previous chunk ended with a CR: an LF starting the next one is the rest of that line end.
    after_cr: bool,
    /// Inside a line over the cap: its bytes are passed on until its line end.
    overlong: bool,
    max_line: usize,
}

impl LineScanner {
    pub fn new(max_line: usize) -> LineScanner {
        LineScanner { buf: BytesMut::new(), after_cr: false, overlong: false, max_line }
    }

    /// Bytes held for an incomplete line.
    pub fn buffered(&self) -> usize {
        self.buf.len()
    }

    /// Scans one chunk.
    pub fn feed(&mut self, data: &[u8], f: &mut impl FnMut(Piece<'_>)) {
        let mut rest = data;
        if self.after_cr && !rest.is_empty() {
            self.after_cr = false;
            if rest[0] == b'\n' {
                f(Piece::LfAfterCr { raw: &rest[..1] });
                rest = &rest[1..];
            }
        }
        while !rest.is_empty() {
            let Some(i) = memchr::memchr2(b'\n', b'\r', rest) else {
                self.partial(rest, f);
                return;
            };
            let end = if rest[i] == b'\r' {
                match rest.get(i + 1) {
                    Some(b'\n') => i + 2,
                    Some(_) => i + 1,
                    None => {
                        self.after_cr = true;
                        i + 1
                    }
                }
            } else {
                i + 1
            };
            self.complete(&rest[..end], i, f);
            rest = &rest[end..];
        }
    }

    /// The stream ended: a last line without a line end is still a line.
    pub fn finish(&mut self, f: &mut impl FnMut(Piece<'_>)) {
        self.after_cr = false;
        self.overlong = false;
        if !self.buf.is_empty() {
            let line = std::mem::take(&mut self.buf);
            f(Piece::Line { raw: &line, text: &line });
        }
    }

    /// Bytes of a line whose end has not arrived yet.
    fn partial(&mut self, bytes: &[u8], f: &mut impl FnMut(Piece<'_>)) {
        if self.overlong {
            f(Piece::Overlong { raw: bytes, first: false });
        } else if self.buf.len() + bytes.len() > self.max_line {
            self.overlong = true;
            let held = std::mem::take(&mut self.buf);
            f(Piece::Overlong { raw: &held, first: true });
            f(Piece::Overlong { raw: bytes, first: false });
        } else {
            self.buf.extend_from_slice(bytes);
        }
    }

    /// The end of a line: `line` is its last bytes with the line end, which starts at `text_end`.
    fn complete(&mut self, line: &[u8], text_end: usize, f: &mut impl FnMut(Piece<'_>)) {
        if self.overlong {
            self.overlong = false;
            f(Piece::Overlong { raw: line, first: false });
        } else if self.buf.len() + text_end > self.max_line {
            let held = std::mem::take(&mut self.buf);
            f(Piece::Overlong { raw: &held, first: true });
            f(Piece::Overlong { raw: line, first: held.is_empty() });
        } else if self.buf.is_empty() {
            f(Piece::Line { raw: line, text: &line[..text_end] });
        } else {
            let text_len = self.buf.len() + text_end;
            self.buf.extend_from_slice(line);
            f(Piece::Line { raw: &self.buf, text: &self.buf[..text_len] });
            self.buf.clear();
        }
    }
}

/// One SSE line by field.
#[derive(Debug, PartialEq, Eq)]
pub enum Field<'a> {
    /// The empty line that ends an event.
    Blank,
    /// A `data` field's value (one leading space removed, as the spec says).
    Data(&'a [u8]),
    /// A comment (`:` first) or another field (`event`, `id`, `retry`, unknown).
    Other,
}

pub fn field(text: &[u8]) -> Field<'_> {
    if text.is_empty() {
        return Field::Blank;
    }
    match text.strip_prefix(b"data") {
        Some([]) => Field::Data(b""),
        Some([b':', value @ ..]) => Field::Data(value.strip_prefix(b" ").unwrap_or(value)),
        _ => Field::Other,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// (kind, raw) of every piece, feeding `chunks` one by one.
    fn scan(chunks: &[&[u8]], max: usize) -> Vec<(char, Vec<u8>)> {
        let mut s = LineScanner::new(max);
        let mut out = Vec::new();
        let mut f = |p: Piece<'_>| {
            out.push(match p {
                Piece::Line { raw, .. } => ('L', raw.to_vec()),
                Piece::LfAfterCr { raw } => ('n', raw.to_vec()),
                Piece::Overlong { raw, first } => (if first { 'O' } else { 'o' }, raw.to_vec()),
            })
        };
        for c in chunks {
            s.feed(c, &mut f);
        }
        s.finish(&mut f);
        out
    }

    #[test]
    fn every_line_end_and_a_last_line_without_one() {
        let got = scan(&[b"a\nb\r\nc\rd"], 100);
        let lines: Vec<_> = got.iter().map(|(_, r)| r.as_slice()).collect();
        assert_eq!(lines, [&b"a\n"[..], b"b\r\n", b"c\r", b"d"]);
    }

    #[test]
    fn crlf_split_across_chunks_is_one_line_end() {
        let got = scan(&[b"data: x\r", b"\n\r", b"\n"], 100);
        assert_eq!(
            got,
            [('L', b"data: x\r".to_vec()), ('n', b"\n".to_vec()), ('L', b"\r".to_vec()), ('n', b"\n".to_vec())]
        );
    }

    #[test]
    fn a_line_over_the_cap_is_passed_on_not_kept() {
        let got = scan(&[b"ok\n0123", b"456789", b"ab\nnext\n"], 8);
        assert_eq!(got[0], ('L', b"ok\n".to_vec()));
        assert_eq!(got[1], ('O', b"0123".to_vec()));
        assert!(got[2..got.len() - 1].iter().all(|(k, _)| *k == 'o'));
        assert_eq!(got.last(), Some(&('L', b"next\n".to_vec())));
        let joined: Vec<u8> = got.iter().flat_map(|(_, r)| r.clone()).collect();
        assert_eq!(joined, b"ok\n0123456789ab\nnext\n");
    }

    #[test]
    fn fields() {
        assert_eq!(field(b""), Field::Blank);
        assert_eq!(field(b"data: {}"), Field::Data(b"{}"));
        assert_eq!(field(b"data:{}"), Field::Data(b"{}"));
        assert_eq!(field(b"data:  x"), Field::Data(b" x"));
        assert_eq!(field(b"data"), Field::Data(b""));
        assert_eq!(field(b": keep-alive"), Field::Other);
        assert_eq!(field(b"event: message_start"), Field::Other);
        assert_eq!(field(b"database: x"), Field::Other);
    }
}
