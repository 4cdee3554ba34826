//! What a scan counted, including every kind of bad input with the first few
//! line numbers, so a user can look at them (`sed -n 123p`).
use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// How many line numbers each problem keeps.
const FIRST_LINES: usize = 5;

/// A count with the first few line numbers it happened on.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Lines {
    pub count: u64,
    pub first_lines: Vec<u64>,
}

impl Lines {
    pub fn add(&mut self, line: u64) {
        self.count += 1;
        if self.first_lines.len() < FIRST_LINES {
            self.first_lines.push(line);
        }
    }
}

/// Where a compressed stream broke off.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Truncation {
    pub message: String,
    pub line: u64,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Stats {
    /// Lines read in the selection pass.
    pub lines: u64,
    /// Entity lines (well-formed as far as they were looked at).
    pub entities: u64,
    /// Entities that are instances of a requested class.
    pub matched: u64,
    /// Rows in the result (after the top-N cut, if any).
    pub rows: u64,
    /// Lines that are not one JSON entity object.
    pub malformed: Lines,
    pub invalid_utf8: Lines,
    /// Matched entities without a label, per requested language.
    pub missing_label: BTreeMap<String, Lines>,
    /// Matched entities without a label in any requested language (dropped).
    pub no_label: Lines,
    /// An entity id seen twice while the first copy was still held.
    pub duplicate: Lines,
    /// The compressed stream was cut short or corrupt after this line.
    pub stream_error: Option<Truncation>,
    /// The dump opened with `[` but ended without its `]` line.
    pub missing_close: bool,
    /// Referenced entities that the dump does not hold; they read as their ids.
    pub unresolved: u64,
    /// Size of the label store (labels of every entity, in the scan's languages).
    pub label_store_bytes: u64,
    /// The line a resumed scan continued from, if it was resumed.
    pub resumed_at_line: Option<u64>,
}
