//! Parsing one entity line, keeping only what the scan asks for.
//!
//! Perf notes: a human has labels in a hundred languages and dozens of
//! external-id claims; deserializing them into maps costs more than the rest of
//! the scan. The seeds below walk the JSON once and skip (`IgnoredAny`) every
//! language, site and property that was not requested. Entities that cannot
//! match a class never reach this parser at all (see `select.rs`).
use std::borrow::Cow;
use std::cell::RefCell;
use std::collections::{HashMap, HashSet};
use std::fmt;

use serde::de::{self, DeserializeSeed, Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};
use serde::Deserialize;

/// FNV-1a: these maps are looked up for every language key of every line,
/// with keys of a few bytes, where SipHash's setup cost dominated.
#[derive(Default, Clone, Copy)]
pub struct Fnv(u64);

impl std::hash::Hasher for Fnv {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        let mut h = if self.0 == 0 { 0xcbf2_9ce4_8422_2325 } else { self.0 };
        for b in bytes {
            h = (h ^ u64::from(*b)).wrapping_mul(0x100_0000_01b3);
        }
        self.0 = h;
    }
}

pub type FastMap<K, V> = HashMap<K, V, std::hash::BuildHasherDefault<Fnv>>;
pub type FastSet<K> = HashSet<K, std::hash::BuildHasherDefault<Fnv>>;

/// What to keep from each entity. Built once per scan.
pub struct Wanted {
    /// Language codes whose labels, descriptions and aliases are kept.
    pub langs: FastMap<String, u8>,
    /// Wiki site ids (`enwiki`) whose titles are kept, to their requested-language index.
    pub sites: FastMap<String, u8>,
    /// Claim properties kept (P31 is always kept, for the class test).
    pub props: FastSet<String>,
}

/// The entity types the scan tells apart.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Kind {
    Item,
    Property,
    #[default]
    Other,
}

impl Kind {
    fn of(s: &str) -> Kind {
        match s {
            "item" => Kind::Item,
            "property" => Kind::Property,
            _ => Kind::Other,
        }
    }
}

/// A kept language string: (index into the scan's language table, text).
pub type LangText = (u8, String);

#[derive(Debug, Default)]
pub struct ParsedEntity {
    pub id: String,
    pub kind: Kind,
    pub labels: Vec<LangText>,
    pub descriptions: Vec<LangText>,
    pub aliases: Vec<(u8, Vec<String>)>,
    /// Kept properties with their statements, in file order.
    pub claims: Vec<(String, Vec<Statement>)>,
    /// Number of sitelinks of every site.
    pub sitelinks: u32,
    pub titles: Vec<LangText>,
}

#[derive(Debug, Deserialize)]
pub struct Statement {
    pub mainsnak: Snak,
    #[serde(default)]
    pub rank: Option<Rank>,
}

// Perf notes: the claim structures below deserialize into enums and a flat
// struct of the few fields the scan reads; `serde_json::Value` for every
// datavalue cost a map and a dozen small allocations per statement.

#[derive(Debug, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum Rank {
    Preferred,
    Normal,
    Deprecated,
    #[serde(other)]
    Other,
}

impl Statement {
    pub fn deprecated(&self) -> bool {
        self.rank == Some(Rank::Deprecated)
    }
}

#[derive(Debug, Deserialize)]
pub struct Snak {
    pub snaktype: SnakType,
    #[serde(default)]
    pub datavalue: Option<DataValue>,
}

#[derive(Debug, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum SnakType {
    Value,
    Somevalue,
    Novalue,
    #[serde(other)]
    Other,
}

#[derive(Debug, Deserialize)]
pub struct DataValue {
    pub value: Value,
    #[serde(rename = "type")]
    pub kind: DataType,
}

#[derive(Debug, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "kebab-case")]
pub enum DataType {
    WikibaseEntityid,
    Time,
    Quantity,
    Monolingualtext,
    Globecoordinate,
    String,
    #[serde(other)]
    Other,
}

/// The fields of a datavalue's `value` that the scan reads, whatever its type.
#[derive(Debug, Default)]
pub struct Value {
    /// A string value, or a monolingual text's `text`.
    pub text: Option<String>,
    pub id: Option<String>,
    pub numeric_id: Option<u64>,
    pub entity_type: Option<String>,
    pub time: Option<String>,
    pub precision: Option<f64>,
    pub julian: bool,
    pub amount: Option<String>,
    pub unit: Option<String>,
    pub latitude: Option<f64>,
    pub longitude: Option<f64>,
}

