//! Cutting the decompressed text into chunks of whole lines on a reader thread,
//! so decompression overlaps with parsing.
//!
//! Perf notes: fresh 64 MiB buffers per chunk spent a fifth of the scan in
//! page faults, so the consumer hands used buffers back for reuse. A plain
//! file is memory-mapped instead: copying it out of the page cache and
//! zeroing buffers for it was a third of the time left. Line ends are found
//! once, here, off the parsing threads.
use std::io::Read;
use std::ops::{Deref, Range};
use std::sync::mpsc::{channel, sync_channel, Receiver, Sender};
use std::sync::Arc;
use std::thread::JoinHandle;

use memmap2::Mmap;

use super::source::{DumpSource, ResumePos};

const READ_STEP: usize = 1 << 20;

/// A stream error (a cut or corrupt compressed file) met after a chunk.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StreamError {
    pub message: String,
    /// The line that was cut short, or the line that would have come next.
    pub line: u64,
}

/// A chunk's bytes: a buffer filled from a decoder, or a slice of a mapped file.
pub enum ChunkData {
    Owned(Vec<u8>),
    Mapped(Arc<Mmap>, Range<usize>),
}

impl Deref for ChunkData {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        match self {
            ChunkData::Owned(v) => v,
            ChunkData::Mapped(m, r) => &m[r.clone()],
        }
    }
}

/// Whole lines of the dump and where they end.
pub struct Chunk {
    /// Chunk number counted from the scan's start (it continues across a resume).
    pub index: u64,
    pub data: ChunkData,
    /// Where each line of `data` ends (its `\n`, or the end of `data`).
    pub line_ends: Vec<usize>,
    /// Line number (1-based) of the first line in `data`.
    pub first_line: u64,
    /// Where reading restarts after this chunk.
    pub end: ResumePos,
    /// Compressed bytes consumed when the chunk was cut, for progress.
    pub compressed_offset: u64,
    /// Set on the last chunk when the stream broke off.
    pub error: Option<StreamError>,
}

impl Chunk {
    /// The chunk's lines (without their `\n`), with their line numbers.
    pub fn lines(&self) -> Vec<(u64, &[u8])> {
        let mut start = 0;
        let mut out = Vec::with_capacity(self.line_ends.len());
        for (i, &end) in self.line_ends.iter().enumerate() {
            out.push((self.first_line + i as u64, &self.data[start..end]));
            start = end + 1;
        }
        out
    }
}

/// The reader thread's side of the conversation.
pub struct ChunkReader {
    chunks: Receiver<Chunk>,
    recycle: Sender<Vec<u8>>,
    handle: JoinHandle<()>,
}

impl ChunkReader {
    pub fn next(&self) -> Option<Chunk> {
        self.chunks.recv().ok()
    }

    /// Gives a chunk's buffer back for the reader to fill again.
    pub fn recycle(&self, chunk: Chunk) {
        if let ChunkData::Owned(v) = chunk.data {
            let _ = self.recycle.send(v);
        }
    }

    /// Stops the reader (if still running) and waits for it.
    pub fn finish(self) -> std::thread::Result<()> {
        drop(self.chunks);
        self.handle.join()
    }
}

