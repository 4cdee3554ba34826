//! Role-play quality checks on single turns (one question and its answer).
//!
//! Each check either passes or returns a [`Failure`] carrying one stable
//! [`Reason`] code (the quarantine contract) and a human-readable detail.
//! Checks run in a fixed order and the first failure wins, so a turn always
//! gets the same code. Thresholds come from [`FilterConfig`]; `None` turns a
//! check off. The config has no defaults here: the Python stage config is the
//! one source of them.
//!
//! Phrase checks (assistant leak, refusal, identity) run on a canonical form:
//! NFKC, lower case, typographic apostrophes folded, whitespace collapsed.
//! They favour precision: a turn is dropped only on a clear signal.
use std::collections::HashSet;
use std::fmt;

use aho_corasick::AhoCorasick;
use rayon::prelude::*;
use serde::Deserialize;
use unicode_normalization::char::is_combining_mark;
use unicode_normalization::UnicodeNormalization;
use xxhash_rust::xxh3::xxh3_64;

use crate::dedupe::{is_cjk, mix};

/// Why a turn or session was quarantined. The codes are a public contract.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Reason {
    EmptyTurn,
    TooShort,
    TooLong,
    Repetition,
    AssistantLeak,
    IdentityBreak,
    LabelMismatch,
    LanguageMismatch,
    Truncated,
    ExactDuplicate,
    NearDuplicate,
}

impl Reason {
    pub const ALL: [Reason; 11] = [
        Reason::EmptyTurn,
        Reason::TooShort,
        Reason::TooLong,
        Reason::Repetition,
        Reason::AssistantLeak,
        Reason::IdentityBreak,
        Reason::LabelMismatch,
        Reason::LanguageMismatch,
        Reason::Truncated,
        Reason::ExactDuplicate,
        Reason::NearDuplicate,
    ];

    pub fn code(self) -> &'static str {
        match self {
            Reason::EmptyTurn => "empty_turn",
            Reason::TooShort => "too_short",
            Reason::TooLong => "too_long",
            Reason::Repetition => "repetition",
            Reason::AssistantLeak => "assistant_leak",
            Reason::IdentityBreak => "identity_break",
            Reason::LabelMismatch => "label_mismatch",
            Reason::LanguageMismatch => "language_mismatch",
            Reason::Truncated => "truncated",
            Reason::ExactDuplicate => "exact_duplicate",
            Reason::NearDuplicate => "near_duplicate",
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct Failure {
    pub reason: Reason,
    pub detail: String,
}

fn fail(reason: Reason, detail: String) -> Option<Failure> {
    Some(Failure { reason, detail })
}

#[derive(Debug, Clone, PartialEq)]
pub enum FilterError {
    Config(String),
    SessionIndex { turn: usize, session: usize, sessions: usize },
}

impl fmt::Display for FilterError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Config(msg) => write!(f, "invalid filter config: {msg}"),
            Self::SessionIndex { turn, session, sessions } => {
                write!(f, "turn {turn} refers to session {session} but there are {sessions}")
            }
        }
    }
}

impl std::error::Error for FilterError {}

/// Thresholds of the turn checks; `None` turns a check off.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FilterConfig {
    /// Length bounds in characters of the trimmed question / answer.
    pub min_question_chars: Option<usize>,
    pub max_question_chars: Option<usize>,
    pub min_answer_chars: Option<usize>,
    pub max_answer_chars: Option<usize>,
    /// Gopher repetition rules (Rae et al., 2021, table A1) on the answer.
    /// Fraction of lines that repeat an earlier line.
    pub dup_line_frac: Option<f64>,
    /// Fraction of characters inside repeated lines.
    pub dup_line_char_frac: Option<f64>,
    /// Character share of the repeated n-gram covering most characters,
    /// for n = 2, 3, 4, ...
    pub top_ngram_char_frac: Option<Vec<f64>>,
    /// Character share of all repeated n-grams, for n = 5, 6, 7, ...
    pub dup_ngram_char_frac: Option<Vec<f64>>,
    /// The n-gram rules need this many words (CJK characters count as words):
    /// on a few words their fractions are noise.
    pub repetition_min_words: usize,
    /// Phrases (besides the built-in ones and the simulator's name) that show
    /// the assistant speaking as itself; `None` turns the check off.
    pub leak_phrases: Option<Vec<String>>,
    /// Flag "I am X" / "我叫X" where X is not the role.
    pub identity_break: Option<bool>,
    /// A role-specific answer must not refuse within this many opening
    /// characters; a contrastive answer must refuse somewhere.
    pub refusal_window_chars: Option<usize>,
    /// Least share of the session language's script among the words of the
    /// question and of the answer (a Han character counts as a word).
    pub min_script_ratio: Option<f64>,
    /// Texts with fewer words than this are not judged by script.
    pub script_min_words: usize,
    /// Generation finish reasons that mean the answer was cut off.
    pub truncation_reasons: Option<Vec<String>>,
}

impl FilterConfig {
    pub fn from_json(json: &str) -> Result<Self, FilterError> {
        let cfg: Self = serde_json::from_str(json).map_err(|e| FilterError::Config(e.to_string()))?;
        let fracs = [cfg.dup_line_frac, cfg.dup_line_char_frac, cfg.min_script_ratio];
        let lists = cfg.top_ngram_char_frac.iter().chain(cfg.dup_ngram_char_frac.iter()).flatten();
        if fracs.iter().flatten().chain(lists).any(|f| !(0.0..=1.0).contains(f)) {
            return Err(FilterError::Config("fractions must lie in [0, 1]".into()));
        }
        Ok(cfg)
    }
}

