//! The exporter's self-metrics: sent, retried, dropped by reason, queue depth and latency.

use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

use crate::self_metrics::Histogram;

/// Why exported events were dropped (the `reason` label).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Drop {
    /// The export queue was at its event or byte bound.
    QueueFull,
    /// The event's JSON exceeded Honeycomb's 1 MB limit.
    TooLarge,
    /// Honeycomb answered 400 for this event in the batch's status array.
    Rejected,
    /// Honeycomb refused the whole batch (400, 403, 404, 413).
    BatchRefused,
    /// The key was refused (401); export is stopped until it is accepted again.
    Unauthorized,
    /// Still queued or retrying when the drain timeout ran out at shutdown.
    Shutdown,
}

impl Drop {
    pub const ALL: [Drop; 6] = [
        Drop::QueueFull,
        Drop::TooLarge,
        Drop::Rejected,
        Drop::BatchRefused,
        Drop::Unauthorized,
        Drop::Shutdown,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Drop::QueueFull => "queue_full",
            Drop::TooLarge => "too_large",
            Drop::Rejected => "rejected",
            Drop::BatchRefused => "batch_refused",
            Drop::Unauthorized => "unauthorized",
            Drop::Shutdown => "shutdown",
        }
    }
}

const LATENCY_BUCKETS: [f64; 10] = [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 5.0, 30.0];

#[derive(Debug)]
pub struct ExportStats {
    pub events_sent: AtomicU64,
    pub batches_sent: AtomicU64,
    pub bytes_sent: AtomicU64,
    pub retries: AtomicU64,
    pub sampled_out: AtomicU64,
    dropped: [AtomicU64; 6],
    latency: Histogram,
}

impl Default for ExportStats {
    fn default() -> Self {
        Self {
            events_sent: AtomicU64::default(),
            batches_sent: AtomicU64::default(),
            bytes_sent: AtomicU64::default(),
            retries: AtomicU64::default(),
            sampled_out: AtomicU64::default(),
            dropped: Default::default(),
            latency: Histogram::new(LATENCY_BUCKETS),
        }
    }
}

impl ExportStats {
    pub fn drop(&self, why: Drop, n: u64) {
        if let Some(c) = Drop::ALL
            .iter()
            .position(|d| *d == why)
            .and_then(|i| self.dropped.get(i))
        {
            c.fetch_add(n, Relaxed);
        }
    }

    pub fn dropped(&self, why: Drop) -> u64 {
        Drop::ALL
            .iter()
            .position(|d| *d == why)
            .and_then(|i| self.dropped.get(i))
            .map_or(0, |c| c.load(Relaxed))
    }

    /// Time from a batch's first send attempt to its final answer.
    pub fn observe(&self, seconds: f64) {
        self.latency.observe(seconds);
    }

    pub fn render(&self, out: &mut String, queue: (usize, usize), ready: bool) {
        let mut one = |name: &str, kind: &str, help: &str, v: f64| {
            let _ = write!(
                out,
                "# HELP {name} {help}\n# TYPE {name} {kind}\n{name} {v}\n"
            );
        };
        one(
            "waggle_honeycomb_events_sent_total",
            "counter",
            "Events Honeycomb accepted.",
            self.events_sent.load(Relaxed) as f64,
        );
        one(
            "waggle_honeycomb_batches_sent_total",
            "counter",
            "Batches Honeycomb answered with 200.",
            self.batches_sent.load(Relaxed) as f64,
        );
        one(
            "waggle_honeycomb_bytes_sent_total",
            "counter",
            "Request body bytes of sent batches, after compression.",
            self.bytes_sent.load(Relaxed) as f64,
        );
        one(
            "waggle_honeycomb_retries_total",
            "counter",
            "Batch send attempts retried (429, 5xx, timeouts, connection errors).",
            self.retries.load(Relaxed) as f64,
        );
        one(
            "waggle_honeycomb_events_sampled_out_total",
            "counter",
            "Events not sent because of the sample rate (they still count in metrics).",
            self.sampled_out.load(Relaxed) as f64,
        );
        one(
            "waggle_honeycomb_queue_events",
            "gauge",
            "Events held for export.",
            queue.0 as f64,
        );
        one(
            "waggle_honeycomb_queue_bytes",
            "gauge",
            "Bytes held for export, as received.",
            queue.1 as f64,
        );
        one(
            "waggle_honeycomb_key_accepted",
            "gauge",
            "1 when Honeycomb accepted the key on GET /1/auth.",
            if ready { 1.0 } else { 0.0 },
        );
        let _ = write!(out, "# HELP waggle_honeycomb_events_dropped_total Events not delivered to Honeycomb, by reason.\n# TYPE waggle_honeycomb_events_dropped_total counter\n");
        for d in Drop::ALL {
            let _ = writeln!(
                out,
                "waggle_honeycomb_events_dropped_total{{reason=\"{}\"}} {}",
                d.as_str(),
                self.dropped(d)
            );
        }
        self.latency.render(
            out,
            "waggle_honeycomb_export_duration_seconds",
            "From a batch's first send attempt to its final answer.",
        );
    }
}
