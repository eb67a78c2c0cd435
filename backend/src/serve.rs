//! `waggle serve`: the listeners, store maintenance, and graceful shutdown on SIGTERM.

pub mod listen;

use std::sync::atomic::Ordering;
use std::sync::Arc;

use anyhow::Context as _;
use tokio::net::TcpListener;

use crate::api::{self, AppState};
use crate::config::Settings;
use crate::honeycomb::Exporter;

/// Connection counts of both listeners.
#[derive(Default)]
pub struct Connections {
    pub query: Arc<listen::Stats>,
    pub ingest: Arc<listen::Stats>,
}

/// Runs until `stop` completes (see [`signal`] for SIGTERM and Ctrl-C). `bound` receives the
/// actual addresses (for tests on port 0).
pub async fn run(
    settings: Settings,
    bound: Option<tokio::sync::oneshot::Sender<(std::net::SocketAddr, std::net::SocketAddr)>>,
    stop: impl std::future::Future<Output = ()>,
) -> anyhow::Result<()> {
    let exporter = match settings.honeycomb.clone() {
        Some(h) => Some(Exporter::start(h).context("starting the Honeycomb exporter")?),
        None => None,
    };
    let mut progress = std::collections::BTreeMap::new();
    let state = match &settings.durable {
        None => AppState::new(settings.clone(), exporter.clone()).context("starting the store")?,
        Some(d) => {
            // Restored before the ports open: Flagger never sees an empty store after a restart.
            let r = crate::db::durable::recover(&d.dir, settings.limits, &settings.families)
                .with_context(|| format!("recovering --data-dir {}", d.dir.display()))?;
            tracing::info!(series = r.series, records_replayed = r.replayed, took_ms = r.took.as_millis() as u64, data_dir = %d.dir.display(), "Store recovered.");
            let wal = crate::db::wal::Wal::open(&d.dir.join("wal"), r.next_seq)
                .with_context(|| format!("opening the log in {}", d.dir.display()))?;
            progress = r.progress.clone();
            let durable = crate::db::writer::Durable {
                wal,
                checkpoints: crate::db::durable::Checkpoints::new(&d.dir, d.snapshot_interval),
                progress: r.progress,
            };
            let state =
                AppState::with_store(settings.clone(), exporter.clone(), r.store, Some(durable))
                    .context("starting the store")?;
            if r.replayed > 0 {
                // What was replayed becomes a checkpoint again soon, not at the next interval.
                let db = state.db.clone();
                tokio::spawn(async move {
                    let _ = db.checkpoint().await;
                });
            }
            state
        }
    };
    let same = settings.listen == settings.ingest_listen;
    let query = TcpListener::bind(settings.listen)
        .await
        .with_context(|| format!("binding --listen {}", settings.listen))?;
    let query_addr = query.local_addr()?;
    let (ingest, ingest_addr) = if same {
        (None, query_addr)
    } else {
        let l = TcpListener::bind(settings.ingest_listen)
            .await
            .with_context(|| format!("binding --ingest-listen {}", settings.ingest_listen))?;
        let a = l.local_addr()?;
        (Some(l), a)
    };
    tracing::info!(listen = %query_addr, ingest = %ingest_addr, resolution_ms = settings.limits.resolution_ms, retention_ms = settings.limits.retention_ms, max_series = settings.limits.max_series, families = settings.families.len(), "waggle serving");
    if let Some(tx) = bound {
        let _ = tx.send((query_addr, ingest_addr));
    }
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    if !settings.remote_write.is_empty() {
        let writer = crate::remote_write::RemoteWriter::start(
            state.db.clone(),
            settings.remote_write.clone(),
            &progress,
            settings.durable.is_some(),
            settings.limits.resolution_ms,
            stop_rx.clone(),
        )
        .context("starting remote write")?;
        let _ = state.remote_write.set(writer);
    }
    let query_app = api::query_router(state.clone());
    let query_app = if same {
        query_app.merge(api::ingest_router(state.clone()))
    } else {
        query_app
    };
    let limits = settings.server;
    let q = tokio::spawn(listen::serve(
        query,
        query_app,
        limits,
        state.connections.query.clone(),
        stop_rx.clone(),
    ));
    let i = ingest.map(|l| {
        tokio::spawn(listen::serve(
            l,
            api::ingest_router(state.clone()),
            limits,
            state.connections.ingest.clone(),
            stop_rx.clone(),
        ))
    });
    stop.await;
    tracing::info!("shutting down");
    state.ready.store(false, Ordering::Relaxed);
    let _ = stop_tx.send(true);
    let _ = q.await;
    if let Some(i) = i {
        let _ = i.await;
    }
    // Ingest has stopped: the final checkpoint holds everything accepted.
    if let Err(e) = state.db.shutdown().await {
        tracing::warn!(error = %e, "The store did not shut down cleanly.");
    }
    // The export queue only shrinks from here.
    if let Some(x) = exporter {
        x.shutdown().await;
    }
    Ok(())
}

/// Completes on SIGTERM or Ctrl-C.
pub async fn signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term =
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(s) => s,
                Err(_) => {
                    let _ = ctrl_c.await;
                    return;
                }
            };
        tokio::select! {
            _ = ctrl_c => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    let _ = ctrl_c.await;
}
