//! Tokenization for SFT: a Hugging Face `tokenizers` tokenizer that keeps
//! message content from forging control tokens.
//!
//! The tokenizer is loaded from tokenizer.json *text*, so a tokenizer that
//! Python built from a GGUF file (`Tokenizer.to_str()`) works the same as one
//! read from a model folder.
//!
//! Special-token text in content. HF tokenizers split every added token out of
//! the input, so a literal `<|im_end|>` inside a message would become the real
//! end-of-turn token and content could end a turn or start a new one. The chat
//! encoder replaces such text in content by sentinel characters before
//! rendering (see `chat`), then this module encodes the rendered text with the
//! sentinels cut out: the text between sentinels goes through the ordinary
//! pipeline (template-written special tokens stay control tokens), and each
//! sentinel's original text is encoded with special-token matching switched off
//! (`encode_special_tokens`), i.e. as plain text. A rendering without sentinels
//! is one ordinary `encode(text, add_special_tokens=false)` call, which is
//! exactly what transformers' `apply_chat_template(tokenize=True)` does.
//!
//! "Special" means an added token flagged `special` in tokenizer.json; added
//! tokens that are not special (Qwen's `<think>`, `<tool_call>`) are ordinary
//! vocabulary and are tokenized as transformers does.
//!
//! Cutting the text into pieces reproduces the ordinary pipeline because it
//! splits added tokens out first and then normalises and pre-tokenizes each
//! remaining piece on its own, exactly as if it were encoded alone, with one
//! exception: a Metaspace pre-tokenizer with `prepend_scheme: first` (Mistral)
//! adds its `▁` only to a piece at offset 0 of the whole text. Pieces that do
//! not start the text are therefore encoded by a copy of the tokenizer whose
//! scheme is `never`.
//!
//! Offsets. Offsets are byte offsets into the encoded text. The post-processor
//! is removed because with `add_special_tokens=false` its only effect is
//! ByteLevel's `trim_offsets`, which would shrink whitespace tokens to empty
//! ranges and hide them from the loss-mask span test. Truncation and padding
//! stored in tokenizer.json are removed too: the packer decides lengths.
use std::fmt;
use std::str::FromStr;

use aho_corasick::{AhoCorasick, MatchKind};
use serde_json::Value as Json;
use tokenizers::{PostProcessorWrapper, Tokenizer};

/// Why a tokenizer could not be loaded or used; one line each.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TokenizeError {
    Load(String),
    Encode(String),
}

impl fmt::Display for TokenizeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Load(m) => write!(f, "tokenizer does not load: {m}"),
            Self::Encode(m) => write!(f, "tokenizer failed to encode: {m}"),
        }
    }
}

impl std::error::Error for TokenizeError {}

fn one_line(e: impl fmt::Display) -> String {
    e.to_string().replace(['\n', '\r'], " ")
}

/// Token ids with the byte range of the text each one came from.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Encoded {
    pub ids: Vec<u32>,
    pub offsets: Vec<(usize, usize)>,
}

/// A piece of text to encode as plain text at a byte position of the text
/// handed to [`TextTokenizer::encode_marked`], in place of the `len` bytes
/// (one sentinel character) found there.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PlainPiece<'a> {
    pub at: usize,
    pub len: usize,
    pub text: &'a str,
}

/// A loaded tokenizer plus what the chat encoder needs to know about its
/// special tokens. Shared read-only by all worker threads.
pub struct TextTokenizer {
    /// Ordinary pipeline: special tokens in the text become control tokens.
    normal: Tokenizer,
    /// Same tokenizer with special-token matching off: their text is plain.
    plain: Tokenizer,
    /// `normal` and `plain` for pieces that do not start the text, when the
    /// pre-tokenizer treats offset 0 specially (see above).
    mid: Option<(Tokenizer, Tokenizer)>,
    specials: Vec<String>,
    special_matcher: AhoCorasick,
}

impl TextTokenizer {
    /// Load from the text of a tokenizer.json.
    pub fn from_json(json: &str) -> Result<Self, TokenizeError> {
        let (normal, plain) = load_pair(json)?;
        let mut tree: Json = serde_json::from_str(json).map_err(|e| TokenizeError::Load(one_line(e)))?;
        let mid = if tree.get_mut("pre_tokenizer").is_some_and(never_prepend) {
            Some(load_pair(&tree.to_string())?)
        } else {
            None
        };

        let mut specials: Vec<String> = normal
            .get_added_tokens_decoder()
            .into_values()
            .filter(|t| t.special && !t.content.is_empty())
            .map(|t| t.content)
            .collect();
        specials.sort();
        specials.dedup();
        let special_matcher = AhoCorasick::builder()
            .match_kind(MatchKind::LeftmostLongest)
            .build(&specials)
            .map_err(|e| TokenizeError::Load(one_line(e)))?;
        Ok(Self { normal, plain, mid, specials, special_matcher })
    }

    /// The text of every special added token, sorted.
    pub fn special_tokens(&self) -> &[String] {
        &self.specials
    }

