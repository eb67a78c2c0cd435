//! The writer thread: the one place the store changes. It applies jobs in the order they
//! arrive, logs each one first when there is a data directory, checkpoints and runs
//! maintenance on its own schedule, and keeps [`super::Gauges`] current.

use std::collections::BTreeMap;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::body::Bytes;
use tokio::sync::mpsc::error::TryRecvError;
use tokio::sync::{mpsc, oneshot};

use super::durable::Checkpoints;
use super::wal::{Kind, Wal};
use super::{Gauges, Lock};
use crate::mesh::{Mesh, Outcome};

/// Jobs waiting for the writer; a full queue makes senders wait (ingest slows, nothing grows).
const QUEUE: usize = 256;
/// Jobs logged with one write and applied in one turn, at most.
const GROUP: usize = 64;

/// How often stale series are ended and retention applied.
pub const MAINTAIN_EVERY: Duration = Duration::from_secs(5);

/// The log and checkpoints, when the store is durable.
pub struct Durable {
    pub wal: Wal,
    pub checkpoints: Checkpoints,
    /// Remote-write progress per destination, carried into every checkpoint.
    pub progress: BTreeMap<String, i64>,
}

#[derive(Default)]
pub struct Options {
    /// Run maintenance on the writer's own schedule (off in tests that drive it by hand).
    pub auto_maintain: bool,
    pub durable: Option<Durable>,
}

/// One decoded batch and the bytes it came as (what the log keeps).
pub type Logged = (waggle_wire::Batch, Bytes);

pub enum Job {
    Events {
        batches: Vec<Logged>,
        now_ms: i64,
        reply: oneshot::Sender<(Outcome, Vec<waggle_wire::Batch>)>,
    },
    Write {
        req: crate::prompb::Request,
        /// The request as received (snappy), for the log.
        body: Bytes,
        now_ms: i64,
        reply: oneshot::Sender<Result<usize, super::write::WriteError>>,
    },
    /// A remote-write destination acknowledged everything up to `step`.
    Progress {
        name: String,
        step: i64,
    },
    Maintain {
        now_ms: i64,
        reply: oneshot::Sender<()>,
    },
    /// A whole checkpoint now (tests, and what SIGTERM does before exit).
    Checkpoint {
        reply: oneshot::Sender<bool>,
    },
    Barrier {
        reply: oneshot::Sender<()>,
    },
    /// Checkpoint, then stop taking jobs.
    Shutdown {
        reply: oneshot::Sender<()>,
    },
    Tick,
}

pub(super) fn spawn(
    lock: Arc<Lock>,
    gauges: Arc<Gauges>,
    mesh: Mesh,
    opts: Options,
) -> std::io::Result<mpsc::Sender<Job>> {
    let (tx, rx) = mpsc::channel(QUEUE);
    if opts.auto_maintain {
        // Wakes the writer when no job does; dies with the runtime or the writer.
        let ticker = tx.clone();
        tokio::spawn(async move {
            let mut every = tokio::time::interval(Duration::from_millis(250));
            loop {
                every.tick().await;
                if ticker.send(Job::Tick).await.is_err() {
                    return;
                }
            }
        });
    }
    std::thread::Builder::new()
        .name("waggle-writer".into())
        .spawn(move || {
            Writer {
                lock,
                gauges,
                mesh,
                auto_maintain: opts.auto_maintain,
                durable: opts.durable,
                last_maintain: Instant::now(),
            }
            .run(rx)
        })?;
    Ok(tx)
}

struct Writer {
    lock: Arc<Lock>,
    gauges: Arc<Gauges>,
    mesh: Mesh,
    auto_maintain: bool,
    durable: Option<Durable>,
    last_maintain: Instant,
}

impl Writer {
    fn run(mut self, mut rx: mpsc::Receiver<Job>) {
        loop {
            // While a checkpoint is being written, turns without jobs write its slices.
            let first = if self
                .durable
                .as_ref()
                .is_some_and(|d| d.checkpoints.in_progress())
            {
                match rx.try_recv() {
                    Ok(j) => Some(j),
                    Err(TryRecvError::Empty) => None,
                    Err(TryRecvError::Disconnected) => break,
                }
            } else {
                match rx.blocking_recv() {
                    Some(j) => Some(j),
                    None => break,
                }
            };
            let mut group: Vec<Job> = first.into_iter().collect();
            while group.len() < GROUP && matches!(group.last(), Some(Job::Events { .. })) {
                match rx.try_recv() {
                    Ok(j) => group.push(j),
                    Err(_) => break,
                }
            }
            if self.turn(group) {
                break;
            }
        }
        if let Some(d) = self.durable.as_mut() {
            let _ = d.wal.sync();
        }
    }

