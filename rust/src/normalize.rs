//! Text normalisation for dedupe keys.
//!
//! `normalize` maps texts that differ only in width, case, spacing or
//! punctuation to one key:
//!
//! 1. **NFKC**: full-width forms (`ＡＢＣ１２３`), ligatures (`ﬁ`) and other
//!    compatibility characters become their plain forms.
//! 2. **Full Unicode case folding** (the `caseless` crate, CaseFolding.txt
//!    C+F, so `ß` -> `ss` and `ς` -> `σ`), then NFKC again because folding can
//!    emit sequences that NFKC would still change.
//! 3. **Punctuation folding**: every character of general category P* (ASCII
//!    `!"#%&'()*,-./:;?@[\]_{}`, CJK `，。！？「」、《》…`) and every control
//!    character is treated as a word separator, exactly like whitespace.
//!    Mapping to a separator rather than deleting keeps `"end.Start"` and
//!    `"end. Start"` equal. Symbols (S*: `$ + < = > ^ | ~`, `©`, emoji) are
//!    kept: they carry meaning and are not punctuation in Unicode.
//! 4. **Whitespace folding**: each run of separators becomes one ASCII space,
//!    and leading/trailing runs are dropped.
//! 5. **CJK awareness**: Han, Hiragana, Katakana and Bopomofo are written
//!    without spaces between words, so a separator run next to one of them is
//!    dropped instead of becoming a space (`"你好，世界"` -> `"你好世界"`,
//!    `"我爱 Python"` == `"我爱Python"`). CJK characters themselves are never
//!    altered beyond NFKC. Hangul uses spaces between words, so it is treated
//!    like Latin.
//! 6. Zero-width characters that only mark invisible breaks (ZWSP, word
//!    joiner, BOM, soft hyphen) are deleted. ZWJ and variation selectors are
//!    kept because emoji sequences need them.
//!
//! The result is idempotent: `normalize(normalize(x)) == normalize(x)`.
use caseless::Caseless;
use unicode_normalization::{is_nfc_quick, IsNormalized, UnicodeNormalization};
use unicode_properties::{GeneralCategoryGroup, UnicodeGeneralCategory};
use unicode_script::{Script, UnicodeScript};

/// Normalise `text` into a dedupe key (see the module docs for the rules).
///
/// ```
/// use ditto_native::normalize::normalize;
/// assert_eq!(normalize("  Hello,   WORLD! "), "hello world");
/// assert_eq!(normalize("你好，世界！"), "你好世界");
/// ```
pub fn normalize(text: &str) -> String {
    normalize_with_breaks(text).text
}

/// A normalised text and where its sentences ended.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Normalized {
    /// `normalize(text)`.
    pub text: String,
    /// Ascending byte offsets into `text` where a dropped separator run held a
    /// sentence end (`.` `!` `?` `;` `。` `！` `？` `；` `…`) or a line break.
    /// Normalising drops the `。` between two Han sentences and joins them;
    /// the shingler reads these offsets so that a character n-gram never
    /// spans two sentences (reordered sentences then keep their Jaccard).
    pub breaks: Vec<u32>,
}

/// [`normalize`], and where sentences ended (see [`Normalized::breaks`]).
pub fn normalize_with_breaks(text: &str) -> Normalized {
    // ASCII needs neither NFKC (ASCII is stable under it) nor Unicode case
    // folding, and nothing composes in the final NFC step: most text here is
    // ASCII, and this path runs several times faster with the same output.
    if text.is_ascii() {
        normalize_ascii(text.as_bytes())
    } else {
        normalize_general(text)
    }
}

fn normalize_general(text: &str) -> Normalized {
    let folded: String = text.nfkc().default_case_fold().nfkc().collect();

    let mut out = String::with_capacity(folded.len());
    let mut breaks = Vec::new();
    let mut prev: Option<char> = None; // last character written
    let mut pending_separator = false;
    let mut pending_break = false;
    for c in folded.chars() {
        if is_separator(c) {
            pending_separator = true;
            pending_break |= is_sentence_break(c);
            continue;
        }
        if is_invisible_break(c) {
            continue;
        }
        if pending_separator {
            // Nothing before the run means it was leading: trim it.
            if let Some(p) = prev {
                if !is_cjk(p) && !is_cjk(c) {
                    out.push(' ');
                }
                if pending_break {
                    breaks.push(out.len() as u32);
                }
            }
            pending_separator = false;
            pending_break = false;
        }
        out.push(c);
        prev = Some(c);
    }

    // Dropping a separator can join a base letter and a combining mark that
    // NFKC would compose (`"カ\u{3099}"` -> `"ガ"`). Both sides are NFKC
    // already, so canonical recomposition (NFC) restores NFKC; the quick check
    // keeps the common case to one scan. Composition moves byte offsets, so
    // such a (rare) text keeps no sentence breaks.
    match is_nfc_quick(out.chars()) {
        IsNormalized::Yes => Normalized { text: out, breaks },
        _ => Normalized { text: out.nfc().collect(), breaks: Vec::new() },
    }
}

