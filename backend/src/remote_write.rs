//! Remote write out: every mesh-derived series, step by step as its steps complete, to any
//! Prometheus remote-write receiver (Prometheus, Mimir, Thanos Receive, VictoriaMetrics).
//!
//! Each destination runs its own loop of rounds, one per `resolution`: a round reads the
//! completed steps since the last one acknowledged (the store itself is the queue, so
//! nothing is copied while a receiver is down), spreads the series over shards by id, and
//! sends the shards' requests in parallel, each shard's in order. A round is finished when
//! every request is delivered or refused; only then does the destination's progress move
//! (and, with `--data-dir`, get logged, so a restart neither resends a long history nor
//! skips a step). A backlog larger than `capacity × max_shards` samples is cut from its
//! oldest end, counted. Ingest and queries never wait on any of it.

pub mod collect;
pub mod config;
pub mod send;
pub mod stats;

use std::collections::BTreeMap;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;

use crate::db::Db;
pub use config::{Destination, RemoteWriteArgs, RemoteWriteFile};
use stats::Stats;

/// How far a round stays behind the step being written: two steps, so that every series
/// whose steps it sends already existed when the round began.
const LAG_STEPS: i64 = 2;
/// How long a round waits for what it read to be fsynced before it sends anyway.
const DURABLE_WAIT: Duration = Duration::from_secs(5);

pub(crate) async fn stopped(mut rx: watch::Receiver<bool>) {
    let _ = rx.wait_for(|v| *v).await;
}

/// One destination's state, shared with `/metrics` and `/-/export`.
pub struct Sink {
    pub dest: Destination,
    pub stats: Stats,
}

/// All destinations.
#[derive(Default)]
pub struct RemoteWriter {
    pub sinks: Vec<Arc<Sink>>,
}

impl RemoteWriter {
    /// Starts one loop per destination; `progress` is what recovery found per destination.
    pub fn start(
        db: Db,
        dests: Vec<Destination>,
        progress: &BTreeMap<String, i64>,
        durable: bool,
        resolution_ms: i64,
        stop: watch::Receiver<bool>,
    ) -> Result<Arc<Self>, reqwest::Error> {
        let client = reqwest::Client::builder()
            .pool_max_idle_per_host(256)
            .build()?;
        let mut sinks = Vec::new();
        for dest in dests {
            let sink = Arc::new(Sink {
                dest,
                stats: Stats::default(),
            });
            let start = progress.get(&sink.dest.name).copied();
            tokio::spawn(run(
                sink.clone(),
                db.clone(),
                client.clone(),
                start,
                durable,
                resolution_ms,
                stop.clone(),
            ));
            sinks.push(sink);
        }
        Ok(Arc::new(Self { sinks }))
    }

    pub fn render(&self, out: &mut String) {
        if self.sinks.is_empty() {
            return;
        }
        out.push_str("# HELP waggle_remote_storage_samples_total Samples delivered to a remote-write destination, with Prometheus's meaning for the other waggle_remote_storage_* series.\n");
        for s in &self.sinks {
            s.stats.render(out, &s.dest.name, &s.dest.url);
        }
    }

    /// Destinations whose last request failed, for `/-/export`.
    pub fn failing(&self) -> Vec<String> {
        self.sinks
            .iter()
            .filter(|s| s.stats.failing.load(Relaxed))
            .map(|s| s.dest.name.clone())
            .collect()
    }
}

/// The newest step a round may send at `now_ms`, on the destination's grid.
fn frontier(now_ms: i64, resolution_ms: i64, dest_ms: i64) -> i64 {
    let complete = (now_ms.div_euclid(resolution_ms) - LAG_STEPS) * resolution_ms;
    complete.div_euclid(dest_ms) * dest_ms
}

