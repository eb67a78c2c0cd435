//! `--data-dir`: what makes a restart keep the analysis window. At start the checkpoint is
//! restored and the log replayed onto it (before the ports open); while serving, the writer
//! checkpoints every `--snapshot-interval` in slices and deletes the log behind each
//! checkpoint; on SIGTERM it checkpoints once more. Anything unreadable is moved aside with a
//! log line naming why, and the server starts with what is valid.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use super::wal::{self, Kind, Wal};
use super::Lock;
use crate::mesh::Mesh;
use crate::store::snapshot::{self, Header, Writer};
use crate::store::{Limits, SeriesId, Store};

/// Series per checkpoint slice: a few milliseconds of encoding under a shared hold.
const SLICE_SERIES: u32 = 2048;
const META_FORMAT: u32 = 1;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DurableSettings {
    pub dir: PathBuf,
    pub snapshot_interval: Duration,
}

fn snapshot_path(dir: &Path) -> PathBuf {
    dir.join("snapshot")
}

fn wal_dir(dir: &Path) -> PathBuf {
    dir.join("wal")
}

fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// Renames `path` to `<path>.bad-<unix time>` so it is kept for inspection but not read again.
fn move_aside(path: &Path, why: &str) {
    let aside = PathBuf::from(format!("{}.bad-{}", path.display(), unix_now()));
    match std::fs::rename(path, &aside) {
        Ok(()) => {
            tracing::error!(file = %path.display(), moved_to = %aside.display(), reason = why, "Unusable data moved aside; starting with what is valid.")
        }
        Err(e) => {
            tracing::error!(file = %path.display(), reason = why, error = %e, "Unusable data could not be moved aside.")
        }
    }
}

/// What recovery found and built.
pub struct Recovered {
    pub store: Store,
    pub next_seq: u64,
    pub progress: BTreeMap<String, i64>,
    pub series: usize,
    pub replayed: usize,
    pub took: Duration,
}

