//! Checkpoints of the whole store: every series' labels and data (grid counters with their
//! coder state, raw samples), written a slice of series at a time so the writer never holds
//! the store for long, and read back before the server opens its ports.
//!
//! The file is `magic:"WGLSNAP\0" version:u32` and frames `len:u32 crc:u32 stored` where
//! `stored` is `zstd(payload)` or, when compression saves too little, the payload itself
//! (little-endian, CRC over the stored bytes; a payload starts with its kind, 1 to 3, so it
//! never looks like zstd's magic number). The first frame is the header (the
//! resolution and retention it was taken with, and remote-write progress), the last the
//! footer (series and slice counts); a file without its footer is incomplete and refused.
//! Each slice frame carries the write-ahead log position it is current to, its own string
//! table, and its series. Written to a temporary name, fsynced and renamed into place.

use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};

use super::bits::Coder;
use super::grid::Grid;
use super::{Data, SeriesId, Store};

const MAGIC: &[u8; 8] = b"WGLSNAP\0";
/// Version 2 may store a frame uncompressed; version 1 files (all zstd) are still read.
pub const VERSION: u32 = 2;
/// The first bytes of every zstd frame.
const ZSTD_MAGIC: [u8; 4] = 0xFD2F_B528u32.to_le_bytes();
const FRAME_HEADER: u8 = 1;
const FRAME_SLICE: u8 = 2;
const FRAME_FOOTER: u8 = 3;
/// Bytes of a large frame compressed first, to see whether compressing it pays.
const PROBE: usize = 64 << 10;
/// Largest frame read back (a bound against a corrupt length).
const MAX_FRAME: usize = 512 << 20;

/// Why a snapshot cannot be used; the message names the file's problem.
#[derive(Debug, thiserror::Error)]
pub enum SnapshotError {
    #[error("cannot read it: {0}")]
    Io(#[from] std::io::Error),
    #[error("it is not a waggle snapshot (bad magic bytes)")]
    Magic,
    #[error("it is format version {0}; this build reads versions 1 to {VERSION}")]
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

fn put_coder(o: &mut Out, c: &Coder) {
    o.varint(u64::from(c.mean));
    o.varint(u64::from(c.spread));
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

fn frame(out: &mut impl Write, kind: u8, body: &[u8]) -> std::io::Result<()> {
    let mut payload = Vec::with_capacity(body.len() + 1);
    payload.push(kind);
    payload.extend_from_slice(body);
    // Bit-packed grids barely compress (about 7 %): decompressing them at restore costs more
    // than reading the extra bytes, so a frame that saves less than an eighth is stored plain.
    // The end of a large frame (its series, past the string table) is tried first, so a
    // frame of busy grids is not compressed only to be thrown away.
    let saves = |raw: &[u8], z: &[u8]| z.len() < raw.len() - raw.len() / 8;
    let probe = &payload[payload.len().saturating_sub(PROBE)..];
    let z = if payload.len() <= PROBE || saves(probe, &zstd::bulk::compress(probe, 1)?) {
        Some(zstd::bulk::compress(&payload, 1)?).filter(|z| saves(&payload, z))
    } else {
        None
    };
    let stored = z.as_deref().unwrap_or(&payload);
    out.write_all(&(stored.len() as u32).to_le_bytes())?;
    out.write_all(&crc32fast::hash(stored).to_le_bytes())?;
    out.write_all(stored)
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

mod restore;
pub use restore::{restore, Restored};

#[cfg(test)]
mod tests;
