//! Checkpoints of the whole store: every series' labels and data (grid counters with their
//! coder state, raw samples), written a slice of series at a time so the writer never holds
//! the store for long, and read back before the server opens its ports.
//!
//! The file is `magic:"WGLSNAP\0" version:u32` and frames `len:u32 crc:u32 zstd(payload)`
//! (little-endian, CRC over the compressed bytes). The first frame is the header (the
//! resolution and retention it was taken with, and remote-write progress), the last the
//! footer (series and slice counts); a file without its footer is incomplete and refused.
//! Each slice frame carries the write-ahead log position it is current to, its own string
//! table, and its series. Written to a temporary name, fsynced and renamed into place.

use std::fs::File;
use std::io::{BufWriter, Read, Write};
use std::path::{Path, PathBuf};

use super::bits::{Bits, Coder};
use super::grid::{Chunk, Grid, Head, Mark, HEAD_STEPS, MARKS};
use super::{Data, SeriesId, Store};

const MAGIC: &[u8; 8] = b"WGLSNAP\0";
pub const VERSION: u32 = 1;
const FRAME_HEADER: u8 = 1;
const FRAME_SLICE: u8 = 2;
const FRAME_FOOTER: u8 = 3;
/// Largest frame read back (a bound against a corrupt length).
const MAX_FRAME: usize = 512 << 20;

/// Why a snapshot cannot be used; the message names the file's problem.
#[derive(Debug, thiserror::Error)]
pub enum SnapshotError {
    #[error("cannot read it: {0}")]
    Io(#[from] std::io::Error),
    #[error("it is not a waggle snapshot (bad magic bytes)")]
    Magic,
    #[error("it is format version {0}; this build reads version {VERSION}")]
    Version(u32),
    #[error("it was taken with --resolution {file} ms; this server runs with {ours} ms")]
    Resolution { file: i64, ours: i64 },
    #[error("frame {frame} is corrupt: {why}")]
    Corrupt { frame: usize, why: String },
    #[error("it is incomplete: it ends after {0} frames without its footer")]
    Truncated(usize),
}

/// What a snapshot's header records.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Header {
    pub resolution_ms: i64,
    pub retention_ms: i64,
    pub created_ms: i64,
    /// Remote-write progress: per destination, the last step it acknowledged.
    pub progress: Vec<(String, i64)>,
}

struct Out(Vec<u8>);

impl Out {
    fn varint(&mut self, mut v: u64) {
        while v >= 0x80 {
            self.0.push((v as u8) | 0x80);
            v >>= 7;
        }
        self.0.push(v as u8);
    }
    fn signed(&mut self, v: i64) {
        self.varint(((v << 1) ^ (v >> 63)) as u64);
    }
    fn f64(&mut self, v: f64) {
        self.0.extend_from_slice(&v.to_bits().to_le_bytes());
    }
    fn str(&mut self, s: &str) {
        self.varint(s.len() as u64);
        self.0.extend_from_slice(s.as_bytes());
    }
}

struct In<'a> {
    b: &'a [u8],
    at: usize,
}

type Res<T> = Result<T, String>;

impl<'a> In<'a> {
    fn u8(&mut self) -> Res<u8> {
        let v = *self.b.get(self.at).ok_or("cut short")?;
        self.at += 1;
        Ok(v)
    }
    fn varint(&mut self) -> Res<u64> {
        let mut v = 0u64;
        for shift in (0..64).step_by(7) {
            let b = self.u8()?;
            v |= u64::from(b & 0x7f) << shift;
            if b & 0x80 == 0 {
                return Ok(v);
            }
        }
        Err("varint too long".into())
    }
    fn signed(&mut self) -> Res<i64> {
        let z = self.varint()?;
        Ok(((z >> 1) as i64) ^ -((z & 1) as i64))
    }
    fn small<T: TryFrom<u64>>(&mut self, what: &str) -> Res<T> {
        T::try_from(self.varint()?).map_err(|_| format!("{what} out of range"))
    }
    fn bytes(&mut self, n: usize) -> Res<&'a [u8]> {
        let end = self.at.checked_add(n).ok_or("length overflows")?;
        let s = self.b.get(self.at..end).ok_or("cut short")?;
        self.at = end;
        Ok(s)
    }
    fn f64(&mut self) -> Res<f64> {
        let b = self.bytes(8)?;
        Ok(f64::from_bits(u64::from_le_bytes(
            b.try_into().map_err(|_| "cut short")?,
        )))
    }
    fn str(&mut self) -> Res<&'a str> {
        let n = self.small::<usize>("string length")?;
        std::str::from_utf8(self.bytes(n)?).map_err(|_| "a string is not UTF-8".into())
    }
    /// A count of items each taking at least `min` bytes, checked against what is left.
    fn count(&mut self, min: usize) -> Res<usize> {
        let n = self.small::<usize>("count")?;
        if n.saturating_mul(min.max(1)) > self.b.len() - self.at {
            return Err(format!("a count of {n} exceeds what is left"));
        }
        Ok(n)
    }
}

