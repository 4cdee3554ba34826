//! Parallel bzip2 decompression across blocks.
//!
//! A bzip2 file is one or more streams; each stream is a header (`BZh1`..`BZh9`),
//! blocks of at most 900 kB of text, and an end-of-stream marker with the
//! stream's CRC. Every block starts with a 48-bit magic (the digits of pi) and
//! carries its own CRC, but blocks are not byte-aligned. Each block can be
//! decoded alone: its bits are copied behind a fresh stream header and
//! followed by an end marker whose stream CRC is the block's own CRC (the CRC
//! of a one-block stream), and the result is an ordinary bzip2 stream for the
//! `bzip2` crate's decoder. Batches of blocks are decoded on the rayon pool
//! while the caller parses the previous batch, so the scan scales with cores.
//!
//! The magics are found by searching, for each of the 8 bit alignments, the 4
//! bytes of each magic that are whole bytes at that alignment (`memchr::memmem`),
//! then checking all 48 bits. A match inside compressed data is possible (about
//! once per 2^48 bits): the two halves of the block it cuts then fail to decode,
//! and the block is decoded again across the false marker.
//!
//! Perf note: we looked for a crate first. The parallel bzip2 decoders on the
//! registry were young single-author projects, one pulling a C libbz2 build
//! and `anyhow`; this file is ~300 lines over the `bzip2` crate already used
//! for the sequential reader, whose decoder checks every block's CRC.
use std::collections::VecDeque;
use std::fs::File;
use std::io::{self, Read};
use std::path::Path;
use std::sync::mpsc::{sync_channel, Receiver};
use std::sync::Arc;
use std::thread::JoinHandle;

use memmap2::Mmap;
use rayon::prelude::*;

const BLOCK_MAGIC: u64 = 0x3141_5926_5359;
const END_MAGIC: u64 = 0x1772_4538_5090;
/// Compressed bytes searched for markers at a time.
const SCAN_WINDOW: usize = 4 << 20;

/// A marker's kind and its first bit in the file.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
struct Marker {
    bit: u64,
    end: bool,
}

/// The `n` (at most 56) bits at `bit`, MSB first as bzip2 writes them, or
/// None when the file ends before them.
fn read_bits(data: &[u8], bit: u64, n: u32) -> Option<u64> {
    let byte = (bit / 8) as usize;
    let shift = (bit % 8) as u32;
    let need = (shift + n).div_ceil(8) as usize;
    let bytes = data.get(byte..byte + need)?;
    let w = bytes.iter().fold(0u64, |w, &b| (w << 8) | b as u64);
    Some((w >> (need as u32 * 8 - shift - n)) & ((1 << n) - 1))
}

fn bits48(data: &[u8], bit: u64) -> Option<u64> {
    read_bits(data, bit, 48)
}

/// Every block and end marker starting in `data[from..to]` (byte range), sorted.
fn find_markers(data: &[u8], from: usize, to: usize) -> Vec<Marker> {
    let mut out = Vec::new();
    // A marker at bit (i - 1) * 8 + s has its bytes 1..5 at i: search a little
    // past `to` so markers starting before `to` are found whole.
    let hay = &data[from..(to + 6).min(data.len())];
    for (magic, end) in [(BLOCK_MAGIC, false), (END_MAGIC, true)] {
        for s in 0..8u64 {
            let word = (magic << (16 - s)).to_be_bytes();
            let needle = &word[1..5];
            for i in memchr::memmem::find_iter(hay, needle) {
                let at = from + i;
                if at == 0 {
                    continue;
                }
                let bit = (at as u64 - 1) * 8 + s;
                if bit >= (to as u64) * 8 || bit < (from as u64) * 8 {
                    continue;
                }
                if bits48(data, bit) == Some(magic) {
                    out.push(Marker { bit, end });
                }
            }
        }
    }
    out.sort_unstable();
    out.dedup();
    out
}

/// Appends bits `[from, to)` of `src` to a byte-aligned stream.
struct BitWriter {
    out: Vec<u8>,
    /// Bits used in the last byte of `out` (0 = it is full or `out` is empty).
    used: u32,
}

