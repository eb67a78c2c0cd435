//! The store behind one lock, changed by one writer thread and read in short sections.
//!
//! Every change (mesh batches, remote-write requests, maintenance) is a job for the writer
//! thread, applied in order. The writer holds the lock exclusively only in slices of at most
//! [`SLICE`], yielding it fairly to waiting readers between slices; readers hold it shared in
//! slices of the same length. So ingest and queries never wait on each other for longer than
//! a slice, whatever a request's size.

pub mod durable;
pub mod events;
pub mod read;
pub mod wal;
pub mod write;
pub mod writer;

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::Arc;
use std::time::{Duration, Instant};

use parking_lot::{RwLock, RwLockReadGuard, RwLockWriteGuard};

use crate::store::Store;

pub type Lock = RwLock<Store>;

/// Longest the writer holds the store exclusively, or a reader holds it shared, at a time.
pub const SLICE: Duration = Duration::from_millis(1);

/// Store figures the writer keeps current, so health and `/metrics` never take the lock.
#[derive(Debug, Default)]
pub struct Gauges {
    pub series: AtomicU64,
    pub bytes: AtomicU64,
    pub late_counts: AtomicU64,
    pub symbols: AtomicU64,
    /// Jobs applied: a test (or a caller) can wait for everything sent so far.
    pub applied: AtomicU64,
    /// The last log record written (everything applied is at or before it), and the last
    /// one known to be on disk (with a data directory).
    pub applied_seq: AtomicU64,
    pub durable_seq: AtomicU64,
    pub checkpoints: AtomicU64,
    pub checkpoint_failures: AtomicU64,
    pub checkpoint_bytes: AtomicU64,
    pub checkpoint_ms: AtomicU64,
    pub wal_bytes: AtomicU64,
}

impl Gauges {
    pub(crate) fn update(&self, store: &Store) {
        self.series.store(store.series_count() as u64, Relaxed);
        self.late_counts.store(store.stats.late_counts, Relaxed);
        self.symbols.store(store.symbols_len() as u64, Relaxed);
    }
}

/// An exclusive hold on the store that lets go for waiting readers every [`SLICE`].
pub struct WriteSlices<'a> {
    guard: RwLockWriteGuard<'a, Store>,
    since: Instant,
    ops: u32,
}

impl<'a> WriteSlices<'a> {
    pub fn new(lock: &'a Lock) -> Self {
        Self {
            guard: lock.write(),
            since: Instant::now(),
            ops: 0,
        }
    }

    /// Call between units of work: yields the lock when the slice is used up.
    pub fn tick(&mut self) {
        self.ops += 1;
        if self.ops.is_multiple_of(16) && self.since.elapsed() >= SLICE {
            RwLockWriteGuard::bump(&mut self.guard);
            self.since = Instant::now();
        }
    }

    pub fn store(&mut self) -> &mut Store {
        &mut self.guard
    }
}

/// A shared hold on the store that lets go for a waiting writer every [`SLICE`]. After a
/// yield the store may have changed: [`ReadSlices::tick`] says whether series ids were
/// removed or renumbered meanwhile (the store's generation moved).
pub struct ReadSlices<'a> {
    guard: RwLockReadGuard<'a, Store>,
    since: Instant,
    ops: u32,
    generation: u64,
}

impl<'a> ReadSlices<'a> {
    pub fn new(lock: &'a Lock) -> Self {
        let guard = lock.read();
        let generation = guard.generation();
        Self {
            guard,
            since: Instant::now(),
            ops: 0,
            generation,
        }
    }

    /// Call between units of work; false when ids read before may no longer be valid.
    pub fn tick(&mut self) -> bool {
        self.ops += 1;
        if self.ops.is_multiple_of(16) && self.since.elapsed() >= SLICE {
            RwLockReadGuard::bump(&mut self.guard);
            self.since = Instant::now();
        }
        self.guard.generation() == self.generation
    }

    pub fn store(&self) -> &Store {
        &self.guard
    }
}

/// The store, its gauges and the writer's queue: what handlers hold.
#[derive(Clone)]
pub struct Db {
    pub lock: Arc<Lock>,
    pub gauges: Arc<Gauges>,
    jobs: tokio::sync::mpsc::Sender<writer::Job>,
}

/// Why a job was not applied.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DbError {
    #[error("the store is shutting down")]
    Closed,
    #[error(transparent)]
    Refused(#[from] write::WriteError),
}

impl Db {
    /// Starts the writer thread over `store`.
    pub fn start(
        store: Store,
        mesh: crate::mesh::Mesh,
        opts: writer::Options,
    ) -> std::io::Result<Self> {
        let lock = Arc::new(RwLock::new(store));
        let gauges = Arc::new(Gauges::default());
        gauges.update(&lock.read());
        let jobs = writer::spawn(lock.clone(), gauges.clone(), mesh, opts)?;
        Ok(Self { lock, gauges, jobs })
    }

    async fn send<T>(
        &self,
        job: impl FnOnce(tokio::sync::oneshot::Sender<T>) -> writer::Job,
    ) -> Result<T, DbError> {
        let (tx, rx) = tokio::sync::oneshot::channel();
        self.jobs.send(job(tx)).await.map_err(|_| DbError::Closed)?;
        rx.await.map_err(|_| DbError::Closed)
    }

    /// Counts decoded mesh batches into the store (logged as the bytes they came as); the
    /// batches come back with the outcome.
    pub async fn events(
        &self,
        batches: Vec<writer::Logged>,
        now_ms: i64,
    ) -> Result<(crate::mesh::Outcome, Vec<waggle_wire::Batch>), DbError> {
        self.send(|reply| writer::Job::Events {
            batches,
            now_ms,
            reply,
        })
        .await
    }

    /// Applies one remote-write request, all or nothing.
    pub async fn write(
        &self,
        req: crate::prompb::Request,
        body: axum::body::Bytes,
        now_ms: i64,
    ) -> Result<usize, DbError> {
        let out = self
            .send(|reply| writer::Job::Write {
                req,
                body,
                now_ms,
                reply,
            })
            .await?;
        out.map_err(DbError::from)
    }

    /// Records a remote-write destination's progress (in the log and the next checkpoint).
    pub async fn progress(&self, name: String, step: i64) {
        let _ = self.jobs.send(writer::Job::Progress { name, step }).await;
    }

    /// A whole checkpoint now; false without a data directory or when it failed.
    pub async fn checkpoint(&self) -> Result<bool, DbError> {
        self.send(|reply| writer::Job::Checkpoint { reply }).await
    }

    /// Checkpoints and stops the writer: what SIGTERM does once ingest has stopped.
    pub async fn shutdown(&self) -> Result<(), DbError> {
        self.send(|reply| writer::Job::Shutdown { reply }).await
    }

    /// Waits until every job sent before it has been applied.
    pub async fn barrier(&self) -> Result<(), DbError> {
        self.send(|reply| writer::Job::Barrier { reply }).await
    }

    /// Runs maintenance now (tests; the writer also runs it on its own schedule).
    pub async fn maintain(&self, now_ms: i64) -> Result<(), DbError> {
        self.send(|reply| writer::Job::Maintain { now_ms, reply })
            .await
    }
}