fn put_coder(o: &mut Out, c: &Coder) {
    o.varint(u64::from(c.mean));
    o.varint(u64::from(c.spread));
}

fn get_coder(i: &mut In<'_>) -> Res<Coder> {
    Ok(Coder {
        mean: i.small("coder mean")?,
        spread: i.small("coder spread")?,
    })
}

fn put_grid(o: &mut Out, g: &Grid) {
    o.varint(g.stale_steps as u64);
    o.signed(g.tail_start);
    o.varint(g.base);
    o.signed(g.last_event);
    o.0.push(u8::from(g.open) | (u8::from(g.from_zero) << 1));
    put_coder(o, &g.coder);
    o.0.push(g.tail.len);
    for c in g.tail.counts.iter().take(usize::from(g.tail.len)) {
        o.varint(*c);
    }
    for m in &g.marks {
        o.varint(u64::from(m.steps));
        o.varint(u64::from(m.pos));
        o.varint(m.value);
        put_coder(o, &m.coder);
    }
    o.varint(g.chunks.len() as u64);
    for c in &g.chunks {
        o.signed(c.start);
        o.varint(c.first);
        o.varint(u64::from(c.len));
        o.0.push(u8::from(c.stale));
        o.varint(u64::from(c.bits.len));
        let used = (c.bits.len as usize).div_ceil(64);
        o.varint(used as u64);
        for w in c.bits.words.iter().take(used) {
            o.0.extend_from_slice(&w.to_le_bytes());
        }
    }
}

fn get_grid(i: &mut In<'_>) -> Res<Grid> {
    let stale_steps: i64 = i.small("stale steps")?;
    let mut g = Grid::new(stale_steps);
    g.tail_start = i.signed()?;
    g.base = i.varint()?;
    g.last_event = i.signed()?;
    let flags = i.u8()?;
    g.open = flags & 1 != 0;
    g.from_zero = flags & 2 != 0;
    g.coder = get_coder(i)?;
    let len = i.u8()?;
    if usize::from(len) > HEAD_STEPS {
        return Err(format!("a head of {len} steps"));
    }
    let mut tail = Head {
        len,
        ..Head::default()
    };
    for c in tail.counts.iter_mut().take(usize::from(len)) {
        *c = i.varint()?;
    }
    g.tail = tail;
    let mut marks = [Mark::default(); MARKS];
    for m in &mut marks {
        m.steps = i.small("mark steps")?;
        m.pos = i.small("mark position")?;
        m.value = i.varint()?;
        m.coder = get_coder(i)?;
    }
    g.marks = marks;
    let n = i.count(6)?;
    for _ in 0..n {
        let start = i.signed()?;
        let first = i.varint()?;
        let len: u16 = i.small("chunk length")?;
        let stale = i.u8()? != 0;
        let bit_len: u32 = i.small("bit length")?;
        let words = i.count(8)?;
        if words < (bit_len as usize).div_ceil(64) {
            return Err("a chunk holds fewer words than its bits".into());
        }
        let mut bits = Bits::with_words(words);
        for w in bits.words.iter_mut() {
            *w = u64::from_le_bytes(i.bytes(8)?.try_into().map_err(|_| "cut short")?);
        }
        bits.len = bit_len;
        g.chunks.push_back(Chunk {
            start,
            first,
            bits,
            len,
            stale,
        });
    }
    Ok(g)
}