impl BitWriter {
    fn push_bits(&mut self, value: u64, n: u32) {
        for k in (0..n).rev() {
            let bit = ((value >> k) & 1) as u8;
            if self.used == 0 {
                self.out.push(0);
            }
            let last = self.out.last_mut().expect("a byte was pushed");
            *last |= bit << (7 - self.used);
            self.used = (self.used + 1) % 8;
        }
    }

    /// Copies bits `[from, to)` of `src`; the writer must be byte-aligned.
    fn copy_bits(&mut self, src: &[u8], from: u64, to: u64) {
        debug_assert_eq!(self.used, 0);
        let shift = (from % 8) as u32;
        let (first, n) = ((from / 8) as usize, to - from);
        let whole = (n / 8) as usize;
        if shift == 0 {
            self.out.extend_from_slice(&src[first..first + whole]);
        } else {
            self.out.extend((0..whole).map(|j| {
                let hi = src[first + j] << shift;
                let lo = src.get(first + j + 1).map_or(0, |b| b >> (8 - shift));
                hi | lo
            }));
        }
        let rest = (n % 8) as u32;
        if rest > 0 {
            let at = from + whole as u64 * 8;
            let byte = (at / 8) as usize;
            let s = (at % 8) as u32;
            let two = ((src[byte] as u16) << 8) | src.get(byte + 1).map_or(0, |&b| b as u16);
            let v = (two >> (16 - s - rest)) & ((1 << rest) - 1);
            self.push_bits(v as u64, rest);
        }
    }
}

/// What decoding one block (or a run of blocks) gave.
struct Decoded {
    text: Vec<u8>,
    /// Set when the block did not decode; `text` is what came out before.
    error: Option<String>,
}

/// Decodes the bits `[from, to)` (one or more whole blocks) as a stream. With
/// `closed`, an end marker carrying the last block's CRC follows them (a
/// block that is not the stream's last is closed the same way, as a stream
/// of its own); without it the bits run to the end of a cut file.
fn decode_blocks(data: &[u8], from: u64, to: u64, closed: Option<u32>) -> Decoded {
    let mut w = BitWriter { out: Vec::with_capacity(((to - from) / 8) as usize + 16), used: 0 };
    w.out.extend_from_slice(b"BZh9");
    w.copy_bits(data, from, to);
    if let Some(crc) = closed {
        w.push_bits(END_MAGIC, 48);
        w.push_bits(crc as u64, 32);
    }
    let input = w.out;
    let mut d = bzip2::Decompress::new(false);
    let mut text = Vec::with_capacity(1 << 20);
    loop {
        if text.len() == text.capacity() {
            text.reserve(text.capacity());
        }
        let done_in = d.total_in() as usize;
        match d.decompress_vec(&input[done_in..], &mut text) {
            Ok(bzip2::Status::StreamEnd) => return Decoded { text, error: None },
            Ok(_) if d.total_in() as usize == input.len() && text.len() < text.capacity() => {
                return Decoded { text, error: Some("the bits end inside a block".into()) }
            }
            Ok(_) => {}
            Err(e) => return Decoded { text, error: Some(format!("corrupt block ({e})")) },
        }
    }
}

/// The CRC stored right after a block's magic.
fn block_crc(data: &[u8], bit: u64) -> u32 {
    read_bits(data, bit + 48, 32).unwrap_or(0) as u32
}

/// One decoded block handed to the reader, with where it came from.
pub struct Block {
    pub text: Vec<u8>,
    /// First bit of the block's magic in the file.
    pub bit: u64,
    /// Bit just after the block's last bit (the next marker).
    pub end_bit: u64,
    /// Set on the last block delivered when the file is cut or corrupt.
    pub error: Option<String>,
}