const JULIAN: &str = "Q1985786";

impl<'de> Deserialize<'de> for Value {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Value;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a datavalue value")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Value, E> {
                Ok(Value { text: Some(v.to_owned()), ..Value::default() })
            }
            fn visit_string<E: de::Error>(self, v: String) -> Result<Value, E> {
                Ok(Value { text: Some(v), ..Value::default() })
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Value, A::Error> {
                let mut v = Value::default();
                while let Some(Key(k)) = map.next_key::<Key>()? {
                    match k.as_ref() {
                        "id" => v.id = map.next_value()?,
                        "numeric-id" => v.numeric_id = map.next_value()?,
                        "entity-type" => v.entity_type = map.next_value()?,
                        "time" => v.time = map.next_value()?,
                        "precision" => v.precision = map.next_value()?,
                        "calendarmodel" => v.julian = map.next_value::<Option<Key>>()?.is_some_and(|c| c.0.ends_with(JULIAN)),
                        "amount" => v.amount = map.next_value()?,
                        "unit" => v.unit = map.next_value()?,
                        "text" => v.text = map.next_value()?,
                        "latitude" => v.latitude = map.next_value()?,
                        "longitude" => v.longitude = map.next_value()?,
                        _ => {
                            map.next_value::<IgnoredAny>()?;
                        }
                    }
                }
                Ok(v)
            }
            // Any other shape (a number, a list) carries nothing the scan reads.
            fn visit_seq<A: SeqAccess<'de>>(self, seq: A) -> Result<Value, A::Error> {
                empty_seq(seq)
            }
            fn visit_u64<E: de::Error>(self, _: u64) -> Result<Value, E> {
                Ok(Value::default())
            }
            fn visit_i64<E: de::Error>(self, _: i64) -> Result<Value, E> {
                Ok(Value::default())
            }
            fn visit_f64<E: de::Error>(self, _: f64) -> Result<Value, E> {
                Ok(Value::default())
            }
            fn visit_bool<E: de::Error>(self, _: bool) -> Result<Value, E> {
                Ok(Value::default())
            }
            fn visit_unit<E: de::Error>(self) -> Result<Value, E> {
                Ok(Value::default())
            }
        }
        d.deserialize_any(V)
    }
}

/// How much of an entity to parse.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Depth {
    /// id and labels only: enough to name an entity that a claim points to.
    Labels,
    /// everything a character row needs.
    Full,
}

/// Parses one entity line. `Err` means the line is not valid JSON of the
/// expected shape.
pub fn parse(line: &str, wanted: &Wanted, depth: Depth) -> Result<ParsedEntity, serde_json::Error> {
    let mut de = serde_json::Deserializer::from_str(line);
    let early = RefCell::new(None);
    match (EntitySeed { wanted, depth, early: &early }).deserialize(&mut de) {
        Ok(e) => {
            de.end()?;
            Ok(e)
        }
        // A labels-only parse stops once it has the id, type and labels.
        Err(err) => early.into_inner().ok_or(err),
    }
}

/// The id, type and labels of an entity line, by the fast path when the line
/// has the dump's layout, else by the parser (see `fast_scan`).
pub fn parse_labels(line: &str, wanted: &Wanted) -> Result<ParsedEntity, serde_json::Error> {
    let mut e = ParsedEntity::default();
    let fast = fast_scan(line.as_bytes(), wanted, &mut |i, quoted| {
        // The value as written (a JSON string literal), decoded only if escaped.
        let body = &quoted[1..quoted.len() - 1];
        let text = match std::str::from_utf8(body) {
            Ok(t) if !body.contains(&b'\\') => Some(t.to_owned()),
            _ => serde_json::from_slice::<String>(quoted).ok(),
        };
        e.labels.extend(text.map(|t| (i, t)));
    });
    match fast {
        Some((id, kind)) => {
            e.id = id.to_owned();
            e.kind = kind;
            Ok(e)
        }
        None => parse(line, wanted, Depth::Labels),
    }
}