fn frame(out: &mut impl Write, kind: u8, body: &[u8]) -> std::io::Result<()> {
    let mut payload = Vec::with_capacity(body.len() + 1);
    payload.push(kind);
    payload.extend_from_slice(body);
    let z = zstd::bulk::compress(&payload, 1)?;
    out.write_all(&(z.len() as u32).to_le_bytes())?;
    out.write_all(&crc32fast::hash(&z).to_le_bytes())?;
    out.write_all(&z)
}

/// A snapshot being written, one slice of series at a time.
pub struct Writer {
    out: BufWriter<File>,
    tmp: PathBuf,
    dest: PathBuf,
    series: u64,
    slices: u64,
    pub bytes: u64,
}

/// A finished snapshot, written but not yet made durable and put in place.
pub struct Finished {
    file: File,
    tmp: PathBuf,
    dest: PathBuf,
    pub series: u64,
    pub bytes: u64,
}

impl Writer {
    /// Starts `dest` (written as `dest.tmp` until [`commit`]).
    pub fn create(dest: &Path, header: &Header) -> std::io::Result<Self> {
        let tmp = dest.with_extension("tmp");
        let mut out = BufWriter::with_capacity(1 << 20, File::create(&tmp)?);
        out.write_all(MAGIC)?;
        out.write_all(&VERSION.to_le_bytes())?;
        let mut o = Out(Vec::new());
        o.signed(header.resolution_ms);
        o.signed(header.retention_ms);
        o.signed(header.created_ms);
        o.varint(header.progress.len() as u64);
        for (name, step) in &header.progress {
            o.str(name);
            o.signed(*step);
        }
        frame(&mut out, FRAME_HEADER, &o.0)?;
        Ok(Self {
            out,
            tmp,
            dest: dest.to_path_buf(),
            series: 0,
            slices: 0,
            bytes: 12,
        })
    }

    /// Writes the series with ids in `ids`, current to log position `seq`. Returns how many.
    pub fn slice(
        &mut self,
        store: &Store,
        ids: std::ops::Range<SeriesId>,
        seq: u64,
    ) -> std::io::Result<usize> {
        let mut strings: Vec<&str> = Vec::new();
        let mut index: rustc_hash::FxHashMap<u32, u32> = Default::default();
        let mut body = Out(Vec::new());
        let mut n = 0;
        for id in ids {
            let Some(s) = store.get(id) else { continue };
            body.varint(s.labels.len() as u64);
            for &(name, value) in s.labels.iter() {
                for sym in [name, value] {
                    let next = index.len() as u32;
                    let at = *index.entry(sym).or_insert_with(|| {
                        strings.push(store.symbols.str(sym));
                        next
                    });
                    body.varint(u64::from(at));
                }
            }
            match &s.data {
                Data::Grid { grid, per_unit } => {
                    body.0.push(0);
                    body.f64(*per_unit);
                    put_grid(&mut body, grid);
                }
                Data::Raw(samples) => {
                    body.0.push(1);
                    body.varint(samples.len() as u64);
                    let mut prev = 0i64;
                    for &(t, v) in samples {
                        body.signed(t.wrapping_sub(prev));
                        body.f64(v);
                        prev = t;
                    }
                }
            }
            n += 1;
        }
        let mut o = Out(Vec::with_capacity(body.0.len() + strings.len() * 16 + 16));
        o.varint(seq);
        o.varint(strings.len() as u64);
        for s in &strings {
            o.str(s);
        }
        o.varint(n as u64);
        o.0.extend_from_slice(&body.0);
        frame(&mut self.out, FRAME_SLICE, &o.0)?;
        self.series += n as u64;
        self.slices += 1;
        self.bytes += o.0.len() as u64;
        Ok(n)
    }

    /// Writes the footer and flushes; [`commit`] makes it durable and puts it in place.
    pub fn finish(mut self) -> std::io::Result<Finished> {
        let mut o = Out(Vec::new());
        o.varint(self.series);
        o.varint(self.slices);
        frame(&mut self.out, FRAME_FOOTER, &o.0)?;
        self.out.flush()?;
        let file = self.out.into_inner().map_err(|e| e.into_error())?;
        let bytes = file.metadata().map(|m| m.len()).unwrap_or(0);
        Ok(Finished {
            file,
            tmp: self.tmp,
            dest: self.dest,
            series: self.series,
            bytes,
        })
    }
}

