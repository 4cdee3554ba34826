//! Reading a dump file: plain, gzip or bzip2, detected by magic bytes.
//!
//! Compressed dumps are often several members (gzip) or streams (bzip2)
//! concatenated, because they are written in parallel. The reader decodes one
//! member at a time and remembers where each member starts in the compressed
//! file, so a resumed scan can seek to the member that holds its checkpoint and
//! only decompress-and-discard the part of that member it already read, instead
//! of the whole file before it.
//!
//! bzip2 is decoded in parallel across its blocks (`bz2par`), and its resume
//! points are blocks rather than streams: a single-stream dump of 100 GB
//! resumes at the block (at most 900 kB of text) holding the checkpoint.
use std::fs::File;
use std::io::{self, BufRead, BufReader, Read, Seek, SeekFrom};
use std::path::Path;

use serde::{Deserialize, Serialize};

use super::bz2par::ParallelBz2;

const READ_BUFFER: usize = 1 << 20;

/// How the file is compressed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Codec {
    Plain,
    Gzip,
    Bzip2,
}

impl Codec {
    /// Detects the codec from the first bytes of the file; other known
    /// compressions are named in the error so the user knows what to do.
    pub fn sniff(head: &[u8]) -> Result<Codec, String> {
        if head.starts_with(&[0x1f, 0x8b]) {
            Ok(Codec::Gzip)
        } else if head.starts_with(b"BZh") {
            Ok(Codec::Bzip2)
        } else if head.starts_with(&[0xfd, b'7', b'z', b'X', b'Z', 0x00]) {
            Err("xz compression is not supported; decompress it or recompress with gzip or bzip2".into())
        } else if head.starts_with(&[0x28, 0xb5, 0x2f, 0xfd]) {
            Err("zstd compression is not supported; decompress it or recompress with gzip or bzip2".into())
        } else {
            Ok(Codec::Plain)
        }
    }
}

/// A place in the dump where reading can restart: the compressed offset of the
/// member holding it, how many decompressed bytes of that member precede it,
/// and its offset and line number in the whole decompressed text.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ResumePos {
    pub member_offset: u64,
    pub skip_in_member: u64,
    pub text_offset: u64,
    pub line: u64,
    /// bzip2 read in parallel: the first bit of the block holding the
    /// position (`skip_in_member` then counts from that block's start).
    /// Absent in checkpoints written before blocks were resume points.
    #[serde(default)]
    pub block_bit: Option<u64>,
}

/// A `BufRead` over the file that counts the compressed bytes consumed, so the
/// start of the next member is known exactly once a member decoder finishes.
struct Counted {
    inner: BufReader<File>,
    consumed: u64,
}

impl Read for Counted {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.consumed += n as u64;
        Ok(n)
    }
}

impl BufRead for Counted {
    fn fill_buf(&mut self) -> io::Result<&[u8]> {
        self.inner.fill_buf()
    }
    fn consume(&mut self, amt: usize) {
        self.consumed += amt as u64;
        self.inner.consume(amt);
    }
}

// One decoder per file, so the size difference between variants does not matter.
#[allow(clippy::large_enum_variant)]
enum Decoder {
    Plain(Counted),
    Gzip(flate2::bufread::GzDecoder<Counted>),
    Bzip2(bzip2::bufread::BzDecoder<Counted>),
    ParallelBzip2(ParallelBz2),
}

impl Decoder {
    fn new(codec: Codec, src: Counted) -> Decoder {
        match codec {
            Codec::Plain => Decoder::Plain(src),
            Codec::Gzip => Decoder::Gzip(flate2::bufread::GzDecoder::new(src)),
            Codec::Bzip2 => Decoder::Bzip2(bzip2::bufread::BzDecoder::new(src)),
        }
    }
    fn into_inner(self) -> Counted {
        match self {
            Decoder::Plain(s) => s,
            Decoder::Gzip(d) => d.into_inner(),
            Decoder::Bzip2(d) => d.into_inner(),
            Decoder::ParallelBzip2(..) => unreachable!("the parallel reader reads every stream itself"),
        }
    }
    fn compressed_consumed(&self) -> u64 {
        match self {
            Decoder::Plain(s) => s.consumed,
            Decoder::Gzip(d) => d.get_ref().consumed,
            Decoder::Bzip2(d) => d.get_ref().consumed,
            Decoder::ParallelBzip2(p) => p.compressed_offset(),
        }
    }
}

/// Decompressed text of a dump, read member by member.
pub struct DumpSource {
    codec: Codec,
    decoder: Option<Decoder>,
    /// Decompressed offset of the next byte `read` returns.
    text_offset: u64,
    /// (decompressed offset, compressed offset) of the current member's start.
    member: (u64, u64),
    /// Member starts seen so far that a checkpoint may still need, oldest first.
    members: Vec<(u64, u64)>,
    file_len: u64,
}

