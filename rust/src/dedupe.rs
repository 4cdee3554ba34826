//! Exact and near-duplicate detection over a corpus of texts.
//!
//! * Exact: xxh3-128 of the normalised text, optionally within a group (for
//!   example one character's questions). The first occurrence is kept.
//! * Near: MinHash signatures of shingle sets, LSH banding into buckets,
//!   exact Jaccard verification of every candidate pair, union-find clusters.
//!   Each cluster keeps its lowest index, so the answer is a pure function of
//!   the input and the config, whatever the thread count.
//!
//! Perf notes (measured by bench/dedupe.py):
//! * Shingles are hashed once to u64 (words hashed, then n-grams combined by a
//!   multiply-xor mix), so no n-gram string is ever allocated.
//! * A permutation is a seeded murmur3-style finalizer on 32-bit lanes, so
//!   AVX2 (detected at run time) computes 8 permutations per instruction;
//!   64-bit `a*x+b` was about 3x slower, having no vector 64-bit multiply.
//!   Candidate recall is all that depends on it: candidates are verified.
//! * A band's key is a multiply-xorshift fold of its rows, not a byte hash.
//! * Only band hashes are kept (n * bands u64), never full signatures, and
//!   bands are processed one at a time: memory is O(n * bands + shingles).
//! * Within a bucket, a member is compared with at most `max_bucket_window`
//!   preceding members, and pairs already joined (by an earlier band or earlier
//!   in this bucket) are skipped, so a huge bucket costs O(size * window), not
//!   O(size^2). A bucket larger than the window is first sorted by the texts'
//!   one-byte MinHash sketches, which puts near-duplicates side by side
//!   (sorted neighbourhood); clusters then chain together.
//! * Pairs whose sketch estimate is far below the threshold skip the exact
//!   Jaccard: on 20k look-alike templated sessions this cut the time ~6x.
use std::collections::HashMap;
use std::fmt;

use rayon::prelude::*;
use xxhash_rust::xxh3::{xxh3_128, xxh3_64};

use crate::normalize::{normalize_with_breaks, Normalized};

/// Index of "no partner" in [`NearDuplicates::partner`].
pub const NO_PARTNER: u32 = u32::MAX;

#[derive(Debug, Clone, PartialEq)]
pub enum DedupeError {
    InvalidConfig(String),
    LengthMismatch { texts: usize, groups: usize },
    TooManyTexts(usize),
    ThreadPool(String),
}

impl fmt::Display for DedupeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::InvalidConfig(msg) => write!(f, "invalid dedupe config: {msg}"),
            Self::LengthMismatch { texts, groups } => {
                write!(f, "groups has {groups} entries but texts has {texts}")
            }
            Self::TooManyTexts(n) => write!(f, "{n} texts exceed the u32 index limit"),
            Self::ThreadPool(msg) => write!(f, "could not build a thread pool: {msg}"),
        }
    }
}

impl std::error::Error for DedupeError {}

/// How a text becomes a set of shingles.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ShingleConfig {
    /// Word n-gram size for scripts that separate words with spaces.
    pub word_ngram: usize,
    /// Character n-gram size inside runs of CJK characters, which have no spaces.
    pub cjk_char_ngram: usize,
}

impl Default for ShingleConfig {
    fn default() -> Self {
        Self { word_ngram: 3, cjk_char_ngram: 3 }
    }
}

/// MinHash LSH settings. `bands * rows` permutations are used for banding;
/// the rest (if any) are computed but unused, as in datasketch.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct LshConfig {
    pub shingles: ShingleConfig,
    pub num_perm: usize,
    pub bands: usize,
    pub rows: usize,
    /// Verified Jaccard similarity at or above which two texts are duplicates.
    pub threshold: f64,
    /// Seed of the permutation parameters.
    pub seed: u64,
    /// Most preceding bucket members a member is compared with.
    pub max_bucket_window: usize,
}

impl Default for LshConfig {
    fn default() -> Self {
        Self {
            shingles: ShingleConfig::default(),
            num_perm: 128,
            bands: 32,
            rows: 4,
            threshold: 0.7,
            seed: 1,
            max_bucket_window: 64,
        }
    }
}