/// Fsyncs a finished snapshot, renames it into place and fsyncs the directory.
pub fn commit(f: Finished) -> std::io::Result<()> {
    f.file.sync_all()?;
    drop(f.file);
    std::fs::rename(&f.tmp, &f.dest)?;
    if let Some(dir) = f.dest.parent() {
        File::open(dir)?.sync_all()?;
    }
    Ok(())
}

/// A store read back from a snapshot.
pub struct Restored {
    pub store: Store,
    pub header: Header,
    /// Per series id: the log position its data is current to.
    pub seqs: Vec<u64>,
    /// The lowest of those (records after it may need replaying).
    pub min_seq: u64,
    pub series: u64,
}

/// One frame, checked, decompressed and parsed (strings still frame-local).
enum Parsed {
    Header(Header),
    Slice {
        seq: u64,
        strings: Vec<String>,
        series: Vec<(Vec<(u32, u32)>, Data)>,
    },
    Footer(u64),
}

/// Reads the snapshot at `path` into a new store with `limits`. A second thread checks,
/// decompresses and parses frames while this one builds the store: the two halves of the
/// work take about as long as each other.
pub fn restore(path: &Path, limits: super::Limits) -> Result<Restored, SnapshotError> {
    let mut data = Vec::new();
    File::open(path)?.read_to_end(&mut data)?;
    if data.get(..8) != Some(&MAGIC[..]) {
        return Err(SnapshotError::Magic);
    }
    let version = data
        .get(8..12)
        .and_then(|b| b.try_into().ok())
        .map(u32::from_le_bytes)
        .ok_or(SnapshotError::Magic)?;
    if version != VERSION {
        return Err(SnapshotError::Version(version));
    }
    let (tx, rx) = std::sync::mpsc::sync_channel::<Result<Parsed, SnapshotError>>(4);
    let parser = std::thread::Builder::new()
        .name("waggle-restore".into())
        .spawn(move || parse_frames(&data, &tx))?;
    let mut out = Restored {
        store: Store::new(limits),
        header: Header::default(),
        seqs: Vec::new(),
        min_seq: u64::MAX,
        series: 0,
    };
    let mut frames = 0;
    let result = loop {
        let frame = match rx.recv() {
            Ok(Ok(f)) => f,
            Ok(Err(e)) => break Err(e),
            Err(_) => break Err(SnapshotError::Truncated(frames)),
        };
        let corrupt = |why: String| SnapshotError::Corrupt { frame: frames, why };
        match (frames, frame) {
            (0, Parsed::Header(h)) => {
                if h.resolution_ms != limits.resolution_ms {
                    break Err(SnapshotError::Resolution {
                        file: h.resolution_ms,
                        ours: limits.resolution_ms,
                    });
                }
                out.header = h;
            }
            (0, _) => break Err(corrupt("the header frame is missing".into())),
            (_, Parsed::Header(_)) => break Err(corrupt("a second header frame".into())),
            (
                _,
                Parsed::Slice {
                    seq,
                    strings,
                    series,
                },
            ) => insert(&mut out, seq, &strings, series),
            (_, Parsed::Footer(series)) => {
                if series != out.series {
                    break Err(corrupt(format!(
                        "the footer counts {series} series, the slices {}",
                        out.series
                    )));
                }
                if out.min_seq == u64::MAX {
                    out.min_seq = 0;
                }
                break Ok(());
            }
        }
        frames += 1;
    };
    drop(rx);
    let _ = parser.join();
    result.map(|()| out)
}

/// One frame at `at`: the parsed frame and its size.
fn parse_frame(data: &[u8], at: usize, frame: usize) -> Result<(Parsed, usize), SnapshotError> {
    let corrupt = |why: String| SnapshotError::Corrupt { frame, why };
    let head = data
        .get(at..at + 8)
        .ok_or(SnapshotError::Truncated(frame))?;
    let len = u32::from_le_bytes([head[0], head[1], head[2], head[3]]) as usize;
    let sum = u32::from_le_bytes([head[4], head[5], head[6], head[7]]);
    let z = data
        .get(at + 8..at + 8 + len)
        .ok_or(SnapshotError::Truncated(frame))?;
    if crc32fast::hash(z) != sum {
        return Err(corrupt("its checksum does not match".into()));
    }
    let payload = zstd::bulk::decompress(z, MAX_FRAME).map_err(|e| corrupt(e.to_string()))?;
    let mut i = In { b: &payload, at: 0 };
    let parsed = match i.u8().map_err(corrupt)? {
        FRAME_HEADER => Parsed::Header(header(&mut i).map_err(corrupt)?),
        FRAME_SLICE => slice(&mut i).map_err(corrupt)?,
        FRAME_FOOTER => Parsed::Footer(i.varint().map_err(corrupt)?),
        k => return Err(corrupt(format!("unknown frame kind {k}"))),
    };
    Ok((parsed, 8 + len))
}

