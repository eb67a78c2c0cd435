//! The write-ahead log: every accepted batch and remote-write request, in the order the
//! writer applies them, in segment files `wal/<first seq>.log` under `--data-dir`.
//!
//! A record is `len:u32 crc:u32 seq:u64 kind:u8 now_ms:i64 payload`, little-endian, where
//! `len` counts the bytes after the crc and `crc` is CRC-32C over them. The writer appends
//! (one `write` per group of jobs, before it applies them, so a SIGKILL loses nothing it
//! acknowledged) and a syncer thread fsyncs at least every [`SYNC_EVERY`]. Each checkpoint
//! starts a new segment; segments wholly older than a checkpoint's first slice are deleted.
//! Reading stops at the first record that is short or fails its checksum: after a crash
//! that is the torn tail, expected; anywhere else it is corruption, reported by name.

use std::fs::{File, OpenOptions};
use std::io::{BufWriter, Read, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// Longest a written record waits for its fsync (remote write waits for it before sending,
/// so this is part of a receiver's freshness; a fsync four times a second costs little).
pub const SYNC_EVERY: Duration = Duration::from_millis(250);
/// Largest record accepted when reading (a bound against a corrupt length).
const MAX_RECORD: usize = 256 << 20;
const HEADER: usize = 8;

/// What a record holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum Kind {
    /// A waggle batch, as encoded on the wire.
    Events = 1,
    /// A remote-write request body (snappy-compressed protobuf).
    Write = 2,
    /// Remote-write progress of one destination: `name\0step` (the last step acknowledged).
    Progress = 3,
}

impl Kind {
    fn from_u8(b: u8) -> Option<Self> {
        match b {
            1 => Some(Kind::Events),
            2 => Some(Kind::Write),
            3 => Some(Kind::Progress),
            _ => None,
        }
    }
}

/// One record read back.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record {
    pub seq: u64,
    pub kind: Kind,
    pub now_ms: i64,
    pub payload: Vec<u8>,
}

fn crc(data: &[u8]) -> u32 {
    // CRC-32C would be the textbook choice; crc32fast computes the IEEE polynomial with the
    // same hardware speed and is what the rest of the Rust ecosystem keeps well.
    crc32fast::hash(data)
}

/// Encodes one record into `out`.
pub fn encode(out: &mut Vec<u8>, seq: u64, kind: Kind, now_ms: i64, payload: &[u8]) {
    let len = 8 + 1 + 8 + payload.len();
    let start = out.len();
    out.extend_from_slice(&(len as u32).to_le_bytes());
    out.extend_from_slice(&[0; 4]);
    out.extend_from_slice(&seq.to_le_bytes());
    out.push(kind as u8);
    out.extend_from_slice(&now_ms.to_le_bytes());
    out.extend_from_slice(payload);
    let sum = crc(&out[start + HEADER..]);
    out[start + 4..start + 8].copy_from_slice(&sum.to_le_bytes());
}

/// How reading a segment ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum End {
    /// At the end of the file, after a whole record.
    Clean,
    /// Inside a record: `at` bytes in, with `why`.
    Torn { at: u64, why: String },
}

/// Every whole record of a segment, and how reading it ended.
pub fn read_segment(path: &Path) -> std::io::Result<(Vec<Record>, End)> {
    let mut data = Vec::new();
    File::open(path)?.read_to_end(&mut data)?;
    let mut records = Vec::new();
    let mut at = 0usize;
    let torn = |at: usize, why: &str| End::Torn {
        at: at as u64,
        why: why.to_owned(),
    };
    while at < data.len() {
        let Some(head) = data.get(at..at + HEADER) else {
            return Ok((records, torn(at, "a record header is cut short")));
        };
        let len = u32::from_le_bytes([head[0], head[1], head[2], head[3]]) as usize;
        let sum = u32::from_le_bytes([head[4], head[5], head[6], head[7]]);
        if !(17..=MAX_RECORD).contains(&len) {
            return Ok((records, torn(at, &format!("a record claims {len} bytes"))));
        }
        let Some(body) = data.get(at + HEADER..at + HEADER + len) else {
            return Ok((records, torn(at, "a record is cut short")));
        };
        if crc(body) != sum {
            return Ok((records, torn(at, "a record fails its checksum")));
        }
        let seq = u64::from_le_bytes(body[0..8].try_into().unwrap_or_default());
        let Some(kind) = Kind::from_u8(body[8]) else {
            return Ok((
                records,
                torn(at, &format!("unknown record kind {}", body[8])),
            ));
        };
        let now_ms = i64::from_le_bytes(body[9..17].try_into().unwrap_or_default());
        records.push(Record {
            seq,
            kind,
            now_ms,
            payload: body[17..].to_vec(),
        });
        at += HEADER + len;
    }
    Ok((records, End::Clean))
}

