//! Deciding what a dump line is: a character, an entity some character's claims
//! point to, or neither.
//!
//! Perf notes: most lines of a dump are not characters, and parsing them
//! whole is the bulk of a naive filter's time. A class can only be named in a
//! P31 statement, and every P31 statement list starts with the key `"P31":[`;
//! a SIMD substring search finds those keys, and only the lists behind them
//! are searched for the class id, quoted (`"Q5"`) or in the legacy form
//! (`"numeric-id":5`). That halved the prefilter's time against searching
//! whole lines for the ids (which also let through lines that merely mention
//! Q5 elsewhere). Lines it rejects are checked to be UTF-8 and one JSON object
//! and parsed only up to the end of their `labels`, for the label store, so
//! damage further into such a line goes unnoticed.
use std::collections::HashMap;

use memchr::memmem::Finder;

use super::entity::{self, Depth, LangText, ParsedEntity, Wanted};
use super::labelstore::write_record;
use super::langs::Langs;
use super::values::RawValue;

/// One class an entity may be an instance of, with the category it gives.
pub struct Class {
    pub id: String,
    pub numeric: u64,
    pub category: u8,
}

/// Substring tests that any line holding one of the classes must pass.
pub struct Prefilter {
    p31_keys: [Finder<'static>; 2],
    quoted: Vec<Finder<'static>>,
    legacy: Vec<(Finder<'static>, usize)>,
}

impl Prefilter {
    pub fn new(classes: &[Class]) -> Prefilter {
        let quoted = classes.iter().map(|c| Finder::new(format!("\"{}\"", c.id).as_bytes()).into_owned()).collect();
        let mut legacy = Vec::new();
        for c in classes {
            for sep in [":", ": "] {
                let pat = format!("\"numeric-id\"{sep}{}", c.numeric);
                let len = pat.len();
                legacy.push((Finder::new(pat.as_bytes()).into_owned(), len));
            }
        }
        let p31_keys = [Finder::new(b"\"P31\":[").into_owned(), Finder::new(b"\"P31\": [").into_owned()];
        Prefilter { p31_keys, quoted, legacy }
    }

    /// False only when the line cannot have a P31 statement naming a class.
    pub fn may_match(&self, line: &[u8]) -> bool {
        self.p31_keys
            .iter()
            .any(|key| key.find_iter(line).any(|at| self.names_a_class(&line[at + key.needle().len() - 1..])))
    }

    /// Whether the JSON array at the start of `rest` mentions a class.
    fn names_a_class(&self, rest: &[u8]) -> bool {
        let list = &rest[..array_len(rest)];
        if self.quoted.iter().any(|f| f.find(list).is_some()) {
            return true;
        }
        // `"numeric-id":5` must not be the start of `"numeric-id":57`.
        self.legacy.iter().any(|(f, len)| f.find_iter(list).any(|at| !list.get(at + len).is_some_and(u8::is_ascii_digit)))
    }
}

/// The length of the JSON array (or object) that `s` starts with, skipping
/// strings; all of `s` when it is cut short.
fn array_len(s: &[u8]) -> usize {
    let mut depth = 0usize;
    let mut i = 0;
    while i < s.len() {
        match s[i] {
            b'"' => {
                i += 1;
                while i < s.len() && s[i] != b'"' {
                    i += if s[i] == b'\\' { 2 } else { 1 };
                }
            }
            b'[' | b'{' => depth += 1,
            b']' | b'}' => {
                depth = depth.saturating_sub(1);
                if depth == 0 {
                    return (i + 1).min(s.len());
                }
            }
            _ => {}
        }
        i += 1;
    }
    s.len()
}

/// The category of an entity: the first class (in priority order) among its
/// non-deprecated P31 values.
pub fn classify(e: &ParsedEntity, classes: &[Class]) -> Option<u8> {
    if e.kind != entity::Kind::Item {
        return None;
    }
    let p31: Vec<String> = e
        .claims
        .iter()
        .filter(|(p, _)| p == "P31")
        .flat_map(|(_, stmts)| stmts.iter())
        .filter(|s| !s.deprecated())
        .filter_map(|s| match RawValue::from_snak(&s.mainsnak)? {
            RawValue::Entity(id) => Some(id),
            _ => None,
        })
        .collect();
    classes.iter().find(|c| p31.contains(&c.id)).map(|c| c.category)
}

/// What a character keeps in one requested language.
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct LangFields {
    pub label: String,
    pub description: String,
    pub aliases: Vec<String>,
    pub title: Option<String>,
}

/// A selected entity, before its claim values are named.
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Candidate {
    pub id: String,
    /// The number in the id, for tie-breaking (`u64::MAX` if it has none).
    pub numeric: u64,
    pub category: u8,
    pub sitelinks: u32,
    /// Per requested language; `None` when the entity has no label there.
    pub langs: Vec<Option<LangFields>>,
    /// (property, value) in the configured property order, deprecated ones left out.
    pub claims: Vec<(String, RawValue)>,
    /// Whether the candidate is among the kept top N, per requested language.
    pub kept: Vec<bool>,
}

pub fn numeric_id(id: &str) -> u64 {
    id.get(1..).and_then(|n| n.parse().ok()).unwrap_or(u64::MAX)
}

fn first_in<'a>(chain: &[u8], texts: &'a [LangText]) -> Option<&'a str> {
    chain.iter().find_map(|l| texts.iter().find(|(i, _)| i == l).map(|(_, t)| t.as_str()))
}

