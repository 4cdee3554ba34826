//! Claim values: what a statement's main snak holds, and how it reads as text.
//!
//! Dates keep their stated precision (a year-precision birth date reads as a
//! year, not as 1 January), quantities carry their unit's label, and items
//! read as their label in the row's language. English and Chinese get their
//! own date wording; other languages get ISO-style dates.
use serde::{Deserialize, Serialize};

use super::entity::{entity_id, DataType, Snak, SnakType};

/// A claim value before labels are known.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum RawValue {
    /// An item, property or lexeme id, read as its label.
    Entity(String),
    Time { time: String, precision: u8, julian: bool },
    /// `amount` as written (`+1.83`), `unit` an item id or none.
    Quantity { amount: String, unit: Option<String> },
    Text(String),
    Coordinate { lat: f64, lon: f64 },
    /// The snak says a value exists but is not known.
    Unknown,
    /// The snak says there is no value.
    NoValue,
}

impl RawValue {
    /// Reads a main snak; `None` for a value type that has no text form.
    pub fn from_snak(snak: &Snak) -> Option<RawValue> {
        match snak.snaktype {
            SnakType::Somevalue => return Some(RawValue::Unknown),
            SnakType::Novalue => return Some(RawValue::NoValue),
            SnakType::Value => {}
            SnakType::Other => return None,
        }
        let dv = snak.datavalue.as_ref()?;
        let v = &dv.value;
        Some(match dv.kind {
            DataType::WikibaseEntityid => RawValue::Entity(entity_id(v)?),
            DataType::Time => RawValue::Time {
                time: v.time.clone()?,
                precision: v.precision.unwrap_or(11.0).clamp(0.0, 14.0) as u8,
                julian: v.julian,
            },
            DataType::Quantity => RawValue::Quantity {
                amount: v.amount.clone()?,
                unit: v.unit.as_deref().filter(|u| *u != "1").map(|u| u.rsplit('/').next().unwrap_or(u).to_owned()),
            },
            DataType::Globecoordinate => RawValue::Coordinate { lat: v.latitude?, lon: v.longitude? },
            DataType::Monolingualtext | DataType::String | DataType::Other => RawValue::Text(v.text.clone()?),
        })
    }

    /// The entity ids whose labels this value needs.
    pub fn referenced(&self) -> Option<&str> {
        match self {
            RawValue::Entity(id) => Some(id),
            RawValue::Quantity { unit: Some(u), .. } => Some(u),
            _ => None,
        }
    }

    /// The value as text in language `lang`; `label` names an entity id.
    pub fn render(&self, lang: &str, label: &dyn Fn(&str) -> String) -> String {
        let zh = is_chinese(lang);
        match self {
            RawValue::Entity(id) => label(id),
            RawValue::Time { time, precision, julian } => render_time(time, *precision, *julian, lang),
            RawValue::Quantity { amount, unit } => {
                let a = amount.strip_prefix('+').unwrap_or(amount);
                match unit {
                    Some(u) => format!("{a} {}", label(u)),
                    None => a.to_owned(),
                }
            }
            RawValue::Text(t) => t.clone(),
            RawValue::Coordinate { lat, lon } => format!("{lat:.4}, {lon:.4}"),
            RawValue::Unknown => (if zh { "未知" } else { "unknown value" }).to_owned(),
            RawValue::NoValue => (if zh { "无" } else { "no value" }).to_owned(),
        }
    }
}

pub fn is_chinese(lang: &str) -> bool {
    lang == "zh" || lang.starts_with("zh-")
}

const MONTHS: [&str; 12] = [
    "January", "February", "March", "April", "May", "June", "July", "August", "September", "October", "November",
    "December",
];

fn ordinal(n: u64) -> String {
    let suffix = match (n % 10, n % 100) {
        (_, 11..=13) => "th",
        (1, _) => "st",
        (2, _) => "nd",
        (3, _) => "rd",
        _ => "th",
    };
    format!("{n}{suffix}")
}