impl LshConfig {
    pub fn validate(&self) -> Result<(), DedupeError> {
        let bad = |m: String| Err(DedupeError::InvalidConfig(m));
        if self.shingles.word_ngram == 0 || self.shingles.cjk_char_ngram == 0 {
            return bad("shingle sizes must be at least 1".into());
        }
        if self.bands == 0 || self.rows == 0 {
            return bad("bands and rows must be at least 1".into());
        }
        if self.bands * self.rows > self.num_perm {
            return bad(format!(
                "bands * rows = {} exceeds num_perm = {}",
                self.bands * self.rows,
                self.num_perm
            ));
        }
        if !(self.threshold > 0.0 && self.threshold <= 1.0) {
            return bad(format!("threshold {} must lie in (0, 1]", self.threshold));
        }
        if self.max_bucket_window == 0 {
            return bad("max_bucket_window must be at least 1".into());
        }
        Ok(())
    }
}

/// Runs `f` on a pool of `threads` threads, or on rayon's global pool when
/// `None`. Results never depend on the count; only speed does.
pub fn with_threads<T: Send>(
    threads: Option<usize>,
    f: impl FnOnce() -> T + Send,
) -> Result<T, DedupeError> {
    match threads {
        None => Ok(f()),
        Some(n) => {
            let pool = rayon::ThreadPoolBuilder::new()
                .num_threads(n.max(1))
                .build()
                .map_err(|e| DedupeError::ThreadPool(e.to_string()))?;
            Ok(pool.install(f))
        }
    }
}

fn check_sizes(n: usize, groups: Option<&[u64]>) -> Result<(), DedupeError> {
    if let Some(g) = groups {
        if g.len() != n {
            return Err(DedupeError::LengthMismatch { texts: n, groups: g.len() });
        }
    }
    if n >= NO_PARTNER as usize {
        return Err(DedupeError::TooManyTexts(n));
    }
    Ok(())
}

/// Every text normalised once (in parallel), for both dedupe passes.
pub fn normalize_all(texts: &[&str]) -> Vec<Normalized> {
    texts.par_iter().map(|t| normalize_with_breaks(t)).collect()
}

/// For each text, the index of the first text (within its group) whose
/// normalised form is identical; its own index if it is the first.
pub fn exact_duplicates(texts: &[&str], groups: Option<&[u64]>) -> Result<Vec<u32>, DedupeError> {
    check_sizes(texts.len(), groups)?;
    let norms = normalize_all(texts);
    exact_duplicates_normalized(&norms.iter().collect::<Vec<_>>(), groups)
}

/// [`exact_duplicates`] over texts already normalised.
pub fn exact_duplicates_normalized(norms: &[&Normalized], groups: Option<&[u64]>) -> Result<Vec<u32>, DedupeError> {
    check_sizes(norms.len(), groups)?;
    // 128-bit hashes: a collision among even 10^9 texts is out of reach.
    let hashes: Vec<u128> = norms.par_iter().map(|t| xxh3_128(t.text.as_bytes())).collect();
    let mut first: HashMap<(u64, u128), u32> = HashMap::with_capacity(hashes.len());
    Ok(hashes
        .iter()
        .enumerate()
        .map(|(i, &h)| {
            let g = groups.map_or(0, |g| g[i]);
            *first.entry((g, h)).or_insert(i as u32)
        })
        .collect())
}

/// Both passes of one column, each text normalised once: exact duplicates
/// (when `exact`), then near duplicates (with `near`) among the texts that are
/// not exact duplicates. `near`'s indices count those texts only, in order.
pub fn duplicates(
    texts: &[&str],
    groups: Option<&[u64]>,
    exact: bool,
    near: Option<&LshConfig>,
) -> Result<(Option<Vec<u32>>, Option<NearDuplicates>), DedupeError> {
    check_sizes(texts.len(), groups)?;
    if let Some(cfg) = near {
        cfg.validate()?;
    }
    if !exact && near.is_none() {
        return Ok((None, None));
    }
    let norms = normalize_all(texts);
    let all: Vec<&Normalized> = norms.iter().collect();
    let first = if exact { Some(exact_duplicates_normalized(&all, groups)?) } else { None };
    let near = match near {
        None => None,
        Some(cfg) => Some(match &first {
            None => near_duplicates_normalized(&all, groups, cfg)?,
            Some(first) => {
                let keep: Vec<usize> = (0..texts.len()).filter(|&i| first[i] as usize == i).collect();
                let kept: Vec<&Normalized> = keep.iter().map(|&i| &norms[i]).collect();
                let kept_groups: Option<Vec<u64>> = groups.map(|g| keep.iter().map(|&i| g[i]).collect());
                near_duplicates_normalized(&kept, kept_groups.as_deref(), cfg)?
            }
        }),
    };
    Ok((first, near))
}