impl DumpSource {
    /// Opens `path` at its start; bzip2 is decoded in parallel.
    pub fn open(path: &Path) -> io::Result<(DumpSource, Result<Codec, String>)> {
        let (mut source, codec) = DumpSource::open_sequential(path)?;
        if source.codec == Codec::Bzip2 {
            source.decoder = Some(Decoder::ParallelBzip2(ParallelBz2::open(path, 0, 0)?));
        }
        Ok((source, codec))
    }

    /// Opens `path` at its start with one decoding thread (the reference the
    /// parallel bzip2 reader is checked against, and a cheap way to sniff).
    pub fn open_sequential(path: &Path) -> io::Result<(DumpSource, Result<Codec, String>)> {
        let mut file = File::open(path)?;
        let file_len = file.metadata()?.len();
        let mut head = [0u8; 8];
        let n = read_up_to(&mut file, &mut head)?;
        let codec = Codec::sniff(&head[..n]);
        file.seek(SeekFrom::Start(0))?;
        let c = *codec.as_ref().unwrap_or(&Codec::Plain);
        let src = Counted { inner: BufReader::with_capacity(READ_BUFFER, file), consumed: 0 };
        let source = DumpSource {
            codec: c,
            decoder: Some(Decoder::new(c, src)),
            text_offset: 0,
            member: (0, 0),
            members: vec![(0, 0)],
            file_len,
        };
        Ok((source, codec))
    }

    /// Opens `path` at a checkpointed position: seeks to the member that holds
    /// it and discards the decompressed bytes of that member before it.
    pub fn open_at(path: &Path, codec: Codec, pos: &ResumePos) -> io::Result<DumpSource> {
        let mut file = File::open(path)?;
        let file_len = file.metadata()?.len();
        file.seek(SeekFrom::Start(pos.member_offset))?;
        let src = Counted { inner: BufReader::with_capacity(READ_BUFFER, file), consumed: pos.member_offset };
        let member_text_start = pos.text_offset - pos.skip_in_member;
        let decoder = if codec == Codec::Bzip2 {
            // A block start, or (older checkpoints) a stream's first byte.
            let bit = pos.block_bit.unwrap_or(pos.member_offset * 8);
            Decoder::ParallelBzip2(ParallelBz2::open(path, bit, member_text_start)?)
        } else {
            Decoder::new(codec, src)
        };
        let mut source = DumpSource {
            codec,
            decoder: Some(decoder),
            text_offset: member_text_start,
            member: (member_text_start, pos.member_offset),
            members: vec![(member_text_start, pos.member_offset)],
            file_len,
        };
        let mut left = pos.skip_in_member;
        let mut sink = vec![0u8; READ_BUFFER];
        while left > 0 {
            let want = left.min(sink.len() as u64) as usize;
            let n = source.read(&mut sink[..want])?;
            if n == 0 {
                return Err(io::Error::new(io::ErrorKind::UnexpectedEof, "the dump is shorter than its checkpoint"));
            }
            left -= n as u64;
        }
        Ok(source)
    }

    pub fn file_len(&self) -> u64 {
        self.file_len
    }

    /// Compressed bytes consumed so far (for progress).
    pub fn compressed_offset(&self) -> u64 {
        self.decoder.as_ref().map_or(self.file_len, Decoder::compressed_consumed)
    }

    /// The resume position for decompressed offset `text_offset` (a line start
    /// at or after the oldest member still remembered) at line `line`.
    /// Members wholly before it are forgotten.
    pub fn resume_pos(&mut self, text_offset: u64, line: u64) -> ResumePos {
        if self.codec == Codec::Plain {
            return ResumePos { member_offset: text_offset, skip_in_member: 0, text_offset, line, block_bit: None };
        }
        if let Some(Decoder::ParallelBzip2(p)) = self.decoder.as_mut() {
            let (bit, skip) = p.resume_point(text_offset);
            return ResumePos { member_offset: bit / 8, skip_in_member: skip, text_offset, line, block_bit: Some(bit) };
        }
        let idx = self.members.iter().rposition(|&(t, _)| t <= text_offset).unwrap_or(0);
        self.members.drain(..idx);
        let (t, c) = self.members[0];
        ResumePos { member_offset: c, skip_in_member: text_offset - t, text_offset, line, block_bit: None }
    }

    fn next_member(&mut self) -> io::Result<bool> {
        let mut src = self.decoder.take().expect("decoder present").into_inner();
        let more = !src.fill_buf()?.is_empty();
        if more {
            self.member = (self.text_offset, src.consumed);
            self.members.push(self.member);
        }
        self.decoder = Some(Decoder::new(self.codec, src));
        Ok(more)
    }
}