/// Session-level inputs of the checks.
#[derive(Debug, Clone, Copy)]
pub struct SessionInfo<'a> {
    pub lang: &'a str,
    pub system: &'a str,
    pub simulator: &'a str,
}

/// One turn; `session` indexes the `SessionInfo` slice.
#[derive(Debug, Clone, Copy)]
pub struct Turn<'a> {
    pub session: usize,
    pub question: &'a str,
    pub answer: &'a str,
    pub rejection_label: Option<i8>,
    pub finish_reason: Option<&'a str>,
}

/// Checks every turn in parallel; one result per turn, in order.
pub fn check_turns(
    turns: &[Turn],
    sessions: &[SessionInfo],
    cfg: &FilterConfig,
) -> Result<Vec<Option<Failure>>, FilterError> {
    if let Some((i, t)) = turns.iter().enumerate().find(|(_, t)| t.session >= sessions.len()) {
        return Err(FilterError::SessionIndex { turn: i, session: t.session, sessions: sessions.len() });
    }
    let extra_leaks = cfg.leak_phrases.iter().flatten().map(|p| canonical(p)).filter(|p| !p.is_empty());
    let phrases = Phrases {
        leak: PhraseSet::new(LEAK_PHRASES.iter().map(|p| p.to_string()).chain(extra_leaks)),
        refusal: PhraseSet::new(REFUSAL_PHRASES.iter().map(|p| p.to_string())),
    };
    let contexts: Vec<SessionContext> = sessions.par_iter().map(SessionContext::new).collect();
    Ok(turns.par_iter().map(|t| check_turn(t, &contexts[t.session], &phrases, cfg)).collect())
}

/// The phrase lists of one run, each compiled once.
struct Phrases {
    leak: PhraseSet,
    refusal: PhraseSet,
}

/// What the checks need from a session, computed once per session.
struct SessionContext {
    script: Option<Script>,
    label: Option<Label>,
    simulator_names: Vec<String>,
}

impl SessionContext {
    fn new(s: &SessionInfo) -> Self {
        Self {
            script: expected_script(s.lang),
            label: role_label(s.system).map(|l| Label::new(&l)),
            simulator_names: simulator_names(s.simulator),
        }
    }
}

fn check_turn(t: &Turn, ctx: &SessionContext, phrases: &Phrases, cfg: &FilterConfig) -> Option<Failure> {
    let (q, a) = (t.question.trim(), t.answer.trim());
    if q.is_empty() || a.is_empty() {
        let which = if q.is_empty() { "question" } else { "answer" };
        return fail(Reason::EmptyTurn, format!("{which} is empty"));
    }
    if let (Some(reasons), Some(fr)) = (&cfg.truncation_reasons, t.finish_reason) {
        if reasons.iter().any(|r| r == fr) {
            return fail(Reason::Truncated, format!("finish_reason is {fr}"));
        }
    }
    let (qn, an) = (q.chars().count(), a.chars().count());
    for (what, n, min) in [("question", qn, cfg.min_question_chars), ("answer", an, cfg.min_answer_chars)] {
        if let Some(min) = min.filter(|&m| n < m) {
            return fail(Reason::TooShort, format!("{what} has {n} characters < {min}"));
        }
    }
    for (what, n, max) in [("question", qn, cfg.max_question_chars), ("answer", an, cfg.max_answer_chars)] {
        if let Some(max) = max.filter(|&m| n > m) {
            return fail(Reason::TooLong, format!("{what} has {n} characters > {max}"));
        }
    }
    if let (Some(min), Some(script)) = (cfg.min_script_ratio, ctx.script) {
        for (what, text) in [("question", q), ("answer", a)] {
            if let Some((ratio, words)) = script_ratio(text, script) {
                if words >= cfg.script_min_words && ratio < min {
                    return fail(
                        Reason::LanguageMismatch,
                        format!("{what}: {:.2} of {words} words in {} script < {min}", ratio, script.name()),
                    );
                }
            }
        }
    }
    let canon = canonical(a);
    if cfg.leak_phrases.is_some() {
        let by_name = || ctx.simulator_names.iter().map(|s| s.as_str()).find(|p| contains_phrase(&canon, p));
        if let Some(p) = phrases.leak.find(&canon, canon.len()).or_else(by_name) {
            return fail(Reason::AssistantLeak, format!("answer contains {p:?}"));
        }
    }
    if cfg.identity_break == Some(true) {
        if let Some(label) = &ctx.label {
            if let Some(claim) = identity_claims(a).into_iter().find(|c| !label.matches(c)) {
                return fail(Reason::IdentityBreak, format!("answer claims to be {:?}, not {:?}", claim.text(), label.full));
            }
        }
    }
    if let Some(f) = repetition(a, cfg) {
        return Some(f);
    }
    if let Some(window) = cfg.refusal_window_chars {
        match t.rejection_label {
            Some(1) if phrases.refusal.find(&canon, canon.len()).is_none() => {
                return fail(Reason::LabelMismatch, "contrastive turn does not refuse".into());
            }
            Some(0) => {
                let opening = canon.char_indices().nth(window).map_or(canon.len(), |(i, _)| i);
                if let Some(p) = phrases.refusal.find(&canon, opening) {
                    return fail(Reason::LabelMismatch, format!("role-specific turn refuses: {p:?}"));
                }
            }
            _ => {}
        }
    }
    None
}

// ---------------------------------------------------------------- text forms

