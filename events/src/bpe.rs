//! A compact byte-pair encoder that only counts. tiktoken-rs keeps three copies of a vocabulary (a
//! bytes -> rank map, a rank -> bytes map and a sorted list, each token its own heap block): loading
//! `o200k_base` raised `serve`'s resident memory by 44 MiB and `cl100k_base` by 22 MiB, more than the
//! rest of the process. Here a vocabulary is its tokens as stored in the binary (read-only pages) plus
//! a table of start offsets and an open-addressing index of ranks: about 3 MiB for `o200k_base`.
//!
//! Counting follows tiktoken's `encode_ordinary`: the text is split by the encoding's pattern, a piece
//! that is a token is one, and any other piece is merged pairwise, always the adjacent pair whose
//! merged bytes have the lowest rank (the leftmost of equal ones), until no adjacent pair is a token.
//! Every single byte is a token in both vocabularies, so the merge always ends with a count.
//!
//! The vocabularies (`vocab/*.bin`) are OpenAI's (tiktoken, MIT licence), written from tiktoken-rs by
//! the test `vocabularies_are_tiktokens` with `TOLLGATE_WRITE_VOCAB=1`; that test also checks them
//! token by token on every run. File format: for each rank from 0, one length byte then the token.

use std::hash::BuildHasher;

/// Marks an empty slot of the index, and a pair that is not a token.
const EMPTY: u32 = u32::MAX;

/// Pieces longer than this are merged with a heap ([`Bpe::merge_long`]): the plain scan is quadratic, and
/// a 16 KiB run of spaces is one piece.
const LONG_PIECE: usize = 64;

/// One encoding: its vocabulary and its pre-tokenizer.
pub(crate) struct Bpe {
    /// The tokens, each after its length byte, in rank order.
    file: &'static [u8],
    /// Where token `r` starts in `file` (its length byte is just before).
    starts: Box<[u32]>,
    /// Open addressing with linear probing: ranks, `EMPTY` where none.
    index: Box<[u32]>,
    hasher: foldhash::fast::FixedState,
    split: fancy_regex::Regex,
}

/// An encoding's files and pattern.
pub(crate) struct Encoding {
    pub vocab: &'static [u8],
    pub pattern: &'static str,
}

/// GPT-4o, GPT-4.1, GPT-5 and the o-series.
pub(crate) const O200K_BASE: Encoding = Encoding {
    vocab: include_bytes!("../vocab/o200k_base.bin"),
    pattern: concat!(
        r"[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]*[\p{Ll}\p{Lm}\p{Lo}\p{M}]+(?i:'s|'t|'re|'ve|'m|'ll|'d)?",
        r"|[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]+[\p{Ll}\p{Lm}\p{Lo}\p{M}]*(?i:'s|'t|'re|'ve|'m|'ll|'d)?",
        r"|\p{N}{1,3}",
        r"| ?[^\s\p{L}\p{N}]+[\r\n/]*",
        r"|\s*[\r\n]+",
        r"|\s+(?!\S)",
        r"|\s+",
    ),
};

/// GPT-4, GPT-3.5 and the approximation for every model that is not OpenAI's.
pub(crate) const CL100K_BASE: Encoding = Encoding {
    vocab: include_bytes!("../vocab/cl100k_base.bin"),
    pattern: concat!(
        r"'(?i:[sdmt]|ll|ve|re)|[^\r\n\p{L}\p{N}]?+\p{L}++|\p{N}{1,3}+| ?[^\s\p{L}\p{N}]++[\r\n]*+",
        r"|\s++$|\s*[\r\n]|\s+(?!\S)|\s",
    ),
};

