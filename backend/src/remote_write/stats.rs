//! Per-destination self-metrics with the meaning of Prometheus's `prometheus_remote_storage_*`.

use std::fmt::Write as _;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering::Relaxed};

use parking_lot::Mutex;

#[derive(Debug, Default)]
pub struct Stats {
    pub samples_sent: AtomicU64,
    pub bytes_sent: AtomicU64,
    pub requests_sent: AtomicU64,
    pub samples_failed: AtomicU64,
    pub samples_retried: AtomicU64,
    /// Samples dropped because the backlog outgrew `capacity × max_shards`.
    pub samples_dropped_backlog: AtomicU64,
    pub samples_pending: AtomicU64,
    /// Newest sample timestamp acknowledged (ms).
    pub highest_acked_ms: AtomicI64,
    pub shards: AtomicU64,
    /// Requests answered with an error, by status (0: no answer).
    errors: Mutex<std::collections::BTreeMap<u16, u64>>,
    /// Requests dropped for good, by status.
    refused: Mutex<std::collections::BTreeMap<u16, u64>>,
    /// Whether the last request was delivered (or none was needed yet).
    pub failing: std::sync::atomic::AtomicBool,
}

impl Stats {
    pub fn delivered(&self, samples: usize, bytes: usize) {
        self.samples_sent.fetch_add(samples as u64, Relaxed);
        self.bytes_sent.fetch_add(bytes as u64, Relaxed);
        self.requests_sent.fetch_add(1, Relaxed);
        self.failing.store(false, Relaxed);
    }

    pub fn retried(&self, samples: usize) {
        self.samples_retried.fetch_add(samples as u64, Relaxed);
    }

    pub fn error(&self, status: u16) {
        *self.errors.lock().entry(status).or_default() += 1;
        self.failing.store(true, Relaxed);
    }

    pub fn refused(&self, samples: usize, status: u16) {
        self.samples_failed.fetch_add(samples as u64, Relaxed);
        *self.refused.lock().entry(status).or_default() += 1;
    }

    pub fn render(&self, out: &mut String, name: &str, url: &str) {
        let l = format!(
            "remote_name={},url={}",
            crate::api::json::string(name),
            crate::api::json::string(url)
        );
        let mut line = |metric: &str, extra: &str, v: f64| {
            let _ = writeln!(out, "{metric}{{{l}{extra}}} {v}");
        };
        line(
            "waggle_remote_storage_samples_total",
            "",
            self.samples_sent.load(Relaxed) as f64,
        );
        line(
            "waggle_remote_storage_bytes_total",
            "",
            self.bytes_sent.load(Relaxed) as f64,
        );
        line(
            "waggle_remote_storage_requests_total",
            "",
            self.requests_sent.load(Relaxed) as f64,
        );
        line(
            "waggle_remote_storage_samples_failed_total",
            "",
            self.samples_failed.load(Relaxed) as f64,
        );
        line(
            "waggle_remote_storage_samples_retried_total",
            "",
            self.samples_retried.load(Relaxed) as f64,
        );
        line(
            "waggle_remote_storage_samples_dropped_total",
            ",reason=\"backlog\"",
            self.samples_dropped_backlog.load(Relaxed) as f64,
        );
        line(
            "waggle_remote_storage_samples_pending",
            "",
            self.samples_pending.load(Relaxed) as f64,
        );
        line(
            "waggle_remote_storage_shards",
            "",
            self.shards.load(Relaxed) as f64,
        );
        let acked = self.highest_acked_ms.load(Relaxed);
        line(
            "waggle_remote_storage_queue_highest_sent_timestamp_seconds",
            "",
            if acked > 0 {
                acked as f64 / 1000.0
            } else {
                0.0
            },
        );
        for (code, n) in self.errors.lock().iter() {
            line(
                "waggle_remote_storage_failed_attempts_total",
                &format!(",code=\"{code}\""),
                *n as f64,
            );
        }
        for (code, n) in self.refused.lock().iter() {
            line(
                "waggle_remote_storage_refused_requests_total",
                &format!(",code=\"{code}\""),
                *n as f64,
            );
        }
    }
}