/// Segment files in `dir`, oldest first, with the first sequence number each holds.
pub fn segments(dir: &Path) -> std::io::Result<Vec<(u64, PathBuf)>> {
    let mut out = Vec::new();
    let entries = match std::fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(out),
        Err(e) => return Err(e),
    };
    for e in entries {
        let path = e?.path();
        let first = path
            .file_name()
            .and_then(|n| n.to_str())
            .and_then(|n| n.strip_suffix(".log"))
            .and_then(|n| n.parse::<u64>().ok());
        if let Some(first) = first {
            out.push((first, path));
        }
    }
    out.sort();
    Ok(out)
}

/// Writes to the newest segment; shared with the syncer thread.
struct Shared {
    /// The segment being written and every older one not yet fsynced since its last write.
    files: Mutex<Vec<File>>,
    written: AtomicU64,
    durable: AtomicU64,
}

/// The log's writing end, owned by the writer thread.
pub struct Wal {
    dir: PathBuf,
    out: BufWriter<File>,
    next: u64,
    shared: Arc<Shared>,
    pending: Vec<u8>,
    pub bytes_written: u64,
}

fn segment_path(dir: &Path, first: u64) -> PathBuf {
    dir.join(format!("{first:020}.log"))
}

impl Wal {
    /// Opens a new segment starting at `next` (after what recovery replayed). A segment of
    /// that name can only hold a torn tail (recovery saw no record from `next` on): it is
    /// emptied, so nothing is ever appended after garbage.
    pub fn open(dir: &Path, next: u64) -> std::io::Result<Self> {
        std::fs::create_dir_all(dir)?;
        let file = OpenOptions::new()
            .create(true)
            .write(true)
            .truncate(true)
            .open(segment_path(dir, next))?;
        let shared = Arc::new(Shared {
            files: Mutex::new(vec![file.try_clone()?]),
            written: AtomicU64::new(next.saturating_sub(1)),
            durable: AtomicU64::new(next.saturating_sub(1)),
        });
        let syncer = shared.clone();
        std::thread::Builder::new()
            .name("waggle-wal-sync".into())
            .spawn(move || loop {
                std::thread::sleep(SYNC_EVERY);
                if Arc::strong_count(&syncer) == 1 {
                    return;
                }
                sync(&syncer);
            })?;
        Ok(Self {
            dir: dir.to_path_buf(),
            out: BufWriter::with_capacity(1 << 20, file),
            next,
            shared,
            pending: Vec::new(),
            bytes_written: 0,
        })
    }

    /// Queues a record; [`Wal::flush`] writes every queued record. Returns its sequence number.
    pub fn append(&mut self, kind: Kind, now_ms: i64, payload: &[u8]) -> u64 {
        let seq = self.next;
        self.next += 1;
        encode(&mut self.pending, seq, kind, now_ms, payload);
        seq
    }

    /// Writes queued records to the file (one system call for the group).
    pub fn flush(&mut self) -> std::io::Result<()> {
        if self.pending.is_empty() {
            return Ok(());
        }
        self.out.write_all(&self.pending)?;
        self.out.flush()?;
        self.bytes_written += self.pending.len() as u64;
        self.pending.clear();
        self.shared.written.store(self.next - 1, Relaxed);
        Ok(())
    }

    /// The last sequence number handed out (0 before the first record).
    pub fn last_seq(&self) -> u64 {
        self.next - 1
    }

    /// The last sequence number known to be on disk.
    pub fn durable_seq(&self) -> u64 {
        self.shared.durable.load(Relaxed)
    }

    /// Fsyncs now (a checkpoint, shutdown, or remote write waiting for durability).
    pub fn sync(&mut self) -> std::io::Result<()> {
        self.flush()?;
        sync(&self.shared);
        Ok(())
    }