/// Builds the candidate for a classified entity.
pub fn candidate(e: ParsedEntity, category: u8, langs: &Langs, properties: &[String]) -> Candidate {
    let mut row_langs = Vec::with_capacity(langs.requested.len());
    for (r, _) in langs.requested.iter().enumerate() {
        let chain = &langs.own_chain[r];
        let fields = first_in(chain, &e.labels).map(|label| {
            let mut aliases: Vec<String> = Vec::new();
            for l in chain {
                for (_, list) in e.aliases.iter().filter(|(i, _)| i == l) {
                    for a in list {
                        if a != label && !aliases.contains(a) {
                            aliases.push(a.clone());
                        }
                    }
                }
            }
            LangFields {
                label: label.to_owned(),
                description: first_in(chain, &e.descriptions).unwrap_or("").to_owned(),
                aliases,
                title: e.titles.iter().find(|(i, _)| usize::from(*i) == r).map(|(_, t)| t.clone()),
            }
        });
        row_langs.push(fields);
    }
    let mut by_prop: HashMap<&str, Vec<RawValue>> = HashMap::new();
    for (p, stmts) in &e.claims {
        let values = by_prop.entry(p.as_str()).or_default();
        for s in stmts.iter().filter(|s| !s.deprecated()) {
            if let Some(v) = RawValue::from_snak(&s.mainsnak) {
                if !values.contains(&v) {
                    values.push(v);
                }
            }
        }
    }
    let mut claims = Vec::new();
    for p in properties {
        if let Some(values) = by_prop.remove(p.as_str()) {
            claims.extend(values.into_iter().map(|v| (p.clone(), v)));
        }
    }
    Candidate {
        numeric: numeric_id(&e.id),
        id: e.id,
        category,
        sitelinks: e.sitelinks,
        kept: vec![false; row_langs.len()],
        langs: row_langs,
        claims,
    }
}

/// The ids whose labels a candidate's rows need: its properties and the
/// entities and units its values point to.
pub fn references(c: &Candidate) -> Vec<&str> {
    let mut out: Vec<&str> = Vec::new();
    for (p, v) in &c.claims {
        for id in [Some(p.as_str()), v.referenced()].into_iter().flatten() {
            if !out.contains(&id) {
                out.push(id);
            }
        }
    }
    out
}

/// The result of looking at one line.
pub enum Outcome {
    /// Blank, or a line the pass does not need.
    Skip,
    /// The `[` or `]` line around a dump.
    Open,
    Close,
    InvalidUtf8,
    Malformed,
    /// An entity that is not a character: its label-store record (may be empty).
    Labels(Vec<u8>),
    /// A selected entity, its id and its label-store record.
    Candidate(Box<Candidate>, String, Vec<u8>),
}

/// The text of a line without surrounding whitespace and the dump's trailing comma.
pub fn trim_line(raw: &[u8]) -> &[u8] {
    let mut s = raw.trim_ascii();
    if let Some(rest) = s.strip_suffix(b",") {
        s = rest.trim_ascii_end();
    }
    s
}