/// The general path restricted to ASCII: lower case, separators folded.
fn normalize_ascii(bytes: &[u8]) -> Normalized {
    let mut out = Vec::with_capacity(bytes.len());
    let mut breaks = Vec::new();
    let (mut pending_separator, mut pending_break) = (false, false);
    for &b in bytes {
        if is_ascii_separator(b) {
            pending_separator = true;
            pending_break |= matches!(b, b'.' | b'!' | b'?' | b';' | b'\n' | b'\r' | b'\x0b' | b'\x0c');
            continue;
        }
        if pending_separator {
            if !out.is_empty() {
                out.push(b' ');
                if pending_break {
                    breaks.push(out.len() as u32);
                }
            }
            pending_separator = false;
            pending_break = false;
        }
        out.push(b.to_ascii_lowercase());
    }
    // Only ASCII bytes were pushed.
    let text = String::from_utf8(out).expect("ASCII is UTF-8");
    Normalized { text, breaks }
}

/// Whitespace, control characters and ASCII punctuation (general category P*);
/// `$ + < = > ^ ` | ~` are symbols (S*) and are kept.
fn is_ascii_separator(b: u8) -> bool {
    b.is_ascii_whitespace()
        || b.is_ascii_control()
        || matches!(
            b,
            b'!' | b'"' | b'#' | b'%' | b'&' | b'\'' | b'(' | b')' | b'*' | b',' | b'-' | b'.' | b'/' | b':' | b';'
                | b'?' | b'@' | b'[' | b'\\' | b']' | b'_' | b'{' | b'}'
        )
}

/// Ends a sentence or a line (after NFKC, which maps `！？；．｡` to these).
fn is_sentence_break(c: char) -> bool {
    matches!(
        c,
        '.' | '!' | '?' | ';' | '。' | '…' | '‼' | '⁇' | '⁈' | '⁉' | '\n' | '\r' | '\u{0B}' | '\u{0C}' | '\u{85}'
            | '\u{2028}' | '\u{2029}'
    )
}

fn is_separator(c: char) -> bool {
    if c.is_ascii() {
        return is_ascii_separator(c as u8);
    }
    c.is_whitespace()
        || c.is_control()
        || c.general_category_group() == GeneralCategoryGroup::Punctuation
}

fn is_invisible_break(c: char) -> bool {
    matches!(c, '\u{200B}' | '\u{2060}' | '\u{FEFF}' | '\u{00AD}')
}

/// Scripts written without spaces between words. Characters shared by several
/// scripts (the Katakana-Hiragana prolonged sound mark `ー`) count when their
/// Script_Extensions name one of these.
fn is_cjk(c: char) -> bool {
    if c.is_ascii() {
        return false;
    }
    const SCRIPTS: [Script; 4] = [
        Script::Han,
        Script::Hiragana,
        Script::Katakana,
        Script::Bopomofo,
    ];
    if SCRIPTS.contains(&c.script()) {
        return true;
    }
    let ext = c.script_extension();
    !ext.is_common() && !ext.is_inherited() && SCRIPTS.iter().any(|&s| ext.contains_script(s))
}

#[cfg(test)]
mod tests {
    use super::{normalize, normalize_with_breaks};

    #[test]
    fn ascii_path_matches_the_general_path() {
        use super::{normalize_ascii, normalize_general};
        let mut cases: Vec<String> = ["  Hello,\tWorld!!  How are\n\nyou?  ", "a+b=c $5 <tag> `x` ~y|z^", "don't; stop. now\r\n"]
            .iter()
            .map(|s| s.to_string())
            .collect();
        for b in 0u8..128 {
            let c = b as char;
            cases.extend([c.to_string(), format!("Ab{c}Cd"), format!("x {c}. Y{c}{c}z ")]);
        }
        for s in cases {
            assert_eq!(normalize_ascii(s.as_bytes()), normalize_general(&s), "{s:?}");
        }
    }

    #[test]
    fn sentence_breaks_are_marked() {
        let n = normalize_with_breaks("第一句话。第二句话！第三，句话\n第四");
        assert_eq!(n.text, "第一句话第二句话第三句话第四");
        let at: Vec<&str> = n.breaks.iter().map(|&b| &n.text[b as usize..]).collect();
        assert_eq!(at, vec!["第二句话第三句话第四", "第三句话第四", "第四"]);
        let e = normalize_with_breaks("One. Two, three! Four");
        assert_eq!(e.text, "one two three four");
        assert_eq!(e.breaks, vec![4, 14]);
        // Leading and trailing runs mark nothing.
        assert!(normalize_with_breaks("。你好。").breaks.is_empty());
    }