/// Decodes a file's blocks in order from the block starting at `start_bit`
/// (or the first one after it), sending batches to `tx`.
fn produce(map: Arc<Mmap>, start_bit: u64, tx: std::sync::mpsc::SyncSender<Vec<Block>>) {
    let data: &[u8] = &map;
    let mut markers: VecDeque<Marker> = VecDeque::new();
    let mut scanned = (start_bit / 8) as usize; // bytes searched so far
    let batch = 2 * rayon::current_num_threads().max(1);
    // Keeps at least `n` markers queued, or all that are left.
    let fill = |markers: &mut VecDeque<Marker>, scanned: &mut usize, n: usize| {
        while markers.len() < n && *scanned < data.len() {
            let to = (*scanned + SCAN_WINDOW).min(data.len());
            markers.extend(find_markers(data, *scanned, to).into_iter().filter(|m| m.bit >= start_bit));
            *scanned = to;
        }
    };
    let file_bits = data.len() as u64 * 8;
    // The running stream CRC, checked at each end marker as the sequential
    // decoder does; unknown for a stream entered mid-way on a resume.
    let at_stream_start = start_bit % 8 == 0 && data.get((start_bit / 8) as usize..).is_some_and(|d| d.starts_with(b"BZh"));
    let mut combined: Option<u32> = if start_bit == 0 || at_stream_start { Some(0) } else { None };
    loop {
        fill(&mut markers, &mut scanned, batch + 1);
        // Blocks start only at block magics.
        while markers.front().is_some_and(|m| m.end) {
            markers.pop_front();
        }
        if markers.is_empty() {
            return;
        }
        // Segments: each block magic up to the next marker (None: end of file).
        let segs: Vec<(u64, Option<Marker>)> = (0..markers.len())
            .filter(|&k| !markers[k].end)
            .take(batch)
            .map(|k| (markers[k].bit, markers.get(k + 1).copied()))
            .collect();
        let decode = |from: u64, next: Option<Marker>| {
            let to = next.map_or(file_bits, |m| m.bit);
            decode_blocks(data, from, to, next.map(|_| block_crc(data, from)))
        };
        let mut results: Vec<Option<Decoded>> =
            segs.par_iter().map(|&(from, next)| Some(decode(from, next))).collect();
        let mut blocks = Vec::with_capacity(segs.len());
        let mut stop = false;
        for (k, &(from, first_next)) in segs.iter().enumerate() {
            let (mut next, mut got) = (first_next, results[k].take().expect("each result is taken once"));
            // A failed block followed by more markers may be cut by a false
            // marker: decode it again across the following markers.
            let mut absorbed = 0;
            while let (Some(_), Some(m)) = (&got.error, next) {
                if absorbed == 4 {
                    break;
                }
                if !markers.iter().any(|x| x.bit > m.bit) {
                    let want = markers.len() + 1;
                    fill(&mut markers, &mut scanned, want);
                }
                next = markers.iter().find(|x| x.bit > m.bit).copied();
                got = decode(from, next);
                absorbed += 1;
            }
            let to = next.map_or(file_bits, |m| m.bit);
            if got.error.is_none() {
                let crc = block_crc(data, from);
                combined = combined.map(|c| c.rotate_left(1) ^ crc);
                if let Some(m) = next.filter(|m| m.end) {
                    got.error = match (read_bits(data, m.bit + 48, 32).map(|v| v as u32), combined) {
                        (None, _) => Some("the file ends inside the end of its stream".into()),
                        (Some(stored), Some(c)) if stored != c => Some("stream CRC mismatch".into()),
                        _ => None,
                    };
                    combined = Some(0);
                }
            } else if next.is_none() {
                got.error = Some("the file ends inside this block".into());
            }
            if let Some(e) = &got.error {
                got.error = Some(format!("bzip2 block at compressed byte {}: {e}", from / 8));
                stop = true;
            }
            blocks.push(Block { text: got.text, bit: from, end_bit: to, error: got.error });
            // Forget markers before the end of what was consumed.
            while markers.front().is_some_and(|m| m.bit < to) {
                markers.pop_front();
            }
            // A retry swallowed later segments: the rest of the batch is stale.
            if stop || absorbed > 0 {
                break;
            }
        }
        if tx.send(blocks).is_err() || stop {
            return;
        }
    }
}

/// Decompressed text of a bzip2 file, decoded in parallel; a `Read`.
pub struct ParallelBz2 {
    rx: Receiver<Vec<Block>>,
    handle: Option<JoinHandle<()>>,
    pending: VecDeque<Block>,
    /// The block being read and how much of it was returned.
    current: Option<(Block, usize)>,
    /// Decompressed offset of the next byte `read` returns.
    text_offset: u64,
    /// (decompressed offset, first bit) of blocks a checkpoint may still need.
    starts: VecDeque<(u64, u64)>,
    /// Bit after the last block handed out.
    end_bit: u64,
    failed: bool,
}