/// NFKC, lower case, apostrophes folded, whitespace collapsed to one space.
pub fn canonical(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut space = false;
    // ASCII is stable under NFKC and lower-cases byte by byte: the same
    // output without the Unicode tables (most answers are ASCII; this was the
    // largest part of check_turns on English sessions).
    if text.is_ascii() {
        for b in text.bytes() {
            let c = if b == b'`' { '\'' } else { b.to_ascii_lowercase() as char };
            if c.is_whitespace() {
                space = true;
                continue;
            }
            if space && !out.is_empty() {
                out.push(' ');
            }
            space = false;
            out.push(c);
        }
        return out;
    }
    for c in text.nfkc().flat_map(char::to_lowercase) {
        let c = if matches!(c, '\u{2018}' | '\u{2019}' | '\u{02BC}' | '`') { '\'' } else { c };
        if c.is_whitespace() {
            space = true;
            continue;
        }
        if space && !out.is_empty() {
            out.push(' ');
        }
        space = false;
        out.push(c);
    }
    out
}

/// Lower case without accents, for comparing Latin names.
fn fold(word: &str) -> String {
    word.nfd().filter(|c| !is_combining_mark(*c)).flat_map(char::to_lowercase).collect()
}

/// A letter or digit of a space-separated script.
fn is_word_char(c: char) -> bool {
    c.is_alphanumeric() && !is_cjk(c)
}

/// The match `hay[start..end]` is not glued to a surrounding Latin word (CJK
/// text has no word boundaries, so only Latin ends are checked).
fn at_word_boundary(hay: &str, start: usize, end: usize) -> bool {
    let phrase = &hay[start..end];
    let glued_before = phrase.chars().next().is_some_and(is_word_char)
        && hay[..start].chars().next_back().is_some_and(is_word_char);
    let glued_after =
        phrase.chars().next_back().is_some_and(is_word_char) && hay[end..].chars().next().is_some_and(is_word_char);
    !(glued_before || glued_after)
}

/// `phrase` occurs in `hay` at word boundaries.
pub fn contains_phrase(hay: &str, phrase: &str) -> bool {
    !phrase.is_empty() && hay.match_indices(phrase).any(|(i, _)| at_word_boundary(hay, i, i + phrase.len()))
}

/// A phrase list searched in one pass (Aho-Corasick) instead of one scan per
/// phrase: the leak and refusal lists hold about 140 phrases.
pub struct PhraseSet {
    automaton: AhoCorasick,
    phrases: Vec<String>,
}

impl PhraseSet {
    pub fn new(phrases: impl IntoIterator<Item = String>) -> Self {
        let phrases: Vec<String> = phrases.into_iter().filter(|p| !p.is_empty()).collect();
        let automaton = AhoCorasick::new(&phrases).expect("phrase lists are small");
        Self { automaton, phrases }
    }

    /// A phrase found at word boundaries in `hay`, ending within `limit` bytes.
    pub fn find(&self, hay: &str, limit: usize) -> Option<&str> {
        self.automaton
            .find_overlapping_iter(hay)
            .take_while(|m| m.end() <= limit)
            .find(|m| at_word_boundary(hay, m.start(), m.end()))
            .map(|m| self.phrases[m.pattern().as_usize()].as_str())
    }
}

// ------------------------------------------------------------ assistant leak

/// The assistant speaking as an AI rather than as the role (canonical form).
const LEAK_PHRASES: &[&str] = &[
    "as an ai", "as an artificial intelligence", "as a language model", "as a large language model",
    "as an ai language model", "as an ai assistant", "i am an ai", "i'm an ai", "i am just an ai",
    "i'm just an ai", "i am only an ai", "i'm only an ai", "i am a language model",
    "i'm a language model", "i am a large language model", "i'm a large language model",
    "i am an artificial intelligence", "i'm an artificial intelligence", "i am a virtual assistant",
    "i'm a virtual assistant", "i am an ai assistant", "i'm an ai assistant", "my training data",
    "my knowledge cutoff", "my knowledge cut-off",
    "作为一个人工智能", "作为人工智能", "作为一个ai", "作为ai", "作为一名ai", "作为一个语言模型",
    "作为语言模型", "作为一个大型语言模型", "作为大型语言模型", "作为ai助手", "作为一个ai助手",
    "我是一个人工智能", "我是人工智能", "我是一个ai", "我是ai", "我只是一个ai", "我只是一个人工智能",
    "我是一个语言模型", "我是语言模型", "我是一个大型语言模型", "我是大型语言模型", "我是一个虚拟助手",
    "我是虚拟助手", "我是ai助手", "我是人工智能助手", "我的训练数据", "人工智能语言模型", "ai语言模型",
];

/// Names under which the simulator model may introduce itself: the model id
/// (last path component, no file extension) and its family with version, such
/// as `qwen2.5` or `gpt-4o`. A bare family word (`llama`, `claude`) is left out
/// because it is also an ordinary word or name.
pub fn simulator_names(simulator: &str) -> Vec<String> {
    let last = simulator.rsplit(['/', '\\']).next().unwrap_or("").trim();
    let mut id = canonical(last);
    for ext in [".gguf", ".safetensors", ".bin", ".pt"] {
        if let Some(stem) = id.strip_suffix(ext) {
            id = stem.to_string();
        }
    }
    let generic = id.is_empty()
        || id.chars().all(|c| c.is_ascii_digit())
        || ["step", "checkpoint", "ckpt", "model", "final", "latest"].iter().any(|p| {
            id.strip_prefix(p).is_some_and(|r| r.chars().all(|c| c.is_ascii_digit() || c == '_' || c == '-'))
        });
    if generic {
        return Vec::new();
    }
    let mut names = vec![id.clone()];
    let parts: Vec<&str> = id.split(['-', '_', ' ']).collect();
    if let Some(k) = parts.iter().position(|p| p.chars().any(|c| c.is_ascii_digit())) {
        if parts[..=k].iter().any(|p| p.chars().any(|c| c.is_alphabetic())) {
            names.push(parts[..=k].join("-"));
            names.push(parts[..=k].join(" "));
        }
    }
    names.retain(|n| n.chars().count() >= 4);
    names.sort();
    names.dedup();
    names
}

