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
    let folded: String = text.nfkc().default_case_fold().nfkc().collect();

    let mut out = String::with_capacity(folded.len());
    let mut prev: Option<char> = None; // last character written
    let mut pending_separator = false;
    for c in folded.chars() {
        if is_separator(c) {
            pending_separator = true;
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
            }
            pending_separator = false;
        }
        out.push(c);
        prev = Some(c);
    }

    // Dropping a separator can join a base letter and a combining mark that
    // NFKC would compose (`"カ\u{3099}"` -> `"ガ"`). Both sides are NFKC
    // already, so canonical recomposition (NFC) restores NFKC; the quick check
    // keeps the common case to one scan.
    match is_nfc_quick(out.chars()) {
        IsNormalized::Yes => out,
        _ => out.nfc().collect(),
    }
}

fn is_separator(c: char) -> bool {
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
    use super::normalize;

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