/// Hangul, kana and Han: scripts written without spaces between words.
pub fn is_cjk(c: char) -> bool {
    matches!(c as u32,
        0x1100..=0x11FF | 0x3040..=0x30FF | 0x3130..=0x318F | 0x3400..=0x4DBF
        | 0x4E00..=0x9FFF | 0xAC00..=0xD7AF | 0xF900..=0xFAFF | 0x20000..=0x323AF)
}

// Combines n-gram parts into one hash; order-sensitive, cheap, well mixed.
#[inline]
pub(crate) fn mix(h: u64, part: u64) -> u64 {
    let x = (h ^ part).wrapping_mul(0x9E37_79B9_7F4A_7C15);
    x ^ (x >> 29)
}

/// murmur3's 64-bit finalizer: full avalanche, so that shingles sharing words
/// get unrelated hashes (the MinHash permutations assume random inputs).
#[inline]
fn finish(mut x: u64) -> u64 {
    x ^= x >> 33;
    x = x.wrapping_mul(0xFF51_AFD7_ED55_8CCD);
    x ^= x >> 33;
    x = x.wrapping_mul(0xC4CE_B9FE_1A85_EC53);
    x ^ (x >> 33)
}

const WORD_TAG: u64 = 0x5744_5348; // distinguishes word shingles ...
const CJK_TAG: u64 = 0x434A_4B53; // ... from CJK character shingles
const BAND_TAG: u64 = 0x4241_4E44;

/// Scratch buffers for [`shingles_into`], reused across texts by a thread.
#[derive(Default)]
pub struct ShingleScratch {
    words: Vec<u64>,
    cjk_run: Vec<u64>,
}

fn flush_cjk(run: &mut Vec<u64>, n: usize, out: &mut Vec<u64>) {
    if run.is_empty() {
        return;
    }
    let n = n.min(run.len());
    out.extend(run.windows(n).map(|w| finish(w.iter().fold(CJK_TAG, |h, &c| mix(h, c)))));
    run.clear();
}

/// The sorted, de-duplicated shingle hashes of a text, after normalisation.
///
/// Words are maximal runs of alphanumeric non-CJK characters; word n-grams run
/// over the whole word sequence. Each run of CJK characters gives character
/// n-grams; a run ends at any other character and at a sentence end or line
/// break, so no n-gram spans two sentences (see [`Normalized::breaks`]). A
/// sequence shorter than n gives one shingle of all of it, so that a short
/// text still has a fingerprint.
pub fn shingles(text: &str, cfg: &ShingleConfig) -> Vec<u64> {
    let mut out = Vec::new();
    shingles_into(&normalize_with_breaks(text), cfg, &mut ShingleScratch::default(), &mut out);
    out
}

/// [`shingles`] of a normalised text into `out`, with caller-owned scratch buffers.
pub fn shingles_into(norm: &Normalized, cfg: &ShingleConfig, scratch: &mut ShingleScratch, out: &mut Vec<u64>) {
    let bytes = norm.text.as_bytes();
    let ShingleScratch { words, cjk_run } = scratch;
    words.clear();
    cjk_run.clear();
    out.clear();
    let mut breaks = norm.breaks.iter().map(|&b| b as usize).peekable();
    let mut word_start: Option<usize> = None;
    for (i, c) in norm.text.char_indices() {
        if breaks.next_if_eq(&i).is_some() {
            flush_cjk(cjk_run, cfg.cjk_char_ngram, out);
        }
        // ASCII needs no Unicode tables: most text here is ASCII.
        let (cjk, in_word) = if c.is_ascii() { (false, c.is_ascii_alphanumeric()) } else {
            let cjk = is_cjk(c);
            (cjk, !cjk && c.is_alphanumeric())
        };
        if in_word {
            word_start.get_or_insert(i);
        } else if let Some(s) = word_start.take() {
            words.push(xxh3_64(&bytes[s..i]));
        }
        if cjk {
            cjk_run.push(c as u64);
        } else if !cjk_run.is_empty() {
            flush_cjk(cjk_run, cfg.cjk_char_ngram, out);
        }
    }
    if let Some(s) = word_start {
        words.push(xxh3_64(&bytes[s..]));
    }
    flush_cjk(cjk_run, cfg.cjk_char_ngram, out);
    if !words.is_empty() {
        let n = cfg.word_ngram.min(words.len());
        out.extend(words.windows(n).map(|w| finish(w.iter().fold(WORD_TAG, |h, &x| mix(h, x)))));
    }
    out.sort_unstable();
    out.dedup();
}