// ------------------------------------------------------------------ refusal

/// In-character refusals for lack of knowledge (canonical form).
const REFUSAL_PHRASES: &[&str] = &[
    "i don't know", "i do not know", "i don't recognize", "i do not recognize", "i don't understand",
    "i do not understand", "i'm not familiar", "i am not familiar", "not familiar with", "i'm unfamiliar",
    "i am unfamiliar", "unfamiliar to me", "i have no knowledge", "i've no knowledge", "no knowledge of",
    "i know nothing", "i know little of", "i know little about", "i've never heard", "i have never heard",
    "never heard of", "i haven't heard", "i have not heard", "i've not heard", "i cannot answer",
    "i can't answer", "i cannot say", "i can't say", "i cannot tell you", "i can't tell you",
    "i couldn't tell you", "i could not tell you", "i wouldn't know", "i would not know", "i'm not aware",
    "i am not aware", "i have no idea", "i've no idea", "beyond my knowledge", "beyond my ken",
    "outside my knowledge", "beyond my understanding", "beyond my time", "beyond my era",
    "after my time", "before my time", "unknown to me", "foreign to me", "a mystery to me",
    "i'm unable to", "i am unable to", "i cannot speak to", "i can't speak to", "i cannot comment",
    "i can't comment", "did not exist in my", "didn't exist in my", "does not exist in my",
    "doesn't exist in my", "not acquainted with", "i can't help with", "i cannot help with",
    "我不知道", "我并不知道", "我不清楚", "并不清楚", "不太清楚", "我不了解", "并不了解", "不太了解",
    "一无所知", "没听说过", "没有听说过", "从未听说", "从没听说", "未曾听说", "不曾听说", "闻所未闻",
    "不熟悉", "无法回答", "无法评论", "无从得知", "不得而知", "超出了我的", "超出我的",
    "不在我的知识", "知识范围之外", "我那个时代", "我的时代还没有", "那个时代还没有", "陌生",
    "不认识", "我不懂", "我不明白",
];



// ----------------------------------------------------------------- identity

/// The role's label from the system message: `You are {label}, ...` or
/// `你是{label}，...` (the contract's two forms); `None` otherwise.
pub fn role_label(system: &str) -> Option<String> {
    let s = system.trim();
    let (rest, seps, end): (&str, &[char], char) = if let Some(r) = s.strip_prefix("You are ") {
        (r, &[','], '.')
    } else if let Some(r) = s.strip_prefix("你是") {
        (r, &['，', ','], '。')
    } else {
        return None;
    };
    let label = match rest.find(seps) {
        Some(i) => &rest[..i],
        None => rest.strip_suffix(end).unwrap_or(rest),
    };
    let label = label.trim();
    (!label.is_empty()).then(|| label.to_string())
}

/// Titles, honorifics and descriptors that are not a person's name.
const NOT_NAMES: &[&str] = &[
    "king", "queen", "emperor", "empress", "president", "prime", "minister", "chancellor", "doctor",
    "dr", "sir", "dame", "lord", "lady", "general", "captain", "colonel", "admiral", "professor", "prof",
    "saint", "st", "pope", "prince", "princess", "duke", "duchess", "count", "countess", "baron",
    "mr", "mrs", "ms", "miss", "master", "madam", "madame", "monsieur", "father", "brother", "sister",
    "mother", "the", "of", "great", "chairman", "senator", "governor", "judge", "justice", "bishop",
    "cardinal", "reverend", "rev", "sultan", "tsar", "czar", "shah", "pharaoh", "chief", "commander",
    "marshal", "sergeant", "lieutenant", "detective", "inspector", "mayor", "pastor", "rabbi", "imam",
    "junior", "jr", "senior", "sr", "i", "ii", "iii", "iv", "v", "vi", "vii", "viii", "ix", "x",
    "american", "english", "british", "french", "german", "chinese", "italian", "spanish", "russian",
    "japanese", "indian", "catholic", "christian", "jewish", "muslim", "buddhist", "protestant",
];
const NAME_PARTICLES: &[&str] =
    &["de", "da", "di", "du", "del", "della", "van", "von", "der", "den", "la", "le", "bin", "ibn", "al"];
const ABBREVIATIONS: &[&str] = &["dr", "mr", "mrs", "ms", "st", "prof", "rev", "jr", "sr"];
const MIDDLE_DOTS: &[char] = &['·', '•', '・', '‧', '∙'];
/// Characters that end a Chinese name run: grammatical words rare in names.
const ZH_NAME_BREAKS: &[char] =
    &['的', '和', '与', '在', '是', '了', '也', '说', '就', '都', '而', '但', '从', '对', '吗', '呢', '啊'];
const ZH_PRONOUNS: &[char] = &['他', '她', '它', '你', '您', '我', '们', '大', '人', '谁', '这', '那'];

/// A name the answer claims for its speaker.
#[derive(Debug, Clone, PartialEq)]
pub enum Claim {
    /// Latin-script words, as written.
    Latin(Vec<String>),
    /// A CJK name, possibly with middle dots.
    Cjk(String),
}

impl Claim {
    fn text(&self) -> String {
        match self {
            Claim::Latin(w) => w.join(" "),
            Claim::Cjk(s) => s.clone(),
        }
    }
}