impl ParallelBz2 {
    /// Reads `path` from the block whose magic starts at `start_bit` (or the
    /// first block at or after it); `text_offset` is that block's
    /// decompressed offset in the whole text.
    pub fn open(path: &Path, start_bit: u64, text_offset: u64) -> io::Result<ParallelBz2> {
        let file = File::open(path)?;
        // SAFETY: the dump is read-only input; a file changed under a scan is
        // caught by the checkpoint fingerprint on the next run.
        let map = Arc::new(unsafe { Mmap::map(&file)? });
        let _ = map.advise(memmap2::Advice::Sequential);
        let (tx, rx) = sync_channel(2);
        let handle = std::thread::spawn(move || produce(map, start_bit, tx));
        Ok(ParallelBz2 {
            rx,
            handle: Some(handle),
            pending: VecDeque::new(),
            current: None,
            text_offset,
            starts: VecDeque::new(),
            end_bit: start_bit,
            failed: false,
        })
    }

    /// Compressed bytes consumed so far.
    pub fn compressed_offset(&self) -> u64 {
        self.end_bit / 8
    }

    /// (first bit of the block, decompressed bytes of it before `text_offset`)
    /// for a line start at `text_offset`; earlier blocks are forgotten.
    pub fn resume_point(&mut self, text_offset: u64) -> (u64, u64) {
        let idx = self.starts.iter().rposition(|&(t, _)| t <= text_offset).unwrap_or(0);
        self.starts.drain(..idx);
        match self.starts.front() {
            Some(&(t, bit)) => (bit, text_offset - t),
            None => (self.end_bit, 0),
        }
    }

    fn next_block(&mut self) -> Option<Block> {
        if self.pending.is_empty() {
            self.pending.extend(self.rx.recv().ok()?);
        }
        self.pending.pop_front()
    }
}

impl Read for ParallelBz2 {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        loop {
            if let Some((block, done)) = &mut self.current {
                if *done < block.text.len() {
                    let n = buf.len().min(block.text.len() - *done);
                    buf[..n].copy_from_slice(&block.text[*done..*done + n]);
                    *done += n;
                    self.text_offset += n as u64;
                    return Ok(n);
                }
                if let Some(e) = block.error.take() {
                    self.failed = true;
                    return Err(io::Error::new(io::ErrorKind::InvalidData, e));
                }
            }
            if self.failed {
                return Ok(0);
            }
            match self.next_block() {
                None => {
                    self.current = None;
                    return Ok(0);
                }
                Some(block) => {
                    self.starts.push_back((self.text_offset, block.bit));
                    self.end_bit = block.end_bit;
                    self.current = Some((block, 0));
                }
            }
        }
    }
}