/// The label-store record of an entity line (see `labelstore`), written to
/// `out` straight from the line's bytes when it has the dump's layout; `None`
/// (with `out` untouched) otherwise.
pub fn fast_record(line: &[u8], wanted: &Wanted, out: &mut Vec<u8>) -> Option<()> {
    let mark = out.len();
    let mut labels: Vec<u8> = Vec::new();
    let found = fast_scan(line, wanted, &mut |i, quoted| {
        labels.push(if labels.is_empty() { b'[' } else { b',' });
        labels.push(b'[');
        if i >= 100 {
            labels.push(b'0' + i / 100);
        }
        if i >= 10 {
            labels.push(b'0' + i / 10 % 10);
        }
        labels.push(b'0' + i % 10);
        labels.push(b',');
        // Already a JSON string literal: copied as it is, escapes and all.
        labels.extend_from_slice(quoted);
        labels.push(b']');
    });
    let (id, _) = found?;
    if !labels.is_empty() {
        out.truncate(mark);
        out.extend_from_slice(b"[\"");
        out.extend_from_slice(id.as_bytes());
        out.extend_from_slice(b"\",");
        out.extend_from_slice(&labels);
        out.extend_from_slice(b"]]\n");
    }
    Some(())
}

/// Perf notes: most lines are read only for their labels, and the JSON
/// tokenizer spent most of that time stepping over the hundred languages no
/// one asked for (and allocating the rest). Dump lines all start the same way,
/// `{"type":"item","id":"Q31","labels":{"en":{"language":"en","value":"…"},…}`,
/// so this reads that layout directly, jumping over unwanted values with a
/// byte search and handing each wanted value to `on_label` as the JSON string
/// literal it is in the line. Anything else (another key order, whitespace, an
/// escaped key) returns `None`, and callers fall back to the parser.
fn fast_scan<'a>(b: &'a [u8], wanted: &Wanted, on_label: &mut dyn FnMut(u8, &'a [u8])) -> Option<(&'a str, Kind)> {
    struct Cur<'a> {
        b: &'a [u8],
        i: usize,
    }
    impl<'a> Cur<'a> {
        fn eat(&mut self, lit: &[u8]) -> Option<()> {
            self.b.get(self.i..)?.starts_with(lit).then(|| self.i += lit.len())
        }
        /// A string without escapes, after its opening quote.
        fn plain_str(&mut self) -> Option<&'a str> {
            let rest = self.b.get(self.i..)?;
            let end = memchr::memchr2(b'"', b'\\', rest)?;
            if rest[end] != b'"' {
                return None;
            }
            self.i += end + 1;
            std::str::from_utf8(&rest[..end]).ok()
        }
        /// Skips a string body after its opening quote.
        fn skip_str(&mut self) -> Option<()> {
            loop {
                let at = self.i + memchr::memchr2(b'"', b'\\', self.b.get(self.i..)?)?;
                if self.b[at] == b'\\' {
                    self.i = at + 2;
                } else {
                    self.i = at + 1;
                    return Some(());
                }
            }
        }
    }
    let mut c = Cur { b, i: 0 };
    c.eat(b"{")?;
    let (mut id, mut kind) = (None, None);
    // Top-level keys before "labels": plain string values only.
    loop {
        c.eat(b"\"")?;
        let key = c.plain_str()?;
        c.eat(b":")?;
        if key == "labels" {
            break;
        }
        c.eat(b"\"")?;
        let value = c.plain_str()?;
        match key {
            "type" => kind = Some(Kind::of(value)),
            "id" => id = Some(value),
            "datatype" => {}
            _ => return None,
        }
        c.eat(b",")?;
    }
    let found = (id.filter(|i| !i.is_empty())?, kind?);
    if c.eat(b"[]").is_some() {
        return Some(found);
    }
    c.eat(b"{")?;
    if c.eat(b"}").is_some() {
        return Some(found);
    }
    loop {
        c.eat(b"\"")?;
        let lang = c.plain_str()?;
        c.eat(b":{\"language\":\"")?;
        c.skip_str()?;
        c.eat(b",\"value\":\"")?;
        let start = c.i - 1;
        c.skip_str()?;
        if let Some(&i) = wanted.langs.get(lang) {
            on_label(i, &b[start..c.i]);
        }
        c.eat(b"}")?;
        if c.eat(b"}").is_some() {
            return Some(found);
        }
        c.eat(b",")?;
    }
}

struct EntitySeed<'w> {
    wanted: &'w Wanted,
    depth: Depth,
    /// Where a labels-only parse leaves its result when it stops early.
    early: &'w RefCell<Option<ParsedEntity>>,
}

/// A map key that borrows from the input when it can.
struct Key<'de>(Cow<'de, str>);