/// Spawns the reader. It stops at the end of the text or after a stream error.
pub fn spawn_reader(mut src: DumpSource, start: ResumePos, first_index: u64, chunk_bytes: usize) -> ChunkReader {
    let (tx, rx) = sync_channel::<Chunk>(2);
    let (recycle_tx, recycle_rx) = channel::<Vec<u8>>();
    let handle = std::thread::spawn(move || {
        let fresh = || Vec::with_capacity(chunk_bytes.saturating_add(READ_STEP));
        let mut buf: Vec<u8> = fresh();
        let mut offset = start.text_offset; // decompressed offset of buf[0]
        let mut line = start.line; // line number of buf's first line
        let mut index = first_index;
        // How full the buffer must be before cutting; grows past a chunk when one line is longer.
        let mut want = chunk_bytes;
        loop {
            let mut eof = false;
            let mut error = None;
            while buf.len() < want {
                let len = buf.len();
                buf.resize(len + (want - len).min(READ_STEP), 0);
                match src.read(&mut buf[len..]) {
                    Ok(n) => {
                        buf.truncate(len + n);
                        if n == 0 {
                            eof = true;
                            break;
                        }
                    }
                    Err(e) => {
                        buf.truncate(len);
                        error = Some(e.to_string());
                        break;
                    }
                }
            }
            let done = eof || error.is_some();
            let cut = if eof {
                buf.len()
            } else {
                match memchr::memrchr(b'\n', &buf) {
                    Some(i) => i + 1,
                    None if done => 0,
                    None => {
                        // One line longer than a chunk: keep reading until it ends.
                        want = buf.len() + chunk_bytes.min(READ_STEP);
                        continue;
                    }
                }
            };
            want = chunk_bytes;
            let mut next = recycle_rx.try_recv().unwrap_or_else(|_| fresh());
            next.clear();
            next.extend_from_slice(&buf[cut..]);
            buf.truncate(cut);
            let data = std::mem::replace(&mut buf, next);
            let mut line_ends: Vec<usize> = memchr::memchr_iter(b'\n', &data).collect();
            if !data.is_empty() && !data.ends_with(b"\n") {
                line_ends.push(data.len());
            }
            let end_offset = offset + data.len() as u64;
            let next_line = line + line_ends.len() as u64;
            let chunk = Chunk {
                index,
                line_ends,
                first_line: line,
                end: src.resume_pos(end_offset, next_line),
                compressed_offset: src.compressed_offset(),
                error: error.map(|message| StreamError { message, line: next_line }),
                data: ChunkData::Owned(data),
            };
            offset = end_offset;
            line = next_line;
            index += 1;
            let empty = chunk.data.is_empty() && chunk.error.is_none();
            if !empty && tx.send(chunk).is_err() {
                return; // the consumer stopped
            }
            if done {
                return;
            }
        }
    });
    ChunkReader { chunks: rx, recycle: recycle_tx, handle }
}

