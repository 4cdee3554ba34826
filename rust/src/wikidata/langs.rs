//! Language fallback chains.
//!
//! A row in language L takes the character's label from L, then from L's
//! script variants (Chinese labels are often only under zh-hans or zh-hant),
//! then from `mul`, the label Wikidata now keeps once for names written the
//! same in every language (Q42 has no `en` label any more, only `mul`).
//! Labels of the items and properties that claims point to fall back further,
//! to English, and then to the bare id, so that a claim is never lost for want
//! of a translation.
use super::entity::Wanted;

const ZH_VARIANTS: [&str; 8] = ["zh-hans", "zh-cn", "zh-sg", "zh-my", "zh-hant", "zh-tw", "zh-hk", "zh-mo"];

pub struct Langs {
    /// Requested row languages, in order.
    pub requested: Vec<String>,
    /// Every language code whose terms are kept; a code's index is its id.
    pub codes: Vec<String>,
    /// Per requested language: the chain for the character's own terms.
    pub own_chain: Vec<Vec<u8>>,
    /// Per requested language: the chain for naming referenced entities.
    pub name_chain: Vec<Vec<u8>>,
}

impl Langs {
    pub fn new(requested: &[String]) -> Langs {
        let mut codes: Vec<String> = Vec::new();
        let index = |code: &str, codes: &mut Vec<String>| -> u8 {
            match codes.iter().position(|c| c == code) {
                Some(i) => i as u8,
                None => {
                    codes.push(code.to_owned());
                    (codes.len() - 1) as u8
                }
            }
        };
        // Requested languages first, so a requested language's index is its code index.
        for r in requested {
            index(r, &mut codes);
        }
        let mut own_chain = Vec::new();
        let mut name_chain = Vec::new();
        for r in requested {
            let mut chain = vec![index(r, &mut codes)];
            if r == "zh" {
                chain.extend(ZH_VARIANTS.iter().map(|v| index(v, &mut codes)));
            }
            let mul = index("mul", &mut codes);
            if !chain.contains(&mul) {
                chain.push(mul);
            }
            let mut names = chain.clone();
            let en = index("en", &mut codes);
            if !names.contains(&en) {
                names.push(en);
            }
            own_chain.push(chain);
            name_chain.push(names);
        }
        Langs { requested: requested.to_vec(), codes, own_chain, name_chain }
    }

    /// What the parser keeps: terms in these languages, titles on the
    /// requested languages' Wikipedias, and claims for `properties`.
    pub fn wanted(&self, properties: &[String]) -> Wanted {
        let langs = self.codes.iter().enumerate().map(|(i, c)| (c.clone(), i as u8)).collect();
        let sites = self.requested.iter().enumerate().map(|(i, r)| (wiki_site(r), i as u8)).collect();
        let props = properties.iter().cloned().collect();
        Wanted { langs, sites, props }
    }
}

/// The sitelink key of a language's Wikipedia (`zh-yue` -> `zh_yuewiki`).
pub fn wiki_site(lang: &str) -> String {
    format!("{}wiki", lang.replace('-', "_"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chains() {
        let l = Langs::new(&["en".into(), "zh".into()]);
        let code = |i: u8| l.codes[i as usize].as_str();
        assert_eq!(l.own_chain[0].iter().map(|&i| code(i)).collect::<Vec<_>>(), ["en", "mul"]);
        assert_eq!(l.name_chain[0].iter().map(|&i| code(i)).collect::<Vec<_>>(), ["en", "mul"]);
        let zh: Vec<_> = l.name_chain[1].iter().map(|&i| code(i)).collect();
        assert_eq!(zh.first(), Some(&"zh"));
        assert_eq!(&zh[zh.len() - 2..], ["mul", "en"]);
        assert!(zh.contains(&"zh-hant"));
        assert_eq!(wiki_site("zh-yue"), "zh_yuewiki");
    }
}
