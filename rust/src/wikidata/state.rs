//! The scan's partial result: the characters held so far, and at the end the
//! labels of the ids their claims point to.
//!
//! With a top-N limit only the best N per (category, language) are held, so
//! memory stays bounded on a full dump. Ranking is by sitelinks (descending),
//! then numeric id (ascending); it does not depend on file order, so the held
//! set after any prefix of the dump is exactly the top N of that prefix.
use std::cmp::Reverse;
use std::collections::{BTreeSet, HashMap, HashSet};

use serde::Serialize;

use super::entity::LangText;
use super::langs::Langs;
use super::report::Stats;
use super::select::{references, Candidate};

type RankKey = (Reverse<u32>, u64, String);

/// Rebuilt on resume by replaying the checkpoint journal through `offer`,
/// which is why `offer` is deterministic.
#[derive(Default)]
pub struct ScanState {
    pub candidates: HashMap<String, Candidate>,
    /// Labels of the ids the held candidates reference (filled at the end).
    pub labels: HashMap<String, Vec<LangText>>,
    pub stats: Stats,
    pub saw_open: bool,
    pub saw_close: bool,
    /// Per (category, language): the held candidates in rank order.
    heaps: HashMap<(u8, usize), BTreeSet<RankKey>>,
}

/// A finished row, claims named in the row's language.
#[derive(Debug, Serialize, PartialEq)]
pub struct Row {
    pub character_id: String,
    pub lang: String,
    pub category: String,
    pub label: String,
    pub description: String,
    pub aliases: Vec<String>,
    pub sitelinks: u32,
    pub wiki_title: Option<String>,
    pub claims: Vec<Claim>,
}

#[derive(Debug, Serialize, PartialEq)]
pub struct Claim {
    pub property: String,
    pub value: String,
}

fn rank_key(c: &Candidate) -> RankKey {
    (Reverse(c.sitelinks), c.numeric, c.id.clone())
}

impl ScanState {
    pub fn rows_held(&self) -> u64 {
        self.candidates.values().map(|c| c.kept.iter().filter(|k| **k).count() as u64).sum()
    }

    /// Offers a matched entity read at `line`; keeps it where it ranks in the
    /// top `keep_top`. Returns whether it is held.
    pub fn offer(&mut self, mut c: Candidate, line: u64, langs: &Langs, keep_top: Option<usize>) -> bool {
        self.stats.matched += 1;
        if self.candidates.contains_key(&c.id) {
            self.stats.duplicate.add(line);
            return false;
        }
        c.kept = vec![false; c.langs.len()];
        for (r, fields) in c.langs.iter().enumerate() {
            if fields.is_none() {
                self.stats.missing_label.entry(langs.requested[r].clone()).or_default().add(line);
            }
        }
        if c.langs.iter().all(Option::is_none) {
            self.stats.no_label.add(line);
            return false;
        }
        let key = rank_key(&c);
        let mut evicted: Vec<(String, usize)> = Vec::new();
        for r in 0..c.langs.len() {
            if c.langs[r].is_none() {
                continue;
            }
            c.kept[r] = true;
            if let Some(n) = keep_top {
                let heap = self.heaps.entry((c.category, r)).or_default();
                heap.insert(key.clone());
                if heap.len() > n {
                    let worst = heap.pop_last().expect("non-empty heap");
                    if worst.2 == c.id {
                        c.kept[r] = false;
                    } else {
                        evicted.push((worst.2, r));
                    }
                }
            }
        }
        let held = c.kept.iter().any(|k| *k);
        if held {
            self.candidates.insert(c.id.clone(), c);
        }
        for (id, r) in evicted {
            let held = self.candidates.get_mut(&id).expect("evicted candidate is held");
            held.kept[r] = false;
            if !held.kept.iter().any(|k| *k) {
                self.candidates.remove(&id);
            }
        }
        held
    }

    /// The ids whose labels the held candidates' rows need.
    pub fn referenced(&self) -> HashSet<String> {
        self.candidates.values().flat_map(|c| references(c).into_iter().map(str::to_owned)).collect()
    }

    fn name(&self, id: &str, chain: &[u8]) -> String {
        self.labels
            .get(id)
            .and_then(|ls| chain.iter().find_map(|l| ls.iter().find(|(i, _)| i == l).map(|(_, t)| t.clone())))
            .unwrap_or_else(|| id.to_owned())
    }