    #[test]
    fn english_case_space_and_punctuation() {
        assert_eq!(
            normalize("  Hello,\tWorld!!  How are\n\nyou?  "),
            "hello world how are you"
        );
        assert_eq!(normalize("end.Start"), normalize("end. Start"));
        assert_eq!(normalize("don't"), "don t");
        assert_eq!(normalize("snake_case-word"), "snake case word");
        assert_eq!(normalize("a+b=c $5 <tag>"), "a+b=c $5 <tag>");
    }

    #[test]
    fn full_case_folding() {
        assert_eq!(normalize("STRASSE"), normalize("Straße"));
        assert_eq!(normalize("ΌΣΟΣ"), normalize("όσος"));
        assert_eq!(normalize("ǅ"), "dž");
    }

    #[test]
    fn chinese_punctuation_is_dropped_without_spaces() {
        assert_eq!(
            normalize("你好，世界！今天天气怎么样？"),
            "你好世界今天天气怎么样"
        );
        assert_eq!(normalize("「引用」、《书名》。"), "引用书名");
        assert_eq!(normalize("你好 世界"), "你好世界");
    }

    #[test]
    fn japanese_keeps_prolonged_sound_mark() {
        assert_eq!(normalize("ラーメン、ください。"), "ラーメンください");
        // Half-width katakana is widened by NFKC.
        assert_eq!(normalize("ﾗｰﾒﾝ"), "ラーメン");
    }

    #[test]
    fn mixed_cjk_and_latin() {
        assert_eq!(normalize("我爱 Python！"), "我爱python");
        assert_eq!(normalize("我爱Python"), "我爱python");
        assert_eq!(normalize("Hello, 世界. Bye"), "hello世界bye");
    }

    #[test]
    fn korean_keeps_word_spaces() {
        assert_eq!(normalize("안녕하세요,  세계!"), "안녕하세요 세계");
    }

    #[test]
    fn full_width_forms_fold() {
        assert_eq!(normalize("ＡＢＣ　１２３！"), "abc 123");
        assert_eq!(normalize("ﬁle"), "file");
    }

    #[test]
    fn emoji_are_preserved() {
        assert_eq!(normalize("Great job 👍🏽!"), "great job 👍🏽");
        let family = "👨\u{200D}👩\u{200D}👧";
        assert_eq!(normalize(family), family);
        assert_eq!(normalize("I ❤\u{FE0F} it"), "i ❤\u{FE0F} it");
    }

    #[test]
    fn invisible_breaks_are_removed() {
        assert_eq!(normalize("zero\u{200B}width\u{00AD}"), "zerowidth");
    }

    #[test]
    fn empty_and_punctuation_only() {
        assert_eq!(normalize(""), "");
        assert_eq!(normalize("  ,.!?。！  "), "");
    }

    #[test]
    fn recomposes_across_removed_separators() {
        assert_eq!(normalize("カ \u{3099}"), "ガ");
        assert_eq!(normalize("e\u{200B}\u{0301}"), "é");
    }

    #[test]
    fn idempotent_on_examples() {
        for s in [
            "  Hello,\tWorld!! ",
            "你好，世界！",
            "ＡＢＣ　１２３",
            "カ \u{3099}",
            "İstanbul ß ﬃ",
            "\u{0345}\u{0301}Ω",
            "a \u{0301}",
            "👨\u{200D}👩\u{200D}👧 ok",
        ] {
            let once = normalize(s);
            assert_eq!(normalize(&once), once, "not idempotent on {s:?}");
        }
    }

    #[test]
    fn idempotent_on_every_assigned_code_point_in_context() {
        use unicode_properties::{GeneralCategory, UnicodeGeneralCategory};
        // Each assigned character alone, after a letter and before a combining
        // mark, and wrapped in separators next to CJK: the places where
        // folding, dropping and recomposition interact.
        for cp in 0..=0x10FFFFu32 {
            let Some(c) = char::from_u32(cp) else {
                continue;
            };
            if matches!(
                c.general_category(),
                GeneralCategory::Unassigned | GeneralCategory::PrivateUse
            ) {
                continue;
            }
            for s in [
                c.to_string(),
                format!("a{c}\u{0301}"),
                format!("字 {c} \u{3099}"),
            ] {
                let once = normalize(&s);
                assert_eq!(normalize(&once), once, "not idempotent on {s:?}");
            }
        }
    }
}
