//! The label store: every entity's labels in the scan's languages, appended to
//! a file as the dump is read, so that claim values can be named at the end
//! whichever way they point (to an entity before or after the character).
//!
//! Perf notes: the first design read the dump a second time for entities
//! defined before the characters that use them; on a realistic dump that was
//! nearly the whole file again (a second decompression of a `.gz`). Parsing
//! just the `labels` object of every line (`entity::Depth::Labels` stops
//! there) cost about a third of that second pass, and reading the store back
//! is a small fraction of it: the store holds a few dozen bytes per entity.
//!
//! One JSON line per entity: `["Q42",[[0,"Douglas Adams"],[3,"道格拉斯·亚当斯"]]]`,
//! the numbers indexing the scan's language table; the id comes first so the
//! reader can skip lines it does not need without parsing them.
use std::collections::{HashMap, HashSet};
use std::fs::{File, OpenOptions};
use std::io::{BufRead, BufReader, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use super::entity::LangText;

/// Appends the store record of `id` to `out` (nothing when it has no labels).
pub fn write_record(id: &str, labels: &[LangText], out: &mut Vec<u8>) {
    if labels.is_empty() {
        return;
    }
    serde_json::to_writer(&mut *out, &(id, labels)).expect("labels serialize");
    out.push(b'\n');
}

pub struct LabelStore {
    path: PathBuf,
    file: File,
    len: u64,
    pending: Vec<u8>,
    /// Deleted on drop (a store without a checkpoint to resume from).
    temporary: bool,
}

impl LabelStore {
    /// Opens the store at `path`, keeping its first `keep` bytes (what the
    /// checkpoint vouches for) and dropping the rest.
    pub fn open(path: &Path, keep: u64) -> std::io::Result<LabelStore> {
        let file = OpenOptions::new().create(true).read(true).write(true).truncate(false).open(path)?;
        file.set_len(keep)?;
        Ok(LabelStore { path: path.to_owned(), file, len: keep, pending: Vec::new(), temporary: false })
    }

    /// A store in the temporary folder, removed when dropped.
    pub fn temporary() -> std::io::Result<LabelStore> {
        let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_nanos());
        let path = std::env::temp_dir().join(format!("ditto-wikidata-{}-{nanos}.labels", std::process::id()));
        let mut store = LabelStore::open(&path, 0)?;
        store.temporary = true;
        Ok(store)
    }

    #[cfg(test)]
    pub fn add(&mut self, id: &str, labels: &[LangText]) {
        write_record(id, labels, &mut self.pending);
    }

    /// Adds records already written by `write_record` or `entity::fast_record`.
    pub fn add_records(&mut self, records: &[u8]) {
        self.pending.extend_from_slice(records);
    }

    /// Writes what was added since the last flush; returns the store's length.
    pub fn flush(&mut self) -> std::io::Result<u64> {
        self.file.seek(SeekFrom::Start(self.len))?;
        self.file.write_all(&self.pending)?;
        self.len += self.pending.len() as u64;
        self.pending.clear();
        Ok(self.len)
    }

    pub fn sync(&self) -> std::io::Result<()> {
        self.file.sync_data()
    }

    /// The labels of the `wanted` ids found in the store (the first record
    /// wins when an id was stored twice).
    pub fn lookup(&mut self, wanted: &HashSet<String>) -> std::io::Result<HashMap<String, Vec<LangText>>> {
        self.flush()?;
        let mut found: HashMap<String, Vec<LangText>> = HashMap::with_capacity(wanted.len());
        if wanted.is_empty() {
            return Ok(found);
        }
        (&self.file).seek(SeekFrom::Start(0))?;
        let mut reader = BufReader::with_capacity(1 << 20, (&self.file).take(self.len));
        let mut line = Vec::new();
        loop {
            line.clear();
            if reader.read_until(b'\n', &mut line)? == 0 {
                break;
            }
            // `["Q42",…`: ids hold no characters that JSON escapes.
            let id = line.get(2..).and_then(|rest| memchr::memchr(b'"', rest).map(|end| &rest[..end]));
            let Some(id) = id.and_then(|b| std::str::from_utf8(b).ok()) else { continue };
            if !wanted.contains(id) || found.contains_key(id) {
                continue;
            }
            let (id, labels): (String, Vec<LangText>) = serde_json::from_slice(&line)?;
            found.insert(id, labels);
            if found.len() == wanted.len() {
                break;
            }
        }
        Ok(found)
    }

    #[cfg(test)]
    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl Drop for LabelStore {
    fn drop(&mut self) {
        if self.temporary {
            let _ = std::fs::remove_file(&self.path);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stores_and_finds_labels_and_cuts_an_unvouched_tail() {
        let path = std::env::temp_dir().join(format!("ditto-labelstore-{}", std::process::id()));
        let mut s = LabelStore::open(&path, 0).unwrap();
        s.add("Q1", &[(0, "one".into()), (1, "一".into())]);
        s.add("P27", &[(0, "country \"of\" citizenship".into())]);
        s.add("Q2", &[]);
        let kept = s.flush().unwrap();
        s.add("Q3", &[(0, "three".into())]);
        s.flush().unwrap();
        let want: HashSet<String> = ["Q1", "P27", "Q3", "Q9"].iter().map(|s| s.to_string()).collect();
        let found = s.lookup(&want).unwrap();
        assert_eq!(found["P27"], vec![(0, "country \"of\" citizenship".to_string())]);
        assert_eq!(found.len(), 3);
        drop(s);
        // Reopened at the checkpointed length, the later record is gone.
        let mut again = LabelStore::open(&path, kept).unwrap();
        let found = again.lookup(&want).unwrap();
        assert!(found.contains_key("Q1") && !found.contains_key("Q3"));
        std::fs::remove_file(&path).unwrap();
        let t = LabelStore::temporary().unwrap();
        let tp = t.path().to_owned();
        assert!(tp.exists());
        drop(t);
        assert!(!tp.exists());
    }
}