impl<'de> Deserialize<'de> for Key<'de> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Key<'de>;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a string key")
            }
            fn visit_borrowed_str<E: de::Error>(self, v: &'de str) -> Result<Key<'de>, E> {
                Ok(Key(Cow::Borrowed(v)))
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Key<'de>, E> {
                Ok(Key(Cow::Owned(v.to_owned())))
            }
        }
        d.deserialize_str(V)
    }
}

impl<'de> DeserializeSeed<'de> for EntitySeed<'_> {
    type Value = ParsedEntity;
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<ParsedEntity, D::Error> {
        d.deserialize_map(self)
    }
}

impl<'de> Visitor<'de> for EntitySeed<'_> {
    type Value = ParsedEntity;
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a Wikidata entity object")
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<ParsedEntity, A::Error> {
        let mut e = ParsedEntity::default();
        let (mut has_id, mut has_type) = (false, false);
        let full = self.depth == Depth::Full;
        while let Some(Key(k)) = map.next_key::<Key>()? {
            match k.as_ref() {
                "id" => {
                    e.id = map.next_value::<String>()?;
                    has_id = true;
                }
                "type" => {
                    e.kind = Kind::of(&map.next_value::<Key>()?.0);
                    has_type = true;
                }
                "labels" => {
                    e.labels = map.next_value_seed(LangMapSeed(self.wanted))?;
                    if !full && has_id && has_type {
                        // Perf: the rest of the line (claims, sitelinks) is not needed;
                        // skipping even with IgnoredAny costs as much as the labels.
                        *self.early.borrow_mut() = Some(e);
                        return Err(de::Error::custom("stopped after labels"));
                    }
                }
                "descriptions" if full => e.descriptions = map.next_value_seed(LangMapSeed(self.wanted))?,
                "aliases" if full => e.aliases = map.next_value_seed(AliasMapSeed(self.wanted))?,
                "claims" if full => e.claims = map.next_value_seed(ClaimsSeed(self.wanted))?,
                "sitelinks" if full => {
                    let (n, titles) = map.next_value_seed(SitelinksSeed(self.wanted))?;
                    e.sitelinks = n;
                    e.titles = titles;
                }
                _ => {
                    map.next_value::<IgnoredAny>()?;
                }
            }
        }
        if !has_id {
            return Err(de::Error::missing_field("id"));
        }
        if !has_type {
            return Err(de::Error::missing_field("type"));
        }
        Ok(e)
    }
}

/// Wikibase writes an empty map as `[]`; accept that as "nothing".
fn empty_seq<'de, A: SeqAccess<'de>, T: Default>(mut seq: A) -> Result<T, A::Error> {
    while seq.next_element::<IgnoredAny>()?.is_some() {}
    Ok(T::default())
}

#[derive(Deserialize)]
struct Term {
    value: String,
}

struct LangMapSeed<'w>(&'w Wanted);

impl<'de> DeserializeSeed<'de> for LangMapSeed<'_> {
    type Value = Vec<LangText>;
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for LangMapSeed<'_> {
    type Value = Vec<LangText>;
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a map of language to term")
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        let mut out = Vec::new();
        while let Some(Key(k)) = map.next_key::<Key>()? {
            match self.0.langs.get(k.as_ref()) {
                Some(&i) => out.push((i, map.next_value::<Term>()?.value)),
                None => {
                    map.next_value::<IgnoredAny>()?;
                }
            }
        }
        Ok(out)
    }
    fn visit_seq<A: SeqAccess<'de>>(self, seq: A) -> Result<Self::Value, A::Error> {
        empty_seq(seq)
    }
}

struct AliasMapSeed<'w>(&'w Wanted);

impl<'de> DeserializeSeed<'de> for AliasMapSeed<'_> {
    type Value = Vec<(u8, Vec<String>)>;
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for AliasMapSeed<'_> {
    type Value = Vec<(u8, Vec<String>)>;
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a map of language to aliases")
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        let mut out = Vec::new();
        while let Some(Key(k)) = map.next_key::<Key>()? {
            match self.0.langs.get(k.as_ref()) {
                Some(&i) => {
                    let terms = map.next_value::<Vec<Term>>()?;
                    out.push((i, terms.into_iter().map(|t| t.value).collect()));
                }
                None => {
                    map.next_value::<IgnoredAny>()?;
                }
            }
        }
        Ok(out)
    }
    fn visit_seq<A: SeqAccess<'de>>(self, seq: A) -> Result<Self::Value, A::Error> {
        empty_seq(seq)
    }
}

struct ClaimsSeed<'w>(&'w Wanted);