    /// Byte ranges of special-token text in `text`, leftmost-longest.
    pub fn find_special_text(&self, text: &str) -> Vec<(usize, usize)> {
        self.special_matcher.find_iter(text).map(|m| (m.start(), m.end())).collect()
    }

    /// Byte range of the first special-token text in `text`.
    pub fn first_special_text(&self, text: &str) -> Option<(usize, usize)> {
        self.special_matcher.find(text).map(|m| (m.start(), m.end()))
    }

    pub fn token_to_id(&self, token: &str) -> Option<u32> {
        self.normal.token_to_id(token)
    }

    pub fn id_to_token(&self, id: u32) -> Option<String> {
        self.normal.id_to_token(id)
    }

    pub fn vocab_size(&self) -> usize {
        self.normal.get_vocab_size(true)
    }

    /// `encode(text, add_special_tokens=false)`: ids and byte offsets.
    pub fn encode(&self, text: &str) -> Result<Encoded, TokenizeError> {
        encode_with(&self.normal, text, 0)
    }

    /// Ids only, as `encode_fast` (no offsets); for baselines and tests.
    pub fn encode_ids(&self, text: &str) -> Result<Vec<u32>, TokenizeError> {
        self.normal
            .encode_fast(text, false)
            .map(|e| e.get_ids().to_vec())
            .map_err(|e| TokenizeError::Encode(one_line(e)))
    }