impl Drop for ParallelBz2 {
    fn drop(&mut self) {
        // Closing the channel stops the producer after its current batch.
        let (_, dead) = sync_channel(0);
        self.rx = dead;
        if let Some(h) = self.handle.take() {
            let _ = h.join();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    fn text(n: usize, seed: u64) -> Vec<u8> {
        // Varied lines, so bzip2 needs many blocks at level 1 (100 kB each).
        let mut x = seed;
        (0..n)
            .map(|i| {
                x = x.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
                format!("{{\"id\":\"Q{i}\",\"v\":\"{:x}{:x}\"}},\n", x, x.rotate_left(17))
            })
            .collect::<String>()
            .into_bytes()
    }

    fn bz(parts: &[&[u8]]) -> Vec<u8> {
        let mut out = Vec::new();
        for p in parts {
            let mut e = bzip2::write::BzEncoder::new(Vec::new(), bzip2::Compression::new(1));
            e.write_all(p).unwrap();
            out.extend(e.finish().unwrap());
        }
        out
    }

    fn tmp(name: &str, bytes: &[u8]) -> std::path::PathBuf {
        let dir = std::env::temp_dir().join(format!("ditto-bz2par-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let p = dir.join(name);
        std::fs::write(&p, bytes).unwrap();
        p
    }

    /// (text, error) read through the sequential decoder of the `bzip2` crate.
    fn sequential(bytes: &[u8]) -> (Vec<u8>, bool) {
        let mut d = bzip2::read::MultiBzDecoder::new(bytes);
        let mut out = Vec::new();
        let mut buf = vec![0u8; 1 << 16];
        loop {
            match d.read(&mut buf) {
                Ok(0) => return (out, false),
                Ok(n) => out.extend_from_slice(&buf[..n]),
                Err(_) => return (out, true),
            }
        }
    }

    fn parallel(p: &Path) -> (Vec<u8>, Option<String>) {
        let mut r = ParallelBz2::open(p, 0, 0).unwrap();
        let mut out = Vec::new();
        let mut buf = vec![0u8; 1 << 16];
        loop {
            match r.read(&mut buf) {
                Ok(0) => return (out, None),
                Ok(n) => out.extend_from_slice(&buf[..n]),
                Err(e) => return (out, Some(e.to_string())),
            }
        }
    }

    #[test]
    fn finds_markers_at_every_alignment() {
        for s in 0..8u64 {
            let mut data = vec![0u8; 32];
            let bit = 40 + s;
            for k in 0..48 {
                if (BLOCK_MAGIC >> (47 - k)) & 1 == 1 {
                    let b = bit + k;
                    data[(b / 8) as usize] |= 0x80 >> (b % 8);
                }
            }
            assert_eq!(find_markers(&data, 0, data.len()), vec![Marker { bit, end: false }]);
            assert_eq!(bits48(&data, bit), Some(BLOCK_MAGIC));
        }
    }

    #[test]
    fn single_and_multi_stream_match_the_sequential_decoder() {
        let a = text(40_000, 1);
        let b = text(25_000, 2);
        let single = bz(&[&a]);
        let multi = bz(&[&a, b"", &b, &a[..1000]]);
        for (name, bytes) in [("single.bz2", single), ("multi.bz2", multi)] {
            let (want, err) = sequential(&bytes);
            assert!(!err);
            let (got, e) = parallel(&tmp(name, &bytes));
            assert_eq!(e, None, "{name}");
            assert!(got == want, "{name}: {} vs {} bytes", got.len(), want.len());
            assert!(got.len() > 1_000_000);
        }
    }

    #[test]
    fn a_file_cut_mid_block_gives_what_the_sequential_decoder_gives_and_the_offset() {
        let bytes = bz(&[&text(40_000, 3)]);
        for cut in [bytes.len() / 2, bytes.len() - 3, bytes.len() / 3 + 7] {
            let (want, err) = sequential(&bytes[..cut]);
            assert!(err);
            let (got, e) = parallel(&tmp(&format!("cut{cut}.bz2"), &bytes[..cut]));
            assert!(got == want, "cut at {cut}: {} vs {} bytes", got.len(), want.len());
            let e = e.expect("a cut file is an error");
            assert!(e.contains("at compressed byte") && e.contains("the file ends inside"), "{e}");
        }
    }

    #[test]
    fn a_false_marker_inside_a_block_is_decoded_across() {
        let bytes = bz(&[&text(20_000, 4)]);
        let data: &[u8] = &bytes;
        let real = find_markers(data, 0, data.len());
        // Decode the first block with a spurious marker inserted mid-block, as
        // the producer's retry does.
        let (b0, b1) = (real[0].bit, real[1].bit);
        let fake = (b0 + b1) / 2;
        let first = decode_blocks(data, b0, fake, Some(block_crc(data, b0)));
        assert!(first.error.is_some());
        let across = decode_blocks(data, b0, b1, Some(block_crc(data, b0)));
        assert!(across.error.is_none() && !across.text.is_empty());
    }

    #[test]
    fn resumes_from_a_block_start() {
        let a = text(30_000, 5);
        let bytes = bz(&[&a]);
        let p = tmp("resume.bz2", &bytes);
        let mut r = ParallelBz2::open(&p, 0, 0).unwrap();
        let mut head = vec![0u8; 700_000];
        r.read_exact(&mut head).unwrap();
        let (bit, skip) = r.resume_point(650_000);
        assert!(bit > 0);
        let mut again = ParallelBz2::open(&p, bit, 650_000 - skip).unwrap();
        let mut rest = Vec::new();
        again.read_to_end(&mut rest).unwrap();
        assert!(rest[skip as usize..] == a[650_000..]);
    }
}