/// Capitalised words after a self-introduction, e.g. `Isaac Newton` in
/// "I am Isaac Newton, ...", with lower-case particles inside (`da Vinci`).
fn latin_name_after(text: &str) -> Vec<String> {
    let mut words = Vec::new();
    let mut pending_particle: Option<String> = None;
    for raw in text.split(' ').take(6) {
        let word = raw.trim_end_matches([',', ';', ':', '!', '?', '"', '\'', ')', '.']);
        let stripped_dot = raw.trim_end_matches([',', ';', ':', '!', '?', '"', '\'', ')']).ends_with('.');
        let clean = word.strip_suffix("'s").unwrap_or(word);
        let Some(first) = clean.chars().next() else { break };
        if first.is_uppercase() && clean.chars().all(|c| c.is_alphabetic() || c == '-' || c == '\'' || c == '.') {
            if let Some(p) = pending_particle.take() {
                words.push(p);
            }
            words.push(clean.to_string());
        } else if NAME_PARTICLES.contains(&clean) && !words.is_empty() && pending_particle.is_none() {
            pending_particle = Some(clean.to_string());
            continue;
        } else {
            break;
        }
        let is_abbrev = ABBREVIATIONS.contains(&fold(clean).as_str()) || clean.chars().count() == 1;
        let ended = raw.len() != word.len() && !(stripped_dot && is_abbrev && raw.len() == word.len() + 1);
        if ended {
            break;
        }
    }
    words
}

/// Whether capitalised words read as a name: enough words, one of them a real
/// name word, and not ending in a title ("Lucasian Professor" is a post).
fn is_name_claim(words: &[String], min_words: usize) -> bool {
    let ends_in_title = words.last().is_some_and(|w| NOT_NAMES.contains(&fold(w).as_str()));
    words.len() >= min_words && !ends_in_title && !name_tokens(words).is_empty()
}

fn name_tokens(words: &[String]) -> Vec<String> {
    words
        .iter()
        .flat_map(|w| w.split(['-', '.', '\'']).map(fold).collect::<Vec<_>>())
        .filter(|t| !t.is_empty() && !NOT_NAMES.contains(&t.as_str()) && !NAME_PARTICLES.contains(&t.as_str()))
        .collect()
}

/// A CJK name run after a self-introduction: Han characters and middle dots,
/// cut at grammatical characters; `(name, ended_cleanly)`, where a clean end is
/// punctuation, a space, the end of text or a grammatical character.
fn cjk_name_after(text: &str) -> (String, bool) {
    let mut name = String::new();
    for c in text.chars() {
        if ZH_NAME_BREAKS.contains(&c) {
            return (name, true);
        }
        if is_cjk(c) || MIDDLE_DOTS.contains(&c) {
            if name.chars().count() >= 12 {
                return (name, false);
            }
            name.push(c);
        } else {
            return (name, !c.is_alphanumeric());
        }
    }
    (name, true)
}

/// Names the answer claims for its speaker. English: "my name is X" (X at
/// least one real name word) and "I am X" / "I'm X" (X two or more capitalised
/// words, one a real name word). Chinese: "我叫X" / "我名叫X" / "我的名字是X" /
/// "我的名字叫X" (X a 2-6 character name), and "我是X" only for transliterated
/// names with a middle dot or capitalised Latin words.
pub fn identity_claims(answer: &str) -> Vec<Claim> {
    let text: String = answer.nfkc().map(|c| if c == '\u{2019}' { '\'' } else { c }).collect();
    let mut claims = Vec::new();
    let boundary_ok = |i: usize| text[..i].chars().next_back().is_none_or(|c| !is_word_char(c));
    for (pattern, min_words) in [("my name is ", 1), ("My name is ", 1), ("I am ", 2), ("I'm ", 2)] {
        for (i, _) in text.match_indices(pattern).filter(|(i, _)| boundary_ok(*i)) {
            let words = latin_name_after(&text[i + pattern.len()..]);
            if is_name_claim(&words, min_words) {
                claims.push(Claim::Latin(words));
            }
        }
    }
    for (pattern, strict) in [("我的名字是", true), ("我的名字叫", true), ("我名叫", true), ("我叫", true), ("我是", false)] {
        for (i, _) in text.match_indices(pattern) {
            let rest = text[i + pattern.len()..].trim_start();
            if rest.chars().next().is_some_and(|c| c.is_ascii_uppercase()) {
                let words = latin_name_after(rest);
                if is_name_claim(&words, if strict { 1 } else { 2 }) {
                    claims.push(Claim::Latin(words));
                }
                continue;
            }
            let (name, clean_end) = cjk_name_after(rest);
            let n = name.chars().count();
            let has_dot = name.contains(MIDDLE_DOTS);
            let ok = if strict {
                clean_end && (2..=6).contains(&n) && !name.starts_with(ZH_PRONOUNS) || has_dot && n >= 3
            } else {
                has_dot && n >= 3 && !name.starts_with(MIDDLE_DOTS)
            };
            if ok {
                claims.push(Claim::Cjk(name));
            }
        }
    }
    claims
}

/// The role's label, in the forms a claim is compared against.
struct Label {
    full: String,
    latin: HashSet<String>,
    cjk: String,
    cjk_parts: Vec<String>,
}

impl Label {
    fn new(label: &str) -> Self {
        let latin = label
            .split(|c: char| !is_word_char(c))
            .filter(|t| !t.is_empty())
            .map(fold)
            .collect();
        let cjk: String = label.chars().filter(|&c| is_cjk(c)).collect();
        let cjk_parts = label
            .split(|c: char| !is_cjk(c))
            .filter(|p| !p.is_empty())
            .map(String::from)
            .collect();
        Self { full: label.to_string(), latin, cjk, cjk_parts }
    }

