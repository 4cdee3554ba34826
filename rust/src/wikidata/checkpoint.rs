//! Scan checkpoints: a small header, rewritten atomically (temporary file,
//! then rename) after every chunk, and an append-only journal of the
//! characters that were held when offered, replayed on resume.
//!
//! The header says where to restart and how many bytes of the journal and of
//! the label store belong to it, so a kill at any moment leaves a consistent
//! set: what was appended after the last header is cut off on resume.
//!
//! Perf notes: rewriting the whole state after every chunk cost as much as
//! parsing the chunk once a few thousand characters were held; the journal
//! makes a checkpoint cost what changed. fsync cost 10-50 ms a call here; a
//! killed process loses nothing without it (written pages stay in the OS
//! cache), so the scan fsyncs only every `SYNC_EVERY` and at the end of each
//! pass: a machine crash loses at most that much work.
use std::fs::{self, File, OpenOptions};
use std::io::{BufRead, BufReader, Read, Write};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::report::Stats;
use super::select::Candidate;
use super::source::ResumePos;
use super::state::ScanState;

pub const VERSION: u32 = 3;

/// How often a checkpoint is also forced to disk.
pub const SYNC_EVERY: std::time::Duration = std::time::Duration::from_secs(30);

/// Which part of the scan the checkpoint is in.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Phase {
    /// Reading the dump.
    Select,
    Done,
}

/// The scan's progress and partial result, in memory.
pub struct Checkpoint {
    /// The input file and settings this scan belongs to.
    pub fingerprint: String,
    pub phase: Phase,
    pub pos: ResumePos,
    pub chunks_done: u64,
    /// Bytes of the label store that belong to this checkpoint.
    pub labels_len: u64,
    pub state: ScanState,
}

#[derive(Serialize, Deserialize)]
struct Header {
    version: u32,
    fingerprint: String,
    phase: Phase,
    pos: ResumePos,
    chunks_done: u64,
    labels_len: u64,
    /// Journal bytes that belong to this checkpoint.
    journal_len: u64,
    stats: Stats,
    saw_open: bool,
    saw_close: bool,
}

/// One journal record: a character offered at a line that was held afterwards.
#[derive(Serialize)]
struct OfferRef<'a>(&'a Candidate, u64);

#[derive(Deserialize)]
struct Offer(Candidate, u64);

/// The checkpoint's files: `path` (header) and `path.journal`.
pub struct Journal {
    header: PathBuf,
    journal: File,
    len: u64,
    pending: Vec<u8>,
    last_sync: std::time::Instant,
}

fn journal_path(path: &Path) -> PathBuf {
    let mut name = path.as_os_str().to_owned();
    name.push(".journal");
    PathBuf::from(name)
}

fn open_journal(path: &Path, keep: u64) -> std::io::Result<File> {
    let f = OpenOptions::new().create(true).read(true).write(true).truncate(false).open(journal_path(path))?;
    // Drop whatever was appended after the last header.
    f.set_len(keep)?;
    Ok(f)
}

impl Journal {
    /// Starts a new checkpoint at `path`, discarding any old journal.
    pub fn create(path: &Path) -> std::io::Result<Journal> {
        Ok(Journal {
            header: path.to_owned(),
            journal: open_journal(path, 0)?,
            len: 0,
            pending: Vec::new(),
            last_sync: std::time::Instant::now(),
        })
    }