impl Bpe {
    /// Reads an encoding's vocabulary. `None` if the file is malformed or the pattern does not compile.
    pub(crate) fn load(enc: &Encoding) -> Option<Bpe> {
        let file = enc.vocab;
        let mut starts = Vec::with_capacity(file.len() / 8);
        let mut at = 0usize;
        while at < file.len() {
            let len = usize::from(file[at]);
            let start = at + 1;
            if len == 0 || start + len > file.len() {
                return None;
            }
            starts.push(u32::try_from(start).ok()?);
            at = start + len;
        }
        let n = starts.len();
        starts.push(u32::try_from(at + 1).ok()?);
        let mut bpe = Bpe {
            file,
            starts: starts.into_boxed_slice(),
            index: vec![EMPTY; (n * 2).next_power_of_two().max(2)].into_boxed_slice(),
            hasher: foldhash::fast::FixedState::with_seed(0x746f_6c6c_6761_7465),
            split: fancy_regex::Regex::new(enc.pattern).ok()?,
        };
        let mask = bpe.index.len() - 1;
        for rank in 0..n as u32 {
            let mut slot = bpe.hash(bpe.token(rank)) & mask;
            while bpe.index[slot] != EMPTY {
                slot = (slot + 1) & mask;
            }
            bpe.index[slot] = rank;
        }
        Some(bpe)
    }

    fn hash(&self, bytes: &[u8]) -> usize {
        self.hasher.hash_one(bytes) as usize
    }

    fn token(&self, rank: u32) -> &[u8] {
        let start = self.starts[rank as usize] as usize;
        // The next token's start is one length byte past this token's end.
        let end = self.starts[rank as usize + 1] as usize - 1;
        &self.file[start..end]
    }

    /// The rank of `bytes` if they are a token.
    fn rank(&self, bytes: &[u8]) -> Option<u32> {
        let mask = self.index.len() - 1;
        let mut slot = self.hash(bytes) & mask;
        loop {
            let r = self.index[slot];
            if r == EMPTY {
                return None;
            }
            if self.token(r) == bytes {
                return Some(r);
            }
            slot = (slot + 1) & mask;
        }
    }

    /// Tokens in `text`; `None` when the pattern gives up on it (fancy-regex's backtracking limit).
    pub(crate) fn count(&self, text: &str) -> Option<usize> {
        let mut n = 0;
        // Reused across pieces: part boundaries and the rank of merging each part with the next.
        let (mut bounds, mut ranks) = (Vec::new(), Vec::new());
        for piece in self.split.find_iter(text) {
            let piece = piece.ok()?.as_str().as_bytes();
            n += if self.rank(piece).is_some() {
                1
            } else if piece.len() <= LONG_PIECE {
                self.merge(piece, &mut bounds, &mut ranks)
            } else {
                self.merge_long(piece)
            };
        }
        Some(n)
    }

    /// As [`Bpe::merge`] for a long piece (a run of spaces, a long word): the parts are a linked list and
    /// the candidate pairs a heap ordered by (rank, position), so each merge costs a logarithm instead of
    /// a scan of every pair. Heap entries left stale by a merge are skipped when they come up.
    fn merge_long(&self, piece: &[u8]) -> usize {
        use std::cmp::Reverse;
        let n = piece.len();
        // Parts are named by the byte they start at; `next[n]` is the end.
        let mut next: Vec<usize> = (1..=n + 1).collect();
        let mut prev: Vec<usize> = (0..=n).map(|i| i.wrapping_sub(1)).collect();
        // The rank of merging the part at `i` with the one after it, as last computed.
        let pair = |next: &[usize], i: usize| -> u32 {
            let j = next[i];
            if j >= n {
                return EMPTY;
            }
            self.rank(&piece[i..next[j]]).unwrap_or(EMPTY)
        };
        let mut current: Vec<u32> = (0..n).map(|i| pair(&next, i)).collect();
        let mut heap: std::collections::BinaryHeap<Reverse<(u32, usize)>> =
            current.iter().enumerate().filter(|(_, r)| **r != EMPTY).map(|(i, r)| Reverse((*r, i))).collect();
        let mut parts = n;
        while let Some(Reverse((rank, i))) = heap.pop() {
            // Stale: the part is gone (swallowed: its rank was reset) or its pair changed since.
            if current[i] != rank {
                continue;
            }
            let j = next[i];
            // Part i swallows part j.
            next[i] = next[j];
            if next[j] <= n {
                prev[next[j]] = i;
            }
            current[j] = EMPTY;
            parts -= 1;
            current[i] = pair(&next, i);
            if current[i] != EMPTY {
                heap.push(Reverse((current[i], i)));
            }
            if i > 0 {
                let p = prev[i];
                current[p] = pair(&next, p);
                if current[p] != EMPTY {
                    heap.push(Reverse((current[p], p)));
                }
            }
        }
        parts
    }