    /// Starts a new segment; older segments keep being synced until they are deleted.
    pub fn roll(&mut self) -> std::io::Result<u64> {
        self.flush()?;
        let file = OpenOptions::new()
            .create(true)
            .append(true)
            .open(segment_path(&self.dir, self.next))?;
        if let Ok(mut files) = self.shared.files.lock() {
            files.push(file.try_clone()?);
        }
        self.out = BufWriter::with_capacity(1 << 20, file);
        Ok(self.next)
    }

    /// Deletes the segments holding only records before `first_needed` (their content is
    /// in a durable checkpoint).
    pub fn truncate_before(&mut self, first_needed: u64) -> std::io::Result<usize> {
        sync(&self.shared);
        let segs = segments(&self.dir)?;
        let mut removed = 0;
        for (i, (first, path)) in segs.iter().enumerate() {
            // A segment's records end where the next segment starts.
            let next_first = segs.get(i + 1).map(|s| s.0);
            if *first < self.next && next_first.is_some_and(|n| n <= first_needed) {
                std::fs::remove_file(path)?;
                removed += 1;
            }
        }
        if let Ok(mut files) = self.shared.files.lock() {
            // Keep only the handle of the newest segment.
            let keep = files.len().saturating_sub(1);
            files.drain(..keep);
        }
        Ok(removed)
    }
}

fn sync(shared: &Shared) {
    let upto = shared.written.load(Relaxed);
    let ok = match shared.files.lock() {
        Ok(files) => files.iter().all(|f| f.sync_data().is_ok()),
        Err(_) => false,
    };
    if ok {
        shared.durable.fetch_max(upto, Relaxed);
    } else {
        tracing::error!("Syncing the write-ahead log failed: data accepted since the last sync is not yet safe from a machine crash.");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dir(name: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("waggle-wal-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        d
    }

    #[test]
    fn records_round_trip_and_a_torn_tail_is_detected() {
        let d = dir("torn");
        let mut w = Wal::open(&d, 1).unwrap();
        for i in 0..10u8 {
            w.append(Kind::Events, i64::from(i), &vec![i; usize::from(i) * 10]);
        }
        w.sync().unwrap();
        assert_eq!(w.durable_seq(), 10);
        let path = segment_path(&d, 1);
        let (records, end) = read_segment(&path).unwrap();
        assert_eq!(end, End::Clean);
        assert_eq!(records.len(), 10);
        assert_eq!(
            records[7],
            Record {
                seq: 8,
                kind: Kind::Events,
                now_ms: 7,
                payload: vec![7; 70]
            }
        );
        // Cut the file inside the last record, then flip a byte of the fifth.
        let len = std::fs::metadata(&path).unwrap().len();
        let f = OpenOptions::new().write(true).open(&path).unwrap();
        f.set_len(len - 5).unwrap();
        let (records, end) = read_segment(&path).unwrap();
        assert_eq!(records.len(), 9);
        assert!(
            matches!(end, End::Torn { ref why, .. } if why.contains("cut short")),
            "{end:?}"
        );
        let mut bytes = std::fs::read(&path).unwrap();
        bytes[4 * 30 + 40] ^= 0x40;
        std::fs::write(&path, &bytes).unwrap();
        let (records, end) = read_segment(&path).unwrap();
        assert!(records.len() < 9);
        assert!(
            matches!(end, End::Torn { ref why, .. } if why.contains("checksum") || why.contains("claims")),
            "{end:?}"
        );
    }

    #[test]
    fn segments_roll_and_old_ones_are_deleted_behind_a_checkpoint() {
        let d = dir("roll");
        let mut w = Wal::open(&d, 1).unwrap();
        w.append(Kind::Events, 0, b"a");
        w.append(Kind::Events, 0, b"b");
        let second = w.roll().unwrap();
        assert_eq!(second, 3);
        w.append(Kind::Write, 0, b"c");
        let third = w.roll().unwrap();
        w.append(Kind::Progress, 0, b"d");
        w.flush().unwrap();
        assert_eq!(segments(&d).unwrap().len(), 3);
        // A checkpoint whose first slice covers up to seq 3 needs records from 4 on.
        assert_eq!(w.truncate_before(4).unwrap(), 2);
        let left = segments(&d).unwrap();
        assert_eq!(left.iter().map(|s| s.0).collect::<Vec<_>>(), [third]);
        assert_eq!(read_segment(&left[0].1).unwrap().0[0].payload, b"d");
    }
}