    /// Loads the checkpoint at `path` (`Ok(None)` when there is none), replaying
    /// its journal through `offer` and `add_labels` of a fresh state.
    pub fn load(
        path: &Path,
        offer: &mut dyn FnMut(&mut ScanState, Candidate, u64),
    ) -> Result<Option<(Checkpoint, Journal)>, String> {
        let unreadable = |e: &dyn std::fmt::Display| format!("{}: unreadable checkpoint ({e}); delete it to start over", path.display());
        let bytes = match fs::read(path) {
            Ok(b) => b,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(format!("{}: cannot read checkpoint: {e}", path.display())),
        };
        let header: Header = serde_json::from_slice(&bytes).map_err(|e| unreadable(&e))?;
        if header.version != VERSION {
            return Err(format!(
                "{}: checkpoint version {} is not {VERSION}; delete it to start over",
                path.display(),
                header.version
            ));
        }
        let mut state = ScanState::default();
        let file = File::open(journal_path(path)).map_err(|e| unreadable(&e))?;
        let mut reader = BufReader::with_capacity(1 << 20, file.take(header.journal_len));
        let mut line = Vec::new();
        let mut read = 0u64;
        loop {
            line.clear();
            let n = reader.read_until(b'\n', &mut line).map_err(|e| unreadable(&e))?;
            if n == 0 {
                break;
            }
            read += n as u64;
            let Offer(c, at) = serde_json::from_slice(&line).map_err(|e| unreadable(&e))?;
            offer(&mut state, c, at);
        }
        if read != header.journal_len {
            return Err(unreadable(&"journal shorter than its header says"));
        }
        // The replay counted again what the header already holds.
        state.stats = header.stats;
        state.saw_open = header.saw_open;
        state.saw_close = header.saw_close;
        let ck = Checkpoint {
            fingerprint: header.fingerprint,
            phase: header.phase,
            pos: header.pos,
            chunks_done: header.chunks_done,
            labels_len: header.labels_len,
            state,
        };
        let journal = Journal {
            header: path.to_owned(),
            journal: open_journal(path, header.journal_len).map_err(|e| unreadable(&e))?,
            len: header.journal_len,
            pending: Vec::new(),
            last_sync: std::time::Instant::now(),
        };
        Ok(Some((ck, journal)))
    }

    pub fn offered(&mut self, c: &Candidate, line: u64) {
        serde_json::to_writer(&mut self.pending, &OfferRef(c, line)).expect("records serialize");
        self.pending.push(b'\n');
    }

    /// Whether this commit will also sync (so the label store can sync first).
    pub fn due_for_sync(&self) -> bool {
        self.last_sync.elapsed() >= SYNC_EVERY
    }

    /// Appends the pending records and atomically replaces the header. With
    /// `force_sync`, or when `SYNC_EVERY` has passed, also syncs to disk.
    pub fn commit(&mut self, ck: &Checkpoint, force_sync: bool) -> std::io::Result<()> {
        use std::io::{Seek, SeekFrom};
        let sync = force_sync || self.last_sync.elapsed() >= SYNC_EVERY;
        self.journal.seek(SeekFrom::Start(self.len))?;
        self.journal.write_all(&self.pending)?;
        self.len += self.pending.len() as u64;
        self.pending.clear();
        if sync {
            self.journal.sync_data()?;
        }
        let header = Header {
            version: VERSION,
            fingerprint: ck.fingerprint.clone(),
            phase: ck.phase,
            pos: ck.pos,
            chunks_done: ck.chunks_done,
            labels_len: ck.labels_len,
            journal_len: self.len,
            stats: ck.state.stats.clone(),
            saw_open: ck.state.saw_open,
            saw_close: ck.state.saw_close,
        };
        let mut tmp_name = self.header.as_os_str().to_owned();
        tmp_name.push(".tmp");
        let tmp = Path::new(&tmp_name);
        {
            let mut f = File::create(tmp)?;
            f.write_all(&serde_json::to_vec(&header)?)?;
            if sync {
                f.sync_all()?;
            }
        }
        fs::rename(tmp, &self.header)?;
        if sync {
            if let Some(dir) = self.header.parent().filter(|d| !d.as_os_str().is_empty()) {
                // Make the rename itself durable.
                File::open(dir)?.sync_all()?;
            }
            self.last_sync = std::time::Instant::now();
        }
        Ok(())
    }
}