/// Parses every frame of `data` in order, sending each on; stops at the footer or an error.
fn parse_frames(data: &[u8], tx: &std::sync::mpsc::SyncSender<Result<Parsed, SnapshotError>>) {
    let (mut at, mut frame) = (12, 0);
    while at < data.len() {
        match parse_frame(data, at, frame) {
            Ok((p, size)) => {
                let last = matches!(p, Parsed::Footer(_));
                if tx.send(Ok(p)).is_err() || last {
                    return;
                }
                at += size;
                frame += 1;
            }
            Err(e) => {
                let _ = tx.send(Err(e));
                return;
            }
        }
    }
    let _ = tx.send(Err(SnapshotError::Truncated(frame)));
}

fn header(i: &mut In<'_>) -> Res<Header> {
    let mut h = Header {
        resolution_ms: i.signed()?,
        retention_ms: i.signed()?,
        created_ms: i.signed()?,
        progress: Vec::new(),
    };
    for _ in 0..i.count(2)? {
        let name = i.str()?.to_owned();
        h.progress.push((name, i.signed()?));
    }
    Ok(h)
}

fn slice(i: &mut In<'_>) -> Res<Parsed> {
    let seq = i.varint()?;
    let n = i.count(1)?;
    let mut strings = Vec::with_capacity(n);
    for _ in 0..n {
        strings.push(i.str()?.to_owned());
    }
    let sym = |x: u64| {
        u32::try_from(x)
            .ok()
            .filter(|x| (*x as usize) < n)
            .ok_or("a string index is out of range")
    };
    let count = i.count(3)?;
    let mut series = Vec::with_capacity(count);
    for _ in 0..count {
        let mut key = Vec::with_capacity(32);
        for _ in 0..i.count(2)? {
            key.push((sym(i.varint()?)?, sym(i.varint()?)?));
        }
        let data = match i.u8()? {
            0 => {
                let per_unit = i.f64()?;
                Data::Grid {
                    grid: get_grid(i)?,
                    per_unit,
                }
            }
            1 => {
                let n = i.count(9)?;
                let mut samples = Vec::with_capacity(n);
                let mut t = 0i64;
                for _ in 0..n {
                    t = t.wrapping_add(i.signed()?);
                    samples.push((t, i.f64()?));
                }
                Data::Raw(samples)
            }
            k => return Err(format!("unknown series kind {k}")),
        };
        series.push((key, data));
    }
    Ok(Parsed::Slice {
        seq,
        strings,
        series,
    })
}

/// Puts a parsed slice's series in the store (up to its series limit).
fn insert(out: &mut Restored, seq: u64, strings: &[String], series: Vec<(Vec<(u32, u32)>, Data)>) {
    out.min_seq = out.min_seq.min(seq);
    let symbols: Vec<u32> = strings
        .iter()
        .map(|s| out.store.symbols.intern(s))
        .collect();
    let sym = |x: u32| symbols.get(x as usize).copied().unwrap_or(0);
    let mut pending = Vec::new();
    for (local, data) in series {
        out.series += 1;
        if out.store.index.len() >= out.store.limits.max_series {
            continue;
        }
        let mut key: Vec<(u32, u32)> = local.into_iter().map(|(n, v)| (sym(n), sym(v))).collect();
        out.store.sort_key(&mut key);
        key.dedup_by_key(|p| p.0);
        let id = out.store.insert(key.into(), data, &mut pending);
        if out.seqs.len() <= id as usize {
            out.seqs.resize(id as usize + 1, 0);
        }
        out.seqs[id as usize] = seq;
    }
    out.store.postings.add(pending);
}

#[cfg(test)]
mod tests;