    /// Tokens in a piece that is not a token itself: parts start as single bytes, and the adjacent pair
    /// that makes the lowest-ranked token is merged until no adjacent pair makes one.
    fn merge(&self, piece: &[u8], bounds: &mut Vec<usize>, ranks: &mut Vec<u32>) -> usize {
        if piece.len() < 2 {
            return piece.len();
        }
        let pair = |bounds: &[usize], i: usize| self.rank(&piece[bounds[i]..bounds[i + 2]]).unwrap_or(EMPTY);
        bounds.clear();
        bounds.extend(0..=piece.len());
        ranks.clear();
        ranks.extend((0..piece.len() - 1).map(|i| pair(bounds, i)));
        // `min_by_key` keeps the first of equal keys: the leftmost pair, as tiktoken merges.
        while let Some((i, &lowest)) = ranks.iter().enumerate().min_by_key(|(_, r)| **r) {
            if lowest == EMPTY {
                break;
            }
            // Part i swallows part i + 1; the pairs on either side of it change.
            bounds.remove(i + 1);
            ranks.remove(i);
            if i > 0 {
                ranks[i - 1] = pair(bounds, i - 1);
            }
            if i < ranks.len() {
                ranks[i] = pair(bounds, i);
            }
        }
        bounds.len() - 1
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::sync::OnceLock;
    use tiktoken_rs::CoreBPE;

    fn ours(enc: &'static str) -> &'static Bpe {
        static O: OnceLock<Bpe> = OnceLock::new();
        static C: OnceLock<Bpe> = OnceLock::new();
        match enc {
            "o200k" => O.get_or_init(|| Bpe::load(&O200K_BASE).unwrap()),
            _ => C.get_or_init(|| Bpe::load(&CL100K_BASE).unwrap()),
        }
    }

    fn reference(enc: &'static str) -> &'static CoreBPE {
        static O: OnceLock<CoreBPE> = OnceLock::new();
        static C: OnceLock<CoreBPE> = OnceLock::new();
        match enc {
            "o200k" => O.get_or_init(|| tiktoken_rs::o200k_base().unwrap()),
            _ => C.get_or_init(|| tiktoken_rs::cl100k_base().unwrap()),
        }
    }

    /// The vocabulary files hold tiktoken-rs's tokens, rank by rank, and nothing else. With
    /// `TOLLGATE_WRITE_VOCAB=1` the files are written from tiktoken-rs first.
    #[test]
    fn vocabularies_are_tiktokens() {
        for (name, enc, file) in [("o200k", &O200K_BASE, "o200k_base.bin"), ("cl100k", &CL100K_BASE, "cl100k_base.bin")]
        {
            let reference = reference(name);
            // Ranks are contiguous from 0; the first missing one ends the ordinary tokens (special
            // tokens come after a gap and are not counted by `encode_ordinary`).
            let tokens: Vec<Vec<u8>> = (0u32..).map_while(|r| reference.decode_bytes(&[r]).ok()).collect::<Vec<_>>();
            if std::env::var_os("TOLLGATE_WRITE_VOCAB").is_some() {
                let mut out = Vec::new();
                for t in &tokens {
                    out.push(u8::try_from(t.len()).unwrap());
                    out.extend_from_slice(t);
                }
                std::fs::write(std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("vocab").join(file), out).unwrap();
                continue;
            }
            let bpe = ours(name);
            assert_eq!(bpe.starts.len() - 1, tokens.len(), "{name}: token count");
            for (r, t) in tokens.iter().enumerate() {
                assert_eq!(bpe.token(r as u32), &t[..], "{name}: rank {r}");
                assert_eq!(bpe.rank(t), Some(r as u32), "{name}: lookup of rank {r}");
            }
            assert_eq!(bpe.rank(b"\xff\xfe\xfd not a token at all"), None);
            assert!(enc.vocab.len() > tokens.len());
        }
    }

    /// Text built from the pieces the patterns treat differently: letters of each case and script,
    /// marks, digits, apostrophe suffixes, punctuation, slashes, every kind of white space and line end.
    fn text() -> impl Strategy<Value = String> {
        let atoms = prop::sample::select(vec![
            "hello",
            " world",
            "Hello",
            "WORLD",
            "camelCase",
            "'s",
            "'LL",
            "'ve",
            " don't",
            "123",
            "4567890",
            " 42",
            "é",
            "naïve",
            "Ünïcödé",
            "日本語",
            "中文字符",
            "한국어",
            "🙂",
            "👩‍👩‍👧",
            "e\u{301}",
            "ß",
            "Ωμέγα",
            "!",
            "?!",
            "...",
            " ->",
            "/",
            "//",
            "\\",
            "{\"a\":1}",
            "<|endoftext|>",
            " ",
            "  ",
            "   ",
            "\t",
            "\n",
            "\r\n",
            "\n\n",
            " \n",
            "\u{a0}",
            "\u{3000}",
            "x",
            "ab",
            "zzzzzz",
            "aaaaaaaaaaaaaaaaaaaa",
            "__init__",
            "https://example.com/a?b=c",
            "0x1F",
            "-",
            "_",
            "$",
            "€",
            "\u{0}",
            "\u{7f}",
            "supercalifragilisticexpialidocious_and_then_some_more_letters_to_pass_sixty_four_bytes",
            "                                                                          ",
        ]);
        prop::collection::vec(atoms, 0..48).prop_map(|v| v.concat())
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 400, ..ProptestConfig::default() })]

        /// Every count is tiktoken-rs's, for both encodings.
        #[test]
        fn counts_are_tiktokens(t in text()) {
            for name in ["o200k", "cl100k"] {
                prop_assert_eq!(ours(name).count(&t), Some(reference(name).encode_ordinary(&t).len()), "{} {:?}", name, t);
            }
        }

        /// Arbitrary Unicode too (any code point, random lengths).
        #[test]
        fn counts_of_arbitrary_text_are_tiktokens(t in "\\PC{0,200}") {
            for name in ["o200k", "cl100k"] {
                prop_assert_eq!(ours(name).count(&t), Some(reference(name).encode_ordinary(&t).len()), "{} {:?}", name, t);
            }
        }
    }

    proptest! {
        /// The heap merge of long pieces counts as the plain one, on words long enough to need many merges.
        #[test]
        fn both_merges_agree(word in "[a-z ]{2,300}|[A-Za-z0-9_]{2,300}|[ \\t\\n]{2,300}") {
            for name in ["o200k", "cl100k"] {
                let bpe = ours(name);
                let plain = bpe.merge(word.as_bytes(), &mut Vec::new(), &mut Vec::new());
                prop_assert_eq!(bpe.merge_long(word.as_bytes()), plain, "{} {:?}", name, word);
            }
        }
    }

    /// Real prose and code: this repository's README and this file.
    #[test]
    fn counts_of_documents_are_tiktokens() {
        let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
        for doc in [root.join("../README.md"), root.join("src/bpe.rs"), root.join("src/event.rs")] {
            let t = std::fs::read_to_string(&doc).unwrap();
            for name in ["o200k", "cl100k"] {
                assert_eq!(ours(name).count(&t), Some(reference(name).encode_ordinary(&t).len()), "{name} {doc:?}");
            }
        }
    }
}
