//! The writer thread: the one place the store changes. It applies jobs in the order they
//! arrive, runs maintenance on its own schedule, and keeps [`super::Gauges`] current.

use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::{mpsc, oneshot};

use super::{Gauges, Lock};
use crate::mesh::{Mesh, Outcome};

/// Jobs waiting for the writer; a full queue makes senders wait (ingest slows, nothing grows).
const QUEUE: usize = 256;

/// How often stale series are ended and retention applied.
pub const MAINTAIN_EVERY: Duration = Duration::from_secs(5);

#[derive(Debug, Clone, Copy, Default)]
pub struct Options {
    /// Run maintenance on the writer's own schedule (off in tests that drive it by hand).
    pub auto_maintain: bool,
}

pub enum Job {
    Events {
        batches: Vec<waggle_wire::Batch>,
        now_ms: i64,
        reply: oneshot::Sender<(Outcome, Vec<waggle_wire::Batch>)>,
    },
    Write {
        req: crate::prompb::Request,
        now_ms: i64,
        reply: oneshot::Sender<Result<usize, super::write::WriteError>>,
    },
    Maintain {
        now_ms: i64,
        reply: oneshot::Sender<()>,
    },
    Barrier {
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
            let mut every = tokio::time::interval(Duration::from_millis(500));
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
                opts,
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
    opts: Options,
    last_maintain: Instant,
}

impl Writer {
    fn run(mut self, mut rx: mpsc::Receiver<Job>) {
        while let Some(job) = rx.blocking_recv() {
            match job {
                Job::Events {
                    batches,
                    now_ms,
                    reply,
                } => {
                    let out = super::events::apply(&self.lock, &mut self.mesh, &batches, now_ms);
                    let _ = reply.send((out, batches));
                }
                Job::Write { req, now_ms, reply } => {
                    let _ = reply.send(super::write::apply(&self.lock, &req, now_ms));
                }
                Job::Maintain { now_ms, reply } => {
                    self.maintain(now_ms);
                    let _ = reply.send(());
                }
                Job::Barrier { reply } => {
                    let _ = reply.send(());
                }
                Job::Tick => {}
            }
            self.gauges.update(&self.lock.read());
            self.gauges.applied.fetch_add(1, Relaxed);
            if self.opts.auto_maintain && self.last_maintain.elapsed() >= MAINTAIN_EVERY {
                self.maintain(crate::api::now_ms());
            }
        }
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
