//! Durable scan checkpoints: where to restart and the partial result so far,
//! written atomically (temporary file, fsync, rename, fsync of the folder) so a
//! kill at any moment leaves either the old checkpoint or the new one.
use std::fs::{self, File};
use std::io::{BufWriter, Write};
use std::path::Path;

use serde::{Deserialize, Serialize};

use super::source::ResumePos;
use super::state::ScanState;

pub const VERSION: u32 = 1;

/// Which part of the scan the checkpoint is in.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Phase {
    /// Reading the dump for characters.
    Select,
    /// Reading it again for labels defined before their first use.
    Resolve,
    Done,
}

#[derive(Serialize, Deserialize)]
pub struct Checkpoint {
    pub version: u32,
    /// The input file and settings this scan belongs to.
    pub fingerprint: String,
    pub phase: Phase,
    pub pos: ResumePos,
    pub chunks_done: u64,
    /// How far the resolving pass reads.
    pub stop_at: u64,
    pub state: ScanState,
}

pub fn save(path: &Path, ck: &Checkpoint) -> std::io::Result<()> {
    let mut tmp_name = path.as_os_str().to_owned();
    tmp_name.push(".tmp");
    let tmp = Path::new(&tmp_name);
    {
        let mut w = BufWriter::with_capacity(1 << 20, File::create(tmp)?);
        serde_json::to_writer(&mut w, ck)?;
        w.flush()?;
        w.get_ref().sync_all()?;
    }
    fs::rename(tmp, path)?;
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        // Make the rename itself durable.
        File::open(dir)?.sync_all()?;
    }
    Ok(())
}

/// Loads a checkpoint; `Ok(None)` when there is none.
pub fn load(path: &Path) -> Result<Option<Checkpoint>, String> {
    let bytes = match fs::read(path) {
        Ok(b) => b,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(format!("{}: cannot read checkpoint: {e}", path.display())),
    };
    let mut ck: Checkpoint = serde_json::from_slice(&bytes)
        .map_err(|e| format!("{}: unreadable checkpoint ({e}); delete it to start over", path.display()))?;
    if ck.version != VERSION {
        return Err(format!("{}: checkpoint version {} is not {VERSION}; delete it to start over", path.display(), ck.version));
    }
    ck.state.rebuild_heaps();
    Ok(Some(ck))
}