    /// The result rows, ordered by language, category, then rank.
    pub fn rows(&self, langs: &Langs, categories: &[String]) -> Vec<Row> {
        let mut held: Vec<&Candidate> = self.candidates.values().collect();
        held.sort_by_key(|c| (c.category, Reverse(c.sitelinks), c.numeric, c.id.clone()));
        let mut rows = Vec::new();
        for (r, lang) in langs.requested.iter().enumerate() {
            let chain = &langs.name_chain[r];
            let name = |id: &str| self.name(id, chain);
            for c in held.iter().filter(|c| c.kept[r]) {
                let f = c.langs[r].as_ref().expect("kept rows have a label");
                let mut claims: Vec<Claim> = Vec::new();
                for (p, v) in &c.claims {
                    let claim = Claim { property: name(p), value: v.render(lang, &name) };
                    if !claims.contains(&claim) {
                        claims.push(claim);
                    }
                }
                rows.push(Row {
                    character_id: c.id.clone(),
                    lang: lang.clone(),
                    category: categories[usize::from(c.category)].clone(),
                    label: f.label.clone(),
                    description: f.description.clone(),
                    aliases: f.aliases.clone(),
                    sitelinks: c.sitelinks,
                    wiki_title: f.title.clone(),
                    claims,
                });
            }
        }
        rows
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wikidata::select::LangFields;
    use crate::wikidata::values::RawValue;

    fn cand(id: &str, sitelinks: u32, refs: &[&str]) -> Candidate {
        Candidate {
            id: id.into(),
            numeric: id[1..].parse().unwrap(),
            category: 0,
            sitelinks,
            langs: vec![Some(LangFields { label: id.into(), description: String::new(), aliases: vec![], title: None })],
            claims: refs.iter().map(|r| ("P1".to_string(), RawValue::Entity(r.to_string()))).collect(),
            kept: vec![false],
        }
    }

    #[test]
    fn keeps_top_n_with_numeric_tie_break() {
        let langs = Langs::new(&["en".into()]);
        let mut s = ScanState::default();
        assert!(s.offer(cand("Q30", 5, &["Q900"]), 1, &langs, Some(2)));
        assert!(s.offer(cand("Q20", 5, &["Q901"]), 2, &langs, Some(2)));
        assert!(s.offer(cand("Q10", 5, &["Q902"]), 3, &langs, Some(2))); // ties: lower id wins, Q30 goes
        assert!(!s.offer(cand("Q40", 1, &["Q903"]), 4, &langs, Some(2))); // ranks last, never held
        let mut held: Vec<_> = s.candidates.keys().cloned().collect();
        held.sort();
        assert_eq!(held, ["Q10", "Q20"]);
        let mut refs: Vec<_> = s.referenced().into_iter().collect();
        refs.sort();
        assert_eq!(refs, ["P1", "Q901", "Q902"]);
        assert!(s.offer(cand("Q50", 9, &[]), 5, &langs, Some(2)));
        let mut held: Vec<_> = s.candidates.keys().cloned().collect();
        held.sort();
        assert_eq!(held, ["Q10", "Q50"]);
        assert!(!s.offer(cand("Q50", 9, &[]), 6, &langs, Some(2)), "a duplicate is not offered twice");
        assert_eq!(s.stats.duplicate.first_lines, [6]);
    }

    #[test]
    fn rows_name_claims_with_fallback_to_english_then_id() {
        let langs = Langs::new(&["en".into(), "zh".into()]);
        let mut s = ScanState::default();
        let mut c = cand("Q1", 3, &["Q900", "Q901"]);
        c.langs.push(Some(LangFields { label: "一".into(), description: "数".into(), aliases: vec![], title: None }));
        c.kept.push(false);
        s.offer(c, 1, &langs, None);
        let zh = langs.codes.iter().position(|c| c == "zh").unwrap() as u8;
        let en = langs.codes.iter().position(|c| c == "en").unwrap() as u8;
        s.labels.insert("Q900".into(), vec![(en, "nine hundred".into()), (zh, "九百".into())]);
        s.labels.insert("P1".into(), vec![(en, "number".into())]);
        let rows = s.rows(&langs, &["human".into()]);
        assert_eq!(rows.len(), 2);
        let values = |r: &Row| r.claims.iter().map(|c| format!("{}={}", c.property, c.value)).collect::<Vec<_>>();
        assert_eq!(values(&rows[0]), ["number=nine hundred", "number=Q901"]);
        assert_eq!(values(&rows[1]), ["number=九百", "number=Q901"]);
    }
}