/// Jaccard similarity of two sorted, de-duplicated sets; 0 when both are empty.
pub fn jaccard(a: &[u64], b: &[u64]) -> f64 {
    if a.is_empty() && b.is_empty() {
        return 0.0;
    }
    let (mut i, mut j, mut inter) = (0, 0, 0usize);
    while i < a.len() && j < b.len() {
        match a[i].cmp(&b[j]) {
            std::cmp::Ordering::Less => i += 1,
            std::cmp::Ordering::Greater => j += 1,
            std::cmp::Ordering::Equal => {
                inter += 1;
                i += 1;
                j += 1;
            }
        }
    }
    inter as f64 / (a.len() + b.len() - inter) as f64
}

/// Per-permutation parameters from splitmix64, one array per parameter (xor
/// keys, odd multipliers) so that each step of the signature loop loads 8
/// consecutive lanes of each: the compiler vectorises it without shuffles.
struct Permutations {
    keys: Vec<u32>,
    muls: Vec<u32>,
}

fn permutations(num_perm: usize, seed: u64) -> Permutations {
    let mut state = seed;
    let mut next = || {
        state = state.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = state;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    };
    let (mut keys, mut muls) = (Vec::with_capacity(num_perm), Vec::with_capacity(num_perm));
    for _ in 0..num_perm {
        let r = next();
        keys.push(r as u32);
        muls.push((r >> 32) as u32 | 1);
    }
    Permutations { keys, muls }
}

/// Permutation `(key, mul)` of a 32-bit shingle hash: a murmur3-style
/// finalizer of `(x ^ key) * mul`, a bijection of u32 with full avalanche.
#[inline(always)]
fn permute(x: u32, key: u32, mul: u32) -> u32 {
    let mut h = (x ^ key).wrapping_mul(mul);
    h ^= h >> 16;
    h = h.wrapping_mul(0x85EB_CA6B);
    h ^ (h >> 13)
}

/// MinHash signature of one shingle set into `sig` (one slot per permutation).
/// Four shingles go through each pass over the permutations, so that every
/// load and store of a signature lane serves four hashes.
#[inline(always)]
fn signature_portable(set: &[u64], perms: &Permutations, sig: &mut [u32]) {
    let k = sig.len();
    let (keys, muls) = (&perms.keys[..k], &perms.muls[..k]);
    sig.fill(u32::MAX);
    let fold = |x: u64| (x ^ (x >> 32)) as u32;
    let mut quads = set.chunks_exact(4);
    for q in &mut quads {
        let (a, b, c, d) = (fold(q[0]), fold(q[1]), fold(q[2]), fold(q[3]));
        for j in 0..k {
            let (key, mul) = (keys[j], muls[j]);
            let m = permute(a, key, mul).min(permute(b, key, mul)).min(permute(c, key, mul).min(permute(d, key, mul)));
            sig[j] = sig[j].min(m);
        }
    }
    for &x in quads.remainder() {
        let x = fold(x);
        for j in 0..k {
            sig[j] = sig[j].min(permute(x, keys[j], muls[j]));
        }
    }
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
unsafe fn signature_avx2(set: &[u64], perms: &Permutations, sig: &mut [u32]) {
    signature_portable(set, perms, sig)
}

fn signature(set: &[u64], perms: &Permutations, sig: &mut [u32]) {
    #[cfg(target_arch = "x86_64")]
    if std::arch::is_x86_feature_detected!("avx2") {
        // SAFETY: the CPU supports AVX2, checked just above.
        return unsafe { signature_avx2(set, perms, sig) };
    }
    signature_portable(set, perms, sig)
}

/// Union-find whose root is always the lowest index of its set.
struct MinRootUnionFind {
    parent: Vec<u32>,
}

impl MinRootUnionFind {
    fn new(n: usize) -> Self {
        Self { parent: (0..n as u32).collect() }
    }
    fn find(&mut self, mut x: u32) -> u32 {
        while self.parent[x as usize] != x {
            let p = self.parent[x as usize];
            self.parent[x as usize] = self.parent[p as usize]; // path halving
            x = self.parent[x as usize];
        }
        x
    }
    fn union(&mut self, x: u32, y: u32) -> bool {
        let (rx, ry) = (self.find(x), self.find(y));
        if rx == ry {
            return false;
        }
        let (lo, hi) = if rx < ry { (rx, ry) } else { (ry, rx) };
        self.parent[hi as usize] = lo;
        true
    }
}

/// A verified candidate pair.
#[derive(Debug, Clone, Copy)]
struct Edge {
    i: u32,
    j: u32,
    jaccard: f32,
}

/// Near-duplicate clusters.
#[derive(Debug, Clone, PartialEq)]
pub struct NearDuplicates {
    /// Lowest index of each text's cluster (its own index when kept).
    pub representative: Vec<u32>,
    /// The most similar verified match of each text, or [`NO_PARTNER`].
    pub partner: Vec<u32>,
    /// Jaccard similarity with `partner` (0 when there is none).
    pub jaccard: Vec<f32>,
}

/// The buckets of one band that hold two or more texts, members ascending.
struct Buckets {
    members: Vec<u32>,
    offsets: Vec<usize>,
}

impl Buckets {
    /// Groups `live` texts by their key in `band`. Each sort key packs the
    /// band hash's high bits above the text index (a plain u64 sort runs about
    /// twice as fast as one of (hash, index) pairs); two texts whose truncated
    /// hashes collide by chance only cost one extra verification.
    fn of_band(band_hashes: &[u64], bands: usize, band: usize, live: &[u32]) -> Self {
        let idx_bits = 64 - (live.last().copied().unwrap_or(0) as u64).leading_zeros();
        let idx_mask = (1u64 << idx_bits) - 1;
        let mut keys: Vec<u64> =
            live.iter().map(|&i| (band_hashes[i as usize * bands + band] & !idx_mask) | i as u64).collect();
        keys.sort_unstable();
        let mut out = Buckets { members: Vec::new(), offsets: vec![0] };
        let mut start = 0;
        for k in 1..=keys.len() {
            if k == keys.len() || (keys[k] ^ keys[start]) & !idx_mask != 0 {
                if k - start >= 2 {
                    out.members.extend(keys[start..k].iter().map(|key| (key & idx_mask) as u32));
                    out.offsets.push(out.members.len());
                }
                start = k;
            }
        }
        out
    }
    fn len(&self) -> usize {
        self.offsets.len() - 1
    }
    fn get(&self, b: usize) -> &[u32] {
        &self.members[self.offsets[b]..self.offsets[b + 1]]
    }
}

/// Below `threshold - SKETCH_MARGIN` by the sketch estimate, a pair is not
/// verified exactly. The estimate's standard error is at most 0.045 with 128
/// permutations, so this rejects a pair at the threshold with odds of about
/// 1e-8 while sparing most exact Jaccards of look-alike texts.
const SKETCH_MARGIN: f64 = 0.25;

/// Verifies candidate pairs, with the texts' shingle sets and sketches (the
/// low byte of every MinHash value: b-bit MinHash, Li & Koenig 2010).
struct Verifier<'a> {
    sets: &'a [Vec<u64>],
    sketch: &'a [u8],
    cfg: &'a LshConfig,
}