    /// Whether a claim could name this role. Conservative: when the label has
    /// nothing in the claim's script, the claim is assumed to match.
    fn matches(&self, claim: &Claim) -> bool {
        match claim {
            Claim::Latin(words) => {
                self.latin.is_empty() || name_tokens(words).iter().any(|t| self.latin.contains(t))
            }
            Claim::Cjk(name) => {
                if self.cjk.is_empty() {
                    return true;
                }
                let bare: String = name.chars().filter(|&c| is_cjk(c)).collect();
                let parts: Vec<&str> = name.split(MIDDLE_DOTS).filter(|p| p.chars().count() >= 2).collect();
                let single_name = self.cjk_parts.len() == 1 && (2..=4).contains(&self.cjk.chars().count());
                bare.contains(&self.cjk)
                    || self.cjk.contains(&bare)
                    || self.cjk_parts.iter().any(|p| p.chars().count() >= 2 && bare.contains(p.as_str()))
                    || parts.iter().any(|p| self.cjk.contains(p))
                    // A Chinese name and a form of address share the surname (毛泽东, 毛主席).
                    || single_name && bare.chars().next() == self.cjk.chars().next()
            }
        }
    }
}

// ------------------------------------------------------------------ script

#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Script {
    Han,
    Latin,
}

impl Script {
    fn name(self) -> &'static str {
        match self {
            Script::Han => "Han",
            Script::Latin => "Latin",
        }
    }
}

/// The script a session language is written in; `None` for languages whose
/// script this check does not know (the check is then skipped).
pub fn expected_script(lang: &str) -> Option<Script> {
    let l = lang.to_ascii_lowercase();
    if l == "zh" || l.starts_with("zh-") || l.starts_with("zh_") {
        Some(Script::Han)
    } else if l == "en" || l.starts_with("en-") || l.starts_with("en_") {
        Some(Script::Latin)
    } else {
        None
    }
}

fn is_han(c: char) -> bool {
    matches!(c as u32, 0x3400..=0x4DBF | 0x4E00..=0x9FFF | 0xF900..=0xFAFF | 0x20000..=0x323AF)
}

fn is_latin(c: char) -> bool {
    c.is_ascii_alphabetic() || matches!(c as u32, 0xC0..=0x24F | 0x1E00..=0x1EFF)
}

/// `(share of words in script, number of words)`, where each CJK character is
/// a word and so is each run of other letters; `None` without any word.
/// Counting a Latin word (not letter) as one keeps a Chinese answer that
/// names "Principia Mathematica" Chinese.
pub fn script_ratio(text: &str, script: Script) -> Option<(f64, usize)> {
    let (mut total, mut hits, mut in_word) = (0usize, 0usize, false);
    for c in text.chars() {
        if is_cjk(c) {
            in_word = false;
            total += 1;
            hits += usize::from(script == Script::Han && is_han(c));
        } else if c.is_alphabetic() {
            if !in_word {
                total += 1;
                hits += usize::from(script == Script::Latin && is_latin(c));
            }
            in_word = true;
        } else {
            in_word = false;
        }
    }
    (total > 0).then(|| (hits as f64 / total as f64, total))
}

// -------------------------------------------------------------- repetition

/// Words for the repetition rules: runs of non-CJK alphanumerics, and single
/// CJK characters (Chinese has no spaces to split on).
fn repetition_tokens(text: &str) -> Vec<&str> {
    let mut out = Vec::new();
    let mut start: Option<usize> = None;
    for (i, c) in text.char_indices() {
        if is_word_char(c) {
            start.get_or_insert(i);
            continue;
        }
        if let Some(s) = start.take() {
            out.push(&text[s..i]);
        }
        if is_cjk(c) {
            out.push(&text[i..i + c.len_utf8()]);
        }
    }
    if let Some(s) = start {
        out.push(&text[s..]);
    }
    out
}

/// Every n-gram of `hashes` as (n-gram hash, start), sorted: equal n-grams
/// end up adjacent, the earliest occurrence first.
fn sorted_ngrams(hashes: &[u64], n: usize) -> Vec<(u64, u32)> {
    let mut grams: Vec<(u64, u32)> = hashes
        .windows(n)
        .enumerate()
        .map(|(i, w)| (w.iter().fold(n as u64, |h, &x| mix(h, x)), i as u32))
        .collect();
    grams.sort_unstable();
    grams
}

/// Runs of equal n-grams in a sorted list, as index ranges.
fn runs(grams: &[(u64, u32)]) -> impl Iterator<Item = std::ops::Range<usize>> + '_ {
    let mut start = 0;
    (1..=grams.len()).filter_map(move |k| {
        if k == grams.len() || grams[k].0 != grams[start].0 {
            let r = start..k;
            start = k;
            Some(r)
        } else {
            None
        }
    })
}