impl Read for DumpSource {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if buf.is_empty() {
            return Ok(0);
        }
        loop {
            let n = match self.decoder.as_mut().expect("decoder present") {
                Decoder::Plain(s) => s.read(buf)?,
                Decoder::Gzip(d) => d.read(buf)?,
                Decoder::Bzip2(d) => d.read(buf)?,
                Decoder::ParallelBzip2(p) => {
                    // It reads across streams itself: 0 is the end of the file.
                    let n = p.read(buf)?;
                    self.text_offset += n as u64;
                    return Ok(n);
                }
            };
            if n > 0 {
                self.text_offset += n as u64;
                return Ok(n);
            }
            // A member ended: stop at end of file, else decode the next member.
            if self.codec == Codec::Plain || !self.next_member()? {
                return Ok(0);
            }
        }
    }
}

fn read_up_to(r: &mut impl Read, buf: &mut [u8]) -> io::Result<usize> {
    let mut n = 0;
    while n < buf.len() {
        match r.read(&mut buf[n..])? {
            0 => break,
            k => n += k,
        }
    }
    Ok(n)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    fn gz(parts: &[&[u8]]) -> Vec<u8> {
        let mut out = Vec::new();
        for p in parts {
            let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
            e.write_all(p).unwrap();
            out.extend(e.finish().unwrap());
        }
        out
    }

    fn bz(parts: &[&[u8]]) -> Vec<u8> {
        let mut out = Vec::new();
        for p in parts {
            let mut e = bzip2::write::BzEncoder::new(Vec::new(), bzip2::Compression::fast());
            e.write_all(p).unwrap();
            out.extend(e.finish().unwrap());
        }
        out
    }

    fn tmp(name: &str, bytes: &[u8]) -> std::path::PathBuf {
        let dir = std::env::temp_dir().join(format!("ditto-source-{}-{}", std::process::id(), name));
        std::fs::create_dir_all(&dir).unwrap();
        let p = dir.join(name);
        std::fs::write(&p, bytes).unwrap();
        p
    }

    fn read_all(src: &mut DumpSource) -> Vec<u8> {
        let mut v = Vec::new();
        src.read_to_end(&mut v).unwrap();
        v
    }

    #[test]
    fn sniffs_codecs() {
        assert_eq!(Codec::sniff(&[0x1f, 0x8b, 8]).unwrap(), Codec::Gzip);
        assert_eq!(Codec::sniff(b"BZh91AY").unwrap(), Codec::Bzip2);
        assert_eq!(Codec::sniff(b"[\n{").unwrap(), Codec::Plain);
        assert!(Codec::sniff(&[0x28, 0xb5, 0x2f, 0xfd]).unwrap_err().contains("zstd"));
    }

    #[test]
    fn multi_member_streams_read_whole_and_resume_inside_a_member() {
        let parts: [&[u8]; 3] = [b"line one\nline two\n", b"line three\n", b"line four\nline five\n"];
        let whole: Vec<u8> = parts.concat();
        for (name, bytes) in [("m.gz", gz(&parts)), ("m.bz2", bz(&parts)), ("m.txt", whole.clone())] {
            let p = tmp(name, &bytes);
            let (mut src, codec) = DumpSource::open(&p).unwrap();
            let codec = codec.unwrap();
            assert_eq!(read_all(&mut src), whole, "{name}");
            // Resume at the start of "line four" (inside the third member).
            let at = whole[..].iter().enumerate().filter(|(_, &b)| b == b'\n').map(|(i, _)| i + 1).nth(2).unwrap();
            assert_eq!(&whole[at..at + 9], b"line four");
            let pos = src.resume_pos(at as u64, 3);
            if codec != Codec::Plain {
                assert!(pos.member_offset > 0, "{name}: seeks past earlier members");
                assert_eq!(pos.skip_in_member, 0, "{name}: line four starts the third member");
            }
            let mut again = DumpSource::open_at(&p, codec, &pos).unwrap();
            assert_eq!(read_all(&mut again), whole[at..].to_vec(), "{name}");
            // And from inside a member.
            let at2 = at + 5;
            let (mut src2, _) = DumpSource::open(&p).unwrap();
            read_all(&mut src2);
            let pos2 = src2.resume_pos(at2 as u64, 0);
            let mut again2 = DumpSource::open_at(&p, codec, &pos2).unwrap();
            assert_eq!(read_all(&mut again2), whole[at2..].to_vec(), "{name}");
        }
    }

    #[test]
    fn truncated_gzip_is_an_error_after_the_readable_text() {
        let data: Vec<u8> = (0..20000).map(|i| format!("row {i}\n")).collect::<String>().into_bytes();
        let bytes = gz(&[&data]);
        let p = tmp("t.gz", &bytes[..bytes.len() / 2]);
        let (mut src, _) = DumpSource::open(&p).unwrap();
        let mut got = Vec::new();
        let mut buf = vec![0u8; 4096];
        let err = loop {
            match src.read(&mut buf) {
                Ok(0) => break None,
                Ok(n) => got.extend_from_slice(&buf[..n]),
                Err(e) => break Some(e),
            }
        };
        assert!(err.is_some(), "a cut gzip stream must not look complete");
        assert!(!got.is_empty() && data.starts_with(&got));
    }
}