/// Looks at one line: a character (with its labels), another entity's
/// labels, or bad input.
pub fn select_line(
    raw: &[u8],
    prefilter: &Prefilter,
    wanted: &Wanted,
    classes: &[Class],
    langs: &Langs,
    properties: &[String],
) -> Outcome {
    let line = trim_line(raw);
    match line {
        b"" => return Outcome::Skip,
        b"[" => return Outcome::Open,
        b"]" => return Outcome::Close,
        _ => {}
    }
    let Ok(text) = std::str::from_utf8(line) else {
        return Outcome::InvalidUtf8;
    };
    if !(line.starts_with(b"{") && line.ends_with(b"}")) {
        return Outcome::Malformed;
    }
    let mut record = Vec::new();
    if !prefilter.may_match(line) && entity::fast_record(line, wanted, &mut record).is_some() {
        return Outcome::Labels(record);
    }
    let parsed = if prefilter.may_match(line) { entity::parse(text, wanted, Depth::Full) } else { entity::parse_labels(text, wanted) };
    let Ok(e) = parsed else {
        return Outcome::Malformed;
    };
    write_record(&e.id, &e.labels, &mut record);
    match classify(&e, classes) {
        Some(category) => {
            let id = e.id.clone();
            Outcome::Candidate(Box::new(candidate(e, category, langs, properties)), id, record)
        }
        None => Outcome::Labels(record),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn classes() -> Vec<Class> {
        vec![
            Class { id: "Q15632617".into(), numeric: 15632617, category: 1 },
            Class { id: "Q5".into(), numeric: 5, category: 0 },
        ]
    }

    #[test]
    fn prefilter_finds_modern_and_legacy_forms_in_p31_only() {
        let p = Prefilter::new(&classes());
        let p31 = |v: &str| format!(r#"{{"claims":{{"P31":[{{"mainsnak":{{"datavalue":{{"value":{v}}}}}}}],"P1":[]}}}}"#);
        assert!(p.may_match(p31(r#"{"entity-type":"item","numeric-id":5,"id":"Q5"}"#).as_bytes()));
        assert!(p.may_match(p31(r#"{"numeric-id":5,"entity-type":"item"}"#).as_bytes()));
        assert!(p.may_match(p31(r#"{"numeric-id": 15632617}"#).as_bytes()));
        assert!(p.may_match(br#"{"claims": {"P31": [{"mainsnak": {"datavalue": {"value": {"id": "Q5"}}}}]}}"#));
        assert!(!p.may_match(p31(r#"{"numeric-id":57,"id":"Q57"}"#).as_bytes()));
        // Q5 outside P31 (here as an occupation, and in text) does not count.
        assert!(!p.may_match(br#"{"claims":{"P31":[{"id":"Q515"}],"P106":[{"id":"Q5"}]},"labels":{"en":{"value":"\"P31\":[\"Q5\"]"}}}"#));
        assert!(!p.may_match(br#"{"labels":{"en":{"value":"Q5"}}}"#));
    }

    #[test]
    fn array_len_skips_strings() {
        assert_eq!(array_len(br#"[{"a":"]}"},[1]],"x""#), 16);
        assert_eq!(array_len(b"[1,2"), 4);
    }

    #[test]
    fn trims_dump_punctuation() {
        assert_eq!(trim_line(b"{\"a\":1},\r"), b"{\"a\":1}");
        assert_eq!(trim_line(b"  [ "), b"[");
    }

    #[test]
    fn fictional_wins_and_deprecated_is_ignored() {
        let langs = Langs::new(&["en".to_string()]);
        let wanted = langs.wanted(&[]);
        let st = |id: &str, rank: &str| {
            format!(r#"{{"mainsnak":{{"snaktype":"value","property":"P31","datavalue":{{"value":{{"id":"{id}"}},"type":"wikibase-entityid"}}}},"rank":"{rank}"}}"#)
        };
        let line = |stmts: Vec<String>| format!(r#"{{"type":"item","id":"Q9","claims":{{"P31":[{}]}}}}"#, stmts.join(","));
        let parse = |l: &str| entity::parse(l, &wanted, Depth::Full).unwrap();
        let both = parse(&line(vec![st("Q5", "normal"), st("Q15632617", "normal")]));
        assert_eq!(classify(&both, &classes()), Some(1));
        let deprecated = parse(&line(vec![st("Q5", "deprecated"), st("Q215627", "normal")]));
        assert_eq!(classify(&deprecated, &classes()), None);
        let human = parse(&line(vec![st("Q5", "preferred")]));
        assert_eq!(classify(&human, &classes()), Some(0));
    }
}