impl<'de> DeserializeSeed<'de> for ClaimsSeed<'_> {
    type Value = Vec<(String, Vec<Statement>)>;
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for ClaimsSeed<'_> {
    type Value = Vec<(String, Vec<Statement>)>;
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a map of property to statements")
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        let mut out = Vec::new();
        while let Some(Key(k)) = map.next_key::<Key>()? {
            if k == "P31" || self.0.props.contains(k.as_ref()) {
                out.push((k.into_owned(), map.next_value::<Vec<Statement>>()?));
            } else {
                map.next_value::<IgnoredAny>()?;
            }
        }
        Ok(out)
    }
    fn visit_seq<A: SeqAccess<'de>>(self, seq: A) -> Result<Self::Value, A::Error> {
        empty_seq(seq)
    }
}

struct SitelinksSeed<'w>(&'w Wanted);

impl<'de> DeserializeSeed<'de> for SitelinksSeed<'_> {
    type Value = (u32, Vec<LangText>);
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for SitelinksSeed<'_> {
    type Value = (u32, Vec<LangText>);
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a map of site to sitelink")
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        #[derive(Deserialize)]
        struct Link {
            title: String,
        }
        let mut n = 0u32;
        let mut titles = Vec::new();
        while let Some(Key(k)) = map.next_key::<Key>()? {
            n += 1;
            match self.0.sites.get(k.as_ref()) {
                Some(&i) => titles.push((i, map.next_value::<Link>()?.title)),
                None => {
                    map.next_value::<IgnoredAny>()?;
                }
            }
        }
        Ok((n, titles))
    }
    fn visit_seq<A: SeqAccess<'de>>(self, seq: A) -> Result<Self::Value, A::Error> {
        empty_seq(seq)
    }
}

