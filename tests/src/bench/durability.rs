//! The write-ahead log and checkpoints: bytes per series in a checkpoint and per event in
//! the log, time to checkpoint and to restore at 10k and 200k series, and ingest throughput
//! through the writer with the log on beside off.

use std::time::Instant;

use anyhow::Result;
use waggle::db::{wal, writer, Db};
use waggle::store::snapshot;
use waggle_wire::{sample, BatchBuilder};

fn tmp(name: &str) -> std::path::PathBuf {
    let d = std::env::temp_dir().join(format!("waggle-bench-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    let _ = std::fs::create_dir_all(&d);
    d
}

/// (seconds to write and fsync, bytes, seconds to restore) for a store.
fn checkpoint(store: &waggle::store::Store) -> Result<(f64, u64, f64)> {
    let dir = tmp("snap");
    let path = dir.join("snapshot");
    let header = snapshot::Header {
        resolution_ms: 1000,
        retention_ms: 3_600_000,
        created_ms: 0,
        progress: Vec::new(),
    };
    let t = Instant::now();
    let mut w = snapshot::Writer::create(&path, &header)?;
    let bound = store.id_bound();
    let mut from = 0;
    while from < bound {
        let to = (from + 2048).min(bound);
        w.slice(store, from..to, 1)?;
        from = to;
    }
    let done = w.finish()?;
    let bytes = done.bytes;
    snapshot::commit(done)?;
    let write = t.elapsed().as_secs_f64();
    let t = Instant::now();
    let r = snapshot::restore(&path, store.limits())?;
    let restore = t.elapsed().as_secs_f64();
    anyhow::ensure!(
        r.series as usize == store.series_count(),
        "restored {} of {}",
        r.series,
        store.series_count()
    );
    let _ = std::fs::remove_dir_all(&dir);
    Ok((write, bytes, restore))
}

/// Wire batches of 500 inbound events from 20 workloads, ending now.
fn batches(n: usize) -> Vec<writer::Logged> {
    let now_us = waggle::api::now_ms() as u64 * 1000;
    (0..n)
        .map(|i| {
            let mut b = BatchBuilder::new();
            for mut e in sample::inbound(500, i as u64 + 1, false) {
                e.start_unix_us = now_us - 2_000_000 + e.start_unix_us % 1_000_000;
                b.push(&e);
            }
            let mut h = sample::header(i as u64);
            h.local.workload = format!("svc-{:02}", i % 20);
            let bytes = b.finish(&h);
            (waggle_wire::decode(&bytes).expect("batch"), bytes.into())
        })
        .collect()
}

/// Events per second through the writer (4 concurrent senders), with or without the log.
fn ingest(rt: &tokio::runtime::Runtime, logged: bool, batches: &[writer::Logged]) -> Result<f64> {
    let dir = tmp("wal");
    let durable = if logged {
        Some(writer::Durable {
            wal: wal::Wal::open(&dir.join("wal"), 1)?,
            checkpoints: waggle::db::durable::Checkpoints::new(
                &dir,
                std::time::Duration::from_secs(3600),
            ),
            progress: Default::default(),
        })
    } else {
        None
    };
    let rate = rt.block_on(async {
        let db = Db::start(
            waggle::store::Store::new(waggle::store::Limits::default()),
            waggle::mesh::Mesh::new(waggle::families::builtin()),
            writer::Options {
                auto_maintain: false,
                durable,
            },
        )?;
        // A first pass creates the series; the timed pass is the steady state.
        db.events(
            batches.iter().take(20).cloned().collect(),
            waggle::api::now_ms(),
        )
        .await?;
        let t = Instant::now();
        let mut tasks = tokio::task::JoinSet::new();
        for chunk in batches.chunks(batches.len().div_ceil(4)) {
            let (db, chunk) = (db.clone(), chunk.to_vec());
            tasks.spawn(async move {
                for b in chunk {
                    let _ = db.events(vec![b], waggle::api::now_ms()).await;
                }
            });
        }
        while tasks.join_next().await.is_some() {}
        let events = batches.len() * 500;
        let rate = events as f64 / t.elapsed().as_secs_f64();
        db.shutdown().await?;
        anyhow::Ok(rate)
    })?;
    let _ = std::fs::remove_dir_all(&dir);
    Ok(rate)
}

pub fn section(quick: bool) -> Result<String> {
    let now = waggle::api::now_ms();
    let mut rows = String::new();
    let sizes: &[(usize, i64)] = if quick {
        &[(10_000, 600)]
    } else {
        &[(10_000, 3600), (200_000, 3600)]
    };
    for &(series, steps) in sizes {
        let store = super::filled_store(series, steps, now);
        let (write, bytes, restore) = checkpoint(&store)?;
        rows.push_str(&format!(
            "| {series} | {} min | {:.1} | {:.0} | {:.3} | {:.3} |\n",
            steps / 60,
            bytes as f64 / (1 << 20) as f64,
            bytes as f64 / series as f64,
            write,
            restore
        ));
    }
    let bs = batches(if quick { 200 } else { 2000 });
    let mut wal_bytes = Vec::new();
    for (_, b) in bs.iter().take(100) {
        wal::encode(&mut wal_bytes, 1, wal::Kind::Events, 0, b);
    }
    let per_event = wal_bytes.len() as f64 / (100.0 * 500.0);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    let (mut on, mut off, mut ratios) = (Vec::new(), Vec::new(), Vec::new());
    for _ in 0..if quick { 2 } else { 5 } {
        let (a, b) = (ingest(&rt, false, &bs)?, ingest(&rt, true, &bs)?);
        off.push(a);
        on.push(b);
        ratios.push(b / a);
    }
    let (off, on, ratio) = (
        super::stats(off).1,
        super::stats(on).1,
        super::stats(ratios).1,
    );
    Ok(format!(
        "## Write-ahead log and checkpoints\n\n\
         Checkpoints of a store of Istio-shaped counters (11 labels, a busy 1 s grid), written in slices of 2,048 series, fsynced and renamed, then restored into a new store:\n\n\
         | series | data | checkpoint MiB | bytes per series | write + fsync s | restore s |\n|---|---|---|---|---|---|\n{rows}\n\
         The log holds each accepted batch as it came plus a 25-byte record header: {per_event:.1} bytes per event for 500-event batches.\n\n\
         Ingest through the writer thread (decoded 500-event batches, 4 concurrent senders, {} events, the series already created), alternating runs, median: {off:.0} events/s without the log, {on:.0} events/s with it; ratio {ratio:.2}.\n\n\
         Goals: restore of 200k series under 2 s; ingest with the log on at least 80 % of ingest without it.\n",
        bs.len() * 500
    ))
}