/// The Gopher repetition rules on an answer; the first one broken.
///
/// Perf: each word is hashed once and n-grams are folds of word hashes,
/// counted by sorting (no hash maps): about 10x faster than hashing every
/// n-gram's text into a map for each n.
pub fn repetition(text: &str, cfg: &FilterConfig) -> Option<Failure> {
    let lines: Vec<&str> = text.lines().map(str::trim).filter(|l| !l.is_empty()).collect();
    if lines.len() >= 2 && (cfg.dup_line_frac.is_some() || cfg.dup_line_char_frac.is_some()) {
        let mut seen = HashSet::new();
        let (mut dup, mut dup_chars, mut chars) = (0usize, 0usize, 0usize);
        for l in &lines {
            let n = l.chars().count();
            chars += n;
            if !seen.insert(*l) {
                dup += 1;
                dup_chars += n;
            }
        }
        let frac = dup as f64 / lines.len() as f64;
        if let Some(max) = cfg.dup_line_frac.filter(|&m| frac > m) {
            return fail(Reason::Repetition, format!("duplicate line fraction {frac:.2} > {max}"));
        }
        let frac = dup_chars as f64 / chars.max(1) as f64;
        if let Some(max) = cfg.dup_line_char_frac.filter(|&m| frac > m) {
            return fail(Reason::Repetition, format!("duplicate line character fraction {frac:.2} > {max}"));
        }
    }
    let words = repetition_tokens(text);
    if words.len() < cfg.repetition_min_words {
        return None;
    }
    let lens: Vec<usize> = words.iter().map(|w| w.chars().count()).collect();
    let total: usize = lens.iter().sum();
    if total == 0 {
        return None;
    }
    let hashes: Vec<u64> = words.iter().map(|w| xxh3_64(w.as_bytes())).collect();
    let span = |start: u32, n: usize| lens[start as usize..start as usize + n].iter().sum::<usize>();
    for (k, &max) in cfg.top_ngram_char_frac.iter().flatten().enumerate() {
        let n = k + 2;
        if words.len() < n {
            break;
        }
        let grams = sorted_ngrams(&hashes, n);
        let top = runs(&grams).filter(|r| r.len() >= 2).map(|r| r.len() * span(grams[r.start].1, n)).max().unwrap_or(0);
        let frac = top as f64 / total as f64;
        if frac > max {
            return fail(Reason::Repetition, format!("top {n}-gram character fraction {frac:.2} > {max}"));
        }
    }
    for (k, &max) in cfg.dup_ngram_char_frac.iter().flatten().enumerate() {
        let n = k + 5;
        if words.len() < n {
            break;
        }
        let grams = sorted_ngrams(&hashes, n);
        let mut covered = vec![false; words.len()];
        for r in runs(&grams) {
            for &(_, start) in &grams[r.start + 1..r.end] {
                covered[start as usize..start as usize + n].iter_mut().for_each(|c| *c = true);
            }
        }
        let dup: usize = covered.iter().zip(&lens).filter(|(c, _)| **c).map(|(_, l)| l).sum();
        let frac = dup as f64 / total as f64;
        if frac > max {
            return fail(Reason::Repetition, format!("duplicate {n}-gram character fraction {frac:.2} > {max}"));
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg() -> FilterConfig {
        FilterConfig {
            min_question_chars: Some(4),
            max_question_chars: Some(1000),
            min_answer_chars: Some(8),
            max_answer_chars: Some(4000),
            dup_line_frac: Some(0.3),
            dup_line_char_frac: Some(0.2),
            top_ngram_char_frac: Some(vec![0.2, 0.18, 0.16]),
            dup_ngram_char_frac: Some(vec![0.15, 0.14, 0.13, 0.12, 0.11, 0.10]),
            repetition_min_words: 12,
            leak_phrases: Some(vec![]),
            identity_break: Some(true),
            refusal_window_chars: Some(150),
            min_script_ratio: Some(0.5),
            script_min_words: 3,
            truncation_reasons: Some(vec!["length".into()]),
        }
    }

    const EN: SessionInfo = SessionInfo {
        lang: "en",
        system: "You are Isaac Newton, English physicist and mathematician",
        simulator: "Qwen/Qwen2.5-7B-Instruct",
    };
    const ZH: SessionInfo = SessionInfo { lang: "zh", system: "你是艾萨克·牛顿，英国物理学家", simulator: "smollm2" };

    fn check(s: SessionInfo, q: &str, a: &str, label: i8, fr: &str) -> Option<&'static str> {
        let t = Turn { session: 0, question: q, answer: a, rejection_label: Some(label), finish_reason: Some(fr) };
        check_turns(&[t], &[s], &cfg()).unwrap()[0].as_ref().map(|f| f.reason.code())
    }

    const GOOD_EN: &str = "My laws of motion describe how bodies move when forces act upon them.";

    #[test]
    fn good_turns_pass() {
        assert_eq!(check(EN, "What did you study?", GOOD_EN, 0, "stop"), None);
        assert_eq!(check(ZH, "你研究什么？", "我研究光学和运动定律，写下了《自然哲学的数学原理》。", 0, "stop"), None);
        assert_eq!(check(EN, "What is a smartphone?", "I have never heard of such a device, sir.", 1, "stop"), None);
        assert_eq!(check(ZH, "什么是智能手机？", "我从未听说过这种东西，在我那个时代并不存在。", 1, "stop"), None);
    }

    #[test]
    fn each_reason_code() {
        assert_eq!(check(EN, "  ", GOOD_EN, 0, "stop"), Some("empty_turn"));
        assert_eq!(check(EN, "Why?", GOOD_EN, 0, "length"), Some("truncated"));
        assert_eq!(check(EN, "Why?", "Yes.", 0, "stop"), Some("too_short"));
        assert_eq!(check(EN, "Why?", &"long ".repeat(900), 0, "stop"), Some("too_long"));
        assert_eq!(check(EN, "What did you study?", "我研究光学和运动定律，写下了很多书。", 0, "stop"), Some("language_mismatch"));
        assert_eq!(check(ZH, "你研究什么？", "I studied optics and the laws of motion.", 0, "stop"), Some("language_mismatch"));
        assert_eq!(check(EN, "Who are you?", "As an AI language model, I cannot be Newton.", 0, "stop"), Some("assistant_leak"));
        assert_eq!(check(ZH, "你是谁？", "作为一个人工智能，我无法扮演牛顿。", 0, "stop"), Some("assistant_leak"));
        assert_eq!(check(EN, "Who are you?", "I am Qwen2.5, here to help with physics.", 0, "stop"), Some("assistant_leak"));
        assert_eq!(check(EN, "Who are you?", "I am Albert Einstein, and I study relativity.", 0, "stop"), Some("identity_break"));
        assert_eq!(check(ZH, "你是谁？", "我叫爱因斯坦，研究相对论。", 0, "stop"), Some("identity_break"));
        let loop_text = "I studied the stars. ".repeat(10);
        assert_eq!(check(EN, "What did you study?", &loop_text, 0, "stop"), Some("repetition"));
        assert_eq!(check(EN, "What is a smartphone?", GOOD_EN, 1, "stop"), Some("label_mismatch"));
        assert_eq!(check(EN, "What did you study?", "I do not know what you mean by that.", 0, "stop"), Some("label_mismatch"));
        assert_eq!(check(ZH, "你研究什么？", "我不知道你在说什么，真抱歉啊。", 0, "stop"), Some("label_mismatch"));
    }

    #[test]
    fn identity_is_conservative() {
        for a in [
            "I am Isaac Newton, and gravity is my field.",
            "I am Sir Isaac Newton of Woolsthorpe.",
            "I am English, and proud of it.",
            "I am Prime Minister of nothing.",
            "I am not Einstein.",
            "My name is Newton.",
            "I am Lucasian Professor at Cambridge",
        ] {
            let claims = identity_claims(a);
            let label = Label::new("Isaac Newton");
            assert!(claims.iter().all(|c| label.matches(c)), "{a}: {claims:?}");
        }
        assert_eq!(identity_claims("My name is Leonardo da Vinci."), vec![Claim::Latin(vec![
            "Leonardo".into(),
            "da".into(),
            "Vinci".into()
        ])]);
        assert_eq!(identity_claims("I am Dr. John Watson, his friend."), vec![Claim::Latin(vec![
            "Dr".into(),
            "John".into(),
            "Watson".into()
        ])]);
        let zh = Label::new("毛泽东");
        assert!(identity_claims("我是毛主席的学生").iter().all(|c| zh.matches(c)));
        assert!(identity_claims("我叫毛润之。").iter().all(|c| zh.matches(c)));
        assert!(identity_claims("我是一个画家。").is_empty());
        assert!(identity_claims("我叫他离开。").is_empty());
        assert_eq!(identity_claims("我是阿尔伯特·爱因斯坦，"), vec![Claim::Cjk("阿尔伯特·爱因斯坦".into())]);
        assert!(!Label::new("艾萨克·牛顿").matches(&Claim::Cjk("阿尔伯特·爱因斯坦".into())));
        assert!(Label::new("艾萨克·牛顿").matches(&Claim::Cjk("牛顿".into())));
    }

    #[test]
    fn labels_from_system() {
        assert_eq!(role_label("You are Isaac Newton, physicist").as_deref(), Some("Isaac Newton"));
        assert_eq!(role_label("You are Isaac Newton.").as_deref(), Some("Isaac Newton"));
        assert_eq!(role_label("你是牛顿，物理学家").as_deref(), Some("牛顿"));
        assert_eq!(role_label("你是牛顿。").as_deref(), Some("牛顿"));
        assert_eq!(role_label("Pretend to be Newton"), None);
    }

    #[test]
    fn simulator_name_forms() {
        assert_eq!(simulator_names("Qwen/Qwen2.5-72B-Instruct"), vec!["qwen2.5", "qwen2.5-72b-instruct"]);
        assert_eq!(simulator_names("/m/SmolLM2-135M-Instruct.Q4_1.gguf"), vec!["smollm2", "smollm2-135m-instruct.q4_1"]);
        assert_eq!(simulator_names("gpt-4o-mini"), vec!["gpt 4o", "gpt-4o", "gpt-4o-mini"]);
        assert_eq!(simulator_names("runs/sft/step_300"), Vec::<String>::new());
        assert!(!simulator_names("llama-3.1-8b").contains(&"llama".to_string()));
    }

    #[test]
    fn phrase_boundaries() {
        assert!(contains_phrase("well, as an ai, i", "as an ai"));
        assert!(!contains_phrase("served as an aide to", "as an ai"));
        assert!(contains_phrase("作为ai，我", "作为ai"));
        let set = PhraseSet::new(["as an ai".to_string(), "我不知道".to_string()]);
        let hay = "served as an aide; as an ai, i";
        assert_eq!(set.find(hay, hay.len()), Some("as an ai"));
        assert_eq!(set.find(hay, 25), None);
        assert_eq!(set.find("嗯，我不知道", 100), Some("我不知道"));
        assert_eq!(canonical("I’m  AN\tAI"), "i'm an ai");
    }

    #[test]
    fn script_ratio_counts_words() {
        let (r, n) = script_ratio("我最喜欢的作品是Principia Mathematica。", Script::Han).unwrap();
        assert_eq!(n, 10);
        assert!((r - 0.8).abs() < 1e-9);
        assert_eq!(script_ratio("123 !!", Script::Latin), None);
    }

    #[test]
    fn canonical_ascii_path_matches_the_unicode_path() {
        for s in ["  Hello,\tWORLD!  I'm `an` AI\x0b\x0cok ", "As An AI language model...", "\r\n x  Y\n"] {
            // One non-ASCII character sends the text down the Unicode path.
            assert_eq!(format!("{} é", canonical(s)).trim_start(), canonical(&format!("{s} é")), "{s:?}");
        }
    }

    #[test]
    fn gopher_rules() {
        let c = cfg();
        assert!(repetition("one line\none line\nanother", &c).is_some());
        let natural = "I spent many years at Cambridge, studying light, motion and the heavens, \
                       and I wrote down what I found in a book that changed natural philosophy.";
        assert_eq!(repetition(natural, &c), None);
        let zh_loop = "我爱物理学。".repeat(6);
        assert_eq!(repetition(&zh_loop, &c).map(|f| f.reason), Some(Reason::Repetition));
        let config = FilterConfig::from_json(r#"{"min_question_chars": null}"#);
        assert!(matches!(config, Err(FilterError::Config(_))));
    }
}