impl Verifier<'_> {
    fn sketch_of(&self, i: usize) -> &[u8] {
        &self.sketch[i * self.cfg.num_perm..(i + 1) * self.cfg.num_perm]
    }

    /// Jaccard estimated from sketches: equal bytes, less chance equality.
    fn estimate(&self, a: usize, b: usize) -> f64 {
        let same = self.sketch_of(a).iter().zip(self.sketch_of(b)).filter(|(x, y)| x == y).count();
        let p = same as f64 / self.cfg.num_perm as f64;
        (p - 1.0 / 256.0) / (1.0 - 1.0 / 256.0)
    }

    /// The order in which a bucket's members meet their window. A bucket
    /// larger than the window is sorted by sketch (rotated to start after
    /// this band's rows), so that near-duplicates, which share most sketch
    /// bytes, sit side by side even among thousands of look-alike texts.
    fn order(&self, members: &[u32], band: usize) -> Vec<u32> {
        let mut order = members.to_vec();
        if members.len() > self.cfg.max_bucket_window + 1 {
            let off = ((band + 1) * self.cfg.rows) % self.cfg.num_perm;
            order.sort_by(|&a, &b| {
                let (sa, sb) = (self.sketch_of(a as usize), self.sketch_of(b as usize));
                sa[off..].cmp(&sb[off..]).then_with(|| sa[..off].cmp(&sb[..off])).then(a.cmp(&b))
            });
        }
        order
    }

    /// Verified pairs of one bucket of `band`, skipping pairs already joined.
    fn bucket(&self, members: &[u32], band: usize, component: &[u32]) -> Vec<Edge> {
        // After the first bands most buckets hold one cluster already: skip
        // them before allocating anything.
        let first = component[members[0] as usize];
        if members.iter().all(|&m| component[m as usize] == first) {
            return Vec::new();
        }
        let members = self.order(members, band);
        let mut local: Vec<u32> = (0..members.len() as u32).collect();
        fn root(local: &mut [u32], mut x: u32) -> u32 {
            while local[x as usize] != x {
                local[x as usize] = local[local[x as usize] as usize];
                x = local[x as usize];
            }
            x
        }
        let threshold = self.cfg.threshold;
        let mut edges = Vec::new();
        for (p, &mp) in members.iter().enumerate().skip(1) {
            let mp = mp as usize;
            let first = p.saturating_sub(self.cfg.max_bucket_window);
            for (q, &mq) in members[first..p].iter().enumerate().map(|(k, m)| (first + k, m)) {
                let mq = mq as usize;
                if component[mp] == component[mq] {
                    continue;
                }
                let (rp, rq) = (root(&mut local, p as u32), root(&mut local, q as u32));
                if rp == rq {
                    continue;
                }
                let (la, lb) = (self.sets[mp].len() as f64, self.sets[mq].len() as f64);
                // J(A, B) <= min/max of the sizes: skip pairs that cannot reach it.
                if la.min(lb) < threshold * la.max(lb) || self.estimate(mp, mq) < threshold - SKETCH_MARGIN {
                    continue;
                }
                let jac = jaccard(&self.sets[mp], &self.sets[mq]);
                if jac >= threshold {
                    local[rp.max(rq) as usize] = rp.min(rq);
                    edges.push(Edge { i: mq as u32, j: mp as u32, jaccard: jac as f32 });
                }
            }
        }
        edges
    }
}