    /// Encode `text`, in which each [`PlainPiece`] marks a sentinel to be
    /// replaced by its text encoded as plain text. Offsets stay in `text`'s
    /// coordinates; a plain piece's tokens all get the sentinel's range.
    /// `pieces` must be sorted by position and not overlap.
    pub fn encode_marked(&self, text: &str, pieces: &[PlainPiece<'_>]) -> Result<Encoded, TokenizeError> {
        if pieces.is_empty() {
            return self.encode(text);
        }
        let mut out = Encoded::default();
        let mut cursor = 0;
        for p in pieces {
            if p.at < cursor || p.at + p.len > text.len() {
                return Err(TokenizeError::Encode(format!("plain piece at byte {} out of order", p.at)));
            }
            if p.at > cursor {
                append(&mut out, encode_with(self.pick(cursor, false), &text[cursor..p.at], cursor)?);
            }
            let plain = encode_with(self.pick(p.at, true), p.text, 0)?;
            out.offsets.extend(std::iter::repeat_n((p.at, p.at + p.len), plain.ids.len()));
            out.ids.extend(plain.ids);
            cursor = p.at + p.len;
        }
        if cursor < text.len() {
            append(&mut out, encode_with(self.pick(cursor, false), &text[cursor..], cursor)?);
        }
        Ok(out)
    }

    /// The tokenizer for a piece starting at byte `at` of the whole text.
    fn pick(&self, at: usize, plain: bool) -> &Tokenizer {
        match (&self.mid, at > 0, plain) {
            (Some((_, p)), true, true) => p,
            (Some((n, _)), true, false) => n,
            (_, _, true) => &self.plain,
            (_, _, false) => &self.normal,
        }
    }
}

/// The ordinary tokenizer and its plain-text twin, without post-processor,
/// truncation or padding.
fn load_pair(json: &str) -> Result<(Tokenizer, Tokenizer), TokenizeError> {
    let mut normal = Tokenizer::from_str(json).map_err(|e| TokenizeError::Load(one_line(e)))?;
    normal.with_post_processor(None::<PostProcessorWrapper>);
    normal.with_truncation(None).map_err(|e| TokenizeError::Load(one_line(e)))?;
    normal.with_padding(None);
    normal.set_encode_special_tokens(false);
    let mut plain = normal.clone();
    plain.set_encode_special_tokens(true);
    Ok((normal, plain))
}

/// Turn every `prepend_scheme: first` in a pre-tokenizer tree into `never`;
/// true when there was one.
fn never_prepend(node: &mut Json) -> bool {
    match node {
        Json::Object(map) => {
            let mut changed = false;
            if map.get("prepend_scheme").and_then(Json::as_str) == Some("first") {
                map.insert("prepend_scheme".into(), Json::from("never"));
                changed = true;
            }
            for v in map.values_mut() {
                changed |= never_prepend(v);
            }
            changed
        }
        Json::Array(items) => items.iter_mut().fold(false, |acc, v| never_prepend(v) | acc),
        _ => false,
    }
}

fn encode_with(tok: &Tokenizer, text: &str, base: usize) -> Result<Encoded, TokenizeError> {
    let enc = tok.encode(text, false).map_err(|e| TokenizeError::Encode(one_line(e)))?;
    Ok(Encoded {
        ids: enc.get_ids().to_vec(),
        offsets: enc.get_offsets().iter().map(|&(s, e)| (s + base, e + base)).collect(),
    })
}

fn append(out: &mut Encoded, part: Encoded) {
    out.ids.extend(part.ids);
    out.offsets.extend(part.offsets);
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// A tiny ChatML-like byte-level BPE tokenizer, built in code so that the
    /// crate's tests need no files: every byte is a token, plus a few merges
    /// and three special tokens.
    pub(crate) fn tiny_tokenizer_json() -> String {
        // GPT-2's byte-to-unicode table: printable bytes map to themselves.
        let mut bs: Vec<u32> = (b'!' as u32..=b'~' as u32).chain(0xA1..=0xAC).chain(0xAE..=0xFF).collect();
        let mut cs = bs.clone();
        let mut n = 0;
        for b in 0..256u32 {
            if !bs.contains(&b) {
                bs.push(b);
                cs.push(256 + n);
                n += 1;
            }
        }
        let mut vocab = serde_json::Map::new();
        for c in &cs {
            let s = char::from_u32(*c).unwrap().to_string();
            let id = vocab.len();
            vocab.insert(s, id.into());
        }
        let merges = [("H", "i"), ("Ġ", "t"), ("Ġt", "h"), ("Ġth", "e")];
        for (a, b) in merges {
            let id = vocab.len();
            vocab.insert(format!("{a}{b}"), id.into());
        }
        let base = vocab.len();
        let added: Vec<_> = ["<|im_start|>", "<|im_end|>", "<|endoftext|>"]
            .iter()
            .enumerate()
            .map(|(i, t)| {
                serde_json::json!({"id": base + i, "content": t, "single_word": false, "lstrip": false,
                    "rstrip": false, "normalized": false, "special": true})
            })
            .collect();
        serde_json::json!({
            "version": "1.0",
            "truncation": null,
            "padding": null,
            "added_tokens": added,
            "normalizer": null,
            "pre_tokenizer": {"type": "ByteLevel", "add_prefix_space": false, "trim_offsets": true, "use_regex": true},
            "post_processor": {"type": "ByteLevel", "add_prefix_space": false, "trim_offsets": true, "use_regex": true},
            "decoder": {"type": "ByteLevel", "add_prefix_space": false, "trim_offsets": true, "use_regex": true},
            "model": {"type": "BPE", "dropout": null, "unk_token": null, "continuing_subword_prefix": null,
                "end_of_word_suffix": null, "fuse_unk": false, "byte_fallback": false, "ignore_merges": false,
                "vocab": vocab, "merges": merges.iter().map(|(a, b)| format!("{a} {b}")).collect::<Vec<_>>()}
        })
        .to_string()
    }

    pub(crate) fn tiny() -> TextTokenizer {
        TextTokenizer::from_json(&tiny_tokenizer_json()).unwrap()
    }

    #[test]
    fn special_tokens_are_control_tokens_in_ordinary_text() {
        let t = tiny();
        let end = t.token_to_id("<|im_end|>").unwrap();
        let enc = t.encode("Hi<|im_end|> the").unwrap();
        assert_eq!(enc.ids[1], end);
        assert_eq!(enc.offsets, vec![(0, 2), (2, 12), (12, 16)]);
        assert_eq!(enc.ids, t.encode_ids("Hi<|im_end|> the").unwrap());
    }

    #[test]
    fn plain_pieces_never_become_control_tokens() {
        let t = tiny();
        let end = t.token_to_id("<|im_end|>").unwrap();
        // "Hi" + sentinel (U+F0000, 4 bytes) + " the" + a real end token.
        let text = "Hi\u{F0000} the<|im_end|>";
        let pieces = [PlainPiece { at: 2, len: 4, text: "<|im_end|>" }];
        let enc = t.encode_marked(text, &pieces).unwrap();
        assert_eq!(enc.ids.iter().filter(|&&i| i == end).count(), 1);
        assert_eq!(*enc.ids.last().unwrap(), end);
        // The literal text is spelt out byte by byte, all mapped to the sentinel.
        let spelt: Vec<_> = enc.offsets.iter().filter(|o| **o == (2, 6)).collect();
        assert_eq!(spelt.len(), "<|im_end|>".len());
        assert_eq!(enc.offsets.first(), Some(&(0, 2)));
        assert_eq!(enc.offsets.last(), Some(&(10, 20)));
    }

    #[test]
    fn finds_special_text() {
        let t = tiny();
        assert_eq!(t.find_special_text("a<|im_start|>b<|im_end|>"), vec![(1, 13), (14, 24)]);
        assert_eq!(t.first_special_text("plain"), None);
        assert_eq!(t.special_tokens().len(), 3);
    }

    #[test]
    fn first_only_prepend_schemes_become_never() {
        let mut tree = serde_json::json!({"type": "Sequence", "pretokenizers": [
            {"type": "Split"}, {"type": "Metaspace", "replacement": "▁", "prepend_scheme": "first", "split": false}]});
        assert!(never_prepend(&mut tree));
        assert_eq!(tree["pretokenizers"][1]["prepend_scheme"], "never");
        assert!(!never_prepend(&mut serde_json::json!({"type": "Metaspace", "prepend_scheme": "always"})));
        assert!(!never_prepend(&mut serde_json::json!(null)));
    }

    #[test]
    fn bad_json_is_a_load_error() {
        let err = TextTokenizer::from_json("{not json").err().unwrap();
        assert!(matches!(err, TokenizeError::Load(_)), "{err}");
        assert!(!err.to_string().contains('\n'));
    }
}
