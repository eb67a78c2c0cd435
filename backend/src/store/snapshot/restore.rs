//! Reading a checkpoint back: frames found by their length prefixes, then checked,
//! decompressed and parsed on worker threads in parallel while this thread puts them in the
//! store in file order.

use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::sync::mpsc::{sync_channel, Receiver, SyncSender};

use super::{
    Header, SnapshotError, FRAME_FOOTER, FRAME_HEADER, FRAME_SLICE, MAGIC, MAX_FRAME, VERSION,
    ZSTD_MAGIC,
};
use crate::store::bits::{Bits, Coder};
use crate::store::grid::{Chunk, Grid, Head, Mark, HEAD_STEPS, MARKS};
use crate::store::{Data, Limits, Store};

/// Parsing threads at most: past this the store-building thread is the bound.
const MAX_WORKERS: usize = 4;

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

fn get_coder(i: &mut In<'_>) -> Res<Coder> {
    Ok(Coder {
        mean: i.small("coder mean")?,
        spread: i.small("coder spread")?,
    })
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
        let raw = i.bytes(words.checked_mul(8).ok_or("length overflows")?)?;
        let bits = Bits {
            words: raw
                .chunks_exact(8)
                .map(|w| u64::from_le_bytes(w.try_into().unwrap_or_default()))
                .collect(),
            len: bit_len,
        };
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

/// Where a frame's stored bytes are in the file, and their checksum.
struct Span {
    at: u64,
    len: usize,
    crc: u32,
}

/// Reads the snapshot at `path` into a new store with `limits`. Frames are parsed by up to
/// [`MAX_WORKERS`] threads (frame `n` by worker `n % workers`), each reading its own frames
/// into buffers it reuses, and put in the store here in file order.
pub fn restore(path: &Path, limits: Limits) -> Result<Restored, SnapshotError> {
    let file = File::open(path)?;
    let size = file.metadata()?.len();
    let mut head = [0u8; 12];
    if size < 12 {
        return Err(SnapshotError::Magic);
    }
    file.read_exact_at(&mut head, 0)?;
    if head[..8] != MAGIC[..] {
        return Err(SnapshotError::Magic);
    }
    let version = u32::from_le_bytes([head[8], head[9], head[10], head[11]]);
    if !(1..=VERSION).contains(&version) {
        return Err(SnapshotError::Version(version));
    }
    let spans = locate(&file, size)?;
    let workers = std::thread::available_parallelism()
        .map_or(1, |n| n.get())
        .clamp(1, MAX_WORKERS);
    std::thread::scope(|scope| {
        let mut rxs = Vec::with_capacity(workers);
        for first in 0..workers {
            let (tx, rx) = sync_channel(2);
            let (file, spans) = (&file, &spans);
            std::thread::Builder::new()
                .name(format!("waggle-restore-{first}"))
                .spawn_scoped(scope, move || parse_every(file, spans, first, workers, &tx))?;
            rxs.push(rx);
        }
        // `build` owns the receivers: when it returns they close, and a worker still
        // parsing frames past an error or the footer stops at its next send.
        build(rxs, spans.len(), limits)
    })
}

/// Every complete frame after the file header. A frame cut short or of zero length ends the
/// list there, and the missing footer is then reported as [`SnapshotError::Truncated`].
fn locate(file: &File, size: u64) -> Result<Vec<Span>, SnapshotError> {
    let mut spans = Vec::new();
    let mut at = 12u64;
    let mut head = [0u8; 8];
    while at + 8 <= size {
        file.read_exact_at(&mut head, at)?;
        let len = u64::from(u32::from_le_bytes([head[0], head[1], head[2], head[3]]));
        // A stored frame holds at least its kind byte: a zero length is a zero-filled tail
        // (a crash on some filesystems), which would otherwise list a frame per 8 bytes.
        if len == 0 || at + 8 + len > size {
            break;
        }
        spans.push(Span {
            at: at + 8,
            len: len as usize,
            crc: u32::from_le_bytes([head[4], head[5], head[6], head[7]]),
        });
        at += 8 + len;
    }
    Ok(spans)
}

type Sent = Result<Parsed, SnapshotError>;

/// Parses frames `first`, `first + step`, ... and sends each on; stops after an error, the
/// footer, or when the builder has gone.
fn parse_every(file: &File, spans: &[Span], first: usize, step: usize, tx: &SyncSender<Sent>) {
    let mut dec = match zstd::bulk::Decompressor::new() {
        Ok(d) => d,
        Err(e) => {
            let _ = tx.send(Err(e.into()));
            return;
        }
    };
    let (mut stored, mut payload) = (Vec::new(), Vec::new());
    for (frame, span) in spans.iter().enumerate().skip(first).step_by(step) {
        let r = parse_span(file, span, frame, &mut stored, &mut payload, &mut dec);
        let last = !matches!(r, Ok(Parsed::Slice { .. }) | Ok(Parsed::Header(_)));
        if tx.send(r).is_err() || last {
            return;
        }
    }
}

/// Reads, checks, decompresses (unless stored plain) and parses one frame.
fn parse_span(
    file: &File,
    span: &Span,
    frame: usize,
    stored: &mut Vec<u8>,
    payload: &mut Vec<u8>,
    dec: &mut zstd::bulk::Decompressor<'_>,
) -> Sent {
    let corrupt = |why: String| SnapshotError::Corrupt { frame, why };
    if span.len > MAX_FRAME {
        return Err(corrupt(format!("it claims {} bytes", span.len)));
    }
    stored.resize(span.len, 0);
    file.read_exact_at(stored, span.at)?;
    if crc32fast::hash(stored) != span.crc {
        return Err(corrupt("its checksum does not match".into()));
    }
    let body: &[u8] = if stored.starts_with(&ZSTD_MAGIC) {
        match zstd::zstd_safe::get_frame_content_size(stored) {
            Ok(Some(n)) if n <= MAX_FRAME as u64 => {
                payload.clear();
                payload.reserve(n as usize);
                dec.decompress_to_buffer(stored.as_slice(), payload)
                    .map_err(|e| corrupt(e.to_string()))?;
            }
            Ok(Some(n)) => return Err(corrupt(format!("it expands to {n} bytes"))),
            _ => {
                *payload = dec
                    .decompress(stored, MAX_FRAME)
                    .map_err(|e| corrupt(e.to_string()))?
            }
        }
        payload
    } else {
        stored
    };
    let mut i = In { b: body, at: 0 };
    Ok(match i.u8().map_err(corrupt)? {
        FRAME_HEADER => Parsed::Header(header(&mut i).map_err(corrupt)?),
        FRAME_SLICE => slice(&mut i).map_err(corrupt)?,
        FRAME_FOOTER => Parsed::Footer(i.varint().map_err(corrupt)?),
        k => return Err(corrupt(format!("unknown frame kind {k}"))),
    })
}

/// Takes the parsed frames in file order and builds the store from them.
fn build(
    rxs: Vec<Receiver<Sent>>,
    frames: usize,
    limits: Limits,
) -> Result<Restored, SnapshotError> {
    let mut out = Restored {
        store: Store::new(limits),
        header: Header::default(),
        seqs: Vec::new(),
        min_seq: u64::MAX,
        series: 0,
    };
    for frame in 0..frames {
        let corrupt = |why: String| SnapshotError::Corrupt { frame, why };
        let parsed = match rxs[frame % rxs.len()].recv() {
            Ok(r) => r?,
            Err(_) => return Err(corrupt("its reader thread stopped".into())),
        };
        match (frame, parsed) {
            (0, Parsed::Header(h)) => {
                if h.resolution_ms != limits.resolution_ms {
                    return Err(SnapshotError::Resolution {
                        file: h.resolution_ms,
                        ours: limits.resolution_ms,
                    });
                }
                out.header = h;
            }
            (0, _) => return Err(corrupt("the header frame is missing".into())),
            (_, Parsed::Header(_)) => return Err(corrupt("a second header frame".into())),
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
                    return Err(corrupt(format!(
                        "the footer counts {series} series, the slices {}",
                        out.series
                    )));
                }
                if out.min_seq == u64::MAX {
                    out.min_seq = 0;
                }
                return Ok(out);
            }
        }
    }
    Err(SnapshotError::Truncated(frames))
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