/// Clusters near-duplicate texts. With `groups`, only texts of the same group
/// can be duplicates (the group is part of every bucket key). Texts without
/// any shingle (no letters or digits) are never near-duplicates.
pub fn near_duplicates(
    texts: &[&str],
    groups: Option<&[u64]>,
    cfg: &LshConfig,
) -> Result<NearDuplicates, DedupeError> {
    cfg.validate()?;
    check_sizes(texts.len(), groups)?;
    let norms = normalize_all(texts);
    near_duplicates_normalized(&norms.iter().collect::<Vec<_>>(), groups, cfg)
}

/// [`near_duplicates`] over texts already normalised.
pub fn near_duplicates_normalized(
    norms: &[&Normalized],
    groups: Option<&[u64]>,
    cfg: &LshConfig,
) -> Result<NearDuplicates, DedupeError> {
    cfg.validate()?;
    let n = norms.len();
    check_sizes(n, groups)?;
    let sets: Vec<Vec<u64>> = norms
        .par_iter()
        .map_init(ShingleScratch::default, |scratch, t| {
            let mut out = Vec::new();
            shingles_into(t, &cfg.shingles, scratch, &mut out);
            out
        })
        .collect();
    let sets = &sets;

    // Band hashes (n x bands) and one-byte sketches (n x num_perm); full
    // signatures are never kept.
    let perms = permutations(cfg.num_perm, cfg.seed);
    let mut band_hashes = vec![0u64; n * cfg.bands];
    let mut sketch = vec![0u8; n * cfg.num_perm];
    band_hashes.par_chunks_mut(cfg.bands).zip(sketch.par_chunks_mut(cfg.num_perm)).enumerate().for_each_init(
        || vec![0u32; cfg.num_perm],
        |sig, (i, (out, sketch_out))| {
            signature(&sets[i], &perms, sig);
            for (byte, &v) in sketch_out.iter_mut().zip(sig.iter()) {
                *byte = v as u8;
            }
            let group = groups.map_or(0, |g| g[i]);
            for (band, slot) in out.iter_mut().enumerate() {
                let start = mix(mix(BAND_TAG, group), band as u64);
                let rows = &sig[band * cfg.rows..(band + 1) * cfg.rows];
                *slot = rows.iter().fold(start, |h, &v| mix(h, v as u64));
            }
        },
    );

    // Buckets of every band, built in parallel over bands; only buckets of
    // two or more members are kept, so this is O(n * bands) at worst.
    let live: Vec<u32> = (0..n as u32).filter(|&i| !sets[i as usize].is_empty()).collect();
    let all_buckets: Vec<Buckets> =
        (0..cfg.bands).into_par_iter().map(|band| Buckets::of_band(&band_hashes, cfg.bands, band, &live)).collect();
    drop(band_hashes);

    // Bands one after another, each against a snapshot of the clusters so far:
    // pairs already joined are not verified again. The final clusters are the
    // connected components of the verified pairs, whatever the thread count.
    let mut uf = MinRootUnionFind::new(n);
    let mut component: Vec<u32> = (0..n as u32).collect();
    let mut best: Vec<(u32, f32)> = vec![(NO_PARTNER, 0.0); n];
    let verifier = Verifier { sets, sketch: &sketch, cfg };
    for (band, buckets) in all_buckets.iter().enumerate() {
        let component_ref = &component;
        let edges: Vec<Edge> = (0..buckets.len())
            .into_par_iter()
            .flat_map_iter(|b| verifier.bucket(buckets.get(b), band, component_ref))
            .collect();
        if edges.is_empty() {
            continue;
        }
        for e in &edges {
            uf.union(e.i, e.j);
            for (me, other) in [(e.i, e.j), (e.j, e.i)] {
                let slot = &mut best[me as usize];
                if e.jaccard > slot.1 || (e.jaccard == slot.1 && other < slot.0) {
                    *slot = (other, e.jaccard);
                }
            }
        }
        for i in 0..n as u32 {
            component[i as usize] = uf.find(i);
        }
    }
    Ok(NearDuplicates {
        representative: component,
        partner: best.iter().map(|b| b.0).collect(),
        jaccard: best.iter().map(|b| b.1).collect(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg(threshold: f64) -> LshConfig {
        LshConfig { threshold, ..LshConfig::default() }
    }

    #[test]
    fn exact_keeps_first_occurrence_per_group() {
        let texts = ["Hello world", "hello world", "other", "Hello world"];
        assert_eq!(exact_duplicates(&texts, None).unwrap(), vec![0, 0, 2, 0]);
        let groups = [1u64, 2, 1, 2];
        assert_eq!(exact_duplicates(&texts, Some(&groups)).unwrap(), vec![0, 1, 2, 1]);
    }

    #[test]
    fn shingles_words_and_cjk() {
        let c = ShingleConfig { word_ngram: 2, cjk_char_ngram: 2 };
        // "a b c" -> {a b, b c}; punctuation is not part of a word.
        assert_eq!(shingles("a, b. c", &c).len(), 2);
        assert_eq!(shingles("a, b. c", &c), shingles("a b c", &c));
        // 4 Han characters -> 3 bigrams; a repeated bigram counts once.
        assert_eq!(shingles("我是谁呢", &c).len(), 3);
        assert_eq!(shingles("哈哈哈哈", &c).len(), 1);
        // Shorter than n: one shingle of the whole sequence.
        assert_eq!(shingles("word", &c).len(), 1);
        assert!(shingles("  ...  ", &c).is_empty());
        // Word and CJK shingles live in different hash domains.
        let mixed = shingles("我是 tom 谁", &c);
        assert_eq!(mixed.len(), 3);
    }

    #[test]
    fn cjk_shingles_do_not_span_sentences() {
        let c = ShingleConfig::default();
        // Reordering whole sentences keeps the shingle set: Jaccard 1.
        let a = shingles("苹果从树上落下来。我写下了万有引力定律。光在棱镜中分成七色。", &c);
        let b = shingles("光在棱镜中分成七色。苹果从树上落下来！我写下了万有引力定律。", &c);
        assert_eq!(jaccard(&a, &b), 1.0);
        // Line breaks end sentences too; commas do not.
        assert_eq!(shingles("苹果从树上\n落下来", &c), shingles("苹果从树上。落下来", &c));
        assert_eq!(shingles("苹果从树上，落下来", &c), shingles("苹果从树上落下来", &c));
        // 4 + 3 characters: 2 + 1 trigrams, none across the full stop.
        assert_eq!(shingles("我是谁呢。你好吗", &c).len(), 3);
    }

    #[test]
    fn combined_passes_match_separate_calls() {
        let texts: Vec<String> = (0..300)
            .map(|i| format!("sentence number {} about topic {} with words alpha beta gamma", i % 37, i % 11))
            .collect();
        let refs: Vec<&str> = texts.iter().map(|s| s.as_str()).collect();
        let groups: Vec<u64> = (0..300).map(|i| (i % 3) as u64).collect();
        let c = cfg(0.5);
        let (first, near) = duplicates(&refs, Some(&groups), true, Some(&c)).unwrap();
        let first = first.unwrap();
        assert_eq!(first, exact_duplicates(&refs, Some(&groups)).unwrap());
        let keep: Vec<usize> = (0..300).filter(|&i| first[i] as usize == i).collect();
        let kept: Vec<&str> = keep.iter().map(|&i| refs[i]).collect();
        let kept_groups: Vec<u64> = keep.iter().map(|&i| groups[i]).collect();
        assert_eq!(near.unwrap(), near_duplicates(&kept, Some(&kept_groups), &c).unwrap());
        let (none, all) = duplicates(&refs, None, false, Some(&c)).unwrap();
        assert!(none.is_none());
        assert_eq!(all.unwrap(), near_duplicates(&refs, None, &c).unwrap());
    }

    #[test]
    fn jaccard_values() {
        assert_eq!(jaccard(&[1, 2, 3], &[2, 3, 4]), 0.5);
        assert_eq!(jaccard(&[], &[]), 0.0);
        assert_eq!(jaccard(&[1], &[1]), 1.0);
    }

    #[test]
    fn near_duplicates_cluster_and_keep_lowest() {
        let texts = [
            "the quick brown fox jumps over the lazy dog near the river bank today",
            "completely different sentence about painting and music in old vienna",
            "the quick brown fox jumps over the lazy dog near the river bank today!",
            "the quick brown fox jumps over the lazy dog near the river bank at noon",
        ];
        let r = near_duplicates(&texts, None, &cfg(0.6)).unwrap();
        assert_eq!(r.representative, vec![0, 1, 0, 0]);
        assert_eq!(r.partner[1], NO_PARTNER);
        assert_eq!(r.partner[2], 0);
        assert_eq!(r.jaccard[2], 1.0);
        assert!(r.jaccard[3] >= 0.6 && r.jaccard[3] < 1.0);
    }

    #[test]
    fn groups_separate_clusters() {
        let texts = ["what did you paint in your youth", "what did you paint in your youth"];
        let r = near_duplicates(&texts, Some(&[1, 2]), &cfg(0.8)).unwrap();
        assert_eq!(r.representative, vec![0, 1]);
        let r = near_duplicates(&texts, Some(&[3, 3]), &cfg(0.8)).unwrap();
        assert_eq!(r.representative, vec![0, 0]);
    }

    #[test]
    fn window_still_joins_a_large_identical_bucket() {
        let texts: Vec<String> = (0..500).map(|_| "one two three four five six".to_string()).collect();
        let refs: Vec<&str> = texts.iter().map(|s| s.as_str()).collect();
        let c = LshConfig { max_bucket_window: 2, ..cfg(0.9) };
        let r = near_duplicates(&refs, None, &c).unwrap();
        assert!(r.representative.iter().all(|&x| x == 0));
    }

    #[test]
    fn far_apart_duplicates_meet_in_a_huge_bucket() {
        // 300 texts of one template and 15 words of their own (Jaccard ~0.66
        // with each other, so many bands put ~100 of them in one bucket) and
        // one true duplicate pair, 285 apart: far beyond the window of 2. It
        // must be found, and no look-alike may be taken for a duplicate.
        let template: Vec<String> = (0..60).map(|w| format!("w{w}")).collect();
        let template = template.join(" ");
        let mut texts: Vec<String> = (0..300)
            .map(|i| {
                let own: Vec<String> = (0..15).map(|k| format!("t{i}x{k}")).collect();
                format!("{template} {}", own.join(" "))
            })
            .collect();
        texts[290] = texts[5].clone();
        let refs: Vec<&str> = texts.iter().map(|s| s.as_str()).collect();
        let c = LshConfig { max_bucket_window: 2, ..cfg(0.9) };
        let r = near_duplicates(&refs, None, &c).unwrap();
        let dups: Vec<usize> = (0..300).filter(|&i| r.representative[i] as usize != i).collect();
        assert_eq!(dups, vec![290]);
        assert_eq!(r.representative[290], 5);
    }

    #[test]
    fn same_result_for_any_thread_count() {
        let texts: Vec<String> = (0..400)
            .map(|i| format!("sentence number {} about topic {} with words alpha beta gamma", i % 37, i % 11))
            .collect();
        let refs: Vec<&str> = texts.iter().map(|s| s.as_str()).collect();
        let one = with_threads(Some(1), || near_duplicates(&refs, None, &cfg(0.5)).unwrap()).unwrap();
        let four = with_threads(Some(4), || near_duplicates(&refs, None, &cfg(0.5)).unwrap()).unwrap();
        assert_eq!(one, four);
        assert!(one.representative.iter().enumerate().any(|(i, &r)| r as usize != i));
    }

    #[test]
    fn empty_texts_are_never_near_duplicates() {
        let r = near_duplicates(&["", "", "!!"], None, &cfg(0.5)).unwrap();
        assert_eq!(r.representative, vec![0, 1, 2]);
    }

    #[test]
    fn config_is_validated() {
        let c = LshConfig { bands: 64, rows: 4, ..LshConfig::default() };
        assert!(matches!(c.validate(), Err(DedupeError::InvalidConfig(_))));
        assert!(near_duplicates(&["a"], Some(&[1, 2]), &LshConfig::default()).is_err());
    }
}