async fn run(
    sink: Arc<Sink>,
    db: Db,
    client: reqwest::Client,
    start: Option<i64>,
    durable: bool,
    resolution_ms: i64,
    stop: watch::Receiver<bool>,
) {
    let dest = &sink.dest;
    let r = dest.resolution_ms;
    // A first start sends from now; a restart resumes after the last step acknowledged.
    let mut cursor = start.unwrap_or_else(|| frontier(crate::api::now_ms(), resolution_ms, r));
    tracing::info!(remote_name = %dest.name, url = %dest.url, resume_after_ms = cursor, resolution_ms = r, "Remote write started.");
    loop {
        // Rounds start just after each of the destination's steps.
        let now = crate::api::now_ms();
        let next = (now.div_euclid(r) + 1) * r + 50;
        tokio::select! {
            _ = tokio::time::sleep(Duration::from_millis((next - now).max(1) as u64)) => {}
            _ = stopped(stop.clone()) => return,
        }
        let now = crate::api::now_ms();
        let to = frontier(now, resolution_ms, r);
        if to <= cursor {
            continue;
        }
        let series = db.gauges.series.load(Relaxed).max(1) as usize;
        let steps = ((to - cursor) / r) as usize;
        let max = dest.queue.max_pending();
        if steps.saturating_mul(series) > max {
            // Freshness over completeness: keep the newest steps the queue bound holds.
            let keep = (max / series).max(1) as i64;
            let from = to - keep * r;
            let dropped = ((from - cursor) / r) as u64 * series as u64;
            sink.stats
                .samples_dropped_backlog
                .fetch_add(dropped, Relaxed);
            tracing::warn!(remote_name = %dest.name, dropped_steps = (from - cursor) / r, samples = dropped, "Remote-write backlog beyond capacity × max_shards: its oldest steps are dropped.");
            cursor = from;
        }
        let pending = (((to - cursor) / r) as usize).saturating_mul(series);
        sink.stats.samples_pending.store(pending as u64, Relaxed);
        let shards = pending
            .div_ceil(dest.queue.max_samples_per_send)
            .clamp(1, dest.queue.max_shards);
        sink.stats.shards.store(shards as u64, Relaxed);
        let (lock, d, window) = (db.lock.clone(), dest.clone(), (cursor, to));
        let Ok(collected) =
            tokio::task::spawn_blocking(move || collect::collect(&lock, &d, window, now, shards))
                .await
        else {
            continue;
        };
        if durable {
            // Send only what a restart would find again: a receiver must never see a
            // counter go backwards across a waggle restart.
            let read = db.gauges.applied_seq.load(Relaxed);
            let deadline = tokio::time::Instant::now() + DURABLE_WAIT;
            while db.gauges.durable_seq.load(Relaxed) < read
                && tokio::time::Instant::now() < deadline
            {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
        let mut tasks = tokio::task::JoinSet::new();
        for requests in collected.shards {
            let (client, sink, stop) = (client.clone(), sink.clone(), stop.clone());
            tasks.spawn(async move {
                let mut newest = i64::MIN;
                for req in requests {
                    match send::send(
                        &client,
                        &sink.dest,
                        &req.body,
                        req.samples,
                        &sink.stats,
                        &stop,
                    )
                    .await
                    {
                        send::Sent::Abandoned => return None,
                        send::Sent::Delivered => newest = newest.max(req.newest_ms),
                        send::Sent::Refused(_) => {}
                    }
                }
                Some(newest)
            });
        }
        let mut complete = true;
        while let Some(r) = tasks.join_next().await {
            match r {
                Ok(Some(newest)) => {
                    sink.stats.highest_acked_ms.fetch_max(newest, Relaxed);
                }
                _ => complete = false,
            }
        }
        if !complete {
            // Shutdown: progress stays where it was acknowledged.
            return;
        }
        cursor = to;
        sink.stats.samples_pending.store(0, Relaxed);
        if durable {
            db.progress(dest.name.clone(), cursor).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_frontier_stays_two_steps_behind_on_the_destination_grid() {
        assert_eq!(frontier(10_500, 1000, 1000), 8_000);
        assert_eq!(frontier(10_000, 1000, 1000), 8_000);
        assert_eq!(frontier(47_900, 1000, 15_000), 45_000);
        assert_eq!(frontier(46_900, 1000, 15_000), 30_000);
    }
}
