//! The threads queries run on: a fixed number (`--query-max-concurrency`), so N heavy
//! queries cannot multiply memory or take every core, with stacks deep enough for the
//! deepest tree [`super::depth`] lets through. Parsing, evaluation and explanation all run
//! here, never on the async workers.

use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::time::Instant;

/// Each query thread's stack. Memory is committed only as far as a query really recurses;
/// the depth tests prove [`super::depth::MAX_DEPTH`] fits in debug builds.
pub const STACK_BYTES: usize = 64 << 20;

type Job = Box<dyn FnOnce() + Send + 'static>;

/// Why a job did not run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum PoolError {
    #[error("the query waited for a free slot until its deadline (all {0} query slots busy)")]
    Queued(usize),
    #[error("the query pool is shut down")]
    Closed,
}

pub struct Pool {
    tx: Mutex<mpsc::Sender<Job>>,
    threads: usize,
    busy: Arc<std::sync::atomic::AtomicUsize>,
}

impl Pool {
    /// Starts `threads` query threads (at least one).
    pub fn new(threads: usize) -> std::io::Result<Self> {
        let threads = threads.max(1);
        let (tx, rx) = mpsc::channel::<Job>();
        let rx = Arc::new(Mutex::new(rx));
        let busy = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        for i in 0..threads {
            let rx = rx.clone();
            std::thread::Builder::new()
                .name(format!("waggle-query-{i}"))
                .stack_size(STACK_BYTES)
                .spawn(move || loop {
                    // The lock is held only while waiting for the next job, never while running it.
                    let job = match rx.lock() {
                        Ok(r) => r.recv(),
                        Err(_) => return,
                    };
                    match job {
                        Ok(job) => job(),
                        Err(_) => return,
                    }
                })?;
        }
        Ok(Self {
            tx: Mutex::new(tx),
            threads,
            busy,
        })
    }

    pub fn threads(&self) -> usize {
        self.threads
    }

    /// Queries running or waiting right now.
    pub fn busy(&self) -> usize {
        self.busy.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Runs `f` on a query thread; a job still queued at `deadline` is not started.
    pub async fn run<T: Send + 'static>(
        &self,
        deadline: Instant,
        f: impl FnOnce() -> T + Send + 'static,
    ) -> Result<T, PoolError> {
        let (tx, mut rx) = tokio::sync::oneshot::channel();
        let threads = self.threads;
        let busy = self.busy.clone();
        let started = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let started2 = started.clone();
        busy.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let job: Job = Box::new(move || {
            let out = if Instant::now() > deadline {
                Err(PoolError::Queued(threads))
            } else {
                started2.store(true, std::sync::atomic::Ordering::Release);
                Ok(f())
            };
            busy.fetch_sub(1, std::sync::atomic::Ordering::Relaxed);
            let _ = tx.send(out);
        });
        let sent = self.tx.lock().map(|t| t.send(job).is_ok()).unwrap_or(false);
        if !sent {
            self.busy.fetch_sub(1, std::sync::atomic::Ordering::Relaxed);
            return Err(PoolError::Closed);
        }
        // A job that has started stops itself at the deadline; one still queued is answered
        // at the deadline (and skipped when a thread reaches it).
        match tokio::time::timeout_at(deadline.into(), &mut rx).await {
            Ok(out) => out.unwrap_or(Err(PoolError::Closed)),
            Err(_) if !started.load(std::sync::atomic::Ordering::Acquire) => {
                Err(PoolError::Queued(threads))
            }
            Err(_) => rx.await.unwrap_or(Err(PoolError::Closed)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[tokio::test]
    async fn concurrency_is_capped_and_queued_jobs_expire() {
        let pool = Arc::new(Pool::new(2).unwrap());
        let running = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let peak = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let far = Instant::now() + Duration::from_secs(30);
        let mut jobs = Vec::new();
        for _ in 0..6 {
            let (pool, running, peak) = (pool.clone(), running.clone(), peak.clone());
            jobs.push(tokio::spawn(async move {
                pool.run(far, move || {
                    let n = running.fetch_add(1, std::sync::atomic::Ordering::SeqCst) + 1;
                    peak.fetch_max(n, std::sync::atomic::Ordering::SeqCst);
                    std::thread::sleep(Duration::from_millis(50));
                    running.fetch_sub(1, std::sync::atomic::Ordering::SeqCst);
                })
                .await
            }));
        }
        for j in jobs {
            assert_eq!(j.await.unwrap(), Ok(()));
        }
        assert_eq!(peak.load(std::sync::atomic::Ordering::SeqCst), 2);

        // Both threads busy past a job's deadline: it is refused, not run late.
        let slow = |p: Arc<Pool>| async move {
            p.run(far, || std::thread::sleep(Duration::from_millis(300)))
                .await
        };
        let (a, b) = (
            tokio::spawn(slow(pool.clone())),
            tokio::spawn(slow(pool.clone())),
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
        let late = pool
            .run(Instant::now() + Duration::from_millis(100), || 7)
            .await;
        assert_eq!(late, Err(PoolError::Queued(2)));
        a.await.unwrap().unwrap();
        b.await.unwrap().unwrap();
        assert_eq!(pool.busy(), 0);
    }
}