/// The entity id of a `wikibase-entityid` value: `id`, or, in the legacy form
/// that has only `numeric-id`, the prefix for its `entity-type` and the number.
pub fn entity_id(value: &Value) -> Option<String> {
    if let Some(id) = &value.id {
        return Some(id.clone());
    }
    let n = value.numeric_id?;
    let prefix = match value.entity_type.as_deref().unwrap_or("item") {
        "item" => 'Q',
        "property" => 'P',
        "lexeme" => 'L',
        _ => return None,
    };
    Some(format!("{prefix}{n}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn wanted() -> Wanted {
        Wanted {
            langs: [("en".to_string(), 0u8), ("zh".to_string(), 1), ("mul".to_string(), 2)].into_iter().collect(),
            sites: [("enwiki".to_string(), 0u8), ("zhwiki".to_string(), 1)].into_iter().collect(),
            props: ["P21".to_string()].into_iter().collect(),
        }
    }

    #[test]
    fn keeps_only_wanted_parts() {
        let line = r#"{"type":"item","id":"Q1","labels":{"en":{"language":"en","value":"One"},"fr":{"language":"fr","value":"Un"},"zh":{"language":"zh","value":"\u4e00"}},"descriptions":[],"aliases":{"en":[{"language":"en","value":"Uno"}]},"claims":{"P31":[{"mainsnak":{"snaktype":"value","property":"P31","datavalue":{"value":{"entity-type":"item","numeric-id":5,"id":"Q5"},"type":"wikibase-entityid"}},"type":"statement","rank":"normal"}],"P999":[{"mainsnak":{"snaktype":"novalue","property":"P999"},"rank":"normal"}],"P21":[{"mainsnak":{"snaktype":"somevalue","property":"P21"},"rank":"deprecated"}]},"sitelinks":{"enwiki":{"site":"enwiki","title":"One","badges":[]},"dewiki":{"site":"dewiki","title":"Eins","badges":[]}}}"#;
        let e = parse(line, &wanted(), Depth::Full).unwrap();
        assert_eq!(e.id, "Q1");
        assert_eq!(e.kind, Kind::Item);
        assert_eq!(e.labels, vec![(0, "One".to_string()), (1, "一".to_string())]);
        assert!(e.descriptions.is_empty());
        assert_eq!(e.aliases, vec![(0, vec!["Uno".to_string()])]);
        assert_eq!(e.claims.iter().map(|(p, _)| p.as_str()).collect::<Vec<_>>(), ["P31", "P21"]);
        assert!(e.claims[1].1[0].deprecated());
        assert_eq!(e.sitelinks, 2);
        assert_eq!(e.titles, vec![(0, "One".to_string())]);
        let l = parse(line, &wanted(), Depth::Labels).unwrap();
        assert!(l.claims.is_empty() && l.sitelinks == 0 && l.labels.len() == 2);
        // A labels-only parse does not read past the labels.
        let cut = &line[..line.find("\"descriptions\"").unwrap() + 20];
        assert_eq!(parse(cut, &wanted(), Depth::Labels).unwrap().labels, l.labels);
        assert!(parse(cut, &wanted(), Depth::Full).is_err());
    }

    #[test]
    fn fast_path_agrees_with_the_parser() {
        let w = wanted();
        let lines = [
            r#"{"type":"item","id":"Q1","labels":{"fr":{"language":"fr","value":"Un"},"en":{"language":"en","value":"One"},"zh":{"language":"zh","value":"\u4e00 \"q\" \\ end"}},"claims":{}}"#,
            r#"{"type":"property","datatype":"wikibase-item","id":"P31","labels":{"en":{"language":"en","value":"instance of"}}}"#,
            r#"{"type":"item","id":"Q2","labels":[],"descriptions":[]}"#,
            r#"{"type":"item","id":"Q3","labels":{},"x":1}"#,
            r#"{"type":"item","id":"Q4","labels":{"mul":{"language":"mul","value":"Douglas Adams"},"en-gb":{"language":"en-gb","value":"x\\"}}}"#,
        ];
        for line in lines {
            assert!(fast_scan(line.as_bytes(), &w, &mut |_, _| {}).is_some(), "fast path declined {line}");
            let fast = parse_labels(line, &w).unwrap();
            let slow = parse(line, &w, Depth::Labels).unwrap();
            assert_eq!((&fast.id, fast.kind, &fast.labels), (&slow.id, slow.kind, &slow.labels), "{line}");
            // The raw record reads back as the same labels.
            let mut rec = Vec::new();
            fast_record(line.as_bytes(), &w, &mut rec).unwrap();
            if slow.labels.is_empty() {
                assert!(rec.is_empty());
            } else {
                let (id, labels): (String, Vec<LangText>) = serde_json::from_slice(&rec).unwrap();
                assert_eq!((id, labels), (slow.id, slow.labels), "{line}");
            }
        }
        assert_eq!(parse_labels(lines[0], &w).unwrap().labels[1].1, "一 \"q\" \\ end");
        // Other layouts go to the parser.
        for line in [
            r#"{"id":"Q1","sitelinks":{},"type":"item","labels":{}}"#,
            r#"{"type": "item", "id": "Q1", "labels": {}}"#,
            r#"{"pageid":1,"type":"item","id":"Q1","labels":{}}"#,
            r#"{"type":"item","id":"Q1","labels":{"en":{"value":"One","language":"en"}}}"#,
        ] {
            assert!(fast_scan(line.as_bytes(), &w, &mut |_, _| {}).is_none(), "{line}");
        }
        // A cut line is not accepted by either.
        let cut = &lines[0][..60];
        assert!(fast_scan(cut.as_bytes(), &w, &mut |_, _| {}).is_none() && parse(cut, &w, Depth::Labels).is_err());
    }

    #[test]
    fn rejects_broken_or_foreign_json() {
        assert!(parse(r#"{"type":"item","id":"Q1","labels":{"#, &wanted(), Depth::Full).is_err());
        assert!(parse(r#"{"name":"not an entity"}"#, &wanted(), Depth::Full).is_err());
        assert!(parse(r#"{"type":"item","id":"Q1"} trailing"#, &wanted(), Depth::Full).is_err());
    }

    #[test]
    fn legacy_entity_values_get_an_id() {
        let v: Value = serde_json::from_str(r#"{"numeric-id":30,"entity-type":"item"}"#).unwrap();
        assert_eq!(entity_id(&v).unwrap(), "Q30");
        let p: Value = serde_json::from_str(r#"{"entity-type":"property","numeric-id":27}"#).unwrap();
        assert_eq!(entity_id(&p).unwrap(), "P27");
        // Globe coordinates have a fractional "precision"; unknown shapes read as nothing.
        let g: Value = serde_json::from_str(r#"{"latitude":51.5,"longitude":-0.12,"altitude":null,"precision":0.0001}"#).unwrap();
        assert_eq!((g.latitude, g.longitude), (Some(51.5), Some(-0.12)));
        let odd: Value = serde_json::from_str("[1, 2]").unwrap();
        assert!(odd.id.is_none() && odd.text.is_none());
    }
}