/// The data directory's format marker: another format or resolution makes everything in it
/// foreign, moved aside as a whole.
fn check_meta(dir: &Path, limits: &Limits) -> std::io::Result<()> {
    let meta = dir.join("meta");
    let want = format!(
        "format={META_FORMAT}\nresolution_ms={}\n",
        limits.resolution_ms
    );
    match std::fs::read_to_string(&meta) {
        Ok(text) if text == want => return Ok(()),
        Ok(text) => {
            let why = format!(
                "the data directory was written with {}, this server runs with {}",
                text.replace('\n', " ").trim(),
                want.replace('\n', " ").trim()
            );
            for p in [snapshot_path(dir), wal_dir(dir)] {
                if p.exists() {
                    move_aside(&p, &why);
                }
            }
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(e),
    }
    std::fs::write(&meta, want)
}

/// Restores the checkpoint and replays the log in `dir` (creating it when new).
pub fn recover(
    dir: &Path,
    limits: Limits,
    families: &[crate::families::Family],
) -> std::io::Result<Recovered> {
    let started = Instant::now();
    std::fs::create_dir_all(dir)?;
    check_meta(dir, &limits)?;
    let snap = snapshot_path(dir);
    let (mut store, seqs, min_seq, mut progress) = if snap.exists() {
        match snapshot::restore(&snap, limits) {
            Ok(r) => {
                tracing::info!(series = r.series, "Checkpoint restored.");
                (
                    r.store,
                    r.seqs,
                    r.min_seq,
                    r.header.progress.into_iter().collect(),
                )
            }
            Err(e) => {
                move_aside(&snap, &format!("the checkpoint is unusable: {e}"));
                (Store::new(limits), Vec::new(), 0, BTreeMap::new())
            }
        }
    } else {
        (Store::new(limits), Vec::new(), 0, BTreeMap::new())
    };
    // A series holds a record if it came from the checkpoint current past that record.
    let restored = store.id_bound();
    let keep =
        |id: SeriesId, seq: u64| id >= restored || seqs.get(id as usize).is_none_or(|s| *s < seq);
    let mut mesh = Mesh::new(families.to_vec());
    let mut next_seq = min_seq + 1;
    let mut replayed = 0;
    let segments = wal::segments(&wal_dir(dir))?;
    // Sequence numbers only grow, even past a checkpoint that was lost: the new segment is
    // then always the newest (an old one of that name can only be empty or torn).
    if let Some((first, _)) = segments.last() {
        next_seq = next_seq.max(*first);
    }
    let last = segments.len().saturating_sub(1);
    for (i, (_, path)) in segments.iter().enumerate() {
        let (records, end) = match wal::read_segment(path) {
            Ok(x) => x,
            Err(e) => {
                move_aside(path, &format!("the log segment cannot be read: {e}"));
                continue;
            }
        };
        for r in records.iter().filter(|r| r.seq > min_seq) {
            next_seq = next_seq.max(r.seq + 1);
            replayed += 1;
            match replay(&mut store, &mut mesh, r, |id| keep(id, r.seq)) {
                Ok(Some((name, step))) => {
                    let p = progress.entry(name).or_insert(step);
                    *p = (*p).max(step);
                }
                Ok(None) => {}
                Err(why) => {
                    tracing::warn!(seq = r.seq, reason = %why, "A log record could not be replayed; skipped.")
                }
            }
        }
        if let wal::End::Torn { at, why } = end {
            if i == last {
                tracing::info!(segment = %path.display(), offset = at, reason = %why, "The log ends in a torn record, as after a crash: replayed up to it.");
            } else {
                move_aside(path, &format!("corrupt at byte {at} ({why}), before the newest segment; its earlier records were replayed"));
            }
        }
    }
    store.maintain(crate::api::now_ms());
    let series = store.series_count();
    Ok(Recovered {
        store,
        next_seq,
        progress,
        series,
        replayed,
        took: started.elapsed(),
    })
}

/// Applies one log record to the store (series `keep` rejects are left alone); returns
/// remote-write progress when the record is that.
fn replay(
    store: &mut Store,
    mesh: &mut Mesh,
    r: &wal::Record,
    keep: impl Fn(SeriesId) -> bool,
) -> Result<Option<(String, i64)>, String> {
    match r.kind {
        Kind::Events => {
            let batch = waggle_wire::decode(&r.payload).map_err(|e| e.to_string())?;
            mesh.ingest_where(store, &batch, r.now_ms, keep);
            Ok(None)
        }
        Kind::Write => {
            let raw = snap::raw::Decoder::new()
                .decompress_vec(&r.payload)
                .map_err(|e| e.to_string())?;
            let req = crate::prompb::decode(raw, &crate::prompb::Limits::default())
                .map_err(|e| e.to_string())?;
            super::write::replay(store, &req, r.now_ms, keep);
            Ok(None)
        }
        Kind::Progress => {
            let text = std::str::from_utf8(&r.payload).map_err(|e| e.to_string())?;
            let (name, step) = text
                .split_once('\0')
                .ok_or("a progress record without its step")?;
            let step = step
                .parse()
                .map_err(|_| "a progress record with a bad step")?;
            Ok(Some((name.to_owned(), step)))
        }
    }
}

/// The writer's checkpoints: started on schedule, written a slice per writer turn.
pub struct Checkpoints {
    dir: PathBuf,
    every: Duration,
    last: Instant,
    current: Option<InProgress>,
    /// A finished checkpoint being made durable elsewhere; its log can go once it is.
    committed: std::sync::mpsc::Receiver<std::io::Result<u64>>,
    commit_tx: std::sync::mpsc::Sender<std::io::Result<u64>>,
    /// A commit is under way: the next checkpoint waits for it (both use the same file names).
    committing: bool,
    pub stats: CheckpointStats,
}

struct InProgress {
    writer: Writer,
    next_id: SeriesId,
    /// The log position the first slice is current to: records after it are kept.
    first_seq: u64,
    started: Instant,
}

/// What the last checkpoint cost, for `/metrics`.
#[derive(Debug, Default, Clone, Copy)]
pub struct CheckpointStats {
    pub completed: u64,
    pub failed: u64,
    pub last_series: u64,
    pub last_bytes: u64,
    pub last_seconds: f64,
}

impl Checkpoints {
    pub fn new(dir: &Path, every: Duration) -> Self {
        let (commit_tx, committed) = std::sync::mpsc::channel();
        Self {
            dir: dir.to_path_buf(),
            every,
            last: Instant::now(),
            current: None,
            committed,
            commit_tx,
            committing: false,
            stats: CheckpointStats::default(),
        }
    }

    pub fn in_progress(&self) -> bool {
        self.current.is_some()
    }

    /// One turn: truncates the log behind a checkpoint made durable, starts one when due, or
    /// writes the next slice of the one in progress.
    pub fn turn(&mut self, lock: &Lock, wal: &mut Wal, progress: &BTreeMap<String, i64>) {
        while let Ok(done) = self.committed.try_recv() {
            self.committing = false;
            match done.and_then(|first_needed| wal.truncate_before(first_needed)) {
                Ok(_) => self.stats.completed += 1,
                Err(e) => {
                    self.stats.failed += 1;
                    tracing::error!(error = %e, "A checkpoint could not be made durable; the log is kept.");
                }
            }
        }
        if self.current.is_none() {
            if !self.committing && self.last.elapsed() >= self.every {
                self.start(lock, wal, progress);
            }
            return;
        }
        self.slice(lock, wal, false);
    }

    fn start(&mut self, lock: &Lock, wal: &mut Wal, progress: &BTreeMap<String, i64>) {
        self.last = Instant::now();
        let limits = lock.read().limits();
        let header = Header {
            resolution_ms: limits.resolution_ms,
            retention_ms: limits.retention_ms,
            created_ms: crate::api::now_ms(),
            progress: progress.iter().map(|(k, v)| (k.clone(), *v)).collect(),
        };
        let started = wal
            .roll()
            .and_then(|_| Writer::create(&snapshot_path(&self.dir), &header));
        match started {
            Ok(writer) => {
                self.current = Some(InProgress {
                    writer,
                    next_id: 0,
                    first_seq: wal.last_seq(),
                    started: Instant::now(),
                })
            }
            Err(e) => {
                self.stats.failed += 1;
                tracing::error!(error = %e, "A checkpoint could not be started.");
            }
        }
    }

    /// Writes the next slice (all of them when `all`); finishes the checkpoint after the last.
    fn slice(&mut self, lock: &Lock, wal: &mut Wal, all: bool) -> bool {
        let Some(cp) = self.current.as_mut() else {
            return false;
        };
        loop {
            let store = lock.read();
            let bound = store.id_bound();
            let to = cp.next_id.saturating_add(SLICE_SERIES).min(bound);
            // Between jobs: every record up to the log's last is in the store, none after it.
            if let Err(e) = cp.writer.slice(&store, cp.next_id..to, wal.last_seq()) {
                drop(store);
                self.stats.failed += 1;
                tracing::error!(error = %e, "Writing a checkpoint failed; the next one starts on schedule.");
                self.current = None;
                return false;
            }
            drop(store);
            cp.next_id = to;
            if to >= bound {
                break;
            }
            if !all {
                return true;
            }
        }
        let Some(cp) = self.current.take() else {
            return false;
        };
        let first_needed = cp.first_seq + 1;
        match cp.writer.finish() {
            Ok(done) => {
                self.stats.last_series = done.series;
                self.stats.last_bytes = done.bytes;
                self.stats.last_seconds = cp.started.elapsed().as_secs_f64();
                if all {
                    let r = snapshot::commit(done).and_then(|()| wal.truncate_before(first_needed));
                    if let Err(e) = &r {
                        self.stats.failed += 1;
                        tracing::error!(error = %e, "A checkpoint could not be made durable; the log is kept.");
                    } else {
                        self.stats.completed += 1;
                    }
                    return r.is_ok();
                }
                // The fsync of a large file can take a while: not on the writer thread.
                let tx = self.commit_tx.clone();
                self.committing = true;
                std::thread::spawn(move || {
                    let _ = tx.send(snapshot::commit(done).map(|()| first_needed));
                });
                true
            }
            Err(e) => {
                self.stats.failed += 1;
                tracing::error!(error = %e, "Finishing a checkpoint failed.");
                false
            }
        }
    }

    /// A whole checkpoint now, made durable before returning (shutdown, and right after
    /// recovery so that what was replayed is a checkpoint again).
    pub fn now(&mut self, lock: &Lock, wal: &mut Wal, progress: &BTreeMap<String, i64>) -> bool {
        // A commit under way finishes first: the new checkpoint reuses its file names.
        if self.committing {
            if let Ok(done) = self.committed.recv_timeout(Duration::from_secs(120)) {
                self.committing = false;
                let _ = done.and_then(|first| wal.truncate_before(first));
            }
        }
        if self.current.is_none() {
            self.start(lock, wal, progress);
        }
        self.slice(lock, wal, true)
    }
}