    /// Logs and applies a group of jobs; true when told to shut down.
    fn turn(&mut self, group: Vec<Job>) -> bool {
        // Batches are logged together, with one write, before any of them is applied.
        if let Some(d) = self.durable.as_mut() {
            for job in &group {
                if let Job::Events {
                    batches, now_ms, ..
                } = job
                {
                    for (_, bytes) in batches {
                        d.wal.append(Kind::Events, *now_ms, bytes);
                    }
                }
            }
            self.flush_log();
        }
        let mut shutdown = None;
        for job in group {
            match job {
                Job::Events {
                    batches,
                    now_ms,
                    reply,
                } => {
                    let batches: Vec<waggle_wire::Batch> =
                        batches.into_iter().map(|(b, _)| b).collect();
                    let out = super::events::apply(&self.lock, &mut self.mesh, &batches, now_ms);
                    let _ = reply.send((out, batches));
                }
                Job::Write {
                    req,
                    body,
                    now_ms,
                    reply,
                } => {
                    let _ = reply.send(self.write(&req, &body, now_ms));
                }
                Job::Progress { name, step } => {
                    if let Some(d) = self.durable.as_mut() {
                        d.wal
                            .append(Kind::Progress, 0, format!("{name}\0{step}").as_bytes());
                        d.progress.insert(name, step);
                        self.flush_log();
                    }
                }
                Job::Maintain { now_ms, reply } => {
                    self.maintain(now_ms);
                    let _ = reply.send(());
                }
                Job::Checkpoint { reply } => {
                    let ok = self
                        .durable
                        .as_mut()
                        .is_some_and(|d| d.checkpoints.now(&self.lock, &mut d.wal, &d.progress));
                    self.publish_checkpoints();
                    let _ = reply.send(ok);
                }
                Job::Barrier { reply } => {
                    let _ = reply.send(());
                }
                Job::Shutdown { reply } => shutdown = Some(reply),
                Job::Tick => {}
            }
        }
        self.gauges.update(&self.lock.read());
        self.gauges.applied.fetch_add(1, Relaxed);
        if let Some(d) = self.durable.as_mut() {
            self.gauges.durable_seq.store(d.wal.durable_seq(), Relaxed);
            d.checkpoints.turn(&self.lock, &mut d.wal, &d.progress);
            self.publish_checkpoints();
        }
        if self.auto_maintain && self.last_maintain.elapsed() >= MAINTAIN_EVERY {
            self.maintain(crate::api::now_ms());
        }
        match shutdown {
            Some(reply) => {
                if let Some(d) = self.durable.as_mut() {
                    if d.checkpoints.now(&self.lock, &mut d.wal, &d.progress) {
                        tracing::info!("Final checkpoint written.");
                    }
                }
                let _ = reply.send(());
                true
            }
            None => false,
        }
    }

    /// Writes logged records out and publishes how far the log goes: everything applied is
    /// at or before it, so a reader that sees data applied later than this read knows what to
    /// wait for before calling it durable.
    fn flush_log(&mut self) {
        if let Some(d) = self.durable.as_mut() {
            if let Err(e) = d.wal.flush() {
                tracing::error!(error = %e, "Writing the log failed: what is applied now is not durable.");
            }
            self.gauges.applied_seq.store(d.wal.last_seq(), Relaxed);
        }
    }

    fn publish_checkpoints(&self) {
        if let Some(d) = &self.durable {
            let s = d.checkpoints.stats;
            let g = &self.gauges;
            g.checkpoints.store(s.completed, Relaxed);
            g.checkpoint_failures.store(s.failed, Relaxed);
            g.checkpoint_bytes.store(s.last_bytes, Relaxed);
            g.checkpoint_ms
                .store((s.last_seconds * 1000.0) as u64, Relaxed);
            g.wal_bytes.store(d.wal.bytes_written, Relaxed);
        }
    }

    /// Checks a remote-write request, logs it, then applies it: a refused one is not logged.
    fn write(
        &mut self,
        req: &crate::prompb::Request,
        body: &[u8],
        now_ms: i64,
    ) -> Result<usize, super::write::WriteError> {
        super::write::check(&self.lock, req, now_ms)?;
        if let Some(d) = self.durable.as_mut() {
            d.wal.append(Kind::Write, now_ms, body);
        }
        self.flush_log();
        super::write::store(&self.lock, req, now_ms)
    }

    /// Ends stale series, applies retention and compacts symbols, in slices.
    fn maintain(&mut self, now_ms: i64) {
        self.last_maintain = Instant::now();
        const IDS_PER_STEP: u32 = 1024;
        let mut dead = Vec::new();
        {
            let mut w = super::WriteSlices::new(&self.lock);
            let bound = w.store().id_bound();
            let mut from = 0;
            while from < bound {
                let to = from.saturating_add(IDS_PER_STEP).min(bound);
                dead.extend(w.store().maintain_range(now_ms, from..to));
                w.tick();
                from = to;
            }
            w.store().remove_many(&dead);
        }
        // The rebuild is computed under a shared hold (queries go on) and swapped in at once.
        let plan = self.lock.read().plan_compaction();
        if let Some(plan) = plan {
            let replaced = self.lock.write().apply_compaction(plan);
            drop(replaced);
        }
        let bytes = self.lock.read().bytes();
        self.gauges.bytes.store(bytes as u64, Relaxed);
    }
}