/// Renders a Wikibase time (`+1879-03-14T00:00:00Z`) at its precision:
/// 11+ day, 10 month, 9 year, 8 decade, 7 century, 6 millennium; coarser
/// precisions read as the year. Negative years are BCE. Day and month dates in
/// the Julian calendar say so, since the same digits name another day in the
/// Gregorian calendar.
pub fn render_time(time: &str, precision: u8, julian: bool, lang: &str) -> String {
    let bce = time.starts_with('-');
    let body = time.trim_start_matches(['+', '-']);
    let date = body.split('T').next().unwrap_or(body);
    let mut parts = date.split('-');
    let year: u64 = parts.next().and_then(|y| y.parse().ok()).unwrap_or(0);
    let month: u64 = parts.next().and_then(|m| m.parse().ok()).unwrap_or(0);
    let day: u64 = parts.next().and_then(|d| d.parse().ok()).unwrap_or(0);
    // Fall back to a coarser precision when the finer fields are zero.
    let precision = match precision {
        p if p >= 10 && month == 0 => 9,
        p if p >= 11 && day == 0 => 10,
        p => p,
    };
    let zh = is_chinese(lang);
    let en = lang == "en" || lang.starts_with("en-");
    let calendar_matters = julian && precision >= 10;
    let text = if zh {
        let era = if bce { "公元前" } else { "" };
        match precision {
            p if p >= 11 => format!("{era}{year}年{month}月{day}日"),
            10 => format!("{era}{year}年{month}月"),
            8 => format!("{era}{}年代", year / 10 * 10),
            7 => format!("{era}{}世纪", (year.max(1) - 1) / 100 + 1),
            6 => format!("{era}第{}个千年", (year.max(1) - 1) / 1000 + 1),
            _ => format!("{era}{year}年"),
        }
    } else if en {
        let era = if bce { " BCE" } else { "" };
        let month_name = MONTHS.get(month.saturating_sub(1) as usize).copied().unwrap_or("");
        match precision {
            p if p >= 11 => format!("{day} {month_name} {year}{era}"),
            10 => format!("{month_name} {year}{era}"),
            8 => format!("{}s{era}", year / 10 * 10),
            7 => format!("{} century{era}", ordinal((year.max(1) - 1) / 100 + 1)),
            6 => format!("{} millennium{era}", ordinal((year.max(1) - 1) / 1000 + 1)),
            _ => format!("{year}{era}"),
        }
    } else {
        let sign = if bce { "-" } else { "" };
        match precision {
            p if p >= 11 => format!("{sign}{year:04}-{month:02}-{day:02}"),
            10 => format!("{sign}{year:04}-{month:02}"),
            _ => format!("{sign}{year}"),
        }
    };
    if calendar_matters {
        if zh {
            format!("{text}（儒略历）")
        } else {
            format!("{text} (Julian)")
        }
    } else {
        text
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dates_at_their_precision() {
        let t = "+1879-03-14T00:00:00Z";
        assert_eq!(render_time(t, 11, false, "en"), "14 March 1879");
        assert_eq!(render_time(t, 11, false, "zh"), "1879年3月14日");
        assert_eq!(render_time(t, 11, false, "de"), "1879-03-14");
        assert_eq!(render_time(t, 10, false, "en"), "March 1879");
        assert_eq!(render_time(t, 9, false, "en"), "1879");
        assert_eq!(render_time("+1870-00-00T00:00:00Z", 8, false, "en"), "1870s");
        assert_eq!(render_time("+1900-00-00T00:00:00Z", 7, false, "en"), "19th century");
        assert_eq!(render_time("+1801-00-00T00:00:00Z", 7, false, "zh"), "19世纪");
        assert_eq!(render_time("+2000-00-00T00:00:00Z", 6, false, "en"), "2nd millennium");
        assert_eq!(render_time("-0551-00-00T00:00:00Z", 9, false, "en"), "551 BCE");
        assert_eq!(render_time("-0551-00-00T00:00:00Z", 9, false, "zh"), "公元前551年");
        assert_eq!(render_time("-0500-00-00T00:00:00Z", 7, false, "en"), "5th century BCE");
        // A day-precision date with no day reads at month precision.
        assert_eq!(render_time("+1643-01-00T00:00:00Z", 11, false, "en"), "January 1643");
        assert_eq!(render_time("+1643-00-05T00:00:00Z", 11, false, "en"), "1643");
        assert_eq!(render_time("+1643-01-04T00:00:00Z", 11, true, "en"), "4 January 1643 (Julian)");
        assert_eq!(render_time("+1643-01-04T00:00:00Z", 9, true, "en"), "1643");
        assert_eq!(render_time("+1642-12-25T00:00:00Z", 11, true, "zh"), "1642年12月25日（儒略历）");
    }

    #[test]
    fn ordinals() {
        assert_eq!(ordinal(1), "1st");
        assert_eq!(ordinal(12), "12th");
        assert_eq!(ordinal(21), "21st");
        assert_eq!(ordinal(113), "113th");
    }

    fn snak(json: &str) -> Snak {
        serde_json::from_str(json).unwrap()
    }

    #[test]
    fn values_from_snaks_and_their_text() {
        let label = |id: &str| match id {
            "Q11573" => "metre".to_string(),
            "Q6581097" => "male".to_string(),
            other => other.to_string(),
        };
        let q = RawValue::from_snak(&snak(
            r#"{"snaktype":"value","datavalue":{"value":{"amount":"+1.83","unit":"http://www.wikidata.org/entity/Q11573"},"type":"quantity"}}"#,
        ))
        .unwrap();
        assert_eq!(q.referenced(), Some("Q11573"));
        assert_eq!(q.render("en", &label), "1.83 metre");
        let n = RawValue::from_snak(&snak(
            r#"{"snaktype":"value","datavalue":{"value":{"amount":"+3","unit":"1"},"type":"quantity"}}"#,
        ))
        .unwrap();
        assert_eq!(n.render("en", &label), "3");
        let e = RawValue::from_snak(&snak(
            r#"{"snaktype":"value","datavalue":{"value":{"entity-type":"item","numeric-id":6581097},"type":"wikibase-entityid"}}"#,
        ))
        .unwrap();
        assert_eq!(e.render("en", &label), "male");
        assert_eq!(RawValue::from_snak(&snak(r#"{"snaktype":"somevalue"}"#)).unwrap().render("zh", &label), "未知");
        assert_eq!(RawValue::from_snak(&snak(r#"{"snaktype":"novalue"}"#)).unwrap().render("en", &label), "no value");
        let m = RawValue::from_snak(&snak(
            r#"{"snaktype":"value","datavalue":{"value":{"text":"Ada King","language":"en"},"type":"monolingualtext"}}"#,
        ))
        .unwrap();
        assert_eq!(m.render("en", &label), "Ada King");
    }
}