/// Chunks of a memory-mapped plain file, from `start` to its end.
pub fn spawn_mapped_reader(map: Arc<Mmap>, start: ResumePos, first_index: u64, chunk_bytes: usize) -> ChunkReader {
    let (tx, rx) = sync_channel::<Chunk>(2);
    let (recycle_tx, _) = channel::<Vec<u8>>();
    let handle = std::thread::spawn(move || {
        let _ = map.advise(memmap2::Advice::Sequential);
        let len = map.len();
        let mut pos = (start.text_offset as usize).min(len);
        let mut line = start.line;
        let mut index = first_index;
        while pos < len {
            let limit = pos.saturating_add(chunk_bytes).min(len);
            let end = if limit == len {
                len
            } else {
                match memchr::memrchr(b'\n', &map[pos..limit]) {
                    Some(i) => pos + i + 1,
                    // One line longer than a chunk: run to its end.
                    None => memchr::memchr(b'\n', &map[limit..]).map_or(len, |i| limit + i + 1),
                }
            };
            let bytes = &map[pos..end];
            let mut line_ends: Vec<usize> = memchr::memchr_iter(b'\n', bytes).collect();
            if !bytes.ends_with(b"\n") {
                line_ends.push(bytes.len());
            }
            let next_line = line + line_ends.len() as u64;
            let chunk = Chunk {
                index,
                data: ChunkData::Mapped(Arc::clone(&map), pos..end),
                line_ends,
                first_line: line,
                end: ResumePos {
                    member_offset: end as u64,
                    skip_in_member: 0,
                    text_offset: end as u64,
                    line: next_line,
                    block_bit: None,
                },
                compressed_offset: end as u64,
                error: None,
            };
            if tx.send(chunk).is_err() {
                return;
            }
            pos = end;
            line = next_line;
            index += 1;
        }
    });
    ChunkReader { chunks: rx, recycle: recycle_tx, handle }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chunks_hold_whole_lines_and_number_them() {
        let text: String = (1..=500).map(|i| format!("entity number {i}\n")).collect();
        let dir = std::env::temp_dir().join(format!("ditto-chunks-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let p = dir.join("lines.txt");
        std::fs::write(&p, &text).unwrap();
        let (src, _) = DumpSource::open(&p).unwrap();
        let start = ResumePos { line: 1, ..Default::default() };
        let reader = spawn_reader(src, start, 0, 1000);
        let mut all = Vec::new();
        let mut expect_line = 1;
        let mut n = 0;
        while let Some(c) = reader.next() {
            assert_eq!(c.index, n);
            assert_eq!(c.first_line, expect_line);
            assert!(c.data.ends_with(b"\n"));
            for (no, l) in c.lines() {
                assert_eq!(String::from_utf8_lossy(l), format!("entity number {no}"));
                expect_line = no + 1;
            }
            assert_eq!(c.end.line, expect_line);
            all.extend_from_slice(&c.data);
            reader.recycle(c);
            n += 1;
        }
        reader.finish().unwrap();
        assert!(n > 5);
        assert_eq!(all, text.as_bytes());
    }

    #[test]
    fn mapped_chunks_match_read_chunks() {
        let text: String = (0..300).map(|i| format!("{}\n", "y".repeat(i % 97))).collect::<String>() + "tail";
        let dir = std::env::temp_dir().join(format!("ditto-chunks-map-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let p = dir.join("m.txt");
        std::fs::write(&p, &text).unwrap();
        let collect = |r: ChunkReader| {
            let mut out = Vec::new();
            while let Some(c) = r.next() {
                out.push((c.first_line, c.end, c.lines().iter().map(|(n, l)| (*n, l.to_vec())).collect::<Vec<_>>()));
                r.recycle(c);
            }
            r.finish().unwrap();
            out
        };
        let start = ResumePos { line: 1, ..Default::default() };
        let map = Arc::new(unsafe { Mmap::map(&std::fs::File::open(&p).unwrap()).unwrap() });
        let mapped = collect(spawn_mapped_reader(Arc::clone(&map), start, 0, 500));
        let (src, _) = DumpSource::open(&p).unwrap();
        let read = collect(spawn_reader(src, start, 0, 500));
        assert!(mapped.len() > 5);
        assert_eq!(mapped, read);
        // Resuming from a chunk end gives the rest.
        let (_, at, _) = mapped[2].clone();
        assert_eq!(collect(spawn_mapped_reader(map, at, 3, 500)), mapped[3..].to_vec());
    }

    #[test]
    fn lines_longer_than_a_chunk_are_read_whole() {
        let text: String = (0..20).map(|i| format!("{}\n", "x".repeat(50 + i * 40))).collect();
        let dir = std::env::temp_dir().join(format!("ditto-chunks-long-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let p = dir.join("long.txt");
        std::fs::write(&p, &text).unwrap();
        let (src, _) = DumpSource::open(&p).unwrap();
        let reader = spawn_reader(src, ResumePos { line: 1, ..Default::default() }, 0, 64);
        let mut all = Vec::new();
        while let Some(c) = reader.next() {
            all.extend_from_slice(&c.data);
        }
        reader.finish().unwrap();
        assert_eq!(all, text.as_bytes());
    }

    #[test]
    fn last_line_without_newline_is_kept() {
        let c = Chunk {
            index: 0,
            data: ChunkData::Owned(b"a\nb".to_vec()),
            line_ends: vec![1, 3],
            first_line: 7,
            end: ResumePos::default(),
            compressed_offset: 0,
            error: None,
        };
        assert_eq!(c.lines(), vec![(7, &b"a"[..]), (8, &b"b"[..])]);
    }
}
